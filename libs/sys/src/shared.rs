//! Counters in memory shared between forked processes: an anonymous `MAP_SHARED` mapping made before
//! `fork(2)` stays the same physical memory in parent and children, so each worker process can bump
//! its own counters and any of them can read everyone's.

use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicU64;

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
