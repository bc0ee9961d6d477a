//! eBPF for a `SO_REUSEPORT` group, by raw `bpf(2)` calls (no libbpf): the two maps a steering
//! program needs (an `ARRAY` the workers `mmap` to publish their load, and a `REUSEPORT_SOCKARRAY`
//! of the group's sockets), the program's load (with the verifier's log in the error when it
//! refuses), `SO_ATTACH_REUSEPORT_EBPF`, and a small assembler, [`Asm`], so that a program is written
//! as named instructions and jumps to named labels instead of numbers.
//!
//! Everything here needs `CAP_BPF` (or root): each call's error names the call and the errno, and
//! [`probe`] says up front whether this process may use them at all.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU64;

use nix::errno::Errno;
use nix::sys::mman::{mmap, MapFlags, ProtFlags};

use crate::{last_os_error, os_error};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_REUSEPORT_SOCKARRAY: u32 = 20;
const BPF_PROG_TYPE_SK_REUSEPORT: u32 = 21;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const SO_ATTACH_REUSEPORT_EBPF: libc::c_int = 52;

/// How the program is attached to the group: it picks the socket of each new connection, and, with
/// [`Attach::SelectOrMigrate`] (Linux ≥ 5.14), also where a closing socket's queued and half-open
/// connections go (`migrating_sk` set), instead of their being reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    Select = 39,
    SelectOrMigrate = 40,
}

/// The helpers a `SK_REUSEPORT` program here calls (`enum bpf_func_id`).
#[derive(Debug, Clone, Copy)]
pub enum Helper {
    /// `void *bpf_map_lookup_elem(map, const void *key)`: r0 = the value, or NULL.
    MapLookupElem = 1,
    /// `u64 bpf_ktime_get_ns(void)`: CLOCK_MONOTONIC, in ns.
    KtimeGetNs = 5,
    /// `long bpf_sk_select_reuseport(ctx, map, void *key, u64 flags)`: 0 once the socket at `key`
    /// of the `REUSEPORT_SOCKARRAY` is chosen; -ENOENT if that slot holds no live socket.
    SkSelectReuseport = 82,
}

/// `struct sk_reuseport_md`'s fields, as offsets into the program's context (r1 at entry).
pub mod ctx {
    /// `__u32 hash`: the hash of the connection's 4-tuple, the kernel's own choice.
    pub const HASH: i16 = 32;
    /// `struct bpf_sock *migrating_sk`: NULL for a new connection; the closing socket's request when
    /// it is being migrated (Linux ≥ 5.14).
    pub const MIGRATING_SK: i16 = 48;
}

/// A program's return value: `SK_PASS` takes the selected socket (or, if none was selected, the
/// kernel's hash); `SK_DROP` refuses the connection.
pub const SK_PASS: i32 = 1;

/// One eBPF register. r0: return value; r1–r5: arguments, clobbered by calls; r6–r9: kept across
/// calls; r10: the frame pointer (read-only), the stack below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R9: Reg = Reg(9);
pub const R10: Reg = Reg(10);

/// A memory access's width.
#[derive(Debug, Clone, Copy)]
pub enum Size {
    W = 0x00,
    DW = 0x18,
}

/// The 64-bit arithmetic a program here uses (`BPF_ALU64 | op`).
#[derive(Debug, Clone, Copy)]
pub enum Alu {
    Add = 0x00,
    Sub = 0x10,
    Lsh = 0x60,
    Mod = 0x90,
    Mov = 0xb0,
}

/// A conditional jump's test (`BPF_JMP | op`), unsigned unless named signed.
#[derive(Debug, Clone, Copy)]
pub enum Cond {
    Eq = 0x10,
    Ge = 0x30,
    Ne = 0x50,
    SignedGt = 0x60,
    Lt = 0xa0,
    SignedLe = 0xd0,
}

const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_ATOMIC: u8 = 0xc0;
const BPF_JA: u8 = 0x00;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// One instruction, laid out as `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn { code, regs: dst.0 | (src.0 << 4), off, imm }
    }
}

/// A program being written: instructions, and jumps to labels resolved by [`Asm::finish`].
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<String, usize>,
    /// (index of a jump, the label it goes to)
    jumps: Vec<(usize, String)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    /// How many instructions so far (a 64-bit immediate load counts two).
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// `dst = dst op imm` (64-bit).
    pub fn alu_imm(&mut self, op: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.push(Insn::new(BPF_ALU64 | BPF_K | op as u8, dst, R0, 0, imm))
    }

    /// `dst = dst op src` (64-bit).
    pub fn alu_reg(&mut self, op: Alu, dst: Reg, src: Reg) -> &mut Self {
        self.push(Insn::new(BPF_ALU64 | BPF_X | op as u8, dst, src, 0, 0))
    }

    /// `dst = *(size *)(src + off)`
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(Insn::new(BPF_LDX | BPF_MEM | size as u8, dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = src`
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(Insn::new(BPF_STX | BPF_MEM | size as u8, dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = imm`
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(Insn::new(BPF_ST | BPF_MEM | size as u8, dst, R0, off, imm))
    }

    /// `lock *(u64 *)(dst + off) += src`: an atomic add, safe against the same program running on
    /// another CPU at once.
    pub fn atomic_add(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(Insn::new(BPF_STX | BPF_ATOMIC | Size::DW as u8, dst, src, off, 0))
    }

    /// `dst = map` (by fd; the kernel replaces it with the map's address at load).
    pub fn load_map(&mut self, dst: Reg, map: BorrowedFd<'_>) -> &mut Self {
        self.push(Insn::new(
            BPF_LD | BPF_IMM | Size::DW as u8,
            dst,
            Reg(BPF_PSEUDO_MAP_FD),
            0,
            map.as_raw_fd(),
        ));
        self.push(Insn::new(0, R0, R0, 0, 0))
    }

    /// `r0 = helper(r1, ..., r5)`; r1–r5 are clobbered.
    pub fn call(&mut self, helper: Helper) -> &mut Self {
        self.push(Insn::new(BPF_JMP | BPF_CALL, R0, R0, 0, helper as i32))
    }

    /// `return r0`
    pub fn exit(&mut self) -> &mut Self {
        self.push(Insn::new(BPF_JMP | BPF_EXIT, R0, R0, 0, 0))
    }

    /// `if dst cond imm goto label`
    pub fn jump_imm(&mut self, cond: Cond, dst: Reg, imm: i32, label: &str) -> &mut Self {
        self.jumps.push((self.insns.len(), label.to_string()));
        self.push(Insn::new(BPF_JMP | BPF_K | cond as u8, dst, R0, 0, imm))
    }

    /// `if dst cond src goto label`
    pub fn jump_reg(&mut self, cond: Cond, dst: Reg, src: Reg, label: &str) -> &mut Self {
        self.jumps.push((self.insns.len(), label.to_string()));
        self.push(Insn::new(BPF_JMP | BPF_X | cond as u8, dst, src, 0, 0))
    }

    /// `goto label`
    pub fn goto(&mut self, label: &str) -> &mut Self {
        self.jumps.push((self.insns.len(), label.to_string()));
        self.push(Insn::new(BPF_JMP | BPF_JA, R0, R0, 0, 0))
    }

    /// Names the next instruction `label`.
    pub fn label(&mut self, label: &str) -> &mut Self {
        let previous = self.labels.insert(label.to_string(), self.insns.len());
        assert!(previous.is_none(), "label {label} defined twice");
        self
    }

    fn push(&mut self, insn: Insn) -> &mut Self {
        self.insns.push(insn);
        self
    }

    /// The instructions, every jump resolved. Panics on a jump to an undefined label or a forward
    /// distance that does not fit (a mistake in the program's text, not a run-time condition).
    pub fn finish(mut self) -> Vec<Insn> {
        for (at, label) in &self.jumps {
            let target = *self.labels.get(label).unwrap_or_else(|| panic!("no label {label}"));
            let off = target as isize - *at as isize - 1;
            self.insns[*at].off = i16::try_from(off).expect("jump within ±32767 instructions");
        }
        self.insns
    }
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: `attr` is a live, initialised `#[repr(C)]` prefix of `union bpf_attr` for `cmd`, and
    // its size is passed along: the kernel reads at most that many bytes (zero-filling the rest)
    // and writes nothing back for the commands used here; pointers inside it (program, license,
    // log, key, value) point at memory the caller keeps alive for the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, (attr as *mut T).cast::<libc::c_void>(), mem::size_of::<T>()) }
}

#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

fn map_create(what: &str, attr: &mut MapCreateAttr) -> io::Result<OwnedFd> {
    let fd = bpf(BPF_MAP_CREATE, attr);
    if fd < 0 {
        return Err(last_os_error("bpf BPF_MAP_CREATE", what));
    }
    // SAFETY: the call returned a new map fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// A `BPF_MAP_TYPE_REUSEPORT_SOCKARRAY` of `slots` sockets (key u32, value the socket's fd as u64).
pub fn sockarray(slots: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_REUSEPORT_SOCKARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: slots,
        map_flags: 0,
    };
    map_create("REUSEPORT_SOCKARRAY", &mut attr)
}

/// `bpf(BPF_MAP_UPDATE_ELEM)`: puts the listening socket `socket` at `slot` of a sockarray (the
/// socket must be bound with `SO_REUSEPORT` and listening). A socket that closes leaves its slot
/// by itself.
pub fn sockarray_set(map: BorrowedFd<'_>, slot: u32, socket: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let key = slot;
    let value = socket.as_raw_fd() as u64;
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u64 as u64,
        flags: 0, // BPF_ANY
    };
    if bpf(BPF_MAP_UPDATE_ELEM, &mut attr) < 0 {
        return Err(last_os_error("bpf BPF_MAP_UPDATE_ELEM sockarray slot", slot));
    }
    Ok(())
}

/// A `BPF_MAP_TYPE_ARRAY` of one `bytes`-long value, created `BPF_F_MMAPABLE` and mapped
/// `MAP_SHARED` here: the program reads it through `bpf_map_lookup_elem(map, &0)`, and every process
/// forked after this call reads and writes the same memory as plain atomics, with no system call.
/// The mapping is never unmapped (it lives as long as the server), hence `'static`.
pub fn shared_array(bytes: usize) -> io::Result<(OwnedFd, &'static [AtomicU64])> {
    let words = bytes.div_ceil(8).max(1);
    let fd = mmapable_array(words)?;
    let len = NonZeroUsize::new(words * 8).expect("at least one word");
    // SAFETY: a fresh shared mapping of the map's pages, no address hint: it aliases no memory of
    // ours. The kernel lets an mmapable array's value area be mapped from offset 0.
    let ptr = unsafe {
        mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, &fd, 0)
    }
    .map_err(|e| os_error("mmap BPF array fd", fd.as_raw_fd(), e))?;
    // SAFETY: the mapping is page-aligned (so aligned for AtomicU64), `words` words long, zeroed by
    // the kernel (all-zero is a valid AtomicU64), never unmapped, and accessed only atomically here
    // (the program's own writes are atomic adds).
    let words = unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<AtomicU64>(), words) };
    Ok((fd, words))
}

/// A `BPF_MAP_TYPE_ARRAY`, `BPF_F_MMAPABLE`, of one value `words` 64-bit words long.
fn mmapable_array(words: usize) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: (words * 8) as u32,
        max_entries: 1,
        map_flags: BPF_F_MMAPABLE,
    };
    map_create("ARRAY BPF_F_MMAPABLE", &mut attr)
}

/// `bpf(BPF_PROG_LOAD)` of a `BPF_PROG_TYPE_SK_REUSEPORT` program. When the verifier refuses it, the
/// load is tried again with the verifier's log on, and the error ends with that log's last lines.
pub fn load_reuseport_program(insns: &[Insn], attach: Attach) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    const LICENSE: &[u8] = b"MIT\0";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"acceptlab_ld\0");
    let mut log = vec![0u8; 1 << 20];
    let attempt = |log_level: u32, log: &mut [u8]| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_SK_REUSEPORT,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level,
            log_size: if log_level == 0 { 0 } else { log.len() as u32 },
            log_buf: if log_level == 0 { 0 } else { log.as_mut_ptr() as u64 },
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: attach as u32,
        };
        let fd = bpf(BPF_PROG_LOAD, &mut attr);
        // SAFETY: the call returned a new program fd that nothing else owns.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) }).ok_or_else(Errno::last)
    };
    let what = match attach {
        Attach::Select => "SK_REUSEPORT (attach SELECT)",
        Attach::SelectOrMigrate => "SK_REUSEPORT (attach SELECT_OR_MIGRATE)",
    };
    let errno = match attempt(0, &mut log) {
        Ok(fd) => return Ok(fd),
        Err(errno) => errno,
    };
    // The verifier explains a refusal only with a log; permission and support errors need none.
    if errno == Errno::EACCES || (errno == Errno::EINVAL && attempt(1, &mut log).is_err()) {
        let text =
            String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
        let tail: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
        if !tail.is_empty() {
            let error = os_error("bpf BPF_PROG_LOAD", what, errno);
            return Err(io::Error::new(error.kind(), format!("{error} (verifier: {tail})")));
        }
    }
    Err(os_error("bpf BPF_PROG_LOAD", what, errno))
}

/// `setsockopt(SO_ATTACH_REUSEPORT_EBPF)`: `program` decides for the whole `SO_REUSEPORT` group
/// `listener` is in (replacing any program it had); the group keeps it as long as it has a socket.
pub fn attach_reuseport_program(listener: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let fd: libc::c_int = program.as_raw_fd();
    // SAFETY: the option value is a live c_int, its size passed; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_EBPF,
            (&fd as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last_os_error("setsockopt SO_ATTACH_REUSEPORT_EBPF fd", listener.as_raw_fd()));
    }
    Ok(())
}

/// Whether this process may create the maps and load a `SK_REUSEPORT` program that selects from a
/// sockarray: the error names the call that refused, as `lab-reuseport --steer load` would print it.
pub fn probe() -> io::Result<()> {
    let sockets = sockarray(1)?;
    let table = mmapable_array(8)?;
    let mut asm = Asm::new();
    asm.alu_reg(Alu::Mov, R6, R1)
        .store_imm(Size::W, R10, -4, 0)
        .alu_reg(Alu::Mov, R2, R10)
        .alu_imm(Alu::Add, R2, -4)
        .load_map(R1, table.as_fd())
        .call(Helper::MapLookupElem)
        .alu_reg(Alu::Mov, R1, R6)
        .load_map(R2, sockets.as_fd())
        .alu_reg(Alu::Mov, R3, R10)
        .alu_imm(Alu::Add, R3, -4)
        .alu_imm(Alu::Mov, R4, 0)
        .call(Helper::SkSelectReuseport)
        .alu_imm(Alu::Mov, R0, SK_PASS)
        .exit();
    load_reuseport_program(&asm.finish(), Attach::Select).map(drop)
}
