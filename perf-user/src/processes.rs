//! What we know of each sampled process, captured while it was alive.

use std::{collections::HashMap, fs};

use crate::procmaps::ProcessMaps;

/// A process as first seen.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    /// The process's name (`/proc/PID/comm` of its main thread).
    pub name: Option<String>,
    /// Its executable mappings; `None` when they could not be read.
    pub maps: Option<ProcessMaps>,
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
            };
            self.procs.insert(pid, info);
            new += 1;
        }
        new
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
