//! results.json in and out, and summary.md: the tables, with ratios against nginx.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::workloads::results_path;

pub fn save(doc: &Value, out: &Path) -> Result<(), String> {
    let path = out.join("results.json");
    let text = serde_json::to_string_pretty(doc).expect("a JSON value serialises");
    fs::write(&path, text + "\n").map_err(|e| format!("write {}: {e}", path.display()))
}

pub fn load(path: &Path) -> Result<Value, String> {
    let path = results_path(path);
    let text = fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if doc["schema"] != "acceptlab-bench/1" {
        return Err(format!("{}: not a lab-bench results file (schema {})", path.display(), doc["schema"]));
    }
    Ok(doc)
}

/// summary.md and the charts, from a results document.
pub fn render(doc: &Value, out: &Path) -> Result<(), String> {
    let doc = &crate::model_curves::with_models(doc); // results recorded before the model had none
    let path = out.join("summary.md");
    fs::write(&path, summary(doc)).map_err(|e| format!("write {}: {e}", path.display()))?;
    crate::charts::write_all(doc, out)
}

/// `--render DIR`; results recorded before the model get it, in results.json too.
pub fn render_dir(dir: &Path) -> Result<(), String> {
    let mut doc = load(dir)?;
    let recorded = doc.clone();
    crate::model_curves::annotate(&mut doc);
    if doc != recorded {
        save(&doc, dir)?;
    }
    render(&doc, dir)
}

pub fn runs<'a>(doc: &'a Value, workload: &str) -> impl Iterator<Item = &'a Value> + 'a {
    let workload = workload.to_string();
    doc["runs"].as_array().into_iter().flatten().filter(move |r| r["workload"] == workload.as_str())
}

/// 1234567.8 as `1,234,568`.
pub fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds as a person reads them.
pub fn readable_us(us: f64) -> String {
    if !us.is_finite() {
        "–".into()
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// The best nginx median of a workload, and which configuration gave it.
pub fn best_nginx(doc: &Value, workload: &str) -> Option<(String, f64)> {
    runs(doc, workload)
        .filter(|r| r["family"] == "real-nginx" && r["valid"] == true)
        .filter_map(|r| Some((r["server"].as_str()?.to_string(), r["rps"]["median"].as_f64()?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

const THROUGHPUT: [&str; 3] = ["keep-alive", "pipelined", "churn"];

fn throughput_cell(run: Option<&Value>, reference: Option<f64>) -> String {
    let Some(run) = run else { return "–".into() };
    if run["valid"] != true {
        let problems: Vec<&str> =
            run["problems"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        return format!("INVALID ({})", problems.join("; "));
    }
    let rps = run["rps"]["median"].as_f64().unwrap_or(0.0);
    let mut cell =
        format!("{} ±{:.0}%", grouped(rps), run["rps"]["spread_pct"].as_f64().unwrap_or(0.0) / 2.0);
    if let Some(reference) = reference.filter(|r| *r > 0.0) {
        let _ = write!(cell, " **{:.2}×**", rps / reference);
    }
    if run["client_bound"] == true {
        cell.push_str(" (client-bound)");
    }
    cell
}

pub fn summary(doc: &Value) -> String {
    let mut md = String::new();
    let machine = &doc["machine"];
    let settings = &doc["settings"];
    let _ = writeln!(md, "# lab-bench results\n");
    let _ = writeln!(
        md,
        "Machine `{}`: {} ({} CPUs online), Linux {}; somaxconn {}, tcp_syncookies {}, tcp_tw_reuse {}, ulimit -n {}.  ",
        machine["hostname"].as_str().unwrap_or("?"),
        machine["cpu_model"].as_str().unwrap_or("unknown CPU"),
        machine["cpus_online"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["somaxconn"].as_str().unwrap_or("?"),
        machine["tcp_syncookies"].as_str().unwrap_or("?"),
        machine["tcp_tw_reuse"].as_str().unwrap_or("?"),
        machine["ulimit_n"],
    );
    let _ = writeln!(
        md,
        "Commit `{}`, {} to {}.  ",
        doc["commit"].as_str().unwrap_or("unknown"),
        doc["started_utc"].as_str().unwrap_or("?"),
        doc["finished_utc"].as_str().unwrap_or("(unfinished)")
    );
    let _ = writeln!(md, "Command: `{}`", doc["command"].as_str().unwrap_or("?"));
    for earlier in doc["earlier_commands"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let _ = writeln!(md, "and, for the runs it did not repeat: `{earlier}`");
    }
    let _ = writeln!(
        md,
        "\nServers on CPUs {}, lab-load on CPUs {} ({} connections per client CPU); the latency sweep and \
         the fairness workload: servers on {}, clients on {}. {} round(s) of {} s after {} s of warm-up; \
         the figure is the median of the valid rounds, ± half their range.\n",
        settings["server_cpus"],
        settings["client_cpus"],
        settings["connections_per_client_cpu"],
        settings["sweep_server_cpus"],
        settings["sweep_client_cpus"],
        settings["rounds"],
        settings["duration_s"],
        settings["warmup_s"],
    );

    // Throughput.
    let references: Vec<Option<(String, f64)>> = THROUGHPUT.iter().map(|w| best_nginx(doc, w)).collect();
    let servers: Vec<String> = {
        let mut seen: Vec<String> = Vec::new();
        for w in THROUGHPUT {
            for r in runs(doc, w) {
                let id = r["server"].as_str().unwrap_or("?").to_string();
                if !seen.contains(&id) {
                    seen.push(id);
                }
            }
        }
        seen
    };
    if !servers.is_empty() {
        let _ = writeln!(md, "## Requests per second (closed loop)\n");
        let _ = writeln!(md, "Ratios are against the best nginx configuration of the same workload:");
        for (w, reference) in THROUGHPUT.iter().zip(&references) {
            match reference {
                Some((id, rps)) => {
                    let _ = writeln!(md, "- {w}: `{id}`, {} req/s", grouped(*rps));
                }
                None => {
                    let _ = writeln!(md, "- {w}: no nginx run (not installed, or not selected)");
                }
            }
        }
        let _ = writeln!(
            md,
            "\n| server | workers | keep-alive | pipelined (16 deep) | churn (a connection per request) |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for id in &servers {
            let find = |w: &str| runs(doc, w).find(|r| r["server"] == id.as_str());
            let workers =
                THROUGHPUT.iter().find_map(|w| find(w)).map(|r| r["workers"].clone()).unwrap_or(Value::Null);
            let cells: Vec<String> = THROUGHPUT
                .iter()
                .zip(&references)
                .map(|(w, reference)| throughput_cell(find(w), reference.as_ref().map(|r| r.1)))
                .collect();
            let _ = writeln!(md, "| {id} | {workers} | {} |", cells.join(" | "));
        }
        let _ = writeln!(md, "\nChart: [throughput.svg](throughput.svg)\n");
    }

    // Latency against load.
    for mix in doc["settings"]["mixes"].as_array().into_iter().flatten() {
        let name = mix["name"].as_str().unwrap_or("?");
        let workload = format!("sweep-{name}");
        let sweeps: Vec<&Value> = runs(doc, &workload).collect();
        if sweeps.is_empty() {
            continue;
        }
        let loads: Vec<f64> = doc["settings"]["sweep_loads"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect();
        let _ = writeln!(md, "## p99 latency against offered load: {name} mix\n");
        let _ = writeln!(
            md,
            "{}. Open loop (Poisson arrivals), latency from each request's scheduled time (coordinated \
             omission corrected), at fractions of the capacity the closed loop measured for that server \
             and mix. `!` marks a point with errors or lost requests.\n",
            mix["about"].as_str().unwrap_or("")
        );
        let header: Vec<String> = loads.iter().map(|l| format!("{:.0}%", l * 100.0)).collect();
        let _ = writeln!(md, "| server | workers | capacity (req/s) | {} |", header.join(" | "));
        let _ = writeln!(md, "|---|---|---|{}", "---|".repeat(loads.len()));
        for run in &sweeps {
            let points: Vec<String> = run["points"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let mark = if p["valid"] == true { "" } else { " !" };
                    format!("{}{mark}", readable_us(p["p99_us"].as_f64().unwrap_or(f64::NAN)))
                })
                .collect();
            let mut cells = points;
            cells.resize(loads.len(), "–".into());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                run["server"].as_str().unwrap_or("?"),
                run["workers"],
                grouped(run["capacity_rps"].as_f64().unwrap_or(0.0)),
                cells.join(" | ")
            );
        }
        let _ = writeln!(md, "\nChart: [latency-{name}.svg](latency-{name}.svg)\n");
    }

    md.push_str(&crate::model_curves::summary(doc));

    // Fairness.
    let fairness: Vec<&Value> = runs(doc, "fairness").collect();
    if !fairness.is_empty() {
        let _ = writeln!(md, "## Fairness: a few long-lived connections, half of them heavy\n");
        let _ = writeln!(
            md,
            "N heavy connections (a closed loop of `{}`) and N light ones (`/`), N = the workers (at least 2), \
             opened at once. Per executing worker: the requests it ran, from /stats. Jain's index is 1 when \
             every worker does the same share and 1/n when one does everything. The heavy connections' \
             throughput is against the ideal of one heavy connection per worker.\n",
            doc["settings"]["fairness_heavy_path"].as_str().unwrap_or("/spin")
        );
        let _ = writeln!(md, "| server | workers | requests per worker | Jain (requests) | Jain (connections) | heavy req/s (of ideal) | light p99 |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for run in fairness {
            let per_worker: Vec<String> = run["workers_detail"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| w["executes"] == true)
                .map(|w| grouped(w["requests"].as_f64().unwrap_or(0.0)))
                .collect();
            let invalid =
                if run["valid"] == true { String::new() } else { format!(" INVALID ({})", run["problems"]) };
            let _ = writeln!(
                md,
                "| {}{invalid} | {} | {} | {:.2} | {:.2} | {} ({:.0}%) | {} |",
                run["server"].as_str().unwrap_or("?"),
                run["workers"],
                per_worker.join(" / "),
                run["jain_requests"].as_f64().unwrap_or(f64::NAN),
                run["jain_conns"].as_f64().unwrap_or(f64::NAN),
                grouped(run["heavy"]["rps"].as_f64().unwrap_or(0.0)),
                run["heavy_share_of_ideal"].as_f64().unwrap_or(0.0) * 100.0,
                readable_us(run["light"]["p99_us"].as_f64().unwrap_or(f64::NAN)),
            );
        }
        let _ = writeln!(md, "\nChart: [fairness.svg](fairness.svg)\n");
    }
    md.push_str(&crate::arrival::summary(doc));
    let _ = writeln!(
        md,
        "A cell marked INVALID had errors or lost requests and is not averaged in. `client-bound`: lab-load \
         was busy ≥ 90% of its CPUs while the server had CPU to spare, so the figure is the client's \
         ceiling, not the server's. Every round is in results.json."
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(1_234_567.8), "1,234,568");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(readable_us(87.0), "87 µs");
        assert_eq!(readable_us(22_600.0), "22.6 ms");
        assert_eq!(readable_us(2_300_000.0), "2.30 s");
    }
}
