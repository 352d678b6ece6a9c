//! Block I/O: a snapshot with disks named, and its latency observations
//! per `device` and `op`.

use std::{collections::HashMap, time::Duration};

use crate::{
    alerts::signals::{BlockEvidence, Evidence, Observation, Signal, labels},
    collectors::block::{BlockCounters, BlockSeries, BlockSnapshot},
    histogram::Log2Hist,
};

/// One disk and operation's histograms, with the disk's name.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedSeries {
    /// The disk's name (`vda`, `loop3`), or its numbers when it has none.
    pub device: String,
    /// The kernel's series.
    pub series: BlockSeries,
}

/// A block snapshot with every disk named.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockReading {
    /// One entry per (disk, operation) seen.
    pub series: Vec<NamedSeries>,
    /// What the kernel side counted.
    pub counters: BlockCounters,
    /// Whether queued time is measured.
    pub queue_time: bool,
}

impl BlockReading {
    /// `snap` with each dev_t named by `name`.
    pub fn new(snap: BlockSnapshot, name: &dyn Fn(u32) -> String) -> Self {
        Self {
            series: snap
                .series
                .into_iter()
                .map(|series| NamedSeries {
                    device: name(series.dev),
                    series,
                })
                .collect(),
            counters: snap.counters,
            queue_time: snap.queue_time,
        }
    }
}

/// Observations of `now` over `window`: with `before` (the previous
/// reading of cumulative histograms), of the difference, and only for
/// series `before` has; without it, of everything since attach.
pub fn observations(
    now: &BlockReading,
    before: Option<&BlockReading>,
    window: Duration,
) -> Vec<Observation> {
    let previous: Option<HashMap<(&str, u8), &BlockSeries>> = before.map(|b| {
        b.series
            .iter()
            .map(|s| ((s.device.as_str(), s.series.op), &s.series))
            .collect()
    });
    let mut out = Vec::new();
    for s in &now.series {
        let op = s.series.op_name();
        match &previous {
            None => out.extend(block_observations(
                &s.device,
                op,
                &s.series.latency,
                &s.series.size,
                window,
            )),
            Some(prev) => {
                if let Some(p) = prev.get(&(s.device.as_str(), s.series.op)) {
                    out.extend(block_observations(
                        &s.device,
                        op,
                        &super::hist_delta(&s.series.latency, &p.latency),
                        &super::hist_delta(&s.series.size, &p.size),
                        window,
                    ));
                }
            }
        }
    }
    out
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

/// A reading of one disk's writes taking `values_us`, for tests.
#[cfg(test)]
pub(crate) fn test_reading(device: &str, values_us: &[u64]) -> BlockReading {
    BlockReading {
        series: vec![NamedSeries {
            device: device.into(),
            series: BlockSeries {
                dev: 7,
                op: 1,
                latency: super::test_hist(values_us),
                size: Log2Hist::new(1024),
                queue: Log2Hist::new(1000),
            },
        }],
        ..BlockReading::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_observations_give_percentiles_in_seconds() {
        let mut v = vec![100u64; 98];
        v.extend([80_000, 80_000]);
        let obs = block_observations(
            "loop3",
            "write",
            &super::super::test_hist(&v),
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
        assert!(
            block_observations(
                "x",
                "read",
                &super::super::test_hist(&[]),
                &super::super::test_hist(&[]),
                Duration::ZERO
            )
            .is_empty()
        );
    }
}
