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
