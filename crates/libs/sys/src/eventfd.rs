//! eventfd(2): a 64-bit counter behind a file descriptor. Writing adds to it and makes the fd readable;
//! reading returns the sum and resets it. One thread uses it to wake another's epoll loop, as memcached
//! does when it hands a new connection to a worker.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::os_error;

/// A wake-up for an event loop, registered in its epoll like any other fd.
#[derive(Debug)]
pub struct Waker {
    fd: EventFd,
}

impl Waker {
    /// `eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)`.
    pub fn new() -> io::Result<Self> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(|e| os_error("eventfd", "EFD_NONBLOCK", e))?;
        Ok(Self { fd })
    }

    /// `write(eventfd, 1)`: adds one to the counter and wakes whoever waits on it.
    pub fn wake(&self) -> io::Result<()> {
        match self.fd.write(1) {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()), // EAGAIN: the counter is saturated; it is awake anyway.
            Err(e) => Err(os_error("write eventfd fd", self.fd.as_fd().as_raw_fd(), e)),
        }
    }

    /// `read(eventfd)`: how many wakes arrived since the last drain (0 if none).
    pub fn drain(&self) -> io::Result<u64> {
        match self.fd.read() {
            Ok(n) => Ok(n),
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(os_error("read eventfd fd", self.fd.as_fd().as_raw_fd(), e)),
        }
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
