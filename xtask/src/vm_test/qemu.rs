//! Booting the guest under qemu in software emulation (TCG, no KVM assumed)
//! and reading its verdict from the serial console.
//!
//! The guest's init prints marker lines, `VMTEST: <WORD> ...`, on the
//! console: BOOT when it runs, RUN/PASS/FAIL/SKIP per test, END with the
//! counts, then powers off. Kernel messages can interleave with them, so a
//! marker is looked for anywhere in a line.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, cross::Arch};

const MARKER: &str = "VMTEST: ";
/// Lines of a failed test's output shown on the terminal (all are in the log).
const FAILED_OUTPUT_LINES: usize = 60;

/// What to boot.
pub struct Vm<'a> {
    pub arch: Arch,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    /// A raw disk image attached as virtio-blk (the guest's /dev/vda).
    pub disk: &'a Path,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Whole run, boot to power-off.
    pub timeout: Duration,
    /// Copy every console line to stderr, not only the markers.
    pub verbose: bool,
    /// Where the whole console output is saved.
    pub log: PathBuf,
}

/// One test's result as the guest reported it.
#[derive(Debug, PartialEq, Eq)]
pub struct TestResult {
    pub status: Status,
    pub name: String,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// What the run showed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub results: Vec<TestResult>,
    /// Seconds from starting qemu to the guest's BOOT line.
    pub boot_secs: Option<f64>,
    /// The BOOT line's detail (kernel release, BTF).
    pub boot: Option<String>,
    /// Whether the END line came (the guest finished its tests).
    pub ended: bool,
    pub total_secs: f64,
    /// Console lines since the last RUN marker: the running test's output
    /// (and any kernel messages), shown when it fails.
    output: Vec<String>,
}

impl Vm<'_> {
    pub fn qemu_package(arch: Arch) -> &'static str {
        match arch {
            Arch::Aarch64 => "qemu-system-arm",
            Arch::X86_64 => "qemu-system-x86",
        }
    }

    fn command(&self) -> Command {
        let (program, machine, console) = match self.arch {
            // pauth-impdef: QEMU's own pointer-authentication hash instead
            // of the architected QARMA, which is several times slower to
            // emulate; the guest cannot tell the difference.
            Arch::Aarch64 => (
                "qemu-system-aarch64",
                &["-M", "virt", "-cpu", "max,pauth-impdef=on"][..],
                "ttyAMA0",
            ),
            Arch::X86_64 => (
                "qemu-system-x86_64",
                &["-M", "q35", "-cpu", "max"][..],
                "ttyS0",
            ),
        };
        let mut qemu = Command::new(program);
        qemu.args(machine)
            .args(["-accel", "tcg"])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            // Power-off or a panic (init exiting) ends qemu instead of rebooting.
            .arg("-no-reboot")
            .arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initramfs)
            .arg("-append")
            .arg(format!(
                "console={console} rdinit=/init panic=-1 loglevel=4 printk.devkmsg=on"
            ))
            .arg("-drive")
            .arg(format!(
                "if=none,id=disk0,format=raw,file={}",
                self.disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=disk0"])
            .args(["-nic", "none"]);
        qemu
    }

    /// Boots the guest and collects its markers until it powers off or the
    /// timeout passes.
    pub fn run(&self) -> Result<Outcome> {
        let mut qemu = self.command();
        qemu.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        eprintln!("vm-test {}: booting: {}", self.arch, cmd::display(&qemu));
        let started = Instant::now();
        let mut child = qemu
            .spawn()
            .with_context(|| format!("cannot start {}", qemu.get_program().to_string_lossy()))?;
        let mut log = File::create(&self.log)
            .with_context(|| format!("cannot create {}", self.log.display()))?;

        // Two readers feed one channel, so that the timeout applies to both.
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        for (stream, prefix) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, ""),
            (Box::new(stderr), "qemu: "),
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n') {
                    let Ok(line) = line else { break };
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches(['\r', '\n']);
                    if tx.send(format!("{prefix}{line}")).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);

        let mut outcome = Outcome::default();
        let deadline = started + self.timeout;
        let mut timed_out = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    writeln!(log, "{line}").context("writing the console log")?;
                    self.on_line(&line, started, &mut outcome);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
                // Both streams closed: qemu has exited.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if timed_out {
            let _ = child.kill();
        }
        let status = child.wait().context("waiting for qemu")?;
        outcome.total_secs = started.elapsed().as_secs_f64();
        if timed_out {
            bail!(
                "the guest did not finish within {} s{}; the console output is in {} \
                 (raise --timeout on a slow machine)",
                self.timeout.as_secs(),
                match &outcome.boot {
                    Some(_) => format!(
                        " (it booted; last test started: {})",
                        outcome
                            .results
                            .last()
                            .map_or("none finished", |r| r.name.as_str())
                    ),
                    None => " (it never reached init: see the kernel messages)".into(),
                },
                self.log.display()
            );
        }
        if !status.success() && !outcome.ended {
            bail!(
                "qemu exited with {} before the guest finished; the console output is in {}",
                cmd::describe(status),
                self.log.display()
            );
        }
        Ok(outcome)
    }

    fn on_line(&self, line: &str, started: Instant, outcome: &mut Outcome) {
        let Some((word, rest)) = parse_marker(line) else {
            if self.verbose {
                eprintln!("  {line}");
            }
            outcome.output.push(line.to_owned());
            return;
        };
        let elapsed = started.elapsed().as_secs_f64();
        match word {
            "BOOT" => {
                outcome.boot_secs = Some(elapsed);
                outcome.boot = Some(rest.to_owned());
                eprintln!(
                    "vm-test {}: [{elapsed:5.1} s] guest booted: {rest}",
                    self.arch
                );
            }
            "PASS" | "FAIL" | "SKIP" => {
                let (name, detail) = rest.split_once(' ').unwrap_or((rest, ""));
                let status = match word {
                    "PASS" => Status::Pass,
                    "FAIL" => Status::Fail,
                    _ => Status::Skip,
                };
                if status == Status::Fail && !self.verbose {
                    let skip = outcome.output.len().saturating_sub(FAILED_OUTPUT_LINES);
                    for line in &outcome.output[skip..] {
                        eprintln!("  {line}");
                    }
                }
                eprintln!(
                    "vm-test {}: [{elapsed:5.1} s] {word} {name} {detail}",
                    self.arch
                );
                outcome.results.push(TestResult {
                    status,
                    name: name.to_owned(),
                    detail: detail.to_owned(),
                });
            }
            "END" => {
                outcome.ended = true;
                eprintln!(
                    "vm-test {}: [{elapsed:5.1} s] guest done: {rest}",
                    self.arch
                );
            }
            // RUN, INFO.
            _ => {
                outcome.output.clear();
                eprintln!("vm-test {}: [{elapsed:5.1} s] {word} {rest}", self.arch);
            }
        }
    }
}

/// `("PASS", "profile 3.2 s")` from a console line holding a marker.
fn parse_marker(line: &str) -> Option<(&str, &str)> {
    let at = line.find(MARKER)?;
    let rest = line[at + MARKER.len()..].trim();
    Some(rest.split_once(' ').unwrap_or((rest, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert_eq!(
            parse_marker("VMTEST: PASS profile 3.1 s"),
            Some(("PASS", "profile 3.1 s"))
        );
        // A kernel message that ran into the marker's line.
        assert_eq!(
            parse_marker("[   12.5] random: crng initVMTEST: END pass=3 fail=0\r"),
            Some(("END", "pass=3 fail=0"))
        );
        assert_eq!(parse_marker("Booting Linux"), None);
    }
}
