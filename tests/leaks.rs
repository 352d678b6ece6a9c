//! Privileged integration tests of `perf-user leaks`: the real programs,
//! attached to `tests/workloads/leaky.c`, which leaks exactly K blocks of S
//! bytes from known functions while allocating and freeing far more from
//! balanced ones; and to Python growing a list of buffers, as a user would.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Probes `leaks` attaches for glibc as perf events: 8 entry points
/// (memalign is aligned_alloc), 7 return probes, the exec tracepoint.
const GLIBC_PERF_EVENTS: usize = 16;
/// The same as uprobe_multi links: one per program (7 entry programs, one
/// return program, each with all its offsets in libc).
const GLIBC_MULTI_LINKS: usize = 8;

fn leaky(dir: &Path) -> PathBuf {
    compile_c("leaky", dir)
}

/// Runs `perf-user leaks --format json -o DIR/leaks.json ARGS` and parses the report.
fn leaks_json(dir: &Path, args: &[&str]) -> (Value, CmdOutput) {
    let out = dir.join("leaks.json");
    let mut all = vec!["leaks", "--format", "json", "--output"];
    let out_str = out.to_str().unwrap().to_string();
    all.push(&out_str);
    all.extend(args);
    let run = run_perf_user(&all, PROFILER_TIMEOUT);
    let bytes = profiler_output(&run, &out);
    (parse_json(&bytes, &run), run)
}

fn leak_stacks(doc: &Value) -> &[Value] {
    doc["stacks"]
        .as_array()
        .map(Vec::as_slice)
        .expect("the report has no `stacks` array")
}

/// The function that called the allocation function (the leaf frame).
fn caller(stack: &Value) -> String {
    frames(stack).last().map(frame_name).unwrap_or_default()
}

fn bytes(stack: &Value) -> u64 {
    stack["bytes"].as_u64().expect("stack without bytes")
}

fn allocations(stack: &Value) -> u64 {
    stack["allocations"]
        .as_u64()
        .expect("stack without allocations")
}

/// The stacks whose leaf is `function`.
fn from<'a>(doc: &'a Value, function: &str) -> Vec<&'a Value> {
    leak_stacks(doc)
        .iter()
        .filter(|s| caller(s) == function)
        .collect()
}

fn listing(doc: &Value) -> String {
    let mut s = format!(
        "outstanding_bytes={} counters={} ended={}\n",
        doc["outstanding_bytes"], doc["counters"], doc["ended"]
    );
    for stack in leak_stacks(doc).iter().take(15) {
        s.push_str(&format!(
            "  {} bytes in {} via {} [{}]: {}\n",
            stack["bytes"],
            stack["allocations"],
            stack["function"],
            stack["stack"],
            frame_names(stack).join(" ; ")
        ));
    }
    s
}

/// Checks that exactly `k` blocks of `s` bytes are outstanding from
/// `function`, allocated through `via`, in one stack that main leads to.
fn assert_exact(doc: &Value, function: &str, via: &str, k: u64, s: u64, ctx: &str) {
    let found = from(doc, function);
    assert_eq!(
        found.len(),
        1,
        "expected one stack from {function}, found {}\n{ctx}",
        found.len()
    );
    let stack = found[0];
    assert_eq!(
        (bytes(stack), allocations(stack)),
        (k * s, k),
        "{function} leaked {k} blocks of {s} bytes: the report should say {} bytes in {k}\n{ctx}",
        k * s
    );
    assert_eq!(
        stack["function"], via,
        "{function} allocates with {via}\n{ctx}"
    );
    assert!(
        frame_names(stack).iter().any(|n| n == "main"),
        "the stack of {function} should lead back to main\n{ctx}"
    );
}

/// No stack from a balanced function has anything outstanding.
fn assert_balanced(doc: &Value, ctx: &str) {
    for stack in leak_stacks(doc) {
        for name in frame_names(stack) {
            assert!(
                !name.starts_with("balanced_"),
                "{name} frees everything it allocates, yet a stack through it shows {} bytes \
                 outstanding\n{ctx}",
                bytes(stack)
            );
        }
    }
}

fn assert_nothing_lost(doc: &Value, ctx: &str) {
    let c = &doc["counters"];
    for key in [
        "outstanding_map_full",
        "stack_totals_full",
        "pending_full",
        "stack_collisions",
        "stack_errors",
        "read_failed",
        "replaced",
    ] {
        assert_eq!(c[key], 0, "counter {key} should be 0\n{ctx}");
    }
}

/// `leaks -- leaky MODE K S [THREADS]`, which runs to its end.
fn trace_command(test: &str, mode: &str, k: u64, s: u64, extra: &[&str]) -> (Value, String) {
    trace_command_with(test, &[], mode, k, s, extra)
}

/// `leaks OPTIONS -- leaky MODE K S [THREADS]`.
fn trace_command_with(
    test: &str,
    options: &[&str],
    mode: &str,
    k: u64,
    s: u64,
    extra: &[&str],
) -> (Value, String) {
    let dir = test_dir(test);
    let exe = leaky(&dir);
    let (k_s, s_s) = (k.to_string(), s.to_string());
    let mut args: Vec<&str> = options.to_vec();
    args.push("--");
    let exe_s = exe.to_str().unwrap().to_string();
    args.extend([exe_s.as_str(), mode, &k_s, &s_s]);
    args.extend(extra);
    let (doc, run) = leaks_json(&dir, &args);
    let ctx = format!("{}\n{}", listing(&doc), run.describe());
    // The command ran to its end and said so.
    assert_eq!(doc["exit"]["code"], 0, "leaky should exit with 0\n{ctx}");
    let ended = doc["ended"].as_str().unwrap_or_default();
    assert!(
        ended.contains("exited with code 0"),
        "the report should say that the process exited: {ended:?}\n{ctx}"
    );
    assert_eq!(doc["last"], true, "{ctx}");
    assert_eq!(doc["sample_every"], 1, "{ctx}");
    (doc, ctx)
}

#[test]
fn malloc_leak_is_exact_and_balanced_stacks_are_absent() {
    if !require_privileges("malloc_leak_is_exact_and_balanced_stacks_are_absent") {
        return;
    }
    let _lock = exclusive();
    let (doc, ctx) = trace_command("leaks_malloc", "malloc", 1000, 48, &[]);
    assert_exact(&doc, "leak_malloc_blocks", "malloc", 1000, 48, &ctx);
    assert_balanced(&doc, &ctx);
    assert_nothing_lost(&doc, &ctx);
    // The balanced functions did allocate, far more than the leak: 300
    // rounds of 64 + 16 + 16 calls, all seen and freed.
    let c = &doc["counters"];
    let allocs = c["allocs"].as_u64().unwrap();
    let frees = c["frees_matched"].as_u64().unwrap();
    assert!(
        allocs > 30_000 && frees > 29_000,
        "the churn should be seen: {allocs} allocations, {frees} matched frees\n{ctx}"
    );
    assert!(
        doc["allocators"][0]
            .as_str()
            .is_some_and(|a| a.contains("libc")),
        "leaky uses the C library's malloc\n{ctx}"
    );
    // Nothing else of size 48 * 1000: the total is the leak plus the C
    // library's own few buffers.
    let total = doc["outstanding_bytes"].as_u64().unwrap();
    assert!((48_000..48_000 + 64 * 1024).contains(&total), "{ctx}");
}

#[test]
fn calloc_leak_is_exact() {
    if !require_privileges("calloc_leak_is_exact") {
        return;
    }
    let _lock = exclusive();
    let (doc, ctx) = trace_command("leaks_calloc", "calloc", 700, 400, &[]);
    assert_exact(&doc, "leak_calloc_blocks", "calloc", 700, 400, &ctx);
    assert_balanced(&doc, &ctx);
    assert_nothing_lost(&doc, &ctx);
}

#[test]
fn realloc_grow_shrink_null_zero_and_reallocarray_are_exact() {
    if !require_privileges("realloc_grow_shrink_null_zero_and_reallocarray_are_exact") {
        return;
    }
    let _lock = exclusive();
    let (k, s) = (500, 96);
    let (doc, ctx) = trace_command("leaks_realloc", "realloc", k, s, &[]);
    // malloc(8) then realloc to S: only the realloc'd block is outstanding.
    assert_exact(&doc, "leak_realloc_grow", "realloc", k, s, &ctx);
    // malloc(4 S) then realloc down to S.
    assert_exact(&doc, "leak_realloc_shrink", "realloc", k, s, &ctx);
    // realloc(NULL, S) allocates (glibc jumps to malloc: still one call).
    assert_exact(&doc, "leak_realloc_null", "realloc", k, s, &ctx);
    // reallocarray(p, 4, S / 4) (glibc jumps to realloc).
    assert_exact(&doc, "leak_reallocarray", "reallocarray", k, s, &ctx);
    // realloc(p, 0) frees p: balanced_realloc_zero leaves nothing.
    assert_balanced(&doc, &ctx);
    assert!(
        doc["counters"]["null_returns"].as_u64().unwrap() >= k,
        "realloc(p, 0) returns NULL {k} times\n{ctx}"
    );
    assert_nothing_lost(&doc, &ctx);
}

#[test]
fn aligned_allocations_are_exact() {
    if !require_privileges("aligned_allocations_are_exact") {
        return;
    }
    let _lock = exclusive();
    let (k, s) = (400, 512);
    let (doc, ctx) = trace_command("leaks_memalign", "memalign", k, s, &[]);
    // The address comes back through posix_memalign's first argument.
    assert_exact(&doc, "leak_posix_memalign", "posix_memalign", k, s, &ctx);
    assert_exact(&doc, "leak_aligned_alloc", "aligned_alloc", k, s, &ctx);
    // memalign is aligned_alloc in glibc (one address, probed once); valloc
    // takes malloc's arguments.
    let memalign = from(&doc, "leak_memalign");
    assert_eq!(memalign.len(), 1, "{ctx}");
    assert_eq!(bytes(memalign[0]), k * s, "{ctx}");
    let valloc = from(&doc, "leak_valloc");
    assert_eq!(valloc.len(), 1, "{ctx}");
    assert_eq!(bytes(valloc[0]), k * s, "{ctx}");
    assert_balanced(&doc, &ctx);
    assert_nothing_lost(&doc, &ctx);
}

#[test]
fn threads_leak_is_exact() {
    if !require_privileges("threads_leak_is_exact") {
        return;
    }
    let _lock = exclusive();
    let (k, s, threads) = (300, 72, 4);
    let (doc, ctx) = trace_command("leaks_threads", "threads", k, s, &["4"]);
    let found = from(&doc, "leak_in_thread");
    assert_eq!(found.len(), 1, "one stack for the four threads\n{ctx}");
    assert_eq!(
        (bytes(found[0]), allocations(found[0])),
        (threads * k * s, threads * k),
        "{threads} threads leaked {k} blocks of {s} bytes each\n{ctx}"
    );
    assert!(
        frame_names(found[0]).iter().any(|n| n == "thread_main"),
        "{ctx}"
    );
    assert_balanced(&doc, &ctx);
    assert_nothing_lost(&doc, &ctx);
}

#[test]
fn static_binary_is_traced_through_its_own_symbols() {
    if !require_privileges("static_binary_is_traced_through_its_own_symbols") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("leaks_static");
    let exe = dir.join("leaky_static");
    let build = Command::new(std::env::var_os("CC").unwrap_or_else(|| "gcc".into()))
        .args([
            "-static",
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-inline",
        ])
        .args(["-fno-optimize-sibling-calls", "-o"])
        .arg(&exe)
        .arg(workload_source("leaky.c"))
        .output()
        .expect("cannot run gcc");
    assert!(
        build.status.success(),
        "gcc -static failed (is libc6-dev, with libc.a, installed?):\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let exe_s = exe.to_str().unwrap();
    let (doc, run) = leaks_json(&dir, &["--", exe_s, "malloc", "250", "40"]);
    let ctx = format!("{}\n{}", listing(&doc), run.describe());
    assert_eq!(
        doc["allocators"][0].as_str(),
        Some(exe_s),
        "a static binary's allocator is the binary itself\n{ctx}"
    );
    assert_exact(&doc, "leak_malloc_blocks", "malloc", 250, 40, &ctx);
    assert_balanced(&doc, &ctx);

    // Stripped, there is nothing to probe: a clear error before anything is loaded.
    let stripped = dir.join("leaky_stripped");
    std::fs::copy(&exe, &stripped).unwrap();
    let strip = Command::new("strip").arg(&stripped).status();
    if strip.is_ok_and(|s| s.success()) {
        let run = run_perf_user(
            &[
                "leaks",
                "--",
                stripped.to_str().unwrap(),
                "malloc",
                "1",
                "1",
            ],
            PROFILER_TIMEOUT,
        );
        assert!(!run.status.success(), "{}", run.describe());
        assert!(
            run.stderr.contains("statically linked") && run.stderr.contains("--allocator"),
            "the error should say the binary is static without symbols, and what to do\n{}",
            run.describe()
        );
    }
}

/// Starts leaky gated on a file, so that `leaks --pid` attaches first.
struct Gated {
    workload: Workload,
    go: PathBuf,
    done: PathBuf,
}

fn gated(exe: &Path, dir: &Path, args: &[&str], stay: bool) -> Gated {
    let go = dir.join("go");
    let done = dir.join("done");
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("LEAKY_GO", &go)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if stay {
        cmd.env("LEAKY_DONE", &done);
    }
    let child = cmd.spawn().expect("cannot start leaky");
    Gated {
        workload: Workload {
            child,
            name: exe.display().to_string(),
        },
        go,
        done,
    }
}

/// Starts `perf-user leaks --pid PID ARGS -o DIR/leaks.json --format json`
/// and waits until its probes are attached.
fn start_pid_tracer(dir: &Path, pid: u32, args: &[&str]) -> (Running, PathBuf) {
    let out = dir.join("leaks.json");
    let mut cmd = perf_user(&["leaks", "--format", "json", "--pid"]);
    cmd.arg(pid.to_string())
        .args(args)
        .arg("--output")
        .arg(&out);
    let mut tracer = Running::start(cmd);
    let attached = wait_for_uprobes(
        tracer.child.id(),
        GLIBC_PERF_EVENTS,
        GLIBC_MULTI_LINKS,
        Duration::from_secs(20),
    );
    assert!(
        attached && tracer.is_running(),
        "the tracer did not attach its probes\n{}",
        tracer.finish(PROFILER_TIMEOUT).describe()
    );
    (tracer, out)
}

#[test]
fn pid_mode_sees_a_process_exit_and_reports_exactly() {
    if !require_privileges("pid_mode_sees_a_process_exit_and_reports_exactly") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("leaks_pid_exit");
    let exe = leaky(&dir);
    let mut w = gated(&exe, &dir, &["malloc", "800", "56"], false);
    let pid = w.workload.pid();
    let (tracer, out) = start_pid_tracer(&dir, pid, &["--duration", "50s"]);
    std::fs::write(&w.go, "").unwrap();
    // leaky runs, exits; the tracer notices and reports without waiting for 50 s.
    let started = Instant::now();
    let run = tracer.finish(PROFILER_TIMEOUT);
    let _ = w.workload.child.wait();
    let doc = parse_json(&profiler_output(&run, &out), &run);
    let ctx = format!("{}\n{}", listing(&doc), run.describe());
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the tracer should end when the process exits\n{ctx}"
    );
    let ended = doc["ended"].as_str().unwrap_or_default();
    assert!(
        ended.contains(&format!("PID {pid}")) && ended.contains("exited"),
        "the report should say that PID {pid} exited: {ended:?}\n{ctx}"
    );
    assert_eq!(doc["pid"], pid, "{ctx}");
    // Symbolized from the maps captured while it ran.
    assert_exact(&doc, "leak_malloc_blocks", "malloc", 800, 56, &ctx);
    assert_balanced(&doc, &ctx);
    assert_nothing_lost(&doc, &ctx);
}

#[test]
fn sampling_finds_the_leak_within_25_percent() {
    if !require_privileges("sampling_finds_the_leak_within_25_percent") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("leaks_sampling");
    let exe = leaky(&dir);
    let (k, s, n) = (20_000u64, 64u64, 16u32);
    let mut w = gated(
        &exe,
        &dir,
        &["malloc", &k.to_string(), &s.to_string()],
        true,
    );
    let pid = w.workload.pid();
    let (tracer, out) = start_pid_tracer(
        &dir,
        pid,
        &["--sample", &n.to_string(), "--duration", "50s"],
    );
    std::fs::write(&w.go, "").unwrap();
    let started = Instant::now();
    while !w.done.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "leaky did not finish its work"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    w.workload.assert_running();
    // Ctrl-C: the tracer reports what is outstanding now.
    // SAFETY: kill has no memory arguments; the PID is our running child.
    unsafe { libc::kill(tracer.child.id() as i32, libc::SIGINT) };
    let run = tracer.finish(PROFILER_TIMEOUT);
    let doc = parse_json(&profiler_output(&run, &out), &run);
    let ctx = format!("{}\n{}", listing(&doc), run.describe());
    assert_eq!(
        doc["sample_every"], n,
        "the report states the sampling\n{ctx}"
    );
    assert!(
        doc["ended"]
            .as_str()
            .unwrap_or_default()
            .contains("Interrupted"),
        "{ctx}"
    );
    let found = from(&doc, "leak_malloc_blocks");
    assert_eq!(found.len(), 1, "the leaking stack is still found\n{ctx}");
    let expected = (k * s) as f64;
    let got = bytes(found[0]) as f64;
    assert!(
        (got - expected).abs() <= expected * 0.25,
        "sampled 1 in {n}: {got} bytes estimated for {expected} leaked (more than 25% off)\n{ctx}"
    );
    assert_eq!(
        bytes(found[0]) % (s * n as u64),
        0,
        "amounts are scaled by {n}\n{ctx}"
    );
    assert_eq!(
        doc["stacks"][0]["frames"].as_array().map(|f| f.is_empty()),
        Some(false)
    );
    let tracked = doc["counters"]["allocs_tracked"].as_u64().unwrap();
    let all = doc["counters"]["allocs"].as_u64().unwrap();
    assert!(
        tracked * 8 < all,
        "1 in {n} allocations should be tracked, not {tracked} of {all}\n{ctx}"
    );
}

#[test]
fn min_age_hides_young_allocations() {
    if !require_privileges("min_age_hides_young_allocations") {
        return;
    }
    let _lock = exclusive();
    let (doc, ctx) = trace_command("leaks_min_age", "malloc", 100, 32, &[]);
    assert_exact(&doc, "leak_malloc_blocks", "malloc", 100, 32, &ctx);
    // The same, with every allocation younger than the minimum age.
    let dir = test_dir("leaks_min_age_hidden");
    let exe = leaky(&dir);
    let (doc, run) = leaks_json(
        &dir,
        &[
            "--min-age",
            "1h",
            "--",
            exe.to_str().unwrap(),
            "malloc",
            "100",
            "32",
        ],
    );
    let ctx = format!("{}\n{}", listing(&doc), run.describe());
    assert!(leak_stacks(&doc).is_empty(), "{ctx}");
    assert_eq!(doc["outstanding_bytes"], 0, "{ctx}");
    assert!(doc["young_bytes"].as_u64().unwrap() >= 3200, "{ctx}");
    assert_eq!(doc["min_age_secs"], 3600.0, "{ctx}");
}

#[test]
fn table_names_the_leaking_function_and_its_bytes() {
    if !require_privileges("table_names_the_leaking_function_and_its_bytes") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("leaks_table");
    let exe = leaky(&dir);
    let run = run_perf_user(
        &["leaks", "--", exe.to_str().unwrap(), "malloc", "1000", "48"],
        PROFILER_TIMEOUT,
    );
    assert!(run.status.success(), "{}", run.describe());
    let text = &run.stdout;
    let first = text
        .find("#1 ")
        .unwrap_or_else(|| panic!("no ranked stack\n{}", run.describe()));
    let section = &text[first..];
    assert!(
        section.starts_with("#1  48000 bytes (46.9 KiB) in 1000 allocations from malloc"),
        "the top stack should be the leak, with its exact size\n{}",
        run.describe()
    );
    let leaf_line = section.lines().nth(1).unwrap_or_default();
    assert!(
        leaf_line.trim_start().starts_with("leak_malloc_blocks") && leaf_line.contains("leaky.c:"),
        "the first frame shown is the leaking function with its source line: {leaf_line:?}\n{}",
        run.describe()
    );
    assert!(text.contains("exited with code 0"), "{}", run.describe());
}

const PYTHON_GROWER: &str = "\
import time
keep = []
def grow_buffers():
    while True:
        keep.append(bytearray(4096))
        time.sleep(0.0005)
grow_buffers()
";

#[test]
fn python_growing_a_list_of_buffers_names_a_growing_stack() {
    if !require_privileges("python_growing_a_list_of_buffers_names_a_growing_stack") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("leaks_python");
    // As a user would type it: through PATH, whatever python3 is there (a
    // pyenv shim runs bash and env before Python: several execve()s).
    let out = dir.join("leaks.jsonl");
    let run = run_perf_user(
        &[
            "leaks",
            "--interval",
            "1s",
            "--duration",
            "4s",
            "--format",
            "json",
            "--output",
            out.to_str().unwrap(),
            "--",
            "python3",
            "-c",
            PYTHON_GROWER,
        ],
        PROFILER_TIMEOUT,
    );
    let text = String::from_utf8(profiler_output(&run, &out)).unwrap();
    let reports: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", run.describe())))
        .collect();
    assert!(
        reports.len() >= 3,
        "--interval 1s over 4 s: expected several reports, one per line\n{}",
        run.describe()
    );
    let last = reports.last().unwrap();
    let ctx = format!("{}\n{}", listing(last), run.describe());
    assert_eq!(last["last"], true, "{ctx}");
    assert!(
        last["process"]
            .as_str()
            .is_some_and(|p| p.starts_with("python")),
        "the report is about Python, after the launcher's execve()s\n{ctx}"
    );
    // The top stack is the one growing: ~2000 buffers of 4 KiB a second.
    let top = &leak_stacks(last)[0];
    assert!(
        bytes(top) > 2 * 1024 * 1024,
        "the top stack should hold megabytes of buffers\n{ctx}"
    );
    let growth = top["growth_bytes_per_sec"].as_f64().unwrap();
    assert!(
        growth > 256.0 * 1024.0,
        "the top stack should grow by hundreds of KiB/s, not {growth}\n{ctx}"
    );
    assert!(
        frames(top)
            .last()
            .is_some_and(|f| f["function"].is_string()),
        "the growing stack's caller should be named\n{ctx}"
    );
    // Interval reports show the growth as it happens.
    let middle = &reports[reports.len() / 2];
    assert!(
        leak_stacks(middle)
            .first()
            .is_some_and(|s| s["growth_bytes_per_sec"].as_f64().unwrap_or(0.0) > 0.0),
        "{}",
        listing(middle)
    );
}

#[test]
fn bad_input_errors() {
    // No privileges needed: these fail before anything is loaded.
    let check = |args: &[&str], mentions: &[&str]| {
        let run = run_perf_user(args, Duration::from_secs(30));
        let ctx = format!("perf-user {}\n{}", args.join(" "), run.describe());
        assert!(!run.status.success(), "should fail\n{ctx}");
        assert_ne!(run.status.code(), Some(101), "a panic\n{ctx}");
        for m in mentions {
            assert!(
                run.stderr.contains(m),
                "the error should mention {m:?}\n{ctx}"
            );
        }
    };
    check(
        &["leaks", "--pid", "999999999"],
        &["999999999", "no process"],
    );
    check(
        &["leaks", "--", "no-such-command-xyz"],
        &["command not found"],
    );
    check(&["leaks", "--sample", "0", "--", "true"], &["--sample"]);
    let source = workload_source("leaky.c");
    check(
        &[
            "leaks",
            "--allocator",
            source.to_str().unwrap(),
            "--",
            "true",
        ],
        &["--allocator", "not a 64-bit ELF"],
    );
    check(&["leaks"], &["--pid"]);
}

#[test]
fn allocations_inside_libc_name_the_program_function_with_unwind_tables() {
    if !require_privileges("allocations_inside_libc_name_the_program_function_with_unwind_tables") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("leaks_libc_dwarf");
    let exe = dir.join("libc_leaks");
    // As distributions build: no frame pointers anywhere.
    let status = std::process::Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(workload_source("libc_leaks.c"))
        .status()
        .unwrap();
    assert!(status.success(), "gcc failed");
    let exe_s = exe.to_str().unwrap().to_string();
    let (doc, run) = leaks_json(&dir, &["--unwind", "dwarf", "--", &exe_s, "100"]);
    let ctx = format!("{}\n{}", listing(&doc), run.describe());
    assert_eq!(doc["exit"]["code"], 0, "{ctx}");
    let through = |function: &str| -> Vec<&Value> {
        leak_stacks(&doc)
            .iter()
            .filter(|s| frame_names(s).iter().any(|n| n == function))
            .collect()
    };
    // strdup of 22 characters: exactly 100 blocks of 23 bytes, and the stack
    // goes on past libc to the program's function and main.
    let strdup = through("leak_via_strdup");
    assert_eq!(strdup.len(), 1, "one stack through leak_via_strdup\n{ctx}");
    assert_eq!(
        (bytes(strdup[0]), allocations(strdup[0])),
        (2300, 100),
        "{ctx}"
    );
    assert!(frame_names(strdup[0]).iter().any(|n| n == "main"), "{ctx}");
    // getline and asprintf: 100 buffers each, whatever sizes libc picks.
    for function in ["leak_via_getline", "leak_via_asprintf"] {
        let found = through(function);
        let n: u64 = found.iter().map(|s| allocations(s)).sum();
        assert_eq!(n, 100, "100 allocations through {function}\n{ctx}");
        assert!(found.iter().all(|s| bytes(s) >= 100 * 8), "{ctx}");
    }
}

#[test]
fn malloc_and_threads_stay_exact_with_unwind_tables() {
    if !require_privileges("malloc_and_threads_stay_exact_with_unwind_tables") {
        return;
    }
    let _lock = exclusive();
    let dwarf = ["--unwind", "dwarf"];
    let (doc, ctx) = trace_command_with("leaks_malloc_dwarf", &dwarf, "malloc", 1000, 48, &[]);
    assert_exact(&doc, "leak_malloc_blocks", "malloc", 1000, 48, &ctx);
    assert_balanced(&doc, &ctx);
    assert_nothing_lost(&doc, &ctx);
    let (k, s, threads) = (300, 72, 4);
    let (doc, ctx) = trace_command_with("leaks_threads_dwarf", &dwarf, "threads", k, s, &["4"]);
    let found = from(&doc, "leak_in_thread");
    assert_eq!(found.len(), 1, "one stack for the four threads\n{ctx}");
    assert_eq!(
        (bytes(found[0]), allocations(found[0])),
        (threads * k * s, threads * k),
        "{ctx}"
    );
    assert!(
        frame_names(found[0]).iter().any(|n| n == "thread_main"),
        "{ctx}"
    );
    assert_nothing_lost(&doc, &ctx);
}
