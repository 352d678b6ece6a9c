//! The catalogue of bad inputs: what a user or a hostile local process can
//! send to `perf-user` (command-line values, configuration files, programs
//! that are not ELF, PIDs that vanish, HTTP requests to the daemon), each
//! with what must come back. Every case runs the real binary: a bad input
//! gives one clear error naming the cause (or is ignored), never a panic, and
//! the daemon keeps answering /metrics after each request.
//!
//! The table is [`catalogue`]; this target has its own `main` (no libtest
//! harness) so that it can print one line per case and the table's size.
//! Arguments: an optional substring of case names to run; libtest flags
//! (`--test-threads=1`, `--nocapture`) are accepted and ignored.
//!
//! Cases that reach the kernel (attaching, the daemon) need root; without
//! it they fail, unless `PERF_USER_SKIP_PRIVILEGED=1` skips them.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// How a case sends its input.
enum Input {
    /// `perf-user ARGS`; see [`Fixtures::expand`] for the `{...}` placeholders.
    Cli(&'static [&'static str]),
    /// `perf-user run --check-config --config FILE`, FILE holding these bytes.
    Config(fn() -> Vec<u8>),
    /// `perf-user advise --config FILE`: `advise` loads the rules as the
    /// daemon does, and must refuse the same files.
    AdviseConfig(fn() -> Vec<u8>),
    /// `perf-user run --check-config --web.config.file FILE`, FILE holding
    /// this text, beside a server certificate and key (`server.crt`,
    /// `server.key`) made with openssl.
    WebConfig(fn() -> Vec<u8>),
    /// These bytes, raw, to the daemon's port on loopback.
    Http(fn() -> Vec<u8>),
    /// A scenario of its own (processes that exit during attach, slow
    /// clients); returns what the binary said.
    Scenario(fn(&mut Fixtures) -> Outcome),
}

/// What must come back.
enum Expect {
    /// Exit code `code` and one `error:` line containing every phrase.
    Error(i32, &'static [&'static str]),
    /// Accepted (the input is harmless and ignored): exit 0, stdout or
    /// stderr containing every phrase.
    Ignored(&'static [&'static str]),
    /// Either of the above: for races (a process exiting while we attach),
    /// both ends are right as long as the error names the cause.
    ErrorOrIgnored(&'static [&'static str], &'static [&'static str]),
    /// An HTTP response with one of these statuses, or [`NO_RESPONSE`]
    /// (the connection closed unanswered); the daemon then still answers
    /// /metrics.
    Status(&'static [u16]),
    /// Exit code 2 and the usage text (no command at all).
    Usage,
}

struct Case {
    name: &'static str,
    input: Input,
    expect: Expect,
}

/// What a scenario observed.
enum Outcome {
    Exit(CmdOutput),
    Http(Option<u16>, String),
}

const fn cli(name: &'static str, args: &'static [&'static str], expect: Expect) -> Case {
    Case {
        name,
        input: Input::Cli(args),
        expect,
    }
}

const fn config(name: &'static str, text: fn() -> Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        input: Input::Config(text),
        expect,
    }
}

const fn web_config(name: &'static str, text: fn() -> Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        input: Input::WebConfig(text),
        expect,
    }
}

const fn advise_config(name: &'static str, text: fn() -> Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        input: Input::AdviseConfig(text),
        expect,
    }
}

/// A rule matching a label its signal does not carry (TCP series are per
/// `side` and `port`, in the daemon and `advise` alike).
fn rule_on_a_missing_label() -> Vec<u8> {
    b"[[alerts.rules]]\nname = \"R\"\nkind = \"threshold\"\nsignal = \"tcp_rtt_p99_seconds\"\nabove = 0.1\nmatch = { peer = \"10.0.0.2\" }\n".to_vec()
}

const fn http(name: &'static str, request: fn() -> Vec<u8>, statuses: &'static [u16]) -> Case {
    Case {
        name,
        input: Input::Http(request),
        expect: Expect::Status(statuses),
    }
}

/// A GET of `target` with `headers`, closing the connection after.
fn get(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n")
        .into_bytes()
}

/// In an [`Expect::Status`] list: the connection closed without a response.
const NO_RESPONSE: u16 = 0;

/// clap's message for a value that does not parse (exit code 2).
const INVALID: &[&str] = &["invalid value"];
/// clap's message for a value that looks like a flag (a negative number).
const UNEXPECTED: &[&str] = &["unexpected argument"];

fn catalogue() -> Vec<Case> {
    use Expect::*;
    vec![
        // --- the command line, every command -------------------------------
        cli("no command", &[], Usage),
        cli(
            "unknown command",
            &["frobnicate"],
            Error(2, &["unrecognized subcommand"]),
        ),
        cli(
            "unknown flag",
            &["profile", "--frobnicate"],
            Error(2, &["--frobnicate"]),
        ),
        cli(
            "profile duration 0",
            &["profile", "-d", "0s"],
            Error(2, &["invalid duration", "positive"]),
        ),
        cli(
            "profile duration negative",
            &["profile", "-d", "-5s"],
            Error(2, UNEXPECTED),
        ),
        cli(
            "profile duration no number",
            &["profile", "-d", "s"],
            Error(2, &["invalid duration"]),
        ),
        cli(
            "profile duration unknown unit",
            &["profile", "-d", "10y"],
            Error(2, &["unknown unit"]),
        ),
        cli(
            "profile duration huge",
            &["profile", "-d", "999999999999h"],
            Error(2, &["invalid duration"]),
        ),
        cli(
            "profile duration NaN",
            &["profile", "-d", "NaN"],
            Error(2, &["positive and finite"]),
        ),
        cli(
            "profile duration infinite",
            &["profile", "-d", "inf"],
            Error(2, &["positive and finite"]),
        ),
        cli(
            "profile duration 1e300",
            &["profile", "-d", "1e300"],
            Error(2, &["positive and finite"]),
        ),
        cli(
            "profile duration empty",
            &["profile", "-d", ""],
            Error(2, &["empty"]),
        ),
        cli(
            "profile frequency 0",
            &["profile", "-F", "0", "-d", "1s"],
            Error(1, &["0 Hz is out of range"]),
        ),
        cli(
            "profile frequency huge",
            &["profile", "-F", "100000", "-d", "1s"],
            Error(1, &["100000 Hz is out of range"]),
        ),
        cli(
            "profile frequency u64 max",
            &["profile", "-F", "18446744073709551615", "-d", "1s"],
            Error(1, &["out of range"]),
        ),
        cli(
            "profile frequency overflow",
            &["profile", "-F", "18446744073709551616"],
            Error(2, INVALID),
        ),
        cli(
            "profile frequency negative",
            &["profile", "-F", "-1"],
            Error(2, UNEXPECTED),
        ),
        cli(
            "profile frequency not a number",
            &["profile", "-F", "fast"],
            Error(2, INVALID),
        ),
        cli(
            "profile pid 0",
            &["profile", "-p", "0", "-d", "1s"],
            Error(1, &["no process with PID 0"]),
        ),
        cli(
            "profile pid negative",
            &["profile", "-p", "-1"],
            Error(2, UNEXPECTED),
        ),
        cli(
            "profile pid above u32",
            &["profile", "-p", "99999999999"],
            Error(2, &["not in 0..=4294967295"]),
        ),
        cli(
            "profile pid u32 max",
            &["profile", "-p", "4294967295", "-d", "1s"],
            Error(1, &["no process with PID 4294967295"]),
        ),
        cli(
            "profile pid exited",
            &["profile", "-p", "{gone}", "-d", "1s"],
            Error(1, &["no process with PID", "exited"]),
        ),
        cli(
            "profile pid not a number",
            &["profile", "-p", "self"],
            Error(2, INVALID),
        ),
        cli(
            "profile format unknown",
            &["profile", "-f", "xml"],
            Error(2, &["invalid value 'xml'", "possible values"]),
        ),
        cli(
            "profile stacks unknown",
            &["profile", "--stacks", "all"],
            Error(2, &["possible values"]),
        ),
        cli(
            "profile top negative",
            &["profile", "-n", "-1"],
            Error(2, UNEXPECTED),
        ),
        cli(
            "profile output in a missing directory",
            &["profile", "-d", "1s", "-o", "{dir}/missing/out.txt"],
            Error(
                1,
                &["cannot create output file", "No such file or directory"],
            ),
        ),
        cli(
            "profile output is a directory",
            &["profile", "-d", "1s", "-o", "{dir}"],
            Error(1, &["cannot create output file", "Is a directory"]),
        ),
        cli(
            "profile duration twice",
            &["profile", "-d", "1s", "-d", "2s"],
            Error(2, &["cannot be used multiple times"]),
        ),
        cli(
            "latency port above u16",
            &["latency", "--port", "70000"],
            Error(2, &["not in 0..=65535"]),
        ),
        cli(
            "latency port negative",
            &["latency", "--port", "-1"],
            Error(2, UNEXPECTED),
        ),
        cli(
            "latency port not a number",
            &["latency", "--port", "http"],
            Error(2, INVALID),
        ),
        cli(
            "latency format unknown",
            &["latency", "-f", "svg"],
            Error(2, &["possible values: table, json"]),
        ),
        cli(
            "latency tracepoints unknown",
            &["latency", "--tracepoints", "kprobe"],
            Error(2, &["possible values: auto, btf, classic"]),
        ),
        cli(
            "latency device unknown",
            &["latency", "--block", "--device", "nosuchdisk", "-d", "1s"],
            Error(1, &["no block device named \"nosuchdisk\""]),
        ),
        cli(
            "latency device path traversal",
            &["latency", "--block", "--device", "../../../etc", "-d", "1s"],
            Error(1, &["no block device named \"../../../etc\""]),
        ),
        cli(
            "latency device empty",
            &["latency", "--block", "--device", "", "-d", "1s"],
            Error(1, &["no block device named \"\""]),
        ),
        cli(
            "latency output in a missing directory",
            &["latency", "-d", "1s", "-o", "{dir}/missing/out.json"],
            Error(1, &["cannot create output file"]),
        ),
        cli(
            "latency duration 0",
            &["latency", "-d", "0"],
            Error(2, &["invalid duration"]),
        ),
        cli(
            "leaks without a target",
            &["leaks"],
            Error(2, &["--pid <PID>|COMMAND"]),
        ),
        cli(
            "leaks pid and command both",
            &["leaks", "--pid", "1", "--", "true"],
            Error(2, &["cannot be used with"]),
        ),
        cli(
            "leaks pid 0",
            &["leaks", "--pid", "0"],
            Error(1, &["no process with PID 0"]),
        ),
        cli(
            "leaks pid exited",
            &["leaks", "--pid", "{gone}"],
            Error(1, &["no process with PID", "exited"]),
        ),
        cli(
            "leaks pid zombie",
            &["leaks", "--pid", "{zombie}", "-d", "1s"],
            Error(1, &["exited"]),
        ),
        cli(
            "leaks pid negative",
            &["leaks", "--pid", "-5"],
            Error(2, UNEXPECTED),
        ),
        cli(
            "leaks sample 0",
            &["leaks", "--sample", "0", "--pid", "{sleeper}"],
            Error(1, &["--sample must be at least 1"]),
        ),
        cli(
            "leaks sample above u32",
            &["leaks", "--sample", "4294967296", "--pid", "{sleeper}"],
            Error(2, INVALID),
        ),
        cli(
            "leaks max-allocations 0",
            &[
                "leaks",
                "--max-allocations",
                "0",
                "--pid",
                "{sleeper}",
                "-d",
                "1s",
            ],
            Error(
                2,
                &["--max-allocations must be from 1 to 16777216 (16 Mi), not 0"],
            ),
        ),
        cli(
            "leaks max-allocations u32 max",
            &[
                "leaks",
                "--max-allocations",
                "4294967295",
                "--pid",
                "{sleeper}",
            ],
            Error(
                2,
                &[
                    "'--max-allocations <N>'",
                    "must be from 1 to 16777216 (16 Mi), not 4294967295",
                ],
            ),
        ),
        cli(
            "leaks max-allocations 16 Mi + 1",
            &[
                "leaks",
                "--max-allocations",
                "16777217",
                "--pid",
                "{sleeper}",
            ],
            Error(2, &["not 16777217"]),
        ),
        cli(
            "leaks max-allocations 16 Mi is accepted",
            &[
                "leaks",
                "--max-allocations",
                "16777216",
                "-d",
                "1s",
                "--",
                "{sleep}",
                "5",
            ],
            Ignored(&["Outstanding allocations"]),
        ),
        cli(
            "leaks interval 0",
            &["leaks", "-i", "0s", "--", "true"],
            Error(2, &["invalid duration"]),
        ),
        cli(
            "leaks min-age garbage",
            &["leaks", "--min-age", "old", "--", "true"],
            Error(2, &["invalid duration"]),
        ),
        cli(
            "leaks format unknown",
            &["leaks", "-f", "svg", "--", "true"],
            Error(2, &["possible values"]),
        ),
        cli(
            "leaks output in a missing directory",
            &[
                "leaks",
                "-o",
                "{dir}/missing/leaks.txt",
                "-d",
                "1s",
                "--",
                "{sleep}",
                "5",
            ],
            Error(1, &["cannot create output file"]),
        ),
        cli(
            "leaks command missing",
            &["leaks", "--", "{dir}/no-such-program"],
            Error(1, &["cannot run", "No such file or directory"]),
        ),
        cli(
            "leaks command not in PATH",
            &["leaks", "--", "no-such-program-xyz"],
            Error(1, &["no-such-program-xyz"]),
        ),
        cli(
            "leaks command empty",
            &["leaks", "--", ""],
            Error(1, &["no command given"]),
        ),
        cli(
            "leaks command not ELF",
            &["leaks", "--", "{dir}/notelf"],
            Error(1, &["neither an ELF executable nor a #! script"]),
        ),
        cli(
            "leaks command empty file",
            &["leaks", "--", "{dir}/empty"],
            Error(1, &["neither an ELF executable nor a #! script"]),
        ),
        cli(
            "leaks command ELF magic only",
            &["leaks", "--", "{dir}/elfmagic"],
            Error(1, &["not a 64-bit ELF file"]),
        ),
        cli(
            "leaks command truncated ELF",
            &["leaks", "--", "{dir}/truncated"],
            Error(1, &["not a 64-bit ELF file"]),
        ),
        cli(
            "leaks command ELF header only",
            &["leaks", "--", "{dir}/header-only"],
            Error(1, &["not a 64-bit ELF file"]),
        ),
        cli(
            "leaks command ELF without malloc",
            &["leaks", "-d", "2s", "--", "{dir}/nomalloc"],
            Error(1, &["defines no malloc and free"]),
        ),
        cli(
            "leaks command #! to a missing interpreter",
            &["leaks", "--", "{dir}/bad-shebang"],
            Error(
                1,
                &["/nonexistent/interpreter", "No such file or directory"],
            ),
        ),
        cli(
            "leaks command #! loop",
            &["leaks", "--", "{dir}/shebang-loop"],
            Error(1, &["too many levels of #!"]),
        ),
        cli(
            "leaks command is a directory",
            &["leaks", "--", "{dir}"],
            Error(1, &["not a regular file"]),
        ),
        cli(
            "leaks command is a FIFO",
            &["leaks", "--", "{dir}/fifo"],
            Error(1, &["not a regular file"]),
        ),
        cli(
            "leaks command is /dev/zero",
            &["leaks", "--", "/dev/zero"],
            Error(1, &["not a regular file"]),
        ),
        cli(
            "leaks allocator missing",
            &[
                "leaks",
                "--allocator",
                "{dir}/missing.so",
                "--pid",
                "{sleeper}",
            ],
            Error(1, &["cannot read", "No such file or directory"]),
        ),
        cli(
            "leaks allocator not ELF",
            &["leaks", "--allocator", "{dir}/notelf", "--pid", "{sleeper}"],
            Error(1, &["not a 64-bit ELF file"]),
        ),
        cli(
            "leaks allocator truncated ELF",
            &[
                "leaks",
                "--allocator",
                "{dir}/truncated",
                "--pid",
                "{sleeper}",
            ],
            Error(1, &["not a 64-bit ELF file"]),
        ),
        cli(
            "leaks allocator without malloc",
            &[
                "leaks",
                "--allocator",
                "{dir}/nomalloc",
                "--pid",
                "{sleeper}",
            ],
            Error(1, &["defines no malloc"]),
        ),
        cli(
            "leaks allocator is /dev/zero",
            &["leaks", "--allocator", "/dev/zero", "--pid", "{sleeper}"],
            Error(1, &["not a regular file"]),
        ),
        cli(
            "leaks allocator is a FIFO",
            &["leaks", "--allocator", "{dir}/fifo", "--pid", "{sleeper}"],
            Error(1, &["not a regular file"]),
        ),
        cli(
            "run listen port above u16",
            &["run", "--listen", "127.0.0.1:99999"],
            Error(2, &["invalid socket address"]),
        ),
        cli(
            "run listen not an address",
            &["run", "--listen", "localhost"],
            Error(2, &["invalid socket address"]),
        ),
        cli(
            "run listen not loopback",
            &["run", "--check-config", "--listen", "0.0.0.0:9464"],
            Error(1, &["not a loopback address", "allow_non_loopback"]),
        ),
        cli(
            "run listen address not here",
            &[
                "run",
                "--listen",
                "192.0.2.1:9464",
                "--allow-non-loopback",
                "--collectors",
                "cpu",
            ],
            Error(1, &["cannot listen on 192.0.2.1:9464"]),
        ),
        cli(
            "run collectors unknown",
            &["run", "--check-config", "--collectors", "gpu"],
            Error(1, &["unknown collector \"gpu\""]),
        ),
        cli(
            "run collectors empty",
            &["run", "--check-config", "--collectors", ""],
            Error(1, &["--collectors"]),
        ),
        cli(
            "run cpu-frequency 0",
            &["run", "--check-config", "--cpu-frequency", "0"],
            Error(1, &["--cpu-frequency"]),
        ),
        cli(
            "run cpu-frequency huge",
            &[
                "run",
                "--check-config",
                "--cpu-frequency",
                "18446744073709551615",
            ],
            Error(1, &["--cpu-frequency"]),
        ),
        cli(
            "run cpu-top 0",
            &["run", "--check-config", "--cpu-top", "0"],
            Error(1, &["--cpu-top: must be from 1 to 500, not 0"]),
        ),
        cli(
            "run cpu-window 1ms",
            &["run", "--check-config", "--cpu-window", "1ms"],
            Error(1, &["at least 5 s"]),
        ),
        cli(
            "run log-level unknown",
            &["run", "--log-level", "loud"],
            Error(2, &["possible values"]),
        ),
        cli(
            "run config missing",
            &["run", "--check-config", "--config", "{dir}/missing.toml"],
            Error(
                1,
                &[
                    "cannot read the configuration file",
                    "No such file or directory",
                ],
            ),
        ),
        cli(
            "run config is a directory",
            &["run", "--check-config", "--config", "{dir}"],
            Error(
                1,
                &[
                    "cannot read the configuration file",
                    "it is a directory, not a regular file",
                ],
            ),
        ),
        cli(
            "run config is /dev/zero",
            &["run", "--check-config", "--config", "/dev/zero"],
            Error(
                1,
                &["/dev/zero: it is a character device, not a regular file"],
            ),
        ),
        cli(
            "run config is a FIFO",
            &["run", "--check-config", "--config", "{dir}/fifo"],
            Error(1, &["fifo: it is a FIFO, not a regular file"]),
        ),
        cli(
            "advise duration 0",
            &["advise", "-d", "0"],
            Error(2, &["invalid duration"]),
        ),
        cli(
            "advise device unknown",
            &["advise", "--device", "nosuchdisk", "-d", "1s"],
            Error(1, &["no block device named \"nosuchdisk\""]),
        ),
        cli(
            "revert state file not JSON",
            &["revert", "--state-file", "{dir}/notelf"],
            Error(1, &["state file", "unusable"]),
        ),
        cli(
            "revert state file garbage",
            &["revert", "--state-file", "{dir}/garbage"],
            Error(1, &["state file", "unusable"]),
        ),
        cli(
            "revert state file is /dev/zero",
            &["revert", "--state-file", "/dev/zero"],
            Error(1, &["not a regular file"]),
        ),
        cli(
            "revert state file is a FIFO",
            &["revert", "--state-file", "{dir}/fifo"],
            Error(1, &["not a regular file"]),
        ),
        cli(
            "revert state file wrong version",
            &["revert", "--state-file", "{dir}/state-v99.json"],
            Error(1, &["version 99"]),
        ),
        cli(
            "btf not BTF",
            &["--btf", "{dir}/notelf", "profile", "-d", "1s"],
            Error(1, &["--btf", "give the BTF of the running kernel"]),
        ),
        cli(
            "btf missing",
            &["--btf", "{dir}/missing.btf", "profile", "-d", "1s"],
            Error(1, &["--btf"]),
        ),
        cli(
            "btf is /dev/zero",
            &["--btf", "/dev/zero", "profile", "-d", "1s"],
            Error(1, &["not a regular file"]),
        ),
        cli(
            "btf is a FIFO",
            &["--btf", "{dir}/fifo", "profile", "-d", "1s"],
            Error(1, &["not a regular file"]),
        ),
        // --- configuration files (run --check-config) ---------------------
        config(
            "config syntax error",
            || b"[exporter\nlisten = 1\n".to_vec(),
            Error(1, &[":1:", "unclosed table"]),
        ),
        config(
            "config unknown key",
            || b"[collectors.cpu]\nwindwo = \"30s\"\n".to_vec(),
            Error(1, &[":2:1:", "unknown key `windwo`"]),
        ),
        config(
            "config max_label_values 0",
            || b"[collectors.cpu]\nmax_label_values = 0\n".to_vec(),
            Error(1, &["collectors.cpu.max_label_values", "1"]),
        ),
        config(
            "config unknown section",
            || b"[a.b.c.d]\n".to_vec(),
            Error(1, &["unknown key `a`"]),
        ),
        config(
            "config wrong type",
            || b"[collectors.cpu]\nfrequency_hz = \"fast\"\n".to_vec(),
            Error(1, &["collectors.cpu.frequency_hz", "invalid type"]),
        ),
        config(
            "config wrong type table",
            || b"collectors = 5\n".to_vec(),
            Error(1, &["collectors"]),
        ),
        config(
            "config out of range",
            || b"[collectors.cpu]\nfrequency_hz = 100000\n".to_vec(),
            Error(1, &["from 1 to 10000, not 100000"]),
        ),
        config(
            "config negative",
            || b"[collectors.cpu]\ntop = -1\n".to_vec(),
            Error(1, &["collectors.cpu.top"]),
        ),
        config(
            "config i64 max",
            || b"[collectors.cpu]\ntop = 9223372036854775807\n".to_vec(),
            Error(1, &["from 1 to 500"]),
        ),
        config(
            "config integer overflow",
            || b"[collectors.cpu]\nfrequency_hz = 99999999999999999999999\n".to_vec(),
            Error(1, &["collectors.cpu.frequency_hz"]),
        ),
        config(
            "config port above u16",
            || b"[collectors.tcp]\nports = [70000]\n".to_vec(),
            Error(1, &["collectors.tcp.ports[0]"]),
        ),
        config(
            "config window huge",
            || b"[collectors.cpu]\nwindow = \"999999999h\"\n".to_vec(),
            Error(1, &["collectors.cpu.window", "invalid duration"]),
        ),
        config(
            "config window NaN",
            || b"[collectors.cpu]\nwindow = \"nan\"\n".to_vec(),
            Error(1, &["positive and finite"]),
        ),
        config(
            "config device path traversal",
            || b"[collectors.block]\ndevices = [\"../../etc\"]\n".to_vec(),
            Error(
                1,
                &[":2:11: collectors.block.devices: \"../../etc\" contains '/'"],
            ),
        ),
        config(
            "config device empty",
            || b"[collectors.block]\ndevices = [\"vda\", \"\"]\n".to_vec(),
            Error(1, &["collectors.block.devices: \"\" is empty"]),
        ),
        config(
            "config device dot-dot",
            || b"[collectors.block]\ndevices = [\"..\"]\n".to_vec(),
            Error(
                1,
                &["collectors.block.devices: \"..\" is a directory reference"],
            ),
        ),
        config(
            "config duplicate key",
            || b"[collectors.cpu]\ntop = 1\ntop = 2\n".to_vec(),
            Error(1, &[":3:1:", "duplicate key"]),
        ),
        config(
            "config listen garbage",
            || b"[exporter]\nlisten = \"not an address\"\n".to_vec(),
            Error(1, &["exporter.listen"]),
        ),
        config(
            "config every collector off",
            || {
                b"[collectors.cpu]\nenabled = false\n[collectors.block]\nenabled = false\n[collectors.tcp]\nenabled = false\n".to_vec()
            },
            Error(1, &["every collector is disabled"]),
        ),
        config(
            "config process name too long",
            || {
                b"[collectors.leaks]\nenabled = true\nprocesses = [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]\n".to_vec()
            },
            Error(1, &["cannot be a process name"]),
        ),
        config(
            "config sample_every 0",
            || {
                b"[collectors.leaks]\nenabled = true\nprocesses = [\"x\"]\nsample_every = 0\n"
                    .to_vec()
            },
            Error(1, &["from 1 to 65536, not 0"]),
        ),
        config(
            "config alert threshold NaN",
            || {
                b"[[alerts.rules]]\nname = \"R\"\nkind = \"threshold\"\nsignal = \"block_latency_p99_seconds\"\nabove = nan\n".to_vec()
            },
            Error(1, &["finite"]),
        ),
        config(
            "config alert threshold inf",
            || {
                b"[[alerts.rules]]\nname = \"R\"\nkind = \"threshold\"\nsignal = \"block_latency_p99_seconds\"\nabove = inf\n".to_vec()
            },
            Error(1, &["finite"]),
        ),
        config(
            "config alert k negative",
            || {
                b"[[alerts.rules]]\nname = \"R\"\nkind = \"baseline\"\nsignal = \"tcp_rtt_p99_seconds\"\nk = -1\n".to_vec()
            },
            Error(1, &["k must be a positive number"]),
        ),
        config(
            "config alert unknown signal",
            || {
                b"[[alerts.rules]]\nname = \"R\"\nkind = \"threshold\"\nsignal = \"disk\"\nabove = 1\n".to_vec()
            },
            Error(1, &["unknown signal \"disk\""]),
        ),
        config(
            "config alert label its signal does not carry",
            rule_on_a_missing_label,
            Error(1, &["has no label \"peer\"; its labels are: port, side"]),
        ),
        advise_config(
            "advise alert label its signal does not carry",
            rule_on_a_missing_label,
            Error(1, &["has no label \"peer\"; its labels are: port, side"]),
        ),
        config(
            "config webhook not http",
            || b"[alerts.webhook]\nurls = [\"file:///etc/passwd\"]\n".to_vec(),
            Error(1, &["not an http(s) URL"]),
        ),
        config(
            "config deep nesting",
            || format!("x = {}{}\n", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            Error(1, &["recursion"]),
        ),
        config(
            "config binary garbage",
            || {
                (0..4096u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect()
            },
            Error(1, &["cannot read the configuration file", "UTF-8"]),
        ),
        config(
            "config invalid UTF-8",
            || b"\xff\xfe[exporter]\n".to_vec(),
            Error(
                1,
                &["it is not UTF-8 text (invalid byte at line 1, column 1)"],
            ),
        ),
        config(
            "config string of 500 KB",
            || format!("[collectors.cpu]\nstacks = \"{}\"\n", "a".repeat(500_000)).into_bytes(),
            Error(1, &["aaaa…`, expected one of `user`", "stacks = \"aaaa"]),
        ),
        config(
            "config process name of 500 KB",
            || {
                format!(
                    "[collectors.leaks]\nenabled = true\nprocesses = [\"{}\"]\n",
                    "a".repeat(500_000)
                )
                .into_bytes()
            },
            Error(1, &["aaaa…\" cannot be a process name"]),
        ),
        config(
            "config NUL bytes",
            || b"[exporter]\0\0\0\n".to_vec(),
            Error(1, &[":1:"]),
        ),
        config("config empty", Vec::new, Ignored(&["configuration OK"])),
        config(
            "config 10 MiB of comments",
            || "# comment\n".repeat(1 << 20).into_bytes(),
            Error(
                1,
                &["it is 10485760 bytes, larger than the 1 MiB a configuration file may be"],
            ),
        ),
        config(
            "config of exactly 1 MiB",
            || "#".repeat(1 << 20).into_bytes(),
            Ignored(&["configuration OK"]),
        ),
        // --- web config files (--web.config.file) -------------------------
        web_config(
            "web config good",
            || b"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n".to_vec(),
            Ignored(&["web config OK", "TLS"]),
        ),
        web_config(
            "web config unknown key",
            || {
                b"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  keyfile: x\n".to_vec()
            },
            Error(1, &["line 4", "unknown field `keyfile`", "key_file"]),
        ),
        web_config(
            "web config missing cert file",
            || b"tls_server_config:\n  cert_file: nowhere.crt\n  key_file: server.key\n".to_vec(),
            Error(
                1,
                &["tls_server_config.cert_file", "nowhere.crt", "No such file"],
            ),
        ),
        web_config(
            "web config key file is not a key",
            || b"tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n".to_vec(),
            Error(1, &["key_file", "no private key"]),
        ),
        web_config(
            "web config bad hash",
            || b"basic_auth_users:\n  alice: secret\n".to_vec(),
            Error(1, &["\"alice\"", "not a bcrypt hash"]),
        ),
        web_config(
            "web config bad client_auth_type",
            || {
                b"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: Sometimes\n".to_vec()
            },
            Error(1, &["client_auth_type", "RequireAndVerifyClientCert"]),
        ),
        web_config(
            "web config TLS11 at most",
            || {
                b"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  max_version: TLS11\n".to_vec()
            },
            Error(1, &["max_version", "TLS12 and TLS13"]),
        ),
        web_config(
            "web config not YAML",
            || b"tls_server_config: [cert_file: {\n".to_vec(),
            Error(1, &["line 1"]),
        ),
        // --- PIDs that vanish ---------------------------------------------
        Case {
            name: "leaks pid exits during attach",
            input: Input::Scenario(|f| exits_during("leaks", f, "0.05")),
            expect: ErrorOrIgnored(&["exited"], &["Outstanding allocations"]),
        },
        Case {
            name: "leaks pid exits during attach, perf-event uprobes",
            input: Input::Scenario(|_| {
                let mut child = Command::new("sleep").arg("0.15").spawn().unwrap();
                let pid = child.id().to_string();
                let mut cmd = perf_user(&["leaks", "--pid", &pid, "-d", "3s"]);
                cmd.env("PERF_USER_NO_UPROBE_MULTI", "1");
                let out = Running::start(cmd).finish(TIMEOUT);
                child.wait().unwrap();
                Outcome::Exit(out)
            }),
            // The chain says `perf_event_open` failed once (the catalogue
            // checks that no error says a cause twice).
            expect: ErrorOrIgnored(&["exited"], &["Outstanding allocations"]),
        },
        Case {
            name: "leaks pid exits just after attach",
            input: Input::Scenario(|f| exits_during("leaks", f, "0.4")),
            expect: ErrorOrIgnored(&["exited"], &["Outstanding allocations"]),
        },
        Case {
            name: "profile pid exits during attach",
            input: Input::Scenario(|f| exits_during("profile", f, "0.05")),
            expect: ErrorOrIgnored(&["exited"], &["samples"]),
        },
        Case {
            name: "profile pid zombie",
            input: Input::Scenario(|f| {
                run_cli(&["profile", "-p", &f.zombie.to_string(), "-d", "1s"])
            }),
            expect: ErrorOrIgnored(&["exited"], &["samples"]),
        },
        // --- HTTP requests to the daemon ----------------------------------
        http(
            "http header of 100 KiB",
            || get("/metrics", &format!("X-Big: {}\r\n", "a".repeat(100 << 10))),
            &[431],
        ),
        http(
            "http header of 1 MiB",
            || get("/metrics", &format!("X-Big: {}\r\n", "a".repeat(1 << 20))),
            &[431],
        ),
        http(
            "http 1000 headers",
            || {
                get(
                    "/metrics",
                    &(0..1000)
                        .map(|i| format!("X-H{i}: v\r\n"))
                        .collect::<String>(),
                )
            },
            &[431],
        ),
        http(
            "http 90 headers of 1 KiB",
            || {
                get(
                    "/metrics",
                    &(0..90)
                        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(1024)))
                        .collect::<String>(),
                )
            },
            &[431],
        ),
        http(
            "http malformed request line",
            || b"GARBAGE\r\n\r\n".to_vec(),
            &[400],
        ),
        http(
            "http unknown version",
            || b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
            &[400, 505],
        ),
        http(
            "http binary garbage",
            || (0..=255u8).cycle().take(4096).collect(),
            &[400],
        ),
        http(
            "http NUL in path",
            || b"GET /met\0rics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            &[400],
        ),
        http(
            "http bad header name",
            || get("/metrics", "Ho st: x\r\n"),
            &[400],
        ),
        http(
            "http folded header",
            || get("/metrics", "X-A: a\r\n b\r\n"),
            &[400],
        ),
        http(
            "http Content-Length and chunked both",
            || {
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec()
            },
            &[200, 400],
        ),
        http(
            "http negative content-length",
            || get("/metrics", "Content-Length: -1\r\n"),
            &[400],
        ),
        http(
            "http huge content-length",
            || get("/metrics", "Content-Length: 99999999999999999999\r\n"),
            &[400],
        ),
        http(
            "http query of 200 KB",
            || get(&format!("/metrics?{}", "a=b&".repeat(50_000)), ""),
            &[414],
        ),
        http(
            "http path of 100 KB",
            || get(&format!("/{}", "a".repeat(100_000)), ""),
            &[414],
        ),
        http(
            "http malformed query ignored",
            || get("/metrics?%zz=%00&&&=&a[]=1;x", ""),
            &[200],
        ),
        http(
            "http path traversal",
            || get("/../../etc/passwd", ""),
            &[404],
        ),
        http(
            "http path traversal encoded",
            || get("/%2e%2e/%2e%2e/etc/passwd", ""),
            &[404],
        ),
        http(
            "http path traversal absolute URI",
            || get("http://127.0.0.1/../../etc/passwd", ""),
            &[404],
        ),
        http(
            "http unknown method",
            || b"FROB /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            &[405],
        ),
        http(
            "http POST",
            || {
                b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc".to_vec()
            },
            &[405],
        ),
        http(
            "http HTTP/2 preface",
            || b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            &[NO_RESPONSE, 400, 505],
        ),
        http("http connect and close", Vec::new, &[NO_RESPONSE]),
        // /debug/pprof/*: a bad query is a 400 (its reason: tests/fleet.rs).
        http(
            "pprof seconds=0",
            || get("/debug/pprof/profile?seconds=0", ""),
            &[400],
        ),
        http(
            "pprof seconds=1000",
            || get("/debug/pprof/profile?seconds=1000", ""),
            &[400],
        ),
        http(
            "pprof seconds=abc",
            || get("/debug/pprof/profile?seconds=abc", ""),
            &[400],
        ),
        http(
            "pprof seconds of 100 KB",
            || {
                get(
                    &format!("/debug/pprof/profile?seconds={}", "9".repeat(100_000)),
                    "",
                )
            },
            &[400, 414],
        ),
        http(
            "pprof pid=-1",
            || get("/debug/pprof/profile?pid=-1", ""),
            &[400],
        ),
        http(
            "pprof bad percent escape",
            || get("/debug/pprof/profile?comm=%zz", ""),
            &[400],
        ),
        http(
            "pprof heap pid=0",
            || get("/debug/pprof/heap?pid=0", ""),
            &[400],
        ),
        Case {
            name: "http slowloris does not block scrapes",
            input: Input::Scenario(slowloris),
            expect: Status(&[200]),
        },
        Case {
            name: "http stalled request is closed after the header timeout",
            input: Input::Scenario(stalled_request),
            expect: Status(&[NO_RESPONSE, 408]),
        },
        Case {
            name: "http connections above the bound are closed",
            input: Input::Scenario(too_many_connections),
            expect: Status(&[200]),
        },
        Case {
            name: "http rejected requests are counted",
            input: Input::Scenario(rejections_counted),
            expect: Status(&[200]),
        },
        Case {
            name: "http half a request then close",
            input: Input::Scenario(half_request),
            expect: Status(&[200]),
        },
    ]
}

// ---------------------------------------------------------------------------
// Fixtures: files and processes the cases point at.

struct Fixtures {
    dir: PathBuf,
    /// A PID that existed and was reaped.
    gone: u32,
    /// An exited child not reaped.
    zombie: u32,
    zombie_child: Child,
    /// A live process to attach to.
    sleeper: Child,
    daemon: Option<Daemon>,
}

impl Fixtures {
    fn new() -> Fixtures {
        let dir = test_dir("bad_inputs");
        let write = |name: &str, bytes: &[u8], exec: bool| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            if exec {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        };
        write("notelf", b"this is not a program\n", true);
        write("empty", b"", true);
        write("elfmagic", b"\x7fELF", true);
        write("garbage", &[0xff, 0x00, 0x7b, 0x22, 0xfe], false);
        write(
            "state-v99.json",
            br#"{"version": 99, "entries": []}"#,
            false,
        );
        write("bad-shebang", b"#!/nonexistent/interpreter\n", true);
        // Each names the other: the kernel gives up after 4 levels, so do we.
        let loop_a = dir.join("shebang-loop");
        let loop_b = dir.join("shebang-loop-b");
        write(
            "shebang-loop",
            format!("#!{}\n", loop_b.display()).as_bytes(),
            true,
        );
        write(
            "shebang-loop-b",
            format!("#!{}\n", loop_a.display()).as_bytes(),
            true,
        );
        let true_bin = std::fs::read("/bin/true").expect("read /bin/true");
        write("truncated", &true_bin[..2000.min(true_bin.len())], true);
        write("header-only", &true_bin[..64], true);
        // A static ELF with no C library: no malloc anywhere.
        let src = dir.join("nomalloc.c");
        std::fs::write(&src, "void _start(void) { for (;;) {} }\n").unwrap();
        let status = Command::new("gcc")
            .args(["-nostdlib", "-static", "-o"])
            .arg(dir.join("nomalloc"))
            .arg(&src)
            .status()
            .expect("gcc");
        assert!(status.success(), "gcc could not build nomalloc");
        let fifo = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");

        let mut reaped = Command::new("true").spawn().unwrap();
        let gone = reaped.id();
        reaped.wait().unwrap();
        let zombie_child = Command::new("true").spawn().unwrap();
        let zombie = zombie_child.id();
        let sleeper = Command::new("sleep").arg("600").spawn().unwrap();
        thread::sleep(Duration::from_millis(200)); // the zombie exits
        Fixtures {
            dir,
            gone,
            zombie,
            zombie_child,
            sleeper,
            daemon: None,
        }
    }

    /// Replaces `{dir}`, `{gone}`, `{zombie}`, `{sleeper}` and `{sleep}`.
    fn expand(&self, arg: &str) -> String {
        arg.replace("{dir}", self.dir.to_str().unwrap())
            .replace("{gone}", &self.gone.to_string())
            .replace("{zombie}", &self.zombie.to_string())
            .replace("{sleeper}", &self.sleeper.id().to_string())
            .replace("{sleep}", "/bin/sleep")
    }

    fn daemon(&mut self) -> &Daemon {
        self.daemon.get_or_insert_with(Daemon::start)
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
        let _ = self.zombie_child.wait();
    }
}

const TIMEOUT: Duration = Duration::from_secs(60);

/// A self-signed certificate and its key, `server.crt` and `server.key` in
/// `dir`, for the web config cases.
fn make_server_certificate(dir: &std::path::Path) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("server.key"))
        .arg("-out")
        .arg(dir.join("server.crt"))
        .output()
        .expect("cannot run openssl: install the Debian package openssl");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_cli(args: &[&str]) -> Outcome {
    Outcome::Exit(run_perf_user(args, TIMEOUT))
}

/// `perf-user COMMAND --pid P` where P is a `sleep` that exits after
/// `after` seconds, while perf-user reads it and attaches.
fn exits_during(command: &str, _f: &mut Fixtures, after: &str) -> Outcome {
    let mut child = Command::new("sleep").arg(after).spawn().unwrap();
    let pid = child.id().to_string();
    let out = run_perf_user(&[command, "--pid", &pid, "-d", "3s"], TIMEOUT);
    child.wait().unwrap();
    Outcome::Exit(out)
}

// ---------------------------------------------------------------------------
// The daemon.

/// A free port on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

struct Daemon {
    run: Option<Running>,
    addr: SocketAddr,
    started: Instant,
}

impl Daemon {
    /// `perf-user run` with the CPU collector only (the HTTP layer is what
    /// these cases exercise), once /healthz answers.
    fn start() -> Daemon {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cmd = perf_user(&[
            "run",
            "--listen",
            &addr.to_string(),
            "--collectors",
            "cpu",
            "--log-format",
            "json",
        ]);
        let started = Instant::now();
        let mut run = Running::start(cmd);
        let deadline = Instant::now() + TIMEOUT;
        while exchange(addr, &get("/healthz", ""), Duration::from_secs(5)).0 != Some(200) {
            if !run.is_running() {
                let out = run.finish(Duration::from_secs(1));
                panic!("perf-user run exited at start\n{}", out.describe());
            }
            assert!(
                Instant::now() < deadline,
                "perf-user run never became healthy"
            );
            thread::sleep(Duration::from_millis(100));
        }
        Daemon {
            run: Some(run),
            addr,
            started,
        }
    }

    /// Alive, and /metrics answers 200 with metrics.
    fn check_alive(&mut self) -> Result<(), String> {
        if !self.run.as_mut().unwrap().is_running() {
            let out = self.run.take().unwrap().finish(Duration::from_secs(1));
            return Err(format!("the daemon exited\n{}", out.describe()));
        }
        let (status, body) = exchange(self.addr, &get("/metrics", ""), Duration::from_secs(10));
        if status != Some(200) || !body.contains("perf_user_") {
            return Err(format!(
                "GET /metrics afterwards: {status:?}\n{}",
                truncate(&body, 2000)
            ));
        }
        Ok(())
    }

    /// SIGTERM; the exit status and log.
    fn stop(mut self) -> CmdOutput {
        let run = self.run.take().unwrap();
        // SAFETY: kill has no memory-safety preconditions; the PID is our child's.
        unsafe { libc::kill(run.child.id() as i32, libc::SIGTERM) };
        // 30 s from now: `finish` counts from the process's start, and the
        // daemon has served the whole catalogue by then.
        run.finish(self.started.elapsed() + Duration::from_secs(30))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            // SAFETY: as in stop.
            unsafe { libc::kill(run.child.id() as i32, libc::SIGTERM) };
            let _ = run.finish(Duration::from_secs(10));
        }
    }
}

/// Sends `request` (from a second thread, so that a server that answers
/// before reading it all does not deadlock us) and reads the response: its
/// status, if any, and everything received.
fn exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> (Option<u16>, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (None, "cannot connect".into());
    };
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let request = request.to_vec();
    let sender = thread::spawn(move || {
        // The server may close early (it refused the request): not our error.
        let _ = writer.write_all(&request);
        // No half-close after a request: hyper takes it for the client going
        // away and drops the response. Only a connection that sends nothing
        // closes at once.
        if request.is_empty() {
            let _ = writer.shutdown(std::net::Shutdown::Write);
        }
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    drop(stream);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse().ok());
    (status, text)
}

/// 50 connections send half a request and stall; scrapes must still be
/// answered promptly meanwhile.
fn slowloris(f: &mut Fixtures) -> Outcome {
    let addr = f.daemon().addr;
    let mut stalled = Vec::new();
    for i in 0..50 {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ");
            stalled.push(s);
        }
    }
    // One drips a byte at a time from another thread.
    let drip = thread::spawn(move || {
        if let Ok(mut s) = TcpStream::connect(addr) {
            for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                .iter()
                .cycle()
                .take(40)
            {
                if s.write_all(&[*b]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let mut worst = Duration::ZERO;
    let mut result = (Some(200), String::new());
    for _ in 0..5 {
        let start = Instant::now();
        let (status, body) = exchange(addr, &get("/metrics", ""), Duration::from_secs(10));
        worst = worst.max(start.elapsed());
        if status != Some(200) {
            result = (status, body);
            break;
        }
    }
    drip.join().unwrap();
    drop(stalled);
    if worst > Duration::from_secs(5) {
        result = (
            None,
            format!("a scrape took {worst:?} behind stalled clients"),
        );
    }
    Outcome::Http(result.0, result.1)
}

/// The daemon's header read timeout (`HEADER_READ_TIMEOUT` in
/// perf-user/src/daemon/http.rs).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Half a request's headers, then nothing: the daemon closes the connection
/// once the header read timeout has passed (not before, not much after).
/// A status outside the case's list (1) reports that it did not.
fn stalled_request(f: &mut Fixtures) -> Outcome {
    let addr = f.daemon().addr;
    let timeouts = rejected(addr, "header_timeout").unwrap_or(0);
    let Ok(mut s) = TcpStream::connect(addr) else {
        return Outcome::Http(Some(1), "cannot connect".into());
    };
    let start = Instant::now();
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    s.set_read_timeout(Some(HEADER_READ_TIMEOUT * 2)).unwrap();
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse().ok());
    let closed = match read {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    if !closed {
        return Outcome::Http(Some(1), format!("still open after {took:?}"));
    }
    if took < HEADER_READ_TIMEOUT - Duration::from_secs(1)
        || took > HEADER_READ_TIMEOUT + Duration::from_secs(5)
    {
        return Outcome::Http(
            Some(1),
            format!("closed after {took:?}, not after about {HEADER_READ_TIMEOUT:?}"),
        );
    }
    let counted = rejected(addr, "header_timeout").unwrap_or(0);
    if counted <= timeouts {
        return Outcome::Http(
            Some(1),
            format!("header_timeout rejections: {timeouts} before, {counted} after"),
        );
    }
    Outcome::Http(status, text)
}

/// The daemon's bound on open connections (`MAX_CONNECTIONS` in
/// perf-user/src/daemon/http.rs).
const MAX_CONNECTIONS: usize = 256;

/// 20 connections more than the bound, all stalled: the extra ones are
/// closed at once; once the others go away, scrapes are answered again.
fn too_many_connections(f: &mut Fixtures) -> Outcome {
    let addr = f.daemon().addr;
    let refused = rejected(addr, "too_many_connections").unwrap_or(0);
    let mut open = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 20 {
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
                open.push(s);
            }
            Err(e) => return Outcome::Http(Some(1), format!("connect: {e}")),
        }
    }
    thread::sleep(Duration::from_millis(500));
    let mut closed = 0;
    for s in &mut open {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
    }
    drop(open);
    if closed < 20 {
        return Outcome::Http(
            Some(1),
            format!(
                "{closed} of {} connections closed, wanted at least 20",
                MAX_CONNECTIONS + 20
            ),
        );
    }
    // The daemon notices the closed ones and frees their slots.
    thread::sleep(Duration::from_millis(500));
    let counted = rejected(addr, "too_many_connections").unwrap_or(0);
    if counted < refused + closed {
        return Outcome::Http(
            Some(1),
            format!("{closed} closed, too_many_connections went from {refused} to {counted}"),
        );
    }
    let (status, body) = exchange(addr, &get("/metrics", ""), Duration::from_secs(10));
    Outcome::Http(status, body)
}

/// `perf_user_http_requests_rejected_total{reason}` from a scrape.
fn rejected(addr: SocketAddr, reason: &str) -> Option<u64> {
    let (_, body) = exchange(addr, &get("/metrics", ""), Duration::from_secs(10));
    let series = format!("perf_user_http_requests_rejected_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// A 400, a 414 and a 431 each add one to their reason's count.
fn rejections_counted(f: &mut Fixtures) -> Outcome {
    let addr = f.daemon().addr;
    let requests: [(&str, u16, Vec<u8>); 3] = [
        ("bad_request", 400, b"GARBAGE\r\n\r\n".to_vec()),
        (
            "uri_too_long",
            414,
            get(&format!("/{}", "a".repeat(100_000)), ""),
        ),
        (
            "headers_too_large",
            431,
            get("/metrics", &format!("X-Big: {}\r\n", "a".repeat(100 << 10))),
        ),
    ];
    for (reason, status, request) in requests {
        let Some(before) = rejected(addr, reason) else {
            return Outcome::Http(Some(1), format!("no {reason} series in /metrics"));
        };
        let (got, _) = exchange(addr, &request, Duration::from_secs(10));
        if got != Some(status) {
            return Outcome::Http(Some(1), format!("{reason}: got {got:?}, not {status}"));
        }
        let after = rejected(addr, reason).unwrap_or(0);
        if after != before + 1 {
            return Outcome::Http(
                Some(1),
                format!("{reason}: the count went from {before} to {after}, not up by 1"),
            );
        }
    }
    let (status, body) = exchange(addr, &get("/metrics", ""), Duration::from_secs(10));
    Outcome::Http(status, body)
}

/// Half a request, then the client goes away; the next scrape is answered.
fn half_request(f: &mut Fixtures) -> Outcome {
    let addr = f.daemon().addr;
    if let Ok(mut s) = TcpStream::connect(addr) {
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Le");
    }
    let (status, body) = exchange(addr, &get("/metrics", ""), Duration::from_secs(10));
    Outcome::Http(status, body)
}

// ---------------------------------------------------------------------------
// Running the table.

impl Case {
    /// `perf-user COMMAND... FLAG FILE` (`--config` or `--web.config.file`),
    /// FILE holding `text`.
    fn with_config(
        &self,
        f: &Fixtures,
        text: fn() -> Vec<u8>,
        command: &[&str],
        flag: &str,
    ) -> Result<Outcome, String> {
        let extension = if flag == "--config" { "toml" } else { "yml" };
        let path = f
            .dir
            .join(format!("{}.{extension}", self.name.replace(' ', "_")));
        std::fs::write(&path, text()).unwrap();
        let mut args = command.to_vec();
        args.extend([flag, path.to_str().unwrap()]);
        let out = run_perf_user(&args, TIMEOUT);
        // The error names the file.
        if out.status.code() == Some(1) && !out.stderr.contains(path.to_str().unwrap()) {
            return Err(format!(
                "the error does not name the file\n{}",
                out.describe()
            ));
        }
        Ok(Outcome::Exit(out))
    }

    /// Whether the case reaches the kernel (and so needs root): everything
    /// but what clap refuses and `--check-config`.
    fn needs_root(&self) -> bool {
        match (&self.input, &self.expect) {
            (Input::Config(_) | Input::AdviseConfig(_) | Input::WebConfig(_), _) => false,
            (Input::Cli(args), _) if args.contains(&"--check-config") => false,
            (Input::Cli(_), Expect::Error(2, _) | Expect::Usage) => false,
            _ => true,
        }
    }

    fn run(&self, f: &mut Fixtures) -> Result<(), String> {
        let outcome = match &self.input {
            Input::Cli(args) => {
                let args: Vec<String> = args.iter().map(|a| f.expand(a)).collect();
                Outcome::Exit(run_perf_user(&args, TIMEOUT))
            }
            Input::Config(text) => {
                self.with_config(f, *text, &["run", "--check-config"], "--config")?
            }
            Input::AdviseConfig(text) => self.with_config(f, *text, &["advise"], "--config")?,
            Input::WebConfig(text) => {
                if !f.dir.join("server.crt").exists() {
                    make_server_certificate(&f.dir);
                }
                let check = ["run", "--check-config"];
                self.with_config(f, *text, &check, "--web.config.file")?
            }
            Input::Http(request) => {
                let addr = f.daemon().addr;
                let (status, body) = exchange(addr, &request(), Duration::from_secs(10));
                Outcome::Http(status, body)
            }
            Input::Scenario(scenario) => scenario(f),
        };
        match outcome {
            Outcome::Exit(out) => check_exit(&self.expect, &out),
            Outcome::Http(status, body) => {
                let Expect::Status(wanted) = &self.expect else {
                    return Err("an HTTP outcome for a command's expectation".into());
                };
                let fine = wanted.contains(&status.unwrap_or(NO_RESPONSE));
                if !fine {
                    return Err(format!(
                        "HTTP status {status:?}, wanted one of {wanted:?}\n{}",
                        truncate(&body, 1000)
                    ));
                }
                f.daemon.as_mut().unwrap().check_alive()
            }
        }
    }
}

/// The longest error a case may print, from its `error:` line on: a value
/// echoed whole (a 500 KB string in a configuration file) is far longer.
const MAX_ERROR_BYTES: usize = 2000;

/// Why the `error:` output in `stderr` is not one short message saying each
/// cause once (an error chain that repeats its source, as "failed: X: X").
fn error_is_clear(stderr: &str) -> Result<(), String> {
    let Some(at) = stderr.find("error:") else {
        return Ok(());
    };
    let error = &stderr[at..];
    if error.len() > MAX_ERROR_BYTES {
        return Err(format!(
            "the error is {} bytes long (at most {MAX_ERROR_BYTES})",
            error.len()
        ));
    }
    let line = error.lines().next().unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let line = line.replace("; ", ": ");
    for part in line.split(": ").map(str::trim) {
        if part.len() >= 12 && !seen.insert(part) {
            return Err(format!("the error says {part:?} twice"));
        }
    }
    Ok(())
}

/// Checks a finished command against `expect`.
fn check_exit(expect: &Expect, out: &CmdOutput) -> Result<(), String> {
    let fail = |why: &str| Err(format!("{why}\n{}", out.describe()));
    if out.timed_out {
        return fail("did not finish");
    }
    if out.stderr.contains("panicked") {
        return fail("panicked");
    }
    if let Err(why) = error_is_clear(&out.stderr) {
        return fail(&why);
    }
    let all = format!("{}{}", out.stdout, out.stderr);
    let error_lines = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .count();
    let is_error = |code: i32, says: &[&str]| {
        out.status.code() == Some(code)
            && error_lines == 1
            && says.iter().all(|s| out.stderr.contains(s))
    };
    let is_ignored = |says: &[&str]| out.status.success() && says.iter().all(|s| all.contains(s));
    let ok = match expect {
        Expect::Error(code, says) => is_error(*code, says),
        Expect::Ignored(says) => is_ignored(says),
        Expect::ErrorOrIgnored(err, says) => is_error(1, err) || is_ignored(says),
        Expect::Usage => out.status.code() == Some(2) && out.stderr.contains("Usage:"),
        Expect::Status(_) => return fail("a command for an HTTP expectation"),
    };
    if ok {
        Ok(())
    } else {
        let wanted = match expect {
            Expect::Error(code, says) => {
                format!("exit {code} with one error: line saying {says:?}")
            }
            Expect::Ignored(says) => format!("exit 0 saying {says:?}"),
            Expect::ErrorOrIgnored(err, says) => {
                format!("exit 1 with one error: saying {err:?}, or exit 0 saying {says:?}")
            }
            Expect::Usage => "exit 2 with the usage".into(),
            Expect::Status(_) => unreachable!(),
        };
        fail(&format!("wanted {wanted}"))
    }
}

fn main() {
    // libtest's flags (from `cargo test -- --test-threads=1`) are ignored;
    // a bare word selects the cases whose names contain it.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
    let cases = catalogue();
    if args.iter().any(|a| a == "--list") {
        for c in &cases {
            println!("{}: test", c.name);
        }
        return;
    }
    println!("bad-input catalogue: {} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "two cases are named {:?}", c.name);
    }

    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let skip_privileged = !root && std::env::var(SKIP_ENV).as_deref() == Ok("1");
    let mut f = Fixtures::new();
    let (mut passed, mut skipped, mut failed) = (0, 0, Vec::new());
    for case in &cases {
        if filter
            .as_ref()
            .is_some_and(|w| !case.name.contains(w.as_str()))
        {
            continue;
        }
        if case.needs_root() && !root {
            if skip_privileged {
                println!("SKIPPED {} (needs root; {SKIP_ENV}=1)", case.name);
                skipped += 1;
                continue;
            }
            failed.push((case.name, format!("needs root (or {SKIP_ENV}=1 to skip)")));
            println!("case {} ... FAILED", case.name);
            continue;
        }
        let start = Instant::now();
        let result = case.run(&mut f);
        let took = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                passed += 1;
                println!("case {} ... ok ({took:.1} s)", case.name);
            }
            Err(why) => {
                println!("case {} ... FAILED ({took:.1} s)", case.name);
                failed.push((case.name, why));
            }
        }
    }
    // The daemon survived every request and stops cleanly.
    if let Some(d) = f.daemon.take() {
        let out = d.stop();
        if !out.status.success() || out.stderr.contains("panicked") {
            failed.push(("daemon stops cleanly", out.describe()));
        }
    }
    drop(f);
    for (name, why) in &failed {
        println!("\n---- {name} ----\n{why}");
    }
    println!(
        "\nbad-input catalogue: {} cases; {passed} passed, {} failed, {skipped} skipped",
        cases.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
