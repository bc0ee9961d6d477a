//! lab-memcached: the main thread listens and accepts; each new connection is handed round-robin to
//! one of N worker threads, which reads, executes and writes it from then on — memcached's
//! `thread.c` (`dispatch_conn_new`, `thread_libevent_process`). `--dispatch p2c|least` chooses the
//! worker by the load each one publishes instead (see `dispatch_new_conn`).
//!
//! ```text
//!   SYN ─► SYN queue ─► accept queue ─► accept_loop (main thread, own epoll: listener, signalfd)
//!          (kernel)       (kernel)           │ dispatch_new_conn: round-robin
//!                                │ (or p2c / least, by each worker's recent busy time)
//!                                ┌───────────┼───────────┐  queue push + eventfd write
//!                                ▼           ▼           ▼
//!                           worker_main  worker_main  worker_main   (own epoll: eventfd + its
//!                           read/execute/write, each connection forever on one worker)
//! ```
//!
//! Trigger mode: edge-triggered everywhere (see `loopkit::conn`).
//!
//! Trade-off: accepting never competes with serving, and a connection's state stays on one core
//! with no locks. But the choice of worker is made once, blind, per connection: a worker that drew
//! the heavy connections stays busy while its neighbours idle (`/stats`: `conns` is even, `requests`
//! and latency are not), and the single acceptor caps the rate of new connections.
//! With --tls-cert the acceptor hands on the raw fd: the worker it picked does the handshake.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread;

use clap::Parser;
use crossbeam_channel::{Receiver, Sender};
use loopkit::accept::Acceptor;
use loopkit::config::{self, CommonArgs, Config};
use loopkit::conn::Connections;
use loopkit::dispatch::{Policy, RecentBusy, WorkerPicker};
use loopkit::drain::Drain;
use loopkit::startup::{self, fatal};
use loopkit::stats::{Role, WorkerStats};
use loopkit::token::{LISTENER, SIGNALS, WAKER};
use sys::epoll::{Events, Poller, READABLE_EDGE};
use sys::eventfd::Waker;
use sys::signal::ShutdownSignals;

/// lab-memcached: one acceptor thread hands connections round-robin to N worker threads.
#[derive(Parser)]
#[command(name = "lab-memcached", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// How the acceptor picks a worker for each new connection: round-robin, power of two choices,
    /// or the least busy (by each worker's recent busy time).
    #[arg(long, value_enum, default_value = "rr")]
    dispatch: Policy,
}

/// What the acceptor sends a worker.
enum Message {
    /// A new connection, now the worker's.
    Conn(OwnedFd),
    /// SIGTERM: finish what is in flight and exit.
    Drain,
}

/// The acceptor's end of one worker: its queue, its wake-up, and the load it publishes.
struct WorkerHandle {
    queue: Sender<Message>,
    waker: Arc<Waker>,
    busy: Arc<RecentBusy>,
}

fn main() {
    let cli: Cli = config::parse_or_exit();
    let config = startup::configure(&cli.common, None);
    let signals = ShutdownSignals::new().unwrap_or_else(|e| fatal(e));
    let listener = startup::listen(&config, config.addr, false);
    let stats = startup::stats("memcached", config.workers + 1, &config, vec![listener.clone()]);
    let mut workers = Vec::with_capacity(config.workers);
    let mut threads = Vec::with_capacity(config.workers);
    for id in 1..=config.workers {
        let (queue, inbox) = crossbeam_channel::unbounded();
        let waker = Arc::new(Waker::new().unwrap_or_else(|e| fatal(e)));
        let busy = Arc::new(RecentBusy::default());
        let worker = stats.worker(id, Role::Worker, config.cpu_for(id));
        let (config, thread_waker, thread_busy) = (config.clone(), Arc::clone(&waker), Arc::clone(&busy));
        let poller = Poller::new().unwrap_or_else(|e| fatal(e));
        threads.push(thread::spawn(move || {
            startup::start_thread(&worker);
            worker_main(&config, poller, inbox, &thread_waker, &thread_busy, worker)
                .unwrap_or_else(|e| fatal(e));
        }));
        workers.push(WorkerHandle { queue, waker, busy });
    }
    let acceptor_stats = stats.worker(0, Role::Acceptor, config.cpu_for(0));
    startup::start_thread(&acceptor_stats);
    let acceptor = Acceptor::new(listener.clone(), acceptor_stats).unwrap_or_else(|e| fatal(e));
    startup::announce(listener.addr);
    accept_loop(acceptor, &signals, &workers, WorkerPicker::new(cli.dispatch)).unwrap_or_else(|e| fatal(e));
    startup::join_all(threads);
}

/// The main thread: waits for the listener (or a signal), accepts everything queued, hands it out.
fn accept_loop(
    mut acceptor: Acceptor,
    signals: &ShutdownSignals,
    workers: &[WorkerHandle],
    mut dispatcher: WorkerPicker,
) -> io::Result<()> {
    let poller = Poller::new()?;
    poller.add(acceptor.listener().fd.as_fd(), LISTENER, READABLE_EDGE)?;
    poller.add(signals.as_fd(), SIGNALS, READABLE_EDGE)?;
    let mut events = Events::with_capacity(8);
    loop {
        poller.wait(&mut events, None)?;
        acceptor.woke_up();
        for event in events.iter() {
            match event.token {
                LISTENER => {
                    acceptor.accept_all(&poller, |fd| dispatch_new_conn(workers, &mut dispatcher, fd))
                }
                SIGNALS if signals.read()?.is_some() => {
                    startup::log("draining: no new connections; workers finish the requests in flight");
                    acceptor.stop_listening()?;
                    for worker in workers {
                        let _ = worker.queue.send(Message::Drain);
                        notify_worker(worker);
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
    }
}

/// Hands a connection to the worker the policy picks: the next in turn (`rr`), or the less busy of
/// two drawn at random (`p2c`), or the least busy of all (`least`).
///
/// NOTE: round-robin, as memcached does, balances connections, not work: the acceptor cannot know
/// which connection will be busy, and once handed over a connection never moves. `p2c` and `least`
/// read what each worker publishes about its recent busy time (`loopkit::dispatch`), so a new
/// connection goes where there is spare time — paid for with three loads per worker per accept,
/// while the worker's hot path gains two clock reads per wake-up. Still no connection ever moves:
/// two heavy connections that land together, or that turn heavy later, stay together.
fn dispatch_new_conn(workers: &[WorkerHandle], dispatcher: &mut WorkerPicker, fd: OwnedFd) {
    let worker = &workers[dispatcher.choose(workers.len(), |i| workers[i].busy.load())];
    if worker.queue.send(Message::Conn(fd)).is_ok() {
        notify_worker(worker);
    }
}

/// Wakes a worker: one eventfd write per item queued, so the counter it reads says how many to take.
fn notify_worker(worker: &WorkerHandle) {
    let _ = worker.waker.wake();
}

/// A worker thread: its own epoll with its eventfd and the connections it was given.
fn worker_main(
    config: &Config,
    poller: Poller,
    inbox: Receiver<Message>,
    waker: &Waker,
    busy: &RecentBusy,
    worker: WorkerStats,
) -> io::Result<()> {
    poller.add(waker.as_fd(), WAKER, READABLE_EDGE)?;
    let mut conns = Connections::new(config, worker);
    let mut events = Events::with_capacity(1024);
    let mut drain = Drain::default();
    loop {
        busy.waiting();
        poller.wait(&mut events, loopkit::earliest([conns.timeout(), drain.time_left()]))?;
        busy.woke();
        conns.woke_up();
        for event in events.iter() {
            match event.token {
                WAKER => {
                    for _ in 0..waker.drain()? {
                        match inbox.try_recv() {
                            Ok(Message::Conn(fd)) => {
                                let _ = conns.add(&poller, fd); // a failure closes that connection only
                            }
                            Ok(Message::Drain) if drain.begin() => conns.begin_drain(),
                            Ok(Message::Drain) | Err(_) => {}
                        }
                    }
                }
                token => conns.ready(token, &event),
            }
        }
        conns.tick();
        if drain.is_done(&conns) {
            return Ok(());
        }
    }
}
