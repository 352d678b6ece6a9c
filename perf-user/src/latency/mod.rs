//! The `latency` report: collector snapshots turned into labelled series with
//! percentiles, written as biolatency-style text (`table`) or JSON (`json`).

pub mod json;
pub mod table;

use std::collections::HashMap;

use serde::Serialize;

use crate::{
    blockdev,
    collectors::{
        block::{BlockCounters, BlockSnapshot},
        tcp::{PortSide, TcpCounters, TcpKind, TcpSnapshot},
    },
    histogram::{Log2Hist, display_range},
};

/// Version of the JSON document; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything `latency` reports.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyReport {
    /// `SCHEMA_VERSION`.
    pub schema_version: u32,
    /// Seconds traced.
    pub duration_secs: f64,
    /// Block I/O, when traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockReport>,
    /// TCP, when traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpReport>,
}

/// Block I/O series and counters.
#[derive(Clone, Debug, Serialize)]
pub struct BlockReport {
    /// One per (device, operation) with completed I/O, by device then operation.
    pub series: Vec<BlockSeriesReport>,
    /// What the kernel side counted, including what it could not time.
    pub counters: BlockCounters,
    /// `btf` (BTF tracepoints) or `classic` (tracepoint records).
    pub tracepoints: &'static str,
}

/// Latency and size of one (device, operation).
#[derive(Clone, Debug, Serialize)]
pub struct BlockSeriesReport {
    /// Device name, or `major:minor` when it has none.
    pub device: String,
    /// `major:minor`.
    pub dev: String,
    /// read, write, flush, discard or other.
    pub op: &'static str,
    /// Issue to completion, microseconds.
    pub latency: HistReport,
    /// Request size, KiB.
    pub size: HistReport,
    /// Time queued before issue (from when the kernel starts accounting the
    /// request), microseconds; absent before Linux 6.5. Its sum plus the
    /// latency's is what /proc/diskstats counts as time spent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<HistReport>,
}

/// A histogram with its summary, in one unit.
#[derive(Clone, Debug, Serialize)]
pub struct HistReport {
    /// Unit of every value below and of the bucket bounds: `us` or `KiB`.
    pub unit: &'static str,
    /// Values recorded.
    pub count: u64,
    /// Exact sum.
    pub sum: f64,
    /// Exact mean (absent when empty).
    pub mean: Option<f64>,
    /// Median, estimated within its power-of-two bucket.
    pub p50: Option<f64>,
    /// 90th percentile, estimated.
    pub p90: Option<f64>,
    /// 99th percentile, estimated.
    pub p99: Option<f64>,
    /// Exact maximum.
    pub max: f64,
    /// Buckets up to the last non-empty one; bounds inclusive, in `unit`.
    pub buckets: Vec<Bucket>,
    /// The histogram itself, for the text rendering.
    #[serde(skip)]
    pub hist: Log2Hist,
}

/// One log2 bucket.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Bucket {
    /// Lowest value, inclusive.
    pub low: u64,
    /// Highest value, inclusive.
    pub high: u64,
    /// Values in it.
    pub count: u64,
}

/// Unit names, and how many base units (ns, bytes) make one.
pub const MICROS: (&str, f64) = ("us", 1_000.0);
/// KiB from bytes.
pub const KIB: (&str, f64) = ("KiB", 1_024.0);

impl HistReport {
    /// Summarizes `hist` in `unit` (name and base units per unit).
    pub fn new(hist: &Log2Hist, (unit, per): (&'static str, f64)) -> Self {
        let last = hist.slots.iter().rposition(|&n| n > 0);
        let buckets = match last {
            Some(last) => hist.slots[..=last]
                .iter()
                .enumerate()
                .map(|(k, &count)| {
                    let (low, high) = display_range(k);
                    Bucket { low, high, count }
                })
                .collect(),
            None => Vec::new(),
        };
        Self {
            unit,
            count: hist.count,
            sum: hist.sum as f64 / per,
            mean: hist.mean().map(|v| v / per),
            p50: hist.percentile(0.50).map(|v| v / per),
            p90: hist.percentile(0.90).map(|v| v / per),
            p99: hist.percentile(0.99).map(|v| v / per),
            max: hist.max as f64 / per,
            buckets,
            hist: hist.clone(),
        }
    }
}

impl BlockReport {
    /// Names the devices of `snapshot` with `names` (dev_t → name).
    pub fn new(snapshot: &BlockSnapshot, names: &HashMap<u32, String>) -> Self {
        let mut ordered: Vec<_> = snapshot
            .series
            .iter()
            .map(|s| (blockdev::display_name(names, s.dev), s))
            .collect();
        ordered.sort_by(|(a, x), (b, y)| a.cmp(b).then(x.op.cmp(&y.op)));
        let series = ordered
            .into_iter()
            .map(|(device, s)| {
                let (major, minor) = blockdev::major_minor(s.dev);
                BlockSeriesReport {
                    device,
                    dev: format!("{major}:{minor}"),
                    op: s.op_name(),
                    latency: HistReport::new(&s.latency, MICROS),
                    size: HistReport::new(&s.size, KIB),
                    queued: snapshot
                        .queue_time
                        .then(|| HistReport::new(&s.queue, MICROS)),
                }
            })
            .collect();
        Self {
            series,
            counters: snapshot.counters,
            tracepoints: snapshot.tracepoints.name(),
        }
    }
}

/// TCP series, each kind by port and by peer, with bounded labels: the `top`
/// busiest ports and peers, the rest summed in one "other" entry.
#[derive(Clone, Debug, Serialize)]
pub struct TcpReport {
    /// How many ports and peers are named per kind before "other".
    pub top: usize,
    /// Smoothed RTT at each segment received (tcp:tcp_probe), microseconds.
    pub rtt: TcpSeriesSet,
    /// Active opens, SYN sent to established, microseconds.
    pub connect: TcpSeriesSet,
    /// Active opens that failed (SYN sent to closed): time to failure.
    pub connect_failed: TcpSeriesSet,
    /// Passive opens: from the first state of the accepted socket that is
    /// visible (SYN_RECV, when the handshake's last ACK arrives) to established.
    pub accept: TcpSeriesSet,
    /// Retransmitted segments (tcp:tcp_retransmit_skb).
    pub retransmits: TcpCountSet,
    /// What the kernel side counted, including what it could not record.
    pub counters: TcpCounters,
    /// `btf` (BTF tracepoints reading the sockets) or `classic` (tracepoint records).
    pub tracepoints: &'static str,
}

/// One kind of TCP measurement, by port and by peer.
#[derive(Clone, Debug, Serialize)]
pub struct TcpSeriesSet {
    /// Values recorded, all series together.
    pub count: u64,
    /// Busiest ports first; `port: null` is everything else.
    pub by_port: Vec<TcpPortSeries>,
    /// Busiest peers first; `peer: null` is everything else.
    pub by_peer: Vec<TcpPeerSeries>,
}

/// A port's series.
#[derive(Clone, Debug, Serialize)]
pub struct TcpPortSeries {
    /// The port; `null` for "other ports".
    pub port: Option<u16>,
    /// Whether `port` is the local or the remote end; `null` for "other".
    pub side: Option<PortSide>,
    /// Microseconds.
    pub latency: HistReport,
}

/// A peer's series.
#[derive(Clone, Debug, Serialize)]
pub struct TcpPeerSeries {
    /// The remote address; `null` for "other peers".
    pub peer: Option<String>,
    /// Microseconds.
    pub latency: HistReport,
}

/// Counts by port and by peer (retransmits).
#[derive(Clone, Debug, Serialize)]
pub struct TcpCountSet {
    /// Total.
    pub count: u64,
    /// Busiest ports first; `port: null` is everything else.
    pub by_port: Vec<TcpPortCount>,
    /// Busiest peers first; `peer: null` is everything else.
    pub by_peer: Vec<TcpPeerCount>,
}

/// A port's count.
#[derive(Clone, Debug, Serialize)]
pub struct TcpPortCount {
    /// The port; `null` for "other ports".
    pub port: Option<u16>,
    /// Which end; `null` for "other".
    pub side: Option<PortSide>,
    /// Count.
    pub count: u64,
}

/// A peer's count.
#[derive(Clone, Debug, Serialize)]
pub struct TcpPeerCount {
    /// The remote address; `null` for "other peers".
    pub peer: Option<String>,
    /// Count.
    pub count: u64,
}

/// Groups `items` by key, keeps the `n` with the most values (ties by key)
/// and sums the rest, together with the items whose key is `None`, into one
/// trailing `None` entry (absent when empty).
pub fn top_n<K: Ord + Clone>(
    items: impl IntoIterator<Item = (Option<K>, Log2Hist)>,
    n: usize,
    unit: u64,
) -> Vec<(Option<K>, Log2Hist)> {
    let mut grouped: std::collections::BTreeMap<K, Log2Hist> = Default::default();
    let mut other = Log2Hist::new(unit);
    for (key, hist) in items {
        match key {
            Some(k) => grouped
                .entry(k)
                .or_insert_with(|| Log2Hist::new(unit))
                .merge(&hist),
            None => other.merge(&hist),
        }
    }
    let mut ranked: Vec<(K, Log2Hist)> = grouped.into_iter().collect();
    // Stable sort of key-ordered entries: ties stay in key order.
    ranked.sort_by_key(|(_, h)| std::cmp::Reverse(h.count));
    let mut out: Vec<(Option<K>, Log2Hist)> = Vec::new();
    for (i, (k, h)) in ranked.into_iter().enumerate() {
        if i < n {
            out.push((Some(k), h));
        } else {
            other.merge(&h);
        }
    }
    if !other.is_empty() {
        out.push((None, other));
    }
    out
}

impl TcpReport {
    /// Builds the report from a snapshot, naming at most `top` ports and
    /// peers per kind.
    pub fn new(snapshot: &TcpSnapshot, top: usize) -> Self {
        let set = |kind: TcpKind| -> TcpSeriesSet {
            let of_kind: Vec<_> = snapshot.series.iter().filter(|s| s.kind == kind).collect();
            let unit = perf_ebpf_common::hist::LATENCY_UNIT_NS;
            let by_port = top_n(
                of_kind
                    .iter()
                    .map(|s| (Some((s.side, s.port)), s.hist.clone())),
                top,
                unit,
            )
            .into_iter()
            .map(|(k, h)| TcpPortSeries {
                port: k.map(|(_, p)| p),
                side: k.map(|(s, _)| s),
                latency: HistReport::new(&h, MICROS),
            })
            .collect();
            let by_peer = top_n(of_kind.iter().map(|s| (s.peer, s.hist.clone())), top, unit)
                .into_iter()
                .map(|(k, h)| TcpPeerSeries {
                    peer: k.map(|a| a.to_string()),
                    latency: HistReport::new(&h, MICROS),
                })
                .collect();
            TcpSeriesSet {
                count: of_kind.iter().map(|s| s.hist.count).sum(),
                by_port,
                by_peer,
            }
        };
        let retrans = set(TcpKind::Retransmit);
        Self {
            top,
            rtt: set(TcpKind::Rtt),
            connect: set(TcpKind::Connect),
            connect_failed: set(TcpKind::ConnectFailed),
            accept: set(TcpKind::Accept),
            retransmits: TcpCountSet {
                count: retrans.count,
                by_port: retrans
                    .by_port
                    .iter()
                    .map(|s| TcpPortCount {
                        port: s.port,
                        side: s.side,
                        count: s.latency.count,
                    })
                    .collect(),
                by_peer: retrans
                    .by_peer
                    .iter()
                    .map(|s| TcpPeerCount {
                        peer: s.peer.clone(),
                        count: s.latency.count,
                    })
                    .collect(),
            },
            counters: snapshot.counters,
            tracepoints: snapshot.tracepoints.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hist_of(count: u64) -> Log2Hist {
        let mut h = Log2Hist::new(1000);
        for _ in 0..count {
            h.record(5_000);
        }
        h
    }

    #[test]
    fn keeps_the_busiest_and_sums_the_rest() {
        let items = vec![
            (Some(80u16), hist_of(5)),
            (Some(443), hist_of(9)),
            (Some(22), hist_of(1)),
            (Some(80), hist_of(5)),
            (None, hist_of(2)),
        ];
        let out = top_n(items, 1, 1000);
        let counts: Vec<(Option<u16>, u64)> = out.iter().map(|(k, h)| (*k, h.count)).collect();
        assert_eq!(counts, vec![(Some(80), 10), (None, 12)]);
    }

    #[test]
    fn no_other_entry_when_everything_fits() {
        let out = top_n(
            vec![(Some(1u8), hist_of(1)), (Some(2), hist_of(3))],
            5,
            1000,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, Some(2));
    }

    proptest! {
        #[test]
        fn top_n_conserves_counts_and_bounds_labels(
            items in prop::collection::vec((prop::option::of(0u8..20), 0u64..50), 0..60),
            n in 0usize..8,
        ) {
            let total: u64 = items.iter().map(|(_, c)| c).sum();
            let out = top_n(items.iter().map(|&(k, c)| (k, hist_of(c))), n, 1000);
            prop_assert!(out.len() <= n + 1);
            prop_assert_eq!(out.iter().map(|(_, h)| h.count).sum::<u64>(), total);
            // Named entries come first, busiest first, and "other" (if any) last.
            let named: Vec<u64> = out.iter().filter(|(k, _)| k.is_some()).map(|(_, h)| h.count).collect();
            prop_assert!(named.windows(2).all(|w| w[0] >= w[1]));
            prop_assert!(out.iter().rev().skip(1).all(|(k, _)| k.is_some()));
        }
    }
}
