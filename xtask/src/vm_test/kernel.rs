//! Fetching a Debian kernel package (and busybox-static) for the guest's
//! architecture with apt, without touching the host's apt configuration.
//!
//! apt runs with its own state directory under target/vm-test/<arch>/apt
//! (package lists, cache, an empty dpkg status) and its own sources.list
//! naming just the guest's suite and architecture. So it needs no
//! `dpkg --add-architecture`, no root, and never waits for (or holds) the
//! lock of the host's apt, which other tasks may be using at the same time.
//! The host's /etc/apt/apt.conf.d still applies (proxies, mirrors' auth).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{cmd, cross::Arch};

/// The Debian archive key that signs the suites.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// An extracted kernel package and busybox.
pub struct Kernel {
    /// The package's kernel release, e.g. `6.1.0-50-amd64`.
    pub release: String,
    /// The Debian package and version it came from.
    pub package: String,
    /// The bootable image (bzImage on x86_64, Image on arm64).
    pub image: PathBuf,
    /// `lib/modules/<release>`.
    pub modules: PathBuf,
    /// The kernel's build configuration (`boot/config-<release>`).
    pub config: PathBuf,
    /// A static busybox for the guest's init.
    pub busybox: PathBuf,
}

/// Where to fetch from.
pub struct Source<'a> {
    pub arch: Arch,
    /// Debian suite of the kernel, e.g. `bookworm` or `bookworm-backports`.
    pub suite: &'a str,
    pub mirror: &'a str,
}

impl Source<'_> {
    /// The suite busybox comes from: backports has no busybox of its own.
    fn base_suite(&self) -> &str {
        self.suite.strip_suffix("-backports").unwrap_or(self.suite)
    }

    /// The kernel metapackage that depends on the current kernel.
    fn metapackage(&self) -> String {
        format!("linux-image-{}", self.arch.debian())
    }

    fn sources_list(&self) -> String {
        let mut suites = vec![self.base_suite()];
        if self.suite != self.base_suite() {
            suites.push(self.suite);
        }
        suites
            .iter()
            .map(|suite| {
                format!(
                    "deb [arch={} signed-by={KEYRING}] {} {suite} main\n",
                    self.arch.debian(),
                    self.mirror
                )
            })
            .collect()
    }
}

/// Fetches and extracts the kernel and busybox into `dir`, or reuses what
/// an earlier run extracted from the same suite unless `refresh`.
pub fn fetch(source: &Source<'_>, dir: &Path, refresh: bool) -> Result<Kernel> {
    let extracted = dir.join("extracted");
    let stamp = dir.join("fetched");
    let want_stamp = format!("{}\n{}\n", source.suite, source.mirror);
    if !refresh
        && fs::read_to_string(&stamp).is_ok_and(|s| s.starts_with(&want_stamp))
        && let Ok(kernel) = locate(&extracted, &stamp)
    {
        eprintln!(
            "vm-test {}: using the kernel fetched before: {} ({}; --refresh fetches again)",
            source.arch, kernel.package, kernel.release
        );
        return Ok(kernel);
    }
    if !Path::new(KEYRING).exists() {
        bail!(
            "{KEYRING} is missing; install the Debian archive keyring: \
             apt-get install debian-archive-keyring"
        );
    }
    let _ = fs::remove_file(&stamp);
    let apt = Apt::new(&dir.join("apt"), source)?;
    let started = Instant::now();
    eprintln!(
        "vm-test {}: fetching the Debian package lists of {} for {} from {}...",
        source.arch,
        source.suite,
        source.arch.debian(),
        source.mirror
    );
    cmd::run(&mut apt.command("apt-get", &["update"])).context(
        "`apt-get update` for the guest's architecture failed; check network access \
         to the mirror (--mirror URL chooses another)",
    )?;

    // linux-image-arm64 only depends on the real package,
    // linux-image-<release>-arm64, which holds the kernel and its modules.
    let meta = format!("{}/{}", source.metapackage(), source.suite);
    let show = cmd::output(&mut apt.command("apt-cache", &["show", "--no-all-versions", &meta]))
        .with_context(|| format!("{meta} is not in the package lists; try another --suite"))?;
    let package = kernel_dependency(&show)
        .ok_or_else(|| anyhow!("{meta} depends on no linux-image package:\n{show}"))?;
    let busybox = format!("busybox-static/{}", source.base_suite());

    let downloads = dir.join("downloads");
    let _ = fs::remove_dir_all(&downloads);
    fs::create_dir_all(&downloads)
        .with_context(|| format!("cannot create {}", downloads.display()))?;
    eprintln!(
        "vm-test {}: downloading {package} and {busybox} (about 100 MB)...",
        source.arch
    );
    let mut download = apt.command("apt-get", &["download", &package, &busybox]);
    download.current_dir(&downloads);
    cmd::run(&mut download).context("downloading the guest's packages failed")?;

    eprintln!("vm-test {}: extracting...", source.arch);
    let _ = fs::remove_dir_all(&extracted);
    fs::create_dir_all(&extracted)
        .with_context(|| format!("cannot create {}", extracted.display()))?;
    for entry in fs::read_dir(&downloads)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted))
                .with_context(|| format!("cannot extract {}", deb.display()))?;
        }
    }
    let version = cmd::output(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(only_deb(&downloads, "linux-image")?)
            .arg("Version"),
    )?;
    fs::write(
        &stamp,
        format!("{want_stamp}{package} {}\n", version.trim()),
    )
    .with_context(|| format!("cannot write {}", stamp.display()))?;
    let _ = fs::remove_dir_all(&downloads);
    let kernel = locate(&extracted, &stamp)?;
    eprintln!(
        "vm-test {}: fetched {} in {:.0} s",
        source.arch,
        kernel.package,
        started.elapsed().as_secs_f64()
    );
    Ok(kernel)
}

/// The first `linux-image-*` package in an `apt-cache show` Depends line.
fn kernel_dependency(show: &str) -> Option<String> {
    show.lines()
        .find_map(|line| line.strip_prefix("Depends:"))?
        .split([',', '|'])
        .map(|dep| dep.split_whitespace().next().unwrap_or_default())
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_owned)
}

fn only_deb(dir: &Path, prefix: &str) -> Result<PathBuf> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        {
            return Ok(path);
        }
    }
    bail!(
        "apt-get download left no {prefix}*.deb in {}",
        dir.display()
    )
}

/// Finds the kernel image, modules and busybox in an extracted tree.
fn locate(extracted: &Path, stamp: &Path) -> Result<Kernel> {
    let package = fs::read_to_string(stamp)?
        .lines()
        .nth(2)
        .unwrap_or_default()
        .to_owned();
    // Newer packages install to /usr/lib (merged /usr); older ones to /lib.
    let modules_root = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|p| extracted.join(p))
        .find(|p| p.is_dir())
        .ok_or_else(|| anyhow!("no lib/modules in {}", extracted.display()))?;
    let release = fs::read_dir(&modules_root)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| anyhow!("{} is empty", modules_root.display()))?;
    let image = extracted.join("boot").join(format!("vmlinuz-{release}"));
    let config = extracted.join("boot").join(format!("config-{release}"));
    let busybox = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| extracted.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("no busybox in {}", extracted.display()))?;
    for path in [&image, &config] {
        if !path.is_file() {
            bail!("{} is missing from the kernel package", path.display());
        }
    }
    Ok(Kernel {
        modules: modules_root.join(&release),
        release,
        package,
        image,
        config,
        busybox,
    })
}

/// apt with a private state directory (see the module comment).
struct Apt {
    options: Vec<String>,
}

impl Apt {
    fn new(dir: &Path, source: &Source<'_>) -> Result<Self> {
        let lists = dir.join("lists");
        let cache = dir.join("cache");
        for d in [
            lists.join("partial"),
            cache.join("archives").join("partial"),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        // Stands in for the host's sources.list.d and preferences.d.
        let empty = dir.join("empty.d");
        fs::create_dir_all(&empty).with_context(|| format!("cannot create {}", empty.display()))?;
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "")
                .with_context(|| format!("cannot create {}", status.display()))?;
        }
        let sources = dir.join("sources.list");
        fs::write(&sources, source.sources_list())
            .with_context(|| format!("cannot write {}", sources.display()))?;
        let arch = source.arch.debian();
        let path = |p: &Path| p.display().to_string();
        let options = [
            ("Dir::State::Lists", path(&lists)),
            ("Dir::Cache", path(&cache)),
            ("Dir::State::status", path(&status)),
            ("Dir::Etc::SourceList", path(&sources)),
            // No other sources and no pinning from the host.
            ("Dir::Etc::SourceParts", path(&empty)),
            ("Dir::Etc::Preferences", path(&dir.join("preferences"))),
            ("Dir::Etc::PreferencesParts", path(&empty)),
            ("APT::Architecture", arch.into()),
            ("APT::Architectures", arch.into()),
            // As root, apt downloads as the user _apt, who cannot write the
            // private directories; as another user it downloads as itself.
            ("APT::Sandbox::User", "root".into()),
            // Only the Packages lists: no translations, AppStream or Contents
            // that the host's apt.conf.d may ask for.
            ("Acquire::Languages", "none".into()),
            (
                "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled",
                "false".into(),
            ),
            (
                "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled",
                "false".into(),
            ),
            (
                "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled",
                "false".into(),
            ),
            (
                "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled",
                "false".into(),
            ),
            (
                "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled",
                "false".into(),
            ),
        ]
        .into_iter()
        .flat_map(|(key, value)| ["-o".to_owned(), format!("{key}={value}")])
        .collect();
        Ok(Self { options })
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command.args(&self.options).arg("-q").args(args);
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_of_metapackage() {
        let show = "Package: linux-image-arm64\nVersion: 6.12.95-1~bpo12+1\n\
                    Depends: linux-image-6.12.95+deb12-arm64 (= 6.12.95-1~bpo12+1)\n";
        assert_eq!(
            kernel_dependency(show).as_deref(),
            Some("linux-image-6.12.95+deb12-arm64")
        );
        assert_eq!(kernel_dependency("Package: x\n"), None);
    }

    #[test]
    fn sources_for_backports() {
        let source = Source {
            arch: Arch::Aarch64,
            suite: "bookworm-backports",
            mirror: "http://deb.debian.org/debian",
        };
        let list = source.sources_list();
        assert!(list.contains("arm64"), "{list}");
        assert!(list.contains(" bookworm main\n"), "{list}");
        assert!(list.contains(" bookworm-backports main\n"), "{list}");
        assert_eq!(source.metapackage(), "linux-image-arm64");
    }
}
