//! One client connection: its socket, the requests in flight on it (answered in order), its response
//! parser, and the bytes it still has to write. What to send and when is the worker's business.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use crate::request::Requests;
use crate::response::{Response, ResponseParser, Step};
use crate::stats::{ErrorClass, Recorder};
use sys::socket::Stream;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No socket.
    Closed,
    /// `connect(2)` is under way since then.
    Connecting {
        since: Instant,
    },
    /// https://: TCP is up, the TLS handshake is under way (its time counts in the connect's).
    Handshaking {
        since: Instant,
    },
    Open,
    /// The server said it will close after its last response: nothing more is sent.
    Closing,
}

/// A request sent (or, while connecting, queued) and not yet answered.
#[derive(Debug, Clone, Copy)]
pub struct InFlight {
    /// When it was due: its scheduled time in open loop, else when it was queued.
    pub due: Instant,
    pub sent: Instant,
    /// Its path in the mix.
    pub path: u32,
    /// Due in the measured part of the run, so it counts in the results.
    pub measured: bool,
}

/// Why a connection is given up, for the error count and the report's example of it.
pub type Failure = (ErrorClass, String);

#[derive(Debug)]
pub struct Connection {
    pub socket: Option<OwnedFd>,
    /// Bumped for every new socket, and part of its epoll token, so that an event left over from a
    /// previous socket in this slot is recognised and ignored.
    pub generation: u32,
    pub phase: Phase,
    pub in_flight: VecDeque<InFlight>,
    parser: ResponseParser,
    /// The start of a response that a read cut short, presented again with the next read.
    unparsed: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    /// When to open this slot again after a failed connect.
    pub retry_at: Option<Instant>,
    /// Requests the previous connection in this slot carried past a response that announced the
    /// close, to send again on the next.
    pub carried: Vec<InFlight>,
    /// Whether this slot is in the worker's list of connections free for another request.
    pub listed_free: bool,
    /// https://: the TLS session over `socket`; `out` then holds plaintext not yet encrypted.
    tls: Option<Box<rustls::ClientConnection>>,
}

impl Default for Connection {
    fn default() -> Self {
        Self {
            socket: None,
            generation: 0,
            phase: Phase::Closed,
            in_flight: VecDeque::new(),
            parser: ResponseParser::default(),
            unparsed: Vec::new(),
            out: Vec::new(),
            written: 0,
            retry_at: None,
            carried: Vec::new(),
            listed_free: false,
            tls: None,
        }
    }
}

impl Connection {
    /// Queues `bytes` for writing, as the request `request`.
    pub fn enqueue(&mut self, bytes: &[u8], request: InFlight) {
        self.out.extend_from_slice(bytes);
        self.in_flight.push_back(request);
    }

    /// TCP is up: starts the TLS handshake (sent by [`Connection::handshake`]).
    pub fn start_tls(
        &mut self,
        config: &Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<(), Failure> {
        let since = match self.phase {
            Phase::Connecting { since } => since,
            _ => Instant::now(),
        };
        let conn = rustls::ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| (ErrorClass::Connect, format!("TLS: {e}")))?;
        self.tls = Some(Box::new(conn));
        self.phase = Phase::Handshaking { since };
        Ok(())
    }

    /// Moves the TLS handshake on as far as the socket allows: `Ok(true)` once it is done.
    pub fn handshake(&mut self, recorder: &mut Recorder) -> Result<bool, Failure> {
        let (Some(socket), Some(tls)) = (&self.socket, &mut self.tls) else { return Ok(false) };
        let fail = |e: &dyn std::fmt::Display| (ErrorClass::Connect, format!("TLS handshake: {e}"));
        let mut transport = Stream::new(socket.as_fd());
        loop {
            while tls.wants_write() {
                match tls.write_tls(&mut transport) {
                    Ok(n) => recorder.bytes_written += n as u64,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(fail(&e)),
                }
            }
            if !tls.is_handshaking() {
                let resumed = tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                recorder.tls_handshakes[usize::from(resumed)] += 1;
                return Ok(true);
            }
            match tls.read_tls(&mut transport) {
                Ok(0) => return Err(fail(&"the server closed the connection")),
                Ok(n) => {
                    recorder.bytes_read += n as u64;
                    if let Err(e) = tls.process_new_packets() {
                        let _ = tls.write_tls(&mut transport); // the alert saying why, if it fits
                        return Err(fail(&e));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(&e)),
            }
        }
    }

    /// Writes what is queued until done or the socket's buffer is full (then the next writable
    /// event resumes it).
    pub fn flush(&mut self, recorder: &mut Recorder) -> Result<(), Failure> {
        let Some(socket) = &self.socket else { return Ok(()) };
        if let Some(tls) = &mut self.tls {
            if self.written < self.out.len() {
                // rustls takes it all (no buffer limit is set on a client): encrypted now, sent below.
                let _ = tls.writer().write_all(&self.out[self.written..]);
                self.out.clear();
                self.written = 0;
            }
            let mut transport = Stream::new(socket.as_fd());
            while tls.wants_write() {
                match tls.write_tls(&mut transport) {
                    Ok(n) => recorder.bytes_written += n as u64,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err((ErrorClass::Reset, format!("send: {e}"))),
                }
            }
            return Ok(());
        }
        while self.written < self.out.len() {
            match sys::socket::write(socket.as_fd(), &self.out[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    recorder.bytes_written += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err((ErrorClass::Reset, format!("send: {e}"))),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(())
    }

    pub fn has_output(&self) -> bool {
        self.written < self.out.len() || self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }

    /// Reads and parses until the socket is drained; `Ok(true)` when the server has closed.
    /// `peer_closed`: the event said so, so read on to the end even after a short read.
    /// `answered` counts the responses completed.
    pub fn read_responses(
        &mut self,
        buf: &mut [u8],
        peer_closed: bool,
        requests: &Requests,
        recorder: &mut Recorder,
        answered: &mut u64,
    ) -> Result<bool, Failure> {
        if self.tls.is_some() {
            return self.read_tls_responses(buf, peer_closed, requests, recorder, answered);
        }
        loop {
            let Some(socket) = &self.socket else { return Ok(false) };
            let carried = self.unparsed.len();
            buf[..carried].copy_from_slice(&self.unparsed);
            let room = buf.len() - carried;
            match sys::socket::read(socket.as_fd(), &mut buf[carried..]) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    recorder.bytes_read += n as u64;
                    self.unparsed.clear();
                    let now = Instant::now();
                    self.parse_responses(&buf[..carried + n], requests, recorder, now, answered)?;
                    // A short read emptied the socket: with edge-triggered epoll the next byte to
                    // arrive is another event, so a read that would only say EAGAIN is saved.
                    if n < room && !peer_closed {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err((ErrorClass::Reset, format!("read: {e}"))),
            }
        }
    }

    /// [`Connection::read_responses`] over TLS: reads ciphertext, decrypts it, parses the plaintext.
    fn read_tls_responses(
        &mut self,
        buf: &mut [u8],
        peer_closed: bool,
        requests: &Requests,
        recorder: &mut Recorder,
        answered: &mut u64,
    ) -> Result<bool, Failure> {
        loop {
            let (Some(socket), Some(tls)) = (&self.socket, &mut self.tls) else { return Ok(false) };
            let mut transport = Stream::new(socket.as_fd());
            let mut eof = match tls.read_tls(&mut transport) {
                Ok(0) => true,
                Ok(n) => {
                    recorder.bytes_read += n as u64;
                    false
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err((ErrorClass::Reset, format!("read: {e}"))),
            };
            let filled = transport.filled();
            tls.process_new_packets().map_err(|e| (ErrorClass::Framing, format!("TLS: {e}")))?;
            let now = Instant::now();
            loop {
                let Some(tls) = &mut self.tls else { return Ok(false) };
                let carried = self.unparsed.len();
                buf[..carried].copy_from_slice(&self.unparsed);
                match tls.reader().read(&mut buf[carried..]) {
                    Ok(0) => {
                        eof = true; // close_notify
                        break;
                    }
                    Ok(n) => {
                        self.unparsed.clear();
                        self.parse_responses(&buf[..carried + n], requests, recorder, now, answered)?;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                        eof = true; // closed without close_notify: HTTP/1.1 framing says what was whole
                        break;
                    }
                    Err(e) => return Err((ErrorClass::Reset, format!("read: {e}"))),
                }
            }
            if eof {
                return Ok(true);
            }
            if !filled && !peer_closed {
                return Ok(false);
            }
        }
    }

    fn parse_responses(
        &mut self,
        data: &[u8],
        requests: &Requests,
        recorder: &mut Recorder,
        now: Instant,
        answered: &mut u64,
    ) -> Result<(), Failure> {
        let mut pos = 0;
        while pos < data.len() {
            let Some(request) = self.in_flight.front() else {
                return Err((ErrorClass::Framing, "bytes from the server with no request in flight".into()));
            };
            let has_body = requests.get(request.path as usize).has_body;
            match self.parser.parse(&data[pos..], has_body) {
                Ok(Step::Complete { consumed, response }) => {
                    pos += consumed;
                    self.complete(response, recorder, now);
                    *answered += 1;
                }
                Ok(Step::Partial { consumed }) => {
                    self.unparsed.extend_from_slice(&data[pos + consumed..]);
                    return Ok(());
                }
                Err(e) => return Err((ErrorClass::Framing, e.0.to_string())),
            }
        }
        Ok(())
    }

    fn complete(&mut self, response: Response, recorder: &mut Recorder, now: Instant) {
        let request = self.in_flight.pop_front().expect("a response completes a request in flight");
        if !(200..400).contains(&response.status) {
            recorder.error(ErrorClass::Status, || format!("status {}", response.status));
        }
        recorder.answered_at(request.due, now);
        if request.measured {
            recorder.response(request.path as usize, request.due, request.sent, now);
            recorder.status(response.status);
        }
        if response.close {
            self.phase = Phase::Closing;
        }
    }

    /// The server closed: completes a response whose body ran until the close; a response cut
    /// short is an error. Requests still in flight afterwards are the caller's to account for.
    pub fn finish_at_eof(&mut self, recorder: &mut Recorder, answered: &mut u64) -> Result<(), Failure> {
        match self.parser.finish() {
            Err(e) => Err((ErrorClass::Framing, e.0.to_string())),
            Ok(Some(response)) => {
                self.complete(response, recorder, Instant::now());
                *answered += 1;
                Ok(())
            }
            Ok(None) if !self.unparsed.is_empty() => {
                Err((ErrorClass::Framing, "connection closed in the middle of a response head".into()))
            }
            Ok(None) => Ok(()),
        }
    }

    /// Closes the socket (abortively with `abort`: RST, no TIME_WAIT) and forgets everything in
    /// flight; returns how many measured requests had been sent and are now lost.
    pub fn close(&mut self, abort: bool) -> u64 {
        let was_open = matches!(self.phase, Phase::Open | Phase::Closing);
        if let Some(socket) = self.socket.take() {
            if abort {
                // Failing only means a FIN instead of a RST.
                let _ = sys::client::set_linger_zero(socket.as_fd());
            }
        }
        let lost = if was_open { self.in_flight.iter().filter(|r| r.measured).count() as u64 } else { 0 };
        self.in_flight.clear();
        self.parser.reset();
        self.unparsed.clear();
        self.out.clear();
        self.written = 0;
        self.tls = None;
        self.phase = Phase::Closed;
        lost
    }

    /// Whether another request may go out on this connection now.
    pub fn has_room(&self, pipeline: usize) -> bool {
        self.phase == Phase::Open && self.in_flight.len() < pipeline
    }
}
