//! The results: a summary for people on stdout, and the same and more as JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::cli::Run;
use crate::request::Requests;
use crate::stats::{ErrorClass, Latencies, Recorder};

/// The percentiles reported, as (JSON name, label, quantile).
const PERCENTILES: [(&str, &str, f64); 5] = [
    ("p50", "p50", 0.5),
    ("p90", "p90", 0.9),
    ("p99", "p99", 0.99),
    ("p999", "p99.9", 0.999),
    ("p9999", "p99.99", 0.9999),
];

/// A run's results, ready to print.
#[derive(Debug)]
pub struct Report<'a> {
    pub run: &'a Run,
    pub requests: &'a Requests,
    pub recorder: &'a Recorder,
    /// The measured time: `--duration`, or with `--requests` until the last response.
    pub duration_s: f64,
    pub client_cpu: ClientCpu,
    /// When the run started (its warm-up), as wall-clock time: where `--timeline`'s intervals count from.
    pub start_unix_ms: f64,
}

/// lab-load's own CPU use over the whole run (warm-up included), so that a run limited by the
/// client rather than the server can be told apart: near 1.0 means the load threads never waited.
#[derive(Debug, Clone, Copy)]
pub struct ClientCpu {
    /// User plus system time of the process (getrusage RUSAGE_SELF).
    pub cpu_s: f64,
    pub wall_s: f64,
    /// `cpu_s / (wall_s × threads)`: the busy share of the load threads' CPUs.
    pub utilization: f64,
}

impl ClientCpu {
    /// The process's CPU time so far against the time since `start`, spread over `threads`.
    pub fn since(start: std::time::Instant, threads: usize) -> ClientCpu {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let cpu_s = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .map_or(0.0, |usage| seconds(usage.user_time()) + seconds(usage.system_time()));
        let wall_s = start.elapsed().as_secs_f64();
        let utilization = if wall_s > 0.0 { cpu_s / (wall_s * threads.max(1) as f64) } else { 0.0 };
        ClientCpu { cpu_s, wall_s, utilization }
    }
}

fn micros(nanos: u64) -> f64 {
    (nanos as f64 / 100.0).round() / 10.0
}

/// Percentiles, max and mean of a histogram of nanoseconds, in microseconds.
pub fn summary_us(histogram: &Histogram<u64>) -> Vec<(&'static str, &'static str, f64)> {
    let mut values: Vec<_> = PERCENTILES
        .iter()
        .map(|&(name, label, q)| (name, label, micros(histogram.value_at_quantile(q))))
        .collect();
    values.push(("max", "max", micros(histogram.max())));
    values.push(("mean", "mean", (histogram.mean() / 100.0).round() / 10.0));
    values
}

fn latency_json(histogram: &Histogram<u64>) -> Value {
    let map: Map<String, Value> =
        summary_us(histogram).into_iter().map(|(name, _, v)| (name.into(), json!(v))).collect();
    Value::Object(map)
}

fn latency_line(histogram: &Histogram<u64>) -> String {
    summary_us(histogram)
        .iter()
        .map(|(_, label, v)| format!("{label} {}", readable_us(*v)))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Microseconds as a person reads them: `87µs`, `12.3ms`, `1.02s`.
fn readable_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let (first, rest) = digits.split_at(digits.len() % 3);
    let groups = rest.as_bytes().chunks(3).map(|group| std::str::from_utf8(group).expect("digits are ASCII"));
    std::iter::once(first).filter(|f| !f.is_empty()).chain(groups).collect::<Vec<_>>().join(",")
}

impl Report<'_> {
    fn rps(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.recorder.latency.responses as f64 / self.duration_s
        } else {
            0.0
        }
    }

    fn read_rate(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.recorder.bytes_read as f64 / self.duration_s
        } else {
            0.0
        }
    }

    fn mode(&self) -> String {
        let run = self.run;
        let loop_kind = match run.rate {
            Some(rate) => format!("open loop at {} req/s ({:?} arrivals)", rate, run.arrivals).to_lowercase(),
            None => "closed loop".to_string(),
        };
        let connections = if run.close {
            "a new connection per request".to_string()
        } else {
            format!("pipeline {}", run.pipeline)
        };
        format!("{loop_kind}, {connections}")
    }

    /// Whether the uncorrected latency means something other than the corrected one: in open loop
    /// (the wait for the schedule) and in `--close` mode (the connect).
    fn shows_uncorrected(&self) -> bool {
        self.run.rate.is_some() || self.run.close
    }

    /// The summary printed on stdout.
    pub fn text(&self) -> String {
        let (run, rec) = (self.run, self.recorder);
        let mut out = String::new();
        let measured = match run.duration {
            Some(d) => format!("{:.1} s", d.as_secs_f64()),
            None => format!("{} requests", grouped(run.requests.unwrap_or(0))),
        };
        let _ = writeln!(
            out,
            "lab-load {}: {} thread(s), {} connections, {}; {measured} after {:.1} s of warm-up",
            run.url,
            run.threads,
            run.connections,
            self.mode(),
            run.warmup.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "  requests    {} in {:.2} s: {:.1} req/s, {:.2} MiB/s read",
            grouped(rec.latency.responses),
            self.duration_s,
            self.rps(),
            self.read_rate() / (1024.0 * 1024.0)
        );
        let from = if run.rate.is_some() { "from the scheduled time" } else { "from the first attempt" };
        let _ = writeln!(out, "  latency     {}   ({from})", latency_line(&rec.latency.corrected));
        if self.shows_uncorrected() {
            let _ =
                writeln!(out, "  uncorrected {}   (from the send)", latency_line(rec.latency.uncorrected()));
        }
        if (run.close || run.tls.is_some()) && !rec.connect.is_empty() {
            let _ = writeln!(
                out,
                "  connect     {}   ({} connects{})",
                latency_line(&rec.connect),
                grouped(rec.connect.len()),
                if run.tls.is_some() { ", TLS handshake included" } else { "" }
            );
        }
        if run.tls.is_some() {
            let [full, resumed] = rec.tls_handshakes;
            let _ = writeln!(
                out,
                "  tls         {} full handshakes, {} resumed",
                grouped(full),
                grouped(resumed)
            );
        }
        for (path, latencies) in self.requests.paths().iter().zip(&rec.per_path) {
            let _ = writeln!(
                out,
                "  {} ({}): {} requests",
                path.target,
                path.weight,
                grouped(latencies.responses)
            );
            let _ = writeln!(out, "    latency     {}", latency_line(&latencies.corrected));
            if self.shows_uncorrected() {
                let _ = writeln!(out, "    uncorrected {}", latency_line(latencies.uncorrected()));
            }
        }
        let errors: Vec<String> = ErrorClass::ALL
            .iter()
            .map(|&class| format!("{} {}", class.name(), rec.errors[class as usize]))
            .collect();
        let _ = write!(out, "  errors      {}; lost {}", errors.join(", "), rec.lost);
        if run.rate.is_some() {
            let _ = write!(out, "; late {}", rec.late);
        }
        out.push('\n');
        for class in ErrorClass::ALL {
            if let Some(first) = &rec.first_errors[class as usize] {
                let _ = writeln!(out, "    first {}: {first}", class.name());
            }
        }
        let statuses: Vec<String> =
            rec.statuses.iter().map(|(code, count)| format!("{code}: {}", grouped(*count))).collect();
        let _ = writeln!(
            out,
            "  client cpu  {:.2} s in {:.2} s over {} thread(s): {:.0}% busy",
            self.client_cpu.cpu_s,
            self.client_cpu.wall_s,
            run.threads,
            self.client_cpu.utilization * 100.0
        );
        let _ = writeln!(
            out,
            "  statuses    {}",
            if statuses.is_empty() { "none".into() } else { statuses.join(", ") }
        );
        out
    }

    /// Everything, as JSON.
    pub fn json(&self) -> Value {
        let (run, rec) = (self.run, self.recorder);
        let errors: Map<String, Value> =
            ErrorClass::ALL.iter().map(|&c| (c.name().to_string(), json!(rec.errors[c as usize]))).collect();
        let first_errors: Map<String, Value> = ErrorClass::ALL
            .iter()
            .filter_map(|&c| rec.first_errors[c as usize].as_ref().map(|e| (c.name().to_string(), json!(e))))
            .collect();
        let statuses: Map<String, Value> =
            rec.statuses.iter().map(|(code, count)| (code.to_string(), json!(count))).collect();
        let single = [rec.latency.clone()];
        let per_path: &[Latencies] = if rec.per_path.is_empty() { &single } else { &rec.per_path };
        let paths: Vec<Value> = self
            .requests
            .paths()
            .iter()
            .zip(per_path)
            .map(|(path, latencies)| {
                json!({
                    "path": path.target,
                    "weight": path.weight,
                    "requests": latencies.responses,
                    "latency_us": latency_json(&latencies.corrected),
                    "uncorrected_latency_us": latency_json(latencies.uncorrected()),
                })
            })
            .collect();
        let mut doc = json!({
            "url": run.url,
            "addr": run.addr.to_string(),
            "threads": run.threads,
            "connections": run.connections,
            "cpus": run.cpus,
            "loop": if run.rate.is_some() { "open" } else { "closed" },
            "rate": run.rate,
            "arrivals": run.rate.map(|_| format!("{:?}", run.arrivals).to_lowercase()),
            "pipeline": run.pipeline,
            "close": run.close,
            "method": run.spec.method,
            "body_size": run.spec.body_size,
            "warmup_s": run.warmup.as_secs_f64(),
            "timeout_s": run.timeout.as_secs_f64(),
            "seed": run.seed,
            "requests": rec.latency.responses,
            "sent": rec.sent,
            "responses_total": rec.answered,
            "duration_s": self.duration_s,
            "rps": self.rps(),
            "bytes_read": rec.bytes_read,
            "bytes_written": rec.bytes_written,
            "read_bytes_per_s": self.read_rate(),
            "lost": rec.lost,
            "late": rec.late,
            "errors": errors,
            "first_errors": first_errors,
            "statuses": statuses,
            "latency_us": latency_json(&rec.latency.corrected),
            "uncorrected_latency_us": latency_json(rec.latency.uncorrected()),
            // The histograms themselves, for a caller that merges several lab-loads' runs (histwire).
            "latency_histogram": histwire::encode(&rec.latency.corrected),
            "uncorrected_latency_histogram": histwire::encode(rec.latency.uncorrected()),
            "connect": { "count": rec.connect.len(), "latency_us": latency_json(&rec.connect) },
            "tls": run.tls.as_ref().map(|_| json!({
                "full": rec.tls_handshakes[0],
                "resumed": rec.tls_handshakes[1],
            })),
            "paths": paths,
            "client_cpu": {
                "cpu_s": self.client_cpu.cpu_s,
                "wall_s": self.client_cpu.wall_s,
                "utilization": self.client_cpu.utilization,
            },
        });
        if let Some(timeline) = &rec.timeline {
            doc["timeline"] = timeline.json(self.start_unix_ms);
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=100,000 µs, each once: the q-quantile is q × 100 ms, to the histogram's 0.1%.
        let mut histogram = new_histogram();
        for us in 1..=100_000u64 {
            histogram.record(us * 1000).unwrap();
        }
        let values = summary_us(&histogram);
        let expected = [50_000.0, 90_000.0, 99_000.0, 99_900.0, 99_990.0, 100_000.0, 50_000.5];
        for ((name, _, value), expected) in values.iter().zip(expected) {
            assert!((value - expected).abs() <= expected * 0.001, "{name}: {value} µs, expected {expected}");
        }
    }

    #[test]
    fn a_rare_slow_tail_shows_only_in_the_high_percentiles() {
        // 99.5% at 100 µs, 0.5% at 50 ms: p50 and p99 stay at 100 µs, p99.9 is the tail.
        let mut histogram = new_histogram();
        histogram.record_n(100_000, 9950).unwrap();
        histogram.record_n(50_000_000, 50).unwrap();
        let values = summary_us(&histogram);
        let value = |name: &str| values.iter().find(|v| v.0 == name).unwrap().2;
        assert!((value("p50") - 100.0).abs() < 0.2);
        assert!((value("p99") - 100.0).abs() < 0.2);
        assert!((value("p999") - 50_000.0).abs() < 50.0);
        assert!((value("mean") - (0.995 * 100.0 + 0.005 * 50_000.0)).abs() < 1.0);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(readable_us(87.0), "87µs");
        assert_eq!(readable_us(12_345.0), "12.3ms");
        assert_eq!(readable_us(1_020_000.0), "1.02s");
    }
}
