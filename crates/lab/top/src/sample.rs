//! One reading of a server's `/stats` (the format is docs/spec.md's "/stats"), and the keep-alive
//! connection that takes the readings.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use labkit::Client;
use serde_json::Value;

/// A server's `/stats` at one moment: counters only, which mean something once two are compared
/// (see [`crate::rates`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub arch: String,
    pub pid: u64,
    pub uptime_ms: u64,
    pub listeners: Vec<Listener>,
    pub workers: Vec<Worker>,
    pub totals: Totals,
    /// The kernel's counters from /proc/net/netstat, in the order /stats lists them; `None` where
    /// the server's /stats has no `kernel` object.
    pub kernel: Option<Vec<(String, u64)>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub addr: String,
    pub backlog: u64,
    pub accept_queue: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub id: u64,
    pub role: String,
    pub cpu: Option<u64>,
    pub accepted: u64,
    pub requests: u64,
    pub wakeups: u64,
    pub context_switches: u64,
    pub open: u64,
    /// The counters of the io_uring the worker drives (lab-uring), where /stats has them.
    pub ring: Option<Ring>,
    /// The load the worker publishes for lab-reuseport's steering program (`workers[].load`).
    pub load: Option<Load>,
}

/// A lab-reuseport worker's published load (/stats `workers[].load`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub live: bool,
    pub busy_ms: u64,
    pub queued: u64,
    pub steered: u64,
}

/// One io_uring's counters (/stats `workers[].ring`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    pub submissions: u64,
    pub completions: u64,
    pub enters: u64,
    pub enobufs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub accepted: u64,
    pub requests: u64,
    pub open: u64,
    pub rejected: u64,
}

impl Sample {
    /// Reads a `/stats` body; the error names the first field that is missing or of the wrong type.
    pub fn parse(stats: &Value) -> Result<Sample, String> {
        let totals = field(stats, "totals")?;
        let kernel = match stats.get("kernel") {
            None => None,
            Some(kernel) => {
                let counters = kernel.as_object().ok_or("/stats field `kernel` is not an object")?;
                let counters = counters
                    .iter()
                    .map(|(name, value)| Ok((name.clone(), number(value, name)?)))
                    .collect::<Result<_, String>>()?;
                Some(counters)
            }
        };
        Ok(Sample {
            arch: text(stats, "arch")?,
            pid: count(stats, "pid")?,
            uptime_ms: count(stats, "uptime_ms")?,
            listeners: list(stats, "listeners")?
                .iter()
                .map(|listener| {
                    Ok(Listener {
                        addr: text(listener, "addr")?,
                        backlog: count(listener, "backlog")?,
                        accept_queue: count(listener, "accept_queue")?,
                    })
                })
                .collect::<Result<_, String>>()?,
            workers: list(stats, "workers")?
                .iter()
                .map(|worker| {
                    Ok(Worker {
                        id: count(worker, "id")?,
                        role: text(worker, "role")?,
                        cpu: field(worker, "cpu")?.as_u64(),
                        accepted: count(worker, "accepted")?,
                        requests: count(worker, "requests")?,
                        wakeups: count(worker, "wakeups")?,
                        context_switches: count(worker, "context_switches")?,
                        open: count(worker, "open")?,
                        ring: match worker.get("ring") {
                            None => None,
                            Some(ring) => Some(Ring {
                                submissions: count(ring, "submissions")?,
                                completions: count(ring, "completions")?,
                                enters: count(ring, "enters")?,
                                enobufs: count(ring, "enobufs")?,
                            }),
                        },
                        load: match worker.get("load") {
                            None => None,
                            Some(load) => Some(Load {
                                live: field(load, "live")?.as_bool().unwrap_or(false),
                                busy_ms: count(load, "busy_ms")?,
                                queued: count(load, "queued")?,
                                steered: count(load, "steered")?,
                            }),
                        },
                    })
                })
                .collect::<Result<_, String>>()?,
            totals: Totals {
                accepted: count(totals, "accepted")?,
                requests: count(totals, "requests")?,
                open: count(totals, "open")?,
                rejected: count(totals, "rejected")?,
            },
            kernel,
        })
    }
}

fn field<'a>(object: &'a Value, name: &str) -> Result<&'a Value, String> {
    object.get(name).ok_or_else(|| format!("/stats has no field `{name}`"))
}

fn number(value: &Value, name: &str) -> Result<u64, String> {
    value.as_u64().ok_or_else(|| format!("/stats field `{name}` is not a count: {value}"))
}

fn count(object: &Value, name: &str) -> Result<u64, String> {
    number(field(object, name)?, name)
}

fn text(object: &Value, name: &str) -> Result<String, String> {
    let value = field(object, name)?;
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("/stats field `{name}` is not a string: {value}"))
}

fn list<'a>(object: &'a Value, name: &str) -> Result<&'a Vec<Value>, String> {
    let value = field(object, name)?;
    value.as_array().ok_or_else(|| format!("/stats field `{name}` is not a list: {value}"))
}

/// Takes readings over one keep-alive connection, opening a new one whenever the last one failed.
pub struct Poller {
    addr: SocketAddr,
    timeout: Duration,
    connection: Option<Client>,
}

impl Poller {
    /// A poller for the server at `addr` that gives up on a reading after `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Poller {
        Poller { addr, timeout, connection: None }
    }

    /// `GET /stats` on the kept connection (opened first if there is none). On any failure the
    /// connection is dropped, so the next call starts afresh: a restarted server is picked up. The
    /// error is a short phrase for the screen's title: `server gone: connect: connection refused`.
    pub fn sample(&mut self) -> Result<Sample, String> {
        let result = self.try_sample();
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    fn try_sample(&mut self) -> Result<Sample, String> {
        let timeout = self.timeout;
        let client = match &mut self.connection {
            Some(client) => client,
            None => {
                let client = Client::try_connect(self.addr).map_err(|e| gone("connect", &e))?;
                client.set_read_timeout(timeout);
                self.connection.insert(client)
            }
        };
        client.try_send(&labkit::get("/stats")).map_err(|e| gone("send", &e))?;
        let response = client.try_read_response(false).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("no answer to GET /stats in {timeout:?}"),
            ErrorKind::UnexpectedEof => "server gone: it closed the connection".to_string(),
            _ => gone("read", &e),
        })?;
        if response.status != 200 {
            return Err(format!("GET /stats answered {} {}", response.status, response.reason));
        }
        let stats = serde_json::from_slice(&response.body).map_err(|e| format!("/stats is not JSON: {e}"))?;
        Sample::parse(&stats)
    }
}

/// `server gone: connect: connection refused`: the call, and the error's kind without its number.
fn gone(call: &str, error: &io::Error) -> String {
    format!("server gone: {call}: {}", error.kind())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stats_parse_with_and_without_the_kernel_object() {
        let mut stats = json!({
            "arch": "memcached", "pid": 7, "uptime_ms": 1500,
            "listeners": [{ "addr": "127.0.0.1:8080", "backlog": 511, "accept_queue": 3 }],
            "workers": [{ "id": 0, "role": "acceptor", "cpu": null, "accepted": 10, "conns": 0,
                          "requests": 0, "open": 0, "wakeups": 12, "context_switches": 4 },
                        { "id": 1, "role": "worker", "cpu": 1, "accepted": 0, "conns": 10,
                          "requests": 99, "open": 5, "wakeups": 80, "context_switches": 70 }],
            "totals": { "accepted": 10, "requests": 99, "open": 5, "rejected": 0 }
        });
        let sample = Sample::parse(&stats).unwrap();
        assert_eq!(sample.listeners[0].accept_queue, 3);
        assert_eq!(sample.workers[1].cpu, Some(1));
        assert_eq!(sample.workers[0].cpu, None);
        assert_eq!(sample.workers[1].context_switches, 70);
        assert_eq!(sample.kernel, None);

        stats["kernel"] = json!({ "ListenOverflows": 5, "ListenDrops": 6 });
        let kernel = Sample::parse(&stats).unwrap().kernel.unwrap();
        assert_eq!(kernel, vec![("ListenOverflows".to_string(), 5), ("ListenDrops".to_string(), 6)]);

        stats["workers"][1].as_object_mut().unwrap().remove("wakeups");
        assert_eq!(Sample::parse(&stats), Err("/stats has no field `wakeups`".to_string()));
    }
}
