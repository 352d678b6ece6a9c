//! The alert lifecycle: each (rule, series) is one alert, identified by a
//! fingerprint of the rule's name and the series' labels, so however often
//! a condition is seen it is one alert (deduplication).
//!
//! ```text
//!   condition true          held for `for`           clear (past hysteresis)
//!  ───────────────► pending ───────────────► firing ─────────────────────────► resolved
//!                     │ condition false                  ▲ series gone for       │
//!                     ▼ (dropped, never notified)        │ `stale_after` evals   │ true again:
//!                  (inactive)                            └───────────────────────┘ pending anew
//! ```
//!
//! Resolved alerts are kept for `resolved_retention`, so that sinks that
//! were told about the firing alert hear that it resolved, then forgotten.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::{
    baseline::{MAX_POINTS, Series},
    rules::{Mode, Rule, RuleKind, Severity, Verdict},
    signals::{Batch, Evidence, Labels, Signal},
};

/// Where an alert is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The condition holds, not yet for the rule's `for` duration.
    Pending,
    /// The condition has held for `for`.
    Firing,
    /// It fired and no longer holds.
    Resolved,
}

impl State {
    /// `pending`, `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }

    /// Pending or firing.
    pub fn is_active(self) -> bool {
        matches!(self, State::Pending | State::Firing)
    }
}

/// One alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// 16 hex digits: FNV-1a of the rule name and the series' labels.
    pub fingerprint: String,
    /// The rule's name (the `alertname` label).
    pub rule: String,
    /// `threshold`, `rate`, `baseline` or `hotspot`.
    pub kind: &'static str,
    /// How urgent.
    pub severity: Severity,
    /// What the rule watches.
    pub signal: Signal,
    /// The series' labels.
    pub labels: Labels,
    /// Where it is.
    pub state: State,
    /// When the condition started holding (this time round).
    #[serde(serialize_with = "unix_secs")]
    pub active_since: SystemTime,
    /// When it fired.
    #[serde(serialize_with = "opt_unix_secs")]
    pub fired_at: Option<SystemTime>,
    /// When it resolved.
    #[serde(serialize_with = "opt_unix_secs")]
    pub resolved_at: Option<SystemTime>,
    /// The last value compared (for rates, the growth per minute).
    pub value: f64,
    /// The level it was compared with.
    pub reference: f64,
    /// The worst value while active.
    pub peak: f64,
    /// One line for people.
    pub summary: String,
    /// How the last active verdict was reached.
    pub detail: String,
    /// Why it resolved, when it did.
    pub resolution: Option<String>,
    /// The facts behind the last active value.
    pub evidence: Evidence,
    /// When a sink was last told about it.
    #[serde(skip)]
    pub last_sent: Option<SystemTime>,
    /// The state sinks were last told.
    #[serde(skip)]
    pub sent_state: Option<State>,
    /// Consecutive covered evaluations without a value.
    #[serde(skip)]
    absent: u32,
}

fn unix_secs<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(to_secs(*t))
}

fn opt_unix_secs<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&to_secs(*t)),
        None => s.serialize_none(),
    }
}

/// Seconds since the Unix epoch.
pub fn to_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A change of an alert's state, for the sinks.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The state entered.
    pub state: State,
    /// The alert after the change.
    pub alert: Alert,
}

/// Engine settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineOptions {
    /// Continuous (daemon) or one-shot (`advise`).
    pub mode: Mode,
    /// A firing alert whose series has no data for this many covered
    /// evaluations in a row resolves (a disk removed, a peer gone quiet).
    pub stale_after: u32,
    /// How long resolved alerts are remembered (and re-sent).
    pub resolved_retention: Duration,
    /// Most series remembered across all rules; beyond it new series are
    /// not judged (and counted in `series_dropped`).
    pub max_series: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Continuous,
            stale_after: 3,
            resolved_retention: Duration::from_secs(15 * 60),
            max_series: 10_000,
        }
    }
}

/// Why a rule did not judge in the last evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleStatus {
    /// The rule.
    pub rule: String,
    /// Its kind.
    pub kind: &'static str,
    /// Its signal.
    pub signal: Signal,
    /// Series judged in the last evaluation that covered its signal.
    pub series: usize,
    /// Series still learning, and the most and needed history among them.
    pub learning: usize,
    /// History held by the best-informed learning series.
    pub have: usize,
    /// History needed.
    pub need: usize,
    /// Whether any batch so far covered its signal.
    pub covered: bool,
}

#[derive(Clone, Debug)]
struct Memory {
    history: Series,
    last_seen: f64,
}

/// The rule engine: rules, per-series memory, alerts.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    opts: EngineOptions,
    memory: HashMap<(usize, Labels), Memory>,
    /// Per rule: times of the batches that covered its signal (hotspot rules
    /// fill a new function's history with zeros for the earlier windows).
    rounds: Vec<VecDeque<f64>>,
    status: Vec<RuleStatus>,
    alerts: BTreeMap<String, Alert>,
    evaluations: u64,
    series_dropped: u64,
}

impl Engine {
    /// An engine over validated `rules`.
    pub fn new(rules: Vec<Rule>, opts: EngineOptions) -> Self {
        let status = rules
            .iter()
            .map(|r| RuleStatus {
                rule: r.name.clone(),
                kind: r.kind.name(),
                signal: r.signal,
                series: 0,
                learning: 0,
                have: 0,
                need: 0,
                covered: false,
            })
            .collect();
        Self {
            rounds: vec![VecDeque::new(); rules.len()],
            rules,
            opts,
            memory: HashMap::new(),
            status,
            alerts: BTreeMap::new(),
            evaluations: 0,
            series_dropped: 0,
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Evaluations done.
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// Series not judged because `max_series` was reached.
    pub fn series_dropped(&self) -> u64 {
        self.series_dropped
    }

    /// Every alert known: pending, firing, and recently resolved.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// The alert with this fingerprint.
    pub fn alert(&self, fingerprint: &str) -> Option<&Alert> {
        self.alerts.get(fingerprint)
    }

    /// Each rule's state after the last evaluation.
    pub fn status(&self) -> &[RuleStatus] {
        &self.status
    }

    /// Per rule: (name, severity, pending count, firing count).
    pub fn counts(&self) -> Vec<(&str, Severity, usize, usize)> {
        self.rules
            .iter()
            .map(|r| {
                let of_rule = self.alerts.values().filter(|a| a.rule == r.name);
                let (mut pending, mut firing) = (0, 0);
                for a in of_rule {
                    match a.state {
                        State::Pending => pending += 1,
                        State::Firing => firing += 1,
                        State::Resolved => {}
                    }
                }
                (r.name.as_str(), r.severity, pending, firing)
            })
            .collect()
    }

    /// Judges every rule over `batch` and returns the state changes.
    pub fn evaluate(&mut self, batch: &Batch) -> Vec<Event> {
        self.evaluations += 1;
        let t = to_secs(batch.at);
        let mut events = Vec::new();
        for ri in 0..self.rules.len() {
            if batch.covered.contains(&self.rules[ri].signal) {
                self.evaluate_rule(ri, batch, t, &mut events);
            }
        }
        self.forget(batch.at, t);
        events
    }

    fn evaluate_rule(&mut self, ri: usize, batch: &Batch, t: f64, events: &mut Vec<Event>) {
        let rule = self.rules[ri].clone();
        let hotspot = matches!(rule.kind, RuleKind::Hotspot(_));
        let span = rule.kind.history().as_secs_f64();
        let rounds = &mut self.rounds[ri];
        rounds.push_back(t);
        while rounds.front().is_some_and(|&r| r < t - span) || rounds.len() > MAX_POINTS {
            rounds.pop_front();
        }
        let mut status = RuleStatus {
            covered: true,
            need: 0,
            have: 0,
            learning: 0,
            series: 0,
            ..self.status[ri].clone()
        };
        let mut seen: Vec<&Labels> = Vec::new();
        for obs in batch.observations.iter().filter(|o| rule.selects(o)) {
            if obs.count < rule.min_count {
                continue;
            }
            let key = (ri, obs.labels.clone());
            if !self.memory.contains_key(&key) {
                if self.memory.len() >= self.opts.max_series {
                    self.series_dropped += 1;
                    continue;
                }
                let mut history = Series::new(span);
                if hotspot {
                    // A function new to the top N was below it before: 0.
                    for &r in self.rounds[ri].iter().filter(|&&r| r < t) {
                        history.push(r, 0.0);
                    }
                }
                self.memory.insert(
                    key.clone(),
                    Memory {
                        history,
                        last_seen: t,
                    },
                );
            }
            seen.push(&obs.labels);
            status.series += 1;
            let fp = fingerprint(&rule.name, &obs.labels);
            let active = self.alerts.get(&fp).is_some_and(|a| a.state.is_active());
            let mem = self.memory.get_mut(&key).expect("inserted above");
            mem.last_seen = t;
            let verdict = rule.judge(&mut mem.history, t, obs.value, active, self.opts.mode);
            if let Verdict::Learning { have, need } = verdict {
                status.learning += 1;
                status.have = status.have.max(have);
                status.need = need;
            }
            self.apply(
                &rule,
                fp,
                &obs.labels,
                &obs.evidence,
                verdict,
                batch.at,
                events,
            );
        }
        // Series with no value in a batch that covers their signal.
        let missing: Vec<Labels> = self
            .memory
            .keys()
            .filter(|(r, l)| *r == ri && !seen.contains(&l))
            .map(|(_, l)| l.clone())
            .collect();
        for labels in missing {
            let fp = fingerprint(&rule.name, &labels);
            if hotspot {
                // Out of the top N: a share of (about) nothing.
                let active = self.alerts.get(&fp).is_some_and(|a| a.state.is_active());
                let mem = self
                    .memory
                    .get_mut(&(ri, labels.clone()))
                    .expect("listed above");
                let verdict = rule.judge(&mut mem.history, t, 0.0, active, self.opts.mode);
                self.apply(
                    &rule,
                    fp,
                    &labels,
                    &Evidence::None,
                    verdict,
                    batch.at,
                    events,
                );
            } else if let Some(a) = self.alerts.get_mut(&fp) {
                a.absent += 1;
                match a.state {
                    State::Pending => {
                        self.alerts.remove(&fp);
                    }
                    State::Firing if a.absent >= self.opts.stale_after => {
                        a.state = State::Resolved;
                        a.resolved_at = Some(batch.at);
                        a.resolution =
                            Some(format!("no data for {} evaluations in a row", a.absent));
                        events.push(Event {
                            state: State::Resolved,
                            alert: a.clone(),
                        });
                    }
                    _ => {}
                }
            }
        }
        self.status[ri] = status;
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        rule: &Rule,
        fp: String,
        labels: &Labels,
        evidence: &Evidence,
        verdict: Verdict,
        at: SystemTime,
        events: &mut Vec<Event>,
    ) {
        match verdict {
            Verdict::Learning { .. } => {}
            Verdict::Active {
                value,
                reference,
                detail,
            } => {
                let summary = rule.summarize(labels, value, reference);
                let alert = match self.alerts.get_mut(&fp) {
                    Some(a) if a.state.is_active() => {
                        a.value = value;
                        a.reference = reference;
                        a.peak = worse(rule, a.peak, value);
                        a.summary = summary;
                        a.detail = detail;
                        a.evidence = evidence.clone();
                        a.absent = 0;
                        a
                    }
                    previous => {
                        // New, or resolved earlier: a new episode, same fingerprint.
                        let (last_sent, sent_state) = previous
                            .map(|p| (p.last_sent, p.sent_state))
                            .unwrap_or_default();
                        let a = Alert {
                            fingerprint: fp.clone(),
                            rule: rule.name.clone(),
                            kind: rule.kind.name(),
                            severity: rule.severity,
                            signal: rule.signal,
                            labels: labels.clone(),
                            state: State::Pending,
                            active_since: at,
                            fired_at: None,
                            resolved_at: None,
                            value,
                            reference,
                            peak: value,
                            summary,
                            detail,
                            resolution: None,
                            evidence: evidence.clone(),
                            last_sent,
                            sent_state,
                            absent: 0,
                        };
                        events.push(Event {
                            state: State::Pending,
                            alert: a.clone(),
                        });
                        self.alerts.insert(fp.clone(), a);
                        self.alerts.get_mut(&fp).expect("inserted")
                    }
                };
                let held = at.duration_since(alert.active_since).unwrap_or_default();
                if alert.state == State::Pending
                    && (held >= rule.for_ || self.opts.mode == Mode::OneShot)
                {
                    alert.state = State::Firing;
                    alert.fired_at = Some(at);
                    events.push(Event {
                        state: State::Firing,
                        alert: alert.clone(),
                    });
                }
            }
            Verdict::Hold { value, reference } | Verdict::Clear { value, reference } => {
                let clear = matches!(verdict, Verdict::Clear { .. });
                let Some(a) = self.alerts.get_mut(&fp) else {
                    return;
                };
                a.absent = 0;
                match a.state {
                    // `for` means continuously: any lapse restarts the wait.
                    State::Pending => {
                        self.alerts.remove(&fp);
                    }
                    State::Firing if clear => {
                        a.state = State::Resolved;
                        a.resolved_at = Some(at);
                        a.value = value;
                        a.reference = reference;
                        a.resolution = Some(format!(
                            "back to {} ({} level {})",
                            rule.signal.unit().format(value),
                            if matches!(rule.kind, RuleKind::Threshold(_)) {
                                "clear"
                            } else {
                                "alert"
                            },
                            rule.signal.unit().format(reference)
                        ));
                        events.push(Event {
                            state: State::Resolved,
                            alert: a.clone(),
                        });
                    }
                    State::Firing => {
                        a.value = value;
                    }
                    State::Resolved => {}
                }
            }
        }
    }

    /// Drops resolved alerts past retention and series not seen for longer
    /// than their rule's history (or 10 minutes).
    fn forget(&mut self, now: SystemTime, t: f64) {
        let retention = self.opts.resolved_retention;
        self.alerts.retain(|_, a| {
            a.state != State::Resolved
                || a.resolved_at
                    .and_then(|r| now.duration_since(r).ok())
                    .is_none_or(|age| age < retention)
        });
        let rules = &self.rules;
        let alerts = &self.alerts;
        self.memory.retain(|(ri, labels), m| {
            let keep_for = rules[*ri]
                .kind
                .history()
                .max(Duration::from_secs(600))
                .as_secs_f64();
            t - m.last_seen <= keep_for
                || alerts
                    .get(&fingerprint(&rules[*ri].name, labels))
                    .is_some_and(|a| a.state.is_active())
        });
    }

    /// Alerts a notifier should send now: firing ones not sent as firing or
    /// not sent for `resend`, and resolved ones that were sent as firing, or
    /// were last sent more than `resend` ago. Pending alerts are never sent.
    pub fn due(&self, now: SystemTime, resend: Duration) -> Vec<&Alert> {
        self.alerts
            .values()
            .filter(|a| {
                let stale = a
                    .last_sent
                    .and_then(|s| now.duration_since(s).ok())
                    .is_none_or(|age| age >= resend);
                match a.state {
                    State::Pending => false,
                    State::Firing => a.sent_state != Some(State::Firing) || stale,
                    State::Resolved => match a.sent_state {
                        Some(State::Firing) => true,
                        Some(State::Resolved) => stale,
                        _ => false,
                    },
                }
            })
            .collect()
    }

    /// Records that the alerts with these fingerprints were sent at `at`.
    pub fn mark_sent(&mut self, fingerprints: &[String], at: SystemTime) {
        for fp in fingerprints {
            if let Some(a) = self.alerts.get_mut(fp) {
                a.last_sent = Some(at);
                a.sent_state = Some(a.state);
            }
        }
    }
}

/// The worse of two values for `rule`: higher, except for thresholds on
/// values that are bad when low.
fn worse(rule: &Rule, a: f64, b: f64) -> f64 {
    match &rule.kind {
        RuleKind::Threshold(t) if t.direction == super::rules::Direction::Below => a.min(b),
        _ => a.max(b),
    }
}

/// FNV-1a 64 of the rule name and the labels, as 16 hex digits: stable
/// across restarts and hosts, so the same problem keeps its identity.
pub fn fingerprint(rule: &str, labels: &Labels) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
        // A separator no name or value contains, so ("ab","c") != ("a","bc").
        h ^= 0xff;
        h = h.wrapping_mul(PRIME);
    };
    eat(rule.as_bytes());
    for (k, v) in labels {
        eat(k.as_bytes());
        eat(v.as_bytes());
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::alerts::{
        rules::{BaselineRule, Direction, HotspotRule, Matchers, Threshold},
        signals::{Observation, labels},
    };
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn threshold_rule(for_secs: u64) -> Rule {
        Rule {
            name: "DiskSlow".into(),
            kind: RuleKind::Threshold(Threshold {
                direction: Direction::Above,
                value: 0.1,
                clear: 0.05,
            }),
            signal: Signal::BlockLatencyP99,
            matchers: Matchers::default(),
            severity: Severity::Warning,
            for_: Duration::from_secs(for_secs),
            min_count: 10,
            summary: None,
        }
    }

    fn obs(signal: Signal, device: &str, value: f64, count: u64) -> Observation {
        Observation {
            signal,
            labels: labels([("device", device), ("op", "write")]),
            value,
            count,
            evidence: Evidence::None,
        }
    }

    fn batch(secs: u64, signal: Signal, items: Vec<Observation>) -> Batch {
        Batch {
            at: at(secs),
            window: Duration::from_secs(10),
            covered: BTreeSet::from([signal]),
            observations: items,
        }
    }

    fn disk(secs: u64, value: f64) -> Batch {
        batch(
            secs,
            Signal::BlockLatencyP99,
            vec![obs(Signal::BlockLatencyP99, "vda", value, 100)],
        )
    }

    fn states(events: &[Event]) -> Vec<State> {
        events.iter().map(|e| e.state).collect()
    }

    #[test]
    fn pending_then_firing_after_for_then_resolved() {
        let mut e = Engine::new(vec![threshold_rule(30)], EngineOptions::default());
        assert_eq!(states(&e.evaluate(&disk(0, 0.2))), [State::Pending]);
        assert_eq!(states(&e.evaluate(&disk(10, 0.2))), []);
        assert_eq!(states(&e.evaluate(&disk(20, 0.2))), []);
        let ev = e.evaluate(&disk(30, 0.3));
        assert_eq!(states(&ev), [State::Firing]);
        let a = &ev[0].alert;
        assert_eq!(a.fired_at, Some(at(30)));
        assert_eq!(a.active_since, at(0));
        assert_eq!(a.peak, 0.3);
        assert!(a.summary.contains("vda (write)"), "{}", a.summary);
        // In the hysteresis band: still firing.
        assert_eq!(states(&e.evaluate(&disk(40, 0.07))), []);
        assert_eq!(e.alerts().next().unwrap().state, State::Firing);
        let ev = e.evaluate(&disk(50, 0.01));
        assert_eq!(states(&ev), [State::Resolved]);
        assert!(
            ev[0]
                .alert
                .resolution
                .as_deref()
                .unwrap()
                .contains("10.0 ms")
        );
    }

    #[test]
    fn a_lapse_while_pending_restarts_the_wait() {
        let mut e = Engine::new(vec![threshold_rule(30)], EngineOptions::default());
        e.evaluate(&disk(0, 0.2));
        e.evaluate(&disk(10, 0.08)); // in the band: not "continuously above"
        assert_eq!(e.alerts().count(), 0);
        assert_eq!(states(&e.evaluate(&disk(20, 0.2))), [State::Pending]);
        assert_eq!(states(&e.evaluate(&disk(40, 0.2))), []);
        assert_eq!(states(&e.evaluate(&disk(50, 0.2))), [State::Firing]);
    }

    #[test]
    fn one_alert_per_series_and_fingerprints_are_stable() {
        let mut e = Engine::new(vec![threshold_rule(0)], EngineOptions::default());
        let two = |s| {
            batch(
                s,
                Signal::BlockLatencyP99,
                vec![
                    obs(Signal::BlockLatencyP99, "vda", 0.3, 100),
                    obs(Signal::BlockLatencyP99, "loop0", 0.3, 100),
                ],
            )
        };
        assert_eq!(
            states(&e.evaluate(&two(0))),
            [State::Pending, State::Firing, State::Pending, State::Firing]
        );
        for s in 1..10 {
            assert!(e.evaluate(&two(s * 10)).is_empty(), "no repeats");
        }
        assert_eq!(e.alerts().count(), 2);
        let l = labels([("device", "vda"), ("op", "write")]);
        assert!(e.alert(&fingerprint("DiskSlow", &l)).is_some());
        assert_eq!(
            fingerprint("DiskSlow", &l),
            fingerprint("DiskSlow", &l.clone())
        );
        assert_ne!(fingerprint("DiskSlow", &l), fingerprint("DiskSlo", &l));
        assert_eq!(e.counts(), [("DiskSlow", Severity::Warning, 0, 2)]);
    }

    #[test]
    fn too_few_events_count_as_no_data_and_stale_series_resolve() {
        let mut e = Engine::new(vec![threshold_rule(0)], EngineOptions::default());
        e.evaluate(&disk(0, 0.5));
        let quiet = |s| {
            batch(
                s,
                Signal::BlockLatencyP99,
                vec![obs(Signal::BlockLatencyP99, "vda", 0.9, 3)],
            )
        };
        assert!(e.evaluate(&quiet(10)).is_empty());
        assert!(e.evaluate(&quiet(20)).is_empty());
        let ev = e.evaluate(&quiet(30));
        assert_eq!(states(&ev), [State::Resolved]);
        assert!(
            ev[0]
                .alert
                .resolution
                .as_deref()
                .unwrap()
                .contains("no data")
        );
    }

    #[test]
    fn uncovered_batches_change_nothing() {
        let mut e = Engine::new(vec![threshold_rule(0)], EngineOptions::default());
        e.evaluate(&disk(0, 0.5));
        for s in 1..10 {
            assert!(
                e.evaluate(&batch(s * 10, Signal::CpuSelfRatio, vec![]))
                    .is_empty()
            );
        }
        assert_eq!(e.alerts().next().unwrap().state, State::Firing);
    }

    #[test]
    fn resolved_alerts_are_forgotten_after_retention() {
        let opts = EngineOptions {
            resolved_retention: Duration::from_secs(60),
            ..EngineOptions::default()
        };
        let mut e = Engine::new(vec![threshold_rule(0)], opts);
        e.evaluate(&disk(0, 0.5));
        e.evaluate(&disk(10, 0.0));
        assert_eq!(e.alerts().next().unwrap().state, State::Resolved);
        e.evaluate(&disk(60, 0.0));
        assert_eq!(e.alerts().count(), 1);
        e.evaluate(&disk(80, 0.0));
        assert_eq!(e.alerts().count(), 0);
    }

    #[test]
    fn notifications_follow_the_lifecycle() {
        let mut e = Engine::new(vec![threshold_rule(10)], EngineOptions::default());
        let resend = Duration::from_secs(60);
        e.evaluate(&disk(0, 0.5));
        assert!(e.due(at(0), resend).is_empty(), "pending is never sent");
        e.evaluate(&disk(10, 0.5));
        let due: Vec<String> = e
            .due(at(10), resend)
            .iter()
            .map(|a| a.fingerprint.clone())
            .collect();
        assert_eq!(due.len(), 1);
        e.mark_sent(&due, at(10));
        assert!(e.due(at(20), resend).is_empty(), "sent recently");
        assert_eq!(e.due(at(70), resend).len(), 1, "re-sent after `resend`");
        e.mark_sent(&due, at(70));
        e.evaluate(&disk(80, 0.0));
        assert_eq!(e.due(at(80), resend).len(), 1, "resolution sent at once");
        e.mark_sent(&due, at(80));
        assert!(e.due(at(90), resend).is_empty());
    }

    #[test]
    fn a_resolved_alert_that_returns_is_a_new_episode_with_the_same_fingerprint() {
        let mut e = Engine::new(vec![threshold_rule(0)], EngineOptions::default());
        let first = e.evaluate(&disk(0, 0.5));
        e.evaluate(&disk(10, 0.0));
        let again = e.evaluate(&disk(20, 0.5));
        assert_eq!(states(&again), [State::Pending, State::Firing]);
        assert_eq!(again[1].alert.fingerprint, first[1].alert.fingerprint);
        assert_eq!(again[1].alert.active_since, at(20));
        assert_eq!(e.alerts().count(), 1);
    }

    #[test]
    fn one_shot_fires_at_once_and_reports_learning_rules() {
        let baseline = Rule {
            name: "Anomaly".into(),
            kind: RuleKind::Baseline(BaselineRule {
                window: Duration::from_secs(3600),
                k: 5.0,
                min_delta: 0.01,
                min_ratio: 2.0,
                min_history: 10,
            }),
            ..threshold_rule(600)
        };
        let opts = EngineOptions {
            mode: Mode::OneShot,
            ..EngineOptions::default()
        };
        let mut e = Engine::new(vec![threshold_rule(600), baseline], opts);
        let ev = e.evaluate(&disk(0, 0.5));
        assert_eq!(states(&ev), [State::Pending, State::Firing]);
        let s = &e.status()[1];
        assert_eq!((s.series, s.learning, s.need), (1, 1, 10));
    }

    #[test]
    fn hotspot_counts_absent_windows_as_zero() {
        let rule = Rule {
            name: "Hot".into(),
            kind: RuleKind::Hotspot(HotspotRule {
                margin: 0.2,
                min_share: 0.25,
                window: Duration::from_secs(3600),
                min_history: 3,
            }),
            signal: Signal::CpuSelfRatio,
            matchers: Matchers::default(),
            severity: Severity::Info,
            for_: Duration::ZERO,
            min_count: 0,
            summary: None,
        };
        let f = |name: &str, v: f64| Observation {
            signal: Signal::CpuSelfRatio,
            labels: labels([("process", "app"), ("function", name), ("module", "app")]),
            value: v,
            count: 1000,
            evidence: Evidence::None,
        };
        let mut e = Engine::new(vec![rule], EngineOptions::default());
        for w in 0..5 {
            e.evaluate(&batch(w * 30, Signal::CpuSelfRatio, vec![f("steady", 0.5)]));
        }
        // A function never seen before jumps to 40%: its history is 5 zeros.
        let ev = e.evaluate(&batch(
            150,
            Signal::CpuSelfRatio,
            vec![f("steady", 0.5), f("new", 0.4)],
        ));
        assert_eq!(states(&ev), [State::Pending, State::Firing]);
        assert_eq!(ev[1].alert.labels["function"], "new");
        // It leaves the top N: resolved.
        let ev = e.evaluate(&batch(180, Signal::CpuSelfRatio, vec![f("steady", 0.5)]));
        assert_eq!(states(&ev), [State::Resolved]);
    }

    #[test]
    fn series_memory_is_bounded() {
        let opts = EngineOptions {
            max_series: 3,
            ..EngineOptions::default()
        };
        let mut e = Engine::new(vec![threshold_rule(0)], opts);
        let many: Vec<Observation> = (0..10)
            .map(|i| obs(Signal::BlockLatencyP99, &format!("d{i}"), 0.5, 100))
            .collect();
        e.evaluate(&batch(0, Signal::BlockLatencyP99, many));
        assert_eq!(e.alerts().count(), 3);
        assert_eq!(e.series_dropped(), 7);
    }

    proptest! {
        /// Whatever the values, an alert fires only after its condition has
        /// held for `for`, at most one alert exists per series, and every
        /// transition is one the lifecycle allows.
        #[test]
        fn lifecycle_invariants(
            values in prop::collection::vec(0.0f64..0.3, 1..80),
            for_steps in 0u64..6,
        ) {
            let mut e = Engine::new(vec![threshold_rule(for_steps * 10)], EngineOptions::default());
            let mut last: Option<State> = None;
            let mut above_since: Option<u64> = None;
            for (i, v) in values.iter().enumerate() {
                let s = i as u64 * 10;
                above_since = if *v > 0.1 { above_since.or(Some(s)) } else { None };
                for ev in e.evaluate(&disk(s, *v)) {
                    let allowed = matches!(
                        (last, ev.state),
                        (None | Some(State::Resolved), State::Pending)
                            | (Some(State::Pending), State::Firing)
                            | (Some(State::Firing), State::Resolved)
                    );
                    prop_assert!(allowed, "{:?} -> {:?}", last, ev.state);
                    if ev.state == State::Firing {
                        let since = above_since.expect("firing while the value is not above");
                        prop_assert!(s - since >= for_steps * 10);
                    }
                    last = Some(ev.state);
                }
                prop_assert!(e.alerts().count() <= 1);
                if let Some(a) = e.alerts().next() {
                    last = Some(a.state);
                } else {
                    last = None;
                }
            }
        }

        #[test]
        fn fingerprints_depend_on_every_label(
            k in "[a-z]{1,8}", v in "[a-z0-9]{0,8}", w in "[a-z0-9]{0,8}",
        ) {
            prop_assume!(v != w);
            let a = labels([(k.as_str(), v.as_str())]);
            let b = labels([(k.as_str(), w.as_str())]);
            prop_assert_ne!(fingerprint("R", &a), fingerprint("R", &b));
            prop_assert_eq!(fingerprint("R", &a).len(), 16);
        }
    }
}
