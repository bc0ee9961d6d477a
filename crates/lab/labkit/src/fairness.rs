//! The fairness workload, as lab-bench's `fairness` runs it and lab-exp reuseport-balance runs it
//! beside the sleep neighbour: a few long-lived keep-alive connections opened at once, half of them
//! heavy (`GET /spin?us=1000`, closed loop) and half light (`GET /`), one of each per worker and at
//! least two of each; and how evenly the server spread them, and the work, over the workers that
//! execute requests, from the per-worker counters of two /stats reads around the load.
//!
//! The read after the load is itself a connection and a request: over a run the workers' `conns`
//! are the load's connections and one more.

use serde_json::{json, Value};

/// How long a heavy request spins, in microseconds.
pub const HEAVY_SPIN_US: u64 = 1000;

/// The heavy connections' request target.
pub fn heavy_path() -> String {
    format!("/spin?us={HEAVY_SPIN_US}")
}

/// The light connections' request target.
pub const LIGHT_PATH: &str = "/";

/// Heavy connections, and as many light ones, for a server of `workers` executing workers.
pub fn connections_per_kind(workers: usize) -> usize {
    workers.max(2)
}

/// The heavy connections' requests per second if every one had a worker to itself: one closed loop of
/// [`HEAVY_SPIN_US`] each, on at most `workers` of them at once.
pub fn heavy_ideal_rps(per_kind: usize, workers: usize) -> f64 {
    per_kind.min(workers) as f64 * 1e6 / HEAVY_SPIN_US as f64
}

/// Jain's fairness index of `shares`: (Σx)² / (n · Σx²). 1.0 when all are equal, 1/n when one
/// takes everything; 1.0 for an empty or all-zero list (nothing to be unfair about).
pub fn jain(shares: &[f64]) -> f64 {
    let sum: f64 = shares.iter().sum();
    let squares: f64 = shares.iter().map(|x| x * x).sum();
    if shares.is_empty() || squares == 0.0 {
        return 1.0;
    }
    sum * sum / (shares.len() as f64 * squares)
}

/// What each worker did between two /stats reads.
#[derive(Debug, Clone)]
pub struct Split {
    /// Every worker of the read after: id, role, cpu, whether it executes requests, and its
    /// `requests`, `conns` and `accepted` over the run.
    pub workers: Vec<Value>,
    /// Requests executed, per executing worker.
    pub requests: Vec<f64>,
    /// Connections served, per executing worker.
    pub conns: Vec<f64>,
}

impl Split {
    pub fn jain_requests(&self) -> f64 {
        jain(&self.requests)
    }

    pub fn jain_conns(&self) -> f64 {
        jain(&self.conns)
    }
}

/// The per-worker deltas between the /stats documents `before` and `after`, workers matched by id
/// (one missing from `before` counts from zero).
pub fn split(before: &Value, after: &Value) -> Split {
    let counter = |doc: &Value, id: &Value, name: &str| {
        doc["workers"]
            .as_array()
            .and_then(|workers| workers.iter().find(|w| w["id"] == *id))
            .and_then(|w| w[name].as_u64())
            .unwrap_or(0)
    };
    let mut split = Split { workers: Vec::new(), requests: Vec::new(), conns: Vec::new() };
    for worker in after["workers"].as_array().into_iter().flatten() {
        let id = &worker["id"];
        let delta = |name: &str| counter(after, id, name).saturating_sub(counter(before, id, name));
        let role = worker["role"].as_str().unwrap_or("");
        let executes = crate::executes_requests(role);
        if executes {
            split.requests.push(delta("requests") as f64);
            split.conns.push(delta("conns") as f64);
        }
        split.workers.push(json!({
            "id": id, "role": role, "cpu": worker["cpu"], "executes": executes,
            "requests": delta("requests"), "conns": delta("conns"), "accepted": delta("accepted"),
        }));
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_from_even_to_one_takes_all() {
        assert!((jain(&[5.0, 5.0, 5.0, 5.0]) - 1.0).abs() < 1e-12);
        assert!((jain(&[10.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
        // Two of four equal, two idle: half the workers used.
        assert!((jain(&[1.0, 1.0, 0.0, 0.0]) - 0.5).abs() < 1e-12);
        // (1+3)² / (2 · (1+9)) = 0.8
        assert!((jain(&[1.0, 3.0]) - 0.8).abs() < 1e-12);
        assert_eq!(jain(&[]), 1.0);
        assert_eq!(jain(&[0.0, 0.0]), 1.0);
    }

    #[test]
    fn the_split_counts_only_executing_workers_between_the_reads() {
        let before = json!({"workers": [
            {"id": 0, "role": "acceptor", "requests": 0, "conns": 0},
            {"id": 1, "role": "worker", "requests": 10, "conns": 1},
        ]});
        let after = json!({"workers": [
            {"id": 0, "role": "acceptor", "requests": 0, "conns": 9},
            {"id": 1, "role": "worker", "requests": 40, "conns": 4},
            {"id": 2, "role": "worker", "requests": 30, "conns": 2},
        ]});
        let split = split(&before, &after);
        assert_eq!(split.requests, [30.0, 30.0]);
        assert_eq!(split.conns, [3.0, 2.0]);
        assert_eq!(split.workers.len(), 3);
        assert_eq!(split.jain_requests(), 1.0);
        assert!((split.jain_conns() - 25.0 / 26.0).abs() < 1e-12);
    }
}
