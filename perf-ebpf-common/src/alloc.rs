//! Allocation tracing (`leaks`): keys, values and configuration shared with
//! `perf-ebpf/src/alloc.rs`.
//!
//! The kernel side keeps, for one process: the allocation call each thread is
//! in (size and arguments, keyed by thread id), every outstanding allocation
//! (keyed by address), and running totals per (call stack, function, program
//! image). User space reads them at report time.

/// Threads that can be inside an allocation call at once (an LRU map: a thread
/// that died inside one is evicted, not leaked).
pub const ALLOC_PENDING_ENTRIES: u32 = 16_384;
/// Default capacity of the outstanding-allocation map (`leaks --max-allocations`).
/// Allocated on demand, so the default costs nothing until used.
pub const ALLOC_OUTSTANDING_ENTRIES: u32 = 262_144;
/// Distinct (stack, function, image) totals.
pub const ALLOC_STACK_TOTAL_ENTRIES: u32 = 65_536;
/// Distinct allocation call stacks (a preallocated stack-trace map, ~1 KiB each).
pub const ALLOC_STACK_ENTRIES: u32 = 16_384;
/// An entry in the pending map older than this is a leftover of a thread that
/// never returned (it was killed inside the call), not an outer call.
pub const ALLOC_PENDING_STALE_NS: u64 = 10_000_000_000;
/// The signal the start-up stop program raises (SIGSTOP on every Linux arch).
pub const SIGSTOP: u32 = 19;

/// Which allocation function was called. Functions that take the same
/// arguments share a kind: `valloc` is `MALLOC`, `memalign` is `ALIGNED_ALLOC`.
pub mod kind {
    /// `malloc(size)`, `valloc(size)`.
    pub const MALLOC: u32 = 0;
    /// `calloc(nmemb, size)`.
    pub const CALLOC: u32 = 1;
    /// `realloc(ptr, size)`.
    pub const REALLOC: u32 = 2;
    /// `reallocarray(ptr, nmemb, size)`.
    pub const REALLOCARRAY: u32 = 3;
    /// `posix_memalign(&ptr, alignment, size)`: the address is written through
    /// the first argument and the return value is an error number.
    pub const POSIX_MEMALIGN: u32 = 4;
    /// `aligned_alloc(alignment, size)`, `memalign(alignment, size)`.
    pub const ALIGNED_ALLOC: u32 = 5;
    /// Number of kinds.
    pub const LEN: u32 = 6;

    /// The name shown in reports.
    pub const fn name(kind: u32) -> &'static str {
        match kind {
            MALLOC => "malloc",
            CALLOC => "calloc",
            REALLOC => "realloc",
            REALLOCARRAY => "reallocarray",
            POSIX_MEMALIGN => "posix_memalign",
            ALIGNED_ALLOC => "aligned_alloc",
            _ => "?",
        }
    }
}

/// Configuration of the allocation programs; a read-only global set before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocConfig {
    /// The traced process (thread-group id). Every program returns at once for others.
    pub tgid: u32,
    /// Track one allocation in this many, chosen by address ([`sampled`]); 0 and 1 track all.
    pub sample_every: u32,
}

impl AllocConfig {
    /// Nothing traced; the kernel side's initial value.
    pub const fn zeroed() -> Self {
        Self {
            tgid: 0,
            sample_every: 0,
        }
    }
}

/// Value of `ALLOC_PENDING`: the last allocation call of one thread, in
/// progress from the entry probe to the return probe. The entry stays after
/// the return (with `entry_sp` 0) so that the next call writes it in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocPending {
    /// Requested bytes.
    pub size: u64,
    /// `posix_memalign`: where the address will be written; 0 otherwise.
    pub memptr: u64,
    /// Stack pointer at entry: tells the outer call's return from a nested
    /// call's (an allocator that calls `malloc` from `realloc`), and a nested
    /// call from a leftover. 0 once the call has returned.
    pub entry_sp: u64,
    /// bpf_ktime_get_ns() at entry.
    pub timestamp_ns: u64,
    /// One of `kind::*`.
    pub kind: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

/// Value of `ALLOC_OUTSTANDING` (keyed by address): one live allocation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocInfo {
    /// Requested bytes.
    pub size: u64,
    /// bpf_ktime_get_ns() (CLOCK_MONOTONIC) when it returned.
    pub timestamp_ns: u64,
    /// User stack id in `ALLOC_STACKS`, or one of the `STACK_*` markers.
    pub stack_id: i32,
    /// One of `kind::*`.
    pub kind: u32,
    /// Program image it belongs to: `ALLOC_STATE[state::GENERATION]` at the time.
    pub generation: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

/// Key of `ALLOC_STACK_TOTALS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocStackKey {
    /// User stack id, or one of the `STACK_*` markers.
    pub stack_id: i32,
    /// One of `kind::*`.
    pub kind: u32,
    /// Program image (see [`AllocInfo::generation`]).
    pub generation: u32,
}

/// Value of `ALLOC_STACK_TOTALS` (a per-CPU map; user space adds the CPUs'
/// copies). Only allocations add to it: what is outstanding per stack is
/// summed from `ALLOC_OUTSTANDING`, so that a free costs one map delete.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStackTotals {
    /// Allocations made (freed or not).
    pub allocs: u64,
    /// Bytes allocated (freed or not).
    pub alloc_bytes: u64,
}

/// Indices into the `ALLOC_STATE` array (u32 values).
pub mod state {
    /// Incremented each time the traced process runs execve(): allocations of
    /// an earlier image died with it.
    pub const GENERATION: u32 = 0;
    /// The generation user space has attached the allocator probes for; while
    /// it lags `GENERATION`, the start-up program stops the process.
    pub const HANDLED_GENERATION: u32 = 1;
    /// Number of entries.
    pub const LEN: u32 = 2;
}

/// Indices into the per-CPU `ALLOC_COUNTERS` array.
pub mod counter {
    /// Allocation calls that returned an address.
    pub const ALLOCS: u32 = 0;
    /// Allocation calls that returned no address (failures, `realloc(p, 0)`).
    pub const NULL_RETURNS: u32 = 1;
    /// Allocations tracked (the sampled ones).
    pub const ALLOCS_TRACKED: u32 = 2;
    /// `free` (and `realloc`'s implied free) of a non-null pointer.
    pub const FREES: u32 = 3;
    /// Frees that matched a tracked allocation.
    pub const FREES_MATCHED: u32 = 4;
    /// Allocations not tracked because `ALLOC_OUTSTANDING` was full.
    pub const OUTSTANDING_FULL: u32 = 5;
    /// Allocations tracked without per-stack totals because `ALLOC_STACK_TOTALS` was full.
    pub const STACK_TOTALS_FULL: u32 = 6;
    /// Calls not timed because `ALLOC_PENDING` could not take the thread.
    pub const PENDING_FULL: u32 = 7;
    /// Stacks lost to a stack-map hash collision.
    pub const STACK_COLLISION: u32 = 8;
    /// Stacks lost for another reason (stack map full, fault).
    pub const STACK_ERROR: u32 = 9;
    /// An address returned again while still tracked: its free was missed
    /// (freed through a function that is not probed); the old entry is dropped.
    pub const REPLACED: u32 = 10;
    /// `posix_memalign` succeeded but its result could not be read.
    pub const READ_FAILED: u32 = 11;
    /// Allocation calls made from inside another one, or tail-called by one
    /// (counted once, as the outer call).
    pub const NESTED: u32 = 12;
    /// Times the start-up program stopped the process for user space.
    pub const STOPS: u32 = 13;
    /// Number of counters.
    pub const LEN: u32 = 14;
}

/// True when the allocation at `addr` is tracked under `--sample every`.
///
/// Chosen by a hash of the address, not by counting calls, so that the free
/// of a tracked allocation is always seen and the free of an untracked one
/// always skipped. Allocator addresses are regular (aligned, often strided),
/// so the address is mixed first (the murmur3 64-bit finalizer).
#[inline(always)]
pub const fn sampled(addr: u64, every: u32) -> bool {
    if every <= 1 {
        return true;
    }
    let mut h = addr;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h.is_multiple_of(every as u64)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type here is #[repr(C)], Copy, made only of integers with
    // explicit padding fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::AllocConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocPending {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocStackKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocStackTotals {}
}

#[cfg(test)]
mod layout {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn no_implicit_padding() {
        assert_eq!(size_of::<AllocConfig>(), 8);
        assert_eq!(size_of::<AllocPending>(), 4 * 8 + 2 * 4);
        assert_eq!(align_of::<AllocPending>(), 8);
        assert_eq!(size_of::<AllocInfo>(), 2 * 8 + 4 * 4);
        assert_eq!(align_of::<AllocInfo>(), 8);
        assert_eq!(size_of::<AllocStackKey>(), 3 * 4);
        assert_eq!(align_of::<AllocStackKey>(), 4);
        assert_eq!(size_of::<AllocStackTotals>(), 2 * 8);
    }

    #[test]
    fn every_kind_has_a_name() {
        for k in 0..kind::LEN {
            assert_ne!(kind::name(k), "?");
        }
        assert_eq!(kind::name(kind::LEN), "?");
    }

    #[test]
    fn sampling_one_in_one_tracks_everything() {
        for addr in [0u64, 16, 0x7f00_0000_1000] {
            assert!(sampled(addr, 0));
            assert!(sampled(addr, 1));
        }
    }

    #[test]
    fn sampling_of_strided_addresses_is_close_to_one_in_n() {
        // malloc(32) hands out 48-byte chunks one after another: a plain
        // `addr % n` would pick all or none of them.
        for (stride, every) in [(48u64, 16u32), (16, 64), (4096, 10), (32, 7)] {
            let total = 200_000u64;
            let hits = (0..total)
                .filter(|i| sampled(0x5555_5555_0000 + i * stride, every))
                .count() as f64;
            let expected = total as f64 / every as f64;
            assert!(
                (hits - expected).abs() < expected * 0.05,
                "stride {stride}, 1 in {every}: {hits} sampled, expected about {expected}"
            );
        }
    }
}
