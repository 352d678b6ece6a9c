//! Alerts end to end, with anomalies injected by real mechanisms and the
//! detection time of each measured:
//!
//! - disk latency: direct-I/O writers on a loop device whose backing disk
//!   is then throttled for them (blkio/io cgroup write limit), so each loop
//!   request waits for the throttled backing writes. The daemon must stay
//!   quiet for a steady minute first (false positives), fire the threshold
//!   and the learned-baseline rules, post to a real Alertmanager that then
//!   lists the alert (GET /api/v2/alerts), and resolve once the limit goes.
//! - TCP RTT: a steady sender between two network namespaces, then a tbf
//!   rate limit below its rate on the sender's veth: the queue raises the
//!   RTT; the baseline rule fires, and resolves when the limit is removed.
//! - `advise --apply` then `revert` on a loop device's queue settings
//!   restores the exact prior values (set to unusual ones first).
//! - leaks: a program whose heap grows and one whose heap churns at a
//!   constant size (tests/workloads/heap_growth.c): `advise --pid` fires on
//!   the growing one's stack, with the time to exhaust memory, and not on the
//!   steady one; the daemon's leak tracing (by process name) likewise.
//!
//! The measured times are printed (run with --nocapture) and written to
//! `alerts-measurements.json` in each test's directory.
//!
//! Needs root (fails without it unless PERF_USER_SKIP_PRIVILEGED=1), and the
//! Debian package prometheus-alertmanager (`cargo xtask test` installs it).

mod common;
#[path = "common/latency.rs"]
mod latency_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use latency_common::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Small helpers.

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; the pid (or process
    // group) is one this test started.
    unsafe { libc::kill(pid, sig) };
}

/// GET `url` and parse the body as JSON (a small runtime per call: these
/// tests are synchronous).
fn get_json(url: &str) -> Result<Value, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let r = client.get(url).send().await.map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    })
}

fn get_text(url: &str) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let r = reqwest::get(url).await.map_err(|e| e.to_string())?;
        r.text().await.map_err(|e| e.to_string())
    })
}

fn queue_file(disk: &str, attr: &str) -> PathBuf {
    PathBuf::from(format!("/sys/block/{disk}/queue/{attr}"))
}

fn read_queue(disk: &str, attr: &str) -> String {
    std::fs::read_to_string(queue_file(disk, attr))
        .unwrap_or_else(|e| panic!("read {attr} of {disk}: {e}"))
}

fn write_queue(disk: &str, attr: &str, value: &str) {
    std::fs::write(queue_file(disk, attr), value)
        .unwrap_or_else(|e| panic!("write {value} to {attr} of {disk}: {e}"));
}

/// Saves the measurements of a test where the report can find them.
fn save_measurements(dir: &Path, v: &Value) {
    let text = serde_json::to_string_pretty(v).unwrap();
    eprintln!("measurements: {text}");
    std::fs::write(dir.join("alerts-measurements.json"), text).unwrap();
}

/// `n` processes writing 256 KiB direct I/Os to `device` in a loop, each in
/// its own region, all inside `throttle`'s group; killed on drop.
struct Writers(Vec<Child>);

impl Writers {
    fn start(device: &str, n: usize, throttle: &Throttle) -> Self {
        let mut children = Vec::new();
        for i in 0..n {
            let script = format!(
                "read go; while :; do dd if=/dev/zero of={device} bs=256k count=16 seek={} oflag=direct status=none || exit 1; done",
                i * 16
            );
            use std::os::unix::process::CommandExt as _;
            let mut child = Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start a writer");
            // Into the group before the first write.
            throttle.add(child.id());
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"go\n")
                .expect("start the writer");
            children.push(child);
        }
        Writers(children)
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            signal(-(c.id() as i32), libc::SIGKILL);
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Alertmanager.

/// A real Alertmanager on a free port, with a receiver that sends nothing.
struct Alertmanager {
    child: Child,
    url: String,
}

impl Alertmanager {
    fn start(dir: &Path) -> Self {
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\n  group_wait: 1s\nreceivers:\n  - name: \"null\"\n",
        )
        .unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start prometheus-alertmanager ({e}): install the Debian package \
                     prometheus-alertmanager (`cargo xtask test` does)"
                )
            });
        let am = Alertmanager { child, url };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get_text(&format!("{}/-/ready", am.url)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Alertmanager did not get ready in 30 s; see {}",
                dir.join("alertmanager.log").display()
            );
            thread::sleep(Duration::from_millis(200));
        }
        am
    }

    /// The alerts it holds, as its API v2 lists them.
    fn alerts(&self) -> Vec<Value> {
        get_json(&format!("{}/api/v2/alerts", self.url))
            .expect("GET /api/v2/alerts")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The daemon, with its JSON log lines collected as they arrive.

struct Daemon {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<(Instant, Value)>>>,
    raw: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `perf-user run` with this configuration (the listen address is
    /// added) and waits until it serves.
    fn start(dir: &Path, config: &str) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let file = dir.join("perf-user.toml");
        std::fs::write(&file, format!("[exporter]\nlisten = \"{addr}\"\n{config}")).unwrap();
        let mut child = perf_user(&["run", "--log-format", "json", "--config"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start perf-user run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (l, r) = (Arc::clone(&lines), Arc::clone(&raw));
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    l.lock().unwrap().push((Instant::now(), v));
                }
                r.lock().unwrap().push(line);
            }
        });
        let d = Daemon {
            child,
            addr,
            lines,
            raw,
        };
        let serving = d.wait_for(Duration::from_secs(60), |v| {
            v["message"] == "serving /metrics and /healthz"
        });
        assert!(serving.is_some(), "the daemon did not start\n{}", d.log());
        d
    }

    fn log(&self) -> String {
        let raw = self.raw.lock().unwrap();
        let n = raw.len();
        raw[n.saturating_sub(60)..].join("\n")
    }

    /// The first log line (and when it arrived) matching `pred`, waiting up
    /// to `timeout`.
    fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(Instant, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|(_, v)| pred(v))
                .cloned()
            {
                return Some(found);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every alert event so far (`alert pending|firing|resolved`).
    fn alert_events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v)| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("alert "))
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn scrape(&self) -> String {
        get_text(&format!("http://{}/metrics", self.addr)).expect("GET /metrics")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        signal(self.child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_event(v: &Value, message: &str, rule: &str) -> bool {
    v["message"] == message && v["alertname"] == rule
}

/// How long the steady phase of each test lasts: the false-positive check.
const STEADY: Duration = Duration::from_secs(60);

/// A `describe` of the alert events for assertion messages.
fn events_text(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["message"].as_str().unwrap_or(""),
                e["alertname"].as_str().unwrap_or(""),
                e["labels"].as_str().unwrap_or(""),
                e["summary"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// Disk latency.

#[test]
fn disk_latency_rise_fires_reaches_alertmanager_and_resolves() {
    if !require_privileges("disk_latency_rise_fires_reaches_alertmanager_and_resolves") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("alerts-disk");
    let lo = LoopDevice::create(&dir, 256);
    let backing = dev_numbers(&disk_of(&dir));
    let throttle = Throttle::create(
        &format!("perf-user-alerts-{}", std::process::id()),
        &backing,
    );
    let _writers = Writers::start(&lo.path, 8, &throttle);
    let am = Alertmanager::start(&dir);
    let dev = &lo.name;
    // Levels between the steady p99 (a few ms) and the throttled one (about
    // 250 ms), far from both: other I/O on a shared backing disk during the
    // steady minute raises the loop device's p99 to tens of ms at times.
    let daemon = Daemon::start(
        &dir,
        &format!(
            r#"
[collectors.cpu]
enabled = false
[collectors.tcp]
enabled = false
[collectors.block]
devices = ["{dev}"]

[alerts]
evaluation_interval = "2s"

[alerts.webhook]
urls = ["{am}"]
resend_interval = "4s"
labels = {{ test = "alerts-disk" }}

[[alerts.rules]]
name = "TestDiskLatencyHigh"
kind = "threshold"
signal = "block_latency_p99_seconds"
match = {{ device = "{dev}" }}
above = 0.1
clear = 0.05
for = "6s"
min_count = 10

[[alerts.rules]]
name = "TestDiskLatencyAnomaly"
kind = "baseline"
signal = "block_latency_p99_seconds"
match = {{ device = "{dev}" }}
window = "10m"
k = 6
min_delta = 0.03
min_ratio = 5
min_history = 10
for = "4s"
min_count = 10
"#,
            am = am.url
        ),
    );

    // A steady minute: writes at full speed, nothing may fire.
    thread::sleep(STEADY);
    let steady_events = daemon.alert_events();
    let steady_firing: Vec<&Value> = steady_events
        .iter()
        .filter(|e| e["message"] == "alert firing")
        .collect();
    let steady_pending = steady_events
        .iter()
        .filter(|e| e["message"] == "alert pending")
        .count();
    let steady_scrape = daemon.scrape();
    let p99_line = steady_scrape
        .lines()
        .filter(|l| {
            l.starts_with("perf_user_block_io_latency_seconds_count") && l.contains(dev.as_str())
        })
        .collect::<Vec<_>>()
        .join("; ");
    assert!(
        steady_firing.is_empty(),
        "alerts fired during the steady phase (false positives):\n{}\n{}",
        events_text(&steady_events),
        daemon.log()
    );
    assert!(
        !p99_line.is_empty(),
        "no latency series for {dev} in the daemon's metrics:\n{}",
        truncate(&steady_scrape, 3000)
    );

    // The anomaly: the backing disk takes this group's writes at 16 MiB/s.
    let injected = Instant::now();
    throttle.set(Some(16 << 20));
    let wait = Duration::from_secs(60);
    let high = daemon.wait_for(wait, |v| is_event(v, "alert firing", "TestDiskLatencyHigh"));
    let anomaly = daemon.wait_for(wait, |v| {
        is_event(v, "alert firing", "TestDiskLatencyAnomaly")
    });
    let (Some((high_at, high_ev)), Some((anomaly_at, anomaly_ev))) = (high, anomaly) else {
        panic!(
            "the disk latency rise did not fire both rules within {wait:?}:\n{}\n{}",
            events_text(&daemon.alert_events()),
            daemon.log()
        );
    };
    assert!(
        high_ev["labels"].as_str().unwrap().contains(dev.as_str()),
        "{high_ev}"
    );
    for key in ["diagnosis", "advice", "evidence"] {
        assert!(
            high_ev[key].as_str().is_some_and(|s| !s.is_empty()),
            "the firing log line has no {key}: {high_ev}"
        );
    }
    let evidence = high_ev["evidence"].as_str().unwrap();
    assert!(evidence.contains(dev.as_str()), "{evidence}");
    let advice = high_ev["advice"].as_str().unwrap();
    assert!(
        advice.contains(dev.as_str()),
        "advice names the device: {advice}"
    );

    // Alertmanager shows it, with the labels and annotations sent.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (am_at, am_alert) = loop {
        let found = am.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == "TestDiskLatencyHigh" && a["labels"]["device"] == *dev
        });
        if let Some(a) = found {
            break (Instant::now(), a);
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager never listed TestDiskLatencyHigh; it has: {:?}\n{}",
            am.alerts(),
            daemon.log()
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(am_alert["labels"]["severity"], "warning", "{am_alert}");
    assert_eq!(am_alert["labels"]["test"], "alerts-disk", "{am_alert}");
    assert_eq!(am_alert["labels"]["job"], "perf-user", "{am_alert}");
    assert_eq!(am_alert["status"]["state"], "active", "{am_alert}");
    for key in [
        "summary",
        "description",
        "evidence",
        "advice",
        "fingerprint",
    ] {
        assert!(
            am_alert["annotations"][key]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "Alertmanager's alert has no {key} annotation: {am_alert}"
        );
    }
    let scrape = daemon.scrape();
    assert!(
        scrape.contains(
            "perf_user_alerts{alertname=\"TestDiskLatencyHigh\",severity=\"warning\",state=\"firing\"} 1"
        ),
        "{}",
        truncate(&scrape, 4000)
    );

    // The limit goes: both resolve, and Alertmanager hears it.
    let cleared = Instant::now();
    throttle.set(None);
    let wait = Duration::from_secs(60);
    let high_ok = daemon.wait_for(wait, |v| {
        is_event(v, "alert resolved", "TestDiskLatencyHigh")
    });
    let anomaly_ok = daemon.wait_for(wait, |v| {
        is_event(v, "alert resolved", "TestDiskLatencyAnomaly")
    });
    let (Some((high_ok_at, _)), Some((anomaly_ok_at, _))) = (high_ok, anomaly_ok) else {
        panic!(
            "the alerts did not resolve within {wait:?} of removing the limit:\n{}\n{}",
            events_text(&daemon.alert_events()),
            daemon.log()
        );
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let am_resolved_at = loop {
        let still_active = am.alerts().into_iter().any(|a| {
            a["labels"]["alertname"] == "TestDiskLatencyHigh" && a["status"]["state"] == "active"
        });
        if !still_active {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager still lists TestDiskLatencyHigh as active: {:?}",
            am.alerts()
        );
        thread::sleep(Duration::from_millis(200));
    };
    let secs = |later: Instant, earlier: Instant| (later - earlier).as_secs_f64();
    save_measurements(
        &dir,
        &json!({
            "scenario": "loop device, 8 direct-I/O writers of 256 KiB; backing disk throttled to 16 MiB/s for them",
            "evaluation_interval_s": 2,
            "steady_phase_s": STEADY.as_secs(),
            "steady_false_positives_firing": steady_firing.len(),
            "steady_pending_episodes": steady_pending,
            "threshold_rule": {"above_s": 0.1, "for_s": 6, "detected_after_s": secs(high_at, injected), "value": high_ev["value"]},
            "baseline_rule": {"for_s": 4, "detected_after_s": secs(anomaly_at, injected), "value": anomaly_ev["value"], "detail": anomaly_ev["detail"]},
            "alertmanager_listed_after_s": secs(am_at, injected),
            "threshold_resolved_after_s": secs(high_ok_at, cleared),
            "baseline_resolved_after_s": secs(anomaly_ok_at, cleared),
            "alertmanager_cleared_after_s": secs(am_resolved_at, cleared),
        }),
    );
}

// ---------------------------------------------------------------------------
// advise --apply and revert.

#[test]
fn advise_apply_then_revert_restores_the_loop_devices_queue_settings() {
    if !require_privileges("advise_apply_then_revert_restores_the_loop_devices_queue_settings") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("alerts-apply");
    let lo = LoopDevice::create(&dir, 256);
    let dev = lo.name.clone();
    // Unusual values, so restoring the defaults would not pass for restoring these.
    write_queue(&dev, "read_ahead_kb", "384");
    write_queue(&dev, "nr_requests", "100");
    let attrs = ["scheduler", "nr_requests", "read_ahead_kb"];
    let before: Vec<String> = attrs.iter().map(|a| read_queue(&dev, a)).collect();
    assert!(
        before[0].contains("[none]"),
        "loop devices start without a scheduler: {}",
        before[0]
    );

    let backing = dev_numbers(&disk_of(&dir));
    let throttle = Throttle::create(&format!("perf-user-apply-{}", std::process::id()), &backing);
    throttle.set(Some(16 << 20));
    let writers = Writers::start(&lo.path, 32, &throttle);
    let state = dir.join("applied.json");
    let advise = |apply: bool| {
        let mut args = vec![
            "advise",
            "--duration",
            "6s",
            "--collectors",
            "block",
            "--device",
            &dev,
            "--format",
            "json",
            "--state-file",
            state.to_str().unwrap(),
            "--quiet",
        ];
        if apply {
            args.push("--apply");
        }
        let out = run_perf_user(&args, Duration::from_secs(60));
        assert!(
            out.status.success() && !out.timed_out,
            "advise failed\n{}",
            out.describe()
        );
        let doc: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("advise printed no JSON ({e})\n{}", out.describe()));
        (doc, out)
    };

    // Advice only: nothing changes, nothing is recorded.
    let (doc, out) = advise(false);
    let alert = doc["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "DiskLatencyHigh" && a["labels"]["device"] == *dev)
        .unwrap_or_else(|| panic!("no DiskLatencyHigh alert for {dev}\n{}", out.describe()))
        .clone();
    let actions: Vec<&Value> = alert["advice"]["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["action"].is_null())
        .collect();
    assert!(!actions.is_empty(), "no action suggested\n{alert:#}");
    let now: Vec<String> = attrs.iter().map(|a| read_queue(&dev, a)).collect();
    assert_eq!(now, before, "advise without --apply changed settings");
    assert!(
        !state.exists(),
        "advise without --apply wrote {}",
        state.display()
    );

    // --apply: the suggested settings change, and the previous values are saved.
    let (doc, out) = advise(true);
    let changes = doc["applied"]["changes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !changes.is_empty()
            && doc["applied"]["failures"]
                .as_array()
                .is_some_and(|f| f.is_empty()),
        "--apply changed nothing or failed\n{}",
        out.describe()
    );
    let during: Vec<String> = attrs.iter().map(|a| read_queue(&dev, a)).collect();
    assert_ne!(
        during, before,
        "--apply reported changes but the files are as before"
    );
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let entries = recorded["entries"].as_array().unwrap();
    for e in entries {
        let attr = e["setting"]["attribute"].as_str().unwrap();
        let i = attrs.iter().position(|a| *a == attr).unwrap();
        let prior = before[i].trim();
        let prior = if attr == "scheduler" { "none" } else { prior };
        assert_eq!(e["previous"], prior, "{e}");
    }
    drop(writers);

    // revert: exactly the values from before.
    let out = run_perf_user(
        &["revert", "--state-file", state.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "revert failed\n{}", out.describe());
    let after: Vec<String> = attrs.iter().map(|a| read_queue(&dev, a)).collect();
    assert_eq!(
        after,
        before,
        "revert did not restore the exact prior values\n{}",
        out.describe()
    );
    assert!(
        !state.exists(),
        "the state file should be gone once everything is restored"
    );
    save_measurements(
        &dir,
        &json!({
            "before": before,
            "during_apply": during,
            "after_revert": after,
            "applied": changes,
            "revert_output": out.stdout,
        }),
    );
}

// ---------------------------------------------------------------------------
// TCP RTT.

const SERVER: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 232, 0, 2), 5202);

#[test]
fn tcp_rtt_rise_fires_and_resolves() {
    if !require_privileges("tcp_rtt_rise_fires_and_resolves") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("alerts-tcp");
    let link = Link::create("al", "pal", 232);
    let stop = Arc::new(AtomicBool::new(false));

    let b_name = link.b.name.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_stop = Arc::clone(&stop);
    let server = thread::spawn(move || {
        NetNs { name: b_name }.enter_current_thread_keep();
        let l = TcpListener::bind(SERVER).expect("bind in namespace B");
        ready_tx.send(()).unwrap();
        let (mut c, _) = l.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        while !server_stop.load(Ordering::Relaxed) {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    });
    ready_rx.recv().expect("server ready");

    let daemon = Daemon::start(
        &dir,
        &format!(
            r#"
[collectors.cpu]
enabled = false
[collectors.block]
enabled = false
[collectors.tcp]
ports = [{port}]

[alerts]
evaluation_interval = "2s"

[[alerts.rules]]
name = "TestTcpRttAnomaly"
kind = "baseline"
signal = "tcp_rtt_p99_seconds"
match = {{ port = "{port}", side = "remote" }}
window = "10m"
k = 6
min_delta = 0.02
min_ratio = 3
min_history = 10
for = "4s"
min_count = 20
"#,
            port = SERVER.1
        ),
    );

    // A steady sender: 64 KiB every 10 ms (about 50 Mbit/s).
    let a_name = link.a.name.clone();
    let sender_stop = Arc::clone(&stop);
    let sender = thread::spawn(move || {
        NetNs { name: a_name }.enter_current_thread_keep();
        let mut c = TcpStream::connect(SERVER).expect("connect across the veth");
        // A loss-based congestion control fills the bottleneck's queue (what
        // most senders do); BBR, this host's default here, would keep it short.
        let cc = b"cubic";
        // SAFETY: a valid socket fd, and a pointer to `cc.len()` readable bytes.
        let ret = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&c),
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                cc.as_ptr().cast(),
                cc.len() as libc::socklen_t,
            )
        };
        assert_eq!(
            ret,
            0,
            "TCP_CONGESTION cubic: {}",
            std::io::Error::last_os_error()
        );
        let chunk = vec![0u8; 64 * 1024];
        let mut next = Instant::now();
        while !sender_stop.load(Ordering::Relaxed) {
            if c.write_all(&chunk).is_err() {
                break;
            }
            next += Duration::from_millis(10);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            } else {
                next = Instant::now();
            }
        }
    });

    thread::sleep(STEADY);
    let steady_events = daemon.alert_events();
    let steady_firing = steady_events
        .iter()
        .filter(|e| e["message"] == "alert firing")
        .count();
    assert_eq!(
        steady_firing,
        0,
        "alerts fired during the steady phase (false positives):\n{}\n{}",
        events_text(&steady_events),
        daemon.log()
    );

    // 20 Mbit/s, below the sender's rate: the tbf queue (up to 300 ms) fills.
    let injected = Instant::now();
    link.limit_rate("20mbit", "32kb", "300ms");
    let wait = Duration::from_secs(60);
    let Some((fired_at, fired)) =
        daemon.wait_for(wait, |v| is_event(v, "alert firing", "TestTcpRttAnomaly"))
    else {
        panic!(
            "the RTT rise did not fire within {wait:?}:\n{}\n{}",
            events_text(&daemon.alert_events()),
            daemon.log()
        );
    };
    let advice = fired["advice"].as_str().unwrap_or_default();
    assert!(
        advice.contains("qdisc") || advice.contains("BBR") || advice.contains("cake"),
        "the advice should speak of queues and congestion control: {fired}"
    );
    assert!(
        fired["evidence"]
            .as_str()
            .unwrap_or_default()
            .contains(&SERVER.1.to_string()),
        "{fired}"
    );

    let cleared = Instant::now();
    link.a
        .exec("tc", &["qdisc", "del", "dev", &link.a_dev, "root"]);
    let Some((resolved_at, _)) =
        daemon.wait_for(wait, |v| is_event(v, "alert resolved", "TestTcpRttAnomaly"))
    else {
        panic!(
            "the RTT alert did not resolve within {wait:?} of removing the limit:\n{}\n{}",
            events_text(&daemon.alert_events()),
            daemon.log()
        );
    };
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let _ = server.join();
    save_measurements(
        &dir,
        &json!({
            "scenario": "veth between two namespaces, steady 50 Mbit/s sender, then tbf 20mbit (300 ms queue) on the sender's side",
            "evaluation_interval_s": 2,
            "steady_phase_s": STEADY.as_secs(),
            "steady_false_positives_firing": steady_firing,
            "steady_pending_episodes": steady_events.iter().filter(|e| e["message"] == "alert pending").count(),
            "baseline_rule": {"for_s": 4, "detected_after_s": (fired_at - injected).as_secs_f64(), "value": fired["value"], "detail": fired["detail"]},
            "resolved_after_s": (resolved_at - cleared).as_secs_f64(),
        }),
    );
}

// ---------------------------------------------------------------------------
// Leaks.

/// The heap workload built as `name` (its process name), started in `mode`.
fn heap_workload(dir: &Path, name: &str, mode: &str) -> Workload {
    let exe = compile_c("heap_growth", dir);
    let named = dir.join(name);
    std::fs::rename(&exe, &named).unwrap();
    // 64 KiB every 10 ms: 375 MiB/min of growth in "grow" mode.
    Workload::spawn(&named, &[mode, "64", "10"])
}

#[test]
fn advise_fires_on_a_growing_heap_not_on_a_steady_one() {
    if !require_privileges("advise_fires_on_a_growing_heap_not_on_a_steady_one") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("alerts-advise-leak");
    let grow = heap_workload(&dir, "hg_grow", "grow");
    let steady = heap_workload(&dir, "hg_steady", "steady");
    let (gp, sp) = (grow.pid().to_string(), steady.pid().to_string());
    let out = run_perf_user(
        &[
            "advise",
            "--duration",
            "12s",
            "--collectors",
            "block",
            "--pid",
            &gp,
            "--pid",
            &sp,
            "--format",
            "json",
            "--quiet",
        ],
        Duration::from_secs(90),
    );
    assert!(
        out.status.success() && !out.timed_out,
        "advise failed\n{}",
        out.describe()
    );
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("advise printed no JSON ({e})\n{}", out.describe()));
    let leaks: Vec<&Value> = doc["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "MemoryLeak")
        .collect();
    let grown: Vec<&&Value> = leaks
        .iter()
        .filter(|a| a["labels"]["pid"] == gp.as_str())
        .collect();
    assert!(
        leaks.iter().all(|a| a["labels"]["pid"] == gp.as_str()),
        "the steady heap (pid {sp}) raised a leak alert:\n{:#}",
        doc["alerts"]
    );
    assert_eq!(
        grown.len(),
        1,
        "one leaking stack expected:\n{:#}",
        doc["alerts"]
    );
    let a = grown[0];
    let stack: Vec<&str> = a["advice"]["stack"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(stack.contains(&"grow_one"), "{stack:?}");
    let facts = a["advice"]["evidence"].as_array().unwrap();
    let exhaust = facts
        .iter()
        .find(|f| f["name"] == "time until MemAvailable is used up")
        .unwrap_or_else(|| panic!("no time to exhaustion: {a:#}"));
    assert!(
        exhaust["value"].as_str().unwrap().ends_with("at this rate"),
        "{exhaust}"
    );
    // 375 MiB/min is the workload's rate; the slope must be near it.
    let per_min = a["value"].as_f64().unwrap() / (1024.0 * 1024.0);
    assert!(
        (250.0..=450.0).contains(&per_min),
        "growth {per_min:.0} MiB/min\n{a:#}"
    );
    let detected = a["fired_at"].as_f64().unwrap() - doc["started_unix_secs"].as_f64().unwrap();
    save_measurements(
        &dir,
        &json!({
            "scenario": "advise --pid on a heap growing 64 KiB every 10 ms and one churning 64 blocks of 64 KiB",
            "rule": "MemoryLeak (rate, 1 MiB/min)",
            "measured_growth_mib_per_min": per_min,
            "detected_after_s": detected,
            "steady_heap_alerts": leaks.len() - grown.len(),
            "time_to_exhaustion": exhaust["value"],
        }),
    );
}

#[test]
fn daemon_fires_on_a_growing_heap_not_on_a_steady_one() {
    if !require_privileges("daemon_fires_on_a_growing_heap_not_on_a_steady_one") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("alerts-daemon-leak");
    let grow = heap_workload(&dir, "hg_grow", "grow");
    let _steady = heap_workload(&dir, "hg_steady", "steady");
    let daemon = Daemon::start(
        &dir,
        r#"
[collectors.cpu]
enabled = false
[collectors.block]
enabled = false
[collectors.tcp]
enabled = false
[collectors.leaks]
enabled = true
processes = ["hg_grow", "hg_steady"]

[alerts]
evaluation_interval = "2s"

[[alerts.rules]]
name = "TestAllocationsGrowing"
kind = "rate"
signal = "leak_outstanding_allocations"
per_minute = 600
window = "1m"
min_points = 5
for = "4s"
"#,
    );
    let pid = grow.pid() as u64;
    let attached = daemon.wait_for(Duration::from_secs(30), |v| {
        v["message"] == "tracing allocations" && v["pid"] == pid
    });
    let Some((attached_at, _)) = attached else {
        panic!("the daemon did not trace hg_grow\n{}", daemon.log());
    };
    let fired = daemon.wait_for(Duration::from_secs(60), |v| {
        is_event(v, "alert firing", "TestAllocationsGrowing")
    });
    let Some((fired_at, ev)) = fired else {
        panic!(
            "the growing heap did not fire:\n{}\n{}",
            events_text(&daemon.alert_events()),
            daemon.log()
        );
    };
    assert!(ev["labels"].as_str().unwrap().contains("hg_grow"), "{ev}");
    // Let the steady one run as long again: it must stay quiet.
    thread::sleep(Duration::from_secs(30));
    let steady_alerts: Vec<Value> = daemon
        .alert_events()
        .into_iter()
        .filter(|e| {
            e["labels"]
                .as_str()
                .is_some_and(|l| l.contains("hg_steady"))
        })
        .collect();
    assert!(
        steady_alerts.is_empty(),
        "the steady heap raised alerts:\n{}",
        events_text(&steady_alerts)
    );
    let observed = (Instant::now() - attached_at).as_secs_f64();
    save_measurements(
        &dir,
        &json!({
            "scenario": "daemon [collectors.leaks] on hg_grow (100 allocations/s kept) and hg_steady (as many, all freed)",
            "rule": "rate on leak_outstanding_allocations, 600/min over 1 min, min 5 points, for 4 s, evaluated every 2 s",
            "detected_after_attach_s": (fired_at - attached_at).as_secs_f64(),
            "value": ev["value"],
            "steady_heap_observed_s": observed,
            "steady_heap_alerts": steady_alerts.len(),
        }),
    );
}

// ---------------------------------------------------------------------------
// CPU hotspots.

#[test]
fn advise_names_a_hot_function_with_its_stack() {
    if !require_privileges("advise_names_a_hot_function_with_its_stack") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("alerts-advise-hot");
    let exe = compile_c("hot", &dir);
    // One burner per CPU of this small machine, so that the function's share
    // stays well above the rule's 25% whatever else runs.
    let _burners: Vec<Workload> = (0..2).map(|_| Workload::spawn(&exe, &["60"])).collect();
    let out = run_perf_user(
        &[
            "advise",
            "--duration",
            "4s",
            "--collectors",
            "cpu",
            "--format",
            "json",
            "--quiet",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success() && !out.timed_out,
        "advise failed\n{}",
        out.describe()
    );
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("advise printed no JSON ({e})\n{}", out.describe()));
    let hot = doc["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "CpuHotspot" && a["labels"]["function"] == "burn_cpu_hot")
        .unwrap_or_else(|| panic!("no CpuHotspot alert for burn_cpu_hot:\n{doc:#}"));
    let stack: Vec<&str> = hot["advice"]["stack"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = |f: &str| stack.iter().position(|s| *s == f);
    assert!(
        at("outer_caller") < at("middle_caller")
            && at("middle_caller") < at("burn_cpu_hot")
            && at("outer_caller").is_some(),
        "the stack should run outer_caller -> middle_caller -> burn_cpu_hot: {stack:?}"
    );
    assert!(
        hot["advice"]["suggestions"][1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("perf-user profile --pid")),
        "{hot:#}"
    );
    save_measurements(
        &dir,
        &json!({
            "scenario": "two CPU burners, advise --collectors cpu --duration 4s",
            "share": hot["value"],
            "stack": stack,
        }),
    );
}
