//! Rates per second from two readings of the same server, and Jain's fairness index.
//!
//! /stats holds counters since start; a rate is the difference of two readings over the time between
//! them. That time is taken from the server's own `uptime_ms`, not from when the answers arrived, so
//! a reply delayed by a busy server does not bend the rate.

use crate::sample::Sample;

/// What happened per second between two readings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// The time between the two readings, by the server's clock.
    pub seconds: f64,
    pub requests: f64,
    pub accepted: f64,
    /// One per worker of the later reading, in its order.
    pub workers: Vec<WorkerRates>,
    /// The kernel's counters per second, where /stats has them.
    pub kernel: Option<Vec<(String, f64)>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRates {
    pub id: u64,
    pub accepted: f64,
    pub requests: f64,
    pub wakeups: f64,
    pub context_switches: f64,
    /// Its io_uring's counters per second (lab-uring), where /stats has them.
    pub ring: Option<RingRates>,
}

/// One io_uring's counters per second, and its `io_uring_enter` calls per request executed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RingRates {
    pub submissions: f64,
    pub completions: f64,
    pub enters: f64,
    pub enobufs: f64,
    /// None while it executed no request.
    pub enters_per_request: Option<f64>,
}

impl Rates {
    /// The rates from `before` to `after`, or `None` when they are not two readings of one running
    /// server in time order (another pid: it was restarted; no time between them).
    pub fn between(before: &Sample, after: &Sample) -> Option<Rates> {
        if before.pid != after.pid || after.uptime_ms <= before.uptime_ms {
            return None;
        }
        let seconds = (after.uptime_ms - before.uptime_ms) as f64 / 1000.0;
        // A counter that went down (a reuseport process restarted) counts as no events, not as minus.
        let per_second = |from: u64, to: u64| to.saturating_sub(from) as f64 / seconds;
        let workers = after
            .workers
            .iter()
            .map(|worker| {
                let earlier = before.workers.iter().find(|earlier| earlier.id == worker.id);
                let rate = |counter: fn(&crate::sample::Worker) -> u64| {
                    per_second(earlier.map_or(counter(worker), counter), counter(worker))
                };
                WorkerRates {
                    id: worker.id,
                    accepted: rate(|w| w.accepted),
                    requests: rate(|w| w.requests),
                    wakeups: rate(|w| w.wakeups),
                    context_switches: rate(|w| w.context_switches),
                    ring: worker.ring.map(|ring| {
                        let earlier = earlier.and_then(|w| w.ring).unwrap_or(ring);
                        let enters = per_second(earlier.enters, ring.enters);
                        let requests = rate(|w| w.requests);
                        RingRates {
                            submissions: per_second(earlier.submissions, ring.submissions),
                            completions: per_second(earlier.completions, ring.completions),
                            enters,
                            enobufs: per_second(earlier.enobufs, ring.enobufs),
                            enters_per_request: (requests > 0.0).then(|| enters / requests),
                        }
                    }),
                }
            })
            .collect();
        let kernel = after.kernel.as_ref().map(|counters| {
            counters
                .iter()
                .map(|(name, value)| {
                    let earlier = before.kernel.iter().flatten().find(|(other, _)| other == name);
                    (name.clone(), per_second(earlier.map_or(*value, |(_, earlier)| *earlier), *value))
                })
                .collect()
        });
        Some(Rates {
            seconds,
            requests: per_second(before.totals.requests, after.totals.requests),
            accepted: per_second(before.totals.accepted, after.totals.accepted),
            workers,
            kernel,
        })
    }

    /// Jain's index over the request rates of the workers that execute requests (an acceptor or a
    /// dispatcher executes none, by design, and is left out); `None` while none is serving.
    pub fn fairness(&self, sample: &Sample) -> Option<f64> {
        let executing: Vec<f64> = self
            .workers
            .iter()
            .zip(&sample.workers)
            .filter(|(_, worker)| executes_requests(&worker.role))
            .map(|(rates, _)| rates.requests)
            .collect();
        jain_index(&executing)
    }
}

pub use labkit::executes_requests;

/// Jain's fairness index, (Σx)² / (n·Σx²): 1 when every x is equal, 1/n when one x has everything.
/// `None` for no values or all zero, where fairness means nothing.
pub fn jain_index(values: &[f64]) -> Option<f64> {
    let sum: f64 = values.iter().sum();
    let sum_of_squares: f64 = values.iter().map(|x| x * x).sum();
    if sum_of_squares == 0.0 {
        return None;
    }
    Some(sum * sum / (values.len() as f64 * sum_of_squares))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Totals, Worker};

    fn worker(id: u64, role: &str, requests: u64, wakeups: u64) -> Worker {
        Worker {
            id,
            role: role.to_string(),
            cpu: None,
            accepted: 0,
            requests,
            wakeups,
            context_switches: wakeups / 2,
            open: 1,
            ring: None,
            load: None,
        }
    }

    fn sample(uptime_ms: u64, workers: Vec<Worker>, kernel: Option<Vec<(&str, u64)>>) -> Sample {
        let requests = workers.iter().map(|w| w.requests).sum();
        Sample {
            arch: "memcached".into(),
            pid: 42,
            uptime_ms,
            listeners: vec![],
            workers,
            totals: Totals { accepted: uptime_ms / 10, requests, open: 2, rejected: 0 },
            kernel: kernel.map(|k| k.into_iter().map(|(name, value)| (name.to_string(), value)).collect()),
        }
    }

    #[test]
    fn rates_are_differences_over_the_servers_own_time() {
        let before = sample(1000, vec![worker(0, "acceptor", 0, 10), worker(1, "worker", 100, 40)], None);
        let after = sample(1250, vec![worker(0, "acceptor", 0, 20), worker(1, "worker", 600, 140)], None);
        let rates = Rates::between(&before, &after).unwrap();
        assert_eq!(rates.seconds, 0.25);
        assert_eq!(rates.requests, 2000.0);
        assert_eq!(rates.accepted, 100.0);
        assert_eq!(
            rates.workers[0],
            WorkerRates {
                id: 0,
                accepted: 0.0,
                requests: 0.0,
                wakeups: 40.0,
                context_switches: 20.0,
                ring: None
            }
        );
        assert_eq!(rates.workers[1].requests, 2000.0);
        assert_eq!(rates.workers[1].wakeups, 400.0);
        assert_eq!(rates.kernel, None);
    }

    #[test]
    fn a_rings_counters_become_rates_and_enters_per_request() {
        use crate::sample::Ring;
        let ring = |enters, enobufs| {
            Some(Ring { submissions: enters * 3, completions: enters * 4, enters, enobufs })
        };
        let mut before = worker(0, "loop", 1000, 10);
        before.ring = ring(100, 0);
        let mut after = worker(0, "loop", 3000, 30);
        after.ring = ring(600, 5);
        let rates = Rates::between(&sample(0, vec![before], None), &sample(500, vec![after], None)).unwrap();
        let ring = rates.workers[0].ring.unwrap();
        assert_eq!(
            (ring.submissions, ring.completions, ring.enters, ring.enobufs),
            (3000.0, 4000.0, 1000.0, 10.0)
        );
        assert_eq!(ring.enters_per_request, Some(0.25));
    }

    #[test]
    fn kernel_counters_become_rates_where_stats_has_them() {
        let before = sample(0, vec![], Some(vec![("ListenOverflows", 7), ("ListenDrops", 7)]));
        let after = sample(500, vec![], Some(vec![("ListenOverflows", 57), ("ListenDrops", 7)]));
        let rates = Rates::between(&before, &after).unwrap();
        assert_eq!(
            rates.kernel,
            Some(vec![("ListenOverflows".to_string(), 100.0), ("ListenDrops".to_string(), 0.0)])
        );
    }

    #[test]
    fn no_rates_across_a_restart_or_without_time_between() {
        let before = sample(1000, vec![worker(1, "worker", 100, 1)], None);
        let mut restarted = sample(2000, vec![worker(1, "worker", 5, 1)], None);
        restarted.pid = 43;
        assert_eq!(Rates::between(&before, &restarted), None);
        assert_eq!(Rates::between(&before, &before), None);
        assert_eq!(Rates::between(&sample(2000, vec![], None), &before), None);
    }

    #[test]
    fn a_counter_that_goes_back_counts_as_zero_and_a_new_worker_from_zero() {
        // A reuseport process restarted between the readings: its counters began again.
        let before = sample(1000, vec![worker(1, "process", 500, 9)], None);
        let after = sample(2000, vec![worker(1, "process", 20, 3), worker(2, "process", 30, 3)], None);
        let rates = Rates::between(&before, &after).unwrap();
        assert_eq!(rates.workers[0].requests, 0.0);
        assert_eq!(rates.workers[1].requests, 0.0, "a worker seen once has no rate yet");
    }

    #[test]
    fn jain_index_from_equal_shares_to_one_worker_taking_everything() {
        assert_eq!(jain_index(&[5.0, 5.0, 5.0, 5.0]), Some(1.0));
        assert_eq!(jain_index(&[8.0, 0.0, 0.0, 0.0]), Some(0.25));
        assert_eq!(jain_index(&[3.0, 1.0]), Some(16.0 / 20.0));
        assert_eq!(jain_index(&[7.0]), Some(1.0));
        assert_eq!(jain_index(&[0.0, 0.0]), None);
        assert_eq!(jain_index(&[]), None);
    }

    #[test]
    fn fairness_leaves_out_the_acceptor_and_the_dispatcher() {
        let before = sample(
            0,
            vec![worker(0, "acceptor", 0, 0), worker(1, "worker", 0, 0), worker(2, "worker", 0, 0)],
            None,
        );
        let after = sample(
            1000,
            vec![worker(0, "acceptor", 0, 9), worker(1, "worker", 300, 9), worker(2, "worker", 100, 9)],
            None,
        );
        let rates = Rates::between(&before, &after).unwrap();
        assert_eq!(rates.fairness(&after), Some(0.8));
        let idle = sample(2000, after.workers.clone(), None);
        assert_eq!(Rates::between(&after, &idle).unwrap().fairness(&idle), None);
        assert!(
            !executes_requests("dispatcher")
                && !executes_requests("shared")
                && executes_requests("loop")
                && executes_requests("process")
        );
    }
}
