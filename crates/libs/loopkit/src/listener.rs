//! A listening socket, as every thread that accepts on it and `/stats` see it.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A listening socket and the address it is bound to (the real port, when port 0 was asked for).
#[derive(Debug, Clone)]
pub struct Listener {
    pub addr: SocketAddr,
    pub fd: Arc<OwnedFd>,
    /// `--pause-accept`, shared by every acceptor of this socket in this process.
    pub pause_after_first: Option<Arc<PauseAfterFirst>>,
}

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
    pub(crate) fn accepted(&self) {
        self.until.get_or_init(|| Instant::now() + self.length);
    }

    /// When the pause ends, once the first connection has started it.
    pub(crate) fn until(&self) -> Option<&Instant> {
        self.until.get()
    }
}
