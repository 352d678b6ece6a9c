//! tracefs: where it is, mounting it when it is not, and the tracepoint
//! `format` files that give the field offsets the kernel programs need (aya
//! has no CO-RE for Rust programs, and these layouts change between kernels).

use std::{
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

/// Where tracefs lives on current kernels.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where older set-ups have it, inside debugfs.
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Why tracefs or a tracepoint's format could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// Neither mount point has tracefs and mounting failed.
    #[error(
        "tracefs is not mounted and mounting it failed ({tracefs}: {tracefs_err}; {debugfs}: {debugfs_err}). \
         Mount it with `mount -t tracefs nodev {tracefs}` as root; the kernel needs CONFIG_FTRACE \
         (tracepoints), and in a container /sys/kernel must be writable (or mount it on the host)"
    )]
    NotMounted {
        /// The preferred mount point.
        tracefs: &'static str,
        /// Why mounting there failed.
        tracefs_err: io::Error,
        /// The fallback.
        debugfs: &'static str,
        /// Why the fallback failed.
        debugfs_err: io::Error,
    },
    /// Not mounted, and this process may not mount it.
    #[error(
        "tracefs is not mounted at {tracefs}, and mounting it needs CAP_SYS_ADMIN, which this process \
         lacks. Mount it once as root (`mount -t tracefs nodev {tracefs}`, or add it to /etc/fstab), \
         or, on a kernel with BTF, use BTF tracepoints, which need no tracefs (`--tracepoints btf`; \
         `auto` picks them where /sys/kernel/btf/vmlinux exists)"
    )]
    MountNotPermitted {
        /// The preferred mount point.
        tracefs: &'static str,
    },
    /// Mounted, but this process may not read it.
    #[error(
        "tracefs at {path} is readable by root only (mode 0700). Grant CAP_DAC_READ_SEARCH \
         (`setcap cap_dac_read_search+ep`, or AmbientCapabilities= in the unit), or, on a kernel with \
         BTF, use BTF tracepoints, which need no tracefs (`--tracepoints btf`)"
    )]
    NotReadable {
        /// The mount point or file.
        path: String,
    },
    /// The tracepoint does not exist on this kernel.
    #[error(
        "tracepoint {category}:{name} not found ({path}: {source}); the kernel may be too old or built without it"
    )]
    NoTracepoint {
        /// e.g. `block`.
        category: String,
        /// e.g. `block_rq_issue`.
        name: String,
        /// The format file tried.
        path: String,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// A field the program needs is missing or has an unexpected size.
    #[error("tracepoint {tracepoint}: {problem}; this kernel's layout is not supported")]
    Field {
        /// `category:name`.
        tracepoint: String,
        /// What is wrong.
        problem: String,
    },
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// C declaration without the name, e.g. `unsigned int`, `char[10]`, `__data_loc char[]`.
    pub c_type: String,
    /// Field name.
    pub name: String,
    /// Offset in the record, in bytes.
    pub offset: u16,
    /// Size in bytes.
    pub size: u16,
    /// Whether the kernel marks it signed.
    pub signed: bool,
}

/// A parsed `events/<category>/<name>/format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    /// `category:name`, for messages.
    pub tracepoint: String,
    /// The tracepoint id.
    pub id: Option<u32>,
    /// Fields, common ones included, in file order.
    pub fields: Vec<Field>,
}

impl Format {
    /// Parses the text of a format file. Lines that are not fields are skipped,
    /// so newer kernels' additions do not break parsing.
    pub fn parse(tracepoint: &str, text: &str) -> Self {
        let mut id = None;
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("ID:") {
                id = rest.trim().parse().ok();
            } else if line.starts_with("field:")
                && let Some(f) = parse_field(line)
            {
                fields.push(f);
            }
        }
        Self {
            tracepoint: tracepoint.to_string(),
            id,
            fields,
        }
    }

    fn lookup(&self, name: &str) -> Result<&Field, TracefsError> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| self.problem(format!("no field `{name}`")))
    }

    fn problem(&self, problem: String) -> TracefsError {
        TracefsError::Field {
            tracepoint: self.tracepoint.clone(),
            problem,
        }
    }

    /// The field `name`, checked to be one of `sizes` bytes long.
    pub fn field(&self, name: &str, sizes: &[u16]) -> Result<&Field, TracefsError> {
        let f = self.lookup(name)?;
        if !sizes.contains(&f.size) {
            let expected: Vec<String> = sizes.iter().map(u16::to_string).collect();
            return Err(self.problem(format!(
                "field `{name}` is {} bytes, expected {}",
                f.size,
                expected.join(" or ")
            )));
        }
        Ok(f)
    }

    /// The offset of field `name`, which must be `size` bytes.
    pub fn offset(&self, name: &str, size: u16) -> Result<u16, TracefsError> {
        Ok(self.field(name, &[size])?.offset)
    }

    /// The offset of field `name`, which must be at least `min_size` bytes
    /// (an array of which the program reads only the start).
    pub fn offset_min(&self, name: &str, min_size: u16) -> Result<u16, TracefsError> {
        let f = self.lookup(name)?;
        if f.size < min_size {
            return Err(self.problem(format!(
                "field `{name}` is {} bytes, expected at least {min_size}",
                f.size
            )));
        }
        Ok(f.offset)
    }
}

/// Part of a record that a program copies in one helper call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Record offset of the copy, a multiple of 8.
    pub base: u16,
    /// Bytes copied.
    pub len: u16,
}

impl Format {
    /// The span of the record that holds `fields`, given as (name, size): a
    /// scalar of exactly that size, or an array of at least that many bytes
    /// (of which only the start is read), and each field's offset in it. The
    /// span starts at a multiple of 8, so that scalars keep their natural
    /// alignment in an 8-aligned copy; it is refused when longer than `max`
    /// or when a scalar is misaligned.
    pub fn span<const N: usize>(
        &self,
        fields: [(&str, u16); N],
        max: u16,
    ) -> Result<(Span, [u16; N]), TracefsError> {
        let mut offsets = [0u16; N];
        let (mut lo, mut hi, mut misaligned) = (u16::MAX, 0, false);
        for (at, (name, size)) in offsets.iter_mut().zip(fields) {
            let f = self.lookup(name)?;
            let array = f.c_type.ends_with(']');
            if (array && f.size < size) || (!array && f.size != size) {
                return Err(self.problem(format!(
                    "field `{name}` is {} bytes, expected {}{size}",
                    f.size,
                    if array { "at least " } else { "" }
                )));
            }
            misaligned |= !array && f.offset % size != 0;
            lo = lo.min(f.offset);
            hi = hi.max(f.offset + size);
            *at = f.offset;
        }
        let base = lo & !7;
        let len = hi.saturating_sub(base);
        if len > max || misaligned {
            return Err(self.problem(format!(
                "fields span {len} bytes from offset {base} (at most {max}, naturally aligned, are supported)"
            )));
        }
        Ok((Span { base, len }, offsets.map(|o| o - base)))
    }
}

/// `field:unsigned int nr_sector; offset:24; size:4; signed:0;` (tab-separated)
fn parse_field(line: &str) -> Option<Field> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once(':')?;
        match k.trim() {
            "field" => decl = Some(v.trim()),
            "offset" => offset = v.trim().parse().ok(),
            "size" => size = v.trim().parse().ok(),
            "signed" => signed = v.trim() == "1",
            _ => {}
        }
    }
    let (c_type, name) = split_decl(decl?)?;
    Some(Field {
        c_type,
        name,
        offset: offset?,
        size: size?,
        signed,
    })
}

/// Splits `char rwbs[10]` into (`char[10]`, `rwbs`) and `const void * skaddr`
/// into (`const void *`, `skaddr`).
fn split_decl(decl: &str) -> Option<(String, String)> {
    let (decl, array) = match decl.find('[') {
        Some(i) if decl.ends_with(']') => (&decl[..i], &decl[i..]),
        _ => (decl, ""),
    };
    let decl = decl.trim_end();
    let start = decl
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &decl[start..];
    if name.is_empty() {
        return None;
    }
    let c_type = format!("{}{array}", decl[..start].trim_end());
    Some((c_type, name.to_string()))
}

/// The tracefs directory, mounting tracefs when it is not mounted.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    if let Some(p) = find() {
        return Ok(p);
    }
    // Mounted but hidden from us (root-only): mounting again cannot help.
    if let Some(p) = [TRACEFS, DEBUGFS_TRACING]
        .into_iter()
        .find(|p| is_tracefs(p))
    {
        return Err(TracefsError::NotReadable {
            path: p.to_string(),
        });
    }
    let tracefs_err = match mount("nodev", TRACEFS, "tracefs") {
        Ok(()) if has_events(Path::new(TRACEFS)) => return Ok(PathBuf::from(TRACEFS)),
        Ok(()) => io::Error::other("mounted, but it has no events directory"),
        Err(e) => e,
    };
    // Older kernels: debugfs, which mounts tracefs inside itself on first
    // access. EBUSY (debugfs already mounted) is fine if tracing is there.
    let debugfs = mount("debugfs", "/sys/kernel/debug", "debugfs");
    if has_events(Path::new(DEBUGFS_TRACING)) {
        return Ok(PathBuf::from(DEBUGFS_TRACING));
    }
    let debugfs_err = match debugfs {
        Ok(()) => io::Error::other("debugfs mounted, but it has no tracing/events"),
        Err(e) => e,
    };
    let eperm = |e: &io::Error| e.raw_os_error() == Some(libc::EPERM);
    if eperm(&tracefs_err) && eperm(&debugfs_err) {
        return Err(TracefsError::MountNotPermitted { tracefs: TRACEFS });
    }
    Err(TracefsError::NotMounted {
        tracefs: TRACEFS,
        tracefs_err,
        debugfs: DEBUGFS_TRACING,
        debugfs_err,
    })
}

/// The tracefs directory if it is mounted.
pub fn find() -> Option<PathBuf> {
    [TRACEFS, DEBUGFS_TRACING]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| has_events(p))
}

/// Whether `path` is the root of a tracefs mount (statfs magic), readable
/// or not.
fn is_tracefs(path: &str) -> bool {
    const TRACEFS_MAGIC: i64 = 0x7472_6163;
    let Ok(c) = CString::new(path) else {
        return false;
    };
    // SAFETY: statfs writes only into `buf`, a zeroed statfs struct, and
    // reads the NUL-terminated path.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut buf) == 0 && buf.f_type as i64 == TRACEFS_MAGIC
    }
}

fn has_events(dir: &Path) -> bool {
    dir.join("events").is_dir()
}

fn mount(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(io::Error::other);
    let (source, target, fstype) = (c(source)?, c(target)?, c(fstype)?);
    // SAFETY: three valid NUL-terminated strings that outlive the call, no data.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads and parses the format of `category:name` under the tracefs `root`.
pub fn read_format(root: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::PermissionDenied {
            return TracefsError::NotReadable {
                path: path.display().to_string(),
            };
        }
        TracefsError::NoTracepoint {
            category: category.to_string(),
            name: name.to_string(),
            path: path.display().to_string(),
            source,
        }
    })?;
    Ok(Format::parse(&format!("{category}:{name}"), &text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// block:block_rq_issue on Linux 6.18.
    const ISSUE: &str = "name: block_rq_issue
ID: 2104
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int nr_sector;\toffset:24;\tsize:4;\tsigned:0;
\tfield:unsigned int bytes;\toffset:28;\tsize:4;\tsigned:0;
\tfield:unsigned short ioprio;\toffset:32;\tsize:2;\tsigned:0;
\tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;
\tfield:char comm[16];\toffset:44;\tsize:16;\tsigned:0;
\tfield:__data_loc char[] cmd;\toffset:60;\tsize:4;\tsigned:0;

print fmt: \"%d,%d %s %u (%s) %llu + %u %s,%u,%u [%s]\", ((unsigned int) ((REC->dev) >> 20))
";

    /// block:block_rq_issue on Linux 5.4: no ioprio, rwbs at 32 and 8 bytes long.
    const ISSUE_5_4: &str = "name: block_rq_issue
ID: 1163
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int nr_sector;\toffset:24;\tsize:4;\tsigned:0;
\tfield:unsigned int bytes;\toffset:28;\tsize:4;\tsigned:0;
\tfield:char rwbs[8];\toffset:32;\tsize:8;\tsigned:1;
\tfield:char comm[16];\toffset:40;\tsize:16;\tsigned:1;
\tfield:__data_loc char[] cmd;\toffset:56;\tsize:4;\tsigned:1;
";

    #[test]
    fn parses_fields_and_id() {
        let f = Format::parse("block:block_rq_issue", ISSUE);
        assert_eq!(f.id, Some(2104));
        assert_eq!(f.fields.len(), 12);
        let rwbs = f.field("rwbs", &[10]).unwrap();
        assert_eq!((rwbs.offset, rwbs.c_type.as_str()), (34, "char[10]"));
        assert_eq!(f.offset("sector", 8).unwrap(), 16);
        assert_eq!(f.offset("bytes", 4).unwrap(), 28);
        let cmd = f.field("cmd", &[4]).unwrap();
        assert_eq!(cmd.c_type, "__data_loc char[]");
        let pid = f.field("common_pid", &[4]).unwrap();
        assert!(pid.signed);
    }

    #[test]
    fn older_layouts_give_other_offsets() {
        let f = Format::parse("block:block_rq_issue", ISSUE_5_4);
        assert_eq!(f.offset_min("rwbs", 2).unwrap(), 32);
        assert_eq!(f.offset("bytes", 4).unwrap(), 28);
    }

    #[test]
    fn pointer_and_array_declarations() {
        let f = parse_field("field:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;").unwrap();
        assert_eq!(
            (f.c_type.as_str(), f.name.as_str()),
            ("const void *", "skaddr")
        );
        let f = parse_field("field:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;").unwrap();
        assert_eq!(
            (f.c_type.as_str(), f.name.as_str(), f.offset),
            ("__u8[16]", "saddr_v6", 40)
        );
    }

    #[test]
    fn errors_name_the_field_and_tracepoint() {
        let f = Format::parse("block:block_rq_issue", ISSUE);
        let e = f.offset("nope", 4).unwrap_err().to_string();
        assert!(
            e.contains("block:block_rq_issue") && e.contains("`nope`"),
            "{e}"
        );
        let e = f.offset("sector", 4).unwrap_err().to_string();
        assert!(e.contains("8 bytes, expected 4"), "{e}");
        let e = f.offset_min("rwbs", 16).unwrap_err().to_string();
        assert!(e.contains("at least 16"), "{e}");
    }

    #[test]
    fn garbage_is_skipped() {
        let f = Format::parse(
            "x:y",
            "field:\nfield:int;\nfield:int a;\toffset:x;\nnonsense\n",
        );
        assert!(f.fields.is_empty());
        assert_eq!(f.id, None);
    }

    #[test]
    fn this_kernel_has_the_block_fields() {
        // Only where tracefs is readable (root, or a permissive mount).
        let Some(root) = find() else { return };
        let Ok(f) = read_format(&root, "block", "block_rq_complete") else {
            return;
        };
        assert!(f.offset("sector", 8).is_ok());
        assert!(f.offset_min("rwbs", 2).is_ok());
    }
}
