//! Reversible tuning actions: an allowlist of kernel settings that advice
//! may propose, applied only on request (`advise --apply`), each previous
//! value recorded in a state file before the setting is written, and
//! restored by `revert`.
//!
//! The allowlist is the whole attack surface: a setting is a block queue
//! attribute of a disk (scheduler, nr_requests, read_ahead_kb) or one of a
//! few net.* sysctls, and its path is built from validated parts, never
//! taken from the state file. Values are checked before they are written.
//!
//! Every path is under `root` ("/" in production), so tests run against a
//! fake /sys and /proc.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// Where applied changes are recorded unless told otherwise.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/perf-user/applied.json";

/// Version of the state file's format.
pub const STATE_VERSION: u32 = 1;

/// A block queue attribute that may be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockAttribute {
    /// /sys/block/DEV/queue/scheduler: the I/O scheduler.
    Scheduler,
    /// /sys/block/DEV/queue/nr_requests: requests the scheduler (or the
    /// tag set) may hold.
    NrRequests,
    /// /sys/block/DEV/queue/read_ahead_kb.
    ReadAheadKb,
}

impl BlockAttribute {
    /// The file name under queue/.
    pub fn file(self) -> &'static str {
        match self {
            BlockAttribute::Scheduler => "scheduler",
            BlockAttribute::NrRequests => "nr_requests",
            BlockAttribute::ReadAheadKb => "read_ahead_kb",
        }
    }
}

/// How a sysctl's value is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SysctlKind {
    /// One integer in a range.
    Int(u64, u64),
    /// Three integers min <= default <= max, each at most this.
    Triple(u64),
    /// A congestion control available in this kernel.
    CongestionControl,
    /// A queueing discipline name.
    Qdisc,
}

/// The sysctls actions may change, and how their values are checked.
const SYSCTLS: &[(&str, SysctlKind)] = &[
    (
        "net.ipv4.tcp_congestion_control",
        SysctlKind::CongestionControl,
    ),
    ("net.core.default_qdisc", SysctlKind::Qdisc),
    ("net.ipv4.tcp_rmem", SysctlKind::Triple(1 << 30)),
    ("net.ipv4.tcp_wmem", SysctlKind::Triple(1 << 30)),
    ("net.core.rmem_max", SysctlKind::Int(4096, 1 << 30)),
    ("net.core.wmem_max", SysctlKind::Int(4096, 1 << 30)),
    (
        "net.ipv4.tcp_notsent_lowat",
        SysctlKind::Int(16384, u32::MAX as u64),
    ),
    ("net.ipv4.tcp_mtu_probing", SysctlKind::Int(0, 2)),
    ("net.ipv4.tcp_slow_start_after_idle", SysctlKind::Int(0, 1)),
    (
        "net.core.netdev_max_backlog",
        SysctlKind::Int(100, 1_000_000),
    ),
];

/// Queueing disciplines `net.core.default_qdisc` may be set to.
const QDISCS: &[&str] = &["fq", "fq_codel", "cake", "pfifo_fast", "sfq", "pfifo"];

/// One setting on the allowlist.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Setting {
    /// A block device queue attribute.
    Block {
        /// Disk name as under /sys/block.
        device: String,
        /// Which attribute.
        attribute: BlockAttribute,
    },
    /// A sysctl, by its dotted name.
    Sysctl {
        /// e.g. `net.ipv4.tcp_rmem`.
        name: String,
    },
}

/// Why an action could not be checked, applied or reverted.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// Not on the allowlist.
    #[error(
        "{0} is not a setting perf-user changes (allowed: block queue scheduler, nr_requests, read_ahead_kb; sysctls {1})"
    )]
    NotAllowed(String, String),
    /// A device name that is not a disk here.
    #[error(
        "{device:?} is not a disk here (no {path}); give a disk name as under /sys/block, e.g. vda or loop3"
    )]
    NoDevice {
        /// The name.
        device: String,
        /// The queue directory looked for.
        path: String,
    },
    /// A value the setting does not take.
    #[error("{value:?} is not a valid value for {setting}: {reason}")]
    BadValue {
        /// The setting.
        setting: String,
        /// The value.
        value: String,
        /// What it must be.
        reason: String,
    },
    /// Reading or writing a setting failed.
    #[error("{op} {path}: {source}{hint}")]
    Io {
        /// `reading` or `writing`.
        op: &'static str,
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: io::Error,
        /// How to fix it.
        hint: &'static str,
    },
    /// The state file is unreadable or malformed.
    #[error("the state file {path} is unusable: {reason}")]
    State {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> ActionError {
    let hint = match source.kind() {
        io::ErrorKind::PermissionDenied => {
            "; changing kernel settings needs root (CAP_SYS_ADMIN for /sys/block, CAP_NET_ADMIN for net.* sysctls)"
        }
        io::ErrorKind::InvalidInput => "; the kernel refused the value",
        _ => "",
    };
    ActionError::Io {
        op,
        path: path.display().to_string(),
        source,
        hint,
    }
}

impl Setting {
    /// A block queue attribute of `device`, checked against `root`'s /sys.
    pub fn block(
        root: &Path,
        device: &str,
        attribute: BlockAttribute,
    ) -> Result<Self, ActionError> {
        let s = Setting::Block {
            device: device.to_string(),
            attribute,
        };
        s.check(root)?;
        Ok(s)
    }

    /// The sysctl `name`, if it is on the allowlist.
    pub fn sysctl(name: &str) -> Result<Self, ActionError> {
        let s = Setting::Sysctl {
            name: name.to_string(),
        };
        s.check(Path::new("/"))?;
        Ok(s)
    }

    /// `block:loop3:nr_requests` or `sysctl:net.ipv4.tcp_rmem`.
    pub fn id(&self) -> String {
        match self {
            Setting::Block { device, attribute } => format!("block:{device}:{}", attribute.file()),
            Setting::Sysctl { name } => format!("sysctl:{name}"),
        }
    }

    /// What people call it: `/sys/block/loop3/queue/nr_requests`, `net.ipv4.tcp_rmem`.
    pub fn display(&self) -> String {
        match self {
            Setting::Block { device, attribute } => {
                format!("/sys/block/{device}/queue/{}", attribute.file())
            }
            Setting::Sysctl { name } => name.clone(),
        }
    }

    /// Checks the setting is on the allowlist (and the disk exists).
    pub fn check(&self, root: &Path) -> Result<(), ActionError> {
        match self {
            Setting::Block { device, .. } => {
                let valid = !device.is_empty()
                    && device.len() <= 64
                    && !device.starts_with('.')
                    && device
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                let queue = root.join("sys/block").join(device).join("queue");
                if !valid || !queue.is_dir() {
                    return Err(ActionError::NoDevice {
                        device: device.clone(),
                        path: queue.display().to_string(),
                    });
                }
                Ok(())
            }
            Setting::Sysctl { name } => {
                if sysctl_kind(name).is_none() {
                    return Err(ActionError::NotAllowed(
                        name.clone(),
                        SYSCTLS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", "),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The file behind it, under `root`.
    pub fn path(&self, root: &Path) -> PathBuf {
        match self {
            Setting::Block { device, attribute } => root
                .join("sys/block")
                .join(device)
                .join("queue")
                .join(attribute.file()),
            Setting::Sysctl { name } => root.join("proc/sys").join(name.replace('.', "/")),
        }
    }

    /// The current value, normalized (the scheduler in use, numbers
    /// separated by single spaces).
    pub fn read(&self, root: &Path) -> Result<String, ActionError> {
        let path = self.path(root);
        let raw = fs::read_to_string(&path).map_err(|e| io_err("reading", &path, e))?;
        Ok(self.normalize(&raw))
    }

    /// `raw` as [`Setting::read`] returns it.
    pub fn normalize(&self, raw: &str) -> String {
        if matches!(
            self,
            Setting::Block {
                attribute: BlockAttribute::Scheduler,
                ..
            }
        ) {
            return current_scheduler(raw).unwrap_or_else(|| raw.trim().to_string());
        }
        raw.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Checks `value` for this setting and returns it normalized. `strict`
    /// also enforces the sane ranges (for new values; a recorded previous
    /// value is restored as it was).
    pub fn validate(&self, root: &Path, value: &str, strict: bool) -> Result<String, ActionError> {
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        let bad = |reason: String| ActionError::BadValue {
            setting: self.display(),
            value: value.clone(),
            reason,
        };
        let int = |v: &str, lo: u64, hi: u64| -> Result<u64, ActionError> {
            let n: u64 = v
                .parse()
                .map_err(|_| bad("a whole number is expected".into()))?;
            if strict && !(lo..=hi).contains(&n) {
                return Err(bad(format!("it must be from {lo} to {hi}")));
            }
            Ok(n)
        };
        match self {
            Setting::Block { attribute, .. } => match attribute {
                BlockAttribute::Scheduler => {
                    let available = fs::read_to_string(self.path(root))
                        .map_err(|e| io_err("reading", &self.path(root), e))?;
                    let names = schedulers(&available);
                    if !names.contains(&value) {
                        return Err(bad(format!("this disk offers {}", names.join(", "))));
                    }
                }
                BlockAttribute::NrRequests => {
                    int(&value, 4, 65536)?;
                }
                BlockAttribute::ReadAheadKb => {
                    int(&value, 0, 65536)?;
                }
            },
            Setting::Sysctl { name } => match sysctl_kind(name) {
                Some(SysctlKind::Int(lo, hi)) => {
                    int(&value, lo, hi)?;
                }
                Some(SysctlKind::Triple(max)) => {
                    let parts: Vec<&str> = value.split(' ').collect();
                    if parts.len() != 3 {
                        return Err(bad("three numbers (min default max) are expected".into()));
                    }
                    let n: Vec<u64> = parts
                        .iter()
                        .map(|p| int(p, 1, max))
                        .collect::<Result<_, _>>()?;
                    if strict && !(n[0] <= n[1] && n[1] <= n[2]) {
                        return Err(bad("min <= default <= max is required".into()));
                    }
                }
                Some(SysctlKind::CongestionControl) => {
                    let path = root.join("proc/sys/net/ipv4/tcp_available_congestion_control");
                    let available =
                        fs::read_to_string(&path).map_err(|e| io_err("reading", &path, e))?;
                    if !available.split_whitespace().any(|a| a == value) {
                        return Err(bad(format!(
                            "available here: {} (others need their module loaded, e.g. modprobe tcp_bbr)",
                            available.trim()
                        )));
                    }
                }
                Some(SysctlKind::Qdisc) => {
                    if !QDISCS.contains(&value.as_str()) {
                        return Err(bad(format!("one of {} is expected", QDISCS.join(", "))));
                    }
                }
                None => self.check(root)?,
            },
        }
        Ok(value)
    }

    fn write(&self, root: &Path, value: &str) -> Result<(), ActionError> {
        let path = self.path(root);
        // No O_CREAT: sysfs and procfs files exist or the setting does not.
        // O_TRUNC as a shell's `>` does (sysfs and procfs ignore it; a test's
        // plain file needs it).
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_err("writing", &path, e))?;
        f.write_all(value.as_bytes())
            .map_err(|e| io_err("writing", &path, e))
    }
}

fn sysctl_kind(name: &str) -> Option<SysctlKind> {
    SYSCTLS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

/// The names in a scheduler file: `none [mq-deadline] kyber` → all three.
pub fn schedulers(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|s| s.trim_matches(|c| c == '[' || c == ']').to_string())
        .collect()
}

/// The scheduler in use: the bracketed name.
pub fn current_scheduler(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|s| s.starts_with('[') && s.ends_with(']'))
        .map(|s| s.trim_matches(|c| c == '[' || c == ']').to_string())
}

/// A proposed change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Action {
    /// What to change.
    pub setting: Setting,
    /// To what.
    pub value: String,
    /// Why, in a few words (recorded with the change).
    pub reason: String,
}

/// One change recorded in the state file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The setting.
    pub setting: Setting,
    /// Its value before perf-user first changed it: what `revert` restores.
    pub previous: String,
    /// The value perf-user set (as read back).
    pub applied: String,
    /// When, seconds since the Unix epoch.
    pub applied_at: f64,
    /// Why.
    pub reason: String,
}

/// The state file: every setting changed and not yet reverted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// In the order they were first applied.
    pub entries: Vec<Applied>,
}

/// A change made (by `apply` or `revert`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// The setting.
    pub setting: Setting,
    /// Value before.
    pub from: String,
    /// Value after (as read back).
    pub to: String,
    /// Anything worth saying: already set, the kernel adjusted the value...
    pub note: Option<String>,
}

/// What `apply` or `revert` did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Changes made (or found unnecessary, with a note).
    pub changes: Vec<Change>,
    /// Settings that failed, and why.
    pub failures: Vec<(Setting, String)>,
}

/// Applies and reverts actions, recording them in a state file.
#[derive(Clone, Debug)]
pub struct Actuator {
    root: PathBuf,
    state_file: PathBuf,
}

impl Actuator {
    /// Settings under `root` ("/" for the real system), state in `state_file`.
    pub fn new(root: impl Into<PathBuf>, state_file: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            state_file: state_file.into(),
        }
    }

    /// The state file.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// The recorded changes (none when the file does not exist).
    pub fn load(&self) -> Result<StateFile, ActionError> {
        let bad = |reason: String| ActionError::State {
            path: self.state_file.display().to_string(),
            reason,
        };
        // A device or a FIFO given as --state-file would be read forever.
        if fs::metadata(&self.state_file).is_ok_and(|m| !m.is_file()) {
            return Err(bad("not a regular file".into()));
        }
        let text = match fs::read_to_string(&self.state_file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(StateFile {
                    version: STATE_VERSION,
                    entries: Vec::new(),
                });
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let state: StateFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(bad(format!(
                "version {} (this perf-user writes {STATE_VERSION})",
                state.version
            )));
        }
        Ok(state)
    }

    /// Writes the state atomically (temporary file, fsync, rename), or
    /// removes the file when nothing is recorded.
    fn save(&self, state: &StateFile) -> Result<(), ActionError> {
        let bad = |e: io::Error| ActionError::State {
            path: self.state_file.display().to_string(),
            reason: e.to_string(),
        };
        if state.entries.is_empty() {
            return match fs::remove_file(&self.state_file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(bad(e)),
                _ => Ok(()),
            };
        }
        if let Some(dir) = self
            .state_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            fs::create_dir_all(dir).map_err(bad)?;
        }
        let tmp = self.state_file.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(state).expect("state serializes");
        let mut f = File::create(&tmp).map_err(bad)?;
        f.write_all(text.as_bytes()).map_err(bad)?;
        f.write_all(b"\n").map_err(bad)?;
        f.sync_all().map_err(bad)?;
        fs::rename(&tmp, &self.state_file).map_err(bad)
    }

    /// Takes an exclusive lock for the duration of one apply or revert, so
    /// two runs cannot interleave their records.
    fn lock(&self) -> Result<File, ActionError> {
        let bad = |e: io::Error| ActionError::State {
            path: self.state_file.display().to_string(),
            reason: format!("cannot lock it: {e}"),
        };
        if let Some(dir) = self
            .state_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            fs::create_dir_all(dir).map_err(bad)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.state_file.with_extension("lock"))
            .map_err(bad)?;
        f.lock().map_err(bad)?;
        Ok(f)
    }

    /// Applies `actions` in order. Each setting's previous value is recorded
    /// (and synced to disk) before it is written; a setting changed before
    /// keeps its first previous value. Changing a scheduler also records
    /// nr_requests, which the kernel resets on a scheduler switch.
    pub fn apply(&self, actions: &[Action], at: SystemTime) -> Result<Report, ActionError> {
        let _lock = self.lock()?;
        let mut state = self.load()?;
        let mut report = Report::default();
        // A scheduler switch resets nr_requests: switch first, so that a
        // queue depth set in the same run stays.
        let mut ordered: Vec<&Action> = actions.iter().collect();
        ordered.sort_by_key(|a| {
            !matches!(
                a.setting,
                Setting::Block {
                    attribute: BlockAttribute::Scheduler,
                    ..
                }
            )
        });
        for action in ordered {
            match self.apply_one(&mut state, action, at) {
                Ok(mut changes) => report.changes.append(&mut changes),
                Err(e) => report
                    .failures
                    .push((action.setting.clone(), e.to_string())),
            }
        }
        Ok(report)
    }

    fn apply_one(
        &self,
        state: &mut StateFile,
        action: &Action,
        at: SystemTime,
    ) -> Result<Vec<Change>, ActionError> {
        let setting = &action.setting;
        setting.check(&self.root)?;
        let value = setting.validate(&self.root, &action.value, true)?;
        let current = setting.read(&self.root)?;
        if current == value {
            return Ok(vec![Change {
                setting: setting.clone(),
                from: current.clone(),
                to: current,
                note: Some("already set; nothing changed".into()),
            }]);
        }
        let when = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut side = Vec::new();
        if let Setting::Block {
            device,
            attribute: BlockAttribute::Scheduler,
        } = setting
        {
            let nr = Setting::Block {
                device: device.clone(),
                attribute: BlockAttribute::NrRequests,
            };
            let before = nr.read(&self.root)?;
            record(
                state,
                &nr,
                &before,
                &before,
                when,
                "saved: a scheduler switch resets it",
            );
            side.push((nr, before));
        }
        record(state, setting, &current, &value, when, &action.reason);
        self.save(state)?;
        setting.write(&self.root, &value)?;
        let now = setting.read(&self.root)?;
        record(state, setting, &current, &now, when, &action.reason);
        let mut changes = vec![Change {
            setting: setting.clone(),
            from: current,
            to: now.clone(),
            note: (now != value).then(|| format!("the kernel set {now:?}, not {value:?}")),
        }];
        for (nr, before) in side {
            let after = nr.read(&self.root)?;
            record(
                state,
                &nr,
                &before,
                &after,
                when,
                "changed by the scheduler switch",
            );
            if after != before {
                changes.push(Change {
                    setting: nr,
                    from: before,
                    to: after,
                    note: Some("changed by the kernel with the scheduler".into()),
                });
            }
        }
        self.save(state)?;
        for c in &changes {
            tracing::info!(
                setting = %c.setting.display(),
                from = %c.from,
                to = %c.to,
                reason = %action.reason,
                state_file = %self.state_file.display(),
                "applied a tuning action"
            );
        }
        Ok(changes)
    }

    /// Restores every recorded setting to its previous value: per disk the
    /// scheduler first (switching it resets nr_requests), then the rest,
    /// latest first. Restored entries leave the state file; failed ones
    /// stay, so `revert` can be run again. A disk that no longer exists has
    /// nothing to restore; its entries are dropped with a note.
    pub fn revert(&self) -> Result<Report, ActionError> {
        let _lock = self.lock()?;
        let mut state = self.load()?;
        let mut order: Vec<usize> = (0..state.entries.len()).rev().collect();
        // Stable: among equals, the latest applied comes first.
        order.sort_by_key(|&i| match &state.entries[i].setting {
            Setting::Block { attribute, .. } => u8::from(*attribute != BlockAttribute::Scheduler),
            Setting::Sysctl { .. } => 2,
        });
        let mut report = Report::default();
        let mut done = vec![false; state.entries.len()];
        // Disks whose scheduler was restored in this run: the kernel reset
        // their nr_requests, which is not "something else changed it".
        let mut switched: Vec<String> = Vec::new();
        for i in order {
            let entry = &state.entries[i];
            match self.revert_one(entry, &switched) {
                Ok(change) => {
                    if let Setting::Block {
                        device,
                        attribute: BlockAttribute::Scheduler,
                    } = &entry.setting
                        && change.from != change.to
                    {
                        switched.push(device.clone());
                    }
                    tracing::info!(
                        setting = %entry.setting.display(),
                        from = %change.from,
                        to = %change.to,
                        state_file = %self.state_file.display(),
                        "reverted a tuning action"
                    );
                    report.changes.push(change);
                    done[i] = true;
                }
                Err(e) => report.failures.push((entry.setting.clone(), e.to_string())),
            }
        }
        let mut i = 0;
        state.entries.retain(|_| {
            i += 1;
            !done[i - 1]
        });
        self.save(&state)?;
        Ok(report)
    }

    fn revert_one(&self, entry: &Applied, switched: &[String]) -> Result<Change, ActionError> {
        let setting = &entry.setting;
        if let Err(e @ ActionError::NoDevice { .. }) = setting.check(&self.root) {
            return Ok(Change {
                setting: setting.clone(),
                from: String::new(),
                to: String::new(),
                note: Some(format!("nothing to restore: {e}")),
            });
        }
        setting.check(&self.root)?;
        let previous = setting.validate(&self.root, &entry.previous, false)?;
        let current = setting.read(&self.root)?;
        if current == previous {
            return Ok(Change {
                setting: setting.clone(),
                from: current.clone(),
                to: current,
                note: Some("already at its previous value".into()),
            });
        }
        let reset_by_switch = matches!(
            setting,
            Setting::Block { device, attribute: BlockAttribute::NrRequests } if switched.contains(device)
        );
        let note = (current != entry.applied && !reset_by_switch).then(|| {
            format!(
                "it was {current:?}, not the {:?} perf-user set: something else changed it since",
                entry.applied
            )
        });
        setting.write(&self.root, &previous)?;
        let now = setting.read(&self.root)?;
        if now != previous {
            return Err(ActionError::BadValue {
                setting: setting.display(),
                value: previous,
                reason: format!("the kernel kept {now:?}"),
            });
        }
        Ok(Change {
            setting: setting.clone(),
            from: current,
            to: now,
            note,
        })
    }
}

/// Records a change, keeping the first previous value of a setting.
fn record(
    state: &mut StateFile,
    setting: &Setting,
    previous: &str,
    applied: &str,
    at: f64,
    reason: &str,
) {
    state.version = STATE_VERSION;
    match state.entries.iter_mut().find(|e| &e.setting == setting) {
        Some(e) => {
            e.applied = applied.to_string();
            e.applied_at = at;
            e.reason = reason.to_string();
        }
        None => state.entries.push(Applied {
            setting: setting.clone(),
            previous: previous.to_string(),
            applied: applied.to_string(),
            applied_at: at,
            reason: reason.to_string(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A fake / with one disk and the sysctls, in a fresh directory.
    pub(crate) fn fake_root(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("perf-user-actions-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let q = root.join("sys/block/loop3/queue");
        fs::create_dir_all(&q).unwrap();
        fs::write(q.join("scheduler"), "[none] mq-deadline kyber bfq\n").unwrap();
        fs::write(q.join("nr_requests"), "128\n").unwrap();
        fs::write(q.join("read_ahead_kb"), "384\n").unwrap();
        let ipv4 = root.join("proc/sys/net/ipv4");
        fs::create_dir_all(&ipv4).unwrap();
        fs::create_dir_all(root.join("proc/sys/net/core")).unwrap();
        fs::write(ipv4.join("tcp_congestion_control"), "cubic\n").unwrap();
        fs::write(
            ipv4.join("tcp_available_congestion_control"),
            "reno cubic bbr\n",
        )
        .unwrap();
        fs::write(ipv4.join("tcp_rmem"), "4096\t131072\t6291456\n").unwrap();
        fs::write(root.join("proc/sys/net/core/rmem_max"), "212992\n").unwrap();
        root
    }

    /// Writing "mq-deadline" to a fake scheduler file replaces its content;
    /// make it look like the kernel's again.
    fn settle_scheduler(root: &Path) {
        let f = root.join("sys/block/loop3/queue/scheduler");
        let v = fs::read_to_string(&f).unwrap();
        if !v.contains('[') {
            let chosen = v.trim().to_string();
            let text: Vec<String> = ["none", "mq-deadline", "kyber", "bfq"]
                .iter()
                .map(|s| {
                    if *s == chosen {
                        format!("[{s}]")
                    } else {
                        s.to_string()
                    }
                })
                .collect();
            fs::write(&f, text.join(" ") + "\n").unwrap();
        }
    }

    fn action(setting: Setting, value: &str) -> Action {
        Action {
            setting,
            value: value.into(),
            reason: "test".into(),
        }
    }

    fn block(attr: BlockAttribute) -> Setting {
        Setting::Block {
            device: "loop3".into(),
            attribute: attr,
        }
    }

    #[test]
    fn allowlist_and_validation() {
        let root = fake_root("allow");
        assert!(Setting::sysctl("net.ipv4.tcp_rmem").is_ok());
        let e = Setting::sysctl("kernel.panic").unwrap_err().to_string();
        assert!(e.contains("not a setting"), "{e}");
        for bad in ["../../etc", "", "vda/../x", "nosuch"] {
            assert!(
                Setting::block(&root, bad, BlockAttribute::Scheduler).is_err(),
                "{bad:?}"
            );
        }
        let s = block(BlockAttribute::Scheduler);
        assert_eq!(s.validate(&root, "kyber", true).unwrap(), "kyber");
        let e = s.validate(&root, "cfq", true).unwrap_err().to_string();
        assert!(e.contains("offers none, mq-deadline, kyber, bfq"), "{e}");
        let nr = block(BlockAttribute::NrRequests);
        assert!(nr.validate(&root, "2", true).is_err());
        assert!(
            nr.validate(&root, "2", false).is_ok(),
            "restores are not range-checked"
        );
        assert!(nr.validate(&root, "-1", false).is_err());
        let rmem = Setting::sysctl("net.ipv4.tcp_rmem").unwrap();
        assert_eq!(
            rmem.validate(&root, "4096  87380\t16777216", true).unwrap(),
            "4096 87380 16777216"
        );
        assert!(rmem.validate(&root, "9 8 7", true).is_err());
        assert!(rmem.validate(&root, "1 2", true).is_err());
        let cc = Setting::sysctl("net.ipv4.tcp_congestion_control").unwrap();
        assert!(cc.validate(&root, "bbr", true).is_ok());
        assert!(cc.validate(&root, "vegas", true).is_err());
        assert_eq!(s.read(&root).unwrap(), "none");
        assert_eq!(rmem.read(&root).unwrap(), "4096 131072 6291456");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn apply_then_revert_restores_exact_values() {
        let root = fake_root("roundtrip");
        let state = root.join("state/applied.json");
        let act = Actuator::new(&root, &state);
        let rmem = Setting::sysctl("net.ipv4.tcp_rmem").unwrap();
        let report = act
            .apply(
                &[
                    action(block(BlockAttribute::ReadAheadKb), "128"),
                    action(block(BlockAttribute::NrRequests), "64"),
                    action(rmem.clone(), "4096 131072 16777216"),
                    action(Setting::sysctl("net.core.rmem_max").unwrap(), "99999999999"),
                ],
                UNIX_EPOCH + std::time::Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(report.changes.len(), 3, "{report:?}");
        assert_eq!(report.failures.len(), 1, "out of range: {report:?}");
        assert_eq!(
            block(BlockAttribute::ReadAheadKb).read(&root).unwrap(),
            "128"
        );
        let recorded = act.load().unwrap();
        assert_eq!(recorded.entries.len(), 3);
        assert_eq!(recorded.entries[0].previous, "384");
        // Applying again keeps the first previous value.
        act.apply(
            &[action(block(BlockAttribute::ReadAheadKb), "64")],
            SystemTime::now(),
        )
        .unwrap();
        let recorded = act.load().unwrap();
        assert_eq!(recorded.entries[0].previous, "384");
        assert_eq!(recorded.entries[0].applied, "64");

        let report = act.revert().unwrap();
        assert!(report.failures.is_empty(), "{report:?}");
        assert_eq!(
            block(BlockAttribute::ReadAheadKb).read(&root).unwrap(),
            "384"
        );
        assert_eq!(
            block(BlockAttribute::NrRequests).read(&root).unwrap(),
            "128"
        );
        assert_eq!(rmem.read(&root).unwrap(), "4096 131072 6291456");
        assert!(!state.exists(), "nothing left to revert: the file is gone");
        assert!(act.revert().unwrap().changes.is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn scheduler_switch_records_nr_requests_and_revert_restores_it_after() {
        let root = fake_root("sched");
        let state = root.join("applied.json");
        let act = Actuator::new(&root, &state);
        act.apply(
            &[action(block(BlockAttribute::Scheduler), "mq-deadline")],
            SystemTime::now(),
        )
        .unwrap();
        settle_scheduler(&root);
        // The kernel resets nr_requests on a switch.
        fs::write(root.join("sys/block/loop3/queue/nr_requests"), "256").unwrap();
        let entries = act.load().unwrap().entries;
        let ids: Vec<String> = entries.iter().map(|e| e.setting.id()).collect();
        assert_eq!(ids, ["block:loop3:nr_requests", "block:loop3:scheduler"]);
        assert_eq!(entries[0].previous, "128");
        let report = act.revert().unwrap();
        // The fake file holds the bare name now; the real kernel brackets it.
        assert!(report.failures.is_empty(), "{report:?}");
        let order: Vec<String> = report.changes.iter().map(|c| c.setting.id()).collect();
        assert_eq!(order, ["block:loop3:scheduler", "block:loop3:nr_requests"]);
        settle_scheduler(&root);
        assert_eq!(
            block(BlockAttribute::Scheduler).read(&root).unwrap(),
            "none"
        );
        assert_eq!(
            block(BlockAttribute::NrRequests).read(&root).unwrap(),
            "128"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_tampered_state_file_cannot_reach_outside_the_allowlist() {
        let root = fake_root("tamper");
        let state = root.join("applied.json");
        fs::write(
            &state,
            r#"{"version":1,"entries":[
              {"setting":{"type":"sysctl","name":"kernel.core_pattern"},"previous":"|/bin/sh","applied":"x","applied_at":0,"reason":""},
              {"setting":{"type":"block","device":"../../../etc","attribute":"scheduler"},"previous":"x","applied":"y","applied_at":0,"reason":""}
            ]}"#,
        )
        .unwrap();
        let report = Actuator::new(&root, &state).revert().unwrap();
        assert_eq!(report.failures.len(), 1, "{report:?}");
        assert!(report.failures[0].1.contains("not a setting"));
        // The bogus device is "gone": dropped, nothing written.
        assert!(
            report.changes[0]
                .note
                .as_deref()
                .unwrap()
                .contains("nothing to restore")
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn already_set_and_externally_changed_values_are_reported() {
        let root = fake_root("notes");
        let state = root.join("applied.json");
        let act = Actuator::new(&root, &state);
        let r = act
            .apply(
                &[action(block(BlockAttribute::NrRequests), "128")],
                SystemTime::now(),
            )
            .unwrap();
        assert!(
            r.changes[0]
                .note
                .as_deref()
                .unwrap()
                .contains("already set")
        );
        assert!(!state.exists());
        act.apply(
            &[action(block(BlockAttribute::NrRequests), "64")],
            SystemTime::now(),
        )
        .unwrap();
        fs::write(root.join("sys/block/loop3/queue/nr_requests"), "32").unwrap();
        let r = act.revert().unwrap();
        assert!(
            r.changes[0]
                .note
                .as_deref()
                .unwrap()
                .contains("something else changed it")
        );
        assert_eq!(
            block(BlockAttribute::NrRequests).read(&root).unwrap(),
            "128"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    proptest! {
        #[test]
        fn normalize_is_idempotent(raw in "[ \t]{0,3}[0-9]{1,6}([ \t]{1,3}[0-9]{1,6}){0,2}[ \t\n]{0,3}") {
            let s = Setting::Sysctl { name: "net.ipv4.tcp_rmem".into() };
            let once = s.normalize(&raw);
            prop_assert_eq!(s.normalize(&once), once.clone());
            prop_assert!(!once.contains("  ") && !once.starts_with(' ') && !once.ends_with(' '));
        }

    }

    proptest! {
        // Each case writes and fsyncs the state file a few times: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn any_sequence_of_applies_reverts_to_the_original(
            values in prop::collection::vec((0usize..3, 16u32..4096), 1..6),
        ) {
            let root = fake_root(&format!("prop-{}", values.len()));
            let state = root.join("applied.json");
            let act = Actuator::new(&root, &state);
            let attrs = [BlockAttribute::NrRequests, BlockAttribute::ReadAheadKb, BlockAttribute::NrRequests];
            for (a, v) in &values {
                act.apply(&[action(block(attrs[*a]), &v.to_string())], SystemTime::now()).unwrap();
            }
            act.revert().unwrap();
            prop_assert_eq!(block(BlockAttribute::NrRequests).read(&root).unwrap(), "128");
            prop_assert_eq!(block(BlockAttribute::ReadAheadKb).read(&root).unwrap(), "384");
            prop_assert!(!state.exists());
            fs::remove_dir_all(&root).unwrap();
        }
    }
}
