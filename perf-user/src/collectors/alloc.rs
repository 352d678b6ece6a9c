//! The allocation tracer behind `leaks`: uprobes and uretprobes on one
//! process's allocation functions (perf-ebpf/src/alloc.rs), reading what is
//! outstanding at report time.
//!
//! Loading and attaching are separate, because for `leaks -- COMMAND` the
//! allocator is only known once the command's libraries are mapped: the
//! programs are loaded first, then attached to whichever files
//! [`crate::leaks::allocator`] picks, possibly more than once as the process
//! runs execve().

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    num::NonZeroU32,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError,
    maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuHashMap},
    programs::{
        ProgramError, RawTracePoint, UProbe,
        uprobe::{UProbeLink, UProbeScope},
    },
};
use perf_ebpf_common::alloc::{
    ALLOC_OUTSTANDING_ENTRIES, AllocConfig, AllocInfo, AllocStackKey, AllocStackTotals, counter,
    state,
};

use super::{
    Collector, maps,
    uprobe_multi::{self, MultiPrograms, UprobeMultiError},
};
use crate::{
    ebpf,
    unwind::{UnwindMode, UnwindSummary, loader::TableLoader, sampler::Limits},
};

/// The uretprobe shared by every allocation function.
const RETURN_PROGRAM: &str = "alloc_return";
/// The uprobe on the dynamic linker that stops a starting command.
const STARTUP_PROGRAM: &str = "alloc_startup_stop";
/// The tracepoint program that notices execve().
const EXEC_PROGRAM: &str = "alloc_exec";

/// The entry program for each probed function. Functions with the same
/// arguments share one: `valloc` is `malloc`, `memalign` is `aligned_alloc`.
pub const FUNCTIONS: &[(&str, &str)] = &[
    ("malloc", "alloc_malloc"),
    ("calloc", "alloc_calloc"),
    ("realloc", "alloc_realloc"),
    ("reallocarray", "alloc_reallocarray"),
    ("posix_memalign", "alloc_posix_memalign"),
    ("aligned_alloc", "alloc_aligned_alloc"),
    ("memalign", "alloc_aligned_alloc"),
    ("valloc", "alloc_malloc"),
    ("free", "alloc_free"),
];

/// Whether `function` (of [`FUNCTIONS`]) gets a return probe as well as an
/// entry probe: every allocation function does, for the address it returns;
/// `free` returns nothing.
pub fn has_return_probe(function: &str) -> bool {
    function != "free"
}

/// Largest `--max-allocations`. The kernel refuses a hash map of more than
/// 2^27 entries (E2BIG: its bucket array, 16 bytes per entry, must fit in
/// 4 GiB), and allocates that array when the map is created, even without
/// preallocation: 2^27 reserved 2 GiB at once. 16 Mi entries reserve
/// 256 MiB, and when full hold ~1.6 GiB (~100 bytes per tracked
/// allocation); past that, `--sample` is the better tool.
pub const MAX_ALLOCATIONS: u32 = 1 << 24;

/// How to trace.
#[derive(Clone, Debug)]
pub struct AllocOptions {
    /// The process (thread-group id).
    pub tgid: u32,
    /// Track one allocation in this many, chosen by address; 1 tracks all.
    pub sample_every: u32,
    /// Capacity of the outstanding-allocation map.
    pub max_allocations: u32,
    /// How allocation stacks are walked.
    pub unwind: UnwindMode,
}

impl Default for AllocOptions {
    fn default() -> Self {
        Self {
            tgid: 0,
            sample_every: 1,
            max_allocations: ALLOC_OUTSTANDING_ENTRIES,
            // Tables where the kernel walk knows the registers: whole stacks
            // through libc cost no more BPF time per malloc+free than frame
            // pointers (795 ns against 898, docs/unwinding.md).
            unwind: UnwindMode::Auto,
        }
    }
}

/// One function to probe: its name, its entry program, and its file offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSite {
    /// Symbol name, e.g. `malloc`.
    pub function: &'static str,
    /// The eBPF program for its entry.
    pub program: &'static str,
    /// Offset of its first instruction in the file: where a return probe goes.
    pub offset: u64,
    /// Where its entry program goes: `offset`, or for a function without a
    /// return probe a later instruction that the kernel emulates instead of
    /// single-stepping (`leaks::probe_site`).
    pub entry_offset: u64,
}

/// Why the allocation tracer could not start or read. The causes are part
/// of each message, said once (see [`error_chain`]), not sources: printed
/// as a chain, a message that quotes its source would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// The eBPF object could not be loaded (maps creation failed).
    #[error(
        "loading the eBPF object failed: {}; this needs root or CAP_BPF+CAP_PERFMON and a kernel with BPF enabled",
        error_chain(.0)
    )]
    Load(EbpfError),
    /// The verifier or the kernel refused a program.
    #[error("the kernel refused the eBPF program {program}: {}", error_chain(cause.as_ref()))]
    Program {
        /// The program's name.
        program: &'static str,
        /// What went wrong (boxed: a ProgramError is large).
        cause: Box<ProgramError>,
    },
    /// A probe could not be attached.
    #[error("attaching to {function} in {} failed: {}; {hint}", path.display(), error_chain(cause.as_ref()))]
    Attach {
        /// The probed function.
        function: String,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        cause: Box<dyn std::error::Error + Send + Sync>,
        /// What to do about it.
        hint: &'static str,
    },
    /// The programs could not be loaded for uprobe_multi links.
    #[error(transparent)]
    Multi(#[from] UprobeMultiError),
    /// A map was missing or could not be read.
    #[error("reading the allocation tracer's map {map}: {}", error_chain(cause))]
    Map {
        /// The map's name.
        map: &'static str,
        /// What went wrong.
        cause: MapError,
    },
    /// Bad options.
    #[error("{0}")]
    Options(String),
}

impl From<EbpfError> for AllocError {
    fn from(e: EbpfError) -> Self {
        AllocError::Load(e)
    }
}

impl From<super::maps::MapAccessError> for AllocError {
    fn from(e: super::maps::MapAccessError) -> Self {
        AllocError::Map {
            map: e.map,
            cause: e.source,
        }
    }
}

/// `e` and its causes on one line, each said once: a cause whose text the
/// line already holds (a message that quotes its source) is left out.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// Losses and activity, as the kernel programs counted them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AllocCounters {
    /// Allocation calls that returned an address.
    pub allocs: u64,
    /// Allocation calls that returned NULL (failures, `realloc(p, 0)`).
    pub null_returns: u64,
    /// Allocations tracked (all of them, or the sampled ones).
    pub allocs_tracked: u64,
    /// Frees of a non-null pointer (including realloc's).
    pub frees: u64,
    /// Frees that matched a tracked allocation.
    pub frees_matched: u64,
    /// Allocation calls made inside another one (counted once, as the outer).
    pub nested: u64,
    /// Times a starting command was stopped to attach to its allocator.
    pub startup_stops: u64,
    /// Allocations not tracked: the outstanding map was full.
    pub outstanding_map_full: u64,
    /// Allocations tracked without per-stack totals: that map was full.
    pub stack_totals_full: u64,
    /// Allocation calls missed: the per-thread pending map was full.
    pub pending_full: u64,
    /// Stacks lost to a stack-map hash collision.
    pub stack_collisions: u64,
    /// Stacks lost otherwise (stack map full).
    pub stack_errors: u64,
    /// Addresses handed out again while tracked (their free was not seen).
    pub replaced: u64,
    /// posix_memalign results that could not be read.
    pub read_failed: u64,
}

impl AllocCounters {
    fn from_slice(c: &[u64]) -> Self {
        let at = |i: u32| c.get(i as usize).copied().unwrap_or(0);
        Self {
            allocs: at(counter::ALLOCS),
            null_returns: at(counter::NULL_RETURNS),
            allocs_tracked: at(counter::ALLOCS_TRACKED),
            frees: at(counter::FREES),
            frees_matched: at(counter::FREES_MATCHED),
            nested: at(counter::NESTED),
            startup_stops: at(counter::STOPS),
            outstanding_map_full: at(counter::OUTSTANDING_FULL),
            stack_totals_full: at(counter::STACK_TOTALS_FULL),
            pending_full: at(counter::PENDING_FULL),
            stack_collisions: at(counter::STACK_COLLISION),
            stack_errors: at(counter::STACK_ERROR),
            replaced: at(counter::REPLACED),
            read_failed: at(counter::READ_FAILED),
        }
    }

    /// True when something was lost: the report is then incomplete.
    pub fn lost_anything(&self) -> bool {
        self.outstanding_map_full
            + self.stack_totals_full
            + self.pending_full
            + self.stack_collisions
            + self.stack_errors
            + self.read_failed
            > 0
    }
}

/// Raw contents of the kernel maps for the current program image.
#[derive(Clone, Debug, Default)]
pub struct RawAllocations {
    /// The image (execve count) the entries belong to.
    pub generation: u32,
    /// Outstanding allocations of this image: address and what was recorded.
    pub allocations: Vec<(u64, AllocInfo)>,
    /// Per-stack totals of this image, summed over CPUs.
    pub totals: Vec<(AllocStackKey, AllocStackTotals)>,
    /// What the kernel side counted.
    pub counters: AllocCounters,
    /// How the table walks went, when stacks are walked with tables.
    pub unwind: Option<UnwindSummary>,
}

/// A loaded allocation tracer; dropping it detaches every probe.
pub struct AllocCollector {
    /// Every uprobe attached as a perf event, owned here so that they can be
    /// detached at once.
    links: Vec<UProbeLink>,
    /// The programs loaded for uprobe_multi links, where the kernel has them
    /// (then `links` stays empty).
    multi: Option<MultiPrograms>,
    /// Every uprobe_multi link; closing one detaches its probes.
    multi_links: Vec<OwnedFd>,
    ebpf: Ebpf,
    tgid: NonZeroU32,
    /// Files whose allocation functions are probed.
    attached: Vec<PathBuf>,
    /// Loads the tables stacks are walked with (at each attach), when
    /// they are.
    tables: Option<TableLoader>,
}

impl Drop for AllocCollector {
    fn drop(&mut self) {
        // Detaching a uprobe waits for RCU grace periods in the kernel, part
        // of it under a global lock: ~100 ms per probe in a VM. One after the
        // other, the 19 probes took 2.0 s here; concurrently 1.3 s.
        let links = std::mem::take(&mut self.links);
        let multi_links = std::mem::take(&mut self.multi_links);
        std::thread::scope(|s| {
            for link in links {
                s.spawn(move || drop(link));
            }
            for link in multi_links {
                s.spawn(move || drop(link));
            }
        });
    }
}

impl AllocCollector {
    /// Loads the programs for process `opts.tgid` and starts noticing its
    /// execve() calls; nothing is probed until [`Self::attach_allocator`].
    pub fn load(opts: &AllocOptions) -> Result<Self, AllocError> {
        let tgid = NonZeroU32::new(opts.tgid)
            .ok_or_else(|| AllocError::Options("no process to trace (PID 0)".into()))?;
        if opts.sample_every == 0 {
            return Err(AllocError::Options(
                "--sample must be at least 1 (1 tracks every allocation)".into(),
            ));
        }
        if !(1..=MAX_ALLOCATIONS).contains(&opts.max_allocations) {
            return Err(AllocError::Options(max_allocations_range(
                opts.max_allocations.into(),
            )));
        }
        let config = AllocConfig {
            tgid: opts.tgid,
            sample_every: opts.sample_every,
        };
        let mut map_entries = vec![("ALLOC_OUTSTANDING", opts.max_allocations)];
        if opts.unwind.resolve(true) == UnwindMode::Dwarf {
            map_entries.extend(Limits::default().map_entries());
        }
        let mut ebpf = ebpf::load(&ebpf::Globals {
            alloc: Some(config),
            map_entries,
            ..ebpf::Globals::default()
        })?;
        let programs: HashSet<&'static str> = FUNCTIONS
            .iter()
            .map(|(_, p)| *p)
            .chain([RETURN_PROGRAM, STARTUP_PROGRAM])
            .collect();
        // uprobe_multi links need only CAP_BPF + CAP_PERFMON; perf-event
        // uprobes need CAP_SYS_ADMIN on Linux 6.16+ (see uprobe_multi.rs).
        // PERF_USER_NO_UPROBE_MULTI=1 forces perf-event uprobes, to compare
        // the two or to work around a kernel whose uprobe_multi misbehaves.
        let forced_off = std::env::var_os("PERF_USER_NO_UPROBE_MULTI").is_some_and(|v| v == "1");
        let multi = if uprobe_multi::supported() && !forced_off {
            Some(MultiPrograms::load(ebpf::object(), &ebpf, &programs)?)
        } else {
            for program in programs {
                uprobe(&mut ebpf, program)?
                    .load()
                    .map_err(|source| AllocError::Program {
                        program,
                        cause: Box::new(source),
                    })?;
            }
            None
        };
        let exec: &mut RawTracePoint = ebpf
            .program_mut(EXEC_PROGRAM)
            .ok_or_else(|| AllocError::Options(format!("program {EXEC_PROGRAM} missing")))?
            .try_into()
            .map_err(|source| AllocError::Program {
                program: EXEC_PROGRAM,
                cause: Box::new(source),
            })?;
        exec.load().map_err(|source| AllocError::Program {
            program: EXEC_PROGRAM,
            cause: Box::new(source),
        })?;
        exec.attach("sched_process_exec")
            .map_err(|source| AllocError::Program {
                program: EXEC_PROGRAM,
                cause: Box::new(source),
            })?;
        Ok(Self {
            links: Vec::new(),
            multi,
            multi_links: Vec::new(),
            ebpf,
            tgid,
            attached: Vec::new(),
            tables: (opts.unwind.resolve(true) == UnwindMode::Dwarf)
                .then(|| TableLoader::new(Limits::default())),
        })
    }

    /// How the table walks went so far, when stacks are walked with tables.
    pub fn unwind_summary(&self) -> Result<Option<UnwindSummary>, AllocError> {
        let Some(loader) = &self.tables else {
            return Ok(None);
        };
        let ends = maps::sum_counters(
            &self.ebpf,
            "UNWIND_ENDS",
            perf_ebpf_common::unwind::end::LEN,
        )?;
        Ok(Some(UnwindSummary::new(&ends, loader.stats())))
    }

    /// The traced process.
    pub fn pid(&self) -> u32 {
        self.tgid.get()
    }

    /// Files whose allocation functions are probed so far.
    pub fn attached(&self) -> &[PathBuf] {
        &self.attached
    }

    /// Probes `sites` in `path` for the traced process: the return probes
    /// first, so that no call is seen entering without being seen returning.
    pub fn attach_allocator(&mut self, path: &Path, sites: &[ProbeSite]) -> Result<(), AllocError> {
        if self.attached.iter().any(|p| p == path) {
            return Ok(());
        }
        let mut seen = HashSet::new();
        let distinct: Vec<&ProbeSite> = sites.iter().filter(|s| seen.insert(s.offset)).collect();
        let returns = distinct
            .iter()
            .filter(|s| has_return_probe(s.function))
            .map(|s| (RETURN_PROGRAM, *s));
        let returns = returns.map(|(program, s)| (program, s, s.offset));
        let entries = distinct.iter().map(|s| (s.program, *s, s.entry_offset));
        let probes: Vec<(&'static str, &ProbeSite, u64)> = returns.chain(entries).collect();
        if let Some(multi) = &self.multi {
            // One link per program, with all its offsets in this file.
            let mut by_program: BTreeMap<(bool, &'static str), Vec<(&ProbeSite, u64)>> =
                BTreeMap::new();
            for (program, site, offset) in probes {
                let is_return = program == RETURN_PROGRAM;
                // `false < true`: the return probes go first, as above.
                by_program
                    .entry((!is_return, program))
                    .or_default()
                    .push((site, offset));
            }
            for ((not_return, program), sites) in by_program {
                let offsets: Vec<u64> = sites.iter().map(|(_, o)| *o).collect();
                let link = multi
                    .attach(program, path, &offsets, self.tgid.get(), !not_return)
                    .map_err(|e| multi_attach_error(sites[0].0.function, path, e))?;
                self.multi_links.push(link);
            }
        } else {
            let scope = UProbeScope::OneProcess(self.tgid);
            for (program, site, offset) in probes {
                let link = attach_one(&mut self.ebpf, program, path, offset, scope)
                    .map_err(|source| attach_error(site.function, path, source))?;
                self.links.push(link);
            }
        }
        self.attached.push(path.to_path_buf());
        if let Some(tables) = &mut self.tables {
            // The process's libraries are mapped by now (this runs once the
            // loader is done, and again after each execve()). Without its
            // tables (it exited meanwhile, its maps are unreadable) stacks
            // are walked with frame pointers: not a reason to stop tracing,
            // and an exit is reported as such by the caller.
            if let Err(e) = tables.load_process(&mut self.ebpf, self.tgid.get()) {
                tracing::debug!(pid = self.tgid.get(), error = %e, "no unwind tables");
            }
        }
        Ok(())
    }

    /// Probes the dynamic linker's `_dl_debug_state` at `offset` in
    /// `interpreter`, which stops the process (SIGSTOP) whenever it has run
    /// execve() and user space has not yet attached for that image.
    pub fn attach_startup_stop(
        &mut self,
        interpreter: &Path,
        offset: u64,
    ) -> Result<(), AllocError> {
        if let Some(multi) = &self.multi {
            let link = multi
                .attach(
                    STARTUP_PROGRAM,
                    interpreter,
                    &[offset],
                    self.tgid.get(),
                    false,
                )
                .map_err(|e| multi_attach_error("_dl_debug_state", interpreter, e))?;
            self.multi_links.push(link);
            return Ok(());
        }
        let scope = UProbeScope::OneProcess(self.tgid);
        let link = attach_one(&mut self.ebpf, STARTUP_PROGRAM, interpreter, offset, scope)
            .map_err(|source| attach_error("_dl_debug_state", interpreter, source))?;
        self.links.push(link);
        Ok(())
    }

    /// How many times the process has run execve() since loading.
    pub fn generation(&self) -> Result<u32, AllocError> {
        self.state(state::GENERATION)
    }

    /// The image user space has attached for (see `state::HANDLED_GENERATION`).
    pub fn handled_generation(&self) -> Result<u32, AllocError> {
        self.state(state::HANDLED_GENERATION)
    }

    /// Tells the start-up program that image `generation` is attached, so it
    /// no longer stops the process.
    pub fn set_handled_generation(&mut self, generation: u32) -> Result<(), AllocError> {
        let map = maps::find_mut(&mut self.ebpf, "ALLOC_STATE")?;
        let mut array: Array<&mut MapData, u32> =
            Array::try_from(map).map_err(maps::MapAccessError::on("ALLOC_STATE"))?;
        array
            .set(state::HANDLED_GENERATION, generation, 0)
            .map_err(maps::MapAccessError::on("ALLOC_STATE"))?;
        Ok(())
    }

    fn state(&self, index: u32) -> Result<u32, AllocError> {
        let map = maps::find(&self.ebpf, "ALLOC_STATE")?;
        let array: Array<&MapData, u32> =
            Array::try_from(map).map_err(maps::MapAccessError::on("ALLOC_STATE"))?;
        Ok(array
            .get(&index, 0)
            .map_err(maps::MapAccessError::on("ALLOC_STATE"))?)
    }

    /// What the kernel side counted so far.
    pub fn counters(&self) -> Result<AllocCounters, AllocError> {
        let values = maps::sum_counters(&self.ebpf, "ALLOC_COUNTERS", counter::LEN)?;
        Ok(AllocCounters::from_slice(&values))
    }

    /// Stack id → instruction pointers (leaf first) for these ids; ids
    /// evicted meanwhile are left out.
    pub fn stacks(
        &self,
        ids: impl IntoIterator<Item = u32>,
    ) -> Result<HashMap<u32, Vec<u64>>, AllocError> {
        Ok(maps::read_stacks(
            &self.ebpf,
            "ALLOC_STACKS",
            ids,
            self.tables.is_some(),
        )?)
    }

    /// Removes what belongs to images before `generation`: that memory died
    /// with execve(), and the space is better used for the running image.
    /// Returns how many allocations were dropped.
    pub fn forget_before(&mut self, generation: u32) -> Result<usize, AllocError> {
        let map = maps::find_mut(&mut self.ebpf, "ALLOC_OUTSTANDING")?;
        let mut outstanding: BpfHashMap<&mut MapData, u64, AllocInfo> =
            BpfHashMap::try_from(map).map_err(maps::MapAccessError::on("ALLOC_OUTSTANDING"))?;
        let old: Vec<u64> = outstanding
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, info)| info.generation < generation)
            .map(|(addr, _)| addr)
            .collect();
        for addr in &old {
            // Freed meanwhile is fine: the aim is that it is gone.
            let _ = outstanding.remove(addr);
        }
        let map = maps::find_mut(&mut self.ebpf, "ALLOC_STACK_TOTALS")?;
        let mut totals: PerCpuHashMap<&mut MapData, AllocStackKey, AllocStackTotals> =
            PerCpuHashMap::try_from(map).map_err(maps::MapAccessError::on("ALLOC_STACK_TOTALS"))?;
        let old_keys: Vec<AllocStackKey> = totals
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.generation < generation)
            .collect();
        for key in &old_keys {
            let _ = totals.remove(key);
        }
        Ok(old.len())
    }

    fn read_generation(&self, generation: u32) -> Result<RawAllocations, AllocError> {
        let map = maps::find(&self.ebpf, "ALLOC_OUTSTANDING")?;
        let outstanding: BpfHashMap<&MapData, u64, AllocInfo> =
            BpfHashMap::try_from(map).map_err(maps::MapAccessError::on("ALLOC_OUTSTANDING"))?;
        // Entries freed between listing a key and reading it are skipped:
        // the map changes while it is read, and a freed block is not outstanding.
        let allocations: Vec<(u64, AllocInfo)> = outstanding
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, info)| info.generation == generation)
            .collect();
        let map = maps::find(&self.ebpf, "ALLOC_STACK_TOTALS")?;
        let totals_map: PerCpuHashMap<&MapData, AllocStackKey, AllocStackTotals> =
            PerCpuHashMap::try_from(map).map_err(maps::MapAccessError::on("ALLOC_STACK_TOTALS"))?;
        let totals = totals_map
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.generation == generation)
            .map(|(k, per_cpu)| (k, sum_totals(per_cpu.iter())))
            .collect();
        Ok(RawAllocations {
            generation,
            allocations,
            totals,
            counters: self.counters()?,
            unwind: self.unwind_summary()?,
        })
    }
}

/// Adds per-CPU copies (wrapping, as the kernel's adds do).
pub fn sum_totals<'a>(per_cpu: impl IntoIterator<Item = &'a AllocStackTotals>) -> AllocStackTotals {
    per_cpu
        .into_iter()
        .fold(AllocStackTotals::default(), |acc, t| AllocStackTotals {
            allocs: acc.allocs.wrapping_add(t.allocs),
            alloc_bytes: acc.alloc_bytes.wrapping_add(t.alloc_bytes),
        })
}

impl Collector for AllocCollector {
    type Snapshot = RawAllocations;
    type Error = AllocError;

    fn name(&self) -> &'static str {
        "alloc"
    }

    /// Reads the outstanding allocations and totals of the current image.
    fn read(&mut self) -> Result<RawAllocations, AllocError> {
        let generation = self.generation()?;
        self.read_generation(generation)
    }

    /// Forgets every allocation tracked so far: the next report covers only
    /// what is allocated from now on.
    fn reset(&mut self) -> Result<(), AllocError> {
        self.forget_before(u32::MAX)?;
        Ok(())
    }
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut UProbe, AllocError> {
    ebpf.program_mut(program)
        .ok_or_else(|| AllocError::Options(format!("program {program} missing from the object")))?
        .try_into()
        .map_err(|source| AllocError::Program {
            program,
            cause: Box::new(source),
        })
}

/// Attaches `program` at `offset` in `path` and takes ownership of the link.
fn attach_one(
    ebpf: &mut Ebpf,
    program: &'static str,
    path: &Path,
    offset: u64,
    scope: UProbeScope,
) -> Result<UProbeLink, ProgramError> {
    let p: &mut UProbe = ebpf
        .program_mut(program)
        .ok_or(ProgramError::NotLoaded)?
        .try_into()?;
    let id = p.attach(offset, path, scope)?;
    p.take_link(id)
}

fn attach_error(function: &str, path: &Path, source: ProgramError) -> AllocError {
    let errno = match &source {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    };
    let hint = attach_hint(errno, false);
    AllocError::Attach {
        function: function.to_string(),
        path: path.to_path_buf(),
        cause: Box::new(source),
        hint,
    }
}

fn multi_attach_error(function: &str, path: &Path, source: UprobeMultiError) -> AllocError {
    let errno = match &source {
        UprobeMultiError::Link(e) => e.raw_os_error(),
        _ => None,
    };
    AllocError::Attach {
        function: function.to_string(),
        path: path.to_path_buf(),
        cause: Box::new(source),
        hint: attach_hint(errno, true),
    }
}

/// Why `n` is not a valid `--max-allocations`.
pub fn max_allocations_range(n: u64) -> String {
    format!(
        "--max-allocations must be from 1 to {MAX_ALLOCATIONS} (16 Mi), not {n}: the kernel \
         reserves 16 bytes per slot when the map is created; use --sample N to trace more"
    )
}

/// What to do about a failed attach, by errno; `multi` when it was a
/// uprobe_multi link rather than a perf event.
fn attach_hint(errno: Option<i32>, multi: bool) -> &'static str {
    match errno {
        Some(libc::ESRCH) => "the process has exited",
        Some(libc::ENOENT) => {
            "the file is gone (replaced by an upgrade?) or the kernel has no uprobes (CONFIG_UPROBE_EVENTS)"
        }
        Some(libc::EACCES) | Some(libc::EPERM) if multi => {
            "not allowed: run as root, or grant CAP_BPF and CAP_PERFMON (and CAP_SYS_PTRACE for \
             another user's process, CAP_DAC_READ_SEARCH for files you cannot read)"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "not allowed: this kernel has no uprobe_multi links (Linux 6.6+), and perf-event \
             uprobes need CAP_SYS_ADMIN on Linux 6.16+ and on stable kernels with the same fix: \
             run as root or grant CAP_SYS_ADMIN"
        }
        Some(libc::EINVAL) => {
            "the kernel refused the probe address (is the file an ELF with code at that offset?)"
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "out of file descriptors: raise the limit with `ulimit -n`"
        }
        _ => "uprobes may be unavailable on this kernel (CONFIG_UPROBE_EVENTS)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_totals_add_up() {
        // 3 blocks of 10 allocated on CPU 0, one of 50 on CPU 1.
        let cpu0 = AllocStackTotals {
            allocs: 3,
            alloc_bytes: 30,
        };
        let cpu1 = AllocStackTotals {
            allocs: 1,
            alloc_bytes: 50,
        };
        let sum = sum_totals([&cpu0, &cpu1]);
        assert_eq!((sum.allocs, sum.alloc_bytes), (4, 80));
    }

    #[test]
    fn every_entry_program_is_named_once_per_function() {
        let names: HashSet<&str> = FUNCTIONS.iter().map(|(f, _)| *f).collect();
        assert_eq!(names.len(), FUNCTIONS.len());
        assert!(names.contains("malloc") && names.contains("free"));
    }

    #[test]
    fn counters_map_by_index() {
        let mut raw = vec![0u64; counter::LEN as usize];
        raw[counter::OUTSTANDING_FULL as usize] = 7;
        let c = AllocCounters::from_slice(&raw);
        assert_eq!(c.outstanding_map_full, 7);
        assert!(c.lost_anything());
        assert!(!AllocCounters::from_slice(&[0; 3]).lost_anything());
    }
}
