//! Running one measurement: a server started the one way the tests start it, lab-load as a pinned
//! child process with `--json -` (its results on stdout), the server's CPU time and /stats around it.
//!
//! Where the servers listen and where the clients run is the bench's [`Network`], set once from the
//! command line: on loopback (the default), on the server namespace's end of a veth pair
//! (`--net veth`), or on `--server-addr`, with each client's lab-load run through its
//! `--client-exec` prefix (`ssh load1`, `ip netns exec NS`). With several clients a load is split
//! between them (connections and rate shared out) and their results merged exactly: counts added,
//! HDR histograms merged (histwire), never percentiles averaged. For the project's servers every run
//! is also checked against the server's own count: the requests /stats says it served over the run
//! must be the responses the clients read, warm-up included.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::plan::{cpu_list, Launch, Target};

/// Where the servers listen and where their clients run, for the whole bench.
#[derive(Debug, Clone)]
pub struct Network {
    /// The address every server binds (port 0: the kernel picks) and the clients connect to.
    pub server_ip: IpAddr,
    /// One entry per client: the words its lab-load command line is run through (empty: directly).
    pub clients: Vec<Vec<String>>,
}

static NETWORK: OnceLock<Network> = OnceLock::new();

/// Sets the bench's network, once, before any server starts.
pub fn set_network(network: Network) {
    let _ = NETWORK.set(network);
}

/// The bench's network: loopback and one local client unless [`set_network`] said otherwise.
pub fn network() -> &'static Network {
    NETWORK.get_or_init(|| Network { server_ip: Ipv4Addr::LOCALHOST.into(), clients: vec![Vec::new()] })
}

/// A server under test, running; stopped when dropped.
pub enum Server {
    /// One of the project's, and the CA to trust where it serves HTTPS (its /stats too).
    Lab(labkit::Running, Option<PathBuf>),
    Nginx(labkit::nginx::Running),
    Real(crate::real::Running),
}

impl Server {
    pub fn start(target: &Target, scratch: &Path) -> Result<Server, String> {
        match &target.launch {
            Launch::Lab { bin, args } => {
                // The plan says 127.0.0.1:0; the bench's network may put the servers elsewhere.
                let ip = network().server_ip;
                let mut args = args.clone();
                if let Some(i) = args.iter().position(|a| a == "--addr") {
                    if let Some(addr) = args.get_mut(i + 1) {
                        *addr = SocketAddr::new(ip, 0).to_string();
                    }
                }
                crate::cleanup::gated(|| labkit::launch(bin, &args))
                    .map(|running| Server::Lab(running, target.tls_ca.clone()))
            }
            Launch::Nginx(config) => {
                let binary = labkit::nginx::find().ok_or("nginx is not installed")?;
                crate::cleanup::gated(|| labkit::nginx::start(&binary, config, scratch, network().server_ip))
                    .map(Server::Nginx)
            }
            Launch::Real(spec) => crate::cleanup::gated(|| {
                let ip = network().server_ip;
                crate::real::start(&target.id, spec, target.workers, &target.cpus, scratch, ip)
            })
            .map(Server::Real),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Server::Lab(running, _) => running.addr(),
            Server::Nginx(running) => running.addr,
            Server::Real(running) => running.addr,
        }
    }

    /// The process the server was started as (its workers, if any, are below it).
    pub fn pid(&self) -> u32 {
        match self {
            Server::Lab(running, _) => running.pid(),
            Server::Nginx(running) => running.pid(),
            Server::Real(running) => running.pid(),
        }
    }

    /// CPU time so far of the server and every process it started.
    pub fn cpu_time(&self) -> Duration {
        labkit::cpu_time(self.pid())
    }

    /// Whether it serves /stats (the project's servers; nginx, the real systems and a user's do not).
    pub fn has_stats(&self) -> bool {
        matches!(self, Server::Lab(..))
    }

    /// The server's /stats, on a connection of its own (the project's servers only); over TLS where
    /// it serves HTTPS, a full handshake each time (a fresh client: no ticket to resume with), so
    /// the read after a run adds exactly one full handshake to the server's `tls` counters.
    pub fn stats(&self) -> Result<Value, String> {
        let addr = self.addr();
        let mut client = match self {
            Server::Lab(_, Some(ca)) => {
                let config = labkit::tls::client_config(ca)?;
                labkit::Client::connect_tls(addr, &config)
            }
            _ => labkit::Client::try_connect(addr),
        }
        .map_err(|e| format!("connect {addr}: {e}"))?;
        client.set_read_timeout(Duration::from_secs(5));
        let response = client.try_stats().map_err(|e| format!("GET /stats on {addr}: {e}"))?;
        Ok(response)
    }
}

/// What a bench asks of lab-load.
#[derive(Debug, Clone)]
pub struct Load {
    pub path: String,
    pub connections: usize,
    pub client_cpus: Vec<usize>,
    pub duration: f64,
    pub warmup: f64,
    pub flags: Vec<String>,
    /// Over TLS: the CA lab-load trusts (`--cacert`), and an https:// URL.
    pub ca: Option<PathBuf>,
}

/// lab-load's results and the costs around them.
#[derive(Debug, Clone)]
pub struct Measured {
    /// lab-load's whole `--json` document.
    pub load: Value,
    /// The server's CPU use over the run, as a share of its CPUs (1.0: every one busy throughout).
    pub server_cpu: f64,
    /// The requests the server's /stats counted over the run, where it has /stats.
    pub server_requests: Option<u64>,
    /// The server's /stats read just before the loads started and just after they ended (where it
    /// has /stats): the only /stats connections over the run, so a workload that reads the
    /// per-worker counters takes them from here rather than opening more connections of its own.
    pub stats: Option<(Value, Value)>,
    /// The server's CPU time over the run (all its processes, from /proc), in seconds: warm-up
    /// included, as are the requests and handshakes it is divided by.
    pub server_cpu_s: f64,
    /// The same by thread (`labkit::tasks` before and after), in groups: `main` (the first
    /// process's first thread: lab-memcached's acceptor, lab-ramcloud's dispatcher, lab-epoll's
    /// loop), `threads` (that process's others: the workers, lab-uring's rings) and `processes`
    /// (every thread of the processes below it: lab-reuseport's and nginx's workers).
    pub thread_cpu_s: Map<String, Value>,
}

/// The thread groups of [`Measured::thread_cpu_s`].
pub const THREAD_GROUPS: [&str; 3] = ["main", "threads", "processes"];

/// CPU clock ticks so far of each thread group of `pid`'s tree.
fn thread_ticks(pid: u32) -> [u64; 3] {
    let mut ticks = [0; 3];
    for task in labkit::tasks(pid) {
        let group = match (task.pid == pid, task.tid == pid) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) => 2,
        };
        ticks[group] += task.cpu_ticks;
    }
    ticks
}

impl Measured {
    pub fn rps(&self) -> f64 {
        self.load["rps"].as_f64().unwrap_or(0.0)
    }

    pub fn errors(&self) -> u64 {
        self.load["errors"].as_object().map_or(0, |errors| errors.values().filter_map(Value::as_u64).sum())
    }

    pub fn lost(&self) -> u64 {
        self.load["lost"].as_u64().unwrap_or(0)
    }

    /// Every response the clients read, warm-up included.
    pub fn responses_total(&self) -> u64 {
        self.load["responses_total"].as_u64().unwrap_or(0)
    }

    /// The server served a different number of requests than the clients read: a run that cannot
    /// be trusted (a client that lost count, or another client loading the same server).
    pub fn count_mismatch(&self) -> Option<String> {
        let served = self.server_requests?;
        let read = self.load["responses_total_all_loads"].as_u64().unwrap_or(self.responses_total());
        (served != read).then(|| {
            format!("the server's /stats counted {served} requests, the clients read {read} responses")
        })
    }

    /// The busiest client's CPU use (one client saturated is enough to bound the run).
    pub fn client_cpu(&self) -> f64 {
        self.load["client_cpu"]["utilization"].as_f64().unwrap_or(0.0)
    }

    /// The server's TLS handshakes over the run, `[full, resumed]`: from its /stats where it has
    /// them (less the one full handshake of the /stats read after the run), else the ones lab-load
    /// made (warm-up included, as the CPU time); `None` for a plaintext run.
    pub fn handshakes(&self) -> Option<[u64; 2]> {
        let from_load = |kind: &str| self.load["tls"][kind].as_u64();
        let load = [from_load("full")?, from_load("resumed")?];
        let counted = self.stats.as_ref().and_then(|(before, after)| {
            let count = |doc: &Value, kind: &str| doc["tls"]["handshakes"][kind].as_u64();
            let delta = |kind| Some(count(after, kind)?.saturating_sub(count(before, kind)?));
            Some([delta("full")?.saturating_sub(1), delta("resumed")?])
        });
        Some(counted.unwrap_or(load))
    }

    /// Where [`Measured::handshakes`] came from.
    pub fn handshakes_from(&self) -> &'static str {
        let counted = self.stats.as_ref().is_some_and(|(_, after)| after["tls"]["handshakes"].is_object());
        if counted {
            "server /stats"
        } else {
            "lab-load"
        }
    }

    /// The server's CPU per response the clients read, in µs (both over the whole run).
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let responses = self.load["responses_total_all_loads"].as_u64().unwrap_or(self.responses_total());
        (responses > 0).then(|| self.server_cpu_s * 1e6 / responses as f64)
    }

    /// The server's CPU per handshake (full and resumed together), in µs, over a TLS run.
    pub fn cpu_us_per_handshake(&self) -> Option<f64> {
        let [full, resumed] = self.handshakes()?;
        (full + resumed > 0).then(|| self.server_cpu_s * 1e6 / (full + resumed) as f64)
    }

    pub fn latency_us(&self, percentile: &str) -> f64 {
        self.load["latency_us"][percentile].as_f64().unwrap_or(f64::NAN)
    }

    /// A run limited by its client rather than its server: lab-load's threads never waited while
    /// the server still had CPU to spare.
    pub fn client_bound(&self) -> bool {
        self.client_cpu() >= 0.90 && self.server_cpu < 0.90
    }

    /// One round as results.json keeps it.
    pub fn round_json(&self) -> Value {
        json!({
            "rps": self.rps(),
            "p50_us": self.latency_us("p50"),
            "p99_us": self.latency_us("p99"),
            "p999_us": self.latency_us("p999"),
            // From the actual send: leaves out the client's own lateness (open loop only).
            "p99_uncorrected_us": self.load["uncorrected_latency_us"]["p99"].as_f64(),
            "errors": self.errors(),
            "lost": self.lost(),
            "late": self.load["late"].as_u64().unwrap_or(0),
            "client_cpu": self.client_cpu(),
            "server_cpu": self.server_cpu,
            "client_bound": self.client_bound(),
            // Neither side at 90% of its CPUs in a closed loop: the CPUs went to other processes on
            // the machine, and the figure is theirs rather than the server's or the client's.
            "neither_saturated": self.client_cpu() < 0.90 && self.server_cpu < 0.90,
            "server_cpu_s": self.server_cpu_s,
            "cpu_us_per_request": self.cpu_us_per_request(),
            "first_errors": self.load["first_errors"],
            "responses_total": self.responses_total(),
            "server_requests": self.server_requests,
            "clients": self.load["clients"],
        })
    }
}

/// lab-load's command line for `load` against `addr` through `prefix` (empty: run directly), its
/// JSON on stdout.
pub fn load_command(load: &Load, addr: SocketAddr, prefix: &[String]) -> Command {
    let lab_load = labkit::find_bin("lab-load").unwrap_or_else(|_| PathBuf::from("lab-load"));
    let mut command = match prefix.split_first() {
        None => Command::new(lab_load),
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(lab_load);
            command
        }
    };
    let scheme = if load.ca.is_some() { "https" } else { "http" };
    if let Some(ca) = &load.ca {
        command.arg("--cacert").arg(ca);
    }
    command
        .arg(format!("{scheme}://{addr}{}", load.path))
        .args(["-c", &load.connections.to_string()])
        .args(["-t", &load.client_cpus.len().to_string()])
        .args(["--cpus", &cpu_list(&load.client_cpus)])
        .args(["-d", &format!("{}", load.duration)])
        .args(["--warmup", &format!("{}", load.warmup)])
        .args(["--seed", "1"])
        .arg("--no-progress")
        .args(["--json", "-"])
        .args(&load.flags)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A lab-load running, its stdout and stderr read by threads of their own as they come (its JSON,
/// histograms and all, can be more than a pipe holds).
pub struct LoadChild {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Starts lab-load for `load` against `addr` through `prefix`.
pub fn spawn_load(load: &Load, addr: SocketAddr, prefix: &[String]) -> Result<LoadChild, String> {
    let mut command = load_command(load, addr, prefix);
    let mut child = crate::cleanup::gated(|| command.spawn()).map_err(|e| match prefix.first() {
        None => format!("spawn lab-load: {e} (build it: cargo build --release)"),
        Some(program) => format!("spawn {program} (--client-exec {:?}): {e}", prefix.join(" ")),
    })?;
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    Ok(LoadChild { child, stdout, stderr })
}

impl LoadChild {
    /// Waits for lab-load (killing it after `deadline`) and returns its JSON results.
    pub fn finish(mut self, deadline: Instant) -> Result<Value, String> {
        let status = loop {
            if let Some(status) = self.child.try_wait().map_err(|e| format!("waitpid lab-load: {e}"))? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("lab-load still running past its deadline; killed".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = self.stdout.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&self.stderr.join().unwrap_or_default()).into_owned();
        if !status.success() {
            let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").to_string();
            return Err(format!("lab-load exited with {status}: {}", last.trim()));
        }
        serde_json::from_slice::<Value>(&stdout).map_err(|e| format!("lab-load's JSON: {e}"))
    }
}

/// `load` shared out between `clients` lab-loads: the connections as evenly as they go (every
/// client at least one, so fewer clients than asked where there are fewer connections), the rate
/// (`--rate`) evenly, and each client's threads no more than its connections.
pub fn split(load: &Load, clients: usize) -> Vec<Load> {
    let n = clients.clamp(1, load.connections.max(1));
    (0..n)
        .map(|i| {
            let mut share = load.clone();
            share.connections = load.connections / n + usize::from(i < load.connections % n);
            share.client_cpus.truncate(share.connections.max(1));
            if let Some(at) = share.flags.iter().position(|f| f == "--rate") {
                if let Some(rate) = share.flags.get(at + 1).and_then(|r| r.parse::<f64>().ok()) {
                    share.flags[at + 1] = format!("{}", rate / n as f64);
                }
            }
            share
        })
        .collect()
}

/// Percentiles, max and mean of a histogram of nanoseconds, in microseconds, as lab-load writes them.
fn latency_json(histogram: &hdrhistogram::Histogram<u64>) -> Value {
    let micros = |nanos: f64| (nanos / 100.0).round() / 10.0;
    let mut map = Map::new();
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999), ("p9999", 0.9999)] {
        map.insert(name.into(), json!(micros(histogram.value_at_quantile(q) as f64)));
    }
    map.insert("max".into(), json!(micros(histogram.max() as f64)));
    map.insert("mean".into(), json!(micros(histogram.mean())));
    Value::Object(map)
}

/// Several clients' lab-load documents (of one load, run at once) as one: counts and rates added,
/// latency percentiles from the merged histograms, the first error of each class, the busiest
/// client's CPU; and each client's own figures under `clients`. One document is returned as it is.
pub fn merge(documents: Vec<Value>) -> Result<Value, String> {
    if documents.len() == 1 {
        return Ok(documents.into_iter().next().expect("one document"));
    }
    let sum = |name: &str| documents.iter().filter_map(|d| d[name].as_u64()).sum::<u64>();
    let sum_f = |name: &str| documents.iter().filter_map(|d| d[name].as_f64()).sum::<f64>();
    let mut merged = documents[0].clone();
    for name in
        ["requests", "responses_total", "sent", "lost", "late", "bytes_read", "bytes_written", "connections"]
    {
        merged[name] = json!(sum(name));
    }
    merged["rps"] = json!(sum_f("rps"));
    merged["read_bytes_per_s"] = json!(sum_f("read_bytes_per_s"));
    merged["threads"] = json!(sum("threads"));
    merged["duration_s"] =
        json!(documents.iter().filter_map(|d| d["duration_s"].as_f64()).fold(0.0, f64::max));
    let mut errors = Map::new();
    let mut first_errors = Map::new();
    let mut statuses = Map::new();
    for doc in &documents {
        for (class, count) in doc["errors"].as_object().into_iter().flatten() {
            let total = errors.get(class).and_then(Value::as_u64).unwrap_or(0) + count.as_u64().unwrap_or(0);
            errors.insert(class.clone(), json!(total));
        }
        for (class, first) in doc["first_errors"].as_object().into_iter().flatten() {
            first_errors.entry(class.clone()).or_insert_with(|| first.clone());
        }
        for (code, count) in doc["statuses"].as_object().into_iter().flatten() {
            let total = statuses.get(code).and_then(Value::as_u64).unwrap_or(0) + count.as_u64().unwrap_or(0);
            statuses.insert(code.clone(), json!(total));
        }
    }
    if merged["tls"].is_object() {
        let handshakes = |kind: &str| documents.iter().filter_map(|d| d["tls"][kind].as_u64()).sum::<u64>();
        merged["tls"] = json!({"full": handshakes("full"), "resumed": handshakes("resumed")});
    }
    merged["errors"] = Value::Object(errors);
    merged["first_errors"] = Value::Object(first_errors);
    merged["statuses"] = Value::Object(statuses);
    for (histogram, summary) in
        [("latency_histogram", "latency_us"), ("uncorrected_latency_histogram", "uncorrected_latency_us")]
    {
        let union = histwire::merge(documents.iter().map(|d| &d[histogram]))?;
        merged[summary] = latency_json(&union);
        merged[histogram] = histwire::encode(&union);
    }
    let busiest =
        documents.iter().filter_map(|d| d["client_cpu"]["utilization"].as_f64()).fold(0.0, f64::max);
    merged["client_cpu"] = json!({
        "cpu_s": documents.iter().filter_map(|d| d["client_cpu"]["cpu_s"].as_f64()).sum::<f64>(),
        "utilization": busiest,
    });
    // Per path, only the counts add up (the percentiles would need each path's histogram).
    if let Some(paths) = merged["paths"].as_array_mut() {
        for (i, path) in paths.iter_mut().enumerate() {
            let requests: u64 = documents.iter().filter_map(|d| d["paths"][i]["requests"].as_u64()).sum();
            *path = json!({"path": path["path"], "weight": path["weight"], "requests": requests});
        }
    }
    merged.as_object_mut().expect("an object").remove("connect");
    merged["clients"] = documents
        .iter()
        .map(|d| {
            json!({
                "connections": d["connections"], "requests": d["requests"], "rps": d["rps"],
                "responses_total": d["responses_total"], "p99_us": d["latency_us"]["p99"],
                "client_cpu": d["client_cpu"]["utilization"],
            })
        })
        .collect();
    Ok(merged)
}

/// Runs several lab-loads at once against `server` (one for most workloads, two for fairness),
/// each split between the bench's clients, and returns each one's results (the clients' merged),
/// with the server's CPU use over the whole span and, for a server with /stats, the requests it
/// counted (the sum over all the loads: with two loads each gets the total, as it can only be
/// compared with the sum of theirs).
pub fn run_loads(
    server: &Server,
    server_cpus: usize,
    loads: &[Load],
    _scratch: &Path,
) -> Result<Vec<Measured>, String> {
    let clients = &network().clients;
    let stats_before = if server.has_stats() { Some(server.stats()?) } else { None };
    let cpu_before = server.cpu_time();
    let threads_before = thread_ticks(server.pid());
    let started = Instant::now();
    let mut running: Vec<Vec<(LoadChild, Instant)>> = Vec::new();
    for load in loads {
        let mut shares = Vec::new();
        for (share, prefix) in split(load, clients.len()).iter().zip(clients) {
            let deadline = started + Duration::from_secs_f64(load.duration + load.warmup + 15.0);
            shares.push((spawn_load(share, server.addr(), prefix)?, deadline));
        }
        running.push(shares);
    }
    let mut documents = Vec::new();
    for shares in running {
        let mut parts = Vec::new();
        for (child, deadline) in shares {
            parts.push(child.finish(deadline)?);
        }
        documents.push(merge(parts)?);
    }
    let wall = started.elapsed().as_secs_f64();
    let server_cpu_s = server.cpu_time().saturating_sub(cpu_before).as_secs_f64();
    let server_cpu = server_cpu_s / (wall * server_cpus.max(1) as f64);
    let threads_after = thread_ticks(server.pid());
    // /proc counts in USER_HZ, 100 a second (as labkit::cpu_time).
    let thread_cpu_s: Map<String, Value> = THREAD_GROUPS
        .iter()
        .zip(threads_before.iter().zip(&threads_after))
        .map(|(group, (before, after))| {
            (group.to_string(), json!(after.saturating_sub(*before) as f64 / 100.0))
        })
        .collect();
    let stats = match stats_before {
        None => None,
        Some(before) => Some((before, server.stats()?)),
    };
    let server_requests = stats.as_ref().map(|(before, after)| {
        let total = |doc: &Value| doc["totals"]["requests"].as_u64().unwrap_or(0);
        // The /stats read after the run counts itself; the one before was counted before it.
        total(after).saturating_sub(total(before)).saturating_sub(1)
    });
    let all_responses: u64 = documents.iter().filter_map(|d| d["responses_total"].as_u64()).sum();
    Ok(documents
        .into_iter()
        .map(|mut load| {
            // With several loads at once, each is checked against the server's total by the sum of all.
            if loads.len() > 1 {
                load["responses_total_all_loads"] = json!(all_responses);
            }
            Measured {
                load,
                server_cpu,
                server_requests,
                stats: stats.clone(),
                server_cpu_s,
                thread_cpu_s: thread_cpu_s.clone(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;

    /// A lab-load document with `latencies` (ns, count) in its histograms.
    fn document(latencies: &[(u64, u64)], errors: u64, cpu: f64) -> (Value, Histogram<u64>) {
        let mut histogram = Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap();
        for &(ns, count) in latencies {
            histogram.record_n(ns, count).unwrap();
        }
        let requests = histogram.len();
        let doc = json!({
            "requests": requests, "responses_total": requests + 10, "rps": requests as f64 / 2.0,
            "sent": requests, "lost": 0, "late": 0, "connections": 4, "threads": 1, "duration_s": 2.0,
            "errors": {"connect": errors, "reset": 0}, "first_errors": {}, "statuses": {"200": requests},
            "latency_us": latency_json(&histogram), "uncorrected_latency_us": latency_json(&histogram),
            "latency_histogram": histwire::encode(&histogram),
            "uncorrected_latency_histogram": histwire::encode(&histogram),
            "client_cpu": {"cpu_s": 1.0, "utilization": cpu},
            "paths": [{"path": "/", "weight": 100.0, "requests": requests}],
        });
        (doc, histogram)
    }

    #[test]
    fn several_clients_merge_into_the_union_of_their_histograms() {
        let (fast, mut all) = document(&[(50_000, 9_900)], 0, 0.4);
        let (slow, slow_histogram) = document(&[(80_000, 50), (20_000_000, 50)], 2, 0.95);
        all.add(&slow_histogram).unwrap();
        let merged = merge(vec![fast.clone(), slow.clone()]).unwrap();
        assert_eq!(merged["requests"], 10_000);
        assert_eq!(merged["responses_total"], 10_020);
        assert_eq!(merged["rps"], 5_000.0);
        assert_eq!(merged["errors"]["connect"], 2);
        assert_eq!(merged["statuses"]["200"], 10_000);
        assert_eq!(merged["paths"][0]["requests"], 10_000);
        assert_eq!(merged["client_cpu"]["utilization"], 0.95, "the busiest client");
        assert_eq!(merged["latency_us"], latency_json(&all), "the union's percentiles");
        // The union's p99.9 is the slow client's tail (20 ms, 0.5% of all); the mean of the two
        // clients' p99.9s (50 µs and 20 ms) is 10 ms, a latency no request had.
        let p999 = merged["latency_us"]["p999"].as_f64().unwrap();
        let averaged = (fast["latency_us"]["p999"].as_f64().unwrap()
            + slow["latency_us"]["p999"].as_f64().unwrap())
            / 2.0;
        assert!((p999 - 20_000.0).abs() < 20.0, "p99.9 {p999} µs");
        assert!((averaged - p999).abs() > 5_000.0, "an average would be {averaged} µs");
        assert_eq!(merged["clients"].as_array().unwrap().len(), 2);
        // One client's document is kept as it is.
        assert_eq!(merge(vec![fast.clone()]).unwrap(), fast);
    }

    #[test]
    fn a_load_is_split_between_clients() {
        let load = Load {
            path: "/".into(),
            connections: 5,
            client_cpus: vec![2, 3],
            duration: 1.0,
            warmup: 0.1,
            flags: vec!["--rate".into(), "900".into()],
            ca: None,
        };
        let shares = split(&load, 2);
        assert_eq!(shares.iter().map(|s| s.connections).collect::<Vec<_>>(), [3, 2]);
        assert!(shares.iter().all(|s| s.flags == ["--rate", "450"]));
        let mut one = load.clone();
        one.connections = 1;
        let shares = split(&one, 3);
        assert_eq!(shares.len(), 1, "no client without a connection");
        assert_eq!(shares[0].client_cpus, [2], "no more threads than connections");
    }
}
