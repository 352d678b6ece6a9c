//! Aggregation helpers shared by the tracepoint programs (not a probe itself):
//! per-CPU log2 histograms and per-CPU counters.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    maps::{PerCpuArray, PerCpuHashMap},
};
use perf_ebpf_common::hist::Hist;

/// Adds `value` (base units: ns or bytes) to `slot` of `h`.
#[inline(always)]
pub fn add(h: &mut Hist, value: u64, slot: usize) {
    if let Some(s) = h.slots.get_mut(slot) {
        *s += 1;
    }
    h.count += 1;
    h.sum += value;
    if value > h.max {
        h.max = value;
    }
}

/// This CPU's value of `key` in a per-CPU hash map, inserted from `zero`
/// when new; `None` when the map is full.
#[inline(always)]
pub fn per_cpu_entry<K, V>(map: &PerCpuHashMap<K, V>, key: &K, zero: &V) -> Option<*mut V> {
    if let Some(p) = map.get_ptr_mut(key) {
        return Some(p);
    }
    // EEXIST (another program on this CPU got there first) is as good as
    // success; a full map shows up as the lookup failing below.
    let _ = map.insert(key, zero, BPF_NOEXIST as u64);
    map.get_ptr_mut(key)
}

/// Adds `value` to `slot` of `key`'s histogram on this CPU, creating it when
/// new. Returns false when the map is full.
#[inline(always)]
pub fn record<K>(map: &PerCpuHashMap<K, Hist>, key: &K, value: u64, slot: usize) -> bool {
    let Some(ptr) = per_cpu_entry(map, key, &ZERO_HIST) else {
        return false;
    };
    // SAFETY: this CPU's own copy of the value, and tracing programs do not
    // nest on one CPU (the kernel skips a program that would), so nothing
    // else writes it meanwhile.
    add(unsafe { &mut *ptr }, value, slot);
    true
}

/// Inserted for a key seen for the first time. A static rather than a stack
/// value: 280 bytes is over half of the 512-byte BPF stack.
static ZERO_HIST: Hist = Hist::zeroed();

/// Adds one to counter `index` on this CPU.
#[inline(always)]
pub fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and tracing programs do not nest on one CPU.
        unsafe { *slot += 1 };
    }
}
