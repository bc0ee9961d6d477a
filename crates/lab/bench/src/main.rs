//! lab-bench: the architectures side by side, with nginx as the reference, on chosen CPUs;
//! beside them, where named, the real systems (Node, Apache, HAProxy) and a user's `--server`
//! (`real`: each started as a process tree pinned and held in a cgroup of its own).
//!
//! Every server is started the way the test suites start it (labkit: wait for `listening on`),
//! pinned to the server CPUs; lab-load runs as a pinned child process on the client CPUs with
//! `--json`. A child rather than a library call: the kernel then accounts the client's CPU apart
//! from the bench's own, so a run limited by its client is flagged rather than mistaken for the
//! server's ceiling, and the command line a round ran is one a reader can paste.
//!
//! The workloads: keep-alive, pipelined (16 in flight) and churn (a connection per request) in a
//! closed loop, K rounds each; an open-loop latency sweep at 10..95% of each server's own measured
//! capacity for a uniform and a bimodal mix; and fairness, a few long-lived connections, half of
//! them heavy, read back per worker from /stats (lab-memcached under each `--dispatch` policy); and
//! arrival-order, the staggered heavy/light connections that `--dispatch p2c|least` exist for. Each
//! sweep gets its ideal queue beside it (`model_curves`). Results go to results.json (the schema is in
//! docs/results/README.md), summary.md and SVG charts; `--compare A B` sets two runs side by side.
//!
//! The modules import one way (tests/layers.rs checks it): `plan` (what runs) → `measure` (one
//! server under one load) → `workloads` and `arrival` (the runs, recorded into results.json) →
//! `report`, `charts` and `compare`, which only read. At the bottom, `results` knows the schema and
//! holds the readers they all share; `model_curves` adds each sweep's ideal queue to a record.

#![forbid(unsafe_code)]

mod arrival;
mod charts;
mod cleanup;
mod compare;
mod machine;
mod measure;
mod model_curves;
mod plan;
mod profile;
mod real;
mod report;
mod results;
mod stats;
mod veth;
mod workloads;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::exit;

use clap::Parser;

/// lab-bench: the architectures side by side, with nginx as the reference.
#[derive(Debug, Parser)]
#[command(name = "lab-bench", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// CPUs the servers run on [default: the first half of the CPUs this process may use].
    #[arg(long, value_name = "LIST")]
    server_cpus: Option<String>,
    /// CPUs lab-load runs on, one load thread each [default: the second half].
    #[arg(long, value_name = "LIST")]
    client_cpus: Option<String>,
    /// Server CPUs for the latency sweep and the fairness workload [default: --server-cpus].
    #[arg(long, value_name = "LIST")]
    sweep_server_cpus: Option<String>,
    /// Client CPUs for the latency sweep and the fairness workload [default: --client-cpus].
    #[arg(long, value_name = "LIST")]
    sweep_client_cpus: Option<String>,
    /// Server CPUs for churn [default: chosen from the machine: a quarter of the CPUs (at least
    /// one), with 4 or more and no --server-cpus/--client-cpus; else --server-cpus].
    #[arg(long, value_name = "LIST", requires = "churn_client_cpus")]
    churn_server_cpus: Option<String>,
    /// Client CPUs for churn [default: the rest of the CPUs when lab-bench chooses, else --client-cpus].
    #[arg(long, value_name = "LIST", requires = "churn_server_cpus")]
    churn_client_cpus: Option<String>,
    /// Servers to run, by architecture (epoll, memcached, ramcloud, nginx, reuseport, oneshot, uring, real-nginx)
    /// or by row name (nginx-exclusive, real-nginx-1w, ...) [default: all]. The real systems beside
    /// nginx run only when named: real-node (real-node-1, -rr, -none), real-apache, real-haproxy, or
    /// real (all of them and nginx).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    archs: Vec<String>,
    /// A server of your own as a row beside the others (repeatable): COMMAND is run by `sh -c` with
    /// {addr}, {port}, {workers} and {cpus} substituted, pinned to the server CPUs with every process
    /// it starts (a cgroup of its own where the machine allows), stopped with all of them afterwards.
    /// It must serve GET / and stay in the foreground. Valid when lab-load saw no errors and every
    /// answer was a 2xx. It runs whatever --archs says (--archs NAME: it alone).
    #[arg(long = "server", value_name = "NAME=COMMAND", value_parser = real::parse_server)]
    servers: Vec<(String, String)>,
    /// Workloads: keep-alive, pipelined, churn, sweep-uniform, sweep-bimodal, fairness,
    /// arrival-order, or the groups throughput and sweep [default: all of these]; over TLS, only
    /// where named: tls-keep-alive, tls-churn (every handshake full), tls-resume (resumed by
    /// ticket), or the group tls (`make bench-tls`).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    workloads: Vec<String>,
    /// For the TLS workloads: where make cert's ca.pem, server.pem and server.key are, made there
    /// (as make cert does) where any is missing.
    #[arg(long, value_name = "DIR", default_value = "target/cert")]
    cert_dir: PathBuf,
    /// Rounds of each throughput workload; the tables give the median and the spread.
    #[arg(long, value_name = "K", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Measured seconds of each run (each sweep point, each round).
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    duration: f64,
    /// Unmeasured load before each run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 0.5)]
    warmup: f64,
    /// Connections per client CPU in the closed-loop and sweep workloads.
    #[arg(long, value_name = "N", default_value_t = 64)]
    conns_per_cpu: usize,
    /// Where the results go [default: results/HOSTNAME-UTCSTAMP/].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Add to the results already in --out (replacing the same server and workload) instead of
    /// starting afresh: for a matrix run in parts.
    #[arg(long, requires = "out")]
    append: bool,
    /// One round of 1 s each: a first look in about a third of the time.
    #[arg(long)]
    quick: bool,
    /// Where the time goes: each throughput round also runs with perf attached (after the round
    /// without, or before it, in turn): a flame graph (perf record, DWARF stacks), the server's CPU
    /// per request as user/kernel/softirq, system calls and context switches per request (perf
    /// stat), and the throughput with perf over that without. The run's figures stay those without.
    /// Without a usable perf: one line, and the run goes on.
    #[arg(long)]
    profile: bool,
    /// Where the clients reach the servers: `loopback` (one kernel; the client's CPU does the
    /// receive work), or `veth` (the servers in a network namespace of their own and lab-load in
    /// another, joined by a veth pair; made and removed by lab-bench, the host checked unchanged
    /// afterwards; root).
    #[arg(long, value_enum, default_value = "loopback")]
    net: Net,
    /// With --net veth: RPS over the server CPUs on the server end's receive queue (the software
    /// twin of a NIC's RSS), so receive processing, and SO_INCOMING_CPU, is on the server's CPUs.
    #[arg(long)]
    rps: bool,
    /// Run a client's lab-load through PREFIX (`ssh load1`, `ip netns exec NS`; split on spaces);
    /// repeatable: each load is split between the clients and their results merged exactly (counts
    /// added, histograms merged). lab-load must be at the same path on each client's host.
    #[arg(long = "client-exec", value_name = "PREFIX")]
    client_exec: Vec<String>,
    /// The address the servers listen on and the clients connect to [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    server_addr: Option<IpAddr>,
    /// Leave nginx out even where it is installed.
    #[arg(long)]
    no_nginx: bool,
    /// Print two runs side by side with ratios (B / A): results directories or results.json files.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<PathBuf>>,
    /// Write summary.md and the charts again from DIR/results.json, running nothing.
    #[arg(long, value_name = "DIR", conflicts_with = "compare")]
    render: Option<PathBuf>,
}

/// Where the clients reach the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Net {
    Loopback,
    Veth,
}

const AFTER_HELP: &str = "\
Examples:
  lab-bench                                   the whole matrix, half the CPUs each side
  lab-bench --server-cpus 0 --client-cpus 1 --archs epoll,real-nginx --workloads throughput
  lab-bench --server-cpus 0 --client-cpus 1 --archs epoll,reuseport,real --workloads throughput
  lab-bench --archs epoll --workloads throughput --server 'mine=./my-server --listen {addr} --threads {workers}'
  lab-bench --net veth --rps --archs reuseport --workloads fairness
  lab-bench --server-addr 10.0.0.1 --client-exec 'ssh load1' --client-exec 'ssh load2'
  lab-bench --compare results/old results/new

Each run's errors and lost requests are checked: a cell with any is marked INVALID and never
averaged in. A run whose client was busy >= 90% while the server had CPU to spare is marked
client-bound (the figure is the client's ceiling, not the server's).";

fn main() {
    let cli = Cli::parse();
    if let Some(pair) = &cli.compare {
        match compare::compare(&pair[0], &pair[1]) {
            Ok(text) => print!("{text}"),
            Err(reason) => {
                eprintln!("lab-bench: {reason}");
                exit(1);
            }
        }
        return;
    }
    if let Some(dir) = &cli.render {
        if let Err(reason) = render_again(dir) {
            eprintln!("lab-bench: {reason}");
            exit(1);
        }
        return;
    }
    // Before anything is started: SIGINT, SIGTERM and SIGHUP stop the servers and clients and
    // delete the namespaces (cleanup), and lab-bench exits with 128 + the signal's number.
    if let Err(reason) = cleanup::watch_signals() {
        eprintln!("lab-bench: {reason}");
        exit(1);
    }
    let bench = workloads::Bench::new(cli).unwrap_or_else(|reason| {
        eprintln!("lab-bench: {reason}");
        exit(2)
    });
    let ran = bench.run();
    // A signal's thread is cleaning up and will end the process with the signal's status.
    cleanup::hold_if_stopping();
    match ran.and_then(|(out, doc)| report::render(&doc, &out).map(|()| out)) {
        Ok(out) => eprintln!("lab-bench: results in {}", out.display()),
        Err(reason) => {
            eprintln!("lab-bench: {reason}");
            exit(1);
        }
    }
}

/// `--render DIR`: summary.md and the charts again from DIR/results.json. Results recorded before
/// the model get it first, in results.json too.
fn render_again(dir: &Path) -> Result<(), String> {
    let mut doc = results::load(dir)?;
    let recorded = doc.clone();
    model_curves::annotate(&mut doc);
    if doc != recorded {
        results::save(&doc, dir)?;
    }
    report::render(&doc, dir)
}
