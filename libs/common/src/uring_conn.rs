//! The io_uring driver of the connection core: all connections one ring owns, each a [`Session`]
//! (the HTTP/1.1 state machine, with no I/O) over a socket the ring reads and writes by completion.
//!
//! ```text
//!   accept completion ──► add: one multishot recv submitted (no buffer held until bytes arrive)
//!   recv completion (a provided buffer) ──► session.receive(bytes) ─► recycle the buffer ─► pump
//!   pump: loop { match session.next(now, executor) {
//!     Send    ─► copy output into the connection's send buffer, submit one send; wait for it
//!     Receive ─► bytes already here (pending), else the end of stream, else (re-)arm the recv
//!     Finish  ─► shutdown(SHUT_WR) + linger, unless the end of the stream is already here
//!     Wait / Yield / Discard / Close ─► as the session says } }
//!   send completion ──► session.sent(n) ─► pump   (a short send continues where it stopped)
//!   every 500 ms ──► sweep: session.handle_timeout(now)  (408, idle close, linger over)
//! ```
//!
//! Completion inverts what the epoll driver (`common::conn`) must remember: epoll says a socket is
//! *ready* and the loop reads when the session asks, so bytes arrive only when wanted. Here the
//! kernel has already read: a multishot receive posts every chunk as it comes, whether the session
//! wants it or not. So the driver keeps what the session did not ask for yet (`pending`) and hands
//! it, and the end of the stream after it, only when the session next wants to receive: the session
//! sees the same sequence of inputs as under epoll. And like the epoll driver, which stops reading a
//! connection whose output waits for the client, this one stops *receiving*: once a connection that
//! is not reading holds [`PENDING_LIMIT`] unasked-for bytes, its multishot receive is cancelled, and
//! it is armed again only when the session has taken them all and wants more. A client that never
//! reads then makes the ring neither re-arm receives forever nor queue unbounded output: its
//! requests wait in its own socket's receive queue, as they do under epoll.
//!
//! Sends own their bytes until their completion (the kernel reads them meanwhile), so each
//! connection has one send in flight at most, from a buffer of its own that is reused. A receive
//! that finds no provided buffer free (`ENOBUFS`, the multishot then ends) is counted and armed
//! again after the batch of completions that used them up has given them back.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use sys::uring::{Completion, Errno, Ring};

use crate::config::Config;
use crate::conn::ExecuteOn;
use crate::session::{self, Expired, Session, Timeouts, Want};
use crate::stats::WorkerStats;

/// Bytes a connection that is not reading may hold unasked-for before its receive is cancelled.
pub const PENDING_LIMIT: usize = 64 * 1024;
/// How often idle connections are looked for (as in the epoll driver).
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// What a connection's operation is, in the top 4 bits of its tag; the token is below.
const RECV: u64 = 1 << 60;
const SEND: u64 = 2 << 60;
/// Completions nobody waits for (close, cancel): counted by the ring, otherwise dropped.
pub const IGNORED: u64 = 3 << 60;
const KIND: u64 = 0xf << 60;

/// Whether a completion's tag is one of a connection's (a loop's own tags have those 4 bits clear).
pub fn is_connection_tag(tag: u64) -> bool {
    matches!(tag & KIND, RECV | SEND | IGNORED)
}

/// A token: the slot's index in the low 32 bits, its generation in the 27 above (see `conn`).
fn token_of(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

fn index_of(token: u64) -> usize {
    (token & u64::from(u32::MAX)) as usize
}

/// One connection: its socket, its session, and what the ring is doing with it. Kept small: an
/// idle connection is this, its slot and an armed receive (which costs no memory here).
struct Conn {
    fd: OwnedFd,
    session: Session,
    /// What the ring is doing with it and what has arrived: the `Flags` bits.
    flags: u8,
    /// The buffers of a connection that has received or sent, made at its first use.
    io: Option<Box<Io>>,
}

/// A connection's buffers.
#[derive(Default)]
struct Io {
    /// The send buffer, while no send is in flight (the ring owns it meanwhile).
    send_buf: Vec<u8>,
    /// Bytes received that the session has not asked for yet, in order.
    pending: Vec<u8>,
}

/// The bits of `Conn::flags`.
struct Flags;

impl Flags {
    /// The multishot receive is armed (its `Op` is `Ring::receive_op` of the connection's tag).
    const RECV_ARMED: u8 = 1;
    /// A cancel of the receive has been submitted.
    const CANCELLING: u8 = 1 << 1;
    /// A send is in flight.
    const SENDING: u8 = 1 << 2;
    /// The end of the stream arrived (after `pending`).
    const EOF: u8 = 1 << 3;
    /// The last receive left bytes in the socket (`IORING_CQE_F_SOCK_NONEMPTY`): more will arrive.
    const SOCKET_NONEMPTY: u8 = 1 << 4;
    /// The last pump ended with the session wanting to receive (or to discard, lingering).
    const RECEIVING: u8 = 1 << 5;
    /// Lingering: whatever arrives is dropped.
    const DISCARDING: u8 = 1 << 6;
}

impl Conn {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn set(&mut self, flag: u8, on: bool) {
        match on {
            true => self.flags |= flag,
            false => self.flags &= !flag,
        }
    }

    fn pending(&self) -> &[u8] {
        self.io.as_ref().map_or(&[], |io| &io.pending)
    }

    fn io(&mut self) -> &mut Io {
        self.io.get_or_insert_with(Box::default)
    }
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// Where a pump left a connection.
enum Progress {
    Wait,
    ReadyAgain,
    Done,
}

/// All connections one ring owns, by token, and the ring itself.
pub struct UringConnections {
    ring: Ring,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Tokens to pump again before the next wait (a slow request held the thread).
    ready_again: Vec<u64>,
    /// Tokens whose receive ended on ENOBUFS: armed again once the batch has recycled its buffers.
    rearm: Vec<u64>,
    timeouts: Timeouts,
    nodelay: bool,
    worker: WorkerStats,
    draining: bool,
    next_sweep: Instant,
    now: Instant,
}

impl UringConnections {
    /// No connections yet, on `ring` (its buffers provided already), counted into `worker`.
    pub fn new(config: &Config, ring: Ring, worker: WorkerStats) -> Self {
        session::set_memory_budget(config.memory_budget);
        worker.ring([0; 4]); // in /stats from the start, before the first wait returns
        UringConnections {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            ready_again: Vec::new(),
            rearm: Vec::new(),
            timeouts: Timeouts { idle: config.idle_timeout, header: config.header_timeout },
            nodelay: config.nodelay,
            worker,
            draining: false,
            next_sweep: Instant::now() + SWEEP_INTERVAL,
            now: Instant::now(),
        }
    }

    /// The ring, for the loop's own operations (accept, signals, wakers, timeouts).
    pub fn ring(&mut self) -> &mut Ring {
        &mut self.ring
    }

    /// Submits what is queued and waits for a completion, at most until the next sweep (or
    /// `limit`); counts the wake-up, reads the clock once for the batch, and publishes the ring's
    /// counters in /stats.
    pub fn wait(&mut self, limit: Option<Duration>) -> std::io::Result<()> {
        let sweep = match self.ready_again.is_empty() {
            false => Some(Duration::ZERO),
            true => (!self.is_empty()).then(|| self.next_sweep.saturating_duration_since(Instant::now())),
        };
        self.ring.wait(crate::earliest([sweep, limit]))?;
        crate::exec::woke_up(&self.worker);
        self.now = Instant::now();
        let c = self.ring.counters();
        self.worker.ring([c.submissions, c.completions, c.enters, c.enobufs]);
        Ok(())
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes over a newly accepted (and admitted) connection: `TCP_NODELAY`, then its receive.
    pub fn add(&mut self, fd: OwnedFd) {
        self.worker.conn_opened();
        if self.draining || (self.nodelay && sys::socket::set_nodelay(fd.as_fd(), true).is_err()) {
            self.worker.conn_closed();
            return;
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot { generation: 0, conn: None });
            self.slots.len() - 1
        });
        let token = token_of(index, self.slots[index].generation);
        self.slots[index].conn = Some(Conn { fd, session: Session::new(self.now), flags: 0, io: None });
        self.pump(token);
    }

    /// A completion of one of the connections' operations (see [`is_connection_tag`]).
    pub fn complete(&mut self, completion: Completion) {
        let token = completion.tag & !KIND;
        let kind = completion.tag & KIND;
        let Some(conn) = conn_mut(&mut self.slots, token) else {
            // Closed meanwhile: give the kernel its buffer back; a send's bytes are dropped.
            if let Some(buffer) = completion.buffer {
                self.ring.recycle(buffer);
            }
            return;
        };
        match kind {
            RECV => {
                if !completion.more {
                    conn.set(Flags::RECV_ARMED | Flags::CANCELLING, false);
                }
                conn.set(Flags::SOCKET_NONEMPTY, completion.socket_nonempty);
                match completion.result {
                    Ok(0) => conn.set(Flags::EOF, true),
                    Ok(_) => {
                        if let Some(buffer) = completion.buffer {
                            let bytes = self.ring.buffer(&buffer);
                            let direct = conn.has(Flags::RECEIVING) && conn.pending().is_empty();
                            match (conn.has(Flags::DISCARDING), direct) {
                                (true, _) => {} // lingering: dropped
                                (false, true) => {
                                    let took = conn.session.receive(bytes);
                                    if took < bytes.len() {
                                        conn.io().pending.extend_from_slice(&bytes[took..]);
                                    }
                                }
                                (false, false) => conn.io().pending.extend_from_slice(bytes),
                            }
                            self.ring.recycle(buffer);
                        }
                    }
                    Err(Errno::ENOBUFS) => {
                        self.rearm.push(token);
                        return;
                    }
                    Err(Errno::ECANCELED) => {}
                    Err(_) => return self.close(index_of(token)), // a reset: as a failed read(2)
                }
                if !conn.has(Flags::RECEIVING) {
                    // The session waits for something else (its send): it takes these bytes when
                    // it next wants some. Unless too many pile up: then stop receiving.
                    if conn.pending().len() >= PENDING_LIMIT {
                        stop_receiving(&mut self.ring, conn, token);
                    }
                    return;
                }
            }
            SEND => {
                conn.set(Flags::SENDING, false);
                if let Some(mut buf) = completion.owned {
                    buf.clear();
                    conn.io().send_buf = buf;
                }
                match completion.result {
                    Ok(n) => conn.session.sent(n as usize),
                    Err(_) => return self.close(index_of(token)),
                }
            }
            _ => return,
        }
        self.pump(token);
    }

    /// After a batch of completions: arms again the receives that found no buffer, pumps the
    /// connections that yielded, then the periodic sweep.
    pub fn tick(&mut self) {
        for token in std::mem::take(&mut self.rearm) {
            self.pump(token);
        }
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
            match conn.session.handle_timeout(now, &self.timeouts) {
                Expired::Close => self.close(index),
                Expired::Answered => self.pump(token_of(index, self.slots[index].generation)),
                Expired::Nothing => {}
            }
        }
    }

    /// SIGTERM: no new requests; connections close once what they have in flight is answered.
    pub fn begin_drain(&mut self) {
        self.draining = true;
        for index in 0..self.slots.len() {
            if let Some(conn) = &mut self.slots[index].conn {
                conn.session.begin_drain();
                self.pump(token_of(index, self.slots[index].generation));
            }
        }
    }

    /// Moves connection `token` as far as it can go without waiting, then closes it if it is done.
    fn pump(&mut self, token: u64) {
        let Some(conn) = conn_mut(&mut self.slots, token) else { return };
        let mut executor = ExecuteOn(&self.worker);
        match conn.pump(&mut self.ring, token, self.now, &mut executor) {
            Progress::Wait => {}
            Progress::ReadyAgain => self.ready_again.push(token),
            Progress::Done => self.close(index_of(token)),
        }
    }

    /// Closes a connection: its receive cancelled (a receive in flight holds the socket open),
    /// then `close` through the ring; the slot is free at once, and late completions of the old
    /// token find a new generation and are dropped.
    fn close(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let Some(conn) = slot.conn.take() else { return };
        let token = token_of(index, slot.generation);
        slot.generation = (slot.generation + 1) & 0x07ff_ffff;
        if conn.has(Flags::RECV_ARMED) {
            let _ = self.ring.cancel(Ring::receive_op(RECV | token), IGNORED | token);
        }
        if self.ring.close(conn.fd, IGNORED | token).is_err() {
            // Not queued: the fd was consumed into the entry that failed; nothing more to do.
        }
        self.free.push(index);
        self.worker.conn_closed();
    }
}

/// The connection `token` names, unless it has closed since.
fn conn_mut(slots: &mut [Slot], token: u64) -> Option<&mut Conn> {
    let slot = slots.get_mut(index_of(token))?;
    if u64::from(slot.generation) != token >> 32 {
        return None;
    }
    slot.conn.as_mut()
}

/// Cancels a connection's multishot receive (once): it is armed again when the session wants more.
fn stop_receiving(ring: &mut Ring, conn: &mut Conn, token: u64) {
    if conn.has(Flags::RECV_ARMED) && !conn.has(Flags::CANCELLING) {
        let cancelling = ring.cancel(Ring::receive_op(RECV | token), IGNORED | token).is_ok();
        conn.set(Flags::CANCELLING, cancelling);
    }
}

impl Conn {
    /// Does what the session asks until it must wait: for a completion, or for its next turn.
    fn pump(&mut self, ring: &mut Ring, token: u64, now: Instant, executor: &mut ExecuteOn<'_>) -> Progress {
        self.set(Flags::RECEIVING, false);
        loop {
            match self.session.next(now, executor) {
                Want::Send if self.has(Flags::SENDING) => return Progress::Wait,
                Want::Send => {
                    let mut buf = std::mem::take(&mut self.io().send_buf);
                    buf.extend_from_slice(self.session.output());
                    match ring.send(self.fd.as_fd(), buf, 0, SEND | token) {
                        Ok(_) => self.set(Flags::SENDING, true),
                        Err(_) => return Progress::Done,
                    }
                    return Progress::Wait;
                }
                Want::Receive if !self.pending().is_empty() => {
                    let io = self.io.as_mut().expect("pending bytes live in io");
                    let took = self.session.receive(&io.pending);
                    io.pending.drain(..took);
                }
                Want::Receive if self.has(Flags::EOF) => self.session.received_eof(),
                Want::Receive => {
                    if !self.arm_receive(ring, token) {
                        return Progress::Done;
                    }
                    self.set(Flags::RECEIVING, true);
                    return Progress::Wait;
                }
                Want::Wait => return Progress::Wait,
                Want::Yield => return Progress::ReadyAgain,
                // Closing with bytes the kernel still holds would send a reset: shut our side and
                // discard until the client closes. As under epoll, the socket counts as empty when
                // the last receive said so (no IORING_CQE_F_SOCK_NONEMPTY): then close at once.
                Want::Finish { unread_input }
                    if unread_input || self.has(Flags::SOCKET_NONEMPTY) || !self.pending().is_empty() =>
                {
                    if sys::socket::shutdown_write(self.fd.as_fd()).is_err() {
                        return Progress::Done;
                    }
                    self.session.linger(now);
                }
                Want::Finish { .. } | Want::Close => return Progress::Done,
                Want::Discard => {
                    self.set(Flags::DISCARDING, true);
                    self.io = None;
                    if self.has(Flags::EOF) {
                        return Progress::Done;
                    }
                    self.set(Flags::RECEIVING, true);
                    if !self.arm_receive(ring, token) {
                        return Progress::Done;
                    }
                    return Progress::Wait;
                }
            }
        }
    }

    /// Submits the multishot receive unless one is armed; false if the ring refused it. (One being
    /// cancelled completes with ECANCELED, and the connection is pumped and armed again then.)
    fn arm_receive(&mut self, ring: &mut Ring, token: u64) -> bool {
        if self.has(Flags::RECV_ARMED) {
            return true;
        }
        let armed = ring.recv_multishot(self.fd.as_fd(), RECV | token).is_ok();
        self.set(Flags::RECV_ARMED, armed);
        armed
    }
}
