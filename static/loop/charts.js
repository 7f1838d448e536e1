/* Loop CRM report charts: every <canvas data-chart="ID"> is drawn with the vendored Chart.js from the JSON in the
   <script id="ID" type="application/json"> the server rendered (labels already translated). The JSON is
   {type, labels, datasets: [{type, label, data, yAxisID}], axes: {y: title, y1: title}, indexAxis, stacked}. */
(function () {
  "use strict";
  var PALETTE = ["#417690", "#e07b39", "#5aa469", "#c0504d", "#8064a2", "#4bacc6", "#9b9b9b"];

  function axis(title, position, extra) {
    var options = { position: position, beginAtZero: true, title: { display: !!title, text: title || "" } };
    return Object.assign(options, extra || {});
  }

  function draw(canvas) {
    var source = document.getElementById(canvas.dataset.chart);
    if (!source || typeof Chart === "undefined") { return; }
    var spec = JSON.parse(source.textContent);
    var axes = spec.axes || {};
    var scales = {};
    if (spec.indexAxis === "y") {
      scales.x = axis(axes.x, "bottom", { stacked: !!spec.stacked });
      scales.y = { stacked: !!spec.stacked };
    } else {
      scales.y = axis(axes.y, "left");
      if (axes.y1) { scales.y1 = axis(axes.y1, "right", { grid: { drawOnChartArea: false } }); }
    }
    var datasets = spec.datasets.map(function (set, i) {
      var color = PALETTE[i % PALETTE.length];
      return Object.assign(
        { borderColor: color, backgroundColor: set.type === "line" ? color : color + "cc", spanGaps: true, tension: 0.2 },
        set
      );
    });
    canvas.chart = new Chart(canvas, {
      type: spec.type || "bar",
      data: { labels: spec.labels, datasets: datasets },
      options: {
        indexAxis: spec.indexAxis || "x",
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom" } },
        scales: scales,
      },
    });
    canvas.dataset.drawn = "1";
  }

  function drawAll() { document.querySelectorAll("canvas[data-chart]").forEach(draw); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", drawAll); } else { drawAll(); }
})();
