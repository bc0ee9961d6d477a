//! Taking connections off a listening socket's accept queue, the same way in every architecture.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http::response::{Connection, Response};
use http::Status;

use crate::config::program_name;
use crate::stats::{Listener, WorkerStats};

/// How long accepting pauses when the process is out of file descriptors.
///
/// NOTE: with no fd left, accept(2) fails with EMFILE and leaves the connection in the accept queue,
/// so the listener stays readable and a loop that retries at once spins at 100% CPU, starving the
/// very connections whose closing would free an fd. Like nginx (`accept_mutex_delay`) and memcached
/// (`accept_new_conns(false)`), we stop accepting for a moment and let the queue wait in the kernel.
pub const EMFILE_PAUSE: Duration = Duration::from_millis(100);

/// `--pause-accept SECS`: once the first connection is accepted, accepting stops for SECS, for every
/// acceptor of the listener in this process. An experiment's knob (lab-exp accept-queue): the accept
/// queue fills up in the kernel while the first connection stays served and can ask for /stats.
#[derive(Debug)]
pub struct PauseAfterFirst {
    length: Duration,
    until: OnceLock<Instant>,
}

impl PauseAfterFirst {
    pub fn new(length: Duration) -> Self {
        PauseAfterFirst { length, until: OnceLock::new() }
    }

    /// Called on every accepted connection; the first starts the pause.
    fn accepted(&self) {
        self.until.get_or_init(|| Instant::now() + self.length);
    }
}

/// One thread's way into a listener: accepts, admits against `--max-conns`, pauses on EMFILE.
pub struct Acceptor {
    listener: Listener,
    worker: WorkerStats,
    paused_until: Option<Instant>,
    last_warning: Option<Instant>,
    /// The socket no longer listens (`stop_listening`, here or in another thread): accept nothing.
    stopped: bool,
    /// This acceptor has seen the `--pause-accept` pause end (and resumed accepting).
    pause_after_first_over: bool,
}

impl Acceptor {
    /// An acceptor for `listener`, counting into `worker`; it binds `worker` to the calling thread,
    /// which an event loop that also owns connections overrides when it builds them.
    pub fn new(listener: Listener, worker: WorkerStats) -> Self {
        worker.bind_to_this_thread();
        Acceptor {
            listener,
            worker,
            paused_until: None,
            last_warning: None,
            stopped: false,
            pause_after_first_over: false,
        }
    }

    /// Call on every return from epoll_wait of a loop that only accepts: counts the wake-up.
    pub fn woke_up(&self) {
        self.worker.wakeup();
    }

    /// The listening socket.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// Accepts until the queue is empty (or the process is out of fds), handing each admitted
    /// connection to `hand_off`; returns how many were handed off.
    pub fn accept_all(&mut self, mut hand_off: impl FnMut(OwnedFd)) -> usize {
        let mut handed_off = 0;
        self.take_resumed();
        while !self.stopped && self.resume_in().is_none() {
            match self.accept_one() {
                Ok(Some(fd)) => {
                    hand_off(fd);
                    handed_off += 1;
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
        handed_off
    }

    /// Accepts one connection. `Ok(None)`: one was taken and turned away (max-conns). `Err`:
    /// nothing to take now (`WouldBlock`), or out of fds (accepting is then paused).
    pub fn accept_one(&mut self) -> io::Result<Option<OwnedFd>> {
        loop {
            match sys::socket::accept(self.listener.fd.as_fd()) {
                Ok(fd) => {
                    self.worker.accepted();
                    if let Some(pause) = &self.listener.pause_after_first {
                        pause.accepted();
                    }
                    if self.worker.stats().admit() {
                        return Ok(Some(fd));
                    }
                    self.worker.rejected();
                    turn_away(&fd);
                    return Ok(None);
                }
                // The client gave up between handshake and accept, or a signal came: try the next.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                // EINVAL: the socket was shut down and listens no more (a drain has begun).
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    self.stopped = true;
                    return Err(e);
                }
                Err(e) => {
                    self.pause(&e);
                    return Err(e);
                }
            }
        }
    }

    /// Stops listening for good: `shutdown(SHUT_RD)` on the socket, for every thread that shares it.
    /// New connections are refused from now on; those still in the accept queue are reset.
    pub fn stop_listening(&mut self) -> io::Result<()> {
        self.stopped = true;
        sys::socket::stop_listening(self.listener.fd.as_fd())
    }

    /// How long accepting is still paused for (EMFILE, or `--pause-accept`), if it is.
    pub fn resume_in(&self) -> Option<Duration> {
        let now = Instant::now();
        let pause_after_first = self.listener.pause_after_first.as_ref().and_then(|pause| pause.until.get());
        [self.paused_until, pause_after_first.copied()]
            .into_iter()
            .flatten()
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
            .max()
    }

    /// True once when a pause has just ended: the listener is edge-triggered, so the kernel will not
    /// report the connections that queued up meanwhile, and the loop must accept them unasked.
    pub fn take_resumed(&mut self) -> bool {
        if self.resume_in().is_some() {
            return false;
        }
        let mut resumed = self.paused_until.take().is_some();
        let pause_after_first = self.listener.pause_after_first.as_ref();
        if !self.pause_after_first_over && pause_after_first.is_some_and(|pause| pause.until.get().is_some())
        {
            self.pause_after_first_over = true;
            resumed = true;
        }
        resumed
    }

    fn pause(&mut self, error: &io::Error) {
        let now = Instant::now();
        self.paused_until = Some(now + EMFILE_PAUSE);
        if self.last_warning.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(5)) {
            self.last_warning = Some(now);
            eprintln!(
                "{}: accept4 {}: {}; pausing accepts for {} ms",
                program_name(),
                self.listener.addr,
                error,
                EMFILE_PAUSE.as_millis()
            );
        }
    }
}

/// Answers a connection over `--max-conns` with a 503 and closes it. One nonblocking write: a fresh
/// socket's send buffer always has room for it, and nothing waits for the client.
fn turn_away(fd: &OwnedFd) {
    let mut response = Response::text(Status::ServiceUnavailable, b"too many open connections");
    response.connection = Connection::Close;
    let mut bytes = Vec::with_capacity(192);
    response.write_to(&mut bytes);
    let _ = sys::socket::write(fd.as_fd(), &bytes);
}
