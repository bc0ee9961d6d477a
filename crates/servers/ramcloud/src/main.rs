//! lab-ramcloud: one dispatcher thread listens, accepts, reads, parses and writes every connection;
//! each complete *request* goes onto one shared queue that N worker threads take from, and comes
//! back as a response for the dispatcher to write — RAMCloud's dispatch thread and worker pool
//! (`Dispatch`, `WorkerManager` in RAMCloud's `src/`).
//!
//! ```text
//!   SYN ─► SYN queue ─► accept queue ─► dispatcher (one epoll: listener, signalfd, eventfd,
//!          (kernel)       (kernel)      every connection): accept, read, parse ... write
//!                                          │ dispatch_request           ▲ responses queue
//!                                          ▼ one central queue           │ + notify_dispatcher
//!                                   worker_main  worker_main  worker_main (execute only)
//! ```
//!
//! Trigger mode: edge-triggered (see `loopkit::conn`).
//!
//! Trade-off: load is balanced per request, not per connection — a `/sleep` holds one worker while
//! the others go on serving everyone, and pipelined requests of one connection run in parallel
//! (answered in order all the same). The price: every request crosses threads twice, and the one
//! dispatcher does all the I/O for everyone, so it is the ceiling on throughput.
//! With --tls-cert it does every handshake and every record's crypto too; workers only execute.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;

use clap::Parser;
use crossbeam_channel::{Receiver, Sender};
use loopkit::accept::Acceptor;
use loopkit::config::{self, CommonArgs, Config};
use loopkit::conn::{Connections, Executed, OpenConnections, Request};
use loopkit::drain::Drain;
use loopkit::handlers;
use loopkit::startup::{self, fatal};
use loopkit::stats::{Role, WorkerStats};
use loopkit::token::{LISTENER, SIGNALS, WAKER};
use sys::epoll::{Events, Poller, READABLE_EDGE};
use sys::eventfd::Waker;
use sys::signal::ShutdownSignals;

/// lab-ramcloud: one dispatcher thread does all I/O; N worker threads execute requests.
#[derive(Parser)]
#[command(name = "lab-ramcloud", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

/// A response on its way back to the dispatcher: for which connection, for which of its requests.
struct Reply {
    token: u64,
    seq: u64,
    bytes: Vec<u8>,
}

/// The workers' way back to the dispatcher: a queue, and an eventfd to wake its epoll.
struct Replies {
    queue: Sender<Reply>,
    waker: Waker,
    /// Set when the dispatcher has been woken and has not yet drained the queue.
    woken: AtomicBool,
    /// Which of the dispatcher's connections are open: a worker skips the requests of a closed one.
    open: Arc<OpenConnections>,
}

fn main() {
    let cli: Cli = config::parse_or_exit();
    let config = startup::configure(&cli.common, None);
    let signals = ShutdownSignals::new().unwrap_or_else(|e| fatal(e));
    let listener = startup::listen(&config, config.addr, false);
    let stats = startup::stats("ramcloud", config.workers + 1, &config, vec![listener.clone()]);
    let (requests, inbox) = crossbeam_channel::unbounded::<Request<'static>>();
    let (reply_queue, replies_in) = crossbeam_channel::unbounded::<Reply>();
    let waker = Waker::new().unwrap_or_else(|e| fatal(e));
    let open = OpenConnections::new(config.max_conns);
    let replies = Arc::new(Replies { queue: reply_queue, waker, woken: AtomicBool::new(false), open });
    let threads: Vec<_> = (1..=config.workers)
        .map(|id| {
            let worker = stats.worker(id, Role::Worker, config.cpu_for(id));
            let (inbox, replies) = (inbox.clone(), Arc::clone(&replies));
            thread::spawn(move || {
                startup::start_thread(&worker);
                worker_main(&inbox, &replies, &worker);
            })
        })
        .collect();
    let dispatcher = stats.worker(0, Role::Dispatcher, config.cpu_for(0));
    startup::start_thread(&dispatcher);
    let acceptor = Acceptor::new(listener.clone(), dispatcher.clone()).unwrap_or_else(|e| fatal(e));
    startup::announce(listener.addr);
    // When it returns it drops `requests`, closing the queue: the workers' recv fails and they return.
    dispatcher_main(&config, acceptor, &signals, &replies, &replies_in, requests, dispatcher)
        .unwrap_or_else(|e| fatal(e));
    startup::join_all(threads);
}

/// The dispatcher thread: every socket, one epoll; every request it reads goes to `dispatch_request`.
fn dispatcher_main(
    config: &Config,
    mut acceptor: Acceptor,
    signals: &ShutdownSignals,
    replies: &Replies,
    replies_in: &Receiver<Reply>,
    requests: Sender<Request<'static>>,
    dispatcher: WorkerStats,
) -> io::Result<()> {
    let poller = Poller::new()?;
    poller.add(acceptor.listener().fd.as_fd(), LISTENER, READABLE_EDGE)?;
    poller.add(signals.as_fd(), SIGNALS, READABLE_EDGE)?;
    poller.add(replies.waker.as_fd(), WAKER, READABLE_EDGE)?;
    let dispatch = |request: Request<'_>, out: &mut Vec<u8>| dispatch_request(&requests, request, out);
    let mut conns = Connections::with_executor(config, dispatcher, dispatch);
    conns.publish_open(Arc::clone(&replies.open));
    let mut events = Events::with_capacity(1024);
    let mut drain = Drain::default();
    loop {
        poller.wait(&mut events, loopkit::earliest([conns.timeout(), drain.time_left()]))?;
        conns.woke_up();
        for event in events.iter() {
            match event.token {
                LISTENER => conns.accept_from(&poller, &mut acceptor),
                SIGNALS => _ = drain.on_signal(signals, &mut acceptor, &mut conns)?,
                WAKER => {
                    replies.waker.drain()?;
                    replies.woken.store(false, SeqCst);
                    while let Ok(reply) = replies_in.try_recv() {
                        conns.complete(reply.token, reply.seq, reply.bytes);
                    }
                }
                token => conns.ready(token, &event),
            }
        }
        conns.tick();
        if drain.is_done(&conns) {
            return Ok(());
        }
    }
}

/// Sends a request the dispatcher has read and routed to the workers' one queue; its response
/// comes back through the replies queue to `Connections::complete`.
///
/// NOTE: one central queue that every idle worker takes from (not one queue per worker): a
/// request waits only if every worker is busy, never behind a slow request while another worker
/// idles. The cost is one shared queue every request passes through; RAMCloud pays it too, and
/// its dispatcher even polls instead of sleeping, trading a whole core for latency.
fn dispatch_request(
    requests: &Sender<Request<'static>>,
    request: Request<'_>,
    out: &mut Vec<u8>,
) -> Executed {
    if requests.send(request.into_owned()).is_err() {
        // No worker left (only while exiting): answer rather than leave the client waiting.
        handlers::write_error(http1::Status::ServiceUnavailable, "shutting down", out);
        return Executed::Here;
    }
    Executed::Elsewhere
}

/// A worker thread: takes the next request from the shared queue, executes it, sends the response
/// back. It owns no socket. A request whose connection has closed since it was queued is dropped.
fn worker_main(inbox: &Receiver<Request<'static>>, replies: &Replies, worker: &WorkerStats) {
    while let Ok(request) = inbox.recv() {
        if !replies.open.is_open(request.token) {
            continue;
        }
        let bytes = handlers::execute_from_queue(request.job, worker);
        if replies.queue.send(Reply { token: request.token, seq: request.seq, bytes }).is_ok() {
            notify_dispatcher(replies);
        }
    }
}

/// Wakes the dispatcher unless it has been woken already and not yet drained the replies.
///
/// NOTE: an eventfd write is a syscall, and a wake-up is an epoll_wait return for the dispatcher,
/// the one thread everything waits on. The flag makes a burst of responses cost one of each: the
/// dispatcher clears it *before* it empties the queue, so a response queued after the clear always
/// finds it clear and wakes it again — none is left behind.
fn notify_dispatcher(replies: &Replies) {
    if !replies.woken.swap(true, SeqCst) {
        let _ = replies.waker.wake();
    }
}
