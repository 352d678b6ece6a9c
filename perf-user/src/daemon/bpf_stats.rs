//! What the kernel says about this process's own BPF programs and maps:
//! run time and run count per program, entries per hash map.
//!
//! Everything is found through this process's file descriptors
//! (/proc/self/fdinfo, then BPF_OBJ_GET_INFO_BY_FD on our own fds), not by
//! id: getting an fd from an id needs CAP_SYS_ADMIN, which the daemon's
//! systemd unit does not grant. Only maps that a loaded program uses are
//! reported: every collector loads the whole object, so the other
//! collectors' maps exist unused in each instance.

use std::{
    collections::{BTreeMap, HashMap},
    fs, io,
    os::fd::OwnedFd,
};

use super::{
    exposition::{Family, Kind},
    scrape::{Source, SourceError},
};

/// Hash-like map types, whose fill can be counted and matters: a full one
/// drops data. (Arrays are always "full"; ring buffers are not keyed.)
const HASH_TYPES: &[u32] = &[
    1,  // BPF_MAP_TYPE_HASH
    5,  // BPF_MAP_TYPE_PERCPU_HASH
    7,  // BPF_MAP_TYPE_STACK_TRACE
    9,  // BPF_MAP_TYPE_LRU_HASH
    10, // BPF_MAP_TYPE_LRU_PERCPU_HASH
];

/// Largest key read while counting; the program's keys are far smaller.
const MAX_KEY: usize = 512;

/// One of our file descriptors that is a BPF program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgFd {
    /// The descriptor number.
    pub fd: i32,
    /// Kernel id.
    pub id: u32,
    /// Total run time, ns (counted while BPF statistics are enabled).
    pub run_time_ns: u64,
    /// Runs (same condition).
    pub run_cnt: u64,
}

/// One of our file descriptors that is a BPF map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapFd {
    /// The descriptor number.
    pub fd: i32,
    /// Kernel id.
    pub id: u32,
    /// BPF_MAP_TYPE_*.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Capacity.
    pub max_entries: u32,
}

/// Parses one /proc/PID/fdinfo file of a BPF object.
fn parse_fdinfo(fd: i32, text: &str) -> (Option<ProgFd>, Option<MapFd>) {
    let fields: HashMap<&str, u64> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim(), v.trim().parse().ok()?))
        })
        .collect();
    let get = |k: &str| fields.get(k).copied();
    let prog = get("prog_id").map(|id| ProgFd {
        fd,
        id: id as u32,
        run_time_ns: get("run_time_ns").unwrap_or(0),
        run_cnt: get("run_cnt").unwrap_or(0),
    });
    let map = get("map_id").map(|id| MapFd {
        fd,
        id: id as u32,
        map_type: get("map_type").unwrap_or(0) as u32,
        key_size: get("key_size").unwrap_or(0) as u32,
        max_entries: get("max_entries").unwrap_or(0) as u32,
    });
    (prog, map)
}

/// BPF programs and maps held by process `pid` (our own: "self").
pub fn bpf_fds(pid: &str) -> io::Result<(Vec<ProgFd>, Vec<MapFd>)> {
    let mut progs = Vec::new();
    let mut maps = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(entry) = entry else { continue };
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if !(target.contains("bpf-prog") || target.contains("bpf-map")) {
            continue;
        }
        let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        let (p, m) = parse_fdinfo(fd, &info);
        progs.extend(p);
        maps.extend(m);
    }
    Ok((progs, maps))
}

/// The first fields of `struct bpf_prog_info`: the kernel copies at most
/// `info_len` bytes, so a prefix is enough.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    type_: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// The first fields of `struct bpf_map_info`.
#[repr(C)]
#[derive(Default)]
struct MapInfo {
    type_: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: [u8; 16],
}

fn c_name(name: &[u8]) -> String {
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

/// A program's name and the ids of the maps it uses.
fn prog_name_and_maps(fd: i32, id: u32) -> io::Result<(String, Vec<u32>)> {
    let mut info = ProgInfo::default();
    crate::bpf_sys::info_by_fd(fd, &mut info)?;
    if info.id != id {
        // The fd was closed and reused since it was listed.
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    let mut ids = vec![0u32; info.nr_map_ids as usize];
    let name = c_name(&info.name);
    if !ids.is_empty() {
        let mut again = ProgInfo {
            nr_map_ids: ids.len() as u32,
            map_ids: ids.as_mut_ptr() as u64,
            ..ProgInfo::default()
        };
        crate::bpf_sys::info_by_fd(fd, &mut again)?;
        ids.truncate(again.nr_map_ids as usize);
    }
    Ok((name, ids))
}

fn map_name(fd: i32, id: u32) -> io::Result<String> {
    let mut info = MapInfo::default();
    crate::bpf_sys::info_by_fd(fd, &mut info)?;
    if info.id != id {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(c_name(&info.name))
}

/// Number of keys in the map behind `fd` (one syscall per key).
fn count_entries(fd: i32, key_size: usize) -> io::Result<u64> {
    if key_size == 0 || key_size > MAX_KEY {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut key = [0u8; MAX_KEY];
    let mut next = [0u8; MAX_KEY];
    let mut n = 0u64;
    let mut first = true;
    loop {
        let prev = (!first).then_some(&key[..key_size]);
        if !crate::bpf_sys::next_key(fd, prev, &mut next)? {
            return Ok(n);
        }
        n += 1;
        first = false;
        key[..key_size].copy_from_slice(&next[..key_size]);
        // A map whose keys change faster than we walk it could loop; its
        // capacity bounds any honest count.
        if n > (1 << 24) {
            return Ok(n);
        }
    }
}

/// Self-metrics about our BPF programs and maps.
pub struct BpfStats {
    /// Keeps the kernel's run-time statistics on while the daemon runs
    /// (they cost ~20 ns per program run, so the kernel has them off by
    /// default); `None` when the kernel refused.
    stats: Option<OwnedFd>,
}

impl BpfStats {
    /// Turns on the kernel's run-time statistics for as long as this lives.
    pub fn new() -> Self {
        let stats = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot enable BPF run-time statistics (Linux 5.8+ and CAP_SYS_ADMIN or root needed); \
                     perf_user_bpf_program_* stay 0 unless kernel.bpf_stats_enabled=1"
                );
                None
            }
        };
        Self { stats }
    }
}

impl Default for BpfStats {
    fn default() -> Self {
        Self::new()
    }
}

/// True when the kernel currently counts program run time.
fn stats_enabled_now() -> bool {
    fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

impl Source for BpfStats {
    fn name(&self) -> &'static str {
        "bpf"
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        let (progs, maps) = bpf_fds("self")?;
        let mut run_time = Family::new(
            "perf_user_bpf_program_run_seconds_total",
            Kind::Counter,
            "CPU time the kernel spent running this BPF program (kernel.bpf_stats_enabled must be on; the daemon turns it on).",
        );
        let mut runs = Family::new(
            "perf_user_bpf_program_runs_total",
            Kind::Counter,
            "Times the kernel ran this BPF program (same condition as run time).",
        );
        // Programs of the same name (one collector loaded twice) are summed.
        let mut per_prog: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut used_maps: Vec<u32> = Vec::new();
        for p in &progs {
            let Ok((name, ids)) = prog_name_and_maps(p.fd, p.id) else {
                continue;
            };
            let e = per_prog.entry(name).or_default();
            e.0 += p.run_time_ns;
            e.1 += p.run_cnt;
            used_maps.extend(ids);
        }
        for (name, (ns, cnt)) in per_prog {
            run_time.push(vec![("program", name.clone())], ns as f64 / 1e9);
            runs.push(vec![("program", name)], cnt as f64);
        }

        let mut entries = Family::new(
            "perf_user_bpf_map_entries",
            Kind::Gauge,
            "Entries in this BPF hash map now.",
        );
        let mut capacity = Family::new(
            "perf_user_bpf_map_max_entries",
            Kind::Gauge,
            "Capacity of this BPF hash map.",
        );
        let mut fill = Family::new(
            "perf_user_bpf_map_fill_ratio",
            Kind::Gauge,
            "Entries over capacity; near 1 the map drops new keys (see perf_user_lost_events_total).",
        );
        let mut per_map: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for m in &maps {
            if !used_maps.contains(&m.id) || !HASH_TYPES.contains(&m.map_type) || !seen.insert(m.id)
            {
                continue;
            }
            let Ok(name) = map_name(m.fd, m.id) else {
                continue;
            };
            let Ok(n) = count_entries(m.fd, m.key_size as usize) else {
                continue;
            };
            let e = per_map.entry(name).or_default();
            e.0 += n;
            e.1 += u64::from(m.max_entries);
        }
        for (name, (n, max)) in per_map {
            let label = vec![("map", name)];
            entries.push(label.clone(), n as f64);
            capacity.push(label.clone(), max as f64);
            fill.push(label, if max == 0 { 0.0 } else { n as f64 / max as f64 });
        }
        let enabled = Family::single(
            "perf_user_bpf_stats_enabled",
            Kind::Gauge,
            "1 when the kernel counts BPF program run time and runs (kernel.bpf_stats_enabled).",
            // Our BPF_ENABLE_STATS fd turns counting on without touching the sysctl.
            f64::from(u8::from(self.stats.is_some() || stats_enabled_now())),
        );
        Ok(vec![run_time, runs, entries, capacity, fill, enabled])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    mod props {
        use proptest::prelude::*;

        use super::super::parse_fdinfo;

        proptest! {
            #[test]
            fn malformed_fdinfo_never_panics(
                lines in prop::collection::vec(
                    (
                        prop_oneof![
                            Just("prog_id"), Just("map_id"), Just("map_type"),
                            Just("key_size"), Just("max_entries"), Just("run_time_ns"),
                            Just("run_cnt"), Just(""), Just("::"),
                        ],
                        prop_oneof![
                            any::<u64>().prop_map(|v| v.to_string()),
                            Just(u64::MAX.to_string()),
                            "\\PC{0,20}",
                        ],
                    ),
                    0..12,
                ),
                fd in any::<i32>(),
            ) {
                let text: String = lines.iter().map(|(k, v)| format!("{k}:\t{v}\n")).collect();
                let (prog, map) = parse_fdinfo(fd, &text);
                if let Some(p) = prog {
                    prop_assert_eq!(p.fd, fd);
                }
                if let Some(m) = map {
                    prop_assert_eq!(m.fd, fd);
                }
            }
        }
    }

    #[test]
    fn parses_prog_and_map_fdinfo() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t7\nprog_jited:\t1\nprog_tag:\tbd6a4f2ef5e8e1d3\nmemlock:\t4096\nprog_id:\t42\nrun_time_ns:\t1500\nrun_cnt:\t3\nrecursion_misses:\t0\nverified_insns:\t120\n";
        let (p, m) = parse_fdinfo(7, prog);
        assert_eq!(
            p,
            Some(ProgFd {
                fd: 7,
                id: 42,
                run_time_ns: 1500,
                run_cnt: 3
            })
        );
        assert!(m.is_none());
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t5\nkey_size:\t32\nvalue_size:\t8\nmax_entries:\t16384\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t1\nmap_id:\t9\nfrozen:\t0\n";
        let (p, m) = parse_fdinfo(8, map);
        assert!(p.is_none());
        assert_eq!(
            m,
            Some(MapFd {
                fd: 8,
                id: 9,
                map_type: 5,
                key_size: 32,
                max_entries: 16384
            })
        );
    }

    #[test]
    fn info_structs_have_the_kernel_layout() {
        // Offsets of `name` in the kernel's structs (include/uapi/linux/bpf.h).
        assert_eq!(std::mem::offset_of!(ProgInfo, name), 64);
        assert_eq!(std::mem::offset_of!(ProgInfo, nr_map_ids), 52);
        assert_eq!(std::mem::offset_of!(MapInfo, name), 24);
    }
}
