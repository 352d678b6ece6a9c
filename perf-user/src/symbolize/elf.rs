//! What perf-user reads from an ELF file itself, besides what blazesym
//! names: its build ID and debug link (to find a separate debug file), the
//! file offset to virtual address translation of its code, and function
//! boundaries from `.eh_frame` FDEs and the symbol tables, so that an
//! address no symbol names is shown as the start of its function.

use std::{fs::File, ops::Range, path::Path};

use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _, ReadCache};

/// Why an ELF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file could not be opened or read.
    #[error("cannot open: {0}")]
    Open(#[from] std::io::Error),
    /// The bytes are not an ELF file this parser reads.
    #[error("not a readable ELF file: {0}")]
    Parse(#[from] object::Error),
}

/// Facts about one ELF file.
#[derive(Clone, Debug, Default)]
pub struct ElfFacts {
    /// The GNU build ID, when the file has one.
    pub build_id: Option<Vec<u8>>,
    /// `.gnu_debuglink`: the debug file's name and the CRC-32 of its contents.
    pub debuglink: Option<(String, u32)>,
    /// True when the file has a `.symtab` (not stripped).
    pub has_symtab: bool,
    /// True when the file has DWARF (`.debug_info` with contents).
    pub has_dwarf: bool,
    /// Loadable segments: (file offsets, virtual address of the first).
    segments: Vec<(Range<u64>, u64)>,
}

impl ElfFacts {
    /// Reads the facts of `path` (its headers and small sections only).
    pub fn read(path: &Path) -> Result<Self, ElfError> {
        let cache = ReadCache::new(File::open(path)?);
        let obj = object::File::parse(&cache)?;
        let debuglink = obj.gnu_debuglink().ok().flatten().and_then(|(name, crc)| {
            let name = std::str::from_utf8(name).ok()?;
            // A bare file name; anything else would let a file point us anywhere.
            (!name.is_empty() && !name.contains('/')).then(|| (name.to_string(), crc))
        });
        let has_dwarf = obj
            .section_by_name(".debug_info")
            .or_else(|| obj.section_by_name(".zdebug_info"))
            .is_some_and(|s| s.file_range().is_some_and(|(_, size)| size > 0));
        let segments = obj
            .segments()
            .filter_map(|s| {
                let (off, size) = s.file_range();
                (size > 0).then_some((off..off + size, s.address()))
            })
            .collect();
        Ok(Self {
            build_id: obj.build_id().ok().flatten().map(<[u8]>::to_vec),
            debuglink,
            has_symtab: obj.symbol_table().is_some(),
            has_dwarf,
            segments,
        })
    }

    /// The build ID in lower-case hex, as debug file paths and debuginfod spell it.
    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id.as_deref().map(hex)
    }

    /// The virtual address that a file offset is loaded at.
    pub fn file_to_virt(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(r, _)| r.contains(&offset))
            .map(|(r, vaddr)| vaddr + (offset - r.start))
    }

    /// The file offset that holds a virtual address.
    pub fn virt_to_file(&self, vaddr: u64) -> Option<u64> {
        self.segments.iter().find_map(|(r, start)| {
            let rel = vaddr.checked_sub(*start)?;
            (rel < r.end - r.start).then_some(r.start + rel)
        })
    }
}

/// Lower-case hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Function ranges (virtual addresses) of one file, sorted by start.
#[derive(Clone, Debug, Default)]
pub struct FunctionRanges {
    ranges: Vec<Range<u64>>,
}

impl FunctionRanges {
    /// Every FDE of `.eh_frame` and every sized function symbol of
    /// `.symtab` and `.dynsym`. A file without them gives no ranges.
    pub fn read(path: &Path) -> Result<Self, ElfError> {
        let cache = ReadCache::new(File::open(path)?);
        let obj = object::File::parse(&cache)?;
        let mut ranges = Vec::new();
        if obj.is_little_endian()
            && let Some(sec) = obj.section_by_name(".eh_frame")
            && let Ok(data) = sec.data()
        {
            ranges = fde_ranges(data, sec.address(), obj.is_64());
        }
        let symbols = obj.symbols().chain(obj.dynamic_symbols());
        ranges.extend(
            symbols
                .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
                .map(|s| s.address()..s.address().saturating_add(s.size())),
        );
        Ok(Self::new(ranges))
    }

    fn new(mut ranges: Vec<Range<u64>>) -> Self {
        ranges.retain(|r| r.start < r.end);
        ranges.sort_by_key(|r| (r.start, r.end));
        ranges.dedup();
        Self { ranges }
    }

    /// The start of the innermost function holding `vaddr`: of the ranges
    /// that hold it, the one that starts last. None when no range holds it
    /// (then nothing is guessed).
    pub fn start_of(&self, vaddr: u64) -> Option<u64> {
        let i = self.ranges.partition_point(|r| r.start <= vaddr);
        // Ranges rarely overlap (aliases, a cold part inside its parent's
        // symbol); a short look back finds the holder among them.
        self.ranges[..i]
            .iter()
            .rev()
            .take(64)
            .find(|r| vaddr < r.end)
            .map(|r| r.start)
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// A little-endian reader over `.eh_frame`.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let b = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn uint(&mut self, n: usize) -> Option<u64> {
        let b = self.bytes(n)?;
        Some(
            b.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )
    }
    fn sint(&mut self, n: usize) -> Option<u64> {
        let v = self.uint(n)?;
        let shift = 64 - 8 * n as u32;
        Some((((v << shift) as i64) >> shift) as u64)
    }
    fn uleb(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn sleb(&mut self) -> Option<u64> {
        let mut v = 0i64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            v |= i64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Some(v as u64);
            }
            if shift >= 64 {
                return None;
            }
        }
    }
    fn cstr(&mut self) -> Option<&[u8]> {
        let rest = self.data.get(self.pos..)?;
        let n = rest.iter().position(|&b| b == 0)?;
        self.pos += n + 1;
        Some(&rest[..n])
    }

    /// A value in a `DW_EH_PE_*` encoding; `field` is its address, for pcrel.
    fn encoded(&mut self, enc: u8, is_64: bool, field: u64) -> Option<u64> {
        let v = match enc & 0x0f {
            0x00 => self.uint(if is_64 { 8 } else { 4 })?,
            0x01 => self.uleb()?,
            0x02 => self.uint(2)?,
            0x03 => self.uint(4)?,
            0x04 => self.uint(8)?,
            0x09 => self.sleb()?,
            0x0a => self.sint(2)?,
            0x0b => self.sint(4)?,
            0x0c => self.uint(8)?,
            _ => return None,
        };
        match enc & 0x70 {
            0x00 => Some(v),
            0x10 => Some(field.wrapping_add(v)),
            // datarel, textrel, funcrel: not used for FDE addresses in .eh_frame.
            _ => None,
        }
    }
}

/// DW_EH_PE_omit.
const OMIT: u8 = 0xff;

/// The address ranges of `.eh_frame`'s FDEs (`section_addr` is its virtual
/// address). Malformed entries end the walk; what was read stays.
fn fde_ranges(data: &[u8], section_addr: u64, is_64: bool) -> Vec<Range<u64>> {
    // FDE pointer encoding per CIE offset.
    let mut cies: std::collections::HashMap<usize, u8> = Default::default();
    let mut out = Vec::new();
    let mut r = Reader { data, pos: 0 };
    while r.pos < data.len() {
        let start = r.pos;
        let Some(mut len) = r.uint(4) else { break };
        if len == 0 {
            break; // terminator
        }
        if len == 0xffff_ffff {
            let Some(l) = r.uint(8) else { break };
            len = l;
        }
        let body = r.pos;
        let Some(end) = usize::try_from(len).ok().and_then(|l| body.checked_add(l)) else {
            break;
        };
        if end > data.len() {
            break;
        }
        let id_pos = r.pos;
        let Some(id) = r.uint(4) else { break };
        if id == 0 {
            if let Some(enc) = cie_fde_encoding(&mut r, is_64, section_addr) {
                cies.insert(start, enc);
            }
        } else if let Some(&enc) = (id_pos as u64)
            .checked_sub(id)
            .and_then(|cie| cies.get(&(cie as usize)))
            && enc != OMIT
        {
            let field = section_addr + r.pos as u64;
            let begin = r.encoded(enc, is_64, field);
            // The range is a length: the same format, never relative.
            let size = r.encoded(enc & 0x0f, is_64, 0);
            if let (Some(b), Some(s)) = (begin, size)
                && s > 0
            {
                out.push(b..b.saturating_add(s));
            }
        }
        r.pos = end;
    }
    out
}

/// Reads a CIE after its id; returns its FDE pointer encoding.
fn cie_fde_encoding(r: &mut Reader<'_>, is_64: bool, section_addr: u64) -> Option<u8> {
    let version = r.u8()?;
    let aug = r.cstr()?.to_vec();
    if aug.windows(2).any(|w| w == b"eh") {
        r.bytes(if is_64 { 8 } else { 4 })?;
    }
    if version >= 4 {
        r.u8()?; // address size
        r.u8()?; // segment selector size
    }
    r.uleb()?; // code alignment
    r.sleb()?; // data alignment
    if version == 1 {
        r.u8()?;
    } else {
        r.uleb()?;
    }
    let mut enc = 0x00; // absptr unless 'R' says otherwise
    if aug.first() == Some(&b'z') {
        r.uleb()?; // augmentation data length
        for &c in &aug[1..] {
            match c {
                b'R' => enc = r.u8()?,
                b'L' => {
                    r.u8()?;
                }
                b'P' => {
                    let penc = r.u8()?;
                    let field = section_addr + r.pos as u64;
                    // Only its size matters; a relative encoding still reads.
                    r.encoded(penc & 0x7f & !0x60, is_64, field)?;
                }
                b'S' | b'B' | b'G' => {}
                _ => break,
            }
        }
    }
    Some(enc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_find_the_innermost_holder_and_guess_nothing() {
        let f = FunctionRanges::new(vec![0x1000..0x1100, 0x1200..0x1300, 0x1000..0x1100]);
        assert_eq!(f.len(), 2);
        assert_eq!(f.start_of(0x1000), Some(0x1000));
        assert_eq!(f.start_of(0x10ff), Some(0x1000));
        assert_eq!(f.start_of(0x1100), None, "between two functions");
        assert_eq!(f.start_of(0x1250), Some(0x1200));
        assert_eq!(f.start_of(0x500), None);
        let nested = FunctionRanges::new(vec![0x1000..0x2000, 0x1400..0x1500]);
        assert_eq!(nested.start_of(0x1450), Some(0x1400));
        assert_eq!(nested.start_of(0x1600), Some(0x1000));
    }

    #[test]
    fn our_own_eh_frame_covers_this_function() {
        // This test binary has .eh_frame; our own function is in an FDE that
        // starts at or before it.
        let exe = std::env::current_exe().unwrap();
        let facts = ElfFacts::read(&exe).unwrap();
        let cache = ReadCache::new(File::open(&exe).unwrap());
        let obj = object::File::parse(&cache).unwrap();
        let sec = obj.section_by_name(".eh_frame").unwrap();
        let fdes = fde_ranges(sec.data().unwrap(), sec.address(), obj.is_64());
        assert!(fdes.len() > 100, "{} FDEs", fdes.len());
        // Every function symbol with a size should be the start of an FDE.
        let starts: std::collections::HashSet<u64> = fdes.iter().map(|r| r.start).collect();
        let funcs: Vec<_> = obj
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 16)
            .collect();
        let hits = funcs
            .iter()
            .filter(|s| starts.contains(&s.address()))
            .count();
        assert!(
            hits * 10 >= funcs.len() * 9,
            "{hits} of {} functions start an FDE",
            funcs.len()
        );
        assert!(facts.build_id_hex().is_some_and(|h| h.len() >= 16));
        assert!(!facts.segments.is_empty());
    }

    #[test]
    fn malformed_eh_frame_never_panics() {
        let mut data = vec![0u8; 64];
        for i in 0..64u8 {
            data[i as usize] = i.wrapping_mul(37);
        }
        let _ = fde_ranges(&data, 0, true);
        let _ = fde_ranges(&[0xff, 0xff, 0xff, 0xff, 1, 2], 0, true);
        let _ = fde_ranges(&[], 0, true);
    }
}
