//! SIGINT / SIGTERM: stop accepting, finish what is in flight for at most [`DRAIN_LIMIT`], exit 0.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sys::eventfd::Waker;
use sys::signal::ShutdownSignals;

use crate::accept::Acceptor;
use crate::conn::{Connections, LoopExecutor};

/// How long a draining loop waits for the requests in flight before it exits anyway.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// One event loop's drain: not started, or running until a deadline.
#[derive(Debug, Default)]
pub struct Drain {
    deadline: Option<Instant>,
}

impl Drain {
    /// Starts draining; false if it had already started.
    pub fn begin(&mut self) -> bool {
        if self.deadline.is_some() {
            return false;
        }
        self.deadline = Some(Instant::now() + DRAIN_LIMIT);
        enforce_drain_limit();
        true
    }

    /// The signalfd is readable: if it holds SIGINT or SIGTERM and this loop is not draining yet,
    /// begins the drain of a loop that accepts for itself: stops `acceptor` listening, closes the
    /// idle connections and lets the others finish what they have in flight. True if it began.
    pub fn on_signal<E: LoopExecutor>(
        &mut self,
        signals: &ShutdownSignals,
        acceptor: &mut Acceptor,
        conns: &mut Connections<E>,
    ) -> io::Result<bool> {
        if signals.read()?.is_none() || !self.begin() {
            return Ok(false);
        }
        crate::startup::log("draining: no new connections; finishing the requests in flight");
        acceptor.stop_listening()?;
        conns.begin_drain();
        Ok(true)
    }

    pub fn is_draining(&self) -> bool {
        self.deadline.is_some()
    }

    /// The time left, as a wait timeout (`None`: not draining).
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Draining, and either every connection is closed or the time is up.
    pub fn is_done<E: LoopExecutor>(&self, conns: &Connections<E>) -> bool {
        self.deadline.is_some_and(|at| conns.is_empty() || Instant::now() >= at)
    }
}

/// Makes sure this process exits 0 by [`DRAIN_LIMIT`] after its first drain began, whatever is still
/// executing: a loop only sees its deadline between requests, and a thread blocked in a long one
/// (a `/sleep`, a queue of them on a worker) would otherwise keep the process alive past it.
fn enforce_drain_limit() {
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(|| {
        let started = thread::Builder::new().name("drain-limit".into()).spawn(|| {
            thread::sleep(DRAIN_LIMIT);
            crate::startup::log("drain limit reached: exiting with requests still executing");
            std::process::exit(0);
        });
        if let Err(e) = started {
            crate::startup::log(format!("spawn the drain-limit thread: {e}"));
        }
    });
}

/// The drain of a pool of threads that share every connection and own none (lab-oneshot): it
/// counts the open connections, and once draining, the last one to close makes its eventfd
/// readable. Registered level-triggered and never read, that wakes every thread, each to exit.
#[derive(Debug)]
pub struct PoolDrain {
    drain: Mutex<Drain>,
    draining: AtomicBool,
    open: AtomicUsize,
    done: Waker,
}

impl PoolDrain {
    pub fn new() -> io::Result<Self> {
        let done = Waker::new()?;
        Ok(PoolDrain { drain: Mutex::default(), draining: AtomicBool::new(false), open: 0.into(), done })
    }

    pub fn opened(&self) {
        self.open.fetch_add(1, SeqCst);
    }

    /// One connection fewer; the last one of a drain signals the end.
    pub fn closed(&self) {
        // SeqCst here and in `begin`: whichever of the two comes last sees the other's write, so
        // a drain that begins as the last connection closes is never missed by both.
        if self.open.fetch_sub(1, SeqCst) == 1 && self.draining.load(SeqCst) {
            let _ = self.done.wake();
        }
    }

    /// Starts draining (false if it had begun); with no connection open, it is already done.
    pub fn begin(&self) -> io::Result<bool> {
        if !self.drain.lock().begin() {
            return Ok(false);
        }
        self.draining.store(true, SeqCst);
        if self.open.load(SeqCst) == 0 {
            self.done.wake()?;
        }
        Ok(true)
    }
}

impl AsFd for PoolDrain {
    /// Readable once the drain is done.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.done.as_fd()
    }
}
