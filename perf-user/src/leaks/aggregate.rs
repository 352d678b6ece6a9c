//! From the kernel's outstanding allocations to per-stack rows: bytes and
//! count outstanding, oldest age, growth over the window, scaled for
//! sampling. Pure functions, so that every number a report shows is checked
//! here against hand-made inputs.

use std::collections::HashMap;

use perf_ebpf_common::alloc::{AllocInfo, AllocStackKey, AllocStackTotals};

/// Identifies a row: one call stack calling one allocation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackRef {
    /// User stack id, or one of the `STACK_*` markers.
    pub stack_id: i32,
    /// One of `alloc::kind::*`.
    pub kind: u32,
}

impl From<&AllocInfo> for StackRef {
    fn from(a: &AllocInfo) -> Self {
        Self {
            stack_id: a.stack_id,
            kind: a.kind,
        }
    }
}

impl From<&AllocStackKey> for StackRef {
    fn from(k: &AllocStackKey) -> Self {
        Self {
            stack_id: k.stack_id,
            kind: k.kind,
        }
    }
}

/// What a report covers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Now, on the clock of the kernel timestamps (CLOCK_MONOTONIC), in ns.
    pub now_ns: u64,
    /// Allocations younger than this are left out of the rows.
    pub min_age_ns: u64,
    /// Seconds since the previous report (or since tracing began).
    pub secs: f64,
    /// Each tracked allocation stands for this many (`--sample`); 1 without sampling.
    pub scale: u64,
}

/// One row of the report; every amount already scaled.
#[derive(Clone, Debug, PartialEq)]
pub struct StackRow {
    /// The stack and function.
    pub stack: StackRef,
    /// Outstanding bytes at least `min_age` old.
    pub bytes: u64,
    /// Outstanding allocations at least `min_age` old.
    pub allocations: u64,
    /// Age of the oldest outstanding allocation, in ns.
    pub oldest_age_ns: u64,
    /// Change of this stack's outstanding bytes (all ages) over the window,
    /// per second.
    pub growth_bytes_per_sec: f64,
    /// Allocations this stack made since tracing began (freed or not).
    pub allocs_total: u64,
    /// Bytes this stack allocated since tracing began (freed or not).
    pub bytes_allocated_total: u64,
}

/// The rows and the sums of a report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregate {
    /// Rows with something outstanding, most bytes first.
    pub rows: Vec<StackRow>,
    /// Sum of the rows' bytes.
    pub bytes: u64,
    /// Sum of the rows' allocations.
    pub allocations: u64,
    /// Bytes left out for being younger than `min_age`.
    pub young_bytes: u64,
    /// Allocations left out for being younger than `min_age`.
    pub young_allocations: u64,
    /// Unscaled outstanding bytes per stack, all ages: the baseline for the
    /// next window's growth.
    pub baseline: HashMap<StackRef, u64>,
}

/// Groups `allocations` by stack. `previous` is the last report's
/// [`Aggregate::baseline`] (empty for the first report, when everything
/// grew from nothing since tracing began).
pub fn aggregate(
    allocations: &[AllocInfo],
    totals: &[(AllocStackKey, AllocStackTotals)],
    previous: &HashMap<StackRef, u64>,
    window: &Window,
) -> Aggregate {
    #[derive(Default)]
    struct Acc {
        bytes: u64,
        count: u64,
        oldest_ns: u64,
        all_bytes: u64,
    }
    let scale = window.scale.max(1);
    let mut acc: HashMap<StackRef, Acc> = HashMap::new();
    let mut young_bytes = 0u64;
    let mut young_count = 0u64;
    for a in allocations {
        let e = acc.entry(StackRef::from(a)).or_default();
        e.all_bytes = e.all_bytes.saturating_add(a.size);
        // A timestamp after `now` (read just after the clock): age zero.
        let age = window.now_ns.saturating_sub(a.timestamp_ns);
        if age < window.min_age_ns {
            young_bytes = young_bytes.saturating_add(a.size);
            young_count += 1;
            continue;
        }
        e.bytes = e.bytes.saturating_add(a.size);
        e.count += 1;
        e.oldest_ns = e.oldest_ns.max(age);
    }
    let totals: HashMap<StackRef, &AllocStackTotals> =
        totals.iter().map(|(k, t)| (StackRef::from(k), t)).collect();
    let baseline: HashMap<StackRef, u64> = acc.iter().map(|(k, a)| (*k, a.all_bytes)).collect();
    let mut rows: Vec<StackRow> = acc
        .into_iter()
        .filter(|(_, a)| a.count > 0)
        .map(|(stack, a)| {
            let before = previous.get(&stack).copied().unwrap_or(0);
            let delta = a.all_bytes as f64 - before as f64;
            let t = totals.get(&stack);
            StackRow {
                stack,
                bytes: a.bytes.saturating_mul(scale),
                allocations: a.count.saturating_mul(scale),
                oldest_age_ns: a.oldest_ns,
                growth_bytes_per_sec: if window.secs > 0.0 {
                    delta * scale as f64 / window.secs
                } else {
                    0.0
                },
                allocs_total: t.map_or(0, |t| t.allocs.saturating_mul(scale)),
                bytes_allocated_total: t.map_or(0, |t| t.alloc_bytes.saturating_mul(scale)),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.allocations.cmp(&a.allocations))
            .then(a.stack.cmp(&b.stack))
    });
    Aggregate {
        bytes: rows.iter().map(|r| r.bytes).fold(0, u64::saturating_add),
        allocations: rows
            .iter()
            .map(|r| r.allocations)
            .fold(0, u64::saturating_add),
        young_bytes: young_bytes.saturating_mul(scale),
        young_allocations: young_count.saturating_mul(scale),
        rows,
        baseline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn alloc(size: u64, at_ns: u64, stack_id: i32) -> AllocInfo {
        AllocInfo {
            size,
            timestamp_ns: at_ns,
            stack_id,
            kind: 0,
            generation: 0,
            _pad: 0,
        }
    }

    fn window(now_ns: u64, min_age_ns: u64, secs: f64, scale: u64) -> Window {
        Window {
            now_ns,
            min_age_ns,
            secs,
            scale,
        }
    }

    #[test]
    fn groups_by_stack_with_counts_ages_and_order() {
        let allocs = [
            alloc(100, S, 7),
            alloc(100, 3 * S, 7),
            alloc(5000, 4 * S, 9),
        ];
        let agg = aggregate(&allocs, &[], &HashMap::new(), &window(5 * S, 0, 5.0, 1));
        assert_eq!(agg.rows.len(), 2);
        assert_eq!(agg.rows[0].stack.stack_id, 9, "most bytes first");
        let r7 = &agg.rows[1];
        assert_eq!(
            (r7.bytes, r7.allocations, r7.oldest_age_ns),
            (200, 2, 4 * S)
        );
        // 200 bytes appeared over 5 s.
        assert!((r7.growth_bytes_per_sec - 40.0).abs() < 1e-9);
        assert_eq!((agg.bytes, agg.allocations), (5200, 3));
    }

    #[test]
    fn min_age_hides_young_allocations_but_counts_them() {
        let allocs = [alloc(10, S, 1), alloc(20, 9 * S, 1), alloc(40, 9 * S, 2)];
        let agg = aggregate(
            &allocs,
            &[],
            &HashMap::new(),
            &window(10 * S, 5 * S, 10.0, 1),
        );
        assert_eq!(agg.rows.len(), 1, "stack 2 has only young allocations");
        assert_eq!((agg.rows[0].bytes, agg.rows[0].allocations), (10, 1));
        assert_eq!((agg.young_bytes, agg.young_allocations), (60, 2));
        // Growth counts every age: stack 1 went from 0 to 30 bytes.
        assert!((agg.rows[0].growth_bytes_per_sec - 3.0).abs() < 1e-9);
    }

    #[test]
    fn growth_is_measured_from_the_previous_report() {
        let allocs = [alloc(100, 0, 1), alloc(100, 0, 1), alloc(100, 0, 1)];
        let first = aggregate(&allocs[..1], &[], &HashMap::new(), &window(S, 0, 1.0, 1));
        let second = aggregate(&allocs, &[], &first.baseline, &window(3 * S, 0, 2.0, 1));
        assert!((second.rows[0].growth_bytes_per_sec - 100.0).abs() < 1e-9);
        let flat = aggregate(&allocs, &[], &second.baseline, &window(4 * S, 0, 1.0, 1));
        assert_eq!(flat.rows[0].growth_bytes_per_sec, 0.0);
    }

    #[test]
    fn sampling_scales_every_amount() {
        let allocs = [alloc(64, 0, 3), alloc(64, 0, 3)];
        let totals = [(
            AllocStackKey {
                stack_id: 3,
                kind: 0,
                generation: 0,
            },
            AllocStackTotals {
                allocs: 10,
                alloc_bytes: 640,
            },
        )];
        let agg = aggregate(&allocs, &totals, &HashMap::new(), &window(S, 0, 1.0, 16));
        let r = &agg.rows[0];
        assert_eq!((r.bytes, r.allocations), (128 * 16, 2 * 16));
        assert_eq!((r.allocs_total, r.bytes_allocated_total), (160, 640 * 16));
        assert!((r.growth_bytes_per_sec - 128.0 * 16.0).abs() < 1e-9);
    }

    #[test]
    fn the_same_stack_through_two_functions_is_two_rows() {
        let mut a = alloc(8, 0, 5);
        let mut b = alloc(8, 0, 5);
        a.kind = 0;
        b.kind = 1;
        let agg = aggregate(&[a, b], &[], &HashMap::new(), &window(S, 0, 1.0, 1));
        assert_eq!(agg.rows.len(), 2);
    }

    proptest! {
        #[test]
        fn sums_match_the_allocations(
            allocs in proptest::collection::vec((0u64..1 << 20, 0u64..100, 0i32..8), 0..200),
            min_age in 0u64..100,
            scale in 1u64..64,
        ) {
            let infos: Vec<AllocInfo> = allocs.iter().map(|&(size, t, s)| alloc(size, t, s)).collect();
            let w = window(100, min_age, 1.0, scale);
            let agg = aggregate(&infos, &[], &HashMap::new(), &w);
            let old: Vec<&AllocInfo> = infos.iter().filter(|a| 100 - a.timestamp_ns >= min_age).collect();
            prop_assert_eq!(agg.bytes, old.iter().map(|a| a.size).sum::<u64>() * scale);
            prop_assert_eq!(agg.allocations, old.len() as u64 * scale);
            prop_assert_eq!(
                agg.bytes + agg.young_bytes,
                infos.iter().map(|a| a.size).sum::<u64>() * scale
            );
            for pair in agg.rows.windows(2) {
                prop_assert!(pair[0].bytes >= pair[1].bytes);
            }
            for r in &agg.rows {
                prop_assert!(r.allocations > 0);
                prop_assert!(r.oldest_age_ns >= min_age);
            }
            // Baselines cover every allocation, young or old, unscaled.
            prop_assert_eq!(
                agg.baseline.values().sum::<u64>(),
                infos.iter().map(|a| a.size).sum::<u64>()
            );
        }

        #[test]
        fn a_higher_min_age_never_shows_more(
            allocs in proptest::collection::vec((1u64..1000, 0u64..100, 0i32..4), 0..100),
            lo in 0u64..50,
            extra in 0u64..50,
        ) {
            let infos: Vec<AllocInfo> = allocs.iter().map(|&(size, t, s)| alloc(size, t, s)).collect();
            let a = aggregate(&infos, &[], &HashMap::new(), &window(100, lo, 1.0, 1));
            let b = aggregate(&infos, &[], &HashMap::new(), &window(100, lo + extra, 1.0, 1));
            prop_assert!(b.bytes <= a.bytes);
            prop_assert!(b.rows.len() <= a.rows.len());
        }
    }
}
