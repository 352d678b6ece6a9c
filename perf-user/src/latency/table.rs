//! `latency --format table`: biolatency-style histograms with a summary line
//! (count, mean, p50/p90/p99, max) above each.

use std::io::{self, Write};

use super::{BlockReport, HistReport, LatencyReport, TcpPeerSeries, TcpReport, TcpSeriesSet};
use crate::collectors::tcp::PortSide;

/// Writes the whole report.
pub fn write(report: &LatencyReport, w: &mut dyn Write) -> io::Result<()> {
    if let Some(block) = &report.block {
        write_block(block, report.duration_secs, w)?;
    }
    if let Some(tcp) = &report.tcp {
        if report.block.is_some() {
            writeln!(w)?;
        }
        write_tcp(tcp, report.duration_secs, w)?;
    }
    Ok(())
}

/// `remote port 443`, `local port 22`, `other ports`.
fn port_label(port: Option<u16>, side: Option<PortSide>) -> String {
    match (port, side) {
        (Some(p), Some(PortSide::Local)) => format!("local port {p}"),
        (Some(p), _) => format!("remote port {p}"),
        _ => "other ports".to_string(),
    }
}

fn write_tcp(tcp: &TcpReport, secs: f64, w: &mut dyn Write) -> io::Result<()> {
    let kinds: [(&TcpSeriesSet, &str, &str); 3] = [
        (&tcp.rtt, "TCP smoothed RTT", "samples"),
        (
            &tcp.connect,
            "TCP connect latency (SYN sent to established)",
            "connections",
        ),
        (
            &tcp.accept,
            "TCP accept latency (handshake's last ACK to established)",
            "connections",
        ),
    ];
    let mut any = false;
    for (set, title, what) in kinds {
        if set.count == 0 {
            continue;
        }
        any = true;
        for s in &set.by_port {
            writeln!(
                w,
                "{title}, {}: {}",
                port_label(s.port, s.side),
                summary(&s.latency, what, fmt_micros)
            )?;
            s.latency.hist.write_text("usecs", w)?;
            writeln!(w)?;
        }
        write_peers(&set.by_peer, what, w)?;
    }
    if tcp.connect_failed.count > 0 {
        any = true;
        writeln!(w, "TCP failed connects (SYN sent, then closed):")?;
        for s in &tcp.connect_failed.by_port {
            writeln!(
                w,
                "  {}: {} failed, time to failure mean {}, max {}",
                port_label(s.port, s.side),
                s.latency.count,
                s.latency.mean.map_or_else(|| "-".into(), fmt_micros),
                fmt_micros(s.latency.max)
            )?;
        }
        write_peers(&tcp.connect_failed.by_peer, "failed", w)?;
    }
    if tcp.retransmits.count > 0 {
        any = true;
        let ports: Vec<String> = tcp
            .retransmits
            .by_port
            .iter()
            .map(|p| format!("{} {}", port_label(p.port, p.side), p.count))
            .collect();
        let peers: Vec<String> = tcp
            .retransmits
            .by_peer
            .iter()
            .map(|p| format!("{} {}", p.peer.as_deref().unwrap_or("other peers"), p.count))
            .collect();
        writeln!(
            w,
            "TCP retransmits: {} ({}; {})",
            tcp.retransmits.count,
            ports.join(", "),
            peers.join(", ")
        )?;
    }
    if !any {
        writeln!(w, "TCP: no connection activity seen in {secs:.1} s.")?;
    }
    let c = &tcp.counters;
    let notes: Vec<String> = [
        (
            c.unmatched_handshakes,
            "handshakes begun before tracing (not timed)",
        ),
        (c.start_map_full, "handshakes not timed: start map full"),
        (
            c.peers_folded,
            "values whose peer went to \"other peers\": map full",
        ),
        (c.histogram_map_full, "values lost: histogram map full"),
        (c.read_errors, "tracepoint fields unreadable"),
        (
            c.missed,
            "events the kernel skipped (another BPF program was running)",
        ),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if !notes.is_empty() {
        writeln!(w, "Not recorded: {}.", notes.join("; "))?;
    }
    Ok(())
}

/// A small table of the busiest peers, when there is more than one.
fn write_peers(peers: &[TcpPeerSeries], what: &str, w: &mut dyn Write) -> io::Result<()> {
    if peers.len() < 2 {
        return Ok(());
    }
    writeln!(
        w,
        "  {:<40} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "PEER",
        what.to_uppercase(),
        "P50",
        "P90",
        "P99",
        "MAX"
    )?;
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), fmt_micros);
    for p in peers {
        writeln!(
            w,
            "  {:<40} {:>10} {:>9} {:>9} {:>9} {:>9}",
            p.peer.as_deref().unwrap_or("other peers"),
            p.latency.count,
            opt(p.latency.p50),
            opt(p.latency.p90),
            opt(p.latency.p99),
            fmt_micros(p.latency.max)
        )?;
    }
    writeln!(w)
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
        (
            c.issues_missed + c.completions_missed,
            "events the kernel skipped (another BPF program was running on that CPU)",
        ),
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
