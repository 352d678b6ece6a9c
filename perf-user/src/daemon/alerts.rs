//! The rule engine inside `perf-user run`: every `evaluation_interval` it
//! reads the sources' typed snapshots, judges the rules, attaches
//! advice to alerts that start firing, logs every state change, posts due
//! alerts to Alertmanager, and exports the alert metrics through
//! [`AlertsSource`]. The daemon only advises: actions are applied by a
//! person, with `perf-user advise --apply`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use super::{
    alert_metrics::{self as metrics, Stats},
    exposition::Family,
    scrape::{Source, SourceError},
};
use crate::{
    alerts::{
        advice::{self, Advice},
        config::AlertsConfig,
        engine::{Engine, EngineOptions, Event, State},
        report,
        webhook::{self, Identity, PostableAlert, Sender, WebhookError},
    },
    observe::{Reading, batch::Batches},
};

struct Inner {
    engine: Engine,
    /// Advice of the alerts that fired, by fingerprint, while the engine
    /// keeps them (resolved ones are still sent with it).
    advice: HashMap<String, Advice>,
    from: Batches,
    stats: Stats,
}

/// The engine, its input converter, and its sinks.
pub struct AlertService {
    inner: Mutex<Inner>,
    sender: Option<Sender>,
    identity: Identity,
    interval: Duration,
    resend: Duration,
    root: PathBuf,
}

impl AlertService {
    /// The service for `cfg`; `listen` is the daemon's address, the default
    /// `generatorURL`.
    pub fn new(cfg: &AlertsConfig, listen: SocketAddr) -> Result<Self, WebhookError> {
        let sender = if cfg.webhook.urls.is_empty() {
            None
        } else {
            Some(Sender::new(&cfg.webhook.urls, cfg.webhook.timeout)?)
        };
        let instance = cfg.webhook.instance.clone().unwrap_or_else(hostname);
        let identity = Identity {
            generator_url: cfg
                .webhook
                .generator_url
                .clone()
                .unwrap_or_else(|| format!("http://{}/", generator_host(listen, &instance))),
            instance,
            extra_labels: cfg.webhook.labels.clone(),
        };
        Ok(Self {
            inner: Mutex::new(Inner {
                engine: Engine::new(cfg.rules(), EngineOptions::default()),
                advice: HashMap::new(),
                from: Batches::new(),
                stats: Stats::default(),
            }),
            sender,
            identity,
            interval: cfg.evaluation_interval,
            resend: cfg.webhook.resend_interval,
            root: PathBuf::from("/"),
        })
    }

    /// The Alertmanager endpoints posted to.
    pub fn endpoints(&self) -> Vec<String> {
        self.sender
            .as_ref()
            .map(|s| s.endpoints().to_vec())
            .unwrap_or_default()
    }

    /// Rules in force.
    pub fn rule_count(&self) -> usize {
        self.lock().engine.rules().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic mid-evaluation leaves a usable engine: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One evaluation of `readings` read at `at`: judges, advises, logs.
    /// Returns the alerts due to Alertmanager and their fingerprints.
    pub fn evaluate(
        &self,
        readings: Vec<Reading>,
        at: SystemTime,
    ) -> (Vec<PostableAlert>, Vec<String>) {
        let mut inner = self.lock();
        let batch = inner.from.batch(readings, at);
        let events = inner.engine.evaluate(&batch);
        for e in &events {
            let advice = (e.state == State::Firing).then(|| advice::advise(&e.alert, &self.root));
            if let Some(a) = &advice {
                inner.advice.insert(e.alert.fingerprint.clone(), a.clone());
            }
            match e.state {
                State::Pending => inner.stats.pending += 1,
                State::Firing => inner.stats.firing += 1,
                State::Resolved => inner.stats.resolved += 1,
            }
            log(e, advice.as_ref());
        }
        let Inner { engine, advice, .. } = &mut *inner;
        advice.retain(|fp, _| engine.alert(fp).is_some());
        if self.sender.is_none() {
            return (Vec::new(), Vec::new());
        }
        let valid_for = 4 * self.resend.max(self.interval);
        let due = inner.engine.due(at, self.resend);
        let fps = due.iter().map(|a| a.fingerprint.clone()).collect();
        let alerts = due
            .into_iter()
            .map(|a| {
                let advice = inner.advice.get(&a.fingerprint);
                webhook::postable(a, advice, &self.identity, at, valid_for)
            })
            .collect();
        (alerts, fps)
    }

    /// Posts `alerts`; marks them sent when at least one Alertmanager took them.
    async fn notify(&self, alerts: Vec<PostableAlert>, fps: Vec<String>, at: SystemTime) {
        let Some(sender) = &self.sender else { return };
        if alerts.is_empty() {
            return;
        }
        let results = sender.send(&alerts).await;
        let mut ok = false;
        let mut inner = self.lock();
        for (url, r) in results {
            match r {
                Ok(()) => {
                    ok = true;
                    inner.stats.sent_ok += 1;
                    tracing::debug!(url = %url, alerts = alerts.len(), "alerts posted to Alertmanager");
                }
                Err(e) => {
                    inner.stats.sent_error += 1;
                    tracing::warn!(url = %url, error = %e, "posting alerts to Alertmanager failed; they are sent again at the next evaluation");
                }
            }
        }
        if ok {
            inner.engine.mark_sent(&fps, at);
        }
    }

    /// Evaluates every `evaluation_interval` until the task is dropped;
    /// `read` reads every source's typed snapshot (blocking).
    pub async fn run(self: Arc<Self>, read: impl Fn() -> Vec<Reading> + Send + Sync + 'static) {
        let read = Arc::new(read);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = Instant::now();
            let r = Arc::clone(&read);
            let readings = match tokio::task::spawn_blocking(move || r()).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "reading the sources for the alert rules failed");
                    continue;
                }
            };
            let at = SystemTime::now();
            let this = Arc::clone(&self);
            // Advice reads /sys and /proc: off the async workers too.
            let judged = tokio::task::spawn_blocking(move || this.evaluate(readings, at)).await;
            match judged {
                Ok((alerts, fps)) => self.notify(alerts, fps, at).await,
                Err(e) => tracing::error!(error = %e, "evaluating the alert rules failed"),
            }
            self.lock().stats.last_duration = started.elapsed();
        }
    }

    /// The pending and firing alerts, each with its advice once it fired.
    pub fn active(&self) -> Vec<(crate::alerts::engine::Alert, Option<Advice>)> {
        let inner = self.lock();
        inner
            .engine
            .alerts()
            .filter(|a| a.state.is_active())
            .map(|a| (a.clone(), inner.advice.get(&a.fingerprint).cloned()))
            .collect()
    }

    /// The alert metrics.
    pub fn families(&self) -> Vec<Family> {
        let inner = self.lock();
        metrics::families(&inner.engine, &inner.stats)
    }
}

/// One log event per state change: info for pending and resolved, warn for
/// firing, with the advice's diagnosis and suggestions.
fn log(e: &Event, advice: Option<&Advice>) {
    let a = &e.alert;
    let labels = serde_json::to_string(&a.labels).unwrap_or_default();
    let value = a.signal.unit().format(a.value);
    let evidence = report::evidence_line(&a.evidence);
    match e.state {
        State::Pending => tracing::info!(
            alertname = %a.rule,
            severity = a.severity.as_str(),
            state = "pending",
            fingerprint = %a.fingerprint,
            labels = %labels,
            value = %value,
            evidence = %evidence,
            summary = %a.summary,
            "alert pending"
        ),
        State::Firing => {
            let (diagnosis, suggestions) = advice.map_or_else(Default::default, |x| {
                let s: Vec<String> = x
                    .suggestions
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("{}. {}", i + 1, s.text))
                    .collect();
                (x.diagnosis.clone(), s.join(" "))
            });
            tracing::warn!(
                alertname = %a.rule,
                severity = a.severity.as_str(),
                state = "firing",
                fingerprint = %a.fingerprint,
                labels = %labels,
                value = %value,
                evidence = %evidence,
                summary = %a.summary,
                detail = %a.detail,
                diagnosis = %diagnosis,
                advice = %suggestions,
                "alert firing"
            )
        }
        State::Resolved => tracing::info!(
            alertname = %a.rule,
            severity = a.severity.as_str(),
            state = "resolved",
            fingerprint = %a.fingerprint,
            labels = %labels,
            value = %value,
            resolution = a.resolution.as_deref().unwrap_or_default(),
            summary = %a.summary,
            "alert resolved"
        ),
    }
}

/// This host's name, for the `instance` label.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `listen` as a host:port others can use: the host name for a wildcard address.
fn generator_host(listen: SocketAddr, host: &str) -> String {
    if listen.ip().is_unspecified() {
        format!("{host}:{}", listen.port())
    } else {
        listen.to_string()
    }
}

/// The alert metrics as a scrape source.
pub struct AlertsSource(pub Arc<AlertService>);

impl Source for AlertsSource {
    fn name(&self) -> &'static str {
        "alerts"
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        Ok(self.0.families())
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn disk(values_us: &[u64]) -> Vec<Reading> {
        vec![Reading::Block(crate::observe::block::test_reading(
            "loop9", values_us,
        ))]
    }

    #[test]
    fn slow_disk_fires_with_advice_and_due_alerts_go_out() {
        let cfg: AlertsConfig =
            toml::from_str::<toml::Table>("[alerts.webhook]\nurls = [\"http://127.0.0.1:1\"]\n")
                .map(|t| t["alerts"].clone().try_into().unwrap())
                .unwrap();
        let svc = AlertService::new(&cfg, "0.0.0.0:9464".parse().unwrap()).unwrap();
        assert!(svc.identity.generator_url.ends_with(":9464/"));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut all = Vec::new();
        // 100 I/Os of 300 ms more at each evaluation: p99 300 ms, for 70 s.
        for step in 0..9u64 {
            all.extend(std::iter::repeat_n(300_000u64, 100));
            let (alerts, fps) = svc.evaluate(disk(&all), t0 + Duration::from_secs(step * 10));
            if step < 7 {
                assert!(
                    alerts.is_empty(),
                    "step {step}: nothing fires before `for` (60 s)"
                );
            } else if step == 7 {
                assert_eq!(alerts.len(), 1);
                assert_eq!(alerts[0].labels["alertname"], "DiskLatencyHigh");
                assert!(alerts[0].annotations.contains_key("advice"));
                assert_eq!(fps.len(), 1);
            }
        }
        let text = crate::daemon::exposition::to_prometheus_text(
            &crate::daemon::exposition::encode_openmetrics(&svc.families()).unwrap(),
        );
        assert!(
            text.contains("perf_user_alerts{alertname=\"DiskLatencyHigh\",severity=\"warning\",state=\"firing\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("perf_user_alert_transitions_total{state=\"firing\"} 1"),
            "{text}"
        );
    }
}
