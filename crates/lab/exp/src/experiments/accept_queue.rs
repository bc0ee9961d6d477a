//! accept-queue: a backlog of B holds B+1 completed handshakes; past that, SYNs are dropped.

use std::time::{Duration, Instant};

use super::Experiment;
use crate::kernel::{self, Counters};
use crate::net::{self, ms};
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "accept-queue",
    summary: "backlog B, accepting paused: B+1 handshakes complete, later SYNs are dropped and retried",
    claim: "The kernel completes handshakes on its own and parks them in the accept queue until the \
            backend calls accept(). When the backend does not accept, the queue fills (on Linux a \
            backlog of B holds B+1), further SYNs are dropped and counted (ListenOverflows), and \
            those clients stall on SYN retransmits (the notes' 1 s, 3 s, ...; on kernels with \
            net.ipv4.tcp_syn_linear_timeouts the first retries are 1 s apart) until the queue has room.",
    notes: "'Problems with accepting connections: backend doesn't accept fast enough', and 'What \
            happens if ... Accept Queue gets full?'",
    needs_namespace: false,
    run,
};

/// The backlog, and the clients that try to connect while nothing is accepted (uring-accept-queue's too).
pub const BACKLOG: usize = 4;
pub const CLIENTS: usize = 12;
/// Not a whole number of seconds, so that a client let in by a SYN retransmit (on a whole second
/// after its connect) is told apart from one let in the moment the queue drained.
const PAUSE_SECS: f64 = 2.5;

fn run(report: &mut Report) {
    let backlog = BACKLOG.to_string();
    let pause = PAUSE_SECS.to_string();
    let server = net::start("lab-epoll", &["--backlog", &backlog, "--pause-accept", &pause]);
    let addr = server.addr();
    report.does(format!(
        "starts lab-epoll --backlog {BACKLOG} --pause-accept {PAUSE_SECS}: it accepts one observer \
         connection, then nothing for {PAUSE_SECS} s"
    ));
    report.does(format!(
        "opens {CLIENTS} more connections with nonblocking connect() while accepting is paused; reads \
         ss -ltn, /stats (on the observer connection) and /proc/net/netstat; then times each \
         handshake and sends GET / on every connection once accepting resumes"
    ));
    let mut observer = net::observer(addr);
    let paused_at = Instant::now();
    let before = Counters::now();
    let (mut pending, at_once) = net::connect_crowd(addr, CLIENTS);
    let completed_at_once = at_once.iter().filter(|&&done| done).count();
    let (ss_recv_q, ss_send_q) = kernel::accept_queue(addr.port());
    let waiting_in_syn_sent = kernel::syn_sent(addr.port());
    let stats = net::stats(&mut observer);
    let during = Counters::now();
    let stats_queue = stats["listeners"][0]["accept_queue"].as_u64().unwrap_or(u64::MAX);
    let stats_accepted = stats["totals"]["accepted"].as_u64().unwrap_or(0);
    let overflows = before.delta(&during, "TcpExt.ListenOverflows");
    let drops = before.delta(&during, "TcpExt.ListenDrops");
    let stats_overflows = stats["kernel"]["ListenOverflows"].as_i64().unwrap_or(-1);
    // The namespace is lab-exp's own: its counter is what this experiment caused.
    let netstat_overflows = sys::netstat::tcp_ext(&["ListenOverflows"]).map_or(-1, |v| v[0].1);
    report.observe(format!(
        "{completed_at_once} of {CLIENTS} handshakes completed at once; ss -ltn: Recv-Q {ss_recv_q}, \
         Send-Q {ss_send_q} (the backlog); /stats accept_queue {stats_queue}; {waiting_in_syn_sent} \
         clients in SYN-SENT"
    ));
    report.observe(format!(
        "TcpExt ListenOverflows +{overflows}, ListenDrops +{drops} during the pause; /stats kernel \
         ListenOverflows {stats_overflows} (the namespace's /proc/net/netstat: {netstat_overflows})"
    ));

    net::wait_all(&mut pending, Duration::from_secs(6));
    let after = Counters::now();
    let stalled: Vec<f64> = pending
        .iter()
        .zip(&at_once)
        .filter(|(_, &first)| !first)
        .filter_map(|(p, _)| p.took().map(ms))
        .collect();
    let served = net::served(pending);
    let retrans = before.delta(&after, "Tcp.RetransSegs");
    report.observe(format!(
        "the {} clients whose SYNs were dropped completed their handshakes after {stalled:?} ms \
         (accepting resumed {PAUSE_SECS} s after the observer's connection); Tcp RetransSegs +{retrans}",
        CLIENTS - completed_at_once
    ));
    report.observe(format!("after the pause, {served} of {CLIENTS} connections got 200 to GET /"));

    report.figure("backlog", BACKLOG);
    report.figure("pause_ms", PAUSE_SECS * 1000.0);
    report.figure("clients", CLIENTS);
    report.figure("completed_at_once", completed_at_once);
    report.figure("ss_recv_q", ss_recv_q);
    report.figure("ss_send_q", ss_send_q);
    report.figure("stats_accept_queue", stats_queue);
    report.figure("stats_accepted_during_pause", stats_accepted);
    report.figure("syn_sent_clients", waiting_in_syn_sent);
    report.figure("listen_overflows", overflows);
    report.figure("listen_drops", drops);
    report.figure("stats_kernel_listen_overflows", stats_overflows);
    report.figure("netstat_listen_overflows", netstat_overflows);
    report.figure("stalled_connect_ms", stalled.clone());
    report.figure("retrans_segs", retrans);
    report.figure("served_after_resume", served);

    let expected = BACKLOG + 1;
    report.check(
        format!("exactly B+1 = {expected} handshakes complete while nothing is accepted"),
        completed_at_once == expected,
        format!("{completed_at_once}"),
    );
    report.check(
        format!("ss -ltn Recv-Q = /stats accept_queue = {expected}, Send-Q = B = {BACKLOG}"),
        ss_recv_q == expected as u64 && stats_queue == expected as u64 && ss_send_q == BACKLOG as u64,
        format!("Recv-Q {ss_recv_q}, accept_queue {stats_queue}, Send-Q {ss_send_q}"),
    );
    let dropped = (CLIENTS - completed_at_once) as i64;
    report.check(
        format!("every further SYN is dropped and counted: ListenOverflows and ListenDrops rise by ≥ {dropped}, the clients wait in SYN-SENT"),
        overflows >= dropped && drops >= dropped && waiting_in_syn_sent == dropped as usize,
        format!("ListenOverflows +{overflows}, ListenDrops +{drops}, SYN-SENT {waiting_in_syn_sent}"),
    );
    report.check(
        "/stats kernel.ListenOverflows is the namespace's own counter (in lab-exp's namespace, the same \
         figure as /proc/net/netstat; on a shared host's, at least this experiment's overflows)",
        stats_overflows >= overflows && (stats_overflows == netstat_overflows || !crate::in_own_namespace()),
        format!("/stats {stats_overflows}, /proc/net/netstat {netstat_overflows}"),
    );
    let waited_past_resume = paused_at.elapsed() >= Duration::from_secs_f64(PAUSE_SECS);
    let linear = kernel::sysctl("net/ipv4/tcp_syn_linear_timeouts");
    report.figure("tcp_syn_linear_timeouts", linear.clone());
    // A retransmitted SYN gets in: the handshake ends a whole number of seconds (the retransmit
    // timer's steps) after connect(), not as soon as the queue has room.
    // (Polled every 5 ms: a busy machine may see a completion up to a few hundred ms late.)
    let on_a_retransmit = |t: f64| t >= 900.0 && (t % 1000.0 < 300.0 || t % 1000.0 > 950.0);
    report.check(
        "the dropped clients stall on SYN retransmits: each connect() ends after accepting resumed, on a whole second (a retransmit), not when the queue drained",
        stalled.len() == dropped as usize
            && stalled.iter().all(|&t| on_a_retransmit(t) && t >= PAUSE_SECS * 1000.0 - 300.0)
            && waited_past_resume,
        format!("{stalled:?} ms (tcp_syn_linear_timeouts = {linear})"),
    );
    report.check(
        format!("on resume every connection is served ({CLIENTS})"),
        served == CLIENTS,
        format!("{served}"),
    );
}
