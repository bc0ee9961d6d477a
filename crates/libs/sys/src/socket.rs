//! TCP sockets: listening, accepting, socket options and the bytes in between.

use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::socket::{
    bind, getsockname, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
    SockaddrStorage,
};

use crate::{last_os_error, os_error};

/// A listening socket: `socket(2)`, `SO_REUSEADDR`, optionally `SO_REUSEPORT`, `bind(2)`, `listen(2)`.
///
/// The socket is nonblocking and close-on-exec. `SO_REUSEADDR` lets a restarted server bind while old
/// connections sit in TIME_WAIT. `SO_REUSEPORT` lets several sockets bind the same address: the kernel
/// then gives each its own SYN and accept queues and spreads new connections over them.
pub fn listen_tcp(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None).map_err(|e| os_error("socket", addr, e))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| os_error("setsockopt SO_REUSEADDR", addr, e))?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)
            .map_err(|e| os_error("setsockopt SO_REUSEPORT", addr, e))?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(|e| os_error("bind", addr, e))?;
    // nix's `Backlog` refuses values above SOMAXCONN; the kernel instead caps them silently, which is
    // the behaviour this lab wants to show, so listen(2) is called directly.
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket we own; listen(2) takes no pointers.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } != 0 {
        return Err(last_os_error("listen", addr));
    }
    Ok(fd)
}

/// `accept4(2)` with `SOCK_NONBLOCK | SOCK_CLOEXEC`: takes the oldest connection off the accept queue.
///
/// Fails with `WouldBlock` when the queue is empty. The peer address is not asked for: no server here
/// needs it, and copying it out costs time on the hottest path of `--close` benchmarks.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = nix::sys::socket::accept4(listener.as_raw_fd(), flags).map_err(io::Error::from)?;
    // SAFETY: accept4 succeeded, so `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The socket's inode number (`fstat`'s `st_ino`): how `/proc/net/tcp` names it.
pub fn inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let stat = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| os_error("fstat fd", fd.as_raw_fd(), e))?;
    Ok(stat.st_ino)
}

/// `setsockopt(TCP_NODELAY)`: send small writes at once instead of waiting for Nagle's algorithm to
/// coalesce them with the next one (which, against a delayed ACK, can stall a response for 40 ms).
pub fn set_nodelay(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    setsockopt(&fd, sockopt::TcpNoDelay, &on)
        .map_err(|e| os_error("setsockopt TCP_NODELAY fd", fd.as_raw_fd(), e))
}

/// `getsockname(2)`: the address a socket is bound to (the real port after binding port 0).
pub fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let storage: SockaddrStorage =
        getsockname(fd.as_raw_fd()).map_err(|e| os_error("getsockname fd", fd.as_raw_fd(), e))?;
    if let Some(v4) = storage.as_sockaddr_in() {
        return Ok(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    if let Some(v6) = storage.as_sockaddr_in6() {
        return Ok(SocketAddr::V6(SocketAddrV6::new(v6.ip(), v6.port(), v6.flowinfo(), v6.scope_id())));
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("getsockname fd {}: not an IP socket", fd.as_raw_fd()),
    ))
}

/// What the kernel says about a listening socket's accept queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    /// Connections whose handshake is complete, waiting for `accept(2)`.
    pub accept_queue: u32,
    /// The queue's capacity: the backlog given to listen(2), capped at net.core.somaxconn.
    pub backlog: u32,
}

/// `getsockopt(TCP_INFO)` on a listener: for a socket in LISTEN state the kernel reports the accept
/// queue's length in `tcpi_unacked` and its capacity in `tcpi_sacked` (the same figures `ss -ltn`
/// shows as Recv-Q and Send-Q). nix has no TCP_INFO, hence libc.
pub fn listen_queue(listener: BorrowedFd<'_>) -> io::Result<ListenQueue> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes and `len` holds the buffer's size.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(last_os_error("getsockopt TCP_INFO fd", listener.as_raw_fd()));
    }
    Ok(ListenQueue { accept_queue: info.tcpi_unacked, backlog: info.tcpi_sacked })
}

/// Reads `net.core.somaxconn`, the ceiling the kernel puts on every listen(2) backlog.
pub fn somaxconn() -> io::Result<u32> {
    const PATH: &str = "/proc/sys/net/core/somaxconn";
    let text =
        std::fs::read_to_string(PATH).map_err(|e| io::Error::new(e.kind(), format!("read {PATH}: {e}")))?;
    text.trim().parse().map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidData, format!("read {PATH}: not a number: {text:?}"))
    })
}

/// `SO_ATTACH_REUSEPORT_CBPF` with a three-instruction classic BPF program that returns the number
/// of the CPU handling the packet, modulo `sockets`: within a SO_REUSEPORT group the connection then
/// goes to the socket at that index, so the worker pinned to CPU *c* whose socket was bound
/// (*c* mod `sockets`)-th gets that CPU's connections — the recipe of `socket(7)` and the kernel's
/// `Documentation/networking/filter.rst`. (Without the modulo, an index past the group's end makes
/// the kernel fall back to its hash.) nix lacks it, hence libc.
pub fn attach_reuseport_cpu_steering(listener: BorrowedFd<'_>, sockets: u32) -> io::Result<()> {
    let instruction = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let mut program = [
        // A = the current CPU number (SKF_AD_OFF + SKF_AD_CPU).
        instruction(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32),
        // A %= sockets
        instruction(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, sockets.max(1)),
        // return A: the index of the socket in the group.
        instruction(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: `fprog` points at `program`, both alive for the duration of the call; the kernel copies
    // the program and keeps no pointer into our memory.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last_os_error("setsockopt SO_ATTACH_REUSEPORT_CBPF fd", listener.as_raw_fd()));
    }
    Ok(())
}

/// `setsockopt(SO_ATTACH_FILTER)` with the one-instruction classic BPF program `ret #0`: the socket
/// drops every packet that reaches it before TCP sees it. On a connecting socket the SYN-ACK is then
/// never answered, so the server keeps a half-open connection in its SYN queue: a SYN-flood client
/// built from an ordinary socket (lab-exp syn-flood). nix lacks socket filters, hence libc.
pub fn drop_all_input(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut program = [libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 }];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: `fprog` points at `program`, both alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last_os_error("setsockopt SO_ATTACH_FILTER fd", fd.as_raw_fd()));
    }
    Ok(())
}

/// What `getsockopt(TCP_INFO)` says about a connected socket: the figures lab-exp reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// Smoothed round-trip time, µs.
    pub rtt_us: u32,
    /// Unanswered zero-window probes (or keepalives) outstanding.
    pub probes: u8,
    /// Exponential backoff of the retransmit timer.
    pub backoff: u8,
    /// Segments retransmitted over the connection's life.
    pub total_retrans: u32,
    /// The receive space the kernel's autotuning aims at, bytes.
    pub rcv_space: u32,
    /// Sender's congestion window, segments.
    pub snd_cwnd: u32,
}

/// `getsockopt(TCP_INFO)` on a connected socket. nix has no TCP_INFO, hence libc.
pub fn conn_info(fd: BorrowedFd<'_>) -> io::Result<ConnInfo> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes and `len` holds the buffer's size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(last_os_error("getsockopt TCP_INFO fd", fd.as_raw_fd()));
    }
    Ok(ConnInfo {
        rtt_us: info.tcpi_rtt,
        probes: info.tcpi_probes,
        backoff: info.tcpi_backoff,
        total_retrans: info.tcpi_total_retrans,
        rcv_space: info.tcpi_rcv_space,
        snd_cwnd: info.tcpi_snd_cwnd,
    })
}

/// `read(2)` into `buf`; `Ok(0)` means the peer closed its side.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from)
}

/// `ioctl(FIONREAD)`: how many bytes the socket has received and not yet handed to a read. nix has
/// no FIONREAD, hence libc.
pub fn bytes_readable(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to `n`, alive and
    // writable for the whole call; the fd is borrowed, so open.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return Err(last_os_error("ioctl(FIONREAD)", fd.as_raw_fd()));
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `send(2)` with `MSG_NOSIGNAL`: like write(2), but a peer that has gone away yields `EPIPE` rather
/// than a SIGPIPE for the whole process.
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    nix::sys::socket::send(fd.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
}

/// `sendmsg(2)` of several buffers with `MSG_NOSIGNAL`: one system call for what `write` would send
/// in as many (a TLS connection's records, each in its own buffer).
pub fn write_vectored(fd: BorrowedFd<'_>, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    nix::sys::socket::sendmsg::<()>(fd.as_raw_fd(), bufs, &[], MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)
}

/// A socket as a byte stream for a library that does its own I/O through `Read` and `Write` (rustls's
/// `read_tls` and `write_tls`): one `read`, one vectored `send`, and whether the last read filled
/// the room it was given (a short read emptied the socket: edge-triggered epoll reports the next
/// arrival).
pub struct Stream<'a> {
    fd: BorrowedFd<'a>,
    filled: bool,
}

impl<'a> Stream<'a> {
    pub fn new(fd: BorrowedFd<'a>) -> Self {
        Stream { fd, filled: false }
    }

    /// Whether the last read filled the buffer it was given.
    pub fn filled(&self) -> bool {
        self.filled
    }
}

impl io::Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = read(self.fd, buf)?;
        self.filled = n == buf.len();
        Ok(n)
    }
}

impl io::Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write(self.fd, buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        write_vectored(self.fd, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `shutdown(SHUT_WR)`: sends FIN after what is queued; reading stays possible.
pub fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Write)
        .map_err(|e| os_error("shutdown SHUT_WR fd", fd.as_raw_fd(), e))
}

/// `shutdown(SHUT_RD)` on a listening socket: the kernel stops listening (new SYNs are refused and
/// connections still in the accept queue are reset), even while other descriptors of it stay open.
pub fn stop_listening(listener: BorrowedFd<'_>) -> io::Result<()> {
    nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Read)
        .map_err(|e| os_error("shutdown SHUT_RD fd", listener.as_raw_fd(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::os::fd::AsFd;

    fn loopback_listener(backlog: u32) -> (OwnedFd, SocketAddr) {
        let fd = listen_tcp("127.0.0.1:0".parse().unwrap(), backlog, false).unwrap();
        let addr = local_addr(fd.as_fd()).unwrap();
        (fd, addr)
    }

    #[test]
    fn tcp_info_reports_the_accept_queue_as_connections_complete_and_are_accepted() {
        let (listener, addr) = loopback_listener(7);
        let empty = listen_queue(listener.as_fd()).unwrap();
        assert_eq!(empty, ListenQueue { accept_queue: 0, backlog: 7.min(somaxconn().unwrap()) });
        let _clients: Vec<_> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert_eq!(listen_queue(listener.as_fd()).unwrap().accept_queue, 3);
        let _accepted = accept(listener.as_fd()).unwrap();
        assert_eq!(listen_queue(listener.as_fd()).unwrap().accept_queue, 2);
    }

    #[test]
    fn accept_on_an_empty_queue_would_block() {
        let (listener, _) = loopback_listener(16);
        assert_eq!(accept(listener.as_fd()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn errors_name_the_call_and_the_address() {
        let (_listener, addr) = loopback_listener(16);
        let error = listen_tcp(addr, 16, false).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(error.to_string(), format!("bind {addr}: Address already in use"));
    }

    #[test]
    fn reuse_port_lets_two_sockets_share_a_port() {
        let first = listen_tcp("127.0.0.1:0".parse().unwrap(), 16, true).unwrap();
        let addr = local_addr(first.as_fd()).unwrap();
        let second = listen_tcp(addr, 16, true).unwrap();
        assert_eq!(local_addr(second.as_fd()).unwrap(), addr);
    }

    #[test]
    fn stop_listening_refuses_new_connections() {
        let (listener, addr) = loopback_listener(16);
        stop_listening(listener.as_fd()).unwrap();
        assert_eq!(TcpStream::connect(addr).unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
    }
}
