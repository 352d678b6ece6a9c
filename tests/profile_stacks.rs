//! `perf-user profile` on programs built without frame pointers (issue 13):
//! with the default `--unwind auto` the stacks are whole, checked against
//! `perf record --call-graph dwarf` (Debian linux-perf) on the same run, and
//! exact on a known chain.

mod common;

use std::{
    collections::HashMap,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::*;
use object::{Object as _, ObjectSymbol as _};
use serde_json::Value;

/// Names both sides agree on: the function symbols of each module's ELF
/// symbol tables, aliases at one address folded into one name. Other names
/// (perf's `[unknown]`, a name blazesym takes from a neighbouring symbol or
/// the symbol table) become `?`: this compares the walks, not symbolizers.
struct Names {
    /// file name -> path, from the process's maps (our report names
    /// modules by file name, perf by path)
    paths: HashMap<String, String>,
    /// file name -> (symbol name -> canonical name at its address)
    modules: HashMap<String, HashMap<String, String>>,
}

impl Names {
    fn of_process(pid: u32) -> Self {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let paths = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| p.starts_with('/'))
            .map(|p| (p.rsplit('/').next().unwrap().to_string(), p.to_string()))
            .collect();
        Self {
            paths,
            modules: HashMap::new(),
        }
    }

    fn canonical(&mut self, module: &str, function: Option<&str>) -> String {
        let short = module.rsplit('/').next().unwrap_or(module).to_string();
        let path = self.paths.get(&short).cloned().unwrap_or_default();
        let table = self.modules.entry(short.clone()).or_insert_with(|| {
            let mut by_addr: HashMap<u64, Vec<String>> = HashMap::new();
            let mut files = vec![std::path::PathBuf::from(&path)];
            // Its debug file too (libc6-dbg, installed for the tests): both
            // sides read it.
            if let Ok(data) = std::fs::read(&path)
                && let Ok(file) = object::File::parse(&*data)
                && let Ok(Some(id)) = file.build_id()
                && !id.is_empty()
            {
                let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
                files.push(
                    format!("/usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..]).into(),
                );
            }
            for f in files {
                let Ok(data) = std::fs::read(&f) else {
                    continue;
                };
                let Ok(file) = object::File::parse(&*data) else {
                    continue;
                };
                for sym in file.dynamic_symbols().chain(file.symbols()) {
                    if sym.kind() == object::SymbolKind::Text
                        && sym.address() != 0
                        && let Ok(name) = sym.name()
                    {
                        by_addr
                            .entry(sym.address())
                            .or_default()
                            .push(name.split('@').next().unwrap_or(name).to_string());
                    }
                }
            }
            let mut out = HashMap::new();
            for names in by_addr.values() {
                let canon = names.iter().min().unwrap().clone();
                for n in names {
                    out.insert(n.clone(), canon.clone());
                }
            }
            out
        });
        let name = function
            .map(|f| f.split('@').next().unwrap_or(f))
            .and_then(|f| match f {
                // The entry point: both name it from the ELF header when no
                // symbol does.
                "_start" => Some("_start"),
                f => table.get(f).map(String::as_str),
            })
            .unwrap_or("?");
        format!("{short}:{name}")
    }
}

/// User stacks (root first) of `doc` for `pid`, with their counts, without
/// inlined frames (those that repeat the address of the frame before: the
/// report shows a function inlined at an address after the one it is in).
fn our_stacks(doc: &Value, pid: u32, names: &mut Names) -> Vec<(Vec<String>, u64)> {
    stacks_of(doc, pid)
        .into_iter()
        .map(|s| {
            let user: Vec<&Value> = frames(s)
                .iter()
                .filter(|f| !f["kernel"].as_bool().unwrap_or(false))
                .collect();
            let frames = user
                .iter()
                .enumerate()
                .filter(|(i, f)| *i == 0 || user[i - 1]["address"] != f["address"])
                .map(|(_, f)| *f)
                .map(|f| {
                    names.canonical(f["module"].as_str().unwrap_or("?"), f["function"].as_str())
                })
                .collect();
            (frames, count(s))
        })
        .collect()
}

/// User stacks (root first) of `perf script` output, one per sample.
fn perf_stacks(script: &str, names: &mut Names) -> Vec<(Vec<String>, u64)> {
    let mut out = Vec::new();
    for block in script.split("\n\n") {
        let mut frames: Vec<String> = Vec::new();
        for line in block.lines() {
            // "\t   addr sym+off (dso)" or "\t addr [unknown] (dso)"
            let line = line.trim();
            let Some((head, dso)) = line.rsplit_once(" (") else {
                continue;
            };
            let dso = dso.trim_end_matches(')');
            if dso.starts_with("[kernel") || dso.starts_with("[unknown]") && head.is_empty() {
                continue;
            }
            let Some((_, sym)) = head.split_once(' ') else {
                continue;
            };
            if dso == "[kernel.kallsyms]" {
                continue;
            }
            frames.push(names.canonical(dso, Some(sym.trim())));
        }
        if !frames.is_empty() {
            frames.reverse();
            out.push((frames, 1));
        }
    }
    out
}

fn reaches_start(frames: &[String]) -> bool {
    frames
        .first()
        .is_some_and(|f| f.ends_with(":_start") || f.ends_with(":clone") || f.ends_with(":clone3"))
}

/// (samples, share reaching _start, median depth) of weighted stacks.
fn figures(stacks: &[(Vec<String>, u64)]) -> (u64, f64, usize) {
    let total: u64 = stacks.iter().map(|(_, n)| n).sum();
    let start: u64 = stacks
        .iter()
        .filter(|(f, _)| reaches_start(f))
        .map(|(_, n)| n)
        .sum();
    let mut depths: Vec<(usize, u64)> = stacks.iter().map(|(f, n)| (f.len(), *n)).collect();
    depths.sort();
    let mut seen = 0;
    let mut median = 0;
    for (d, n) in depths {
        seen += n;
        if seen * 2 >= total {
            median = d;
            break;
        }
    }
    (total, start as f64 / total.max(1) as f64, median)
}

/// Share of sample weight with the same folded stack on both sides:
/// the sum over stacks of the smaller of its two shares.
fn overlap(a: &[(Vec<String>, u64)], b: &[(Vec<String>, u64)]) -> f64 {
    fn shares(s: &[(Vec<String>, u64)]) -> HashMap<String, f64> {
        let total: u64 = s.iter().map(|(_, n)| n).sum();
        let mut out = HashMap::new();
        for (f, n) in s {
            *out.entry(f.join(";")).or_insert(0.0) += *n as f64 / total.max(1) as f64;
        }
        out
    }
    let (a, b) = (shares(a), shares(b));
    a.iter()
        .map(|(k, x)| x.min(*b.get(k).unwrap_or(&0.0)))
        .sum()
}

#[test]
fn debian_python3_profile_matches_perf_dwarf() {
    if !require_privileges("debian_python3_profile_matches_perf_dwarf") {
        return;
    }
    let _x = exclusive();
    let dir = test_dir("profile_stacks_python");
    let script = dir.join("loop.py");
    std::fs::write(&script, PYTHON_LOOP).unwrap();
    // Debian's own interpreter, not one on PATH (pyenv builds keep frame pointers).
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.exists(),
        "/usr/bin/python3 is missing: install Debian's python3"
    );
    let child = Workload::spawn(python, &[&script]);
    let pid = child.pid();
    thread::sleep(Duration::from_millis(500));
    let out = dir.join("profile.json");
    let pid_s = pid.to_string();
    let ours = start_profiler(
        &[
            "--pid",
            &pid_s,
            "--duration",
            "11s",
            "--frequency",
            "999",
            "--format",
            "json",
        ],
        &out,
    );
    let perf_data = dir.join("perf.data");
    let perf = Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "999",
            "--call-graph",
            "dwarf,16384",
            "-p",
            &pid_s,
            "-o",
        ])
        .arg(&perf_data)
        .args(["--", "sleep", "10"])
        .stdout(Stdio::null())
        .status()
        .expect("perf missing: install Debian's linux-perf");
    assert!(perf.success(), "perf record failed");
    let run = ours.finish(PROFILER_TIMEOUT);
    let doc = parse_json(&profiler_output(&run, &out), &run);
    let script_out = Command::new("perf")
        .args(["script", "--no-inline", "-F", "ip,sym,dso", "-i"])
        .arg(&perf_data)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(script_out.status.success(), "perf script failed");
    let mut names = Names::of_process(pid);
    let theirs = perf_stacks(&String::from_utf8_lossy(&script_out.stdout), &mut names);
    let ours = our_stacks(&doc, pid, &mut names);
    let (n_ours, start_ours, median_ours) = figures(&ours);
    let (n_perf, start_perf, median_perf) = figures(&theirs);
    let same = overlap(&ours, &theirs);
    // The noise floor: perf's samples split in two halves against each other.
    let (odd, even): (Vec<_>, Vec<_>) = theirs
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 1);
    let strip =
        |v: Vec<(usize, (Vec<String>, u64))>| v.into_iter().map(|(_, s)| s).collect::<Vec<_>>();
    let floor = overlap(&strip(odd), &strip(even));
    eprintln!(
        "perf's two halves of its own samples share {:.1}% of the weight",
        floor * 100.0
    );
    for (what, s) in [("perf-user", &ours), ("perf", &theirs)] {
        if let Some((f, n)) = s.iter().max_by_key(|(_, n)| *n) {
            eprintln!("{what}'s first stack ({n}): {}", f.join(";"));
        }
    }
    eprintln!(
        "perf-user: {n_ours} samples, {:.1}% reach _start, median user depth {median_ours}; \
         perf --call-graph dwarf: {n_perf} samples, {:.1}% reach _start, median {median_perf}; \
         same folded stack: {:.1}% of the weight; unwind {}",
        start_ours * 100.0,
        start_perf * 100.0,
        same * 100.0,
        doc["unwind"]
    );
    assert!(n_ours > 100 && n_perf > 100, "too few samples");
    assert!(
        start_ours >= 0.95,
        "{:.1}% of samples reach _start",
        start_ours * 100.0
    );
    assert!(
        median_ours >= median_perf,
        "median depth {median_ours} < perf's {median_perf}"
    );
    // 90% as the issue asks, unless sampling noise alone keeps perf from
    // agreeing that well with itself (a few thousand samples over dozens of
    // distinct stacks): then at least as well as perf agrees with itself.
    assert!(
        same >= 0.90 || same >= floor,
        "only {:.1}% of the weight has perf's folded stack (perf against itself: {:.1}%)",
        same * 100.0,
        floor * 100.0
    );
}

#[test]
fn profile_walks_an_exact_chain_without_frame_pointers() {
    if !require_privileges("profile_walks_an_exact_chain_without_frame_pointers") {
        return;
    }
    let _x = exclusive();
    let dir = test_dir("profile_stacks_chain");
    let exe = compile_c_with("deep_chain", &dir, NO_FRAME_POINTERS);
    let child = Workload::spawn::<&str>(&exe, &[]);
    let pid = child.pid();
    thread::sleep(Duration::from_millis(300));
    let out = dir.join("profile.json");
    let (doc, _run) = profile_json(&["--pid", &pid.to_string(), "--duration", "3s"], &out);
    let ours: Vec<(Vec<String>, u64)> = stacks_of(&doc, pid)
        .into_iter()
        .map(|s| {
            let names = frames(s)
                .iter()
                .filter(|f| f["module"] == "deep_chain")
                .map(|f| f["function"].as_str().unwrap_or("?").to_string())
                .collect();
            (names, count(s))
        })
        .collect();
    let top = ours.iter().max_by_key(|(_, n)| *n).expect("no stacks");
    let names: Vec<&str> = top.0.iter().map(String::as_str).collect();
    let mut expected = vec!["_start".to_string(), "main".to_string()];
    expected.extend((0..60).map(|i| format!("f{i}")));
    expected.extend(std::iter::repeat_n("recurse".to_string(), 201));
    expected.push("burn".to_string());
    assert_eq!(names, expected, "the hottest stack: {:?}", top.0);
    let complete = ours
        .iter()
        .filter(|(f, _)| f.first().is_some_and(|n| n == "_start"));
    let start = complete.map(|(_, n)| n).sum::<u64>() as f64;
    let total: u64 = ours.iter().map(|(_, n)| n).sum();
    let start = start / total.max(1) as f64;
    assert!(
        start >= 0.95,
        "{:.1}% of {total} samples reach _start",
        start * 100.0
    );
}

#[test]
fn inlined_functions_are_frames_with_their_lines_as_perf_shows_them() {
    if !require_privileges("inlined_functions_are_frames_with_their_lines_as_perf_shows_them") {
        return;
    }
    let _x = exclusive();
    let dir = test_dir("profile_stacks_inlined");
    let exe = compile_c_with("inlined", &dir, &["-O2", "-g"]);
    let src = workload_source("inlined.c");
    let text = std::fs::read_to_string(&src).unwrap();
    let line_of = |marker: &str| {
        text.lines()
            .position(|l| l.contains(marker))
            .map(|i| i as u64 + 1)
            .unwrap()
    };
    let child = Workload::spawn::<&str>(&exe, &[]);
    let pid = child.pid();
    thread::sleep(Duration::from_millis(200));
    let pid_s = pid.to_string();
    let perf_data = dir.join("perf.data");
    let perf = Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "999",
            "--call-graph",
            "dwarf",
            "-p",
            &pid_s,
            "-o",
        ])
        .arg(&perf_data)
        .args(["--", "sleep", "1"])
        .stdout(Stdio::null())
        .status()
        .expect("perf missing: install Debian's linux-perf");
    assert!(perf.success(), "perf record failed");
    let out = dir.join("profile.json");
    let (doc, _run) = profile_json(&["--pid", &pid_s, "--duration", "2s"], &out);
    // Ours: the hottest stack's frames from main on, with their lines.
    let top = stacks_of(&doc, pid)
        .into_iter()
        .max_by_key(|s| count(s))
        .expect("no stacks");
    let ours: Vec<(String, u64)> = frames(top)
        .iter()
        .skip_while(|f| f["function"] != "main")
        .map(|f| {
            (
                f["function"].as_str().unwrap_or("?").to_string(),
                f["line"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let expected = vec![
        ("main".to_string(), line_of("LINE:main")),
        ("outer_work".to_string(), line_of("LINE:call")),
        ("mix_inlined".to_string(), line_of("LINE:loop")),
    ];
    assert_eq!(ours, expected, "perf-user's hottest stack from main on");
    // perf's, from the same program: the same three frames, the leaf marked
    // inlined.
    let script = Command::new("perf")
        .args(["script", "-F", "ip,sym,dso", "-i"])
        .arg(&perf_data)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let script = String::from_utf8_lossy(&script.stdout);
    let first = script
        .split("\n\n")
        .find(|b| b.contains("mix_inlined"))
        .expect("perf has no sample in mix_inlined");
    let theirs: Vec<&str> = first
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .take(3)
        .collect();
    assert_eq!(
        theirs,
        ["mix_inlined", "outer_work", "main"],
        "perf's stack:\n{first}"
    );
    assert!(
        first.contains("mix_inlined (inlined)"),
        "perf's stack:\n{first}"
    );
}
