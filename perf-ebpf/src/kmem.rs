//! Loads from kernel structs in BTF tracepoint programs (not a probe
//! itself), at offsets user space took from the kernel's BTF.

/// Loads a `T` at byte offset `off` of the kernel object at `base`.
///
/// # Safety
/// `base` must be a pointer the verifier knows by its BTF type (a tp_btf
/// argument, a pointer loaded from one, or a helper's typed result), and
/// `off` the offset of a member of exactly `T`'s size, from that BTF: the
/// verifier checks both and turns loads through untrusted pointers into
/// fault-safe ones (0 on a fault).
#[inline(always)]
pub unsafe fn load<T: Copy>(base: *const u8, off: u16) -> T {
    // SAFETY: as the function's contract says.
    unsafe { core::ptr::read_volatile(base.add(off as usize).cast::<T>()) }
}
