//! `latency --format table`: biolatency-style histograms with a summary line
//! (count, mean, p50/p90/p99, max) above each.

use std::io::{self, Write};

use super::{BlockReport, HistReport, LatencyReport};

/// Writes the whole report.
pub fn write(report: &LatencyReport, w: &mut dyn Write) -> io::Result<()> {
    if let Some(block) = &report.block {
        write_block(block, report.duration_secs, w)?;
    }
    Ok(())
}

fn write_block(block: &BlockReport, secs: f64, w: &mut dyn Write) -> io::Result<()> {
    if block.series.is_empty() {
        writeln!(
            w,
            "Block I/O: no request completed in {secs:.1} s on the traced devices."
        )?;
    }
    for s in &block.series {
        writeln!(
            w,
            "Block I/O latency, device {} ({}), {}: {}",
            s.device,
            s.dev,
            s.op,
            summary(&s.latency, "I/Os", fmt_micros)
        )?;
        s.latency.hist.write_text("usecs", w)?;
        if let Some(q) = &s.queued {
            writeln!(
                w,
                "  queued before issue: {}",
                summary(q, "I/Os", fmt_micros)
            )?;
        }
        writeln!(w, "  sizes: {}", size_summary(&s.size))?;
        writeln!(w)?;
    }
    let c = &block.counters;
    let notes: Vec<String> = [
        (
            c.unmatched_completions,
            "completions of requests issued before tracing began (not timed)",
        ),
        (c.inflight_map_full, "issues not timed: in-flight map full"),
        (c.histogram_map_full, "completions lost: histogram map full"),
        (c.read_errors, "tracepoint fields unreadable"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if !notes.is_empty() {
        writeln!(w, "Not timed: {}.", notes.join("; "))?;
    }
    Ok(())
}

/// `1234 I/Os, mean 1.20 ms, p50 1.02 ms, p90 …, p99 …, max …`
fn summary(h: &HistReport, what: &str, fmt: fn(f64) -> String) -> String {
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), fmt);
    format!(
        "{} {what}, mean {}, p50 {}, p90 {}, p99 {}, max {}",
        h.count,
        opt(h.mean),
        opt(h.p50),
        opt(h.p90),
        opt(h.p99),
        fmt(h.max)
    )
}

/// Sizes are mostly exact powers of two, which the interpolated percentiles
/// would blur; the exact mean and max and the most common range read better.
fn size_summary(h: &HistReport) -> String {
    let common = h
        .buckets
        .iter()
        .enumerate()
        .max_by_key(|(i, b)| (b.count, std::cmp::Reverse(*i)))
        .map(|(_, b)| {
            format!(
                ", most common [{}, {}): {} I/Os",
                fmt_kib(b.low as f64),
                fmt_kib(b.high as f64 + 1.0),
                b.count
            )
        })
        .unwrap_or_default();
    format!(
        "mean {}, max {}{common}",
        h.mean.map_or_else(|| "-".to_string(), fmt_kib),
        fmt_kib(h.max)
    )
}

/// Microseconds with three significant digits and a readable unit.
pub fn fmt_micros(us: f64) -> String {
    if us < 1_000.0 {
        format!("{} us", sig3(us))
    } else if us < 1_000_000.0 {
        format!("{} ms", sig3(us / 1_000.0))
    } else {
        format!("{} s", sig3(us / 1_000_000.0))
    }
}

/// KiB with three significant digits, in KiB or MiB.
pub fn fmt_kib(kib: f64) -> String {
    if kib < 1_024.0 {
        format!("{} KiB", sig3(kib))
    } else {
        format!("{} MiB", sig3(kib / 1_024.0))
    }
}

fn sig3(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_units() {
        assert_eq!(fmt_micros(0.5), "0.50 us");
        assert_eq!(fmt_micros(812.4), "812 us");
        assert_eq!(fmt_micros(1_234.0), "1.23 ms");
        assert_eq!(fmt_micros(45_600.0), "45.6 ms");
        assert_eq!(fmt_micros(2_500_000.0), "2.50 s");
        assert_eq!(fmt_kib(4.0), "4.00 KiB");
        assert_eq!(fmt_kib(2_048.0), "2.00 MiB");
    }
}
