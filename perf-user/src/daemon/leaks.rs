//! Leak tracing of named processes: a thread attaches the allocation tracer
//! to every running process whose name is configured (and to ones started
//! later), and detaches from those that exit; scrapes read each tracer's
//! counters.
//!
//! Uprobes on malloc and free cost microseconds per call in the traced
//! process, so this collector is off unless processes are named, and the
//! number traced at once is capped (each tracer also loads its own maps).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use crate::{
    cgroup::{self, CgroupLabels},
    collectors::alloc::{AllocCollector, AllocCounters, AllocOptions},
    config::LeaksSection,
    leaks::attach::{AttachError, attach_running},
    observe::{Reading, leaks::LeakProcess},
    processes,
};

use super::{
    exposition::{Family, Kind, lost_events},
    labels::{self, Bound},
    scrape::{Source, SourceError},
};

/// How often /proc is scanned for processes to start or stop tracing.
const RESCAN: Duration = Duration::from_secs(5);

/// One traced process.
struct Traced {
    name: String,
    /// Read at each rescan: a process can be moved to another cgroup.
    labels: CgroupLabels,
    collector: AllocCollector,
}

struct Shared {
    cfg: LeaksSection,
    traced: Mutex<HashMap<u32, Traced>>,
    /// Attach attempts that failed, per process name (logged once per PID).
    failures: Mutex<BTreeMap<String, u64>>,
}

/// The leak tracer with its attach thread.
pub struct LeaksSource {
    shared: Arc<Shared>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LeaksSource {
    /// Starts the thread; the first scan runs at once.
    pub fn start(cfg: &LeaksSection) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            traced: Mutex::new(HashMap::new()),
            failures: Mutex::new(BTreeMap::new()),
        });
        let (stop, stopped) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("leaks-attach".into())
            .spawn(move || attach_loop(&thread_shared, &stopped))?;
        Ok(Self {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl LeaksSource {
    /// Calls `f` with each traced process (PID, name, tracer), holding the
    /// lock that the attach thread takes: briefly.
    pub fn for_each_traced(&self, mut f: impl FnMut(u32, &str, &mut AllocCollector)) {
        for (pid, t) in lock(&self.shared.traced).iter_mut() {
            f(*pid, &t.name, &mut t.collector);
        }
    }

    /// Each tracked allocation stands for this many.
    pub fn sample_every(&self) -> u32 {
        self.shared.cfg.sample_every
    }
}

impl Drop for LeaksSource {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The tracers detach as they drop with `shared`.
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn attach(pid: u32, cfg: &LeaksSection) -> Result<AllocCollector, AttachError> {
    let traced = attach_running(
        &AllocOptions {
            tgid: pid,
            sample_every: cfg.sample_every,
            ..AllocOptions::default()
        },
        None,
    )?;
    tracing::info!(
        collector = "leaks",
        pid,
        allocator = %traced.allocator.path.display(),
        "tracing allocations"
    );
    Ok(traced.collector)
}

fn attach_loop(shared: &Shared, stop: &mpsc::Receiver<()>) {
    let mut failed_pids: Vec<u32> = Vec::new();
    loop {
        let found = processes::find_by_name(&shared.cfg.processes);
        {
            let mut traced = lock(&shared.traced);
            // Exited, or replaced by execve(): the tracer's image is gone.
            traced.retain(|pid, t| {
                let alive = found.iter().any(|(p, _)| p == pid)
                    && t.collector.generation().is_ok_and(|g| g == 0);
                if !alive {
                    tracing::info!(collector = "leaks", pid, process = %t.name, "stopped tracing");
                }
                alive
            });
            for (pid, t) in traced.iter_mut() {
                if let Ok(l) = cgroup::read(*pid) {
                    t.labels = l;
                }
            }
            failed_pids.retain(|p| found.iter().any(|(f, _)| f == p));
            for (pid, name) in &found {
                if traced.contains_key(pid) || failed_pids.contains(pid) {
                    continue;
                }
                if traced.len() >= shared.cfg.max_processes as usize {
                    break;
                }
                match attach(*pid, &shared.cfg) {
                    Ok(collector) => {
                        traced.insert(
                            *pid,
                            Traced {
                                name: name.clone(),
                                labels: cgroup::read(*pid).unwrap_or_default(),
                                collector,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::warn!(collector = "leaks", pid, process = %name, error = %e, "cannot trace allocations");
                        failed_pids.push(*pid);
                        *lock(&shared.failures).entry(name.clone()).or_default() += 1;
                    }
                }
            }
        }
        match stop.recv_timeout(RESCAN) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Sums per process name and set of container labels.
#[derive(Default)]
struct PerName {
    processes: u64,
    counters: AllocCounters,
}

fn add(into: &mut AllocCounters, c: &AllocCounters) {
    into.allocs += c.allocs;
    into.frees += c.frees;
    into.allocs_tracked += c.allocs_tracked;
    into.frees_matched += c.frees_matched;
    into.replaced += c.replaced;
    into.outstanding_map_full += c.outstanding_map_full;
    into.stack_totals_full += c.stack_totals_full;
    into.pending_full += c.pending_full;
    into.stack_collisions += c.stack_collisions;
    into.stack_errors += c.stack_errors;
    into.read_failed += c.read_failed;
}

/// Allocations outstanding by `c`'s counts, scaled up by the sampling.
fn outstanding_of(c: &AllocCounters, sample_every: u32) -> u64 {
    let open = c
        .allocs_tracked
        .saturating_sub(c.frees_matched + c.replaced);
    open * u64::from(sample_every)
}

impl LeaksSource {
    /// Every traced process's outstanding allocations (as `read`).
    pub fn read_processes(&self) -> Option<Reading> {
        Source::read(self).ok().flatten()
    }
}

impl Source for LeaksSource {
    fn name(&self) -> &'static str {
        "leaks"
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn health(&self) -> Result<(), String> {
        match &self.thread {
            Some(t) if !t.is_finished() => Ok(()),
            _ => Err("the leak tracer's attach thread has stopped".into()),
        }
    }

    fn read(&self) -> Result<Option<Reading>, SourceError> {
        let mut out = Vec::new();
        for (pid, t) in lock(&self.shared.traced).iter() {
            let c = t.collector.counters()?;
            out.push(LeakProcess {
                pid: *pid,
                name: t.name.clone(),
                outstanding_allocations: outstanding_of(&c, self.shared.cfg.sample_every),
                stacks: Vec::new(),
            });
        }
        Ok(Some(Reading::Leaks(out)))
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        let cfg = &self.shared.cfg;
        let mut read = Vec::new();
        for t in lock(&self.shared.traced).values() {
            read.push((t.name.clone(), t.labels.clone(), t.collector.counters()?));
        }
        // The labels with the most outstanding allocations are kept.
        let bound = Bound::new(
            read.iter()
                .map(|(_, l, c)| (l, outstanding_of(c, cfg.sample_every))),
            cfg.max_label_values as usize,
        );
        let mut per_name: BTreeMap<(String, CgroupLabels), PerName> = BTreeMap::new();
        for (name, l, c) in &read {
            let e = per_name.entry((name.clone(), bound.apply(l))).or_default();
            e.processes += 1;
            add(&mut e.counters, c);
        }
        // A configured name with nothing traced still has its (zero) series.
        for name in &cfg.processes {
            if !per_name.keys().any(|(n, _)| n == name) {
                per_name.insert((name.clone(), CgroupLabels::default()), PerName::default());
            }
        }
        let mut traced = Family::new(
            "perf_user_leak_traced_processes",
            Kind::Gauge,
            "Running processes of this name whose allocations are traced now.",
        );
        let mut outstanding = Family::new(
            "perf_user_leak_outstanding_allocations",
            Kind::Gauge,
            "Allocations made since tracing started and not freed yet (sampled ones times collectors.leaks.sample_every), summed over the processes of this name.",
        );
        let mut allocs = Family::new(
            "perf_user_leak_allocations_total",
            Kind::Counter,
            "Allocation calls (malloc, calloc, realloc, ...) seen in the traced processes of this name.",
        );
        let mut frees = Family::new(
            "perf_user_leak_frees_total",
            Kind::Counter,
            "free() calls of a non-null pointer seen in the traced processes of this name.",
        );
        let failures = lock(&self.shared.failures).clone();
        let mut lost_sum = AllocCounters::default();
        for ((name, l), p) in &per_name {
            let mut labels = vec![("process", name.clone())];
            labels.extend(labels::pairs(l.clone()));
            let c = &p.counters;
            traced.push(labels.clone(), p.processes as f64);
            outstanding.push(
                labels.clone(),
                outstanding_of(c, self.shared.cfg.sample_every) as f64,
            );
            allocs.push(labels.clone(), c.allocs as f64);
            frees.push(labels, c.frees as f64);
            add(&mut lost_sum, c);
        }
        let lost = lost_events(
            "leaks",
            &[
                ("outstanding_map_full", lost_sum.outstanding_map_full),
                ("stack_totals_full", lost_sum.stack_totals_full),
                ("pending_full", lost_sum.pending_full),
                ("stack_collision", lost_sum.stack_collisions),
                ("stack_error", lost_sum.stack_errors),
                ("read_failed", lost_sum.read_failed),
                ("attach_failed", failures.values().sum()),
            ],
        );
        let dropped = labels::dropped_family(
            "perf_user_leak_label_values_dropped",
            "Values of this container label (cgroup, container_id, unit) shown as \"other\" in the leak series: beyond collectors.leaks.max_label_values.",
            &bound.dropped,
        );
        Ok(vec![traced, outstanding, allocs, frees, lost, dropped])
    }
}
