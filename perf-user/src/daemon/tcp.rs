//! TCP latency at scrape time: smoothed RTT, connect and accept latency,
//! failed connects and retransmits, per service port.
//!
//! Labels are bounded and stable: peers are unbounded, so the kernel keys
//! the daemon's series by (kind, port) alone (`fold_peers`; the `latency
//! --tcp` command shows peers). Ports get their own label in the order first
//! seen, up to `max_ports` (or exactly the configured ports); later ports
//! share `port="other"`. A port keeps its label for the daemon's life, so
//! every series only grows, as counters must.
//!
//! The kernel map stays bounded too: at each read, the series of ports that
//! can have no label of their own are moved out of the kernel into one sum
//! per (kind, side) kept here, which `port="other"` adds. The map then holds
//! the labelled ports' series (at most kinds x `max_ports`) and the ports
//! first seen since the last read, not every port the host ever used.

use std::{collections::BTreeMap, sync::Mutex};

use crate::{
    collectors::{
        Collector as _,
        tcp::{
            PortSide, TcpCollector, TcpCounters, TcpError, TcpKind, TcpOptions, TcpSeries,
            TcpSnapshot,
        },
        tracepoints::unexpected_fallback,
    },
    config::TcpSection,
    histogram::Log2Hist,
};

use super::{
    block::to_histogram,
    exposition::{Family, Kind, lost_events},
    scrape::{Source, SourceError},
};

/// Label of ports beyond the labelled ones.
pub const OTHER_PORT: &str = "other";

/// Which ports have a label of their own.
#[derive(Debug, Default)]
pub struct PortLabels {
    fixed: Vec<u16>,
    max: usize,
    seen: Vec<(PortSide, u16)>,
}

impl PortLabels {
    /// Exactly `fixed` when it is not empty; otherwise the first `max` seen.
    pub fn new(fixed: Vec<u16>, max: usize) -> Self {
        Self {
            fixed,
            max,
            seen: Vec::new(),
        }
    }

    /// The `port` label of a series; assigns a new label while there is room.
    pub fn label(&mut self, side: PortSide, port: u16) -> String {
        if !self.fixed.is_empty() {
            return if self.fixed.contains(&port) {
                port.to_string()
            } else {
                OTHER_PORT.to_string()
            };
        }
        if self.seen.contains(&(side, port)) {
            return port.to_string();
        }
        if self.seen.len() < self.max {
            self.seen.push((side, port));
            return port.to_string();
        }
        OTHER_PORT.to_string()
    }

    /// True when (side, port) is labelled `other` and always will be: not a
    /// configured port, or not labelled and no label left to hand out.
    pub fn always_other(&self, side: PortSide, port: u16) -> bool {
        if !self.fixed.is_empty() {
            return !self.fixed.contains(&port);
        }
        self.seen.len() >= self.max && !self.seen.contains(&(side, port))
    }
}

/// Series moved out of the kernel map (ports labelled `other`), summed per
/// (kind, side): at most kinds x sides entries.
pub type Drained = BTreeMap<(TcpKind, PortSide), Log2Hist>;

/// What the TCP source keeps between reads.
#[derive(Debug, Default)]
pub struct TcpLabels {
    /// The port labels handed out.
    pub ports: PortLabels,
    /// The `other` ports' sums moved out of the kernel.
    pub drained: Drained,
}

/// The attached TCP collector.
pub struct TcpSource {
    collector: Mutex<TcpCollector>,
    labels: Mutex<TcpLabels>,
}

impl TcpSource {
    /// Attaches the programs.
    pub fn start(cfg: &TcpSection) -> Result<Self, TcpError> {
        let collector = TcpCollector::attach(&TcpOptions {
            ports: cfg.ports.clone(),
            tracepoints: cfg.tracepoints,
            // Peers are summed away here: one kernel series per port.
            fold_peers: true,
        })?;
        if let Some(reason) = unexpected_fallback(collector.fallback_reason()) {
            tracing::warn!(
                collector = "tcp",
                reason,
                "classic tracepoints, as BTF tracepoints failed on a kernel with BTF"
            );
        }
        Ok(Self {
            collector: Mutex::new(collector),
            labels: Mutex::new(TcpLabels {
                ports: PortLabels::new(cfg.ports.clone(), cfg.max_ports as usize),
                drained: Drained::new(),
            }),
        })
    }
}

fn side_name(side: PortSide) -> &'static str {
    match side {
        PortSide::Local => "local",
        PortSide::Remote => "remote",
    }
}

/// Adds `series` (moved out of the kernel) to `drained`.
pub fn add_drained(drained: &mut Drained, series: &[TcpSeries]) {
    for s in series {
        drained
            .entry((s.kind, s.side))
            .and_modify(|h| h.merge(&s.hist))
            .or_insert_with(|| s.hist.clone());
    }
}

/// The families of one snapshot plus what was drained before; series are
/// summed per (kind, side, port label).
pub fn tcp_families(snap: &TcpSnapshot, labels: &mut TcpLabels) -> Vec<Family> {
    // Kernel series in a stable order, so labels are handed out the same
    // way whatever order the map returns.
    let mut series: Vec<_> = snap.series.iter().collect();
    series.sort_by_key(|s| (s.side, s.port, s.kind));
    let mut sums: BTreeMap<(TcpKind, PortSide, String), Log2Hist> = BTreeMap::new();
    let mut add = |key, h: &Log2Hist| {
        sums.entry(key)
            .and_modify(|sum: &mut Log2Hist| sum.merge(h))
            .or_insert_with(|| h.clone());
    };
    for s in series {
        let label = labels.ports.label(s.side, s.port);
        add((s.kind, s.side, label), &s.hist);
    }
    for (&(kind, side), h) in &labels.drained {
        add((kind, side, OTHER_PORT.to_string()), h);
    }
    let mut rtt = Family::new(
        "perf_user_tcp_rtt_seconds",
        Kind::Histogram,
        "TCP smoothed round-trip time, sampled at each received segment, per service port.",
    );
    let mut connect = Family::new(
        "perf_user_tcp_connect_latency_seconds",
        Kind::Histogram,
        "Time of successful active opens (SYN sent to established), per remote port.",
    );
    let mut failed = Family::new(
        "perf_user_tcp_connect_failed_seconds",
        Kind::Histogram,
        "Time until an active open failed (SYN sent to close), per remote port.",
    );
    let mut accept = Family::new(
        "perf_user_tcp_accept_latency_seconds",
        Kind::Histogram,
        "Time of passive opens (SYN received to established), per local port.",
    );
    let mut retrans = Family::new(
        "perf_user_tcp_retransmits_total",
        Kind::Counter,
        "Retransmitted TCP segments, per service port.",
    );
    for ((kind, side, port), h) in &sums {
        let labels = vec![
            ("side", side_name(*side).to_string()),
            ("port", port.clone()),
        ];
        match kind {
            TcpKind::Rtt => rtt.push_histogram(labels, to_histogram(h, 1e9)),
            TcpKind::Connect => connect.push_histogram(labels, to_histogram(h, 1e9)),
            TcpKind::ConnectFailed => failed.push_histogram(labels, to_histogram(h, 1e9)),
            TcpKind::Accept => accept.push_histogram(labels, to_histogram(h, 1e9)),
            TcpKind::Retransmit => retrans.push(labels, h.count as f64),
        };
    }
    vec![
        rtt,
        connect,
        failed,
        accept,
        retrans,
        lost_family(&snap.counters),
    ]
}

fn lost_family(c: &TcpCounters) -> Family {
    lost_events(
        "tcp",
        &[
            ("unmatched_handshake", c.unmatched_handshakes),
            ("start_map_full", c.start_map_full),
            ("histogram_map_full", c.histogram_map_full),
            ("read_error", c.read_errors),
            ("missed", c.missed),
        ],
    )
}

impl Source for TcpSource {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        let mut collector = self.collector.lock().unwrap_or_else(|e| e.into_inner());
        let mut labels = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        // First the series that can only ever be `other`, out of the kernel
        // and into the sums kept here; then the rest, as they are.
        let drained = collector.drain(|side, port| labels.ports.always_other(side, port))?;
        add_drained(&mut labels.drained, &drained);
        let snap = collector.read()?;
        drop(collector);
        Ok(tcp_families(&snap, &mut labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_labelled_first_come_and_keep_their_label() {
        let mut p = PortLabels::new(Vec::new(), 2);
        assert_eq!(p.label(PortSide::Local, 22), "22");
        assert_eq!(p.label(PortSide::Remote, 443), "443");
        assert_eq!(p.label(PortSide::Remote, 5432), OTHER_PORT);
        assert_eq!(p.label(PortSide::Local, 22), "22");
        let mut fixed = PortLabels::new(vec![5432], 2);
        assert_eq!(fixed.label(PortSide::Remote, 5432), "5432");
        assert_eq!(fixed.label(PortSide::Local, 22), OTHER_PORT);
    }

    #[test]
    fn only_ports_that_can_never_have_a_label_are_always_other() {
        let mut p = PortLabels::new(Vec::new(), 1);
        // Room left: a new port may still get a label.
        assert!(!p.always_other(PortSide::Local, 22));
        p.label(PortSide::Local, 22);
        assert!(!p.always_other(PortSide::Local, 22));
        assert!(p.always_other(PortSide::Remote, 22));
        assert!(p.always_other(PortSide::Local, 8080));
        let fixed = PortLabels::new(vec![5432], 1);
        assert!(!fixed.always_other(PortSide::Remote, 5432));
        assert!(fixed.always_other(PortSide::Remote, 5433));
    }

    fn series(kind: TcpKind, side: PortSide, port: u16, values: &[u64]) -> TcpSeries {
        let mut hist = Log2Hist::new(1);
        for &v in values {
            hist.record(v);
        }
        TcpSeries {
            kind,
            side,
            port,
            peer: None,
            hist,
        }
    }

    fn count(fams: &[Family], name: &str, port: &str) -> u64 {
        let fam = fams.iter().find(|f| f.name == name).unwrap();
        fam.samples
            .iter()
            .filter(|s| s.labels.iter().any(|(k, v)| *k == "port" && v == port))
            .map(|s| match &s.value {
                super::super::exposition::Value::Histogram(h) => h.count(),
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn drained_series_keep_counting_in_other() {
        let mut labels = TcpLabels {
            ports: PortLabels::new(Vec::new(), 1),
            drained: Drained::new(),
        };
        let connect = "perf_user_tcp_connect_latency_seconds";
        let snap = |series| TcpSnapshot {
            series,
            ..TcpSnapshot::default()
        };
        let first = snap(vec![
            series(TcpKind::Connect, PortSide::Remote, 443, &[1000]),
            series(TcpKind::Connect, PortSide::Remote, 8443, &[1000, 2000]),
        ]);
        let fams = tcp_families(&first, &mut labels);
        assert_eq!(count(&fams, connect, "443"), 1);
        assert_eq!(count(&fams, connect, OTHER_PORT), 2);
        // 8443 can never have a label: it leaves the kernel map, and its
        // two values go on counting under "other", with a new port's one.
        assert!(labels.ports.always_other(PortSide::Remote, 8443));
        add_drained(
            &mut labels.drained,
            &[series(
                TcpKind::Connect,
                PortSide::Remote,
                8443,
                &[1000, 2000],
            )],
        );
        let second = snap(vec![
            series(TcpKind::Connect, PortSide::Remote, 443, &[1000]),
            series(TcpKind::Connect, PortSide::Remote, 9000, &[5000]),
        ]);
        let fams = tcp_families(&second, &mut labels);
        assert_eq!(count(&fams, connect, "443"), 1);
        assert_eq!(count(&fams, connect, OTHER_PORT), 3);
    }
}
