//! Compact unwind rows, built by user space from each executable file's
//! `.eh_frame` / `.debug_frame` and read by the kernel unwinder.
//!
//! One row says, from its `pc` up to the next row's: how to find the
//! canonical frame address (CFA: the caller's stack pointer), where the
//! caller's frame pointer was saved, and (arm64) where the return address
//! was saved. x86_64 always finds the return address at CFA - 8.

/// How the CFA is computed from this frame's registers.
pub mod cfa {
    /// No unwind information covers this address (a gap between functions,
    /// or the end of the table): fall back to the frame pointer.
    pub const END: u8 = 0;
    /// CFA = stack pointer + `cfa_offset`.
    pub const SP: u8 = 1;
    /// CFA = frame pointer (rbp / x29) + `cfa_offset`.
    pub const FP: u8 = 2;
    /// x86_64 PLT stub: CFA = rsp + 8, + 8 more when (rip & 15) >= 11 (the
    /// expression every PLT entry's FDE uses).
    pub const PLT: u8 = 3;
    /// A rule the unwinder does not support (a DWARF expression, an offset
    /// that does not fit): fall back to the frame pointer for this frame.
    pub const UNSUPPORTED: u8 = 4;
    /// The return address is undefined here: the outermost frame (`_start`,
    /// a thread's entry); the walk is complete.
    pub const OUTERMOST: u8 = 5;
}

/// Where the caller's frame pointer (rbp / x29) is.
pub mod fp {
    /// Not saved by this function: the caller's is the current value.
    pub const UNCHANGED: u8 = 0;
    /// Saved at CFA + `fp_offset`.
    pub const AT_OFFSET: u8 = 1;
    /// Another rule (a register, an expression): the frame pointer is lost
    /// for the frames above, which then need rows of their own.
    pub const UNSUPPORTED: u8 = 2;
}

/// One row of an unwind table (12 bytes, no padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UnwindRow {
    /// First address covered, in the file's virtual address space.
    pub pc: u32,
    /// One of [`cfa`].
    pub cfa_type: u8,
    /// One of [`fp`].
    pub fp_type: u8,
    /// Added to the CFA's base register.
    pub cfa_offset: i16,
    /// Offset from the CFA of the saved frame pointer, for [`fp::AT_OFFSET`].
    pub fp_offset: i16,
    /// arm64: offset from the CFA of the saved return address (x30), or 0
    /// while it is still in the link register. x86_64: -8.
    pub ra_offset: i16,
}

impl UnwindRow {
    /// Whether two rows unwind the same way (their `pc` aside).
    pub fn same_rule(&self, other: &Self) -> bool {
        self.cfa_type == other.cfa_type
            && self.fp_type == other.fp_type
            && self.cfa_offset == other.cfa_offset
            && self.fp_offset == other.fp_offset
            && self.ra_offset == other.ra_offset
    }
}

/// Executable mappings of one process that the unwinder knows.
pub const UNWIND_MAX_MAPPINGS: usize = 32;
/// Frames the unwinder walks per stack.
pub const UNWIND_MAX_FRAMES: usize = 320;
/// Stack ids at or above this (and below 2^31) name stacks walked with the
/// tables (in UNWIND_STACKS, keyed by the id); the kernel's stack-map ids
/// are far below it (a stack map has fewer entries).
pub const UNWIND_STACK_ID_BASE: i32 = 1 << 30;

/// Addresses per page of the row index: `address >> UNWIND_PAGE_SHIFT`. 4 KiB
/// pages keep each binary search short (a few cache lines of rows): with
/// 64 KiB pages a cold walk cost 1.8 us a frame on python3, most of it cache
/// misses of a 12-step search.
pub const UNWIND_PAGE_SHIFT: u32 = 12;
/// Rows searched per page at most (the binary search is bounded by it).
pub const UNWIND_MAX_PAGE_ROWS: u32 = 1 << 14;

/// One executable mapping: `[start, end)` of file `file_id`, whose file
/// address is `pc - bias`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UnwindMapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Subtracted from a pc to get the address in the file's table.
    pub bias: u64,
    /// The file's table; 0 when the file has none (frame pointer there).
    pub file_id: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// A process's mappings, sorted by `start`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnwindProcess {
    /// Used entries of `mappings`.
    pub count: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The mappings.
    pub mappings: [UnwindMapping; UNWIND_MAX_MAPPINGS],
}

/// Key of the page index: rows of file `file_id` for addresses
/// `[page << UNWIND_PAGE_SHIFT, (page + 1) << UNWIND_PAGE_SHIFT)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnwindPageKey {
    /// The file.
    pub file_id: u32,
    /// `address >> UNWIND_PAGE_SHIFT`.
    pub page: u32,
}

/// Where a page's rows are in the row array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindPage {
    /// Index of the first row.
    pub first: u32,
    /// Rows.
    pub count: u32,
}

/// Why a walk ended.
pub mod end {
    /// The outermost frame was reached.
    pub const COMPLETE: u32 = 0;
    /// A pc in no known mapping.
    pub const NO_MAPPING: u32 = 1;
    /// No row for the pc, and no frame pointer to fall back on.
    pub const NO_ROW: u32 = 2;
    /// An unsupported rule, and no frame pointer to fall back on.
    pub const UNSUPPORTED: u32 = 3;
    /// `UNWIND_MAX_FRAMES` frames walked.
    pub const DEPTH: u32 = 4;
    /// Reading the stack failed.
    pub const READ_FAULT: u32 = 5;
    /// The process's tables are not loaded (yet).
    pub const NOT_LOADED: u32 = 6;
    /// The sample interrupted the kernel (user registers not at hand).
    pub const KERNEL_MODE: u32 = 7;
    /// Number of reasons.
    pub const LEN: u32 = 8;
}

/// An unwound user stack.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnwindStack {
    /// Frames in `pcs`.
    pub len: u32,
    /// One of [`end`].
    pub end: u32,
    /// Return addresses, innermost first (the first is the sampled pc).
    pub pcs: [u64; UNWIND_MAX_FRAMES],
}

/// Configuration of the experimental unwinding sampler.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UnwindConfig {
    /// The process whose samples are unwound.
    pub tgid: u32,
    /// 1 where the kernel has BTF: samples taken in kernel mode get the
    /// task's user registers from `bpf_task_pt_regs` (Linux 5.15+), which
    /// needs it; 0 counts them as [`end::KERNEL_MODE`].
    pub task_regs: u32,
}

impl UnwindConfig {
    /// All zero, for the kernel side's static.
    pub const fn zeroed() -> Self {
        Self {
            tgid: 0,
            task_regs: 0,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type here is repr(C), Copy, integers and arrays of them,
    // with explicit padding (pinned by the layout test).
    unsafe impl aya::Pod for super::UnwindRow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindMapping {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindProcess {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindPageKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindPage {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindStack {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<UnwindRow>(), 12);
        assert_eq!(core::mem::align_of::<UnwindRow>(), 4);
        assert_eq!(core::mem::offset_of!(UnwindRow, cfa_type), 4);
        assert_eq!(core::mem::offset_of!(UnwindRow, cfa_offset), 6);
        assert_eq!(core::mem::offset_of!(UnwindRow, ra_offset), 10);
        assert_eq!(core::mem::size_of::<UnwindMapping>(), 32);
        assert_eq!(core::mem::size_of::<UnwindProcess>(), 8 + 32 * 32);
        assert_eq!(
            core::mem::size_of::<UnwindStack>(),
            8 + 8 * UNWIND_MAX_FRAMES
        );
        assert_eq!(core::mem::size_of::<UnwindPageKey>(), 8);
    }
}
