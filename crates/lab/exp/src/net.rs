//! The client side of the experiments: the project's servers started through labkit, nonblocking
//! connects whose handshakes the kernel finishes on its own, and one blocking HTTP exchange.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use labkit::{Running, Server};

/// Starts the project server `bin` (`lab-epoll`) with `args` and waits for its `listening on` line.
pub fn start(bin: &'static str, args: &[&str]) -> Running {
    labkit::spawn(&Server::other(bin, bin, &[]), args)
}

/// A connect whose handshake the kernel completes (or not) without us: `connect(2)` nonblocking.
pub struct Pending {
    pub fd: OwnedFd,
    pub started: Instant,
    /// When the handshake was first seen complete.
    pub completed: Option<Instant>,
}

impl Pending {
    pub fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Pending {
        let started = Instant::now();
        let (fd, done) = sys::client::connect_tcp(addr, source).unwrap_or_else(|e| panic!("{e}"));
        let completed = (done || sys::client::is_connected(fd.as_fd())).then(Instant::now);
        Pending { fd, started, completed }
    }

    /// Checks again whether the handshake has completed (the client's side of it).
    pub fn poll(&mut self) -> bool {
        if self.completed.is_none() && sys::client::is_connected(self.fd.as_fd()) {
            self.completed = Some(Instant::now());
        }
        self.completed.is_some()
    }

    /// How long the handshake took, if it completed.
    pub fn took(&self) -> Option<Duration> {
        Some(self.completed?.duration_since(self.started))
    }

    pub fn local_addr(&self) -> SocketAddr {
        sys::socket::local_addr(self.fd.as_fd()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The connection as a blocking stream with timeouts, for an HTTP exchange.
    pub fn into_stream(self) -> TcpStream {
        let stream = TcpStream::from(self.fd);
        stream.set_nonblocking(false).expect("fcntl O_NONBLOCK");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("SO_RCVTIMEO");
        stream.set_write_timeout(Some(Duration::from_secs(5))).expect("SO_SNDTIMEO");
        stream
    }
}

/// Opens `n` connections with nonblocking connect() to a server that is not accepting, waits
/// 300 ms, and says which handshakes had completed by then (the accept-queue experiments).
pub fn connect_crowd(addr: SocketAddr, n: usize) -> (Vec<Pending>, Vec<bool>) {
    let mut pending: Vec<Pending> = (0..n).map(|_| Pending::connect(addr, None)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let at_once = pending.iter_mut().map(Pending::poll).collect();
    (pending, at_once)
}

/// How many of `pending` completed their handshake and then got 200 to `GET /`.
pub fn served(pending: Vec<Pending>) -> usize {
    pending
        .into_iter()
        .filter(|p| p.completed.is_some())
        .map(Pending::into_stream)
        .filter_map(|mut stream| get(&mut stream, "/").ok())
        .filter(|(status, _)| *status == 200)
        .count()
}

/// Polls every pending connect every 5 ms until all have completed or `timeout` passes.
pub fn wait_all(pending: &mut [Pending], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // Every one polled (no short circuit), so each records when it completed.
        if pending.iter_mut().map(Pending::poll).filter(|done| !done).count() == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `GET path` on `stream`; returns the status and the body.
pub fn get(stream: &mut TcpStream, path: &str) -> io::Result<(u16, Vec<u8>)> {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: lab-exp\r\n\r\n").as_bytes())?;
    read_response(stream)
}

/// Reads one response framed by Content-Length.
pub fn read_response(stream: &mut TcpStream) -> io::Result<(u16, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while bytes.len() < end + 4 + length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                bytes.extend_from_slice(&chunk[..n]);
            }
            return Ok((status, bytes[end + 4..end + 4 + length].to_vec()));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// `GET /stats` on `stream`, as JSON.
pub fn stats(stream: &mut TcpStream) -> serde_json::Value {
    let (status, body) = get(stream, "/stats").unwrap_or_else(|e| panic!("GET /stats: {e}"));
    assert_eq!(status, 200, "GET /stats");
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("/stats is not JSON: {e}"))
}

/// A fresh connection to `addr` on which `GET /` was answered 200: the observer an experiment
/// reads /stats on while the server accepts nothing else.
pub fn observer(addr: SocketAddr) -> TcpStream {
    let mut observer = connect(addr);
    let (status, _) = get(&mut observer, "/").unwrap_or_else(|e| panic!("GET /: {e}"));
    assert_eq!(status, 200, "GET / on the observer connection");
    observer
}

/// A fresh blocking connection to `addr`.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("SO_RCVTIMEO");
    stream
}

/// Milliseconds, to the microsecond.
pub fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Runs lab-load against `addr` with `args` and returns its JSON results.
pub fn load(addr: SocketAddr, path: &str, args: &[&str]) -> serde_json::Value {
    load_url(&format!("http://{addr}{path}"), args)
}

/// Runs lab-load on `url` (http:// or https://) with `args`; returns its JSON report.
pub fn load_url(url: &str, args: &[&str]) -> serde_json::Value {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("lab-exp-load-{}-{run}.json", std::process::id()));
    let output = std::process::Command::new(labkit::bin_path("lab-load"))
        .arg(url)
        .args(args)
        .arg("--json")
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("start lab-load: {e}"));
    assert!(output.status.success(), "lab-load {url} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let _ = std::fs::remove_file(&file);
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("lab-load JSON: {e}"))
}

/// The sum of lab-load's error counts.
pub fn load_errors(results: &serde_json::Value) -> u64 {
    results["errors"].as_object().map_or(0, |errors| errors.values().filter_map(|v| v.as_u64()).sum())
}

/// What lab-load's `--timeline` saw between two moments of its run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub responses: u64,
    pub resets: u64,
    /// Every class of error.
    pub errors: u64,
    pub lost: u64,
    /// The p99 of the responses read in the window, from their intervals' histograms merged.
    pub p99_ms: Option<f64>,
}

impl Window {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "responses": self.responses, "resets": self.resets, "errors": self.errors,
            "lost": self.lost, "p99_ms": self.p99_ms,
        })
    }
}

/// The intervals of a lab-load run with `--timeline` that overlap `from_ms..to_ms` (milliseconds
/// from the wall-clock time `since_unix_ms`), added up.
pub fn window(results: &serde_json::Value, since_unix_ms: f64, from_ms: f64, to_ms: f64) -> Window {
    let timeline = &results["timeline"];
    let interval = timeline["interval_ms"].as_f64().unwrap_or(1.0);
    let offset = since_unix_ms - timeline["start_unix_ms"].as_f64().unwrap_or(since_unix_ms);
    let (from, to) = (from_ms + offset, to_ms + offset);
    let bins: Vec<&serde_json::Value> = timeline["bins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|bin| bin["t_ms"].as_f64().is_some_and(|t| t + interval > from && t < to))
        .collect();
    let sum = |key: &dyn Fn(&serde_json::Value) -> Option<u64>| bins.iter().filter_map(|b| key(b)).sum();
    let histograms: Vec<&serde_json::Value> =
        bins.iter().map(|b| &b["latency_histogram"]).filter(|h| !h.is_null()).collect();
    let p99_ms =
        histwire::merge(histograms).ok().map(|h| (h.value_at_quantile(0.99) as f64 / 1e3).round() / 1e3);
    Window {
        responses: sum(&|b| b["responses"].as_u64()),
        resets: sum(&|b| b["errors"]["reset"].as_u64()),
        errors: sum(&|b| b["errors"].as_object().map(|e| e.values().filter_map(|v| v.as_u64()).sum())),
        lost: sum(&|b| b["lost"].as_u64()),
        p99_ms,
    }
}

/// Now, as milliseconds since the Unix epoch (to line events up with lab-load's timeline).
pub fn unix_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |t| t.as_secs_f64() * 1e3)
}
