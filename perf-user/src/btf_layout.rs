//! Kernel struct layouts from raw BTF: the byte offset and size of a named
//! member, and the parameters of a BTF tracepoint.
//!
//! aya has no CO-RE relocations for Rust programs, so programs that read
//! kernel structs directly (tp_btf) get their field offsets from user space
//! as globals. aya's own `Btf` parses the same file but does not expose
//! struct members, so this reads the few parts of the format it needs
//! (linux/btf.h: a header, a type section, a string section).

use std::borrow::Cow;

/// Why a layout could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// Not raw BTF, or cut short.
    #[error("not usable BTF: {0}")]
    Format(Cow<'static, str>),
    /// A struct, member or tracepoint this kernel does not have.
    #[error("the kernel's BTF has no {0}")]
    Missing(String),
    /// It exists, but not in the shape the programs read.
    #[error("the kernel's {what} is not as expected: {why}")]
    Shape {
        /// What was looked at.
        what: String,
        /// What differs.
        why: String,
    },
}

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;

/// The BTF kinds this module looks into (linux/btf.h `BTF_KIND_*`).
pub(crate) mod kind {
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

/// One type record, with where its trailing data starts.
#[derive(Clone, Copy, Debug)]
struct Type {
    name_off: u32,
    kind: u8,
    kind_flag: bool,
    vlen: u16,
    /// `size` or `type`, by kind.
    size_or_type: u32,
    /// Offset of the trailing data in the type section.
    extra: usize,
}

/// A member of a struct: where it is and how wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the struct.
    pub offset: u32,
    /// Size in bytes of the member's type.
    pub size: u32,
}

/// Parsed BTF: type records indexed by id, and the strings.
pub struct Layout {
    data: Vec<u8>,
    types_at: usize,
    strings_at: usize,
    strings_len: usize,
    /// Index 0 is `void`, as type id 0 is.
    types: Vec<Type>,
}

impl Layout {
    /// Parses raw BTF as in /sys/kernel/btf/vmlinux (native byte order).
    pub fn parse(data: Vec<u8>) -> Result<Self, LayoutError> {
        let short = || LayoutError::Format("cut short".into());
        let u32_at = |at: usize| -> Result<u32, LayoutError> {
            let b = data.get(at..at + 4).ok_or_else(short)?;
            Ok(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let magic = data.get(0..2).ok_or_else(short)?;
        if u16::from_ne_bytes([magic[0], magic[1]]) != MAGIC {
            return Err(LayoutError::Format(
                "no BTF magic (or another byte order)".into(),
            ));
        }
        let hdr_len = u32_at(4)? as usize;
        if hdr_len < HEADER_LEN {
            return Err(LayoutError::Format("header too short".into()));
        }
        let types_at = hdr_len + u32_at(8)? as usize;
        let types_len = u32_at(12)? as usize;
        let strings_at = hdr_len + u32_at(16)? as usize;
        let strings_len = u32_at(20)? as usize;
        if data.len() < types_at + types_len || data.len() < strings_at + strings_len {
            return Err(short());
        }
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            vlen: 0,
            size_or_type: 0,
            extra: 0,
        }];
        let mut at = 0;
        while at < types_len {
            let word = |i: usize| u32_at(types_at + at + 4 * i);
            let info = word(1)?;
            let ty = Type {
                name_off: word(0)?,
                kind: ((info >> 24) & 0x1f) as u8,
                kind_flag: info >> 31 == 1,
                vlen: (info & 0xffff) as u16,
                size_or_type: word(2)?,
                extra: at + TYPE_LEN,
            };
            let vlen = usize::from(ty.vlen);
            let extra = match ty.kind {
                kind::INT | kind::VAR | kind::DECL_TAG => 4,
                kind::ARRAY => 12,
                kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
                kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
                0 | 20.. => {
                    return Err(LayoutError::Format(
                        format!("unknown type kind {}", ty.kind).into(),
                    ));
                }
                _ => 0,
            };
            types.push(ty);
            at += TYPE_LEN + extra;
        }
        if at != types_len {
            return Err(short());
        }
        Ok(Self {
            data,
            types_at,
            strings_at,
            strings_len,
            types,
        })
    }

    fn word(&self, at: usize) -> u32 {
        let at = self.types_at + at;
        let b = &self.data[at..at + 4];
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }

    fn name(&self, off: u32) -> &str {
        let off = off as usize;
        if off >= self.strings_len {
            return "";
        }
        let s = &self.data[self.strings_at + off..self.strings_at + self.strings_len];
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize).filter(|_| id != 0)
    }

    /// The first type named `name` of kind `k` (the kernel's own names are unique per kind).
    fn find(&self, name: &str, k: u8) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == k && t.name_off != 0 && self.name(t.name_off) == name)
            .map(|i| i as u32)
    }

    /// `id` without typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<(u32, &Type)> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some((id, t)),
            }
        }
        None
    }

    /// Size in bytes of type `id` (pointers are 8: 64-bit kernels only).
    fn size(&self, id: u32) -> Option<u32> {
        let (_, t) = self.resolve(id)?;
        match t.kind {
            kind::INT | kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 | kind::FLOAT => {
                Some(t.size_or_type)
            }
            kind::PTR => Some(8),
            kind::ARRAY => {
                let elem = self.word(t.extra);
                let n = self.word(t.extra + 8);
                self.size(elem)?.checked_mul(n)
            }
            _ => None,
        }
    }

    /// Member `field` of `strukt` at `base`, and its type id, looking into
    /// anonymous struct and union members too. Bitfields are not members a
    /// program can load on its own, so they do not match.
    fn find_member(
        &self,
        strukt: &Type,
        base: u32,
        field: &str,
        depth: u8,
    ) -> Option<(Member, u32)> {
        if depth > 8 {
            return None;
        }
        for i in 0..usize::from(strukt.vlen) {
            let at = strukt.extra + 12 * i;
            let (name_off, type_id, raw_off) =
                (self.word(at), self.word(at + 4), self.word(at + 8));
            let (bit_off, bitfield) = if strukt.kind_flag {
                (raw_off & 0xff_ffff, raw_off >> 24 != 0)
            } else {
                (raw_off, false)
            };
            if bit_off % 8 != 0 {
                continue;
            }
            let offset = base + bit_off / 8;
            if name_off == 0 {
                if let Some(inner) = self.aggregate(type_id)
                    && let Some(m) = self.find_member(&inner, offset, field, depth + 1)
                {
                    return Some(m);
                }
                continue;
            }
            if !bitfield && self.name(name_off) == field {
                let size = self.size(type_id)?;
                return Some((Member { offset, size }, type_id));
            }
        }
        None
    }

    /// Type `id` when it is a struct or a union.
    fn aggregate(&self, id: u32) -> Option<Type> {
        self.resolve(id)
            .map(|(_, t)| *t)
            .filter(|t| matches!(t.kind, kind::STRUCT | kind::UNION))
    }

    /// Where `path` is in `struct strukt`: a member's name, or members of
    /// members joined by dots (`__sk_common.skc_family`).
    pub fn member(&self, strukt: &str, path: &str) -> Result<Member, LayoutError> {
        let id = self
            .find(strukt, kind::STRUCT)
            .ok_or_else(|| LayoutError::Missing(format!("struct {strukt}")))?;
        let missing = || LayoutError::Missing(format!("member {path} in struct {strukt}"));
        let mut t = self.types[id as usize];
        let mut base = 0;
        let mut parts = path.split('.').peekable();
        while let Some(field) = parts.next() {
            let (m, type_id) = self.find_member(&t, base, field, 0).ok_or_else(missing)?;
            if parts.peek().is_none() {
                return Ok(m);
            }
            t = self.aggregate(type_id).ok_or_else(missing)?;
            base = m.offset;
        }
        Err(missing())
    }

    /// Like [`Self::member`], and the member must be `size` bytes wide.
    pub fn member_sized(&self, strukt: &str, path: &str, size: u32) -> Result<Member, LayoutError> {
        let m = self.member(strukt, path)?;
        if m.size != size {
            return Err(LayoutError::Shape {
                what: format!("struct {strukt}.{path}"),
                why: format!("{} bytes wide, the program reads {size}", m.size),
            });
        }
        Ok(m)
    }

    /// The parameters of BTF tracepoint `name` after the hidden context
    /// pointer, each as a short description: `*struct NAME` for a pointer
    /// to a struct, `uN` for an integer of N bytes, `?` otherwise.
    pub fn tracepoint_params(&self, name: &str) -> Result<Vec<String>, LayoutError> {
        let typedef = format!("btf_trace_{name}");
        let missing = || LayoutError::Missing(format!("tracepoint {name} ({typedef})"));
        let id = self.find(&typedef, kind::TYPEDEF).ok_or_else(missing)?;
        let (_, ptr) = self.resolve(id).ok_or_else(missing)?;
        let proto = (ptr.kind == kind::PTR)
            .then(|| self.resolve(ptr.size_or_type))
            .flatten()
            .filter(|(_, t)| t.kind == kind::FUNC_PROTO)
            .map(|(_, t)| *t)
            .ok_or_else(missing)?;
        let params = (0..usize::from(proto.vlen))
            .skip(1)
            .map(|i| self.describe(self.word(proto.extra + 8 * i + 4)))
            .collect();
        Ok(params)
    }

    fn describe(&self, id: u32) -> String {
        match self.resolve(id) {
            Some((_, t)) if t.kind == kind::PTR => match self.resolve(t.size_or_type) {
                Some((_, s)) if s.kind == kind::STRUCT => {
                    format!("*struct {}", self.name(s.name_off))
                }
                _ => "*?".into(),
            },
            Some((_, t)) if matches!(t.kind, kind::INT | kind::ENUM) => {
                format!("u{}", t.size_or_type)
            }
            _ => "?".into(),
        }
    }
}

/// Builds raw BTF for tests: types are added as (name, kind, vlen, size or
/// type, trailing words).
#[cfg(test)]
pub(crate) mod build {
    pub(crate) use super::kind;

    /// A BTF blob under construction.
    #[derive(Default)]
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        pub fn name(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        /// Adds a type; returns its id.
        pub fn add(
            &mut self,
            name: &str,
            kind: u8,
            flag: bool,
            vlen: u16,
            st: u32,
            extra: &[u32],
        ) -> u32 {
            let name = self.name(name);
            let info = (u32::from(kind) << 24) | u32::from(vlen) | (u32::from(flag) << 31);
            for w in [name, info, st].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_ne_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        pub fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&super::MAGIC.to_ne_bytes());
            out.extend_from_slice(&[1, 0]);
            let words = [
                super::HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ];
            for w in words {
                out.extend_from_slice(&w.to_ne_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{build::Builder, kind::*, *};

    /// struct request { sector_t __sector; union { u32 a; u32 b; }; u32 bits:3;
    /// unsigned int len; struct q *q; struct common { u64 pad; u32 fam; } c; }
    fn sample() -> Layout {
        let mut b = Builder::new();
        let u32_t = b.add("unsigned int", INT, false, 0, 4, &[32]); // 1
        let u64_t = b.add("u64", INT, false, 0, 8, &[64]); // 2
        let td = b.add("sector_t", TYPEDEF, false, 0, u64_t, &[]); // 3
        let (na, nb) = (b.name("a"), b.name("b"));
        let un = b.add("", UNION, false, 2, 4, &[na, u32_t, 0, nb, u32_t, 0]); // 4
        let q = b.add("q", STRUCT, false, 0, 0, &[]); // 5
        let pq = b.add("", PTR, false, 0, q, &[]); // 6
        let (npad, nfam) = (b.name("pad"), b.name("fam"));
        let common = b.add(
            "common",
            STRUCT,
            false,
            2,
            16,
            &[npad, u64_t, 0, nfam, u32_t, 64],
        ); // 7
        let names = ["__sector", "", "bits", "len", "q", "c"].map(|n| b.name(n));
        #[rustfmt::skip]
        let members = [
            names[0], td, 0,
            names[1], un, 64,
            names[2], u32_t, (3 << 24) | 96,
            names[3], u32_t, 128,
            names[4], pq, 192,
            names[5], common, 256,
        ];
        let req = b.add("request", STRUCT, true, 6, 48, &members); // 8
        let preq = b.add("", PTR, false, 0, req, &[]);
        let void_ptr = b.add("", PTR, false, 0, 0, &[]);
        let params = [0, void_ptr, b.name("rq"), preq, b.name("n"), u32_t];
        let proto = b.add("", FUNC_PROTO, false, 3, 0, &params);
        let pproto = b.add("", PTR, false, 0, proto, &[]);
        b.add(
            "btf_trace_block_rq_complete",
            TYPEDEF,
            false,
            0,
            pproto,
            &[],
        );
        Layout::parse(b.finish()).unwrap()
    }

    #[test]
    fn members_through_typedefs_and_anonymous_unions() {
        let l = sample();
        let m = |f| l.member("request", f);
        assert_eq!(m("__sector"), Ok(Member { offset: 0, size: 8 }));
        assert_eq!(m("b"), Ok(Member { offset: 8, size: 4 }));
        assert_eq!(
            m("len"),
            Ok(Member {
                offset: 16,
                size: 4
            })
        );
        assert_eq!(
            m("q"),
            Ok(Member {
                offset: 24,
                size: 8
            })
        );
        assert!(
            matches!(m("bits"), Err(LayoutError::Missing(_))),
            "a bitfield"
        );
        assert!(matches!(
            l.member("gendisk", "major"),
            Err(LayoutError::Missing(_))
        ));
        let e = l.member_sized("request", "len", 8).unwrap_err();
        assert!(e.to_string().contains("4 bytes wide"), "{e}");
    }

    #[test]
    fn tracepoint_parameters() {
        let l = sample();
        assert_eq!(
            l.tracepoint_params("block_rq_complete").unwrap(),
            ["*struct request", "u4"]
        );
        let e = l.tracepoint_params("block_rq_issue").unwrap_err();
        assert!(e.to_string().contains("btf_trace_block_rq_issue"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Layout::parse(Vec::new()).is_err());
        assert!(Layout::parse(vec![0; 64]).is_err());
        let mut blob = Builder::new();
        blob.add("x", INT, false, 0, 4, &[32]);
        let mut data = blob.finish();
        data.truncate(30);
        assert!(Layout::parse(data).is_err());
    }
}
