// The leaks panel: each traced process of /api/v1/leaks with its
// outstanding bytes and growth, and its call stacks by bytes outstanding.
"use strict";

function perMinute(v) {
  return v == null ? "–" : (v >= 0 ? "+" : "−") + bytes(Math.abs(v)) + "/min";
}

function drawLeaks(answer) {
  const list = startPanel(
    "leaks-list",
    "leaks-empty",
    answer.enabled
      ? "No traced process is running (collectors.leaks.processes)."
      : "The leaks collector is not running (collectors.leaks).",
    answer.processes.length,
  );
  for (const p of answer.processes) {
    const div = document.createElement("div");
    div.className = "leak";
    div.dataset.process = p.process;
    div.dataset.pid = String(p.pid);
    const h = document.createElement("h3");
    h.textContent = `${p.process} (pid ${p.pid}): ${bytes(p.outstanding_bytes)} outstanding in ${p.outstanding_allocations} allocations, ${perMinute(p.growth_bytes_per_minute)}`;
    div.appendChild(h);
    const table = document.createElement("table");
    table.innerHTML = "<thead><tr><th>Bytes</th><th>Allocations</th><th>Growth</th><th>Stack (leaf last)</th></tr></thead><tbody></tbody>";
    const body = table.querySelector("tbody");
    for (const s of p.stacks) {
      const tr = document.createElement("tr");
      cell(tr, bytes(s.bytes), "num");
      cell(tr, String(s.allocations), "num");
      const g = cell(tr, perMinute(s.growth_bytes_per_minute), "num");
      if (s.growth_bytes_per_minute > 0) g.classList.add("growing");
      cell(tr, s.frames.slice(-8).join(" → "), "stack");
      body.appendChild(tr);
    }
    div.appendChild(table);
    list.appendChild(div);
  }
}
