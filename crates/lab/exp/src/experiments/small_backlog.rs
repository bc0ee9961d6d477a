//! small-backlog: a backlog of 1 overflows under a burst of new connections, and every overflow
//! costs a client a SYN retransmit: a second.

use super::Experiment;
use crate::kernel::Counters;
use crate::net;
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "small-backlog",
    summary:
        "backlog 1 against 511 under lab-load --close: overflows, connect p99 at the SYN retransmit time",
    claim: "The backlog is the accept queue's capacity. A small one fills in a moment when new \
            connections arrive faster than the backend accepts them; every SYN that finds it full is \
            dropped, and that client waits for its SYN retransmit (1 s): a tail of seconds where a \
            larger backlog would have queued it for microseconds.",
    notes: "'Problems with accepting connections: Small backlog: if you have 6 connection entries for \
            example, this can get filled really quickly'",
    needs_namespace: false,
    run,
};

fn run(report: &mut Report) {
    report.does(
        "for --backlog 1 and then 511: starts lab-epoll and runs lab-load --close -c 64 -d 2 \
         against GET /spin?us=50 (a new connection per request, 64 at a time, each request 50 µs of \
         the server's one thread); reads lab-load's connect latency, errors and throughput, and the \
         TcpExt ListenOverflows delta",
    );
    let mut runs = Vec::new();
    for backlog in ["1", "511"] {
        let server = net::start("lab-epoll", &["--backlog", backlog]);
        let before = Counters::now();
        let results =
            net::load(server.addr(), "/spin?us=50", &["--close", "-c", "64", "-d", "2", "--warmup", "0.2"]);
        let after = Counters::now();
        let overflows = before.delta(&after, "TcpExt.ListenOverflows");
        let connect = &results["connect"]["latency_us"];
        let p99 = connect["p99"].as_f64().unwrap_or(0.0);
        let p50 = connect["p50"].as_f64().unwrap_or(0.0);
        let max = connect["max"].as_f64().unwrap_or(0.0);
        let rps = results["rps"].as_f64().unwrap_or(0.0);
        let errors = net::load_errors(&results);
        let p999 = connect["p999"].as_f64().unwrap_or(0.0);
        let connects = results["connect"]["count"].as_u64().unwrap_or(0);
        report.observe(format!(
            "--backlog {backlog}: {rps:.0} req/s, {connects} connects: p50 {p50:.0} µs, p99 {p99:.0} µs, \
             p99.9 {p999:.0} µs, max {max:.0} µs; errors {errors} {}; ListenOverflows +{overflows}",
            results["errors"]
        ));
        report.figure(
            &format!("backlog_{backlog}"),
            serde_json::json!({ "rps": rps, "connect_p50_us": p50, "connect_p99_us": p99, "connect_max_us": max,
                                "errors": errors, "listen_overflows": overflows }),
        );
        runs.push((overflows, p99, max, rps, errors));
    }
    let (small, large) = (runs[0], runs[1]);
    report.check(
        "backlog 1: the queue overflows (ListenOverflows > 0) and the overflowed clients wait out a SYN retransmit: connect max ≥ 900 ms",
        small.0 > 0 && small.2 >= 900_000.0,
        format!("ListenOverflows +{}, connect p99 {:.0} µs, max {:.0} µs", small.0, small.1, small.2),
    );
    report.check(
        "backlog 511: no overflow, no connect waits for a retransmit (max < 900 ms)",
        large.0 == 0 && large.2 < 900_000.0,
        format!("ListenOverflows +{}, connect max {:.0} µs", large.0, large.2),
    );
    report.observe(format!(
        "throughput with backlog 1 is {:.0}% of that with 511",
        100.0 * small.3 / large.3.max(1.0)
    ));
}
