//! Off the loopback, as root, against the real binaries: a `--net veth` bench (with RPS), and a
//! bench whose two clients run through `--client-exec "ip netns exec NS"` in namespaces of the
//! test's own, loading one server namespace. Both must be valid, every round's responses equal to
//! the server's own /stats count, and the host's interfaces, named namespaces and sysctls read as
//! before afterwards; and a `--net veth` bench stopped by SIGTERM stops its server and lab-load,
//! deletes its namespaces and exits 128 + 15, the host again as before. Without root (or without
//! ip) each test says SKIPPED on stderr and why.
//! Short on purpose (one server, a second or so of load): CI runs them on 2 cores.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::Signal;
use serde_json::Value;

mod common;
use common::{lab_bench, run_args, running, stop_mid_run, SHORT};

/// The host is checked as a whole before and after each test: never two at once.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Why these tests cannot run here, if they cannot.
fn cannot_run() -> Option<String> {
    let root = fs::metadata("/proc/self").is_ok_and(|me| std::os::unix::fs::MetadataExt::uid(&me) == 0);
    if !root {
        return Some("not root: making network namespaces needs it (CI runs as root)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("ip (iproute2) is not installed".into());
    }
    None
}

/// What must read the same before and after, as (what, how it reads) pairs.
type HostState = Vec<(String, String)>;

/// What must read the same before and after, read here independently of lab-bench.
fn host_state() -> HostState {
    let mut state: Vec<(String, String)> = [
        "net/core/somaxconn",
        "net/core/rps_sock_flow_entries",
        "net/ipv4/tcp_syncookies",
        "net/ipv4/tcp_max_syn_backlog",
        "net/ipv4/ip_local_port_range",
        "net/ipv4/tcp_rmem",
        "net/ipv4/tcp_wmem",
    ]
    .iter()
    .map(|name| (name.to_string(), fs::read_to_string(format!("/proc/sys/{name}")).unwrap_or_default()))
    .collect();
    let ip = |args: &[&str]| {
        let output = Command::new("ip").args(args).output().expect("run ip");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let names: Vec<String> = ip(&["-o", "link"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()))
        .collect();
    state.push(("interfaces (ip -o link)".into(), names.join(" ")));
    state.push(("ip netns list".into(), ip(&["netns", "list"])));
    state
}

/// The start of every test here: `None` where it cannot run (SKIPPED and why on stderr); else the
/// lock that keeps the others out, the host as it reads now, and an empty directory `out` for this
/// test's results.
fn begin(test: &str) -> Option<(MutexGuard<'static, ()>, HostState, PathBuf)> {
    if let Some(reason) = cannot_run() {
        eprintln!("SKIPPED {test}: {reason}");
        return None;
    }
    let alone = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = host_state();
    let out = std::env::temp_dir().join(format!("{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).expect("create the test's directory");
    Some((alone, before, out))
}

fn results(out: &std::path::Path) -> Value {
    serde_json::from_str(&fs::read_to_string(out.join("results.json")).expect("results.json")).unwrap()
}

/// Every run valid, every round's responses (warm-up included) equal to the server's /stats count.
fn assert_valid_and_counted(doc: &Value, expected_runs: usize) {
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), expected_runs, "{runs:?}");
    for run in runs {
        assert_eq!(run["valid"], true, "{run}");
        for round in run["rounds"].as_array().unwrap() {
            let (read, served) = (round["responses_total"].as_u64(), round["server_requests"].as_u64());
            assert!(read.unwrap() > 100, "{round}");
            assert_eq!(read, served, "the clients' responses against the server's /stats: {round}");
        }
    }
}

#[test]
fn a_veth_bench_is_valid_and_leaves_the_host_as_it_was() {
    let Some((_alone, before, out)) = begin("a_veth_bench_is_valid_and_leaves_the_host_as_it_was") else {
        return;
    };
    let mut args = vec!["--net".to_string(), "veth".into(), "--rps".into()];
    args.extend(run_args("epoll", "keep-alive,churn", SHORT, &out));
    let run = lab_bench(&[], &args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "lab-bench --net veth failed: {stderr}");
    let doc = results(&out);
    assert_valid_and_counted(&doc, 2);
    let network = &doc["settings"]["network"];
    assert_eq!(network["net"], "veth", "{network}");
    assert_eq!(network["server_addr"], "10.77.1.1", "{network}");
    assert_eq!(network["host_unchanged"], true, "{network}");
    assert!(network["rps_cpus"].as_str().is_some_and(|mask| !mask.is_empty()), "{network}");
    let client = &doc["machine"]["clients"][0];
    assert!(client["exec"].as_str().unwrap().starts_with("ip netns exec lab-bench-"), "{client}");
    assert!(client["uname"].as_str().unwrap().starts_with("Linux"), "{client}");
    assert_eq!(host_state(), before, "the host after --net veth");
    let _ = fs::remove_dir_all(&out);
}

/// The namespaces of the two-client test: a server namespace joined to each client namespace by
/// a veth pair of its own; deleted when dropped, whatever happened.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn ip(args: &[&str]) {
        let output = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            output.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn make(id: u32) -> Namespaces {
        let server = format!("lbt-{id}-s");
        let clients = [format!("lbt-{id}-c1"), format!("lbt-{id}-c2")];
        let made = Namespaces { names: [server.clone(), clients[0].clone(), clients[1].clone()].to_vec() };
        for name in &made.names {
            Namespaces::ip(&["netns", "add", name]);
            Namespaces::ip(&["-n", name, "link", "set", "lo", "up"]);
        }
        for (i, client) in clients.iter().enumerate() {
            let n = i + 1;
            let (sif, cif) = (format!("lbt{id}s{n}"), format!("lbt{id}c{n}"));
            Namespaces::ip(&[
                "link", "add", &sif, "netns", &server, "type", "veth", "peer", "name", &cif, "netns", client,
            ]);
            Namespaces::ip(&["-n", &server, "addr", "add", &format!("10.78.{n}.1/24"), "dev", &sif]);
            Namespaces::ip(&["-n", client, "addr", "add", &format!("10.78.{n}.2/24"), "dev", &cif]);
            Namespaces::ip(&["-n", &server, "link", "set", &sif, "up"]);
            Namespaces::ip(&["-n", client, "link", "set", &cif, "up"]);
            // The server listens on 10.78.1.1, reached from the second client through its own link.
            Namespaces::ip(&["-n", client, "route", "add", "default", "via", &format!("10.78.{n}.1")]);
        }
        made
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

#[test]
fn two_clients_through_ip_netns_exec_merge_into_one_valid_run() {
    let Some((_alone, before, out)) = begin("two_clients_through_ip_netns_exec_merge_into_one_valid_run")
    else {
        return;
    };
    let id = std::process::id();
    let doc = {
        let namespaces = Namespaces::make(id);
        let (c1, c2) = (
            format!("ip netns exec {}", namespaces.names[1]),
            format!("ip netns exec {}", namespaces.names[2]),
        );
        let mut args: Vec<String> =
            ["--server-addr", "10.78.1.1", "--client-exec", &c1, "--client-exec", &c2]
                .map(String::from)
                .to_vec();
        args.extend(run_args("epoll", "keep-alive,churn", SHORT, &out));
        let run = lab_bench(&["ip", "netns", "exec", &namespaces.names[0]], &args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "lab-bench with two clients failed: {stderr}");
        results(&out)
    };
    assert_valid_and_counted(&doc, 2);
    assert_eq!(doc["settings"]["network"]["server_addr"], "10.78.1.1");
    let machines = doc["machine"]["clients"].as_array().unwrap();
    assert_eq!(machines.len(), 2, "{machines:?}");
    assert!(machines.iter().all(|m| m["nproc"].as_u64() > Some(0)), "{machines:?}");
    for run in doc["runs"].as_array().unwrap() {
        let round = &run["rounds"][0];
        let clients = round["clients"].as_array().unwrap_or_else(|| panic!("no clients in {round}"));
        assert_eq!(clients.len(), 2, "{round}");
        // Both clients loaded the server, and the merged counts are theirs added.
        assert!(clients.iter().all(|c| c["requests"].as_u64() > Some(0)), "{round}");
        let responses: u64 = clients.iter().map(|c| c["responses_total"].as_u64().unwrap()).sum();
        assert_eq!(Some(responses), round["responses_total"].as_u64(), "{round}");
        let rps: f64 = clients.iter().map(|c| c["rps"].as_f64().unwrap()).sum();
        assert!((rps - round["rps"].as_f64().unwrap()).abs() < 1e-6 * rps.max(1.0), "{round}");
        // A percentile of the union lies between the parts' own.
        let p99s: Vec<f64> = clients.iter().map(|c| c["p99_us"].as_f64().unwrap()).collect();
        let p99 = round["p99_us"].as_f64().unwrap();
        assert!(p99 >= p99s[0].min(p99s[1]) && p99 <= p99s[0].max(p99s[1]), "p99 {p99} against {p99s:?}");
    }
    assert_eq!(host_state(), before, "the host after the two-client run");
    let _ = fs::remove_dir_all(&out);
}

#[test]
fn sigterm_stops_the_servers_and_clients_and_deletes_the_namespaces() {
    let Some((_alone, before, out)) =
        begin("sigterm_stops_the_servers_and_clients_and_deletes_the_namespaces")
    else {
        return;
    };
    // A run far longer than the test: only the signal ends it.
    let mut args = vec!["--net".to_string(), "veth".into()];
    args.extend(run_args("epoll", "keep-alive", ["300", "0.1", "1"], &out.join("results")));
    let made = |pid: u32| {
        let names = [format!("lab-bench-{pid}-srv"), format!("lab-bench-{pid}-cli")];
        names.iter().all(|ns| Path::new("/run/netns").join(ns).exists())
    };
    let stopped = stop_mid_run(&args, &out.join("stderr"), "lab-epoll", made, Signal::SIGTERM);
    let stderr = &stopped.stderr;
    assert_eq!(stopped.status.code(), Some(128 + 15), "exits 128 + SIGTERM: {}; {stderr}", stopped.status);
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    let left: Vec<&(u32, String)> = stopped.started.iter().filter(|(p, _)| running(*p)).collect();
    assert!(left.is_empty(), "still running after lab-bench's SIGTERM: {left:?}");
    assert_eq!(host_state(), before, "the host after SIGTERM under --net veth: {stderr}");
    let _ = fs::remove_dir_all(&out);
}
