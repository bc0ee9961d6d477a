//! lab-exp: the source notes' claims about the kernel's queues and buffers, made runnable.
//!
//! Each experiment states a claim, does something to one of the project's servers (or to sockets of
//! its own), measures what the kernel did — `ss`, `TCP_INFO`, /proc/net/netstat and snmp deltas, the
//! server's /stats, lab-load — and says whether the measurements agree with the claim. It exits
//! non-zero when they do not.
//!
//! Every experiment runs in a child process of lab-exp that first enters a network namespace of its
//! own (`unshare(CLONE_NEWNET)`): its sysctls, its floods and its dropped packets stay there, and its
//! counters are its own. The namespace goes away when the child exits; the parent then checks that
//! the host's sysctls read as before. Without the privilege to make a namespace, the experiments that
//! change sysctls or drop packets say so and are skipped; the others run on the host's loopback.
#![forbid(unsafe_code)]

mod experiments;
mod kernel;
mod net;
mod relay;
mod report;

use std::io::Write as _;
use std::process::{self, Command, Stdio};
use std::sync::OnceLock;

use clap::Parser;
use report::Report;
use serde_json::Value;

use crate::experiments::{Experiment, EXPERIMENTS};

/// Set in the child that runs one experiment.
const CHILD_ENV: &str = "LAB_EXP_CHILD";

/// lab-exp: the source notes' claims about accept queues, SYN floods, buffers, Nagle, processes and
/// threads, bind addresses and SO_REUSEPORT, each measured on this machine's kernel.
#[derive(Parser)]
#[command(
    name = "lab-exp",
    version,
    after_help = "Experiments: lab-exp list. Exit status: 0 when every observation agrees with its claim (or the experiment was skipped, with the reason), 1 when one contradicts it, 2 for a bad command line."
)]
struct Cli {
    /// `list`, `all`, or an experiment's name.
    what: String,
    /// The reports as JSON (one object; an array for `all`).
    #[arg(long)]
    json: bool,
}

static OWN_NAMESPACE: OnceLock<bool> = OnceLock::new();

/// Whether this process runs in the network namespace lab-exp made for it.
pub fn in_own_namespace() -> bool {
    OWN_NAMESPACE.get().copied().unwrap_or(false)
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child_main();
    }
    let cli = Cli::parse();
    match cli.what.as_str() {
        "list" => {
            for experiment in EXPERIMENTS {
                println!("{:<22} {}", experiment.name, experiment.summary);
            }
        }
        "all" => {
            let reports: Vec<Report> = EXPERIMENTS.iter().map(|e| run_in_child(e, !cli.json)).collect();
            if cli.json {
                let all: Vec<Value> = reports.iter().map(Report::to_json).collect();
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else {
                println!("Summary:");
                for report in &reports {
                    println!("  {:<22} {}", report.name, report.verdict());
                }
            }
            process::exit(i32::from(reports.iter().any(|r| r.verdict() == "contradicts")));
        }
        name => {
            let Some(experiment) = EXPERIMENTS.iter().find(|e| e.name == name) else {
                eprintln!("lab-exp: no experiment {name:?}; `lab-exp list` names them");
                process::exit(2);
            };
            let report = run_in_child(experiment, !cli.json);
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report.to_json()).unwrap_or_default());
            }
            process::exit(i32::from(report.verdict() == "contradicts"));
        }
    }
}

/// Runs `experiment` in a child process (in a namespace of its own where possible), reads its
/// report, and adds the parent's own check: the host's sysctls and namespaces are as they were.
fn run_in_child(experiment: &Experiment, print_text: bool) -> Report {
    let before = kernel::host_state();
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let output = Command::new(exe)
        .env(CHILD_ENV, experiment.name)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("start lab-exp {}: {e}", experiment.name));
    let mut report = serde_json::from_slice::<Value>(&output.stdout)
        .ok()
        .and_then(|value| Report::from_json(&value))
        .unwrap_or_else(|| {
            let mut report = experiment.report();
            report.check(
                "the experiment runs to its end",
                false,
                format!("it failed ({}); see its messages above", output.status),
            );
            report
        });
    if report.skipped.is_none() {
        let namespace =
            report.figures.get("namespace").and_then(Value::as_str).unwrap_or_default().to_string();
        // The namespace goes when its last process has exited; a killed server's worker processes
        // may take a moment longer than the child itself.
        let gone = |state: &[(String, String)]| {
            namespace.is_empty() || !state.last().is_some_and(|(_, list)| list.contains(&namespace))
        };
        let mut after = kernel::host_state();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !gone(&after) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            after = kernel::host_state();
        }
        let sysctls_same = before[..before.len() - 1] == after[..after.len() - 1];
        let namespace_gone = gone(&after);
        report.check(
            "the host's sysctls are as they were, and the experiment's namespace is gone",
            sysctls_same && namespace_gone,
            if sysctls_same {
                format!(
                    "{} unchanged; {}",
                    kernel::WATCHED_SYSCTLS.join(", "),
                    if namespace.is_empty() {
                        "ran without a namespace".into()
                    } else {
                        format!("{namespace} removed")
                    }
                )
            } else {
                format!("before {before:?}, after {after:?}")
            },
        );
    }
    if print_text {
        print!("{}", report.to_text());
        println!();
        let _ = std::io::stdout().flush();
    }
    report
}

/// The child: enters a namespace of its own, runs one experiment, prints its report as JSON.
fn child_main() -> ! {
    let name = std::env::var(CHILD_ENV).unwrap_or_default();
    let Some(experiment) = EXPERIMENTS.iter().find(|e| e.name == name) else { process::exit(2) };
    let mut report = experiment.report();
    match sys::netns::enter_new() {
        Ok(()) => {
            let _ = OWN_NAMESPACE.set(true);
            report.ran_in = "in a network namespace of its own".into();
            let namespace = std::fs::read_link("/proc/self/ns/net").map(|l| l.to_string_lossy().into_owned());
            report.figure("namespace", namespace.unwrap_or_default());
        }
        Err(e) if experiment.needs_namespace => {
            report.skip(format!("needs a network namespace of its own (it changes sysctls or drops packets), and {e}: run as root"));
        }
        Err(e) => report.ran_in = format!("on the host's loopback (no namespace: {e})"),
    }
    if report.skipped.is_none() && !kernel::have("ss") {
        report.skip("needs ss (iproute2) to read the kernel's queues: scripts/install-tools.sh ss");
    }
    if report.skipped.is_none() {
        (experiment.run)(&mut report);
    }
    println!("{}", report.to_json());
    process::exit(0);
}
