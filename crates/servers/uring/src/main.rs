//! lab-uring: one io_uring per thread, and the kernel tells each ring what it has *done* — accepted a
//! connection, received bytes into a buffer lent in advance, sent — instead of what is *ready*.
//! `--workers 1` is lab-epoll's completion twin; `--workers N` runs N rings, one per thread.
//!
//! ```text
//!   SYN ─► kernel: SO_REUSEPORT hash picks ring i's socket (--listen shared: one socket, one queue)
//!          └─► accept queue i ─► multishot accept ───────────┐ (the kernel is the acceptor: one
//!                                                           ▼  submission, a completion per client)
//!   thread i: io_uring_enter ◄── completion queue: accepted fd │ bytes in provided buffer b │ sent n
//!       │ submit: recv multishot (once per connection), send, close, cancel, signalfd/eventfd read
//!       └─► session.receive(b) ─► execute ─► copy output ─► send          (loopkit::uring_conn)
//! ```
//!
//! Completion model where the others name a trigger mode: one multishot accept per listener, one
//! multishot receive per connection, each posting a completion per event until it ends (error,
//! end of stream, ENOBUFS, cancel), and one `io_uring_enter` both submitting and waiting (with
//! `--batch-wait-us`, for up to that long for more than one completion: fewer calls, not cheaper).
//!
//! Trade-off: the system calls per request fall to a fraction of one — every submission of a batch
//! goes in with the wait — and an idle connection holds no receive buffer, only a slot in the ring's
//! shared pool once bytes arrive. But the kernel now does the reading before anyone asked: the bytes
//! the session did not want yet must be held here, a client that never reads must have its receive
//! cancelled, and the platform must allow io_uring at all (kernel ≥ 6.0 for these opcodes,
//! `kernel.io_uring_disabled` 0, no seccomp profile that blocks it, as container defaults do).
//! Accepting is still a queue the kernel fills: if the ring is not reaped, the multishot accept
//! takes connections only as fast as task work runs, and the accept queue overflows as it does
//! under epoll (lab-exp uring-accept-queue).
//! With --tls-cert the ring that accepted a connection does its handshake, on the ring's thread.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use loopkit::accept::Acceptor;
use loopkit::config::{self, CommonArgs, Config};
use loopkit::drain::Drain;
use loopkit::startup::{self, fatal};
use loopkit::stats::{Role, WorkerStats};
use loopkit::uring_conn::{is_connection_tag, UringConnections, IGNORED};
use sys::eventfd::Waker;
use sys::signal::ShutdownSignals;
use sys::uring::{Errno, Op, Ring};

/// The loop's own tags (a connection's have their top bits set: `loopkit::uring_conn`): the accept,
/// the signalfd and eventfd reads, the end of an accept pause (EMFILE, `--pause-accept`).
const LISTENER_TAG: u64 = 1;
const SIGNALS_TAG: u64 = 2;
const WAKER_TAG: u64 = 3;
const RESUME: u64 = 4;
/// Submission queue entries per ring (the completion queue has four times as many).
const ENTRIES: u32 = 4096;
/// Bytes of each provided buffer: one receive completion carries at most this much.
const BUFFER_SIZE: usize = 4096;

/// How the rings share the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Listen {
    /// One SO_REUSEPORT socket per ring: the kernel hashes each connection to one ring's queue.
    Reuseport,
    /// One socket, a multishot accept on it in every ring: whichever ring the kernel wakes takes it.
    Shared,
}

/// lab-uring: one io_uring per thread; accepting and reading by completion.
#[derive(Parser)]
#[command(name = "lab-uring", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// How the rings share the port.
    #[arg(long, value_enum, default_value_t = Listen::Reuseport)]
    listen: Listen,
    /// Receive buffers each ring lends the kernel (a power of two up to 32768), 4 KiB each.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = parse_buffers)]
    buffers: u16,
    /// Batch wait: each io_uring_enter waits up to this long for a receive from every connection not
    /// just answered, then returns with what has come (Linux 6.12+; 0, the default: at the first).
    #[arg(long, value_name = "MICROS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=1_000_000))]
    batch_wait_us: u64,
}

fn parse_buffers(text: &str) -> Result<u16, String> {
    let n = text.parse::<u16>().ok().filter(|n| n.is_power_of_two() && *n <= 32768);
    n.ok_or_else(|| format!("not a power of two from 1 to 32768: {text:?}"))
}

/// What the rings share: the signalfd (ring 0 reads it) and one eventfd per ring to wake it.
struct Shared {
    signals: ShutdownSignals,
    wakers: Vec<Waker>,
}

fn main() {
    let Cli { common, listen, buffers, batch_wait_us } = config::parse_or_exit();
    let config = startup::configure(&common, None);
    // Before anything listens: a platform without io_uring gets one line and exit 1.
    let platform = sys::uring::probe().unwrap_or_else(|e| fatal(e));
    let signals = ShutdownSignals::new().unwrap_or_else(|e| fatal(e));
    let first = startup::listen(&config, config.addr, listen == Listen::Reuseport);
    let listeners: Vec<_> = match listen {
        Listen::Shared => vec![first],
        Listen::Reuseport => std::iter::once(first.clone())
            .chain((1..config.workers).map(|_| startup::listen(&config, first.addr, true)))
            .collect(),
    };
    let stats = startup::stats("uring", config.workers, &config, listeners.clone());
    let (workers, listen_mode) = (config.workers, config::value_name(listen));
    startup::log(format_args!(
        "{workers} rings ({platform}), --listen {listen_mode}, --buffers {buffers} × \
        {BUFFER_SIZE} bytes per ring, --batch-wait-us {batch_wait_us}"
    ));
    let wakers = (0..config.workers).map(|_| Waker::new().unwrap_or_else(|e| fatal(e))).collect();
    let shared = Arc::new(Shared { signals, wakers });
    // Every ring is made (an fd each) before `listening on`: a crowd arriving then under a low fd
    // limit must find accepting paused (EMFILE), not a ring that cannot be made.
    let ready = Arc::new(Barrier::new(config.workers + 1));
    let threads: Vec<_> = (0..config.workers)
        .map(|id| {
            let worker = stats.worker(id, Role::Loop, config.cpu_for(id));
            let listener = listeners[id % listeners.len()].clone();
            let acceptor = Acceptor::timed_by_caller(listener, worker.clone());
            let (config, shared, ready) = (config.clone(), Arc::clone(&shared), Arc::clone(&ready));
            thread::spawn(move || {
                startup::start_thread(&worker);
                // The ring is made here: SINGLE_ISSUER ties it to the thread that makes it.
                let ring = ring(buffers, Duration::from_micros(batch_wait_us)).unwrap_or_else(|e| fatal(e));
                ready.wait();
                worker_main(&config, ring, acceptor, &shared, id, worker).unwrap_or_else(|e| fatal(e));
            })
        })
        .collect();
    ready.wait();
    startup::announce(listeners[0].addr);
    startup::join_all(threads);
}

fn ring(buffers: u16, batch_wait: Duration) -> io::Result<Ring> {
    let mut ring = Ring::new(ENTRIES)?;
    ring.provide_buffers(buffers, BUFFER_SIZE)?;
    ring.set_batch_wait(batch_wait);
    Ok(ring)
}

/// Ring `id`'s loop: its listener's multishot accept, its waker (ring 0: the signalfd too), and
/// every connection it accepted, all as completions of one ring.
fn worker_main(
    config: &Config,
    ring: Ring,
    mut acceptor: Acceptor,
    shared: &Shared,
    id: usize,
    worker: WorkerStats,
) -> io::Result<()> {
    let mut conns = UringConnections::new(config, ring, worker);
    let mut accept = Accepting { op: None, cancelled: false, resume_armed: false };
    accept.arm(&mut conns, &acceptor)?;
    let waker = &shared.wakers[id];
    conns.ring().read(waker.as_fd(), 8, WAKER_TAG)?;
    if id == 0 {
        conns.ring().read(shared.signals.as_fd(), 128, SIGNALS_TAG)?;
    }
    let mut drain = Drain::default();
    loop {
        conns.wait(drain.time_left())?;
        while let Some(completion) = conns.ring().next_completion() {
            match completion.tag {
                tag if is_connection_tag(tag) => conns.complete(completion),
                LISTENER_TAG => {
                    if !completion.more {
                        accept.op = None;
                    }
                    match (completion.take_fd(), completion.result) {
                        // Over --max-conns, `admit` answers 503 and closes it.
                        (Some(fd), _) => acceptor.admit(fd).into_iter().for_each(|fd| conns.add(fd)),
                        // Out of fds (the connection stays queued): pause, as every loop here does.
                        (None, Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM))) => {
                            acceptor.pause_after_error(&io::Error::from(e))
                        }
                        (None, _) => {} // cancelled, aborted, or no longer listening
                    }
                    if !drain.is_draining() {
                        accept.arm(&mut conns, &acceptor)?;
                    }
                }
                RESUME => {
                    accept.resume_armed = false;
                    if !drain.is_draining() {
                        accept.arm(&mut conns, &acceptor)?;
                    }
                }
                SIGNALS_TAG | WAKER_TAG if completion.result.is_ok() && drain.begin() => {
                    if completion.tag == SIGNALS_TAG {
                        startup::log("draining: no new connections; finishing the requests in flight");
                        shared.wakers.iter().for_each(|waker| _ = waker.wake());
                        // the others drain too
                    }
                    acceptor.stop_listening()?;
                    if let Some(op) = accept.op {
                        conns.ring().cancel(op, IGNORED)?;
                    }
                    conns.begin_drain();
                }
                _ => {}
            }
        }
        conns.tick();
        if drain.is_draining() && (conns.is_empty() || drain.time_left() == Some(Duration::ZERO)) {
            return Ok(());
        }
    }
}

/// The state of a ring's multishot accept.
struct Accepting {
    /// The multishot accept, while armed.
    op: Option<Op>,
    /// A cancel of `op` has been submitted (a pause began).
    cancelled: bool,
    /// A timeout is armed for the end of the pause.
    resume_armed: bool,
}

impl Accepting {
    /// Keeps the multishot accept armed while accepting, and cancelled during a pause (EMFILE,
    /// `--pause-accept`), whose end a ring timeout brings back.
    fn arm(&mut self, conns: &mut UringConnections, acceptor: &Acceptor) -> io::Result<()> {
        match acceptor.paused_until() {
            Some(until) => {
                if let (Some(op), false) = (self.op, self.cancelled) {
                    conns.ring().cancel(op, IGNORED)?;
                    self.cancelled = true;
                }
                if !self.resume_armed {
                    conns.ring().timeout(until.saturating_duration_since(Instant::now()), RESUME)?;
                    self.resume_armed = true;
                }
            }
            None if self.op.is_none() && !acceptor.paused_or_stopped() => {
                self.op = Some(conns.ring().accept_multishot(acceptor.listener().fd.as_fd(), LISTENER_TAG)?);
                self.cancelled = false;
            }
            None => {}
        }
        Ok(())
    }
}
