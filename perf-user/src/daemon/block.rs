//! Block I/O latency at scrape time: the kernel's log2 histograms per disk
//! and operation, exported as Prometheus histograms.
//!
//! The kernel maps are never cleared here: Prometheus histograms are
//! cumulative counters, and `rate()` does the windowing.

use std::sync::Mutex;

use perf_ebpf_common::hist::HIST_SLOTS;

use crate::{
    blockdev,
    collectors::{
        Collector as _,
        block::{BlockCollector, BlockCounters, BlockError, BlockOptions},
        tracepoints::unexpected_fallback,
    },
    config::BlockSection,
    histogram::Log2Hist,
    observe::{Reading, block::BlockReading},
};

use super::{
    exposition::{Family, HistogramValue, Kind, log2_upper_bounds, lost_events},
    scrape::{Source, SourceError},
};

/// Nanoseconds per second, the latency histograms' base unit over the
/// exported one.
const NS_PER_S: f64 = 1e9;

/// The attached block collector.
pub struct BlockSource {
    collector: Mutex<BlockCollector>,
}

impl BlockSource {
    /// Resolves the configured device names and attaches the programs.
    pub fn start(cfg: &BlockSection) -> Result<Self, BlockError> {
        let mut devices = Vec::new();
        for name in &cfg.devices {
            let resolved = blockdev::resolve(name)
                .map_err(|e| BlockError::Options(format!("collectors.block.devices: {e}")))?;
            devices.push(resolved.dev);
        }
        let collector = BlockCollector::attach(&BlockOptions {
            devices,
            queue_time: cfg.queue_time,
            tracepoints: cfg.tracepoints,
        })?;
        if let Some(reason) = unexpected_fallback(collector.fallback_reason()) {
            tracing::warn!(
                collector = "block",
                reason,
                "classic tracepoints, as BTF tracepoints failed on a kernel with BTF"
            );
        }
        Ok(Self {
            collector: Mutex::new(collector),
        })
    }
}

/// Converts a kernel log2 histogram to Prometheus buckets in base units
/// divided by `scale` (1e9 for ns → seconds, 1 for bytes).
pub fn to_histogram(h: &Log2Hist, scale: f64) -> HistogramValue {
    let bounds = log2_upper_bounds(HIST_SLOTS, h.unit, scale);
    HistogramValue {
        sum: h.sum as f64 / scale,
        buckets: bounds.zip(h.slots.iter().copied()).collect(),
    }
}

/// The families of one reading.
pub fn block_families(snap: &BlockReading) -> Vec<Family> {
    let mut latency = Family::new(
        "perf_user_block_io_latency_seconds",
        Kind::Histogram,
        "Block I/O latency from issue to the device until completion, per disk and operation.",
    );
    let mut size = Family::new(
        "perf_user_block_io_size_bytes",
        Kind::Histogram,
        "Block I/O request sizes, per disk and operation.",
    );
    let mut queue = Family::new(
        "perf_user_block_io_queue_seconds",
        Kind::Histogram,
        "Time block I/O requests waited in the kernel before issue to the device (Linux 6.5+, collectors.block.queue_time = true).",
    );
    for named in &snap.series {
        let s = &named.series;
        let labels = vec![
            ("device", named.device.clone()),
            ("op", s.op_name().to_string()),
        ];
        latency.push_histogram(labels.clone(), to_histogram(&s.latency, NS_PER_S));
        size.push_histogram(labels.clone(), to_histogram(&s.size, 1.0));
        if snap.queue_time {
            queue.push_histogram(labels, to_histogram(&s.queue, NS_PER_S));
        }
    }
    let mut out = vec![latency, size];
    if snap.queue_time {
        out.push(queue);
    }
    out.push(lost_family(&snap.counters));
    out
}

fn lost_family(c: &BlockCounters) -> Family {
    lost_events(
        "block",
        &[
            ("unmatched_completion", c.unmatched_completions),
            ("inflight_map_full", c.inflight_map_full),
            ("histogram_map_full", c.histogram_map_full),
            ("read_error", c.read_errors),
            ("issue_missed", c.issues_missed),
            ("completion_missed", c.completions_missed),
        ],
    )
}

impl BlockSource {
    /// The histograms now, disks named.
    pub fn reading(&self) -> Result<BlockReading, BlockError> {
        let snap = self
            .collector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read()?;
        // Named at each read: a disk added or removed meanwhile is named right.
        let names = blockdev::names();
        Ok(BlockReading::new(snap, &|dev| {
            blockdev::display_name(&names, dev)
        }))
    }
}

impl Source for BlockSource {
    fn name(&self) -> &'static str {
        "block"
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        Ok(block_families(&self.reading()?))
    }

    fn read(&self) -> Result<Option<Reading>, SourceError> {
        Ok(Some(Reading::Block(self.reading()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::block::{BlockSeries, BlockSnapshot};

    #[test]
    fn kernel_slots_become_cumulative_le_buckets() {
        // 3 I/Os of 100 us (slot 6: [64, 128) us) and 1 of 3 ms (slot 11).
        let mut h = Log2Hist::new(1_000);
        for ns in [100_000, 100_000, 100_000, 3_000_000] {
            h.record(ns);
        }
        let p = to_histogram(&h, NS_PER_S);
        assert_eq!(p.count(), 4);
        assert!((p.sum - 0.0033).abs() < 1e-12, "{}", p.sum);
        // Slot k's upper edge is 2^(k+1) us.
        assert_eq!(p.buckets[6], (128e-6, 3));
        assert_eq!(p.buckets[11], (4096e-6, 1));
        assert_eq!(p.buckets.len(), HIST_SLOTS);
    }

    #[test]
    fn series_are_labelled_by_disk_and_operation() {
        let mut latency = Log2Hist::new(1_000);
        latency.record(50_000);
        let snap = BlockSnapshot {
            series: vec![BlockSeries {
                dev: 0xfd00000,
                op: 1,
                latency: latency.clone(),
                size: Log2Hist::new(1024),
                queue: Log2Hist::new(1_000),
            }],
            ..BlockSnapshot::default()
        };
        let fams = block_families(&BlockReading::new(snap, &|_| "vda".into()));
        let names: Vec<&str> = fams.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "perf_user_block_io_latency_seconds",
                "perf_user_block_io_size_bytes",
                "perf_user_lost_events_total"
            ]
        );
        assert_eq!(
            fams[0].samples[0].labels,
            vec![("device", "vda".to_string()), ("op", "write".to_string())]
        );
    }
}
