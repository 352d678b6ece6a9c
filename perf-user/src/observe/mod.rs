//! From typed snapshots to signal observations: the one signal vocabulary
//! that `advise` and the daemon's alert engine share.
//!
//! Data flows one way: collectors read kernel maps into typed snapshots;
//! the daemon's sources turn a snapshot into a [`Reading`] (names resolved,
//! TCP ports labelled); the exposition, the alert engine and `advise` each
//! consume those. No sink parses another sink's output.
//!
//! - [`block`], [`tcp`], [`cpu`], [`leaks`], [`offcpu`]: a reading per collector and
//!   the observations of it, with the same names and labels everywhere.
//! - [`batch`]: the daemon's successive cumulative readings as the windows
//!   the rules judge.

pub mod batch;
pub mod block;
pub mod cpu;
pub mod leaks;
pub mod offcpu;
pub mod tcp;

use std::sync::Arc;

/// A typed snapshot of one daemon source, as the alert engine reads it.
#[derive(Clone, Debug)]
pub enum Reading {
    /// Block I/O histograms per disk and operation (cumulative).
    Block(block::BlockReading),
    /// TCP histograms per port label (cumulative).
    Tcp(tcp::TcpPorts),
    /// The last complete CPU window.
    Cpu(Arc<cpu::Window>),
    /// Every traced process.
    Leaks(Vec<leaks::LeakProcess>),
    /// The last complete off-CPU window (counts in microseconds).
    OffCpu(Arc<cpu::Window>),
}

/// `now - before` of cumulative histograms of the same series (the kernel
/// maps only grow). A counter that went backwards (the collector was
/// restarted) gives `now` itself. The maximum of the difference is not known;
/// it is left 0, so percentiles are not capped by it.
pub fn hist_delta(
    now: &crate::histogram::Log2Hist,
    before: &crate::histogram::Log2Hist,
) -> crate::histogram::Log2Hist {
    if now.count < before.count || now.slots.iter().zip(&before.slots).any(|(a, b)| a < b) {
        return now.clone();
    }
    let mut d = crate::histogram::Log2Hist::new(now.unit);
    for (slot, (a, b)) in d.slots.iter_mut().zip(now.slots.iter().zip(&before.slots)) {
        *slot = a - b;
    }
    d.count = now.count - before.count;
    d.sum = now.sum.saturating_sub(before.sum);
    d.max = if before.count == 0 { now.max } else { 0 };
    d
}

/// A latency histogram (ns, µs slots) of `values_us`, for tests.
#[cfg(test)]
pub(crate) fn test_hist(values_us: &[u64]) -> crate::histogram::Log2Hist {
    let mut h = crate::histogram::Log2Hist::new(perf_ebpf_common::hist::LATENCY_UNIT_NS);
    for &v in values_us {
        h.record(v * 1_000);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_of_cumulative_histograms() {
        let before = test_hist(&[100, 100, 5_000]);
        let now = {
            let mut h = before.clone();
            for v in [100u64, 50_000, 50_000] {
                h.record(v * 1_000);
            }
            h
        };
        let d = hist_delta(&now, &before);
        assert_eq!(d.count, 3);
        assert_eq!(d.sum, 100_100_000);
        assert_eq!(d.slots.iter().sum::<u64>(), 3);
        // A restarted collector: the counts went down, take `now` as is.
        let restarted = test_hist(&[7]);
        assert_eq!(hist_delta(&restarted, &now), restarted);
    }
}
