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

// <div class="chart" data-series="URL">: a uPlot chart of the JSON columns at URL
// ({"t": [unix s], "p99_ms": [...], "requests": [...]}), fetched with the page's session.
function drawChart(box) {
  fetch(box.getAttribute("data-series"), {credentials: "same-origin"})
    .then(function (answer) {
      if (!answer.ok) { throw new Error("HTTP " + answer.status); }
      return answer.json();
    })
    .then(function (cols) {
      box.textContent = "";
      if (!cols.t.length) {
        var none = document.createElement("p");
        none.className = "note";
        none.textContent = "No metrics report in the last hour.";
        box.appendChild(none);
        return;
      }
      var options = {
        width: Math.min(box.clientWidth || 800, 1000), height: 260,
        series: [{}, {label: "p99 ms", stroke: "#0b5cad", scale: "ms"},
                 {label: "requests", stroke: "#116329", scale: "n"}],
        axes: [{}, {scale: "ms", label: "p99 ms"}, {scale: "n", side: 1, label: "requests"}],
      };
      new uPlot(options, [cols.t, cols.p99_ms, cols.requests], box);
    })
    .catch(function (err) { box.textContent = "The metrics could not be read: " + err.message; });
}
// uPlot (vendored, 50 kB) is loaded only by a page that has a chart.
var UPLOT = "/ui/static/uPlot-1.6.32";
document.addEventListener("DOMContentLoaded", function () {
  var boxes = document.querySelectorAll("[data-series]");
  if (!boxes.length) { return; }
  var css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = UPLOT + ".min.css";
  document.head.appendChild(css);
  var js = document.createElement("script");
  js.src = UPLOT + ".iife.min.js";
  js.onload = function () { boxes.forEach(drawChart); };
  document.head.appendChild(js);
});
