//! A one-shot timer as a file descriptor (`timerfd_create(2)`), to put in an epoll set: it becomes
//! readable when it expires, with nanosecond resolution where epoll_wait's own timeout has
//! milliseconds, and its expiry arrives as an event like any other.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::os_error;

#[derive(Debug)]
pub struct Timer {
    fd: TimerFd,
}

impl Timer {
    /// `timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)`, disarmed.
    pub fn new() -> io::Result<Self> {
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let fd = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)
            .map_err(|e| os_error("timerfd_create", "CLOCK_MONOTONIC", e))?;
        Ok(Timer { fd })
    }

    /// `timerfd_settime(2)`, relative: expire once, `after` from now. Arming again replaces the
    /// previous expiry and clears the count of expiries not yet read.
    pub fn set_after(&self, after: Duration) -> io::Result<()> {
        // A zero it_value would disarm the timer instead of firing it at once.
        let after = TimeSpec::from_duration(after.max(Duration::from_nanos(1)));
        self.fd
            .set(Expiration::OneShot(after), TimerSetTimeFlags::empty())
            .map_err(|e| os_error("timerfd_settime fd", self.fd.as_fd().as_raw_fd(), e))
    }

    /// `read(2)` of the 8-byte expiry count, so the fd stops being readable; nothing to read is fine.
    pub fn clear(&self) -> io::Result<()> {
        let mut count = [0u8; 8];
        match nix::unistd::read(self.fd.as_fd().as_raw_fd(), &mut count) {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(os_error("read timerfd", self.fd.as_fd().as_raw_fd(), e)),
        }
    }
}

impl AsFd for Timer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds: a vDSO call, no system call, and the clock a
/// BPF program reads with `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(now) => now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64,
        Err(_) => 0, // CLOCK_MONOTONIC cannot fail on Linux
    }
}
