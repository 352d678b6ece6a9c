//! Executable mappings of a process from `/proc/PID/maps`, captured while the
//! process lives so that its stacks can be symbolized after it exits.

use std::{
    collections::HashMap,
    ffi::OsStr,
    fs::File,
    io::{self, Read as _},
    os::{
        fd::AsRawFd as _,
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

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
    /// The process they were read from (None for maps not read from /proc):
    /// where its files and its perf map are to be opened from.
    pub process: Option<Arc<ProcessRoot>>,
}

/// How to reach a process's files from here.
///
/// A process in another mount namespace (a container, a chroot) names its
/// files by paths that may not exist here: they are opened through
/// `/proc/PID/root` (which needs ptrace access to it, `CAP_SYS_PTRACE` for
/// other users' processes; no `CAP_SYS_ADMIN` as `/proc/PID/map_files`
/// would), and kept open from when its maps are read, so that a process
/// that exits before the report is still named.
#[derive(Debug)]
pub struct ProcessRoot {
    /// Its PID here.
    pub pid: u32,
    /// Its PID in its own PID namespace, which names its perf map.
    pub ns_pid: u32,
    /// True when it is in another mount namespace than perf-user.
    pub foreign: bool,
    /// Files opened while it lived, by the path it sees (foreign only).
    files: Mutex<HashMap<PathBuf, Arc<File>>>,
}

impl PartialEq for ProcessRoot {
    fn eq(&self, other: &Self) -> bool {
        (self.pid, self.ns_pid, self.foreign) == (other.pid, other.ns_pid, other.foreign)
    }
}
impl Eq for ProcessRoot {}

/// Files kept open for processes in other mount namespaces, all processes
/// together; past [`MAX_KEPT_FILES`] they are opened by path at report time
/// instead (which works while the process lives).
static KEPT_FILES: AtomicUsize = AtomicUsize::new(0);
/// See [`KEPT_FILES`]: well below the usual 1024 descriptors per process.
pub const MAX_KEPT_FILES: usize = 256;

impl Drop for ProcessRoot {
    fn drop(&mut self) {
        let n = self.files.get_mut().map(|f| f.len()).unwrap_or(0);
        KEPT_FILES.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Where one mapped file is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    /// Names the file for caches: its path, under `/proc/PID/root` for a
    /// process in another mount namespace.
    pub key: PathBuf,
    /// The path to open now (a kept descriptor's `/proc/self/fd/N`, or `key`).
    pub open: PathBuf,
    /// The directory the process's own paths are relative to (`/` here).
    pub root: PathBuf,
    /// Its path as the process saw it.
    pub seen: PathBuf,
}

/// Identity of a namespace of ours, or of a process (`ns` is `mnt` or `pid`).
fn ns_inode(pid: &str, ns: &str) -> Option<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/{ns}")).ok()?;
    Some((m.dev(), m.ino()))
}

fn own_ns(ns: &'static str) -> Option<(u64, u64)> {
    static MNT: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    static PID: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    let cell = if ns == "mnt" { &MNT } else { &PID };
    *cell.get_or_init(|| ns_inode("self", ns))
}

impl ProcessRoot {
    /// Finds out where `pid` lives and, in another mount namespace, opens
    /// the files of its mappings while they can be reached.
    fn probe(pid: u32, mappings: &[Mapping]) -> Self {
        let id = pid.to_string();
        let differs = |ns: &'static str| {
            let theirs = ns_inode(&id, ns);
            theirs.is_some() && theirs != own_ns(ns)
        };
        let foreign = differs("mnt");
        let ns_pid = if differs("pid") {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    let line = s.lines().find(|l| l.starts_with("NStgid:"))?;
                    line.split_whitespace().last()?.parse().ok()
                })
                .unwrap_or(pid)
        } else {
            pid
        };
        let root = Self {
            pid,
            ns_pid,
            foreign,
            files: Mutex::new(HashMap::new()),
        };
        if foreign {
            root.open_files(mappings);
        }
        root
    }

    fn open_files(&self, mappings: &[Mapping]) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        for m in mappings {
            let Backing::File(path) = &m.backing else {
                continue;
            };
            if files.contains_key(path) {
                continue;
            }
            if KEPT_FILES.fetch_add(1, Ordering::Relaxed) >= MAX_KEPT_FILES {
                KEPT_FILES.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            match File::open(self.under_root(path)) {
                Ok(f) => {
                    files.insert(path.clone(), Arc::new(f));
                }
                Err(_) => {
                    KEPT_FILES.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// `path` as reached through the process's root directory.
    fn under_root(&self, path: &Path) -> PathBuf {
        let rel = path.strip_prefix("/").unwrap_or(path);
        Path::new(&format!("/proc/{}/root", self.pid)).join(rel)
    }

    /// Where to read `path` (as the process sees it) from.
    pub fn file_ref(&self, path: &Path) -> FileRef {
        if !self.foreign {
            return FileRef::local(path);
        }
        let key = self.under_root(path);
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let open = match files.get(path) {
            Some(f) => PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())),
            None => key.clone(),
        };
        FileRef {
            key,
            open,
            root: PathBuf::from(format!("/proc/{}/root", self.pid)),
            seen: path.to_path_buf(),
        }
    }

    /// Where its perf map is, if it wrote one: `/tmp/perf-PID.map` with its
    /// own PID, inside its root.
    pub fn perf_map_path(&self) -> PathBuf {
        let name = format!("tmp/perf-{}.map", self.ns_pid);
        if self.foreign || self.ns_pid != self.pid {
            Path::new(&format!("/proc/{}/root", self.pid)).join(name)
        } else {
            Path::new("/").join(name)
        }
    }

    /// Takes over the files another read of the same process kept.
    fn adopt(&self, older: &ProcessRoot) {
        if std::ptr::eq(self, older) {
            return;
        }
        let mut old = older.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut new = self.files.lock().unwrap_or_else(|e| e.into_inner());
        for (path, f) in old.drain() {
            // Each kept file is counted once, whichever root holds it.
            match new.entry(path) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    KEPT_FILES.fetch_sub(1, Ordering::Relaxed);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(f);
                }
            }
        }
    }
}

impl FileRef {
    /// A file of a process that shares our mount namespace.
    pub fn local(path: &Path) -> Self {
        Self {
            key: path.to_path_buf(),
            open: path.to_path_buf(),
            root: PathBuf::from("/"),
            seen: path.to_path_buf(),
        }
    }
}

impl ProcessMaps {
    /// Reads the executable mappings of `pid`.
    ///
    /// Where the kernel has the `PROCMAP_QUERY` ioctl (Linux 6.11+), it asks
    /// for the executable mappings only: the text of `/proc/PID/maps` costs
    /// the kernel a line, and a `d_path`, for every mapping, and a compiler or
    /// a runtime has hundreds of data mappings for a dozen of code. Elsewhere
    /// it parses the text.
    pub fn read(pid: u32) -> io::Result<Self> {
        Self::read_in(Path::new("/proc"), pid)
    }

    /// [`ProcessMaps::read`] of `<proc_root>/PID/maps`: a test lays out a
    /// directory like /proc. Only the real /proc is asked with the ioctl
    /// (a plain file would answer ENOTTY and turn it off for every process).
    pub fn read_in(proc_root: &Path, pid: u32) -> io::Result<Self> {
        let mut maps = Self::read_mappings(proc_root, pid)?;
        if proc_root == Path::new("/proc") {
            maps.process = Some(Arc::new(ProcessRoot::probe(pid, &maps.mappings)));
        }
        Ok(maps)
    }

    /// Where to read a mapped file from (see [`ProcessRoot`]).
    pub fn file_ref(&self, path: &Path) -> FileRef {
        match &self.process {
            Some(p) => p.file_ref(path),
            None => FileRef::local(path),
        }
    }

    fn read_mappings(proc_root: &Path, pid: u32) -> io::Result<Self> {
        let mut file = File::open(proc_root.join(pid.to_string()).join("maps"))?;
        if proc_root == Path::new("/proc") && QUERY_SUPPORTED.load(Ordering::Relaxed) {
            match query_executable(&file) {
                Ok(maps) => return Ok(maps),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(e),
                Err(e) => {
                    if query_unavailable(&e) {
                        QUERY_SUPPORTED.store(false, Ordering::Relaxed);
                    }
                    // Anything else (a name too long for the buffer): the text still works.
                }
            }
        }
        // One large buffer: the maps of a big process are hundreds of KiB,
        // and a small first read would cost a syscall per page.
        let mut text = String::with_capacity(64 * 1024);
        file.read_to_string(&mut text)?;
        Ok(Self::parse(&text))
    }

    /// Parses the text of a maps file, keeping executable mappings only
    /// (stack addresses are code addresses). Malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut mappings: Vec<Mapping> = text.lines().filter_map(parse_line).collect();
        mappings.sort_by_key(|m| m.start);
        Self {
            mappings,
            process: None,
        }
    }

    /// Adds what a later read of the same process shows: its mappings win
    /// where the two overlap (an exec, or a library loaded over an old one),
    /// and older ones elsewhere are kept, since a stack sampled before a
    /// `dlclose` may still point into them.
    pub fn merge(&mut self, newer: ProcessMaps) {
        match (&self.process, newer.process) {
            (Some(old), Some(new)) => {
                new.adopt(old);
                self.process = Some(new);
            }
            (None, Some(new)) => self.process = Some(new),
            _ => {}
        }
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
    Some(Mapping {
        start,
        end,
        offset,
        backing: backing(path.as_bytes()),
    })
}

/// What a mapping's name (as `/proc/PID/maps` shows it) says backs it.
fn backing(path: &[u8]) -> Backing {
    const DELETED: &[u8] = b" (deleted)";
    if path.is_empty() {
        Backing::Pseudo("[anon]".into())
    } else if path.starts_with(b"[") || path.starts_with(b"/memfd:") {
        // memfd-backed code (e.g. a sealed copy of a runtime) has no path to open.
        Backing::Pseudo(String::from_utf8_lossy(path).into_owned())
    } else if let Some(p) = path.strip_suffix(DELETED) {
        Backing::DeletedFile(PathBuf::from(OsStr::from_bytes(p)))
    } else {
        Backing::File(PathBuf::from(OsStr::from_bytes(path)))
    }
}

/// False once `PROCMAP_QUERY` turned out to be missing.
static QUERY_SUPPORTED: AtomicBool = AtomicBool::new(true);

/// The ioctl does not exist here: ENOTTY from a kernel before 6.11, ENOSYS
/// from an emulator that does not pass it on (qemu-user).
fn query_unavailable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::ENOSYS))
}

/// `struct procmap_query` of `<linux/fs.h>` (Linux 6.11); newer libc crates
/// do not have it yet.
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

const _: () = assert!(std::mem::size_of::<ProcmapQuery>() == 104);
/// `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: u64 = (3 << 30) | (104 << 16) | ((b'f' as u64) << 8) | 17;
const QUERY_VMA_EXECUTABLE: u64 = 0x04;
const QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;
/// PATH_MAX: the kernel never returns a longer name.
const NAME_MAX_BYTES: usize = 4096;

/// Walks the executable mappings with `PROCMAP_QUERY`: each call returns the
/// first executable mapping at or after an address, with its name.
fn query_executable(file: &File) -> io::Result<ProcessMaps> {
    let mut name = vec![0u8; NAME_MAX_BYTES];
    let mut mappings = Vec::new();
    let mut addr = 0u64;
    loop {
        let mut q = ProcmapQuery {
            size: std::mem::size_of::<ProcmapQuery>() as u64,
            query_flags: QUERY_VMA_EXECUTABLE | QUERY_COVERING_OR_NEXT_VMA,
            query_addr: addr,
            vma_name_addr: name.as_mut_ptr() as u64,
            vma_name_size: name.len() as u32,
            ..ProcmapQuery::default()
        };
        // SAFETY: `q` is a valid, writable procmap_query of the size it
        // declares, and `vma_name_addr` points to `name`, writable for
        // `vma_name_size` bytes, which outlives the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), PROCMAP_QUERY as _, &mut q) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                break; // no executable mapping above `addr`
            }
            return Err(e);
        }
        // The size counts the terminating NUL; 0 means no name (anonymous memory).
        let len = (q.vma_name_size as usize).min(name.len()).saturating_sub(1);
        if q.vma_end > q.vma_start {
            mappings.push(Mapping {
                start: q.vma_start,
                end: q.vma_end,
                offset: q.vma_offset,
                backing: backing(&name[..len]),
            });
        }
        if q.vma_end <= addr {
            break; // cannot happen; never loop forever on a kernel surprise
        }
        addr = q.vma_end;
    }
    Ok(ProcessMaps {
        mappings,
        process: None,
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
    fn query_and_text_agree_on_our_own_maps() {
        let file = File::open("/proc/self/maps").unwrap();
        let queried = match query_executable(&file) {
            Ok(m) => m,
            // Nothing to compare; the text must then do the job.
            Err(e) if query_unavailable(&e) => {
                let maps = ProcessMaps::read(std::process::id()).expect("the text fallback");
                assert!(
                    !maps.mappings.is_empty(),
                    "no code mappings in our own maps"
                );
                return;
            }
            Err(e) => panic!("PROCMAP_QUERY failed: {e}"),
        };
        let mut text = ProcessMaps::parse(&std::fs::read_to_string("/proc/self/maps").unwrap());
        // The vsyscall page is no VMA of the process (the text adds it at the
        // end), and stacks never point into it.
        text.mappings
            .retain(|m| m.backing != Backing::Pseudo("[vsyscall]".into()));
        // Other test threads may map data meanwhile; code mappings stay put.
        assert_eq!(queried, text);
        assert!(queried.mappings.iter().any(|m| matches!(
            &m.backing,
            Backing::File(p) if p.file_name().is_some()
        )));
    }

    /// A directory laid out like /proc with one process, PID 42.
    fn fake_proc(name: &str, maps: &[u8]) -> std::path::PathBuf {
        let root =
            std::env::temp_dir().join(format!("perf-user-procmaps-{name}-{}", std::process::id()));
        std::fs::create_dir_all(root.join("42")).unwrap();
        std::fs::write(root.join("42/maps"), maps).unwrap();
        root
    }

    #[test]
    fn reads_maps_under_a_test_root() {
        let root = fake_proc("root", MAPS.as_bytes());
        assert_eq!(
            ProcessMaps::read_in(&root, 42).unwrap(),
            ProcessMaps::parse(MAPS)
        );
        assert!(ProcessMaps::read_in(&root, 43).is_err(), "no such process");
        // Not UTF-8: an error, not a panic.
        std::fs::write(root.join("42/maps"), b"1000-2000 r-xp 0 0 0 /\xff\n").unwrap();
        assert!(ProcessMaps::read_in(&root, 42).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A maps line with fields drawn from what a malformed or hostile file
    /// could hold: huge and odd numbers, missing fields, spaces in names.
    fn maps_line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let hex = prop_oneof![
            any::<u64>().prop_map(|v| format!("{v:x}")),
            Just("ffffffffffffffffff".to_string()),
            Just(String::new()),
            "[0-9a-fA-Fx+-]{0,20}",
        ];
        (
            hex.clone(),
            hex.clone(),
            "[rwxps-]{0,5}",
            hex,
            "[0-9a-f:]{0,6}",
            "[0-9]{0,25}",
            "\\PC{0,40}",
            0usize..4,
        )
            .prop_map(|(start, end, perms, offset, dev, inode, path, seps)| {
                let sep = [" ", "  ", "\t", ""][seps];
                format!("{start}-{end}{sep}{perms}{sep}{offset}{sep}{dev}{sep}{inode}{sep}{path}")
            })
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_keeps_its_invariants(
            lines in proptest::collection::vec(maps_line(), 0..20),
            noise in "\\PC{0,200}",
            probe in proptest::prelude::any::<u64>(),
        ) {
            let text = format!("{}\n{noise}", lines.join("\n"));
            let maps = ProcessMaps::parse(&text);
            for m in &maps.mappings {
                proptest::prop_assert!(m.start < m.end);
                proptest::prop_assert!(!m.backing.module_name().is_empty());
            }
            proptest::prop_assert!(maps.mappings.windows(2).all(|w| w[0].start <= w[1].start));
            if let Some(m) = maps.find(probe) {
                proptest::prop_assert!(m.start <= probe && probe < m.end);
            }
            let mut merged = maps.clone();
            merged.merge(ProcessMaps::parse(&noise));
            proptest::prop_assert!(merged.mappings.windows(2).all(|w| w[0].start <= w[1].start));
        }

        #[test]
        fn arbitrary_bytes_under_a_test_root_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
        ) {
            let root = fake_proc("bytes", &bytes);
            let _ = ProcessMaps::read_in(&root, 42);
            std::fs::remove_dir_all(&root).unwrap();
        }
    }

    #[test]
    fn addresses_outside_every_mapping_find_nothing() {
        let m = ProcessMaps::parse(MAPS);
        assert!(m.find(0).is_none());
        assert!(m.find(0x55d4c8a02000).is_none(), "end is exclusive");
        assert!(m.find(u64::MAX).is_none());
    }
}
