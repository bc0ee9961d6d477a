//! Closed loop, the default: every connection keeps `--pipeline` requests in flight, and sends the
//! next as soon as one is answered, so the server sets the pace. A request is due when it is queued.

use std::mem;
use std::time::Instant;

use super::Worker;
use crate::conn::InFlight;

impl Worker<'_> {
    /// A closed slot connects again while the run goes on, or while it has requests to send again.
    pub(super) fn reconnect_closed(&mut self, slot: usize, now: Instant) {
        if self.may_issue(now) || !self.conns[slot].carried.is_empty() {
            self.connect(slot, None, now);
        }
    }

    /// Tops the connection in `slot` up to `--pipeline` in flight: first what its previous connection
    /// carried, then new requests, due now.
    pub(super) fn fill_closed(&mut self, slot: usize, now: Instant) {
        self.resend_carried(slot, now);
        while self.conns[slot].has_room(self.settings.pipeline) && self.may_issue(now) {
            let due = self.new_due(now);
            self.enqueue(slot, due, now);
        }
    }

    /// Sends again, on the new connection in `slot`, the requests its previous connection carried
    /// past a response that announced the close. They keep their due time, so the detour counts in
    /// their latency.
    fn resend_carried(&mut self, slot: usize, now: Instant) {
        let conn = &mut self.conns[slot];
        for request in mem::take(&mut conn.carried) {
            let bytes = &self.settings.requests.get(request.path as usize).bytes;
            conn.enqueue(bytes, InFlight { sent: now, ..request });
        }
    }
}
