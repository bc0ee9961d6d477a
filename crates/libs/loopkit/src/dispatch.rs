//! Choosing a worker for a new connection (lab-memcached's `--dispatch rr|p2c|least`), and the load
//! signal the choice reads.
//!
//! The signal is each worker's recent **busy time**: the share of the last ~100 ms it spent between
//! returning from `epoll_wait` and calling it again, exponentially decayed ([`RecentBusy`]). Why not
//! the alternatives:
//! - open connections: a new connection's weight is unknown when it is accepted, so two idle
//!   connections and two saturating ones count the same;
//! - requests in flight: a worker that executes what it reads has at most one in flight, and the
//!   requests waiting behind it sit unread in its sockets, where it cannot count them;
//! - busy time sees both: a worker that serves one heavy connection is busy ~100% of the time, one
//!   that serves light ones a little, and an idle one not at all. It costs the worker two clock reads
//!   (vDSO, no syscall) and three plain stores per wake-up, and the acceptor three loads per worker.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// How the acceptor picks the worker for each new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Round-robin, blind to load: memcached's own choice.
    #[value(name = "rr")]
    RoundRobin,
    /// Power of two choices: two distinct workers drawn at random, the less busy one wins (HAProxy).
    #[value(name = "p2c")]
    PowerOfTwoChoices,
    /// The least busy of all workers.
    #[value(name = "least")]
    LeastLoaded,
}

/// Loads closer than this (a fraction of busy time) count as equal: `least` then goes round-robin
/// among them, so that idle workers share a burst of connections instead of the first taking all.
const SAME_LOAD: f64 = 0.05;

/// The acceptor's state for choosing: where round-robin is, and the random draws of `p2c`.
#[derive(Debug)]
pub struct WorkerPicker {
    policy: Policy,
    next: usize,
    /// xorshift64 state: the draws need to be cheap and spread, not unpredictable.
    random: u64,
}

impl WorkerPicker {
    pub fn new(policy: Policy) -> Self {
        WorkerPicker { policy, next: 0, random: 0x9e37_79b9_7f4a_7c15 }
    }

    /// The worker (index below `workers`) for a new connection; `load(i)` is worker i's published
    /// load, read only by the policies that use it.
    pub fn choose(&mut self, workers: usize, load: impl Fn(usize) -> f64) -> usize {
        let chosen = match self.policy {
            Policy::RoundRobin => self.next,
            Policy::PowerOfTwoChoices if workers > 1 => {
                let first = self.draw(workers);
                let second = (first + 1 + self.draw(workers - 1)) % workers; // never `first`
                if load(second) < load(first) - SAME_LOAD {
                    second
                } else {
                    first
                }
            }
            Policy::PowerOfTwoChoices => 0,
            Policy::LeastLoaded => {
                let loads: Vec<f64> = (0..workers).map(load).collect();
                let least = loads.iter().copied().fold(f64::INFINITY, f64::min);
                (0..workers)
                    .map(|i| (self.next + i) % workers)
                    .find(|&i| loads[i] <= least + SAME_LOAD)
                    .unwrap_or(0)
            }
        };
        self.next = (chosen + 1) % workers;
        chosen
    }

    /// Uniform in 0..n (xorshift64, Marsaglia 2003).
    fn draw(&mut self, n: usize) -> usize {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        (self.random % n as u64) as usize
    }
}

/// How far back the busy time reaches: its weight falls by e every 100 ms. Long enough to see
/// through the gaps between a heavy connection's requests, short enough to follow a change in well
/// under a second.
const TAU_S: f64 = 0.1;
/// `busy_since` while the worker waits in `epoll_wait`.
const IDLE: u64 = u64::MAX;

/// One worker's recent busy time, written by the worker alone and read by the acceptor.
///
/// Busy time is weighted by e^(-age/τ), so `load` is the fraction of the recent past spent busy: 1
/// for a worker that never waits, 0 for one that has waited longer than a few τ. A stretch still
/// running counts as it goes, so a worker stuck in one long request looks busy at once. The three
/// fields are read without a lock; a read that straddles an update is off by at most that update.
#[derive(Debug)]
pub struct RecentBusy {
    epoch: Instant,
    /// Decayed busy seconds up to `updated` (f64 bits).
    decayed: AtomicU64,
    /// When `decayed` was brought up to date, in ns since `epoch`.
    updated: AtomicU64,
    /// When the current busy stretch began, in ns since `epoch`; `IDLE` while waiting.
    busy_since: AtomicU64,
}

impl Default for RecentBusy {
    fn default() -> Self {
        RecentBusy {
            epoch: Instant::now(),
            decayed: AtomicU64::new(0f64.to_bits()),
            updated: AtomicU64::new(0),
            busy_since: AtomicU64::new(IDLE),
        }
    }
}

impl RecentBusy {
    /// The worker returned from `epoll_wait`: busy from now on.
    pub fn woke(&self) {
        self.woke_at(self.now_ns());
    }

    /// The worker is about to wait in `epoll_wait`: the busy stretch ends.
    pub fn waiting(&self) {
        self.waiting_at(self.now_ns());
    }

    /// The fraction of the recent past this worker spent busy, in [0, 1].
    pub fn load(&self) -> f64 {
        self.load_at(self.now_ns())
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn woke_at(&self, now: u64) {
        self.busy_since.store(now, Relaxed);
    }

    fn waiting_at(&self, now: u64) {
        let stretch = busy_stretch(self.busy_since.load(Relaxed), now);
        self.decayed.store((self.decayed_at(now) + stretch).to_bits(), Relaxed);
        self.updated.store(now, Relaxed);
        self.busy_since.store(IDLE, Relaxed);
    }

    fn load_at(&self, now: u64) -> f64 {
        (self.decayed_at(now) + busy_stretch(self.busy_since.load(Relaxed), now)) / TAU_S
    }

    /// The busy time recorded up to `updated`, decayed to `now`.
    fn decayed_at(&self, now: u64) -> f64 {
        let age = now.saturating_sub(self.updated.load(Relaxed));
        f64::from_bits(self.decayed.load(Relaxed)) * (-(age as f64 * 1e-9) / TAU_S).exp()
    }
}

/// The decayed weight, as of `now`, of being busy from `since` to `now`: ∫ e^(-age/τ) over the
/// stretch, which is τ (1 - e^(-length/τ)).
fn busy_stretch(since: u64, now: u64) -> f64 {
    if since == IDLE {
        return 0.0;
    }
    let length_s = now.saturating_sub(since) as f64 * 1e-9;
    TAU_S * (1.0 - (-length_s / TAU_S).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn choices(policy: Policy, loads: &[f64], n: usize) -> Vec<usize> {
        let mut dispatcher = WorkerPicker::new(policy);
        (0..n).map(|_| dispatcher.choose(loads.len(), |i| loads[i])).collect()
    }

    #[test]
    fn round_robin_ignores_the_loads() {
        assert_eq!(choices(Policy::RoundRobin, &[0.9, 0.0, 0.5], 5), [0, 1, 2, 0, 1]);
    }

    #[test]
    fn least_picks_the_least_busy_and_takes_turns_among_equals() {
        assert_eq!(choices(Policy::LeastLoaded, &[0.9, 0.2, 0.5], 3), [1, 1, 1]);
        assert_eq!(choices(Policy::LeastLoaded, &[0.3, 0.3, 0.3, 0.3], 5), [0, 1, 2, 3, 0]);
        // Within SAME_LOAD of the least counts as equal: 0 and 1 alternate, 2 never.
        assert_eq!(choices(Policy::LeastLoaded, &[0.52, 0.50, 0.9], 4), [0, 1, 0, 1]);
    }

    #[test]
    fn two_choices_between_two_workers_is_least() {
        assert_eq!(choices(Policy::PowerOfTwoChoices, &[0.9, 0.1], 4), [1, 1, 1, 1]);
        assert_eq!(choices(Policy::PowerOfTwoChoices, &[0.1, 0.9], 4), [0, 0, 0, 0]);
        assert_eq!(choices(Policy::PowerOfTwoChoices, &[0.7], 2), [0, 0]);
    }

    #[test]
    fn two_choices_never_picks_the_busiest_and_picks_the_idlest_when_drawn() {
        // Of the three pairs, 1 is in two and wins both; 2 wins only against 0; 0 never wins.
        let picked = choices(Policy::PowerOfTwoChoices, &[0.9, 0.1, 0.5], 3000);
        let share = |worker| picked.iter().filter(|&&p| p == worker).count() as f64 / 3000.0;
        assert_eq!(share(0), 0.0);
        assert!((share(1) - 2.0 / 3.0).abs() < 0.05, "worker 1 won {:.3}", share(1));
        assert!((share(2) - 1.0 / 3.0).abs() < 0.05, "worker 2 won {:.3}", share(2));
    }

    #[test]
    fn busy_time_is_the_recent_busy_fraction() {
        let always = RecentBusy::default();
        always.woke_at(0);
        assert!((always.load_at(1000 * MS) - 1.0).abs() < 1e-3, "a stretch still running counts");

        let half = RecentBusy::default();
        for ms in 0..1000 {
            half.woke_at(2 * ms * MS);
            half.waiting_at((2 * ms + 1) * MS);
        }
        assert!((half.load_at(2000 * MS) - 0.5).abs() < 0.02, "1 ms of every 2: {}", half.load_at(2000 * MS));
        // Idle from then on, the past fades by e every τ.
        let later = half.load_at(2000 * MS + 100 * MS);
        assert!((later / half.load_at(2000 * MS) - (-1f64).exp()).abs() < 1e-9);
        assert!(half.load_at(3000 * MS) < 0.001);
        assert_eq!(RecentBusy::default().load_at(50 * MS), 0.0);
    }
}
