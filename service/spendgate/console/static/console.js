// Spendgate console: draws the spend chart from the page's JSON data island. No inline script:
// the page's Content-Security-Policy allows scripts from this origin only.
(function () {
  "use strict";

  var PALETTE = ["#2f5fd0", "#e07b39", "#1f9d74", "#b04fc7", "#c0362c", "#7a8599", "#d4a72c", "#3aa0c9"];

  function stacked(data, models) {
    // Cumulative sums per day so the areas stack; the table beside the chart has the exact figures.
    var running = data.days.map(function () { return 0; });
    return models.map(function (model) {
      running = running.map(function (sum, i) { return sum + Number(data.series[model][i]); });
      return running.slice();
    });
  }

  function drawSpend(el) {
    var island = document.getElementById("spend-data");
    if (!island || !window.uPlot || el.dataset.drawn) { return; }
    var data = JSON.parse(island.textContent);
    var xs = data.days.map(function (day) { return Date.parse(day + "T00:00:00Z") / 1000; });
    var models = data.models;
    var ys = stacked(data, models);
    var series = [{}];
    // Draw the top of the stack first so each model's band stays visible.
    var order = models.map(function (_, i) { return i; }).reverse();
    order.forEach(function (i) {
      var color = PALETTE[i % PALETTE.length];
      series.push({ label: models[i], stroke: color, fill: color + "cc", width: 1.5,
                    value: function (u, v) { return v == null ? "" : "$" + v.toFixed(6); } });
    });
    var opts = {
      width: Math.max(el.clientWidth, 320), height: 280,
      series: series,
      scales: { x: { time: true } },
      axes: [{}, { values: function (u, vals) { return vals.map(function (v) { return "$" + v; }); }, size: 70 }],
      legend: { live: true }
    };
    var plotted = [xs].concat(order.map(function (i) { return ys[i]; }));
    var chart = new window.uPlot(opts, plotted, el);
    el.dataset.drawn = "1";
    window.spendgateCharts = window.spendgateCharts || {};
    window.spendgateCharts[el.id] = chart;
  }

  function init() {
    var el = document.getElementById("spend-chart");
    if (el) { drawSpend(el); }
  }

  document.addEventListener("DOMContentLoaded", init);
  document.addEventListener("htmx:afterSettle", init);
})();
