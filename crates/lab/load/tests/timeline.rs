//! `--timeline MS` against a real server process (lab-epoll): the intervals add up to the run's
//! totals, each interval's histogram holds its responses, and a server that goes away mid-run
//! shows in the intervals after its last response, not before.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn bins(json: &Value) -> &Vec<Value> {
    json["timeline"]["bins"].as_array().unwrap_or_else(|| panic!("no timeline bins: {json:#}"))
}

fn sum(json: &Value, key: &[&str]) -> u64 {
    bins(json).iter().map(|bin| key.iter().fold(bin, |v, k| &v[k]).as_u64().unwrap_or(0)).sum()
}

#[test]
fn the_intervals_add_up_to_the_run() {
    let server = Epoll::start();
    let json = run_load(&[&server.url("/"), "-c", "4", "-d", "0.6", "--warmup", "0.2", "--timeline", "100"]);
    assert_eq!(json["timeline"]["interval_ms"], 100.0);
    assert!(json["timeline"]["start_unix_ms"].as_f64().is_some_and(|t| t > 1.6e12), "{json:#}");
    let bins = bins(&json);
    for (i, bin) in bins.iter().enumerate() {
        assert_eq!(bin["t_ms"].as_f64(), Some(i as f64 * 100.0), "{bin}");
        let responses = bin["responses"].as_u64().unwrap();
        match histwire::decode(&bin["latency_histogram"]) {
            Ok(histogram) => assert_eq!(histogram.len(), responses, "{bin}"),
            Err(_) => assert_eq!(responses, 0, "responses without a histogram: {bin}"),
        }
    }
    assert_eq!(sum(&json, &["responses"]), number(&json, &["responses_total"]) as u64, "warm-up included");
    assert!(sum(&json, &["responses"]) > number(&json, &["requests"]) as u64);
    assert_eq!(sum(&json, &["lost"]), 0, "{}", errors(&json));
    assert_eq!(sum(&json, &["errors", "reset"]) + sum(&json, &["errors", "connect"]), 0, "{}", errors(&json));
    // Without --timeline there is none.
    let plain = run_load(&[&server.url("/"), "-c", "2", "-n", "50", "--warmup", "0"]);
    assert!(plain.get("timeline").is_none(), "{plain:#}");
}

#[test]
fn a_server_that_goes_away_shows_in_the_intervals_after_its_last_response() {
    let mut server = Some(Epoll::start());
    let url = server.as_ref().unwrap().url("/");
    let load = std::thread::spawn(move || {
        run_load(&[&url, "--close", "-c", "4", "-d", "1.2", "--warmup", "0", "--timeline", "50"])
    });
    std::thread::sleep(Duration::from_millis(500));
    drop(server.take()); // killed: every connect from now on is refused
    let json = load.join().expect("lab-load ran");
    let bins = bins(&json);
    let last_response = bins.iter().rposition(|b| b["responses"].as_u64() > Some(0)).expect("responses");
    let first_refused =
        bins.iter().position(|b| b["errors"]["connect"].as_u64() > Some(0)).expect("connect errors");
    assert!(last_response <= first_refused, "a response after a refused connect: {bins:#?}");
    assert!(first_refused + 1 < bins.len(), "refused connects went on to the end");
    for key in ["connect", "reset", "timeout", "status", "framing"] {
        assert_eq!(sum(&json, &["errors", key]), number(&json, &["errors", key]) as u64, "{key}");
    }
    assert_eq!(sum(&json, &["lost"]), number(&json, &["lost"]) as u64);
    assert_eq!(sum(&json, &["responses"]), number(&json, &["responses_total"]) as u64);
}
