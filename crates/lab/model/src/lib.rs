//! The ideal queue each architecture approximates, simulated: what its latency would be if handing
//! requests to workers cost nothing.
//!
//! - **Central FCFS** (M/G/k): one queue, k workers, each request taken by whichever worker frees
//!   first. lab-ramcloud's dispatcher approximates it.
//! - **Per-worker FCFS**: a queue per worker, and each connection belongs to one worker for life,
//!   assigned round-robin (lab-memcached's acceptor), by hash (the kernel, for lab-reuseport), or as
//!   pinned in a given run (lab-nginx's accept turns, or any measured split).
//!
//! The client is lab-load's open loop: requests due at Poisson times over `connections` connections,
//! one in flight on each; a request goes out on the connection that has been free longest, or waits
//! in the client until one frees, and its latency counts from when it was due.
//!
//! FCFS needs no general event list: taking the requests in the order they are due, each one's start
//! is the later of when it goes out and when its worker (central: the first worker to free) is done
//! with what it already has (Lindley's recursion). Two heaps of "free at" times, one of connections
//! and, for the central queue, the workers, are the whole simulator.
//!
//! Every draw comes from one seeded stream in the same order whatever the rate, so the same seed
//! gives the same numbers on every machine, and a higher rate only squeezes the same arrivals closer
//! together: latency then grows with the rate, and [`max_load`] can bisect on it.
#![forbid(unsafe_code)]

mod rng;

use std::cmp::Ordering;
use std::collections::BinaryHeap;

pub use rng::SplitMix64;

/// How long a request occupies the worker that executes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Service {
    /// A weighted mix of fixed times, as lab-load's `--mix` asks for with `/spin?us=N`, plus a fixed
    /// per-request cost (reading, parsing, writing: what `/spin?us=0` costs the server).
    Mix { classes: Vec<Class>, overhead_us: f64 },
    /// Exponentially distributed with this mean: the memoryless service of the closed forms.
    Exponential { mean_us: f64 },
}

/// One kind of request in a mix: its weight (any positive scale) and its work in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Class {
    pub weight: f64,
    pub us: f64,
}

impl Service {
    /// A mix from `(weight, µs)` pairs, e.g. `&[(99.5, 5.0), (0.5, 500.0)]`.
    pub fn mix(classes: &[(f64, f64)], overhead_us: f64) -> Self {
        let classes = classes.iter().map(|&(weight, us)| Class { weight, us }).collect();
        Service::Mix { classes, overhead_us }
    }

    /// The mean service time in microseconds.
    pub fn mean_us(&self) -> f64 {
        match self {
            Service::Mix { classes, overhead_us } => {
                let total: f64 = classes.iter().map(|c| c.weight).sum();
                overhead_us + classes.iter().map(|c| c.weight * c.us).sum::<f64>() / total
            }
            Service::Exponential { mean_us } => *mean_us,
        }
    }

    /// The p99 target the project uses by default: 10× the mean service time (as ZygOS does).
    pub fn default_p99_target_us(&self) -> f64 {
        10.0 * self.mean_us()
    }

    /// One service time; always exactly one draw, so streams stay aligned across rates.
    fn draw(&self, rng: &mut SplitMix64) -> f64 {
        match self {
            Service::Mix { classes, overhead_us } => {
                let total: f64 = classes.iter().map(|c| c.weight).sum();
                let mut left = rng.next_f64() * total;
                for class in classes {
                    if left < class.weight {
                        return overhead_us + class.us;
                    }
                    left -= class.weight;
                }
                overhead_us + classes.last().map_or(0.0, |c| c.us) // rounding left a sliver over
            }
            Service::Exponential { mean_us } => rng.next_exp() * mean_us,
        }
    }
}

/// Where a request waits for a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Queues {
    /// One FCFS queue for all workers (M/G/k): lab-ramcloud.
    Central,
    /// One FCFS queue per worker, fed by the connections assigned to it.
    PerWorker(Assignment),
}

/// Which worker each connection belongs to, for [`Queues::PerWorker`].
#[derive(Debug, Clone, PartialEq)]
pub enum Assignment {
    /// Connection i to worker i mod k: lab-memcached's acceptor.
    RoundRobin,
    /// Each connection to a worker drawn at random: the kernel's hash of the 4-tuple (lab-reuseport).
    Hash,
    /// Connection i to worker `pinned[i]`, as observed in a run (e.g. all on one lab-nginx worker).
    Pinned(Vec<usize>),
}

impl Assignment {
    /// A pinning from how many connections each worker held (connections are alike, so only the
    /// counts matter): `[3, 1]` puts connections 0-2 on worker 0 and connection 3 on worker 1.
    pub fn from_counts(counts: &[usize]) -> Self {
        let pinned = counts.iter().enumerate().flat_map(|(worker, &n)| std::iter::repeat_n(worker, n));
        Assignment::Pinned(pinned.collect())
    }
}

/// One system to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub queues: Queues,
    pub workers: usize,
    pub connections: usize,
    pub service: Service,
    /// Requests simulated per rate; the first tenth warm the queues up and are not counted.
    pub requests: usize,
    pub seed: u64,
}

/// Latency (from when the request was due to when its worker finished it), in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub mean_us: f64,
    /// The part spent waiting, in the client or in a queue, before a worker started it.
    pub mean_wait_us: f64,
}

/// A connection or a worker, and when it is next free; the heap's top is the one that frees first.
#[derive(Debug, PartialEq)]
struct FreeAt(f64, usize);

impl Eq for FreeAt {}

impl Ord for FreeAt {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

impl PartialOrd for FreeAt {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Model {
    /// Latency at `rate` requests per second.
    pub fn simulate(&self, rate: f64) -> Latency {
        assert!(self.workers > 0 && self.connections > 0 && rate > 0.0, "an empty or idle model");
        let mut rng = SplitMix64::new(self.seed);
        let worker_of: Vec<usize> = match &self.queues {
            Queues::Central => Vec::new(),
            Queues::PerWorker(Assignment::RoundRobin) => {
                (0..self.connections).map(|c| c % self.workers).collect()
            }
            Queues::PerWorker(Assignment::Hash) => {
                (0..self.connections).map(|_| rng.below(self.workers)).collect()
            }
            Queues::PerWorker(Assignment::Pinned(pinned)) => {
                assert!(pinned.len() == self.connections, "one pinned worker per connection");
                assert!(pinned.iter().all(|&w| w < self.workers), "pinned to a worker that does not exist");
                pinned.clone()
            }
        };
        let mut connections: BinaryHeap<FreeAt> = (0..self.connections).map(|c| FreeAt(0.0, c)).collect();
        let mut central: BinaryHeap<FreeAt> = (0..self.workers).map(|w| FreeAt(0.0, w)).collect();
        let mut worker_free = vec![0.0; self.workers];

        let gap_us = 1e6 / rate;
        let warmup = self.requests / 10;
        let mut latencies = Vec::with_capacity(self.requests - warmup);
        let mut waited = 0.0;
        let mut due = 0.0;
        for i in 0..self.requests {
            due += rng.next_exp() * gap_us;
            let service = self.service.draw(&mut rng);
            let FreeAt(conn_free, conn) = connections.pop().expect("at least one connection");
            let sent = f64::max(due, conn_free);
            let done = if worker_of.is_empty() {
                let FreeAt(worker_done, worker) = central.pop().expect("at least one worker");
                let done = sent.max(worker_done) + service;
                central.push(FreeAt(done, worker));
                done
            } else {
                let worker = &mut worker_free[worker_of[conn]];
                *worker = sent.max(*worker) + service;
                *worker
            };
            connections.push(FreeAt(done, conn));
            if i >= warmup {
                latencies.push(done - due);
                waited += done - service - due;
            }
        }
        summarize(latencies, waited)
    }

    /// The highest rate (requests per second) whose p99 stays within `p99_target_us`: bisection
    /// between 0 and the workers' capacity, where every queue grows without bound. 0 when even a
    /// trickle misses the target.
    pub fn max_load(&self, p99_target_us: f64) -> f64 {
        let capacity = self.workers as f64 * 1e6 / self.service.mean_us();
        let (mut meets, mut misses) = (0.0, capacity);
        for _ in 0..24 {
            let rate = (meets + misses) / 2.0;
            if self.simulate(rate).p99_us <= p99_target_us {
                meets = rate;
            } else {
                misses = rate;
            }
        }
        meets
    }
}

fn summarize(mut latencies: Vec<f64>, waited: f64) -> Latency {
    assert!(!latencies.is_empty(), "too few requests to measure");
    latencies.sort_by(f64::total_cmp);
    let n = latencies.len();
    let quantile = |q: f64| latencies[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    Latency {
        p50_us: quantile(0.5),
        p99_us: quantile(0.99),
        p999_us: quantile(0.999),
        mean_us: latencies.iter().sum::<f64>() / n as f64,
        mean_wait_us: waited / n as f64,
    }
}
