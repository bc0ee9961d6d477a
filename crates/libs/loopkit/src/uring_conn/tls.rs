//! The io_uring driver's pump for a connection with TLS (`--tls-cert`). The ring's receives bring
//! ciphertext, kept unasked-for in `Buffers::pending` as plaintext is without TLS; when the session
//! wants to receive, what rustls has decrypted goes in first, then the next piece of the pending
//! ciphertext is decrypted. The session's output is encrypted as soon as it is there, and the
//! ciphertext goes out as one send from a ring-owned buffer (a short send goes on with the rest
//! before anything else). A failed handshake or record closes the connection.

use std::time::Instant;

use sys::uring::Ring;

use super::{index_of, Buffers, Conn, Flags, Progress, SEND};
use crate::conn::ExecuteAs;
use crate::session::Want;
use crate::tls::{DynExecute, Plain, Tls};
use std::os::fd::AsFd;

impl Conn {
    /// Kept out of line: the plaintext pump pays one test of `Conn::tls` for it, not a larger body.
    #[inline(never)]
    pub(super) fn pump_tls(
        &mut self,
        ring: &mut Ring,
        buffers: &mut Buffers,
        token: u64,
        now: Instant,
        executor: &mut ExecuteAs<'_>,
    ) -> Progress {
        let Some(mut tls) = self.tls.take() else { return Progress::Done };
        let progress = self.pump_with(&mut tls, ring, buffers, token, now, &mut DynExecute(executor));
        self.tls = Some(tls);
        progress
    }

    fn pump_with(
        &mut self,
        tls: &mut Tls,
        ring: &mut Ring,
        buffers: &mut Buffers,
        token: u64,
        now: Instant,
        executor: &mut DynExecute<'_>,
    ) -> Progress {
        let index = index_of(token);
        self.set(Flags::RECEIVING, false);
        loop {
            // A send in flight is output not yet taken by the client: as without TLS, the session
            // waits for its completion (and a connection that finishes is not closed under it).
            if self.has(Flags::SENDING) {
                return Progress::Wait;
            }
            if tls.wants_write() {
                let mut buf = buffers.send_buffer();
                while tls.wants_write() {
                    if tls.write_tls(&mut buf).is_err() {
                        return Progress::Done;
                    }
                }
                match ring.send(self.fd.as_fd(), buf, 0, SEND | token) {
                    Ok(_) => self.set(Flags::SENDING, true),
                    Err(_) => return Progress::Done,
                }
                return Progress::Wait;
            }
            match self.session.next(now, executor) {
                // As under epoll: before the handshake is done, output can only be the 408 of a
                // handshake that outran --header-timeout.
                Want::Send if tls.is_handshaking() => {
                    tls.timed_out();
                    return Progress::Done;
                }
                Want::Send => match tls.encrypt(self.session.output()) {
                    0 if !tls.wants_write() => return Progress::Done,
                    n => self.session.sent(n),
                },
                Want::Receive => match tls.deliver(&mut self.session) {
                    Plain::Delivered(_) => {}
                    Plain::Eof => self.session.received_eof(),
                    Plain::Empty if self.has(Flags::PENDING) => {
                        let Some(pending) = buffers.pending.get_mut(&index) else {
                            self.set(Flags::PENDING, false);
                            continue;
                        };
                        let mut ciphertext = pending.as_slice();
                        let before = ciphertext.len();
                        let result = tls.read_tls(&mut ciphertext, now, &mut self.session);
                        let took = before - ciphertext.len();
                        pending.drain(..took);
                        if pending.is_empty() {
                            buffers.forget(self, index);
                        }
                        if result.is_err() {
                            return Progress::Done;
                        }
                    }
                    Plain::Empty if self.has(Flags::EOF) => self.session.received_eof(),
                    Plain::Empty => return self.wait_for_input(ring, token),
                },
                Want::Wait => return Progress::Wait,
                Want::Yield => return Progress::ReadyAgain,
                want @ (Want::Finish { .. } | Want::Close | Want::Discard) => {
                    if let Some(progress) = self.end(want, ring, buffers, token, now) {
                        return progress;
                    }
                }
            }
        }
    }

    /// A send of ciphertext completed with `sent` bytes of `owned`: if that was not all, sends the
    /// rest now (`Ok(true)`); `Err` if the ring refused.
    pub(super) fn send_rest(
        &mut self,
        ring: &mut Ring,
        owned: &mut Option<Vec<u8>>,
        sent: usize,
        token: u64,
    ) -> Result<bool, ()> {
        let Some(mut buf) = owned.take_if(|buf| sent < buf.len()) else { return Ok(false) };
        buf.drain(..sent);
        ring.send(self.fd.as_fd(), buf, 0, SEND | token).map_err(|_| ())?;
        self.set(Flags::SENDING, true);
        Ok(true)
    }
}
