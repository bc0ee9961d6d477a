//! What the lab-bench tests share: running the binary, the command line of a short run, and the
//! processes below one.

// Each test file uses its part of what is here.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Timing of a short run: `--duration`, `--warmup`, `--rounds`.
pub const SHORT: [&str; 3] = ["0.5", "0.2", "1"];

/// lab-bench with `args`, run through `prefix` (`ip netns exec NS`; empty: directly), to its end.
pub fn lab_bench<S: AsRef<std::ffi::OsStr>>(prefix: &[&str], args: &[S]) -> Output {
    let mut command = match prefix.split_first() {
        None => Command::new(env!("CARGO_BIN_EXE_lab-bench")),
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(env!("CARGO_BIN_EXE_lab-bench"));
            command
        }
    };
    command.args(args).output().expect("run lab-bench")
}

/// The arguments of a run of `archs` under `workloads` without nginx, its results in `out`, timed
/// by `[duration, warmup, rounds]` ([`SHORT`], or longer).
pub fn run_args(archs: &str, workloads: &str, timing: [&str; 3], out: &Path) -> Vec<String> {
    let [duration, warmup, rounds] = timing;
    let words = ["--archs", archs, "--workloads", workloads, "--duration", duration, "--warmup", warmup];
    let mut args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    args.extend(["--rounds", rounds, "--no-nginx", "--out"].iter().map(|w| w.to_string()));
    args.push(out.to_str().expect("a UTF-8 path").to_string());
    args
}

/// Whether `pid` is running (a zombie is not: it has exited, only its status is left).
pub fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X'])))
}

/// The names (`/proc/PID/comm`) of the processes below `pid`, with their pids.
pub fn below(pid: u32) -> Vec<(u32, String)> {
    labkit::process_tree(pid)
        .into_iter()
        .filter(|&p| p != pid && running(p))
        .map(|p| (p, fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default().trim().to_string()))
        .collect()
}

/// A lab-bench stopped by a signal in the middle of its run.
pub struct Stopped {
    pub pid: u32,
    pub status: ExitStatus,
    pub stderr: String,
    /// The processes below it when the signal was sent.
    pub started: Vec<(u32, String)>,
}

/// Starts lab-bench with `args` (its stderr in `stderr`), waits until a server named `server` and
/// lab-load run below it and `ready(pid)` holds, sends `signal` and waits for it to exit.
pub fn stop_mid_run(
    args: &[String],
    stderr: &Path,
    server: &str,
    ready: impl Fn(u32) -> bool,
    signal: Signal,
) -> Stopped {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(stderr).expect("create the stderr file"))
        .spawn()
        .expect("run lab-bench");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = loop {
        let processes = below(pid);
        let has = |name: &str| processes.iter().any(|(_, comm)| comm == name);
        if has(server) && has("lab-load") && ready(pid) {
            break processes;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("lab-bench exited ({status}) first: {}", fs::read_to_string(stderr).unwrap());
        }
        assert!(Instant::now() < deadline, "no {server} and lab-load below lab-bench: {processes:?}");
        thread::sleep(Duration::from_millis(50));
    };
    kill(Pid::from_raw(pid as i32), signal).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lab-bench still running a minute after {signal}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Stopped { pid, status, stderr: fs::read_to_string(stderr).unwrap(), started }
}
