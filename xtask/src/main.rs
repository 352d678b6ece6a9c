//! Project tasks: `cargo xtask <setup|build|run|test|lint|bench|test-cross|vm-test>`.
//!
//! Each subcommand lives in its own module; `cmd` runs external programs
//! with error messages that name the cause and the fix.

mod apt;
mod bench;
mod build;
mod cmd;
mod cross;
mod libtest;
mod lint;
mod run;
mod setup;
mod smoke;
mod soak;
mod test;
mod vm_test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Project tasks for perf-user"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building the eBPF programs needs: nightly, rust-src, bpf-linker.
    Setup(setup::Args),
    /// Build perf-user (runs the missing setup steps first).
    Build(build::Args),
    /// Build perf-user and run it (through `sudo -E` when not root).
    Run(run::Args),
    /// Install what the tests need, then run every test suite (all to the end,
    /// whatever fails) and print a summary ending in `N passed, M failed`.
    Test(test::Args),
    /// Check formatting and run clippy with warnings denied.
    Lint,
    /// Measure perf-user's overhead next to perf, bpftrace and libbpf-tools
    /// (root; writes target/bench/report.md and report.json).
    Bench(bench::Args),
    /// Cross-build perf-user for another target and run its unit tests
    /// there under qemu-user (default aarch64-unknown-linux-gnu).
    TestCross(cross::TestArgs),
    /// Boot Debian kernels (aarch64, x86_64) under qemu and run perf-user's
    /// smoke tests inside, with the kernel's BTF hidden.
    VmTest(vm_test::Args),
    /// Run the daemon with every collector for an hour under mixed load and
    /// check that memory and BPF maps stay flat (root; writes target/soak/report.md).
    Soak(soak::Args),
    /// Run each command of the release binary as an unprivileged user with
    /// only the documented capabilities, tracefs/debugfs/bpffs unmounted
    /// (root; creates the user perf-user-smoke). PASS/FAIL per command.
    SmokeNonroot(smoke::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::main(&args).map(|()| ExitCode::SUCCESS),
        Command::Build(args) => build::main(&args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run::main(&args),
        Command::Test(args) => test::main(&args),
        Command::Lint => lint::main().map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::main(&args).map(|()| ExitCode::SUCCESS),
        Command::TestCross(args) => cross::test_main(&args).map(|()| ExitCode::SUCCESS),
        Command::VmTest(args) => vm_test::main(&args).map(|()| ExitCode::SUCCESS),
        Command::Soak(args) => soak::main(&args),
        Command::SmokeNonroot(args) => smoke::main(&args),
    };
    result.unwrap_or_else(|err| {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        ExitCode::FAILURE
    })
}
