//! `advise`: sample the collectors for a while, evaluate the alert rules
//! once, print the alerts with their tuning advice, and with `--apply` apply
//! the suggested allowlisted settings (previous values saved for `revert`).
//! `revert`: restore what `--apply` changed.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use crate::{
    alerts::{
        actions::{Action, Actuator},
        advice::{self, Advised},
        config::AlertsConfig,
        engine::{Engine, EngineOptions, State, to_secs},
        report::{self, AdviseReport, CollectorStatus},
        rules::Mode,
        signals::{Batch, Observation, Signal},
    },
    blockdev,
    collectors::{
        Collector as _,
        alloc::{AllocCollector, AllocOptions},
        block::{BlockCollector, BlockOptions},
        cpu::{CpuCollector, CpuOptions},
        tcp::{TcpCollector, TcpOptions},
    },
    config::{Config, TcpSection},
    duration,
    leaks::{
        aggregate,
        attach::{Attached, attach_running},
        image::TracedProcess,
        report as leak_report,
    },
    observe::{
        block::{self, BlockReading},
        cpu,
        leaks::{self as leak_obs, LeakProcess, StackBytes},
        tcp::{self, PortLabels, TcpLabels},
    },
    processes::{self, ProcessTable},
    profile::build::{RunInfo, build},
    progress::Progress,
    symbolize::StackSymbolizer,
};

/// Output formats of `advise`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AdviseFormat {
    /// Alerts, evidence and suggestions for a terminal.
    Table,
    /// JSON document; schema in docs/alerts.md.
    Json,
}

/// Options of `advise`.
#[derive(Debug, Args)]
pub struct AdviseArgs {
    /// How long to sample, e.g. 10s, 1m. Ctrl-C stops early and still reports.
    #[arg(short, long, default_value = "10s", value_parser = duration::clap_parse)]
    pub duration: Duration,

    /// Apply the suggested settings of the firing alerts (block queue
    /// scheduler, nr_requests, read_ahead_kb; a few net.* sysctls), saving
    /// each previous value first. Without it nothing is changed.
    #[arg(long)]
    pub apply: bool,

    /// Where --apply saves previous values [default: alerts.state_file, or
    /// /var/lib/perf-user/applied.json].
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Rules from this TOML file's [alerts] section (the daemon's
    /// configuration); default: the built-in rules.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Sample only these collectors, comma-separated (block, cpu, tcp) [default: all].
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub collectors: Option<Vec<String>>,

    /// Only this disk, by name as in `lsblk`; repeat for several.
    #[arg(long = "device", value_name = "NAME")]
    pub devices: Vec<String>,

    /// Also trace this process's allocations (malloc, free, ...) and judge
    /// the growth of each call stack's outstanding bytes (leak rules); repeat
    /// for several. Uprobes cost the process microseconds per call.
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = AdviseFormat::Table)]
    pub format: AdviseFormat,

    /// Write the report to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// No progress or status lines on standard error.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Options of `revert`.
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// The state file `advise --apply` wrote [default: alerts.state_file, or
    /// /var/lib/perf-user/applied.json].
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Take the state file's location from this configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Only show what would be restored.
    #[arg(long)]
    pub dry_run: bool,
}

/// Most call stacks judged per traced process (the most bytes first).
const LEAK_STACKS: usize = 200;

/// CPU sampling rate of `advise`: as `profile`'s default.
const CPU_HZ: u64 = 99;
/// How often the progress line is redrawn and new processes picked up.
const TICK: Duration = Duration::from_millis(250);

/// The alerts configuration: the file's `[alerts]`, or the defaults.
fn alerts_config(path: Option<&Path>) -> anyhow::Result<AlertsConfig> {
    match path {
        Some(p) => Ok(Config::load(p)?.alerts),
        None => Ok(AlertsConfig::default()),
    }
}

/// Runs `advise`.
pub async fn run(args: AdviseArgs) -> anyhow::Result<()> {
    let cfg = alerts_config(args.config.as_deref())?;
    let collectors = crate::registry::advise_names();
    let wanted: Vec<String> = match &args.collectors {
        Some(names) => {
            for n in names {
                if !collectors.contains(&n.as_str()) {
                    bail!(
                        "unknown collector {n:?}; advise samples: {}",
                        collectors.join(", ")
                    );
                }
            }
            names.clone()
        }
        None => collectors.iter().map(|s| s.to_string()).collect(),
    };
    let want = |n: &str| wanted.iter().any(|w| w == n);
    if !args.devices.is_empty() && !want("block") {
        bail!("--device filters block I/O, which --collectors leaves out; add block");
    }
    let mut devices = Vec::new();
    for name in &args.devices {
        devices.push(blockdev::resolve(name)?.dev);
    }
    let state_file = args
        .state_file
        .clone()
        .unwrap_or_else(|| cfg.state_file.clone());
    super::ready_for_ebpf()?;
    let mut out = super::open_output(args.output.as_deref())?;

    // Attach what is wanted; a collector that fails is reported, not fatal.
    let mut status = Vec::new();
    let mut fail = |name: &'static str, e: &dyn std::fmt::Display| {
        status.push(CollectorStatus {
            name,
            ok: false,
            detail: e.to_string(),
        });
    };
    let mut block = None;
    if want("block") {
        match BlockCollector::attach(&BlockOptions {
            devices,
            ..BlockOptions::default()
        }) {
            Ok(c) => block = Some(c),
            Err(e) => fail("block", &e),
        }
    }
    let mut cpu = None;
    if want("cpu") {
        match CpuCollector::attach(&CpuOptions {
            frequency_hz: CPU_HZ,
            ..CpuOptions::default()
        }) {
            Ok(c) => cpu = Some(c),
            Err(e) => fail("cpu", &e),
        }
    }
    let mut tcp = None;
    if want("tcp") {
        match TcpCollector::attach(&TcpOptions::default()) {
            Ok(c) => tcp = Some(c),
            Err(e) => fail("tcp", &e),
        }
    }
    let mut leak_traces = Vec::new();
    for &pid in &args.pids {
        leak_traces.push(
            LeakTrace::start(pid)
                .with_context(|| format!("cannot trace the allocations of PID {pid}"))?,
        );
    }
    if block.is_none() && cpu.is_none() && tcp.is_none() && leak_traces.is_empty() {
        let why: Vec<String> = status
            .iter()
            .map(|s| format!("{}: {}", s.name, s.detail))
            .collect();
        bail!("no collector could start: {}", why.join("; "));
    }

    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    let started = Instant::now();
    if !args.quiet {
        eprintln!(
            "Sampling for {:.1} s, then evaluating {} rules (Ctrl-C to stop early)…",
            args.duration.as_secs_f64(),
            cfg.rules().len()
        );
    }
    let mut procs = ProcessTable::default();
    let mut progress = Progress::new(args.quiet);
    let deadline = started + args.duration;
    let mut engine = Engine::new(
        cfg.rules(),
        EngineOptions {
            mode: Mode::OneShot,
            ..EngineOptions::default()
        },
    );
    // Leak rules judge growth: outstanding bytes per stack at a dozen
    // points over the run.
    let leak_step = (args.duration / 12).clamp(Duration::from_millis(500), Duration::from_secs(10));
    let mut next_leak = started + leak_step;
    let mut leak_obs = Vec::new();
    let interrupted = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        tokio::select! {
            _ = sigint.recv() => break true,
            _ = tokio::time::sleep(left.min(TICK)) => {}
        }
        if let Some(c) = cpu.as_mut() {
            procs.capture(c.new_pids());
            procs.reread_due();
        }
        if !leak_traces.is_empty() && Instant::now() >= next_leak {
            next_leak += leak_step;
            leak_obs = leak_step_batch(&mut engine, &mut leak_traces, SystemTime::now());
        }
        progress.update(&format!(
            "Sampling: {:.0}/{:.0} s (Ctrl-C to stop)",
            started.elapsed().as_secs_f64(),
            args.duration.as_secs_f64()
        ));
    };
    if !leak_traces.is_empty() {
        leak_obs = leak_step_batch(&mut engine, &mut leak_traces, SystemTime::now());
    }
    for t in &leak_traces {
        status.push(CollectorStatus {
            name: "leaks",
            ok: t.gone.is_none(),
            detail: match &t.gone {
                Some(why) => format!("PID {}: {why}", t.process.pid),
                None => format!("PID {} through {}", t.process.pid, t.allocator.display()),
            },
        });
    }
    drop(leak_traces);
    let elapsed = started.elapsed();
    let at = SystemTime::now();
    let mut batch = Batch::new(at, elapsed);

    if let Some(mut b) = block.take() {
        let snap = b.read().context("reading the block I/O histograms")?;
        drop(b);
        let names = blockdev::names();
        let reading = BlockReading::new(snap, &|dev| blockdev::display_name(&names, dev));
        status.push(CollectorStatus {
            name: "block",
            ok: true,
            detail: format!("{} I/Os timed", reading.counters.timed),
        });
        batch.extend(&Signal::BLOCK, block::observations(&reading, None, elapsed));
    }
    if let Some(mut t) = tcp.take() {
        let snap = t.read().context("reading the TCP histograms")?;
        drop(t);
        status.push(CollectorStatus {
            name: "tcp",
            ok: true,
            detail: format!(
                "{} RTT samples, {} retransmits",
                snap.counters.rtt_recorded, snap.counters.retransmits_seen
            ),
        });
        // Labelled as the daemon labels them, with its default port limit.
        let mut labels = TcpLabels {
            ports: PortLabels::new(Vec::new(), TcpSection::default().max_ports as usize),
            ..TcpLabels::default()
        };
        batch.extend(
            &Signal::TCP,
            tcp::observations(&tcp::port_sums(&snap, &mut labels), None, elapsed),
        );
    }
    if let Some(mut c) = cpu.take() {
        let cpus = c.cpus().len() as u32;
        let raw = c.read().context("reading the CPU samples")?;
        drop(c);
        procs.capture(raw.samples.iter().map(|(k, _)| k.pid));
        procs.reread_live();
        progress.update("Symbolizing the CPU samples…");
        let mut sym = StackSymbolizer::new();
        let profile = build(
            &raw,
            &procs,
            &mut sym,
            &RunInfo {
                frequency_hz: CPU_HZ,
                duration_secs: elapsed.as_secs_f64(),
                start_unix_nanos: at
                    .checked_sub(elapsed)
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos() as u64),
                cpus,
            },
        );
        status.push(CollectorStatus {
            name: "cpu",
            ok: true,
            detail: format!("{} samples on {cpus} CPUs", profile.total_samples),
        });
        batch.extend(
            &[Signal::CpuSelfRatio],
            cpu::cpu_observations(&profile, cpu::CPU_TOP),
        );
    }
    progress.finish();
    if interrupted {
        eprintln!(
            "Interrupted after {:.1} s; evaluating what was sampled.",
            elapsed.as_secs_f64()
        );
    }
    status.sort_by_key(|s| collectors.iter().position(|n| *n == s.name));

    engine.evaluate(&batch);
    batch.observations.extend(leak_obs);
    let root = Path::new("/");
    // Advice is paired with each firing alert here: the engine knows none.
    let alerts = report::firing(
        engine
            .alerts()
            .filter(|a| a.state == State::Firing)
            .map(|a| Advised {
                advice: Some(advice::advise(a, root)),
                alert: a.clone(),
            }),
    );
    let applied = if args.apply {
        let mut actions: Vec<Action> = Vec::new();
        for a in &alerts {
            for act in a.advice.iter().flat_map(|x| x.actions()) {
                // One value per setting: the worst alert's suggestion wins.
                if !actions.iter().any(|x| x.setting == act.setting) {
                    actions.push(Action {
                        reason: format!("{}: {}", a.alert.rule, act.reason),
                        ..act.clone()
                    });
                }
            }
        }
        if actions.is_empty() {
            Some(Default::default())
        } else {
            Some(
                Actuator::new(root, &state_file)
                    .apply(&actions, SystemTime::now())
                    .context("applying the suggested settings")?,
            )
        }
    } else {
        None
    };
    let failed_apply = applied.as_ref().is_some_and(|r| !r.failures.is_empty());
    let r = AdviseReport {
        schema_version: report::SCHEMA_VERSION,
        started_unix_secs: to_secs(at) - elapsed.as_secs_f64(),
        duration_secs: elapsed.as_secs_f64(),
        collectors: status,
        rules: engine.rules().len(),
        alerts,
        not_evaluated: report::not_evaluated(engine.status()),
        observed: report::observed(&batch.observations),
        applied,
        state_file: state_file.display().to_string(),
    };
    match args.format {
        AdviseFormat::Table => report::write_text(&r, &mut out),
        AdviseFormat::Json => report::write_json(&r, &mut out),
    }
    .and_then(|()| out.flush())
    .context("writing the report")?;
    if failed_apply {
        bail!(
            "some settings could not be applied (see the report); those that were are saved in {}",
            state_file.display()
        );
    }
    Ok(())
}

/// Reads every traced process and evaluates the leak rules on it; returns
/// the observations (for the report's summary).
fn leak_step_batch(
    engine: &mut Engine,
    traces: &mut [LeakTrace],
    at: SystemTime,
) -> Vec<Observation> {
    let mut batch = Batch::new(at, Duration::ZERO);
    let processes: Vec<LeakProcess> = traces.iter_mut().filter_map(LeakTrace::observe).collect();
    let obs = leak_obs::observations(&processes);
    batch.extend(&Signal::LEAKS, obs.clone());
    engine.evaluate(&batch);
    obs
}

/// One process whose allocations are traced.
struct LeakTrace {
    process: TracedProcess,
    collector: AllocCollector,
    allocator: PathBuf,
    sym: StackSymbolizer,
    baseline: std::collections::HashMap<aggregate::StackRef, u64>,
    last: Instant,
    started: Instant,
    start_unix_nanos: u64,
    gone: Option<String>,
}

impl LeakTrace {
    /// Finds the process's allocator and attaches the uprobes.
    fn start(pid: u32) -> anyhow::Result<Self> {
        if !processes::exists(pid) {
            bail!("no process with PID {pid}: find the PID with `pgrep NAME`");
        }
        let Attached {
            process,
            allocator,
            collector,
        } = attach_running(
            &AllocOptions {
                tgid: pid,
                ..AllocOptions::default()
            },
            None,
        )?;
        Ok(Self {
            process,
            collector,
            allocator: allocator.path,
            sym: StackSymbolizer::new(),
            baseline: Default::default(),
            last: Instant::now(),
            started: Instant::now(),
            start_unix_nanos: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            gone: None,
        })
    }

    /// Outstanding allocations, and bytes per call stack now, symbolized;
    /// `None` once the process is gone (the reason is kept).
    fn observe(&mut self) -> Option<LeakProcess> {
        if self.gone.is_some() {
            return None;
        }
        let raw = match self.collector.read() {
            Ok(r) if processes::exists(self.process.pid) => r,
            Ok(_) => {
                self.gone = Some("the process exited".into());
                return None;
            }
            Err(e) => {
                self.gone = Some(e.to_string());
                return None;
            }
        };
        self.process.refresh(raw.generation);
        let now = Instant::now();
        let infos: Vec<_> = raw.allocations.iter().map(|(_, i)| *i).collect();
        let agg = aggregate::aggregate(
            &infos,
            &raw.totals,
            &self.baseline,
            &aggregate::Window {
                // Ages are not used here (no minimum age), so the clock of
                // the kernel's timestamps is not needed.
                now_ns: 0,
                min_age_ns: 0,
                secs: (now - self.last).as_secs_f64(),
                scale: 1,
            },
        );
        let mut ids: Vec<u32> = agg
            .rows
            .iter()
            .take(LEAK_STACKS)
            .filter_map(|r| u32::try_from(r.stack.stack_id).ok())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let stacks = self.collector.stacks(ids).unwrap_or_default();
        let report = leak_report::build(
            &agg,
            &stacks,
            &raw.counters,
            &self.process,
            &mut self.sym,
            &leak_report::RunInfo {
                command: None,
                allocators: vec![self.allocator.clone()],
                start_unix_nanos: self.start_unix_nanos,
                elapsed_secs: (now - self.started).as_secs_f64(),
                window_secs: (now - self.last).as_secs_f64(),
                sequence: 0,
                last: false,
                sample_every: 1,
                min_age_secs: 0.0,
                ended: None,
                exit: None,
                unwind: raw.unwind.clone(),
            },
        );
        self.baseline = agg.baseline;
        self.last = now;
        let pid = self.process.pid;
        let c = &raw.counters;
        Some(LeakProcess {
            pid,
            name: self.process.name.clone().unwrap_or_else(|| pid.to_string()),
            outstanding_allocations: c
                .allocs_tracked
                .saturating_sub(c.frees_matched + c.replaced),
            stacks: report
                .stacks
                .iter()
                .take(LEAK_STACKS)
                .map(|st| StackBytes {
                    function: st.function.clone(),
                    frames: st.frames.iter().map(|f| f.name()).collect(),
                    bytes: st.bytes,
                    allocations: st.allocations,
                })
                .collect(),
        })
    }
}

/// Runs `revert`.
pub async fn revert(args: RevertArgs) -> anyhow::Result<()> {
    let cfg = alerts_config(args.config.as_deref())?;
    let state_file = args.state_file.unwrap_or(cfg.state_file);
    let actuator = Actuator::new("/", &state_file);
    let recorded = actuator.load()?;
    if recorded.entries.is_empty() {
        println!(
            "Nothing to revert: {} records no change.",
            state_file.display()
        );
        return Ok(());
    }
    if args.dry_run {
        println!("Would restore ({}):", state_file.display());
        for e in &recorded.entries {
            println!(
                "  {} = {}   (now {}; {})",
                e.setting.display(),
                e.previous,
                e.applied,
                e.reason
            );
        }
        return Ok(());
    }
    let report = actuator.revert()?;
    println!("Restored ({}):", state_file.display());
    for c in &report.changes {
        let note = c
            .note
            .as_deref()
            .map(|n| format!("  ({n})"))
            .unwrap_or_default();
        println!("  {}: {} -> {}{note}", c.setting.display(), c.from, c.to);
    }
    if !report.failures.is_empty() {
        for (s, why) in &report.failures {
            eprintln!("  FAILED {}: {why}", s.display());
        }
        bail!(
            "{} setting(s) could not be restored; they stay in {} so `perf-user revert` can retry",
            report.failures.len(),
            state_file.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule on a label its signal does not carry never fires: `advise`
    /// refuses it when loading, with the daemon's words.
    #[test]
    fn a_rule_on_a_missing_label_is_refused_as_by_the_daemon() {
        let dir = std::env::temp_dir().join(format!("perf-user-advise-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.toml");
        std::fs::write(
            &path,
            "[[alerts.rules]]\nname = \"R\"\nkind = \"threshold\"\n\
             signal = \"tcp_rtt_p99_seconds\"\nabove = 0.1\nmatch = { peer = \"10.0.0.2\" }\n",
        )
        .unwrap();
        let advise = alerts_config(Some(&path)).unwrap_err().to_string();
        let daemon = Config::load(&path).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            advise.contains("has no label \"peer\"; its labels are: port, side"),
            "{advise}"
        );
        assert_eq!(advise, daemon);
    }
}
