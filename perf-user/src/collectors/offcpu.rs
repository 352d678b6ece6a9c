//! Off-CPU time: a program on sched:sched_switch that sums, per thread,
//! stack pair and the state the thread left in, how long threads were away
//! from the CPU (perf-ebpf/src/offcpu.rs).
//!
//! As for block I/O and TCP, a BTF tracepoint where the kernel has BTF (it
//! skips the record the classic tracepoint fills at every switch), the
//! classic one elsewhere; see `collectors::tracepoints`.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuHashMap},
    programs::ProgramError,
};
use perf_ebpf_common::{
    TASK_COMM_LEN,
    offcpu::{
        OFFCPU_PID_FILTER_ENTRIES, OffCpuConfig, OffCpuKey, OffCpuStart, SWITCH_SPAN_MAX,
        SwitchFields, TaskOffsets, counter, state,
    },
    unwind::{UnwindConfig, end},
};

use super::{
    Collector,
    maps::{self, MapAccessError},
    tracepoints::{
        AttachError, Tracepoints, attach_btf, attach_classic, check_args, choose, offset,
    },
};
use crate::{
    btf::{sysfs_btf, sysfs_layout},
    btf_layout::{Layout, LayoutError},
    ebpf,
    tracefs::{self, TracefsError},
    unwind::{UnwindMode, UnwindSummary, loader::TableLoader, sampler::Limits},
};

/// Where cgroup v2 is mounted on every systemd host and in containers.
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// What to record.
#[derive(Clone, Debug)]
pub struct OffCpuOptions {
    /// Only these processes (thread-group ids); empty means all.
    pub pids: Vec<u32>,
    /// Only threads with this name (first 15 bytes, as the kernel keeps it).
    pub comm: Option<String>,
    /// Only threads in this cgroup v2 subtree (a path below the cgroup root,
    /// `/system.slice/nginx.service`).
    pub cgroup: Option<String>,
    /// Collect user stacks.
    pub user_stacks: bool,
    /// Collect kernel stacks.
    pub kernel_stacks: bool,
    /// Shorter absences are not counted.
    pub min_ns: u64,
    /// BTF or classic tracepoint.
    pub tracepoints: Tracepoints,
    /// How user stacks are walked: with unwind tables only on the BTF
    /// tracepoint (it needs the task's user registers).
    pub unwind: UnwindMode,
    /// Memory for unwind table rows in the kernel, in MiB.
    pub unwind_tables_mib: u32,
}

impl Default for OffCpuOptions {
    fn default() -> Self {
        Self {
            pids: Vec::new(),
            comm: None,
            cgroup: None,
            user_stacks: true,
            kernel_stacks: true,
            min_ns: 1_000,
            tracepoints: Tracepoints::Auto,
            unwind: UnwindMode::Auto,
            unwind_tables_mib: crate::unwind::sampler::DEFAULT_TABLES_MIB,
        }
    }
}

/// Why the off-CPU collector could not start or read.
#[derive(Debug, thiserror::Error)]
pub enum OffCpuError {
    /// tracefs or the tracepoint format was unusable.
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    /// The eBPF object could not be loaded (maps creation failed).
    #[error(
        "loading the eBPF object failed: {0}; this needs root or CAP_BPF+CAP_PERFMON and a kernel with BPF enabled"
    )]
    Load(#[from] EbpfError),
    /// The verifier or the kernel refused the program, or attaching failed.
    #[error("the kernel refused the off-CPU program {program}: {source}")]
    Program {
        /// The program's name.
        program: &'static str,
        /// What went wrong.
        #[source]
        source: ProgramError,
    },
    /// A map was missing or could not be read.
    #[error("reading the off-CPU map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What went wrong.
        #[source]
        source: MapError,
    },
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// `--tracepoints btf` on a kernel that cannot have it.
    #[error(
        "the BTF tracepoint sched_switch is not available: {0}; use --tracepoints classic \
         (or auto, which falls back by itself)"
    )]
    NoBtf(String),
}

impl From<AttachError> for OffCpuError {
    fn from(e: AttachError) -> Self {
        match e {
            AttachError::Missing(p) => {
                OffCpuError::Options(format!("program {p} missing from the object"))
            }
            AttachError::Program { program, source } => OffCpuError::Program { program, source },
        }
    }
}

impl From<MapAccessError> for OffCpuError {
    fn from(e: MapAccessError) -> Self {
        OffCpuError::Map {
            map: e.map,
            source: e.source,
        }
    }
}

/// The state a thread left the CPU in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreadState {
    /// Preempted while runnable: waiting for a CPU (`R`).
    Runnable,
    /// Interruptible sleep: sleeps, locks, poll, sockets (`S`).
    Sleeping,
    /// Uninterruptible sleep, mostly disk I/O (`D`).
    Disk,
    /// Stopped, traced, exiting, idle kernel threads.
    Other,
    /// Not off the CPU: on-CPU time in a wall-clock profile.
    #[serde(rename = "on-cpu")]
    OnCpu,
}

impl ThreadState {
    /// From the kernel side's value.
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            state::RUNNABLE => Self::Runnable,
            state::SLEEPING => Self::Sleeping,
            state::DISK => Self::Disk,
            _ => Self::Other,
        }
    }

    /// As the JSON, labels and the flame graph spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Runnable => "runnable",
            Self::Sleeping => "sleeping",
            Self::Disk => "disk",
            Self::Other => "other",
            Self::OnCpu => "on-cpu",
        }
    }
}

/// The kernel side's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OffCpuCounters {
    /// sched_switch events the program ran for.
    pub switches: u64,
    /// Switch-outs the filters dropped in the kernel (and the idle task's).
    pub filtered: u64,
    /// Switch-outs recorded.
    pub recorded: u64,
    /// Absences counted.
    pub counted: u64,
    /// Absences shorter than the minimum.
    pub too_short: u64,
    /// Absences lost: the time map was full.
    pub time_map_full: u64,
    /// Switch-outs lost: the start map refused them.
    pub start_map_full: u64,
    /// User stacks lost to hash collisions.
    pub user_stack_collisions: u64,
    /// User stacks lost otherwise.
    pub user_stack_errors: u64,
    /// Kernel stacks lost to hash collisions.
    pub kernel_stack_collisions: u64,
    /// Kernel stacks lost otherwise.
    pub kernel_stack_errors: u64,
}

/// Everything read from the kernel maps.
#[derive(Clone, Debug, Default)]
pub struct OffCpuSnapshot {
    /// Nanoseconds off the CPU per key, summed over CPUs.
    pub times: Vec<(OffCpuKey, u64)>,
    /// Stack id → instruction pointers, leaf first.
    pub stacks: HashMap<u32, Vec<u64>>,
    /// What the kernel side counted.
    pub counters: OffCpuCounters,
    /// Which tracepoint program measured it: `Btf` or `Classic`.
    pub tracepoints: Tracepoints,
    /// How the table walks went, when user stacks are walked with tables.
    pub unwind: Option<UnwindSummary>,
}

/// The BTF program's configuration: `task_struct.pid`, checked against the
/// tracepoint's signature.
pub fn btf_config(layout: &Layout) -> Result<OffCpuConfig, LayoutError> {
    check_args(
        layout,
        "sched_switch",
        // As the layout spells them: bool is `u1`, unsigned int `u4`.
        &["u1", "*struct task_struct", "*struct task_struct", "u4"],
        true,
        false,
    )?;
    let mut cfg = OffCpuConfig::zeroed();
    cfg.task = TaskOffsets {
        pid: offset(layout, "task_struct", "pid", 4)?,
        _pad: [0; 6],
    };
    Ok(cfg)
}

/// The classic program's configuration, from the record format under `root`.
pub fn classic_config(root: &Path) -> Result<OffCpuConfig, OffCpuError> {
    let format = tracefs::read_format(root, "sched", "sched_switch")?;
    let (span, [prev_state, next_pid]) =
        format.span([("prev_state", 8), ("next_pid", 4)], SWITCH_SPAN_MAX)?;
    let mut cfg = OffCpuConfig::zeroed();
    cfg.classic = SwitchFields {
        base: span.base,
        len: span.len,
        prev_state,
        next_pid,
        _pad: [0; 4],
    };
    Ok(cfg)
}

/// The filters and switches of `opts` in `cfg`.
fn filters(cfg: &mut OffCpuConfig, opts: &OffCpuOptions) -> Result<(), OffCpuError> {
    cfg.min_ns = opts.min_ns;
    cfg.user_stacks = u8::from(opts.user_stacks);
    cfg.kernel_stacks = u8::from(opts.kernel_stacks);
    cfg.filter_pids = u8::from(!opts.pids.is_empty());
    if let Some(comm) = &opts.comm {
        cfg.filter_comm = 1;
        cfg.comm = comm_bytes(comm);
    }
    if let Some(path) = &opts.cgroup {
        let (id, level) = cgroup_id(Path::new(CGROUP2_ROOT), path)?;
        cfg.filter_cgroup = 1;
        cfg.cgroup_id = id;
        cfg.cgroup_level = level;
    }
    Ok(())
}

/// The comm as the kernel keeps it: 15 bytes and a NUL.
fn comm_bytes(comm: &str) -> [u8; TASK_COMM_LEN] {
    let mut out = [0u8; TASK_COMM_LEN];
    for (o, b) in out.iter_mut().zip(comm.bytes().take(TASK_COMM_LEN - 1)) {
        *o = b;
    }
    out
}

/// The id (the directory's inode, what bpf_get_current_cgroup_id returns)
/// and depth of cgroup `path` under `root`.
pub fn cgroup_id(root: &Path, path: &str) -> Result<(u64, u8), OffCpuError> {
    let rel: PathBuf = Path::new(path)
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    if Path::new(path)
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(OffCpuError::Options(format!(
            "--cgroup {path}: give the path below {}, without `..`",
            root.display()
        )));
    }
    let dir = root.join(&rel);
    let meta = std::fs::metadata(&dir).map_err(|e| {
        OffCpuError::Options(format!(
            "--cgroup {path}: {} cannot be read ({e}); give a cgroup v2 path as /proc/PID/cgroup shows it after `0::`",
            dir.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(OffCpuError::Options(format!(
            "--cgroup {path}: {} is not a cgroup directory",
            dir.display()
        )));
    }
    let level = u8::try_from(rel.components().count())
        .map_err(|_| OffCpuError::Options(format!("--cgroup {path}: nested too deep")))?;
    Ok((meta.ino(), level))
}

/// An attached off-CPU collector; dropping it detaches the program.
pub struct OffCpuCollector {
    ebpf: Ebpf,
    tracepoints: Tracepoints,
    fallback: Option<String>,
    /// Loads unwind tables, when user stacks are walked with them.
    tables: Option<TableLoader>,
    /// Shorter absences are not counted.
    min_ns: u64,
}

impl OffCpuCollector {
    /// Loads the program and attaches it: the BTF tracepoint where the
    /// kernel has BTF (unless `opts.tracepoints` says classic), else the
    /// classic one (mounting tracefs if needed).
    pub fn attach(opts: &OffCpuOptions) -> Result<Self, OffCpuError> {
        if opts.pids.len() > OFFCPU_PID_FILTER_ENTRIES as usize {
            return Err(OffCpuError::Options(format!(
                "at most {OFFCPU_PID_FILTER_ENTRIES} processes can be selected at once"
            )));
        }
        if !opts.user_stacks && !opts.kernel_stacks {
            return Err(OffCpuError::Options(
                "no stacks to record: keep user or kernel stacks".into(),
            ));
        }
        choose(
            opts.tracepoints,
            || Self::attach_btf(opts),
            |fallback| Self::attach_classic(opts, fallback),
        )
    }

    fn attach_btf(opts: &OffCpuOptions) -> Result<Self, OffCpuError> {
        let layout = sysfs_layout().map_err(OffCpuError::NoBtf)?;
        let mut cfg = btf_config(&layout).map_err(|e| OffCpuError::NoBtf(e.to_string()))?;
        drop(layout);
        filters(&mut cfg, opts)?;
        // `auto` walks with tables for selected processes, as the CPU
        // sampler does. For the whole host it would be worth more here
        // (every off-CPU stack starts in a C library syscall wrapper,
        // without frame pointers, so a frame-pointer walk loses its caller),
        // but tables are built in the sampling loop: on a busy host that took
        // 2.9 s of a 2 s profile and overflowed the rows budget, and after
        // privileges are dropped other users' files cannot be read.
        let dwarf =
            opts.user_stacks && opts.unwind.resolve(!opts.pids.is_empty()) == UnwindMode::Dwarf;
        cfg.dwarf = u8::from(dwarf);
        let btf = sysfs_btf().map_err(OffCpuError::NoBtf)?;
        let limits = Limits::with_tables_mib(opts.unwind_tables_mib);
        let mut ebpf = Self::load(opts, cfg, dwarf.then_some(&limits))?;
        let mut tables = None;
        if dwarf {
            let mut loader = TableLoader::new(limits);
            for &pid in &opts.pids {
                // One that exits meanwhile is reported by the caller.
                let _ = loader.load_process(&mut ebpf, pid);
            }
            tables = Some(loader);
        }
        attach_btf(&mut ebpf, &btf, [("sched_switch", "sched_switch_btf")])?;
        Ok(Self {
            ebpf,
            tracepoints: Tracepoints::Btf,
            fallback: None,
            tables,
            min_ns: opts.min_ns,
        })
    }

    fn attach_classic(opts: &OffCpuOptions, fallback: Option<String>) -> Result<Self, OffCpuError> {
        let root = tracefs::ensure_mounted()?;
        let mut cfg = classic_config(&root)?;
        filters(&mut cfg, opts)?;
        let mut ebpf = Self::load(opts, cfg, None)?;
        attach_classic(&mut ebpf, [("sched", "sched_switch", "sched_switch")])?;
        Ok(Self {
            ebpf,
            tracepoints: Tracepoints::Classic,
            fallback,
            tables: None,
            min_ns: opts.min_ns,
        })
    }

    /// Loads the object; with `tables`, room for unwind tables.
    fn load(
        opts: &OffCpuOptions,
        cfg: OffCpuConfig,
        tables: Option<&Limits>,
    ) -> Result<Ebpf, OffCpuError> {
        let mut ebpf = ebpf::load(&ebpf::Globals {
            offcpu: Some(cfg),
            unwind: tables.map(|_| UnwindConfig {
                tgid: 0,
                task_regs: 1,
            }),
            map_entries: tables.map(Limits::map_entries).unwrap_or_default(),
            ..ebpf::Globals::default()
        })?;
        if !opts.pids.is_empty() {
            let err = MapAccessError::on("OFFCPU_PID_FILTER");
            let mut filter: BpfHashMap<_, u32, u8> =
                BpfHashMap::try_from(maps::find_mut(&mut ebpf, "OFFCPU_PID_FILTER")?)
                    .map_err(&err)?;
            for &pid in &opts.pids {
                filter.insert(pid, 1, 0).map_err(&err)?;
            }
        }
        Ok(ebpf)
    }

    /// `Btf` or `Classic`: which program is attached.
    pub fn tracepoints(&self) -> Tracepoints {
        self.tracepoints
    }

    /// Why the BTF tracepoint could not be used, when `auto` fell back.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Loads the unwind tables of `pids` not loaded yet, when user stacks
    /// are walked with tables; evicts all when they no longer fit.
    pub fn load_tables(&mut self, pids: impl IntoIterator<Item = u32>) {
        let Some(loader) = &mut self.tables else {
            return;
        };
        for pid in pids {
            if pid != 0 {
                let _ = loader.load_process(&mut self.ebpf, pid);
            }
            if loader.take_eviction() && loader.evict(&mut self.ebpf).is_ok() {
                let _ = loader.load_process(&mut self.ebpf, pid);
            }
        }
    }

    /// How the table walks went so far, when there are tables.
    pub fn unwind_summary(&self) -> Result<Option<UnwindSummary>, OffCpuError> {
        let Some(loader) = &self.tables else {
            return Ok(None);
        };
        let ends = maps::sum_counters(&self.ebpf, "UNWIND_ENDS", end::LEN)?;
        Ok(Some(UnwindSummary::new(&ends, loader.stats())))
    }

    /// What [`Collector::read`] gives, plus the absences still going on:
    /// the threads off the CPU now, from when they left until now. For the
    /// last read of a one-shot profile, where a thread blocked until the end
    /// would otherwise count for nothing; a windowed reader must not, since
    /// the kernel adds the whole absence once the thread comes back.
    pub fn read_to_now(&mut self) -> Result<OffCpuSnapshot, OffCpuError> {
        let mut snap = self.read()?;
        // bpf_ktime_get_ns() is CLOCK_MONOTONIC.
        let now = monotonic_ns();
        let start: BpfHashMap<&MapData, u32, OffCpuStart> =
            BpfHashMap::try_from(maps::find(&self.ebpf, "OFFCPU_START")?)
                .map_err(MapAccessError::on("OFFCPU_START"))?;
        let mut extra: HashMap<OffCpuKey, u64> = HashMap::new();
        for entry in start.iter() {
            let Ok((_, s)) = entry else { continue };
            let away = now.saturating_sub(s.start_ns);
            if away >= self.min_ns {
                *extra.entry(s.key).or_default() += away;
            }
        }
        let new_ids: Vec<u32> = extra
            .keys()
            .flat_map(|k| [k.user_stack_id, k.kernel_stack_id])
            .filter_map(|id| u32::try_from(id).ok())
            .filter(|id| !snap.stacks.contains_key(id))
            .collect();
        snap.stacks.extend(maps::read_stacks(
            &self.ebpf,
            "OFFCPU_STACKS",
            new_ids,
            self.tables.is_some(),
        )?);
        for (key, ns) in &mut snap.times {
            if let Some(more) = extra.remove(key) {
                *ns += more;
            }
        }
        snap.times.extend(extra);
        Ok(snap)
    }

    /// The kernel side's counters so far.
    pub fn counters_now(&self) -> Result<OffCpuCounters, OffCpuError> {
        let c = maps::sum_counters(&self.ebpf, "OFFCPU_COUNTERS", counter::LEN)?;
        let at = |i: u32| c.get(i as usize).copied().unwrap_or(0);
        Ok(OffCpuCounters {
            switches: at(counter::SWITCHES),
            filtered: at(counter::FILTERED),
            recorded: at(counter::RECORDED),
            counted: at(counter::COUNTED),
            too_short: at(counter::TOO_SHORT),
            time_map_full: at(counter::TIME_MAP_FULL),
            start_map_full: at(counter::START_MAP_FULL),
            user_stack_collisions: at(counter::USER_STACK_COLLISION),
            user_stack_errors: at(counter::USER_STACK_ERROR),
            kernel_stack_collisions: at(counter::KERNEL_STACK_COLLISION),
            kernel_stack_errors: at(counter::KERNEL_STACK_ERROR),
        })
    }

    /// The processes with time recorded so far (keys only: cheap enough
    /// to call every second, so that their memory maps are read while they
    /// live).
    pub fn pids(&self) -> Result<HashSet<u32>, OffCpuError> {
        let mut pids = HashSet::new();
        for key in self.time_map()?.keys() {
            pids.insert(key.map_err(MapAccessError::on("OFFCPU_TIME"))?.pid);
        }
        Ok(pids)
    }

    /// Deletes the stacks that no thread off the CPU now refers to, and
    /// returns how many. [`Collector::reset`] keeps the stack map (a thread
    /// away holds its ids until it comes back), so a reader that runs for
    /// days calls this after each read: otherwise the map fills with the
    /// stacks of every process ever seen (ASLR gives each its own) and new
    /// stacks are lost to collisions. A thread that leaves the CPU between
    /// the two steps with a stack already recorded may lose that stack (its
    /// time then shows a lost stack).
    pub fn prune_stacks(&mut self) -> Result<usize, OffCpuError> {
        let mut keep = HashSet::new();
        {
            let start: BpfHashMap<&MapData, u32, OffCpuStart> =
                BpfHashMap::try_from(maps::find(&self.ebpf, "OFFCPU_START")?)
                    .map_err(MapAccessError::on("OFFCPU_START"))?;
            // Entries that go while iterating end the walk early: keep what
            // was read.
            for (_, v) in start.iter().flatten() {
                keep.extend(
                    [v.key.user_stack_id, v.key.kernel_stack_id]
                        .into_iter()
                        .filter_map(|id| u32::try_from(id).ok()),
                );
            }
        }
        let err = MapAccessError::on("OFFCPU_STACKS");
        let mut traces: aya::maps::StackTraceMap<&mut MapData> =
            aya::maps::StackTraceMap::try_from(maps::find_mut(&mut self.ebpf, "OFFCPU_STACKS")?)
                .map_err(&err)?;
        let gone: Vec<u32> = traces
            .stack_ids()
            .filter_map(Result::ok)
            .filter(|id| !keep.contains(id))
            .collect();
        let mut n = 0;
        for id in gone {
            // One deleted meanwhile (there is no other deleter) is no error.
            if traces.remove(&id).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    fn time_map(&self) -> Result<PerCpuHashMap<&MapData, OffCpuKey, u64>, OffCpuError> {
        Ok(
            PerCpuHashMap::try_from(maps::find(&self.ebpf, "OFFCPU_TIME")?)
                .map_err(MapAccessError::on("OFFCPU_TIME"))?,
        )
    }
}

impl Collector for OffCpuCollector {
    type Snapshot = OffCpuSnapshot;
    type Error = OffCpuError;

    fn name(&self) -> &'static str {
        "offcpu"
    }

    fn read(&mut self) -> Result<OffCpuSnapshot, OffCpuError> {
        let mut times = Vec::new();
        for entry in self.time_map()?.iter() {
            let (key, per_cpu) = entry.map_err(MapAccessError::on("OFFCPU_TIME"))?;
            let ns: u64 = per_cpu.iter().sum();
            if ns > 0 {
                times.push((key, ns));
            }
        }
        let ids: HashSet<u32> = times
            .iter()
            .flat_map(|(k, _)| [k.user_stack_id, k.kernel_stack_id])
            .filter_map(|id| u32::try_from(id).ok())
            .collect();
        let stacks = maps::read_stacks(&self.ebpf, "OFFCPU_STACKS", ids, self.tables.is_some())?;
        Ok(OffCpuSnapshot {
            times,
            stacks,
            counters: self.counters_now()?,
            tracepoints: self.tracepoints,
            unwind: self.unwind_summary()?,
        })
    }

    fn reset(&mut self) -> Result<(), OffCpuError> {
        // The stacks stay: a thread off the CPU now still holds its id.
        Ok(maps::clear_per_cpu_hash::<OffCpuKey, u64>(
            &mut self.ebpf,
            "OFFCPU_TIME",
        )?)
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of bpf_ktime_get_ns().
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_cut_to_what_the_kernel_keeps() {
        let b = comm_bytes("a-very-long-thread-name");
        assert_eq!(&b[..15], b"a-very-long-thr");
        assert_eq!(b[15], 0);
    }

    #[test]
    fn cgroup_paths_resolve_to_inode_and_depth() {
        let root = std::env::temp_dir().join(format!("offcpu-cg-{}", std::process::id()));
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let (id, level) = cgroup_id(&root, "/a/b").unwrap();
        assert_eq!(level, 2);
        assert_eq!(id, std::fs::metadata(root.join("a/b")).unwrap().ino());
        assert_eq!(cgroup_id(&root, "/").unwrap().1, 0);
        assert!(cgroup_id(&root, "/a/../..").is_err());
        assert!(cgroup_id(&root, "/missing").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
