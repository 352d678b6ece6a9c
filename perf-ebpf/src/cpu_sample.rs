//! CPU sampling on a perf event (software cpu-clock on every CPU): counts
//! samples per (process, thread, user stack, kernel stack).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    macros::{map, perf_event},
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
    programs::{PerfEventContext, tracing::StackIdContext as _},
};
use perf_ebpf_common::{
    NEW_PID_RING_BYTES, PID_FILTER_ENTRIES, SAMPLE_MAP_ENTRIES, SEEN_PID_ENTRIES, STACK_EMPTY,
    STACK_LOST, STACK_MAP_ENTRIES, STACK_NOT_COLLECTED, SampleConfig, SampleKey, counter,
};

/// Set by user space before load.
#[unsafe(no_mangle)]
static CPU_CONFIG: SampleConfig = SampleConfig::zeroed();

#[map]
static CPU_SAMPLES: PerCpuHashMap<SampleKey, u64> =
    PerCpuHashMap::with_max_entries(SAMPLE_MAP_ENTRIES, 0);

#[map]
static CPU_STACKS: StackTrace = StackTrace::with_max_entries(STACK_MAP_ENTRIES, 0);

#[map]
static CPU_PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(PID_FILTER_ENTRIES, 0);

/// PIDs already announced on `CPU_NEW_PIDS`.
#[map]
static CPU_SEEN_PIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(SEEN_PID_ENTRIES, 0);

/// Announces each newly sampled PID at once, so that user space captures its
/// memory maps before a short-lived process exits.
#[map]
static CPU_NEW_PIDS: RingBuf = RingBuf::with_byte_size(NEW_PID_RING_BYTES, 0);

#[map]
static CPU_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

const EEXIST: i32 = 17;
const EFAULT: i32 = 14;

#[inline(always)]
fn bump(index: u32) {
    if let Some(slot) = CPU_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and a perf-event program is not re-entered on one CPU.
        unsafe { *slot += 1 };
    }
}

#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    sample(&ctx);
    0
}

#[inline(always)]
fn sample(ctx: &PerfEventContext) {
    bump(counter::SAMPLES_SEEN);
    // SAFETY: a read-only global that user space fills in before load.
    let cfg = unsafe { core::ptr::read_volatile(&CPU_CONFIG) };
    let pid = ctx.tgid();
    if pid == 0 && cfg.include_idle == 0 {
        return;
    }
    if cfg.filter_pids != 0 && CPU_PID_FILTER.get_ptr(pid).is_none() {
        return;
    }
    let comm = ctx.command().unwrap_or([0; 16]);
    if cfg.filter_comm != 0 && comm != cfg.comm {
        return;
    }
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
    let mut key = SampleKey {
        pid,
        tid: ctx.pid(),
        user_stack_id: STACK_NOT_COLLECTED,
        kernel_stack_id,
        comm,
    };
    if cfg.user_stacks != 0 && pid != 0 {
        // With tables loaded for the process, the walk goes on in
        // `unwind_more`, which counts the sample when it ends; this returns
        // only where it could not start (then frame pointers, below).
        if cfg.dwarf != 0 {
            crate::unwind::walk_sample(ctx, &key);
        }
        key.user_stack_id = user_fp_stack_id(ctx);
    }
    count_sample(&key);
}

/// Counts one sample of `key` (its stacks already recorded).
#[inline(always)]
pub(crate) fn count_sample(key: &SampleKey) {
    match CPU_SAMPLES.get_ptr_mut(key) {
        // SAFETY: this CPU's own slot; no other writer on this CPU meanwhile.
        Some(count) => unsafe { *count += 1 },
        None => {
            announce(key.pid);
            if CPU_SAMPLES.insert(key, 1u64, BPF_NOEXIST as u64).is_err() {
                // Either the map is full, or another CPU inserted the key just now.
                match CPU_SAMPLES.get_ptr_mut(key) {
                    // SAFETY: as above.
                    Some(count) => unsafe { *count += 1 },
                    None => {
                        bump(counter::SAMPLE_MAP_FULL);
                        return;
                    }
                }
            }
        }
    }
    bump(counter::SAMPLES_COUNTED);
}

/// Sends `pid` to user space the first time it is sampled.
#[inline(always)]
fn announce(pid: u32) {
    // Look first: an LRU insert takes a free node (evicting the oldest PID
    // when full) before it finds the key exists, so inserting known PIDs
    // costs more and makes others be announced again.
    if CPU_SEEN_PIDS.get_ptr(pid).is_some() {
        return;
    }
    if CPU_SEEN_PIDS.insert(pid, 1u8, BPF_NOEXIST as u64).is_ok()
        && CPU_NEW_PIDS.output::<u32>(pid, 0).is_err()
    {
        bump(counter::NEW_PID_DROPPED);
    }
}

/// The user stack of the sample in `ctx` by frame pointers.
#[inline(always)]
pub(crate) fn user_fp_stack_id(ctx: &PerfEventContext) -> i32 {
    stack_id(
        ctx,
        BPF_F_USER_STACK as u64,
        counter::USER_STACK_COLLISION,
        counter::USER_STACK_ERROR,
    )
}

#[inline(always)]
fn stack_id(ctx: &PerfEventContext, flags: u64, collision: u32, error: u32) -> i32 {
    match ctx.get_stackid(&CPU_STACKS, flags) {
        Ok(id) => id as i32,
        // No frames of that kind: a user-mode sample has no kernel stack, a kernel thread no user stack.
        Err(e) if e == -EFAULT => STACK_EMPTY,
        Err(e) => {
            bump(if e == -EEXIST { collision } else { error });
            STACK_LOST
        }
    }
}
