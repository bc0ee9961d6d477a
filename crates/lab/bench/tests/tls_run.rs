//! lab-bench's TLS workloads end to end, against the real binaries: lab-epoll over TLS (and nginx
//! with `ssl` beside it where nginx is installed; else the test says SKIPPED for that row), a
//! connection per request with every handshake full (tls-churn) and with them resumed by ticket
//! (tls-resume). Every run must have the server's CPU per request and per handshake, the
//! handshakes it made of the right kind, and a row that cannot serve HTTPS (a user's `--server`)
//! must be skipped in one line. No timing is asserted.

use serde_json::Value;

mod common;
use common::lab_bench;

#[test]
fn tls_churn_and_resume_have_cpu_per_handshake_and_handshakes_of_their_kind() {
    let out = std::env::temp_dir().join(format!("lab-bench-tls-{}", std::process::id()));
    let certs = out.join("cert");
    let _ = std::fs::remove_dir_all(&out);
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .any(|p| std::path::Path::new(p).is_file());
    let args = [
        "--archs",
        "epoll,real-nginx-1w,mine",
        "--server",
        "mine=exec sleep 60",
        "--server-cpus",
        "0",
        "--client-cpus",
        if labkit::allowed_cpus().len() > 1 { "1" } else { "0" },
        "--workloads",
        "tls-churn,tls-resume",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--rounds",
        "1",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let run = lab_bench(&[], &args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "lab-bench failed: {stderr}");
    // The certificate was missing, so lab-bench made it, as make cert would.
    assert!(stderr.contains("made a CA and a server certificate in"), "{stderr}");
    for file in ["ca.pem", "server.pem", "server.key"] {
        assert!(certs.join(file).is_file(), "no {file} in {}", certs.display());
    }
    let skipped: Vec<&str> =
        stderr.lines().filter(|l| l.contains("cannot tell them to serve HTTPS")).collect();
    assert_eq!(skipped.len(), 1, "one line for the row that cannot serve HTTPS: {stderr}");
    assert!(skipped[0].contains("skip mine"), "{}", skipped[0]);

    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert!(doc["settings"]["skipped_tls"].as_str().unwrap().contains("mine"), "{}", doc["settings"]);
    let runs = doc["runs"].as_array().unwrap();
    assert!(runs.iter().all(|r| r["server"] != "mine"), "the skipped row ran: {runs:?}");
    let find = |server: &str, workload: &str| {
        runs.iter().find(|r| r["server"] == server && r["workload"] == workload).cloned()
    };
    let mut rows = vec![("epoll", "server /stats")];
    if nginx {
        rows.push(("real-nginx-1w", "lab-load"));
    } else {
        eprintln!("SKIPPED: nginx is not installed, so nginx with ssl was not run beside lab-epoll");
    }
    for (server, counted_by) in rows {
        for workload in ["tls-churn", "tls-resume"] {
            let r = find(server, workload).unwrap_or_else(|| panic!("no {server} {workload} in {runs:?}"));
            assert_eq!(r["valid"], true, "{r}");
            let per_handshake = r["cpu_us_per_handshake"].as_f64().unwrap_or(0.0);
            let per_request = r["cpu_us_per_request"].as_f64().unwrap_or(0.0);
            assert!(per_handshake > 0.0 && per_request > 0.0, "CPU per handshake and per request: {r}");
            let (full, resumed) =
                (r["handshakes"]["full"].as_f64().unwrap(), r["handshakes"]["resumed"].as_f64().unwrap());
            let round = &r["rounds"][0];
            assert_eq!(round["handshakes"]["from"], counted_by, "{r}");
            assert!(round["thread_cpu_s"]["main"].is_number(), "{r}");
            if workload == "tls-churn" {
                assert!(full > 0.0 && resumed == 0.0, "every handshake full: {r}");
            } else {
                // Each connection's first handshake is full; the rest resume by ticket.
                assert!(resumed > full, "most handshakes resumed: {r}");
            }
        }
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("## Over TLS: the server's CPU per request and per handshake"), "{summary}");
    assert!(summary.contains("| epoll | tls-churn |"), "{summary}");
    assert!(summary.contains("Resumed against full"), "{summary}");
    let _ = std::fs::remove_dir_all(&out);
}
