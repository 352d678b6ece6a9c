//! The CPU samples of a profile request (`/debug/pprof/profile`), taken
//! from the daemon's one continuous sampler: the maps are read (and
//! cleared) when a request starts and when it ends, as well as when a CPU
//! window closes, and each read is added to the window and to every request
//! under way. Requests that overlap share those reads; none starts a
//! sampler of its own or disturbs the windows.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, mpsc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use perf_ebpf_common::SampleKey;

use super::{
    labels::{Dropped, LabelCache},
    merged::Merged,
};
use crate::{
    cgroup::CgroupLabels,
    collectors::{
        Collector as _,
        cpu::{CpuCollector, CpuError, RawProfile},
    },
    processes::ProcessTable,
    profile::{
        Profile,
        build::{RunInfo, build},
    },
    symbolize::StackSymbolizer,
};

/// What was read since the window began, and since each request began.
#[derive(Default)]
struct Reads {
    window: Merged,
    taps: HashMap<u64, TapReads>,
    next: u64,
}

/// A request's samples, and the processes they came from as captured when
/// read: the window thread forgets exited processes at each window, which
/// a request that spans one still has to name.
#[derive(Default)]
struct TapReads {
    samples: Merged,
    procs: ProcessTable,
}

/// The sampler as profile requests and the window thread share it.
pub struct TapHub {
    collector: Arc<Mutex<CpuCollector>>,
    reads: Mutex<Reads>,
    /// The sampled processes' names and maps: captured by the window
    /// thread, read by requests too.
    pub procs: Mutex<ProcessTable>,
    /// Their container labels.
    pub labels: Mutex<LabelCache>,
    /// The symbolizer thread's queue.
    jobs: Mutex<mpsc::Sender<Job>>,
    frequency_hz: u64,
    cpus: u32,
    max_label_values: u32,
}

/// How long profile requests share one symbolizer, at most.
const SYMBOLIZER_LIFE: Duration = Duration::from_secs(300);
/// A symbolizer unused for this long is dropped.
const SYMBOLIZER_IDLE: Duration = Duration::from_secs(60);

/// A profile to symbolize.
struct Job {
    raw: RawProfile,
    procs: ProcessTable,
    run: RunInfo,
    reply: mpsc::Sender<Profile>,
}

/// Symbolizes the requests' profiles with one symbolizer kept from one
/// request to the next, so that a scraper asking every few seconds does
/// not read every sampled file's symbols each time (seconds for a large
/// library). A new one replaces it after [`SYMBOLIZER_LIFE`] and none is
/// kept when idle, so that what it holds stays bounded on a host whose
/// processes come and go. A thread of its own: the symbolizer cannot move
/// between threads.
fn symbolize_loop(jobs: &mpsc::Receiver<Job>) {
    // Capabilities are per thread: this one only names frames.
    if let Err(e) = crate::privileges::drop_after_attach(crate::privileges::Stage::Profile) {
        tracing::warn!(error = %e, "the profile symbolizer thread keeps its capabilities");
    }
    let mut kept: Option<(StackSymbolizer, Instant)> = None;
    loop {
        let job = match jobs.recv_timeout(SYMBOLIZER_IDLE) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kept = None;
                super::release_freed_memory();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if kept
            .as_ref()
            .is_none_or(|(_, born)| born.elapsed() > SYMBOLIZER_LIFE)
        {
            kept = Some((StackSymbolizer::names_only_kept(), Instant::now()));
        }
        if let Some((sym, _)) = kept.as_mut() {
            // The request may have gone meanwhile.
            let _ = job.reply.send(build(&job.raw, &job.procs, sym, &job.run));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the profiles: the data is still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TapHub {
    /// A hub over `collector` (shared with the window thread).
    pub fn new(
        collector: Arc<Mutex<CpuCollector>>,
        frequency_hz: u64,
        cpus: u32,
        max_label_values: u32,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("cpu-profiles".into())
            .spawn(move || symbolize_loop(&queue))?;
        Ok(Self {
            jobs: Mutex::new(jobs),
            collector,
            reads: Mutex::new(Reads::default()),
            procs: Mutex::new(ProcessTable::default()),
            labels: Mutex::new(LabelCache::default()),
            frequency_hz,
            cpus,
            max_label_values,
        })
    }

    /// Reads and clears the maps, adding what was read to the window and
    /// to every request under way; then `then` runs on the reads, under the
    /// same locks, so that no sample falls between two requests' reads.
    fn cut<T>(&self, then: impl FnOnce(&mut Reads, &RawProfile) -> T) -> Result<T, CpuError> {
        let t = Instant::now();
        let mut c = lock(&self.collector);
        let locked = t.elapsed();
        let raw = c.read()?;
        let read = t.elapsed();
        c.reset()?;
        tracing::trace!(
            locked_us = locked.as_micros() as u64,
            read_us = read.as_micros() as u64,
            reset_us = t.elapsed().as_micros() as u64,
            samples = raw.samples.len(),
            "CPU maps read and cleared"
        );
        let mut reads = lock(&self.reads);
        if !reads.taps.is_empty() {
            let pids = pids(&raw);
            let mut procs = lock(&self.procs);
            procs.capture(pids.iter().copied());
            for t in reads.taps.values_mut() {
                t.samples.add(&raw);
                t.procs.absorb(procs.subset(pids.iter().copied()));
            }
        }
        reads.window.add(&raw);
        Ok(then(&mut reads, &raw))
    }

    /// Reads the maps now, while requests are under way, and has what was
    /// read named in the background, so that each request's end finds most
    /// names known: on a host that starts programs all the time every
    /// request brings new files to read, seconds of work for a large one.
    pub fn warm(&self) -> Result<(), CpuError> {
        let (raw, procs) = self.cut(|r, raw| {
            let procs = r.taps.values().next().map(|t| t.procs.subset(pids(raw)));
            (raw.clone(), procs.unwrap_or_default())
        })?;
        // Nobody waits for the names: the symbolizer keeps them.
        let (reply, _) = mpsc::channel();
        let run = RunInfo {
            frequency_hz: self.frequency_hz,
            duration_secs: 0.0,
            start_unix_nanos: 0,
            cpus: self.cpus,
        };
        let _ = lock(&self.jobs).send(Job {
            raw,
            procs,
            run,
            reply,
        });
        Ok(())
    }

    /// Everything sampled since the last call: the window that closes.
    pub fn close_window(&self) -> Result<RawProfile, CpuError> {
        self.cut(|r, _| std::mem::take(&mut r.window).into_raw())
    }

    /// Starts collecting samples for a request, from now until [`Tap::finish`].
    pub fn tap(self: &Arc<Self>) -> Result<Tap, CpuError> {
        // What was sampled before the request belongs to the window only.
        let id = self.cut(|r, _| {
            let id = r.next;
            r.next += 1;
            r.taps.insert(id, TapReads::default());
            id
        })?;
        Ok(Tap {
            hub: Arc::clone(self),
            id,
            started: SystemTime::now(),
            began: Instant::now(),
        })
    }

    /// Each PID's labels in `profile`, bounded by `max_label_values`
    /// (see [`super::labels::bounded`]).
    pub fn bounded_labels(
        &self,
        profile: &Profile,
        cache: &LabelCache,
    ) -> (HashMap<u32, CgroupLabels>, Dropped) {
        super::labels::bounded(profile, cache, self.max_label_values)
    }
}

/// The distinct PIDs of `raw`'s samples.
pub fn pids(raw: &RawProfile) -> Vec<u32> {
    distinct(raw.samples.iter().map(|(k, _)| k.pid))
}

/// `pids` sorted, each once.
pub fn distinct(pids: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut p: Vec<u32> = pids.into_iter().collect();
    p.sort_unstable();
    p.dedup();
    p
}

/// A request's share of the samples; dropping it (the client went away)
/// stops the collecting.
pub struct Tap {
    hub: Arc<TapHub>,
    id: u64,
    started: SystemTime,
    began: Instant,
}

/// A request's profile, symbolized, with each PID's bounded labels.
pub struct Labelled {
    /// The profile.
    pub profile: Profile,
    /// Container labels by PID, bounded as the metrics' are.
    pub labels: HashMap<u32, CgroupLabels>,
    /// Values of each label folded into "other".
    pub dropped: Dropped,
}

/// Which samples a request keeps: called with a sample's key, its
/// process's name (when known) and its labels.
pub type Keep<'a> = &'a dyn Fn(&SampleKey, Option<&str>, &CgroupLabels) -> bool;

impl Tap {
    /// Stops collecting and symbolizes what was sampled since the tap
    /// began, keeping the samples that `keep` accepts. Blocking: reads maps
    /// and files.
    pub fn finish(self, keep: Keep<'_>) -> Result<Labelled, CpuError> {
        let hub = &self.hub;
        let t = Instant::now();
        let TapReads { samples, procs } =
            hub.cut(|r, _| r.taps.remove(&self.id).unwrap_or_default())?;
        let mut raw = samples.into_raw();
        let duration = self.began.elapsed();
        let cache = {
            let mut cache = lock(&hub.labels);
            // Now, not at first sight: a process may have been moved since.
            cache.refresh(pids(&raw));
            cache.subset(pids(&raw))
        };
        raw.samples.retain(|(k, _)| {
            let name = procs.get(k.pid).and_then(|p| p.name.as_deref());
            keep(k, name, &cache.get(k.pid))
        });
        let (reply, answer) = mpsc::channel();
        let job = Job {
            raw,
            procs,
            reply,
            run: RunInfo {
                frequency_hz: hub.frequency_hz,
                duration_secs: duration.as_secs_f64(),
                start_unix_nanos: self
                    .started
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64,
                cpus: hub.cpus,
            },
        };
        let gone = || CpuError::Options("the profile symbolizer thread has stopped".into());
        lock(&hub.jobs).send(job).map_err(|_| gone())?;
        let profile = answer.recv().map_err(|_| gone())?;
        let (labels, dropped) = hub.bounded_labels(&profile, &cache);
        tracing::debug!(
            samples = profile.total_samples,
            stacks = profile.stacks.len(),
            took_ms = t.elapsed().as_millis() as u64,
            "profile request: samples read and symbolized"
        );
        Ok(Labelled {
            profile,
            labels,
            dropped,
        })
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        lock(&self.hub.reads).taps.remove(&self.id);
    }
}
