//! `run`: the long-running daemon. It attaches the configured collectors,
//! serves their metrics over HTTP, reading kernel maps at scrape time, and
//! detaches everything when asked to stop.
//!
//! Modules: [`exposition`] (the metrics model and its encodings),
//! [`scrape`] (reading sources at scrape time), [`http`] (the endpoint),
//! [`cpu`] and [`offcpu`] (the windowed CPU and off-CPU profiles, on
//! [`windows`]), [`bpf_stats`] and [`process_stats`]
//! (self-metrics), [`log`] (logging set-up).

pub mod alert_metrics;
pub mod alerts;
pub mod block;
pub mod bpf_stats;
pub mod cpu;
pub mod dashboard;
pub mod exposition;
pub mod heap_profile;
pub mod http;
pub mod labels;
pub mod leaks;
pub mod log;
pub mod merged;
pub mod offcpu;
pub mod pprof_endpoint;
pub mod process_stats;
pub mod profile_tap;
pub mod reload;
pub mod scrape;
pub mod tcp;
pub mod web;
pub mod windows;

use std::{collections::BTreeMap, future::Future, path::PathBuf, sync::Arc, time::Duration};

use crate::config::Config;
use exposition::{Family, Kind};
use scrape::{Scraper, Source, SourceError};
use tokio::sync::Notify;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The HTTP endpoint failed.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// Not enough privileges to load BPF programs.
    #[error("{0}")]
    Privileges(String),
    /// No collector could be attached.
    #[error("no collector could start: {0}")]
    NoCollector(String),
    /// The alert engine could not start.
    #[error("the alert engine could not start: {0}")]
    Alerts(String),
}

/// Build information and which collectors are attached.
struct Info {
    up: Vec<(&'static str, bool)>,
}

impl Source for Info {
    fn name(&self) -> &'static str {
        "info"
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        let mut build = Family::new(
            "perf_user_build_info",
            Kind::Gauge,
            "Always 1; the labels say which perf-user version runs.",
        );
        build.push(
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            1.0,
        );
        let mut up = Family::new(
            "perf_user_collector_up",
            Kind::Gauge,
            "1 when the collector is attached, 0 when it is enabled but failed to start (the daemon log says why).",
        );
        for (name, ok) in &self.up {
            up.push(
                vec![("collector", (*name).to_string())],
                f64::from(u8::from(*ok)),
            );
        }
        Ok(vec![build, up])
    }
}

/// Attached collectors by name.
pub type Attached = BTreeMap<&'static str, Arc<dyn Source>>;

/// Attaches collector `name` with its section of `config` (see
/// [`crate::registry`]), and logs the outcome.
pub fn start_collector(name: &'static str, config: &Config) -> Result<Arc<dyn Source>, String> {
    let started = match crate::registry::get(name) {
        Some(spec) => (spec.start)(&config.collectors),
        None => Err(format!("unknown collector {name:?}")),
    };
    if let Err(e) = &started {
        tracing::error!(collector = name, error = %e, "collector failed to start");
    }
    started
}

/// Attaches the enabled collectors. A collector that fails to attach is
/// logged and reported as down (absent from the map); the daemon goes on
/// with the others, unless none started.
pub fn start_collectors(config: &Config) -> Result<Attached, DaemonError> {
    let mut attached = Attached::new();
    let mut failures = Vec::new();
    for name in config.enabled_collectors() {
        match start_collector(name, config) {
            Ok(source) => {
                attached.insert(name, source);
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    if attached.is_empty() {
        return Err(DaemonError::NoCollector(failures.join("; ")));
    }
    Ok(attached)
}

/// The alert engine, unless `[alerts] enabled = false`.
fn start_alerts(config: &Config) -> Result<Option<Arc<alerts::AlertService>>, DaemonError> {
    if !config.alerts.enabled {
        return Ok(None);
    }
    let service = alerts::AlertService::new(&config.alerts, config.exporter.listen)
        .map_err(|e| DaemonError::Alerts(e.to_string()))?;
    tracing::info!(
        rules = service.rule_count(),
        evaluation_interval_seconds = config.alerts.evaluation_interval.as_secs_f64(),
        alertmanager = ?service.endpoints(),
        "alert rules loaded"
    );
    Ok(Some(Arc::new(service)))
}

/// Hands heap that was freed back to the kernel: glibc keeps freed memory in
/// its arenas otherwise, and the daemon's resident size would stay at its
/// largest moment's (loading the programs, a CPU window).
pub(crate) fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages of the allocator's own
    // arenas to the kernel; it takes the arenas' locks and touches no memory
    // in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Largest free block glibc keeps at the end of a heap, and smallest block
/// it maps on its own (both its defaults' starting value).
#[cfg(target_env = "gnu")]
const MALLOC_THRESHOLD: libc::c_int = 128 * 1024;

/// Fixes glibc's trim and mmap thresholds for a process that runs for days.
///
/// By default glibc raises both each time a large mapped block is freed (up
/// to 32 MiB for trimming): loading the programs frees blocks of several
/// MiB, after which the free memory at the end of each thread's heap
/// (scrapes run on several threads) was never given back, and
/// `malloc_trim` does not shrink those heaps' ends either. The daemon's RSS
/// then followed the largest burst of scrapes so far and rose for as long
/// as bursts grew: in a 5-minute run with 50 scrapers and 17 new processes
/// a second, anonymous memory went 6 → 12.8 MiB in a sawtooth, against 5.4
/// → 5.7 MiB with fixed thresholds (1.6 MiB of it in use). Fixed values
/// turn the adjustment off.
///
/// It also caps glibc's arenas at [`MALLOC_ARENAS`]: by default a thread
/// that finds every arena busy gets a new one, up to 8 per CPU, and each
/// keeps its working set resident for good. Scrapes and alert evaluations
/// run on tokio's blocking threads, whose number follows the peak of
/// concurrent work, so on a loaded host the RSS rose in steps of about
/// 0.5 MiB, each a new thread's new arena, at any time: in the hour soak
/// (load average 5 to 13 on 2 CPUs), flat for 30 minutes, then a seventh
/// thread and a sixth arena at 56 minutes, +0.55 MiB.
pub(crate) fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's parameters; it takes the
    // main arena's lock and touches no memory in use.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// The main arena and one for every other thread to share: the daemon's
/// threads allocate little (a scrape renders about 160 KiB), so contention
/// costs less than an arena's resident pages per thread.
#[cfg(target_env = "gnu")]
const MALLOC_ARENAS: libc::c_int = 2;

/// Where SIGHUP reads the configuration again.
pub struct ReloadFrom {
    /// The `--config` file, to name it in the log.
    pub path: Option<PathBuf>,
    /// Reads and checks it, with the command line's flags applied.
    pub load: reload::Loader,
}

/// Gives up the capabilities that attaching (now and on reloads) does not
/// need, and logs the effective set, with a warning when another thread,
/// started earlier, still holds more (capabilities are per thread).
fn log_capabilities() {
    match crate::privileges::drop_after_attach(crate::privileges::Stage::Attaching) {
        Ok(d) => tracing::info!(
            effective = %d.kept.join(","),
            dropped = %d.dropped.join(","),
            "capabilities after attaching"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            effective = %crate::privileges::effective_names().join(","),
            "could not drop capabilities"
        ),
    }
    if let Some(extra) = crate::privileges::threads_with_more() {
        tracing::warn!(threads = %extra, "threads started before the drop keep their capabilities");
    }
}

/// Runs until `shutdown` completes, reloading the configuration on SIGHUP;
/// then detaches every collector.
pub async fn run(
    config: Config,
    reload_from: ReloadFrom,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    // Before the programs are loaded, whose large blocks would raise the
    // thresholds.
    tune_allocator();
    // Before anything slow: SIGHUP's default action would end the process.
    let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; configuration reloads need a restart");
            None
        }
    };
    // Bind before loading anything, so a taken port fails at once.
    let listener = http::bind(config.exporter.listen).await?;
    let web = http::web_config(config.exporter.web_config_file.as_deref())?;
    crate::privileges::check().map_err(DaemonError::Privileges)?;
    if let Some(warning) = crate::ebpf::raise_memlock_limit() {
        tracing::warn!("{warning}");
    }
    // First, so the kernel counts run time from the programs' first run.
    let bpf_stats: Arc<dyn Source> = Arc::new(bpf_stats::BpfStats::new());
    // Loading the programs blocks for a moment; nothing else runs yet.
    let collectors = start_collectors(&config)?;
    let alerts = start_alerts(&config)?;
    // The set is filled in below, once the alert task can read it.
    let scraper = Arc::new(Scraper::new(Vec::new()));
    // Loading the programs parsed the kernel's BTF and the object files
    // (about 20 MiB of heap, freed by now).
    release_freed_memory();
    // The rule engine reads every source as a scrape does, every interval.
    let alerts = alerts.map(|service| reload::Alerts::spawn(service, &scraper));
    let running = reload::Running {
        config,
        bpf_stats,
        collectors,
        alerts,
        status: reload::ReloadStatus::new(),
        scraper: Arc::clone(&scraper),
    };
    scraper.replace(running.sources());
    dashboard::latency::spawn_sampler(Arc::downgrade(&scraper));
    let health_scraper = Arc::clone(&scraper);
    let state = http::AppState {
        scraper: Arc::clone(&scraper),
        health: Arc::new(move || health_scraper.health()),
        web,
    };
    drop(scraper);
    log_capabilities();
    let listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        listen = %listen,
        dashboard = "/ (docs/dashboard.md), JSON API under /api/v1/",
        "serving /metrics and /healthz"
    );
    let stop = Arc::new(Notify::new());
    let reloads = tokio::spawn(reload::reload_loop(
        running,
        hangup,
        reload_from.load,
        reload_from.path,
        Arc::clone(&stop),
    ));
    let stop_reloads = Arc::clone(&stop);
    let shutdown = async move {
        shutdown.await;
        stop_reloads.notify_one();
    };
    let served = http::serve(listener, state, shutdown).await;
    // Also when the server failed; a reload under way finishes first.
    stop.notify_one();
    let scraper = match reloads.await {
        Ok(running) => running.shutdown().await,
        Err(e) => {
            tracing::error!(error = %e, "the reload task failed; the kernel detaches the programs when the process exits");
            return served.map_err(Into::into);
        }
    };
    // Detach: the collectors are dropped with the last reference to the
    // scraper. In-flight scrapes hold one briefly; wait for them.
    let mut scraper = scraper;
    for _ in 0..100 {
        match Arc::try_unwrap(scraper) {
            Ok(s) => {
                drop(s);
                tracing::info!("collectors detached; nothing is left in the kernel");
                return served.map_err(Into::into);
            }
            Err(still_shared) => {
                scraper = still_shared;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::warn!(
        "a scrape was still running at exit; the kernel detaches its programs when the process exits"
    );
    served.map_err(Into::into)
}
