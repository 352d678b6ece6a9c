//! Block I/O latency: block:block_rq_issue to block:block_rq_complete, per
//! disk and operation, plus the request size and the time queued before issue
//! (from block:block_io_start, Linux 6.5+), in per-CPU log2 histograms.
//!
//! These tracepoints carry no request pointer, so a request in flight is keyed
//! by (disk, first sector, operation). Field offsets come from the tracepoints'
//! tracefs `format` files through `BLOCK_CONFIG`, because aya has no CO-RE for
//! Rust programs and the layout changes between kernel versions.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_NO_PREALLOC},
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use perf_ebpf_common::{
    block::{
        BLOCK_DEV_FILTER_ENTRIES, BLOCK_HIST_ENTRIES, BLOCK_INFLIGHT_ENTRIES, BlockConfig,
        BlockFields, BlockHists, BlockKey, InflightKey, InflightVal, SPAN_MAX, counter, op,
        op_from_rwbs,
    },
    hist::{SIZE_UNIT_SHIFT, latency_slot, log2_slot},
};

use crate::{
    hist::{add, bump, per_cpu_entry},
    record::{Record, SpanBuf},
};

/// Set by user space before load.
#[unsafe(no_mangle)]
pub(crate) static BLOCK_CONFIG: BlockConfig = BlockConfig::zeroed();

#[map]
static BLOCK_INFLIGHT: HashMap<InflightKey, InflightVal> =
    HashMap::with_max_entries(BLOCK_INFLIGHT_ENTRIES, 0);

/// Allocated on first use: memory follows the devices actually seen, not the
/// worst case times the number of CPUs.
#[map]
pub(crate) static BLOCK_HISTS: PerCpuHashMap<BlockKey, BlockHists> =
    PerCpuHashMap::with_max_entries(BLOCK_HIST_ENTRIES, BPF_F_NO_PREALLOC);

/// Inserted for a (disk, operation) seen for the first time; a static, since
/// 840 bytes do not fit on the 512-byte BPF stack.
static ZERO_HISTS: BlockHists = BlockHists::zeroed();

#[map]
pub(crate) static BLOCK_DEV_FILTER: HashMap<u32, u8> =
    HashMap::with_max_entries(BLOCK_DEV_FILTER_ENTRIES, 0);

#[map]
pub(crate) static BLOCK_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

/// Linux 6.5+: where the kernel starts its own accounting of the request
/// (/proc/diskstats times from here); optional, for the queued time.
#[tracepoint]
pub fn block_io_start(ctx: TracePointContext) -> u32 {
    start(&ctx);
    0
}

#[tracepoint]
pub fn block_rq_issue(ctx: TracePointContext) -> u32 {
    issue(&ctx);
    0
}

#[tracepoint]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    complete(&ctx);
    0
}

/// One field of `BLOCK_CONFIG`. Volatile, so that the compiler does not
/// fold in the zeroes it was built with; one field at a time, to load only
/// what the program uses.
macro_rules! conf {
    ($($field:ident).+) => {
        // SAFETY: a read-only global that user space fills in before load.
        unsafe { core::ptr::read_volatile(&raw const $crate::block::BLOCK_CONFIG.$($field).+) }
    };
}
pub(crate) use conf;

/// Room for the fields of one record, copied with a single helper call.
type Buf = SpanBuf<{ SPAN_MAX as usize / 8 }>;

/// Copies the span into `buf`; counts a failure.
#[inline(always)]
fn read<'a>(buf: &'a mut Buf, ctx: &TracePointContext, f: &BlockFields) -> Option<Record<'a>> {
    let rec = buf.read(ctx, f.base, f.len);
    if rec.is_none() {
        bump(&BLOCK_COUNTERS, counter::READ_ERROR);
    }
    rec
}

#[inline(always)]
fn operation(rec: &Record, f: &BlockFields) -> u8 {
    op_from_rwbs(rec.get::<[u8; 2]>(f.rwbs))
}

/// Whether the device filter lets `dev` through.
#[inline(always)]
pub(crate) fn wanted(dev: u32) -> bool {
    conf!(filter_devs) == 0 || BLOCK_DEV_FILTER.get_ptr(&dev).is_some()
}

#[inline(always)]
fn start(ctx: &TracePointContext) -> Option<()> {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let f = conf!(start);
    let mut buf = Buf::new();
    let rec = read(&mut buf, ctx, &f)?;
    let dev: u32 = rec.get(f.dev);
    if !wanted(dev) {
        return None;
    }
    bump(&BLOCK_COUNTERS, counter::STARTED);
    let key = InflightKey {
        sector: rec.get(f.sector),
        dev,
        op: operation(&rec, &f),
        _pad: [0; 3],
    };
    let val = InflightVal {
        started_ns: now,
        issued_ns: 0,
        sectors: rec.get(f.nr_sector),
        bytes: 0,
    };
    if BLOCK_INFLIGHT.insert(&key, &val, BPF_ANY as u64).is_err() {
        bump(&BLOCK_COUNTERS, counter::INFLIGHT_FULL);
    }
    Some(())
}

#[inline(always)]
fn issue(ctx: &TracePointContext) -> Option<()> {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let f = conf!(issue);
    let mut buf = Buf::new();
    let rec = read(&mut buf, ctx, &f)?;
    let dev: u32 = rec.get(f.dev);
    if !wanted(dev) {
        return None;
    }
    bump(&BLOCK_COUNTERS, counter::ISSUED);
    let key = InflightKey {
        sector: rec.get(f.sector),
        dev,
        op: operation(&rec, &f),
        _pad: [0; 3],
    };
    // Merges since the start may have grown the request: take its size now.
    let sectors: u32 = rec.get(f.nr_sector);
    let bytes: u32 = rec.get(f.bytes);
    // Only block_io_start creates entries before the issue: without it,
    // spare the lookup (a requeued request's entry is simply replaced).
    if conf!(queue_time) != 0
        && let Some(ptr) = BLOCK_INFLIGHT.get_ptr_mut(&key)
    {
        // SAFETY: a valid map value; the request is issued on one CPU at a
        // time, so no other program writes this entry meanwhile. A request
        // issued again (requeued) restarts its device clock.
        unsafe {
            (*ptr).issued_ns = now;
            (*ptr).sectors = sectors;
            (*ptr).bytes = bytes;
        }
        return Some(());
    }
    // No start seen: not traced, started before tracing, a kernel without
    // block_io_start, or a request the kernel does not account (flushes).
    let val = InflightVal {
        started_ns: 0,
        issued_ns: now,
        sectors,
        bytes,
    };
    if BLOCK_INFLIGHT.insert(&key, &val, BPF_ANY as u64).is_err() {
        bump(&BLOCK_COUNTERS, counter::INFLIGHT_FULL);
    }
    Some(())
}

#[inline(always)]
fn complete(ctx: &TracePointContext) -> Option<()> {
    // SAFETY: no preconditions. First, so the reads below are not timed.
    let now = unsafe { bpf_ktime_get_ns() };
    let f = conf!(complete);
    let mut buf = Buf::new();
    let rec = read(&mut buf, ctx, &f)?;
    let dev: u32 = rec.get(f.dev);
    if !wanted(dev) {
        return None;
    }
    let op = operation(&rec, &f);
    let done: u32 = rec.get(f.nr_sector);
    if done == 0 && (op == op::READ || op == op::WRITE) {
        // A write that went through the flush machinery completes a second
        // time with no data, once the flush after it is done: already timed.
        return None;
    }
    let sector: u64 = rec.get(f.sector);
    let key = InflightKey {
        // A flush has no position: the issue event says 0, the completion
        // the raw "none" value, all ones.
        sector: if sector == u64::MAX { 0 } else { sector },
        dev,
        op,
        _pad: [0; 3],
    };
    let Some(ptr) = BLOCK_INFLIGHT.get_ptr(&key) else {
        // Issued before we started (or its issue was not tracked): not timed.
        bump(&BLOCK_COUNTERS, counter::UNMATCHED);
        return None;
    };
    // SAFETY: a valid map value; copied at once, before the entry is removed.
    let val = unsafe { *ptr };
    let _ = BLOCK_INFLIGHT.remove(&key);
    if done != 0 && done < val.sectors {
        // Part of the request is done; the rest continues at the next sector.
        let rest = InflightKey {
            sector: key.sector + done as u64,
            ..key
        };
        let left = InflightVal {
            sectors: val.sectors - done,
            ..val
        };
        if BLOCK_INFLIGHT.insert(&rest, &left, BPF_ANY as u64).is_err() {
            bump(&BLOCK_COUNTERS, counter::INFLIGHT_FULL);
        }
        bump(&BLOCK_COUNTERS, counter::PARTIAL);
        return Some(());
    }
    account(dev, op, &val, now)
}

/// Adds a request that completed at `now` to this CPU's histograms of
/// (`dev`, `op`), or counts it as unmatched when its issue was not seen.
#[inline(always)]
pub(crate) fn account(dev: u32, op: u8, val: &InflightVal, now: u64) -> Option<()> {
    if val.issued_ns == 0 {
        // Completed without an issue seen (its issue was skipped): not timed.
        bump(&BLOCK_COUNTERS, counter::UNMATCHED);
        return None;
    }
    let key = BlockKey {
        dev,
        op,
        _pad: [0; 3],
    };
    let Some(ptr) = per_cpu_entry(&BLOCK_HISTS, &key, &ZERO_HISTS) else {
        bump(&BLOCK_COUNTERS, counter::HIST_FULL);
        return None;
    };
    // SAFETY: this CPU's own copy of the value, and tracing programs do not
    // nest on one CPU (the kernel skips a program that would).
    let h = unsafe { &mut *ptr };
    let latency = now.saturating_sub(val.issued_ns);
    add(&mut h.latency, latency, latency_slot(latency));
    let bytes = val.bytes as u64;
    add(&mut h.size, bytes, log2_slot(bytes >> SIZE_UNIT_SHIFT));
    if val.started_ns != 0 {
        let queued = val.issued_ns.saturating_sub(val.started_ns);
        add(&mut h.queue, queued, latency_slot(queued));
    }
    // Neither completions nor timed ones are counted here: user space
    // derives both from the histograms' counts and the other counters.
    Some(())
}
