//! CPU hotspots: a window's ranking of functions by self samples, and its
//! observations per `process`, `function` and `module`.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use crate::{
    alerts::signals::{CpuEvidence, Evidence, Observation, Signal, labels},
    profile::{Profile, hotspots},
};

/// Longest label value: demangled C++ names can run to kilobytes.
const MAX_LABEL: usize = 200;

/// Name given to the sum of all functions outside the top N.
pub const OTHER: &str = "[other]";

/// Functions kept per profile: shares below the smallest of these are too
/// small for any rule, and the set of series stays bounded.
pub const CPU_TOP: usize = 20;

/// Most frames kept of a stack in evidence (the leaf end).
pub const MAX_STACK_FRAMES: usize = 24;

/// One row of a window's ranking.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HotRow {
    /// Process name.
    pub process: String,
    /// Function name (or `module+0xoffset`).
    pub function: String,
    /// Binary or library.
    pub module: String,
    /// Samples with this function as the leaf.
    pub self_samples: u64,
    /// The processes' cgroup, container and unit (the daemon's, bounded).
    pub labels: crate::cgroup::CgroupLabels,
    /// The state the threads left the CPU in: off-CPU rows only (their
    /// "samples" are microseconds off the CPU).
    pub state: Option<crate::collectors::offcpu::ThreadState>,
}

/// A finished window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    /// Wall-clock end.
    pub end: Option<SystemTime>,
    /// Length.
    pub duration: Duration,
    /// Samples in it.
    pub samples: u64,
    /// The top N functions by self samples.
    pub top: Vec<HotRow>,
    /// Samples of every other function.
    pub other_samples: u64,
    /// Time spent reading, clearing and symbolizing it.
    pub processing: Duration,
    /// Values of each container label (cgroup, container_id, unit) folded
    /// into "other".
    pub labels_dropped: [u64; 3],
}

/// Ranks a window: the top `n` by self samples, the rest summed.
pub fn rank(profile: &Profile, n: usize) -> (Vec<HotRow>, u64) {
    let mut top = Vec::new();
    let mut in_top = 0u64;
    for h in hotspots(profile)
        .into_iter()
        .filter(|h| h.self_samples > 0)
        .take(n)
    {
        in_top += h.self_samples;
        top.push(HotRow {
            process: clip(h.process),
            function: clip(h.function),
            module: clip(h.module),
            self_samples: h.self_samples,
            labels: Default::default(),
            state: None,
        });
    }
    (top, profile.total_samples.saturating_sub(in_top))
}

/// `s` cut to [`MAX_LABEL`] bytes, with an ellipsis when cut.
pub fn clip(mut s: String) -> String {
    if s.len() > MAX_LABEL {
        let mut end = MAX_LABEL;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// The observation of one ranked function.
fn row_observation(row: &HotRow, total: u64, pids: Vec<u32>, stack: Vec<String>) -> Observation {
    Observation {
        signal: Signal::CpuSelfRatio,
        labels: labels([
            ("process", &row.process),
            ("function", &row.function),
            ("module", &row.module),
        ]),
        value: row.self_samples as f64 / total as f64,
        count: total,
        evidence: Evidence::Cpu(CpuEvidence {
            process: row.process.clone(),
            pids,
            function: row.function.clone(),
            module: row.module.clone(),
            self_samples: row.self_samples,
            total_samples: total,
            stack,
        }),
    }
}

/// One observation per ranked function of a window (the daemon keeps no
/// stacks between windows, so the evidence has none).
pub fn window_observations(w: &Window) -> Vec<Observation> {
    if w.samples == 0 {
        return Vec::new();
    }
    w.top
        .iter()
        .map(|r| row_observation(r, w.samples, Vec::new(), Vec::new()))
        .collect()
}

/// One observation per function among the `top` by self samples: its share
/// of the profile's samples, with its most frequent stack.
pub fn cpu_observations(profile: &Profile, top: usize) -> Vec<Observation> {
    let total = profile.total_samples;
    if total == 0 {
        return Vec::new();
    }
    let (rows, _) = rank(profile, top);
    rows.iter()
        .map(|h| {
            // The stack that ends in this function most often, and the PIDs.
            let mut best: Option<(u64, Vec<String>)> = None;
            let mut pids = BTreeSet::new();
            for s in &profile.stacks {
                let Some(leaf) = s.frames.last() else {
                    continue;
                };
                if clip(s.process.clone()) != h.process
                    || clip(leaf.module.clone()) != h.module
                    || clip(leaf.name()) != h.function
                {
                    continue;
                }
                pids.insert(s.pid);
                if best.as_ref().is_none_or(|(n, _)| s.count > *n) {
                    let skip = s.frames.len().saturating_sub(MAX_STACK_FRAMES);
                    let frames = s.frames[skip..].iter().map(|f| f.name()).collect();
                    best = Some((s.count, frames));
                }
            }
            row_observation(
                h,
                total,
                pids.into_iter().take(8).collect(),
                best.map(|(_, f)| f).unwrap_or_default(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::profile::{Frame, LostCounts, StackSample};

    fn frame(name: &str, module: &str) -> Arc<Frame> {
        Frame::named(name, module, false)
    }

    #[test]
    fn cpu_observations_carry_the_hottest_stack() {
        let stack = |pid, frames: &[&str], count| StackSample {
            state: None,
            pid,
            tid: pid,
            process: "app".into(),
            thread: "app".into(),
            frames: frames.iter().map(|f| frame(f, "app")).collect(),
            count,
        };
        let profile = Profile {
            kind: crate::profile::ProfileKind::Cpu,
            frequency_hz: 99,
            duration_secs: 10.0,
            start_unix_nanos: 0,
            cpus: 2,
            total_samples: 100,
            lost: LostCounts::default(),
            unwind: None,
            off_cpu: None,
            stacks: vec![
                stack(7, &["main", "a", "hot"], 50),
                stack(8, &["main", "b", "hot"], 20),
                stack(7, &["main", "cold"], 30),
            ],
        };
        let obs = cpu_observations(&profile, 10);
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].labels["function"], "hot");
        assert!((obs[0].value - 0.7).abs() < 1e-12);
        let Evidence::Cpu(e) = &obs[0].evidence else {
            panic!("{:?}", obs[0].evidence)
        };
        assert_eq!(e.stack, ["main", "a", "hot"]);
        assert_eq!(e.pids, [7, 8]);
        assert_eq!(cpu_observations(&profile, 1).len(), 1);
    }

    #[test]
    fn long_names_are_clipped() {
        let s = clip("x".repeat(1000));
        assert!(s.len() <= MAX_LABEL + '…'.len_utf8());
    }
}
