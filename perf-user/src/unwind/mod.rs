//! Unwinding user stacks without frame pointers (issue 13): compact tables
//! built from each executable file's CFI, for the kernel unwinder.
//!
//! So far: [`table`], the table builder, checked against `readelf
//! --debug-dump=frames-interp`, and [`store`]: tables per file under a memory
//! budget and the page index the kernel side will search. The kernel side and
//! the table maps come next.

pub mod sampler;
pub mod store;
pub mod table;

/// How user stacks are walked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnwindMode {
    /// Frame pointers, by the kernel (`bpf_get_stackid`): cheap, but one or
    /// two frames deep in code built without them (most distribution
    /// packages).
    #[default]
    Fp,
    /// Tables built from each file's `.eh_frame` (x86_64): whole stacks
    /// without frame pointers; frame pointers where a file has no table.
    Dwarf,
}
