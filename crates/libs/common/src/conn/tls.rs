//! [`Conn::pump`] for a connection with TLS (`--tls-cert`): the same steps as the plaintext pump,
//! with the TLS layer between the socket and the session. Ciphertext waiting to be written (a
//! handshake flight, encrypted responses) goes out first, so while the socket is full the
//! connection reads nothing, as without TLS; what rustls has decrypted goes into the session before
//! the socket is read again; a read that does not fill rustls's buffer emptied the socket.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use super::{Conn, Progress, READ_BUDGET};
use crate::session::{Execute, Want};
use crate::tls::Plain;

/// The socket as rustls's transport: one `read`, one vectored `send`, and whether the read filled
/// the room it was given.
struct Socket<'a> {
    fd: BorrowedFd<'a>,
    filled: bool,
}

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = sys::socket::read(self.fd, buf)?;
        self.filled = n == buf.len();
        Ok(n)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::socket::write(self.fd, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        sys::socket::write_vectored(self.fd, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn {
    pub(super) fn pump_tls(&mut self, now: Instant, executor: &mut impl Execute) -> Progress {
        let Conn { fd, session, readable, hung_up, tls: Some(tls) } = self else { return Progress::Done };
        let fd = fd.as_fd();
        let mut budget = READ_BUDGET;
        loop {
            if tls.wants_write() {
                match tls.write_tls(&mut Socket { fd, filled: false }) {
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Wait,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Progress::Done,
                }
            }
            match session.next(now, executor) {
                // Before the handshake is done the session can have heard no request: its output
                // is the 408 of a handshake that outran --header-timeout, which no one could read.
                Want::Send if tls.is_handshaking() => {
                    tls.timed_out();
                    return Progress::Done;
                }
                Want::Send => match tls.encrypt(session.output()) {
                    0 if !tls.wants_write() => return Progress::Done,
                    n => session.sent(n),
                },
                Want::Receive => match tls.deliver(session) {
                    Plain::Delivered(n) => budget = budget.saturating_sub(n),
                    Plain::Eof => session.received_eof(),
                    Plain::Empty if !*readable => return Progress::Wait,
                    Plain::Empty if budget == 0 => return Progress::ReadyAgain,
                    Plain::Empty => {
                        let mut socket = Socket { fd, filled: false };
                        match tls.read_tls(&mut socket, now, session) {
                            Ok(0) => session.received_eof(),
                            Ok(n) => {
                                budget = budget.saturating_sub(n);
                                // As in `Conn::read`: a short read emptied the socket, unless the
                                // FIN is in it too.
                                if !socket.filled && !*hung_up {
                                    *readable = false;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *readable = false,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                // The alert rustls queued for a bad handshake or record, if the
                                // socket takes it; then close.
                                let _ = tls.write_tls(&mut Socket { fd, filled: false });
                                return Progress::Done;
                            }
                        }
                    }
                },
                Want::Wait => return Progress::Wait,
                Want::Yield => return Progress::ReadyAgain,
                Want::Finish { unread_input } if unread_input || *readable => {
                    tls.close_notify();
                    let _ = tls.write_tls(&mut Socket { fd, filled: false });
                    if sys::socket::shutdown_write(fd).is_err() {
                        return Progress::Done;
                    }
                    session.linger(now);
                }
                Want::Finish { .. } | Want::Close => {
                    tls.close_notify();
                    let _ = tls.write_tls(&mut Socket { fd, filled: false });
                    return Progress::Done;
                }
                Want::Discard => return discard_input(fd),
            }
        }
    }
}

/// Lingering: reads and drops what the client still sends (ciphertext, unread), until it closes.
fn discard_input(fd: BorrowedFd<'_>) -> Progress {
    let mut sink = [0u8; 4096];
    loop {
        match sys::socket::read(fd, &mut sink) {
            Ok(0) => return Progress::Done,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Progress::Done,
        }
    }
}
