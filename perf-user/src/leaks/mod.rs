//! `leaks`: outstanding allocations of one process per call stack, from the
//! allocation tracer (`collectors::alloc`).
//!
//! - [`allocator`]: which file holds the process's malloc, and where.
//! - [`attach`]: choose the allocator, load, attach, for a running process.
//! - [`launch`]: starting `leaks -- COMMAND` paused, so its first allocation is seen.
//! - [`image`]: the process's name and maps, captured while it runs.
//! - [`aggregate`]: per-stack bytes, counts, ages and growth (pure, tested).
//! - [`report`], [`model`], [`output`]: the symbolized report, as a table or JSON.

pub mod aggregate;
pub mod allocator;
pub mod attach;
pub mod image;
pub mod launch;
pub mod model;
pub mod output;
pub mod probe_site;
pub mod report;
