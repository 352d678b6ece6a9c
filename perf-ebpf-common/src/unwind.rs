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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), only integer fields, no padding (pinned by the test).
    unsafe impl aya::Pod for super::UnwindRow {}
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
    }
}
