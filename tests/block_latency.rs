//! Block I/O latency against the kernel's own accounting (/proc/diskstats):
//! direct I/O with a known request count on the root disk and on a loop
//! device; the histograms' counts per device and operation must match the
//! completed-I/O deltas within 2%, and their summed latency the time spent
//! within 20%.
//!
//! Needs root (fails without it unless PERF_USER_SKIP_PRIVILEGED=1).

mod common;
#[path = "common/latency.rs"]
mod latency_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use latency_common::*;
use perf_user::{
    blockdev,
    collectors::{
        Collector as _,
        block::{BlockCollector, BlockOptions, BlockSnapshot},
        tracepoints::Tracepoints,
    },
};
use serde_json::Value;

/// Requests per direction: enough that stray I/O of other processes on a
/// shared disk stays well under 2% of what is compared.
const IOS: u64 = 2_000;
/// Bytes per request: large enough that the workload's own time dominates
/// what other processes add to the disk's counters meanwhile (writes that go
/// through the flush machinery, for one, are timed by /proc/diskstats up to
/// their post-flush, which no tracepoint shows).
const BS: &str = "bs=64k";

/// Count, summed latency and summed queued time (ns) of `op` on `dev`.
fn totals(snap: &BlockSnapshot, dev: u32, op: &str) -> (u64, u64, u64) {
    snap.series
        .iter()
        .find(|s| s.dev == dev && s.op_name() == op)
        .map_or((0, 0, 0), |s| (s.latency.count, s.latency.sum, s.queue.sum))
}

/// `dd` of `IOS` direct writes of `BS` to `target`, then `IOS` direct reads.
fn direct_io(target: &str) {
    let count = format!("count={IOS}");
    run(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={target}"),
            BS,
            &count,
            "oflag=direct",
            "conv=notrunc",
            "status=none",
        ],
    );
    run(
        "dd",
        &[
            &format!("if={target}"),
            "of=/dev/null",
            BS,
            &count,
            "iflag=direct",
            "status=none",
        ],
    );
}

/// Checks one operation's totals against the diskstats delta. /proc/diskstats
/// times a request from when the kernel starts accounting it
/// (block:block_io_start) to completion, so it is compared with the queued
/// time plus the issue-to-completion latency.
fn check_op(what: &str, ours: (u64, u64, u64), kernel_count: u64, kernel_ms: u64, ctx: &str) {
    let (count, latency_ns, queued_ns) = ours;
    // The workload must be in there (the filesystem may merge some of its
    // requests; diskstats below is the exact oracle).
    assert!(
        count >= IOS / 2,
        "{what}: {count} I/Os recorded for a workload of {IOS}\n{ctx}"
    );
    let d = rel_diff(count as f64, kernel_count as f64);
    assert!(
        d <= 0.02,
        "{what}: {count} I/Os recorded vs {kernel_count} completed per /proc/diskstats ({:.1}% apart)\n{ctx}",
        d * 100.0
    );
    let latency_ms = latency_ns as f64 / 1e6;
    let total_ms = (latency_ns + queued_ns) as f64 / 1e6;
    let d = rel_diff(total_ms, kernel_ms as f64);
    assert!(
        d <= 0.20,
        "{what}: queued + latency {total_ms:.1} ms (latency alone {latency_ms:.1} ms) vs {kernel_ms} ms \
         per /proc/diskstats ({:.1}% apart)\n{ctx}",
        d * 100.0
    );
    // diskstats counts whole milliseconds of a running total: allow 1 ms.
    assert!(
        latency_ms <= kernel_ms as f64 + 1.0,
        "{what}: issue-to-completion {latency_ms:.1} ms exceeds the kernel's {kernel_ms} ms\n{ctx}"
    );
    eprintln!(
        "{what}: {count} I/Os (diskstats {kernel_count}), latency {latency_ms:.1} ms + queued {:.1} ms \
         = {total_ms:.1} ms (diskstats {kernel_ms} ms)",
        total_ms - latency_ms
    );
}

/// Through the library, as the daemon will use it: two reads bracket the
/// workload as tightly as the two diskstats reads do, so stray I/O of other
/// processes on this shared disk is in both or in neither.
#[test]
fn root_disk_matches_diskstats() {
    if !require_privileges("root_disk_matches_diskstats") {
        return;
    }
    root_disk_matches_diskstats_with(Tracepoints::Btf);
}

/// The same with the programs for kernels without BTF, which read the
/// classic tracepoints' records instead of the requests.
#[test]
fn root_disk_matches_diskstats_classic() {
    if !require_privileges("root_disk_matches_diskstats_classic") {
        return;
    }
    root_disk_matches_diskstats_with(Tracepoints::Classic);
}

fn root_disk_matches_diskstats_with(tracepoints: Tracepoints) {
    let _guard = exclusive();
    let dir = test_dir(&format!("block_root_disk_{}", tracepoints.name()));
    let disk = disk_of(&dir);
    let dev = blockdev::resolve(&disk).expect("resolve the root disk").dev;
    let file = dir.join("direct.dat");

    let mut collector = BlockCollector::attach(&BlockOptions {
        devices: vec![dev],
        queue_time: true,
        tracepoints,
    })
    .expect("attach the block collector");
    assert_eq!(
        collector.tracepoints(),
        tracepoints,
        "asked for {tracepoints:?}"
    );
    // Requests in flight when the programs attached are not timed, by
    // design, but diskstats counts them when they complete: wait until they
    // have (the unmatched-completion count stops growing). Under heavy
    // writeback by other processes that can take a while.
    let mut unmatched = u64::MAX;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        let now = collector
            .read()
            .expect("read")
            .counters
            .unmatched_completions;
        if now == unmatched {
            break;
        }
        unmatched = now;
    }
    let before = collector.read().expect("read");
    let d_before = diskstats(&disk);
    direct_io(file.to_str().unwrap());
    let d_after = diskstats(&disk);
    let after = collector.read().expect("read");
    let _ = std::fs::remove_file(&file);
    for (prog, stats) in collector.program_stats() {
        eprintln!("{prog}: {stats:?}");
    }
    eprintln!(
        "counters before {:?}\nafter {:?}",
        before.counters, after.counters
    );

    let kernel = d_after.delta(&d_before);
    let delta = |op| {
        let (c0, l0, q0) = totals(&before, dev, op);
        let (c1, l1, q1) = totals(&after, dev, op);
        (c1 - c0, l1 - l0, q1 - q0)
    };
    let ctx = format!(
        "disk {disk}; diskstats delta {kernel:?}; counters before {:?} after {:?}",
        before.counters, after.counters
    );
    check_op(
        "write",
        delta("write"),
        kernel.writes,
        kernel.write_ms,
        &ctx,
    );
    check_op("read", delta("read"), kernel.reads, kernel.read_ms, &ctx);
    assert_eq!(after.counters.inflight_map_full, 0, "{ctx}");
    assert_eq!(after.counters.histogram_map_full, 0, "{ctx}");

    // reset() starts a new window: nothing from before it is reported.
    collector.reset().expect("reset");
    let empty = collector.read().expect("read");
    let (count, _, _) = totals(&empty, dev, "write");
    assert!(
        count < IOS / 10,
        "{count} writes still reported after reset"
    );
}

/// Through the command, as a user runs it, on a loop device that nothing
/// else touches.
#[test]
fn loop_device_matches_diskstats() {
    if !require_privileges("loop_device_matches_diskstats") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("block_loop");
    let lo = LoopDevice::create(&dir, 192);

    let mut tracer = LatencyRun::start(&[
        "--block",
        "--queued",
        "--device",
        &lo.name,
        "--duration",
        "10m",
        "--format",
        "json",
    ]);
    tracer.wait_ready(Duration::from_secs(30));
    let d_before = diskstats(&lo.name);
    direct_io(&lo.path);
    let d_after = diskstats(&lo.name);
    // Ctrl-C rather than a fixed duration: the workload's length varies
    // with the load of the machine.
    let (doc, out) = tracer.interrupt_json();
    let kernel = d_after.delta(&d_before);
    let ctx = format!("diskstats delta {kernel:?}\n{}", out.describe());
    // This kernel has BTF, so `auto` takes the BTF tracepoints.
    assert_eq!(doc["block"]["tracepoints"], "btf", "{ctx}");
    let series = doc["block"]["series"].as_array().expect("block.series");
    assert!(
        series.iter().all(|s| s["device"] == lo.name.as_str()),
        "--device {} let other devices through\n{ctx}",
        lo.name
    );
    let find = |op: &str| -> (u64, u64, u64) {
        series
            .iter()
            .find(|s| s["op"] == op)
            .map_or((0, 0, 0), |s| {
                let l = &s["latency"];
                assert_eq!(l["unit"], "us");
                let count = l["count"].as_u64().unwrap();
                let buckets: u64 = l["buckets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b["count"].as_u64().unwrap())
                    .sum();
                assert_eq!(buckets, count, "buckets do not add up to the count\n{ctx}");
                let queued = s["queued"]["sum"].as_f64().unwrap_or(0.0);
                (
                    count,
                    (l["sum"].as_f64().unwrap() * 1e3) as u64,
                    (queued * 1e3) as u64,
                )
            })
    };
    check_op(
        "loop write",
        find("write"),
        kernel.writes,
        kernel.write_ms,
        &ctx,
    );
    check_op(
        "loop read",
        find("read"),
        kernel.reads,
        kernel.read_ms,
        &ctx,
    );
    let write = series.iter().find(|s| s["op"] == "write").unwrap();
    assert_eq!(write["size"]["unit"], "KiB");
    assert_eq!(
        write["size"]["max"].as_f64(),
        Some(64.0),
        "dd wrote 64 KiB requests\n{ctx}"
    );
}

/// The table a user reads while dd runs: a histogram for the disk written,
/// also when Ctrl-C ends the run early.
#[test]
fn table_shows_the_disk_written() {
    if !require_privileges("table_shows_the_disk_written") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("block_table");
    let lo = LoopDevice::create(&dir, 16);
    let mut tracer = LatencyRun::start(&["--block", "--duration", "60s"]);
    tracer.wait_ready(Duration::from_secs(30));
    let before = diskstats(&lo.name);
    run(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", lo.path),
            "bs=64k",
            "count=200",
            "oflag=direct",
            "status=none",
        ],
    );
    let writes = diskstats(&lo.name).delta(&before).writes;
    tracer.interrupt();
    let out = tracer.finish(Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("Interrupted after"),
        "no note that Ctrl-C ended the run\n{}",
        out.describe()
    );
    let header = format!("Block I/O latency, device {} (", lo.name);
    let at = out
        .stdout
        .find(&header)
        .unwrap_or_else(|| panic!("no histogram for {}\n{}", lo.name, out.describe()));
    let section = &out.stdout[at..];
    let first = section.lines().next().unwrap();
    let count: u64 = first
        .split(", write: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no write count in {first:?}\n{}", out.describe()));
    assert!(
        writes >= 200 && rel_diff(count as f64, writes as f64) <= 0.02,
        "{count} writes shown, {writes} per /proc/diskstats for 200 dd writes\n{}",
        out.describe()
    );
    assert!(first.contains("p50 ") && first.contains("p99 ") && first.contains("max "));
    assert!(
        section.lines().nth(1).unwrap().contains("usecs") && section.contains("|****"),
        "{}",
        out.describe()
    );
    assert!(
        !section.contains("queued before issue"),
        "queued time shown without --queued\n{}",
        out.describe()
    );
}

/// tracefs unmounted (in a private mount namespace): the command mounts it.
#[test]
fn mounts_tracefs_when_missing() {
    if !require_privileges("mounts_tracefs_when_missing") {
        return;
    }
    let _guard = exclusive();
    if !Path::new("/usr/bin/unshare").exists() {
        panic!("unshare (util-linux) is needed for this test");
    }
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
         test -e /sys/kernel/tracing/events && {{ echo 'tracefs still mounted'; exit 3; }}; \
         {PERF_USER} latency --block --duration 500ms --format json"
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    assert!(
        out.status.success(),
        "perf-user latency without tracefs mounted failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["schema_version"], 1);
}

#[test]
fn bad_device_is_named() {
    let out = run_perf_user(
        &[
            "latency",
            "--block",
            "--device",
            "nosuchdisk0",
            "--duration",
            "1s",
        ],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("no block device named \"nosuchdisk0\""),
        "{}",
        out.describe()
    );
}
