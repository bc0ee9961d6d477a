//! Connection slots every thread of a pool can reach (lab-oneshot, whose threads take turns with
//! every connection), each behind its own mutex, named by tokens as in `loopkit::conn`: the slot's
//! index in the low 32 bits, its generation above, so an event queued for a connection that has
//! since closed finds the wrong generation and is dropped.
//!
//! NOTE: where an `EPOLLONESHOT` registration hands each connection to one thread at a time, only
//! that thread locks its slot, so the lock is uncontended (an atomic swap to take, one to let go);
//! it is there so that the sweep and the drain, which visit every slot, stay safe without `unsafe`.

use std::sync::atomic::{AtomicUsize, Ordering::AcqRel, Ordering::Acquire};
use std::sync::OnceLock;

use parking_lot::{Mutex, MutexGuard};

use crate::token::{index_of, token_of};

/// Slots are made this many at a time, as connections come, up to `CHUNK * CHUNKS` (2^20).
const CHUNK: usize = 1024;
const CHUNKS: usize = 1024;

/// One slot: whatever it holds, and the generation its token must carry.
#[derive(Debug)]
pub struct SharedSlot<T> {
    generation: u32,
    pub value: Option<T>,
}

impl<T> SharedSlot<T> {
    /// Empties the slot for reuse under a new generation; what it held, if anything.
    pub fn take(&mut self) -> Option<T> {
        let value = self.value.take();
        if value.is_some() {
            self.generation = (self.generation + 1) & 0x7fff_ffff;
        }
        value
    }
}

/// `CHUNK` slots, made together.
type Chunk<T> = Box<[Mutex<SharedSlot<T>>]>;

/// Slots shared by threads, made a chunk at a time: an idle server holds none.
#[derive(Debug)]
pub struct SharedSlots<T> {
    chunks: Box<[OnceLock<Chunk<T>>]>,
    /// Slot indices made so far; below it, `free` holds those not in use.
    made: AtomicUsize,
    free: Mutex<Vec<usize>>,
}

impl<T> Default for SharedSlots<T> {
    fn default() -> Self {
        SharedSlots {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
            made: AtomicUsize::new(0),
            free: Mutex::default(),
        }
    }
}

impl<T> SharedSlots<T> {
    /// A free slot, locked, with its token; `None` past 2^20 slots (`--max-conns` stays below).
    pub fn claim(&self) -> Option<(u64, MutexGuard<'_, SharedSlot<T>>)> {
        let index = self.free.lock().pop().unwrap_or_else(|| self.made.fetch_add(1, AcqRel));
        let chunk = self.chunks.get(index / CHUNK)?.get_or_init(|| {
            (0..CHUNK).map(|_| Mutex::new(SharedSlot { generation: 0, value: None })).collect()
        });
        let slot = chunk[index % CHUNK].lock();
        Some((token_of(index, slot.generation), slot))
    }

    /// The slot `token` names, locked, if it still holds what the token was given for.
    pub fn lock(&self, token: u64) -> Option<MutexGuard<'_, SharedSlot<T>>> {
        let slot = self.cell(index_of(token))?.lock();
        (u64::from(slot.generation) == token >> 32 && slot.value.is_some()).then_some(slot)
    }

    /// Empties the slot `token` names (locked by the caller as `slot`) and frees it for reuse.
    pub fn release(&self, token: u64, slot: &mut SharedSlot<T>) -> Option<T> {
        let value = slot.take()?;
        self.free.lock().push(index_of(token));
        Some(value)
    }

    /// Visits every slot that holds something, with its token: each locked in turn (`busy_too`),
    /// or only those no other thread holds now.
    pub fn for_each(&self, busy_too: bool, mut visit: impl FnMut(u64, &mut SharedSlot<T>)) {
        for index in 0..self.made.load(Acquire).min(CHUNK * CHUNKS) {
            let Some(cell) = self.cell(index) else { continue };
            let guard = if busy_too { Some(cell.lock()) } else { cell.try_lock() };
            if let Some(mut slot) = guard.filter(|slot| slot.value.is_some()) {
                visit(token_of(index, slot.generation), &mut slot);
            }
        }
    }

    fn cell(&self, index: usize) -> Option<&Mutex<SharedSlot<T>>> {
        self.chunks.get(index / CHUNK)?.get()?.get(index % CHUNK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_token_finds_nothing_once_its_slot_is_reused() {
        let slots = SharedSlots::default();
        let (old, mut slot) = slots.claim().unwrap();
        slot.value = Some("first");
        drop(slot);
        let mut slot = slots.lock(old).expect("held");
        assert_eq!(slots.release(old, &mut slot), Some("first"));
        drop(slot);
        assert!(slots.lock(old).is_none(), "released");
        let (new, mut slot) = slots.claim().unwrap();
        slot.value = Some("second");
        drop(slot);
        assert_eq!(index_of(new), index_of(old), "the freed slot is reused");
        assert_ne!(new, old, "with a new generation");
        assert!(slots.lock(old).is_none());
        assert_eq!(slots.lock(new).unwrap().value, Some("second"));
    }

    #[test]
    fn for_each_skips_a_slot_another_thread_holds_unless_told_to_wait() {
        let slots = SharedSlots::default();
        for name in ["a", "b", "c"] {
            slots.claim().unwrap().1.value = Some(name);
        }
        let held = slots.lock(token_of(1, 0)).unwrap();
        let mut seen = Vec::new();
        slots.for_each(false, |_, slot| seen.push(slot.value.unwrap()));
        assert_eq!(seen, ["a", "c"]);
        drop(held);
        seen.clear();
        slots.for_each(true, |_, slot| seen.push(slot.value.unwrap()));
        assert_eq!(seen, ["a", "b", "c"]);
    }
}
