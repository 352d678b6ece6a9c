//! End-to-end tests of `perf-user profile`: real workloads, real eBPF
//! sampling, assertions on what a user reads in the output.
//!
//! All tests but `bad_input_errors` need root; without it they fail, unless
//! `PERF_USER_SKIP_PRIVILEGED=1` asks to skip them.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// One step of an expected call chain: a label for messages and a matcher.
struct Step<'a> {
    label: &'a str,
    matches: &'a dyn Fn(&str) -> bool,
}

/// Line numbers (1-based) of the first lines containing `from` and `to` in
/// the workload source `file`: the leaf's line must fall between them.
fn source_lines_between(file: &str, from: &str, to: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(workload_source(file)).expect("read workload source");
    let find = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in {file}")) as u64
            + 1
    };
    (find(from), find(to))
}

/// Checks a profile of a CPU-bound workload whose hot loop is `chain`'s last
/// step, called through the other steps in order.
fn check_hot_profile(
    doc: &Value,
    run: &CmdOutput,
    pid: u32,
    exe_name: &str,
    chain: &[Step],
    source: (&str, u64, u64),
) {
    let summary = summarize(doc, 8);
    let ctx = format!("{summary}\n{}", run.describe());

    assert_eq!(
        doc["frequency_hz"], 99,
        "default frequency should be 99 Hz\n{ctx}"
    );
    let all = stacks(doc);
    let sum: u64 = all.iter().map(count).sum();
    assert_eq!(
        doc["total_samples"].as_u64(),
        Some(sum),
        "total_samples is not the sum of the stacks' counts\n{ctx}"
    );
    let foreign: Vec<&Value> = all
        .iter()
        .filter(|s| s["pid"].as_u64() != Some(u64::from(pid)))
        .collect();
    assert!(
        foreign.is_empty(),
        "--pid {pid} profile contains other processes, e.g. pid {} ({})\n{ctx}",
        foreign[0]["pid"],
        foreign[0]["process"]
    );

    let ours = stacks_of(doc, pid);
    let pid_total: u64 = ours.iter().map(|s| count(s)).sum();
    // 4 s of a busy thread at 99 Hz is about 400 samples.
    assert!(
        pid_total >= 100,
        "only {pid_total} samples for pid {pid} in 4 s at 99 Hz of a CPU-bound process\n{ctx}"
    );

    let hot = chain.last().expect("empty chain");
    let leaf_samples: u64 = ours
        .iter()
        .filter(|s| leaf_name(s).is_some_and(|n| (hot.matches)(&n)))
        .map(|s| count(s))
        .sum();
    let share = leaf_samples as f64 / pid_total as f64;
    assert!(
        share >= 0.8,
        "{} is the leaf of only {leaf_samples} of {pid_total} samples ({:.1}%), expected >= 80%\n{ctx}",
        hot.label,
        share * 100.0
    );

    let heaviest = ours
        .iter()
        .filter(|s| frame_names(s).iter().any(|n| (hot.matches)(n)))
        .max_by_key(|s| count(s))
        .expect("no stack contains the hot function");
    let names = frame_names(heaviest);
    let preds: Vec<&dyn Fn(&str) -> bool> = chain.iter().map(|s| s.matches).collect();
    let labels: Vec<&str> = chain.iter().map(|s| s.label).collect();
    assert!(
        has_subsequence(&names, &preds),
        "heaviest stack with {} should contain {labels:?} in this order (root first), got:\n  {}\n{ctx}",
        hot.label,
        names.join(" ; ")
    );

    // The leaf frame: a named user frame in the workload's binary, with the
    // source location from its debug info.
    let leaf = frames(heaviest).last().unwrap();
    assert!(
        leaf["function"].as_str().is_some_and(|f| (hot.matches)(f)),
        "leaf of the heaviest stack should be {} with a name, got {leaf}\n{ctx}",
        hot.label
    );
    assert_eq!(leaf["kernel"], false, "leaf should be a user frame: {leaf}");
    let module = leaf["module"].as_str().unwrap_or_default();
    assert!(
        module == exe_name || module.ends_with(&format!("/{exe_name}")),
        "leaf's module should be the workload binary {exe_name:?}, got {module:?}\n{ctx}"
    );
    let (src_file, first, last) = source;
    let file = leaf["file"].as_str().unwrap_or_default();
    let line = leaf["line"].as_u64().unwrap_or_default();
    assert!(
        file.ends_with(src_file) && (first..=last).contains(&line),
        "leaf should have its source location {src_file}:{first}..{last} from the debug info, \
         got file {:?} line {:?}\n{ctx}",
        leaf["file"],
        leaf["line"]
    );

    // The hotspot table a user reads agrees: for this process, the hot
    // function is the top row by self time.
    let process = heaviest["process"].as_str().unwrap_or_default();
    let top = doc["hotspots"]
        .as_array()
        .expect("no hotspots array")
        .iter()
        .find(|h| h["process"].as_str() == Some(process))
        .unwrap_or_else(|| panic!("no hotspot row for process {process:?}\n{ctx}"));
    assert!(
        top["function"].as_str().is_some_and(|f| (hot.matches)(f)),
        "top hotspot of {process:?} should be {}, got {top}\n{ctx}",
        hot.label
    );
    let self_pct = top["self_pct"].as_f64().unwrap_or_default();
    assert!(
        self_pct >= 80.0,
        "{}'s self_pct is {self_pct}, expected >= 80\n{ctx}",
        hot.label
    );
}

/// Starts `exe` (a CPU-bound workload asked to run 20 s; killed when the
/// test ends), profiles it by pid for 4 s and returns the JSON document.
fn profile_workload(exe: &Path, dir: &Path) -> (Value, CmdOutput, Workload) {
    let mut workload = Workload::spawn(exe, &["20"]);
    settle();
    workload.assert_running();
    let pid = workload.pid().to_string();
    let (doc, run) = profile_json(
        &["--pid", &pid, "--duration", "4s"],
        &dir.join("profile.json"),
    );
    workload.assert_running();
    (doc, run, workload)
}

#[test]
fn c_hot_function() {
    if !require_privileges("c_hot_function") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("c_hot_function");
    let exe = compile_c("hot", &dir);
    let (doc, run, workload) = profile_workload(&exe, &dir);

    let (first, last) = source_lines_between("hot.c", "burn_cpu_hot(void)", "middle_caller(void)");
    let chain = [
        Step {
            label: "main",
            matches: &|n| n == "main",
        },
        Step {
            label: "outer_caller",
            matches: &|n| n == "outer_caller",
        },
        Step {
            label: "middle_caller",
            matches: &|n| n == "middle_caller",
        },
        Step {
            label: "burn_cpu_hot",
            matches: &|n| n == "burn_cpu_hot",
        },
    ];
    check_hot_profile(
        &doc,
        &run,
        workload.pid(),
        "hot",
        &chain,
        ("hot.c", first, last),
    );
}

#[test]
fn rust_hot_function() {
    if !require_privileges("rust_hot_function") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("rust_hot_function");
    let exe = compile_rust("hot", &dir);
    let (doc, run, workload) = profile_workload(&exe, &dir);

    // Demangled, e.g. `hot::workload::burn_cpu_hot`; never `_ZN...` / `_R...`.
    fn demangled(name: &str, path: &str) -> bool {
        name.contains(path) && !name.starts_with("_ZN") && !name.starts_with("_R")
    }
    let (first, last) =
        source_lines_between("hot.rs", "pub fn burn_cpu_hot", "pub fn middle_caller");
    let chain = [
        Step {
            label: "hot::main",
            matches: &|n| demangled(n, "hot::main"),
        },
        Step {
            label: "workload::outer_caller",
            matches: &|n| demangled(n, "workload::outer_caller"),
        },
        Step {
            label: "workload::middle_caller",
            matches: &|n| demangled(n, "workload::middle_caller"),
        },
        Step {
            label: "workload::burn_cpu_hot",
            matches: &|n| demangled(n, "workload::burn_cpu_hot"),
        },
    ];
    check_hot_profile(
        &doc,
        &run,
        workload.pid(),
        "hot",
        &chain,
        ("hot.rs", first, last),
    );
}

#[test]
fn syscall_kernel_frames() {
    if !require_privileges("syscall_kernel_frames") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("syscall_kernel_frames");
    let exe = compile_c("syscalls", &dir);
    let mut workload = Workload::spawn(&exe, &["20"]);
    settle();
    workload.assert_running();
    let pid = workload.pid();
    let (doc, run) = profile_json(
        &[
            "--pid",
            &pid.to_string(),
            "--duration",
            "4s",
            "--stacks",
            "both",
        ],
        &dir.join("profile.json"),
    );
    workload.assert_running();
    let ctx = format!("{}\n{}", summarize(&doc, 8), run.describe());

    let ours = stacks_of(&doc, pid);
    let pid_total: u64 = ours.iter().map(|s| count(s)).sum();
    assert!(
        pid_total >= 100,
        "only {pid_total} samples for the busy syscall workload\n{ctx}"
    );

    // User frames come first, kernel frames last (root first, leaf last).
    for stack in &ours {
        let kinds: Vec<bool> = frames(stack)
            .iter()
            .map(|f| f["kernel"].as_bool().expect("frame without `kernel`"))
            .collect();
        assert!(
            kinds.windows(2).all(|w| !w[0] || w[1]),
            "a user frame follows a kernel frame: {}\n{ctx}",
            frame_names(stack).join(" ; ")
        );
    }

    let kernel_samples: u64 = ours
        .iter()
        .filter(|s| frames(s).iter().any(|f| f["kernel"] == true))
        .map(|s| count(s))
        .sum();
    let share = kernel_samples as f64 / pid_total as f64;
    assert!(
        share > 0.3,
        "only {kernel_samples} of {pid_total} samples ({:.1}%) have kernel frames, \
         for a process that lives in read(2)/write(2)\n{ctx}",
        share * 100.0
    );

    let kernel_names: Vec<&str> = ours
        .iter()
        .flat_map(|s| frames(s).iter())
        .filter(|f| f["kernel"] == true)
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(
        !kernel_names.is_empty(),
        "kernel frames exist but none has a name\n{ctx}"
    );
    for f in ours.iter().flat_map(|s| frames(s).iter()) {
        if f["kernel"] == true {
            assert_eq!(
                f["module"], "[kernel]",
                "kernel frame's module should be [kernel]: {f}"
            );
        }
    }
    // /proc/kallsyms covers all kernel text: callers must be named as well
    // as the sampled function, or a user only sees addresses in the graph.
    let (mut kernel_frames, mut named_frames) = (0u64, 0u64);
    for stack in &ours {
        for f in frames(stack).iter().filter(|f| f["kernel"] == true) {
            kernel_frames += count(stack);
            if f["function"].is_string() {
                named_frames += count(stack);
            }
        }
    }
    assert!(
        named_frames * 10 >= kernel_frames * 9,
        "only {named_frames} of {kernel_frames} kernel frames (weighted by samples) have a \
         name, though /proc/kallsyms covers the kernel\n{ctx}"
    );

    // Root first: the syscall entry (x86_64: entry_SYSCALL_64_after_hwframe,
    // do_syscall_64; arm64: el0_svc, invoke_syscall), then the syscall
    // (ksys_read, __x64_sys_read, ...). Most samples are in such stacks.
    let entry =
        |n: &str| n.contains("entry_SYSCALL") || n.contains("do_syscall") || n.contains("el0_svc");
    let syscall =
        |n: &str| n.contains("sys_read") || n.contains("sys_write") || n.contains("sys_getppid");
    assert!(
        kernel_names.iter().any(|n| entry(n)),
        "no kernel frame is named like a syscall entry (entry_SYSCALL*, do_syscall*)\n{ctx}"
    );
    let through_syscalls: u64 = ours
        .iter()
        .filter(|s| {
            let kernel: Vec<String> = frames(s)
                .iter()
                .filter(|f| f["kernel"] == true)
                .map(frame_name)
                .collect();
            has_subsequence(&kernel, &[&entry, &syscall])
        })
        .map(|s| count(s))
        .sum();
    assert!(
        through_syscalls * 10 >= pid_total * 3,
        "only {through_syscalls} of {pid_total} samples have kernel stacks going from a \
         syscall entry (entry_SYSCALL*/do_syscall*) to read/write/getppid, root first\n{ctx}"
    );
}

#[test]
fn exited_process_is_symbolized() {
    if !require_privileges("exited_process_is_symbolized") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("exited_process_is_symbolized");
    // The comm of a process is its executable's name (first 15 bytes).
    let exe = compile_c("short_lived", &dir);
    let out = dir.join("profile.json");

    let mut profiler = start_profiler(
        &[
            "--comm",
            "short_lived",
            "--duration",
            "10s",
            "--format",
            "json",
        ],
        &out,
    );
    let sampling = wait_for_perf_events(profiler.child.id(), Duration::from_secs(10));
    assert!(
        profiler.is_running(),
        "profiler exited before the workload started\n{}",
        profiler.finish(PROFILER_TIMEOUT).describe()
    );
    if !sampling {
        eprintln!("note: did not see the profiler's perf events; starting the workload anyway");
    }
    std::thread::sleep(Duration::from_millis(200));

    let mut workload = Workload::spawn(&exe, &[] as &[&str]);
    let pid = workload.pid();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = workload.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "short_lived did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "short_lived failed: {status}");
    assert!(
        profiler.is_running(),
        "test premise: the profiler should still run after the workload exited, \
         so that it symbolizes an exited process; it ended already\n{}",
        profiler.finish(PROFILER_TIMEOUT).describe()
    );

    let run = profiler.finish(PROFILER_TIMEOUT);
    let bytes = profiler_output(&run, &out);
    let doc = parse_json(&bytes, &run);
    let ctx = format!("{}\n{}", summarize(&doc, 8), run.describe());

    for stack in stacks(&doc) {
        assert_eq!(
            stack["process"], "short_lived",
            "--comm short_lived profile has another process\n{ctx}"
        );
    }
    let ours = stacks_of(&doc, pid);
    let pid_total: u64 = ours.iter().map(|s| count(s)).sum();
    // 1 s of CPU at 99 Hz is about 99 samples.
    assert!(
        pid_total >= 30,
        "only {pid_total} samples of short_lived (pid {pid}), which burned 1 s of CPU\n{ctx}"
    );
    let named: u64 = ours
        .iter()
        .filter(|s| {
            frames(s).last().is_some_and(|f| {
                f["function"] == "short_lived_burn" && f["module"] == "short_lived"
            })
        })
        .map(|s| count(s))
        .sum();
    assert!(
        named * 10 >= pid_total * 8,
        "short_lived_burn (in module short_lived) is the named leaf of only {named} of \
         {pid_total} samples of the exited process\n{ctx}"
    );
    let hotspot = doc["hotspots"]
        .as_array()
        .expect("no hotspots")
        .iter()
        .find(|h| h["process"] == "short_lived")
        .unwrap_or_else(|| panic!("no hotspot for short_lived\n{ctx}"));
    assert_eq!(
        hotspot["function"], "short_lived_burn",
        "top hotspot of the exited process should be named short_lived_burn\n{ctx}"
    );
}

/// Numbers in a line of the table (`99.3` or `99.3%`).
fn numbers(line: &str) -> Vec<f64> {
    line.split_whitespace()
        .map(|word| word.trim_end_matches('%'))
        .filter_map(|num| num.parse::<f64>().ok())
        .collect()
}

#[test]
fn table_output_is_readable() {
    if !require_privileges("table_output_is_readable") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("table_output_is_readable");
    let exe = compile_c("hot", &dir);
    let mut workload = Workload::spawn(&exe, &["20"]);
    settle();
    workload.assert_running();
    let out = dir.join("profile.txt");
    let pid = workload.pid().to_string();
    let (bytes, run) = profile_to_file(&["--pid", &pid, "--duration", "3s"], &out);
    workload.assert_running();

    let text = String::from_utf8(bytes).expect("the table is not UTF-8");
    let ctx = format!("--- table ---\n{text}\n{}", run.describe());
    assert!(
        !text.trim_start().starts_with('{'),
        "the default format should be a table, not JSON\n{ctx}"
    );
    // A header with percentage columns, then rows: burn_cpu_hot must be among
    // the first ones and show the share of the time it took.
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let header = lines
        .iter()
        .position(|l| l.contains('%'))
        .unwrap_or_else(|| panic!("the table has no header with a % column\n{ctx}"));
    let row = lines[header + 1..]
        .iter()
        .take(3)
        .find(|l| l.contains("burn_cpu_hot"))
        .unwrap_or_else(|| panic!("burn_cpu_hot is not in the first rows of the table\n{ctx}"));
    assert!(
        numbers(row).iter().any(|&p| (80.0..=100.0).contains(&p)),
        "burn_cpu_hot's row should show a share >= 80% (it burns the CPU): {row:?}\n{ctx}"
    );
}

#[test]
fn bad_input_errors() {
    // No privileges needed: bad input must be rejected before anything is
    // loaded into the kernel.
    let timeout = Duration::from_secs(30);
    let check = |args: &[&str], mentions: &[&str]| {
        let run = run_perf_user(args, timeout);
        let ctx = format!("perf-user {}\n{}", args.join(" "), run.describe());
        assert!(!run.timed_out, "did not exit\n{ctx}");
        assert!(!run.status.success(), "should fail\n{ctx}");
        assert!(
            !run.stderr.contains("panicked"),
            "panicked instead of reporting an error\n{ctx}"
        );
        assert_ne!(
            run.status.code(),
            Some(101),
            "exit code 101 is a Rust panic\n{ctx}"
        );
        let lower = run.stderr.to_lowercase();
        assert!(
            mentions.iter().any(|m| lower.contains(&m.to_lowercase())),
            "the error message should mention one of {mentions:?}\n{ctx}"
        );
    };

    // pid_max is at most 2^22, so this PID can never exist.
    check(
        &["profile", "--pid", "999999999", "--duration", "1s"],
        &["999999999"],
    );
    check(&["profile", "--duration", "banana"], &["duration"]);
    check(
        &["profile", "--format", "nope", "--duration", "1s"],
        &["format", "nope"],
    );
}
