//! lab-oneshot: one epoll instance that every worker thread waits on, holding the listener and every
//! connection, each registered `EPOLLONESHOT` — a central queue with no central thread: the
//! Leader/Followers pattern (POSA2), as in Java NIO.2's `EPollPort` or a Boost.Asio `io_context`
//! run by N threads.
//!
//! ```text
//!                                      ┌──────────────── one epoll: its ready list ───────────────┐
//!   SYN ─► SYN queue ─► accept queue ─►│ listener · every connection · signalfd · sweep timerfd   │
//!          (kernel)       (kernel)     └─────┬──────────────────────┬──────────────────────┬─────┘
//!                                            ▼ epoll_wait: one      ▼ event per waiting    ▼ thread
//!                                        worker_main 1          worker_main 2   ...    worker_main N
//!                         accept a batch, or read ─► execute ─► write one connection, then re-arm it
//! ```
//!
//! Trigger mode: level-triggered, `EPOLLONESHOT`: an event disarms its fd until the thread that
//! took it re-arms it (`EPOLL_CTL_MOD`), so at most one thread touches a connection at a time.
//!
//! Trade-off: the kernel's ready list is one first-come-first-served queue for all the workers (the
//! central FCFS queue of the model, RAMCloud's), so a request waits only while every worker is busy
//! and a heavy connection slows nobody else; yet no thread carries everyone's I/O, as lab-ramcloud's
//! dispatcher does. The price is paid per wake-up: an `epoll_ctl` to re-arm, a lock per connection,
//! and a connection's cache lines moving to whichever core serves it next.
//! With --tls-cert each step of a handshake runs on whichever thread the event went to.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use loopkit::accept::Acceptor;
use loopkit::config::{self, CommonArgs, Config};
use loopkit::conn::{Conn, ExecuteAs, Progress};
use loopkit::drain::PoolDrain;
use loopkit::session::{self, Expired, Timeouts};
use loopkit::slots::{SharedSlot, SharedSlots};
use loopkit::startup::{self, fatal};
use loopkit::stats::{Role, WorkerStats};
use loopkit::token::{LISTENER, SIGNALS, TIMER, WAKER};
use parking_lot::Mutex;
use sys::epoll::{Event, Events, Interest, Poller};
use sys::signal::ShutdownSignals;
use sys::timer::Timer;

/// lab-oneshot: N threads share one epoll; each ready connection goes to one idle thread.
#[derive(Parser)]
#[command(name = "lab-oneshot", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

/// How often the deadlines of the connections, which no thread owns, are looked at.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// A connection waiting for its request bytes (or for its end, lingering).
const READING: Interest = Interest::EPOLLIN.union(Interest::EPOLLRDHUP).union(Interest::EPOLLONESHOT);
/// A connection whose output waits for the client to read: only `EPOLLOUT` (and a hang-up) helps.
const WRITING: Interest = Interest::EPOLLOUT.union(Interest::EPOLLONESHOT);
/// A connection to serve again after the others (its read budget is spent, or a slow request held
/// the thread): writability, there at once, puts it back at the tail of the ready list.
const AGAIN: Interest = READING.union(Interest::EPOLLOUT);
/// The listener, the signalfd and the sweep timer: each to one thread, re-armed when it is done.
const ONCE: Interest = Interest::EPOLLIN.union(Interest::EPOLLONESHOT);

/// Everything the worker threads share: the one epoll and what is in it.
struct Pool {
    poller: Poller,
    /// Every connection, reachable from every thread, each behind a lock that only the thread the
    /// oneshot event went to takes (see `loopkit::slots`).
    conns: SharedSlots<Conn>,
    acceptor: Mutex<Acceptor>,
    signals: ShutdownSignals,
    sweep: Timer,
    /// Counts the open connections; readable (level-triggered, for every thread) when the drain is done.
    drain: PoolDrain,
    timeouts: Timeouts,
    nodelay: bool,
    tls: Option<loopkit::tls::TlsServer>,
    /// The listener's and the connections' counters (`accepted`, `conns`, `open`): no thread owns
    /// a connection, so none has them; the threads' own slots count requests and wake-ups.
    shared: WorkerStats,
}

fn main() {
    let cli: Cli = config::parse_or_exit();
    let config = startup::configure(&cli.common, None);
    let listener = startup::listen(&config, config.addr, false);
    let stats = startup::stats("oneshot", config.workers + 1, &config, vec![listener.clone()]);
    let shared = stats.worker(0, Role::Shared, None);
    let acceptor = Acceptor::new(listener.clone(), shared.clone()).unwrap_or_else(|e| fatal(e));
    let pool = Arc::new(Pool::new(&config, acceptor, shared).unwrap_or_else(|e| fatal(e)));
    // NOTE: one event per wait, so that a thread takes one ready connection from the central queue
    // at a time and leaves the rest to the threads that are idle; a batch would be a queue of its
    // own. One thread alone has no one to leave them to, and takes a batch as lab-epoll does.
    let batch = if config.workers == 1 { 1024 } else { 1 };
    let threads = (1..=config.workers)
        .map(|id| {
            let worker = stats.worker(id, Role::Worker, config.cpu_for(id - 1));
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                startup::start_thread(&worker);
                worker_main(&pool, batch, worker).unwrap_or_else(|e| fatal(e));
            })
        })
        .collect();
    startup::announce(listener.addr);
    startup::join_all(threads);
}

/// A worker thread: waits on the shared epoll and serves whatever it is given.
fn worker_main(pool: &Pool, batch: usize, worker: WorkerStats) -> io::Result<()> {
    let mut events = Events::with_capacity(batch);
    loop {
        pool.poller.wait(&mut events, None)?;
        loopkit::handlers::woke_up(&worker);
        let now = Instant::now();
        for event in events.iter() {
            match event.token {
                LISTENER => pool.accept(now),
                SIGNALS => pool.on_signal(&worker, now)?,
                TIMER => pool.sweep(&worker, now)?,
                WAKER => return Ok(()), // the drain is done
                token => pool.serve(token, &event, &worker, now),
            }
        }
    }
}

impl Pool {
    /// Blocks SIGINT and SIGTERM for the threads to come (they inherit the mask) and reads them
    /// from a signalfd in the shared epoll instead.
    fn new(config: &Config, acceptor: Acceptor, shared: WorkerStats) -> io::Result<Self> {
        session::set_memory_budget(config.memory_budget);
        let signals = ShutdownSignals::new()?;
        let poller = Poller::new()?;
        poller.add(acceptor.listener().fd.as_fd(), LISTENER, ONCE)?;
        poller.add(signals.as_fd(), SIGNALS, ONCE)?;
        let sweep = Timer::new()?;
        sweep.set_after(SWEEP_INTERVAL)?;
        poller.add(sweep.as_fd(), TIMER, ONCE)?;
        let drain = PoolDrain::new()?;
        poller.add(drain.as_fd(), WAKER, Interest::EPOLLIN)?;
        Ok(Pool {
            poller,
            conns: SharedSlots::default(),
            acceptor: Mutex::new(acceptor),
            signals,
            sweep,
            drain,
            timeouts: Timeouts::from(config),
            nodelay: config.nodelay,
            tls: config.tls.clone(),
            shared,
        })
    }

    /// The listener's event: this thread accepts everything queued, then re-arms it — unless the
    /// acceptor pauses (EMFILE, `--pause-accept`): its resume timer brings the next listener event.
    fn accept(&self, now: Instant) {
        let mut acceptor = self.acceptor.lock();
        acceptor.accept_all(&self.poller, |fd| self.add(fd, now));
        if !acceptor.paused_or_stopped() {
            let _ = self.poller.modify(acceptor.listener().fd.as_fd(), LISTENER, ONCE);
        }
    }

    /// Takes over an admitted connection: a free slot, then the epoll (disarmed while served).
    fn add(&self, fd: OwnedFd, now: Instant) {
        let Some((token, mut slot)) = self.conns.claim() else { return }; // 2^20 open: fd closed
        self.shared.conn_opened();
        self.drain.opened();
        let conn = slot.value.insert(Conn::accepted(fd, now, self.tls.as_ref()));
        let nodelay = !self.nodelay || sys::socket::set_nodelay(conn.fd(), true).is_ok();
        if !nodelay || self.poller.add(conn.fd(), token, READING).is_err() {
            self.close(token, &mut slot);
        }
    }

    /// An event for connection `token`: this thread alone has it, until it re-arms it.
    fn serve(&self, token: u64, event: &Event, worker: &WorkerStats, now: Instant) {
        let Some(mut slot) = self.conns.lock(token) else { return }; // closed since it was queued
        let Some(conn) = &mut slot.value else { return };
        conn.ready(event);
        self.pump(token, &mut slot, worker, now);
    }

    /// Serves the connection in `slot` as far as it goes, then re-arms it for what it waits for.
    fn pump(&self, token: u64, slot: &mut SharedSlot<Conn>, worker: &WorkerStats, now: Instant) {
        let Some(conn) = &mut slot.value else { return };
        let interest = match conn.pump(now, &mut ExecuteAs(worker)) {
            Progress::Done => return self.close(token, slot),
            Progress::ReadyAgain => AGAIN,
            Progress::Wait if conn.output_blocked() => WRITING,
            Progress::Wait => READING,
        };
        // NOTE: the oneshot re-arm. Until this `epoll_ctl(EPOLL_CTL_MOD)` no thread can be given
        // this connection; after it, the kernel checks the socket at once and queues it again if
        // bytes came meanwhile: the one system call per wake-up the other designs do not make, made
        // with the slot locked, so a thread it wakes waits for the lock, not racing a close for the fd.
        if self.poller.modify(conn.fd(), token, interest).is_err() {
            self.close(token, slot);
        }
    }

    fn close(&self, token: u64, slot: &mut SharedSlot<Conn>) {
        if self.conns.release(token, slot).is_some() {
            self.shared.conn_closed();
            self.drain.closed();
        }
    }

    /// The sweep timer: the deadlines of every connection not being served (one being served is
    /// active), then the timer again, for whichever thread is idle then.
    ///
    /// NOTE: a shared timer in the same epoll rather than per-thread sweeps: no thread owns a
    /// connection, so none could sweep "its own", and one timerfd wakes one thread, not N.
    fn sweep(&self, worker: &WorkerStats, now: Instant) -> io::Result<()> {
        self.sweep.clear()?;
        self.conns.for_each(false, |token, slot| {
            let Some(conn) = &mut slot.value else { return };
            match conn.session().handle_timeout(now, &self.timeouts) {
                Expired::Nothing => {}
                Expired::Close => self.close(token, slot),
                Expired::Answered(late) => {
                    worker.timed_out(late);
                    self.pump(token, slot, worker, now);
                }
            }
        });
        self.sweep.set_after(SWEEP_INTERVAL)?;
        self.poller.modify(self.sweep.as_fd(), TIMER, ONCE)
    }

    /// SIGINT / SIGTERM: no new connections; each connection finishes what it has in flight.
    fn on_signal(&self, worker: &WorkerStats, now: Instant) -> io::Result<()> {
        if self.signals.read()?.is_none() || !self.drain.begin()? {
            return self.poller.modify(self.signals.as_fd(), SIGNALS, ONCE);
        }
        startup::log("draining: no new connections; finishing the requests in flight");
        self.acceptor.lock().stop_listening()?;
        self.conns.for_each(true, |token, slot| {
            let Some(conn) = &mut slot.value else { return };
            conn.session().begin_drain();
            self.pump(token, slot, worker, now);
        });
        Ok(())
    }
}
