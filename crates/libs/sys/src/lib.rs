//! The syscalls acceptlab's servers are made of, one small function per recipe, like Redis's `anet.c`.
//!
//! A tour, in the order a connection meets them:
//!
//! - [`socket`]: `socket(2)` + `bind(2)` + `listen(2)` for a listening socket (with `SO_REUSEPORT` when
//!   every worker process wants its own accept queue), `accept4(2)`, `TCP_NODELAY`, `TCP_INFO` on a
//!   listener (the live length of its accept queue), `net.core.somaxconn`, and `read(2)` / `write(2)`.
//! - [`epoll`]: the readiness API every event loop here waits in, with a `u64` token per registration.
//! - [`eventfd`]: a counter another thread can bump to wake a loop (memcached's connection hand-off).
//! - [`signal`]: SIGINT / SIGTERM delivered as a readable fd, so shutdown is just another event; or
//!   caught by a handler that writes them into a pipe, for a program whose children must not inherit
//!   a blocked mask (lab-bench).
//! - [`timer`]: a `timerfd`, so that a deadline arrives as an epoll event (the end of an EMFILE pause,
//!   the load generator's open-loop schedule).
//! - [`cpu`], [`rlimit`], [`shared`]: the `--cpus` list and pinning threads to CPUs, raising the fd
//!   limit, and counters in memory that forked worker processes share.
//! - [`uring`]: io_uring, the completion API (lab-uring): a ring with its operations in flight and a
//!   ring of provided buffers; multishot accept and receive, send, close, cancel, timeouts, reads.
//! - [`client`]: the other end, for the load generator: nonblocking `connect(2)` from a chosen source
//!   address, `SO_ERROR`, `SO_LINGER` 0.
//! - [`netns`]: a network namespace of one's own, with its loopback up, for lab-exp's experiments.
//! - [`netstat`]: the namespace's TCP counters from `/proc/net/netstat` and `/proc/net/snmp`.
//! - [`bpf`]: `bpf(2)` for a `SO_REUSEPORT` group: a `SK_REUSEPORT` program that picks each new
//!   connection's socket (and where a closing socket's queue goes), its maps, and an assembler.
//! - [`process`]: `fork(2)` for a single-threaded supervisor, and what it needs to keep its worker
//!   processes: dying with the parent, reaping, and signalling them.
//!
//! Every error names the call that failed and what it was called on (`bind 127.0.0.1:8080: Address
//! already in use`) and keeps its [`std::io::ErrorKind`], so callers can still match `WouldBlock`.
//! The hot-path calls (`read`, `write`, `accept`) return bare errno errors instead: formatting a message
//! for every `EAGAIN` would cost more than the syscall.
//!
//! This is the only crate in the workspace allowed `unsafe`; nix's safe wrappers are used wherever nix
//! has the call, and each remaining `unsafe` block says why it is sound in a `// SAFETY:` line.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod bpf;
pub mod client;
pub mod cpu;
pub mod epoll;
pub mod eventfd;
pub mod netns;
pub mod netstat;
pub mod process;
pub mod rlimit;
pub mod shared;
pub mod signal;
pub mod socket;
pub mod timer;
pub mod uring;

use std::fmt::Display;
use std::io;

use nix::errno::Errno;

/// Turns an errno from `call` on `target` into an `io::Error` that reads `call target: reason`.
pub(crate) fn os_error(call: &str, target: impl Display, errno: Errno) -> io::Error {
    io::Error::new(io::Error::from(errno).kind(), format!("{call} {target}: {}", errno.desc()))
}

/// `os_error` for the errno the last libc call left behind.
pub(crate) fn last_os_error(call: &str, target: impl Display) -> io::Error {
    os_error(call, target, Errno::last())
}
