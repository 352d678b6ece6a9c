//! Uprobes through BPF `uprobe_multi` links (Linux 6.6+), which need only
//! CAP_BPF and CAP_PERFMON.
//!
//! The other way to attach a uprobe, a perf event of the `uprobe` PMU (what
//! aya 0.14 does), needs CAP_SYS_ADMIN since Linux 6.16 and the stable
//! kernels that took the same fix (commit ba677dbe77af, "perf: Revert to
//! requiring CAP_SYS_ADMIN for uprobes": a probe placed inside an
//! instruction can corrupt the traced program). A `uprobe_multi` link is
//! created by bpf(2) with the program's own privileges, CAP_BPF + CAP_PERFMON,
//! so the leaks tracer uses it wherever the kernel has it.
//!
//! aya 0.14 can neither load a program for this attach type nor create the
//! link, so both are done here: the programs are taken from the same object
//! that aya loaded, relocated against the maps aya created (aya-obj, the
//! crate aya itself uses for this), and loaded with
//! `expected_attach_type = BPF_TRACE_UPROBE_MULTI`.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
    sync::OnceLock,
};

use aya::{Ebpf, maps::Map};

use crate::bpf_sys::{bpf, cmd};

/// bpf(2) constants (include/uapi/linux/bpf.h).
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE with the `uprobe_multi` member.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
}

/// Why the programs could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum UprobeMultiError {
    /// The embedded object could not be parsed or relocated.
    #[error("preparing {program} for a uprobe_multi link: {problem}")]
    Object {
        /// The program.
        program: String,
        /// What failed.
        problem: String,
    },
    /// The verifier refused a program.
    #[error("the kernel refused the eBPF program {program}: {source}{log}")]
    Load {
        /// The program.
        program: String,
        /// The errno.
        #[source]
        source: io::Error,
        /// The end of the verifier's log, when it said something.
        log: String,
    },
    /// The link could not be created.
    #[error("{0}")]
    Link(#[source] io::Error),
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf(2) and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Whether this kernel can attach `uprobe_multi` links, probed once as libbpf
/// does: a link on `/` must fail with EBADF (not a regular file) where the
/// attach type exists, and with EINVAL where it does not.
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // r0 = 0; exit
        let insns: [u64; 2] = [0xb7, 0x95];
        let Ok(prog) = load_insns("probe_upm", &insns, b"GPL\0", 0, None) else {
            return false;
        };
        let offset = 0u64;
        let link = create_link(prog.as_fd().as_raw_fd(), c"/", &[offset], 0, false);
        matches!(link, Err(e) if e.raw_os_error() == Some(libc::EBADF))
    })
}

fn load_insns(
    name: &str,
    insns: &[u64],
    license: &[u8],
    kern_version: u32,
    log: Option<&mut Vec<u8>>,
) -> io::Result<OwnedFd> {
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        kern_version,
        expected_attach_type: BPF_TRACE_UPROBE_MULTI,
        ..ProgLoadAttr::default()
    };
    // The kernel keeps 15 bytes and a NUL, as it does for aya's programs
    // (the daemon's self-metrics name programs by it).
    let n = name.len().min(15);
    attr.prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    if let Some(buf) = log {
        attr.log_level = 1;
        attr.log_size = buf.len() as u32;
        attr.log_buf = buf.as_mut_ptr() as u64;
    }
    bpf(cmd::PROG_LOAD, &mut attr).map(owned)
}

fn create_link(
    prog: RawFd,
    path: &std::ffi::CStr,
    offsets: &[u64],
    pid: u32,
    retprobe: bool,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog as u32,
        attach_type: BPF_TRACE_UPROBE_MULTI,
        path: path.as_ptr() as u64,
        offsets: offsets.as_ptr() as u64,
        cnt: offsets.len() as u32,
        multi_flags: if retprobe {
            BPF_F_UPROBE_MULTI_RETURN
        } else {
            0
        },
        pid,
        ..LinkCreateAttr::default()
    };
    bpf(cmd::LINK_CREATE, &mut attr).map(owned)
}

/// The fd of a map aya created, whatever its kind.
fn map_fd(map: &Map) -> Option<RawFd> {
    use Map::*;
    let data = match map {
        Array(d) | BloomFilter(d) | HashMap(d) | LruHashMap(d) | PerCpuArray(d)
        | PerCpuHashMap(d) | PerCpuLruHashMap(d) | PerfEventArray(d) | ProgramArray(d)
        | Queue(d) | RingBuf(d) | Stack(d) | StackTraceMap(d) | LpmTrie(d) | Unsupported(d) => d,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}

/// Programs loaded for `uprobe_multi` links, by name.
#[derive(Debug)]
pub struct MultiPrograms {
    programs: HashMap<String, OwnedFd>,
}

impl MultiPrograms {
    /// Loads `names` from `object` (the bytes `ebpf` was loaded from), with
    /// their map references pointing at `ebpf`'s maps.
    pub fn load(
        object: &[u8],
        ebpf: &Ebpf,
        names: &HashSet<&'static str>,
    ) -> Result<Self, UprobeMultiError> {
        let err = |program: &str, problem: String| UprobeMultiError::Object {
            program: program.to_string(),
            problem,
        };
        let mut obj = aya_obj::Object::parse(object).map_err(|e| err("object", e.to_string()))?;
        let defs = obj.maps.clone();
        let mut fds = Vec::new();
        for name in defs.keys() {
            let map = ebpf
                .map(name)
                .ok_or_else(|| err("object", format!("map {name} was not created")))?;
            let fd = map_fd(map).ok_or_else(|| err("object", format!("map {name} has no fd")))?;
            fds.push((name.as_str(), fd, &defs[name]));
        }
        let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(fds.into_iter(), &text)
            .map_err(|e| err("object", e.to_string()))?;
        obj.relocate_calls(&text)
            .map_err(|e| err("object", e.to_string()))?;
        let mut programs = HashMap::new();
        for &name in names {
            let program = obj
                .programs
                .get(name)
                .ok_or_else(|| err(name, "not in the object".into()))?;
            let function = obj
                .functions
                .get(&program.function_key())
                .ok_or_else(|| err(name, "its code is not in the object".into()))?;
            // SAFETY: bpf_insn is a plain 8-byte repr(C) struct, as u64 is;
            // the slice covers exactly the instructions.
            let insns: &[u64] = unsafe {
                std::slice::from_raw_parts(
                    function.instructions.as_ptr().cast::<u64>(),
                    function.instructions.len(),
                )
            };
            let license = program.license.as_bytes_with_nul();
            let version = program.kernel_version.unwrap_or(0);
            let fd = match load_insns(name, insns, license, version, None) {
                Ok(fd) => fd,
                Err(source) => {
                    // Load again with the verifier's log, for the message.
                    let mut log = vec![0u8; 1 << 20];
                    let _ = load_insns(name, insns, license, version, Some(&mut log));
                    return Err(UprobeMultiError::Load {
                        program: name.to_string(),
                        source,
                        log: log_tail(&log),
                    });
                }
            };
            programs.insert(name.to_string(), fd);
        }
        Ok(Self { programs })
    }

    /// Attaches `program` at `offsets` in `path` for process `pid` only;
    /// dropping the returned fd detaches it.
    pub fn attach(
        &self,
        program: &str,
        path: &Path,
        offsets: &[u64],
        pid: u32,
        retprobe: bool,
    ) -> Result<OwnedFd, UprobeMultiError> {
        let prog = self.programs.get(program).ok_or_else(|| {
            UprobeMultiError::Link(io::Error::other(format!("program {program} not loaded")))
        })?;
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| UprobeMultiError::Link(io::Error::other(e)))?;
        create_link(prog.as_raw_fd(), &path, offsets, pid, retprobe).map_err(UprobeMultiError::Link)
    }
}

/// The last lines of a verifier log, for an error message.
fn log_tail(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
    format!("\nverifier log (end):\n  {tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_have_the_kernel_layout() {
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, path), 16);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, cnt), 48);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, pid), 56);
        assert_eq!(size_of::<LinkCreateAttr>(), 64);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let log = b"a\nb\nc\nd\ne\nf\ng\0\0\0";
        let t = log_tail(log);
        assert!(t.ends_with("c\n  d\n  e\n  f\n  g"), "{t}");
        assert_eq!(log_tail(b"\0\0"), "");
    }
}
