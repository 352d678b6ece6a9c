//! End-to-end tests of `perf-user run`, the daemon: bad configurations fail
//! with one clear message; a real Prometheus server scrapes it; promtool
//! accepts a live scrape; every metric the docs and the Grafana dashboard
//! name exists; 50 concurrent scrapers all get answers while the daemon's
//! memory stays bounded; SIGTERM detaches everything and exits 0.
//!
//! All tests but `bad_configs_fail_cleanly` need root; without it they fail,
//! unless `PERF_USER_SKIP_PRIVILEGED=1` asks to skip them. The Prometheus
//! test needs the Debian package `prometheus` (`cargo xtask test` installs it).

mod common;
#[path = "common/scrape.rs"]
mod scrape_common;

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use scrape_common::*;
use serde_json::Value;

/// A `/proc/PID/status` field in KiB: `VmRSS` (all resident memory) or
/// `RssAnon` (the heap and stacks, without mapped files).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

impl Daemon {
    /// Waits until at least `n` CPU windows have closed.
    fn wait_for_windows(&self, n: f64) {
        self.wait_for_counter("perf_user_cpu_windows_total", n);
    }

    /// Waits until the unlabelled counter `name` reaches `n`, and returns
    /// that scrape.
    fn wait_for_counter(&self, name: &str, n: f64) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.scrape();
            if sample_value(&s, &format!("{name} ")).is_some_and(|v| v >= n) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not reach {n} in 60 s\n{}",
                truncate(&s, 4000)
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Runs `promtool check metrics` (lint included) on `scrape`.
fn promtool_check(scrape: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run promtool: install the Debian package `prometheus`");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- scrape ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        truncate(scrape, 6000)
    );
}

/// The whole disk holding `dir` (`vda` for `vda1`), from sysfs; `None`
/// when it is not on a block device (tmpfs, overlay).
fn disk_of(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    let disk = if sys.join("partition").exists() {
        sys.parent()?.to_path_buf()
    } else {
        sys
    };
    Some(disk.file_name()?.to_string_lossy().into_owned())
}

/// 2000 direct 4 KiB writes to `file`, then 2000 direct reads of it.
fn direct_io(file: &Path) {
    let of = format!("of={}", file.display());
    let iff = format!("if={}", file.display());
    for args in [
        vec![
            "if=/dev/zero",
            of.as_str(),
            "bs=4k",
            "count=2000",
            "oflag=direct",
        ],
        vec![iff.as_str(), "of=/dev/null", "bs=4k", "iflag=direct"],
    ] {
        let status = Command::new("dd")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("cannot run dd");
        assert!(status.success(), "dd {args:?} failed: {status}");
    }
}

/// User plus system CPU seconds of `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// Names of the metric families in a Prometheus-text scrape (from `# TYPE`).
fn families(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample_value(scrape: &str, prefix: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// BPF program ids held by `pid`, from /proc/PID/fdinfo.
fn bpf_prog_ids(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// Ids of every BPF program loaded on the host (through aya, as root).
fn loaded_prog_ids() -> HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

/// Entries under the BPF filesystem (pinned objects), if it is mounted.
fn pinned() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.filter_map(Result::ok) {
                out.insert(e.path());
                walk(&e.path(), out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(Path::new("/sys/fs/bpf"), &mut out);
    out
}

// ---------------------------------------------------------------------------
// Configuration errors (no privileges needed: --check-config loads nothing).

#[test]
fn bad_configs_fail_cleanly() {
    let dir = test_dir("daemon_bad_configs");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown_key.toml",
            "[collectors.cpu]\nfrequency_hz = 49\nwindwo = \"30s\"\n",
            &[":3:1:", "unknown key `windwo`", "window"],
        ),
        (
            "wrong_type.toml",
            "[collectors.cpu]\ntop = \"many\"\n",
            &[":2:7:", "collectors.cpu.top", "whole number"],
        ),
        (
            "unknown_collector.toml",
            "[collectors.gpu]\nenabled = true\n",
            &[":1:", "unknown collector `gpu`", "cpu"],
        ),
        (
            "negative_frequency.toml",
            "[collectors.cpu]\nfrequency_hz = -99\n",
            &[":2:16:", "collectors.cpu.frequency_hz", "not -99"],
        ),
        ("syntax.toml", "[exporter\nlisten = 1\n", &[":1:"]),
        (
            "public.toml",
            "[exporter]\nlisten = \"0.0.0.0:9464\"\n",
            &["allow_non_loopback"],
        ),
    ];
    for (name, text, wanted) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = run_perf_user(
            &["run", "--check-config", "--config", path.to_str().unwrap()],
            Duration::from_secs(30),
        );
        let ctx = format!("config {name}:\n{text}\n{}", out.describe());
        assert_eq!(out.status.code(), Some(1), "{ctx}");
        assert!(!out.stderr.contains("panicked"), "{ctx}");
        assert_eq!(
            out.stderr.matches("error:").count(),
            1,
            "one error, once\n{ctx}"
        );
        assert!(out.stderr.contains(name), "the error names the file\n{ctx}");
        for w in *wanted {
            assert!(out.stderr.contains(w), "expected {w:?}\n{ctx}");
        }
    }

    // An unreadable file: a directory, and a missing one.
    for path in [dir.clone(), dir.join("missing.toml")] {
        let out = run_perf_user(
            &["run", "--check-config", "--config", path.to_str().unwrap()],
            Duration::from_secs(30),
        );
        let ctx = out.describe();
        assert_eq!(out.status.code(), Some(1), "{ctx}");
        assert!(
            out.stderr.contains("cannot read the configuration file"),
            "{ctx}"
        );
        assert!(!out.stderr.contains("panicked"), "{ctx}");
    }

    // A good file passes, and flags win over it.
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[collectors.cpu]\nfrequency_hz = 99\nwindow = \"1m\"\n",
    )
    .unwrap();
    let out = run_perf_user(
        &[
            "run",
            "--check-config",
            "--config",
            good.to_str().unwrap(),
            "--cpu-frequency",
            "19",
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        out.stdout.contains("configuration OK"),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout.contains("19 Hz"),
        "flags win\n{}",
        out.describe()
    );

    // A bad flag value is one clear error too.
    let out = run_perf_user(
        &["run", "--check-config", "--cpu-frequency", "0"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    assert!(out.stderr.contains("--cpu-frequency"), "{}", out.describe());
}

/// A port already taken is one clear error, before anything is loaded.
#[test]
fn taken_port_is_one_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_perf_user(
        &["run", "--listen", &addr, "--log-format", "json"],
        Duration::from_secs(60),
    );
    let ctx = out.describe();
    assert_eq!(out.status.code(), Some(1), "{ctx}");
    assert!(!out.stderr.contains("panicked"), "{ctx}");
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{ctx}");
    assert!(last.contains(&format!("cannot listen on {addr}")), "{ctx}");
    assert!(last.contains("--listen"), "names the fix\n{ctx}");
    assert_eq!(last.matches("in use").count(), 1, "the cause once\n{ctx}");
}

/// The documented Prometheus configuration is valid.
#[test]
fn documented_prometheus_config_is_valid() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/prometheus.yml");
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .expect("cannot run promtool: install the Debian package `prometheus`");
    assert!(
        out.status.success(),
        "promtool check config {}:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Privileged tests.

/// A real Prometheus server scrapes the daemon; PromQL sees the CPU samples
/// rise, the hot function of a busy workload among the hotspots, and a
/// non-zero rate of the disk's latency histogram under direct I/O.
#[test]
fn prometheus_scrapes_the_daemon() {
    if !require_privileges("prometheus_scrapes_the_daemon") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("daemon_prometheus");
    let exe = compile_c("hot", &dir);
    let mut hot = Workload::spawn(&exe, &["120"]);
    let daemon = Daemon::start(&["--cpu-window", "5s", "--cpu-top", "10"]);
    let prom = Prometheus::start(
        &dir,
        &format!(
            "  - job_name: perf-user\n    static_configs:\n      - targets: ['{}']\n",
            daemon.addr
        ),
    );
    let wait_for = |q: &str, pred: &dyn Fn(f64) -> bool| prom.wait_for(q, pred);

    let up = wait_for(r#"up{job="perf-user"}"#, &|v| v == 1.0);
    // Direct I/O on the disk under the test directory, until the queries are done.
    let disk = disk_of(&dir);
    let io_stop = Arc::new(AtomicBool::new(false));
    let io = {
        let (stop, file) = (io_stop.clone(), dir.join("direct-io.bin"));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                direct_io(&file);
            }
        })
    };
    let selector = match &disk {
        Some(d) => format!(r#"device="{d}""#),
        None => String::new(),
    };
    let io_rate = wait_for(
        &format!("sum(rate(perf_user_block_io_latency_seconds_count{{{selector}}}[10s]))"),
        &|v| v > 0.0,
    );
    let io_p50 = wait_for(
        &format!(
            "histogram_quantile(0.5, sum by (le) (rate(perf_user_block_io_latency_seconds_bucket{{{selector}}}[10s])))"
        ),
        &|v| v > 0.0 && v.is_finite(),
    );
    io_stop.store(true, Ordering::Relaxed);
    io.join().unwrap();
    let rate = wait_for("rate(perf_user_cpu_samples_total[10s])", &|v| v > 0.0);
    let hot_ratio = wait_for(
        r#"max(perf_user_cpu_hotspot_self_ratio{function="burn_cpu_hot"})"#,
        &|v| v > 0.05,
    );
    hot.assert_running();
    let scrape = daemon.scrape();
    drop(prom);
    let ctx = format!(
        "up={up:?} rate={rate:?} hot_ratio={hot_ratio:?} disk={disk:?} io_rate={io_rate:?} io_p50={io_p50:?}\n--- scrape ---\n{}",
        truncate(&scrape, 6000)
    );
    assert_eq!(up, Some(1.0), "Prometheus never saw up == 1\n{ctx}");
    assert!(rate.is_some(), "no CPU sample rate through PromQL\n{ctx}");
    assert!(
        io_rate.is_some(),
        "no block I/O rate for the disk's latency histogram through PromQL\n{ctx}"
    );
    // Direct 4 KiB I/O on a virtual disk: between 1 us and 1 s.
    assert!(
        io_p50.is_some_and(|p| (1e-6..1.0).contains(&p)),
        "implausible median disk latency through PromQL\n{ctx}"
    );
    // One thread always runnable: burn_cpu_hot holds a visible share of the
    // samples even on a loaded host (about half on an idle 2-CPU one).
    assert!(
        hot_ratio.is_some_and(|r| r > 0.05),
        "burn_cpu_hot is not among the hotspots with a fair share\n{ctx}"
    );
    let out = daemon.stop();
    assert!(out.status.success(), "{}", out.describe());
}

/// `promtool check metrics` accepts a live scrape (lint included).
#[test]
fn promtool_accepts_a_live_scrape() {
    if !require_privileges("promtool_accepts_a_live_scrape") {
        return;
    }
    let _guard = exclusive();
    let daemon = Daemon::start(&["--cpu-window", "5s"]);
    // After a window, so the hotspot families have samples too.
    daemon.wait_for_windows(1.0);
    promtool_check(&daemon.scrape());
    // OpenMetrics for clients that ask for it (Prometheus does).
    let om = http_get(
        daemon.addr,
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    )
    .unwrap();
    assert_eq!(om.status, 200);
    assert!(
        om.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        om.headers
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", truncate(&om.body, 2000));
}

/// Metric names mentioned in a text: identifiers starting with one of the
/// daemon's prefixes, with histogram and counter sample suffixes removed.
fn metric_names_in(text: &str, scraped: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let starts = (rest.starts_with("perf_user_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..len];
            // `perf_user_x_seconds_bucket` belongs to family `perf_user_x_seconds`.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    let base = name.strip_suffix(s)?;
                    scraped.contains(base).then(|| base.to_string())
                })
                .unwrap_or_else(|| name.to_string());
            // A bare prefix in prose ("perf_user_") is not a metric.
            if !family.ends_with('_') {
                out.insert(family);
            }
            i += len;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// Every metric the docs and the Grafana dashboard name is in a live scrape.
#[test]
fn docs_and_dashboard_name_only_real_metrics() {
    if !require_privileges("docs_and_dashboard_name_only_real_metrics") {
        return;
    }
    let _guard = exclusive();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Every optional family on, so that all documented ones can appear.
    let config = test_dir("daemon_docs").join("all.toml");
    std::fs::write(
        &config,
        "[collectors.block]\nqueue_time = true\n\
         [collectors.leaks]\nenabled = true\nprocesses = [\"no-such-process\"]\n\
         [collectors.offcpu]\nenabled = true\nwindow = \"5s\"\n",
    )
    .unwrap();
    let daemon = Daemon::start(&["--cpu-window", "5s", "--config", config.to_str().unwrap()]);
    daemon.wait_for_windows(1.0);
    daemon.wait_for_counter("perf_user_offcpu_windows_total", 1.0);
    let scrape = daemon.scrape();
    let scraped = families(&scrape);

    let dashboard_text = std::fs::read_to_string(root.join("docs/grafana-dashboard.json"))
        .expect("docs/grafana-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&dashboard_text).expect("the dashboard is not valid JSON");
    // Every target's PromQL expression, wherever it is in the panel tree.
    fn exprs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if (k == "expr" || k == "query")
                        && let Some(s) = v.as_str()
                    {
                        out.push(s.to_string());
                    }
                    exprs(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut dash_exprs = Vec::new();
    exprs(&dashboard, &mut dash_exprs);
    assert!(
        dash_exprs.len() >= 5,
        "the dashboard should have panels: {dash_exprs:?}"
    );
    let in_dashboard = metric_names_in(&dash_exprs.join("\n"), &scraped);
    let docs = std::fs::read_to_string(root.join("docs/metrics.md")).expect("docs/metrics.md");
    let mut in_docs = metric_names_in(&docs, &scraped);
    // Queued time needs block:block_io_start (Linux 6.5+).
    let tracing = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    if !tracing
        .iter()
        .any(|t| Path::new(t).join("events/block/block_io_start").exists())
    {
        in_docs.remove("perf_user_block_io_queue_seconds");
    }
    assert!(
        in_docs.len() >= 10,
        "docs/metrics.md names few metrics: {in_docs:?}"
    );

    let missing = |names: &BTreeSet<String>| -> Vec<String> {
        names
            .iter()
            .filter(|n| !scraped.contains(*n))
            .cloned()
            .collect()
    };
    let ctx = format!("scraped families: {scraped:?}");
    assert_eq!(
        missing(&in_dashboard),
        Vec::<String>::new(),
        "dashboard metrics not in a live scrape\n{ctx}"
    );
    assert_eq!(
        missing(&in_docs),
        Vec::<String>::new(),
        "docs/metrics.md metrics not in a live scrape\n{ctx}"
    );
    // And the reverse: every family the daemon exports is documented.
    let undocumented: Vec<&String> = scraped.iter().filter(|n| !in_docs.contains(*n)).collect();
    assert!(
        undocumented.is_empty(),
        "families missing from docs/metrics.md: {undocumented:?}"
    );
}

/// The off-CPU collector: a process that sleeps 100 ms at a time in
/// `nap_here` (and burns 50 ms of CPU between naps) has a series with
/// function="nap_here" and state="sleeping" worth about two thirds of the
/// window; the program's counters move; promtool accepts the scrape.
#[test]
fn offcpu_waits_of_a_napping_process() {
    if !require_privileges("offcpu_waits_of_a_napping_process") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("daemon_offcpu");
    let exe = compile_c("napper", &dir);
    let mut napper = Workload::spawn(&exe, &["120", "50"]);
    let config = dir.join("offcpu.toml");
    // Every sleeping thread of the host sleeps through the window:
    // napper, awake a third of the time, would not make a top 20.
    std::fs::write(
        &config,
        "[collectors.offcpu]\nenabled = true\nwindow = \"5s\"\ntop = 500\n",
    )
    .unwrap();
    let daemon = Daemon::start(&[
        "--collectors",
        "offcpu",
        "--config",
        config.to_str().unwrap(),
    ]);
    // The second window: napper slept through all of it.
    let scrape = daemon.wait_for_counter("perf_user_offcpu_windows_total", 2.0);
    napper.assert_running();
    let offcpu: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("perf_user_offcpu_"))
        .collect();
    let ctx = truncate(&offcpu.join("\n"), 6000).to_string();
    let nap = scrape
        .lines()
        .find(|l| {
            l.starts_with("perf_user_offcpu_seconds{")
                && l.contains("process=\"napper\"")
                && l.contains("function=\"nap_here\"")
        })
        .unwrap_or_else(|| panic!("no nap_here series:\n{ctx}"));
    assert!(nap.contains("state=\"sleeping\""), "{nap}");
    assert!(nap.contains("module=\"napper\""), "{nap}");
    let seconds: f64 = nap.rsplit(' ').next().unwrap().parse().unwrap();
    let window = sample_value(&scrape, "perf_user_offcpu_window_duration_seconds ").unwrap();
    // 100 ms asleep in every 150 ms or a little more (wake-up latency,
    // the loop itself): 0.67 of the window at most.
    let share = seconds / window;
    println!(
        "nap_here: {seconds:.3} s asleep in a {window:.3} s window ({:.1}%)",
        share * 100.0
    );
    assert!((0.45..0.72).contains(&share), "{nap}\n{ctx}");
    // Preempted or spinning, napper is never sleeping elsewhere.
    for counter in [
        "perf_user_offcpu_switches_total ",
        "perf_user_offcpu_recorded_total ",
        "perf_user_offcpu_counted_total ",
    ] {
        let v = sample_value(&scrape, counter).unwrap_or(0.0);
        assert!(v > 0.0, "{counter}is {v}\n{ctx}");
    }
    let too_short = sample_value(&scrape, "perf_user_offcpu_too_short_total ").unwrap();
    println!(
        "switches {}, counted {}, too short {too_short}",
        sample_value(&scrape, "perf_user_offcpu_switches_total ").unwrap(),
        sample_value(&scrape, "perf_user_offcpu_counted_total ").unwrap()
    );
    // "[other]" sums the rows beyond `top` (500) when there are any: on a
    // quiet host there are fewer (the CI run at a38fcff had 19).
    let rows = offcpu
        .iter()
        .filter(|l| l.starts_with("perf_user_offcpu_seconds{"))
        .count();
    let other = offcpu
        .iter()
        .any(|l| l.starts_with("perf_user_offcpu_seconds{") && l.contains("function=\"[other]\""));
    assert!(
        rows <= 501 && (other || rows <= 500) && (!other || rows == 501),
        "{rows} rows, [other] {other}\n{ctx}"
    );
    promtool_check(&scrape);
}

/// 50 scrapers at once for 10 s: every scrape answers 200; the daemon's
/// RSS stays bounded.
#[test]
fn fifty_concurrent_scrapers() {
    if !require_privileges("fifty_concurrent_scrapers") {
        return;
    }
    let _guard = exclusive();
    let daemon = Daemon::start(&["--cpu-window", "5s"]);
    // After a first window, so the symbolizer's caches are already filled.
    daemon.wait_for_windows(1.0);
    let pid = daemon.pid();
    let addr = daemon.addr;
    let anon_before = status_kib(pid, "RssAnon");
    let rss_before = status_kib(pid, "VmRSS");
    let cpu_before = cpu_seconds(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let durations = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let (mut max_anon, mut max_rss) = (anon_before, rss_before);
    let started = Instant::now();
    let scrapers: Vec<_> = (0..50)
        .map(|_| {
            let (stop, ok, failed, durations) =
                (stop.clone(), ok.clone(), failed.clone(), durations.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match http_get(addr, "/metrics", &[]) {
                        Ok(r) if r.status == 200 && r.body.contains("perf_user_build_info") => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            durations.lock().unwrap().push(t.elapsed());
                        }
                        Ok(r) => failed.lock().unwrap().push(format!(
                            "status {}: {}",
                            r.status,
                            truncate(&r.body, 200)
                        )),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    while started.elapsed() < Duration::from_secs(10) {
        max_anon = max_anon.max(status_kib(pid, "RssAnon"));
        max_rss = max_rss.max(status_kib(pid, "VmRSS"));
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for s in scrapers {
        s.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_used = cpu_seconds(pid) - cpu_before;
    let anon_after = status_kib(pid, "RssAnon");
    let failed = failed.lock().unwrap();
    let mut d = durations.lock().unwrap().clone();
    d.sort();
    let pct = |q: f64| {
        d.get(((d.len() as f64 * q) as usize).min(d.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let scrape = daemon.scrape();
    let summary = format!(
        "{} scrapes answered 200, {} failed, in {elapsed:.1} s; latency p50 {:?} p99 {:?} max {:?}; \
         RssAnon {anon_before} KiB before, {max_anon} KiB max, {anon_after} KiB after; \
         VmRSS (with mapped binaries) {rss_before} KiB before, {max_rss} KiB max; \
         daemon CPU {cpu_used:.2} s over {elapsed:.1} s; collector read times: {}",
        ok.load(Ordering::Relaxed),
        failed.len(),
        pct(0.5),
        pct(0.99),
        d.last().copied().unwrap_or_default(),
        scrape
            .lines()
            .filter(|l| l.starts_with("perf_user_scrape_collector_duration_seconds{"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!("fifty_concurrent_scrapers: {summary}");
    assert!(
        failed.is_empty(),
        "{summary}\nfirst failures: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) >= 50, "{summary}");
    // Bounded: concurrent scrapes share one render and the responses share
    // one buffer, so 50 scrapers add little. (VmRSS also counts the binaries
    // the symbolizer maps, which are page cache shared with their processes.)
    assert!(
        max_anon < 128 * 1024,
        "heap above 128 MiB under 50 scrapers\n{summary}"
    );
    assert!(
        max_anon < anon_before + 32 * 1024,
        "heap grew by more than 32 MiB under 50 scrapers\n{summary}"
    );
    let out = daemon.stop();
    assert!(out.status.success(), "{}", out.describe());
}

/// SIGTERM: exit 0, every BPF program gone from the kernel, nothing pinned;
/// a restart on the same port works.
#[test]
fn sigterm_detaches_and_restart_is_clean() {
    if !require_privileges("sigterm_detaches_and_restart_is_clean") {
        return;
    }
    let _guard = exclusive();
    let pinned_before = pinned();
    let daemon = Daemon::start(&[]);
    let addr = daemon.addr;
    let ours = bpf_prog_ids(daemon.pid());
    assert!(!ours.is_empty(), "the daemon holds no BPF program");
    let loaded = loaded_prog_ids();
    assert!(
        ours.iter().all(|id| loaded.contains(id)),
        "the daemon's programs {ours:?} are not in the kernel's list"
    );
    let out = daemon.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains("collectors detached"),
        "{}",
        out.describe()
    );
    // Every log line is one JSON object with the stable keys.
    for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "log line without {key}: {line}");
        }
    }
    // The kernel frees a program after its last link and descriptor are
    // gone, and for BTF tracepoints (raw tracepoint links) only after an RCU
    // tasks-trace grace period: a fraction of a second to a few seconds
    // after the process exits, longer on a busy machine.
    let exited = Instant::now();
    let left = loop {
        let loaded = loaded_prog_ids();
        let left: Vec<u32> = ours
            .iter()
            .copied()
            .filter(|id| loaded.contains(id))
            .collect();
        if left.is_empty() || exited.elapsed() > Duration::from_secs(30) {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        left.is_empty(),
        "programs {left:?} still loaded 30 s after the daemon exited on SIGTERM"
    );
    eprintln!(
        "the kernel had freed the daemon's programs {:.2} s after it exited",
        exited.elapsed().as_secs_f64()
    );
    assert_eq!(
        pinned(),
        pinned_before,
        "something was pinned in /sys/fs/bpf"
    );

    // Restart on the same address: the port and the kernel are free again.
    let mut cmd = perf_user(&["run", "--listen", &addr.to_string(), "--log-format", "json"]);
    cmd.args(["--collectors", "cpu"]);
    let run = Running::start(cmd);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut healthy = false;
    while Instant::now() < deadline {
        if http_get(addr, "/healthz", &[]).is_ok_and(|r| r.status == 200) {
            healthy = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    signal(run.child.id(), libc::SIGINT);
    let out = run.finish(Duration::from_secs(30));
    assert!(
        healthy,
        "the restarted daemon never became healthy\n{}",
        out.describe()
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "SIGINT exit\n{}",
        out.describe()
    );
}

/// Leak tracing of a process named in the configuration: the daemon
/// attaches to it while it runs, counts exactly what it leaks, and lets go
/// when it exits.
#[test]
fn leaks_of_a_named_process() {
    if !require_privileges("leaks_of_a_named_process") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("daemon_leaks");
    let mut leaky = Leaky::spawn(&dir, &["malloc", "500", "64"]);
    let config = dir.join("leaks.toml");
    std::fs::write(
        &config,
        "[collectors.leaks]\nenabled = true\nprocesses = [\"leaky\"]\n",
    )
    .unwrap();
    let daemon = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--collectors",
        "leaks",
    ]);
    // The container labels follow `process` (tests/fleet.rs checks them).
    let value = |s: &str, name: &str| {
        sample_value(s, &format!("{name}{{process=\"leaky\",")).unwrap_or(-1.0)
    };
    let wait = |what: &str, pred: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = daemon.scrape();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen in 30 s\n{}",
                truncate(&s, 4000)
            );
            thread::sleep(Duration::from_millis(200));
        }
    };
    wait("attaching to leaky", &|s| {
        value(s, "perf_user_leak_traced_processes") == 1.0
    });
    leaky.run();
    let s = daemon.scrape();
    let ctx = truncate(&s, 6000).to_string();
    let outstanding = value(&s, "perf_user_leak_outstanding_allocations");
    let allocs = value(&s, "perf_user_leak_allocations_total");
    let frees = value(&s, "perf_user_leak_frees_total");
    // 500 blocks leaked; the C library may keep a few of its own.
    assert!(
        (500.0..=520.0).contains(&outstanding),
        "outstanding {outstanding}, expected 500\n{ctx}"
    );
    // The balanced churn allocates and frees far more.
    assert!(
        allocs > 1000.0 && frees > 500.0,
        "allocs {allocs} frees {frees}\n{ctx}"
    );
    drop(leaky);
    wait("letting go of the exited process", &|s| {
        value(s, "perf_user_leak_traced_processes") == 0.0
    });
    let out = daemon.stop();
    assert!(out.status.success(), "{}", out.describe());
}

/// The self-metrics are there and plausible.
#[test]
fn self_metrics_are_plausible() {
    if !require_privileges("self_metrics_are_plausible") {
        return;
    }
    let _guard = exclusive();
    let daemon = Daemon::start(&["--cpu-window", "5s"]);
    daemon.wait_for_windows(1.0);
    let s = daemon.scrape();
    let ctx = truncate(&s, 8000).to_string();
    let v = |p: &str| sample_value(&s, p).unwrap_or_else(|| panic!("no sample {p}\n{ctx}"));
    assert_eq!(
        v("perf_user_scrape_collector_success{collector=\"cpu\"}"),
        1.0,
        "{ctx}"
    );
    assert_eq!(
        v("perf_user_scrape_collector_success{collector=\"bpf\"}"),
        1.0,
        "{ctx}"
    );
    assert_eq!(v("perf_user_collector_up{collector=\"cpu\"}"), 1.0, "{ctx}");
    assert!(v("process_resident_memory_bytes") > 1e6, "{ctx}");
    assert!(v("perf_user_cpu_samples_total") > 0.0, "{ctx}");
    assert!(v("perf_user_cpu_windows_total") >= 1.0, "{ctx}");
    let fill = v("perf_user_bpf_map_max_entries{map=\"CPU_SAMPLES\"}");
    assert!(fill > 0.0, "{ctx}");
    // Our own scrapes are TCP connections accepted by the daemon.
    let accepted: f64 = s
        .lines()
        .filter(|l| l.starts_with("perf_user_tcp_accept_latency_seconds_count{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(accepted > 0.0, "no TCP accept seen\n{ctx}");
    // Program statistics: the daemon turns them on (as root).
    assert_eq!(v("perf_user_bpf_stats_enabled"), 1.0, "{ctx}");
    assert!(
        v("perf_user_bpf_program_runs_total{program=\"cpu_sample\"}") > 0.0,
        "{ctx}"
    );
    assert!(
        v("perf_user_bpf_program_run_seconds_total{program=\"cpu_sample\"}") > 0.0,
        "{ctx}"
    );
}

/// The daemon's BPF program ids per collector, by the programs' names in
/// the kernel's list (the kernel keeps 15 bytes of a name).
fn prog_ids_by_collector(pid: u32) -> std::collections::BTreeMap<&'static str, BTreeSet<u32>> {
    let ours: HashSet<u32> = bpf_prog_ids(pid).into_iter().collect();
    let mut out = std::collections::BTreeMap::<&'static str, BTreeSet<u32>>::new();
    for p in aya::programs::loaded_programs().filter_map(Result::ok) {
        if !ours.contains(&p.id()) {
            continue;
        }
        let name = p.name_as_str().unwrap_or_default();
        let collector = if name.starts_with("cpu_") {
            "cpu"
        } else if name.starts_with("tcp_") || name.starts_with("inet_sock") {
            "tcp"
        } else if name.starts_with("block_") {
            "block"
        } else {
            "other"
        };
        out.entry(collector).or_default().insert(p.id());
    }
    out
}

/// SIGHUP reloads the configuration: the collector whose section did not
/// change keeps its kernel programs, the changed one gets new ones, a newly
/// enabled one starts; a broken file is refused and the old configuration
/// stays in force.
#[test]
fn sighup_reload_keeps_unchanged_collectors() {
    if !require_privileges("sighup_reload_keeps_unchanged_collectors") {
        return;
    }
    let _guard = exclusive();
    let config = test_dir("daemon_reload").join("reload.toml");
    let write = |text: &str| std::fs::write(&config, text).unwrap();
    write(
        "[collectors.cpu]\nwindow = \"5s\"\n\
         [collectors.block]\nenabled = false\n\
         [collectors.tcp]\nmax_ports = 20\n",
    );
    let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    let pid = daemon.pid();
    let before = prog_ids_by_collector(pid);
    let s = daemon.scrape();
    let ctx = truncate(&s, 6000).to_string();
    assert_eq!(
        sample_value(&s, "perf_user_config_last_reload_successful "),
        Some(1.0),
        "{ctx}"
    );
    let loaded_at = sample_value(
        &s,
        "perf_user_config_last_reload_success_timestamp_seconds ",
    )
    .unwrap_or_else(|| panic!("no reload timestamp\n{ctx}"));
    assert!(loaded_at > 1.6e9, "{loaded_at}");
    assert!(
        before.contains_key("cpu") && before.contains_key("tcp") && !before.contains_key("block"),
        "programs at start: {before:?}"
    );

    // Waits for a scrape that satisfies `done`.
    let wait = |what: &str, done: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = daemon.scrape();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 60 s\n{}",
                truncate(&s, 6000)
            );
            thread::sleep(Duration::from_millis(100));
        }
    };

    // Scrapes go on during the reloads, and every one is answered.
    let stop_scraping = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (stop, addr) = (Arc::clone(&stop_scraping), daemon.addr);
        thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match http_get(addr, "/metrics", &[]) {
                    Ok(r) if r.status == 200 && r.body.contains("perf_user_build_info") => ok += 1,
                    Ok(r) => {
                        failed.push(format!("status {}: {}", r.status, truncate(&r.body, 200)))
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };

    // One collector's setting changes, another is enabled.
    thread::sleep(Duration::from_millis(50)); // a later timestamp
    write(
        "[collectors.cpu]\nwindow = \"5s\"\n\
         [collectors.block]\nenabled = true\n\
         [collectors.tcp]\nmax_ports = 30\n",
    );
    signal(pid, libc::SIGHUP);
    let s = wait("the reload", &|s| {
        sample_value(s, "perf_user_config_last_reload_success_timestamp_seconds ")
            .is_some_and(|t| t > loaded_at)
    });
    let ctx = truncate(&s, 6000).to_string();
    assert_eq!(
        sample_value(&s, "perf_user_config_last_reload_successful "),
        Some(1.0),
        "{ctx}"
    );
    for c in ["cpu", "block", "tcp"] {
        assert_eq!(
            sample_value(&s, &format!("perf_user_collector_up{{collector=\"{c}\"}}")),
            Some(1.0),
            "{c}\n{ctx}"
        );
    }
    let after = prog_ids_by_collector(pid);
    assert_eq!(
        after.get("cpu"),
        before.get("cpu"),
        "the unchanged CPU collector's programs were replaced: {before:?} -> {after:?}"
    );
    let (old_tcp, new_tcp) = (
        &before["tcp"],
        after.get("tcp").cloned().unwrap_or_default(),
    );
    assert!(
        !new_tcp.is_empty() && new_tcp.is_disjoint(old_tcp),
        "the changed TCP collector should run new programs: {before:?} -> {after:?}"
    );
    assert!(
        after.get("block").is_some_and(|b| !b.is_empty()),
        "the newly enabled block collector has no programs: {after:?}"
    );
    let reloaded_at = sample_value(
        &s,
        "perf_user_config_last_reload_success_timestamp_seconds ",
    )
    .unwrap();
    eprintln!("BPF programs per collector: {before:?} before the reload, {after:?} after");

    // A broken file is refused: the gauge goes to 0, nothing changes.
    write("[collectors.tcp]\nmax_ports = \"many\"\n");
    signal(pid, libc::SIGHUP);
    let s = wait("the refusal", &|s| {
        sample_value(s, "perf_user_config_last_reload_successful ") == Some(0.0)
    });
    let ctx = truncate(&s, 6000).to_string();
    assert_eq!(
        sample_value(
            &s,
            "perf_user_config_last_reload_success_timestamp_seconds "
        ),
        Some(reloaded_at),
        "{ctx}"
    );
    assert_eq!(
        prog_ids_by_collector(pid),
        after,
        "a refused reload changed the programs"
    );
    for c in ["cpu", "block", "tcp"] {
        assert_eq!(
            sample_value(&s, &format!("perf_user_collector_up{{collector=\"{c}\"}}")),
            Some(1.0),
            "{c}\n{ctx}"
        );
    }
    let health = http_get(daemon.addr, "/healthz", &[]).expect("GET /healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    stop_scraping.store(true, Ordering::Relaxed);
    let (answered, failed) = scraper.join().unwrap();
    eprintln!(
        "{answered} scrapes answered during the reloads, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "scrapes failed during a reload: {failed:?}"
    );
    assert!(answered > 0, "no scrape was answered during the reloads");

    // A good file again, with block disabled: it is detached, the others
    // stay. One alert rule less; a log level change needs a restart.
    assert!(
        s.contains("perf_user_alerts{alertname=\"TcpRetransmitsHigh\""),
        "{}",
        truncate(&s, 6000)
    );
    write(
        "[log]\nlevel = \"debug\"\n\
         [alerts]\ndisable = [\"TcpRetransmitsHigh\"]\n\
         [collectors.cpu]\nwindow = \"5s\"\n\
         [collectors.block]\nenabled = false\n\
         [collectors.tcp]\nmax_ports = 30\n",
    );
    signal(pid, libc::SIGHUP);
    let s = wait("the reload after the refusal", &|s| {
        sample_value(s, "perf_user_config_last_reload_successful ") == Some(1.0)
    });
    assert!(
        sample_value(&s, "perf_user_collector_up{collector=\"block\"}").is_none(),
        "{}",
        truncate(&s, 6000)
    );
    assert!(
        !s.contains("alertname=\"TcpRetransmitsHigh\"")
            && s.contains("perf_user_alerts{alertname=\"TcpRttAnomaly\""),
        "the alert rules were not reloaded\n{}",
        truncate(&s, 6000)
    );
    let last = prog_ids_by_collector(pid);
    assert!(
        !last.contains_key("block")
            && last.get("cpu") == after.get("cpu")
            && last.get("tcp") == after.get("tcp"),
        "disabling block: {after:?} -> {last:?}"
    );

    let out = daemon.stop();
    assert!(out.status.success(), "{}", out.describe());
    let logs: Vec<Value> = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let find = |message: &str| {
        logs.iter()
            .find(|v| v["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} log line\n{}", out.describe()))
    };
    let ok = find("configuration reloaded");
    assert_eq!(ok["level"], "INFO", "{ok}");
    let ok_text = ok.to_string();
    assert!(
        ok_text.contains("restarted") && ok_text.contains("tcp"),
        "{ok}"
    );
    let log_warning = logs
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the [log] settings changed"))
        })
        .unwrap_or_else(|| panic!("no warning about [log]\n{}", out.describe()));
    assert_eq!(log_warning["level"], "WARN", "{log_warning}");
    // Debug lines would show that the level changed after all.
    assert!(
        !logs.iter().any(|v| v["level"] == "DEBUG"),
        "the log level changed without a restart"
    );
    let failed = find("configuration reload failed");
    assert_eq!(failed["level"], "ERROR", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(config.to_str().unwrap()) && error.contains("collectors.tcp.max_ports"),
        "the error should name the file and the field: {failed}"
    );
}
