//! The epoll driver of the connection core: all connections one event loop owns, each a
//! [`Session`] (the HTTP/1.1 state machine, with no I/O) over a non-blocking socket.
//!
//! ```text
//!   epoll event ──► Conn::pump: loop { match session.next(now, executor) {
//!                     Send    ─► write(fd, output)  (EAGAIN: wait for EPOLLOUT, read nothing)
//!                     Receive ─► read(fd, read_buffer) while `readable`, within the read budget
//!                     Wait / Yield / Finish / Discard / Close ─► as the session says } }
//!   every 500 ms ──► sweep: session.handle_timeout(now)  (408, idle close, linger over)
//!   another thread's response ──► Connections::complete ─► session.complete ─► pump
//! ```
//!
//! Connections are registered edge-triggered for reading and writing at once, so a connection costs
//! one `epoll_ctl` in its whole life. Edge-triggered means the loop must remember what the kernel
//! will not say again: `readable` (more may be waiting: a read filled the buffer, or was cut short
//! by this wake-up's budget) and whether a write hit `EAGAIN` (the session keeps those bytes in its
//! output; `EPOLLOUT` says when to go on). That memory, the fd and the loop's clock are all this
//! driver adds to the session: framing, order, budgets, deadlines and decisions are the session's.
//!
//! Nothing here blocks. A client that never reads gets its responses queued until the kernel's send
//! buffer is full; then the connection stops reading, so its requests wait in its own socket's receive
//! queue and, once that is full, in its own sending kernel: memory stays bounded and no one else waits.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http1::Job;

use crate::accept::Acceptor;
use crate::config::Config;
use crate::handlers;
pub use crate::session::Executed;
use crate::session::{self, Execute, Expired, Session, Sweep, Timeouts, Want};
use crate::stats::WorkerStats;
use crate::tls::{Tls, TlsServer};
use crate::token::{index_of, token_of};
use sys::epoll::{Event, Poller};

/// Bytes one connection may read in one wake-up before the others get their turn.
const READ_BUDGET: usize = 256 * 1024;

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
pub trait LoopExecutor {
    /// Executes `request` now, appending its response to `out`, or sends it elsewhere; its response
    /// then comes back through [`Connections::complete`].
    fn execute(&mut self, worker: &WorkerStats, request: Request<'_>, out: &mut Vec<u8>) -> Executed;
}

/// Executes every request on the loop's own thread (every architecture but RAMCloud's).
#[derive(Debug, Default)]
pub struct ExecuteHere;

impl LoopExecutor for ExecuteHere {
    fn execute(&mut self, worker: &WorkerStats, request: Request<'_>, out: &mut Vec<u8>) -> Executed {
        handlers::execute(request.job, worker, out);
        Executed::Here
    }
}

impl<F: FnMut(Request<'_>, &mut Vec<u8>) -> Executed> LoopExecutor for F {
    fn execute(&mut self, _: &WorkerStats, request: Request<'_>, out: &mut Vec<u8>) -> Executed {
        self(request, out)
    }
}

/// A loop's [`LoopExecutor`] seen from one connection's session: adds the connection's token and the
/// loop's counters to each request.
struct ForConn<'a, E> {
    executor: &'a mut E,
    worker: &'a WorkerStats,
    token: u64,
}

impl<E: LoopExecutor> Execute for ForConn<'_, E> {
    fn execute(&mut self, seq: u64, job: Job<'_>, out: &mut Vec<u8>) -> Executed {
        self.executor.execute(self.worker, Request { token: self.token, seq, job }, out)
    }
}

/// Executes every request on the calling thread, counted as `worker`'s requests: for a loop in
/// which no thread owns a connection (lab-oneshot), so whoever serves it executes.
pub struct ExecuteAs<'a>(pub &'a WorkerStats);

impl Execute for ExecuteAs<'_> {
    fn execute(&mut self, _: u64, job: Job<'_>, out: &mut Vec<u8>) -> Executed {
        handlers::execute(job, self.0, out);
        Executed::Here
    }
}

/// Settings every connection of a loop shares, from the command line.
#[derive(Debug, Clone, Copy)]
struct ConnSettings {
    timeouts: Timeouts,
    nodelay: bool,
}

/// All connections one event loop owns, by token, and how their requests are executed.
pub struct Connections<E = ExecuteHere> {
    slots: Vec<ConnSlot>,
    free: Vec<usize>,
    /// Tokens that used up their read budget with input left: served again before the next wait.
    ready_again: Vec<u64>,
    settings: ConnSettings,
    worker: WorkerStats,
    executor: E,
    draining: bool,
    sweep: Sweep,
    /// The time of the loop's last wake-up: read once per `epoll_wait`, not once per read.
    now: Instant,
    /// Published for the threads that execute this loop's requests elsewhere.
    open: Option<Arc<OpenConnections>>,
    /// `--tls-cert`: every connection shakes hands first.
    tls: Option<TlsServer>,
}

struct ConnSlot {
    generation: u32,
    conn: Option<Conn>,
}

/// What one connection's slot costs, resident, while it is idle (the io_uring driver's must not be
/// more: `uring_conn`'s tests).
#[cfg(test)]
pub(crate) const IDLE_SLOT_BYTES: usize = std::mem::size_of::<ConnSlot>();

impl Connections {
    /// No connections yet, for a loop that executes every request itself; `worker` is whose
    /// counters they bump.
    pub fn new(config: &Config, worker: WorkerStats) -> Self {
        Connections::with_executor(config, worker, ExecuteHere)
    }
}

impl<E: LoopExecutor> Connections<E> {
    /// No connections yet, for a loop whose requests `executor` executes (or sends elsewhere).
    pub fn with_executor(config: &Config, worker: WorkerStats, executor: E) -> Self {
        session::set_memory_budget(config.memory_budget);
        Connections {
            slots: Vec::new(),
            free: Vec::new(),
            ready_again: Vec::new(),
            settings: ConnSettings { timeouts: Timeouts::from(config), nodelay: config.nodelay },
            worker,
            executor,
            draining: false,
            sweep: Sweep::default(),
            now: Instant::now(),
            open: None,
            tls: config.tls.clone(),
        }
    }

    /// Call on every return from epoll_wait: counts the wake-up and reads the clock once for all the
    /// events it brought (idle times, and the `Date` of every response).
    pub fn woke_up(&mut self) {
        handlers::woke_up(&self.worker);
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
            self.slots.push(ConnSlot { generation: 0, conn: None });
            self.slots.len() - 1
        });
        let token = token_of(index, self.slots[index].generation);
        if let Err(e) = poller.add(fd.as_fd(), token, sys::epoll::CONNECTION) {
            self.free.push(index);
            self.worker.conn_closed();
            return Err(e);
        }
        self.slots[index].conn = Some(Conn::accepted(fd, self.now, self.tls.as_ref()));
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
        conn.ready(event);
        self.pump(token);
    }

    /// The response to request `seq` of connection `token`, executed on another thread.
    pub fn complete(&mut self, token: u64, seq: u64, response: Vec<u8>) {
        let Some(conn) = self.get_mut(token) else { return }; // closed meanwhile: nobody to answer
        conn.session.complete(seq, response);
        self.pump(token);
    }

    /// Runs the connections that still had input when their read budget ran out, then the periodic
    /// sweep: idle connections past `--idle-timeout`, lingering ones past their time.
    pub fn tick(&mut self) {
        for token in std::mem::take(&mut self.ready_again) {
            self.pump(token);
        }
        if !self.sweep.due(self.now) {
            return;
        }
        let (now, timeouts, slots) = (self.now, self.settings.timeouts, self.slots.len());
        session::sweep(
            self,
            slots,
            now,
            &timeouts,
            |conns, index| conns.slots[index].conn.as_mut().map(|conn| &mut conn.session),
            |conns, index, expired| match expired {
                Expired::Close => conns.close(index),
                Expired::Answered(late) => {
                    conns.worker.timed_out(late);
                    conns.pump(token_of(index, conns.slots[index].generation));
                }
                Expired::Nothing => {}
            },
        );
    }

    /// How long the loop may wait before [`Connections::tick`] has work: zero if a connection waits
    /// for its next turn, else until the next sweep, or forever with no connection open.
    pub fn timeout(&self) -> Option<Duration> {
        if !self.ready_again.is_empty() {
            return Some(Duration::ZERO);
        }
        (!self.is_empty()).then(|| self.sweep.time_left(self.now))
    }

    /// SIGTERM: no new requests; connections close as soon as what they have in flight is answered,
    /// and idle ones at once.
    pub fn begin_drain(&mut self) {
        self.draining = true;
        for index in 0..self.slots.len() {
            if let Some(conn) = &mut self.slots[index].conn {
                conn.session.begin_drain();
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
        let index = index_of(token);
        let Some(conn) = conn_mut(&mut self.slots, token) else { return };
        let mut executor = ForConn { executor: &mut self.executor, worker: &self.worker, token };
        match conn.pump(self.now, &mut executor) {
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
        let index = index_of(token);
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
fn conn_mut(slots: &mut [ConnSlot], token: u64) -> Option<&mut Conn> {
    let slot = slots.get_mut(index_of(token))?;
    if u64::from(slot.generation) != token >> 32 {
        return None;
    }
    slot.conn.as_mut()
}

/// Where a pump left a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Waiting for the kernel (readable, writable) or for responses from elsewhere.
    Wait,
    /// Read budget used up with input left, or a slow request held the thread: pump it again
    /// after the others.
    ReadyAgain,
    /// Finished: close it.
    Done,
}

/// One connection: its socket, its session, and what edge-triggered epoll will not say again.
/// [`Connections`] keeps one per slot; a loop that is not one (lab-oneshot's threads, which take
/// turns with every connection) drives it directly.
pub struct Conn {
    fd: OwnedFd,
    session: Session,
    /// More may be waiting in the socket: the kernel will not report it again (edge-triggered).
    readable: bool,
    /// epoll reported EPOLLRDHUP / EPOLLHUP / EPOLLERR: the end of the stream is in the socket, so
    /// reads go on until they return it (no further event would come to announce it).
    hung_up: bool,
    /// `--tls-cert`: the TLS layer between the socket and the session (`conn::tls`).
    tls: Option<Box<Tls>>,
}

impl Conn {
    /// A connection accepted at `now`.
    pub fn new(fd: OwnedFd, now: Instant) -> Self {
        Conn::accepted(fd, now, None)
    }

    /// A connection accepted at `now`, with TLS between its socket and its session if the server
    /// has a certificate (`tls`): the handshake is its first exchange.
    pub fn accepted(fd: OwnedFd, now: Instant, tls: Option<&TlsServer>) -> Self {
        let tls = tls.map(TlsServer::accept);
        Conn { fd, session: Session::new(now), readable: false, hung_up: false, tls }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Its protocol state: for timeouts and drain.
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Whether output waits for the client (a write hit `EAGAIN`): then only `EPOLLOUT` can help.
    pub fn output_blocked(&self) -> bool {
        !self.session.output().is_empty() || self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }

    /// Records what an epoll event says of the socket; [`Conn::pump`] then acts on it.
    pub fn ready(&mut self, event: &Event) {
        if event.is_readable() || event.is_closed() {
            self.readable = true;
        }
        if event.is_closed() {
            self.hung_up = true;
        }
    }

    /// Does what the session asks until it must wait: for the kernel (EAGAIN), for responses from
    /// elsewhere, or for its next turn.
    pub fn pump(&mut self, now: Instant, executor: &mut impl Execute) -> Progress {
        // With TLS, ciphertext left over from the last pump (the socket was full) goes first.
        if self.tls.as_ref().is_some_and(|tls| tls.wants_write()) {
            if let Some(progress) = self.tls_flush() {
                return progress;
            }
        }
        let mut budget = READ_BUDGET;
        loop {
            match self.session.next(now, executor) {
                Want::Send if self.tls.is_some() => {
                    if let Some(progress) = self.tls_send() {
                        return progress;
                    }
                }
                Want::Send => match sys::socket::write(self.fd.as_fd(), self.session.output()) {
                    Ok(n) => self.session.sent(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Wait,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Progress::Done,
                },
                Want::Receive => {
                    // With TLS, the socket is read through rustls, and `Conn::read` takes what it
                    // decrypted: still this one call, so that it stays inlined here.
                    if self.tls.is_some() {
                        match self.tls_receive(now, &mut budget) {
                            TlsStep::Stop(progress) => return progress,
                            TlsStep::Next => continue,
                            TlsStep::Plaintext => {}
                        }
                    } else if !self.readable {
                        return Progress::Wait;
                    } else if budget == 0 {
                        return Progress::ReadyAgain;
                    }
                    match self.read() {
                        Ok(n) => budget = budget.saturating_sub(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Progress::Done,
                    }
                }
                Want::Wait => return Progress::Wait,
                Want::Yield => return Progress::ReadyAgain,
                Want::Finish { unread_input } if unread_input || self.readable => {
                    if self.tls.is_some() {
                        self.tls_close();
                    }
                    if sys::socket::shutdown_write(self.fd.as_fd()).is_err() {
                        return Progress::Done;
                    }
                    self.session.linger(now);
                }
                Want::Finish { .. } | Want::Close => {
                    if self.tls.is_some() {
                        self.tls_close();
                    }
                    return Progress::Done;
                }
                Want::Discard => return self.discard_input(),
            }
        }
    }

    /// Reads what the socket has into the session's buffer (nothing if the session refused to grow
    /// it: it has answered that, and its next step says what follows).
    fn read(&mut self) -> io::Result<usize> {
        let waiting = match self.session.read_buffer_full() {
            true => sys::socket::bytes_readable(self.fd.as_fd()).unwrap_or(0),
            false => 0,
        };
        let Some(space) = self.session.read_buffer_for(waiting) else { return Ok(0) };
        let room = space.len();
        let n = match &mut self.tls {
            None => sys::socket::read(self.fd.as_fd(), space)?,
            // What rustls has decrypted (`conn::tls`): the socket's state is not this read's.
            Some(tls) => {
                let n = tls.read_plaintext(space);
                if n > 0 {
                    self.session.received(n);
                }
                return Ok(n);
            }
        };
        if n == 0 {
            self.session.received_eof();
            return Ok(0);
        }
        self.session.received(n);
        // A read that did not fill the buffer emptied the socket: edge-triggered epoll will report
        // the next arrival, so no extra read is spent just to see EAGAIN. Unless the peer has hung
        // up: data and FIN can arrive as one event, and the FIN is only seen by reading on.
        if n < room && !self.hung_up {
            self.readable = false;
        }
        Ok(n)
    }

    /// Lingering: reads and drops what the client still sends, until it closes.
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

#[cfg(test)]
mod tests;
mod tls;
use tls::TlsStep;
