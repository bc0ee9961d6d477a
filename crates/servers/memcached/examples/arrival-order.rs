//! The arrival-order scenario of `--dispatch` (issue 12), as a command:
//!
//!     cargo build --release && cargo run --release -p memcached --example arrival-order [-- ROUNDS]
//!
//! lab-memcached with 2 workers on CPUs 0-1. Four keep-alive connections arrive 0.3 s apart, each
//! looping on its request from the moment it opens: heavy (`/spin?us=2000`), light (`/`), heavy,
//! light. Round-robin puts both heavy connections on one worker; a load-aware policy should see that
//! worker busy and spread them, as arriving in the order heavy, heavy, light, light does under
//! round-robin. Prints, per policy and round, the heavy requests completed in the 3 s after the last
//! arrival and each worker's share of all requests, then the medians. A benchmark, not a test.

use std::thread;
use std::time::{Duration, Instant};

use labkit::{spawn, Server};

const HEAVY: &str = "/spin?us=2000";
const LIGHT: &str = "/";
const GAP: Duration = Duration::from_millis(300);
const WINDOW: Duration = Duration::from_secs(3);

const MEMCACHED: Server = Server::other("memcached", "lab-memcached", &["--workers", "2", "--cpus", "0-1"]);

/// One run: heavy requests completed in the window, and each worker's requests from /stats.
fn run(policy: &str, order: [&'static str; 4]) -> (u64, Vec<u64>) {
    let server = spawn(&MEMCACHED, &["--dispatch", policy]);
    let start = Instant::now();
    let window_start = start + GAP * 3;
    let window_end = window_start + WINDOW;
    let loops: Vec<_> = order
        .iter()
        .enumerate()
        .map(|(i, &path)| {
            let addr = server.addr();
            thread::spawn(move || {
                thread::sleep((start + GAP * i as u32).saturating_duration_since(Instant::now()));
                let mut client = labkit::Client::connect(addr);
                let mut completed = 0;
                while Instant::now() < window_end {
                    assert_eq!(client.get(path).status, 200, "{path}");
                    let done = Instant::now();
                    completed += u64::from(done >= window_start && done < window_end);
                }
                (path, completed)
            })
        })
        .collect();
    let heavy = loops
        .into_iter()
        .map(|l| l.join().expect("a client loop"))
        .filter(|(p, _)| *p == HEAVY)
        .map(|(_, n)| n)
        .sum();
    let stats = server.connect().stats();
    let workers = stats["workers"].as_array().expect("workers");
    let requests = workers
        .iter()
        .filter(|w| w["role"] == "worker")
        .map(|w| w["requests"].as_u64().unwrap_or(0))
        .collect();
    (heavy, requests)
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(3, |arg| arg.parse().expect("ROUNDS: a number"));
    let cases = [
        ("rr", [HEAVY, LIGHT, HEAVY, LIGHT]),
        ("p2c", [HEAVY, LIGHT, HEAVY, LIGHT]),
        ("least", [HEAVY, LIGHT, HEAVY, LIGHT]),
        ("rr", [HEAVY, HEAVY, LIGHT, LIGHT]),
    ];
    println!("| arrival order | --dispatch | heavy requests in {} s, per round | median | worker requests (last round) |", WINDOW.as_secs());
    println!("|---|---|---|---|---|");
    let mut reference = 0;
    for (policy, order) in cases {
        let runs: Vec<(u64, Vec<u64>)> = (0..rounds).map(|_| run(policy, order)).collect();
        let heavy: Vec<u64> = runs.iter().map(|(h, _)| *h).collect();
        let names: Vec<&str> = order.iter().map(|&p| if p == HEAVY { "heavy" } else { "light" }).collect();
        let med = median(heavy.clone());
        if policy == "rr" && reference == 0 {
            reference = med;
        }
        println!(
            "| {} | {policy} | {heavy:?} | {med} ({:.2}× rr) | {:?} |",
            names.join(", "),
            med as f64 / reference.max(1) as f64,
            runs.last().map(|(_, r)| r.clone()).unwrap_or_default()
        );
    }
}
