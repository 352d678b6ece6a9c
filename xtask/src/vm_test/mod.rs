//! `cargo xtask vm-test --arch aarch64|x86_64`: boots a Debian kernel of
//! that architecture under qemu (software emulation, no KVM needed) with an
//! initramfs holding a static perf-user, a static busybox and the test
//! workloads, runs perf-user's smoke tests inside (with BTF hidden), and
//! reports pass or fail from the guest's console.
//!
//! The two default kernels differ on purpose, to cover two kernel lines:
//! arm64 uses bookworm-backports' (6.12, the line Raspberry Pi OS ships),
//! x86_64 bookworm's own 6.1.
//!
//! Steps: [`kernel`] fetches the packages with a private apt,
//! [`modules`] picks the driver modules, [`cpio`] writes the initramfs,
//! [`qemu`] boots it and reads the verdict. The guest side is
//! `guest/init.sh` and `guest/workload.c`.

mod cpio;
mod kernel;
mod modules;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    apt, cmd,
    cross::{self, Arch, Target},
};

/// The guest's init and the workload source, built into xtask.
const INIT: &str = include_str!("guest/init.sh");
const WORKLOAD_C: &str = include_str!("guest/workload.c");
/// A chain of 60 functions and a 200-deep recursion, built without frame
/// pointers: the guest checks that `profile` walks it exactly (issue 13).
const DEEP_CHAIN_C: &str = include_str!("../../../tests/workloads/deep_chain.c");

/// Drivers the guest loads when they are modules: the disk (`/dev/vda`,
/// for the block latency test) on virtio-pci.
const MODULES: &[&str] = &["virtio_pci", "virtio_blk"];

/// Size of the guest's scratch disk.
const DISK_MIB: u64 = 16;

#[derive(clap::Args)]
pub struct Args {
    /// Guest architecture; repeat for both (default: both).
    #[arg(long, value_enum)]
    arch: Vec<Arch>,
    /// Debian suite of the kernel [default: bookworm-backports for aarch64,
    /// bookworm for x86_64].
    #[arg(long)]
    suite: Option<String>,
    /// Debian mirror to fetch the kernel from.
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
    /// Fetch the kernel packages again even if an earlier run has them.
    #[arg(long)]
    refresh: bool,
    /// Seconds the whole guest run may take, boot to power-off, per architecture.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Virtual CPUs of the guest.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Show every console line, not only the test markers.
    #[arg(short, long)]
    verbose: bool,
}

pub fn main(args: &Args) -> Result<()> {
    let arches = if args.arch.is_empty() {
        vec![Arch::Aarch64, Arch::X86_64]
    } else {
        args.arch.clone()
    };
    let mut failed = Vec::new();
    let mut summaries = Vec::new();
    for arch in arches {
        match run_arch(arch, args) {
            Ok(summary) => summaries.push(summary),
            Err(err) => {
                eprintln!("vm-test {arch}: FAILED: {err:#}");
                summaries.push(format!("{arch}: FAILED"));
                failed.push(arch.name());
            }
        }
    }
    eprintln!("\nvm-test summary:");
    for summary in &summaries {
        eprintln!("  {summary}");
    }
    if !failed.is_empty() {
        bail!("vm-test failed for {}; see above", failed.join(", "));
    }
    Ok(())
}

fn default_suite(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "bookworm-backports",
        Arch::X86_64 => "bookworm",
    }
}

/// One architecture, start to end. Returns a summary line.
fn run_arch(arch: Arch, args: &Args) -> Result<String> {
    let started = Instant::now();
    let work = cross::target_dir()?
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("vm-test")
        .join(arch.name());
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;

    let (cc, cc_packages) = arch.c_compiler();
    let mut packages = vec![
        qemu::Vm::qemu_package(arch),
        "xz-utils",
        "debian-archive-keyring",
    ];
    packages.extend(cc_packages);
    apt::ensure("vm-test tools", &packages)?;

    let suite = args.suite.as_deref().unwrap_or(default_suite(arch));
    let kernel = kernel::fetch(
        &kernel::Source {
            arch,
            suite,
            mirror: &args.mirror,
        },
        &work,
        args.refresh,
    )?;
    let fetched = Instant::now();
    report_kernel_config(arch, &kernel.config)?;

    let target = Target::musl(arch);
    let perf_user = cross::build(target, true, &[])?;
    let built = Instant::now();

    let workload = build_workload(&cc, &work)?;
    let chain = build_chain(&cc, &work)?;
    let modules = modules::resolve(&kernel.modules, MODULES)?;
    let initramfs = work.join("initramfs.cpio");
    write_initramfs(
        &initramfs,
        &perf_user,
        &[("workload", &workload), ("chain", &chain)],
        &kernel,
        &modules,
    )?;
    let disk = work.join("disk.img");
    let file =
        fs::File::create(&disk).with_context(|| format!("cannot create {}", disk.display()))?;
    file.set_len(DISK_MIB << 20)
        .with_context(|| format!("cannot size {}", disk.display()))?;
    drop(file);
    eprintln!(
        "vm-test {arch}: initramfs {} ({:.1} MiB: perf-user, busybox, workload, modules {})",
        initramfs.display(),
        fs::metadata(&initramfs)?.len() as f64 / (1024.0 * 1024.0),
        if modules.is_empty() {
            "none needed".to_owned()
        } else {
            modules
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        }
    );

    let vm = qemu::Vm {
        arch,
        kernel: &kernel.image,
        initramfs: &initramfs,
        disk: &disk,
        cpus: args.cpus,
        memory_mib: 1024,
        timeout: Duration::from_secs(args.timeout),
        verbose: args.verbose,
        log: work.join("console.log"),
    };
    let outcome = vm.run()?;

    let count = |s: qemu::Status| outcome.results.iter().filter(|r| r.status == s).count();
    let (pass, fail, skip) = (
        count(qemu::Status::Pass),
        count(qemu::Status::Fail),
        count(qemu::Status::Skip),
    );
    let summary = format!(
        "{arch}: {} — {pass} passed, {fail} failed, {skip} skipped; kernel fetch {:.0} s, \
         perf-user build {:.0} s, boot {:.0} s, guest run {:.0} s, total {:.0} s",
        kernel.package,
        fetched.duration_since(started).as_secs_f64(),
        built.duration_since(fetched).as_secs_f64(),
        outcome.boot_secs.unwrap_or(f64::NAN),
        outcome.total_secs,
        started.elapsed().as_secs_f64()
    );
    if !outcome.ended {
        bail!(
            "the guest stopped before its END marker (a crash or a kernel panic?); \
             the console output is in {}",
            vm.log.display()
        );
    }
    if fail > 0 {
        let names: Vec<_> = outcome
            .results
            .iter()
            .filter(|r| r.status == qemu::Status::Fail)
            .map(|r| r.name.as_str())
            .collect();
        bail!(
            "{}: the output of each failed test is above, the whole console in {}",
            names.join(", "),
            vm.log.display()
        );
    }
    // profile exists in every build: a run where it did not pass proves nothing.
    if !outcome
        .results
        .iter()
        .any(|r| r.name == "profile-no-btf" && r.status == qemu::Status::Pass)
    {
        bail!(
            "the guest reported no passing profile-no-btf test; the console output is in {}",
            vm.log.display()
        );
    }
    eprintln!("vm-test {summary}");
    Ok(summary)
}

/// Kernel options perf-user's collectors need (docs/kernel-requirements.md).
const NEEDED_CONFIG: &[&str] = &[
    "CONFIG_BPF_SYSCALL",
    "CONFIG_BPF_EVENTS",
    "CONFIG_PERF_EVENTS",
    "CONFIG_TRACEPOINTS",
    "CONFIG_UPROBE_EVENTS",
];

/// Prints the guest kernel's BPF-related options; fails when one that every
/// run needs is off (the tests would fail for a reason that is not ours).
fn report_kernel_config(arch: Arch, config: &Path) -> Result<()> {
    let text =
        fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let value = |option: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(option)?.strip_prefix('='))
            .unwrap_or("n")
            .to_owned()
    };
    let missing: Vec<_> = NEEDED_CONFIG
        .iter()
        .filter(|o| value(o) != "y")
        .copied()
        .collect();
    eprintln!(
        "vm-test {arch}: kernel config: {}, CONFIG_DEBUG_INFO_BTF={}, CONFIG_KPROBES={}",
        if missing.is_empty() {
            "BPF, perf events, tracepoints and uprobes built in"
        } else {
            "MISSING OPTIONS"
        },
        value("CONFIG_DEBUG_INFO_BTF"),
        value("CONFIG_KPROBES")
    );
    if !missing.is_empty() {
        bail!(
            "{} lacks {}: perf-user cannot run on this kernel; choose another --suite",
            config.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// Compiles the guest workload statically with symbols and frame pointers.
fn build_workload(cc: &str, work: &Path) -> Result<PathBuf> {
    let source = work.join("workload.c");
    let binary = work.join("workload");
    fs::write(&source, WORKLOAD_C).with_context(|| format!("cannot write {}", source.display()))?;
    let mut compile = Command::new(cc);
    compile
        .args(["-static", "-O1", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&binary)
        .arg(&source);
    cmd::run(&mut compile).context("compiling the guest workload failed; the errors are above")?;
    Ok(binary)
}

/// Compiles the chain workload statically, optimized and without frame
/// pointers, as distributions build their packages.
fn build_chain(cc: &str, work: &Path) -> Result<PathBuf> {
    let source = work.join("deep_chain.c");
    let binary = work.join("chain");
    fs::write(&source, DEEP_CHAIN_C)
        .with_context(|| format!("cannot write {}", source.display()))?;
    let mut compile = Command::new(cc);
    compile
        .args([
            "-static",
            "-O2",
            "-fomit-frame-pointer",
            "-fno-inline",
            "-fno-optimize-sibling-calls",
            "-o",
        ])
        .arg(&binary)
        .arg(&source);
    cmd::run(&mut compile)
        .context("compiling the guest chain workload failed; the errors are above")?;
    Ok(binary)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write_initramfs(
    out: &Path,
    perf_user: &Path,
    workloads: &[(&str, &Path)],
    kernel: &kernel::Kernel,
    modules: &[modules::Module],
) -> Result<()> {
    let mut archive = cpio::Archive::new();
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "tmp", "modules",
    ] {
        archive.dir(dir);
    }
    // The kernel opens /dev/console for init's standard streams before
    // anything mounts devtmpfs on /dev.
    archive.char_device("dev/console", 0o600, 5, 1);
    archive.file("init", 0o755, INIT.as_bytes());
    archive.file("bin/busybox", 0o755, &read(&kernel.busybox)?);
    // `busybox --install` in init makes the other applet links.
    archive.symlink("bin/sh", "busybox");
    archive.file("perf-user", 0o755, &read(perf_user)?);
    for (name, path) in workloads {
        archive.file(name, 0o755, &read(path)?);
    }
    let mut order = String::new();
    for module in modules {
        archive.file(&format!("modules/{}.ko", module.name), 0o644, &module.data);
        order.push_str(&module.name);
        order.push('\n');
    }
    archive.file("modules/order", 0o644, order.as_bytes());
    fs::write(out, archive.finish()).with_context(|| format!("cannot write {}", out.display()))
}
