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
//! Trigger mode: edge-triggered (see `common::conn`).
//!
//! Trade-off: load is balanced per request, not per connection — a `/sleep` holds one worker while
//! the others go on serving everyone, and pipelined requests of one connection run in parallel
//! (answered in order all the same). The price: every request crosses threads twice, and the one
//! dispatcher does all the I/O for everyone, so it is the ceiling on throughput.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::SystemTime;

use clap::Parser;
use common::accept::Acceptor;
use common::config::{self, CommonArgs, Config};
use common::conn::{ConnSettings, Connections, Executed, Executor};
use common::drain::Drain;
use common::exec;
use common::startup::{self, fatal};
use common::stats::{Listener, Role, Stats, WorkerStats};
use common::token::{LISTENER, SIGNALS, WAKER};
use crossbeam_channel::{Receiver, Sender};
use http::Job;
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

/// A request on its way to a worker: which connection, which of its requests, what to do.
struct Request {
    token: u64,
    seq: u64,
    job: Job<'static>,
}

/// A response on its way back to the dispatcher.
struct Response {
    token: u64,
    seq: u64,
    bytes: Vec<u8>,
}

/// The workers' way back to the dispatcher: a queue, and an eventfd to wake its epoll.
struct Replies {
    queue: Sender<Response>,
    waker: Waker,
    /// Set when the dispatcher has been woken and has not yet drained the queue.
    woken: AtomicBool,
}

fn main() {
    let cli: Cli = config::parse_or_exit();
    let config = cli.common.resolve(None).unwrap_or_else(|e| config::usage_error(&e));
    startup::check_environment(&config);
    let signals = ShutdownSignals::new().unwrap_or_else(|e| fatal(e));
    let listener = startup::listen(&config, config.addr, false);
    let stats = Stats::new("ramcloud", config.workers + 1, config.max_conns, vec![listener.clone()])
        .unwrap_or_else(|e| fatal(e));
    let (requests, inbox) = crossbeam_channel::unbounded::<Request>();
    let (reply_queue, replies_in) = crossbeam_channel::unbounded::<Response>();
    let waker = Waker::new().unwrap_or_else(|e| fatal(e));
    let replies = Arc::new(Replies { queue: reply_queue, waker, woken: AtomicBool::new(false) });
    let threads: Vec<_> = (1..=config.workers)
        .map(|id| {
            let worker = stats.worker(id, Role::Worker, config.cpu_for(id));
            let (inbox, replies, cpu) = (inbox.clone(), Arc::clone(&replies), config.cpu_for(id));
            thread::spawn(move || {
                startup::pin(cpu);
                worker_main(&inbox, &replies, &worker);
            })
        })
        .collect();
    startup::pin(config.cpu_for(0));
    let dispatcher = stats.worker(0, Role::Dispatcher, config.cpu_for(0));
    startup::announce(listener.addr);
    let mut dispatch = Dispatch { requests };
    dispatcher_main(&config, listener, &signals, &replies, &replies_in, &mut dispatch, dispatcher)
        .unwrap_or_else(|e| fatal(e));
    drop(dispatch); // closes the request queue: the workers' recv fails and they return
    for thread in threads {
        let _ = thread.join();
    }
}

/// The dispatcher's executor: sends every request to the workers' queue.
struct Dispatch {
    requests: Sender<Request>,
}

impl Executor for Dispatch {
    /// NOTE: one central queue that every idle worker takes from (not one queue per worker): a
    /// request waits only if every worker is busy, never behind a slow request while another worker
    /// idles. The cost is one shared queue every request passes through; RAMCloud pays it too, and
    /// its dispatcher even polls instead of sleeping, trading a whole core for latency.
    fn execute(
        &mut self,
        _: &WorkerStats,
        token: u64,
        seq: u64,
        job: Job<'_>,
        out: &mut Vec<u8>,
    ) -> Executed {
        let request = Request { token, seq, job: job.into_owned() };
        if self.requests.send(request).is_err() {
            // No worker left (only while exiting): answer rather than leave the client waiting.
            exec::write_error(http::Status::ServiceUnavailable, "shutting down", out);
            return Executed::Here;
        }
        Executed::Elsewhere
    }
}

/// The dispatcher thread: every socket, one epoll.
fn dispatcher_main(
    config: &Config,
    listener: Listener,
    signals: &ShutdownSignals,
    replies: &Replies,
    replies_in: &Receiver<Response>,
    dispatch: &mut Dispatch,
    dispatcher: WorkerStats,
) -> io::Result<()> {
    let poller = Poller::new()?;
    poller.add(listener.fd.as_fd(), LISTENER, READABLE_EDGE)?;
    poller.add(signals.as_fd(), SIGNALS, READABLE_EDGE)?;
    poller.add(replies.waker.as_fd(), WAKER, READABLE_EDGE)?;
    let settings = ConnSettings::new(config);
    let mut acceptor = Acceptor::new(listener, dispatcher.clone());
    let mut conns = Connections::new(settings, dispatcher);
    let mut events = Events::with_capacity(1024);
    let mut drain = Drain::default();
    loop {
        poller.wait(
            &mut events,
            common::earliest([conns.timeout(), acceptor.resume_in(), drain.time_left()]),
        )?;
        conns.woke_up();
        for event in events.iter() {
            match event.token {
                LISTENER => conns.accept_from(&poller, &mut acceptor),
                SIGNALS if signals.read()?.is_some() && drain.begin() => {
                    startup::log("draining: no new connections; finishing the requests in flight");
                    acceptor.stop_listening()?;
                    conns.begin_drain(dispatch);
                }
                SIGNALS => {}
                WAKER => {
                    replies.waker.drain()?;
                    replies.woken.store(false, SeqCst);
                    while let Ok(response) = replies_in.try_recv() {
                        conns.complete(response.token, response.seq, response.bytes, dispatch);
                    }
                }
                token => conns.ready(token, &event, dispatch),
            }
        }
        if !drain.is_draining() && acceptor.take_resumed() {
            conns.accept_from(&poller, &mut acceptor);
        }
        conns.tick(dispatch);
        if drain.is_done(&conns) {
            return Ok(());
        }
    }
}

/// A worker thread: takes the next request from the shared queue, executes it, sends the response
/// back. It owns no socket.
fn worker_main(inbox: &Receiver<Request>, replies: &Replies, worker: &WorkerStats) {
    worker.bind_to_this_thread();
    while let Ok(request) = inbox.recv() {
        worker.wakeup();
        http::response::refresh_date(SystemTime::now());
        let mut bytes = Vec::with_capacity(256);
        exec::execute(request.job, worker, &mut bytes);
        if replies.queue.send(Response { token: request.token, seq: request.seq, bytes }).is_ok() {
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
