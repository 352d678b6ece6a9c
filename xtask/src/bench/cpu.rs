//! Case 1, CPU profiling: a CPU-bound C program, one process per CPU, a fixed
//! number of iterations; untraced, ours at 99 and 999 Hz, `perf record -F 99
//! -a -g`, and bpftrace `profile:hz:99` with kernel and user stacks.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};

use super::{
    CaseReport, Ctx,
    compare::{self, Tracer, Variant, Workload},
    process::Proc,
};
use crate::cmd;

const BPFTRACE_PROFILE: &str = "profile:hz:99 { @[kstack, ustack, comm] = count(); }";

pub fn run(ctx: &Ctx) -> Result<CaseReport> {
    let mut report = CaseReport::new("cpu", super::case_title("cpu"));
    let target = if ctx.quick { 1.0 } else { 2.0 };
    let iterations = calibrate(ctx, target)?;
    let procs = ctx.ncpu;
    report.work = format!(
        "`cpu_burn {iterations} {procs}`: {procs} processes (one per CPU), each {iterations} \
         rounds of an integer-mixing loop under a 3-deep call chain; about {target} s untraced. \
         Time: wall time from the first fork to the last exit."
    );
    let bin = ctx.workload("cpu_burn");
    let workload = Workload {
        command: Box::new(move || {
            let mut c = Command::new(&bin);
            c.args([iterations.to_string(), procs.to_string()]);
            c
        }),
        gated: false,
        hold_at_end: false,
        parse: compare::parse_elapsed_ns,
        ops: iterations as f64 * procs as f64 / 1e6,
        op_name: "M iterations",
    };

    let ours = |hz: &str| {
        ctx.perf_user_command("profile").map(|(bin, _)| {
            Tracer::new(
                bin,
                &[
                    "profile",
                    "-F",
                    hz,
                    "-d",
                    "1h",
                    "-q",
                    "-f",
                    "folded",
                    "-o",
                    "/dev/null",
                ],
            )
        })
    };
    let perf_data = ctx.tmp.join("perf.data");
    let perf = cmd::find_in_path("perf")
        .ok_or_else(|| "perf not found (apt-get install linux-perf)".to_string())
        .map(|p| {
            Tracer::new(
                p,
                &[
                    "record",
                    "-F",
                    "99",
                    "-a",
                    "-g",
                    "-q",
                    "-o",
                    &perf_data.to_string_lossy(),
                ],
            )
        });
    let bpftrace = cmd::find_in_path("bpftrace")
        .ok_or_else(|| "bpftrace not found (apt-get install bpftrace)".to_string())
        .map(|p| Tracer::bpftrace(p, &[], BPFTRACE_PROFILE));
    let variants = vec![
        Variant::untraced(),
        Variant::traced("perf-user 99 Hz", ours("99")),
        Variant::traced("perf-user 999 Hz", ours("999")),
        Variant::traced("perf record 99 Hz", perf).with_note(
            "no BPF programs: its sampling cost in the kernel (stack walks, ring buffer) is \
             not in the BPF figures, only in the slowdown; its CPU is the perf process's",
        ),
        Variant::traced("bpftrace 99 Hz", bpftrace),
    ];
    report.variants = compare::run(ctx, "cpu", &workload, variants)?;
    report.op_name = workload.op_name.into();
    let _ = std::fs::remove_file(&perf_data);
    report.notes.push(format!(
        "events are samples: at F Hz on {procs} busy CPUs expect about {procs}xF per second"
    ));
    Ok(report)
}

/// Iterations per process for about `seconds` of work on an idle CPU.
fn calibrate(ctx: &Ctx, seconds: f64) -> Result<u64> {
    const PROBE: u64 = 200_000_000;
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let mut p = Proc::spawn(
            Command::new(ctx.workload("cpu_burn"))
                .args([PROBE.to_string(), "1".into()])
                .stdout(Stdio::piped()),
        )?;
        let out = p.read_rest()?;
        p.wait_timeout(std::time::Duration::from_secs(600))?
            .context("cpu_burn calibration did not finish in 10 minutes")?;
        best = best.min(compare::parse_elapsed_ns(&out)?);
    }
    let per_second = PROBE as f64 / best;
    let iterations = (per_second * seconds / 1e6).round().max(1.0) as u64 * 1_000_000;
    eprintln!(
        "  [cpu] calibrated: {:.0} M iterations/s on one CPU; {iterations} per process",
        per_second / 1e6
    );
    Ok(iterations)
}
