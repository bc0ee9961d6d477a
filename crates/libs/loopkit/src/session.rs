//! The HTTP/1.1 connection core, with no I/O: one [`Session`] per connection takes the bytes that
//! arrived and the current time in, and hands back the bytes to send, the requests to execute, the
//! next deadline and what to do next (send, receive, wait, linger, close). It touches no fd, no
//! epoll and no clock of its own, so that any loop can drive it — edge-triggered epoll
//! (`loopkit::conn`), a shared epoll whose threads take turns with each connection, an io_uring
//! completion loop — and a test can drive it with a byte string and an `Instant` moved by hand.
//!
//! ```text
//!   driver                                   Session
//!   ──────                                   ───────
//!   read(fd, session.read_buffer()) ──n──►   received(n, now)       (or receive(bytes, now))
//!   loop { match session.next(now, exec) ◄── frames, routes, executes (Execute), orders responses
//!     Send    ─► write(fd, session.output()) ─► sent(n)
//!     Receive ─► read more, or wait for the kernel to say it can
//!     Wait    ─► nothing until complete(seq, response) or a deadline
//!     Yield   ─► serve the others first, then come back
//!     Finish  ─► close, or shutdown(SHUT_WR) + linger(now)
//!     Discard ─► read and drop until EOF (lingering)
//!     Close   ─► close the fd
//!   }
//!   at session.deadline(): handle_timeout(now)  (408, idle close, linger over)
//! ```
//!
//! What was taken from the codebases that do this well:
//! - **h11** (HTTP/1.1 with no I/O): the caller feeds received bytes and asks for the next event;
//!   the end of the peer's stream is an input like any other ([`Session::received_eof`]), and the
//!   state machine, not the caller, decides whether the connection can be reused.
//! - **rustls** (`read_tls` / `process_new_packets` / `write_tls`): reading, processing and writing
//!   are three separate calls, and the bytes to write wait in the session until the caller reports
//!   how many the transport took ([`Session::output`], [`Session::sent`]), so a short write
//!   continues where it stopped and the session never blocks.
//! - **quinn-proto** (QUIC with no I/O, driven by quinn): time is a parameter (`now: Instant` on
//!   every call), and the session says when it next needs the clock ([`Session::deadline`]) and
//!   acts when told that time has come ([`Session::handle_timeout`]); the driver owns the timers.
//! - **smoltcp**'s socket/interface split: the session holds the buffers and the protocol, the
//!   driver holds the device. Unlike h11, bytes are received into a buffer the session lends
//!   ([`Session::read_buffer`]), as smoltcp's sockets lend theirs, so the epoll driver's `read`
//!   lands in place with no copy; [`Session::receive`] is the copying form for a driver whose
//!   transport owns the buffers (io_uring's provided buffers) and for tests.
//!
//! One departure from h11: requests are not returned one by one as events but handed, in order,
//! to the [`Execute`] the driver passes to [`Session::next`], which executes each here (appending
//! its response straight to the output, no copy) or sends it elsewhere, its response coming back
//! through [`Session::complete`]. A returned request would borrow the input buffer while its
//! response is written into the output buffer: two borrows of one session.
//!
//! Memory is bounded per connection (read buffer, in-flight requests, pending output) and, beyond
//! small per-connection allowances, against one process-wide budget (`--memory-budget`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use http1::framing::{MAX_BODY_BYTES, MAX_HEADER_BYTES};
use http1::{parse_request_resuming, route, Job, Parsed, Status};

use crate::handlers;

/// The first read buffer of a connection, made at its first read; it grows for large requests.
const INITIAL_INPUT: usize = 4 * 1024;
/// The largest read buffer: one maximal header section and body, plus the chunk framing around it.
const MAX_INPUT: usize = 2 * MAX_BODY_BYTES + MAX_HEADER_BYTES;
/// Read buffer a connection may hold without drawing on the memory budget.
const SMALL_INPUT: usize = 64 * 1024;
/// Bytes of requests being answered (executing elsewhere, or answered and not yet written) a
/// connection may hold without drawing on the memory budget.
const SMALL_ANSWERING: usize = 64 * 1024;
/// Stop executing requests while this much output waits: a pipelining client that does not read
/// can make us hold no more than this (plus one response).
pub const MAX_PENDING_OUTPUT: usize = 256 * 1024;
/// At most this many requests of one connection executing elsewhere at once.
pub const MAX_IN_FLIGHT: usize = 128;
/// How long a closing connection keeps discarding what the client still sends, so that the kernel
/// does not answer it with a reset that could destroy our last response before the client reads it.
/// It is a total, however the client keeps sending (nginx's `lingering_time`).
pub const LINGER: Duration = Duration::from_millis(1500);

/// What is left of this process's memory budget (`--memory-budget`), which every byte of a request
/// beyond the first `SMALL_INPUT` of a connection's read buffer, and beyond the first
/// `SMALL_ANSWERING` of its requests being answered, is drawn from: the worst case is `--max-conns`
/// × those small parts and the output limit, plus the budget, instead of `--max-conns` × every
/// limit (docs/reliability.md). Below zero while bytes already in memory were counted in on credit
/// ([`Reservation::cover`]).
static MEMORY_BUDGET: AtomicIsize = AtomicIsize::new(0);
static MEMORY_BUDGET_SET: std::sync::Once = std::sync::Once::new();

/// Sets the process's memory budget, once: the first call wins (every loop of a process calls it
/// with the same `--memory-budget`).
pub fn set_memory_budget(bytes: usize) {
    let budget = isize::try_from(bytes).unwrap_or(isize::MAX);
    MEMORY_BUDGET_SET.call_once(|| MEMORY_BUDGET.store(budget, Ordering::Release));
}

/// Bytes taken from the memory budget; given back when dropped.
#[derive(Debug, Default)]
struct Reservation(usize);

impl Reservation {
    /// Takes `bytes` more for bytes about to be read, if the budget has them: false if not.
    fn try_grow(&mut self, bytes: usize) -> bool {
        let taken = MEMORY_BUDGET
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(isize::try_from(bytes).ok()?).filter(|&rest| rest >= 0)
            })
            .is_ok();
        if taken {
            self.0 += bytes;
        }
        taken
    }

    /// Holds exactly `bytes`, whatever the budget has left: for bytes that are already in memory (a
    /// request's copy, its response), which cannot be refused after the fact. Past the budget, it
    /// goes below zero, and new large requests get 503 until enough has been given back.
    fn cover(&mut self, bytes: usize) {
        let change = bytes as isize - self.0 as isize;
        if change != 0 {
            MEMORY_BUDGET.fetch_sub(change, Ordering::AcqRel);
            self.0 = bytes;
        }
    }

    fn bytes(&self) -> usize {
        self.0
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.cover(0);
    }
}

/// Where a request was executed.
#[derive(Debug, PartialEq, Eq)]
pub enum Executed {
    /// Here, now: its response is in `out`.
    Here,
    /// Sent to another thread: its response comes back through [`Session::complete`].
    Elsewhere,
}

/// What a session does with each routed request, in arrival order: `seq` numbers a connection's
/// requests from 0, and is what [`Session::complete`] takes back with a response.
pub trait Execute {
    /// Executes `job` now, appending its response to `out`, or sends it elsewhere.
    fn execute(&mut self, seq: u64, job: Job<'_>, out: &mut Vec<u8>) -> Executed;
}

/// The per-connection timeouts, from the command line (`--idle-timeout`, `--header-timeout`,
/// `--body-timeout`, `--body-min-rate`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub idle: Option<Duration>,
    pub header: Option<Duration>,
    pub body: Option<Duration>,
    /// Bytes of body that extend `body` by one second each (0: no extension).
    pub body_min_rate: u64,
}

/// What the driver is to do next with a session's connection (see the module diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// [`Session::output`] holds bytes: send what the transport takes, report it with
    /// [`Session::sent`], and wait for the transport before anything else if it took less.
    Send,
    /// More request bytes are wanted: receive into [`Session::read_buffer`], or wait until some
    /// arrive.
    Receive,
    /// Nothing to do until a response comes back ([`Session::complete`]) or a deadline passes;
    /// reading is paused meanwhile (too many requests in flight, or closing after them).
    Wait,
    /// A slow request just held this thread: let the loop serve the others, then call again.
    Yield,
    /// Everything is answered and sent, and no more requests will be read. Close, unless the client
    /// may still be sending: `unread_input` (the session holds bytes it did not use), or bytes the
    /// driver knows are in its transport. Then shut the sending side and call [`Session::linger`]:
    /// closing with unread bytes makes the kernel send a reset, which can destroy the last response
    /// before the client reads it.
    Finish { unread_input: bool },
    /// Lingering: receive and drop whatever arrives until the end of the stream, then close.
    Discard,
    /// Done: close the connection.
    Close,
}

/// What [`Session::handle_timeout`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing is due yet.
    Nothing,
    /// A request stopped arriving (its head, or its body): a 408 is queued; call [`Session::next`]
    /// to send it, then close.
    Answered(Late),
    /// Idle past `--idle-timeout`, or lingering past [`LINGER`]: close it.
    Close,
}

pub use crate::stats::Late;

/// How often a driver looks for connections past a deadline: with it, a lingering connection is
/// closed within [`LINGER`] + this (2 s).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// When a driver next sweeps its connections for their deadlines (408, idle close, lingering over).
#[derive(Debug)]
pub struct Sweep {
    next: Instant,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep { next: Instant::now() + SWEEP_INTERVAL }
    }
}

impl Sweep {
    /// How long from `now` until the next sweep is due.
    pub fn time_left(&self, now: Instant) -> Duration {
        self.next.saturating_duration_since(now)
    }

    /// Whether a sweep is due at `now`; if so, the next one is [`SWEEP_INTERVAL`] later.
    #[inline]
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + SWEEP_INTERVAL;
        true
    }
}

/// The sweep itself, for a driver with `slots` slots: asks the session of each (`session(driver,
/// index)`, `None` for an empty slot) whether a deadline has passed at `now`, and hands each one
/// that has to `expired(driver, index, what)` to act on: close it, or send its 408.
pub fn sweep<D>(
    driver: &mut D,
    slots: usize,
    now: Instant,
    timeouts: &Timeouts,
    session: impl Fn(&mut D, usize) -> Option<&mut Session>,
    mut expired: impl FnMut(&mut D, usize, Expired),
) {
    for index in 0..slots {
        let Some(session) = session(driver, index) else { continue };
        match session.handle_timeout(now, timeouts) {
            Expired::Nothing => {}
            what => expired(driver, index, what),
        }
    }
}

/// One HTTP/1.1 connection's protocol state: its input, its requests in flight in order, its
/// output, its deadlines.
pub struct Session {
    input: Input,
    /// What framing has learned of the partial request at the front of `input`.
    framing: http1::Progress,
    /// The length `input` must reach before framing can learn more (0: any).
    need: usize,
    continue_sent: bool,
    output: Vec<u8>,
    output_sent: usize,
    /// Bytes of the requests whose responses are in `output`, not all sent yet.
    output_request_bytes: usize,
    in_flight: InFlight,
    /// Covers the bytes of this connection's requests being answered (in flight, or answered and
    /// waiting in `output`) beyond `SMALL_ANSWERING`: a large request counts against the memory
    /// budget from its first byte read to its response's last byte written.
    answering: Reservation,
    /// No more requests: finish once everything in flight is answered and sent.
    closing: bool,
    /// The server is stopping: finish without lingering.
    draining: bool,
    /// The peer has closed its side (the end of its stream arrived).
    peer_closed: bool,
    /// When the first byte of a request head not yet whole arrived (`--header-timeout`).
    head_since: Option<Instant>,
    /// When the server started waiting for the body of the request at the front (`--body-timeout`):
    /// its head whole, nothing before it still to answer or send (nor its `100 Continue`). Set when
    /// the head is framed if so, else by the first sweep that finds it so (`handle_timeout`).
    body_since: Option<Instant>,
    /// `input`'s length then: the bytes received since extend the deadline (`--body-min-rate`).
    body_mark: usize,
    /// A slow request was just executed on the caller's thread: give the loop back its turn.
    yield_now: bool,
    /// Our side is shut since then; discarding what the peer still sends until it closes or
    /// `LINGER` has passed.
    lingering_since: Option<Instant>,
    last_active: Instant,
}

impl Session {
    /// A session for a connection accepted at `now`. It holds no buffer until the first bytes
    /// arrive, so an idle connection costs only this struct.
    pub fn new(now: Instant) -> Self {
        Session {
            input: Input::new(),
            framing: http1::Progress::default(),
            need: 0,
            continue_sent: false,
            output: Vec::new(),
            output_sent: 0,
            output_request_bytes: 0,
            in_flight: InFlight::default(),
            answering: Reservation::default(),
            closing: false,
            draining: false,
            peer_closed: false,
            head_since: None,
            body_since: None,
            body_mark: 0,
            yield_now: false,
            lingering_since: None,
            last_active: now,
        }
    }

    /// What to do next: sends what is pending, executes what is buffered (handing each request to
    /// `executor`), and asks for more input; `now` counts as activity on the connection (any
    /// event is: the client sent, took what it was sent, or closed).
    pub fn next(&mut self, now: Instant, executor: &mut impl Execute) -> Want {
        self.last_active = now;
        if self.lingering_since.is_some() {
            return Want::Discard;
        }
        if self.output_sent < self.output.len() {
            return Want::Send; // read nothing until the client takes what it was sent
        }
        if std::mem::take(&mut self.yield_now) {
            return Want::Yield;
        }
        if !self.closing && self.execute_buffered(now, executor) {
            return Want::Send; // new output: send it before reading more
        }
        if self.closing {
            return match self.in_flight.is_empty() {
                true if self.draining || self.peer_closed => Want::Close,
                true => Want::Finish { unread_input: self.input.len() > 0 },
                false => Want::Wait,
            };
        }
        match self.in_flight.len() >= MAX_IN_FLIGHT {
            true => Want::Wait,
            false => Want::Receive,
        }
    }

    /// Room to receive into, grown (doubled) when the bytes received fill it. `None` if the session
    /// refused to grow: past the memory budget (a 503 is queued, and the connection closes after
    /// it, even half-way through a request's body) or at the largest buffer (a 413). Either way,
    /// call [`Session::next`] again.
    pub fn read_buffer(&mut self) -> Option<&mut [u8]> {
        self.read_buffer_for(0)
    }

    /// Whether the read buffer is full of bytes not yet framed, so that the next
    /// [`Session::read_buffer_for`] grows it: then a driver that can tell how many bytes are waiting
    /// in its transport (`FIONREAD`) says so, and the buffer grows once for them all instead of
    /// doubling read by read.
    #[inline]
    pub fn read_buffer_full(&self) -> bool {
        self.input.len() == self.input.buf.len() && !self.input.buf.is_empty()
    }

    /// [`Session::read_buffer`], knowing that `waiting` bytes have been received by the transport
    /// and wait to be read: if the buffer must grow, it grows to hold them too (bytes received, so
    /// the buffer still follows them, never a declared length).
    pub fn read_buffer_for(&mut self, waiting: usize) -> Option<&mut [u8]> {
        match self.input.grow_for(self.need, waiting, &self.framing) {
            Ok(()) => Some(self.input.space()),
            Err(Refused::Budget) => {
                self.fail(Status::ServiceUnavailable, "server memory budget exhausted; try again later");
                None
            }
            Err(Refused::Limit) => {
                self.fail(Status::PayloadTooLarge, "request framing over the buffer limit");
                None
            }
        }
    }

    /// `n` bytes were received into [`Session::read_buffer`]; `n` > 0 (the end of the stream is
    /// [`Session::received_eof`]).
    pub fn received(&mut self, n: usize) {
        self.input.filled(n);
    }

    /// Takes a copy of `bytes` received, as far as the buffer may grow; returns how many it took
    /// (fewer only when refused: see [`Session::read_buffer`]).
    /// Inlined into the io_uring driver's two callers: a call costs it 35 instructions a request.
    #[inline(always)]
    pub fn receive(&mut self, mut bytes: &[u8]) -> usize {
        let total = bytes.len();
        while !bytes.is_empty() {
            let Some(space) = self.read_buffer_for(bytes.len()) else { break };
            let n = space.len().min(bytes.len());
            space[..n].copy_from_slice(&bytes[..n]);
            self.input.filled(n);
            bytes = &bytes[n..];
        }
        total - bytes.len()
    }

    /// The peer closed its side: no more requests will come; finish after those received.
    pub fn received_eof(&mut self) {
        self.peer_closed = true;
        self.closing = true;
    }

    /// Bytes that are not a request yet arrived at `now` (a TLS handshake under way): with `pending`,
    /// `--header-timeout` runs from the first of them as for a request head; without, that is over
    /// (the handshake completed) and the first request's head gets its own.
    pub fn head_pending(&mut self, now: Instant, pending: bool) {
        self.head_since = if pending { self.head_since.or(Some(now)) } else { None };
    }

    /// The bytes waiting to be sent.
    pub fn output(&self) -> &[u8] {
        &self.output[self.output_sent..]
    }

    /// `n` bytes of [`Session::output`] were sent.
    pub fn sent(&mut self, n: usize) {
        self.output_sent += n;
        if self.output_sent < self.output.len() {
            return;
        }
        self.output.clear();
        self.output_sent = 0;
        if self.output_request_bytes > 0 {
            self.output_request_bytes = 0;
            self.cover_answering();
        }
        if self.output.capacity() > MAX_PENDING_OUTPUT {
            self.output = Vec::new(); // give back what one large response took
        }
    }

    /// The response to request `seq`, executed elsewhere: it is sent once every response before it
    /// has been (call [`Session::next`]).
    pub fn complete(&mut self, seq: u64, response: Vec<u8>) {
        self.output_request_bytes += self.in_flight.complete(seq, response, &mut self.output);
    }

    /// The server is stopping: no new requests; the connection finishes as soon as what it has in
    /// flight is answered and sent, without lingering (call [`Session::next`]).
    pub fn begin_drain(&mut self) {
        self.closing = true;
        self.draining = true;
    }

    /// After [`Want::Finish`], when the driver has shut its sending side: from now on the session
    /// wants its input discarded until the end of the stream, or [`LINGER`] from `now`. What it
    /// still holds of the input is dropped now, and its share of the memory budget given back.
    pub fn linger(&mut self, now: Instant) {
        self.lingering_since = Some(now);
        self.input = Input::new();
    }

    /// Whether reading is paused for the session's own reasons (pending output, too much in
    /// flight, closing): a completion driver stops receiving while this holds.
    pub fn reading_paused(&self) -> bool {
        self.closing
            || self.output_sent < self.output.len()
            || self.in_flight.len() >= MAX_IN_FLIGHT
            || self.lingering_since.is_some()
    }

    /// The next instant at which [`Session::handle_timeout`] has something to do, if any.
    pub fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        if let Some(since) = self.lingering_since {
            return Some(since + LINGER);
        }
        if let (Some(since), Some(limit), true) = (self.head_since, timeouts.header, self.reading()) {
            return Some(since + limit);
        }
        let idle = timeouts.idle.filter(|_| self.in_flight.is_empty()).map(|idle| self.last_active + idle);
        match (self.body_since, timeouts.body, self.reading()) {
            (Some(since), Some(limit), true) => {
                let body = self.body_deadline(since, limit, timeouts.body_min_rate);
                Some(idle.map_or(body, |idle| idle.min(body)))
            }
            _ => idle,
        }
    }

    /// The server waits for the body of the request at the front, from `now`.
    fn start_body_clock(&mut self, now: Instant) {
        self.body_since = Some(now);
        self.body_mark = self.input.len();
    }

    /// When the body being waited for since `since` is late: `limit` after it, plus a second per
    /// `min_rate` bytes received since.
    fn body_deadline(&self, since: Instant, limit: Duration, min_rate: u64) -> Instant {
        let received = self.input.len().saturating_sub(self.body_mark) as u64;
        let extension = match min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_millis(received.saturating_mul(1000) / rate),
        };
        since + limit + extension
    }

    /// Acts on whichever of the session's deadlines has passed at `now`. A head gets
    /// `--header-timeout` from its first byte, however it trickles (bytes keep a connection
    /// active, so the idle timer alone would let a slowloris client hold it forever); a body gets
    /// `--body-timeout` from when the server starts waiting for it, plus a second per
    /// `--body-min-rate` bytes received since (a slow body, R-U-Dead-Yet), and one that stalls
    /// gets `--idle-timeout` if that comes first. None runs while the server itself is not reading
    /// (output waiting for the client, or a request executing).
    pub fn handle_timeout(&mut self, now: Instant, timeouts: &Timeouts) -> Expired {
        let past = |since: Instant, limit: Duration| now.saturating_duration_since(since) >= limit;
        if let Some(since) = self.lingering_since {
            return match past(since, LINGER) {
                true => Expired::Close,
                false => Expired::Nothing,
            };
        }
        let reading = self.reading();
        if reading && self.body_since.is_none() && self.framing.head_complete() {
            // Waiting for a body now, and not when its head was framed (a 100 Continue or earlier
            // responses were still to be sent, or a request before it executing): its clock starts.
            self.start_body_clock(now);
        }
        if let (Some(since), Some(limit), true) = (self.head_since, timeouts.header, reading) {
            if !past(since, limit) {
                return Expired::Nothing;
            }
            self.fail(Status::RequestTimeout, "request head not received in time");
            return Expired::Answered(Late::Head);
        }
        if let (Some(since), Some(limit), true) = (self.body_since, timeouts.body, reading) {
            if now >= self.body_deadline(since, limit, timeouts.body_min_rate) {
                self.fail(Status::RequestTimeout, "request body not received in time");
                return Expired::Answered(Late::Body);
            }
        }
        let idle_past = timeouts.idle.is_some_and(|limit| past(self.last_active, limit));
        match (idle_past, self.in_flight.is_empty()) {
            (true, true) if reading && self.input.len() > 0 => {
                let (late, reason) = match self.framing.head_complete() {
                    true => (Late::Body, "request body not received in time"),
                    false => (Late::Head, "request head not received in time"),
                };
                self.fail(Status::RequestTimeout, reason);
                Expired::Answered(late)
            }
            (true, true) => Expired::Close,
            _ => Expired::Nothing,
        }
    }

    /// Whether the server is reading this connection's requests: not closing, no output waiting
    /// for the client, nothing executing.
    fn reading(&self) -> bool {
        !self.closing && self.output_sent == self.output.len() && self.in_flight.is_empty()
    }

    /// Frames, routes and executes the complete requests in the input buffer, in order; true if it
    /// produced output. Stops at a partial request, at too much pending output or in-flight work,
    /// and after a request that closes the connection.
    fn execute_buffered(&mut self, now: Instant, executor: &mut impl Execute) -> bool {
        let output_before = self.output.len();
        while !self.closing
            && self.input.len() >= self.need.max(1)
            && self.output.len() < MAX_PENDING_OUTPUT
            && self.in_flight.len() < MAX_IN_FLIGHT
        {
            match parse_request_resuming(self.input.data(), &mut self.framing) {
                Ok(Parsed::Complete { request, consumed }) => {
                    let job = route(request);
                    let slow = job.is_slow();
                    if slow && self.output.len() > output_before {
                        // Send what is ready before a request that may hold the thread: the
                        // responses before it go out now, not when it is done. (It is framed again
                        // next time, from where framing got to.)
                        break;
                    }
                    self.closing = job.closes();
                    let seq = self.in_flight.next_seq();
                    if self.in_flight.is_empty() {
                        // The usual case: nothing ahead of it, so its response goes straight out.
                        match executor.execute(seq, job, &mut self.output) {
                            Executed::Elsewhere => self.in_flight.push(None, consumed),
                            // It held the thread: let the loop see to its signals and other
                            // connections (and this one's hang-up) before the next request.
                            Executed::Here => {
                                self.output_request_bytes += consumed;
                                self.yield_now = slow;
                            }
                        }
                    } else {
                        let mut response = Vec::new();
                        let executed = executor.execute(seq, job, &mut response);
                        self.in_flight.push((executed == Executed::Here).then_some(response), consumed);
                    }
                    self.input.consume(consumed);
                    self.framing = http1::Progress::default();
                    self.head_since = None;
                    self.body_since = None;
                    self.need = 0;
                    self.continue_sent = false;
                    if self.yield_now {
                        break;
                    }
                }
                Ok(Parsed::Partial { need, expects_continue }) => {
                    self.need = need;
                    self.head_since = match self.framing.head_complete() {
                        true => None,
                        false => self.head_since.or(Some(now)),
                    };
                    if expects_continue && !self.continue_sent {
                        // Interim responses too leave in request order: after those still in flight.
                        match self.in_flight.is_empty() {
                            true => self.output.extend_from_slice(http1::response::CONTINUE),
                            false => self.in_flight.push(Some(http1::response::CONTINUE.to_vec()), 0),
                        }
                        self.continue_sent = true;
                    }
                    if self.body_since.is_none()
                        && self.framing.head_complete()
                        && self.output_sent == self.output.len()
                        && self.in_flight.is_empty()
                    {
                        // Its head is whole and nothing else is pending: the server waits for its
                        // body from now. (Otherwise the clock starts at the first sweep at which it
                        // is: `handle_timeout`.)
                        self.start_body_clock(now);
                    }
                    if self.input.is_full() {
                        // Only a chunked body framed in tiny chunks can fill the buffer unfinished.
                        self.fail(Status::PayloadTooLarge, "request framing over the buffer limit");
                    }
                    break;
                }
                Err(e) => {
                    self.fail(e.status, e.reason);
                    break;
                }
            }
        }
        self.cover_answering();
        self.output.len() > output_before
    }

    /// Keeps `answering` covering the bytes of the requests being answered beyond `SMALL_ANSWERING`.
    fn cover_answering(&mut self) {
        let answering = self.in_flight.request_bytes + self.output_request_bytes;
        self.answering.cover(answering.saturating_sub(SMALL_ANSWERING));
    }

    /// Answers a request that cannot be framed (or served), in its turn after those in flight,
    /// then closes.
    fn fail(&mut self, status: Status, reason: &str) {
        let mut response = Vec::new();
        handlers::write_error(status, reason, &mut response);
        match self.in_flight.is_empty() {
            true => self.output.extend_from_slice(&response),
            false => self.in_flight.push(Some(response), 0),
        }
        self.closing = true;
    }
}

/// Why the read buffer did not grow.
enum Refused {
    /// The process's memory budget has no room.
    Budget,
    /// The buffer is at `MAX_INPUT`.
    Limit,
}

/// A connection's read buffer: bytes `start..end` of `buf` are received and not yet consumed. The
/// buffer stays initialised, so receiving into it costs no zeroing.
struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes of `buf` beyond `SMALL_INPUT`, taken from the memory budget.
    reserved: Reservation,
}

impl Input {
    /// No buffer yet: it is made at the first read, so a connection that is open and idle (10 000
    /// of them, in `make idle`) holds no read buffer.
    fn new() -> Self {
        Input { buf: Vec::new(), start: 0, end: 0, reserved: Reservation::default() }
    }

    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    #[inline]
    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_full(&self) -> bool {
        self.start == 0 && self.end == MAX_INPUT
    }

    #[inline]
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > SMALL_INPUT {
                self.buf = vec![0; INITIAL_INPUT]; // give back what one large request took
                self.reserved = Reservation::default();
            }
        }
    }

    /// Makes room to receive into: moves unconsumed bytes to the front, or, when the buffer is full
    /// of them, doubles it, or grows it to hold the `waiting` bytes received too where that is more
    /// (no further than `need` where `framing` says it is the request's whole length, not a lower
    /// bound, and larger than the buffer). It grows with the bytes received, never with what a
    /// request declares: a head announcing a megabyte buys nothing until the megabyte comes.
    fn grow_for(&mut self, need: usize, waiting: usize, framing: &http1::Progress) -> Result<(), Refused> {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_INPUT {
                return Err(Refused::Limit);
            }
            let wanted = (self.buf.len() * 2).max(self.end.saturating_add(waiting));
            let grown = match need > self.buf.len() && framing.length_known() {
                true => wanted.min(need),
                false => wanted,
            };
            let grown = grown.clamp(INITIAL_INPUT, MAX_INPUT);
            let more = grown.saturating_sub(SMALL_INPUT) - self.reserved.bytes();
            if more > 0 && !self.reserved.try_grow(more) {
                return Err(Refused::Budget);
            }
            self.buf.resize(grown, 0);
        }
        Ok(())
    }

    fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }
}

/// Requests of one connection executing elsewhere, in arrival order: a response that finishes early
/// waits here until every response before it has been written.
#[derive(Default)]
struct InFlight {
    /// The sequence number of the front entry.
    front_seq: u64,
    /// `None`: still executing; `Some`: its response, waiting for its turn; each with the length of
    /// its request.
    queue: VecDeque<(Option<Vec<u8>>, usize)>,
    /// The length of the requests in `queue`.
    request_bytes: usize,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    /// The sequence number the next request gets.
    fn next_seq(&self) -> u64 {
        self.front_seq + self.queue.len() as u64
    }

    /// Queues the answer to a request `request_bytes` long: `None` while it executes elsewhere.
    fn push(&mut self, response: Option<Vec<u8>>, request_bytes: usize) {
        self.queue.push_back((response, request_bytes));
        self.request_bytes += request_bytes;
    }

    /// Stores the response to `seq`, then moves every response now at the front to `output`;
    /// returns the length of the requests they answer.
    fn complete(&mut self, seq: u64, response: Vec<u8>, output: &mut Vec<u8>) -> usize {
        if let Some(entry) = seq.checked_sub(self.front_seq).and_then(|i| self.queue.get_mut(i as usize)) {
            entry.0 = Some(response);
        }
        let mut moved = 0;
        while let Some((Some(_), _)) = self.queue.front() {
            if let Some((Some(ready), request_bytes)) = self.queue.pop_front() {
                output.extend_from_slice(&ready);
                moved += request_bytes;
            }
            self.front_seq += 1;
        }
        self.request_bytes -= moved;
        moved
    }
}

#[cfg(test)]
mod tests;
