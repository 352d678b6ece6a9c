//! Off-CPU time on sched:sched_switch (classic tracepoint; `offcpu_btf.rs`
//! is the BTF one): when a thread leaves the CPU, its stacks, state and the
//! time are kept by thread id; when it comes back, the time it was away is
//! added to (thread, stacks, state) in a per-CPU map.
//!
//! The program runs in the context of the thread leaving, so its stacks are
//! the current task's; the thread arriving is only known by id. Threads
//! the filters drop cost one check at switch-out and one missed lookup at
//! switch-in.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, BPF_F_USER_STACK},
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::{TracePointContext, tracing::StackIdContext},
};
use perf_ebpf_common::{
    STACK_EMPTY, STACK_LOST, STACK_NOT_COLLECTED,
    offcpu::{
        OFFCPU_PID_FILTER_ENTRIES, OFFCPU_STACK_ENTRIES, OFFCPU_START_ENTRIES, OFFCPU_TIME_ENTRIES,
        OffCpuConfig, OffCpuKey, OffCpuStart, SWITCH_SPAN_MAX, counter, state,
    },
};

use crate::{hist::bump, record::SpanBuf};

/// Set by user space before load.
#[unsafe(no_mangle)]
pub(crate) static OFFCPU_CONFIG: OffCpuConfig = OffCpuConfig::zeroed();

/// Threads off the CPU now, by thread id.
#[map]
static OFFCPU_START: LruHashMap<u32, OffCpuStart> =
    LruHashMap::with_max_entries(OFFCPU_START_ENTRIES, 0);

/// Nanoseconds off the CPU per key.
#[map]
static OFFCPU_TIME: PerCpuHashMap<OffCpuKey, u64> =
    PerCpuHashMap::with_max_entries(OFFCPU_TIME_ENTRIES, 0);

#[map]
static OFFCPU_STACKS: StackTrace = StackTrace::with_max_entries(OFFCPU_STACK_ENTRIES, 0);

#[map]
static OFFCPU_PID_FILTER: HashMap<u32, u8> =
    HashMap::with_max_entries(OFFCPU_PID_FILTER_ENTRIES, 0);

#[map]
static OFFCPU_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

const EEXIST: i32 = 17;
const EFAULT: i32 = 14;

fn conf() -> OffCpuConfig {
    // SAFETY: a read-only global that user space fills in before load.
    unsafe { core::ptr::read_volatile(&raw const OFFCPU_CONFIG) }
}

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let f = conf().classic;
    let mut buf = SpanBuf::<{ SWITCH_SPAN_MAX as usize / 8 }>::new();
    let Some(rec) = buf.read(&ctx, f.base, f.len) else {
        return 0;
    };
    let prev_state = state::from_report(rec.get::<i64>(f.prev_state) as u64);
    let next_tid = rec.get::<i32>(f.next_pid) as u32;
    // No unwind tables here: the task's user registers need the helpers of
    // BTF programs.
    switch(&ctx, prev_state, next_tid, false);
    0
}

/// One context switch: the current thread leaves in `prev_state`,
/// `next_tid` arrives.
#[inline(always)]
pub(crate) fn switch<C: EbpfContext + StackIdContext>(
    ctx: &C,
    prev_state: u32,
    next_tid: u32,
    tables: bool,
) {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    bump(&OFFCPU_COUNTERS, counter::SWITCHES);
    leave(ctx, prev_state, now, tables);
    arrive(next_tid, now);
}

#[inline(always)]
fn leave<C: EbpfContext + StackIdContext>(ctx: &C, prev_state: u32, now: u64, tables: bool) {
    let cfg = conf();
    let pid = ctx.tgid();
    let tid = ctx.pid();
    if pid == 0 || !wanted(&cfg, pid) {
        bump(&OFFCPU_COUNTERS, counter::FILTERED);
        return;
    }
    let comm = ctx.command().unwrap_or([0; 16]);
    if cfg.filter_comm != 0 && comm != cfg.comm {
        bump(&OFFCPU_COUNTERS, counter::FILTERED);
        return;
    }
    // With `tables`, a process whose unwind tables are loaded is walked
    // with them, from the user registers it entered the kernel with.
    let unwound = if tables && cfg.dwarf != 0 && cfg.user_stacks != 0 {
        crate::unwind::user_regs_of_current()
            .and_then(|regs| crate::unwind::user_stack_id(pid, regs))
    } else {
        None
    };
    let user_stack_id = if let Some(id) = unwound {
        id
    } else if cfg.user_stacks != 0 {
        stack_id(
            ctx,
            BPF_F_USER_STACK as u64,
            counter::USER_STACK_COLLISION,
            counter::USER_STACK_ERROR,
        )
    } else {
        STACK_NOT_COLLECTED
    };
    let kernel_stack_id = if cfg.kernel_stacks != 0 {
        stack_id(
            ctx,
            0,
            counter::KERNEL_STACK_COLLISION,
            counter::KERNEL_STACK_ERROR,
        )
    } else {
        STACK_NOT_COLLECTED
    };
    let start = OffCpuStart {
        start_ns: now,
        key: OffCpuKey {
            pid,
            tid,
            user_stack_id,
            kernel_stack_id,
            state: prev_state,
            comm,
        },
        _pad: 0,
    };
    if OFFCPU_START.insert(&tid, &start, BPF_ANY as u64).is_ok() {
        bump(&OFFCPU_COUNTERS, counter::RECORDED);
    } else {
        bump(&OFFCPU_COUNTERS, counter::START_MAP_FULL);
    }
}

/// Whether the current thread of process `pid` passes the PID and cgroup
/// filters.
#[inline(always)]
fn wanted(cfg: &OffCpuConfig, pid: u32) -> bool {
    if cfg.filter_pids != 0 && OFFCPU_PID_FILTER.get_ptr(&pid).is_none() {
        return false;
    }
    if cfg.filter_cgroup != 0 {
        // SAFETY: no preconditions; 0 when the level is deeper than the
        // task's cgroup.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(i32::from(cfg.cgroup_level)) };
        return id == cfg.cgroup_id;
    }
    true
}

#[inline(always)]
fn arrive(tid: u32, now: u64) {
    if tid == 0 {
        return;
    }
    let Some(start) = OFFCPU_START.get_ptr(&tid) else {
        return;
    };
    // SAFETY: a valid map value; copied out before the entry is deleted.
    let start = unsafe { *start };
    let _ = OFFCPU_START.remove(&tid);
    let away = now.saturating_sub(start.start_ns);
    if away < conf().min_ns {
        bump(&OFFCPU_COUNTERS, counter::TOO_SHORT);
        return;
    }
    match crate::hist::per_cpu_entry(&OFFCPU_TIME, &start.key, &0u64) {
        // SAFETY: this CPU's slot; sched_switch does not nest on one CPU.
        Some(total) => unsafe { *total += away },
        None => {
            bump(&OFFCPU_COUNTERS, counter::TIME_MAP_FULL);
            return;
        }
    }
    bump(&OFFCPU_COUNTERS, counter::COUNTED);
}

#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, flags: u64, collision: u32, error: u32) -> i32 {
    match ctx.get_stackid(&OFFCPU_STACKS, flags) {
        Ok(id) => id as i32,
        // A kernel thread has no user stack.
        Err(e) if e == -EFAULT => STACK_EMPTY,
        Err(e) => {
            bump(
                &OFFCPU_COUNTERS,
                if e == -EEXIST { collision } else { error },
            );
            STACK_LOST
        }
    }
}
