//! Churn (`--close`): every request gets a connection of its own, which carries it from the connect
//! and is closed once it is answered, so each request pays for the handshake and the server's
//! accept path, where the architectures differ most. A slot is a place for one such connection: in
//! closed loop it opens the next as soon as the last is done; with `--rate` it waits in the open
//! loop's free list for the next request due (see [`open`](super::open)).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use super::Worker;
use crate::conn::Phase;

impl Worker<'_> {
    /// A slot with no connection opens the next, with its request.
    pub(super) fn next_connection(&mut self, slot: usize, now: Instant) {
        if self.schedule.is_some() {
            match self.backlog.pop_front() {
                Some(due) => self.send_due(slot, due, now),
                None => self.list_free(slot),
            }
        } else if self.may_issue(now) {
            let due = self.new_due(now);
            self.connect(slot, Some(due), now);
        }
    }

    /// After a read: once its request is answered the connection is done. A server that keeps it open
    /// after answering is not waited for.
    pub(super) fn after_response(&mut self, slot: usize, now: Instant) {
        let conn = &self.conns[slot];
        if conn.in_flight.is_empty() && conn.phase == Phase::Open {
            self.close_answered(slot);
        } else {
            self.flush(slot, now);
        }
    }
}

/// The source address of a thread's `n`-th connection: 127.T.H.L, 65,024 of them per thread. Every
/// source address has its own ~28k ephemeral ports toward the server, so a run that opens hundreds
/// of thousands of connections does not run out while closed ones wait in TIME_WAIT. Any address in
/// 127.0.0.0/8 reaches a server on 127.0.0.1 over the loopback.
pub fn source_address(thread: usize, n: u64) -> IpAddr {
    let low = 1 + (n % 254) as u8;
    let high = ((n / 254) % 256) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 1 + (thread % 250) as u8, high, low))
}
