//! Separate debug files on this machine, where gdb, perf and elfutils look:
//! by build ID under `/usr/lib/debug/.build-id/`, then by `.gnu_debuglink`
//! next to the file, in its `.debug/` directory, and under `/usr/lib/debug`.

use std::{
    fs::File,
    io::Read as _,
    path::{Path, PathBuf},
};

use super::elf::ElfFacts;

/// Where distributions install debug files (`*-dbgsym`, `*-debuginfo`).
pub const DEBUG_DIR: &str = "/usr/lib/debug";

/// The debug file of a binary, checked to belong to it; None when there is none.
///
/// `opened` is the path the binary was read from (which may go through
/// `/proc/PID/root`), `root` the directory its own paths are relative to
/// (`/` for the host), and `seen` its path as its process saw it: debug
/// links next to the file are looked for inside its root.
pub fn find(facts: &ElfFacts, opened: &Path, root: &Path, seen: &Path) -> Option<PathBuf> {
    let id = facts.build_id_hex();
    if let Some(id) = id.as_deref().filter(|id| id.len() > 2) {
        let path = Path::new(DEBUG_DIR)
            .join(".build-id")
            .join(&id[..2])
            .join(format!("{}.debug", &id[2..]));
        if belongs(facts, opened, &path, None) {
            return Some(path);
        }
    }
    let (name, crc) = facts.debuglink.as_ref()?;
    let dir = seen.parent()?;
    let rel = dir.strip_prefix("/").unwrap_or(dir);
    [
        root.join(rel).join(name),
        root.join(rel).join(".debug").join(name),
        Path::new(DEBUG_DIR).join(rel).join(name),
    ]
    .into_iter()
    .find(|p| belongs(facts, opened, p, Some(*crc)))
}

/// True when `candidate` exists, is not the binary itself, and is its debug
/// file: the same build ID, or (without build IDs) the debug link's CRC.
pub fn belongs(facts: &ElfFacts, opened: &Path, candidate: &Path, crc: Option<u32>) -> bool {
    if !candidate.is_file() || same_file(opened, candidate) {
        return false;
    }
    let Ok(theirs) = ElfFacts::read(candidate) else {
        return false;
    };
    match (&facts.build_id, &theirs.build_id) {
        (Some(a), Some(b)) => a == b,
        _ => crc.is_some_and(|crc| crc32_of(candidate) == Some(crc)),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// CRC-32 (as `.gnu_debuglink` records it: zlib's) of a whole file.
fn crc32_of(path: &Path) -> Option<u32> {
    let mut f = File::open(path).ok()?;
    let mut crc = flate2::Crc::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Some(crc.sum()),
            Ok(n) => crc.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}
