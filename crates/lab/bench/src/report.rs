//! summary.md: the tables, with ratios against nginx, read from a results document (it writes
//! summary.md and has the charts drawn; results.json it only reads).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::results::{best_nginx, grouped, readable_us, runs};

/// summary.md and the charts, from a results document.
pub fn render(doc: &Value, out: &Path) -> Result<(), String> {
    let doc = &crate::model_curves::with_models(doc); // results recorded before the model had none
    let path = out.join("summary.md");
    fs::write(&path, summary(doc)).map_err(|e| format!("write {}: {e}", path.display()))?;
    crate::charts::write_all(doc, out)
}

const THROUGHPUT: [&str; 3] = ["keep-alive", "pipelined", "churn"];

/// The TLS workloads, and plaintext keep-alive beside them as the reference for the record layer.
const OVER_TLS: [&str; 4] = ["keep-alive", "tls-keep-alive", "tls-churn", "tls-resume"];

/// Every closed-loop workload, plaintext and TLS: those a `--profile` table row can come from.
const PROFILED: [&str; 6] = ["keep-alive", "pipelined", "churn", "tls-keep-alive", "tls-churn", "tls-resume"];

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

    let _ = writeln!(
        md,
        "Churn: servers on CPUs {}, lab-load on CPUs {}: {}. A churn cell marked client-bound is a finding \
         (lab-load's ceiling), not a result.\n",
        settings["churn_server_cpus"],
        settings["churn_client_cpus"],
        settings["churn_split"].as_str().unwrap_or("the same as the other workloads"),
    );
    md.push_str(&network_summary(doc));

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
    md.push_str(&over_tls(doc));
    md.push_str(&configurations(doc));
    md.push_str(&where_the_time_goes(doc));

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
    md.push_str(&arrival_summary(doc));
    let _ = writeln!(
        md,
        "A cell marked INVALID had errors or lost requests, or the server's /stats counted other than \
         the responses the clients read, and is not averaged in. `client-bound`: lab-load \
         was busy ≥ 90% of its CPUs while the server had CPU to spare, so the figure is the client's \
         ceiling, not the server's. Every round is in results.json."
    );
    md
}

/// How nginx, the real systems beside it and the user's servers were configured (one line each),
/// how they were held and stopped, and which workloads they skipped.
fn configurations(doc: &Value) -> String {
    let mut rows: Vec<(&str, &str)> = Vec::new();
    for w in PROFILED {
        for r in runs(doc, w) {
            let (id, configuration) = (r["server"].as_str().unwrap_or("?"), r["configuration"].as_str());
            if let Some(configuration) = configuration.filter(|_| !rows.iter().any(|(seen, _)| *seen == id)) {
                rows.push((id, configuration));
            }
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let settings = &doc["settings"];
    let mut md = String::from("## How the real systems and the user's servers were configured\n\n");
    for (id, configuration) in rows {
        let _ = writeln!(md, "- `{id}`: {configuration}");
    }
    let mut binaries: Vec<String> = Vec::new();
    for system in settings["real_systems"].as_array().into_iter().flatten() {
        let line = format!(
            "`{}`: {}",
            system["binary"].as_str().unwrap_or("?"),
            system["version"].as_str().unwrap_or("version unknown")
        );
        if !binaries.contains(&line) {
            binaries.push(line);
        }
    }
    if !binaries.is_empty() {
        let _ = writeln!(md, "\nBinaries: {}.", binaries.join("; "));
    }
    let _ = writeln!(
        md,
        "\nNone of them has /stats, so the count check is skipped: such a row is valid when lab-load saw no \
         errors and every answer was a 2xx."
    );
    if let Some(how) = settings["containment"].as_str() {
        let left = settings["left_behind"].as_array().map_or(0, Vec::len);
        let _ = writeln!(
            md,
            "Every one but nginx started in {how}; stopped with everything it started: {}.",
            if left == 0 {
                "no process left behind".to_string()
            } else {
                format!("LEFT BEHIND: {}", settings["left_behind"])
            }
        );
    }
    for key in ["skipped", "skipped_tls"] {
        if let Some(line) = settings[key].as_str() {
            let _ = writeln!(md, "The {line}.");
        }
    }
    md.push('\n');
    md
}

/// Where the clients reached the servers, and who the clients were.
fn network_summary(doc: &Value) -> String {
    let network = &doc["settings"]["network"];
    let mut md = match network["net"].as_str() {
        Some("veth") => format!(
            "Network: veth. The servers in network namespace `{}` at {}, lab-load in `{}` at {}, joined by a veth pair; \
             RPS on the server end's receive queue: {}. Both namespaces made and removed by lab-bench; the host afterwards: {}.",
            network["server_namespace"].as_str().unwrap_or("?"),
            network["server_addr"].as_str().unwrap_or("?"),
            network["client_namespace"].as_str().unwrap_or("?"),
            network["client_addr"].as_str().unwrap_or("?"),
            network["rps_cpus"].as_str().map_or("off (receive processing on the sending CPU)".into(), |m| format!("CPU mask {m}")),
            match network["host_unchanged"].as_bool() {
                Some(true) => "sysctls as before, namespaces and pair gone".to_string(),
                Some(false) => format!("CHANGED: {}", network["host_problem"].as_str().unwrap_or("?")),
                None => "not checked (unfinished)".to_string(),
            }
        ),
        Some(_) => format!("Network: servers on {}.", network["server_addr"].as_str().unwrap_or("127.0.0.1")),
        None => return String::new(), // results recorded before the network was
    };
    let clients = doc["machine"]["clients"].as_array().cloned().unwrap_or_default();
    if clients.len() == 1 && clients[0]["exec"] != "" {
        let _ = write!(md, " lab-load run through");
    } else if clients.len() > 1 {
        let _ = write!(
            md,
            " {} clients, each load split between them and their results merged (counts added, histograms merged):",
            clients.len()
        );
    }
    if clients.len() > 1 || clients.iter().any(|c| c["exec"] != "") {
        for client in &clients {
            let _ = write!(
                md,
                " `{}` ({} CPUs, {});",
                client["exec"].as_str().filter(|e| !e.is_empty()).unwrap_or("here"),
                client["nproc"],
                client["uname"].as_str().unwrap_or("?")
            );
        }
    }
    md.push_str("\n\n");
    md
}

/// The load-aware dispatch section (the arrival-order workload, lab-memcached --dispatch).
fn arrival_summary(doc: &Value) -> String {
    let records: Vec<&Value> = runs(doc, "arrival-order").collect();
    let Some(reference) =
        records.iter().find(|r| r["server"] == "memcached-rr").and_then(|r| r["heavy_requests"].as_f64())
    else {
        return String::new();
    };
    let mut md = String::from(
        "## Load-aware dispatch: lab-memcached --dispatch rr | p2c | least\n\n\
         2N keep-alive connections arrive 0.3 s apart on N workers, alternately heavy (`/spin?us=2000` \
         in a loop) and light (`/` in a loop); measured over the 3 s after the last arrival (median of \
         rounds). H heavy, L light, in arrival order; the last row is round-robin with the heavy \
         connections arriving first. Worker shares count requests, so the light loops' many small ones \
         dominate them.\n\n\
         | server | order | heavy requests | × rr | of the ideal | heavy p99 | light p99 | worker shares (last round) | Jain |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in records {
        let heavy = r["heavy_requests"].as_f64().unwrap_or(0.0);
        let ideal = r["heavy_ideal_requests"].as_f64().unwrap_or(f64::NAN);
        let shares = r["rounds"]
            .as_array()
            .and_then(|rounds| rounds.last())
            .and_then(|round| round["worker_shares"].as_array())
            .map(|s| {
                s.iter()
                    .map(|x| format!("{:.0}%", x.as_f64().unwrap_or(0.0) * 100.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_default();
        // `H L H L`: the connections' kinds in arrival order.
        let order: Vec<&str> = r["order"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|k| if k == "heavy" { "H" } else { "L" })
            .collect();
        md.push_str(&format!(
            "| {}{} | {} | {heavy:.0} | {:.2}× | {:.0}% | {} | {} | {shares} | {:.2} |\n",
            r["server"].as_str().unwrap_or("?"),
            if r["valid"] == true { "" } else { " (invalid)" },
            order.join(" "),
            heavy / reference.max(1.0),
            heavy / ideal * 100.0,
            readable_us(r["heavy_p99_us"].as_f64().unwrap_or(f64::NAN)),
            readable_us(r["light_p99_us"].as_f64().unwrap_or(f64::NAN)),
            r["jain_requests"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    md.push_str("\nChart: [dispatch.svg](dispatch.svg)\n\n");
    md
}

/// The `--profile` table: the server's CPU per request by where it went, and its system calls
/// and context switches per request, each row with its flame graph.
fn where_the_time_goes(doc: &Value) -> String {
    let profiled: Vec<&Value> = PROFILED
        .iter()
        .flat_map(|w| runs(doc, w))
        .filter(|r| r["profile"]["cpu_us_per_request"].is_object())
        .collect();
    if profiled.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "## Where the time goes (--profile)\n\n\
         Each round of each server ran twice, without perf and with it, back to back: the figures \
         elsewhere in this summary are from the rounds without. The ones here are from the first \
         round with: perf attached to the server's process tree beforehand, its events on for exactly \
         lab-load's measured window, perf itself on CPUs the server does not use. µs of server CPU \
         per request from perf record's samples (user space; kernel: system calls and TCP; softirq: \
         the network stack's receive work), system calls per request from perf stat's tracepoint \
         counts (the commonest by name), context switches and wake-ups per request from /proc. \
         *under perf*: the median throughput of the rounds with perf over that of the rounds without, \
         and the same for the server's CPU per request (from /proc, which other load on the machine \
         disturbs less).\n\n\
         | server | workload | user µs | kernel µs | softirq µs | CPU µs | syscalls | by name | switches | wake-ups | under perf: req/s, CPU/req | flame graph |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut hardware = None;
    for run in profiled {
        let p = &run["profile"];
        let cpu = |k: &str| p["cpu_us_per_request"][k].as_f64().unwrap_or(f64::NAN);
        let names: Vec<String> = p["syscalls_by_name"]
            .as_object()
            .into_iter()
            .flatten()
            .take(3)
            .map(|(name, n)| format!("{name} {:.2}", n.as_f64().unwrap_or(0.0)))
            .collect();
        let svg = p["flamegraph"].as_str().unwrap_or("");
        let times =
            |key: &str| p["throughput"][key].as_f64().map_or("–".to_string(), |x| format!("{x:.2}×"));
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {:.4} | {:.4} | {}, {} | [{svg}]({svg}) |",
            run["server"].as_str().unwrap_or("?"),
            run["workload"].as_str().unwrap_or("?"),
            cpu("user"),
            cpu("kernel"),
            cpu("softirq"),
            cpu("total"),
            p["syscalls_per_request"].as_f64().unwrap_or(f64::NAN),
            names.join(", "),
            p["context_switches_per_request"].as_f64().unwrap_or(f64::NAN),
            p["wakeups_per_request"].as_f64().unwrap_or(f64::NAN),
            times("ratio"),
            times("cpu_ratio"),
        );
        hardware = hardware.or(p["hardware"].as_str());
    }
    if let Some(reason) = hardware {
        let _ = writeln!(md, "\nHardware counters (cycles, instructions, cache misses): {reason}.");
    }
    let tls: Vec<&Value> = PROFILED
        .iter()
        .flat_map(|w| runs(doc, w))
        .filter(|r| r["profile"]["tls_cpu_us_per_request"].is_object())
        .collect();
    if !tls.is_empty() {
        md.push_str(
            "\nOver TLS, the same samples by what the functions on their stacks do, in µs of server CPU per \
             request (over tls-churn and tls-resume a request is a handshake): *signature* the certificate's \
             ECDSA P-256 signature (ring's `EcdsaKeyPair::sign` and its P-256 assembly; OpenSSL's \
             `ECDSA_do_sign`), *x25519* the key exchange, *record* AES-GCM or ChaCha20 on the records, *hash* \
             SHA-2, HKDF and HMAC (the key schedule, the transcript), *other* the rest of user space (rustls's \
             and the server's own code, allocation, or a library perf could not name), *kernel* system calls \
             and TCP.\n\n\
             | server | workload | signature | x25519 | record | hash | other | kernel |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for run in tls {
            let split = &run["profile"]["tls_cpu_us_per_request"];
            let cell = |k: &str| split[k].as_f64().map_or("–".into(), |x| format!("{x:.1}"));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                run["server"].as_str().unwrap_or("?"),
                run["workload"].as_str().unwrap_or("?"),
                cell("signature"),
                cell("x25519"),
                cell("record"),
                cell("hash"),
                cell("other"),
                cell("kernel"),
            );
        }
    }
    md.push('\n');
    md
}

/// The nginx row the TLS table compares with: one worker where it ran (as lab-epoll), else the
/// first valid nginx row of the workload.
fn nginx_over_tls<'a>(doc: &'a Value, workload: &str) -> Option<&'a Value> {
    let valid = || runs(doc, workload).filter(|r| r["family"] == "real-nginx" && r["valid"] == true);
    valid().find(|r| r["server"] == "real-nginx-1w").or_else(|| valid().next())
}

/// `x` with one decimal, or `–`.
fn us_cell(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{x:.1}"))
}

/// The TLS section: per row and workload the throughput, the server's CPU per request and per
/// handshake, the handshakes it made, and both CPU figures against nginx with ssl; then resumed
/// against full per row, and which thread of each design paid.
fn over_tls(doc: &Value) -> String {
    if !OVER_TLS[1..].iter().any(|w| runs(doc, w).next().is_some()) {
        return String::new();
    }
    let mut md = String::from(
        "## Over TLS: the server's CPU per request and per handshake

",
    );
    if let Some(about) = doc["settings"]["tls"]["about"].as_str() {
        let _ = writeln!(
            md,
            "{about}.
"
        );
    }
    md.push_str(
        "The server's CPU is its own (utime + stime of all its processes, /proc) over the whole run, warm-up \
         included, divided by the responses the clients read and by the handshakes it made over the same \
         span: the project's rows count theirs in /stats (`tls.handshakes`, less the one of the /stats read \
         after the run), nginx's are the ones lab-load made. *× nginx*: the same figure over nginx's \
         (`real-nginx-1w` where it ran) in the same run: per handshake for the churn workloads, per \
         request otherwise. Medians of the valid rounds. *Neither side saturated*: rounds where neither \
         the server nor lab-load had 90% of its CPUs, so other processes had them and the req/s is \
         theirs; the CPU per request and per handshake, the server's own, still hold.\n\n\
         | server | workload | req/s | CPU µs/request | CPU µs/handshake | handshakes full / resumed | × nginx |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut servers: Vec<&str> = Vec::new();
    for w in &OVER_TLS[1..] {
        for r in runs(doc, w) {
            let id = r["server"].as_str().unwrap_or("?");
            if !servers.contains(&id) {
                servers.push(id);
            }
        }
    }
    for id in &servers {
        for w in OVER_TLS {
            let Some(run) = runs(doc, w).find(|r| r["server"] == *id) else { continue };
            let churn = w != "keep-alive" && w != "tls-keep-alive";
            let figure =
                |r: &Value| r[if churn { "cpu_us_per_handshake" } else { "cpu_us_per_request" }].as_f64();
            let ratio = match (figure(run), nginx_over_tls(doc, w).and_then(figure)) {
                (Some(a), Some(b)) if b > 0.0 && run["family"] != "real-nginx" => {
                    format!("**{:.2}×**", a / b)
                }
                _ => "–".into(),
            };
            let rps = if run["valid"] == true {
                let mut cell = grouped(run["rps"]["median"].as_f64().unwrap_or(0.0));
                if run["client_bound"] == true {
                    cell.push_str(" (client-bound)");
                }
                let rounds = run["rounds"].as_array().map_or(0, Vec::len);
                let starved = run["rounds"].as_array().into_iter().flatten();
                let starved = starved.filter(|r| r["neither_saturated"] == true).count();
                if starved > 0 {
                    let _ = write!(cell, " (neither side saturated in {starved} of {rounds})");
                }
                cell
            } else {
                "INVALID".into()
            };
            let handshakes = match (run["handshakes"]["full"].as_f64(), run["handshakes"]["resumed"].as_f64())
            {
                (Some(full), Some(resumed)) => format!("{} / {}", grouped(full), grouped(resumed)),
                _ => "–".into(),
            };
            let _ = writeln!(
                md,
                "| {id} | {w} | {rps} | {} | {} | {handshakes} | {ratio} |",
                us_cell(run["cpu_us_per_request"].as_f64()),
                us_cell(run["cpu_us_per_handshake"].as_f64()),
            );
        }
    }
    // Resumed against full, per row.
    let mut resumption = String::new();
    for id in &servers {
        let per = |w: &str| runs(doc, w).find(|r| r["server"] == *id)?["cpu_us_per_handshake"].as_f64();
        if let (Some(full), Some(resumed)) = (per("tls-churn"), per("tls-resume")) {
            let _ = writeln!(
                resumption,
                "| {id} | {full:.1} | {resumed:.1} | {:.2} | {:.1} |",
                resumed / full,
                full - resumed
            );
        }
    }
    if !resumption.is_empty() {
        md.push_str(
            "\nResumed against full, per row: CPU µs per handshake (TLS 1.3 resumption by ticket skips the \
             certificate and its signature, not the ECDHE exchange).\n\n\
             | server | full | resumed | resumed / full | saved µs |\n|---|---|---|---|---|\n",
        );
        md.push_str(&resumption);
    }
    // Which thread paid.
    let mut threads = String::new();
    for id in &servers {
        for w in &OVER_TLS[1..] {
            let Some(run) = runs(doc, w).find(|r| r["server"] == *id) else { continue };
            let split = &run["thread_cpu_us_per_op"];
            let Some(groups) = split["groups"].as_object() else { continue };
            let cell =
                |g: &str| groups.get(g).and_then(Value::as_f64).map_or("–".into(), |x| format!("{x:.1}"));
            let _ = writeln!(
                threads,
                "| {id} | {w} | {} | {} | {} | {} |",
                split["per"].as_str().unwrap_or("?"),
                cell("main"),
                cell("threads"),
                cell("processes")
            );
        }
    }
    if !threads.is_empty() {
        md.push_str(
            "\nWhich thread pays: the server's CPU per operation (per handshake over the churn workloads, per \
             request over keep-alive) by thread, from /proc/PID/task: *main* is the first process's first thread \
             (lab-memcached's acceptor, lab-ramcloud's dispatcher, lab-epoll's loop, lab-reuseport's \
             supervisor, nginx's master), *threads* that process's others (lab-memcached's and \
             lab-ramcloud's workers, lab-uring's rings), *processes* every thread of the processes below it \
             (lab-reuseport's and nginx's workers).\n\n\
             | server | workload | per | main µs | threads µs | processes µs |\n|---|---|---|---|---|---|\n",
        );
        md.push_str(&threads);
    }
    md.push('\n');
    md
}
