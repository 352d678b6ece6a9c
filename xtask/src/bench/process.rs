//! Child processes and what /proc says about them: CPU time, BPF programs
//! and their kernel statistics, peak memory; waiting with a time limit.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, ChildStdout, Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd;

/// A started child that we reap ourselves (with wait4, for its rusage).
pub struct Proc {
    pub pid: i32,
    /// What the command line was, for messages.
    pub display: String,
    pub stdout: Option<BufReader<ChildStdout>>,
    stdin: Option<std::process::ChildStdin>,
    /// Dropping a `Child` neither kills nor reaps it; we keep it only to own its pipes.
    _child: Child,
    reaped: bool,
}

/// How a child ended.
pub struct Exit {
    pub status: ExitStatus,
    /// User + system CPU seconds of the child and of the descendants it waited for.
    pub cpu_seconds: f64,
}

impl Proc {
    /// Starts `cmd` (set its stdio first).
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        let display = cmd::display(cmd);
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("cannot start `{display}`: program not found")
            } else {
                anyhow!("cannot start `{display}`: {e}")
            }
        })?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        Ok(Self {
            pid,
            display,
            stdout: child.stdout.take().map(BufReader::new),
            stdin: child.stdin.take(),
            _child: child,
            reaped: false,
        })
    }

    /// Reads one line of its stdout (without the newline); `None` at end of file.
    pub fn read_line(&mut self) -> Result<Option<String>> {
        let Some(out) = &mut self.stdout else {
            bail!("stdout of `{}` is not a pipe", self.display);
        };
        let mut line = String::new();
        let n = out
            .read_line(&mut line)
            .with_context(|| format!("cannot read the output of `{}`", self.display))?;
        Ok((n > 0).then(|| line.trim_end().to_owned()))
    }

    /// The rest of its stdout.
    pub fn read_rest(&mut self) -> Result<String> {
        let mut all = String::new();
        while let Some(line) = self.read_line()? {
            all.push_str(&line);
            all.push('\n');
        }
        Ok(all)
    }

    /// Writes a line to its stdin.
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        use std::io::Write as _;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("stdin of `{}` is not a pipe", self.display))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("cannot write to `{}`", self.display))
    }

    /// Sends a signal (ignored once reaped: the pid may belong to someone else).
    pub fn signal(&self, signal: i32) {
        if !self.reaped {
            // SAFETY: kill has no memory-safety preconditions; the pid is our
            // own unreaped child, so it cannot have been reused.
            unsafe { libc::kill(self.pid, signal) };
        }
    }

    /// Whether it has exited (without reaping it).
    pub fn alive(&self) -> bool {
        if self.reaped {
            return false;
        }
        // A zombie still has a /proc entry: look at its state.
        fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    }

    /// Waits for it to exit, up to `timeout`; `None` when it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<Exit>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_wait()? {
                return Ok(Some(exit));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn try_wait(&mut self) -> Result<Option<Exit>> {
        if self.reaped {
            bail!("`{}` was already waited for", self.display);
        }
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: status and usage are valid, writable and live for the call.
        let got = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
        if got < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("wait4 for `{}`", self.display));
        }
        if got == 0 {
            return Ok(None);
        }
        self.reaped = true;
        use std::os::unix::process::ExitStatusExt as _;
        let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        Ok(Some(Exit {
            status: ExitStatus::from_raw(status),
            cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
        }))
    }

    /// SIGINT, then SIGKILL after `grace`; returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> Result<Exit> {
        if let Some(exit) = self.try_wait()? {
            return Ok(exit);
        }
        self.signal(libc::SIGINT);
        if let Some(exit) = self.wait_timeout(grace)? {
            return Ok(exit);
        }
        eprintln!(
            "    warning: `{}` did not exit within {} s of SIGINT; killing it",
            self.display,
            grace.as_secs()
        );
        self.signal(libc::SIGKILL);
        self.wait_timeout(Duration::from_secs(10))?
            .ok_or_else(|| anyhow!("`{}` survived SIGKILL", self.display))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(libc::SIGKILL);
            let _ = self.wait_timeout(Duration::from_secs(5));
        }
    }
}

/// CPU seconds used so far by all live threads of `pid`, from
/// /proc/PID/task/*/schedstat (nanoseconds), falling back to the
/// clock-tick resolution of /proc/PID/stat.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let mut total_ns = 0u64;
    let mut any = false;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Some(ns) = fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                total_ns += ns;
                any = true;
            }
        }
    }
    if any {
        return Some(total_ns as f64 / 1e9);
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the comm: state is field 3, utime 14, stime 15 (1-based).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Kernel statistics of one BPF program (kernel.bpf_stats_enabled must be on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The BPF programs `pid` holds file descriptors to, by program id.
pub fn bpf_progs(pid: i32) -> BTreeMap<u32, ProgStats> {
    let mut progs = BTreeMap::new();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return progs;
    };
    for fd in fds.flatten() {
        let is_prog = fs::read_link(fd.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info_path = Path::new("/proc")
            .join(pid.to_string())
            .join("fdinfo")
            .join(fd.file_name());
        if let Some((id, stats)) = fs::read_to_string(info_path)
            .ok()
            .and_then(|s| parse_prog_fdinfo(&s))
        {
            progs.insert(id, stats);
        }
    }
    progs
}

/// `prog_id`, `run_time_ns` and `run_cnt` from a bpf-prog fd's fdinfo.
pub fn parse_prog_fdinfo(text: &str) -> Option<(u32, ProgStats)> {
    let mut id = None;
    let mut stats = ProgStats::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "prog_id" => id = value.parse().ok(),
            "run_time_ns" => stats.run_time_ns = value.parse().ok()?,
            "run_cnt" => stats.run_cnt = value.parse().ok()?,
            _ => {}
        }
    }
    Some((id?, stats))
}

/// Number of file descriptors of `pid` that are BPF programs, perf events or
/// BPF links: tracers open these while attaching (uprobe_multi links, which
/// `leaks` uses on Linux 6.6+, are links without a perf event).
pub fn probe_fds(pid: i32) -> usize {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| {
            fs::read_link(fd.path()).is_ok_and(|t| {
                let t = t.as_os_str().to_string_lossy();
                t == "anon_inode:bpf-prog"
                    || t == "anon_inode:[perf_event]"
                    || t == "anon_inode:bpf_link"
            })
        })
        .count()
}

/// Uprobes `pid` holds: (perf events, or BPF links of type perf, and BPF
/// links of type uprobe_multi). A tracer that attaches N probes holds N of
/// the first, or one link of the second per program on Linux 6.6+.
pub fn uprobe_fds(pid: i32) -> (usize, usize) {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let (mut events, mut multi) = (0, 0);
    for fd in fds.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.as_os_str().to_string_lossy();
        if target.contains("perf_event") {
            events += 1;
            continue;
        }
        if !target.contains("bpf_link") {
            continue;
        }
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        match link_type(&info) {
            Some(t) if t.contains("probe_multi") => multi += 1,
            Some(t) if t.contains("perf") => events += 1,
            _ => {}
        }
    }
    (events, multi)
}

/// `link_type` of a bpf-link fd's fdinfo.
fn link_type(fdinfo: &str) -> Option<&str> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("link_type:"))
        .map(str::trim)
}

/// A `Key:   123 kB` line of /proc/PID/status, in KiB.
pub fn status_kib(pid: i32, key: &str) -> Option<u64> {
    status_kib_in(&format!("/proc/{pid}/status"), key)
}

/// A `Key:   123 kB` line of a /proc file such as /proc/meminfo, in KiB.
pub fn status_kib_in(path: &str, key: &str) -> Option<u64> {
    let status = fs::read_to_string(path).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Busy CPU seconds of the whole machine so far (all CPUs, from /proc/stat).
pub fn system_busy_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user already)
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    Some(busy as f64 / clock_ticks())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_a_bpf_prog() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2071\nprog_type:\t7\n\
                    prog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\nprog_id:\t42\n\
                    run_time_ns:\t123456\nrun_cnt:\t789\nrecursion_misses:\t0\nverified_insns:\t99\n";
        assert_eq!(
            parse_prog_fdinfo(text),
            Some((
                42,
                ProgStats {
                    run_time_ns: 123_456,
                    run_cnt: 789
                }
            ))
        );
        assert_eq!(parse_prog_fdinfo("pos:\t0\n"), None);
    }

    #[test]
    fn link_types() {
        assert_eq!(
            link_type("pos:\t0\nlink_type:\tuprobe_multi\nlink_id:\t3\n"),
            Some("uprobe_multi")
        );
        assert_eq!(link_type("pos:\t0\n"), None);
    }

    #[test]
    fn own_process_figures() {
        let pid = i32::try_from(std::process::id()).unwrap();
        assert!(cpu_seconds(pid).is_some_and(|s| s > 0.0));
        assert!(status_kib(pid, "VmHWM").is_some_and(|k| k > 0));
        assert!(system_busy_seconds().is_some_and(|s| s > 0.0));
        assert!(bpf_progs(pid).is_empty());
    }

    #[test]
    fn wait_reports_status_and_cpu() {
        let mut p = Proc::spawn(
            Command::new("sh")
                .args([
                    "-c",
                    "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3",
                ])
                .stdout(std::process::Stdio::null()),
        )
        .unwrap();
        let exit = p.wait_timeout(Duration::from_secs(30)).unwrap().unwrap();
        assert_eq!(exit.status.code(), Some(3));
        assert!(exit.cpu_seconds > 0.0);
        assert!(!p.alive());
    }
}
