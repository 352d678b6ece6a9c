//! Checks, before touching the kernel, that we may load BPF programs and open
//! perf events, so that the error names the missing capability and the fix.

use std::fs;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
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
         `sudo setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_sys_resource+ep $(command -v perf-user)` \
         (kernel 5.8 or later)",
        missing.join(" and ")
    ))
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
    fn parses_status() {
        let s = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }
}
