//! One span of a classic tracepoint's record, copied with a single helper
//! call (not a probe itself). A copy per field costs a helper call each, and
//! those calls dominated the programs' run time; direct loads from the context
//! are not an option, because the verifier wants their offsets in the
//! instructions and ours come from the format files at start-up.

use core::mem::MaybeUninit;

use aya_ebpf::{
    EbpfContext as _, helpers::generated::bpf_probe_read_kernel, programs::TracePointContext,
};

/// Room for a copy: `WORDS` u64 words, so that it is 8-aligned like the
/// record's span. Left uninitialized: zeroing it cost a memset call per event.
pub struct SpanBuf<const WORDS: usize> {
    buf: MaybeUninit<[u64; WORDS]>,
}

impl<const WORDS: usize> SpanBuf<WORDS> {
    #[inline(always)]
    pub fn new() -> Self {
        SpanBuf {
            buf: MaybeUninit::uninit(),
        }
    }

    /// Copies `len` bytes (at most `WORDS * 8`) from offset `base` of the
    /// record; `None` when the helper fails.
    #[inline(always)]
    pub fn read(&mut self, ctx: &TracePointContext, base: u16, len: u16) -> Option<Record<'_>> {
        let len = (len as usize).min(WORDS * 8);
        let dst = self.buf.as_mut_ptr().cast::<u8>();
        // SAFETY: a read from the tracepoint record at offsets taken from its
        // format file into our own buffer of at least `len` bytes; the helper
        // checks the source and fails cleanly instead of faulting.
        let ret = unsafe {
            bpf_probe_read_kernel(
                dst.cast(),
                len as u32,
                ctx.as_ptr().cast::<u8>().add(base as usize).cast(),
            )
        };
        if ret != 0 {
            return None;
        }
        // SAFETY: the helper wrote these `len` bytes.
        Some(Record {
            bytes: unsafe { core::slice::from_raw_parts(dst, len) },
        })
    }
}

/// The bytes copied.
pub struct Record<'a> {
    bytes: &'a [u8],
}

impl Record<'_> {
    /// The `T` at byte `offset` of the copy, or the default when outside it;
    /// user space checked that it fits and is aligned (fields are naturally
    /// aligned in the record).
    #[inline(always)]
    pub fn get<T: Copy + Default>(&self, offset: u16) -> T {
        let offset = offset as usize;
        if offset + core::mem::size_of::<T>() > self.bytes.len() {
            return T::default();
        }
        // SAFETY: in bounds (checked above) of initialized plain bytes;
        // aligned because the buffer is 8-aligned and both the span's base
        // and the field's record offset are multiples of the field's alignment.
        unsafe { *self.bytes.as_ptr().add(offset).cast::<T>() }
    }
}
