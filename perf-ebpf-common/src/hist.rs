//! Log2 histograms kept by the kernel programs, one per key and CPU.
//!
//! Slot `k` counts values whose scaled value `v` (latency in microseconds,
//! size in KiB) lies in `[2^k, 2^(k+1))`; slot 0 also counts `v == 0`, like
//! libbpf-tools' biolatency. The exact sum and maximum are kept in base units
//! (nanoseconds, bytes), so means are exact and only percentiles are estimates.

/// Number of slots. The last one also counts everything above it
/// (2^31 us is about 36 minutes; 2^31 KiB is 2 TiB).
pub const HIST_SLOTS: usize = 32;

/// One histogram (per CPU in the kernel; summed over CPUs by user space).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hist {
    /// Counts per log2 slot of the scaled value.
    pub slots: [u64; HIST_SLOTS],
    /// Number of values recorded.
    pub count: u64,
    /// Sum of the values in base units (ns or bytes).
    pub sum: u64,
    /// Largest value in base units.
    pub max: u64,
}

impl Hist {
    /// An empty histogram: the value inserted for a key seen for the first time.
    pub const fn zeroed() -> Self {
        Self {
            slots: [0; HIST_SLOTS],
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

/// Floor of log2(`v`), 0 for 0 (at most 63).
///
/// Branch-free shifts rather than `leading_zeros`: the BPF target has no
/// count-leading-zeros instruction, and this keeps the verifier's job trivial.
#[inline(always)]
pub const fn log2_floor(v: u64) -> usize {
    let mut v = v;
    let mut r: u64 = 0;
    let mut shift = ((v > 0xFFFF_FFFF) as u64) << 5;
    v >>= shift;
    r |= shift;
    shift = ((v > 0xFFFF) as u64) << 4;
    v >>= shift;
    r |= shift;
    shift = ((v > 0xFF) as u64) << 3;
    v >>= shift;
    r |= shift;
    shift = ((v > 0xF) as u64) << 2;
    v >>= shift;
    r |= shift;
    shift = ((v > 0x3) as u64) << 1;
    v >>= shift;
    r |= shift;
    r |= v >> 1;
    r as usize
}

/// Floor of log2(`v`), 0 for 0, capped at `HIST_SLOTS - 1`.
#[inline(always)]
pub const fn log2_slot(v: u64) -> usize {
    let r = log2_floor(v);
    if r >= HIST_SLOTS { HIST_SLOTS - 1 } else { r }
}

/// `log2_slot(ns / LATENCY_UNIT_NS)` without the division, which the BPF
/// target has no cheaper form of (no multiply-high) and which costs tens of
/// cycles. `ns / 1000 >= 2^m` exactly when `ns >= 1000 << m`, and since 1000
/// is just under 1024, `m` is `k - 9` or `k - 10` for `k = floor(log2(ns))`.
#[inline(always)]
pub const fn latency_slot(ns: u64) -> usize {
    if ns < 2 * LATENCY_UNIT_NS {
        return 0;
    }
    // k >= 10 here, and 1000 << 54 (k = 63) still fits in a u64.
    let mut m = log2_floor(ns) - 9;
    if ns < LATENCY_UNIT_NS << m {
        m -= 1;
    }
    if m >= HIST_SLOTS { HIST_SLOTS - 1 } else { m }
}

/// Nanoseconds per slot unit of latency histograms (slots are microseconds).
pub const LATENCY_UNIT_NS: u64 = 1_000;
/// Log2 of bytes per slot unit of size histograms (slots are KiB).
pub const SIZE_UNIT_SHIFT: u32 = 10;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, only u64 fields, no padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::Hist {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<Hist>(), (HIST_SLOTS + 3) * 8);
        assert_eq!(core::mem::align_of::<Hist>(), 8);
    }

    #[test]
    fn slots_at_powers_of_two() {
        assert_eq!(log2_slot(0), 0);
        assert_eq!(log2_slot(1), 0);
        assert_eq!(log2_slot(2), 1);
        assert_eq!(log2_slot(3), 1);
        assert_eq!(log2_slot(4), 2);
        for k in 1..HIST_SLOTS as u32 {
            assert_eq!(log2_slot(1u64 << k), k as usize);
            assert_eq!(log2_slot((1u64 << k) - 1), k as usize - 1);
        }
        assert_eq!(log2_slot(u64::MAX), HIST_SLOTS - 1);
        assert_eq!(log2_slot(1 << 40), HIST_SLOTS - 1);
    }

    #[test]
    fn latency_slot_is_the_slot_of_microseconds() {
        let check = |ns: u64| assert_eq!(latency_slot(ns), log2_slot(ns / LATENCY_UNIT_NS), "{ns}");
        for m in 0..55 {
            let edge = LATENCY_UNIT_NS << m;
            for ns in [edge - 1, edge, edge + 1] {
                check(ns);
            }
        }
        for k in 0..64 {
            check(1 << k);
            check((1u64 << k).wrapping_sub(1));
        }
        let mut ns = 1u64;
        while ns < u64::MAX / 3 {
            check(ns);
            ns = ns * 3 + 7;
        }
        for ns in 0..100_000 {
            check(ns);
        }
        check(u64::MAX);
    }
}
