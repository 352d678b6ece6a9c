//! The metrics model every source fills in, and its two encodings.
//!
//! Sources return plain [`Family`] values instead of writing to
//! prometheus-client's encoder directly: a source reads the kernel maps
//! first and only then encodes, so a failed read leaves no half-written
//! family, and the values are easy to check in unit tests.
//!
//! prometheus-client writes OpenMetrics text, which Prometheus asks for when
//! scraping. `promtool check metrics`, curl users and older tools read the
//! classic Prometheus text format (0.0.4) instead, which differs only in how
//! a counter family is named (`foo_total` in `# TYPE`), and has no `# UNIT`
//! or `# EOF` lines: [`to_prometheus_text`] converts.

use std::{borrow::Cow, fmt::Write as _};

use prometheus_client::{
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::{MetricType, exemplar::Exemplar},
    registry::Unit,
};

/// What kind of metric a family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Any value.
    Gauge,
    /// Cumulative buckets, sum and count.
    Histogram,
}

/// A histogram's value.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramValue {
    /// Sum of the observations, base units.
    pub sum: f64,
    /// Per-bucket (not cumulative) counts with each bucket's upper bound,
    /// ascending; the `+Inf` bucket is added when encoding.
    pub buckets: Vec<(f64, u64)>,
}

impl HistogramValue {
    /// Number of observations: the sum of the buckets, so that the `+Inf`
    /// bucket always equals `_count` even when the kernel's per-CPU copies
    /// were read while being updated.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }
}

/// One sample's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A counter's or gauge's value.
    Number(f64),
    /// A histogram.
    Histogram(HistogramValue),
}

/// `perf_user_lost_events_total` for one collector: one series per reason,
/// zeros included, so a rate() over it never starts from a missing series.
pub fn lost_events(collector: &'static str, reasons: &[(&'static str, u64)]) -> Family {
    let mut lost = Family::new(
        "perf_user_lost_events_total",
        Kind::Counter,
        "Events a collector could not record, by reason (full maps, stack-map collisions, dropped notices, ...).",
    );
    for &(reason, n) in reasons {
        lost.push(
            vec![("collector", collector.into()), ("reason", reason.into())],
            n as f64,
        );
    }
    lost
}

/// One labelled sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Label names and values.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: Value,
}

/// A metric family: one name, one help text, any number of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// Full name as scraped (`_total` included for counters).
    pub name: &'static str,
    /// One line saying what it measures.
    pub help: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// The samples.
    pub samples: Vec<Sample>,
}

impl Family {
    /// An empty family.
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        debug_assert_eq!(
            kind == Kind::Counter,
            name.ends_with("_total"),
            "{name}: counters, and only counters, end in _total"
        );
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a number.
    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) -> &mut Self {
        self.samples.push(Sample {
            labels,
            value: Value::Number(value),
        });
        self
    }

    /// Adds a histogram.
    pub fn push_histogram(
        &mut self,
        labels: Vec<(&'static str, String)>,
        value: HistogramValue,
    ) -> &mut Self {
        self.samples.push(Sample {
            labels,
            value: Value::Histogram(value),
        });
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(name: &'static str, kind: Kind, help: &'static str, value: f64) -> Self {
        let mut f = Self::new(name, kind, help);
        f.push(Vec::new(), value);
        f
    }

    /// The unit prometheus-client should declare, and the name without it
    /// (prometheus-client appends `_<unit>` itself).
    fn name_and_unit(&self) -> (&'static str, Option<Unit>) {
        let base = self.name.strip_suffix("_total").unwrap_or(self.name);
        for (suffix, unit) in [("_seconds", Unit::Seconds), ("_bytes", Unit::Bytes)] {
            if let Some(stem) = base.strip_suffix(suffix) {
                return (stem, Some(unit));
            }
        }
        (base, None)
    }

    /// Writes the family through prometheus-client's encoder.
    pub fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (name, unit) = self.name_and_unit();
        let metric_type = match self.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        let mut metric = encoder.encode_descriptor(name, self.help, unit.as_ref(), metric_type)?;
        for sample in &self.samples {
            if sample.labels.is_empty() {
                // No `{}` after the name: encode on the family's own encoder.
                encode_value(&mut metric, &sample.value, self.kind)?;
                continue;
            }
            let labels: Vec<(&str, Cow<str>)> = sample
                .labels
                .iter()
                .map(|(k, v)| (*k, Cow::Borrowed(v.as_str())))
                .collect();
            encode_value(
                &mut metric.encode_family(&labels)?,
                &sample.value,
                self.kind,
            )?;
        }
        Ok(())
    }
}

fn encode_value(m: &mut MetricEncoder, value: &Value, kind: Kind) -> Result<(), std::fmt::Error> {
    match (value, kind) {
        (Value::Number(v), Kind::Counter) => m.encode_counter::<NoLabelSet, f64, f64>(v, None),
        (Value::Number(v), _) => m.encode_gauge(v),
        (Value::Histogram(h), _) => {
            let mut buckets = h.buckets.clone();
            buckets.push((f64::INFINITY, 0));
            m.encode_histogram::<NoLabelSet>(
                h.sum,
                h.count(),
                &buckets,
                None::<&std::collections::HashMap<usize, Exemplar<NoLabelSet, f64>>>,
            )
        }
    }
}

/// Content type of [`to_prometheus_text`]'s output.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of prometheus-client's output.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Converts OpenMetrics text as prometheus-client writes it (counters,
/// gauges, histograms; no info or state sets) to the Prometheus text format.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // Counter families whose HELP line was seen but TYPE not yet: OpenMetrics
    // writes HELP before TYPE, so a HELP line is held back until the TYPE
    // line tells whether the family is a counter.
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(h) = pending_help.take() {
                let _ = writeln!(out, "# HELP {h}");
            }
            pending_help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, ""));
            let renamed = if kind == "counter" {
                Cow::Owned(format!("{name}_total"))
            } else {
                Cow::Borrowed(name)
            };
            if let Some(h) = pending_help.take() {
                let text = h.strip_prefix(name).unwrap_or(h);
                let _ = writeln!(out, "# HELP {renamed}{text}");
            }
            let _ = writeln!(out, "# TYPE {renamed} {kind}");
            continue;
        }
        if let Some(h) = pending_help.take() {
            let _ = writeln!(out, "# HELP {h}");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Bucket upper bounds of a kernel log2 histogram in base units: slot `k`
/// holds scaled values in `[2^k, 2^(k+1))` (slot 0 also 0), so every value
/// in it is below `2^(k+1) * unit`, and the cumulative count up to slot `k`
/// is exactly the count of values `<= 2^(k+1) * unit / scale`.
pub fn log2_upper_bounds(slots: usize, unit: u64, scale: f64) -> impl Iterator<Item = f64> {
    (0..slots).map(move |k| {
        let bound = 2f64.powi(k as i32 + 1) * unit as f64;
        bound / scale
    })
}

/// Encodes families with prometheus-client and returns OpenMetrics text.
pub fn encode_openmetrics(families: &[Family]) -> Result<String, std::fmt::Error> {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Frozen(families.to_vec())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// Families already read, handed to prometheus-client as a collector.
#[derive(Debug)]
struct Frozen(Vec<Family>);

impl prometheus_client::collector::Collector for Frozen {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_families() -> Vec<Family> {
        let mut c = Family::new("perf_user_test_events_total", Kind::Counter, "Events seen.");
        c.push(vec![("collector", "cpu".into())], 3.0);
        let mut h = Family::new(
            "perf_user_test_latency_seconds",
            Kind::Histogram,
            "Latency.",
        );
        h.push_histogram(
            vec![("device", "vda".into())],
            HistogramValue {
                sum: 0.5,
                buckets: vec![(0.001, 2), (0.002, 1)],
            },
        );
        vec![
            c,
            h,
            Family::single("perf_user_test_ratio", Kind::Gauge, "A ratio.", 0.25),
        ]
    }

    #[test]
    fn openmetrics_has_units_and_eof() {
        let om = encode_openmetrics(&sample_families()).unwrap();
        assert!(
            om.contains("# TYPE perf_user_test_events counter\n"),
            "{om}"
        );
        assert!(
            om.contains("perf_user_test_events_total{collector=\"cpu\"} 3"),
            "{om}"
        );
        assert!(
            om.contains("# UNIT perf_user_test_latency_seconds seconds\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn prometheus_text_renames_counters_and_drops_openmetrics_lines() {
        let text = to_prometheus_text(&encode_openmetrics(&sample_families()).unwrap());
        assert!(
            text.contains("# HELP perf_user_test_events_total Events seen.\n# TYPE perf_user_test_events_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# UNIT"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("perf_user_test_latency_seconds_bucket{le=\"0.002\",device=\"vda\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("perf_user_test_latency_seconds_bucket{le=\"+Inf\",device=\"vda\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("perf_user_test_latency_seconds_count{device=\"vda\"} 3"),
            "{text}"
        );
        assert!(text.contains("\nperf_user_test_ratio 0.25\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut g = Family::new("perf_user_test_gauge", Kind::Gauge, "G.");
        g.push(vec![("function", "a\"b\\c\nd".into())], 1.0);
        let om = encode_openmetrics(&[g]).unwrap();
        assert!(om.contains(r#"function="a\"b\\c\nd""#), "{om}");
    }

    #[test]
    fn log2_bounds_are_slot_upper_edges() {
        // Latency slots in microseconds, exported in seconds.
        let b: Vec<f64> = log2_upper_bounds(3, 1_000, 1e9).collect();
        assert_eq!(b, vec![2e-6, 4e-6, 8e-6]);
    }
}
