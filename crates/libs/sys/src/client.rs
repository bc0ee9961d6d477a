//! The client side of TCP, for the load generator: nonblocking connects (optionally from a chosen
//! source address), the error a connect left behind, and abortive close.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, connect, getpeername, getsockopt, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
    SockaddrStorage,
};

use crate::os_error;

/// `socket(2)` + `connect(2)`, nonblocking and close-on-exec, from `source` when given.
///
/// Returns the socket and whether it is connected already; if not, it becomes writable when the
/// handshake ends and [`take_error`] then says how it ended.
pub fn connect_tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<(OwnedFd, bool)> {
    connect_tcp_prepared(addr, source, |_| Ok(()))
}

/// Like [`connect_tcp`], with `prepare` applied to the socket before `connect(2)` (a socket option
/// that must be in place before the SYN leaves, such as a filter that drops the SYN-ACK).
pub fn connect_tcp_prepared(
    addr: SocketAddr,
    source: Option<IpAddr>,
    prepare: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
) -> io::Result<(OwnedFd, bool)> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None).map_err(|e| os_error("socket", addr, e))?;
    if let Some(source) = source {
        bind_source(fd.as_fd(), source)?;
    }
    prepare(fd.as_fd())?;
    let connected = connect_nonblocking(fd.as_fd(), addr)?;
    Ok((fd, connected))
}

/// `setsockopt(IP_BIND_ADDRESS_NO_PORT)` + `bind(2)` to `source:0`: fixes the source address now but
/// leaves the port to `connect(2)`, which then only needs the whole 4-tuple to be unique. A plain
/// `bind` to port 0 would reserve a port for this address alone, and run out after ~28k sockets.
fn bind_source(fd: BorrowedFd<'_>, source: IpAddr) -> io::Result<()> {
    let local = SocketAddr::new(source, 0);
    if source.is_ipv4() {
        setsockopt(&fd, sockopt::IpBindAddressNoPort, &true)
            .map_err(|e| os_error("setsockopt IP_BIND_ADDRESS_NO_PORT", local, e))?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(local)).map_err(|e| os_error("bind", local, e))
}

/// `connect(2)` on a nonblocking socket: `Ok(true)` if connected at once, `Ok(false)` while the
/// handshake is under way (`EINPROGRESS`).
fn connect_nonblocking(fd: BorrowedFd<'_>, addr: SocketAddr) -> io::Result<bool> {
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => Ok(true),
        Err(Errno::EINPROGRESS) => Ok(false),
        Err(e) => Err(os_error("connect", addr, e)),
    }
}

/// `getpeername(2)`: whether a nonblocking connect has completed. Over the loopback the handshake
/// usually completes inside `connect(2)` itself, which still says `EINPROGRESS`; asking saves
/// waiting a turn of the event loop for the socket to become writable.
pub fn is_connected(fd: BorrowedFd<'_>) -> bool {
    getpeername::<SockaddrStorage>(fd.as_raw_fd()).is_ok()
}

/// `getsockopt(SO_ERROR)`: the error a nonblocking connect ended with, if any (reading it clears it).
pub fn take_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let errno = getsockopt(&fd, sockopt::SocketError)
        .map_err(|e| os_error("getsockopt SO_ERROR fd", fd.as_raw_fd(), e))?;
    Ok((errno != 0).then(|| io::Error::from_raw_os_error(errno)))
}

/// `setsockopt(SO_LINGER, {on, 0})`: the next `close(2)` sends RST and drops unsent data instead of
/// a FIN, so neither side keeps the connection in TIME_WAIT or waits for it.
pub fn set_linger_zero(fd: BorrowedFd<'_>) -> io::Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    setsockopt(&fd, sockopt::Linger, &linger)
        .map_err(|e| os_error("setsockopt SO_LINGER fd", fd.as_raw_fd(), e))
}
