//! The connections of one event loop, and the state machine each goes through:
//!
//! ```text
//!   readable ──► read ──► frame + route ──► Executor ──► output ──► write ──► (again, or wait)
//!                 ▲                        (here, or another      │
//!                 └── paused while output  thread: the response   └─ EAGAIN: wait for EPOLLOUT,
//!                     is blocked or too    comes back through         read nothing meanwhile
//!                     much is in flight    `Connections::complete`)
//! ```
//!
//! Connections are registered edge-triggered for reading and writing at once, so a connection costs
//! one `epoll_ctl` in its whole life. Edge-triggered means the loop must remember what the kernel will
//! not say again: `readable` (more may be waiting: a read filled the buffer, or was cut short by this
//! wake-up's budget) and `write_blocked` (the last write hit `EAGAIN`; `EPOLLOUT` will say when to go on).
//!
//! Nothing here blocks. A client that never reads gets its responses queued until the kernel's send
//! buffer is full; then the connection stops reading, so its requests wait in its own socket's receive
//! queue and, once that is full, in its own sending kernel: memory stays bounded and no one else waits.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicIsize, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::framing::{MAX_BODY_BYTES, MAX_HEADER_BYTES};
use http::{parse_request_resuming, route, Job, Parsed, Status};

use crate::accept::Acceptor;
use crate::config::Config;
use crate::exec;
use crate::stats::WorkerStats;
use sys::epoll::{Event, Poller};

/// The first read buffer of a connection, made at its first read; it grows for large requests.
const INITIAL_INPUT: usize = 4 * 1024;
/// The largest read buffer: one maximal header section and body, plus the chunk framing around it.
const MAX_INPUT: usize = 2 * MAX_BODY_BYTES + MAX_HEADER_BYTES;
/// Read buffer a connection may hold without drawing on the memory budget.
const SMALL_INPUT: usize = 64 * 1024;
/// Bytes of requests being answered (executing elsewhere, or answered and not yet written) a
/// connection may hold without drawing on the memory budget.
const SMALL_ANSWERING: usize = 64 * 1024;
/// What is left of this process's memory budget (`--memory-budget`), which every byte of a request
/// beyond the first `SMALL_INPUT` of a connection's read buffer, and beyond the first
/// `SMALL_ANSWERING` of its requests being answered, is drawn from: the worst case is `--max-conns`
/// × those small parts and the output limit, plus the budget, instead of `--max-conns` × every
/// limit (docs/reliability.md). Below zero while bytes already in memory were counted in on credit
/// ([`Reservation::cover`]).
static MEMORY_BUDGET: AtomicIsize = AtomicIsize::new(0);
static MEMORY_BUDGET_SET: std::sync::Once = std::sync::Once::new();

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

/// Stop executing requests while this much output waits: a pipelining client that does not read
/// can make us hold no more than this (plus one response).
const MAX_PENDING_OUTPUT: usize = 256 * 1024;
/// At most this many requests of one connection executing elsewhere at once.
const MAX_IN_FLIGHT: usize = 128;
/// Bytes one connection may read in one wake-up before the others get their turn.
const READ_BUDGET: usize = 256 * 1024;
/// How long a closing connection keeps discarding what the client still sends, so that the kernel
/// does not answer it with a reset that could destroy our last response before the client reads it.
/// It is a total, however the client keeps sending (nginx's `lingering_time`): with the sweep's
/// granularity, a lingering connection is closed within 2 s.
const LINGER: Duration = Duration::from_millis(1500);
/// How often idle connections are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Where a job was executed.
#[derive(Debug, PartialEq, Eq)]
pub enum Executed {
    /// Here, now: its response is in `out`.
    Here,
    /// Sent to another thread: its response comes back through [`Connections::complete`].
    Elsewhere,
}

/// A routed request of connection `token`, the `seq`-th of that connection.
pub struct Request<'a> {
    pub token: u64,
    pub seq: u64,
    pub job: Job<'a>,
}

impl Request<'_> {
    /// A copy that owns its bytes, to send to another thread.
    pub fn into_owned(self) -> Request<'static> {
        Request { token: self.token, seq: self.seq, job: self.job.into_owned() }
    }
}

/// What a loop does with each routed request: [`ExecuteHere`], or a function of the architecture
/// that sends it elsewhere (`FnMut(Request, &mut Vec<u8>) -> Executed`, ramcloud's `dispatch_request`).
pub trait Executor {
    /// Executes `request` now, appending its response to `out`, or sends it elsewhere; its response
    /// then comes back through [`Connections::complete`].
    fn execute(&mut self, worker: &WorkerStats, request: Request<'_>, out: &mut Vec<u8>) -> Executed;
}

/// Executes every request on the loop's own thread (every architecture but RAMCloud's).
#[derive(Debug, Default)]
pub struct ExecuteHere;

impl Executor for ExecuteHere {
    fn execute(&mut self, worker: &WorkerStats, request: Request<'_>, out: &mut Vec<u8>) -> Executed {
        exec::execute(request.job, worker, out);
        Executed::Here
    }
}

impl<F: FnMut(Request<'_>, &mut Vec<u8>) -> Executed> Executor for F {
    fn execute(&mut self, _: &WorkerStats, request: Request<'_>, out: &mut Vec<u8>) -> Executed {
        self(request, out)
    }
}

/// Settings every connection of a loop shares, from the command line.
#[derive(Debug, Clone, Copy)]
struct ConnSettings {
    idle_timeout: Option<Duration>,
    header_timeout: Option<Duration>,
    nodelay: bool,
}

/// All connections one event loop owns, by token, and how their requests are executed.
pub struct Connections<E = ExecuteHere> {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Tokens that used up their read budget with input left: served again before the next wait.
    ready_again: Vec<u64>,
    settings: ConnSettings,
    worker: WorkerStats,
    executor: E,
    draining: bool,
    next_sweep: Instant,
    /// The time of the loop's last wake-up: read once per `epoll_wait`, not once per read.
    now: Instant,
    /// Published for the threads that execute this loop's requests elsewhere.
    open: Option<Arc<OpenConnections>>,
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// A token is the slot's index in the low 32 bits and its generation above: a response that comes
/// back for a connection that has since closed (and whose slot was reused) finds the wrong
/// generation and is dropped. Generations stay below 2^31, so no token reaches the reserved ones.
fn token_of(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

impl Connections {
    /// No connections yet, for a loop that executes every request itself; `worker` is whose
    /// counters they bump.
    pub fn new(config: &Config, worker: WorkerStats) -> Self {
        Connections::with_executor(config, worker, ExecuteHere)
    }
}

impl<E: Executor> Connections<E> {
    /// No connections yet, for a loop whose requests `executor` executes (or sends elsewhere).
    pub fn with_executor(config: &Config, worker: WorkerStats, executor: E) -> Self {
        let budget = isize::try_from(config.memory_budget).unwrap_or(isize::MAX);
        MEMORY_BUDGET_SET.call_once(|| MEMORY_BUDGET.store(budget, Ordering::Release));
        Connections {
            slots: Vec::new(),
            free: Vec::new(),
            ready_again: Vec::new(),
            settings: ConnSettings {
                idle_timeout: config.idle_timeout,
                header_timeout: config.header_timeout,
                nodelay: config.nodelay,
            },
            worker,
            executor,
            draining: false,
            next_sweep: Instant::now() + SWEEP_INTERVAL,
            now: Instant::now(),
            open: None,
        }
    }

    /// Call on every return from epoll_wait: counts the wake-up and reads the clock once for all the
    /// events it brought (idle times, and the `Date` of every response).
    pub fn woke_up(&mut self) {
        exec::woke_up(&self.worker);
        self.now = Instant::now();
    }

    /// Takes over a newly accepted connection: `TCP_NODELAY`, then into `poller`, edge-triggered.
    /// The connection must already have been admitted (see `Stats::admit`); a failure here closes
    /// it and releases that place again.
    pub fn add(&mut self, poller: &Poller, fd: OwnedFd) -> io::Result<u64> {
        self.worker.conn_opened();
        if self.settings.nodelay {
            if let Err(e) = sys::socket::set_nodelay(fd.as_fd(), true) {
                self.worker.conn_closed();
                return Err(e);
            }
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot { generation: 0, conn: None });
            self.slots.len() - 1
        });
        let token = token_of(index, self.slots[index].generation);
        if let Err(e) = poller.add(fd.as_fd(), token, sys::epoll::CONNECTION) {
            self.free.push(index);
            self.worker.conn_closed();
            return Err(e);
        }
        self.slots[index].conn = Some(Conn::new(fd, self.now));
        Ok(token)
    }

    /// Accepts every connection waiting in `acceptor`'s queue into this same loop: the listener arm of
    /// every loop whose acceptor is also the reader (epoll, nginx, reuseport, ramcloud's dispatcher).
    /// Called for every listener event, which includes the end of an EMFILE pause; accepts nothing
    /// once the loop is draining. A connection that cannot be added is closed; the loop goes on.
    pub fn accept_from(&mut self, poller: &Poller, acceptor: &mut Acceptor) {
        if self.draining {
            return; // what queues now is refused with the server, or is for a replacement process
        }
        acceptor.accept_all(poller, |fd| {
            let _ = self.add(poller, fd);
        });
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles an epoll event for connection `token`.
    pub fn ready(&mut self, token: u64, event: &Event) {
        let Some(conn) = self.get_mut(token) else { return };
        if event.is_readable() || event.is_closed() {
            conn.readable = true;
        }
        if event.is_closed() {
            conn.hung_up = true;
        }
        if event.is_writable() {
            conn.write_blocked = false;
        }
        self.pump(token);
    }

    /// The response to request `seq` of connection `token`, executed on another thread.
    pub fn complete(&mut self, token: u64, seq: u64, response: Vec<u8>) {
        let Some(conn) = self.get_mut(token) else { return }; // closed meanwhile: nobody to answer
        conn.output_request_bytes += conn.in_flight.complete(seq, response, &mut conn.output);
        self.pump(token);
    }

    /// Runs the connections that still had input when their read budget ran out, then the periodic
    /// sweep: idle connections past `--idle-timeout`, lingering ones past their time.
    pub fn tick(&mut self) {
        for token in std::mem::take(&mut self.ready_again) {
            self.pump(token);
        }
        let now = self.now;
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        for index in 0..self.slots.len() {
            let Some(conn) = &mut self.slots[index].conn else { continue };
            match conn.timed_out(now, &self.settings) {
                Some(Timeout::Close) => self.close(index),
                Some(Timeout::RequestTimeout(reason)) => {
                    conn.fail(Status::RequestTimeout, reason);
                    let token = token_of(index, self.slots[index].generation);
                    self.pump(token);
                }
                None => {}
            }
        }
    }

    /// How long the loop may wait before [`Connections::tick`] has work: zero if a connection waits
    /// for its next turn, else until the next sweep, or forever with no connection open.
    pub fn timeout(&self) -> Option<Duration> {
        if !self.ready_again.is_empty() {
            return Some(Duration::ZERO);
        }
        (!self.is_empty()).then(|| self.next_sweep.saturating_duration_since(self.now))
    }

    /// SIGTERM: no new requests; connections close as soon as what they have in flight is answered,
    /// and idle ones at once.
    pub fn begin_drain(&mut self) {
        self.draining = true;
        for index in 0..self.slots.len() {
            if let Some(conn) = &mut self.slots[index].conn {
                conn.closing = true;
                let token = token_of(index, self.slots[index].generation);
                self.pump(token);
            }
        }
    }

    fn get_mut(&mut self, token: u64) -> Option<&mut Conn> {
        conn_mut(&mut self.slots, token)
    }

    /// Moves connection `token` as far as it can go without blocking, then closes it if it is done.
    fn pump(&mut self, token: u64) {
        let index = (token & u64::from(u32::MAX)) as usize;
        let Some(conn) = conn_mut(&mut self.slots, token) else { return };
        let executor = &mut self.executor;
        let mut step = Step { worker: &self.worker, executor, token, draining: self.draining, now: self.now };
        match conn.pump(&mut step) {
            Progress::Wait => {}
            Progress::ReadyAgain => self.ready_again.push(token),
            Progress::Done => self.close(index),
        }
    }

    /// Keeps `open` up to date with which of these connections are open, for the threads that
    /// take their requests from a queue (see [`OpenConnections`]).
    pub fn publish_open(&mut self, open: Arc<OpenConnections>) {
        self.open = Some(open);
    }

    fn close(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if slot.conn.take().is_some() {
            slot.generation = (slot.generation + 1) & 0x7fff_ffff;
            if let Some(open) = &self.open {
                open.closed(index, slot.generation);
            }
            self.free.push(index);
            self.worker.conn_closed();
        }
    }
}

/// Which connections of one loop are still open, for the threads that execute its requests from a
/// queue: a worker asks before it starts a request, so the queued requests of a client that has
/// reset or been closed are dropped, not executed for no one while others wait behind them. One
/// atomic generation per slot, as in the tokens; a slot beyond the capacity counts as open.
pub struct OpenConnections {
    generations: Box<[AtomicU32]>,
}

impl OpenConnections {
    /// Room for `capacity` connections (`--max-conns`, at most 2^20).
    pub fn new(capacity: u64) -> Arc<Self> {
        let capacity = capacity.min(1 << 20) as usize;
        Arc::new(OpenConnections { generations: (0..capacity).map(|_| AtomicU32::new(0)).collect() })
    }

    /// Whether connection `token` is still open.
    pub fn is_open(&self, token: u64) -> bool {
        let index = (token & u64::from(u32::MAX)) as usize;
        match self.generations.get(index) {
            Some(generation) => u64::from(generation.load(Ordering::Acquire)) == token >> 32,
            None => true,
        }
    }

    fn closed(&self, index: usize, next_generation: u32) {
        if let Some(generation) = self.generations.get(index) {
            generation.store(next_generation, Ordering::Release);
        }
    }
}

/// The connection `token` names, unless it has closed since.
fn conn_mut(slots: &mut [Slot], token: u64) -> Option<&mut Conn> {
    let slot = slots.get_mut((token & u64::from(u32::MAX)) as usize)?;
    if u64::from(slot.generation) != token >> 32 {
        return None;
    }
    slot.conn.as_mut()
}

/// What one connection's pump needs from its loop.
struct Step<'a, E> {
    worker: &'a WorkerStats,
    executor: &'a mut E,
    token: u64,
    draining: bool,
    now: Instant,
}

/// What a connection's time is up for.
enum Timeout {
    /// Idle past `--idle-timeout`, or lingering past `LINGER`: close it.
    Close,
    /// A request that stopped arriving: answer 408 with this reason, then close.
    RequestTimeout(&'static str),
}

/// Where a pump left a connection.
enum Progress {
    /// Waiting for the kernel (readable, writable) or for responses from elsewhere.
    Wait,
    /// Read budget used up with input left.
    ReadyAgain,
    /// Finished: close it.
    Done,
}

struct Conn {
    fd: OwnedFd,
    input: Input,
    /// What framing has learned of the partial request at the front of `input`.
    framing: http::Progress,
    /// The length `input` must reach before framing can learn more (0: any).
    need: usize,
    continue_sent: bool,
    output: Vec<u8>,
    output_sent: usize,
    /// Bytes of the requests whose responses are in `output`, not all written yet.
    output_request_bytes: usize,
    in_flight: InFlight,
    /// Covers the bytes of this connection's requests being answered (in flight, or answered and
    /// waiting in `output`) beyond `SMALL_ANSWERING`: a large request counts against the memory
    /// budget from its first byte read to its response's last byte written.
    answering: Reservation,
    /// More may be waiting in the socket: the kernel will not report it again (edge-triggered).
    readable: bool,
    /// The last write hit EAGAIN; EPOLLOUT clears this.
    write_blocked: bool,
    /// No more requests: close once everything in flight is answered and written.
    closing: bool,
    /// The peer has closed its side (read returned 0).
    peer_closed: bool,
    /// epoll reported EPOLLRDHUP / EPOLLHUP / EPOLLERR: the end of the stream is in the socket, so
    /// reads go on until they return it (no further event would come to announce it).
    hung_up: bool,
    /// When the first byte of a request head not yet whole arrived (`--header-timeout`).
    head_since: Option<Instant>,
    /// A slow request was just executed on the loop's thread: give the loop back its turn.
    yield_now: bool,
    /// Our side is shut since then; discarding what the peer still sends until it closes or
    /// `LINGER` has passed.
    lingering_since: Option<Instant>,
    last_active: Instant,
}

impl Conn {
    fn new(fd: OwnedFd, now: Instant) -> Self {
        Conn {
            fd,
            input: Input::new(),
            framing: http::Progress::default(),
            need: 0,
            continue_sent: false,
            output: Vec::new(),
            output_sent: 0,
            output_request_bytes: 0,
            in_flight: InFlight::default(),
            answering: Reservation::default(),
            readable: false,
            write_blocked: false,
            closing: false,
            peer_closed: false,
            hung_up: false,
            head_since: None,
            yield_now: false,
            lingering_since: None,
            last_active: now,
        }
    }

    /// Whether this connection's time is up at `now`. A head gets `--header-timeout` from its first
    /// byte, however it trickles (bytes keep a connection active, so the idle timer alone would let
    /// a slowloris client hold it forever); a body that stalls gets `--idle-timeout`. Neither runs
    /// while the server itself is not reading (output blocked, or a request executing).
    fn timed_out(&self, now: Instant, settings: &ConnSettings) -> Option<Timeout> {
        let idle = now.saturating_duration_since(self.last_active);
        let past = |since: Instant, limit: Duration| now.saturating_duration_since(since) >= limit;
        if let Some(since) = self.lingering_since {
            return past(since, LINGER).then_some(Timeout::Close);
        }
        let reading = !self.closing && !self.write_blocked && self.in_flight.is_empty();
        if let (Some(since), Some(limit), true) = (self.head_since, settings.header_timeout, reading) {
            return past(since, limit)
                .then_some(Timeout::RequestTimeout("request head not received in time"));
        }
        let idle_past = settings.idle_timeout.is_some_and(|limit| idle >= limit);
        match (idle_past, self.in_flight.is_empty()) {
            (true, true) if reading && self.input.len() > 0 => {
                Some(Timeout::RequestTimeout(match self.framing.head_complete() {
                    true => "request body not received in time",
                    false => "request head not received in time",
                }))
            }
            (true, true) => Some(Timeout::Close),
            _ => None,
        }
    }

    /// Writes what is pending, executes what is buffered, reads what has arrived; repeats until it
    /// would block.
    fn pump(&mut self, step: &mut Step<'_, impl Executor>) -> Progress {
        // Any event on a connection is activity: the client sent, took what we sent, or closed.
        self.last_active = step.now;
        if self.lingering_since.is_some() {
            return self.discard_input();
        }
        let mut budget = READ_BUDGET;
        loop {
            if self.flush().is_err() {
                return Progress::Done;
            }
            if self.write_blocked {
                return Progress::Wait; // read nothing until the client takes what it was sent
            }
            if std::mem::take(&mut self.yield_now) {
                return Progress::ReadyAgain;
            }
            if self.closing {
                return match self.in_flight.is_empty() {
                    true => self.finish(step.draining, step.now),
                    false => Progress::Wait,
                };
            }
            if self.execute_buffered(step) {
                continue; // new output: write it before reading more
            }
            if self.in_flight.len() >= MAX_IN_FLIGHT || !self.readable {
                return Progress::Wait;
            }
            if budget == 0 {
                return Progress::ReadyAgain;
            }
            match self.read() {
                Ok(0) => {
                    self.peer_closed = true;
                    self.closing = true;
                }
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {
                    self.fail(Status::ServiceUnavailable, "server memory budget exhausted; try again later")
                }
                Err(_) => return Progress::Done,
            }
        }
    }

    /// Reads what the socket has into the input buffer.
    fn read(&mut self) -> io::Result<usize> {
        let space = self.input.space(self.need)?;
        let room = space.len();
        let n = sys::socket::read(self.fd.as_fd(), space)?;
        self.input.filled(n);
        // A read that did not fill the buffer emptied the socket: edge-triggered epoll will report
        // the next arrival, so no extra read is spent just to see EAGAIN. Unless the peer has hung
        // up: data and FIN can arrive as one event, and the FIN is only seen by reading on.
        if n < room && !self.hung_up {
            self.readable = false;
        }
        Ok(n)
    }

    /// Frames, routes and executes the complete requests in the input buffer, in order; true if it
    /// produced output. Stops at a partial request, at too much pending output or in-flight work,
    /// and after a request that closes the connection.
    fn execute_buffered(&mut self, step: &mut Step<'_, impl Executor>) -> bool {
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
                        // Write what is ready before a request that may hold the thread: the
                        // responses before it go out now, not when it is done. (It is framed again
                        // next time, from where framing got to.)
                        break;
                    }
                    self.closing = job.closes();
                    let seq = self.in_flight.next_seq();
                    if self.in_flight.is_empty() {
                        // The usual case: nothing ahead of it, so its response goes straight out.
                        let request = Request { token: step.token, seq, job };
                        let executed = step.executor.execute(step.worker, request, &mut self.output);
                        match executed {
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
                        let request = Request { token: step.token, seq, job };
                        let executed = step.executor.execute(step.worker, request, &mut response);
                        self.in_flight.push((executed == Executed::Here).then_some(response), consumed);
                    }
                    self.input.consume(consumed);
                    self.framing = http::Progress::default();
                    self.head_since = None;
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
                        false => self.head_since.or(Some(step.now)),
                    };
                    if expects_continue && !self.continue_sent {
                        // Interim responses too leave in request order: after those still in flight.
                        match self.in_flight.is_empty() {
                            true => self.output.extend_from_slice(http::response::CONTINUE),
                            false => self.in_flight.push(Some(http::response::CONTINUE.to_vec()), 0),
                        }
                        self.continue_sent = true;
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

    /// Answers a request that cannot be framed, in its turn after those in flight, then closes.
    fn fail(&mut self, status: Status, reason: &str) {
        let mut response = Vec::new();
        exec::write_error(status, reason, &mut response);
        match self.in_flight.is_empty() {
            true => self.output.extend_from_slice(&response),
            false => self.in_flight.push(Some(response), 0),
        }
        self.closing = true;
    }

    /// Writes pending output; sets `write_blocked` on EAGAIN.
    fn flush(&mut self) -> io::Result<()> {
        while self.output_sent < self.output.len() {
            match sys::socket::write(self.fd.as_fd(), &self.output[self.output_sent..]) {
                Ok(n) => self.output_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
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
        Ok(())
    }

    /// Everything is answered and written. If the client may still be sending (it has not closed,
    /// and it left bytes we did not use), shut our side and linger; else, or when the server is
    /// draining, close now.
    fn finish(&mut self, draining: bool, now: Instant) -> Progress {
        if draining || self.peer_closed || (self.input.len() == 0 && !self.readable) {
            return Progress::Done;
        }
        if sys::socket::shutdown_write(self.fd.as_fd()).is_err() {
            return Progress::Done;
        }
        self.lingering_since = Some(now);
        self.discard_input()
    }

    fn discard_input(&mut self) -> Progress {
        let mut sink = [0u8; 4096];
        loop {
            match sys::socket::read(self.fd.as_fd(), &mut sink) {
                Ok(0) => return Progress::Done,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Done,
            }
        }
    }
}

/// A connection's read buffer: bytes `start..end` of `buf` are received and not yet consumed. The
/// buffer stays initialised, so reading into it costs no zeroing.
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

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_full(&self) -> bool {
        self.start == 0 && self.end == MAX_INPUT
    }

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

    /// Room to read into: moves unconsumed bytes to the front, or grows (towards `need`, the
    /// request's known length) when a request does not fit.
    fn space(&mut self, need: usize) -> io::Result<&mut [u8]> {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() || need > self.buf.len() {
            if self.buf.len() >= MAX_INPUT {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "read buffer at its limit"));
            }
            let grown = (self.buf.len() * 2).max(need).clamp(INITIAL_INPUT, MAX_INPUT);
            let more = grown.saturating_sub(SMALL_INPUT) - self.reserved.bytes();
            if more > 0 && !self.reserved.try_grow(more) {
                return Err(io::Error::new(io::ErrorKind::OutOfMemory, "memory budget exhausted"));
            }
            self.buf.resize(grown, 0);
        }
        Ok(&mut self.buf[self.end..])
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
