//! Types shared by the kernel programs (perf-ebpf) and user space (perf-user).
//!
//! Every type is `#[repr(C)]` with explicit padding fields, so the layout the
//! BPF verifier sees is the layout user space reads; the `layout` tests pin it.
#![no_std]

pub mod alloc;
pub mod block;
pub mod hist;
pub mod offcpu;
pub mod tcp;
pub mod unwind;

/// Length of `task_struct::comm`, NUL included.
pub const TASK_COMM_LEN: usize = 16;

/// Default capacity of the sample-count map: distinct (pid, tid, stacks) keys.
pub const SAMPLE_MAP_ENTRIES: u32 = 16_384;
/// Default capacity of the stack-trace map: distinct stacks, user and kernel.
pub const STACK_MAP_ENTRIES: u32 = 16_384;
/// Most PIDs that `profile --pid` can select at once.
pub const PID_FILTER_ENTRIES: u32 = 1_024;
/// PIDs remembered as already announced to user space.
pub const SEEN_PID_ENTRIES: u32 = 8_192;
/// Ring buffer for new-PID announcements (a power of two of pages).
pub const NEW_PID_RING_BYTES: u32 = 64 * 1024;
/// Frames the kernel keeps per stack (PERF_MAX_STACK_DEPTH).
pub const MAX_STACK_DEPTH: usize = 127;

/// `user_stack_id` / `kernel_stack_id` when that stack was not asked for.
pub const STACK_NOT_COLLECTED: i32 = -1;
/// The stack had no frames (e.g. no kernel frames for a sample taken in user mode).
pub const STACK_EMPTY: i32 = -2;
/// The stack could not be stored (hash collision or a full stack map); counted in `counter`.
pub const STACK_LOST: i32 = -3;

/// One bucket of the CPU profile: samples per thread and stack pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleKey {
    /// Thread-group id (what user space calls the PID).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Id in the stack map, or one of the `STACK_*` markers.
    pub user_stack_id: i32,
    /// Id in the stack map, or one of the `STACK_*` markers.
    pub kernel_stack_id: i32,
    /// The thread's name when sampled.
    pub comm: [u8; TASK_COMM_LEN],
}

/// What the CPU sampler records; written once before load as a global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleConfig {
    /// 1: count only PIDs present in the PID filter map.
    pub filter_pids: u8,
    /// 1: count only threads whose comm equals `comm`.
    pub filter_comm: u8,
    /// 1: keep samples of the idle task (pid 0).
    pub include_idle: u8,
    /// 1: collect user stacks.
    pub user_stacks: u8,
    /// 1: collect kernel stacks.
    pub kernel_stacks: u8,
    /// 1: walk user stacks with the unwind tables of processes that have
    /// them loaded (perf-ebpf/src/unwind.rs), frame pointers otherwise.
    pub dwarf: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 2],
    /// NUL-padded comm to match when `filter_comm` is 1.
    pub comm: [u8; TASK_COMM_LEN],
}

impl SampleConfig {
    /// Everything off; the kernel side's initial value.
    pub const fn zeroed() -> Self {
        Self {
            filter_pids: 0,
            filter_comm: 0,
            include_idle: 0,
            user_stacks: 0,
            kernel_stacks: 0,
            dwarf: 0,
            _pad: [0; 2],
            comm: [0; TASK_COMM_LEN],
        }
    }
}

/// Indices into the per-CPU `CPU_COUNTERS` array.
pub mod counter {
    /// Samples the program ran for (before filtering).
    pub const SAMPLES_SEEN: u32 = 0;
    /// Samples counted in the sample map.
    pub const SAMPLES_COUNTED: u32 = 1;
    /// Samples dropped because the sample map was full.
    pub const SAMPLE_MAP_FULL: u32 = 2;
    /// User stacks lost to a stack-map hash collision.
    pub const USER_STACK_COLLISION: u32 = 3;
    /// User stacks lost for another reason (stack map full, fault).
    pub const USER_STACK_ERROR: u32 = 4;
    /// Kernel stacks lost to a stack-map hash collision.
    pub const KERNEL_STACK_COLLISION: u32 = 5;
    /// Kernel stacks lost for another reason.
    pub const KERNEL_STACK_ERROR: u32 = 6;
    /// New-PID announcements dropped because the ring buffer was full.
    pub const NEW_PID_DROPPED: u32 = 7;
    /// Number of counters.
    pub const LEN: u32 = 8;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are #[repr(C)], Copy, made only of integers and byte
    // arrays, with explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::SampleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SampleConfig {}
}

#[cfg(test)]
mod layout {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn no_implicit_padding() {
        assert_eq!(size_of::<SampleKey>(), 4 * 4 + TASK_COMM_LEN);
        assert_eq!(align_of::<SampleKey>(), 4);
        assert_eq!(size_of::<SampleConfig>(), 8 + TASK_COMM_LEN);
    }
}
