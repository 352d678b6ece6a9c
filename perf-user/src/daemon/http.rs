//! The HTTP endpoint: `/metrics`, `/healthz`, and an index page at `/`.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use super::{
    exposition::{OPENMETRICS_TEXT, PROMETHEUS_TEXT},
    scrape::Scraper,
};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Renders `/metrics`.
    pub scraper: Arc<Scraper>,
    /// Answers `/healthz`: `Err(reason)` when a collector stopped working.
    pub health: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
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

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/", get(index))
        .with_state(state)
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
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request headers of {size} bytes; at most {MAX_HEADER_BYTES} are accepted\n"),
        )
            .into_response();
    }
    next.run(request).await
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(HttpError::Serve)
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

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><title>perf-user</title><h1>perf-user</h1>\
         <p><a href=\"/metrics\">/metrics</a> (Prometheus) · <a href=\"/healthz\">/healthz</a></p>\n",
    )
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
