//! SIGHUP: the configuration is read and checked again, as at start-up, and
//! what changed is applied while `/metrics` keeps answering, as Prometheus
//! and Alertmanager do. Collectors whose section is unchanged stay attached
//! (same kernel programs, counters go on); changed ones are started with the
//! new settings and only then is the old instance detached; alert rules are
//! replaced. A reload is all or nothing: a file that does not parse or
//! check, or a changed collector that cannot attach, leaves the
//! configuration in force untouched.
//!
//! Settings that live in what was set up once (the listening socket, the
//! log subscriber) need a restart; a change to them is logged and ignored.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::{sync::Notify, task::JoinHandle};

use super::{
    Attached, Info,
    alerts::{AlertService, AlertsSource},
    exposition::{Family, Kind},
    scrape::{Scraper, Source, SourceError},
    start_collector,
};
use crate::config::{Config, ConfigError};

/// Reads the configuration again: the file given with `--config` (if any)
/// with the command line's flags on top, checked as at start-up.
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What a reload changes, decided from the two configurations alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Enabled before and after, same section: left attached.
    pub keep: Vec<&'static str>,
    /// Enabled before and after, section changed: started again.
    pub restart: Vec<&'static str>,
    /// Newly enabled.
    pub start: Vec<&'static str>,
    /// Newly disabled.
    pub stop: Vec<&'static str>,
    /// `[alerts]` changed: the rule engine is rebuilt.
    pub alerts: bool,
    /// `[exporter]` changed: needs a restart, ignored.
    pub exporter: bool,
    /// `[log]` changed: needs a restart, ignored.
    pub log: bool,
}

/// Compares the configuration in force with the new one.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut p = Plan::default();
    let (x, y) = (&old.collectors, &new.collectors);
    for spec in crate::registry::COLLECTORS {
        let name = spec.name;
        match (
            (spec.enabled)(x),
            (spec.enabled)(y),
            (spec.same_section)(x, y),
        ) {
            (true, true, true) => p.keep.push(name),
            (true, true, false) => p.restart.push(name),
            (false, true, _) => p.start.push(name),
            (true, false, _) => p.stop.push(name),
            (false, false, _) => {}
        }
    }
    p.alerts = old.alerts != new.alerts;
    p.exporter = old.exporter != new.exporter;
    p.log = old.log != new.log;
    p
}

/// The outcome of the last reload, exported like Prometheus's
/// `prometheus_config_last_reload_*`. Each source set carries its own copy,
/// so a scrape never shows a reload's outcome with the sources from before
/// it.
#[derive(Clone, Copy, Debug)]
pub struct ReloadStatus {
    successful: bool,
    /// Unix time of the last successful load (start-up counts).
    last_success: f64,
}

impl ReloadStatus {
    /// The configuration loaded at start-up, now.
    pub fn new() -> Self {
        Self {
            successful: true,
            last_success: unix_now(),
        }
    }

    fn record(&mut self, ok: bool) {
        self.successful = ok;
        if ok {
            self.last_success = unix_now();
        }
    }
}

impl Default for ReloadStatus {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Source for ReloadStatus {
    fn name(&self) -> &'static str {
        "config"
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        let mut ok = Family::new(
            "perf_user_config_last_reload_successful",
            Kind::Gauge,
            "1 if the last configuration reload (SIGHUP) succeeded, or none was asked for; 0 if it was refused and the previous configuration stays in force (the daemon log says why).",
        );
        ok.push(Vec::new(), f64::from(u8::from(self.successful)));
        let mut at = Family::new(
            "perf_user_config_last_reload_success_timestamp_seconds",
            Kind::Gauge,
            "Unix time at which the configuration in force was loaded (start-up or the last successful reload).",
        );
        at.push(Vec::new(), self.last_success);
        Ok(vec![ok, at])
    }
}

/// The alert engine and the task that evaluates it.
pub struct Alerts {
    /// The engine.
    pub service: Arc<AlertService>,
    /// Its evaluation loop.
    pub task: JoinHandle<()>,
}

impl Alerts {
    /// Starts evaluating `service` every interval over the scraper's sources.
    pub fn spawn(service: Arc<AlertService>, scraper: &Arc<Scraper>) -> Self {
        let reader = Arc::clone(scraper);
        let task = tokio::spawn(Arc::clone(&service).run(move || reader.read_all()));
        Self { service, task }
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Everything the daemon runs, as a reload sees it.
pub struct Running {
    /// The configuration in force.
    pub config: Config,
    /// The self-metrics source read first (kept across reloads).
    pub bpf_stats: Arc<dyn Source>,
    /// Attached collectors by name; an enabled one that failed is absent.
    pub collectors: Attached,
    /// The alert engine, if enabled.
    pub alerts: Option<Alerts>,
    /// Exported reload outcome.
    pub status: ReloadStatus,
    /// What `/metrics` and the alert engine read.
    pub scraper: Arc<Scraper>,
}

impl Running {
    /// The sources in scrape order: BPF statistics, collectors, process
    /// statistics, info, alerts, reload status.
    pub fn sources(&self) -> Vec<Arc<dyn Source>> {
        let mut out = vec![Arc::clone(&self.bpf_stats)];
        let mut up = Vec::new();
        for name in self.config.enabled_collectors() {
            let source = self.collectors.get(name);
            up.push((name, source.is_some()));
            out.extend(source.cloned());
        }
        out.push(Arc::new(super::process_stats::ProcessStats));
        out.push(Arc::new(super::http::HttpStats));
        out.push(Arc::new(Info { up }));
        if let Some(a) = &self.alerts {
            out.push(Arc::new(AlertsSource(Arc::clone(&a.service))));
        }
        out.push(Arc::new(self.status));
        out
    }

    /// Reads the configuration again and applies it, or refuses it whole.
    pub async fn reload(&mut self, load: &Loader, origin: &str) {
        tracing::info!(config = origin, "SIGHUP: reloading the configuration");
        let new = match load() {
            Ok(c) => c,
            Err(e) => return self.refuse(origin, e.to_string()),
        };
        if let Err(e) = self.apply(new).await {
            self.refuse(origin, e);
        }
    }

    fn refuse(&mut self, origin: &str, error: String) {
        self.status.record(false);
        // The same sources, with the new status.
        drop(self.scraper.replace(self.sources()));
        tracing::error!(
            config = origin,
            error = %error,
            in_force = "the previous configuration",
            "configuration reload failed"
        );
    }

    async fn apply(&mut self, mut new: Config) -> Result<(), String> {
        let plan = plan(&self.config, &new);
        if plan.exporter {
            tracing::warn!(
                listen = %self.config.exporter.listen,
                requested = %new.exporter.listen,
                "the [exporter] settings changed: they take effect only at a restart; still serving on the old address"
            );
            new.exporter = self.config.exporter.clone();
        }
        if plan.log {
            tracing::warn!(
                "the [log] settings changed: they take effect only at a restart; logging goes on as before"
            );
            new.log = self.config.log.clone();
        }
        // Everything that can fail comes first, while the old configuration
        // is still whole.
        let service = if plan.alerts && new.alerts.enabled {
            let s = AlertService::new(&new.alerts, new.exporter.listen)
                .map_err(|e| format!("the alert engine could not start: {e}"))?;
            Some(Arc::new(s))
        } else {
            None
        };
        let to_start: Vec<&'static str> = plan.restart.iter().chain(&plan.start).copied().collect();
        let started = if to_start.is_empty() {
            Attached::new()
        } else {
            let cfg = new.clone();
            // Loading programs blocks for a moment; /metrics keeps answering.
            tokio::task::spawn_blocking(move || start_all(&to_start, &cfg))
                .await
                .map_err(|e| format!("starting the collectors failed: {e}"))??
        };

        // Commit.
        let mut retired: Vec<Arc<dyn Source>> = Vec::new();
        for name in plan.stop.iter().chain(&plan.restart) {
            retired.extend(self.collectors.remove(name));
        }
        self.collectors.extend(started);
        if plan.alerts {
            if let Some(old) = self.alerts.take() {
                old.stop().await;
            }
            self.alerts = service.map(|s| Alerts::spawn(s, &self.scraper));
        }
        self.config = new;
        self.status.record(true);
        let old_set = self.scraper.replace(self.sources());
        // Detach the retired collectors now unless a scrape still reads
        // them: then the last one to finish drops them.
        drop(old_set);
        // The new configuration is in force already: a failure here is
        // logged, not a refusal.
        if let Err(e) = tokio::task::spawn_blocking(move || drop(retired)).await {
            tracing::warn!(error = %e, "detaching the old collectors failed; the kernel detaches them when the process exits");
        }
        super::release_freed_memory();
        tracing::info!(
            kept = ?plan.keep,
            restarted = ?plan.restart,
            started = ?plan.start,
            stopped = ?plan.stop,
            alert_rules_reloaded = plan.alerts,
            alert_rules = self.alerts.as_ref().map_or(0, |a| a.service.rule_count()),
            summary = %self.config.summary(),
            "configuration reloaded"
        );
        Ok(())
    }

    /// Stops the alert engine and hands back the scraper, the last holder
    /// of the collectors.
    pub async fn shutdown(mut self) -> Arc<Scraper> {
        if let Some(a) = self.alerts.take() {
            a.stop().await;
        }
        self.scraper
    }
}

/// Starts every collector in `names`, or none: on the first failure the
/// ones already started are detached again.
fn start_all(names: &[&'static str], config: &Config) -> Result<Attached, String> {
    let mut started = Attached::new();
    for &name in names {
        match start_collector(name, config) {
            Ok(s) => {
                started.insert(name, s);
            }
            Err(e) => return Err(format!("collector {name} could not start: {e}")),
        }
    }
    Ok(started)
}

/// Reloads on every SIGHUP until `stop` is notified; returns the state for
/// the shutdown. A reload under way is finished first.
pub async fn reload_loop(
    mut running: Running,
    mut hangup: Option<tokio::signal::unix::Signal>,
    load: Loader,
    origin: Option<PathBuf>,
    stop: Arc<Notify>,
) -> Running {
    let origin = origin.map_or_else(
        || "<defaults and flags>".to_string(),
        |p| p.display().to_string(),
    );
    loop {
        let hup = async {
            match hangup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.notified() => return running,
            got = hup => {
                if got.is_none() {
                    hangup = None;
                    continue;
                }
                running.reload(&load, &origin).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("t.toml")).unwrap()
    }

    #[test]
    fn same_configuration_keeps_everything() {
        let c = parse("");
        let p = plan(&c, &c.clone());
        assert_eq!(p.keep, ["cpu", "block", "tcp"]);
        assert!(p.restart.is_empty() && p.start.is_empty() && p.stop.is_empty());
        assert!(!p.alerts && !p.exporter && !p.log);
    }

    #[test]
    fn only_the_changed_section_restarts() {
        let old = parse("");
        let new = parse("[collectors.tcp]\nmax_ports = 30\n");
        let p = plan(&old, &new);
        assert_eq!(p.keep, ["cpu", "block"]);
        assert_eq!(p.restart, ["tcp"]);
        let new =
            parse("[collectors.cpu]\nwindow = \"1m\"\n[collectors.block]\ndevices = [\"vda\"]\n");
        let p = plan(&old, &new);
        assert_eq!(p.keep, ["tcp"]);
        assert_eq!(p.restart, ["cpu", "block"]);
    }

    #[test]
    fn enabling_and_disabling_start_and_stop() {
        let old = parse("");
        let new = parse(
            "[collectors.block]\nenabled = false\n\
             [collectors.leaks]\nenabled = true\nprocesses = [\"postgres\"]\n",
        );
        let p = plan(&old, &new);
        assert_eq!(p.keep, ["cpu", "tcp"]);
        assert_eq!(p.start, ["leaks"]);
        assert_eq!(p.stop, ["block"]);
        // A disabled section that changes starts nothing.
        let new = parse("[collectors.leaks]\nsample_every = 8\n");
        let p = plan(&old, &new);
        assert!(p.start.is_empty() && p.restart.is_empty());
    }

    #[test]
    fn alerts_exporter_and_log_changes_are_seen() {
        let old = parse("");
        let new = parse(
            "[alerts]\nevaluation_interval = \"30s\"\n\
             [exporter]\nlisten = \"127.0.0.1:9999\"\n[log]\nlevel = \"debug\"\n",
        );
        let p = plan(&old, &new);
        assert!(p.alerts && p.exporter && p.log);
        assert_eq!(p.keep, ["cpu", "block", "tcp"]);
    }

    #[test]
    fn status_exports_success_and_time() {
        let mut s = ReloadStatus::new();
        let text = |s: &ReloadStatus| {
            crate::daemon::exposition::to_prometheus_text(
                &crate::daemon::exposition::encode_openmetrics(&s.collect().unwrap()).unwrap(),
            )
        };
        let t = text(&s);
        assert!(
            t.contains("perf_user_config_last_reload_successful 1"),
            "{t}"
        );
        assert!(
            t.contains("perf_user_config_last_reload_success_timestamp_seconds 1"),
            "{t}"
        );
        let before = s.last_success;
        s.record(false);
        assert!(text(&s).contains("perf_user_config_last_reload_successful 0"));
        assert_eq!(s.last_success, before);
        s.record(true);
        assert!(text(&s).contains("perf_user_config_last_reload_successful 1"));
    }
}
