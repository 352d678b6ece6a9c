//! `profile`: sample, then symbolize and report.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    cli::{ProfileArgs, Stacks},
    collectors::{
        Collector as _,
        cpu::{CpuCollector, CpuOptions},
        offcpu::{OffCpuCollector, OffCpuOptions},
    },
    output,
    processes::{self, ProcessTable},
    profile::{
        ProfileKind,
        build::{RunInfo, build},
        offcpu,
    },
    progress::Progress,
    symbolize::StackSymbolizer,
};

/// How often the progress line is redrawn and selected PIDs are checked.
const REDRAW: Duration = Duration::from_millis(250);
/// Least time between two wake-ups for re-reads: each captured process has
/// its own due times, and waking for each would cost more than the re-reads
/// when processes start by the hundred per second. Short enough that the
/// first re-read (10 ms after capture) finds a 35 ms process alive.
const REREAD_BATCH: Duration = Duration::from_millis(10);

/// Runs `profile`.
pub async fn run(args: ProfileArgs) -> anyhow::Result<()> {
    for &pid in &args.pids {
        if !processes::exists(pid) {
            bail!(
                "no process with PID {pid}: it may have exited. Find the PID with `pgrep NAME` or `ps -e`"
            );
        }
    }
    if args.format.is_binary() && args.output.is_none() && std::io::stdout().is_terminal() {
        bail!(
            "--format {:?} writes binary data; give a file with --output FILE (or redirect standard output)",
            args.format
        );
    }
    super::ready_for_ebpf()?;
    let mut out = super::open_output(args.output.as_deref())?;

    let kind = if args.off_cpu {
        ProfileKind::OffCpu
    } else if args.wall {
        ProfileKind::Wall
    } else {
        ProfileKind::Cpu
    };
    if kind == ProfileKind::Cpu && args.cgroup.is_some() {
        bail!(
            "--cgroup selects threads for --off-cpu and --wall; for a CPU profile use --pid or --comm"
        );
    }
    let mut cpu = if kind == ProfileKind::OffCpu {
        None
    } else {
        let opts = CpuOptions {
            frequency_hz: args.frequency,
            pids: args.pids.clone(),
            comm: args.comm.clone(),
            user_stacks: args.stacks != Stacks::Kernel,
            kernel_stacks: args.stacks != Stacks::User,
            include_idle: args.include_idle,
            unwind: args.unwind,
            unwind_tables_mib: args.unwind_tables_mib,
        };
        Some(CpuCollector::attach(&opts).context("cannot start the CPU profiler")?)
    };
    let mut off = if kind == ProfileKind::Cpu {
        None
    } else {
        let opts = OffCpuOptions {
            pids: args.pids.clone(),
            comm: args.comm.clone(),
            cgroup: args.cgroup.clone(),
            user_stacks: args.stacks != Stacks::Kernel,
            kernel_stacks: args.stacks != Stacks::User,
            min_ns: u64::try_from(args.min_block.as_nanos()).unwrap_or(u64::MAX),
            tracepoints: args.tracepoints,
            unwind: args.unwind,
            unwind_tables_mib: args.unwind_tables_mib,
        };
        let c = OffCpuCollector::attach(&opts).context("cannot start the off-CPU profiler")?;
        if let Some(why) = crate::collectors::tracepoints::unexpected_fallback(c.fallback_reason())
        {
            eprintln!(
                "warning: the BTF sched_switch program could not be used ({why}); the classic tracepoint is used instead"
            );
        }
        Some(c)
    };
    // --wall: the off-CPU collector takes a while to attach (the unwind
    // tables of the --pid processes, under load a second or more), and the
    // CPU samples taken meanwhile lie before the window its times cover:
    // each thread's time would add up to more than the duration.
    if let (Some(c), Some(_)) = (cpu.as_mut(), off.as_ref()) {
        c.reset()
            .context("clearing the CPU samples taken while attaching")?;
    }
    super::drop_privileges(crate::privileges::Stage::Profile);
    let start_wall = SystemTime::now();
    let started = Instant::now();
    let cpus = crate::collectors::cpu::online_cpu_count();

    let mut procs = ProcessTable::default();
    let mut progress = Progress::new(args.quiet);
    let stop_reason = sample_loop(
        cpu.as_mut(),
        off.as_mut(),
        &args,
        &mut procs,
        &mut progress,
        started,
    )
    .await?;
    let elapsed = started.elapsed();
    let raw = cpu
        .as_mut()
        .map(|c| c.read().context("reading the CPU samples"))
        .transpose()?;
    let off_raw = off
        .as_mut()
        .map(|c| c.read_to_now().context("reading the off-CPU times"))
        .transpose()?;
    // Detach now: symbolizing can take a while and should not be profiled.
    drop(cpu);
    drop(off);
    let pids = raw
        .iter()
        .flat_map(|r| r.samples.iter().map(|(k, _)| k.pid))
        .chain(
            off_raw
                .iter()
                .flat_map(|r| r.times.iter().map(|(k, _)| k.pid)),
        );
    procs.capture(pids);
    procs.reread_live();
    progress.update(&format!(
        "Symbolizing stacks from {} processes…",
        procs.len()
    ));

    let mut sym = StackSymbolizer::new();
    let run = RunInfo {
        frequency_hz: args.frequency,
        duration_secs: elapsed.as_secs_f64(),
        start_unix_nanos: start_wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64,
        cpus,
    };
    let on = raw.map(|raw| build(&raw, &procs, &mut sym, &run));
    let away = off_raw.map(|snap| offcpu::build(&snap, &procs, &mut sym, &run));
    let profile = match (on, away) {
        (Some(on), Some(away)) => offcpu::wall(on, away),
        (Some(p), None) | (None, Some(p)) => p,
        (None, None) => unreachable!("one collector at least is attached"),
    };
    progress.finish();
    if let Some(reason) = stop_reason {
        eprintln!("{reason}");
    }
    warn_unreadable(sym.failures());
    note_missing_symbols(&sym);
    let what = match kind {
        ProfileKind::Cpu => "CPU profile",
        ProfileKind::OffCpu => "Off-CPU time",
        ProfileKind::Wall => "Wall-clock time",
    };
    let title = match &args.comm {
        Some(c) => format!("{what} of {c}"),
        None if !args.pids.is_empty() => format!(
            "{what} of PID {}",
            args.pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => what.to_string(),
    };
    let opts = output::OutputOptions {
        top: args.top,
        title,
    };
    output::write(&profile, args.format, &opts, &mut out)
        .and_then(|()| out.flush())
        .context("writing the report")?;
    if let Some(path) = &args.output {
        let amount = if kind.is_time() {
            format!("{:.3} s", profile.total_samples as f64 / 1e6)
        } else {
            format!("{} samples", profile.total_samples)
        };
        eprintln!("Wrote {amount} as {:?} to {}", args.format, path.display());
    }
    Ok(())
}

/// Samples until the duration is up, Ctrl-C, or every selected process is
/// gone. Returns a line to show when it stopped early.
///
/// It sleeps until something happens: the kernel announcing a new PID (the
/// ring buffer's fd turns readable), a young process's maps re-read falling
/// due, the end, and only when there is a progress line to redraw or a
/// selected PID to watch, the next redraw. Waking on a timer instead would
/// cost CPU on an idle host.
async fn sample_loop(
    mut collector: Option<&mut CpuCollector>,
    mut off: Option<&mut OffCpuCollector>,
    args: &ProfileArgs,
    procs: &mut ProcessTable,
    progress: &mut Progress,
    started: Instant,
) -> anyhow::Result<Option<String>> {
    let deadline = started + args.duration;
    // Only the CPU sampler announces new processes; off-CPU alone captures
    // them at the end.
    let new_pids = match collector.as_deref() {
        Some(c) => {
            let fd = c
                .new_pids_fd()
                .try_clone_to_owned()
                .context("duplicating the new-PID ring buffer's descriptor")?;
            // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays
            // open, and as_raw_fd returns the same descriptor, until the
            // AsyncFd is dropped.
            Some(
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(|e| anyhow::anyhow!("watching the new-PID ring buffer: {e}"))?,
            )
        }
        None => None,
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // Off-CPU time has no new-process announcements: its processes' maps
    // are read at each redraw instead.
    let redraw = progress.enabled() || !args.pids.is_empty() || off.is_some();
    procs.capture(args.pids.iter().copied());
    let mut next_redraw = started + REDRAW;
    let mut last_reread = started;
    loop {
        let now = Instant::now();
        if now >= deadline {
            if let Some(c) = collector.as_deref_mut() {
                procs.capture(c.new_pids());
            }
            return Ok(None);
        }
        let mut wake = deadline;
        if redraw {
            wake = wake.min(next_redraw);
        }
        if let Some(at) = procs.next_reread() {
            wake = wake.min(at.max(last_reread + REREAD_BATCH));
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                return Ok(Some(format!(
                    "Interrupted after {:.1} s; reporting what was sampled.",
                    started.elapsed().as_secs_f64()
                )));
            }
            ready = async {
                match &new_pids {
                    Some(fd) => fd.readable().await,
                    None => std::future::pending().await,
                }
            } => {
                let mut guard = ready.context("waiting on the new-PID ring buffer")?;
                // Cleared before draining: the kernel signals only a record
                // written after the reader caught up, so clearing after
                // draining could lose that signal and leave every later PID
                // unread until the end.
                guard.clear_ready();
                if let Some(c) = collector.as_deref_mut() {
                    let new = c.new_pids();
                    // Maps first: a short-lived process may be gone by the
                    // time its tables are built.
                    procs.capture(new.iter().copied());
                    c.load_tables(&new);
                }
                continue;
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        let now = Instant::now();
        if now >= last_reread + REREAD_BATCH {
            last_reread = now;
            procs.reread_due();
        }
        if !redraw || now < next_redraw {
            continue;
        }
        next_redraw = now + REDRAW;
        if let Some(c) = off.as_deref_mut()
            && let Ok(pids) = c.pids()
        {
            let new: Vec<u32> = pids
                .into_iter()
                .filter(|p| procs.get(*p).is_none())
                .collect();
            procs.capture(new.iter().copied());
            c.load_tables(new);
        }
        if !args.pids.is_empty() && args.pids.iter().all(|&p| !processes::exists(p)) {
            return Ok(Some(format!(
                "All selected processes exited after {:.1} s; reporting what was sampled.",
                started.elapsed().as_secs_f64()
            )));
        }
        let secs = (now - started)
            .as_secs_f64()
            .min(args.duration.as_secs_f64());
        let mut parts = Vec::new();
        if let Some(c) = collector.as_deref() {
            parts.push(format!(
                "{} samples at {} Hz",
                c.samples_counted().unwrap_or(0),
                args.frequency
            ));
        }
        if let Some(c) = off.as_deref().and_then(|c| c.counters_now().ok()) {
            parts.push(format!("{} waits of {} switches", c.counted, c.switches));
        }
        progress.update(&format!(
            "Tracing: {secs:.0}/{:.0} s, {}, {} processes (Ctrl-C to stop)",
            args.duration.as_secs_f64(),
            parts.join(", "),
            procs.len()
        ));
    }
}

/// One line for all files whose symbols could not be read: in a system-wide
/// profile, short-lived tools' binaries may be gone, and a line each would bury
/// the report.
fn warn_unreadable(failures: &std::collections::HashMap<std::path::PathBuf, String>) {
    let mut list: Vec<_> = failures.iter().collect();
    list.sort();
    match list.as_slice() {
        [] => {}
        [(path, why)] => eprintln!(
            "warning: no symbols from {}: {why}; its frames show as module+offset",
            path.display()
        ),
        [(path, why), rest @ ..] => eprintln!(
            "warning: no symbols from {} files, e.g. {}: {why}; their frames show as module+offset",
            rest.len() + 1,
            path.display()
        ),
    }
}

/// Names the stripped modules whose frames stayed unnamed for want of a
/// debug file, and how to get their names.
fn note_missing_symbols(sym: &StackSymbolizer) {
    let missing = sym.missing_symbols();
    if missing.is_empty() {
        return;
    }
    let list: Vec<String> = missing
        .iter()
        .take(8)
        .map(|m| match &m.build_id {
            Some(id) => format!("{} (build ID {id})", m.path.display()),
            None => m.path.display().to_string(),
        })
        .collect();
    let more = missing.len().saturating_sub(list.len());
    eprintln!(
        "note: no symbols for {} stripped module{}: {}{}; their frames show as module+0xSTART of each function.",
        missing.len(),
        if missing.len() == 1 { "" } else { "s" },
        list.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        },
    );
    if let Some(why) = missing.iter().find_map(|m| m.debuginfod.as_deref()) {
        eprintln!("  debuginfod had no debug file: {why}");
    }
    if sym.debuginfod_enabled() {
        eprintln!(
            "  Install their debug files (Debian/Ubuntu: the package's -dbgsym, or -dbg, package; Fedora: `dnf debuginfo-install PACKAGE`), \
             which go under {}/.build-id/.",
            crate::symbolize::debugfile::DEBUG_DIR
        );
    } else {
        eprintln!(
            "  Install their debug files (Debian/Ubuntu: the package's -dbgsym, or -dbg, package; Fedora: `dnf debuginfo-install PACKAGE`), \
             or let perf-user fetch them from a debuginfod server: DEBUGINFOD_URLS=https://debuginfod.debian.net (Ubuntu: https://debuginfod.ubuntu.com, Fedora: https://debuginfod.fedoraproject.org)."
        );
    }
}
