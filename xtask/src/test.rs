//! `cargo xtask test`: setup, the Debian packages the tests use, then `cargo test`.

use std::env;

use anyhow::{Context as _, Result};

use crate::{apt, cmd, setup};

/// Debian packages the tests need: gcc and libc6-dev build the C test
/// programs (gcc alone, without its recommends, cannot link), chromium is a
/// profiling target, iproute2 and procps provide `ip`, `ps` and friends,
/// prometheus (with promtool) scrapes and checks the daemon's metrics,
/// python3 is what the leaks test traces as a user would.
pub const PACKAGES: &[&str] = &[
    "gcc",
    "libc6-dev",
    "chromium",
    "iproute2",
    "procps",
    "python3",
    "prometheus",
    "prometheus-alertmanager",
];

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test`, after `--` (e.g. `-- -p perf-user -- --test-threads=1`).
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

pub fn main(args: &Args) -> Result<()> {
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
    let mut cargo = ready.cargo()?;
    cargo.arg("test").args(&args.cargo_args);
    eprintln!("running: {}", cmd::display(&cargo));
    cmd::run(&mut cargo).context("tests failed; see the output above")
}
