//! slow-reader: a backend that does not read lets the kernel's receive buffer fill, the advertised
//! window close, and the client's send() block.

use std::io;
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, setsockopt, sockopt};

use super::Experiment;
use crate::kernel::{self, Counters};
use crate::net::{self, Pending};
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "slow-reader",
    summary: "the server reads nothing: its receive queue fills, the window closes, the client's send blocks",
    claim: "The kernel receives a connection's data into its receive buffer without the backend \
            asking, and ACKs it with a window that shrinks as the buffer fills. A backend that does \
            not read lets the buffer fill: the advertised window reaches zero, the client's own send \
            buffer fills behind it, and its send() blocks; the client then sends zero-window probes.",
    notes: "'Reading and Sending Data: Receive buffers' and 'Problems with reading and sending: \
            Backend doesn't read fast enough, Receive queue is full, Client slows down'",
    needs_namespace: false,
    run,
};

/// The client's SO_SNDBUF (the kernel doubles it): fixed, so the send buffer does not grow to
/// megabytes and hide the effect behind autotuning.
const CLIENT_SNDBUF: usize = 32 * 1024;
const BODY: usize = 1 << 20;
const SLEEP_MS: u64 = 3000;

fn run(report: &mut Report) {
    let server = net::start("lab-epoll", &[]);
    let addr = server.addr();
    report.does("starts lab-epoll; a client connection is accepted and served one GET /");
    report.does(format!(
        "another connection sends GET /sleep?ms={SLEEP_MS}: the server's only thread sleeps, and \
         reads nothing from anyone"
    ));
    report.does(format!(
        "meanwhile the client (SO_SNDBUF {CLIENT_SNDBUF}) writes a POST /echo of {BODY} bytes with \
         nonblocking send() until it returns EAGAIN and stays blocked; then reads ss -tmi for both \
         ends, TCP_INFO on the client and the TcpExt window counters"
    ));
    let mut client = Pending::connect(addr, None);
    net::wait_all(std::slice::from_mut(&mut client), Duration::from_secs(2));
    let client_addr = client.local_addr();
    setsockopt(&client.fd, sockopt::SndBuf, &CLIENT_SNDBUF).expect("setsockopt SO_SNDBUF");
    let sndbuf = getsockopt(&client.fd, sockopt::SndBuf).expect("getsockopt SO_SNDBUF");
    send_all(&client, b"GET / HTTP/1.1\r\nHost: lab-exp\r\n\r\n");
    thread::sleep(Duration::from_millis(100));
    let mut reply = [0u8; 4096];
    let first = sys::socket::read(client.fd.as_fd(), &mut reply).unwrap_or(0);
    let mut sleeper = net::connect(addr);
    let sleep_path = format!("/sleep?ms={SLEEP_MS}");
    let sleeper_thread = thread::spawn(move || net::get(&mut sleeper, &sleep_path).map(|(s, _)| s));
    thread::sleep(Duration::from_millis(100));
    let before = Counters::now();
    let started = Instant::now();

    let head = format!("POST /echo HTTP/1.1\r\nHost: lab-exp\r\nContent-Length: {BODY}\r\n\r\n");
    let mut request = head.into_bytes();
    request.resize(request.len() + BODY, b'x');
    let mut sent = 0usize;
    let mut eagains = 0;
    let mut blocked_since: Option<Instant> = None;
    while sent < request.len() {
        match sys::socket::write(client.fd.as_fd(), &request[sent..]) {
            Ok(n) => {
                sent += n;
                blocked_since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                eagains += 1;
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(500) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    let blocked_after = started.elapsed();
    // Let the client probe the zero window for a while (probes back off from ~200 ms).
    thread::sleep(Duration::from_millis(1200));
    let server_side = kernel::ss_server_side(addr.port(), client_addr).unwrap_or_default();
    let client_side = kernel::ss_client_side(addr.port(), client_addr).unwrap_or_default();
    let info = sys::socket::conn_info(client.fd.as_fd()).expect("TCP_INFO");
    let during = Counters::now();
    let still_sleeping = started.elapsed() < Duration::from_millis(SLEEP_MS - 200);
    let rcvbuf = server_side.skmem("rb").unwrap_or(0);
    let win_probes = before.delta(&during, "TcpExt.TCPWinProbe");
    let to_zero = before.delta(&during, "TcpExt.TCPToZeroWindowAdv");
    let want_zero = before.delta(&during, "TcpExt.TCPWantZeroWindowAdv");
    report.observe(format!(
        "the first GET / was answered ({first} bytes); then send() accepted {sent} of {} bytes and \
         returned EAGAIN from {} ms on ({eagains} EAGAINs)",
        request.len(),
        blocked_after.as_millis().saturating_sub(500)
    ));
    report.observe(format!(
        "server end (ss): Recv-Q {} bytes unread, receive buffer rb {rcvbuf}; client end: Send-Q {} \
         bytes unsent/unacked, send buffer tb {} (SO_SNDBUF reads {sndbuf})",
        server_side.recv_q,
        client_side.send_q,
        client_side.skmem("tb").unwrap_or(0)
    ));
    report.observe(format!(
        "client TCP_INFO: probes {}, backoff {}, rtt {} µs; TcpExt TCPWinProbe +{win_probes} (zero-window \
         probes sent), TCPToZeroWindowAdv +{to_zero}, TCPWantZeroWindowAdv +{want_zero}",
        info.probes, info.backoff, info.rtt_us
    ));
    let sleep_status = sleeper_thread.join().ok().and_then(Result::ok);
    report.observe(format!("the sleeping request then finished with {sleep_status:?}"));

    report.figure("sent", sent);
    report.figure("request_bytes", request.len());
    report.figure("server_recv_q", server_side.recv_q);
    report.figure("server_rcvbuf", rcvbuf);
    report.figure("client_send_q", client_side.send_q);
    report.figure("client_sndbuf", sndbuf);
    report.figure("zero_window_probes", win_probes);
    report.figure("to_zero_window_adv", to_zero);
    report.figure("client_probes", info.probes);
    report.figure("client_backoff", info.backoff);

    report.check(
        "the client's send() blocks (EAGAIN) before the request is all sent",
        sent < request.len() && eagains > 0,
        format!("{sent} of {} bytes sent", request.len()),
    );
    report.check(
        "every byte sent is in a kernel queue, none read: server Recv-Q + client Send-Q = bytes sent",
        server_side.recv_q + client_side.send_q == sent as u64 && still_sleeping,
        format!(
            "{} + {} = {} vs {sent}",
            server_side.recv_q,
            client_side.send_q,
            server_side.recv_q + client_side.send_q
        ),
    );
    report.check(
        "the server's receive queue is full: Recv-Q ≥ half the receive buffer and ≤ all of it",
        rcvbuf > 0 && server_side.recv_q * 2 >= rcvbuf && server_side.recv_q <= rcvbuf,
        format!("Recv-Q {} of rb {rcvbuf}", server_side.recv_q),
    );
    report.check(
        "the server advertised a zero window and the client probes it",
        to_zero >= 1 && win_probes >= 1,
        format!("TCPToZeroWindowAdv +{to_zero}, TCPWinProbe +{win_probes}"),
    );
}

fn send_all(pending: &Pending, bytes: &[u8]) {
    let mut sent = 0;
    while sent < bytes.len() {
        match sys::socket::write(pending.fd.as_fd(), &bytes[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("send: {e}"),
        }
    }
}
