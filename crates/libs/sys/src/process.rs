//! Worker processes: forking them, tying them to their parent, and collecting them when they end.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
pub use nix::unistd::{ForkResult, Pid};

use crate::os_error;

/// How many locks of a [`crate::shared::LockedWords`] this process holds now (their guards count
/// themselves in and out): [`fork`] refuses to fork while one is held, since parent and child would
/// both hold the lock of a shared region.
pub(crate) static SHARED_LOCKS_HELD: AtomicUsize = AtomicUsize::new(0);

/// `fork(2)`: a child process that is a copy of this one, with copies of every fd and of every
/// `MAP_SHARED` mapping (the same memory, not a copy).
///
/// Only a single-threaded process may call it, and that is checked: the child gets only the calling
/// thread, so a lock another thread held at the fork (the allocator's, stdout's) would stay locked in
/// the child forever. Fails, without forking, when the process has more than one thread, or holds the
/// lock of a [`crate::shared::LockedWords`].
pub fn fork() -> io::Result<ForkResult> {
    if SHARED_LOCKS_HELD.load(Ordering::Acquire) > 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "fork pid {}: the lock of a shared region is held; parent and child would both hold it",
                std::process::id()
            ),
        ));
    }
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

/// Whether a process `pid` exists (`kill(pid, 0)`; a zombie not yet reaped still does).
pub fn exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    !matches!(signal::kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// `_exit(2)`: ends this process now, running no exit handler and flushing no buffer — what a
/// forked child that must not write out a copy of its parent's buffers ends with.
pub fn exit_now(status: i32) -> ! {
    // SAFETY: `_exit` takes no pointer and touches no memory of this process; it cannot fail.
    unsafe { libc::_exit(status) }
}

/// `kill(pid, SIGTERM)`: asks a process to finish what it is doing and exit.
pub fn terminate(pid: Pid) -> io::Result<()> {
    signal::kill(pid, Signal::SIGTERM).map_err(|e| os_error("kill SIGTERM pid", pid, e))
}

/// `kill(pid, SIGKILL)`: ends a process at once; it gets no say.
pub fn kill(pid: Pid) -> io::Result<()> {
    signal::kill(pid, Signal::SIGKILL).map_err(|e| os_error("kill SIGKILL pid", pid, e))
}

/// Makes `command`'s child refuse `io_uring_setup(2)` with `EPERM`, as a container's default seccomp
/// profile does: `prctl(PR_SET_NO_NEW_PRIVS)` + `seccomp(SECCOMP_SET_MODE_FILTER)` with a four-line
/// BPF program, installed between fork and exec. Every other system call is allowed. For the test
/// that lab-uring's refusal line is what a platform without io_uring gets.
pub fn deny_io_uring_setup(command: &mut std::process::Command) {
    deny_system_call(command, libc::SYS_io_uring_setup);
}

/// Makes `command`'s child refuse the system call numbered `nr` with `EPERM` (as
/// [`deny_io_uring_setup`] does for `io_uring_setup`; `bpf(2)` for lab-reuseport's refusal line).
pub fn deny_system_call(command: &mut std::process::Command, nr: libc::c_long) {
    use std::os::unix::process::CommandExt;
    const LOAD_NR: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JUMP_EQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let filter = [
        // A = seccomp_data.nr (offset 0); if A == nr, skip to the EPERM return.
        libc::sock_filter { code: LOAD_NR, jt: 0, jf: 0, k: 0 },
        libc::sock_filter { code: JUMP_EQ, jt: 1, jf: 0, k: nr as u32 },
        libc::sock_filter { code: RET, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
        libc::sock_filter { code: RET, jt: 0, jf: 0, k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32 },
    ];
    let hook = move || {
        let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
        // SAFETY: prctl with integer arguments only; async-signal-safe, as the child of a fork needs.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `program` points to `filter`, alive for the call; the kernel copies the program.
        let set = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &program as *const libc::sock_fprog,
            )
        };
        match set {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    };
    // SAFETY: the hook runs in the forked child before exec and makes only the two system calls
    // above, allocating nothing and taking no lock.
    unsafe { command.pre_exec(hook) };
}
