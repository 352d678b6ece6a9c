//! Debian packages: check which of a list are installed and install the
//! missing ones with apt-get (directly as root, through sudo otherwise).
//! Shared by `test` and `bench`.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// Installs the missing ones among `packages` with apt-get. `what` names
/// the set in messages ("Debian packages", "benchmark tools").
///
/// Without dpkg-query (not Debian) it only warns and lists the packages.
pub fn ensure(what: &str, packages: &[&str]) -> Result<()> {
    let list = packages.join(" ");
    if cmd::find_in_path("dpkg-query").is_none() {
        eprintln!(
            "checking {what}... skipped: dpkg-query not found (not Debian?); \
             make sure these are installed: {list}"
        );
        return Ok(());
    }
    let mut missing = Vec::new();
    for package in packages {
        if !installed(package)? {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        eprintln!("checking {what} {list}... ok");
        return Ok(());
    }
    eprintln!("checking {what} {list}... missing: {}", missing.join(" "));

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
    eprintln!("installing {what}: {}", cmd::display(&update));
    cmd::run(&mut update)
        .context("`apt-get update` failed; check the network and /etc/apt/sources.list")?;
    let mut install = privileged.apt_get(&install_args);
    eprintln!("installing {what}: {}", cmd::display(&install));
    cmd::run(&mut install).with_context(|| {
        format!(
            "installing the Debian packages {} failed; the cause is above",
            missing.join(" ")
        )
    })
}

/// Whether dpkg says the package is installed ("install ok installed").
pub fn installed(package: &str) -> Result<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_package_is_not_installed() {
        if cmd::find_in_path("dpkg-query").is_none() {
            return;
        }
        assert!(!installed("no-such-package-xtask-test").unwrap());
    }
}
