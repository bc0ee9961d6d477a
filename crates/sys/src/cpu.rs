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
