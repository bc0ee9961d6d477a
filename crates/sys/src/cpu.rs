//! CPU affinity: which CPUs a thread may run on.

use std::io;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::os_error;

/// `sched_setaffinity(0, {cpu})`: pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| os_error("sched_setaffinity cpu", cpu, e))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| os_error("sched_setaffinity cpu", cpu, e))
}

/// `sched_getaffinity(0)`: the CPUs the calling thread may run on, in order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(|e| os_error("sched_getaffinity", "self", e))?;
    Ok((0..CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect())
}

/// `gettid(2)`: the calling thread's id, which names it in `/proc` system-wide.
pub fn thread_id() -> u64 {
    nix::unistd::gettid().as_raw() as u64
}

/// How many times thread `tid` blocked and was woken again (`voluntary_ctxt_switches` in
/// `/proc/TID/status`). Unlike a count of returns from epoll_wait, this includes the wake-ups that
/// ended inside the kernel: a thread woken for a connection another thread accepted first re-checks
/// the listener in `ep_send_events`, finds nothing and sleeps again without returning.
pub fn voluntary_context_switches(tid: u64) -> io::Result<u64> {
    let path = format!("/proc/{tid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| io::Error::new(e.kind(), format!("read {path}: {e}")))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("read {path}: no voluntary_ctxt_switches"))
        })
}
