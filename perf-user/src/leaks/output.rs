//! Writing a [`LeakReport`]: a table for terminals, or JSON (docs/leaks.md).

use std::io::{self, Write};

use super::model::LeakReport;
use crate::output::table::cut;

/// Frames shown per stack in the table.
const MAX_FRAMES: usize = 16;
/// Longest function name shown before it is cut with `…`.
const MAX_FUNCTION_WIDTH: usize = 60;

/// Output formats of `leaks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LeaksFormat {
    /// The top stacks with their frames, for a terminal.
    Table,
    /// JSON: one pretty-printed document, or with --interval one compact
    /// document per line (JSON Lines). Schema in docs/leaks.md.
    Json,
}

/// Writes `report` in `format`. `stream` is true when reports follow one
/// another (`--interval`): JSON is then one line per report.
pub fn write(
    report: &LeakReport,
    format: LeaksFormat,
    top: usize,
    stream: bool,
    w: &mut dyn Write,
) -> io::Result<()> {
    match format {
        LeaksFormat::Table => table(report, top, w),
        LeaksFormat::Json => {
            if stream {
                serde_json::to_writer(&mut *w, report)?;
            } else {
                serde_json::to_writer_pretty(&mut *w, report)?;
            }
            writeln!(w)
        }
    }
}

/// `48000 bytes (46.9 KiB)`; plain bytes below 1 KiB.
pub fn bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} bytes");
    }
    format!("{n} bytes ({})", human(n as f64))
}

/// `46.9 KiB`.
fn human(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n.abs();
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let sign = if n < 0.0 { "-" } else { "" };
    if unit == 0 {
        format!("{sign}{v:.0} B")
    } else {
        format!("{sign}{v:.1} {}", UNITS[unit])
    }
}

fn table(r: &LeakReport, top: usize, w: &mut dyn Write) -> io::Result<()> {
    let who = match &r.process {
        Some(name) => format!("PID {} ({name})", r.pid),
        None => format!("PID {}", r.pid),
    };
    let when = if r.sequence > 0 && !r.last {
        format!("report {} at {:.1} s", r.sequence, r.elapsed_secs)
    } else {
        format!("after {:.1} s", r.elapsed_secs)
    };
    writeln!(
        w,
        "Outstanding allocations of {who}, {when}: {} in {} allocations",
        bytes(r.outstanding_bytes),
        r.outstanding_allocations
    )?;
    if !r.allocators.is_empty() {
        writeln!(w, "Allocator: {}", r.allocators.join(", "))?;
    }
    if r.sample_every > 1 {
        writeln!(
            w,
            "Sampling 1 in {n} allocations (chosen by address): amounts are estimates, scaled by {n}.",
            n = r.sample_every
        )?;
    }
    if r.min_age_secs > 0.0 {
        writeln!(
            w,
            "Allocations younger than {:.1} s are left out (--min-age): {} in {}.",
            r.min_age_secs,
            bytes(r.young_bytes),
            r.young_allocations
        )?;
    }
    if r.stacks.is_empty() {
        writeln!(w, "No outstanding allocations.")?;
    }
    for (i, s) in r.stacks.iter().take(top).enumerate() {
        writeln!(w)?;
        writeln!(
            w,
            "#{:<2} {} in {} allocations from {}; oldest {:.1} s; growth {}/s over {:.1} s",
            i + 1,
            bytes(s.bytes),
            s.allocations,
            s.function,
            s.oldest_age_secs,
            human(s.growth_bytes_per_sec),
            r.window_secs
        )?;
        match s.stack {
            "lost" => writeln!(
                w,
                "      [stack lost: the stack map was full or two stacks collided; see Lost below]"
            )?,
            "empty" => writeln!(w, "      [no user stack could be read]")?,
            _ => {}
        }
        let shown: Vec<_> = s.frames.iter().rev().take(MAX_FRAMES).collect();
        let fwidth = shown
            .iter()
            .map(|f| f.name().chars().count().min(MAX_FUNCTION_WIDTH))
            .max()
            .unwrap_or(0);
        for f in &shown {
            let location = match (&f.file, f.line) {
                (Some(file), Some(line)) => {
                    let base = file.rsplit('/').next().unwrap_or(file);
                    format!("{base}:{line}")
                }
                _ => String::new(),
            };
            writeln!(
                w,
                "      {:<fwidth$}  {:<20}  {}",
                cut(&f.name(), MAX_FUNCTION_WIDTH),
                location,
                f.module
            )?;
        }
        if s.frames.len() > MAX_FRAMES {
            writeln!(w, "      … {} more frames", s.frames.len() - MAX_FRAMES)?;
        }
    }
    if r.stacks.len() > top {
        writeln!(
            w,
            "\n… {} more stacks (--top N shows more, --format json shows all)",
            r.stacks.len() - top
        )?;
    }
    let c = &r.counters;
    writeln!(
        w,
        "\nSeen: {} allocations ({} tracked), {} frees ({} of tracked blocks), {} failed or NULL",
        c.allocs, c.allocs_tracked, c.frees, c.frees_matched, c.null_returns
    )?;
    if c.lost_anything() {
        writeln!(
            w,
            "Lost: {} allocations (outstanding map full: raise --max-allocations or use --sample), \
             {} stacks (collisions), {} stacks (stack map full), {} calls (thread map full), \
             {} totals (totals map full), {} posix_memalign results unreadable",
            c.outstanding_map_full,
            c.stack_collisions,
            c.stack_errors,
            c.pending_full,
            c.stack_totals_full,
            c.read_failed
        )?;
    }
    if let Some(unwind) = &r.unwind {
        crate::output::table::write_unwind(unwind, w)?;
    }
    if let Some(ended) = &r.ended {
        writeln!(w, "{ended}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        collectors::alloc::AllocCounters,
        leaks::model::{LeakStack, SCHEMA_VERSION},
        profile::Frame,
    };

    fn report() -> LeakReport {
        let frame = |f: &str| {
            Arc::new(Frame {
                function: Some(f.into()),
                module: "leaky".into(),
                offset: 0x1234,
                address: 0x5555_0000_1234,
                function_start: None,
                file: Some("/src/leaky.c".into()),
                line: Some(42),
                kernel: false,
            })
        };
        LeakReport {
            schema_version: SCHEMA_VERSION,
            pid: 42,
            process: Some("leaky".into()),
            command: None,
            allocators: vec!["/lib/libc.so.6".into()],
            start_unix_nanos: 0,
            elapsed_secs: 3.0,
            window_secs: 3.0,
            sequence: 0,
            last: true,
            sample_every: 16,
            min_age_secs: 1.0,
            outstanding_bytes: 48_000,
            outstanding_allocations: 1000,
            young_bytes: 10,
            young_allocations: 1,
            stacks: vec![LeakStack {
                bytes: 48_000,
                allocations: 1000,
                oldest_age_secs: 2.9,
                growth_bytes_per_sec: 16_000.0,
                function: "malloc".into(),
                allocs_total: 1000,
                bytes_allocated_total: 48_000,
                stack: "ok",
                frames: vec![frame("main"), frame("leak_blocks")],
            }],
            counters: AllocCounters::default(),
            unwind: None,
            ended: Some("PID 42 (leaky) exited with code 0 after 2.1 s.".into()),
            exit: None,
        }
    }

    #[test]
    fn table_names_the_leak_its_size_and_the_sampling() {
        let mut out = Vec::new();
        write(&report(), LeaksFormat::Table, 10, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("48000 bytes (46.9 KiB) in 1000 allocations"),
            "{text}"
        );
        assert!(text.contains("Sampling 1 in 16"), "{text}");
        assert!(text.contains("younger than 1.0 s"), "{text}");
        assert!(text.contains("exited with code 0"), "{text}");
        // Leaf first: the function that called malloc, then its caller.
        let leak = text.find("leak_blocks").unwrap();
        let main = text.find("      main").unwrap();
        assert!(leak < main, "{text}");
        assert!(text.contains("leaky.c:42"), "{text}");
    }

    #[test]
    fn json_is_one_line_per_report_when_streaming() {
        let mut out = Vec::new();
        write(&report(), LeaksFormat::Json, 10, true, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["stacks"][0]["frames"][1]["function"], "leak_blocks");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(bytes(100), "100 bytes");
        assert_eq!(bytes(1536), "1536 bytes (1.5 KiB)");
        assert_eq!(human(-2048.0), "-2.0 KiB");
        assert_eq!(human(3.0 * 1024.0 * 1024.0), "3.0 MiB");
    }
}
