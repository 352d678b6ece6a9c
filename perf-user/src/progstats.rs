//! The kernel's own statistics of a loaded BPF program: how often it ran, for
//! how long (when kernel.bpf_stats_enabled is 1), and how often the kernel
//! skipped it because another BPF program was already running on that CPU
//! (`recursion_misses`: events a tracepoint program never saw). aya exposes
//! the first two but not the last, so this asks the kernel directly.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya_obj::generated::bpf_prog_info;

/// bpf(2) command BPF_OBJ_GET_INFO_BY_FD.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `union bpf_attr`'s `info` member.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// What the kernel counts for one program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProgStats {
    /// Runs (counted only while kernel.bpf_stats_enabled is 1).
    pub run_count: u64,
    /// Total run time in ns (same condition).
    pub run_time_ns: u64,
    /// Times the kernel skipped the program because another BPF program was
    /// running on that CPU (always counted, Linux 5.12+).
    pub recursion_misses: u64,
}

/// Reads the statistics of the program behind `fd`.
pub fn read(fd: BorrowedFd<'_>) -> io::Result<ProgStats> {
    // SAFETY: bpf_prog_info is plain integers; all zero is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    // SAFETY: attr points to a valid InfoAttr whose info pointer and length
    // describe `info`, which outlives the call; the kernel writes at most
    // info_len bytes there.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>() as u32,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ProgStats {
        run_count: info.run_cnt,
        run_time_ns: info.run_time_ns,
        recursion_misses: info.recursion_misses,
    })
}
