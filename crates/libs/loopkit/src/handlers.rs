//! Executing a routed request: the one function every architecture calls, on whichever thread it
//! chose to execute requests on.

use std::thread;
use std::time::{Duration, Instant, SystemTime};

use http1::response::{Connection, Response};
use http1::{Action, Job, Status};

use crate::stats::WorkerStats;

const HELLO: &[u8] = b"Hello, World!";

/// Call on every return of a thread that executes requests from its wait (epoll_wait, or a queue):
/// counts the wake-up for /stats, and brings this thread's `Date` up to the second.
///
/// NOTE: like nginx's `ngx_time_update()`, the clock is read once per wake-up, not per response: a
/// pipelined batch of a thousand responses costs one clock read, and the `Date` is never more than
/// one loop iteration old.
pub fn woke_up(worker: &WorkerStats) {
    worker.wakeup();
    http1::response::refresh_date(SystemTime::now());
}

/// Executes a request taken from a queue by a thread that takes one per wake-up (ramcloud's
/// workers): counts the wake-up, brings the `Date` up to date, and returns the response.
pub fn execute_from_queue(job: Job<'_>, worker: &WorkerStats) -> Vec<u8> {
    woke_up(worker);
    let mut response = Vec::with_capacity(256);
    execute(job, worker, &mut response);
    response
}

/// Executes `job` on the calling thread, counts it as one of `worker`'s requests, and appends the
/// response to `out`.
pub fn execute(job: Job<'_>, worker: &WorkerStats, out: &mut Vec<u8>) {
    worker.requests(1);
    let stats_body;
    let ledger_answer;
    let mut response = Response::text(Status::Ok, HELLO);
    match &job.action {
        Action::Hello => {}
        Action::Spin { us } => spin(Duration::from_micros(u64::from(*us))),
        Action::Sleep { ms } => thread::sleep(Duration::from_millis(u64::from(*ms))),
        Action::Echo(body) => {
            response.body = body;
            response.content_type = "application/octet-stream";
        }
        Action::Stats => {
            stats_body = worker.stats().render();
            response.body = &stats_body;
            response.content_type = "application/json";
        }
        Action::Ledger { body, key, hold_ms } => {
            let hold = Duration::from_millis(u64::from(*hold_ms));
            ledger_answer = worker.stats().ledger().post(key.as_deref(), body, hold);
            response.status = ledger_answer.status;
            response.body = &ledger_answer.body;
            response.replayed = ledger_answer.replayed;
            if ledger_answer.status == Status::Ok {
                response.content_type = "application/json";
            }
        }
        #[cfg(debug_assertions)]
        Action::Panic => panic!("GET /debug/panic: a fault injected on purpose (debug builds only)"),
        Action::Reject { status, reason, allow } => {
            response.status = *status;
            response.body = reason.as_bytes();
            response.allow = *allow;
        }
    }
    response.head_only = job.head_only;
    response.connection = job.connection;
    response.write_to(out);
}

/// Writes the response to a request that could not be framed; the connection closes after it.
pub fn write_error(status: Status, reason: &str, out: &mut Vec<u8>) {
    let mut response = Response::text(status, reason.as_bytes());
    response.connection = Connection::Close;
    response.write_to(out);
}

/// Burns `duration` of CPU on this thread, as a request with real work to do would.
fn spin(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}
