//! Case 2, block I/O: fio direct-I/O 4 KiB random reads (a fixed number, one
//! at a time) on a file in the scratch directory; untraced, ours
//! (`latency --block`: BTF tracepoints where the kernel has BTF), ours with
//! the classic tracepoints that kernels without BTF use, libbpf-tools
//! biolatency.

use std::{os::unix::fs::MetadataExt as _, path::Path, process::Command};

use anyhow::{Context as _, Result, anyhow};

use super::{
    CaseReport, Ctx,
    compare::{self, Tracer, Variant, Workload},
};
use crate::cmd;

pub fn run(ctx: &Ctx) -> Result<CaseReport> {
    let mut report = CaseReport::new("block", super::case_title("block"));
    let Some(fio) = cmd::find_in_path("fio") else {
        return Ok(report.unavailable("fio not found (apt-get install fio)"));
    };
    let ios: u64 = if ctx.quick { 10_000 } else { 40_000 };
    let file = ctx.tmp.join("fio.dat");
    let device = device_of(&ctx.tmp);
    report.work = format!(
        "fio: {ios} random 4 KiB direct-I/O reads (psync, queue depth 1) from a 256 MiB \
         file in {} (device {device}). Time: fio's own run time ({ios} / IOPS).",
        ctx.tmp.display()
    );
    let file_arg = format!("--filename={}", file.display());
    let io_size = format!("--io_size={}", ios * 4096);
    let workload = Workload {
        command: Box::new(move || {
            let mut c = Command::new(&fio);
            c.args([
                "--name=bench",
                &file_arg,
                "--size=256M",
                &io_size,
                "--direct=1",
                "--rw=randread",
                "--bs=4k",
                "--ioengine=psync",
                "--iodepth=1",
                "--randrepeat=1",
                "--output-format=json",
            ]);
            c
        }),
        gated: false,
        hold_at_end: false,
        parse: parse_fio,
        ops: ios as f64,
        op_name: "I/O",
    };
    let ours = ctx.latency_tracer(&["--block"]);
    let ours_classic = ctx.latency_tracer(&["--block", "--tracepoints", "classic"]);
    let biolatency = cmd::find_in_path("biolatency")
        .ok_or_else(|| "biolatency not found (apt-get install libbpf-tools)".to_string())
        .map(|p| Tracer::new(p, &[]));
    let variants = vec![
        Variant::untraced(),
        Variant::traced("perf-user latency --block", ours).with_note(
            "histograms per device and operation (read/write/flush/discard); BTF tracepoints \
             where the kernel has BTF",
        ),
        Variant::traced("perf-user, classic tracepoints", ours_classic)
            .with_note("--tracepoints classic: what kernels without BTF get"),
        Variant::traced("biolatency", biolatency)
            .with_note("one histogram for all disks (no -D, -F)"),
    ];
    let result = compare::run(ctx, "block", &workload, variants);
    // 256 MiB: not worth keeping in target/.
    let _ = std::fs::remove_file(&file);
    report.variants = result?;
    report.op_name = workload.op_name.into();
    report.notes.push(
        "events are BPF program runs: one at issue and one at completion per I/O, plus \
         any other I/O on the machine while the workload ran"
            .into(),
    );
    Ok(report)
}

/// Seconds of I/O in fio's JSON output: total reads over read IOPS.
fn parse_fio(out: &str) -> Result<f64> {
    // fio may print notes before the JSON document.
    let start = out
        .find('{')
        .ok_or_else(|| anyhow!("fio printed no JSON: {out:?}"))?;
    let doc: serde_json::Value =
        serde_json::from_str(&out[start..]).context("cannot parse fio's JSON output")?;
    let read = &doc["jobs"][0]["read"];
    let ios = read["total_ios"].as_f64();
    let iops = read["iops"].as_f64();
    match (ios, iops) {
        (Some(ios), Some(iops)) if ios > 0.0 && iops > 0.0 => Ok(ios / iops),
        _ => Err(anyhow!("fio's JSON has no jobs[0].read.total_ios and iops")),
    }
}

/// The block device a directory is on (`vda`, `253:0`), for the report.
fn device_of(dir: &Path) -> String {
    let Ok(meta) = dir.metadata() else {
        return "unknown".into();
    };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    std::fs::read_link(format!("/sys/dev/block/{major}:{minor}"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("{major}:{minor}, not a block device"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_json() {
        let out = "note: both iodepth >= 1 and synchronous I/O engine are selected\n\
                   {\"jobs\": [{\"read\": {\"total_ios\": 1000, \"iops\": 500.0}}]}";
        assert_eq!(parse_fio(out).unwrap(), 2.0);
        assert!(parse_fio("{\"jobs\": []}").is_err());
        assert!(parse_fio("oops").is_err());
    }
}
