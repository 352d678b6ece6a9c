//! The alert metrics the daemon exports.

use std::time::Duration;

use super::exposition::{Family, Kind};
use crate::alerts::engine::{Engine, State};

/// The alert metrics: per rule, the number of pending and firing alerts
/// (`perf_user_alerts{alertname,severity,state}`, as Prometheus's own
/// `ALERTS` series), plus the engine's and the webhook's counters.
pub fn families(engine: &Engine, stats: &Stats) -> Vec<Family> {
    let mut alerts = Family::new(
        "perf_user_alerts",
        Kind::Gauge,
        "Alerts per rule and state (pending, firing), from the built-in rule engine; see docs/alerts.md.",
    );
    for (rule, severity, pending, firing) in engine.counts() {
        for (state, n) in [(State::Pending, pending), (State::Firing, firing)] {
            alerts.push(
                vec![
                    ("alertname", rule.to_string()),
                    ("severity", severity.as_str().to_string()),
                    ("state", state.as_str().to_string()),
                ],
                n as f64,
            );
        }
    }
    let mut notifications = Family::new(
        "perf_user_alert_notifications_total",
        Kind::Counter,
        "Posts of alerts to Alertmanager, by result (ok, error).",
    );
    notifications.push(vec![("result", "ok".into())], stats.sent_ok as f64);
    notifications.push(vec![("result", "error".into())], stats.sent_error as f64);
    let mut transitions = Family::new(
        "perf_user_alert_transitions_total",
        Kind::Counter,
        "Alert state changes, by state entered (pending, firing, resolved).",
    );
    for (state, n) in [
        (State::Pending, stats.pending),
        (State::Firing, stats.firing),
        (State::Resolved, stats.resolved),
    ] {
        transitions.push(vec![("state", state.as_str().to_string())], n as f64);
    }
    vec![
        alerts,
        notifications,
        transitions,
        Family::single(
            "perf_user_alert_evaluations_total",
            Kind::Counter,
            "Rule evaluations done.",
            engine.evaluations() as f64,
        ),
        Family::single(
            "perf_user_alert_evaluation_duration_seconds",
            Kind::Gauge,
            "Time the last evaluation took (reading the sources, judging, advice).",
            stats.last_duration.as_secs_f64(),
        ),
        Family::single(
            "perf_user_alert_series_dropped_total",
            Kind::Counter,
            "Series not judged because the engine already tracks its maximum.",
            engine.series_dropped() as f64,
        ),
    ]
}

/// Counters kept beside the engine.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Successful posts.
    pub sent_ok: u64,
    /// Failed posts.
    pub sent_error: u64,
    /// Transitions into pending.
    pub pending: u64,
    /// Transitions into firing.
    pub firing: u64,
    /// Transitions into resolved.
    pub resolved: u64,
    /// The last evaluation's duration.
    pub last_duration: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{engine::EngineOptions, rules::defaults};

    #[test]
    fn alert_metrics_have_a_series_per_rule_and_state() {
        let engine = Engine::new(defaults(), EngineOptions::default());
        let fams = families(&engine, &Stats::default());
        assert_eq!(fams[0].name, "perf_user_alerts");
        assert_eq!(fams[0].samples.len(), defaults().len() * 2);
        let text = crate::daemon::exposition::to_prometheus_text(
            &crate::daemon::exposition::encode_openmetrics(&fams).unwrap(),
        );
        assert!(
            text.contains("perf_user_alerts{alertname=\"DiskLatencyHigh\",severity=\"warning\",state=\"firing\"} 0"),
            "{text}"
        );
    }
}
