//! The daemon's readings as evaluation batches. Block and TCP histograms
//! are cumulative, so each evaluation looks at the difference since the
//! previous reading: the window is the evaluation interval. CPU shares and
//! off-CPU times are per window; a batch covers them only when a new
//! window has closed.
//! Leak figures are levels, read as they are.

use std::time::SystemTime;

use super::{Reading, block, block::BlockReading, cpu, leaks, offcpu, tcp, tcp::TcpPorts};
use crate::alerts::signals::{Batch, Signal};

/// Turns successive readings into batches.
#[derive(Debug, Default)]
pub struct Batches {
    last: Option<SystemTime>,
    block: Option<BlockReading>,
    tcp: Option<TcpPorts>,
    cpu_window_end: Option<SystemTime>,
    offcpu_window_end: Option<SystemTime>,
}

impl Batches {
    /// An empty converter: the first batch covers nothing of the cumulative
    /// signals, which need a previous reading.
    pub fn new() -> Self {
        Self::default()
    }

    /// The batch for `readings` read at `at`.
    pub fn batch(&mut self, readings: Vec<Reading>, at: SystemTime) -> Batch {
        let window = self
            .last
            .and_then(|l| at.duration_since(l).ok())
            .unwrap_or_default();
        let first = self.last.is_none();
        self.last = Some(at);
        let mut batch = Batch::new(at, window);
        for reading in readings {
            match reading {
                Reading::Block(now) => {
                    let obs = block::observations(&now, self.block.as_ref(), window);
                    if !first {
                        batch.extend(&Signal::BLOCK, obs);
                    }
                    self.block = Some(now);
                }
                Reading::Tcp(now) => {
                    let obs = tcp::observations(&now, self.tcp.as_ref(), window);
                    if !first {
                        batch.extend(&Signal::TCP, obs);
                    }
                    self.tcp = Some(now);
                }
                Reading::Leaks(processes) => {
                    batch.extend(&Signal::LEAKS, leaks::observations(&processes));
                }
                Reading::Cpu(w) => {
                    let obs = cpu::window_observations(&w);
                    add_window(
                        &mut batch,
                        &mut self.cpu_window_end,
                        &w,
                        Signal::CpuSelfRatio,
                        obs,
                    );
                }
                Reading::OffCpu(w) => {
                    let obs = offcpu::window_observations(&w);
                    let signal = Signal::OffCpuSeconds;
                    add_window(&mut batch, &mut self.offcpu_window_end, &w, signal, obs);
                }
            }
        }
        batch
    }
}

/// Adds a window's observations of `signal` to `batch`, once: only when
/// it is a window not seen before (`last_end` is the last one's end).
fn add_window(
    batch: &mut Batch,
    last_end: &mut Option<SystemTime>,
    w: &cpu::Window,
    signal: Signal,
    obs: Vec<crate::alerts::signals::Observation>,
) {
    if w.end.is_none() || w.end == *last_end {
        return;
    }
    *last_end = w.end;
    let mut b = Batch::new(batch.at, w.duration);
    b.extend(&[signal], obs);
    batch.covered.extend(b.covered);
    batch.observations.extend(b.observations);
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        time::{Duration, UNIX_EPOCH},
    };

    use super::*;
    use crate::{
        alerts::signals::labels,
        observe::{
            cpu::{HotRow, Window},
            leaks::LeakProcess,
        },
    };

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn block(values_us: &[u64]) -> Vec<Reading> {
        vec![Reading::Block(super::super::block::test_reading(
            "loop3", values_us,
        ))]
    }

    #[test]
    fn block_windows_are_differences_between_readings() {
        let mut m = Batches::new();
        let first: Vec<u64> = vec![100; 50];
        let b = m.batch(block(&first), at(0));
        assert!(b.covered.is_empty(), "nothing to compare with yet");
        // 50 more fast ones, then 50 slow ones: the window holds only those.
        let mut second = first.clone();
        second.extend([200_000u64; 50]);
        let b = m.batch(block(&second), at(10));
        assert_eq!(b.window, Duration::from_secs(10));
        assert!(b.covered.contains(&Signal::BlockLatencyP99));
        let p99 = b
            .observations
            .iter()
            .find(|o| o.signal == Signal::BlockLatencyP99)
            .unwrap();
        assert_eq!(p99.count, 50);
        assert!(p99.value > 0.13 && p99.value < 0.27, "{}", p99.value);
        assert_eq!(p99.labels, labels([("device", "loop3"), ("op", "write")]));
    }

    // The update stays when every field is named: rows may gain fields.
    #[allow(clippy::needless_update)]
    fn cpu(end: u64, share: f64) -> Vec<Reading> {
        let hot = (share * 1000.0) as u64;
        let row = HotRow {
            process: "app".into(),
            function: "hot".into(),
            module: "app".into(),
            self_samples: hot,
            ..HotRow::default()
        };
        vec![Reading::Cpu(Arc::new(Window {
            end: (end > 0).then(|| at(end)),
            duration: Duration::from_secs(10),
            samples: 1000,
            top: vec![row],
            other_samples: 1000 - hot,
            ..Window::default()
        }))]
    }

    #[test]
    fn cpu_windows_are_covered_once() {
        let mut m = Batches::new();
        assert!(
            m.batch(cpu(0, 0.5), at(0)).covered.is_empty(),
            "no window yet"
        );
        let b = m.batch(cpu(100, 0.5), at(10));
        assert!(b.covered.contains(&Signal::CpuSelfRatio));
        assert_eq!(b.observations.len(), 1, "[other] is not a function");
        assert_eq!(b.observations[0].count, 1000);
        assert!((b.observations[0].value - 0.5).abs() < 1e-12);
        assert!(m.batch(cpu(100, 0.5), at(20)).covered.is_empty());
    }

    #[test]
    fn leak_counts_per_traced_name() {
        let traced = |outstanding| {
            vec![Reading::Leaks(vec![LeakProcess {
                pid: 42,
                name: "leaker".into(),
                outstanding_allocations: outstanding,
                stacks: Vec::new(),
            }])]
        };
        let mut m = Batches::new();
        let b = m.batch(traced(500), at(0));
        assert!(b.covered.contains(&Signal::LeakOutstandingAllocations));
        assert_eq!(b.observations.len(), 1, "one name, no stacks read");
        assert_eq!(b.observations[0].value, 500.0);
        assert_eq!(b.observations[0].labels["process"], "leaker");
        // Nothing traced: no data.
        let b = m.batch(vec![Reading::Leaks(Vec::new())], at(10));
        assert!(b.observations.is_empty());
    }
}
