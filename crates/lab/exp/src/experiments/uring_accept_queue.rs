//! uring-accept-queue: completion does not make the kernel an acceptor that drains the queue: a
//! multishot accept takes connections only when the ring is reaped, so a busy ring's accept queue
//! fills (B+1) and later SYNs are dropped, exactly as under epoll.

use std::io::Write;
use std::thread;
use std::time::Duration;

use super::accept_queue::{BACKLOG, CLIENTS};
use super::Experiment;
use crate::kernel::{self, Counters};
use crate::net;
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "uring-accept-queue",
    summary: "lab-uring's one ring held by a request: its multishot accept takes nothing, the queue fills",
    claim: "Under io_uring the kernel accepts on the server's behalf (one multishot accept submission, a \
            completion per connection), but only as task work of the ring's thread, which a \
            SINGLE_ISSUER|DEFER_TASKRUN ring runs when that thread enters the kernel to reap \
            completions. A thread busy executing reaps nothing: the accept queue fills to B+1 and \
            further SYNs are dropped (ListenOverflows) as under epoll, and the queue drains once the \
            ring is reaped again.",
    notes: "'Problems with accepting connections: backend doesn't accept fast enough', retold for \
            completion-based accepting",
    needs_namespace: false,
    run,
};

/// How long one request holds the ring's only thread (`/sleep`).
const HOLD_MS: u64 = 2500;

fn run(report: &mut Report) {
    let backlog = BACKLOG.to_string();
    let server = net::start("lab-uring", &["--workers", "1", "--backlog", &backlog]);
    let addr = server.addr();
    report.does(format!(
        "starts lab-uring --workers 1 --backlog {BACKLOG} (one ring, one thread, its multishot accept \
         armed); sends GET /sleep?ms={HOLD_MS} on one connection, which holds that thread"
    ));
    report.does(format!(
        "opens {CLIENTS} more connections with nonblocking connect() while the ring is not reaped; reads \
         ss -ltn and /proc/net/netstat; once the sleep is answered, waits for every handshake and sends \
         GET / on each"
    ));
    let mut observer = net::observer(addr);
    observer
        .write_all(format!("GET /sleep?ms={HOLD_MS} HTTP/1.1\r\nHost: lab\r\n\r\n").as_bytes())
        .unwrap_or_else(|e| panic!("send GET /sleep: {e}"));
    thread::sleep(Duration::from_millis(200)); // the ring's thread is in the sleep now
    let before = Counters::now();
    let (mut pending, at_once) = net::connect_crowd(addr, CLIENTS);
    let completed_at_once = at_once.iter().filter(|&&done| done).count();
    let (ss_recv_q, _) = kernel::accept_queue(addr.port());
    let syn_sent = kernel::syn_sent(addr.port());
    let during = Counters::now();
    let overflows = before.delta(&during, "TcpExt.ListenOverflows");
    report.observe(format!(
        "while the ring's thread sleeps: {completed_at_once} of {CLIENTS} handshakes completed; ss -ltn \
         Recv-Q {ss_recv_q} (nothing accepted); {syn_sent} clients in SYN-SENT; TcpExt ListenOverflows \
         +{overflows}"
    ));
    let (sleep_status, _) = net::read_response(&mut observer).unwrap_or_else(|e| panic!("GET /sleep: {e}"));
    let (queue_after, _) = kernel::accept_queue(addr.port());
    net::wait_all(&mut pending, Duration::from_secs(6));
    let served = net::served(pending);
    let stats = net::stats(&mut observer);
    let ring = &stats["workers"][0]["ring"];
    report.observe(format!(
        "after the sleep ({sleep_status}): ss -ltn Recv-Q {queue_after}; {served} of {CLIENTS} connections \
         got 200 to GET /; the ring: {} submissions, {} completions, {} io_uring_enter calls",
        ring["submissions"], ring["completions"], ring["enters"]
    ));
    report.figure("backlog", BACKLOG);
    report.figure("clients", CLIENTS);
    report.figure("hold_ms", HOLD_MS);
    report.figure("completed_at_once", completed_at_once);
    report.figure("ss_recv_q", ss_recv_q);
    report.figure("syn_sent_clients", syn_sent);
    report.figure("listen_overflows", overflows);
    report.figure("ss_recv_q_after", queue_after);
    report.figure("served_after_hold", served);

    let expected = BACKLOG + 1;
    report.check(
        format!("with the ring not reaped, exactly B+1 = {expected} handshakes complete and wait in the accept queue"),
        completed_at_once == expected && ss_recv_q == expected as u64,
        format!("{completed_at_once} completed, Recv-Q {ss_recv_q}"),
    );
    let dropped = (CLIENTS - expected) as i64;
    report.check(
        format!("every further SYN is dropped and counted: ListenOverflows rises by ≥ {dropped}, the clients wait in SYN-SENT"),
        overflows >= dropped && syn_sent == dropped as usize,
        format!("ListenOverflows +{overflows}, SYN-SENT {syn_sent}"),
    );
    report.check(
        format!("once the ring is reaped again the queue drains and every connection is served ({CLIENTS})"),
        sleep_status == 200 && served == CLIENTS,
        format!("sleep {sleep_status}, served {served}, Recv-Q after {queue_after}"),
    );
}
