//! `--server NAME='COMMAND'`: a server lab-bench knows nothing of, started by `sh -c` with its
//! placeholders filled in, gives valid keep-alive and churn rows, the workloads that need the lab's
//! routes say in one line that they skip it, and nothing it started is left running afterwards. The
//! server here is a shell that forks: lab-epoll and a sleeping child in the background, then waits
//! for them, each process writing its pid to a file so the test can look for it afterwards.

use std::fs;

use serde_json::Value;

mod common;
use common::running;

#[test]
fn a_users_forking_server_gives_valid_rows_and_leaves_no_process_behind() {
    let dir = std::env::temp_dir().join(format!("lab-bench-user-server-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let pids = dir.join("pids");
    let epoll = labkit::find_bin("lab-epoll").expect("lab-epoll is built (cargo build --release)");
    let command = format!(
        "{} --addr {{addr}} --cpus {{cpus}} >/dev/null & echo $! >> {pids}; sleep 600 & echo $! >> {pids}; \
         echo $$ >> {pids}; wait",
        epoll.display(),
        pids = pids.display()
    );
    let out = dir.join("out");
    let args = [
        "--server".to_string(),
        format!("tiny={command}"),
        "--archs".into(),
        "tiny".into(),
        "--workloads".into(),
        "keep-alive,churn,fairness".into(),
        "--duration".into(),
        "0.3".into(),
        "--warmup".into(),
        "0.1".into(),
        "--rounds".into(),
        "1".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    let run = common::lab_bench(&[], &args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "lab-bench failed: {stderr}");
    assert!(
        stderr.contains("fairness skip tiny: they serve none of the lab's routes (/spin, /stats)"),
        "one line on why fairness skips it: {stderr}"
    );

    let doc: Value = serde_json::from_str(&fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for workload in ["keep-alive", "churn"] {
        let row = doc["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["server"] == "tiny" && r["workload"] == workload)
            .unwrap_or_else(|| panic!("no tiny {workload} row: {doc}"));
        assert_eq!(row["valid"], true, "{row}");
        assert!(row["rps"]["median"].as_f64().unwrap() > 100.0, "{row}");
        assert!(row["count_check"].as_str().unwrap().starts_with("skipped"), "{row}");
        assert!(row["configuration"].as_str().unwrap().contains("sh -c"), "{row}");
        assert_eq!(row["family"], "user", "{row}");
    }
    assert!(
        !doc["runs"].as_array().unwrap().iter().any(|r| r["workload"] == "fairness"),
        "fairness skipped it"
    );
    assert_eq!(doc["settings"]["left_behind"], serde_json::json!([]), "{}", doc["settings"]);
    assert!(doc["settings"]["containment"].is_string(), "{}", doc["settings"]);

    // The shell, lab-epoll and the sleeping child, for each time the server was started: all gone.
    let started: Vec<u32> =
        fs::read_to_string(&pids).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert!(started.len() >= 3, "the shell wrote its pids: {started:?}");
    let left: Vec<u32> = started.iter().copied().filter(|&pid| running(pid)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let summary = fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("no process left behind"), "{summary}");
    let _ = fs::remove_dir_all(&dir);
}
