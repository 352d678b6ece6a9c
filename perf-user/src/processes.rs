//! What we know of each sampled process, captured while it was alive.

use std::{
    collections::HashMap,
    fs,
    time::{Duration, Instant},
};

use crate::procmaps::ProcessMaps;

/// A process as first seen.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    /// The process's name (`/proc/PID/comm` of its main thread).
    pub name: Option<String>,
    /// Its executable mappings; `None` when they could not be read.
    pub maps: Option<ProcessMaps>,
    /// When it was first captured.
    pub first_seen: Option<Instant>,
}

/// Processes captured so far, by PID.
#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcessInfo>,
}

impl ProcessTable {
    /// Captures name and maps of each PID not captured yet; returns how many were new.
    pub fn capture(&mut self, pids: impl IntoIterator<Item = u32>) -> usize {
        let mut new = 0;
        for pid in pids {
            if pid == 0 || self.procs.contains_key(&pid) {
                continue;
            }
            // Read failures (the process is already gone) leave `None`: its
            // frames are then shown by address, never guessed.
            let info = ProcessInfo {
                name: fs::read_to_string(format!("/proc/{pid}/comm"))
                    .ok()
                    .map(|s| s.trim_end().to_string()),
                maps: ProcessMaps::read(pid).ok(),
                first_seen: Some(Instant::now()),
            };
            self.procs.insert(pid, info);
            new += 1;
        }
        new
    }

    /// Re-reads the maps of live processes first seen less than `max_age`
    /// ago (all of them with `None`), merging them into what was captured.
    ///
    /// A process is announced at its first sample, which for a new program is
    /// often while the dynamic loader still maps its libraries; its maps are
    /// complete only a little later. Old mappings are kept (see
    /// [`ProcessMaps::merge`]), so stacks sampled early still resolve.
    pub fn update_recent(&mut self, max_age: Option<Duration>) {
        for (&pid, info) in &mut self.procs {
            let young = match (max_age, info.first_seen) {
                (None, _) => true,
                (Some(age), Some(seen)) => seen.elapsed() < age,
                (Some(_), None) => false,
            };
            if !young {
                continue;
            }
            if let Ok(now) = ProcessMaps::read(pid) {
                match &mut info.maps {
                    Some(maps) => maps.merge(now),
                    None => info.maps = Some(now),
                }
                if let Ok(name) = fs::read_to_string(format!("/proc/{pid}/comm")) {
                    info.name = Some(name.trim_end().to_string());
                }
            }
        }
    }

    /// Forgets processes that have exited and re-reads the others' names
    /// and maps. For a caller that keeps one table for a long time (the
    /// daemon): the table then holds only live processes, with their maps as
    /// they are now (after any dlopen or exec).
    pub fn refresh(&mut self) {
        let live: Vec<u32> = self.procs.keys().copied().filter(|&p| exists(p)).collect();
        self.procs.clear();
        self.capture(live);
    }

    /// What was captured of `pid`.
    pub fn get(&self, pid: u32) -> Option<&ProcessInfo> {
        self.procs.get(&pid)
    }

    /// Number of processes captured.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// True when none was captured.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }
}

/// True when a process with this PID exists now.
pub fn exists(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}
