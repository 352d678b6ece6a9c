//! Tuning advice for an alert: the evidence (numbers, the stack, the
//! device's settings in force, read from /sys and /proc at the time) and what
//! to try, with a reversible [`Action`] where one of the allowlisted settings
//! is the thing to try.
//!
//! The suggestions are rules of thumb, stated with their reason so a reader
//! can judge whether they apply; none is applied without `advise --apply`.
//! Everything is read under `root` ("/" in production) so tests can use a
//! fake /sys and /proc.

use std::{fs, path::Path};

use serde::Serialize;

use super::{
    actions::{self, Action, BlockAttribute, Setting},
    engine::Alert,
    signals::{
        BlockEvidence, CpuEvidence, Evidence, LeakEvidence, Signal, TcpEvidence, bytes, seconds,
    },
};

/// One fact behind an alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fact {
    /// What.
    pub name: String,
    /// Its value, for people.
    pub value: String,
}

/// One thing to try.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    /// What and why.
    pub text: String,
    /// The setting change it amounts to, when it is one of the allowlisted
    /// reversible settings (`advise --apply` applies it).
    pub action: Option<Action>,
}

/// An alert with its advice: paired by the caller, so that the engine
/// knows nothing of advice.
#[derive(Clone, Debug, Serialize)]
pub struct Advised {
    /// The alert.
    #[serde(flatten)]
    pub alert: Alert,
    /// Its advice, once it fired.
    pub advice: Option<Advice>,
}

/// Advice for one alert.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// What the alert most likely means.
    pub diagnosis: String,
    /// The numbers and settings behind it.
    pub evidence: Vec<Fact>,
    /// The stack involved (root first), for leaks and hot functions.
    pub stack: Vec<String>,
    /// What to try, most promising first.
    pub suggestions: Vec<Suggestion>,
}

impl Advice {
    fn fact(&mut self, name: &str, value: impl Into<String>) {
        self.evidence.push(Fact {
            name: name.to_string(),
            value: value.into(),
        });
    }

    fn suggest(&mut self, text: impl Into<String>, action: Option<Action>) {
        self.suggestions.push(Suggestion {
            text: text.into(),
            action,
        });
    }

    /// The actions among the suggestions.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.suggestions.iter().filter_map(|s| s.action.as_ref())
    }
}

/// Advice for `alert`, reading the settings in force under `root`.
pub fn advise(alert: &Alert, root: &Path) -> Advice {
    let mut a = match &alert.evidence {
        Evidence::Block(e) => disk(e, root),
        Evidence::Tcp(e) => tcp(e, alert, root),
        Evidence::Leak(e) => leak(e, alert, root),
        Evidence::Cpu(e) => cpu(e, root),
        Evidence::None => Advice {
            diagnosis: alert.summary.clone(),
            ..Advice::default()
        },
    };
    if !alert.detail.is_empty() {
        a.evidence.insert(
            0,
            Fact {
                name: "rule".into(),
                value: format!("{} ({}): {}", alert.rule, alert.kind, alert.detail),
            },
        );
    }
    a
}

fn read(root: &Path, rel: &str) -> Option<String> {
    fs::read_to_string(root.join(rel))
        .ok()
        .map(|s| s.trim().to_string())
}

fn read_u64(root: &Path, rel: &str) -> Option<u64> {
    read(root, rel)?.parse().ok()
}

fn disk(e: &BlockEvidence, root: &Path) -> Advice {
    let dev = &e.device;
    let q = format!("sys/block/{dev}/queue");
    let scheduler_raw = read(root, &format!("{q}/scheduler"));
    let scheduler = scheduler_raw
        .as_deref()
        .and_then(actions::current_scheduler)
        .unwrap_or_else(|| "unknown".into());
    let available = scheduler_raw
        .as_deref()
        .map(actions::schedulers)
        .unwrap_or_default();
    let nr_requests = read_u64(root, &format!("{q}/nr_requests"));
    let read_ahead = read_u64(root, &format!("{q}/read_ahead_kb"));
    let rotational = read_u64(root, &format!("{q}/rotational"));
    let inflight: Option<(u64, u64)> =
        read(root, &format!("sys/block/{dev}/inflight")).and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            Some((it.next()??, it.next()??))
        });
    let tags = read_u64(root, &format!("sys/block/{dev}/mq/0/nr_tags"))
        .or_else(|| read_u64(root, &format!("sys/block/{dev}/device/queue_depth")));
    let backing = read(root, &format!("sys/block/{dev}/loop/backing_file"));
    let dio = read(root, &format!("sys/block/{dev}/loop/dio"));

    let ratio = if e.p50_secs > 0.0 {
        e.p99_secs / e.p50_secs
    } else {
        0.0
    };
    let mut a = Advice {
        diagnosis: format!(
            "{dev} {op} requests took {p99} at p99 (median {p50}) over {win:.0} s: {detail}",
            op = e.op,
            p99 = seconds(e.p99_secs),
            p50 = seconds(e.p50_secs),
            win = e.window_secs,
            detail = if ratio >= 4.0 {
                "a long tail over a fast median, the mark of requests waiting in a queue rather than a slow medium"
            } else {
                "every request is slow, not only a tail: the device (or what backs it) is saturated or slow"
            }
        ),
        ..Advice::default()
    };
    a.fact(
        "latency",
        format!(
            "p50 {}, p90 {}, p99 {}, mean {} over {} {} requests ({:.0}/s)",
            seconds(e.p50_secs),
            seconds(e.p90_secs),
            seconds(e.p99_secs),
            seconds(e.mean_secs),
            e.count,
            e.op,
            e.count as f64 / e.window_secs.max(1e-9)
        ),
    );
    if e.mean_size_bytes > 0.0 {
        a.fact("mean request size", bytes(e.mean_size_bytes));
    }
    if let Some(raw) = &scheduler_raw {
        a.fact("scheduler", raw.clone());
    }
    if let Some(n) = nr_requests {
        a.fact("nr_requests", n.to_string());
    }
    if let Some(t) = tags {
        a.fact("hardware queue depth", t.to_string());
    }
    if let Some((r, w)) = inflight {
        a.fact("in flight now", format!("{r} reads, {w} writes"));
    }
    if let Some(ra) = read_ahead {
        a.fact("read_ahead_kb", ra.to_string());
    }
    if let Some(r) = rotational {
        a.fact("rotational", if r == 1 { "yes (1)" } else { "no (0)" });
    }
    if let Some(b) = &backing {
        a.fact("loop backing file", b.clone());
        if let Some(d) = &dio {
            a.fact("loop direct I/O", if d == "1" { "on" } else { "off" });
        }
    }

    let setting = |attribute| Setting::Block {
        device: dev.clone(),
        attribute,
    };
    // Saturating: a malformed inflight file with huge counts overflowed.
    let in_flight = inflight.map_or(0, |(r, w)| r.saturating_add(w));
    if let Some(nr) = nr_requests.filter(|&n| n > 32)
        && (ratio >= 4.0 || in_flight.saturating_mul(2) >= nr)
    {
        let to = (nr / 2).max(32);
        a.suggest(
            format!(
                "Requests queue deeply (p99 is {ratio:.0}x the median; {in_flight} in flight now). \
                 Lowering nr_requests from {nr} to {to} caps how many requests wait in {dev}'s \
                 queue, and so the wait behind them; a deep sequential writer may lose some \
                 throughput. Watch p99 after the change."
            ),
            Some(Action {
                setting: setting(BlockAttribute::NrRequests),
                value: to.to_string(),
                reason: format!("{dev}: bound queueing delay (p99 {})", seconds(e.p99_secs)),
            }),
        );
    }
    let offers = |s: &str| available.iter().any(|a| a == s);
    if scheduler == "none" && offers("mq-deadline") && (rotational == Some(1) || e.op == "read") {
        a.suggest(
            format!(
                "{dev} has no I/O scheduler, so requests are served in arrival order and reads \
                 wait behind queued writes. mq-deadline gives each request a deadline (reads \
                 500 ms, writes 5 s by default) and sorts and merges them for a seeking device."
            ),
            Some(Action {
                setting: setting(BlockAttribute::Scheduler),
                value: "mq-deadline".into(),
                reason: format!("{dev}: deadline scheduling for {} latency", e.op),
            }),
        );
    } else if scheduler == "bfq"
        && rotational == Some(0)
        && (offers("none") || offers("mq-deadline"))
    {
        let to = if offers("mq-deadline") {
            "mq-deadline"
        } else {
            "none"
        };
        a.suggest(
            format!(
                "bfq spends CPU on every request to share bandwidth fairly; on a fast \
                 non-rotational device that bookkeeping adds latency. {to} is lighter."
            ),
            Some(Action {
                setting: setting(BlockAttribute::Scheduler),
                value: to.into(),
                reason: format!("{dev}: lighter scheduler for a fast device"),
            }),
        );
    }
    if e.op == "read"
        && e.mean_size_bytes > 0.0
        && e.mean_size_bytes <= 64.0 * 1024.0
        && read_ahead.is_some_and(|ra| ra > 128)
    {
        let ra = read_ahead.unwrap_or_default();
        a.suggest(
            format!(
                "Reads are small (mean {}) but read-ahead is {ra} KiB: for random access each \
                 read-ahead fetches data nobody asked for and keeps {dev} busy. 128 KiB is the \
                 kernel's default.",
                bytes(e.mean_size_bytes)
            ),
            Some(Action {
                setting: setting(BlockAttribute::ReadAheadKb),
                value: "128".into(),
                reason: format!("{dev}: small random reads"),
            }),
        );
    }
    if let Some(b) = &backing {
        a.suggest(
            format!(
                "{dev} is a loop device: its latency is that of {b} on its filesystem and disk; \
                 check that disk too{}.",
                if dio.as_deref() == Some("0") {
                    ", and turn on direct I/O (losetup --direct-io=on) so requests do not pass \
                     through the page cache twice"
                } else {
                    ""
                }
            ),
            None,
        );
    }
    a.suggest(
        format!(
            "See who issues the I/O and how busy {dev} is: `iostat -x 1 {dev}` (utilisation, \
             queue size), `perf-user latency --block --device {dev}` (the whole histogram), \
             `perf-user profile --stacks kernel` (the submitting stacks)."
        ),
        None,
    );
    a
}

/// Bandwidth assumed for the bandwidth-delay product when sizing buffers:
/// the receive window must cover a gigabit link at the observed RTT.
const BDP_RATE_BYTES_PER_SEC: f64 = 125_000_000.0;

fn tcp(e: &TcpEvidence, alert: &Alert, root: &Path) -> Advice {
    let sys = |name: &str| read(root, &format!("proc/sys/{}", name.replace('.', "/")));
    let cc = sys("net.ipv4.tcp_congestion_control").unwrap_or_else(|| "unknown".into());
    let available = sys("net.ipv4.tcp_available_congestion_control").unwrap_or_default();
    let qdisc = sys("net.core.default_qdisc").unwrap_or_else(|| "unknown".into());
    let retransmitting = alert.signal == Signal::TcpRetransmitsPerSecond;
    let mut a = Advice {
        diagnosis: if retransmitting {
            format!(
                "{} segments ({}) were retransmitted in {:.0} s: packets are lost (or \
                 reordered) on the path, and every loss stalls the connection for at least an RTT.",
                e.retransmits,
                e.what(),
                e.window_secs
            )
        } else {
            format!(
                "The smoothed RTT ({}) is {} at p99 (median {}): when it rises under load, a \
                 queue is filling at the bottleneck (bufferbloat); when it rises without load, \
                 the path itself changed.",
                e.what(),
                seconds(e.rtt_p99_secs),
                seconds(e.rtt_p50_secs)
            )
        },
        ..Advice::default()
    };
    a.fact(
        "round-trip time",
        format!(
            "p50 {}, p99 {} over {} RTT samples in {:.0} s",
            seconds(e.rtt_p50_secs),
            seconds(e.rtt_p99_secs),
            e.rtt_samples,
            e.window_secs
        ),
    );
    if alert.kind == "baseline" {
        a.fact("alert level (learned)", seconds(alert.reference));
    }
    a.fact(
        "retransmits",
        format!(
            "{} ({:.2}/s)",
            e.retransmits,
            e.retransmits as f64 / e.window_secs.max(1e-9)
        ),
    );
    if let (Some(p), Some(_)) = (&e.port, &e.peer) {
        a.fact("busiest port", p.clone());
    }
    a.fact(
        "congestion control",
        format!("{cc} (available: {available})"),
    );
    a.fact("default qdisc", qdisc.clone());
    let mut triple = |name: &str| -> Option<[u64; 3]> {
        let v = sys(name)?;
        a.fact(name, v.split_whitespace().collect::<Vec<_>>().join(" "));
        let n: Vec<u64> = v
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        (n.len() == 3).then(|| [n[0], n[1], n[2]])
    };
    let rmem = triple("net.ipv4.tcp_rmem");
    let wmem = triple("net.ipv4.tcp_wmem");
    for name in [
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.ipv4.tcp_mtu_probing",
    ] {
        if let Some(v) = sys(name) {
            a.fact(name, v);
        }
    }

    let sysctl = |name: &str| Setting::Sysctl {
        name: name.to_string(),
    };
    let has_bbr = available.split_whitespace().any(|c| c == "bbr");
    if cc != "bbr" {
        a.suggest(
            format!(
                "{cc} grows its window until packets are dropped, so it keeps the bottleneck's \
                 queue full{}. BBR paces at the measured bottleneck rate and keeps that queue \
                 short, and is less thrown by random loss.{}",
                if retransmitting {
                    " and reacts to every loss"
                } else {
                    ""
                },
                if has_bbr {
                    ""
                } else {
                    " It is not loaded here: `modprobe tcp_bbr` first."
                }
            ),
            has_bbr.then(|| Action {
                setting: sysctl("net.ipv4.tcp_congestion_control"),
                value: "bbr".into(),
                reason: format!("TCP ({}): shorter queues", e.what()),
            }),
        );
    }
    if !matches!(qdisc.as_str(), "fq" | "fq_codel" | "cake") {
        let to = if cc == "bbr" || has_bbr {
            "fq"
        } else {
            "fq_codel"
        };
        a.suggest(
            format!(
                "default_qdisc is {qdisc}, a plain FIFO: one bulk flow's queue delays every other \
                 flow behind it. {to} gives each flow its own queue{}. It applies to interfaces \
                 set up afterwards; for a running one: `tc qdisc replace dev IFACE root {to}`.",
                if to == "fq" {
                    " and paces them (what BBR wants)"
                } else {
                    " and drops early when one builds up"
                }
            ),
            Some(Action {
                setting: sysctl("net.core.default_qdisc"),
                value: to.into(),
                reason: "per-flow queueing".into(),
            }),
        );
    }
    if !retransmitting {
        let bdp = BDP_RATE_BYTES_PER_SEC * e.rtt_p99_secs;
        for (name, cur) in [("net.ipv4.tcp_rmem", rmem), ("net.ipv4.tcp_wmem", wmem)] {
            let Some([min, def, max]) = cur else { continue };
            if (max as f64) < bdp {
                let to = (bdp as u64).next_power_of_two().min(64 << 20);
                a.suggest(
                    format!(
                        "At {} a 1 Gbit/s transfer needs {} in flight (the bandwidth-delay \
                         product), more than {name}'s maximum of {}: the window, not the link, \
                         caps throughput. Raise the maximum to {}.",
                        seconds(e.rtt_p99_secs),
                        bytes(bdp),
                        bytes(max as f64),
                        bytes(to as f64)
                    ),
                    Some(Action {
                        setting: sysctl(name),
                        value: format!("{min} {def} {to}"),
                        reason: format!("buffers for a {} RTT", seconds(e.rtt_p99_secs)),
                    }),
                );
            }
        }
        a.suggest(
            "If the bottleneck is a link you manage (a router, a VPN), shape slightly below its \
             rate with cake or fq_codel there: the queue then forms where it is managed.",
            None,
        );
    } else {
        if sys("net.ipv4.tcp_mtu_probing").as_deref() == Some("0") {
            a.suggest(
                "If full-sized segments vanish on the path (an MTU black hole, common with \
                 tunnels), tcp_mtu_probing=1 lets TCP find a size that gets through after a \
                 timeout.",
                Some(Action {
                    setting: sysctl("net.ipv4.tcp_mtu_probing"),
                    value: "1".into(),
                    reason: "MTU black hole probing".into(),
                }),
            );
        }
        a.suggest(
            "Find where packets are lost: `ip -s link` (errors and drops per interface), \
             `tc -s qdisc` (qdisc drops), `nstat -az TcpExtTCPLostRetransmit TcpExtTCPTimeouts`.",
            None,
        );
    }
    a
}

/// `3 h 12 min`, `45 min`, `20 s`.
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "never".into();
    }
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

fn leak(e: &LeakEvidence, alert: &Alert, root: &Path) -> Advice {
    // Growth per minute: in bytes for a stack's bytes, in allocations for
    // the daemon's per-name counts (whose sizes are unknown).
    let growth = (alert.kind == "rate").then_some(alert.value);
    let bytes_per_sec = match alert.signal {
        Signal::LeakOutstandingBytes => growth.map(|g| g / 60.0),
        _ => None,
    };
    let meminfo_kib = |key: &str| -> Option<u64> {
        read(root, "proc/meminfo")?.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    // Saturating: a malformed meminfo or status with a huge kB figure overflowed.
    let available = meminfo_kib("MemAvailable").map(|k| k.saturating_mul(1024));
    // The process itself, or the first traced one of that name.
    let pid = e.pid.or_else(|| {
        crate::processes::find_by_name(std::slice::from_ref(&e.process))
            .first()
            .map(|(p, _)| *p)
    });
    let rss = pid.and_then(|pid| {
        read(root, &format!("proc/{pid}/status")).and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map(|k| k.saturating_mul(1024))
        })
    });
    // cgroup v2: "0::/system.slice/app.service".
    let cgroup = pid.and_then(|pid| {
        read(root, &format!("proc/{pid}/cgroup")).and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
    });
    let limit = cgroup.as_ref().and_then(|cg| {
        let dir = format!("sys/fs/cgroup{cg}");
        let max = read(root, &format!("{dir}/memory.max"))?
            .parse::<u64>()
            .ok()?;
        let cur = read_u64(root, &format!("{dir}/memory.current"))?;
        Some((max, cur))
    });
    let who = match e.pid {
        Some(p) => format!("{} (pid {p})", e.process),
        None => format!("{} (every traced process of that name)", e.process),
    };
    let held = match e.bytes {
        Some(b) => format!("{} in {} allocations", bytes(b as f64), e.allocations),
        None => format!("{} allocations", e.allocations),
    };
    let rate_text = match (growth, bytes_per_sec) {
        (Some(_), Some(bps)) => format!("{}/min", bytes(bps * 60.0)),
        (Some(g), None) => format!("{g:.0} allocations/min"),
        _ => String::new(),
    };
    let mut a = Advice {
        diagnosis: format!(
            "{who} holds {held}{} and it keeps growing{}: memory allocated and never freed.",
            e.function
                .as_ref()
                .map(|f| format!(" from one call stack via {f}"))
                .unwrap_or_default(),
            if rate_text.is_empty() {
                String::new()
            } else {
                format!(" by {rate_text}")
            }
        ),
        stack: e.stack.clone(),
        ..Advice::default()
    };
    a.fact("outstanding", held);
    if !rate_text.is_empty() {
        a.fact("growth", rate_text);
    }
    if let Some(r) = rss {
        a.fact("process RSS", bytes(r as f64));
    }
    if let Some(av) = available {
        a.fact("MemAvailable", bytes(av as f64));
        match bytes_per_sec {
            Some(bps) if bps > 0.0 => a.fact(
                "time until MemAvailable is used up",
                format!("{} at this rate", human_duration(av as f64 / bps)),
            ),
            _ => a.fact(
                "time until MemAvailable is used up",
                "unknown: only allocation counts are traced here; `perf-user advise --pid PID` \
                 measures bytes per stack",
            ),
        }
    }
    if let (Some((max, cur)), Some(cg)) = (limit, &cgroup) {
        a.fact(
            "cgroup memory limit",
            format!("{} used of {} ({cg})", bytes(cur as f64), bytes(max as f64)),
        );
        if let Some(bps) = bytes_per_sec.filter(|&b| b > 0.0 && max > cur) {
            a.fact(
                "time until the cgroup limit",
                format!("{} at this rate", human_duration((max - cur) as f64 / bps)),
            );
        }
    }
    let target = pid.map_or_else(|| "PID".to_string(), |p| p.to_string());
    a.suggest(
        format!(
            "See every leaking stack with the age of its allocations: `perf-user leaks --pid \
             {target} --min-age 30s --interval 30s`. Stacks whose oldest allocation keeps ageing \
             are never freed; find who owns what the top frame allocates."
        ),
        None,
    );
    a.suggest(
        format!(
            "Until it is fixed, cap its memory so that the OOM killer stops this process rather \
             than something else on the host: MemoryMax= in its systemd unit (or `systemctl \
             set-property UNIT MemoryMax=...`), and restart it before it reaches the cap{}.",
            match (available, bytes_per_sec) {
                (Some(av), Some(bps)) if bps > 0.0 =>
                    format!(" (about {} from now)", human_duration(av as f64 / bps)),
                _ => String::new(),
            }
        ),
        None,
    );
    a
}

/// Kernel and library functions whose cost has a usual cause.
const KNOWN: &[(&str, &str)] = &[
    (
        "spin_lock",
        "lock contention in the kernel: the callers in the stack show which lock, and which path takes it so often",
    ),
    (
        "clear_page",
        "page faults on fresh memory (the kernel zeroes each new page): reuse buffers instead of allocating and freeing large ones, or pre-fault them (MAP_POPULATE)",
    ),
    (
        "page_fault",
        "page faults: memory touched for the first time, or swapped; reuse buffers, check swap and transparent hugepages",
    ),
    (
        "copy_user",
        "copying between user space and the kernel: fewer and larger read/write calls, or zero-copy (sendfile, splice, io_uring)",
    ),
    (
        "copy_to_user",
        "copying from the kernel to user space: fewer and larger reads, or zero-copy",
    ),
    (
        "copy_from_user",
        "copying from user space into the kernel: fewer and larger writes, or zero-copy",
    ),
    (
        "memcpy",
        "copying memory: the caller in the stack is what copies; avoid the copy or make it smaller",
    ),
    (
        "memmove",
        "moving memory: the caller in the stack is what moves it",
    ),
    (
        "memset",
        "clearing memory: the caller in the stack clears buffers, perhaps larger than needed",
    ),
    (
        "malloc",
        "the allocator: many small allocations; reuse or pool objects, or try another allocator (jemalloc, mimalloc)",
    ),
    (
        "_int_free",
        "the allocator: many small frees; reuse or pool objects",
    ),
    (
        "__schedule",
        "context switches: threads block and wake very often (locks, tiny I/O); batch the work",
    ),
];

fn cpu(e: &CpuEvidence, _root: &Path) -> Advice {
    let share = e.self_samples as f64 / e.total_samples.max(1) as f64;
    let mut a = Advice {
        diagnosis: format!(
            "{} in {} ({}) was running in {:.1}% of the CPU samples.",
            e.function,
            e.process,
            e.module,
            share * 100.0
        ),
        stack: e.stack.clone(),
        ..Advice::default()
    };
    a.fact(
        "samples",
        format!(
            "{} of {} ({:.1}%)",
            e.self_samples,
            e.total_samples,
            share * 100.0
        ),
    );
    if !e.pids.is_empty() {
        a.fact(
            "pids",
            e.pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if let Some((_, why)) = KNOWN.iter().find(|(k, _)| e.function.contains(k)) {
        a.suggest(format!("{}: {why}.", e.function), None);
    } else {
        a.suggest(
            format!(
                "{} itself does the work: look at what it loops over, and at its callers in the \
                 stack for why it is called so often now (a new input pattern, a deploy, a \
                 retry loop).",
                e.function
            ),
            None,
        );
    }
    let target = e
        .pids
        .first()
        .map_or_else(|| format!("--comm {}", e.process), |p| format!("--pid {p}"));
    a.suggest(
        format!(
            "Flame graph of the process: `perf-user profile {target} --duration 30s --format svg -o flame.svg`."
        ),
        None,
    );
    a
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::alerts::{actions::tests::fake_root, rules::Severity, signals::labels};

    fn alert(kind: &'static str, signal: Signal, value: f64, evidence: Evidence) -> Alert {
        let mut a = engine_alert();
        a.kind = kind;
        a.signal = signal;
        a.value = value;
        a.peak = value;
        a.evidence = evidence;
        a
    }

    /// A real alert from an engine (its bookkeeping fields are private).
    fn engine_alert() -> Alert {
        use crate::alerts::{
            engine::{Engine, EngineOptions},
            rules::{Direction, Matchers, Rule, RuleKind, Threshold},
            signals::{Batch, Observation},
        };
        let rule = Rule {
            name: "R".into(),
            kind: RuleKind::Threshold(Threshold {
                direction: Direction::Above,
                value: 0.0,
                clear: 0.0,
            }),
            signal: Signal::BlockLatencyP99,
            matchers: Matchers::default(),
            severity: Severity::Warning,
            for_: Duration::ZERO,
            min_count: 0,
            summary: None,
        };
        let mut e = Engine::new(vec![rule], EngineOptions::default());
        let mut b = Batch::new(UNIX_EPOCH, Duration::from_secs(1));
        b.extend(
            &[Signal::BlockLatencyP99],
            vec![Observation {
                signal: Signal::BlockLatencyP99,
                labels: labels([]),
                value: 1.0,
                count: 1,
                evidence: Evidence::None,
            }],
        );
        let mut a = e.evaluate(&b).pop().unwrap().alert;
        a.detail = String::new();
        a
    }

    fn block_evidence(op: &str, p50: f64, p99: f64, size: f64) -> Evidence {
        Evidence::Block(BlockEvidence {
            device: "loop3".into(),
            op: op.into(),
            count: 1000,
            window_secs: 10.0,
            p50_secs: p50,
            p90_secs: p99 / 2.0,
            p99_secs: p99,
            mean_secs: p50,
            mean_size_bytes: size,
        })
    }

    #[test]
    fn a_queued_disk_gets_nr_requests_and_scheduler_advice_with_actions() {
        let root = fake_root("advice-disk");
        fs::write(root.join("sys/block/loop3/queue/rotational"), "1\n").unwrap();
        fs::write(root.join("sys/block/loop3/inflight"), "       0       90\n").unwrap();
        fs::create_dir_all(root.join("sys/block/loop3/loop")).unwrap();
        fs::write(
            root.join("sys/block/loop3/loop/backing_file"),
            "/tmp/x.img\n",
        )
        .unwrap();
        fs::write(root.join("sys/block/loop3/loop/dio"), "0\n").unwrap();
        let a = advise(
            &alert(
                "threshold",
                Signal::BlockLatencyP99,
                0.4,
                block_evidence("write", 0.01, 0.4, 4096.0),
            ),
            &root,
        );
        assert!(a.diagnosis.contains("queue"), "{}", a.diagnosis);
        let facts: Vec<&str> = a.evidence.iter().map(|f| f.name.as_str()).collect();
        for want in [
            "latency",
            "scheduler",
            "nr_requests",
            "in flight now",
            "read_ahead_kb",
            "loop backing file",
        ] {
            assert!(facts.contains(&want), "{want} missing from {facts:?}");
        }
        let actions: Vec<(String, String)> = a
            .actions()
            .map(|x| (x.setting.id(), x.value.clone()))
            .collect();
        assert_eq!(
            actions,
            [
                ("block:loop3:nr_requests".to_string(), "64".to_string()),
                (
                    "block:loop3:scheduler".to_string(),
                    "mq-deadline".to_string()
                )
            ]
        );
        assert!(
            a.suggestions
                .iter()
                .any(|s| s.text.contains("direct-io=on"))
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn small_reads_with_big_read_ahead_get_read_ahead_advice() {
        let root = fake_root("advice-ra");
        fs::write(root.join("sys/block/loop3/queue/rotational"), "0\n").unwrap();
        let a = advise(
            &alert(
                "threshold",
                Signal::BlockLatencyP99,
                0.2,
                block_evidence("read", 0.1, 0.2, 8192.0),
            ),
            &root,
        );
        let ids: Vec<String> = a
            .actions()
            .map(|x| format!("{}={}", x.setting.id(), x.value))
            .collect();
        assert!(
            ids.contains(&"block:loop3:read_ahead_kb=128".to_string()),
            "{ids:?}"
        );
        assert!(
            ids.contains(&"block:loop3:scheduler=mq-deadline".to_string()),
            "reads wait behind writes: {ids:?}"
        );
        assert!(
            a.diagnosis.contains("every request is slow"),
            "{}",
            a.diagnosis
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn every_suggested_action_passes_the_allowlist() {
        let root = fake_root("advice-valid");
        fs::write(root.join("sys/block/loop3/queue/rotational"), "1\n").unwrap();
        fs::write(root.join("proc/sys/net/core/default_qdisc"), "pfifo_fast\n").unwrap();
        fs::write(root.join("proc/sys/net/ipv4/tcp_mtu_probing"), "0\n").unwrap();
        fs::write(
            root.join("proc/sys/net/ipv4/tcp_wmem"),
            "4096 16384 4194304\n",
        )
        .unwrap();
        let tcp = |signal, p99| {
            alert(
                "baseline",
                signal,
                p99,
                Evidence::Tcp(TcpEvidence {
                    peer: Some("10.0.0.2".into()),
                    port: Some("5001".into()),
                    side: Some("local".into()),
                    rtt_samples: 900,
                    rtt_p50_secs: 0.1,
                    rtt_p99_secs: p99,
                    retransmits: 80,
                    window_secs: 10.0,
                }),
            )
        };
        let advices = [
            advise(&tcp(Signal::TcpRttP99, 0.25), &root),
            advise(&tcp(Signal::TcpRetransmitsPerSecond, 0.25), &root),
            advise(
                &alert(
                    "threshold",
                    Signal::BlockLatencyP99,
                    0.4,
                    block_evidence("read", 0.01, 0.4, 4096.0),
                ),
                &root,
            ),
        ];
        let mut n = 0;
        for a in &advices {
            for action in a.actions() {
                action.setting.check(&root).unwrap();
                action.setting.validate(&root, &action.value, true).unwrap();
                n += 1;
            }
        }
        assert!(n >= 6, "{advices:#?}");
        // RTT of 250 ms: 31 MB BDP at 1 Gbit/s, above both maxima.
        let rtt: Vec<String> = advices[0].actions().map(|x| x.setting.id()).collect();
        assert!(
            rtt.contains(&"sysctl:net.ipv4.tcp_rmem".to_string()),
            "{rtt:?}"
        );
        assert!(
            rtt.contains(&"sysctl:net.ipv4.tcp_congestion_control".to_string()),
            "{rtt:?}"
        );
        let retrans: Vec<String> = advices[1].actions().map(|x| x.setting.id()).collect();
        assert!(
            retrans.contains(&"sysctl:net.ipv4.tcp_mtu_probing".to_string()),
            "{retrans:?}"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_leak_gets_its_time_to_exhaustion() {
        let root = fake_root("advice-leak");
        fs::write(
            root.join("proc/meminfo"),
            "MemTotal: 8000000 kB\nMemAvailable:    1048576 kB\n",
        )
        .unwrap();
        let a = advise(
            &alert(
                "rate",
                Signal::LeakOutstandingBytes,
                // 1 GiB available at 16 MiB/min: 64 minutes.
                16.0 * 1024.0 * 1024.0,
                Evidence::Leak(LeakEvidence {
                    pid: Some(42),
                    process: "leaky".into(),
                    bytes: Some(50 << 20),
                    allocations: 5000,
                    function: Some("malloc".into()),
                    stack: vec!["main".into(), "leak_some".into()],
                }),
            ),
            &root,
        );
        let t = a
            .evidence
            .iter()
            .find(|f| f.name == "time until MemAvailable is used up")
            .unwrap();
        assert_eq!(t.value, "1 h 4 min at this rate");
        assert_eq!(a.stack, ["main", "leak_some"]);
        assert!(a.suggestions[0].text.contains("--pid 42"));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn counted_allocations_say_that_bytes_are_unknown() {
        let root = fake_root("advice-leak-count");
        fs::write(root.join("proc/meminfo"), "MemAvailable: 1048576 kB\n").unwrap();
        let a = advise(
            &alert(
                "rate",
                Signal::LeakOutstandingAllocations,
                600.0,
                Evidence::Leak(LeakEvidence {
                    pid: None,
                    process: "no-such-process-name".into(),
                    bytes: None,
                    allocations: 12_000,
                    function: None,
                    stack: Vec::new(),
                }),
            ),
            &root,
        );
        assert!(
            a.diagnosis.contains("every traced process of that name"),
            "{}",
            a.diagnosis
        );
        assert!(
            a.diagnosis.contains("600 allocations/min"),
            "{}",
            a.diagnosis
        );
        let t = a
            .evidence
            .iter()
            .find(|f| f.name == "time until MemAvailable is used up")
            .unwrap();
        assert!(t.value.starts_with("unknown"), "{}", t.value);
        assert!(a.suggestions[0].text.contains("--pid PID"));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_hot_kernel_function_gets_its_usual_cause() {
        let a = advise(
            &alert(
                "hotspot",
                Signal::CpuSelfRatio,
                0.6,
                Evidence::Cpu(CpuEvidence {
                    process: "db".into(),
                    pids: vec![7],
                    function: "native_queued_spin_lock_slowpath".into(),
                    module: "[kernel]".into(),
                    self_samples: 600,
                    total_samples: 1000,
                    stack: vec!["main".into(), "native_queued_spin_lock_slowpath".into()],
                }),
            ),
            Path::new("/nonexistent"),
        );
        assert!(a.suggestions[0].text.contains("lock contention"));
        assert!(a.suggestions[1].text.contains("--pid 7"));
        assert_eq!(a.stack.len(), 2);
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_duration(42.0), "42 s");
        assert_eq!(human_duration(600.0), "10 min");
        assert_eq!(human_duration(3.0 * 3600.0 + 720.0), "3 h 12 min");
        assert_eq!(human_duration(90_000.0), "1 d 1 h");
        assert_eq!(human_duration(f64::INFINITY), "never");
    }
    /// Malformed /proc and /sys files under a test root: advice is still
    /// given, without a panic.
    mod props {
        use proptest::prelude::*;

        use super::*;

        /// What a kernel file could hold when it is not what we expect.
        fn content() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<u64>().prop_map(|v| v.to_string()),
                Just(u64::MAX.to_string()),
                Just(format!("{} {}", u64::MAX, u64::MAX)),
                Just(format!(
                    "MemAvailable: {} kB\nVmRSS: {} kB",
                    u64::MAX,
                    u64::MAX
                )),
                Just("0::/../../../../etc".to_string()),
                "\\PC{0,40}",
                "[0-9 \t:a-zA-Z]{0,40}",
            ]
        }

        const FILES: &[&str] = &[
            "proc/meminfo",
            "proc/42/status",
            "proc/42/cgroup",
            "sys/fs/cgroup/app/memory.max",
            "sys/fs/cgroup/app/memory.current",
            "sys/block/loop3/inflight",
            "sys/block/loop3/queue/nr_requests",
            "sys/block/loop3/queue/scheduler",
            "sys/block/loop3/queue/read_ahead_kb",
            "sys/block/loop3/queue/rotational",
            "sys/block/loop3/mq/0/nr_tags",
            "proc/sys/net/ipv4/tcp_rmem",
            "proc/sys/net/ipv4/tcp_wmem",
            "proc/sys/net/ipv4/tcp_available_congestion_control",
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn malformed_kernel_files_never_panic(
                contents in prop::collection::vec(content(), FILES.len()),
                cgroup_app in any::<bool>(),
            ) {
                let root = fake_root("advice-props");
                for (file, text) in FILES.iter().zip(&contents) {
                    let path = root.join(file);
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    fs::write(&path, text).unwrap();
                }
                if cgroup_app {
                    fs::write(root.join("proc/42/cgroup"), "0::/app\n").unwrap();
                }
                let leak = Evidence::Leak(LeakEvidence {
                    pid: Some(42),
                    process: "leaky".into(),
                    bytes: Some(50 << 20),
                    allocations: 5000,
                    function: Some("malloc".into()),
                    stack: vec!["main".into()],
                });
                let tcp = Evidence::Tcp(TcpEvidence {
                    peer: Some("10.0.0.2".into()),
                    port: Some("5001".into()),
                    side: Some("local".into()),
                    rtt_samples: 900,
                    rtt_p50_secs: 0.1,
                    rtt_p99_secs: 0.25,
                    retransmits: 80,
                    window_secs: 10.0,
                });
                for alert in [
                    alert("rate", Signal::LeakOutstandingBytes, 1e6, leak),
                    alert("threshold", Signal::BlockLatencyP99, 0.4, block_evidence("read", 0.01, 0.4, 4096.0)),
                    alert("baseline", Signal::TcpRttP99, 0.25, tcp),
                ] {
                    let _ = advise(&alert, &root);
                }
                fs::remove_dir_all(&root).unwrap();
            }
        }
    }
}
