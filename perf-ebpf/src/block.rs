//! Block I/O latency: block:block_rq_issue to block:block_rq_complete, per
//! disk and operation, plus the request size and the time queued before issue
//! (from block:block_io_start, Linux 6.5+), in per-CPU log2 histograms.
//!
//! These tracepoints carry no request pointer, so a request in flight is keyed
//! by (disk, first sector, operation). Field offsets come from the tracepoints'
//! tracefs `format` files through `BLOCK_CONFIG`, because aya has no CO-RE for
//! Rust programs and the layout changes between kernel versions.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_ANY, BPF_F_NO_PREALLOC},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_buf},
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
    hist::{LATENCY_UNIT_NS, SIZE_UNIT_SHIFT, log2_slot},
};

use crate::hist::{add, bump, per_cpu_entry};

/// Set by user space before load.
#[unsafe(no_mangle)]
static BLOCK_CONFIG: BlockConfig = BlockConfig::zeroed();

#[map]
static BLOCK_INFLIGHT: HashMap<InflightKey, InflightVal> =
    HashMap::with_max_entries(BLOCK_INFLIGHT_ENTRIES, 0);

/// Allocated on first use: memory follows the devices actually seen, not the
/// worst case times the number of CPUs.
#[map]
static BLOCK_HISTS: PerCpuHashMap<BlockKey, BlockHists> =
    PerCpuHashMap::with_max_entries(BLOCK_HIST_ENTRIES, BPF_F_NO_PREALLOC);

/// Inserted for a (disk, operation) seen for the first time; a static, since
/// 840 bytes do not fit on the 512-byte BPF stack.
static ZERO_HISTS: BlockHists = BlockHists::zeroed();

#[map]
static BLOCK_DEV_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(BLOCK_DEV_FILTER_ENTRIES, 0);

#[map]
static BLOCK_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

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

#[inline(always)]
fn config() -> BlockConfig {
    // SAFETY: a read-only global that user space fills in before load.
    unsafe { core::ptr::read_volatile(&BLOCK_CONFIG) }
}

/// The fields of one record, copied from it with a single helper call.
struct Record {
    /// u64 words so that the copy is 8-aligned like the record's span.
    buf: [u64; SPAN_MAX as usize / 8],
}

impl Record {
    #[inline(always)]
    fn read(ctx: &TracePointContext, f: &BlockFields) -> Option<Self> {
        let mut rec = Record {
            buf: [0; SPAN_MAX as usize / 8],
        };
        let len = (f.len as usize).min(SPAN_MAX as usize);
        // SAFETY: `buf` is SPAN_MAX bytes of plain integers, so any bytes
        // may be written to its first `len`.
        let dst =
            unsafe { core::slice::from_raw_parts_mut(rec.buf.as_mut_ptr().cast::<u8>(), len) };
        // SAFETY: a read from the tracepoint record at offsets taken from its
        // format file; the helper checks the source and fails cleanly.
        let src = unsafe { ctx.as_ptr().cast::<u8>().add(f.base as usize) };
        // SAFETY: as above.
        match unsafe { bpf_probe_read_kernel_buf(src, dst) } {
            Ok(()) => Some(rec),
            Err(_) => {
                bump(&BLOCK_COUNTERS, counter::READ_ERROR);
                None
            }
        }
    }

    /// The `T` at byte `offset` of the copy; user space checked that it fits
    /// and is aligned (fields are naturally aligned in the record).
    #[inline(always)]
    fn get<T: Copy + Default>(&self, offset: u16) -> T {
        let offset = offset as usize;
        if offset + core::mem::size_of::<T>() > SPAN_MAX as usize {
            return T::default();
        }
        // SAFETY: in bounds (checked above) of a buffer of plain integers;
        // aligned because both the span's base and the field's record offset
        // are multiples of the field's alignment.
        unsafe { *self.buf.as_ptr().cast::<u8>().add(offset).cast::<T>() }
    }

    #[inline(always)]
    fn op(&self, f: &BlockFields) -> u8 {
        op_from_rwbs(self.get::<[u8; 2]>(f.rwbs))
    }
}

#[inline(always)]
fn wanted(cfg: &BlockConfig, dev: u32) -> bool {
    cfg.filter_devs == 0 || BLOCK_DEV_FILTER.get_ptr(&dev).is_some()
}

#[inline(always)]
fn start(ctx: &TracePointContext) -> Option<()> {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let cfg = config();
    let f = cfg.start;
    let rec = Record::read(ctx, &f)?;
    let dev: u32 = rec.get(f.dev);
    if !wanted(&cfg, dev) {
        return None;
    }
    bump(&BLOCK_COUNTERS, counter::STARTED);
    let key = InflightKey {
        sector: rec.get(f.sector),
        dev,
        op: rec.op(&f),
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
    let cfg = config();
    let f = cfg.issue;
    let rec = Record::read(ctx, &f)?;
    let dev: u32 = rec.get(f.dev);
    if !wanted(&cfg, dev) {
        return None;
    }
    bump(&BLOCK_COUNTERS, counter::ISSUED);
    let key = InflightKey {
        sector: rec.get(f.sector),
        dev,
        op: rec.op(&f),
        _pad: [0; 3],
    };
    // Merges since the start may have grown the request: take its size now.
    let sectors: u32 = rec.get(f.nr_sector);
    let bytes: u32 = rec.get(f.bytes);
    if let Some(ptr) = BLOCK_INFLIGHT.get_ptr_mut(&key) {
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
    // No start seen: started before tracing, a kernel without
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
    let cfg = config();
    let f = cfg.complete;
    let rec = Record::read(ctx, &f)?;
    let dev: u32 = rec.get(f.dev);
    if !wanted(&cfg, dev) {
        return None;
    }
    let op = rec.op(&f);
    let done: u32 = rec.get(f.nr_sector);
    if done == 0 && (op == op::READ || op == op::WRITE) {
        // A write that went through the flush machinery completes a second
        // time with no data, once the flush after it is done: already timed.
        return None;
    }
    bump(&BLOCK_COUNTERS, counter::COMPLETED);
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
    if val.issued_ns == 0 {
        // Completed without an issue seen (its issue was skipped): not timed.
        bump(&BLOCK_COUNTERS, counter::UNMATCHED);
        return None;
    }
    let key = BlockKey {
        dev,
        op: key.op,
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
    add(
        &mut h.latency,
        latency,
        log2_slot(latency / LATENCY_UNIT_NS),
    );
    let bytes = val.bytes as u64;
    add(&mut h.size, bytes, log2_slot(bytes >> SIZE_UNIT_SHIFT));
    if val.started_ns != 0 {
        let queued = val.issued_ns.saturating_sub(val.started_ns);
        add(&mut h.queue, queued, log2_slot(queued / LATENCY_UNIT_NS));
    }
    bump(&BLOCK_COUNTERS, counter::TIMED);
    Some(())
}
