//! rolling-restart: lab-reuseport's workers scaled down and up and replaced (SIGTTIN, SIGTTOU,
//! SIGHUP) under a churn load, with and without a program that migrates a closing socket's queue,
//! and with the kernel's random migration (`tcp_migrate_req=1`) in this experiment's namespace.

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Experiment;
use crate::kernel;
use crate::net;
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "rolling-restart",
    summary: "lab-reuseport scaled and replaced by signal under churn: resets and lost requests with and without migration",
    claim: "Each SO_REUSEPORT socket has its own accept queue; when one closes (a worker removed or \
            replaced), the connections queued on it and its half-open handshakes are reset, unless \
            they migrate: a program attached BPF_SK_REUSEPORT_SELECT_OR_MIGRATE picks where each goes, \
            or net.ipv4.tcp_migrate_req=1 moves them at random. With migration, workers can be added, \
            removed and replaced under load without losing a request.",
    notes: "'Multiple Listener process on the same port: SO_REUSEPORT ... OS creates multiple queues for \
            each process' (and nginx's reload closes them)",
    needs_namespace: true,
    run,
};

/// (label, lab-reuseport's flags, tcp_migrate_req)
const ROWS: [(&str, &[&str], &str); 5] = [
    ("--steer load (migrate on)", &["--steer", "load"], "0"),
    ("--steer load --migrate off", &["--steer", "load", "--migrate", "off"], "0"),
    ("--steer hash --migrate on", &["--steer", "hash", "--migrate", "on"], "0"),
    ("--steer hash (migrate off)", &["--steer", "hash"], "0"),
    ("--steer hash, tcp_migrate_req=1", &["--steer", "hash"], "1"),
];

/// When each signal goes to the supervisor, from the start of the load (the load runs 7 s).
const CHANGES: [(f64, Signal); 4] =
    [(1.0, Signal::SIGTTIN), (2.0, Signal::SIGTTOU), (3.0, Signal::SIGHUP), (5.5, Signal::SIGTTOU)];

/// nginx's `worker_processes` after each reload, at the same moments (it starts with 2).
const NGINX_WORKERS: [usize; 4] = [1, 2, 1, 2];

/// The window after each change whose requests are counted: from the signal to +500 ms.
const WINDOW_MS: f64 = 500.0;
/// A quiet window before the first change, from lab-load's start.
const BASELINE_MS: (f64, f64) = (400.0, 900.0);
/// lab-load's timeline intervals: a window is its intervals from the one the signal fell in.
const INTERVAL_MS: &str = "50";

/// One row's run: lab-load's results, and when each change was made (wall clock, ms).
struct Run {
    results: serde_json::Value,
    changed_at: Vec<f64>,
}

/// Runs lab-load's churn against `addr` for 7 s, calling `change(i)` at each of [`CHANGES`]' moments.
fn churn_with_changes(addr: std::net::SocketAddr, mut change: impl FnMut(usize)) -> Run {
    let started = Instant::now();
    let args = ["--close", "-c", "32", "-d", "7", "--warmup", "0", "--timeline", INTERVAL_MS];
    let load = thread::spawn(move || net::load(addr, "/", &args));
    let mut changed_at = Vec::new();
    for (i, (at, _)) in CHANGES.iter().enumerate() {
        thread::sleep(Duration::from_secs_f64(*at).saturating_sub(started.elapsed()));
        changed_at.push(net::unix_ms());
        change(i);
    }
    Run { results: load.join().unwrap_or_default(), changed_at }
}

/// Resets, lost requests and p99 in the quiet baseline window and after each change, as a line and
/// as JSON.
fn around_changes(run: &Run, names: &[String]) -> (String, serde_json::Value, Vec<net::Window>) {
    let start = run.results["timeline"]["start_unix_ms"].as_f64().unwrap_or(0.0);
    let baseline = net::window(&run.results, start, BASELINE_MS.0, BASELINE_MS.1);
    let windows: Vec<net::Window> =
        run.changed_at.iter().map(|&at| net::window(&run.results, at, 0.0, WINDOW_MS)).collect();
    let p99 = |w: &net::Window| w.p99_ms.map_or("-".to_string(), |p| format!("{p:.1} ms"));
    let mut line = format!("quiet {}", p99(&baseline));
    let mut json = serde_json::Map::new();
    json.insert("baseline".into(), baseline.json());
    for (name, window) in names.iter().zip(&windows) {
        line += &format!("; {name} {} reset, {} lost, p99 {}", window.resets, window.lost, p99(window));
        json.insert(name.clone(), window.json());
    }
    (line, serde_json::Value::Object(json), windows)
}

fn run(report: &mut Report) {
    if let Err(e) = sys::bpf::probe() {
        report.skip(format!("needs bpf(2) for lab-reuseport's programs: {e}"));
        return;
    }
    report.does(
        "for each row, starts lab-reuseport --workers 2 and runs lab-load --close -c 32 -d 7 --timeline 50 \
         (a new connection per request; the run cut into 50 ms intervals); 1 s in sends the supervisor \
         SIGTTIN (a worker more), at 2 s SIGTTOU (one closes its socket), at 3 s SIGHUP (every worker \
         replaced, one at a time), at 5.5 s SIGTTOU; counts lab-load's resets and lost requests over the \
         run and in the 500 ms after each signal, with the p99 there beside that of a quiet window \
         (0.4 to 0.9 s, before any change)",
    );
    let names: Vec<String> = CHANGES
        .iter()
        .map(|(at, signal)| format!("{}@{at}s", signal.as_str().trim_start_matches("SIG")))
        .collect();
    let mut figures = serde_json::Map::new();
    let mut lost_by_row = Vec::new();
    for (label, flags, migrate_req) in ROWS {
        kernel::set_sysctl("net/ipv4/tcp_migrate_req", migrate_req);
        let args: Vec<&str> = ["--workers", "2"].iter().chain(flags).copied().collect();
        let server = net::start("lab-reuseport", &args);
        let (addr, pid) = (server.addr(), Pid::from_raw(server.pid() as i32));
        let run = churn_with_changes(addr, |i| {
            let _ = kill(pid, CHANGES[i].1);
        });
        let results = &run.results;
        let scaling = net::stats(&mut net::connect(addr))["scaling"].clone();
        let errors = &results["errors"];
        let (resets, lost) = (errors["reset"].as_u64().unwrap_or(0), results["lost"].as_u64().unwrap_or(0));
        let (requests, p99) =
            (results["requests"].as_u64().unwrap_or(0), results["latency_us"]["p99"].as_f64());
        let (around_line, around, _) = around_changes(&run, &names);
        report.observe(format!(
            "{label}: {requests} requests, errors {errors}, {lost} lost, p99 {:.1} ms; the supervisor counted {scaling}; around the changes: {around_line}",
            p99.unwrap_or(0.0) / 1000.0
        ));
        figures.insert(
            label.into(),
            serde_json::json!({"requests": requests, "resets": resets, "lost": lost, "p99_us": p99,
                               "scaling": scaling, "around": around}),
        );
        lost_by_row.push((label, lost, scaling));
        drop(server);
    }
    kernel::set_sysctl("net/ipv4/tcp_migrate_req", "0");
    let nginx = nginx_reloads(report, &mut figures);
    report.figure("rows", serde_json::Value::Object(figures));
    let lost = |i: usize| lost_by_row[i].1;
    let changed = lost_by_row.iter().all(|(_, _, scaling)| {
        scaling["added"] == 1 && scaling["removed"] == 2 && scaling["replaced"].as_u64() >= Some(2)
    });
    let counted: Vec<String> = lost_by_row
        .iter()
        .map(|(label, _, s)| format!("{label}: +{} -{} replaced {}", s["added"], s["removed"], s["replaced"]))
        .collect();
    report.check("every row: 1 worker added, 2 removed, every worker replaced", changed, counted.join("; "));
    report.check(
        "with a program deciding migrations (--steer load, or hash --migrate on): no request lost",
        lost(0) == 0 && lost(2) == 0,
        format!("lost {} and {}", lost(0), lost(2)),
    );
    report.check(
        "without migration (tcp_migrate_req=0): the closing sockets' queues are reset: requests lost",
        lost(1) > 0 || lost(3) > 0,
        format!("lost {} and {}", lost(1), lost(3)),
    );
    report.check(
        "tcp_migrate_req=1 migrates at random: no request lost",
        lost(4) == 0,
        format!("lost {}", lost(4)),
    );
    if let Some((nginx_lost, nginx_resets)) = nginx {
        let seen = if nginx_lost + nginx_resets > 0 {
            format!("nginx lost {nginx_lost} ({nginx_resets} resets)")
        } else {
            "nginx's loss not observed this run (its closing sockets' queues were empty when they closed)"
                .into()
        };
        report.check(
            "nginx reloading at the same moments (reuseport, 1↔2 workers) may lose requests; lab-reuseport --steer load loses none",
            lost(0) == 0,
            format!("{seen}; lab-reuseport --steer load lost {}", lost(0)),
        );
    }
}

/// nginx with `listen ... reuseport` under the same load, reloaded at the same moments with
/// `worker_processes` changed 2 → 1 → 2 → 1 → 2; returns its lost requests and resets.
fn nginx_reloads(
    report: &mut Report,
    figures: &mut serde_json::Map<String, serde_json::Value>,
) -> Option<(u64, u64)> {
    use labkit::nginx::{self, Accept, Config};
    let Some(binary) = nginx::find() else {
        report.observe("nginx reloading: not run: nginx is not installed (scripts/install-tools.sh nginx)");
        return None;
    };
    report.does(
        "beside them, nginx with listen ... reuseport and worker_processes 2 (its master holds one socket \
         per worker) under the same load, reloaded (SIGHUP to its master, as nginx -s reload) at the same \
         moments with worker_processes 1, 2, 1, 2",
    );
    let config = |workers| Config { workers, cpus: Vec::new(), accept: Accept::Reuseport, tls: None };
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let server = match nginx::start(&binary, &config(2), &std::env::temp_dir(), ip) {
        Ok(server) => server,
        Err(e) => {
            report.observe(format!("nginx reloading: not run: {e}"));
            return None;
        }
    };
    let mut failed = Vec::new();
    let run = churn_with_changes(server.addr, |i| {
        if let Err(e) = server.reload(&config(NGINX_WORKERS[i])) {
            failed.push(e);
        }
    });
    let names: Vec<String> =
        NGINX_WORKERS.iter().zip(CHANGES).map(|(w, (at, _))| format!("reload→{w}@{at}s")).collect();
    let (around_line, around, _) = around_changes(&run, &names);
    let results = &run.results;
    let errors = &results["errors"];
    let (resets, lost) = (errors["reset"].as_u64().unwrap_or(0), results["lost"].as_u64().unwrap_or(0));
    let (requests, p99) = (results["requests"].as_u64().unwrap_or(0), results["latency_us"]["p99"].as_f64());
    let alerts: Vec<String> = server
        .error_log()
        .lines()
        .filter(|l| l.contains("[emerg]") || l.contains("[alert]"))
        .map(str::to_owned)
        .collect();
    report.observe(format!(
        "nginx reuseport, reloaded 2→1→2→1→2 workers: {requests} requests, errors {errors}, {lost} lost, p99 {:.1} ms; around the reloads: {around_line}{}",
        p99.unwrap_or(0.0) / 1000.0,
        if failed.is_empty() && alerts.is_empty() { String::new() } else { format!("; reload trouble: {failed:?} {alerts:?}") }
    ));
    figures.insert(
        "nginx reuseport, reloads 1↔2 workers".into(),
        serde_json::json!({"requests": requests, "resets": resets, "lost": lost, "p99_us": p99, "around": around}),
    );
    drop(server);
    Some((lost, resets))
}
