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

fn run(report: &mut Report) {
    if let Err(e) = sys::bpf::probe() {
        report.skip(format!("needs bpf(2) for lab-reuseport's programs: {e}"));
        return;
    }
    report.does(
        "for each row, starts lab-reuseport --workers 2 and runs lab-load --close -c 32 -d 7 (a new \
         connection per request); 1 s in sends the supervisor SIGTTIN (a worker more), at 2 s SIGTTOU \
         (one closes its socket), at 3 s SIGHUP (every worker replaced, one at a time), at 5.5 s SIGTTOU; \
         counts lab-load's resets and lost requests and reads the p99",
    );
    let mut figures = serde_json::Map::new();
    let mut lost_by_row = Vec::new();
    for (label, flags, migrate_req) in ROWS {
        kernel::set_sysctl("net/ipv4/tcp_migrate_req", migrate_req);
        let args: Vec<&str> = ["--workers", "2"].iter().chain(flags).copied().collect();
        let server = net::start("lab-reuseport", &args);
        let (addr, pid) = (server.addr(), Pid::from_raw(server.pid() as i32));
        let started = Instant::now();
        let load =
            thread::spawn(move || net::load(addr, "/", &["--close", "-c", "32", "-d", "7", "--warmup", "0"]));
        for (at, signal) in CHANGES {
            thread::sleep(Duration::from_secs_f64(at).saturating_sub(started.elapsed()));
            let _ = kill(pid, signal);
        }
        let results = load.join().unwrap_or_default();
        let scaling = net::stats(&mut net::connect(addr))["scaling"].clone();
        let errors = &results["errors"];
        let (resets, lost) = (errors["reset"].as_u64().unwrap_or(0), results["lost"].as_u64().unwrap_or(0));
        let (requests, p99) =
            (results["requests"].as_u64().unwrap_or(0), results["latency_us"]["p99"].as_f64());
        report.observe(format!(
            "{label}: {requests} requests, errors {errors}, {lost} lost, p99 {:.1} ms; the supervisor counted {scaling}",
            p99.unwrap_or(0.0) / 1000.0
        ));
        figures.insert(
            label.into(),
            serde_json::json!({"requests": requests, "resets": resets, "lost": lost, "p99_us": p99, "scaling": scaling}),
        );
        lost_by_row.push((label, lost, scaling));
        drop(server);
    }
    kernel::set_sysctl("net/ipv4/tcp_migrate_req", "0");
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
}
