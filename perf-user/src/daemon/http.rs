//! The HTTP endpoint: `/metrics`, `/healthz`, `/debug/pprof/*`, and the
//! dashboard at `/` with its API ([`super::dashboard`]);
//! over TLS and behind basic authentication when a web config file says so
//! ([`super::web`]).

use std::{
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper::service::Service as _;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinSet,
};

use super::{
    exposition::{Family, Kind, OPENMETRICS_TEXT, PROMETHEUS_TEXT},
    scrape::{Scraper, Source, SourceError},
    web::{self, ClientAddr, WebConfig, WebConfigError},
};

/// Why a request or connection was refused before any handler ran: the
/// `reason` label of `perf_user_http_requests_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// 400: a request line or header hyper could not parse.
    BadRequest,
    /// 414: a path and query above hyper's limit.
    UriTooLong,
    /// 431: headers above [`MAX_HEADER_BYTES`], or above hyper's buffer.
    HeadersTooLarge,
    /// Closed unanswered: the headers did not arrive within [`HEADER_READ_TIMEOUT`].
    HeaderTimeout,
    /// Closed when accepted: [`MAX_CONNECTIONS`] were open.
    TooManyConnections,
    /// 400 and closed: plain HTTP sent to the TLS port.
    HttpOnTlsPort,
    /// Closed: the TLS handshake failed (no or a refused client
    /// certificate, no common version or cipher suite, not TLS at all).
    TlsHandshake,
}

impl Rejected {
    const ALL: [Rejected; 7] = [
        Rejected::BadRequest,
        Rejected::UriTooLong,
        Rejected::HeadersTooLarge,
        Rejected::HeaderTimeout,
        Rejected::TooManyConnections,
        Rejected::HttpOnTlsPort,
        Rejected::TlsHandshake,
    ];

    /// The label value.
    pub fn reason(self) -> &'static str {
        match self {
            Rejected::BadRequest => "bad_request",
            Rejected::UriTooLong => "uri_too_long",
            Rejected::HeadersTooLarge => "headers_too_large",
            Rejected::HeaderTimeout => "header_timeout",
            Rejected::TooManyConnections => "too_many_connections",
            Rejected::HttpOnTlsPort => "http_on_tls_port",
            Rejected::TlsHandshake => "tls_handshake",
        }
    }

    /// What a connection's error says about its request, if it was refused.
    fn of(e: &hyper::Error) -> Option<Rejected> {
        if e.is_timeout() {
            Some(Rejected::HeaderTimeout)
        } else if e.is_parse_too_large() {
            // hyper tells the two apart only in its message.
            if e.to_string().contains("URI too long") {
                Some(Rejected::UriTooLong)
            } else {
                Some(Rejected::HeadersTooLarge)
            }
        } else if e.is_parse() {
            Some(Rejected::BadRequest)
        } else {
            None
        }
    }

    fn count(self) {
        REJECTED[self as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Rejections since start, by [`Rejected`]: process-wide, as the server is.
static REJECTED: [AtomicU64; Rejected::ALL.len()] =
    [const { AtomicU64::new(0) }; Rejected::ALL.len()];

/// Exports the rejection and failed-login counts.
#[derive(Debug, Default)]
pub struct HttpStats;

impl Source for HttpStats {
    fn name(&self) -> &'static str {
        "http"
    }

    fn collect(&self) -> Result<Vec<Family>, SourceError> {
        let mut rejected = Family::new(
            "perf_user_http_requests_rejected_total",
            Kind::Counter,
            "HTTP requests or connections refused before any handler ran, by reason.",
        );
        for r in Rejected::ALL {
            rejected.push(
                vec![("reason", r.reason().to_string())],
                REJECTED[r as usize].load(Ordering::Relaxed) as f64,
            );
        }
        let mut auth = Family::new(
            "perf_user_http_auth_failures_total",
            Kind::Counter,
            "Requests refused by basic authentication (web config file), by reason: no credentials, wrong ones (each logged with user and address), or too many wrong ones from the address lately.",
        );
        for f in web::auth::Failure::ALL {
            auth.push(
                vec![("reason", f.reason().to_string())],
                web::auth::failures(f) as f64,
            );
        }
        Ok(vec![rejected, auth])
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Renders `/metrics`.
    pub scraper: Arc<Scraper>,
    /// Answers `/healthz`: `Err(reason)` when a collector stopped working.
    pub health: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
    /// TLS and basic authentication (`--web.config.file`), if configured.
    pub web: Option<Arc<WebConfig>>,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// bind(2) failed. The OS error is part of the message, not a source,
    /// so that it is printed once, before the hint.
    #[error("cannot listen on {addr}: {cause}{hint}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        cause: std::io::Error,
        /// How to fix it.
        hint: &'static str,
    },
    /// The server failed while running.
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The web config file was refused.
    #[error(transparent)]
    WebConfig(#[from] WebConfigError),
}

/// Loads the web config file, if one is configured.
pub fn web_config(path: Option<&std::path::Path>) -> Result<Option<Arc<WebConfig>>, HttpError> {
    Ok(path.map(WebConfig::load).transpose()?.map(Arc::new))
}

/// Binds `addr`, with an error that says what to do about the usual causes.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr).await.map_err(|cause| {
        let hint = match cause.kind() {
            std::io::ErrorKind::AddrInUse => {
                "; another process (another `perf-user run`?) already listens there: stop it, or pick another port with --listen or exporter.listen"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "; no interface of this host has that address: check --listen or exporter.listen"
            }
            std::io::ErrorKind::PermissionDenied => {
                "; ports below 1024 need CAP_NET_BIND_SERVICE: pick a port above 1024"
            }
            _ => "",
        };
        HttpError::Bind { addr, cause, hint }
    })
}

/// Largest request head (names and values of all headers) answered; a
/// scraper sends a few hundred bytes. hyper itself only refuses heads above
/// its ~400 KiB read buffer.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The routes, behind the web config's guard (TLS is the server's).
pub fn router(state: AppState) -> Router {
    let web = state.web.clone();
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/debug/pprof/profile", get(super::pprof_endpoint::profile))
        .route("/debug/pprof/heap", get(super::pprof_endpoint::heap))
        .route("/debug/pprof/offcpu", get(super::pprof_endpoint::offcpu))
        .merge(super::dashboard::routes())
        .with_state(state)
        .layer(middleware::from_fn_with_state(web, web::guard))
        .layer(middleware::from_fn(limit_headers))
}

/// Refuses requests whose headers add up to more than [`MAX_HEADER_BYTES`]
/// with 431, before any handler runs.
async fn limit_headers(request: Request, next: Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        Rejected::HeadersTooLarge.count();
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request headers of {size} bytes; at most {MAX_HEADER_BYTES} are accepted\n"),
        )
            .into_response();
    }
    next.run(request).await
}

/// How long a client may take to send a request's line and headers, from
/// its first byte (or from the connection, for the first request): a
/// scraper sends them at once, and a client that stalls ("slowloris") would
/// otherwise hold its connection, and a file descriptor, forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections open at once; more are closed as soon as accepted. A few
/// Prometheus servers keep one each; this bounds the file descriptors that
/// clients can hold (each stalled one at most [`HEADER_READ_TIMEOUT`]).
pub const MAX_CONNECTIONS: usize = 256;

/// After the stop signal: how long requests in flight may take to finish
/// before their connections are dropped. A scrape takes well under a
/// second; a client stalled in its headers would otherwise delay the stop
/// by up to [`HEADER_READ_TIMEOUT`].
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves until `shutdown` completes, then finishes the requests in flight
/// (for at most [`SHUTDOWN_GRACE`]). Each connection is served by hyper with
/// a [`HEADER_READ_TIMEOUT`], at most [`MAX_CONNECTIONS`] at once; over TLS
/// when the web config file has a `tls_server_config` (read again for each
/// connection, so that a rotated certificate applies to the next one).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let web = state.web.clone();
    if let Some(web) = &web {
        web::reload_on_sighup(Arc::clone(web));
    }
    let service = TowerToHyperService::new(router(state));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let http1 = Arc::new(http1);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Connections watch this to start their graceful shutdown.
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            Rejected::TooManyConnections.count();
            tracing::debug!(%peer, limit = MAX_CONNECTIONS, "too many connections; closing");
            drop(stream);
            continue;
        };
        let http1 = Arc::clone(&http1);
        let router = service.clone();
        // The handlers see the client's address (failed logins name it).
        let service = hyper::service::service_fn(move |mut request| {
            request.extensions_mut().insert(ClientAddr(peer));
            router.call(request)
        });
        let stopping = stopping.clone();
        let web = web.clone();
        connections.spawn(async move {
            let tls = web.and_then(|w| w.current().tls.clone());
            let result = match tls {
                None => drive(&http1, stream, service, stopping).await,
                Some(config) => {
                    // The handshake counts against the header timeout too.
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, tls_accept(stream, config))
                        .await
                    {
                        Ok(Ok(tls)) => drive(&http1, tls, service, stopping).await,
                        Ok(Err(rejected)) => {
                            tracing::debug!(%peer, reason = rejected.map(Rejected::reason), "TLS connection refused");
                            if let Some(r) = rejected {
                                r.count();
                            }
                            Ok(())
                        }
                        Err(_) => {
                            Rejected::HeaderTimeout.count();
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::trace!(%peer, error = %e, "connection ended with an error");
                if let Some(r) = Rejected::of(&e) {
                    r.count();
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            connections = connections.len(),
            "connections still open {} s after the stop (a request in flight, or a client \
             stalled in its headers); closing them",
            SHUTDOWN_GRACE.as_secs()
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Serves one connection's requests until it closes, or gracefully once
/// `stopping` turns true.
async fn drive<I, S>(
    http1: &hyper::server::conn::http1::Builder,
    io: I,
    service: S,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = pin!(http1.serve_connection(TokioIo::new(io), service));
    tokio::select! {
        r = conn.as_mut() => r,
        () = async {
            // The guard it returns is not Send: drop it at once.
            let _ = stopping.wait_for(|s| *s).await;
        } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// What Go's TLS server answers to plain HTTP on its port (node_exporter
/// does so): a client sees why, rather than a closed connection.
const HTTP_ON_TLS_PORT: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The first byte of a TLS record that opens a handshake.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Accepts a TLS connection; `Err` says why it was refused (`None`: the
/// client left before sending anything).
async fn tls_accept(
    mut stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Option<Rejected>> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        _ => return Err(None),
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        let _ = stream.write_all(HTTP_ON_TLS_PORT).await;
        let _ = stream.shutdown().await;
        return Err(Some(Rejected::HttpOnTlsPort));
    }
    tokio_rustls::TlsAcceptor::from(config)
        .accept(stream)
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "TLS handshake failed");
            Some(Rejected::TlsHandshake)
        })
}

/// After a failed accept(2): errors of one connection (it was reset before
/// being accepted) are skipped; others (out of file descriptors) are logged
/// and retried after a pause, so that the loop does not spin.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// True when the client asked for OpenMetrics (Prometheus does).
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let arrived = Instant::now();
    match state.scraper.scrape(arrived).await {
        Ok(r) => {
            let (body, content_type) = if wants_openmetrics(&headers) {
                (r.openmetrics.clone(), OPENMETRICS_TEXT)
            } else {
                (r.text.clone(), PROMETHEUS_TEXT)
            };
            tracing::trace!(
                took_ms = arrived.elapsed().as_millis() as u64,
                bytes = body.len(),
                "scrape served"
            );
            (
                [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
                body,
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering /metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    match (state.health)() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_accept_header_selects_openmetrics() {
        let mut h = HeaderMap::new();
        assert!(!wants_openmetrics(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ),
        );
        assert!(wants_openmetrics(&h));
    }
}
