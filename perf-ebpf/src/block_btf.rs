//! Block I/O latency on kernels with BTF: the same three tracepoints as
//! `block.rs` (block_io_start, block_rq_issue, block_rq_complete), attached
//! as BTF tracepoints (`tp_btf`), which hand the program the `struct request`
//! itself.
//!
//! Why a second set: a classic tracepoint makes the kernel fill a record for
//! every event (dev, sector, rwbs letters, the task's comm...) before the
//! program runs, and the program copies it out again; here the program
//! loads the four fields it needs straight from the request, at offsets user
//! space takes from the kernel's BTF (`BLOCK_CONFIG.rq`), which the verifier
//! checks against the same BTF. Requests in flight are keyed by their
//! address, so a front merge that moves a request's first sector no longer
//! loses it. Histograms, counters and the device filter are `block.rs`'s.
//!
//! A driver's requests are allocated once, with its tag set, and reused for
//! every I/O: so an entry is kept when its request completes (its times
//! zeroed) and written in place at the next issue. That makes each event one
//! inlined lookup and a store instead of an insert or a delete, the costliest
//! map operations; the map is an LRU hash so that the entries of requests
//! whose device went away are evicted rather than filling it.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};
use perf_ebpf_common::block::{
    BLOCK_INFLIGHT_ENTRIES, BlockRqOffsets, InflightVal, counter, op, op_from_req_op,
};

use crate::{
    block::{BLOCK_COUNTERS, account, conf, wanted},
    hist::bump,
    kmem::load,
};

/// Requests by address: start and issue times while in flight, zeroes after.
#[map]
static BLOCK_RQ_INFLIGHT: LruHashMap<u64, InflightVal> =
    LruHashMap::with_max_entries(BLOCK_INFLIGHT_ENTRIES, 0);

#[btf_tracepoint(function = "block_io_start")]
pub fn block_io_start_btf(ctx: BtfTracePointContext) -> i32 {
    start(&ctx);
    0
}

#[btf_tracepoint(function = "block_rq_issue")]
pub fn block_rq_issue_btf(ctx: BtfTracePointContext) -> i32 {
    issue(&ctx);
    0
}

#[btf_tracepoint(function = "block_rq_complete")]
pub fn block_rq_complete_btf(ctx: BtfTracePointContext) -> i32 {
    complete(&ctx);
    0
}

/// What the programs read of a request.
struct Rq {
    dev: u32,
    op: u8,
    /// Bytes not yet completed.
    bytes: u32,
}

#[inline(always)]
fn read_rq(rq: *const u8) -> Rq {
    let o: BlockRqOffsets = conf!(rq);
    // SAFETY: `rq` is the tracepoint's `struct request *`, and every offset
    // comes from the kernel's BTF with the member's size (collectors/block.rs).
    // A request with no disk reads as dev 0, as the classic tracepoints say.
    unsafe {
        let q: *const u8 = load(rq, o.rq_q);
        let disk: *const u8 = load(q, o.q_disk);
        let major: u32 = load(disk, o.disk_major);
        let minor: u32 = load(disk, o.disk_first_minor);
        Rq {
            dev: (major << 20) | minor,
            op: op_from_req_op(load(rq, o.rq_cmd_flags)),
            bytes: load(rq, o.rq_data_len),
        }
    }
}

#[inline(always)]
fn start(ctx: &BtfTracePointContext) -> Option<()> {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let rq: *const u8 = ctx.arg(0);
    let r = read_rq(rq);
    if !wanted(r.dev) {
        return None;
    }
    bump(&BLOCK_COUNTERS, counter::STARTED);
    let key = rq as u64;
    let val = InflightVal {
        started_ns: now,
        issued_ns: 0,
        sectors: 0,
        bytes: 0,
    };
    match BLOCK_RQ_INFLIGHT.get_ptr_mut(&key) {
        // SAFETY: a valid map value; a request is started, issued and
        // completed one after the other, so no other program writes this
        // entry meanwhile.
        Some(ptr) => unsafe { *ptr = val },
        None => insert(key, &val),
    }
    Some(())
}

/// Adds request `key`, seen for the first time; counts a full map.
#[inline(always)]
fn insert(key: u64, val: &InflightVal) {
    if BLOCK_RQ_INFLIGHT.insert(&key, val, BPF_ANY as u64).is_err() {
        bump(&BLOCK_COUNTERS, counter::INFLIGHT_FULL);
    }
}

#[inline(always)]
fn issue(ctx: &BtfTracePointContext) -> Option<()> {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let rq: *const u8 = ctx.arg(0);
    let r = read_rq(rq);
    if !wanted(r.dev) {
        return None;
    }
    bump(&BLOCK_COUNTERS, counter::ISSUED);
    let key = rq as u64;
    if let Some(ptr) = BLOCK_RQ_INFLIGHT.get_ptr_mut(&key) {
        // SAFETY: as in `start`. The start time stays: block_io_start set it
        // for this request, or the completion before zeroed it. A request
        // issued again (requeued) restarts its device clock.
        unsafe {
            (*ptr).issued_ns = now;
            (*ptr).bytes = r.bytes;
        }
        return Some(());
    }
    insert(
        key,
        &InflightVal {
            started_ns: 0,
            issued_ns: now,
            // Only the classic programs follow partial completions by sector.
            sectors: 0,
            bytes: r.bytes,
        },
    );
    Some(())
}

#[inline(always)]
fn complete(ctx: &BtfTracePointContext) -> Option<()> {
    // SAFETY: no preconditions. First, so the reads below are not timed.
    let now = unsafe { bpf_ktime_get_ns() };
    // block_rq_complete(struct request *rq, blk_status_t error, unsigned int nr_bytes)
    let rq: *const u8 = ctx.arg(0);
    let done: u32 = ctx.arg(2);
    let r = read_rq(rq);
    if !wanted(r.dev) {
        return None;
    }
    if done == 0 && (r.op == op::READ || r.op == op::WRITE) {
        // A write that went through the flush machinery completes a second
        // time with no data, once the flush after it is done: already timed.
        return None;
    }
    let key = rq as u64;
    let Some(ptr) = BLOCK_RQ_INFLIGHT.get_ptr_mut(&key) else {
        // Issued before we started (or its issue was not tracked): not timed.
        bump(&BLOCK_COUNTERS, counter::UNMATCHED);
        return None;
    };
    if done < r.bytes {
        // The tracepoint fires before the request's count is updated: part
        // of it is done, and the rest stays in flight under the same address.
        bump(&BLOCK_COUNTERS, counter::PARTIAL);
        return Some(());
    }
    // SAFETY: as in `start`; copied, then zeroed for the request's next use
    // (a completion whose issue is not seen then counts as unmatched).
    let val = unsafe {
        let val = *ptr;
        (*ptr).started_ns = 0;
        (*ptr).issued_ns = 0;
        val
    };
    account(r.dev, r.op, &val, now)
}
