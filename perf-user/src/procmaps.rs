//! Executable mappings of a process from `/proc/PID/maps`, captured while the
//! process lives so that its stacks can be symbolized after it exits.

use std::{fs, io, path::PathBuf};

/// One executable mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// What backs it: a file, or a pseudo-name such as `[vdso]`.
    pub backing: Backing,
}

/// What a mapping's memory comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A file on disk (its path as the process saw it).
    File(PathBuf),
    /// A file that was deleted or replaced after it was mapped.
    DeletedFile(PathBuf),
    /// `[vdso]`, `[vsyscall]`, or anonymous memory (JIT code); the name to show.
    Pseudo(String),
}

impl Backing {
    /// Short name to show as the frame's module: the file name, or the pseudo-name.
    pub fn module_name(&self) -> String {
        match self {
            Backing::File(p) | Backing::DeletedFile(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            Backing::Pseudo(n) => n.clone(),
        }
    }
}

/// The executable mappings of one process, sorted by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessMaps {
    /// Mappings sorted by `start`.
    pub mappings: Vec<Mapping>,
}

impl ProcessMaps {
    /// Reads `/proc/PID/maps`.
    pub fn read(pid: u32) -> io::Result<Self> {
        Ok(Self::parse(&fs::read_to_string(format!(
            "/proc/{pid}/maps"
        ))?))
    }

    /// Parses the text of a maps file, keeping executable mappings only
    /// (stack addresses are code addresses). Malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut mappings: Vec<Mapping> = text.lines().filter_map(parse_line).collect();
        mappings.sort_by_key(|m| m.start);
        Self { mappings }
    }

    /// Adds what a later read of the same process shows: its mappings win
    /// where the two overlap (an exec, or a library loaded over an old one),
    /// and older ones elsewhere are kept, since a stack sampled before a
    /// `dlclose` may still point into them.
    pub fn merge(&mut self, newer: ProcessMaps) {
        let mut kept: Vec<Mapping> = std::mem::take(&mut self.mappings)
            .into_iter()
            .filter(|old| {
                !newer
                    .mappings
                    .iter()
                    .any(|n| n.start < old.end && old.start < n.end)
            })
            .collect();
        kept.extend(newer.mappings);
        kept.sort_by_key(|m| m.start);
        self.mappings = kept;
    }

    /// The mapping that holds `addr`.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        let m = self.mappings.get(i.checked_sub(1)?)?;
        (addr < m.end).then_some(m)
    }
}

fn parse_line(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim_start();
    if !perms.contains('x') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end <= start {
        return None;
    }
    let backing = if path.is_empty() {
        Backing::Pseudo("[anon]".into())
    } else if path.starts_with('[') || path.starts_with("/memfd:") {
        // memfd-backed code (e.g. a sealed copy of a runtime) has no path to open.
        Backing::Pseudo(path.to_string())
    } else if let Some(p) = path.strip_suffix(" (deleted)") {
        Backing::DeletedFile(PathBuf::from(p))
    } else {
        Backing::File(PathBuf::from(path))
    };
    Some(Mapping {
        start,
        end,
        offset,
        backing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d4c8a00000-55d4c8a01000 r--p 00000000 fe:00 123 /usr/bin/hot
55d4c8a01000-55d4c8a02000 r-xp 00001000 fe:00 123 /usr/bin/hot
7f0000000000-7f0000100000 r-xp 00028000 fe:00 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000201000 r-xp 00000000 00:00 0 
7ffd1000000-7ffd1002000 r-xp 00000000 00:00 0                          [vdso]
7f0000300000-7f0000301000 r-xp 00002000 fe:00 789 /tmp/old bin (deleted)
7f0000400000-7f0000401000 r-xp 00000000 00:01 790 /memfd:sealed-1 (deleted)
garbage line
";

    #[test]
    fn keeps_executable_mappings() {
        let m = ProcessMaps::parse(MAPS);
        assert_eq!(m.mappings.len(), 6);
        assert_eq!(
            m.find(0x7f0000400000).unwrap().backing,
            Backing::Pseudo("/memfd:sealed-1 (deleted)".into())
        );
        let hot = m.find(0x55d4c8a01010).unwrap();
        assert_eq!(hot.offset, 0x1000);
        assert_eq!(hot.backing.module_name(), "hot");
        assert!(m.find(0x55d4c8a00010).is_none(), "r--p is not code");
        assert_eq!(
            m.find(0x7ffd1000010).unwrap().backing,
            Backing::Pseudo("[vdso]".into())
        );
        assert_eq!(
            m.find(0x7f0000300000).unwrap().backing,
            Backing::DeletedFile("/tmp/old bin".into())
        );
        assert_eq!(
            m.find(0x7f0000200000).unwrap().backing.module_name(),
            "[anon]"
        );
    }

    #[test]
    fn merge_keeps_old_and_prefers_new_on_overlap() {
        let mut early = ProcessMaps::parse(
            "1000-2000 r-xp 00000000 fe:00 1 /bin/sh\n5000-6000 r-xp 00000000 fe:00 2 /lib/ld.so\n",
        );
        let later = ProcessMaps::parse(
            "1800-2800 r-xp 00000000 fe:00 3 /usr/bin/python3\n9000-a000 r-xp 00000000 fe:00 4 /lib/libpython.so\n",
        );
        early.merge(later);
        let names: Vec<String> = early
            .mappings
            .iter()
            .map(|m| m.backing.module_name())
            .collect();
        assert_eq!(names, ["python3", "ld.so", "libpython.so"]);
        assert_eq!(early.find(0x1100), None, "the replaced mapping is gone");
        assert_eq!(
            early.find(0x9100).unwrap().backing.module_name(),
            "libpython.so"
        );
    }

    #[test]
    fn addresses_outside_every_mapping_find_nothing() {
        let m = ProcessMaps::parse(MAPS);
        assert!(m.find(0).is_none());
        assert!(m.find(0x55d4c8a02000).is_none(), "end is exclusive");
        assert!(m.find(u64::MAX).is_none());
    }
}
