//! The symbolized leak report that the table and the JSON are written from.
//! Its JSON form is documented in docs/leaks.md.

use std::sync::Arc;

use serde::Serialize;

use crate::{collectors::alloc::AllocCounters, profile::Frame};

/// Version of the JSON document's schema; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// One report: what the traced process holds at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct LeakReport {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The traced process.
    pub pid: u32,
    /// Its name (`/proc/PID/comm`), when it was read.
    pub process: Option<String>,
    /// The command line, for `leaks -- COMMAND`.
    pub command: Option<Vec<String>>,
    /// Files whose allocation functions are probed.
    pub allocators: Vec<String>,
    /// When tracing began, ns since the Unix epoch.
    pub start_unix_nanos: u64,
    /// Seconds since tracing began.
    pub elapsed_secs: f64,
    /// Seconds the growth rates are measured over (since the previous report).
    pub window_secs: f64,
    /// 1, 2, … for `--interval` reports.
    pub sequence: u32,
    /// True for the last report of the run.
    pub last: bool,
    /// One allocation in this many is tracked (`--sample`); amounts are
    /// multiplied by it. 1 means every allocation.
    pub sample_every: u32,
    /// Allocations younger than this many seconds are left out (`--min-age`).
    pub min_age_secs: f64,
    /// Sum of `stacks[].bytes`.
    pub outstanding_bytes: u64,
    /// Sum of `stacks[].allocations`.
    pub outstanding_allocations: u64,
    /// Bytes outstanding but younger than `min_age_secs` (not in `stacks`).
    pub young_bytes: u64,
    /// Allocations outstanding but younger than `min_age_secs`.
    pub young_allocations: u64,
    /// Stacks with something outstanding, most bytes first.
    pub stacks: Vec<LeakStack>,
    /// Activity and losses, as the kernel programs counted them (never scaled).
    pub counters: AllocCounters,
    /// How stacks were walked with unwind tables, when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwind: Option<crate::unwind::UnwindSummary>,
    /// Why tracing ended, when it ended for another reason than its duration:
    /// the process exited, or Ctrl-C.
    pub ended: Option<String>,
    /// How the traced process ended, when it did during the trace.
    pub exit: Option<ExitInfo>,
}

/// How the traced process ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// Its exit code, when it exited (known for `leaks -- COMMAND` only).
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
}

/// Outstanding allocations made by one call stack through one function.
#[derive(Clone, Debug, Serialize)]
pub struct LeakStack {
    /// Outstanding bytes (scaled).
    pub bytes: u64,
    /// Outstanding allocations (scaled).
    pub allocations: u64,
    /// Age of the oldest, in seconds.
    pub oldest_age_secs: f64,
    /// Change of this stack's outstanding bytes per second over the window
    /// (allocations of every age, scaled).
    pub growth_bytes_per_sec: f64,
    /// The allocation function called: malloc, calloc, realloc, reallocarray,
    /// posix_memalign or aligned_alloc (which covers memalign; malloc covers valloc).
    pub function: String,
    /// Allocations this stack made since tracing began, freed or not (scaled).
    pub allocs_total: u64,
    /// Bytes this stack allocated since tracing began, freed or not (scaled).
    pub bytes_allocated_total: u64,
    /// `ok`, `lost` (the stack map was full or a hash collided: see
    /// `counters`), or `empty` (no user frames could be read).
    pub stack: &'static str,
    /// Frames root first; the last one is the function that called `function`.
    pub frames: Vec<Arc<Frame>>,
}
