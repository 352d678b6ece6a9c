//! The common shape of cases 1-4: a fixed amount of work run untraced and
//! under each tracer, interleaved, with the tracers' direct cost read from
//! the kernel's BPF statistics and /proc.

use std::{
    collections::BTreeMap,
    fs,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow, bail};
use serde::Serialize;

use super::{
    Ctx,
    process::{self, Proc, ProgStats},
    stats::{self, Summary},
};

/// A tracer: a command line; `{pid}` in an argument becomes the workload's PID.
#[derive(Clone, Debug)]
pub struct Tracer {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// A line it prints on stdout once every probe is attached (bpftrace:
    /// `BEGIN { printf("ready\n"); }`, which runs after attaching).
    pub ready_line: Option<String>,
    /// Uprobes it attaches: at least this many perf-event uprobes, or this
    /// many uprobe_multi links (see [`Tracer::with_uprobes`]).
    pub uprobes: Option<(usize, usize)>,
}

impl Tracer {
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(|&a| a.to_owned()).collect(),
            ready_line: None,
            uprobes: None,
        }
    }

    /// Attached only once it holds at least `perf_events` perf-event
    /// uprobes or `multi_links` uprobe_multi links: a tracer that verifies
    /// large programs for seconds before attaching (on a loaded machine)
    /// keeps its descriptor count still for longer than the settling time.
    pub fn with_uprobes(mut self, perf_events: usize, multi_links: usize) -> Self {
        self.uprobes = Some((perf_events, multi_links));
        self
    }

    /// A bpftrace script, ready once its BEGIN probe printed "ready".
    pub fn bpftrace(program: impl Into<PathBuf>, pre_args: &[&str], script: &str) -> Self {
        let mut args: Vec<String> = pre_args.iter().map(|&a| a.to_owned()).collect();
        args.push("-e".into());
        args.push(format!("BEGIN {{ printf(\"ready\\n\"); }} {script}"));
        Self {
            program: program.into(),
            args,
            ready_line: Some("ready".into()),
            uprobes: None,
        }
    }

    fn command(&self, pid: Option<i32>) -> Command {
        let mut cmd = Command::new(&self.program);
        for arg in &self.args {
            match pid {
                Some(pid) => cmd.arg(arg.replace("{pid}", &pid.to_string())),
                None => cmd.arg(arg),
            };
        }
        cmd
    }

    /// The command line, for the report.
    pub fn display(&self) -> String {
        crate::cmd::display(&self.command(None))
    }
}

/// A variant of a case: untraced (`tracer: None`) or under one tracer, or a
/// tracer that cannot run here, with the reason.
pub struct Variant {
    pub name: String,
    pub tracer: Result<Option<Tracer>, String>,
    /// Said next to its figures in the report (e.g. what its BPF time leaves out).
    pub note: Option<String>,
    /// Run after each of its runs, once the tracer has exited: more figures
    /// of that run (samples in its report, bytes it wrote, a post-processing
    /// step's CPU), by name. An error makes the run a failed one.
    pub after: Option<AfterRun>,
}

/// See [`Variant::after`].
pub type AfterRun = Box<dyn Fn(&Run) -> Result<BTreeMap<String, f64>>>;

impl Variant {
    pub fn untraced() -> Self {
        Self {
            name: "untraced".into(),
            tracer: Ok(None),
            note: None,
            after: None,
        }
    }

    pub fn traced(name: &str, tracer: Result<Tracer, String>) -> Self {
        Self {
            name: name.into(),
            tracer: tracer.map(Some),
            note: None,
            after: None,
        }
    }

    pub fn with_note(mut self, note: &str) -> Self {
        self.note = Some(note.into());
        self
    }

    pub fn with_after(
        mut self,
        after: impl Fn(&Run) -> Result<BTreeMap<String, f64>> + 'static,
    ) -> Self {
        self.after = Some(Box::new(after));
        self
    }
}

/// The fixed work: a command that prints `elapsed_ns=N` (or what `parse`
/// reads) and does `ops` units of work.
pub struct Workload {
    pub command: Box<dyn Fn() -> Command>,
    /// It prints `ready` and waits for a line on stdin before working, so
    /// that a tracer can attach to its PID (`{pid}`) first.
    pub gated: bool,
    /// Once done it prints its figures and waits for one more line on
    /// stdin before exiting (so that tracers scoped to its PID, which exit
    /// with it, are still there to be read).
    pub hold_at_end: bool,
    /// Seconds the work took, from its stdout.
    pub parse: fn(&str) -> Result<f64>,
    /// Units of work per run (iterations, I/Os, round trips).
    pub ops: f64,
    /// What one unit is, for the report ("I/O", "round trip").
    pub op_name: &'static str,
}

/// `elapsed_ns=N` in a workload's output, in seconds.
pub fn parse_elapsed_ns(out: &str) -> Result<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix("elapsed_ns="))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map(|ns| ns as f64 / 1e9)
        .ok_or_else(|| anyhow!("no elapsed_ns=N line in the workload's output: {out:?}"))
}

/// One run of the workload.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// The workload's PID.
    pub pid: i32,
    /// Seconds the fixed work took.
    pub seconds: f64,
    /// CPU seconds of the workload (and its children).
    pub workload_cpu_seconds: f64,
    /// CPU time of everything else on the machine during the run, in cores:
    /// other users' builds, daemons (the tracer's own CPU is left out).
    pub other_load_cores: Option<f64>,
    pub tracer: Option<TracerRun>,
    /// Figures of the variant's `after` step.
    pub extra: BTreeMap<String, f64>,
}

/// What a tracer cost during one run of the workload.
#[derive(Clone, Debug, Serialize)]
pub struct TracerRun {
    /// CPU seconds of the tracer process while the workload ran.
    pub cpu_seconds: f64,
    /// CPU seconds of the tracer from start to exit (start-up and report included).
    pub cpu_seconds_total: f64,
    /// BPF run time and runs of its programs while the workload ran.
    pub bpf_run_time_ns: u64,
    pub bpf_run_cnt: u64,
    pub bpf_programs: usize,
    /// Per program (by kernel program id): run time and runs during the workload.
    pub per_program: Vec<ProgramRun>,
    /// Seconds from start to its programs being attached.
    pub attach_seconds: f64,
}

/// One BPF program's share of a tracer's cost in one run.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramRun {
    pub id: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// A variant's runs and figures.
#[derive(Debug, Serialize)]
pub struct VariantResult {
    pub name: String,
    pub command: Option<String>,
    /// `None` when it ran; the reason when it could not.
    pub not_available: Option<String>,
    pub note: Option<String>,
    pub runs: Vec<Run>,
    /// Errors of single runs that were left out.
    pub failed_runs: Vec<String>,
    pub seconds: Option<Summary>,
    /// Median traced time over median untraced time (1.03 = 3% slower).
    pub ratio: Option<f64>,
    /// Median of the ratios of each traced run to the untraced run of the same round.
    pub paired_ratio: Option<f64>,
    /// Units of work per second (median).
    pub ops_per_second: Option<f64>,
    pub direct: Option<Direct>,
    /// Medians over the runs of the `after` step's figures.
    pub extra: BTreeMap<String, f64>,
}

/// Direct cost of a tracer, summed over its runs.
#[derive(Debug, Serialize)]
pub struct Direct {
    /// BPF run time per program run.
    pub bpf_ns_per_event: Option<f64>,
    /// BPF program runs per unit of work and per second of work.
    pub events_per_op: f64,
    pub events_per_second: f64,
    /// BPF time per unit of work.
    pub bpf_ns_per_op: f64,
    /// Tracer process CPU time per unit of work.
    pub tracer_ns_per_op: f64,
    /// BPF time and tracer CPU as a share of the workload's own CPU time (%).
    pub bpf_percent_of_workload_cpu: f64,
    pub tracer_percent_of_workload_cpu: f64,
    /// BPF time and tracer CPU per second of work, in milliseconds.
    pub bpf_ms_per_second: f64,
    pub tracer_ms_per_second: f64,
    /// Tracer CPU seconds from start to exit, median per run.
    pub tracer_cpu_seconds_total: f64,
    pub attach_seconds: f64,
}

/// Runs every available variant `ctx.reps` times, interleaved: round r runs
/// each variant once, starting at a different variant each round.
pub fn run(
    ctx: &Ctx,
    case: &str,
    workload: &Workload,
    variants: Vec<Variant>,
) -> Result<Vec<VariantResult>> {
    let mut results: Vec<VariantResult> = variants
        .iter()
        .map(|v| VariantResult {
            name: v.name.clone(),
            command: v
                .tracer
                .as_ref()
                .ok()
                .and_then(|t| t.as_ref().map(Tracer::display)),
            not_available: v.tracer.as_ref().err().cloned(),
            note: v.note.clone(),
            runs: Vec::new(),
            failed_runs: Vec::new(),
            seconds: None,
            ratio: None,
            paired_ratio: None,
            ops_per_second: None,
            direct: None,
            extra: BTreeMap::new(),
        })
        .collect();
    for r in &results {
        if let Some(why) = &r.not_available {
            eprintln!("  [{case}] {}: not available: {why}", r.name);
        }
    }
    // One untraced run first, not counted: page cache, file layout (fio), CPU frequency.
    eprintln!("  [{case}] warm-up run");
    run_once(ctx, workload, None).map_err(|e| match e {
        RunError::Unavailable(why) => anyhow!(why),
        RunError::Failed(err) => err,
    })?;
    let n = variants.len();
    for round in 0..ctx.reps {
        for k in 0..n {
            let i = (round + k) % n;
            let tracer = match &variants[i].tracer {
                Ok(t) => t.as_ref(),
                Err(_) => continue,
            };
            if results[i].not_available.is_some() {
                continue;
            }
            ctx.check_interrupted()?;
            let label = format!(
                "  [{case}] round {}/{} {:<22}",
                round + 1,
                ctx.reps,
                variants[i].name
            );
            let run = run_once(ctx, workload, tracer).and_then(|mut run| {
                if let Some(after) = &variants[i].after {
                    run.extra = after(&run)?;
                }
                Ok(run)
            });
            match run {
                Ok(run) => {
                    eprintln!(
                        "{label} {:>8.3} s{}",
                        run.seconds,
                        direct_line(workload, &run)
                    );
                    results[i].runs.push(run);
                }
                Err(RunError::Unavailable(why)) => {
                    eprintln!("{label} not available: {why}");
                    results[i].not_available = Some(why);
                }
                Err(RunError::Failed(err)) => {
                    if tracer.is_none() {
                        return Err(err.context(format!("the untraced {case} workload failed")));
                    }
                    eprintln!("{label} failed: {err:#}");
                    results[i].failed_runs.push(format!("{err:#}"));
                    if results[i].failed_runs.len() >= 3 && results[i].runs.is_empty() {
                        results[i].not_available =
                            Some(format!("every run failed; the last: {err:#}"));
                    }
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
    summarize(workload, &mut results);
    Ok(results)
}

fn direct_line(workload: &Workload, run: &Run) -> String {
    let Some(t) = &run.tracer else {
        return String::new();
    };
    let mut s = format!("  tracer CPU {:.1} ms", t.cpu_seconds * 1e3);
    if t.bpf_run_cnt > 0 {
        s += &format!(
            ", BPF {:.1} ms in {} runs ({:.0} ns each, {:.2} per {})",
            t.bpf_run_time_ns as f64 / 1e6,
            t.bpf_run_cnt,
            t.bpf_run_time_ns as f64 / t.bpf_run_cnt as f64,
            t.bpf_run_cnt as f64 / workload.ops,
            workload.op_name
        );
    } else {
        s += ", no BPF program runs";
    }
    s
}

enum RunError {
    /// The tracer cannot run here (exited at start, or never attached).
    Unavailable(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for RunError {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

fn start_workload(ctx: &Ctx, workload: &Workload) -> Result<Proc> {
    let mut cmd = (workload.command)();
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::from(ctx.log_file("workload")?));
    cmd.stdin(if workload.gated || workload.hold_at_end {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut proc = Proc::spawn(&mut cmd)?;
    if workload.gated {
        match proc.read_line()? {
            Some(line) if line == "ready" => {}
            other => bail!(
                "`{}` printed {other:?} instead of \"ready\"; see {}",
                proc.display,
                ctx.log_path("workload").display()
            ),
        }
    }
    Ok(proc)
}

fn run_once(ctx: &Ctx, workload: &Workload, tracer: Option<&Tracer>) -> Result<Run, RunError> {
    // A gated workload starts first, so that the tracer can be given its PID.
    let mut early = if workload.gated {
        Some(start_workload(ctx, workload)?)
    } else {
        None
    };
    let mut traced = match tracer {
        Some(t) => Some(start_tracer(ctx, t, early.as_ref().map(|p| p.pid))?),
        None => None,
    };
    let before = traced.as_ref().map(|t| t.snapshot());
    let busy0 = process::system_busy_seconds();
    let mut work = match early.take() {
        Some(mut p) => {
            p.write_line("go")?;
            p
        }
        None => start_workload(ctx, workload)?,
    };
    // A held workload waits for a line after printing its figures: the
    // tracer's counters are read while the process still exists (`profile
    // --pid` and `perf record -p` exit with it).
    let mut out = String::new();
    let mut held = None;
    if workload.hold_at_end {
        while let Some(line) = work.read_line()? {
            out.push_str(&line);
            out.push('\n');
            if (workload.parse)(&out).is_ok() {
                held = Some((
                    process::system_busy_seconds(),
                    traced.as_ref().map(|t| t.snapshot()),
                ));
                let _ = work.write_line("exit");
                break;
            }
        }
    }
    let exit = work
        .wait_timeout(Duration::from_secs(3600))?
        .ok_or_else(|| anyhow!("`{}` ran for an hour; stopped", work.display))?;
    let (busy1, after) = held.unwrap_or_else(|| {
        (
            process::system_busy_seconds(),
            traced.as_ref().map(|t| t.snapshot()),
        )
    });
    out.push_str(&work.read_rest()?);
    if !exit.status.success() {
        return Err(anyhow!(
            "`{}` failed ({}); its stderr is in {}",
            work.display,
            crate::cmd::describe(exit.status),
            ctx.log_path("workload").display()
        )
        .into());
    }
    let seconds = (workload.parse)(&out)?;
    let tracer_run = match (traced.as_mut(), before, after) {
        (Some(t), Some(before), Some(after)) => {
            let was_alive = t.proc.alive();
            let end = t.proc.stop(Duration::from_secs(120))?;
            if !was_alive {
                return Err(anyhow!(
                    "the tracer exited while the workload ran ({}): {}",
                    crate::cmd::describe(end.status),
                    t.stderr_tail()
                )
                .into());
            }
            let (bpf_run_time_ns, bpf_run_cnt) = delta(&before.progs, &after.progs);
            if !after.progs.is_empty() && bpf_run_cnt == 0 {
                return Err(anyhow!(
                    "none of the tracer's {} BPF programs ran during the workload: it was not \
                     attached yet, or does not see this workload",
                    after.progs.len()
                )
                .into());
            }
            Some(TracerRun {
                cpu_seconds: after.cpu_seconds - before.cpu_seconds,
                cpu_seconds_total: end.cpu_seconds,
                bpf_run_time_ns,
                bpf_run_cnt,
                bpf_programs: after.progs.len(),
                per_program: after
                    .progs
                    .iter()
                    .map(|(&id, a)| {
                        let b = before.progs.get(&id).copied().unwrap_or_default();
                        ProgramRun {
                            id,
                            run_time_ns: a.run_time_ns.saturating_sub(b.run_time_ns),
                            run_cnt: a.run_cnt.saturating_sub(b.run_cnt),
                        }
                    })
                    .collect(),
                attach_seconds: t.attach_seconds,
            })
        }
        _ => None,
    };
    let tracer_cpu = tracer_run.as_ref().map_or(0.0, |t| t.cpu_seconds);
    let other_load_cores = match (busy0, busy1) {
        (Some(b0), Some(b1)) if seconds > 0.0 => {
            Some(((b1 - b0) - exit.cpu_seconds - tracer_cpu).max(0.0) / seconds)
        }
        _ => None,
    };
    Ok(Run {
        pid: work.pid,
        seconds,
        workload_cpu_seconds: exit.cpu_seconds,
        other_load_cores,
        tracer: tracer_run,
        extra: BTreeMap::new(),
    })
}

/// Run time and count over the programs present at both snapshots.
fn delta(before: &BTreeMap<u32, ProgStats>, after: &BTreeMap<u32, ProgStats>) -> (u64, u64) {
    after
        .iter()
        .filter_map(|(id, a)| {
            let b = before.get(id).copied().unwrap_or_default();
            Some((
                a.run_time_ns.checked_sub(b.run_time_ns)?,
                a.run_cnt.checked_sub(b.run_cnt)?,
            ))
        })
        .fold((0, 0), |(t, c), (dt, dc)| (t + dt, c + dc))
}

/// A started tracer.
pub struct Running {
    pub proc: Proc,
    pub attach_seconds: f64,
    stderr: PathBuf,
}

/// The tracer's counters at one moment.
pub struct Snapshot {
    pub cpu_seconds: f64,
    pub progs: BTreeMap<u32, ProgStats>,
}

impl Running {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            cpu_seconds: process::cpu_seconds(self.proc.pid).unwrap_or(0.0),
            progs: process::bpf_progs(self.proc.pid),
        }
    }

    /// The last lines of its stderr, for messages.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr)
    }
}

/// The last few non-empty lines of a file, joined with " | ".
pub fn tail(path: &std::path::Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        "(no output)".into()
    } else {
        tail
    }
}

/// Starts the tracer and waits until its probes are attached: its count of
/// BPF-program and perf-event descriptors is non-zero and has not changed
/// for half a second.
fn start_tracer(ctx: &Ctx, tracer: &Tracer, pid: Option<i32>) -> Result<Running, RunError> {
    let stderr = ctx.log_path("tracer");
    let stdout = ctx.log_path("tracer.stdout");
    let mut cmd = tracer.command(pid);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(ctx.log_file("tracer.stdout")?))
        .stderr(Stdio::from(ctx.log_file("tracer")?));
    let start = Instant::now();
    let mut proc = Proc::spawn(&mut cmd).map_err(|e| RunError::Unavailable(format!("{e:#}")))?;
    let unavailable =
        |e: String| RunError::Unavailable(format!("{e}; its stderr: {}", tail(&stderr)));
    let mut attach_seconds =
        wait_attached_with(&mut proc, start, Duration::from_secs(60), tracer.uprobes)
            .map_err(unavailable)?;
    if let Some(line) = &tracer.ready_line {
        loop {
            let text = fs::read_to_string(&stdout).unwrap_or_default();
            if text.lines().any(|l| l.trim() == line) {
                attach_seconds = start.elapsed().as_secs_f64();
                break;
            }
            if !proc.alive() || start.elapsed() > Duration::from_secs(120) {
                return Err(unavailable(format!(
                    "`{}` never printed {line:?} on stdout",
                    proc.display
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(Running {
        proc,
        attach_seconds,
        stderr,
    })
}

/// Waits until `proc`'s probe descriptors are there and stable; returns the
/// seconds from `since` until they reached their final count.
pub fn wait_attached(proc: &mut Proc, since: Instant, timeout: Duration) -> Result<f64, String> {
    wait_attached_with(proc, since, timeout, None)
}

/// [`wait_attached`], and with `uprobes` = (perf events, uprobe_multi
/// links), until it holds at least that many of either.
pub fn wait_attached_with(
    proc: &mut Proc,
    since: Instant,
    timeout: Duration,
    uprobes: Option<(usize, usize)>,
) -> Result<f64, String> {
    let start = Instant::now();
    let mut last = 0;
    let mut last_change = start;
    loop {
        if !proc.alive() {
            let status = proc
                .wait_timeout(Duration::from_secs(5))
                .ok()
                .flatten()
                .map_or_else(|| "exited".into(), |e| crate::cmd::describe(e.status));
            return Err(format!("`{}` exited at start ({status})", proc.display));
        }
        let n = process::probe_fds(proc.pid);
        let now = Instant::now();
        if n != last {
            last = n;
            last_change = now;
        } else if n > 0
            && now - last_change >= Duration::from_millis(500)
            && uprobes.is_none_or(|(events, links)| {
                let (e, l) = process::uprobe_fds(proc.pid);
                e >= events || l >= links
            })
        {
            return Ok(last_change.saturating_duration_since(since).as_secs_f64());
        }
        if now - start > timeout {
            return Err(match uprobes {
                Some((events, links)) => {
                    let (e, l) = process::uprobe_fds(proc.pid);
                    format!(
                        "`{}` did not attach its uprobes within {} s ({e} of {events} perf                          events, {l} of {links} uprobe_multi links)",
                        proc.display,
                        timeout.as_secs()
                    )
                }
                None => format!(
                    "`{}` attached no probe within {} s",
                    proc.display,
                    timeout.as_secs()
                ),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn summarize(workload: &Workload, results: &mut [VariantResult]) {
    let secs = |r: &VariantResult| r.runs.iter().map(|x| x.seconds).collect::<Vec<_>>();
    let base = results.first().map(secs).unwrap_or_default();
    let base_median = stats::median(&base);
    for r in results.iter_mut() {
        let s = secs(r);
        r.seconds = Summary::of(&s);
        let median = r.seconds.map(|s| s.median);
        r.ops_per_second = median.and_then(|m| stats::ratio(workload.ops, m));
        if r.runs.iter().any(|x| x.tracer.is_some()) {
            r.ratio = median
                .zip(base_median)
                .and_then(|(m, b)| stats::ratio(m, b));
            r.paired_ratio = stats::paired_ratio(&s, &base);
            r.direct = direct(workload, &r.runs);
        }
        let keys: std::collections::BTreeSet<&String> =
            r.runs.iter().flat_map(|x| x.extra.keys()).collect();
        r.extra = keys
            .into_iter()
            .filter_map(|k| {
                let values: Vec<f64> = r
                    .runs
                    .iter()
                    .filter_map(|x| x.extra.get(k))
                    .copied()
                    .collect();
                Some((k.clone(), stats::median(&values)?))
            })
            .collect();
    }
}

fn direct(workload: &Workload, runs: &[Run]) -> Option<Direct> {
    let traced: Vec<(&Run, &TracerRun)> = runs
        .iter()
        .filter_map(|r| r.tracer.as_ref().map(|t| (r, t)))
        .collect();
    if traced.is_empty() {
        return None;
    }
    let n = traced.len() as f64;
    let ops = workload.ops * n;
    let seconds: f64 = traced.iter().map(|(r, _)| r.seconds).sum();
    let work_cpu: f64 = traced.iter().map(|(r, _)| r.workload_cpu_seconds).sum();
    let bpf_ns: f64 = traced.iter().map(|(_, t)| t.bpf_run_time_ns as f64).sum();
    let cnt: f64 = traced.iter().map(|(_, t)| t.bpf_run_cnt as f64).sum();
    let cpu: f64 = traced.iter().map(|(_, t)| t.cpu_seconds).sum();
    let med = |f: fn(&TracerRun) -> f64| {
        stats::median(&traced.iter().map(|(_, t)| f(t)).collect::<Vec<_>>()).unwrap_or(0.0)
    };
    let pct = |x: f64| {
        if work_cpu > 0.0 {
            100.0 * x / work_cpu
        } else {
            0.0
        }
    };
    Some(Direct {
        bpf_ns_per_event: (cnt > 0.0).then(|| bpf_ns / cnt),
        events_per_op: cnt / ops,
        events_per_second: cnt / seconds,
        bpf_ns_per_op: bpf_ns / ops,
        tracer_ns_per_op: cpu * 1e9 / ops,
        bpf_percent_of_workload_cpu: pct(bpf_ns / 1e9),
        tracer_percent_of_workload_cpu: pct(cpu),
        bpf_ms_per_second: bpf_ns / 1e6 / seconds,
        tracer_ms_per_second: cpu * 1e3 / seconds,
        tracer_cpu_seconds_total: med(|t| t.cpu_seconds_total),
        attach_seconds: med(|t| t.attach_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_line() {
        assert_eq!(
            parse_elapsed_ns("ready\nelapsed_ns=1500000000\n").unwrap(),
            1.5
        );
        assert!(parse_elapsed_ns("nothing").is_err());
    }

    #[test]
    fn delta_over_common_programs() {
        let s = |t, c| ProgStats {
            run_time_ns: t,
            run_cnt: c,
        };
        let before = BTreeMap::from([(1, s(100, 1)), (2, s(50, 5))]);
        let after = BTreeMap::from([(1, s(300, 3)), (2, s(50, 5)), (3, s(10, 1))]);
        assert_eq!(delta(&before, &after), (210, 3));
    }

    #[test]
    fn pid_placeholder() {
        let t = Tracer::new("bpftrace", &["-p", "{pid}", "-e", "x"]);
        let args: Vec<_> = t
            .command(Some(42))
            .get_args()
            .map(|a| a.to_owned())
            .collect();
        assert_eq!(args, ["-p", "42", "-e", "x"]);
        assert_eq!(t.display(), "bpftrace -p '{pid}' -e x");
    }

    fn run(seconds: f64, tracer: Option<(u64, u64, f64)>) -> Run {
        Run {
            pid: 1,
            seconds,
            workload_cpu_seconds: seconds * 2.0,
            other_load_cores: Some(0.0),
            tracer: tracer.map(|(ns, cnt, cpu)| TracerRun {
                cpu_seconds: cpu,
                cpu_seconds_total: cpu * 2.0,
                bpf_run_time_ns: ns,
                bpf_run_cnt: cnt,
                bpf_programs: 1,
                per_program: Vec::new(),
                attach_seconds: 0.1,
            }),
            extra: BTreeMap::from([("samples".to_owned(), seconds * 10.0)]),
        }
    }

    #[test]
    fn summary_ratios_and_direct_cost() {
        let workload = Workload {
            command: Box::new(|| Command::new("true")),
            gated: false,
            hold_at_end: false,
            parse: parse_elapsed_ns,
            ops: 1000.0,
            op_name: "op",
        };
        let result = |name: &str, runs: Vec<Run>| VariantResult {
            name: name.into(),
            command: None,
            not_available: None,
            note: None,
            runs,
            failed_runs: Vec::new(),
            seconds: None,
            ratio: None,
            paired_ratio: None,
            ops_per_second: None,
            direct: None,
            extra: BTreeMap::new(),
        };
        let mut results = vec![
            result(
                "untraced",
                vec![run(1.0, None), run(2.0, None), run(1.5, None)],
            ),
            result(
                "traced",
                vec![
                    run(1.1, Some((1_000_000, 2000, 0.01))),
                    run(2.4, Some((1_000_000, 2000, 0.01))),
                    run(1.5, Some((1_000_000, 2000, 0.01))),
                ],
            ),
        ];
        summarize(&workload, &mut results);
        let base = &results[0];
        assert_eq!(base.seconds.unwrap().median, 1.5);
        assert_eq!(base.ratio, None);
        assert!(base.direct.is_none());
        let t = &results[1];
        assert_eq!(t.ratio, Some(1.0));
        // Pairs 1.1/1.0, 2.4/2.0, 1.5/1.5: median 1.1.
        assert!((t.paired_ratio.unwrap() - 1.1).abs() < 1e-12);
        let d = t.direct.as_ref().unwrap();
        assert_eq!(d.bpf_ns_per_event, Some(500.0));
        assert_eq!(d.events_per_op, 2.0);
        assert_eq!(d.bpf_ns_per_op, 1000.0);
        assert!((d.tracer_ns_per_op - 10_000.0).abs() < 1e-6);
        // 3 ms of BPF and 30 ms of tracer CPU over 10 s of workload CPU.
        assert!((d.bpf_percent_of_workload_cpu - 0.03).abs() < 1e-9);
        assert!((d.tracer_percent_of_workload_cpu - 0.3).abs() < 1e-9);
        assert_eq!(d.tracer_cpu_seconds_total, 0.02);
        assert_eq!(t.extra.get("samples"), Some(&15.0));
    }
}
