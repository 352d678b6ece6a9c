//! `perf-user profile --off-cpu` and `--wall` (issue 16) against real
//! workloads (`workloads/offcpu.c`, built without frame pointers), each
//! checked against an oracle of its own: the time the workload measured
//! itself around its sleeps, reads and lock waits, the block latency
//! histogram of `perf-user latency --block` over the same reads, the
//! target's own context switch counts (/proc), and the duty cycle a program
//! keeps by its own CPU clock.
//!
//! Needs root (fails without it unless PERF_USER_SKIP_PRIVILEGED=1).

mod common;
#[path = "common/latency.rs"]
mod latency_common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use latency_common::*;
use serde_json::Value;

/// Sleeps of the nap workload, and how long each is.
const NAPS: u64 = 20;
const NAP_MS: u64 = 100;

/// gcc flags of the workload: no frame pointers, so that only the unwind
/// tables find the callers of a blocked thread (the noinline functions and
/// the clock read after each call keep every call a frame).
const WORKLOAD_FLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fomit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-pthread",
];

fn build_workload(dir: &Path) -> PathBuf {
    compile_c_with("offcpu", dir, WORKLOAD_FLAGS)
}

/// What a workload measured itself: time inside the calls it makes (ns)
/// and how many it made.
#[derive(Debug)]
struct Measured {
    ns: u64,
    ops: u64,
    /// The reader's wait for a CPU meanwhile (`read` only).
    run_delay_ns: Option<u64>,
}

/// A workload of `offcpu.c` that waits for a byte on its standard input
/// before it starts; killed when dropped.
struct Paused {
    workload: Workload,
    stdin: Option<ChildStdin>,
}

impl Paused {
    fn spawn(exe: &Path, args: &[&str]) -> Self {
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let mut workload = Workload {
            child,
            name: format!("{} {}", exe.display(), args.join(" ")),
        };
        let stdin = workload.child.stdin.take();
        Paused { workload, stdin }
    }

    fn pid(&self) -> u32 {
        self.workload.pid()
    }

    /// Lets it start.
    fn go(&mut self) {
        self.workload.assert_running();
        self.stdin
            .take()
            .expect("go twice")
            .write_all(b"g")
            .expect("write the go byte");
    }

    /// Waits for it to finish (`timeout` at most) and reads what it
    /// measured.
    fn finish(mut self, timeout: Duration) -> Measured {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.workload.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish within {timeout:?}",
                self.workload.name
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let (mut out, mut err) = (String::new(), String::new());
        let child = &mut self.workload.child;
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            status.success(),
            "{} failed ({status}): {out}{err}",
            self.workload.name
        );
        let field = |name: &str| -> Option<u64> {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
        };
        let needed = |name: &str| -> u64 {
            field(name).unwrap_or_else(|| {
                panic!("no {name}= in the output of {}: {out}", self.workload.name)
            })
        };
        Measured {
            ns: needed("measured_ns"),
            ops: needed("ops"),
            run_delay_ns: field("run_delay_ns"),
        }
    }
}

/// Starts `perf-user profile <args> --format json --output <out>` and waits
/// until its sched_switch program is attached (a BTF tracepoint's
/// raw_tracepoint link, or a classic one's perf event).
fn start_attached(args: &[&str], out: &Path, tracepoints: &str) -> Running {
    let mut all = args.to_vec();
    all.extend(["--tracepoints", tracepoints, "--format", "json", "--quiet"]);
    let mut run = start_profiler(&all, out);
    let pid = run.child.id();
    let timeout = Duration::from_secs(60);
    let attached = match tracepoints {
        "classic" => wait_for_perf_event_count(pid, 1, timeout),
        _ => wait_for_bpf_link(pid, "raw_tracepoint", timeout),
    };
    if !attached {
        let alive = run.is_running();
        let out = run.finish(Duration::ZERO);
        panic!(
            "perf-user profile {args:?} did not attach its sched_switch program within \
             {timeout:?} (still running: {alive})\n{}",
            out.describe()
        );
    }
    run
}

/// Waits for the profiler and parses its JSON document.
fn finish_json(run: Running, out: &Path) -> (Value, CmdOutput) {
    let run = run.finish(PROFILER_TIMEOUT);
    let bytes = profiler_output(&run, out);
    let doc = parse_json(&bytes, &run);
    (doc, run)
}

/// A stack's off-CPU state ("sleeping", "disk", ..., "on-cpu").
fn state(stack: &Value) -> &str {
    stack["state"].as_str().unwrap_or("none")
}

/// Whether a frame's name satisfies `pred`.
fn has_frame(stack: &Value, pred: impl Fn(&str) -> bool) -> bool {
    frame_names(stack).iter().any(|n| pred(n))
}

/// Microseconds of `stacks`.
fn total_us(stacks: &[&Value]) -> u64 {
    stacks.iter().map(|s| count(s)).sum()
}

/// Microseconds per state of `stacks`.
fn per_state(stacks: &[&Value]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in stacks {
        *m.entry(state(s).to_string()).or_default() += count(s);
    }
    m
}

/// The document's `off_cpu` counter `name`.
fn counter(doc: &Value, name: &str) -> u64 {
    doc["off_cpu"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("off_cpu.{name} missing: {}", doc["off_cpu"]))
}

/// Context switches of all threads of `pid` so far (/proc).
fn context_switches(pid: u32) -> u64 {
    let mut n = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read the tasks") {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        n += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    n
}

/// The nap workload (`NAPS` sleeps of `NAP_MS` in nap_in_known_function),
/// started once the profiler is attached and profiled with `--duration
/// 60s`, which ends early when the process exits: the profile sees every
/// sleep. Returns the document, the PID and what the workload measured.
fn profile_naps(test: &str, tracepoints: &[&str]) -> (Vec<Value>, u32, Measured) {
    let dir = test_dir(test);
    let exe = build_workload(&dir);
    let nap = Paused::spawn(&exe, &["nap", &NAPS.to_string(), &NAP_MS.to_string()]);
    let pid = nap.pid();
    let (docs, measured) = profile_paused(nap, &dir, tracepoints);
    assert_eq!(measured.ops, NAPS);
    (docs, pid, measured)
}

/// `profile --off-cpu --pid` of a paused workload, one profiler per kind
/// of `tracepoints` at the same time, started once they are attached, with
/// `--duration 60s`: each profile ends when the workload exits and sees all
/// it did. Returns their documents and what the workload measured.
fn profile_paused(mut w: Paused, dir: &Path, tracepoints: &[&str]) -> (Vec<Value>, Measured) {
    let pid = w.pid().to_string();
    let runs: Vec<(Running, PathBuf, &str)> = tracepoints
        .iter()
        .map(|&tp| {
            let out = dir.join(format!("offcpu-{tp}.json"));
            let args = ["--off-cpu", "--pid", &pid, "--duration", "60s"];
            (start_attached(&args, &out, tp), out, tp)
        })
        .collect();
    w.go();
    let measured = w.finish(Duration::from_secs(60));
    let docs = runs
        .into_iter()
        .map(|(run, out, tp)| {
            let (doc, run) = finish_json(run, &out);
            assert!(
                run.stderr.contains("All selected processes exited"),
                "the profile did not end with the workload\n{}",
                run.describe()
            );
            assert_eq!(doc["kind"], "off-cpu", "{}", run.describe());
            assert_eq!(doc["off_cpu"]["tracepoints"], tp, "{}", doc["off_cpu"]);
            doc
        })
        .collect();
    (docs, measured)
}

/// Microseconds the nap workload slept in nanosleep: its stacks through
/// the kernel's do_nanosleep, in the sleeping state. Kernel stacks are
/// walked alike by both programs, and the wait for the go byte (pipe_read)
/// is left out.
fn nanosleep_us(doc: &Value, pid: u32) -> u64 {
    let naps: Vec<&Value> = stacks_of(doc, pid)
        .into_iter()
        .filter(|s| has_frame(s, |n| n == "do_nanosleep"))
        .collect();
    let states = per_state(&naps);
    assert_eq!(
        states.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sleeping"],
        "nanosleep in states other than sleeping: {states:?}\n{}",
        summarize(doc, 10)
    );
    total_us(&naps)
}

/// Check 1: 20 sleeps of 100 ms in a noinline function of a program built
/// without frame pointers give 2 s (at least the 2 s asked, and within 10%
/// of what the program measured around its nanosleep calls, which a
/// loaded machine makes longer) of sleeping off-CPU time
/// whose stacks, walked with the unwind tables on the BTF tracepoint, run
/// main -> run_naps -> nap_in_known_function -> libc -> do_nanosleep.
#[test]
fn sleeps_are_timed_under_their_function() {
    if !require_privileges("sleeps_are_timed_under_their_function") {
        return;
    }
    let _guard = exclusive();
    let (docs, pid, measured) = profile_naps("offcpu_naps", &["btf"]);
    let doc = &docs[0];
    let ctx = summarize(doc, 10);
    let in_function = |n: &str| n == "nap_in_known_function";
    let under: Vec<&Value> = stacks_of(doc, pid)
        .into_iter()
        .filter(|s| has_frame(s, in_function))
        .collect();
    let states = per_state(&under);
    let sleeping = states.get("sleeping").copied().unwrap_or(0);
    let expected = NAPS * NAP_MS * 1_000;
    let measured_us = measured.ns / 1_000;
    eprintln!(
        "naps: {:.3} s sleeping under nap_in_known_function of {:.3} s asked, {:.3} s measured \
         by the workload; states {states:?}; off_cpu {}",
        sleeping as f64 / 1e6,
        expected as f64 / 1e6,
        measured_us as f64 / 1e6,
        doc["off_cpu"]
    );
    // The workload's clock is the oracle: on this shared machine a wake-up
    // can come tens of ms late (the sleeps once took 2.46 s in all), and
    // that time is off the CPU too. nanosleep never returns early, so the
    // 2 s asked is a floor; within 10% of it as long as the machine wakes
    // the sleeper within 10 ms.
    let what = "us sleeping under nap_in_known_function vs us measured";
    assert_close(what, sleeping as f64, measured_us as f64, 0.10, &ctx);
    assert!(
        sleeping as f64 >= 0.99 * expected as f64,
        "{sleeping} us sleeping under nap_in_known_function, less than the {expected} us asked\n{ctx}"
    );
    // Nothing else is under it: it does nothing but sleep.
    assert!(
        sleeping as f64 >= 0.99 * total_us(&under) as f64,
        "states under nap_in_known_function: {states:?}\n{ctx}"
    );
    // The whole chain, found by the table walk: frame pointers would stop
    // at libc's nanosleep, a leaf without one.
    let chain: [&dyn Fn(&str) -> bool; 5] = [
        &|n| n == "main",
        &|n| n == "run_naps",
        &in_function,
        &|n| n.contains("nanosleep"),
        &|n| n == "do_nanosleep",
    ];
    let whole: u64 = under
        .iter()
        .filter(|s| state(s) == "sleeping" && has_subsequence(&frame_names(s), &chain))
        .map(|s| count(s))
        .sum();
    assert!(
        whole as f64 >= 0.99 * sleeping as f64,
        "only {whole} of {sleeping} us under main -> run_naps -> nap_in_known_function -> \
         nanosleep -> do_nanosleep\n{ctx}"
    );
    // Scheduler frames are cut: do_nanosleep is the kernel leaf of the
    // sleeps (a preemption elsewhere in the function, runnable, has its own).
    for s in under.iter().filter(|s| state(s) == "sleeping") {
        let leaf = leaf_name(s).unwrap_or_default();
        assert_eq!(leaf, "do_nanosleep", "leaf of {:?}", frame_names(s));
    }
    // The nanosleep time by the kernel frame agrees.
    let by_kernel = nanosleep_us(doc, pid);
    let what = "us through do_nanosleep vs us under nap_in_known_function";
    assert_close(what, by_kernel as f64, sleeping as f64, 0.01, &ctx);
}

/// Check 6: the classic tracepoint's program (frame pointers only, no
/// tables, so only totals compare) times the same sleeps as the BTF one:
/// both profile the nap workload at the same time, and their nanosleep
/// totals (by the kernel frame do_nanosleep, which both walk) are within
/// 10% of each other and of what the workload measured.
#[test]
fn classic_tracepoint_times_sleeps_as_btf_does() {
    if !require_privileges("classic_tracepoint_times_sleeps_as_btf_does") {
        return;
    }
    let _guard = exclusive();
    let kinds = ["btf", "classic"];
    let (docs, pid, measured) = profile_naps("offcpu_naps_both", &kinds);
    let mut totals = Vec::new();
    for (tp, doc) in kinds.iter().zip(&docs) {
        let us = nanosleep_us(doc, pid);
        eprintln!(
            "{tp}: {:.3} s in nanosleep, {:.3} s measured by the workload; off_cpu {}",
            us as f64 / 1e6,
            measured.ns as f64 / 1e9,
            doc["off_cpu"]
        );
        let what = format!("{tp}: us in nanosleep vs us measured by the workload");
        let ctx = summarize(doc, 10);
        assert_close(&what, us as f64, measured.ns as f64 / 1e3, 0.10, &ctx);
        totals.push(us);
    }
    let what = "us in nanosleep, classic vs btf";
    assert_close(what, totals[1] as f64, totals[0] as f64, 0.10, "");
}

/// Reads of the disk test, their size, and the read rate the backing disk
/// is throttled to for the reader (so each read waits about 50 ms).
const READS: u64 = 40;
const READ_BS: u64 = 4096;
const READ_IOPS: u64 = 20;

/// Check 2: O_DIRECT preads of a loop device whose backing disk is
/// throttled for the reader (blkio/io cgroup read IOPS limit: the loop
/// worker's reads of the backing file are charged to the reader's cgroup,
/// so each loop request waits on the throttle between its issue and its
/// completion, as on a slow disk) are disk-state off-CPU time under
/// read_direct_blocks -> pread. Less the reader's wait for a CPU after
/// each wake-up (its schedstat run delay), that time is within 5% of the
/// total latency (reads x mean) of the same reads in `perf-user latency
/// --block --device loopN` run at the same time (within 15% as it is), and
/// within 10% of the workload's own clock around its preads.
#[test]
fn disk_waits_agree_with_block_latency() {
    if !require_privileges("disk_waits_agree_with_block_latency") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("offcpu_disk");
    let lo = LoopDevice::create(&dir, 16);
    // Data to read: a hole of the sparse backing file reads as zeros
    // without touching the disk.
    run(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", lo.path),
            "bs=4k",
            &format!("count={READS}"),
            "oflag=direct",
            "status=none",
        ],
    );
    // udev probes a device written to when it is closed.
    run_quiet("udevadm", &["settle", "--timeout=5"]);
    let throttle = Throttle::create(
        &format!("perf-user-offcpu-{}", std::process::id()),
        &dev_numbers(&disk_of(&dir)),
    );
    throttle.set_read_iops(Some(READ_IOPS));
    let exe = build_workload(&dir);
    let reader = Paused::spawn(
        &exe,
        &["read", &lo.path, &READS.to_string(), &READ_BS.to_string()],
    );
    throttle.add(reader.pid());
    let pid = reader.pid();

    let mut latency = LatencyRun::start(&[
        "--block",
        "--device",
        &lo.name,
        "--duration",
        "10m",
        "--format",
        "json",
    ]);
    latency.wait_ready(Duration::from_secs(30));
    let (docs, measured) = profile_paused(reader, &dir, &["btf"]);
    let doc = &docs[0];
    let (lat_doc, lat) = latency.interrupt_json();
    let read = lat_doc["block"]["series"]
        .as_array()
        .expect("block.series")
        .iter()
        .find(|s| s["device"] == lo.name.as_str() && s["op"] == "read")
        .unwrap_or_else(|| panic!("no read series for {}\n{}", lo.name, lat.describe()));
    assert_eq!(read["latency"]["unit"], "us");
    let lat_count = read["latency"]["count"].as_u64().unwrap();
    let lat_sum_us = read["latency"]["sum"].as_f64().unwrap();
    assert!(lat_count > 0, "no reads timed\n{}", lat.describe());
    // The measure of the total I/O wait: the number of reads made
    // times their mean latency (robust to a read the histogram missed).
    let lat_total_us = measured.ops as f64 * lat_sum_us / lat_count as f64;

    let ctx = summarize(doc, 10);
    let mine = stacks_of(doc, pid);
    let is_read = |s: &&Value| {
        has_frame(s, |n| n == "read_direct_blocks") && has_frame(s, |n| n.contains("pread"))
    };
    let under_read: Vec<&Value> = mine.iter().copied().filter(is_read).collect();
    let states = per_state(&under_read);
    let disk_us = states.get("disk").copied().unwrap_or(0);
    let all_disk: u64 = per_state(&mine).get("disk").copied().unwrap_or(0);
    eprintln!(
        "disk: {:.3} s off-CPU in disk under read_direct_blocks -> pread ({:.3} s disk in all), \
         states {states:?}; latency --block: {lat_count} reads, sum {:.3} s, mean {:.1} ms; \
         the workload: {} preads in {:.3} s; latency counters {}",
        disk_us as f64 / 1e6,
        all_disk as f64 / 1e6,
        lat_sum_us / 1e6,
        lat_sum_us / lat_count as f64 / 1e3,
        measured.ops,
        measured.ns as f64 / 1e9,
        lat_doc["block"]["counters"]
    );
    // The throttle worked: reads of ~1/READ_IOPS s each (the first few pass
    // on the group's initial budget).
    assert!(
        measured.ns >= READS * 1_000_000_000 / READ_IOPS / 2,
        "the reads took {} ns: the throttle did not slow them",
        measured.ns
    );
    // On this loaded machine the histogram missed one completion of 40 in
    // about one run of five (issued 40, completed 39, no miss counted):
    // that is latency --block's to explain (reported), not the off-CPU
    // time's; one is let through with a note, more fail.
    if lat_count == READS - 1 {
        eprintln!(
            "NOTE: latency --block timed {lat_count} of {READS} reads: counters {}",
            lat_doc["block"]["counters"]
        );
    }
    assert!(
        (READS - 1..=READS + 2).contains(&lat_count),
        "latency --block counted {lat_count} reads of {} for {READS} preads\n{}",
        lo.name,
        lat.describe()
    );
    assert!(
        disk_us as f64 >= 0.95 * all_disk as f64,
        "disk time outside the reads' stack: {all_disk} us in all, {disk_us} under it\n{ctx}"
    );
    // The reader is off the CPU from just after submitting each read until
    // it runs again after the completion woke it; the block layer times
    // issue to completion. They differ by the submission (microseconds)
    // and by the wait for a CPU after the wake-up, which on this shared,
    // loaded machine reached 3 ms a read (7% of a 50 ms read). That wait
    // is known: the reader's run delay (schedstat) over its reads. Less
    // it, the two agree within 5%; as measured, within 15%.
    let run_delay_us = measured
        .run_delay_ns
        .expect("the reader reports its run delay")
        / 1_000;
    let device_us = disk_us.saturating_sub(run_delay_us);
    eprintln!(
        "disk: {:.3} s off-CPU in disk less {:.3} s waiting for a CPU = {:.3} s, vs {} reads x \
         mean latency = {:.3} s ({:+.1}%); as measured {:+.1}%",
        disk_us as f64 / 1e6,
        run_delay_us as f64 / 1e6,
        device_us as f64 / 1e6,
        measured.ops,
        lat_total_us / 1e6,
        (device_us as f64 / lat_total_us - 1.0) * 100.0,
        (disk_us as f64 / lat_total_us - 1.0) * 100.0
    );
    let what = format!(
        "us off-CPU in disk less {run_delay_us} us waiting for a CPU vs us of read latency"
    );
    assert_close(&what, device_us as f64, lat_total_us, 0.05, &ctx);
    let what = "us off-CPU in disk vs us of read latency";
    assert_close(what, disk_us as f64, lat_total_us, 0.15, &ctx);
    let what = "us off-CPU in disk vs us the workload measured";
    assert_close(what, disk_us as f64, measured.ns as f64 / 1e3, 0.10, &ctx);
}

/// Check 3: a mutex held 50 ms at a time by one thread: the other
/// thread's off-CPU time is sleeping in the lock (wait_for_lock ->
/// pthread_mutex_lock / __lll_lock_wait / futex), within 10% of the time it
/// measured itself inside pthread_mutex_lock.
#[test]
fn contended_mutex_shows_the_lock() {
    if !require_privileges("contended_mutex_shows_the_lock") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("offcpu_mutex");
    let exe = build_workload(&dir);
    let w = Paused::spawn(&exe, &["mutex", "2", "50"]);
    let pid = w.pid();
    let (docs, measured) = profile_paused(w, &dir, &["btf"]);
    let doc = &docs[0];
    let ctx = summarize(doc, 12);
    let waiter: Vec<&Value> = stacks_of(doc, pid)
        .into_iter()
        .filter(|s| s["thread"] == "waiter")
        .collect();
    let is_lock = |n: &str| {
        n.contains("pthread_mutex_lock") || n.contains("__lll_lock_wait") || n.contains("futex")
    };
    let in_lock: Vec<&Value> = waiter
        .iter()
        .copied()
        .filter(|s| has_frame(s, |n| n == "wait_for_lock") && has_frame(s, is_lock))
        .collect();
    let states = per_state(&in_lock);
    let sleeping = states.get("sleeping").copied().unwrap_or(0);
    let waiter_total = total_us(&waiter);
    eprintln!(
        "mutex: waiter {:.3} s sleeping in the lock ({:.3} s off-CPU in all), states {states:?}; \
         the workload: {} acquisitions, {:.3} s inside pthread_mutex_lock",
        sleeping as f64 / 1e6,
        waiter_total as f64 / 1e6,
        measured.ops,
        measured.ns as f64 / 1e9
    );
    let names = in_lock.first().map(|s| frame_names(s)).unwrap_or_default();
    assert!(
        names.iter().any(|n| n.contains("pthread_mutex_lock")),
        "the lock's stack does not name pthread_mutex_lock: {names:?}\n{ctx}"
    );
    // Held 50 ms of each 55: most of the waiter's 2 s is in the lock.
    assert!(
        sleeping >= 1_000_000,
        "only {sleeping} us of the waiter in the lock\n{ctx}"
    );
    assert!(
        sleeping as f64 >= 0.99 * total_us(&in_lock) as f64,
        "the lock wait is not sleeping: {states:?}\n{ctx}"
    );
    let what = "us in the lock vs us the waiter measured";
    assert_close(what, sleeping as f64, measured.ns as f64 / 1e3, 0.10, &ctx);
}

/// Check 4: `--pid` keeps one process's threads, in the kernel: beside a
/// process switching tens of thousands of times a second, `off_cpu.filtered`
/// is at least 90% of `off_cpu.switches`, `recorded` is at most the
/// target's own context switches over the run (/proc) and under 5% of the
/// switches, and every stack is the target's.
#[test]
fn pid_filter_drops_other_processes_in_the_kernel() {
    if !require_privileges("pid_filter_drops_other_processes_in_the_kernel") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("offcpu_filter");
    let exe = build_workload(&dir);
    let busy = Workload::spawn(&exe, &["switch"]);
    // 10 ms naps for 10 s: longer than the profile.
    let mut target = Paused::spawn(&exe, &["nap", "1000", "10"]);
    let pid = target.pid();
    settle();
    let busy_before = context_switches(busy.pid());
    let before = context_switches(pid);
    let out = dir.join("offcpu.json");
    let profile = start_attached(
        &["--off-cpu", "--pid", &pid.to_string(), "--duration", "2s"],
        &out,
        "btf",
    );
    target.go();
    let (doc, _run) = finish_json(profile, &out);
    let target_switches = context_switches(pid) - before;
    let busy_switches = context_switches(busy.pid()) - busy_before;
    drop(target);
    let ctx = format!("off_cpu {}\n{}", doc["off_cpu"], summarize(&doc, 10));
    let (switches, filtered, recorded) = (
        counter(&doc, "switches"),
        counter(&doc, "filtered"),
        counter(&doc, "recorded"),
    );
    eprintln!(
        "filter: {switches} switches, {filtered} filtered ({:.2}%), {recorded} recorded; \
         the target switched {target_switches} times, the busy process {busy_switches} times, \
         over the run",
        filtered as f64 * 100.0 / switches.max(1) as f64
    );
    assert!(
        busy_switches >= 20_000,
        "the busy process switched only {busy_switches} times\n{ctx}"
    );
    assert!(
        filtered as f64 >= 0.90 * switches as f64,
        "{filtered} of {switches} switches filtered\n{ctx}"
    );
    assert!(
        recorded >= 50 && recorded <= target_switches,
        "{recorded} recorded; the target switched {target_switches} times\n{ctx}"
    );
    assert!(
        (recorded as f64) < 0.05 * switches as f64,
        "{recorded} of {switches} recorded\n{ctx}"
    );
    let stacks = stacks(&doc);
    assert!(!stacks.is_empty(), "no stacks\n{ctx}");
    for s in stacks {
        assert_eq!(
            s["pid"].as_u64(),
            Some(u64::from(pid)),
            "a stack of another process: {s}\n{ctx}"
        );
    }
}

/// Time on the CPU and waiting on a run queue (ns) of each thread of
/// `pid`, by name, from /proc/PID/task/TID/schedstat.
fn schedstats(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut m = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read the tasks") {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap();
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap();
        let f: Vec<u64> = stat
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        m.insert(name.trim().to_string(), (f[0], f[1]));
    }
    m
}

/// Check 5: `--wall --pid` on two threads that each burn 50 ms of CPU (by
/// their own CPU clock) then sleep 50 ms. Each thread's time adds up to the
/// profile's duration (within 10%), and the two threads' to twice it. Its
/// on-cpu time (samples at 999 Hz as time) is within 15% of the CPU time
/// the kernel accounted it over the same window (schedstat), and its
/// runnable time (preempted) at most the run-queue wait the kernel
/// accounted. The machine is shared, so a thread may wait for a CPU a
/// good part of the time: of the rest, on-cpu and sleeping are each half
/// (35% to 65%); on an idle machine that is half the wall time.
#[test]
fn wall_time_splits_into_on_cpu_and_sleeping() {
    if !require_privileges("wall_time_splits_into_on_cpu_and_sleeping") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("offcpu_wall");
    let exe = build_workload(&dir);
    let mut w = Workload::spawn(&exe, &["halfburn", "2", "50", "50"]);
    settle();
    let pid = w.pid();
    let out = dir.join("wall.json");
    let secs = 4;
    let profile = start_attached(
        &[
            "--wall",
            "--pid",
            &pid.to_string(),
            "--duration",
            &format!("{secs}s"),
            "--frequency",
            "999",
        ],
        &out,
        "btf",
    );
    // The window starts once the off-CPU program is attached, and lasts
    // the duration.
    let before = schedstats(pid);
    std::thread::sleep(Duration::from_secs(secs));
    let after = schedstats(pid);
    let (doc, run) = finish_json(profile, &out);
    w.assert_running();
    assert_eq!(doc["kind"], "wall", "{}", run.describe());
    let duration_us = doc["duration_secs"].as_f64().unwrap() * 1e6;
    let ctx = summarize(&doc, 12);
    let mine = stacks_of(&doc, pid);
    let mut burners_us = 0;
    for name in ["burner0", "burner1"] {
        let thread: Vec<&Value> = mine
            .iter()
            .copied()
            .filter(|s| s["thread"] == name)
            .collect();
        let states = per_state(&thread);
        let total = total_us(&thread);
        burners_us += total;
        let us = |st: &str| states.get(st).copied().unwrap_or(0);
        let (on_cpu_ns, run_delay_ns) = {
            let (a, b) = (before[name], after[name]);
            (a.0.abs_diff(b.0), a.1.abs_diff(b.1))
        };
        let not_waiting_for_cpu = (us("on-cpu") + us("sleeping")) as f64;
        let share = |st: &str| us(st) as f64 / not_waiting_for_cpu.max(1.0);
        eprintln!(
            "wall: {name} {:.3} s of {:.3} s: {states:?}; on-cpu {:.1}%, sleeping {:.1}% of \
             the time not waiting for a CPU; schedstat: {:.3} s on the CPU, {:.3} s waiting \
             for one",
            total as f64 / 1e6,
            duration_us / 1e6,
            share("on-cpu") * 100.0,
            share("sleeping") * 100.0,
            on_cpu_ns as f64 / 1e9,
            run_delay_ns as f64 / 1e9
        );
        let what = format!("{name}: us in all vs us of the duration");
        assert_close(&what, total as f64, duration_us, 0.10, &ctx);
        let what = format!("{name}: us on-cpu vs us on the CPU per schedstat");
        assert_close(
            &what,
            us("on-cpu") as f64,
            on_cpu_ns as f64 / 1e3,
            0.15,
            &ctx,
        );
        assert!(
            us("runnable") as f64 <= run_delay_ns as f64 / 1e3 * 1.1 + 20_000.0,
            "{name}: runnable {} us, but it waited {run_delay_ns} ns for a CPU per schedstat\n{ctx}",
            us("runnable")
        );
        for st in ["on-cpu", "sleeping"] {
            assert!(
                (0.35..=0.65).contains(&share(st)),
                "{name}: {st} {:.1}% of its time not waiting for a CPU: {states:?}\n{ctx}",
                share(st) * 100.0
            );
        }
        // The on-CPU time is where it burns, the sleeping where it sleeps.
        let burn: u64 = thread
            .iter()
            .filter(|s| state(s) == "on-cpu" && has_frame(s, |n| n == "burn_cpu"))
            .map(|s| count(s))
            .sum();
        assert!(
            burn as f64 >= 0.9 * us("on-cpu") as f64,
            "{name}: {burn} us of on-cpu in burn_cpu: {states:?}\n{ctx}"
        );
        let rest: u64 = thread
            .iter()
            .filter(|s| state(s) == "sleeping" && has_frame(s, |n| n == "sleep_a_while"))
            .map(|s| count(s))
            .sum();
        assert!(
            rest as f64 >= 0.99 * us("sleeping") as f64,
            "{name}: {rest} us of sleeping in sleep_a_while: {states:?}\n{ctx}"
        );
    }
    eprintln!(
        "wall: the burners {:.3} s in all over 2 x {:.3} s; the whole process {:.3} s",
        burners_us as f64 / 1e6,
        duration_us / 1e6,
        total_us(&mine) as f64 / 1e6
    );
    let what = "us of the 2 burners vs 2 x us of the duration";
    assert_close(what, burners_us as f64, 2.0 * duration_us, 0.10, &ctx);
}
