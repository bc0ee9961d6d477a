//! lab-epoll: one thread listens, accepts, reads and executes, with one epoll instance — the
//! architecture of Node.js (libuv), and of Redis.
//!
//! ```text
//!                        ┌────────────── the only thread ──────────────┐
//!   SYN ─► SYN queue ─► accept queue ─► accept_from ─► read ─► execute ─► write
//!          (kernel)       (kernel)      └── epoll_wait: listener, signalfd, every connection ──┘
//! ```
//!
//! Trigger mode: edge-triggered for the listener and the connections (see `loopkit::conn`).
//!
//! Trade-off: nothing is shared, so there are no locks, no hand-offs and no cache lines bouncing
//! between cores — and no second core either. Every request executes on the thread that also
//! accepts and reads for everyone else: one slow request stalls every connection, and the accept
//! queue fills meanwhile (`curl /sleep?ms=2000` and watch `/stats` stop answering for two seconds).
//! With --tls-cert the TLS handshakes run on it too, between everyone's requests.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::AsFd;

use clap::Parser;
use loopkit::accept::Acceptor;
use loopkit::config::{self, CommonArgs, Config};
use loopkit::conn::Connections;
use loopkit::drain::Drain;
use loopkit::startup::{self, fatal};
use loopkit::stats::{Role, WorkerStats};
use loopkit::token::{LISTENER, SIGNALS};
use sys::epoll::{Events, Poller, READABLE_EDGE};
use sys::signal::ShutdownSignals;

/// lab-epoll: one thread listens, accepts, reads and executes (Node.js style).
#[derive(Parser)]
#[command(name = "lab-epoll", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() {
    let cli: Cli = config::parse_or_exit();
    let config = startup::configure(&cli.common, Some(1));
    let signals = ShutdownSignals::new().unwrap_or_else(|e| fatal(e));
    let listener = startup::listen(&config, config.addr, false);
    let stats = startup::stats("epoll", 1, &config, vec![listener.clone()]);
    let worker = stats.worker(0, Role::Loop, config.cpu_for(0));
    startup::start_thread(&worker);
    let acceptor = Acceptor::new(listener.clone(), worker.clone()).unwrap_or_else(|e| fatal(e));
    startup::announce(listener.addr);
    worker_main(&config, acceptor, &signals, worker).unwrap_or_else(|e| fatal(e));
}

/// The event loop: the listener, the signalfd and every connection in one epoll.
fn worker_main(
    config: &Config,
    mut acceptor: Acceptor,
    signals: &ShutdownSignals,
    worker: WorkerStats,
) -> io::Result<()> {
    let poller = Poller::new()?;
    poller.add(acceptor.listener().fd.as_fd(), LISTENER, READABLE_EDGE)?;
    poller.add(signals.as_fd(), SIGNALS, READABLE_EDGE)?;
    let mut conns = Connections::new(config, worker);
    let mut events = Events::with_capacity(1024);
    let mut drain = Drain::default();
    loop {
        poller.wait(&mut events, loopkit::earliest([conns.timeout(), drain.time_left()]))?;
        conns.woke_up();
        for event in events.iter() {
            match event.token {
                LISTENER => conns.accept_from(&poller, &mut acceptor),
                SIGNALS => _ = drain.on_signal(signals, &mut acceptor, &mut conns)?,
                token => conns.ready(token, &event),
            }
        }
        conns.tick();
        if drain.is_done(&conns) {
            return Ok(());
        }
    }
}
