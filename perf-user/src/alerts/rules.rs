//! Rules: which signal, which series, and when a value is a problem.
//!
//! Four kinds:
//! - **threshold**: the value is above (or below) a fixed level; it clears
//!   only past a second level (hysteresis), so a value hovering at the line
//!   does not flap.
//! - **rate**: the value grows faster than a set amount per minute (Theil–Sen
//!   slope over a window): a leak grows, a steady heap does not.
//! - **baseline**: the value is far above its own learned normal (median +
//!   k·MAD over a window, with absolute and relative floors).
//! - **hotspot**: a function's CPU share has risen a set margin above its
//!   own median share over a window.
//!
//! A rule judges one series at a time ([`Rule::judge`]); the engine keeps the
//! per-series memory and the alert lifecycle.

use std::time::Duration;

use serde::Serialize;

use super::{
    baseline::Series,
    signals::{Labels, Observation, Signal},
};

/// How urgent an alert is; becomes the `severity` label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention (the default).
    #[default]
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The severity called `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Which side of a threshold is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Values above are bad.
    Above,
    /// Values below are bad.
    Below,
}

/// A fixed level.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Threshold {
    /// Which side is bad.
    pub direction: Direction,
    /// The level.
    pub value: f64,
    /// Where a firing alert resolves: below it (`Above`) or above it
    /// (`Below`). Between `clear` and `value` the state is kept.
    pub clear: f64,
}

/// Growth per minute.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rate {
    /// Growth that is a problem, signal units per minute.
    pub per_minute: f64,
    /// The slope is taken over this much history.
    pub window: Duration,
    /// Points needed before a slope is trusted.
    pub min_points: usize,
}

/// Deviation from a learned baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BaselineRule {
    /// History the baseline is learned from.
    pub window: Duration,
    /// Robust standard deviations (1.4826·MAD) above the median.
    pub k: f64,
    /// Smallest absolute rise that counts, signal units.
    pub min_delta: f64,
    /// Smallest relative rise that counts (2.0: at least double the median).
    pub min_ratio: f64,
    /// Values learned before the rule judges at all.
    pub min_history: usize,
}

/// A function's CPU share against its own baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HotspotRule {
    /// Rise of the share above its median that counts (0.2: 20 points).
    pub margin: f64,
    /// Smallest share that counts at all.
    pub min_share: f64,
    /// History the median share is taken over.
    pub window: Duration,
    /// Windows observed before the rule judges at all.
    pub min_history: usize,
}

/// The kind of a rule with its parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RuleKind {
    /// See [`Threshold`].
    Threshold(Threshold),
    /// See [`Rate`].
    Rate(Rate),
    /// See [`BaselineRule`].
    Baseline(BaselineRule),
    /// See [`HotspotRule`].
    Hotspot(HotspotRule),
}

impl RuleKind {
    /// `threshold`, `rate`, `baseline` or `hotspot`.
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::Threshold(_) => "threshold",
            RuleKind::Rate(_) => "rate",
            RuleKind::Baseline(_) => "baseline",
            RuleKind::Hotspot(_) => "hotspot",
        }
    }

    /// How much history a series needs to keep for this kind.
    pub fn history(&self) -> Duration {
        match self {
            RuleKind::Threshold(_) => Duration::ZERO,
            RuleKind::Rate(r) => r.window,
            RuleKind::Baseline(b) => b.window,
            RuleKind::Hotspot(h) => h.window,
        }
    }

    /// True for kinds that judge against history: one evaluation alone
    /// (`advise`) cannot apply them.
    pub fn needs_history(&self) -> bool {
        matches!(self, RuleKind::Rate(_) | RuleKind::Baseline(_))
    }
}

/// Label matchers: each listed label must equal one of the `|`-separated
/// alternatives (`op = "read|write"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Matchers(pub Labels);

impl Matchers {
    /// True when every matcher accepts `labels`.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|(k, want)| {
            labels
                .get(k)
                .is_some_and(|v| want.split('|').any(|alt| alt == v))
        })
    }
}

/// One validated rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rule {
    /// Unique name; becomes the `alertname` label.
    pub name: String,
    /// Kind and parameters.
    #[serde(flatten)]
    pub kind: RuleKind,
    /// What it watches.
    pub signal: Signal,
    /// Which series.
    #[serde(rename = "match")]
    pub matchers: Matchers,
    /// How urgent.
    pub severity: Severity,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for_secs", serialize_with = "secs")]
    pub for_: Duration,
    /// Values summarizing fewer events than this are ignored (too noisy).
    pub min_count: u64,
    /// One line for people; `{value}`, `{reference}` and each label name in
    /// braces are replaced. Default: generated from the rule.
    pub summary: Option<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What a rule makes of one value.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The condition holds. `reference` is the level crossed (threshold,
    /// baseline bound, or for rates the growth per minute threshold);
    /// `value` is what is compared with it (for rates, the growth per
    /// minute).
    Active {
        /// The compared value.
        value: f64,
        /// The level it crossed.
        reference: f64,
        /// How it was decided, for people.
        detail: String,
    },
    /// Neither clearly bad nor clearly good (the hysteresis band): a firing
    /// alert keeps firing, a pending one is dropped.
    Hold {
        /// The compared value.
        value: f64,
        /// The level.
        reference: f64,
    },
    /// Clearly fine.
    Clear {
        /// The compared value.
        value: f64,
        /// The level.
        reference: f64,
    },
    /// Not enough history yet.
    Learning {
        /// Values (or windows) learned.
        have: usize,
        /// Values needed.
        need: usize,
    },
}

impl Verdict {
    /// True for [`Verdict::Active`].
    pub fn is_active(&self) -> bool {
        matches!(self, Verdict::Active { .. })
    }
}

/// How much a judgement may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The daemon: history accumulates over evaluations.
    Continuous,
    /// `advise`: one evaluation over the whole sampled window. Hotspot
    /// shares are compared with 0 (no baseline), history kinds only learn.
    OneShot,
}

impl Rule {
    /// True when `obs` is one of this rule's series.
    pub fn selects(&self, obs: &Observation) -> bool {
        obs.signal == self.signal && self.matchers.matches(&obs.labels)
    }

    /// Judges `value` at `t` (seconds) for a series whose memory is
    /// `history`, and updates the memory. `alert_active` tells whether the
    /// series' alert is pending or firing: baselines do not learn from
    /// values judged while an alert is active, so an anomaly that lasts
    /// does not become the new normal.
    pub fn judge(
        &self,
        history: &mut Series,
        t: f64,
        value: f64,
        alert_active: bool,
        mode: Mode,
    ) -> Verdict {
        match &self.kind {
            RuleKind::Threshold(th) => judge_threshold(th, value),
            RuleKind::Rate(r) => {
                history.push(t, value);
                if history.len() < r.min_points.max(2) {
                    return Verdict::Learning {
                        have: history.len(),
                        need: r.min_points.max(2),
                    };
                }
                let per_minute = history.slope().unwrap_or(0.0) * 60.0;
                if per_minute >= r.per_minute {
                    Verdict::Active {
                        value: per_minute,
                        reference: r.per_minute,
                        detail: format!(
                            "grows by {} (Theil–Sen slope over {} points, {:.0} s)",
                            self.signal.unit().format_per_minute(per_minute),
                            history.len(),
                            history.duration()
                        ),
                    }
                } else if per_minute < r.per_minute / 2.0 {
                    Verdict::Clear {
                        value: per_minute,
                        reference: r.per_minute,
                    }
                } else {
                    Verdict::Hold {
                        value: per_minute,
                        reference: r.per_minute,
                    }
                }
            }
            RuleKind::Baseline(b) => {
                history.trim(t);
                let verdict = match history.baseline().filter(|base| base.n >= b.min_history) {
                    None => Verdict::Learning {
                        have: history.len(),
                        need: b.min_history,
                    },
                    Some(base) => {
                        let margin = base.margin(b.k, b.min_delta, b.min_ratio);
                        let bound = base.median + margin;
                        if value > bound {
                            let unit = self.signal.unit();
                            Verdict::Active {
                                value,
                                reference: bound,
                                detail: format!(
                                    "{} against a baseline of {} (median of {} values; MAD {}; bound {})",
                                    unit.format(value),
                                    unit.format(base.median),
                                    base.n,
                                    unit.format(base.mad),
                                    unit.format(bound)
                                ),
                            }
                        } else if value < base.median + margin / 2.0 {
                            Verdict::Clear {
                                value,
                                reference: bound,
                            }
                        } else {
                            Verdict::Hold {
                                value,
                                reference: bound,
                            }
                        }
                    }
                };
                if mode == Mode::OneShot {
                    // One value over the whole run: nothing to learn from.
                    return Verdict::Learning {
                        have: 0,
                        need: b.min_history,
                    };
                }
                if !alert_active && !verdict.is_active() {
                    history.push(t, value);
                }
                verdict
            }
            RuleKind::Hotspot(h) => {
                history.trim(t);
                let base = match mode {
                    Mode::OneShot => Some(0.0),
                    Mode::Continuous => history
                        .baseline()
                        .filter(|b| b.n >= h.min_history)
                        .map(|b| b.median),
                };
                let verdict = match base {
                    None => Verdict::Learning {
                        have: history.len(),
                        need: h.min_history,
                    },
                    Some(median) => {
                        let reference = median + h.margin;
                        if value >= h.min_share && value >= reference {
                            Verdict::Active {
                                value,
                                reference,
                                detail: if mode == Mode::OneShot {
                                    format!(
                                        "{:.1}% of the CPU samples (no baseline in a one-off run: compared with 0, margin {:.0} points)",
                                        value * 100.0,
                                        h.margin * 100.0
                                    )
                                } else {
                                    format!(
                                        "{:.1}% of the CPU samples against a median of {:.1}% over {} windows (margin {:.0} points)",
                                        value * 100.0,
                                        median * 100.0,
                                        history.len(),
                                        h.margin * 100.0
                                    )
                                },
                            }
                        } else if value < median + h.margin / 2.0 || value < h.min_share * 0.8 {
                            Verdict::Clear { value, reference }
                        } else {
                            Verdict::Hold { value, reference }
                        }
                    }
                };
                if mode == Mode::Continuous && !alert_active && !verdict.is_active() {
                    history.push(t, value);
                }
                verdict
            }
        }
    }

    /// The alert's one-line summary.
    pub fn summarize(&self, labels: &Labels, value: f64, reference: f64) -> String {
        let unit = self.signal.unit();
        if let Some(template) = &self.summary {
            let mut s = template
                .replace("{value}", &unit.format(value))
                .replace("{reference}", &unit.format(reference));
            for (k, v) in labels {
                s = s.replace(&format!("{{{k}}}"), v);
            }
            return s;
        }
        let subject = subject(self.signal, labels);
        match &self.kind {
            RuleKind::Threshold(t) => format!(
                "{} of {subject} is {} ({} {})",
                self.signal.describe(),
                unit.format(value),
                match t.direction {
                    Direction::Above => "above",
                    Direction::Below => "below",
                },
                unit.format(reference)
            ),
            RuleKind::Rate(_) => format!(
                "{} of {subject} grow by {} (limit {})",
                self.signal.describe(),
                unit.format_per_minute(value),
                unit.format_per_minute(reference)
            ),
            RuleKind::Baseline(_) => format!(
                "{} of {subject} is {}, above its learned baseline (bound {})",
                self.signal.describe(),
                unit.format(value),
                unit.format(reference)
            ),
            RuleKind::Hotspot(_) => format!(
                "{subject} takes {} of the CPU samples (level {})",
                unit.format(value),
                unit.format(reference)
            ),
        }
    }
}

fn judge_threshold(th: &Threshold, value: f64) -> Verdict {
    let (bad, fine) = match th.direction {
        Direction::Above => (value > th.value, value < th.clear),
        Direction::Below => (value < th.value, value > th.clear),
    };
    if bad {
        Verdict::Active {
            value,
            reference: th.value,
            detail: String::new(),
        }
    } else if fine {
        Verdict::Clear {
            value,
            reference: th.value,
        }
    } else {
        Verdict::Hold {
            value,
            reference: th.value,
        }
    }
}

/// What a series is about, in words: `loop3 (write)`, `peer 10.0.0.2`.
pub fn subject(signal: Signal, labels: &Labels) -> String {
    let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("?");
    match signal {
        Signal::BlockLatencyP99 | Signal::BlockLatencyP50 | Signal::BlockLatencyMean => {
            format!("{} ({})", get("device"), get("op"))
        }
        Signal::TcpRttP99 | Signal::TcpRttP50 | Signal::TcpRetransmitsPerSecond => {
            match (labels.get("peer"), labels.get("port")) {
                (Some(peer), _) => format!("peer {peer}"),
                (None, Some(port)) => format!("{} port {port}", get("side")),
                (None, None) => "TCP".into(),
            }
        }
        Signal::LeakOutstandingBytes => format!(
            "{} (pid {}) stack {} via {}",
            get("process"),
            get("pid"),
            get("stack"),
            get("function")
        ),
        Signal::LeakOutstandingAllocations => format!("{} (traced processes)", get("process")),
        Signal::CpuSelfRatio => format!(
            "{} in {} ({})",
            get("function"),
            get("process"),
            get("module")
        ),
        Signal::OffCpuSeconds => format!(
            "{} in {} ({}), {}",
            get("function"),
            get("process"),
            get("module"),
            get("state")
        ),
    }
}

/// The built-in rules (`alerts.default_rules = true`). Thresholds are set
/// for trouble a user would notice, not for tuning opportunities; the
/// reasoning for each is in docs/alerts.md.
pub fn defaults() -> Vec<Rule> {
    let disk_ops = Matchers(
        [("op".to_string(), "read|write".to_string())]
            .into_iter()
            .collect(),
    );
    vec![
        Rule {
            name: "DiskLatencyHigh".into(),
            kind: RuleKind::Threshold(Threshold {
                direction: Direction::Above,
                value: 0.100,
                clear: 0.050,
            }),
            signal: Signal::BlockLatencyP99,
            matchers: disk_ops.clone(),
            severity: Severity::Warning,
            for_: Duration::from_secs(60),
            min_count: 20,
            summary: None,
        },
        Rule {
            name: "DiskLatencyAnomaly".into(),
            kind: RuleKind::Baseline(BaselineRule {
                window: Duration::from_secs(3600),
                k: 6.0,
                min_delta: 0.010,
                min_ratio: 3.0,
                min_history: 12,
            }),
            signal: Signal::BlockLatencyP99,
            matchers: disk_ops,
            severity: Severity::Warning,
            for_: Duration::from_secs(60),
            min_count: 20,
            summary: None,
        },
        Rule {
            name: "TcpRttAnomaly".into(),
            kind: RuleKind::Baseline(BaselineRule {
                window: Duration::from_secs(3600),
                k: 6.0,
                min_delta: 0.020,
                min_ratio: 3.0,
                min_history: 12,
            }),
            signal: Signal::TcpRttP99,
            matchers: Matchers::default(),
            severity: Severity::Warning,
            for_: Duration::from_secs(30),
            min_count: 50,
            summary: None,
        },
        Rule {
            name: "TcpRetransmitsHigh".into(),
            kind: RuleKind::Threshold(Threshold {
                direction: Direction::Above,
                value: 5.0,
                clear: 1.0,
            }),
            signal: Signal::TcpRetransmitsPerSecond,
            matchers: Matchers::default(),
            severity: Severity::Warning,
            for_: Duration::from_secs(60),
            min_count: 0,
            summary: None,
        },
        Rule {
            name: "MemoryLeak".into(),
            kind: RuleKind::Rate(Rate {
                per_minute: 1024.0 * 1024.0,
                window: Duration::from_secs(600),
                min_points: 6,
            }),
            signal: Signal::LeakOutstandingBytes,
            matchers: Matchers::default(),
            severity: Severity::Warning,
            for_: Duration::from_secs(120),
            min_count: 0,
            summary: None,
        },
        Rule {
            name: "AllocationsGrowing".into(),
            kind: RuleKind::Rate(Rate {
                per_minute: 60.0,
                window: Duration::from_secs(900),
                min_points: 10,
            }),
            signal: Signal::LeakOutstandingAllocations,
            matchers: Matchers::default(),
            severity: Severity::Warning,
            for_: Duration::from_secs(600),
            min_count: 0,
            summary: None,
        },
        Rule {
            name: "CpuHotspot".into(),
            kind: RuleKind::Hotspot(HotspotRule {
                margin: 0.20,
                min_share: 0.25,
                window: Duration::from_secs(3600),
                min_history: 6,
            }),
            signal: Signal::CpuSelfRatio,
            matchers: Matchers::default(),
            severity: Severity::Info,
            for_: Duration::ZERO,
            min_count: 200,
            summary: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::signals::labels;
    use proptest::prelude::*;

    fn rule(kind: RuleKind, signal: Signal) -> Rule {
        Rule {
            name: "R".into(),
            kind,
            signal,
            matchers: Matchers::default(),
            severity: Severity::Warning,
            for_: Duration::ZERO,
            min_count: 0,
            summary: None,
        }
    }

    fn threshold(value: f64, clear: f64) -> Rule {
        rule(
            RuleKind::Threshold(Threshold {
                direction: Direction::Above,
                value,
                clear,
            }),
            Signal::BlockLatencyP99,
        )
    }

    fn baseline() -> Rule {
        rule(
            RuleKind::Baseline(BaselineRule {
                window: Duration::from_secs(1000),
                k: 5.0,
                min_delta: 0.005,
                min_ratio: 2.0,
                min_history: 5,
            }),
            Signal::TcpRttP99,
        )
    }

    #[test]
    fn matchers_take_alternatives() {
        let m = Matchers(labels([("op", "read|write"), ("device", "vda")]));
        assert!(m.matches(&labels([("op", "write"), ("device", "vda")])));
        assert!(!m.matches(&labels([("op", "flush"), ("device", "vda")])));
        assert!(!m.matches(&labels([("op", "read")])));
        assert!(Matchers::default().matches(&Labels::new()));
    }

    #[test]
    fn threshold_has_a_hysteresis_band() {
        let r = threshold(0.1, 0.05);
        let mut h = Series::new(0.0);
        assert!(
            r.judge(&mut h, 0.0, 0.2, false, Mode::Continuous)
                .is_active()
        );
        assert!(matches!(
            r.judge(&mut h, 1.0, 0.07, true, Mode::Continuous),
            Verdict::Hold { .. }
        ));
        assert!(matches!(
            r.judge(&mut h, 2.0, 0.04, true, Mode::Continuous),
            Verdict::Clear { .. }
        ));
        let below = rule(
            RuleKind::Threshold(Threshold {
                direction: Direction::Below,
                value: 10.0,
                clear: 20.0,
            }),
            Signal::TcpRttP50,
        );
        assert!(
            below
                .judge(&mut h, 0.0, 5.0, false, Mode::Continuous)
                .is_active()
        );
        assert!(matches!(
            below.judge(&mut h, 0.0, 25.0, false, Mode::Continuous),
            Verdict::Clear { .. }
        ));
    }

    #[test]
    fn baseline_learns_then_detects_and_does_not_learn_the_anomaly() {
        let r = baseline();
        let mut h = Series::new(1000.0);
        for t in 0..5 {
            let v = r.judge(&mut h, t as f64, 0.001, false, Mode::Continuous);
            assert!(matches!(v, Verdict::Learning { .. }), "{v:?}");
        }
        assert!(matches!(
            r.judge(&mut h, 5.0, 0.0011, false, Mode::Continuous),
            Verdict::Clear { .. }
        ));
        // 1 ms normal: the absolute floor (5 ms) decides the bound.
        let v = r.judge(&mut h, 6.0, 0.050, false, Mode::Continuous);
        assert!(v.is_active(), "{v:?}");
        let before = h.len();
        for t in 7..40 {
            assert!(
                r.judge(&mut h, t as f64, 0.050, true, Mode::Continuous)
                    .is_active()
            );
        }
        assert_eq!(h.len(), before, "an active alert's values are not learned");
        assert!(matches!(
            r.judge(&mut h, 41.0, 0.0012, true, Mode::Continuous),
            Verdict::Clear { .. }
        ));
    }

    #[test]
    fn baseline_in_one_shot_only_says_it_needs_history() {
        let r = baseline();
        let mut h = Series::new(1000.0);
        assert!(matches!(
            r.judge(&mut h, 0.0, 5.0, false, Mode::OneShot),
            Verdict::Learning { have: 0, need: 5 }
        ));
    }

    #[test]
    fn rate_fires_on_growth_not_on_a_steady_level() {
        let r = rule(
            RuleKind::Rate(Rate {
                per_minute: 1_000.0,
                window: Duration::from_secs(300),
                min_points: 4,
            }),
            Signal::LeakOutstandingBytes,
        );
        let mut growing = Series::new(300.0);
        let mut steady = Series::new(300.0);
        let mut last = (
            Verdict::Learning { have: 0, need: 0 },
            Verdict::Learning { have: 0, need: 0 },
        );
        for i in 0..10 {
            let t = i as f64 * 10.0;
            // 50 bytes per 10 s = 300 per minute: below. Then 5000 per 10 s.
            let jitter = if i % 2 == 0 { 4_000.0 } else { -4_000.0 };
            last = (
                r.judge(&mut growing, t, 1e6 + 500.0 * t, false, Mode::Continuous),
                r.judge(&mut steady, t, 1e6 + jitter, false, Mode::Continuous),
            );
        }
        let Verdict::Active { value, .. } = last.0 else {
            panic!("{:?}", last.0)
        };
        assert!((value - 30_000.0).abs() < 1e-6, "{value}");
        assert!(matches!(last.1, Verdict::Clear { .. }), "{:?}", last.1);
    }

    #[test]
    fn hotspot_compares_with_its_own_median() {
        let r = rule(
            RuleKind::Hotspot(HotspotRule {
                margin: 0.2,
                min_share: 0.25,
                window: Duration::from_secs(1000),
                min_history: 3,
            }),
            Signal::CpuSelfRatio,
        );
        let mut h = Series::new(1000.0);
        for t in 0..3 {
            r.judge(&mut h, t as f64, 0.30, false, Mode::Continuous);
        }
        // Always at 30%: 45% is only 15 points up.
        assert!(
            !r.judge(&mut h, 4.0, 0.45, false, Mode::Continuous)
                .is_active()
        );
        assert!(
            r.judge(&mut h, 5.0, 0.60, false, Mode::Continuous)
                .is_active()
        );
        // One-shot: against 0; but still at least min_share.
        let mut fresh = Series::new(1000.0);
        assert!(
            r.judge(&mut fresh, 0.0, 0.30, false, Mode::OneShot)
                .is_active()
        );
        assert!(
            !r.judge(&mut fresh, 0.0, 0.22, false, Mode::OneShot)
                .is_active()
        );
        assert!(fresh.is_empty(), "one-shot runs learn nothing");
    }

    #[test]
    fn summaries_name_the_series() {
        let r = threshold(0.1, 0.05);
        let l = labels([("device", "loop3"), ("op", "write")]);
        assert_eq!(
            r.summarize(&l, 0.25, 0.1),
            "p99 block I/O latency of loop3 (write) is 250 ms (above 100 ms)"
        );
        let mut custom = r.clone();
        custom.summary = Some("{device} slow: {value} > {reference}".into());
        assert_eq!(
            custom.summarize(&l, 0.25, 0.1),
            "loop3 slow: 250 ms > 100 ms"
        );
    }

    #[test]
    fn defaults_have_unique_names_and_valid_matchers() {
        let d = defaults();
        let mut names: Vec<&str> = d.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), d.len());
        for r in &d {
            for k in r.matchers.0.keys() {
                assert!(
                    r.signal.label_names().contains(&k.as_str()),
                    "{}: {k}",
                    r.name
                );
            }
        }
    }

    proptest! {
        #[test]
        fn threshold_verdicts_partition_the_line(
            value in 0.0f64..1.0,
            clear_frac in 0.1f64..1.0,
            x in 0.0f64..2.0,
        ) {
            let r = threshold(value, value * clear_frac);
            let v = r.judge(&mut Series::new(0.0), 0.0, x, false, Mode::Continuous);
            match v {
                Verdict::Active { .. } => prop_assert!(x > value),
                Verdict::Clear { .. } => prop_assert!(x < value * clear_frac),
                Verdict::Hold { .. } => prop_assert!(x <= value && x >= value * clear_frac),
                Verdict::Learning { .. } => prop_assert!(false),
            }
        }

        #[test]
        fn baseline_never_fires_on_values_like_its_history(
            history in prop::collection::vec(0.0005f64..0.002, 12..80),
            pick in any::<prop::sample::Index>(),
        ) {
            // Whatever the noise, a value drawn from the same range as the
            // history stays under the bound: the relative floor (2x the
            // median, which is at least 0.5 ms) and 5 ms absolute cover it.
            let r = baseline();
            let mut h = Series::new(1e9);
            for (i, v) in history.iter().enumerate() {
                r.judge(&mut h, i as f64, *v, false, Mode::Continuous);
            }
            let x = history[pick.index(history.len())];
            prop_assert!(!r.judge(&mut h, 1e6, x, false, Mode::Continuous).is_active());
        }
    }
}
