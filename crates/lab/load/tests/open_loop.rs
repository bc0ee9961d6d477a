//! The open loop keeps its schedule: the rate is the rate asked for, latency counts from the
//! scheduled time, and a server that stalls shows the stall (no coordinated omission). Bounds are
//! generous: these run on small shared machines.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use support::*;

/// One test at a time: each measures time, and two at once on a two-core machine disturb each other.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn assert_within(value: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (value - expected).abs() <= expected * tolerance,
        "{what}: {value}, expected {expected} ± {tolerance}"
    );
}

#[test]
fn the_open_loop_sends_the_rate_asked_for() {
    let _serial = serial();
    let url = format!("http://{}/", good_server());
    for (rate, arrivals) in [("1000", "uniform"), ("20000", "poisson")] {
        let json =
            run_load(&[&url, "-r", rate, "--arrivals", arrivals, "-c", "8", "-d", "2", "--warmup", "0.5"]);
        let expected = 2.0 * rate.parse::<f64>().unwrap();
        // Poisson: 40,000 ± 200 (one standard deviation), so 2% is four of them.
        assert_within(number(&json, &["sent"]), expected, 0.02, arrivals);
        assert_within(number(&json, &["requests"]), expected, 0.02, arrivals);
        assert_eq!(number(&json, &["lost"]), 0.0, "{}", errors(&json));
        assert_eq!(number(&json, &["duration_s"]), 2.0);
    }
}

#[test]
fn requests_ends_after_exactly_that_many() {
    let _serial = serial();
    let url = format!("http://{}/", good_server());
    for extra in [&[][..], &["-r", "5000"], &["--pipeline", "4"]] {
        let json =
            run_load(&[&[url.as_str(), "-n", "1000", "-c", "4", "-t", "2", "--warmup", "0"], extra].concat());
        assert_eq!(number(&json, &["requests"]), 1000.0, "{extra:?}: {}", errors(&json));
        assert_eq!(number(&json, &["sent"]), 1000.0, "{extra:?}");
    }
}

#[test]
fn percentiles_come_from_the_latencies_the_server_made() {
    let _serial = serial();
    // Every tenth response waits 50 ms; at 200 requests/s over 50 connections none has to queue.
    let answered = Arc::new(AtomicU64::new(0));
    let addr = serve(move |stream| {
        let answered = Arc::clone(&answered);
        answer_each(stream, move || {
            if answered.fetch_add(1, Ordering::Relaxed) % 10 == 9 {
                thread::sleep(Duration::from_millis(50));
            }
            HELLO.to_vec()
        })
    });
    let url = format!("http://{addr}/");
    let json =
        run_load(&[&url, "-r", "200", "--arrivals", "uniform", "-c", "50", "-d", "2", "--warmup", "0.2"]);
    let latency = |p: &str| number(&json, &["latency_us", p]);
    assert!(latency("p50") < 20_000.0, "p50 {}", json["latency_us"]);
    assert!(latency("p90") >= 49_000.0 || latency("p99") >= 49_000.0, "{}", json["latency_us"]);
    assert!((49_000.0..200_000.0).contains(&latency("p99")), "{}", json["latency_us"]);
    // A tenth of the responses at 50 ms bring the mean to at least 5 ms.
    assert!(latency("mean") >= 4_900.0, "{}", json["latency_us"]);
}

#[test]
fn a_server_stall_shows_in_the_corrected_latency_only() {
    let _serial = serial();
    let server = Epoll::start();
    let addr = server.addr;
    // One second into the measured time, a request that stalls lab-epoll's only thread for a second.
    let staller = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1500));
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"GET /sleep?ms=1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        assert!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response));
    });
    let json = run_load(&[&server.url("/"), "-r", "2000", "-c", "16", "-d", "5", "--warmup", "0.5"]);
    staller.join().unwrap();
    assert_eq!(number(&json, &["lost"]), 0.0, "{}", errors(&json));
    let p99 = number(&json, &["latency_us", "p99"]);
    let uncorrected_p99 = number(&json, &["uncorrected_latency_us", "p99"]);
    // Requests due during the stall wait up to a second each: a fifth of all of them, so the p99 is
    // deep in it. Only the 16 already sent when it began wait that long after their send.
    assert!(p99 >= 500_000.0, "corrected p99 {p99} µs: {}", json["latency_us"]);
    assert!(
        uncorrected_p99 < 100_000.0,
        "uncorrected p99 {uncorrected_p99} µs: {}",
        json["uncorrected_latency_us"]
    );
    assert!(number(&json, &["late"]) >= 1000.0, "late {}", json["late"]);
}

#[test]
fn close_mode_opens_a_connection_per_request_and_times_connects() {
    let _serial = serial();
    let server = Epoll::start();
    let json = run_load(&[&server.url("/"), "--close", "-c", "8", "-d", "1", "--warmup", "0.2"]);
    let requests = number(&json, &["requests"]);
    assert!(requests > 100.0, "{json}");
    assert_eq!(
        number(&json, &["errors", "connect"]) + number(&json, &["errors", "reset"]),
        0.0,
        "{}",
        errors(&json)
    );
    assert_eq!(number(&json, &["lost"]), 0.0);
    // A connect per request (those started in the warm-up are not counted).
    assert_within(number(&json, &["connect", "count"]), requests, 0.05, "connects");
    assert!(number(&json, &["connect", "latency_us", "p50"]) > 0.0);
}
