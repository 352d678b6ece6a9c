//! Allocation tracing for `leaks`: uprobes on the allocation functions of one
//! process's allocator, a uretprobe on each to learn the address, a uprobe on
//! `free`. Keeps every outstanding allocation (address → size, stack, time)
//! and running totals per call stack, so that user space reads what is
//! outstanding at report time; nothing is sent per call.
//!
//! - The entry probes store the requested size per thread (`ALLOC_PENDING`);
//!   the return probe pairs it with the returned address and takes the user
//!   stack there: at the return the registers are the caller's, so a
//!   frame-pointer walk starts at the caller (at the entry it would skip it).
//!   A thread's entry is written in place and marked done at the return
//!   rather than inserted and deleted per call: one lookup per probe.
//! - A free is one delete (or nothing, when `--sample` leaves the address
//!   out). Outstanding bytes per stack are summed by user space from
//!   `ALLOC_OUTSTANDING`, so a free updates no per-stack totals.
//! - `realloc`/`reallocarray` free their old pointer at entry (before another
//!   thread can be handed the same address) and allocate at return;
//!   `realloc(p, 0)` returns NULL and so only frees.
//! - `posix_memalign` writes the address through its first argument: the
//!   entry saves the pointer, the return reads it from user memory.
//! - `sched_process_exec` bumps a generation: allocations of the image that
//!   ran before execve() died with it and user space ignores them.
//! - `alloc_startup_stop`, on the dynamic linker's `_dl_debug_state`, stops a
//!   process started by `leaks -- COMMAND` once its libraries are mapped, so
//!   user space can attach to the allocator it actually uses before `main`.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_NO_PREALLOC, BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated::bpf_send_signal,
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, tracing::StackIdContext as _},
};
use perf_ebpf_common::{
    STACK_EMPTY, STACK_LOST,
    alloc::{
        ALLOC_OUTSTANDING_ENTRIES, ALLOC_PENDING_ENTRIES, ALLOC_PENDING_STALE_NS,
        ALLOC_STACK_ENTRIES, ALLOC_STACK_TOTAL_ENTRIES, AllocConfig, AllocInfo, AllocPending,
        AllocStackKey, AllocStackTotals, SIGSTOP, counter, kind, sampled, state,
    },
};

/// Set by user space before load.
#[unsafe(no_mangle)]
static ALLOC_CONFIG: AllocConfig = AllocConfig::zeroed();

/// Thread id → the allocation call it is in.
#[map]
static ALLOC_PENDING: LruHashMap<u32, AllocPending> =
    LruHashMap::with_max_entries(ALLOC_PENDING_ENTRIES, 0);

/// Address → outstanding allocation. Allocated on demand: memory follows
/// what the process holds, not the capacity.
#[map]
static ALLOC_OUTSTANDING: HashMap<u64, AllocInfo> =
    HashMap::with_max_entries(ALLOC_OUTSTANDING_ENTRIES, BPF_F_NO_PREALLOC);

/// Per-CPU, so that no update needs an atomic (the BPF target has no atomic
/// read-modify-write in Rust's core); user space adds the copies up. Only
/// allocations add to it: what is outstanding comes from `ALLOC_OUTSTANDING`.
#[map]
static ALLOC_STACK_TOTALS: PerCpuHashMap<AllocStackKey, AllocStackTotals> =
    PerCpuHashMap::with_max_entries(ALLOC_STACK_TOTAL_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
static ALLOC_STACKS: StackTrace = StackTrace::with_max_entries(ALLOC_STACK_ENTRIES, 0);

/// See `state::*`.
#[map]
static ALLOC_STATE: Array<u32> = Array::with_max_entries(state::LEN, 0);

#[map]
static ALLOC_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

const EEXIST: i32 = 17;
const EFAULT: i32 = 14;

#[inline(always)]
fn bump(index: u32) {
    if let Some(slot) = ALLOC_COUNTERS.get_ptr_mut(index) {
        // SAFETY: this CPU's own slot; a uprobe program is not re-entered on one CPU.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn config() -> AllocConfig {
    // SAFETY: a read-only global that user space fills in before load.
    unsafe { core::ptr::read_volatile(&ALLOC_CONFIG) }
}

/// The current thread's id when it belongs to the traced process.
#[inline(always)]
fn traced_tid(cfg: &AllocConfig) -> Option<u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32 == cfg.tgid).then_some(pid_tgid as u32)
}

#[inline(always)]
fn state(index: u32) -> u32 {
    match ALLOC_STATE.get_ptr(index) {
        // SAFETY: an array slot; a torn read is impossible for an aligned u32.
        Some(v) => unsafe { *v },
        None => 0,
    }
}

/// The user stack pointer in the probe's registers.
#[inline(always)]
fn stack_pointer(regs: *const aya_ebpf::bindings::pt_regs) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: `regs` is the program's context; reading a field of it is a
        // plain context access the verifier allows.
        unsafe { (*regs).rsp }
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        // SAFETY: as above; arm64's pt_regs begins with user_pt_regs.
        unsafe { (*regs.cast::<aya_ebpf::bindings::user_pt_regs>()).sp }
    }
}

/// True when the stack pointer at a return, `sp`, is the one of the call
/// that entered with `entry_sp` rather than of a call nested in it.
#[inline(always)]
fn is_outer_return(entry_sp: u64, sp: u64) -> bool {
    // x86_64: `ret` pops the return address, so the caller's stack pointer is
    // 8 above the entry's; a nested call's is at or below the entry's.
    #[cfg(bpf_target_arch = "x86_64")]
    {
        sp > entry_sp
    }
    // arm64: the return address is in a register; the stack pointer at the
    // return equals the entry's, and a nested call runs below it.
    #[cfg(bpf_target_arch = "aarch64")]
    {
        sp >= entry_sp
    }
}

// ---------------------------------------------------------------------------
// Entry probes.

#[uprobe]
pub fn alloc_malloc(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(0).unwrap_or(0);
    enter(&ctx, kind::MALLOC, size, 0);
    0
}

#[uprobe]
pub fn alloc_calloc(ctx: ProbeContext) -> u32 {
    let nmemb: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    // An overflowing product makes calloc fail, and the size of a failed call
    // is never used; so a wrapping multiply is exact whenever it matters.
    enter(&ctx, kind::CALLOC, nmemb.wrapping_mul(size), 0);
    0
}

#[uprobe]
pub fn alloc_realloc(ctx: ProbeContext) -> u32 {
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    realloc_enter(&ctx, kind::REALLOC, ptr, size);
    0
}

#[uprobe]
pub fn alloc_reallocarray(ctx: ProbeContext) -> u32 {
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    let nmemb: u64 = ctx.arg(1).unwrap_or(0);
    let size: u64 = ctx.arg(2).unwrap_or(0);
    // As in calloc: an overflow makes the call fail.
    realloc_enter(&ctx, kind::REALLOCARRAY, ptr, nmemb.wrapping_mul(size));
    0
}

#[uprobe]
pub fn alloc_posix_memalign(ctx: ProbeContext) -> u32 {
    let memptr: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(2).unwrap_or(0);
    enter(&ctx, kind::POSIX_MEMALIGN, size, memptr);
    0
}

#[uprobe]
pub fn alloc_aligned_alloc(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(1).unwrap_or(0);
    enter(&ctx, kind::ALIGNED_ALLOC, size, 0);
    0
}

#[uprobe]
pub fn alloc_free(ctx: ProbeContext) -> u32 {
    let cfg = config();
    if traced_tid(&cfg).is_none() {
        return 0;
    }
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    release(&cfg, ptr);
    0
}

#[inline(always)]
fn realloc_enter(ctx: &ProbeContext, kind: u32, ptr: u64, size: u64) {
    let cfg = config();
    let Some(tid) = traced_tid(&cfg) else {
        return;
    };
    // Freed now rather than at the return: once realloc has released the
    // block, another thread may be handed the same address and record it
    // before this thread's return probe runs. A failed realloc (NULL for a
    // non-zero size, the old block intact) is thus taken as a free: rare, and
    // said in docs/collectors/alloc.md.
    release(&cfg, ptr);
    enter_as(ctx, tid, kind, size, 0);
}

/// Remembers the call for the return probe.
#[inline(always)]
fn enter(ctx: &ProbeContext, kind: u32, size: u64, memptr: u64) {
    let cfg = config();
    if let Some(tid) = traced_tid(&cfg) {
        enter_as(ctx, tid, kind, size, memptr);
    }
}

#[inline(always)]
fn enter_as(ctx: &ProbeContext, tid: u32, kind: u32, size: u64, memptr: u64) {
    let sp = stack_pointer(ctx.regs);
    // (bpf_ktime_get_coarse_ns would do for the stale check, but uprobe
    // programs may not call it.)
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(slot) = ALLOC_PENDING.get_ptr_mut(tid) {
        // SAFETY: this thread's own entry: only this thread's probes write
        // it, and a thread runs one probe at a time.
        let outer = unsafe { &mut *slot };
        // Called from inside another allocation function of this thread: its
        // stack frame is below the outer one's, or at the same place for a
        // tail call (glibc's reallocarray jumps to realloc, realloc(NULL, n)
        // to malloc). The outer call is the one the program made, with the
        // same size, and its return (the inner one's, for a tail call) is the
        // one recorded. An entry above our stack pointer, or an old one, is a
        // leftover of a call whose return was never seen, and is replaced;
        // `entry_sp` 0 is a call that has returned.
        if outer.entry_sp != 0
            && sp <= outer.entry_sp
            && now.wrapping_sub(outer.timestamp_ns) < ALLOC_PENDING_STALE_NS
        {
            bump(counter::NESTED);
            return;
        }
        // In place: cheaper than an insert into the LRU map, which takes a
        // new element and frees the old one every time.
        outer.size = size;
        outer.memptr = memptr;
        outer.entry_sp = sp;
        outer.timestamp_ns = now;
        outer.kind = kind;
        return;
    }
    let pending = AllocPending {
        size,
        memptr,
        entry_sp: sp,
        timestamp_ns: now,
        kind,
        _pad: 0,
    };
    if ALLOC_PENDING.insert(tid, pending, BPF_ANY as u64).is_err() {
        bump(counter::PENDING_FULL);
    }
}

// ---------------------------------------------------------------------------
// Return probe, shared by every allocation function.

#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    returned(&ctx);
    0
}

#[inline(always)]
fn returned(ctx: &RetProbeContext) {
    let cfg = config();
    let Some(tid) = traced_tid(&cfg) else {
        return;
    };
    let Some(slot) = ALLOC_PENDING.get_ptr_mut(tid) else {
        // A call that began before the probes existed.
        return;
    };
    // SAFETY: this thread's own entry (see `enter_as`); copied out at once.
    let pending = unsafe { *slot };
    if pending.entry_sp == 0 {
        // The outer function of a tail call, whose return the inner one's
        // already handled; or a call that began before the probes existed.
        return;
    }
    if !is_outer_return(pending.entry_sp, stack_pointer(ctx.regs)) {
        // A nested call returning; the outer call's return comes later.
        return;
    }
    // Done; the entry stays for the thread's next call.
    // SAFETY: as above.
    unsafe { (*slot).entry_sp = 0 };
    let ret: u64 = ctx.ret();
    let addr = if pending.kind == kind::POSIX_MEMALIGN {
        // Returns an error number; the address went through `memptr`.
        if ret as u32 != 0 {
            bump(counter::NULL_RETURNS);
            return;
        }
        // SAFETY: bpf_probe_read_user checks the address; a fault is an error.
        match unsafe { bpf_probe_read_user(pending.memptr as *const u64) } {
            Ok(addr) => addr,
            Err(_) => {
                bump(counter::READ_FAILED);
                return;
            }
        }
    } else {
        ret
    };
    if addr == 0 {
        bump(counter::NULL_RETURNS);
        return;
    }
    bump(counter::ALLOCS);
    if !sampled(addr, cfg.sample_every) {
        return;
    }
    record(ctx, addr, &pending);
}

#[inline(always)]
fn record(ctx: &RetProbeContext, addr: u64, pending: &AllocPending) {
    let generation = state(state::GENERATION);
    // Tables loaded for the process (`leaks --unwind dwarf`): walk them;
    // otherwise the kernel's frame-pointer walk.
    let tgid = config().tgid;
    let unwound = crate::unwind::return_regs(ctx.regs)
        .and_then(|regs| crate::unwind::user_stack_id(tgid, regs));
    let stack_id = match unwound.map_or_else(
        || ctx.get_stackid(&ALLOC_STACKS, BPF_F_USER_STACK as u64),
        |id| Ok(i64::from(id)),
    ) {
        Ok(id) => id as i32,
        Err(e) if e == -EFAULT => STACK_EMPTY,
        Err(e) => {
            bump(if e == -EEXIST {
                counter::STACK_COLLISION
            } else {
                counter::STACK_ERROR
            });
            STACK_LOST
        }
    };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let info = AllocInfo {
        size: pending.size,
        timestamp_ns: now,
        stack_id,
        kind: pending.kind,
        generation,
        _pad: 0,
    };
    // NOEXIST first: the usual case is a new address, and this spares a
    // lookup per allocation to notice the other one.
    match ALLOC_OUTSTANDING.insert(addr, info, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => {
            // The allocator handed out a tracked address again: its free
            // went through a function we do not probe. Replace the old one.
            bump(counter::REPLACED);
            if ALLOC_OUTSTANDING
                .insert(addr, info, BPF_ANY as u64)
                .is_err()
            {
                bump(counter::OUTSTANDING_FULL);
                return;
            }
        }
        Err(_) => {
            bump(counter::OUTSTANDING_FULL);
            return;
        }
    }
    bump(counter::ALLOCS_TRACKED);
    let key = AllocStackKey {
        stack_id,
        kind: pending.kind,
        generation,
    };
    add_totals(&key, pending.size);
}

/// Adds one allocation of `bytes` to a stack's totals on this CPU, creating
/// them on first use.
#[inline(always)]
fn add_totals(key: &AllocStackKey, bytes: u64) {
    let mut t = ALLOC_STACK_TOTALS.get_ptr_mut(key);
    if t.is_none() {
        let first = AllocStackTotals {
            allocs: 1,
            alloc_bytes: bytes,
        };
        match ALLOC_STACK_TOTALS.insert(key, first, BPF_NOEXIST as u64) {
            Ok(()) => return,
            // Another CPU created it meanwhile: add to this CPU's copy.
            Err(e) if e == -EEXIST => t = ALLOC_STACK_TOTALS.get_ptr_mut(key),
            Err(_) => {
                bump(counter::STACK_TOTALS_FULL);
                return;
            }
        }
    }
    if let Some(t) = t {
        // SAFETY: this CPU's copy of a live map value, written only from this CPU.
        unsafe {
            (*t).allocs = (*t).allocs.wrapping_add(1);
            (*t).alloc_bytes = (*t).alloc_bytes.wrapping_add(bytes);
        }
    }
}

/// A free of `ptr`: forgets it if it was tracked. One delete and no lookup
/// first: nothing else about the allocation needs updating.
#[inline(always)]
fn release(cfg: &AllocConfig, ptr: u64) {
    if ptr == 0 {
        return;
    }
    bump(counter::FREES);
    // Decided by the address alone, before any map operation.
    if !sampled(ptr, cfg.sample_every) {
        return;
    }
    // Fails for an address allocated before tracing began, or not tracked.
    if ALLOC_OUTSTANDING.remove(ptr).is_ok() {
        bump(counter::FREES_MATCHED);
    }
}

// ---------------------------------------------------------------------------
// Process image changes.

// A raw tracepoint: it reads no arguments, and unlike a classic tracepoint it
// needs neither tracefs (not mounted on a fresh host, and root-only) nor BTF.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn alloc_exec(_ctx: RawTracePointContext) -> i32 {
    let cfg = config();
    if traced_tid(&cfg).is_some()
        && let Some(generation) = ALLOC_STATE.get_ptr_mut(state::GENERATION)
    {
        // SAFETY: an aligned array slot. Only the exec'ing thread of the
        // traced process writes it (execve has ended every other thread), and
        // user space only reads it.
        unsafe { *generation += 1 };
    }
    0
}

#[uprobe]
pub fn alloc_startup_stop(_ctx: ProbeContext) -> u32 {
    let cfg = config();
    if traced_tid(&cfg).is_some() && state(state::GENERATION) != state(state::HANDLED_GENERATION) {
        bump(counter::STOPS);
        // SAFETY: no memory arguments; signals the current process.
        unsafe { bpf_send_signal(SIGSTOP) };
    }
    0
}
