//! The Alertmanager sink: alerts posted in Alertmanager's API v2 format
//! (`POST /api/v2/alerts`, a JSON array of `{labels, annotations, startsAt,
//! endsAt, generatorURL}`), as Prometheus sends them.
//!
//! Like Prometheus, a firing alert is re-sent every `resend_interval` with
//! `endsAt` a few intervals ahead: if perf-user stops, Alertmanager resolves
//! the alert by itself when `endsAt` passes. A resolved alert is sent with
//! `endsAt` set to when it resolved.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::{
    advice::Advice,
    engine::{Alert, State},
    signals::Labels,
};

/// One alert as Alertmanager's `PostableAlert`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PostableAlert {
    /// Identify the alert: Alertmanager groups and deduplicates by them.
    pub labels: BTreeMap<String, String>,
    /// Free text: summary, description, evidence, advice.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// RFC 3339.
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    /// Where the alert comes from.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// What every alert from this host carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The `instance` label (the host name by default).
    pub instance: String,
    /// Added to every alert's labels (e.g. `cluster`); series labels win.
    pub extra_labels: Labels,
    /// `generatorURL`.
    pub generator_url: String,
}

/// Longest annotation value sent: Alertmanager keeps alerts in memory, and
/// templates put annotations into chat messages.
const MAX_ANNOTATION: usize = 4000;

/// `alert` with its `advice` as Alertmanager expects it at `now`; a firing
/// alert stays valid for `valid_for` unless re-sent.
pub fn postable(
    alert: &Alert,
    advice: Option<&Advice>,
    id: &Identity,
    now: SystemTime,
    valid_for: Duration,
) -> PostableAlert {
    let mut labels: BTreeMap<String, String> = id.extra_labels.clone();
    labels.insert("instance".into(), id.instance.clone());
    labels.insert("job".into(), "perf-user".into());
    for (k, v) in &alert.labels {
        labels.insert(k.clone(), v.clone());
    }
    labels.insert("alertname".into(), alert.rule.clone());
    labels.insert("severity".into(), alert.severity.as_str().into());

    let mut annotations = BTreeMap::new();
    annotations.insert("summary".into(), alert.summary.clone());
    annotations.insert("fingerprint".into(), alert.fingerprint.clone());
    annotations.insert("value".into(), alert.signal.unit().format(alert.value));
    annotations.insert("signal".into(), alert.signal.name().into());
    if let Some(r) = &alert.resolution {
        annotations.insert("resolution".into(), r.clone());
    }
    if let Some(a) = advice {
        annotations.insert("description".into(), a.diagnosis.clone());
        let facts: Vec<String> = a
            .evidence
            .iter()
            .map(|f| format!("{}: {}", f.name, f.value))
            .collect();
        annotations.insert("evidence".into(), facts.join("\n"));
        if !a.stack.is_empty() {
            annotations.insert("stack".into(), a.stack.join("\n"));
        }
        let tries: Vec<String> = a
            .suggestions
            .iter()
            .enumerate()
            .map(|(i, s)| match &s.action {
                Some(act) => format!(
                    "{}. {} [perf-user advise --apply: {} = {}]",
                    i + 1,
                    s.text,
                    act.setting.display(),
                    act.value
                ),
                None => format!("{}. {}", i + 1, s.text),
            })
            .collect();
        annotations.insert("advice".into(), tries.join("\n"));
    } else if !alert.detail.is_empty() {
        annotations.insert("description".into(), alert.detail.clone());
    }
    for v in annotations.values_mut() {
        clip(v, MAX_ANNOTATION);
    }

    let starts = alert.fired_at.unwrap_or(alert.active_since);
    let ends = match alert.state {
        State::Resolved => alert.resolved_at.unwrap_or(now),
        _ => now + valid_for,
    };
    PostableAlert {
        labels,
        annotations,
        starts_at: rfc3339(starts),
        ends_at: rfc3339(ends),
        generator_url: id.generator_url.clone(),
    }
}

fn clip(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

/// `2026-11-22T09:13:01.250Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, valid for the proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Why a post failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The client could not be built (TLS set-up).
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// No answer.
    #[error("POST {url} failed: {reason}")]
    Transport {
        /// Endpoint.
        url: String,
        /// What went wrong (connection refused, timeout...).
        reason: String,
    },
    /// An answer other than 2xx.
    #[error("POST {url} answered {status}: {body}")]
    Status {
        /// Endpoint.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of the body, which says why.
        body: String,
    },
}

/// The endpoint for an Alertmanager base URL: `http://am:9093` →
/// `http://am:9093/api/v2/alerts` (a URL already ending so is kept).
pub fn endpoint(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/api/v2/alerts") {
        base.to_string()
    } else {
        format!("{base}/api/v2/alerts")
    }
}

/// Posts alerts to one or more Alertmanagers (each gets every alert, as
/// Prometheus does with an Alertmanager cluster).
#[derive(Clone, Debug)]
pub struct Sender {
    client: reqwest::Client,
    endpoints: Vec<String>,
    attempts: u32,
}

impl Sender {
    /// A sender to `urls` (Alertmanager base URLs), each request bounded by `timeout`.
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self, WebhookError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("perf-user/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Self {
            client,
            endpoints: urls.iter().map(|u| endpoint(u)).collect(),
            attempts: 3,
        })
    }

    /// The endpoints posted to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Posts `alerts` to every endpoint; one result per endpoint. Connection
    /// failures and 5xx answers are retried twice (after 1 s, then 2 s);
    /// 4xx answers are not (the payload is wrong, retrying will not help).
    pub async fn send(&self, alerts: &[PostableAlert]) -> Vec<(String, Result<(), WebhookError>)> {
        let body = serde_json::to_vec(alerts).expect("alerts serialize");
        let mut out = Vec::new();
        for url in &self.endpoints {
            let mut result = Ok(());
            for attempt in 0..self.attempts {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                }
                result = self.post(url, body.clone()).await;
                match &result {
                    Ok(()) => break,
                    Err(WebhookError::Status { status, .. }) if *status < 500 => break,
                    Err(_) => {}
                }
            }
            out.push((url.clone(), result));
        }
        out
    }

    async fn post(&self, url: &str, body: Vec<u8>) -> Result<(), WebhookError> {
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| WebhookError::Transport {
                url: url.to_string(),
                reason: error_chain(&e),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut body = response.text().await.unwrap_or_default();
        clip(&mut body, 300);
        Err(WebhookError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            body,
        })
    }
}

/// An error and its causes on one line (reqwest's top-level message alone
/// says "error sending request" without the why).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};

    use super::*;
    use crate::alerts::{
        advice::{Fact, Suggestion},
        engine::{Engine, EngineOptions},
        rules::defaults,
        signals::{Batch, Evidence, Observation, Signal, labels},
    };

    fn firing_alert() -> Alert {
        let mut e = Engine::new(
            defaults()
                .into_iter()
                .filter(|r| r.name == "DiskLatencyHigh")
                .collect(),
            EngineOptions::default(),
        );
        let t0 = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let obs = Observation {
            signal: Signal::BlockLatencyP99,
            labels: labels([("device", "loop3"), ("op", "write")]),
            value: 0.4,
            count: 500,
            evidence: Evidence::None,
        };
        let mut last = None;
        for s in [0, 60] {
            let mut b = Batch::new(t0 + Duration::from_secs(s), Duration::from_secs(10));
            b.extend(&[Signal::BlockLatencyP99], vec![obs.clone()]);
            last = e.evaluate(&b).pop();
        }
        last.unwrap().alert
    }

    fn id() -> Identity {
        Identity {
            instance: "host1".into(),
            extra_labels: labels([("cluster", "c1"), ("device", "overridden")]),
            generator_url: "http://host1:9464/".into(),
        }
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_250)),
            "2000-02-29T00:00:00.250Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_000_000)),
            "2026-11-18T11:06:40.000Z"
        );
    }

    #[test]
    fn payload_has_alertmanager_fields_and_series_labels_win() {
        let mut a = firing_alert();
        let advice = Some(Advice {
            diagnosis: "queueing".into(),
            evidence: vec![Fact {
                name: "nr_requests".into(),
                value: "128".into(),
            }],
            stack: vec![],
            suggestions: vec![Suggestion {
                text: "lower it".into(),
                action: None,
            }],
        });
        let now = a.fired_at.unwrap() + Duration::from_secs(5);
        let p = postable(&a, advice.as_ref(), &id(), now, Duration::from_secs(240));
        let json = serde_json::to_value([&p]).unwrap();
        let first = &json[0];
        for key in [
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
        ] {
            assert!(first.get(key).is_some(), "{key} missing: {first}");
        }
        assert_eq!(first["labels"]["alertname"], "DiskLatencyHigh");
        assert_eq!(first["labels"]["severity"], "warning");
        assert_eq!(first["labels"]["device"], "loop3");
        assert_eq!(first["labels"]["cluster"], "c1");
        assert_eq!(first["labels"]["instance"], "host1");
        assert_eq!(first["annotations"]["description"], "queueing");
        assert_eq!(first["annotations"]["advice"], "1. lower it");
        assert_eq!(first["startsAt"], "2026-11-18T11:07:40.000Z");
        assert_eq!(first["endsAt"], "2026-11-18T11:11:45.000Z");
        a.state = State::Resolved;
        a.resolved_at = Some(now);
        let r = postable(
            &a,
            advice.as_ref(),
            &id(),
            now + Duration::from_secs(100),
            Duration::from_secs(240),
        );
        assert_eq!(r.ends_at, rfc3339(now));
    }

    #[test]
    fn endpoints_are_derived_from_base_urls() {
        assert_eq!(endpoint("http://am:9093"), "http://am:9093/api/v2/alerts");
        assert_eq!(endpoint("http://am:9093/"), "http://am:9093/api/v2/alerts");
        assert_eq!(
            endpoint("https://x/am/api/v2/alerts"),
            "https://x/am/api/v2/alerts"
        );
    }

    /// A one-shot HTTP server answering each request with `status`; returns
    /// the requests' (request line, body).
    fn serve(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<Vec<(String, String)>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for status in statuses {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let mut stream = reader.into_inner();
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
                )
                .unwrap();
                seen.push((line.trim().to_string(), String::from_utf8(body).unwrap()));
            }
            seen
        });
        (url, handle)
    }

    #[tokio::test]
    async fn posts_json_and_retries_server_errors_only() {
        let p = postable(
            &firing_alert(),
            None,
            &id(),
            SystemTime::now(),
            Duration::from_secs(60),
        );
        let (url, server) = serve(vec![503, 200]);
        let sender = Sender::new(&[url], Duration::from_secs(5)).unwrap();
        let results = sender.send(std::slice::from_ref(&p)).await;
        assert!(results[0].1.is_ok(), "{results:?}");
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 2, "one retry after the 503");
        assert_eq!(seen[1].0, "POST /api/v2/alerts HTTP/1.1");
        let body: serde_json::Value = serde_json::from_str(&seen[1].1).unwrap();
        assert_eq!(body[0]["labels"]["alertname"], "DiskLatencyHigh");

        let (url, server) = serve(vec![400]);
        let sender = Sender::new(&[url], Duration::from_secs(5)).unwrap();
        let results = sender.send(&[p]).await;
        let e = results[0].1.as_ref().unwrap_err().to_string();
        assert!(e.contains("answered 400: nope"), "{e}");
        assert_eq!(server.join().unwrap().len(), 1, "no retry after a 4xx");
    }
}
