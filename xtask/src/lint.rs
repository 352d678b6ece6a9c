//! `cargo xtask lint`: rustfmt check and clippy with warnings denied.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup};

pub fn main() -> Result<()> {
    component("rustfmt", "fmt")?;
    component("clippy", "clippy")?;
    // clippy builds perf-user's build script, which builds the eBPF programs.
    let ready = setup::ensure(setup::Mode::Quiet)?;

    let mut failed = Vec::new();
    let mut fmt = cmd::cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    let mut clippy = ready.cargo()?;
    clippy.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    for (what, mut command) in [
        ("formatting (run `cargo fmt --all`)", fmt),
        ("clippy", clippy),
    ] {
        eprintln!("running: {}", cmd::display(&command));
        if let Err(err) = cmd::run(&mut command) {
            eprintln!("{err:#}");
            failed.push(what);
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}; see the output above", failed.join(", "));
    }
    Ok(())
}

/// Adds the rustup component behind `cargo <subcommand>` when it is missing
/// from the toolchain xtask runs with.
fn component(component: &str, subcommand: &str) -> Result<()> {
    let works = cmd::capture(cmd::cargo().args([subcommand, "--version"]))?
        .status
        .success();
    if works {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["component", "add", component]);
    eprintln!("installing {component}: {}", cmd::display(&add));
    cmd::run(&mut add)
        .with_context(|| format!("installing {component} failed; check network access and retry"))
}
