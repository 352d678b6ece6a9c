//! Off-CPU time on the BTF tracepoint `sched_switch` (tp_btf), where the
//! kernel has BTF: the same accounting as `offcpu.rs`, without the record
//! the classic tracepoint makes the kernel fill at every switch (two comms,
//! priorities) and the program copy out again. The arguments are
//! `(bool preempt, struct task_struct *prev, struct task_struct *next,
//! unsigned int prev_state)`; the arriving thread's id is read from `next`
//! at the offset user space took from the kernel's BTF.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use perf_ebpf_common::offcpu::state;

use crate::{kmem::load, offcpu::switch};

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_btf(ctx: BtfTracePointContext) -> i32 {
    let preempt: u64 = ctx.arg(0);
    let next: *const u8 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    // SAFETY: the offset of `pid` (4 bytes) in `struct task_struct`, from
    // the kernel's BTF (collectors/offcpu.rs); `next` is the tracepoint's
    // task pointer.
    let next_tid: u32 = unsafe {
        let cfg = core::ptr::read_volatile(&raw const crate::offcpu::OFFCPU_CONFIG);
        load(next, cfg.task.pid)
    };
    switch(
        &ctx,
        state::from_task_state(preempt & 0xff != 0, prev_state as u32),
        next_tid,
        true,
    );
    0
}
