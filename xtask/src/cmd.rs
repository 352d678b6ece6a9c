//! Running external programs with clear errors: a program that is missing
//! is reported with how to get it, a command that fails is reported with the
//! full command line and its exit status (and stderr when it was captured).

use std::{
    env,
    ffi::{OsStr, OsString},
    io,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output, Stdio},
};

use anyhow::{Result, anyhow, bail};

/// The workspace root (the parent of the xtask crate).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in a subdirectory of the workspace")
}

/// The workspace's target directory, as cargo resolves it (CARGO_TARGET_DIR,
/// config): where every xtask command finds and puts its builds and reports.
pub fn target_dir() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(workspace_root())
        .no_deps()
        .exec()
        .context("`cargo metadata` failed; cannot find the target directory")?;
    Ok(metadata.target_directory.into_std_path_buf())
}

/// `cargo` (the rustup proxy, so that `+toolchain` works and the toolchain
/// running xtask is inherited through `RUSTUP_TOOLCHAIN`), run in the
/// workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// The first executable file called `name` in the directories of `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `PATH` with `dir` in front, for commands that need a program from `dir`.
pub fn path_with(dir: &Path) -> Result<OsString> {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    env::join_paths(dirs).map_err(|e| anyhow!("cannot add {} to PATH: {e}", dir.display()))
}

/// The command as a shell line, with the environment it sets: for messages.
pub fn display(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let mut assignment = key.to_os_string();
            assignment.push("=");
            assignment.push(value);
            words.push(quote(&assignment));
        }
    }
    words.push(quote(cmd.get_program()));
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=+:@,%^".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// How to get a program that is not installed.
fn install_hint(program: &str) -> &'static str {
    match program {
        "rustup" => {
            "install rustup from your distribution (Debian 13+: `apt-get install rustup`) \
             or from https://rustup.rs, and put ~/.cargo/bin on PATH"
        }
        "cargo" | "rustc" => {
            "install Rust with rustup (https://rustup.rs) and put ~/.cargo/bin on PATH"
        }
        "apt-get" | "dpkg-query" => {
            "this step needs a Debian-based system; install the listed packages \
             with your package manager instead"
        }
        "sudo" => "run as root, or install sudo (`apt-get install sudo`)",
        _ => "install it, or put the directory that holds it on PATH",
    }
}

fn start_error(cmd: &Command, err: io::Error) -> anyhow::Error {
    let program = cmd.get_program().to_string_lossy();
    if err.kind() == io::ErrorKind::NotFound {
        anyhow!("{program} not found: {}", install_hint(&program))
    } else {
        anyhow!("cannot start `{}`: {err}", display(cmd))
    }
}

/// "exit status 3" or "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Runs the command with inherited stdio and returns its status, whatever it is.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status().map_err(|e| start_error(cmd, e))
}

/// Runs the command with inherited stdio; fails unless it exits with 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({})", display(cmd), describe(status));
    }
    Ok(())
}

/// Runs the command with stdout and stderr captured, whatever its status.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| start_error(cmd, e))
}

/// Runs the command and returns its stdout; fails, with its stderr, unless it
/// exits with 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        if stderr.is_empty() {
            bail!("`{}` failed ({})", display(cmd), describe(out.status));
        }
        bail!(
            "`{}` failed ({}): {stderr}",
            display(cmd),
            describe(out.status)
        );
    }
    String::from_utf8(out.stdout)
        .map_err(|_| anyhow!("`{}` printed output that is not UTF-8", display(cmd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_and_shows_env() {
        let mut cmd = Command::new("cargo");
        cmd.env("LLVM_PREFIX", "/a b")
            .env_remove("RUSTUP_TOOLCHAIN")
            .args(["install", "it's", "--features", "llvm-22"]);
        assert_eq!(
            display(&cmd),
            r"'LLVM_PREFIX=/a b' cargo install 'it'\''s' --features llvm-22"
        );
    }

    #[test]
    fn missing_program_names_the_fix() {
        let err = output(&mut Command::new("rustup-that-does-not-exist")).unwrap_err();
        assert!(err.to_string().contains("not found: install it"), "{err}");
    }

    #[test]
    fn failure_shows_command_status_and_stderr() {
        let err = output(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("exit status 3") && msg.contains("oops"),
            "{msg}"
        );
    }
}
