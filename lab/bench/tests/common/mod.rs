//! What the lab-bench tests share: running the binary, and the command line of a short run.

use std::path::Path;
use std::process::{Command, Output};

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
