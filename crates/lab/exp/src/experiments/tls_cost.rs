//! tls-cost: what TLS costs the server: per request (the record layer), per new connection (a full
//! handshake against a resumed one), and what a flood of handshakes does to each design's accept
//! queue.

use super::Experiment;
use crate::kernel::Counters;
use crate::net;
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "tls-cost",
    summary:
        "TLS per request (the record layer), per new connection (full vs resumed), and a handshake flood",
    claim: "TLS puts the CPU between the bytes and the request: each request is decrypted and its \
            response encrypted, a little dearer than plaintext; each new connection costs a \
            handshake, a key exchange and a signature, tens of requests' worth of CPU; a resumed \
            session skips the certificate and its signature but (TLS 1.3 in rustls) not the key \
            exchange. A flood of new TLS connections is served at the rate the CPU signs, and the \
            accept queue holds the rest.",
    notes: "'raw encrypted TCP data; TLS -> decrypted with the help of HTTPs package we have added -> CPU'",
    needs_namespace: false,
    run,
};

/// The designs of the flood, with one worker each: the same CPU to sign with.
const ROWS: [(&str, &[&str]); 7] = [
    ("lab-epoll", &[]),
    ("lab-memcached", &["--workers", "1"]),
    ("lab-ramcloud", &["--workers", "1"]),
    ("lab-nginx", &["--workers", "1"]),
    ("lab-reuseport", &["--workers", "1"]),
    ("lab-oneshot", &["--workers", "1"]),
    ("lab-uring", &["--workers", "1"]),
];

/// Runs lab-load on `url` with `args`, quietly; returns its JSON report.
fn load(url: &str, args: &[&str]) -> serde_json::Value {
    crate::net::load_url(url, &[args, &["--no-progress"]].concat())
}

/// Server CPU µs per unit of `count(report)` over one lab-load run against `server`.
fn cpu_per(
    server: &labkit::Running,
    url: &str,
    args: &[&str],
    count: fn(&serde_json::Value) -> u64,
) -> (f64, serde_json::Value) {
    let before = labkit::cpu_time(server.pid());
    let report = load(url, args);
    let cpu = labkit::cpu_time(server.pid()).saturating_sub(before);
    (cpu.as_secs_f64() * 1e6 / count(&report).max(1) as f64, report)
}

fn requests(report: &serde_json::Value) -> u64 {
    report["requests"].as_u64().unwrap_or(0)
}

fn handshakes(report: &serde_json::Value) -> u64 {
    report["tls"]["full"].as_u64().unwrap_or(0) + report["tls"]["resumed"].as_u64().unwrap_or(0)
}

fn run(report: &mut Report) {
    report.does(
        "starts lab-epoll with and without --tls-cert (a CA and certificate made by lab-cert) and \
         runs lab-load on it, keep-alive (16 connections, 2 s) and a new connection per request (8 at \
         a time, 2 s), full handshakes and then --tls-resume; the server's CPU time (/proc) over each \
         run, divided by the requests or handshakes lab-load counted. Then each design with one \
         worker and --backlog 8, flooded by 128 clients opening a new connection per request for 1 s, \
         over plaintext and over TLS: lab-load's connect time (the handshake included) and the \
         namespace's ListenOverflows.",
    );
    let cert = labkit::tls::test_cert();
    let ca = cert.files.ca.to_str().expect("a UTF-8 path").to_string();
    let tls_args = cert.server_args();
    let keep_alive = ["-c", "16", "-d", "2", "--warmup", "0.3"];
    let plain = net::start("lab-epoll", &[]);
    let (plain_request, _) = cpu_per(&plain, &format!("http://{}/", plain.addr()), &keep_alive, requests);
    drop(plain);
    let tls = net::start("lab-epoll", &tls_args);
    let url = format!("https://{}/", tls.addr());
    let with_ca = |more: &[&'static str]| -> Vec<String> {
        more.iter().map(|s| s.to_string()).chain(["--cacert".to_string(), ca.clone()]).collect()
    };
    let args = with_ca(&keep_alive);
    let (tls_request, _) =
        cpu_per(&tls, &url, &args.iter().map(String::as_str).collect::<Vec<_>>(), requests);
    let churn = with_ca(&["-c", "8", "--close", "-d", "2", "--warmup", "0.3"]);
    let churn: Vec<&str> = churn.iter().map(String::as_str).collect();
    let (full, full_report) = cpu_per(&tls, &url, &churn, handshakes);
    let mut resume = churn.clone();
    resume.push("--tls-resume");
    let (resumed, resumed_report) = cpu_per(&tls, &url, &resume, handshakes);
    drop(tls);
    report.observe(format!(
        "lab-epoll, server CPU: {plain_request:.1} µs a keep-alive request in plaintext, {tls_request:.1} over \
         TLS; {full:.0} µs a full handshake ({} handshakes), {resumed:.0} µs a resumed one ({} resumed of {})",
        handshakes(&full_report),
        resumed_report["tls"]["resumed"],
        handshakes(&resumed_report),
    ));
    report.figure("cpu_us_per_request_plain", (plain_request * 10.0).round() / 10.0);
    report.figure("cpu_us_per_request_tls", (tls_request * 10.0).round() / 10.0);
    report.figure("cpu_us_per_full_handshake", full.round());
    report.figure("cpu_us_per_resumed_handshake", resumed.round());
    report.check(
        "a request over TLS costs the server more CPU than in plaintext (the record layer)",
        tls_request > plain_request,
        format!("{tls_request:.1} µs against {plain_request:.1}"),
    );
    report.check(
        "a full handshake costs at least 10 keep-alive requests over TLS",
        full >= 10.0 * tls_request,
        format!("{full:.0} µs against {tls_request:.1} µs a request"),
    );
    report.check(
        "a resumed handshake costs less than a full one, and most resumptions succeed",
        resumed < full && resumed_report["tls"]["resumed"].as_u64() > Some(handshakes(&resumed_report) / 2),
        format!(
            "{resumed:.0} µs against {full:.0}; {} resumed of {}",
            resumed_report["tls"]["resumed"],
            handshakes(&resumed_report)
        ),
    );

    let flood = ["-c", "128", "--close", "-d", "1", "--warmup", "0", "--timeout", "5"];
    let mut rows = serde_json::Map::new();
    let mut all_answered = true;
    for (bin, extra) in ROWS {
        if let Some(reason) = labkit::Server::other(bin, bin, &[]).unavailable() {
            report.observe(format!("{bin}: not run ({reason})"));
            continue;
        }
        let mut line = Vec::new();
        for over_tls in [false, true] {
            let mut args: Vec<&str> = extra.to_vec();
            args.extend(["--backlog", "8"]);
            if over_tls {
                args.extend(tls_args);
            }
            let server = net::start(bin, &args);
            let scheme = if over_tls { "https" } else { "http" };
            let mut load_args = flood.to_vec();
            if over_tls {
                load_args.extend(["--cacert", ca.as_str()]);
            }
            let before = Counters::now();
            let results = load(&format!("{scheme}://{}/", server.addr()), &load_args);
            let overflows = before.delta(&Counters::now(), "TcpExt.ListenOverflows");
            drop(server);
            let errors = &results["errors"];
            let broken =
                ["reset", "status", "framing"].iter().map(|c| errors[c].as_u64().unwrap_or(0)).sum::<u64>();
            all_answered &= broken == 0 && requests(&results) > 0;
            let connect_p99 = results["connect"]["latency_us"]["p99"].as_f64().unwrap_or(0.0);
            let rate = results["rps"].as_f64().unwrap_or(0.0);
            line.push(format!(
                "{}: {rate:.0} connections/s, connect p99 {:.1} ms, ListenOverflows +{overflows}",
                if over_tls { "TLS" } else { "plaintext" },
                connect_p99 / 1000.0
            ));
            rows.insert(
                format!("{bin} {}", if over_tls { "tls" } else { "plain" }),
                serde_json::json!({ "per_s": rate.round(), "connect_p99_us": connect_p99, "listen_overflows": overflows, "broken": broken }),
            );
        }
        report.observe(format!("{bin}, one worker, --backlog 8, 128 clients: {}", line.join("; ")));
    }
    report.figure("flood", serde_json::Value::Object(rows));
    report.check(
        "in the flood every design answers every request it takes, over TLS as over plaintext (no reset, status or framing error)",
        all_answered,
        "see the flood figures".to_string(),
    );
}
