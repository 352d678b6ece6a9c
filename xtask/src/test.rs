//! `cargo xtask test`: setup, the Debian packages the tests use, then `cargo test`.

use std::{env, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup};

/// Debian packages the tests need: gcc and libc6-dev build the C test
/// programs (gcc alone, without its recommends, cannot link), chromium is a
/// profiling target, iproute2 and procps provide `ip`, `ps` and friends.
pub const PACKAGES: &[&str] = &["gcc", "libc6-dev", "chromium", "iproute2", "procps"];

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test`, after `--` (e.g. `-- -p perf-user -- --test-threads=1`).
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

pub fn main(args: &Args) -> Result<()> {
    let ready = setup::ensure(setup::Mode::Install)?;
    packages()?;
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

/// Installs the missing ones among [`PACKAGES`] with apt-get.
fn packages() -> Result<()> {
    let list = PACKAGES.join(" ");
    if cmd::find_in_path("dpkg-query").is_none() {
        eprintln!(
            "checking Debian packages... skipped: dpkg-query not found (not Debian?); \
             make sure these are installed: {list}"
        );
        return Ok(());
    }
    let mut missing = Vec::new();
    for package in PACKAGES {
        if !installed(package)? {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        eprintln!("checking Debian packages {list}... ok");
        return Ok(());
    }
    eprintln!(
        "checking Debian packages {list}... missing: {}",
        missing.join(" ")
    );

    let mut install_args = vec!["install", "-y", "--no-install-recommends"];
    install_args.extend(&missing);
    let privileged = if cmd::is_root() {
        Privilege::Root
    } else if cmd::find_in_path("sudo").is_some() {
        Privilege::Sudo
    } else {
        bail!(
            "missing Debian packages: {}; install them as root: \
             apt-get update && apt-get install -y --no-install-recommends {}",
            missing.join(" "),
            missing.join(" ")
        );
    };
    let mut update = privileged.apt_get(&["update"]);
    eprintln!("installing Debian packages: {}", cmd::display(&update));
    cmd::run(&mut update)
        .context("`apt-get update` failed; check the network and /etc/apt/sources.list")?;
    let mut install = privileged.apt_get(&install_args);
    eprintln!("installing Debian packages: {}", cmd::display(&install));
    cmd::run(&mut install).with_context(|| {
        format!(
            "installing the Debian packages {} failed; the cause is above",
            missing.join(" ")
        )
    })
}

/// Whether dpkg says the package is installed ("install ok installed").
fn installed(package: &str) -> Result<bool> {
    let out = cmd::capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))?;
    // Exit status 1 with "no packages found matching": not installed.
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .last()
            == Some("installed"))
}

enum Privilege {
    Root,
    Sudo,
}

impl Privilege {
    fn apt_get(&self, args: &[&str]) -> Command {
        let mut command = match self {
            Self::Root => {
                let mut command = Command::new("apt-get");
                command.env("DEBIAN_FRONTEND", "noninteractive");
                command
            }
            // sudo resets the environment: pass the variable through env(1).
            Self::Sudo => {
                let mut command = Command::new("sudo");
                command.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
                command
            }
        };
        command.args(args);
        command
    }
}
