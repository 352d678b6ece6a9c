//! Turns raw stack addresses into named frames with blazesym.
//!
//! User addresses are first translated to (file, file offset) through the
//! process's mappings as captured while it ran, so a process that has exited
//! is symbolized the same way as a live one. Results are cached per
//! (file, offset) and per kernel address; blazesym itself caches each parsed
//! ELF file, so a binary shared by many processes is read once.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Kernel, Source},
};

use crate::{
    procmaps::{Backing, ProcessMaps},
    profile::Frame,
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
}

/// One user address, resolved to the place it should be looked up.
#[derive(Clone, Debug)]
enum UserSite {
    File {
        path: PathBuf,
        module: String,
        offset: u64,
    },
    Unnamed {
        module: String,
        offset: u64,
    },
}

/// Symbolizes stacks; keep one for a whole report.
pub struct StackSymbolizer {
    blaze: Symbolizer,
    kernel: HashMap<u64, SymInfo>,
    user: HashMap<(PathBuf, u64), SymInfo>,
    /// Files that could not be read, with the reason; reported once each.
    failures: HashMap<PathBuf, String>,
    /// Names only, from the ELF symbol tables, and no file kept parsed
    /// after its batch (see `names_only`).
    names_only: bool,
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
            failures: HashMap::new(),
            names_only: false,
        }
    }

    /// A symbolizer for the daemon, which exports names only and must stay
    /// small: names come from the ELF symbol tables alone (parsing the DWARF
    /// of every sampled binary, hundreds of MiB for a compiler, would cost
    /// memory for nothing), and each file is forgotten once its batch is
    /// named, so at most one file's symbols are held at a time. Stripped
    /// binaries whose names live only in a separate debug file are then
    /// named by their dynamic symbols, or not at all.
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

    /// Looks up every (file, offset) of these user stacks in one batch per file.
    pub fn prepare_user<'a>(
        &mut self,
        stacks: impl IntoIterator<Item = (Option<&'a ProcessMaps>, &'a [u64])>,
    ) {
        let mut todo: HashMap<PathBuf, HashSet<u64>> = HashMap::new();
        for (maps, addrs) in stacks {
            for (i, &addr) in addrs.iter().enumerate() {
                if let UserSite::File { path, offset, .. } = user_site(maps, lookup_addr(i, addr))
                    && !self.user.contains_key(&(path.clone(), offset))
                {
                    todo.entry(path).or_default().insert(offset);
                }
            }
        }
        for (path, offsets) in todo {
            let offsets: Vec<u64> = offsets.into_iter().collect();
            let src = Source::Elf(Elf {
                debug_syms: !self.names_only,
                ..Elf::new(path.clone())
            });
            let infos = self.lookup(&src, Input::FileOffset(&offsets), &path);
            for (offset, info) in offsets.into_iter().zip(infos) {
                self.user.insert((path.clone(), offset), info);
            }
            self.forget_files();
        }
    }

    /// In names-only mode, drops what blazesym has parsed and mapped (a new
    /// one starts with empty caches; the names found stay in ours).
    fn forget_files(&mut self) {
        if self.names_only {
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
                    file: info.file,
                    line: info.line,
                    kernel: true,
                })
            })
            .collect()
    }

    /// Frames for a user stack given leaf first; returned root first.
    pub fn user_frames(&self, maps: Option<&ProcessMaps>, addrs: &[u64]) -> Vec<Arc<Frame>> {
        addrs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &addr)| {
                let (module, offset, info) = match user_site(maps, lookup_addr(i, addr)) {
                    UserSite::File {
                        path,
                        module,
                        offset,
                    } => {
                        let info = self.user.get(&(path, offset)).cloned().unwrap_or_default();
                        (module, offset, info)
                    }
                    UserSite::Unnamed { module, offset } => (module, offset, SymInfo::default()),
                };
                // Show the offset of the sampled address itself, not the adjusted one.
                let offset = offset + (addr - lookup_addr(i, addr));
                Arc::new(Frame {
                    function: info.name,
                    module,
                    offset,
                    address: addr,
                    file: info.file,
                    line: info.line,
                    kernel: false,
                })
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

fn user_site(maps: Option<&ProcessMaps>, addr: u64) -> UserSite {
    let Some(m) = maps.and_then(|m| m.find(addr)) else {
        return UserSite::Unnamed {
            module: UNKNOWN_MODULE.into(),
            offset: addr,
        };
    };
    let offset = addr - m.start + m.offset;
    match &m.backing {
        Backing::File(path) | Backing::DeletedFile(path) => UserSite::File {
            path: path.clone(),
            module: m.backing.module_name(),
            offset,
        },
        Backing::Pseudo(name) => UserSite::Unnamed {
            module: name.clone(),
            offset,
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
            SymInfo {
                name: Some(sym.name.into_owned()),
                file,
                line,
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
