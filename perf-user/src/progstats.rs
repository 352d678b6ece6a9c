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
    crate::bpf_sys::info_by_fd(fd.as_raw_fd(), &mut info)?;
    Ok(ProgStats {
        run_count: info.run_cnt,
        run_time_ns: info.run_time_ns,
        recursion_misses: info.recursion_misses,
    })
}
