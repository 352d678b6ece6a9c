//! Helpers for the latency tests (block_latency, tcp_latency): the kernel's
//! own counters (/proc/diskstats), loop devices and network namespaces that
//! clean up after themselves even when a test fails, and a `perf-user
//! latency` run whose readiness can be waited for.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{CmdOutput, PERF_USER};

/// Runs a command to completion; panics with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, ignoring failure (for clean-up).
pub fn run_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

// ---------------------------------------------------------------------------
// /proc/diskstats

/// One line of /proc/diskstats (the fields the tests compare with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub reads: u64,
    pub read_ms: u64,
    pub writes: u64,
    pub write_ms: u64,
    pub discards: u64,
    pub discard_ms: u64,
    pub flushes: u64,
    pub flush_ms: u64,
}

impl DiskStats {
    pub fn delta(&self, earlier: &DiskStats) -> DiskStats {
        DiskStats {
            reads: self.reads - earlier.reads,
            read_ms: self.read_ms - earlier.read_ms,
            writes: self.writes - earlier.writes,
            write_ms: self.write_ms - earlier.write_ms,
            discards: self.discards - earlier.discards,
            discard_ms: self.discard_ms - earlier.discard_ms,
            flushes: self.flushes - earlier.flushes,
            flush_ms: self.flush_ms - earlier.flush_ms,
        }
    }
}

/// The /proc/diskstats line of `device`.
pub fn diskstats(device: &str) -> DiskStats {
    let text = std::fs::read_to_string("/proc/diskstats").expect("read /proc/diskstats");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(device))
        .unwrap_or_else(|| panic!("{device} is not in /proc/diskstats"));
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(3)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    DiskStats {
        reads: get(0),
        read_ms: get(3),
        writes: get(4),
        write_ms: get(7),
        discards: get(11),
        discard_ms: get(14),
        flushes: get(15),
        flush_ms: get(16),
    }
}

/// The whole disk holding `path` (its name in /sys/class/block), e.g. `vda`.
pub fn disk_of(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let real = std::fs::canonicalize(&sys).unwrap_or_else(|e| {
        panic!(
            "{} is on {major}:{minor}, which is not a block device ({e}); \
             run the tests from a directory on a real disk",
            path.display()
        )
    });
    let disk = if real.join("partition").exists() {
        real.parent().unwrap().to_path_buf()
    } else {
        real
    };
    disk.file_name().unwrap().to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------
// Loop devices

/// A loop device over a file, detached (and the file removed) on drop.
pub struct LoopDevice {
    /// e.g. `/dev/loop3`.
    pub path: String,
    /// e.g. `loop3`.
    pub name: String,
    backing: PathBuf,
}

impl LoopDevice {
    /// Creates a `size_mib` file in `dir` and attaches a loop device to it.
    pub fn create(dir: &Path, size_mib: u64) -> Self {
        let backing = dir.join("loop-backing.img");
        let f = std::fs::File::create(&backing).expect("create loop backing file");
        f.set_len(size_mib << 20).expect("size loop backing file");
        drop(f);
        // Direct I/O to the backing file: each request then costs a real disk
        // access, like a disk, instead of a page-cache copy of a few us that
        // fixed per-request costs would swamp.
        let path = run(
            "losetup",
            &[
                "--find",
                "--show",
                "--direct-io=on",
                backing.to_str().expect("utf-8 path"),
            ],
        )
        .trim()
        .to_string();
        assert!(path.starts_with("/dev/loop"), "losetup printed {path:?}");
        let name = path.trim_start_matches("/dev/").to_string();
        // udev probes a new device (blkid reads); let it finish first.
        run_quiet("udevadm", &["settle", "--timeout=5"]);
        LoopDevice {
            path,
            name,
            backing,
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        run_quiet("losetup", &["-d", &self.path]);
        let _ = std::fs::remove_file(&self.backing);
    }
}

/// `MAJ:MIN` of a disk, from sysfs.
pub fn dev_numbers(disk: &str) -> String {
    std::fs::read_to_string(format!("/sys/block/{disk}/dev"))
        .unwrap_or_else(|e| panic!("/sys/block/{disk}/dev: {e}"))
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------
// I/O throttling of a disk for a group of processes.

/// A cgroup whose processes' I/O to one disk can be capped, and uncapped,
/// while they run: blk-throttle, through the blkio controller (cgroup v1) or
/// io.max (cgroup v2). A loop device's worker issues the backing file's I/O
/// on behalf of the cgroup of the process that asked, so throttling the
/// backing disk slows the loop device's requests themselves (their
/// issue-to-completion time), as a slow disk would. Processes are moved out
/// and the group removed on drop.
pub struct Throttle {
    dir: PathBuf,
    parent: PathBuf,
    v2: bool,
    dev: String,
}

impl Throttle {
    /// The group `name` for the disk `dev` (`MAJ:MIN`), without limits yet.
    pub fn create(name: &str, dev: &str) -> Self {
        let v1 = Path::new("/sys/fs/cgroup/blkio");
        let (parent, v2) = if v1.join("blkio.throttle.write_bps_device").exists() {
            (v1.to_path_buf(), false)
        } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let root = PathBuf::from("/sys/fs/cgroup");
            // The io controller must be enabled for children of the root.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+io");
            (root, true)
        } else {
            panic!("neither cgroup v1 blkio nor cgroup v2 is mounted under /sys/fs/cgroup");
        };
        let dir = parent.join(name);
        if dir.exists() {
            let _ = std::fs::remove_dir(&dir);
        }
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Throttle {
            dir,
            parent,
            v2,
            dev: dev.to_string(),
        }
    }

    /// Moves process `pid` into the group.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.dir.display()));
    }

    /// Caps writes at `bytes_per_sec` (`None`: no cap).
    pub fn set(&self, bytes_per_sec: Option<u64>) {
        self.limit("blkio.throttle.write_bps_device", "wbps", bytes_per_sec)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Caps reads at `iops` requests a second (`None`: no cap).
    pub fn set_read_iops(&self, iops: Option<u64>) {
        self.limit("blkio.throttle.read_iops_device", "riops", iops)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Writes one limit: `v1_file` of the blkio controller or `v2_key` of
    /// io.max.
    fn limit(&self, v1_file: &str, v2_key: &str, value: Option<u64>) -> Result<(), String> {
        let (file, value) = match (self.v2, value) {
            (false, Some(v)) => (v1_file, format!("{} {v}", self.dev)),
            (false, None) => (v1_file, format!("{} 0", self.dev)),
            (true, Some(v)) => ("io.max", format!("{} {v2_key}={v}", self.dev)),
            (true, None) => ("io.max", format!("{} {v2_key}=max", self.dev)),
        };
        std::fs::write(self.dir.join(file), &value)
            .map_err(|e| format!("write {value:?} to {file}: {e}"))
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let _ = self.limit("blkio.throttle.write_bps_device", "wbps", None);
        let _ = self.limit("blkio.throttle.read_iops_device", "riops", None);
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(self.parent.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Network namespaces

/// A network namespace, deleted on drop (which also removes veths inside it).
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates the namespace `name` (deleting a stale one of that name first)
    /// with its loopback up.
    pub fn create(name: &str) -> Self {
        run_quiet("ip", &["netns", "del", name]);
        run("ip", &["netns", "add", name]);
        let ns = NetNs {
            name: name.to_string(),
        };
        ns.exec("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace; panics when it fails.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Makes the calling thread enter the namespace, so that sockets it
    /// creates from then on live there.
    pub fn enter_current_thread(&self) {
        let path = format!("/run/netns/{}", self.name);
        let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        use std::os::fd::AsRawFd as _;
        // SAFETY: a valid namespace fd; setns affects only this thread.
        let ret = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(ret, 0, "setns {path}: {}", std::io::Error::last_os_error());
    }
}

impl NetNs {
    /// Like `enter_current_thread`, for a handle that only names a namespace
    /// owned elsewhere: it is not deleted when this handle is dropped.
    pub fn enter_current_thread_keep(self) {
        self.enter_current_thread();
        std::mem::forget(self);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        run_quiet("ip", &["netns", "del", &self.name]);
    }
}

/// Two namespaces joined by a veth pair: A is 10.SUBNET.0.1, B 10.SUBNET.0.2.
/// Both namespaces (and so the pair) go away when it is dropped.
pub struct Link {
    pub a: NetNs,
    pub b: NetNs,
    /// The veth end inside A, where a sender's qdisc goes.
    pub a_dev: String,
}

impl Link {
    /// Namespaces `pu-{tag}-a-PID` and `pu-{tag}-b-PID`; veth ends named
    /// `{dev}aN` and `{dev}bN` (kept under the 15-byte interface name limit).
    pub fn create(tag: &str, dev: &str, subnet: u8) -> Self {
        let id = std::process::id();
        let a = NetNs::create(&format!("pu-{tag}-a-{id}"));
        let b = NetNs::create(&format!("pu-{tag}-b-{id}"));
        let a_dev = format!("{dev}a{}", id % 100_000);
        let b_dev = format!("{dev}b{}", id % 100_000);
        run(
            "ip",
            &[
                "link", "add", &a_dev, "netns", &a.name, "type", "veth", "peer", "name", &b_dev,
                "netns", &b.name,
            ],
        );
        a.exec(
            "ip",
            &["addr", "add", &format!("10.{subnet}.0.1/24"), "dev", &a_dev],
        );
        b.exec(
            "ip",
            &["addr", "add", &format!("10.{subnet}.0.2/24"), "dev", &b_dev],
        );
        a.exec("ip", &["link", "set", &a_dev, "up"]);
        b.exec("ip", &["link", "set", &b_dev, "up"]);
        Link { a, b, a_dev }
    }

    /// Limits A's sending rate with a tbf qdisc: a bulk sender faster than
    /// `rate` fills a queue of up to `latency`, which is then its RTT.
    pub fn limit_rate(&self, rate: &str, burst: &str, latency: &str) {
        self.a.exec(
            "tc",
            &[
                "qdisc",
                "add",
                "dev",
                &self.a_dev,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                burst,
                "latency",
                latency,
            ],
        );
    }
}

// ---------------------------------------------------------------------------
// perf-user latency in the background

/// `perf-user latency …` running; `wait_ready` returns once it has attached.
pub struct LatencyRun {
    child: Child,
    started: Instant,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    stdout: Option<thread::JoinHandle<String>>,
    stderr_rest: Option<thread::JoinHandle<()>>,
}

impl LatencyRun {
    /// Starts `perf-user latency <args>`.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(PERF_USER)
            .arg("latency")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start perf-user latency");
        let mut out = child.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let stderr_rest = thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        LatencyRun {
            child,
            started: Instant::now(),
            stderr_lines: rx,
            stderr_seen: Vec::new(),
            stdout: Some(stdout),
            stderr_rest: Some(stderr_rest),
        }
    }

    /// Waits for the "Tracing …" line (programs attached); panics with the
    /// output so far if it does not come within `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.starts_with("Tracing ");
                    self.stderr_seen.push(line);
                    if ready {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "perf-user latency did not start tracing within {timeout:?}; stderr:\n{}",
                        self.stderr_seen.join("\n")
                    );
                }
            }
        }
    }

    /// Sends SIGINT, as Ctrl-C would: the command stops and still reports.
    pub fn interrupt(&self) {
        // SAFETY: kill has no memory preconditions; the child is not reaped
        // yet, so its PID still names it.
        let ret = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(ret, 0, "kill -INT: {}", std::io::Error::last_os_error());
    }

    /// Ctrl-C, then waits for the end (a minute at most): the command must
    /// succeed; returns its JSON report (`--format json`) and its output.
    pub fn interrupt_json(self) -> (serde_json::Value, CmdOutput) {
        self.interrupt();
        let out = self.finish(Duration::from_secs(60));
        assert!(
            !out.timed_out && out.status.success(),
            "perf-user latency failed\n{}",
            out.describe()
        );
        let doc = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON: {e}\n{}", out.describe()));
        (doc, out)
    }

    /// Waits for the end (killing it after `timeout`) and returns its output.
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
        let stdout = self.stdout.take().unwrap().join().unwrap_or_default();
        let _ = self.stderr_rest.take().unwrap().join();
        self.stderr_seen.extend(self.stderr_lines.try_iter());
        CmdOutput {
            status,
            stdout,
            stderr: self.stderr_seen.join("\n"),
            timed_out,
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for LatencyRun {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Relative difference `|a - b| / b`.
pub fn rel_diff(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        if a == 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        (a - b).abs() / b
    }
}

/// Asserts that `got` is within `tolerance` (a fraction of `want`) of
/// `want`; `what` names the two ("us off-CPU vs us of latency"), `ctx` is
/// added to the message.
pub fn assert_close(what: &str, got: f64, want: f64, tolerance: f64, ctx: &str) {
    let d = rel_diff(got, want);
    assert!(
        d <= tolerance,
        "{what}: {got:.0} vs {want:.0}, {:.1}% apart (at most {:.0}%)\n{ctx}",
        d * 100.0,
        tolerance * 100.0
    );
}
