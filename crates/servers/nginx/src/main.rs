//! lab-nginx: one listening socket; N worker threads, each with its own epoll, take turns accepting on
//! it and then read, execute and write their own connections — nginx's event module
//! (`ngx_process_events_and_timers`, `ngx_trylock_accept_mutex`, `ngx_accept_disabled`).
//!
//! ```text
//!   SYN ─► SYN queue ─► one accept queue ─┬─► worker_main 0: accept_from, read/execute/write
//!          (kernel)      (kernel, shared) ├─► worker_main 1: accept_from, read/execute/write
//!                                         └─► worker_main 2: ...
//!                 who may accept: --accept mutex     the holder of a mutex alone has the listener in
//!                                                    its epoll (the default, as in the notes)
//!                                 --accept exclusive the listener in every epoll, EPOLLEXCLUSIVE:
//!                                                    the kernel wakes one waiter per connection
//!                                 --accept herd      the listener in every epoll: all wake, one wins
//! ```
//!
//! Trigger mode: edge-triggered (see `loopkit::conn`); the listener too.
//!
//! Trade-off: every worker is its own acceptor, so no hand-off and no single accepting thread; but
//! they share one accept queue, and who gets the next connection is decided by a lock, by the
//! kernel's choice of waiter, or by a race — each with its own imbalance, visible in `/stats`.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use loopkit::accept::Acceptor;
use loopkit::config::{self, CommonArgs, Config};
use loopkit::conn::Connections;
use loopkit::drain::Drain;
use loopkit::startup::{self, fatal};
use loopkit::stats::{Role, WorkerStats};
use loopkit::token::{LISTENER, SIGNALS, WAKER};
use parking_lot::{Mutex, MutexGuard};
use sys::epoll::{Events, Interest, Poller, READABLE_EDGE};
use sys::eventfd::Waker;
use sys::signal::ShutdownSignals;

/// How the worker threads share the listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AcceptMode {
    /// A mutex: only its holder has the listener in its epoll (nginx `accept_mutex on`).
    Mutex,
    /// The listener in every epoll with EPOLLEXCLUSIVE: one waiter woken per connection.
    Exclusive,
    /// The listener in every epoll: every waiter woken, one wins (the thundering herd).
    Herd,
}

/// lab-nginx: N threads with their own epoll take turns accepting on one socket.
#[derive(Parser)]
#[command(name = "lab-nginx", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// How the threads take turns at accepting.
    #[arg(long, value_enum, default_value_t = AcceptMode::Mutex)]
    accept: AcceptMode,
}

/// How long a worker that did not get the accept mutex waits before trying again, unless one of its
/// own connections wakes it sooner. nginx's `accept_mutex_delay` defaults to 500 ms.
const ACCEPT_MUTEX_DELAY: Duration = Duration::from_millis(500);

/// What every worker thread shares.
struct Shared {
    mode: AcceptMode,
    accept_mutex: Mutex<()>,
    /// Workers not sitting out turns at the accept mutex: never let fall below 1 (see `try_take`).
    taking_turns: AtomicUsize,
    /// The signalfd: in every epoll; whoever reads the signal tells the others through their wakers.
    signals: ShutdownSignals,
    /// Every worker's eventfd, by worker id.
    wakers: Vec<Waker>,
}

fn main() {
    let cli: Cli = config::parse_or_exit();
    let config = startup::configure(&cli.common, None);
    let signals = ShutdownSignals::new().unwrap_or_else(|e| fatal(e));
    let listener = startup::listen(&config, config.addr, false);
    let stats = startup::stats("nginx", config.workers, &config, vec![listener.clone()]);
    startup::log(format_args!("{} workers, --accept {}", config.workers, config::value_name(cli.accept)));
    let shared = Arc::new(Shared {
        mode: cli.accept,
        accept_mutex: Mutex::new(()),
        taking_turns: AtomicUsize::new(config.workers),
        signals,
        wakers: (0..config.workers).map(|_| Waker::new().unwrap_or_else(|e| fatal(e))).collect(),
    });
    let threads: Vec<_> = (0..config.workers)
        .map(|id| {
            let worker = stats.worker(id, Role::Worker, config.cpu_for(id));
            // Made here, before anything is accepted: a worker must not find the fds used up.
            let acceptor = Acceptor::new(listener.clone(), worker.clone()).unwrap_or_else(|e| fatal(e));
            let poller = Poller::new().unwrap_or_else(|e| fatal(e));
            let (config, shared) = (config.clone(), Arc::clone(&shared));
            thread::spawn(move || {
                startup::start_thread(&worker);
                worker_main(&config, poller, acceptor, &shared, id, worker).unwrap_or_else(|e| fatal(e));
            })
        })
        .collect();
    startup::announce(listener.addr);
    startup::join_all(threads);
}

/// A worker thread: accepts (when its turn comes), then serves its own connections.
fn worker_main(
    config: &Config,
    poller: Poller,
    mut acceptor: Acceptor,
    shared: &Shared,
    id: usize,
    worker: WorkerStats,
) -> io::Result<()> {
    let waker = &shared.wakers[id];
    poller.add(shared.signals.as_fd(), SIGNALS, READABLE_EDGE)?;
    poller.add(waker.as_fd(), WAKER, READABLE_EDGE)?;
    let listener_fd = Arc::clone(&acceptor.listener().fd);
    match shared.mode {
        AcceptMode::Mutex => {} // added and removed as the mutex comes and goes
        AcceptMode::Exclusive => {
            poller.add(listener_fd.as_fd(), LISTENER, READABLE_EDGE | Interest::EPOLLEXCLUSIVE)?
        }
        AcceptMode::Herd => poller.add(listener_fd.as_fd(), LISTENER, READABLE_EDGE)?,
    }
    let share = (config.max_conns as usize / config.workers).max(1);
    let mut conns = Connections::new(config, worker);
    let mut events = Events::with_capacity(1024);
    let mut drain = Drain::default();
    let mut turn = AcceptTurn { held: None, listening: false, disabled: 0, sitting_out: false };
    loop {
        let mut timeout = loopkit::earliest([conns.timeout(), drain.time_left()]);
        if shared.mode == AcceptMode::Mutex && !drain.is_draining() {
            turn.try_take(shared, &poller, &listener_fd)?;
            if !turn.listening {
                timeout = loopkit::earliest([timeout, Some(ACCEPT_MUTEX_DELAY)]);
            }
        }
        poller.wait(&mut events, timeout)?;
        conns.woke_up();
        // Accept first, then let go of the mutex before serving: the next holder need not wait for
        // this worker's requests to execute (nginx posts its read events for the same reason).
        if events.iter().any(|event| event.token == LISTENER) {
            conns.accept_from(&poller, &mut acceptor);
            turn.disabled = ngx_accept_disabled(share, conns.len());
        }
        turn.held = None;
        for event in events.iter() {
            match event.token {
                LISTENER => {} // accepted above, before the mutex was let go
                SIGNALS if drain.on_signal(&shared.signals, &mut acceptor, &mut conns)? => {
                    shared.wakers.iter().for_each(|waker| _ = waker.wake()); // the others drain too
                }
                SIGNALS => {}
                // Another worker read the signal: drain too (its listener has already stopped).
                WAKER if waker.drain()? > 0 && drain.begin() => conns.begin_drain(),
                WAKER => {}
                token => conns.ready(token, &event),
            }
        }
        conns.tick();
        if drain.is_done(&conns) {
            return Ok(());
        }
    }
}

/// One worker's state in the accept-mutex protocol.
struct AcceptTurn<'a> {
    /// The mutex, while this worker holds it (from before its epoll_wait to after it accepted).
    held: Option<MutexGuard<'a, ()>>,
    /// Whether the listener is in this worker's epoll now.
    listening: bool,
    /// Turns left to sit out because this worker holds more than its share (`ngx_accept_disabled`).
    disabled: usize,
    /// Whether this worker is counted out of `Shared::taking_turns`.
    sitting_out: bool,
}

impl<'a> AcceptTurn<'a> {
    /// Before each wait: take the mutex if it is free and this worker is not sitting out, and put the
    /// listener in (or out of) this worker's epoll to match.
    ///
    /// NOTE: this is nginx's accept_mutex. Only the holder is woken by a new connection, so there is
    /// no herd; but the holder tends to win again at its next turn (the others are asleep for up to
    /// ACCEPT_MUTEX_DELAY), so one worker takes most connections until it holds 7/8 of its share and
    /// starts sitting out turns. That imbalance, and the epoll_ctl calls each change of holder costs,
    /// are why nginx turned accept_mutex off by default in 1.11.3 once EPOLLEXCLUSIVE and reuseport
    /// existed.
    fn try_take(&mut self, shared: &'a Shared, poller: &Poller, listener: &OwnedFd) -> io::Result<()> {
        // Set after each accept, counted down once per turn (as nginx does): a worker that holds
        // more than its share sits out a while, but never for good — were it recomputed from `open`
        // at every turn, every worker above 7/8 would sit out forever and the accept queue would
        // stall below --max-conns.
        self.disabled = self.disabled.saturating_sub(1);
        self.sit_out_if_another_takes_turns(&shared.taking_turns);
        self.held = if self.disabled == 0 { shared.accept_mutex.try_lock() } else { None };
        match (self.held.is_some(), self.listening) {
            (true, false) => poller.add(listener.as_fd(), LISTENER, READABLE_EDGE)?,
            (false, true) => poller.delete(listener.as_fd())?,
            _ => {}
        }
        self.listening = self.held.is_some();
        Ok(())
    }

    /// Sits out the turns in `disabled` only while some other worker still takes turns; the last
    /// one never does. Counting down is not enough on its own: once every worker holds more than
    /// 7/8 of its share (over 7/8 of --max-conns in all) and its connections are idle, each turn
    /// is an `ACCEPT_MUTEX_DELAY` sleep, and hundreds of turns left on every worker at once left
    /// nobody listening for minutes while the accept queue filled under --max-conns. nginx has the
    /// same stall in principle; there `worker_connections` is per worker and small.
    fn sit_out_if_another_takes_turns(&mut self, taking_turns: &AtomicUsize) {
        match (self.disabled > 0, self.sitting_out) {
            (true, false) => {
                let others_take_turns = taking_turns
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n > 1).then(|| n - 1))
                    .is_ok();
                match others_take_turns {
                    true => self.sitting_out = true,
                    false => self.disabled = 0,
                }
            }
            (false, true) => {
                taking_turns.fetch_add(1, Ordering::AcqRel);
                self.sitting_out = false;
            }
            _ => {}
        }
    }
}

/// How many turns at the accept mutex a worker with `open` of its `share` of connections sits out.
/// nginx computes it in `ngx_event_accept` as
///
/// ```text
/// ngx_accept_disabled = ngx_cycle->connection_n / 8 - ngx_cycle->free_connection_n;
/// ```
///
/// positive (sit out) once more than 7/8 of the worker's connections are in use.
fn ngx_accept_disabled(share: usize, open: usize) -> usize {
    let free = share.saturating_sub(open);
    (share / 8).saturating_sub(free)
}
