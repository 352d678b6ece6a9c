//! `cargo xtask soak`: the daemon with every collector for a long run (1 h by
//! default) under mixed load, a storm of short-lived processes, many
//! concurrent scrapers, a configuration reload and the leak collector's
//! target killed and replaced. It checks that the daemon's RSS and every BPF
//! map's entry count stay flat after warm-up, that no scrape fails, that
//! what our load did was seen or counted as lost, and that SIGTERM leaves
//! nothing in the kernel. Writes target/soak/report.md and report.json and
//! exits non-zero naming each failed check.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fs::{self, File, OpenOptions},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::fs::{FileExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;

use crate::{
    apt,
    bench::{
        compare,
        daemon::http_get,
        process::{self, Proc},
        stats,
    },
    build, cmd,
};

/// How often RSS, the maps and the daemon's counters are read.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The first part of the run that the slopes leave out: caches fill, the
/// CPU collector's first windows, the leak target's ring filling. At least
/// this share, and at least the alert engine's fill time (see [`warmup`]).
const WARMUP_FRACTION: f64 = 0.2;
/// A series the alert engine has not seen again is forgotten this long, or
/// its rule's window if longer, after it was last seen (alerts/engine.rs
/// `forget`).
const ENGINE_FORGET_AFTER: Duration = Duration::from_secs(600);

/// How long the alert engine's memory grows with rules learning over
/// `window`: each series' points fill the window, and the set of series
/// levels off once those no longer seen are forgotten.
fn engine_fill(window: Duration) -> Duration {
    window + window.max(ENGINE_FORGET_AFTER)
}
/// Flat: projected growth per hour below this share of the post-warm-up mean.
const GROWTH_LIMIT_PER_HOUR: f64 = 0.05;
/// ... or, for a map, below this share of its capacity per hour (a map that
/// holds a handful of entries may gain a few, e.g. a TCP port label).
const MAP_CAPACITY_LIMIT_PER_HOUR: f64 = 0.01;
/// A slope counts as growth only when it exceeds the limit by this many
/// standard errors: short runs are noisy (the CPU maps fill and empty every
/// window), and a real leak's slope is many standard errors away.
const SLOPE_SIGMAS: f64 = 2.0;
/// How many blocks the leak collector's target keeps.
const LEAKER_KEEP: &str = "2000";

/// The leak collector's target's process name: ours alone (the soak's PID in
/// it, 15 characters at most as the kernel keeps them), because the daemon
/// traces every process of that name. With one name for all, two soaks run
/// at once on one host each traced the other's target as well (two traced
/// processes, an extra tracer's memory and maps in each run's figures).
fn leaker() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| format!("soakleak{}", std::process::id()))
}
/// After the replacement target starts, its ring fills again: samples up to
/// this long after its `go` are left out of the slopes, as are those from
/// the kill on.
const REPLACEMENT_SETTLE: Duration = Duration::from_secs(30);
/// Mixed load rates.
const DIRECT_WRITE_EVERY: Duration = Duration::from_millis(50);
const TCP_CONNECT_EVERY: Duration = Duration::from_millis(50);
/// The daemon's BPF programs and maps may outlive it by an RCU grace period.
const KERNEL_RELEASE_WAIT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct Args {
    /// How long the load runs, e.g. 1h, 10m, 90s [default: 1h; 2m with --quick].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    duration: Option<Duration>,
    /// Short-lived processes (/bin/true) started, evenly over the run
    /// [default: 10000; 2000 with --quick].
    #[arg(long, value_name = "N")]
    processes: Option<u64>,
    /// Concurrent /metrics scrapers, each at 1 Hz.
    #[arg(long, value_name = "N", default_value_t = 50)]
    scrapers: usize,
    /// A short run while developing: 2 minutes, 2000 processes.
    #[arg(long)]
    quick: bool,
    /// Use this perf-user binary instead of building target/release/perf-user.
    #[arg(long, value_name = "PATH")]
    perf_user: Option<PathBuf>,
    /// Where to write report.md and report.json (default: target/soak).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// A check whose failure is reported but does not fail the run
    /// (repeatable), e.g. `rss_flat` in CI's 10 minutes, where the slope of
    /// a short window is mostly warm-up (docs/soak.md); the hour run judges it.
    #[arg(long, value_name = "CHECK")]
    advisory: Vec<String>,
    /// Test the test: preload a shim into the daemon that leaks this many
    /// KiB of heap an hour (touched, never freed), to see `rss_flat` fail.
    #[arg(long, value_name = "KIB_PER_HOUR")]
    inject_leak: Option<u64>,
    /// The learning window of the three alert rules that learn over 1 h by
    /// default (DiskLatencyAnomaly, TcpRttAnomaly, CpuHotspot): the engine's
    /// memory grows until it is full, so the warm-up waits for it (1h gives
    /// the built-in rules: then run for 10h to judge the RSS).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "10m")]
    alert_window: Duration,
}

/// Warm-up: 20 % of the run, and at least the alert engine's fill time, but
/// no more than half the run (a short run cannot wait for the engine: its
/// RSS slope is only indicative, docs/soak.md).
fn warmup(planned: Duration, alert_window: Duration) -> f64 {
    let planned = planned.as_secs_f64();
    (WARMUP_FRACTION * planned)
        .max(engine_fill(alert_window).as_secs_f64())
        .min(planned / 2.0)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 1h, 10m, 90s"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit must be s, m or h")),
    };
    if secs < 30 {
        return Err(format!("{s:?}: a soak needs at least 30s"));
    }
    Ok(Duration::from_secs(secs))
}

/// Set by SIGINT/SIGTERM: the soak stops early, cleans up and fails.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn main(args: &Args) -> Result<ExitCode> {
    let started = Instant::now();
    if !cmd::is_root() {
        bail!(
            "the soak runs the daemon, which loads eBPF programs, and reads BPF maps by id: \
             run it as root (sudo -E cargo xtask soak)"
        );
    }
    let duration = args.duration.unwrap_or(if args.quick {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(3600)
    });
    let n_processes = args
        .processes
        .unwrap_or(if args.quick { 2000 } else { 10_000 });

    eprintln!("== setting up");
    apt::ensure("the soak's leak target", &["gcc", "libc6-dev"])?;
    let target_dir = cmd::target_dir()?;
    let out = args.out.clone().unwrap_or_else(|| target_dir.join("soak"));
    let tmp = out.join("tmp");
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let bin = match &args.perf_user {
        Some(p) => fs::canonicalize(p).with_context(|| format!("--perf-user {}", p.display()))?,
        None => {
            build::build(true, &[])?;
            target_dir.join("release").join("perf-user")
        }
    };
    let leaker_bin = compile_leaker(&tmp)?;
    let inject = match args.inject_leak {
        Some(kib) => Some((compile_leak_shim(&tmp)?, kib)),
        None => None,
    };

    let port = service_listener(20_000)?.local_addr()?.port();
    let echo = service_listener(port + 1)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = out.join("soak.toml");
    write_config(&config, port, args.alert_window, None)?;
    let check = cmd::output(
        Command::new(&bin)
            .args(["run", "--check-config", "--config"])
            .arg(&config),
    )
    .context("the soak's configuration was refused")?;
    eprintln!("configuration: {}", check.trim());

    let handler = on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }

    eprintln!("== starting the daemon");
    let stderr_path = out.join("daemon.stderr");
    let launched = Instant::now();
    let mut command = Command::new(&bin);
    command
        .args(["run", "--log-format", "json", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(create(&out.join("daemon.stdout"))?))
        .stderr(Stdio::from(create(&stderr_path)?));
    if let Some((shim, kib)) = &inject {
        eprintln!("the daemon is made to leak {kib} KiB/h (--inject-leak)");
        command
            .env("LD_PRELOAD", shim)
            .env("SOAK_LEAK_KIB_PER_HOUR", kib.to_string());
    }
    let mut daemon = Proc::spawn(&mut command)?;
    let ready = wait_until(Duration::from_secs(60), || {
        !daemon.alive() || http_get(addr, "/healthz").is_ok_and(|(code, _)| code == 200)
    });
    if !ready || !daemon.alive() {
        bail!(
            "`{}` did not answer /healthz within 60 s; its stderr: {}",
            daemon.display,
            compare::tail(&stderr_path)
        );
    }
    compare::wait_attached(&mut daemon, launched, Duration::from_secs(60))
        .map_err(|why| anyhow!("{why}; its stderr: {}", compare::tail(&stderr_path)))?;
    eprintln!(
        "daemon pid {} attached in {:.1} s, serving {addr}",
        daemon.pid,
        launched.elapsed().as_secs_f64()
    );

    let mut leaker = Leaker::start(&leaker_bin)?;
    leaker
        .wait_traced(addr, true)
        .context("the daemon did not trace the first leak target")?;
    leaker.go()?;

    let disk = tmp.join("direct.dat");
    prepare_disk_file(&disk)?;

    eprintln!(
        "== soaking for {} s: {n_processes} short-lived processes, {} scrapers at 1 Hz, \
         direct writes, loopback TCP, CPU burn; target killed at 40 %, reload at 50 %",
        duration.as_secs(),
        args.scrapers
    );
    let load = Arc::new(Load::default());
    let transition: Arc<Mutex<Option<(f64, f64)>>> = Arc::default();
    let t0 = Instant::now();
    let mut ids = Ids::default();
    let mut samples = vec![take_sample(daemon.pid, addr, 0.0, &mut ids)];
    progress(&samples[0], duration, &load, n_processes);

    let mut workers = vec![
        spawn("soak-disk", {
            let load = Arc::clone(&load);
            move || disk_writer(&disk, &load)
        })?,
        spawn("soak-tcp", {
            let load = Arc::clone(&load);
            move || tcp_client(echo, &load)
        })?,
        spawn("soak-burn", {
            let load = Arc::clone(&load);
            move || cpu_burn(&load)
        })?,
        spawn("soak-procs", {
            let load = Arc::clone(&load);
            move || short_lived(&load, t0, duration, n_processes)
        })?,
    ];
    for i in 0..args.scrapers {
        let load = Arc::clone(&load);
        let offset = Duration::from_millis((i * 1000 / args.scrapers.max(1)) as u64);
        workers.push(spawn("soak-scrape", move || {
            scraper(&load, addr, t0 + offset);
        })?);
    }

    let mut kill: Option<JoinHandle<(KillOutcome, Option<Leaker>)>> = None;
    let mut reload: Option<JoinHandle<ReloadOutcome>> = None;
    let mut leaker = Some(leaker);
    let mut next_sample = t0 + SAMPLE_EVERY;
    let mut daemon_died = false;
    loop {
        let elapsed = t0.elapsed();
        if interrupted() || elapsed >= duration {
            break;
        }
        if !daemon.alive() {
            daemon_died = true;
            break;
        }
        if kill.is_none() && elapsed.as_secs_f64() >= 0.4 * duration.as_secs_f64() {
            let first = leaker
                .take()
                .expect("the first target is ours until the kill");
            let (transition, bin) = (Arc::clone(&transition), leaker_bin.clone());
            kill = Some(spawn("soak-kill", move || {
                kill_target(first, &bin, addr, t0, &transition)
            })?);
        }
        if reload.is_none() && elapsed.as_secs_f64() >= 0.5 * duration.as_secs_f64() {
            let (config, stderr_path, pid) = (config.clone(), stderr_path.clone(), daemon.pid);
            let alert_window = args.alert_window;
            reload = Some(spawn("soak-reload", move || {
                reload_config(&config, port, alert_window, pid, &stderr_path, addr, t0)
            })?);
        }
        if Instant::now() >= next_sample {
            next_sample += SAMPLE_EVERY;
            let s = take_sample(daemon.pid, addr, elapsed.as_secs_f64(), &mut ids);
            progress(&s, duration, &load, n_processes);
            samples.push(s);
        }
        thread::sleep(Duration::from_millis(100));
    }
    let soaked = t0.elapsed();
    load.stop.store(true, Ordering::SeqCst);
    eprintln!("== stopping the load");
    for w in workers {
        let _ = w.join();
    }
    let kill_outcome = match kill.map(JoinHandle::join) {
        Some(Ok((outcome, replacement))) => {
            leaker = replacement;
            Some(outcome)
        }
        Some(Err(_)) => Some(KillOutcome::failed("the kill thread panicked")),
        None => None,
    };
    let reload_outcome = match reload.map(JoinHandle::join) {
        Some(Ok(o)) => o,
        Some(Err(_)) => ReloadOutcome::failed("the reload thread panicked"),
        None => ReloadOutcome::failed("the run ended before mid-run"),
    };
    let final_leak = match &mut leaker {
        Some(l) if daemon.alive() => Some(l.pause_and_check(addr)),
        _ => None,
    };
    if daemon.alive() {
        samples.push(take_sample(
            daemon.pid,
            addr,
            t0.elapsed().as_secs_f64(),
            &mut ids,
        ));
    } else {
        daemon_died = true;
    }

    eprintln!("== SIGTERM to the daemon");
    let stopping = Instant::now();
    daemon.signal(libc::SIGTERM);
    let exit = daemon.wait_timeout(Duration::from_secs(60))?;
    let stop_seconds = stopping.elapsed().as_secs_f64();
    let exit_desc = match &exit {
        Some(e) => cmd::describe(e.status),
        None => "still running 60 s after SIGTERM (killed)".into(),
    };
    let exit_ok = exit.as_ref().is_some_and(|e| e.status.success());
    drop(leaker);
    let leftovers = kernel_leftovers(&ids, daemon.pid);
    drop(daemon);

    let transition = *transition.lock().unwrap_or_else(|e| e.into_inner());
    let report = analyse(Inputs {
        planned: duration,
        soaked,
        n_processes,
        scrapers: args.scrapers,
        samples: &samples,
        load: &load,
        transition,
        kill: kill_outcome,
        reload: reload_outcome,
        final_leak,
        daemon_died,
        interrupted: interrupted(),
        exit: exit_desc,
        exit_ok,
        stop_seconds,
        ids: &ids,
        leftovers,
        total_seconds: started.elapsed().as_secs_f64(),
        injected_leak: args.inject_leak,
        alert_window: args.alert_window,
    });
    let md = report.markdown();
    fs::write(out.join("report.md"), &md)
        .with_context(|| format!("cannot write {}", out.join("report.md").display()))?;
    let json = serde_json::to_string_pretty(&report).context("cannot serialize the report")?;
    fs::write(out.join("report.json"), json)
        .with_context(|| format!("cannot write {}", out.join("report.json").display()))?;
    println!("{md}");
    eprintln!(
        "wrote {} and {}",
        out.join("report.md").display(),
        out.join("report.json").display()
    );
    let unknown: Vec<&str> = args
        .advisory
        .iter()
        .map(String::as_str)
        .filter(|a| !report.checks.iter().any(|c| c.name == *a))
        .collect();
    let (advisory, failed): (Vec<&str>, Vec<&str>) = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .partition(|name| args.advisory.iter().any(|a| a == name));
    if !advisory.is_empty() {
        eprintln!(
            "soak: advisory checks failed (reported, not failing the run): {}",
            advisory.join(", ")
        );
    }
    if !unknown.is_empty() {
        // A misspelt name must not silently pass a check.
        eprintln!(
            "soak FAILED: --advisory names no check: {}",
            unknown.join(", ")
        );
        Ok(ExitCode::FAILURE)
    } else if failed.is_empty() {
        if advisory.is_empty() {
            eprintln!("soak passed: every check held");
        } else {
            eprintln!("soak passed: every check held but the advisory ones above");
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("soak FAILED: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

fn create(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("cannot start the {name} thread"))
}

/// Polls `done` every 100 ms until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline || interrupted() {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `--inject-leak`: xtask/workloads/soak_inject_leak.c as a shared object.
fn compile_leak_shim(dir: &Path) -> Result<PathBuf> {
    let source = cmd::workspace_root()
        .join("xtask")
        .join("workloads")
        .join("soak_inject_leak.c");
    let out = dir.join("soak_inject_leak.so");
    cmd::output(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-shared", "-fPIC", "-pthread", "-o"])
            .arg(&out)
            .arg(&source),
    )
    .with_context(|| format!("cannot compile {}", source.display()))?;
    Ok(out)
}

fn compile_leaker(dir: &Path) -> Result<PathBuf> {
    let source = cmd::workspace_root()
        .join("xtask")
        .join("workloads")
        .join("soak_leaker.c");
    let out = dir.join(leaker());
    cmd::output(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-Wall", "-o"])
            .arg(&out)
            .arg(&source),
    )
    .with_context(|| format!("cannot compile {}", source.display()))?;
    Ok(out)
}

/// Every collector on; the built-in alert rules, the three that learn over
/// an hour over `alert_window` instead (otherwise as built in, see
/// alerts/rules.rs `defaults`). The reload adds a comment line, so that it
/// changes nothing that would re-attach a collector and reset its counters.
fn write_config(
    path: &Path,
    port: u16,
    alert_window: Duration,
    reloaded_at: Option<f64>,
) -> Result<()> {
    let mut text = String::from("# written by `cargo xtask soak`\n");
    if let Some(t) = reloaded_at {
        text.push_str(&format!("# rewritten for the reload at {t:.0} s\n"));
    }
    text.push_str(&format!(
        "[exporter]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [collectors.cpu]\nenabled = true\n\n\
         [collectors.block]\nenabled = true\n\n\
         [collectors.tcp]\nenabled = true\n\n\
         [collectors.leaks]\nenabled = true\nprocesses = [\"{}\"]\n",
        leaker()
    ));
    let w = alert_window.as_secs();
    text.push_str(&format!(
        "\n# The built-in rules that learn over 1 h, with {w} s windows (docs/soak.md)\n\
         [[alerts.rules]]\nname = \"DiskLatencyAnomaly\"\nkind = \"baseline\"\n\
         signal = \"block_latency_p99_seconds\"\nmatch = {{ op = \"read|write\" }}\n\
         k = 6\nmin_delta = 0.010\nmin_ratio = 3\nmin_history = 12\nwindow = \"{w}s\"\n\
         for = \"1m\"\nmin_count = 20\n\n\
         [[alerts.rules]]\nname = \"TcpRttAnomaly\"\nkind = \"baseline\"\n\
         signal = \"tcp_rtt_p99_seconds\"\n\
         k = 6\nmin_delta = 0.020\nmin_ratio = 3\nmin_history = 12\nwindow = \"{w}s\"\n\
         for = \"30s\"\nmin_count = 50\n\n\
         [[alerts.rules]]\nname = \"CpuHotspot\"\nkind = \"hotspot\"\n\
         signal = \"cpu_self_ratio\"\n\
         margin = 0.20\nmin_share = 0.25\nmin_history = 6\nwindow = \"{w}s\"\n\
         for = \"0s\"\nmin_count = 200\nseverity = \"info\"\n"
    ));
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

// ---------------------------------------------------------------------------
// The load

/// Counters of what the load did, shared by its threads.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    scrapes_ok: AtomicU64,
    scrapes_failed: AtomicU64,
    /// The first few failures, for the report.
    scrape_errors: Mutex<Vec<String>>,
    scrape_ms: Mutex<Vec<f32>>,
    processes_started: AtomicU64,
    processes_failed: AtomicU64,
    direct_writes: AtomicU64,
    write_errors: AtomicU64,
    tcp_connects: AtomicU64,
    tcp_errors: AtomicU64,
    burn_seconds: Mutex<f64>,
}

impl Load {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || interrupted()
    }

    /// Sleeps until `until` or until the load stops; false when stopped.
    fn sleep_until(&self, until: Instant) -> bool {
        loop {
            if self.stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            thread::sleep((until - now).min(Duration::from_millis(200)));
        }
    }
}

fn scraper(load: &Load, addr: SocketAddr, first: Instant) {
    let mut next = first;
    while load.sleep_until(next) {
        let t = Instant::now();
        let result = match http_get(addr, "/metrics") {
            Ok((200, body)) if body.contains("perf_user_build_info") => Ok(()),
            Ok((200, body)) => Err(format!(
                "HTTP 200 without the metrics ({} bytes)",
                body.len()
            )),
            Ok((code, _)) => Err(format!("HTTP {code}")),
            Err(e) => Err(format!("{e:#}")),
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(()) => {
                load.scrapes_ok.fetch_add(1, Ordering::Relaxed);
                lock(&load.scrape_ms).push(ms as f32);
            }
            Err(e) => {
                load.scrapes_failed.fetch_add(1, Ordering::Relaxed);
                let mut errors = lock(&load.scrape_errors);
                if errors.len() < 10 {
                    errors.push(e);
                }
            }
        }
        // 1 Hz; a scrape slower than a second skips the ticks it missed.
        next += Duration::from_secs(1);
        while next < Instant::now() {
            next += Duration::from_secs(1);
        }
    }
}

/// `n` runs of /bin/true spread evenly over 98 % of the run, so that all
/// have been started before it ends.
fn short_lived(load: &Load, t0: Instant, duration: Duration, n: u64) {
    let gap = duration.mul_f64(0.98) / u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    for i in 0..n {
        let at = t0 + gap * u32::try_from(i).unwrap_or(u32::MAX);
        if !load.sleep_until(at) {
            return;
        }
        let ok = Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        load.processes_started.fetch_add(1, Ordering::Relaxed);
        if !ok {
            load.processes_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

const DISK_FILE_BLOCKS: u64 = 4096;

/// A 16 MiB file, written and synced once, so that the direct writes
/// overwrite allocated blocks: one 4 KiB request each, no journal traffic.
fn prepare_disk_file(path: &Path) -> Result<()> {
    let mut f = create(path)?;
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..(DISK_FILE_BLOCKS * 4096) >> 20 {
        f.write_all(&chunk)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    f.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// A 4 KiB buffer aligned as O_DIRECT needs.
#[repr(C, align(4096))]
struct Block([u8; 4096]);

fn disk_writer(path: &Path, load: &Load) {
    let file = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: cannot open {} with O_DIRECT: {e}", path.display());
            load.write_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let block = Box::new(Block([0xa5; 4096]));
    let mut next = Instant::now();
    let mut i = 0u64;
    while load.sleep_until(next) {
        // A stride that is not a power of two, so that the requests hop about.
        let offset = (i * 97 % DISK_FILE_BLOCKS) * 4096;
        match file.write_at(&block.0, offset) {
            Ok(4096) => load.direct_writes.fetch_add(1, Ordering::Relaxed),
            _ => load.write_errors.fetch_add(1, Ordering::Relaxed),
        };
        i += 1;
        next += DIRECT_WRITE_EVERY;
    }
}

/// A loopback listener on the first free port from `from` up, below the
/// ephemeral range, as real services listen: with both ends of a connection
/// in the ephemeral range the TCP collector cannot tell the service's end
/// and would label each connection by its client's port.
fn service_listener(from: u16) -> Result<TcpListener> {
    let ephemeral_lo = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (from..ephemeral_lo)
        .find_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
        .ok_or_else(|| {
            anyhow!("no free loopback port from {from} up to the ephemeral range ({ephemeral_lo})")
        })
}

/// Loopback connections to our own echo server, one request each.
fn tcp_client(listener: TcpListener, load: &Load) {
    let Ok(server) = listener.local_addr() else {
        return;
    };
    // The echo server's thread ends with the process; accept has no timeout.
    let _ = thread::Builder::new()
        .name("soak-echo".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut conn = conn;
                let mut buf = [0u8; 64];
                if conn.read_exact(&mut buf).is_ok() {
                    let _ = conn.write_all(&buf);
                }
            }
        });
    let mut next = Instant::now();
    while load.sleep_until(next) {
        let exchange = || -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(&[7u8; 64])?;
            let mut buf = [0u8; 64];
            s.read_exact(&mut buf)
        };
        match exchange() {
            Ok(()) => load.tcp_connects.fetch_add(1, Ordering::Relaxed),
            Err(_) => load.tcp_errors.fetch_add(1, Ordering::Relaxed),
        };
        next += TCP_CONNECT_EVERY;
    }
}

/// Half of one CPU: 100 ms of arithmetic, 100 ms asleep, for the CPU
/// collector to sample.
fn cpu_burn(load: &Load) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut busy = Duration::ZERO;
    while !load.stopped() {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(100) {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.rotate_left(7) ^ x.wrapping_mul(31));
            }
        }
        busy += t.elapsed();
        thread::sleep(Duration::from_millis(100));
    }
    *lock(&load.burn_seconds) = busy.as_secs_f64();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// The leak target, its kill and its replacement, and the reload

struct Leaker {
    proc: Proc,
}

/// What a paused target made against what the daemon saw.
#[derive(Debug, Clone, Serialize)]
struct LeakCheck {
    allocations_made: u64,
    frees_made: u64,
    allocations_seen: f64,
    frees_seen: f64,
    /// The leak collector's lost events, all reasons.
    lost_counted: f64,
    passed: bool,
    error: Option<String>,
}

impl Leaker {
    fn start(bin: &Path) -> Result<Self> {
        let mut proc = Proc::spawn(
            Command::new(bin)
                .arg(LEAKER_KEEP)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )?;
        match proc.read_line()? {
            Some(l) if l == "ready" => Ok(Self { proc }),
            other => bail!("{} did not start: {other:?}", leaker()),
        }
    }

    /// Waits until the daemon's gauge says it traces one (`true`) or no
    /// (`false`) process of our target's name.
    fn wait_traced(&self, addr: SocketAddr, traced: bool) -> Result<()> {
        let want = if traced { 1.0 } else { 0.0 };
        if wait_until(Duration::from_secs(30), || {
            leak_metrics(addr).is_ok_and(|m| m.traced == want)
        }) {
            Ok(())
        } else {
            bail!(
                "perf_user_leak_traced_processes{{process=\"{}\"}} did not become {want} \
                 within 30 s",
                leaker()
            )
        }
    }

    fn go(&mut self) -> Result<()> {
        self.proc.write_line("go")
    }

    /// Stops the target's allocations and compares its own counts with the
    /// daemon's (after a second, for the last probes to finish).
    fn pause_and_check(&mut self, addr: SocketAddr) -> LeakCheck {
        let made = self.proc.write_line("pause").and_then(|()| {
            let line = self.proc.read_line()?.unwrap_or_default();
            let num = |key: &str| -> Option<u64> {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key)?.parse().ok())
            };
            num("allocs=")
                .zip(num("frees="))
                .ok_or_else(|| anyhow!("{} answered {line:?} to pause", leaker()))
        });
        thread::sleep(Duration::from_secs(1));
        let seen = leak_metrics(addr);
        match (made, seen) {
            (Ok((allocs, frees)), Ok(m)) => LeakCheck {
                allocations_made: allocs,
                frees_made: frees,
                allocations_seen: m.allocations,
                frees_seen: m.frees,
                lost_counted: m.lost,
                passed: m.allocations + m.lost >= allocs as f64 && m.frees + m.lost >= frees as f64,
                error: None,
            },
            (made, seen) => LeakCheck {
                allocations_made: 0,
                frees_made: 0,
                allocations_seen: 0.0,
                frees_seen: 0.0,
                lost_counted: 0.0,
                passed: false,
                error: Some(
                    [made.err(), seen.err()]
                        .into_iter()
                        .flatten()
                        .map(|e| format!("{e:#}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            },
        }
    }
}

struct LeakMetrics {
    traced: f64,
    allocations: f64,
    frees: f64,
    lost: f64,
}

fn leak_metrics(addr: SocketAddr) -> Result<LeakMetrics> {
    let (code, body) = http_get(addr, "/metrics")?;
    if code != 200 {
        bail!("/metrics answered HTTP {code}");
    }
    let series = parse_metrics(&body);
    let ours = [("process", leaker())];
    Ok(LeakMetrics {
        traced: sum(&series, "perf_user_leak_traced_processes", &ours),
        allocations: sum(&series, "perf_user_leak_allocations_total", &ours),
        frees: sum(&series, "perf_user_leak_frees_total", &ours),
        lost: sum(
            &series,
            "perf_user_lost_events_total",
            &[("collector", "leaks")],
        ),
    })
}

#[derive(Debug, Clone, Serialize)]
struct KillOutcome {
    at_seconds: f64,
    /// The first target's calls against the daemon's counts, just before the kill.
    before_kill: Option<LeakCheck>,
    /// The daemon let go of the killed target.
    released: bool,
    /// And traced its replacement.
    replaced: bool,
    error: Option<String>,
}

impl KillOutcome {
    fn failed(why: &str) -> Self {
        Self {
            at_seconds: 0.0,
            before_kill: None,
            released: false,
            replaced: false,
            error: Some(why.into()),
        }
    }
}

fn kill_target(
    mut first: Leaker,
    bin: &Path,
    addr: SocketAddr,
    t0: Instant,
    transition: &Mutex<Option<(f64, f64)>>,
) -> (KillOutcome, Option<Leaker>) {
    let at = t0.elapsed().as_secs_f64();
    let mut outcome = KillOutcome::failed("");
    outcome.error = None;
    outcome.at_seconds = at;
    outcome.before_kill = Some(first.pause_and_check(addr));
    *lock(transition) = Some((at, at + 60.0));
    eprintln!(
        "  [soak] {at:.0} s: killing the leak target (pid {})",
        first.proc.pid
    );
    first.proc.signal(libc::SIGKILL);
    let _ = first.proc.wait_timeout(Duration::from_secs(10));
    outcome.released = first.wait_traced(addr, false).is_ok();
    let mut errors = Vec::new();
    if !outcome.released {
        errors.push("the daemon still traced the killed target after 30 s".to_owned());
    }
    let replacement = Leaker::start(bin).and_then(|mut l| {
        l.wait_traced(addr, true)?;
        l.go()?;
        Ok(l)
    });
    let replacement = match replacement {
        Ok(l) => {
            outcome.replaced = true;
            let go = t0.elapsed().as_secs_f64();
            *lock(transition) = Some((at, go + REPLACEMENT_SETTLE.as_secs_f64()));
            eprintln!("  [soak] {go:.0} s: the replacement target is traced");
            Some(l)
        }
        Err(e) => {
            errors.push(format!("replacement: {e:#}"));
            None
        }
    };
    if !errors.is_empty() {
        outcome.error = Some(errors.join("; "));
    }
    (outcome, replacement)
}

#[derive(Debug, Clone, Serialize)]
struct ReloadOutcome {
    at_seconds: f64,
    /// The daemon's log said `configuration reloaded`.
    logged: bool,
    /// perf_user_config_last_reload_successful after the reload.
    metric: Option<f64>,
    passed: bool,
    error: Option<String>,
}

impl ReloadOutcome {
    fn failed(why: &str) -> Self {
        Self {
            at_seconds: 0.0,
            logged: false,
            metric: None,
            passed: false,
            error: Some(why.into()),
        }
    }
}

fn reload_config(
    config: &Path,
    port: u16,
    alert_window: Duration,
    pid: i32,
    stderr_path: &Path,
    addr: SocketAddr,
    t0: Instant,
) -> ReloadOutcome {
    let at = t0.elapsed().as_secs_f64();
    let mut outcome = ReloadOutcome::failed("");
    outcome.at_seconds = at;
    outcome.error = None;
    // SIGHUP's default action ends the process: send it only to a daemon
    // that catches it, and report the reload as failed otherwise.
    if !catches_sighup(pid) {
        outcome.error =
            Some("the daemon does not catch SIGHUP (SigCgt); it would have ended it".into());
        return outcome;
    }
    if let Err(e) = write_config(config, port, alert_window, Some(at)) {
        outcome.error = Some(format!("{e:#}"));
        return outcome;
    }
    let log_before = fs::read_to_string(stderr_path).map_or(0, |s| s.len());
    eprintln!("  [soak] {at:.0} s: SIGHUP (configuration reload)");
    // SAFETY: kill has no memory-safety preconditions; pid is the daemon,
    // our unreaped child (the main thread reaps it only after this thread).
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let logged = || {
        fs::read(stderr_path).is_ok_and(|s| {
            String::from_utf8_lossy(s.get(log_before..).unwrap_or_default())
                .contains("configuration reloaded")
        })
    };
    let metric = || -> Option<f64> {
        let (code, body) = http_get(addr, "/metrics").ok()?;
        (code == 200).then_some(())?;
        parse_metrics(&body)
            .iter()
            .find(|s| s.name == "perf_user_config_last_reload_successful")
            .map(|s| s.value)
    };
    wait_until(Duration::from_secs(15), || {
        logged() && metric() == Some(1.0)
    });
    outcome.logged = logged();
    outcome.metric = metric();
    outcome.passed = outcome.logged && outcome.metric == Some(1.0);
    if !outcome.passed {
        outcome.error = Some(format!(
            "within 15 s: log line `configuration reloaded` {}, \
             perf_user_config_last_reload_successful = {}",
            if outcome.logged { "seen" } else { "not seen" },
            outcome
                .metric
                .map_or_else(|| "absent".to_owned(), |v| v.to_string())
        ));
    }
    outcome
}

fn catches_sighup(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?.trim();
            u64::from_str_radix(hex, 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (libc::SIGHUP - 1)) != 0)
}

// ---------------------------------------------------------------------------
// Samples: RSS, the BPF maps, the daemon's counters

/// Every BPF object id the daemon ever held, for the check after it exits.
#[derive(Default, Serialize)]
struct Ids {
    programs: BTreeSet<u32>,
    maps: BTreeSet<u32>,
    links: BTreeSet<u32>,
}

#[derive(Debug, Clone, Serialize)]
struct MapSample {
    kind: &'static str,
    /// The largest of the maps of this name: every collector loads the whole
    /// object, so each has its own copy of every map, and each leak tracer
    /// its own set.
    capacity: u64,
    /// Keys counted, summed over the maps of this name; None for maps whose size is fixed (arrays) or that
    /// cannot be iterated (ring buffers).
    entries: Option<u64>,
    instances: u32,
}

#[derive(Debug, Clone, Serialize)]
struct Sample {
    t: f64,
    rss_kib: Option<u64>,
    /// Its anonymous part (the heap, thread stacks): the daemon's own memory,
    /// which `rss_flat` judges.
    rss_anon_kib: Option<u64>,
    /// Pages of mapped files (the binary, libraries, symbol files) resident:
    /// page cache the kernel can reclaim, bounded by the files' size.
    rss_file_kib: Option<u64>,
    /// Shared memory (ring buffers mapped from the kernel).
    rss_shmem_kib: Option<u64>,
    /// Kernel memory charged for the daemon's maps.
    map_memlock_kib: u64,
    maps: BTreeMap<String, MapSample>,
    /// The daemon's own counters and gauges that the checks use.
    scraped: Option<Scraped>,
    scrape_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Scraped {
    /// perf_user_lost_events_total by `collector/reason`.
    lost: BTreeMap<String, f64>,
    block_writes: f64,
    tcp_connects: f64,
    collectors_up: BTreeMap<String, f64>,
    /// Sources whose read failed at this scrape.
    sources_failed: Vec<String>,
}

fn take_sample(pid: i32, addr: SocketAddr, t: f64, ids: &mut Ids) -> Sample {
    let rss_kib = process::status_kib(pid, "VmRSS");
    let held = bpf_fds(pid);
    ids.programs.extend(&held.programs);
    ids.links.extend(&held.links);
    let mut maps: BTreeMap<String, MapSample> = BTreeMap::new();
    for &id in &held.maps {
        ids.maps.insert(id);
        let Ok(m) = map_count(id) else {
            continue; // freed between the listing and now
        };
        let e = maps.entry(m.name).or_insert(MapSample {
            kind: m.kind,
            capacity: 0,
            entries: m.entries.map(|_| 0),
            instances: 0,
        });
        e.capacity = e.capacity.max(u64::from(m.max_entries));
        e.instances += 1;
        e.entries = e.entries.zip(m.entries).map(|(a, b)| a + b);
    }
    let (scraped, scrape_error) = match http_get(addr, "/metrics") {
        Ok((200, body)) => (Some(scraped(&parse_metrics(&body))), None),
        Ok((code, _)) => (None, Some(format!("HTTP {code}"))),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    Sample {
        t,
        rss_kib,
        rss_anon_kib: process::status_kib(pid, "RssAnon"),
        rss_file_kib: process::status_kib(pid, "RssFile"),
        rss_shmem_kib: process::status_kib(pid, "RssShmem"),
        map_memlock_kib: held.map_memlock / 1024,
        maps,
        scraped,
        scrape_error,
    }
}

fn scraped(series: &[Series]) -> Scraped {
    let mut s = Scraped {
        block_writes: sum(
            series,
            "perf_user_block_io_latency_seconds_count",
            &[("op", "write")],
        ),
        tcp_connects: sum(series, "perf_user_tcp_connect_latency_seconds_count", &[])
            + sum(series, "perf_user_tcp_connect_failed_seconds_count", &[]),
        ..Scraped::default()
    };
    for x in series {
        match x.name.as_str() {
            "perf_user_lost_events_total" => {
                let key = format!("{}/{}", x.label("collector"), x.label("reason"));
                *s.lost.entry(key).or_default() += x.value;
            }
            "perf_user_collector_up" => {
                s.collectors_up
                    .insert(x.label("collector").to_owned(), x.value);
            }
            "perf_user_scrape_collector_success" if x.value != 1.0 => {
                s.sources_failed.push(x.label("collector").to_owned());
            }
            _ => {}
        }
    }
    s
}

fn progress(s: &Sample, duration: Duration, load: &Load, n_processes: u64) {
    let entries: u64 = s.maps.values().filter_map(|m| m.entries).sum();
    let lost: f64 = s.scraped.as_ref().map_or(0.0, |x| x.lost.values().sum());
    eprintln!(
        "  [soak] {:>5.0}/{} s  RSS {:>6.1} MiB (anon {:.1})  {} maps, {entries} entries  scrapes \
         {} ok, {} failed  processes {}/{n_processes}  lost events {lost}{}",
        s.t,
        duration.as_secs(),
        s.rss_kib.unwrap_or(0) as f64 / 1024.0,
        s.rss_anon_kib.unwrap_or(0) as f64 / 1024.0,
        s.maps.len(),
        load.scrapes_ok.load(Ordering::Relaxed),
        load.scrapes_failed.load(Ordering::Relaxed),
        load.processes_started.load(Ordering::Relaxed),
        s.scrape_error
            .as_ref()
            .map_or_else(String::new, |e| format!("  (own scrape failed: {e})")),
    );
}

/// One series of the text exposition format.
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Series {
    fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v)
    }
}

fn parse_metrics(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        // key="value" pairs; values may hold \" and \\ escapes.
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    end = Some(i);
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    chars.next(); // the opening quote
                    let mut value = String::new();
                    while let Some((_, c)) = chars.next() {
                        match c {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        }
        rest = &inner[end? + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Series {
        name,
        labels,
        value,
    })
}

/// The sum of the series called `name` whose labels include `with`.
fn sum(series: &[Series], name: &str, with: &[(&str, &str)]) -> f64 {
    series
        .iter()
        .filter(|s| s.name == name && with.iter().all(|(k, v)| s.label(k) == *v))
        .map(|s| s.value)
        .sum()
}

// ---------------------------------------------------------------------------
// BPF objects through bpf(2)

const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_MAP_GET_FD_BY_ID: u32 = 14;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;

/// union bpf_attr, large enough for the commands used here; the kernel
/// wants every byte past the command's fields zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }
    fn u32(mut self, offset: usize, v: u32) -> Self {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn ptr<T>(mut self, offset: usize, p: *const T) -> Self {
        self.0[offset..offset + 8].copy_from_slice(&(p as u64).to_ne_bytes());
        self
    }
}

fn bpf(cmd: u32, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, writable, 8-aligned buffer of the size passed;
    // any pointers in it point at live buffers of the sizes the command
    // implies (set by the callers below).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            libc::c_long::from(cmd),
            attr.0.as_mut_ptr(),
            attr.0.len(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A descriptor for the object `id` (`BPF_*_GET_FD_BY_ID`); ENOENT once it is gone.
fn fd_by_id(cmd: u32, id: u32) -> std::io::Result<OwnedFd> {
    let fd = bpf(cmd, &mut Attr::new().u32(0, id))?;
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

struct MapCount {
    name: String,
    kind: &'static str,
    max_entries: u32,
    entries: Option<u64>,
}

/// LRU maps are preallocated, so their kernel memory does not change with
/// their entry count, and when full the kernel evicts the least recently used
/// entry instead of refusing the new one: growth up to capacity loses nothing.
fn is_lru(kind: &str) -> bool {
    kind.starts_with("lru_")
}

fn map_kind(t: u32) -> (&'static str, bool) {
    // (name, whether its keys come and go)
    match t {
        1 => ("hash", true),
        2 => ("array", false),
        3 => ("prog_array", false),
        4 => ("perf_event_array", false),
        5 => ("percpu_hash", true),
        6 => ("percpu_array", false),
        7 => ("stack_trace", true),
        9 => ("lru_hash", true),
        10 => ("lru_percpu_hash", true),
        11 => ("lpm_trie", true),
        13 => ("hash_of_maps", true),
        27 => ("ringbuf", false),
        _ => ("other", false),
    }
}

/// A map's name, kind, capacity and (for hash-like maps) its keys counted
/// with BPF_MAP_GET_NEXT_KEY.
fn map_count(id: u32) -> std::io::Result<MapCount> {
    use std::os::fd::AsRawFd as _;
    let fd = fd_by_id(BPF_MAP_GET_FD_BY_ID, id)?;
    let raw = u32::try_from(fd.as_raw_fd()).map_err(|_| std::io::Error::other("bad fd"))?;
    // struct bpf_map_info: type, id, key_size, value_size, max_entries,
    // map_flags (u32 each), then name[16].
    let mut info = [0u64; 32];
    let size = u32::try_from(std::mem::size_of_val(&info)).unwrap_or(0);
    bpf(
        BPF_OBJ_GET_INFO_BY_FD,
        &mut Attr::new()
            .u32(0, raw)
            .u32(4, size)
            .ptr(8, info.as_mut_ptr()),
    )?;
    // SAFETY: info is 256 initialized bytes; viewing them as bytes is sound.
    let bytes: &[u8] = unsafe { std::slice::from_raw_parts(info.as_ptr().cast(), 256) };
    let word = |i: usize| u32::from_ne_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4]));
    let (map_type, key_size, max_entries) = (word(0), word(2) as usize, word(4));
    let name_bytes = &bytes[24..40];
    let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(16);
    let mut name = String::from_utf8_lossy(&name_bytes[..name_len]).into_owned();
    if name.is_empty() {
        name = format!("(unnamed {id})");
    }
    let (kind, iterable) = map_kind(map_type);
    let entries = iterable.then(|| count_keys(raw, key_size, max_entries));
    Ok(MapCount {
        name,
        kind,
        max_entries,
        entries,
    })
}

/// Distinct keys met walking the map. A hash map's walk restarts at its
/// first key when the current one was deleted meanwhile, so keys are
/// de-duplicated and the walk is capped at twice the capacity.
fn count_keys(fd: u32, key_size: usize, max_entries: u32) -> u64 {
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut key = vec![0u8; key_size.max(1)];
    let mut next = vec![0u8; key_size.max(1)];
    let mut first = true;
    for _ in 0..u64::from(max_entries) * 2 + 1 {
        let mut attr = Attr::new().u32(0, fd).ptr(16, next.as_mut_ptr());
        if !first {
            attr = attr.ptr(8, key.as_ptr());
        }
        if bpf(BPF_MAP_GET_NEXT_KEY, &mut attr).is_err() {
            break; // ENOENT: the end
        }
        first = false;
        if !seen.insert(next.clone()) {
            break;
        }
        key.copy_from_slice(&next);
    }
    seen.len() as u64
}

struct Held {
    programs: Vec<u32>,
    maps: Vec<u32>,
    links: Vec<u32>,
    /// Kernel memory charged for the maps (fdinfo `memlock`), bytes.
    map_memlock: u64,
}

/// The BPF programs, maps and links `pid` holds descriptors to, by id
/// (from /proc/PID/fdinfo).
fn bpf_fds(pid: i32) -> Held {
    let mut held = Held {
        programs: process::bpf_progs(pid).into_keys().collect(),
        maps: Vec::new(),
        links: Vec::new(),
        map_memlock: 0,
    };
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return held;
    };
    for fd in fds.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        let (key, into) = match target.to_string_lossy().as_ref() {
            "anon_inode:bpf-map" => ("map_id:", &mut held.maps),
            "anon_inode:bpf_link" => ("link_id:", &mut held.links),
            _ => continue,
        };
        let Ok(info) = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let field = |key: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
        };
        if let Some(id) = field(key).and_then(|id| u32::try_from(id).ok()) {
            into.push(id);
            if key == "map_id:" {
                held.map_memlock += field("memlock:").unwrap_or(0);
            }
        }
    }
    held
}

/// What of the daemon's is still in the kernel after it exited: program,
/// map and link ids it held, and aya's tracefs probe events named after its
/// pid. Waits up to KERNEL_RELEASE_WAIT for the kernel's deferred frees.
fn kernel_leftovers(ids: &Ids, pid: i32) -> Vec<String> {
    let left = || {
        let mut left = Vec::new();
        for (what, cmd, set) in [
            ("program", BPF_PROG_GET_FD_BY_ID, &ids.programs),
            ("map", BPF_MAP_GET_FD_BY_ID, &ids.maps),
            ("link", BPF_LINK_GET_FD_BY_ID, &ids.links),
        ] {
            for &id in set {
                match fd_by_id(cmd, id) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Ok(_) => left.push(format!("{what} {id}")),
                    Err(e) => left.push(format!("{what} {id} (cannot tell: {e})")),
                }
            }
        }
        let prefix = format!("aya_{pid}_");
        for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
            for file in ["uprobe_events", "kprobe_events"] {
                if let Ok(text) = fs::read_to_string(Path::new(dir).join(file)) {
                    left.extend(
                        text.lines()
                            .filter(|l| l.contains(&prefix))
                            .map(|l| format!("{dir}/{file}: {l}")),
                    );
                }
            }
        }
        left
    };
    let deadline = Instant::now() + KERNEL_RELEASE_WAIT;
    loop {
        let now = left();
        if now.is_empty() || Instant::now() >= deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------
// Analysis and the report

/// A least-squares line through the post-warm-up samples.
#[derive(Debug, Clone, Copy, Serialize)]
struct Fit {
    /// Growth per hour, in the series' unit.
    slope_per_hour: f64,
    /// Its standard error.
    stderr_per_hour: f64,
    mean: f64,
    points: usize,
}

/// The line through `points` with one slope and, when `step_at` is given, a
/// level of its own on each side of it (points before `step_at`, and the
/// others): a step there (the leak target replaced) is not taken for growth.
fn fit(points: &[(f64, f64)], step_at: Option<f64>) -> Option<Fit> {
    let n = points.len();
    let segments: Vec<Vec<(f64, f64)>> = match step_at {
        Some(at) => {
            let (before, after): (Vec<_>, Vec<_>) = points.iter().partition(|(t, _)| *t < at);
            [before, after]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect()
        }
        None => vec![points.to_vec()],
    };
    let levels = segments.len();
    if n < levels + 2 {
        return None;
    }
    let mean = |s: &[(f64, f64)]| {
        let k = s.len() as f64;
        s.iter()
            .fold((0.0, 0.0), |(a, b), (t, y)| (a + t / k, b + y / k))
    };
    let (mut stt, mut sty) = (0.0, 0.0);
    for s in &segments {
        let (mt, my) = mean(s);
        stt += s.iter().map(|(t, _)| (t - mt).powi(2)).sum::<f64>();
        sty += s.iter().map(|(t, y)| (t - mt) * (y - my)).sum::<f64>();
    }
    if stt <= 0.0 {
        return None;
    }
    let slope = sty / stt;
    let mut sse = 0.0;
    for s in &segments {
        let (mt, my) = mean(s);
        sse += s
            .iter()
            .map(|(t, y)| (y - my - slope * (t - mt)).powi(2))
            .sum::<f64>();
    }
    let se = (sse / (n - 1 - levels) as f64 / stt).sqrt();
    Some(Fit {
        slope_per_hour: slope * 3600.0,
        stderr_per_hour: se * 3600.0,
        mean: mean(points).1,
        points: n,
    })
}

/// Growth only when the slope exceeds `limit` by SLOPE_SIGMAS standard errors.
/// Entries a map may gain after the warm-up and still count as flat: 16,
/// or 1/256 of its capacity. A leak of entries (one per process, per
/// connection) adds thousands in the soak's storm of short-lived processes.
fn few_entries(capacity: u64) -> f64 {
    (capacity as f64 / 256.0).max(16.0)
}

fn grows(f: &Fit, limit: f64) -> bool {
    f.slope_per_hour - SLOPE_SIGMAS * f.stderr_per_hour > limit
}

/// A counter's increase over the samples, a drop counting as a reset.
fn increase(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut total = 0.0;
    let mut last: Option<f64> = None;
    for v in values {
        if let Some(l) = last {
            total += if v >= l { v - l } else { v };
        }
        last = Some(v);
    }
    total
}

struct Inputs<'a> {
    planned: Duration,
    soaked: Duration,
    n_processes: u64,
    scrapers: usize,
    samples: &'a [Sample],
    load: &'a Load,
    transition: Option<(f64, f64)>,
    kill: Option<KillOutcome>,
    reload: ReloadOutcome,
    final_leak: Option<LeakCheck>,
    daemon_died: bool,
    interrupted: bool,
    exit: String,
    exit_ok: bool,
    stop_seconds: f64,
    ids: &'a Ids,
    leftovers: Vec<String>,
    total_seconds: f64,
    injected_leak: Option<u64>,
    alert_window: Duration,
}

#[derive(Serialize)]
struct Check {
    name: String,
    passed: bool,
    detail: String,
}

#[derive(Serialize)]
struct MapReport {
    name: String,
    kind: &'static str,
    capacity: u64,
    start: Option<u64>,
    end: Option<u64>,
    min: Option<u64>,
    max: Option<u64>,
    fit: Option<Fit>,
    limit_per_hour: Option<f64>,
    /// Maps of the same name (every collector's object has its own).
    instances: u32,
    /// LRU maps are not judged: see `lru`.
    judged: bool,
    flat: bool,
}

#[derive(Serialize)]
struct Report {
    date: String,
    kernel: String,
    cpus: usize,
    planned_seconds: f64,
    soaked_seconds: f64,
    total_seconds: f64,
    warmup_seconds: f64,
    /// The learning window of the alert rules that learn over 1 h by default.
    alert_window_seconds: f64,
    /// How long the alert engine's memory grows with that window.
    engine_fill_seconds: f64,
    /// Samples left out of the slopes around the target's kill and replacement.
    excluded_window: Option<(f64, f64)>,
    processes_planned: u64,
    processes_started: u64,
    processes_failed: u64,
    scrapers: usize,
    scrapes_expected: u64,
    scrapes_answered: u64,
    scrapes_failed: u64,
    scrape_errors: Vec<String>,
    scrape_ms_median: Option<f64>,
    scrape_ms_p99: Option<f64>,
    scrape_ms_max: Option<f64>,
    rss_kib_start: Option<u64>,
    rss_kib_end: Option<u64>,
    rss_kib_max: Option<u64>,
    rss_fit: Option<Fit>,
    /// The judged slope: RssAnon's.
    rss_anon_fit: Option<Fit>,
    rss_file_fit: Option<Fit>,
    rss_limit_kib_per_hour: Option<f64>,
    /// `--inject-leak`: the daemon was made to leak this much on purpose.
    injected_leak_kib_per_hour: Option<u64>,
    maps: Vec<MapReport>,
    direct_writes: u64,
    write_errors: u64,
    block_writes_counted: f64,
    tcp_connects: u64,
    tcp_errors: u64,
    tcp_connects_counted: f64,
    burn_cpu_seconds: f64,
    lost_events: BTreeMap<String, f64>,
    kill: Option<KillOutcome>,
    final_leak: Option<LeakCheck>,
    reload: ReloadOutcome,
    exit: String,
    stop_seconds: f64,
    bpf_programs: usize,
    bpf_maps: usize,
    bpf_links: usize,
    leftovers: Vec<String>,
    checks: Vec<Check>,
    samples: Vec<Sample>,
}

fn analyse(i: Inputs<'_>) -> Report {
    let planned = i.planned.as_secs_f64();
    let warmup = warmup(i.planned, i.alert_window);
    let in_fit = |t: f64| t >= warmup && i.transition.is_none_or(|(a, b)| t < a || t > b);
    let last = i.samples.last();
    let first = i.samples.first();

    // The target's replacement may leave a step (its first detach and
    // attach run code and fill caches once): a level each side of it.
    let step_at = i.transition.map(|(_, b)| b);
    let rss_fit_of = |get: fn(&Sample) -> Option<u64>| {
        let points: Vec<(f64, f64)> = i
            .samples
            .iter()
            .filter(|s| in_fit(s.t))
            .filter_map(|s| Some((s.t, get(s)? as f64)))
            .collect();
        fit(&points, step_at)
    };
    let rss_fit = rss_fit_of(|s| s.rss_kib);
    // Judged: the anonymous part, the daemon's own memory. File-backed
    // pages are the binary's code paged in as paths first run (bounded by
    // its size, reclaimable) and are reported apart. The limit is a share
    // of the whole RSS: a leak that matters grows the daemon's footprint.
    let anon_fit = rss_fit_of(|s| s.rss_anon_kib);
    let file_fit = rss_fit_of(|s| s.rss_file_kib);
    let rss_limit = rss_fit.map(|f| GROWTH_LIMIT_PER_HOUR * f.mean);

    let names: BTreeSet<&String> = i.samples.iter().flat_map(|s| s.maps.keys()).collect();
    let maps: Vec<MapReport> = names
        .into_iter()
        .map(|name| {
            let of = |s: &Sample| s.maps.get(name).and_then(|m| m.entries);
            let kind = i
                .samples
                .iter()
                .find_map(|s| s.maps.get(name).map(|m| m.kind))
                .unwrap_or("other");
            let capacity = i
                .samples
                .iter()
                .filter_map(|s| s.maps.get(name).map(|m| m.capacity))
                .max()
                .unwrap_or(0);
            let counts: Vec<u64> = i.samples.iter().filter_map(of).collect();
            let points: Vec<(f64, f64)> = i
                .samples
                .iter()
                .filter(|s| in_fit(s.t))
                .filter_map(|s| Some((s.t, of(s)? as f64)))
                .collect();
            let instances = i
                .samples
                .iter()
                .filter_map(|s| s.maps.get(name).map(|m| m.instances))
                .max()
                .unwrap_or(0);
            let fit = fit(&points, step_at);
            let limit = fit.map(|f| {
                (GROWTH_LIMIT_PER_HOUR * f.mean).max(MAP_CAPACITY_LIMIT_PER_HOUR * capacity as f64)
            });
            // Entries added after the warm-up, all told: a histogram map
            // gains one per new (device, operation) or (kind, port) series,
            // a set the configuration bounds, and a few first seen late
            // make a steep slope over a short run without being growth.
            let added = points
                .first()
                .map(|(_, y0)| points.iter().map(|(_, y)| *y).fold(*y0, f64::max) - y0);
            let few = added.is_some_and(|a| a <= few_entries(capacity));
            MapReport {
                name: name.clone(),
                kind,
                capacity,
                start: first.and_then(of),
                end: last.and_then(of),
                min: counts.iter().copied().min(),
                max: counts.iter().copied().max(),
                flat: few || fit.zip(limit).is_none_or(|(f, l)| !grows(&f, l)),
                judged: fit.is_some() && !is_lru(kind),
                fit,
                limit_per_hour: limit,
                instances,
            }
        })
        .collect();

    let scraped: Vec<&Scraped> = i
        .samples
        .iter()
        .filter_map(|s| s.scraped.as_ref())
        .collect();
    let mut lost_keys: BTreeSet<&String> = BTreeSet::new();
    for s in &scraped {
        lost_keys.extend(s.lost.keys());
    }
    // A series absent from a sample (a leak tracer gone with its process)
    // reads as 0 there, which `increase` takes as a reset.
    let lost_events: BTreeMap<String, f64> = lost_keys
        .into_iter()
        .map(|k| {
            let values = scraped
                .iter()
                .map(|s| s.lost.get(k).copied().unwrap_or(0.0));
            (k.clone(), increase(values))
        })
        .collect();
    let lost_of = |collector: &str| -> f64 {
        lost_events
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{collector}/")))
            .map(|(_, v)| v)
            .sum()
    };
    let block_writes_counted = increase(scraped.iter().map(|s| s.block_writes));
    let tcp_connects_counted = increase(scraped.iter().map(|s| s.tcp_connects));

    let load = i.load;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut ms: Vec<f64> = lock(&load.scrape_ms)
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    ms.sort_by(f64::total_cmp);
    let p99 = (!ms.is_empty()).then(|| ms[((ms.len() - 1) as f64 * 0.99).round() as usize]);
    let scrapes_expected = (i.scrapers as f64 * i.soaked.as_secs_f64()).floor() as u64;

    let mut checks = Vec::new();
    let mut check = |name: &str, passed: bool, detail: String| {
        checks.push(Check {
            name: name.into(),
            passed,
            detail,
        });
    };
    check(
        "ran_to_the_end",
        !i.daemon_died && !i.interrupted && i.soaked + Duration::from_secs(1) >= i.planned,
        if i.daemon_died {
            "the daemon exited during the run".into()
        } else if i.interrupted {
            "interrupted".into()
        } else {
            format!("{:.0} s of {:.0} s", i.soaked.as_secs_f64(), planned)
        },
    );
    check(
        "rss_flat",
        anon_fit.zip(rss_limit).is_some_and(|(f, l)| !grows(&f, l)),
        anon_fit.zip(rss_fit).zip(rss_limit).map_or_else(
            || "too few samples after warm-up".into(),
            |((a, r), l)| {
                format!(
                    "RssAnon {:+.0} ± {:.0} KiB/h (limit {:.0} KiB/h, {:.0}% of the mean RSS \
                     {:.1} MiB); RssFile {}, VmRSS {:+.0} ± {:.0} KiB/h (not judged)",
                    a.slope_per_hour,
                    a.stderr_per_hour,
                    l,
                    GROWTH_LIMIT_PER_HOUR * 100.0,
                    r.mean / 1024.0,
                    file_fit.map_or_else(
                        || "-".into(),
                        |f| format!("{:+.0} ± {:.0} KiB/h", f.slope_per_hour, f.stderr_per_hour)
                    ),
                    r.slope_per_hour,
                    r.stderr_per_hour,
                )
            },
        ),
    );
    let slope_of = |m: &MapReport| {
        let f = m.fit.expect("only fitted maps can grow");
        format!("{} {:+.0}/h", m.name, f.slope_per_hour)
    };
    let growing: Vec<String> = maps
        .iter()
        .filter(|m| m.judged && !m.flat)
        .map(slope_of)
        .collect();
    let lru_growing: Vec<String> = maps
        .iter()
        .filter(|m| !m.judged && m.fit.is_some() && !m.flat)
        .map(slope_of)
        .collect();
    let judged = maps.iter().filter(|m| m.judged).count();
    check(
        "maps_flat",
        growing.is_empty() && judged > 0,
        format!(
            "{}{}",
            if growing.is_empty() {
                format!("{judged} hash and stack maps, all flat")
            } else {
                format!("growing: {}", growing.join(", "))
            },
            if lru_growing.is_empty() {
                String::new()
            } else {
                format!(
                    "; LRU maps, not judged (they fill to capacity, then evict): {}",
                    lru_growing.join(", ")
                )
            }
        ),
    );
    let own_scrape_errors = i
        .samples
        .iter()
        .filter(|s| s.scrape_error.is_some())
        .count();
    let failed_sources: BTreeSet<&String> =
        scraped.iter().flat_map(|s| &s.sources_failed).collect();
    check(
        "no_scrape_error",
        n(&load.scrapes_failed) == 0
            && own_scrape_errors == 0
            && failed_sources.is_empty()
            && n(&load.scrapes_ok) > 0,
        format!(
            "{} answered, {} failed{}; sampler's scrapes failed: {own_scrape_errors}; sources \
             that failed a read: {}",
            n(&load.scrapes_ok),
            n(&load.scrapes_failed),
            lock(&load.scrape_errors)
                .first()
                .map_or_else(String::new, |e| format!(" (e.g. {e})")),
            if failed_sources.is_empty() {
                "none".into()
            } else {
                failed_sources
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    );
    let down: Vec<String> = last
        .and_then(|s| s.scraped.as_ref())
        .map(|s| {
            s.collectors_up
                .iter()
                .filter(|(_, v)| **v != 1.0)
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    check(
        "collectors_up",
        down.is_empty() && last.and_then(|s| s.scraped.as_ref()).is_some(),
        if down.is_empty() {
            "every collector up at the end".into()
        } else {
            format!("down: {}", down.join(", "))
        },
    );
    check(
        "short_lived_processes",
        n(&load.processes_started) == i.n_processes && n(&load.processes_failed) == 0,
        format!(
            "{} of {} started, {} failed",
            n(&load.processes_started),
            i.n_processes,
            n(&load.processes_failed)
        ),
    );
    check(
        "reload",
        i.reload.passed,
        i.reload.error.clone().unwrap_or_else(|| {
            format!(
                "SIGHUP at {:.0} s: logged, perf_user_config_last_reload_successful = 1",
                i.reload.at_seconds
            )
        }),
    );
    check(
        "target_killed_and_replaced",
        i.kill
            .as_ref()
            .is_some_and(|k| k.released && k.replaced && k.error.is_none()),
        i.kill.as_ref().map_or_else(
            || "the run ended before the kill".into(),
            |k| {
                k.error.clone().unwrap_or_else(|| {
                    format!(
                        "killed at {:.0} s; the daemon let go of it and traced its replacement",
                        k.at_seconds
                    )
                })
            },
        ),
    );
    let leak_checks: Vec<&LeakCheck> = i
        .kill
        .as_ref()
        .and_then(|k| k.before_kill.as_ref())
        .into_iter()
        .chain(i.final_leak.as_ref())
        .collect();
    let leak_detail = leak_checks
        .iter()
        .map(|c| {
            c.error.clone().unwrap_or_else(|| {
                format!(
                    "malloc/free made {}/{}, seen {}/{}, counted lost {}",
                    c.allocations_made,
                    c.frees_made,
                    c.allocations_seen,
                    c.frees_seen,
                    c.lost_counted
                )
            })
        })
        .collect::<Vec<_>>()
        .join("; ");
    let writes = n(&load.direct_writes);
    let connects = n(&load.tcp_connects);
    let block_ok = block_writes_counted + lost_of("block") >= writes as f64;
    let tcp_ok = tcp_connects_counted + lost_of("tcp") >= connects as f64;
    check(
        "nothing_lost_uncounted",
        block_ok
            && tcp_ok
            && leak_checks.len() == 2
            && leak_checks.iter().all(|c| c.passed)
            && writes > 0
            && connects > 0,
        format!(
            "direct writes {writes}, block writes counted {block_writes_counted} + lost {}; \
             TCP connects {connects}, counted {tcp_connects_counted} + lost {}; leak targets: \
             {leak_detail}",
            lost_of("block"),
            lost_of("tcp"),
        ),
    );
    check(
        "sigterm_exit_0",
        i.exit_ok,
        format!("{} after {:.1} s", i.exit, i.stop_seconds),
    );
    check(
        "nothing_left_in_kernel",
        i.leftovers.is_empty() && !i.ids.programs.is_empty(),
        if i.leftovers.is_empty() {
            format!(
                "none of the {} programs, {} maps and {} links the daemon ever held is left",
                i.ids.programs.len(),
                i.ids.maps.len(),
                i.ids.links.len()
            )
        } else {
            format!("left: {}", i.leftovers.join(", "))
        },
    );

    let rss_max = i.samples.iter().filter_map(|s| s.rss_kib).max();
    Report {
        date: cmd::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        cpus: thread::available_parallelism().map_or(1, |n| n.get()),
        planned_seconds: planned,
        soaked_seconds: i.soaked.as_secs_f64(),
        total_seconds: i.total_seconds,
        warmup_seconds: warmup,
        alert_window_seconds: i.alert_window.as_secs_f64(),
        engine_fill_seconds: engine_fill(i.alert_window).as_secs_f64(),
        excluded_window: i.transition,
        processes_planned: i.n_processes,
        processes_started: n(&load.processes_started),
        processes_failed: n(&load.processes_failed),
        scrapers: i.scrapers,
        scrapes_expected,
        scrapes_answered: n(&load.scrapes_ok),
        scrapes_failed: n(&load.scrapes_failed),
        scrape_errors: lock(&load.scrape_errors).clone(),
        scrape_ms_median: stats::median(&ms),
        scrape_ms_p99: p99,
        scrape_ms_max: ms.last().copied(),
        rss_kib_start: first.and_then(|s| s.rss_kib),
        rss_kib_end: last.and_then(|s| s.rss_kib),
        rss_kib_max: rss_max,
        rss_fit,
        rss_anon_fit: anon_fit,
        rss_file_fit: file_fit,
        rss_limit_kib_per_hour: rss_limit,
        injected_leak_kib_per_hour: i.injected_leak,
        maps,
        direct_writes: writes,
        write_errors: n(&load.write_errors),
        block_writes_counted,
        tcp_connects: connects,
        tcp_errors: n(&load.tcp_errors),
        tcp_connects_counted,
        burn_cpu_seconds: *lock(&load.burn_seconds),
        lost_events,
        kill: i.kill,
        final_leak: i.final_leak,
        reload: i.reload,
        exit: i.exit,
        stop_seconds: i.stop_seconds,
        bpf_programs: i.ids.programs.len(),
        bpf_maps: i.ids.maps.len(),
        bpf_links: i.ids.links.len(),
        leftovers: i.leftovers,
        checks,
        samples: i.samples.to_vec(),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

impl Report {
    fn markdown(&self) -> String {
        let mut md = String::new();
        let mut line = |s: String| {
            md.push_str(&s);
            md.push('\n');
        };
        line("# Soak: `perf-user run` with every collector".into());
        line(String::new());
        line(format!(
            "{}, Linux {}, {} CPUs. {:.0} s of load ({:.0} s planned), {:.0} s in all with the \
             build; slopes from {:.0} s on (warm-up: {:.0} % of the run, at least the alert \
             engine's fill time of {:.0} s with {:.0} s learning windows, at most half the \
             run){}{}.",
            self.date,
            self.kernel,
            self.cpus,
            self.soaked_seconds,
            self.planned_seconds,
            self.total_seconds,
            self.warmup_seconds,
            WARMUP_FRACTION * 100.0,
            self.engine_fill_seconds,
            self.alert_window_seconds,
            self.excluded_window.map_or_else(String::new, |(a, b)| format!(
                ", leaving out {a:.0}–{b:.0} s (the target's kill until its replacement's ring is full)"
            )),
            self.injected_leak_kib_per_hour.map_or_else(String::new, |k| format!(
                "; **the daemon was made to leak {k} KiB/h** (`--inject-leak`)"
            )),
        ));
        line(String::new());
        line("| check | result | detail |".into());
        line("|---|---|---|".into());
        for c in &self.checks {
            line(format!(
                "| {} | {} | {} |",
                c.name,
                if c.passed { "pass" } else { "**FAIL**" },
                c.detail.replace('|', "\\|")
            ));
        }
        line(String::new());
        line("| figure | value |".into());
        line("|---|---|".into());
        let mut row = |k: &str, v: String| line(format!("| {k} | {v} |"));
        row("duration", format!("{:.0} s", self.soaked_seconds));
        row(
            "short-lived processes started",
            format!(
                "{} of {} ({} failed)",
                self.processes_started, self.processes_planned, self.processes_failed
            ),
        );
        row(
            "RSS start / end / peak",
            format!(
                "{} / {} / {}",
                mib(self.rss_kib_start),
                mib(self.rss_kib_end),
                mib(self.rss_kib_max)
            ),
        );
        let ends = |get: fn(&Sample) -> Option<u64>| {
            let at_warmup = self
                .samples
                .iter()
                .find(|s| s.t >= self.warmup_seconds)
                .and_then(get);
            format!(
                "{} / {} / {}",
                mib(self.samples.first().and_then(get)),
                mib(at_warmup),
                mib(self.samples.last().and_then(get))
            )
        };
        row(
            "RssAnon (heap, judged) start / after warm-up / end",
            ends(|s| s.rss_anon_kib),
        );
        row(
            "RssFile (mapped files) start / after warm-up / end",
            ends(|s| s.rss_file_kib),
        );
        row(
            "RssShmem start / after warm-up / end",
            ends(|s| s.rss_shmem_kib),
        );
        let slope = |f: Option<Fit>, judged: bool| {
            f.map_or_else(
                || "-".into(),
                |f| {
                    format!(
                        "{:+.0} ± {:.0} KiB/h over {} samples{}",
                        f.slope_per_hour,
                        f.stderr_per_hour,
                        f.points,
                        if judged {
                            format!(
                                " (limit {} KiB/h)",
                                opt(self.rss_limit_kib_per_hour.map(|l| format!("{l:.0}")))
                            )
                        } else {
                            " (not judged)".into()
                        }
                    )
                },
            )
        };
        row(
            "RssAnon slope after warm-up",
            slope(self.rss_anon_fit, true),
        );
        row(
            "RssFile slope after warm-up",
            slope(self.rss_file_fit, false),
        );
        row("VmRSS slope after warm-up", slope(self.rss_fit, false));
        let entries_at = |end: bool| -> u64 {
            self.maps
                .iter()
                .filter_map(|m| if end { m.end } else { m.start })
                .sum()
        };
        row(
            "BPF map entries (all maps) start / end",
            format!("{} / {}", entries_at(false), entries_at(true)),
        );
        row(
            "kernel memory of the maps (memlock) start / end",
            format!(
                "{} / {}",
                mib(self.samples.first().map(|s| s.map_memlock_kib)),
                mib(self.samples.last().map(|s| s.map_memlock_kib))
            ),
        );
        row(
            "scrapes answered",
            format!(
                "{} of {} expected ({} scrapers at 1 Hz), {} failed",
                self.scrapes_answered, self.scrapes_expected, self.scrapers, self.scrapes_failed
            ),
        );
        row(
            "scrape time median / p99 / max",
            format!(
                "{} / {} / {} ms",
                opt(self.scrape_ms_median.map(|v| format!("{v:.1}"))),
                opt(self.scrape_ms_p99.map(|v| format!("{v:.1}"))),
                opt(self.scrape_ms_max.map(|v| format!("{v:.1}")))
            ),
        );
        row(
            "direct 4 KiB writes / counted by the block collector",
            format!(
                "{} ({} errors) / {}",
                self.direct_writes, self.write_errors, self.block_writes_counted
            ),
        );
        row(
            "loopback TCP connects / counted by the TCP collector",
            format!(
                "{} ({} errors) / {} (the scrapers' connects too)",
                self.tcp_connects, self.tcp_errors, self.tcp_connects_counted
            ),
        );
        row(
            "CPU burn",
            format!("{:.0} s of one CPU", self.burn_cpu_seconds),
        );
        row(
            "lost events (increase)",
            if self.lost_events.is_empty() {
                "none reported".into()
            } else {
                self.lost_events
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        row(
            "BPF objects the daemon held",
            format!(
                "{} programs, {} maps, {} links (ids, over the run)",
                self.bpf_programs, self.bpf_maps, self.bpf_links
            ),
        );
        row(
            "SIGTERM to exit",
            format!("{:.1} s, {}", self.stop_seconds, self.exit),
        );
        line(String::new());
        line(
            "| map | kind | instances | capacity | entries start | end | min | max | slope after warm-up | limit | flat |"
                .into(),
        );
        line("|---|---|---|---|---|---|---|---|---|---|---|".into());
        for m in &self.maps {
            line(format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                m.name,
                m.kind,
                m.instances,
                m.capacity,
                opt(m.start),
                opt(m.end),
                opt(m.min),
                opt(m.max),
                m.fit.map_or_else(
                    || "fixed size".into(),
                    |f| format!("{:+.1} ± {:.1} /h", f.slope_per_hour, f.stderr_per_hour)
                ),
                opt(m.limit_per_hour.map(|l| format!("{l:.0} /h"))),
                if m.fit.is_none() {
                    "-"
                } else if !m.judged {
                    "not judged (LRU)"
                } else if m.flat {
                    "yes"
                } else {
                    "**no**"
                },
            ));
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5s").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn exposition_lines() {
        let s = parse_line(r#"perf_user_lost_events_total{collector="block",reason="a\"b"} 3"#)
            .unwrap();
        assert_eq!(s.name, "perf_user_lost_events_total");
        assert_eq!(s.label("collector"), "block");
        assert_eq!(s.label("reason"), "a\"b");
        assert_eq!(s.value, 3.0);
        let s = parse_line("process_threads 12").unwrap();
        assert_eq!((s.name.as_str(), s.value), ("process_threads", 12.0));
        assert!(s.labels.is_empty());
        let text = "# HELP x y\nx_count{op=\"write\",device=\"vda\"} 5\nx_count{op=\"read\"} 7\n\
                    x_count{op=\"write\",device=\"loop0\"} 2\n";
        assert_eq!(
            sum(&parse_metrics(text), "x_count", &[("op", "write")]),
            7.0
        );
    }

    #[test]
    fn warmup_covers_the_alert_engine_fill_in_long_runs() {
        let (ten, hour) = (Duration::from_secs(600), Duration::from_secs(3600));
        // 10-minute windows: series full after 10 min, gone ones forgotten 10 min later.
        assert_eq!(warmup(hour, ten), 1200.0);
        assert!((warmup(Duration::from_secs(6 * 3600), ten) - 4320.0).abs() < 1e-6);
        // The built-in hour: two hours before the engine stops growing.
        assert_eq!(warmup(Duration::from_secs(10 * 3600), hour), 7200.0);
        // Ten minutes cannot wait for the engine: half the run.
        assert_eq!(warmup(ten, ten), 300.0);
    }

    #[test]
    fn a_few_late_series_are_not_growth() {
        // TCP_HISTS in a 10-minute CI run: 4 → 21 entries, a dozen late.
        assert_eq!(few_entries(4096), 16.0);
        assert_eq!(few_entries(1024), 16.0);
        assert_eq!(few_entries(65_536), 256.0);
    }

    #[test]
    fn slope_and_flatness() {
        let flat: Vec<(f64, f64)> = (0..50).map(|i| (i as f64 * 10.0, 1000.0)).collect();
        let f = fit(&flat, None).unwrap();
        assert!(f.slope_per_hour.abs() < 1e-9);
        assert!(!grows(&f, 50.0));
        // One entry per second: 3600 per hour, far above 5 % of the mean.
        let leak: Vec<(f64, f64)> = (0..50)
            .map(|i| (i as f64 * 10.0, 1000.0 + i as f64 * 10.0))
            .collect();
        let f = fit(&leak, None).unwrap();
        assert!((f.slope_per_hour - 3600.0).abs() < 1e-6);
        assert!(grows(&f, 0.05 * f.mean));
        // A sawtooth (a map that fills and empties every window) is noise.
        let saw: Vec<(f64, f64)> = (0..48)
            .map(|i| (i as f64 * 10.0, [100.0, 200.0, 300.0][i % 3]))
            .collect();
        let f = fit(&saw, None).unwrap();
        assert!(!grows(&f, 0.05 * f.mean), "{f:?}");
        // A step between two flat stretches is no slope when it is where
        // the levels split, and steep when it is not.
        let step: Vec<(f64, f64)> = (0..48)
            .map(|i| (i as f64 * 10.0, if i < 20 { 1000.0 } else { 1040.0 }))
            .collect();
        let f = fit(&step, Some(200.0)).unwrap();
        assert!(f.slope_per_hour.abs() < 1e-6, "{f:?}");
        assert!(grows(&fit(&step, None).unwrap(), 0.05 * 1000.0));
        // A leak is still one with a step in it.
        let f = fit(&leak, Some(250.0)).unwrap();
        assert!((f.slope_per_hour - 3600.0).abs() < 1e-6);
    }

    #[test]
    fn counter_increase_with_resets() {
        assert_eq!(increase([1.0, 3.0, 3.0, 7.0]), 6.0);
        assert_eq!(increase([5.0, 8.0, 2.0, 4.0]), 3.0 + 2.0 + 2.0);
        assert_eq!(increase([]), 0.0);
    }
}
