//! What is known of the traced process, captured while it runs so that its
//! stacks can be symbolized after it exits: its name, executable and code
//! mappings, refreshed as it loads libraries and replaced when it runs
//! execve().

use std::{fs, path::PathBuf};

use crate::procmaps::ProcessMaps;

/// The traced process as last seen.
#[derive(Clone, Debug, Default)]
pub struct TracedProcess {
    /// PID (thread-group id).
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub name: Option<String>,
    /// `/proc/PID/exe`.
    pub exe: Option<PathBuf>,
    /// Code mappings of the current image: every read merged, so that a
    /// library unloaded meanwhile can still name its frames.
    pub maps: ProcessMaps,
    /// The image (execve count) `maps` belong to.
    pub generation: u32,
}

impl TracedProcess {
    /// Nothing captured yet.
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            ..Self::default()
        }
    }

    /// Reads the process again. Maps of the same image are merged with what
    /// was seen before; a new image (after execve()) replaces them. Returns
    /// false when the process could not be read (it has exited).
    pub fn refresh(&mut self, generation: u32) -> bool {
        let Ok(maps) = ProcessMaps::read(self.pid) else {
            return false;
        };
        // A zombie's maps are empty: keep what was captured while it lived.
        if maps.mappings.is_empty() {
            return false;
        }
        if let Ok(name) = fs::read_to_string(format!("/proc/{}/comm", self.pid)) {
            self.name = Some(name.trim_end().to_string());
        }
        if let Ok(exe) = fs::read_link(format!("/proc/{}/exe", self.pid)) {
            self.exe = Some(exe);
        }
        if generation != self.generation || self.maps.mappings.is_empty() {
            self.maps = maps;
            self.generation = generation;
        } else {
            self.maps = merge(&self.maps, maps);
        }
        true
    }

    /// `PID 42 (name)`, for messages.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("PID {} ({n})", self.pid),
            None => format!("PID {}", self.pid),
        }
    }
}

/// `new` plus the mappings of `old` that overlap none of `new`'s (a library
/// unloaded since): newer mappings win where they overlap.
pub fn merge(old: &ProcessMaps, new: ProcessMaps) -> ProcessMaps {
    let mut mappings = new.mappings;
    let kept: Vec<_> = old
        .mappings
        .iter()
        .filter(|o| !mappings.iter().any(|n| o.start < n.end && n.start < o.end))
        .cloned()
        .collect();
    mappings.extend(kept);
    mappings.sort_by_key(|m| m.start);
    ProcessMaps {
        mappings,
        process: new.process.or_else(|| old.process.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procmaps::{Backing, Mapping};

    fn m(start: u64, end: u64, name: &str) -> Mapping {
        Mapping {
            start,
            end,
            offset: 0,
            backing: Backing::File(name.into()),
        }
    }

    #[test]
    fn unloaded_libraries_stay_and_newer_mappings_win() {
        let old = ProcessMaps {
            mappings: vec![m(0x1000, 0x2000, "/a"), m(0x5000, 0x6000, "/gone")],
            ..Default::default()
        };
        let new = ProcessMaps {
            mappings: vec![m(0x1000, 0x2000, "/a"), m(0x5800, 0x7000, "/new")],
            ..Default::default()
        };
        let merged = merge(&old, new);
        let names: Vec<String> = merged
            .mappings
            .iter()
            .map(|m| m.backing.module_name())
            .collect();
        assert_eq!(names, ["a", "new"]);
        let old = ProcessMaps {
            mappings: vec![m(0x9000, 0xa000, "/gone")],
            ..Default::default()
        };
        let merged = merge(&old, ProcessMaps::default());
        assert_eq!(merged.mappings.len(), 1);
        assert_eq!(merged.find(0x9100).unwrap().backing.module_name(), "gone");
    }

    #[test]
    fn reads_this_process() {
        let mut p = TracedProcess::new(std::process::id());
        assert!(p.refresh(0));
        assert!(!p.maps.mappings.is_empty());
        assert!(p.exe.is_some());
        assert!(p.describe().starts_with("PID "));
        assert!(!TracedProcess::new(u32::MAX).refresh(0));
    }
}
