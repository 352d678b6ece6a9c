//! Unwinding user stacks without frame pointers (issue 13): compact tables
//! built from each executable file's CFI ([`table`], checked against
//! `readelf --debug-dump=frames-interp`), kept per file under a budget
//! ([`store`]), loaded into the kernel unwinder's maps process by process
//! ([`loader`]) and walked there (perf-ebpf/src/unwind.rs) for `profile`,
//! `leaks` and the daemon; [`sampler`] is the one-process test bed.

pub mod loader;
pub mod sampler;
pub mod store;
pub mod table;

use std::collections::BTreeMap;

use perf_ebpf_common::unwind::end;

/// How user stacks are walked.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum UnwindMode {
    /// `dwarf` for selected processes (`--pid`) where the kernel unwinder
    /// exists (x86_64, arm64); `fp` for the whole host and elsewhere: tables
    /// are loaded synchronously when a process is first sampled, which on a
    /// host starting many processes delays naming them and costs memory
    /// (docs/unwinding.md).
    #[default]
    Auto,
    /// Frame pointers, by the kernel (`bpf_get_stackid`): cheap, but one or
    /// two frames deep in code built without them (most distribution
    /// packages).
    Fp,
    /// Tables built from each file's `.eh_frame` (x86_64, arm64): whole stacks
    /// without frame pointers; frame pointers where a file has no table.
    Dwarf,
}

impl UnwindMode {
    /// What `self` means on this machine for a sampler of `selected`
    /// processes only (or of every process): never `Auto`.
    pub fn resolve(self, selected: bool) -> Self {
        match self {
            // The kernel walk knows the registers of these two.
            Self::Auto
                if selected && cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) =>
            {
                Self::Dwarf
            }
            Self::Auto => Self::Fp,
            other => other,
        }
    }
}

/// The name of each way a walk ends (`end::*`), as reports and metrics show it.
pub fn end_reason_name(reason: u32) -> &'static str {
    match reason {
        end::COMPLETE => "complete",
        end::NO_MAPPING => "no_mapping",
        end::NO_ROW => "no_row",
        end::UNSUPPORTED => "unsupported_rule",
        end::DEPTH => "depth_limit",
        end::READ_FAULT => "read_fault",
        end::NOT_LOADED => "table_not_loaded",
        end::KERNEL_MODE => "kernel_mode",
        _ => "unknown",
    }
}

/// How the table walks of a run went, for the reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnwindSummary {
    /// Walks that ended, by reason (`complete` is a whole stack; the others
    /// stopped early, or did not start: `table_not_loaded`, `kernel_mode`,
    /// where frame pointers were walked instead).
    pub walks_ended: BTreeMap<&'static str, u64>,
    /// What the table loader did.
    pub tables: loader::LoaderStats,
}

impl UnwindSummary {
    /// From the kernel's per-reason counts (indexed by `end::*`).
    pub fn new(ends: &[u64], tables: loader::LoaderStats) -> Self {
        let walks_ended = ends
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (end_reason_name(i as u32), *n))
            .collect();
        Self {
            walks_ended,
            tables,
        }
    }

    /// Walks that ended early, all reasons but `complete`.
    pub fn ended_early(&self) -> u64 {
        self.walks_ended
            .iter()
            .filter(|(k, _)| **k != "complete")
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_reason_has_a_name() {
        for reason in 0..end::LEN {
            assert_ne!(end_reason_name(reason), "unknown", "reason {reason}");
        }
        assert_ne!(UnwindMode::Auto.resolve(true), UnwindMode::Auto);
        assert_eq!(UnwindMode::Auto.resolve(false), UnwindMode::Fp);
        assert_eq!(UnwindMode::Dwarf.resolve(false), UnwindMode::Dwarf);
    }

    #[test]
    fn summary_counts_early_ends() {
        let mut ends = vec![0; end::LEN as usize];
        ends[end::COMPLETE as usize] = 90;
        ends[end::NO_ROW as usize] = 7;
        ends[end::NOT_LOADED as usize] = 3;
        let s = UnwindSummary::new(&ends, loader::LoaderStats::default());
        assert_eq!(s.ended_early(), 10);
        assert_eq!(s.walks_ended.len(), 3);
    }
}
