//! Turns raw stack addresses into named frames with blazesym.
//!
//! User addresses are first translated to (file, file offset) through the
//! process's mappings as captured while it ran, so a process that has exited
//! is symbolized the same way as a live one. Results are cached per
//! (file, offset) and per kernel address; blazesym itself caches each parsed
//! ELF file, so a binary shared by many processes is read once.
//!
//! Where a name comes from, first found wins (docs/symbolization.md):
//! 1. a separate debug file, when the binary lacks DWARF (or, names only,
//!    a `.symtab`): `/usr/lib/debug/.build-id/`, then its `.gnu_debuglink`
//!    ([`debugfile`]), then, for stripped binaries and only when
//!    `DEBUGINFOD_URLS` is set, a debuginfod server ([`debuginfod`]);
//! 2. the binary's own DWARF and symbol tables (blazesym);
//! 3. for anonymous executable memory, the process's perf map ([`perfmap`]);
//!    for the `[vdso]`, our own copy of it ([`vdso`]);
//! 4. otherwise no name: the frame is shown as its function's start,
//!    `module+0xSTART`, from `.eh_frame` FDEs and sized symbols ([`elf`]),
//!    or as `module+0xoffset` when no range holds it. Never a neighbour's name.

pub mod debugfile;
pub mod debuginfod;
pub mod elf;
pub mod perfmap;
pub mod vdso;

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Kernel, Source},
};

use crate::{
    procmaps::{Backing, FileRef, ProcessMaps},
    profile::Frame,
};

use self::{
    debuginfod::Debuginfod,
    elf::{ElfFacts, FunctionRanges},
    perfmap::PerfMap,
    vdso::Vdso,
};

/// Module name shown for kernel frames.
pub const KERNEL_MODULE: &str = "[kernel]";
/// Module name shown for a user address in no known mapping.
pub const UNKNOWN_MODULE: &str = "[unknown]";

/// What a lookup found: a name and, with debug info, a source location.
#[derive(Clone, Debug, Default)]
struct SymInfo {
    name: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    /// Without a name: the file offset where its function starts.
    start: Option<u64>,
    /// Functions inlined at the address, outermost first (DWARF only):
    /// each becomes a frame of its own, inside `name`'s.
    inlined: Vec<InlinedInfo>,
}

/// A function inlined at an address.
#[derive(Clone, Debug, Default)]
struct InlinedInfo {
    name: String,
    file: Option<String>,
    line: Option<u32>,
}

/// One user address, resolved to the place it should be looked up.
#[derive(Clone, Debug)]
enum UserSite<'m> {
    File {
        /// Its path as the process saw it.
        seen: &'m Path,
        /// Names it in caches: `seen`, or under `/proc/PID/root` for a
        /// process in another mount namespace.
        key: Cow<'m, Path>,
        module: String,
        offset: u64,
    },
    /// Anonymous executable memory (or an address in no mapping read):
    /// named, if at all, by the process's perf map.
    Jit {
        pid: u32,
        addr: u64,
        module: String,
        offset: u64,
    },
    /// The kernel's vDSO, named from our own copy.
    Vdso {
        module: String,
        offset: u64,
    },
    Unnamed {
        module: String,
        offset: u64,
    },
}

/// A module whose frames could not be named, and what would name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingSymbols {
    /// Its path as its process saw it.
    pub path: PathBuf,
    /// Its build ID (hex), which debug files and debuginfod are found by.
    pub build_id: Option<String>,
    /// Why debuginfod did not give it, when it was asked.
    pub debuginfod: Option<String>,
}

/// Symbolizes stacks; keep one for a whole report.
pub struct StackSymbolizer {
    blaze: Symbolizer,
    kernel: HashMap<u64, SymInfo>,
    /// Per file (key) and file offset; two levels, so that a lookup needs
    /// no owned key.
    user: HashMap<PathBuf, HashMap<u64, SymInfo>>,
    /// Names from perf maps, per (PID, address).
    jit: HashMap<(u32, u64), String>,
    /// Perf maps read, per PID (None: it had none).
    perf_maps: HashMap<u32, Option<PerfMap>>,
    /// The vDSO's names, read on first need.
    vdso: Option<Vdso>,
    /// Files that could not be read, with the reason; reported once each.
    failures: HashMap<PathBuf, String>,
    /// Stripped modules with unnamed frames and no debug file, by key.
    missing: HashMap<PathBuf, MissingSymbols>,
    /// Debug files used, by the path of the binary they describe.
    debug_files: HashMap<PathBuf, PathBuf>,
    /// Why debuginfod had no debug file, by the key of the binary.
    debuginfod_failures: HashMap<PathBuf, String>,
    /// Each file's facts and debug file, found once per symbolizer.
    #[allow(clippy::type_complexity)]
    files: HashMap<PathBuf, (Option<Arc<ElfFacts>>, Option<PathBuf>)>,
    /// Function ranges of files with unnamed addresses (not kept in
    /// names-only mode, which holds one file's data at a time).
    ranges: HashMap<PathBuf, Option<Arc<FunctionRanges>>>,
    /// The debuginfod client, when `DEBUGINFOD_URLS` is set.
    debuginfod: Option<Debuginfod>,
    /// Names only, from the ELF symbol tables, and no file kept parsed
    /// after its batch (see `names_only`).
    names_only: bool,
    /// Names only, but files and function ranges kept (see `names_only_kept`).
    keep_files: bool,
}

impl Default for StackSymbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl StackSymbolizer {
    /// A symbolizer with demangling and source locations on.
    pub fn new() -> Self {
        Self {
            blaze: blaze(false),
            kernel: HashMap::new(),
            user: HashMap::new(),
            jit: HashMap::new(),
            perf_maps: HashMap::new(),
            vdso: None,
            failures: HashMap::new(),
            missing: HashMap::new(),
            debug_files: HashMap::new(),
            debuginfod_failures: HashMap::new(),
            files: HashMap::new(),
            ranges: HashMap::new(),
            debuginfod: Debuginfod::from_env(),
            names_only: false,
            keep_files: false,
        }
    }

    /// A symbolizer for the daemon, which exports names only and must stay
    /// small: names come from the ELF symbol tables alone (parsing the DWARF
    /// of every sampled binary, hundreds of MiB for a compiler, would cost
    /// memory for nothing), and each file is forgotten once its batch is
    /// named, so at most one file's symbols are held at a time. A stripped
    /// binary is named from the symbol table of its separate debug file
    /// (its DWARF is not read).
    pub fn names_only() -> Self {
        Self {
            blaze: blaze(true),
            names_only: true,
            ..Self::new()
        }
    }

    /// Files whose symbols could not be read, and why.
    pub fn failures(&self) -> &HashMap<PathBuf, String> {
        &self.failures
    }

    /// Stripped modules some frames of which stayed unnamed for want of a
    /// debug file, sorted by path.
    pub fn missing_symbols(&self) -> Vec<MissingSymbols> {
        let mut v: Vec<MissingSymbols> = self.missing.values().cloned().collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v.dedup_by(|a, b| a.path == b.path && a.build_id == b.build_id);
        v
    }

    /// Separate debug files used: (binary as its process saw it, debug file).
    pub fn debug_files_used(&self) -> Vec<(PathBuf, PathBuf)> {
        let mut v: Vec<_> = self
            .debug_files
            .iter()
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect();
        v.sort();
        v
    }

    /// True when a debuginfod server is asked for missing debug files.
    pub fn debuginfod_enabled(&self) -> bool {
        self.debuginfod.is_some()
    }

    /// Looks up every address of these kernel stacks (leaf first) in one
    /// batch; call before `kernel_frames`.
    pub fn prepare_kernel<'a>(&mut self, stacks: impl IntoIterator<Item = &'a [u64]>) {
        let todo: Vec<u64> = stacks
            .into_iter()
            .flat_map(|s| s.iter().enumerate().map(|(i, &a)| lookup_addr(i, a)))
            .filter(|a| !self.kernel.contains_key(a))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if todo.is_empty() {
            return;
        }
        // kallsyms only: searching for a vmlinux with DWARF is slow and rarely fruitful.
        let src = Source::Kernel(Kernel {
            vmlinux: blazesym::MaybeDefault::None,
            debug_syms: false,
            ..Kernel::default()
        });
        let infos = self.lookup(&src, Input::AbsAddr(&todo), Path::new("/proc/kallsyms"));
        self.kernel.extend(todo.into_iter().zip(infos));
        self.forget_files();
    }

    /// Looks up every (file, offset) of these user stacks in one batch per
    /// file, and every anonymous-memory address in its process's perf map.
    pub fn prepare_user<'a>(
        &mut self,
        stacks: impl IntoIterator<Item = (Option<&'a ProcessMaps>, &'a [u64])>,
    ) {
        let mut todo: HashMap<PathBuf, (FileRef, HashSet<u64>)> = HashMap::new();
        let mut jit: HashMap<u32, (PathBuf, HashSet<u64>)> = HashMap::new();
        for (maps, addrs) in stacks {
            for (i, &addr) in addrs.iter().enumerate() {
                match user_site(maps, lookup_addr(i, addr)) {
                    UserSite::File {
                        seen, key, offset, ..
                    } => {
                        let known = self
                            .user
                            .get(key.as_ref())
                            .is_some_and(|m| m.contains_key(&offset));
                        if !known {
                            todo.entry(key.into_owned())
                                .or_insert_with(|| {
                                    let file = maps
                                        .map_or_else(|| FileRef::local(seen), |m| m.file_ref(seen));
                                    (file, HashSet::new())
                                })
                                .1
                                .insert(offset);
                        }
                    }
                    UserSite::Jit { pid, addr, .. } => {
                        if !self.jit.contains_key(&(pid, addr))
                            && let Some(p) = maps.and_then(|m| m.process.as_ref())
                        {
                            jit.entry(pid)
                                .or_insert_with(|| (p.perf_map_path(), HashSet::new()))
                                .1
                                .insert(addr);
                        }
                    }
                    UserSite::Vdso { .. } => {
                        if self.vdso.is_none() {
                            self.vdso = Some(Vdso::ours());
                        }
                    }
                    UserSite::Unnamed { .. } => {}
                }
            }
        }
        for (pid, (path, addrs)) in jit {
            let map = self
                .perf_maps
                .entry(pid)
                .or_insert_with(|| PerfMap::read(&path).ok());
            if let Some(map) = map {
                for a in addrs {
                    if let Some(name) = map.find(a) {
                        self.jit.insert((pid, a), name.to_string());
                    }
                }
            }
        }
        let new: Vec<FileRef> = todo
            .values()
            .map(|(f, _)| f)
            .filter(|f| !self.files.contains_key(&f.key))
            .cloned()
            .collect();
        let found = self.find_debug_files(new.iter());
        self.files.extend(
            found
                .into_iter()
                .map(|(k, (facts, debug))| (k, (facts.map(Arc::new), debug))),
        );
        for (key, (file, offsets)) in todo {
            let offsets: Vec<u64> = offsets.into_iter().collect();
            let (facts, debug) = self.files.get(&key).cloned().unwrap_or_default();
            let infos = self.symbolize_file(&file, facts.as_deref(), debug.as_deref(), &offsets);
            let known = self.user.entry(key).or_default();
            for (offset, info) in offsets.into_iter().zip(infos) {
                known.insert(offset, info);
            }
            self.forget_files();
        }
    }

    /// Reads each file's facts and finds the debug files of those that
    /// need one: on this machine first, then all at once from debuginfod.
    #[allow(clippy::type_complexity)]
    fn find_debug_files<'f>(
        &mut self,
        files: impl Iterator<Item = &'f FileRef>,
    ) -> HashMap<PathBuf, (Option<ElfFacts>, Option<PathBuf>)> {
        let mut out = HashMap::new();
        let mut remote: Vec<(PathBuf, PathBuf, String)> = Vec::new();
        for file in files {
            let Ok(facts) = ElfFacts::read(&file.open) else {
                out.insert(file.key.clone(), (None, None));
                continue;
            };
            // Names only (the daemon) needs just a symbol table; a report
            // also wants DWARF's source lines and inlined functions.
            let wanted = if self.names_only {
                !facts.has_symtab
            } else {
                !facts.has_dwarf
            };
            let mut debug = None;
            if wanted {
                debug = debugfile::find(&facts, &file.open, &file.root, &file.seen);
                // Over the network only for names: a stripped binary.
                if debug.is_none()
                    && !facts.has_symtab
                    && self.debuginfod.is_some()
                    && let Some(id) = facts.build_id_hex()
                {
                    remote.push((file.key.clone(), file.seen.clone(), id));
                }
            }
            if let Some(d) = &debug {
                self.debug_files.insert(file.seen.clone(), d.clone());
            }
            out.insert(file.key.clone(), (Some(facts), debug));
        }
        if let (Some(client), false) = (&self.debuginfod, remote.is_empty()) {
            let ids: Vec<String> = remote.iter().map(|(_, _, id)| id.clone()).collect();
            let got = client.fetch(&ids);
            for (key, seen, id) in remote {
                let Some(entry) = out.get_mut(&key) else {
                    continue;
                };
                match got.get(&id) {
                    Some(Ok(path)) => {
                        if let Some(facts) = &entry.0
                            && debugfile::belongs(facts, Path::new("/"), path, None)
                        {
                            entry.1 = Some(path.clone());
                            self.debug_files.insert(seen, path.clone());
                        }
                    }
                    Some(Err(why)) => {
                        self.debuginfod_failures.insert(key, why.clone());
                    }
                    None => {}
                }
            }
        }
        out
    }

    /// Names the offsets of one file: from its debug file, then from the
    /// file itself; what stays unnamed gets its function's start.
    fn symbolize_file(
        &mut self,
        file: &FileRef,
        facts: Option<&ElfFacts>,
        debug: Option<&Path>,
        offsets: &[u64],
    ) -> Vec<SymInfo> {
        let mut infos = vec![SymInfo::default(); offsets.len()];
        if let (Some(facts), Some(debug)) = (facts, debug) {
            // A debug file has the binary's addresses but not its contents:
            // look up virtual addresses, not file offsets.
            let (idx, vaddrs): (Vec<usize>, Vec<u64>) = offsets
                .iter()
                .enumerate()
                .filter_map(|(i, &o)| Some((i, facts.file_to_virt(o)?)))
                .unzip();
            let src = Source::Elf(Elf {
                debug_syms: !self.names_only,
                ..Elf::new(debug)
            });
            let found = self.lookup(&src, Input::VirtOffset(&vaddrs), debug);
            for (i, info) in idx.into_iter().zip(found) {
                infos[i] = info;
            }
        }
        let left: Vec<usize> = (0..offsets.len())
            .filter(|&i| infos[i].name.is_none())
            .collect();
        if !left.is_empty() {
            let src = Source::Elf(Elf {
                debug_syms: !self.names_only,
                ..Elf::new(file.open.clone())
            });
            let want: Vec<u64> = left.iter().map(|&i| offsets[i]).collect();
            let found = self.lookup(&src, Input::FileOffset(&want), &file.key);
            for (i, info) in left.into_iter().zip(found) {
                infos[i] = info;
            }
        }
        let unnamed: Vec<usize> = (0..offsets.len())
            .filter(|&i| infos[i].name.is_none())
            .collect();
        if unnamed.is_empty() {
            return infos;
        }
        if let Some(facts) = facts {
            let ranges = match self.ranges.get(&file.key) {
                Some(r) => r.clone(),
                None => {
                    let r = FunctionRanges::read(&file.open).ok().map(Arc::new);
                    if !self.names_only || self.keep_files {
                        self.ranges.insert(file.key.clone(), r.clone());
                    }
                    r
                }
            };
            if let Some(ranges) = ranges {
                for &i in &unnamed {
                    infos[i].start = facts
                        .file_to_virt(offsets[i])
                        .and_then(|v| ranges.start_of(v))
                        .and_then(|s| facts.virt_to_file(s));
                }
            }
            if !facts.has_symtab && debug.is_none() {
                self.missing.insert(
                    file.key.clone(),
                    MissingSymbols {
                        path: file.seen.clone(),
                        build_id: facts.build_id_hex(),
                        debuginfod: self.debuginfod_failures.get(&file.key).cloned(),
                    },
                );
            }
        }
        infos
    }

    /// Names only, as [`StackSymbolizer::names_only`], but each file stays
    /// parsed (and its function ranges read) for the symbolizer's life: for
    /// the daemon's profile requests, which a scraper repeats every few
    /// seconds over mostly the same files (a compiler's 150 MiB library was
    /// read again at each request otherwise). Its owner bounds that life.
    pub fn names_only_kept() -> Self {
        Self {
            keep_files: true,
            ..Self::names_only()
        }
    }

    /// In names-only mode, drops what blazesym has parsed and mapped (a new
    /// one starts with empty caches; the names found stay in ours).
    fn forget_files(&mut self) {
        if self.names_only && !self.keep_files {
            self.blaze = blaze(true);
        }
    }

    /// Frames for a kernel stack given leaf first (as the stack map holds it);
    /// returned root first.
    pub fn kernel_frames(&self, addrs: &[u64]) -> Vec<Arc<Frame>> {
        addrs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &addr)| {
                let info = self
                    .kernel
                    .get(&lookup_addr(i, addr))
                    .cloned()
                    .unwrap_or_default();
                Arc::new(Frame {
                    function: info.name,
                    module: KERNEL_MODULE.into(),
                    offset: addr,
                    address: addr,
                    function_start: None,
                    file: info.file,
                    line: info.line,
                    kernel: true,
                })
            })
            .collect()
    }

    /// Frames for a user stack given leaf first; returned root first. A
    /// function inlined at an address is a frame of its own (as perf shows
    /// it), with the same address as the frame it was inlined into.
    pub fn user_frames(&self, maps: Option<&ProcessMaps>, addrs: &[u64]) -> Vec<Arc<Frame>> {
        addrs
            .iter()
            .enumerate()
            .rev()
            .flat_map(|(i, &addr)| {
                let (module, offset, info) = match user_site(maps, lookup_addr(i, addr)) {
                    UserSite::File {
                        key,
                        module,
                        offset,
                        ..
                    } => {
                        let info = self
                            .user
                            .get(key.as_ref())
                            .and_then(|m| m.get(&offset))
                            .cloned()
                            .unwrap_or_default();
                        (module, offset, info)
                    }
                    UserSite::Jit {
                        pid,
                        addr,
                        module,
                        offset,
                    } => {
                        let info = SymInfo {
                            name: self.jit.get(&(pid, addr)).cloned(),
                            ..SymInfo::default()
                        };
                        (module, offset, info)
                    }
                    UserSite::Vdso { module, offset } => {
                        let info = SymInfo {
                            name: self
                                .vdso
                                .as_ref()
                                .and_then(|v| v.find(offset))
                                .map(str::to_string),
                            ..SymInfo::default()
                        };
                        (module, offset, info)
                    }
                    UserSite::Unnamed { module, offset } => (module, offset, SymInfo::default()),
                };
                // Show the offset of the sampled address itself, not the adjusted one.
                let offset = offset + (addr - lookup_addr(i, addr));
                let frame = |function, file, line, function_start| {
                    Arc::new(Frame {
                        function,
                        module: module.clone(),
                        offset,
                        address: addr,
                        function_start,
                        file,
                        line,
                        kernel: false,
                    })
                };
                let mut out = vec![frame(info.name, info.file, info.line, info.start)];
                out.extend(
                    info.inlined
                        .into_iter()
                        .map(|f| frame(Some(f.name), f.file, f.line, None)),
                );
                out
            })
            .collect()
    }

    fn lookup(&mut self, src: &Source, input: Input<&[u64]>, what: &Path) -> Vec<SymInfo> {
        let n = input.as_inner_ref().len();
        match self.blaze.symbolize(src, input) {
            Ok(results) => results.into_iter().map(sym_info).collect(),
            Err(e) => {
                self.failures
                    .entry(what.to_path_buf())
                    .or_insert_with(|| format!("{e:#}"));
                vec![SymInfo::default(); n]
            }
        }
    }
}

/// A blazesym symbolizer that demangles, with source locations unless `names_only`.
fn blaze(names_only: bool) -> Symbolizer {
    Symbolizer::builder()
        .enable_demangling(true)
        .enable_code_info(!names_only)
        .enable_inlined_fns(!names_only)
        .build()
}

/// All frames but the leaf hold return addresses, which point after the call
/// and may fall in the next function; look up the byte before them instead.
fn lookup_addr(index: usize, addr: u64) -> u64 {
    if index == 0 {
        addr
    } else {
        addr.saturating_sub(1)
    }
}

fn user_site(maps: Option<&ProcessMaps>, addr: u64) -> UserSite<'_> {
    let pid = maps.and_then(|m| m.process.as_ref()).map(|p| p.pid);
    let Some(m) = maps.and_then(|m| m.find(addr)) else {
        // Code mapped after the maps were read (a JIT's new region) may
        // still be in its perf map.
        return match pid {
            Some(pid) => UserSite::Jit {
                pid,
                addr,
                module: UNKNOWN_MODULE.into(),
                offset: addr,
            },
            None => UserSite::Unnamed {
                module: UNKNOWN_MODULE.into(),
                offset: addr,
            },
        };
    };
    let offset = addr - m.start + m.offset;
    match &m.backing {
        Backing::File(path) | Backing::DeletedFile(path) => UserSite::File {
            seen: path,
            key: match maps.and_then(|ms| ms.process.as_ref()) {
                Some(p) if p.foreign => Cow::Owned(p.file_ref(path).key),
                _ => Cow::Borrowed(path.as_path()),
            },
            module: m.backing.module_name(),
            offset,
        },
        Backing::Pseudo(name) if name == "[vdso]" => UserSite::Vdso {
            module: name.clone(),
            offset,
        },
        Backing::Pseudo(name) => match pid {
            // The kernel's own pages are no JIT's.
            Some(pid) if !matches!(name.as_str(), "[vdso]" | "[vsyscall]" | "[uprobes]") => {
                UserSite::Jit {
                    pid,
                    addr,
                    module: name.clone(),
                    offset,
                }
            }
            _ => UserSite::Unnamed {
                module: name.clone(),
                offset,
            },
        },
    }
}

fn sym_info(s: Symbolized<'_>) -> SymInfo {
    match s {
        Symbolized::Sym(sym) => {
            let (file, line) = match &sym.code_info {
                Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
                None => (None, None),
            };
            // Each frame's own line: the outer function's is where it
            // called the first inlined one; an inlined function's, the
            // place in it (blazesym gives each with its function).
            let inlined = sym
                .inlined
                .iter()
                .map(|f| {
                    let (file, line) = match &f.code_info {
                        Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
                        None => (None, None),
                    };
                    InlinedInfo {
                        name: f.name.to_string(),
                        file,
                        line,
                    }
                })
                .collect();
            SymInfo {
                name: Some(sym.name.into_owned()),
                file,
                line,
                start: None,
                inlined,
            }
        }
        Symbolized::Unknown(_) => SymInfo::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_addresses_are_looked_up_one_byte_back() {
        assert_eq!(lookup_addr(0, 0x1000), 0x1000);
        assert_eq!(lookup_addr(1, 0x1000), 0xfff);
        assert_eq!(lookup_addr(3, 0), 0);
    }

    #[test]
    fn kernel_return_addresses_are_named() {
        // Addresses of a real kernel function: its start as the leaf, and a
        // return address just past its start (looked up one byte back) as a caller.
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let Some(addr) = kallsyms.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let a = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            let name = f.next()?;
            (a != 0 && (kind == "T" || kind == "t") && name == "do_syscall_64").then_some(a)
        }) else {
            // Unprivileged runs see zeroed addresses; nothing to check then.
            return;
        };
        let stack = [addr, addr + 1];
        let mut s = StackSymbolizer::new();
        s.prepare_kernel([&stack[..]]);
        let frames = s.kernel_frames(&stack);
        for f in &frames {
            assert_eq!(f.function.as_deref(), Some("do_syscall_64"), "{f:?}");
        }
    }

    #[test]
    fn unmapped_address_is_unnamed_with_its_address() {
        let frames = StackSymbolizer::new().user_frames(None, &[0x1234]);
        assert_eq!(frames[0].function, None);
        assert_eq!(frames[0].name(), "[unknown]+0x1234");
    }

    #[test]
    fn names_our_own_function_from_its_file_offset() {
        // This test binary is a real ELF file with symbols: symbolize one of its functions.
        let maps = ProcessMaps::read(std::process::id()).unwrap();
        let addr = names_our_own_function_from_its_file_offset as fn() as usize as u64;
        // With DWARF, and from the ELF symbol table alone (the daemon's way).
        for mut s in [StackSymbolizer::new(), StackSymbolizer::names_only()] {
            s.prepare_user([(Some(&maps), &[addr][..])]);
            let frames = s.user_frames(Some(&maps), &[addr]);
            let name = frames[0].function.clone().unwrap_or_default();
            assert!(
                name.ends_with("names_our_own_function_from_its_file_offset"),
                "got {name:?}"
            );
        }
    }
}
