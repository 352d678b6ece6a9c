//! `basic_auth_users`: HTTP basic authentication against bcrypt hashes,
//! with failed logins counted, logged (user and address, never the
//! password) and rate-limited per client address.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine as _;

/// Failed logins an address may make at once before it must wait...
pub const FAILED_LOGIN_BURST: u32 = 10;
/// ... and then one more per this interval.
pub const FAILED_LOGIN_REFILL: Duration = Duration::from_secs(6);
/// Addresses remembered at most (the oldest is forgotten first): bounds the
/// memory a scan from many addresses can take.
const MAX_ADDRESSES: usize = 4096;
/// Correct logins remembered, so that a scraper's request costs no bcrypt run.
const MAX_CACHED: usize = 64;

/// A bcrypt hash (cost 10) of a password nobody has: checked for unknown
/// users, so that a reply takes as long whether or not the user exists.
const DUMMY_HASH: &str = "$2b$10$Qz/.7HvcooxIAEozApoWjOIwOt3kV7B0pDUx2MrYHpegOQK.cb2ai";

/// Why a request was refused: the `reason` label of
/// `perf_user_http_auth_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No (or no well-formed) `Authorization: Basic` header: 401.
    MissingCredentials,
    /// Unknown user or wrong password: 401.
    WrongCredentials,
    /// Too many failed logins from the address lately: 429.
    RateLimited,
}

impl Failure {
    /// Every reason, in label order.
    pub const ALL: [Failure; 3] = [
        Failure::MissingCredentials,
        Failure::WrongCredentials,
        Failure::RateLimited,
    ];

    /// The label value.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::MissingCredentials => "missing_credentials",
            Failure::WrongCredentials => "wrong_credentials",
            Failure::RateLimited => "rate_limited",
        }
    }

    fn count(self) {
        FAILURES[self as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Failures since start, by [`Failure`].
static FAILURES: [AtomicU64; Failure::ALL.len()] =
    [const { AtomicU64::new(0) }; Failure::ALL.len()];

/// Failures of `reason` since start.
pub fn failures(reason: Failure) -> u64 {
    FAILURES[reason as usize].load(Ordering::Relaxed)
}

/// User and password from an `Authorization: Basic` header value.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// One address's failed-login bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Checks credentials; shared by all connections.
#[derive(Debug)]
pub struct Authenticator {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// Digests of (user, hash, password) that verified, oldest first.
    cached: Mutex<VecDeque<[u8; 32]>>,
    /// One bcrypt run at a time: each takes tens of milliseconds of CPU.
    bcrypt: tokio::sync::Semaphore,
}

/// What [`Authenticator::check`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through.
    Allowed,
    /// Refuse it; for [`Failure::RateLimited`], with the seconds to wait.
    Refused(Failure, u64),
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl Authenticator {
    /// A new one, with nothing cached.
    pub fn new() -> Self {
        Self {
            buckets: Mutex::default(),
            cached: Mutex::default(),
            bcrypt: tokio::sync::Semaphore::new(1),
        }
    }

    /// Checks the `Authorization` header of a request from `peer` against
    /// `users` (name → bcrypt hash). Each refusal is counted; a wrong login
    /// is logged with the user and address.
    pub async fn check(
        &self,
        users: &std::collections::BTreeMap<String, String>,
        authorization: Option<&str>,
        peer: IpAddr,
    ) -> Verdict {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            Failure::MissingCredentials.count();
            return Verdict::Refused(Failure::MissingCredentials, 0);
        };
        let hash = users.get(&user);
        let digest = digest(&user, hash.map_or("", String::as_str), &password);
        if hash.is_some() && self.is_cached(&digest) {
            return Verdict::Allowed;
        }
        // Only what would cost a bcrypt run is limited: a scraper whose
        // login is cached keeps working while a guesser at the same
        // address waits.
        if let Err(wait) = self.take_token(peer) {
            Failure::RateLimited.count();
            tracing::warn!(
                user = %user,
                address = %peer,
                retry_after_seconds = wait,
                "login refused: too many failed logins from this address"
            );
            return Verdict::Refused(Failure::RateLimited, wait);
        }
        let ok = self
            .verify(hash.map_or(DUMMY_HASH, String::as_str), password)
            .await
            && hash.is_some();
        if ok {
            self.give_token_back(peer);
            self.cache(digest);
            return Verdict::Allowed;
        }
        Failure::WrongCredentials.count();
        tracing::warn!(
            user = %user,
            address = %peer,
            known_user = hash.is_some(),
            "failed login"
        );
        Verdict::Refused(Failure::WrongCredentials, 0)
    }

    async fn verify(&self, hash: &str, password: String) -> bool {
        let Ok(_one) = self.bcrypt.acquire().await else {
            return false;
        };
        let hash = hash.to_string();
        tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
    }

    fn is_cached(&self, digest: &[u8; 32]) -> bool {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached.contains(digest)
    }

    fn cache(&self, digest: [u8; 32]) {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if !cached.contains(&digest) {
            if cached.len() == MAX_CACHED {
                cached.pop_front();
            }
            cached.push_back(digest);
        }
    }

    /// Takes one failed-login token of `peer`'s bucket, or says how many
    /// seconds until one is there. A successful login gives it back.
    fn take_token(&self, peer: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&peer) {
            forget_some(&mut buckets, now);
        }
        let bucket = buckets.entry(peer).or_insert(Bucket {
            tokens: f64::from(FAILED_LOGIN_BURST),
            at: now,
        });
        refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            Err((missing * FAILED_LOGIN_REFILL.as_secs_f64()).ceil() as u64)
        }
    }

    fn give_token_back(&self, peer: IpAddr) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = buckets.get_mut(&peer) {
            b.tokens = (b.tokens + 1.0).min(f64::from(FAILED_LOGIN_BURST));
        }
    }
}

fn refill(bucket: &mut Bucket, now: Instant) {
    let earned = now.duration_since(bucket.at).as_secs_f64() / FAILED_LOGIN_REFILL.as_secs_f64();
    bucket.tokens = (bucket.tokens + earned).min(f64::from(FAILED_LOGIN_BURST));
    bucket.at = now;
}

/// Forgets the addresses whose bucket is full again (they owe nothing),
/// or, when none is, the one that failed longest ago.
fn forget_some(buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
    let full = f64::from(FAILED_LOGIN_BURST);
    buckets.retain(|_, b| {
        refill(b, now);
        b.tokens < full
    });
    if buckets.len() >= MAX_ADDRESSES
        && let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(ip, _)| *ip)
    {
        buckets.remove(&oldest);
    }
}

/// SHA-256 of the login, so that no password is kept in memory.
fn digest(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn basic_header_is_decoded() {
        // "alice:pa:ss" — a password may hold colons, a user name not.
        assert_eq!(
            basic_credentials("Basic YWxpY2U6cGE6c3M="),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }

    #[test]
    fn dummy_hash_is_a_bcrypt_hash() {
        assert!(!bcrypt::verify("", DUMMY_HASH).unwrap());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn wrong_logins_are_limited_per_address_and_right_ones_cached() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let users = BTreeMap::from([("alice".to_string(), hash)]);
        let header = |p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("alice:{p}"))
            )
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let auth = Authenticator::new();
        assert_eq!(
            auth.check(&users, Some(&header("right")), a).await,
            Verdict::Allowed
        );
        assert_eq!(
            auth.check(&users, None, a).await,
            Verdict::Refused(Failure::MissingCredentials, 0)
        );
        for _ in 0..FAILED_LOGIN_BURST {
            assert_eq!(
                auth.check(&users, Some(&header("wrong")), a).await,
                Verdict::Refused(Failure::WrongCredentials, 0)
            );
        }
        assert!(matches!(
            auth.check(&users, Some(&header("wrong")), a).await,
            Verdict::Refused(Failure::RateLimited, 1..)
        ));
        // The cached right login still passes; another address is not limited.
        assert_eq!(
            auth.check(&users, Some(&header("right")), a).await,
            Verdict::Allowed
        );
        assert_eq!(
            auth.check(&users, Some(&header("wrong")), b).await,
            Verdict::Refused(Failure::WrongCredentials, 0)
        );
    }
}
