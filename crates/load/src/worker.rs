//! One load thread: its own epoll, its share of the connections and of the rate, its own recorder.
//! It shares nothing with the other threads while it runs but two progress counters.
//!
//! Closed loop: every connection keeps `--pipeline` requests in flight, sending one as soon as one is
//! answered. Open loop: requests go out when the schedule says, on a connection with room; when none
//! has room the request waits in the backlog and its latency still counts from its scheduled time.
//! In `--close` mode each request gets a connection of its own, so a "connection with room" is a
//! slot with no connection yet.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sys::epoll::{Event, Events, Poller, CONNECTION, READABLE_EDGE};
use sys::timer::Timer;

use crate::conn::{Connection, Failure, InFlight, Phase};
use crate::request::Requests;
use crate::schedule::{Arrivals, Rng, Schedule};
use crate::stats::{ErrorClass, Recorder, LATE};

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
    /// Bind each new connection to its own source address in 127.0.0.0/8 (see [`source_address`]).
    pub spread_sources: bool,
    pub start: Instant,
    /// The end of the warm-up: requests due from then on are measured.
    pub measure_from: Instant,
    /// No request is due from then on; `None` with `--requests`.
    pub stop_at: Option<Instant>,
    /// Set on SIGINT or SIGTERM: stop issuing now, finish what is in flight.
    pub interrupted: AtomicBool,
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

/// An open-loop request whose time has come.
#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    path: u32,
    measured: bool,
}

struct Worker<'a> {
    settings: &'a Settings,
    plan: Plan,
    progress: &'a Progress,
    poller: Poller,
    /// Open loop: wakes the thread when the next request is due.
    timer: Option<Timer>,
    timer_armed_for: Option<Instant>,
    schedule: Option<Schedule>,
    rng: Rng,
    conns: Vec<Connection>,
    /// Open loop: slots that can take another request now (some entries may have gone stale).
    free: VecDeque<usize>,
    /// Open loop: requests that were due when no connection had room, oldest first.
    backlog: VecDeque<Due>,
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
        Ok(Self {
            settings,
            poller,
            timer,
            timer_armed_for: None,
            schedule,
            rng: Rng::new(plan.seed ^ 0x5eed),
            conns: (0..plan.connections).map(|_| Connection::default()).collect(),
            free: VecDeque::new(),
            backlog: VecDeque::new(),
            reopen: Vec::new(),
            recorder: Recorder::new(settings.requests.paths().len(), plan.rate.is_some() || settings.close),
            stop_at: settings.stop_at,
            issued: 0,
            answered: 0,
            connects: 0,
            read_buf: vec![0; READ_BUFFER],
            progress,
            plan,
        })
    }

    fn open_loop(&self) -> bool {
        self.schedule.is_some()
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
            self.recorder.lost += conn.close(false);
            self.recorder.lost += conn.carried.drain(..).filter(|r| r.measured).count() as u64;
        }
        let (read_from, written_from) = bytes_from.unwrap_or(self.recorder.bytes());
        let (read_until, written_until) = bytes_until.unwrap_or(self.recorder.bytes());
        self.recorder.bytes_read = read_until - read_from;
        self.recorder.bytes_written = written_until - written_from;
        // Requests due in the measured time that never even went out are lost too.
        self.recorder.lost += self.backlog.iter().filter(|due| due.measured).count() as u64;
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

    /// Open loop: sends (or, with no room anywhere, queues) every request due by `now`.
    fn issue_due(&mut self, now: Instant) {
        loop {
            let Some(at) = self.schedule.as_ref().map(Schedule::next_due) else { return };
            if at > now || !self.may_issue(at) {
                return;
            }
            self.schedule.as_mut().expect("checked above").advance();
            let due = self.new_due(at);
            match self.take_free_slot() {
                Some(slot) => self.send_due(slot, due, now),
                None => self.backlog.push_back(due),
            }
        }
    }

    fn new_due(&mut self, at: Instant) -> Due {
        let measured = at >= self.settings.measure_from;
        self.issued += u64::from(measured);
        Due { at, path: self.settings.requests.pick(&mut self.rng) as u32, measured }
    }

    fn take_free_slot(&mut self) -> Option<usize> {
        while let Some(slot) = self.free.pop_front() {
            let conn = &mut self.conns[slot];
            conn.listed_free = false;
            let usable = if self.settings.close {
                conn.phase == Phase::Closed && conn.retry_at.is_none()
            } else {
                conn.has_room(self.settings.pipeline)
            };
            if usable {
                return Some(slot);
            }
        }
        None
    }

    fn list_free(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        if !conn.listed_free {
            conn.listed_free = true;
            self.free.push_back(slot);
        }
    }

    /// Open loop: sends `due` on `slot` (in `--close` mode, on a new connection there).
    fn send_due(&mut self, slot: usize, due: Due, now: Instant) {
        if due.measured && now.saturating_duration_since(due.at) > LATE {
            self.recorder.late += 1;
        }
        if self.settings.close {
            self.open(slot, Some(due), now);
            return;
        }
        self.enqueue(slot, due, now);
        if self.conns[slot].has_room(self.settings.pipeline) {
            self.list_free(slot);
        }
        self.flush(slot, now);
    }

    fn enqueue(&mut self, slot: usize, due: Due, now: Instant) {
        let bytes = &self.settings.requests.get(due.path as usize).bytes;
        let request = InFlight { due: due.at, sent: now, path: due.path, measured: due.measured };
        self.conns[slot].enqueue(bytes, request);
        self.recorder.sent += u64::from(due.measured);
    }

    /// Sends again, on the new connection in `slot`, the requests its previous connection carried
    /// past a response that announced the close (RFC 9112 §9.3.2: a client that pipelines retries
    /// them). They keep their due time, so the detour counts in their latency.
    fn resend_carried(&mut self, slot: usize, now: Instant) {
        let conn = &mut self.conns[slot];
        for request in mem::take(&mut conn.carried) {
            let bytes = &self.settings.requests.get(request.path as usize).bytes;
            conn.enqueue(bytes, InFlight { sent: now, ..request });
        }
    }

    /// Opens a connection in `slot`, carrying `due` in `--close` mode.
    fn open(&mut self, slot: usize, due: Option<Due>, now: Instant) {
        let source = self.settings.spread_sources.then(|| source_address(self.plan.index, self.connects));
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
            self.established(slot, Instant::now());
        }
    }

    fn established(&mut self, slot: usize, now: Instant) {
        let conn = &mut self.conns[slot];
        if let Phase::Connecting { since } = conn.phase {
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

    /// Gives an open connection more requests if it has room, then writes.
    fn pump(&mut self, slot: usize, now: Instant) {
        if !self.settings.close {
            let pipeline = self.settings.pipeline;
            if self.open_loop() {
                while self.conns[slot].has_room(pipeline) {
                    let Some(due) = self.backlog.pop_front() else { break };
                    if due.measured && now.saturating_duration_since(due.at) > LATE {
                        self.recorder.late += 1;
                    }
                    self.enqueue(slot, due, now);
                }
                if self.conns[slot].has_room(pipeline) {
                    self.list_free(slot);
                }
            } else {
                self.resend_carried(slot, now);
                while self.conns[slot].has_room(pipeline) && self.may_issue(now) {
                    let due = self.new_due(now);
                    self.enqueue(slot, due, now);
                }
            }
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
                Ok(None) if event.is_writable() => self.established(slot, now),
                Ok(None) => {}
            },
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
            // `--close`: a server that keeps the connection open after answering is not waited for.
            Ok(false)
                if settings.close && conns[slot].in_flight.is_empty() && conns[slot].phase == Phase::Open =>
            {
                self.close_answered(slot)
            }
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
        // connection: in open loop through the backlog, in closed loop with this slot.
        let carried: Vec<InFlight> = conn.in_flight.drain(..).collect();
        conn.close(false);
        if self.open_loop() {
            for request in carried.into_iter().rev() {
                self.backlog.push_front(Due {
                    at: request.due,
                    path: request.path,
                    measured: request.measured,
                });
                // Counted as sent again when the backlog sends it; `sent` counts requests, not sends.
                self.recorder.sent -= u64::from(request.measured);
            }
        } else {
            self.conns[slot].carried = carried;
        }
        self.reopen.push(slot);
    }

    /// Gives up the connection in `slot`: counts the error and the requests lost with it.
    fn fail(&mut self, slot: usize, (class, detail): Failure, now: Instant) {
        self.recorder.error(class, || detail);
        let abort = matches!(class, ErrorClass::Timeout | ErrorClass::Framing);
        self.recorder.lost += self.conns[slot].close(abort);
        if class == ErrorClass::Connect && !(self.settings.close && self.open_loop()) {
            self.conns[slot].retry_at = Some(now + RETRY_AFTER);
        } else {
            self.reopen.push(slot);
        }
    }

    /// Puts a closed slot back to work.
    fn revive(&mut self, slot: usize, now: Instant) {
        if self.conns[slot].phase != Phase::Closed {
            return;
        }
        self.conns[slot].retry_at = None;
        match (self.settings.close, self.open_loop()) {
            (true, true) => match self.backlog.pop_front() {
                Some(due) => self.send_due(slot, due, now),
                None => self.list_free(slot),
            },
            (true, false) if self.may_issue(now) => {
                let due = self.new_due(now);
                self.open(slot, Some(due), now);
            }
            (false, _)
                if self.may_issue(now)
                    || !self.backlog.is_empty()
                    || !self.conns[slot].carried.is_empty() =>
            {
                self.open(slot, None, now)
            }
            _ => {}
        }
    }

    /// Every [`TICK`]: timeouts, retries after failed connects, and the progress counters.
    fn tick(&mut self, now: Instant) {
        let timeout = self.settings.timeout;
        for slot in 0..self.conns.len() {
            let conn = &self.conns[slot];
            match conn.phase {
                Phase::Connecting { since } if now.saturating_duration_since(since) > timeout => {
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

    /// Open loop: wakes the thread when the next request is due, to the microsecond (an epoll_wait
    /// timeout has milliseconds).
    fn arm_timer(&mut self, now: Instant) -> io::Result<()> {
        let (Some(timer), Some(schedule)) = (&self.timer, &self.schedule) else { return Ok(()) };
        let due = schedule.next_due();
        if !self.may_issue(due) || self.timer_armed_for == Some(due) {
            return Ok(());
        }
        timer.set_after(due.saturating_duration_since(now))?;
        self.timer_armed_for = Some(due);
        Ok(())
    }
}

/// The source address of a thread's `n`-th connection in `--close` mode: 127.T.H.L, 65,024 of them
/// per thread. Every source address has its own ~28k ephemeral ports toward the server, so a run
/// that opens hundreds of thousands of connections does not run out while closed ones wait in
/// TIME_WAIT. Any address in 127.0.0.0/8 reaches a server on 127.0.0.1 over the loopback.
pub fn source_address(thread: usize, n: u64) -> IpAddr {
    let low = 1 + (n % 254) as u8;
    let high = ((n / 254) % 256) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 1 + (thread % 250) as u8, high, low))
}
