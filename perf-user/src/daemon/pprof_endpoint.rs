//! `/debug/pprof/profile`, `/debug/pprof/offcpu` and `/debug/pprof/heap`:
//! gzipped `profile.proto`
//! in the conventions of Go's net/http/pprof, which Parca's scraper and
//! Grafana Alloy's `pyroscope.scrape` follow (`Content-Type:
//! application/octet-stream`; Alloy refuses other types).

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
    time::Duration,
};

use axum::{
    extract::{RawQuery, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;

use super::{
    cpu::CpuSource,
    heap_profile,
    http::AppState,
    labels,
    leaks::LeaksSource,
    offcpu::OffCpuSource,
    profile_tap::{Keep, Labelled},
};
use crate::{
    cgroup::CgroupLabels,
    output::pprof::{self, Layout},
    profile::StackSample,
};

/// `seconds` when the request gives none: Go's default.
pub const DEFAULT_SECONDS: u64 = 30;
/// Longest profile served: a request holds its samples in memory until it ends.
pub const MAX_SECONDS: u64 = 60;
/// Profile requests under way at once; more are refused with 429.
pub const MAX_REQUESTS: usize = 16;
/// How often a request's samples so far are read and named in the
/// background, so that little is left to name at its end.
const WARM_EVERY: Duration = Duration::from_secs(1);
/// Highest PID Linux hands out (`PID_MAX_LIMIT` on 64-bit).
const PID_MAX: u32 = 4_194_304;

/// What a request asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// How long to sample.
    pub seconds: u64,
    /// Only these processes; empty: all.
    pub pids: Vec<u32>,
    /// Only processes or threads of this name.
    pub comm: Option<String>,
    /// Only processes in this cgroup or below it.
    pub cgroup: Option<String>,
}

impl Query {
    /// Does a sample of thread `comm` in process `pid` (named `process`,
    /// with `labels`) match?
    pub fn keeps(
        &self,
        pid: u32,
        comm: &str,
        process: Option<&str>,
        labels: &CgroupLabels,
    ) -> bool {
        (self.pids.is_empty() || self.pids.contains(&pid))
            && self
                .comm
                .as_deref()
                .is_none_or(|c| c == comm || process == Some(c))
            && self.cgroup.as_deref().is_none_or(|c| {
                let path = labels.cgroup.as_str();
                c == "/"
                    || path == c
                    || path
                        .strip_prefix(c.trim_end_matches('/'))
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

/// Decodes `%XX` and `+` of a query string component.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{s:?} has a '%' not followed by two hex digits"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// A value as the reason quotes it: cut, so a 200 KB query is not echoed.
fn quoted(v: &str) -> String {
    let mut end = v.len().min(40);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    if end < v.len() {
        format!("{:?}…", &v[..end])
    } else {
        format!("{v:?}")
    }
}

/// Parses the query string; `Err` is the reason for a 400. Unknown
/// parameters are ignored, as Go's handlers ignore them.
pub fn parse_query(raw: Option<&str>) -> Result<Query, String> {
    let mut q = Query {
        seconds: DEFAULT_SECONDS,
        ..Query::default()
    };
    let mut seen_seconds = false;
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        match k.as_str() {
            "seconds" => {
                if seen_seconds {
                    return Err("seconds is given more than once".into());
                }
                seen_seconds = true;
                q.seconds = v
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=MAX_SECONDS).contains(s))
                    .ok_or_else(|| {
                        format!(
                            "seconds={}: the profile's length must be a whole number of seconds from 1 to {MAX_SECONDS} (default {DEFAULT_SECONDS})",
                            quoted(&v)
                        )
                    })?;
            }
            "pid" => {
                for p in v.split(',') {
                    let pid = p
                        .parse::<u32>()
                        .ok()
                        .filter(|p| (1..=PID_MAX).contains(p))
                        .ok_or_else(|| {
                            format!(
                                "pid={}: not a process id (a whole number from 1 to {PID_MAX}; several as pid=1,2)",
                                quoted(p)
                            )
                        })?;
                    q.pids.push(pid);
                }
            }
            "comm" => {
                if v.is_empty() || v.len() > 15 || v.contains('\0') {
                    return Err(format!(
                        "comm={}: a process name is 1 to 15 bytes, as `ps -o comm` shows it",
                        quoted(&v)
                    ));
                }
                q.comm = Some(v);
            }
            "cgroup" => {
                if !v.starts_with('/') || v.len() > 4096 || v.contains('\0') {
                    return Err(format!(
                        "cgroup={}: a cgroup is a path from the cgroup root, such as /system.slice/nginx.service",
                        quoted(&v)
                    ));
                }
                q.cgroup = Some(v);
            }
            _ => {}
        }
    }
    Ok(q)
}

/// Why a CPU request has no answer.
pub(super) const CPU_NOT_RUNNING: &str =
    "the CPU collector is not running: enable collectors.cpu (the daemon log says why it is down)";

/// Profile requests under way.
static REQUESTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(MAX_REQUESTS));

fn error(status: StatusCode, reason: impl std::fmt::Display) -> Response {
    (status, format!("{reason}\n")).into_response()
}

/// The source named `name` in force now, if it is a `T`.
pub(super) fn source<T: 'static>(
    state: &AppState,
    name: &str,
) -> Option<Arc<dyn super::scrape::Source>> {
    state
        .scraper
        .sources()
        .iter()
        .find(|s| s.name() == name && s.as_any().is_some_and(|a| a.is::<T>()))
        .cloned()
}

/// The labels of a sample in a response: its container's, bounded.
fn container_labels(
    by_pid: &HashMap<u32, CgroupLabels>,
) -> impl Fn(&StackSample) -> Vec<(&'static str, String)> + '_ {
    move |s| {
        let l = by_pid.get(&s.pid).cloned().unwrap_or_default();
        labels::pairs(l)
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }
}

fn pprof_response(bytes: Vec<u8>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"profile\""),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /debug/pprof/profile?seconds=N[&pid=P][&comm=NAME][&cgroup=PATH]`.
pub async fn profile(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let query = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let Some(cpu) = source::<CpuSource>(&state, "cpu") else {
        return error(StatusCode::SERVICE_UNAVAILABLE, CPU_NOT_RUNNING);
    };
    let Ok(_slot) = REQUESTS.try_acquire() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_REQUESTS} profile requests are under way; try again when one ends"),
        );
    };
    let hub = match cpu.as_any().and_then(|a| a.downcast_ref::<CpuSource>()) {
        Some(c) => c.hub(),
        None => return error(StatusCode::INTERNAL_SERVER_ERROR, "the CPU source changed"),
    };
    drop(cpu);
    let warmer = Arc::clone(&hub);
    let tap = match start_tap(move || hub.tap(), "CPU samples").await {
        Ok(tap) => tap,
        Err(response) => return response,
    };
    // Dropped with this future when the client goes away: the tap stops.
    let end = tokio::time::Instant::now() + Duration::from_secs(query.seconds);
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left <= WARM_EVERY {
            tokio::time::sleep(left).await;
            break;
        }
        tokio::time::sleep(WARM_EVERY).await;
        let warmer = Arc::clone(&warmer);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || warmer.warm()).await {
            tracing::debug!(error = %e, "reading the CPU samples during a profile request failed");
        }
    }
    answer(move || {
        let keep: Keep<'_> = &|k, process, l| {
            let end = k.comm.iter().position(|&b| b == 0).unwrap_or(k.comm.len());
            let comm = String::from_utf8_lossy(&k.comm[..end]);
            query.keeps(k.pid, &comm, process, l)
        };
        let Labelled {
            profile,
            labels: by_pid,
            dropped,
        } = tap
            .finish(keep)
            .map_err(|e| format!("reading the CPU samples failed: {e}"))?;
        if dropped.iter().any(|&d| d > 0) {
            tracing::debug!(
                ?dropped,
                "container label values shown as \"other\" in a profile"
            );
        }
        let extra = container_labels(&by_pid);
        encode(
            &profile,
            &Layout {
                labels: Some(&extra),
                ..Layout::cpu()
            },
        )
    })
    .await
}

/// Starts a request's tap off the async workers (it reads the maps); `Err`
/// is the 500 to answer.
async fn start_tap<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    tap: impl FnOnce() -> Result<T, E> + Send + 'static,
    what: &'static str,
) -> Result<T, Response> {
    let asked = std::time::Instant::now();
    let tap = match tokio::task::spawn_blocking(tap).await {
        Ok(Ok(tap)) => tap,
        Ok(Err(e)) => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the {what} failed: {e}"),
            ));
        }
        Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
    };
    tracing::debug!(
        took_ms = asked.elapsed().as_millis() as u64,
        what,
        "profile request: tap started"
    );
    Ok(tap)
}

/// `GET /debug/pprof/offcpu?seconds=N[&pid=P][&comm=NAME][&cgroup=PATH]`:
/// the time threads spent off the CPU for N seconds from now, from the
/// offcpu collector's program (shared with its windows).
pub async fn offcpu(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let query = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let Some(source) = source::<OffCpuSource>(&state, "offcpu") else {
        return error(
            StatusCode::NOT_FOUND,
            "no off-CPU profile: the offcpu collector is not running (set collectors.offcpu.enabled \
             or pass --collectors with offcpu; the daemon log says why if it is set)",
        );
    };
    let Ok(_slot) = REQUESTS.try_acquire() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_REQUESTS} profile requests are under way; try again when one ends"),
        );
    };
    let tap = match start_tap(
        move || {
            source
                .as_any()
                .and_then(|a| a.downcast_ref::<OffCpuSource>())
                .ok_or_else(|| "the off-CPU source changed".to_string())?
                .tap()
                .map_err(|e| e.to_string())
        },
        "off-CPU times",
    )
    .await
    {
        Ok(tap) => tap,
        Err(response) => return response,
    };
    // Dropped with this future when the client goes away: the tap stops.
    tokio::time::sleep(Duration::from_secs(query.seconds)).await;
    answer(move || {
        let keep = |pid, comm: &str, process: Option<&str>, l: &CgroupLabels| {
            query.keeps(pid, comm, process, l)
        };
        let labelled = tap
            .finish(&keep)
            .map_err(|e| format!("reading the off-CPU times failed: {e}"))?;
        let extra = container_labels(&labelled.labels);
        encode(
            &labelled.profile,
            &Layout {
                labels: Some(&extra),
                ..Layout::off_cpu()
            },
        )
    })
    .await
}

/// `GET /debug/pprof/heap[?pid=P][&comm=NAME][&cgroup=PATH]`: what the
/// leaks collector's traced processes have allocated and not freed.
pub async fn heap(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let query = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let Some(leaks) = source::<LeaksSource>(&state, "leaks") else {
        return error(
            StatusCode::NOT_FOUND,
            "no heap profile: the leaks collector is not running (set collectors.leaks.enabled and \
             collectors.leaks.processes)",
        );
    };
    answer(move || {
        let leaks = leaks
            .as_any()
            .and_then(|a| a.downcast_ref::<LeaksSource>())
            .ok_or("the leaks source changed")?;
        let heap =
            heap_profile::in_use(leaks, &|pid, name, l| query.keeps(pid, name, Some(name), l));
        let extra = container_labels(&heap.labels);
        let values = |i: usize, s: &StackSample| {
            vec![
                heap_profile::to_i64(s.count),
                heap_profile::to_i64(heap.bytes[i]),
            ]
        };
        encode(
            &heap.profile,
            &Layout {
                sample_types: &[("inuse_objects", "count"), ("inuse_space", "bytes")],
                values: Some(&values),
                labels: Some(&extra),
                period: Some((("space", "bytes"), 1)),
            },
        )
    })
    .await
}

/// The gzipped profile.proto of `profile`.
fn encode(profile: &crate::profile::Profile, layout: &Layout<'_>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    pprof::write_with(profile, layout, &mut out)
        .map_err(|e| format!("encoding the profile failed: {e}"))?;
    Ok(out)
}

/// Runs `make` off the async workers (it reads maps and files) and answers
/// with the profile it makes, or a 500 with the reason.
async fn answer(make: impl FnOnce() -> Result<Vec<u8>, String> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(make).await {
        Ok(Ok(bytes)) => pprof_response(bytes),
        Ok(Err(reason)) => error(StatusCode::INTERNAL_SERVER_ERROR, reason),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(parse_query(None).unwrap().seconds, 30);
        assert_eq!(parse_query(Some("seconds=2")).unwrap().seconds, 2);
        assert_eq!(parse_query(Some("seconds=60&x=1")).unwrap().seconds, 60);
        for bad in [
            "seconds=0",
            "seconds=61",
            "seconds=1000",
            "seconds=abc",
            "seconds=",
            "seconds=-1",
            "seconds=1.5",
        ] {
            let e = parse_query(Some(bad)).unwrap_err();
            assert!(e.contains("from 1 to 60"), "{bad}: {e}");
        }
        assert!(parse_query(Some("seconds=1&seconds=2")).is_err());
    }

    #[test]
    fn selectors() {
        let q = parse_query(Some(
            "pid=12,34&comm=nginx%3Aw&cgroup=%2Fsystem.slice%2Fa.service",
        ))
        .unwrap();
        assert_eq!(q.pids, [12, 34]);
        assert_eq!(q.comm.as_deref(), Some("nginx:w"));
        assert_eq!(q.cgroup.as_deref(), Some("/system.slice/a.service"));
        for bad in [
            "pid=-1",
            "pid=0",
            "pid=abc",
            "pid=99999999",
            "comm=",
            "comm=0123456789abcdef",
            "cgroup=relative",
            "pid=%zz",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
        let long = format!("seconds={}", "9".repeat(200_000));
        assert!(parse_query(Some(&long)).unwrap_err().len() < 200);
    }

    #[test]
    fn keeps_by_pid_name_and_cgroup_subtree() {
        let l = CgroupLabels::from_path("/test.slice/job/inner");
        let q = Query {
            cgroup: Some("/test.slice/job".into()),
            ..Query::default()
        };
        assert!(q.keeps(1, "a", None, &l));
        let q = Query {
            cgroup: Some("/test.slice/jo".into()),
            ..Query::default()
        };
        assert!(!q.keeps(1, "a", None, &l));
        let q = Query {
            pids: vec![2],
            comm: Some("app".into()),
            ..Query::default()
        };
        assert!(!q.keeps(1, "app", None, &l));
        assert!(q.keeps(2, "worker", Some("app"), &l));
        assert!(!q.keeps(2, "worker", Some("other"), &l));
    }
}
