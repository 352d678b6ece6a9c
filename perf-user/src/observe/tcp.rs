//! TCP: series summed per service port, labelled the same way for the
//! daemon and `advise` (`side`, `port`), and their observations.
//!
//! Labels are bounded and stable: peers are unbounded, so series are keyed
//! by (kind, side, port). Ports get their own label in the order first
//! seen, up to `max_ports` (or exactly the configured ports); later ports
//! share `port="other"`. A port keeps its label for the reader's life, so
//! every series only grows, as counters must.
//!
//! The daemon keeps the kernel map bounded too: at each read, the series
//! of ports that can have no label of their own are moved out of the kernel
//! into one sum per (kind, side) kept here ([`Drained`]), which
//! `port="other"` adds.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    alerts::signals::{Evidence, Labels, Observation, Signal, TcpEvidence, labels},
    collectors::tcp::{PortSide, TcpCounters, TcpKind, TcpSeries, TcpSnapshot},
    histogram::Log2Hist,
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

/// What a TCP reader keeps between reads.
#[derive(Debug, Default)]
pub struct TcpLabels {
    /// The port labels handed out.
    pub ports: PortLabels,
    /// The `other` ports' sums moved out of the kernel.
    pub drained: Drained,
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

/// The `side` label's value.
pub fn side_name(side: PortSide) -> &'static str {
    match side {
        PortSide::Local => "local",
        PortSide::Remote => "remote",
    }
}

/// A TCP snapshot summed per (kind, side, port label).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TcpPorts {
    /// The sums (cumulative since attach).
    pub sums: BTreeMap<(TcpKind, PortSide, String), Log2Hist>,
    /// Per (side, port label), the peer with the most RTT samples, when the
    /// snapshot kept peers (`advise`; the daemon folds them in the kernel).
    pub busiest_peer: BTreeMap<(PortSide, String), String>,
    /// What the kernel side counted.
    pub counters: TcpCounters,
}

/// `snap` plus what was drained before, summed per port label.
pub fn port_sums(snap: &TcpSnapshot, labels: &mut TcpLabels) -> TcpPorts {
    // Kernel series in a stable order, so labels are handed out the same
    // way whatever order the map returns.
    let mut series: Vec<_> = snap.series.iter().collect();
    series.sort_by_key(|s| (s.side, s.port, s.kind, s.peer));
    let mut out = TcpPorts {
        counters: snap.counters,
        ..TcpPorts::default()
    };
    let mut add = |key, h: &Log2Hist| {
        out.sums
            .entry(key)
            .and_modify(|sum: &mut Log2Hist| sum.merge(h))
            .or_insert_with(|| h.clone());
    };
    let mut busiest: BTreeMap<(PortSide, String), (u64, String)> = BTreeMap::new();
    for s in series {
        let label = labels.ports.label(s.side, s.port);
        if let (TcpKind::Rtt, Some(peer)) = (s.kind, s.peer) {
            let b = busiest.entry((s.side, label.clone())).or_default();
            if s.hist.count > b.0 {
                *b = (s.hist.count, peer.to_string());
            }
        }
        add((s.kind, s.side, label), &s.hist);
    }
    for (&(kind, side), h) in &labels.drained {
        add((kind, side, OTHER_PORT.to_string()), h);
    }
    out.busiest_peer = busiest.into_iter().map(|(k, (_, p))| (k, p)).collect();
    out
}

/// Observations of `now` over `window`, per `side` and `port`: with
/// `before` (the previous reading), of the difference, and only for series
/// `before` has; without it, of everything since attach.
pub fn observations(
    now: &TcpPorts,
    before: Option<&TcpPorts>,
    window: Duration,
) -> Vec<Observation> {
    let unit = perf_ebpf_common::hist::LATENCY_UNIT_NS;
    let get =
        |p: &TcpPorts, kind, side, port: &str| p.sums.get(&(kind, side, port.to_string())).cloned();
    // Every (side, port) with RTT samples or retransmits.
    let mut keys: Vec<(PortSide, &str)> = Vec::new();
    for (kind, side, port) in now.sums.keys() {
        if matches!(kind, TcpKind::Rtt | TcpKind::Retransmit) && !keys.contains(&(*side, port)) {
            keys.push((*side, port));
        }
    }
    let mut out = Vec::new();
    for (side, port) in keys {
        let rtt = get(now, TcpKind::Rtt, side, port).unwrap_or_else(|| Log2Hist::new(unit));
        let retrans = get(now, TcpKind::Retransmit, side, port).map_or(0, |h| h.count);
        let (rtt, retrans) = match before {
            None => (rtt, retrans),
            Some(b) => {
                let prev_rtt = get(b, TcpKind::Rtt, side, port);
                let prev_retrans = get(b, TcpKind::Retransmit, side, port);
                if prev_rtt.is_none() && prev_retrans.is_none() {
                    continue;
                }
                let prev_rtt = prev_rtt.unwrap_or_else(|| Log2Hist::new(unit));
                let prev_retrans = prev_retrans.map_or(0, |h| h.count);
                let delta = if retrans >= prev_retrans {
                    retrans - prev_retrans
                } else {
                    retrans
                };
                (super::hist_delta(&rtt, &prev_rtt), delta)
            }
        };
        let side_name = side_name(side);
        out.extend(tcp_observations(
            &labels([("side", side_name), ("port", port)]),
            &rtt,
            retrans,
            TcpEvidence {
                peer: now.busiest_peer.get(&(side, port.to_string())).cloned(),
                port: Some(port.to_string()),
                side: Some(side_name.to_string()),
                ..TcpEvidence::default()
            },
            window,
        ));
    }
    out
}

/// Observations of one TCP series over `window`: RTT percentiles from
/// `rtt` (ns) and the retransmit rate.
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

    #[test]
    fn ports_get_rtt_percentiles_and_retransmit_rates() {
        let series = |kind, peer: &str, port, values_us: &[u64]| TcpSeries {
            kind,
            side: PortSide::Local,
            port,
            peer: Some(peer.parse().unwrap()),
            hist: super::super::test_hist(values_us),
        };
        let snap = TcpSnapshot {
            series: vec![
                series(TcpKind::Rtt, "10.0.0.2", 5001, &[200; 100]),
                series(TcpKind::Rtt, "10.0.0.3", 5001, &[200; 10]),
                series(TcpKind::Rtt, "10.0.0.2", 22, &[100; 10]),
                series(TcpKind::Retransmit, "10.0.0.2", 5001, &[0; 30]),
                series(TcpKind::Retransmit, "10.0.0.9", 80, &[0; 4]),
            ],
            ..TcpSnapshot::default()
        };
        let mut labels = TcpLabels {
            ports: PortLabels::new(Vec::new(), 20),
            drained: Drained::new(),
        };
        let obs = observations(
            &port_sums(&snap, &mut labels),
            None,
            Duration::from_secs(10),
        );
        let get = |signal, port: &str| {
            obs.iter()
                .find(|o| o.signal == signal && o.labels["port"] == port)
                .unwrap_or_else(|| panic!("{signal} {port}: {obs:#?}"))
        };
        let p99 = get(Signal::TcpRttP99, "5001");
        assert!(
            (0.000_128..=0.000_256).contains(&p99.value),
            "{}",
            p99.value
        );
        assert_eq!(p99.count, 110, "both peers of the port");
        assert_eq!(p99.labels["side"], "local");
        let Evidence::Tcp(e) = &p99.evidence else {
            panic!()
        };
        assert_eq!(e.port.as_deref(), Some("5001"));
        assert_eq!(e.peer.as_deref(), Some("10.0.0.2"), "the busiest peer");
        assert_eq!(e.retransmits, 30);
        assert_eq!(e.what(), "local port 5001");
        assert!((get(Signal::TcpRetransmitsPerSecond, "5001").value - 3.0).abs() < 1e-9);
        // Retransmits without RTT samples: only the rate.
        assert_eq!(get(Signal::TcpRetransmitsPerSecond, "80").count, 4);
        assert!(
            !obs.iter()
                .any(|o| o.signal == Signal::TcpRttP99 && o.labels["port"] == "80")
        );
    }

    #[test]
    fn windows_are_differences_and_new_ports_wait_a_reading() {
        let at = |rtt_us: &[u64], retrans: u64| {
            let mut p = TcpPorts::default();
            p.sums.insert(
                (TcpKind::Rtt, PortSide::Local, "5001".into()),
                super::super::test_hist(rtt_us),
            );
            let mut r = Log2Hist::new(1);
            for _ in 0..retrans {
                r.record(0);
            }
            p.sums
                .insert((TcpKind::Retransmit, PortSide::Local, "5001".into()), r);
            p
        };
        let before = at(&[100; 10], 5);
        let mut more = vec![100; 10];
        more.extend([50_000; 100]);
        let now = at(&more, 25);
        let obs = observations(&now, Some(&before), Duration::from_secs(10));
        let get = |s| obs.iter().find(|o| o.signal == s).unwrap();
        assert!((get(Signal::TcpRetransmitsPerSecond).value - 2.0).abs() < 1e-9);
        let p50 = get(Signal::TcpRttP50);
        assert!(p50.value > 0.032 && p50.value <= 0.065, "{}", p50.value);
        assert_eq!(p50.labels["port"], "5001");
        // A port the previous reading did not have: nothing to compare with.
        assert!(observations(&now, Some(&TcpPorts::default()), Duration::from_secs(10)).is_empty());
    }
}
