//! Perf map files: `/tmp/perf-PID.map`, which JIT compilers (Node.js with
//! `--perf-basic-prof`, a JVM with a perf map agent, Python 3.12+ with
//! `-X perf`) write to name the code they generate in anonymous memory.
//! One line per function: `START SIZE name`, hex without `0x`.

use std::{io::BufRead as _, path::Path};

/// The functions of one perf map, sorted by start.
#[derive(Clone, Debug, Default)]
pub struct PerfMap {
    /// (start, end, name).
    functions: Vec<(u64, u64, String)>,
}

/// Largest perf map read (a long-running JIT appends without end).
const MAX_BYTES: u64 = 256 << 20;

impl PerfMap {
    /// Reads a perf map; malformed lines are skipped.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        use std::io::Read as _;
        let file = std::fs::File::open(path)?;
        let mut functions = Vec::new();
        for line in std::io::BufReader::new(file.take(MAX_BYTES)).split(b'\n') {
            if let Some(f) = parse_line(&line?) {
                functions.push(f);
            }
        }
        Ok(Self::new(functions))
    }

    fn new(mut functions: Vec<(u64, u64, String)>) -> Self {
        // A JIT may write a function again at the same place after
        // recompiling it; the later line is the one in force.
        let mut seq: Vec<(usize, (u64, u64, String))> = functions.drain(..).enumerate().collect();
        seq.sort_by_key(|(i, f)| (f.0, std::cmp::Reverse(*i)));
        seq.dedup_by_key(|(_, f)| f.0);
        Self {
            functions: seq.into_iter().map(|(_, f)| f).collect(),
        }
    }

    /// The function holding `addr`: the one that starts last at or below it
    /// and is long enough to hold it.
    pub fn find(&self, addr: u64) -> Option<&str> {
        let i = self.functions.partition_point(|f| f.0 <= addr);
        self.functions[..i]
            .iter()
            .rev()
            .take(16)
            .find(|f| addr < f.1)
            .map(|f| f.2.as_str())
    }

    /// Number of functions.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// True when it names nothing.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }
}

fn parse_line(line: &[u8]) -> Option<(u64, u64, String)> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.split_once(' ')?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let (start, size) = (hex(start)?, hex(size)?);
    let name = name.trim();
    (size > 0 && !name.is_empty()).then(|| (start, start.saturating_add(size), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_finds() {
        let dir = std::env::temp_dir().join(format!("perf-user-perfmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("perf-1.map");
        std::fs::write(
            &path,
            "3a2b1c000 40 LazyCompile:*hot /tmp/x.js:3\n\
             3a2b1c100 20 Builtin:Call\n\
             garbage\n\
             zz 10 bad\n\
             3a2b1c000 30 LazyCompile:*hot2 /tmp/x.js:3\n\
             3a2b1c200 0 empty\n",
        )
        .unwrap();
        let m = PerfMap::read(&path).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.find(0x3a2b1c010), Some("LazyCompile:*hot2 /tmp/x.js:3"));
        assert_eq!(m.find(0x3a2b1c035), None, "past the newer, shorter one");
        assert_eq!(m.find(0x3a2b1c11f), Some("Builtin:Call"));
        assert_eq!(m.find(0x3a2b1c120), None);
        assert_eq!(m.find(0x1000), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
