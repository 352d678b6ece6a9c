//! `perf-user run --web.config.file`: TLS and basic authentication with the
//! Prometheus exporter-toolkit's file, checked against the real tools that
//! read the same file.
//!
//! - `promtool check web-config` accepts the files perf-user accepts, and
//!   refuses the bad ones perf-user refuses (with one `error:` line naming
//!   the file and the cause);
//! - a real Prometheus scrapes perf-user over TLS with `basic_auth` and
//!   `tls_config.ca_file`, with the scrape config of docs/metrics.md: up = 1;
//! - a curl matrix (credentials, plain HTTP, client certificates) answers the
//!   same as Debian's `prometheus-node-exporter` given the same file, with
//!   hashes made by `htpasswd -B` and by Python's bcrypt;
//! - a changed password and a rotated certificate apply without a restart,
//!   failed logins are logged (user, address, never the password), counted
//!   and rate-limited per address.
//!
//! Certificates are made here with `openssl`. Needs the Debian packages
//! prometheus, prometheus-node-exporter, apache2-utils, python3-bcrypt, curl
//! and openssl (`cargo xtask test` installs them). The tests that start the
//! daemon need root; without it they fail, unless
//! `PERF_USER_SKIP_PRIVILEGED=1` asks to skip them.

mod common;
#[path = "common/latency.rs"]
mod latency_common;
#[path = "common/scrape.rs"]
mod scrape_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use latency_common::run;
use scrape_common::*;

// ---------------------------------------------------------------------------
// Tools.

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A test CA, a server certificate for 127.0.0.1 and localhost, and a
/// client certificate, all made with openssl (ECDSA P-256: fast to make).
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A client certificate from another, self-signed CA.
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

/// A new ECDSA P-256 key (fast to make) at `key`.
fn new_key(key: &Path) {
    let args = [
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
    ];
    run("openssl", &[&args[..], &[path(key)]].concat());
}

/// A new key and a self-signed certificate for it, named `cn`.
fn self_signed(key: &Path, crt: &Path, cn: &str) {
    new_key(key);
    let subject = format!("/CN={cn}");
    let args = [
        "req", "-x509", "-new", "-days", "2", "-subj", &subject, "-key",
    ];
    run(
        "openssl",
        &[&args[..], &[path(key), "-out", path(crt)]].concat(),
    );
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let p = |name: &str| dir.join(name);
        self_signed(&p("ca.key"), &p("ca.crt"), "perf-user test CA");
        let pki = Pki {
            ca: p("ca.crt"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
            stranger_cert: p("stranger.crt"),
            stranger_key: p("stranger.key"),
            dir: dir.clone(),
        };
        pki.issue(
            "server",
            "serverAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        );
        pki.issue("client", "clientAuth", "subjectAltName=DNS:prometheus.test");
        self_signed(&pki.stranger_key, &pki.stranger_cert, "stranger");
        pki
    }

    /// Makes `NAME.crt` and `NAME.key` signed by the CA; returns them.
    fn issue(&self, name: &str, usage: &str, san: &str) -> (PathBuf, PathBuf) {
        let (crt, key, csr, ext) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
            self.dir.join(format!("{name}.csr")),
            self.dir.join(format!("{name}.ext")),
        );
        new_key(&key);
        run(
            "openssl",
            &[
                "req",
                "-new",
                "-key",
                path(&key),
                "-out",
                path(&csr),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        std::fs::write(
            &ext,
            format!(
                "{san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
            ),
        )
        .unwrap();
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                path(&csr),
                "-CA",
                path(&self.ca),
                "-CAkey",
                path(&self.dir.join("ca.key")),
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                path(&crt),
                "-extfile",
                path(&ext),
            ],
        );
        (crt, key)
    }
}

/// A bcrypt hash of `password` made by `htpasswd -B` (a `$2y$` hash).
fn htpasswd_hash(password: &str) -> String {
    let line = run("htpasswd", &["-nbB", "-C", "10", "u", password]);
    let hash = line
        .trim()
        .strip_prefix("u:")
        .expect("htpasswd prints user:hash");
    assert!(hash.starts_with("$2y$"), "{hash}");
    hash.to_string()
}

/// A bcrypt hash of `password` made by Python's bcrypt (Debian's
/// python3-bcrypt; a `$2b$` hash).
fn python_hash(password: &str) -> String {
    let hash = run(
        "/usr/bin/python3",
        &[
            "-c",
            "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(10)).decode())",
            password,
        ],
    );
    let hash = hash.trim().to_string();
    assert!(hash.starts_with("$2b$"), "{hash}");
    hash
}

/// A web config file in `dir` with TLS (certificate paths relative to the
/// file, as a user would keep them beside it), `client_auth_type`, and users.
fn write_web_config(file: &Path, client_auth: &str, users: &[(&str, &str)]) {
    let mut text = String::from(
        "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n",
    );
    if client_auth != "NoClientCert" {
        text.push_str(&format!(
            "  client_auth_type: {client_auth}\n  client_ca_file: pki/ca.crt\n"
        ));
    }
    if !users.is_empty() {
        text.push_str("basic_auth_users:\n");
        for (user, hash) in users {
            text.push_str(&format!("  {user}: '{hash}'\n"));
        }
    }
    write_atomically(file, &text);
}

/// Replaces `file` whole (a rename), as a configuration tool does.
fn write_atomically(file: &Path, text: &str) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// What curl saw: its exit code and the HTTP status (`000` when none).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    exit: i32,
    status: String,
}

impl Seen {
    /// What the client was told: the status, or how the connection failed.
    /// With TLS 1.3 a refused client certificate is told by an alert after
    /// the client's side of the handshake; whether curl meets it sending its
    /// request (exit 55) or reading the answer (56) is a race, with Go's
    /// server as with ours, so both are one outcome.
    fn outcome(&self) -> String {
        match self.exit {
            0 => format!("HTTP {}", self.status),
            35 => "TLS handshake failed".into(),
            55 | 56 => "closed by a TLS alert".into(),
            n => format!("curl exit {n}"),
        }
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.exit == 0 {
            write!(f, "HTTP {}", self.status)
        } else {
            write!(f, "{} (curl exit {})", self.outcome(), self.exit)
        }
    }
}

/// `curl URL` with `args`, status only. Over HTTP/1.1, as Prometheus
/// scrapes: node_exporter also offers HTTP/2, over which curl reports a
/// TLS alert after the handshake as an HTTP/2 error (exit 16) rather than a
/// receive error (exit 56); perf-user speaks HTTP/1.1 only.
fn curl(url: &str, args: &[&str]) -> Seen {
    let out = Command::new("curl")
        .args([
            "--http1.1",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
        ])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run curl: install the Debian package curl");
    Seen {
        exit: out.status.code().unwrap_or(-1),
        status: String::from_utf8_lossy(&out.stdout).trim().to_string(),
    }
}

/// TLS options that trust the test CA.
fn tls_args(pki: &Pki) -> Vec<String> {
    vec!["--cacert".into(), path(&pki.ca).into()]
}

/// ... and present the client certificate.
fn client_args(pki: &Pki) -> Vec<String> {
    let mut a = tls_args(pki);
    a.extend([
        "--cert".into(),
        path(&pki.client_cert).into(),
        "--key".into(),
        path(&pki.client_key).into(),
    ]);
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What each test that starts the daemon begins with.
struct Setup {
    _guard: std::sync::MutexGuard<'static, ()>,
    dir: PathBuf,
    pki: Pki,
    /// Where the web config file goes (beside `pki/`).
    web: PathBuf,
}

/// Root (or an explicit skip), the lock, a fresh directory with the PKI.
fn setup(test: &str, dir: &str) -> Option<Setup> {
    if !require_privileges(test) {
        return None;
    }
    let _guard = exclusive();
    let dir = test_dir(dir);
    let pki = Pki::new(&dir);
    let web = dir.join("web.yml");
    Some(Setup {
        _guard,
        dir,
        pki,
        web,
    })
}

/// The daemon with `web_config`, ready once /healthz answers 200 over TLS.
fn start_daemon(web_config: &Path, pki: &Pki) -> Daemon {
    let args = client_args(pki);
    Daemon::start_until(
        &[
            "--collectors",
            "cpu",
            "--cpu-frequency",
            "19",
            "--web.config.file",
            path(web_config),
        ],
        |addr| curl(&format!("https://{addr}/healthz"), &strs(&args)).status == "200",
    )
}

/// Debian's node_exporter with `web_config` on a free port, killed when dropped.
struct NodeExporter {
    addr: SocketAddr,
    _run: Running,
}

impl NodeExporter {
    fn start(web_config: &Path, ready: impl Fn(SocketAddr) -> bool) -> NodeExporter {
        let exe = Path::new("/usr/bin/prometheus-node-exporter");
        assert!(
            exe.exists(),
            "{} is missing: install the Debian package prometheus-node-exporter (cargo xtask test does)",
            exe.display()
        );
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = Command::new(exe);
        cmd.arg(format!("--web.listen-address={addr}"))
            .arg(format!("--web.config.file={}", web_config.display()))
            // Its own metrics are enough: nothing of the host is read.
            .arg("--collector.disable-defaults");
        let mut run = Running::start(cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready(addr) {
            if !run.is_running() || Instant::now() > deadline {
                panic!(
                    "node_exporter did not start\n{}",
                    run.finish(Duration::from_secs(1)).describe()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        NodeExporter { addr, _run: run }
    }
}

/// The daemon's stderr so far is only read at its stop; this stops it and
/// returns the log.
fn stop_and_log(daemon: Daemon) -> String {
    let out = daemon.stop();
    assert!(out.status.success(), "{}", out.describe());
    out.stderr
}

// ---------------------------------------------------------------------------
// Files: promtool and perf-user agree.

fn promtool_check(file: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(["check", "web-config"])
        .arg(file)
        .output()
        .expect("cannot run promtool: install the Debian package `prometheus`");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn check_config(file: &Path) -> CmdOutput {
    run_perf_user(
        &["run", "--check-config", "--web.config.file", path(file)],
        Duration::from_secs(30),
    )
}

#[test]
fn promtool_and_perf_user_accept_and_refuse_the_same_files() {
    let dir = test_dir("web_config_files");
    let pki = Pki::new(&dir);
    let hash = htpasswd_hash("secret");
    let good: &[(&str, String)] = &[
        (
            "tls_only.yml",
            "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n".into(),
        ),
        (
            "users_only.yml",
            format!("basic_auth_users:\n  alice: '{hash}'\n"),
        ),
        (
            "everything.yml",
            format!(
                "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n  \
                 client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: pki/ca.crt\n  \
                 min_version: TLS12\n  max_version: TLS13\n\
                 http_server_config:\n  headers:\n    X-Frame-Options: deny\n\
                 basic_auth_users:\n  alice: '{hash}'\n  bob: '{}'\n",
                python_hash("other")
            ),
        ),
    ];
    for (name, text) in good {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let (ok, said) = promtool_check(&file);
        assert!(ok, "promtool refuses {name}:\n{text}\n{said}");
        let out = check_config(&file);
        assert!(
            out.status.success(),
            "perf-user refuses {name}:\n{text}\n{}",
            out.describe()
        );
        assert!(out.stdout.contains("web config OK"), "{}", out.describe());
    }
    let _ = &pki;

    // Each bad file: promtool refuses it too; perf-user says why in one
    // `error:` line that names the file and the cause.
    let tls = "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n";
    let bad: &[(&str, String, &[&str])] = &[
        (
            "unknown_key.yml",
            format!("{tls}  cert_fiel: x\n"),
            &["cert_fiel"],
        ),
        (
            "unknown_top_key.yml",
            format!("{tls}basic_auth:\n  alice: '{hash}'\n"),
            &["basic_auth"],
        ),
        (
            "missing_cert.yml",
            "tls_server_config:\n  cert_file: pki/missing.crt\n  key_file: pki/server.key\n".into(),
            &["cert_file", "pki/missing.crt", "No such file"],
        ),
        (
            "bad_hash.yml",
            "basic_auth_users:\n  alice: not-a-bcrypt-hash\n".into(),
            &["\"alice\"", "bcrypt"],
        ),
        (
            "bad_client_auth_type.yml",
            format!("{tls}  client_auth_type: RequireSomething\n  client_ca_file: pki/ca.crt\n"),
            &[
                "client_auth_type",
                "\"RequireSomething\"",
                "RequireAndVerifyClientCert",
            ],
        ),
        (
            "ca_without_policy.yml",
            format!("{tls}  client_ca_file: pki/ca.crt\n"),
            &["client_ca_file", "client_auth_type"],
        ),
        (
            "key_not_matching.yml",
            "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/client.key\n".into(),
            &["key", "certificate"],
        ),
    ];
    for (name, text, wanted) in bad {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let (ok, said) = promtool_check(&file);
        assert!(
            !ok,
            "promtool accepts {name}, perf-user must not:\n{text}\n{said}"
        );
        let out = check_config(&file);
        let ctx = format!("{name}:\n{text}\npromtool: {said}\n{}", out.describe());
        assert_eq!(out.status.code(), Some(1), "{ctx}");
        assert!(!out.stderr.contains("panicked"), "{ctx}");
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "one error line\n{ctx}");
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "nothing but the error\n{ctx}"
        );
        assert!(errors[0].contains(path(&file)), "names the file\n{ctx}");
        for w in *wanted {
            assert!(errors[0].contains(w), "expected {w:?}\n{ctx}");
        }
        assert!(
            !errors[0].contains("not-a-bcrypt-hash") || *name != "bad_hash.yml",
            "{ctx}"
        );
    }
}

// ---------------------------------------------------------------------------
// A real Prometheus over TLS with basic auth.

/// The scrape config that docs/metrics.md shows, between its markers.
fn documented_scrape_config() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md"))
            .unwrap();
    let start = doc
        .find("<!-- scrape-config-tls: tests/web_config.rs -->")
        .expect("docs/metrics.md has the TLS scrape config marker");
    let block = &doc[start..];
    let block = &block[block
        .find("```yaml\n")
        .expect("a yaml block after the marker")
        + 8..];
    block[..block.find("```").unwrap()].to_string()
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    let Some(t) = setup(
        "prometheus_scrapes_over_tls_with_basic_auth",
        "web_config_prometheus",
    ) else {
        return;
    };
    let (pki, web) = (&t.pki, &t.web);
    write_web_config(
        web,
        "NoClientCert",
        &[("prometheus", &htpasswd_hash("scrape-secret"))],
    );
    let daemon = start_daemon(web, pki);
    let password_file = t.dir.join("perf-user.password");
    std::fs::write(&password_file, "scrape-secret").unwrap();
    // The documented config, with this run's address and files.
    let scrape = documented_scrape_config()
        .replace("perf-user.example:9464", &daemon.addr.to_string())
        .replace("/etc/prometheus/perf-user-ca.crt", path(&pki.ca))
        .replace("/etc/prometheus/perf-user.password", path(&password_file));
    let items = scrape
        .strip_prefix("scrape_configs:\n")
        .expect("the block starts with scrape_configs:");
    let prom = Prometheus::start(&t.dir, items);
    let up = prom.wait_for(r#"up{job="perf-user"}"#, &|v| v == 1.0);
    let samples = prom.wait_for(r#"perf_user_collector_up{collector="cpu"}"#, &|v| v == 1.0);
    let targets = prom.targets();
    drop(prom);
    let log = stop_and_log(daemon);
    let ctx = format!(
        "--- scrape config ---\n{scrape}\n--- targets ---\n{targets}\n--- daemon log ---\n{log}"
    );
    assert_eq!(
        up,
        Some(1.0),
        "Prometheus never saw up == 1 over TLS with basic auth\n{ctx}"
    );
    assert_eq!(
        samples,
        Some(1.0),
        "no perf-user series through PromQL\n{ctx}"
    );
    assert!(
        !log.contains("failed login"),
        "Prometheus' logins all succeed\n{ctx}"
    );
}

// ---------------------------------------------------------------------------
// The same answers as node_exporter.

#[test]
fn status_codes_match_node_exporter() {
    let Some(t) = setup("status_codes_match_node_exporter", "web_config_matrix") else {
        return;
    };
    let (pki, web) = (&t.pki, &t.web);
    write_web_config(
        web,
        "RequireAndVerifyClientCert",
        &[
            ("htuser", &htpasswd_hash("ht-password")),
            ("pyuser", &python_hash("py-password")),
        ],
    );
    let daemon = start_daemon(web, pki);
    let client = client_args(pki);
    let node = NodeExporter::start(web, |addr| {
        curl(
            &format!("https://{addr}/metrics"),
            &[&strs(&client)[..], &["-u", "htuser:ht-password"]].concat(),
        )
        .status
            == "200"
    });
    let tls = tls_args(pki);
    let stranger = [
        &strs(&tls)[..],
        &[
            "--cert",
            path(&pki.stranger_cert),
            "--key",
            path(&pki.stranger_key),
        ],
    ]
    .concat();
    let client_strs = strs(&client);
    let with = |extra: &[&'static str]| -> Vec<&str> { [&client_strs[..], extra].concat() };
    let rows: Vec<(&str, &str, Vec<&str>)> = vec![
        ("no credentials", "https", with(&[])),
        ("wrong password", "https", with(&["-u", "htuser:wrong"])),
        ("unknown user", "https", with(&["-u", "nobody:ht-password"])),
        (
            "right password, htpasswd -B hash",
            "https",
            with(&["-u", "htuser:ht-password"]),
        ),
        (
            "right password, Python bcrypt hash",
            "https",
            with(&["-u", "pyuser:py-password"]),
        ),
        (
            "plain HTTP to the TLS port",
            "http",
            vec!["-u", "htuser:ht-password"],
        ),
        (
            "no client certificate",
            "https",
            [&strs(&tls)[..], &["-u", "htuser:ht-password"]].concat(),
        ),
        (
            "client certificate of another CA",
            "https",
            [&stranger[..], &["-u", "htuser:ht-password"]].concat(),
        ),
    ];
    let mut table = format!(
        "{:<36} {:<38} {}\n",
        "request", "perf-user", "node_exporter"
    );
    let mut mismatches = Vec::new();
    let mut ours = Vec::new();
    for (what, scheme, args) in &rows {
        let a = curl(&format!("{scheme}://{}/", daemon.addr), args);
        let b = curl(&format!("{scheme}://{}/", node.addr), args);
        table.push_str(&format!("{what:<36} {:<38} {b}\n", a.to_string()));
        if a.outcome() != b.outcome() {
            mismatches.push(*what);
        }
        ours.push(a);
    }
    // /healthz stays open (node_exporter has none).
    let health = curl(&format!("https://{}/healthz", daemon.addr), &strs(&client));
    table.push_str(&format!("{:<36} {health}\n", "/healthz, no credentials"));
    println!("{table}");
    drop(node);
    let log = stop_and_log(daemon);
    let ctx = format!("{table}\n--- daemon log ---\n{log}");
    assert!(
        mismatches.is_empty(),
        "answers differ from node_exporter's: {mismatches:?}\n{ctx}"
    );
    let statuses: Vec<&str> = ours.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(
        &statuses[..6],
        ["401", "401", "401", "200", "200", "400"],
        "{ctx}"
    );
    assert!(
        ours[6].exit != 0 && ours[7].exit != 0,
        "refused without the client certificate\n{ctx}"
    );
    assert_eq!(health.status, "200", "{ctx}");
    // Failed logins are logged with user and address, never the password.
    assert!(log.contains("failed login"), "{ctx}");
    assert!(log.contains("nobody") && log.contains("127.0.0.1"), "{ctx}");
    assert!(
        !log.contains("ht-password") && !log.contains("py-password"),
        "a password in the log\n{ctx}"
    );
}

// ---------------------------------------------------------------------------
// Changes apply without a restart; failed logins are limited.

/// The serial number of the certificate served at `addr`.
fn served_serial(addr: SocketAddr, pki: &Pki) -> String {
    let s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-CAfile",
            path(&pki.ca),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl s_client");
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    x509.stdin
        .take()
        .unwrap()
        .write_all(&s_client.stdout)
        .unwrap();
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn scrape_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[test]
fn changes_apply_without_restart_and_failed_logins_are_limited() {
    let Some(t) = setup(
        "changes_apply_without_restart_and_failed_logins_are_limited",
        "web_config_reload",
    ) else {
        return;
    };
    let (pki, web) = (&t.pki, &t.web);
    write_web_config(web, "NoClientCert", &[("alice", &htpasswd_hash("first"))]);
    let daemon = start_daemon(web, pki);
    // The index page: guarded as /metrics is, without a scrape's cost (a
    // debug daemon's first scrapes can take seconds on a loaded host).
    let url = format!("https://{}/", daemon.addr);
    let tls = tls_args(pki);
    let login =
        |user_password: &str| curl(&url, &[&strs(&tls)[..], &["-u", user_password]].concat());
    let first = login("alice:first");
    assert_eq!(first.status, "200", "{first}");

    // A new password: the next request already needs it.
    write_web_config(
        web,
        "NoClientCert",
        &[("alice", &python_hash("2nd-Passw0rd"))],
    );
    let after_change = (login("alice:first"), login("alice:2nd-Passw0rd"));

    // A rotated certificate (new key, new serial) at the same path: the
    // next connection gets it.
    let before = served_serial(daemon.addr, pki);
    let (crt, key) = pki.issue(
        "rotated",
        "serverAuth",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
    );
    std::fs::copy(&key, pki.dir.join("server.key.new")).unwrap();
    std::fs::copy(&crt, pki.dir.join("server.crt.new")).unwrap();
    std::fs::rename(pki.dir.join("server.key.new"), pki.dir.join("server.key")).unwrap();
    std::fs::rename(pki.dir.join("server.crt.new"), pki.dir.join("server.crt")).unwrap();
    let rotated = run("openssl", &["x509", "-noout", "-serial", "-in", path(&crt)])
        .trim()
        .to_string();
    let after = served_serial(daemon.addr, pki);
    let over_rotated = login("alice:2nd-Passw0rd");

    // SIGHUP reads the file again too.
    signal(daemon.pid(), libc::SIGHUP);
    thread::sleep(Duration::from_millis(500));

    // Wrong logins from one address: refused, then limited (429), while the
    // right (cached) login still passes.
    let wrong: Vec<Seen> = (0..12).map(|_| login("alice:Wr0ng-guess")).collect();
    let right_meanwhile = login("alice:2nd-Passw0rd");
    let limited_headers = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "30"])
        .args(strs(&tls))
        .args(["-u", "alice:Wr0ng-guess", &url])
        .output()
        .unwrap();
    let limited_headers = String::from_utf8_lossy(&limited_headers.stdout).to_lowercase();
    let metrics = {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "120"])
            .args(strs(&tls))
            .args(["-u", "alice:2nd-Passw0rd"])
            .arg(format!("https://{}/metrics", daemon.addr))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let log = stop_and_log(daemon);
    let ctx = format!(
        "after the password change: {} / {}; serial {before} -> {after} (rotated {rotated}); \
         wrong logins: {:?}\n--- headers ---\n{limited_headers}\n--- daemon log ---\n{log}",
        after_change.0,
        after_change.1,
        wrong.iter().map(|s| s.status.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(
        after_change.0.status, "401",
        "the old password still works\n{ctx}"
    );
    assert_eq!(
        after_change.1.status, "200",
        "the new password does not work yet\n{ctx}"
    );
    assert!(
        !before.is_empty() && before != after,
        "the served certificate did not change\n{ctx}"
    );
    assert_eq!(after, rotated, "not the rotated certificate\n{ctx}");
    assert_eq!(over_rotated.status, "200", "{ctx}");
    assert!(
        log.contains("SIGHUP") && log.contains("web config reloaded"),
        "{ctx}"
    );
    // Of FAILED_LOGIN_BURST (10) failures in a row, one was spent on the
    // old password above: 9 (10 if a token came back meanwhile) wrong logins
    // are answered 401, the rest 429.
    let refused = wrong.iter().take_while(|s| s.status == "401").count();
    assert!((9..=10).contains(&refused), "{ctx}");
    assert!(wrong[refused..].iter().all(|s| s.status == "429"), "{ctx}");
    assert!(limited_headers.contains("retry-after:"), "{ctx}");
    assert_eq!(
        right_meanwhile.status, "200",
        "the right login is limited too\n{ctx}"
    );
    let failed = scrape_value(
        &metrics,
        "perf_user_http_auth_failures_total{reason=\"wrong_credentials\"}",
    );
    let limited = scrape_value(
        &metrics,
        "perf_user_http_auth_failures_total{reason=\"rate_limited\"}",
    );
    assert!(failed >= 10.0, "wrong_credentials = {failed}\n{ctx}");
    assert!(limited >= 3.0, "rate_limited = {limited}\n{ctx}");
    assert!(
        log.contains("failed login") && log.contains("alice"),
        "{ctx}"
    );
    assert!(
        !log.contains("Wr0ng-guess") && !log.contains("2nd-Passw0rd"),
        "a password in the log\n{ctx}"
    );
}
