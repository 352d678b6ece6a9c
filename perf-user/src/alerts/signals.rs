//! What rules look at: named signals (one value per labelled series per
//! evaluation), with the evidence behind each value, built from what the
//! collectors read.
//!
//! A [`Batch`] is one evaluation's input. It says which signals it has fresh
//! data for (`covered`): a CPU window that has not closed since the last
//! evaluation brings no new hotspot shares, and must not count as "the
//! function disappeared" nor be learned twice.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{
    collectors::tcp::{PortSide, TcpKind, TcpSnapshot},
    histogram::Log2Hist,
    profile::{Profile, hotspots},
};

/// Label names and values of one series.
pub type Labels = BTreeMap<String, String>;

/// A quantity rules can watch.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
pub enum Signal {
    /// p99 block I/O latency (issue to completion) per `device` and `op`, seconds.
    #[serde(rename = "block_latency_p99_seconds")]
    #[value(name = "block_latency_p99_seconds")]
    BlockLatencyP99,
    /// Median block I/O latency per `device` and `op`, seconds.
    #[serde(rename = "block_latency_p50_seconds")]
    #[value(name = "block_latency_p50_seconds")]
    BlockLatencyP50,
    /// Mean block I/O latency per `device` and `op`, seconds.
    #[serde(rename = "block_latency_mean_seconds")]
    #[value(name = "block_latency_mean_seconds")]
    BlockLatencyMean,
    /// p99 of TCP smoothed RTT samples per `peer` (`advise`) or per `port`
    /// and `side` (the daemon), seconds.
    #[serde(rename = "tcp_rtt_p99_seconds")]
    #[value(name = "tcp_rtt_p99_seconds")]
    TcpRttP99,
    /// Median of TCP smoothed RTT samples per `peer` or `port` and `side`, seconds.
    #[serde(rename = "tcp_rtt_p50_seconds")]
    #[value(name = "tcp_rtt_p50_seconds")]
    TcpRttP50,
    /// TCP retransmitted segments per second per `peer` or `port` and `side`.
    #[serde(rename = "tcp_retransmits_per_second")]
    #[value(name = "tcp_retransmits_per_second")]
    TcpRetransmitsPerSecond,
    /// Bytes outstanding (allocated, not freed) per call `stack` of a
    /// traced process (`pid`, `process`).
    #[serde(rename = "leak_outstanding_bytes")]
    #[value(name = "leak_outstanding_bytes")]
    LeakOutstandingBytes,
    /// Allocations outstanding (made since tracing began, not freed) per
    /// traced `process` name: what the daemon's leak tracing exports.
    #[serde(rename = "leak_outstanding_allocations")]
    #[value(name = "leak_outstanding_allocations")]
    LeakOutstandingAllocations,
    /// Share of CPU samples (self time) per `process`, `function`, `module`,
    /// from 0 to 1.
    #[serde(rename = "cpu_self_ratio")]
    #[value(name = "cpu_self_ratio")]
    CpuSelfRatio,
}

/// How a signal's values are written for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Seconds, shown as µs, ms or s.
    Seconds,
    /// Bytes, shown with binary prefixes.
    Bytes,
    /// A share from 0 to 1, shown as a percentage.
    Ratio,
    /// Events per second.
    PerSecond,
    /// A plain count.
    Count,
}

impl Signal {
    /// Every signal.
    pub const ALL: [Signal; 9] = [
        Signal::BlockLatencyP99,
        Signal::BlockLatencyP50,
        Signal::BlockLatencyMean,
        Signal::TcpRttP99,
        Signal::TcpRttP50,
        Signal::TcpRetransmitsPerSecond,
        Signal::LeakOutstandingBytes,
        Signal::LeakOutstandingAllocations,
        Signal::CpuSelfRatio,
    ];

    /// Block I/O signals.
    pub const BLOCK: [Signal; 3] = [
        Signal::BlockLatencyP99,
        Signal::BlockLatencyP50,
        Signal::BlockLatencyMean,
    ];

    /// TCP signals.
    pub const TCP: [Signal; 3] = [
        Signal::TcpRttP99,
        Signal::TcpRttP50,
        Signal::TcpRetransmitsPerSecond,
    ];

    /// The name used in the configuration and in alerts.
    pub fn name(self) -> &'static str {
        match self {
            Signal::BlockLatencyP99 => "block_latency_p99_seconds",
            Signal::BlockLatencyP50 => "block_latency_p50_seconds",
            Signal::BlockLatencyMean => "block_latency_mean_seconds",
            Signal::TcpRttP99 => "tcp_rtt_p99_seconds",
            Signal::TcpRttP50 => "tcp_rtt_p50_seconds",
            Signal::TcpRetransmitsPerSecond => "tcp_retransmits_per_second",
            Signal::LeakOutstandingBytes => "leak_outstanding_bytes",
            Signal::LeakOutstandingAllocations => "leak_outstanding_allocations",
            Signal::CpuSelfRatio => "cpu_self_ratio",
        }
    }

    /// The signal called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// A few words saying what it is, for summaries.
    pub fn describe(self) -> &'static str {
        match self {
            Signal::BlockLatencyP99 => "p99 block I/O latency",
            Signal::BlockLatencyP50 => "median block I/O latency",
            Signal::BlockLatencyMean => "mean block I/O latency",
            Signal::TcpRttP99 => "p99 TCP round-trip time",
            Signal::TcpRttP50 => "median TCP round-trip time",
            Signal::TcpRetransmitsPerSecond => "TCP retransmits",
            Signal::LeakOutstandingBytes => "outstanding heap bytes",
            Signal::LeakOutstandingAllocations => "outstanding allocations",
            Signal::CpuSelfRatio => "CPU share (self time)",
        }
    }

    /// Its unit.
    pub fn unit(self) -> Unit {
        match self {
            Signal::BlockLatencyP99
            | Signal::BlockLatencyP50
            | Signal::BlockLatencyMean
            | Signal::TcpRttP99
            | Signal::TcpRttP50 => Unit::Seconds,
            Signal::TcpRetransmitsPerSecond => Unit::PerSecond,
            Signal::LeakOutstandingBytes => Unit::Bytes,
            Signal::LeakOutstandingAllocations => Unit::Count,
            Signal::CpuSelfRatio => Unit::Ratio,
        }
    }

    /// The labels its series carry (matchers may use only these).
    pub fn label_names(self) -> &'static [&'static str] {
        match self {
            Signal::BlockLatencyP99 | Signal::BlockLatencyP50 | Signal::BlockLatencyMean => {
                &["device", "op"]
            }
            Signal::TcpRttP99 | Signal::TcpRttP50 | Signal::TcpRetransmitsPerSecond => {
                &["peer", "port", "side"]
            }
            Signal::LeakOutstandingBytes => &["pid", "process", "stack", "function"],
            Signal::LeakOutstandingAllocations => &["process"],
            Signal::CpuSelfRatio => &["process", "function", "module"],
        }
    }

    /// Which collector provides it.
    pub fn collector(self) -> &'static str {
        match self {
            Signal::BlockLatencyP99 | Signal::BlockLatencyP50 | Signal::BlockLatencyMean => "block",
            Signal::TcpRttP99 | Signal::TcpRttP50 | Signal::TcpRetransmitsPerSecond => "tcp",
            Signal::LeakOutstandingBytes | Signal::LeakOutstandingAllocations => "leaks",
            Signal::CpuSelfRatio => "cpu",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Unit {
    /// `v` for people: `12.3 ms`, `1.5 MiB`, `42.0%`, `3.2/s`.
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Seconds => seconds(v),
            Unit::Bytes => bytes(v),
            Unit::Ratio => format!("{:.1}%", v * 100.0),
            Unit::PerSecond => format!("{v:.2}/s"),
            Unit::Count => format!("{v:.0}"),
        }
    }

    /// A rate of this unit per minute, for people: `1.5 MiB/min`.
    pub fn format_per_minute(self, v: f64) -> String {
        match self {
            Unit::Ratio => format!("{:.1} points/min", v * 100.0),
            _ => format!("{}/min", self.format(v)),
        }
    }
}

/// Seconds as µs, ms or s with three significant digits.
pub fn seconds(v: f64) -> String {
    let a = v.abs();
    if a < 1e-3 {
        format!("{:.0} µs", v * 1e6)
    } else if a < 1.0 {
        format!("{} ms", sig3(v * 1e3))
    } else {
        format!("{} s", sig3(v))
    }
}

/// Bytes with binary prefixes: `512 B`, `46.9 KiB`.
pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = v.abs();
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    let sign = if v < 0.0 { "-" } else { "" };
    if unit == 0 {
        format!("{sign}{x:.0} B")
    } else {
        format!("{sign}{x:.1} {}", UNITS[unit])
    }
}

fn sig3(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The facts behind one value, for the alert's evidence and its advice.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Evidence {
    /// Nothing beyond the value.
    #[default]
    None,
    /// A disk's latency in the window.
    Block(BlockEvidence),
    /// A peer's RTT and retransmits in the window.
    Tcp(TcpEvidence),
    /// A call stack's outstanding allocations.
    Leak(LeakEvidence),
    /// A function's CPU share.
    Cpu(CpuEvidence),
}

/// One disk and operation over one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BlockEvidence {
    /// Disk name (`vda`, `loop3`).
    pub device: String,
    /// `read`, `write`, `flush`, `discard` or `other`.
    pub op: String,
    /// Requests completed in the window.
    pub count: u64,
    /// Length of the window, seconds.
    pub window_secs: f64,
    /// Median latency, seconds.
    pub p50_secs: f64,
    /// p90 latency, seconds.
    pub p90_secs: f64,
    /// p99 latency, seconds.
    pub p99_secs: f64,
    /// Mean latency, seconds.
    pub mean_secs: f64,
    /// Mean request size, bytes (0 when unknown).
    pub mean_size_bytes: f64,
}

/// One TCP peer (one-off runs) or one port (the daemon, whose metrics sum
/// peers away) over one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TcpEvidence {
    /// The remote address (`other` for peers folded together), when by peer.
    pub peer: Option<String>,
    /// The port: by port, the series' port; by peer, its busiest port.
    pub port: Option<String>,
    /// Whether `port` is the local or the remote end.
    pub side: Option<String>,
    /// RTT samples in the window.
    pub rtt_samples: u64,
    /// Median smoothed RTT, seconds.
    pub rtt_p50_secs: f64,
    /// p99 smoothed RTT, seconds.
    pub rtt_p99_secs: f64,
    /// Retransmitted segments in the window.
    pub retransmits: u64,
    /// Length of the window, seconds.
    pub window_secs: f64,
}

impl TcpEvidence {
    /// `peer 10.0.0.2` or `local port 5001`.
    pub fn what(&self) -> String {
        match (&self.peer, &self.port) {
            (Some(p), _) => format!("peer {p}"),
            (None, Some(port)) => match &self.side {
                Some(side) => format!("{side} port {port}"),
                None => format!("port {port}"),
            },
            (None, None) => "TCP".into(),
        }
    }
}

/// One call stack of a traced process (`advise --pid`), or every traced
/// process of one name (the daemon, which counts allocations only).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LeakEvidence {
    /// The process; `None` for all traced processes of the name.
    pub pid: Option<u32>,
    /// Its name.
    pub process: String,
    /// Outstanding bytes now, when known.
    pub bytes: Option<u64>,
    /// Outstanding allocations now.
    pub allocations: u64,
    /// The allocation function (malloc, calloc, ...), for one stack.
    pub function: Option<String>,
    /// Frames, root first; the last one called `function`.
    pub stack: Vec<String>,
}

/// One function's CPU share over one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CpuEvidence {
    /// Process name.
    pub process: String,
    /// PIDs the function was sampled in (at most a few).
    pub pids: Vec<u32>,
    /// Function name.
    pub function: String,
    /// Binary or library (`[kernel]` for the kernel).
    pub module: String,
    /// Samples with it running.
    pub self_samples: u64,
    /// All samples in the window.
    pub total_samples: u64,
    /// Its most frequent stack, root first, ending with the function.
    pub stack: Vec<String>,
}

/// One value of one series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Observation {
    /// What it is.
    pub signal: Signal,
    /// Which series.
    pub labels: Labels,
    /// The value, in the signal's unit.
    pub value: f64,
    /// How many events it summarizes (I/Os, RTT samples, CPU samples), so
    /// that rules can ignore values from too few; 0 when not applicable.
    pub count: u64,
    /// The facts behind it.
    pub evidence: Evidence,
}

/// One evaluation's input.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// When the data was read.
    pub at: SystemTime,
    /// The span of time the values describe.
    pub window: Duration,
    /// Signals with fresh data in this batch; a covered signal's series that
    /// are missing had no data (an idle disk, a function out of the top N).
    pub covered: BTreeSet<Signal>,
    /// The values.
    pub observations: Vec<Observation>,
}

impl Batch {
    /// An empty batch at `at`.
    pub fn new(at: SystemTime, window: Duration) -> Self {
        Self {
            at,
            window,
            covered: BTreeSet::new(),
            observations: Vec::new(),
        }
    }

    /// Adds observations and marks their signals covered.
    pub fn extend(&mut self, signals: &[Signal], observations: Vec<Observation>) {
        self.covered.extend(signals.iter().copied());
        self.observations.extend(observations);
    }
}

/// Builds a label set from pairs.
pub fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `now - before` of cumulative histograms of the same series (the kernel
/// maps only grow). A counter that went backwards (the collector was
/// restarted) gives `now` itself. The maximum of the difference is not known;
/// it is left 0, so percentiles are not capped by it.
pub fn hist_delta(now: &Log2Hist, before: &Log2Hist) -> Log2Hist {
    if now.count < before.count || now.slots.iter().zip(&before.slots).any(|(a, b)| a < b) {
        return now.clone();
    }
    let mut d = Log2Hist::new(now.unit);
    for (slot, (a, b)) in d.slots.iter_mut().zip(now.slots.iter().zip(&before.slots)) {
        *slot = a - b;
    }
    d.count = now.count - before.count;
    d.sum = now.sum.saturating_sub(before.sum);
    d.max = if before.count == 0 { now.max } else { 0 };
    d
}

/// Observations of one disk and operation's latency over `window`:
/// `latency` in ns, `size` in bytes (may be empty).
pub fn block_observations(
    device: &str,
    op: &str,
    latency: &Log2Hist,
    size: &Log2Hist,
    window: Duration,
) -> Vec<Observation> {
    let (Some(p50), Some(p90), Some(p99), Some(mean)) = (
        latency.percentile(0.50),
        latency.percentile(0.90),
        latency.percentile(0.99),
        latency.mean(),
    ) else {
        return Vec::new();
    };
    let evidence = Evidence::Block(BlockEvidence {
        device: device.to_string(),
        op: op.to_string(),
        count: latency.count,
        window_secs: window.as_secs_f64(),
        p50_secs: p50 / 1e9,
        p90_secs: p90 / 1e9,
        p99_secs: p99 / 1e9,
        mean_secs: mean / 1e9,
        mean_size_bytes: size.mean().unwrap_or(0.0),
    });
    let l = labels([("device", device), ("op", op)]);
    [
        (Signal::BlockLatencyP99, p99),
        (Signal::BlockLatencyP50, p50),
        (Signal::BlockLatencyMean, mean),
    ]
    .into_iter()
    .map(|(signal, ns)| Observation {
        signal,
        labels: l.clone(),
        value: ns / 1e9,
        count: latency.count,
        evidence: evidence.clone(),
    })
    .collect()
}

/// Functions kept per profile: shares below the smallest of these are too
/// small for any rule, and the set of series stays bounded.
pub const CPU_TOP: usize = 20;

/// Most frames kept of a stack in evidence (the leaf end).
pub const MAX_STACK_FRAMES: usize = 24;

/// One observation per function among the `top` by self samples: its share
/// of the profile's samples, with its most frequent stack.
pub fn cpu_observations(profile: &Profile, top: usize) -> Vec<Observation> {
    let total = profile.total_samples;
    if total == 0 {
        return Vec::new();
    }
    hotspots(profile)
        .into_iter()
        .filter(|h| h.self_samples > 0)
        .take(top)
        .map(|h| {
            // The stack that ends in this function most often, and the PIDs.
            let mut best: Option<(u64, Vec<String>)> = None;
            let mut pids = BTreeSet::new();
            for s in &profile.stacks {
                let Some(leaf) = s.frames.last() else {
                    continue;
                };
                if s.process != h.process || leaf.module != h.module || leaf.name() != h.function {
                    continue;
                }
                pids.insert(s.pid);
                if best.as_ref().is_none_or(|(n, _)| s.count > *n) {
                    let skip = s.frames.len().saturating_sub(MAX_STACK_FRAMES);
                    let frames = s.frames[skip..].iter().map(|f| f.name()).collect();
                    best = Some((s.count, frames));
                }
            }
            Observation {
                signal: Signal::CpuSelfRatio,
                labels: labels([
                    ("process", &h.process),
                    ("function", &h.function),
                    ("module", &h.module),
                ]),
                value: h.self_samples as f64 / total as f64,
                count: total,
                evidence: Evidence::Cpu(CpuEvidence {
                    process: h.process.clone(),
                    pids: pids.into_iter().take(8).collect(),
                    function: h.function.clone(),
                    module: h.module.clone(),
                    self_samples: h.self_samples,
                    total_samples: total,
                    stack: best.map(|(_, f)| f).unwrap_or_default(),
                }),
            }
        })
        .collect()
}

/// Observations of one TCP series over `window`: RTT percentiles from
/// `rtt` (ns) and the retransmit rate; `labels` name the series (`peer`, or
/// `port` and `side`).
pub fn tcp_observations(
    labels: &Labels,
    rtt: &Log2Hist,
    retransmits: u64,
    evidence: TcpEvidence,
    window: Duration,
) -> Vec<Observation> {
    let secs = window.as_secs_f64().max(1e-9);
    let evidence = Evidence::Tcp(TcpEvidence {
        rtt_samples: rtt.count,
        rtt_p50_secs: rtt.percentile(0.50).unwrap_or(0.0) / 1e9,
        rtt_p99_secs: rtt.percentile(0.99).unwrap_or(0.0) / 1e9,
        retransmits,
        window_secs: window.as_secs_f64(),
        ..evidence
    });
    let mut out = Vec::new();
    if let (Some(p50), Some(p99)) = (rtt.percentile(0.50), rtt.percentile(0.99)) {
        for (signal, ns) in [(Signal::TcpRttP99, p99), (Signal::TcpRttP50, p50)] {
            out.push(Observation {
                signal,
                labels: labels.clone(),
                value: ns / 1e9,
                count: rtt.count,
                evidence: evidence.clone(),
            });
        }
    }
    out.push(Observation {
        signal: Signal::TcpRetransmitsPerSecond,
        labels: labels.clone(),
        value: retransmits as f64 / secs,
        count: retransmits,
        evidence,
    });
    out
}

/// Peers kept per one-off TCP report: the busiest by RTT samples.
pub const TCP_TOP_PEERS: usize = 20;

/// Per-peer observations of a TCP snapshot covering `window` (the collector
/// attached at its start): the [`TCP_TOP_PEERS`] busiest peers, the rest
/// (and peers the kernel folded together) as `peer="other"`.
pub fn tcp_peer_observations(snap: &TcpSnapshot, window: Duration) -> Vec<Observation> {
    use crate::latency::top_n;
    let unit = perf_ebpf_common::hist::LATENCY_UNIT_NS;
    let key = |s: &crate::collectors::tcp::TcpSeries| s.peer.map(|p| p.to_string());
    let of = |kind: TcpKind| {
        top_n(
            snap.series
                .iter()
                .filter(|s| s.kind == kind)
                .map(|s| (key(s), s.hist.clone())),
            TCP_TOP_PEERS,
            unit,
        )
    };
    let rtt = of(TcpKind::Rtt);
    let retrans = of(TcpKind::Retransmit);
    // The busiest port of each peer, for the evidence.
    let mut ports: BTreeMap<Option<String>, (u64, String, String)> = BTreeMap::new();
    for s in snap.series.iter().filter(|s| s.kind == TcpKind::Rtt) {
        let e = ports.entry(key(s)).or_default();
        if s.hist.count > e.0 {
            let side = match s.side {
                PortSide::Local => "local",
                PortSide::Remote => "remote",
            };
            *e = (s.hist.count, s.port.to_string(), side.to_string());
        }
    }
    let mut peers: Vec<Option<String>> = rtt.iter().map(|(k, _)| k.clone()).collect();
    for (k, _) in &retrans {
        if !peers.contains(k) {
            peers.push(k.clone());
        }
    }
    let mut out = Vec::new();
    for peer in peers {
        let name = peer.clone().unwrap_or_else(|| "other".into());
        let hist = rtt
            .iter()
            .find(|(k, _)| *k == peer)
            .map_or_else(|| Log2Hist::new(unit), |(_, h)| h.clone());
        let retransmits = retrans
            .iter()
            .find(|(k, _)| *k == peer)
            .map_or(0, |(_, h)| h.count);
        let (port, side) = ports
            .get(&peer)
            .map(|(_, p, s)| (Some(p.clone()), Some(s.clone())))
            .unwrap_or_default();
        out.extend(tcp_observations(
            &labels([("peer", &name)]),
            &hist,
            retransmits,
            TcpEvidence {
                peer: Some(name.clone()),
                port,
                side,
                ..TcpEvidence::default()
            },
            window,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::profile::{Frame, LostCounts, StackSample};

    fn hist(values_us: &[u64]) -> Log2Hist {
        let mut h = Log2Hist::new(1_000);
        for &v in values_us {
            h.record(v * 1_000);
        }
        h
    }

    #[test]
    fn names_round_trip_and_label_sets_are_known() {
        for s in Signal::ALL {
            assert_eq!(Signal::from_name(s.name()), Some(s));
            assert!(!s.label_names().is_empty());
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
        assert_eq!(Signal::from_name("nope"), None);
    }

    #[test]
    fn units_format_for_people() {
        assert_eq!(seconds(0.000_250), "250 µs");
        assert_eq!(seconds(0.0123), "12.3 ms");
        assert_eq!(seconds(0.150), "150 ms");
        assert_eq!(seconds(2.5), "2.50 s");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1.5 * 1024.0 * 1024.0), "1.5 MiB");
        assert_eq!(Unit::Ratio.format(0.4213), "42.1%");
        assert_eq!(Unit::PerSecond.format(3.0), "3.00/s");
        assert_eq!(Unit::Count.format(1234.4), "1234");
        assert_eq!(Unit::Bytes.format_per_minute(2048.0), "2.0 KiB/min");
    }

    #[test]
    fn delta_of_cumulative_histograms() {
        let before = hist(&[100, 100, 5_000]);
        let now = {
            let mut h = before.clone();
            for v in [100u64, 50_000, 50_000] {
                h.record(v * 1_000);
            }
            h
        };
        let d = hist_delta(&now, &before);
        assert_eq!(d.count, 3);
        assert_eq!(d.sum, 100_100_000);
        assert_eq!(d.slots.iter().sum::<u64>(), 3);
        // A restarted collector: the counts went down, take `now` as is.
        let restarted = hist(&[7]);
        assert_eq!(hist_delta(&restarted, &now), restarted);
    }

    #[test]
    fn block_observations_give_percentiles_in_seconds() {
        let mut v = vec![100u64; 98];
        v.extend([80_000, 80_000]);
        let obs = block_observations(
            "loop3",
            "write",
            &hist(&v),
            &Log2Hist::new(1024),
            Duration::from_secs(10),
        );
        assert_eq!(obs.len(), 3);
        let p99 = &obs[0];
        assert_eq!(p99.signal, Signal::BlockLatencyP99);
        assert_eq!(p99.labels, labels([("device", "loop3"), ("op", "write")]));
        assert!(p99.value > 0.06 && p99.value <= 0.080, "{}", p99.value);
        assert_eq!(p99.count, 100);
        assert!(obs[1].value < 0.000_128, "median {}", obs[1].value);
        assert!(block_observations("x", "read", &hist(&[]), &hist(&[]), Duration::ZERO).is_empty());
    }

    #[test]
    fn tcp_peers_get_rtt_percentiles_and_retransmit_rates() {
        use crate::collectors::tcp::TcpSeries;
        let series = |kind, peer: &str, port, values_us: &[u64]| TcpSeries {
            kind,
            side: PortSide::Local,
            port,
            peer: Some(peer.parse().unwrap()),
            hist: hist(values_us),
        };
        let snap = TcpSnapshot {
            series: vec![
                series(TcpKind::Rtt, "10.0.0.2", 5001, &[200; 100]),
                series(TcpKind::Rtt, "10.0.0.2", 22, &[100; 10]),
                series(TcpKind::Retransmit, "10.0.0.2", 5001, &[0; 30]),
                series(TcpKind::Retransmit, "10.0.0.9", 80, &[0; 4]),
            ],
            ..TcpSnapshot::default()
        };
        let obs = tcp_peer_observations(&snap, Duration::from_secs(10));
        let get = |signal, peer: &str| {
            obs.iter()
                .find(|o| o.signal == signal && o.labels["peer"] == peer)
                .unwrap_or_else(|| panic!("{signal} {peer}: {obs:#?}"))
        };
        let p99 = get(Signal::TcpRttP99, "10.0.0.2");
        assert!(
            (0.000_128..=0.000_256).contains(&p99.value),
            "{}",
            p99.value
        );
        assert_eq!(p99.count, 110);
        let Evidence::Tcp(e) = &p99.evidence else {
            panic!()
        };
        assert_eq!(e.port.as_deref(), Some("5001"));
        assert_eq!(e.retransmits, 30);
        assert!((get(Signal::TcpRetransmitsPerSecond, "10.0.0.2").value - 3.0).abs() < 1e-9);
        // Retransmits without RTT samples: only the rate.
        assert_eq!(get(Signal::TcpRetransmitsPerSecond, "10.0.0.9").count, 4);
        assert!(
            !obs.iter()
                .any(|o| o.signal == Signal::TcpRttP99 && o.labels["peer"] == "10.0.0.9")
        );
    }

    fn frame(name: &str, module: &str) -> Arc<Frame> {
        Arc::new(Frame {
            function: Some(name.into()),
            module: module.into(),
            offset: 0,
            address: 0,
            function_start: None,
            file: None,
            line: None,
            kernel: false,
        })
    }

    #[test]
    fn cpu_observations_carry_the_hottest_stack() {
        let stack = |pid, frames: &[&str], count| StackSample {
            pid,
            tid: pid,
            process: "app".into(),
            thread: "app".into(),
            frames: frames.iter().map(|f| frame(f, "app")).collect(),
            count,
        };
        let profile = Profile {
            frequency_hz: 99,
            duration_secs: 10.0,
            start_unix_nanos: 0,
            cpus: 2,
            total_samples: 100,
            lost: LostCounts::default(),
            unwind: None,
            stacks: vec![
                stack(7, &["main", "a", "hot"], 50),
                stack(8, &["main", "b", "hot"], 20),
                stack(7, &["main", "cold"], 30),
            ],
        };
        let obs = cpu_observations(&profile, 10);
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].labels["function"], "hot");
        assert!((obs[0].value - 0.7).abs() < 1e-12);
        let Evidence::Cpu(e) = &obs[0].evidence else {
            panic!("{:?}", obs[0].evidence)
        };
        assert_eq!(e.stack, ["main", "a", "hot"]);
        assert_eq!(e.pids, [7, 8]);
        assert_eq!(cpu_observations(&profile, 1).len(), 1);
    }
}
