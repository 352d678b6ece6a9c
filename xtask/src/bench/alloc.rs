//! Case 4, allocations: a malloc/free loop in one process; untraced, ours
//! tracing every allocation (`leaks --pid`), the same with whole stacks from
//! unwind tables (`--unwind dwarf`), ours sampling 1 in 64 (`--sample 64`),
//! and bpftrace uprobes + uretprobe on malloc and free.

use std::{fs, process::Command};

use anyhow::{Context as _, Result};

use super::{
    CaseReport, Ctx,
    compare::{self, Tracer, Variant, Workload},
};
use crate::cmd;

/// Uprobes `leaks` attaches on glibc (tests/leaks.rs): 8 entry points and
/// 7 return probes plus the exec tracepoint as perf events, or 8
/// uprobe_multi links (one per program) on Linux 6.6+. The bench waits for
/// them: loading, and verifying the stack-walking programs, takes seconds on
/// a loaded machine, longer than the descriptor count's settling time.
const GLIBC_PERF_EVENTS: usize = 16;
const GLIBC_MULTI_LINKS: usize = 8;

pub fn run(ctx: &Ctx) -> Result<CaseReport> {
    let mut report = CaseReport::new("alloc", super::case_title("alloc"));
    // A traced iteration costs microseconds (uprobe traps), an untraced one
    // tens of nanoseconds: the count keeps traced runs to a few seconds.
    let iterations: u64 = if ctx.quick { 100_000 } else { 300_000 };
    report.work = format!(
        "`malloc_loop {iterations}`: {iterations} rounds of malloc (16 B to 4 KiB), a write, \
         and free (1 in 16 kept until the end), in one thread, started once the tracer is \
         attached to its PID; with a private copy of libc. Time: wall time of the loop."
    );
    // The workload runs with a private copy of libc: uprobes on that file
    // fire for the workload only. On the system libc they would fire in every
    // process on the machine (bpftrace 0.17's -p does not scope uprobes),
    // counting and slowing the other processes' calls too.
    let private_libc = match libc_path() {
        Some(system) => {
            let copy = ctx.bin.join("libc.so.6");
            fs::copy(&system, &copy)
                .map(|_| copy)
                .with_context(|| format!("cannot copy {system} into {}", ctx.bin.display()))?
        }
        None => return Ok(report.unavailable("cannot find libc.so.6 in /proc/self/maps")),
    };
    let bin = ctx.workload("malloc_loop");
    let lib_dir = ctx.bin.clone();
    let workload = Workload {
        command: Box::new(move || {
            let mut c = Command::new(&bin);
            c.arg(iterations.to_string())
                .env("LD_LIBRARY_PATH", &lib_dir);
            c
        }),
        gated: true,
        hold_at_end: false,
        parse: compare::parse_elapsed_ns,
        ops: iterations as f64,
        op_name: "malloc+free",
    };
    let leaks = ctx.perf_user_command("leaks");
    let ours = |extra: &[&'static str]| {
        leaks.clone().and_then(|(bin, help)| {
            let mut args = vec!["leaks", "--pid", "{pid}"];
            if let Some(flag) = extra
                .iter()
                .find(|a| a.starts_with("--") && !help.contains(**a))
            {
                return Err(format!("this perf-user's `leaks` has no {flag}"));
            }
            args.extend(extra);
            // Let it run until SIGINT, and keep its report out of the way.
            for (flag, extra) in [
                ("--duration", ["-d", "1h"]),
                ("--output", ["-o", "/dev/null"]),
            ] {
                if help.contains(flag) {
                    args.extend(extra);
                }
            }
            if help.contains("--quiet") {
                args.push("-q");
            }
            Ok(Tracer::new(bin, &args).with_uprobes(GLIBC_PERF_EVENTS, GLIBC_MULTI_LINKS))
        })
    };
    let libc = private_libc.display();
    let bpftrace = match cmd::find_in_path("bpftrace") {
        None => Err("bpftrace not found (apt-get install bpftrace)".to_string()),
        Some(p) => {
            // The pid predicates are for safety (bpftrace's -p does not scope
            // uprobes; the private libc does). END clears the maps so that exit does not print (and
            // symbolize) every outstanding stack.
            let script = format!(
                "uprobe:{libc}:malloc /pid == {{pid}}/ {{ @size[tid] = arg0; }} \
                 uretprobe:{libc}:malloc /pid == {{pid}} && @size[tid]/ {{ \
                 @bytes[retval] = @size[tid]; @stack[retval] = ustack; delete(@size[tid]); }} \
                 uprobe:{libc}:free /pid == {{pid}}/ {{ delete(@bytes[arg0]); \
                 delete(@stack[arg0]); }} \
                 END {{ clear(@size); clear(@bytes); clear(@stack); }}"
            );
            Ok(Tracer::bpftrace(p, &["-p", "{pid}"], &script))
        }
    };
    let variants = vec![
        Variant::untraced(),
        Variant::traced("perf-user leaks", ours(&[])),
        Variant::traced(
            "perf-user leaks --unwind dwarf",
            ours(&["--unwind", "dwarf"]),
        )
        .with_note(
            "whole user stacks from unwind tables (libc and the workload's); the default walks \
             frame pointers",
        ),
        Variant::traced("perf-user leaks --sample 64", ours(&["--sample", "64"])),
        Variant::traced("bpftrace malloc/free", bpftrace).with_note(
            "uprobe malloc, uretprobe malloc with ustack, uprobe free (the memleak equivalent \
             of DESIGN.md)",
        ),
    ];
    report.variants = compare::run(ctx, "alloc", &workload, variants)?;
    report.op_name = workload.op_name.into();
    report.notes.push(format!(
        "the workload loads a private copy of libc ({}, through LD_LIBRARY_PATH) so that \
         uprobes fire for its calls only: bpftrace 0.17's -p does not scope uprobes, and on \
         the system libc it would trace, and slow, every process on the machine",
        private_libc.display()
    ));
    report.notes.push(
        "most of a traced call's cost is the kernel's uprobe machinery (breakpoint trap, \
         single-step, uretprobe return trampoline), which is in the slowdown but not in the \
         BPF run time"
            .into(),
    );
    Ok(report)
}

/// The C library this machine's programs use (from our own mappings).
pub(crate) fn libc_path() -> Option<String> {
    let maps = fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
        })
        .map(str::to_owned)
}
