//! `lab-bench --compare A B`: two runs side by side, with ratios B / A.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::results::{grouped, load, readable_us};

pub fn compare(a: &Path, b: &Path) -> Result<String, String> {
    let (old, new) = (load(a)?, load(b)?);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "A: {} ({}, commit {})",
        a.display(),
        old["started_utc"].as_str().unwrap_or("?"),
        old["commit"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "B: {} ({}, commit {})",
        b.display(),
        new["started_utc"].as_str().unwrap_or("?"),
        new["commit"].as_str().unwrap_or("?")
    );
    let _ = writeln!(out, "\n{:<24} {:<14} {:>14} {:>14} {:>8}", "server", "workload", "A", "B", "B/A");
    let mut matched = 0;
    for run in new["runs"].as_array().into_iter().flatten() {
        let Some(before) = old["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["server"] == run["server"] && r["workload"] == run["workload"])
        else {
            continue;
        };
        matched += 1;
        let server = run["server"].as_str().unwrap_or("?");
        let workload = run["workload"].as_str().unwrap_or("?");
        let flag = |r: &Value| if r["valid"] == true { "" } else { " INVALID" };
        if let (Some(x), Some(y)) = (before["rps"]["median"].as_f64(), run["rps"]["median"].as_f64()) {
            let _ = writeln!(
                out,
                "{server:<24} {workload:<14} {:>14} {:>14} {:>7.2}×{}{}",
                grouped(x),
                grouped(y),
                y / x,
                flag(before),
                flag(run)
            );
            // The server's CPU per request and, over TLS, per handshake (from /proc, every round).
            for (label, key) in
                [("server µs/req", "cpu_us_per_request"), ("server µs/hs", "cpu_us_per_handshake")]
            {
                if let (Some(x), Some(y)) = (before[key].as_f64(), run[key].as_f64()) {
                    let times = if x > 0.0 { format!("{:>7.2}×", y / x) } else { format!("{:>8}", "–") };
                    let _ = writeln!(out, "{:<24} {label:<14} {x:>14.1} {y:>14.1} {times}", "");
                }
            }
            // With --profile on both sides: where the time went, side by side.
            let (pa, pb) = (&before["profile"], &run["profile"]);
            for (label, key, part) in [
                ("user µs/req", "cpu_us_per_request", Some("user")),
                ("kernel µs/req", "cpu_us_per_request", Some("kernel")),
                ("softirq µs/req", "cpu_us_per_request", Some("softirq")),
                ("CPU µs/req", "cpu_us_per_request", Some("total")),
                ("syscalls/req", "syscalls_per_request", None),
                ("switches/req", "context_switches_per_request", None),
            ] {
                let value = |p: &Value| part.map_or(&p[key], |part| &p[key][part]).as_f64();
                if let (Some(x), Some(y)) = (value(pa), value(pb)) {
                    let times = if x > 0.0 { format!("{:>7.2}×", y / x) } else { format!("{:>8}", "–") };
                    let _ = writeln!(out, "{:<24} {label:<14} {x:>14.3} {y:>14.3} {times}", "");
                }
            }
        } else if let (Some(x), Some(y)) = (before["jain_requests"].as_f64(), run["jain_requests"].as_f64()) {
            let _ = writeln!(
                out,
                "{server:<24} {workload:<14} {:>14} {:>14} {:>7.2}×  (Jain's index)",
                format!("{x:.2}"),
                format!("{y:.2}"),
                y / x
            );
        } else if let (Some(xs), Some(ys)) = (before["points"].as_array(), run["points"].as_array()) {
            for (x, y) in xs.iter().zip(ys) {
                let (p, q) =
                    (x["p99_us"].as_f64().unwrap_or(f64::NAN), y["p99_us"].as_f64().unwrap_or(f64::NAN));
                let label = format!("{workload} {:.0}%", y["load"].as_f64().unwrap_or(0.0) * 100.0);
                let _ = writeln!(
                    out,
                    "{server:<24} {label:<14} {:>14} {:>14} {:>7.2}×  (p99)",
                    readable_us(p),
                    readable_us(q),
                    q / p
                );
            }
        }
    }
    if matched == 0 {
        return Err("the two runs have no server and workload in common".into());
    }
    Ok(out)
}
