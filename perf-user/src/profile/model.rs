//! The symbolized profile that every output format is written from.

use std::sync::Arc;

use serde::Serialize;

pub use crate::collectors::offcpu::ThreadState;

/// One symbolized stack frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Frame {
    /// Demangled function name; `None` when no symbol covers the address.
    pub function: Option<String>,
    /// File name of the binary or library (`[kernel]` for kernel frames,
    /// `[unknown]` when the address was in no known mapping).
    pub module: String,
    /// Offset of the address in `module` (file offset for user frames,
    /// the address itself for the kernel).
    pub offset: u64,
    /// The sampled address (a return address for all but the leaf frame).
    pub address: u64,
    /// For a user frame with no name: the file offset in `module` where its
    /// function starts (from `.eh_frame` or the symbol tables), so that every
    /// sample in one unnamed function is shown, and aggregated, as one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_start: Option<u64>,
    /// Source file, when debug info has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Source line, when debug info has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// True for a kernel frame.
    pub kernel: bool,
}

#[cfg(test)]
impl Frame {
    /// A named frame at address 0, for tests.
    pub fn named(name: &str, module: &str, kernel: bool) -> std::sync::Arc<Frame> {
        std::sync::Arc::new(Frame {
            function: Some(name.into()),
            module: module.into(),
            offset: 0,
            address: 0,
            function_start: None,
            file: None,
            line: None,
            kernel,
        })
    }
}

impl Frame {
    /// The function's name; without one, `module+0xSTART` (the unnamed
    /// function's start) or, when not even that is known, `module+0xoffset`:
    /// never a guessed neighbouring symbol.
    pub fn name(&self) -> String {
        match (&self.function, self.function_start) {
            (Some(f), _) => f.clone(),
            (None, Some(start)) => format!("{}+{start:#x}", self.module),
            (None, None) => format!("{}+{:#x}", self.module, self.offset),
        }
    }
}

/// Samples that share a thread and a whole stack.
#[derive(Clone, Debug, Serialize)]
pub struct StackSample {
    /// Process id (thread-group id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The process's name (its main thread's comm when known).
    pub process: String,
    /// The sampled thread's name.
    pub thread: String,
    /// Frames from the outermost caller (root) to the sampled function (leaf):
    /// user frames first, then kernel frames.
    pub frames: Vec<Arc<Frame>>,
    /// Number of samples; in an off-CPU or wall-clock profile,
    /// microseconds.
    pub count: u64,
    /// Off-CPU and wall-clock profiles: the state the thread was in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<ThreadState>,
}

/// Samples and stacks that were lost, as the kernel program counted them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LostCounts {
    /// Samples dropped because the sample map was full.
    pub sample_map_full: u64,
    /// User stacks lost to stack-map hash collisions.
    pub user_stack_collisions: u64,
    /// User stacks lost otherwise (stack map full).
    pub user_stack_errors: u64,
    /// Kernel stacks lost to stack-map hash collisions.
    pub kernel_stack_collisions: u64,
    /// Kernel stacks lost otherwise.
    pub kernel_stack_errors: u64,
}

impl LostCounts {
    /// Both counts summed (a wall-clock profile's two collectors).
    pub fn plus(&self, other: &LostCounts) -> LostCounts {
        LostCounts {
            sample_map_full: self.sample_map_full + other.sample_map_full,
            user_stack_collisions: self.user_stack_collisions + other.user_stack_collisions,
            user_stack_errors: self.user_stack_errors + other.user_stack_errors,
            kernel_stack_collisions: self.kernel_stack_collisions + other.kernel_stack_collisions,
            kernel_stack_errors: self.kernel_stack_errors + other.kernel_stack_errors,
        }
    }

    /// True when nothing was lost.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What the off-CPU program counted, and which one ran.
#[derive(Clone, Debug, Serialize)]
pub struct OffCpuSummary {
    /// `btf` or `classic`.
    pub tracepoints: crate::collectors::tracepoints::Tracepoints,
    /// Switch-outs the filters kept and dropped, absences counted, losses.
    #[serde(flatten)]
    pub counters: crate::collectors::offcpu::OffCpuCounters,
}

/// What a profile's counts measure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileKind {
    /// CPU samples at `frequency_hz`.
    #[default]
    Cpu,
    /// Microseconds off the CPU.
    OffCpu,
    /// Microseconds of wall-clock time: on-CPU samples turned into time at
    /// the sampling period, plus off-CPU time.
    Wall,
}

impl ProfileKind {
    /// True when counts are microseconds rather than samples.
    pub fn is_time(self) -> bool {
        self != ProfileKind::Cpu
    }
}

/// A finished profile.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    /// What `count` and `total_samples` measure: samples (`cpu`) or
    /// microseconds (`off-cpu`, `wall`).
    pub kind: ProfileKind,
    /// Sampling frequency per CPU.
    pub frequency_hz: u64,
    /// How long sampling ran, in seconds.
    pub duration_secs: f64,
    /// Wall-clock start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// Number of CPUs sampled.
    pub cpus: u32,
    /// Samples counted (the sum of `stacks[].count`).
    pub total_samples: u64,
    /// What was lost.
    pub lost: LostCounts,
    /// How user stacks were walked with unwind tables, when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwind: Option<crate::unwind::UnwindSummary>,
    /// Off-CPU and wall-clock profiles: what the sched_switch program saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off_cpu: Option<OffCpuSummary>,
    /// Stacks, most samples first.
    pub stacks: Vec<StackSample>,
}

impl Profile {
    /// Sampling period in nanoseconds of CPU time.
    pub fn period_nanos(&self) -> u64 {
        1_000_000_000 / self.frequency_hz.max(1)
    }
}
