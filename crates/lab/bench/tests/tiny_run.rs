//! A tiny bench, end to end: two servers, 0.3 s runs, against the real binaries. It must write
//! results.json in its schema with every run, a summary with the tables, and non-empty charts;
//! `--compare` of a run with itself gives ratios of 1, and `--render` redraws from the JSON.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{run_args, running, stop_mid_run, SHORT};

fn lab_bench<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    common::lab_bench(&[], args)
}

#[test]
fn a_tiny_run_writes_json_summary_and_charts() {
    let out = std::env::temp_dir().join(format!("lab-bench-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let out_arg = out.to_str().unwrap();
    let run = lab_bench(&run_args(
        "epoll,memcached",
        "keep-alive,churn,sweep-uniform,fairness",
        ["0.3", "0.1", "2"],
        &out,
    ));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "lab-bench failed: {stderr}");
    // One progress line per run, with the time left.
    assert!(
        stderr.lines().filter(|l| l.starts_with('[') && l.contains("left")).count() >= 2 * 2 * 2 + 2 * 8 + 2,
        "{stderr}"
    );

    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(doc["schema"], "acceptlab-bench/1");
    for key in ["kernel", "somaxconn", "tcp_syncookies", "tcp_tw_reuse", "ulimit_n", "cpus_online"] {
        assert!(!doc["machine"][key].is_null(), "machine.{key} missing: {}", doc["machine"]);
    }
    assert!(doc["command"].as_str().unwrap().contains("--archs"));
    let runs = doc["runs"].as_array().unwrap();
    let find = |server: &str, workload: &str| {
        runs.iter()
            .find(|r| r["server"] == server && r["workload"] == workload)
            .unwrap_or_else(|| panic!("no {server} {workload} in {runs:?}"))
    };
    for server in ["epoll", "memcached"] {
        for workload in ["keep-alive", "churn"] {
            let r = find(server, workload);
            assert_eq!(r["rounds"].as_array().unwrap().len(), 2, "{r}");
            assert_eq!(r["valid"], true, "a clean server gave errors: {r}");
            assert!(r["rps"]["median"].as_f64().unwrap() > 100.0, "{r}");
            assert!(r["rounds"][0]["client_cpu"].as_f64().unwrap() > 0.0, "lab-load reports its CPU: {r}");
        }
        let sweep = find(server, "sweep-uniform");
        assert!(sweep["capacity_rps"].as_f64().unwrap() > 100.0, "{sweep}");
        let points = sweep["points"].as_array().unwrap();
        assert_eq!(points.len(), 7, "{sweep}");
        let capacity = sweep["capacity_rps"].as_f64().unwrap();
        assert!((points[3]["offered_rps"].as_f64().unwrap() - 0.7 * capacity).abs() <= 1.0, "{sweep}");
        // The model's curve beside every valid point, and its highest load meeting the p99 target.
        let valid = points.iter().filter(|p| p["valid"] == true).count();
        assert_eq!(sweep["model"]["points"].as_array().map(Vec::len), Some(valid), "{sweep}");
        assert!(sweep["model"]["max_load_rps"].as_f64().unwrap() > 0.0, "{sweep}");
        // The model's split of the connections over the workers counts each point's load connections
        // and the one /stats read after them: none of lab-bench's other reads.
        let settings = &doc["settings"];
        let loads = settings["connections_per_client_cpu"].as_u64().unwrap()
            * settings["sweep_client_cpus"].as_array().unwrap().len() as u64;
        let per_point = points.len() as u64 * (loads + 1);
        let counted: u64 =
            sweep["conns_per_worker"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
        assert_eq!(counted, per_point, "{sweep}");
        let fairness = find(server, "fairness");
        assert!(fairness["jain_requests"].as_f64().unwrap() > 0.0, "{fairness}");
        let executing =
            fairness["workers_detail"].as_array().unwrap().iter().filter(|w| w["executes"] == true).count();
        assert_eq!(executing, fairness["workers"].as_u64().unwrap() as usize, "{fairness}");
        // The workers' connections over the run are the loads' and the one /stats read after them
        // (the one before is counted before the run): no /stats reads of the workload's own.
        let conns: u64 =
            fairness["workers_detail"].as_array().unwrap().iter().map(|w| w["conns"].as_u64().unwrap()).sum();
        let loads = fairness["connections"]["heavy"].as_u64().unwrap()
            + fairness["connections"]["light"].as_u64().unwrap();
        assert_eq!(conns, loads + 1, "{fairness}");
    }
    // lab-memcached's fairness is run under each --dispatch policy.
    for policy in ["p2c", "least"] {
        assert_eq!(
            find(&format!("memcached-{policy}"), "fairness")["workers"],
            find("memcached", "fairness")["workers"]
        );
    }
    // memcached's acceptor is not an executing worker; its requests counter stays out of Jain's index.
    let memcached = find("memcached", "fairness");
    assert!(memcached["workers_detail"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["role"] == "acceptor" && w["executes"] == false));

    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("| epoll | 1 |"), "{summary}");
    assert!(summary.contains("## p99 latency against offered load: uniform mix"), "{summary}");
    assert!(summary.contains("## Fairness"), "{summary}");
    assert!(summary.contains("## Each design against its ideal queue"), "{summary}");
    for chart in ["throughput.svg", "latency-uniform.svg", "fairness.svg"] {
        let svg = std::fs::read_to_string(out.join(chart)).unwrap_or_else(|e| panic!("{chart}: {e}"));
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{chart} is not an SVG document"
        );
        assert!(svg.contains("<rect") || svg.contains("<polyline"), "{chart} draws nothing");
        assert!(svg.contains("epoll"), "{chart} does not name the servers");
    }

    let compare = lab_bench(&["--compare", out_arg, out_arg]);
    let text = String::from_utf8_lossy(&compare.stdout);
    assert!(compare.status.success(), "{}", String::from_utf8_lossy(&compare.stderr));
    assert!(
        text.lines().any(|l| l.starts_with("epoll") && l.contains("keep-alive") && l.contains("1.00×")),
        "{text}"
    );

    std::fs::remove_file(out.join("summary.md")).unwrap();
    assert!(lab_bench(&["--render", out_arg]).status.success());
    assert!(Path::new(&out.join("summary.md")).is_file());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_arguments_get_one_line_and_exit_2() {
    let run = lab_bench(&["--workloads", "keepalive", "--no-nginx"]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.starts_with("lab-bench: unknown workload \"keepalive\""), "{stderr}");
    let run = lab_bench(&["--server-cpus", "9999", "--no-nginx"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("CPU 9999 is not one this process may use"));
}

/// Without a usable perf, `--profile` says so in one line and the run goes on, unprofiled.
#[test]
fn profile_without_perf_says_so_once_and_runs_on() {
    let out = std::env::temp_dir().join(format!("lab-bench-noperf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_lab-bench"))
        .env("LAB_BENCH_PERF", "/nonexistent/perf")
        .args(run_args("epoll", "keep-alive", SHORT, &out))
        .arg("--profile")
        .output()
        .expect("run lab-bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "lab-bench failed: {stderr}");
    let about_perf: Vec<&str> = stderr.lines().filter(|l| l.contains("--profile")).collect();
    assert_eq!(about_perf.len(), 1, "{stderr}");
    assert!(about_perf[0].contains("/nonexistent/perf"), "names what failed: {}", about_perf[0]);
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(doc["runs"].as_array().unwrap().len(), 1);
    assert!(doc["runs"][0]["rps"]["median"].as_f64().unwrap() > 0.0);
    assert!(doc["runs"][0].get("profile").is_none());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn churn_runs_on_its_own_split_with_a_server_of_its_own() {
    let out = std::env::temp_dir().join(format!("lab-bench-churn-split-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut args: Vec<String> = ["--server-cpus", "0", "--client-cpus", "1", "--churn-server-cpus", "1"]
        .iter()
        .chain(&["--churn-client-cpus", "0"])
        .map(|w| w.to_string())
        .collect();
    args.extend(run_args("epoll", "keep-alive,churn", SHORT, &out));
    let run = lab_bench(&args);
    assert!(run.status.success(), "lab-bench failed: {}", String::from_utf8_lossy(&run.stderr));
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let find =
        |workload: &str| doc["runs"].as_array().unwrap().iter().find(|r| r["workload"] == workload).unwrap();
    let (keep_alive, churn) = (find("keep-alive"), find("churn"));
    assert_eq!(
        (&keep_alive["cpus"], &keep_alive["client_cpus"]),
        (&serde_json::json!([0]), &serde_json::json!([1]))
    );
    assert_eq!((&churn["cpus"], &churn["client_cpus"]), (&serde_json::json!([1]), &serde_json::json!([0])));
    assert!(keep_alive["valid"] == true && churn["valid"] == true, "{keep_alive} {churn}");
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("Churn: servers on CPUs [1], lab-load on CPUs [0]: given on the command line"),
        "{summary}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// SIGINT in the middle of a run (on loopback: no root needed): the server and lab-load stopped,
/// the scratch directory removed, the exit status 128 + 2. (net.rs does the same with SIGTERM
/// under --net veth, namespaces and all.)
#[test]
fn sigint_stops_the_servers_and_clients_and_exits_130() {
    let out = std::env::temp_dir().join(format!("lab-bench-sigint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    // A run far longer than the test: only the signal ends it.
    let args = run_args("epoll", "keep-alive", ["300", "0.1", "1"], &out.join("results"));
    let stopped =
        stop_mid_run(&args, &out.join("stderr"), "lab-epoll", |_| true, nix::sys::signal::Signal::SIGINT);
    let stderr = &stopped.stderr;
    assert_eq!(stopped.status.code(), Some(128 + 2), "exits 128 + SIGINT: {}; {stderr}", stopped.status);
    assert!(stderr.contains("SIGINT") && stderr.contains("none left"), "{stderr}");
    let left: Vec<&(u32, String)> = stopped.started.iter().filter(|(p, _)| running(*p)).collect();
    assert!(left.is_empty(), "still running after lab-bench's SIGINT: {left:?}");
    let scratch = std::env::temp_dir().join(format!("lab-bench-{}", stopped.pid));
    assert!(!scratch.exists(), "{} is left", scratch.display());
    let _ = std::fs::remove_dir_all(&out);
}
