//! Helpers for the tests that run `perf-user run` and scrape it (daemon,
//! web_config): a minimal HTTP/1.1 client, the daemon on a free port, and a
//! real Prometheus server (Debian package `prometheus`) to query.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{CmdOutput, Running, perf_user};

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client (std only), enough for the daemon and Prometheus.

/// Status, headers (lower-case names) and body of a response.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// GET `path` from `addr`, with optional extra request headers.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    http_request(addr, "GET", path, extra, None)
}

/// `method` `path` on `addr`, with optional extra request headers and a
/// JSON body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    json: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = json {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(json.unwrap_or(""));
    stream.write_all(req.as_bytes())?;
    let raw = read_response(&mut stream)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Reads a response until the server closes the connection or, when it
/// keeps it open (chromedriver does, whatever the request says), until
/// Content-Length bytes of body arrived.
fn read_response(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        if length.is_some_and(|len| raw.len() >= split + 4 + len) {
            return Ok(raw);
        }
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
}

/// Percent-encodes a query parameter.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(pid as i32, sig) };
}

// ---------------------------------------------------------------------------
// The daemon.

/// A running `perf-user run`, stopped with SIGTERM when dropped.
pub struct Daemon {
    pub run: Option<Running>,
    pub addr: SocketAddr,
    started: Instant,
}

impl Daemon {
    /// Starts the daemon on a free port with `args`, and waits until
    /// /healthz answers 200.
    pub fn start(args: &[&str]) -> Daemon {
        Self::start_until(args, |addr| {
            http_get(addr, "/healthz", &[]).is_ok_and(|r| r.status == 200)
        })
    }

    /// Starts the daemon on a free port with `args`, and waits until
    /// `ready` says it is (at most a minute).
    pub fn start_until(args: &[&str], ready: impl Fn(SocketAddr) -> bool) -> Daemon {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = perf_user(&["run", "--listen", &addr.to_string(), "--log-format", "json"]);
        cmd.args(args);
        let started = Instant::now();
        let mut run = Running::start(cmd);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if !run.is_running() {
                let out = run.finish(Duration::from_secs(1));
                panic!("perf-user run exited at start\n{}", out.describe());
            }
            if ready(addr) {
                break;
            }
            if Instant::now() > deadline {
                let out = run.finish(Duration::from_secs(1));
                panic!("perf-user run never became ready\n{}", out.describe());
            }
            thread::sleep(Duration::from_millis(100));
        }
        Daemon {
            run: Some(run),
            addr,
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.run.as_ref().unwrap().child.id()
    }

    /// A scrape in the Prometheus text format.
    pub fn scrape(&self) -> String {
        let r = http_get(self.addr, "/metrics", &[]).expect("GET /metrics");
        assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
        r.body
    }

    /// Sends SIGTERM and waits for the exit, at most 30 s.
    pub fn stop(mut self) -> CmdOutput {
        let run = self.run.take().unwrap();
        signal(run.child.id(), libc::SIGTERM);
        // `finish` counts its timeout from the start of the process.
        run.finish(self.started.elapsed() + Duration::from_secs(30))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            signal(run.child.id(), libc::SIGTERM);
            let _ = run.finish(self.started.elapsed() + Duration::from_secs(10));
        }
    }
}

// ---------------------------------------------------------------------------
// A real Prometheus server.

/// `prometheus` on a free port with a 1 s scrape interval, killed when dropped.
pub struct Prometheus {
    pub addr: SocketAddr,
    run: Option<Running>,
}

impl Prometheus {
    /// Starts `/usr/bin/prometheus` with `scrape_configs` (YAML list items,
    /// indented by two spaces) in `dir`.
    pub fn start(dir: &Path, scrape_configs: &str) -> Prometheus {
        let prometheus = Path::new("/usr/bin/prometheus");
        assert!(
            prometheus.exists(),
            "{} is missing: install the Debian package `prometheus` (cargo xtask test does)",
            prometheus.display()
        );
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n{scrape_configs}"
            ),
        )
        .unwrap();
        let data = dir.join("prometheus-data");
        let mut cmd = Command::new(prometheus);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null());
        Prometheus {
            addr,
            run: Some(Running::start(cmd)),
        }
    }

    /// The result of an instant query, when it succeeded.
    pub fn query(&self, q: &str) -> Option<Value> {
        let r = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(q)),
            &[],
        )
        .ok()?;
        let v: Value = serde_json::from_str(&r.body).ok()?;
        (v["status"] == "success").then(|| v["data"]["result"].clone())
    }

    /// The first value of `q` once `pred` holds for it (within a minute).
    pub fn wait_for(&self, q: &str, pred: &dyn Fn(f64) -> bool) -> Option<f64> {
        let first_value = |result: &Value| -> Option<f64> {
            result.as_array()?.first()?["value"][1]
                .as_str()?
                .parse()
                .ok()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(v) = self.query(q).as_ref().and_then(first_value)
                && pred(v)
            {
                return Some(v);
            }
            thread::sleep(Duration::from_millis(500));
        }
        None
    }

    /// The scrape targets' health and last error, for assertion messages.
    pub fn targets(&self) -> String {
        http_get(self.addr, "/api/v1/targets", &[])
            .map(|r| r.body)
            .unwrap_or_else(|e| format!("GET /api/v1/targets: {e}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Killed: its shutdown is not what is tested, and its connections
        // then close at once.
        if let Some(run) = self.run.take() {
            signal(run.child.id(), libc::SIGKILL);
            let _ = run.finish(Duration::ZERO);
        }
    }
}
