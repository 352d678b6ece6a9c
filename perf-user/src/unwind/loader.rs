//! Loads unwind tables into the kernel unwinder's maps, process by process:
//! each executable file once (by device and inode, whoever maps it), and for
//! each process its executable mappings with the file and bias of each.
//!
//! The rows of all files share one array map sized at load (`Limits::rows`,
//! the memory budget). When a file no longer fits, everything is evicted at
//! once (at most once a minute) and the processes sampled after that get
//! their tables again, from the tables kept in user space; in between, a
//! file that does not fit is walked with frame pointers. Both are counted in
//! [`LoaderStats`].

use std::{collections::HashMap, path::Path};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap},
};
use object::{Object as _, ObjectSegment as _};
use perf_ebpf_common::unwind::{
    UNWIND_MAX_MAPPINGS, UNWIND_MAX_PAGE_ROWS, UnwindMapping, UnwindPage, UnwindPageKey,
    UnwindProcess, UnwindRow,
};

use super::{
    sampler::{Limits, LoadedFile, SamplerError},
    store::{FileKey, TableStore, pages},
};
use crate::{
    collectors::maps,
    procmaps::{Backing, Mapping, ProcessMaps},
};

/// What the loader did so far, for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoaderStats {
    /// Processes whose mappings were loaded.
    pub processes: u64,
    /// Files whose table is in the kernel.
    pub files: u64,
    /// Rows in the kernel, of `rows_budget`.
    pub rows: u64,
    /// Rows the maps hold at most.
    pub rows_budget: u64,
    /// Files without a usable table (no CFI, not ELF, unreadable): frame
    /// pointers for their frames.
    pub files_without_table: u64,
    /// Files left out because the rows budget was spent.
    pub files_over_budget: u64,
    /// Times every table was evicted to make room.
    pub evictions: u64,
    /// Processes with more executable mappings than the kernel side keeps
    /// (`UNWIND_MAX_MAPPINGS`): frames in the others end the walk.
    pub processes_truncated: u64,
    /// Processes whose maps could not be read (exited meanwhile).
    pub processes_failed: u64,
    /// Time spent building and loading tables, in milliseconds.
    pub load_ms: u64,
}

/// A file as the loader knows it: its id in the kernel (0: no table) and
/// its PT_LOAD segments, to place each mapping.
#[derive(Clone, Debug)]
struct KnownFile {
    id: u32,
    rows: usize,
    /// (file offset, file size, virtual address) of each PT_LOAD segment.
    segments: Vec<(u64, u64, u64)>,
}

/// Loads tables and process mappings into one loaded object's unwind maps.
pub struct TableLoader {
    limits: Limits,
    store: TableStore,
    files: HashMap<FileKey, KnownFile>,
    next_row: u32,
    /// Pages of the index in the kernel.
    pages: usize,
    stats: LoaderStats,
    /// A file did not fit: evict everything (`evict`) when allowed.
    wants_eviction: bool,
    last_eviction: Option<std::time::Instant>,
}

/// Least time between two evictions: a working set larger than the budget
/// would otherwise rebuild tables all the time.
const EVICTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl TableLoader {
    /// A loader for maps sized by `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            // Tables are copied into the kernel once per file: the store
            // only spares a rebuild when a file is seen under a new key.
            store: TableStore::new(super::store::DEFAULT_BUDGET_BYTES),
            files: HashMap::new(),
            next_row: 0,
            pages: 0,
            wants_eviction: false,
            last_eviction: None,
            stats: LoaderStats {
                rows_budget: u64::from(limits.rows),
                ..LoaderStats::default()
            },
        }
    }

    /// What was loaded so far.
    pub fn stats(&self) -> LoaderStats {
        self.stats
    }

    /// Loads the tables of `pid`'s executable files not loaded yet, and its
    /// mappings (replacing those loaded before: after an execve() they are
    /// others). Returns the files whose tables this call loaded.
    pub fn load_process(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
    ) -> Result<Vec<LoadedFile>, SamplerError> {
        let started = std::time::Instant::now();
        let result = self.load_process_inner(ebpf, pid);
        self.stats.load_ms += started.elapsed().as_millis() as u64;
        if result.is_err() {
            self.stats.processes_failed += 1;
        }
        result
    }

    fn load_process_inner(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
    ) -> Result<Vec<LoadedFile>, SamplerError> {
        let maps_now =
            ProcessMaps::read(pid).map_err(|source| SamplerError::Maps { pid, source })?;
        let mut loaded = Vec::new();
        let mut proc = UnwindProcess {
            count: 0,
            _pad: 0,
            mappings: [UnwindMapping::default(); UNWIND_MAX_MAPPINGS],
        };
        if maps_now.mappings.len() > UNWIND_MAX_MAPPINGS {
            self.stats.processes_truncated += 1;
        }
        for m in maps_now.mappings.iter().take(UNWIND_MAX_MAPPINGS) {
            let mut mapping = UnwindMapping {
                start: m.start,
                end: m.end,
                ..UnwindMapping::default()
            };
            if let Backing::File(path) = &m.backing {
                let local = maps_now.file_ref(path);
                if let Some((file_id, bias)) = self.file(ebpf, &local.open, path, m, &mut loaded)? {
                    mapping.file_id = file_id;
                    mapping.bias = bias;
                }
            }
            proc.mappings[proc.count as usize] = mapping;
            proc.count += 1;
        }
        let mut procs: BpfHashMap<_, u32, UnwindProcess> =
            BpfHashMap::try_from(maps::find_mut(ebpf, "UNWIND_PROCS")?)?;
        procs.insert(pid, proc, 0)?;
        self.stats.processes += 1;
        Ok(loaded)
    }

    /// True (once) when a file did not fit and the tables may be evicted
    /// now: the caller then calls [`Self::evict`] and has the processes
    /// announced again.
    pub fn take_eviction(&mut self) -> bool {
        let due = self
            .last_eviction
            .is_none_or(|at| at.elapsed() >= EVICTION_INTERVAL);
        let evict = self.wants_eviction && due;
        self.wants_eviction = false;
        evict
    }

    /// Evicts every table and process from the kernel's maps: processes
    /// first, so that no walk starts on pages being removed.
    pub fn evict(&mut self, ebpf: &mut Ebpf) -> Result<(), SamplerError> {
        maps::clear_hash::<u32, UnwindProcess>(ebpf, "UNWIND_PROCS")?;
        maps::clear_hash::<UnwindPageKey, UnwindPage>(ebpf, "UNWIND_PAGES")?;
        self.files.clear();
        self.next_row = 0;
        self.pages = 0;
        self.stats.files = 0;
        self.stats.rows = 0;
        self.stats.evictions += 1;
        self.last_eviction = Some(std::time::Instant::now());
        Ok(())
    }

    /// Forgets `pid`'s mappings (it exited): its slot serves another.
    pub fn forget_process(&mut self, ebpf: &mut Ebpf, pid: u32) -> Result<(), SamplerError> {
        let mut procs: BpfHashMap<_, u32, UnwindProcess> =
            BpfHashMap::try_from(maps::find_mut(ebpf, "UNWIND_PROCS")?)?;
        // Never loaded (no tables wanted, or it failed) is fine.
        let _ = procs.remove(&pid);
        Ok(())
    }

    /// The id of `local`'s table (loading it the first time it is seen)
    /// and `m`'s bias; `None` when the file has no usable table.
    fn file(
        &mut self,
        ebpf: &mut Ebpf,
        local: &Path,
        shown: &Path,
        m: &Mapping,
        loaded: &mut Vec<LoadedFile>,
    ) -> Result<Option<(u32, u64)>, SamplerError> {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(meta) = std::fs::metadata(local) else {
            return Ok(None);
        };
        let key = FileKey {
            dev: meta.dev(),
            inode: meta.ino(),
        };
        if !self.files.contains_key(&key) {
            let known = self.load_file(ebpf, key, local)?;
            if known.id != 0 {
                loaded.push(LoadedFile {
                    path: shown.to_path_buf(),
                    rows: known.rows,
                });
            }
            self.files.insert(key, known);
        }
        let known = &self.files[&key];
        if known.id == 0 {
            return Ok(None);
        }
        Ok(bias(&known.segments, m.start, m.offset).map(|b| (known.id, b)))
    }

    /// Builds `local`'s table and copies it into the kernel's maps.
    fn load_file(
        &mut self,
        ebpf: &mut Ebpf,
        key: FileKey,
        local: &Path,
    ) -> Result<KnownFile, SamplerError> {
        let none = KnownFile {
            id: 0,
            rows: 0,
            segments: Vec::new(),
        };
        // Read once: the segments and the table come from the same bytes.
        let Ok(data) = std::fs::read(local) else {
            self.stats.files_without_table += 1;
            return Ok(none);
        };
        let Some(segments) = segments(&data) else {
            self.stats.files_without_table += 1;
            return Ok(none);
        };
        let Ok(table) = self.store.get_or_build_from(key, &data) else {
            self.stats.files_without_table += 1;
            return Ok(none);
        };
        let index = pages(&table.rows);
        if index.iter().any(|p| p.count > UNWIND_MAX_PAGE_ROWS) {
            self.stats.files_without_table += 1;
            return Ok(none);
        }
        if self.next_row as usize + table.rows.len() > self.limits.rows as usize
            || self.pages + index.len() > self.limits.pages as usize
        {
            self.stats.files_over_budget += 1;
            self.wants_eviction = true;
            return Ok(none);
        }
        let file_id = self.stats.files as u32 + 1;
        let base = self.next_row;
        {
            let mut rows: Array<_, UnwindRow> =
                Array::try_from(maps::find_mut(ebpf, "UNWIND_ROWS")?)?;
            for (i, row) in table.rows.iter().enumerate() {
                rows.set(base + i as u32, *row, 0)?;
            }
        }
        let mut page_map: BpfHashMap<_, UnwindPageKey, UnwindPage> =
            BpfHashMap::try_from(maps::find_mut(ebpf, "UNWIND_PAGES")?)?;
        for p in &index {
            page_map.insert(
                UnwindPageKey {
                    file_id,
                    page: p.page,
                },
                UnwindPage {
                    first: base + p.first,
                    count: p.count,
                },
                0,
            )?;
        }
        self.next_row += table.rows.len() as u32;
        self.pages += index.len();
        self.stats.files += 1;
        self.stats.rows = u64::from(self.next_row);
        Ok(KnownFile {
            id: file_id,
            rows: table.rows.len(),
            segments,
        })
    }
}

/// The PT_LOAD segments of an ELF file: (file offset, file size, address).
fn segments(data: &[u8]) -> Option<Vec<(u64, u64, u64)>> {
    let file = object::File::parse(data).ok()?;
    Some(
        file.segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                (offset, size, s.address())
            })
            .collect(),
    )
}

/// The file address of `pc` in a mapping is `pc - bias`: the mapping starts
/// at file offset `offset`, which the PT_LOAD segment holding it places at
/// `p_vaddr + (offset - p_offset)`.
fn bias(segments: &[(u64, u64, u64)], start: u64, offset: u64) -> Option<u64> {
    let &(p_offset, _, vaddr) = segments
        .iter()
        .find(|&&(o, len, _)| o <= offset && offset < o + len.max(1))?;
    Some(start.wrapping_sub(vaddr + (offset - p_offset)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_places_a_mapping_by_its_segment() {
        // A typical PIE: text at file offset 0x1000 loaded at 0x1000.
        let segs = [(0, 0x800, 0), (0x1000, 0x2000, 0x1000)];
        assert_eq!(
            bias(&segs, 0x5555_0000_1000, 0x1000),
            Some(0x5555_0000_0000)
        );
        // An offset outside every segment has no bias.
        assert_eq!(bias(&segs, 0x1000, 0x9000), None);
    }
}
