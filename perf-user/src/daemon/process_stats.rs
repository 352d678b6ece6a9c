//! The daemon's own CPU time, memory and file descriptors, under the
//! standard `process_*` names every Prometheus client library uses, so
//! existing dashboards and alerts work unchanged.

use std::{fs, io};

use super::{
    exposition::{Family, Kind},
    scrape::{Source, SourceError},
};

/// Figures read from /proc/self.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessFigures {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Threads.
    pub threads: u64,
}

/// Reads the figures of process `pid` ("self" for this one).
pub fn read(pid: &str) -> io::Result<ProcessFigures> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let mut f = parse_stat(&stat, ticks, page)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat"))?;
    f.start_time_seconds += boot_time().unwrap_or(0.0);
    f.open_fds = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Ok(f)
}

/// Parses /proc/PID/stat; the start time is relative to boot.
fn parse_stat(stat: &str, ticks: f64, page: u64) -> Option<ProcessFigures> {
    // The command name (field 2) may contain spaces and parentheses: split
    // after its last ')'. Fields are then numbered from 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(ProcessFigures {
        // In floating point and saturating: a malformed stat with huge
        // numbers overflowed u64 here (a panic in debug builds).
        cpu_seconds: (field(14)? as f64 + field(15)? as f64) / ticks,
        threads: field(20)?,
        start_time_seconds: field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        rss_bytes: field(24)?.saturating_mul(page),
        open_fds: 0,
    })
}

/// Boot time, seconds since the Unix epoch (`btime` in /proc/stat).
fn boot_time() -> Option<f64> {
    fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// Exports [`read`]`("self")`.
#[derive(Debug, Default)]
pub struct ProcessStats;

impl Source for ProcessStats {
    fn name(&self) -> &'static str {
        "process"
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        let f = read("self")?;
        Ok(vec![
            Family::single(
                "process_cpu_seconds_total",
                Kind::Counter,
                "User and system CPU time the daemon has used.",
                f.cpu_seconds,
            ),
            Family::single(
                "process_resident_memory_bytes",
                Kind::Gauge,
                "The daemon's resident memory.",
                f.rss_bytes as f64,
            ),
            Family::single(
                "process_virtual_memory_bytes",
                Kind::Gauge,
                "The daemon's virtual memory size.",
                f.virtual_bytes as f64,
            ),
            Family::single(
                "process_start_time_seconds",
                Kind::Gauge,
                "When the daemon started, seconds since the Unix epoch.",
                f.start_time_seconds,
            ),
            Family::single(
                "process_open_fds",
                Kind::Gauge,
                "File descriptors the daemon holds (perf events, BPF programs, maps and links among them).",
                f.open_fds as f64,
            ),
            Family::single(
                "process_threads",
                Kind::Gauge,
                "The daemon's threads.",
                f.threads as f64,
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_name() {
        let stat = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 7 0 1000 10485760 300 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let f = parse_stat(stat, 100.0, 4096).unwrap();
        assert_eq!(f.cpu_seconds, 3.0);
        assert_eq!(f.threads, 7);
        assert_eq!(f.start_time_seconds, 10.0);
        assert_eq!(f.virtual_bytes, 10_485_760);
        assert_eq!(f.rss_bytes, 300 * 4096);
    }

    mod props {
        use super::super::parse_stat;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn malformed_stat_never_panics(
                name in "\\PC{0,20}",
                fields in prop::collection::vec(
                    prop_oneof![
                        any::<u64>().prop_map(|v| v.to_string()),
                        Just(u64::MAX.to_string()),
                        "[-0-9a-zA-Z()]{0,8}",
                    ],
                    0..50,
                ),
                ticks in 0.0f64..1000.0,
                page in any::<u64>(),
            ) {
                let stat = format!("1 ({name}) {}", fields.join(" "));
                if let Some(f) = parse_stat(&stat, ticks.max(1.0), page) {
                    prop_assert!(f.cpu_seconds >= 0.0);
                }
                let _ = parse_stat(&fields.join(" "), 100.0, 4096);
            }
        }
    }

    #[test]
    fn reads_our_own_process() {
        let f = read("self").unwrap();
        assert!(f.rss_bytes > 0);
        assert!(f.open_fds >= 3);
        assert!(f.start_time_seconds > 1e9);
    }
}
