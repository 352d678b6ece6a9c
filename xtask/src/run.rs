//! `cargo xtask run`: builds perf-user, then runs it with root privileges
//! (through `sudo -E` when xtask is not root) and exits with its status.

use std::{
    ffi::OsString,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::{Command, ExitCode},
};

use anyhow::Result;

use crate::{build, cmd};

#[derive(clap::Args)]
pub struct Args {
    /// Build and run the release binary.
    #[arg(long)]
    release: bool,
    /// Arguments for perf-user, after `--`.
    #[arg(last = true)]
    args: Vec<OsString>,
}

pub fn main(args: &Args) -> Result<ExitCode> {
    build::build(args.release, &[])?;

    let profile = if args.release { "release" } else { "debug" };
    let binary = cmd::target_dir()?.join(profile).join("perf-user");

    let mut command = if cmd::is_root() {
        Command::new(&binary)
    } else if let Some(sudo) = cmd::find_in_path("sudo") {
        eprintln!(
            "not root: running perf-user through sudo -E (it needs root, or CAP_BPF+CAP_PERFMON)"
        );
        let mut command = Command::new(sudo);
        command.arg("-E").arg(&binary);
        command
    } else {
        eprintln!(
            "warning: not root and no sudo: perf-user needs root, or CAP_BPF and CAP_PERFMON \
             (e.g. `setcap cap_bpf,cap_perfmon+ep {}`); trying anyway",
            binary.display()
        );
        Command::new(&binary)
    };
    command.args(&args.args);
    eprintln!("running: {}", cmd::display(&command));

    // Ctrl-C sends SIGINT to the whole foreground process group: perf-user
    // gets it and reports what it has; xtask must survive it to pass on
    // perf-user's exit status.
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // code; it cannot break memory safety. No other thread is changing it.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    // SAFETY: runs in the forked child before exec; signal() is
    // async-signal-safe and allocates nothing. An ignored signal stays
    // ignored across exec, so the child must get the default back.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        })
    };
    let status = cmd::status(&mut command)?;

    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
