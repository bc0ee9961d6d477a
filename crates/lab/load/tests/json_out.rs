//! `--json -`: the results on stdout (the summary on stderr), with what a caller merging several
//! lab-loads needs: `responses_total` (warm-up included), equal to what the server answered, and
//! the latency histograms themselves, which decode to the percentiles beside them.

mod support;

use std::io::{BufReader, Write};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use support::*;

#[test]
fn json_on_stdout_counts_every_response_and_carries_its_histograms() {
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    let addr = serve(move |stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        while read_request(&mut reader) {
            counter.fetch_add(1, Ordering::Relaxed);
            if writer.write_all(HELLO).is_err() {
                break;
            }
        }
    });
    let output = Command::new(env!("CARGO_BIN_EXE_lab-load"))
        .args([&format!("http://{addr}/"), "-c", "4", "-d", "0.4", "--warmup", "0.3", "--no-progress"])
        .args(["--json", "-"])
        .output()
        .expect("running lab-load");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("stdout is not the JSON ({e}): {}", String::from_utf8_lossy(&output.stdout))
    });
    assert!(String::from_utf8_lossy(&output.stderr).contains("req/s"), "the summary goes to stderr");
    let (measured, total) = (number(&json, &["requests"]), number(&json, &["responses_total"]));
    assert!(measured > 10.0 && total > measured, "warm-up included: {measured} measured, {total} in all");
    assert_eq!(total as u64, served.load(Ordering::Relaxed), "every response the server wrote was read");
    let histogram = histwire::decode(&json["latency_histogram"]).expect("the histogram decodes");
    assert_eq!(histogram.len() as f64, measured, "one latency per measured response");
    let p99_us = (histogram.value_at_quantile(0.99) as f64 / 100.0).round() / 10.0;
    assert_eq!(p99_us, number(&json, &["latency_us", "p99"]));
    assert!(histwire::decode(&json["uncorrected_latency_histogram"]).is_ok());
}
