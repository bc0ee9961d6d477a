//! io_uring(7): ask once, be told what happened. The calls lab-uring is made of, as a small safe layer
//! over the `io-uring` crate (its submission and completion queues, no runtime):
//!
//! - `io_uring_setup(entries, {flags: SINGLE_ISSUER | DEFER_TASKRUN})`: [`Ring::new`]. Completions of
//!   a DEFER_TASKRUN ring are posted only when its one thread enters the kernel to wait for them, so
//!   no interrupt-time work lands on another CPU; a kernel older than 6.1 refuses those flags with
//!   EINVAL, and the ring is then made without them (the stated fallback: [`Ring::setup`] says which).
//! - `io_uring_register(IORING_REGISTER_PBUF_RING)`: [`Ring::provide_buffers`], a ring of buffers
//!   lent to the kernel in advance: a receive picks one only when bytes arrive, so an idle connection
//!   holds none ([`Ring::buffer`] reads it, [`Ring::recycle`] lends it again).
//! - `io_uring_prep_multishot_accept` ([`Ring::accept_multishot`]): one submission, a completion for
//!   every connection the kernel accepts; `io_uring_prep_recv_multishot` with `IOSQE_BUFFER_SELECT`
//!   ([`Ring::recv_multishot`]): a completion for every chunk that arrives, in a provided buffer.
//! - `io_uring_prep_send` ([`Ring::send`]), `io_uring_prep_close` ([`Ring::close`]),
//!   `io_uring_prep_cancel` ([`Ring::cancel`]), `io_uring_prep_timeout` ([`Ring::timeout`]),
//!   `io_uring_prep_read` ([`Ring::read`]: the signalfd, an eventfd).
//! - `io_uring_enter(to_submit, min_complete = 1, GETEVENTS | EXT_ARG {timeout})`: [`Ring::wait`],
//!   then [`Ring::next_completion`] for each completion. With a batch wait
//!   ([`Ring::set_batch_wait`], `IORING_FEAT_MIN_TIMEOUT`, Linux 6.12+): `min_complete = n` and
//!   `EXT_ARG {timeout, min_wait_usec}`, so that one call returns with up to `n` completions, or
//!   with what has come once `min_wait_usec` has passed, or at `timeout` with none.
//!
//! Soundness: the kernel reads and writes memory named in a submission until its completion, so
//! every buffer an operation uses is owned by the ring, in a table of operations in flight, from
//! submission to last completion, under a `user_data` that is its index in that table: the caller's
//! tag can never make two of them collide. Operations that own no memory (accept, receive, close,
//! cancel) take no entry there: their `user_data` is the caller's tag with a mark bit, so that an
//! idle connection's armed receive costs the process nothing. The provided buffers and their ring
//! live as long as the ring. A ring dropped with operations still in flight leaks their memory
//! instead of freeing what the kernel may still write.

use std::alloc::{self, Layout};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
pub use nix::errno::Errno;

/// The buffer group every receive of a ring selects from.
const GROUP: u16 = 0;

/// How a ring was set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (Linux 6.1+).
    DeferTaskrun,
    /// No flags: the kernel refused those with EINVAL; completions are posted from interrupt-time
    /// task work as they happen.
    Plain,
}

/// What a ring has done, for `/stats`: syscalls per request are `enters` / requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Submission queue entries handed to the kernel.
    pub submissions: u64,
    /// Completion queue entries reaped.
    pub completions: u64,
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Receives that found no provided buffer (`ENOBUFS`): their multishot ended.
    pub enobufs: u64,
}

/// An operation in flight, as the ring names it (its `user_data`): valid until its last completion
/// (`more` false).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op(u64);

/// `user_data` of an operation that owns no memory (accept, receive, close, cancel): the caller's
/// tag itself, with this bit set, and no entry in the table of operations in flight — so that an
/// idle connection's receive costs the process no memory at all. Tags must leave the top two bits
/// clear (see [`TAG_BITS`]).
const UNTRACKED: u64 = 1 << 63;
/// With [`UNTRACKED`]: the operation is a receive (for the ENOBUFS count).
const RECEIVE: u64 = 1 << 62;
/// The bits a tag may use.
pub const TAG_BITS: u64 = (1 << 62) - 1;

/// A provided buffer a receive filled: read it with [`Ring::buffer`], then [`Ring::recycle`] it.
#[derive(Debug)]
#[must_use = "a provided buffer must be recycled, or the ring runs out"]
pub struct Buffer {
    id: u16,
    len: usize,
}

/// One completion: which operation (`op`, and the `tag` it was submitted with), its result (the
/// syscall's return value, or its errno), whether more will come from the same submission, and
/// what it gives back: the bytes of a receive, the buffer of a send or read.
#[derive(Debug)]
pub struct Completion {
    pub op: Op,
    pub tag: u64,
    pub result: Result<u32, Errno>,
    /// A multishot operation goes on (`IORING_CQE_F_MORE`); false: this was its last completion.
    pub more: bool,
    /// A receive left more bytes in the socket (`IORING_CQE_F_SOCK_NONEMPTY`).
    pub socket_nonempty: bool,
    /// A receive's bytes, in a provided buffer.
    pub buffer: Option<Buffer>,
    /// The buffer a send or a read owned, given back (a read's bytes are its first `result`).
    pub owned: Option<Vec<u8>>,
}

/// What an operation in flight owns until its last completion (a send's or read's bytes, a
/// timeout's timespec).
struct InFlight {
    tag: u64,
    owned: Option<Vec<u8>>,
    _timespec: Option<Box<Timespec>>,
}

/// A ring of `count` buffers of `size` bytes lent to the kernel (`IORING_REGISTER_PBUF_RING`).
struct BufRing {
    /// `count` entries of 16 bytes, page-aligned, the tail in the last 2 bytes of the first.
    entries: *mut BufRingEntry,
    layout: Layout,
    /// The buffers themselves, `count` × `size`, never moved or resized.
    memory: Box<[u8]>,
    size: usize,
    count: u16,
    /// Our copy of the tail: entries before it are the kernel's to take.
    tail: u16,
}

impl BufRing {
    /// Lends buffer `id` (again) to the kernel: one entry at the tail, then the tail moves on.
    fn lend(&mut self, id: u16) {
        let mask = self.count - 1;
        // SAFETY: `entries` points to `count` entries allocated with `layout`, and the index is
        // masked below `count`; the kernel only reads entries between its head and our tail.
        let entry = unsafe { &mut *self.entries.add(usize::from(self.tail & mask)) };
        let start = usize::from(id) * self.size;
        entry.set_addr(self.memory[start..].as_ptr() as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: `BufRingEntry::tail` is the address of the ring's tail inside the first entry,
        // 2-byte aligned, which the kernel reads concurrently: written atomically, with Release so
        // that the entry above is visible before the tail that publishes it.
        let tail = unsafe { &*(BufRingEntry::tail(self.entries).cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }
}

/// An io_uring instance, its operations in flight and its provided buffers. Used by the one thread
/// that made it (`SINGLE_ISSUER`).
pub struct Ring {
    // Declared first so that it is dropped (the kernel's side torn down) before the memory below.
    ring: IoUring,
    setup: Setup,
    ops: Vec<Option<InFlight>>,
    free: Vec<u32>,
    in_flight: usize,
    bufs: Option<BufRing>,
    counters: Counters,
    /// `min_wait_usec` of a batch wait; 0: none (wait for one completion).
    batch_wait_us: u32,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("setup", &self.setup).field("in_flight", &self.in_flight).finish()
    }
}

impl Ring {
    /// `io_uring_setup(entries, SINGLE_ISSUER | DEFER_TASKRUN)`, or with no flags where the kernel
    /// refuses those (EINVAL). Any other refusal (ENOSYS: no io_uring; EPERM: `kernel.io_uring_disabled`
    /// or a seccomp profile) is an error that reads `io_uring_setup (N entries): EPERM: ...`.
    pub fn new(entries: u32) -> io::Result<Ring> {
        let cq = entries.saturating_mul(4);
        let tuned =
            IoUring::builder().setup_single_issuer().setup_defer_taskrun().setup_cqsize(cq).build(entries);
        let (ring, setup) = match tuned {
            Ok(ring) => (ring, Setup::DeferTaskrun),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let plain = IoUring::builder().setup_cqsize(cq).build(entries);
                (plain.map_err(|e| setup_error(entries, &e))?, Setup::Plain)
            }
            Err(e) => return Err(setup_error(entries, &e)),
        };
        Ok(Ring {
            ring,
            setup,
            ops: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            bufs: None,
            counters: Counters::default(),
            batch_wait_us: 0,
        })
    }

    /// How the ring was set up.
    pub fn setup(&self) -> Setup {
        self.setup
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// `io_uring_register_buf_ring`: lends `count` buffers of `size` bytes (count a power of two,
    /// at most 32768) to the kernel, for the receives of this ring to pick from.
    pub fn provide_buffers(&mut self, count: u16, size: usize) -> io::Result<()> {
        let invalid =
            |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("provided buffers: {why}"));
        if self.bufs.is_some() {
            return Err(invalid("already provided"));
        }
        if !count.is_power_of_two() || count > 32768 || size == 0 || size > u32::MAX as usize {
            return Err(invalid("the count must be a power of two up to 32768, the size 1 to 4 GiB"));
        }
        let bytes = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        let layout = Layout::from_size_align(bytes, 4096).map_err(|_| invalid("too many"))?;
        // SAFETY: the layout has a non-zero size (count ≥ 1); zeroed memory is a valid ring (tail 0).
        let entries = unsafe { alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            alloc::handle_alloc_error(layout);
        }
        let memory = vec![0u8; usize::from(count) * size].into_boxed_slice();
        let mut bufs = BufRing { entries, layout, memory, size, count, tail: 0 };
        // SAFETY: `entries` is `count` page-aligned entries that live in `self.bufs` as long as the
        // ring (they are freed in `Drop`, after the ring's fd is closed, or leaked).
        let registered =
            unsafe { self.ring.submitter().register_buf_ring_with_flags(entries as u64, count, GROUP, 0) };
        if let Err(e) = registered {
            // SAFETY: allocated above with `layout`; the kernel did not take it.
            unsafe { alloc::dealloc(entries.cast(), layout) };
            return Err(io::Error::new(
                e.kind(),
                format!("io_uring_register PBUF_RING ({count} × {size} bytes): {e}"),
            ));
        }
        for id in 0..count {
            bufs.lend(id);
        }
        self.bufs = Some(bufs);
        Ok(())
    }

    /// The bytes a receive put in `buffer`.
    pub fn buffer(&self, buffer: &Buffer) -> &[u8] {
        let bufs = self.bufs.as_ref().expect("a Buffer comes only from a ring with provided buffers");
        let start = usize::from(buffer.id) * bufs.size;
        &bufs.memory[start..start + buffer.len]
    }

    /// Lends `buffer` to the kernel again.
    pub fn recycle(&mut self, buffer: Buffer) {
        if let Some(bufs) = &mut self.bufs {
            bufs.lend(buffer.id);
        }
    }

    /// `io_uring_prep_multishot_accept(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)`: each
    /// completion's result is a new connection's fd (take it with [`Completion::take_fd`]).
    pub fn accept_multishot(&mut self, listener: BorrowedFd<'_>, tag: u64) -> io::Result<Op> {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd())).flags(flags).build();
        self.push_untracked(entry, UNTRACKED, tag)
    }

    /// `io_uring_prep_recv_multishot(fd, NULL, 0, 0)` with `IOSQE_BUFFER_SELECT` from the provided
    /// buffers: each completion carries one chunk (a [`Buffer`]), a result of 0 is the end of the
    /// stream, and `ENOBUFS` means no buffer was free (the multishot ends; counted).
    pub fn recv_multishot(&mut self, fd: BorrowedFd<'_>, tag: u64) -> io::Result<Op> {
        let entry = opcode::RecvMulti::new(Fd(fd.as_raw_fd()), GROUP).build();
        self.push_untracked(entry, UNTRACKED | RECEIVE, tag)
    }

    /// The [`Op`] of the multishot receive submitted with `tag` (a receive is named by its tag, so
    /// that a connection need not store it to cancel it).
    pub fn receive_op(tag: u64) -> Op {
        Op(UNTRACKED | RECEIVE | (tag & TAG_BITS))
    }

    /// `io_uring_prep_send(fd, buf + from, len - from, MSG_NOSIGNAL)`: the ring owns `buf` until the
    /// completion gives it back; the result is how many bytes the kernel took.
    pub fn send(&mut self, fd: BorrowedFd<'_>, buf: Vec<u8>, from: usize, tag: u64) -> io::Result<Op> {
        let rest = &buf[from.min(buf.len())..];
        let len = rest.len().min(u32::MAX as usize) as u32;
        let entry =
            opcode::Send::new(Fd(fd.as_raw_fd()), rest.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build();
        // The Vec's heap buffer does not move when the Vec itself is moved into the table.
        self.push(entry, InFlight { tag, owned: Some(buf), _timespec: None })
    }

    /// `io_uring_prep_read(fd, buf, len, 0)` into a buffer of `len` bytes the ring owns until the
    /// completion gives it back: how a signalfd or an eventfd is read through the ring.
    pub fn read(&mut self, fd: BorrowedFd<'_>, len: usize, tag: u64) -> io::Result<Op> {
        let mut buf = vec![0u8; len];
        let entry = opcode::Read::new(Fd(fd.as_raw_fd()), buf.as_mut_ptr(), len as u32).build();
        self.push(entry, InFlight { tag, owned: Some(buf), _timespec: None })
    }

    /// `io_uring_prep_close(fd)`: the fd is the kernel's from now on.
    pub fn close(&mut self, fd: OwnedFd, tag: u64) -> io::Result<Op> {
        let entry = opcode::Close::new(Fd(fd.as_raw_fd())).build();
        let op = self.push_untracked(entry, UNTRACKED, tag)?;
        let _ = fd.into_raw_fd(); // queued: the close is the kernel's now (not queued: dropped, closed)
        Ok(op)
    }

    /// `io_uring_prep_cancel(op)`: ends `op` (a multishot one included); its last completion then
    /// comes with `ECANCELED` (or its own result, if it was already finishing). This submission's
    /// own completion: 0, or `ENOENT` / `EALREADY`.
    pub fn cancel(&mut self, op: Op, tag: u64) -> io::Result<Op> {
        let entry = opcode::AsyncCancel::new(op.0).build();
        self.push_untracked(entry, UNTRACKED, tag)
    }

    /// `io_uring_prep_timeout(after, 0, 0)`: a completion (`ETIME`) once `after` has passed.
    pub fn timeout(&mut self, after: Duration, tag: u64) -> io::Result<Op> {
        let timespec = Box::new(Timespec::from(after));
        let entry = opcode::Timeout::new(&*timespec).build();
        self.push(entry, InFlight { tag, owned: None, _timespec: Some(timespec) })
    }

    /// Queues `entry`, which owns what `op` holds, under an index in the table of operations in
    /// flight; submits what is queued first if the submission queue is full.
    fn push(&mut self, entry: squeue::Entry, op: InFlight) -> io::Result<Op> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.ops.push(None);
                (self.ops.len() - 1) as u32
            }
        };
        match self.queue(entry.user_data(u64::from(index))) {
            Ok(()) => {
                self.ops[index as usize] = Some(op);
                Ok(Op(u64::from(index)))
            }
            Err(e) => {
                self.free.push(index);
                Err(e)
            }
        }
    }

    /// Queues `entry`, which owns no memory, under its `tag` with the `marks` bits.
    fn push_untracked(&mut self, entry: squeue::Entry, marks: u64, tag: u64) -> io::Result<Op> {
        if tag & !TAG_BITS != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("io_uring tag {tag:#x} uses the top two bits"),
            ));
        }
        let user_data = marks | tag;
        self.queue(entry.user_data(user_data))?;
        Ok(Op(user_data))
    }

    fn queue(&mut self, entry: squeue::Entry) -> io::Result<()> {
        if self.ring.submission().is_full() {
            self.enter(0, None, 0)?;
        }
        // SAFETY: every buffer the entry names is owned by the operation's entry in `ops` (stored
        // by the caller once this succeeds) until its last completion, or is the ring's own (the
        // provided buffers); leaked if the ring is dropped before then.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "io_uring submission queue full"));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Makes every later [`Ring::wait`] that is given a batch of more than one a batch wait: it
    /// waits up to `min_wait` for that many completions, then returns with whatever has come (at
    /// least one), so that one `io_uring_enter` reaps several at the cost of at most `min_wait` of
    /// added latency. Returns false, and leaves waits as they were, where the kernel lacks
    /// `IORING_FEAT_MIN_TIMEOUT` (before Linux 6.12) or `min_wait` is zero.
    pub fn set_batch_wait(&mut self, min_wait: Duration) -> bool {
        let us = u32::try_from(min_wait.as_micros()).unwrap_or(u32::MAX);
        self.batch_wait_us = if self.ring.params().is_feature_min_timeout() { us } else { 0 };
        self.batch_wait_us > 0
    }

    /// Submissions queued and not yet handed to the kernel.
    pub fn queued(&mut self) -> usize {
        self.ring.submission().len()
    }

    /// Completions posted and not yet reaped.
    pub fn ready(&mut self) -> usize {
        self.ring.completion().sync();
        self.ring.completion().len()
    }

    /// `io_uring_enter(queued, min_complete, GETEVENTS | EXT_ARG)`: submits what is queued and, if
    /// no completion is waiting yet, waits for one, at most `timeout` (`None`: without limit). With
    /// a batch wait set and a `timeout` longer than it: waits for `batch` completions beyond those
    /// the submissions post at once, but once `min_wait` has passed returns as soon as there is one.
    /// Returns whether it was such a batch wait.
    pub fn wait(&mut self, timeout: Option<Duration>, batch: usize) -> io::Result<bool> {
        self.ring.completion().sync();
        if !self.ring.completion().is_empty() {
            return self.enter(0, None, 0).map(|()| false);
        }
        match (timeout, self.batch_wait_us) {
            (Some(t), us) if us > 0 && batch > 1 && t > Duration::from_micros(us.into()) => {
                // Sends complete inline as they are submitted: their completions count towards
                // `min_complete` (counted from the head of the completion queue), so add them.
                let cq = self.ring.params().cq_entries() as usize;
                let want = (self.queued() + batch).min(cq);
                self.enter(want, timeout, us).map(|()| true)
            }
            _ => self.enter(1, timeout, 0).map(|()| false),
        }
    }

    fn enter(&mut self, want: usize, timeout: Option<Duration>, min_wait_us: u32) -> io::Result<()> {
        let queued = self.ring.submission().len();
        self.counters.enters += 1;
        let result = match timeout {
            Some(after) if want > 0 => {
                let ts = Timespec::from(after);
                let args = SubmitArgs::new().timespec(&ts).min_wait_usec(min_wait_us);
                self.ring.submitter().submit_with_args(want, &args)
            }
            _ => self.ring.submitter().submit_and_wait(want),
        };
        match result {
            Ok(n) => {
                self.counters.submissions += n as u64;
                Ok(())
            }
            // ETIME: the wait timed out; EINTR: a signal; EBUSY: completions must be reaped first.
            // The submissions were taken all the same (the kernel consumes them before waiting).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {
                let left = self.ring.submission().len();
                self.counters.submissions += queued.saturating_sub(left) as u64;
                Ok(())
            }
            Err(e) => Err(io::Error::new(e.kind(), format!("io_uring_enter: {e}"))),
        }
    }

    /// The next completion waiting, if any.
    pub fn next_completion(&mut self) -> Option<Completion> {
        let cqe = self.ring.completion().next()?;
        self.counters.completions += 1;
        let user_data = cqe.user_data();
        let more = cqueue::more(cqe.flags());
        let result = match cqe.result() {
            n if n >= 0 => Ok(n as u32),
            errno => Err(Errno::from_raw(-errno)),
        };
        let buffer = cqueue::buffer_select(cqe.flags())
            .map(|id| Buffer { id, len: *result.as_ref().unwrap_or(&0) as usize });
        let socket_nonempty = cqueue::sock_nonempty(cqe.flags());
        if !more {
            self.in_flight -= 1;
        }
        let (tag, owned) = match user_data & UNTRACKED {
            0 => {
                let index = user_data as u32;
                let slot = self.ops.get_mut(index as usize)?;
                let tag = slot.as_ref()?.tag;
                match more {
                    true => (tag, None),
                    false => {
                        self.free.push(index);
                        (tag, slot.take().and_then(|op| op.owned))
                    }
                }
            }
            _ => {
                if user_data & RECEIVE != 0 && result == Err(Errno::ENOBUFS) {
                    self.counters.enobufs += 1;
                }
                (user_data & TAG_BITS, None)
            }
        };
        Some(Completion { op: Op(user_data), tag, result, more, socket_nonempty, buffer, owned })
    }
}

impl Completion {
    /// An accept's new connection, owned by the caller from now on.
    pub fn take_fd(&self) -> Option<OwnedFd> {
        let fd = *self.result.as_ref().ok()?;
        // SAFETY: the completion of an accept carries a new fd that nothing else owns; a completion
        // is handed out once, and the caller takes the fd from it once.
        Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The kernel may still write into what the operations in flight own: leak it all.
            std::mem::forget(std::mem::take(&mut self.ops));
            if let Some(bufs) = self.bufs.take() {
                std::mem::forget(bufs);
            }
        }
        if let Some(bufs) = &self.bufs {
            // Nothing in flight: no receive can pick a buffer any more.
            let _ = self.ring.submitter().unregister_buf_ring(GROUP);
            // SAFETY: allocated in `provide_buffers` with this layout, and unregistered just above.
            unsafe { alloc::dealloc(bufs.entries.cast(), bufs.layout) };
        }
    }
}

/// What the kernel gave a ring: how it was set up, and whether it has batch waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    pub setup: Setup,
    /// `IORING_FEAT_MIN_TIMEOUT` (Linux 6.12+): [`Ring::set_batch_wait`] takes effect.
    pub batch_wait: bool,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.setup {
            Setup::DeferTaskrun => "SINGLE_ISSUER|DEFER_TASKRUN",
            Setup::Plain => "plain: the kernel refused SINGLE_ISSUER|DEFER_TASKRUN",
        })?;
        f.write_str(match self.batch_wait {
            true => ", batch waits available",
            false => ", no batch waits: the kernel lacks IORING_FEAT_MIN_TIMEOUT (6.12+)",
        })
    }
}

/// Whether this process may use io_uring: a ring of 2 entries made and dropped, and what it had.
/// The error is the line lab-uring exits with (`io_uring_setup (2 entries): EPERM: Operation not
/// permitted`).
pub fn probe() -> io::Result<Platform> {
    let ring = Ring::new(2)?;
    Ok(Platform { setup: ring.setup, batch_wait: ring.ring.params().is_feature_min_timeout() })
}

fn setup_error(entries: u32, error: &io::Error) -> io::Error {
    let errno = Errno::from_raw(error.raw_os_error().unwrap_or(0));
    io::Error::new(error.kind(), format!("io_uring_setup ({entries} entries): {errno:?}: {}", errno.desc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventfd::Waker;
    use std::os::fd::AsFd;
    use std::sync::Arc;
    use std::time::Instant;

    /// A ring with a read armed on each of `count` eventfds, a thread that writes them `apart`
    /// milliseconds apart, and one wait for `batch`. (Not timeout operations: the kernel ends a
    /// wait at once when any of them fires.)
    fn reads_woken_apart(count: u64, apart: u64, batch_wait: Duration, batch: usize) -> (Ring, bool) {
        let mut ring = Ring::new(8).expect("io_uring_setup (CI runs where io_uring works)");
        let batching = ring.set_batch_wait(batch_wait);
        let wakers: Arc<Vec<Waker>> = Arc::new((0..count).map(|_| Waker::new().unwrap()).collect());
        for (tag, waker) in wakers.iter().enumerate() {
            ring.read(waker.as_fd(), 8, tag as u64).unwrap();
        }
        ring.wait(Some(Duration::ZERO), 0).unwrap(); // submitted: the reads are waiting
        let waking = Arc::clone(&wakers);
        let thread = std::thread::spawn(move || {
            for waker in waking.iter() {
                std::thread::sleep(Duration::from_millis(apart));
                waker.wake().unwrap();
            }
        });
        let batched = ring.wait(Some(Duration::from_secs(5)), batch).unwrap();
        thread.join().unwrap();
        assert_eq!(batched, batching && batch > 1, "whether the wait says it was a batch wait");
        (ring, batching)
    }

    fn reap(ring: &mut Ring) -> Vec<u64> {
        std::iter::from_fn(|| ring.next_completion()).map(|c| c.tag).collect()
    }

    #[test]
    fn a_batch_wait_reaps_several_completions_in_one_enter() {
        let (mut ring, batching) = reads_woken_apart(3, 2, Duration::from_millis(500), 3);
        let tags = reap(&mut ring);
        match batching {
            true => assert_eq!(tags, [0, 1, 2], "one io_uring_enter with min_wait should reap all three"),
            // Without IORING_FEAT_MIN_TIMEOUT the wait is the plain one: back at the first.
            false => assert_eq!(tags, [0], "a plain wait returns at the first completion"),
        }
        let (mut plain, _) = reads_woken_apart(3, 2, Duration::ZERO, 3);
        assert_eq!(reap(&mut plain), [0], "with no batch wait, the wait returns at the first completion");
    }

    #[test]
    fn a_batch_wait_returns_with_what_has_come_once_min_wait_has_passed() {
        let started = Instant::now();
        // Waits for 64 completions within 5 s: only one will come, so the wait must end at
        // min_wait (or, without batch waits, at the first completion), not at the 5 s.
        let (mut ring, _) = reads_woken_apart(1, 1, Duration::from_millis(20), 64);
        let waited = started.elapsed();
        assert_eq!(reap(&mut ring), [0]);
        assert!(waited < Duration::from_secs(4), "waited {waited:?}: the batch wait was not bounded");
    }
}
