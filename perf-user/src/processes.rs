//! What we know of each sampled process, captured while it was alive.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
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
}

/// How long after its capture a process's maps are read again, once each.
///
/// A process is announced at its first sample, which for a new program is
/// often while the dynamic loader still maps its libraries (or, for a child
/// of a shell, before its exec). The first re-read, soon after, catches what
/// the loader mapped while a short process still lives (measured: 200
/// processes of 35 ms of CPU each had 5.7% of their samples with an unknown
/// libc caller when the first re-read came at 150 ms, after they had
/// exited); the next two the libraries a program opens as it starts
/// (plugins, Python extensions). Three reads more, not one every redraw: on
/// a host that starts compilers all the time, reading maps was most of the
/// profiler's CPU.
pub const REREADS: [Duration; 3] = [
    Duration::from_millis(10),
    Duration::from_millis(150),
    Duration::from_secs(1),
];

/// Processes captured so far, by PID.
#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcessInfo>,
    /// Re-reads still to do, soonest first.
    rereads: BinaryHeap<Reverse<(Instant, u32)>>,
}

impl ProcessTable {
    /// Captures name and maps of each PID not captured yet, and schedules
    /// its [`REREADS`] (done by [`ProcessTable::reread_due`]); returns how
    /// many were new.
    pub fn capture(&mut self, pids: impl IntoIterator<Item = u32>) -> usize {
        self.capture_inner(pids, true)
    }

    fn capture_inner(&mut self, pids: impl IntoIterator<Item = u32>, reread: bool) -> usize {
        let mut new = 0;
        for pid in pids {
            if pid == 0 || self.procs.contains_key(&pid) {
                continue;
            }
            let now = Instant::now();
            if reread {
                self.rereads
                    .extend(REREADS.iter().map(|&after| Reverse((now + after, pid))));
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

    /// Does the scheduled re-reads that are due (see [`REREADS`]).
    pub fn reread_due(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, pid))) = self.rereads.peek() {
            if at > now {
                break;
            }
            self.rereads.pop();
            if let Some(info) = self.procs.get_mut(&pid) {
                reread(pid, info);
            }
        }
    }

    /// When the next scheduled re-read falls due, if any: a caller sleeps
    /// until then rather than waking on a timer.
    pub fn next_reread(&self) -> Option<Instant> {
        self.rereads.peek().map(|Reverse((at, _))| *at)
    }

    /// Re-reads the maps of every captured process still alive, for the
    /// report: libraries opened late in a long run are then known too.
    pub fn reread_live(&mut self) {
        self.rereads.clear();
        for (&pid, info) in &mut self.procs {
            reread(pid, info);
        }
    }

    /// Forgets processes that have exited and re-reads the others' names
    /// and maps. For a caller that keeps one table for a long time (the
    /// daemon): the table then holds only live processes, with their maps as
    /// they are now (after any dlopen or exec). Returns the PIDs forgotten.
    pub fn refresh(&mut self) -> Vec<u32> {
        let (live, exited): (Vec<u32>, Vec<u32>) =
            self.procs.keys().copied().partition(|&p| exists(p));
        self.procs.clear();
        // Just read: no need for the young-process re-reads.
        self.capture_inner(live, false);
        exited
    }

    /// What was captured of `pid`.
    pub fn get(&self, pid: u32) -> Option<&ProcessInfo> {
        self.procs.get(&pid)
    }

    /// A copy of what was captured of `pids` (no re-reads scheduled): to
    /// symbolize with while this table goes on capturing.
    pub fn subset(&self, pids: impl IntoIterator<Item = u32>) -> ProcessTable {
        ProcessTable {
            procs: pids
                .into_iter()
                .filter_map(|pid| Some((pid, self.procs.get(&pid)?.clone())))
                .collect(),
            rereads: BinaryHeap::new(),
        }
    }

    /// Adds what `other` captured of processes this table does not have.
    pub fn absorb(&mut self, other: ProcessTable) {
        for (pid, info) in other.procs {
            self.procs.entry(pid).or_insert(info);
        }
    }

    /// Number of processes captured.
    pub fn len(&self) -> usize {
        self.procs.len()
    }
}

/// Reads `pid`'s maps again and merges them into what was captured. Old
/// mappings are kept (see [`ProcessMaps::merge`]), so stacks sampled early
/// still resolve. A process that is gone keeps what was captured.
fn reread(pid: u32, info: &mut ProcessInfo) {
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

/// True when a process with this PID exists now.
pub fn exists(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// PIDs of running processes whose name (`/proc/PID/comm`) is one of `names`.
pub fn find_by_name(names: &[String]) -> Vec<(u32, String)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    let mut out: Vec<(u32, String)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter_map(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim_end();
            names
                .iter()
                .any(|n| n == comm)
                .then(|| (pid, comm.to_string()))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_processes_by_name_but_not_itself() {
        let own = fs::read_to_string("/proc/self/comm").unwrap();
        let found = find_by_name(&[own.trim_end().to_string()]);
        assert!(found.iter().all(|(pid, _)| *pid != std::process::id()));
        assert!(find_by_name(&["no-such-process-name".into()]).is_empty());
    }
}
