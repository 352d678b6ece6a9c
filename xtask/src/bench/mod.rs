//! `cargo xtask bench`: overhead of perf-user next to the tools users would
//! pick instead (perf, bpftrace, libbpf-tools), on fixed workloads, written to
//! target/bench/report.md and report.json.
//!
//! Each comparison case ([`compare`]) runs a fixed amount of work untraced
//! and under each tracer, interleaved, several times, and reports medians
//! and ratios to the untraced run. Next to them it reports the direct cost,
//! which is precise where wall-clock ratios are noisy: the tracer's BPF
//! programs' run time and run count from the kernel's statistics (read from
//! /proc/PID/fdinfo of the tracer's bpf-prog descriptors) and the tracer
//! process's CPU time. One file per case; `stats` and `report` are shared.

mod alloc;
mod block;
pub(crate) mod compare;
mod cpu;
pub(crate) mod daemon;
mod offcpu;
pub(crate) mod process;
mod report;
pub(crate) mod stats;
mod symbolize;
mod tcp;
mod unwind;

use std::{
    fs::{self, File},
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::{apt, build, cmd};

/// Debian packages the benchmark runs: the peers, fio, and a C compiler for
/// the workloads.
const PACKAGES: &[&str] = &[
    "linux-perf",
    "bpftrace",
    "libbpf-tools",
    "fio",
    "gcc",
    "libc6-dev",
];

/// The cases, in the order they run.
const CASES: &[&str] = &[
    "cpu",
    "block",
    "tcp",
    "alloc",
    "offcpu",
    "daemon",
    "symbolize",
];

#[derive(clap::Args)]
pub struct Args {
    /// Short run: fewer rounds and shorter workloads (a few minutes in all).
    #[arg(long)]
    quick: bool,
    /// Rounds of each comparison (default: 3 with --quick, 10 otherwise).
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Only these cases, comma-separated: cpu, block, tcp, alloc, daemon, symbolize.
    #[arg(long, value_delimiter = ',', value_name = "CASES")]
    only: Vec<String>,
    /// Use this perf-user binary instead of building target/release/perf-user
    /// (the symbolization case then looks for examples/symbolize_bench next to it).
    #[arg(long, value_name = "PATH")]
    perf_user: Option<PathBuf>,
    /// Where to write report.md and report.json (default: target/bench).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Set by SIGINT/SIGTERM; the bench stops between runs and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// What every case needs.
pub struct Ctx {
    pub quick: bool,
    pub reps: usize,
    /// Scratch directory on the workspace's disk.
    pub tmp: PathBuf,
    /// The compiled workloads.
    pub bin: PathBuf,
    /// Our release binary, or why there is none.
    pub perf_user: Result<PathBuf, String>,
    /// The symbolization benchmark example, or why there is none.
    pub symbolize_bench: Result<PathBuf, String>,
    /// The unwind-table build-time example, or why there is none.
    pub unwind_table_bench: Result<PathBuf, String>,
    pub target_dir: PathBuf,
    pub ncpu: usize,
}

impl Ctx {
    /// Fails once SIGINT or SIGTERM arrived.
    pub fn check_interrupted(&self) -> Result<()> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }

    /// Where the stderr of `name` (a workload, a tracer) goes.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.tmp.join(format!("{name}.stderr"))
    }

    /// `log_path(name)`, created anew.
    pub fn log_file(&self, name: &str) -> Result<File> {
        let path = self.log_path(name);
        File::create(&path).with_context(|| format!("cannot create {}", path.display()))
    }

    /// A compiled workload.
    pub fn workload(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Our binary, if there is one, and its `--help` for `command`, or why
    /// it cannot be used for that command.
    pub fn perf_user_command(&self, command: &str) -> Result<(PathBuf, String), String> {
        let bin = self.perf_user.clone()?;
        let out = cmd::capture(Command::new(&bin).args([command, "--help"]))
            .map_err(|e| format!("{e:#}"))?;
        if !out.status.success() {
            return Err(format!(
                "this perf-user has no `{command}` command yet (`perf-user {command} --help` \
                 failed: {})",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
            ));
        }
        Ok((bin, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// `perf-user latency` with `args` (its collector flag first, then any
    /// others), running for an hour with no output, or why this binary
    /// cannot: a flag its `latency --help` does not know.
    pub fn latency_tracer(&self, args: &[&str]) -> Result<compare::Tracer, String> {
        let (bin, help) = self.perf_user_command("latency")?;
        if let Some(flag) = args
            .iter()
            .find(|a| a.starts_with("--") && !help.contains(**a))
        {
            return Err(format!("this perf-user's `latency` has no {flag}"));
        }
        let mut all = vec!["latency", "-d", "1h", "-q", "-o", "/dev/null"];
        all.extend(args);
        Ok(compare::Tracer::new(bin, &all))
    }
}

/// The outcome of one case, for the reports.
#[derive(Debug, Serialize)]
pub struct CaseReport {
    pub id: &'static str,
    pub title: &'static str,
    /// The fixed work, in words and numbers.
    pub work: String,
    /// Why the whole case could not run.
    pub not_available: Option<String>,
    /// Comparison cases: what one unit of work is ("I/O").
    pub op_name: String,
    /// Comparison cases: one per variant, untraced first.
    pub variants: Vec<compare::VariantResult>,
    /// Other cases: named figures.
    pub metrics: Vec<Metric>,
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl CaseReport {
    pub fn new(id: &'static str, title: &'static str) -> Self {
        Self {
            id,
            title,
            work: String::new(),
            not_available: None,
            op_name: String::new(),
            variants: Vec::new(),
            metrics: Vec::new(),
            notes: Vec::new(),
            seconds: 0.0,
        }
    }

    pub fn unavailable(mut self, why: impl Into<String>) -> Self {
        self.not_available = Some(why.into());
        self
    }
}

/// One figure of a non-comparison case, with the target it aims for.
#[derive(Debug, Serialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// e.g. "< 50 MB"; `meets` says whether the value does.
    pub target: Option<String>,
    pub meets: Option<bool>,
}

impl Metric {
    pub fn new(name: &str, value: f64, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            value,
            unit,
            target: None,
            meets: None,
        }
    }

    /// With an upper bound as the target.
    pub fn below(mut self, limit: f64, shown: &str) -> Self {
        self.target = Some(format!("< {shown}"));
        self.meets = Some(self.value < limit);
        self
    }
}

pub fn main(args: &Args) -> Result<()> {
    let started = Instant::now();
    for case in &args.only {
        if !CASES.contains(&case.as_str()) {
            bail!(
                "unknown case {case:?} in --only; the cases are {}",
                CASES.join(", ")
            );
        }
    }
    let selected = |case: &str| args.only.is_empty() || args.only.iter().any(|c| c == case);
    if !cmd::is_root() {
        bail!(
            "the benchmark loads eBPF programs (ours and the peers') and reads other \
             processes' /proc entries: run it as root (sudo -E cargo xtask bench)"
        );
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }

    eprintln!("== setting up");
    apt::ensure("benchmark tools", PACKAGES)?;
    let target_dir = cmd::target_dir()?;
    let out_dir = args.out.clone().unwrap_or_else(|| target_dir.join("bench"));
    let tmp = out_dir.join("tmp");
    let bin = tmp.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    compile_workloads(&bin)?;
    let mut examples = Vec::new();
    if selected("symbolize") {
        examples.push("symbolize_bench");
    }
    if selected("cpu") {
        examples.push("unwind_table_bench");
    }
    let (perf_user, mut built) = match &args.perf_user {
        Some(path) => {
            let path = fs::canonicalize(path)
                .with_context(|| format!("--perf-user {}: no such file", path.display()))?;
            let next_to = |name: &str| {
                path.parent()
                    .map(|d| d.join("examples").join(name))
                    .filter(|p| p.is_file())
                    .ok_or_else(|| {
                        format!(
                            "no examples/{name} next to {}; build it with `cargo build \
                             --release -p perf-user --example {name}`",
                            path.display()
                        )
                    })
            };
            let examples = examples.iter().map(|&e| (e, next_to(e))).collect();
            (Ok(path.clone()), examples)
        }
        None => build_ours(&target_dir, &examples),
    };
    let mut example = |name: &str| {
        built
            .iter()
            .position(|(e, _)| *e == name)
            .map_or_else(|| Err("not built".into()), |i| built.swap_remove(i).1)
    };
    let symbolize_bench = example("symbolize_bench");
    let unwind_table_bench = example("unwind_table_bench");
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ctx = Ctx {
        quick: args.quick,
        reps: args.reps.unwrap_or(if args.quick { 3 } else { 10 }).max(1),
        tmp,
        bin,
        perf_user,
        symbolize_bench,
        unwind_table_bench,
        target_dir,
        ncpu,
    };
    if let Err(why) = &ctx.perf_user {
        eprintln!("warning: {why}; the cases report ours as not available");
    }

    let machine = report::Machine::describe();
    let stats = BpfStats::enable()?;
    eprintln!("kernel BPF statistics on ({})", stats.how());
    let mut cases = Vec::new();
    for &case in CASES.iter().filter(|c| selected(c)) {
        if ctx.check_interrupted().is_err() {
            break;
        }
        eprintln!("== case {case}");
        // The cpu case is two comparisons: cpu_burn, and whole user stacks
        // on python3 (issue 13).
        let parts: &[(&'static str, CaseFn)] = match case {
            "cpu" => &[("cpu", cpu::run), ("cpu-unwind", unwind::run)],
            "block" => &[("block", block::run)],
            "tcp" => &[("tcp", tcp::run)],
            "alloc" => &[("alloc", alloc::run)],
            "offcpu" => &[("offcpu", offcpu::run)],
            "daemon" => &[
                ("daemon", daemon::run),
                ("daemon-unwind", daemon::run_unwind),
            ],
            "symbolize" => &[("symbolize", symbolize::run)],
            _ => unreachable!("checked against CASES"),
        };
        for &(id, run) in parts {
            if ctx.check_interrupted().is_err() {
                break;
            }
            let t0 = Instant::now();
            let mut report = match run(&ctx) {
                Ok(r) => r,
                Err(e) if ctx.check_interrupted().is_err() => {
                    eprintln!("interrupted during case {id}: {e:#}");
                    break;
                }
                Err(e) => {
                    eprintln!("case {id} failed: {e:#}");
                    CaseReport::new(id, case_title(id)).unavailable(format!("failed: {e:#}"))
                }
            };
            report.seconds = t0.elapsed().as_secs_f64();
            if let Some(why) = &report.not_available {
                eprintln!("  [{id}] not available: {why}");
            }
            cases.push(report);
        }
    }
    drop(stats);

    let interrupted = ctx.check_interrupted().is_err();
    let doc = report::Document {
        perf_user_binary: match (&ctx.perf_user, &args.perf_user) {
            (Ok(path), Some(_)) => format!("{} (--perf-user)", path.display()),
            (Ok(path), None) => format!("{} (built by the bench)", path.display()),
            (Err(why), _) => format!("none: {why}"),
        },
        quick: ctx.quick,
        reps: ctx.reps,
        interrupted,
        seconds: started.elapsed().as_secs_f64(),
        machine,
        cases,
    };
    let (md, json) = report::write(&out_dir, &doc)?;
    eprintln!("wrote {} and {}", md.display(), json.display());
    if interrupted {
        bail!("interrupted: the report holds the cases that finished");
    }
    Ok(())
}

pub fn case_title(id: &str) -> &'static str {
    match id {
        "cpu" => "CPU profiling",
        "cpu-unwind" => "CPU profiling, whole user stacks without frame pointers (issue 13)",
        "block" => "Block I/O latency",
        "tcp" => "TCP latency",
        "alloc" => "Allocation tracing",
        "offcpu" => "Off-CPU time (issue 16)",
        "daemon" => "Daemon, all collectors",
        "daemon-unwind" => "Daemon, unwind tables for every process (issue 13)",
        "symbolize" => "Symbolization",
        _ => "?",
    }
}

fn compile_workloads(bin: &Path) -> Result<()> {
    let src = cmd::workspace_root().join("xtask").join("workloads");
    for name in ["cpu_burn", "malloc_loop", "tcp_rr", "ctxswitch"] {
        let source = src.join(format!("{name}.c"));
        let mut gcc = Command::new("gcc");
        gcc.args(["-O2", "-g", "-fno-omit-frame-pointer", "-Wall", "-o"])
            .arg(bin.join(name))
            .arg(&source);
        cmd::output(&mut gcc).with_context(|| {
            format!(
                "cannot compile the workload {}; gcc and libc6-dev are needed \
                 (apt-get install gcc libc6-dev)",
                source.display()
            )
        })?;
    }
    eprintln!("compiled the workloads into {}", bin.display());
    Ok(())
}

/// One comparison or measurement of a case.
type CaseFn = fn(&Ctx) -> Result<CaseReport>;

/// A built example, or why there is none.
type Example = (&'static str, Result<PathBuf, String>);

/// Builds target/release/perf-user and the `examples` the selected cases
/// use; a failed build is reported per case instead of stopping the peers'
/// measurements.
fn build_ours(
    target_dir: &Path,
    examples: &[&'static str],
) -> (Result<PathBuf, String>, Vec<Example>) {
    let release = target_dir.join("release");
    let ours = build::build(true, &[])
        .map(|()| release.join("perf-user"))
        .map_err(|e| format!("building perf-user failed: {e:#}"));
    let built = examples
        .iter()
        .map(|&name| {
            let build_example = || -> Result<PathBuf> {
                let ready = crate::setup::ensure(crate::setup::Mode::Quiet)?;
                let mut cargo = ready.cargo()?;
                cargo.args([
                    "build",
                    "--release",
                    "--package",
                    "perf-user",
                    "--example",
                    name,
                ]);
                eprintln!("running: {}", cmd::display(&cargo));
                cmd::run(&mut cargo)?;
                Ok(release.join("examples").join(name))
            };
            let result =
                build_example().map_err(|e| format!("building the {name} example failed: {e:#}"));
            (name, result)
        })
        .collect();
    (ours, built)
}

/// Kernel BPF run-time statistics, on while this lives.
///
/// Uses the BPF_ENABLE_STATS command: the kernel keeps the statistics on
/// while the returned descriptor is open and turns them off by itself when
/// it is closed, even if xtask is killed. Falls back to writing
/// kernel.bpf_stats_enabled (and restoring the old value on drop).
struct BpfStats {
    _fd: Option<OwnedFd>,
    restore: Option<String>,
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        // union bpf_attr, enable_stats member: { __u32 type; }.
        let attr: [u32; 2] = [BPF_STATS_RUN_TIME, 0];
        // SAFETY: attr is a valid, initialized buffer of the size passed and
        // outlives the call; the kernel only reads it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if fd >= 0 {
            let fd = i32::try_from(fd).context("bpf() returned an fd out of range")?;
            // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            return Ok(Self {
                _fd: Some(fd),
                restore: None,
            });
        }
        let err = std::io::Error::last_os_error();
        let old = fs::read_to_string(BPF_STATS_SYSCTL).with_context(|| {
            format!(
                "cannot turn on the kernel's BPF statistics: BPF_ENABLE_STATS failed ({err}) \
                 and {BPF_STATS_SYSCTL} cannot be read; the kernel needs 5.1 or later"
            )
        })?;
        fs::write(BPF_STATS_SYSCTL, "1").with_context(|| {
            format!(
                "cannot turn on the kernel's BPF statistics: BPF_ENABLE_STATS failed ({err}) \
                 and writing 1 to {BPF_STATS_SYSCTL} failed; run as root"
            )
        })?;
        Ok(Self {
            _fd: None,
            restore: Some(old.trim().to_owned()),
        })
    }

    fn how(&self) -> String {
        match &self.restore {
            None => "BPF_ENABLE_STATS; off again when the bench exits".into(),
            Some(old) => format!("{BPF_STATS_SYSCTL}=1; restored to {old} at the end"),
        }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(old) = &self.restore
            && let Err(e) = fs::write(BPF_STATS_SYSCTL, old)
        {
            eprintln!("warning: cannot restore {BPF_STATS_SYSCTL} to {old}: {e}; do it by hand");
        }
    }
}
