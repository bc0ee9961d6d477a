//! CPUs: the `--cpus` list, pinning a thread to one CPU, and reading back where threads may run.

use std::io;

use core_affinity::CoreId;
use nix::errno::Errno;
use nix::sched::{sched_getaffinity, CpuSet};
use nix::unistd::Pid;

use crate::os_error;

/// A parsed CPU list (`0-3,8`), in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses `0-3,8` into `[0, 1, 2, 3, 8]`: the list syntax of `taskset -c` and `/sys/devices/system/cpu`.
pub fn parse_cpu_list(text: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("not a CPU number: {s:?}"));
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (number(first)?, number(last)?);
                if first > last {
                    return Err(format!("empty CPU range {part:?}"));
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(number(part)?),
        }
    }
    if cpus.len() > 4096 {
        return Err("more than 4096 CPUs".to_string());
    }
    Ok(CpuList(cpus))
}

/// `sched_setaffinity(0, {cpu})` through `core_affinity`, the crate made for pinning: pins the
/// calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // core_affinity fills a fixed-size cpu_set_t: a CPU beyond it is what the kernel calls EINVAL.
    if cpu >= CpuSet::count() {
        return Err(os_error("sched_setaffinity cpu", cpu, Errno::EINVAL));
    }
    if !core_affinity::set_for_current(CoreId { id: cpu }) {
        return Err(os_error("sched_setaffinity cpu", cpu, Errno::last()));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,8"), Ok(CpuList(vec![0, 1, 2, 3, 8])));
        assert_eq!(parse_cpu_list("5"), Ok(CpuList(vec![5])));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("0-5000").is_err());
    }
}
