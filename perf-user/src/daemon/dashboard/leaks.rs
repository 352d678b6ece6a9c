//! The traced processes' outstanding heap for the dashboard: every
//! [`super::latency::STEP`] the leaks source's in-use stacks (as
//! `/debug/pprof/heap` serves them) are read, and the last minute of each
//! process's and each stack's outstanding bytes is kept, for their growth.
//! Bounded: [`MAX_PROCESSES`] processes, [`MAX_STACKS`] stacks each (the
//! largest), [`POINTS`] points each.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{LazyLock, Mutex},
};

use serde::Serialize;

use super::super::{heap_profile, leaks::LeaksSource, windows::lock};
use crate::observe::Reading;

/// Points kept: a minute of steps.
pub const POINTS: usize = 13;
/// Processes kept.
pub const MAX_PROCESSES: usize = 16;
/// Stacks kept per process.
pub const MAX_STACKS: usize = 20;

#[derive(Default)]
struct Stack {
    frames: Vec<String>,
    /// (time, bytes, allocations).
    points: VecDeque<(f64, u64, u64)>,
}

#[derive(Default)]
struct Process {
    name: String,
    outstanding_allocations: u64,
    /// (time, bytes of its stacks).
    points: VecDeque<(f64, u64)>,
    stacks: HashMap<String, Stack>,
}

static LEAKS: LazyLock<Mutex<BTreeMap<u32, Process>>> = LazyLock::new(Default::default);

fn push<T>(points: &mut VecDeque<T>, p: T) {
    points.push_back(p);
    while points.len() > POINTS {
        points.pop_front();
    }
}

/// Growth per minute over the points (first to last), if they span time.
fn per_minute(first: (f64, u64), last: (f64, u64)) -> Option<f64> {
    let dt = last.0 - first.0;
    (dt > 0.0).then(|| (last.1 as f64 - first.1 as f64) / dt * 60.0)
}

/// A stack as read: its key, frames, bytes and allocations.
type Read = (String, Vec<String>, u64, u64);

/// Reads the traced processes' in-use stacks at `t` (seconds since the
/// epoch).
pub fn sample(leaks: &LeaksSource, t: f64) {
    let heap = heap_profile::in_use(leaks, &|_, _, _| true);
    let counts: HashMap<u32, u64> = match leaks.read_processes() {
        Some(Reading::Leaks(ps)) => ps
            .iter()
            .map(|p| (p.pid, p.outstanding_allocations))
            .collect(),
        _ => HashMap::new(),
    };
    let mut now: BTreeMap<u32, (String, Vec<Read>)> = BTreeMap::new();
    for (s, &bytes) in heap.profile.stacks.iter().zip(&heap.bytes) {
        let frames: Vec<String> = s.frames.iter().map(|f| f.name().to_string()).collect();
        let e = now
            .entry(s.pid)
            .or_insert_with(|| (s.process.clone(), Vec::new()));
        e.1.push((frames.join(";"), frames, bytes, s.count));
    }
    for pid in counts.keys() {
        now.entry(*pid).or_default();
    }
    let mut all = lock(&LEAKS);
    all.retain(|pid, _| now.contains_key(pid));
    for (pid, (name, mut stacks)) in now.into_iter().take(MAX_PROCESSES) {
        stacks.sort_by_key(|s| std::cmp::Reverse(s.2));
        stacks.truncate(MAX_STACKS);
        let p = all.entry(pid).or_default();
        if !name.is_empty() {
            p.name = name;
        }
        p.outstanding_allocations = counts.get(&pid).copied().unwrap_or(0);
        push(&mut p.points, (t, stacks.iter().map(|s| s.2).sum()));
        p.stacks.retain(|k, _| stacks.iter().any(|s| &s.0 == k));
        for (key, frames, bytes, allocations) in stacks {
            let s = p.stacks.entry(key).or_default();
            s.frames = frames;
            push(&mut s.points, (t, bytes, allocations));
        }
    }
}

/// One traced process in `GET /api/v1/leaks`.
#[derive(Debug, Serialize)]
pub struct ProcessRow {
    pid: u32,
    process: String,
    outstanding_allocations: u64,
    outstanding_bytes: u64,
    growth_bytes_per_minute: Option<f64>,
    stacks: Vec<StackRow>,
}

/// One call stack of a traced process.
#[derive(Debug, Serialize)]
pub struct StackRow {
    frames: Vec<String>,
    bytes: u64,
    allocations: u64,
    growth_bytes_per_minute: Option<f64>,
}

/// Every traced process, its stacks by bytes outstanding.
pub fn rows() -> Vec<ProcessRow> {
    let all = lock(&LEAKS);
    all.iter()
        .map(|(pid, p)| {
            let first = p.points.front().copied().unwrap_or_default();
            let last = p.points.back().copied().unwrap_or_default();
            let mut stacks: Vec<StackRow> = p
                .stacks
                .values()
                .map(|s| {
                    let f = s.points.front().copied().unwrap_or_default();
                    let l = s.points.back().copied().unwrap_or_default();
                    StackRow {
                        frames: s.frames.clone(),
                        bytes: l.1,
                        allocations: l.2,
                        growth_bytes_per_minute: per_minute((f.0, f.1), (l.0, l.1)),
                    }
                })
                .collect();
            stacks.sort_by_key(|s| std::cmp::Reverse(s.bytes));
            ProcessRow {
                pid: *pid,
                process: p.name.clone(),
                outstanding_allocations: p.outstanding_allocations,
                outstanding_bytes: last.1,
                growth_bytes_per_minute: per_minute(first, last),
                stacks,
            }
        })
        .collect()
}
