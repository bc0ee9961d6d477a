//! The command line every server shares (docs/spec.md, "Common command line").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use sys::cpu::{parse_cpu_list, CpuList};

use crate::idempotency::Bounds;
use crate::tls::TlsServer;

/// The common flags, flattened into each server's own `clap` parser.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Address to listen on. Port 0: the kernel picks one (all workers share it).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// listen(2) backlog: the accept queue's capacity (the kernel caps it at net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = 511)]
    pub backlog: u32,
    /// Worker threads / processes [default: one per CPU in --cpus, else per available CPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
    /// Pin each thread / process to one CPU of the list, in order (acceptor or dispatcher first, then
    /// the workers), wrapping around; e.g. 0-3,8.
    #[arg(long, value_name = "LIST", value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,
    /// Open connections at most; one more gets a 503 and is closed.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_conns: u64,
    /// Close a connection idle this long; 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub idle_timeout: u64,
    /// A request head must arrive whole within this many seconds of its first byte, else 408 and
    /// close (slowloris); fractions allowed; 0: never.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub header_timeout: Duration,
    /// A request body must arrive whole within this many seconds of when the server starts waiting
    /// for it (the end of its head, or its 100 Continue), plus a second per --body-min-rate bytes
    /// received, else 408 and close (slow bodies); fractions allowed; 0: never.
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = parse_seconds)]
    pub body_timeout: Duration,
    /// Bytes of body (chunk framing included) that extend --body-timeout by one second each; 0: no
    /// extension.
    #[arg(long, value_name = "BYTES", default_value_t = 500)]
    pub body_min_rate: u64,
    /// MiB that large requests may hold, from their first byte read to their response's last byte
    /// written, beyond 64 KiB of read buffer and 64 KiB being answered per connection; shared by all
    /// (per process); past it a new large request gets 503 and is closed.
    #[arg(long, value_name = "MIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_budget: u64,
    /// Leave Nagle's algorithm on (TCP_NODELAY is set by default).
    #[arg(long)]
    pub no_nodelay: bool,
    /// Serve HTTPS (TLS 1.3 and 1.2, ALPN http/1.1) with this certificate chain, PEM (`make cert`).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// For experiments (lab-exp accept-queue): accept the first connection, then accept nothing for
    /// SECS seconds, so the accept queue fills while that first connection can still ask /stats.
    /// Per process (lab-reuseport: each worker process pauses after its own first connection).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub pause_accept: Option<Duration>,
    /// Idempotency-Key entries `POST /ledger` keeps at most; the oldest finished one makes room.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub idempotency_entries: u64,
    /// Seconds a finished Idempotency-Key's response is kept (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "86400", value_parser = parse_seconds)]
    pub idempotency_age: Duration,
}

/// Parses a number of seconds, fractions allowed (`2.5`).
fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("not a number of seconds: {text:?}"))
}

/// The resolved configuration every server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub backlog: u32,
    pub workers: usize,
    pub cpus: Option<Vec<usize>>,
    pub max_conns: u64,
    pub idle_timeout: Option<Duration>,
    pub header_timeout: Option<Duration>,
    /// `--body-timeout` (`None`: 0) and `--body-min-rate`.
    pub body_timeout: Option<Duration>,
    pub body_min_rate: u64,
    /// `--memory-budget`, in bytes.
    pub memory_budget: usize,
    pub nodelay: bool,
    /// `--tls-cert` and `--tls-key`, loaded (by `startup::configure`, before any thread or fork).
    pub tls: Option<TlsServer>,
    /// `--pause-accept`: how long accepting stops after the first connection.
    pub pause_accept: Option<Duration>,
    /// `--idempotency-entries` and `--idempotency-age`; the store is shared by every worker unless a
    /// server says otherwise (lab-reuseport's `--idempotency-store per-process`).
    pub idempotency: Bounds,
}

impl Config {
    /// The CPU the `index`-th thread or process is pinned to (0 is the acceptor or dispatcher, where
    /// the architecture has one), or `None` without `--cpus`.
    pub fn cpu_for(&self, index: usize) -> Option<usize> {
        self.cpus.as_ref().map(|cpus| cpus[index % cpus.len()])
    }
}

impl CommonArgs {
    /// Resolves defaults. `max_workers`: the architecture's own limit (lab-epoll: exactly one).
    pub fn resolve(&self, max_workers: Option<usize>) -> Result<Config, String> {
        let available = || sys::cpu::allowed_cpus().map(|cpus| cpus.len()).unwrap_or(1).max(1);
        let default_workers = match (&self.cpus, max_workers) {
            (_, Some(max)) => max,
            (Some(list), None) => list.0.len(),
            (None, None) => available(),
        };
        let workers = self.workers.map_or(default_workers, usize::from);
        if let Some(max) = max_workers.filter(|&max| workers > max) {
            return Err(format!("--workers {workers}: this architecture runs exactly {max}"));
        }
        if self.idempotency_age.is_zero() {
            return Err("--idempotency-age: must be above 0".to_string());
        }
        if matches!(&self.cpus, Some(list) if list.0.is_empty()) {
            return Err("--cpus: empty list".to_string());
        }
        Ok(Config {
            addr: self.addr,
            backlog: self.backlog,
            workers,
            cpus: self.cpus.as_ref().map(|list| list.0.clone()),
            max_conns: self.max_conns,
            idle_timeout: (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout)),
            header_timeout: (!self.header_timeout.is_zero()).then_some(self.header_timeout),
            body_timeout: (!self.body_timeout.is_zero()).then_some(self.body_timeout),
            body_min_rate: self.body_min_rate,
            memory_budget: usize::try_from(self.memory_budget.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            nodelay: !self.no_nodelay,
            tls: None,
            pause_accept: self.pause_accept,
            idempotency: Bounds {
                entries: self.idempotency_entries as usize,
                max_age: self.idempotency_age,
                sharing: sys::shared::Sharing::Shared,
            },
        })
    }
}

/// The name a flag of a server's own takes for `value` (`--accept exclusive`): for its log lines.
pub fn value_name(value: impl ValueEnum) -> String {
    value.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
}

/// Parses the command line of server `P`; a bad one exits 2 with a one-line reason (clap's own
/// message, without its usage paragraph), `--help` and `--version` print and exit 0. A flag given
/// twice takes its last value, as in most Unix tools, so scripts can append overrides.
pub fn parse_or_exit<P: Parser>() -> P {
    let command = P::command().args_override_self(true);
    command.try_get_matches().and_then(|matches| P::from_arg_matches(&matches)).unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit();
        }
        let rendered = e.render().to_string();
        let reason = rendered.lines().next().unwrap_or("bad command line");
        eprintln!("{}: {}", program_name(), reason.trim_start_matches("error: "));
        process::exit(2);
    })
}

/// Exits 2 with a one-line reason: a command line that parsed but does not make sense.
pub fn usage_error(reason: &str) -> ! {
    eprintln!("{}: {reason}", program_name());
    process::exit(2);
}

/// The name the binary was started as (`lab-epoll`), for messages.
pub fn program_name() -> String {
    std::env::args()
        .next()
        .and_then(|arg0| arg0.rsplit('/').next().map(str::to_owned))
        .unwrap_or_else(|| "acceptlab".to_string())
}

impl From<&Config> for crate::session::Timeouts {
    fn from(config: &Config) -> Self {
        crate::session::Timeouts {
            idle: config.idle_timeout,
            header: config.header_timeout,
            body: config.body_timeout,
            body_min_rate: config.body_min_rate,
        }
    }
}
