//! Helpers shared by the privileged integration tests: privilege checks,
//! compiling and running the workloads in `tests/workloads/`, running the
//! `perf-user` binary and reading what it wrote.
//!
//! Every test binary includes this module but uses only part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const PERF_USER: &str = env!("CARGO_BIN_EXE_perf-user");

/// Environment variable that lets an unprivileged run skip privileged tests.
pub const SKIP_ENV: &str = "PERF_USER_SKIP_PRIVILEGED";

/// Upper bound for any single profiler run; a hung profiler fails the test.
pub const PROFILER_TIMEOUT: Duration = Duration::from_secs(60);

/// Returns true when the test may go on. A privileged test that cannot run
/// fails loudly, unless the caller explicitly opted out with
/// `PERF_USER_SKIP_PRIVILEGED=1`; then the test is reported as skipped.
pub fn require_privileges(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: not root (euid {euid}) and {SKIP_ENV}=1");
        return false;
    }
    panic!(
        "{test} is a privileged test (euid is {euid}): run as root, or set \
         {SKIP_ENV}=1 to skip explicitly"
    );
}

/// Serializes profiling sessions inside one test binary, so that concurrently
/// running tests do not compete for the CPUs they measure. Poisoning by a
/// failed test is ignored.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh, empty directory for one test's files, under the target's temp dir.
pub fn test_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("perf-user-it")
        .join(test);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot clean {}: {e}", dir.display()));
    }
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Chromium's binary (`CHROMIUM`, else /usr/bin/chromium); fails the test
/// when it is missing.
pub fn chromium() -> PathBuf {
    installed("CHROMIUM", "/usr/bin/chromium", "chromium")
}

/// The program at `$env`, else at `default`; fails the test, naming the
/// Debian `package`, when it is missing.
pub fn installed(env: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} not found: this test needs it; install it with \
         `apt-get install -y {package}` (or set {env} to its path)",
        path.display()
    );
    path
}

/// Path of a workload source file in `tests/workloads/`.
pub fn workload_source(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/workloads")
        .join(file)
}

fn run_compiler(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the compiler for {what} ({cmd:?}): {e}"));
    assert!(
        out.status.success(),
        "compiling {what} failed ({}):\n{cmd:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles `tests/workloads/<name>.c` into `dir/<name>` with frame pointers
/// and debug info, and returns the executable's path.
pub fn compile_c(name: &str, dir: &Path) -> PathBuf {
    compile_c_with(
        name,
        dir,
        &[
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-inline",
            "-fno-optimize-sibling-calls",
        ],
    )
}

/// gcc flags of a distribution package without frame pointers, keeping
/// every call a frame (tests of the table unwinder).
pub const NO_FRAME_POINTERS: &[&str] = &[
    "-O2",
    "-fomit-frame-pointer",
    "-fno-inline",
    "-fno-optimize-sibling-calls",
];

/// Compiles `tests/workloads/<name>.c` into `dir/<name>` with `flags`, and
/// returns the executable's path.
pub fn compile_c_with(name: &str, dir: &Path, flags: &[&str]) -> PathBuf {
    let src = workload_source(&format!("{name}.c"));
    let exe = dir.join(name);
    let mut cmd = Command::new(std::env::var_os("CC").unwrap_or_else(|| "gcc".into()));
    cmd.args(flags).arg("-o").arg(&exe).arg(&src);
    run_compiler(cmd, &src.display().to_string());
    exe
}

/// Compiles `tests/workloads/<name>.rs` into `dir/<name>` with frame pointers
/// and debug info, and returns the executable's path.
pub fn compile_rust(name: &str, dir: &Path) -> PathBuf {
    let src = workload_source(&format!("{name}.rs"));
    let exe = dir.join(name);
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args([
        "--edition",
        "2024",
        "--crate-name",
        name,
        "-C",
        "force-frame-pointers=yes",
        "-C",
        "opt-level=1",
        "-g",
    ])
    .arg("-o")
    .arg(&exe)
    .arg(&src);
    run_compiler(cmd, &src.display().to_string());
    exe
}

/// A running workload, killed and reaped when dropped.
pub struct Workload {
    pub child: Child,
    pub name: String,
}

impl Workload {
    /// Starts `exe` with `args`; its output is discarded.
    pub fn spawn<S: AsRef<OsStr>>(exe: &Path, args: &[S]) -> Self {
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start workload {}: {e}", exe.display()));
        Workload {
            child,
            name: exe.display().to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics if the workload has already exited (it would make the
    /// profile meaningless).
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait on workload") {
            panic!("workload {} exited early: {status}", self.name);
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `workloads/leaky.c` waiting to allocate until told (`LEAKY_GO`), so that
/// a tracer attaches first; killed when dropped.
pub struct Leaky {
    pub workload: Workload,
    go: PathBuf,
    done: PathBuf,
}

impl Leaky {
    /// Builds it in `dir` and starts it with `args` (`malloc 500 64`).
    pub fn spawn(dir: &Path, args: &[&str]) -> Leaky {
        let exe = compile_c("leaky", dir);
        let (go, done) = (dir.join("go"), dir.join("done"));
        let child = Command::new(&exe)
            .args(args)
            .env("LEAKY_GO", &go)
            .env("LEAKY_DONE", &done)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start leaky");
        let workload = Workload {
            child,
            name: exe.display().to_string(),
        };
        Leaky { workload, go, done }
    }

    /// Lets it allocate, and waits (30 s at most) until it has.
    pub fn run(&mut self) {
        std::fs::write(&self.go, "").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.done.exists() {
            self.workload.assert_running();
            assert!(Instant::now() < deadline, "leaky never finished");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl CmdOutput {
    /// A description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit status: {}{}\n--- stderr ---\n{}\n--- stdout (first 4000 bytes) ---\n{}",
            self.status,
            if self.timed_out {
                " (killed after the timeout)"
            } else {
                ""
            },
            self.stderr,
            truncate(&self.stdout, 4000)
        )
    }
}

/// First `max` bytes of `s`, on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A command running in the background with its output captured.
pub struct Running {
    pub child: Child,
    started: Instant,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Running {
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let stdout = Some(drain(child.stdout.take()));
        let stderr = Some(drain(child.stderr.take()));
        Running {
            child,
            started: Instant::now(),
            stdout,
            stderr,
        }
    }

    /// True while the command runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the command, killing it after `timeout`.
    pub fn finish(mut self, timeout: Duration) -> CmdOutput {
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if self.started.elapsed() > timeout {
                timed_out = true;
                let _ = self.child.kill();
                break self.child.wait().expect("wait after kill");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        CmdOutput {
            status,
            stdout: self.stdout.take().unwrap().join().unwrap_or_default(),
            stderr: self.stderr.take().unwrap().join().unwrap_or_default(),
            timed_out,
            elapsed,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only reached without `finish` when a test panicked midway.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `perf-user` command with `args`.
pub fn perf_user<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(PERF_USER);
    cmd.args(args);
    cmd
}

/// Runs `perf-user` with `args` to the end (or the timeout).
pub fn run_perf_user<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> CmdOutput {
    Running::start(perf_user(args)).finish(timeout)
}

/// Starts `perf-user profile <args> --output <out>` in the background.
pub fn start_profiler<S: AsRef<OsStr>>(args: &[S], out: &Path) -> Running {
    let mut cmd = perf_user(&["profile"]);
    cmd.args(args).arg("--output").arg(out);
    Running::start(cmd)
}

/// Checks that the profiler succeeded and wrote a non-empty `out`; returns
/// the file's bytes.
pub fn profiler_output(run: &CmdOutput, out: &Path) -> Vec<u8> {
    assert!(
        !run.timed_out && run.status.success(),
        "perf-user profile failed\n{}",
        run.describe()
    );
    assert!(
        !run.stderr.contains("panicked"),
        "perf-user panicked\n{}",
        run.describe()
    );
    let bytes = std::fs::read(out).unwrap_or_else(|e| {
        panic!(
            "perf-user did not write {}: {e}\n{}",
            out.display(),
            run.describe()
        )
    });
    assert!(
        !bytes.is_empty(),
        "perf-user wrote an empty {}\n{}",
        out.display(),
        run.describe()
    );
    bytes
}

/// Runs `perf-user profile <args> --output <out>` and returns the output
/// file's bytes, failing with the profiler's stderr if anything went wrong.
pub fn profile_to_file<S: AsRef<OsStr>>(args: &[S], out: &Path) -> (Vec<u8>, CmdOutput) {
    let run = start_profiler(args, out).finish(PROFILER_TIMEOUT);
    let bytes = profiler_output(&run, out);
    (bytes, run)
}

/// Parses a `--format json` document, failing with the profiler's stderr.
pub fn parse_json(bytes: &[u8], run: &CmdOutput) -> Value {
    let doc: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "perf-user's output is not JSON: {e}\n--- output ---\n{}\n{}",
            truncate(&String::from_utf8_lossy(bytes), 4000),
            run.describe()
        )
    });
    assert_eq!(
        doc["schema_version"],
        1,
        "unexpected schema_version\n{}",
        run.describe()
    );
    doc
}

/// Runs the profiler with `--format json` plus `args` and parses the result.
pub fn profile_json(args: &[&str], out: &Path) -> (Value, CmdOutput) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--format", "json"]);
    let (bytes, run) = profile_to_file(&all, out);
    let doc = parse_json(&bytes, &run);
    (doc, run)
}

/// Gives a freshly started workload time to reach its hot loop.
pub fn settle() {
    thread::sleep(Duration::from_millis(300));
}

/// True when file descriptor `fd` of process `pid` is a perf event, or a BPF
/// link that attaches a program to one.
fn is_perf_event_fd(pid: u32, fd: &std::ffi::OsStr) -> bool {
    let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/{}", fd.to_string_lossy())) else {
        return false;
    };
    let target = target.to_string_lossy();
    if target.contains("perf_event") {
        return true;
    }
    target.contains("bpf_link") && link_type_is(pid, fd, "perf")
}

/// Whether fd `fd` of `pid` is a BPF link whose type contains `kind`.
fn link_type_is(pid: u32, fd: &std::ffi::OsStr, kind: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy())).is_ok_and(
        |info| {
            info.lines()
                .any(|l| l.starts_with("link_type:") && l.contains(kind))
        },
    )
}

/// How many fds of `pid` pass `is`.
fn count_fds(pid: u32, is: impl Fn(&std::ffi::OsStr) -> bool) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| is(&e.file_name()))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the allocation tracer `pid` has attached its uprobes: at
/// least `perf_events` perf-event uprobes, or, on kernels with uprobe_multi
/// links (6.6+, which `leaks` prefers), at least `multi_links` of those
/// (link types `uprobe_multi` and `uretprobe_multi`).
/// Returns whether it saw them before `timeout`.
pub fn wait_for_uprobes(
    pid: u32,
    perf_events: usize,
    multi_links: usize,
    timeout: Duration,
) -> bool {
    poll_until(timeout, || {
        count_fds(pid, |fd| is_perf_event_fd(pid, fd)) >= perf_events
            || count_fds(pid, |fd| link_type_is(pid, fd, "probe_multi")) >= multi_links
    })
}

/// Calls `done` every 20 ms until it returns true (then returns true) or
/// `timeout` passes (then false).
fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits until process `pid` holds a BPF link whose type contains `kind`
/// (`raw_tracepoint`: a BTF tracepoint program is attached). Returns
/// whether it saw one before `timeout`.
pub fn wait_for_bpf_link(pid: u32, kind: &str, timeout: Duration) -> bool {
    poll_until(timeout, || {
        count_fds(pid, |fd| link_type_is(pid, fd, kind)) > 0
    })
}

/// Waits until the process `pid` holds at least one perf event (or BPF link
/// to one) per online CPU, that is, the profiler is sampling; or until
/// `timeout` passes. Returns whether it saw them.
pub fn wait_for_perf_events(pid: u32, timeout: Duration) -> bool {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    wait_for_perf_event_count(pid, cpus, timeout)
}

/// Waits until process `pid` holds at least `n` perf events (or BPF links to
/// one): a tracer that attaches one per probe is then attached. Returns
/// whether it saw them before `timeout`.
pub fn wait_for_perf_event_count(pid: u32, n: usize, timeout: Duration) -> bool {
    poll_until(timeout, || {
        count_fds(pid, |fd| is_perf_event_fd(pid, fd)) >= n
    })
}

// ---------------------------------------------------------------------------
// Reading the JSON document.

/// The name a user reads for a frame: its function, or `module+0xSTART`
/// (its function's start), or `module+0xoffset`.
pub fn frame_name(frame: &Value) -> String {
    match frame["function"].as_str() {
        Some(f) => f.to_string(),
        None => format!(
            "{}+{:#x}",
            frame["module"].as_str().unwrap_or("?"),
            frame["function_start"]
                .as_u64()
                .or_else(|| frame["offset"].as_u64())
                .unwrap_or(0)
        ),
    }
}

/// The `stacks` array.
pub fn stacks(doc: &Value) -> &[Value] {
    doc["stacks"]
        .as_array()
        .map(Vec::as_slice)
        .expect("the JSON document has no `stacks` array")
}

/// Stacks of process `pid`.
pub fn stacks_of(doc: &Value, pid: u32) -> Vec<&Value> {
    stacks(doc)
        .iter()
        .filter(|s| s["pid"].as_u64() == Some(u64::from(pid)))
        .collect()
}

/// A stack's sample count.
pub fn count(stack: &Value) -> u64 {
    stack["count"].as_u64().expect("stack without a count")
}

/// A stack's frames, root first.
pub fn frames(stack: &Value) -> &[Value] {
    stack["frames"]
        .as_array()
        .map(Vec::as_slice)
        .expect("stack without frames")
}

/// A stack's frame names, root first.
pub fn frame_names(stack: &Value) -> Vec<String> {
    frames(stack).iter().map(frame_name).collect()
}

/// The leaf (sampled) frame's name.
pub fn leaf_name(stack: &Value) -> Option<String> {
    frames(stack).last().map(frame_name)
}

/// True when `names` contains, in order, a name matching each predicate.
pub fn has_subsequence(names: &[String], wanted: &[&dyn Fn(&str) -> bool]) -> bool {
    let mut want = wanted.iter();
    let mut next = want.next();
    for name in names {
        match next {
            Some(pred) if pred(name) => next = want.next(),
            Some(_) => {}
            None => break,
        }
    }
    next.is_none()
}

/// A short listing of the heaviest stacks, for assertion messages.
pub fn summarize(doc: &Value, limit: usize) -> String {
    let mut s = format!(
        "total_samples={} lost={}\n",
        doc["total_samples"], doc["lost"]
    );
    for stack in stacks(doc).iter().take(limit) {
        s.push_str(&format!(
            "  {} pid={} process={} : {}\n",
            count(stack),
            stack["pid"],
            stack["process"],
            frame_names(stack).join(" ; ")
        ));
    }
    if let Some(h) = doc["hotspots"].as_array() {
        s.push_str("hotspots:\n");
        for row in h.iter().take(limit) {
            s.push_str(&format!(
                "  {} [{}] process={} self={} total={}\n",
                row["function"], row["module"], row["process"], row["self_pct"], row["total_pct"]
            ));
        }
    }
    s
}

/// A CPU-bound Python script (json, zlib, hashlib), as in the issue.
pub const PYTHON_LOOP: &str = "
import json, zlib, hashlib
data = [{'k': i, 'v': str(i) * 20} for i in range(2000)]
def work():
    s = json.dumps(data).encode()
    c = zlib.compress(s, 6)
    hashlib.sha256(c).hexdigest()
    json.loads(zlib.decompress(c))
def outer(n):
    return work() if n == 0 else outer(n - 1)
while True:
    outer(5)
";
