//! The arrival-order workload: lab-memcached's `--dispatch rr|p2c|least` against the imbalance the
//! notes warn about (docs/background.md). On N workers, 2N keep-alive connections arrive 0.3 s apart, each looping on its
//! request from the moment it opens (a lab-load of one connection), alternately heavy
//! (`/spin?us=2000`) and light (`/`). Round-robin puts every heavy connection on the same half of
//! the workers; a load-aware policy sees those workers busy and spreads them. The reference is
//! round-robin with the heavy connections arriving first, which spreads them by luck.
//!
//! Every lab-load measures the same 3 s after the last arrival (its warm-up lasts until then), and
//! /stats before and after gives each worker's share of the requests.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::measure::{network, spawn_load, Load, LoadChild, Server};
use crate::plan::{Launch, Target};
use crate::stats::{jain, median};

const HEAVY: &str = "/spin?us=2000";
const LIGHT: &str = "/";
/// Between two connections' arrivals.
const GAP_S: f64 = 0.3;
/// The window every connection is measured over, after the last arrival.
const WINDOW_S: f64 = 3.0;

/// The cases, in the order they run and are shown: (server id, --dispatch, heavy connections first).
const CASES: [(&str, &str, bool); 4] = [
    ("memcached-rr", "rr", false),
    ("memcached-p2c", "p2c", false),
    ("memcached-least", "least", false),
    ("memcached-rr-heavy-first", "rr", true),
];

/// `targets` with lab-memcached followed by itself under `--dispatch p2c` and `--dispatch least`,
/// so that the fairness workload compares the three policies.
pub fn with_dispatch_variants(targets: &[Target]) -> Vec<Target> {
    let mut all = Vec::new();
    for target in targets {
        all.push(target.clone());
        if target.id == "memcached" {
            all.extend(
                ["p2c", "least"].map(|policy| with_dispatch(target, &format!("memcached-{policy}"), policy)),
            );
        }
    }
    all
}

/// `target` (lab-memcached) under another id and `--dispatch policy`.
fn with_dispatch(target: &Target, id: &str, policy: &str) -> Target {
    let mut target = target.clone();
    target.id = id.into();
    if let Launch::Lab { args, .. } = &mut target.launch {
        args.extend(["--dispatch".into(), policy.into()]);
    }
    target
}

/// Seconds of load one case's round takes (for the progress estimate).
pub fn seconds_per_run(workers: usize) -> f64 {
    (2 * workers) as f64 * GAP_S + WINDOW_S
}

/// How many runs `run` makes.
pub fn runs(rounds: usize) -> usize {
    CASES.len() * rounds
}

/// Runs every case `rounds` times on `memcached` (the sweep's lab-memcached target) with clients on
/// `client_cpus`; `step` reports each run. Returns one record per case.
pub fn run(
    memcached: &Target,
    client_cpus: &[usize],
    rounds: usize,
    scratch: &Path,
    mut step: impl FnMut(f64, &str),
) -> Vec<Value> {
    let n = memcached.workers.max(1);
    let mut records = Vec::new();
    for (id, policy, heavy_first) in CASES {
        let target = with_dispatch(memcached, id, policy);
        let order: Vec<&str> = if heavy_first {
            [vec![HEAVY; n], vec![LIGHT; n]].concat()
        } else {
            (0..2 * n).map(|i| if i % 2 == 0 { HEAVY } else { LIGHT }).collect()
        };
        let mut rounds_json = Vec::new();
        let mut problems = Vec::new();
        for round in 1..=rounds {
            match run_once(&target, &order, client_cpus, scratch) {
                Ok(result) => {
                    step(
                        seconds_per_run(n),
                        &format!(
                            "{id} arrival-order round {round}/{rounds}: {} heavy requests in {WINDOW_S} s, Jain {:.2}",
                            result["heavy_requests"], result["jain_requests"].as_f64().unwrap_or(f64::NAN)
                        ),
                    );
                    if let Some(problem) = result["problem"].as_str() {
                        problems.push(format!("round {round}: {problem}"));
                    }
                    rounds_json.push(result);
                }
                Err(reason) => {
                    step(seconds_per_run(n), &format!("{id} arrival-order round {round}: FAILED: {reason}"));
                    problems.push(format!("round {round}: {reason}"));
                    rounds_json.push(json!({"error": reason}));
                }
            }
        }
        let valid: Vec<&Value> =
            rounds_json.iter().filter(|r| r.get("error").is_none() && r["problem"].is_null()).collect();
        let med = |key: &str| median(&valid.iter().filter_map(|r| r[key].as_f64()).collect::<Vec<_>>());
        records.push(json!({
            "server": id,
            "family": "memcached",
            "workers": n,
            "cpus": memcached.cpus,
            "workload": "arrival-order",
            "dispatch": policy,
            "order": order.iter().map(|&p| if p == HEAVY { "heavy" } else { "light" }).collect::<Vec<_>>(),
            "heavy_path": HEAVY,
            "window_s": WINDOW_S,
            "rounds": rounds_json,
            "heavy_requests": med("heavy_requests"),
            "heavy_ideal_requests": n as f64 * WINDOW_S * 1e6 / 2000.0,
            "heavy_p99_us": med("heavy_p99_us"),
            "light_p99_us": med("light_p99_us"),
            "jain_requests": med("jain_requests"),
            "valid": problems.is_empty() && !valid.is_empty(),
            "problems": problems,
        }));
    }
    records
}

/// One round: starts the server, the lab-loads one by one, and reads /stats around the window.
fn run_once(target: &Target, order: &[&str], client_cpus: &[usize], scratch: &Path) -> Result<Value, String> {
    let server = Server::start(target, scratch)?;
    let before = server.stats()?;
    let started = Instant::now();
    let last_arrival = (order.len() - 1) as f64 * GAP_S;
    // Every connection from the first client: one connection each, nothing to split.
    let prefix = &network().clients[0];
    let mut children: Vec<LoadChild> = Vec::new();
    for (i, path) in order.iter().enumerate() {
        let arrival = i as f64 * GAP_S;
        std::thread::sleep(Duration::from_secs_f64(arrival).saturating_sub(started.elapsed()));
        let load = Load {
            path: path.to_string(),
            connections: 1,
            client_cpus: vec![client_cpus[i % client_cpus.len()]],
            duration: WINDOW_S,
            warmup: last_arrival - arrival,
            flags: Vec::new(),
            ca: None,
        };
        children.push(spawn_load(&load, server.addr(), prefix)?);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(last_arrival + WINDOW_S + 15.0);
    let mut documents = Vec::new();
    for child in children {
        documents.push(child.finish(deadline)?);
    }
    let after = server.stats()?;
    let (mut heavy_requests, mut heavy_p99, mut light_p99) = (0, 0.0f64, 0.0f64);
    for (path, doc) in order.iter().zip(&documents) {
        let p99 = doc["latency_us"]["p99"].as_f64().unwrap_or(0.0);
        if *path == HEAVY {
            heavy_requests += doc["requests"].as_u64().unwrap_or(0);
            heavy_p99 = heavy_p99.max(p99);
        } else {
            light_p99 = light_p99.max(p99);
        }
    }
    let errors: u64 = documents
        .iter()
        .map(|d| d["errors"].as_object().map_or(0, |e| e.values().filter_map(Value::as_u64).sum::<u64>()))
        .sum::<u64>()
        + documents.iter().filter_map(|d| d["lost"].as_u64()).sum::<u64>();
    let requests = requests_per_worker(&before, &after);
    let total: f64 = requests.iter().sum::<f64>().max(1.0);
    Ok(json!({
        "heavy_requests": heavy_requests,
        "heavy_p99_us": heavy_p99,
        "light_p99_us": light_p99,
        "worker_requests": requests,
        "worker_shares": requests.iter().map(|r| r / total).collect::<Vec<_>>(),
        "jain_requests": jain(&requests),
        "problem": (errors > 0).then(|| format!("{errors} errors or lost requests")),
    }))
}

/// Each worker's requests between two /stats reports (the acceptor executes none).
fn requests_per_worker(before: &Value, after: &Value) -> Vec<f64> {
    let requests = |doc: &Value| -> Vec<f64> {
        let workers = doc["workers"].as_array().into_iter().flatten();
        workers.filter(|w| w["role"] == "worker").map(|w| w["requests"].as_f64().unwrap_or(0.0)).collect()
    };
    requests(after)
        .iter()
        .zip(requests(before).iter().chain(std::iter::repeat(&0.0)))
        .map(|(a, b)| a - b)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_requests_are_counted_over_the_window() {
        let stats = |a: u64, b: u64| {
            json!({"workers": [{"role": "acceptor", "requests": 0}, {"role": "worker", "requests": a},
                               {"role": "worker", "requests": b}]})
        };
        assert_eq!(requests_per_worker(&stats(10, 20), &stats(110, 70)), vec![100.0, 50.0]);
    }
}
