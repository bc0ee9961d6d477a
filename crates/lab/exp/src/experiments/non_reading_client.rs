//! non-reading-client: a client that sends requests and never reads its responses fills the
//! server's send queue; the server stops reading it, and everyone else is served as before.

use std::io;
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use super::Experiment;
use crate::kernel::{self, Counters};
use crate::net::{self, Pending};
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "non-reading-client",
    summary: "a client that never reads: the server's Send-Q fills, it stops reading that client, others are unaffected",
    claim: "send() only copies into the kernel's send buffer, which empties as the client ACKs. A \
            client that never reads lets it fill: the server's write returns EAGAIN. A backend that \
            then stops reading that connection (lab-* do, past 256 KiB of pending output) keeps its \
            memory bounded, and its other clients see no difference.",
    notes: "'Send Data: when send() is called the data is copied to SEND BUFFER ... when client ACKs \
            send buffer's corresponding entry is deleted' and 'Problems with reading and sending'",
    needs_namespace: false,
    run,
};

/// Each request: a 64 KiB POST /echo, so every response is 64 KiB too.
const BODY: usize = 64 * 1024;
const LOAD_SECS: &str = "2";

fn run(report: &mut Report) {
    let server = net::start("lab-epoll", &[]);
    let addr = server.addr();
    report.does(
        "starts lab-epoll (one thread serves everyone: the architecture a stuck write would hurt most)",
    );
    report.does(format!(
        "measures 4 well-behaved lab-load connections for {LOAD_SECS} s (GET /); then a bad client \
         pipelines POST /echo requests of {} KiB with nonblocking send() and never reads, until its \
         send() has returned EAGAIN for 500 ms; reads ss -tmi for both ends of it, the server's RSS, \
         and measures the 4 lab-load connections again with the bad client still connected",
        BODY / 1024
    ));
    let load_args = ["-c", "4", "-d", LOAD_SECS, "--warmup", "0.3"];
    let without = net::load(addr, "/", &load_args);
    let rss_before = labkit::rss_kib(server.pid());

    let mut bad = Pending::connect(addr, None);
    net::wait_all(std::slice::from_mut(&mut bad), Duration::from_secs(2));
    let bad_addr = bad.local_addr();
    let mut request =
        format!("POST /echo HTTP/1.1\r\nHost: lab-exp\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
    request.resize(request.len() + BODY, b'x');
    let (mut sent, mut offset, mut requests) = (0usize, 0usize, 0usize);
    let mut blocked_since: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match sys::socket::write(bad.fd.as_fd(), &request[offset..]) {
            Ok(n) => {
                sent += n;
                offset += n;
                if offset == request.len() {
                    offset = 0;
                    requests += 1;
                }
                blocked_since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if blocked_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_millis(500) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    let blocked = blocked_since.is_some();
    thread::sleep(Duration::from_millis(200));
    let server_side = kernel::ss_server_side(addr.port(), bad_addr).unwrap_or_default();
    let client_side = kernel::ss_client_side(addr.port(), bad_addr).unwrap_or_default();
    let rss_during = labkit::rss_kib(server.pid());
    let before_load = Counters::now();
    let with = net::load(addr, "/", &load_args);
    let after_load = Counters::now();
    // Still stuck after the load: the server did not give in and buffer it.
    let server_side_after = kernel::ss_server_side(addr.port(), bad_addr).unwrap_or_default();

    let p99 = |results: &serde_json::Value| results["latency_us"]["p99"].as_f64().unwrap_or(f64::MAX);
    let rps = |results: &serde_json::Value| results["rps"].as_f64().unwrap_or(0.0);
    let rss_growth = rss_during.saturating_sub(rss_before);
    report.observe(format!(
        "the bad client got {sent} bytes ({requests} whole requests) into the kernel before its send() \
         blocked for good"
    ));
    report.observe(format!(
        "server end of it (ss): Send-Q {} bytes of responses unacknowledged, Recv-Q {} bytes of \
         requests left unread; client end: Recv-Q {} bytes of responses it never read (receive buffer rb {})",
        server_side.send_q,
        server_side.recv_q,
        client_side.recv_q,
        client_side.skmem("rb").unwrap_or(0)
    ));
    report.observe(format!(
        "server RSS {rss_before} KiB before, {rss_during} KiB with the bad client (+{rss_growth} KiB)"
    ));
    report.observe(format!(
        "4 other connections: p99 {:.1} µs and {:.0} req/s without the bad client, p99 {:.1} µs and \
         {:.0} req/s with it; errors {} and {}; TcpExt TCPToZeroWindowAdv +{} meanwhile",
        p99(&without),
        rps(&without),
        p99(&with),
        rps(&with),
        net::load_errors(&without),
        net::load_errors(&with),
        before_load.delta(&after_load, "TcpExt.TCPToZeroWindowAdv")
    ));
    report.figure("bad_client_sent", sent);
    report.figure("server_send_q", server_side.send_q);
    report.figure("server_recv_q", server_side.recv_q);
    report.figure("server_recv_q_after_load", server_side_after.recv_q);
    report.figure("client_recv_q", client_side.recv_q);
    report.figure("rss_growth_kib", rss_growth);
    report.figure("p99_us_without", p99(&without));
    report.figure("p99_us_with", p99(&with));
    report.figure("rps_without", rps(&without));
    report.figure("rps_with", rps(&with));
    report.figure("errors_with", net::load_errors(&with));

    report.check(
        "the bad client's send() ends up blocked: the server stopped taking its bytes",
        blocked,
        format!("{sent} bytes sent, then EAGAIN for 500 ms"),
    );
    report.check(
        "the response path is full: the server's Send-Q and the client's Recv-Q hold data",
        server_side.send_q > 0 && client_side.recv_q > 0,
        format!("server Send-Q {}, client Recv-Q {}", server_side.send_q, client_side.recv_q),
    );
    report.check(
        "the server stopped reading that connection: bytes left unread in its Recv-Q, the same before \
         and after the load (how many is the receive window the kernel had autotuned to when reading \
         stopped: 51 KiB on one machine, 400-700 KiB on another)",
        server_side.recv_q > 0 && server_side_after.recv_q == server_side.recv_q,
        format!("Recv-Q {} then {}", server_side.recv_q, server_side_after.recv_q),
    );
    report.check(
        "its memory stays bounded: RSS grows by less than 2 MiB, less than the bad client's bytes",
        rss_growth < 2048 && (rss_growth * 1024) < sent as u64,
        format!("+{rss_growth} KiB for {sent} bytes sent"),
    );
    report.check(
        "the other clients are still served: no errors, p99 under 50 ms, at least a fifth of the \
         throughput without it (a loop stuck on the bad client would give seconds, or nothing; the \
         margins are wide because a shared 2-core machine is noisy)",
        net::load_errors(&with) == 0 && p99(&with) <= 50_000.0 && rps(&with) * 5.0 >= rps(&without),
        format!(
            "p99 {:.1} → {:.1} µs, {:.0} → {:.0} req/s",
            p99(&without),
            p99(&with),
            rps(&without),
            rps(&with)
        ),
    );
}
