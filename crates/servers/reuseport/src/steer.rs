//! How the kernel picks the socket, and so the worker, of each new connection (`--steer`), and where
//! a closing socket's queue goes (`--migrate`): the eBPF program, its two maps, and the load each
//! worker publishes for it.
//!
//! The load table is one `BPF_F_MMAPABLE` array value, mapped by every process: slot *i* is eight
//! 64-bit words, written by worker *i* with plain stores (no system call) and read by the program at
//! every SYN. The program scans the live slots from the one the 4-tuple's hash names and picks the
//! lowest score, `open + queued`, plus [`BUSY_PENALTY`] for a worker that has been executing one
//! batch of events for longer than [`BUSY_AFTER_NS`]; ties go to the first seen, so the hash breaks
//! them. It falls back to the hash (returns `SK_PASS` selecting nothing) when no slot is live or the
//! chosen socket has just closed.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use clap::ValueEnum;
use loopkit::listener::Listener;
use loopkit::startup;
use sys::bpf::{
    ctx, Alu, Asm, Attach, Cond, Helper, Insn, Size, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9,
};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Steer {
    /// The kernel's default: a hash of the connection's addresses and ports.
    Hash,
    /// A classic BPF program picks the socket of the CPU that handles the connection's SYN.
    Cpu,
    /// An eBPF program picks the least loaded worker, from the load each one publishes.
    Load,
}

impl Steer {
    pub fn name(self) -> &'static str {
        match self {
            Steer::Hash => "hash",
            Steer::Cpu => "cpu",
            Steer::Load => "load",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Migrate {
    On,
    Off,
}

/// The words of a worker's slot in the load table.
pub mod word {
    /// 1 while the worker accepts on the socket in its sockarray slot; 0: skip this slot.
    pub const LIVE: usize = 0;
    /// CLOCK_MONOTONIC ns at which the worker began its current batch of events; 0 while it waits.
    pub const BUSY_SINCE: usize = 1;
    /// Connections the worker has open.
    pub const OPEN: usize = 2;
    /// Connections it took off its queue (raised to `SENT` whenever it found the queue empty).
    pub const TAKEN: usize = 3;
    /// Connections the program sent to this slot (the program's atomic add).
    pub const SENT: usize = 4;
    /// Of those, requests migrated here from a closing socket.
    pub const MIGRATED: usize = 5;
    /// u64s per slot: 64 bytes, a cache line of its own.
    pub const WORDS: usize = 8;
}

/// A worker executing one batch of events for longer than this counts as busy (10 ms: a batch of
/// the lab's workloads takes microseconds to a few ms, lab-bench's heavy requests 1 ms each, so
/// that a worker merely working is weighed by its connections; `/sleep` holds one for its length).
pub const BUSY_AFTER_NS: i32 = 10_000_000;
/// Added to a busy worker's score: it is chosen only if every live worker is busy.
pub const BUSY_PENALTY: i32 = 1 << 30;

/// The steering of a server: the mode, and the program with its maps where one is loaded.
pub struct Steering {
    pub steer: Steer,
    /// Whether the program decides migrations (attached `SELECT_OR_MIGRATE`).
    pub migrate: bool,
    ebpf: Option<Ebpf>,
    /// The load table, every slot's words; empty without a program.
    pub table: &'static [AtomicU64],
}

struct Ebpf {
    program: OwnedFd,
    sockets: OwnedFd,
    _table: OwnedFd,
}

impl Steering {
    /// Sets up `steer` for `slots` worker slots; `migrate` as asked (default: on with load, off
    /// otherwise). Where the kernel refuses, `--steer load` exits 1 naming the call, and migration
    /// falls back to off with one line saying so.
    pub fn new(steer: Steer, migrate: Option<Migrate>, slots: usize) -> Steering {
        let migrate = migrate.map_or(steer == Steer::Load, |m| m == Migrate::On);
        if steer == Steer::Cpu && migrate {
            loopkit::config::usage_error(
                "--migrate on needs an eBPF program; --steer cpu's classic one cannot migrate",
            );
        }
        if steer == Steer::Cpu || (steer == Steer::Hash && !migrate) {
            return Steering { steer, migrate: false, ebpf: None, table: &[] };
        }
        let fix = "run as root (CAP_BPF and CAP_NET_ADMIN) on Linux >= 5.14, or use --steer hash";
        let refuse = |e: io::Error| -> ! {
            startup::fatal(format!("--steer {}: {e}; {fix}", steer.name()));
        };
        let maps = sys::bpf::sockarray(slots as u32)
            .and_then(|sockets| Ok((sockets, sys::bpf::shared_array(slots * word::WORDS * 8)?)));
        let (sockets, (table_fd, table)) = match maps {
            Ok(maps) => maps,
            Err(e) if steer == Steer::Load => refuse(e),
            Err(e) => return Steering::without_migration(steer, e),
        };
        let insns = program(&table_fd, &sockets, slots, steer == Steer::Load);
        let loaded = match migrate {
            true => sys::bpf::load_reuseport_program(&insns, Attach::SelectOrMigrate),
            false => sys::bpf::load_reuseport_program(&insns, Attach::Select),
        };
        let (program, migrate) = match loaded {
            Ok(program) => (program, migrate),
            Err(e) if steer == Steer::Hash => return Steering::without_migration(steer, e),
            Err(e) if migrate => {
                startup::log(format!("--migrate on: {e}; falling back to --migrate off"));
                match sys::bpf::load_reuseport_program(&insns, Attach::Select) {
                    Ok(program) => (program, false),
                    Err(e) => refuse(e),
                }
            }
            Err(e) => refuse(e),
        };
        Steering { steer, migrate, ebpf: Some(Ebpf { program, sockets, _table: table_fd }), table }
    }

    fn without_migration(steer: Steer, e: io::Error) -> Steering {
        startup::log(format!("--migrate on: {e}; falling back to --migrate off"));
        Steering { steer, migrate: false, ebpf: None, table: &[] }
    }

    /// A new socket joins the group, for worker `slot` of `workers` (at start): with a program, it
    /// is attached through the socket (so the group has it even if every older socket closed) and
    /// the socket takes `slot` of the sockarray; with `--steer cpu`, the classic program.
    pub fn join(&self, listener: &Listener, slot: usize, workers: usize) -> io::Result<()> {
        let fd = listener.fd.as_fd();
        match &self.ebpf {
            Some(ebpf) => {
                sys::bpf::attach_reuseport_program(fd, ebpf.program.as_fd())?;
                sys::bpf::sockarray_set(ebpf.sockets.as_fd(), slot as u32, fd)
            }
            None if self.steer == Steer::Cpu => {
                sys::socket::attach_reuseport_cpu_steering(fd, workers as u32)
            }
            None => Ok(()),
        }
    }

    /// Worker `slot`'s words in the load table (none without a program).
    pub fn slot(&self, slot: usize) -> Option<&'static [AtomicU64]> {
        self.table.get(slot * word::WORDS..(slot + 1) * word::WORDS)
    }

    /// The rule, in words, for /stats.
    pub fn describe(&self) -> &'static str {
        match (self.steer, self.ebpf.is_some()) {
            (Steer::Load, _) => {
                "least of open + queued connections, busy (one batch > 10 ms) last; ties by hash"
            }
            (Steer::Hash, true) => "hash; migrations to the least loaded",
            (Steer::Hash, false) => "hash",
            (Steer::Cpu, _) => "the CPU taking the SYN, mod the group's size",
        }
    }
}

/// What a worker publishes in its slot of the load table: plain atomic stores, no system call.
pub struct Load {
    words: &'static [AtomicU64],
}

impl Load {
    pub fn new(words: &'static [AtomicU64]) -> Load {
        Load { words }
    }

    /// The worker's new socket is empty: nothing the program sent before counts as queued; then
    /// the program may choose it.
    pub fn live(&self) {
        self.words[word::TAKEN].store(self.words[word::SENT].load(Relaxed), Relaxed);
        self.words[word::LIVE].store(1, Relaxed);
    }

    /// The worker closes its socket: the program stops choosing it.
    pub fn retire(&self) {
        self.words[word::LIVE].store(0, Relaxed);
        self.words[word::BUSY_SINCE].store(0, Relaxed);
    }

    /// The worker goes back to waiting: it publishes its open connections.
    pub fn idle(&self, open: u64) {
        self.words[word::OPEN].store(open, Relaxed);
        self.words[word::BUSY_SINCE].store(0, Relaxed);
    }

    /// The worker woke up and begins a batch of events.
    pub fn busy(&self) {
        self.words[word::BUSY_SINCE].store(sys::timer::monotonic_ns(), Relaxed);
    }

    /// How many the program has sent here so far.
    pub fn sent(&self) -> u64 {
        self.words[word::SENT].load(Relaxed)
    }

    /// The worker has just taken `n` connections and emptied its queue: what the program had sent
    /// before `sent` (read before accepting) is taken or lost (a handshake that never completed, a
    /// full queue), so it no longer counts as queued.
    /// Its open connections are published at once: they no longer count as queued.
    pub fn took(&self, n: u64, sent: u64, open: u64) {
        self.words[word::OPEN].store(open, Relaxed);
        let taken = self.words[word::TAKEN].load(Relaxed).wrapping_add(n);
        self.words[word::TAKEN].store(taken.max(sent), Relaxed);
    }
}

/// The `SK_REUSEPORT` program for `slots` slots of `table`, selecting from `sockets`. With
/// `by_load` false it selects only where a closing socket's requests go (`migrating_sk` set) and
/// leaves every new connection to the hash. Registers: r6 the context, r7 the slot the scan starts
/// at, r8 `migrating_sk`, r9 the table, r1 the best slot so far, r2 its score; the stack holds the
/// key (fp-4) and the time (fp-16).
pub fn program(table: &OwnedFd, sockets: &OwnedFd, slots: usize, by_load: bool) -> Vec<Insn> {
    let n = slots as i32;
    let mut a = Asm::new();
    a.alu_reg(Alu::Mov, R6, R1) // r6 = ctx, kept for bpf_sk_select_reuseport
        .load(Size::DW, R8, R6, ctx::MIGRATING_SK); // r8 = migrating_sk: NULL for a new connection
    if !by_load {
        a.jump_imm(Cond::Eq, R8, 0, "pass"); // a new connection: the hash picks
    }
    a.load(Size::W, R7, R6, ctx::HASH) // r7 = the 4-tuple's hash
        .alu_imm(Alu::Mod, R7, n) // r7 = the slot the scan starts at: ties go the hash's way
        .store_imm(Size::W, R10, -4, 0) // key = 0, the table's one element
        .alu_reg(Alu::Mov, R2, R10)
        .alu_imm(Alu::Add, R2, -4) // r2 = &key
        .load_map(R1, table.as_fd()) // r1 = the load table
        .call(Helper::MapLookupElem) // r0 = its value, or NULL
        .jump_imm(Cond::Eq, R0, 0, "pass") // (never NULL for an array's key 0)
        .alu_reg(Alu::Mov, R9, R0) // r9 = &table
        .call(Helper::KtimeGetNs) // r0 = now, CLOCK_MONOTONIC ns
        .store(Size::DW, R10, -16, R0) // fp-16 = now
        .alu_imm(Alu::Mov, R1, n) // r1 = best slot: none yet
        .alu_imm(Alu::Mov, R2, -1); // r2 = best score: u64::MAX
    for k in 0..n {
        let (wrapped, next, scored) = (format!("wrapped{k}"), format!("next{k}"), format!("scored{k}"));
        let queued = format!("queued{k}");
        let at = |w: usize| (w * 8) as i16;
        a.alu_reg(Alu::Mov, R3, R7)
            .alu_imm(Alu::Add, R3, k) // r3 = start + k
            .jump_imm(Cond::Lt, R3, n, &wrapped)
            .alu_imm(Alu::Sub, R3, n) // r3 = (start + k) mod n: this slot
            .label(&wrapped)
            .jump_imm(Cond::Ge, R3, n, &next) // (for the verifier: r3 < n below)
            .alu_reg(Alu::Mov, R4, R3)
            .alu_imm(Alu::Lsh, R4, 6)
            .alu_reg(Alu::Add, R4, R9) // r4 = &table[r3], 64 bytes a slot
            .load(Size::DW, R5, R4, at(word::LIVE))
            .jump_imm(Cond::Eq, R5, 0, &next) // no live socket in this slot: skip it
            .load(Size::DW, R5, R4, at(word::SENT))
            .load(Size::DW, R0, R4, at(word::TAKEN))
            .alu_reg(Alu::Sub, R5, R0) // r5 = sent - taken: queued, not yet accepted
            .jump_imm(Cond::SignedGt, R5, 0, &queued)
            .alu_imm(Alu::Mov, R5, 0) // (taken may run ahead of sent: then none)
            .label(&queued)
            .load(Size::DW, R0, R4, at(word::OPEN))
            .alu_reg(Alu::Add, R5, R0) // r5 = queued + open
            .load(Size::DW, R0, R4, at(word::BUSY_SINCE))
            .jump_imm(Cond::Eq, R0, 0, &scored) // waiting in epoll_wait: not busy
            .load(Size::DW, R4, R10, -16)
            .alu_reg(Alu::Sub, R4, R0) // r4 = now - busy_since
            .jump_imm(Cond::SignedLe, R4, BUSY_AFTER_NS, &scored) // busy, but not for long
            .alu_imm(Alu::Add, R5, BUSY_PENALTY) // stuck in one batch: last resort
            .label(&scored)
            .jump_reg(Cond::Ge, R5, R2, &next) // no better than the best so far
            .alu_reg(Alu::Mov, R2, R5) // best score = r5
            .alu_reg(Alu::Mov, R1, R3) // best slot = r3
            .label(&next);
    }
    a.jump_imm(Cond::Ge, R1, n, "pass") // no live slot: the hash picks
        .store(Size::W, R10, -4, R1) // key = best slot
        .alu_reg(Alu::Mov, R1, R6)
        .load_map(R2, sockets.as_fd())
        .alu_reg(Alu::Mov, R3, R10)
        .alu_imm(Alu::Add, R3, -4)
        .alu_imm(Alu::Mov, R4, 0)
        .call(Helper::SkSelectReuseport) // choose sockets[key]
        .jump_imm(Cond::Ne, R0, 0, "pass") // its socket just closed: the hash picks among the rest
        .load(Size::W, R1, R10, -4)
        .jump_imm(Cond::Ge, R1, n, "pass") // (for the verifier)
        .alu_imm(Alu::Lsh, R1, 6)
        .alu_reg(Alu::Add, R1, R9) // r1 = &table[key]
        .alu_imm(Alu::Mov, R2, 1)
        .atomic_add(R1, (word::SENT * 8) as i16, R2) // sent += 1
        .jump_imm(Cond::Eq, R8, 0, "pass")
        .atomic_add(R1, (word::MIGRATED * 8) as i16, R2) // migrated += 1
        .label("pass")
        .alu_imm(Alu::Mov, R0, sys::bpf::SK_PASS) // SK_PASS: the selected socket, else the hash's
        .exit();
    a.finish()
}
