//! SIGINT / SIGTERM: stop accepting, finish what is in flight for at most [`DRAIN_LIMIT`], exit 0.

use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use crate::conn::{Connections, Executor};

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

    pub fn is_draining(&self) -> bool {
        self.deadline.is_some()
    }

    /// The time left, as a wait timeout (`None`: not draining).
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Draining, and either every connection is closed or the time is up.
    pub fn is_done<E: Executor>(&self, conns: &Connections<E>) -> bool {
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
