//! TCP latency: tracepoints tcp:tcp_probe (smoothed RTT),
//! sock:inet_sock_set_state (connect and accept latency, failed connects) and
//! tcp:tcp_retransmit_skb, aggregated in the kernel into per-CPU log2
//! histograms labelled by port and peer.
//!
//! As for block I/O, two sets of programs read these tracepoints: BTF
//! tracepoints (tp_btf) reading the `struct sock` at offsets from the
//! kernel's BTF where it has BTF, classic ones reading the records (offsets
//! from tracefs) elsewhere; see `collectors::tracepoints`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    path::Path,
};

use aya::{
    Ebpf, EbpfError,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuHashMap},
    programs::ProgramError,
};
use perf_ebpf_common::{
    hist::{Hist, LATENCY_UNIT_NS},
    tcp::{
        AF_INET, AF_INET6, TCP_PORT_FILTER_ENTRIES, TCP_SPAN_MAX, TcpConfig, TcpKey,
        TcpSockOffsets, counter, kind, side,
    },
};

use super::{
    Collector, maps,
    tracepoints::{
        AttachError, Tracepoints, attach_btf, attach_classic, check_args, choose, offset,
    },
};
use crate::{
    btf::{sysfs_btf, sysfs_layout},
    btf_layout::{Layout, LayoutError},
    ebpf,
    histogram::Log2Hist,
    progstats::{self, ProgStats},
    tracefs::{self, Format, TracefsError},
};

/// Where Linux keeps the local ephemeral port range.
pub const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The classic programs and their tracepoints (category, name; the
/// programs are named as the tracepoints), in attach order: state changes
/// first, so that no handshake is begun unseen.
const PROGRAMS: [(&str, &str); 3] = [
    ("sock", "inet_sock_set_state"),
    ("tcp", "tcp_probe"),
    ("tcp", "tcp_retransmit_skb"),
];

/// The BTF tracepoint programs, (tracepoint, program), in the same order.
const BTF_PROGRAMS: [(&str, &str); 3] = [
    ("inet_sock_set_state", "inet_sock_set_state_btf"),
    ("tcp_probe", "tcp_probe_btf"),
    ("tcp_retransmit_skb", "tcp_retransmit_skb_btf"),
];

/// What to trace.
#[derive(Clone, Debug, Default)]
pub struct TcpOptions {
    /// Only connections with one of these local or remote ports; empty means all.
    pub ports: Vec<u16>,
    /// BTF or classic tracepoints.
    pub tracepoints: Tracepoints,
    /// Key series without their peer (one per kind and port): for a caller
    /// that sums peers away anyway (the daemon), so the kernel map does not
    /// fill with peers it would never show.
    pub fold_peers: bool,
}

/// Why the TCP collector could not start or read.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// tracefs or a tracepoint format was unusable.
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    /// The eBPF object could not be loaded (maps creation failed).
    #[error(
        "loading the eBPF object failed: {0}; this needs root or CAP_BPF+CAP_PERFMON and a kernel with BPF enabled"
    )]
    Load(#[from] EbpfError),
    /// The verifier or the kernel refused a program, or attaching failed.
    #[error("the kernel refused the TCP program {program}: {source}")]
    Program {
        /// The program's name.
        program: &'static str,
        /// What went wrong.
        #[source]
        source: ProgramError,
    },
    /// A map was missing or could not be read.
    #[error("reading the TCP map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What went wrong.
        #[source]
        source: MapError,
    },
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// `--tracepoints btf` on a kernel that cannot have them.
    #[error(
        "BTF tracepoints for TCP are not available: {0}; use --tracepoints classic \
         (or auto, which falls back by itself)"
    )]
    NoBtf(String),
}

impl From<AttachError> for TcpError {
    fn from(e: AttachError) -> Self {
        match e {
            AttachError::Missing(p) => {
                TcpError::Options(format!("program {p} missing from the object"))
            }
            AttachError::Program { program, source } => TcpError::Program { program, source },
        }
    }
}

impl From<super::maps::MapAccessError> for TcpError {
    fn from(e: super::maps::MapAccessError) -> Self {
        TcpError::Map {
            map: e.map,
            source: e.source,
        }
    }
}

/// What a series measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpKind {
    /// Smoothed RTT at each received segment.
    Rtt,
    /// Active open, SYN_SENT to ESTABLISHED.
    Connect,
    /// Active open that failed, SYN_SENT to CLOSE (time to failure).
    ConnectFailed,
    /// Passive open, SYN_RECV to ESTABLISHED.
    Accept,
    /// Retransmitted segments (count only).
    Retransmit,
}

impl TcpKind {
    fn from_raw(k: u8) -> Option<Self> {
        Some(match k {
            kind::RTT => Self::Rtt,
            kind::CONNECT => Self::Connect,
            kind::CONNECT_FAILED => Self::ConnectFailed,
            kind::ACCEPT => Self::Accept,
            kind::RETRANSMIT => Self::Retransmit,
            _ => return None,
        })
    }
}

/// Which end's port labels a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortSide {
    /// The local port (a server's listening port).
    Local,
    /// The remote port (the service a client uses).
    Remote,
}

/// One kernel series: a kind, a port, a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSeries {
    /// What it measures.
    pub kind: TcpKind,
    /// Which end `port` is.
    pub side: PortSide,
    /// The labelling port.
    pub port: u16,
    /// The remote address; `None` for peers folded together when the map was full.
    pub peer: Option<IpAddr>,
    /// Values in ns (retransmits: only the count).
    pub hist: Log2Hist,
}

/// The kernel side's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpCounters {
    /// tcp_probe events seen.
    pub probes: u64,
    /// RTT values recorded.
    pub rtt_recorded: u64,
    /// TCP state changes seen.
    pub state_changes: u64,
    /// Handshakes that ended without their start seen (begun before tracing).
    pub unmatched_handshakes: u64,
    /// Handshakes not timed because the start map was full.
    pub start_map_full: u64,
    /// Values lost because the histogram map was full.
    pub histogram_map_full: u64,
    /// Values whose peer was folded into "other peers" (map full).
    pub peers_folded: u64,
    /// Tracepoint fields that could not be read.
    pub read_errors: u64,
    /// Retransmits seen (before the port filter).
    pub retransmits_seen: u64,
    /// Program runs the kernel skipped because another BPF program was
    /// running on that CPU (all three programs).
    pub missed: u64,
}

/// Everything read from the kernel maps.
#[derive(Clone, Debug, Default)]
pub struct TcpSnapshot {
    /// One entry per (kind, side, port, peer) seen.
    pub series: Vec<TcpSeries>,
    /// What the kernel side counted.
    pub counters: TcpCounters,
    /// Which tracepoint programs measured it: `Btf` or `Classic`.
    pub tracepoints: Tracepoints,
}

/// The local ephemeral port range, from the text of ip_local_port_range.
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    let lo = it.next()?.ok()?;
    let hi = it.next()?.ok()?;
    (lo <= hi).then_some((lo, hi))
}

/// Builds the programs' configuration from the tracepoint formats under `root`.
pub fn config(root: &Path, opts: &TcpOptions) -> Result<TcpConfig, TcpError> {
    let probe = tracefs::read_format(root, "tcp", "tcp_probe")?;
    let state = tracefs::read_format(root, "sock", "inet_sock_set_state")?;
    let retrans = tracefs::read_format(root, "tcp", "tcp_retransmit_skb")?;
    let mut cfg = config_from(&probe, &state, &retrans)?;
    filters(&mut cfg, opts);
    Ok(cfg)
}

/// The ephemeral port range and the port filter switch, for either kind.
fn filters(cfg: &mut TcpConfig, opts: &TcpOptions) {
    // Linux's default when the file cannot be read.
    let (lo, hi) = std::fs::read_to_string(PORT_RANGE)
        .ok()
        .and_then(|t| parse_port_range(&t))
        .unwrap_or((32_768, 60_999));
    cfg.ephemeral_lo = lo;
    cfg.ephemeral_hi = hi;
    cfg.filter_ports = u8::from(!opts.ports.is_empty());
    cfg.fold_peers = u8::from(opts.fold_peers);
}

/// The BTF tracepoint programs' configuration: the socket offsets they read,
/// checked against the tracepoints' signatures.
pub fn btf_config(layout: &Layout, opts: &TcpOptions) -> Result<TcpConfig, LayoutError> {
    let sk = "*struct sock";
    // tcp_probe and tcp_retransmit_skb: only the socket is read (newer
    // kernels add arguments after it).
    check_args(layout, "tcp_probe", &[sk], false, false)?;
    check_args(layout, "tcp_retransmit_skb", &[sk], false, false)?;
    check_args(
        layout,
        "inet_sock_set_state",
        &[sk, "u4", "u4"],
        true,
        false,
    )?;
    let off = |s: &str, f: &str, size: u32| offset(layout, s, f, size);
    let mut cfg = TcpConfig::zeroed();
    cfg.sk = TcpSockOffsets {
        family: off("sock", "__sk_common.skc_family", 2)?,
        num: off("sock", "__sk_common.skc_num", 2)?,
        dport: off("sock", "__sk_common.skc_dport", 2)?,
        daddr: off("sock", "__sk_common.skc_daddr", 4)?,
        v6_daddr: off("sock", "__sk_common.skc_v6_daddr", 16)?,
        protocol: off("sock", "sk_protocol", 2)?,
        srtt_us: off("tcp_sock", "srtt_us", 4)?,
        _pad: 0,
    };
    filters(&mut cfg, opts);
    Ok(cfg)
}

/// The offsets part of the configuration: for each tracepoint, the span of
/// its record that holds the fields, and their offsets in that span.
pub fn config_from(
    probe: &Format,
    state: &Format,
    retrans: &Format,
) -> Result<TcpConfig, TcpError> {
    let mut cfg = TcpConfig::zeroed();
    // `daddr` is a struct sockaddr_in6 (28 bytes), which holds either
    // family: the IPv4 address at +4 (sockaddr_in), the IPv6 one at +8.
    let (span, [sport, dport, family, daddr, srtt]) = probe.span(
        [
            ("sport", 2),
            ("dport", 2),
            ("family", 2),
            ("daddr", 24),
            ("srtt", 4),
        ],
        TCP_SPAN_MAX,
    )?;
    (cfg.probe_base, cfg.probe_len) = (span.base, span.len);
    (cfg.probe_sport, cfg.probe_dport, cfg.probe_family) = (sport, dport, family);
    (cfg.probe_daddr, cfg.probe_daddr_v6) = (daddr + 4, daddr + 8);
    cfg.probe_srtt = srtt;

    let (
        span,
        [
            skaddr,
            old,
            new,
            sport,
            dport,
            family,
            protocol,
            daddr,
            daddr_v6,
        ],
    ) = state.span(
        [
            ("skaddr", 8),
            ("oldstate", 4),
            ("newstate", 4),
            ("sport", 2),
            ("dport", 2),
            ("family", 2),
            ("protocol", 2),
            ("daddr", 4),
            ("daddr_v6", 16),
        ],
        TCP_SPAN_MAX,
    )?;
    (cfg.state_base, cfg.state_len) = (span.base, span.len);
    (cfg.state_skaddr, cfg.state_oldstate, cfg.state_newstate) = (skaddr, old, new);
    (cfg.state_sport, cfg.state_dport, cfg.state_family) = (sport, dport, family);
    cfg.state_protocol = protocol;
    (cfg.state_daddr, cfg.state_daddr_v6) = (daddr, daddr_v6);

    let (span, [sport, dport, family, daddr, daddr_v6]) = retrans.span(
        [
            ("sport", 2),
            ("dport", 2),
            ("family", 2),
            ("daddr", 4),
            ("daddr_v6", 16),
        ],
        TCP_SPAN_MAX,
    )?;
    (cfg.retrans_base, cfg.retrans_len) = (span.base, span.len);
    (cfg.retrans_sport, cfg.retrans_dport, cfg.retrans_family) = (sport, dport, family);
    (cfg.retrans_daddr, cfg.retrans_daddr_v6) = (daddr, daddr_v6);
    Ok(cfg)
}

/// The peer address of a key; `None` for "other peers".
pub fn peer_addr(key: &TcpKey) -> Option<IpAddr> {
    match key.family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
            key.peer[0],
            key.peer[1],
            key.peer[2],
            key.peer[3],
        ))),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(key.peer);
            // An IPv4 peer of a dual-stack socket: show it as IPv4.
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

fn port_side(raw: u8) -> PortSide {
    if raw == side::LOCAL {
        PortSide::Local
    } else {
        PortSide::Remote
    }
}

/// An attached TCP collector; dropping it detaches the programs.
pub struct TcpCollector {
    ebpf: Ebpf,
    /// `Btf` or `Classic`: what is attached.
    tracepoints: Tracepoints,
    /// Why BTF tracepoints were not used, when `auto` fell back.
    fallback: Option<String>,
}

impl TcpCollector {
    /// Loads the programs and attaches them: BTF tracepoints where the
    /// kernel has BTF (unless `opts.tracepoints` says classic), else classic ones
    /// (mounting tracefs if needed).
    pub fn attach(opts: &TcpOptions) -> Result<Self, TcpError> {
        if opts.ports.len() > TCP_PORT_FILTER_ENTRIES as usize {
            return Err(TcpError::Options(format!(
                "at most {TCP_PORT_FILTER_ENTRIES} ports can be selected at once"
            )));
        }
        choose(
            opts.tracepoints,
            || Self::attach_btf(opts),
            |fallback| Self::attach_classic(opts, fallback),
        )
    }

    fn attach_btf(opts: &TcpOptions) -> Result<Self, TcpError> {
        let layout = sysfs_layout().map_err(TcpError::NoBtf)?;
        let cfg = btf_config(&layout, opts).map_err(|e| TcpError::NoBtf(e.to_string()))?;
        drop(layout);
        let btf = sysfs_btf().map_err(TcpError::NoBtf)?;
        let mut ebpf = Self::load(opts, cfg)?;
        attach_btf(&mut ebpf, &btf, BTF_PROGRAMS)?;
        Ok(Self {
            ebpf,
            tracepoints: Tracepoints::Btf,
            fallback: None,
        })
    }

    fn attach_classic(opts: &TcpOptions, fallback: Option<String>) -> Result<Self, TcpError> {
        let root = tracefs::ensure_mounted()?;
        let cfg = config(&root, opts)?;
        let mut ebpf = Self::load(opts, cfg)?;
        attach_classic(&mut ebpf, PROGRAMS.map(|(category, p)| (category, p, p)))?;
        Ok(Self {
            ebpf,
            tracepoints: Tracepoints::Classic,
            fallback,
        })
    }

    /// Loads the object with `cfg`, the port filter filled in.
    fn load(opts: &TcpOptions, cfg: TcpConfig) -> Result<Ebpf, TcpError> {
        let mut ebpf = ebpf::load(&ebpf::Globals {
            tcp: Some(cfg),
            ..ebpf::Globals::default()
        })?;
        if !opts.ports.is_empty() {
            let map = maps::find_mut(&mut ebpf, "TCP_PORT_FILTER")?;
            let mut filter: BpfHashMap<_, u16, u8> =
                BpfHashMap::try_from(map).map_err(maps::MapAccessError::on("TCP_PORT_FILTER"))?;
            for &port in &opts.ports {
                filter
                    .insert(port, 1, 0)
                    .map_err(maps::MapAccessError::on("TCP_PORT_FILTER"))?;
            }
        }
        Ok(ebpf)
    }

    /// `Btf` or `Classic`: which programs are attached.
    pub fn tracepoints(&self) -> Tracepoints {
        self.tracepoints
    }

    /// Why BTF tracepoints could not be used, when `auto` fell back to
    /// classic ones.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The kernel side's counters so far (reads the histograms' counts too).
    pub fn counters_now(&self) -> Result<TcpCounters, TcpError> {
        let mut rtts = 0;
        for entry in self.hists()?.iter() {
            let (key, per_cpu) = entry.map_err(maps::MapAccessError::on("TCP_HISTS"))?;
            if key.kind == kind::RTT {
                rtts += per_cpu.iter().map(|h| h.count).sum::<u64>();
            }
        }
        self.counters(rtts)
    }

    /// `rtt_recorded`: the RTT histograms' counts, which the kernel does not
    /// count separately (a counter bump less per segment).
    fn counters(&self, rtt_recorded: u64) -> Result<TcpCounters, TcpError> {
        let c = maps::sum_counters(&self.ebpf, "TCP_COUNTERS", counter::LEN)?;
        let get = |i: u32| c[i as usize];
        Ok(TcpCounters {
            probes: rtt_recorded + get(counter::PROBES_SKIPPED),
            rtt_recorded,
            state_changes: get(counter::STATE_CHANGES),
            unmatched_handshakes: get(counter::UNMATCHED),
            start_map_full: get(counter::START_FULL),
            histogram_map_full: get(counter::HIST_FULL),
            peers_folded: get(counter::PEER_FOLDED),
            read_errors: get(counter::READ_ERROR),
            retransmits_seen: get(counter::RETRANSMITS),
            missed: self
                .program_stats()
                .iter()
                .map(|(_, s)| s.recursion_misses)
                .sum(),
        })
    }

    /// The kernel's statistics of each program (run time needs
    /// kernel.bpf_stats_enabled=1).
    pub fn program_stats(&self) -> Vec<(&'static str, ProgStats)> {
        let programs = match self.tracepoints {
            Tracepoints::Btf => BTF_PROGRAMS,
            _ => PROGRAMS.map(|(_, p)| (p, p)),
        };
        // By tracepoint, whichever kind of program is attached to it.
        programs
            .iter()
            .map(|&(tp, p)| {
                let stats = self
                    .ebpf
                    .program(p)
                    .and_then(|prog| prog.fd().ok())
                    .and_then(|fd| progstats::read(fd.as_fd()).ok())
                    .unwrap_or_default();
                (tp, stats)
            })
            .collect()
    }

    /// Removes from the kernel map every series whose (side, port) `drain`
    /// selects, and returns what they held. For a caller that keeps these
    /// sums itself (the daemon's ports without a label of their own), so the
    /// map holds only the series still wanted. A value recorded between the
    /// read and the removal of its series (a few microseconds) is lost, and
    /// the RTT values drained no longer count in `rtt_recorded`.
    pub fn drain(
        &mut self,
        mut drain: impl FnMut(PortSide, u16) -> bool,
    ) -> Result<Vec<TcpSeries>, TcpError> {
        let err = maps::MapAccessError::on("TCP_HISTS");
        let mut map: PerCpuHashMap<&mut MapData, TcpKey, Hist> =
            PerCpuHashMap::try_from(maps::find_mut(&mut self.ebpf, "TCP_HISTS")?).map_err(&err)?;
        let keys: Vec<TcpKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| drain(port_side(k.side), k.port))
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            // Gone in between: nothing to keep.
            let Ok(per_cpu) = map.get(&key, 0) else {
                continue;
            };
            // Not removed: it stays in the map and is read as before, so
            // it must not be kept here as well.
            if map.remove(&key).is_err() {
                continue;
            }
            let Some(kind) = TcpKind::from_raw(key.kind) else {
                continue;
            };
            out.push(TcpSeries {
                kind,
                side: port_side(key.side),
                port: key.port,
                peer: peer_addr(&key),
                hist: Log2Hist::from_per_cpu(LATENCY_UNIT_NS, per_cpu.iter()),
            });
        }
        Ok(out)
    }

    fn hists(&self) -> Result<PerCpuHashMap<&MapData, TcpKey, Hist>, TcpError> {
        let map = maps::find(&self.ebpf, "TCP_HISTS")?;
        Ok(PerCpuHashMap::try_from(map).map_err(maps::MapAccessError::on("TCP_HISTS"))?)
    }
}

impl Collector for TcpCollector {
    type Snapshot = TcpSnapshot;
    type Error = TcpError;

    fn name(&self) -> &'static str {
        "tcp"
    }

    fn read(&mut self) -> Result<TcpSnapshot, TcpError> {
        let mut series = Vec::new();
        let mut rtt_recorded = 0;
        for entry in self.hists()?.iter() {
            let (key, per_cpu) = entry.map_err(maps::MapAccessError::on("TCP_HISTS"))?;
            let Some(kind) = TcpKind::from_raw(key.kind) else {
                continue;
            };
            let hist = Log2Hist::from_per_cpu(LATENCY_UNIT_NS, per_cpu.iter());
            if kind == TcpKind::Rtt {
                rtt_recorded += hist.count;
            }
            if hist.is_empty() {
                continue;
            }
            series.push(TcpSeries {
                kind,
                side: port_side(key.side),
                port: key.port,
                peer: peer_addr(&key),
                hist,
            });
        }
        series.sort_by(|a, b| {
            (a.kind, a.side, a.port, a.peer).cmp(&(b.kind, b.side, b.port, b.peer))
        });
        Ok(TcpSnapshot {
            series,
            counters: self.counters(rtt_recorded)?,
            tracepoints: self.tracepoints,
        })
    }

    fn reset(&mut self) -> Result<(), TcpError> {
        // TCP_START is kept: handshakes under way are still timed.
        maps::clear_per_cpu_hash::<TcpKey, Hist>(&mut self.ebpf, "TCP_HISTS")?;
        maps::zero_counters(&mut self.ebpf, "TCP_COUNTERS", counter::LEN)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: &str = "name: tcp_probe
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:8;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:36;\tsize:28;\tsigned:0;
\tfield:__u16 sport;\toffset:64;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:66;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:68;\tsize:2;\tsigned:0;
\tfield:__u32 srtt;\toffset:100;\tsize:4;\tsigned:0;
";
    const STATE: &str = "name: inet_sock_set_state
format:
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;
";
    const RETRANS: &str = "name: tcp_retransmit_skb
format:
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;
";

    #[test]
    fn offsets_from_linux_6_18_formats() {
        let cfg = config_from(
            &Format::parse("tcp:tcp_probe", PROBE),
            &Format::parse("sock:inet_sock_set_state", STATE),
            &Format::parse("tcp:tcp_retransmit_skb", RETRANS),
        )
        .unwrap();
        // daddr (36) to the end of srtt (104), from 32.
        assert_eq!((cfg.probe_base, cfg.probe_len), (32, 72));
        assert_eq!(
            (
                cfg.probe_sport,
                cfg.probe_dport,
                cfg.probe_family,
                cfg.probe_daddr,
                cfg.probe_daddr_v6,
                cfg.probe_srtt
            ),
            (32, 34, 36, 8, 12, 68)
        );
        // skaddr (8) to the end of daddr_v6 (72).
        assert_eq!((cfg.state_base, cfg.state_len), (8, 64));
        assert_eq!(
            (cfg.state_skaddr, cfg.state_oldstate, cfg.state_newstate),
            (0, 8, 12)
        );
        assert_eq!(
            (cfg.state_protocol, cfg.state_daddr, cfg.state_daddr_v6),
            (22, 28, 48)
        );
        // sport (28) to the end of daddr_v6 (74), from 24.
        assert_eq!((cfg.retrans_base, cfg.retrans_len), (24, 50));
        assert_eq!(
            (cfg.retrans_sport, cfg.retrans_daddr, cfg.retrans_daddr_v6),
            (4, 14, 34)
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let e = config_from(
            &Format::parse("tcp:tcp_probe", &PROBE.replace("srtt", "srtt_us")),
            &Format::parse("sock:inet_sock_set_state", STATE),
            &Format::parse("tcp:tcp_retransmit_skb", RETRANS),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tcp:tcp_probe") && e.contains("`srtt`"), "{e}");
    }

    #[test]
    fn port_range() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1024 65535"), Some((1024, 65535)));
        assert_eq!(parse_port_range("9 1"), None);
        assert_eq!(parse_port_range(""), None);
    }

    #[test]
    fn peers_print_as_addresses() {
        let mut key = TcpKey {
            kind: kind::RTT,
            side: side::REMOTE,
            family: AF_INET,
            port: 443,
            _pad: [0; 2],
            peer: [0; 16],
        };
        key.peer[..4].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(peer_addr(&key).unwrap().to_string(), "10.1.2.3");
        key.family = AF_INET6;
        key.peer = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(peer_addr(&key).unwrap().to_string(), "::1");
        key.peer = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets();
        assert_eq!(peer_addr(&key).unwrap().to_string(), "192.0.2.1");
        key.family = 0;
        assert_eq!(peer_addr(&key), None);
    }
}
