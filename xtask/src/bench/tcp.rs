//! Case 3, TCP: loopback request/response (64-byte messages, one exchange at
//! a time, connections opened one after the other); untraced, ours
//! (`latency --tcp`: BTF tracepoints where the kernel has BTF), ours with the
//! classic tracepoints that kernels without BTF use, and a bpftrace script on
//! the same tracepoints.

use std::process::Command;

use anyhow::Result;

use super::{
    CaseReport, Ctx,
    compare::{self, Tracer, Variant, Workload},
};
use crate::cmd;

/// What perf-user's TCP collector does, in bpftrace: smoothed RTT from
/// tcp:tcp_probe (its `srtt` field is already in microseconds), connect latency from sock:inet_sock_set_state (SYN_SENT to
/// ESTABLISHED), retransmits from tcp:tcp_retransmit_skb.
const BPFTRACE_TCP: &str = r#"
tracepoint:tcp:tcp_probe { @srtt_us = hist(args->srtt); }
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  if (args->newstate == 2) { @start[args->skaddr] = nsecs; }
  if (args->oldstate == 2 && args->newstate == 1 && @start[args->skaddr]) {
    @connect_us = hist((nsecs - @start[args->skaddr]) / 1000);
    delete(@start[args->skaddr]);
  }
}
tracepoint:tcp:tcp_retransmit_skb { @retransmits = count(); }
"#;

pub fn run(ctx: &Ctx) -> Result<CaseReport> {
    let mut report = CaseReport::new("tcp", super::case_title("tcp"));
    let (conns, trips): (u64, u64) = if ctx.quick { (100, 200) } else { (200, 500) };
    report.work = format!(
        "`tcp_rr {conns} {trips}`: {conns} loopback connections one after the other, each \
         {trips} exchanges of a 64-byte request and a 64-byte response (TCP_NODELAY), \
         {} round trips in all. Time: wall time of the exchanges.",
        conns * trips
    );
    let bin = ctx.workload("tcp_rr");
    let workload = Workload {
        command: Box::new(move || {
            let mut c = Command::new(&bin);
            c.args([conns.to_string(), trips.to_string()]);
            c
        }),
        gated: false,
        hold_at_end: false,
        parse: compare::parse_elapsed_ns,
        ops: (conns * trips) as f64,
        op_name: "round trip",
    };
    let ours = ctx.latency_tracer(&["--tcp"]);
    let ours_classic = ctx.latency_tracer(&["--tcp", "--tracepoints", "classic"]);
    let bpftrace = cmd::find_in_path("bpftrace")
        .ok_or_else(|| "bpftrace not found (apt-get install bpftrace)".to_string())
        .map(|p| Tracer::bpftrace(p, &[], BPFTRACE_TCP));
    let variants = vec![
        Variant::untraced(),
        Variant::traced("perf-user latency --tcp", ours)
            .with_note("BTF tracepoints where the kernel has BTF"),
        Variant::traced("perf-user, classic tracepoints", ours_classic)
            .with_note("--tracepoints classic: what kernels without BTF get"),
        Variant::traced("bpftrace (same tracepoints)", bpftrace)
            .with_note("RTT and connect-latency histograms and a retransmit count"),
    ];
    report.variants = compare::run(ctx, "tcp", &workload, variants)?;
    report.op_name = workload.op_name.into();
    report.notes.push(format!(
        "the bpftrace script: {}",
        BPFTRACE_TCP
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    ));
    Ok(report)
}
