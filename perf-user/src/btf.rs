//! Kernel BTF: where it comes from, and who needs it.
//!
//! No collector needs the kernel's BTF: the CPU sampler is a perf-event
//! program, block and TCP latency can use classic tracepoints (field
//! offsets from tracefs), leaks uses uprobes, and aya has no CO-RE
//! relocations for Rust programs. So perf-user runs on kernels built without
//! CONFIG_DEBUG_INFO_BTF (Raspberry Pi OS kernels, many embedded ones).
//! Block and TCP latency use it when the kernel has it: their BTF tracepoint
//! programs cost less than the classic ones they fall back to
//! (`collectors::tracepoints`, which reads struct offsets with `btf_layout`).
//!
//! aya's `EbpfLoader::new()` parses /sys/kernel/btf/vmlinux when it exists
//! and silently goes without it otherwise; [`crate::ebpf::load`] replaces
//! that with [`for_loader`], so what the loader gets is explicit: the file
//! given with `--btf`, or nothing. BTF tracepoints attach by the running
//! kernel's own type ids and need a kernel that has BTF to verify them, so
//! they use [`sysfs_btf`] and [`sysfs_layout`], never a `--btf` file.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use aya::{Btf, Endianness};

use crate::btf_layout::Layout;

/// Where the running kernel publishes its BTF.
pub const SYSFS_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The `--btf FILE` BTF, parsed once at start-up.
static BTF_FILE: OnceLock<(PathBuf, Btf)> = OnceLock::new();

/// Why the `--btf` file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// `--btf FILE` cannot be read or parsed.
    #[error(
        "--btf {}: {source}; give the BTF of the running kernel (a raw BTF file as in \
         /sys/kernel/btf/vmlinux, or an ELF vmlinux with a .BTF section)",
        path.display()
    )]
    File {
        /// The file.
        path: PathBuf,
        /// What aya said.
        #[source]
        source: aya::BtfError,
    },
    /// `--btf FILE` is a directory, device or FIFO.
    #[error("--btf {}: not a regular file; give a BTF file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
}

/// Uses the BTF in `path` for every later load (`--btf FILE`). Parses it now,
/// so that a wrong file is reported at start-up, not after a collection.
/// The first call wins; later ones are ignored.
pub fn use_file(path: &Path) -> Result<(), BtfError> {
    // /dev/zero would be read until memory runs out, a FIFO waited on forever.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(BtfError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let btf = Btf::parse_file(path, Endianness::default()).map_err(|source| BtfError::File {
        path: path.to_path_buf(),
        source,
    })?;
    let _ = BTF_FILE.set((path.to_path_buf(), btf));
    Ok(())
}

/// The `--btf` file in use, if any.
pub fn file() -> Option<&'static Path> {
    BTF_FILE.get().map(|(path, _)| path.as_path())
}

/// What [`crate::ebpf::load`] hands `EbpfLoader::btf`: the `--btf` file's
/// BTF, or `None`, never an implicit read of sysfs.
pub fn for_loader() -> Option<&'static Btf> {
    BTF_FILE.get().map(|(_, btf)| btf)
}

/// The running kernel's BTF, parsed for the struct layouts the BTF
/// tracepoint programs read; the error says why there is none.
pub fn sysfs_layout() -> Result<Layout, String> {
    let data = std::fs::read(SYSFS_BTF).map_err(|e| {
        format!("{SYSFS_BTF}: {e} (the kernel was built without CONFIG_DEBUG_INFO_BTF)")
    })?;
    Layout::parse(data).map_err(|e| e.to_string())
}

/// The running kernel's BTF as aya loads BTF tracepoints with it.
pub fn sysfs_btf() -> Result<Btf, String> {
    Btf::from_sys_fs().map_err(|e| format!("{SYSFS_BTF}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_file_is_an_error_naming_it() {
        let path = std::env::temp_dir().join(format!("perf-user-btf-{}", std::process::id()));
        std::fs::write(&path, b"not BTF").unwrap();
        let err = use_file(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        assert!(file().is_none());
    }
}
