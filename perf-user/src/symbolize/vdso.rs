//! Names in the `[vdso]`, the kernel's small library mapped into every
//! process (`clock_gettime`, `gettimeofday`, ...). It is no file on disk,
//! but every process of this kernel and architecture has the same image,
//! so ours is read from our own memory and its dynamic symbols name the
//! offsets of anyone's.

use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

/// The vDSO's functions: (start, end, name), offsets in the image, sorted.
#[derive(Debug, Default)]
pub struct Vdso {
    functions: Vec<(u64, u64, String)>,
}

impl Vdso {
    /// Reads our own vDSO; empty when there is none (or it cannot be read).
    pub fn ours() -> Self {
        let Some(image) = own_image() else {
            return Self::default();
        };
        Self::parse(&image).unwrap_or_default()
    }

    fn parse(image: &[u8]) -> Option<Self> {
        let obj = object::File::parse(image).ok()?;
        // Offsets in the mapping are from its first byte, which is the
        // image's first loaded segment.
        let base = obj.segments().map(|s| s.address()).min()?;
        let mut functions: Vec<(u64, u64, String)> = obj
            .dynamic_symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
            .filter_map(|s| {
                let start = s.address().checked_sub(base)?;
                Some((start, start + s.size(), s.name().ok()?.to_string()))
            })
            .collect();
        // Aliases (clock_gettime and __vdso_clock_gettime): keep the public name.
        functions.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.2.starts_with("__").cmp(&b.2.starts_with("__")))
        });
        functions.dedup_by_key(|f| f.0);
        Some(Self { functions })
    }

    /// The function at `offset` in the vDSO mapping.
    pub fn find(&self, offset: u64) -> Option<&str> {
        let i = self.functions.partition_point(|f| f.0 <= offset);
        let f = self.functions.get(i.checked_sub(1)?)?;
        (offset < f.1).then_some(f.2.as_str())
    }
}

/// A copy of our own vDSO image.
fn own_image() -> Option<Vec<u8>> {
    // SAFETY: getauxval only reads the auxiliary vector; 0 means absent.
    let start = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    if start == 0 {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let end = maps.lines().find_map(|l| {
        let (range, rest) = l.split_once(' ')?;
        if !rest.trim_end().ends_with("[vdso]") {
            return None;
        }
        let (s, e) = range.split_once('-')?;
        (u64::from_str_radix(s, 16).ok()? == start).then(|| u64::from_str_radix(e, 16).ok())?
    })?;
    let len = usize::try_from(end.checked_sub(start)?).ok()?;
    // SAFETY: the kernel maps the vDSO readable at `start` for `len` bytes
    // (our own maps say so) for the life of the process; it is only read.
    let image = unsafe { std::slice::from_raw_parts(start as usize as *const u8, len) };
    Some(image.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_our_own_clock_gettime() {
        let v = Vdso::ours();
        if v.functions.is_empty() {
            return; // no vDSO here (some emulators)
        }
        let (start, _, _) = v
            .functions
            .iter()
            .find(|f| f.2.ends_with("clock_gettime"))
            .expect("a vDSO without clock_gettime");
        assert!(v.find(*start).unwrap().ends_with("clock_gettime"));
        assert!(v.find(u64::MAX).is_none());
    }
}
