#![forbid(unsafe_code)]
//! lab-soak: each server in turn, for `--secs`, under lab-load's well-behaved clients (keep-alive,
//! pipelined, a new connection per request) while hostile ones come and go beside them (resets
//! mid-request, clients that never read, bad requests, heads and bodies trickled a byte at a time).
//! It checks
//! what a server that runs for weeks needs: no response lost to a well-behaved client, memory flat
//! (after a warm-up of the first third, RSS of the last quarter within 10% of the first), and every file descriptor back once the
//! clients have gone. One line per server; exit 1 if any fails.
//!
//! `--idle N` instead measures lab-load's p99 at full rate with N idle connections held open beside
//! it, against the same runs without them (medians of three each; the server pinned to the first half
//! of the CPUs, lab-load to the rest), and what N idle connections and N slow bodies cost in RSS.
//!
//! `--slow-bodies N` instead attacks each server with N slow bodies (`slow::benchmark`).

mod slow;

use std::fs;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{self, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use labkit::{
    bin_path, get, launch, process_tree, raise_fd_limit, rss_kib, spawn, Client, Running, Server, SERVERS,
};
use nix::sys::socket::{setsockopt, sockopt::Linger};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "lab-soak", version)]
struct Cli {
    /// Seconds of load per server.
    #[arg(long, default_value_t = 120)]
    secs: u64,
    /// Only these server rows (comma-separated names, e.g. epoll,nginx-mutex).
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Instead of the soak: p99 at full rate with this many idle connections open, and without.
    #[arg(long, value_name = "N")]
    idle: Option<usize>,
    /// Instead of the soak: N slow bodies against each server, its RSS, a 300 KB POST meanwhile, and
    /// when they are all closed.
    #[arg(long, value_name = "N", conflicts_with = "idle")]
    slow_bodies: Option<usize>,
    /// The servers' --body-timeout (the soak's slow-body client is cut off by it: shorter than
    /// --secs for the deadline to be exercised).
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    body_timeout: f64,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = raise_fd_limit(cli.idle.unwrap_or(0).max(cli.slow_bodies.unwrap_or(0)) + 1000) {
        eprintln!("lab-soak: {e}");
    }
    let rows: Vec<&Server> = SERVERS
        .iter()
        .filter(|s| cli.servers.is_empty() || cli.servers.iter().any(|n| n == s.name))
        .collect();
    if rows.is_empty() {
        eprintln!("lab-soak: no server row named {:?}", cli.servers);
        process::exit(2);
    }
    let mut failed = false;
    for server in rows {
        match labkit::runs_here(server) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(failure) => {
                eprintln!("lab-soak: FAIL {}: {failure}", server.name);
                failed = true;
                continue;
            }
        }
        let verdict = match (cli.idle, cli.slow_bodies) {
            (Some(idle), _) => idle_check(server, idle, cli.body_timeout),
            (None, Some(count)) => slow::benchmark(server, count, cli.body_timeout),
            (None, None) => soak(server, Duration::from_secs(cli.secs), cli.body_timeout),
        };
        match verdict {
            Ok(line) => println!("{:<16} ok    {line}", server.name),
            Err(line) => {
                println!("{:<16} FAIL  {line}", server.name);
                failed = true;
            }
        }
    }
    process::exit(i32::from(failed));
}

/// One lab-load run in the background, writing its JSON report to a file.
struct Load {
    name: &'static str,
    child: process::Child,
    json: PathBuf,
}

fn start_load(name: &'static str, addr: SocketAddr, secs: u64, args: &[&str]) -> Load {
    let json = std::env::temp_dir().join(format!("lab-soak-{}-{name}.json", process::id()));
    let child = Command::new(bin_path("lab-load"))
        .arg(format!("http://{addr}/"))
        .args(["-d", &secs.to_string(), "--warmup", "0", "--json"])
        .arg(&json)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start lab-load: {e}"));
    Load { name, child, json }
}

impl Load {
    fn finish(mut self) -> Result<Value, String> {
        let status = self.child.wait().map_err(|e| format!("wait for lab-load: {e}"))?;
        let text = fs::read_to_string(&self.json).map_err(|e| format!("{}: {e}", self.json.display()))?;
        let _ = fs::remove_file(&self.json);
        let report: Value = serde_json::from_str(&text).map_err(|e| format!("lab-load JSON: {e}"))?;
        if !status.success() {
            return Err(format!("lab-load {} exited {status}", self.name));
        }
        Ok(report)
    }
}

/// Open file descriptors of the server's processes.
fn open_fds(running: &Running) -> usize {
    process_tree(running.pid())
        .iter()
        .filter_map(|pid| fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .map(Iterator::count)
        .sum()
}

fn soak(server: &Server, duration: Duration, body_timeout: f64) -> Result<String, String> {
    let running = spawn(server, &["--header-timeout", "1", "--body-timeout", &body_timeout.to_string()]);
    let addr = running.addr();
    // Baseline after one connection has come and gone, so lazily made things already exist.
    drop(running.connect().get("/"));
    thread::sleep(Duration::from_millis(200));
    let baseline_fds = open_fds(&running);
    let secs = duration.as_secs().max(1);
    let loads = [
        start_load("keep-alive", addr, secs, &["-c", "8"]),
        start_load("pipelined", addr, secs, &["-c", "2", "--pipeline", "16"]),
        start_load("churn", addr, secs, &["-c", "2", "--close"]),
    ];
    let stop = AtomicBool::new(false);
    let hostile = AtomicU64::new(0);
    let mut rss = Vec::new();
    thread::scope(|scope| {
        for kind in 0..HOSTILE_KINDS {
            let (stop, hostile) = (&stop, &hostile);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    misbehave(addr, kind, stop);
                    hostile.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let started = Instant::now();
        while started.elapsed() < duration {
            thread::sleep(Duration::from_millis(250));
            rss.push(rss_kib(running.pid()));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let mut problems = Vec::new();
    let (mut answered, mut lost) = (0, 0);
    for load in loads {
        let name = load.name;
        match load.finish() {
            Ok(report) => {
                let count = |key: &str| report[key].as_u64().unwrap_or(0);
                answered += count("requests");
                lost += count("lost");
                let errors: u64 =
                    report["errors"].as_object().map_or(0, |e| e.values().filter_map(Value::as_u64).sum());
                if count("lost") > 0 || errors > 0 || count("requests") == 0 {
                    problems.push(format!(
                        "{name}: {} answered, {} lost, errors {}",
                        count("requests"),
                        count("lost"),
                        report["errors"]
                    ));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    // The first third is warm-up (the allocator's arenas, lab-uring's lent buffers and spare sends
    // filling, the first slow bodies held to their deadline; lab-uring at 60 s: +0.4%): a leak grows
    // through the rest, and shows there.
    let steady = &rss[rss.len() / 3..];
    let quarter = (steady.len() / 4).max(1);
    let mean = |samples: &[u64]| samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64;
    let (first, last) = (mean(&steady[..quarter]), mean(&steady[steady.len() - quarter..]));
    let growth = (last / first - 1.0) * 100.0;
    if growth >= 10.0 {
        problems.push(format!("RSS grew {growth:.1}%"));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut fds = open_fds(&running);
    while fds > baseline_fds && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        fds = open_fds(&running);
    }
    if fds > baseline_fds {
        problems.push(format!("{fds} fds open, {baseline_fds} at the start"));
    }
    let stats = Client::try_connect(addr).and_then(|mut client| client.try_stats()).unwrap_or_default();
    let timeouts = |key: &str| stats["totals"][key].as_u64().unwrap_or(0);
    if timeouts("body_timeouts") == 0 && secs as f64 >= body_timeout + 3.0 {
        problems.push(format!("no slow body cut off by --body-timeout {body_timeout}"));
    }
    let line = format!(
        "{secs} s: {answered} responses, {lost} lost; {} hostile clients; 408s: {} heads, {} bodies; RSS {:.1} -> {:.1} MiB ({growth:+.1}%); fds {baseline_fds} -> {fds}",
        hostile.load(Ordering::Relaxed),
        timeouts("header_timeouts"),
        timeouts("body_timeouts"),
        first / 1024.0,
        last / 1024.0
    );
    match problems.is_empty() {
        true => Ok(line),
        false => Err(format!("{line}; {}", problems.join("; "))),
    }
}

const HOSTILE_KINDS: usize = 6;

/// One hostile client of kind `kind`; it ignores every error, since the server may close on it.
fn misbehave(addr: SocketAddr, kind: usize, stop: &AtomicBool) {
    if kind == 5 {
        // A body declared 1 MiB long and trickled a byte every 100 ms: cut off by --body-timeout.
        return slow::trickle_until_answered(addr, stop);
    }
    let Ok(mut client) = Client::try_connect(addr) else {
        thread::sleep(Duration::from_millis(50));
        return;
    };
    let _ = client.stream().set_write_timeout(Some(Duration::from_millis(200)));
    client.set_read_timeout(Duration::from_secs(2));
    match kind {
        // A reset in the middle of a request: SO_LINGER 0 makes close send RST.
        0 => {
            let _ =
                client.try_send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\npartial");
            thread::sleep(Duration::from_millis(20));
            let _ =
                setsockopt(&client.stream().as_fd(), Linger, &nix::libc::linger { l_onoff: 1, l_linger: 0 });
        }
        // Never reads: pipelines until the server stops taking requests, then leaves.
        1 => {
            let batch = get("/").repeat(256);
            for _ in 0..64 {
                if client.try_send(&batch).is_err() {
                    break;
                }
            }
            thread::sleep(Duration::from_millis(500));
        }
        // Bad requests: each gets its 400 and the close.
        2 => {
            let _ = client.try_send(b"GET / HTTP/1.1\r\n\r\n");
            let _ = client.try_read_response(false);
        }
        // A head trickled a byte at a time: cut off by --header-timeout 1 with a 408.
        3 => {
            for byte in b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: " {
                if client.try_send(&[*byte]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(40));
            }
            let _ = client.try_read_response(false);
        }
        // A chunked body that stops halfway, then a reset.
        _ => {
            let _ = client.try_send(
                b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab",
            );
            thread::sleep(Duration::from_millis(50));
            let _ =
                setsockopt(&client.stream().as_fd(), Linger, &nix::libc::linger { l_onoff: 1, l_linger: 0 });
        }
    }
}

/// Runs of each kind in the idle check; their medians are compared.
const IDLE_ROUNDS: usize = 3;

/// Where the idle check runs the server and lab-load: the first half of the CPUs this process may
/// use for the server, one worker on each, the rest for lab-load. Otherwise how lab-load's
/// connections happen to fall among the workers decides whether two busy workers share a CPU (and
/// a 4 ms p99 of scheduler time slices) or the client does, and the ratio measures that luck rather
/// than the idle connections. With one CPU, everything shares it.
struct Placement {
    server: String,
    server_cpus: usize,
    client: String,
    client_threads: usize,
}

impl Placement {
    fn new() -> Placement {
        let (server, client) = labkit::server_and_client_cpus();
        let list = |cpus: &[usize]| cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        Placement {
            server: list(&server),
            server_cpus: server.len(),
            client: list(&client),
            client_threads: client.len(),
        }
    }
}

/// The median p99 (microseconds) and req/s of [`IDLE_ROUNDS`] closed-loop lab-load runs at full rate.
fn p99(addr: SocketAddr, placement: &Placement) -> Result<(u64, f64), String> {
    let threads = placement.client_threads.to_string();
    let args = ["-c", "32", "-t", &threads, "--cpus", &placement.client];
    let mut p99s = Vec::new();
    let mut rates = Vec::new();
    for _ in 0..IDLE_ROUNDS {
        let report = start_load("rate", addr, 3, &args).finish()?;
        p99s.push(report["latency_us"]["p99"].as_f64().ok_or("no p99 in lab-load's report")? as u64);
        rates.push(report["rps"].as_f64().unwrap_or(0.0));
    }
    p99s.sort_unstable();
    rates.sort_by(f64::total_cmp);
    Ok((p99s[IDLE_ROUNDS / 2], rates[IDLE_ROUNDS / 2]))
}

/// lab-load's p99 with `idle` idle connections open beside it, against the same runs without them;
/// and the RSS they cost against that of as many slow bodies (heads declaring 1 MiB, and 11 bytes).
fn idle_check(server: &Server, idle: usize, body_timeout: f64) -> Result<String, String> {
    let placement = Placement::new();
    // The row's own arguments, with one worker per server CPU.
    let mut args: Vec<String> = server.args.iter().map(|arg| arg.to_string()).collect();
    if let Some(at) = args.iter().position(|arg| arg == "--workers") {
        args[at + 1] = placement.server_cpus.to_string();
    }
    let max_conns = (idle + 1000).to_string();
    let body_timeout = body_timeout.to_string();
    args.extend(
        [
            "--addr",
            "127.0.0.1:0",
            "--max-conns",
            &max_conns,
            "--cpus",
            &placement.server,
            "--body-timeout",
            &body_timeout,
        ]
        .map(String::from),
    );
    let running = launch(server.bin, &args)?;
    let addr = running.addr();
    let (alone, alone_rps) = p99(addr, &placement)?;
    let rss_before = rss_kib(running.pid());
    let mut held = Vec::with_capacity(idle);
    for i in 0..idle {
        match Client::try_connect(addr) {
            Ok(client) => held.push(client),
            Err(e) => return Err(format!("idle connection {i}: {e}")),
        }
    }
    // Every one accepted and registered before measuring.
    let stats = running.connect().stats();
    let open = stats["totals"]["open"].as_u64().unwrap_or(0);
    // What an idle connection costs the server in memory: its slot (a read buffer comes with its
    // first bytes).
    let per_idle = rss_kib(running.pid()).saturating_sub(rss_before) as f64 * 1024.0 / open.max(1) as f64;
    let (crowded, crowded_rps) = p99(addr, &placement)?;
    // Then as many slow bodies in their place (both at once would take twice the descriptors): what
    // each costs, its slot included, once its bytes are read.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow::open_now(&running) > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let slow = slow::open(&running, idle, 0)?;
    let per_slow =
        rss_kib(running.pid()).saturating_sub(rss_before) as f64 * 1024.0 / slow.len().max(1) as f64;
    drop(slow);
    let line = format!(
        "p99 {alone} us at {alone_rps:.0} req/s alone, {crowded} us at {crowded_rps:.0} req/s beside {open} open idle connections ({:.2}x; medians of {IDLE_ROUNDS}; server on CPUs {}, lab-load on {}; RSS +{per_idle:.0} bytes per idle connection, +{per_slow:.0} per slow body)",
        crowded as f64 / alone.max(1) as f64,
        placement.server,
        placement.client,
    );
    if (open as usize) < idle {
        return Err(format!("{line}: only {open} of {idle} connections open"));
    }
    match crowded_rps > 0.0 && crowded <= alone * 2 {
        true => Ok(line),
        false => Err(line),
    }
}
