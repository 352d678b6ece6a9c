//! Collectors: each owns its kernel programs and maps. Creating one attaches
//! it; dropping it detaches everything it attached.

pub mod alloc;
pub mod block;
pub mod cpu;
pub mod maps;
pub mod offcpu;
pub mod tcp;
pub mod tracepoints;
pub mod uprobe_multi;

/// What every collector can do once attached.
pub trait Collector {
    /// What `read` returns.
    type Snapshot;
    /// The error its operations return.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Short name, as used on the command line and in metrics.
    fn name(&self) -> &'static str;
    /// Reads everything collected so far (without clearing it).
    fn read(&mut self) -> Result<Self::Snapshot, Self::Error>;
    /// Clears what was collected, so the next `read` covers a new window.
    fn reset(&mut self) -> Result<(), Self::Error>;
}
