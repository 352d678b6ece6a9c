//! Off-CPU and wall-clock profiles: the off-CPU collector's times as a
//! [`Profile`] whose counts are microseconds, and a CPU profile merged with
//! one so that each thread's on- and off-CPU time add up to the wall clock.

use perf_ebpf_common::SampleKey;

use super::{
    OffCpuSummary, Profile, ProfileKind, ThreadState,
    build::{RunInfo, build_with, sort_stacks},
};
use crate::{
    collectors::{cpu::RawProfile, offcpu::OffCpuSnapshot},
    processes::ProcessTable,
    profile::LostCounts,
    symbolize::StackSymbolizer,
};

/// The snapshot as raw samples (one per key, in microseconds, rounded to
/// the nearest) and the state of each.
pub fn raw_samples(snap: &OffCpuSnapshot) -> (RawProfile, Vec<ThreadState>) {
    let mut samples = Vec::with_capacity(snap.times.len());
    let mut states = Vec::with_capacity(snap.times.len());
    for (k, ns) in &snap.times {
        let us = (ns + 500) / 1_000;
        if us == 0 {
            continue;
        }
        samples.push((
            SampleKey {
                pid: k.pid,
                tid: k.tid,
                user_stack_id: k.user_stack_id,
                kernel_stack_id: k.kernel_stack_id,
                comm: k.comm,
            },
            us,
        ));
        states.push(ThreadState::from_raw(k.state));
    }
    let c = &snap.counters;
    let raw = RawProfile {
        samples,
        stacks: snap.stacks.clone(),
        lost: LostCounts {
            sample_map_full: c.time_map_full + c.start_map_full,
            user_stack_collisions: c.user_stack_collisions,
            user_stack_errors: c.user_stack_errors,
            kernel_stack_collisions: c.kernel_stack_collisions,
            kernel_stack_errors: c.kernel_stack_errors,
        },
        samples_seen: c.switches,
        unwind: snap.unwind.clone(),
    };
    (raw, states)
}

/// Symbolizes the snapshot into an off-CPU profile.
pub fn build(
    snap: &OffCpuSnapshot,
    procs: &ProcessTable,
    sym: &mut StackSymbolizer,
    run: &RunInfo,
) -> Profile {
    let (raw, states) = raw_samples(snap);
    let mut p = build_with(&raw, &states, procs, sym, run);
    p.kind = ProfileKind::OffCpu;
    p.off_cpu = Some(OffCpuSummary {
        tracepoints: snap.tracepoints,
        counters: snap.counters,
    });
    for s in &mut p.stacks {
        cut_scheduler(&mut s.frames);
    }
    p
}

/// The scheduler's own functions: every off-CPU stack ends in them (and,
/// on the BTF tracepoint, in the frames of the BPF program's call), so
/// they say nothing; what called them does (`do_nanosleep`, `io_schedule`,
/// `futex_wait_queue`, `schedule_hrtimeout_range`).
const SCHEDULER: [&str; 8] = [
    "schedule",
    "__schedule",
    "__schedule_loop",
    "preempt_schedule",
    "preempt_schedule_common",
    "preempt_schedule_irq",
    "preempt_schedule_notrace",
    "schedule_idle",
];

/// Drops the kernel frames from the outermost scheduler function to the
/// leaf.
fn cut_scheduler(frames: &mut Vec<std::sync::Arc<crate::profile::Frame>>) {
    if let Some(i) = frames.iter().position(|f| {
        f.kernel
            && f.function
                .as_deref()
                .is_some_and(|n| SCHEDULER.contains(&n))
    }) {
        frames.truncate(i);
    }
}

/// One wall-clock profile of `cpu` (samples, turned into microseconds at
/// its sampling period, in state `on-cpu`) and `off` (microseconds).
pub fn wall(cpu: Profile, off: Profile) -> Profile {
    let period_us = cpu.period_nanos() as f64 / 1_000.0;
    let mut stacks: Vec<_> = cpu
        .stacks
        .into_iter()
        .map(|mut s| {
            s.count = (s.count as f64 * period_us).round() as u64;
            s.state = Some(ThreadState::OnCpu);
            s
        })
        .chain(off.stacks)
        .collect();
    sort_stacks(&mut stacks);
    let lost = cpu.lost.plus(&off.lost);
    Profile {
        kind: ProfileKind::Wall,
        frequency_hz: cpu.frequency_hz,
        duration_secs: cpu.duration_secs.max(off.duration_secs),
        start_unix_nanos: cpu.start_unix_nanos.min(off.start_unix_nanos),
        cpus: cpu.cpus,
        total_samples: stacks.iter().map(|s| s.count).sum(),
        lost,
        unwind: cpu.unwind,
        off_cpu: off.off_cpu,
        stacks,
    }
}

/// Microseconds per state, most first.
pub fn by_state(p: &Profile) -> Vec<(ThreadState, u64)> {
    let mut m: std::collections::BTreeMap<ThreadState, u64> = Default::default();
    for s in &p.stacks {
        if let Some(st) = s.state {
            *m.entry(st).or_default() += s.count;
        }
    }
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{collectors::offcpu::OffCpuCounters, profile::StackSample};
    use perf_ebpf_common::offcpu::{OffCpuKey, state};

    fn key(tid: u32, st: u32) -> OffCpuKey {
        OffCpuKey {
            pid: 7,
            tid,
            user_stack_id: -1,
            kernel_stack_id: -1,
            state: st,
            comm: [0; 16],
        }
    }

    #[test]
    fn nanoseconds_become_microseconds_with_their_state() {
        let snap = OffCpuSnapshot {
            times: vec![
                (key(1, state::SLEEPING), 2_000_400),
                (key(2, state::DISK), 1_500),
                (key(3, state::RUNNABLE), 400),
            ],
            counters: OffCpuCounters {
                switches: 9,
                ..Default::default()
            },
            ..Default::default()
        };
        let (raw, states) = raw_samples(&snap);
        let us: Vec<u64> = raw.samples.iter().map(|(_, n)| *n).collect();
        // Under half a microsecond rounds to nothing and is left out.
        assert_eq!(us, [2_000, 2]);
        assert_eq!(states, [ThreadState::Sleeping, ThreadState::Disk]);
        assert_eq!(raw.samples_seen, 9);
    }

    fn one(count: u64, state: Option<ThreadState>) -> StackSample {
        StackSample {
            pid: 1,
            tid: 1,
            process: "p".into(),
            thread: "p".into(),
            frames: Vec::new(),
            count,
            state,
        }
    }

    #[test]
    fn scheduler_frames_and_what_they_called_are_cut() {
        let f = |name: &str, kernel: bool| {
            crate::profile::Frame::named(name, if kernel { "[kernel]" } else { "app" }, kernel)
        };
        let mut frames = vec![
            f("main", false),
            f("do_nanosleep", true),
            f("schedule", true),
            f("__schedule", true),
            f("bpf_trace_run4", true),
        ];
        cut_scheduler(&mut frames);
        let names: Vec<_> = frames.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["main", "do_nanosleep"]);
    }

    #[test]
    fn wall_adds_on_cpu_samples_as_time() {
        let base = Profile {
            kind: ProfileKind::Cpu,
            frequency_hz: 100,
            duration_secs: 1.0,
            start_unix_nanos: 5,
            cpus: 2,
            total_samples: 30,
            lost: LostCounts::default(),
            unwind: None,
            off_cpu: None,
            stacks: vec![one(30, None)],
        };
        let off = Profile {
            kind: ProfileKind::OffCpu,
            frequency_hz: 0,
            total_samples: 700_000,
            stacks: vec![one(700_000, Some(ThreadState::Sleeping))],
            ..base.clone()
        };
        let w = wall(base, off);
        assert_eq!(w.kind, ProfileKind::Wall);
        // 30 samples at 100 Hz: 300 ms.
        assert_eq!(w.total_samples, 1_000_000);
        assert_eq!(
            by_state(&w),
            [
                (ThreadState::Sleeping, 700_000),
                (ThreadState::OnCpu, 300_000)
            ]
        );
    }
}
