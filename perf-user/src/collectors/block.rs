//! Block I/O latency: tracepoints block:block_rq_issue and block_rq_complete,
//! per-CPU log2 histograms of latency and request size per disk and operation.
//!
//! Two sets of programs read the same tracepoints. Where the kernel has BTF,
//! BTF tracepoints (tp_btf) read the `struct request` itself, at offsets
//! from the kernel's BTF; elsewhere (Raspberry Pi OS kernels, for one)
//! classic tracepoints read the record the kernel fills, at offsets from
//! tracefs. The first costs less per I/O (docs/benchmarks.md) and is tried
//! first; both fill the same maps.

use std::{os::fd::AsFd as _, path::Path};

use aya::{
    Ebpf, EbpfError,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuHashMap},
    programs::ProgramError,
};
use perf_ebpf_common::{
    block::{
        BLOCK_DEV_FILTER_ENTRIES, BlockConfig, BlockFields, BlockHists, BlockKey, BlockRqOffsets,
        SPAN_MAX, counter, op,
    },
    hist::{LATENCY_UNIT_NS, SIZE_UNIT_SHIFT},
};

use super::{
    Collector, maps,
    tracepoints::{
        AttachError, Tracepoints, attach_btf, attach_classic, check_args, choose, offset,
    },
};
use crate::{
    btf::{sysfs_btf, sysfs_layout},
    btf_layout::{Layout, LayoutError},
    ebpf,
    histogram::Log2Hist,
    progstats::{self, ProgStats},
    tracefs::{self, Format, TracefsError},
};

/// What to trace.
#[derive(Clone, Debug, Default)]
pub struct BlockOptions {
    /// Only these disks (kernel dev_t, see `blockdev::kernel_dev`); empty means all.
    pub devices: Vec<u32>,
    /// Also time the wait before issue, from block:block_io_start (Linux
    /// 6.5+), where /proc/diskstats starts timing. Adds a third program run
    /// per I/O (about half again the BPF time), so it is opt-in.
    pub queue_time: bool,
    /// BTF or classic tracepoints.
    pub tracepoints: Tracepoints,
}

/// Why the block collector could not start or read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// tracefs or a tracepoint format was unusable.
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    /// `--tracepoints btf` on a kernel that cannot have them.
    #[error(
        "BTF tracepoints for block I/O are not available: {0}; use --tracepoints classic \
         (or auto, which falls back by itself)"
    )]
    NoBtf(String),
    /// The eBPF object could not be loaded (maps creation failed).
    #[error(
        "loading the eBPF object failed: {0}; this needs root or CAP_BPF+CAP_PERFMON and a kernel with BPF enabled"
    )]
    Load(#[from] EbpfError),
    /// The verifier or the kernel refused a program, or attaching failed.
    #[error("the kernel refused the block I/O program {program}: {source}")]
    Program {
        /// The program's name.
        program: &'static str,
        /// What went wrong.
        #[source]
        source: ProgramError,
    },
    /// A map was missing or could not be read.
    #[error("reading the block I/O map {map}: {source}")]
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
}

impl From<AttachError> for BlockError {
    fn from(e: AttachError) -> Self {
        match e {
            AttachError::Missing(p) => {
                BlockError::Options(format!("program {p} missing from the object"))
            }
            AttachError::Program { program, source } => BlockError::Program { program, source },
        }
    }
}

impl From<super::maps::MapAccessError> for BlockError {
    fn from(e: super::maps::MapAccessError) -> Self {
        BlockError::Map {
            map: e.map,
            source: e.source,
        }
    }
}

/// Operation names, indexed by `op::*`.
pub const OP_NAMES: [&str; op::LEN as usize] = ["read", "write", "flush", "discard", "other"];

/// Histograms of one (disk, operation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSeries {
    /// Kernel dev_t of the disk.
    pub dev: u32,
    /// One of `op::*`.
    pub op: u8,
    /// Issue-to-completion latency; base unit ns, slots in us.
    pub latency: Log2Hist,
    /// Request size; base unit bytes, slots in KiB.
    pub size: Log2Hist,
    /// Start (block_io_start) to issue, for requests whose start was seen;
    /// base unit ns. Empty on kernels before 6.5.
    pub queue: Log2Hist,
}

impl BlockSeries {
    /// The operation's name.
    pub fn op_name(&self) -> &'static str {
        OP_NAMES
            .get(usize::from(self.op))
            .copied()
            .unwrap_or("other")
    }
}

/// The kernel side's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlockCounters {
    /// Requests started (block_io_start; 0 before Linux 6.5).
    pub started: u64,
    /// Issues traced.
    pub issued: u64,
    /// Completions traced.
    pub completed: u64,
    /// Completions timed (in the histograms).
    pub timed: u64,
    /// Completions with no issue seen (in flight at start): not timed.
    pub unmatched_completions: u64,
    /// Issues not tracked because the in-flight map was full.
    pub inflight_map_full: u64,
    /// Completions lost because the histogram map was full.
    pub histogram_map_full: u64,
    /// Partial completions (the request stayed in flight).
    pub partial_completions: u64,
    /// Tracepoint fields that could not be read.
    pub read_errors: u64,
    /// Issues the kernel did not run the program for, because another BPF
    /// program was running on that CPU (their completions count as unmatched).
    pub issues_missed: u64,
    /// Completions the kernel did not run the program for (never timed).
    pub completions_missed: u64,
}

/// Everything read from the kernel maps.
#[derive(Clone, Debug, Default)]
pub struct BlockSnapshot {
    /// One entry per (disk, operation) seen, sorted by dev then op.
    pub series: Vec<BlockSeries>,
    /// What the kernel side counted.
    pub counters: BlockCounters,
    /// Whether queued time is measured (block:block_io_start exists).
    pub queue_time: bool,
    /// Which tracepoint programs measured it: `Btf` or `Classic`.
    pub tracepoints: Tracepoints,
}

/// Builds the programs' configuration from the tracepoint formats under
/// `root`. The second value tells whether queued time will be measured:
/// asked for, and block:block_io_start exists.
pub fn config(root: &Path, opts: &BlockOptions) -> Result<(BlockConfig, bool), BlockError> {
    let issue = tracefs::read_format(root, "block", "block_rq_issue")?;
    let complete = tracefs::read_format(root, "block", "block_rq_complete")?;
    let mut cfg = BlockConfig::zeroed();
    cfg.issue = fields(&issue, true)?;
    cfg.complete = fields(&complete, false)?;
    cfg.filter_devs = u8::from(!opts.devices.is_empty());
    if !opts.queue_time {
        return Ok((cfg, false));
    }
    // Optional: without it (before Linux 6.5) only the queued time is missing.
    match tracefs::read_format(root, "block", "block_io_start") {
        Ok(start) => {
            cfg.start = fields(&start, false)?;
            cfg.queue_time = 1;
            Ok((cfg, true))
        }
        Err(TracefsError::NoTracepoint { .. }) => Ok((cfg, false)),
        Err(e) => Err(e.into()),
    }
}

/// Where the fields the programs read lie in one record, as one span.
pub fn fields(format: &Format, with_bytes: bool) -> Result<BlockFields, TracefsError> {
    let common = [("dev", 4), ("sector", 8), ("nr_sector", 4), ("rwbs", 2)];
    let (span, [dev, sector, nr_sector, rwbs, bytes]) = if with_bytes {
        let [a, b, c, d] = common;
        format.span([a, b, c, d, ("bytes", 4)], SPAN_MAX)?
    } else {
        let (span, [dev, sector, nr_sector, rwbs]) = format.span(common, SPAN_MAX)?;
        (span, [dev, sector, nr_sector, rwbs, 0])
    };
    Ok(BlockFields {
        base: span.base,
        len: span.len,
        dev,
        sector,
        nr_sector,
        bytes,
        rwbs,
        _pad: 0,
    })
}

/// The BTF tracepoint programs' configuration and the kernel's BTF to load
/// them with: the struct offsets they read, checked against the
/// tracepoints' signatures. The second value tells whether queued time will
/// be measured.
pub fn btf_config(
    layout: &Layout,
    opts: &BlockOptions,
) -> Result<(BlockConfig, bool), LayoutError> {
    let rq = "*struct request";
    check_args(layout, "block_rq_issue", &[rq], true, false)?;
    check_args(layout, "block_rq_complete", &[rq, "u1", "u4"], true, false)?;
    let off = |s: &str, f: &str, size: u32| offset(layout, s, f, size);
    let mut cfg = BlockConfig::zeroed();
    cfg.rq = BlockRqOffsets {
        rq_q: off("request", "q", 8)?,
        rq_sector: off("request", "__sector", 8)?,
        rq_data_len: off("request", "__data_len", 4)?,
        rq_cmd_flags: off("request", "cmd_flags", 4)?,
        q_disk: off("request_queue", "disk", 8)?,
        disk_major: off("gendisk", "major", 4)?,
        disk_first_minor: off("gendisk", "first_minor", 4)?,
        _pad: 0,
    };
    cfg.filter_devs = u8::from(!opts.devices.is_empty());
    let queue_time = opts.queue_time && check_args(layout, "block_io_start", &[rq], true, true)?;
    cfg.queue_time = u8::from(queue_time);
    Ok((cfg, queue_time))
}

/// The programs of each kind, completion first, start last: a request seen
/// starting or issued while a later program is not yet attached would
/// otherwise stay in the in-flight map for good. Each is (tracepoint, program).
const CLASSIC_PROGRAMS: [(&str, &str); 3] = [
    ("block_rq_complete", "block_rq_complete"),
    ("block_rq_issue", "block_rq_issue"),
    ("block_io_start", "block_io_start"),
];
const BTF_PROGRAMS: [(&str, &str); 3] = [
    ("block_rq_complete", "block_rq_complete_btf"),
    ("block_rq_issue", "block_rq_issue_btf"),
    ("block_io_start", "block_io_start_btf"),
];

/// An attached block I/O collector; dropping it detaches the programs.
pub struct BlockCollector {
    ebpf: Ebpf,
    queue_time: bool,
    /// `Btf` or `Classic`: what is attached.
    tracepoints: Tracepoints,
    /// Why BTF tracepoints were not used, when `auto` fell back.
    fallback: Option<String>,
}

impl BlockCollector {
    /// Loads the programs and attaches them: BTF tracepoints where the
    /// kernel has BTF (unless `opts.tracepoints` says classic), else classic ones
    /// (mounting tracefs if needed).
    pub fn attach(opts: &BlockOptions) -> Result<Self, BlockError> {
        if opts.devices.len() > BLOCK_DEV_FILTER_ENTRIES as usize {
            return Err(BlockError::Options(format!(
                "at most {BLOCK_DEV_FILTER_ENTRIES} devices can be selected at once"
            )));
        }
        choose(
            opts.tracepoints,
            || Self::attach_btf(opts),
            |fallback| Self::attach_classic(opts, fallback),
        )
    }

    fn attach_btf(opts: &BlockOptions) -> Result<Self, BlockError> {
        let layout = sysfs_layout().map_err(BlockError::NoBtf)?;
        let (cfg, queue_time) =
            btf_config(&layout, opts).map_err(|e| BlockError::NoBtf(e.to_string()))?;
        drop(layout);
        let btf = sysfs_btf().map_err(BlockError::NoBtf)?;
        let mut ebpf = Self::load(opts, cfg, "BLOCK_INFLIGHT")?;
        attach_btf(&mut ebpf, &btf, programs(&BTF_PROGRAMS, queue_time))?;
        Ok(Self {
            ebpf,
            queue_time,
            tracepoints: Tracepoints::Btf,
            fallback: None,
        })
    }

    fn attach_classic(opts: &BlockOptions, fallback: Option<String>) -> Result<Self, BlockError> {
        let root = tracefs::ensure_mounted()?;
        let (cfg, queue_time) = config(&root, opts)?;
        let mut ebpf = Self::load(opts, cfg, "BLOCK_RQ_INFLIGHT")?;
        let classic = programs(&CLASSIC_PROGRAMS, queue_time).map(|(tp, p)| ("block", tp, p));
        attach_classic(&mut ebpf, classic)?;
        Ok(Self {
            ebpf,
            queue_time,
            tracepoints: Tracepoints::Classic,
            fallback,
        })
    }

    /// Loads the object with `cfg`, the device filter filled in; `unused` is
    /// the other kind's in-flight map, shrunk to nothing.
    fn load(
        opts: &BlockOptions,
        cfg: BlockConfig,
        unused: &'static str,
    ) -> Result<Ebpf, BlockError> {
        let mut ebpf = ebpf::load(&ebpf::Globals {
            block: Some(cfg),
            map_entries: vec![(unused, 1)],
            ..ebpf::Globals::default()
        })?;
        if !opts.devices.is_empty() {
            let map = maps::find_mut(&mut ebpf, "BLOCK_DEV_FILTER")?;
            let mut filter: BpfHashMap<_, u32, u8> =
                BpfHashMap::try_from(map).map_err(maps::MapAccessError::on("BLOCK_DEV_FILTER"))?;
            for &dev in &opts.devices {
                filter
                    .insert(dev, 1, 0)
                    .map_err(maps::MapAccessError::on("BLOCK_DEV_FILTER"))?;
            }
        }
        Ok(ebpf)
    }

    /// `Btf` or `Classic`: which programs are attached.
    pub fn tracepoints(&self) -> Tracepoints {
        self.tracepoints
    }

    /// Why BTF tracepoints could not be used, when `auto` fell back to
    /// classic ones.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    fn hists(&self) -> Result<PerCpuHashMap<&MapData, BlockKey, BlockHists>, BlockError> {
        let map = maps::find(&self.ebpf, "BLOCK_HISTS")?;
        Ok(PerCpuHashMap::try_from(map).map_err(maps::MapAccessError::on("BLOCK_HISTS"))?)
    }

    /// The kernel side's counters so far (reads the histograms' counts too).
    pub fn counters_now(&self) -> Result<BlockCounters, BlockError> {
        let mut timed = 0;
        for entry in self.hists()?.iter() {
            let (_, per_cpu) = entry.map_err(maps::MapAccessError::on("BLOCK_HISTS"))?;
            timed += per_cpu.iter().map(|h| h.latency.count).sum::<u64>();
        }
        self.counters(timed)
    }

    /// `timed`: the latency histograms' counts, which the kernel does not
    /// count separately (one counter bump less per I/O).
    fn counters(&self, timed: u64) -> Result<BlockCounters, BlockError> {
        let c = maps::sum_counters(&self.ebpf, "BLOCK_COUNTERS", counter::LEN)?;
        let get = |i: u32| c[i as usize];
        Ok(BlockCounters {
            started: get(counter::STARTED),
            issued: get(counter::ISSUED),
            // Every completion that passes the filter ends in exactly one of these.
            completed: timed
                + get(counter::UNMATCHED)
                + get(counter::PARTIAL)
                + get(counter::HIST_FULL),
            timed,
            unmatched_completions: get(counter::UNMATCHED),
            inflight_map_full: get(counter::INFLIGHT_FULL),
            histogram_map_full: get(counter::HIST_FULL),
            partial_completions: get(counter::PARTIAL),
            read_errors: get(counter::READ_ERROR),
            issues_missed: self.stats("block_rq_issue").recursion_misses,
            completions_missed: self.stats("block_rq_complete").recursion_misses,
        })
    }

    /// The kernel's statistics of each program (run time needs
    /// kernel.bpf_stats_enabled=1).
    /// Each by the tracepoint it is attached to, whichever kind it is.
    pub fn program_stats(&self) -> Vec<(&'static str, ProgStats)> {
        let mut stats: Vec<_> = programs(self.programs(), self.queue_time)
            .map(|(tp, _)| (tp, self.stats(tp)))
            .collect();
        stats.reverse();
        stats
    }

    fn programs(&self) -> &'static [(&'static str, &'static str); 3] {
        match self.tracepoints {
            Tracepoints::Btf => &BTF_PROGRAMS,
            _ => &CLASSIC_PROGRAMS,
        }
    }

    /// Of the program attached to `tracepoint`; zero when the kernel cannot
    /// tell (before Linux 5.12 for misses).
    fn stats(&self, tracepoint: &str) -> ProgStats {
        self.programs()
            .iter()
            .find(|(tp, _)| *tp == tracepoint)
            .and_then(|(_, program)| self.ebpf.program(program))
            .and_then(|p| p.fd().ok())
            .and_then(|fd| progstats::read(fd.as_fd()).ok())
            .unwrap_or_default()
    }
}

/// The programs to attach, in order: without queued time, not the start.
fn programs(
    all: &'static [(&'static str, &'static str); 3],
    queue_time: bool,
) -> impl Iterator<Item = (&'static str, &'static str)> {
    all.iter()
        .copied()
        .filter(move |(tp, _)| queue_time || *tp != "block_io_start")
}

impl Collector for BlockCollector {
    type Snapshot = BlockSnapshot;
    type Error = BlockError;

    fn name(&self) -> &'static str {
        "block"
    }

    fn read(&mut self) -> Result<BlockSnapshot, BlockError> {
        let hists = self.hists()?;
        let mut series = Vec::new();
        for entry in hists.iter() {
            let (key, per_cpu) = entry.map_err(maps::MapAccessError::on("BLOCK_HISTS"))?;
            series.push(BlockSeries {
                dev: key.dev,
                op: key.op,
                latency: Log2Hist::from_per_cpu(
                    LATENCY_UNIT_NS,
                    per_cpu.iter().map(|h| &h.latency),
                ),
                size: Log2Hist::from_per_cpu(1 << SIZE_UNIT_SHIFT, per_cpu.iter().map(|h| &h.size)),
                queue: Log2Hist::from_per_cpu(LATENCY_UNIT_NS, per_cpu.iter().map(|h| &h.queue)),
            });
        }
        let timed = series.iter().map(|s| s.latency.count).sum();
        series.retain(|s| !s.latency.is_empty());
        series.sort_by_key(|s| (s.dev, s.op));
        Ok(BlockSnapshot {
            series,
            counters: self.counters(timed)?,
            queue_time: self.queue_time,
            tracepoints: self.tracepoints,
        })
    }

    fn reset(&mut self) -> Result<(), BlockError> {
        // The in-flight map is kept: requests issued before the reset are
        // still timed when they complete.
        maps::clear_per_cpu_hash::<BlockKey, BlockHists>(&mut self.ebpf, "BLOCK_HISTS")?;
        maps::zero_counters(&mut self.ebpf, "BLOCK_COUNTERS", counter::LEN)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf_layout::build::{Builder, kind::*};

    /// A kernel's BTF with the structs and tracepoints the BTF programs
    /// read; `complete_args` are the extra arguments of block_rq_complete.
    fn fake_kernel_btf(complete_args: &[u32]) -> Layout {
        let mut b = Builder::new();
        let u8_t = b.add("u8", INT, false, 0, 1, &[8]);
        let u32_t = b.add("unsigned int", INT, false, 0, 4, &[32]);
        let int_t = b.add("int", INT, false, 0, 4, &[32]);
        let u64_t = b.add("u64", INT, false, 0, 8, &[64]);
        let status = b.add("blk_status_t", TYPEDEF, false, 0, u8_t, &[]);
        let disk = {
            let (major, minor) = (b.name("major"), b.name("first_minor"));
            b.add(
                "gendisk",
                STRUCT,
                false,
                2,
                64,
                &[major, int_t, 0, minor, int_t, 32],
            )
        };
        let pdisk = b.add("", PTR, false, 0, disk, &[]);
        let disk_m = b.name("disk");
        let q = b.add("request_queue", STRUCT, false, 1, 16, &[disk_m, pdisk, 64]);
        let pq = b.add("", PTR, false, 0, q, &[]);
        let n = ["q", "cmd_flags", "__data_len", "__sector"].map(|m| b.name(m));
        #[rustfmt::skip]
        let members = [
            n[0], pq, 0,
            n[1], u32_t, 64 * 3,
            n[2], u32_t, 64 * 4,
            n[3], u64_t, 64 * 5,
        ];
        let rq = b.add("request", STRUCT, false, 4, 48, &members);
        let prq = b.add("", PTR, false, 0, rq, &[]);
        let void_ptr = b.add("", PTR, false, 0, 0, &[]);
        let tracepoint = |b: &mut Builder, name: &str, extra: &[u32]| {
            let mut params = vec![0, void_ptr, 0, prq];
            for &t in extra {
                params.extend([0, t]);
            }
            let vlen = (params.len() / 2) as u16;
            let proto = b.add("", FUNC_PROTO, false, vlen, 0, &params);
            let pp = b.add("", PTR, false, 0, proto, &[]);
            b.add(&format!("btf_trace_{name}"), TYPEDEF, false, 0, pp, &[]);
        };
        tracepoint(&mut b, "block_rq_issue", &[]);
        let extra: Vec<u32> = complete_args
            .iter()
            .map(|&a| if a == 1 { status } else { u32_t })
            .collect();
        tracepoint(&mut b, "block_rq_complete", &extra);
        Layout::parse(b.finish()).unwrap()
    }

    #[test]
    fn btf_offsets_of_the_request_fields() {
        let layout = fake_kernel_btf(&[1, 4]);
        let opts = BlockOptions {
            devices: vec![1],
            queue_time: true,
            tracepoints: Tracepoints::Btf,
        };
        let (cfg, queue_time) = btf_config(&layout, &opts).unwrap();
        let rq = cfg.rq;
        assert_eq!(
            (rq.rq_q, rq.rq_cmd_flags, rq.rq_data_len, rq.rq_sector),
            (0, 24, 32, 40)
        );
        assert_eq!((rq.q_disk, rq.disk_major, rq.disk_first_minor), (8, 0, 4));
        assert_eq!(cfg.filter_devs, 1);
        // No block_io_start in this kernel (before 6.5): no queued time.
        assert!(!queue_time);
        assert_eq!(cfg.queue_time, 0);
    }

    #[test]
    fn btf_tracepoint_of_another_shape_is_refused() {
        let e = btf_config(&fake_kernel_btf(&[1]), &BlockOptions::default()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("block_rq_complete") && msg.contains("*struct request, u1"),
            "{msg}"
        );
    }

    const ISSUE_6_18: &str = "name: block_rq_issue
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int nr_sector;\toffset:24;\tsize:4;\tsigned:0;
\tfield:unsigned int bytes;\toffset:28;\tsize:4;\tsigned:0;
\tfield:unsigned short ioprio;\toffset:32;\tsize:2;\tsigned:0;
\tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;
";

    #[test]
    fn one_span_covers_the_fields() {
        let f = fields(&Format::parse("block:block_rq_issue", ISSUE_6_18), true).unwrap();
        assert_eq!((f.base, f.len), (8, 28));
        assert_eq!(
            (f.dev, f.sector, f.nr_sector, f.bytes, f.rwbs),
            (0, 8, 16, 20, 26)
        );
    }

    #[test]
    fn completion_has_no_bytes() {
        let text = ISSUE_6_18.replace("unsigned int bytes", "int error");
        let f = fields(&Format::parse("block:block_rq_complete", &text), false).unwrap();
        assert_eq!((f.base, f.len, f.bytes), (8, 28, 0));
        assert!(fields(&Format::parse("x:y", &text), true).is_err());
    }

    #[test]
    fn too_wide_a_span_is_refused() {
        let text = ISSUE_6_18.replace("offset:34;\tsize:10", "offset:70;\tsize:10");
        let e = fields(&Format::parse("block:block_rq_issue", &text), true).unwrap_err();
        assert!(e.to_string().contains("at most 48"), "{e}");
    }
}
