//! Which kind of tracepoint programs a latency collector attaches.
//!
//! Block I/O and TCP latency each have two sets of programs on the same
//! tracepoints: BTF tracepoints (tp_btf), which read the kernel's structs at
//! offsets from its BTF and cost less, and classic tracepoints, which read
//! the record the kernel fills, at offsets from tracefs, on any kernel.

use std::fmt::Display;

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, ProgramError, TracePoint},
};

use crate::{
    btf::SYSFS_BTF,
    btf_layout::{Layout, LayoutError},
};

/// Which kind of tracepoint programs to attach.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Tracepoints {
    /// BTF tracepoints where the kernel has BTF, classic ones otherwise.
    #[default]
    Auto,
    /// BTF tracepoints (tp_btf) only: fail when the kernel cannot.
    Btf,
    /// Classic tracepoints (tracefs record formats) only.
    Classic,
}

impl Tracepoints {
    /// As the flag and the JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            Tracepoints::Auto => "auto",
            Tracepoints::Btf => "btf",
            Tracepoints::Classic => "classic",
        }
    }
}

/// Checks that BTF tracepoint `tp` takes the arguments the program reads:
/// `want` first (later ones are not read). `Ok(false)` when the kernel has
/// no such tracepoint and `optional` says that is fine.
pub fn check_args(
    layout: &Layout,
    tp: &str,
    want: &[&str],
    exact: bool,
    optional: bool,
) -> Result<bool, LayoutError> {
    let params = match layout.tracepoint_params(tp) {
        Ok(p) => p,
        Err(LayoutError::Missing(_)) if optional => return Ok(false),
        Err(e) => return Err(e),
    };
    let fits = if exact {
        params.len() == want.len()
    } else {
        params.len() >= want.len()
    };
    if !fits || params.iter().zip(want).any(|(p, w)| p != w) {
        return Err(LayoutError::Shape {
            what: format!("tracepoint {tp}"),
            why: format!(
                "arguments ({}), the program reads ({})",
                params.join(", "),
                want.join(", ")
            ),
        });
    }
    Ok(true)
}

/// The offset of `path` in `struct strukt`, which must be `size` bytes
/// wide, as a program global (u16).
pub fn offset(layout: &Layout, strukt: &str, path: &str, size: u32) -> Result<u16, LayoutError> {
    let m = layout.member_sized(strukt, path, size)?;
    u16::try_from(m.offset).map_err(|_| LayoutError::Shape {
        what: format!("struct {strukt}.{path}"),
        why: format!("at offset {}, past what the program can address", m.offset),
    })
}

/// Attaches with `btf` unless `tracepoints` says classic; under `auto`, when that
/// fails, with `classic`, which is told why.
pub fn choose<T, E: Display>(
    tracepoints: Tracepoints,
    btf: impl FnOnce() -> Result<T, E>,
    classic: impl FnOnce(Option<String>) -> Result<T, E>,
) -> Result<T, E> {
    if tracepoints == Tracepoints::Classic {
        return classic(None);
    }
    match btf() {
        Ok(c) => Ok(c),
        Err(e) if tracepoints == Tracepoints::Btf => Err(e),
        Err(e) => classic(Some(e.to_string())),
    }
}

/// `reason`, when `auto` fell back to the classic programs on a kernel that
/// has BTF: worth a warning, since the BTF programs should have worked
/// there. (On a kernel without BTF, falling back is the normal case.)
pub fn unexpected_fallback(reason: Option<&str>) -> Option<&str> {
    reason.filter(|_| std::path::Path::new(SYSFS_BTF).exists())
}

/// Why a program of the object could not be attached.
#[derive(Debug)]
pub enum AttachError {
    /// The object has no such program (a build mismatch).
    Missing(&'static str),
    /// The kernel refused to load or attach it.
    Program {
        /// The program's name.
        program: &'static str,
        /// What went wrong.
        source: ProgramError,
    },
}

fn program_mut<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
) -> Result<&'a mut aya::programs::Program, AttachError> {
    ebpf.program_mut(program)
        .ok_or(AttachError::Missing(program))
}

/// Loads and attaches BTF tracepoint programs, each (tracepoint, program), in order.
pub fn attach_btf(
    ebpf: &mut Ebpf,
    btf: &Btf,
    programs: impl IntoIterator<Item = (&'static str, &'static str)>,
) -> Result<(), AttachError> {
    for (tracepoint, program) in programs {
        let err = |source| AttachError::Program { program, source };
        let prog: &mut BtfTracePoint = program_mut(ebpf, program)?.try_into().map_err(err)?;
        prog.load(tracepoint, btf).map_err(err)?;
        prog.attach().map_err(err)?;
    }
    Ok(())
}

/// Loads and attaches classic tracepoint programs, each (category,
/// tracepoint, program), in order.
pub fn attach_classic(
    ebpf: &mut Ebpf,
    programs: impl IntoIterator<Item = (&'static str, &'static str, &'static str)>,
) -> Result<(), AttachError> {
    for (category, tracepoint, program) in programs {
        let err = |source| AttachError::Program { program, source };
        let prog: &mut TracePoint = program_mut(ebpf, program)?.try_into().map_err(err)?;
        prog.load().map_err(err)?;
        prog.attach(category, tracepoint).map_err(err)?;
    }
    Ok(())
}
