//! lab-reuseport's supervisor: it opens each worker's socket, forks the worker that alone holds
//! it, replaces one that dies, and changes the workers at run time with the signals gunicorn uses:
//! SIGTTIN adds one, SIGTTOU removes one (its socket closes; its queue migrates where a program
//! decides migrations, else the kernel's `tcp_migrate_req` decides; it drains), SIGHUP replaces
//! every worker with a new one on a new socket, one at a time, as nginx reloads. Each change is one
//! line on stderr and a count in `/stats` (`scaling`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loopkit::config::Config;
use loopkit::drain::DRAIN_LIMIT;
use loopkit::listener::{Listener, PauseAfterFirst};
use loopkit::startup;
use loopkit::stats::{Role, Stats};
use loopkit::token::SIGNALS;
use serde_json::{json, Value};
use sys::epoll::{Events, Poller, READABLE_EDGE};
use sys::process::{Ended, ForkResult, Pid};
use sys::signal::{ShutdownSignals, Signal};

use crate::steer::{word, Steer, Steering};

/// How long the supervisor waits for draining workers before it kills them.
const STOP_LIMIT: Duration = DRAIN_LIMIT.saturating_add(Duration::from_secs(1));
/// How often the supervisor looks for dead workers: a dead one is replaced within this.
const REAP_INTERVAL: Duration = Duration::from_millis(100);

/// The signals the supervisor reads besides SIGINT and SIGTERM.
pub const SCALING: [Signal; 3] = [Signal::SIGTTIN, Signal::SIGTTOU, Signal::SIGHUP];

/// Words of the supervisor's shared memory: the counts, then two per slot.
const ADDED: usize = 0;
const REMOVED: usize = 1;
const REPLACED: usize = 2;
const RESTARTED: usize = 3;
const SLOTS_AT: usize = 4;
/// A slot's state: no worker, serving, or closing its socket and draining.
const EMPTY: u64 = 0;
const SERVING: u64 = 1;
const RETIRING: u64 = 2;

/// What the supervisor starts every worker, and every replacement, with.
pub struct Server {
    pub config: Config,
    /// The address every socket binds (the real port, once the first socket got one).
    pub addr: SocketAddr,
    pub steering: Steering,
    pub stats: Arc<Stats>,
    pub signals: ShutdownSignals,
    pub supervisor: Pid,
    /// `--max-workers`: the slots made at start-up.
    pub max_workers: usize,
    /// The counts of the changes, then each slot's state and its socket's inode, in memory every
    /// worker shares (for /stats).
    pub shared: &'static [AtomicU64],
}

impl Server {
    /// Memory for [`Server::shared`], for `max_workers` slots.
    pub fn shared_words(max_workers: usize) -> io::Result<&'static [AtomicU64]> {
        sys::shared::shared_counters(SLOTS_AT + 2 * max_workers)
    }

    fn set_slot(&self, slot: usize, state: u64, inode: u64) {
        self.shared[SLOTS_AT + 2 * slot].store(state, Relaxed);
        if inode != 0 {
            self.shared[SLOTS_AT + 2 * slot + 1].store(inode, Relaxed);
        }
    }

    fn count(&self, what: usize) {
        self.shared[what].fetch_add(1, Relaxed);
    }
}

/// A worker process the supervisor started.
#[derive(Clone, Copy)]
struct Worker {
    pid: Pid,
    /// Told to stop by the supervisor (SIGTTOU, SIGHUP, stop): not to be restarted.
    retiring: bool,
}

/// The body of a worker process: its slot and its socket, which it alone holds.
pub type WorkerMain = fn(&Server, usize, Listener) -> io::Result<()>;

struct Supervisor<'a> {
    server: &'a Server,
    worker_main: WorkerMain,
    slots: Vec<Option<Worker>>,
    /// SIGHUP: the old workers still to be replaced, and the one being replaced now (with whether
    /// its successor starts only once it has gone: no free slot).
    to_replace: Vec<usize>,
    replacing: Option<(usize, bool)>,
    /// Once stopping: when to stop waiting for the workers, and the status to exit with.
    stop: Option<(Instant, i32)>,
}

/// The supervisor's loop: starts the workers (announcing the port once every first socket
/// listens), replaces any that dies, scales on SIGTTIN / SIGTTOU / SIGHUP, and on SIGINT / SIGTERM
/// stops them all. `first` is worker 0's socket, already open. Returns the exit status.
pub fn supervise(server: &Server, first: Listener, worker_main: WorkerMain) -> io::Result<i32> {
    let poller = Poller::new()?;
    poller.add(server.signals.as_fd(), SIGNALS, READABLE_EDGE)?;
    let mut events = Events::with_capacity(4);
    let slots = vec![None; server.max_workers];
    let mut sup =
        Supervisor { server, worker_main, slots, to_replace: Vec::new(), replacing: None, stop: None };
    sup.start(0, Some(first), None)?;
    for slot in 1..server.config.workers {
        sup.start(slot, None, None)?;
    }
    startup::announce(server.addr);
    loop {
        poller.wait(&mut events, Some(REAP_INTERVAL))?;
        while let Some(signal) = server.signals.read()? {
            match signal {
                _ if sup.stop.is_some() => {}
                s if s == Signal::SIGTTIN as i32 => sup.add()?,
                s if s == Signal::SIGTTOU as i32 => sup.remove(),
                s if s == Signal::SIGHUP as i32 => sup.replace_all()?,
                _ => {
                    startup::log("stopping: each worker finishes the requests in flight");
                    sup.stop_all(0);
                }
            }
        }
        sup.reap()?;
        let running = sup.slots.iter().flatten().count();
        match sup.stop {
            Some((_, status)) if running == 0 => return Ok(status),
            Some((give_up_at, _)) if Instant::now() >= give_up_at => {
                for worker in sup.slots.iter().flatten() {
                    let _ = sys::process::kill(worker.pid);
                }
            }
            _ => {}
        }
    }
}

impl Supervisor<'_> {
    /// Workers serving, not retiring.
    fn serving(&self) -> usize {
        self.slots.iter().flatten().filter(|worker| !worker.retiring).count()
    }

    /// Opens a socket for `slot` (or takes `listener`), joins it to the group and the program's
    /// sockarray, and forks the worker that alone will hold it: the supervisor closes its copy.
    /// `counted`: the count in /stats this start adds one to, before the worker can answer.
    fn start(&mut self, slot: usize, listener: Option<Listener>, counted: Option<usize>) -> io::Result<()> {
        let server = self.server;
        let listener = match listener {
            Some(listener) => listener,
            None => open_socket(&server.config, server.addr)?,
        };
        server.steering.join(&listener, slot, server.config.workers)?;
        server.set_slot(slot, SERVING, sys::socket::inode(listener.fd.as_fd())?);
        // Registered before the worker runs, so that /stats lists it at once.
        server.stats.worker(slot, Role::Process, server.config.cpu_for(slot));
        if let Some(what) = counted {
            server.count(what);
        }
        let forked = sys::process::fork().inspect_err(|_| server.set_slot(slot, EMPTY, 0))?;
        match forked {
            ForkResult::Parent { child } => {
                self.slots[slot] = Some(Worker { pid: child, retiring: false });
                Ok(())
            }
            ForkResult::Child => {
                (self.worker_main)(server, slot, listener).unwrap_or_else(|e| startup::fatal(e));
                std::process::exit(0);
            }
        }
    }

    /// Tells the worker in `slot` to stop: it closes its socket and drains.
    fn retire(&mut self, slot: usize) {
        if let Some(worker) = self.slots[slot].as_mut() {
            worker.retiring = true;
            self.server.set_slot(slot, RETIRING, 0);
            // It can only fail for a worker that has just exited, and will be reaped next.
            let _ = sys::process::terminate(worker.pid);
        }
    }

    fn refuse_with_cpu(&self, signal: &str) -> bool {
        if self.server.steering.steer == Steer::Cpu {
            startup::log(format!(
                "{signal}: ignored: --steer cpu indexes the group's sockets in order, which a change would shuffle"
            ));
        }
        self.server.steering.steer == Steer::Cpu
    }

    /// SIGTTIN: a worker more, in the first free slot, on the next CPU of `--cpus`.
    fn add(&mut self) -> io::Result<()> {
        if self.refuse_with_cpu("SIGTTIN") {
            return Ok(());
        }
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            let max = self.server.max_workers;
            startup::log(format!("SIGTTIN: ignored: every one of --max-workers {max} slots is in use"));
            return Ok(());
        };
        if let Err(e) = self.start(slot, None, Some(ADDED)) {
            startup::log(format!("SIGTTIN: {e}: serving on with {} workers", self.serving()));
            return Ok(());
        }
        let cpu = self.server.config.cpu_for(slot).map_or("any CPU".into(), |cpu| format!("CPU {cpu}"));
        startup::log(format!("SIGTTIN: worker {slot} added on {cpu}: {} serving", self.serving()));
        Ok(())
    }

    /// SIGTTOU: the serving worker in the highest slot stops (never the last one).
    fn remove(&mut self) {
        if self.refuse_with_cpu("SIGTTOU") {
            return;
        }
        let serving = |w: &Option<Worker>| w.is_some_and(|w| !w.retiring);
        match self.slots.iter().rposition(serving) {
            Some(slot) if self.serving() > 1 => {
                self.retire(slot);
                self.server.count(REMOVED);
                startup::log(format!(
                    "SIGTTOU: worker {slot} closes its socket and drains: {} serving",
                    self.serving()
                ));
            }
            _ => startup::log("SIGTTOU: ignored: one worker left"),
        }
    }

    /// SIGHUP: every serving worker is replaced by a new one on a new socket, one at a time.
    fn replace_all(&mut self) -> io::Result<()> {
        if self.refuse_with_cpu("SIGHUP") {
            return Ok(());
        }
        if self.replacing.is_some() {
            startup::log("SIGHUP: ignored: a replacement is under way");
            return Ok(());
        }
        let serving = |(slot, w): (usize, &Option<Worker>)| w.is_some_and(|w| !w.retiring).then_some(slot);
        self.to_replace = self.slots.iter().enumerate().filter_map(serving).rev().collect();
        startup::log(format!("SIGHUP: replacing {} workers, one at a time", self.to_replace.len()));
        self.replace_next()
    }

    /// Starts the next old worker's successor (in a free slot if there is one, else in its own
    /// once it has gone), and retires the old one.
    fn replace_next(&mut self) -> io::Result<()> {
        let Some(old) = self.to_replace.pop() else { return Ok(()) };
        let free = self.slots.iter().position(Option::is_none);
        if let Some(slot) = free {
            if let Err(e) = self.start(slot, None, None) {
                startup::log(format!("SIGHUP: {e}: the replacement stops, {} serving", self.serving()));
                self.to_replace.clear();
                return Ok(());
            }
        }
        self.retire(old);
        self.replacing = Some((old, free.is_none()));
        Ok(())
    }

    /// SIGINT / SIGTERM, or a worker's failing syscall: every worker stops.
    fn stop_all(&mut self, status: i32) {
        for slot in 0..self.slots.len() {
            self.retire(slot);
        }
        self.stop = Some((Instant::now() + STOP_LIMIT, status));
    }

    /// Collects the workers that ended, and replaces the ones that were not told to stop.
    fn reap(&mut self) -> io::Result<()> {
        while let Some((pid, ended)) = sys::process::reap_any()? {
            let found = self.slots.iter().position(|w| w.is_some_and(|w| w.pid == pid));
            let Some(slot) = found else { continue };
            let worker = self.slots[slot].take().expect("found above");
            self.server.set_slot(slot, EMPTY, 0);
            if let Some(words) = self.server.steering.slot(slot) {
                // Already so unless it died: the program skips the slot until its next worker.
                for w in [word::LIVE, word::BUSY_SINCE, word::OPEN] {
                    words[w].store(0, Relaxed);
                }
            }
            if self.stop.is_some() {
                continue;
            }
            if worker.retiring {
                startup::log(format!("worker {slot} (pid {pid}) exited: {ended}; retired"));
                if let Some((old, start_here)) = self.replacing.filter(|&(old, _)| old == slot) {
                    if start_here {
                        self.start(old, None, None)?;
                    }
                    self.server.count(REPLACED);
                    self.replacing = None;
                    match self.to_replace.is_empty() {
                        true => {
                            startup::log(format!("SIGHUP: every worker replaced: {} serving", self.serving()))
                        }
                        false => self.replace_next()?,
                    }
                }
                continue;
            }
            if ended == Ended::Status(1) {
                // Status 1 is a worker's failing syscall, already named on stderr: a replacement
                // would fail the same way, so the server exits 1 as the other architectures do.
                startup::log(format!("worker {slot} (pid {pid}) exited: {ended}; stopping"));
                self.stop_all(1);
                continue;
            }
            startup::log(format!("worker {slot} (pid {pid}) exited: {ended}; restarting"));
            self.start(slot, None, Some(RESTARTED))?;
        }
        Ok(())
    }
}

/// A listening socket on `addr`, `SO_REUSEPORT`, as `startup::listen` makes it, but an error is
/// returned, not fatal: a supervisor that cannot add a worker serves on with the ones it has.
fn open_socket(config: &Config, addr: SocketAddr) -> io::Result<Listener> {
    let fd = sys::socket::listen_tcp(addr, config.backlog, true)?;
    let pause_after_first = config.pause_accept.map(|length| Arc::new(PauseAfterFirst::new(length)));
    Ok(Listener { addr, fd: Arc::new(fd), pause_after_first })
}

/// What lab-reuseport adds to `/stats`: the steering, the scaling counts, every worker's socket
/// (read from /proc/net/tcp: each process holds only its own), and each worker's state and
/// published load.
pub fn annex(server: &Server) -> loopkit::stats::Annex {
    let (shared, table, addr) = (server.shared, server.steering.table, server.addr.to_string());
    let ipv6 = server.addr.is_ipv6();
    let steering = json!({
        "mode": server.steering.steer.name(),
        "migrate": server.steering.migrate,
        "rule": server.steering.describe(),
    });
    let max_workers = server.max_workers;
    // The kernel caps each socket's backlog at net.core.somaxconn (read once: the sockets are
    // made with the same --backlog).
    let backlog =
        sys::socket::somaxconn().map_or(server.config.backlog, |cap| server.config.backlog.min(cap));
    Box::new(move |report: &mut Value| {
        let slot_word = |slot: usize, i: usize| shared[SLOTS_AT + 2 * slot + i].load(Relaxed);
        let listening = sys::netstat::listening(ipv6).unwrap_or_default();
        let listeners: Vec<Value> = (0..max_workers)
            .filter(|&slot| slot_word(slot, 0) != EMPTY)
            .filter_map(|slot| {
                let socket = listening.iter().find(|l| l.inode == slot_word(slot, 1))?;
                Some(json!({
                    "addr": addr, "backlog": backlog, "accept_queue": socket.accept_queue, "worker": slot,
                }))
            })
            .collect();
        report["listeners"] = json!(listeners);
        report["steering"] = steering.clone();
        let serving = (0..max_workers).filter(|&slot| slot_word(slot, 0) == SERVING).count();
        report["scaling"] = json!({
            "serving": serving, "max_workers": max_workers,
            "added": shared[ADDED].load(Relaxed), "removed": shared[REMOVED].load(Relaxed),
            "replaced": shared[REPLACED].load(Relaxed), "restarted": shared[RESTARTED].load(Relaxed),
        });
        let Some(workers) = report["workers"].as_array_mut() else { return };
        let now = sys::timer::monotonic_ns();
        for entry in workers {
            let Some(slot) = entry["id"].as_u64().map(|id| id as usize).filter(|&s| s < max_workers) else {
                continue;
            };
            entry["state"] = json!(["gone", "serving", "retiring"].get(slot_word(slot, 0) as usize));
            let Some(words) = table.get(slot * word::WORDS..(slot + 1) * word::WORDS) else { continue };
            let get = |w: usize| words[w].load(Relaxed);
            let busy_since = get(word::BUSY_SINCE);
            entry["load"] = json!({
                "live": get(word::LIVE) == 1,
                "busy_ms": if busy_since == 0 { 0 } else { now.saturating_sub(busy_since) / 1_000_000 },
                "open": get(word::OPEN),
                "queued": get(word::SENT).saturating_sub(get(word::TAKEN)),
                "steered": get(word::SENT),
                "migrated_in": get(word::MIGRATED),
            });
        }
    })
}
