//! Hotspots: per (process, function, module), the share of samples where the
//! function is the sampled one (self) or anywhere on the stack (total).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::model::Profile;

/// One row of the hotspot table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hotspot {
    /// Function name, or `module+0xoffset` when it could not be named.
    pub function: String,
    /// Binary or library (`[kernel]` for the kernel).
    pub module: String,
    /// Process name.
    pub process: String,
    /// Samples with this function as the leaf.
    pub self_samples: u64,
    /// Samples with this function anywhere on the stack (counted once per stack).
    pub total_samples: u64,
    /// `self_samples` as a percentage of all samples in the profile.
    pub self_pct: f64,
    /// `total_samples` as a percentage of all samples in the profile.
    pub total_pct: f64,
}

type Key = (String, String, String);

/// Hotspots sorted by self samples, then total samples, then name.
pub fn hotspots(profile: &Profile) -> Vec<Hotspot> {
    let mut rows: HashMap<Key, (u64, u64)> = HashMap::new();
    for stack in &profile.stacks {
        let mut seen: HashSet<Key> = HashSet::new();
        for (i, frame) in stack.frames.iter().enumerate() {
            let key = (frame.name(), frame.module.clone(), stack.process.clone());
            let row = rows.entry(key.clone()).or_default();
            if i + 1 == stack.frames.len() {
                row.0 += stack.count;
            }
            // Recursion puts a function on a stack more than once; count it once.
            if seen.insert(key) {
                row.1 += stack.count;
            }
        }
    }
    let total = profile.total_samples.max(1) as f64;
    let mut out: Vec<Hotspot> = rows
        .into_iter()
        .map(|((function, module, process), (s, t))| Hotspot {
            function,
            module,
            process,
            self_samples: s,
            total_samples: t,
            self_pct: 100.0 * s as f64 / total,
            total_pct: 100.0 * t as f64 / total,
        })
        .collect();
    out.sort_by(|a, b| {
        b.self_samples
            .cmp(&a.self_samples)
            .then(b.total_samples.cmp(&a.total_samples))
            .then_with(|| a.function.cmp(&b.function))
    });
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::profile::model::{Frame, LostCounts, StackSample};

    fn frame(name: &str) -> Arc<Frame> {
        Arc::new(Frame {
            function: Some(name.into()),
            module: "bin".into(),
            offset: 0,
            address: 0,
            function_start: None,
            file: None,
            line: None,
            kernel: false,
        })
    }

    fn profile(stacks: Vec<(Vec<&str>, u64)>) -> Profile {
        let stacks: Vec<StackSample> = stacks
            .into_iter()
            .map(|(names, count)| StackSample {
                state: None,
                pid: 1,
                tid: 1,
                process: "p".into(),
                thread: "p".into(),
                frames: names.into_iter().map(frame).collect(),
                count,
            })
            .collect();
        Profile {
            kind: crate::profile::ProfileKind::Cpu,
            frequency_hz: 99,
            duration_secs: 1.0,
            start_unix_nanos: 0,
            cpus: 1,
            total_samples: stacks.iter().map(|s| s.count).sum(),
            lost: LostCounts::default(),
            unwind: None,
            off_cpu: None,
            stacks,
        }
    }

    #[test]
    fn self_and_total_shares() {
        let p = profile(vec![
            (vec!["main", "a", "hot"], 80),
            (vec!["main", "b"], 20),
        ]);
        let h = hotspots(&p);
        assert_eq!(h[0].function, "hot");
        assert_eq!(h[0].self_pct, 80.0);
        let main = h.iter().find(|r| r.function == "main").unwrap();
        assert_eq!(main.self_samples, 0);
        assert_eq!(main.total_pct, 100.0);
    }

    #[test]
    fn recursion_counts_once_in_total() {
        let p = profile(vec![(vec!["main", "rec", "rec", "rec"], 10)]);
        let h = hotspots(&p);
        let rec = h.iter().find(|r| r.function == "rec").unwrap();
        assert_eq!(rec.total_samples, 10);
        assert_eq!(rec.self_samples, 10);
    }

    #[test]
    fn empty_profile_has_no_rows() {
        assert!(hotspots(&profile(vec![])).is_empty());
    }
}
