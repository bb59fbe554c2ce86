// Time series of one device (the JSON data block #series-data, cloud.queries.series.SeriesView)
// drawn with uPlot: time (UTC) on x, each chart's unit on y, y never below zero.
(function () {
  "use strict";
  var block = document.getElementById("series-data");
  if (!block || typeof uPlot === "undefined") return;
  var data = JSON.parse(block.textContent);
  var utc = function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); };
  var fixed = function (digits, unit) {
    return function (u, values) {
      return values.map(function (v) { return v == null ? "" : v.toFixed(digits) + unit; });
    };
  };
  // 24-hour UTC ticks: hours and minutes over a day or less, with the date over longer ranges.
  var clock = function (span) {
    var fmt = uPlot.fmtDate(span > 86400 ? "{MM}-{DD} {HH}:{mm}" : (span > 900 ? "{HH}:{mm}" : "{HH}:{mm}:{ss}"));
    return function (u, splits) { return splits.map(function (ts) { return fmt(utc(ts)); }); };
  };
  var charts = {
    latency: {
      series: [["p50", data.latency_p50_ms, "#2f6fde"], ["p95", data.latency_p95_ms, "#d9822b"]],
      unit: " ms", digits: 1, floor: 1
    },
    errors: {
      series: [["errors", data.error_rate.map(function (v) { return v == null ? null : v * 100; }), "#c23030"]],
      unit: " %", digits: 2, floor: 1
    },
    prediction_drift: {series: [["JS", data.prediction_drift_js, "#7157d9"]], unit: "", digits: 3, floor: 0.05},
    input_drift: {series: [["PSI", data.input_drift_psi, "#0f9960"]], unit: "", digits: 3, floor: 0.1}
  };
  var made = [];
  document.querySelectorAll(".chart[data-chart]").forEach(function (el) {
    var spec = charts[el.dataset.chart];
    if (!spec) return;
    var present = spec.series.reduce(function (n, s) {
      return n + s[1].filter(function (v) { return v != null; }).length;
    }, 0);
    var sparse = present <= 40 * spec.series.length;  // few points: draw them, a lone one has no line
    var opts = {
      width: Math.max(280, el.clientWidth), height: 190, tzDate: utc,
      cursor: {drag: {x: false, y: false}},
      legend: {live: true},
      scales: {
        x: {time: true, range: [data.t[0], data.t[data.t.length - 1] + data.bucket_s]},
        y: {range: function (u, min, max) { return [0, Math.max(spec.floor, (max || 0) * 1.15)]; }}
      },
      axes: [
        {label: "time (UTC)", labelSize: 18, size: 40, values: clock(data.t[data.t.length - 1] - data.t[0])},
        {values: fixed(spec.digits, spec.unit), size: 64}
      ],
      series: [{label: "time (UTC)", value: "{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}"}].concat(spec.series.map(function (s) {
        return {label: s[0], stroke: s[2], width: 1.5, spanGaps: false,
                points: {show: sparse, size: 5}, value: function (u, v) { return v == null ? "–" : v.toFixed(spec.digits) + spec.unit; }};
      }))
    };
    var rows = [data.t].concat(spec.series.map(function (s) { return s[1]; }));
    made.push([el, new uPlot(opts, rows, el)]);
  });
  var resize = function () {
    made.forEach(function (m) { m[1].setSize({width: Math.max(280, m[0].clientWidth), height: 190}); });
  };
  window.addEventListener("resize", resize);
})();
