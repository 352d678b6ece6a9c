//! The daemon's side of the engine: signals from the metric families the
//! daemon reads at scrape time, and the alert metrics it exports.
//!
//! Reading the families rather than the collectors keeps the engine to
//! exactly what `/metrics` shows (so an alert can be reproduced with
//! PromQL), and needs nothing from the collectors beyond what they export.
//! Histograms and counters are cumulative, so each evaluation looks at the
//! difference since the previous one: the window is the evaluation
//! interval. CPU shares are per CPU window; a batch covers them only when
//! a new window has closed.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use perf_ebpf_common::hist::{HIST_SLOTS, LATENCY_UNIT_NS, SIZE_UNIT_SHIFT};

use super::{
    engine::{Engine, State},
    signals::{
        self, Batch, CpuEvidence, Evidence, Labels, LeakEvidence, Observation, Signal, TcpEvidence,
    },
};
use crate::{
    daemon::exposition::{Family, HistogramValue, Kind, Value},
    histogram::Log2Hist,
};

/// Metric names read.
const BLOCK_LATENCY: &str = "perf_user_block_io_latency_seconds";
const BLOCK_SIZE: &str = "perf_user_block_io_size_bytes";
const TCP_RTT: &str = "perf_user_tcp_rtt_seconds";
const TCP_RETRANSMITS: &str = "perf_user_tcp_retransmits_total";
const CPU_RATIO: &str = "perf_user_cpu_hotspot_self_ratio";
const CPU_WINDOW_SAMPLES: &str = "perf_user_cpu_window_samples";
const CPU_WINDOW_END: &str = "perf_user_cpu_window_end_timestamp_seconds";
const CPU_WINDOW_DURATION: &str = "perf_user_cpu_window_duration_seconds";
const CPU_OTHER: &str = "[other]";
const LEAK_OUTSTANDING: &str = "perf_user_leak_outstanding_allocations";
const LEAK_TRACED: &str = "perf_user_leak_traced_processes";

/// A kernel log2 histogram back from its exported form: the exporter
/// writes one bucket per kernel slot, in slot order (`daemon::block::to_histogram`).
fn log2_from(h: &HistogramValue, unit: u64, scale: f64) -> Log2Hist {
    let mut out = Log2Hist::new(unit);
    for (slot, (_, n)) in out.slots.iter_mut().zip(h.buckets.iter().take(HIST_SLOTS)) {
        *slot = *n;
    }
    out.count = out.slots.iter().sum();
    out.sum = (h.sum * scale).max(0.0) as u64;
    out
}

fn label_map(labels: &[(&'static str, String)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Turns successive readings of the daemon's families into batches.
#[derive(Debug, Default)]
pub struct FromMetrics {
    last: Option<SystemTime>,
    block: HashMap<Labels, (Log2Hist, Log2Hist)>,
    rtt: HashMap<Labels, Log2Hist>,
    retransmits: HashMap<Labels, f64>,
    cpu_window_end: f64,
}

impl FromMetrics {
    /// An empty converter: the first batch covers nothing but CPU (a closed
    /// window), since cumulative values need a previous reading.
    pub fn new() -> Self {
        Self::default()
    }

    /// The batch for `families` read at `at`.
    pub fn batch(&mut self, families: &[Family], at: SystemTime) -> Batch {
        let window = self
            .last
            .and_then(|l| at.duration_since(l).ok())
            .unwrap_or_default();
        let first = self.last.is_none();
        self.last = Some(at);
        let mut batch = Batch::new(at, window);
        let find = |name: &str| families.iter().find(|f| f.name == name);

        if let Some(lat) = find(BLOCK_LATENCY) {
            let sizes = find(BLOCK_SIZE);
            let mut obs = Vec::new();
            let mut seen = HashMap::new();
            for s in &lat.samples {
                let Value::Histogram(h) = &s.value else {
                    continue;
                };
                let l = label_map(&s.labels);
                let latency = log2_from(h, LATENCY_UNIT_NS, 1e9);
                let size = sizes
                    .and_then(|f| f.samples.iter().find(|z| z.labels == s.labels))
                    .and_then(|z| match &z.value {
                        Value::Histogram(h) => Some(log2_from(h, 1 << SIZE_UNIT_SHIFT, 1.0)),
                        Value::Number(_) => None,
                    })
                    .unwrap_or_else(|| Log2Hist::new(1 << SIZE_UNIT_SHIFT));
                if let Some((prev_lat, prev_size)) = self.block.get(&l) {
                    let get = |k: &str| l.get(k).map(String::as_str).unwrap_or_default();
                    obs.extend(signals::block_observations(
                        get("device"),
                        get("op"),
                        &signals::hist_delta(&latency, prev_lat),
                        &signals::hist_delta(&size, prev_size),
                        window,
                    ));
                }
                seen.insert(l, (latency, size));
            }
            self.block = seen;
            if !first {
                batch.extend(&Signal::BLOCK, obs);
            }
        }

        if let Some(rtt) = find(TCP_RTT) {
            let retrans = find(TCP_RETRANSMITS);
            let mut obs = Vec::new();
            let mut seen_rtt = HashMap::new();
            let mut seen_retrans = HashMap::new();
            let number = |f: Option<&Family>, l: &[(&'static str, String)]| {
                f.and_then(|f| f.samples.iter().find(|z| z.labels == l))
                    .and_then(|z| match z.value {
                        Value::Number(v) => Some(v),
                        Value::Histogram(_) => None,
                    })
            };
            // Every labelled series of either family.
            let mut series: Vec<&[(&'static str, String)]> =
                rtt.samples.iter().map(|s| s.labels.as_slice()).collect();
            for s in retrans.iter().flat_map(|f| &f.samples) {
                if !series.contains(&s.labels.as_slice()) {
                    series.push(&s.labels);
                }
            }
            for raw in series {
                let l = label_map(raw);
                let hist = rtt
                    .samples
                    .iter()
                    .find(|s| s.labels == raw)
                    .and_then(|s| match &s.value {
                        Value::Histogram(h) => Some(log2_from(h, LATENCY_UNIT_NS, 1e9)),
                        Value::Number(_) => None,
                    })
                    .unwrap_or_else(|| Log2Hist::new(LATENCY_UNIT_NS));
                let count = number(retrans, raw).unwrap_or(0.0);
                if let (Some(prev_h), Some(prev_c)) =
                    (self.rtt.get(&l), self.retransmits.get(&l).or(Some(&0.0)))
                {
                    let delta = signals::hist_delta(&hist, prev_h);
                    let retransmits = if count >= *prev_c {
                        count - prev_c
                    } else {
                        count
                    };
                    obs.extend(signals::tcp_observations(
                        &l,
                        &delta,
                        retransmits as u64,
                        TcpEvidence {
                            port: l.get("port").cloned(),
                            side: l.get("side").cloned(),
                            ..TcpEvidence::default()
                        },
                        window,
                    ));
                }
                seen_rtt.insert(l.clone(), hist);
                seen_retrans.insert(l, count);
            }
            self.rtt = seen_rtt;
            self.retransmits = seen_retrans;
            if !first {
                batch.extend(&Signal::TCP, obs);
            }
        }

        // Outstanding allocations per traced process name: a gauge, read as
        // is; names with no process traced now have no data.
        if let Some(out) = find(LEAK_OUTSTANDING) {
            let traced = find(LEAK_TRACED);
            let mut obs = Vec::new();
            for s in &out.samples {
                let Value::Number(v) = s.value else { continue };
                let processes = traced
                    .and_then(|f| f.samples.iter().find(|t| t.labels == s.labels))
                    .map_or(0.0, |t| match t.value {
                        Value::Number(n) => n,
                        Value::Histogram(_) => 0.0,
                    });
                if processes < 1.0 {
                    continue;
                }
                let l = label_map(&s.labels);
                obs.push(Observation {
                    signal: Signal::LeakOutstandingAllocations,
                    labels: l.clone(),
                    value: v,
                    count: processes as u64,
                    evidence: Evidence::Leak(LeakEvidence {
                        pid: None,
                        process: l.get("process").cloned().unwrap_or_default(),
                        bytes: None,
                        allocations: v as u64,
                        function: None,
                        stack: Vec::new(),
                    }),
                });
            }
            batch.extend(&[Signal::LeakOutstandingAllocations], obs);
        }

        let single = |name: &str| {
            find(name)
                .and_then(|f| f.samples.first())
                .and_then(|s| match s.value {
                    Value::Number(v) => Some(v),
                    Value::Histogram(_) => None,
                })
        };
        if let (Some(ratio), Some(end)) = (find(CPU_RATIO), single(CPU_WINDOW_END))
            && end > 0.0
            && end != self.cpu_window_end
        {
            self.cpu_window_end = end;
            let samples = single(CPU_WINDOW_SAMPLES).unwrap_or(0.0) as u64;
            let duration = single(CPU_WINDOW_DURATION).unwrap_or(0.0);
            let mut obs = Vec::new();
            for s in &ratio.samples {
                let Value::Number(v) = s.value else { continue };
                let l = label_map(&s.labels);
                let get = |k: &str| l.get(k).cloned().unwrap_or_default();
                if get("function") == CPU_OTHER {
                    continue;
                }
                obs.push(Observation {
                    signal: Signal::CpuSelfRatio,
                    labels: l.clone(),
                    value: v,
                    count: samples,
                    evidence: Evidence::Cpu(CpuEvidence {
                        process: get("process"),
                        pids: Vec::new(),
                        function: get("function"),
                        module: get("module"),
                        self_samples: (v * samples as f64).round() as u64,
                        total_samples: samples,
                        stack: Vec::new(),
                    }),
                });
            }
            let mut cpu = Batch::new(at, Duration::from_secs_f64(duration.max(0.0)));
            cpu.extend(&[Signal::CpuSelfRatio], obs);
            batch.covered.extend(cpu.covered);
            batch.observations.extend(cpu.observations);
        }
        batch
    }
}

/// The alert metrics: per rule, the number of pending and firing alerts
/// (`perf_user_alerts{alertname,severity,state}`, as Prometheus's own
/// `ALERTS` series), plus the engine's and the webhook's counters.
pub fn families(engine: &Engine, stats: &Stats) -> Vec<Family> {
    let mut alerts = Family::new(
        "perf_user_alerts",
        Kind::Gauge,
        "Alerts per rule and state (pending, firing), from the built-in rule engine; see docs/alerts.md.",
    );
    for (rule, severity, pending, firing) in engine.counts() {
        for (state, n) in [(State::Pending, pending), (State::Firing, firing)] {
            alerts.push(
                vec![
                    ("alertname", rule.to_string()),
                    ("severity", severity.as_str().to_string()),
                    ("state", state.as_str().to_string()),
                ],
                n as f64,
            );
        }
    }
    let mut notifications = Family::new(
        "perf_user_alert_notifications_total",
        Kind::Counter,
        "Posts of alerts to Alertmanager, by result (ok, error).",
    );
    notifications.push(vec![("result", "ok".into())], stats.sent_ok as f64);
    notifications.push(vec![("result", "error".into())], stats.sent_error as f64);
    let mut transitions = Family::new(
        "perf_user_alert_transitions_total",
        Kind::Counter,
        "Alert state changes, by state entered (pending, firing, resolved).",
    );
    for (state, n) in [
        (State::Pending, stats.pending),
        (State::Firing, stats.firing),
        (State::Resolved, stats.resolved),
    ] {
        transitions.push(vec![("state", state.as_str().to_string())], n as f64);
    }
    vec![
        alerts,
        notifications,
        transitions,
        Family::single(
            "perf_user_alert_evaluations_total",
            Kind::Counter,
            "Rule evaluations done.",
            engine.evaluations() as f64,
        ),
        Family::single(
            "perf_user_alert_evaluation_duration_seconds",
            Kind::Gauge,
            "Time the last evaluation took (reading the sources, judging, advice).",
            stats.last_duration.as_secs_f64(),
        ),
        Family::single(
            "perf_user_alert_series_dropped_total",
            Kind::Counter,
            "Series not judged because the engine already tracks its maximum.",
            engine.series_dropped() as f64,
        ),
    ]
}

/// Counters kept beside the engine.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Successful posts.
    pub sent_ok: u64,
    /// Failed posts.
    pub sent_error: u64,
    /// Transitions into pending.
    pub pending: u64,
    /// Transitions into firing.
    pub firing: u64,
    /// Transitions into resolved.
    pub resolved: u64,
    /// The last evaluation's duration.
    pub last_duration: Duration,
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::{
        alerts::{engine::EngineOptions, rules::defaults},
        daemon::block::to_histogram,
    };

    fn device_op(device: &str, op: &str) -> Labels {
        crate::alerts::signals::labels([("device", device), ("op", op)])
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn block_family(values_us: &[u64]) -> Family {
        let mut h = Log2Hist::new(LATENCY_UNIT_NS);
        for v in values_us {
            h.record(v * 1000);
        }
        let mut f = Family::new(BLOCK_LATENCY, Kind::Histogram, "x");
        f.push_histogram(
            vec![("device", "loop3".into()), ("op", "write".into())],
            to_histogram(&h, 1e9),
        );
        f
    }

    #[test]
    fn block_windows_are_differences_between_readings() {
        let mut m = FromMetrics::new();
        let first: Vec<u64> = vec![100; 50];
        let b = m.batch(&[block_family(&first)], at(0));
        assert!(b.covered.is_empty(), "nothing to compare with yet");
        // 50 more fast ones, then 50 slow ones: the window holds only those.
        let mut second = first.clone();
        second.extend([200_000u64; 50]);
        let b = m.batch(&[block_family(&second)], at(10));
        assert_eq!(b.window, Duration::from_secs(10));
        assert!(b.covered.contains(&Signal::BlockLatencyP99));
        let p99 = b
            .observations
            .iter()
            .find(|o| o.signal == Signal::BlockLatencyP99)
            .unwrap();
        assert_eq!(p99.count, 50);
        assert!(p99.value > 0.13 && p99.value < 0.27, "{}", p99.value);
        assert_eq!(p99.labels, device_op("loop3", "write"));
    }

    fn cpu_families(end: f64, share: f64) -> Vec<Family> {
        let mut ratio = Family::new(CPU_RATIO, Kind::Gauge, "x");
        ratio.push(
            vec![
                ("process", "app".into()),
                ("function", "hot".into()),
                ("module", "app".into()),
            ],
            share,
        );
        ratio.push(
            vec![
                ("process", String::new()),
                ("function", CPU_OTHER.into()),
                ("module", String::new()),
            ],
            1.0 - share,
        );
        vec![
            ratio,
            Family::single(CPU_WINDOW_SAMPLES, Kind::Gauge, "x", 1000.0),
            Family::single(CPU_WINDOW_END, Kind::Gauge, "x", end),
        ]
    }

    #[test]
    fn cpu_windows_are_covered_once() {
        let mut m = FromMetrics::new();
        assert!(
            m.batch(&cpu_families(0.0, 0.5), at(0)).covered.is_empty(),
            "no window yet"
        );
        let b = m.batch(&cpu_families(100.0, 0.5), at(10));
        assert!(b.covered.contains(&Signal::CpuSelfRatio));
        assert_eq!(b.observations.len(), 1, "[other] is not a function");
        assert_eq!(b.observations[0].count, 1000);
        assert!(
            m.batch(&cpu_families(100.0, 0.5), at(20))
                .covered
                .is_empty()
        );
    }

    #[test]
    fn tcp_series_by_port_with_retransmit_rates() {
        let fams = |rtt_us: &[u64], retrans: f64| {
            let mut h = Log2Hist::new(LATENCY_UNIT_NS);
            for v in rtt_us {
                h.record(v * 1000);
            }
            let l = vec![("side", "local".to_string()), ("port", "5001".to_string())];
            let mut rtt = Family::new(TCP_RTT, Kind::Histogram, "x");
            rtt.push_histogram(l.clone(), to_histogram(&h, 1e9));
            let mut r = Family::new(TCP_RETRANSMITS, Kind::Counter, "x");
            r.push(l, retrans);
            vec![rtt, r]
        };
        let mut m = FromMetrics::new();
        m.batch(&fams(&[100; 10], 5.0), at(0));
        let mut more = vec![100; 10];
        more.extend([50_000; 100]);
        let b = m.batch(&fams(&more, 25.0), at(10));
        let get = |s| b.observations.iter().find(|o| o.signal == s).unwrap();
        assert!((get(Signal::TcpRetransmitsPerSecond).value - 2.0).abs() < 1e-9);
        let p50 = get(Signal::TcpRttP50);
        assert!(p50.value > 0.032 && p50.value <= 0.065, "{}", p50.value);
        assert_eq!(p50.labels["port"], "5001");
        let Evidence::Tcp(e) = &p50.evidence else {
            panic!()
        };
        assert_eq!(e.what(), "local port 5001");
    }

    #[test]
    fn leak_counts_per_traced_name() {
        let fams = |traced: f64, outstanding: f64| {
            let mut o = Family::new(LEAK_OUTSTANDING, Kind::Gauge, "x");
            o.push(vec![("process", "leaker".into())], outstanding);
            o.push(vec![("process", "absent".into())], 0.0);
            let mut t = Family::new(LEAK_TRACED, Kind::Gauge, "x");
            t.push(vec![("process", "leaker".into())], traced);
            t.push(vec![("process", "absent".into())], 0.0);
            vec![o, t]
        };
        let mut m = FromMetrics::new();
        let b = m.batch(&fams(1.0, 500.0), at(0));
        assert!(b.covered.contains(&Signal::LeakOutstandingAllocations));
        assert_eq!(
            b.observations.len(),
            1,
            "a name with nothing traced has no data"
        );
        assert_eq!(b.observations[0].value, 500.0);
        assert_eq!(b.observations[0].labels["process"], "leaker");
        assert!(m.batch(&fams(0.0, 500.0), at(10)).observations.is_empty());
    }

    #[test]
    fn alert_metrics_have_a_series_per_rule_and_state() {
        let engine = Engine::new(defaults(), EngineOptions::default());
        let fams = families(&engine, &Stats::default());
        assert_eq!(fams[0].name, "perf_user_alerts");
        assert_eq!(fams[0].samples.len(), defaults().len() * 2);
        let text = crate::daemon::exposition::to_prometheus_text(
            &crate::daemon::exposition::encode_openmetrics(&fams).unwrap(),
        );
        assert!(
            text.contains("perf_user_alerts{alertname=\"DiskLatencyHigh\",severity=\"warning\",state=\"firing\"} 0"),
            "{text}"
        );
    }
}
