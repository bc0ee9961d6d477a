//! SIGINT / SIGTERM: stop accepting, finish what is in flight for at most [`DRAIN_LIMIT`], exit 0.

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
