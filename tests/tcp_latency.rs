//! TCP latency against known workloads and the kernel's own view:
//! - N connections on loopback (IPv4 and IPv6) give N connect and N accept
//!   samples, refused connects are counted as failed, labels stay bounded;
//! - a bulk transfer between two network namespaces over a veth pair with a
//!   tbf rate limit shows a smoothed RTT that matches what `ss -ti` reports
//!   for that socket (within 25%) and is far above the unshaped baseline.
//!
//! Needs root (fails without it unless PERF_USER_SKIP_PRIVILEGED=1).

mod common;
#[path = "common/latency.rs"]
mod latency_common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use latency_common::*;
use serde_json::Value;

/// Runs `perf-user latency --tcp <args> --format json` around `workload`,
/// ending it with Ctrl-C once the workload is done; returns the document.
fn trace_tcp(args: &[&str], workload: impl FnOnce()) -> (Value, CmdOutput) {
    let mut all = vec!["--tcp", "--duration", "10m", "--format", "json"];
    all.extend_from_slice(args);
    let mut tracer = LatencyRun::start(&all);
    tracer.wait_ready(Duration::from_secs(30));
    workload();
    tracer.interrupt();
    let out = tracer.finish(Duration::from_secs(60));
    assert!(
        !out.timed_out && out.status.success(),
        "perf-user latency failed\n{}",
        out.describe()
    );
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON: {e}\n{}", out.describe()));
    (doc, out)
}

/// A port free on both 127.0.0.1 and ::1, below the ephemeral range (so it
/// never collides with a client's port), with listeners on both.
fn listen_both() -> (u16, TcpListener, TcpListener) {
    for port in (20_000..32_000).step_by(7) {
        let Ok(v4) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) else {
            continue;
        };
        if let Ok(v6) = TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
            return (port, v4, v6);
        }
        drop(v4);
    }
    panic!("no free port in 20000..32000 on 127.0.0.1 and ::1");
}

/// Accepts `n` connections, reads each to its end, closes it.
fn serve(listener: TcpListener, n: usize) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for _ in 0..n {
            let (mut c, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 64 * 1024];
            while matches!(c.read(&mut buf), Ok(k) if k > 0) {}
        }
    })
}

fn series_count(set: &Value, field: &str, value: &Value) -> Option<u64> {
    set.as_array()?
        .iter()
        .find(|s| &s[field] == value)
        .and_then(|s| s["latency"]["count"].as_u64())
}

/// With the default programs: BTF tracepoints, as this kernel has BTF.
#[test]
fn loopback_connects_are_counted_once_each() {
    if !require_privileges("loopback_connects_are_counted_once_each") {
        return;
    }
    loopback_connects_counted(&[], "btf");
}

/// The same with the classic tracepoint programs, which kernels without
/// BTF get.
#[test]
fn loopback_connects_are_counted_once_each_classic() {
    if !require_privileges("loopback_connects_are_counted_once_each_classic") {
        return;
    }
    loopback_connects_counted(&["--tracepoints", "classic"], "classic");
}

/// `extra` flags; `kind`: the tracepoints the report must name.
fn loopback_connects_counted(extra: &[&str], kind: &str) {
    let _guard = exclusive();
    const V4: usize = 40;
    const V6: usize = 15;
    const REFUSED: usize = 5;
    let (port, l4, l6) = listen_both();
    // A port nothing listens on: connects to it are refused (RST).
    let closed = {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        l.local_addr().unwrap().port()
    };
    let p = port.to_string();
    let q = closed.to_string();
    // --top 1: one peer named, the other summed as "other".
    let mut args = vec!["--port", &p, "--port", &q, "--top", "1"];
    args.extend(extra);
    let (doc, out) = trace_tcp(&args, || {
        let s4 = serve(l4, V4);
        let s6 = serve(l6, V6);
        let targets = std::iter::repeat_n(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), V4).chain(
            std::iter::repeat_n(SocketAddr::from((Ipv6Addr::LOCALHOST, port)), V6),
        );
        for addr in targets {
            let mut c = TcpStream::connect(addr).expect("connect");
            c.write_all(b"hello").expect("write");
        }
        s4.join().unwrap();
        s6.join().unwrap();
        for _ in 0..REFUSED {
            let e = TcpStream::connect((Ipv4Addr::LOCALHOST, closed));
            assert!(e.is_err(), "port {closed} unexpectedly accepted");
        }
    });
    let tcp = &doc["tcp"];
    let ctx = format!(
        "{}\n{}",
        serde_json::to_string_pretty(tcp).unwrap(),
        out.describe()
    );
    assert_eq!(tcp["tracepoints"], kind, "{ctx}");
    let missed = tcp["counters"]["missed"].as_u64().unwrap_or(0);
    let total = (V4 + V6) as u64;
    let within = |n: u64| n <= total && n + missed >= total;

    let connect = &tcp["connect"];
    assert!(
        within(connect["count"].as_u64().unwrap()),
        "connect count\n{ctx}"
    );
    let by_port = connect["by_port"].as_array().unwrap();
    assert_eq!(by_port.len(), 1, "--port let other ports through\n{ctx}");
    assert_eq!(by_port[0]["port"], port, "{ctx}");
    assert_eq!(
        by_port[0]["side"], "remote",
        "a connect is labelled by the port it goes to\n{ctx}"
    );
    let lat = &by_port[0]["latency"];
    assert!(
        lat["p50"].as_f64().unwrap() > 0.0 && lat["max"].as_f64().unwrap() < 1e6,
        "loopback connects take microseconds, not {lat}\n{ctx}"
    );
    // --top 1: the busier peer by name, the other one as "other" (null).
    let peers = connect["by_peer"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{ctx}");
    assert_eq!(peers[0]["peer"], "127.0.0.1", "{ctx}");
    assert!(
        within(peers[0]["latency"]["count"].as_u64().unwrap() + V6 as u64),
        "{ctx}"
    );
    assert!(peers[1]["peer"].is_null(), "{ctx}");
    assert_eq!(
        peers[1]["latency"]["count"].as_u64(),
        Some(V6 as u64),
        "::1 connects\n{ctx}"
    );

    let accept = &tcp["accept"];
    assert!(
        within(accept["count"].as_u64().unwrap()),
        "accept count\n{ctx}"
    );
    assert_eq!(
        series_count(&accept["by_port"], "port", &port.into()),
        accept["count"].as_u64(),
        "{ctx}"
    );
    assert_eq!(
        accept["by_port"][0]["side"], "local",
        "an accept is labelled by its local port\n{ctx}"
    );

    let failed = &tcp["connect_failed"];
    assert_eq!(
        failed["count"].as_u64(),
        Some(REFUSED as u64),
        "refused connects\n{ctx}"
    );
    assert_eq!(failed["by_port"][0]["port"], closed, "{ctx}");
    assert_eq!(tcp["counters"]["unmatched_handshakes"], 0, "{ctx}");
}

/// `rtt:12.3/4.5` in `ss -ti` output: the smoothed RTT in ms.
fn ss_rtt_ms(text: &str) -> Option<f64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("rtt:"))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.parse().ok())
}

const SERVER: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 231, 0, 2), 5201);

/// The receiver's window clamp: the sender never has more than this in
/// flight, so the queue at the rate limit settles at one depth (at most ~25 ms at
/// 20 Mbit/s, under the 50 ms the tbf holds) with no losses, instead of
/// the loss-driven sawtooth of an unbounded sender. The RTT is then steady,
/// and a per-ACK mean (ours) and ss's readings over time describe the same thing.
const WINDOW_CLAMP: libc::c_int = 64 * 1024;

/// A bulk sender from A to B's server, running until its deadline.
struct Transfer {
    deadline: Instant,
    sender: thread::JoinHandle<()>,
}

impl Transfer {
    /// Sends as fast as it can for `secs`.
    fn start(link: &Link, secs: f64) -> Self {
        let a_name = link.a.name.clone();
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let sender = thread::spawn(move || {
            NetNs { name: a_name }.enter_current_thread_keep();
            let mut c = TcpStream::connect(SERVER).expect("connect across the veth");
            let chunk = vec![0u8; 16 * 1024];
            while Instant::now() < deadline {
                c.write_all(&chunk).expect("write");
            }
        });
        Transfer { deadline, sender }
    }

    /// Samples the sender's smoothed RTT with `ss -ti` every 100 ms until
    /// the deadline, then waits for the sender. Returns the samples (ms).
    fn sample_until_done(self, link: &Link) -> Vec<f64> {
        let mut samples = Vec::new();
        let filter = format!("dst {}:{}", SERVER.0, SERVER.1);
        while Instant::now() < self.deadline {
            thread::sleep(Duration::from_millis(100));
            let out = link.a.exec("ss", &["-tin", &filter]);
            if let Some(ms) = ss_rtt_ms(&out) {
                samples.push(ms);
            }
        }
        self.sender.join().expect("sender");
        samples
    }
}

/// The mean smoothed RTT (us) of the sender's socket: labelled by the
/// server's port as its remote port.
fn sender_rtt_us(doc: &Value, ctx: &str) -> f64 {
    let series = doc["tcp"]["rtt"]["by_port"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["port"] == SERVER.1 && s["side"] == "remote")
        .unwrap_or_else(|| panic!("no RTT series for remote port {}\n{ctx}", SERVER.1));
    series["latency"]["mean"].as_f64().unwrap()
}

#[test]
fn rtt_over_shaped_veth_matches_ss() {
    if !require_privileges("rtt_over_shaped_veth_matches_ss") {
        return;
    }
    let _guard = exclusive();
    let link = Link::create("tcp", "pu", 231);
    let b_name = link.b.name.clone();
    // The server lives in B and reads everything of two connections.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = thread::spawn(move || {
        NetNs { name: b_name }.enter_current_thread_keep();
        let l = TcpListener::bind(SERVER).expect("bind in namespace B");
        // Accepted sockets inherit both. SO_RCVBUF also stops receive-buffer
        // autotuning, which would otherwise raise the clamp as it grows.
        for (level, name) in [
            (libc::SOL_SOCKET, libc::SO_RCVBUF),
            (libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP),
        ] {
            // SAFETY: a valid socket fd and a pointer to a c_int of the given size.
            let ret = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&l),
                    level,
                    name,
                    (&WINDOW_CLAMP as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(
                ret,
                0,
                "setsockopt {name}: {}",
                std::io::Error::last_os_error()
            );
        }
        ready_tx.send(()).unwrap();
        for _ in 0..2 {
            let (mut c, _) = l.accept().expect("accept");
            let mut buf = vec![0u8; 256 * 1024];
            while matches!(c.read(&mut buf), Ok(k) if k > 0) {}
        }
    });
    ready_rx.recv().expect("server ready");
    let port = SERVER.1.to_string();

    let (base_doc, base_out) = trace_tcp(&["--port", &port], || {
        Transfer::start(&link, 1.5).sample_until_done(&link);
    });
    let base = sender_rtt_us(&base_doc, &base_out.describe());

    // 20 Mbit/s with up to 50 ms of queue: a bulk sender fills it.
    link.limit_rate("20mbit", "20kb", "50ms");
    // Slow start overshoots the queue for the first few hundred ms (ss reads
    // ~48 ms there, ~8 ms after); both sides are measured once it settled,
    // since a per-ACK mean and a mean over time weigh that burst differently.
    let transfer = Transfer::start(&link, 7.0);
    thread::sleep(Duration::from_secs(2));
    let mut ss = Vec::new();
    let (doc, out) = trace_tcp(&["--port", &port], || {
        ss = transfer.sample_until_done(&link);
    });
    server.join().expect("server");
    let ctx = out.describe();
    assert!(ss.len() >= 10, "ss gave {} RTT readings\n{ctx}", ss.len());
    let ss_mean_us = ss.iter().sum::<f64>() / ss.len() as f64 * 1000.0;
    let ours = sender_rtt_us(&doc, &ctx);
    let buckets: Vec<String> = doc["tcp"]["rtt"]["by_port"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let b: Vec<String> = s["latency"]["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["count"].as_u64() != Some(0))
                .map(|b| format!("{}-{}us:{}", b["low"], b["high"], b["count"]))
                .collect();
            format!("{} port {}: {}", s["side"], s["port"], b.join(" "))
        })
        .collect();
    let ctx = format!(
        "ss -ti readings (ms): {ss:?}\n{}\n{ctx}",
        buckets.join("\n")
    );
    eprintln!(
        "RTT: unshaped {base:.0} us; shaped {ours:.0} us, ss -ti {ss_mean_us:.0} us over {} readings",
        ss.len()
    );
    assert!(
        rel_diff(ours, ss_mean_us) <= 0.25,
        "mean smoothed RTT {ours:.0} us vs {ss_mean_us:.0} us from ss -ti ({:.0}% apart)\n{ctx}",
        rel_diff(ours, ss_mean_us) * 100.0
    );
    assert!(
        ours > 10.0 * base && ours > 5_000.0,
        "shaped RTT {ours:.0} us is not far above the unshaped {base:.0} us\n{ctx}"
    );
}

#[test]
fn bad_flag_combinations_are_explained() {
    let out = run_perf_user(
        &["latency", "--block", "--port", "80", "--duration", "1s"],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("--port filters TCP"),
        "{}",
        out.describe()
    );
}
