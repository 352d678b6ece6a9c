//! The CPU profiler: a perf-event program on the software cpu-clock of every
//! online CPU, counting samples per (process, thread, user stack, kernel stack).

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use aya::{
    Ebpf, EbpfError,
    maps::{
        HashMap as BpfHashMap, MapData, MapError, PerCpuHashMap, ProgramArray, RingBuf,
        StackTraceMap,
    },
    programs::{
        PerfEvent, ProgramError,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};
use perf_ebpf_common::{
    SampleConfig, SampleKey, TASK_COMM_LEN, counter,
    unwind::{UnwindConfig, UnwindStack, end},
};

use super::{
    Collector,
    maps::{self, MapAccessError},
};
use crate::{
    ebpf,
    profile::LostCounts,
    unwind::{UnwindMode, UnwindSummary, loader::TableLoader, sampler::Limits},
};

/// Online CPUs (0 when the list cannot be read): what a profile reports
/// it covered.
pub fn online_cpu_count() -> u32 {
    online_cpus().map_or(0, |c| c.len() as u32)
}

/// Highest sampling frequency accepted; above it the sampler costs more than it tells.
pub const MAX_FREQUENCY_HZ: u64 = 10_000;

/// What to sample.
#[derive(Clone, Debug)]
pub struct CpuOptions {
    /// Samples per second on each CPU.
    pub frequency_hz: u64,
    /// Only these processes (thread-group ids); empty means all.
    pub pids: Vec<u32>,
    /// Only threads with this name (first 15 bytes compared, as the kernel stores it).
    pub comm: Option<String>,
    /// Collect user-space stacks.
    pub user_stacks: bool,
    /// Collect kernel stacks.
    pub kernel_stacks: bool,
    /// Keep samples of the idle task (pid 0).
    pub include_idle: bool,
    /// How user stacks are walked.
    pub unwind: UnwindMode,
    /// Memory for unwind table rows in the kernel, in MiB.
    pub unwind_tables_mib: u32,
}

impl Default for CpuOptions {
    fn default() -> Self {
        Self {
            frequency_hz: 99,
            pids: Vec::new(),
            comm: None,
            user_stacks: true,
            kernel_stacks: true,
            include_idle: false,
            unwind: UnwindMode::Auto,
            unwind_tables_mib: crate::unwind::sampler::DEFAULT_TABLES_MIB,
        }
    }
}

/// Why the CPU profiler could not start or read.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The eBPF object could not be loaded (maps creation failed).
    #[error(
        "loading the eBPF object failed: {0}; this needs root or CAP_BPF+CAP_PERFMON and a kernel with BPF enabled"
    )]
    Load(#[from] EbpfError),
    /// The verifier or the kernel refused the program.
    #[error("the kernel refused the CPU sampling program: {0}")]
    Program(#[source] ProgramError),
    /// A map was missing or could not be read.
    #[error("reading the CPU sampler's map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What went wrong.
        #[source]
        source: MapError,
    },
    /// perf_event_open failed.
    #[error("{0}")]
    PerfEvent(String),
    /// The list of online CPUs could not be read.
    #[error("reading the online CPUs from {0} failed: {1}")]
    Cpus(&'static str, std::io::Error),
    /// Bad options.
    #[error("{0}")]
    Options(String),
}

impl From<maps::MapAccessError> for CpuError {
    fn from(e: maps::MapAccessError) -> Self {
        CpuError::Map {
            map: e.map,
            source: e.source,
        }
    }
}

/// Raw contents of the kernel maps.
#[derive(Clone, Debug, Default)]
pub struct RawProfile {
    /// Sample counts, summed over CPUs.
    pub samples: Vec<(SampleKey, u64)>,
    /// Stack id → instruction pointers, leaf first.
    pub stacks: HashMap<u32, Vec<u64>>,
    /// What the kernel side counted as lost.
    pub lost: LostCounts,
    /// Samples the program ran for, before filtering.
    pub samples_seen: u64,
    /// How the table walks went, when user stacks are walked with tables.
    pub unwind: Option<UnwindSummary>,
}

/// The CPU sampler's kernel-side counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// Samples the program ran for, before filtering.
    pub samples_seen: u64,
    /// Samples counted in the sample map.
    pub samples_counted: u64,
    /// New-process notices dropped because the ring buffer was full.
    pub new_pids_dropped: u64,
    /// What was lost.
    pub lost: LostCounts,
}

/// An attached CPU profiler; dropping it detaches the program.
pub struct CpuCollector {
    ebpf: Ebpf,
    cpus: Vec<u32>,
    new_pids: RingBuf<aya::maps::MapData>,
    /// Loads unwind tables for each sampled process, when user stacks are
    /// walked with them.
    tables: Option<TableLoader>,
}

impl CpuCollector {
    /// Loads the sampler and attaches it to every online CPU.
    pub fn attach(opts: &CpuOptions) -> Result<Self, CpuError> {
        if opts.frequency_hz == 0 || opts.frequency_hz > MAX_FREQUENCY_HZ {
            return Err(CpuError::Options(format!(
                "sampling frequency {} Hz is out of range: use 1 to {MAX_FREQUENCY_HZ} Hz (99 is the usual choice)",
                opts.frequency_hz
            )));
        }
        let config = sample_config(opts)?;
        let dwarf = config.dwarf != 0;
        let limits = Limits::with_tables_mib(opts.unwind_tables_mib);
        let mut ebpf = ebpf::load(&ebpf::Globals {
            cpu: Some(config),
            unwind: dwarf.then(|| UnwindConfig {
                tgid: 0,
                task_regs: u32::from(Path::new("/sys/kernel/btf/vmlinux").exists()),
            }),
            map_entries: if dwarf {
                limits.map_entries()
            } else {
                Vec::new()
            },
            ..ebpf::Globals::default()
        })?;
        let mut tables = None;
        if dwarf {
            load_unwinder(&mut ebpf)?;
            let mut loader = TableLoader::new(limits);
            // Selected processes get their tables before the first sample;
            // the others when first sampled (`load_tables`).
            for &pid in &opts.pids {
                // One that exits meanwhile is reported by the caller.
                let _ = loader.load_process(&mut ebpf, pid);
            }
            tables = Some(loader);
        }
        if !opts.pids.is_empty() {
            let err = MapAccessError::on("CPU_PID_FILTER");
            let mut filter: BpfHashMap<_, u32, u8> =
                BpfHashMap::try_from(maps::find_mut(&mut ebpf, "CPU_PID_FILTER")?).map_err(&err)?;
            for &pid in &opts.pids {
                filter.insert(pid, 1, 0).map_err(&err)?;
            }
        }
        let cpus = online_cpus().map_err(|(path, e)| CpuError::Cpus(path, e))?;
        let program: &mut PerfEvent = ebpf
            .program_mut("cpu_sample")
            .ok_or_else(|| CpuError::Options("program cpu_sample missing from the object".into()))?
            .try_into()
            .map_err(CpuError::Program)?;
        program.load().map_err(CpuError::Program)?;
        for &cpu in &cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(opts.frequency_hz),
                    false,
                )
                .map_err(|e| perf_event_error(cpu, e))?;
        }
        // Taken out of the object so that draining it needs no borrow of `ebpf`.
        let new_pids = ebpf.take_map("CPU_NEW_PIDS").ok_or(CpuError::Map {
            map: "CPU_NEW_PIDS",
            source: MapError::InvalidName {
                name: "CPU_NEW_PIDS".into(),
            },
        })?;
        let new_pids = RingBuf::try_from(new_pids).map_err(MapAccessError::on("CPU_NEW_PIDS"))?;
        Ok(Self {
            ebpf,
            cpus,
            new_pids,
            tables,
        })
    }

    /// Loads the unwind tables of `pids` (newly sampled processes), when
    /// user stacks are walked with tables; until then their stacks are
    /// walked with frame pointers. A process that exited is counted in the
    /// loader's statistics.
    pub fn load_tables(&mut self, pids: &[u32]) {
        let Some(loader) = &mut self.tables else {
            return;
        };
        for &pid in pids {
            if pid != 0 {
                let _ = loader.load_process(&mut self.ebpf, pid);
            }
            if loader.take_eviction() && loader.evict(&mut self.ebpf).is_ok() {
                // Every process is announced again when next sampled, and
                // then gets its tables back (built ones are kept in user
                // space); this one at once.
                let _ = maps::clear_hash::<u32, u8>(&mut self.ebpf, "CPU_SEEN_PIDS");
                let _ = loader.load_process(&mut self.ebpf, pid);
            }
        }
    }

    /// The CPUs sampled.
    pub fn cpus(&self) -> &[u32] {
        &self.cpus
    }

    /// The new-PID ring buffer's file descriptor: it becomes readable when
    /// the kernel announces a PID, so callers can sleep until then instead of
    /// polling.
    pub fn new_pids_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        self.new_pids.as_fd()
    }

    /// PIDs sampled for the first time since the last call (cheap: no syscall).
    pub fn new_pids(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(item) = self.new_pids.next() {
            if let Ok(bytes) = <[u8; 4]>::try_from(&*item) {
                out.push(u32::from_ne_bytes(bytes));
            }
        }
        out
    }

    /// Forgets that `pids` were announced (one syscall each): for a caller
    /// that learns when processes exit (the daemon), so that the kernel's
    /// set of announced PIDs holds live processes only instead of filling
    /// with every process ever sampled, and a PID the kernel hands out again
    /// is announced again.
    pub fn forget_pids(&mut self, pids: &[u32]) -> Result<(), CpuError> {
        if pids.is_empty() {
            return Ok(());
        }
        let err = MapAccessError::on("CPU_SEEN_PIDS");
        let mut seen: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(maps::find_mut(&mut self.ebpf, "CPU_SEEN_PIDS")?).map_err(&err)?;
        for pid in pids {
            // Not there (never announced, or evicted) is fine.
            let _ = seen.remove(pid);
        }
        if let Some(loader) = &mut self.tables {
            for &pid in pids {
                loader.forget_process(&mut self.ebpf, pid).map_err(|e| {
                    CpuError::Options(format!("forgetting PID {pid}'s tables: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// Processes seen in the samples so far (one syscall per map entry).
    pub fn seen_pids(&self) -> Result<HashSet<u32>, CpuError> {
        let samples = self.samples_map()?;
        Ok(samples
            .keys()
            .filter_map(Result::ok)
            .map(|k| k.pid)
            .collect())
    }

    /// Samples counted so far (the counter, not the map).
    pub fn samples_counted(&self) -> Result<u64, CpuError> {
        Ok(self.counters()?[counter::SAMPLES_COUNTED as usize])
    }

    /// The kernel side's counters now (one read per counter, no map walk:
    /// cheap enough for every scrape).
    pub fn counters_now(&self) -> Result<CpuCounters, CpuError> {
        let c = self.counters()?;
        Ok(CpuCounters {
            samples_seen: c[counter::SAMPLES_SEEN as usize],
            samples_counted: c[counter::SAMPLES_COUNTED as usize],
            new_pids_dropped: c[counter::NEW_PID_DROPPED as usize],
            lost: LostCounts {
                sample_map_full: c[counter::SAMPLE_MAP_FULL as usize],
                user_stack_collisions: c[counter::USER_STACK_COLLISION as usize],
                user_stack_errors: c[counter::USER_STACK_ERROR as usize],
                kernel_stack_collisions: c[counter::KERNEL_STACK_COLLISION as usize],
                kernel_stack_errors: c[counter::KERNEL_STACK_ERROR as usize],
            },
        })
    }

    /// Empties the stack map. The kernel never frees a stack id by itself,
    /// so a caller that resets every window (the daemon) would otherwise see
    /// stale stacks pile up and stack-id collisions (lost stacks) rise.
    fn clear_stacks(&mut self) -> Result<(), CpuError> {
        let mut stacks: StackTraceMap<&mut MapData> =
            StackTraceMap::try_from(maps::find_mut(&mut self.ebpf, "CPU_STACKS")?)
                .map_err(MapAccessError::on("CPU_STACKS"))?;
        let ids: Vec<u32> = stacks.stack_ids().filter_map(Result::ok).collect();
        for id in ids {
            // Already gone is fine: the aim is an empty map.
            let _ = stacks.remove(&id);
        }
        Ok(())
    }

    /// The table walks' stacks, when user stacks are walked with tables.
    /// How the table walks went so far, when user stacks are walked with
    /// tables.
    pub fn unwind_summary(&self) -> Result<Option<UnwindSummary>, CpuError> {
        let Some(loader) = &self.tables else {
            return Ok(None);
        };
        let ends = maps::sum_counters(&self.ebpf, "UNWIND_ENDS", end::LEN)?;
        Ok(Some(UnwindSummary::new(&ends, loader.stats())))
    }

    fn samples_map(&self) -> Result<PerCpuHashMap<&MapData, SampleKey, u64>, CpuError> {
        Ok(
            PerCpuHashMap::try_from(maps::find(&self.ebpf, "CPU_SAMPLES")?)
                .map_err(MapAccessError::on("CPU_SAMPLES"))?,
        )
    }

    fn counters(&self) -> Result<Vec<u64>, CpuError> {
        Ok(maps::sum_counters(
            &self.ebpf,
            "CPU_COUNTERS",
            counter::LEN,
        )?)
    }
}

impl Collector for CpuCollector {
    type Snapshot = RawProfile;
    type Error = CpuError;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn read(&mut self) -> Result<RawProfile, CpuError> {
        let samples_map = self.samples_map()?;
        let mut samples = Vec::new();
        for entry in samples_map.iter() {
            let (key, per_cpu) = entry.map_err(MapAccessError::on("CPU_SAMPLES"))?;
            let count: u64 = per_cpu.iter().sum();
            if count > 0 {
                samples.push((key, count));
            }
        }
        let ids: HashSet<u32> = samples
            .iter()
            .flat_map(|(k, _)| [k.user_stack_id, k.kernel_stack_id])
            .filter_map(|id| u32::try_from(id).ok())
            .collect();
        let stacks = maps::read_stacks(&self.ebpf, "CPU_STACKS", ids, self.tables.is_some())?;
        let counters = self.counters_now()?;
        Ok(RawProfile {
            samples,
            stacks,
            lost: counters.lost,
            samples_seen: counters.samples_seen,
            unwind: self.unwind_summary()?,
        })
    }

    fn reset(&mut self) -> Result<(), CpuError> {
        // Stacks first: a sample counted after the sample map is cleared
        // then finds its stack recorded again, not deleted under it.
        self.clear_stacks()?;
        if self.tables.is_some() {
            maps::clear_hash::<u64, UnwindStack>(&mut self.ebpf, "UNWIND_STACKS")?;
        }
        Ok(maps::clear_per_cpu_hash::<SampleKey, u64>(
            &mut self.ebpf,
            "CPU_SAMPLES",
        )?)
    }
}

fn sample_config(opts: &CpuOptions) -> Result<SampleConfig, CpuError> {
    let mut cfg = SampleConfig::zeroed();
    cfg.filter_pids = u8::from(!opts.pids.is_empty());
    cfg.include_idle = u8::from(opts.include_idle);
    cfg.user_stacks = u8::from(opts.user_stacks);
    cfg.kernel_stacks = u8::from(opts.kernel_stacks);
    let selected = !opts.pids.is_empty();
    cfg.dwarf = u8::from(opts.user_stacks && opts.unwind.resolve(selected) == UnwindMode::Dwarf);
    if let Some(comm) = &opts.comm {
        cfg.filter_comm = 1;
        cfg.comm = comm_bytes(comm)?;
    }
    Ok(cfg)
}

/// The kernel keeps 15 bytes of a thread's name plus a NUL; compare the same.
pub fn comm_bytes(comm: &str) -> Result<[u8; TASK_COMM_LEN], CpuError> {
    if comm.is_empty() || comm.contains('\0') {
        return Err(CpuError::Options(
            "--comm needs a non-empty process name (as `ps -o comm` shows it)".into(),
        ));
    }
    let mut out = [0u8; TASK_COMM_LEN];
    let bytes = comm.as_bytes();
    let n = bytes.len().min(TASK_COMM_LEN - 1);
    out[..n].copy_from_slice(&bytes[..n]);
    Ok(out)
}

/// Loads `unwind_more`, where `cpu_sample` hands a walk over (slot 0 of
/// `UNWIND_PROGS`, which tail-calls itself for the next frames).
fn load_unwinder(ebpf: &mut Ebpf) -> Result<(), CpuError> {
    let more: &mut PerfEvent = ebpf
        .program_mut("unwind_more")
        .ok_or_else(|| CpuError::Options("program unwind_more missing from the object".into()))?
        .try_into()
        .map_err(CpuError::Program)?;
    more.load().map_err(CpuError::Program)?;
    let fd = more
        .fd()
        .map_err(CpuError::Program)?
        .try_clone()
        .map_err(|e| CpuError::Options(format!("duplicating unwind_more's descriptor: {e}")))?;
    let err = MapAccessError::on("UNWIND_PROGS");
    let mut progs = ProgramArray::try_from(maps::find_mut(ebpf, "UNWIND_PROGS")?).map_err(&err)?;
    progs.set(0, &fd, 0).map_err(&err)?;
    Ok(())
}

fn perf_event_error(cpu: u32, e: ProgramError) -> CpuError {
    let io = match &e {
        ProgramError::SyscallError(s) => Some(s.io_error.raw_os_error()),
        _ => None,
    };
    let hint = match io.flatten() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) => {
            "the kernel has no software cpu-clock perf event (CONFIG_PERF_EVENTS off?); \
             CPU profiling is not possible on this kernel"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "perf events are not allowed: run as root or grant CAP_PERFMON, \
             or lower kernel.perf_event_paranoid (sysctl -w kernel.perf_event_paranoid=1)"
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "out of file descriptors: raise the limit with `ulimit -n`"
        }
        _ => "perf events are unavailable here",
    };
    CpuError::PerfEvent(format!(
        "opening the cpu-clock perf event on CPU {cpu} failed ({e}): {hint}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_cut_like_the_kernel_cuts_it() {
        let c = comm_bytes("a_very_long_process_name").unwrap();
        assert_eq!(&c[..15], b"a_very_long_pro");
        assert_eq!(c[15], 0);
        assert!(comm_bytes("").is_err());
    }

    #[test]
    fn config_reflects_options() {
        let cfg = sample_config(&CpuOptions {
            pids: vec![1],
            comm: Some("x".into()),
            user_stacks: false,
            ..CpuOptions::default()
        })
        .unwrap();
        assert_eq!(
            (
                cfg.filter_pids,
                cfg.filter_comm,
                cfg.user_stacks,
                cfg.kernel_stacks
            ),
            (1, 1, 0, 1)
        );
        assert_eq!(cfg.comm[0], b'x');
    }
}
