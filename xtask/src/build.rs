//! `cargo xtask build`: the missing setup steps, then `cargo build -p perf-user`.

use anyhow::{Context as _, Result};

use crate::{cmd, cross, setup};

#[derive(clap::Args)]
pub struct Args {
    /// Build with the release profile.
    #[arg(long)]
    release: bool,
    /// Cross-build for this target (aarch64-unknown-linux-gnu,
    /// aarch64-unknown-linux-musl, x86_64-unknown-linux-musl): installs the
    /// cross toolchain; the binary goes to target/cross/<target>/.
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,
    /// Extra arguments for `cargo build`, after `--`.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

pub fn main(args: &Args) -> Result<()> {
    if let Some(triple) = &args.target {
        let target = cross::Target::parse(triple)?;
        return cross::build(target, args.release, &args.cargo_args).map(drop);
    }
    build(args.release, &args.cargo_args)
}

/// Installs what is missing (quietly when nothing is), then builds perf-user.
pub fn build(release: bool, cargo_args: &[String]) -> Result<()> {
    let ready = setup::ensure(setup::Mode::Quiet)?;
    let mut cargo = ready.cargo()?;
    cargo.args(["build", "--package", "perf-user"]);
    if release {
        cargo.arg("--release");
    }
    cargo.args(cargo_args);
    eprintln!("running: {}", cmd::display(&cargo));
    cmd::run(&mut cargo).context("building perf-user failed; the errors are above")
}
