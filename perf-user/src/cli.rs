//! Command-line interface: what each command and flag means.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{collectors::tracepoints::Tracepoints, duration, output::Format};

/// Kernel-level observability for Linux, on eBPF: where the CPU time goes,
/// with user and kernel stacks, in one binary.
///
/// Needs root, or the capabilities CAP_BPF and CAP_PERFMON.
#[derive(Debug, Parser)]
#[command(name = "perf-user", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Kernel BTF type information from this file, for kernels without
    /// /sys/kernel/btf/vmlinux (built without CONFIG_DEBUG_INFO_BTF, as
    /// Raspberry Pi OS kernels are). No collector needs BTF today; a feature
    /// that does says so and asks for this flag.
    #[arg(long, global = true, value_name = "FILE")]
    pub btf: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample on-CPU stacks of every process (or the ones you pick) and report
    /// the hottest functions, folded stacks, a flame graph, pprof or JSON.
    /// With --off-cpu, where threads wait instead (sleeps, locks, disk,
    /// network) and for how long; with --wall, both, so that a thread's time
    /// adds up to the wall clock.
    ///
    /// Examples:
    ///   perf-user profile --duration 10s
    ///   perf-user profile --pid 1234 --format svg --output flame.svg
    ///   perf-user profile --comm postgres --stacks user --format pprof -o cpu.pb.gz
    ///   perf-user profile --off-cpu --pid 1234 --format svg -o waits.svg
    ///   perf-user profile --wall --pid 1234
    #[command(verbatim_doc_comment)]
    Profile(ProfileArgs),

    /// Find memory leaks in one process: outstanding allocations per call
    /// stack (malloc, calloc, realloc, posix_memalign, ... not yet freed),
    /// with their age and growth. Traces a running process (--pid) or starts
    /// a command and traces it from its first allocation.
    ///
    /// Examples:
    ///   perf-user leaks --pid 1234 --duration 30s --min-age 5s
    ///   perf-user leaks --interval 10s -- ./server --port 8080
    ///   perf-user leaks --sample 64 --format json -o leaks.json --pid 1234
    #[command(verbatim_doc_comment)]
    Leaks(LeaksArgs),

    /// Block I/O and TCP latency histograms: disk latency per device and
    /// operation (issue to completion), TCP smoothed RTT, connect and accept
    /// latency, failed connects and retransmits, with p50/p90/p99/max.
    ///
    /// Examples:
    ///   perf-user latency --duration 10s
    ///   perf-user latency --block --device vda
    ///   perf-user latency --tcp --port 443 --format json
    #[command(verbatim_doc_comment)]
    Latency(LatencyArgs),

    /// Run as a daemon: continuous CPU profile (top functions per window) and
    /// the other collectors, exported as Prometheus metrics on
    /// http://127.0.0.1:9464/metrics (and /healthz) until SIGINT or SIGTERM.
    /// Settings come from a TOML file (--config); flags override it.
    ///
    /// SIGHUP reloads the configuration: the file is read and checked again
    /// (flags still apply on top). Collectors whose section is unchanged stay
    /// attached; changed ones are started again with the new settings, newly
    /// enabled ones start, disabled ones detach; alert rules are reloaded.
    /// A bad file, or a collector that cannot attach, is refused with its
    /// error in the log and the old configuration stays in force
    /// (perf_user_config_last_reload_successful 0). [exporter] and [log]
    /// changes need a restart.
    ///
    /// Examples:
    ///   perf-user run
    ///   perf-user run --config /etc/perf-user/perf-user.toml
    ///   perf-user run --config my.toml --check-config
    ///   perf-user run --collectors cpu --cpu-window 1m --listen 127.0.0.1:9500
    #[command(verbatim_doc_comment)]
    Run(RunArgs),

    /// Sample disk latency, CPU hotspots and TCP for a while, evaluate the
    /// alert rules once, and print each alert with its evidence and tuning
    /// advice. --apply applies the suggested allowlisted settings, saving
    /// the previous values for `perf-user revert`.
    ///
    /// Examples:
    ///   perf-user advise
    ///   perf-user advise --duration 30s --device sda --format json
    ///   perf-user advise --apply --state-file /tmp/applied.json
    #[command(verbatim_doc_comment)]
    Advise(crate::commands::advise::AdviseArgs),

    /// Restore the settings `perf-user advise --apply` changed, from its state file.
    ///
    /// Examples:
    ///   perf-user revert
    ///   perf-user revert --state-file /tmp/applied.json --dry-run
    #[command(verbatim_doc_comment)]
    Revert(crate::commands::advise::RevertArgs),
}

/// Which stacks to collect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Stacks {
    /// User-space stacks only.
    User,
    /// Kernel stacks only.
    Kernel,
    /// Both, user frames below kernel frames.
    Both,
}

/// Options of `profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// How long to sample, e.g. 10s, 500ms, 2m. Ctrl-C stops early and still reports.
    #[arg(short, long, default_value = "10s", value_parser = duration::clap_parse)]
    pub duration: Duration,

    /// Samples per second on each CPU (1 to 10000). 99 avoids lock-step with timers.
    #[arg(short = 'F', long, default_value_t = 99)]
    pub frequency: u64,

    /// Only this process; repeat for several. Default: every process.
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only threads with this name (as `ps -o comm` shows it; the kernel keeps 15 bytes).
    #[arg(short, long)]
    pub comm: Option<String>,

    /// Which stacks to collect.
    #[arg(long, value_enum, default_value_t = Stacks::Both)]
    pub stacks: Stacks,

    /// Also count samples of the idle task (pid 0), left out by default.
    #[arg(long)]
    pub include_idle: bool,

    /// Off-CPU time instead of CPU samples: how long threads were off the
    /// CPU, by stack and by the state they left in (sleeping: sleeps, locks,
    /// poll, sockets; disk: uninterruptible, mostly I/O; runnable: preempted,
    /// waiting for a CPU). Counts are microseconds.
    #[arg(long, conflicts_with_all = ["wall", "include_idle"])]
    pub off_cpu: bool,

    /// Wall-clock time: CPU samples (as time, at the sampling period) and
    /// off-CPU time in one profile, each stack marked on-cpu or with its
    /// off-CPU state. Best with --pid: each thread's time then adds up to
    /// the duration.
    #[arg(long, conflicts_with = "include_idle")]
    pub wall: bool,

    /// With --off-cpu or --wall: leave out absences shorter than this
    /// (e.g. 1us, 100us, 1ms); longer ones are what latency is made of, and a
    /// higher bound keeps the cost of a busy host down.
    #[arg(long, value_name = "DURATION", default_value = "1us", value_parser = duration::clap_parse)]
    pub min_block: Duration,

    /// With --off-cpu or --wall: only threads in this cgroup v2 subtree, the
    /// path as /proc/PID/cgroup shows it after `0::` (e.g.
    /// /system.slice/nginx.service). Filtered in the kernel.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,

    /// With --off-cpu or --wall: btf reads the scheduler's task struct
    /// (cheaper; needs kernel BTF), classic the sched_switch record (any
    /// kernel); auto takes btf where it can.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = Tracepoints::Auto)]
    pub tracepoints: Tracepoints,

    /// How user stacks are walked: `auto` (the default) is `dwarf` with
    /// --pid on x86_64 and arm64 (for --off-cpu on kernels with BTF), `fp`
    /// otherwise; `fp`, frame pointers
    /// (cheap, but one or two frames deep in code built without them, as most
    /// distribution packages are); `dwarf`, tables built from each file's
    /// .eh_frame when a process is first sampled (--pid ones before the
    /// first sample), frame pointers where a file has none (JIT code).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = crate::unwind::UnwindMode::Auto)]
    pub unwind: crate::unwind::UnwindMode,

    /// Kernel memory for unwind tables, in MiB (1 to 1024). When the tables
    /// of the processes sampled do not fit, all are evicted (at most once a
    /// minute) and rebuilt for the processes still sampled; meanwhile the
    /// files that do not fit are walked with frame pointers.
    #[arg(long, value_name = "MIB", default_value_t = crate::unwind::sampler::DEFAULT_TABLES_MIB, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub unwind_tables_mib: u32,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Write the report to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Rows in the table.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub top: usize,

    /// No progress line on standard error.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Output formats of `latency`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LatencyFormat {
    /// Histograms as biolatency prints them, with percentiles, for a terminal.
    Table,
    /// JSON document; its schema is in docs/json-schema.md.
    Json,
}

/// Options of `latency`.
#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// How long to trace, e.g. 10s, 500ms, 2m. Ctrl-C stops early and still reports.
    #[arg(short, long, default_value = "10s", value_parser = duration::clap_parse)]
    pub duration: Duration,

    /// Trace block I/O (both block I/O and TCP when neither --block nor --tcp is given).
    #[arg(long)]
    pub block: bool,

    /// Trace TCP (both block I/O and TCP when neither --block nor --tcp is given).
    #[arg(long)]
    pub tcp: bool,

    /// Only this disk, by name as in `lsblk` (vda, sda, nvme0n1, loop0); repeat for several.
    #[arg(long = "device", value_name = "NAME")]
    pub devices: Vec<String>,

    /// Also show how long requests wait before the device gets them (from
    /// when the kernel starts accounting them, as /proc/diskstats does; Linux
    /// 6.5+). Costs about half again the tracing overhead per I/O.
    #[arg(long)]
    pub queued: bool,

    /// Which tracepoint programs to attach, for block I/O and TCP alike: btf
    /// reads the kernel's request and socket structs (cheaper; needs kernel
    /// BTF), classic reads the tracepoint records (any kernel); auto takes
    /// btf where it can. The JSON report says which ran.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = Tracepoints::Auto)]
    pub tracepoints: Tracepoints,

    /// Only TCP connections with this local or remote port; repeat for several.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,

    /// TCP series: the N busiest ports and N busiest peers, the rest summed as "other".
    #[arg(short = 'n', long, default_value_t = 10)]
    pub top: usize,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = LatencyFormat::Table)]
    pub format: LatencyFormat,

    /// Write the report to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// No progress or status lines on standard error.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Options of `run`; each overrides the configuration file's value.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// TOML configuration file (see docs/metrics.md and scripts/perf-user.toml).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration (file and flags), print what would run, and exit:
    /// 0 when valid, 1 with a message naming the line and field otherwise.
    #[arg(long)]
    pub check_config: bool,

    /// Address and port to serve /metrics on [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,

    /// Allow --listen on a non-loopback address (the metrics name processes and functions).
    #[arg(long)]
    pub allow_non_loopback: bool,

    /// TLS and basic authentication for every endpoint but /healthz: a web
    /// config file in the Prometheus exporter-toolkit format, as node_exporter's
    /// (see docs/metrics.md). Read again when it, or a certificate it names,
    /// changes, and on SIGHUP.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Log format [default: text on a terminal, JSON otherwise].
    #[arg(long, value_enum)]
    pub log_format: Option<crate::config::LogFormat>,

    /// Lowest log level [default: info]. RUST_LOG, when set, overrides it.
    #[arg(long, value_enum)]
    pub log_level: Option<crate::config::LogLevel>,

    /// Run exactly these collectors, comma-separated (e.g. cpu,block,tcp).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub collectors: Option<Vec<String>>,

    /// CPU samples per second on each CPU (1 to 10000) [default: 49].
    #[arg(long, value_name = "HZ")]
    pub cpu_frequency: Option<u64>,

    /// CPU window: how often hotspots are recomputed, e.g. 30s, 1m [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = duration::clap_parse)]
    pub cpu_window: Option<Duration>,

    /// CPU functions exported per window; the rest are summed as "[other]" [default: 20].
    #[arg(long, value_name = "N")]
    pub cpu_top: Option<u32>,
}

/// Options of `leaks`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["pid", "command"])))]
pub struct LeaksArgs {
    /// Trace this running process (its allocations from now on).
    #[arg(short, long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Stop after this long, e.g. 30s or 5m. Default: until the process exits
    /// or Ctrl-C; a command started with `--` is then sent SIGTERM.
    #[arg(short, long, value_parser = duration::clap_parse)]
    pub duration: Option<Duration>,

    /// Also print a report every INTERVAL (e.g. 10s), so growth shows as it happens.
    #[arg(short, long, value_name = "INTERVAL", value_parser = duration::clap_parse)]
    pub interval: Option<Duration>,

    /// Leave out allocations younger than this (e.g. 2s): buffers about to be
    /// freed are the usual false positives.
    #[arg(long, value_name = "AGE", value_parser = duration::clap_parse)]
    pub min_age: Option<Duration>,

    /// Track one allocation in N, chosen by address (so its free is always
    /// seen); amounts are multiplied by N. Lowers the cost on busy processes.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub sample: u32,

    /// The library or executable whose malloc/free to probe. Default: the one
    /// the process uses (its own, jemalloc/tcmalloc/..., else the C library).
    #[arg(long, value_name = "PATH")]
    pub allocator: Option<PathBuf>,

    /// How allocation stacks are walked: `auto` (the default) is `dwarf` on
    /// x86_64 and arm64, `fp` elsewhere; `dwarf`, tables built from each
    /// file's .eh_frame when tracing starts, which reach the program's own
    /// function through libraries built without frame pointers (libc's
    /// strdup, getline); `fp`, frame pointers (one or two frames deep
    /// through such libraries).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = crate::unwind::UnwindMode::Auto)]
    pub unwind: crate::unwind::UnwindMode,

    /// Most outstanding allocations tracked at once (1 to 16 Mi); more are
    /// counted as lost.
    #[arg(long, value_name = "N", default_value_t = perf_ebpf_common::alloc::ALLOC_OUTSTANDING_ENTRIES, value_parser = max_allocations)]
    pub max_allocations: u32,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = crate::leaks::output::LeaksFormat::Table)]
    pub format: crate::leaks::output::LeaksFormat,

    /// Write the report(s) to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Stacks shown in the table.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub top: usize,

    /// No progress or status lines on standard error.
    #[arg(short, long)]
    pub quiet: bool,

    /// The command to start and trace, after `--` (e.g. `-- python3 app.py`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

/// `--max-allocations`: from 1 to [`crate::collectors::alloc::MAX_ALLOCATIONS`],
/// checked here rather than by the kernel when it creates the map.
fn max_allocations(s: &str) -> Result<u32, String> {
    let n: u64 = s
        .parse()
        .map_err(|e| format!("{e}; give a whole number of allocations"))?;
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=crate::collectors::alloc::MAX_ALLOCATIONS).contains(n))
        .ok_or_else(|| crate::collectors::alloc::max_allocations_range(n))
}
