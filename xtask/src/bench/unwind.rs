//! Case 1b (run with `cpu`), whole user stacks on a binary built without
//! frame pointers (issue 13): Debian's /usr/bin/python3 in a json, zlib and
//! hashlib loop, untraced, under `perf-user profile --unwind dwarf` and
//! `--unwind fp`, and under `perf record --call-graph dwarf,16384` (whose
//! cost is its record process plus the `perf script` that unwinds what it
//! recorded), all at 999 Hz on the workload's PID. Plus the time to build
//! the unwind tables of python3 (libpython is linked into it on Debian) and
//! libc, from `examples/unwind_table_bench`.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use super::{
    CaseReport, Ctx, Metric,
    compare::{self, Run, Tracer, Variant, Workload},
    process::Proc,
    stats,
};
use crate::cmd;

/// Debian's own interpreter: built without frame pointers (a pyenv build on
/// PATH keeps them).
const PYTHON: &str = "/usr/bin/python3";

/// tests/profile_stacks.rs's loop, a fixed number of times, gated and held
/// (see `Workload`).
const SCRIPT: &str = "
import json, zlib, hashlib, sys, time
data = [{'k': i, 'v': str(i) * 20} for i in range(2000)]
def work():
    s = json.dumps(data).encode()
    c = zlib.compress(s, 6)
    hashlib.sha256(c).hexdigest()
    json.loads(zlib.decompress(c))
def outer(n):
    return work() if n == 0 else outer(n - 1)
n = int(sys.argv[1])
gated = len(sys.argv) > 2
if gated:
    print('ready', flush=True)
    sys.stdin.readline()
t = time.perf_counter_ns()
for _ in range(n):
    outer(5)
print(f'elapsed_ns={time.perf_counter_ns() - t}', flush=True)
if gated:
    sys.stdin.readline()
";

const HZ: &str = "999";

pub fn run(ctx: &Ctx) -> Result<CaseReport> {
    let mut report = CaseReport::new("cpu-unwind", super::case_title("cpu-unwind"));
    if !Path::new(PYTHON).exists() {
        return Ok(report.unavailable(format!("{PYTHON} is missing (apt-get install python3)")));
    }
    let script = ctx.tmp.join("python_loop.py");
    fs::write(&script, SCRIPT).with_context(|| format!("cannot write {}", script.display()))?;
    let target = if ctx.quick { 2.0 } else { 5.0 };
    let iterations = calibrate(&script, target)?;
    report.work = format!(
        "Debian's `{PYTHON}` (built without frame pointers) running {iterations} rounds of \
         json.dumps, zlib.compress, sha256, zlib.decompress and json.loads of 2,000 records \
         under a 6-deep Python recursion (tests/profile_stacks.rs's loop), about {target} s \
         untraced, one process; every tracer samples its PID at {HZ} Hz. Time: the loop's \
         own wall time."
    );
    let workload = Workload {
        command: {
            let script = script.clone();
            Box::new(move || {
                let mut c = Command::new(PYTHON);
                c.arg(&script).arg(iterations.to_string()).arg("gated");
                c
            })
        },
        gated: true,
        hold_at_end: true,
        parse: compare::parse_elapsed_ns,
        ops: iterations as f64,
        op_name: "round",
    };

    let ours = |mode: &'static str| -> (Result<Tracer, String>, PathBuf) {
        let out = ctx.tmp.join(format!("profile-{mode}.json"));
        let tracer = ctx.perf_user_command("profile").and_then(|(bin, help)| {
            if !help.contains("--unwind") {
                return Err("this perf-user's `profile` has no --unwind".into());
            }
            Ok(Tracer::new(
                bin,
                &[
                    "profile",
                    "--pid",
                    "{pid}",
                    "-F",
                    HZ,
                    "-d",
                    "1h",
                    "-q",
                    "--unwind",
                    mode,
                    "--format",
                    "json",
                    "-o",
                    &out.to_string_lossy(),
                ],
            ))
        });
        (tracer, out)
    };
    let (dwarf, dwarf_out) = ours("dwarf");
    let (fp, fp_out) = ours("fp");
    let perf_data = ctx.tmp.join("perf-dwarf.data");
    let perf_bin = cmd::find_in_path("perf");
    let perf = perf_bin
        .clone()
        .ok_or_else(|| "perf not found (apt-get install linux-perf)".to_string())
        .map(|p| {
            Tracer::new(
                p,
                &[
                    "record",
                    "-q",
                    "-F",
                    HZ,
                    "--call-graph",
                    "dwarf,16384",
                    "-p",
                    "{pid}",
                    "-o",
                    &perf_data.to_string_lossy(),
                ],
            )
        });
    let variants = vec![
        Variant::untraced(),
        Variant::traced("perf-user --unwind dwarf", dwarf)
            .with_note(
                "tables from .eh_frame, walked in the kernel (cpu_sample tail-calls \
                 unwind_more: the kernel counts the tail-called program's time in \
                 cpu_sample's run time, and does not count it as a run of its own)",
            )
            .with_after(move |run| ours_figures(run, &dwarf_out)),
        Variant::traced("perf-user --unwind fp", fp)
            .with_note("frame pointers only: python3 and libc have none")
            .with_after(move |run| ours_figures(run, &fp_out)),
        Variant::traced("perf record --call-graph dwarf,16384", perf)
            .with_note(
                "copies 16 KiB of user stack per sample in the sampling interrupt (kernel \
                 time charged to the workload: in the slowdown only), unwinds in `perf \
                 script` afterwards; its direct cost is the record process's CPU from start \
                 to exit plus `perf script`'s",
            )
            .with_after(move |run| {
                perf_figures(
                    run,
                    perf_bin.as_deref().unwrap_or(Path::new("perf")),
                    &perf_data,
                )
            }),
    ];
    report.variants = compare::run(ctx, "cpu-unwind", &workload, variants)?;
    report.op_name = workload.op_name.into();
    let _ = fs::remove_file(ctx.tmp.join("perf-dwarf.data"));
    targets(&mut report);
    table_build(ctx, &mut report);
    report.notes.push(
        "direct cost per sample: BPF time plus the tracer's CPU from start to exit (loading, \
         tables, symbolization and the report included), over the samples of the workload in \
         its report; for perf, the record process's CPU plus `perf script --no-inline -F \
         ip,sym,dso`'s. \"While the workload ran\" counts the tracer's CPU during the work \
         only (perf script's whole CPU still counts, its start-up included): the cost per \
         sample of a long run, without the fixed costs (ours: loading the programs and \
         building tables; perf's: writing perf.data at exit)"
            .into(),
    );
    report.notes.push(
        "BPF time per sample is all of our programs' run time over the workload's samples: \
         `profile --pid` samples every CPU and drops other processes' samples in the program \
         (those runs are in the total too), so the fp variant's figure is the floor that \
         sampling, the kernel stack and filtering cost, and dwarf - fp is what the table \
         walk adds"
            .into(),
    );
    Ok(report)
}

/// The python loop, running until killed (load for the daemon case: a
/// process whose stacks need tables).
pub(crate) fn endless_python(ctx: &Ctx) -> Result<Command> {
    if !Path::new(PYTHON).exists() {
        bail!("{PYTHON} is missing (apt-get install python3)");
    }
    let script = ctx.tmp.join("python_loop.py");
    fs::write(&script, SCRIPT).with_context(|| format!("cannot write {}", script.display()))?;
    let mut c = Command::new(PYTHON);
    c.arg(&script)
        .arg("1000000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Ok(c)
}

/// Rounds for about `seconds` of the loop untraced.
fn calibrate(script: &Path, seconds: f64) -> Result<u64> {
    const PROBE: u64 = 30;
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let mut p = Proc::spawn(
            Command::new(PYTHON)
                .arg(script)
                .arg(PROBE.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped()),
        )?;
        let out = p.read_rest()?;
        p.wait_timeout(Duration::from_secs(600))?
            .context("the python loop's calibration did not finish in 10 minutes")?;
        best = best.min(compare::parse_elapsed_ns(&out)?);
    }
    let rounds = ((seconds / best * PROBE as f64).round() as u64).max(10);
    eprintln!(
        "  [cpu-unwind] calibrated: {:.1} ms a round; {rounds} rounds",
        best * 1e3 / PROBE as f64
    );
    Ok(rounds)
}

/// Samples, user depth and BPF cost per sample from `profile`'s JSON.
fn ours_figures(run: &Run, out: &Path) -> Result<BTreeMap<String, f64>> {
    let text = fs::read(out).with_context(|| format!("no report at {}", out.display()))?;
    let doc: Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", out.display()))?;
    let stacks = doc["stacks"]
        .as_array()
        .ok_or_else(|| anyhow!("{} has no `stacks`", out.display()))?;
    let mut user: Vec<(Vec<String>, u64)> = Vec::new();
    for s in stacks {
        if s["pid"].as_i64() != Some(i64::from(run.pid)) {
            continue;
        }
        let frames = s["frames"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter(|f| !f["kernel"].as_bool().unwrap_or(false))
                    .map(|f| f["function"].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        user.push((frames, s["count"].as_u64().unwrap_or(0)));
    }
    let mut m = stack_figures(&user);
    let samples = m["samples"];
    if let Some(t) = &run.tracer
        && samples > 0.0
    {
        let bpf = t.bpf_run_time_ns as f64;
        m.insert("BPF µs per sample".into(), bpf / samples / 1e3);
        m.insert(
            "direct cost µs per sample".into(),
            (bpf + t.cpu_seconds_total * 1e9) / samples / 1e3,
        );
        m.insert(
            "direct cost µs per sample, while it ran".into(),
            (bpf + t.cpu_seconds * 1e9) / samples / 1e3,
        );
        m.insert("tracer CPU s, start to exit".into(), t.cpu_seconds_total);
    }
    if let Some(ends) = doc["unwind"]["walks_ended"].as_object() {
        let total: u64 = ends.values().filter_map(Value::as_u64).sum();
        let complete = ends.get("complete").and_then(Value::as_u64).unwrap_or(0);
        if total > 0 {
            m.insert(
                "table walks complete %".into(),
                100.0 * complete as f64 / total as f64,
            );
        }
    }
    if let Some(ms) = doc["unwind"]["tables"]["load_ms"].as_u64() {
        m.insert("tables built and loaded, ms".into(), ms as f64);
    }
    Ok(m)
}

/// `perf script` over what `perf record` wrote: its CPU, the bytes, and the
/// stacks' figures.
fn perf_figures(run: &Run, perf: &Path, data: &Path) -> Result<BTreeMap<String, f64>> {
    let bytes = fs::metadata(data)
        .with_context(|| format!("perf record wrote no {}", data.display()))?
        .len();
    let mut p = Proc::spawn(
        Command::new(perf)
            .args(["script", "--no-inline", "-F", "ip,sym,dso", "-i"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )?;
    let out = p.read_rest()?;
    let exit = p
        .wait_timeout(Duration::from_secs(1800))?
        .context("perf script ran for 30 minutes")?;
    if !exit.status.success() {
        bail!("perf script failed ({})", cmd::describe(exit.status));
    }
    let mut m = stack_figures(&perf_stacks(&out));
    let samples = m["samples"];
    m.insert("perf script CPU s".into(), exit.cpu_seconds);
    m.insert("bytes written, MiB".into(), bytes as f64 / 1048576.0);
    if let Some(t) = &run.tracer
        && samples > 0.0
    {
        m.insert("tracer CPU s, start to exit".into(), t.cpu_seconds_total);
        m.insert(
            "direct cost µs per sample".into(),
            (t.cpu_seconds_total + exit.cpu_seconds) * 1e6 / samples,
        );
        m.insert(
            "direct cost µs per sample, while it ran".into(),
            (t.cpu_seconds + exit.cpu_seconds) * 1e6 / samples,
        );
    }
    Ok(m)
}

/// User stacks (root first) of `perf script -F ip,sym,dso` output.
fn perf_stacks(script: &str) -> Vec<(Vec<String>, u64)> {
    let mut out = Vec::new();
    for block in script.split("\n\n") {
        let mut frames = Vec::new();
        for line in block.lines() {
            // "\t    addr sym+off (dso)"
            let Some((head, dso)) = line.trim().rsplit_once(" (") else {
                continue;
            };
            if dso.starts_with("[kernel") {
                continue;
            }
            let sym = head.split_once(' ').map_or("?", |(_, s)| s.trim());
            frames.push(sym.split('+').next().unwrap_or(sym).to_owned());
        }
        if !frames.is_empty() {
            frames.reverse();
            out.push((frames, 1));
        }
    }
    out
}

/// Samples, median user depth and the share that reaches `_start`.
fn stack_figures(stacks: &[(Vec<String>, u64)]) -> BTreeMap<String, f64> {
    let total: u64 = stacks.iter().map(|(_, n)| n).sum();
    let start: u64 = stacks
        .iter()
        .filter(|(f, _)| f.first().is_some_and(|n| n == "_start"))
        .map(|(_, n)| n)
        .sum();
    let mut depths: Vec<(usize, u64)> = stacks.iter().map(|(f, n)| (f.len(), *n)).collect();
    depths.sort_unstable();
    let mut seen = 0;
    let mut median = 0;
    for (d, n) in depths {
        seen += n;
        if seen * 2 >= total {
            median = d;
            break;
        }
    }
    BTreeMap::from([
        ("samples".to_owned(), total as f64),
        ("median user depth".to_owned(), median as f64),
        (
            "reach _start %".to_owned(),
            100.0 * start as f64 / total.max(1) as f64,
        ),
    ])
}

/// The targets, from the variants' figures.
fn targets(report: &mut CaseReport) {
    let extra = |name: &str, key: &str| {
        report
            .variants
            .iter()
            .find(|v| v.name.starts_with(name))
            .and_then(|v| v.extra.get(key).copied())
    };
    let paired = |name: &str| {
        report
            .variants
            .iter()
            .find(|v| v.name.starts_with(name))
            .and_then(|v| v.paired_ratio)
    };
    let mut m = Vec::new();
    if let Some(us) = extra("perf-user --unwind dwarf", "BPF µs per sample") {
        m.push(Metric::new("BPF time per sample, --unwind dwarf", us, "µs").below(10.0, "10 µs"));
    }
    if let Some(us) = extra("perf-user --unwind fp", "BPF µs per sample") {
        m.push(Metric::new("BPF time per sample, --unwind fp", us, "µs"));
        if let Some(d) = extra("perf-user --unwind dwarf", "BPF µs per sample") {
            m.push(Metric::new(
                "BPF time per sample, tables over frame pointers (dwarf - fp)",
                d - us,
                "µs",
            ));
        }
    }
    for (key, what) in [
        ("direct cost µs per sample", "start to exit"),
        (
            "direct cost µs per sample, while it ran",
            "while the workload ran",
        ),
    ] {
        let ours = extra("perf-user --unwind dwarf", key);
        let perf = extra("perf record", key);
        if let (Some(o), Some(p)) = (ours, perf) {
            m.push(Metric::new(
                &format!("direct cost per sample, --unwind dwarf, {what}"),
                o,
                "µs",
            ));
            m.push(Metric::new(
                &format!("direct cost per sample, perf record + perf script, {what}"),
                p,
                "µs",
            ));
            if let Some(r) = stats::ratio(o, p) {
                m.push(
                    Metric::new(&format!("direct cost, ours / perf's, {what}"), r, "")
                        .below(0.2, "1/5"),
                );
            }
        }
    }
    for (name, label) in [
        ("perf-user --unwind dwarf", "--unwind dwarf"),
        ("perf-user --unwind fp", "--unwind fp"),
        ("perf record", "perf --call-graph dwarf"),
    ] {
        if let Some(r) = paired(name) {
            m.push(Metric::new(
                &format!("workload slowdown, {label} (paired ratio)"),
                r,
                "",
            ));
        }
        if let Some(d) = extra(name, "median user depth") {
            m.push(Metric::new(
                &format!("median user stack depth, {label}"),
                d,
                "frames",
            ));
        }
    }
    report.metrics.extend(m);
}

/// Table build times of python3 and libc (release build of the example).
fn table_build(ctx: &Ctx, report: &mut CaseReport) {
    let bench = match &ctx.unwind_table_bench {
        Ok(p) => p.clone(),
        Err(why) => {
            report
                .notes
                .push(format!("table build time not measured: {why}"));
            return;
        }
    };
    let python = fs::canonicalize(PYTHON).unwrap_or_else(|_| PYTHON.into());
    let libc = super::alloc::libc_path()
        .map_or_else(|| "/lib/x86_64-linux-gnu/libc.so.6".into(), PathBuf::from);
    let out = cmd::output(
        Command::new(&bench)
            .arg(&python)
            .arg(&libc)
            .args(["--reps", "5"]),
    );
    let text = match out {
        Ok(t) => t,
        Err(e) => {
            report
                .notes
                .push(format!("table build time not measured: {e:#}"));
            return;
        }
    };
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let file = v["file"].as_str().unwrap_or("?");
        let name = Path::new(file)
            .file_name()
            .map_or(file.to_owned(), |n| n.to_string_lossy().into_owned());
        let ms = v["build_ms_median"].as_f64().unwrap_or(f64::NAN);
        let metric = Metric::new(
            &format!(
                "unwind table of {name} ({} rows, {} KiB): build, median of 5",
                v["rows"].as_u64().unwrap_or(0),
                v["table_bytes"].as_u64().unwrap_or(0) / 1024
            ),
            ms,
            "ms",
        );
        report.metrics.push(if name.starts_with("python") {
            metric.below(100.0, "100 ms")
        } else {
            metric
        });
    }
    report.notes.push(format!(
        "table build: `{} {} {} --reps 5` (release build; reading the file, gimli over \
         .eh_frame and .debug_frame, merging rows, then the page index), with the machine's \
         other load; on Debian libpython is linked into python3.11, so its table is python3's",
        bench.display(),
        python.display(),
        libc.display()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_script_stacks_and_figures() {
        let script = "\n\t    7f01 deflate+0x10 (/usr/lib/libz.so.1)\n\t    5501 \
                      _PyEval_EvalFrameDefault+0x20 (/usr/bin/python3.11)\n\t    5502 \
                      _start+0x2a (/usr/bin/python3.11)\n\n\t ffffffff81 \
                      irq+0x1 ([kernel.kallsyms])\n\t    5503 main+0x1 (/usr/bin/python3.11)\n";
        let stacks = perf_stacks(script);
        assert_eq!(
            stacks,
            vec![
                (
                    vec![
                        "_start".to_owned(),
                        "_PyEval_EvalFrameDefault".to_owned(),
                        "deflate".to_owned()
                    ],
                    1
                ),
                (vec!["main".to_owned()], 1),
            ]
        );
        let f = stack_figures(&stacks);
        assert_eq!(f["samples"], 2.0);
        assert_eq!(f["median user depth"], 1.0);
        assert_eq!(f["reach _start %"], 50.0);
    }
}
