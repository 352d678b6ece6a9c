//! Case 5, the daemon: `perf-user run` with every collector on for 60 s
//! (10 s with --quick) while the CPUs are busy and loopback TCP runs; its CPU
//! share of one core, peak RSS, BPF time, and the time from start to ready.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};

use super::{
    CaseReport, Ctx, Metric,
    compare::{self, tail},
    process::{self, Proc},
    stats,
};

pub fn run(ctx: &Ctx) -> Result<CaseReport> {
    measure(ctx, "daemon", None)
}

/// The same with unwind tables for every sampled process
/// (`collectors.cpu.unwind = "dwarf"`; `auto` walks frame pointers in the
/// daemon), against issue 13's target of 60 MiB peak RSS.
pub fn run_unwind(ctx: &Ctx) -> Result<CaseReport> {
    let config = ctx.tmp.join("daemon-unwind.toml");
    std::fs::write(&config, "[collectors.cpu]\nunwind = \"dwarf\"\n")?;
    measure(ctx, "daemon-unwind", Some(&config))
}

fn measure(ctx: &Ctx, id: &'static str, config: Option<&std::path::Path>) -> Result<CaseReport> {
    let mut report = CaseReport::new(id, super::case_title(id));
    let (bin, help) = match ctx.perf_user_command("run") {
        Ok(x) => x,
        Err(why) => return Ok(report.unavailable(why)),
    };
    let seconds = if ctx.quick { 10 } else { 60 };
    let scrape_every = Duration::from_secs(5);

    // Where it listens: our own free port when it takes an address flag.
    let port = free_port()?;
    let mut args: Vec<String> = vec!["run".into()];
    if let Some(config) = config {
        args.extend(["--config".into(), config.display().to_string()]);
    }
    let mut addr: Option<SocketAddr> = None;
    for flag in ["--listen", "--address", "--addr", "--web.listen-address"] {
        if has_flag(&help, flag) {
            args.extend([flag.into(), format!("127.0.0.1:{port}")]);
            addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
            break;
        }
    }
    if addr.is_none() && has_flag(&help, "--port") {
        args.extend(["--port".into(), port.to_string()]);
        addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    // The targets are set at 99 Hz; its default may be lower.
    for flag in ["--cpu-frequency", "--frequency"] {
        if has_flag(&help, flag) {
            args.extend([flag.into(), "99".into()]);
            break;
        }
    }
    // What will run, in its own words.
    if has_flag(&help, "--check-config") {
        let check = crate::cmd::output(Command::new(&bin).args(&args).arg("--check-config"))
            .map_err(|e| format!("{e:#}"));
        match check {
            Ok(out) => report
                .notes
                .push(format!("`--check-config`: {}", out.trim())),
            Err(e) => return Ok(report.unavailable(format!("its configuration check failed: {e}"))),
        }
    }
    report.work = format!(
        "`perf-user {}` for {seconds} s while `cpu_burn` keeps every CPU busy, Debian's python3 \
         runs a json and zlib loop (its stacks need unwind tables), and a small \
         loopback TCP exchange (`tcp_rr 20 50`) and a /metrics scrape run every {} s.",
        args.join(" "),
        scrape_every.as_secs()
    );

    let stderr = ctx.log_path("daemon");
    let start = Instant::now();
    let mut daemon = Proc::spawn(
        Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(ctx.log_file("daemon.stdout")?))
            .stderr(Stdio::from(ctx.log_file("daemon")?)),
    )?;

    // Ready: /healthz answers 200 (when we know where it listens); attached:
    // its BPF and perf-event descriptors have stopped changing.
    let mut healthz_seconds = None;
    if let Some(addr) = addr {
        while start.elapsed() < Duration::from_secs(60) && daemon.alive() {
            if http_get(addr, "/healthz").is_ok_and(|(code, _)| code == 200) {
                healthz_seconds = Some(start.elapsed().as_secs_f64());
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    eprintln!("  [daemon] started `{}`", daemon.display);
    let attach_seconds = match compare::wait_attached(&mut daemon, start, Duration::from_secs(60)) {
        Ok(s) => s,
        Err(why) => {
            return Ok(report.unavailable(format!("{why}; its stderr: {}", tail(&stderr))));
        }
    };

    // Load: every CPU busy (its own process group, to stop the workers too).
    let mut burn = Proc::spawn(
        Command::new(ctx.workload("cpu_burn"))
            .args(["100000000000000", &ctx.ncpu.to_string()])
            .stdout(Stdio::null())
            .process_group(0),
    )?;
    // And a process built without frame pointers, whose stacks need unwind
    // tables (the CPU collector walks them by default on x86_64 and arm64).
    let mut python = match super::unwind::endless_python(ctx) {
        Ok(mut c) => Some(Proc::spawn(&mut c)?),
        Err(e) => {
            report.notes.push(format!("no python3 load: {e:#}"));
            None
        }
    };
    let before_cpu = process::cpu_seconds(daemon.pid).unwrap_or(0.0);
    let before_progs = process::bpf_progs(daemon.pid);
    let t0 = Instant::now();
    let mut scrape_ms = Vec::new();
    let mut metrics_bytes = 0;
    let mut last_metrics = String::new();
    let mut scrape_errors = Vec::new();
    let mut next = t0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        if ctx.check_interrupted().is_err() || !daemon.alive() {
            break;
        }
        if Instant::now() >= next {
            next += scrape_every;
            eprintln!(
                "  [daemon] {:>3.0}/{seconds} s: CPU {:.2} s so far, RSS {} KiB",
                t0.elapsed().as_secs_f64(),
                process::cpu_seconds(daemon.pid).unwrap_or(0.0) - before_cpu,
                process::status_kib(daemon.pid, "VmRSS").unwrap_or(0)
            );
            let _ = Command::new(ctx.workload("tcp_rr"))
                .args(["20", "50"])
                .stdout(Stdio::null())
                .status();
            if let Some(addr) = addr {
                let s = Instant::now();
                match http_get(addr, "/metrics") {
                    Ok((200, body)) => {
                        scrape_ms.push(s.elapsed().as_secs_f64() * 1e3);
                        metrics_bytes = body.len();
                        last_metrics = body;
                    }
                    Ok((code, _)) => scrape_errors.push(format!("HTTP {code}")),
                    Err(e) => scrape_errors.push(format!("{e:#}")),
                }
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    let wall = t0.elapsed().as_secs_f64();
    let after_cpu = process::cpu_seconds(daemon.pid).unwrap_or(0.0);
    let after_progs = process::bpf_progs(daemon.pid);
    let hwm_kib = process::status_kib(daemon.pid, "VmHWM");
    // File-backed resident pages (mapped binaries and symbol files) are page
    // cache the kernel can reclaim; anonymous ones are the daemon's own heap.
    let anon_kib = process::status_kib(daemon.pid, "RssAnon");
    let file_kib = process::status_kib(daemon.pid, "RssFile");
    // The dashboard's status endpoint (issue 18): 1,000 requests one after
    // another, after the peak RSS was read.
    let mut status_ms = Vec::new();
    if let Some(addr) = addr {
        for _ in 0..1000 {
            let s = Instant::now();
            if let Ok((200, _)) = http_get(addr, "/api/v1/status") {
                status_ms.push(s.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    // SAFETY: kill has no memory-safety preconditions; the group is the one
    // our unreaped cpu_burn child leads.
    unsafe { libc::kill(-burn.pid, libc::SIGKILL) };
    let _ = burn.wait_timeout(Duration::from_secs(10));
    if let Some(p) = &mut python {
        p.signal(libc::SIGKILL);
        let _ = p.wait_timeout(Duration::from_secs(10));
    }
    let alive = daemon.alive();
    let exit = daemon.stop(Duration::from_secs(60))?;
    ctx.check_interrupted()?;
    if !alive {
        return Ok(report.unavailable(format!(
            "the daemon exited during the run ({}): {}",
            crate::cmd::describe(exit.status),
            tail(&stderr)
        )));
    }

    let (bpf_ns, bpf_cnt) = after_progs
        .iter()
        .map(|(id, a)| {
            let b = before_progs.get(id).copied().unwrap_or_default();
            (
                a.run_time_ns.saturating_sub(b.run_time_ns),
                a.run_cnt.saturating_sub(b.run_cnt),
            )
        })
        .fold((0u64, 0u64), |(t, c), (dt, dc)| (t + dt, c + dc));
    let cpu_pct = 100.0 * (after_cpu - before_cpu) / wall;
    let m = &mut report.metrics;
    m.push(Metric::new("daemon process CPU, % of one core", cpu_pct, "%").below(2.0, "2%"));
    m.push(Metric::new(
        "BPF run time, % of one core",
        100.0 * bpf_ns as f64 / 1e9 / wall,
        "%",
    ));
    m.push(Metric::new(
        "BPF program runs per second",
        bpf_cnt as f64 / wall,
        "/s",
    ));
    if bpf_cnt > 0 {
        m.push(Metric::new(
            "BPF run time per program run",
            bpf_ns as f64 / bpf_cnt as f64,
            "ns",
        ));
    }
    m.push(Metric::new(
        "BPF programs loaded",
        after_progs.len() as f64,
        "",
    ));
    if let Some(kib) = hwm_kib {
        m.push(Metric::new("peak RSS (VmHWM)", kib as f64 / 1024.0, "MiB").below(50.0, "50 MB"));
        if unwind_figures(&last_metrics, m) && config.is_some() {
            m.push(
                Metric::new(
                    "peak RSS with unwind tables for every sampled process",
                    kib as f64 / 1024.0,
                    "MiB",
                )
                .below(60.0, "60 MiB"),
            );
        }
    }
    if let (Some(anon), Some(file)) = (anon_kib, file_kib) {
        m.push(Metric::new(
            "RSS at the end: anonymous",
            anon as f64 / 1024.0,
            "MiB",
        ));
        m.push(Metric::new(
            "RSS at the end: file-backed",
            file as f64 / 1024.0,
            "MiB",
        ));
    }
    m.push(Metric::new("start to probes attached", attach_seconds, "s").below(1.0, "1 s"));
    if let Some(s) = healthz_seconds {
        m.push(Metric::new("start to /healthz 200", s, "s").below(1.0, "1 s"));
    }
    if let Some(ms) = stats::median(&scrape_ms) {
        m.push(Metric::new("/metrics scrape, median", ms, "ms"));
        m.push(Metric::new(
            "/metrics size",
            metrics_bytes as f64 / 1024.0,
            "KiB",
        ));
    }
    if status_ms.len() >= 990 {
        status_ms.sort_by(f64::total_cmp);
        let p99 = status_ms[status_ms.len() * 99 / 100];
        m.push(
            Metric::new("/api/v1/status, p99 of 1,000 requests", p99, "ms").below(100.0, "100 ms"),
        );
    }
    m.push(Metric::new(
        "CPU seconds from start to exit",
        exit.cpu_seconds,
        "s",
    ));
    if addr.is_none() {
        report.notes.push(
            "`perf-user run --help` names no listen-address flag; /healthz and /metrics were \
             not measured"
                .into(),
        );
    }
    if !scrape_errors.is_empty() {
        report.notes.push(format!(
            "{} failed scrapes, e.g. {}",
            scrape_errors.len(),
            scrape_errors[0]
        ));
    }
    report.notes.push(
        "BPF run time is spent in the context of the traced tasks, not in the daemon \
         process: it is listed apart from the daemon's CPU"
            .into(),
    );
    Ok(report)
}

/// The unwind tables' figures of the last scrape; whether there were any.
fn unwind_figures(metrics: &str, m: &mut Vec<Metric>) -> bool {
    let value = |name: &str| {
        metrics.lines().find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse::<f64>().ok()).flatten()
        })
    };
    let Some(rows) = value("perf_user_unwind_table_rows") else {
        return false;
    };
    if let Some(files) = value("perf_user_unwind_table_files{state=\"loaded\"}") {
        m.push(Metric::new("unwind tables loaded: files", files, ""));
    }
    m.push(Metric::new(
        "unwind tables loaded: rows (12 bytes each)",
        rows,
        "",
    ));
    if let Some(s) = value("perf_user_unwind_table_load_seconds_total") {
        m.push(Metric::new(
            "unwind tables: time building and loading",
            s,
            "s",
        ));
    }
    let walks: Vec<(String, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with("perf_user_unwind_walks_ended_total{"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            let reason = k.split("reason=\"").nth(1)?.split('"').next()?;
            Some((reason.to_owned(), v.parse().ok()?))
        })
        .collect();
    let total: f64 = walks.iter().map(|(_, n)| n).sum();
    if total > 0.0 {
        let complete: f64 = walks
            .iter()
            .filter(|(r, _)| r == "complete")
            .map(|(_, n)| n)
            .sum();
        m.push(Metric::new(
            "table walks that reached the outermost frame",
            100.0 * complete / total,
            "%",
        ));
    }
    true
}

fn has_flag(help: &str, flag: &str) -> bool {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .any(|w| w == flag)
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A plain HTTP/1.0 GET; returns the status code and the body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response from {addr}{path}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_in_help() {
        let help = "Options:\n  -l, --listen <ADDR>  where\n      --port=<N>\n";
        assert!(has_flag(help, "--listen"));
        assert!(has_flag(help, "--port"));
        assert!(!has_flag(help, "--address"));
    }

    #[test]
    fn unwind_metrics() {
        let text = "# HELP x\nperf_user_unwind_table_rows 1200\n\
                    perf_user_unwind_table_files{state=\"loaded\"} 9\n\
                    perf_user_unwind_walks_ended_total{collector=\"cpu\",reason=\"complete\"} 3\n\
                    perf_user_unwind_walks_ended_total{collector=\"cpu\",reason=\"no_row\"} 1\n";
        let mut m = Vec::new();
        assert!(unwind_figures(text, &mut m));
        let get = |name: &str| m.iter().find(|x| x.name.starts_with(name)).unwrap().value;
        assert_eq!(get("unwind tables loaded: files"), 9.0);
        assert_eq!(get("unwind tables loaded: rows"), 1200.0);
        assert_eq!(get("table walks"), 75.0);
        assert!(!unwind_figures("", &mut m));
    }
}
