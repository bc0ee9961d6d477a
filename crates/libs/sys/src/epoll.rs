//! epoll(7): one kernel object per event loop that remembers which fds to watch and hands back, in one
//! call, the ones that became ready, each with the `u64` token it was registered with.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
pub use nix::sys::epoll::EpollFlags as Interest;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollTimeout};

use crate::os_error;

/// A connection's registration: readable, writable and peer-closed, edge-triggered, so each change is
/// reported once and never needs re-arming with `EPOLL_CTL_MOD`.
pub const CONNECTION: Interest =
    Interest::EPOLLIN.union(Interest::EPOLLOUT).union(Interest::EPOLLRDHUP).union(Interest::EPOLLET);

/// A listener or wake-up fd: readable, edge-triggered (the owner drains it until `EAGAIN`).
pub const READABLE_EDGE: Interest = Interest::EPOLLIN.union(Interest::EPOLLET);

/// An epoll instance, closed on drop.
#[derive(Debug)]
pub struct Poller {
    epoll: Epoll,
}

impl Poller {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| os_error("epoll_create1", "EPOLL_CLOEXEC", e))?;
        Ok(Self { epoll })
    }

    /// `epoll_ctl(EPOLL_CTL_ADD)`: watch `fd` for `interest`, reporting it with `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64, interest: Interest) -> io::Result<()> {
        self.epoll
            .add(fd, EpollEvent::new(interest, token))
            .map_err(|e| os_error("epoll_ctl ADD fd", fd.as_raw_fd(), e))
    }

    /// `epoll_ctl(EPOLL_CTL_MOD)`: watch `fd` for `interest` from now on, reporting it with `token`.
    /// For an `EPOLLONESHOT` registration this re-arms it; the kernel then checks `fd` at once, so
    /// what became ready while it was disarmed is reported, not lost.
    pub fn modify(&self, fd: BorrowedFd<'_>, token: u64, interest: Interest) -> io::Result<()> {
        self.epoll
            .modify(fd, &mut EpollEvent::new(interest, token))
            .map_err(|e| os_error("epoll_ctl MOD fd", fd.as_raw_fd(), e))
    }

    /// `epoll_ctl(EPOLL_CTL_DEL)`: stop watching `fd`. Closing an fd removes it too, as long as no
    /// other descriptor (a dup, or a copy in a forked child) still refers to the same socket.
    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.epoll.delete(fd).map_err(|e| os_error("epoll_ctl DEL fd", fd.as_raw_fd(), e))
    }

    /// `epoll_wait(2)`: blocks until something is ready or `timeout` passes (`None`: no limit).
    /// A signal interrupting the wait (`EINTR`) is reported as zero events, not as an error.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let timeout = match timeout {
            None => EpollTimeout::NONE,
            // Round up, so a loop waiting for a deadline does not wake just before it and spin.
            Some(t) => {
                let ms = t.as_micros().div_ceil(1000).min(i32::MAX as u128 - 1) as i32;
                EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::NONE)
            }
        };
        events.len = 0;
        match self.epoll.wait(&mut events.buf, timeout) {
            Ok(n) => {
                events.len = n;
                Ok(n)
            }
            Err(Errno::EINTR) => Ok(0),
            Err(e) => Err(os_error("epoll_wait fd", self.epoll.0.as_raw_fd(), e)),
        }
    }
}

impl AsFd for Poller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

/// The buffer `epoll_wait` fills.
#[derive(Debug)]
pub struct Events {
    buf: Vec<EpollEvent>,
    len: usize,
}

impl Events {
    /// Room for `capacity` events per wait; more stay in the kernel's ready list for the next wait.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: vec![EpollEvent::empty(); capacity], len: 0 }
    }

    /// The events of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf[..self.len].iter().map(|e| Event { token: e.data(), flags: e.events() })
    }
}

/// One ready fd: its token and what it is ready for.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub token: u64,
    pub flags: Interest,
}

impl Event {
    /// Data (or a new connection, on a listener) can be read.
    pub fn is_readable(&self) -> bool {
        self.flags.intersects(Interest::EPOLLIN | Interest::EPOLLPRI)
    }

    /// The send buffer has room again.
    pub fn is_writable(&self) -> bool {
        self.flags.contains(Interest::EPOLLOUT)
    }

    /// The peer closed or reset, or the socket has an error: a read will say which.
    pub fn is_closed(&self) -> bool {
        self.flags.intersects(Interest::EPOLLHUP | Interest::EPOLLERR | Interest::EPOLLRDHUP)
    }
}
