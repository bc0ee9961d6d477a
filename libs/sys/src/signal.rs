//! SIGINT and SIGTERM as a readable file descriptor (signalfd(2)), so that an event loop learns about
//! shutdown the same way it learns about a new connection, with no async-signal-safety puzzles.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

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
        let set = termination_signals();
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
