//! What the windowed collectors (CPU, off-CPU) share: the thread that
//! closes their windows, the last complete window as scrapes and the alert
//! engine read it, and the metrics about the windows themselves.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc, Mutex, MutexGuard, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, UNIX_EPOCH},
};

use super::exposition::{Family, Kind};
use crate::observe::cpu::Window;

/// Locks `m`, whatever a panic elsewhere left in it: the data is still
/// valid, and the metrics must not stop.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pipe (read end, write end), close-on-exec.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened by pipe2 and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sleeps until `wake` is readable (the kernel announced a new PID),
/// `stop`'s write end is closed, or `timeout` passes. Returns false when it
/// is time to stop.
pub fn wait(wake: Option<&OwnedFd>, stop: &OwnedFd, timeout: Duration) -> bool {
    let poll_fd = |fd: &OwnedFd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = vec![poll_fd(stop)];
    fds.extend(wake.map(poll_fd));
    // Round up, so a wait never ends just before the window does.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: poll reads and writes the entries of `fds` only.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    // EINTR and timeouts alike: go round again.
    n <= 0 || fds[0].revents == 0
}

/// A window thread; dropping it stops the thread and waits for it.
pub struct WindowThread {
    /// Write end of a pipe the thread polls: closing it wakes the thread,
    /// which then exits.
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl WindowThread {
    /// Starts `body` on a thread called `name`, handing it the read end it
    /// passes to [`wait`].
    pub fn spawn(name: &str, body: impl FnOnce(OwnedFd) + Send + 'static) -> std::io::Result<Self> {
        let (stopped, stop) = pipe()?;
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(stopped))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Whether the thread has ended (it should not before it is dropped).
    pub fn stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for WindowThread {
    fn drop(&mut self) {
        // Closing the pipe's write end wakes the thread, which then exits.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The metric names and help texts of one collector's windows.
pub struct WindowNames {
    /// Which windows, in help texts and health reasons ("CPU", "off-CPU").
    pub what: &'static str,
    /// Counter of windows completed.
    pub windows: (&'static str, &'static str),
    /// Counter of windows that could not be read.
    pub errors: (&'static str, &'static str),
    /// Gauge: length of the last window.
    pub duration: (&'static str, &'static str),
    /// Gauge: time taken to read, symbolize and rank it.
    pub processing: (&'static str, &'static str),
    /// Gauge: when it ended.
    pub end: (&'static str, &'static str),
}

/// The last complete window and how many closed or failed.
#[derive(Default)]
pub struct Windows {
    latest: RwLock<Arc<Window>>,
    closed: AtomicU64,
    errors: AtomicU64,
}

impl Windows {
    /// The last complete window.
    pub fn latest(&self) -> Arc<Window> {
        Arc::clone(&self.latest.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes `w` the last complete window.
    pub fn publish(&self, w: Window) {
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(w);
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a window that could not be read.
    pub fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// `Err` when the thread has stopped, or when no window closed for
    /// much longer than `length` (the thread hangs).
    pub fn health(
        &self,
        thread: &WindowThread,
        length: Duration,
        names: &WindowNames,
    ) -> Result<(), String> {
        if thread.stopped() {
            return Err(format!("the {} window thread has stopped", names.what));
        }
        let limit = length * 3 + Duration::from_secs(30);
        if let Some(age) = self.latest().end.and_then(|end| end.elapsed().ok())
            && age > limit
        {
            return Err(format!(
                "no {} window has closed for {:.0} s",
                names.what,
                age.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// The families about the windows themselves: how many, how long,
    /// how costly, when the last ended.
    pub fn families(&self, names: &WindowNames) -> Vec<Family> {
        let w = self.latest();
        let gauge = |(name, help): (&'static str, &'static str), v: f64| {
            Family::single(name, Kind::Gauge, help, v)
        };
        let counter = |(name, help): (&'static str, &'static str), n: &AtomicU64| {
            Family::single(name, Kind::Counter, help, n.load(Ordering::Relaxed) as f64)
        };
        vec![
            counter(names.windows, &self.closed),
            counter(names.errors, &self.errors),
            gauge(names.duration, w.duration.as_secs_f64()),
            gauge(names.processing, w.processing.as_secs_f64()),
            gauge(
                names.end,
                w.end
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs_f64()),
            ),
        ]
    }
}
