//! Which cgroup, container and systemd unit a process belongs to, from
//! `/proc/PID/cgroup`: the labels that let metrics and profiles be sliced
//! the way node agents and kube-state-metrics slice them.
//!
//! The file is the kernel's, but the path in it is made of directory names
//! that any user with a delegated cgroup subtree chooses: it is parsed as
//! untrusted text (any bytes, any length, newlines inside names).

use std::{fs, io::Read as _};

/// Most bytes of `/proc/PID/cgroup` read: a v1 host has a dozen lines.
const MAX_FILE: u64 = 64 * 1024;

/// Length of the container ids docker, containerd, CRI-O and podman use.
const ID_LEN: usize = 64;

/// The labels of one process. Empty strings when there is no such thing
/// (a host process has no container id; the root cgroup has no unit).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupLabels {
    /// The cgroup v2 path (`/system.slice/nginx.service`); on a host with
    /// only cgroup v1, the `name=systemd` hierarchy's path.
    pub cgroup: String,
    /// `containerd://<64 hex>`, `docker://…`, `cri-o://…` (as kube-state-metrics
    /// writes `container_id`) or `podman://…`.
    pub container_id: String,
    /// The last `*.service` or `*.scope` component of the path.
    pub unit: String,
}

impl CgroupLabels {
    /// The labels for a cgroup path.
    pub fn from_path(path: &str) -> Self {
        Self {
            cgroup: path.to_string(),
            container_id: container_id(path).unwrap_or_default(),
            unit: unit(path).unwrap_or_default().to_string(),
        }
    }
}

/// Reads and parses `/proc/PID/cgroup`.
pub fn read(pid: u32) -> std::io::Result<CgroupLabels> {
    let mut bytes = Vec::new();
    fs::File::open(format!("/proc/{pid}/cgroup"))?
        .take(MAX_FILE)
        .read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    parse(&text)
        .map(CgroupLabels::from_path)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no cgroup path"))
}

/// The path of the process's cgroup in the text of `/proc/PID/cgroup`: the
/// v2 line (`0::PATH`), else v1's `name=systemd` line. Lines are
/// `ID:CONTROLLERS:PATH`; the path, last, may itself contain ':'.
pub fn parse(text: &str) -> Option<&str> {
    let mut systemd = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            return Some(path);
        }
        if controllers.split(',').any(|c| c == "name=systemd") {
            systemd.get_or_insert(path);
        }
    }
    systemd
}

/// True for 64 lowercase hex digits.
fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container id in a cgroup path, with its runtime's prefix: the
/// innermost component that names a container, so that a container nested
/// in another (docker in docker) is named.
///
/// Patterns: systemd cgroup driver `docker-ID.scope`,
/// `cri-containerd-ID.scope`, `crio-ID.scope`, `libpod-ID.scope`; cgroupfs
/// driver `/docker/ID`, and `/kubepods/…/podUID/ID` (runtime not in the
/// path: containerd, Kubernetes' default runtime). Conmon's scopes
/// (`crio-conmon-ID`, `libpod-conmon-ID`) are the runtime's monitor, not the
/// container, and name none.
pub fn container_id(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate().rev() {
        if let Some(rest) = part.strip_suffix(".scope") {
            for (prefix, runtime) in [
                ("docker-", "docker"),
                ("cri-containerd-", "containerd"),
                ("crio-", "cri-o"),
                ("libpod-", "podman"),
            ] {
                if let Some(id) = rest.strip_prefix(prefix)
                    && is_id(id)
                {
                    return Some(format!("{runtime}://{id}"));
                }
            }
        }
        if is_id(part) && i > 0 {
            let parent = parts[i - 1];
            if parent == "docker" {
                return Some(format!("docker://{part}"));
            }
            if parent.starts_with("pod") && parts[..i].iter().any(|p| p.starts_with("kubepods")) {
                return Some(format!("containerd://{part}"));
            }
        }
    }
    None
}

/// The systemd unit: the last path component that ends in `.service` or
/// `.scope` (with something before the suffix).
pub fn unit(path: &str) -> Option<&str> {
    path.split('/').rev().find(|p| {
        [".service", ".scope"]
            .iter()
            .any(|s| p.len() > s.len() && p.ends_with(s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2a8c1e9b7d6a5f3e2d1c0b9a8f7e6d5c4b3a29180716f5e4d3c2b1a0f9e8d7";

    #[test]
    fn v2_line_wins_and_v1_systemd_is_the_fallback() {
        assert_eq!(
            parse("0::/system.slice/sshd.service\n"),
            Some("/system.slice/sshd.service")
        );
        let hybrid = "12:cpu,cpuacct:/x\n1:name=systemd:/user.slice/session-3.scope\n0::/user.slice/user-0.slice/session-3.scope\n";
        assert_eq!(
            parse(hybrid),
            Some("/user.slice/user-0.slice/session-3.scope")
        );
        let v1 = "12:cpu,cpuacct:/x\n1:name=systemd:/system.slice/cron.service\n";
        assert_eq!(parse(v1), Some("/system.slice/cron.service"));
        // A path with ':' in a directory name.
        assert_eq!(parse("0::/a:b/c\n"), Some("/a:b/c"));
        assert_eq!(parse(""), None);
        assert_eq!(parse("garbage\n0:cpu\n"), None);
    }

    #[test]
    fn container_ids_of_each_runtime() {
        let cases = [
            (
                format!("/system.slice/docker-{ID}.scope"),
                format!("docker://{ID}"),
            ),
            (format!("/docker/{ID}"), format!("docker://{ID}")),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d9c8b7a_6f5e_4d3c_2b1a_0f9e8d7c6b5a.slice/cri-containerd-{ID}.scope"
                ),
                format!("containerd://{ID}"),
            ),
            (
                format!("/kubepods/besteffort/pod0d9c8b7a-6f5e-4d3c-2b1a-0f9e8d7c6b5a/{ID}"),
                format!("containerd://{ID}"),
            ),
            (
                format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
                format!("cri-o://{ID}"),
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
                ),
                format!("podman://{ID}"),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(
                container_id(&path).as_deref(),
                Some(want.as_str()),
                "{path}"
            );
        }
        for path in [
            "/system.slice/sshd.service".to_string(),
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            format!("/system.slice/docker-{}.scope", &ID[..63]),
            format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
            format!("/{ID}"),
            format!("/other/{ID}"),
            "/".to_string(),
        ] {
            assert_eq!(container_id(&path), None, "{path}");
        }
        // Nested: the innermost container.
        let other = "a".repeat(64);
        assert_eq!(
            container_id(&format!("/docker/{other}/docker/{ID}")),
            Some(format!("docker://{ID}"))
        );
    }

    #[test]
    fn units() {
        assert_eq!(unit("/system.slice/nginx.service"), Some("nginx.service"));
        assert_eq!(
            unit("/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome.scope"),
            Some("app-gnome.scope")
        );
        assert_eq!(
            unit(&format!("/system.slice/docker-{ID}.scope")).map(|u| u.starts_with("docker-")),
            Some(true)
        );
        assert_eq!(unit("/init.scope"), Some("init.scope"));
        assert_eq!(unit("/user.slice"), None);
        assert_eq!(unit("/a/.service"), None);
        assert_eq!(unit("/"), None);
        let l = CgroupLabels::from_path("/kubepods/x");
        assert_eq!((l.container_id.as_str(), l.unit.as_str()), ("", ""));
    }

    #[test]
    fn own_cgroup_is_readable() {
        let l = read(std::process::id()).unwrap();
        assert!(l.cgroup.starts_with('/'), "{l:?}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics_and_ids_are_well_formed(text in "(?s).{0,300}") {
            if let Some(path) = parse(&text) {
                proptest::prop_assert!(path.starts_with('/'));
                let l = CgroupLabels::from_path(path);
                if !l.container_id.is_empty() {
                    let (runtime, id) = l.container_id.split_once("://").unwrap();
                    proptest::prop_assert!(["docker", "containerd", "cri-o", "podman"].contains(&runtime));
                    proptest::prop_assert!(is_id(id));
                }
                proptest::prop_assert!(!l.unit.contains('/'));
            }
        }

        #[test]
        fn an_id_in_any_position_of_a_path_is_found(
            prefix in "(/[a-z0-9._@-]{1,12}){0,4}",
            id in "[0-9a-f]{64}",
            suffix in "(/[a-z0-9._-]{1,12}){0,2}",
            runtime in 0usize..4,
        ) {
            let (pattern, want) = [
                (format!("docker-{id}.scope"), "docker"),
                (format!("cri-containerd-{id}.scope"), "containerd"),
                (format!("crio-{id}.scope"), "cri-o"),
                (format!("libpod-{id}.scope"), "podman"),
            ][runtime].clone();
            let text = format!("0::{prefix}/{pattern}{suffix}\n");
            let path = parse(&text).unwrap();
            proptest::prop_assert_eq!(container_id(path), Some(format!("{want}://{id}")));
        }
    }
}
