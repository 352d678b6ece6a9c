//! Assembles a [`LeakReport`]: aggregated rows, symbolized exactly as
//! `profile` symbolizes its stacks.

use std::{collections::HashMap, ffi::OsString, path::PathBuf, sync::Arc};

use perf_ebpf_common::{STACK_EMPTY, alloc::kind};

use super::{
    aggregate::Aggregate,
    image::TracedProcess,
    model::{ExitInfo, LeakReport, LeakStack, SCHEMA_VERSION},
};
use crate::{
    collectors::alloc::AllocCounters,
    profile::Frame,
    symbolize::{StackSymbolizer, UNKNOWN_MODULE},
};

/// Facts about the run that the maps do not hold.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// `leaks -- COMMAND`'s command line.
    pub command: Option<Vec<OsString>>,
    /// Files probed.
    pub allocators: Vec<PathBuf>,
    /// Start, ns since the Unix epoch.
    pub start_unix_nanos: u64,
    /// Seconds since tracing began.
    pub elapsed_secs: f64,
    /// Seconds since the previous report.
    pub window_secs: f64,
    /// Report number.
    pub sequence: u32,
    /// The last report of the run.
    pub last: bool,
    /// `--sample`.
    pub sample_every: u32,
    /// `--min-age`, seconds.
    pub min_age_secs: f64,
    /// Why tracing ended early.
    pub ended: Option<String>,
    /// How the process ended.
    pub exit: Option<ExitInfo>,
    /// How stacks were walked with unwind tables, when they were.
    pub unwind: Option<crate::unwind::UnwindSummary>,
}

/// Symbolizes the rows of `agg`; `stacks` maps stack ids to addresses (leaf
/// first), as the stack map holds them.
pub fn build(
    agg: &Aggregate,
    stacks: &HashMap<u32, Vec<u64>>,
    counters: &AllocCounters,
    process: &TracedProcess,
    sym: &mut StackSymbolizer,
    run: &RunInfo,
) -> LeakReport {
    // Every address of these stacks is a return address, the leaf included
    // (the stack is taken when the allocation function returns to its
    // caller). The symbolizer looks up all but the first address one byte
    // back, so put a placeholder first and drop its frame afterwards.
    let padded: HashMap<i32, Vec<u64>> = agg
        .rows
        .iter()
        .filter_map(|r| {
            let id = u32::try_from(r.stack.stack_id).ok()?;
            let addrs = stacks.get(&id)?;
            let mut v = Vec::with_capacity(addrs.len() + 1);
            v.push(0);
            v.extend_from_slice(addrs);
            Some((r.stack.stack_id, v))
        })
        .collect();
    let maps = Some(&process.maps);
    sym.prepare_user(padded.values().map(|v| (maps, v.as_slice())));
    let rows = agg
        .rows
        .iter()
        .map(|r| {
            let (frames, stack) = match padded.get(&r.stack.stack_id) {
                Some(addrs) => {
                    let mut frames = sym.user_frames(maps, addrs);
                    frames.pop();
                    (cut_at_garbage(frames), "ok")
                }
                None if r.stack.stack_id == STACK_EMPTY => (Vec::new(), "empty"),
                None => (Vec::new(), "lost"),
            };
            LeakStack {
                bytes: r.bytes,
                allocations: r.allocations,
                oldest_age_secs: r.oldest_age_ns as f64 / 1e9,
                growth_bytes_per_sec: r.growth_bytes_per_sec,
                function: kind::name(r.stack.kind).to_string(),
                allocs_total: r.allocs_total,
                bytes_allocated_total: r.bytes_allocated_total,
                stack,
                frames,
            }
        })
        .collect();
    let rows = merge_same_stacks(rows);
    LeakReport {
        schema_version: SCHEMA_VERSION,
        pid: process.pid,
        process: process.name.clone(),
        command: run
            .command
            .as_ref()
            .map(|c| c.iter().map(|a| a.to_string_lossy().into_owned()).collect()),
        allocators: run
            .allocators
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        start_unix_nanos: run.start_unix_nanos,
        elapsed_secs: run.elapsed_secs,
        window_secs: run.window_secs,
        sequence: run.sequence,
        last: run.last,
        sample_every: run.sample_every.max(1),
        min_age_secs: run.min_age_secs,
        outstanding_bytes: agg.bytes,
        outstanding_allocations: agg.allocations,
        young_bytes: agg.young_bytes,
        young_allocations: agg.young_allocations,
        stacks: rows,
        counters: counters.clone(),
        unwind: run.unwind.clone(),
        ended: run.ended.clone(),
        exit: run.exit.clone(),
    }
}

/// Drops the frames from the first return address that is in no code
/// mapping on towards the root. A frame-pointer walk through code built
/// without frame pointers (most distributions' Python, for one) reads a data
/// word as the next frame; what follows is noise that would split one call
/// site into many rows. The leaf frame (the caller, from the registers) is
/// always kept.
fn cut_at_garbage(mut frames: Vec<Arc<Frame>>) -> Vec<Arc<Frame>> {
    let n = frames.len();
    if let Some(i) = (0..n.saturating_sub(1))
        .rev()
        .find(|&i| frames[i].module == UNKNOWN_MODULE)
    {
        frames.drain(..=i);
    }
    frames
}

/// Adds up rows whose stacks became the same (after [`cut_at_garbage`]),
/// most bytes first again.
fn merge_same_stacks(rows: Vec<LeakStack>) -> Vec<LeakStack> {
    let mut index: HashMap<(String, &'static str, Vec<u64>), usize> = HashMap::new();
    let mut out: Vec<LeakStack> = Vec::with_capacity(rows.len());
    for row in rows {
        let key = (
            row.function.clone(),
            row.stack,
            row.frames.iter().map(|f| f.address).collect(),
        );
        match index.get(&key) {
            // Stacks that could not be read stay apart: nothing says they are one site.
            Some(&i) if row.stack == "ok" => {
                let m = &mut out[i];
                m.bytes += row.bytes;
                m.allocations += row.allocations;
                m.oldest_age_secs = m.oldest_age_secs.max(row.oldest_age_secs);
                m.growth_bytes_per_sec += row.growth_bytes_per_sec;
                m.allocs_total += row.allocs_total;
                m.bytes_allocated_total += row.bytes_allocated_total;
            }
            _ => {
                index.insert(key, out.len());
                out.push(row);
            }
        }
    }
    out.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.allocations.cmp(&a.allocations))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        leaks::aggregate::{StackRef, StackRow},
        procmaps::ProcessMaps,
    };
    use perf_ebpf_common::STACK_LOST;

    fn row(stack_id: i32, bytes: u64) -> StackRow {
        StackRow {
            stack: StackRef { stack_id, kind: 1 },
            bytes,
            allocations: 1,
            oldest_age_ns: 2_500_000_000,
            growth_bytes_per_sec: 1.0,
            allocs_total: 1,
            bytes_allocated_total: bytes,
        }
    }

    #[test]
    fn leaf_is_the_caller_and_lost_stacks_are_marked() {
        // A real function of this binary as the "caller" of the allocation:
        // its address plus one, as a return address would be.
        let me = leaf_is_the_caller_and_lost_stacks_are_marked as fn() as usize as u64;
        let agg = Aggregate {
            rows: vec![row(4, 100), row(STACK_LOST, 50), row(STACK_EMPTY, 10)],
            ..Aggregate::default()
        };
        let stacks = HashMap::from([(4u32, vec![me + 1])]);
        let mut process = TracedProcess::new(std::process::id());
        process.maps = ProcessMaps::read(std::process::id()).unwrap();
        let report = build(
            &agg,
            &stacks,
            &AllocCounters::default(),
            &process,
            &mut StackSymbolizer::new(),
            &RunInfo::default(),
        );
        let s = &report.stacks;
        assert_eq!(s[0].frames.len(), 1, "the placeholder frame is dropped");
        let name = s[0].frames[0].function.clone().unwrap_or_default();
        assert!(
            name.ends_with("leaf_is_the_caller_and_lost_stacks_are_marked"),
            "{name}"
        );
        assert_eq!(s[0].frames[0].address, me + 1);
        assert_eq!(
            (s[0].stack, s[1].stack, s[2].stack),
            ("ok", "lost", "empty")
        );
        assert_eq!(s[0].function, "calloc");
        assert!((s[0].oldest_age_secs - 2.5).abs() < 1e-9);
        assert_eq!(report.sample_every, 1);
    }

    fn frame(module: &str, address: u64) -> Arc<Frame> {
        Arc::new(Frame {
            function: None,
            module: module.into(),
            offset: address,
            address,
            function_start: None,
            file: None,
            line: None,
            kernel: false,
        })
    }

    fn stack(bytes: u64, frames: Vec<Arc<Frame>>) -> LeakStack {
        LeakStack {
            bytes,
            allocations: 1,
            oldest_age_secs: bytes as f64,
            growth_bytes_per_sec: 1.0,
            function: "malloc".into(),
            allocs_total: 1,
            bytes_allocated_total: bytes,
            stack: "ok",
            frames,
        }
    }

    #[test]
    fn noise_after_a_frame_outside_code_is_cut() {
        // Root first: [unknown] noise, a real frame, noise again, then the leaf.
        let frames = vec![
            frame("[unknown]", 1),
            frame("app", 2),
            frame("[unknown]", 3),
            frame("libpython", 4),
        ];
        let cut = cut_at_garbage(frames);
        let addrs: Vec<u64> = cut.iter().map(|f| f.address).collect();
        assert_eq!(addrs, [4]);
        // The leaf alone stays, even outside every mapping.
        assert_eq!(cut_at_garbage(vec![frame("[unknown]", 9)]).len(), 1);
        assert!(cut_at_garbage(Vec::new()).is_empty());
    }

    #[test]
    fn rows_that_became_equal_are_added_up() {
        let rows = vec![
            stack(10, vec![frame("app", 1)]),
            stack(30, vec![frame("app", 2)]),
            stack(25, vec![frame("app", 1)]),
        ];
        let merged = merge_same_stacks(rows);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].bytes, merged[0].allocations), (35, 2));
        assert_eq!(merged[0].oldest_age_secs, 25.0);
        assert!((merged[0].growth_bytes_per_sec - 2.0).abs() < 1e-9);
        assert_eq!(merged[1].bytes, 30);
        let mut lost = vec![stack(1, Vec::new()), stack(2, Vec::new())];
        for s in &mut lost {
            s.stack = "lost";
        }
        assert_eq!(merge_same_stacks(lost).len(), 2);
    }
}
