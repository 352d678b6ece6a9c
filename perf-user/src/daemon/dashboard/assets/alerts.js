// The alerts panel: what /api/v1/alerts says is pending or firing, with the
// advice of the firing ones (diagnosis, facts, suggestions).
"use strict";

function alertElement(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function drawAlerts(answer) {
  const list = startPanel("alerts-list", "alerts-empty", answer.enabled ? "Nothing pending or firing." : "The alert engine is off ([alerts] enabled = false).", answer.alerts.length);
  for (const a of answer.alerts) {
    const div = alertElement("div", undefined, "alert " + a.state);
    div.dataset.rule = a.rule;
    div.dataset.state = a.state;
    div.appendChild(alertElement("h3", `${a.state.toUpperCase()} ${a.rule} (${a.severity}): ${a.summary}`));
    const labels = Object.entries(a.labels).map(([k, v]) => `${k}="${v}"`).join(", ");
    div.appendChild(alertElement("div", "{" + labels + "}", "labels"));
    div.appendChild(alertElement("div", a.evidence, "evidence"));
    if (a.advice) {
      div.appendChild(alertElement("p", a.advice.diagnosis, "diagnosis"));
      if (a.advice.facts.length) {
        div.appendChild(alertElement("div", a.advice.facts.map((f) => f.name + ": " + f.value).join(" · "), "facts"));
      }
      const ul = alertElement("ul", undefined, "suggestions");
      for (const s of a.advice.suggestions) ul.appendChild(alertElement("li", s));
      div.appendChild(ul);
    } else if (a.state === "pending") {
      div.appendChild(alertElement("p", "Pending since " + new Date(a.active_since_unix_seconds * 1000).toLocaleTimeString() + "; advice comes when it fires.", "diagnosis"));
    }
    list.appendChild(div);
  }
}
