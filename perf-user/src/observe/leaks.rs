//! Allocation tracing: what each traced process holds, and its
//! observations: outstanding allocations per traced `process` name, and
//! outstanding bytes per call stack (`pid`, `process`, `stack`, `function`).

use std::collections::BTreeMap;

use crate::alerts::signals::{Evidence, LeakEvidence, Observation, Signal, labels};

/// One call stack's outstanding allocations.
#[derive(Clone, Debug, PartialEq)]
pub struct StackBytes {
    /// The allocation function (malloc, calloc, ...).
    pub function: String,
    /// Frames, root first; the last one called `function`.
    pub frames: Vec<String>,
    /// Bytes outstanding.
    pub bytes: u64,
    /// Allocations outstanding.
    pub allocations: u64,
}

/// One traced process now.
#[derive(Clone, Debug, PartialEq)]
pub struct LeakProcess {
    /// Its PID.
    pub pid: u32,
    /// Its name (`/proc/PID/comm`).
    pub name: String,
    /// Allocations made since tracing began and not freed (sampled ones
    /// times the sampling factor).
    pub outstanding_allocations: u64,
    /// Its call stacks with the most bytes outstanding, when they were read.
    pub stacks: Vec<StackBytes>,
}

/// The observations of every traced process: outstanding allocations summed
/// per process name, and outstanding bytes per call stack.
pub fn observations(processes: &[LeakProcess]) -> Vec<Observation> {
    let mut per_name: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for p in processes {
        let e = per_name.entry(&p.name).or_default();
        e.0 += 1;
        e.1 += p.outstanding_allocations;
    }
    let mut out: Vec<Observation> = per_name
        .into_iter()
        .map(|(name, (processes, open))| Observation {
            signal: Signal::LeakOutstandingAllocations,
            labels: labels([("process", name)]),
            value: open as f64,
            count: processes,
            evidence: Evidence::Leak(LeakEvidence {
                pid: None,
                process: name.to_string(),
                bytes: None,
                allocations: open,
                function: None,
                stack: Vec::new(),
            }),
        })
        .collect();
    for p in processes {
        for st in &p.stacks {
            out.push(Observation {
                signal: Signal::LeakOutstandingBytes,
                labels: labels([
                    ("pid", &p.pid.to_string()),
                    ("process", &p.name),
                    ("stack", &stack_label(&st.frames)),
                    ("function", &st.function),
                ]),
                value: st.bytes as f64,
                count: st.allocations,
                evidence: Evidence::Leak(LeakEvidence {
                    pid: Some(p.pid),
                    process: p.name.clone(),
                    bytes: Some(st.bytes),
                    allocations: st.allocations,
                    function: Some(st.function.clone()),
                    stack: st.frames.clone(),
                }),
            });
        }
    }
    out
}

/// A short, stable name for a stack: its innermost named frame and a hash
/// of all its frames (`grow_one@3fa2c1d0`).
pub fn stack_label(frames: &[String]) -> String {
    let leaf = frames.last().map_or("?", String::as_str);
    let mut h: u32 = 0x811c_9dc5;
    for b in frames.iter().flat_map(|f| f.bytes().chain([0])) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let leaf: String = leaf.chars().take(60).collect();
    format!("{leaf}@{h:08x}")
}
