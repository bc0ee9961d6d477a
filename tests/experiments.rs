#![forbid(unsafe_code)]
//! lab-exp's deterministic experiments, run as `lab-exp NAME --json` and asserted on their figures:
//! each claim's effect must be there, measured from the kernel, not only a verdict.
//!
//! lab-exp makes a network namespace of its own for each experiment; where it cannot (not root),
//! it says so, the experiments that need one report `skipped`, and these tests print why.

use std::process::Command;
use std::sync::Mutex;

use acceptlab_tests::bin_path;
use serde_json::Value;

/// One experiment at a time: they time kernel behaviour (retransmits, delayed ACKs) and compare
/// throughput with and without a bad client, which other experiments' load on the same few cores
/// would blur.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `lab-exp NAME --json`; returns the report, or `None` (printing why) if it was skipped.
fn experiment(name: &str) -> Option<Value> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let output = Command::new(bin_path("lab-exp")).args([name, "--json"]).output().expect("run lab-exp");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("lab-exp {name} --json is not JSON ({e}); stderr: {stderr}"));
    if report["verdict"] == "skipped" {
        println!("lab-exp {name} skipped: {}", report["skipped"]);
        return None;
    }
    assert_eq!(report["verdict"], "agrees", "lab-exp {name}: {report:#}\nstderr: {stderr}");
    assert_eq!(output.status.code(), Some(0), "lab-exp {name} agrees but exits {:?}", output.status);
    let checks = report["checks"].as_array().expect("checks");
    assert!(
        checks.iter().any(|c| c["expect"].as_str().unwrap_or("").contains("host's sysctls")),
        "{report:#}"
    );
    Some(report)
}

fn count(report: &Value, key: &str) -> i64 {
    report["figures"][key].as_i64().unwrap_or_else(|| panic!("figure {key} is not a number: {report:#}"))
}

#[test]
fn accept_queue_holds_backlog_plus_one_then_drops_syns() {
    let Some(report) = experiment("accept-queue") else { return };
    let backlog = count(&report, "backlog");
    let clients = count(&report, "clients");
    assert_eq!(count(&report, "completed_at_once"), backlog + 1);
    assert_eq!(count(&report, "ss_recv_q"), backlog + 1);
    assert_eq!(count(&report, "stats_accept_queue"), backlog + 1);
    assert_eq!(count(&report, "ss_send_q"), backlog);
    assert_eq!(count(&report, "syn_sent_clients"), clients - backlog - 1);
    assert!(count(&report, "listen_overflows") >= clients - backlog - 1);
    if report["ran_in"].as_str().unwrap_or_default().contains("namespace of its own") {
        assert_eq!(
            count(&report, "stats_kernel_listen_overflows"),
            count(&report, "netstat_listen_overflows")
        );
    } else {
        println!("accept-queue ran on the host's loopback: /stats kernel counters are the host's, shared");
    }
    assert!(count(&report, "stats_kernel_listen_overflows") >= count(&report, "listen_overflows"));
    let stalled = report["figures"]["stalled_connect_ms"].as_array().expect("stalled_connect_ms");
    assert_eq!(stalled.len() as i64, clients - backlog - 1);
    // Let in by a SYN retransmit (a whole second after connect), after the pause, not at its end.
    let pause = report["figures"]["pause_ms"].as_f64().expect("pause_ms");
    assert!(
        stalled.iter().filter_map(|t| t.as_f64()).all(|t| t >= pause && t % 1000.0 < 300.0),
        "{stalled:?} against a pause of {pause} ms"
    );
    assert_eq!(count(&report, "served_after_resume"), clients);
}

#[test]
fn syn_flood_shuts_out_without_cookies_and_not_with_them() {
    let Some(report) = experiment("syn-flood") else { return };
    let off = &report["figures"]["syncookies_0"];
    let on = &report["figures"]["syncookies_1"];
    for phase in [off, on] {
        assert!(phase["half_open"].as_u64().unwrap_or(0) >= 8, "{phase}");
        assert_eq!(phase["half_open"], phase["ss_syn_recv"], "{phase}");
        assert_eq!(phase["flood_connected"], 0, "{phase}");
    }
    assert!(off["legit_ms"].is_null(), "a legitimate client got in without cookies: {off}");
    assert!(off["TCPReqQFullDrop"].as_i64().unwrap_or(0) > 0, "{off}");
    assert!(on["legit_ms"].as_f64().is_some_and(|t| t < 500.0), "{on}");
    assert!(
        on["SyncookiesSent"].as_i64().unwrap_or(0) > 0 && on["SyncookiesRecv"].as_i64().unwrap_or(0) >= 1,
        "{on}"
    );
}

#[test]
fn slow_reader_fills_the_receive_buffer_and_blocks_the_sender() {
    let Some(report) = experiment("slow-reader") else { return };
    let sent = count(&report, "sent");
    assert!(sent < count(&report, "request_bytes"));
    assert_eq!(count(&report, "server_recv_q") + count(&report, "client_send_q"), sent);
    assert!(count(&report, "server_recv_q") * 2 >= count(&report, "server_rcvbuf"));
    assert!(count(&report, "zero_window_probes") >= 1);
}

#[test]
fn non_reading_client_is_held_in_the_kernel_not_in_the_server() {
    let Some(report) = experiment("non-reading-client") else { return };
    assert!(count(&report, "server_send_q") > 0);
    assert!(count(&report, "client_recv_q") > 0);
    // Unread bytes stay in the server's Recv-Q through the load: it stopped reading that client.
    // How many is the receive window at that moment, which autotuning sizes (51 KiB to 700 KiB seen).
    assert!(count(&report, "server_recv_q") > 0);
    assert_eq!(count(&report, "server_recv_q_after_load"), count(&report, "server_recv_q"));
    assert!(count(&report, "rss_growth_kib") < 2048);
    assert_eq!(count(&report, "errors_with"), 0);
}

#[test]
fn nagle_with_delayed_ack_costs_forty_milliseconds_a_request() {
    let Some(report) = experiment("nagle") else { return };
    let runs = &report["figures"]["runs"];
    let median = |key: &str| runs[key]["median_ms"].as_f64().unwrap_or_else(|| panic!("{key}: {runs}"));
    assert!(median("client_nagle_server_nodelay") >= 30.0, "{runs}");
    assert!(median("client_nagle_server_nagle") >= 30.0, "{runs}");
    assert!(median("client_nodelay_server_nodelay") < 5.0, "{runs}");
    assert!(median("client_nodelay_server_nagle") < 5.0, "{runs}");
    assert!(runs["client_nagle_server_nodelay"]["delayed_acks"].as_i64().unwrap_or(0) >= 10, "{runs}");
}

#[test]
fn bind_interface_reaches_exactly_the_bound_addresses() {
    let Some(report) = experiment("bind-interface") else { return };
    let table = &report["figures"]["reachability"];
    let reached = |bind: &str| -> Vec<bool> {
        let row = table[bind].as_object().unwrap_or_else(|| panic!("{bind}: {table}"));
        ["inside via lo 127.0.0.1", "inside to 10.77.0.1", "outside, through the veth, to 10.77.0.1"]
            .iter()
            .map(|target| row[*target] == "connected")
            .collect()
    };
    assert_eq!(reached("127.0.0.1"), [true, false, false]);
    assert_eq!(reached("10.77.0.1"), [false, true, true]);
    assert_eq!(reached("0.0.0.0"), [true, true, true]);
    assert_eq!(table["0.0.0.0"]["warned"], true);
    assert_eq!(table["127.0.0.1"]["warned"], false);
}

#[test]
fn idempotency_key_stops_the_retried_request_executing_twice() {
    let Some(report) = experiment("idempotency") else { return };
    let requests = count(&report, "requests");
    let servers = report["figures"]["servers"].as_object().expect("servers");
    for row in labkit::SERVERS.iter().map(|server| server.name).chain(["reuseport-per-process"]) {
        let figures = &servers[row];
        assert_eq!(figures["without_key"]["executions"].as_i64(), Some(2 * requests), "{row}: {figures}");
        if row == "reuseport-per-process" {
            assert_eq!(figures["store"], "per-process", "{figures}");
            let twice = figures["with_key"]["duplicated"].as_i64().unwrap_or(-1);
            assert!(
                twice > 0 && twice < requests,
                "a store per process: some retries land elsewhere: {figures}"
            );
            assert_eq!(figures["with_key"]["executions"].as_i64(), Some(requests + twice), "{figures}");
        } else {
            assert_eq!(figures["store"], "shared", "{row}: {figures}");
            assert_eq!(figures["with_key"]["executions"].as_i64(), Some(requests), "{row}: {figures}");
            assert_eq!(figures["with_key"]["replayed"].as_i64(), Some(requests), "{row}: {figures}");
        }
    }
    // Which requests curl retries by itself (where curl is installed).
    if let Some(curl) = report["figures"].get("curl") {
        let attempts =
            |case: &str| curl[case]["attempts"].as_i64().unwrap_or_else(|| panic!("{case}: {curl}"));
        assert_eq!(attempts("POST, fresh connection"), 1, "{curl}");
        assert_eq!(attempts("POST, fresh, --retry 3"), 1, "{curl}");
        let keyed = &curl["POST with Idempotency-Key, reused connection"];
        assert_eq!(keyed["executions"], 1, "{curl}");
        let reused = &curl["POST, reused keep-alive connection"];
        assert_eq!(reused["executions"], reused["attempts"], "{curl}");
    } else {
        println!("curl is not installed: its cases were not run");
    }
}

#[test]
fn layer_7_balancing_spreads_requests_and_separates_the_heavy_connections() {
    let Some(report) = experiment("l4-vs-l7") else { return };
    let (l4, l7) = (&report["figures"]["l4"], &report["figures"]["l7"]);
    let number = |value: &Value, key: &str| value[key].as_f64().unwrap_or_else(|| panic!("{key}: {value}"));
    assert!(number(l7, "jain") > number(l4, "jain") + 0.1, "{l4} {l7}");
    assert!(number(l7, "jain") > 0.9, "{l7}");
    // The median, not the p99: a tie in requests in flight can still put one heavy request behind
    // the other under layer 7 now and then; under layer 4 every one of them waits.
    assert!(number(l7, "heavy_p50_ms") < 0.75 * number(l4, "heavy_p50_ms"), "{l4} {l7}");
    // Layer 4: both heavy connections on one backend, which executed nothing else, and both light
    // ones on the other (the round-robin turn follows the order the connections opened).
    let mut per_backend: Vec<i64> =
        l4["per_backend"].as_array().expect("per_backend").iter().filter_map(Value::as_i64).collect();
    per_backend.sort_unstable();
    let requests = |key: &str| l4[key].as_i64().unwrap_or_else(|| panic!("{key}: {l4}"));
    let (heavy, light) = (requests("heavy_requests"), requests("light_requests"));
    assert!(light > heavy && per_backend == [heavy, light], "{l4}");
}

#[test]
fn copy_on_write_copies_exactly_the_pages_the_child_writes() {
    let Some(report) = experiment("copy-on-write") else { return };
    let touched = count(&report, "touched_kib") as f64;
    let runs = report["figures"]["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 4);
    for run in runs {
        let fraction = run["fraction"].as_f64().expect("fraction");
        let after = &run["after_write"];
        let kib = |key: &str| after[key].as_f64().unwrap_or_else(|| panic!("{key}: {run}"));
        let copied = fraction * touched;
        let near = |measured: f64, expected: f64| {
            (measured - expected).abs() <= (0.1 * expected).max(0.01 * touched)
        };
        assert!(near(kib("child_private_dirty_kib"), copied), "{run}");
        assert!(near(kib("parent_private_dirty_kib"), copied), "{run}");
        assert!(near(kib("child_pss_kib"), copied + (touched - copied) / 2.0), "{run}");
        assert!(
            run["after_fork"]["child_private_dirty_kib"].as_f64().is_some_and(|k| k <= 0.01 * touched),
            "{run}"
        );
    }
}

#[test]
fn a_uring_ring_not_reaped_leaves_its_accept_queue_to_fill() {
    let Some(report) = experiment("uring-accept-queue") else { return };
    let backlog = count(&report, "backlog");
    let clients = count(&report, "clients");
    assert_eq!(count(&report, "completed_at_once"), backlog + 1);
    assert_eq!(count(&report, "ss_recv_q"), backlog + 1);
    assert_eq!(count(&report, "syn_sent_clients"), clients - backlog - 1);
    assert!(count(&report, "listen_overflows") >= clients - backlog - 1);
    assert_eq!(count(&report, "ss_recv_q_after"), 0);
    assert_eq!(count(&report, "served_after_hold"), clients);
}
