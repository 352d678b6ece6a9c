//! The reports: target/bench/report.json (everything, raw runs included) and
//! report.md (the tables for docs/benchmarks.md).

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{CaseReport, compare::VariantResult, process, stats};
use crate::cmd;

/// What the numbers were measured on.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    pub virtualization: String,
    pub load_average_at_start: String,
    pub perf_user_commit: String,
    pub tools: Vec<(String, String)>,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or_else(|| "unknown".into(), |(_, m)| m.trim().to_owned());
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix(name)?.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        };
        let cpu_model = match (field("cpu family"), field("model\t")) {
            (Some(family), Some(model)) => format!("{cpu_model} (family {family}, model {model})"),
            _ => cpu_model,
        };
        let hypervisor = cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
        let vendor = cmd::output(&mut Command::new("lscpu"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Hypervisor vendor:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default();
        let container = cmd::output(Command::new("systemd-detect-virt").arg("--container"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let mut virtualization = if hypervisor {
            format!(
                "virtual machine{}",
                if vendor.is_empty() {
                    String::new()
                } else {
                    format!(" ({vendor})")
                }
            )
        } else {
            "none detected (bare metal)".to_owned()
        };
        if !container.is_empty() && container != "none" {
            virtualization += &format!(", in a {container} container");
        }
        let memory_gib = process::status_kib_in("/proc/meminfo", "MemTotal")
            .map_or(0.0, |k| k as f64 / (1024.0 * 1024.0));
        let os = fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map_or_else(|| "unknown".into(), |s| s.trim_matches('"').to_owned());
        let commit = cmd::output(
            Command::new("git")
                .args(["describe", "--always", "--dirty"])
                .current_dir(cmd::workspace_root()),
        )
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
        let version = |program: &str, args: &[&str]| {
            cmd::output(Command::new(program).args(args))
                .map(|s| s.lines().next().unwrap_or("").trim().to_owned())
                .unwrap_or_else(|e| format!("not available ({e})"))
        };
        let tools = vec![
            ("perf".into(), version("perf", &["--version"])),
            ("bpftrace".into(), version("bpftrace", &["--version"])),
            (
                "libbpf-tools".into(),
                version("dpkg-query", &["-W", "-f=${Version}", "libbpf-tools"]),
            ),
            ("fio".into(), version("fio", &["--version"])),
            ("gcc".into(), version("gcc", &["--version"])),
        ];
        Self {
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib,
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
            os,
            virtualization,
            load_average_at_start: fs::read_to_string("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            perf_user_commit: commit,
            tools,
        }
    }
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Document {
    /// Our binary, and whether it was built here or given with --perf-user.
    pub perf_user_binary: String,
    pub quick: bool,
    pub reps: usize,
    pub interrupted: bool,
    pub seconds: f64,
    pub machine: Machine,
    pub cases: Vec<CaseReport>,
}

/// Writes report.md and report.json into `dir`; returns their paths.
pub fn write(dir: &Path, doc: &Document) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = dir.join("report.json");
    let md = dir.join("report.md");
    let text = serde_json::to_string_pretty(doc).context("cannot serialize the report")?;
    fs::write(&json, text + "\n").with_context(|| format!("cannot write {}", json.display()))?;
    fs::write(&md, markdown(doc)).with_context(|| format!("cannot write {}", md.display()))?;
    Ok((md, json))
}

/// The markdown report.
pub fn markdown(doc: &Document) -> String {
    let mut s = String::new();
    let m = &doc.machine;
    let _ = writeln!(
        s,
        "# perf-user overhead benchmark\n\n`cargo xtask bench{}`: {} rounds per comparison, \
         {:.0} s in all{}.\n",
        if doc.quick { " --quick" } else { "" },
        doc.reps,
        doc.seconds,
        if doc.interrupted {
            " (**interrupted**: only the finished cases)"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "| machine | |\n|---|---|");
    let _ = writeln!(s, "| CPU | {} × {} |", m.cpus, m.cpu_model);
    let _ = writeln!(s, "| memory | {:.1} GiB |", m.memory_gib);
    let _ = writeln!(s, "| kernel | {} |", m.kernel);
    let _ = writeln!(s, "| OS | {} |", m.os);
    let _ = writeln!(s, "| virtualization | {} |", m.virtualization);
    let _ = writeln!(s, "| load average at start | {} |", m.load_average_at_start);
    let _ = writeln!(
        s,
        "| perf-user | {} (workspace at {}) |",
        doc.perf_user_binary, m.perf_user_commit
    );
    for (tool, version) in &m.tools {
        let _ = writeln!(s, "| {tool} | {version} |");
    }
    s.push('\n');
    for (i, case) in doc.cases.iter().enumerate() {
        case_markdown(&mut s, i + 1, case);
    }
    s
}

fn case_markdown(s: &mut String, number: usize, case: &CaseReport) {
    let _ = writeln!(s, "## {number}. {} (`{}`)\n", case.title, case.id);
    if !case.work.is_empty() {
        let _ = writeln!(s, "Work: {}\n", case.work);
    }
    if let Some(why) = &case.not_available {
        let _ = writeln!(s, "**Not available:** {why}\n");
        return;
    }
    if !case.variants.is_empty() {
        comparison_markdown(s, &case.op_name, &case.variants);
    }
    if !case.metrics.is_empty() {
        let _ = writeln!(s, "| figure | value | target |\n|---|---:|---|");
        for m in &case.metrics {
            let target = match (&m.target, m.meets) {
                (Some(t), Some(true)) => format!("{t}: met"),
                (Some(t), Some(false)) => format!("{t}: **missed**"),
                (Some(t), None) => t.clone(),
                (None, _) => String::new(),
            };
            let _ = writeln!(s, "| {} | {} {} | {target} |", m.name, num(m.value), m.unit);
        }
        s.push('\n');
    }
    for note in &case.notes {
        let _ = writeln!(s, "- {note}");
    }
    let _ = writeln!(s, "\n_{:.0} s_\n", case.seconds);
}

fn comparison_markdown(s: &mut String, op: &str, variants: &[VariantResult]) {
    let _ = writeln!(
        s,
        "| variant | runs | median time | IQR | work/s | time ratio | paired ratio | other load |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for v in variants {
        if let Some(why) = &v.not_available {
            let _ = writeln!(
                s,
                "| {} | not available: {} | | | | | | |",
                v.name,
                cell(why)
            );
            continue;
        }
        let Some(sum) = &v.seconds else {
            let _ = writeln!(s, "| {} | 0 | | | | | | |", v.name);
            continue;
        };
        let other = stats::median(
            &v.runs
                .iter()
                .filter_map(|r| r.other_load_cores)
                .collect::<Vec<_>>(),
        );
        let _ = writeln!(
            s,
            "| {} | {} | {} s | {:.1}% | {} | {} | {} | {} |",
            v.name,
            sum.n,
            num(sum.median),
            100.0 * sum.relative_iqr(),
            v.ops_per_second.map_or_else(String::new, num),
            v.ratio
                .map_or_else(|| "1 (base)".into(), |r| format!("{r:.3}")),
            v.paired_ratio
                .map_or_else(String::new, |r| format!("{r:.3}")),
            other.map_or_else(String::new, |c| format!("{c:.2} cores")),
        );
    }
    s.push('\n');
    let traced: Vec<&VariantResult> = variants.iter().filter(|v| v.direct.is_some()).collect();
    if !traced.is_empty() {
        let _ = writeln!(
            s,
            "Direct cost (BPF: the tracer's programs, from the kernel's statistics; tracer: its \
             process's CPU while the workload ran):\n\n\
             | variant | BPF ns per run | BPF runs per s | BPF runs per {op} | BPF ns per {op} \
             | tracer CPU ns per {op} | BPF + tracer, % of workload CPU | tracer CPU start to exit \
             | attach |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for v in traced {
            let d = v.direct.as_ref().expect("filtered");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.3}% ({:.3} + {:.3}) | {} s | {} s |",
                v.name,
                d.bpf_ns_per_event.map_or_else(|| "no BPF".into(), num),
                num(d.events_per_second),
                num(d.events_per_op),
                num(d.bpf_ns_per_op),
                num(d.tracer_ns_per_op),
                d.bpf_percent_of_workload_cpu + d.tracer_percent_of_workload_cpu,
                d.bpf_percent_of_workload_cpu,
                d.tracer_percent_of_workload_cpu,
                num(d.tracer_cpu_seconds_total),
                num(d.attach_seconds),
            );
        }
        s.push('\n');
    }
    extra_markdown(s, variants);
    for v in variants {
        if let Some(cmd) = &v.command {
            let _ = writeln!(s, "- {}: `{}`", v.name, cmd.replace('\n', " "));
        }
        if let Some(note) = &v.note {
            let _ = writeln!(s, "  ({note})");
        }
        if !v.failed_runs.is_empty() {
            let _ = writeln!(
                s,
                "  {} failed runs left out, e.g.: {}",
                v.failed_runs.len(),
                cell(&v.failed_runs[0])
            );
        }
    }
}

/// The variants' own figures (medians of their `after` steps), one row per
/// figure, one column per variant that has any.
fn extra_markdown(s: &mut String, variants: &[VariantResult]) {
    let with: Vec<&VariantResult> = variants.iter().filter(|v| !v.extra.is_empty()).collect();
    if with.is_empty() {
        return;
    }
    let keys: std::collections::BTreeSet<&String> =
        with.iter().flat_map(|v| v.extra.keys()).collect();
    let _ = writeln!(
        s,
        "Per variant (medians over the runs):\n\n| figure | {} |\n|---|{}",
        with.iter()
            .map(|v| cell(&v.name))
            .collect::<Vec<_>>()
            .join(" | "),
        "---:|".repeat(with.len())
    );
    for key in keys {
        let values: Vec<String> = with
            .iter()
            .map(|v| v.extra.get(key).map_or_else(String::new, |x| num(*x)))
            .collect();
        let _ = writeln!(s, "| {} | {} |", cell(key), values.join(" | "));
    }
    s.push('\n');
}

/// Markdown-table-safe text.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A number with about three significant digits.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        format!("{:.3}M", x / 1e6)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(num(1234.6), "1235");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1.2345), "1.23");
        assert_eq!(num(0.12345), "0.123");
        assert_eq!(num(2_500_000.0), "2.500M");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(f64::NAN), "n/a");
    }

    #[test]
    fn not_available_case_and_metrics() {
        let mut a = CaseReport::new("leaks", "Allocation tracing").unavailable("no `leaks` | yet");
        a.seconds = 1.0;
        let mut b = CaseReport::new("daemon", "Daemon");
        b.metrics
            .push(super::super::Metric::new("peak RSS", 60.0, "MiB").below(50.0, "50 MB"));
        let mut s = String::new();
        case_markdown(&mut s, 4, &a);
        case_markdown(&mut s, 5, &b);
        assert!(s.contains("**Not available:** no `leaks` | yet"), "{s}");
        assert!(
            s.contains("| peak RSS | 60.0 MiB | < 50 MB: **missed** |"),
            "{s}"
        );
    }
}
