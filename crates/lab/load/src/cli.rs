//! The command line (docs/spec.md, "lab-load"), checked and resolved into a [`Run`].

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::request::RequestSpec;
use crate::schedule::Arrivals;

/// What the numbers of a run mean, after `--help`.
const RESULTS: &str = "\
Results (stdout, and all of it with --json):
  requests, rps   responses to the requests due in the measured time (after the warm-up)
  latency         to the last byte of the response, from when the request was due: its scheduled
                  time in open loop, else when it was queued (in --close mode, the connect)
  uncorrected     from when the request was actually sent (open loop and --close)
  errors          connect (refused, failed, timed out), reset (closed or reset with requests
                  unanswered), timeout (no response within --timeout), status (not 2xx or 3xx),
                  framing (a response that breaks HTTP/1.1 framing); counted over the whole run
  lost            requests of the measured time sent and never answered (in open loop, also
                  those due and never sent)
  late            open loop: requests sent more than 1 ms after their scheduled time (no
                  connection had room, or the load thread was behind)";

/// lab-load: an HTTP/1.1 load generator, closed or open loop, with latency from HDR histograms.
#[derive(Debug, Parser)]
#[command(name = "lab-load", version, after_help = RESULTS)]
pub struct Cli {
    /// The target: http://HOST[:PORT][/PATH], or https:// (with --cacert or --insecure)
    url: String,
    /// Connections in all, shared among the threads.
    #[arg(short = 'c', long, default_value_t = 64)]
    connections: usize,
    /// Load threads, each with its own epoll.
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// Pin the load threads to these CPUs, in order, wrapping around (e.g. 1 or 4-7,12).
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    cpus: Option<CpuList>,
    /// Measured time, in seconds or with a unit: 10, 10s, 500ms, 2m [default: 10].
    #[arg(short = 'd', long, value_name = "SECS", value_parser = parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Measure this many requests instead of a time.
    #[arg(short = 'n', long, value_name = "N")]
    requests: Option<u64>,
    /// Load before measuring, not recorded.
    #[arg(long, value_name = "SECS", value_parser = parse_duration, default_value = "1")]
    warmup: Duration,
    /// Open loop: R requests/s in all; latency counts from each request's scheduled send time.
    /// Without it: closed loop, as fast as the server answers.
    #[arg(short = 'r', long, value_name = "R")]
    rate: Option<f64>,
    /// How open-loop requests are spaced.
    #[arg(long, value_enum, default_value_t = Arrivals::Poisson)]
    arrivals: Arrivals,
    /// Requests in flight per connection.
    #[arg(long, value_name = "D", default_value_t = 1)]
    pipeline: usize,
    /// A new connection for every request (Connection: close).
    #[arg(long)]
    close: bool,
    /// Weighted request paths instead of the URL's, e.g. 99.5:/spin?us=1,0.5:/spin?us=500
    #[arg(long, value_name = "W:PATH,...", value_parser = parse_mix)]
    mix: Option<Mix>,
    /// The request method.
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// Send a body of N bytes with every request.
    #[arg(long, value_name = "N", default_value_t = 0)]
    body_size: usize,
    /// An extra request header, "Name: value"; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A request unanswered this long after it was sent is a timeout error (its connection is closed).
    #[arg(long, value_name = "SECS", value_parser = parse_duration, default_value = "5")]
    timeout: Duration,
    /// Write the full results as JSON to FILE; `-`: to stdout, instead of the summary (for a run
    /// through ssh or another launcher, whose files are on another host).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// One line a second on stderr [default: when stderr is a terminal].
    #[arg(long, overrides_with = "no_progress")]
    progress: bool,
    /// No progress line.
    #[arg(long)]
    no_progress: bool,
    /// Seed for arrival gaps and path choice, to repeat a run's schedule [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// https://: trust the CA certificates in this PEM file (make cert's target/cert/ca.pem).
    #[arg(long, value_name = "PEM")]
    cacert: Option<PathBuf>,
    /// https://: accept any server certificate (the handshake costs the server the same).
    #[arg(long, conflicts_with = "cacert")]
    insecure: bool,
    /// https://: resume TLS sessions by ticket, so that a new connection costs an abbreviated
    /// handshake; without it every handshake is a full one.
    #[arg(long)]
    tls_resume: bool,
    /// Add to the JSON a timeline of the run (warm-up included) in intervals of MS milliseconds:
    /// per interval the responses read, their latency (p50, p99, max and the histogram), the
    /// errors by class and the requests lost.
    #[arg(long, value_name = "MS")]
    timeline: Option<u64>,
}

#[derive(Debug, Clone)]
struct CpuList(Vec<usize>);

#[derive(Debug, Clone)]
struct Mix(Vec<(f64, String)>);

/// A checked, resolved command line.
#[derive(Debug, Clone)]
pub struct Run {
    pub url: String,
    pub addr: SocketAddr,
    pub spec: RequestSpec,
    /// `(weight, target)` per path; the URL's path alone without `--mix`.
    pub mix: Vec<(f64, String)>,
    pub connections: usize,
    pub threads: usize,
    pub cpus: Option<Vec<usize>>,
    /// `None` with `--requests`.
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub rate: Option<f64>,
    pub arrivals: Arrivals,
    pub pipeline: usize,
    pub close: bool,
    pub timeout: Duration,
    pub json: Option<PathBuf>,
    pub progress: bool,
    pub seed: u64,
    /// https://: the client's TLS settings and the name the server's certificate must carry; the
    /// handshake counts in the connect time.
    pub tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    /// `--timeline`: the width of its intervals.
    pub timeline: Option<Duration>,
}

impl Cli {
    /// Checks what clap cannot and resolves the target's address.
    pub fn resolve(self) -> Result<Run, String> {
        let (https, host, target_path) = split_url(&self.url)?;
        let addr = resolve_host(host, if https { 443 } else { 80 })?;
        let tls = match https {
            true => Some(self.tls_client(host)?),
            false if self.cacert.is_some() || self.insecure || self.tls_resume => {
                return Err("--cacert, --insecure and --tls-resume are for https:// URLs".into())
            }
            false => None,
        };
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if self.connections < self.threads {
            return Err(format!(
                "--connections {} is fewer than --threads {}",
                self.connections, self.threads
            ));
        }
        if self.pipeline == 0 {
            return Err("--pipeline must be at least 1".into());
        }
        if self.close && self.pipeline > 1 {
            return Err("--close carries one request per connection: --pipeline must be 1".into());
        }
        if let Some(rate) = self.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(format!("--rate must be a positive number, got {rate}"));
        }
        if self.duration.is_some_and(|d| d.is_zero()) || self.requests == Some(0) {
            return Err("nothing to measure: --duration and --requests must be above 0".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be above 0".into());
        }
        if self.timeline == Some(0) {
            return Err("--timeline must be at least 1 (milliseconds)".into());
        }
        if self.method.is_empty()
            || !self.method.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!".contains(&b))
        {
            return Err(format!("not a method: {:?}", self.method));
        }
        if let Some(bad) = self.headers.iter().find(|h| !is_header_line(h)) {
            return Err(format!("not a header \"Name: value\": {bad:?}"));
        }
        let mix = match self.mix {
            Some(Mix(mix)) => mix,
            None => vec![(1.0, target_path.to_string())],
        };
        let spec = RequestSpec {
            method: self.method,
            host: host.to_string(),
            headers: self.headers,
            body_size: self.body_size,
            close: self.close,
        };
        let seed = self.seed.unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |t| t.as_nanos() as u64)
        });
        Ok(Run {
            url: self.url,
            addr,
            spec,
            mix,
            connections: self.connections,
            threads: self.threads,
            cpus: self.cpus.map(|CpuList(cpus)| cpus),
            duration: match self.requests {
                Some(_) => None,
                None => Some(self.duration.unwrap_or(Duration::from_secs(10))),
            },
            requests: self.requests,
            warmup: self.warmup,
            rate: self.rate,
            arrivals: self.arrivals,
            pipeline: self.pipeline,
            close: self.close,
            timeout: self.timeout,
            json: self.json,
            progress: if self.no_progress { false } else { self.progress || std::io::stderr().is_terminal() },
            seed,
            tls,
            timeline: self.timeline.map(Duration::from_millis),
        })
    }

    /// The TLS client for an https:// URL to `authority`: whom to trust, and whether to resume.
    fn tls_client(
        &self,
        authority: &str,
    ) -> Result<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>), String> {
        let config = match (&self.cacert, self.insecure) {
            (Some(ca), _) => labkit::tls::client_config(ca)?,
            (None, true) => labkit::tls::insecure_client_config()?,
            (None, false) => return Err("https:// needs --cacert PEM (the CA to trust) or --insecure".into()),
        };
        let mut config = rustls::ClientConfig::clone(&config);
        config.resumption = match self.tls_resume {
            true => rustls::client::Resumption::store(crate::tickets::Tickets::new()),
            false => rustls::client::Resumption::disabled(),
        };
        let host = match authority.rfind(':') {
            Some(colon) if !authority[colon..].contains(']') => &authority[..colon],
            _ => authority,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("not a server name for TLS: {host:?}: {e}"))?;
        Ok((Arc::new(config), name))
    }
}

/// Splits `http://host:port/path?query` (or `https://`) into whether it is https, its authority and
/// its target (`/` when absent).
fn split_url(url: &str) -> Result<(bool, &str, &str), String> {
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        (None, None) => return Err(format!("only http:// and https:// URLs are supported: {url:?}")),
    };
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        Some(_) => return Err(format!("a query needs a path before it: {url:?}")),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    Ok((https, authority, target))
}

/// Resolves `host[:port]` (port `default_port` if none; IPv6 in brackets), IPv4 first.
fn resolve_host(authority: &str, default_port: u16) -> Result<SocketAddr, String> {
    let has_port = match authority.rfind(':') {
        Some(colon) => !authority[colon..].contains(']'),
        None => false,
    };
    let with_port = if has_port { authority.to_string() } else { format!("{authority}:{default_port}") };
    let addrs: Vec<SocketAddr> =
        with_port.to_socket_addrs().map_err(|e| format!("cannot resolve {authority}: {e}"))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{authority} resolves to no address"))
}

fn is_header_line(line: &str) -> bool {
    match line.split_once(':') {
        Some((name, value)) => {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) && !value.contains(['\r', '\n'])
        }
        None => false,
    }
}

fn parse_cpus(text: &str) -> Result<CpuList, String> {
    let cpus = sys::cpu::parse_cpu_list(text)?.0;
    if cpus.is_empty() {
        return Err("an empty CPU list".into());
    }
    Ok(CpuList(cpus))
}

/// `10`, `2.5`, `10s`, `500ms`, `2m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = text.strip_suffix('m') {
        (m, 60.0)
    } else {
        (text, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(Duration::from_secs_f64(value * scale)),
        _ => Err(format!("not a duration: {text:?} (e.g. 10, 10s, 500ms, 2m)")),
    }
}

fn parse_mix(text: &str) -> Result<Mix, String> {
    let mut mix = Vec::new();
    for item in text.split(',') {
        let (weight, path) = item
            .split_once(':')
            .ok_or_else(|| format!("{item:?} is not WEIGHT:PATH (e.g. 99.5:/spin?us=1)"))?;
        let weight: f64 = weight.trim().parse().map_err(|_| format!("not a weight: {weight:?}"))?;
        if !(weight.is_finite() && weight > 0.0) {
            return Err(format!("a weight must be above 0: {item:?}"));
        }
        if !path.starts_with('/') || path.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err(format!("not a path: {path:?}"));
        }
        mix.push((weight, path.to_string()));
    }
    Ok(Mix(mix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_target() {
        assert_eq!(split_url("http://127.0.0.1:8080/spin?us=1"), Ok((false, "127.0.0.1:8080", "/spin?us=1")));
        assert_eq!(split_url("http://localhost"), Ok((false, "localhost", "/")));
        assert_eq!(split_url("http://[::1]:80/"), Ok((false, "[::1]:80", "/")));
        assert_eq!(split_url("https://x/"), Ok((true, "x", "/")));
        assert!(split_url("ftp://x/").is_err());
        assert!(split_url("http:///").is_err());
        assert_eq!(resolve_host("127.0.0.1", 80), Ok("127.0.0.1:80".parse().unwrap()));
        assert_eq!(resolve_host("127.0.0.1", 443), Ok("127.0.0.1:443".parse().unwrap()));
        assert_eq!(resolve_host("[::1]:81", 443), Ok("[::1]:81".parse().unwrap()));
    }

    #[test]
    fn mixes_and_durations_parse() {
        let Mix(mix) = parse_mix("99.5:/spin?us=1,0.5:/spin?us=500").unwrap();
        assert_eq!(mix, vec![(99.5, "/spin?us=1".to_string()), (0.5, "/spin?us=500".to_string())]);
        for bad in ["", "1:", "0:/a", "x:/a", "/a", "1:a"] {
            assert!(parse_mix(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err());
    }
}
