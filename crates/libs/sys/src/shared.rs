//! Memory shared between forked processes: an anonymous `MAP_SHARED` mapping made before `fork(2)`
//! stays the same physical memory in parent and children, so each worker process can bump its own
//! counters and any of them can read everyone's ([`shared_counters`]); [`LockedWords`] is such memory
//! (or, `MAP_PRIVATE`, each process's own) behind a lock that works across processes, for a table
//! the workers update together (the idempotency store). [`PrivateMemory`] is the opposite: memory a
//! fork copies page by page, only where one side writes (lab-exp copy-on-write).

use std::io;
use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};

use crate::os_error;

/// `mmap(MAP_SHARED | MAP_ANONYMOUS)` of `count` zeroed 64-bit atomics, for the life of the process.
///
/// The mapping is never unmapped: the counters live as long as the server, and leaking it is what lets
/// the slice be `'static` and shared freely between threads.
pub fn shared_counters(count: usize) -> io::Result<&'static [AtomicU64]> {
    let bytes = count.max(1) * std::mem::size_of::<AtomicU64>();
    let len = NonZeroUsize::new(bytes).expect("at least one counter");
    // SAFETY: a fresh anonymous mapping aliases no existing memory; we pass no address hint.
    let ptr = unsafe {
        mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED)
    }
    .map_err(|e| os_error("mmap MAP_SHARED|MAP_ANONYMOUS bytes", bytes, e))?;
    // SAFETY: the mapping is page-aligned (so aligned for AtomicU64), `bytes` long, zero-filled by the
    // kernel (all-zero is a valid AtomicU64), never unmapped, and only ever accessed atomically.
    Ok(unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<AtomicU64>(), count) })
}

/// Whether forked processes see one another's writes to a mapping made before `fork(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// `MAP_SHARED`: parent and children write the same physical pages.
    Shared,
    /// `MAP_PRIVATE`: after a fork each process writes its own copy (copy-on-write); threads of one
    /// process still share it, since they share the address space.
    Private,
}

impl Sharing {
    fn flags(self) -> MapFlags {
        match self {
            Sharing::Shared => MapFlags::MAP_SHARED,
            Sharing::Private => MapFlags::MAP_PRIVATE,
        }
    }
}

/// `len` zeroed 64-bit words of anonymous memory behind one lock that holds across threads and,
/// with [`Sharing::Shared`], across the processes forked after it was made: the only way to the
/// words is [`LockedWords::lock`], so no two threads or processes touch them at once.
///
/// The lock is a word in the same mapping: 0 when free, else the pid of the process whose thread
/// holds it. A waiter spins briefly, then yields; every 1024 yields it checks the holder is alive
/// (`kill(pid, 0)`), and takes the lock from a dead one (a worker process killed while holding
/// it), so a crash cannot stop the others for good; what the dead holder was writing may then be
/// half done. Not reentrant: a thread that locks twice waits for itself forever.
#[derive(Debug)]
pub struct LockedWords {
    /// The lock word, then the `len` words.
    base: NonNull<AtomicU64>,
    len: usize,
    bytes: NonZeroUsize,
}

// SAFETY: the words are reached only through `lock`, which gives one thread (of one process) at a
// time a guard; the lock word itself is an atomic. Nothing in it is tied to the creating thread.
unsafe impl Send for LockedWords {}
// SAFETY: as above: `&LockedWords` lets a thread do nothing but take the lock.
unsafe impl Sync for LockedWords {}

impl LockedWords {
    /// Maps `len` words plus the lock (`mmap(MAP_ANONYMOUS | MAP_SHARED or MAP_PRIVATE)`). The pages
    /// are zero and take no memory until first written.
    pub fn new(len: usize, sharing: Sharing) -> io::Result<LockedWords> {
        let bytes = (len + 1) * std::mem::size_of::<u64>();
        let size = NonZeroUsize::new(bytes).expect("at least the lock word");
        // SAFETY: a fresh anonymous mapping aliases no existing memory; we pass no address hint.
        let ptr = unsafe {
            mmap_anonymous(None, size, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, sharing.flags())
        }
        .map_err(|e| os_error("mmap MAP_ANONYMOUS bytes", bytes, e))?;
        Ok(LockedWords { base: ptr.cast::<AtomicU64>(), len, bytes: size })
    }

    /// How many words the region holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn lock_word(&self) -> &AtomicU64 {
        // SAFETY: the first word of a live, page-aligned mapping, zero-filled by the kernel (a valid
        // AtomicU64), only ever accessed atomically.
        unsafe { self.base.as_ref() }
    }

    /// Waits for the lock and returns the words, for as long as the guard lives.
    pub fn lock(&self) -> WordsGuard<'_> {
        let me = u64::from(std::process::id());
        let word = self.lock_word();
        let mut tries: u64 = 0;
        while word.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            tries += 1;
            if tries < 64 {
                std::hint::spin_loop();
                continue;
            }
            std::thread::yield_now();
            if tries.is_multiple_of(1024) {
                let holder = word.load(Ordering::Relaxed);
                if holder != 0 && holder != me && !u32::try_from(holder).is_ok_and(crate::process::exists) {
                    // A dead holder never lets go: take the lock over from it.
                    let taken = word.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed);
                    if taken.is_ok() {
                        break;
                    }
                }
            }
        }
        crate::process::SHARED_LOCKS_HELD.fetch_add(1, Ordering::AcqRel);
        WordsGuard { words: self }
    }
}

impl Drop for LockedWords {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's own (made in `new`, never handed out but through
        // guards, which borrow `self` and so are gone); after this nothing refers to it.
        let _ = unsafe { nix::sys::mman::munmap(self.base.cast(), self.bytes.get()) };
    }
}

/// The words of a [`LockedWords`], while its lock is held; dropping it lets the lock go.
#[derive(Debug)]
pub struct WordsGuard<'a> {
    words: &'a LockedWords,
}

impl Deref for WordsGuard<'_> {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        // SAFETY: the `len` words after the lock word are in the live mapping, aligned and
        // initialised (zero, then whatever guards wrote); this guard holds the lock, so no other
        // thread or process reads or writes them until it is dropped.
        unsafe { std::slice::from_raw_parts(self.words.base.as_ptr().add(1).cast::<u64>(), self.words.len) }
    }
}

impl DerefMut for WordsGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u64] {
        // SAFETY: as in `deref`; and `&mut self` makes this the only live reference through the guard.
        unsafe {
            std::slice::from_raw_parts_mut(self.words.base.as_ptr().add(1).cast::<u64>(), self.words.len)
        }
    }
}

impl Drop for WordsGuard<'_> {
    fn drop(&mut self) {
        self.words.lock_word().store(0, Ordering::Release);
        crate::process::SHARED_LOCKS_HELD.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `len` bytes of anonymous memory private to this process (`MAP_PRIVATE | MAP_ANONYMOUS`),
/// unmapped when dropped: what a forked child shares copy-on-write until one side writes a page.
/// Its address range is one line of `/proc/PID/smaps` (the kernel may merge it with a neighbour).
#[derive(Debug)]
pub struct PrivateMemory {
    ptr: NonNull<u8>,
    len: NonZeroUsize,
}

// SAFETY: the mapping belongs to this value alone; moving it to another thread moves that ownership.
unsafe impl Send for PrivateMemory {}

impl PrivateMemory {
    /// Maps `len` zeroed bytes; no page takes memory until it is first written.
    pub fn new(len: usize) -> io::Result<PrivateMemory> {
        let size = NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mmap MAP_PRIVATE bytes 0: empty"))?;
        // SAFETY: a fresh anonymous mapping aliases no existing memory; we pass no address hint.
        let ptr = unsafe {
            mmap_anonymous(None, size, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_PRIVATE)
        }
        .map_err(|e| os_error("mmap MAP_PRIVATE|MAP_ANONYMOUS bytes", len, e))?;
        Ok(PrivateMemory { ptr: ptr.cast::<u8>(), len: size })
    }

    /// The first address of the mapping, as `/proc/PID/smaps` writes its ranges.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    pub fn len(&self) -> usize {
        self.len.get()
    }

    /// Never: a mapping has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes of a live mapping owned by this value, zero-initialised by the kernel;
        // `&mut self` makes the slice the only reference (a forked child has its own copy-on-write
        // copy, not this memory).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len.get()) }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`, shared.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len.get()) }
    }
}

impl Drop for PrivateMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's own; the slices it lent borrowed `self` and are gone.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len.get()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_take_turns_at_the_words() {
        let words = std::sync::Arc::new(LockedWords::new(2, Sharing::Private).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let words = std::sync::Arc::clone(&words);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let mut guard = words.lock();
                        // Two words updated apart: a reader without the lock could see them differ.
                        guard[0] += 1;
                        std::hint::black_box(&mut *guard);
                        guard[1] += 1;
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let guard = words.lock();
        assert_eq!((guard[0], guard[1]), (40_000, 40_000));
        assert_eq!(crate::process::SHARED_LOCKS_HELD.load(Ordering::Acquire), 1);
        drop(guard);
        assert_eq!(crate::process::SHARED_LOCKS_HELD.load(Ordering::Acquire), 0);
    }

    #[test]
    fn private_memory_is_zeroed_and_writable() {
        let mut memory = PrivateMemory::new(3 * 4096).unwrap();
        assert!(memory.as_slice().iter().all(|&b| b == 0));
        memory.as_mut_slice()[5000] = 7;
        assert_eq!(memory.as_slice()[5000], 7);
        assert_eq!(memory.addr() % 4096, 0);
    }
}
