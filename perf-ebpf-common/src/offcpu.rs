//! Off-CPU time: keys, values and configuration shared with
//! `perf-ebpf/src/offcpu.rs`.

use crate::TASK_COMM_LEN;

/// Threads off the CPU at once whose switch-out is remembered (an LRU map:
/// on a host with more sleeping threads than this, the longest-sleeping are
/// forgotten, and their time is not counted).
pub const OFFCPU_START_ENTRIES: u32 = 32_768;
/// Distinct (thread, stacks, state) keys summed.
pub const OFFCPU_TIME_ENTRIES: u32 = 16_384;
/// Distinct stacks, user and kernel.
pub const OFFCPU_STACK_ENTRIES: u32 = 16_384;
/// Most PIDs `--pid` can select at once.
pub const OFFCPU_PID_FILTER_ENTRIES: u32 = 1_024;

/// The state a thread left the CPU in, as `ps` letters it.
pub mod state {
    /// `R`: preempted while runnable (waiting for a CPU).
    pub const RUNNABLE: u32 = 0;
    /// `S`: interruptible sleep (sleep, poll, futex, socket reads...).
    pub const SLEEPING: u32 = 1;
    /// `D`: uninterruptible sleep, mostly waiting for disk I/O.
    pub const DISK: u32 = 2;
    /// Anything else: stopped, traced, idle kernel threads, exiting.
    pub const OTHER: u32 = 3;
    /// Number of states.
    pub const LEN: u32 = 4;

    /// Classifies the raw `prev_state` of the BTF tracepoint (`task->__state`
    /// as the scheduler saw it) with its `preempt` argument.
    #[inline(always)]
    pub const fn from_task_state(preempt: bool, raw: u32) -> u32 {
        // TASK_INTERRUPTIBLE 0x1, TASK_UNINTERRUPTIBLE 0x2, TASK_NOLOAD 0x400
        // (with UNINTERRUPTIBLE: TASK_IDLE, an idle kernel thread).
        if preempt || raw == 0 {
            RUNNABLE
        } else if raw & 0x1 != 0 {
            SLEEPING
        } else if raw & 0x2 != 0 && raw & 0x400 == 0 {
            DISK
        } else {
            OTHER
        }
    }

    /// Classifies the classic tracepoint's `prev_state`, which the kernel
    /// reports as one bit per `ps` letter (S 0x1, D 0x2, ... I 0x80) and
    /// TASK_REPORT_MAX (0x100) for a preempted task.
    #[inline(always)]
    pub const fn from_report(reported: u64) -> u32 {
        if reported == 0 || reported & 0x100 != 0 {
            RUNNABLE
        } else if reported & 0x1 != 0 {
            SLEEPING
        } else if reported & 0x2 != 0 {
            DISK
        } else {
            OTHER
        }
    }
}

/// Key of `OFFCPU_TIME`: time off the CPU per thread, stack pair and state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OffCpuKey {
    /// Thread-group id (the PID).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Id in `OFFCPU_STACKS`, or one of the `STACK_*` markers.
    pub user_stack_id: i32,
    /// Id in `OFFCPU_STACKS`, or one of the `STACK_*` markers.
    pub kernel_stack_id: i32,
    /// One of [`state`]'s values.
    pub state: u32,
    /// The thread's name when it left the CPU.
    pub comm: [u8; TASK_COMM_LEN],
}

/// Value of `OFFCPU_START`, by thread id: when and how the thread left.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpuStart {
    /// bpf_ktime_get_ns() at the switch-out.
    pub start_ns: u64,
    /// Where its time goes when it comes back.
    pub key: OffCpuKey,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

/// Offsets into `struct task_struct` for the BTF program (which is handed
/// the next task's pointer and reads its thread id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `pid` (the thread id), 4 bytes.
    pub pid: u16,
    /// Explicit padding; always zero.
    pub _pad: [u8; 6],
}

/// Where the classic program finds its fields in the sched_switch record:
/// one span (`base`, `len`) copied at once, offsets within it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchFields {
    /// Start of the span in the record.
    pub base: u16,
    /// Length of the span.
    pub len: u16,
    /// `prev_state` (a `long`) in the span.
    pub prev_state: u16,
    /// `next_pid` (a `pid_t`) in the span.
    pub next_pid: u16,
    /// Explicit padding; always zero.
    pub _pad: [u16; 4],
}

/// Longest span the classic program copies.
pub const SWITCH_SPAN_MAX: u16 = 64;

/// What the off-CPU programs record; written once before load as a global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpuConfig {
    /// Shorter absences are not counted (ns).
    pub min_ns: u64,
    /// With `filter_cgroup`: the cgroup v2 id (its directory's inode) whose
    /// subtree is kept.
    pub cgroup_id: u64,
    /// `task_struct` offsets (BTF program).
    pub task: TaskOffsets,
    /// The record's fields (classic program).
    pub classic: SwitchFields,
    /// 1: only PIDs in `OFFCPU_PID_FILTER`.
    pub filter_pids: u8,
    /// 1: only threads whose comm equals `comm`.
    pub filter_comm: u8,
    /// 1: only threads in the subtree of `cgroup_id`, at `cgroup_level`.
    pub filter_cgroup: u8,
    /// 1: record user stacks.
    pub user_stacks: u8,
    /// 1: record kernel stacks.
    pub kernel_stacks: u8,
    /// Depth of `cgroup_id` below the root (the root is 0).
    pub cgroup_level: u8,
    /// 1: walk user stacks with the unwind tables of the processes that
    /// have them loaded (BTF program only), frame pointers otherwise.
    pub dwarf: u8,
    /// Explicit padding; always zero.
    pub _pad: u8,
    /// NUL-padded comm to match when `filter_comm` is 1.
    pub comm: [u8; TASK_COMM_LEN],
}

impl OffCpuConfig {
    /// Everything off; the kernel side's initial value.
    pub const fn zeroed() -> Self {
        Self {
            min_ns: 0,
            cgroup_id: 0,
            task: TaskOffsets {
                pid: 0,
                _pad: [0; 6],
            },
            classic: SwitchFields {
                base: 0,
                len: 0,
                prev_state: 0,
                next_pid: 0,
                _pad: [0; 4],
            },
            filter_pids: 0,
            filter_comm: 0,
            filter_cgroup: 0,
            user_stacks: 0,
            kernel_stacks: 0,
            cgroup_level: 0,
            dwarf: 0,
            _pad: 0,
            comm: [0; TASK_COMM_LEN],
        }
    }
}

/// Indices into the per-CPU `OFFCPU_COUNTERS` array.
pub mod counter {
    /// sched_switch events the program ran for.
    pub const SWITCHES: u32 = 0;
    /// Switch-outs of threads the filters dropped (or the idle task).
    pub const FILTERED: u32 = 1;
    /// Switch-outs recorded (start time and stacks kept).
    pub const RECORDED: u32 = 2;
    /// Switch-ins whose absence was added to `OFFCPU_TIME`.
    pub const COUNTED: u32 = 3;
    /// Switch-ins of a recorded thread away for less than `min_ns`.
    pub const TOO_SHORT: u32 = 4;
    /// Absences lost because `OFFCPU_TIME` was full.
    pub const TIME_MAP_FULL: u32 = 5;
    /// Switch-outs not recorded because `OFFCPU_START` refused the entry.
    pub const START_MAP_FULL: u32 = 6;
    /// User stacks lost to a stack-map hash collision.
    pub const USER_STACK_COLLISION: u32 = 7;
    /// User stacks lost otherwise.
    pub const USER_STACK_ERROR: u32 = 8;
    /// Kernel stacks lost to a stack-map hash collision.
    pub const KERNEL_STACK_COLLISION: u32 = 9;
    /// Kernel stacks lost otherwise.
    pub const KERNEL_STACK_ERROR: u32 = 10;
    /// Number of counters.
    pub const LEN: u32 = 11;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers and byte arrays only, explicit
    // padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::OffCpuKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OffCpuStart {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OffCpuConfig {}
}

#[cfg(test)]
mod layout {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn no_implicit_padding() {
        assert_eq!(size_of::<OffCpuKey>(), 5 * 4 + TASK_COMM_LEN);
        assert_eq!(align_of::<OffCpuKey>(), 4);
        assert_eq!(size_of::<OffCpuStart>(), 8 + size_of::<OffCpuKey>() + 4);
        assert_eq!(size_of::<TaskOffsets>(), 8);
        assert_eq!(size_of::<SwitchFields>(), 16);
        assert_eq!(
            size_of::<OffCpuConfig>(),
            8 + 8 + 8 + 16 + 8 + TASK_COMM_LEN
        );
    }

    #[test]
    fn states_of_both_tracepoints() {
        use state::*;
        assert_eq!(from_task_state(true, 0x1), RUNNABLE);
        assert_eq!(from_task_state(false, 0), RUNNABLE);
        assert_eq!(from_task_state(false, 0x1), SLEEPING);
        assert_eq!(from_task_state(false, 0x2), DISK);
        assert_eq!(from_task_state(false, 0x402), OTHER);
        assert_eq!(from_report(0x100), RUNNABLE);
        assert_eq!(from_report(0x1), SLEEPING);
        assert_eq!(from_report(0x2), DISK);
        assert_eq!(from_report(0x80), OTHER);
    }
}
