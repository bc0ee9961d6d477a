//! The ledger behind `POST /ledger`, and the store that makes a request with an `Idempotency-Key`
//! execute at most once (docs/spec.md, "POST /ledger").
//!
//! Where the store lives is the point of it. It is a table in one anonymous mapping made before any
//! worker starts, behind one lock (`sys::shared::LockedWords`): the threads of a server share it as
//! they share everything; lab-reuseport's worker processes share it only because the mapping is
//! `MAP_SHARED` and made before the fork. With `--idempotency-store per-process` the same table is
//! `MAP_PRIVATE`, so each process has its own copy after the fork, and a retry that the kernel hands
//! to another process executes again (lab-exp idempotency measures how often). The ledger itself,
//! its sequence and the counters, are always in shared memory: they stand for the database a real
//! backend would share.
//!
//! The table: a fixed pool of `entries` slots, chained from a power-of-two array of buckets by a
//! hash of the key, and a ring of the finished entries in the order they finished. Every finished
//! entry has the same time to live, so the ring's head is always the oldest: expiring by age and
//! evicting for room both take from it. An entry still executing is never evicted or expired;
//! when every slot holds one, a new key is answered 503.

use std::hash::Hasher;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use http1::Status;
use serde_json::json;
use sys::shared::{LockedWords, Sharing};

/// The store's bounds (`--idempotency-entries`, `--idempotency-age`), and where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Keys kept at most; the oldest finished one makes room for a new one.
    pub entries: usize,
    /// How long a finished key's response is kept.
    pub max_age: Duration,
    /// `Shared`: one table for every thread and worker process. `Private`: one per process.
    pub sharing: Sharing,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds { entries: 10_000, max_age: Duration::from_secs(86_400), sharing: Sharing::Shared }
    }
}

/// What one `POST /ledger` is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: Status,
    pub body: Vec<u8>,
    /// The kept response of an earlier request with the same key, given again.
    pub replayed: bool,
}

/// The ledger's counters, in shared memory: index into `Ledger::counters`.
#[derive(Clone, Copy)]
enum Counter {
    /// Entries appended: the last sequence number given.
    Appended,
    Bytes,
    Replayed,
    /// 409: the key's first request is still executing.
    Conflicts,
    /// 422: the key came back with another body.
    Mismatches,
    Evicted,
    Expired,
    /// 503: every slot held a request still executing.
    Full,
    /// An executing entry whose process had died, executed again by the repeat that found it.
    TakenOver,
}
const COUNTERS: usize = 9;

/// The ledger: a sequence every append takes the next number of, and the idempotency store.
#[derive(Debug)]
pub struct Ledger {
    store: Store,
    counters: &'static [AtomicU64],
}

impl Ledger {
    pub fn new(bounds: &Bounds) -> io::Result<Ledger> {
        Ok(Ledger { store: Store::new(bounds)?, counters: sys::shared::shared_counters(COUNTERS)? })
    }

    fn bump(&self, counter: Counter) -> u64 {
        self.counters[counter as usize].fetch_add(1, Relaxed) + 1
    }

    /// Executes `POST /ledger` with `body`, taking `hold` to do it; with `key`, at most once per key.
    pub fn post(&self, key: Option<&[u8]>, body: &[u8], hold: Duration) -> Answer {
        let Some(key) = key else {
            let seq = self.append(body, hold);
            return Answer { status: Status::Ok, body: seq_body(seq), replayed: false };
        };
        let now = self.store.now_ms();
        let begun = self.store.begin(key, fingerprint(body), now, std::process::id());
        for _ in 0..begun.evicted {
            self.bump(Counter::Evicted);
        }
        for _ in 0..begun.expired {
            self.bump(Counter::Expired);
        }
        match begun.outcome {
            Outcome::Execute { slot, taken_over } => {
                if taken_over {
                    self.bump(Counter::TakenOver);
                }
                let seq = self.append(body, hold);
                self.store.finish(slot, seq, self.store.now_ms());
                Answer { status: Status::Ok, body: seq_body(seq), replayed: false }
            }
            Outcome::Replay { seq } => {
                self.bump(Counter::Replayed);
                Answer { status: Status::Ok, body: seq_body(seq), replayed: true }
            }
            Outcome::InProgress => {
                self.bump(Counter::Conflicts);
                text(Status::Conflict, "a request with this Idempotency-Key is still executing; retry later")
            }
            Outcome::Mismatch => {
                self.bump(Counter::Mismatches);
                text(Status::UnprocessableContent, "this Idempotency-Key was used with another request body")
            }
            Outcome::Full => {
                self.bump(Counter::Full);
                text(Status::ServiceUnavailable, "the idempotency store is full of requests still executing")
            }
        }
    }

    /// The effect: takes `hold`, then the next sequence number, which it returns.
    fn append(&self, body: &[u8], hold: Duration) -> u64 {
        if !hold.is_zero() {
            thread::sleep(hold);
        }
        self.counters[Counter::Bytes as usize].fetch_add(body.len() as u64, Relaxed);
        self.bump(Counter::Appended)
    }

    /// `/stats`' `ledger` object.
    pub fn render(&self) -> serde_json::Value {
        let get = |counter: Counter| self.counters[counter as usize].load(Relaxed);
        json!({
            "appended": get(Counter::Appended),
            "bytes": get(Counter::Bytes),
            "replayed": get(Counter::Replayed),
            "conflicts": get(Counter::Conflicts),
            "mismatches": get(Counter::Mismatches),
            "evicted": get(Counter::Evicted),
            "expired": get(Counter::Expired),
            "full": get(Counter::Full),
            "taken_over": get(Counter::TakenOver),
            "keys": self.store.len(),
            "max_keys": self.store.entries,
            "max_age_s": self.store.max_age_ms / 1000,
            "store": match self.store.sharing {
                Sharing::Shared => "shared",
                Sharing::Private => "per-process",
            },
        })
    }
}

fn text(status: Status, reason: &str) -> Answer {
    Answer { status, body: reason.as_bytes().to_vec(), replayed: false }
}

fn seq_body(seq: u64) -> Vec<u8> {
    format!("{{\"seq\":{seq}}}\n").into_bytes()
}

/// A 64-bit hash of `bytes`: SipHash-1-3 with fixed keys, so every process of a server computes
/// the same one (the body's fingerprint, and a key's bucket).
fn fingerprint(bytes: &[u8]) -> u64 {
    // DefaultHasher::new() is SipHash-1-3 with zero keys: the same in every process of one build.
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(bytes);
    hasher.write_usize(bytes.len());
    hasher.finish()
}

/// What [`Store::begin`] found for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// New (or abandoned by a dead process): execute, then [`Store::finish`] the slot.
    Execute { slot: usize, taken_over: bool },
    /// Finished before with the same body: its sequence number.
    Replay { seq: u64 },
    /// Its first request, with the same body, is still executing.
    InProgress,
    /// Used before with another body.
    Mismatch,
    /// No slot free: every one holds a request still executing.
    Full,
}

#[derive(Debug)]
struct Begun {
    outcome: Outcome,
    evicted: u64,
    expired: u64,
}

/// Words of the store's header.
const LIVE: usize = 0;
const RING_HEAD: usize = 1;
const RING_LEN: usize = 2;
const FREE: usize = 3;
const NEVER_USED: usize = 4;
const HEADER: usize = 8;
/// Words of one entry: state and key length, fingerprint, time, owner pid or sequence, chain, key.
const KEY_WORDS: usize = http1::idempotency::MAX_KEY_BYTES.div_ceil(8);
const ENTRY: usize = 5 + KEY_WORDS;
const STATE: usize = 0;
const FINGERPRINT: usize = 1;
const TIME: usize = 2;
const OWNER_OR_SEQ: usize = 3;
const NEXT: usize = 4;
const KEY: usize = 5;
const EXECUTING: u64 = 1;
const DONE: u64 = 2;

/// The idempotency store: a hash table of keys in [`LockedWords`].
#[derive(Debug)]
struct Store {
    words: LockedWords,
    entries: usize,
    buckets: usize,
    max_age_ms: u64,
    sharing: Sharing,
    /// Made before any fork: every process measures time from the same instant.
    base: Instant,
}

impl Store {
    fn new(bounds: &Bounds) -> io::Result<Store> {
        let entries = bounds.entries.max(1);
        let buckets = (2 * entries).next_power_of_two();
        let words = LockedWords::new(HEADER + buckets + entries + entries * ENTRY, bounds.sharing)?;
        let max_age_ms = u64::try_from(bounds.max_age.as_millis()).unwrap_or(u64::MAX);
        Ok(Store { words, entries, buckets, max_age_ms, sharing: bounds.sharing, base: Instant::now() })
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn len(&self) -> u64 {
        self.words.lock()[LIVE]
    }

    fn ring(&self) -> usize {
        HEADER + self.buckets
    }

    fn entry(&self, slot: usize) -> usize {
        HEADER + self.buckets + self.entries + slot * ENTRY
    }

    /// Looks `key` up, first letting go of the finished entries past their age; see [`Outcome`].
    fn begin(&self, key: &[u8], body_print: u64, now: u64, pid: u32) -> Begun {
        let mut words = self.words.lock();
        let mut begun = Begun { outcome: Outcome::Full, evicted: 0, expired: 0 };
        while let Some(oldest) = self.oldest(&words) {
            if now.saturating_sub(words[self.entry(oldest) + TIME]) < self.max_age_ms {
                break;
            }
            self.drop_oldest(&mut words);
            begun.expired += 1;
        }
        let bucket = HEADER + (fingerprint(key) as usize & (self.buckets - 1));
        if let Some(slot) = self.find(&words, bucket, key) {
            let e = self.entry(slot);
            let same_body = words[e + FINGERPRINT] == body_print;
            begun.outcome = match (words[e + STATE] & 0xff, same_body) {
                (DONE, true) => Outcome::Replay { seq: words[e + OWNER_OR_SEQ] },
                (_, false) => Outcome::Mismatch,
                (_, true) if alive(words[e + OWNER_OR_SEQ], pid) => Outcome::InProgress,
                (_, true) => {
                    // Its process died executing it: whether the effect happened is unknown, and
                    // nobody else will finish it. The repeat executes it (counted as taken over).
                    words[e + OWNER_OR_SEQ] = u64::from(pid);
                    words[e + TIME] = now;
                    Outcome::Execute { slot, taken_over: true }
                }
            };
            return begun;
        }
        if words[LIVE] as usize >= self.entries {
            if self.oldest(&words).is_none() {
                return begun; // Full: every entry is executing.
            }
            self.drop_oldest(&mut words);
            begun.evicted += 1;
        }
        let slot = match words[FREE] {
            0 => {
                let slot = words[NEVER_USED] as usize;
                words[NEVER_USED] += 1;
                slot
            }
            free => {
                let slot = free as usize - 1;
                words[FREE] = words[self.entry(slot) + NEXT];
                slot
            }
        };
        let e = self.entry(slot);
        words[e + STATE] = EXECUTING | (key.len() as u64) << 8;
        words[e + FINGERPRINT] = body_print;
        words[e + TIME] = now;
        words[e + OWNER_OR_SEQ] = u64::from(pid);
        words[e + NEXT] = words[bucket];
        for (word, chunk) in words[e + KEY..e + KEY + KEY_WORDS].iter_mut().zip(key_words(key)) {
            *word = chunk;
        }
        words[bucket] = slot as u64 + 1;
        words[LIVE] += 1;
        begun.outcome = Outcome::Execute { slot, taken_over: false };
        begun
    }

    /// Keeps the response of the request executing in `slot`: its sequence number.
    fn finish(&self, slot: usize, seq: u64, now: u64) {
        let mut words = self.words.lock();
        let e = self.entry(slot);
        words[e + STATE] = (words[e + STATE] & !0xff) | DONE;
        words[e + TIME] = now;
        words[e + OWNER_OR_SEQ] = seq;
        let at = (words[RING_HEAD] + words[RING_LEN]) as usize % self.entries;
        words[self.ring() + at] = slot as u64;
        words[RING_LEN] += 1;
    }

    /// The slot of `key` in `bucket`'s chain.
    fn find(&self, words: &[u64], bucket: usize, key: &[u8]) -> Option<usize> {
        let mut link = words[bucket];
        while link != 0 {
            let slot = link as usize - 1;
            let e = self.entry(slot);
            if (words[e + STATE] >> 8) as usize == key.len()
                && words[e + KEY..e + KEY + KEY_WORDS].iter().copied().eq(key_words(key))
            {
                return Some(slot);
            }
            link = words[e + NEXT];
        }
        None
    }

    /// The finished entry that finished first.
    fn oldest(&self, words: &[u64]) -> Option<usize> {
        (words[RING_LEN] > 0).then(|| words[self.ring() + words[RING_HEAD] as usize] as usize)
    }

    /// Takes the oldest finished entry out of the ring, its chain and the table.
    fn drop_oldest(&self, words: &mut [u64]) {
        let Some(slot) = self.oldest(words) else { return };
        words[RING_HEAD] = (words[RING_HEAD] + 1) % self.entries as u64;
        words[RING_LEN] -= 1;
        let e = self.entry(slot);
        let key_len = (words[e + STATE] >> 8) as usize;
        let key: Vec<u8> =
            words[e + KEY..e + KEY + KEY_WORDS].iter().flat_map(|w| w.to_le_bytes()).take(key_len).collect();
        let mut link_at = HEADER + (fingerprint(&key) as usize & (self.buckets - 1));
        while words[link_at] != 0 {
            let at = words[link_at] as usize - 1;
            if at == slot {
                words[link_at] = words[e + NEXT];
                break;
            }
            link_at = self.entry(at) + NEXT;
        }
        words[e + STATE] = 0;
        words[e + NEXT] = words[FREE];
        words[FREE] = slot as u64 + 1;
        words[LIVE] -= 1;
    }
}

/// `key` in little-endian words, zero-padded to `KEY_WORDS`.
fn key_words(key: &[u8]) -> impl Iterator<Item = u64> + '_ {
    (0..KEY_WORDS).map(move |i| {
        let mut word = [0u8; 8];
        let chunk = key.get(i * 8..key.len().min(i * 8 + 8)).unwrap_or_default();
        word[..chunk.len()].copy_from_slice(chunk);
        u64::from_le_bytes(word)
    })
}

/// Whether the process `owner` that began an entry can still finish it.
fn alive(owner: u64, me: u32) -> bool {
    owner == u64::from(me) || u32::try_from(owner).is_ok_and(sys::process::exists)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(entries: usize, max_age_ms: u64) -> Store {
        let bounds =
            Bounds { entries, max_age: Duration::from_millis(max_age_ms), sharing: Sharing::Private };
        Store::new(&bounds).unwrap()
    }

    fn begin(store: &Store, key: &str, body: u64, now: u64) -> Outcome {
        store.begin(key.as_bytes(), body, now, std::process::id()).outcome
    }

    #[test]
    fn a_key_executes_once_then_replays_and_refuses_another_body() {
        let store = store(4, 1000);
        let Outcome::Execute { slot, taken_over: false } = begin(&store, "k", 1, 0) else { panic!() };
        assert_eq!(begin(&store, "k", 1, 1), Outcome::InProgress);
        assert_eq!(begin(&store, "k", 2, 1), Outcome::Mismatch);
        store.finish(slot, 41, 2);
        assert_eq!(begin(&store, "k", 1, 3), Outcome::Replay { seq: 41 });
        assert_eq!(begin(&store, "k", 2, 3), Outcome::Mismatch);
        assert!(
            matches!(begin(&store, "kk", 1, 3), Outcome::Execute { .. }),
            "another key is another request"
        );
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn the_oldest_finished_key_makes_room_and_executing_ones_never_do() {
        let store = store(2, 1000);
        for (now, key) in ["a", "b"].iter().enumerate() {
            let Outcome::Execute { slot, .. } = begin(&store, key, 1, now as u64) else { panic!() };
            store.finish(slot, now as u64 + 1, now as u64);
        }
        let begun = store.begin(b"c", 1, 5, std::process::id());
        assert!(matches!(begun.outcome, Outcome::Execute { .. }));
        assert_eq!((begun.evicted, store.len()), (1, 2));
        assert!(matches!(begin(&store, "a", 1, 6), Outcome::Execute { .. }), "a was evicted: executes anew");
        // b is evicted for a; now c and a are executing: no room for d.
        assert_eq!(begin(&store, "d", 1, 7), Outcome::Full);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn finished_keys_expire_after_their_age() {
        let store = store(8, 100);
        let Outcome::Execute { slot, .. } = begin(&store, "k", 1, 0) else { panic!() };
        store.finish(slot, 7, 10);
        assert_eq!(begin(&store, "k", 1, 109), Outcome::Replay { seq: 7 });
        let begun = store.begin(b"k", 1, 110, std::process::id());
        assert_eq!(begun.expired, 1);
        assert!(matches!(begun.outcome, Outcome::Execute { .. }));
    }

    #[test]
    fn an_entry_whose_process_died_is_executed_by_the_repeat() {
        let store = store(4, 1000);
        // A pid that no process has: above the kernel's pid_max limit.
        let dead = (1 << 22) + 1;
        assert!(matches!(store.begin(b"k", 1, 0, dead).outcome, Outcome::Execute { .. }));
        assert_eq!(begin(&store, "k", 1, 1), Outcome::Execute { slot: 0, taken_over: true });
    }

    #[test]
    fn keys_that_share_a_bucket_stay_apart_through_eviction() {
        let store = store(64, 1_000_000);
        for i in 0..500u64 {
            let key = format!("key-{i}");
            let Outcome::Execute { slot, .. } = begin(&store, &key, i, i) else { panic!("{key}") };
            store.finish(slot, i, i);
            assert_eq!(begin(&store, &key, i, i), Outcome::Replay { seq: i });
        }
        assert_eq!(store.len(), 64);
        for i in 436..500u64 {
            assert_eq!(begin(&store, &format!("key-{i}"), i, 500), Outcome::Replay { seq: i });
        }
    }

    #[test]
    fn the_ledger_answers_sequence_numbers_and_counts() {
        let ledger = Ledger::new(&Bounds::default()).unwrap();
        let first = ledger.post(Some(b"k"), b"pay 5", Duration::ZERO);
        assert_eq!(
            (first.status, first.body.as_slice(), first.replayed),
            (Status::Ok, &b"{\"seq\":1}\n"[..], false)
        );
        let again = ledger.post(Some(b"k"), b"pay 5", Duration::ZERO);
        assert_eq!((again.body, again.replayed), (first.body, true));
        assert_eq!(ledger.post(Some(b"k"), b"pay 6", Duration::ZERO).status, Status::UnprocessableContent);
        assert_eq!(ledger.post(None, b"pay 5", Duration::ZERO).body, b"{\"seq\":2}\n");
        let stats = ledger.render();
        assert_eq!((stats["appended"].as_u64(), stats["replayed"].as_u64()), (Some(2), Some(1)));
        assert_eq!((stats["mismatches"].as_u64(), stats["keys"].as_u64()), (Some(1), Some(1)));
    }
}
