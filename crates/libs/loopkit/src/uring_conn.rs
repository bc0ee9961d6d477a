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
//! Completion inverts what the epoll driver (`loopkit::conn`) must remember: epoll says a socket is
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
//! connection has one send in flight at most, from a buffer the ring owns until then and that goes
//! back to a small pool of spare ones after: like the bytes received unasked, it lives beside the
//! slots, not in them, so a connection that has gone idle holds no buffer (its slot is no larger
//! than lab-epoll's). A receive
//! that finds no provided buffer free (`ENOBUFS`, the multishot then ends) is counted and armed
//! again after the batch of completions that used them up has given them back.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use sys::uring::{Completion, Errno, Ring};

use crate::config::Config;
use crate::conn::ExecuteAs;
use crate::session::{self, Expired, Session, Sweep, Timeouts, Want};
use crate::stats::WorkerStats;
use crate::tls::{Tls, TlsServer};
use crate::token::{index_of, token_of};

/// Bytes a connection that is not reading may hold unasked-for before its receive is cancelled.
pub const PENDING_LIMIT: usize = 64 * 1024;
/// Send buffers kept for reuse once their sends complete, and the largest kept: a burst of large
/// responses leaves at most this much behind, however many connections it came on.
const SPARE_SENDS: usize = 64;
const SPARE_SEND_CAPACITY: usize = 64 * 1024;

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

/// One connection: its socket, its session, and what the ring is doing with it. Kept small: an
/// idle connection is this, its slot and an armed receive (which costs no memory here). What only a
/// busy connection needs, its send buffer and the bytes it received unasked, is in [`Buffers`], so
/// that it holds none of it once it is idle again.
struct Conn {
    fd: OwnedFd,
    session: Session,
    /// What the ring is doing with it and what has arrived: the `Flags` bits.
    flags: u8,
    /// `--tls-cert`: the TLS layer between the ring and the session (`uring_conn::tls`); what
    /// `Buffers::pending` then holds is ciphertext.
    tls: Option<Box<Tls>>,
}

/// The buffers of the connections that are busy, beside the slots.
#[derive(Default)]
struct Buffers {
    /// By slot index: bytes received that the session has not asked for yet, in order; a
    /// connection has an entry while its `Flags::PENDING` is set, and while it is not empty.
    pending: HashMap<usize, Vec<u8>>,
    /// Send buffers given back by their completions, for any connection's next send (the ring
    /// owns a buffer while its send is in flight).
    spare_sends: Vec<Vec<u8>>,
}

impl Buffers {
    /// Connection `index`'s bytes received and not asked for yet.
    fn pending(&self, conn: &Conn, index: usize) -> &[u8] {
        match conn.has(Flags::PENDING) {
            true => self.pending.get(&index).map_or(&[], Vec::as_slice),
            false => &[],
        }
    }

    /// Keeps `bytes`, received by connection `index`, after those it has already.
    fn keep(&mut self, conn: &mut Conn, index: usize, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.pending.entry(index).or_default().extend_from_slice(bytes);
            conn.set(Flags::PENDING, true);
        }
    }

    /// Hands connection `index`'s pending bytes to its session, as many as it takes.
    fn deliver(&mut self, conn: &mut Conn, index: usize) {
        let Some(pending) = self.pending.get_mut(&index) else { return conn.set(Flags::PENDING, false) };
        let took = conn.session.receive(pending);
        pending.drain(..took);
        if pending.is_empty() {
            self.forget(conn, index);
        }
    }

    /// Drops connection `index`'s pending bytes (it closed, or lingers).
    fn forget(&mut self, conn: &mut Conn, index: usize) {
        if conn.has(Flags::PENDING) {
            self.pending.remove(&index);
            conn.set(Flags::PENDING, false);
        }
    }

    /// An empty send buffer: a spare one, or a new one.
    fn send_buffer(&mut self) -> Vec<u8> {
        self.spare_sends.pop().unwrap_or_default()
    }

    /// A send buffer its completion gave back: kept for the next send, unless enough are.
    fn give_back(&mut self, mut buf: Vec<u8>) {
        if self.spare_sends.len() < SPARE_SENDS && buf.capacity() <= SPARE_SEND_CAPACITY {
            buf.clear();
            self.spare_sends.push(buf);
        }
    }
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
    /// It has bytes in `Buffers::pending`.
    const PENDING: u8 = 1 << 7;
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
}

/// The connections by slot index, and each slot's generation, which its token must carry. Two
/// arrays, not one of (generation, connection) pairs: a pair would pad the 4-byte generation to the
/// connection's 8-byte alignment, and every slot of an idle connection is resident.
struct ConnSlots {
    conns: Vec<Option<Conn>>,
    generations: Vec<u32>,
}

impl ConnSlots {
    /// Room for `capacity` connections, reserved once: address space only, until slots are used,
    /// and never copied to grow (a copy would leave the old array's pages behind, resident).
    fn with_capacity(capacity: usize) -> ConnSlots {
        ConnSlots { conns: Vec::with_capacity(capacity), generations: Vec::with_capacity(capacity) }
    }

    fn len(&self) -> usize {
        self.conns.len()
    }

    /// A new empty slot's index.
    fn push(&mut self) -> usize {
        self.conns.push(None);
        self.generations.push(0);
        self.conns.len() - 1
    }

    /// The token of slot `index` as it is now.
    fn token(&self, index: usize) -> u64 {
        token_of(index, self.generations[index])
    }

    /// Empties slot `index` under a new generation: its connection, if any, and its last token.
    fn take(&mut self, index: usize) -> Option<(Conn, u64)> {
        let conn = self.conns[index].take()?;
        let token = self.token(index);
        self.generations[index] = (self.generations[index] + 1) & 0x07ff_ffff;
        Some((conn, token))
    }
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
    slots: ConnSlots,
    buffers: Buffers,
    free: Vec<usize>,
    /// Tokens to pump again before the next wait (a slow request held the thread).
    ready_again: Vec<u64>,
    /// Tokens whose receive ended on ENOBUFS: armed again once the batch has recycled its buffers.
    rearm: Vec<u64>,
    timeouts: Timeouts,
    nodelay: bool,
    worker: WorkerStats,
    draining: bool,
    sweep: Sweep,
    now: Instant,
    batching: Batching,
    tls: Option<TlsServer>,
}

/// How many receives the next wait waits for (`Ring::wait`'s `batch`; it matters only with the
/// ring's batch wait set): one from every open connection not answered in this batch, since those
/// just answered need a round trip to speak again; and none for a while after a batch wait that
/// reaped fewer than two, since at a low arrival rate it only adds its wait and a wake-up.
#[derive(Debug, Default)]
struct Batching {
    /// Plain waits left before a batch wait is tried again.
    plain_waits: u32,
}

impl Batching {
    /// Plain waits after a thin batch wait.
    const AFTER_A_THIN_BATCH: u32 = 16;

    /// The receives to wait for, with `open` connections of which about `answered` (the sends
    /// queued) were answered in this batch.
    fn before_wait(&mut self, open: usize, answered: usize) -> usize {
        match self.plain_waits {
            0 => open.saturating_sub(answered),
            _ => {
                self.plain_waits -= 1;
                0
            }
        }
    }

    /// After a batch wait that left `ready` completions, `answered` of them sends.
    fn after_batch_wait(&mut self, ready: usize, answered: usize) {
        if ready < answered + 2 {
            self.plain_waits = Self::AFTER_A_THIN_BATCH;
        }
    }
}

impl UringConnections {
    /// No connections yet, on `ring` (its buffers provided already), counted into `worker`.
    pub fn new(config: &Config, ring: Ring, worker: WorkerStats) -> Self {
        session::set_memory_budget(config.memory_budget);
        worker.ring([0; 4]); // in /stats from the start, before the first wait returns
        UringConnections {
            ring,
            slots: ConnSlots::with_capacity(config.max_conns.min(1 << 20) as usize + 1),
            buffers: Buffers::default(),
            free: Vec::new(),
            ready_again: Vec::new(),
            rearm: Vec::new(),
            timeouts: Timeouts::from(config),
            nodelay: config.nodelay,
            worker,
            draining: false,
            sweep: Sweep::default(),
            now: Instant::now(),
            batching: Batching::default(),
            tls: config.tls.clone(),
        }
    }

    /// The ring, for the loop's own operations (accept, signals, wakers, timeouts).
    pub fn ring(&mut self) -> &mut Ring {
        &mut self.ring
    }

    /// Submits what is queued and waits for a completion, at most until the next sweep (or
    /// `limit`). With the ring's batch wait set (`Ring::set_batch_wait`), waits up to that long for a
    /// receive from every connection not answered in this batch (those just answered need a round
    /// trip to speak again), unless a recent batch wait found too little to be worth it. Counts the
    /// wake-up, reads the clock once for the batch, and publishes the ring's counters in /stats.
    pub fn wait(&mut self, limit: Option<Duration>) -> std::io::Result<()> {
        let sweep = match self.ready_again.is_empty() {
            false => Some(Duration::ZERO),
            true => (!self.is_empty()).then(|| self.sweep.time_left(Instant::now())),
        };
        let answered = self.ring.queued(); // about one send per connection answered
        let batch = self.batching.before_wait(self.len(), answered);
        if self.ring.wait(crate::earliest([sweep, limit]), batch)? {
            self.batching.after_batch_wait(self.ring.ready(), answered);
        }
        crate::handlers::woke_up(&self.worker);
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
        let index = self.free.pop().unwrap_or_else(|| self.slots.push());
        let token = self.slots.token(index);
        let tls = self.tls.as_ref().map(TlsServer::accept);
        self.slots.conns[index] = Some(Conn { fd, session: Session::new(self.now), flags: 0, tls });
        self.pump(token);
    }

    /// A completion of one of the connections' operations (see [`is_connection_tag`]).
    pub fn complete(&mut self, completion: Completion) {
        let token = completion.tag & !KIND;
        let kind = completion.tag & KIND;
        let index = index_of(token);
        let Some(conn) = conn_mut(&mut self.slots, token) else {
            // Closed meanwhile: give the kernel its buffer back; a send's buffer is kept for reuse.
            if let Some(buffer) = completion.buffer {
                self.ring.recycle(buffer);
            }
            if let Some(buf) = completion.owned {
                self.buffers.give_back(buf);
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
                            let direct =
                                conn.has(Flags::RECEIVING) && !conn.has(Flags::PENDING) && conn.tls.is_none();
                            match (conn.has(Flags::DISCARDING), direct) {
                                (true, _) => {} // lingering: dropped
                                (false, true) => {
                                    let took = conn.session.receive(bytes);
                                    self.buffers.keep(conn, index, &bytes[took..]);
                                }
                                (false, false) => self.buffers.keep(conn, index, bytes),
                            }
                            self.ring.recycle(buffer);
                        }
                    }
                    Err(Errno::ENOBUFS) => {
                        self.rearm.push(token);
                        return;
                    }
                    Err(Errno::ECANCELED) => {}
                    Err(_) => return self.close(index), // a reset: as a failed read(2)
                }
                if !conn.has(Flags::RECEIVING) {
                    // The session waits for something else (its send): it takes these bytes when
                    // it next wants some. Unless too many pile up: then stop receiving.
                    if self.buffers.pending(conn, index).len() >= PENDING_LIMIT {
                        stop_receiving(&mut self.ring, conn, token);
                    }
                    return;
                }
            }
            SEND => {
                conn.set(Flags::SENDING, false);
                let mut owned = completion.owned;
                if let (Some(_), Ok(n)) = (&conn.tls, completion.result) {
                    match conn.send_rest(&mut self.ring, &mut owned, n as usize, token) {
                        Ok(true) => return, // a short send: the rest of the ciphertext is on its way
                        Ok(false) => {}
                        Err(()) => return self.close(index),
                    }
                }
                if let Some(buf) = owned {
                    self.buffers.give_back(buf);
                }
                match completion.result {
                    Ok(_) if conn.tls.is_some() => {} // ciphertext: the session's output was taken already
                    Ok(n) => conn.session.sent(n as usize),
                    Err(_) => return self.close(index),
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
        if !self.sweep.due(self.now) {
            return;
        }
        let (now, timeouts, slots) = (self.now, self.timeouts, self.slots.len());
        session::sweep(
            self,
            slots,
            now,
            &timeouts,
            |conns, index| conns.slots.conns[index].as_mut().map(|conn| &mut conn.session),
            |conns, index, expired| match expired {
                Expired::Close => conns.close(index),
                Expired::Answered(late) => {
                    conns.worker.timed_out(late);
                    conns.pump(conns.slots.token(index));
                }
                Expired::Nothing => {}
            },
        );
    }

    /// SIGTERM: no new requests; connections close once what they have in flight is answered.
    pub fn begin_drain(&mut self) {
        self.draining = true;
        for index in 0..self.slots.len() {
            if let Some(conn) = &mut self.slots.conns[index] {
                conn.session.begin_drain();
                self.pump(self.slots.token(index));
            }
        }
    }

    /// Moves connection `token` as far as it can go without waiting, then closes it if it is done.
    fn pump(&mut self, token: u64) {
        let Some(conn) = conn_mut(&mut self.slots, token) else { return };
        let mut executor = ExecuteAs(&self.worker);
        match conn.pump(&mut self.ring, &mut self.buffers, token, self.now, &mut executor) {
            Progress::Wait => {}
            Progress::ReadyAgain => self.ready_again.push(token),
            Progress::Done => self.close(index_of(token)),
        }
    }

    /// Closes a connection: its receive cancelled (a receive in flight holds the socket open),
    /// then `close` through the ring; the slot is free at once, and late completions of the old
    /// token find a new generation and are dropped.
    fn close(&mut self, index: usize) {
        let Some((mut conn, token)) = self.slots.take(index) else { return };
        self.buffers.forget(&mut conn, index);
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
fn conn_mut(slots: &mut ConnSlots, token: u64) -> Option<&mut Conn> {
    let index = index_of(token);
    if u64::from(*slots.generations.get(index)?) != token >> 32 {
        return None;
    }
    slots.conns[index].as_mut()
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
    fn pump(
        &mut self,
        ring: &mut Ring,
        buffers: &mut Buffers,
        token: u64,
        now: Instant,
        executor: &mut ExecuteAs<'_>,
    ) -> Progress {
        if self.tls.is_some() {
            return self.pump_tls(ring, buffers, token, now, executor);
        }
        let index = index_of(token);
        self.set(Flags::RECEIVING, false);
        loop {
            match self.session.next(now, executor) {
                Want::Send if self.has(Flags::SENDING) => return Progress::Wait,
                Want::Send => {
                    let mut buf = buffers.send_buffer();
                    buf.extend_from_slice(self.session.output());
                    match ring.send(self.fd.as_fd(), buf, 0, SEND | token) {
                        Ok(_) => self.set(Flags::SENDING, true),
                        Err(_) => return Progress::Done,
                    }
                    return Progress::Wait;
                }
                Want::Receive if self.has(Flags::PENDING) => buffers.deliver(self, index),
                Want::Receive if self.has(Flags::EOF) => self.session.received_eof(),
                Want::Receive => return self.wait_for_input(ring, token),
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

    /// The session's ends, the same with TLS or without: finishing, closing, discarding what the
    /// client still sends. `None`: lingering has begun, and the pump goes on.
    fn end(
        &mut self,
        want: Want,
        ring: &mut Ring,
        buffers: &mut Buffers,
        token: u64,
        now: Instant,
    ) -> Option<Progress> {
        match want {
            // Closing with bytes the kernel still holds would send a reset: shut our side and
            // discard until the client closes. As under epoll, the socket counts as empty when
            // the last receive said so (no IORING_CQE_F_SOCK_NONEMPTY): then close at once.
            Want::Finish { unread_input }
                if unread_input || self.has(Flags::SOCKET_NONEMPTY) || self.has(Flags::PENDING) =>
            {
                if sys::socket::shutdown_write(self.fd.as_fd()).is_err() {
                    return Some(Progress::Done);
                }
                self.session.linger(now);
                None
            }
            Want::Discard => {
                self.set(Flags::DISCARDING, true);
                buffers.forget(self, index_of(token));
                if self.has(Flags::EOF) {
                    return Some(Progress::Done);
                }
                self.set(Flags::RECEIVING, true);
                if !self.arm_receive(ring, token) {
                    return Some(Progress::Done);
                }
                Some(Progress::Wait)
            }
            _ => Some(Progress::Done),
        }
    }

    /// The session wants input and none is here: the receive is armed and the connection waits for
    /// its completion (done if the ring refused it).
    fn wait_for_input(&mut self, ring: &mut Ring, token: u64) -> Progress {
        if !self.arm_receive(ring, token) {
            return Progress::Done;
        }
        self.set(Flags::RECEIVING, true);
        Progress::Wait
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

mod tls;

#[cfg(test)]
mod tests {
    use super::Batching;

    /// A wait asks for the connections not just answered; after a batch wait that found fewer than
    /// two receives, the next 16 waits ask for none (plain waits), and then batching resumes. (Only
    /// a wait the ring says was a batch wait is judged: `UringConnections::wait`.)
    #[test]
    fn a_thin_batch_wait_is_followed_by_plain_waits() {
        let mut batching = Batching::default();
        assert_eq!(batching.before_wait(64, 10), 54, "the 10 just answered are not waited for");
        assert_eq!(batching.before_wait(3, 5), 0);
        batching.after_batch_wait(10 + 30, 10); // 30 receives: worth it
        assert_eq!(batching.before_wait(64, 0), 64);
        batching.after_batch_wait(1, 0); // one receive: thin
        for _ in 0..Batching::AFTER_A_THIN_BATCH {
            assert_eq!(batching.before_wait(64, 0), 0);
        }
        assert_eq!(batching.before_wait(64, 0), 64, "batching resumes");
    }
    /// An idle connection is its slot (its receive, armed, holds no buffer): no larger than under
    /// epoll, whose idle connections it is measured against (`lab-soak --idle`).
    #[test]
    fn an_idle_connection_costs_no_more_than_under_epoll() {
        let slot = std::mem::size_of::<Option<super::Conn>>() + std::mem::size_of::<u32>();
        assert!(
            slot <= crate::conn::IDLE_SLOT_BYTES,
            "{slot} bytes against {}",
            crate::conn::IDLE_SLOT_BYTES
        );
    }
}
