// edgeloop dashboard: the little behaviour that is not htmx's. No inline script anywhere
// (the content security policy forbids it): everything is wired here by attribute.
"use strict";
document.addEventListener("submit", function (event) {
  // <form data-confirm="Roll back?">: ask before an action that changes the fleet.
  var form = event.target;
  var question = form && form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
}, true);
