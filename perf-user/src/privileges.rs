//! Checks, before touching the kernel, that we may load BPF programs and open
//! perf events, so that the error names the missing capability and the fix;
//! and, once the programs are attached, drops the capabilities that are no
//! longer needed.

use std::fs;

use caps::{CapSet, Capability, CapsHashSet};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// This thread's effective capability set, from /proc/thread-self/status.
fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/thread-self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// Capabilities missing to load and attach the tracers, or `Ok` when none is.
pub fn check() -> Result<(), String> {
    match effective_caps() {
        Some(caps) => missing_message(caps),
        // No /proc: we cannot tell; let the kernel decide and report.
        None => Ok(()),
    }
}

fn missing_message(caps: u64) -> Result<(), String> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(c, _)| !has(c))
        .map(|(_, n)| n)
        .collect();
    Err(format!(
        "not enough privileges to load eBPF programs: missing {}. \
         Run as root (e.g. `sudo perf-user ...`), or grant the capabilities once with \
         `sudo setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search,cap_syslog+ep $(command -v perf-user)` \
         (kernel 5.8 or later; add cap_sys_resource before 5.11; see docs/privileges.md)",
        missing.join(" and ")
    ))
}

/// What a command still does after its programs are attached, which decides
/// the capabilities it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `profile`: reads maps and names frames (other users' /proc/PID/maps
    /// and binaries, /proc/kallsyms).
    Profile,
    /// `latency`: reads maps only.
    Latency,
    /// `leaks` and the daemon: attach more probes as processes start, exec or
    /// the configuration is reloaded, and name frames.
    Attaching,
}

/// The capabilities `stage` needs from now on.
fn needed(stage: Stage) -> Vec<Capability> {
    let naming = [
        Capability::CAP_SYS_PTRACE,
        Capability::CAP_DAC_READ_SEARCH,
        Capability::CAP_SYSLOG,
    ];
    let mut keep = match stage {
        Stage::Latency => vec![],
        Stage::Profile => naming.to_vec(),
        Stage::Attaching => {
            let mut v = naming.to_vec();
            v.extend([Capability::CAP_BPF, Capability::CAP_PERFMON]);
            // Perf-event uprobes need CAP_SYS_ADMIN where uprobe_multi links
            // are missing; classic tracepoints need tracefs mounted, which a
            // reload may have to do on kernels without BTF.
            if !crate::collectors::uprobe_multi::supported()
                || !std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
            {
                v.push(Capability::CAP_SYS_ADMIN);
            }
            v
        }
    };
    if map_reads_need_cap_bpf() && !keep.contains(&Capability::CAP_BPF) {
        keep.push(Capability::CAP_BPF);
    }
    keep
}

/// Before Linux 6.5, every bpf(2) command, map reads through our own fds
/// included, needs CAP_BPF while kernel.unprivileged_bpf_disabled is set
/// (Debian and most distributions set it).
fn map_reads_need_cap_bpf() -> bool {
    let disabled = fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    disabled && kernel_before(6, 5)
}

fn kernel_before(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    parse_release(&release) < (major, minor)
}

fn parse_release(release: &str) -> (u32, u32) {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The capabilities kept and those given up by [`drop_after_attach`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Still effective and permitted.
    pub kept: Vec<String>,
    /// Removed from the effective, permitted, inheritable and ambient sets.
    pub dropped: Vec<String>,
}

fn names(set: &CapsHashSet) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(|c| c.to_string().to_lowercase()).collect();
    v.sort();
    v
}

/// Gives up every capability that `stage` no longer needs, in every thread's
/// sets where it is called before other threads start, or in this thread's
/// (the kernel keeps capabilities per thread; tokio's workers started earlier
/// keep theirs, which is why the commands call this from the thread that
/// does the work and the daemon logs what its main thread kept).
pub fn drop_after_attach(stage: Stage) -> Result<Dropped, String> {
    let keep = needed(stage);
    let err = |what: &str, e: caps::errors::CapsError| format!("cannot {what}: {e}");
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| err("read capabilities", e))?;
    let kept: CapsHashSet = keep.into_iter().filter(|c| permitted.contains(c)).collect();
    let dropped: CapsHashSet = permitted.difference(&kept).copied().collect();
    // Ambient and inheritable first: they must stay within permitted. Then
    // effective, then permitted (which may not shrink below effective).
    caps::clear(None, CapSet::Ambient).map_err(|e| err("clear ambient capabilities", e))?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
        .map_err(|e| err("clear inheritable capabilities", e))?;
    caps::set(None, CapSet::Effective, &kept).map_err(|e| err("set effective capabilities", e))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| err("set permitted capabilities", e))?;
    Ok(Dropped {
        kept: names(&kept),
        dropped: names(&dropped),
    })
}

/// Threads of this process whose effective capabilities exceed this
/// thread's, as "TID:hexmask" (capabilities are per thread).
pub fn threads_with_more() -> Option<String> {
    let mine = effective_caps()?;
    let mut extra = Vec::new();
    for task in fs::read_dir("/proc/self/task").ok()?.filter_map(Result::ok) {
        let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(caps) = parse_cap_eff(&status)
            && caps & !mine != 0
        {
            extra.push(format!("{}:{caps:x}", task.file_name().to_string_lossy()));
        }
    }
    (!extra.is_empty()).then(|| extra.join(" "))
}

/// This thread's effective capabilities, lower-case names, for logs.
pub fn effective_names() -> Vec<String> {
    caps::read(None, CapSet::Effective)
        .map(|s| names(&s))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_bpf_perfmon_pass() {
        assert!(missing_message(u64::MAX).is_ok());
        assert!(missing_message(1 << CAP_SYS_ADMIN).is_ok());
        assert!(missing_message((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_ok());
    }

    #[test]
    fn names_what_is_missing() {
        let e = missing_message(1 << CAP_BPF).unwrap_err();
        assert!(e.contains("missing CAP_PERFMON"), "{e}");
        let e = missing_message(0).unwrap_err();
        assert!(e.contains("CAP_BPF and CAP_PERFMON"), "{e}");
    }

    #[test]
    fn latency_keeps_nothing_but_what_map_reads_need() {
        let keep = needed(Stage::Latency);
        assert!(
            keep.is_empty() || keep == vec![Capability::CAP_BPF],
            "{keep:?}"
        );
        let attaching = needed(Stage::Attaching);
        for c in [Capability::CAP_BPF, Capability::CAP_PERFMON] {
            assert!(attaching.contains(&c));
        }
        assert!(!needed(Stage::Profile).contains(&Capability::CAP_PERFMON));
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v1300\n"), (6, 18));
        assert_eq!(parse_release("5.4.0-150-generic"), (5, 4));
        assert_eq!(parse_release(""), (0, 0));
    }

    #[test]
    fn parses_status() {
        let s = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }
}
