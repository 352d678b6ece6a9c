//! Cross-building perf-user for another architecture or C library:
//! `cargo xtask build --target TRIPLE` and `cargo xtask test-cross`.
//!
//! User space is linked with Debian's cross toolchain (gcc-aarch64-linux-gnu
//! and friends); the kernel programs need nothing extra, because perf-user's
//! build script hands aya-build the *target's* `CARGO_CFG_TARGET_ARCH`, which
//! becomes `--cfg bpf_target_arch=...` for the eBPF crate (the register
//! layout of `pt_regs` that uprobes read differs per architecture).
//!
//! Cross builds use their own target directory (`target/cross`), so that a
//! long cross build does not hold the lock on `target/` that host builds and
//! tests wait for.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};
use object::{
    Endianness, Object as _,
    read::elf::{ElfFile64, ProgramHeader as _},
};

use crate::{apt, cmd, setup};

/// A CPU architecture perf-user runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// 64-bit ARM: Raspberry Pi 3/4/5 with a 64-bit OS, Graviton, Ampere.
    Aarch64,
    /// 64-bit x86.
    #[value(name = "x86_64", alias = "x86-64", alias = "amd64")]
    X86_64,
}

impl Arch {
    /// The architecture xtask itself runs on.
    pub fn host() -> Option<Self> {
        match std::env::consts::ARCH {
            "aarch64" => Some(Self::Aarch64),
            "x86_64" => Some(Self::X86_64),
            _ => None,
        }
    }

    /// Rust's and the kernel's name (`uname -m`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Aarch64 => "aarch64",
            Self::X86_64 => "x86_64",
        }
    }

    /// Debian's name of the architecture (`dpkg --print-architecture`).
    pub fn debian(self) -> &'static str {
        match self {
            Self::Aarch64 => "arm64",
            Self::X86_64 => "amd64",
        }
    }

    /// The GNU triple of Debian's cross toolchain (`<triple>-gcc`).
    fn gnu_triple(self) -> &'static str {
        match self {
            Self::Aarch64 => "aarch64-linux-gnu",
            Self::X86_64 => "x86_64-linux-gnu",
        }
    }

    /// Debian's package of the cross compiler for this architecture.
    fn cross_gcc_package(self) -> &'static str {
        match self {
            Self::Aarch64 => "gcc-aarch64-linux-gnu",
            Self::X86_64 => "gcc-x86-64-linux-gnu",
        }
    }

    /// Debian's package of this architecture's C library for cross builds:
    /// headers, crt files, libc.so and libc.a.
    fn cross_libc_package(self) -> &'static str {
        match self {
            Self::Aarch64 => "libc6-dev-arm64-cross",
            Self::X86_64 => "libc6-dev-amd64-cross",
        }
    }

    /// Where Debian's cross libc lives: qemu-user's `-L` (the sysroot that
    /// holds the dynamic linker).
    fn cross_sysroot(self) -> PathBuf {
        Path::new("/usr").join(self.gnu_triple())
    }

    /// The C compiler that builds (and links) for this architecture, and the
    /// Debian packages that provide it: the native gcc on a host of the same
    /// architecture, Debian's cross gcc otherwise.
    pub fn c_compiler(self) -> (String, Vec<&'static str>) {
        if Self::host() == Some(self) {
            ("gcc".into(), vec!["gcc", "libc6-dev"])
        } else {
            (
                format!("{}-gcc", self.gnu_triple()),
                vec![self.cross_gcc_package(), self.cross_libc_package()],
            )
        }
    }

    /// The qemu-user emulator that runs this architecture's programs.
    fn qemu_user(self) -> &'static str {
        match self {
            Self::Aarch64 => "qemu-aarch64",
            Self::X86_64 => "qemu-x86_64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A target triple xtask knows how to build for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub triple: &'static str,
    pub arch: Arch,
    /// A musl target: a static binary that runs on any Linux distribution
    /// of the architecture (Rust's musl targets ship their own C library).
    pub musl: bool,
}

/// The targets `--target` accepts.
pub const TARGETS: &[Target] = &[
    Target {
        triple: "x86_64-unknown-linux-gnu",
        arch: Arch::X86_64,
        musl: false,
    },
    Target {
        triple: "x86_64-unknown-linux-musl",
        arch: Arch::X86_64,
        musl: true,
    },
    Target {
        triple: "aarch64-unknown-linux-gnu",
        arch: Arch::Aarch64,
        musl: false,
    },
    Target {
        triple: "aarch64-unknown-linux-musl",
        arch: Arch::Aarch64,
        musl: true,
    },
];

impl Target {
    /// The target named `triple`, or an error listing the supported ones.
    pub fn parse(triple: &str) -> Result<Self> {
        TARGETS
            .iter()
            .find(|t| t.triple == triple)
            .copied()
            .ok_or_else(|| {
                anyhow!(
                    "unsupported --target {triple}; xtask can build for: {}",
                    TARGETS
                        .iter()
                        .map(|t| t.triple)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// The static (musl) target of `arch`.
    pub fn musl(arch: Arch) -> Self {
        *TARGETS
            .iter()
            .find(|t| t.arch == arch && t.musl)
            .expect("every architecture has a musl target")
    }

    /// Whether this target runs on the host without an emulator.
    fn native(self) -> bool {
        Arch::host() == Some(self.arch)
    }

    /// `CARGO_TARGET_<TRIPLE>_<what>`.
    fn cargo_env(self, what: &str) -> String {
        format!(
            "CARGO_TARGET_{}_{what}",
            self.triple.to_uppercase().replace('-', "_")
        )
    }

    /// The linker for cargo, when rustc's default (`cc`) cannot link for it.
    ///
    /// A musl target links its own crt objects and libc (rustc's
    /// "self-contained" mode), so any gcc driver for the architecture does;
    /// a glibc target also needs the cross glibc (libc6-dev-<arch>-cross).
    fn linker(self) -> Option<String> {
        (!self.native()).then(|| self.arch.c_compiler().0)
    }

    /// The C compiler for dependencies with C or assembly parts (ring,
    /// through reqwest's rustls), as cc-rs reads it from `CC_<triple>`.
    /// cc-rs would look for `<arch>-linux-musl-gcc` for a musl target, which
    /// Debian does not have: musl-gcc (musl-tools) when building for the
    /// host's architecture; otherwise the cross gcc, whose glibc headers
    /// suit only freestanding C such as ring's (Debian has no musl cross
    /// compiler).
    fn c_compiler(self) -> String {
        if self.musl && self.native() {
            "musl-gcc".into()
        } else {
            self.arch.c_compiler().0
        }
    }

    /// Debian packages the build needs on this host.
    fn packages(self) -> Vec<&'static str> {
        let (_, mut packages) = self.arch.c_compiler();
        // A musl cross target keeps the cross libc package: gcc drives the
        // link (musl itself comes with Rust) and compiles ring's C, whose
        // <stdint.h> is the cross libc's; without libc6-dev-<arch>-cross it
        // fell through to the host's /usr/include and failed on a fresh
        // machine (a prepared one had the package from vm-test).
        if self.musl && self.native() {
            packages.push("musl-tools");
        }
        packages
    }
}

/// Installs what building for `target` needs: the Rust standard library for
/// it (rustup) and the C toolchain that links it (apt).
pub fn ensure_toolchain(target: Target) -> Result<()> {
    rustup_target(target.triple)?;
    apt::ensure(
        &format!("C toolchain for {}", target.triple),
        &target.packages(),
    )?;
    if let Some(linker) = target.linker()
        && cmd::find_in_path(&linker).is_none()
    {
        bail!(
            "{linker} (the linker for {}) is not on PATH although its packages are \
                 installed; install {} (Debian/Ubuntu), or set {} to your cross linker",
            target.triple,
            target.packages().join(" "),
            target.cargo_env("LINKER")
        );
    }
    Ok(())
}

/// `rustup target add` unless the target's standard library is installed.
pub fn rustup_target(triple: &str) -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|line| line.trim() == triple) {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add", triple]);
    eprintln!(
        "checking Rust standard library for {triple}... missing; installing: {}",
        cmd::display(&add)
    );
    cmd::run(&mut add).with_context(|| {
        format!(
            "`rustup target add {triple}` failed; check network access to \
             static.rust-lang.org and run it again"
        )
    })
}

/// The target directory of cross builds: `target/cross`, apart from the
/// host's `target/`, so that its lock does not serialize with host builds.
pub fn target_dir() -> Result<PathBuf> {
    Ok(cmd::target_dir()?.join("cross"))
}

/// `cargo <subcommand>` set up to build for `target` in `target/cross`.
fn cargo_for(target: Target, ready: &setup::Ready, subcommand: &str) -> Result<Command> {
    let mut cargo = ready.cargo()?;
    cargo
        .arg(subcommand)
        .args(["--target", target.triple])
        .env("CARGO_TARGET_DIR", target_dir()?);
    // What the user set in the environment wins.
    let linker_var = target.cargo_env("LINKER");
    if let Some(linker) = target.linker()
        && std::env::var_os(&linker_var).is_none()
    {
        cargo.env(linker_var, linker);
    }
    let cc_var = format!("CC_{}", target.triple.replace('-', "_"));
    if std::env::var_os(&cc_var).is_none() {
        cargo.env(cc_var, target.c_compiler());
    }
    Ok(cargo)
}

/// Builds perf-user for `target` and checks that the result is an ELF
/// executable of the target's architecture. Returns its path.
pub fn build(target: Target, release: bool, cargo_args: &[String]) -> Result<PathBuf> {
    let ready = setup::ensure(setup::Mode::Quiet)?;
    ensure_toolchain(target)?;
    let mut cargo = cargo_for(target, &ready, "build")?;
    cargo.args(["--package", "perf-user"]);
    if release {
        cargo.arg("--release");
    }
    cargo.args(cargo_args);
    eprintln!(
        "cross-building perf-user for {} (a first build takes a few minutes): {}",
        target.triple,
        cmd::display(&cargo)
    );
    let started = Instant::now();
    cmd::run(&mut cargo).with_context(|| {
        format!(
            "building perf-user for {} failed; the errors are above",
            target.triple
        )
    })?;
    let binary = target_dir()?
        .join(target.triple)
        .join(if release { "release" } else { "debug" })
        .join("perf-user");
    let info = check_elf(&binary, target)?;
    eprintln!(
        "built {} in {:.0} s: {info}",
        binary.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(binary)
}

/// What [`check_elf`] found, for messages.
pub struct ElfInfo {
    arch: Arch,
    static_: bool,
    bytes: u64,
}

impl fmt::Display for ElfInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ELF executable, {}, {:.1} MiB",
            self.arch,
            if self.static_ {
                "statically linked"
            } else {
                "dynamically linked"
            },
            self.bytes as f64 / (1024.0 * 1024.0)
        )
    }
}

/// Checks that `path` is an ELF executable for `target`'s architecture, and
/// statically linked when `target` is a musl target.
pub fn check_elf(path: &Path, target: Target) -> Result<ElfInfo> {
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let info = elf_info(&data).with_context(|| format!("{} is not an ELF file", path.display()))?;
    if info.arch != target.arch {
        bail!(
            "{} is a {} executable, not {} as {} needs; was the right linker used?",
            path.display(),
            info.arch,
            target.arch,
            target.triple
        );
    }
    if target.musl && !info.static_ {
        bail!(
            "{} is dynamically linked, but a {} build must be static; \
             check RUSTFLAGS for -C target-feature=-crt-static",
            path.display(),
            target.triple
        );
    }
    Ok(info)
}

fn elf_info(data: &[u8]) -> Result<ElfInfo> {
    // Both architectures are 64-bit: a 32-bit file is wrong anyway.
    let elf = ElfFile64::<Endianness>::parse(data)?;
    let arch = match elf.architecture() {
        object::Architecture::Aarch64 => Arch::Aarch64,
        object::Architecture::X86_64 => Arch::X86_64,
        other => bail!("unexpected architecture {other:?}"),
    };
    // A dynamically linked executable names its dynamic linker in a
    // PT_INTERP segment; a static one (static-pie included) has none.
    let endian = elf.endian();
    let static_ = !elf
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP);
    Ok(ElfInfo {
        arch,
        static_,
        bytes: data.len() as u64,
    })
}

/// Unit tests that check the real kernel's view of the test process, which
/// qemu-user emulates only in part; they run natively in `cargo xtask test`
/// and on the target in `cargo xtask vm-test`.
const QEMU_USER_SKIPS: &[(&str, &str)] = &[(
    "daemon::process_stats::tests::reads_our_own_process",
    "qemu-user writes its own /proc/self/stat, with the resident set size 0",
)];

/// Unit tests that assume a dynamically linked test binary, which a musl
/// target's is not.
const STATIC_SKIPS: &[(&str, &str)] = &[(
    "leaks::allocator::tests::this_process_uses_the_c_library_allocator",
    "a static test binary has its own malloc, not the C library's (the leaks \
     integration tests cover static binaries)",
)];

#[derive(clap::Args)]
pub struct TestArgs {
    /// The target whose unit tests to run under qemu-user.
    #[arg(long, default_value = "aarch64-unknown-linux-gnu")]
    target: String,
    /// Build and test with the release profile: shares the build with
    /// `cargo xtask vm-test` (which boots the release musl binary).
    #[arg(long)]
    release: bool,
    /// Extra arguments for `cargo test`, after `--` (e.g. `-- -- symbolize`).
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

/// `cargo xtask test-cross`: cross-builds perf-user (and checks that it is
/// an ELF executable of the target architecture), then builds the unit
/// tests for the target and runs them under qemu-user.
pub fn test_main(args: &TestArgs) -> Result<()> {
    let target = Target::parse(&args.target)?;
    let started = Instant::now();
    build(target, args.release, &[])?;
    let build_secs = started.elapsed().as_secs_f64();

    let ready = setup::ensure(setup::Mode::Quiet)?;
    let mut cargo = cargo_for(target, &ready, "test")?;
    // Unit tests only: the integration tests load programs into the running
    // kernel, which an emulated user space on another architecture cannot do
    // for its own architecture. Doc tests are not run when cross-compiling.
    cargo
        .args(["--package", "perf-user", "--package", "perf-ebpf-common"])
        .args(["--lib", "--bins"])
        .args(args.release.then_some("--release"))
        .env("PERF_USER_SKIP_PRIVILEGED", "1");
    if !target.native() {
        apt::ensure("qemu-user", &["qemu-user"])?;
        let qemu = target.arch.qemu_user();
        // A glibc binary needs the target's dynamic linker and libc: qemu
        // finds them under -L, Debian's cross libc directory. A static musl
        // binary needs nothing.
        let runner = if target.musl {
            qemu.to_owned()
        } else {
            format!("{qemu} -L {}", target.arch.cross_sysroot().display())
        };
        cargo.env(target.cargo_env("RUNNER"), runner);
    }
    cargo.args(&args.cargo_args);
    let mut skips: Vec<(&str, &str)> = Vec::new();
    if !target.native() {
        skips.extend(QEMU_USER_SKIPS);
    }
    if target.musl {
        skips.extend(STATIC_SKIPS);
    }
    if !skips.is_empty() {
        // Arguments for the test harness follow the (first) `--`.
        if !args.cargo_args.iter().any(|a| a == "--") {
            cargo.arg("--");
        }
        for (test, why) in skips {
            eprintln!("note: skipping {test}: {why}");
            cargo.args(["--skip", test]);
        }
    }
    eprintln!(
        "running the unit tests for {}{}: {}",
        target.triple,
        if target.native() {
            ""
        } else {
            " under qemu-user"
        },
        cmd::display(&cargo)
    );
    let test_started = Instant::now();
    cmd::run(&mut cargo).with_context(|| {
        format!(
            "the unit tests for {} failed; see the output above",
            target.triple
        )
    })?;
    eprintln!(
        "test-cross {}: ok (perf-user build {build_secs:.0} s, unit tests {:.0} s)",
        target.triple,
        test_started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("aarch64-unknown-linux-gnu").unwrap();
        assert_eq!((t.arch, t.musl), (Arch::Aarch64, false));
        assert_eq!(
            t.cargo_env("LINKER"),
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"
        );
        assert_eq!(
            Target::musl(Arch::X86_64).triple,
            "x86_64-unknown-linux-musl"
        );
        let err = Target::parse("riscv64gc-unknown-linux-gnu").unwrap_err();
        assert!(
            err.to_string().contains("aarch64-unknown-linux-musl"),
            "{err}"
        );
    }

    #[test]
    fn packages_per_target() {
        // On an x86_64 host: the cross gcc for aarch64, plus the cross glibc
        // for the glibc target only.
        if Arch::host() != Some(Arch::X86_64) {
            return;
        }
        let gnu = Target::parse("aarch64-unknown-linux-gnu").unwrap();
        assert_eq!(
            gnu.packages(),
            ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]
        );
        assert_eq!(gnu.linker().as_deref(), Some("aarch64-linux-gnu-gcc"));
        let musl = Target::musl(Arch::Aarch64);
        assert_eq!(
            musl.packages(),
            ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]
        );
        assert_eq!(musl.c_compiler(), "aarch64-linux-gnu-gcc");
        let native = Target::musl(Arch::X86_64);
        assert_eq!(native.linker(), None);
        assert_eq!(native.c_compiler(), "musl-gcc");
        assert_eq!(native.packages(), ["gcc", "libc6-dev", "musl-tools"]);
    }

    #[test]
    fn xtask_itself_is_a_host_elf() {
        let exe = std::env::current_exe().unwrap();
        let Some(host) = Arch::host() else { return };
        let info = elf_info(&fs::read(exe).unwrap()).unwrap();
        assert_eq!(info.arch, host);
    }
}
