//! TCP latency on stable tracepoints (no kprobes, no fentry):
//! - tcp:tcp_probe (each segment received on an established socket): the
//!   smoothed RTT, `srtt` in microseconds (the tracepoint shifts the socket's
//!   1/8-us value);
//! - sock:inet_sock_set_state: active connect latency (SYN_SENT to
//!   ESTABLISHED), failed connects (SYN_SENT to CLOSE) and passive handshakes
//!   (SYN_RECV, the first state of an accepted socket that is visible, to
//!   ESTABLISHED), keyed by the socket's address;
//! - tcp:tcp_retransmit_skb: retransmitted segments.
//!
//! Series are labelled by a port and the peer address, so their number is
//! bounded by the map size; when it is full a new peer folds into its port's
//! "other peers" series. Field offsets come from the tracefs `format` files
//! through `TCP_CONFIG`.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use perf_ebpf_common::{
    hist::{Hist, LATENCY_UNIT_NS, log2_slot},
    tcp::{
        AF_INET, AF_INET6, IPPROTO_TCP, TCP_HIST_ENTRIES, TCP_PORT_FILTER_ENTRIES,
        TCP_START_ENTRIES, TcpConfig, TcpKey, TcpStart, counter, kind, service_port, side, state,
    },
};

use crate::hist::{bump, record};

/// Set by user space before load.
#[unsafe(no_mangle)]
static TCP_CONFIG: TcpConfig = TcpConfig::zeroed();

/// Allocated on first use: memory follows the series actually seen.
#[map]
static TCP_HISTS: PerCpuHashMap<TcpKey, Hist> =
    PerCpuHashMap::with_max_entries(TCP_HIST_ENTRIES, BPF_F_NO_PREALLOC);

/// Sockets in a handshake: skaddr → when it began and which side.
#[map]
static TCP_START: HashMap<u64, TcpStart> = HashMap::with_max_entries(TCP_START_ENTRIES, 0);

#[map]
static TCP_PORT_FILTER: HashMap<u16, u8> = HashMap::with_max_entries(TCP_PORT_FILTER_ENTRIES, 0);

#[map]
static TCP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

#[tracepoint]
pub fn tcp_probe(ctx: TracePointContext) -> u32 {
    probe(&ctx);
    0
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    set_state(&ctx);
    0
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    retransmit(&ctx);
    0
}

#[inline(always)]
fn config() -> TcpConfig {
    // SAFETY: a read-only global that user space fills in before load.
    unsafe { core::ptr::read_volatile(&TCP_CONFIG) }
}

/// Reads a `T` at `offset` of the tracepoint record.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u16) -> Option<T> {
    // SAFETY: the offset is the field's, from the format file; the helper
    // checks the address and fails cleanly instead of faulting.
    match unsafe { ctx.read_at::<T>(offset as usize) } {
        Ok(v) => Some(v),
        Err(_) => {
            bump(&TCP_COUNTERS, counter::READ_ERROR);
            None
        }
    }
}

/// Which port labels the series, or `None` when the port filter rejects the
/// connection. `prefer` is the side that identifies the service when it is
/// known (the remote port of a connect, the local port of an accept).
#[inline(always)]
fn label(cfg: &TcpConfig, lport: u16, rport: u16, prefer: Option<u8>) -> Option<(u8, u16)> {
    if cfg.filter_ports != 0 {
        // Sequential branches, not two booleans combined: LLVM would OR the
        // two map-value pointers, which the verifier refuses.
        let local = TCP_PORT_FILTER.get_ptr(&lport).is_some();
        if local && prefer == Some(side::LOCAL) {
            return Some((side::LOCAL, lport));
        }
        if TCP_PORT_FILTER.get_ptr(&rport).is_some() {
            return Some((side::REMOTE, rport));
        }
        return if local {
            Some((side::LOCAL, lport))
        } else {
            None
        };
    }
    Some(match prefer {
        Some(side::LOCAL) => (side::LOCAL, lport),
        Some(_) => (side::REMOTE, rport),
        None => service_port(lport, rport, cfg.ephemeral_lo, cfg.ephemeral_hi),
    })
}

/// Records `value` (ns) for `key`; when the map is full, in the port's
/// "other peers" series instead.
#[inline(always)]
fn record_tcp(key: &mut TcpKey, value: u64) {
    let slot = log2_slot(value / LATENCY_UNIT_NS);
    if record(&TCP_HISTS, key, value, slot) {
        return;
    }
    key.family = 0;
    key.peer = [0; 16];
    if record(&TCP_HISTS, key, value, slot) {
        bump(&TCP_COUNTERS, counter::PEER_FOLDED);
    } else {
        bump(&TCP_COUNTERS, counter::HIST_FULL);
    }
}

/// The peer address from separate IPv4 (`u8[4]`) and IPv6 (`u8[16]`) fields.
#[inline(always)]
fn peer(ctx: &TracePointContext, family: u16, v4: u16, v6: u16) -> Option<[u8; 16]> {
    let mut peer = [0u8; 16];
    if family == AF_INET {
        let a: [u8; 4] = field(ctx, v4)?;
        peer[..4].copy_from_slice(&a);
    } else {
        peer = field(ctx, v6)?;
    }
    Some(peer)
}

#[inline(always)]
fn probe(ctx: &TracePointContext) -> Option<()> {
    bump(&TCP_COUNTERS, counter::PROBES);
    let cfg = config();
    let lport: u16 = field(ctx, cfg.probe_sport)?;
    let rport: u16 = field(ctx, cfg.probe_dport)?;
    let (side, port) = label(&cfg, lport, rport, None)?;
    let srtt: u32 = field(ctx, cfg.probe_srtt)?;
    if srtt == 0 {
        // No RTT sample yet on this socket.
        return None;
    }
    let family: u16 = field(ctx, cfg.probe_family)?;
    // daddr is a struct sockaddr_in (address at +4) or sockaddr_in6 (at +8).
    let mut peer = [0u8; 16];
    if family == AF_INET {
        let a: [u8; 4] = field(ctx, cfg.probe_daddr + 4)?;
        peer[..4].copy_from_slice(&a);
    } else if family == AF_INET6 {
        peer = field(ctx, cfg.probe_daddr + 8)?;
    } else {
        return None;
    }
    let mut key = TcpKey {
        kind: kind::RTT,
        side,
        family,
        port,
        _pad: [0; 2],
        peer,
    };
    // The tracepoint stores tp->srtt_us >> 3: whole microseconds (the
    // socket field itself is in 1/8 us).
    record_tcp(&mut key, srtt as u64 * 1_000);
    bump(&TCP_COUNTERS, counter::RTT_RECORDED);
    Some(())
}

#[inline(always)]
fn set_state(ctx: &TracePointContext) -> Option<()> {
    // SAFETY: no preconditions. First, so the reads below are not timed.
    let now = unsafe { bpf_ktime_get_ns() };
    let cfg = config();
    let protocol: u16 = field(ctx, cfg.state_protocol)?;
    if protocol != IPPROTO_TCP {
        return None;
    }
    bump(&TCP_COUNTERS, counter::STATE_CHANGES);
    let old: i32 = field(ctx, cfg.state_oldstate)?;
    let new: i32 = field(ctx, cfg.state_newstate)?;
    let sk: u64 = field(ctx, cfg.state_skaddr)?;
    if new == state::SYN_SENT || new == state::SYN_RECV {
        if old == state::SYN_SENT {
            // Simultaneous open: still the active handshake begun earlier.
            return None;
        }
        // A handshake begins (an accepted socket is first seen in SYN_RECV).
        // The port filter is applied at the end, when the kind is known.
        let start = TcpStart {
            ts_ns: now,
            active: u8::from(new == state::SYN_SENT),
            _pad: [0; 7],
        };
        if TCP_START.insert(sk, start, BPF_NOEXIST as u64).is_err()
            && TCP_START.get_ptr(sk).is_none()
        {
            bump(&TCP_COUNTERS, counter::START_FULL);
        }
        return Some(());
    }
    if old != state::SYN_SENT && old != state::SYN_RECV {
        return None;
    }
    let Some(start) = TCP_START.get_ptr(sk) else {
        if new == state::ESTABLISHED {
            // Began before tracing.
            bump(&TCP_COUNTERS, counter::UNMATCHED);
        }
        return None;
    };
    // SAFETY: a valid map value; copied before the entry is removed.
    let start = unsafe { *start };
    let _ = TCP_START.remove(sk);
    let kind = match (new, start.active) {
        (state::ESTABLISHED, 1) => kind::CONNECT,
        (state::ESTABLISHED, _) => kind::ACCEPT,
        (state::CLOSE, 1) => kind::CONNECT_FAILED,
        _ => return None,
    };
    let lport: u16 = field(ctx, cfg.state_sport)?;
    let rport: u16 = field(ctx, cfg.state_dport)?;
    let prefer = if kind == kind::ACCEPT {
        side::LOCAL
    } else {
        side::REMOTE
    };
    let (side, port) = label(&cfg, lport, rport, Some(prefer))?;
    let family: u16 = field(ctx, cfg.state_family)?;
    let mut key = TcpKey {
        kind,
        side,
        family,
        port,
        _pad: [0; 2],
        peer: peer(ctx, family, cfg.state_daddr, cfg.state_daddr_v6)?,
    };
    record_tcp(&mut key, now.saturating_sub(start.ts_ns));
    Some(())
}

#[inline(always)]
fn retransmit(ctx: &TracePointContext) -> Option<()> {
    bump(&TCP_COUNTERS, counter::RETRANSMITS);
    let cfg = config();
    let lport: u16 = field(ctx, cfg.retrans_sport)?;
    let rport: u16 = field(ctx, cfg.retrans_dport)?;
    let (side, port) = label(&cfg, lport, rport, None)?;
    let family: u16 = field(ctx, cfg.retrans_family)?;
    let mut key = TcpKey {
        kind: kind::RETRANSMIT,
        side,
        family,
        port,
        _pad: [0; 2],
        peer: peer(ctx, family, cfg.retrans_daddr, cfg.retrans_daddr_v6)?,
    };
    // Only the count matters; 0 keeps the sum meaningless but harmless.
    record_tcp(&mut key, 0);
    Some(())
}
