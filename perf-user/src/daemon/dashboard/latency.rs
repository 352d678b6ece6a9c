//! Block I/O and TCP latency over the last 15 minutes, for the dashboard:
//! every [`STEP`] the block and TCP sources' typed readings (cumulative
//! histograms) are read, and each series keeps the difference since the
//! previous step (count, p50, p99, slot counts) for [`POINTS`] steps.
//! Bounded: at most [`MAX_SERIES`] series, each [`POINTS`] points.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{LazyLock, Mutex, Weak},
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::{
    collectors::tcp::TcpKind,
    histogram::{Log2Hist, display_range},
    observe::{Reading, hist_delta, tcp::side_name},
};

use super::super::{scrape::Scraper, windows::lock};

/// Time between two points.
pub const STEP: Duration = Duration::from_secs(5);
/// Points kept per series: 15 minutes.
pub const POINTS: usize = 180;
/// Series kept; later ones are left out (and counted).
pub const MAX_SERIES: usize = 32;

/// One step of one series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// End of the step, seconds since the Unix epoch.
    pub t: f64,
    /// Events in the step.
    pub count: u64,
    /// Median, seconds (null without events).
    pub p50_seconds: Option<f64>,
    /// 99th percentile, seconds (null without events).
    pub p99_seconds: Option<f64>,
    /// Events per log2 slot (trailing empty slots left out); slot `k`'s
    /// upper bound is the series' `slot_upper_seconds[k]`.
    pub slots: Vec<u32>,
}

/// One histogram's history.
#[derive(Debug, Serialize)]
pub struct Series {
    /// `block` or `tcp`.
    pub collector: &'static str,
    /// `device`/`op`, or `kind`/`side`/`port`.
    pub labels: BTreeMap<&'static str, String>,
    /// Upper bound of each slot, seconds.
    pub slot_upper_seconds: Vec<f64>,
    /// Oldest first.
    pub points: VecDeque<Point>,
    /// The cumulative histogram at the last step.
    #[serde(skip)]
    last: Log2Hist,
}

/// Every series, by key.
#[derive(Default)]
pub struct LatencyHistory {
    series: Mutex<BTreeMap<String, Series>>,
    left_out: std::sync::atomic::AtomicU64,
}

/// The daemon's history (one daemon per process).
pub static HISTORY: LazyLock<LatencyHistory> = LazyLock::new(LatencyHistory::default);

/// The latency kinds' names; retransmits are counted, not timed.
fn kind_name(k: TcpKind) -> Option<&'static str> {
    match k {
        TcpKind::Rtt => Some("rtt"),
        TcpKind::Connect => Some("connect"),
        TcpKind::ConnectFailed => Some("connect_failed"),
        TcpKind::Accept => Some("accept"),
        TcpKind::Retransmit => None,
    }
}

fn seconds(base: f64, h: &Log2Hist) -> f64 {
    base * h.unit as f64 / 1e9
}

impl LatencyHistory {
    /// Adds the step ending at `now` from the cumulative `readings`.
    pub fn record(&self, now: SystemTime, readings: &[Reading]) {
        let t = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut all = lock(&self.series);
        let mut add =
            |collector: &'static str, labels: BTreeMap<&'static str, String>, h: &Log2Hist| {
                let key = format!("{collector} {labels:?}");
                if !all.contains_key(&key) {
                    if all.len() >= MAX_SERIES {
                        self.left_out
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                    let slot_upper_seconds = (0..h.slots.len())
                        .map(|k| seconds((display_range(k).1 + 1) as f64, h))
                        .collect();
                    // From nothing: the first point holds what came before
                    // (a device's first requests make its series appear).
                    all.insert(
                        key.clone(),
                        Series {
                            collector,
                            labels,
                            slot_upper_seconds,
                            points: VecDeque::new(),
                            last: Log2Hist::new(h.unit),
                        },
                    );
                }
                let Some(s) = all.get_mut(&key) else { return };
                let d = hist_delta(h, &s.last);
                s.last = h.clone();
                let end = d.slots.iter().rposition(|&n| n > 0).map_or(0, |k| k + 1);
                s.points.push_back(Point {
                    t,
                    count: d.count,
                    p50_seconds: d.percentile(0.5).map(|v| v / 1e9),
                    p99_seconds: d.percentile(0.99).map(|v| v / 1e9),
                    slots: d.slots[..end]
                        .iter()
                        .map(|&n| n.min(u32::MAX as u64) as u32)
                        .collect(),
                });
                while s.points.len() > POINTS {
                    s.points.pop_front();
                }
            };
        for r in readings {
            match r {
                Reading::Block(b) => {
                    for s in &b.series {
                        let labels = BTreeMap::from([
                            ("device", s.device.clone()),
                            ("op", s.series.op_name().to_string()),
                        ]);
                        add("block", labels, &s.series.latency);
                    }
                }
                Reading::Tcp(t) => {
                    for ((kind, side, port), h) in &t.sums {
                        let Some(kind) = kind_name(*kind) else {
                            continue;
                        };
                        let labels = BTreeMap::from([
                            ("kind", kind.to_string()),
                            ("side", side_name(*side).to_string()),
                            ("port", port.clone()),
                        ]);
                        add("tcp", labels, h);
                    }
                }
                _ => {}
            }
        }
    }

    /// Runs `f` over every series.
    pub fn with<T>(&self, f: impl FnOnce(&BTreeMap<String, Series>, u64) -> T) -> T {
        f(
            &lock(&self.series),
            self.left_out.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// Reads the block and TCP sources every [`STEP`] into [`HISTORY`], and the
/// leaks source into [`super::leaks`], for as long as the scraper lives.
pub fn spawn_sampler(scraper: Weak<Scraper>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(scraper) = scraper.upgrade() else {
                return;
            };
            // Reading maps blocks: off the async workers.
            let read = tokio::task::spawn_blocking(move || {
                let readings: Vec<Reading> = scraper
                    .sources()
                    .iter()
                    .filter(|s| matches!(s.name(), "block" | "tcp"))
                    .filter_map(|s| match s.read() {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::debug!(collector = s.name(), error = %e, "reading for the dashboard's latency history failed");
                            None
                        }
                    })
                    .collect();
                let now = SystemTime::now();
                HISTORY.record(now, &readings);
                for s in scraper.sources().iter().filter(|s| s.name() == "leaks") {
                    if let Some(l) = s
                        .as_any()
                        .and_then(|a| a.downcast_ref::<super::super::leaks::LeaksSource>())
                    {
                        let t = now
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64());
                        super::leaks::sample(l, t);
                    }
                }
            })
            .await;
            if let Err(e) = read {
                tracing::warn!(error = %e, "the dashboard's latency sampler failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::block::{BlockReading, NamedSeries};

    fn reading(values_us: &[u64]) -> Reading {
        let mut series = crate::collectors::block::BlockSeries {
            dev: 1,
            op: 0,
            latency: crate::observe::test_hist(&[]),
            size: Log2Hist::new(1024),
            queue: crate::observe::test_hist(&[]),
        };
        for &v in values_us {
            series.latency.record(v * 1000);
        }
        Reading::Block(BlockReading {
            series: vec![NamedSeries {
                device: "loop0".into(),
                series,
            }],
            ..BlockReading::default()
        })
    }

    #[test]
    fn steps_are_differences_and_bounded() {
        let h = LatencyHistory::default();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        h.record(t, &[reading(&[100])]);
        let mut cumulative = vec![100];
        for i in 0..POINTS + 10 {
            cumulative.extend([1000, 1000, 1000]);
            h.record(t + STEP * (i as u32 + 1), &[reading(&cumulative)]);
        }
        h.with(|all, left_out| {
            assert_eq!(left_out, 0);
            let s = all.values().next().unwrap();
            assert_eq!(s.labels["device"], "loop0");
            assert_eq!(s.points.len(), POINTS);
            assert_eq!(s.points.front().unwrap().count, 3);
            let p = s.points.back().unwrap();
            assert_eq!(p.count, 3);
            let p50 = p.p50_seconds.unwrap();
            assert!((0.0005..0.002).contains(&p50), "{p50}");
            assert_eq!(p.slots.iter().sum::<u32>(), 3);
            let k = p.slots.len() - 1;
            assert!(
                s.slot_upper_seconds[k] >= 0.001,
                "{:?}",
                s.slot_upper_seconds
            );
        });
    }
}
