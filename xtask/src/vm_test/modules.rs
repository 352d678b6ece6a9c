//! The kernel modules the guest needs (Debian builds the virtio block
//! driver, and on x86_64 virtio-pci itself, as modules), with their
//! dependencies, in load order, decompressed.
//!
//! The Debian package has no modules.dep (depmod writes it on install), so
//! dependencies come from each module's own `.modinfo` section
//! (`depends=a,b`), which is what depmod reads too. Modules are decompressed
//! here rather than in the guest because busybox's insmod passes the file to
//! init_module() as it is, and not every kernel can decompress in-kernel.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};
use object::{Object as _, ObjectSection as _};

use crate::cmd;

/// One module to load, its dependencies before it.
pub struct Module {
    /// Name as the kernel knows it (underscores), e.g. `virtio_blk`.
    pub name: String,
    /// The uncompressed .ko file.
    pub data: Vec<u8>,
}

/// Module name of a file name: `virtio-blk.ko.xz` → `virtio_blk`.
fn module_name(file_name: &str) -> Option<String> {
    let stem = file_name.split_once(".ko").map(|(stem, _)| stem)?;
    let rest = &file_name[stem.len()..];
    matches!(rest, ".ko" | ".ko.xz" | ".ko.zst" | ".ko.gz").then(|| stem.replace('-', "_"))
}

/// Resolves `wanted` (with dependencies) in `modules_dir`
/// (`lib/modules/<version>`). Modules built into the kernel
/// (`modules.builtin`) are left out: they need no loading.
pub fn resolve(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>> {
    let builtin = fs::read_to_string(modules_dir.join("modules.builtin"))
        .with_context(|| {
            format!(
                "cannot read {}/modules.builtin; is this an extracted Debian kernel package?",
                modules_dir.display()
            )
        })?
        .lines()
        .filter_map(|line| line.rsplit('/').next().and_then(module_name))
        .collect::<HashSet<_>>();
    let mut files = BTreeMap::new();
    index(&modules_dir.join("kernel"), &mut files)?;

    let mut resolver = Resolver {
        builtin,
        files,
        done: HashSet::new(),
        order: Vec::new(),
    };
    for name in wanted {
        resolver.visit(&name.replace('-', "_"), &mut Vec::new())?;
    }
    Ok(resolver.order)
}

/// Every module file under `dir`, by module name.
fn index(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index(&path, files)?;
        } else if let Some(name) = module_name(&entry.file_name().to_string_lossy()) {
            files.insert(name, path);
        }
    }
    Ok(())
}

struct Resolver {
    builtin: HashSet<String>,
    files: BTreeMap<String, PathBuf>,
    done: HashSet<String>,
    order: Vec<Module>,
}

impl Resolver {
    /// Depth first: dependencies are pushed before the module.
    fn visit(&mut self, name: &str, stack: &mut Vec<String>) -> Result<()> {
        if self.done.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            bail!("module dependency cycle: {} -> {name}", stack.join(" -> "));
        }
        let path = self.files.get(name).ok_or_else(|| {
            anyhow!(
                "kernel module {name} is neither built in nor in the package{}; \
                 this kernel cannot run the guest",
                if stack.is_empty() {
                    String::new()
                } else {
                    format!(" (needed by {})", stack.join(" <- "))
                }
            )
        })?;
        let data = decompress(path)?;
        let depends = depends(&data).with_context(|| format!("reading {}", path.display()))?;
        stack.push(name.to_owned());
        for dep in depends {
            self.visit(&dep, stack)?;
        }
        stack.pop();
        self.done.insert(name.to_owned());
        self.order.push(Module {
            name: name.to_owned(),
            data,
        });
        Ok(())
    }
}

/// The module file's contents, decompressed with the matching tool.
fn decompress(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    };
    let out = cmd::capture(Command::new(tool).arg("-dc").arg(path))?;
    if !out.status.success() {
        bail!(
            "`{tool} -dc {}` failed ({}): {}",
            path.display(),
            cmd::describe(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The `depends=` list of a module's `.modinfo` section.
fn depends(module: &[u8]) -> Result<Vec<String>> {
    let file = object::File::parse(module).context("not an ELF file")?;
    let modinfo = file
        .section_by_name(".modinfo")
        .ok_or_else(|| anyhow!("no .modinfo section"))?
        .data()?;
    Ok(modinfo
        .split(|&b| b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| list.split(|&b| b == b','))
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).replace('-', "_"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(module_name("virtio_blk.ko").as_deref(), Some("virtio_blk"));
        assert_eq!(
            module_name("virtio-pci-modern-dev.ko.xz").as_deref(),
            Some("virtio_pci_modern_dev")
        );
        assert_eq!(module_name("modules.order"), None);
        assert_eq!(module_name("x.kobject"), None);
    }
}
