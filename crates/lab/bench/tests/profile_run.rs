//! `lab-bench --profile` end to end on lab-epoll under keep-alive, with the real perf: the run's
//! `profile` object holds figures that fit what lab-epoll does per request (a read and a sendto,
//! an epoll_wait now and then, CPU in user space and in the kernel), its flame graph names
//! lab-epoll's functions and the kernel's, and summary.md and `--compare` show them.
//!
//! Where perf cannot run (not installed, `perf_event_paranoid`, a container without
//! `perf_event_open`), lab-bench says so in one line and runs unprofiled: this test then says
//! SKIPPED on stderr with that line. `make test` installs perf first (scripts/install-tools.sh).

use serde_json::Value;

mod common;
use common::{lab_bench, run_args, SHORT};

#[test]
fn a_profiled_run_has_a_plausible_profile_object_flame_graph_and_table() {
    let out = std::env::temp_dir().join(format!("lab-bench-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let out_arg = out.to_str().unwrap();
    let mut args = run_args("epoll", "keep-alive", SHORT, &out);
    args.push("--profile".into());
    let run = lab_bench(&[], &args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "lab-bench failed: {stderr}");
    if let Some(line) = stderr.lines().find(|l| l.contains("--profile:") && l.contains("running without it"))
    {
        eprintln!("SKIPPED: perf cannot run here, so nothing was profiled: {line}");
        let _ = std::fs::remove_dir_all(&out);
        return;
    }
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(doc["settings"]["profile"], true);
    let perf_cpus = doc["settings"]["perf_cpus"].as_array().expect("perf_cpus");
    let server_cpus = doc["settings"]["server_cpus"].as_array().unwrap();
    if labkit::allowed_cpus().len() > 1 {
        assert!(perf_cpus.iter().all(|c| !server_cpus.contains(c)), "perf beside the server: {perf_cpus:?}");
    }
    let run = &doc["runs"][0];
    assert_eq!(run["rounds"].as_array().unwrap().len(), 1, "the round without perf only: {run}");
    let p = &run["profile"];
    assert!(p["error"].is_null(), "{p}");

    // Samples of a busy server over 0.5 s, at 499 a second of its CPU time.
    assert!(p["samples"].as_u64().unwrap() >= 10, "{p}");
    let cpu = |k: &str| p["cpu_us_per_request"][k].as_f64().unwrap();
    assert!(cpu("user") > 0.0 && cpu("kernel") > 0.0, "{p}");
    assert!(cpu("total") > 0.5 && cpu("total") < 5000.0, "{p}");
    assert!((cpu("user") + cpu("kernel") + cpu("softirq") - cpu("total")).abs() < 1e-6 * cpu("total"), "{p}");

    // One read and one sendto per request (never fewer: a request comes in one read and goes out
    // in one sendto), an epoll_wait for each batch, and next to nothing else.
    let per_request = p["syscalls_per_request"].as_f64().unwrap();
    let by_name = p["syscalls_by_name"].as_object().unwrap();
    let named = |name: &str| by_name.get(name).and_then(Value::as_f64).unwrap_or(0.0);
    assert!((0.9..1.1).contains(&named("read")), "{p}");
    assert!((0.9..1.1).contains(&named("sendto")), "{p}");
    assert!(named("epoll_wait") > 0.0 && named("epoll_wait") <= 1.1, "{p}");
    assert!((1.8..3.5).contains(&per_request), "{p}");
    // The raw total and the counts by name are two tracepoints each: they must agree.
    let sum: f64 = by_name.values().filter_map(Value::as_f64).sum();
    assert!(sum <= per_request * 1.001 && sum >= per_request * 0.95, "by name {sum} of {per_request}: {p}");
    let switches = p["context_switches_per_request"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&switches), "{p}");
    assert!(p["wakeups_per_request"].as_f64().unwrap() <= switches, "{p}");

    // The window is lab-load's measured one, and the throughput under perf is kept beside it.
    let window = p["window_s"].as_f64().unwrap();
    assert!((0.45..0.8).contains(&window), "{p}");
    assert!(p["requests"].as_f64().unwrap() > 0.0, "{p}");
    assert_eq!(p["throughput"]["rps_with"].as_array().unwrap().len(), 1, "{p}");
    assert!(p["throughput"]["ratio"].as_f64().unwrap() > 0.0, "{p}");

    let svg_name = p["flamegraph"].as_str().unwrap();
    assert_eq!(svg_name, "flame-epoll-keep-alive.svg");
    let svg = std::fs::read_to_string(out.join(svg_name)).unwrap();
    assert!(svg.contains("epoll, keep-alive"), "titled with server and workload");
    assert!(svg.contains("lab_epoll::"), "no frame of lab-epoll's own functions");
    assert!(svg.contains("tcp_sendmsg"), "no frame of the kernel's TCP");

    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("## Where the time goes"), "{summary}");
    assert!(summary.contains("(flame-epoll-keep-alive.svg)"), "{summary}");

    let compare = lab_bench(&[], &["--compare", out_arg, out_arg]);
    let text = String::from_utf8_lossy(&compare.stdout);
    assert!(compare.status.success(), "{}", String::from_utf8_lossy(&compare.stderr));
    for row in
        ["user µs/req", "kernel µs/req", "softirq µs/req", "CPU µs/req", "syscalls/req", "switches/req"]
    {
        assert!(text.lines().any(|l| l.contains(row)), "no {row} in {text}");
    }
    for row in ["user µs/req", "kernel µs/req", "CPU µs/req", "syscalls/req"] {
        let line = text.lines().find(|l| l.contains(row)).unwrap();
        assert!(line.ends_with("1.00×"), "{line}");
    }
    let _ = std::fs::remove_dir_all(&out);
}
