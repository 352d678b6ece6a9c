//! An experimental sampler that unwinds one process's user stacks in the
//! kernel with the tables of [`super::table`] (perf-ebpf/src/unwind.rs),
//! x86_64 only. It is the test bed of the kernel unwinder before `profile`
//! and `leaks` use it: it loads the tables of the process's files, samples
//! it on every CPU, and returns each distinct stack with its count and the
//! reasons walks ended.

use std::{os::fd::AsFd as _, path::PathBuf};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, PerCpuArray, PerCpuHashMap, ProgramArray},
    programs::{
        PerfEvent,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use perf_ebpf_common::unwind::{UnwindConfig, UnwindStack, end};

use crate::{
    collectors::maps::{self, MapAccessError},
    ebpf,
};

/// Why the sampler could not start or be read.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// Loading the object failed.
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program could not be loaded or attached.
    #[error("the unwinding program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    /// A map could not be used.
    #[error(transparent)]
    Map(#[from] MapAccessError),
    /// A map operation failed.
    #[error("unwind map: {0}")]
    MapOp(#[from] aya::maps::MapError),
    /// The process's maps could not be read.
    #[error("reading the maps of PID {pid}: {source}")]
    Maps {
        /// The process.
        pid: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the online CPUs, or another system call, failed.
    #[error("{0}")]
    Cpus(String),
}

/// Sizes of the unwinder's maps.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Rows of all tables together.
    pub rows: u32,
    /// Pages of the index.
    pub pages: u32,
    /// Distinct stacks kept.
    pub stacks: u32,
    /// Processes whose mappings are kept.
    pub processes: u32,
}

impl Limits {
    /// The unwinder's map sizes, for `ebpf::Globals::map_entries`.
    pub fn map_entries(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("UNWIND_ROWS", self.rows),
            ("UNWIND_PAGES", self.pages),
            ("UNWIND_PROCS", self.processes),
            ("UNWIND_STACKS", self.stacks),
            ("UNWIND_COUNTS", self.stacks),
        ]
    }
}

/// Default memory for unwind table rows in the kernel: 1 Mi rows, enough
/// for python3 and its libraries many times over, small for a Raspberry Pi.
pub const DEFAULT_TABLES_MIB: u32 = 12;

impl Limits {
    /// Limits for `mib` MiB of table rows (12 bytes each), with index pages
    /// in proportion (one per 64 rows).
    pub fn with_tables_mib(mib: u32) -> Self {
        let rows = (u64::from(mib) * 1024 * 1024
            / size_of::<perf_ebpf_common::unwind::UnwindRow>() as u64)
            .clamp(1024, u64::from(u32::MAX / 2)) as u32;
        Self {
            rows,
            pages: (rows / 64).max(1024),
            ..Self::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rows: 1 << 20,
            pages: 1 << 14,
            stacks: 1 << 14,
            processes: 1024,
        }
    }
}

/// One file whose table was loaded.
#[derive(Clone, Debug)]
pub struct LoadedFile {
    /// Its path as the process maps it.
    pub path: PathBuf,
    /// Rows loaded.
    pub rows: usize,
}

/// One distinct stack sampled.
#[derive(Clone, Debug)]
pub struct SampledStack {
    /// Return addresses, innermost first.
    pub pcs: Vec<u64>,
    /// Why the walk ended (`end::*`).
    pub end: u32,
    /// Samples with this stack.
    pub count: u64,
}

/// The experimental unwinding sampler of one process.
pub struct DwarfSampler {
    ebpf: Ebpf,
    /// Files whose tables are loaded.
    pub files: Vec<LoadedFile>,
}

impl DwarfSampler {
    /// Loads the tables of `pid`'s executable files and samples it at
    /// `frequency_hz` on every online CPU.
    pub fn attach(pid: u32, frequency_hz: u64, limits: Limits) -> Result<Self, SamplerError> {
        let mut ebpf = ebpf::load(&ebpf::Globals {
            unwind: Some(UnwindConfig {
                tgid: pid,
                task_regs: u32::from(std::path::Path::new("/sys/kernel/btf/vmlinux").exists()),
            }),
            map_entries: limits.map_entries(),
            ..ebpf::Globals::default()
        })?;
        let files = super::loader::TableLoader::new(limits).load_process(&mut ebpf, pid)?;
        let program: &mut PerfEvent = ebpf
            .program_mut("unwind_sample")
            .ok_or(aya::programs::ProgramError::NotLoaded)?
            .try_into()?;
        program.load()?;
        // The walk goes on in `unwind_more`, tail-called from slot 0.
        let more: &mut PerfEvent = ebpf
            .program_mut("unwind_more")
            .ok_or(aya::programs::ProgramError::NotLoaded)?
            .try_into()?;
        more.load()?;
        let more_fd = more
            .fd()?
            .try_clone()
            .map_err(|e| SamplerError::Cpus(format!("duplicating a program fd: {e}")))?;
        let mut progs = ProgramArray::try_from(maps::find_mut(&mut ebpf, "UNWIND_PROGS")?)?;
        progs.set(0, &more_fd, 0)?;
        let program: &mut PerfEvent = ebpf
            .program_mut("unwind_sample")
            .ok_or(aya::programs::ProgramError::NotLoaded)?
            .try_into()?;
        let cpus = aya::util::online_cpus().map_err(|(path, e)| {
            SamplerError::Cpus(format!("listing the online CPUs: {path}: {e}"))
        })?;
        for cpu in cpus {
            program.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(frequency_hz),
                false,
            )?;
        }
        Ok(Self { ebpf, files })
    }

    /// BPF run time of the unwinding programs so far: (walks, total ns),
    /// counted while the kernel's statistics are on (see
    /// `aya::sys::enable_stats`); a walk is one `unwind_sample` run and its
    /// tail calls.
    pub fn bpf_time(&self) -> Result<(u64, u64), SamplerError> {
        let mut walks = 0;
        let mut ns = 0;
        for name in ["unwind_sample", "unwind_more"] {
            let program: &PerfEvent = self
                .ebpf
                .program(name)
                .ok_or(aya::programs::ProgramError::NotLoaded)?
                .try_into()?;
            let stats = crate::progstats::read(program.fd()?.as_fd())
                .map_err(|e| SamplerError::Cpus(format!("reading {name}'s statistics: {e}")))?;
            if name == "unwind_sample" {
                walks = stats.run_count;
            }
            ns += stats.run_time_ns;
        }
        Ok((walks, ns))
    }

    /// Every distinct stack so far, most sampled first, and the walks ended
    /// per reason (`end::*`).
    pub fn read(&self) -> Result<(Vec<SampledStack>, Vec<u64>), SamplerError> {
        let counts: PerCpuHashMap<_, u64, u64> =
            PerCpuHashMap::try_from(maps::find(&self.ebpf, "UNWIND_COUNTS")?)?;
        let stacks: BpfHashMap<_, u64, UnwindStack> =
            BpfHashMap::try_from(maps::find(&self.ebpf, "UNWIND_STACKS")?)?;
        let mut out = Vec::new();
        for entry in counts.iter() {
            let (hash, per_cpu) = entry?;
            let count: u64 = per_cpu.iter().sum();
            let Ok(stack) = stacks.get(&hash, 0) else {
                continue;
            };
            let len = (stack.len as usize).min(stack.pcs.len());
            out.push(SampledStack {
                pcs: stack.pcs[..len].to_vec(),
                end: stack.end,
                count,
            });
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.count));
        let ends_map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(maps::find(&self.ebpf, "UNWIND_ENDS")?)?;
        let mut ends = vec![0u64; end::LEN as usize];
        for (i, slot) in ends.iter_mut().enumerate() {
            *slot = ends_map.get(&(i as u32), 0)?.iter().sum();
        }
        Ok((out, ends))
    }
}
