//! `cargo xtask smoke-nonroot`: every command of the release binary, run as
//! an unprivileged user with only the capabilities the docs and the systemd
//! unit grant (ambient, inheritable and bounding set all limited to them, no
//! new privileges), in a private mount namespace without tracefs, debugfs
//! and bpffs: a non-root user cannot mount them, so this proves that each
//! command works without them where the kernel has BTF. Never skips: a
//! command that cannot run fails.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{apt, cmd};

/// The capabilities the README, docs/kernel-requirements.md and
/// scripts/perf-user.service document (CAP_SYS_RESOURCE only matters before
/// Linux 5.11, and containers often cannot grant it).
pub const CAPS: &[&str] = &["bpf", "perfmon", "sys_ptrace", "dac_read_search", "syslog"];

/// File systems a freshly booted machine may not have mounted, and that
/// only root can mount.
const KERNEL_FS: &[&str] = &["tracefs", "debugfs", "bpf"];

#[derive(clap::Args)]
pub struct Args {
    /// The unprivileged user to run as (created when missing, as a system
    /// user without a home or a login shell).
    #[arg(long, default_value = "perf-user-smoke")]
    user: String,
}

pub fn main(args: &Args) -> Result<ExitCode> {
    ensure!(
        cmd::is_root(),
        "smoke-nonroot must run as root: it creates the user, unmounts tracefs, \
         debugfs and bpffs in a private mount namespace, and drops to the user itself"
    );
    // First, while xtask has a single thread (unshare(CLONE_NEWNS) needs that).
    fresh_mount_namespace()?;
    apt::ensure(
        "Debian packages",
        &["gcc", "libc6-dev", "util-linux", "coreutils"],
    )?;
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    ensure!(
        btf.exists(),
        "{} is missing: without kernel BTF the collectors use classic tracepoints, which \
         need tracefs, and a non-root user cannot mount it; this smoke test needs a kernel \
         with CONFIG_DEBUG_INFO_BTF",
        btf.display()
    );

    let (uid, gid) = ensure_user(&args.user)?;
    let dir = SmokeDir::create()?;
    let binary = build_release(&dir.0)?;
    let workload = build_workload(&dir.0)?;
    let runner = Runner {
        uid,
        gid,
        dir: dir.0.clone(),
        binary,
    };
    println!(
        "as {} (uid {uid}, gid {gid}) with only CAP_{}: {}",
        args.user,
        CAPS.iter()
            .map(|c| c.to_uppercase())
            .collect::<Vec<_>>()
            .join(", CAP_"),
        cmd::display(&runner.command(&["--version"]))
    );

    type Check<'a> = (&'a str, Box<dyn Fn() -> Result<String> + 'a>);
    let checks: Vec<Check> = vec![
        ("profile", Box::new(|| smoke_profile(&runner, &workload))),
        ("offcpu", Box::new(|| smoke_offcpu(&runner, &workload))),
        ("latency", Box::new(|| smoke_latency(&runner))),
        ("leaks", Box::new(|| smoke_leaks(&runner, &workload))),
        ("run", Box::new(|| smoke_daemon(&runner, &workload))),
        ("advise", Box::new(|| smoke_advise(&runner))),
    ];
    let mut results = Vec::new();
    for (name, check) in &checks {
        println!("\n---- {name} ----");
        let result = check();
        match &result {
            Ok(detail) => println!("PASS  {name}: {detail}"),
            Err(err) => println!("FAIL  {name}: {err:#}"),
        }
        results.push((*name, result));
    }

    println!("\n==== smoke-nonroot summary ====");
    for (name, result) in &results {
        match result {
            Ok(detail) => println!("PASS  {name:<8} {detail}"),
            Err(err) => println!("FAIL  {name:<8} {}", first_line(&format!("{err:#}"))),
        }
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    println!("{} passed, {failed} failed", results.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// A private mount namespace for this process and its children, with every
/// tracefs, debugfs and bpffs unmounted (lazily, in a loop: they may be
/// mounted several times and on top of each other). Nothing changes outside.
fn fresh_mount_namespace() -> Result<()> {
    // SAFETY: plain system calls on constant, NUL-terminated arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error())
                .context("unshare(CLONE_NEWNS) failed: cannot get a private mount namespace");
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error())
                .context("cannot make / private in the new mount namespace");
        }
    }
    let mut unmounted = Vec::new();
    for _round in 0..50 {
        let mounted = kernel_fs_mounts()?;
        if mounted.is_empty() {
            if unmounted.is_empty() {
                println!("private mount namespace: no tracefs, debugfs or bpffs was mounted");
            } else {
                println!(
                    "private mount namespace: unmounted {}",
                    unmounted.join(", ")
                );
            }
            return Ok(());
        }
        // Deepest first, so that /sys/kernel/debug/tracing goes before /sys/kernel/debug.
        for (target, fstype) in mounted.iter().rev() {
            let c_target = std::ffi::CString::new(target.as_str())
                .with_context(|| format!("mount point {target} has a NUL byte"))?;
            // SAFETY: a NUL-terminated path and a flag.
            if unsafe { libc::umount2(c_target.as_ptr(), libc::MNT_DETACH) } == 0 {
                unmounted.push(format!("{fstype} at {target}"));
            }
        }
    }
    bail!(
        "tracefs, debugfs or bpffs still mounted after 50 rounds of unmounting: {:?}",
        kernel_fs_mounts()?
    )
}

/// (mount point, type) of every tracefs, debugfs and bpffs, sorted by path.
fn kernel_fs_mounts() -> Result<Vec<(String, String)>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    let mut mounts = parse_mountinfo(&text);
    mounts.sort();
    Ok(mounts)
}

fn parse_mountinfo(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let target = fields.get(4)?;
            // The type follows the "-" that ends the optional fields.
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?;
            KERNEL_FS
                .contains(fstype)
                .then(|| (unescape_octal(target), fstype.to_string()))
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as \040 and friends.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The user's uid and gid, creating the user when missing.
fn ensure_user(name: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| cmd::output(Command::new("id").args([flag, name]));
    if id("-u").is_err() {
        println!("creating user {name}");
        cmd::run(Command::new("useradd").args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ]))
        .with_context(|| format!("cannot create the smoke-test user {name}"))?;
    }
    let uid: u32 = id("-u")?
        .trim()
        .parse()
        .context("`id -u` printed no number")?;
    let gid: u32 = id("-g")?
        .trim()
        .parse()
        .context("`id -g` printed no number")?;
    ensure!(
        uid != 0,
        "user {name} is root (uid 0): it must be unprivileged"
    );
    Ok((uid, gid))
}

/// A world-readable directory for the binary and the workload, removed at the end.
struct SmokeDir(PathBuf);

impl SmokeDir {
    fn create() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("perf-user-smoke.{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // 1777 like /tmp: the user writes its reports and the dd file here.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777))
            .with_context(|| format!("cannot make {} world-writable", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for SmokeDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `cargo build --release -p perf-user`, copied into `dir`, mode 0755.
fn build_release(dir: &Path) -> Result<PathBuf> {
    crate::build::build(true, &[])?;
    let built = cmd::target_dir()?.join("release/perf-user");
    let binary = dir.join("perf-user");
    fs::copy(&built, &binary)
        .with_context(|| format!("cannot copy {} to {}", built.display(), binary.display()))?;
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755))?;
    Ok(binary)
}

fn build_workload(dir: &Path) -> Result<PathBuf> {
    let source = cmd::workspace_root().join("xtask/workloads/smoke_workload.c");
    let binary = dir.join("smoke_workload");
    cmd::output(
        Command::new("gcc")
            .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&binary)
            .arg(&source),
    )
    .context("cannot build the smoke workload")?;
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755))?;
    Ok(binary)
}

struct Runner {
    uid: u32,
    gid: u32,
    dir: PathBuf,
    binary: PathBuf,
}

impl Runner {
    /// perf-user ARGS as the user, through setpriv, with a clean environment.
    fn command(&self, args: &[&str]) -> Command {
        let caps = format!("-all,+{}", CAPS.join(",+"));
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg(format!("--inh-caps={caps}"))
            .arg(format!("--ambient-caps={caps}"))
            .arg(format!("--bounding-set={caps}"))
            .arg("--no-new-privs")
            .arg(&self.binary)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.dir)
            .env("LANG", "C.UTF-8")
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        command
    }

    /// Runs perf-user ARGS to its end (killed after `timeout`), stdout and
    /// stderr captured; stderr is shown as it was.
    fn run(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let mut command = self.command(args);
        println!("$ perf-user {}", args.join(" "));
        let out = run_captured(&mut command, timeout)?;
        print!("{}", indent(&out.stderr));
        ensure!(
            out.status.success(),
            "perf-user {} failed ({}): {}",
            args.join(" "),
            cmd::describe(out.status),
            last_lines(&out.stderr, 5)
        );
        Ok(out.stdout)
    }
}

struct Captured {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Spawns in its own process group (so that a timeout ends the programs it
/// started too), reads both streams, kills the group after `timeout`.
fn run_captured(command: &mut Command, timeout: Duration) -> Result<Captured> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::display(command)))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = wait_or_kill(&mut child, timeout)?;
    Ok(Captured {
        status: status.with_context(|| {
            format!(
                "`{}` did not end within {timeout:?}: killed",
                cmd::display(command)
            )
        })?,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn reader<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// The exit status, or None after killing the process group at the deadline.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill_group(child, libc::SIGKILL);
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn kill_group(child: &Child, signal: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signals our own child's process group (it was made its leader).
        unsafe { libc::kill(-pid, signal) };
    }
}

/// A background process (workload, I/O load) ended with its process group when dropped.
struct Background(Child);

impl Background {
    fn spawn(command: &mut Command) -> Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::display(command)))?;
        Ok(Self(child))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        kill_group(&self.0, libc::SIGKILL);
        let _ = self.0.wait();
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  | {l}\n")).collect()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

fn json(text: &str, what: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| {
        format!(
            "{what} printed no JSON document: {}",
            text.chars().take(300).collect::<String>()
        )
    })
}

/// `profile -d 2s --format json` while a root-owned process spins in
/// smoke_spin_hot: samples, and that function named (symbols of another
/// user's process: CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH).
fn smoke_profile(runner: &Runner, workload: &Path) -> Result<String> {
    let _spin = Background::spawn(Command::new(workload).args(["spin", "30"]))?;
    let out = runner.run(
        &["profile", "-d", "2s", "--format", "json"],
        Duration::from_secs(60),
    )?;
    let doc = json(&out, "profile")?;
    let samples = doc["total_samples"].as_u64().unwrap_or(0);
    ensure!(
        samples > 0,
        "no samples: total_samples is {}",
        doc["total_samples"]
    );
    let hotspots = doc["hotspots"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let named = hotspots
        .iter()
        .filter(|h| {
            h["function"]
                .as_str()
                .is_some_and(|f| !f.starts_with('[') && !f.contains("+0x"))
        })
        .count();
    let spin = hotspots
        .iter()
        .find(|h| h["function"] == "smoke_spin_hot")
        .with_context(|| {
            format!(
                "{samples} samples, {named} named hotspots, but none is smoke_spin_hot \
                 (a root-owned process spinning there): the first are {}",
                hotspots
                    .iter()
                    .take(5)
                    .map(|h| h["function"].to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    Ok(format!(
        "{samples} samples, {named} named hotspots, smoke_spin_hot {} samples",
        spin["self_samples"]
    ))
}

/// `profile --off-cpu --pid P -d 2s --format json` while a root-owned
/// process naps in smoke_nap: time off the CPU under that function,
/// sleeping (BTF tracepoint, no tracefs; its tables, read before privileges
/// are dropped, find smoke_nap under libc's nanosleep).
fn smoke_offcpu(runner: &Runner, workload: &Path) -> Result<String> {
    let nap = Background::spawn(Command::new(workload).args(["nap", "30"]))?;
    let pid = nap.0.id().to_string();
    let out = runner.run(
        &[
            "profile",
            "--off-cpu",
            "--pid",
            &pid,
            "-d",
            "2s",
            "--format",
            "json",
        ],
        Duration::from_secs(60),
    )?;
    let doc = json(&out, "profile --off-cpu")?;
    let stacks = doc["stacks"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let napping: u64 = stacks
        .iter()
        .filter(|s| s["state"] == "sleeping")
        .filter(|s| {
            s["frames"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["function"] == "smoke_nap"))
        })
        .filter_map(|s| s["count"].as_u64())
        .sum();
    ensure!(
        napping > 1_000_000,
        "{} µs off-CPU in {} stacks, but only {napping} µs asleep under smoke_nap          (a root-owned process sleeping there all along): tracepoint {}",
        doc["total_samples"],
        stacks.len(),
        doc["off_cpu"]["tracepoints"]
    );
    Ok(format!(
        "{:.2} s asleep under smoke_nap of {:.2} s off-CPU ({} tracepoint)",
        napping as f64 / 1e6,
        doc["total_samples"].as_u64().unwrap_or(0) as f64 / 1e6,
        doc["off_cpu"]["tracepoints"].as_str().unwrap_or("?")
    ))
}

/// `latency -d 2s --format json` during direct-I/O writes: block latency
/// samples counted (BTF tracepoints, no tracefs).
fn smoke_latency(runner: &Runner) -> Result<String> {
    let file = runner.dir.join("dd.data");
    let _dd = Background::spawn(Command::new("sh").arg("-c").arg(format!(
        "while :; do dd if=/dev/zero of='{}' bs=4k count=256 oflag=direct conv=notrunc status=none; done",
        file.display()
    )))?;
    let out = runner.run(
        &["latency", "-d", "2s", "--format", "json"],
        Duration::from_secs(60),
    )?;
    let doc = json(&out, "latency")?;
    let series = doc["block"]["series"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let writes: u64 = series
        .iter()
        .filter(|s| s["op"] == "write")
        .filter_map(|s| s["latency"]["count"].as_u64())
        .sum();
    ensure!(
        writes > 0,
        "no block write latency samples during direct-I/O writes (block series: {})",
        serde_json::to_string(
            &series
                .iter()
                .map(|s| (&s["device"], &s["op"], &s["latency"]["count"]))
                .collect::<Vec<_>>()
        )?
    );
    Ok(format!(
        "{writes} block write samples in {} series",
        series.len()
    ))
}

/// `leaks -d 3s -- smoke_workload leak`: exactly 100 blocks of 100 bytes
/// outstanding from one stack through strdup (glibc's strdup has no frame
/// pointer, so a frame-pointer walk may not reach smoke_leak_strings).
fn smoke_leaks(runner: &Runner, workload: &Path) -> Result<String> {
    let workload = workload.to_str().context("workload path is not UTF-8")?;
    let out = runner.run(
        &[
            "leaks", "-d", "3s", "--format", "json", "--", workload, "leak",
        ],
        Duration::from_secs(60),
    )?;
    let doc = json(&out, "leaks")?;
    let stacks = doc["stacks"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let frames = |stack: &Value| -> Vec<String> {
        stack["frames"]
            .as_array()
            .map(|f| {
                f.iter()
                    .map(|f| f["function"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let leak = stacks.iter().find(|s| {
        frames(s)
            .iter()
            .any(|f| f == "smoke_leak_strings" || f.contains("strdup"))
    });
    let Some(leak) = leak else {
        bail!(
            "no stack through strdup or smoke_leak_strings (100 x strdup of 100 bytes); \
             {} stacks, {} bytes outstanding: {}",
            stacks.len(),
            doc["outstanding_bytes"],
            stacks
                .iter()
                .map(|s| format!("{} bytes from [{}]", s["bytes"], frames(s).join(" > ")))
                .collect::<Vec<_>>()
                .join("; ")
        );
    };
    let stack = frames(leak).join(" > ");
    ensure!(
        leak["bytes"] == 10_000 && leak["allocations"] == 100,
        "{} bytes in {} allocations outstanding from [{stack}], expected 10000 in 100",
        leak["bytes"],
        leak["allocations"]
    );
    Ok(format!(
        "10000 bytes in 100 allocations outstanding from {} in [{stack}]",
        leak["function"].as_str().unwrap_or("?")
    ))
}

/// `run` with every collector (leaks tracing a root-owned smoke_workload) for
/// about 5 s: /metrics answers and perf_user_collector_up is 1 for each; it
/// exits 0 on SIGTERM.
fn smoke_daemon(runner: &Runner, workload: &Path) -> Result<String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free port")?
        .port();
    let config = runner.dir.join("perf-user.toml");
    fs::write(
        &config,
        format!(
            "[exporter]\nlisten = \"127.0.0.1:{port}\"\n\
             [collectors.cpu]\nenabled = true\nwindow = \"5s\"\n\
             [collectors.block]\nenabled = true\n\
             [collectors.tcp]\nenabled = true\n\
             [collectors.leaks]\nenabled = true\nprocesses = [\"smoke_workload\"]\n"
        ),
    )
    .context("cannot write the daemon's configuration")?;
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644))?;
    let _leaker = Background::spawn(Command::new(workload).arg("leak"))?;

    let config = config.to_str().context("config path is not UTF-8")?;
    let args = ["run", "--config", config, "--log-format", "text"];
    println!("$ perf-user {}", args.join(" "));
    let mut daemon = runner.command(&args);
    daemon
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = daemon
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::display(&daemon)))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let started = Instant::now();

    let scrape = (|| -> Result<String> {
        // Let every collector attach and the leak target be found.
        let mut last_err = None;
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = child.try_wait()? {
                bail!("the daemon exited early ({})", cmd::describe(status));
            }
            if started.elapsed() >= Duration::from_secs(5) {
                match http_get(port, "/metrics") {
                    Ok(body) => return Ok(body),
                    Err(err) => last_err = Some(err),
                }
            }
            thread::sleep(Duration::from_millis(250));
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no answer"))).context(format!(
            "GET http://127.0.0.1:{port}/metrics failed for 30 s"
        ))
    })();

    kill_group(&child, libc::SIGTERM);
    let status = wait_or_kill(&mut child, Duration::from_secs(30))?;
    let log = stderr.join().unwrap_or_default() + &stdout.join().unwrap_or_default();
    print!("{}", indent(&log));
    let body = scrape?;
    let status = status.context("the daemon did not exit within 30 s of SIGTERM")?;

    let up = collector_up(&body);
    let mut problems = Vec::new();
    for collector in ["cpu", "block", "tcp", "leaks"] {
        match up.iter().find(|(name, _)| name == collector) {
            Some((_, value)) if is_one(value) => {}
            Some((_, value)) => problems.push(format!(
                "perf_user_collector_up{{collector=\"{collector}\"}} is {value}"
            )),
            None => problems.push(format!("no perf_user_collector_up for {collector}")),
        }
    }
    for (name, value) in &up {
        if !is_one(value) && !problems.iter().any(|p| p.contains(&format!("\"{name}\""))) {
            problems.push(format!(
                "perf_user_collector_up{{collector=\"{name}\"}} is {value}"
            ));
        }
    }
    if !status.success() {
        problems.push(format!("exit after SIGTERM: {}", cmd::describe(status)));
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(format!(
        "collector_up 1 for {}; exit 0 on SIGTERM",
        up.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Prometheus text writes 1 as "1" or "1.0".
fn is_one(value: &str) -> bool {
    value.parse::<f64>().is_ok_and(|v| v == 1.0)
}

/// (collector, value) of each perf_user_collector_up sample.
fn collector_up(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("perf_user_collector_up{")?;
            let (labels, value) = rest.split_once('}')?;
            let name = labels
                .split(',')
                .find_map(|l| l.trim().strip_prefix("collector="))?
                .trim_matches('"');
            Some((name.to_string(), value.trim().to_string()))
        })
        .collect()
}

fn http_get(port: u16, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{}",
        first_line(head)
    );
    Ok(body.to_string())
}

/// `advise -d 2s --format json`: a JSON report.
fn smoke_advise(runner: &Runner) -> Result<String> {
    let out = runner.run(
        &["advise", "-d", "2s", "--format", "json"],
        Duration::from_secs(60),
    )?;
    let doc = json(&out, "advise")?;
    ensure!(doc.is_object(), "advise printed JSON that is not an object");
    let alerts = doc["alerts"].as_array().map_or(0, Vec::len);
    Ok(format!("JSON report, {alerts} alerts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_file_systems_from_mountinfo() {
        let text = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:7 / /sys/kernel/debug rw,nosuid shared:12 - debugfs debugfs rw
31 30 0:12 / /sys/kernel/debug/tracing rw - tracefs tracefs rw
32 22 0:12 / /sys/kernel/tracing rw,nosuid shared:13 - tracefs tracefs rw
33 22 0:30 / /sys/fs/bpf rw shared:14 - bpf bpf rw,mode=700
34 22 0:31 / /mnt/with\\040space rw - bpf bpf rw
35 22 0:32 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw
";
        let mut mounts = parse_mountinfo(text);
        mounts.sort();
        let targets: Vec<&str> = mounts.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/mnt/with space",
                "/sys/fs/bpf",
                "/sys/kernel/debug",
                "/sys/kernel/debug/tracing",
                "/sys/kernel/tracing"
            ]
        );
    }

    #[test]
    fn collector_up_values() {
        let body = "# HELP perf_user_collector_up ...\n\
                    perf_user_collector_up{collector=\"cpu\"} 1\n\
                    perf_user_collector_up{collector=\"leaks\"} 0\n\
                    perf_user_collector_up{collector=\"tcp\"} 1.0\n\
                    perf_user_collector_upper 3\n";
        assert_eq!(
            collector_up(body),
            [
                ("cpu".into(), "1".into()),
                ("leaks".into(), "0".into()),
                ("tcp".into(), "1.0".into())
            ]
        );
        assert!(is_one("1") && is_one("1.0") && !is_one("0") && !is_one("NaN"));
    }
}
