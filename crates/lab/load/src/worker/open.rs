//! Open loop (`--rate`): requests fall due on a schedule fixed in advance ([`Schedule`]), whatever
//! the server does. A request due goes out at once on a connection with room (the free list), or,
//! when none has any, waits in the backlog for the first that does. Its latency counts from its
//! scheduled time either way, and one that leaves more than [`LATE`] after it is counted late: the
//! client, not only the server, fell behind.
//!
//! Churn on a schedule (`--close --rate`) uses the same schedule, free list and backlog; its
//! "connection with room" is a slot with no connection yet.
//!
//! [`Schedule`]: crate::schedule::Schedule

use std::time::Instant;

use super::{Due, Mode, Worker};
use crate::conn::{InFlight, Phase};
use crate::schedule::Schedule;
use crate::stats::LATE;

impl Worker<'_> {
    /// Sends (or, with no room anywhere, queues) every request due by `now`.
    pub(super) fn issue_due(&mut self, now: Instant) {
        loop {
            let Some(at) = self.schedule.as_ref().map(Schedule::next_due) else { return };
            if at > now || !self.may_issue(at) {
                return;
            }
            self.schedule.as_mut().expect("checked above").advance();
            let due = self.new_due(at);
            match self.take_free_slot() {
                Some(slot) => self.send_due(slot, due, now),
                None => self.backlog.push_back(due),
            }
        }
    }

    /// A slot from the free list that can still take a request (entries may have gone stale).
    fn take_free_slot(&mut self) -> Option<usize> {
        while let Some(slot) = self.free.pop_front() {
            self.conns[slot].listed_free = false;
            if self.has_room(slot) {
                return Some(slot);
            }
        }
        None
    }

    /// Whether `slot` can take a request now: an open connection short of `--pipeline`, or in churn
    /// a slot with no connection (and no retry pending).
    fn has_room(&self, slot: usize) -> bool {
        let conn = &self.conns[slot];
        match self.mode {
            Mode::Churn => conn.phase == Phase::Closed && conn.retry_at.is_none(),
            Mode::Closed | Mode::Open => conn.has_room(self.settings.pipeline),
        }
    }

    pub(super) fn list_free(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        if !conn.listed_free {
            conn.listed_free = true;
            self.free.push_back(slot);
        }
    }

    /// Sends `due` on `slot`: in churn on a new connection there.
    pub(super) fn send_due(&mut self, slot: usize, due: Due, now: Instant) {
        self.count_if_late(due, now);
        if self.mode == Mode::Churn {
            self.connect(slot, Some(due), now);
            return;
        }
        self.enqueue(slot, due, now);
        if self.conns[slot].has_room(self.settings.pipeline) {
            self.list_free(slot);
        }
        self.flush(slot, now);
    }

    fn count_if_late(&mut self, due: Due, now: Instant) {
        if due.measured && now.saturating_duration_since(due.at) > LATE {
            self.recorder.late += 1;
        }
    }

    /// A closed slot connects again while the run goes on, or while requests wait in the backlog.
    pub(super) fn reconnect_open(&mut self, slot: usize, now: Instant) {
        if self.may_issue(now) || !self.backlog.is_empty() {
            self.connect(slot, None, now);
        }
    }

    /// Gives the connection in `slot` the oldest waiting requests it has room for, and lists it
    /// free if room is left.
    pub(super) fn fill_open(&mut self, slot: usize, now: Instant) {
        let pipeline = self.settings.pipeline;
        while self.conns[slot].has_room(pipeline) {
            let Some(due) = self.backlog.pop_front() else { break };
            self.count_if_late(due, now);
            self.enqueue(slot, due, now);
        }
        if self.conns[slot].has_room(pipeline) {
            self.list_free(slot);
        }
    }

    /// Requests a closing connection carried go back to the front of the backlog, oldest first,
    /// with their scheduled times.
    pub(super) fn back_to_backlog(&mut self, carried: Vec<InFlight>) {
        for request in carried.into_iter().rev() {
            self.backlog.push_front(Due { at: request.due, path: request.path, measured: request.measured });
            // Counted as sent again when the backlog sends it; `sent` counts requests, not sends.
            self.recorder.sent -= u64::from(request.measured);
        }
    }

    /// Wakes the thread when the next request is due, to the microsecond (an epoll_wait timeout has
    /// milliseconds).
    pub(super) fn arm_timer(&mut self, now: Instant) -> std::io::Result<()> {
        let (Some(timer), Some(schedule)) = (&self.timer, &self.schedule) else { return Ok(()) };
        let due = schedule.next_due();
        if !self.may_issue(due) || self.timer_armed_for == Some(due) {
            return Ok(());
        }
        timer.set_after(due.saturating_duration_since(now))?;
        self.timer_armed_for = Some(due);
        Ok(())
    }
}
