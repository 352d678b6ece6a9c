//! Starting `leaks -- COMMAND` so that its first allocation is seen.
//!
//! The command is forked and waits on a pipe before execve(), so that the
//! probes can be attached with its PID first. Which allocator it will use is
//! known only once the dynamic linker has mapped its libraries: the
//! `alloc_startup_stop` program stops it at `_dl_debug_state`, called after
//! the libraries are mapped and before any of their code runs; user space
//! then reads its maps, attaches, and continues it. A static executable's
//! allocator is in the executable itself and is attached before execve().

use std::{
    ffi::{CString, OsStr, OsString},
    fs,
    io::Read as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::FileExt as _, fs::PermissionsExt as _},
    },
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use super::allocator::ElfSummary;
use crate::procmaps::{Backing, ProcessMaps};

/// `r_state` values of the dynamic linker's `struct r_debug`.
const RT_CONSISTENT: i32 = 0;
/// Offset of `r_state` in a 64-bit `struct r_debug` (after `int r_version`,
/// padding, `r_map` and `r_brk`).
const R_STATE_OFFSET: u64 = 24;
/// How long `terminate` waits after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Why the command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Nothing after `--`.
    #[error("no command given after `--`")]
    Empty,
    /// The command is not in PATH.
    #[error("command not found: {name} (searched PATH: {path})")]
    NotFound {
        /// What was asked for.
        name: String,
        /// The PATH searched.
        path: String,
    },
    /// The command cannot be read or run.
    #[error("cannot run {}: {reason}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A system call failed.
    #[error("{what} failed: {source}")]
    Os {
        /// The call.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn os(what: &'static str) -> LaunchError {
    LaunchError::Os {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// What the first program execve() runs is, for attaching before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstImage {
    /// A dynamically linked executable (or a script whose interpreter is one):
    /// its dynamic linker.
    Dynamic {
        /// The executable (the script's interpreter for a script).
        exe: PathBuf,
        /// Its `PT_INTERP`.
        interpreter: PathBuf,
    },
    /// A statically linked executable: its allocator is inside it.
    Static {
        /// The executable.
        exe: PathBuf,
    },
}

/// Finds `name` as execvp() would: a path when it has a slash, else the
/// first executable file of that name in PATH.
pub fn resolve_command(name: &OsStr) -> Result<PathBuf, LaunchError> {
    if name.is_empty() {
        return Err(LaunchError::Empty);
    }
    if name.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if let Ok(meta) = fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(LaunchError::NotFound {
        name: name.to_string_lossy().into_owned(),
        path: path.to_string_lossy().into_owned(),
    })
}

/// Follows `#!` lines (up to 4 levels, as the kernel does) to the ELF file
/// that execve() really starts, and tells whether it is dynamically linked.
pub fn first_image(program: &Path) -> Result<FirstImage, LaunchError> {
    let mut path = program.to_path_buf();
    for _ in 0..5 {
        // Opening a FIFO would wait for a writer forever; execve() refuses
        // anything but a regular file anyway.
        match fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(LaunchError::Unusable {
                    path,
                    reason: "it is not a regular file".into(),
                });
            }
            _ => {} // a missing file is reported by the open below
        }
        let mut head = [0u8; 256];
        let n = fs::File::open(&path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|e| LaunchError::Unusable {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let head = &head[..n];
        if let Some(line) = head.strip_prefix(b"#!") {
            let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
            let interp = line
                .split(|b| b.is_ascii_whitespace())
                .find(|w| !w.is_empty())
                .ok_or_else(|| LaunchError::Unusable {
                    path: path.clone(),
                    reason: "its #! line names no interpreter".into(),
                })?;
            path = PathBuf::from(OsStr::from_bytes(interp));
            continue;
        }
        if !head.starts_with(b"\x7fELF") {
            return Err(LaunchError::Unusable {
                path,
                reason: "it is neither an ELF executable nor a #! script".into(),
            });
        }
        let elf = ElfSummary::read(&path, &[]).map_err(|e| LaunchError::Unusable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        return Ok(match elf.interpreter {
            Some(interpreter) => FirstImage::Dynamic {
                exe: path,
                interpreter,
            },
            None => FirstImage::Static { exe: path },
        });
    }
    Err(LaunchError::Unusable {
        path: program.to_path_buf(),
        reason: "too many levels of #! interpreters".into(),
    })
}

/// What `waitpid` said about the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildState {
    /// Still running.
    Running,
    /// Stopped by this signal.
    Stopped(i32),
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Killed(i32),
}

impl ChildState {
    /// True once the child is gone.
    pub fn ended(self) -> bool {
        matches!(self, ChildState::Exited(_) | ChildState::Killed(_))
    }
}

/// A forked command waiting for [`PausedChild::release`] before execve().
/// Dropping it kills and reaps the command if it still runs.
pub struct PausedChild {
    pid: libc::pid_t,
    program: PathBuf,
    gate: Option<OwnedFd>,
    exec_errors: Option<OwnedFd>,
    reaped: bool,
}

impl PausedChild {
    /// Forks; the child waits until released, then runs `program` with
    /// `args` (`args[0]` is the name it sees) and the current environment.
    pub fn spawn(program: &Path, args: &[OsString]) -> Result<Self, LaunchError> {
        let cstr = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| LaunchError::Unusable {
                path: program.to_path_buf(),
                reason: "an argument or environment variable contains a NUL byte".into(),
            })
        };
        // Everything the child needs is built before fork(): in the child of
        // a multi-threaded process only async-signal-safe calls are allowed.
        let path = cstr(program.as_os_str())?;
        let argv: Vec<CString> = args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
        let envv: Vec<CString> = std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                cstr(&kv)
            })
            .collect::<Result<_, _>>()?;
        let mut argp: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argp.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = envv.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let (gate_r, gate_w) = pipe()?;
        let (err_r, err_w) = pipe()?;

        // SAFETY: the child runs only async-signal-safe calls (close, signal,
        // read, execve, write, _exit) on memory prepared above.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os("fork"));
        }
        if pid == 0 {
            // SAFETY: see above; every pointer is valid until execve or _exit.
            unsafe { child(&gate_r, &gate_w, &err_r, &err_w, &path, &argp, &envp) }
        }
        drop(gate_r);
        drop(err_w);
        Ok(Self {
            pid,
            program: program.to_path_buf(),
            gate: Some(gate_w),
            exec_errors: Some(err_r),
            reaped: false,
        })
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Lets the child run execve(); returns once execve() succeeded, or its error.
    pub fn release(&mut self) -> Result<(), LaunchError> {
        let Some(gate) = self.gate.take() else {
            return Ok(());
        };
        // SAFETY: writes one byte from a valid buffer to an open pipe.
        let n = unsafe { libc::write(gate.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(os("releasing the command (write to its pipe)"));
        }
        drop(gate);
        let Some(errors) = self.exec_errors.take() else {
            return Ok(());
        };
        // The pipe closes on a successful execve() (O_CLOEXEC): EOF. A failed
        // one sends its errno first.
        let mut file = fs::File::from(errors);
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        match <[u8; 4]>::try_from(buf.as_slice()) {
            Ok(errno) => {
                let errno = i32::from_ne_bytes(errno);
                let _ = self.wait(0);
                Err(LaunchError::Unusable {
                    path: self.program.clone(),
                    reason: std::io::Error::from_raw_os_error(errno).to_string(),
                })
            }
            Err(_) => Ok(()),
        }
    }

    /// Checks on the child without blocking: running, stopped or gone.
    pub fn poll(&mut self) -> Result<ChildState, LaunchError> {
        if self.reaped {
            return Err(LaunchError::Os {
                what: "waitpid",
                source: std::io::Error::from_raw_os_error(libc::ECHILD),
            });
        }
        self.wait(libc::WNOHANG | libc::WUNTRACED)
    }

    fn wait(&mut self, flags: i32) -> Result<ChildState, LaunchError> {
        let mut status = 0;
        // SAFETY: waitpid writes an int through a valid pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut status, flags) };
        if r < 0 {
            return Err(os("waitpid"));
        }
        if r == 0 {
            return Ok(ChildState::Running);
        }
        let state = if libc::WIFSTOPPED(status) {
            ChildState::Stopped(libc::WSTOPSIG(status))
        } else if libc::WIFEXITED(status) {
            ChildState::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ChildState::Killed(libc::WTERMSIG(status))
        } else {
            ChildState::Running
        };
        if state.ended() {
            self.reaped = true;
        }
        Ok(state)
    }

    /// Continues a stopped child.
    pub fn resume(&self) -> Result<(), LaunchError> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, sig: i32) -> Result<(), LaunchError> {
        if self.reaped {
            return Ok(());
        }
        // SAFETY: kill has no memory arguments; the PID is our unreaped child,
        // so it cannot have been reused.
        if unsafe { libc::kill(self.pid, sig) } != 0 {
            return Err(os("kill"));
        }
        Ok(())
    }

    /// Ends a child that still runs: SIGTERM, then SIGKILL after a grace
    /// period. Returns how it ended, or `None` when it had already been reaped.
    pub fn terminate(&mut self) -> Option<ChildState> {
        if self.reaped {
            return None;
        }
        let _ = self.signal(libc::SIGTERM);
        // A stopped process only acts on SIGTERM once continued.
        let _ = self.signal(libc::SIGCONT);
        let start = Instant::now();
        while start.elapsed() < TERM_GRACE {
            match self.wait(libc::WNOHANG) {
                Ok(s) if s.ended() => return Some(s),
                Err(_) => return None,
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = self.signal(libc::SIGKILL);
        self.wait(0).ok()
    }
}

impl Drop for PausedChild {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.signal(libc::SIGKILL);
            let _ = self.wait(0);
        }
    }
}

/// The child's side of [`PausedChild::spawn`]; never returns.
///
/// # Safety
///
/// Must run in the child of fork(), with pointers valid NUL-terminated arrays.
unsafe fn child(
    gate_r: &OwnedFd,
    gate_w: &OwnedFd,
    err_r: &OwnedFd,
    err_w: &OwnedFd,
    path: &CString,
    argp: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: async-signal-safe calls on valid descriptors and buffers, as
    // the caller guarantees.
    unsafe {
        // Our copies of the parent's ends: without closing the write end the
        // read below would never see EOF if the parent died.
        libc::close(gate_w.as_raw_fd());
        libc::close(err_r.as_raw_fd());
        // Rust ignores SIGPIPE and ignored signals survive execve(); give the
        // command the default a shell would.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut byte = 0u8;
        loop {
            let n = libc::read(gate_r.as_raw_fd(), (&raw mut byte).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            // The tracer went away before releasing us: do not run untraced.
            libc::_exit(127);
        }
        libc::close(gate_r.as_raw_fd());
        libc::execve(path.as_ptr(), argp.as_ptr(), envp.as_ptr());
        let errno = *libc::__errno_location();
        libc::write(
            err_w.as_raw_fd(),
            (&raw const errno).cast(),
            std::mem::size_of::<i32>(),
        );
        libc::_exit(127)
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into a valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os("pipe2"));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether the dynamic linker of a process stopped at `_dl_debug_state` has
/// finished mapping objects (`r_state == RT_CONSISTENT`) rather than being
/// about to start (`RT_ADD`). `r_debug` is the virtual address of `_r_debug`
/// in `interpreter`. `None` when it cannot be read.
pub fn linker_consistent(
    pid: u32,
    maps: &ProcessMaps,
    interpreter: &Path,
    elf: &ElfSummary,
    r_debug: u64,
) -> Option<bool> {
    let canonical = fs::canonicalize(interpreter).ok()?;
    let m = maps.mappings.iter().find(|m| match &m.backing {
        Backing::File(p) => *p == canonical || p == interpreter,
        _ => false,
    })?;
    // Load bias: where the file's virtual address 0 is in this process.
    let bias = m.start.wrapping_sub(elf.vaddr_of_offset(m.offset)?);
    let mem = fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut state = [0u8; 4];
    mem.read_exact_at(&mut state, bias.wrapping_add(r_debug + R_STATE_OFFSET))
        .ok()?;
    Some(i32::from_ne_bytes(state) == RT_CONSISTENT)
}

/// Signal name for messages (`SIGKILL`), or its number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        _ => return format!("signal {sig}"),
    };
    format!("{name} ({sig})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_commands_in_path_and_reports_missing_ones() {
        let sh = resolve_command(OsStr::new("sh")).unwrap();
        assert!(sh.is_absolute(), "{}", sh.display());
        let e = resolve_command(OsStr::new("no-such-command-xyz")).unwrap_err();
        assert!(e.to_string().contains("command not found"), "{e}");
        assert_eq!(
            resolve_command(OsStr::new("./x")).unwrap(),
            PathBuf::from("./x")
        );
    }

    #[test]
    fn scripts_lead_to_their_interpreter() {
        let dir = std::env::temp_dir().join(format!("perf-user-launch-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s");
        let sh = resolve_command(OsStr::new("sh")).unwrap();
        fs::write(&script, format!("#!{} -e\necho hi\n", sh.display())).unwrap();
        match first_image(&script).unwrap() {
            FirstImage::Dynamic { exe, interpreter } => {
                assert_eq!(exe, sh);
                assert!(interpreter.to_string_lossy().contains("ld"));
            }
            other => panic!("sh should be dynamically linked here: {other:?}"),
        }
        fs::write(&script, "plain text\n").unwrap();
        assert!(first_image(&script).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_released_child_runs_and_its_exit_is_seen() {
        let sh = resolve_command(OsStr::new("sh")).unwrap();
        let args: Vec<OsString> = ["sh", "-c", "exit 7"].iter().map(OsString::from).collect();
        let mut child = PausedChild::spawn(&sh, &args).unwrap();
        // Not released yet: it must still be waiting.
        thread::sleep(Duration::from_millis(50));
        assert_eq!(child.poll().unwrap(), ChildState::Running);
        child.release().unwrap();
        let start = Instant::now();
        loop {
            let s = child.poll().unwrap();
            if s.ended() {
                assert_eq!(s, ChildState::Exited(7));
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "child did not exit"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_failed_execve_is_reported() {
        let args = vec![OsString::from("x")];
        let mut child = PausedChild::spawn(Path::new("/nonexistent/program"), &args).unwrap();
        let e = child.release().unwrap_err();
        assert!(e.to_string().contains("No such file"), "{e}");
    }

    #[test]
    fn dropping_an_unreleased_child_kills_it() {
        let sh = resolve_command(OsStr::new("sh")).unwrap();
        let child = PausedChild::spawn(&sh, &[OsString::from("sh")]).unwrap();
        let pid = child.pid();
        drop(child);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
