//! Table-driven user-stack unwinding on x86_64 (issue 13, first kernel
//! piece): for samples of one process, walks frames with the rows user
//! space built from each file's `.eh_frame` (perf-user/src/unwind/), falling
//! back to the frame pointer where a file has no row, and counts each stack.
//!
//! Per frame: the pc's mapping (binary search in the process's sorted
//! mappings), its page of rows (hash map), the row (binary search within the
//! page), then CFA, return address and saved rbp from the user stack.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_NOEXIST, pt_regs},
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, perf_event},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, ProgramArray},
    programs::PerfEventContext,
};
use perf_ebpf_common::{
    SampleKey,
    unwind::{
        UNWIND_MAX_FRAMES, UNWIND_MAX_MAPPINGS, UNWIND_PAGE_SHIFT, UNWIND_STACK_ID_BASE,
        UnwindConfig, UnwindPage, UnwindPageKey, UnwindProcess, UnwindRow, UnwindStack, cfa, end,
        fp,
    },
};

/// Set by user space before load.
#[unsafe(no_mangle)]
static UNWIND_CONFIG: UnwindConfig = UnwindConfig::zeroed();

/// Every file's rows, one after the other; sized by user space at load.
#[map]
static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1, 0);

#[map]
static UNWIND_PAGES: HashMap<UnwindPageKey, UnwindPage> = HashMap::with_max_entries(1, 0);

#[map]
static UNWIND_PROCS: HashMap<u32, UnwindProcess> = HashMap::with_max_entries(1, 0);

/// Stacks by hash, and how often each was sampled. Stacks are allocated as
/// they come (2.5 KiB each): preallocating the map cost as much per insert
/// here and would hold its whole size from the start.
#[map]
static UNWIND_STACKS: HashMap<u64, UnwindStack> =
    HashMap::with_max_entries(1, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

#[map]
static UNWIND_COUNTS: PerCpuHashMap<u64, u64> = PerCpuHashMap::with_max_entries(1, 0);

/// Walks ended, by reason (`end::*`).
#[map]
static UNWIND_ENDS: PerCpuArray<u64> = PerCpuArray::with_max_entries(end::LEN, 0);

/// Scratch space for the stack being walked (too large for the BPF stack).
#[map]
static UNWIND_SCRATCH: PerCpuArray<UnwindStack> = PerCpuArray::with_max_entries(1, 0);

fn config() -> UnwindConfig {
    // SAFETY: a read-only global that user space wrote before load; the
    // volatile read keeps the compiler from folding in the zeroed value.
    unsafe { core::ptr::read_volatile(&UNWIND_CONFIG) }
}

#[inline(always)]
fn count_end(reason: u32) {
    if let Some(slot) = UNWIND_ENDS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot; a perf-event program is not re-entered on
        // one CPU.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn read(addr: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address; a fault is an error.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// The mapping that holds `pc`: (file_id, bias).
#[inline(always)]
fn find_mapping(proc: &UnwindProcess, pc: u64) -> Option<(u32, u64)> {
    let count = (proc.count as usize).min(UNWIND_MAX_MAPPINGS);
    let (mut lo, mut hi) = (0usize, count);
    // log2(32) + 1 steps find the last mapping starting at or below pc.
    for _ in 0..6 {
        if lo >= hi {
            break;
        }
        let mid = (lo + hi) / 2;
        let m = proc.mappings.get(mid)?;
        if m.start <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let m = proc.mappings.get(lo.checked_sub(1)?)?;
    (pc < m.end).then_some((m.file_id, m.bias))
}

/// The row of `addr` in file `file_id`.
#[inline(always)]
fn find_row(file_id: u32, addr: u64) -> Option<UnwindRow> {
    let key = UnwindPageKey {
        file_id,
        page: (addr >> UNWIND_PAGE_SHIFT) as u32,
    };
    // SAFETY: the value is copied out at once.
    let page = unsafe { UNWIND_PAGES.get(&key) }.copied()?;
    let pc = addr as u32;
    let (mut lo, mut hi) = (page.first, page.first.saturating_add(page.count));
    // UNWIND_MAX_PAGE_ROWS = 2^14: 15 steps.
    for _ in 0..15 {
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let row = UNWIND_ROWS.get(mid)?;
        if row.pc <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == page.first {
        return None;
    }
    let row = *UNWIND_ROWS.get(lo - 1)?;
    (row.cfa_type != cfa::END).then_some(row)
}

/// A thread's user registers for the walk: (pc, sp, frame pointer, link
/// register); the link register is arm64's (0 on x86_64).
pub(crate) type UserRegs = (u64, u64, u64, u64);

/// Where a sample interrupted the thread.
enum Regs {
    /// In user mode.
    User(UserRegs),
    /// In the kernel.
    Kernel,
}

/// The registers of a sample: rip, rsp, rbp; user mode when the code
/// segment's privilege level is 3.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
fn sample_regs(regs: *const pt_regs) -> Option<Regs> {
    // SAFETY: the context of a perf-event program starts with pt_regs.
    let (pc, sp, bp, cs) = unsafe { ((*regs).rip, (*regs).rsp, (*regs).rbp, (*regs).cs) };
    Some(if cs & 3 == 3 {
        Regs::User((pc, sp, bp, 0))
    } else {
        Regs::Kernel
    })
}

/// The registers of a sample: pc, sp, x29, x30; user mode when pstate's
/// mode bits say EL0 (AArch64 state: AArch32 tasks are not walked).
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
fn sample_regs(regs: *const pt_regs) -> Option<Regs> {
    // SAFETY: a perf-event program's context is bpf_perf_event_data, which
    // starts with user_pt_regs.
    let r = unsafe { &*(regs as *const aya_ebpf::bindings::user_pt_regs) };
    Some(if r.pstate & 0x1f == 0 {
        Regs::User((r.pc, r.sp, r.regs[29], r.regs[30]))
    } else {
        Regs::Kernel
    })
}

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
#[inline(always)]
fn sample_regs(_regs: *const pt_regs) -> Option<Regs> {
    None
}

/// The registers at a uretprobe (pc, sp, frame pointer; the link register
/// no longer holds anything of the caller's).
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn return_regs(regs: *const pt_regs) -> Option<UserRegs> {
    // SAFETY: the program's context is pt_regs at the allocator's return.
    Some(unsafe { ((*regs).rip, (*regs).rsp, (*regs).rbp, 0) })
}

/// The registers at a uretprobe (pc, sp, frame pointer; the link register
/// no longer holds anything of the caller's).
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub(crate) fn return_regs(regs: *const pt_regs) -> Option<UserRegs> {
    // SAFETY: the kernel's arm64 pt_regs starts with user_pt_regs.
    let r = unsafe { &*(regs as *const aya_ebpf::bindings::user_pt_regs) };
    Some((r.pc, r.sp, r.regs[29], 0))
}

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
#[inline(always)]
pub(crate) fn return_regs(_regs: *const pt_regs) -> Option<UserRegs> {
    None
}

/// The current task's user registers, where the kernel has BTF; `None`
/// elsewhere or when they cannot be read.
#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
#[inline(always)]
pub(crate) fn user_regs_of_current() -> Option<UserRegs> {
    None
}

/// The current task's user registers, where the kernel has BTF; `None`
/// elsewhere or when they cannot be read.
#[cfg(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64"))]
#[inline(always)]
pub(crate) fn user_regs_of_current() -> Option<UserRegs> {
    if config().task_regs == 0 {
        return None;
    }
    use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};
    // SAFETY: helpers of tracing programs; the pointer they give is only
    // read through bpf_probe_read_kernel, which checks it.
    unsafe {
        let task = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as *const pt_regs;
        if regs.is_null() {
            return None;
        }
        task_user_regs(regs)
    }
}

#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
unsafe fn task_user_regs(regs: *const pt_regs) -> Option<UserRegs> {
    // SAFETY: the caller's pointer is only read through the checked helper.
    let r = unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(regs) }.ok()?;
    Some((r.rip, r.rsp, r.rbp, 0))
}

#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
unsafe fn task_user_regs(regs: *const pt_regs) -> Option<UserRegs> {
    // arm64's pt_regs starts with user_pt_regs { regs[31], sp, pc, pstate }:
    // x29, x30, sp and pc are the four words from regs[29] on. Only those
    // are copied: the whole struct (272 bytes) on the BPF stack, beside the
    // off-CPU program's own state, went past its 512 bytes.
    // SAFETY: read through the checked helper.
    let r = unsafe {
        aya_ebpf::helpers::bpf_probe_read_kernel((regs as *const u64).add(29) as *const [u64; 4])
    }
    .ok()?;
    Some((r[3], r[2], r[0], r[1]))
}

/// Where a frame's return address is: CFA + `ra_offset` on arm64 (0 while
/// it is still in the link register); CFA - 8 on x86_64, written as a
/// constant there so that the verifier, which checks the allocation probe's
/// inlined walk near its instruction limit, has no branch to explore.
#[inline(always)]
fn ra_address(cfa_value: u64, ra_offset: i16) -> u64 {
    if cfg!(bpf_target_arch = "aarch64") {
        if ra_offset == 0 {
            0
        } else {
            cfa_value.wrapping_add(ra_offset as i64 as u64)
        }
    } else {
        cfa_value - 8
    }
}

/// A return address without arm64's pointer authentication code (the bits
/// above the 48-bit user address space); unchanged on x86_64.
#[inline(always)]
fn strip_pac(ra: u64) -> u64 {
    if cfg!(bpf_target_arch = "aarch64") {
        ra & ((1 << 48) - 1)
    } else {
        ra
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Frames walked per program run; a run that has not reached the end
/// tail-calls `unwind_more` for the next ones (the verifier refuses 128 at
/// once: over a million instructions to check).
const FRAMES_PER_RUN: usize = 32;

/// Frames walked at an allocation's return, in one run (a uprobe program
/// cannot tail-call the perf-event ones). 32 went over the verifier's
/// million instructions in some builds of the object; a leak report needs
/// the innermost frames.
const UPROBE_FRAMES: usize = 20;

/// A walk under way, carried from one program run to the next.
#[repr(C)]
#[derive(Clone, Copy)]
struct WalkState {
    pc: u64,
    sp: u64,
    bp: u64,
    /// arm64's link register while it still holds the caller's return
    /// address (the first frame of a sample); 0 after.
    lr: u64,
    hash: u64,
    tgid: u32,
    len: u32,
    /// 1 when the first pc is a return address too (a uretprobe's).
    first_return: u32,
    /// 1 when the walk is a CPU sample's: its end counts `UNWIND_PENDING`.
    for_sample: u32,
}

impl WalkState {
    /// A walk of `tgid` from registers (pc, sp, frame pointer).
    #[inline(always)]
    fn start(tgid: u32, (pc, sp, bp, lr): UserRegs, first_return: u32) -> Self {
        Self {
            pc,
            sp,
            bp,
            lr,
            hash: FNV_OFFSET,
            tgid,
            len: 0,
            first_return,
            for_sample: 0,
        }
    }
}

#[map]
static UNWIND_STATE: PerCpuArray<WalkState> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: `unwind_more`.
#[map]
static UNWIND_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The key of the CPU sample whose user stack is being walked on this CPU.
#[map]
static UNWIND_PENDING: PerCpuArray<SampleKey> = PerCpuArray::with_max_entries(1, 0);

/// The user registers of the thread a perf event interrupted; `None` (the
/// reason counted) where they cannot be had.
#[inline(always)]
fn user_regs(ctx: &PerfEventContext) -> Option<UserRegs> {
    match sample_regs(ctx.as_ptr() as *const pt_regs)? {
        Regs::User(user) => Some(user),
        // In the kernel (a syscall, a fault): the user registers were saved
        // at the top of the task's kernel stack. The branch is dead code
        // for the verifier where user space set task_regs = 0 (no BTF).
        Regs::Kernel => {
            let user = user_regs_of_current();
            if user.is_none() {
                count_end(end::KERNEL_MODE);
            }
            user
        }
    }
}

#[perf_event]
pub fn unwind_sample(ctx: PerfEventContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == 0 || tgid != config().tgid {
        return 0;
    }
    let Some(user) = user_regs(&ctx) else {
        return 0;
    };
    let Some(state) = UNWIND_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; perf-event programs do not nest on a CPU.
    let state = unsafe { &mut *state };
    *state = WalkState::start(tgid, user, 0);
    step(&ctx, state);
    0
}

/// Starts the table walk of the CPU sample `key` (`cpu_sample`), when user
/// space loaded tables for its process: tail-calls `unwind_more`, which
/// records the stack and counts the sample when the walk ends. Returns only
/// where the walk could not start; the caller then walks frame pointers.
#[inline(always)]
pub(crate) fn walk_sample(ctx: &PerfEventContext, key: &SampleKey) {
    // SAFETY: only looked at.
    if unsafe { UNWIND_PROCS.get(&key.pid) }.is_none() {
        count_end(end::NOT_LOADED);
        return;
    }
    let Some(user) = user_regs(ctx) else {
        return;
    };
    let (Some(state), Some(pending)) = (UNWIND_STATE.get_ptr_mut(0), UNWIND_PENDING.get_ptr_mut(0))
    else {
        return;
    };
    // SAFETY: this CPU's slots; perf-event programs do not nest on a CPU.
    unsafe {
        *state = WalkState::start(key.pid, user, 0);
        (*state).for_sample = 1;
        *pending = *key;
        // Jumps, or fails (an empty slot) and falls through.
        UNWIND_PROGS.tail_call(ctx, 0)
    };
}

/// The next frames of the walk that `unwind_sample` started on this CPU.
#[perf_event]
pub fn unwind_more(ctx: PerfEventContext) -> u32 {
    let Some(state) = UNWIND_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: as in unwind_sample; only reached by its tail call.
    step(&ctx, unsafe { &mut *state });
    0
}

/// Walks up to FRAMES_PER_RUN frames; then either records the stack or
/// hands over to `unwind_more`.
#[inline(always)]
fn step(ctx: &PerfEventContext, state: &mut WalkState) {
    // SAFETY: the value is only read.
    let Some(proc) = (unsafe { UNWIND_PROCS.get(&state.tgid) }) else {
        count_end(end::NOT_LOADED);
        return;
    };
    let Some(stack) = UNWIND_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot, not shared with another program run.
    let stack = unsafe { &mut *stack };
    let reason = walk::<FRAMES_PER_RUN>(proc, state, stack);
    if reason.is_none() {
        // SAFETY: a tail call either jumps (never returns) or fails and
        // falls through; the context is this program's own.
        unsafe { UNWIND_PROGS.tail_call(ctx, 0) };
    }
    finish(ctx, state, stack, reason.unwrap_or(end::DEPTH));
}

/// Walks frames from `state`; `Some(reason)` once the walk has ended,
/// `None` when frames may remain after this run's share.
#[inline(always)]
fn walk<const FRAMES: usize>(
    proc: &UnwindProcess,
    state: &mut WalkState,
    stack: &mut UnwindStack,
) -> Option<u32> {
    let (mut pc, mut sp, mut bp, mut lr) = (state.pc, state.sp, state.bp, state.lr);
    let mut reason = None;
    for _ in 0..FRAMES {
        let i = state.len as usize;
        if i >= UNWIND_MAX_FRAMES {
            reason = Some(end::DEPTH);
            break;
        }
        if pc == 0 {
            reason = Some(end::COMPLETE);
            break;
        }
        stack.pcs[i] = pc;
        state.len += 1;
        state.hash = (state.hash ^ pc).wrapping_mul(0x100_0000_01b3);
        // A return address points after its call: look up the call itself.
        let lookup = if i == 0 && state.first_return == 0 {
            pc
        } else {
            pc - 1
        };
        let Some((file_id, bias)) = find_mapping(proc, lookup) else {
            reason = Some(end::NO_MAPPING);
            break;
        };
        let row = if file_id == 0 {
            None
        } else {
            find_row(file_id, lookup.wrapping_sub(bias))
        };
        let (cfa_value, ra_at, fp_at) = match row {
            Some(r) if r.cfa_type == cfa::OUTERMOST => {
                reason = Some(end::COMPLETE);
                break;
            }
            Some(r) if r.cfa_type == cfa::SP || r.cfa_type == cfa::FP || r.cfa_type == cfa::PLT => {
                let cfa_value = match r.cfa_type {
                    cfa::SP => sp.wrapping_add(r.cfa_offset as i64 as u64),
                    cfa::FP => bp.wrapping_add(r.cfa_offset as i64 as u64),
                    _ => sp + 8 + if pc & 15 >= 11 { 8 } else { 0 },
                };
                let fp_at = (r.fp_type == fp::AT_OFFSET)
                    .then(|| cfa_value.wrapping_add(r.fp_offset as i64 as u64));
                if r.fp_type == fp::UNSUPPORTED {
                    bp = 0;
                }
                (cfa_value, ra_address(cfa_value, r.ra_offset), fp_at)
            }
            // No row or an unsupported rule: the frame pointer, if any.
            other => {
                if bp == 0 {
                    reason = Some(if other.is_some() {
                        end::UNSUPPORTED
                    } else {
                        end::NO_ROW
                    });
                    break;
                }
                (bp + 16, bp + 8, Some(bp))
            }
        };
        // 0: the return address is still in the link register (an arm64
        // leaf function); x86_64 never has that.
        let ra = if cfg!(bpf_target_arch = "aarch64") && ra_at == 0 {
            if lr == 0 {
                reason = Some(end::UNSUPPORTED);
                break;
            }
            lr
        } else {
            let Some(ra) = read(ra_at) else {
                reason = Some(end::READ_FAULT);
                break;
            };
            ra
        };
        lr = 0;
        if let Some(at) = fp_at {
            match read(at) {
                Some(v) => bp = v,
                None => {
                    reason = Some(end::READ_FAULT);
                    break;
                }
            }
        }
        sp = cfa_value;
        pc = strip_pac(ra);
    }
    (state.pc, state.sp, state.bp, state.lr) = (pc, sp, bp, lr);
    reason
}

/// Records the walked stack and counts it.
#[inline(always)]
fn finish(ctx: &PerfEventContext, state: &WalkState, stack: &mut UnwindStack, reason: u32) {
    stack.len = state.len;
    stack.end = reason;
    count_end(reason);
    if state.for_sample != 0 {
        // The sampled pc itself in no mapping loaded: the process ran
        // execve() since its tables were loaded (or runs code mapped since).
        // Frame pointers give more than a one-frame stack then.
        let id = if reason == end::NO_MAPPING && state.len <= 1 {
            crate::cpu_sample::user_fp_stack_id(ctx)
        } else {
            store_stack(state.hash, stack)
        };
        if let Some(pending) = UNWIND_PENDING.get_ptr_mut(0) {
            // SAFETY: this CPU's slot, written by `walk_sample` before the
            // tail calls that led here.
            let key = unsafe { &mut *pending };
            key.user_stack_id = id;
            crate::cpu_sample::count_sample(key);
        }
        return;
    }
    let hash = state.hash;
    match UNWIND_COUNTS.get_ptr_mut(&hash) {
        // SAFETY: this CPU's count; a perf-event program is not re-entered
        // on one CPU.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = UNWIND_STACKS.insert(&hash, stack, 0);
            let _ = UNWIND_COUNTS.insert(&hash, &1, 0);
        }
    }
}

/// The user stack of the current thread of `tgid` at a uretprobe (`regs`'s
/// pc is the return address into the caller, sp and fp the registers there),
/// walked with the tables in one go (UPROBE_FRAMES frames at most: a
/// uprobe program cannot tail-call into a perf-event one) and stored in
/// UNWIND_STACKS under the id returned. `None` when user space loaded no
/// tables for the process: the caller then walks frame pointers.
///
/// The id is 30 bits of the stack's hash above `UNWIND_STACK_ID_BASE`, apart
/// from the kernel's stack-map ids below it; two stacks with the same 30
/// bits share an id (the first one stored wins).
#[inline(always)]
pub(crate) fn user_stack_id(tgid: u32, regs: UserRegs) -> Option<i32> {
    // SAFETY: the value is only read.
    let proc = unsafe { UNWIND_PROCS.get(&tgid) }?;
    let state = UNWIND_STATE.get_ptr_mut(0)?;
    let stack = UNWIND_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slots; tracing programs do not nest on a CPU (the
    // kernel's bpf_prog_active guard), so no other run uses them meanwhile.
    let (state, stack) = unsafe { (&mut *state, &mut *stack) };
    *state = WalkState::start(tgid, regs, 1);
    let reason = walk::<UPROBE_FRAMES>(proc, state, stack).unwrap_or(end::DEPTH);
    stack.len = state.len;
    stack.end = reason;
    count_end(reason);
    // The first pc in no mapping loaded: the process ran execve() since its
    // tables were loaded (a static binary traced from its start has the
    // launcher's), or runs code mapped since. As for a CPU sample, frame
    // pointers give more than a one-frame stack then.
    if reason == end::NO_MAPPING && state.len <= 1 {
        return None;
    }
    Some(store_stack(state.hash, stack))
}

/// Stores `stack` under the id of its hash (`UNWIND_STACK_ID_BASE` and 30
/// bits of the hash) unless that id is taken, and returns the id.
#[inline(always)]
fn store_stack(hash: u64, stack: &UnwindStack) -> i32 {
    let id = UNWIND_STACK_ID_BASE | (hash as i32 & (UNWIND_STACK_ID_BASE - 1));
    // NOEXIST: an existing stack is found without a copy or an allocation.
    let _ = UNWIND_STACKS.insert(&(id as u64), stack, BPF_NOEXIST as u64);
    id
}
