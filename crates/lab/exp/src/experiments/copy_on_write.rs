//! copy-on-write: after fork(2), parent and child share every page until one of them writes it; only
//! the written pages are copied, and /proc/PID/smaps shows exactly those.

use std::fs::{self, File};
use std::io::{Read, Write};

use nix::sys::wait::waitpid;
use nix::unistd::pipe;
use serde_json::json;

use super::Experiment;
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "copy-on-write",
    summary: "touch N MiB, fork, the child writes a fraction f: Private_Dirty and PSS in smaps match f × N",
    claim: "fork(2) copies no memory: parent and child share every page, marked copy-on-write, and the \
            kernel copies a page only when one side writes it. So a forked process costs only the pages \
            it changes — how Redis takes a snapshot of its whole dataset in a child while the parent goes \
            on serving, and why multi-process servers cost little more than threads.",
    notes: "'Multi-Processes: nginx/postgres ... COW (copy on write): creates a copy when a process tries \
            to change a page, and the copy is given to change' and 'Redis backup routine (COW)'",
    needs_namespace: false,
    run,
};

const MIB: usize = 1 << 20;
/// The memory touched before the fork.
const TOUCHED_MIB: usize = 64;
/// The fractions the child writes, one fork each.
const FRACTIONS: [f64; 4] = [0.0, 0.25, 0.5, 1.0];

/// The smaps fields of one mapping, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Smaps {
    size: u64,
    rss: u64,
    pss: u64,
    shared_dirty: u64,
    private_dirty: u64,
}

/// The fields of the mapping that starts at `addr` in `/proc/PID/smaps` (or that holds it, if the
/// kernel merged it with a neighbour).
fn smaps(pid: u32, addr: usize) -> Smaps {
    let path = format!("/proc/{pid}/smaps");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let mut found = None;
    let mut fields = Smaps::default();
    for line in text.lines() {
        if let Some(range) = line.split_whitespace().next().filter(|r| r.contains('-') && !r.ends_with(':')) {
            if found.is_some() {
                break;
            }
            let (start, end) = range.split_once('-').unwrap_or_default();
            let (start, end) =
                (usize::from_str_radix(start, 16).unwrap_or(0), usize::from_str_radix(end, 16).unwrap_or(0));
            if (start..end).contains(&addr) {
                found = Some(());
            }
            continue;
        }
        if found.is_none() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next().and_then(|v| v.parse::<u64>().ok()))
        else {
            continue;
        };
        match name {
            "Size:" => fields.size = value,
            "Rss:" => fields.rss = value,
            "Pss:" => fields.pss = value,
            "Shared_Dirty:" => fields.shared_dirty = value,
            "Private_Dirty:" => fields.private_dirty = value,
            _ => {}
        }
    }
    assert!(found.is_some(), "no mapping at {addr:#x} in {path}");
    fields
}

/// One fork: the parent's and the child's view of the memory after the fork, and after the child
/// wrote the first `fraction` of its pages.
struct Run {
    after_fork: (Smaps, Smaps),
    after_write: (Smaps, Smaps),
}

fn fork_and_write(memory: &mut sys::shared::PrivateMemory, fraction: f64) -> Run {
    let addr = memory.addr();
    let (to_parent_r, to_parent_w) = pipe().expect("pipe");
    let (to_child_r, to_child_w) = pipe().expect("pipe");
    let (mut to_parent_r, mut to_parent_w) = (File::from(to_parent_r), File::from(to_parent_w));
    let (mut to_child_r, mut to_child_w) = (File::from(to_child_r), File::from(to_child_w));
    let page = 4096;
    let pages = memory.len() / page;
    match sys::process::fork().unwrap_or_else(|e| panic!("{e}")) {
        sys::process::ForkResult::Child => {
            // The child: wait for the go, write one byte in each of the first `fraction` of the
            // pages, say so, wait to be measured, and leave without running any exit handler of
            // the parent's (nothing of its stdout buffer is written twice).
            let mut byte = [0u8];
            let _ = to_child_r.read(&mut byte);
            let slice = memory.as_mut_slice();
            for p in 0..(pages as f64 * fraction).round() as usize {
                slice[p * page] = slice[p * page].wrapping_add(1);
            }
            let _ = to_parent_w.write(b"w");
            let _ = to_child_r.read(&mut byte);
            sys::process::exit_now(0);
        }
        sys::process::ForkResult::Parent { child } => {
            let child_pid = child.as_raw() as u32;
            let me = std::process::id();
            let after_fork = (smaps(me, addr), smaps(child_pid, addr));
            let _ = to_child_w.write(b"g");
            let mut byte = [0u8];
            let _ = to_parent_r.read(&mut byte);
            let after_write = (smaps(me, addr), smaps(child_pid, addr));
            let _ = to_child_w.write(b"x");
            let _ = waitpid(child, None);
            Run { after_fork, after_write }
        }
    }
}

fn run(report: &mut Report) {
    let bytes = TOUCHED_MIB * MIB;
    report.does(format!(
        "maps {TOUCHED_MIB} MiB of private anonymous memory (sys::shared::PrivateMemory) in lab-exp's \
         single-threaded experiment process and writes every page; then, for each f in {FRACTIONS:?}: \
         fork(2) (sys::process::fork), read the mapping's line of /proc/PID/smaps in parent and child, \
         let the child write one byte in each of the first f of the pages, and read both again"
    ));
    let mut memory = sys::shared::PrivateMemory::new(bytes).unwrap_or_else(|e| panic!("{e}"));
    memory.as_mut_slice().iter_mut().step_by(4096).for_each(|b| *b = 1);
    let alone = smaps(std::process::id(), memory.addr());
    report.observe(format!(
        "before any fork: the mapping is {} KiB, Rss {} KiB, Private_Dirty {} KiB, Pss {} KiB",
        alone.size, alone.rss, alone.private_dirty, alone.pss
    ));
    let n_kib = (bytes / 1024) as f64;
    let within = |measured: u64, expected: f64| -> bool {
        // Within 10% of the expectation, or of 1% of N where the expectation is 0.
        (measured as f64 - expected).abs() <= (0.1 * expected).max(0.01 * n_kib)
    };
    let mut runs = Vec::new();
    let mut all_match = true;
    let mut shared_after_fork = true;
    let mut detail = Vec::new();
    for fraction in FRACTIONS {
        let run = fork_and_write(&mut memory, fraction);
        let (parent, child) = run.after_write;
        let copied = fraction * n_kib;
        // Pages written by the child are now two private copies; the rest is still shared by two.
        let pss = copied + (n_kib - copied) / 2.0;
        let ok = within(child.private_dirty, copied)
            && within(parent.private_dirty, copied)
            && within(child.pss, pss)
            && within(parent.pss, pss)
            && within(child.shared_dirty, n_kib - copied);
        all_match &= ok;
        let (fork_parent, fork_child) = run.after_fork;
        shared_after_fork &= within(fork_child.private_dirty, 0.0)
            && within(fork_parent.private_dirty, 0.0)
            && within(fork_child.pss, n_kib / 2.0);
        report.observe(format!(
            "f = {fraction}: right after fork, child Private_Dirty {} KiB, Shared_Dirty {} KiB, Pss {} KiB; \
             after the child wrote {:.0} KiB: child Private_Dirty {} KiB, Shared_Dirty {} KiB, Pss {} KiB; \
             parent Private_Dirty {} KiB, Pss {} KiB (expected: Private_Dirty {:.0}, Pss {:.0})",
            fork_child.private_dirty,
            fork_child.shared_dirty,
            fork_child.pss,
            copied,
            child.private_dirty,
            child.shared_dirty,
            child.pss,
            parent.private_dirty,
            parent.pss,
            copied,
            pss
        ));
        detail.push(format!("f={fraction}: {} vs {copied:.0} KiB", child.private_dirty));
        runs.push(json!({
            "fraction": fraction,
            "expected_private_dirty_kib": copied.round() as u64,
            "expected_pss_kib": pss.round() as u64,
            "after_fork": { "child_private_dirty_kib": fork_child.private_dirty, "child_shared_dirty_kib": fork_child.shared_dirty,
                            "child_pss_kib": fork_child.pss, "parent_private_dirty_kib": fork_parent.private_dirty },
            "after_write": { "child_private_dirty_kib": child.private_dirty, "child_shared_dirty_kib": child.shared_dirty,
                             "child_pss_kib": child.pss, "parent_private_dirty_kib": parent.private_dirty,
                             "parent_pss_kib": parent.pss },
        }));
    }
    report.figure("touched_kib", n_kib as u64);
    report.figure("before_fork_private_dirty_kib", alone.private_dirty);
    report.figure("runs", serde_json::Value::Array(runs));
    report.check(
        "before the fork every touched page is the process's own: Private_Dirty ≈ N",
        within(alone.private_dirty, n_kib),
        format!("{} of {} KiB", alone.private_dirty, n_kib),
    );
    report.check(
        "right after fork nothing is copied: both sides' Private_Dirty ≈ 0 and each Pss ≈ N / 2",
        shared_after_fork,
        "see the lines above",
    );
    report.check(
        "after the child writes f of the pages, each side's Private_Dirty is f × N and Pss is \
         f × N + (1 − f) × N / 2, within 10%",
        all_match,
        detail.join("; "),
    );
}
