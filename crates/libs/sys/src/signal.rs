//! SIGINT and SIGTERM as a readable file descriptor (signalfd(2)), so that an event loop learns about
//! shutdown the same way it learns about a new connection, with no async-signal-safety puzzles; and,
//! for a program that starts others, termination signals caught by a handler that writes them into
//! a pipe ([`CaughtSignals`]), so that what it starts inherits no blocked mask.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
pub use nix::sys::signal::Signal;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::pipe2;

use crate::os_error;

/// The signals that ask a server to drain and exit.
fn termination_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// A signalfd for SIGINT and SIGTERM.
#[derive(Debug)]
pub struct ShutdownSignals {
    fd: SignalFd,
}

impl ShutdownSignals {
    /// `pthread_sigmask(SIG_BLOCK, {INT, TERM})` + `signalfd(NONBLOCK | CLOEXEC)`.
    ///
    /// Call it before spawning threads: they inherit the mask, so the signals stay pending for the
    /// process and are read from this fd instead of killing it.
    pub fn new() -> io::Result<Self> {
        Self::with(&[])
    }

    /// [`ShutdownSignals::new`] that also takes `more` signals through the fd (lab-reuseport's
    /// supervisor: SIGTTIN, SIGTTOU and SIGHUP change its workers). They stay blocked in the
    /// processes it forks.
    pub fn with(more: &[Signal]) -> io::Result<Self> {
        let mut set = termination_signals();
        for &signal in more {
            set.add(signal);
        }
        set.thread_block().map_err(|e| os_error("pthread_sigmask", "SIG_BLOCK INT,TERM", e))?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| os_error("signalfd", "INT,TERM", e))?;
        Ok(Self { fd })
    }

    /// Reads one pending signal, if any (its number, e.g. 15 for SIGTERM).
    pub fn read(&self) -> io::Result<Option<i32>> {
        match self.fd.read_signal() {
            Ok(info) => Ok(info.map(|i| i.ssi_signo as i32)),
            Err(e) => Err(os_error("read signalfd fd", self.fd.as_fd().as_raw_fd(), e)),
        }
    }
}

impl AsFd for ShutdownSignals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Where [`CaughtSignals`]' handler writes: the pipe's write end, -1 until one is made.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// The handler: one byte, the signal's number, down the pipe. `write(2)` is async-signal-safe, and
/// the write end is nonblocking, so a full pipe (signals nobody read) drops the byte, never blocks.
extern "C" fn write_signal_number(signo: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signo as u8;
        let saved = Errno::last_raw();
        // SAFETY: `byte` is alive for the call and one byte long; `fd` is the pipe's write end,
        // open for the rest of the process (never closed once stored).
        let _ = unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
        Errno::set_raw(saved);
    }
}

/// Termination signals caught by a handler (the self-pipe way), for a program that starts other
/// programs and must clean up after them (lab-bench): unlike [`ShutdownSignals`], nothing is
/// blocked, so the programs it starts inherit no signal mask (a blocked mask survives `exec`, and
/// the standard library's `Command` does not reset it) and a caught signal's handler is reset to the
/// default by `exec`.
#[derive(Debug)]
pub struct CaughtSignals {
    read: File,
}

impl CaughtSignals {
    /// A pipe (`pipe2(O_CLOEXEC)`, the write end nonblocking) and `sigaction(SA_RESTART)` for each
    /// of `signals`, whose handler writes the signal's number into it. One per process.
    pub fn catch(signals: &[Signal]) -> io::Result<Self> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| os_error("pipe2", "O_CLOEXEC", e))?;
        fcntl(write.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| os_error("fcntl F_SETFL O_NONBLOCK fd", write.as_raw_fd(), e))?;
        if PIPE_WRITE.compare_exchange(-1, write.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "CaughtSignals: one per process"));
        }
        // Open for the rest of the process: the handler may write to it at any time.
        let _ = write.into_raw_fd();
        let action =
            SigAction::new(SigHandler::Handler(write_signal_number), SaFlags::SA_RESTART, SigSet::empty());
        for &signal in signals {
            // SAFETY: the handler only loads an atomic, calls write(2) and saves and restores errno,
            // all async-signal-safe; it touches no lock and allocates nothing.
            unsafe { sigaction(signal, &action) }.map_err(|e| os_error("sigaction", signal, e))?;
        }
        Ok(Self { read: File::from(read) })
    }

    /// Waits for the next caught signal and returns its number (15 for SIGTERM).
    pub fn wait(&self) -> io::Result<i32> {
        let mut byte = [0u8; 1];
        loop {
            match (&self.read).read(&mut byte) {
                Ok(1) => return Ok(i32::from(byte[0])),
                Ok(_) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read signal pipe: closed"))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("read signal pipe: {e}"))),
            }
        }
    }
}
