//! `--web.config.file` (or `exporter.web_config_file`): TLS and basic
//! authentication with the Prometheus exporter-toolkit's file, as
//! node_exporter reads it.
//!
//! [`schema`] reads the file, [`tls`] builds the rustls configuration,
//! [`auth`] checks logins. [`WebConfig`] holds what is in force and reads
//! the file again when it, or a certificate, key or CA file it names,
//! changed (checked at each connection and request), and on SIGHUP: a
//! rotated certificate or a changed password applies without a restart. A
//! file that no longer loads is logged and the last good one stays in force.

pub mod auth;
pub mod schema;
pub mod tls;

use std::{
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rustls::ServerConfig;

use schema::Settings;

/// Why the web config file was refused: names the file and the cause.
#[derive(Debug, thiserror::Error)]
#[error("web config file {}: {cause}", path.display())]
pub struct WebConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, naming the key.
    pub cause: String,
}

/// One load of the file.
#[derive(Debug)]
pub struct Loaded {
    /// What it says.
    pub settings: Settings,
    /// Its TLS configuration, when it has one.
    pub tls: Option<Arc<ServerConfig>>,
}

impl Loaded {
    /// Reads `path` and everything it names.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let error = |cause: String| WebConfigError {
            path: path.to_path_buf(),
            cause,
        };
        let settings = Settings::load(path).map_err(|e| error(e.to_string()))?;
        let tls = settings
            .tls
            .as_ref()
            .map(tls::server_config)
            .transpose()
            .map_err(error)?;
        Ok(Self { settings, tls })
    }

    /// What it enables, for the log and `--check-config`.
    pub fn summary(&self) -> String {
        let tls = match &self.settings.tls {
            Some(t) => format!(
                "TLS {}..{}, client certificates: {:?}",
                t.min_version, t.max_version, t.client_auth
            ),
            None => "no TLS".to_string(),
        };
        let users = match self.settings.users.len() {
            0 => "no basic auth".to_string(),
            1 => "basic auth for 1 user".to_string(),
            n => format!("basic auth for {n} users"),
        };
        format!("{tls}; {users}")
    }
}

/// Identity of a file's content as far as stat(2) tells: a rename over it,
/// a rewrite or a touch changes it.
type Stamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

struct Current {
    current: Arc<Loaded>,
    /// Of the file and the files it names, when `current` was loaded.
    stamps: Vec<Stamp>,
    /// Of the files when a reload last failed: logged once per change.
    failed: Option<Vec<Stamp>>,
}

/// `rate_limit`'s token bucket over all requests.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The web configuration in force, shared by the server's connections.
pub struct WebConfig {
    path: PathBuf,
    state: Mutex<Current>,
    limiter: Mutex<Option<Bucket>>,
    /// Login checks and their rate limit.
    pub auth: auth::Authenticator,
}

impl WebConfig {
    /// Loads `path`; an error names the file and the cause.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let current = Arc::new(Loaded::load(path)?);
        let stamps = stamps(path, &current.settings);
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new(Current {
                current,
                stamps,
                failed: None,
            }),
            limiter: Mutex::new(None),
            auth: auth::Authenticator::new(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration in force, read again first if a file changed.
    pub fn current(&self) -> Arc<Loaded> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamps(&self.path, &state.current.settings);
        if now != state.stamps && state.failed.as_ref() != Some(&now) {
            self.reload_locked(&mut state, now, "a file changed");
        }
        Arc::clone(&state.current)
    }

    /// Reads the file again whether or not it changed (SIGHUP).
    pub fn reload(&self, why: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamps(&self.path, &state.current.settings);
        self.reload_locked(&mut state, now, why);
    }

    fn reload_locked(&self, state: &mut Current, now: Vec<Stamp>, why: &str) {
        match Loaded::load(&self.path) {
            Ok(loaded) => {
                tracing::info!(
                    file = %self.path.display(),
                    reason = why,
                    summary = %loaded.summary(),
                    "web config reloaded"
                );
                // The stamps of the files the new configuration names.
                state.stamps = stamps(&self.path, &loaded.settings);
                state.current = Arc::new(loaded);
                state.failed = None;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    reason = why,
                    in_force = "the previous web config",
                    "web config reload failed"
                );
                state.failed = Some(now);
            }
        }
    }

    /// Takes one token of `rate_limit`'s bucket; false when empty.
    fn allow(&self, settings: &Settings) -> bool {
        let Some(limit) = settings.rate_limit else {
            return true;
        };
        let now = Instant::now();
        let burst = f64::from(limit.burst);
        let mut bucket = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        let b = bucket.get_or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let earned = now.duration_since(b.at).as_secs_f64() / limit.interval.as_secs_f64();
        b.tokens = (b.tokens + earned).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn stamps(path: &Path, settings: &Settings) -> Vec<Stamp> {
    std::iter::once(path.to_path_buf())
        .chain(settings.files())
        .map(|p| stamp(&p))
        .collect()
}

/// Reads the web config again on every SIGHUP (the daemon's configuration
/// is reloaded then too).
pub fn reload_on_sighup(web: Arc<WebConfig>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot handle SIGHUP; the web config is still read again when it changes");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let web = Arc::clone(&web);
            // Reading certificates blocks briefly.
            let _ = tokio::task::spawn_blocking(move || web.reload("SIGHUP")).await;
        }
    });
}

/// The client's address, put in each request's extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Paths served without authentication: a liveness probe (systemd, a
/// container runtime) has no credentials.
const OPEN_PATHS: &[&str] = &["/healthz"];

/// In front of the routes: `rate_limit`, then basic authentication, for
/// every path but [`OPEN_PATHS`]; `http_server_config.headers` on every
/// answer.
pub async fn guard(
    State(web): State<Option<Arc<WebConfig>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(web) = web else {
        return next.run(request).await;
    };
    let loaded = web.current();
    let settings = &loaded.settings;
    let mut response = if OPEN_PATHS.contains(&request.uri().path()) {
        next.run(request).await
    } else if !web.allow(settings) {
        plain(StatusCode::TOO_MANY_REQUESTS)
    } else if settings.users.is_empty() {
        next.run(request).await
    } else {
        let peer = request
            .extensions()
            .get::<ClientAddr>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.0.ip());
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match web.auth.check(&settings.users, authorization, peer).await {
            auth::Verdict::Allowed => next.run(request).await,
            auth::Verdict::Refused(auth::Failure::RateLimited, wait) => {
                let mut r = plain(StatusCode::TOO_MANY_REQUESTS);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                r
            }
            auth::Verdict::Refused(_, _) => {
                let mut r = plain(StatusCode::UNAUTHORIZED);
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                r
            }
        }
    };
    for (name, value) in &settings.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().insert(n, v);
        }
    }
    response
}

/// A status with its reason as the body, as Go's http.Error writes it.
fn plain(status: StatusCode) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", status.canonical_reason().unwrap_or_default()),
    )
        .into_response()
}
