//! Worker processes: forking them, tying them to their parent, and collecting them when they end.

use std::fmt;
use std::io;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
pub use nix::unistd::{ForkResult, Pid};

use crate::os_error;

/// `fork(2)`: a child process that is a copy of this one, with copies of every fd and of every
/// `MAP_SHARED` mapping (the same memory, not a copy).
///
/// Only a single-threaded process may call it, and that is checked: the child gets only the calling
/// thread, so a lock another thread held at the fork (the allocator's, stdout's) would stay locked in
/// the child forever. Fails, without forking, when the process has more than one thread.
pub fn fork() -> io::Result<ForkResult> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "fork pid {}: the process has {threads} threads; only a single-threaded one may fork",
                std::process::id()
            ),
        ));
    }
    // SAFETY: the process has exactly one thread (checked just above; only this thread could have
    // started another since), so no lock is held by a thread that will not exist in the child, and
    // the child may run any code, not only async-signal-safe functions.
    unsafe { nix::unistd::fork() }.map_err(|e| os_error("fork pid", std::process::id(), e))
}

/// The number of threads in this process, from the `Threads:` line of `/proc/self/status`.
fn thread_count() -> io::Result<usize> {
    const PATH: &str = "/proc/self/status";
    let status =
        std::fs::read_to_string(PATH).map_err(|e| io::Error::new(e.kind(), format!("read {PATH}: {e}")))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("read {PATH}: no Threads: line")))
}

/// `prctl(PR_SET_PDEATHSIG, SIGTERM)` in a forked child: the kernel sends it SIGTERM when `parent`
/// dies, so no worker outlives its supervisor. Fails if `parent` already died before the call (the
/// child then has a new parent, and the signal would never come).
pub fn die_with_parent(parent: Pid) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .map_err(|e| os_error("prctl PR_SET_PDEATHSIG SIGTERM pid", std::process::id(), e))?;
    if nix::unistd::getppid() != parent {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("prctl PR_SET_PDEATHSIG SIGTERM: parent pid {parent} exited before it"),
        ));
    }
    Ok(())
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It called `exit` with this status.
    Status(i32),
    /// A signal killed it.
    Signal(Signal),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Status(code) => write!(f, "status {code}"),
            Ended::Signal(signal) => write!(f, "signal {} ({signal})", *signal as i32),
        }
    }
}

/// `waitpid(-1, WNOHANG)`: collects one child that has ended, if there is one, and says how it
/// ended. `Ok(None)`: every child is still running, or there is no child.
pub fn reap_any() -> io::Result<Option<(Pid, Ended)>> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => return Ok(Some((pid, Ended::Status(code)))),
            Ok(WaitStatus::Signaled(pid, signal, _)) => return Ok(Some((pid, Ended::Signal(signal)))),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(None),
            // Stopped or continued: reported only to those who ask (WUNTRACED); the child lives on.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(os_error("waitpid pid", -1, e)),
        }
    }
}

/// `kill(pid, SIGTERM)`: asks a process to finish what it is doing and exit.
pub fn terminate(pid: Pid) -> io::Result<()> {
    signal::kill(pid, Signal::SIGTERM).map_err(|e| os_error("kill SIGTERM pid", pid, e))
}

/// `kill(pid, SIGKILL)`: ends a process at once; it gets no say.
pub fn kill(pid: Pid) -> io::Result<()> {
    signal::kill(pid, Signal::SIGKILL).map_err(|e| os_error("kill SIGKILL pid", pid, e))
}
