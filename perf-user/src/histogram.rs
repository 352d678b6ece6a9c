//! Log2 histograms as the kernel programs keep them (`perf_ebpf_common::hist`):
//! merging the per-CPU copies, percentile estimates, and the biolatency-style
//! text rendering.
//!
//! A slot `k` holds values whose scaled value (`value / unit`) lies in
//! `[2^k, 2^(k+1))`, slot 0 also 0. Count, sum and max are exact; percentiles
//! are interpolated inside the slot that holds them, so an estimate always
//! lies in the same power-of-two range as the true value and never above the
//! maximum.

use std::io::{self, Write};

use perf_ebpf_common::hist::{HIST_SLOTS, Hist};

/// Counts per log2 slot, plus exact count, sum and maximum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log2Hist {
    /// Base units (ns, bytes) per slot unit (us, KiB).
    pub unit: u64,
    /// Counts per slot.
    pub slots: [u64; HIST_SLOTS],
    /// Values recorded.
    pub count: u64,
    /// Sum of the values, base units.
    pub sum: u64,
    /// Largest value, base units.
    pub max: u64,
}

impl Log2Hist {
    /// An empty histogram whose slots are `unit` base units wide at slot 0.
    pub fn new(unit: u64) -> Self {
        Self {
            unit: unit.max(1),
            slots: [0; HIST_SLOTS],
            count: 0,
            sum: 0,
            max: 0,
        }
    }

    /// Sums the kernel's per-CPU copies of one histogram.
    pub fn from_per_cpu<'a>(unit: u64, per_cpu: impl IntoIterator<Item = &'a Hist>) -> Self {
        let mut h = Self::new(unit);
        for cpu in per_cpu {
            h.add_kernel(cpu);
        }
        h
    }

    /// Adds one kernel histogram (one CPU's copy).
    pub fn add_kernel(&mut self, k: &Hist) {
        for (a, b) in self.slots.iter_mut().zip(k.slots.iter()) {
            *a = a.saturating_add(*b);
        }
        self.count = self.count.saturating_add(k.count);
        self.sum = self.sum.saturating_add(k.sum);
        self.max = self.max.max(k.max);
    }

    /// Adds another histogram of the same unit.
    pub fn merge(&mut self, other: &Log2Hist) {
        debug_assert_eq!(
            self.unit, other.unit,
            "merging histograms of different units"
        );
        for (a, b) in self.slots.iter_mut().zip(other.slots.iter()) {
            *a = a.saturating_add(*b);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// Records one value (base units), as the kernel program does.
    pub fn record(&mut self, value: u64) {
        let slot = perf_ebpf_common::hist::log2_slot(value / self.unit);
        self.slots[slot] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(value);
        self.max = self.max.max(value);
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Mean in base units.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// Estimate of the `q` quantile (0 < q <= 1) in base units: the
    /// `ceil(q * n)`-th smallest value, placed inside its slot by its rank
    /// among the slot's values, and capped at the exact maximum.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.slots.iter().sum();
        if total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut before = 0u64;
        for (k, &n) in self.slots.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if before + n >= rank {
                let (lo, hi) = slot_range(k);
                // Centre of the rank's share of the slot: strictly inside it.
                let frac = ((rank - before) as f64 - 0.5) / n as f64;
                let scaled = lo as f64 + frac * (hi - lo) as f64;
                let value = scaled * self.unit as f64;
                return Some(if self.max > 0 {
                    value.min(self.max as f64)
                } else {
                    value
                });
            }
            before += n;
        }
        None
    }

    /// Writes the histogram the way libbpf-tools' `print_log2_hist` does:
    /// one row per slot up to the last non-empty one, 40 stars at most.
    pub fn write_text(&self, value_name: &str, w: &mut dyn Write) -> io::Result<()> {
        let Some(idx_max) = self.slots.iter().rposition(|&n| n > 0) else {
            return Ok(());
        };
        let val_max = self.slots.iter().copied().max().unwrap_or(0);
        let narrow = idx_max <= 32;
        let (pad, name_width, width, stars) = if narrow {
            (5, 19, 10, 40)
        } else {
            (15, 29, 20, 20)
        };
        writeln!(
            w,
            "{:pad$}{value_name:<name_width$} : count    distribution",
            ""
        )?;
        for (k, &n) in self.slots.iter().enumerate().take(idx_max + 1) {
            let (low, high) = display_range(k);
            writeln!(
                w,
                "{low:>width$} -> {high:<width$} : {n:<8} |{}|",
                star_bar(n, val_max, stars)
            )?;
        }
        Ok(())
    }
}

/// `[lo, hi)` of slot `k` in slot units.
fn slot_range(k: usize) -> (u64, u64) {
    if k == 0 {
        (0, 2)
    } else {
        (1 << k, 1 << (k + 1))
    }
}

/// Inclusive bounds as biolatency prints them: `0 -> 1`, `2 -> 3`, `4 -> 7`…
pub fn display_range(k: usize) -> (u64, u64) {
    let (lo, hi) = slot_range(k);
    (lo, hi - 1)
}

/// `print_stars`: `val * width / val_max` stars, padded with spaces.
fn star_bar(val: u64, val_max: u64, width: u64) -> String {
    if val_max == 0 {
        return " ".repeat(width as usize);
    }
    let stars = (val.min(val_max) as u128 * width as u128 / val_max as u128) as usize;
    let mut s = "*".repeat(stars);
    s.push_str(&" ".repeat(width as usize - stars));
    if val > val_max {
        s.push('+');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use perf_ebpf_common::hist::log2_slot;
    use proptest::prelude::*;

    fn from_values(unit: u64, values: &[u64]) -> Log2Hist {
        let mut h = Log2Hist::new(unit);
        for &v in values {
            h.record(v);
        }
        h
    }

    #[test]
    fn renders_like_biolatency() {
        let mut h = Log2Hist::new(1000);
        h.slots[0] = 1;
        h.slots[2] = 4;
        h.slots[3] = 2;
        h.count = 7;
        let mut out = Vec::new();
        h.write_text("usecs", &mut out).unwrap();
        let expected = "     usecs               : count    distribution
         0 -> 1          : 1        |**********                              |
         2 -> 3          : 0        |                                        |
         4 -> 7          : 4        |****************************************|
         8 -> 15         : 2        |********************                    |
";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn empty_renders_nothing_and_has_no_percentiles() {
        let h = Log2Hist::new(1000);
        let mut out = Vec::new();
        h.write_text("usecs", &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(h.percentile(0.5), None);
        assert_eq!(h.mean(), None);
    }

    #[test]
    fn single_value_percentiles_are_capped_at_max() {
        let h = from_values(1000, &[5_000]);
        // Slot 2 is 4..8 us; the centre is 6 us, above the 5 us max.
        assert_eq!(h.percentile(0.5), Some(5_000.0));
        assert_eq!(h.percentile(0.99), Some(5_000.0));
        assert_eq!(h.mean(), Some(5_000.0));
    }

    #[test]
    fn known_percentiles() {
        // 90 values of 100 us (slot 6: 64..128) and 10 of 10 ms (slot 13).
        let mut v = vec![100_000u64; 90];
        v.extend([10_000_000u64; 10]);
        let h = from_values(1000, &v);
        let p50 = h.percentile(0.5).unwrap();
        assert!((64_000.0..128_000.0).contains(&p50), "{p50}");
        let p99 = h.percentile(0.99).unwrap();
        assert!((8_192_000.0..=10_000_000.0).contains(&p99), "{p99}");
        assert_eq!(h.max, 10_000_000);
    }

    #[test]
    fn per_cpu_copies_sum() {
        let mut a = Hist::zeroed();
        a.slots[1] = 2;
        a.count = 2;
        a.sum = 5_000;
        a.max = 3_000;
        let mut b = Hist::zeroed();
        b.slots[3] = 1;
        b.count = 1;
        b.sum = 9_000;
        b.max = 9_000;
        let h = Log2Hist::from_per_cpu(1000, [&a, &b]);
        assert_eq!((h.count, h.sum, h.max), (3, 14_000, 9_000));
        assert_eq!(h.slots[1], 2);
        assert_eq!(h.slots[3], 1);
    }

    #[test]
    fn more_than_the_maximum_gets_a_plus() {
        assert_eq!(star_bar(5, 4, 4), "****+");
        assert_eq!(star_bar(0, 0, 3), "   ");
    }

    proptest! {
        #[test]
        fn log2_slot_is_floor_log2(v in any::<u64>()) {
            let expected = if v <= 1 { 0 } else { (63 - v.leading_zeros()) as usize };
            prop_assert_eq!(log2_slot(v), expected.min(HIST_SLOTS - 1));
        }

        #[test]
        fn percentile_is_in_the_true_values_slot(
            values in prop::collection::vec(0u64..50_000_000_000, 1..300),
            q in 0.001f64..=1.0,
        ) {
            let h = from_values(1000, &values);
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            let truth = sorted[rank - 1];
            let est = h.percentile(q).unwrap();
            prop_assert!(est <= h.max as f64);
            prop_assert_eq!(
                log2_slot(est as u64 / 1000),
                log2_slot(truth / 1000),
                "estimate {} vs true {}", est, truth
            );
        }

        #[test]
        fn percentiles_are_monotonic(
            values in prop::collection::vec(0u64..1_000_000_000, 1..200),
            a in 0.0f64..=1.0,
            b in 0.0f64..=1.0,
        ) {
            let h = from_values(1000, &values);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(h.percentile(lo).unwrap() <= h.percentile(hi).unwrap());
        }

        #[test]
        fn merge_equals_recording_everything(
            a in prop::collection::vec(any::<u32>(), 0..100),
            b in prop::collection::vec(any::<u32>(), 0..100),
        ) {
            let a: Vec<u64> = a.into_iter().map(u64::from).collect();
            let b: Vec<u64> = b.into_iter().map(u64::from).collect();
            let mut merged = from_values(1024, &a);
            merged.merge(&from_values(1024, &b));
            let all: Vec<u64> = a.iter().chain(b.iter()).copied().collect();
            let direct = from_values(1024, &all);
            prop_assert_eq!(&merged, &direct);
            prop_assert_eq!(merged.slots.iter().sum::<u64>(), merged.count);
        }

        #[test]
        fn rendering_has_one_row_per_slot_up_to_the_last(
            values in prop::collection::vec(any::<u32>(), 1..100),
        ) {
            let values: Vec<u64> = values.into_iter().map(u64::from).collect();
            let h = from_values(1000, &values);
            let mut out = Vec::new();
            h.write_text("usecs", &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let last = h.slots.iter().rposition(|&n| n > 0).unwrap();
            prop_assert_eq!(text.lines().count(), last + 2);
            prop_assert!(text.lines().skip(1).all(|l| l.ends_with('|')));
        }
    }
}
