//! The experiments, one module each, and the table `lab-exp list` prints.

use crate::report::Report;

mod accept_queue;
mod bind_interface;
mod copy_on_write;
mod failure_modes;
mod idempotency;
mod l4_vs_l7;
mod nagle;
mod non_reading_client;
mod processes_vs_threads;
mod reuseport_balance;
mod rolling_restart;
mod slow_reader;
mod small_backlog;
mod syn_flood;
mod tls_cost;
mod uring_accept_queue;

/// One experiment: its name, its claim, and the function that measures it.
pub struct Experiment {
    pub name: &'static str,
    pub summary: &'static str,
    pub claim: &'static str,
    /// Where the source notes make the claim.
    pub notes: &'static str,
    /// It changes sysctls, floods or drops packets: without a namespace of its own it is skipped.
    pub needs_namespace: bool,
    pub run: fn(&mut Report),
}

impl Experiment {
    /// An empty report carrying this experiment's claim.
    pub fn report(&self) -> Report {
        Report::new(self.name, self.claim, self.notes)
    }
}

pub const EXPERIMENTS: &[Experiment] = &[
    accept_queue::EXPERIMENT,
    syn_flood::EXPERIMENT,
    small_backlog::EXPERIMENT,
    slow_reader::EXPERIMENT,
    non_reading_client::EXPERIMENT,
    nagle::EXPERIMENT,
    processes_vs_threads::EXPERIMENT,
    bind_interface::EXPERIMENT,
    reuseport_balance::EXPERIMENT,
    rolling_restart::EXPERIMENT,
    failure_modes::EXPERIMENT,
    idempotency::EXPERIMENT,
    l4_vs_l7::EXPERIMENT,
    copy_on_write::EXPERIMENT,
    uring_accept_queue::EXPERIMENT,
    tls_cost::EXPERIMENT,
];
