//! The continuous off-CPU profile: the sched_switch program sums how long
//! threads were away from the CPU, and every window the daemon reads,
//! clears, symbolizes and ranks those times as it ranks the CPU samples
//! (daemon/cpu.rs). Scrapes export the last complete window's top waits (a
//! bounded set of series: top N plus "[other]") and the program's
//! counters, read at scrape time.
//!
//! A wait is attributed to the deepest user frame outside the C library and
//! the dynamic loader ([`wait_site`]): libc's frames say *how* a thread
//! waited (nanosleep, a futex, read), the program's frame below them says
//! *where*. Without such a frame (all of it in libc, a kernel thread, user
//! stacks off), the deepest user frame, else the kernel frame that called
//! the scheduler (`do_nanosleep`, `io_schedule`, ...).
//!
//! `/debug/pprof/offcpu` requests share the maps with the windows as CPU
//! profile requests do (daemon/profile_tap.rs): the maps are read and
//! cleared when a request starts and ends and when a window closes, and
//! each read is added to the window and to every request under way.

use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use perf_ebpf_common::offcpu::OffCpuKey;

use super::{
    exposition::{Family, Kind, lost_events},
    labels::{self, LabelCache},
    merged::Stacked,
    profile_tap::{Labelled, distinct},
    release_freed_memory,
    scrape::{Source, SourceError},
    windows::{WindowNames, WindowThread, Windows, lock, wait},
};
use crate::{
    cgroup::CgroupLabels,
    collectors::{
        Collector as _,
        offcpu::{OffCpuCollector, OffCpuCounters, OffCpuError, OffCpuOptions, OffCpuSnapshot},
        tracepoints::{Tracepoints, unexpected_fallback},
    },
    config::{OffCpuSection, StackKind},
    observe::{Reading, cpu::Window},
    processes::ProcessTable,
    profile::{StackSample, build::RunInfo, offcpu::build},
    symbolize::StackSymbolizer,
    unwind::UnwindMode,
};

/// How often the processes with time recorded are looked up, so that their
/// names and maps are read while they live.
const CAPTURE_EVERY: Duration = Duration::from_secs(1);

/// The off-CPU windows' own metrics.
const NAMES: WindowNames = WindowNames {
    what: "off-CPU",
    windows: (
        "perf_user_offcpu_windows_total",
        "Off-CPU windows completed.",
    ),
    errors: (
        "perf_user_offcpu_window_errors_total",
        "Off-CPU windows that could not be read (the daemon log says why).",
    ),
    duration: (
        "perf_user_offcpu_window_duration_seconds",
        "Length of the last complete off-CPU window.",
    ),
    processing: (
        "perf_user_offcpu_window_processing_seconds",
        "Time the daemon took to read, clear, symbolize and rank the last off-CPU window.",
    ),
    end: (
        "perf_user_offcpu_window_end_timestamp_seconds",
        "When the last complete off-CPU window ended, seconds since the Unix epoch (0 before the first).",
    ),
};

/// Off-CPU times of several reads.
#[derive(Default)]
struct Times {
    stacked: Stacked<OffCpuKey>,
    /// The last read's (cumulative) counters.
    counters: OffCpuCounters,
}

impl Times {
    fn add(&mut self, s: &OffCpuSnapshot) {
        self.stacked.add(&s.times, &s.stacks);
        self.counters = s.counters;
    }

    fn into_snapshot(self, tracepoints: Tracepoints) -> OffCpuSnapshot {
        OffCpuSnapshot {
            times: self.stacked.samples,
            stacks: self.stacked.stacks,
            counters: self.counters,
            tracepoints,
            unwind: None,
        }
    }
}

/// A request's times, and the processes they came from as captured when
/// read (the window thread forgets exited processes at each window).
#[derive(Default)]
struct TapReads {
    times: Times,
    procs: ProcessTable,
}

/// What was read since the window began, and since each request began.
#[derive(Default)]
struct Reads {
    window: Times,
    taps: HashMap<u64, TapReads>,
    next: u64,
}

struct Shared {
    collector: Mutex<OffCpuCollector>,
    reads: Mutex<Reads>,
    /// The processes with time recorded: names and maps.
    procs: Mutex<ProcessTable>,
    /// Their container labels.
    labels: Mutex<LabelCache>,
    windows: Windows,
    pruned: AtomicU64,
    tracepoints: Tracepoints,
    cfg: OffCpuSection,
}

/// The off-CPU collector with its window thread.
pub struct OffCpuSource {
    shared: Arc<Shared>,
    thread: WindowThread,
}

impl OffCpuSource {
    /// Attaches the sched_switch program and starts the window thread.
    pub fn start(cfg: &OffCpuSection) -> Result<Self, OffCpuError> {
        let collector = OffCpuCollector::attach(&OffCpuOptions {
            user_stacks: cfg.stacks != StackKind::Kernel,
            kernel_stacks: cfg.stacks != StackKind::User,
            min_ns: cfg.min_block.as_nanos().min(u128::from(u64::MAX)) as u64,
            tracepoints: cfg.tracepoints,
            // The whole host: tables would be built for every process.
            unwind: UnwindMode::Fp,
            ..OffCpuOptions::default()
        })?;
        if let Some(reason) = unexpected_fallback(collector.fallback_reason()) {
            tracing::warn!(
                collector = "offcpu",
                reason,
                "classic tracepoint, as the BTF tracepoint failed on a kernel with BTF"
            );
        }
        let shared = Arc::new(Shared {
            tracepoints: collector.tracepoints(),
            collector: Mutex::new(collector),
            reads: Mutex::new(Reads::default()),
            procs: Mutex::new(ProcessTable::default()),
            labels: Mutex::new(LabelCache::default()),
            windows: Windows::default(),
            pruned: AtomicU64::new(0),
            cfg: cfg.clone(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = WindowThread::spawn("offcpu-window", move |stopped| {
            window_loop(&thread_shared, &stopped)
        })
        .map_err(|e| {
            OffCpuError::Options(format!("cannot start the off-CPU window thread: {e}"))
        })?;
        Ok(Self { shared, thread })
    }

    /// `Btf` or `Classic`: which program is attached.
    pub fn tracepoints(&self) -> Tracepoints {
        self.shared.tracepoints
    }

    /// The last complete window (counts in microseconds).
    pub fn latest(&self) -> Arc<Window> {
        self.shared.windows.latest()
    }

    /// Starts collecting times for a profile request, from now until
    /// [`OffCpuTap::finish`]. Blocking: reads the maps.
    pub fn tap(&self) -> Result<OffCpuTap, OffCpuError> {
        // What was recorded before the request belongs to the window only.
        let id = self.shared.cut(false, |r| {
            let id = r.next;
            r.next += 1;
            r.taps.insert(id, TapReads::default());
            id
        })?;
        Ok(OffCpuTap {
            shared: Arc::clone(&self.shared),
            id,
            started: SystemTime::now(),
            began: Instant::now(),
        })
    }
}

impl Shared {
    /// Reads and clears the time map, adding what was read to the window
    /// and to every request under way; with `prune`, deletes the stacks no
    /// thread away refers to; then `then` runs on the reads, under the same
    /// locks, so that no time falls between two requests' reads.
    fn cut<T>(&self, prune: bool, then: impl FnOnce(&mut Reads) -> T) -> Result<T, OffCpuError> {
        let mut c = lock(&self.collector);
        let snap = c.read()?;
        c.reset()?;
        if prune {
            match c.prune_stacks() {
                Ok(n) => {
                    self.pruned.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(collector = "offcpu", error = %e, "cannot prune the stacks");
                }
            }
        }
        let mut reads = lock(&self.reads);
        if !reads.taps.is_empty() {
            let pids = pids(&snap);
            let mut procs = lock(&self.procs);
            procs.capture(pids.iter().copied());
            for t in reads.taps.values_mut() {
                t.times.add(&snap);
                t.procs.absorb(procs.subset(pids.iter().copied()));
            }
        }
        reads.window.add(&snap);
        Ok(then(&mut reads))
    }

    /// Reads the names, maps and labels of processes with time recorded
    /// and not seen before.
    fn capture(&self) {
        let pids = match lock(&self.collector).pids() {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(collector = "offcpu", error = %e, "cannot list the processes");
                return;
            }
        };
        lock(&self.labels).add_new(pids.iter().copied());
        let mut procs = lock(&self.procs);
        procs.capture(pids);
        procs.reread_due();
    }

    /// Symbolizes `snap` (read over `duration`, from `started`) with the
    /// names and maps of `procs`, and bounds its labels.
    fn profile(
        &self,
        snap: &OffCpuSnapshot,
        procs: &ProcessTable,
        started: SystemTime,
        duration: Duration,
    ) -> Labelled {
        let cache = {
            let mut cache = lock(&self.labels);
            // Now, not at first sight: a process may have been moved since.
            cache.refresh(pids(snap));
            cache.subset(pids(snap))
        };
        // A new symbolizer each time, dropped with it: a kept one would hold
        // the names of every address ever seen on a host whose processes
        // come and go.
        let mut sym = StackSymbolizer::names_only();
        let profile = build(
            snap,
            procs,
            &mut sym,
            &RunInfo {
                frequency_hz: 0,
                duration_secs: duration.as_secs_f64(),
                start_unix_nanos: started
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64,
                cpus: 0,
            },
        );
        let (labels, dropped) = labels::bounded(&profile, &cache, self.cfg.max_label_values);
        Labelled {
            profile,
            labels,
            dropped,
        }
    }
}

/// The distinct PIDs of `snap`'s times.
fn pids(snap: &OffCpuSnapshot) -> Vec<u32> {
    distinct(snap.times.iter().map(|(k, _)| k.pid))
}

fn window_loop(shared: &Shared, stop: &OwnedFd) {
    // Capabilities are per thread: this one only reads maps and names
    // frames, so it keeps only what that needs, whatever its parent holds.
    if let Err(e) = crate::privileges::drop_after_attach(crate::privileges::Stage::Profile) {
        tracing::warn!(error = %e, "the off-CPU window thread keeps its capabilities");
    }
    let mut window_start = Instant::now();
    loop {
        let left = shared
            .cfg
            .window
            .saturating_sub(window_start.elapsed())
            .min(CAPTURE_EVERY);
        if !wait(None, stop, left) {
            return;
        }
        shared.capture();
        if window_start.elapsed() < shared.cfg.window {
            continue;
        }
        let started = Instant::now();
        let duration = started - window_start;
        window_start = started;
        let closed = close_window(shared, duration);
        release_freed_memory();
        match closed {
            Ok(mut w) => {
                w.processing = started.elapsed();
                tracing::debug!(
                    collector = "offcpu",
                    off_cpu_seconds = w.samples as f64 / 1e6,
                    rows = w.top.len(),
                    processing_ms = w.processing.as_millis() as u64,
                    "off-CPU window closed"
                );
                shared.windows.publish(w);
            }
            Err(e) => {
                shared.windows.failed();
                tracing::warn!(collector = "offcpu", error = %e, "reading the off-CPU window failed");
            }
        }
        let mut procs = lock(&shared.procs);
        procs.refresh();
        lock(&shared.labels).retain(|pid| procs.get(pid).is_some());
    }
}

fn close_window(shared: &Shared, duration: Duration) -> Result<Window, OffCpuError> {
    // Read and clear under one lock; symbolizing happens after it is released.
    let snap = shared
        .cut(true, |r| std::mem::take(&mut r.window))?
        .into_snapshot(shared.tracepoints);
    // Copies, so that profile requests need not wait for the symbolizing.
    let procs = {
        let mut all = lock(&shared.procs);
        all.capture(pids(&snap));
        all.subset(pids(&snap))
    };
    let end = SystemTime::now();
    let Labelled {
        profile,
        labels: by_pid,
        dropped,
    } = shared.profile(&snap, &procs, end - duration, duration);
    let (top, other) = labels::rank_by(&profile, shared.cfg.top as usize, &by_pid, &wait_site);
    Ok(Window {
        end: Some(end),
        duration,
        samples: profile.total_samples,
        top,
        other_samples: other,
        processing: Duration::ZERO,
        labels_dropped: dropped,
    })
}

/// Files whose frames say how a thread waited rather than where: the C
/// library, the threads library, the dynamic loader, the vDSO.
fn is_runtime(module: &str) -> bool {
    let base = module.rsplit('/').next().unwrap_or(module);
    [
        "libc.so",
        "libc-",
        "libpthread",
        "ld-linux",
        "ld-musl",
        "libc.musl",
        "linux-vdso",
        "[vdso]",
    ]
    .iter()
    .any(|p| base.starts_with(p))
}

/// Where a stack's wait came from (function, module): the deepest user
/// frame outside the C library; else the deepest user frame; else the
/// deepest kernel frame (the scheduler's own are cut already).
pub fn wait_site(s: &StackSample) -> Option<(String, String)> {
    let user = || s.frames.iter().rev().filter(|f| !f.kernel);
    user()
        .find(|f| !is_runtime(&f.module))
        .or_else(|| user().next())
        .or_else(|| s.frames.last())
        .map(|f| (f.name(), f.module.clone()))
}

/// A request's share of the times; dropping it (the client went away)
/// stops the collecting.
pub struct OffCpuTap {
    shared: Arc<Shared>,
    id: u64,
    started: SystemTime,
    began: Instant,
}

/// Which times a request keeps: called with the PID, the thread's name,
/// its process's name (when known) and its labels.
pub type Keep<'a> = &'a dyn Fn(u32, &str, Option<&str>, &CgroupLabels) -> bool;

impl OffCpuTap {
    /// Stops collecting and symbolizes what was recorded since the tap
    /// began, keeping the times that `keep` accepts. Blocking: reads maps
    /// and files.
    pub fn finish(self, keep: Keep<'_>) -> Result<Labelled, OffCpuError> {
        let shared = &self.shared;
        let TapReads { times, procs } =
            shared.cut(false, |r| r.taps.remove(&self.id).unwrap_or_default())?;
        let mut snap = times.into_snapshot(shared.tracepoints);
        let cache = {
            let mut cache = lock(&shared.labels);
            cache.refresh(pids(&snap));
            cache.subset(pids(&snap))
        };
        snap.times.retain(|(k, _)| {
            let end = k.comm.iter().position(|&b| b == 0).unwrap_or(k.comm.len());
            let comm = String::from_utf8_lossy(&k.comm[..end]);
            let name = procs.get(k.pid).and_then(|p| p.name.as_deref());
            keep(k.pid, &comm, name, &cache.get(k.pid))
        });
        Ok(shared.profile(&snap, &procs, self.started, self.began.elapsed()))
    }
}

impl Drop for OffCpuTap {
    fn drop(&mut self) {
        lock(&self.shared.reads).taps.remove(&self.id);
    }
}

/// The families of one window plus the live counters.
pub fn window_families(w: &Window, counters: &OffCpuCounters) -> Vec<Family> {
    let mut seconds = Family::new(
        "perf_user_offcpu_seconds",
        Kind::Gauge,
        "Time threads spent off the CPU during the last off-CPU window, summed over threads, by process, the function the wait came from (the deepest frame outside the C library) and the state they left the CPU in; the top N plus function=\"[other]\" for the rest.",
    );
    for (labels, us) in labels::window_series(w, true) {
        seconds.push(labels, us as f64 / 1e6);
    }
    let c = counters;
    let lost = lost_events(
        "offcpu",
        &[
            ("time_map_full", c.time_map_full),
            ("start_map_full", c.start_map_full),
            ("user_stack_collision", c.user_stack_collisions),
            ("user_stack_error", c.user_stack_errors),
            ("kernel_stack_collision", c.kernel_stack_collisions),
            ("kernel_stack_error", c.kernel_stack_errors),
        ],
    );
    let counter = |name, help, n: u64| Family::single(name, Kind::Counter, help, n as f64);
    vec![
        seconds,
        labels::dropped_family(
            "perf_user_offcpu_label_values_dropped",
            "Values of this container label (cgroup, container_id, unit) shown as \"other\" in the last off-CPU window's series: beyond collectors.offcpu.max_label_values.",
            &w.labels_dropped,
        ),
        lost,
        counter(
            "perf_user_offcpu_switches_total",
            "Context switches (sched_switch events) the off-CPU program ran for, every CPU.",
            c.switches,
        ),
        counter(
            "perf_user_offcpu_filtered_total",
            "Switch-outs the off-CPU program left out in the kernel (the idle task's, and those the filters drop).",
            c.filtered,
        ),
        counter(
            "perf_user_offcpu_recorded_total",
            "Switch-outs whose stacks and state the off-CPU program recorded.",
            c.recorded,
        ),
        counter(
            "perf_user_offcpu_counted_total",
            "Absences from the CPU counted: at least collectors.offcpu.min_block long.",
            c.counted,
        ),
        counter(
            "perf_user_offcpu_too_short_total",
            "Absences from the CPU shorter than collectors.offcpu.min_block, not counted.",
            c.too_short,
        ),
    ]
}

impl Source for OffCpuSource {
    fn name(&self) -> &'static str {
        "offcpu"
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn health(&self) -> Result<(), String> {
        self.shared
            .windows
            .health(&self.thread, self.shared.cfg.window, &NAMES)
    }

    fn read(&self) -> Result<Option<Reading>, SourceError> {
        Ok(Some(Reading::OffCpu(self.latest())))
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        let counters = lock(&self.shared.collector).counters_now()?;
        let mut out = window_families(&self.latest(), &counters);
        out.extend(self.shared.windows.families(&NAMES));
        out.push(Family::single(
            "perf_user_offcpu_stacks_pruned_total",
            Kind::Counter,
            "Stacks deleted from the off-CPU stack map at the end of a window, no thread off the CPU referring to them (the map would fill otherwise).",
            self.shared.pruned.load(Ordering::Relaxed) as f64,
        ));
        out.push(Family::single(
            "perf_user_offcpu_min_block_seconds",
            Kind::Gauge,
            "Shortest absence from the CPU counted (collectors.offcpu.min_block).",
            self.shared.cfg.min_block.as_secs_f64(),
        ));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc as StdArc;

    use super::*;
    use crate::{
        collectors::offcpu::ThreadState,
        profile::{Frame, LostCounts, Profile, ProfileKind},
    };

    fn frame(name: &str, module: &str, kernel: bool) -> StdArc<Frame> {
        Frame::named(name, module, kernel)
    }

    fn stack(frames: Vec<StdArc<Frame>>, us: u64, state: ThreadState) -> StackSample {
        StackSample {
            pid: 1,
            tid: 1,
            process: "app".into(),
            thread: "app".into(),
            frames,
            count: us,
            state: Some(state),
        }
    }

    #[test]
    fn waits_are_attributed_to_the_program_below_libc() {
        let main = frame("main", "/usr/bin/app", false);
        let nap = frame("nap_here", "/usr/bin/app", false);
        let libc = frame(
            "__clock_nanosleep",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            false,
        );
        let kernel = frame("do_nanosleep", "[kernel]", true);
        let s = stack(
            vec![main.clone(), nap, libc.clone(), kernel.clone()],
            1,
            ThreadState::Sleeping,
        );
        assert_eq!(wait_site(&s).unwrap().0, "nap_here");
        let only_libc = stack(vec![libc, kernel.clone()], 1, ThreadState::Sleeping);
        assert_eq!(wait_site(&only_libc).unwrap().0, "__clock_nanosleep");
        let kthread = stack(vec![kernel], 1, ThreadState::Other);
        assert_eq!(wait_site(&kthread).unwrap().0, "do_nanosleep");
        assert!(wait_site(&stack(Vec::new(), 1, ThreadState::Other)).is_none());
    }

    #[test]
    fn top_rows_by_state_plus_other_in_seconds() {
        let app = |name| frame(name, "app", false);
        let stacks = vec![
            stack(vec![app("a")], 2_000_000, ThreadState::Sleeping),
            stack(vec![app("a")], 500_000, ThreadState::Disk),
            stack(vec![app("b")], 250_000, ThreadState::Sleeping),
        ];
        let profile = Profile {
            kind: ProfileKind::OffCpu,
            frequency_hz: 0,
            duration_secs: 30.0,
            start_unix_nanos: 0,
            cpus: 0,
            total_samples: 2_750_000,
            lost: LostCounts::default(),
            unwind: None,
            off_cpu: None,
            stacks,
        };
        let (top, other) = labels::rank_by(&profile, 2, &HashMap::new(), &wait_site);
        assert_eq!(other, 250_000);
        let w = Window {
            samples: profile.total_samples,
            top,
            other_samples: other,
            ..Window::default()
        };
        let fams = window_families(&w, &OffCpuCounters::default());
        let text: Vec<String> = fams[0]
            .samples
            .iter()
            .map(|s| format!("{:?} {:?}", s.labels, s.value))
            .collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].contains("(\"function\", \"a\")"), "{text:?}");
        assert!(text[0].contains("(\"state\", \"sleeping\")"), "{text:?}");
        assert!(text[0].ends_with("Number(2.0)"), "{text:?}");
        assert!(text[1].contains("(\"state\", \"disk\")"), "{text:?}");
        assert!(text[2].contains("[other]"), "{text:?}");
        assert!(text[2].ends_with("Number(0.25)"), "{text:?}");
    }
}
