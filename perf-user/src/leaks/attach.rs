//! Tracing a running process's allocations: read its maps, choose the
//! allocator its code calls (or take the one given), load the tracer for
//! its PID, attach the probes. One place for `leaks --pid`, `advise --pid`
//! and the daemon's `[collectors.leaks]`.

use crate::{
    collectors::alloc::{AllocCollector, AllocError, AllocOptions},
    leaks::{
        allocator::{self, Allocator, AllocatorError},
        image::TracedProcess,
    },
};

/// A process whose allocations are traced.
pub struct Attached {
    /// Its name and maps, as read at attach.
    pub process: TracedProcess,
    /// The allocator probed.
    pub allocator: Allocator,
    /// The tracer; dropping it detaches.
    pub collector: AllocCollector,
}

/// Why a running process could not be traced.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Its maps could not be read.
    #[error(
        "cannot read /proc/{0}/maps: PID {0} exited, or belongs to another user \
         (run as root, or grant CAP_SYS_PTRACE)"
    )]
    Maps(u32),
    /// No allocator could be chosen.
    #[error(transparent)]
    Allocator(#[from] AllocatorError),
    /// The tracer did not load. The cause is part of the message, not a
    /// `source`: shown with its chain (`{:#}`) it would be said twice.
    #[error("cannot start the allocation tracer: {0}")]
    Load(Box<AllocError>),
    /// The probes did not attach (the cause in the message, as above).
    #[error("cannot trace {what}: {cause}")]
    Probe {
        /// The process, for people.
        what: String,
        /// What the kernel said.
        cause: Box<AllocError>,
    },
}

/// Traces process `opts.tgid`'s allocations through `allocator`, or the one
/// its maps show when `None`.
pub fn attach_running(
    opts: &AllocOptions,
    allocator: Option<&Allocator>,
) -> Result<Attached, AttachError> {
    let mut process = TracedProcess::new(opts.tgid);
    if !process.refresh(0) {
        return Err(AttachError::Maps(opts.tgid));
    }
    let allocator = match allocator {
        Some(a) => a.clone(),
        None => allocator::choose(&process.maps, process.exe.as_deref(), &process.describe())?,
    };
    let mut collector = AllocCollector::load(opts).map_err(|e| AttachError::Load(Box::new(e)))?;
    collector
        .attach_allocator(&allocator.path, &allocator.sites)
        .map_err(|e| AttachError::Probe {
            what: process.describe(),
            cause: Box::new(e),
        })?;
    Ok(Attached {
        process,
        allocator,
        collector,
    })
}
