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
//! "other peers" series (the daemon, which never exports peers, has every
//! peer folded from the start: `TCP_CONFIG.fold_peers`). Field offsets come from the tracefs `format` files
//! through `TCP_CONFIG`; each program copies the span of the record that
//! holds its fields in one helper call.
//!
//! These are the programs for kernels without BTF; where the kernel has BTF,
//! user space loads the cheaper ones in `tcp_btf.rs` instead, which share
//! the maps and everything below but the reading of the record.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use perf_ebpf_common::{
    hist::{Hist, latency_slot, log2_slot},
    tcp::{
        AF_INET, AF_INET6, IPPROTO_TCP, TCP_HIST_ENTRIES, TCP_PORT_FILTER_ENTRIES, TCP_SPAN_MAX,
        TCP_START_ENTRIES, TcpConfig, TcpKey, TcpStart, counter, kind, service_port, side, state,
    },
};

use crate::{
    hist::{bump, record},
    record::{Record, SpanBuf},
};

/// Set by user space before load.
#[unsafe(no_mangle)]
pub(crate) static TCP_CONFIG: TcpConfig = TcpConfig::zeroed();

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
pub(crate) static TCP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

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

/// One field of `TCP_CONFIG`. Volatile, so that the compiler does not fold
/// in the zeroes it was built with; one field at a time, because loading the
/// whole struct cost some 40 instructions per event.
macro_rules! tcp_conf {
    ($($field:ident).+) => {
        // SAFETY: a read-only global that user space fills in before load.
        unsafe { core::ptr::read_volatile(&raw const $crate::tcp::TCP_CONFIG.$($field).+) }
    };
}
pub(crate) use tcp_conf;
use tcp_conf as conf;

/// Room for one copy of the fields a program reads.
type Buf = SpanBuf<{ TCP_SPAN_MAX as usize / 8 }>;

/// Copies the span into `buf`; counts a failure.
#[inline(always)]
fn read<'a>(buf: &'a mut Buf, ctx: &TracePointContext, base: u16, len: u16) -> Option<Record<'a>> {
    let rec = buf.read(ctx, base, len);
    if rec.is_none() {
        bump(&TCP_COUNTERS, counter::READ_ERROR);
    }
    rec
}

/// Which port labels the series, or `None` when the port filter rejects the
/// connection. `prefer` is the side that identifies the service when it is
/// known (the remote port of a connect, the local port of an accept).
#[inline(always)]
fn label(lport: u16, rport: u16, prefer: Option<u8>) -> Option<(u8, u16)> {
    if conf!(filter_ports) != 0 {
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
        None => service_port(lport, rport, conf!(ephemeral_lo), conf!(ephemeral_hi)),
    })
}

/// Records `value` (ns, in log2 `slot` of microseconds) for `key`; when the
/// map is full, in the port's "other peers" series instead. Returns false
/// when not recorded at all. With `fold_peers` set (the daemon), every value
/// goes to the "other peers" series at once: the map then holds one series
/// per kind and port, however many peers there are.
#[inline(always)]
fn record_tcp(key: &mut TcpKey, value: u64, slot: usize) -> bool {
    let fold = conf!(fold_peers) != 0;
    if fold {
        key.family = 0;
        key.peer = [0; 16];
    }
    if record(&TCP_HISTS, key, value, slot) {
        return true;
    }
    if fold {
        bump(&TCP_COUNTERS, counter::HIST_FULL);
        return false;
    }
    key.family = 0;
    key.peer = [0; 16];
    if record(&TCP_HISTS, key, value, slot) {
        bump(&TCP_COUNTERS, counter::PEER_FOLDED);
        true
    } else {
        bump(&TCP_COUNTERS, counter::HIST_FULL);
        false
    }
}

/// The peer address from the copy: an IPv4 (`u8[4]`) or IPv6 (`u8[16]`) field.
#[inline(always)]
fn peer(rec: &Record, family: u16, v4: u16, v6: u16) -> Option<[u8; 16]> {
    match family {
        AF_INET => {
            let mut peer = [0u8; 16];
            peer[..4].copy_from_slice(&rec.get::<[u8; 4]>(v4));
            Some(peer)
        }
        AF_INET6 => Some(rec.get(v6)),
        _ => None,
    }
}

#[inline(always)]
fn probe(ctx: &TracePointContext) -> Option<()> {
    rtt_seen(probe_recorded(ctx))
}

/// Counts a tcp_probe event that was not recorded. Only those are counted:
/// user space adds the RTT histograms' counts, which saves a counter bump
/// on the common path.
#[inline(always)]
pub(crate) fn rtt_seen(recorded: Option<()>) -> Option<()> {
    if recorded.is_none() {
        bump(&TCP_COUNTERS, counter::PROBES_SKIPPED);
    }
    Some(())
}

/// The ends of a connection, as every program labels it.
pub(crate) struct Conn {
    /// Local port, host order.
    pub sport: u16,
    /// Remote port, host order.
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Remote address (IPv4 in the first 4 bytes).
    pub peer: [u8; 16],
}

#[inline(always)]
fn probe_recorded(ctx: &TracePointContext) -> Option<()> {
    let mut buf = Buf::new();
    let rec = read(&mut buf, ctx, conf!(probe_base), conf!(probe_len))?;
    // The tracepoint stores tp->srtt_us >> 3: whole microseconds (the
    // socket field itself is in 1/8 us), so the slot needs no division.
    let srtt: u32 = rec.get(conf!(probe_srtt));
    let family: u16 = rec.get(conf!(probe_family));
    let conn = Conn {
        sport: rec.get(conf!(probe_sport)),
        dport: rec.get(conf!(probe_dport)),
        family,
        peer: peer(&rec, family, conf!(probe_daddr), conf!(probe_daddr_v6))?,
    };
    record_rtt(&conn, srtt)
}

/// Records smoothed RTT `srtt` (microseconds) of `conn`.
#[inline(always)]
pub(crate) fn record_rtt(conn: &Conn, srtt: u32) -> Option<()> {
    let (side, port) = label(conn.sport, conn.dport, None)?;
    if srtt == 0 {
        // No RTT sample yet on this socket.
        return None;
    }
    let mut key = TcpKey {
        kind: kind::RTT,
        side,
        family: conn.family,
        port,
        _pad: [0; 2],
        peer: conn.peer,
    };
    record_tcp(&mut key, srtt as u64 * 1_000, log2_slot(srtt as u64)).then_some(())
}

#[inline(always)]
fn set_state(ctx: &TracePointContext) -> Option<()> {
    let mut buf = Buf::new();
    let rec = read(&mut buf, ctx, conf!(state_base), conf!(state_len))?;
    if rec.get::<u16>(conf!(state_protocol)) != IPPROTO_TCP {
        return None;
    }
    let conn = || {
        let family: u16 = rec.get(conf!(state_family));
        Some(Conn {
            sport: rec.get(conf!(state_sport)),
            dport: rec.get(conf!(state_dport)),
            family,
            peer: peer(&rec, family, conf!(state_daddr), conf!(state_daddr_v6))?,
        })
    };
    state_changed(
        rec.get(conf!(state_skaddr)),
        rec.get(conf!(state_oldstate)),
        rec.get(conf!(state_newstate)),
        conn,
    )
}

/// A TCP socket at `sk` went from state `old` to `new`: a handshake begins
/// or ends. `conn` is read only when one ends.
#[inline(always)]
pub(crate) fn state_changed(
    sk: u64,
    old: i32,
    new: i32,
    conn: impl FnOnce() -> Option<Conn>,
) -> Option<()> {
    bump(&TCP_COUNTERS, counter::STATE_CHANGES);
    if new == state::SYN_SENT || new == state::SYN_RECV {
        if old == state::SYN_SENT {
            // Simultaneous open: still the active handshake begun earlier.
            return None;
        }
        // A handshake begins (an accepted socket is first seen in SYN_RECV).
        // The port filter is applied at the end, when the kind is known.
        let start = TcpStart {
            // SAFETY: no preconditions. Only here and at the end: most state
            // changes are neither.
            ts_ns: unsafe { bpf_ktime_get_ns() },
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
    // SAFETY: no preconditions. After the copy and the lookup, which add
    // well under a microsecond to a handshake's time.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a valid map value; copied before the entry is removed.
    let start = unsafe { *start };
    let _ = TCP_START.remove(sk);
    let kind = match (new, start.active) {
        (state::ESTABLISHED, 1) => kind::CONNECT,
        (state::ESTABLISHED, _) => kind::ACCEPT,
        (state::CLOSE, 1) => kind::CONNECT_FAILED,
        _ => return None,
    };
    let prefer = if kind == kind::ACCEPT {
        side::LOCAL
    } else {
        side::REMOTE
    };
    let conn = conn()?;
    let (side, port) = label(conn.sport, conn.dport, Some(prefer))?;
    let mut key = TcpKey {
        kind,
        side,
        family: conn.family,
        port,
        _pad: [0; 2],
        peer: conn.peer,
    };
    let latency = now.saturating_sub(start.ts_ns);
    record_tcp(&mut key, latency, latency_slot(latency));
    Some(())
}

#[inline(always)]
fn retransmit(ctx: &TracePointContext) -> Option<()> {
    bump(&TCP_COUNTERS, counter::RETRANSMITS);
    let mut buf = Buf::new();
    let rec = read(&mut buf, ctx, conf!(retrans_base), conf!(retrans_len))?;
    let family: u16 = rec.get(conf!(retrans_family));
    record_retransmit(&Conn {
        sport: rec.get(conf!(retrans_sport)),
        dport: rec.get(conf!(retrans_dport)),
        family,
        peer: peer(&rec, family, conf!(retrans_daddr), conf!(retrans_daddr_v6))?,
    })
}

/// Counts a retransmitted segment of `conn` (the caller has counted it seen).
#[inline(always)]
pub(crate) fn record_retransmit(conn: &Conn) -> Option<()> {
    let (side, port) = label(conn.sport, conn.dport, None)?;
    let mut key = TcpKey {
        kind: kind::RETRANSMIT,
        side,
        family: conn.family,
        port,
        _pad: [0; 2],
        peer: conn.peer,
    };
    // Only the count matters; 0 keeps the sum meaningless but harmless.
    record_tcp(&mut key, 0, 0);
    Some(())
}
