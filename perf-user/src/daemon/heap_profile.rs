//! The in-use allocations of the leaks collector's traced processes, per
//! call stack, as a profile: what `/debug/pprof/heap` serves. Read from the
//! tracers' maps, aggregated and symbolized as `leaks` does.

use std::collections::HashMap;

use super::{labels::LabelCache, leaks::LeaksSource};
use crate::{
    cgroup::CgroupLabels,
    collectors::{Collector as _, cpu::RawProfile},
    leaks::{
        aggregate::{Window, aggregate},
        image::TracedProcess,
        report::{self, RunInfo},
    },
    processes::ProcessTable,
    profile::{
        Profile, StackSample,
        build::{RunInfo as BuildInfo, build},
    },
    symbolize::StackSymbolizer,
};

/// The in-use profile: one stack sample per allocation site, its count the
/// allocations outstanding; `bytes[i]` the bytes of `profile.stacks[i]`.
pub struct InUse {
    /// Stacks and outstanding allocations.
    pub profile: Profile,
    /// Outstanding bytes, per stack.
    pub bytes: Vec<u64>,
    /// Container labels by PID.
    pub labels: HashMap<u32, CgroupLabels>,
}

/// Converts to the format's `int64`, saturating.
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Which processes to include: (pid, name, labels).
pub type KeepProcess<'a> = &'a dyn Fn(u32, &str, &CgroupLabels) -> bool;

/// Reads every traced process that `keep` accepts. A tracer that cannot be
/// read is logged and left out.
pub fn in_use(leaks: &LeaksSource, keep: KeepProcess<'_>) -> InUse {
    let mut sym = StackSymbolizer::names_only();
    // An empty profile, made as every profile is.
    let profile = build(
        &RawProfile::default(),
        &ProcessTable::default(),
        &mut sym,
        &BuildInfo {
            frequency_hz: 0,
            duration_secs: 0.0,
            start_unix_nanos: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            cpus: 0,
        },
    );
    let mut out = InUse {
        profile,
        bytes: Vec::new(),
        labels: HashMap::new(),
    };
    let mut cache = LabelCache::default();
    let scale = u64::from(leaks.sample_every().max(1));
    leaks.for_each_traced(|pid, name, collector| {
        cache.refresh([pid]);
        let labels = cache.get(pid);
        if !keep(pid, name, &labels) {
            return;
        }
        let read = collector.read().and_then(|raw| {
            let mut ids: Vec<u32> = raw
                .allocations
                .iter()
                .filter_map(|(_, a)| u32::try_from(a.stack_id).ok())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let stacks = collector.stacks(ids)?;
            Ok((raw, stacks))
        });
        let (raw, stacks) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(collector = "leaks", pid, error = %e, "reading the allocations for a heap profile failed");
                return;
            }
        };
        let infos: Vec<_> = raw.allocations.iter().map(|(_, i)| *i).collect();
        // Every age counts (min_age 0), so "now" only sets the ages, which
        // a heap profile does not show.
        let agg = aggregate(
            &infos,
            &raw.totals,
            &HashMap::new(),
            &Window {
                now_ns: u64::MAX,
                min_age_ns: 0,
                secs: 0.0,
                scale,
            },
        );
        let mut process = TracedProcess::new(pid);
        process.refresh(0);
        let report = report::build(
            &agg,
            &stacks,
            &raw.counters,
            &process,
            &mut sym,
            &RunInfo::default(),
        );
        out.labels.insert(pid, labels);
        for s in report.stacks {
            out.profile.total_samples += s.allocations;
            out.bytes.push(s.bytes);
            out.profile.stacks.push(StackSample {
                state: None,
                pid,
                tid: pid,
                process: name.to_string(),
                thread: name.to_string(),
                frames: s.frames,
                count: s.allocations,
            });
        }
    });
    out
}
