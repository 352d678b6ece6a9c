//! The web config file (`--web.config.file`): the YAML schema of the
//! Prometheus exporter-toolkit, as node_exporter documents it, read
//! strictly (an unknown key is an error, as `promtool check web-config`
//! says) and checked value by value.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// Largest web config file read: a few users and paths take a few hundred
/// bytes; the bound keeps a wrong path (a log, a device) out of memory.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsSection>,
    http_server_config: HttpSection,
    basic_auth_users: BTreeMap<String, String>,
    rate_limit: Option<RateLimitSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TlsSection {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HttpSection {
    /// HTTP/2 is allowed, not required: the endpoint speaks HTTP/1.1 (what
    /// Prometheus uses for scrapes), so either value is accepted.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitSection {
    interval: String,
    #[serde(default)]
    burst: u32,
}

/// Where a PEM document comes from: a file (resolved against the web config
/// file's folder) or the file's own text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pem {
    /// `cert_file`, `key_file`, `client_ca_file`.
    File(PathBuf),
    /// `cert`, `key`, `client_ca`.
    Inline(String),
}

impl Pem {
    /// The file, if any: watched for changes.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Pem::File(p) => Some(p),
            Pem::Inline(_) => None,
        }
    }
}

/// `client_auth_type`, with the exporter-toolkit's (Go's) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default): no certificate asked for.
    None,
    /// `RequestClientCert`: asked for, not required, not verified.
    Request,
    /// `RequireAnyClientCert` (or its old name `RequireClientCert`):
    /// required, not verified.
    RequireAny,
    /// `VerifyClientCertIfGiven`: verified against the client CA when sent.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`: required and verified.
    RequireAndVerify,
}

/// The names `client_auth_type` accepts.
pub const CLIENT_AUTH_TYPES: &str = "NoClientCert, RequestClientCert, RequireAnyClientCert, \
     VerifyClientCertIfGiven, RequireAndVerifyClientCert";

impl ClientAuth {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "" | "NoClientCert" => ClientAuth::None,
            "RequestClientCert" => ClientAuth::Request,
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAny,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
            _ => return None,
        })
    }

    /// Whether a client certificate is checked against `client_ca_file`.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify
        )
    }
}

/// `min_version` / `max_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLS10`.
    Tls10,
    /// `TLS11`.
    Tls11,
    /// `TLS12`.
    Tls12,
    /// `TLS13`.
    Tls13,
}

impl TlsVersion {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "TLS10" => TlsVersion::Tls10,
            "TLS11" => TlsVersion::Tls11,
            "TLS12" => TlsVersion::Tls12,
            "TLS13" => TlsVersion::Tls13,
            _ => return None,
        })
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls10 => "TLS10",
            TlsVersion::Tls11 => "TLS11",
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        })
    }
}

/// `tls_server_config`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server's certificate chain.
    pub cert: Pem,
    /// Its private key.
    pub key: Pem,
    /// CAs that client certificates are verified against.
    pub client_ca: Option<Pem>,
    /// Whether and how client certificates are asked for.
    pub client_auth: ClientAuth,
    /// SANs of which a verified client certificate must hold one (DNS names
    /// and IP addresses); empty: any.
    pub client_allowed_sans: Vec<String>,
    /// Lowest version served.
    pub min_version: TlsVersion,
    /// Highest version served.
    pub max_version: TlsVersion,
    /// TLS 1.2 cipher suites, by Go's (IANA) names, in preference order;
    /// empty: the defaults.
    pub cipher_suites: Vec<String>,
    /// Whether the server's order of `cipher_suites` wins over the client's.
    pub prefer_server_cipher_suites: bool,
    /// Key exchange groups by Go's names, in preference order; empty: the defaults.
    pub curve_preferences: Vec<String>,
}

/// `rate_limit`: a token bucket over all requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// One request per interval on average.
    pub interval: Duration,
    /// ... with bursts of this many.
    pub burst: u32,
}

/// The whole file, checked; paths made absolute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// TLS, when `tls_server_config` sets anything.
    pub tls: Option<TlsSettings>,
    /// User name → bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Extra response headers (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
    /// `rate_limit`, when its interval is not 0.
    pub rate_limit: Option<RateLimit>,
}

/// Why the file was refused. Every message names the key concerned.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Not readable.
    #[error("cannot read it: {0}")]
    Read(String),
    /// YAML syntax, an unknown key or a wrong type.
    #[error("{0}")]
    Syntax(String),
    /// A value is refused.
    #[error("{0}")]
    Value(String),
}

/// The headers `http_server_config.headers` may set, with the values
/// allowed (none listed: any), as the exporter-toolkit allows them.
const HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl Settings {
    /// Reads and checks `path`. Relative paths in it are taken from its
    /// folder. Hashes are checked for form here; certificates and keys are
    /// read by [`super::tls`].
    pub fn load(path: &Path) -> Result<Self, SchemaError> {
        let text = read(path).map_err(SchemaError::Read)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir)
    }

    /// Parses `text`, resolving relative paths against `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Self, SchemaError> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            let options = serde_saphyr::options! { with_snippet: false };
            serde_saphyr::from_str_with_options(text, options).map_err(|e| {
                let at = e
                    .location()
                    .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                    .unwrap_or_default();
                let message = e.without_snippet().to_string();
                let message = message.lines().next().unwrap_or_default().to_string();
                SchemaError::Syntax(format!("{at}{}", strip_location(&message)))
            })?
        };
        let value = |m: String| SchemaError::Value(m);
        let tls = file
            .tls_server_config
            .map(|t| tls_settings(t, dir))
            .transpose()?
            .flatten();
        for (user, hash) in &file.basic_auth_users {
            check_hash(hash).map_err(|why| {
                value(format!(
                    "basic_auth_users: the hash of user {user:?} is not a bcrypt hash ({why}); \
                     make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                ))
            })?;
        }
        let mut headers = Vec::new();
        for (name, v) in file.http_server_config.headers {
            let Some((_, allowed)) = HEADERS.iter().find(|(h, _)| *h == name) else {
                let names: Vec<&str> = HEADERS.iter().map(|(h, _)| *h).collect();
                return Err(value(format!(
                    "http_server_config.headers: header {name:?} cannot be set; the ones that can: {}",
                    names.join(", ")
                )));
            };
            if !allowed.is_empty() && !allowed.contains(&v.as_str()) {
                return Err(value(format!(
                    "http_server_config.headers.{name}: {v:?} is not one of {}",
                    allowed.join(", ")
                )));
            }
            if !v.is_empty() {
                headers.push((name, v));
            }
        }
        let rate_limit = match file.rate_limit {
            None => None,
            Some(r) if is_zero(&r.interval) => None,
            Some(r) => {
                let interval = crate::duration::parse(&r.interval)
                    .map_err(|e| value(format!("rate_limit.interval: {e}")))?;
                Some(RateLimit {
                    interval,
                    burst: r.burst.max(1),
                })
            }
        };
        Ok(Settings {
            tls,
            users: file.basic_auth_users,
            headers,
            rate_limit,
        })
    }

    /// Files whose change means the settings must be read again.
    pub fn files(&self) -> Vec<PathBuf> {
        let Some(t) = &self.tls else {
            return Vec::new();
        };
        [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|p| p.path().map(Path::to_path_buf))
            .collect()
    }
}

/// serde-saphyr ends some messages with its own " at line L column C".
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// Go durations of zero: the rate limiter is off.
fn is_zero(s: &str) -> bool {
    let t = s.trim().trim_end_matches(['s', 'm', 'h', 'n', 'u', 'µ']);
    t.parse::<f64>().is_ok_and(|v| v == 0.0)
}

/// `tls_server_config`; `None` when it sets nothing (then the server speaks
/// plain HTTP, as the exporter-toolkit does).
fn tls_settings(t: TlsSection, dir: &Path) -> Result<Option<TlsSettings>, SchemaError> {
    let value = |m: String| SchemaError::Value(m);
    let pem = |file: Option<String>, inline: Option<String>, file_key: &str, inline_key: &str| {
        let file = file.filter(|f| !f.is_empty());
        let inline = inline.filter(|i| !i.is_empty());
        match (file, inline) {
            (Some(_), Some(_)) => Err(value(format!(
                "tls_server_config: set {file_key} or {inline_key}, not both"
            ))),
            (Some(f), None) => Ok(Some(Pem::File(dir.join(f)))),
            (None, Some(i)) => Ok(Some(Pem::Inline(i))),
            (None, None) => Ok(None),
        }
    };
    let cert = pem(t.cert_file, t.cert, "cert_file", "cert")?;
    let key = pem(t.key_file, t.key, "key_file", "key")?;
    let client_ca = pem(t.client_ca_file, t.client_ca, "client_ca_file", "client_ca")?;
    let auth_name = t.client_auth_type.unwrap_or_default();
    if cert.is_none() && key.is_none() && client_ca.is_none() && auth_name.is_empty() {
        return Ok(None);
    }
    let cert = cert.ok_or_else(|| {
        value("tls_server_config: missing cert_file (or cert): the server's certificate".into())
    })?;
    let key = key.ok_or_else(|| {
        value("tls_server_config: missing key_file (or key): the certificate's private key".into())
    })?;
    let client_auth = ClientAuth::parse(&auth_name).ok_or_else(|| {
        value(format!(
            "tls_server_config.client_auth_type: {auth_name:?} is not one of {CLIENT_AUTH_TYPES}"
        ))
    })?;
    if client_ca.is_some() && client_auth == ClientAuth::None {
        return Err(value(
            "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert: \
             set client_auth_type: RequireAndVerifyClientCert to check client certificates"
                .into(),
        ));
    }
    if client_auth.verifies() && client_ca.is_none() {
        return Err(value(format!(
            "tls_server_config: client_auth_type {auth_name} verifies client certificates: \
             set client_ca_file to the CA that signs them"
        )));
    }
    let version = |v: Option<String>, key: &str, default: TlsVersion| match v {
        None => Ok(default),
        Some(v) => TlsVersion::parse(&v).ok_or_else(|| {
            value(format!(
                "tls_server_config.{key}: {v:?} is not one of TLS10, TLS11, TLS12, TLS13"
            ))
        }),
    };
    let min_version = version(t.min_version, "min_version", TlsVersion::Tls12)?;
    let max_version = version(t.max_version, "max_version", TlsVersion::Tls13)?;
    if max_version < TlsVersion::Tls12 {
        return Err(value(format!(
            "tls_server_config.max_version: {max_version} cannot be served: perf-user's TLS \
             (rustls) speaks TLS12 and TLS13 only"
        )));
    }
    if min_version > max_version {
        return Err(value(format!(
            "tls_server_config: min_version {min_version} is above max_version {max_version}"
        )));
    }
    let client_allowed_sans = t.client_allowed_sans.unwrap_or_default();
    if !client_allowed_sans.is_empty() && !client_auth.verifies() {
        return Err(value(
            "tls_server_config.client_allowed_sans needs verified client certificates: set \
             client_auth_type: RequireAndVerifyClientCert"
                .into(),
        ));
    }
    Ok(Some(TlsSettings {
        cert,
        key,
        client_ca,
        client_auth,
        client_allowed_sans,
        min_version,
        max_version,
        cipher_suites: t.cipher_suites.unwrap_or_default(),
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
        curve_preferences: t.curve_preferences.unwrap_or_default(),
    }))
}

/// Checks that `hash` is a bcrypt hash (`$2a$`, `$2b$`, `$2x$` or `$2y$`,
/// a cost, 53 characters of salt and hash), without computing anything.
fn check_hash(hash: &str) -> Result<(), String> {
    let parts: Vec<&str> = hash.split('$').collect();
    let [empty, version, cost, rest] = parts.as_slice() else {
        return Err("expected $2y$COST$SALTHASH".into());
    };
    if !empty.is_empty() || !matches!(*version, "2a" | "2b" | "2x" | "2y") {
        return Err("it does not start with $2a$, $2b$ or $2y$".into());
    }
    match cost.parse::<u32>() {
        Ok(4..=31) => {}
        _ => return Err(format!("cost {cost:?} is not from 4 to 31")),
    }
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
    if rest.len() != 53 || !rest.chars().all(b64) {
        return Err("salt and hash must be 53 characters of bcrypt's base64".into());
    }
    Ok(())
}

/// Reads the file: a regular file of at most [`MAX_FILE_BYTES`], in UTF-8.
fn read(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "it is larger than the {} MiB a web config file may be",
            MAX_FILE_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

    fn parse(text: &str) -> Result<Settings, String> {
        Settings::parse(text, Path::new("/etc/perf-user")).map_err(|e| e.to_string())
    }

    #[test]
    fn relative_paths_are_taken_from_the_files_folder() {
        let s =
            parse("tls_server_config:\n  cert_file: tls/server.crt\n  key_file: /abs/server.key\n")
                .unwrap();
        let t = s.tls.unwrap();
        assert_eq!(t.cert, Pem::File("/etc/perf-user/tls/server.crt".into()));
        assert_eq!(t.key, Pem::File("/abs/server.key".into()));
        assert_eq!(t.client_auth, ClientAuth::None);
        assert_eq!(
            (t.min_version, t.max_version),
            (TlsVersion::Tls12, TlsVersion::Tls13)
        );
    }

    #[test]
    fn empty_file_and_users_only_mean_plain_http() {
        assert_eq!(parse("").unwrap(), Settings::default());
        let s = parse(&format!("basic_auth_users:\n  alice: {HASH}\n")).unwrap();
        assert!(s.tls.is_none());
        assert_eq!(s.users["alice"], HASH);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = parse("tls_server_config:\n  cert_fiel: a\n").unwrap_err();
        assert!(e.contains("cert_fiel"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = parse("basic_auth:\n  a: b\n").unwrap_err();
        assert!(e.contains("basic_auth"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Always\n",
        )
        .unwrap_err();
        assert!(
            e.contains("client_auth_type") && e.contains("\"Always\""),
            "{e}"
        );
        let e = parse("basic_auth_users:\n  bob: secret\n").unwrap_err();
        assert!(e.contains("\"bob\"") && e.contains("bcrypt"), "{e}");
        assert!(!e.contains("secret"), "the hash is not echoed: {e}");
        let e = parse("tls_server_config:\n  cert_file: a\n").unwrap_err();
        assert!(e.contains("key_file"), "{e}");
        let e = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n")
            .unwrap_err();
        assert!(e.contains("client_auth_type"), "{e}");
        let e = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  max_version: TLS11\n")
            .unwrap_err();
        assert!(e.contains("max_version"), "{e}");
        let e = parse("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").unwrap_err();
        assert!(e.contains("X-Frame-Options"), "{e}");
    }

    #[test]
    fn every_client_auth_name_parses() {
        for (name, want) in [
            ("NoClientCert", ClientAuth::None),
            ("RequestClientCert", ClientAuth::Request),
            ("RequireClientCert", ClientAuth::RequireAny),
            ("RequireAnyClientCert", ClientAuth::RequireAny),
            ("VerifyClientCertIfGiven", ClientAuth::VerifyIfGiven),
            ("RequireAndVerifyClientCert", ClientAuth::RequireAndVerify),
        ] {
            assert_eq!(ClientAuth::parse(name), Some(want));
        }
    }

    #[test]
    fn hashes_are_checked_for_form() {
        assert!(check_hash(HASH).is_ok());
        assert!(check_hash(&HASH.replace("$2y$", "$2b$")).is_ok());
        assert!(check_hash("$1$abc$def").is_err());
        assert!(check_hash(&HASH[..50]).is_err());
        assert!(check_hash(&HASH.replace("$10$", "$99$")).is_err());
    }

    #[test]
    fn rate_limit_zero_is_off() {
        assert!(
            parse("rate_limit:\n  interval: 0s\n  burst: 3\n")
                .unwrap()
                .rate_limit
                .is_none()
        );
        let r = parse("rate_limit:\n  interval: 100ms\n  burst: 3\n")
            .unwrap()
            .rate_limit
            .unwrap();
        assert_eq!(r.interval, Duration::from_millis(100));
        assert_eq!(r.burst, 3);
    }
}
