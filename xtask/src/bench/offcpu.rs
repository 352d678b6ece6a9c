//! Case 7, off-CPU time: a context-switch-heavy workload (two processes
//! passing a byte over pipes, two switches per side per round trip);
//! untraced, ours (`profile --off-cpu` of the whole host: the BTF
//! tracepoint, user stacks walked with unwind tables), ours walking frame
//! pointers, ours on the classic tracepoint, and libbpf-tools' offcputime
//! (BTF tracepoint too where the kernel has BTF, frame pointers).
//!
//! Every context switch of the host runs the program, so its cost per
//! switch (the BPF time the kernel's statistics give) and the workload's
//! slowdown are the figures.

use std::process::Command;

use anyhow::Result;

use super::{
    CaseReport, Ctx,
    compare::{self, Tracer, Variant, Workload},
};
use crate::cmd;

pub fn run(ctx: &Ctx) -> Result<CaseReport> {
    let mut report = CaseReport::new("offcpu", super::case_title("offcpu"));
    let rounds: u64 = if ctx.quick { 50_000 } else { 200_000 };
    report.work = format!(
        "`ctxswitch {rounds}`: two processes pass a byte back and forth over two pipes \
         {rounds} times, each blocking in read() until the other writes: {} context \
         switches at least. Time: wall time of the round trips.",
        rounds * 4
    );
    let bin = ctx.workload("ctxswitch");
    let workload = Workload {
        command: Box::new(move || {
            let mut c = Command::new(&bin);
            c.arg(rounds.to_string());
            c
        }),
        gated: false,
        hold_at_end: false,
        parse: compare::parse_elapsed_ns,
        ops: rounds as f64,
        op_name: "round trip",
    };
    let ours = |extra: &[&str]| -> Result<Tracer, String> {
        let (bin, help) = ctx.perf_user_command("profile")?;
        if !help.contains("--off-cpu") {
            return Err("this perf-user's `profile` has no --off-cpu".into());
        }
        let mut args = vec!["profile", "--off-cpu", "-d", "1h", "-q", "-o", "/dev/null"];
        args.extend(extra);
        Ok(Tracer::new(bin, &args))
    };
    let offcputime = cmd::find_in_path("offcputime")
        .or_else(|| {
            let p = std::path::Path::new("/usr/sbin/offcputime");
            p.is_file().then(|| p.to_path_buf())
        })
        .ok_or_else(|| "offcputime not found (apt-get install libbpf-tools)".to_string())
        .map(|p| Tracer::new(p, &["3600"]));
    let variants = vec![
        Variant::untraced(),
        Variant::traced("perf-user profile --off-cpu", ours(&[]))
            .with_note("BTF tracepoint; user stacks walked with unwind tables"),
        Variant::traced("perf-user, frame pointers", ours(&["--unwind", "fp"]))
            .with_note("--unwind fp: the walk offcputime does"),
        Variant::traced(
            "perf-user, classic tracepoint",
            ours(&["--tracepoints", "classic"]),
        )
        .with_note("--tracepoints classic: what kernels without BTF get (frame pointers)"),
        Variant::traced("libbpf-tools offcputime", offcputime)
            .with_note("stacks of the whole host, frame pointers, 1 µs minimum as ours"),
    ];
    report.variants = compare::run(ctx, "offcpu", &workload, variants)?;
    report.op_name = workload.op_name.into();
    report.notes.push(
        "BPF time is per program run, i.e. per context switch of the host (the workload's and \
         everything else's while it ran)"
            .into(),
    );
    Ok(report)
}
