//! The counters behind `/stats`.
//!
//! They live in one `MAP_SHARED` mapping (see `sys::shared`), so the same code serves threads of one
//! process and the forked processes of `lab-reuseport`. Each worker owns a 128-byte slot that only it
//! writes (two cache lines, so neighbours never share one and the adjacent-line prefetcher does not
//! couple them either); a plain load-and-store bump is then exact, and costs no locked instruction
//! on the request path. Readers of `/stats` may see a slot mid-update, which is fine for counters.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde_json::json;

pub mod handshakes;

use crate::idempotency::{Bounds, Ledger};
use crate::listener::Listener;

/// What a worker does in its architecture (docs/spec.md, /stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Does everything in one event loop (lab-epoll).
    Loop,
    /// Only accepts connections and hands them on (lab-memcached's main thread).
    Acceptor,
    /// Accepts, reads, parses and writes, but hands execution on (lab-ramcloud).
    Dispatcher,
    /// Reads and executes (memcached, nginx), or only executes (ramcloud).
    Worker,
    /// A whole process that listens, accepts, reads and executes (lab-reuseport).
    Process,
    /// Not a thread: the listener and the connections of a pool whose threads take turns with
    /// every connection (lab-oneshot), counted by whichever thread acts, with atomic adds.
    Shared,
}

impl Role {
    const ALL: [Role; 6] =
        [Role::Loop, Role::Acceptor, Role::Dispatcher, Role::Worker, Role::Process, Role::Shared];

    fn name(self) -> &'static str {
        match self {
            Role::Loop => "loop",
            Role::Acceptor => "acceptor",
            Role::Dispatcher => "dispatcher",
            Role::Worker => "worker",
            Role::Process => "process",
            Role::Shared => "shared",
        }
    }
}

/// The counters of one slot, in slot order.
#[derive(Clone, Copy)]
enum Field {
    Accepted,
    Conns,
    Requests,
    Open,
    Wakeups,
    Rejected,
    /// The pinned CPU plus one; 0: not pinned.
    Cpu,
    /// Index into `Role::ALL` plus one; 0: slot unused.
    Role,
    /// The id of the thread that runs this worker (0: not known yet), for /proc.
    ThreadId,
    /// 1: this worker drives an io_uring (lab-uring), whose counters follow.
    Ring,
    RingSubmissions,
    RingCompletions,
    RingEnters,
    RingEnobufs,
    /// 408s for a request head (`--header-timeout`), and for a body (`--body-timeout`).
    HeaderTimeouts,
    BodyTimeouts,
}

/// u64s per worker slot: 16 × 8 bytes = 128 bytes.
const SLOT: usize = 16;
/// Slot 0 holds the process-wide counters; index 0 is the number of open connections.
const OPEN_TOTAL: usize = 0;

/// The counters of `/proc/net/netstat` that /stats reports as `kernel`: what the kernel did with
/// SYNs and handshakes that never reached accept(), and the requests a closing `SO_REUSEPORT`
/// socket's queue moved to another (`TCPMigrateReq*`: lab-reuseport `--migrate`, or the
/// `tcp_migrate_req` sysctl). Names exactly as the kernel spells them.
pub const KERNEL_COUNTERS: [&str; 8] = [
    "ListenOverflows",
    "ListenDrops",
    "SyncookiesSent",
    "SyncookiesRecv",
    "SyncookiesFailed",
    "TCPReqQFullDrop",
    "TCPMigrateReqSuccess",
    "TCPMigrateReqFailure",
];

/// The server's counters: one slot per worker, plus the process-wide ones.
#[derive(Debug)]
pub struct Stats {
    arch: &'static str,
    /// The server's pid, recorded at start: for lab-reuseport the supervisor's, whichever worker
    /// process renders /stats.
    pid: u32,
    started: Instant,
    max_conns: u64,
    counters: &'static [AtomicU64],
    listeners: Vec<Listener>,
    /// `POST /ledger` and its Idempotency-Key store, made here so that it exists before any fork.
    ledger: Ledger,
    /// What an architecture adds to each report (lab-reuseport: its listeners and steering).
    annex: AnnexCell,
}

/// Adds an architecture's own fields to a `/stats` report, just before it is sent.
pub type Annex = Box<dyn Fn(&mut serde_json::Value) + Send + Sync>;

#[derive(Default)]
struct AnnexCell(OnceLock<Annex>);

impl std::fmt::Debug for AnnexCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Annex" } else { "None" })
    }
}

impl Stats {
    /// Counters for `workers` workers of architecture `arch`, in memory a forked child shares, and
    /// the ledger with its idempotency store bounded by `idempotency`.
    pub fn new(
        arch: &'static str,
        workers: usize,
        max_conns: u64,
        listeners: Vec<Listener>,
        idempotency: &Bounds,
    ) -> io::Result<Arc<Self>> {
        let counters = sys::shared::shared_counters(SLOT * (workers + 1))?;
        let pid = std::process::id();
        let ledger = Ledger::new(idempotency)?;
        let annex = AnnexCell::default();
        Ok(Arc::new(Stats {
            arch,
            pid,
            started: Instant::now(),
            max_conns,
            counters,
            listeners,
            ledger,
            annex,
        }))
    }

    /// Sets what this server adds to every report (once; a second call is ignored).
    pub fn set_annex(&self, annex: Annex) {
        let _ = self.annex.0.set(annex);
    }

    /// The ledger of `POST /ledger`.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The handle worker `id` bumps its own counters through; records its role and CPU.
    pub fn worker(self: &Arc<Self>, id: usize, role: Role, cpu: Option<usize>) -> WorkerStats {
        let shared = role == Role::Shared;
        let worker = WorkerStats { stats: Arc::clone(self), base: SLOT * (id + 1), shared };
        let role_index = Role::ALL.iter().position(|&r| r == role).unwrap_or(0);
        worker.set(Field::Role, role_index as u64 + 1);
        worker.set(Field::Cpu, cpu.map_or(0, |cpu| cpu as u64 + 1));
        worker
    }

    /// Counts a connection about to be opened against `--max-conns`; false means over the limit.
    /// Paired with [`WorkerStats::conn_closed`]. This is the one counter every worker writes, so it is
    /// a real atomic read-modify-write, paid once per connection, never per request.
    pub fn admit(&self) -> bool {
        let open = &self.counters[OPEN_TOTAL];
        if open.fetch_add(1, Relaxed) >= self.max_conns {
            open.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    /// `/stats` as JSON (docs/spec.md). The listeners' queues are read from the kernel now.
    pub fn render(&self) -> Vec<u8> {
        let listeners: Vec<_> = self
            .listeners
            .iter()
            .map(|listener| {
                let queue = sys::socket::listen_queue(listener.fd.as_fd()).ok();
                json!({
                    "addr": listener.addr.to_string(),
                    "backlog": queue.map(|q| q.backlog),
                    "accept_queue": queue.map(|q| q.accept_queue),
                })
            })
            .collect();
        let mut workers = Vec::new();
        let mut totals = [0u64; 4];
        let mut timeouts = [0u64; 2];
        for (id, slot) in self.counters.chunks_exact(SLOT).skip(1).enumerate() {
            let get = |field: Field| slot[field as usize].load(Relaxed);
            let Some(role) = get(Field::Role).checked_sub(1).and_then(|i| Role::ALL.get(i as usize)) else {
                continue;
            };
            // Each counter read once, so that the entries add up to the totals in every report.
            let [accepted, requests, open, rejected] =
                [Field::Accepted, Field::Requests, Field::Open, Field::Rejected].map(get);
            for (total, value) in totals.iter_mut().zip([accepted, requests, open, rejected]) {
                *total += value;
            }
            let late = [Field::HeaderTimeouts, Field::BodyTimeouts].map(get);
            timeouts = [timeouts[0] + late[0], timeouts[1] + late[1]];
            let mut entry = json!({
                "id": id,
                "role": role.name(),
                "cpu": get(Field::Cpu).checked_sub(1),
                "accepted": accepted,
                "conns": get(Field::Conns),
                "requests": requests,
                "open": open,
                "wakeups": get(Field::Wakeups),
                "header_timeouts": late[0],
                "body_timeouts": late[1],
                "context_switches": match get(Field::ThreadId) {
                    0 => None,
                    tid => sys::cpu::voluntary_context_switches(tid).ok(),
                },
            });
            if get(Field::Ring) == 1 {
                entry["ring"] = json!({
                    "submissions": get(Field::RingSubmissions),
                    "completions": get(Field::RingCompletions),
                    "enters": get(Field::RingEnters),
                    "enobufs": get(Field::RingEnobufs),
                });
            }
            workers.push(entry);
        }
        let [accepted, requests, open, rejected] = totals;
        let mut report = json!({
            "arch": self.arch,
            "pid": self.pid,
            "uptime_ms": self.started.elapsed().as_millis() as u64,
            "listeners": listeners,
            "kernel": kernel_counters(),
            "workers": workers,
            "totals": {
                "accepted": accepted, "requests": requests, "open": open, "rejected": rejected,
                "header_timeouts": timeouts[0], "body_timeouts": timeouts[1],
            },
            "ledger": self.ledger.render(),
        });
        if let Some(tls) = handshakes::render() {
            report["tls"] = tls;
        }
        if let Some(annex) = self.annex.0.get() {
            annex(&mut report);
        }
        let mut body = serde_json::to_vec_pretty(&report).unwrap_or_default();
        body.push(b'\n');
        body
    }
}

/// The network namespace's [`KERNEL_COUNTERS`], read now (null if /proc/net/netstat cannot be read).
fn kernel_counters() -> serde_json::Value {
    match sys::netstat::tcp_ext(&KERNEL_COUNTERS) {
        Ok(counters) => counters.into_iter().map(|(name, value)| (name, json!(value))).collect(),
        Err(_) => serde_json::Value::Null,
    }
}

/// One worker's view of the counters: it alone writes its slot.
#[derive(Debug, Clone)]
pub struct WorkerStats {
    stats: Arc<Stats>,
    base: usize,
    /// A [`Role::Shared`] slot, which several threads write: its bumps are atomic adds.
    shared: bool,
}

impl WorkerStats {
    fn counter(&self, field: Field) -> &AtomicU64 {
        &self.stats.counters[self.base + field as usize]
    }

    fn set(&self, field: Field, value: u64) {
        self.counter(field).store(value, Relaxed);
    }

    /// Adds to a counter of this worker's own slot: a load and a store, exact because no other
    /// thread or process writes it; a locked add for a shared slot.
    fn bump(&self, field: Field, n: u64) {
        let counter = self.counter(field);
        match self.shared {
            true => _ = counter.fetch_add(n, Relaxed),
            false => counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed),
        }
    }

    /// How many connections this worker has accepted, and how many it has open now.
    pub fn accepted_and_open(&self) -> (u64, u64) {
        (self.counter(Field::Accepted).load(Relaxed), self.counter(Field::Open).load(Relaxed))
    }

    /// The CPU this worker is pinned to, if any.
    pub fn cpu(&self) -> Option<usize> {
        self.counter(Field::Cpu).load(Relaxed).checked_sub(1).map(|cpu| cpu as usize)
    }

    /// The server's counters as a whole (for `/stats` and `admit`).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// This worker took a connection off an accept queue.
    pub fn accepted(&self) {
        self.bump(Field::Accepted, 1);
    }

    /// This worker turned a connection away (max-conns).
    pub fn rejected(&self) {
        self.bump(Field::Rejected, 1);
    }

    /// This worker now serves a new connection.
    pub fn conn_opened(&self) {
        self.bump(Field::Conns, 1);
        self.bump(Field::Open, 1);
    }

    /// A connection this worker served is closed; also releases its place under `--max-conns`.
    pub fn conn_closed(&self) {
        self.bump(Field::Open, u64::MAX); // wrapping: minus one
        self.stats.counters[OPEN_TOTAL].fetch_sub(1, Relaxed);
    }

    /// This worker executed `n` requests.
    pub fn requests(&self, n: u64) {
        self.bump(Field::Requests, n);
    }

    /// A worker process that replaces a dead one in this slot: the kernel closed the connections
    /// the dead one still counted as open, so their places under `--max-conns` are given back.
    pub fn release_orphaned_conns(&self) {
        let orphaned = self.counter(Field::Open).swap(0, Relaxed);
        self.stats.counters[OPEN_TOTAL].fetch_sub(orphaned, Relaxed);
    }

    /// This worker returned from epoll_wait (or from its queue).
    pub fn wakeup(&self) {
        self.bump(Field::Wakeups, 1);
    }

    /// A connection of this worker got a 408 for a request too slow to arrive.
    pub fn timed_out(&self, late: Late) {
        self.bump(
            match late {
                Late::Head => Field::HeaderTimeouts,
                Late::Body => Field::BodyTimeouts,
            },
            1,
        );
    }

    /// The counters of the io_uring this worker drives (lab-uring), as they stand now: submissions,
    /// completions, `io_uring_enter` calls, receives that found no provided buffer (ENOBUFS).
    pub fn ring(&self, [submissions, completions, enters, enobufs]: [u64; 4]) {
        self.set(Field::Ring, 1);
        self.set(Field::RingSubmissions, submissions);
        self.set(Field::RingCompletions, completions);
        self.set(Field::RingEnters, enters);
        self.set(Field::RingEnobufs, enobufs);
    }

    /// Records that the calling thread runs this worker, so /stats can report its
    /// `context_switches` from /proc (see `startup::start_thread`).
    pub fn bind_to_this_thread(&self) {
        self.set(Field::ThreadId, sys::cpu::thread_id());
    }
}

/// What a 408 from `Session::handle_timeout` was for: counted apart in `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// The request's head (`--header-timeout`, or `--idle-timeout` with it off).
    Head,
    /// The request's body (`--body-timeout`, or `--idle-timeout` before it).
    Body,
}
