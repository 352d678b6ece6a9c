//! `cargo xtask test`: setup, the Debian packages the tests use, then every
//! test suite, each run to its end whatever the others did, and a summary.
//!
//! Without cargo arguments, one `cargo test` per suite (the unit tests of
//! every crate, each integration test target, the doc tests), so that one
//! suite that fails to build or crashes does not hide the others. With cargo
//! arguments (`-- --test daemon`, `-- -p xtask`), one `cargo test
//! --no-fail-fast` with them. Either way the output is passed through and
//! read for libtest's result lines; the last line is `N passed, M failed`.

use std::{
    env,
    io::{self, Read as _, Write as _},
    process::{Command, ExitCode, ExitStatus},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};
use cargo_metadata::TargetKind;

use crate::{
    apt, cmd,
    libtest::{self, Suite},
    setup,
};

/// Debian packages the tests need: gcc and libc6-dev build the C test
/// programs (gcc alone, without its recommends, cannot link), chromium is a
/// profiling target, iproute2 and procps provide `ip`, `ps` and friends,
/// prometheus (with promtool) scrapes and checks the daemon's metrics,
/// python3 is what the leaks test traces as a user would.
pub const PACKAGES: &[&str] = &[
    "gcc",
    "libc6-dev",
    "chromium",
    // tests/dashboard.rs drives Chromium through WebDriver.
    "chromium-driver",
    "iproute2",
    "procps",
    "python3",
    "prometheus",
    "prometheus-alertmanager",
    // tests/symbols.rs: a real debuginfod server, node --perf-basic-prof,
    // objcopy/strip for the stripped program, libc's own debug file (names
    // of libc's internal frames, such as __libc_start_call_main).
    "debuginfod",
    "nodejs",
    "binutils",
    "libc6-dbg",
    // tests/web_config.rs: node_exporter reads the same web config file as
    // the daemon; htpasswd and Python's bcrypt make the hashes; openssl the
    // certificates; curl sends the requests.
    "prometheus-node-exporter",
    "apache2-utils",
    "python3-bcrypt",
    "openssl",
    "curl",
    // tests/fleet.rs: a real `go tool pprof` fetches the daemon's profile
    // endpoints (curl, above, the rest).
    "golang-go",
];

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test`, after `--` (e.g. `-- --test daemon`,
    /// `-- -p perf-user -- --test-threads=1`). With cargo arguments the
    /// suites run in one `cargo test --no-fail-fast`; libtest arguments
    /// alone (`-- -- --nocapture`) go to every suite.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

/// One `cargo test` invocation.
struct Run {
    /// Names the run when it fails before any test binary starts.
    label: String,
    args: Vec<String>,
}

pub fn main(args: &Args) -> Result<ExitCode> {
    let ready = setup::ensure(setup::Mode::Install)?;
    apt::ensure("Debian packages", PACKAGES)?;
    if !cmd::is_root() {
        if env::var_os("PERF_USER_SKIP_PRIVILEGED").is_some_and(|v| v == "1") {
            eprintln!(
                "note: not root and PERF_USER_SKIP_PRIVILEGED=1: the privileged tests are skipped"
            );
        } else {
            eprintln!(
                "warning: not root: the privileged tests (they load eBPF programs: root, or \
                 CAP_BPF+CAP_PERFMON) will fail; set PERF_USER_SKIP_PRIVILEGED=1 to skip them"
            );
        }
    }

    let (cargo_args, test_args) = split_args(&args.cargo_args);
    let runs = if cargo_args.is_empty() {
        per_suite_runs(test_args)?
    } else {
        let mut run_args = vec!["--no-fail-fast".to_string()];
        run_args.extend(args.cargo_args.iter().cloned());
        vec![Run {
            label: format!("cargo test {}", args.cargo_args.join(" ")),
            args: run_args,
        }]
    };

    let mut suites = Vec::new();
    for run in runs {
        let mut cargo = ready.cargo()?;
        cargo.arg("test").args(&run.args);
        println!("running: {}", cmd::display(&cargo));
        let (status, found) = run_and_parse(&mut cargo, true)?;
        let all_ok = found.iter().all(Suite::ok);
        suites.extend(found);
        // Cargo failed and no suite says why: an argument, a build script,
        // a link error. Count it, by the run's name.
        if !status.success() && all_ok {
            suites.push(Suite::cargo_failed(format!(
                "{} (cargo: {})",
                run.label,
                cmd::describe(status)
            )));
        }
    }
    if suites.is_empty() {
        suites.push(Suite::cargo_failed("no test binary ran".into()));
    }

    let report = libtest::report(&suites);
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(format!("\n==== test summary ====\n{report}").as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write the test summary")?;
    Ok(if libtest::totals(&suites).failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Cargo's own arguments, and libtest's after a second `--`.
fn split_args(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

/// What plain `cargo test` runs, one invocation per suite: the unit tests
/// (lib and bins of the default members), each integration test target, the
/// doc tests. Every run names all default members with `-p`, so that features
/// unify as in plain `cargo test` and nothing is rebuilt between runs.
fn per_suite_runs(test_args: &[String]) -> Result<Vec<Run>> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(cmd::workspace_root())
        .no_deps()
        .exec()
        .context("`cargo metadata` failed; cannot list the test targets")?;
    let members: Vec<&cargo_metadata::Package> = metadata.workspace_default_packages();
    let mut packages = Vec::new();
    for package in &members {
        packages.extend(["-p".to_string(), package.name.to_string()]);
    }
    let run = |label: String, selection: &[&str]| {
        let mut args = packages.clone();
        args.extend(selection.iter().map(|s| s.to_string()));
        args.push("--no-fail-fast".into());
        if !test_args.is_empty() {
            args.push("--".into());
            args.extend(test_args.iter().cloned());
        }
        Run { label, args }
    };

    let targets = || members.iter().flat_map(|p| &p.targets);
    let has = |kind: TargetKind| targets().any(|t| t.kind.contains(&kind));
    let mut runs = Vec::new();
    if has(TargetKind::Lib) || has(TargetKind::Bin) {
        runs.push(run("unit tests".into(), &["--lib", "--bins"]));
    }
    for target in targets().filter(|t| t.kind.contains(&TargetKind::Test)) {
        runs.push(run(target.name.to_string(), &["--test", &target.name]));
    }
    if has(TargetKind::Lib) {
        runs.push(run("doc tests".into(), &["--doc"]));
    }
    Ok(runs)
}

/// Runs cargo with stdout and stderr merged into one pipe (so that each
/// "test result:" line follows its binary's "Running" line), copies
/// everything to our stdout as it comes, and parses it.
fn run_and_parse(cargo: &mut Command, echo: bool) -> Result<(ExitStatus, Vec<Suite>)> {
    let (mut reader, writer) = io::pipe().context("cannot create a pipe for cargo's output")?;
    let writer2 = writer
        .try_clone()
        .context("cannot duplicate the output pipe")?;
    cargo.stdout(writer).stderr(writer2);
    let mut child = cargo
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::display(cargo)))?;
    // The command holds the pipe's write ends: close them, or the reader
    // would never see the end.
    cargo.stdout(std::process::Stdio::null());
    cargo.stderr(std::process::Stdio::null());

    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut pending = Vec::new();
        let mut out = io::stdout();
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Raw chunks, not lines: "test name ... " shows before its "ok".
            if echo {
                let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if lines_tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        }
        if !pending.is_empty() {
            let _ = lines_tx.send(String::from_utf8_lossy(&pending).into_owned());
        }
    });

    let status = child
        .wait()
        .with_context(|| format!("waiting for `{}` failed", cmd::display(cargo)))?;
    let mut parser = libtest::Parser::new();
    // A process a test left behind may hold the pipe open for ever: once
    // cargo has exited, read what is there and go on.
    loop {
        match lines_rx.recv_timeout(Duration::from_secs(2)) {
            Ok(line) => parser.line(&line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "\nnote: a process started by the tests still holds their output open; \
                     not waiting for it"
                );
                break;
            }
        }
    }
    Ok((status, parser.into_suites()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn libtest_args_after_the_second_separator() {
        let args = strings(&["--test", "daemon", "--", "--nocapture"]);
        let (cargo, test) = split_args(&args);
        assert_eq!(cargo, ["--test", "daemon"]);
        assert_eq!(test, ["--nocapture"]);

        let args = strings(&["--", "--test-threads=1"]);
        let (cargo, test) = split_args(&args);
        assert!(cargo.is_empty());
        assert_eq!(test, ["--test-threads=1"]);

        let args = strings(&["-p", "xtask"]);
        assert_eq!(split_args(&args), (&args[..], &[][..]));
    }

    #[test]
    fn one_run_per_suite_with_every_default_member() {
        let runs = per_suite_runs(&strings(&["--nocapture"])).unwrap();
        let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels.first(), Some(&"unit tests"));
        assert_eq!(labels.last(), Some(&"doc tests"));
        assert!(labels.contains(&"daemon"), "{labels:?}");
        for run in &runs {
            assert!(run.args.windows(2).any(|w| w == ["-p", "perf-user"]));
            assert!(run.args.windows(2).any(|w| w == ["-p", "xtask"]));
            assert!(!run.args.iter().any(|a| a == "perf-ebpf"), "bpf-only crate");
            assert!(run.args.contains(&"--no-fail-fast".to_string()));
            assert!(run.args.ends_with(&strings(&["--", "--nocapture"])));
        }
    }

    /// A child that writes to both streams, crashes and leaves a process
    /// holding the pipe: its lines are parsed in order and we do not hang.
    /// (Not echoed: an outer `cargo xtask test` would read them as real.)
    #[test]
    fn merged_streams_and_a_lingering_process() {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(
            "echo '     Running tests/a.rs (target/debug/deps/a-0123456789abcdef)' >&2; \
             echo 'test result: ok. 4 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.10s'; \
             echo '     Running tests/b.rs (target/debug/deps/b-0123456789abcdef)' >&2; \
             (sleep 30 &); exit 101",
        );
        let started = std::time::Instant::now();
        let (status, suites) = run_and_parse(&mut sh, false).unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(status.code(), Some(101));
        assert_eq!(suites.len(), 2);
        assert!(suites[0].ok());
        assert_eq!(suites[1].name, "b");
        assert_eq!(suites[1].verdict(), "FAILED (no result line)");
    }
}
