//! Raw CPU samples (and off-CPU times) added up over several reads of the kernel maps. The
//! daemon reads (and clears) the maps when a window closes and whenever a
//! profile request starts or ends, so a window or a request spans several
//! reads; stack ids are only valid within their read (the stack map is
//! cleared with the samples), so stacks are matched by their addresses.

use std::{collections::HashMap, hash::Hash};

use perf_ebpf_common::{SampleKey, offcpu::OffCpuKey};

use crate::{collectors::cpu::RawProfile, profile::LostCounts};

/// A key that names its stacks by id: a CPU sample's, an off-CPU time's.
pub trait StackIds: Copy + Eq + Hash {
    /// The user and kernel stack ids, to rewrite.
    fn ids_mut(&mut self) -> [&mut i32; 2];
}

impl StackIds for SampleKey {
    fn ids_mut(&mut self) -> [&mut i32; 2] {
        [&mut self.user_stack_id, &mut self.kernel_stack_id]
    }
}

impl StackIds for OffCpuKey {
    fn ids_mut(&mut self) -> [&mut i32; 2] {
        [&mut self.user_stack_id, &mut self.kernel_stack_id]
    }
}

/// Counts per key of several reads, their stacks matched by addresses.
#[derive(Debug)]
pub struct Stacked<K> {
    /// Count per key, stack ids rewritten to `stacks`'.
    pub samples: Vec<(K, u64)>,
    /// Stack id → instruction pointers, leaf first.
    pub stacks: HashMap<u32, Vec<u64>>,
    stack_ids: HashMap<Vec<u64>, u32>,
    keys: HashMap<K, usize>,
}

impl<K> Default for Stacked<K> {
    fn default() -> Self {
        Self {
            samples: Vec::new(),
            stacks: HashMap::new(),
            stack_ids: HashMap::new(),
            keys: HashMap::new(),
        }
    }
}

impl<K: StackIds> Stacked<K> {
    /// Adds one read's counts, whose stack ids name `stacks`.
    pub fn add(&mut self, samples: &[(K, u64)], stacks: &HashMap<u32, Vec<u64>>) {
        for (key, count) in samples {
            let mut key = *key;
            for id in key.ids_mut() {
                *id = self.stack_id(*id, stacks);
            }
            match self.keys.get(&key) {
                Some(&i) => self.samples[i].1 += count,
                None => {
                    self.keys.insert(key, self.samples.len());
                    self.samples.push((key, *count));
                }
            }
        }
    }

    /// The id here of stack `id` of a read. Negative ids (no stack, not
    /// collected) and ids whose stack was not read keep their meaning:
    /// negative stays as is, unread becomes one fresh id with no stack,
    /// shown as lost as before.
    fn stack_id(&mut self, id: i32, stacks: &HashMap<u32, Vec<u64>>) -> i32 {
        let Ok(old) = u32::try_from(id) else {
            return id;
        };
        let Some(ips) = stacks.get(&old) else {
            return i32::MAX;
        };
        let next = self.stack_ids.len() as u32;
        let new = *self.stack_ids.entry(ips.clone()).or_insert(next);
        self.stacks.entry(new).or_insert_with(|| ips.clone());
        new as i32
    }

    /// Counts so far.
    pub fn total(&self) -> u64 {
        self.samples.iter().map(|(_, n)| n).sum()
    }
}

/// Samples of several reads, as one [`RawProfile`].
#[derive(Debug, Default)]
pub struct Merged {
    stacked: Stacked<SampleKey>,
    lost: LostCounts,
    samples_seen: u64,
}

impl Merged {
    /// Adds one read's samples.
    pub fn add(&mut self, part: &RawProfile) {
        self.stacked.add(&part.samples, &part.stacks);
        // Cumulative counters: the last read's are the latest.
        self.lost = part.lost.clone();
        self.samples_seen = part.samples_seen;
    }

    /// Samples so far.
    pub fn samples(&self) -> u64 {
        self.stacked.total()
    }

    /// The merged profile.
    pub fn into_raw(self) -> RawProfile {
        RawProfile {
            samples: self.stacked.samples,
            stacks: self.stacked.stacks,
            lost: self.lost,
            samples_seen: self.samples_seen,
            unwind: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perf_ebpf_common::STACK_EMPTY;

    fn key(pid: u32, user: i32, kernel: i32) -> SampleKey {
        SampleKey {
            pid,
            tid: pid,
            user_stack_id: user,
            kernel_stack_id: kernel,
            comm: [0; 16],
        }
    }

    #[test]
    fn same_stack_under_different_ids_is_one_sample() {
        let first = RawProfile {
            samples: vec![(key(1, 0, STACK_EMPTY), 3), (key(2, 1, STACK_EMPTY), 1)],
            stacks: [(0, vec![0x10, 0x20]), (1, vec![0x30])].into(),
            samples_seen: 4,
            ..RawProfile::default()
        };
        // Next read: the map was cleared, ids were handed out again.
        let second = RawProfile {
            samples: vec![
                (key(2, 0, STACK_EMPTY), 2),
                (key(1, 1, STACK_EMPTY), 5),
                (key(3, 7, 7), 1),
            ],
            stacks: [(0, vec![0x30]), (1, vec![0x10, 0x20])].into(),
            samples_seen: 12,
            ..RawProfile::default()
        };
        let mut m = Merged::default();
        m.add(&first);
        m.add(&second);
        assert_eq!(m.samples(), 12);
        let raw = m.into_raw();
        assert_eq!(raw.samples_seen, 12);
        let of = |pid: u32| raw.samples.iter().find(|(k, _)| k.pid == pid).unwrap();
        let (k1, n1) = of(1);
        assert_eq!(*n1, 8);
        assert_eq!(raw.stacks[&(k1.user_stack_id as u32)], [0x10, 0x20]);
        assert_eq!(k1.kernel_stack_id, STACK_EMPTY);
        assert_eq!(of(2).1, 3);
        // A stack id missing from its read stays a stack without addresses.
        let (k3, _) = of(3);
        assert!(!raw.stacks.contains_key(&(k3.user_stack_id as u32)));
    }
}
