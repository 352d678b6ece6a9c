//! Case 6, symbolization: addresses per second that perf-user's
//! `StackSymbolizer` resolves in a large binary with DWARF (our own debug
//! build), with a cold cache (a new symbolizer: the file is parsed first),
//! warm (file parsed, new addresses) and cached (the same addresses again).
//! Runs the `symbolize_bench` example of perf-user, one process per round.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};

use super::{CaseReport, Ctx, Metric, process::Proc, stats};
use crate::cmd;

const ADDRESSES: usize = 20_000;

pub fn run(ctx: &Ctx) -> Result<CaseReport> {
    let mut report = CaseReport::new("symbolize", super::case_title("symbolize"));
    let bench = match &ctx.symbolize_bench {
        Ok(b) => b.clone(),
        Err(why) => return Ok(report.unavailable(why.clone())),
    };
    let file = match debug_binary(ctx) {
        Ok(f) => f,
        Err(why) => return Ok(report.unavailable(why)),
    };
    let size_mib = file
        .metadata()
        .map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64);
    report.work = format!(
        "{ADDRESSES} addresses spread over the executable segments of {} ({size_mib:.0} MiB, \
         with DWARF), each symbolized as a one-frame stack (name, file and line), by \
         `StackSymbolizer` in a new process per round ({} rounds).",
        file.display(),
        ctx.reps
    );
    let mut rounds: Vec<serde_json::Value> = Vec::new();
    for round in 0..ctx.reps {
        ctx.check_interrupted()?;
        let mut p = Proc::spawn(
            Command::new(&bench)
                .arg(&file)
                .arg(ADDRESSES.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(ctx.log_file("symbolize")?)),
        )?;
        let out = p.read_rest()?;
        let exit = p
            .wait_timeout(Duration::from_secs(600))?
            .ok_or_else(|| anyhow!("symbolize_bench ran for 10 minutes"))?;
        if !exit.status.success() {
            return Ok(report.unavailable(format!(
                "`{}` failed ({}): {}",
                p.display,
                cmd::describe(exit.status),
                super::compare::tail(&ctx.log_path("symbolize"))
            )));
        }
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("symbolize_bench printed {out:?}, not JSON"))?;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "  [symbolize] round {}/{}: cold {:.0}/s ({:.2} s), warm {:.0}/s, cached {:.0}/s, \
             {} of {} named",
            round + 1,
            ctx.reps,
            f("cold_per_second"),
            f("cold_seconds"),
            f("warm_per_second"),
            f("cached_per_second"),
            v["named"],
            v["addresses"]
        );
        rounds.push(v);
    }
    let med = |k: &str| {
        stats::median(
            &rounds
                .iter()
                .filter_map(|v| v[k].as_f64())
                .collect::<Vec<_>>(),
        )
        .unwrap_or(f64::NAN)
    };
    let m = &mut report.metrics;
    m.push(Metric::new(
        "cold: addresses per second",
        med("cold_per_second"),
        "/s",
    ));
    m.push(Metric::new(
        "cold: first batch, seconds",
        med("cold_seconds"),
        "s",
    ));
    m.push(Metric::new(
        "warm: addresses per second",
        med("warm_per_second"),
        "/s",
    ));
    m.push(Metric::new(
        "cached: addresses per second",
        med("cached_per_second"),
        "/s",
    ));
    m.push(Metric::new(
        "addresses named",
        100.0 * med("named") / ADDRESSES as f64,
        "%",
    ));
    report.notes.push(
        "cold means a new symbolizer (the ELF and DWARF are parsed on first use); the \
         operating system's page cache holds the file after the first round"
            .into(),
    );
    Ok(report)
}

/// Our debug binary (large, with DWARF), built if it is not there.
fn debug_binary(ctx: &Ctx) -> Result<std::path::PathBuf, String> {
    let path = ctx.target_dir.join("debug").join("perf-user");
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("  [symbolize] building the debug perf-user binary to symbolize");
    let ready = crate::setup::ensure(crate::setup::Mode::Quiet).map_err(|e| format!("{e:#}"))?;
    let mut cargo = ready.cargo().map_err(|e| format!("{e:#}"))?;
    cargo.args(["build", "--package", "perf-user"]);
    cmd::run(&mut cargo).map_err(|e| format!("building {} failed: {e:#}", path.display()))?;
    Ok(path)
}
