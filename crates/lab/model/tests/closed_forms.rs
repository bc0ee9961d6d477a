//! The simulator against queueing theory's closed forms, and the properties the bench relies on.
//!
//! Each check simulates enough requests that the estimate's standard error is about a percent or
//! two, and allows a few percent. The seed is fixed, so a pass is reproducible.

use model::{Assignment, Latency, Model, Queues, Service};

/// Enough connections that the client never runs out of free ones: the closed forms assume none.
const MANY: usize = 10_000;

fn model(queues: Queues, workers: usize, service: Service, requests: usize) -> Model {
    Model { queues, workers, connections: MANY, service, requests, seed: 12 }
}

fn assert_close(what: &str, simulated: f64, exact: f64, tolerance: f64) {
    let error = (simulated - exact).abs() / exact;
    assert!(
        error <= tolerance,
        "{what}: simulated {simulated:.3}, exact {exact:.3}, off by {:.1}%",
        error * 100.0
    );
}

/// Rate in requests per second for utilisation `rho` of `workers` workers of mean service `mean_us`.
fn rate(rho: f64, workers: usize, mean_us: f64) -> f64 {
    rho * workers as f64 * 1e6 / mean_us
}

/// Erlang's C formula: the probability that an arrival at an M/M/k queue with offered load
/// `a` = λ/μ has to wait.
fn erlang_c(k: usize, a: f64) -> f64 {
    let mut term = 1.0; // a^n / n!
    let mut below_k = 0.0;
    for n in 0..k {
        below_k += term;
        term *= a / (n + 1) as f64;
    }
    let waiting = term * k as f64 / (k as f64 - a);
    waiting / (below_k + waiting)
}

#[test]
fn mm1_mean_wait_and_percentiles() {
    let (mean_us, rho) = (10.0, 0.7);
    let m = model(Queues::Central, 1, Service::Exponential { mean_us }, 1_000_000);
    let latency = m.simulate(rate(rho, 1, mean_us));
    // M/M/1: Wq = ρ/(μ - λ), and the time in system is exponential with rate μ - λ.
    let drain_rate = (1.0 - rho) / mean_us;
    assert_close("M/M/1 mean wait", latency.mean_wait_us, rho / drain_rate, 0.04);
    assert_close("M/M/1 p50", latency.p50_us, 2f64.ln() / drain_rate, 0.04);
    assert_close("M/M/1 p99", latency.p99_us, 100f64.ln() / drain_rate, 0.04);
}

#[test]
fn mmk_mean_wait_is_erlang_c() {
    let (mean_us, k) = (10.0, 4);
    for rho in [0.5, 0.8] {
        let m = model(Queues::Central, k, Service::Exponential { mean_us }, 1_000_000);
        let latency = m.simulate(rate(rho, k, mean_us));
        // M/M/k: Wq = C(k, a) / (kμ - λ), a = λ/μ = kρ.
        let exact = erlang_c(k, k as f64 * rho) / ((k as f64 * (1.0 - rho)) / mean_us);
        assert_close(&format!("M/M/{k} mean wait at ρ={rho}"), latency.mean_wait_us, exact, 0.04);
    }
}

#[test]
fn md1_mean_wait_is_pollaczek_khinchine() {
    let (us, rho) = (10.0, 0.8);
    let m = model(Queues::Central, 1, Service::mix(&[(1.0, us)], 0.0), 1_000_000);
    let latency = m.simulate(rate(rho, 1, us));
    // M/D/1: Wq = ρ S / (2 (1 - ρ)).
    assert_close("M/D/1 mean wait", latency.mean_wait_us, rho * us / (2.0 * (1.0 - rho)), 0.04);
    assert_close("M/D/1 time in system", latency.mean_us, latency.mean_wait_us + us, 1e-9);
}

#[test]
fn bimodal_mix_with_overhead_is_pollaczek_khinchine() {
    // M/G/1: Wq = λ E[S²] / (2 (1 - ρ)). 90% 4+1 µs, 10% 49+1 µs: checks the mix's weights and the
    // per-request overhead both reach the service times.
    let service = Service::mix(&[(90.0, 4.0), (10.0, 49.0)], 1.0);
    let (mean, second_moment) = (0.9 * 5.0 + 0.1 * 50.0, 0.9 * 25.0 + 0.1 * 2500.0);
    assert_close("mix mean", service.mean_us(), mean, 1e-12);
    let rho = 0.6;
    let m = model(Queues::Central, 1, service, 2_000_000);
    let lambda_per_us = rho / mean;
    let latency = m.simulate(lambda_per_us * 1e6);
    let exact = lambda_per_us * second_moment / (2.0 * (1.0 - rho));
    assert_close("M/G/1 mean wait", latency.mean_wait_us, exact, 0.05);
}

#[test]
fn every_connection_on_one_worker_is_that_worker_alone() {
    // Pinned per-worker queues with all connections on worker 0 of 2: an M/M/1 at the whole rate,
    // however idle worker 1 is.
    let (mean_us, rho) = (10.0, 0.7);
    let mut pinned = model(Queues::Central, 2, Service::Exponential { mean_us }, 1_000_000);
    pinned.queues = Queues::PerWorker(Assignment::from_counts(&[MANY, 0]));
    let latency = pinned.simulate(rate(rho, 1, mean_us));
    assert_close("pinned mean wait", latency.mean_wait_us, rho / ((1.0 - rho) / mean_us), 0.04);
}

#[test]
fn max_load_of_mm1_meets_its_closed_form() {
    // p99 of M/M/1 is ln(100)/(μ - λ); at most 10 mean services when λ = μ (1 - ln(100)/10).
    let mean_us = 10.0;
    let m = model(Queues::Central, 1, Service::Exponential { mean_us }, 400_000);
    let target = m.service.default_p99_target_us();
    assert_eq!(target, 100.0);
    let exact = (1.0 - 100f64.ln() / 10.0) * 1e6 / mean_us;
    assert_close("M/M/1 max load at p99 ≤ 10 S", m.max_load(target), exact, 0.03);
}

#[test]
fn central_queue_beats_per_worker_queues_at_the_tail() {
    // The point of the comparison: at the same load, one queue keeps no worker idle while a request
    // waits, so its tail is shorter and it meets a p99 target at a higher load.
    let service = Service::mix(&[(99.5, 5.0), (0.5, 500.0)], 0.0);
    let target = service.default_p99_target_us();
    let at = |queues: Queues| {
        let m = Model {
            queues,
            workers: 4,
            connections: 64,
            service: service.clone(),
            requests: 300_000,
            seed: 7,
        };
        (m.simulate(rate(0.5, 4, m.service.mean_us())), m.max_load(target))
    };
    let (central, central_max) = at(Queues::Central);
    let (round_robin, round_robin_max) = at(Queues::PerWorker(Assignment::RoundRobin));
    assert!(central.p99_us < round_robin.p99_us / 2.0, "central {central:?} vs per-worker {round_robin:?}");
    assert!(
        central_max > 2.0 * round_robin_max,
        "max load central {central_max:.0} vs per-worker {round_robin_max:.0}"
    );
}

#[test]
fn a_seed_gives_the_same_numbers_and_latency_grows_with_load() {
    let m = Model {
        queues: Queues::PerWorker(Assignment::Hash),
        workers: 3,
        connections: 16,
        service: Service::mix(&[(1.0, 10.0)], 2.0),
        requests: 50_000,
        seed: 3,
    };
    let rate_at = |rho: f64| rate(rho, 3, 12.0);
    assert_eq!(m.simulate(rate_at(0.5)), m.simulate(rate_at(0.5)));
    let other_seed = Model { seed: 4, ..m.clone() };
    assert_ne!(m.simulate(rate_at(0.5)), other_seed.simulate(rate_at(0.5)));
    let curve: Vec<Latency> = [0.1, 0.3, 0.5, 0.7].iter().map(|&rho| m.simulate(rate_at(rho))).collect();
    assert!(curve.windows(2).all(|pair| pair[0].p99_us <= pair[1].p99_us), "p99 not growing: {curve:?}");
    // At a trickle, nothing waits: the latency is the service time itself.
    assert_close("p50 at a trickle", m.simulate(1.0).p50_us, 12.0, 1e-9);
}

#[test]
fn the_client_waits_when_every_connection_is_busy() {
    // One connection, one request in flight: requests queue in the client, as in lab-load, and their
    // latency counts from when they were due. With fixed 10 µs service, two workers cannot help a
    // single connection: it behaves as M/D/1.
    let (us, rho) = (10.0, 0.8);
    let one_conn = Model {
        queues: Queues::Central,
        workers: 2,
        connections: 1,
        service: Service::mix(&[(1.0, us)], 0.0),
        requests: 1_000_000,
        seed: 5,
    };
    let latency = one_conn.simulate(rate(rho, 1, us));
    assert_close("one connection mean wait", latency.mean_wait_us, rho * us / (2.0 * (1.0 - rho)), 0.04);
}
