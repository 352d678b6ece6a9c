//! The dashboard at `/` and the JSON API it reads, `/api/v1/...`
//! (docs/dashboard.md). One more sink of the typed snapshots: the CPU
//! windows' stacks ([`history`]), the sources' families and health, never
//! the text of `/metrics`. Its files are embedded in the binary; it needs
//! no network but the daemon's.

pub mod history;
pub mod latency;
pub mod leaks;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use tokio::sync::Mutex;

use super::{
    cpu::CpuSource,
    exposition::{Family, Value},
    http::AppState,
    pprof_endpoint::{CPU_NOT_RUNNING, Query, parse_query, source},
    process_stats,
};
use history::Hotspot;

/// The API's version: the `v1` of its paths and the `api_version` field.
pub const API_VERSION: u32 = 1;
/// Hotspot rows answered.
pub const HOTSPOTS: usize = 50;
/// How long a status is served again to other requests (tabs polling each
/// second share one read of the sources).
const STATUS_FRESH: Duration = Duration::from_millis(500);

/// The dashboard's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/{file}", get(asset))
        .route("/api/v1/status", get(status))
        .route("/api/v1/cpu", get(cpu))
        .route("/api/v1/cpu/flamegraph.svg", get(flamegraph))
        .route("/api/v1/cpu/folded", get(folded))
        .route("/api/v1/latency", get(latency_history))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/leaks", get(leaks_now))
}

/// The embedded files: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "leaks.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/leaks.js"),
    ),
    (
        "alerts.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/alerts.js"),
    ),
    (
        "latency.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/latency.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/uplot/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("assets/uplot/uPlot.min.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("assets/index.html"),
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no dashboard file {file:?}")),
    }
}

/// A JSON error: `{"error": reason}`.
fn error(status: StatusCode, reason: impl std::fmt::Display) -> Response {
    #[derive(Serialize)]
    struct Error {
        error: String,
    }
    let body = serde_json::to_vec(&Error {
        error: reason.to_string(),
    })
    .unwrap_or_default();
    (status, json_response(Bytes::from(body))).into_response()
}

/// `GET /api/v1/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// [`API_VERSION`].
    pub api_version: u32,
    /// perf-user's version.
    pub version: &'static str,
    /// Seconds since the daemon started.
    pub uptime_seconds: f64,
    /// When this was read, seconds since the Unix epoch.
    pub time_unix_seconds: f64,
    /// True when every source works (as `/healthz` says).
    pub healthy: bool,
    /// Each enabled collector.
    pub collectors: Vec<CollectorStatus>,
    /// Events lost since the start, by collector and reason (zeros left out).
    pub lost_events: Vec<LostEvents>,
    /// The daemon process itself.
    pub process: ProcessStatus,
    /// Each BPF program the daemon loaded.
    pub bpf_programs: Vec<BpfProgram>,
    /// Seconds this read of every source took.
    pub read_seconds: f64,
}

/// One collector in [`Status`].
#[derive(Debug, Serialize)]
pub struct CollectorStatus {
    /// Its name (`cpu`, `block`, ...).
    pub name: String,
    /// Attached.
    pub up: bool,
    /// Why it is down or unhealthy, if it is.
    pub error: Option<String>,
}

/// One reason events were lost, in [`Status`].
#[derive(Debug, Serialize)]
pub struct LostEvents {
    /// The collector.
    pub collector: String,
    /// Why.
    pub reason: String,
    /// Events lost since the start.
    pub count: u64,
}

/// The daemon's own figures, in [`Status`].
#[derive(Debug, Default, Serialize)]
pub struct ProcessStatus {
    /// User and system CPU time used since the start.
    pub cpu_seconds: f64,
    /// Resident memory.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// File descriptors held.
    pub open_fds: u64,
}

/// One BPF program in [`Status`].
#[derive(Debug, Serialize)]
pub struct BpfProgram {
    /// The program's name.
    pub program: String,
    /// CPU time the kernel spent running it.
    pub run_seconds: f64,
    /// Times it ran.
    pub runs: u64,
}

/// The numeric samples of family `name` in `families`: (labels, value).
fn numbers<'a>(
    families: &'a [Family],
    name: &'a str,
) -> impl Iterator<Item = (&'a [(&'static str, String)], f64)> + 'a {
    families
        .iter()
        .filter(move |f| f.name == name)
        .flat_map(|f| &f.samples)
        .filter_map(|s| match s.value {
            Value::Number(v) => Some((s.labels.as_slice(), v)),
            Value::Histogram(_) => None,
        })
}

fn label(labels: &[(&'static str, String)], name: &str) -> String {
    labels
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads every source, as a scrape does, into a [`Status`].
fn read_status(state: &AppState) -> Status {
    let started = Instant::now();
    let sources = state.scraper.sources();
    let families = state.scraper.collect_all();
    let health = |name: &str| {
        sources
            .iter()
            .find(|s| s.name() == name)
            .and_then(|s| s.health().err())
    };
    let collectors = numbers(&families, "perf_user_collector_up")
        .map(|(l, v)| {
            let name = label(l, "collector");
            let up = v > 0.0;
            let error = if up {
                health(&name)
            } else {
                Some("failed to start (the daemon log says why)".to_string())
            };
            CollectorStatus { name, up, error }
        })
        .collect();
    let lost_events = numbers(&families, "perf_user_lost_events_total")
        .filter(|(_, v)| *v > 0.0)
        .map(|(l, v)| LostEvents {
            collector: label(l, "collector"),
            reason: label(l, "reason"),
            count: v as u64,
        })
        .collect();
    let runs: Vec<(String, f64)> = numbers(&families, "perf_user_bpf_program_runs_total")
        .map(|(l, v)| (label(l, "program"), v))
        .collect();
    let bpf_programs = numbers(&families, "perf_user_bpf_program_run_seconds_total")
        .map(|(l, v)| {
            let program = label(l, "program");
            let runs = runs
                .iter()
                .find(|(p, _)| *p == program)
                .map_or(0, |(_, n)| *n as u64);
            BpfProgram {
                program,
                run_seconds: v,
                runs,
            }
        })
        .collect();
    let now = SystemTime::now();
    let (process, uptime_seconds) = match process_stats::read("self") {
        Ok(f) => (
            ProcessStatus {
                cpu_seconds: f.cpu_seconds,
                rss_bytes: f.rss_bytes,
                threads: f.threads,
                open_fds: f.open_fds,
            },
            (unix_seconds(now) - f.start_time_seconds).max(0.0),
        ),
        Err(_) => (ProcessStatus::default(), 0.0),
    };
    Status {
        api_version: API_VERSION,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds,
        time_unix_seconds: unix_seconds(now),
        healthy: (state.health)().is_ok(),
        collectors,
        lost_events,
        process,
        bpf_programs,
        read_seconds: started.elapsed().as_secs_f64(),
    }
}

/// The last status served, shared for [`STATUS_FRESH`].
static LAST_STATUS: Mutex<Option<(Instant, Bytes)>> = Mutex::const_new(None);

fn json_response(body: Bytes) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    let mut last = LAST_STATUS.lock().await;
    if let Some((_, body)) = last.as_ref().filter(|(at, _)| at.elapsed() < STATUS_FRESH) {
        return json_response(body.clone());
    }
    // Reading maps and /proc blocks: off the async workers.
    let read = tokio::task::spawn_blocking(move || read_status(&state)).await;
    match read.map(|s| serde_json::to_vec(&s)) {
        Ok(Ok(body)) => {
            let body = Bytes::from(body);
            *last = Some((Instant::now(), body.clone()));
            json_response(body)
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// What a CPU request asks for: the span, the processes, and whether the
/// folded stacks come with the answer.
struct CpuQuery {
    span: Duration,
    query: Query,
    folded: bool,
}

/// The spans the page offers; any duration up to [`history::KEEP`] is
/// accepted.
const DEFAULT_SPAN: Duration = Duration::from_secs(60);

fn parse_cpu_query(raw: Option<&str>) -> Result<CpuQuery, String> {
    let mut span = DEFAULT_SPAN;
    let mut folded = true;
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("window", v) => {
                span = crate::duration::parse(v)
                    .ok()
                    .filter(|d| !d.is_zero() && *d <= history::KEEP)
                    .ok_or_else(|| {
                        format!(
                            "window={v:?}: a duration up to {} s, such as 10s, 1m or 5m",
                            history::KEEP.as_secs()
                        )
                    })?;
            }
            ("folded", v) => folded = !matches!(v, "0" | "false"),
            _ => {}
        }
    }
    // `seconds` has no meaning here; the rest are the profile endpoints'.
    let query = parse_query(raw)?;
    Ok(CpuQuery {
        span,
        query,
        folded,
    })
}

/// `GET /api/v1/cpu`.
#[derive(Debug, Serialize)]
pub struct CpuAnswer {
    /// [`API_VERSION`].
    pub api_version: u32,
    /// The windows merged.
    pub window: WindowSpan,
    /// Samples per second on each CPU.
    pub frequency_hz: u64,
    /// Samples of the selected processes.
    pub samples: u64,
    /// The functions with the most self samples, at most [`HOTSPOTS`].
    pub hotspots: Vec<Hotspot>,
    /// Processes with samples: name, PIDs, samples.
    pub processes: Vec<ProcessRow>,
    /// Cgroups with samples.
    pub cgroups: Vec<GroupRow>,
    /// Units with samples.
    pub units: Vec<GroupRow>,
    /// `process;root;...;leaf count` lines (empty with `folded=0`).
    pub folded: Vec<String>,
}

/// The windows a CPU answer covers.
#[derive(Debug, Serialize)]
pub struct WindowSpan {
    /// The span asked for.
    pub asked_seconds: f64,
    /// The length of the windows merged.
    pub seconds: f64,
    /// How many.
    pub windows: usize,
    /// When the newest ended, seconds since the Unix epoch (null before the
    /// first window closed).
    pub end_unix_seconds: Option<f64>,
    /// Samples left out of the windows (beyond the stacks kept per window).
    pub dropped_samples: u64,
}

/// A process row of a CPU answer.
#[derive(Debug, Serialize)]
pub struct ProcessRow {
    /// Name.
    pub process: String,
    /// Its PIDs.
    pub pids: Vec<u32>,
    /// Samples.
    pub samples: u64,
}

/// A cgroup's or unit's row of a CPU answer.
#[derive(Debug, Serialize)]
pub struct GroupRow {
    /// The cgroup path or unit name.
    pub name: String,
    /// Samples.
    pub samples: u64,
}

/// Answers a CPU request with `make` over the selected stacks, off the
/// async workers.
async fn with_cpu(
    state: AppState,
    raw: Option<String>,
    make: impl FnOnce(&CpuSource, CpuQuery, Vec<Arc<history::FoldedWindow>>) -> Response
    + Send
    + 'static,
) -> Response {
    let q = match parse_cpu_query(raw.as_deref()) {
        Ok(q) => q,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let Some(cpu) = source::<CpuSource>(&state, "cpu") else {
        return error(StatusCode::NOT_FOUND, CPU_NOT_RUNNING);
    };
    let answered = tokio::task::spawn_blocking(move || {
        let Some(cpu) = cpu.as_any().and_then(|a| a.downcast_ref::<CpuSource>()) else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "the CPU source changed");
        };
        let windows = cpu.history().last(q.span);
        make(cpu, q, windows)
    })
    .await;
    answered.unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))
}

fn span_of(asked: Duration, windows: &[Arc<history::FoldedWindow>]) -> WindowSpan {
    WindowSpan {
        asked_seconds: asked.as_secs_f64(),
        seconds: windows
            .iter()
            .fold(0.0, |s, w| s + w.duration.as_secs_f64()),
        windows: windows.len(),
        end_unix_seconds: windows.last().and_then(|w| w.end).map(unix_seconds),
        dropped_samples: windows.iter().map(|w| w.dropped_samples).sum(),
    }
}

/// CPU answers (JSON, SVG) that tabs with the same selection share until a
/// new window closes: the last few, by [`answer_key`].
static ANSWERS: std::sync::Mutex<std::collections::VecDeque<(String, Bytes)>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());
/// CPU answers kept.
const ANSWERS_KEPT: usize = 8;

/// What a CPU answer depends on: the endpoint, the query, and the windows.
fn answer_key(what: &str, raw: &str, windows: &[Arc<history::FoldedWindow>]) -> String {
    let end = windows.last().and_then(|w| w.end).map(unix_seconds);
    format!("{what}?{raw}#{end:?}#{}", windows.len())
}

/// The answer under `key`, made by `make` unless another request made it.
fn shared_answer(
    key: String,
    content_type: &'static str,
    make: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Response {
    let respond = |body: Bytes| {
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response()
    };
    let found = super::windows::lock(&ANSWERS)
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, b)| b.clone());
    if let Some(body) = found {
        return respond(body);
    }
    match make() {
        Ok(body) => {
            let body = Bytes::from(body);
            let mut kept = super::windows::lock(&ANSWERS);
            kept.push_back((key, body.clone()));
            while kept.len() > ANSWERS_KEPT {
                kept.pop_front();
            }
            respond(body)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn cpu(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let key = raw.clone().unwrap_or_default();
    with_cpu(state, raw, move |cpu, q, windows| {
        let key = answer_key("cpu", &key, &windows);
        shared_answer(key, "application/json", || {
            let s = history::select(&windows, &q.query);
            let groups = |m: std::collections::BTreeMap<String, u64>| {
                let mut rows: Vec<GroupRow> = m
                    .into_iter()
                    .map(|(name, samples)| GroupRow { name, samples })
                    .collect();
                rows.sort_by_key(|r| std::cmp::Reverse(r.samples));
                rows
            };
            let mut processes: Vec<ProcessRow> = s
                .processes
                .into_iter()
                .map(|(process, (pids, samples))| ProcessRow {
                    process,
                    pids,
                    samples,
                })
                .collect();
            processes.sort_by_key(|p| std::cmp::Reverse(p.samples));
            let answer = CpuAnswer {
                api_version: API_VERSION,
                window: span_of(q.span, &windows),
                frequency_hz: cpu.frequency_hz(),
                samples: s.samples,
                hotspots: history::hotspots(&s.folded, HOTSPOTS),
                processes,
                cgroups: groups(s.cgroups),
                units: groups(s.units),
                folded: if q.folded { s.folded } else { Vec::new() },
            };
            serde_json::to_vec(&answer).map_err(|e| e.to_string())
        })
    })
    .await
}

async fn flamegraph(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let key = raw.clone().unwrap_or_default();
    with_cpu(state, raw, move |_, q, windows| {
        let key = answer_key("flamegraph.svg", &key, &windows);
        shared_answer(key, "image/svg+xml", || {
            let s = history::select(&windows, &q.query);
            let span = span_of(q.span, &windows);
            let title = format!("CPU, last {:.0} s", span.seconds);
            let subtitle = format!(
                "{} samples in {} window{}",
                s.samples,
                span.windows,
                if span.windows == 1 { "" } else { "s" }
            );
            let mut svg = Vec::new();
            crate::output::svg::write_lines(&s.folded, &title, &subtitle, "samples", &mut svg)
                .map(|()| svg)
                .map_err(|e| e.to_string())
        })
    })
    .await
}

async fn folded(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    with_cpu(state, raw, |_, q, windows| {
        let s = history::select(&windows, &q.query);
        let mut body = s.folded.join("\n");
        body.push('\n');
        (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"cpu.folded\"",
                ),
            ],
            body,
        )
            .into_response()
    })
    .await
}

/// `GET /api/v1/latency`.
#[derive(Serialize)]
struct LatencyAnswer<'a> {
    api_version: u32,
    step_seconds: f64,
    points_kept: usize,
    series_left_out: u64,
    series: Vec<&'a latency::Series>,
}

async fn latency_history(RawQuery(raw): RawQuery) -> Response {
    let collector = raw
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("collector="))
        .map(str::to_string);
    let body = latency::HISTORY.with(|all, left_out| {
        serde_json::to_vec(&LatencyAnswer {
            api_version: API_VERSION,
            step_seconds: latency::STEP.as_secs_f64(),
            points_kept: latency::POINTS,
            series_left_out: left_out,
            series: all
                .values()
                .filter(|s| collector.as_deref().is_none_or(|c| c == s.collector))
                .collect(),
        })
    });
    match body {
        Ok(body) => json_response(Bytes::from(body)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/v1/alerts`.
#[derive(Serialize)]
struct AlertsAnswer {
    api_version: u32,
    enabled: bool,
    alerts: Vec<AlertRow>,
}

/// One pending or firing alert.
#[derive(Serialize)]
struct AlertRow {
    fingerprint: String,
    rule: String,
    severity: &'static str,
    state: &'static str,
    labels: crate::alerts::signals::Labels,
    summary: String,
    detail: String,
    value: f64,
    reference: f64,
    active_since_unix_seconds: f64,
    fired_at_unix_seconds: Option<f64>,
    evidence: String,
    advice: Option<AdviceRow>,
}

/// An alert's advice, once it fired.
#[derive(Serialize)]
struct AdviceRow {
    diagnosis: String,
    facts: Vec<crate::alerts::advice::Fact>,
    stack: Vec<String>,
    suggestions: Vec<String>,
}

async fn alerts(State(state): State<AppState>) -> Response {
    let service = source::<super::alerts::AlertsSource>(&state, "alerts");
    let rows = service
        .as_ref()
        .and_then(|s| s.as_any())
        .and_then(|a| a.downcast_ref::<super::alerts::AlertsSource>())
        .map(|s| s.0.active())
        .unwrap_or_default()
        .into_iter()
        .map(|(a, advice)| AlertRow {
            evidence: crate::alerts::report::evidence_line(&a.evidence),
            fingerprint: a.fingerprint,
            rule: a.rule,
            severity: a.severity.as_str(),
            state: a.state.as_str(),
            labels: a.labels,
            summary: a.summary,
            detail: a.detail,
            value: a.value,
            reference: a.reference,
            active_since_unix_seconds: unix_seconds(a.active_since),
            fired_at_unix_seconds: a.fired_at.map(unix_seconds),
            advice: advice.map(|x| AdviceRow {
                diagnosis: x.diagnosis,
                facts: x.evidence,
                stack: x.stack,
                suggestions: x.suggestions.into_iter().map(|s| s.text).collect(),
            }),
        })
        .collect();
    match serde_json::to_vec(&AlertsAnswer {
        api_version: API_VERSION,
        enabled: service.is_some(),
        alerts: rows,
    }) {
        Ok(body) => json_response(Bytes::from(body)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/v1/leaks`.
#[derive(Serialize)]
struct LeaksAnswer {
    api_version: u32,
    enabled: bool,
    step_seconds: f64,
    processes: Vec<leaks::ProcessRow>,
}

async fn leaks_now(State(state): State<AppState>) -> Response {
    let enabled = source::<super::leaks::LeaksSource>(&state, "leaks").is_some();
    match serde_json::to_vec(&LeaksAnswer {
        api_version: API_VERSION,
        enabled,
        step_seconds: latency::STEP.as_secs_f64(),
        processes: if enabled { leaks::rows() } else { Vec::new() },
    }) {
        Ok(body) => json_response(Bytes::from(body)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_query() {
        let q = parse_cpu_query(Some("window=5m&pid=12&folded=0")).unwrap();
        assert_eq!(q.span, Duration::from_secs(300));
        assert_eq!(q.query.pids, [12]);
        assert!(!q.folded);
        assert_eq!(parse_cpu_query(None).unwrap().span, DEFAULT_SPAN);
        assert!(parse_cpu_query(Some("window=10m")).is_err());
        assert!(parse_cpu_query(Some("window=abc")).is_err());
        assert!(parse_cpu_query(Some("comm=")).is_err());
    }
}
