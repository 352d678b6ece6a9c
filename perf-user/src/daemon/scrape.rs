//! One scrape: every source is read (kernel maps at scrape time), timed,
//! and its families merged into one exposition.
//!
//! Concurrent scrapes share work: a request waits for a render that started
//! after it arrived, so N scrapers at once cost at most two renders, never N
//! (each render reads every kernel map), and no request gets data older
//! than itself.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use axum::body::Bytes;
use tokio::sync::Mutex;

use super::exposition::{self, Family, Kind};
use crate::observe::Reading;

/// The error a source returns; it is logged and counted, never fatal.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Something that contributes metrics to each scrape.
pub trait Source: Send + Sync {
    /// Name as used in the `collector` label.
    fn name(&self) -> &'static str;
    /// Reads what it exports, now.
    fn collect(&self) -> Result<Vec<Family>, SourceError>;
    /// Reads its typed snapshot for the alert engine, now; `None` for
    /// sources that feed no signal.
    fn read(&self) -> Result<Option<Reading>, SourceError> {
        Ok(None)
    }
    /// The source itself, for the endpoints that serve more than its
    /// metrics (`/debug/pprof/*`); `None` for the others.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
    /// `Err(reason)` when it has stopped working (for `/healthz`).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A finished exposition, in both formats.
#[derive(Debug)]
pub struct Rendered {
    /// When reading started.
    pub started: Instant,
    /// OpenMetrics text (cheap to clone into many responses).
    pub openmetrics: Bytes,
    /// Prometheus text format 0.0.4.
    pub text: Bytes,
    /// Families in the order written (for tests and the index page).
    pub family_count: usize,
}

/// The sources read at one scrape, in order. Shared, so a reload can keep
/// the unchanged ones and a scrape in flight can finish with the set it
/// started with.
pub type SourceSet = Arc<[Arc<dyn Source>]>;

/// All sources, and the render that concurrent requests share.
pub struct Scraper {
    /// Replaced whole by [`Scraper::replace`] (a configuration reload).
    sources: RwLock<SourceSet>,
    last: Mutex<Option<Arc<Rendered>>>,
}

impl Scraper {
    /// A scraper over `sources`, read in this order.
    pub fn new(sources: Vec<Arc<dyn Source>>) -> Self {
        Self {
            sources: RwLock::new(sources.into()),
            last: Mutex::new(None),
        }
    }

    /// The sources in force now.
    pub fn sources(&self) -> SourceSet {
        Arc::clone(&self.sources.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `sources` in force and returns the set they replace. Scrapes
    /// already reading go on with the old set, which lives (and keeps its
    /// collectors attached) until the last of them finishes.
    pub fn replace(&self, sources: Vec<Arc<dyn Source>>) -> SourceSet {
        let mut current = self.sources.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *current, sources.into())
    }

    /// The exposition for a request that arrived at `arrived`.
    pub async fn scrape(self: &Arc<Self>, arrived: Instant) -> Result<Arc<Rendered>, ScrapeError> {
        let mut last = self.last.lock().await;
        if let Some(r) = last.as_ref().filter(|r| r.started >= arrived) {
            return Ok(Arc::clone(r));
        }
        let this = Arc::clone(self);
        // Reading maps and /proc are blocking syscalls: off the async workers.
        let rendered = tokio::task::spawn_blocking(move || this.render())
            .await
            .map_err(|e| ScrapeError(format!("the scrape task failed: {e}")))??;
        let rendered = Arc::new(rendered);
        *last = Some(Arc::clone(&rendered));
        Ok(rendered)
    }

    /// `Err` naming every source that has stopped working.
    pub fn health(&self) -> Result<(), String> {
        let bad: Vec<String> = self
            .sources()
            .iter()
            .filter_map(|s| s.health().err().map(|e| format!("{}: {e}", s.name())))
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("; "))
        }
    }

    /// Reads every source and encodes the result.
    pub fn render(&self) -> Result<Rendered, ScrapeError> {
        let started = Instant::now();
        let families = self.collect_all();
        let family_count = families.len();
        let openmetrics = exposition::encode_openmetrics(&families)
            .map_err(|_| ScrapeError("encoding the metrics failed".into()))?;
        let text = exposition::to_prometheus_text(&openmetrics);
        Ok(Rendered {
            started,
            openmetrics: Bytes::from(openmetrics),
            text: Bytes::from(text),
            family_count,
        })
    }

    /// Every source's typed snapshot, for the alert engine; a source that
    /// fails is logged and left out (its signals then have no data).
    pub fn read_all(&self) -> Vec<Reading> {
        let mut out = Vec::new();
        for source in self.sources().iter() {
            match source.read() {
                Ok(reading) => out.extend(reading),
                Err(e) => {
                    tracing::warn!(collector = source.name(), error = %e, "reading the collector for the alert rules failed");
                }
            }
        }
        out
    }

    /// Every source's families, merged by name, followed by each source's
    /// success and duration (as node_exporter reports its collectors).
    pub fn collect_all(&self) -> Vec<Family> {
        let mut merged: BTreeMap<&'static str, Family> = BTreeMap::new();
        let mut success = Family::new(
            "perf_user_scrape_collector_success",
            Kind::Gauge,
            "1 if the collector's last read at scrape time succeeded, 0 if it failed (the daemon log says why).",
        );
        let mut duration = Family::new(
            "perf_user_scrape_collector_duration_seconds",
            Kind::Gauge,
            "Time the collector took to read its kernel maps and /proc at this scrape.",
        );
        for source in self.sources().iter() {
            let t = Instant::now();
            let result = source.collect();
            let took = t.elapsed();
            let ok = match result {
                Ok(families) => {
                    for f in families {
                        match merged.get_mut(f.name) {
                            Some(existing) => existing.samples.extend(f.samples),
                            None => {
                                merged.insert(f.name, f);
                            }
                        }
                    }
                    true
                }
                Err(e) => {
                    tracing::warn!(collector = source.name(), error = %e, "reading the collector at scrape time failed");
                    false
                }
            };
            let label = vec![("collector", source.name().to_string())];
            success.push(label.clone(), f64::from(u8::from(ok)));
            duration.push(label, secs(took));
        }
        let mut out: Vec<Family> = merged.into_values().collect();
        out.push(success);
        out.push(duration);
        out
    }
}

/// Seconds as f64.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Why a scrape produced nothing at all (a source failing does not count).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScrapeError(String);

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, bool);

    impl Source for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn collect(&self) -> Result<Vec<Family>, SourceError> {
            if !self.1 {
                return Err("map gone".into());
            }
            let mut f = Family::new("perf_user_lost_events_total", Kind::Counter, "Lost events.");
            f.push(vec![("collector", self.0.to_string())], 1.0);
            Ok(vec![f])
        }
    }

    #[test]
    fn same_family_from_two_sources_is_merged_and_failures_are_reported() {
        let s = Scraper::new(vec![
            Arc::new(Fixed("a", true)),
            Arc::new(Fixed("b", true)),
            Arc::new(Fixed("c", false)),
        ]);
        let text = String::from_utf8(s.render().unwrap().text.to_vec()).unwrap();
        assert_eq!(
            text.matches("# TYPE perf_user_lost_events_total counter")
                .count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("perf_user_lost_events_total{collector=\"b\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("perf_user_scrape_collector_success{collector=\"c\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("perf_user_scrape_collector_success{collector=\"a\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn concurrent_scrapes_share_a_render() {
        let s = Arc::new(Scraper::new(vec![Arc::new(Fixed("a", true))]));
        let arrived = Instant::now();
        let first = s.scrape(arrived).await.unwrap();
        // A request that arrived before the last render started reuses it.
        let again = s.scrape(arrived).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // A later request gets a fresh one.
        let later = s.scrape(Instant::now()).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &later));
    }

    #[test]
    fn replaced_sources_are_read_from_the_next_scrape_on() {
        let s = Scraper::new(vec![Arc::new(Fixed("a", true))]);
        let old = s.replace(vec![Arc::new(Fixed("b", true))]);
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].name(), "a");
        let text = String::from_utf8(s.render().unwrap().text.to_vec()).unwrap();
        assert!(text.contains("collector=\"b\""), "{text}");
        assert!(!text.contains("collector=\"a\""), "{text}");
    }
}
