//! Which file holds a process's allocator, and where its functions are.
//!
//! A process calls the `malloc` that the dynamic linker binds first: the
//! executable's own (statically linked, or a custom allocator), then a
//! preloaded or linked allocator library (jemalloc, tcmalloc, mimalloc…),
//! then the C library. [`choose`] ranks the files a process maps the same way;
//! `--allocator PATH` overrides it. Symbols come from the ELF file itself
//! (dynamic symbols first, then the full symbol table of unstripped files).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use object::{
    Endianness, Object as _, ObjectSymbol as _,
    elf::{PT_LOAD, STT_GNU_IFUNC},
    read::elf::{ElfFile64, FileHeader as _, ProgramHeader as _},
};

use crate::{
    collectors::alloc::{FUNCTIONS, ProbeSite, has_return_probe},
    leaks::probe_site,
    procmaps::{Backing, ProcessMaps},
};

/// The dynamic linker function called after every change to the list of
/// loaded objects (the debugger interface of glibc and musl).
pub const DL_DEBUG_STATE: &str = "_dl_debug_state";
/// The dynamic linker's `struct r_debug`, whose `r_state` tells whether the
/// change is complete.
pub const R_DEBUG: &str = "_r_debug";

/// Library names of allocators that replace the C library's: preferred over
/// other libraries that happen to define `malloc`.
const KNOWN_ALLOCATORS: &[&str] = &[
    "jemalloc", "tcmalloc", "mimalloc", "snmalloc", "rpmalloc", "hoard",
];

/// Why no allocator could be found or read.
#[derive(Debug, thiserror::Error)]
pub enum AllocatorError {
    /// A file could not be read. The OS error is part of the message, not
    /// a source, so that `{:#}` prints it once.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        cause: std::io::Error,
    },
    /// A file is not a 64-bit ELF file.
    #[error("{} is not a 64-bit ELF file ({reason})", path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// `--allocator PATH` names a file without malloc and free.
    #[error(
        "{} defines no {missing} symbol; give the library or executable that holds the \
         allocator (`nm -D FILE | grep -w malloc` shows whether it has one)",
        path.display()
    )]
    NotAnAllocator {
        /// The file.
        path: PathBuf,
        /// The missing function(s).
        missing: String,
    },
    /// No file the process maps defines malloc and free.
    #[error(
        "no allocator found in {what}: none of the files it maps defines both malloc and free \
         (looked in: {files}). A statically linked, stripped binary has no symbols to probe; \
         if the program has its own allocator, give its file with --allocator PATH"
    )]
    NotFound {
        /// The process, e.g. `PID 42 (app)`.
        what: String,
        /// The files looked at.
        files: String,
    },
}

/// A summary of one ELF file: the symbols asked for and its load segments.
#[derive(Clone, Debug, Default)]
pub struct ElfSummary {
    /// `PT_INTERP`: the dynamic linker; `None` for a static executable or a library.
    pub interpreter: Option<PathBuf>,
    /// Virtual address of each requested function or object symbol found.
    pub symbols: HashMap<String, u64>,
    /// Requested symbols that are GNU indirect functions: their address is a
    /// resolver, not the function, so they cannot be probed there.
    pub indirect: Vec<String>,
    /// `PT_LOAD` segments: (virtual address, file offset, file size).
    pub loads: Vec<(u64, u64, u64)>,
    /// `e_machine`.
    pub machine: u16,
    /// The first bytes of each function in `symbols` (up to 16).
    pub code: HashMap<String, Vec<u8>>,
}

impl ElfSummary {
    /// Reads `path` and looks up `wanted` among its dynamic symbols, then its
    /// full symbol table.
    pub fn read(path: &Path, wanted: &[&str]) -> Result<Self, AllocatorError> {
        let read_error = |cause| AllocatorError::Read {
            path: path.to_path_buf(),
            cause,
        };
        // A device or a FIFO (`--allocator /dev/zero`) would be read forever.
        if !fs::metadata(path).map_err(read_error)?.is_file() {
            return Err(read_error(std::io::Error::other("not a regular file")));
        }
        let data = fs::read(path).map_err(read_error)?;
        Self::parse(&data, wanted).map_err(|reason| AllocatorError::NotElf {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// As [`Self::read`], from the file's bytes.
    pub fn parse(data: &[u8], wanted: &[&str]) -> Result<Self, String> {
        let elf = ElfFile64::<Endianness>::parse(data).map_err(|e| e.to_string())?;
        let endian = elf.endian();
        let mut out = ElfSummary::default();
        for ph in elf.elf_program_headers() {
            if let Ok(Some(interp)) = ph.interpreter(endian, data) {
                out.interpreter = Some(PathBuf::from(String::from_utf8_lossy(interp).as_ref()));
            }
            if ph.p_type(endian) == PT_LOAD {
                out.loads
                    .push((ph.p_vaddr(endian), ph.p_offset(endian), ph.p_filesz(endian)));
            }
        }
        // Dynamic symbols are what the dynamic linker binds; the full table
        // (unstripped files only) adds a static binary's functions.
        for sym in elf.dynamic_symbols().chain(elf.symbols()) {
            if !sym.is_definition() || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            if !wanted.contains(&name) || out.symbols.contains_key(name) {
                continue;
            }
            if sym.elf_symbol().st_type() == STT_GNU_IFUNC {
                out.indirect.push(name.to_string());
                continue;
            }
            out.symbols.insert(name.to_string(), sym.address());
        }
        out.machine = elf.elf_header().e_machine(endian);
        for (name, &vaddr) in &out.symbols {
            if let Some(at) = out.file_offset(vaddr).and_then(|o| usize::try_from(o).ok()) {
                let end = (at + 16).min(data.len());
                out.code
                    .insert(name.clone(), data[at.min(end)..end].to_vec());
            }
        }
        Ok(out)
    }

    /// File offset of virtual address `vaddr`, when a load segment holds it.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|(va, _, size)| vaddr >= *va && vaddr - va < *size)
            .map(|(va, off, _)| vaddr - va + off)
    }

    /// Virtual address of file offset `offset`, when a load segment maps it.
    pub fn vaddr_of_offset(&self, offset: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|(_, off, size)| offset >= *off && offset - off < *size)
            .map(|(va, off, _)| offset - off + va)
    }
}

/// An allocator: a file and where its functions are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocator {
    /// The file (as the process maps it).
    pub path: PathBuf,
    /// The functions found, with their file offsets.
    pub sites: Vec<ProbeSite>,
    /// Functions of [`FUNCTIONS`] the file does not define (e.g. `reallocarray`
    /// in an old C library); their calls are not seen.
    pub missing: Vec<&'static str>,
}

impl Allocator {
    /// The allocator in `path`, or `None` when it lacks malloc or free.
    pub fn in_file(path: &Path) -> Result<Option<Self>, AllocatorError> {
        let names: Vec<&str> = FUNCTIONS.iter().map(|(f, _)| *f).collect();
        let elf = ElfSummary::read(path, &names)?;
        Ok(Self::from_summary(path, &elf))
    }

    fn from_summary(path: &Path, elf: &ElfSummary) -> Option<Self> {
        let mut sites = Vec::new();
        let mut missing = Vec::new();
        for &(function, program) in FUNCTIONS {
            match elf.symbols.get(function).and_then(|&a| elf.file_offset(a)) {
                Some(offset) => sites.push(ProbeSite {
                    function,
                    program,
                    offset,
                    // Only a function without a return probe can be probed
                    // past its entry.
                    entry_offset: offset
                        + if has_return_probe(function) {
                            0
                        } else {
                            let code = elf.code.get(function).map_or(&[][..], Vec::as_slice);
                            probe_site::entry_skip(elf.machine, code)
                        },
                }),
                None => missing.push(function),
            }
        }
        let has = |f: &str| sites.iter().any(|s| s.function == f);
        (has("malloc") && has("free")).then(|| Self {
            path: path.to_path_buf(),
            sites,
            missing,
        })
    }

    /// The allocator `--allocator PATH` names; an error when it has none.
    pub fn chosen(path: &Path) -> Result<Self, AllocatorError> {
        let names: Vec<&str> = FUNCTIONS.iter().map(|(f, _)| *f).collect();
        let elf = ElfSummary::read(path, &names)?;
        Self::from_summary(path, &elf).ok_or_else(|| {
            let missing: Vec<&str> = ["malloc", "free"]
                .into_iter()
                .filter(|f| !elf.symbols.contains_key(*f))
                .collect();
            AllocatorError::NotAnAllocator {
                path: path.to_path_buf(),
                missing: missing.join(" or "),
            }
        })
    }
}

/// How likely a file is to hold the allocator the process uses; lower first.
fn rank(path: &Path, exe: Option<&Path>, interpreter: Option<&Path>) -> u8 {
    let same = |other: Option<&Path>| other.is_some_and(|o| same_file(o, path));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if same(exe) {
        0
    } else if KNOWN_ALLOCATORS.iter().any(|a| name.contains(a)) {
        1
    } else if same(interpreter) {
        // glibc's dynamic linker has a minimal allocator for its own start-up;
        // musl's is the C library itself and so is taken when nothing else is.
        5
    } else if name.starts_with("libc.so")
        || name.starts_with("libc-")
        || name.starts_with("libc.musl")
    {
        3
    } else {
        2
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || match (fs::canonicalize(a), fs::canonicalize(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

/// Files backing a process's executable mappings, in address order, once each.
pub fn mapped_files(maps: &ProcessMaps) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for m in &maps.mappings {
        if let Backing::File(p) = &m.backing
            && !out.contains(p)
        {
            out.push(p.clone());
        }
    }
    out
}

/// Picks the allocator of a process from the files it maps. `what` names the
/// process in errors; `exe` is its executable.
pub fn choose(
    maps: &ProcessMaps,
    exe: Option<&Path>,
    what: &str,
) -> Result<Allocator, AllocatorError> {
    let files = mapped_files(maps);
    let interpreter = exe
        .and_then(|e| ElfSummary::read(e, &[]).ok())
        .and_then(|s| s.interpreter);
    let mut ranked: Vec<(u8, usize, &PathBuf)> = files
        .iter()
        .enumerate()
        .map(|(i, p)| (rank(p, exe, interpreter.as_deref()), i, p))
        .collect();
    ranked.sort();
    for (_, _, path) in ranked {
        // Unreadable or odd files (a deleted library, a 32-bit helper) cannot
        // be probed anyway; the next candidate may be the one.
        if let Ok(Some(found)) = Allocator::in_file(path) {
            return Ok(found);
        }
    }
    Err(AllocatorError::NotFound {
        what: what.to_string(),
        files: if files.is_empty() {
            "no file-backed code at all".into()
        } else {
            files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libc_path() -> Option<PathBuf> {
        let maps = ProcessMaps::read(std::process::id()).ok()?;
        mapped_files(&maps).into_iter().find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
        })
    }

    #[test]
    fn finds_malloc_and_free_in_the_c_library() {
        // This test binary links the C library dynamically.
        let Some(libc) = libc_path() else {
            return;
        };
        let a = Allocator::in_file(&libc).unwrap().expect("libc has malloc");
        let functions: Vec<&str> = a.sites.iter().map(|s| s.function).collect();
        for f in ["malloc", "free", "calloc", "realloc", "posix_memalign"] {
            assert!(functions.contains(&f), "{f} missing from {functions:?}");
        }
        // Offsets are file offsets inside the file.
        let len = fs::metadata(&libc).unwrap().len();
        assert!(a.sites.iter().all(|s| s.offset > 0 && s.offset < len));
        // Functions with a return probe are probed at their entry; free at
        // most a few bytes in (leaks::probe_site).
        for s in &a.sites {
            let skip = s.entry_offset - s.offset;
            if has_return_probe(s.function) {
                assert_eq!(skip, 0, "{} moved", s.function);
            } else {
                assert!(skip <= 4, "{} moved by {skip}", s.function);
            }
        }
    }

    #[test]
    fn this_process_uses_the_c_library_allocator() {
        let maps = ProcessMaps::read(std::process::id()).unwrap();
        let exe = fs::read_link("/proc/self/exe").unwrap();
        let a = choose(&maps, Some(&exe), "this test").unwrap();
        let name = a.path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("libc"), "chose {}", a.path.display());
    }

    #[test]
    fn a_file_without_malloc_is_not_an_allocator() {
        let Some(libc) = libc_path() else {
            return;
        };
        // The dynamic linker's interpreter path is not an allocator in glibc,
        // but /bin/true certainly is not one: it only imports malloc.
        let e = Allocator::chosen(Path::new("/bin/true")).unwrap_err();
        assert!(e.to_string().contains("malloc"), "{e}");
        assert!(Allocator::chosen(&libc).is_ok());
        let e = Allocator::chosen(Path::new("/etc/hostname")).unwrap_err();
        assert!(e.to_string().contains("not a 64-bit ELF"), "{e}");
    }

    #[test]
    fn ranking_prefers_the_executable_then_allocator_libraries() {
        let exe = Path::new("/opt/app/bin/app");
        let interp = Path::new("/lib64/ld-linux-x86-64.so.2");
        let r = |p: &str| rank(Path::new(p), Some(exe), Some(interp));
        assert!(r("/opt/app/bin/app") < r("/usr/lib/libjemalloc.so.2"));
        assert!(r("/usr/lib/libjemalloc.so.2") < r("/usr/lib/libfoo.so"));
        assert!(r("/usr/lib/libfoo.so") < r("/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(r("/lib/x86_64-linux-gnu/libc.so.6") < r("/lib64/ld-linux-x86-64.so.2"));
    }

    #[test]
    fn offsets_and_addresses_convert_through_load_segments() {
        let elf = ElfSummary {
            loads: vec![(0x0, 0x0, 0x1000), (0x401000, 0x1000, 0x2000)],
            ..ElfSummary::default()
        };
        assert_eq!(elf.file_offset(0x401234), Some(0x1234));
        assert_eq!(elf.vaddr_of_offset(0x1234), Some(0x401234));
        assert_eq!(elf.file_offset(0x500000), None);
    }

    #[test]
    fn garbage_is_not_elf() {
        assert!(ElfSummary::parse(b"#!/bin/sh\necho hi\n", &["malloc"]).is_err());
    }
}
