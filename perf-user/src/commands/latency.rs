//! `latency`: attach the block I/O and/or TCP collectors, wait, report.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    blockdev,
    cli::{LatencyArgs, LatencyFormat},
    collectors::{
        Collector as _,
        block::{BlockCollector, BlockOptions},
        tcp::{TcpCollector, TcpOptions},
        tracepoints::unexpected_fallback,
    },
    latency::{self, BlockReport, LatencyReport, TcpReport},
    progress::Progress,
};

/// How often the progress line is redrawn.
const REDRAW: Duration = Duration::from_millis(250);

/// Runs `latency`.
pub async fn run(args: LatencyArgs) -> anyhow::Result<()> {
    let (want_block, want_tcp) = if args.block || args.tcp {
        (args.block, args.tcp)
    } else {
        (true, true)
    };
    if !args.devices.is_empty() && !want_block {
        bail!("--device filters block I/O, which --tcp alone leaves out; add --block");
    }
    if args.queued && !want_block {
        bail!("--queued is about block I/O, which --tcp alone leaves out; add --block");
    }
    if !args.ports.is_empty() && !want_tcp {
        bail!("--port filters TCP, which --block alone leaves out; add --tcp");
    }
    let mut devices = Vec::new();
    for name in &args.devices {
        let d = blockdev::resolve(name)?;
        if let Some(part) = &d.partition_of {
            eprintln!(
                "note: {part} is a partition; requests are traced per disk, so this shows all of {}",
                d.name
            );
        }
        devices.push(d.dev);
    }
    super::ready_for_ebpf()?;
    let mut out = super::open_output(args.output.as_deref())?;

    let mut block = if want_block {
        Some(
            BlockCollector::attach(&BlockOptions {
                devices,
                queue_time: args.queued,
                tracepoints: args.tracepoints,
            })
            .context("cannot start the block I/O latency collector")?,
        )
    } else {
        None
    };
    let mut tcp = if want_tcp {
        Some(
            TcpCollector::attach(&TcpOptions {
                ports: args.ports.clone(),
                tracepoints: args.tracepoints,
                // Its table is per peer.
                fold_peers: false,
            })
            .context("cannot start the TCP latency collector")?,
        )
    } else {
        None
    };
    super::drop_privileges(crate::privileges::Stage::Latency);
    let fell_back = [
        (
            "block I/O",
            block.as_ref().and_then(BlockCollector::fallback_reason),
        ),
        ("TCP", tcp.as_ref().and_then(TcpCollector::fallback_reason)),
    ];
    for (what, reason) in fell_back {
        if let Some(reason) = unexpected_fallback(reason)
            && !args.quiet
        {
            eprintln!("note: {what}: classic tracepoints, as BTF tracepoints failed: {reason}");
        }
    }
    // Listen for Ctrl-C before saying that tracing runs, so that an early
    // Ctrl-C ends the run with a report rather than killing the process.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    let started = Instant::now();
    if !args.quiet {
        let what = match (want_block, want_tcp) {
            (true, true) => "block I/O and TCP",
            (true, false) => "block I/O",
            _ => "TCP",
        };
        eprintln!(
            "Tracing {what} for {:.1} s (Ctrl-C to stop early)…",
            args.duration.as_secs_f64()
        );
    }
    let stop = wait(&args, started, &mut sigint, block.as_ref(), tcp.as_ref()).await;
    let duration_secs = started.elapsed().as_secs_f64();

    let block_report = match block.as_mut() {
        Some(b) => {
            let snap = b.read().context("reading the block I/O histograms")?;
            if args.queued && !snap.queue_time {
                eprintln!(
                    "note: --queued needs the block:block_io_start tracepoint (Linux 6.5+), which this kernel lacks"
                );
            }
            Some(BlockReport::new(&snap, &blockdev::names()))
        }
        None => None,
    };
    drop(block);
    let tcp_report = match tcp.as_mut() {
        Some(t) => Some(TcpReport::new(
            &t.read().context("reading the TCP histograms")?,
            args.top,
        )),
        None => None,
    };
    drop(tcp);
    if let Some(reason) = stop {
        eprintln!("{reason}");
    }
    let report = LatencyReport {
        schema_version: latency::SCHEMA_VERSION,
        duration_secs,
        block: block_report,
        tcp: tcp_report,
    };
    match args.format {
        LatencyFormat::Table => latency::table::write(&report, &mut out),
        LatencyFormat::Json => latency::json::write(&report, &mut out),
    }
    .and_then(|()| out.flush())
    .context("writing the report")?;
    if let Some(path) = &args.output
        && !args.quiet
    {
        eprintln!("Wrote the latency report to {}", path.display());
    }
    Ok(())
}

/// Waits until the duration is up or Ctrl-C, redrawing a progress line.
/// Returns a line to show when it stopped early.
async fn wait(
    args: &LatencyArgs,
    started: Instant,
    sigint: &mut tokio::signal::unix::Signal,
    block: Option<&BlockCollector>,
    tcp: Option<&TcpCollector>,
) -> Option<String> {
    let deadline = started + args.duration;
    let mut progress = Progress::new(args.quiet);
    let mut tick = tokio::time::interval(REDRAW);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            progress.finish();
            return None;
        }
        tokio::select! {
            _ = sigint.recv() => {
                progress.finish();
                return Some(format!(
                    "Interrupted after {:.1} s; reporting what was traced.",
                    started.elapsed().as_secs_f64()
                ));
            }
            _ = tokio::time::sleep(left) => {}
            // Without a progress line (quiet, or not a terminal) nothing is
            // read before the report: the process sleeps while it traces.
            _ = tick.tick(), if progress.enabled() => {
                let mut line = format!(
                    "Tracing: {:.0}/{:.0} s",
                    started.elapsed().as_secs_f64(),
                    args.duration.as_secs_f64()
                );
                if let Some(Ok(c)) = block.map(BlockCollector::counters_now) {
                    line.push_str(&format!(", {} I/Os timed", c.timed));
                }
                if let Some(Ok(c)) = tcp.map(TcpCollector::counters_now) {
                    line.push_str(&format!(", {} TCP RTT samples", c.rtt_recorded));
                }
                line.push_str(" (Ctrl-C to stop)");
                progress.update(&line);
            }
        }
    }
}
