use std::process::ExitCode;

use clap::Parser as _;
use perf_user::{cli::Cli, commands};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.btf
        && let Err(e) = perf_user::btf::use_file(path)
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
