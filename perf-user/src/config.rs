//! The `run` daemon's configuration: a TOML file, every key optional, each
//! collector its own section (`[collectors.cpu]`, ...). Command-line flags
//! override the file (see `daemon::apply_flags`).
//!
//! Values are checked while they are deserialized, so that every error
//! carries the line and column toml reports for the offending value, and the
//! dotted path of the field (from serde_path_to_error): one message that
//! names the file, the line, the field and the fix.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Deserializer, de};

use crate::{
    collectors::{cpu::MAX_FREQUENCY_HZ, tracepoints::Tracepoints},
    duration::{self, parse_str},
};

/// Where `run` listens unless told otherwise: loopback only, and a port
/// clear of Prometheus (9090) and node_exporter (9100). OpenTelemetry's
/// Prometheus exporter defaults to 9464 too; on a host running one, pick
/// another port with `--listen` or `exporter.listen`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// Largest top-N accepted: every function is one series, so this bounds the
/// CPU hotspot metrics' cardinality.
pub const MAX_TOP: u32 = 500;

/// Shortest CPU window: each window symbolizes every sampled stack, which
/// costs far more than sampling; below a few seconds that would dominate.
pub const MIN_WINDOW: Duration = Duration::from_secs(5);

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP endpoint.
    pub exporter: ExporterConfig,
    /// Logging.
    pub log: LogConfig,
    /// Which collectors run, and how.
    pub collectors: CollectorsConfig,
    /// Alert rules, the Alertmanager webhook, tuning actions (docs/alerts.md).
    pub alerts: crate::alerts::config::AlertsConfig,
}

/// `[exporter]`: where `/metrics` is served.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExporterConfig {
    /// Address and port, e.g. "127.0.0.1:9464".
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Must be true to listen on anything but a loopback address: the
    /// metrics name the host's processes and functions.
    pub allow_non_loopback: bool,
    /// TLS and basic authentication: a web config file in the Prometheus
    /// exporter-toolkit's format (`--web.config.file`); relative to this
    /// file's folder. Read again when it changes.
    pub web_config_file: Option<PathBuf>,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            allow_non_loopback: false,
            web_config_file: None,
        }
    }
}

/// `[log]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Lowest level written.
    pub level: LogLevel,
}

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise (a service's journal, a pipe).
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Lowest level of log lines written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Start, stop, and what changes (the default).
    #[default]
    Info,
    /// Also every CPU window.
    Debug,
    /// Also every scrape, and the libraries' own details.
    Trace,
}

/// `[collectors]`: one section per collector. An unknown section name is an
/// error (a typo would otherwise silently disable a collector).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorsConfig {
    /// `[collectors.cpu]`.
    pub cpu: CpuSection,
    /// `[collectors.block]`.
    pub block: BlockSection,
    /// `[collectors.tcp]`.
    pub tcp: TcpSection,
    /// `[collectors.leaks]`.
    pub leaks: LeaksSection,
    /// `[collectors.offcpu]`.
    pub offcpu: OffCpuSection,
}

/// The collectors' names, as used in `[collectors.NAME]` and `--collectors`.
pub const COLLECTOR_NAMES: &[&str] = &["cpu", "block", "tcp", "leaks", "offcpu"];

/// `[collectors.cpu]`: a continuous CPU profile, reported as the top
/// functions of each window.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuSection {
    /// Run this collector.
    pub enabled: bool,
    /// Samples per second on each CPU. Lower than `profile`'s 99 Hz: an
    /// always-on profiler should cost little, and a 30 s window at 49 Hz
    /// still gives ~1500 samples per busy CPU.
    #[serde(deserialize_with = "frequency")]
    pub frequency_hz: u64,
    /// Every window the samples are read, symbolized and cleared; the
    /// hotspot metrics describe the last complete window.
    #[serde(deserialize_with = "window")]
    pub window: Duration,
    /// Functions exported per window; the rest are summed as "[other]".
    #[serde(deserialize_with = "top")]
    pub top: u32,
    /// Which stacks to collect: "user", "kernel" or "both".
    pub stacks: StackKind,
    /// Count the idle task (pid 0) too.
    pub include_idle: bool,
    /// How user stacks are walked: "auto" (frame pointers: the daemon
    /// samples every process), "fp" or "dwarf" (docs/unwinding.md).
    pub unwind: crate::unwind::UnwindMode,
    /// Kernel memory for unwind tables, in MiB (1 to 1024).
    #[serde(deserialize_with = "unwind_tables_mib")]
    pub unwind_tables_mib: u32,
    /// Values kept of each container label (`cgroup`, `container_id`,
    /// `unit`) per window and per profile; the rest are "other".
    #[serde(deserialize_with = "max_label_values")]
    pub max_label_values: u32,
}

impl Default for CpuSection {
    fn default() -> Self {
        Self {
            enabled: true,
            frequency_hz: 49,
            window: Duration::from_secs(30),
            top: 20,
            stacks: StackKind::Both,
            include_idle: false,
            unwind: crate::unwind::UnwindMode::Auto,
            unwind_tables_mib: crate::unwind::sampler::DEFAULT_TABLES_MIB,
            max_label_values: 50,
        }
    }
}

/// `[collectors.block]`: block I/O latency and size histograms per disk
/// and operation.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockSection {
    /// Run this collector.
    pub enabled: bool,
    /// Only these disks, by name as `lsblk` shows them (a partition selects
    /// its disk); empty means every disk.
    #[serde(deserialize_with = "device_names")]
    pub devices: Vec<String>,
    /// Also measure the time requests wait before issue (Linux 6.5+): one
    /// more program run per I/O, so off by default.
    pub queue_time: bool,
    /// "auto" (BTF tracepoints where the kernel has BTF, else classic),
    /// "btf" or "classic".
    pub tracepoints: Tracepoints,
}

impl Default for BlockSection {
    fn default() -> Self {
        Self {
            enabled: true,
            devices: Vec::new(),
            queue_time: false,
            tracepoints: Tracepoints::Auto,
        }
    }
}

/// `[collectors.tcp]`: TCP round-trip time, connect and accept latency,
/// failed connects and retransmits, per service port.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpSection {
    /// Run this collector.
    pub enabled: bool,
    /// Only connections with one of these local or remote ports (filtered
    /// in the kernel), each with its own `port` label. Empty: every
    /// connection, and the first `max_ports` service ports seen get a label.
    pub ports: Vec<u16>,
    /// With `ports` empty: how many service ports get a label of their own;
    /// the rest share `port="other"`. Bounds the series count.
    #[serde(deserialize_with = "max_ports")]
    pub max_ports: u32,
    /// "auto" (BTF tracepoints where the kernel has BTF, else classic),
    /// "btf" or "classic".
    pub tracepoints: Tracepoints,
}

impl Default for TcpSection {
    fn default() -> Self {
        Self {
            enabled: true,
            ports: Vec::new(),
            max_ports: 20,
            tracepoints: Tracepoints::Auto,
        }
    }
}

/// `[collectors.leaks]`: allocation tracing of the named processes. Off by
/// default: uprobes on malloc and free cost microseconds per call in the
/// traced processes.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaksSection {
    /// Run this collector (needs `processes`).
    pub enabled: bool,
    /// Names of the processes to trace, as `ps -o comm` shows them (the
    /// kernel keeps 15 bytes); running ones and ones started later.
    pub processes: Vec<String>,
    /// Track one allocation in this many (by address); 1 tracks all.
    #[serde(deserialize_with = "sample_every")]
    pub sample_every: u32,
    /// Most processes traced at once (each tracer has its own maps).
    #[serde(deserialize_with = "max_processes")]
    pub max_processes: u32,
    /// Values kept per container label in the leak series; the rest are
    /// "other".
    #[serde(deserialize_with = "max_label_values")]
    pub max_label_values: u32,
}

impl Default for LeaksSection {
    fn default() -> Self {
        Self {
            enabled: false,
            processes: Vec::new(),
            sample_every: 1,
            max_processes: 4,
            max_label_values: 50,
        }
    }
}

/// `[collectors.offcpu]`: time threads spend off the CPU (sleeping,
/// waiting for locks, disk or a CPU), reported as the top waits of each
/// window. Off by default: its program runs at every context switch of the
/// host, and walks the stacks of every thread that leaves the CPU.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OffCpuSection {
    /// Run this collector.
    pub enabled: bool,
    /// Every window the times are read, symbolized and cleared; the
    /// off-CPU metrics describe the last complete window.
    #[serde(deserialize_with = "window")]
    pub window: Duration,
    /// Rows (process, function, state) exported per window; the rest are
    /// summed as "[other]".
    #[serde(deserialize_with = "top")]
    pub top: u32,
    /// Shorter absences are not counted (filtered in the kernel). Higher
    /// than `profile --off-cpu`'s 1 µs: on a busy host most switches are
    /// absences of a few microseconds (preemptions, lock hand-offs), which
    /// would fill the time map with keys that add up to little time and make
    /// every window longer to read and symbolize.
    #[serde(deserialize_with = "min_block")]
    pub min_block: Duration,
    /// Which stacks to collect: "user", "kernel" or "both".
    pub stacks: StackKind,
    /// "auto" (the BTF tracepoint where the kernel has BTF, else classic),
    /// "btf" or "classic".
    pub tracepoints: Tracepoints,
    /// Values kept of each container label per window and per profile; the
    /// rest are "other".
    #[serde(deserialize_with = "max_label_values")]
    pub max_label_values: u32,
}

/// `collectors.offcpu.min_block` unless set.
pub const DEFAULT_OFFCPU_MIN_BLOCK: Duration = Duration::from_micros(100);

impl Default for OffCpuSection {
    fn default() -> Self {
        Self {
            enabled: false,
            window: Duration::from_secs(30),
            top: 20,
            min_block: DEFAULT_OFFCPU_MIN_BLOCK,
            stacks: StackKind::Both,
            tracepoints: Tracepoints::Auto,
            max_label_values: 50,
        }
    }
}

/// Which stacks the CPU collector records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StackKind {
    /// User-space stacks only.
    User,
    /// Kernel stacks only.
    Kernel,
    /// Both.
    Both,
}

/// Largest configuration file read: the example with every key and comment
/// is a few KiB, and a bound keeps a wrong `--config` (a log file, a disk
/// image) from being read into memory whole.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read, is not a regular file, or is too large.
    #[error("cannot read the configuration file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said, or why the file was not read. A string, not a
        /// source, so that a chain printed whole says it once.
        reason: String,
    },
    /// A value, key or the syntax is wrong; `line` and `column` are 1-based.
    #[error("{}:{line}:{column}: {}{message}\n    {line} | {text}", path.display(), field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Invalid {
        /// The file (or `<flags>`).
        path: PathBuf,
        /// Line of the offending key or value.
        line: usize,
        /// Column of the offending key or value.
        column: usize,
        /// Dotted path of the field, when the error concerns one.
        field: Option<String>,
        /// What is wrong and how to fix it.
        message: String,
        /// The offending line, for context.
        text: String,
    },
    /// A combination of values is refused.
    #[error("{}: {message}", path.display())]
    Conflict {
        /// The file (or `<defaults>` / `<flags>`).
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_file(path).map_err(|reason| ConfigError::Read {
            path: path.to_path_buf(),
            reason,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |e: &toml::de::Error, field: Option<String>, message: String| {
            let (line, column, line_text) = locate(text, e.span().map(|s| s.start));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                field: field.map(|f| cut_values(&f)),
                message: cut_values(&message),
                text: excerpt(&line_text, column),
            }
        };
        let de = toml::de::Deserializer::parse(text)
            .map_err(|e| invalid(&e, None, e.message().to_string()))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.inner();
            let (field, message) = explain(&field, inner.message());
            invalid(inner, field, message)
        })?;
        config.check(path)?;
        Ok(config)
    }

    /// Checks what no single field can: the listen address against the
    /// non-loopback opt-in, and that something is enabled.
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let conflict = |message: String| ConfigError::Conflict {
            path: path.to_path_buf(),
            message: cut_values(&message),
        };
        if !self.exporter.listen.ip().is_loopback() && !self.exporter.allow_non_loopback {
            return Err(conflict(format!(
                "exporter.listen = \"{}\" is not a loopback address, so every host that can \
                 reach it could read this host's process and function names; if that is \
                 intended, set exporter.allow_non_loopback = true (or pass --allow-non-loopback)",
                self.exporter.listen
            )));
        }
        let leaks = &self.collectors.leaks;
        if leaks.enabled && leaks.processes.is_empty() {
            return Err(conflict(
                "collectors.leaks is enabled but names no process: set \
                 collectors.leaks.processes = [\"name\", ...] (names as `ps -o comm` shows them)"
                    .to_string(),
            ));
        }
        if let Some(bad) = leaks
            .processes
            .iter()
            .find(|p| p.is_empty() || p.len() > 15)
        {
            return Err(conflict(format!(
                "collectors.leaks.processes: {bad:?} cannot be a process name: the kernel keeps \
                 1 to 15 bytes of it, as `ps -o comm` shows"
            )));
        }
        if self.enabled_collectors().is_empty() {
            return Err(conflict(format!(
                "every collector is disabled; enable at least one of: {}",
                COLLECTOR_NAMES.join(", ")
            )));
        }
        self.alerts
            .validate()
            .map_err(|e| conflict(e.to_string()))?;
        Ok(())
    }

    /// Names of the enabled collectors.
    pub fn enabled_collectors(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.collectors.cpu.enabled {
            out.push("cpu");
        }
        if self.collectors.block.enabled {
            out.push("block");
        }
        if self.collectors.tcp.enabled {
            out.push("tcp");
        }
        if self.collectors.leaks.enabled {
            out.push("leaks");
        }
        if self.collectors.offcpu.enabled {
            out.push("offcpu");
        }
        out
    }

    /// Enables exactly the named collectors (from `--collectors`).
    pub fn only_collectors(&mut self, names: &[String]) -> Result<(), ConfigError> {
        for name in names {
            if !COLLECTOR_NAMES.contains(&name.as_str()) {
                return Err(ConfigError::Conflict {
                    path: PathBuf::from("--collectors"),
                    message: format!(
                        "unknown collector {name:?}; the collectors are: {}",
                        COLLECTOR_NAMES.join(", ")
                    ),
                });
            }
        }
        let on = |n: &str| names.iter().any(|x| x == n);
        self.collectors.cpu.enabled = on("cpu");
        self.collectors.block.enabled = on("block");
        self.collectors.tcp.enabled = on("tcp");
        self.collectors.leaks.enabled = on("leaks");
        self.collectors.offcpu.enabled = on("offcpu");
        Ok(())
    }

    /// A one-line summary of what will run, for `--check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let cpu = &self.collectors.cpu;
        if cpu.enabled {
            parts.push(format!(
                "cpu ({} Hz, window {}s, top {})",
                cpu.frequency_hz,
                cpu.window.as_secs_f64(),
                cpu.top
            ));
        }
        let block = &self.collectors.block;
        if block.enabled {
            let devices = if block.devices.is_empty() {
                "every disk".to_string()
            } else {
                block.devices.join(", ")
            };
            parts.push(format!("block ({devices})"));
        }
        let tcp = &self.collectors.tcp;
        if tcp.enabled {
            let ports = if tcp.ports.is_empty() {
                format!("first {} ports seen", tcp.max_ports)
            } else {
                let p: Vec<String> = tcp.ports.iter().map(u16::to_string).collect();
                format!("ports {}", p.join(", "))
            };
            parts.push(format!("tcp ({ports})"));
        }
        let leaks = &self.collectors.leaks;
        if leaks.enabled {
            parts.push(format!("leaks ({})", leaks.processes.join(", ")));
        }
        let offcpu = &self.collectors.offcpu;
        if offcpu.enabled {
            parts.push(format!(
                "offcpu (window {}s, top {}, min_block {} us)",
                offcpu.window.as_secs_f64(),
                offcpu.top,
                offcpu.min_block.as_micros()
            ));
        }
        format!(
            "collectors: {}; listening on http://{}/metrics",
            parts.join(", "),
            self.exporter.listen
        )
    }
}

/// Reads a configuration file: a regular file of at most
/// [`MAX_CONFIG_BYTES`], in UTF-8. A device such as /dev/zero would be read
/// until memory runs out, and a FIFO waited on forever: both are refused
/// from the open file's own type (opened non-blocking, so that opening a
/// FIFO does not wait for a writer), not from a check of the path before.
fn read_file(path: &Path) -> Result<String, String> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        use std::os::unix::fs::FileTypeExt as _;
        let t = meta.file_type();
        let what = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(format!(
            "it is {what}, not a regular file; give a TOML file"
        ));
    }
    let too_large = |size: String| {
        format!(
            "it is {size} bytes, larger than the {} MiB a configuration file may be",
            MAX_CONFIG_BYTES >> 20
        )
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large(meta.len().to_string()));
    }
    // Files in /proc report size 0, and a file may grow while read: read at
    // most one byte more than the limit, whatever the size said.
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large(format!("more than {MAX_CONFIG_BYTES}")));
    }
    String::from_utf8(bytes).map_err(|e| {
        let (line, column, _) = locate_bytes(e.as_bytes(), e.utf8_error().valid_up_to());
        format!("it is not UTF-8 text (invalid byte at line {line}, column {column})")
    })
}

/// [`locate`] for bytes that are UTF-8 up to `offset`.
fn locate_bytes(bytes: &[u8], offset: usize) -> (usize, usize, String) {
    let valid = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
    locate(valid, Some(offset))
}

/// Rewrites serde's generic messages where a clearer one exists.
fn explain(path: &str, message: &str) -> (Option<String>, String) {
    let field = (!path.is_empty() && path != ".").then(|| path.to_string());
    // `[collectors.gpu]`: serde says "unknown field `gpu`, expected ...".
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let parent = path
            .rsplit_once('.')
            .map(|(p, _)| p)
            .unwrap_or(if path == name { "" } else { path });
        if parent == "collectors" || path == "collectors" {
            return (
                Some(format!("collectors.{name}")),
                format!(
                    "unknown collector `{name}`; the collectors are: {}",
                    COLLECTOR_NAMES.join(", ")
                ),
            );
        }
        let expected = rest
            .split_once("expected ")
            .map(|(_, e)| format!("; valid keys here: {e}"))
            .unwrap_or_default();
        return (field, format!("unknown key `{name}`{expected}"));
    }
    (field, message.to_string())
}

/// 1-based line and column of byte `offset` in `text`, and that line.
fn locate(text: &str, offset: Option<usize>) -> (usize, usize, String) {
    let offset = offset.unwrap_or(0).min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..]
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    (line, column, line_text)
}

/// Longest value quoted whole in a message: a 5 MB string given for a
/// key would otherwise be echoed whole, twice (in the message and the line).
pub const MAX_QUOTED_CHARS: usize = 80;

/// Longest message: a safety net for long values that no quotes delimit.
const MAX_MESSAGE_CHARS: usize = 1000;

/// `s` cut to `max` characters, with "…" when something was left out.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

/// `message` with every value between backquotes or double quotes (as
/// serde, toml and `{:?}` quote them) cut to [`MAX_QUOTED_CHARS`], and the
/// whole to [`MAX_MESSAGE_CHARS`].
pub(crate) fn cut_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(2 * MAX_MESSAGE_CHARS));
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest.as_bytes()[open] as char;
        out.push_str(&rest[..=open]);
        let inner = &rest[open + 1..];
        // The closing quote; inside "...", a backslash escapes the next char.
        let mut close = None;
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' && quote == '"' {
                escaped = true;
            } else if c == quote {
                close = Some(i);
                break;
            }
        }
        let Some(close) = close else {
            // Unbalanced: the rest is the value.
            out.push_str(&cut(inner, MAX_QUOTED_CHARS));
            rest = "";
            break;
        };
        out.push_str(&cut(&inner[..close], MAX_QUOTED_CHARS));
        out.push(quote);
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    cut(&out, MAX_MESSAGE_CHARS)
}

/// At most [`MAX_QUOTED_CHARS`] characters of `line` around 1-based
/// `column`, with "…" where it was cut.
fn excerpt(line: &str, column: usize) -> String {
    let chars = line.chars().count();
    if chars <= MAX_QUOTED_CHARS {
        return line.to_string();
    }
    let start = column
        .saturating_sub(1 + MAX_QUOTED_CHARS / 4)
        .min(chars - MAX_QUOTED_CHARS);
    let shown: String = line.chars().skip(start).take(MAX_QUOTED_CHARS).collect();
    let before = if start > 0 { "…" } else { "" };
    let after = if start + MAX_QUOTED_CHARS < chars {
        "…"
    } else {
        ""
    };
    format!("{before}{shown}{after}")
}

/// An integer in `range`, or a message naming the range and what was given.
fn bounded_int<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    min: u64,
    max: u64,
) -> Result<u64, D::Error> {
    struct V {
        what: &'static str,
        min: u64,
        max: u64,
    }
    impl de::Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "{}: a whole number from {} to {}",
                self.what, self.min, self.max
            )
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!(
                    "{} must be from {} to {}, not {v}",
                    self.what, self.min, self.max
                ))),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            if (self.min..=self.max).contains(&v) {
                Ok(v)
            } else {
                Err(E::custom(format!(
                    "{} must be from {} to {}, not {v}",
                    self.what, self.min, self.max
                )))
            }
        }
    }
    d.deserialize_any(V { what, min, max })
}

fn frequency<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded_int(
        d,
        "the sampling frequency (Hz per CPU)",
        1,
        MAX_FREQUENCY_HZ,
    )
}

fn max_label_values<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded_int(
        d,
        "the number of values kept per container label",
        1,
        u64::from(MAX_TOP),
    )
    .map(|v| v as u32)
}

fn top<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded_int(d, "the number of top functions", 1, u64::from(MAX_TOP)).map(|v| v as u32)
}

fn unwind_tables_mib<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded_int(d, "the unwind tables' memory in MiB", 1, 1024).map(|v| v as u32)
}

fn sample_every<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded_int(d, "the allocation sampling rate", 1, 1 << 16).map(|v| v as u32)
}

fn max_processes<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded_int(d, "the number of processes traced at once", 1, 64).map(|v| v as u32)
}

fn max_ports<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded_int(d, "the number of labelled ports", 1, 200).map(|v| v as u32)
}

/// Block device names, as in /sys/class/block (or `/dev/NAME`): each is
/// looked up as a directory there, so a path ("../../etc"), an empty name,
/// "." or ".." would name something else, or nothing.
fn device_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    for name in &names {
        check_device_name(name).map_err(de::Error::custom)?;
    }
    Ok(names)
}

/// Why `name` cannot be a block device's name.
pub fn check_device_name(name: &str) -> Result<(), String> {
    let bare = name.strip_prefix("/dev/").unwrap_or(name);
    let why = if bare.is_empty() {
        "is empty"
    } else if bare.contains('/') {
        "contains '/'"
    } else if bare == "." || bare == ".." {
        "is a directory reference"
    } else if bare.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(format!(
        "{name:?} {why}: give a block device's name as in /sys/class/block or `lsblk` \
         (e.g. vda, sda, nvme0n1)"
    ))
}

fn window<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = parse_str(d, "a duration such as \"30s\" or \"2m\"")?;
    let window = duration::parse(&s).map_err(de::Error::custom)?;
    check_window(window).map_err(de::Error::custom)
}

/// A window (CPU or off-CPU) must leave time for symbolizing between windows.
pub fn check_window(window: Duration) -> Result<Duration, String> {
    if window < MIN_WINDOW {
        return Err(format!(
            "a window must be at least {} s (each window symbolizes every recorded stack), not {} s",
            MIN_WINDOW.as_secs(),
            window.as_secs_f64()
        ));
    }
    Ok(window)
}

/// Longest `min_block`: a wait must be shorter than a window to be seen
/// whole in one, and a longer minimum hides every ordinary wait.
pub const MAX_MIN_BLOCK: Duration = Duration::from_secs(1);

fn min_block<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = parse_str(d, "a duration such as \"100us\" or \"1ms\"")?;
    let min = duration::parse(&s).map_err(de::Error::custom)?;
    if min < Duration::from_micros(1) || min > MAX_MIN_BLOCK {
        return Err(de::Error::custom(format!(
            "the shortest absence counted must be from 1us to 1s, not {s:?}"
        )));
    }
    Ok(min)
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = parse_str(d, "an address and port such as \"127.0.0.1:9464\"")?;
    SocketAddr::from_str(&s).map_err(|_| {
        de::Error::custom(format!(
            "{s:?} is not an address and port; write e.g. \"127.0.0.1:9464\" or \"[::1]:9464\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("should be refused").to_string()
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.exporter.listen, DEFAULT_LISTEN);
        assert_eq!(c.enabled_collectors(), vec!["cpu", "block", "tcp"]);
    }

    #[test]
    fn a_full_file_parses() {
        let c = parse(
            r#"
[exporter]
listen = "127.0.0.1:9999"

[log]
format = "json"
level = "debug"

[collectors.cpu]
frequency_hz = 99
window = "1m"
top = 5
stacks = "user"

[collectors.block]
devices = ["vda"]
queue_time = true
tracepoints = "classic"

[collectors.tcp]
ports = [443, 5432]
"#,
        )
        .unwrap();
        assert_eq!(c.exporter.listen.port(), 9999);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, LogLevel::Debug);
        assert_eq!(c.collectors.cpu.frequency_hz, 99);
        assert_eq!(c.collectors.cpu.window, Duration::from_secs(60));
        assert_eq!(c.collectors.cpu.top, 5);
        assert_eq!(c.collectors.cpu.stacks, StackKind::User);
        assert_eq!(c.collectors.block.devices, ["vda"]);
        assert!(c.collectors.block.queue_time);
        assert_eq!(c.collectors.block.tracepoints, Tracepoints::Classic);
        assert!(error("[collectors.block]\ntracepoints = \"kprobe\"\n").contains("tracepoints"));
        assert_eq!(c.collectors.tcp.ports, [443, 5432]);
        let c = parse(
            "[collectors.offcpu]\nenabled = true\nwindow = \"10s\"\nmin_block = \"1ms\"\ntracepoints = \"classic\"\n",
        )
        .unwrap();
        assert_eq!(c.enabled_collectors(), ["cpu", "block", "tcp", "offcpu"]);
        assert_eq!(c.collectors.offcpu.min_block, Duration::from_millis(1));
        assert_eq!(c.collectors.offcpu.tracepoints, Tracepoints::Classic);
        assert!(
            c.summary()
                .contains("offcpu (window 10s, top 20, min_block 1000 us)")
        );
        for bad in ["\"0us\"", "\"2s\"", "\"soon\"", "5"] {
            let e = error(&format!("[collectors.offcpu]\nmin_block = {bad}\n"));
            assert!(e.contains("collectors.offcpu.min_block: "), "{e}");
        }
        let c = parse("[collectors.leaks]\nenabled = true\nprocesses = [\"postgres\"]\n").unwrap();
        assert_eq!(c.enabled_collectors(), ["cpu", "block", "tcp", "leaks"]);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = error("[collectors.cpu]\nfrequency_hz = 99\nfrequncy = 3\n");
        assert!(e.starts_with("test.toml:3:1: "), "{e}");
        assert!(e.contains("unknown key `frequncy`"), "{e}");
        assert!(
            e.contains("frequency_hz"),
            "should list the valid keys: {e}"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = error("[collectors.cpu]\nfrequency_hz = \"fast\"\n");
        assert!(
            e.starts_with("test.toml:2:16: collectors.cpu.frequency_hz: "),
            "{e}"
        );
        assert!(e.contains("whole number from 1 to 10000"), "{e}");
    }

    #[test]
    fn unknown_collector_lists_the_known_ones() {
        let e = error("[collectors.gpu]\nenabled = true\n");
        assert!(e.contains("test.toml:1:"), "{e}");
        assert!(e.contains("unknown collector `gpu`"), "{e}");
        assert!(e.contains("cpu"), "{e}");
    }

    #[test]
    fn negative_frequency_is_refused_with_the_range() {
        let e = error("[collectors.cpu]\nfrequency_hz = -5\n");
        assert!(
            e.starts_with("test.toml:2:16: collectors.cpu.frequency_hz: "),
            "{e}"
        );
        assert!(e.contains("must be from 1 to 10000, not -5"), "{e}");
        let e = error("[collectors.cpu]\nfrequency_hz = 0\n");
        assert!(e.contains("not 0"), "{e}");
    }

    #[test]
    fn bad_window_and_listen() {
        let e = error("[collectors.cpu]\nwindow = \"1s\"\n");
        assert!(e.contains("collectors.cpu.window: "), "{e}");
        assert!(e.contains("at least 5 s"), "{e}");
        let e = error("[collectors.cpu]\nwindow = \"soon\"\n");
        assert!(e.contains("invalid duration"), "{e}");
        let e = error("[exporter]\nlisten = \"localhost\"\n");
        assert!(e.contains("exporter.listen: "), "{e}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = error("[collectors.cpu\n");
        assert!(e.starts_with("test.toml:1:"), "{e}");
    }

    #[test]
    fn non_loopback_needs_the_opt_in() {
        let e = error("[exporter]\nlisten = \"0.0.0.0:9464\"\n");
        assert!(e.contains("allow_non_loopback"), "{e}");
        let c = parse("[exporter]\nlisten = \"0.0.0.0:9464\"\nallow_non_loopback = true\n");
        assert!(c.is_ok());
    }

    #[test]
    fn all_disabled_is_refused() {
        let e = error(
            "[collectors.cpu]\nenabled = false\n[collectors.block]\nenabled = false\n[collectors.tcp]\nenabled = false\n",
        );
        assert!(e.contains("every collector is disabled"), "{e}");
        let e = error("[collectors.block]\ndevices = \"vda\"\n");
        assert!(e.contains("collectors.block.devices: "), "{e}");
        let e = error("[collectors.leaks]\nenabled = true\n");
        assert!(e.contains("names no process"), "{e}");
        let e = error(
            "[collectors.leaks]\nenabled = true\nprocesses = [\"a_very_long_process_name\"]\n",
        );
        assert!(e.contains("15 bytes"), "{e}");
        let e = error("[collectors.leaks]\nsample_every = 0\n");
        assert!(e.contains("collectors.leaks.sample_every: "), "{e}");
        let e = error("[collectors.tcp]\nports = [70000]\n");
        assert!(e.contains("collectors.tcp.ports"), "{e}");
    }

    #[test]
    fn the_example_file_is_valid_and_shows_the_defaults() {
        let text = include_str!("../../scripts/perf-user.toml");
        assert_eq!(parse(text).unwrap(), Config::default());
    }

    #[test]
    fn unreadable_file_names_it() {
        let e = Config::load(Path::new("/nonexistent/perf-user.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/perf-user.toml"), "{e}");
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn devices_fifos_and_large_files_are_refused_unread() {
        let e = Config::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/dev/zero: it is a character device, not a regular file"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("perf-user-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        let e = Config::load(&fifo).unwrap_err().to_string();
        assert!(e.contains("it is a FIFO, not a regular file"), "{e}");
        let big = dir.join("big.toml");
        std::fs::write(&big, "#".repeat(MAX_CONFIG_BYTES as usize + 1)).unwrap();
        let e = Config::load(&big).unwrap_err().to_string();
        assert!(
            e.contains("big.toml: it is 1048577 bytes, larger than the 1 MiB"),
            "{e}"
        );
        std::fs::write(&big, "#".repeat(MAX_CONFIG_BYTES as usize)).unwrap();
        assert!(Config::load(&big).is_ok());
        std::fs::write(&big, b"# ok\n\xff").unwrap();
        let e = Config::load(&big).unwrap_err().to_string();
        assert!(
            e.ends_with("it is not UTF-8 text (invalid byte at line 2, column 1)"),
            "{e}"
        );
        assert_eq!(e.matches("UTF-8").count(), 1, "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "a".repeat(5_000_000);
        let e = error(&format!("[collectors.cpu]\nstacks = \"{long}\"\n"));
        assert!(e.len() < 1000, "{} bytes", e.len());
        assert!(
            e.contains(&format!("unknown variant `{}…`", &long[..80])),
            "{e}"
        );
        assert!(
            e.contains("expected one of `user`, `kernel`, `both`"),
            "{e}"
        );
        assert!(
            e.contains(&format!("    2 | stacks = \"{}…", &long[..70])),
            "{e}"
        );
        let e = error(&format!(
            "[collectors.leaks]\nenabled = true\nprocesses = [\"{long}\"]\n"
        ));
        assert!(e.len() < 1000, "{} bytes", e.len());
        assert!(e.contains("…\" cannot be a process name"), "{e}");
        // Escaped quotes inside a value do not end it; short values are whole.
        assert_eq!(cut_values(r#"a "b\"c" `d`"#), r#"a "b\"c" `d`"#);
        assert_eq!(cut_values("x `unbalanced"), "x `unbalanced");
        assert_eq!(excerpt(&"b".repeat(200), 100).chars().count(), 82);
        assert_eq!(excerpt(&"b".repeat(200), 190).chars().count(), 81);
    }

    #[test]
    fn device_names_are_plain_names() {
        for bad in [
            "../../etc",
            "",
            ".",
            "..",
            "a/b",
            "/dev/",
            "/dev/../sda",
            "sd\\u0000a",
        ] {
            let e = error(&format!(
                "[collectors.block]\ndevices = [\"vda\", \"{bad}\"]\n"
            ));
            assert!(e.contains("collectors.block.devices: "), "{bad:?}: {e}");
            assert!(e.contains("give a block device's name"), "{bad:?}: {e}");
        }
        let c = parse("[collectors.block]\ndevices = [\"vda\", \"/dev/nvme0n1p1\", \"dm-0\"]\n");
        assert_eq!(c.unwrap().collectors.block.devices.len(), 3);
    }

    #[test]
    fn only_collectors_checks_names() {
        let mut c = Config::default();
        assert!(c.only_collectors(&["gpu".into()]).is_err());
        c.only_collectors(&["cpu".into()]).unwrap();
        assert!(c.collectors.cpu.enabled);
        assert!(!c.collectors.block.enabled);
    }
}
