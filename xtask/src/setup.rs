//! `cargo xtask setup`: checks for, and installs, what building the eBPF
//! programs needs on top of a stable Rust: a nightly toolchain with rust-src
//! (aya-build runs `cargo +nightly build -Z build-std=core`) and bpf-linker
//! built against that nightly's own LLVM.

use std::{
    env,
    ffi::OsString,
    fs, io,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd;

/// The bpf-linker release that `setup` installs.
const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(clap::Args)]
pub struct Args {
    /// Only report what is missing (exit status 1 if something is); install nothing.
    #[arg(long)]
    check: bool,
}

pub fn main(args: &Args) -> Result<()> {
    let mode = if args.check {
        Mode::Check
    } else {
        Mode::Install
    };
    ensure(mode).map(drop)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Report every check and install what is missing.
    Install,
    /// Install what is missing; say nothing about what is present.
    Quiet,
    /// Report every check, install nothing, fail if something is missing.
    Check,
}

/// What the other subcommands need to know once setup is done.
#[derive(Default)]
pub struct Ready {
    /// Directory of bpf-linker when it is not on PATH (it is in cargo's
    /// install directory): cargo commands that build the eBPF programs need
    /// it on their PATH.
    bpf_linker_dir: Option<PathBuf>,
}

impl Ready {
    fn for_linker(path: &Path, mode: Mode) -> Self {
        if cmd::find_in_path("bpf-linker").as_deref() == Some(path) {
            return Self::default();
        }
        let dir = path.parent().map(Path::to_path_buf);
        if let (Some(dir), true) = (&dir, mode != Mode::Quiet) {
            eprintln!(
                "note: {} is not on PATH; xtask adds it for its own cargo commands, \
                 add it to PATH for plain `cargo build`",
                dir.display()
            );
        }
        Self {
            bpf_linker_dir: dir,
        }
    }

    /// `cargo` in the workspace root, able to find bpf-linker.
    pub fn cargo(&self) -> Result<Command> {
        let mut cargo = cmd::cargo();
        if let Some(dir) = &self.bpf_linker_dir {
            cargo.env("PATH", cmd::path_with(dir)?);
        }
        Ok(cargo)
    }
}

/// Runs the setup steps in `mode`.
pub fn ensure(mode: Mode) -> Result<Ready> {
    let mut setup = Setup {
        mode,
        missing: Vec::new(),
        toolchains: Vec::new(),
    };
    setup.rustup()?;
    let nightly = setup.nightly()?;
    setup.rust_src(nightly)?;
    let ready = setup.bpf_linker(nightly)?;
    if !setup.missing.is_empty() {
        bail!(
            "missing or broken: {}; run `cargo xtask setup` to install {}",
            setup.missing.join(", "),
            if setup.missing.len() == 1 {
                "it"
            } else {
                "them"
            }
        );
    }
    Ok(ready)
}

struct Setup {
    mode: Mode,
    /// What `--check` found missing.
    missing: Vec<&'static str>,
    /// First words of `rustup toolchain list`.
    toolchains: Vec<String>,
}

impl Setup {
    fn ok(&self, what: &str, detail: &str) {
        if self.mode != Mode::Quiet {
            eprintln!("checking {what}... ok ({detail})");
        }
    }

    /// Reports `what` as missing; returns whether to install it.
    fn missing(&mut self, what: &'static str, why: &str, fix: &str) -> bool {
        eprintln!("checking {what}... {why}");
        if self.mode == Mode::Check {
            eprintln!("  fix: {fix}");
            self.missing.push(what);
            false
        } else {
            true
        }
    }

    fn installing(what: &str, cmd: &Command) {
        eprintln!("installing {what}: {}", cmd::display(cmd));
    }

    fn rustup(&mut self) -> Result<()> {
        let version = cmd::output(Command::new("rustup").arg("--version"))?;
        self.ok("rustup", version.lines().next().unwrap_or_default().trim());
        let list = cmd::output(Command::new("rustup").args(["toolchain", "list"]))?;
        self.toolchains = list
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        Ok(())
    }

    /// Step 1. Returns whether nightly is (now) installed.
    fn nightly(&mut self) -> Result<bool> {
        const WHAT: &str = "nightly toolchain";
        if let Some(name) = self.toolchains.iter().find(|t| is_nightly(t)) {
            self.ok(WHAT, name);
            return Ok(true);
        }
        let mut install = Command::new("rustup");
        install.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
        let fix = cmd::display(&install);
        if !self.missing(WHAT, "missing (not in `rustup toolchain list`)", &fix) {
            return Ok(false);
        }
        Self::installing(WHAT, &install);
        cmd::run(&mut install).context(
            "installing the nightly toolchain failed; check network access to \
             static.rust-lang.org and run `cargo xtask setup` again",
        )?;
        Ok(true)
    }

    /// Step 2.
    fn rust_src(&mut self, nightly: bool) -> Result<()> {
        const WHAT: &str = "rust-src for nightly";
        let mut install = Command::new("rustup");
        install.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
        if !nightly {
            self.missing(
                WHAT,
                "missing (no nightly toolchain)",
                &cmd::display(&install),
            );
            return Ok(());
        }
        let installed = cmd::output(Command::new("rustup").args([
            "component",
            "list",
            "--toolchain",
            "nightly",
            "--installed",
        ]))?;
        if installed
            .lines()
            .any(|line| line.split_whitespace().next() == Some("rust-src"))
        {
            self.ok(WHAT, "installed");
            return Ok(());
        }
        if !self.missing(WHAT, "missing", &cmd::display(&install)) {
            return Ok(());
        }
        Self::installing(WHAT, &install);
        cmd::run(&mut install).context(
            "installing rust-src failed; check network access to static.rust-lang.org \
             and run `cargo xtask setup` again",
        )
    }

    /// Step 3.
    fn bpf_linker(&mut self, nightly: bool) -> Result<Ready> {
        const WHAT: &str = "bpf-linker";
        let (why, force) = match Linker::locate() {
            Linker::Works { path, version } => {
                self.ok(WHAT, &format!("{version}, {}", path.display()));
                return Ok(Ready::for_linker(&path, self.mode));
            }
            Linker::Broken { path, why } => (
                format!(
                    "broken: {} does not run ({why}); it is probably linked against \
                     the LLVM of an older nightly",
                    path.display()
                ),
                true,
            ),
            Linker::Missing => (
                format!(
                    "missing (not on PATH, not in {})",
                    install_dir()
                        .map_or_else(|| "~/.cargo/bin".into(), |d| d.display().to_string())
                ),
                false,
            ),
        };
        // The install command needs the nightly's sysroot and LLVM version;
        // with --check and no nightly, just point at setup.
        let plan = if nightly {
            Some(self.plan_bpf_linker_install(force)?)
        } else {
            None
        };
        let fix = plan.as_ref().map_or_else(
            || "install the nightly toolchain, then run `cargo xtask setup`".to_owned(),
            |plan| {
                format!(
                    "{}{}",
                    plan.symlink
                        .as_ref()
                        .map_or_else(String::new, |(link, target)| {
                            format!("ln -s {} {} && ", target.to_string_lossy(), link.display())
                        }),
                    cmd::display(&plan.install)
                )
            },
        );
        if !self.missing(WHAT, &why, &fix) {
            return Ok(Ready::default());
        }
        let mut plan =
            plan.ok_or_else(|| anyhow!("no nightly toolchain to build bpf-linker with"))?;
        if let Some((link, target)) = &plan.symlink {
            eprintln!(
                "creating libLLVM.so symlink: ln -sf {} {}",
                target.to_string_lossy(),
                link.display()
            );
            create_symlink(link, target)?;
        }
        Self::installing(
            &format!("bpf-linker {BPF_LINKER_VERSION} (takes about a minute)"),
            &plan.install,
        );
        cmd::run(&mut plan.install).context(
            "installing bpf-linker failed; the cause is above (it needs network access \
             to crates.io and a C compiler: `apt-get install gcc libc6-dev`); \
             fix it and run `cargo xtask setup` again",
        )?;
        match Linker::locate() {
            Linker::Works { path, version } => {
                eprintln!("installed {version} at {}", path.display());
                Ok(Ready::for_linker(&path, self.mode))
            }
            Linker::Broken { path, why } => bail!(
                "bpf-linker at {} still does not run after installing ({why}); if it is not \
                 the one cargo just installed, remove it or put cargo's bin directory first on PATH",
                path.display()
            ),
            Linker::Missing => bail!(
                "`cargo install` succeeded but bpf-linker is neither on PATH nor in {}; \
                 check cargo's install.root setting",
                install_dir().map_or_else(|| "~/.cargo/bin".into(), |d| d.display().to_string())
            ),
        }
    }

    fn plan_bpf_linker_install(&self, force: bool) -> Result<Plan> {
        let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
        let sysroot = PathBuf::from(sysroot.trim());
        if !sysroot.is_dir() {
            bail!(
                "`rustc +nightly --print sysroot` printed {}, which is not a directory; \
                 reinstall nightly: rustup toolchain install nightly --profile minimal --force",
                sysroot.display()
            );
        }
        let version = cmd::output(Command::new("rustc").args(["+nightly", "-vV"]))?;
        let llvm = llvm_major(&version)?;
        let symlink = missing_libllvm_symlink(&sysroot.join("lib"))?;

        // Build with stable (or the default toolchain), not with nightly: a
        // nightly regression must not break the linker build. Run outside the
        // workspace so that its .cargo/config.toml cannot change the build.
        let mut install = Command::new("cargo");
        if self.toolchains.iter().any(|t| is_stable(t)) {
            install.arg("+stable");
        } else {
            install.env_remove("RUSTUP_TOOLCHAIN");
        }
        install
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm}"),
            ])
            .env("LLVM_PREFIX", &sysroot)
            .current_dir(env::temp_dir());
        if force {
            install.arg("--force");
        }
        Ok(Plan { symlink, install })
    }
}

struct Plan {
    /// `(link, target)` when the `libLLVM.so` symlink must be created first.
    symlink: Option<(PathBuf, OsString)>,
    install: Command,
}

enum Linker {
    Works { path: PathBuf, version: String },
    Broken { path: PathBuf, why: String },
    Missing,
}

impl Linker {
    fn locate() -> Self {
        let Some(path) = cmd::find_in_path("bpf-linker").or_else(|| {
            install_dir()
                .map(|dir| dir.join("bpf-linker"))
                .filter(|p| cmd::is_executable(p))
        }) else {
            return Self::Missing;
        };
        match cmd::output(Command::new(&path).arg("--version")) {
            Ok(out) => Self::Works {
                path,
                version: out.lines().next().unwrap_or_default().trim().to_owned(),
            },
            Err(err) => Self::Broken {
                path,
                why: err.to_string(),
            },
        }
    }
}

/// Where `cargo install` puts binaries.
fn install_dir() -> Option<PathBuf> {
    if let Some(root) = env::var_os("CARGO_INSTALL_ROOT") {
        return Some(PathBuf::from(root).join("bin"));
    }
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(home).join("bin"));
    }
    env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo").join("bin"))
}

/// `nightly` or `nightly-<host>`, not a dated `nightly-2025-01-01-<host>`.
fn is_nightly(toolchain: &str) -> bool {
    is_channel(toolchain, "nightly")
}

fn is_stable(toolchain: &str) -> bool {
    is_channel(toolchain, "stable")
}

fn is_channel(toolchain: &str, channel: &str) -> bool {
    match toolchain.strip_prefix(channel) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('-')
            .and_then(|host| host.chars().next())
            .is_some_and(|c| !c.is_ascii_digit()),
        None => false,
    }
}

/// The LLVM major version in `rustc -vV` output ("LLVM version: 22.1.4" → 22).
fn llvm_major(rustc_version: &str) -> Result<u32> {
    let version = rustc_version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))
        .ok_or_else(|| {
            anyhow!("`rustc +nightly -vV` printed no \"LLVM version:\" line:\n{rustc_version}")
        })?;
    let major = version.trim().split('.').next().unwrap_or_default();
    major
        .parse()
        .with_context(|| format!("cannot read the LLVM major version in {:?}", version.trim()))
}

/// bpf-linker's build (llvm-sys with LLVM_PREFIX set to the nightly sysroot)
/// links `-lLLVM`, but the toolchain ships only `libLLVM.so.<version>`.
/// Returns `(link, target)` when `lib/libLLVM.so` must be created, `None`
/// when it is already there.
fn missing_libllvm_symlink(lib: &Path) -> Result<Option<(PathBuf, OsString)>> {
    let entries = fs::read_dir(lib).with_context(|| format!("cannot list {}", lib.display()))?;
    let mut candidates = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", lib.display()))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("libLLVM.so.") {
            candidates.push(name);
        }
    }
    candidates.sort();
    let target = match candidates.as_slice() {
        [one] => one.clone(),
        [] => bail!(
            "no libLLVM.so.* in {}: this nightly ships no shared LLVM to build bpf-linker \
             against; reinstall it with `rustup toolchain install nightly --profile minimal --force`",
            lib.display()
        ),
        several => bail!(
            "several libLLVM.so.* in {} ({}); remove the stale ones, or create the \
             libLLVM.so symlink by hand, and run `cargo xtask setup` again",
            lib.display(),
            several
                .iter()
                .map(|n| n.to_string_lossy())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let link = lib.join("libLLVM.so");
    match fs::symlink_metadata(&link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let current = fs::read_link(&link)
                .with_context(|| format!("cannot read symlink {}", link.display()))?;
            // Right, or an absolute path to the same file: keep it.
            if current.as_os_str() == target || current == lib.join(&target) {
                Ok(None)
            } else {
                Ok(Some((link, target)))
            }
        }
        // A real file (or directory) that someone put there: leave it alone.
        Ok(_) => Ok(None),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Some((link, target))),
        Err(err) => Err(err).with_context(|| format!("cannot inspect {}", link.display())),
    }
}

/// `ln -sf target link`.
fn create_symlink(link: &Path, target: &OsString) -> Result<()> {
    let fix = || {
        format!(
            "cannot create the symlink {} -> {}; create it by hand: ln -sf {} {}",
            link.display(),
            target.to_string_lossy(),
            target.to_string_lossy(),
            link.display()
        )
    };
    match fs::remove_file(link) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(fix),
    }
    std::os::unix::fs::symlink(target, link).with_context(fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_names() {
        assert!(is_nightly("nightly"));
        assert!(is_nightly("nightly-x86_64-unknown-linux-gnu"));
        assert!(!is_nightly("nightly-2025-01-01-x86_64-unknown-linux-gnu"));
        assert!(!is_nightly("stable-x86_64-unknown-linux-gnu"));
        assert!(!is_nightly("nightlyfoo"));
        assert!(is_stable("stable-x86_64-unknown-linux-gnu"));
        assert!(!is_stable("1.95.0-x86_64-unknown-linux-gnu"));
    }

    #[test]
    fn llvm_major_from_rustc() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
                  host: x86_64-unknown-linux-gnu\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(vv).unwrap(), 22);
        assert!(llvm_major("rustc 1.0\n").is_err());
        assert!(llvm_major("LLVM version: x.1\n").is_err());
    }

    #[test]
    fn libllvm_symlink() {
        let lib = env::temp_dir().join(format!("xtask-libllvm-{}", std::process::id()));
        let _ = fs::remove_dir_all(&lib);
        fs::create_dir_all(&lib).unwrap();
        assert!(missing_libllvm_symlink(&lib).is_err(), "no libLLVM.so.*");

        let real = "libLLVM.so.22.1-rust-1.97.0-nightly";
        fs::write(lib.join(real), b"").unwrap();
        fs::write(lib.join("libLLVM-22-rust-1.97.0-nightly.so"), b"").unwrap();
        let (link, target) = missing_libllvm_symlink(&lib).unwrap().unwrap();
        assert_eq!(
            (link.as_path(), target.to_str()),
            (lib.join("libLLVM.so").as_path(), Some(real))
        );
        create_symlink(&link, &target).unwrap();
        assert!(missing_libllvm_symlink(&lib).unwrap().is_none());

        // A stale link (older nightly) is replaced.
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("libLLVM.so.21.1-rust-1.90.0-nightly", &link).unwrap();
        let (link, target) = missing_libllvm_symlink(&lib).unwrap().unwrap();
        create_symlink(&link, &target).unwrap();
        assert_eq!(fs::read_link(&link).unwrap().to_str(), Some(real));

        fs::write(lib.join("libLLVM.so.23.1-rust-1.99.0-nightly"), b"").unwrap();
        assert!(missing_libllvm_symlink(&lib).is_err(), "ambiguous");
        fs::remove_dir_all(&lib).unwrap();
    }
}
