//! The continuous CPU profile: a thread samples on, and every window reads,
//! clears, symbolizes and ranks what was sampled. Scrapes export the last
//! complete window's top functions (a bounded set of series: top N plus
//! "[other]") and the sampler's counters, read at scrape time.

use std::{
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    collectors::cpu::{CpuCollector, CpuCounters, CpuError, CpuOptions},
    config::{CpuSection, StackKind},
    observe::{Reading, cpu::Window},
    profile::build::{RunInfo, build},
    symbolize::StackSymbolizer,
};

use super::{
    dashboard::history::{FoldedWindow, History},
    exposition::{Family, Kind, lost_events},
    labels,
    profile_tap::{TapHub, pids},
    release_freed_memory,
    scrape::{Source, SourceError},
    windows::{WindowNames, WindowThread, Windows, lock, wait},
};

struct Shared {
    collector: Arc<Mutex<CpuCollector>>,
    /// The same sampler as profile requests share it.
    hub: Arc<TapHub>,
    windows: Windows,
    /// The last windows' stacks, for the dashboard.
    history: History,
    cfg: CpuSection,
    cpus: u32,
}

/// The CPU collector with its window thread.
pub struct CpuSource {
    shared: Arc<Shared>,
    thread: WindowThread,
}

/// The CPU windows' own metrics.
const NAMES: WindowNames = WindowNames {
    what: "CPU",
    windows: ("perf_user_cpu_windows_total", "CPU windows completed."),
    errors: (
        "perf_user_cpu_window_errors_total",
        "CPU windows that could not be read (the daemon log says why).",
    ),
    duration: (
        "perf_user_cpu_window_duration_seconds",
        "Length of the last complete CPU window.",
    ),
    processing: (
        "perf_user_cpu_window_processing_seconds",
        "Time the daemon took to read, clear, symbolize and rank the last CPU window.",
    ),
    end: (
        "perf_user_cpu_window_end_timestamp_seconds",
        "When the last complete CPU window ended, seconds since the Unix epoch (0 before the first).",
    ),
};

impl CpuSource {
    /// Attaches the sampler and starts the window thread.
    pub fn start(cfg: &CpuSection) -> Result<Self, CpuError> {
        let opts = CpuOptions {
            frequency_hz: cfg.frequency_hz,
            user_stacks: cfg.stacks != StackKind::Kernel,
            kernel_stacks: cfg.stacks != StackKind::User,
            include_idle: cfg.include_idle,
            unwind: cfg.unwind,
            unwind_tables_mib: cfg.unwind_tables_mib,
            ..CpuOptions::default()
        };
        let collector = CpuCollector::attach(&opts)?;
        let cpus = collector.cpus().len() as u32;
        let collector = Arc::new(Mutex::new(collector));
        let hub = TapHub::new(
            Arc::clone(&collector),
            cfg.frequency_hz,
            cpus,
            cfg.max_label_values,
        )
        .map_err(|e| {
            CpuError::Options(format!("cannot start the profile symbolizer thread: {e}"))
        })?;
        let shared = Arc::new(Shared {
            collector,
            hub: Arc::new(hub),
            windows: Windows::default(),
            history: History::default(),
            cfg: cfg.clone(),
            cpus,
        });
        let thread_err = |e: std::io::Error| {
            CpuError::Options(format!("cannot start the CPU window thread: {e}"))
        };
        let new_pids = lock(&shared.collector)
            .new_pids_fd()
            .try_clone_to_owned()
            .map_err(thread_err)?;
        let thread_shared = Arc::clone(&shared);
        let thread = WindowThread::spawn("cpu-window", move |stopped| {
            window_loop(&thread_shared, &stopped, &new_pids)
        })
        .map_err(thread_err)?;
        Ok(Self { shared, thread })
    }

    /// The last complete window.
    pub fn latest(&self) -> Arc<Window> {
        self.shared.windows.latest()
    }

    /// The last windows' stacks.
    pub fn history(&self) -> &History {
        &self.shared.history
    }

    /// Samples per second on each CPU.
    pub fn frequency_hz(&self) -> u64 {
        self.shared.cfg.frequency_hz
    }

    /// CPUs sampled.
    pub fn cpus(&self) -> u32 {
        self.shared.cpus
    }

    /// The sampler as profile requests take their samples from it.
    pub fn hub(&self) -> Arc<TapHub> {
        Arc::clone(&self.shared.hub)
    }
}

fn window_loop(shared: &Shared, stop: &OwnedFd, new_pids: &OwnedFd) {
    // Capabilities are per thread: this one only reads maps and names
    // frames, so it keeps only what that needs, whatever its parent holds.
    if let Err(e) = crate::privileges::drop_after_attach(crate::privileges::Stage::Profile) {
        tracing::warn!(error = %e, "the CPU window thread keeps its capabilities");
    }
    let mut window_start = Instant::now();
    loop {
        let mut left = shared.cfg.window.saturating_sub(window_start.elapsed());
        if let Some(at) = lock(&shared.hub.procs).next_reread() {
            left = left.min(at.saturating_duration_since(Instant::now()));
        }
        if !wait(Some(new_pids), stop, left) {
            return;
        }
        let new = {
            let mut collector = lock(&shared.collector);
            let new = collector.new_pids();
            // Before the process's next samples: until then they are walked
            // with frame pointers.
            collector.load_tables(&new);
            new
        };
        // At first sight too, for processes that exit before the window closes.
        lock(&shared.hub.labels).add_new(new.iter().copied());
        {
            let mut procs = lock(&shared.hub.procs);
            procs.capture(new);
            procs.reread_due();
        }
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
                    collector = "cpu",
                    samples = w.samples,
                    functions = w.top.len(),
                    processing_ms = w.processing.as_millis() as u64,
                    "CPU window closed"
                );
                shared.windows.publish(w);
            }
            Err(e) => {
                shared.windows.failed();
                tracing::warn!(collector = "cpu", error = %e, "reading the CPU window failed");
            }
        }
        // The kernel announces each PID once: forget the exited ones there
        // too, or its set of announced PIDs fills with every process ever
        // sampled (8,192 entries in about an hour of 10,000 short-lived
        // processes; an LRU, so bounded, but a reused PID then went
        // unannounced).
        let exited = {
            let mut procs = lock(&shared.hub.procs);
            let exited = procs.refresh();
            lock(&shared.hub.labels).retain(|pid| procs.get(pid).is_some());
            exited
        };
        if let Err(e) = lock(&shared.collector).forget_pids(&exited) {
            tracing::debug!(collector = "cpu", error = %e, "cannot forget exited PIDs");
        }
    }
}

fn close_window(shared: &Shared, duration: Duration) -> Result<Window, CpuError> {
    // Read and clear under one lock, so no scrape sees a half-cleared map;
    // symbolizing happens after the lock is released.
    let raw = shared.hub.close_window()?;
    // Copies, so that profile requests need not wait for the symbolizing.
    let procs = {
        let mut all = lock(&shared.hub.procs);
        all.capture(pids(&raw));
        all.subset(pids(&raw))
    };
    let cache = {
        let mut cache = lock(&shared.hub.labels);
        cache.refresh(pids(&raw));
        cache.subset(pids(&raw))
    };
    let end = SystemTime::now();
    // A new symbolizer each window, dropped with it: a kept one would hold
    // the names of every address ever sampled on a host whose processes
    // come and go.
    let mut sym = StackSymbolizer::names_only();
    let profile = build(
        &raw,
        &procs,
        &mut sym,
        &RunInfo {
            frequency_hz: shared.cfg.frequency_hz,
            duration_secs: duration.as_secs_f64(),
            start_unix_nanos: (end - duration)
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64,
            cpus: shared.cpus,
        },
    );
    let (by_pid, labels_dropped) = shared.hub.bounded_labels(&profile, &cache);
    let (top, other_samples) = labels::rank(&profile, shared.cfg.top as usize, &by_pid);
    shared
        .history
        .push(FoldedWindow::of(&profile, &by_pid, end, duration));
    Ok(Window {
        end: Some(end),
        duration,
        samples: profile.total_samples,
        top,
        other_samples,
        processing: Duration::ZERO,
        labels_dropped,
    })
}

/// The families of one window plus the live counters.
pub fn window_families(w: &Window, frequency_hz: u64, counters: &CpuCounters) -> Vec<Family> {
    let mut ratio = Family::new(
        "perf_user_cpu_hotspot_self_ratio",
        Kind::Gauge,
        "Share of the last CPU window's samples in which this function was running (self time); the top N functions plus function=\"[other]\" for the rest, summing to 1.",
    );
    let mut seconds = Family::new(
        "perf_user_cpu_hotspot_self_seconds",
        Kind::Gauge,
        "CPU time spent running this function (self time) during the last CPU window, estimated as samples over the sampling frequency.",
    );
    let total = w.samples.max(1) as f64;
    let per_sample = 1.0 / frequency_hz.max(1) as f64;
    for (labels, n) in labels::window_series(w, false) {
        ratio.push(labels.clone(), n as f64 / total);
        seconds.push(labels, n as f64 * per_sample);
    }
    let l = &counters.lost;
    let lost = lost_events(
        "cpu",
        &[
            ("sample_map_full", l.sample_map_full),
            ("user_stack_collision", l.user_stack_collisions),
            ("user_stack_error", l.user_stack_errors),
            ("kernel_stack_collision", l.kernel_stack_collisions),
            ("kernel_stack_error", l.kernel_stack_errors),
            ("new_process_notice_dropped", counters.new_pids_dropped),
        ],
    );
    vec![
        ratio,
        seconds,
        labels::dropped_family(
            "perf_user_cpu_label_values_dropped",
            "Values of this container label (cgroup, container_id, unit) shown as \"other\" in the last CPU window's series: beyond collectors.cpu.max_label_values.",
            &w.labels_dropped,
        ),
        lost,
        Family::single(
            "perf_user_cpu_samples_total",
            Kind::Counter,
            "CPU samples recorded since the daemon started (all processes, every CPU).",
            counters.samples_counted as f64,
        ),
        Family::single(
            "perf_user_cpu_window_samples",
            Kind::Gauge,
            "Samples in the last complete CPU window.",
            w.samples as f64,
        ),
        Family::single(
            "perf_user_cpu_sampling_frequency_hertz",
            Kind::Gauge,
            "Samples per second taken on each CPU.",
            frequency_hz as f64,
        ),
    ]
}

impl Source for CpuSource {
    fn name(&self) -> &'static str {
        "cpu"
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
        Ok(Some(Reading::Cpu(self.latest())))
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        let (counters, unwind) = {
            let collector = lock(&self.shared.collector);
            (collector.counters_now()?, collector.unwind_summary()?)
        };
        let mut out = window_families(&self.latest(), self.shared.cfg.frequency_hz, &counters);
        // Exported with frame pointers too (zero), so that dashboards and
        // alerts on them need no second form.
        out.extend(unwind_families(&unwind.unwrap_or_default()));
        out.extend(self.shared.windows.families(&NAMES));
        Ok(out)
    }
}

/// How the table walks of user stacks went (docs/metrics.md).
fn unwind_families(u: &crate::unwind::UnwindSummary) -> Vec<Family> {
    let mut ended = Family::new(
        "perf_user_unwind_walks_ended_total",
        Kind::Counter,
        "Table walks of user stacks, by how they ended: complete reached the outermost frame; the other reasons stopped early or did not start (frame pointers were walked instead).",
    );
    let complete = u.walks_ended.get("complete").copied().unwrap_or(0);
    let early = u.walks_ended.iter().filter(|(r, _)| **r != "complete");
    for (reason, n) in std::iter::once((&"complete", &complete)).chain(early) {
        ended.push(
            vec![("collector", "cpu".into()), ("reason", (*reason).into())],
            *n as f64,
        );
    }
    let t = &u.tables;
    let mut files = Family::new(
        "perf_user_unwind_table_files",
        Kind::Gauge,
        "Executable files by the state of their unwind table: loaded into the kernel, without a usable table (frame pointers for them), or left out because the rows budget was spent.",
    );
    for (state, n) in [
        ("loaded", t.files),
        ("without_table", t.files_without_table),
        ("over_budget", t.files_over_budget),
    ] {
        files.push(vec![("state", state.into())], n as f64);
    }
    vec![
        ended,
        files,
        Family::single(
            "perf_user_unwind_table_rows",
            Kind::Gauge,
            "Unwind table rows in the kernel's maps.",
            t.rows as f64,
        ),
        Family::single(
            "perf_user_unwind_table_rows_budget",
            Kind::Gauge,
            "Unwind table rows the kernel's maps hold at most.",
            t.rows_budget as f64,
        ),
        Family::single(
            "perf_user_unwind_table_evictions_total",
            Kind::Counter,
            "Times every unwind table was evicted from the kernel to make room (then rebuilt for the processes sampled after).",
            t.evictions as f64,
        ),
        Family::single(
            "perf_user_unwind_table_load_seconds_total",
            Kind::Counter,
            "Time spent building and loading unwind tables.",
            t.load_ms as f64 / 1000.0,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc as StdArc;

    use super::*;
    use crate::profile::{Frame, LostCounts, Profile, StackSample};

    fn profile(rows: &[(&str, u64)]) -> Profile {
        let stacks: Vec<StackSample> = rows
            .iter()
            .map(|(f, n)| StackSample {
                state: None,
                pid: 1,
                tid: 1,
                process: "app".into(),
                thread: "app".into(),
                frames: vec![StdArc::new(Frame {
                    function: Some((*f).into()),
                    module: "app".into(),
                    offset: 0,
                    address: 0,
                    function_start: None,
                    file: None,
                    line: None,
                    kernel: false,
                })],
                count: *n,
            })
            .collect();
        Profile {
            kind: crate::profile::ProfileKind::Cpu,
            frequency_hz: 49,
            duration_secs: 30.0,
            start_unix_nanos: 0,
            cpus: 2,
            total_samples: rows.iter().map(|r| r.1).sum(),
            lost: LostCounts::default(),
            unwind: None,
            off_cpu: None,
            stacks,
        }
    }

    #[test]
    fn top_n_plus_other_sum_to_the_total() {
        let p = profile(&[("a", 50), ("b", 30), ("c", 15), ("d", 5)]);
        let (top, other) = crate::observe::cpu::rank(&p, 2);
        assert_eq!(
            top.iter().map(|r| r.function.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(other, 20);
        let w = Window {
            samples: 100,
            top,
            other_samples: other,
            ..Window::default()
        };
        let fams = window_families(&w, 50, &CpuCounters::default());
        let ratio = &fams[0];
        assert_eq!(ratio.samples.len(), 3);
        let sum: f64 = ratio
            .samples
            .iter()
            .map(|s| match s.value {
                super::super::exposition::Value::Number(v) => v,
                _ => 0.0,
            })
            .sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        assert_eq!(ratio.samples[2].labels[1].1, crate::observe::cpu::OTHER);
        // 50 samples at 50 Hz: one CPU second.
        assert_eq!(
            fams[1].samples[0].value,
            super::super::exposition::Value::Number(1.0)
        );
    }
}
