//! From the kernel maps' raw counts to a symbolized [`Profile`].

use std::sync::Arc;

use perf_ebpf_common::SampleKey;

use super::model::{Frame, LostCounts, Profile, StackSample, ThreadState};
use crate::{
    collectors::cpu::RawProfile,
    processes::ProcessTable,
    symbolize::{StackSymbolizer, UNKNOWN_MODULE},
};

/// Facts about the sampling run that the raw maps do not hold.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Samples per second per CPU.
    pub frequency_hz: u64,
    /// Seconds sampled.
    pub duration_secs: f64,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// CPUs sampled.
    pub cpus: u32,
}

/// Symbolizes and assembles the profile; stacks sorted by count, descending.
pub fn build(
    raw: &RawProfile,
    procs: &ProcessTable,
    sym: &mut StackSymbolizer,
    run: &RunInfo,
) -> Profile {
    build_with(raw, &[], procs, sym, run)
}

/// As [`build`], the `i`th sample of `raw` in `states[i]` when given.
pub fn build_with(
    raw: &RawProfile,
    states: &[ThreadState],
    procs: &ProcessTable,
    sym: &mut StackSymbolizer,
    run: &RunInfo,
) -> Profile {
    let stack = |id: i32| -> &[u64] {
        u32::try_from(id)
            .ok()
            .and_then(|id| raw.stacks.get(&id))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    };
    sym.prepare_kernel(raw.samples.iter().map(|(k, _)| stack(k.kernel_stack_id)));
    sym.prepare_user(raw.samples.iter().map(|(k, _)| {
        (
            procs.get(k.pid).and_then(|p| p.maps.as_ref()),
            stack(k.user_stack_id),
        )
    }));
    let mut stacks: Vec<StackSample> = raw
        .samples
        .iter()
        .enumerate()
        .map(|(i, (key, count))| {
            let info = procs.get(key.pid);
            let maps = info.and_then(|p| p.maps.as_ref());
            let mut frames: Vec<Arc<Frame>> = sym.user_frames(maps, stack(key.user_stack_id));
            if maps.is_some() {
                frames = cut_at_garbage(frames);
            }
            frames.extend(sym.kernel_frames(stack(key.kernel_stack_id)));
            let thread = comm_string(key);
            StackSample {
                state: states.get(i).copied(),
                pid: key.pid,
                tid: key.tid,
                process: info
                    .and_then(|p| p.name.clone())
                    .unwrap_or_else(|| thread.clone()),
                thread,
                frames,
                count: *count,
            }
        })
        .collect();
    sort_stacks(&mut stacks);
    Profile {
        kind: crate::profile::ProfileKind::Cpu,
        frequency_hz: run.frequency_hz,
        duration_secs: run.duration_secs,
        start_unix_nanos: run.start_unix_nanos,
        cpus: run.cpus,
        total_samples: stacks.iter().map(|s| s.count).sum(),
        lost: LostCounts { ..raw.lost.clone() },
        unwind: raw.unwind.clone(),
        off_cpu: None,
        stacks,
    }
}

/// The order of a profile's stacks: most counted first, then by process
/// and thread.
pub fn sort_stacks(stacks: &mut [StackSample]) {
    stacks.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.pid.cmp(&b.pid))
            .then(a.tid.cmp(&b.tid))
    });
}

/// Drops the user frames from the first return address that is in no code
/// mapping of the process (and no perf map names) on towards the root. A
/// frame-pointer walk through code built without frame pointers (the
/// loader, libc's start-up code) reads a data word as the next frame, such
/// as `[unknown]+0x1e00000000`: no return address can point outside code,
/// and what follows it is noise. The leaf, from the registers, is always
/// kept; so are all frames of a process whose maps were never read (then
/// nothing tells garbage from code). As `leaks` does with its stacks.
fn cut_at_garbage(mut frames: Vec<Arc<Frame>>) -> Vec<Arc<Frame>> {
    let n = frames.len();
    if let Some(i) = (0..n.saturating_sub(1))
        .rev()
        .find(|&i| frames[i].module == UNKNOWN_MODULE && frames[i].function.is_none())
    {
        frames.drain(..=i);
    }
    frames
}

fn comm_string(key: &SampleKey) -> String {
    let end = key
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(key.comm.len());
    String::from_utf8_lossy(&key.comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use perf_ebpf_common::{STACK_EMPTY, STACK_NOT_COLLECTED};

    #[test]
    fn garbage_return_addresses_are_cut_with_what_follows() {
        let f = |name: Option<&str>, module: &str| {
            Arc::new(Frame {
                function: name.map(Into::into),
                module: module.into(),
                offset: 0x1e00000000,
                address: 0x1e00000000,
                function_start: None,
                file: None,
                line: None,
                kernel: false,
            })
        };
        let names = |v: Vec<Arc<Frame>>| v.iter().map(|f| f.name()).collect::<Vec<_>>();
        // root first: garbage, a word read after it, then real frames.
        let stack = vec![
            f(Some("junk"), "libc.so.6"),
            f(None, UNKNOWN_MODULE),
            f(Some("main"), "app"),
            f(Some("hot"), "app"),
        ];
        assert_eq!(names(cut_at_garbage(stack)), ["main", "hot"]);
        // The leaf stays even when unknown; a JIT frame named by a perf map stays.
        let stack = vec![f(Some("js"), UNKNOWN_MODULE), f(None, UNKNOWN_MODULE)];
        assert_eq!(cut_at_garbage(stack).len(), 2);
    }

    #[test]
    fn stacks_without_frames_still_count() {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"app");
        let raw = RawProfile {
            samples: vec![(
                SampleKey {
                    pid: 4_000_000,
                    tid: 4_000_000,
                    user_stack_id: STACK_NOT_COLLECTED,
                    kernel_stack_id: STACK_EMPTY,
                    comm,
                },
                7,
            )],
            ..RawProfile::default()
        };
        let run = RunInfo {
            frequency_hz: 99,
            duration_secs: 1.0,
            start_unix_nanos: 0,
            cpus: 2,
        };
        let p = build(
            &raw,
            &ProcessTable::default(),
            &mut StackSymbolizer::new(),
            &run,
        );
        assert_eq!(p.total_samples, 7);
        assert_eq!(p.stacks[0].process, "app");
        assert!(p.stacks[0].frames.is_empty());
    }
}
