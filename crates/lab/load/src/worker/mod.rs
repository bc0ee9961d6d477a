//! One load thread: its own epoll, its share of the connections and of the rate, its own recorder.
//! It shares nothing with the other threads while it runs but two progress counters.
//!
//! This file is what every mode shares: the loop, the connection slots, connecting, reading and
//! checking responses, timeouts and the tick. When a request goes out, and on which connection, is
//! the mode's business, one file each:
//!
//! - [`closed`]: every connection keeps `--pipeline` requests in flight, sending one as soon as one
//!   is answered.
//! - [`open`] (`--rate`): requests go out when the schedule says, on a connection with room; when
//!   none has room the request waits in the backlog and its latency still counts from its
//!   scheduled time.
//! - [`churn`] (`--close`): each request gets a connection of its own, at once in closed loop, or
//!   when the schedule says with `--rate` (a "connection with room" is then a slot with none yet).

mod churn;
mod closed;
mod open;

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sys::epoll::{Event, Events, Poller, CONNECTION, READABLE_EDGE};
use sys::timer::Timer;

use crate::conn::{Connection, Failure, InFlight, Phase};
use crate::request::Requests;
use crate::schedule::{Arrivals, Rng, Schedule};
use crate::stats::{ErrorClass, Recorder};
use crate::timeline::Timeline;

/// What every load thread runs with.
#[derive(Debug)]
pub struct Settings {
    pub addr: SocketAddr,
    pub requests: Requests,
    pub pipeline: usize,
    /// A new connection for every request.
    pub close: bool,
    pub arrivals: Arrivals,
    pub timeout: Duration,
    /// https://: every connection shakes hands first (see `Run::tls`).
    pub tls: Option<(std::sync::Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    /// Bind each new connection to its own source address in 127.0.0.0/8 (see
    /// [`churn::source_address`]).
    pub spread_sources: bool,
    pub start: Instant,
    /// The end of the warm-up: requests due from then on are measured.
    pub measure_from: Instant,
    /// No request is due from then on; `None` with `--requests`.
    pub stop_at: Option<Instant>,
    /// Set on SIGINT or SIGTERM: stop issuing now, finish what is in flight.
    pub interrupted: AtomicBool,
    /// `--timeline`: the width of its intervals.
    pub timeline: Option<Duration>,
}

/// One thread's share of the work.
#[derive(Debug, Clone)]
pub struct Plan {
    pub index: usize,
    pub cpu: Option<usize>,
    pub connections: usize,
    /// Open loop: this thread's requests per second.
    pub rate: Option<f64>,
    /// With `--requests`: this thread's share of the measured requests.
    pub quota: Option<u64>,
    /// Where this thread's first uniform arrival falls within a gap, so that threads interleave.
    pub phase: f64,
    pub seed: u64,
}

/// What a thread tells the progress line, one cache line per thread.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Progress {
    pub answered: AtomicU64,
    pub errors: AtomicU64,
}

/// The timer's epoll token; a connection's is its generation and slot.
const TIMER: u64 = u64::MAX;
/// How often timeouts and retries are looked at, and progress published.
const TICK: Duration = Duration::from_millis(10);
/// How long a slot whose connect failed waits before trying again, so that a server that is down
/// gets a steady trickle of attempts, not a spin.
const RETRY_AFTER: Duration = Duration::from_millis(10);
/// The read buffer every connection of a thread shares (a response cut short is copied out).
const READ_BUFFER: usize = 256 * 1024;

/// Runs one load thread to the end of its share; returns what it recorded.
pub fn worker_main(settings: &Settings, plan: Plan, progress: &Progress) -> io::Result<Recorder> {
    if let Some(cpu) = plan.cpu {
        sys::cpu::pin_current_thread(cpu)?;
    }
    let mut worker = Worker::new(settings, plan, progress)?;
    worker.run()?;
    Ok(worker.recorder)
}

/// A request whose time has come: its scheduled time in open loop, else when it was queued.
#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    path: u32,
    measured: bool,
}

/// Which file decides when, and on which connection, a request goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// [`closed`]: keep `--pipeline` in flight on every connection.
    Closed,
    /// [`open`]: send on the schedule, on any connection with room.
    Open,
    /// [`churn`]: a new connection per request, paced by the schedule with `--rate`.
    Churn,
}

struct Worker<'a> {
    settings: &'a Settings,
    plan: Plan,
    progress: &'a Progress,
    mode: Mode,
    poller: Poller,
    rng: Rng,
    conns: Vec<Connection>,
    /// Slots to open again at the next turn of the loop.
    reopen: Vec<usize>,
    recorder: Recorder,
    /// No request is due from then on: `Settings::stop_at`, or earlier when interrupted.
    stop_at: Option<Instant>,
    /// Measured requests issued, against the quota.
    issued: u64,
    answered: u64,
    connects: u64,
    read_buf: Vec<u8>,
    // With a schedule (`--rate`), see [`open`]:
    schedule: Option<Schedule>,
    /// Wakes the thread when the next request is due.
    timer: Option<Timer>,
    timer_armed_for: Option<Instant>,
    /// Slots that can take another request now (some entries may have gone stale).
    free: VecDeque<usize>,
    /// Requests that were due when no connection had room, oldest first.
    backlog: VecDeque<Due>,
}

impl<'a> Worker<'a> {
    fn new(settings: &'a Settings, plan: Plan, progress: &'a Progress) -> io::Result<Self> {
        let poller = Poller::new()?;
        let (timer, schedule) = match plan.rate {
            Some(rate) => {
                let timer = Timer::new()?;
                poller.add(timer.as_fd(), TIMER, READABLE_EDGE)?;
                let schedule = Schedule::new(settings.start, rate, settings.arrivals, plan.phase, plan.seed);
                (Some(timer), Some(schedule))
            }
            None => (None, None),
        };
        let mode = match (settings.close, plan.rate) {
            (true, _) => Mode::Churn,
            (false, Some(_)) => Mode::Open,
            (false, None) => Mode::Closed,
        };
        Ok(Self {
            settings,
            mode,
            poller,
            rng: Rng::new(plan.seed ^ 0x5eed),
            conns: (0..plan.connections).map(|_| Connection::default()).collect(),
            reopen: Vec::new(),
            recorder: Recorder::new(settings.requests.paths().len(), plan.rate.is_some() || settings.close)
                .with_timeline(settings.timeline.map(|interval| Timeline::new(settings.start, interval))),
            stop_at: settings.stop_at,
            issued: 0,
            answered: 0,
            connects: 0,
            read_buf: vec![0; READ_BUFFER],
            schedule,
            timer,
            timer_armed_for: None,
            free: VecDeque::new(),
            backlog: VecDeque::new(),
            progress,
            plan,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.reopen.extend(0..self.conns.len());
        let mut next_tick = Instant::now();
        let mut drain_until = None;
        // Bytes are counted for the measured time only, like requests: (read, written) at its start
        // and at its end.
        let mut bytes_from = None;
        let mut bytes_until = None;
        loop {
            let now = Instant::now();
            if self.settings.interrupted.load(Ordering::Relaxed) {
                self.stop_at = Some(self.stop_at.map_or(now, |stop| stop.min(now)));
            }
            if bytes_from.is_none() && now >= self.settings.measure_from {
                bytes_from = Some(self.recorder.bytes());
            }
            self.issue_due(now);
            if !self.may_issue(now) {
                if self.stop_at.is_some() {
                    bytes_until.get_or_insert(self.recorder.bytes());
                }
                let deadline = *drain_until.get_or_insert(now + self.settings.timeout);
                let waiting = !self.backlog.is_empty()
                    || self.conns.iter().any(|c| !c.in_flight.is_empty() || !c.carried.is_empty());
                if !waiting || now >= deadline {
                    break;
                }
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            for slot in mem::take(&mut self.reopen) {
                self.revive(slot, now);
            }
            let mut wait = next_tick.saturating_duration_since(now);
            if !self.reopen.is_empty() {
                wait = Duration::ZERO;
            }
            self.arm_timer(now)?;
            self.poller.wait(&mut events, Some(wait))?;
            for event in events.iter() {
                self.on_event(event)?;
            }
        }
        for conn in &mut self.conns {
            let lost = conn.close(false) + conn.carried.drain(..).filter(|r| r.measured).count() as u64;
            self.recorder.lose(lost);
        }
        let (read_from, written_from) = bytes_from.unwrap_or(self.recorder.bytes());
        let (read_until, written_until) = bytes_until.unwrap_or(self.recorder.bytes());
        self.recorder.bytes_read = read_until - read_from;
        self.recorder.bytes_written = written_until - written_from;
        // Requests due in the measured time that never even went out are lost too.
        self.recorder.lose(self.backlog.iter().filter(|due| due.measured).count() as u64);
        self.recorder.answered = self.answered;
        self.publish_progress();
        Ok(())
    }

    /// Whether a request due at `at` is still part of the run.
    fn may_issue(&self, at: Instant) -> bool {
        if self.stop_at.is_some_and(|stop| at >= stop) {
            return false;
        }
        match self.plan.quota {
            Some(quota) => at < self.settings.measure_from || self.issued < quota,
            None => true,
        }
    }

    /// A new request due at `at`, on a path drawn from the mix.
    fn new_due(&mut self, at: Instant) -> Due {
        let measured = at >= self.settings.measure_from;
        self.issued += u64::from(measured);
        Due { at, path: self.settings.requests.pick(&mut self.rng) as u32, measured }
    }

    /// Queues `due` on the open connection in `slot`, to go out with its next flush.
    fn enqueue(&mut self, slot: usize, due: Due, now: Instant) {
        let bytes = &self.settings.requests.get(due.path as usize).bytes;
        let request = InFlight { due: due.at, sent: now, path: due.path, measured: due.measured };
        self.conns[slot].enqueue(bytes, request);
        self.recorder.sent += u64::from(due.measured);
    }

    /// Puts a closed slot back to work, as its mode says.
    fn revive(&mut self, slot: usize, now: Instant) {
        if self.conns[slot].phase != Phase::Closed {
            return;
        }
        self.conns[slot].retry_at = None;
        match self.mode {
            Mode::Closed => self.reconnect_closed(slot, now),
            Mode::Open => self.reconnect_open(slot, now),
            Mode::Churn => self.next_connection(slot, now),
        }
    }

    /// Opens a connection in `slot`; in `--close` mode it carries `due`.
    fn connect(&mut self, slot: usize, due: Option<Due>, now: Instant) {
        let source =
            self.settings.spread_sources.then(|| churn::source_address(self.plan.index, self.connects));
        self.connects += 1;
        let addr = self.settings.addr;
        let since = Instant::now();
        let (socket, connected) = match sys::client::connect_tcp(addr, source) {
            Ok((socket, connected)) => {
                let connected = connected || sys::client::is_connected(socket.as_fd());
                (socket, connected)
            }
            Err(e) => return self.fail(slot, (ErrorClass::Connect, e.to_string()), now),
        };
        let conn = &mut self.conns[slot];
        conn.generation = conn.generation.wrapping_add(1);
        let token = (u64::from(conn.generation) << 32) | slot as u64;
        if let Err(e) = self.poller.add(socket.as_fd(), token, CONNECTION) {
            return self.fail(slot, (ErrorClass::Connect, e.to_string()), now);
        }
        // Without it, a request smaller than a segment could wait on Nagle for the previous ACK.
        let _ = sys::socket::set_nodelay(socket.as_fd(), true);
        conn.socket = Some(socket);
        conn.phase = Phase::Connecting { since };
        if let Some(due) = due {
            let bytes = &self.settings.requests.get(due.path as usize).bytes;
            conn.enqueue(bytes, InFlight { due: due.at, sent: now, path: due.path, measured: due.measured });
        }
        if connected {
            self.connected(slot, Instant::now());
        }
    }

    /// TCP is up: the connection is established, or with TLS its handshake starts.
    fn connected(&mut self, slot: usize, now: Instant) {
        let Some((config, name)) = &self.settings.tls else { return self.established(slot, now) };
        let conn = &mut self.conns[slot];
        if let Err(failure) = conn.start_tls(config, name.clone()) {
            return self.fail(slot, failure, now);
        }
        self.handshake(slot, now);
    }

    /// Drives a TLS handshake as far as the socket allows; established once it is done.
    fn handshake(&mut self, slot: usize, now: Instant) {
        match self.conns[slot].handshake(&mut self.recorder) {
            Ok(true) => self.established(slot, Instant::now()),
            Ok(false) => {}
            Err(failure) => self.fail(slot, failure, now),
        }
    }

    fn established(&mut self, slot: usize, now: Instant) {
        let conn = &mut self.conns[slot];
        if let Phase::Connecting { since } | Phase::Handshaking { since } = conn.phase {
            if since >= self.settings.measure_from {
                self.recorder.connected(now - since);
            }
        }
        conn.phase = Phase::Open;
        for request in &mut conn.in_flight {
            request.sent = now;
            self.recorder.sent += u64::from(request.measured);
        }
        self.pump(slot, now);
    }

    /// Gives an open connection as many more requests as its mode says it has room for, then
    /// writes.
    fn pump(&mut self, slot: usize, now: Instant) {
        match self.mode {
            Mode::Closed => self.fill_closed(slot, now),
            Mode::Open => self.fill_open(slot, now),
            // Its one request went out with the connection.
            Mode::Churn => {}
        }
        self.flush(slot, now);
    }

    fn flush(&mut self, slot: usize, now: Instant) {
        if let Err(failure) = self.conns[slot].flush(&mut self.recorder) {
            self.fail(slot, failure, now);
        }
    }

    fn on_event(&mut self, event: Event) -> io::Result<()> {
        if event.token == TIMER {
            self.timer_armed_for = None;
            return self.timer.as_ref().map_or(Ok(()), Timer::clear);
        }
        let slot = (event.token & u64::from(u32::MAX)) as usize;
        let generation = (event.token >> 32) as u32;
        let Some(conn) = self.conns.get(slot) else { return Ok(()) };
        let Some(socket) = conn.socket.as_ref().filter(|_| conn.generation == generation) else {
            return Ok(());
        };
        let now = Instant::now();
        match conn.phase {
            Phase::Connecting { .. } => match sys::client::take_error(socket.as_fd()) {
                Ok(Some(e)) => {
                    let failure = (ErrorClass::Connect, format!("connect {}: {e}", self.settings.addr));
                    self.fail(slot, failure, now);
                }
                Err(e) => self.fail(slot, (ErrorClass::Connect, e.to_string()), now),
                Ok(None) if event.is_writable() => self.connected(slot, now),
                Ok(None) => {}
            },
            Phase::Handshaking { .. } => self.handshake(slot, now),
            Phase::Open | Phase::Closing => {
                if event.is_readable() || event.is_closed() {
                    self.on_readable(slot, event.is_closed(), now);
                }
                let conn = &self.conns[slot];
                if event.is_writable() && conn.generation == generation && conn.has_output() {
                    self.flush(slot, now);
                }
            }
            Phase::Closed => {}
        }
        Ok(())
    }

    fn on_readable(&mut self, slot: usize, peer_closed: bool, now: Instant) {
        let Self { conns, read_buf, settings, recorder, answered, .. } = self;
        let result =
            conns[slot].read_responses(read_buf, peer_closed, &settings.requests, recorder, answered);
        match result {
            Err(failure) => self.fail(slot, failure, now),
            Ok(false) if self.mode == Mode::Churn => self.after_response(slot, now),
            Ok(false) => self.pump(slot, now),
            Ok(true) => self.on_eof(slot, now),
        }
    }

    /// Closes a connection that has answered everything it was sent, and puts its slot back to work.
    fn close_answered(&mut self, slot: usize) {
        self.conns[slot].close(false);
        self.reopen.push(slot);
    }

    /// The server closed the connection: fine between responses, or after it said it would.
    fn on_eof(&mut self, slot: usize, now: Instant) {
        let conn = &mut self.conns[slot];
        if let Err(failure) = conn.finish_at_eof(&mut self.recorder, &mut self.answered) {
            return self.fail(slot, failure, now);
        }
        let unanswered = conn.in_flight.len();
        if unanswered > 0 && conn.phase != Phase::Closing {
            let failure =
                (ErrorClass::Reset, format!("connection closed with {unanswered} requests unanswered"));
            return self.fail(slot, failure, now);
        }
        // Requests pipelined after a response that announced the close go out again on the next
        // connection (RFC 9112 §9.3.2: a client that pipelines retries them): with a schedule
        // through the backlog, in closed loop with this slot.
        let carried: Vec<InFlight> = conn.in_flight.drain(..).collect();
        conn.close(false);
        if self.schedule.is_some() {
            self.back_to_backlog(carried);
        } else {
            self.conns[slot].carried = carried;
        }
        self.reopen.push(slot);
    }

    /// Gives up the connection in `slot`: counts the error and the requests lost with it.
    fn fail(&mut self, slot: usize, (class, detail): Failure, now: Instant) {
        self.recorder.error(class, || detail);
        let abort = matches!(class, ErrorClass::Timeout | ErrorClass::Framing);
        let lost = self.conns[slot].close(abort);
        self.recorder.lose(lost);
        // A failed connect waits before the next try, but for churn on a schedule, whose slot
        // simply takes the next due request (the schedule, not the slot, sets the pace).
        let paced = self.mode == Mode::Churn && self.schedule.is_some();
        if class == ErrorClass::Connect && !paced {
            self.conns[slot].retry_at = Some(now + RETRY_AFTER);
        } else {
            self.reopen.push(slot);
        }
    }

    /// Every [`TICK`]: timeouts, retries after failed connects, and the progress counters.
    fn tick(&mut self, now: Instant) {
        let timeout = self.settings.timeout;
        for slot in 0..self.conns.len() {
            let conn = &self.conns[slot];
            match conn.phase {
                Phase::Connecting { since } | Phase::Handshaking { since }
                    if now.saturating_duration_since(since) > timeout =>
                {
                    let detail = format!("connect {}: no answer in {timeout:?}", self.settings.addr);
                    self.fail(slot, (ErrorClass::Connect, detail), now);
                }
                Phase::Open | Phase::Closing
                    if conn
                        .in_flight
                        .front()
                        .is_some_and(|r| now.saturating_duration_since(r.sent) > timeout) =>
                {
                    self.fail(slot, (ErrorClass::Timeout, format!("no response in {timeout:?}")), now);
                }
                // The server announced the close and has had a tick to do it: stop waiting for its FIN.
                Phase::Closing if conn.in_flight.is_empty() => self.close_answered(slot),
                Phase::Closed if conn.retry_at.is_some_and(|at| at <= now) => self.revive(slot, now),
                _ => {}
            }
        }
        self.publish_progress();
    }

    fn publish_progress(&self) {
        self.progress.answered.store(self.answered, Ordering::Relaxed);
        self.progress.errors.store(self.recorder.errors_total(), Ordering::Relaxed);
    }
}
