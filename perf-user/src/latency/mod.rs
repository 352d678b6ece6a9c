//! The `latency` report: collector snapshots turned into labelled series with
//! percentiles, written as biolatency-style text (`table`) or JSON (`json`).

pub mod json;
pub mod table;

use std::collections::HashMap;

use serde::Serialize;

use crate::{
    blockdev,
    collectors::block::{BlockCounters, BlockSnapshot},
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
}

/// Block I/O series and counters.
#[derive(Clone, Debug, Serialize)]
pub struct BlockReport {
    /// One per (device, operation) with completed I/O, by device then operation.
    pub series: Vec<BlockSeriesReport>,
    /// What the kernel side counted, including what it could not time.
    pub counters: BlockCounters,
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
        }
    }
}
