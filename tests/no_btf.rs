//! Every collector works on a kernel without BTF (as Raspberry Pi OS kernels
//! are built), and `--btf FILE` is accepted or refused with a clear error.
//!
//! The kernel here has BTF, so each run happens in a private mount namespace
//! (`unshare --mount`) with a tmpfs mounted over /sys/kernel/btf: to
//! perf-user, and to aya's loader in it, the kernel then looks like one built
//! without CONFIG_DEBUG_INFO_BTF. `cargo xtask vm-test` does the same inside
//! Debian's arm64 and x86_64 kernels.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{CmdOutput, PERF_USER, Running, Workload, compile_c, exclusive, test_dir};

const SYSFS_BTF: &str = "/sys/kernel/btf/vmlinux";
const TIMEOUT: Duration = Duration::from_secs(90);

/// `perf-user <args>` in a mount namespace where /sys/kernel/btf is empty.
fn without_btf(args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    // unshare(1) makes the new namespace's mounts private, so the tmpfs
    // stays inside it. The shell fails the run if the file still shows.
    cmd.args([
        "--mount",
        "sh",
        "-c",
        "mount -t tmpfs nobtf /sys/kernel/btf && test ! -e /sys/kernel/btf/vmlinux \
         && exec \"$@\"",
        "sh",
        PERF_USER,
    ])
    .args(args);
    cmd
}

fn run(cmd: Command) -> CmdOutput {
    Running::start(cmd).finish(TIMEOUT)
}

fn assert_ok(out: &CmdOutput, what: &str) {
    assert!(
        !out.timed_out && out.status.success() && !out.stderr.contains("panicked"),
        "{what} failed without BTF\n{}",
        out.describe()
    );
}

/// Skips (returns false) unless root, and checks the premise.
fn ready(test: &str) -> bool {
    if !common::require_privileges(test) {
        return false;
    }
    assert!(
        Command::new("unshare")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "{test} needs unshare(1) (util-linux)"
    );
    true
}

#[test]
fn profile_without_btf_names_the_hot_function() {
    if !ready("profile_without_btf_names_the_hot_function") {
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("no_btf_profile");
    let hot = compile_c("hot", &dir);
    let mut workload = Workload::spawn(&hot, &["30"]);
    let pid = workload.pid().to_string();
    let out = run(without_btf(&[
        "profile",
        "--pid",
        &pid,
        "--duration",
        "2s",
        "--quiet",
    ]));
    workload.assert_running();
    assert_ok(&out, "profile");
    assert!(
        out.stdout.contains("burn_cpu_hot"),
        "the profile does not name burn_cpu_hot\n{}",
        out.describe()
    );
}

#[test]
fn btf_file_is_used_when_sysfs_has_none() {
    if !ready("btf_file_is_used_when_sysfs_has_none") {
        return;
    }
    if !Path::new(SYSFS_BTF).exists() {
        eprintln!("SKIPPED btf_file_is_used_when_sysfs_has_none: this kernel has no BTF to copy");
        return;
    }
    let _guard = exclusive();
    let dir = test_dir("no_btf_file");
    let btf = dir.join("vmlinux.btf");
    std::fs::copy(SYSFS_BTF, &btf).expect("copy the kernel's BTF");
    let hot = compile_c("hot", &dir);
    let workload = Workload::spawn(&hot, &["30"]);
    let pid = workload.pid().to_string();
    let out = run(without_btf(&[
        "--btf",
        btf.to_str().unwrap(),
        "profile",
        "--pid",
        &pid,
        "--duration",
        "1s",
        "--quiet",
    ]));
    assert_ok(&out, "profile --btf FILE");
    assert!(out.stdout.contains("burn_cpu_hot"), "{}", out.describe());
}

#[test]
fn bad_btf_file_is_refused_with_its_name() {
    // No privileges needed: the file is parsed before anything is loaded.
    let dir = test_dir("no_btf_bad_file");
    let bad = dir.join("not-btf");
    std::fs::write(&bad, b"this is not BTF").unwrap();
    let out = Running::start({
        let mut cmd = Command::new(PERF_USER);
        cmd.args([
            "--btf",
            bad.to_str().unwrap(),
            "profile",
            "--duration",
            "1s",
        ]);
        cmd
    })
    .finish(TIMEOUT);
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("--btf") && out.stderr.contains(bad.to_str().unwrap()),
        "the error does not name the flag and the file\n{}",
        out.describe()
    );
}

#[test]
fn latency_without_btf_traces_block_io() {
    if !ready("latency_without_btf_traces_block_io") {
        return;
    }
    let _guard = exclusive();
    let out = run(without_btf(&[
        "latency",
        "--block",
        "--tcp",
        "--duration",
        "1s",
        "--format",
        "json",
        "--quiet",
    ]));
    assert_ok(&out, "latency --block --tcp");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("latency printed no JSON ({e})\n{}", out.describe()));
    assert!(doc.get("block").is_some(), "{}", out.describe());
    // Without BTF, `auto` falls back to the classic tracepoints by itself.
    assert_eq!(doc["block"]["tracepoints"], "classic", "{}", out.describe());
    assert_eq!(doc["tcp"]["tracepoints"], "classic", "{}", out.describe());
}

#[test]
fn btf_tracepoints_without_btf_name_the_cause() {
    if !ready("btf_tracepoints_without_btf_name_the_cause") {
        return;
    }
    let _guard = exclusive();
    let out = run(without_btf(&[
        "latency",
        "--block",
        "--tracepoints",
        "btf",
        "--duration",
        "1s",
        "--quiet",
    ]));
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("CONFIG_DEBUG_INFO_BTF") && out.stderr.contains("classic"),
        "the error does not say why and what to use instead\n{}",
        out.describe()
    );
}

#[test]
fn leaks_without_btf_traces_a_command() {
    if !ready("leaks_without_btf_traces_a_command") {
        return;
    }
    let _guard = exclusive();
    let out = run(without_btf(&[
        "leaks",
        "--quiet",
        "--format",
        "json",
        "--",
        "/bin/sh",
        "-c",
        "ls / >/dev/null",
    ]));
    assert_ok(&out, "leaks");
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("leaks printed no JSON ({e})\n{}", out.describe()));
}
