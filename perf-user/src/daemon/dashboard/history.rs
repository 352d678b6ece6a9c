//! The CPU windows the dashboard shows: each closed window's stacks in
//! folded form, kept for [`KEEP`] (bounded in count and size), merged on
//! request into the last 10 s, 1 min or 5 min.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use crate::{cgroup::CgroupLabels, output::folded, profile::Profile};

use super::super::{pprof_endpoint::Query, windows::lock};

/// How far back the dashboard can look.
pub const KEEP: Duration = Duration::from_secs(300);
/// Most windows kept (the shortest window is 5 s: 60 fill [`KEEP`]).
pub const MAX_WINDOWS: usize = 64;
/// Most distinct stacks kept per window (the heaviest); the rest are
/// counted in [`FoldedWindow::dropped_samples`].
pub const MAX_STACKS: usize = 5_000;
/// Most bytes of stacks kept per window (the heaviest stacks first): deep
/// C++ or Rust stacks fold into lines of kilobytes.
pub const MAX_WINDOW_BYTES: usize = 1 << 20;
/// Most bytes of stacks kept in all: the oldest windows go first (the
/// newest is always kept), so on a busy host "5 min" may cover less; the
/// answers say how much they cover.
pub const MAX_HISTORY_BYTES: usize = 4 << 20;

/// What a stack costs in memory, roughly.
fn cost(s: &FoldedStack) -> usize {
    s.line.len() + s.process.len() + std::mem::size_of::<FoldedStack>()
}

/// One process's stack in a window.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedStack {
    /// Process ID.
    pub pid: u32,
    /// Process name (the folded line starts with it too).
    pub process: String,
    /// Its cgroup, container and unit (bounded as the metrics' labels are).
    pub labels: Arc<CgroupLabels>,
    /// `process;root;...;leaf`.
    pub line: String,
    /// Samples.
    pub count: u64,
}

/// A closed window's stacks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FoldedWindow {
    /// Wall-clock end.
    pub end: Option<SystemTime>,
    /// Length.
    pub duration: Duration,
    /// Samples in it.
    pub samples: u64,
    /// Samples of the stacks beyond [`MAX_STACKS`] or [`MAX_WINDOW_BYTES`].
    pub dropped_samples: u64,
    /// What its stacks cost in memory, roughly.
    pub bytes: usize,
    /// Its stacks, heaviest first.
    pub stacks: Vec<FoldedStack>,
}

impl FoldedWindow {
    /// The stacks of `profile`, per process, with each PID's labels.
    pub fn of(
        profile: &Profile,
        labels: &HashMap<u32, CgroupLabels>,
        end: SystemTime,
        duration: Duration,
    ) -> Self {
        let mut merged: HashMap<(u32, String), (String, u64)> = HashMap::new();
        for s in &profile.stacks {
            let e = merged
                .entry((s.pid, folded::line(s)))
                .or_insert_with(|| (s.process.clone(), 0));
            e.1 += s.count;
        }
        let mut shared: HashMap<u32, Arc<CgroupLabels>> = HashMap::new();
        let mut stacks: Vec<FoldedStack> =
            merged
                .into_iter()
                .map(|((pid, line), (process, count))| FoldedStack {
                    pid,
                    process,
                    labels: Arc::clone(shared.entry(pid).or_insert_with(|| {
                        Arc::new(labels.get(&pid).cloned().unwrap_or_default())
                    })),
                    line,
                    count,
                })
                .collect();
        stacks.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.line.cmp(&b.line)));
        let mut bytes = 0;
        let kept = stacks
            .iter()
            .take(MAX_STACKS)
            .take_while(|s| {
                bytes += cost(s);
                bytes <= MAX_WINDOW_BYTES
            })
            .count();
        let dropped_samples = stacks.iter().skip(kept).map(|s| s.count).sum();
        stacks.truncate(kept);
        stacks.shrink_to_fit();
        let bytes = stacks.iter().map(cost).sum();
        FoldedWindow {
            end: Some(end),
            duration,
            samples: profile.total_samples,
            dropped_samples,
            bytes,
            stacks,
        }
    }
}

/// The last windows, newest last.
#[derive(Default)]
pub struct History {
    windows: Mutex<VecDeque<Arc<FoldedWindow>>>,
}

impl History {
    /// Adds a closed window and forgets those older than [`KEEP`].
    pub fn push(&self, w: FoldedWindow) {
        let mut windows = lock(&self.windows);
        let end = w.end;
        windows.push_back(Arc::new(w));
        while windows.len() > MAX_WINDOWS
            || (windows.len() > 1
                && windows.iter().map(|w| w.bytes).sum::<usize>() > MAX_HISTORY_BYTES)
            || windows.front().is_some_and(|f| {
                end.zip(f.end)
                    .and_then(|(e, fe)| e.duration_since(fe).ok())
                    .is_some_and(|age| age + f.duration > KEEP)
            })
        {
            windows.pop_front();
        }
    }

    /// The windows that ended less than `span` before the newest ended
    /// (the newest always), oldest first.
    pub fn last(&self, span: Duration) -> Vec<Arc<FoldedWindow>> {
        let windows = lock(&self.windows);
        let Some(newest) = windows.back().and_then(|w| w.end) else {
            return windows.back().cloned().into_iter().collect();
        };
        windows
            .iter()
            .filter(|w| {
                w.end
                    .and_then(|e| newest.duration_since(e).ok())
                    .is_some_and(|age| age < span)
            })
            .cloned()
            .collect()
    }
}

/// A hotspot row: a function of a process.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Hotspot {
    /// Process name.
    pub process: String,
    /// Function (frame name as in the flame graph).
    pub function: String,
    /// Samples with it as the leaf.
    pub self_samples: u64,
    /// Samples with it anywhere on the stack.
    pub total_samples: u64,
}

/// What a selection of windows and processes adds up to.
#[derive(Debug, Default)]
pub struct Selected {
    /// Samples kept.
    pub samples: u64,
    /// Folded lines (`stack count`), merged across processes, sorted.
    pub folded: Vec<String>,
    /// Per process name: PIDs and samples.
    pub processes: BTreeMap<String, (Vec<u32>, u64)>,
    /// Per cgroup: samples.
    pub cgroups: BTreeMap<String, u64>,
    /// Per unit: samples.
    pub units: BTreeMap<String, u64>,
}

/// Merges the stacks of `windows` that `query` keeps.
pub fn select(windows: &[Arc<FoldedWindow>], query: &Query) -> Selected {
    let mut out = Selected::default();
    let mut lines: BTreeMap<&str, u64> = BTreeMap::new();
    for s in windows.iter().flat_map(|w| &w.stacks) {
        if !query.keeps(s.pid, &s.process, Some(&s.process), &s.labels) {
            continue;
        }
        out.samples += s.count;
        *lines.entry(&s.line).or_default() += s.count;
        let p = out.processes.entry(s.process.clone()).or_default();
        if !p.0.contains(&s.pid) {
            p.0.push(s.pid);
        }
        p.1 += s.count;
        if !s.labels.cgroup.is_empty() {
            *out.cgroups.entry(s.labels.cgroup.clone()).or_default() += s.count;
        }
        if !s.labels.unit.is_empty() {
            *out.units.entry(s.labels.unit.clone()).or_default() += s.count;
        }
    }
    out.folded = lines
        .into_iter()
        .map(|(line, n)| format!("{line} {n}"))
        .collect();
    out
}

/// The `n` functions with the most self samples in folded `lines`.
pub fn hotspots(lines: &[String], n: usize) -> Vec<Hotspot> {
    let mut by: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
    for l in lines {
        let Some((stack, count)) = l.rsplit_once(' ') else {
            continue;
        };
        let count: u64 = count.parse().unwrap_or(0);
        let mut frames = stack.split(';');
        let process = frames.next().unwrap_or("");
        let frames: Vec<&str> = frames.collect();
        let mut seen: Vec<&str> = Vec::with_capacity(frames.len());
        for f in &frames {
            if !seen.contains(f) {
                seen.push(f);
                by.entry((process, f)).or_default().1 += count;
            }
        }
        if let Some(leaf) = frames.last() {
            by.entry((process, leaf)).or_default().0 += count;
        }
    }
    let mut rows: Vec<Hotspot> = by
        .into_iter()
        .filter(|(_, (s, _))| *s > 0)
        .map(|((process, function), (s, t))| Hotspot {
            process: process.to_string(),
            function: function.to_string(),
            self_samples: s,
            total_samples: t,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.self_samples
            .cmp(&a.self_samples)
            .then_with(|| a.function.cmp(&b.function))
    });
    rows.truncate(n);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(end_secs: u64, stacks: &[(u32, &str, u64)]) -> FoldedWindow {
        FoldedWindow {
            end: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(end_secs)),
            duration: Duration::from_secs(10),
            samples: stacks.iter().map(|s| s.2).sum(),
            dropped_samples: 0,
            bytes: 0,
            stacks: stacks
                .iter()
                .map(|(pid, line, count)| FoldedStack {
                    pid: *pid,
                    process: line.split(';').next().unwrap().into(),
                    labels: Arc::new(CgroupLabels::from_path("/test.slice/a.service")),
                    line: (*line).into(),
                    count: *count,
                })
                .collect(),
        }
    }

    #[test]
    fn keeps_five_minutes_and_selects_by_span() {
        let h = History::default();
        for i in 0..40 {
            h.push(window(1000 + i * 10, &[(1, "app;main;hot", 1)]));
        }
        assert_eq!(h.last(KEEP).len(), 30);
        assert_eq!(h.last(Duration::from_secs(10)).len(), 1);
        assert_eq!(h.last(Duration::from_secs(60)).len(), 6);
        // Over the byte budget, the oldest go first; the newest stays.
        let mut big = window(1395, &[(1, "app;main;hot", 1)]);
        big.bytes = MAX_HISTORY_BYTES + 1;
        h.push(big);
        assert_eq!(h.last(KEEP).len(), 1);
    }

    #[test]
    fn merges_filters_and_ranks() {
        let w = Arc::new(window(
            10,
            &[
                (1, "app;main;hot", 7),
                (2, "app;main;cold", 2),
                (3, "other;main;hot", 5),
            ],
        ));
        let all = select(std::slice::from_ref(&w), &Query::default());
        assert_eq!(all.samples, 14);
        assert_eq!(all.processes["app"], (vec![1, 2], 9));
        let rows = hotspots(&all.folded, 10);
        assert_eq!(rows[0].function, "hot");
        assert_eq!(rows[0].process, "app");
        assert_eq!((rows[0].self_samples, rows[0].total_samples), (7, 7));
        let q = Query {
            pids: vec![3],
            ..Query::default()
        };
        let one = select(&[w], &q);
        assert_eq!(one.folded, ["other;main;hot 5"]);
    }
}
