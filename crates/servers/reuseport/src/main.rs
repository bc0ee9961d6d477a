//! lab-reuseport: N worker processes, each with its own `SO_REUSEPORT` listening socket on the same
//! port, each its own listener, acceptor, reader and executor — socket sharding, as nginx does with
//! `listen … reuseport`, HAProxy with a listener per process or thread, and Envoy with one socket
//! per worker. A supervising parent opens the sockets, forks the workers and replaces any that dies.
//!
//! ```text
//!   supervise (parent): opens N sockets on one port, forks, restarts a dead worker, forwards SIGTERM
//!        │ fork ×N (every worker holds every socket; worker i accepts on socket i only)
//!   SYN ─► kernel: a hash of the 4-tuple (--steer cpu: the CPU taking the SYN) picks socket i
//!          ├─► accept queue 0   ─► process 0 (CPU 0):  accept_from ─► read ─► execute ─► write
//!          ├─► accept queue 1   ─► process 1 (CPU 1):  accept_from ─► read ─► execute ─► write
//!          └─► accept queue N-1 ─► process N-1:        accept_from ─► read ─► execute ─► write
//!              (kernel, one per socket)  └─ epoll_wait: its socket, signalfd, its connections ─┘
//! ```
//!
//! Trigger mode: edge-triggered for the listener and the connections (see `common::conn`).
//!
//! Trade-off: no two workers share anything on the way in — no accept lock, no hand-off, no
//! thundering herd — but the kernel picks the worker before any of them could say it is busy (see
//! the NOTE in `open_listeners`): `/stats` shows each listener's own accept queue growing behind a
//! slow worker while the others idle.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use common::accept::Acceptor;
use common::config::{self, CommonArgs, Config};
use common::conn::Connections;
use common::drain::{Drain, DRAIN_LIMIT};
use common::listener::Listener;
use common::startup::{self, fatal};
use common::stats::{Role, WorkerStats};
use common::token::{LISTENER, SIGNALS};
use sys::epoll::{Events, Poller, READABLE_EDGE};
use sys::process::{Ended, ForkResult, Pid};
use sys::signal::ShutdownSignals;

/// How long the supervisor waits for draining workers before it kills them.
const STOP_LIMIT: Duration = DRAIN_LIMIT.saturating_add(Duration::from_secs(1));
/// How often the supervisor looks for dead workers: a dead one is replaced within this.
const REAP_INTERVAL: Duration = Duration::from_millis(100);

/// lab-reuseport: N worker processes, each on its own SO_REUSEPORT socket of one port.
#[derive(Parser)]
#[command(name = "lab-reuseport", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// How the kernel picks the socket, and so the worker, of a new connection.
    #[arg(long, value_enum, default_value_t = Steer::Hash)]
    steer: Steer,
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Steer {
    /// The kernel's default: a hash of the connection's addresses and ports.
    Hash,
    /// A BPF program picks the socket of the CPU that handles the connection's SYN.
    Cpu,
}

/// What the supervisor starts every worker, and every replacement, with.
struct Server {
    config: Config,
    listeners: Vec<Listener>,
    worker_stats: Vec<WorkerStats>,
    signals: ShutdownSignals,
    /// Set (to 1) before the supervisor forwards SIGTERM, in memory every worker shares: the whole
    /// server is stopping, not just one worker.
    stopping: &'static AtomicU64,
    supervisor: Pid,
}

fn main() {
    let cli: Cli = config::parse_or_exit();
    let mut config = startup::configure(&cli.common, None);
    if cli.idempotency_store == Store::PerProcess {
        config.idempotency.sharing = sys::shared::Sharing::Private;
    }
    let signals = ShutdownSignals::new().unwrap_or_else(|e| fatal(e));
    let listeners = open_listeners(&config, cli.steer);
    let stats = startup::stats("reuseport", config.workers, &config, listeners.clone());
    // Registered before any worker runs, so that the first /stats already lists every process.
    let worker_stats =
        (0..config.workers).map(|i| stats.worker(i, Role::Process, config.cpu_for(i))).collect();
    let stopping = &sys::shared::shared_counters(1).unwrap_or_else(|e| fatal(e))[0];
    startup::announce(listeners[0].addr);
    let server = Server { config, listeners, worker_stats, signals, stopping, supervisor: Pid::this() };
    std::process::exit(supervise(&server).unwrap_or_else(|e| fatal(e)));
}

/// Opens one listening socket per worker, all `SO_REUSEPORT` on the same port.
///
/// NOTE: SO_REUSEPORT gives each worker its own accept queue: no lock to share, no herd to wake.
/// But the kernel assigns each connection to a socket blindly, by a hash of its 4-tuple, so a slow
/// worker's queue grows while the others idle; and a socket closed with connections in its queue
/// resets them (kernels ≥ 5.14 can migrate them instead, with net.ipv4.tcp_migrate_req). That is
/// why the supervisor opens every socket itself and keeps them all open: a dead worker's queue is
/// not lost — its connections wait (about the REAP_INTERVAL until a replacement takes over the same
/// socket) instead of being reset — no socket exists that nobody will ever accept on, and the
/// group's order, which `--steer cpu` indexes, never changes.
fn open_listeners(config: &Config, steer: Steer) -> Vec<Listener> {
    let first = startup::listen(config, config.addr, true);
    let mut listeners = vec![first.clone()];
    // With port 0 the kernel chose the first socket's port; the others join it there.
    listeners.extend((1..config.workers).map(|_| startup::listen(config, first.addr, true)));
    if steer == Steer::Cpu {
        // The program belongs to the whole group; attaching it through any member sets it.
        let workers = config.workers;
        sys::socket::attach_reuseport_cpu_steering(first.fd.as_fd(), workers as u32)
            .unwrap_or_else(|e| fatal(e));
        if (0..workers).any(|i| config.cpu_for(i).map(|cpu| cpu % workers) != Some(i)) {
            startup::log(format!(
                "warning: --steer cpu gives worker i the connections whose SYN a CPU c with \
                 c mod {workers} = i handles, so worker i belongs on such a CPU: use --cpus 0-{}",
                workers - 1
            ));
        }
    }
    listeners
}

/// The supervisor's loop: starts the workers, replaces any that dies, and on SIGINT / SIGTERM
/// stops them all. Returns the exit status.
fn supervise(server: &Server) -> io::Result<i32> {
    let poller = Poller::new()?;
    poller.add(server.signals.as_fd(), SIGNALS, READABLE_EDGE)?;
    let mut events = Events::with_capacity(4);
    let mut pids = Vec::new();
    for index in 0..server.config.workers {
        pids.push(Some(start_worker(server, index)?));
    }
    // Once stopping: when to stop waiting for the workers, and the status to exit with.
    let mut stop: Option<(Instant, i32)> = None;
    loop {
        poller.wait(&mut events, Some(REAP_INTERVAL))?;
        if stop.is_none() && server.signals.read()?.is_some() {
            startup::log("stopping: each worker finishes the requests in flight");
            stop = Some(stop_workers(server, &pids, 0));
        }
        while let Some((pid, ended)) = sys::process::reap_any()? {
            let Some(index) = pids.iter().position(|&worker| worker == Some(pid)) else { continue };
            pids[index] = None;
            if stop.is_some() {
                continue;
            }
            if ended == Ended::Status(1) {
                // Status 1 is a worker's failing syscall, already named on stderr: a replacement
                // would fail the same way, so the server exits 1 as the other architectures do.
                startup::log(format!("worker {index} (pid {pid}) exited: {ended}; stopping"));
                stop = Some(stop_workers(server, &pids, 1));
                continue;
            }
            startup::log(format!("worker {index} (pid {pid}) exited: {ended}; restarting"));
            pids[index] = Some(start_worker(server, index)?);
        }
        match stop {
            Some((_, status)) if pids.iter().all(Option::is_none) => return Ok(status),
            Some((give_up_at, _)) if Instant::now() >= give_up_at => {
                for &pid in pids.iter().flatten() {
                    let _ = sys::process::kill(pid);
                }
            }
            _ => {}
        }
    }
}

/// Marks the whole server as stopping, then forwards SIGTERM to every worker; returns when to stop
/// waiting for them, with `status`.
fn stop_workers(server: &Server, pids: &[Option<Pid>], status: i32) -> (Instant, i32) {
    server.stopping.store(1, Ordering::Release);
    for &pid in pids.iter().flatten() {
        // It can only fail for a worker that has just exited, and will be reaped next.
        let _ = sys::process::terminate(pid);
    }
    (Instant::now() + STOP_LIMIT, status)
}

/// Forks worker `index`. The child runs `worker_main` and exits; it never returns here.
fn start_worker(server: &Server, index: usize) -> io::Result<Pid> {
    match sys::process::fork()? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            worker_main(server, index).unwrap_or_else(|e| fatal(e));
            std::process::exit(0);
        }
    }
}

/// One worker process: lab-epoll's event loop on socket `index`, pinned to its CPU.
fn worker_main(server: &Server, index: usize) -> io::Result<()> {
    sys::process::die_with_parent(server.supervisor)?;
    // The memory budget is the whole server's: each process has its share.
    let config = &Config {
        memory_budget: server.config.memory_budget / server.config.workers,
        ..server.config.clone()
    };
    let worker = server.worker_stats[index].clone();
    startup::start_thread(&worker);
    worker.release_orphaned_conns();
    let mut acceptor = Acceptor::new(server.listeners[index].clone(), worker.clone())?;
    let poller = Poller::new()?;
    poller.add(acceptor.listener().fd.as_fd(), LISTENER, READABLE_EDGE)?;
    poller.add(server.signals.as_fd(), SIGNALS, READABLE_EDGE)?;
    let mut conns = Connections::new(config, worker);
    let mut events = Events::with_capacity(1024);
    let mut drain = Drain::default();
    loop {
        poller.wait(&mut events, common::earliest([conns.timeout(), drain.time_left()]))?;
        conns.woke_up();
        // A stop is seen before anything else the wake-up brought: connections queued meanwhile
        // stay in the queue for the replacement, instead of being accepted only to be closed unread.
        if events.iter().any(|event| event.token == SIGNALS)
            && server.signals.read()?.is_some()
            && drain.begin()
        {
            stop_accepting(&mut acceptor, server.stopping)?;
            conns.begin_drain();
        }
        for event in events.iter() {
            match event.token {
                LISTENER => conns.accept_from(&poller, &mut acceptor),
                SIGNALS => {}
                token => conns.ready(token, &event),
            }
        }
        conns.tick();
        if drain.is_done(&conns) {
            return Ok(());
        }
    }
}

/// A draining worker accepts no more. When the whole server stops, its socket stops listening for
/// good (shutdown acts on the socket, in every process that holds it): new connections are refused,
/// not queued for no one. When this worker alone was signalled, the socket listens on, and what
/// queues there waits for the replacement the supervisor starts once this worker has exited.
fn stop_accepting(acceptor: &mut Acceptor, stopping: &AtomicU64) -> io::Result<()> {
    match stopping.load(Ordering::Acquire) {
        0 => Ok(()),
        _ => acceptor.stop_listening(),
    }
}
