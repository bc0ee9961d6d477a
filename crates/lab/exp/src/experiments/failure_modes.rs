//! failure-modes: each architecture's own way to fail, made visible in /stats and ss (the figures
//! docs/architectures.md quotes). lab-reuseport's is in reuseport-balance.

use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::Experiment;
use crate::kernel;
use crate::net::{self, ms};
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "failure-modes",
    summary: "one failure mode per architecture: epoll stalls, memcached's blind round-robin, ramcloud's escape, nginx's accept turns, oneshot's wake-up per request",
    claim: "Each way of dividing listen, accept, read and execute has its own failure: one thread \
            stalls everyone behind a slow request (epoll); connections handed out round-robin \
            balance connections, not work (memcached); handing out requests instead escapes both \
            (ramcloud); threads sharing one socket take turns unevenly or all wake for each \
            connection (nginx); one epoll shared by every thread escapes the round-robin too, \
            but hands out one connection per wake-up, so it gives up the batching of a loop that \
            owns its connections (oneshot).",
    notes: "'Single Listener / Single Worker Thread ... congestion in accept queue', 'The issue with \
            this design is that one thread can be over consumed', 'Single Listener / Multiple worker \
            threads but with load balancing', 'Multiple Acceptor threads on a Single Socket'",
    needs_namespace: false,
    run,
};

fn run(report: &mut Report) {
    epoll_stall(report);
    memcached_imbalance(report);
    ramcloud_escape(report);
    nginx_turns(report);
    oneshot_price(report);
}

/// One keep-alive request on `stream`, timed.
fn timed_get(stream: &mut TcpStream, path: &str) -> Duration {
    let started = Instant::now();
    let (status, _) = net::get(stream, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, 200, "GET {path}");
    started.elapsed()
}

fn sleep_in_background(addr: SocketAddr, path: &'static str) -> thread::JoinHandle<Duration> {
    let mut stream = net::connect(addr);
    thread::spawn(move || timed_get(&mut stream, path))
}

fn epoll_stall(report: &mut Report) {
    report.does("lab-epoll: while GET /sleep?ms=1000 executes, 20 clients connect; ss -ltn, then a GET / sent 200 ms into the sleep is timed");
    let server = net::start("lab-epoll", &[]);
    let addr = server.addr();
    let mut other = net::connect(addr);
    let sleeper = sleep_in_background(addr, "/sleep?ms=1000");
    thread::sleep(Duration::from_millis(100));
    let waiting: Vec<TcpStream> = (0..20).map(|_| net::connect(addr)).collect();
    thread::sleep(Duration::from_millis(100));
    let queued = kernel::ss_listeners(addr.port()).first().map_or(0, |l| l.recv_q);
    let waited = timed_get(&mut other, "/");
    let _ = sleeper.join();
    drop(waiting);
    report.observe(format!(
        "lab-epoll: during one /sleep?ms=1000, ss -ltn showed {queued} connections in the accept queue, and a GET / on an open connection took {} ms",
        ms(waited)
    ));
    report.figure("epoll", serde_json::json!({ "accept_queue": queued, "get_ms": ms(waited) }));
    report.check(
        "epoll: one slow request stalls everyone: the 20 new clients wait in the accept queue and a GET / waits out the sleep (≥ 500 ms)",
        queued == 20 && waited >= Duration::from_millis(500),
        format!("Recv-Q {queued}, GET / {} ms", ms(waited)),
    );
}

fn memcached_imbalance(report: &mut Report) {
    report.does("lab-memcached --workers 2: four keep-alive connections for 2 s, opened heavy (/spin?us=2000), light (/), heavy, light; /stats per worker and each connection's mean latency");
    let (requests, heavy_ms) = heavy_and_light(report, "lab-memcached", "/spin?us=2000");
    report.check(
        "memcached: round-robin put both heavy connections on one worker: each waits for the other's spin (mean ≥ 3 ms for 2 ms of work) while the other worker serves only light requests",
        heavy_ms.iter().all(|&t| t >= 3.0) && requests.len() == 2 && requests.iter().max() > requests.iter().min().map(|m| m * 10).as_ref(),
        format!("heavy {heavy_ms:?} ms, requests {requests:?}"),
    );
}

/// Four keep-alive connections to `bin --workers 2` for 2 s, opened heavy (`heavy`, 2 ms), light,
/// heavy, light: requests per executing worker, and the heavy connections' mean latencies in ms.
fn heavy_and_light(report: &mut Report, bin: &'static str, heavy: &'static str) -> (Vec<u64>, Vec<f64>) {
    let server = net::start(bin, &["--workers", "2"]);
    let addr = server.addr();
    let mut loops = Vec::new();
    for path in [heavy, "/", heavy, "/"] {
        let mut stream = net::connect(addr);
        loops.push(thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(2);
            let (mut count, mut total) = (0u32, Duration::ZERO);
            while Instant::now() < end {
                total += timed_get(&mut stream, path);
                count += 1;
            }
            (path, count, total / count.max(1))
        }));
        thread::sleep(Duration::from_millis(50));
    }
    let results: Vec<(&str, u32, Duration)> = loops.into_iter().map(|l| l.join().expect("client")).collect();
    let stats = net::stats(&mut net::connect(addr));
    let requests: Vec<u64> = stats["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["role"] == "worker")
        .map(|w| w["requests"].as_u64().unwrap_or(0))
        .collect();
    let heavy_ms: Vec<f64> = results.iter().filter(|r| r.0 != "/").map(|r| ms(r.2)).collect();
    report.observe(format!(
        "{bin}: requests per worker {requests:?}; heavy connections' mean latency {heavy_ms:?} ms (each asks 2 ms); light ones {:?} ms",
        results.iter().filter(|r| r.0 == "/").map(|r| ms(r.2)).collect::<Vec<_>>()
    ));
    let key = bin.strip_prefix("lab-").unwrap_or(bin);
    report.figure(key, serde_json::json!({ "requests_per_worker": requests, "heavy_mean_ms": heavy_ms }));
    (requests, heavy_ms)
}

fn ramcloud_escape(report: &mut Report) {
    report.does("lab-ramcloud --workers 2: while one worker sleeps in /sleep?ms=1000, 100 GET / on another connection are timed");
    let server = net::start("lab-ramcloud", &["--workers", "2"]);
    let addr = server.addr();
    let sleeper = sleep_in_background(addr, "/sleep?ms=1000");
    thread::sleep(Duration::from_millis(100));
    let mut stream = net::connect(addr);
    let slowest = (0..100).map(|_| timed_get(&mut stream, "/")).max().unwrap_or_default();
    let sleep_took = sleeper.join().unwrap_or_default();
    report.observe(format!(
        "lab-ramcloud: while a worker slept 1 s (its request took {} ms), the slowest of 100 GET / took {} ms",
        ms(sleep_took),
        ms(slowest)
    ));
    report.figure("ramcloud", serde_json::json!({ "slowest_get_ms": ms(slowest) }));
    report.check(
        "ramcloud: a slow request holds one worker, not its neighbours: every GET / during the sleep is answered in < 100 ms",
        slowest < Duration::from_millis(100) && sleep_took >= Duration::from_millis(1000),
        format!("slowest {} ms", ms(slowest)),
    );
}

fn nginx_turns(report: &mut Report) {
    report.does("lab-nginx --workers 3, --accept mutex, exclusive, herd: 60 connections opened one at a time and held silent; accepted and context-switch growth per worker from /stats");
    let mut figures = serde_json::Map::new();
    for mode in ["mutex", "exclusive", "herd"] {
        let server = net::start("lab-nginx", &["--workers", "3", "--accept", mode]);
        let addr = server.addr();
        thread::sleep(Duration::from_millis(200));
        let switches = |stats: &serde_json::Value| -> Vec<u64> {
            stats["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| w["context_switches"].as_u64().unwrap_or(0))
                .collect()
        };
        let before = switches(&net::stats(&mut net::connect(addr)));
        let held: Vec<TcpStream> = (0..60)
            .map(|_| {
                let stream = net::connect(addr);
                thread::sleep(Duration::from_millis(5));
                stream
            })
            .collect();
        thread::sleep(Duration::from_millis(200));
        let stats = net::stats(&mut net::connect(addr));
        let accepted: Vec<u64> = stats["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| w["accepted"].as_u64().unwrap_or(0))
            .collect();
        let grown: Vec<u64> =
            switches(&stats).iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).collect();
        drop(held);
        report.observe(format!(
            "lab-nginx --accept {mode}: accepted per worker {accepted:?}, context switches grew {grown:?}"
        ));
        figures.insert(mode.into(), serde_json::json!({ "accepted": accepted, "context_switches": grown }));
        let total: u64 = accepted.iter().sum();
        let (holds, expect) = match mode {
            "mutex" => (
                accepted.iter().max().is_some_and(|&m| m * 10 >= total * 9),
                "nginx mutex: the holder keeps winning: one worker accepts ≥ 90% of the connections",
            ),
            "exclusive" => (
                grown.iter().sum::<u64>() <= 90,
                "nginx exclusive: EPOLLEXCLUSIVE wakes one waiter per connection: ≤ 1.5 wake-ups per connection in all",
            ),
            _ => (
                grown.iter().all(|&g| g >= 50),
                "nginx herd: every worker is woken for every connection: each worker's context switches grow by ≥ 50 for 60 connections",
            ),
        };
        report.check(expect, holds, format!("accepted {accepted:?}, context switches {grown:?}"));
    }
    report.figure("nginx", serde_json::Value::Object(figures));
}

/// lab-oneshot: the four connections memcached balanced blindly, then what the central queue costs:
/// wake-ups and CPU per request under keep-alive load, against lab-memcached in the same run.
fn oneshot_price(report: &mut Report) {
    report.does("lab-oneshot --workers 2: four keep-alive connections as for memcached, the heavy ones holding a worker 2 ms each with /sleep?ms=2 (a sleep, not a spin: two spinning workers would take both of this 2-core machine's CPUs from the clients, and the question is where a request waits, not for which CPU); then lab-load -c 64 for 2 s against lab-oneshot and lab-memcached (--workers 2 each), wake-ups per request from /stats and CPU per request from /proc");
    let (requests, heavy_ms) = heavy_and_light(report, "lab-oneshot", "/sleep?ms=2");
    report.check(
        "oneshot: no connection is stuck behind another's heavy request: a ready connection goes to whichever worker is idle, so each heavy connection's mean stays under 3 ms for its 2 ms",
        heavy_ms.len() == 2 && heavy_ms.iter().all(|&t| t < 3.0) && requests.iter().all(|&r| r > 0),
        format!("heavy {heavy_ms:?} ms, requests {requests:?}"),
    );
    let mut per_request = serde_json::Map::new();
    for bin in ["lab-oneshot", "lab-memcached"] {
        let server = net::start(bin, &["--workers", "2"]);
        let addr = server.addr();
        let before = net::stats(&mut net::connect(addr));
        let cpu_before = labkit::cpu_time(server.pid());
        let load = net::load(addr, "/", &["-c", "64", "-d", "2", "--warmup", "0"]);
        let cpu = labkit::cpu_time(server.pid()).saturating_sub(cpu_before);
        let after = net::stats(&mut net::connect(addr));
        let total = |stats: &serde_json::Value, name: &str| -> u64 {
            let workers = stats["workers"].as_array().into_iter().flatten();
            workers.filter_map(|w| w[name].as_u64()).sum()
        };
        let served = total(&after, "requests").saturating_sub(total(&before, "requests")).max(1);
        let wakeups = total(&after, "wakeups").saturating_sub(total(&before, "wakeups"));
        let figures = serde_json::json!({
            "requests": served,
            "wakeups_per_request": (wakeups as f64 / served as f64 * 1000.0).round() / 1000.0,
            "cpu_us_per_request": (cpu.as_secs_f64() * 1e6 / served as f64 * 100.0).round() / 100.0,
            "rps": load["rps"],
        });
        report.observe(format!(
            "{bin} under lab-load -c 64: {served} requests, {} wake-ups per request, {} µs of server CPU per request, {} req/s",
            figures["wakeups_per_request"], figures["cpu_us_per_request"], figures["rps"]
        ));
        per_request.insert(bin.strip_prefix("lab-").unwrap_or(bin).into(), figures);
    }
    let wakeups = |arch: &str| per_request[arch]["wakeups_per_request"].as_f64().unwrap_or(0.0);
    report.check(
        "oneshot's price: one connection per wake-up, so about one epoll_wait per request (≥ 0.9) where memcached's workers, each taking every ready connection it owns at once, need fewer (< 0.9×oneshot's)",
        wakeups("oneshot") >= 0.9 && wakeups("memcached") < 0.9 * wakeups("oneshot"),
        format!("wake-ups per request: oneshot {}, memcached {}", wakeups("oneshot"), wakeups("memcached")),
    );
    report.figure("oneshot_under_load", serde_json::Value::Object(per_request));
}
