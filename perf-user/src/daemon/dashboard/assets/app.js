// The dashboard: polls the /api/v1 endpoints twice a second and
// draws them; the flame graph is inferno's interactive SVG, reloaded when a
// new CPU window closes or the selection changes. No framework, no build.
"use strict";

// Between the end of a round of requests and the next: a value is on the
// page within this plus one round (a few ms) of being read.
const POLL_MS = 500;
const $ = (id) => document.getElementById(id);
let lastCpu = null; // {cpu_seconds, at} of the previous status
let shownGraph = ""; // the flame graph URL on screen

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(tbody, rows, draw) {
  const body = $(tbody).querySelector("tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    draw(tr, r);
    body.appendChild(tr);
  }
}

// Empties the list of a panel, and shows `why` in its "empty" line when
// it has no `n` items; returns the list.
function startPanel(listId, emptyId, why, n) {
  const empty = $(emptyId);
  empty.textContent = why;
  empty.hidden = n > 0;
  $(listId).replaceChildren();
  return $(listId);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function duration(s) {
  if (s < 60) return s.toFixed(0) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function drawStatus(s) {
  const h = $("health");
  h.textContent = s.healthy ? "healthy" : "unhealthy";
  h.className = "badge " + (s.healthy ? "ok" : "bad");
  $("version").textContent = "v" + s.version;
  $("uptime").textContent = duration(s.uptime_seconds);
  if (lastCpu && s.time_unix_seconds > lastCpu.at) {
    const pct = (100 * (s.process.cpu_seconds - lastCpu.cpu_seconds)) / (s.time_unix_seconds - lastCpu.at);
    $("cpu-use").textContent = pct.toFixed(1) + " %";
  }
  lastCpu = { cpu_seconds: s.process.cpu_seconds, at: s.time_unix_seconds };
  $("rss").textContent = bytes(s.process.rss_bytes);
  const bpf = s.bpf_programs.reduce((a, p) => a + p.run_seconds, 0);
  $("bpf-time").textContent = (bpf * 1000).toFixed(1) + " ms total";
  const lost = s.lost_events.reduce((a, l) => a + l.count, 0);
  $("lost").textContent = String(lost);
  fill("collectors", s.collectors, (tr, c) => {
    if (!c.up || c.error) tr.className = "down";
    cell(tr, c.name);
    cell(tr, c.up ? (c.error ? "unhealthy" : "up") : "down");
    cell(tr, c.error || "");
  });
  fill("bpf-programs", s.bpf_programs, (tr, p) => {
    cell(tr, p.program);
    cell(tr, (p.run_seconds * 1000).toFixed(2) + " ms", "num");
    cell(tr, String(p.runs), "num");
  });
}

// The query of the CPU selection, without the leading "?".
function selection() {
  const q = new URLSearchParams();
  q.set("window", $("window").value);
  if ($("process").value) q.set("comm", $("process").value);
  if ($("cgroup").value) q.set("cgroup", $("cgroup").value);
  return q;
}

function options(id, values) {
  const sel = $(id);
  const keep = sel.value;
  const want = [""].concat(values);
  const have = Array.from(sel.options).map((o) => o.value);
  if (want.join("\n") === have.join("\n")) return;
  sel.replaceChildren();
  for (const v of want) {
    const o = document.createElement("option");
    o.value = v;
    o.textContent = v || "all";
    sel.appendChild(o);
  }
  if (!want.includes(keep)) {
    const o = document.createElement("option");
    o.value = o.textContent = keep;
    sel.appendChild(o);
  }
  sel.value = keep;
}

// True while the flame graph shows a zoomed frame (its "Reset Zoom" shows).
function zoomed() {
  const doc = $("flamegraph").contentDocument;
  const unzoom = doc && doc.getElementById("unzoom");
  return Boolean(unzoom && !unzoom.classList.contains("hide"));
}

function drawCpu(c) {
  // Process names of 1 to 15 bytes are what comm= accepts.
  options("process", c.processes.map((p) => p.process).filter((p) => p.length > 0 && p.length <= 15));
  options("cgroup", c.cgroups.map((g) => g.name).filter((g) => g.startsWith("/")));
  const w = c.window;
  $("cpu-summary").textContent = w.windows
    ? `${c.samples} samples in ${w.seconds.toFixed(0)} s (${w.windows} window${w.windows === 1 ? "" : "s"})`
    : "waiting for the first CPU window to close…";
  const total = Math.max(c.samples, 1);
  fill("hotspots", c.hotspots, (tr, h) => {
    cell(tr, h.function);
    cell(tr, h.process);
    cell(tr, String(h.self_samples), "num");
    cell(tr, ((100 * h.self_samples) / total).toFixed(1), "num");
    cell(tr, ((100 * h.total_samples) / total).toFixed(1), "num");
  });
  const q = selection();
  $("download-folded").href = "/api/v1/cpu/folded?" + q;
  const p = new URLSearchParams({ seconds: "10" });
  for (const k of ["comm", "cgroup"]) if (q.get(k)) p.set(k, q.get(k));
  $("download-pprof").href = "/debug/pprof/profile?" + p;
  // A new window or a new selection: a new graph (which resets its zoom).
  const url = "/api/v1/cpu/flamegraph.svg?" + q + "&end=" + (w.end_unix_seconds || 0);
  // Not while the graph is zoomed: the next poll after "Reset Zoom" does.
  if (url !== shownGraph && !zoomed()) {
    shownGraph = url;
    $("flamegraph").src = url;
  }
  document.body.dataset.cpuEnd = String(w.end_unix_seconds || 0);
}

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

async function pollCpu() {
  try {
    drawCpu(await get("/api/v1/cpu?folded=0&" + selection()));
  } catch (e) {
    $("cpu-summary").textContent = String(e.message);
  }
}

async function poll() {
  try {
    drawStatus(await get("/api/v1/status"));
  } catch (e) {
    $("health").textContent = "unreachable";
    $("health").className = "badge bad";
  }
  await pollCpu();
  // The history moves one step every few seconds: read it each second
  // anyway, so a new step shows within one.
  try {
    drawLatency(await get("/api/v1/latency"));
  } catch (e) {
    document.getElementById("latency-empty").textContent = String(e.message);
  }
  try {
    drawAlerts(await get("/api/v1/alerts"));
  } catch (e) {
    document.getElementById("alerts-empty").textContent = String(e.message);
  }
  try {
    drawLeaks(await get("/api/v1/leaks"));
  } catch (e) {
    document.getElementById("leaks-empty").textContent = String(e.message);
  }
  document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  setTimeout(poll, POLL_MS);
}

// The graph's own height, so that it needs no scrolling of its own.
$("flamegraph").addEventListener("load", () => {
  const svg = $("flamegraph").contentDocument && $("flamegraph").contentDocument.documentElement;
  const h = svg && Number(svg.getAttribute("height"));
  if (h) $("flamegraph").style.height = h + 4 + "px";
});

for (const id of ["window", "process", "cgroup"]) $(id).addEventListener("change", pollCpu);
poll();
