//! Unwind tables of every executable file in use, built once per file
//! (shared by every process that maps it) and evicted, least recently used
//! first, under a memory budget; and the page index through which the kernel
//! unwinder finds a row in a few steps.

use std::{collections::HashMap, path::Path, sync::Arc};

use perf_ebpf_common::unwind::UnwindRow;

use super::table::{self, TableError, UnwindTable};

/// Default budget for all tables: enough for libc, python and a few dozen
/// libraries, small enough for a Raspberry Pi.
pub const DEFAULT_BUDGET_BYTES: usize = 16 * 1024 * 1024;

/// Addresses per page of the index, shared with the kernel side: a row is
/// searched among the rows of one page only (`pc >> PAGE_SHIFT`).
pub const PAGE_SHIFT: u32 = perf_ebpf_common::unwind::UNWIND_PAGE_SHIFT;

/// A file, as the kernel names it in /proc/PID/maps: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub inode: u64,
}

/// One page of the index: the rows that cover
/// `[page << PAGE_SHIFT, (page + 1) << PAGE_SHIFT)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// `pc >> PAGE_SHIFT`.
    pub page: u32,
    /// Index of the first row (the one covering the page's start, if any).
    pub first: u32,
    /// Rows to search.
    pub count: u32,
}

/// The page index of `rows` (sorted by pc): every page that some row covers.
pub fn pages(rows: &[UnwindRow]) -> Vec<Page> {
    let mut out: Vec<Page> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let page = row.pc >> PAGE_SHIFT;
        // The previous row also covers the start of every page from its own
        // up to this one.
        let covering = out.last().map_or(i as u32, |p| p.first + p.count - 1);
        let next_page = out.last().map_or(page, |p| p.page + 1);
        for p in next_page..page {
            out.push(Page {
                page: p,
                first: covering,
                count: 1,
            });
        }
        match out.last_mut() {
            Some(last) if last.page == page => last.count += 1,
            _ => {
                // The row before covers the page's first addresses unless
                // this row starts the page exactly.
                let starts_page = row.pc & ((1 << PAGE_SHIFT) - 1) == 0;
                let (first, count) = if i > 0 && !starts_page {
                    (i as u32 - 1, 2)
                } else {
                    (i as u32, 1)
                };
                out.push(Page { page, first, count });
            }
        }
    }
    out
}

/// Looks `pc` up the way the kernel unwinder will: its page, then a binary
/// search among that page's rows.
pub fn lookup_paged<'a>(rows: &'a [UnwindRow], index: &[Page], pc: u32) -> Option<&'a UnwindRow> {
    let page = pc >> PAGE_SHIFT;
    let p = index.get(index.binary_search_by_key(&page, |p| p.page).ok()?)?;
    let slice = rows.get(p.first as usize..(p.first + p.count) as usize)?;
    let i = slice.partition_point(|r| r.pc <= pc);
    let row = slice.get(i.checked_sub(1)?)?;
    (row.cfa_type != perf_ebpf_common::unwind::cfa::END).then_some(row)
}

/// Why a file has no table in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Its CFI could not be used.
    #[error(transparent)]
    Table(#[from] TableError),
    /// Its table alone is larger than the budget.
    #[error("its unwind table ({bytes} bytes) is larger than the budget ({budget} bytes)")]
    OverBudget {
        /// The table's size.
        bytes: usize,
        /// The budget.
        budget: usize,
    },
}

struct Entry {
    table: Arc<UnwindTable>,
    last_used: u64,
}

/// What the store did, for reports and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Tables built.
    pub built: u64,
    /// Lookups answered from the store.
    pub hits: u64,
    /// Tables evicted to stay within the budget.
    pub evicted: u64,
    /// Files whose table could not be built (they fall back to frame pointers).
    pub failed: u64,
}

/// Tables by file, within a memory budget.
pub struct TableStore {
    budget: usize,
    used: usize,
    clock: u64,
    tables: HashMap<FileKey, Entry>,
    stats: StoreStats,
}

impl TableStore {
    /// An empty store that keeps at most `budget` bytes of rows.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            clock: 0,
            tables: HashMap::new(),
            stats: StoreStats::default(),
        }
    }

    /// The table of `key`, read from `path` and built the first time.
    pub fn get_or_build(
        &mut self,
        key: FileKey,
        path: &Path,
    ) -> Result<Arc<UnwindTable>, StoreError> {
        self.clock += 1;
        if let Some(e) = self.tables.get_mut(&key) {
            e.last_used = self.clock;
            self.stats.hits += 1;
            return Ok(Arc::clone(&e.table));
        }
        let data = std::fs::read(path).map_err(|source| {
            self.stats.failed += 1;
            StoreError::Read {
                path: path.display().to_string(),
                source,
            }
        })?;
        self.get_or_build_from(key, &data)
    }

    /// As [`Self::get_or_build`], for a caller that has read the file.
    pub fn get_or_build_from(
        &mut self,
        key: FileKey,
        data: &[u8],
    ) -> Result<Arc<UnwindTable>, StoreError> {
        self.clock += 1;
        if let Some(e) = self.tables.get_mut(&key) {
            e.last_used = self.clock;
            self.stats.hits += 1;
            return Ok(Arc::clone(&e.table));
        }
        let table = match table::build(data) {
            Ok(t) => t,
            Err(e) => {
                self.stats.failed += 1;
                return Err(e.into());
            }
        };
        self.insert(key, table)
    }

    /// Adds a built table, evicting the least recently used ones to make room.
    pub fn insert(
        &mut self,
        key: FileKey,
        table: UnwindTable,
    ) -> Result<Arc<UnwindTable>, StoreError> {
        let bytes = table.bytes();
        if bytes > self.budget {
            self.stats.failed += 1;
            return Err(StoreError::OverBudget {
                bytes,
                budget: self.budget,
            });
        }
        while self.used + bytes > self.budget {
            let Some(oldest) = self
                .tables
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(e) = self.tables.remove(&oldest) {
                self.used -= e.table.bytes();
                self.stats.evicted += 1;
            }
        }
        self.clock += 1;
        self.used += bytes;
        self.stats.built += 1;
        let table = Arc::new(table);
        self.tables.insert(
            key,
            Entry {
                table: Arc::clone(&table),
                last_used: self.clock,
            },
        );
        Ok(table)
    }

    /// Bytes of rows held.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Files held.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// What the store did so far.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perf_ebpf_common::unwind::cfa;
    use proptest::prelude::*;

    fn row(pc: u32, cfa_type: u8, off: i16) -> UnwindRow {
        UnwindRow {
            pc,
            cfa_type,
            cfa_offset: off,
            ra_offset: -8,
            ..UnwindRow::default()
        }
    }

    fn table_of(rows: Vec<UnwindRow>) -> UnwindTable {
        UnwindTable {
            rows,
            ..UnwindTable::default()
        }
    }

    #[test]
    fn libc_paged_lookup_matches_the_table_everywhere() {
        let data = std::fs::read("/usr/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let t = table::build(&data).unwrap();
        let index = pages(&t.rows);
        let max = index.iter().map(|p| p.count).max().unwrap();
        let (lo, hi) = (t.rows[0].pc, t.rows.last().unwrap().pc);
        for pc in (lo.saturating_sub(64)..hi + 64).step_by(7) {
            assert_eq!(
                lookup_paged(&t.rows, &index, pc),
                t.lookup(u64::from(pc)),
                "{pc:#x}"
            );
        }
        // The kernel's binary search is bounded: keep the pages small.
        eprintln!(
            "libc: {} rows, {} pages, at most {max} rows a page",
            t.rows.len(),
            index.len()
        );
        assert!(max < 4096, "{max}");
    }

    proptest! {
        #[test]
        fn paged_lookup_matches_table_lookup(
            mut pcs in proptest::collection::btree_set(0u32..0x40_0000, 1..200),
            probes in proptest::collection::vec(0u32..0x41_0000, 1..200),
        ) {
            let mut rows: Vec<UnwindRow> = std::mem::take(&mut pcs)
                .into_iter()
                .enumerate()
                .map(|(i, pc)| row(pc, if i % 5 == 4 { cfa::END } else { cfa::SP }, i as i16))
                .collect();
            // As built tables always do, the last row ends the table.
            rows.last_mut().unwrap().cfa_type = cfa::END;
            let index = pages(&rows);
            prop_assert!(index.windows(2).all(|w| w[0].page + 1 == w[1].page));
            let t = table_of(rows.clone());
            for pc in probes {
                prop_assert_eq!(lookup_paged(&rows, &index, pc), t.lookup(u64::from(pc)));
            }
        }
    }

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let rows = |n: u32| (0..n).map(|i| row(i * 16, cfa::SP, 8)).collect::<Vec<_>>();
        let key = |i: u64| FileKey { dev: 1, inode: i };
        let mut store = TableStore::new(12 * 100);
        store.insert(key(1), table_of(rows(50))).unwrap();
        store.insert(key(2), table_of(rows(40))).unwrap();
        // Touch 1, so 2 is the least recently used.
        store
            .get_or_build(key(1), Path::new("/nonexistent"))
            .unwrap();
        store.insert(key(3), table_of(rows(30))).unwrap();
        assert_eq!(store.len(), 2);
        assert!(store.used_bytes() <= 1200);
        assert!(
            store
                .get_or_build(key(2), Path::new("/nonexistent"))
                .is_err()
        );
        assert_eq!(store.stats().evicted, 1);
        let big = store.insert(key(4), table_of(rows(101)));
        assert!(matches!(big, Err(StoreError::OverBudget { .. })));
    }
}
