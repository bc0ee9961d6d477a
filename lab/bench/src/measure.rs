//! Running one measurement: a server started the one way the tests start it, lab-load as a pinned
//! child process with `--json`, the server's CPU time and /stats around it.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::plan::{cpu_list, Launch, Target};

/// A server under test, running; stopped when dropped.
pub enum Server {
    Lab(labkit::Running),
    Nginx(crate::nginx::Running),
}

impl Server {
    pub fn start(target: &Target, scratch: &Path) -> Result<Server, String> {
        match &target.launch {
            Launch::Lab { bin, args } => labkit::launch(bin, args).map(Server::Lab),
            Launch::Nginx(config) => {
                let binary = crate::nginx::find().ok_or("nginx is not installed")?;
                crate::nginx::start(&binary, config, scratch).map(Server::Nginx)
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Server::Lab(running) => running.addr(),
            Server::Nginx(running) => running.addr,
        }
    }

    /// The process the server was started as (its workers, if any, are below it).
    pub fn pid(&self) -> u32 {
        match self {
            Server::Lab(running) => running.pid(),
            Server::Nginx(running) => running.pid(),
        }
    }

    /// CPU time so far of the server and every process it started.
    pub fn cpu_time(&self) -> Duration {
        labkit::cpu_time(self.pid())
    }

    /// The server's /stats, on a connection of its own (the project's servers only).
    pub fn stats(&self) -> Result<Value, String> {
        let addr = self.addr();
        let mut client = labkit::Client::try_connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
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
}

/// lab-load's results and the costs around them.
#[derive(Debug, Clone)]
pub struct Measured {
    /// lab-load's whole `--json` document.
    pub load: Value,
    /// The server's CPU use over the run, as a share of its CPUs (1.0: every one busy throughout).
    pub server_cpu: f64,
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

    pub fn client_cpu(&self) -> f64 {
        self.load["client_cpu"]["utilization"].as_f64().unwrap_or(0.0)
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
            "first_errors": self.load["first_errors"],
        })
    }
}

/// lab-load's command line for `load` against `addr`, writing its JSON to `json`.
pub fn load_command(load: &Load, addr: SocketAddr, json: &Path) -> Command {
    let lab_load = labkit::find_bin("lab-load").unwrap_or_else(|_| PathBuf::from("lab-load"));
    let mut command = Command::new(lab_load);
    command
        .arg(format!("http://{addr}{}", load.path))
        .args(["-c", &load.connections.to_string()])
        .args(["-t", &load.client_cpus.len().to_string()])
        .args(["--cpus", &cpu_list(&load.client_cpus)])
        .args(["-d", &format!("{}", load.duration)])
        .args(["--warmup", &format!("{}", load.warmup)])
        .args(["--seed", "1"])
        .arg("--no-progress")
        .arg("--json")
        .arg(json)
        .args(&load.flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Runs several lab-loads at once against `server` (one for most workloads, two for fairness) and
/// returns each one's results, with the server's CPU use over the whole span.
pub fn run_loads(
    server: &Server,
    server_cpus: usize,
    loads: &[Load],
    scratch: &Path,
) -> Result<Vec<Measured>, String> {
    let cpu_before = server.cpu_time();
    let started = Instant::now();
    let mut children = Vec::new();
    for (i, load) in loads.iter().enumerate() {
        let json = scratch.join(format!("load-{}-{i}.json", std::process::id()));
        let _ = fs::remove_file(&json);
        let mut command = load_command(load, server.addr(), &json);
        let child =
            command.spawn().map_err(|e| format!("spawn lab-load: {e} (build it: cargo build --release)"))?;
        children.push((child, json, load.duration + load.warmup + 15.0));
    }
    let mut documents = Vec::new();
    for (mut child, json, limit) in children {
        let deadline = started + Duration::from_secs_f64(limit);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| format!("waitpid lab-load: {e}"))? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("lab-load still running after {limit:.0} s; killed"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        if !status.success() {
            return Err(format!("lab-load exited with {status}: {}", stderr.trim()));
        }
        let text = fs::read_to_string(&json).map_err(|e| format!("read {}: {e}", json.display()))?;
        let _ = fs::remove_file(&json);
        documents.push(serde_json::from_str::<Value>(&text).map_err(|e| format!("lab-load's JSON: {e}"))?);
    }
    let wall = started.elapsed().as_secs_f64();
    let server_cpu =
        server.cpu_time().saturating_sub(cpu_before).as_secs_f64() / (wall * server_cpus.max(1) as f64);
    Ok(documents.into_iter().map(|load| Measured { load, server_cpu }).collect())
}
