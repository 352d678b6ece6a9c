//! `[alerts]` in the daemon's TOML configuration: evaluation, the built-in
//! rules and your own (`[[alerts.rules]]`), the Alertmanager webhook, and
//! where applied actions are recorded.
//!
//! Every rule is checked while it is deserialized (unknown keys, keys that
//! do not belong to the rule's kind, unknown signals or labels, values out
//! of range), so the error carries the file's line like every other
//! configuration error; [`AlertsConfig::validate`] checks what spans rules.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de};

use super::{
    actions::DEFAULT_STATE_FILE,
    rules::{
        self, BaselineRule, Direction, HotspotRule, Matchers, Rate, Rule, RuleKind, Severity,
        Threshold,
    },
    signals::Signal,
};
use crate::duration;

/// `[alerts]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Evaluate rules in the daemon.
    pub enabled: bool,
    /// How often the rules are evaluated (and the block and TCP windows' length).
    #[serde(deserialize_with = "interval")]
    pub evaluation_interval: Duration,
    /// Include the built-in rules (see docs/alerts.md).
    pub default_rules: bool,
    /// Built-in rules to leave out, by name.
    pub disable: Vec<String>,
    /// Your rules; one named like a built-in rule replaces it.
    pub rules: Vec<RuleConfig>,
    /// `[alerts.webhook]`: Alertmanager.
    pub webhook: WebhookConfig,
    /// Where `advise --apply` records previous values, for `revert`.
    pub state_file: PathBuf,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            evaluation_interval: Duration::from_secs(10),
            default_rules: true,
            disable: Vec::new(),
            rules: Vec::new(),
            webhook: WebhookConfig::default(),
            state_file: PathBuf::from(DEFAULT_STATE_FILE),
        }
    }
}

/// `[alerts.webhook]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Alertmanager base URLs (`http://127.0.0.1:9093`); `/api/v2/alerts`
    /// is appended. Empty: no webhook.
    #[serde(deserialize_with = "urls")]
    pub urls: Vec<String>,
    /// Per request.
    #[serde(deserialize_with = "interval")]
    pub timeout: Duration,
    /// Firing alerts are re-sent this often (Alertmanager forgets an alert
    /// whose `endsAt`, four intervals ahead, passes).
    #[serde(deserialize_with = "interval")]
    pub resend_interval: Duration,
    /// The `instance` label; default: the host name.
    pub instance: Option<String>,
    /// Labels added to every alert (e.g. `cluster = "eu1"`).
    pub labels: BTreeMap<String, String>,
    /// `generatorURL`; default: the daemon's own address.
    pub generator_url: Option<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            timeout: Duration::from_secs(10),
            resend_interval: Duration::from_secs(60),
            instance: None,
            labels: BTreeMap::new(),
            generator_url: None,
        }
    }
}

/// Why the alerts configuration was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AlertsConfigError(pub String);

impl AlertsConfig {
    /// Checks what no single rule can: unique names, known names in `disable`.
    pub fn validate(&self) -> Result<(), AlertsConfigError> {
        let defaults = rules::defaults();
        for name in &self.disable {
            if !defaults.iter().any(|r| &r.name == name) {
                return Err(AlertsConfigError(format!(
                    "alerts.disable: {name:?} is not a built-in rule; they are: {}",
                    names(&defaults)
                )));
            }
        }
        let mut seen = Vec::new();
        for r in &self.rules {
            if seen.contains(&&r.0.name) {
                return Err(AlertsConfigError(format!(
                    "alerts.rules: two rules are named {:?}; names must be unique (they become the alertname label)",
                    r.0.name
                )));
            }
            seen.push(&r.0.name);
        }
        for k in self.webhook.labels.keys() {
            if !valid_label_name(k) || matches!(k.as_str(), "alertname" | "severity") {
                return Err(AlertsConfigError(format!(
                    "alerts.webhook.labels: {k:?} is not usable as a label name (letters, digits and _, not starting with a digit; not alertname or severity)"
                )));
            }
        }
        if self.webhook.resend_interval < self.evaluation_interval {
            return Err(AlertsConfigError(format!(
                "alerts.webhook.resend_interval ({} s) is shorter than alerts.evaluation_interval ({} s); alerts are only sent after an evaluation",
                self.webhook.resend_interval.as_secs_f64(),
                self.evaluation_interval.as_secs_f64()
            )));
        }
        Ok(())
    }

    /// The rules in force: the built-in ones (unless disabled or replaced by
    /// one of yours of the same name), then yours.
    pub fn rules(&self) -> Vec<Rule> {
        let mut out: Vec<Rule> = if self.default_rules {
            rules::defaults()
                .into_iter()
                .filter(|d| !self.disable.contains(&d.name))
                .filter(|d| !self.rules.iter().any(|r| r.0.name == d.name))
                .collect()
        } else {
            Vec::new()
        };
        out.extend(self.rules.iter().map(|r| r.0.clone()));
        out
    }
}

fn names(rules: &[Rule]) -> String {
    rules
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn valid_label_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One `[[alerts.rules]]` entry, validated.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct RuleConfig(pub Rule);

/// A rule as written: every key any kind takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    kind: String,
    signal: String,
    #[serde(rename = "match", default)]
    matchers: BTreeMap<String, String>,
    severity: Option<String>,
    #[serde(rename = "for")]
    for_: Option<String>,
    min_count: Option<u64>,
    summary: Option<String>,
    above: Option<f64>,
    below: Option<f64>,
    clear: Option<f64>,
    per_minute: Option<f64>,
    window: Option<String>,
    min_points: Option<usize>,
    k: Option<f64>,
    min_delta: Option<f64>,
    min_ratio: Option<f64>,
    min_history: Option<usize>,
    margin: Option<f64>,
    min_share: Option<f64>,
}

/// Keys each kind takes besides the common ones.
const KIND_KEYS: &[(&str, &[&str])] = &[
    ("threshold", &["above", "below", "clear"]),
    ("rate", &["per_minute", "window", "min_points"]),
    (
        "baseline",
        &["window", "k", "min_delta", "min_ratio", "min_history"],
    ),
    ("hotspot", &["margin", "min_share", "window", "min_history"]),
];

impl TryFrom<RawRule> for RuleConfig {
    type Error = String;

    fn try_from(r: RawRule) -> Result<Self, String> {
        let name = r.name.clone();
        let err = |m: String| format!("rule {name:?}: {m}");
        if name.is_empty() || !valid_label_name(&name) {
            return Err(err(
                "the name must be letters, digits and _ (it becomes the alertname label)".into(),
            ));
        }
        let allowed = KIND_KEYS
            .iter()
            .find(|(k, _)| *k == r.kind)
            .map(|(_, keys)| *keys)
            .ok_or_else(|| {
                err(format!(
                    "unknown kind {:?}; the kinds are threshold, rate, baseline, hotspot",
                    r.kind
                ))
            })?;
        let given: [(&str, bool); 12] = [
            ("above", r.above.is_some()),
            ("below", r.below.is_some()),
            ("clear", r.clear.is_some()),
            ("per_minute", r.per_minute.is_some()),
            ("window", r.window.is_some()),
            ("min_points", r.min_points.is_some()),
            ("k", r.k.is_some()),
            ("min_delta", r.min_delta.is_some()),
            ("min_ratio", r.min_ratio.is_some()),
            ("min_history", r.min_history.is_some()),
            ("margin", r.margin.is_some()),
            ("min_share", r.min_share.is_some()),
        ];
        if let Some((key, _)) = given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
            return Err(err(format!(
                "`{key}` does not apply to kind {:?} (it takes: {})",
                r.kind,
                allowed.join(", ")
            )));
        }
        let signal = Signal::from_name(&r.signal).ok_or_else(|| {
            err(format!(
                "unknown signal {:?}; the signals are: {}",
                r.signal,
                Signal::ALL.map(Signal::name).join(", ")
            ))
        })?;
        for k in r.matchers.keys() {
            if !signal.label_names().contains(&k.as_str()) {
                return Err(err(format!(
                    "match: {signal} has no label {k:?}; its labels are: {}",
                    signal.label_names().join(", ")
                )));
            }
        }
        let severity = match &r.severity {
            None => Severity::Warning,
            Some(s) => Severity::parse(s)
                .ok_or_else(|| err(format!("severity {s:?}: use info, warning or critical")))?,
        };
        let dur = |key: &str, v: &Option<String>, default: Duration, zero_ok: bool| match v {
            None => Ok(default),
            Some(s) if zero_ok && matches!(s.trim(), "0" | "0s") => Ok(Duration::ZERO),
            Some(s) => duration::parse(s).map_err(|e| err(format!("{key}: {e}"))),
        };
        let positive = |key: &str, v: Option<f64>, default: Option<f64>| -> Result<f64, String> {
            match v.or(default) {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                Some(x) => Err(err(format!("{key} must be a positive number, not {x}"))),
                None => Err(err(format!("kind {:?} needs `{key}`", r.kind))),
            }
        };
        let non_negative = |key: &str, v: Option<f64>, default: f64| -> Result<f64, String> {
            match v.unwrap_or(default) {
                x if x.is_finite() && x >= 0.0 => Ok(x),
                x => Err(err(format!("{key} must be 0 or more, not {x}"))),
            }
        };
        let share = |key: &str, v: Option<f64>, default: f64| -> Result<f64, String> {
            match v.unwrap_or(default) {
                x if x > 0.0 && x <= 1.0 => Ok(x),
                x => Err(err(format!(
                    "{key} is a share of the CPU samples, above 0 and at most 1 (0.2 = 20%), not {x}"
                ))),
            }
        };
        let window = dur("window", &r.window, Duration::from_secs(3600), false)?;
        let kind = match r.kind.as_str() {
            "threshold" => {
                let (direction, value) = match (r.above, r.below) {
                    (Some(v), None) => (Direction::Above, v),
                    (None, Some(v)) => (Direction::Below, v),
                    _ => {
                        return Err(err(
                            "a threshold takes exactly one of `above` and `below`".into()
                        ));
                    }
                };
                if !value.is_finite() {
                    return Err(err("the threshold must be a finite number".into()));
                }
                // Hysteresis: by default, clear 20% inside the threshold.
                let clear = match (r.clear, direction) {
                    (Some(c), _) => c,
                    (None, Direction::Above) => value * 0.8,
                    (None, Direction::Below) => value * 1.25,
                };
                let ok = match direction {
                    Direction::Above => clear <= value,
                    Direction::Below => clear >= value,
                };
                if !ok || !clear.is_finite() {
                    return Err(err(format!(
                        "clear ({clear}) must be on the good side of the threshold ({value}): {} it",
                        if direction == Direction::Above {
                            "at or below"
                        } else {
                            "at or above"
                        }
                    )));
                }
                RuleKind::Threshold(Threshold {
                    direction,
                    value,
                    clear,
                })
            }
            "rate" => RuleKind::Rate(Rate {
                per_minute: positive("per_minute", r.per_minute, None)?,
                window: dur("window", &r.window, Duration::from_secs(600), false)?,
                min_points: match r.min_points.unwrap_or(6) {
                    n @ 2..=720 => n,
                    n => return Err(err(format!("min_points must be from 2 to 720, not {n}"))),
                },
            }),
            "baseline" => RuleKind::Baseline(BaselineRule {
                window,
                k: positive("k", r.k, Some(6.0))?,
                min_delta: non_negative("min_delta", r.min_delta, 0.0)?,
                min_ratio: match r.min_ratio.unwrap_or(1.0) {
                    x if x.is_finite() && x >= 1.0 => x,
                    x => {
                        return Err(err(format!(
                            "min_ratio must be 1 or more (2 = at least double), not {x}"
                        )));
                    }
                },
                min_history: match r.min_history.unwrap_or(12) {
                    n @ 3..=720 => n,
                    n => return Err(err(format!("min_history must be from 3 to 720, not {n}"))),
                },
            }),
            _ => {
                if signal != Signal::CpuSelfRatio {
                    return Err(err(format!(
                        "kind \"hotspot\" watches cpu_self_ratio, not {signal}"
                    )));
                }
                RuleKind::Hotspot(HotspotRule {
                    margin: share("margin", r.margin, 0.2)?,
                    min_share: share("min_share", r.min_share, 0.25)?,
                    window,
                    min_history: match r.min_history.unwrap_or(6) {
                        n @ 1..=720 => n,
                        n => {
                            return Err(err(format!("min_history must be from 1 to 720, not {n}")));
                        }
                    },
                })
            }
        };
        if kind.history() > Duration::from_secs(7 * 86_400) {
            return Err(err("window must be at most 7 days".into()));
        }
        Ok(RuleConfig(Rule {
            name: r.name,
            kind,
            signal,
            matchers: Matchers(r.matchers),
            severity,
            for_: dur("for", &r.for_, Duration::ZERO, true)?,
            min_count: r.min_count.unwrap_or(0),
            summary: r.summary,
        }))
    }
}

/// A duration from 1 s to 1 h.
fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = duration::parse_str(d, "a duration such as \"10s\" or \"1m\"")?;
    let v = duration::parse(&s).map_err(de::Error::custom)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&v) {
        return Err(de::Error::custom(format!(
            "must be from 1s to 1h, not {s:?}"
        )));
    }
    Ok(v)
}

/// http(s) URLs.
fn urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for u in &list {
        match reqwest::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(de::Error::custom(format!(
                    "{u:?} is not an http(s) URL; write Alertmanager's address, e.g. \"http://127.0.0.1:9093\""
                )));
            }
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Wrap {
        alerts: AlertsConfig,
    }

    fn parse(text: &str) -> Result<AlertsConfig, String> {
        let w: Wrap = toml::from_str(text).map_err(|e| e.to_string())?;
        w.alerts.validate().map_err(|e| e.to_string())?;
        Ok(w.alerts)
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("should be refused")
    }

    #[test]
    fn empty_section_gives_the_defaults() {
        let c = parse("[alerts]\n").unwrap();
        assert_eq!(c, AlertsConfig::default());
        assert_eq!(c.rules(), rules::defaults());
    }

    #[test]
    fn every_kind_parses() {
        let c = parse(
            r#"
[alerts]
evaluation_interval = "5s"
disable = ["CpuHotspot"]

[alerts.webhook]
urls = ["http://127.0.0.1:9093"]
labels = { cluster = "eu1" }

[[alerts.rules]]
name = "SlowVda"
kind = "threshold"
signal = "block_latency_p99_seconds"
match = { device = "vda", op = "read|write" }
above = 0.02
for = "30s"
severity = "critical"
min_count = 10

[[alerts.rules]]
name = "Leak"
kind = "rate"
signal = "leak_outstanding_bytes"
per_minute = 1048576
window = "5m"

[[alerts.rules]]
name = "RttJump"
kind = "baseline"
signal = "tcp_rtt_p99_seconds"
k = 4
min_delta = 0.005
min_ratio = 2

[[alerts.rules]]
name = "Hot"
kind = "hotspot"
signal = "cpu_self_ratio"
margin = 0.1
match = { process = "postgres" }

[[alerts.rules]]
name = "DiskLatencyHigh"
kind = "threshold"
signal = "block_latency_p99_seconds"
above = 0.5
clear = 0.3
"#,
        )
        .unwrap();
        assert_eq!(c.evaluation_interval, Duration::from_secs(5));
        let rules = c.rules();
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "DiskLatencyAnomaly",
                "TcpRttAnomaly",
                "TcpRetransmitsHigh",
                "MemoryLeak",
                "AllocationsGrowing",
                "SlowVda",
                "Leak",
                "RttJump",
                "Hot",
                "DiskLatencyHigh"
            ]
        );
        let slow = &rules[5];
        assert_eq!(slow.for_, Duration::from_secs(30));
        assert_eq!(slow.severity, Severity::Critical);
        assert_eq!(
            slow.kind,
            RuleKind::Threshold(Threshold {
                direction: Direction::Above,
                value: 0.02,
                clear: 0.016
            })
        );
        assert!(
            matches!(&rules[7].kind, RuleKind::Baseline(b) if b.k == 4.0 && b.min_history == 12)
        );
        assert_eq!(c.webhook.labels["cluster"], "eu1");
    }

    #[test]
    fn mistakes_are_named() {
        let rule = |body: &str| {
            error(&format!(
                "[[alerts.rules]]\nname = \"R\"\nsignal = \"block_latency_p99_seconds\"\n{body}\n"
            ))
        };
        let e = rule("kind = \"threshold\"\nabove = 1\nk = 3");
        assert!(
            e.contains("`k` does not apply to kind \"threshold\""),
            "{e}"
        );
        let e = rule("kind = \"threshold\"");
        assert!(e.contains("exactly one of `above` and `below`"), "{e}");
        let e = rule("kind = \"threshold\"\nabove = 1\nclear = 2");
        assert!(e.contains("good side"), "{e}");
        let e = rule("kind = \"magic\"");
        assert!(e.contains("unknown kind \"magic\""), "{e}");
        let e = rule("kind = \"rate\"");
        assert!(e.contains("needs `per_minute`"), "{e}");
        let e = rule("kind = \"threshold\"\nabove = 1\nmatch = { peer = \"x\" }");
        assert!(
            e.contains("has no label \"peer\"; its labels are: device, op"),
            "{e}"
        );
        let e = rule("kind = \"threshold\"\nabove = 1\nfor = \"soon\"");
        assert!(e.contains("for: invalid duration"), "{e}");
        let e = rule("kind = \"threshold\"\nabove = 1\nseverity = \"page\"");
        assert!(e.contains("info, warning or critical"), "{e}");
        let e = rule("kind = \"hotspot\"");
        assert!(e.contains("watches cpu_self_ratio"), "{e}");
        let e = rule("kind = \"threshold\"\nabove = 1\nwhatever = 1");
        assert!(e.contains("unknown field `whatever`"), "{e}");
        let e = error(
            "[[alerts.rules]]\nname = \"R\"\nkind = \"threshold\"\nsignal = \"disk\"\nabove = 1\n",
        );
        assert!(e.contains("unknown signal \"disk\""), "{e}");
        assert!(e.contains("block_latency_p99_seconds"), "{e}");
        let e = error("[alerts]\ndisable = [\"DiskLatency\"]\n");
        assert!(e.contains("not a built-in rule"), "{e}");
        let e = error("[alerts.webhook]\nurls = [\"127.0.0.1:9093\"]\n");
        assert!(e.contains("not an http(s) URL"), "{e}");
        let e = error("[alerts]\nevaluation_interval = \"2h\"\n");
        assert!(e.contains("from 1s to 1h"), "{e}");
        let two = "[[alerts.rules]]\nname = \"A\"\nkind = \"threshold\"\nsignal = \"cpu_self_ratio\"\nabove = 0.5\n";
        let e = error(&format!("{two}{two}"));
        assert!(e.contains("two rules are named \"A\""), "{e}");
        let e = error("[alerts.webhook]\nlabels = { alertname = \"x\" }\n");
        assert!(e.contains("not usable as a label name"), "{e}");
    }

    #[test]
    fn errors_point_at_the_rule() {
        let text = "[alerts]\n\n[[alerts.rules]]\nname = \"R\"\nkind = \"threshold\"\nsignal = \"x\"\nabove = 1\n";
        let e = toml::from_str::<Wrap>(text).unwrap_err();
        let span = e.span().expect("a position");
        let line = text[..span.start].matches('\n').count() + 1;
        assert!((3..=7).contains(&line), "line {line}: {e}");
    }

    #[test]
    fn default_rules_can_be_turned_off() {
        let c = parse("[alerts]\ndefault_rules = false\n").unwrap();
        assert!(c.rules().is_empty());
    }
}
