//! Container labels (`cgroup`, `container_id`, `unit`) of the sampled
//! processes, and their bound: each label keeps its N values with the most
//! samples, the others become [`OTHER`], so that a host that starts a new
//! container every minute does not grow a new series every minute.

use std::collections::HashMap;

use super::exposition::{Family, Kind};
use crate::{
    cgroup::{self, CgroupLabels},
    collectors::offcpu::ThreadState,
    observe::{
        self,
        cpu::{HotRow, Window, clip},
    },
    profile::{Profile, StackSample},
};

/// The value that stands for every value beyond the bound.
pub const OTHER: &str = "other";

/// The label names, in the order they are exported.
pub const NAMES: [&str; 3] = ["cgroup", "container_id", "unit"];

/// Labels per PID, read from `/proc/PID/cgroup`; kept after the process
/// exits (its samples may be labelled after that) until [`LabelCache::retain`].
#[derive(Debug, Default)]
pub struct LabelCache {
    by_pid: HashMap<u32, CgroupLabels>,
}

impl LabelCache {
    /// Reads the labels of `pids` again: a process can be moved to another
    /// cgroup at any time. A PID that cannot be read (exited) keeps what
    /// was read before.
    pub fn refresh(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            if pid == 0 {
                continue;
            }
            if let Ok(l) = cgroup::read(pid) {
                self.by_pid.insert(pid, l);
            }
        }
    }

    /// Reads the labels of PIDs not seen before.
    pub fn add_new(&mut self, pids: impl IntoIterator<Item = u32>) {
        let new: Vec<u32> = pids
            .into_iter()
            .filter(|p| !self.by_pid.contains_key(p))
            .collect();
        self.refresh(new);
    }

    /// The labels of `pid` (empty when never read: the idle task, or a
    /// process that exited before it could be).
    pub fn get(&self, pid: u32) -> CgroupLabels {
        self.by_pid.get(&pid).cloned().unwrap_or_default()
    }

    /// A copy of the labels of `pids`.
    pub fn subset(&self, pids: impl IntoIterator<Item = u32>) -> LabelCache {
        LabelCache {
            by_pid: pids
                .into_iter()
                .filter_map(|p| Some((p, self.by_pid.get(&p)?.clone())))
                .collect(),
        }
    }

    /// Forgets the PIDs for which `keep` is false.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.by_pid.retain(|pid, _| keep(*pid));
    }
}

/// Distinct values of each label replaced by [`OTHER`], in [`NAMES`] order.
pub type Dropped = [u64; 3];

/// The bound applied to one set of samples: the kept values of each label.
#[derive(Debug, Default)]
pub struct Bound {
    kept: [std::collections::HashSet<String>; 3],
    /// Values folded into [`OTHER`], per label.
    pub dropped: Dropped,
}

fn fields(l: &CgroupLabels) -> [&String; 3] {
    [&l.cgroup, &l.container_id, &l.unit]
}

impl Bound {
    /// Keeps, for each label, the `n` values with the most weight (ties by
    /// value, so the choice is stable). The empty value (no container, no
    /// unit) is no value and always kept.
    pub fn new<'a>(weights: impl IntoIterator<Item = (&'a CgroupLabels, u64)>, n: usize) -> Self {
        let mut totals: [HashMap<&String, u64>; 3] = Default::default();
        for (labels, w) in weights {
            for (t, v) in totals.iter_mut().zip(fields(labels)) {
                if !v.is_empty() {
                    *t.entry(v).or_default() += w;
                }
            }
        }
        let mut bound = Bound::default();
        for (i, t) in totals.into_iter().enumerate() {
            let mut values: Vec<(&String, u64)> = t.into_iter().collect();
            values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            bound.dropped[i] = values.len().saturating_sub(n) as u64;
            bound.kept[i] = values.into_iter().take(n).map(|(v, _)| v.clone()).collect();
        }
        bound
    }

    /// `labels` with the values beyond the bound replaced by [`OTHER`].
    pub fn apply(&self, labels: &CgroupLabels) -> CgroupLabels {
        let pick = |i: usize, v: &String| {
            if v.is_empty() || self.kept[i].contains(v) {
                v.clone()
            } else {
                OTHER.to_string()
            }
        };
        CgroupLabels {
            cgroup: pick(0, &labels.cgroup),
            container_id: pick(1, &labels.container_id),
            unit: pick(2, &labels.unit),
        }
    }
}

/// The labels as (name, value) pairs, in [`NAMES`] order.
pub fn pairs(l: CgroupLabels) -> [(&'static str, String); 3] {
    [
        (NAMES[0], l.cgroup),
        (NAMES[1], l.container_id),
        (NAMES[2], l.unit),
    ]
}

/// Ranks a window as [`crate::observe::cpu::rank`] does, per function and
/// set of container labels (`by_pid`, bounded already): the top `n` rows by
/// self samples (the leaf function), the rest summed.
pub fn rank(
    profile: &Profile,
    n: usize,
    by_pid: &HashMap<u32, CgroupLabels>,
) -> (Vec<HotRow>, u64) {
    rank_by(profile, n, by_pid, &|s| {
        s.frames.last().map(|f| (f.name(), f.module.clone()))
    })
}

/// The function (and its module) a stack's count is attributed to; `None`:
/// to no row (the count goes to the rest).
pub type Attribute<'a> = &'a dyn Fn(&StackSample) -> Option<(String, String)>;

/// Ranks a window by process, the function `attribute` picks, state and
/// container labels (`by_pid`, bounded already): the top `n` rows, and the
/// rest of `profile.total_samples` summed.
pub fn rank_by(
    profile: &Profile,
    n: usize,
    by_pid: &HashMap<u32, CgroupLabels>,
    attribute: Attribute<'_>,
) -> (Vec<HotRow>, u64) {
    type Key = (CgroupLabels, String, String, String, Option<ThreadState>);
    let mut sums: HashMap<Key, u64> = HashMap::new();
    for s in &profile.stacks {
        let Some((function, module)) = attribute(s) else {
            continue;
        };
        let l = by_pid.get(&s.pid).cloned().unwrap_or_default();
        let key = (
            l,
            clip(s.process.clone()),
            clip(function),
            clip(module),
            s.state,
        );
        *sums.entry(key).or_default() += s.count;
    }
    let mut rows: Vec<HotRow> = sums
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|((labels, process, function, module, state), n)| HotRow {
            process,
            function,
            module,
            self_samples: n,
            labels,
            state,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.self_samples
            .cmp(&a.self_samples)
            .then_with(|| a.function.cmp(&b.function))
            .then_with(|| a.process.cmp(&b.process))
            .then_with(|| a.labels.cmp(&b.labels))
            .then_with(|| a.module.cmp(&b.module))
            .then_with(|| a.state.cmp(&b.state))
    });
    rows.truncate(n);
    let in_top: u64 = rows.iter().map(|r| r.self_samples).sum();
    (rows, profile.total_samples.saturating_sub(in_top))
}

/// A window's series: each top row's labels (process, function, module,
/// `state` when `with_state`, the container labels) and value, then the
/// rest as function="[other]" when there is any.
pub fn window_series(w: &Window, with_state: bool) -> Vec<(Vec<(&'static str, String)>, u64)> {
    let other = HotRow {
        function: observe::cpu::OTHER.to_string(),
        self_samples: w.other_samples,
        ..HotRow::default()
    };
    w.top
        .iter()
        .chain((w.other_samples > 0).then_some(&other))
        .map(|r| {
            let mut labels = vec![
                ("process", r.process.clone()),
                ("function", r.function.clone()),
                ("module", r.module.clone()),
            ];
            if with_state {
                labels.push(("state", r.state.map(|s| s.name()).unwrap_or("").into()));
            }
            labels.extend(pairs(r.labels.clone()));
            (labels, r.self_samples)
        })
        .collect()
}

/// Each PID's labels in `profile`, the values beyond the `n` with the
/// most samples folded into "other"; `cache` must hold the profile's PIDs
/// (see [`LabelCache::refresh`]).
pub fn bounded(
    profile: &Profile,
    cache: &LabelCache,
    n: u32,
) -> (HashMap<u32, CgroupLabels>, Dropped) {
    let mut weights: HashMap<u32, (CgroupLabels, u64)> = HashMap::new();
    for s in &profile.stacks {
        weights
            .entry(s.pid)
            .or_insert_with(|| (cache.get(s.pid), 0))
            .1 += s.count;
    }
    let bound = Bound::new(weights.values().map(|(l, w)| (l, *w)), n as usize);
    let labels = weights
        .into_iter()
        .map(|(pid, (l, _))| (pid, bound.apply(&l)))
        .collect();
    (labels, bound.dropped)
}

/// A `*_label_values_dropped` family: how many values of each label were
/// folded into "other".
pub fn dropped_family(name: &'static str, help: &'static str, dropped: &Dropped) -> Family {
    let mut f = Family::new(name, Kind::Gauge, help);
    for (label, n) in NAMES.iter().zip(dropped) {
        f.push(vec![("label", (*label).to_string())], *n as f64);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(cgroup: &str, id: &str, unit: &str) -> CgroupLabels {
        CgroupLabels {
            cgroup: cgroup.into(),
            container_id: id.into(),
            unit: unit.into(),
        }
    }

    #[test]
    fn top_n_values_per_label_and_the_rest_other() {
        let a = l("/a/x.service", "", "x.service");
        let b = l("/b/y.service", "docker://b", "y.service");
        let c = l("/c", "docker://c", "");
        let bound = Bound::new([(&a, 50), (&b, 30), (&c, 10)], 2);
        // cgroup: 3 values, 1 dropped; container_id: 2 kept; unit: 2 kept.
        assert_eq!(bound.dropped, [1, 0, 0]);
        assert_eq!(bound.apply(&a), a);
        assert_eq!(bound.apply(&c), l(OTHER, "docker://c", ""));
        let bound = Bound::new([(&a, 50), (&b, 30), (&c, 10)], 1);
        assert_eq!(bound.dropped, [2, 1, 1]);
        assert_eq!(bound.apply(&b), l(OTHER, "docker://b", OTHER));
        assert_eq!(bound.apply(&c), l(OTHER, OTHER, ""));
    }

    #[test]
    fn own_labels_are_cached_and_kept_after_a_failed_read() {
        let mut cache = LabelCache::default();
        let me = std::process::id();
        cache.add_new([me, 0, u32::MAX]);
        assert!(cache.get(me).cgroup.starts_with('/'));
        assert_eq!(cache.get(u32::MAX), CgroupLabels::default());
        cache.retain(|p| p != me);
        assert_eq!(cache.get(me), CgroupLabels::default());
    }
}
