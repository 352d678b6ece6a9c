//! `advise`'s report: alerts with their advice, what was observed, which
//! rules could not judge and why, and what `--apply` changed; as text for a
//! terminal or as JSON (schema in docs/alerts.md).

use std::io::{self, Write};

use serde::Serialize;

use super::{
    actions::Report as ActionReport,
    advice::Advised,
    engine::{Alert, RuleStatus, State},
    signals::{Evidence, Observation, Signal, bytes, seconds},
};

/// Version of the JSON document's schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Width text is wrapped to.
const WIDTH: usize = 100;

/// How one collector fared.
#[derive(Clone, Debug, Serialize)]
pub struct CollectorStatus {
    /// `block`, `cpu` or `tcp`.
    pub name: &'static str,
    /// Whether it ran.
    pub ok: bool,
    /// What it saw, or why it did not run.
    pub detail: String,
}

/// A rule that did not judge, and why.
#[derive(Clone, Debug, Serialize)]
pub struct NotEvaluated {
    /// The rule.
    pub rule: String,
    /// Its kind.
    pub kind: &'static str,
    /// Its signal.
    pub signal: Signal,
    /// Why.
    pub reason: String,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct AdviseReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When sampling began, seconds since the Unix epoch (alerts' `fired_at`
    /// minus this is how long detection took).
    pub started_unix_secs: f64,
    /// Seconds sampled.
    pub duration_secs: f64,
    /// The collectors.
    pub collectors: Vec<CollectorStatus>,
    /// Rules evaluated.
    pub rules: usize,
    /// Firing alerts, each with its advice.
    pub alerts: Vec<Advised>,
    /// Rules that could not judge.
    pub not_evaluated: Vec<NotEvaluated>,
    /// The worst series per signal, for the "observed" summary.
    pub observed: Vec<Observed>,
    /// What `--apply` did (absent without `--apply`).
    pub applied: Option<ActionReport>,
    /// The state file `--apply` records in.
    pub state_file: String,
}

/// One line of what was observed.
#[derive(Clone, Debug, Serialize)]
pub struct Observed {
    /// The signal.
    pub signal: Signal,
    /// The series, in words.
    pub series: String,
    /// The value, for people.
    pub value: String,
    /// Events behind it.
    pub count: u64,
}

/// Why each rule that did not judge did not: no batch covered its signal
/// (its collector did not run), or every series it saw is still learning.
pub fn not_evaluated(status: &[RuleStatus]) -> Vec<NotEvaluated> {
    status
        .iter()
        .filter_map(|s| {
            let reason = if !s.covered {
                match s.signal {
                    Signal::LeakOutstandingBytes => {
                        "no data: give --pid PID to trace a process's allocations".to_string()
                    }
                    Signal::LeakOutstandingAllocations => {
                        "no data: the daemon's leak tracing ([collectors.leaks]) provides it"
                            .to_string()
                    }
                    _ => format!(
                        "no data: the {} collector did not run",
                        s.signal.collector()
                    ),
                }
            } else if s.learning > 0 && s.learning == s.series {
                format!(
                    "needs history ({} values per series): one run cannot tell a change from \
                     normal; `perf-user run` learns it",
                    s.need
                )
            } else {
                return None;
            };
            Some(NotEvaluated {
                rule: s.rule.clone(),
                kind: s.kind,
                signal: s.signal,
                reason,
            })
        })
        .collect()
}

/// The most notable observations: per device and operation the p99 block
/// latency, the three highest CPU shares, the highest TCP p99 RTT and
/// retransmit rate.
pub fn observed(obs: &[Observation]) -> Vec<Observed> {
    let mut out = Vec::new();
    let mut add = |o: &Observation| {
        out.push(Observed {
            signal: o.signal,
            series: clip(super::rules::subject(o.signal, &o.labels), 60),
            value: o.signal.unit().format(o.value),
            count: o.count,
        })
    };
    let mut by = |signal: Signal, n: usize| {
        let mut v: Vec<&Observation> = obs.iter().filter(|o| o.signal == signal).collect();
        v.sort_by(|a, b| b.value.total_cmp(&a.value));
        v.into_iter().take(n).for_each(&mut add);
    };
    by(Signal::BlockLatencyP99, 6);
    by(Signal::CpuSelfRatio, 3);
    by(Signal::TcpRttP99, 3);
    by(Signal::TcpRetransmitsPerSecond, 1);
    by(Signal::LeakOutstandingBytes, 3);
    out
}

/// `s` cut to `max` characters, with an ellipsis.
fn clip(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut cut: String = s.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Writes `text` wrapped to [`WIDTH`], each line indented by `indent`
/// (the first by `first`).
fn wrap(out: &mut dyn Write, first: &str, indent: &str, text: &str) -> io::Result<()> {
    let mut line = String::from(first);
    let mut empty = first.trim().is_empty();
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            writeln!(out, "{line}")?;
            line = String::from(indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    writeln!(out, "{line}")
}

/// The report as text.
pub fn write_text(r: &AdviseReport, out: &mut dyn Write) -> io::Result<()> {
    let mut ran: Vec<&str> = r
        .collectors
        .iter()
        .filter(|c| c.ok)
        .map(|c| c.name)
        .collect();
    ran.dedup();
    writeln!(
        out,
        "perf-user advise: {:.1} s of {}; {} rules; {} alert{}",
        r.duration_secs,
        if ran.is_empty() {
            "nothing".to_string()
        } else {
            ran.join(", ")
        },
        r.rules,
        r.alerts.len(),
        if r.alerts.len() == 1 { "" } else { "s" }
    )?;
    for c in r.collectors.iter().filter(|c| !c.ok) {
        wrap(
            out,
            &format!("  ({} did not run:", c.name),
            "   ",
            &format!("{})", c.detail),
        )?;
    }
    for x in &r.alerts {
        let a = &x.alert;
        writeln!(out)?;
        wrap(
            out,
            &format!("[{}] {}:", a.severity.as_str(), a.rule),
            "  ",
            &a.summary,
        )?;
        let Some(adv) = &x.advice else { continue };
        wrap(out, " ", "  ", &adv.diagnosis)?;
        if !adv.evidence.is_empty() {
            writeln!(out, "  Evidence:")?;
            let w = adv.evidence.iter().map(|f| f.name.len()).max().unwrap_or(0);
            for f in &adv.evidence {
                let first = format!("    {:w$} ", f.name);
                let indent = " ".repeat(first.len() + 1);
                wrap(out, &first, &indent, &f.value)?;
            }
        }
        if !adv.stack.is_empty() {
            writeln!(out, "  Stack (caller first):")?;
            for f in &adv.stack {
                writeln!(out, "    {f}")?;
            }
        }
        if !adv.suggestions.is_empty() {
            writeln!(out, "  Try:")?;
            for (i, s) in adv.suggestions.iter().enumerate() {
                wrap(out, &format!("    {}.", i + 1), "       ", &s.text)?;
                if let Some(act) = &s.action {
                    writeln!(
                        out,
                        "       -> {} = {}   (perf-user advise --apply; undo: perf-user revert)",
                        act.setting.display(),
                        act.value
                    )?;
                }
            }
        }
    }
    if r.alerts.is_empty() {
        writeln!(out)?;
        writeln!(out, "No alerts by the rules in force.")?;
    }
    if !r.observed.is_empty() {
        writeln!(out)?;
        writeln!(out, "Observed:")?;
        for o in &r.observed {
            writeln!(
                out,
                "  {:27} {:60} {:>10}  ({} {})",
                o.signal.name(),
                o.series,
                o.value,
                o.count,
                match o.signal {
                    Signal::CpuSelfRatio => "samples",
                    Signal::OffCpuSeconds => "absences",
                    Signal::TcpRetransmitsPerSecond => "retransmits",
                    Signal::TcpRttP99 | Signal::TcpRttP50 => "RTT samples",
                    Signal::LeakOutstandingBytes => "allocations",
                    _ => "I/Os",
                }
            )?;
        }
    }
    if !r.not_evaluated.is_empty() {
        writeln!(out)?;
        writeln!(out, "Not evaluated:")?;
        for n in &r.not_evaluated {
            wrap(
                out,
                &format!("  {} ({}):", n.rule, n.kind),
                "    ",
                &n.reason,
            )?;
        }
    }
    if let Some(applied) = &r.applied {
        writeln!(out)?;
        if applied.changes.is_empty() && applied.failures.is_empty() {
            writeln!(
                out,
                "--apply: no alert suggests a change to an allowlisted setting."
            )?;
        } else {
            writeln!(
                out,
                "Applied (previous values saved in {}; undo with `perf-user revert`):",
                r.state_file
            )?;
            for c in &applied.changes {
                let note = c
                    .note
                    .as_deref()
                    .map(|n| format!("  ({n})"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "  {}: {} -> {}{note}",
                    c.setting.display(),
                    c.from,
                    c.to
                )?;
            }
            for (s, why) in &applied.failures {
                wrap(out, &format!("  FAILED {}:", s.display()), "    ", why)?;
            }
        }
    } else if r.alerts.iter().any(|a| {
        a.advice
            .as_ref()
            .is_some_and(|x| x.actions().next().is_some())
    }) {
        writeln!(out)?;
        wrap(
            out,
            "Nothing was changed.",
            "",
            "`perf-user advise --apply` applies the -> settings above, saving the previous values for `perf-user revert`.",
        )?;
    }
    Ok(())
}

/// The report as pretty JSON.
pub fn write_json(r: &AdviseReport, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, r).map_err(io::Error::other)?;
    writeln!(out)
}

/// A one-line description of an alert for logs: `DiskLatencyHigh firing:
/// p99 block I/O latency of loop3 (write) is 412 ms (above 100 ms)`.
pub fn one_line(a: &Alert) -> String {
    format!("{} {}: {}", a.rule, a.state.as_str(), a.summary)
}

/// A short account of evidence for a log line.
pub fn evidence_line(e: &Evidence) -> String {
    match e {
        Evidence::Block(b) => format!(
            "{} {}: p50 {} p99 {} over {} requests",
            b.device,
            b.op,
            seconds(b.p50_secs),
            seconds(b.p99_secs),
            b.count
        ),
        Evidence::Tcp(t) => format!(
            "{}: RTT p50 {} p99 {} over {} samples, {} retransmits",
            t.what(),
            seconds(t.rtt_p50_secs),
            seconds(t.rtt_p99_secs),
            t.rtt_samples,
            t.retransmits
        ),
        Evidence::Leak(l) => format!(
            "{}{}: {} outstanding in {} allocations",
            l.process,
            l.pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
            l.bytes.map_or_else(|| "?".to_string(), |b| bytes(b as f64)),
            l.allocations
        ),
        Evidence::Cpu(c) => format!(
            "{} in {}: {} of {} samples",
            c.function, c.process, c.self_samples, c.total_samples
        ),
        Evidence::None => String::new(),
    }
}

/// Firing alerts, worst first (severity, then how far past the level).
pub fn firing(alerts: impl Iterator<Item = Advised>) -> Vec<Advised> {
    let mut v: Vec<Advised> = alerts.filter(|a| a.alert.state == State::Firing).collect();
    v.sort_by(|Advised { alert: a, .. }, Advised { alert: b, .. }| {
        b.severity.cmp(&a.severity).then_with(|| {
            let r = |x: &Alert| x.value / x.reference.abs().max(f64::MIN_POSITIVE);
            r(b).total_cmp(&r(a))
        })
    });
    v
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::alerts::{
        actions::tests::fake_root,
        advice,
        engine::{Engine, EngineOptions},
        rules::{Mode, defaults},
        signals::{Batch, BlockEvidence, labels},
    };

    fn report_for(value: f64) -> AdviseReport {
        let root = fake_root(&format!("report-{value}"));
        let mut engine = Engine::new(
            defaults(),
            EngineOptions {
                mode: Mode::OneShot,
                ..EngineOptions::default()
            },
        );
        let ev = Evidence::Block(BlockEvidence {
            device: "loop3".into(),
            op: "write".into(),
            count: 400,
            window_secs: 10.0,
            p50_secs: value / 10.0,
            p90_secs: value / 2.0,
            p99_secs: value,
            mean_secs: value / 5.0,
            mean_size_bytes: 4096.0,
        });
        let mut b = Batch::new(
            UNIX_EPOCH + Duration::from_secs(100),
            Duration::from_secs(10),
        );
        b.extend(
            &Signal::BLOCK,
            vec![Observation {
                signal: Signal::BlockLatencyP99,
                labels: labels([("device", "loop3"), ("op", "write")]),
                value,
                count: 400,
                evidence: ev,
            }],
        );
        b.covered.insert(Signal::CpuSelfRatio);
        engine.evaluate(&b);
        let advised: Vec<Advised> = engine
            .alerts()
            .map(|a| Advised {
                advice: Some(advice::advise(a, &root)),
                alert: a.clone(),
            })
            .collect();
        std::fs::remove_dir_all(&root).unwrap();
        AdviseReport {
            schema_version: SCHEMA_VERSION,
            started_unix_secs: 0.0,
            duration_secs: 10.0,
            collectors: vec![
                CollectorStatus {
                    name: "block",
                    ok: true,
                    detail: String::new(),
                },
                CollectorStatus {
                    name: "cpu",
                    ok: true,
                    detail: String::new(),
                },
                CollectorStatus {
                    name: "tcp",
                    ok: false,
                    detail: "no permission".into(),
                },
            ],
            rules: engine.rules().len(),
            alerts: firing(advised.into_iter()),
            not_evaluated: not_evaluated(engine.status()),
            observed: observed(&b.observations),
            applied: None,
            state_file: "/tmp/x".into(),
        }
    }

    #[test]
    fn text_report_shows_alert_advice_and_what_was_not_evaluated() {
        let r = report_for(0.4);
        let mut out = Vec::new();
        write_text(&r, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("1 alert\n"), "{text}");
        assert!(
            text.contains(
                "[warning] DiskLatencyHigh: p99 block I/O latency of loop3 (write) is 400 ms"
            ),
            "{text}"
        );
        assert!(
            text.contains("-> /sys/block/loop3/queue/nr_requests = 64"),
            "{text}"
        );
        assert!(text.contains("DiskLatencyAnomaly (baseline):"), "{text}");
        assert!(text.contains("needs history"), "{text}");
        assert!(
            text.contains("TcpRttAnomaly (baseline): no data: the tcp collector did not run"),
            "{text}"
        );
        assert!(text.contains("MemoryLeak (rate):"), "{text}");
        assert!(text.contains("Nothing was changed"), "{text}");
        assert!(
            text.lines().all(|l| l.chars().count() <= WIDTH + 40),
            "{text}"
        );
    }

    #[test]
    fn json_report_has_alerts_with_advice() {
        let r = report_for(0.4);
        let mut out = Vec::new();
        write_json(&r, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema_version"], 1);
        let a = &v["alerts"][0];
        assert_eq!(a["rule"], "DiskLatencyHigh");
        assert_eq!(a["state"], "firing");
        assert_eq!(a["labels"]["device"], "loop3");
        assert_eq!(a["evidence"]["type"], "block");
        assert!(a["advice"]["suggestions"].as_array().unwrap().len() >= 2);
        assert_eq!(
            a["advice"]["suggestions"][0]["action"]["setting"]["attribute"],
            "nr_requests"
        );
        assert!(v["applied"].is_null());
    }

    #[test]
    fn a_quiet_disk_gives_no_alert() {
        let r = report_for(0.004);
        assert!(r.alerts.is_empty());
        let mut out = Vec::new();
        write_text(&r, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("No alerts"), "{text}");
        assert!(text.contains("block_latency_p99_seconds"), "{text}");
    }

    #[test]
    fn wrapping_keeps_words_and_indents() {
        let mut out = Vec::new();
        let long = "word ".repeat(60);
        wrap(&mut out, "  1.", "     ", &long).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().count() >= 3);
        assert!(text.lines().skip(1).all(|l| l.starts_with("     word")));
        assert_eq!(text.split_whitespace().filter(|w| *w == "word").count(), 60);
    }
}
