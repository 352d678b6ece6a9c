//! `leaks`: trace one process's allocations, then report what is outstanding
//! per call stack (every `--interval`, and at the end).

use std::{
    collections::HashMap,
    fs::{self},
    io::{IsTerminal as _, Write},
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    cli::LeaksArgs,
    collectors::{
        Collector as _,
        alloc::{AllocCollector, AllocOptions},
    },
    leaks::{
        aggregate::{self, StackRef, Window},
        allocator::{self, Allocator, DL_DEBUG_STATE, ElfSummary, R_DEBUG},
        attach::{Attached, attach_running},
        image::TracedProcess,
        launch::{self, ChildState, FirstImage, PausedChild},
        model::ExitInfo,
        output,
        report::{self, RunInfo},
    },
    processes,
    progress::Progress,
    symbolize::StackSymbolizer,
};

/// How often the loop looks at what nothing announces: an execve() of a
/// `--pid` process (the generation the kernel bumps) and new libraries in
/// the process's maps (read again then, so that a process that exits can
/// still be symbolized). Everything else wakes the loop when it happens: a
/// started command's stops and exit (SIGCHLD), a `--pid` process's exit (its
/// pidfd), Ctrl-C, the deadline, the next `--interval` report, the progress
/// line (on a terminal only). Waking every 100 ms, with the maps read every
/// 250 ms, cost about 10 ms of CPU per second of tracing.
const CHECK: Duration = Duration::from_secs(1);
/// How often the progress line is redrawn, when stderr is a terminal.
const REDRAW: Duration = Duration::from_millis(250);

/// Runs `leaks`.
pub async fn run(args: LeaksArgs) -> anyhow::Result<()> {
    if args.sample == 0 {
        bail!("--sample must be at least 1 (1 tracks every allocation, 64 one in 64)");
    }
    if let Some(pid) = args.pid {
        if pid == std::process::id() {
            bail!("--pid {pid} is perf-user itself; give the PID of the process to trace");
        }
        if !processes::exists(pid) {
            bail!(
                "no process with PID {pid}: it may have exited. Find the PID with `pgrep NAME` \
                 or `ps -e`, or start the program under the tracer: perf-user leaks -- COMMAND"
            );
        }
    }
    let chosen = match &args.allocator {
        Some(path) => Some(
            Allocator::chosen(path).with_context(|| format!("--allocator {}", path.display()))?,
        ),
        None => None,
    };
    // Everything that can be checked without privileges is, first: a wrong
    // command or a binary with nothing to probe fails before any loading.
    let plan = match args.pid {
        Some(_) => None,
        None => Some(Plan::new(&args.command, chosen.as_ref())?),
    };
    super::ready_for_ebpf()?;
    let mut out = super::open_output(args.output.as_deref())?;

    let mut tracer = Tracer::start(&args, chosen, plan)?;
    // It attaches again after the process runs execve(): it keeps what
    // attaching needs and gives up the rest.
    super::drop_privileges(crate::privileges::Stage::Attaching);
    let start_wall = SystemTime::now();
    let started = Instant::now();
    let mut progress = Progress::new(args.quiet);
    let mut reports = Reports {
        args: &args,
        start_unix_nanos: start_wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64,
        started,
        last_report: started,
        baseline: HashMap::new(),
        sequence: 0,
        sym: StackSymbolizer::new(),
    };

    let ended = tracer
        .trace_loop(&args, &mut progress, &mut reports, &mut out)
        .await?;
    progress.finish();

    // Final report: read everything, then detach before symbolizing, which
    // can take a while and should not slow the process down.
    tracer
        .process
        .refresh(tracer.collector.generation().unwrap_or(0));
    let read_at = Instant::now();
    let raw = tracer
        .collector
        .read()
        .context("reading the outstanding allocations")?;
    let now_ns = monotonic_ns();
    let allocators = tracer.collector.attached().to_vec();
    let stacks = tracer
        .collector
        .stacks(stack_ids(&raw.allocations))
        .context("reading the allocation stacks")?;
    let Tracer {
        collector,
        process,
        child,
        ..
    } = tracer;
    drop(collector);
    let mut ended_line = ended.line;
    let mut exit = ended.exit;
    if let Some(mut child) = child
        && let Some(state) = child.terminate()
    {
        // Still running when tracing ended: it was started for the trace,
        // and ends with it.
        ended_line = Some(format!(
            "{}. Sent SIGTERM to the command started for the trace: {} {}.",
            ended_line.unwrap_or_else(|| "Tracing ended".into()),
            process.describe(),
            describe_end(state)
        ));
        exit = Some(exit_info(state));
    }
    let ended_line = ended_line.map(|l| if l.ends_with('.') { l } else { l + "." });
    // The table ends with the same line; say it on stderr when the report
    // goes elsewhere.
    let table_on_stdout = args.output.is_none() && args.format == output::LeaksFormat::Table;
    if let Some(line) = &ended_line
        && !args.quiet
        && !table_on_stdout
    {
        eprintln!("{line}");
    }
    reports.write(
        &raw,
        &stacks,
        &process,
        &allocators,
        (read_at, now_ns),
        Final {
            ended: ended_line,
            exit,
        },
        &mut out,
    )?;
    for (path, why) in reports.sym.failures() {
        eprintln!(
            "warning: no symbols from {}: {why}; its frames show as module+offset",
            path.display()
        );
    }
    if let Some(path) = &args.output
        && !args.quiet
    {
        eprintln!("Wrote the leak report to {}", path.display());
    }
    Ok(())
}

/// How `leaks -- COMMAND` will start the command.
struct Plan {
    program: PathBuf,
    /// Probes to attach before execve(): the allocator of a static
    /// executable (or --allocator), or the dynamic linker's stop.
    before_exec: BeforeExec,
}

enum BeforeExec {
    /// Attach to this allocator, for every image.
    Allocator(Allocator),
    /// Stop at `_dl_debug_state` (offset in `interpreter`) once the
    /// libraries are mapped, then choose.
    LinkerStop { interpreter: PathBuf, offset: u64 },
}

impl Plan {
    fn new(command: &[std::ffi::OsString], chosen: Option<&Allocator>) -> anyhow::Result<Self> {
        let name = command
            .first()
            .ok_or_else(|| anyhow::anyhow!("no command given after `--`"))?;
        let program = launch::resolve_command(name)?;
        let first = launch::first_image(&program)?;
        let before_exec = match (chosen, first) {
            (Some(allocator), _) => BeforeExec::Allocator(allocator.clone()),
            (None, FirstImage::Static { exe }) => {
                BeforeExec::Allocator(Allocator::in_file(&exe)?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} is statically linked and defines no malloc and free symbols \
                         (stripped?): there is nothing to probe. Use a build with symbols, or \
                         give the file that holds its allocator with --allocator PATH",
                        exe.display()
                    )
                })?)
            }
            (None, FirstImage::Dynamic { interpreter, exe }) => {
                let elf = ElfSummary::read(&interpreter, &[DL_DEBUG_STATE])?;
                let offset = elf
                    .symbols
                    .get(DL_DEBUG_STATE)
                    .and_then(|&a| elf.file_offset(a))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "the dynamic linker of {} ({}) has no {DL_DEBUG_STATE} symbol, which \
                             `leaks -- COMMAND` uses to attach before the program starts. Start \
                             the program yourself and use --pid, or name its allocator with \
                             --allocator PATH",
                            exe.display(),
                            interpreter.display()
                        )
                    })?;
                BeforeExec::LinkerStop {
                    interpreter,
                    offset,
                }
            }
        };
        Ok(Self {
            program,
            before_exec,
        })
    }
}

/// What ended the trace.
#[derive(Default)]
struct Ended {
    line: Option<String>,
    exit: Option<ExitInfo>,
}

/// Extra facts for the last report.
struct Final {
    ended: Option<String>,
    exit: Option<ExitInfo>,
}

/// The attached tracer and the process it traces.
struct Tracer {
    collector: AllocCollector,
    process: TracedProcess,
    /// `leaks -- COMMAND`: the command we started.
    child: Option<PausedChild>,
    /// `--allocator`: probed for every image instead of choosing.
    chosen: Option<Allocator>,
    /// The image whose allocator is attached.
    attached_generation: u32,
    /// `_r_debug` of each dynamic linker seen, for telling its stops apart.
    linkers: HashMap<PathBuf, Option<(ElfSummary, u64)>>,
}

impl Tracer {
    /// Loads and attaches: to a running process, or to a command started
    /// paused and then released.
    fn start(
        args: &LeaksArgs,
        chosen: Option<Allocator>,
        plan: Option<Plan>,
    ) -> anyhow::Result<Self> {
        let options = |tgid| AllocOptions {
            tgid,
            sample_every: args.sample,
            max_allocations: args.max_allocations,
            unwind: args.unwind,
        };
        let Some(plan) = plan else {
            let pid = args.pid.unwrap_or_default();
            let Attached {
                process,
                allocator,
                collector,
            } = attach_running(&options(pid), chosen.as_ref())?;
            let tracer = Self {
                collector,
                process,
                child: None,
                chosen,
                attached_generation: 0,
                linkers: HashMap::new(),
            };
            tracer.status(&args.quiet, &allocator);
            return Ok(tracer);
        };

        let command = args.command.clone();
        let child = PausedChild::spawn(&plan.program, &command)?;
        let pid = child.pid();
        let collector =
            AllocCollector::load(&options(pid)).context("cannot start the allocation tracer")?;
        let mut tracer = Self {
            collector,
            process: TracedProcess::new(pid),
            child: Some(child),
            chosen,
            attached_generation: 0,
            linkers: HashMap::new(),
        };
        match &plan.before_exec {
            BeforeExec::Allocator(allocator) => {
                tracer.attach(allocator)?;
                // Attached for every image already: never stop.
                tracer.collector.set_handled_generation(u32::MAX)?;
                tracer.status(&args.quiet, allocator);
            }
            BeforeExec::LinkerStop {
                interpreter,
                offset,
            } => tracer
                .collector
                .attach_startup_stop(interpreter, *offset)
                .context("cannot watch the command's start-up")?,
        }
        if let Some(child) = &mut tracer.child {
            child.release()?;
        }
        Ok(tracer)
    }

    fn status(&self, quiet: &bool, allocator: &Allocator) {
        if *quiet {
            return;
        }
        let mut line = format!(
            "Tracing {} allocation functions in {} for {}",
            allocator.sites.len(),
            allocator.path.display(),
            if self.process.name.is_some() {
                self.process.describe()
            } else {
                format!("PID {}", self.process.pid)
            }
        );
        if !allocator.missing.is_empty() {
            line.push_str(&format!(
                " (not defined there: {})",
                allocator.missing.join(", ")
            ));
        }
        eprintln!("{line}");
    }

    fn attach(&mut self, allocator: &Allocator) -> anyhow::Result<()> {
        self.collector
            .attach_allocator(&allocator.path, &allocator.sites)
            .with_context(|| format!("cannot trace {}", self.process.describe()))
    }

    /// The process runs a new image (after execve()) whose libraries are
    /// mapped: attach to its allocator, drop the old image's allocations.
    fn new_image(&mut self, generation: u32, quiet: bool) -> anyhow::Result<()> {
        self.process.refresh(generation);
        let allocator = match &self.chosen {
            Some(a) => a.clone(),
            None => allocator::choose(
                &self.process.maps,
                self.process.exe.as_deref(),
                &self.process.describe(),
            )?,
        };
        let first = self.collector.attached().is_empty();
        self.attach(&allocator)?;
        if first {
            self.status(&quiet, &allocator);
        } else if self.attached_generation != generation && !quiet {
            eprintln!(
                "{} ran execve() ({}); allocations of the previous program are dropped",
                self.process.describe(),
                self.process
                    .exe
                    .as_deref()
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "?".into())
            );
        }
        self.collector.forget_before(generation)?;
        self.attached_generation = generation;
        Ok(())
    }

    /// True when a stopped process sits at the end of the dynamic linker's
    /// loading (not at its start); unknown counts as yes.
    fn linker_done(&mut self) -> bool {
        let Some(interpreter) = self
            .process
            .exe
            .as_deref()
            .and_then(|e| ElfSummary::read(e, &[]).ok())
            .and_then(|s| s.interpreter)
        else {
            return true;
        };
        let entry = self.linkers.entry(interpreter.clone()).or_insert_with(|| {
            let elf = ElfSummary::read(&interpreter, &[R_DEBUG]).ok()?;
            let r_debug = *elf.symbols.get(R_DEBUG)?;
            Some((elf, r_debug))
        });
        match entry {
            Some((elf, r_debug)) => launch::linker_consistent(
                self.process.pid,
                &self.process.maps,
                &interpreter,
                elf,
                *r_debug,
            )
            .unwrap_or(true),
            None => true,
        }
    }

    /// Traces until the duration is up, Ctrl-C, or the process exits,
    /// printing interval reports on the way.
    async fn trace_loop(
        &mut self,
        args: &LeaksArgs,
        progress: &mut Progress,
        reports: &mut Reports<'_>,
        out: &mut Box<dyn Write>,
    ) -> anyhow::Result<Ended> {
        let started = reports.started;
        let deadline = args.duration.map(|d| started + d);
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        // Our child stopping (the start-up stop) or exiting raises SIGCHLD:
        // handle it at once rather than at the next tick.
        let mut sigchld = match &self.child {
            Some(_) => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok(),
            None => None,
        };
        // A process we did not start: its pidfd turns readable when it exits.
        let mut exited = match &self.child {
            Some(_) => None,
            None => pidfd(self.process.pid),
        };
        let show_progress = !args.quiet && std::io::stderr().is_terminal();
        let mut next_check = Instant::now();
        let mut last_redraw: Option<Instant> = None;
        loop {
            let mut wake = next_check;
            if let Some(d) = deadline {
                wake = wake.min(d);
            }
            // Not before the allocator is attached: the report would wait,
            // and a wake-up time in the past would spin.
            if let Some(interval) = args.interval
                && !self.collector.attached().is_empty()
            {
                wake = wake.min(reports.last_report + interval);
            }
            if show_progress && let Some(t) = last_redraw {
                wake = wake.min(t + REDRAW);
            }
            tokio::select! {
                _ = &mut ctrl_c => {
                    return Ok(Ended {
                        line: Some(format!(
                            "Interrupted after {:.1} s",
                            started.elapsed().as_secs_f64()
                        )),
                        exit: None,
                    });
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                Some(()) = async {
                    match &mut sigchld {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = async {
                    match &exited {
                        Some(fd) => fd.readable().await.map(|mut g| g.retain_ready()),
                        None => std::future::pending().await,
                    }
                } => {
                    // It stays readable: waiting on it again would spin. The
                    // checks below (or the next CHECK) see the exit.
                    exited = None;
                }
            }
            let generation = self.collector.generation()?;
            if let Some(ended) = self.check_process(generation, args.quiet, started)? {
                return Ok(ended);
            }
            let now = Instant::now();
            if now >= next_check {
                next_check = now + CHECK;
                self.process.refresh(generation);
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Ended {
                    line: Some(format!(
                        "Tracing ended after {:.1} s (--duration)",
                        started.elapsed().as_secs_f64()
                    )),
                    exit: None,
                });
            }
            if let Some(interval) = args.interval
                && now - reports.last_report >= interval
                && !self.collector.attached().is_empty()
            {
                progress.finish();
                self.process.refresh(generation);
                let read_at = Instant::now();
                let raw = self.collector.read()?;
                let stacks = self.collector.stacks(stack_ids(&raw.allocations))?;
                let allocators = self.collector.attached().to_vec();
                reports.write(
                    &raw,
                    &stacks,
                    &self.process,
                    &allocators,
                    (read_at, monotonic_ns()),
                    Final {
                        ended: None,
                        exit: None,
                    },
                    out,
                )?;
                out.flush().context("writing the report")?;
            }
            if !show_progress || last_redraw.is_some_and(|t| now - t < REDRAW) {
                continue;
            }
            last_redraw = Some(now);
            let c = self.collector.counters()?;
            progress.update(&format!(
                "Tracing {}: {:.0} s, {} allocations and {} frees seen, {} tracked outstanding (Ctrl-C to stop)",
                self.process.describe(),
                (now - started).as_secs_f64(),
                c.allocs,
                c.frees,
                c.allocs_tracked.saturating_sub(c.frees_matched + c.replaced),
            ));
        }
    }

    /// Handles start-up stops and execve(); returns how the process ended
    /// when it did.
    fn check_process(
        &mut self,
        generation: u32,
        quiet: bool,
        started: Instant,
    ) -> anyhow::Result<Option<Ended>> {
        let after = started.elapsed().as_secs_f64();
        let Some(child) = &mut self.child else {
            if !alive(self.process.pid) {
                return Ok(Some(Ended {
                    line: Some(format!(
                        "{} exited after {after:.1} s of tracing; the report shows what it had \
                         not freed when it exited.",
                        self.process.describe()
                    )),
                    exit: None,
                }));
            }
            if generation != self.attached_generation {
                self.new_image(generation, quiet)?;
            }
            return Ok(None);
        };
        match child.poll()? {
            ChildState::Running => {}
            ChildState::Stopped(sig) if sig == libc::SIGSTOP => {
                let handled = self.collector.handled_generation()?;
                // Not our stop (someone else stopped it): leave it stopped.
                if generation == handled {
                    return Ok(None);
                }
                self.process.refresh(generation);
                // The first stop of an image is before its libraries are
                // mapped (RT_ADD); the one to act on is after (RT_CONSISTENT).
                if self.linker_done() {
                    self.new_image(generation, quiet)?;
                    self.collector.set_handled_generation(generation)?;
                }
                if let Some(child) = &self.child {
                    child.resume()?;
                }
            }
            ChildState::Stopped(_) => {}
            state @ (ChildState::Exited(_) | ChildState::Killed(_)) => {
                return Ok(Some(Ended {
                    line: Some(format!(
                        "{} {} after {after:.1} s of tracing; the report shows what it had not \
                         freed when it exited.",
                        self.process.describe(),
                        describe_end(state)
                    )),
                    exit: Some(exit_info(state)),
                }));
            }
        }
        Ok(None)
    }
}

/// Writes reports, carrying what one report needs from the previous one.
struct Reports<'a> {
    args: &'a LeaksArgs,
    start_unix_nanos: u64,
    started: Instant,
    last_report: Instant,
    baseline: HashMap<StackRef, u64>,
    sequence: u32,
    sym: StackSymbolizer,
}

impl Reports<'_> {
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        raw: &crate::collectors::alloc::RawAllocations,
        stacks: &HashMap<u32, Vec<u64>>,
        process: &TracedProcess,
        allocators: &[PathBuf],
        (now, now_ns): (Instant, u64),
        last: Final,
        out: &mut Box<dyn Write>,
    ) -> anyhow::Result<()> {
        let window_secs = (now - self.last_report).as_secs_f64();
        let infos: Vec<_> = raw.allocations.iter().map(|(_, i)| *i).collect();
        let agg = aggregate::aggregate(
            &infos,
            &raw.totals,
            &self.baseline,
            &Window {
                now_ns,
                min_age_ns: self.args.min_age.map_or(0, |d| d.as_nanos() as u64),
                secs: window_secs,
                scale: u64::from(self.args.sample.max(1)),
            },
        );
        let is_last = last.ended.is_some() || last.exit.is_some() || self.args.interval.is_none();
        // Interval reports are numbered; the final one follows them.
        if self.args.interval.is_some() {
            self.sequence += 1;
        }
        let command = self.args.pid.is_none().then(|| self.args.command.clone());
        let report = report::build(
            &agg,
            stacks,
            &raw.counters,
            process,
            &mut self.sym,
            &RunInfo {
                command,
                allocators: allocators.to_vec(),
                start_unix_nanos: self.start_unix_nanos,
                elapsed_secs: (now - self.started).as_secs_f64(),
                window_secs,
                sequence: self.sequence,
                last: is_last,
                sample_every: self.args.sample,
                min_age_secs: self.args.min_age.map_or(0.0, |d| d.as_secs_f64()),
                ended: last.ended,
                exit: last.exit,
                unwind: raw.unwind.clone(),
            },
        );
        output::write(
            &report,
            self.args.format,
            self.args.top,
            self.args.interval.is_some(),
            out.as_mut(),
        )
        .context("writing the report")?;
        self.baseline = agg.baseline;
        self.last_report = now;
        Ok(())
    }
}

fn stack_ids(allocations: &[(u64, perf_ebpf_common::alloc::AllocInfo)]) -> Vec<u32> {
    let mut ids: Vec<u32> = allocations
        .iter()
        .filter_map(|(_, a)| u32::try_from(a.stack_id).ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns().
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A pidfd of `pid`, watched by the runtime: readable once the process has
/// exited. None where the kernel has none (before 5.3): the loop's CHECK
/// then sees the exit.
fn pidfd(pid: u32) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a PID and flags, and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor the kernel just opened for us, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open, and
    // as_raw_fd returns the same descriptor, until the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
}

/// False once the process is gone or a zombie (its memory is released).
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which may itself contain ") ".
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

fn describe_end(state: ChildState) -> String {
    match state {
        ChildState::Exited(code) => format!("exited with code {code}"),
        ChildState::Killed(sig) => format!("was killed by {}", launch::signal_name(sig)),
        ChildState::Stopped(sig) => format!("is stopped by {}", launch::signal_name(sig)),
        ChildState::Running => "is running".into(),
    }
}

fn exit_info(state: ChildState) -> ExitInfo {
    match state {
        ChildState::Exited(code) => ExitInfo {
            code: Some(code),
            signal: None,
        },
        ChildState::Killed(sig) => ExitInfo {
            code: None,
            signal: Some(sig),
        },
        _ => ExitInfo::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pidfd_turns_readable_when_the_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.1")
            .spawn()
            .unwrap();
        let fd = pidfd(child.id()).expect("pidfd_open");
        tokio::time::timeout(Duration::from_secs(10), fd.readable())
            .await
            .expect("readable after the exit")
            .unwrap()
            .retain_ready();
        child.wait().unwrap();
    }

    #[test]
    fn this_process_is_alive_and_a_bogus_one_is_not() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn ends_are_described() {
        assert_eq!(describe_end(ChildState::Exited(3)), "exited with code 3");
        assert!(describe_end(ChildState::Killed(9)).contains("SIGKILL"));
        assert_eq!(exit_info(ChildState::Killed(9)).signal, Some(9));
    }
}
