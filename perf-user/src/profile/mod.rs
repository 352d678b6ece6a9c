//! The symbolized CPU profile and what is computed from it.

pub mod build;
pub mod hotspots;
pub mod model;

pub use hotspots::{Hotspot, hotspots};
pub use model::{Frame, LostCounts, Profile, StackSample};
