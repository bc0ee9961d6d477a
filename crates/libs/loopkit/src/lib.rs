//! What every acceptlab server shares, so that each architecture's `main.rs` holds only its topology.
//!
//! A request's way through these modules:
//!
//! 1. [`config`] reads the common command line; [`startup`] opens the [`listener`] socket, prints
//!    `listening on IP:PORT` and the warnings, and pins each thread where it starts.
//! 2. [`accept`] takes connections off a listener's accept queue: max-conns answered with 503, EMFILE
//!    answered by pausing instead of spinning, the end of the pause arriving as a listener event.
//! 3. [`session`] is the connection core with no I/O: one [`session::Session`] per connection takes
//!    the bytes received and the time, frames and routes requests (with the `http` crate), hands each
//!    to an executor, keeps the responses in order, and says what to send, when its next deadline is
//!    and whether to pause reading, linger or close. [`conn`] is its epoll driver: the connections of
//!    one event loop, their fds, edge-triggered readiness and the loop's timers;
//!    [`uring_conn`] is its io_uring driver, where the kernel reports what it has done (accepted,
//!    received into a provided buffer, sent) instead of what is ready.
//! 4. [`handlers`] executes a request on whichever thread is given it: `/`, `/spin`, `/sleep`, `/echo`,
//!    `/stats`, and `/ledger` through [`idempotency`] (the ledger and its Idempotency-Key store).
//! 5. [`drain`] times the graceful stop on SIGINT / SIGTERM.
//! 6. [`stats`] keeps the per-worker counters in memory that threads, and forked processes, share.
//! 7. [`tls`] sits between a driver's transport and the session when the server has a certificate
//!    (`--tls-cert`): the handshake, then records decrypted into the session and its output
//!    encrypted, with no I/O of its own.
//! 8. [`dispatch`] picks the worker for a new connection where an acceptor hands them out
//!    (lab-memcached): round-robin, or by each worker's recent busy time.
#![forbid(unsafe_code)]

pub mod accept;
pub mod config;
pub mod conn;
pub mod dispatch;
pub mod drain;
pub mod handlers;
pub mod idempotency;
pub mod listener;
pub mod session;
pub mod slots;
pub mod startup;
pub mod stats;
pub mod tls;
pub mod uring_conn;

/// Tokens an event loop reserves for its own fds; connection tokens never reach these values.
pub mod token {
    /// The listening socket.
    pub const LISTENER: u64 = u64::MAX;
    /// The signalfd for SIGINT / SIGTERM.
    pub const SIGNALS: u64 = u64::MAX - 1;
    /// The loop's eventfd, written by other threads to wake it.
    pub const WAKER: u64 = u64::MAX - 2;
    /// A timerfd the loop's threads share (lab-oneshot's sweep of the connections no thread owns).
    pub const TIMER: u64 = u64::MAX - 3;

    /// A connection's token: its slot's index in the low 32 bits and the slot's generation above,
    /// so that a reply for a connection since closed (its slot reused) carries the old generation
    /// and is dropped. Every slot table keeps its generations below 2^31 (the io_uring driver's
    /// below 2^27, clear of its tags' kind bits), so no connection's token reaches the reserved ones.
    pub fn token_of(index: usize, generation: u32) -> u64 {
        (u64::from(generation) << 32) | index as u64
    }

    /// The slot index a connection's token names.
    pub fn index_of(token: u64) -> usize {
        (token & u64::from(u32::MAX)) as usize
    }
}

/// The soonest of several optional timeouts (`None`: wait without limit).
pub fn earliest(
    timeouts: impl IntoIterator<Item = Option<std::time::Duration>>,
) -> Option<std::time::Duration> {
    timeouts.into_iter().flatten().min()
}
