//! Builds a file's compact unwind table ([`UnwindRow`]s sorted by address)
//! from its `.eh_frame` and `.debug_frame`, with gimli.
//!
//! Every FDE's rows become rows here; the gaps between FDEs get an
//! [`cfa::END`] row, so that a lookup never borrows the rule of the function
//! before. Consecutive rows with the same rule are merged. Anything malformed
//! is counted and skipped: a file whose CFI cannot be read at all gives an
//! error, and its frames fall back to the frame pointer.

use std::ops::Range;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, LittleEndian, Register, RegisterRule,
    UnwindContext, UnwindSection,
};
use object::{Object as _, ObjectSection as _};
use perf_ebpf_common::unwind::{UnwindRow, cfa, fp};

/// The architectures tables are built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// rsp, rbp; return address at CFA - 8.
    X86_64,
    /// sp, x29 (frame pointer), x30 (link register).
    Aarch64,
}

impl Arch {
    fn sp(self) -> Register {
        match self {
            Self::X86_64 => gimli::X86_64::RSP,
            Self::Aarch64 => gimli::AArch64::SP,
        }
    }

    fn fp(self) -> Register {
        match self {
            Self::X86_64 => gimli::X86_64::RBP,
            Self::Aarch64 => gimli::AArch64::X29,
        }
    }
}

/// Why no table could be built for a file.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Not an ELF file we can read.
    #[error("not a readable ELF file: {0}")]
    Elf(String),
    /// An architecture without an unwinder here.
    #[error("no unwinder for architecture {0}")]
    Arch(String),
    /// Neither `.eh_frame` nor `.debug_frame`.
    #[error("no .eh_frame or .debug_frame section")]
    NoCfi,
}

/// What building a table met, for reports and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// FDEs read.
    pub fdes: u64,
    /// FDEs skipped: malformed, or addresses beyond 4 GiB.
    pub bad_fdes: u64,
    /// Whether a parse error ended a section before its end.
    pub truncated: bool,
    /// Rows before merging.
    pub raw_rows: u64,
    /// Rows whose CFA rule is not supported (frame-pointer fallback there).
    pub unsupported_rows: u64,
}

/// A file's unwind table.
#[derive(Clone, Debug, Default)]
pub struct UnwindTable {
    /// Sorted by `pc`; gaps are [`cfa::END`] rows.
    pub rows: Vec<UnwindRow>,
    /// What building it met.
    pub stats: BuildStats,
}

impl UnwindTable {
    /// The row that covers `pc`, unless no unwind information does.
    pub fn lookup(&self, pc: u64) -> Option<&UnwindRow> {
        let pc = u32::try_from(pc).ok()?;
        let i = self.rows.partition_point(|r| r.pc <= pc);
        let row = self.rows.get(i.checked_sub(1)?)?;
        (row.cfa_type != cfa::END).then_some(row)
    }

    /// Bytes the rows take.
    pub fn bytes(&self) -> usize {
        self.rows.len() * size_of::<UnwindRow>()
    }
}

/// The sections of one file that table building reads.
#[derive(Clone, Debug, Default)]
pub struct CfiSections<'a> {
    /// Architecture.
    pub arch: Option<Arch>,
    /// `.eh_frame` contents and address.
    pub eh_frame: Option<(&'a [u8], u64)>,
    /// `.debug_frame` contents.
    pub debug_frame: Option<&'a [u8]>,
    /// `.text` address (base of text-relative pointers).
    pub text: u64,
    /// `.got` address (base of GOT-relative pointers).
    pub got: u64,
    /// PLT sections: their FDEs use an expression with a known meaning.
    pub plt: Vec<Range<u64>>,
}

impl<'a> CfiSections<'a> {
    /// Finds the sections in an ELF file's bytes.
    pub fn from_elf(data: &'a [u8]) -> Result<Self, TableError> {
        let file = object::File::parse(data).map_err(|e| TableError::Elf(e.to_string()))?;
        let arch = match file.architecture() {
            object::Architecture::X86_64 => Arch::X86_64,
            object::Architecture::Aarch64 => Arch::Aarch64,
            other => return Err(TableError::Arch(format!("{other:?}"))),
        };
        let mut s = CfiSections {
            arch: Some(arch),
            ..CfiSections::default()
        };
        for section in file.sections() {
            let Ok(name) = section.name() else { continue };
            let range = section.address()..section.address().saturating_add(section.size());
            match name {
                ".eh_frame" => {
                    if let Ok(d) = section.data() {
                        s.eh_frame = Some((d, section.address()));
                    }
                }
                ".debug_frame" => s.debug_frame = section.data().ok(),
                ".text" => s.text = section.address(),
                ".got" => s.got = section.address(),
                ".plt" | ".plt.sec" | ".plt.got" => s.plt.push(range),
                _ => {}
            }
        }
        if s.eh_frame.is_none() && s.debug_frame.is_none() {
            return Err(TableError::NoCfi);
        }
        Ok(s)
    }
}

/// Builds the table of an ELF file.
pub fn build(data: &[u8]) -> Result<UnwindTable, TableError> {
    Ok(build_from(&CfiSections::from_elf(data)?))
}

/// One FDE's rows: (start, end, row).
type Spans = Vec<(u64, u64, UnwindRow)>;

/// Builds the table from sections already found (never panics, whatever
/// their bytes).
pub fn build_from(s: &CfiSections<'_>) -> UnwindTable {
    let arch = s.arch.unwrap_or(Arch::X86_64);
    let mut stats = BuildStats::default();
    let mut spans: Spans = Vec::new();
    if let Some((data, address)) = s.eh_frame {
        let section = EhFrame::new(data, LittleEndian);
        let bases = BaseAddresses::default()
            .set_eh_frame(address)
            .set_text(s.text)
            .set_got(s.got);
        read_section(&section, &bases, arch, &s.plt, &mut spans, &mut stats);
    }
    // .debug_frame describes the same code in files that have both; its
    // rows are used only where .eh_frame has none.
    if let Some(data) = s.debug_frame {
        let section = DebugFrame::new(data, LittleEndian);
        let mut extra: Spans = Vec::new();
        read_section(
            &section,
            &BaseAddresses::default(),
            arch,
            &s.plt,
            &mut extra,
            &mut stats,
        );
        spans.sort_by_key(|(start, _, _)| *start);
        extra.retain(|(start, end, _)| !covered(&spans, *start, *end));
        spans.extend(extra);
    }
    UnwindTable {
        rows: assemble(spans),
        stats,
    }
}

/// Whether [start, end) overlaps a span of `sorted`.
fn covered(sorted: &Spans, start: u64, end: u64) -> bool {
    let i = sorted.partition_point(|(s, _, _)| *s < end);
    i > 0 && sorted[i - 1].1 > start
}

fn read_section<'a, S>(
    section: &S,
    bases: &BaseAddresses,
    arch: Arch,
    plt: &[Range<u64>],
    spans: &mut Spans,
    stats: &mut BuildStats,
) where
    S: UnwindSection<gimli::EndianSlice<'a, LittleEndian>>,
{
    let mut ctx = UnwindContext::new();
    let mut entries = section.entries(bases);
    loop {
        let partial = match entries.next() {
            Ok(Some(CieOrFde::Fde(partial))) => partial,
            Ok(Some(CieOrFde::Cie(_))) => continue,
            Ok(None) => break,
            // The length fields chain the entries: after a bad one, nothing
            // further can be trusted.
            Err(_) => {
                stats.truncated = true;
                break;
            }
        };
        stats.fdes += 1;
        let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else {
            stats.bad_fdes += 1;
            continue;
        };
        let mut rows: Spans = Vec::new();
        let read = (|| -> gimli::Result<bool> {
            let mut table = fde.rows(section, bases, &mut ctx)?;
            while let Some(row) = table.next_row()? {
                let (start, end) = (row.start_address(), row.end_address());
                if end > u64::from(u32::MAX) || start >= end {
                    return Ok(false);
                }
                rows.push((start, end, convert(row, arch, start, plt, stats)));
            }
            Ok(true)
        })();
        match read {
            Ok(true) => spans.extend(rows),
            _ => stats.bad_fdes += 1,
        }
    }
}

/// One gimli row as a compact row.
fn convert<T: gimli::ReaderOffset>(
    row: &gimli::UnwindTableRow<T>,
    arch: Arch,
    start: u64,
    plt: &[Range<u64>],
    stats: &mut BuildStats,
) -> UnwindRow {
    stats.raw_rows += 1;
    let mut r = UnwindRow {
        // Checked by the caller: the row ends below 4 GiB.
        pc: start as u32,
        ra_offset: if arch == Arch::X86_64 { -8 } else { 0 },
        ..UnwindRow::default()
    };
    r.cfa_type = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => match i16::try_from(*offset) {
            Ok(o) if *register == arch.sp() => {
                r.cfa_offset = o;
                cfa::SP
            }
            Ok(o) if *register == arch.fp() => {
                r.cfa_offset = o;
                cfa::FP
            }
            _ => cfa::UNSUPPORTED,
        },
        CfaRule::Expression(_)
            if arch == Arch::X86_64 && plt.iter().any(|p| p.contains(&start)) =>
        {
            cfa::PLT
        }
        CfaRule::Expression(_) => cfa::UNSUPPORTED,
    };
    // No rule (None) is the default rule, "same value", for callee-saved
    // registers in both ABIs.
    let rule = |reg| row.register(reg).unwrap_or(RegisterRule::SameValue);
    (r.fp_type, r.fp_offset) = saved_at(rule(arch.fp()));
    let ra = match arch {
        Arch::X86_64 => gimli::X86_64::RA,
        Arch::Aarch64 => gimli::AArch64::X30,
    };
    match (arch, rule(ra)) {
        // The return address column undefined marks the outermost frame
        // (_start, clone, thread entry): the walk ends there.
        (_, RegisterRule::Undefined) => r.cfa_type = cfa::OUTERMOST,
        (Arch::Aarch64, RegisterRule::Offset(o)) => match i16::try_from(o) {
            Ok(o) => r.ra_offset = o,
            Err(_) => r.cfa_type = cfa::UNSUPPORTED,
        },
        (Arch::Aarch64, RegisterRule::SameValue) => r.ra_offset = 0,
        (Arch::Aarch64, _) => r.cfa_type = cfa::UNSUPPORTED,
        (Arch::X86_64, _) => {}
    }
    if r.cfa_type == cfa::UNSUPPORTED {
        stats.unsupported_rows += 1;
    }
    r
}

/// The frame-pointer rule as (`fp::*`, offset).
fn saved_at<T: gimli::ReaderOffset>(rule: RegisterRule<T>) -> (u8, i16) {
    match rule {
        RegisterRule::Undefined | RegisterRule::SameValue => (fp::UNCHANGED, 0),
        RegisterRule::Offset(o) => match i16::try_from(o) {
            Ok(o) => (fp::AT_OFFSET, o),
            Err(_) => (fp::UNSUPPORTED, 0),
        },
        _ => (fp::UNSUPPORTED, 0),
    }
}

/// Sorted rows with END rows in the gaps, same-rule neighbours merged.
fn assemble(mut spans: Spans) -> Vec<UnwindRow> {
    spans.sort_by_key(|(start, _, _)| *start);
    let end_row = |pc: u64| UnwindRow {
        pc: pc as u32,
        cfa_type: cfa::END,
        ..UnwindRow::default()
    };
    let mut rows: Vec<UnwindRow> = Vec::with_capacity(spans.len() + 1);
    let mut covered_to: Option<u64> = None;
    for (start, end, row) in spans {
        if let Some(to) = covered_to
            && to < start
        {
            rows.push(end_row(to));
        }
        // A later FDE at the same address replaces the row before it.
        if rows.last().is_some_and(|last| u64::from(last.pc) == start) {
            rows.pop();
        }
        if !rows.last().is_some_and(|last| last.same_rule(&row)) {
            rows.push(row);
        }
        covered_to = Some(covered_to.map_or(end, |to| if start >= to { end } else { to.max(end) }));
    }
    if let Some(to) = covered_to {
        rows.push(end_row(to));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

    /// readelf's row for one address: (CFA text, rbp text, ra text).
    type OracleRow = (u64, String, String, String);

    /// Rows of `readelf --debug-dump=frames-interp` for .eh_frame, with the
    /// FDE ranges (an independent reading of the same CFI).
    fn readelf_rows(path: &str) -> (Vec<OracleRow>, Vec<(u64, u64)>) {
        let out = std::process::Command::new("readelf")
            .args(["--debug-dump=frames-interp", path])
            .output()
            .expect("readelf (binutils) is needed: apt-get install binutils");
        let text = String::from_utf8_lossy(&out.stdout);
        let (mut rows, mut fdes) = (Vec::new(), Vec::new());
        let mut columns: Vec<String> = Vec::new();
        let mut in_fde = false;
        let mut fde_rows = 0;
        for line in text.lines() {
            if line.starts_with("Contents of the .debug_frame") {
                break;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(range) = words.iter().find_map(|w| w.strip_prefix("pc=")) {
                let (a, b) = range.split_once("..").unwrap();
                let a = u64::from_str_radix(a, 16).unwrap();
                let b = u64::from_str_radix(b, 16).unwrap();
                if in_fde && fde_rows == 0 {
                    let (start, _) = *fdes.last().unwrap();
                    rows.push((start, "rsp+8".into(), "u".into(), "c-8".into()));
                }
                fdes.push((a, b));
                in_fde = true;
                fde_rows = 0;
                columns.clear();
            } else if words.first() == Some(&"LOC") {
                columns = words.iter().map(|w| w.to_string()).collect();
            } else if line.contains(" CIE") {
                in_fde = false;
            } else if in_fde && !columns.is_empty() && words.len() == columns.len() {
                let col = |name: &str| {
                    columns
                        .iter()
                        .position(|c| c == name)
                        .map_or("u".to_string(), |i| words[i].to_string())
                };
                let loc = u64::from_str_radix(words[0], 16).unwrap();
                rows.push((loc, col("CFA"), col("rbp"), col("ra")));
                fde_rows += 1;
            }
        }
        if in_fde && fde_rows == 0 {
            let (start, _) = *fdes.last().unwrap();
            rows.push((start, "rsp+8".into(), "u".into(), "c-8".into()));
        }
        (rows, fdes)
    }

    fn describe(row: &UnwindRow) -> (String, String) {
        let cfa = match row.cfa_type {
            cfa::SP => format!("rsp+{}", row.cfa_offset),
            cfa::FP => format!("rbp+{}", row.cfa_offset),
            cfa::PLT | cfa::UNSUPPORTED => "exp".into(),
            other => format!("type{other}"),
        };
        let rbp = match row.fp_type {
            fp::AT_OFFSET => format!("c{}", row.fp_offset),
            fp::UNCHANGED => "u".into(),
            _ => "?".into(),
        };
        (cfa, rbp)
    }

    /// readelf's CFA as we expect to have it: rsp/rbp plus an offset that
    /// fits 16 bits exactly, anything else as unsupported ("exp").
    fn supported_cfa(text: &str) -> String {
        let fits = |reg: &str| {
            text.strip_prefix(reg)
                .and_then(|n| n.parse::<i64>().ok())
                .is_some_and(|n| i16::try_from(n).is_ok())
        };
        if fits("rsp") || fits("rbp") {
            text.to_string()
        } else {
            "exp".into()
        }
    }

    /// readelf's rbp rule as we expect it: "u", "c<offset>" within 16 bits,
    /// else unsupported ("?").
    fn supported_rbp(text: &str) -> String {
        match text.strip_prefix('c').and_then(|n| n.parse::<i64>().ok()) {
            Some(n) if i16::try_from(n).is_ok() => format!("c{n}"),
            _ if text == "u" => "u".into(),
            _ => "?".into(),
        }
    }

    fn check_against_readelf(path: &str) -> (usize, usize) {
        let data = std::fs::read(path).unwrap();
        let started = std::time::Instant::now();
        let table = build(&data).unwrap();
        let took = started.elapsed();
        let (oracle, fdes) = readelf_rows(path);
        assert!(oracle.len() > 1000, "readelf gave {} rows", oracle.len());
        let mut mismatches = Vec::new();
        for (loc, cfa_text, rbp_text, ra_text) in &oracle {
            let Some(row) = table.lookup(*loc) else {
                mismatches.push(format!("{loc:#x}: no row, readelf {cfa_text}"));
                continue;
            };
            if ra_text == "u" {
                if row.cfa_type != cfa::OUTERMOST {
                    mismatches.push(format!("{loc:#x}: ra undefined, ours {row:?}"));
                }
                continue;
            }
            let (cfa, rbp) = describe(row);
            let (cfa_text, rbp_text) = (supported_cfa(cfa_text), supported_rbp(rbp_text));
            if cfa != cfa_text || rbp != rbp_text {
                mismatches.push(format!(
                    "{loc:#x}: readelf {cfa_text} rbp={rbp_text}, ours {cfa} rbp={rbp}"
                ));
            }
        }
        // Past the end of an FDE that no other FDE continues: no row.
        let starts: std::collections::HashSet<u64> = fdes.iter().map(|f| f.0).collect();
        let mut ends_checked = 0;
        for (_, end) in &fdes {
            if !starts.contains(end) && !fdes.iter().any(|(a, b)| a <= end && end < b) {
                assert!(table.lookup(*end).is_none(), "{end:#x} is past every FDE");
                ends_checked += 1;
            }
        }
        assert!(
            mismatches.is_empty(),
            "{} of {} readelf rows differ, e.g. {:?}",
            mismatches.len(),
            oracle.len(),
            &mismatches[..mismatches.len().min(10)]
        );
        eprintln!(
            "{path}: {} FDEs, {} readelf rows, {} rows after merging ({} KiB) in {took:?}; {ends_checked} gaps checked",
            table.stats.fdes,
            oracle.len(),
            table.rows.len(),
            table.bytes() / 1024
        );
        (oracle.len(), table.rows.len())
    }

    #[test]
    fn libc_table_agrees_with_readelf() {
        check_against_readelf(LIBC);
    }

    #[test]
    fn python_table_agrees_with_readelf() {
        let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
        check_against_readelf(python.to_str().unwrap());
    }

    #[test]
    fn gaps_end_and_same_rules_merge() {
        let row = |pc: u32, off: i16| UnwindRow {
            pc,
            cfa_type: cfa::SP,
            cfa_offset: off,
            ra_offset: -8,
            ..UnwindRow::default()
        };
        let spans = vec![
            (0x20, 0x30, row(0x20, 8)),
            (0x10, 0x18, row(0x10, 8)),
            (0x14, 0x18, row(0x14, 16)),
            (0x30, 0x40, row(0x30, 8)),
        ];
        let table = UnwindTable {
            rows: assemble(spans),
            stats: BuildStats::default(),
        };
        let pcs: Vec<(u32, u8)> = table.rows.iter().map(|r| (r.pc, r.cfa_type)).collect();
        assert_eq!(
            pcs,
            vec![
                (0x10, cfa::SP),
                (0x14, cfa::SP),
                (0x18, cfa::END),
                (0x20, cfa::SP),
                (0x40, cfa::END)
            ]
        );
        assert_eq!(table.lookup(0x15).unwrap().cfa_offset, 16);
        assert!(table.lookup(0x1a).is_none());
        assert_eq!(table.lookup(0x3f).unwrap().cfa_offset, 8);
        assert!(table.lookup(0x40).is_none());
        assert!(table.lookup(0x5).is_none());
        assert!(table.lookup(u64::MAX).is_none());
    }

    #[test]
    fn not_elf_and_no_cfi_are_errors() {
        assert!(matches!(build(b"not an elf"), Err(TableError::Elf(_))));
        assert!(build(&[]).is_err());
    }

    fn libc_sections(data: &[u8]) -> CfiSections<'_> {
        CfiSections::from_elf(data).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes as .eh_frame: never a panic.
        #[test]
        fn arbitrary_eh_frame_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), addr in any::<u32>()) {
            let s = CfiSections { arch: Some(Arch::X86_64), eh_frame: Some((&bytes, u64::from(addr))), debug_frame: Some(&bytes), ..CfiSections::default() };
            let t = build_from(&s);
            prop_assert!(t.rows.windows(2).all(|w| w[0].pc < w[1].pc));
        }

        /// libc's .eh_frame cut short or with bytes flipped: never a panic,
        /// rows stay sorted, and a cut one is reported as truncated or loses rows.
        #[test]
        fn damaged_libc_eh_frame_never_panics(cut in 0usize..100_000, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
            let data = std::fs::read(LIBC).unwrap();
            let s = libc_sections(&data);
            let (eh, addr) = s.eh_frame.unwrap();
            let mut damaged = eh[..cut.min(eh.len())].to_vec();
            for (at, b) in flips {
                if !damaged.is_empty() {
                    let i = at % damaged.len();
                    damaged[i] ^= b;
                }
            }
            let d = CfiSections { eh_frame: Some((&damaged, addr)), debug_frame: None, ..s.clone() };
            let t = build_from(&d);
            prop_assert!(t.rows.windows(2).all(|w| w[0].pc < w[1].pc));
        }
    }
}
