//! Block device names: `/sys/class/block/*/dev` gives `major:minor`, which the
//! block tracepoints carry as the kernel's internal dev_t, `(major << 20) | minor`.

use std::{collections::HashMap, fs, path::Path};

/// Where the kernel lists block devices and partitions.
pub const SYS_CLASS_BLOCK: &str = "/sys/class/block";

/// The kernel's internal dev_t (MINORBITS = 20), as in the tracepoint records.
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xF_FFFF)
}

/// `(major, minor)` of a kernel dev_t.
pub const fn major_minor(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xF_FFFF)
}

/// Why a device name could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BlockDevError {
    /// No such device.
    #[error(
        "no block device named {0:?}; names are as in /sys/class/block or `lsblk` (e.g. vda, sda, nvme0n1, loop0)"
    )]
    NotFound(String),
    /// The `dev` file was unreadable or malformed.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A device picked by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The kernel dev_t that requests to it carry.
    pub dev: u32,
    /// Its name (the whole disk's, when a partition was given).
    pub name: String,
    /// Set when a partition was given: requests are traced per whole disk.
    pub partition_of: Option<String>,
}

/// Parses the contents of a `dev` file, `"254:0\n"`.
pub fn parse_dev(text: &str) -> Option<u32> {
    let (major, minor) = text.trim().split_once(':')?;
    Some(kernel_dev(major.parse().ok()?, minor.parse().ok()?))
}

/// All block devices and partitions: dev_t → name.
pub fn names() -> HashMap<u32, String> {
    names_in(Path::new(SYS_CLASS_BLOCK))
}

fn names_in(root: &Path) -> HashMap<u32, String> {
    let Ok(dir) = fs::read_dir(root) else {
        return HashMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dev = parse_dev(&fs::read_to_string(e.path().join("dev")).ok()?)?;
            Some((dev, name))
        })
        .collect()
}

/// The name to show for `dev`: its name, or `major:minor` when unknown
/// (e.g. a device removed while tracing).
pub fn display_name(names: &HashMap<u32, String>, dev: u32) -> String {
    names.get(&dev).cloned().unwrap_or_else(|| {
        let (major, minor) = major_minor(dev);
        format!("{major}:{minor}")
    })
}

/// Looks up `name` (or `/dev/name`); a partition resolves to its disk,
/// since the request tracepoints name the disk.
pub fn resolve(name: &str) -> Result<Resolved, BlockDevError> {
    resolve_in(Path::new(SYS_CLASS_BLOCK), name)
}

fn resolve_in(root: &Path, name: &str) -> Result<Resolved, BlockDevError> {
    let name = name.strip_prefix("/dev/").unwrap_or(name);
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(BlockDevError::NotFound(name.to_string()));
    }
    let dir = root.join(name);
    if !dir.exists() {
        return Err(BlockDevError::NotFound(name.to_string()));
    }
    let (dir, disk, partition_of) = if dir.join("partition").exists() {
        // /sys/class/block/vda1 links into .../block/vda/vda1: the parent is the disk.
        let real = fs::canonicalize(&dir).map_err(|e| BlockDevError::Unreadable {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let parent = real.parent().map(Path::to_path_buf).unwrap_or(real);
        let disk = parent
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (parent, disk, Some(name.to_string()))
    } else {
        (dir, name.to_string(), None)
    };
    let path = dir.join("dev");
    let text = fs::read_to_string(&path).map_err(|e| BlockDevError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let dev = parse_dev(&text).ok_or_else(|| BlockDevError::Unreadable {
        path: path.display().to_string(),
        reason: format!("expected major:minor, found {:?}", text.trim()),
    })?;
    Ok(Resolved {
        dev,
        name: disk,
        partition_of,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_t_encoding() {
        assert_eq!(kernel_dev(254, 0), 254 << 20);
        assert_eq!(kernel_dev(7, 3), (7 << 20) | 3);
        assert_eq!(major_minor(kernel_dev(259, 65_537)), (259, 65_537));
        assert_eq!(parse_dev("254:16\n"), Some(kernel_dev(254, 16)));
        assert_eq!(parse_dev("nonsense"), None);
    }

    #[test]
    fn resolves_disks_and_partitions() {
        let root = std::env::temp_dir().join(format!("perf-user-blockdev-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let disk = root.join("devices/vdz");
        fs::create_dir_all(disk.join("vdz1")).unwrap();
        fs::write(disk.join("dev"), "254:0\n").unwrap();
        fs::write(disk.join("vdz1/dev"), "254:1\n").unwrap();
        fs::write(disk.join("vdz1/partition"), "1\n").unwrap();
        let class = root.join("class");
        fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(&disk, class.join("vdz")).unwrap();
        std::os::unix::fs::symlink(disk.join("vdz1"), class.join("vdz1")).unwrap();

        let r = resolve_in(&class, "/dev/vdz").unwrap();
        assert_eq!(
            (r.dev, r.name.as_str(), r.partition_of),
            (254 << 20, "vdz", None)
        );
        let r = resolve_in(&class, "vdz1").unwrap();
        assert_eq!(r.dev, 254 << 20);
        assert_eq!(r.partition_of.as_deref(), Some("vdz1"));
        assert!(matches!(
            resolve_in(&class, "sdq"),
            Err(BlockDevError::NotFound(_))
        ));
        assert!(matches!(
            resolve_in(&class, "../x"),
            Err(BlockDevError::NotFound(_))
        ));

        let names = names_in(&class);
        assert_eq!(display_name(&names, 254 << 20), "vdz");
        assert_eq!(display_name(&names, kernel_dev(8, 3)), "8:3");
        fs::remove_dir_all(&root).unwrap();
    }
}
