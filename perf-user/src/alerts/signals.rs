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
    /// p99 of TCP smoothed RTT samples per `side` and `port`, seconds.
    #[serde(rename = "tcp_rtt_p99_seconds")]
    #[value(name = "tcp_rtt_p99_seconds")]
    TcpRttP99,
    /// Median of TCP smoothed RTT samples per `side` and `port`, seconds.
    #[serde(rename = "tcp_rtt_p50_seconds")]
    #[value(name = "tcp_rtt_p50_seconds")]
    TcpRttP50,
    /// TCP retransmitted segments per second per `side` and `port`.
    #[serde(rename = "tcp_retransmits_per_second")]
    #[value(name = "tcp_retransmits_per_second")]
    TcpRetransmitsPerSecond,
    /// Bytes outstanding (allocated, not freed) per call `stack` of a
    /// traced process (`pid`, `process`).
    #[serde(rename = "leak_outstanding_bytes")]
    #[value(name = "leak_outstanding_bytes")]
    LeakOutstandingBytes,
    /// Allocations outstanding (made since tracing began, not freed) per
    /// traced `process` name.
    #[serde(rename = "leak_outstanding_allocations")]
    #[value(name = "leak_outstanding_allocations")]
    LeakOutstandingAllocations,
    /// Share of CPU samples (self time) per `process`, `function`, `module`,
    /// from 0 to 1.
    #[serde(rename = "cpu_self_ratio")]
    #[value(name = "cpu_self_ratio")]
    CpuSelfRatio,
    /// Seconds off the CPU in the last off-CPU window per `process`,
    /// `function` (where the wait came from), `module` and `state`, summed
    /// over the process's threads.
    #[serde(rename = "offcpu_seconds")]
    #[value(name = "offcpu_seconds")]
    OffCpuSeconds,
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
    pub const ALL: [Signal; 10] = [
        Signal::BlockLatencyP99,
        Signal::BlockLatencyP50,
        Signal::BlockLatencyMean,
        Signal::TcpRttP99,
        Signal::TcpRttP50,
        Signal::TcpRetransmitsPerSecond,
        Signal::LeakOutstandingBytes,
        Signal::LeakOutstandingAllocations,
        Signal::CpuSelfRatio,
        Signal::OffCpuSeconds,
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

    /// Allocation signals.
    pub const LEAKS: [Signal; 2] = [
        Signal::LeakOutstandingBytes,
        Signal::LeakOutstandingAllocations,
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
            Signal::OffCpuSeconds => "offcpu_seconds",
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
            Signal::OffCpuSeconds => "time off the CPU",
        }
    }

    /// Its unit.
    pub fn unit(self) -> Unit {
        match self {
            Signal::BlockLatencyP99
            | Signal::BlockLatencyP50
            | Signal::BlockLatencyMean
            | Signal::TcpRttP99
            | Signal::TcpRttP50
            | Signal::OffCpuSeconds => Unit::Seconds,
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
                &["port", "side"]
            }
            Signal::LeakOutstandingBytes => &["pid", "process", "stack", "function"],
            Signal::LeakOutstandingAllocations => &["process"],
            Signal::CpuSelfRatio => &["process", "function", "module"],
            Signal::OffCpuSeconds => &["process", "function", "module", "state"],
        }
    }

    /// Which collector provides it.
    pub fn collector(self) -> &'static str {
        match self {
            Signal::BlockLatencyP99 | Signal::BlockLatencyP50 | Signal::BlockLatencyMean => "block",
            Signal::TcpRttP99 | Signal::TcpRttP50 | Signal::TcpRetransmitsPerSecond => "tcp",
            Signal::LeakOutstandingBytes | Signal::LeakOutstandingAllocations => "leaks",
            Signal::CpuSelfRatio => "cpu",
            Signal::OffCpuSeconds => "offcpu",
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

/// One TCP port (its `side` and `port` labels) over one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TcpEvidence {
    /// The remote address with the most RTT samples, when peers were kept
    /// (`advise`; the daemon sums them away in the kernel).
    pub peer: Option<String>,
    /// The series' port label.
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
    /// `local port 5001`, or `peer 10.0.0.2` without a port.
    pub fn what(&self) -> String {
        match (&self.port, &self.peer) {
            (Some(port), _) => match &self.side {
                Some(side) => format!("{side} port {port}"),
                None => format!("port {port}"),
            },
            (None, Some(p)) => format!("peer {p}"),
            (None, None) => "TCP".into(),
        }
    }
}

/// One call stack of a traced process (outstanding bytes), or every traced
/// process of one name (outstanding allocations).
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
