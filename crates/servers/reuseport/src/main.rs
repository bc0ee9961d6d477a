//! lab-reuseport: N worker processes, each with its own `SO_REUSEPORT` listening socket on the same
//! port, each its own listener, acceptor, reader and executor — socket sharding, as nginx does with
//! `listen … reuseport`, HAProxy with a listener per process or thread, and Envoy with one socket
//! per worker. A supervising parent opens each socket, forks the worker that alone holds it, replaces
//! any that dies, and adds, removes and replaces workers on SIGTTIN, SIGTTOU and SIGHUP (`pool`).
//!
//! ```text
//!   supervise (parent): opens socket i, forks worker i (which alone holds it), restarts, scales
//!        │ fork ×N
//!   SYN ─► kernel: a hash of the 4-tuple (--steer cpu: the CPU taking the SYN; --steer load: an
//!          │        eBPF program reading the load table the workers write) picks socket i
//!          ├─► accept queue 0   ─► process 0 (CPU 0):  accept_from ─► read ─► execute ─► write
//!          ├─► accept queue 1   ─► process 1 (CPU 1):  accept_from ─► read ─► execute ─► write
//!          └─► accept queue N-1 ─► process N-1:        accept_from ─► read ─► execute ─► write
//!              (kernel, one per socket)  └─ epoll_wait: its socket, signalfd, its connections ─┘
//! ```
//!
//! Trigger mode: edge-triggered for the listener and the connections (see `loopkit::conn`).
//!
//! Trade-off: no two workers share anything on the way in — no accept lock, no hand-off, no
//! thundering herd — but by default the kernel picks the worker before any of them could say it is
//! busy: `/stats` shows each listener's own accept queue growing behind a slow worker while the
//! others idle. `--steer load` (`steer`) lets a program in the kernel pick by the load each worker
//! publishes, and `--migrate` lets it move a closing socket's queue instead of resetting it.
//! With --tls-cert the process the kernel picked does the handshake; the ticket key is made before
//! the fork, so a session resumes in any process.
#![forbid(unsafe_code)]

mod pool;
mod steer;

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use loopkit::accept::Acceptor;
use loopkit::config::{self, CommonArgs, Config};
use loopkit::conn::Connections;
use loopkit::drain::Drain;
use loopkit::listener::Listener;
use loopkit::startup::{self, fatal};
use loopkit::stats::Role;
use loopkit::token::{LISTENER, SIGNALS};
use sys::epoll::{Events, Poller, READABLE_EDGE};
use sys::process::Pid;
use sys::signal::{ShutdownSignals, Signal};

use pool::Server;
use steer::{Load, Migrate, Steer, Steering};

/// How long a stopping worker serves the connections it accepted as usual before it drains them.
const SETTLE: Duration = Duration::from_millis(200);

/// lab-reuseport: N worker processes, each on its own SO_REUSEPORT socket of one port.
#[derive(Parser)]
#[command(name = "lab-reuseport", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// How the kernel picks the socket, and so the worker, of a new connection.
    #[arg(long, value_enum, default_value_t = Steer::Hash)]
    steer: Steer,
    /// Whether an eBPF program decides where a closing socket's queued and half-open connections go
    /// (default: on with --steer load, off otherwise; off leaves it to net.ipv4.tcp_migrate_req).
    #[arg(long, value_enum)]
    migrate: Option<Migrate>,
    /// The most workers SIGTTIN may bring the server to (default: twice --workers).
    #[arg(long)]
    max_workers: Option<usize>,
    /// Where POST /ledger's Idempotency-Key store lives: one table in memory every worker process
    /// shares, or one per process (a retry the kernel hands to another process executes again).
    #[arg(long, value_enum, default_value_t = Store::Shared)]
    idempotency_store: Store,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Store {
    /// MAP_SHARED, made before the fork: every process sees every key.
    Shared,
    /// MAP_PRIVATE: after the fork each process has its own copy (as any memory of a process).
    PerProcess,
}

fn main() {
    let cli: Cli = config::parse_or_exit();
    let mut config = startup::configure(&cli.common, None);
    if cli.idempotency_store == Store::PerProcess {
        config.idempotency.sharing = sys::shared::Sharing::Private;
    }
    let max_workers = cli.max_workers.unwrap_or(2 * config.workers);
    if max_workers < config.workers {
        config::usage_error(&format!("--max-workers {max_workers}: below --workers {}", config.workers));
    }
    let steering = Steering::new(cli.steer, cli.migrate, max_workers);
    let signals = ShutdownSignals::with(&pool::SCALING).unwrap_or_else(|e| fatal(e));
    // Each socket is held by its worker alone, so /stats finds the others' queues in /proc.
    let first = startup::listen(&config, config.addr, true);
    warn_cpu_steering(&config, cli.steer);
    let stats = startup::stats("reuseport", max_workers, &config, Vec::new());
    let shared = Server::shared_words(max_workers).unwrap_or_else(|e| fatal(e));
    let addr = first.addr;
    let supervisor = Pid::this();
    let server = Server { config, addr, steering, stats, signals, supervisor, max_workers, shared };
    server.stats.set_annex(pool::annex(&server));
    std::process::exit(pool::supervise(&server, first, worker_main).unwrap_or_else(|e| fatal(e)));
}

/// `--steer cpu` gives worker i the connections whose SYN a CPU c with c mod N = i handles.
fn warn_cpu_steering(config: &Config, steer: Steer) {
    let workers = config.workers;
    if steer == Steer::Cpu && (0..workers).any(|i| config.cpu_for(i).map(|cpu| cpu % workers) != Some(i)) {
        startup::log(format!(
            "warning: --steer cpu gives worker i the connections whose SYN a CPU c with \
             c mod {workers} = i handles, so worker i belongs on such a CPU: use --cpus 0-{}",
            workers - 1
        ));
    }
}

/// One worker process: lab-epoll's event loop on its own socket `listener`, pinned to its CPU,
/// publishing its load in slot `index` of the load table where a program reads it.
fn worker_main(server: &Server, index: usize, listener: Listener) -> io::Result<()> {
    sys::process::die_with_parent(server.supervisor)?;
    // The memory budget is the whole server's: each process has its share.
    let config = &Config {
        memory_budget: server.config.memory_budget / server.config.workers,
        ..server.config.clone()
    };
    let worker = server.stats.worker(index, Role::Process, config.cpu_for(index));
    startup::start_thread(&worker);
    worker.release_orphaned_conns();
    let load = server.steering.slot(index).map(Load::new);
    let mut acceptor = Acceptor::new(listener, worker.clone())?;
    let poller = Poller::new()?;
    poller.add(acceptor.listener().fd.as_fd(), LISTENER, READABLE_EDGE)?;
    poller.add(server.signals.as_fd(), SIGNALS, READABLE_EDGE)?;
    let mut conns = Connections::new(config, worker.clone());
    let mut events = Events::with_capacity(1024);
    let mut drain = Drain::default();
    let mut taken = worker.accepted_and_open().0;
    // Once stopped: until when the connections it accepted are served as usual, before the drain.
    let mut settle: Option<Instant> = None;
    if let Some(load) = &load {
        load.live();
    }
    loop {
        if let Some(load) = &load {
            load.idle(worker.accepted_and_open().1);
        }
        let settling = settle.map(|at| at.saturating_duration_since(Instant::now()));
        poller.wait(&mut events, loopkit::earliest([conns.timeout(), drain.time_left(), settling]))?;
        if let Some(load) = &load {
            load.busy();
        }
        conns.woke_up();
        // A stop is seen before anything else the wake-up brought: the socket closes at once, and
        // what queued there goes where migration sends it (or, with none, is reset by the kernel).
        // The connections already accepted are served as usual for SETTLE, so that one whose
        // request is still on its way is answered, not closed unread; then the drain begins.
        if events.iter().any(|event| event.token == SIGNALS)
            && told_to_stop(&server.signals)?
            && drain.begin()
        {
            if let Some(load) = &load {
                load.retire();
            }
            acceptor.stop_listening()?;
            settle = Some(Instant::now() + SETTLE);
        }
        for event in events.iter() {
            match event.token {
                LISTENER => {
                    let sent = load.as_ref().map(Load::sent);
                    conns.accept_from(&poller, &mut acceptor);
                    let (accepted, open) = worker.accepted_and_open();
                    if let (Some(load), Some(sent)) = (&load, sent) {
                        load.took(accepted - taken, sent, open);
                    }
                    taken = accepted;
                }
                SIGNALS => {}
                token => conns.ready(token, &event),
            }
        }
        conns.tick();
        if settle.is_some_and(|at| Instant::now() >= at) {
            settle = None;
            conns.begin_drain();
        }
        if settle.is_none() && drain.is_done(&conns) {
            return Ok(());
        }
    }
}

/// Reads every pending signal: whether one was SIGINT or SIGTERM (the scaling signals, blocked
/// here too, are the supervisor's).
fn told_to_stop(signals: &ShutdownSignals) -> io::Result<bool> {
    let mut stop = false;
    while let Some(signal) = signals.read()? {
        stop |= signal == Signal::SIGINT as i32 || signal == Signal::SIGTERM as i32;
    }
    Ok(stop)
}
