//! l4-vs-l7: two backends behind a balancer that picks one per connection (layer 4) or one per
//! request (layer 7), with a few long-lived client connections, some of them heavy.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Experiment;
use crate::net;
use crate::relay::{self, Framed};
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "l4-vs-l7",
    summary: "a balancer per connection (L4) against per request (L7): per-backend requests, Jain's index, the heavy requests' p99",
    claim: "A layer-4 balancer picks a backend once per connection and never looks inside: a long-lived \
            connection stays on its backend however heavy its requests, so two heavy connections that \
            land together queue behind each other while the other backend serves the light ones. A \
            layer-7 balancer parses each request and can send every one to the less busy backend: the \
            requests spread evenly and the heavy ones stop waiting for each other. It is memcached \
            (a connection handed to a worker for good) against RAMCloud (each request to a free \
            worker), one level up.",
    notes: "'Load Balancer: layer 4: for a single connection all it will use a single backend, no data \
            inspection; layer 7: any logical request -> new backend, understands the segment'",
    needs_namespace: false,
    run,
};

/// Per client connection: heavy ones ask for this much sleep on the backend, light ones for `/`.
const HEAVY: &str = "/sleep?ms=20";
const LIGHT: &str = "/";
/// The client connections, in the order they open: heavy, light, heavy, light.
const CLIENTS: [bool; 4] = [true, false, true, false];
/// A light client's pause between requests (a real client thinks too).
const LIGHT_THINK: Duration = Duration::from_millis(1);
const RUN: Duration = Duration::from_millis(1500);

/// How the balancer chooses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Four,
    Seven,
}

/// Layer 4: each client connection spliced to one backend, chosen round-robin when it opens.
fn l4_balancer(backends: [SocketAddr; 2]) -> SocketAddr {
    relay::listen(move |client, seq| {
        // `seq` is the connection's place in accept order, counted on the accepting thread: taking a
        // turn here, on the connection's own thread, would race and could put a heavy and a light
        // connection on each backend.
        let backend = backends[seq % backends.len()];
        let Ok(upstream) = TcpStream::connect(backend) else { return };
        let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
        let (Ok(mut client_in), Ok(mut upstream_out)) = (client.try_clone(), upstream.try_clone()) else {
            return;
        };
        let up = thread::spawn(move || {
            let _ = std::io::copy(&mut client_in, &mut upstream_out);
            let _ = upstream_out.shutdown(std::net::Shutdown::Write);
        });
        let (mut upstream_in, mut client_out) = (upstream, client);
        let _ = std::io::copy(&mut upstream_in, &mut client_out);
        let _ = client_out.shutdown(std::net::Shutdown::Both);
        let _ = up.join();
    })
}

/// One backend as the layer-7 balancer sees it: requests in flight there, and idle kept-alive
/// connections to it.
struct Backend {
    addr: SocketAddr,
    in_flight: AtomicUsize,
    idle: Mutex<Vec<Framed>>,
}

/// Layer 7: each request read whole and sent to the backend with fewer requests in flight (ties
/// taken in turn), over a kept-alive connection from that backend's pool.
fn l7_balancer(addrs: [SocketAddr; 2]) -> SocketAddr {
    let backends: Arc<Vec<Backend>> = Arc::new(
        addrs
            .iter()
            .map(|&addr| Backend { addr, in_flight: AtomicUsize::new(0), idle: Mutex::new(Vec::new()) })
            .collect(),
    );
    let turn = Arc::new(AtomicUsize::new(0));
    relay::listen(move |client, _| {
        let mut client = Framed::new(client);
        while let Ok(Some(request)) = client.read_message() {
            let first = turn.fetch_add(1, Ordering::Relaxed) % 2;
            let pick = {
                let [a, b] = [first, 1 - first].map(|i| backends[i].in_flight.load(Ordering::Acquire));
                if b < a {
                    1 - first
                } else {
                    first
                }
            };
            let backend = &backends[pick];
            backend.in_flight.fetch_add(1, Ordering::AcqRel);
            let pooled = backend.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let response =
                pooled.map_or_else(|| Framed::connect(backend.addr), Ok).and_then(|mut upstream| {
                    upstream.write(&request)?;
                    let response = upstream.read_message()?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
                    backend.idle.lock().unwrap_or_else(|p| p.into_inner()).push(upstream);
                    Ok(response)
                });
            backend.in_flight.fetch_sub(1, Ordering::AcqRel);
            match response {
                Ok(response) if client.write(&response).is_ok() => {}
                _ => break,
            }
        }
        client.close();
    })
}

/// The requests each backend executed, from its /stats (less the /stats request that reads it).
fn requests(backend: SocketAddr) -> u64 {
    net::stats(&mut net::connect(backend))["totals"]["requests"].as_u64().unwrap_or(0)
}

/// Jain's fairness index over `counts`: 1 when all are equal, 1/n when one has everything.
fn jain(counts: &[u64]) -> f64 {
    let sum: f64 = counts.iter().map(|&c| c as f64).sum();
    let squares: f64 = counts.iter().map(|&c| (c as f64).powi(2)).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (counts.len() as f64 * squares)
}

/// The `q` quantile of `values` (sorted here), in ms.
fn quantile(values: &mut [Duration], q: f64) -> f64 {
    values.sort();
    match values.len() {
        0 => 0.0,
        n => net::ms(values[((n as f64 * q).ceil() as usize).clamp(1, n) - 1]),
    }
}

/// The per-backend requests and the latencies of heavy and light requests under one balancer.
struct Outcome {
    per_backend: [u64; 2],
    jain: f64,
    heavy_p99_ms: f64,
    heavy_p50_ms: f64,
    light_p99_ms: f64,
    heavy: usize,
    light: usize,
}

fn measure(layer: Layer) -> Outcome {
    let servers = [net::start("lab-epoll", &[]), net::start("lab-epoll", &[])];
    let backends = [servers[0].addr(), servers[1].addr()];
    let balancer = match layer {
        Layer::Four => l4_balancer(backends),
        Layer::Seven => l7_balancer(backends),
    };
    let before = backends.map(requests);
    // Connections opened one after another, in CLIENTS order, before any load starts.
    let conns: Vec<(bool, Framed)> = CLIENTS
        .iter()
        .map(|&heavy| {
            (heavy, Framed::connect(balancer).unwrap_or_else(|e| panic!("connect {balancer}: {e}")))
        })
        .collect();
    let start = Instant::now();
    let clients: Vec<_> = conns
        .into_iter()
        .map(|(heavy, mut conn)| {
            thread::spawn(move || {
                let path = if heavy { HEAVY } else { LIGHT };
                let request = format!("GET {path} HTTP/1.1\r\nHost: lab-exp\r\n\r\n").into_bytes();
                let mut latencies = Vec::new();
                while start.elapsed() < RUN {
                    let sent = Instant::now();
                    let answered = conn.write(&request).and_then(|()| conn.read_message());
                    match answered {
                        Ok(Some(response)) if relay::status(&response) == 200 => {
                            latencies.push(sent.elapsed())
                        }
                        _ => break,
                    }
                    if !heavy {
                        thread::sleep(LIGHT_THINK);
                    }
                }
                conn.close();
                (heavy, latencies)
            })
        })
        .collect();
    let mut heavy = Vec::new();
    let mut light = Vec::new();
    for client in clients {
        let (is_heavy, latencies) = client.join().expect("a client thread");
        if is_heavy { &mut heavy } else { &mut light }.extend(latencies);
    }
    let after = backends.map(requests);
    let per_backend = [after[0] - before[0] - 1, after[1] - before[1] - 1];
    Outcome {
        per_backend,
        jain: jain(&per_backend),
        heavy_p99_ms: quantile(&mut heavy, 0.99),
        heavy_p50_ms: quantile(&mut heavy, 0.50),
        light_p99_ms: quantile(&mut light, 0.99),
        heavy: heavy.len(),
        light: light.len(),
    }
}

fn run(report: &mut Report) {
    report.does(format!(
        "starts two lab-epoll backends (one thread each: a request that sleeps holds its backend) and a \
         balancer inside lab-exp; opens {} long-lived client connections in this order: heavy, light, \
         heavy, light (heavy: GET {HEAVY} in a loop; light: GET {LIGHT}, {} ms apart); runs them {} ms",
        CLIENTS.len(),
        LIGHT_THINK.as_millis(),
        RUN.as_millis()
    ));
    report.does(
        "layer 4: each client connection spliced (bytes copied both ways, nothing parsed) to one backend \
         chosen round-robin as it opens, the choice lab-memcached makes per connection; layer 7: each \
         request read whole and sent to the backend with fewer requests in flight (ties in turn) over \
         kept-alive upstream connections, the choice lab-ramcloud makes per request",
    );
    report.does("per-backend requests from each backend's /stats; Jain's index J = (Σx)² / (n·Σx²)");
    let l4 = measure(Layer::Four);
    let l7 = measure(Layer::Seven);
    for (label, o) in [("layer 4", &l4), ("layer 7", &l7)] {
        report.observe(format!(
            "{label}: backends executed {} and {} requests (J = {:.3}); heavy requests p50 {} ms, p99 {} ms \
             ({} of them); light requests p99 {} ms ({} of them)",
            o.per_backend[0],
            o.per_backend[1],
            o.jain,
            o.heavy_p50_ms,
            o.heavy_p99_ms,
            o.heavy,
            o.light_p99_ms,
            o.light
        ));
        report.figure(
            if label == "layer 4" { "l4" } else { "l7" },
            json!({ "per_backend": o.per_backend, "jain": (o.jain * 1000.0).round() / 1000.0,
                    "heavy_p50_ms": o.heavy_p50_ms, "heavy_p99_ms": o.heavy_p99_ms, "heavy_requests": o.heavy,
                    "light_p99_ms": o.light_p99_ms, "light_requests": o.light }),
        );
    }
    report.observe(
        "the same split as lab-memcached against lab-ramcloud inside one server: a connection handed out \
         once cannot move when its requests turn heavy; a request handed out on its own can go wherever \
         there is room — at the price, here as there, of parsing every request and of a light request \
         waiting behind a heavy one when every backend is busy (the light p99 above); and fewer requests \
         in flight is not less work: when the two backends tie (a light request in flight at each), a \
         heavy one can still land behind the other heavy, which is what a layer-7 heavy p99 near the \
         layer-4 one means",
    );
    report.check(
        "layer 7 spreads requests over the backends more evenly than layer 4 (higher Jain's index)",
        l7.jain > l4.jain + 0.1,
        format!("J {:.3} (layer 7) against {:.3} (layer 4)", l7.jain, l4.jain),
    );
    report.check(
        "under layer 4 the two heavy connections share a backend and queue behind each other; under \
         layer 7 they do not, as a rule: the typical (median) heavy request waits less by at least a quarter",
        l7.heavy_p50_ms < 0.75 * l4.heavy_p50_ms,
        format!("p50 {} ms (layer 7) against {} ms (layer 4)", l7.heavy_p50_ms, l4.heavy_p50_ms),
    );
    report.check(
        "layer 4 kept each connection on one backend: one backend executed only the heavy requests, \
         the other only the (more numerous) light ones",
        {
            let mut split = l4.per_backend.map(|n| n as usize);
            split.sort_unstable();
            l4.light > l4.heavy && split == [l4.heavy, l4.light]
        },
        format!("per backend {:?}, heavy requests {}, light {}", l4.per_backend, l4.heavy, l4.light),
    );
}
