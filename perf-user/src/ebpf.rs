//! The embedded kernel object and how it is loaded.

use aya::{Ebpf, EbpfError, EbpfLoader};
use perf_ebpf_common::alloc::AllocConfig;
use perf_ebpf_common::{
    SampleConfig, block::BlockConfig, offcpu::OffCpuConfig, tcp::TcpConfig, unwind::UnwindConfig,
};

/// The eBPF object built from perf-ebpf by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/perf-ebpf"));

/// The embedded object's bytes, for loaders other than aya's (see
/// `collectors::uprobe_multi`).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// Globals to set before load; each collector fills in its own.
#[derive(Clone, Debug, Default)]
pub struct Globals {
    /// The CPU sampler's configuration.
    pub cpu: Option<SampleConfig>,
    /// The block I/O latency programs' field offsets and filters.
    pub block: Option<BlockConfig>,
    /// The TCP latency programs' field offsets and filters.
    pub tcp: Option<TcpConfig>,
    /// The off-CPU programs' configuration.
    pub offcpu: Option<OffCpuConfig>,
    /// The allocation tracer's configuration (`leaks`).
    pub alloc: Option<AllocConfig>,
    /// The experimental unwinding sampler's (`unwind::sampler`).
    pub unwind: Option<UnwindConfig>,
    /// Map capacities to use instead of the object's defaults, by map name.
    pub map_entries: Vec<(&'static str, u32)>,
}

/// Raises RLIMIT_MEMLOCK for kernels before 5.11, which charge BPF maps to
/// it. Failing is not fatal: newer kernels do not need it, and containers
/// often forbid it. Returns a warning to show when it failed.
pub fn raise_memlock_limit() -> Option<String> {
    if !kernel_charges_memlock() {
        return None;
    }
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    (ret != 0).then(|| {
        format!(
            "could not raise the locked-memory limit ({}); kernels before 5.11 may refuse to create maps",
            std::io::Error::last_os_error()
        )
    })
}

/// Loads the object (maps created, programs not yet loaded).
pub fn load(globals: &Globals) -> Result<Ebpf, EbpfError> {
    let mut loader = EbpfLoader::new();
    // new() parses /sys/kernel/btf/vmlinux when the kernel has it; no
    // program here needs BTF, so make it explicit: the --btf file or none
    // (see btf.rs). Loading then works the same on kernels without BTF.
    loader.btf(crate::btf::for_loader());
    if let Some(cpu) = &globals.cpu {
        loader.override_global("CPU_CONFIG", cpu, true);
    }
    if let Some(block) = &globals.block {
        loader.override_global("BLOCK_CONFIG", block, true);
    }
    if let Some(tcp) = &globals.tcp {
        loader.override_global("TCP_CONFIG", tcp, true);
    }
    if let Some(offcpu) = &globals.offcpu {
        loader.override_global("OFFCPU_CONFIG", offcpu, true);
    }
    // Every load creates every map in the object; the preallocated ones of
    // collectors not in use would cost memory for nothing (the CPU stack map
    // alone is ~16 MiB), so those shrink to one entry.
    let unused: &[(bool, &[&str])] = &[
        (
            globals.cpu.is_none(),
            &["CPU_STACKS", "CPU_SAMPLES", "CPU_SEEN_PIDS"],
        ),
        (
            globals.block.is_none(),
            &["BLOCK_INFLIGHT", "BLOCK_RQ_INFLIGHT"],
        ),
        (globals.tcp.is_none(), &["TCP_START"]),
        (
            globals.offcpu.is_none(),
            &["OFFCPU_STACKS", "OFFCPU_START", "OFFCPU_TIME"],
        ),
    ];
    for (_, maps) in unused.iter().filter(|(unused, _)| *unused) {
        for map in *maps {
            loader.map_max_entries(map, 1);
        }
    }
    if let Some(unwind) = &globals.unwind {
        loader.override_global("UNWIND_CONFIG", unwind, true);
    }
    if let Some(alloc) = &globals.alloc {
        loader.override_global("ALLOC_CONFIG", alloc, true);
    } else {
        // Preallocated maps of the allocation tracer, not needed without it.
        loader.map_max_entries("ALLOC_STACKS", 1);
        loader.map_max_entries("ALLOC_PENDING", 1);
    }
    for (map, entries) in &globals.map_entries {
        loader.map_max_entries(map, *entries);
    }
    loader.load(OBJECT)
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones use memcg.
fn kernel_charges_memlock() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) < (5, 11)
}
