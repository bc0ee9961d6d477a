//! The steps of [`Conn::pump`] that differ for a connection with TLS (`--tls-cert`), each kept out of
//! line so that the plaintext pump pays only a test of `Conn::tls` where they branch off. The
//! session is the same: what it hands out to send is encrypted and written at once, and while the
//! socket is full the connection reads nothing, as without TLS; what rustls has decrypted goes into
//! the session before the socket is read again; a read that does not fill rustls's buffer emptied
//! the socket. A handshake that fails sends its alert if the socket takes it, and closes.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use super::{Conn, Progress};
use crate::tls::Plain;
use sys::socket::Stream;

/// What [`Conn::tls_receive`] leaves the pump to do.
pub(super) enum TlsStep {
    /// Return this.
    Stop(Progress),
    /// Ask the session again.
    Next,
    /// Decrypted bytes wait: `Conn::read` takes them.
    Plaintext,
}

impl Conn {
    /// Writes the ciphertext that waits; `Some` if the pump must stop: the socket is full (wait for
    /// `EPOLLOUT`) or broken.
    #[inline(never)]
    pub(super) fn tls_flush(&mut self) -> Option<Progress> {
        let Conn { fd, tls: Some(tls), .. } = self else { return None };
        while tls.wants_write() {
            match tls.write_tls(&mut Stream::new(fd.as_fd())) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Progress::Wait),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(Progress::Done),
            }
        }
        None
    }

    /// `Want::Send`: encrypts the session's output and writes it.
    #[inline(never)]
    pub(super) fn tls_send(&mut self) -> Option<Progress> {
        let Conn { session, tls: Some(tls), .. } = self else { return Some(Progress::Done) };
        // Before the handshake is done the session can have heard no request: its output is the
        // 408 of a handshake that outran --header-timeout, which no one could read.
        if tls.is_handshaking() {
            tls.timed_out();
            return Some(Progress::Done);
        }
        match tls.encrypt(session.output()) {
            0 if !tls.wants_write() => return Some(Progress::Done),
            n => session.sent(n),
        }
        self.tls_flush()
    }

    /// `Want::Receive`: what rustls has decrypted first (for `Conn::read`), else one read of
    /// ciphertext (and, during the handshake, the flight it answers with).
    #[inline(never)]
    pub(super) fn tls_receive(&mut self, now: Instant, budget: &mut usize) -> TlsStep {
        let Conn { fd, session, readable, hung_up, tls: Some(tls) } = self else {
            return TlsStep::Stop(Progress::Done);
        };
        match tls.plaintext_waiting() {
            Plain::Delivered(_) => return TlsStep::Plaintext,
            Plain::Eof => session.received_eof(),
            Plain::Empty if !*readable => return TlsStep::Stop(Progress::Wait),
            Plain::Empty if *budget == 0 => return TlsStep::Stop(Progress::ReadyAgain),
            Plain::Empty => {
                let mut socket = Stream::new(fd.as_fd());
                match tls.read_tls(&mut socket, now, session) {
                    Ok(0) => session.received_eof(),
                    Ok(n) => {
                        *budget = budget.saturating_sub(n);
                        // As in `Conn::read`: a short read emptied the socket, unless the FIN is in
                        // it too.
                        if !socket.filled() && !*hung_up {
                            *readable = false;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => *readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // The alert rustls queued for a bad handshake or record, if the socket
                        // takes it; then close.
                        let _ = tls.write_tls(&mut Stream::new(fd.as_fd()));
                        return TlsStep::Stop(Progress::Done);
                    }
                }
                if tls.wants_write() {
                    // The handshake's next flight.
                    if let Some(progress) = self.tls_flush() {
                        return TlsStep::Stop(progress);
                    }
                }
            }
        }
        TlsStep::Next
    }

    /// The connection ends: a `close_notify`, if the socket takes it.
    #[inline(never)]
    pub(super) fn tls_close(&mut self) {
        if let Conn { fd, tls: Some(tls), .. } = self {
            tls.close_notify();
            let _ = tls.write_tls(&mut Stream::new(fd.as_fd()));
        }
    }
}
