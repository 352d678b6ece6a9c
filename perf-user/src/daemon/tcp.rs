//! TCP latency at scrape time: smoothed RTT, connect and accept latency,
//! failed connects and retransmits, per service port.
//!
//! Peers are unbounded, so the kernel keys the daemon's series by (kind,
//! port) alone (`fold_peers`; the `latency --tcp` command shows peers);
//! ports are labelled, and the kernel map kept bounded, as
//! [`crate::observe::tcp`] describes.

use std::sync::Mutex;

use crate::{
    collectors::{
        Collector as _,
        tcp::{TcpCollector, TcpCounters, TcpError, TcpKind, TcpOptions},
        tracepoints::unexpected_fallback,
    },
    config::TcpSection,
    observe::{
        Reading,
        tcp::{Drained, PortLabels, TcpLabels, TcpPorts, add_drained, port_sums, side_name},
    },
};

use super::{
    block::to_histogram,
    exposition::{Family, Kind, lost_events},
    scrape::{Source, SourceError},
};

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

/// The families of the port sums.
pub fn tcp_families(ports: &TcpPorts) -> Vec<Family> {
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
    for ((kind, side, port), h) in &ports.sums {
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
        lost_family(&ports.counters),
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

impl TcpSource {
    /// The kernel's series summed per port label, now.
    pub fn ports(&self) -> Result<TcpPorts, TcpError> {
        let mut collector = self.collector.lock().unwrap_or_else(|e| e.into_inner());
        let mut labels = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        // First the series that can only ever be `other`, out of the kernel
        // and into the sums kept here; then the rest, as they are.
        let drained = collector.drain(|side, port| labels.ports.always_other(side, port))?;
        add_drained(&mut labels.drained, &drained);
        let snap = collector.read()?;
        drop(collector);
        Ok(port_sums(&snap, &mut labels))
    }
}

impl Source for TcpSource {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        Ok(tcp_families(&self.ports()?))
    }

    fn read(&self) -> Result<Option<Reading>, SourceError> {
        Ok(Some(Reading::Tcp(self.ports()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        collectors::tcp::{PortSide, TcpSeries, TcpSnapshot},
        histogram::Log2Hist,
        observe::tcp::OTHER_PORT,
    };

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
        let fams = tcp_families(&port_sums(&first, &mut labels));
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
        let fams = tcp_families(&port_sums(&second, &mut labels));
        assert_eq!(count(&fams, connect, "443"), 1);
        assert_eq!(count(&fams, connect, OTHER_PORT), 3);
    }
}
