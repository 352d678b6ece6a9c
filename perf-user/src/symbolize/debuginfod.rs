//! A debuginfod client, as elfutils' (`libdebuginfod`) behaves: used only
//! when `DEBUGINFOD_URLS` is set, `GET $URL/buildid/<hex>/debuginfo` on each
//! server in turn, and files kept in the same cache as elfutils' tools
//! (`$DEBUGINFOD_CACHE_PATH`, else `$XDG_CACHE_HOME/debuginfod_client`,
//! else `~/.cache/debuginfod_client`; `<cache>/<buildid>/debuginfo`), so
//! that gdb, perf and perf-user download each file once between them.
//!
//! A cached file is used without asking any server. Each file has a time
//! limit (`DEBUGINFOD_MAXTIME` seconds, else [`DEFAULT_LIMIT`]), and every
//! download of a batch runs at once, so a slow or unreachable server costs
//! one limit per report, not one per file. A server's 404 is remembered as
//! elfutils does (an empty file, for `cache_miss_s` seconds).

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Mutex, mpsc},
    time::{Duration, Instant, SystemTime},
};

/// Time limit per file when `DEBUGINFOD_MAXTIME` is not set.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(30);
/// How long a server's "not found" stands, unless the cache's `cache_miss_s` says otherwise (elfutils' default).
const DEFAULT_CACHE_MISS: Duration = Duration::from_secs(600);
/// How long a failed attempt (timeout, refused) keeps a file from being asked for again in this process.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// The client's settings, from the environment.
#[derive(Clone, Debug)]
pub struct Debuginfod {
    urls: Vec<String>,
    cache: PathBuf,
    limit: Duration,
    connect: Duration,
}

/// Build IDs that failed lately in this process, with when; shared by every
/// symbolizer (the daemon makes one per window).
static FAILED: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);

impl Debuginfod {
    /// The client, or None when `DEBUGINFOD_URLS` is unset or empty: then
    /// nothing is ever sent.
    pub fn from_env() -> Option<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Debuginfod::from_env`] with the variables from `get`.
    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let urls: Vec<String> = var("DEBUGINFOD_URLS")?
            .split_whitespace()
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .collect();
        if urls.is_empty() {
            return None;
        }
        let cache = var("DEBUGINFOD_CACHE_PATH")
            .map(PathBuf::from)
            .or_else(|| var("XDG_CACHE_HOME").map(|d| Path::new(&d).join("debuginfod_client")))
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache/debuginfod_client")))?;
        let secs = |k: &str| {
            var(k)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&s| s > 0)
                .map(Duration::from_secs)
        };
        let limit = secs("DEBUGINFOD_MAXTIME").unwrap_or(DEFAULT_LIMIT);
        let connect = secs("DEBUGINFOD_TIMEOUT").unwrap_or(limit).min(limit);
        Some(Self {
            urls,
            cache,
            limit,
            connect,
        })
    }

    /// The servers asked, as given.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Where a build ID's debug file is cached.
    pub fn cache_path(&self, build_id: &str) -> PathBuf {
        self.cache.join(build_id).join("debuginfo")
    }

    /// The cached debug file of `build_id`, if one was downloaded before.
    pub fn cached(&self, build_id: &str) -> Option<PathBuf> {
        let path = self.cache_path(build_id);
        let meta = fs::metadata(&path).ok()?;
        (meta.is_file() && meta.len() > 0).then_some(path)
    }

    /// True when the cache says the servers lately had no such file, or it
    /// failed here lately: do not ask again yet.
    fn recently_missed(&self, build_id: &str) -> bool {
        let failed = FAILED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|m| m.get(build_id).copied());
        if failed.is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE) {
            return true;
        }
        let Ok(meta) = fs::metadata(self.cache_path(build_id)) else {
            return false;
        };
        let miss = fs::read_to_string(self.cache.join("cache_miss_s"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map_or(DEFAULT_CACHE_MISS, Duration::from_secs);
        meta.len() == 0
            && meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age < miss)
    }

    /// Fetches the debug files of these build IDs (lower-case hex) that are
    /// not cached, all at once, each within the time limit; returns the
    /// path of each one found (cached or downloaded) and, for the others
    /// that were asked for, why not.
    pub fn fetch(&self, build_ids: &[String]) -> HashMap<String, Result<PathBuf, String>> {
        let mut out = HashMap::new();
        let mut todo = Vec::new();
        for id in build_ids {
            if !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.len() < 4 {
                continue;
            }
            if let Some(p) = self.cached(id) {
                out.insert(id.clone(), Ok(p));
            } else if !self.recently_missed(id) {
                todo.push(id.clone());
            }
        }
        if todo.is_empty() {
            return out;
        }
        // Its own thread and runtime: callers may run inside a tokio
        // runtime, which cannot block on another. The caller waits at most
        // the time limit (plus a margin) even if a download ignored it.
        let (tx, rx) = mpsc::channel();
        let this = self.clone();
        let ids = todo.clone();
        let spawned = std::thread::Builder::new()
            .name("debuginfod".into())
            .spawn(move || {
                let _ = tx.send(this.fetch_blocking(&ids));
            });
        let results = match spawned {
            Ok(_) => rx
                .recv_timeout(self.limit + Duration::from_secs(2))
                .unwrap_or_default(),
            Err(_) => HashMap::new(),
        };
        let mut failed = FAILED.lock().unwrap_or_else(|e| e.into_inner());
        let failed = failed.get_or_insert_with(HashMap::new);
        for id in todo {
            let r = results
                .get(&id)
                .cloned()
                .unwrap_or_else(|| Err(format!("no answer within {} s", self.limit.as_secs())));
            if r.is_err() {
                failed.insert(id.clone(), Instant::now());
            }
            out.insert(id, r);
        }
        out
    }

    fn fetch_blocking(&self, ids: &[String]) -> HashMap<String, Result<PathBuf, String>> {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                return ids
                    .iter()
                    .map(|id| (id.clone(), Err(format!("no runtime: {e}"))))
                    .collect();
            }
        };
        rt.block_on(async {
            let client = match reqwest::Client::builder()
                .connect_timeout(self.connect)
                .timeout(self.limit)
                .user_agent(concat!("perf-user/", env!("CARGO_PKG_VERSION")))
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    return ids
                        .iter()
                        .map(|id| (id.clone(), Err(format!("no HTTP client: {e}"))))
                        .collect();
                }
            };
            let tasks: Vec<_> = ids
                .iter()
                .map(|id| {
                    let (client, this, id) = (client.clone(), self.clone(), id.clone());
                    tokio::spawn(async move {
                        let r = tokio::time::timeout(this.limit, this.fetch_one(&client, &id))
                            .await
                            .unwrap_or_else(|_| {
                                Err(format!("no answer within {} s", this.limit.as_secs()))
                            });
                        (id, r)
                    })
                })
                .collect();
            let mut out = HashMap::new();
            for t in tasks {
                if let Ok((id, r)) = t.await {
                    out.insert(id, r);
                }
            }
            out
        })
    }

    /// Asks each server in turn; the first that has the file wins.
    async fn fetch_one(&self, client: &reqwest::Client, id: &str) -> Result<PathBuf, String> {
        let mut why = Vec::new();
        let mut all_404 = true;
        for url in &self.urls {
            let full = format!("{url}/buildid/{id}/debuginfo");
            match self.download(client, &full, id).await {
                Ok(p) => return Ok(p),
                Err((status, e)) => {
                    all_404 &= status == Some(404);
                    why.push(format!("{url}: {e}"));
                }
            }
        }
        if all_404 {
            self.remember_miss(id);
        }
        Err(why.join("; "))
    }

    async fn download(
        &self,
        client: &reqwest::Client,
        url: &str,
        id: &str,
    ) -> Result<PathBuf, (Option<u16>, String)> {
        let err = |e: &dyn std::fmt::Display| (None, error_chain(e));
        let mut resp = client.get(url).send().await.map_err(|e| err(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err((Some(status.as_u16()), format!("HTTP {status}")));
        }
        let dir = self.cache.join(id);
        fs::create_dir_all(&dir).map_err(|e| err(&e))?;
        // Written under a temporary name and renamed: a reader (another
        // tool, or a download cut short) never sees half a file.
        let tmp = dir.join(format!(".debuginfo.perf-user.{}", std::process::id()));
        let mut f = fs::File::create(&tmp).map_err(|e| err(&e))?;
        let written = async {
            while let Some(chunk) = resp.chunk().await.map_err(|e| err(&e))? {
                f.write_all(&chunk).map_err(|e| err(&e))?;
            }
            f.flush().map_err(|e| err(&e))
        }
        .await;
        drop(f);
        let path = dir.join("debuginfo");
        let done = written.and_then(|()| fs::rename(&tmp, &path).map_err(|e| err(&e)));
        if done.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        done.map(|()| path)
    }

    /// An empty cache file marks "not found", as elfutils' clients mark it.
    fn remember_miss(&self, id: &str) {
        let dir = self.cache.join(id);
        if fs::create_dir_all(&dir).is_ok() && !dir.join("debuginfo").exists() {
            let _ = fs::File::create(dir.join("debuginfo"));
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::fmt::Display) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_without_urls_and_the_cache_as_elfutils_places_it() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(Debuginfod::from_vars(env(&[("HOME", "/root")])).is_none());
        assert!(Debuginfod::from_vars(env(&[("DEBUGINFOD_URLS", "  ")])).is_none());
        let d = Debuginfod::from_vars(env(&[
            ("DEBUGINFOD_URLS", "http://127.0.0.1:1/ https://x.example"),
            ("XDG_CACHE_HOME", "/tmp/xdg"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        assert_eq!(d.urls(), ["http://127.0.0.1:1", "https://x.example"]);
        assert_eq!(
            d.cache_path("abcd"),
            Path::new("/tmp/xdg/debuginfod_client/abcd/debuginfo")
        );
        assert_eq!(d.limit, DEFAULT_LIMIT);
        let d = Debuginfod::from_vars(env(&[
            ("DEBUGINFOD_URLS", "http://h"),
            ("DEBUGINFOD_CACHE_PATH", "/var/cache/dbg"),
            ("XDG_CACHE_HOME", "/tmp/xdg"),
            ("DEBUGINFOD_MAXTIME", "5"),
        ]))
        .unwrap();
        assert_eq!(
            d.cache_path("ab12"),
            Path::new("/var/cache/dbg/ab12/debuginfo")
        );
        assert_eq!(d.limit, Duration::from_secs(5));
        let d = Debuginfod::from_vars(env(&[("DEBUGINFOD_URLS", "http://h"), ("HOME", "/home/u")]))
            .unwrap();
        assert_eq!(
            d.cache_path("ab12"),
            Path::new("/home/u/.cache/debuginfod_client/ab12/debuginfo")
        );
    }
}
