// The latency panel: one card per block or TCP series of /api/v1/latency,
// with p50/p99 over time drawn by uPlot and a heatmap (time x log2 slot)
// drawn on a canvas.
"use strict";

const latencyCharts = new Map(); // key -> {card, plot, heat}
const LATENCY_SHOWN = 16;
// The span shown, seconds: the history's 15 minutes.
const LATENCY_SPAN = 900;

function seriesKey(s) {
  return s.collector + " " + Object.entries(s.labels).map(([k, v]) => k + "=" + v).join(" ");
}

function ms(v) {
  return v == null ? "–" : v < 0.001 ? (v * 1e6).toFixed(0) + " µs" : (v * 1000).toFixed(2) + " ms";
}

function latencyCard(key) {
  const card = document.createElement("div");
  card.className = "latency";
  card.dataset.key = key;
  const title = document.createElement("h3");
  card.appendChild(title);
  const chart = document.createElement("div");
  card.appendChild(chart);
  const heat = document.createElement("canvas");
  heat.className = "heatmap";
  heat.width = 600;
  heat.height = 160;
  card.appendChild(heat);
  const plot = new uPlot(
    {
      width: 600,
      height: 160,
      series: [
        {},
        { label: "p50 (ms)", stroke: "#1e88e5", spanGaps: true, points: { show: true } },
        { label: "p99 (ms)", stroke: "#e53935", spanGaps: true, points: { show: true } },
      ],
      scales: { x: { time: true, range: (u, min, max) => [max - LATENCY_SPAN, max + 5] } },
      axes: [{}, { label: "ms" }],
    },
    [[], [], []],
    chart,
  );
  return { card, title, plot, heat };
}

function drawHeatmap(canvas, s, step) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const pts = s.points;
  let lo = Infinity, hi = -1, max = 0;
  for (const p of pts)
    p.slots.forEach((n, k) => {
      if (n > 0) { lo = Math.min(lo, k); hi = Math.max(hi, k); max = Math.max(max, n); }
    });
  if (hi < 0) return;
  const rows = hi - lo + 1;
  // Time across, the newest step at the right edge, 15 minutes wide.
  const end = pts[pts.length - 1].t;
  const perSecond = canvas.width / LATENCY_SPAN;
  const w = Math.max(step * perSecond, 1);
  const h = canvas.height / rows;
  for (const p of pts) {
    const x = canvas.width - (end - p.t) * perSecond - w;
    p.slots.forEach((n, k) => {
      if (n === 0 || k < lo) return;
      const a = 0.15 + (0.85 * Math.log1p(n)) / Math.log1p(max);
      ctx.fillStyle = "rgba(183, 28, 28, " + a.toFixed(3) + ")";
      ctx.fillRect(x, canvas.height - (k - lo + 1) * h, w, h);
    });
  }
  ctx.fillStyle = "#333";
  ctx.font = "11px sans-serif";
  ctx.fillText("≤ " + ms(s.slot_upper_seconds[hi]), 4, 12);
  ctx.fillText("≤ " + ms(s.slot_upper_seconds[lo]), 4, canvas.height - 4);
}

// Draws the answer of /api/v1/latency.
function drawLatency(answer) {
  document.getElementById("latency-step").textContent = String(answer.step_seconds);
  const withData = answer.series
    .map((s) => ({ s, n: s.points.reduce((a, p) => a + p.count, 0) }))
    .filter((x) => x.n > 0)
    .sort((a, b) => b.n - a.n)
    .slice(0, LATENCY_SHOWN);
  const list = document.getElementById("latency-series");
  document.getElementById("latency-empty").hidden = withData.length > 0;
  const keep = new Set();
  for (const { s, n } of withData) {
    const key = seriesKey(s);
    keep.add(key);
    let c = latencyCharts.get(key);
    if (!c) {
      c = latencyCard(key);
      latencyCharts.set(key, c);
      list.appendChild(c.card);
    }
    const last = s.points[s.points.length - 1];
    c.title.textContent = `${key}: ${n} events in 15 min; last ${answer.step_seconds} s: ${last.count} events, p50 ${ms(last.p50_seconds)}, p99 ${ms(last.p99_seconds)}`;
    c.card.dataset.events = String(n);
    c.plot.setData([
      s.points.map((p) => p.t),
      s.points.map((p) => (p.p50_seconds == null ? null : p.p50_seconds * 1000)),
      s.points.map((p) => (p.p99_seconds == null ? null : p.p99_seconds * 1000)),
    ]);
    drawHeatmap(c.heat, s, answer.step_seconds);
  }
  for (const [key, c] of latencyCharts) {
    if (!keep.has(key)) {
      c.plot.destroy();
      c.card.remove();
      latencyCharts.delete(key);
    }
  }
}
