//! TCP latency at scrape time: smoothed RTT, connect and accept latency,
//! failed connects and retransmits, per service port.
//!
//! Labels are bounded and stable: the kernel keys series by (kind, port,
//! peer), but peers are unbounded, so they are summed away here (the
//! `latency --tcp` command shows them). Ports get their own label in the
//! order first seen, up to `max_ports` (or exactly the configured ports);
//! later ports share `port="other"`. A port keeps its label for the
//! daemon's life, so every series only grows, as counters must.

use std::{collections::BTreeMap, sync::Mutex};

use crate::{
    collectors::{
        Collector as _,
        tcp::{PortSide, TcpCollector, TcpCounters, TcpError, TcpKind, TcpOptions, TcpSnapshot},
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
}

/// The attached TCP collector.
pub struct TcpSource {
    collector: Mutex<TcpCollector>,
    ports: Mutex<PortLabels>,
}

impl TcpSource {
    /// Attaches the programs.
    pub fn start(cfg: &TcpSection) -> Result<Self, TcpError> {
        let collector = TcpCollector::attach(&TcpOptions {
            ports: cfg.ports.clone(),
            tracepoints: cfg.tracepoints,
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
            ports: Mutex::new(PortLabels::new(cfg.ports.clone(), cfg.max_ports as usize)),
        })
    }
}

fn side_name(side: PortSide) -> &'static str {
    match side {
        PortSide::Local => "local",
        PortSide::Remote => "remote",
    }
}

/// The families of one snapshot; series are summed per (kind, side, port label).
pub fn tcp_families(snap: &TcpSnapshot, ports: &mut PortLabels) -> Vec<Family> {
    // Kernel series in a stable order, so labels are handed out the same
    // way whatever order the map returns.
    let mut series: Vec<_> = snap.series.iter().collect();
    series.sort_by_key(|s| (s.side, s.port, s.kind));
    let mut sums: BTreeMap<(TcpKind, PortSide, String), Log2Hist> = BTreeMap::new();
    for s in series {
        let label = ports.label(s.side, s.port);
        sums.entry((s.kind, s.side, label))
            .and_modify(|h| h.merge(&s.hist))
            .or_insert_with(|| s.hist.clone());
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
        let snap = self
            .collector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read()?;
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        Ok(tcp_families(&snap, &mut ports))
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
}
