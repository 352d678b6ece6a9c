//! `run`: the long-running daemon. It attaches the configured collectors,
//! serves their metrics over HTTP, reading kernel maps at scrape time, and
//! detaches everything when asked to stop.
//!
//! Modules: [`exposition`] (the metrics model and its encodings),
//! [`scrape`] (reading sources at scrape time), [`http`] (the endpoint),
//! [`cpu`] (the windowed CPU profile), [`bpf_stats`] and [`process_stats`]
//! (self-metrics), [`log`] (logging set-up).

pub mod block;
pub mod bpf_stats;
pub mod cpu;
pub mod exposition;
pub mod http;
pub mod leaks;
pub mod log;
pub mod process_stats;
pub mod scrape;
pub mod tcp;

use std::{future::Future, sync::Arc, time::Duration};

use crate::config::Config;
use exposition::{Family, Kind};
use scrape::{Scraper, Source, SourceError};

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

/// Attaches the enabled collectors and returns the sources to scrape.
/// A collector that fails to attach is logged and reported as down; the
/// daemon goes on with the others, unless none started.
pub fn start_sources(config: &Config) -> Result<Vec<Box<dyn Source>>, DaemonError> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    let mut up = Vec::new();
    let mut failures = Vec::new();
    // First, so the kernel counts run time from the programs' first run.
    sources.push(Box::new(bpf_stats::BpfStats::new()));
    let cpu = &config.collectors.cpu;
    if cpu.enabled {
        match cpu::CpuSource::start(cpu) {
            Ok(source) => {
                tracing::info!(
                    collector = "cpu",
                    frequency_hz = cpu.frequency_hz,
                    window_seconds = cpu.window.as_secs_f64(),
                    top = cpu.top,
                    cpus = source.cpus(),
                    "collector attached"
                );
                sources.push(Box::new(source));
                up.push(("cpu", true));
            }
            Err(e) => {
                tracing::error!(collector = "cpu", error = %e, "collector failed to start");
                failures.push(format!("cpu: {e}"));
                up.push(("cpu", false));
            }
        }
    }
    let block = &config.collectors.block;
    if block.enabled {
        match block::BlockSource::start(block) {
            Ok(source) => {
                tracing::info!(
                    collector = "block",
                    devices = ?block.devices,
                    queue_time = block.queue_time,
                    "collector attached"
                );
                sources.push(Box::new(source));
                up.push(("block", true));
            }
            Err(e) => {
                tracing::error!(collector = "block", error = %e, "collector failed to start");
                failures.push(format!("block: {e}"));
                up.push(("block", false));
            }
        }
    }
    let tcp = &config.collectors.tcp;
    if tcp.enabled {
        match tcp::TcpSource::start(tcp) {
            Ok(source) => {
                tracing::info!(
                    collector = "tcp",
                    ports = ?tcp.ports,
                    max_ports = tcp.max_ports,
                    "collector attached"
                );
                sources.push(Box::new(source));
                up.push(("tcp", true));
            }
            Err(e) => {
                tracing::error!(collector = "tcp", error = %e, "collector failed to start");
                failures.push(format!("tcp: {e}"));
                up.push(("tcp", false));
            }
        }
    }
    let leaks = &config.collectors.leaks;
    if leaks.enabled {
        match leaks::LeaksSource::start(leaks) {
            Ok(source) => {
                tracing::info!(
                    collector = "leaks",
                    processes = ?leaks.processes,
                    sample_every = leaks.sample_every,
                    "collector started; attaching to matching processes"
                );
                sources.push(Box::new(source));
                up.push(("leaks", true));
            }
            Err(e) => {
                tracing::error!(collector = "leaks", error = %e, "collector failed to start");
                failures.push(format!("leaks: {e}"));
                up.push(("leaks", false));
            }
        }
    }
    if up.iter().all(|(_, ok)| !ok) {
        return Err(DaemonError::NoCollector(failures.join("; ")));
    }
    sources.push(Box::new(process_stats::ProcessStats));
    sources.push(Box::new(Info { up }));
    Ok(sources)
}

/// The alert engine, unless `[alerts] enabled = false`.
fn start_alerts(
    config: &Config,
) -> Result<Option<Arc<crate::alerts::service::AlertService>>, DaemonError> {
    if !config.alerts.enabled {
        return Ok(None);
    }
    let service = crate::alerts::service::AlertService::new(&config.alerts, config.exporter.listen)
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

/// Runs until `shutdown` completes; then detaches every collector.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    // Bind before loading anything, so a taken port fails at once.
    let listener = http::bind(config.exporter.listen).await?;
    crate::privileges::check().map_err(DaemonError::Privileges)?;
    if let Some(warning) = crate::ebpf::raise_memlock_limit() {
        tracing::warn!("{warning}");
    }
    // Loading the programs blocks for a moment; nothing else runs yet.
    let mut sources = start_sources(&config)?;
    let alerts = start_alerts(&config)?;
    if let Some(service) = &alerts {
        sources.push(Box::new(crate::alerts::service::AlertsSource(Arc::clone(
            service,
        ))));
    }
    let scraper = Arc::new(Scraper::new(sources));
    // Loading the programs parsed the kernel's BTF and the object files
    // (about 20 MiB of heap, freed by now).
    release_freed_memory();
    // The rule engine reads every source as a scrape does, every interval.
    let alert_task = alerts.map(|service| {
        let reader = Arc::clone(&scraper);
        tokio::spawn(service.run(move || reader.collect_all()))
    });
    let health_scraper = Arc::clone(&scraper);
    let state = http::AppState {
        scraper: Arc::clone(&scraper),
        health: Arc::new(move || health_scraper.health()),
    };
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "serving /metrics and /healthz"
    );
    let served = http::serve(listener, state, shutdown).await;
    if let Some(task) = alert_task {
        task.abort();
        let _ = task.await;
    }
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
