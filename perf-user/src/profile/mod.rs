//! The symbolized profile (CPU, off-CPU or wall-clock) and what is computed from it.

pub mod build;
pub mod hotspots;
pub mod model;
pub mod offcpu;

pub use hotspots::{Hotspot, hotspots};
pub use model::{Frame, LostCounts, OffCpuSummary, Profile, ProfileKind, StackSample, ThreadState};
