//! TCP latency on kernels with BTF: the same three tracepoints as `tcp.rs`
//! (tcp:tcp_probe, sock:inet_sock_set_state, tcp:tcp_retransmit_skb),
//! attached as BTF tracepoints (`tp_btf`), which hand the program the
//! `struct sock` itself.
//!
//! Why a second set: for a classic tracepoint the kernel fills a record for
//! every event (tcp_probe's holds both ends' socket addresses, the window,
//! cwnd, ssthresh, sequence numbers... for each segment received) and the
//! program copies it out again; here the program loads the few fields it
//! needs from the socket, at offsets user space takes from the kernel's BTF
//! (`TCP_CONFIG.sk`), which the verifier checks against the same BTF. The
//! labels, histograms and handshake matching are `tcp.rs`'s.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated::bpf_skc_to_tcp_sock},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use perf_ebpf_common::tcp::{AF_INET, AF_INET6, IPPROTO_TCP, TcpSockOffsets, counter};

use crate::{
    hist::bump,
    kmem::load,
    tcp::{Conn, TCP_COUNTERS, record_retransmit, record_rtt, rtt_seen, state_changed, tcp_conf},
};

#[btf_tracepoint(function = "tcp_probe")]
pub fn tcp_probe_btf(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    rtt_seen(probe(sk));
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> i32 {
    // inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)
    let sk: *const u8 = ctx.arg(0);
    let (old, new): (i32, i32) = (ctx.arg(1), ctx.arg(2));
    set_state(sk, old, new);
    0
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_btf(ctx: BtfTracePointContext) -> i32 {
    bump(&TCP_COUNTERS, counter::RETRANSMITS);
    let sk: *const u8 = ctx.arg(0);
    if let Some(conn) = conn(sk) {
        record_retransmit(&conn);
    }
    0
}

/// The ends of the connection of socket `sk`; `None` for a family other
/// than IPv4 and IPv6.
#[inline(always)]
fn conn(sk: *const u8) -> Option<Conn> {
    let o: TcpSockOffsets = tcp_conf!(sk);
    // SAFETY: `sk` is the tracepoint's `struct sock *`, and every offset
    // comes from the kernel's BTF with the member's size (collectors/tcp.rs).
    let (family, sport, dport) = unsafe {
        (
            load::<u16>(sk, o.family),
            load::<u16>(sk, o.num),
            u16::from_be(load::<u16>(sk, o.dport)),
        )
    };
    let peer = match family {
        AF_INET => {
            let mut peer = [0u8; 16];
            // SAFETY: as above; `skc_daddr` is a 4-byte member.
            let v4: u32 = unsafe { load(sk, o.daddr) };
            peer[..4].copy_from_slice(&v4.to_ne_bytes());
            peer
        }
        // The verifier lets a program load a scalar member of the socket,
        // not 16 bytes of a union of arrays: one copy for IPv6.
        // SAFETY: a kernel address; the helper reports a fault, no more.
        AF_INET6 => {
            unsafe { bpf_probe_read_kernel(sk.add(o.v6_daddr as usize).cast::<[u8; 16]>()) }.ok()?
        }
        _ => return None,
    };
    Some(Conn {
        sport,
        dport,
        family,
        peer,
    })
}

#[inline(always)]
fn probe(sk: *const u8) -> Option<()> {
    let conn = conn(sk)?;
    // `srtt_us` is in `struct tcp_sock`, past the `struct sock` the verifier
    // knows `sk` by: the helper hands back the same socket as a tcp_sock
    // (NULL if it is not one), which is cheaper than a probe read.
    // SAFETY: `sk` is a socket the verifier knows by its BTF type.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut _) } as *const u8;
    if tp.is_null() {
        return None;
    }
    let off = tcp_conf!(sk.srtt_us);
    // SAFETY: `tp` is the helper's tcp_sock, the offset from its BTF.
    let srtt8: u32 = unsafe { load(tp, off) };
    // As the classic tracepoint reports it: whole microseconds.
    record_rtt(&conn, srtt8 >> 3)
}

#[inline(always)]
fn set_state(sk: *const u8, old: i32, new: i32) -> Option<()> {
    let o: TcpSockOffsets = tcp_conf!(sk);
    // SAFETY: as in `conn`.
    let protocol: u16 = unsafe { load(sk, o.protocol) };
    if protocol != IPPROTO_TCP {
        return None;
    }
    state_changed(sk as u64, old, new, || conn(sk))
}
