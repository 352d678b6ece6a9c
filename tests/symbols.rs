//! Names for every frame (issue 15): stripped binaries, separate debug files
//! (a build-ID path, a real debuginfod server and its cache), JIT perf maps,
//! a binary that exists only in a private mount namespace, and many
//! short-lived processes. Real programs, the real kernel.
//!
//! All need root; without it they fail, unless `PERF_USER_SKIP_PRIVILEGED=1`
//! asks to skip them. `debuginfod` (Debian package `debuginfod`), `node`
//! (`nodejs`), `objcopy`/`strip` (`binutils`) and `unshare` must be installed.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
use serde_json::Value;

const DEBUGINFOD_VARS: [&str; 5] = [
    "DEBUGINFOD_URLS",
    "DEBUGINFOD_CACHE_PATH",
    "DEBUGINFOD_TIMEOUT",
    "DEBUGINFOD_MAXTIME",
    "XDG_CACHE_HOME",
];

/// The stripped test program and what its debug file says about it.
struct Stripped {
    exe: PathBuf,
    debug: PathBuf,
    build_id: String,
    /// File offsets of `stripped_inner_burn`: its start and end.
    inner: std::ops::Range<u64>,
}

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds `stripped_hot.c` -O2 -g with a build ID of its own (so that no
/// debug file or cache entry of another run or test matches it), keeps its
/// debug info in `stripped_hot.debug`, and strips the binary.
fn build_stripped(dir: &Path, tag: u8) -> Stripped {
    let src = workload_source("stripped_hot.c");
    let exe = dir.join("stripped_hot");
    let debug = dir.join("stripped_hot.debug");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // 20 bytes, as a SHA-1 build ID (debuginfod indexes no other length).
    let nanos = nanos & ((1u128 << 120) - 1);
    let build_id = format!("{tag:02x}{:08x}{nanos:030x}", std::process::id());
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer"])
            .arg(format!("-Wl,--build-id=0x{build_id}"))
            .arg("-o")
            .arg(&exe)
            .arg(&src),
    );
    run_ok(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&exe)
            .arg(&debug),
    );
    run_ok(Command::new("strip").arg(&exe));

    let data = std::fs::read(&debug).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    assert_eq!(
        obj.build_id()
            .unwrap()
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        Some(build_id.clone())
    );
    let sym = obj
        .symbols()
        .find(|s| s.name() == Ok("stripped_inner_burn"))
        .expect("stripped_inner_burn in the debug file");
    // The segments' file offsets are the binary's (the debug file keeps its program headers).
    let exe_data = std::fs::read(&exe).unwrap();
    let exe_obj = object::File::parse(&*exe_data).unwrap();
    assert!(exe_obj.symbol_table().is_none(), "strip left a .symtab");
    assert!(exe_obj.section_by_name(".debug_info").is_none());
    let to_file = |vaddr: u64| {
        exe_obj
            .segments()
            .find_map(|s| {
                let (off, size) = s.file_range();
                let rel = vaddr.checked_sub(s.address())?;
                (rel < size).then_some(off + rel)
            })
            .expect("stripped_inner_burn in a loaded segment")
    };
    let start = to_file(sym.address());
    Stripped {
        exe,
        debug,
        build_id,
        inner: start..start + sym.size(),
    }
}

/// `perf-user profile --format json` with `args`, the debuginfod variables
/// removed and then `env` set; returns the document and the run.
fn profile_with_env(args: &[&str], out: &Path, env: &[(&str, &str)]) -> (Value, CmdOutput) {
    let mut cmd = perf_user(&["profile"]);
    cmd.args(args)
        .args(["--format", "json", "--output"])
        .arg(out);
    for v in DEBUGINFOD_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = Running::start(cmd).finish(PROFILER_TIMEOUT);
    let bytes = profiler_output(&run, out);
    let doc = parse_json(&bytes, &run);
    (doc, run)
}

/// Profiles the stripped program for 3 s (it runs 20 s in the background).
fn profile_stripped(s: &Stripped, dir: &Path, env: &[(&str, &str)]) -> (Value, CmdOutput, u32) {
    let mut w = Workload::spawn(&s.exe, &["20"]);
    settle();
    w.assert_running();
    let pid = w.pid();
    let (doc, run) = profile_with_env(
        &["--pid", &pid.to_string(), "--duration", "3s"],
        &dir.join("profile.json"),
        env,
    );
    (doc, run, pid)
}

/// Samples of `pid` and, of them, those whose leaf satisfies `pred`.
fn leaf_share(doc: &Value, pid: u32, pred: impl Fn(&Value) -> bool) -> (u64, u64) {
    let mut total = 0;
    let mut hit = 0;
    for s in stacks_of(doc, pid) {
        total += count(s);
        if frames(s).last().is_some_and(&pred) {
            hit += count(s);
        }
    }
    (total, hit)
}

/// Checks that the leaf of at least 90% of the program's samples is named
/// `stripped_inner_burn`.
fn assert_real_name(doc: &Value, run: &CmdOutput, pid: u32, how: &str) {
    let (total, named) = leaf_share(doc, pid, |f| f["function"] == "stripped_inner_burn");
    let ctx = format!("{}\n{}", summarize(doc, 8), run.describe());
    assert!(total >= 50, "only {total} samples\n{ctx}");
    assert!(
        named * 10 >= total * 9,
        "{how}: stripped_inner_burn is the leaf of {named} of {total} samples\n{ctx}"
    );
    eprintln!("{how}: stripped_inner_burn named in {named} of {total} samples");
}

#[test]
fn stripped_function_is_one_row() {
    if !require_privileges("stripped_function_is_one_row") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("stripped_function_is_one_row");
    let s = build_stripped(&dir, 1);
    let cache = dir.join("cache");
    let cache_s = cache.display().to_string();
    // No DEBUGINFOD_URLS: nothing may be fetched, nor cached.
    let (doc, run, pid) = profile_stripped(&s, &dir, &[("DEBUGINFOD_CACHE_PATH", &cache_s)]);
    let ctx = format!("{}\n{}", summarize(&doc, 8), run.describe());
    let expected = format!("stripped_hot+{:#x}", s.inner.start);

    // Every sample in the function, wherever it fell, is shown as its start.
    let (total, in_fn) = leaf_share(&doc, pid, |f| {
        f["module"] == "stripped_hot" && f["offset"].as_u64().is_some_and(|o| s.inner.contains(&o))
    });
    let mut offsets = std::collections::BTreeSet::new();
    for st in stacks_of(&doc, pid) {
        let leaf = frames(st).last().unwrap();
        if leaf["module"] == "stripped_hot"
            && leaf["offset"]
                .as_u64()
                .is_some_and(|o| s.inner.contains(&o))
        {
            offsets.insert(leaf["offset"].as_u64().unwrap());
            assert!(
                leaf["function"].is_null(),
                "a stripped frame got a name: {leaf}\n{ctx}"
            );
            assert_eq!(
                leaf["function_start"].as_u64(),
                Some(s.inner.start),
                "a sample in stripped_inner_burn is not shown as its start\n{ctx}"
            );
            assert_eq!(frame_name(leaf), expected);
        }
    }
    assert!(
        in_fn * 10 >= total * 9,
        "only {in_fn} of {total} samples in stripped_inner_burn\n{ctx}"
    );

    // One row of the table (the hotspots) for it, with all its samples.
    let rows: Vec<&Value> = doc["hotspots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["module"] == "stripped_hot" && h["process"] == "stripped_hot")
        .filter(|h| h["self_samples"].as_u64() > Some(0))
        .collect();
    let row = rows
        .iter()
        .find(|h| h["function"] == expected.as_str())
        .unwrap_or_else(|| panic!("no hotspot row {expected}: {rows:?}\n{ctx}"));
    assert_eq!(
        row["self_samples"].as_u64(),
        Some(in_fn),
        "the row of {expected} does not hold all its samples\n{ctx}"
    );
    assert!(
        rows.iter()
            .filter(|h| h["function"] != expected.as_str())
            .all(|h| h["self_samples"].as_u64().unwrap() * 20 < in_fn),
        "the function is split over rows: {rows:?}\n{ctx}"
    );
    eprintln!(
        "stripped: {in_fn} of {total} samples at {} different addresses, in one row {expected}",
        offsets.len()
    );

    // The report says which module had no symbols and how to get them.
    assert!(
        run.stderr.contains("no symbols for")
            && run.stderr.contains(&s.exe.display().to_string())
            && run.stderr.contains(&s.build_id)
            && run.stderr.contains("dbgsym")
            && run.stderr.contains("DEBUGINFOD_URLS"),
        "no note about the missing symbols\n{ctx}"
    );
    assert!(
        !cache.exists(),
        "a debuginfod cache was written without DEBUGINFOD_URLS"
    );
}

/// A debug file under /usr/lib/debug/.build-id, removed when dropped.
struct InstalledDebugFile(PathBuf);

impl InstalledDebugFile {
    fn install(s: &Stripped) -> Self {
        let path = Path::new("/usr/lib/debug/.build-id")
            .join(&s.build_id[..2])
            .join(format!("{}.debug", &s.build_id[2..]));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(&s.debug, &path)
            .unwrap_or_else(|e| panic!("cannot install {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for InstalledDebugFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        // The xx directory, if this test made it and left it empty.
        let _ = std::fs::remove_dir(self.0.parent().unwrap());
    }
}

#[test]
fn debug_file_by_build_id() {
    if !require_privileges("debug_file_by_build_id") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("debug_file_by_build_id");
    let s = build_stripped(&dir, 2);
    let installed = InstalledDebugFile::install(&s);
    let (doc, run, pid) = profile_stripped(&s, &dir, &[]);
    drop(installed);
    assert_real_name(&doc, &run, pid, "build-id debug file");
    assert!(
        !run.stderr.contains(&s.build_id),
        "the module is still reported without symbols\n{}",
        run.describe()
    );
}

#[test]
fn debug_file_by_debug_link() {
    if !require_privileges("debug_file_by_debug_link") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("debug_file_by_debug_link");
    let s = build_stripped(&dir, 4);
    // As distributions ship it: a .gnu_debuglink in the binary, the debug
    // file in the .debug directory next to it.
    let dot_debug = dir.join(".debug");
    std::fs::create_dir_all(&dot_debug).unwrap();
    std::fs::rename(&s.debug, dot_debug.join("stripped_hot.debug")).unwrap();
    run_ok(
        Command::new("objcopy")
            .arg("--add-gnu-debuglink")
            .arg(dot_debug.join("stripped_hot.debug"))
            .arg(&s.exe),
    );
    let (doc, run, pid) = profile_stripped(&s, &dir, &[]);
    assert_real_name(&doc, &run, pid, "debug link to .debug/");
}

/// A free TCP port on the loopback interface.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The HTTP status of `GET path` on 127.0.0.1:port, or None when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 32];
    let n = s.read(&mut head).ok()?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A debuginfod server, killed when dropped.
struct Debuginfod {
    child: std::process::Child,
    port: u16,
}

impl Debuginfod {
    /// `debuginfod -F DIR -p PORT -d DB`, once it serves `build_id`'s debuginfo.
    fn start(files: &Path, db: &Path, log: &Path, build_id: &str) -> Self {
        let port = free_port();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("debuginfod")
            .arg("-F")
            .arg(files)
            .arg("-p")
            .arg(port.to_string())
            .arg("-d")
            .arg(db)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start debuginfod (Debian package `debuginfod`): {e}")
            });
        let server = Self { child, port };
        let url = format!("/buildid/{build_id}/debuginfo");
        let start = Instant::now();
        while http_status(port, &url) != Some(200) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "debuginfod did not serve {url} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "debuginfod on port {port} served the debug file after {:.1} s",
            start.elapsed().as_secs_f64()
        );
        server
    }
}

impl Drop for Debuginfod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn debuginfod_then_its_cache() {
    if !require_privileges("debuginfod_then_its_cache") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("debuginfod_then_its_cache");
    let s = build_stripped(&dir, 3);
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::copy(&s.debug, served.join("stripped_hot.debug")).unwrap();
    let server = Debuginfod::start(
        &served,
        &dir.join("debuginfod.sqlite"),
        &dir.join("debuginfod.log"),
        &s.build_id,
    );
    let url = format!("http://127.0.0.1:{}", server.port);
    let cache = dir.join("cache");
    let cache_s = cache.display().to_string();
    let env = [
        ("DEBUGINFOD_URLS", url.as_str()),
        ("DEBUGINFOD_CACHE_PATH", cache_s.as_str()),
    ];

    let (doc, run, pid) = profile_stripped(&s, &dir, &env);
    assert_real_name(&doc, &run, pid, "debuginfod");
    let cached = cache.join(&s.build_id).join("debuginfo");
    let bytes = std::fs::read(&cached).unwrap_or_else(|e| {
        panic!(
            "no debug file in the cache at {}: {e}\n{}",
            cached.display(),
            run.describe()
        )
    });
    assert_eq!(
        bytes,
        std::fs::read(&s.debug).unwrap(),
        "the cached file is not the debug file"
    );

    // With the server gone, the cached copy names it, and nothing waits on the network.
    drop(server);
    let (doc, run, pid) = profile_stripped(&s, &dir, &env);
    assert_real_name(&doc, &run, pid, "debuginfod cache, server stopped");
    assert!(
        run.elapsed < Duration::from_secs(20),
        "a 3 s profile took {:.1} s with the server stopped\n{}",
        run.elapsed.as_secs_f64(),
        run.describe()
    );
    eprintln!(
        "server stopped: 3 s profile done in {:.1} s",
        run.elapsed.as_secs_f64()
    );
}

#[test]
fn jit_functions_from_the_perf_map() {
    if !require_privileges("jit_functions_from_the_perf_map") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("jit_functions_from_the_perf_map");
    let script = dir.join("hot.js");
    std::fs::write(
        &script,
        "function perfUserHotLoop(n) {\n\
         \x20 let a = 0;\n\
         \x20 for (let i = 0; i < n; i++) { a = (a * 31 + i) % 1000003; }\n\
         \x20 return a;\n\
         }\n\
         const end = Date.now() + 20000;\n\
         let s = 0;\n\
         while (Date.now() < end) s += perfUserHotLoop(100000);\n\
         console.log(s);\n",
    )
    .unwrap();
    let child = Command::new("node")
        .arg("--perf-basic-prof")
        // Inlined into the optimized top-level loop, the function would have
        // no frame of its own and the test would measure V8's heuristics
        // (the CI run at b03706f saw it on 17% of the stacks).
        .arg("--no-turbo-inlining")
        .arg(&script)
        // Anything node writes beside the perf map goes to the test's directory.
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node (Debian package `nodejs`): {e}"));
    let mut w = Workload {
        child,
        name: "node".into(),
    };
    let pid = w.pid();
    let map = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    // Warm up: the loop is optimized after a few calls.
    std::thread::sleep(Duration::from_millis(1500));
    w.assert_running();
    let (doc, run) = profile_with_env(
        &["--pid", &pid.to_string(), "--duration", "3s"],
        &dir.join("profile.json"),
        &[],
    );
    drop(w);
    let _ = std::fs::remove_file(&map);
    let ctx = format!("{}\n{}", summarize(&doc, 8), run.describe());
    let mut total = 0;
    let mut hot = 0;
    let (mut jit, mut jit_named) = (0, 0);
    for st in stacks_of(&doc, pid) {
        total += count(st);
        if frames(st).iter().any(|f| {
            f["function"]
                .as_str()
                .is_some_and(|n| n.contains("perfUserHotLoop"))
        }) {
            hot += count(st);
        }
        let leaf = frames(st).last().unwrap();
        if leaf["module"] == "[anon]" {
            jit += count(st);
            if leaf["function"].is_string() {
                jit_named += count(st);
            }
        }
    }
    assert!(total >= 50, "only {total} samples of node\n{ctx}");
    // Nearly all the time is spent in the (not inlined) function; JIT code
    // must be named.
    assert!(
        hot * 2 >= total,
        "perfUserHotLoop is on {hot} of {total} stacks of node\n{ctx}"
    );
    assert!(
        jit * 2 >= total && jit_named * 100 >= jit * 95,
        "{jit_named} of {jit} samples in JIT code named, of {total}\n{ctx}"
    );
    eprintln!(
        "node: perfUserHotLoop on {hot} of {total} stacks; {jit_named} of {jit} samples in JIT code named"
    );
}

/// Starts `hot` copied into a tmpfs mounted over `shown` in a private mount
/// namespace, so that it exists nowhere else; returns it once it runs there.
fn start_in_private_namespace(exe: &Path, shown: &Path, secs: &str) -> Workload {
    std::fs::create_dir_all(shown).unwrap();
    let inside = shown.join("hot_in_ns");
    let script = format!(
        "mount -t tmpfs perf-user-test {d} && cp {exe} {inside} && exec {inside} {secs}",
        d = shown.display(),
        exe = exe.display(),
        inside = inside.display(),
    );
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run unshare (util-linux)");
    let mut w = Workload {
        child,
        name: "hot_in_ns".into(),
    };
    let pid = w.pid();
    let start = Instant::now();
    loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.ends_with("hot_in_ns") {
            break;
        }
        w.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "hot_in_ns did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !inside.exists(),
        "test premise: {} must not exist outside the namespace",
        inside.display()
    );
    w
}

fn assert_hot_named(doc: &Value, run: &CmdOutput, pid: u32, how: &str) {
    let ctx = format!("{}\n{}", summarize(doc, 8), run.describe());
    let (total, named) = leaf_share(doc, pid, |f| f["function"] == "burn_cpu_hot");
    assert!(total >= 50, "{how}: only {total} samples\n{ctx}");
    assert!(
        named * 10 >= total * 9,
        "{how}: burn_cpu_hot is the leaf of {named} of {total} samples\n{ctx}"
    );
    let chain = stacks_of(doc, pid).iter().any(|s| {
        let names = frame_names(s);
        has_subsequence(
            &names,
            &[
                &|n: &str| n == "main",
                &|n: &str| n == "outer_caller",
                &|n: &str| n == "middle_caller",
                &|n: &str| n == "burn_cpu_hot",
            ],
        )
    });
    assert!(
        chain,
        "{how}: no main > outer_caller > middle_caller > burn_cpu_hot\n{ctx}"
    );
    eprintln!("{how}: burn_cpu_hot named in {named} of {total} samples");
}

/// `perf-user profile --pid PID` run as `nobody` with only the documented
/// capabilities (docs/privileges.md), from a copy of the binary that
/// `nobody` can reach.
fn profile_as_nobody(pid: u32, dir: &Path) -> (Value, CmdOutput) {
    use std::os::unix::fs::PermissionsExt as _;
    let world = std::env::temp_dir().join(format!("perf-user-symbols-{}", std::process::id()));
    std::fs::create_dir_all(&world).unwrap();
    std::fs::set_permissions(&world, std::fs::Permissions::from_mode(0o777)).unwrap();
    let exe = world.join("perf-user");
    std::fs::copy(PERF_USER, &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = world.join("nobody.json");
    let caps = "-all,+bpf,+perfmon,+sys_ptrace,+dac_read_search,+syslog";
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .arg(&exe)
        .args(["profile", "--pid", &pid.to_string(), "--duration", "3s"])
        .args(["--format", "json", "--output"])
        .arg(&out);
    for v in DEBUGINFOD_VARS {
        cmd.env_remove(v);
    }
    let run = Running::start(cmd).finish(PROFILER_TIMEOUT);
    let bytes = profiler_output(&run, &out);
    let doc = parse_json(&bytes, &run);
    let _ = std::fs::copy(&out, dir.join("nobody.json"));
    let _ = std::fs::remove_dir_all(&world);
    (doc, run)
}

#[test]
fn binary_only_in_a_private_mount_namespace() {
    if !require_privileges("binary_only_in_a_private_mount_namespace") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("binary_only_in_a_private_mount_namespace");
    let exe = compile_c("hot", &dir);
    let shown = dir.join("ns");

    // Alive at report time: read through /proc/PID/root.
    let w = start_in_private_namespace(&exe, &shown, "20");
    let pid = w.pid();
    let (doc, run) = profile_with_env(
        &["--pid", &pid.to_string(), "--duration", "3s"],
        &dir.join("alive.json"),
        &[],
    );
    drop(w);
    assert_hot_named(&doc, &run, pid, "live process in a private mount namespace");

    // The same as an unprivileged user with only the documented
    // capabilities (no CAP_SYS_ADMIN, which /proc/PID/map_files would need).
    let w = start_in_private_namespace(&exe, &shown, "20");
    let pid = w.pid();
    let (doc, run) = profile_as_nobody(pid, &dir);
    drop(w);
    assert_hot_named(
        &doc,
        &run,
        pid,
        "as nobody with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH, CAP_SYSLOG",
    );

    // Gone (and its namespace with it) before the report: the file opened
    // when its maps were read still names it.
    let mut w = start_in_private_namespace(&exe, &shown, "2");
    let pid = w.pid();
    let (doc, run) = profile_with_env(
        &["--pid", &pid.to_string(), "--duration", "8s"],
        &dir.join("exited.json"),
        &[],
    );
    assert!(
        w.child.try_wait().unwrap().is_some(),
        "test premise: hot_in_ns should have exited before the report"
    );
    assert_hot_named(
        &doc,
        &run,
        pid,
        "process and namespace gone before the report",
    );
}

#[test]
fn short_lived_processes_are_named() {
    if !require_privileges("short_lived_processes_are_named") {
        return;
    }
    let _lock = exclusive();
    let dir = test_dir("short_lived_processes_are_named");
    let exe = compile_c("short_burn", &dir);
    let out = dir.join("profile.json");
    // The whole host, as the issue measured it.
    let profiler = start_profiler(&["--duration", "60s", "--format", "json"], &out);
    assert!(
        wait_for_perf_events(profiler.child.id(), Duration::from_secs(10)),
        "the profiler did not attach\n{}",
        profiler.finish(PROFILER_TIMEOUT).describe()
    );
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    for i in 0..200 {
        let status = Command::new(&exe)
            .arg("35")
            .status()
            .unwrap_or_else(|e| panic!("cannot run short_burn #{i}: {e}"));
        assert!(status.success(), "short_burn #{i}: {status}");
    }
    let ran = started.elapsed();
    // Ctrl-C ends sampling early and still writes the report.
    // SAFETY: kill with a valid signal on our own child has no memory effects.
    unsafe {
        libc::kill(profiler.child.id() as i32, libc::SIGINT);
    }
    let run = profiler.finish(PROFILER_TIMEOUT);
    let bytes = profiler_output(&run, &out);
    let doc = parse_json(&bytes, &run);

    let mut total = 0;
    let mut named = 0;
    let mut unnamed: std::collections::BTreeMap<String, u64> = Default::default();
    for s in stacks(&doc) {
        if s["thread"] != "short_burn" {
            continue;
        }
        total += count(s);
        let names = frame_names(s);
        // Garbage return addresses (outside any code) are cut from stacks
        // with what follows; a stack through main must still reach libc's
        // caller of main, named: the frame the issue saw as [unknown]+0x7f...
        let reaches_libc = !names.iter().any(|n| n == "main")
            || names.first().map(String::as_str) == Some("__libc_start_call_main");
        if reaches_libc && frames(s).iter().all(|f| f["function"].is_string()) {
            named += count(s);
        } else {
            *unnamed.entry(frame_names(s).join(" ; ")).or_default() += count(s);
        }
    }
    let mut worst: Vec<_> = unnamed.into_iter().collect();
    worst.sort_by_key(|w| std::cmp::Reverse(w.1));
    let listing: String = worst
        .iter()
        .take(10)
        .map(|(s, n)| format!("  {n} {s}\n"))
        .collect();
    assert!(
        total >= 200,
        "only {total} samples of 200 processes of 35 ms of CPU\n{}",
        run.describe()
    );
    let pct = 100.0 * named as f64 / total as f64;
    eprintln!(
        "short-lived: 200 processes in {:.1} s, {named} of {total} samples fully named ({pct:.2}%)\n{listing}",
        ran.as_secs_f64()
    );
    assert!(
        named * 100 >= total * 99,
        "only {pct:.2}% of the short processes' samples are fully named; unnamed stacks:\n{listing}"
    );
}
