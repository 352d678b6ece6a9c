//! A writer of the cpio "newc" archives the kernel unpacks as its initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst), so that
//! building one needs neither the cpio tool nor root (device nodes are
//! written as archive entries, not created on the host).
//!
//! The archive is not compressed: the kernel reads it from memory, and
//! compressing tens of MiB costs more build time than the guest saves.

use std::collections::BTreeSet;

/// File type bits of `st_mode`.
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// An archive being built in memory.
#[derive(Default)]
pub struct Archive {
    out: Vec<u8>,
    next_inode: u32,
    /// Directories already written, so that parents are written once.
    dirs: BTreeSet<String>,
}

impl Archive {
    pub fn new() -> Self {
        Self {
            next_inode: 1,
            ..Self::default()
        }
    }

    /// A directory (and its missing parents), mode 0755.
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_owned());
        self.entry(path, S_IFDIR | 0o755, (0, 0), b"");
    }

    /// A regular file with permission bits `perm` (e.g. 0o755).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.parent(path);
        self.entry(path, S_IFREG | perm, (0, 0), data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parent(path);
        self.entry(path, S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    /// A character device node, e.g. /dev/console (5, 1): the kernel opens
    /// it for init's standard streams before anything mounts devtmpfs.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.parent(path);
        self.entry(path, S_IFCHR | perm, (major, minor), b"");
    }

    /// The archive, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), b"");
        self.out
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.trim_matches('/').rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let name = path.trim_start_matches('/');
        let inode = if mode == 0 { 0 } else { self.next_inode };
        self.next_inode += 1;
        let nlink = if mode & S_IFMT == S_IFDIR { 2 } else { 1 };
        let size = u32::try_from(data.len()).expect("initramfs files are smaller than 4 GiB");
        let namesize = u32::try_from(name.len() + 1).expect("short file names");
        let fields = [
            inode, mode, 0, // uid
            0, // gid
            nlink, 0, // mtime: 0, so that the same inputs give the same archive
            size, 0, // devmajor
            0, // devminor
            rdev.0, rdev.1, namesize, 0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    /// Header+name and data each end on a 4-byte boundary.
    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits an archive back into (name, mode, rdev major, data) entries.
    fn parse(mut bytes: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut offset = 0;
        loop {
            assert_eq!(&bytes[..6], b"070701", "magic at offset {offset}");
            let field = |i: usize| {
                let hex = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
                usize::from_str_radix(hex, 16).unwrap()
            };
            let (mode, size, rmajor, namesize) = (field(1), field(6), field(9), field(11));
            let name = std::str::from_utf8(&bytes[110..110 + namesize - 1])
                .unwrap()
                .to_owned();
            let data_start = (110 + namesize).next_multiple_of(4);
            let data = bytes[data_start..data_start + size].to_vec();
            let next = (data_start + size).next_multiple_of(4);
            offset += next;
            bytes = &bytes[next..];
            if name == "TRAILER!!!" {
                assert!(bytes.is_empty());
                return entries;
            }
            entries.push((name, mode as u32, rmajor as u32, data));
        }
    }

    #[test]
    fn round_trip() {
        let mut archive = Archive::new();
        archive.file("/bin/busybox", 0o755, b"ELF...");
        archive.symlink("bin/sh", "busybox");
        archive.char_device("dev/console", 0o600, 5, 1);
        archive.dir("bin");
        archive.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = archive.finish();
        assert!(bytes.len().is_multiple_of(4));
        let entries = parse(&bytes);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "init"]
        );
        assert_eq!(entries[1].1, S_IFREG | 0o755);
        assert_eq!(entries[1].3, b"ELF...");
        assert_eq!(entries[2].3, b"busybox");
        assert_eq!((entries[4].1, entries[4].2), (S_IFCHR | 0o600, 5));
    }
}
