//! Block I/O latency: keys, values and configuration shared with
//! `perf-ebpf/src/block.rs`.

use crate::hist::Hist;

/// Requests tracked between issue and completion. When full, new issues are
/// counted in `BLOCK_INFLIGHT_FULL` and not timed.
pub const BLOCK_INFLIGHT_ENTRIES: u32 = 16_384;
/// Histogram keys: devices x operations x kinds (allocated on first use).
pub const BLOCK_HIST_ENTRIES: u32 = 1_024;
/// Most devices `latency --device` can select at once.
pub const BLOCK_DEV_FILTER_ENTRIES: u32 = 64;

/// Operation of a request, from the first letters of the tracepoint's `rwbs`.
pub mod op {
    /// `R`
    pub const READ: u8 = 0;
    /// `W`
    pub const WRITE: u8 = 1;
    /// `F` as the operation (a cache flush), not as a pre-flush flag.
    pub const FLUSH: u8 = 2;
    /// `D` (discard and secure erase).
    pub const DISCARD: u8 = 3;
    /// `N` and anything else (write-zeroes, zone management, driver commands).
    pub const OTHER: u8 = 4;
    /// Number of operations.
    pub const LEN: u8 = 5;
}

/// Classifies a request from the first two bytes of `rwbs`, which the kernel
/// writes as an optional `F` (pre-flush flag), then the operation letter, then
/// flag letters (`F` for FUA, `A`, `S`, `M`, `U`).
#[inline(always)]
pub const fn op_from_rwbs(rwbs: [u8; 2]) -> u8 {
    let letter = if rwbs[0] == b'F' {
        match rwbs[1] {
            // A pre-flush flag followed by the operation.
            b'W' | b'R' | b'D' | b'N' => rwbs[1],
            // "F" alone, "FF" (pre-flush + flush, or flush + FUA), "FS"…: a flush.
            _ => b'F',
        }
    } else {
        rwbs[0]
    };
    match letter {
        b'R' => op::READ,
        b'W' => op::WRITE,
        b'F' => op::FLUSH,
        b'D' => op::DISCARD,
        _ => op::OTHER,
    }
}

/// Key of `BLOCK_HISTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    /// The kernel's dev_t of the disk: `(major << 20) | minor`.
    pub dev: u32,
    /// One of `op::*`.
    pub op: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
}

/// Value of `BLOCK_HISTS`: everything about one (disk, operation) in one
/// value, so a completion costs one map lookup, not three.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHists {
    /// Issue to completion; slots in microseconds, sum and max in ns.
    pub latency: Hist,
    /// block_io_start (the kernel starts accounting the request) to issue;
    /// slots in microseconds. Latency plus this is what /proc/diskstats times.
    /// Empty before Linux 6.5 and for requests whose start was not seen.
    pub queue: Hist,
    /// Request size at issue; slots in KiB, sum and max in bytes.
    pub size: Hist,
}

impl BlockHists {
    /// All empty.
    pub const fn zeroed() -> Self {
        Self {
            latency: Hist::zeroed(),
            queue: Hist::zeroed(),
            size: Hist::zeroed(),
        }
    }
}

/// Key of `BLOCK_INFLIGHT`. The tracepoints carry no request pointer, so a
/// request is known by where it goes: no two requests of one operation to the
/// same sector of a disk are normally in flight at once. (A front merge moves
/// a queued request's first sector; its completion then counts as unmatched.)
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InflightKey {
    /// First sector.
    pub sector: u64,
    /// dev_t of the disk.
    pub dev: u32,
    /// One of `op::*`.
    pub op: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
}

/// Value of `BLOCK_INFLIGHT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InflightVal {
    /// bpf_ktime_get_ns() at block_io_start; 0 when not seen.
    pub started_ns: u64,
    /// bpf_ktime_get_ns() at issue; 0 while queued.
    pub issued_ns: u64,
    /// Sectors not yet completed (a request can complete in parts); only
    /// the classic programs use it, the BTF ones follow the request itself.
    pub sectors: u32,
    /// Bytes of the request at issue.
    pub bytes: u32,
}

/// Longest span of a tracepoint record the programs copy (one helper call
/// per event instead of one per field: the copies dominate the run time).
pub const SPAN_MAX: u16 = 48;

/// Where the fields of one block tracepoint lie: the program copies
/// `len` bytes from offset `base` of the record, then reads each field at its
/// offset within that copy. `base` is a multiple of 8, so fields keep their
/// natural alignment in the copy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockFields {
    /// Record offset of the copied span (a multiple of 8).
    pub base: u16,
    /// Bytes copied, at most `SPAN_MAX`.
    pub len: u16,
    /// `dev` (u32), relative to `base`.
    pub dev: u16,
    /// `sector` (u64).
    pub sector: u16,
    /// `nr_sector` (u32).
    pub nr_sector: u16,
    /// `bytes` (u32); only block_rq_issue has it.
    pub bytes: u16,
    /// `rwbs` (char[], the first two bytes are read).
    pub rwbs: u16,
    /// Explicit padding; always zero.
    pub _pad: u16,
}

impl BlockFields {
    /// All zero.
    pub const fn zeroed() -> Self {
        Self {
            base: 0,
            len: 0,
            dev: 0,
            sector: 0,
            nr_sector: 0,
            bytes: 0,
            rwbs: 0,
            _pad: 0,
        }
    }
}

/// Where the BTF tracepoint programs (`tp_btf`, kernels with BTF) find what
/// they read in the kernel's structs, from the kernel's BTF: `rq` offsets in
/// `struct request`, `q_disk` in `struct request_queue`, `disk_*` in
/// `struct gendisk`. These programs read the request directly instead of
/// a tracepoint record the kernel fills for every event, and key requests
/// in flight by their address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRqOffsets {
    /// `struct request_queue *q`.
    pub rq_q: u16,
    /// `sector_t __sector` (u64).
    pub rq_sector: u16,
    /// `unsigned int __data_len`: bytes left to complete.
    pub rq_data_len: u16,
    /// `blk_opf_t cmd_flags` (u32): the operation is its low byte.
    pub rq_cmd_flags: u16,
    /// `struct gendisk *disk`.
    pub q_disk: u16,
    /// `int major`.
    pub disk_major: u16,
    /// `int first_minor`.
    pub disk_first_minor: u16,
    /// Explicit padding; always zero.
    pub _pad: u16,
}

impl BlockRqOffsets {
    /// All zero.
    pub const fn zeroed() -> Self {
        Self {
            rq_q: 0,
            rq_sector: 0,
            rq_data_len: 0,
            rq_cmd_flags: 0,
            q_disk: 0,
            disk_major: 0,
            disk_first_minor: 0,
            _pad: 0,
        }
    }
}

/// The operation of a request from the low byte of its `cmd_flags`
/// (`enum req_op`, unchanged since Linux 4.10), classified as the
/// tracepoints' `rwbs` letter is (`blk_fill_rwbs`).
#[inline(always)]
pub const fn op_from_req_op(req_op: u32) -> u8 {
    match req_op & 0xff {
        0 => op::READ,
        1 => op::WRITE,
        2 => op::FLUSH,
        // REQ_OP_DISCARD, REQ_OP_SECURE_ERASE
        3 | 5 => op::DISCARD,
        _ => op::OTHER,
    }
}

/// Field positions in the tracepoint records (from tracefs `format` files)
/// and filters; a read-only global set before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// block:block_io_start (Linux 6.5+; unused when absent).
    pub start: BlockFields,
    /// block:block_rq_issue.
    pub issue: BlockFields,
    /// block:block_rq_complete (`nr_sector` is what this call completed).
    pub complete: BlockFields,
    /// Struct offsets for the BTF tracepoint programs (unused by the others).
    pub rq: BlockRqOffsets,
    /// 1: trace only devices present in `BLOCK_DEV_FILTER`.
    pub filter_devs: u8,
    /// 1: block_io_start is attached (queued time), so issues look up the
    /// request's entry before replacing it.
    pub queue_time: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 6],
}

impl BlockConfig {
    /// All zero; the kernel side's initial value.
    pub const fn zeroed() -> Self {
        Self {
            start: BlockFields::zeroed(),
            issue: BlockFields::zeroed(),
            complete: BlockFields::zeroed(),
            rq: BlockRqOffsets::zeroed(),
            filter_devs: 0,
            queue_time: 0,
            _pad: [0; 6],
        }
    }
}

/// Indices into the per-CPU `BLOCK_COUNTERS` array. Completions and timed
/// completions are not counted in the kernel: user space derives them from
/// the latency histograms' counts and the counters below.
pub mod counter {
    /// Issues traced (after the device filter).
    pub const ISSUED: u32 = 0;
    /// Completions with no issue seen: in flight at start, or lost.
    pub const UNMATCHED: u32 = 1;
    /// Issues not tracked because the in-flight map was full.
    pub const INFLIGHT_FULL: u32 = 2;
    /// Completions not recorded because the histogram map was full.
    pub const HIST_FULL: u32 = 3;
    /// Partial completions (the rest of the request stays in flight).
    pub const PARTIAL: u32 = 4;
    /// Tracepoint fields that could not be read.
    pub const READ_ERROR: u32 = 5;
    /// Requests started (block_io_start, after the device filter).
    pub const STARTED: u32 = 6;
    /// Number of counters.
    pub const LEN: u32 = 7;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all seven are #[repr(C)], Copy, made of integers and byte arrays
    // with explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::BlockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockHists {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InflightKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InflightVal {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockFields {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockRqOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn layout() {
        assert_eq!(size_of::<BlockKey>(), 8);
        assert_eq!(size_of::<BlockHists>(), 3 * size_of::<Hist>());
        assert_eq!(align_of::<BlockKey>(), 4);
        assert_eq!(size_of::<InflightKey>(), 16);
        assert_eq!(align_of::<InflightKey>(), 8);
        assert_eq!(size_of::<InflightVal>(), 24);
        assert_eq!(size_of::<BlockFields>(), 8 * 2);
        assert_eq!(size_of::<BlockRqOffsets>(), 8 * 2);
        assert_eq!(size_of::<BlockConfig>(), 4 * 16 + 8);
        assert_eq!(align_of::<BlockConfig>(), 2);
    }

    #[test]
    fn rwbs_ops() {
        let op = |s: &[u8]| op_from_rwbs([s[0], *s.get(1).unwrap_or(&0)]);
        assert_eq!(op(b"R"), op::READ);
        assert_eq!(op(b"RA"), op::READ);
        assert_eq!(op(b"WS"), op::WRITE);
        assert_eq!(op(b"FWS"), op::WRITE);
        assert_eq!(op(b"WFS"), op::WRITE);
        assert_eq!(op(b"F"), op::FLUSH);
        assert_eq!(op(b"FF"), op::FLUSH);
        assert_eq!(op(b"FS"), op::FLUSH);
        assert_eq!(op(b"D"), op::DISCARD);
        assert_eq!(op(b"DE"), op::DISCARD);
        assert_eq!(op(b"FD"), op::DISCARD);
        assert_eq!(op(b"N"), op::OTHER);
        assert_eq!(op(b"FN"), op::OTHER);
    }

    #[test]
    fn req_ops_as_rwbs() {
        // REQ_OP_* with flag bits above the low byte, as in cmd_flags.
        let flags = 1 << 11 | 1 << 17;
        assert_eq!(op_from_req_op(flags), op::READ);
        assert_eq!(op_from_req_op(flags | 1), op::WRITE);
        assert_eq!(op_from_req_op(2), op::FLUSH);
        assert_eq!(op_from_req_op(3), op::DISCARD);
        assert_eq!(op_from_req_op(5), op::DISCARD);
        // ZONE_APPEND and WRITE_ZEROES are "N" in rwbs.
        assert_eq!(op_from_req_op(7), op::OTHER);
        assert_eq!(op_from_req_op(9), op::OTHER);
    }
}
