//! One module per command; each turns parsed arguments into a report.

pub mod advise;
pub mod latency;
pub mod leaks;
pub mod profile;
pub mod run;

use crate::cli::{Cli, Command};

/// Runs the command the user asked for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Profile(args) => profile::run(args).await,
        Command::Leaks(args) => leaks::run(args).await,
        Command::Latency(args) => latency::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Advise(args) => advise::run(args).await,
        Command::Revert(args) => advise::revert(args).await,
    }
}

/// Before any eBPF loading: the privileges are there (or the error says which
/// are missing and how to grant them), and the locked-memory limit is raised
/// where the kernel still charges maps to it.
fn ready_for_ebpf() -> anyhow::Result<()> {
    crate::privileges::check().map_err(anyhow::Error::msg)?;
    if let Some(warning) = crate::ebpf::raise_memlock_limit() {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// Once the programs are attached: gives up the capabilities the rest of
/// the command does not need (a failure only warns: it changes nothing the
/// user asked for).
fn drop_privileges(stage: crate::privileges::Stage) {
    if let Err(e) = crate::privileges::drop_after_attach(stage) {
        eprintln!("warning: {e}; the command keeps its capabilities");
    }
}

/// Where a report goes: the `--output` file, created now so that a bad path
/// fails before the wait rather than after it, or standard output.
fn open_output(path: Option<&std::path::Path>) -> anyhow::Result<Box<dyn std::io::Write>> {
    use anyhow::Context as _;
    use std::io::BufWriter;
    Ok(match path {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create output file {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    })
}
