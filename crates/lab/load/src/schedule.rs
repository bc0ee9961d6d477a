//! When an open-loop thread sends its requests: a schedule fixed in advance from its start time, so
//! a slow server cannot slow it down. A request the server keeps waiting is still due at its time,
//! and its latency counts from then (the correction for coordinated omission).

use std::time::{Duration, Instant};

/// How the gaps between requests are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrivals {
    /// Exponential gaps: independent arrivals, as from many users (a Poisson process).
    Poisson,
    /// Equal gaps.
    Uniform,
}

/// The generator of gaps and paths: the queueing model's SplitMix64, so a seed means the same thing
/// in lab-load and in the model lab-bench draws beside it.
pub use model::SplitMix64 as Rng;

/// One thread's arrival times.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    arrivals: Arrivals,
    mean_gap_ns: f64,
    /// Nanoseconds from `start` to the next arrival. Kept as a sum from the start, never from "now",
    /// so the schedule does not drift or slip whatever the thread was doing.
    next_ns: f64,
    next: Instant,
    rng: Rng,
}

impl Schedule {
    /// Arrivals at `rate` per second from `start`. `phase` (in [0, 1)) shifts the first uniform
    /// arrival by that fraction of a gap, so that threads sharing a rate interleave.
    pub fn new(start: Instant, rate: f64, arrivals: Arrivals, phase: f64, seed: u64) -> Self {
        let mean_gap_ns = 1e9 / rate;
        let mut schedule =
            Self { start, arrivals, mean_gap_ns, next_ns: 0.0, next: start, rng: Rng::new(seed) };
        schedule.next_ns = match arrivals {
            Arrivals::Poisson => schedule.gap(),
            Arrivals::Uniform => phase * mean_gap_ns,
        };
        schedule.next = schedule.instant();
        schedule
    }

    /// When the next request is due.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// Moves on to the arrival after the next.
    pub fn advance(&mut self) {
        self.next_ns += self.gap();
        self.next = self.instant();
    }

    fn gap(&mut self) -> f64 {
        match self.arrivals {
            // Inverse transform sampling; 1 - u is in (0, 1], so the logarithm is finite.
            Arrivals::Poisson => self.rng.next_exp() * self.mean_gap_ns,
            Arrivals::Uniform => self.mean_gap_ns,
        }
    }

    fn instant(&self) -> Instant {
        self.start + Duration::from_nanos(self.next_ns as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrivals_in(schedule: &mut Schedule, window: Duration) -> u64 {
        let end = schedule.start + window;
        let mut count = 0;
        while schedule.next_due() < end {
            count += 1;
            schedule.advance();
        }
        count
    }

    #[test]
    fn uniform_arrivals_are_exactly_the_rate() {
        let mut schedule = Schedule::new(Instant::now(), 1000.0, Arrivals::Uniform, 0.5, 1);
        assert_eq!(arrivals_in(&mut schedule, Duration::from_secs(10)), 10_000);
    }

    #[test]
    fn poisson_arrivals_average_the_rate_with_exponential_gaps() {
        let mut schedule = Schedule::new(Instant::now(), 100_000.0, Arrivals::Poisson, 0.0, 7);
        // 1e6 arrivals expected: the standard deviation is 1000, so ±0.5% is five of them.
        let count = arrivals_in(&mut schedule, Duration::from_secs(10));
        assert!((995_000..=1_005_000).contains(&count), "{count}");
        // Exponential gaps: the share longer than the mean is 1/e.
        let mut schedule = Schedule::new(Instant::now(), 1000.0, Arrivals::Poisson, 0.0, 11);
        let longer = (0..100_000)
            .filter(|_| {
                let before = schedule.next_due();
                schedule.advance();
                schedule.next_due() - before > Duration::from_millis(1)
            })
            .count();
        let share = longer as f64 / 100_000.0;
        assert!((share - (-1.0f64).exp()).abs() < 0.01, "{share}");
    }

    #[test]
    fn the_schedule_does_not_depend_on_when_it_is_read() {
        let start = Instant::now();
        let mut a = Schedule::new(start, 5000.0, Arrivals::Poisson, 0.0, 3);
        let mut b = Schedule::new(start, 5000.0, Arrivals::Poisson, 0.0, 3);
        for _ in 0..1000 {
            a.advance();
        }
        std::thread::sleep(Duration::from_millis(5));
        for _ in 0..1000 {
            b.advance();
        }
        assert_eq!(a.next_due(), b.next_due());
    }
}
