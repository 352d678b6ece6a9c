//! TCP latency: keys, values and configuration shared with
//! `perf-ebpf/src/tcp.rs`.

/// Histogram keys: kinds x ports x peers (allocated on first use). When full,
/// a new peer is folded into its port's "other peers" key (peer all zero).
pub const TCP_HIST_ENTRIES: u32 = 4_096;
/// Sockets between their first handshake state and the end of the handshake.
pub const TCP_START_ENTRIES: u32 = 16_384;
/// Most ports `latency --port` can select at once.
pub const TCP_PORT_FILTER_ENTRIES: u32 = 64;

/// Address families as the tracepoints report them.
pub const AF_INET: u16 = 2;
/// IPv6.
pub const AF_INET6: u16 = 10;
/// `protocol` of inet_sock_set_state for TCP (it also fires for SCTP and MPTCP).
pub const IPPROTO_TCP: u16 = 6;

/// TCP states (include/net/tcp_states.h).
pub mod state {
    /// TCP_ESTABLISHED
    pub const ESTABLISHED: i32 = 1;
    /// TCP_SYN_SENT
    pub const SYN_SENT: i32 = 2;
    /// TCP_SYN_RECV
    pub const SYN_RECV: i32 = 3;
    /// TCP_CLOSE
    pub const CLOSE: i32 = 7;
}

/// What a TCP histogram measures.
pub mod kind {
    /// Smoothed RTT at each incoming segment (tcp:tcp_probe); ns.
    pub const RTT: u8 = 0;
    /// Active open: SYN_SENT to ESTABLISHED; ns.
    pub const CONNECT: u8 = 1;
    /// Active open that failed: SYN_SENT to CLOSE; time to failure in ns.
    pub const CONNECT_FAILED: u8 = 2;
    /// Passive open: first state seen (SYN_RECV) to ESTABLISHED; ns.
    pub const ACCEPT: u8 = 3;
    /// Retransmitted segments (tcp:tcp_retransmit_skb); only the count is used.
    pub const RETRANSMIT: u8 = 4;
    /// Number of kinds.
    pub const LEN: u8 = 5;
}

/// Which end's port labels a series.
pub mod side {
    /// The local port (e.g. a server's listening port).
    pub const LOCAL: u8 = 0;
    /// The remote port (e.g. the service a client connects to).
    pub const REMOTE: u8 = 1;
}

/// Key of `TCP_HISTS`: one series per measurement, labelled port and peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpKey {
    /// One of `kind::*`.
    pub kind: u8,
    /// One of `side::*`: which end `port` belongs to.
    pub side: u8,
    /// `AF_INET`, `AF_INET6`, or 0 for "other peers".
    pub family: u16,
    /// The labelling port, host byte order.
    pub port: u16,
    /// Explicit padding; always zero.
    pub _pad: [u8; 2],
    /// Remote address: 4 bytes for IPv4 (rest zero), 16 for IPv6; all zero
    /// for "other peers".
    pub peer: [u8; 16],
}

/// Value of `TCP_START`, keyed by the socket's address (skaddr).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpStart {
    /// bpf_ktime_get_ns() at the first handshake state seen.
    pub ts_ns: u64,
    /// 1: active open (SYN_SENT); 0: passive (SYN_RECV).
    pub active: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 7],
}

/// Longest span of a tracepoint record the programs copy: one helper call
/// per event instead of one per field (the copies dominated the run time).
pub const TCP_SPAN_MAX: u16 = 96;

/// Where the fields lie in the tracepoint records (from tracefs `format`
/// files), the local ephemeral port range and filters; a read-only global set
/// before load. Each program copies `*_len` bytes from record offset
/// `*_base` (a multiple of 8, so fields keep their natural alignment in the
/// copy); the other offsets are relative to that base.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// tcp_probe: record offset of the copied span.
    pub probe_base: u16,
    /// tcp_probe: bytes copied, at most `TCP_SPAN_MAX`.
    pub probe_len: u16,
    /// tcp_probe: `sport` (u16, host order).
    pub probe_sport: u16,
    /// tcp_probe: `dport`.
    pub probe_dport: u16,
    /// tcp_probe: `family` (u16).
    pub probe_family: u16,
    /// tcp_probe: the IPv4 address in `daddr` (a struct sockaddr_in, address at +4).
    pub probe_daddr: u16,
    /// tcp_probe: the IPv6 address in `daddr` (a struct sockaddr_in6, address at +8).
    pub probe_daddr_v6: u16,
    /// tcp_probe: `srtt` (u32, microseconds: the tracepoint stores `srtt_us >> 3`).
    pub probe_srtt: u16,
    /// inet_sock_set_state: record offset of the copied span.
    pub state_base: u16,
    /// inet_sock_set_state: bytes copied.
    pub state_len: u16,
    /// inet_sock_set_state: `skaddr` (pointer).
    pub state_skaddr: u16,
    /// inet_sock_set_state: `oldstate` (int).
    pub state_oldstate: u16,
    /// inet_sock_set_state: `newstate` (int).
    pub state_newstate: u16,
    /// inet_sock_set_state: `sport`.
    pub state_sport: u16,
    /// inet_sock_set_state: `dport`.
    pub state_dport: u16,
    /// inet_sock_set_state: `family`.
    pub state_family: u16,
    /// inet_sock_set_state: `protocol` (u16).
    pub state_protocol: u16,
    /// inet_sock_set_state: `daddr` (u8[4]).
    pub state_daddr: u16,
    /// inet_sock_set_state: `daddr_v6` (u8[16]).
    pub state_daddr_v6: u16,
    /// tcp_retransmit_skb: record offset of the copied span.
    pub retrans_base: u16,
    /// tcp_retransmit_skb: bytes copied.
    pub retrans_len: u16,
    /// tcp_retransmit_skb: `sport`.
    pub retrans_sport: u16,
    /// tcp_retransmit_skb: `dport`.
    pub retrans_dport: u16,
    /// tcp_retransmit_skb: `family`.
    pub retrans_family: u16,
    /// tcp_retransmit_skb: `daddr` (u8[4]).
    pub retrans_daddr: u16,
    /// tcp_retransmit_skb: `daddr_v6` (u8[16]).
    pub retrans_daddr_v6: u16,
    /// Lowest local ephemeral port (net.ipv4.ip_local_port_range).
    pub ephemeral_lo: u16,
    /// Highest local ephemeral port.
    pub ephemeral_hi: u16,
    /// 1: trace only connections with a local or remote port in `TCP_PORT_FILTER`.
    pub filter_ports: u8,
    /// 1: key every series without its peer (family and address zero, the
    /// "other peers" form), so that `TCP_HISTS` holds kinds x ports and no
    /// more. The daemon, which never exports peers, sets it; `latency --tcp`
    /// does not (its table is per peer).
    pub fold_peers: u8,
    /// Struct offsets for the BTF tracepoint programs (unused by the others).
    pub sk: TcpSockOffsets,
}

/// Where the BTF tracepoint programs (`tp_btf`, kernels with BTF) find what
/// they read of a socket, from the kernel's BTF: offsets in `struct sock`
/// (through its `__sk_common`), and of `srtt_us` in `struct tcp_sock`, which
/// begins with the `struct sock`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSockOffsets {
    /// `skc_family` (u16).
    pub family: u16,
    /// `skc_num`: the local port, host order (u16).
    pub num: u16,
    /// `skc_dport`: the remote port, network order (u16).
    pub dport: u16,
    /// `skc_daddr`: the remote IPv4 address (u32).
    pub daddr: u16,
    /// `skc_v6_daddr`: the remote IPv6 address (16 bytes).
    pub v6_daddr: u16,
    /// `sk_protocol` (u16).
    pub protocol: u16,
    /// `srtt_us` of `struct tcp_sock` (u32, 1/8 microseconds).
    pub srtt_us: u16,
    /// Explicit padding; always zero.
    pub _pad: u16,
}

impl TcpSockOffsets {
    /// All zero.
    pub const fn zeroed() -> Self {
        Self {
            family: 0,
            num: 0,
            dport: 0,
            daddr: 0,
            v6_daddr: 0,
            protocol: 0,
            srtt_us: 0,
            _pad: 0,
        }
    }
}

impl TcpConfig {
    /// All zero; the kernel side's initial value.
    pub const fn zeroed() -> Self {
        Self {
            probe_base: 0,
            probe_len: 0,
            probe_sport: 0,
            probe_dport: 0,
            probe_family: 0,
            probe_daddr: 0,
            probe_daddr_v6: 0,
            probe_srtt: 0,
            state_base: 0,
            state_len: 0,
            state_skaddr: 0,
            state_oldstate: 0,
            state_newstate: 0,
            state_sport: 0,
            state_dport: 0,
            state_family: 0,
            state_protocol: 0,
            state_daddr: 0,
            state_daddr_v6: 0,
            retrans_base: 0,
            retrans_len: 0,
            retrans_sport: 0,
            retrans_dport: 0,
            retrans_family: 0,
            retrans_daddr: 0,
            retrans_daddr_v6: 0,
            ephemeral_lo: 0,
            ephemeral_hi: 0,
            filter_ports: 0,
            fold_peers: 0,
            sk: TcpSockOffsets::zeroed(),
        }
    }
}

/// Which port labels an RTT or retransmit series when no filter decides: the
/// one outside the local ephemeral range (the service port), else the lower.
/// Returns `(side, port)`.
#[inline(always)]
pub const fn service_port(lport: u16, rport: u16, eph_lo: u16, eph_hi: u16) -> (u8, u16) {
    let l_eph = lport >= eph_lo && lport <= eph_hi;
    let r_eph = rport >= eph_lo && rport <= eph_hi;
    if l_eph && !r_eph {
        (side::REMOTE, rport)
    } else if r_eph && !l_eph {
        (side::LOCAL, lport)
    } else if rport <= lport {
        (side::REMOTE, rport)
    } else {
        (side::LOCAL, lport)
    }
}

/// Indices into the per-CPU `TCP_COUNTERS` array.
pub mod counter {
    /// tcp_probe events not recorded (filtered out, no RTT yet, unread, map
    /// full): user space adds the RTT histograms' counts to get all events
    /// seen, so that the common case, a recorded RTT, bumps no counter.
    pub const PROBES_SKIPPED: u32 = 0;
    /// TCP state changes seen (before filtering).
    pub const STATE_CHANGES: u32 = 1;
    /// Handshakes that ended with no start seen (began before tracing).
    pub const UNMATCHED: u32 = 2;
    /// Handshakes not timed because the start map was full.
    pub const START_FULL: u32 = 3;
    /// Values not recorded because the histogram map was full even for "other peers".
    pub const HIST_FULL: u32 = 4;
    /// Values whose peer was folded into "other peers" because the map was full.
    pub const PEER_FOLDED: u32 = 5;
    /// Tracepoint fields that could not be read.
    pub const READ_ERROR: u32 = 6;
    /// Retransmits seen (before filtering).
    pub const RETRANSMITS: u32 = 7;
    /// Number of counters.
    pub const LEN: u32 = 8;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all four are #[repr(C)], Copy, made of integers and byte arrays
    // with explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::TcpKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TcpStart {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TcpConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TcpSockOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn layout() {
        assert_eq!(size_of::<TcpKey>(), 8 + 16);
        assert_eq!(align_of::<TcpKey>(), 2);
        assert_eq!(size_of::<TcpStart>(), 16);
        assert_eq!(size_of::<TcpSockOffsets>(), 8 * 2);
        assert_eq!(size_of::<TcpConfig>(), 28 * 2 + 1 + 1 + 16);
        assert_eq!(align_of::<TcpConfig>(), 2);
        // The two flags share one u16 slot, so no padding hides between
        // them and the socket offsets.
        assert_eq!(core::mem::offset_of!(TcpConfig, filter_ports), 28 * 2);
        assert_eq!(core::mem::offset_of!(TcpConfig, fold_peers), 28 * 2 + 1);
        assert_eq!(core::mem::offset_of!(TcpConfig, sk), 28 * 2 + 2);
    }

    #[test]
    fn service_port_prefers_the_non_ephemeral_end() {
        let (lo, hi) = (32768, 60999);
        assert_eq!(service_port(40000, 443, lo, hi), (side::REMOTE, 443));
        assert_eq!(service_port(8080, 50000, lo, hi), (side::LOCAL, 8080));
        // Both or neither ephemeral: the lower port.
        assert_eq!(service_port(22, 8080, lo, hi), (side::LOCAL, 22));
        assert_eq!(service_port(40001, 40000, lo, hi), (side::REMOTE, 40000));
    }
}
