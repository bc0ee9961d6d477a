//! Taking connections off a listening socket's accept queue, the same way in every architecture.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use http1::response::{Connection, Response};
use http1::Status;
use sys::epoll::{Poller, READABLE_EDGE};
use sys::timer::Timer;

use crate::config::program_name;
use crate::listener::Listener;
use crate::stats::WorkerStats;
use crate::token::LISTENER;

/// How long accepting pauses when the process is out of file descriptors.
///
/// NOTE: with no fd left, accept(2) fails with EMFILE and leaves the connection in the accept queue,
/// so the listener stays readable and a loop that retries at once spins at 100% CPU, starving the
/// very connections whose closing would free an fd. Like nginx (`accept_mutex_delay`) and memcached
/// (`accept_new_conns(false)`), we stop accepting for a moment and let the queue wait in the kernel.
pub const EMFILE_PAUSE: Duration = Duration::from_millis(100);

/// Debug builds only: with `ACCEPTLAB_FAULT=panic-on-accept` in the environment, the thread that
/// accepts a connection panics: lab-memcached's acceptor, lab-ramcloud's dispatcher, the loop of
/// the others. With `GET /debug/panic` (the threads that execute requests), the tests drive every
/// kind of thread to the panic policy (`startup::exit_on_panic`). Release builds do not have it.
#[cfg(debug_assertions)]
fn injected_fault() {
    if std::env::var_os("ACCEPTLAB_FAULT").is_some_and(|fault| fault == "panic-on-accept") {
        panic!("ACCEPTLAB_FAULT=panic-on-accept: a fault injected on purpose (debug builds only)");
    }
}

/// One thread's way into a listener: accepts, admits against `--max-conns`, pauses on EMFILE (and
/// for `--pause-accept`).
pub struct Acceptor {
    listener: Listener,
    worker: WorkerStats,
    /// Fires when a pause ends. It is watched under the listener's token, so the end of a pause
    /// reaches the loop as a listener event: an edge-triggered listener would not report the
    /// connections that queued meanwhile, and no loop has to remember to look.
    /// `None` for a loop that times its pauses itself ([`Acceptor::timed_by_caller`]).
    resume: Option<Timer>,
    resume_watched: bool,
    /// The end of the pause the timer is armed for.
    resume_armed: Option<Instant>,
    /// The end of the EMFILE pause, if one has begun.
    error_pause_until: Option<Instant>,
    last_warning: Option<Instant>,
    /// The socket no longer listens (`stop_listening`, here or in another thread): accept nothing.
    stopped: bool,
}

impl Acceptor {
    /// An acceptor for `listener`, counting into `worker`. Its resume timer is made now: once the
    /// process is out of fds, it could not be.
    pub fn new(listener: Listener, worker: WorkerStats) -> io::Result<Self> {
        let resume = Timer::new()?;
        Ok(Acceptor::with_resume(listener, worker, Some(resume)))
    }

    /// An acceptor for a loop that does not accept through [`Acceptor::accept_all`] but hands each
    /// connection the kernel accepted to [`Acceptor::admit`], and times the end of a pause itself
    /// from [`Acceptor::paused_until`] (lab-uring: a ring timeout). It needs no resume timer, so
    /// it costs no file descriptor.
    pub fn timed_by_caller(listener: Listener, worker: WorkerStats) -> Self {
        Acceptor::with_resume(listener, worker, None)
    }

    fn with_resume(listener: Listener, worker: WorkerStats, resume: Option<Timer>) -> Self {
        Acceptor {
            listener,
            worker,
            resume,
            resume_watched: false,
            resume_armed: None,
            error_pause_until: None,
            last_warning: None,
            stopped: false,
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

    /// Accepts until the queue is empty, handing each admitted connection to `hand_off`. `poller` is
    /// the loop's epoll, where the listener is watched: a pause (EMFILE, `--pause-accept`) arms the
    /// resume timer there and ends as a listener event. While paused, or once stopped, it accepts
    /// nothing.
    pub fn accept_all(&mut self, poller: &Poller, mut hand_off: impl FnMut(OwnedFd)) {
        while !self.stopped {
            if let Some(until) = self.paused_until() {
                self.resume_at(poller, until);
                return;
            }
            match self.accept_one() {
                Ok(Some(fd)) => hand_off(fd),
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) if self.stopped => return,
                Err(e) => self.pause_after_error(&e),
            }
        }
    }

    /// Accepts one connection. `Ok(None)`: one was taken and turned away (max-conns). `Err`:
    /// nothing to take now (`WouldBlock`), the socket no longer listens (`stopped` is then set), or
    /// out of fds.
    fn accept_one(&mut self) -> io::Result<Option<OwnedFd>> {
        loop {
            match sys::socket::accept(self.listener.fd.as_fd()) {
                Ok(fd) => return Ok(self.admit(fd)),
                // The client gave up between handshake and accept, or a signal came: try the next.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EINVAL: the socket was shut down and listens no more (a drain has begun).
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    self.stopped = true;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A connection the kernel accepted (here, or for a completion loop, by a multishot accept):
    /// counted, admitted against `--max-conns`, or answered 503 and closed (`None`). Starts the
    /// `--pause-accept` pause with the first one.
    pub fn admit(&mut self, fd: OwnedFd) -> Option<OwnedFd> {
        #[cfg(debug_assertions)]
        injected_fault();
        self.worker.accepted();
        if let Some(pause) = &self.listener.pause_after_first {
            pause.accepted();
        }
        if self.worker.stats().admit() {
            return Some(fd);
        }
        self.worker.rejected();
        turn_away(&fd);
        None
    }

    /// Stops listening for good: `shutdown(SHUT_RD)` on the socket, for every thread that shares it.
    /// New connections are refused from now on; those still in the accept queue are reset.
    pub fn stop_listening(&mut self) -> io::Result<()> {
        self.stopped = true;
        match sys::socket::stop_listening(self.listener.fd.as_fd()) {
            // Another thread stopped it already (a second SIGTERM read there): stopping is idempotent.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            result => result,
        }
    }

    /// Whether accepting is paused now (out of fds, or `--pause-accept`), or stopped for good: a
    /// loop whose listener is armed once per event re-arms it only when neither holds, and the
    /// resume timer's event (under the listener's token) brings it back.
    pub fn paused_or_stopped(&self) -> bool {
        self.stopped || self.paused_until().is_some()
    }

    /// When the pause in force ends (out of fds, or `--pause-accept`); `None`: accepting.
    pub fn paused_until(&self) -> Option<Instant> {
        let now = Instant::now();
        let after_first = self.listener.pause_after_first.as_ref().and_then(|pause| pause.until());
        [self.error_pause_until, after_first.copied()]
            .into_iter()
            .flatten()
            .filter(|&until| until > now)
            .max()
    }

    /// Arms the resume timer for `until`, once per pause, and watches it under the listener's token.
    fn resume_at(&mut self, poller: &Poller, until: Instant) {
        if self.resume_armed == Some(until) {
            return;
        }
        let Some(resume) = &self.resume else { return };
        let mut armed = resume.set_after(until.saturating_duration_since(Instant::now()));
        if armed.is_ok() && !self.resume_watched {
            armed = poller.add(resume.as_fd(), LISTENER, READABLE_EDGE);
            self.resume_watched = armed.is_ok();
        }
        match armed {
            Ok(()) => self.resume_armed = Some(until),
            // Then the pause ends at the first listener event after `until`.
            Err(e) => eprintln!("{}: {e}", program_name()),
        }
    }

    /// EMFILE (or another failure of accept4 that leaves the connection queued): pause.
    pub fn pause_after_error(&mut self, error: &io::Error) {
        let now = Instant::now();
        self.error_pause_until = Some(now + EMFILE_PAUSE);
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
