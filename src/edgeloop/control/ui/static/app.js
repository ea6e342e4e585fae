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
// Columns may name their own series: "chart": {"time": false, "x": "round", "empty": "...",
// "series": [[column, label, colour, scale], ...]} (the federated task page's rounds); a series
// may end in "points" (marks only), and "spanGaps": true joins values across nulls (drift).
var NODE_CHART = {time: true, empty: "No metrics report in the last hour.",
                  series: [["p99_ms", "p99 ms", "#0b5cad", "ms"],
                           ["requests", "requests", "#116329", "n"]]};
function drawChart(box) {
  fetch(box.getAttribute("data-series"), {credentials: "same-origin"})
    .then(function (answer) {
      if (!answer.ok) { throw new Error("HTTP " + answer.status); }
      return answer.json();
    })
    .then(function (cols) {
      var chart = cols.chart || NODE_CHART;
      box.textContent = "";
      if (!cols.t.length) {
        var none = document.createElement("p");
        none.className = "note";
        none.textContent = chart.empty;
        box.appendChild(none);
        return;
      }
      var series = [chart.x ? {label: chart.x} : {}], axes = [{}], data = [cols.t], scales = {};
      chart.series.forEach(function (s, i) {
        // A fifth item "points": marks only, no line (the drift chart's alarms).
        var one = {label: s[1], stroke: s[2], scale: s[3], spanGaps: !!chart.spanGaps};
        if (s[4] === "points") {
          one.paths = function () { return null; };
          one.points = {show: true, size: 11, fill: s[2]};
        }
        series.push(one);
        if (!scales[s[3]]) {  // one axis per scale
          scales[s[3]] = true;
          axes.push(i ? {scale: s[3], side: 1, label: s[1]} : {scale: s[3], label: s[1]});
        }
        data.push(cols[s[0]]);
      });
      var options = {
        width: Math.min(box.clientWidth || 800, 1000), height: 260,
        scales: {x: {time: chart.time}}, series: series, axes: axes,
      };
      new uPlot(options, data, box);
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

// A refused htmx request (429 with Retry-After: control/ui/refusal.py; htmx swaps nothing on
// a 4xx) says so in a status line at the top of the page instead of failing silently.
document.addEventListener("htmx:responseError", function (event) {
  var xhr = event.detail && event.detail.xhr;
  if (!xhr || xhr.status !== 429) { return; }
  var main = document.getElementById("main");
  var line = document.getElementById("refused") || document.createElement("p");
  line.id = "refused";
  line.className = "error";
  line.setAttribute("role", "status");
  line.textContent = "Refused (HTTP 429): try again in " +
    (xhr.getResponseHeader("Retry-After") || "a few") + " s.";
  if (main && !line.parentNode) { main.insertBefore(line, main.firstChild); }
});
