//! nagle: write-write-read with Nagle's algorithm on meets the peer's delayed ACK: ~40 ms a request.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::Experiment;
use crate::kernel::Counters;
use crate::net::{self, ms};
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "nagle",
    summary: "write-write-read with Nagle on stalls ~40 ms on the delayed ACK; TCP_NODELAY removes it",
    claim: "Nagle's algorithm holds a small segment back while an earlier small one is unacknowledged, \
            waiting to fill a segment. A sender that writes a request in two parts and then waits for \
            the answer holds the second part until the receiver's delayed ACK fires (40 ms on Linux): \
            ~40 ms a request, against tens of µs with TCP_NODELAY (which curl sets, as do lab-* \
            unless --no-nodelay).",
    notes: "'Nagle's Algorithm: waiting for the segment to be full in order to send data; curl disabled it'",
    needs_namespace: false,
    run,
};

const REQUESTS: usize = 20;

fn run(report: &mut Report) {
    report.does(format!(
        "for each of four pairs (client TCP_NODELAY on/off × server default/--no-nodelay), starts \
         lab-epoll and sends {REQUESTS} keep-alive GET / on one connection, each written in two \
         parts (request line, then headers) and then read: write-write-read; times each request \
         and counts TcpExt DelayedACKs (delayed-ACK timers that fired)"
    ));
    let mut medians = serde_json::Map::new();
    let mut results = Vec::new();
    for client_nodelay in [false, true] {
        for server_nodelay in [true, false] {
            let args: &[&str] = if server_nodelay { &[] } else { &["--no-nodelay"] };
            let server = net::start("lab-epoll", args);
            let mut stream = TcpStream::connect(server.addr()).expect("connect");
            stream.set_nodelay(client_nodelay).expect("TCP_NODELAY");
            stream.set_read_timeout(Some(Duration::from_secs(5))).expect("SO_RCVTIMEO");
            let before = Counters::now();
            let mut times: Vec<f64> = (0..REQUESTS)
                .map(|_| {
                    let started = Instant::now();
                    stream.write_all(b"GET / HTTP/1.1\r\n").expect("write");
                    stream.write_all(b"Host: lab-exp\r\n\r\n").expect("write");
                    let (status, _) = net::read_response(&mut stream).expect("read");
                    assert_eq!(status, 200);
                    ms(started.elapsed())
                })
                .collect();
            let delayed_acks = before.delta(&Counters::now(), "TcpExt.DelayedACKs");
            times.sort_by(f64::total_cmp);
            let median = times[REQUESTS / 2];
            let label = format!(
                "client {}, server {}",
                if client_nodelay { "TCP_NODELAY" } else { "Nagle on" },
                if server_nodelay { "default (TCP_NODELAY)" } else { "--no-nodelay" }
            );
            report.observe(format!(
                "{label}: median {median} ms, min {} ms, max {} ms; DelayedACKs +{delayed_acks}",
                times[0],
                times[REQUESTS - 1]
            ));
            let key = format!(
                "client_{}_server_{}",
                if client_nodelay { "nodelay" } else { "nagle" },
                if server_nodelay { "nodelay" } else { "nagle" }
            );
            medians.insert(
                key.clone(),
                serde_json::json!({ "median_ms": median, "delayed_acks": delayed_acks }),
            );
            results.push((client_nodelay, server_nodelay, median, delayed_acks));
        }
    }
    report.figure("runs", serde_json::Value::Object(medians));
    let nagle: Vec<_> = results.iter().filter(|r| !r.0).collect();
    let nodelay: Vec<_> = results.iter().filter(|r| r.0).collect();
    report.check(
        "with the client's Nagle on, write-write-read takes ≥ 30 ms a request (median), whatever the server's setting",
        nagle.iter().all(|r| r.2 >= 30.0 && r.2 <= 250.0),
        format!("{:?} ms", nagle.iter().map(|r| r.2).collect::<Vec<_>>()),
    );
    report.check(
        "the server's delayed-ACK timer fired for most of those requests (DelayedACKs ≥ half the requests)",
        nagle.iter().all(|r| r.3 >= (REQUESTS / 2) as i64),
        format!("{:?}", nagle.iter().map(|r| r.3).collect::<Vec<_>>()),
    );
    report.check(
        "with TCP_NODELAY on the client, the same exchange takes < 5 ms (median) and no delayed ACK waits for it",
        nodelay.iter().all(|r| r.2 < 5.0 && r.3 < (REQUESTS / 2) as i64),
        format!("{:?} ms, DelayedACKs {:?}", nodelay.iter().map(|r| r.2).collect::<Vec<_>>(), nodelay.iter().map(|r| r.3).collect::<Vec<_>>()),
    );
    // The server's own setting: each response batch is one write, and Linux's Nagle (Minshall's
    // variant) holds a small segment only while an earlier small one is unacknowledged.
    let server_effect = results.chunks(2).map(|pair| (pair[0].2 - pair[1].2).abs()).fold(0.0, f64::max);
    report.observe(format!(
        "the server's --no-nodelay changed no median by more than {server_effect:.3} ms: lab-* send each \
         batch of responses with one write, so Nagle on the server's side never has a small segment \
         unacknowledged to wait behind"
    ));
    report.check(
        "on the server's side (one write per response batch) --no-nodelay makes no difference: medians within 5 ms",
        server_effect < 5.0,
        format!("largest difference {server_effect:.3} ms"),
    );
}
