//! The daemon in a fleet's conventions: `/debug/pprof/profile` fetched by a
//! real `go tool pprof` (Debian `golang-go`), as Parca and Grafana Alloy
//! fetch it; container labels (`cgroup`, `container_id`, `unit`) on the
//! metrics and the profile's samples of a process moved into a new cgroup,
//! bounded; `/debug/pprof/heap` of a leaking process traced by the daemon.
//! HTTP goes through `curl`, metrics are checked by `promtool`.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::*;
use perf_user::output::pprof::proto;
use prost::Message as _;

/// `perf-user run` on a free loopback port; killed when dropped (the
/// kernel detaches its programs with its file descriptors).
struct Daemon {
    run: Running,
    base: String,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("no free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = perf_user(&["run", "--listen", &listen]);
        cmd.args(args);
        let mut run = Running::start(cmd);
        let base = format!("http://{listen}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while curl(&format!("{base}/healthz"), None).status != 200 {
            if !run.is_running() || Instant::now() > deadline {
                let out = run.finish(Duration::from_secs(1));
                panic!("perf-user run did not become healthy\n{}", out.describe());
            }
            thread::sleep(Duration::from_millis(100));
        }
        Daemon { run, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn scrape(&self) -> String {
        let r = curl(&self.url("/metrics"), None);
        assert_eq!(r.status, 200, "GET /metrics");
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// Waits until a scrape satisfies `pred`, and returns it.
    fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.scrape();
            if pred(&s) {
                return s;
            }
            assert!(self.run.is_running(), "the daemon exited");
            let cpu: Vec<&str> = s
                .lines()
                .filter(|l| l.starts_with("perf_user_cpu_") || l.starts_with("perf_user_leak"))
                .collect();
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}\n{}",
                truncate(&cpu.join("\n"), 6000)
            );
            thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A configuration for the CPU collector: `extra` lines in its section.
/// User stacks are walked with frame pointers (the workloads have them):
/// loading unwind tables for every new process of a busy host is
/// `tests/unwind.rs`' subject, not this one's.
fn cpu_config(dir: &Path, window: &str, extra: &str) -> String {
    let path = dir.join("cpu.toml");
    std::fs::write(
        &path,
        format!("[collectors.cpu]\nunwind = \"fp\"\nwindow = \"{window}\"\n{extra}"),
    )
    .unwrap();
    path.display().to_string()
}

/// What curl got.
struct Fetched {
    status: u16,
    content_type: String,
    seconds: f64,
    body: Vec<u8>,
}

/// GETs `url` with curl; the body goes to `out` too when given.
fn curl(url: &str, out: Option<&Path>) -> Fetched {
    let tmp = std::env::temp_dir().join(format!(
        "fleet-curl-{}-{:?}",
        std::process::id(),
        thread::current().id()
    ));
    let file = out.map_or(tmp.clone(), Path::to_path_buf);
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-o"])
        .arg(&file)
        .args(["-w", "%{http_code} %{time_total} %{content_type}", url])
        .output()
        .expect("cannot run curl: install the Debian package `curl`");
    let w = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut parts = w.splitn(3, ' ');
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let seconds = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let content_type = parts.next().unwrap_or("").to_string();
    let body = std::fs::read(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&tmp);
    Fetched {
        status,
        content_type,
        seconds,
        body,
    }
}

/// A decoded pprof response.
fn decode(bytes: &[u8]) -> proto::Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("the response is not gzip: {e}"));
    proto::Profile::decode(&raw[..]).unwrap_or_else(|e| panic!("not a profile.proto: {e}"))
}

/// A sample's string label `key`, and the names of its frames (leaf first).
struct Sample {
    values: Vec<i64>,
    labels: Vec<(String, String)>,
    nums: Vec<(String, i64)>,
    frames: Vec<String>,
}

fn samples(p: &proto::Profile) -> Vec<Sample> {
    let s = |i: i64| p.string_table[i as usize].clone();
    let function = |loc: u64| -> String {
        let l = p.location.iter().find(|l| l.id == loc).expect("location");
        let f = p
            .function
            .iter()
            .find(|f| f.id == l.line[0].function_id)
            .expect("function");
        s(f.name)
    };
    p.sample
        .iter()
        .map(|x| Sample {
            values: x.value.clone(),
            labels: x
                .label
                .iter()
                .filter(|l| l.str != 0)
                .map(|l| (s(l.key), s(l.str)))
                .collect(),
            nums: x
                .label
                .iter()
                .filter(|l| l.str == 0)
                .map(|l| (s(l.key), l.num))
                .collect(),
            frames: x.location_id.iter().map(|&id| function(id)).collect(),
        })
        .collect()
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn num(&self, key: &str) -> Option<i64> {
        self.nums.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// Runs `go tool pprof ARGS` and returns its output; saved profiles go to `dir`.
fn go_pprof(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .env("PPROF_TMPDIR", dir)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run go: install the Debian package `golang-go`");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{text}"
    );
    text
}

fn promtool_accepts(scrape: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run promtool: install the Debian package `prometheus`");
    p.stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn go_tool_pprof_fetches_the_cpu_profile() {
    if !require_privileges("go_tool_pprof_fetches_the_cpu_profile") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("fleet_go_pprof");
    let exe = compile_c("hot", &dir);
    let mut hot = Workload::spawn(&exe, &["300"]);
    // The default window: each window names every sampled stack with a
    // symbolizer of its own, seconds of CPU in a debug build on a loaded host.
    let config = cpu_config(&dir, "30s", "");
    let daemon = Daemon::start(&["--collectors", "cpu", "--config", &config]);
    // The first profile reads the symbol tables of every sampled file;
    // a scraper's later ones find them read (docs/fleet.md).
    let first = curl(&daemon.url("/debug/pprof/profile?seconds=2"), None);
    println!("the first 2-second profile took {:.2} s", first.seconds);
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    hot.assert_running();

    let timed = curl(&daemon.url("/debug/pprof/profile?seconds=2"), None);
    assert_eq!(
        timed.status,
        200,
        "{}",
        String::from_utf8_lossy(&timed.body)
    );
    assert_eq!(timed.content_type, "application/octet-stream");
    println!("a 2-second profile took {:.2} s", timed.seconds);
    assert!(
        (1.5..6.0).contains(&timed.seconds),
        "a 2-second profile took {:.2} s",
        timed.seconds
    );
    let p = decode(&timed.body);
    assert!(
        (1.9e9..2.5e9).contains(&(p.duration_nanos as f64)),
        "duration {} ns",
        p.duration_nanos
    );

    let url = daemon.url("/debug/pprof/profile?seconds=2");
    let top = go_pprof(&dir, &["-top", &url]);
    println!("{}", truncate(&top, 1500));
    assert!(
        top.lines().any(|l| l.trim_end().ends_with(" burn_cpu_hot")),
        "burn_cpu_hot is not in go tool pprof's -top:\n{top}"
    );
    // Only the process asked for.
    let pid = hot.pid();
    let only = curl(
        &daemon.url(&format!("/debug/pprof/profile?seconds=1&pid={pid}")),
        None,
    );
    let only = samples(&decode(&only.body));
    assert!(!only.is_empty(), "no samples of pid {pid}");
    assert!(only.iter().all(|s| s.num("pid") == Some(i64::from(pid))));

    // Bad values: 400 and the reason.
    for (query, reason) in [
        ("seconds=0", "from 1 to 60"),
        ("seconds=1000", "from 1 to 60"),
        ("seconds=abc", "from 1 to 60"),
        ("pid=-1", "not a process id"),
    ] {
        let r = curl(&daemon.url(&format!("/debug/pprof/profile?{query}")), None);
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 400, "{query}: {body}");
        assert!(body.contains(reason), "{query}: {body}");
    }
    // No leaks collector: no heap profile, and a reason.
    let heap = curl(&daemon.url("/debug/pprof/heap"), None);
    assert_eq!(heap.status, 404);
    assert!(String::from_utf8_lossy(&heap.body).contains("leaks collector"));
    // No offcpu collector: no off-CPU profile, and a reason.
    let off = curl(&daemon.url("/debug/pprof/offcpu?seconds=1"), None);
    assert_eq!(off.status, 404);
    assert!(String::from_utf8_lossy(&off.body).contains("offcpu collector"));
}

/// `/debug/pprof/offcpu`: a process that sleeps 100 ms at a time in
/// `nap_here` is asleep there for about the whole profile, in samples of
/// type off_cpu/nanoseconds labelled with its state and container;
/// `go tool pprof -top` lists nap_here.
#[test]
fn go_tool_pprof_fetches_the_offcpu_profile() {
    if !require_privileges("go_tool_pprof_fetches_the_offcpu_profile") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("fleet_offcpu");
    let exe = compile_c("napper", &dir);
    let mut napper = Workload::spawn(&exe, &["120"]);
    let pid = napper.pid();
    let config = dir.join("offcpu.toml");
    std::fs::write(&config, "[collectors.offcpu]\nenabled = true\n").unwrap();
    let daemon = Daemon::start(&[
        "--collectors",
        "offcpu",
        "--config",
        config.to_str().unwrap(),
    ]);
    let r = curl(
        &daemon.url(&format!("/debug/pprof/offcpu?seconds=2&pid={pid}")),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.content_type, "application/octet-stream");
    println!("a 2-second off-CPU profile took {:.2} s", r.seconds);
    napper.assert_running();
    let p = decode(&r.body);
    let s = |i: i64| p.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (s(t.r#type), s(t.unit)))
        .collect();
    assert_eq!(types, [("off_cpu", "nanoseconds")]);
    let all = samples(&p);
    assert!(all.iter().all(|x| x.num("pid") == Some(i64::from(pid))));
    let naps: Vec<&Sample> = all
        .iter()
        .filter(|x| x.frames.iter().any(|f| f == "nap_here"))
        .collect();
    let asleep: i64 = naps.iter().map(|x| x.values[0]).sum();
    println!(
        "nap_here: {:.3} s asleep in a 2 s profile ({} samples of napper)",
        asleep as f64 / 1e9,
        all.len()
    );
    // Each 100 ms sleep is counted when it ends: up to one more than 2 s holds.
    assert!((1.6e9..2.4e9).contains(&(asleep as f64)), "{asleep} ns");
    for x in &naps {
        assert_eq!(x.label("state"), Some("sleeping"));
        assert_eq!(x.label("process"), Some("napper"));
        assert_eq!(x.label("thread"), Some("napper"));
        assert!(x.num("tid").is_some());
        // The kernel frame that called the scheduler is the leaf.
        assert!(
            x.frames.first().is_some_and(|f| f.contains("nanosleep")),
            "{:?}",
            x.frames
        );
    }
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroup.trim().rsplit("::").next().unwrap_or("");
    if path != "/" {
        assert!(
            naps.iter().all(|x| x.label("cgroup") == Some(path)),
            "{path}"
        );
    }

    let url = daemon.url("/debug/pprof/offcpu?seconds=2");
    let top = go_pprof(&dir, &["-top", &url]);
    println!("{}", truncate(&top, 1500));
    assert!(
        top.lines().any(|l| l.trim_end().ends_with(" nap_here")),
        "nap_here is not in go tool pprof's -top:\n{top}"
    );
    let r = curl(&daemon.url("/debug/pprof/offcpu?seconds=0"), None);
    assert_eq!(r.status, 400);
}

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a host with the hybrid layout.
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split(' ').nth(4)?;
            (right.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(mount))
        })
        .expect("no cgroup2 file system is mounted: this test moves processes into new cgroups")
}

/// Cgroups made for a test under the cgroup v2 root; removed (after their
/// processes are killed) when dropped.
struct Cgroups {
    root: PathBuf,
    dirs: Vec<PathBuf>,
    workloads: Vec<Workload>,
}

impl Cgroups {
    fn new() -> Cgroups {
        Cgroups {
            root: cgroup2_root(),
            dirs: Vec::new(),
            workloads: Vec::new(),
        }
    }

    /// Makes the cgroup `/<rel>` and moves `w` into it.
    fn run_in(&mut self, rel: &str, w: Workload) {
        self.enter(rel, w.pid());
        self.workloads.push(w);
    }

    /// Makes the cgroup `/<rel>` and moves `pid` into it; the caller ends
    /// the process before this drops.
    fn enter(&mut self, rel: &str, pid: u32) {
        let dir = self.root.join(rel);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot make the cgroup {}: {e}", dir.display()));
        let mut p = dir.clone();
        while p != self.root {
            if !self.dirs.contains(&p) {
                self.dirs.push(p.clone());
            }
            p.pop();
        }
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", dir.display()));
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.workloads.clear();
        // Deepest first; a cgroup is removable once its processes are reaped.
        self.dirs
            .sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// `s` carries the labels of the Docker scope `path` of container [`ID`].
fn assert_container_labels(s: &Sample, path: &str) {
    assert_eq!(s.label("cgroup"), Some(path));
    assert_eq!(
        s.label("container_id"),
        Some(format!("docker://{ID}").as_str())
    );
    assert_eq!(s.label("unit"), Some(format!("docker-{ID}.scope").as_str()));
}

#[test]
fn container_labels_on_series_and_samples() {
    if !require_privileges("container_labels_on_series_and_samples") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("fleet_cgroup_labels");
    let exe = compile_c("hot", &dir);
    let top = format!("perf-user-fleet-{}", std::process::id());
    let path = format!("/{top}/docker-{ID}.scope");
    let mut groups = Cgroups::new();
    let w = Workload::spawn(&exe, &["300"]);
    let pid = w.pid();
    groups.run_in(&path[1..], w);
    let config = cpu_config(&dir, "5s", "");
    let mut daemon = Daemon::start(&["--collectors", "cpu", "--config", &config]);

    // The series of its hot function carries the labels.
    let want = format!(
        "function=\"burn_cpu_hot\",module=\"hot\",cgroup=\"{path}\",container_id=\"docker://{ID}\",unit=\"docker-{ID}.scope\"}}"
    );
    let scrape = daemon.wait_for(
        "the hot function's series with its cgroup",
        Duration::from_secs(120),
        |s| {
            s.lines()
                .any(|l| l.starts_with("perf_user_cpu_hotspot_self_ratio{") && l.contains(&want))
        },
    );
    promtool_accepts(&scrape);

    // So do its samples in a profile.
    let r = curl(&daemon.url("/debug/pprof/profile?seconds=2"), None);
    assert_eq!(r.status, 200);
    let all = samples(&decode(&r.body));
    let mine: Vec<&Sample> = all
        .iter()
        .filter(|s| s.num("pid") == Some(i64::from(pid)))
        .collect();
    assert!(!mine.is_empty(), "no samples of the workload");
    for s in &mine {
        assert_container_labels(s, &path);
        assert!(s.num("tid").is_some_and(|t| t > 0));
        assert_eq!(s.label("process"), Some("hot"));
    }
    assert!(
        mine.iter()
            .any(|s| s.frames.first().is_some_and(|f| f == "burn_cpu_hot"))
    );
    // `cgroup=` selects the subtree.
    let r = curl(
        &daemon.url(&format!("/debug/pprof/profile?seconds=1&cgroup=/{top}")),
        None,
    );
    let sel = samples(&decode(&r.body));
    assert!(!sel.is_empty() && sel.iter().all(|s| s.label("cgroup") == Some(path.as_str())));
}

#[test]
fn cgroups_beyond_the_bound_are_other() {
    if !require_privileges("cgroups_beyond_the_bound_are_other") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("fleet_cgroup_bound");
    let exe = compile_c("hot", &dir);
    let top = format!("perf-user-fleet-bound-{}", std::process::id());
    let mut groups = Cgroups::new();
    for i in 0..4 {
        groups.run_in(&format!("{top}/job{i}"), Workload::spawn(&exe, &["300"]));
    }
    let config = cpu_config(&dir, "5s", "max_label_values = 2\n");
    let mut daemon = Daemon::start(&["--collectors", "cpu", "--config", &config]);
    let dropped = |s: &str| -> f64 {
        s.lines()
            .find_map(|l| l.strip_prefix("perf_user_cpu_label_values_dropped{label=\"cgroup\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let scrape = daemon.wait_for("cgroups folded into other", Duration::from_secs(120), |s| {
        dropped(s) >= 2.0
    });
    println!("cgroup values dropped: {}", dropped(&scrape));
    let cgroups: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("perf_user_cpu_hotspot_self_ratio{"))
        .filter_map(|l| l.split("cgroup=\"").nth(1)?.split('"').next())
        .filter(|c| !c.is_empty())
        .collect();
    assert!(cgroups.contains("other"), "{cgroups:?}");
    assert!(
        cgroups.len() <= 3,
        "at most 2 values and other: {cgroups:?}"
    );
    promtool_accepts(&scrape);
    let r = curl(&daemon.url("/debug/pprof/profile?seconds=2"), None);
    let values: std::collections::BTreeSet<String> = samples(&decode(&r.body))
        .iter()
        .filter_map(|s| s.label("cgroup").map(str::to_string))
        .collect();
    assert!(values.contains("other") && values.len() <= 3, "{values:?}");
}

/// The daemon with only the leaks collector, tracing `processes` (TOML
/// strings, comma-separated).
fn leaks_daemon(dir: &Path, processes: &str) -> Daemon {
    let config = dir.join("leaks.toml");
    std::fs::write(
        &config,
        format!("[collectors.leaks]\nenabled = true\nprocesses = [{processes}]\n"),
    )
    .unwrap();
    Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--collectors",
        "leaks",
    ])
}

#[test]
fn heap_profile_of_a_leaking_process() {
    if !require_privileges("heap_profile_of_a_leaking_process") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("fleet_heap");
    let mut leaky = Leaky::spawn(&dir, &["malloc", "500", "64"]);
    let mut daemon = leaks_daemon(&dir, "\"leaky\"");
    daemon.wait_for("attaching to leaky", Duration::from_secs(60), |s| {
        s.lines().any(|l| {
            l.starts_with("perf_user_leak_traced_processes{process=\"leaky\",")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(1.0)
        })
    });
    leaky.run();
    let r = curl(&daemon.url("/debug/pprof/heap"), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.content_type, "application/octet-stream");
    let p = decode(&r.body);
    let types: Vec<&str> = p
        .sample_type
        .iter()
        .map(|t| p.string_table[t.r#type as usize].as_str())
        .collect();
    assert_eq!(types, ["inuse_objects", "inuse_space"]);
    let leaked: Vec<Sample> = samples(&p)
        .into_iter()
        .filter(|s| s.frames.iter().any(|f| f == "leak_malloc_blocks"))
        .collect();
    let objects: i64 = leaked.iter().map(|s| s.values[0]).sum();
    let space: i64 = leaked.iter().map(|s| s.values[1]).sum();
    assert_eq!(
        (objects, space),
        (500, 500 * 64),
        "in use from leak_malloc_blocks"
    );
    assert!(
        leaked
            .iter()
            .all(|s| s.num("pid") == Some(i64::from(leaky.workload.pid())))
    );

    let url = daemon.url("/debug/pprof/heap");
    let top = go_pprof(&dir, &["-top", "-sample_index=inuse_space", &url]);
    println!("{}", truncate(&top, 1500));
    assert!(top.contains("leak_malloc_blocks"), "{top}");
}

#[test]
fn container_labels_on_leak_series_and_heap_samples() {
    if !require_privileges("container_labels_on_leak_series_and_heap_samples") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("fleet_leak_labels");
    let top = format!("perf-user-fleet-leaks-{}", std::process::id());
    let path = format!("/{top}/docker-{ID}.scope");
    // Declared first, dropped last: the cgroup is removed once leaky is gone.
    let mut groups = Cgroups::new();
    let mut leaky = Leaky::spawn(&dir, &["malloc", "300", "64"]);
    groups.enter(&path[1..], leaky.workload.pid());
    let mut daemon = leaks_daemon(&dir, "\"leaky\", \"absent\"");
    let want = format!(
        "process=\"leaky\",cgroup=\"{path}\",container_id=\"docker://{ID}\",unit=\"docker-{ID}.scope\"}}"
    );
    daemon.wait_for(
        "leaky traced, with its container labels",
        Duration::from_secs(60),
        |s| s.contains(&format!("perf_user_leak_traced_processes{{{want} 1")),
    );
    leaky.run();
    let scrape = daemon.wait_for(
        "its 300 outstanding allocations under its labels",
        Duration::from_secs(30),
        |s| {
            s.lines().any(|l| {
                l.starts_with("perf_user_leak_outstanding_allocations{")
                    && l.contains(&want)
                    && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(300.0)
            })
        },
    );
    // A configured name with nothing to trace keeps its zero series.
    assert!(
        scrape.contains(
            "perf_user_leak_traced_processes{process=\"absent\",cgroup=\"\",container_id=\"\",unit=\"\"} 0"
        ),
        "{scrape}"
    );
    assert!(
        scrape.contains("perf_user_leak_label_values_dropped{label=\"cgroup\"} 0"),
        "{scrape}"
    );
    promtool_accepts(&scrape);

    let r = curl(&daemon.url("/debug/pprof/heap"), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mine: Vec<Sample> = samples(&decode(&r.body))
        .into_iter()
        .filter(|s| s.frames.iter().any(|f| f == "leak_malloc_blocks"))
        .collect();
    assert!(!mine.is_empty(), "no heap samples from leak_malloc_blocks");
    for s in &mine {
        assert_container_labels(s, &path);
    }
    drop(daemon);
    drop(leaky);
}
