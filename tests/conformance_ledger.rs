#![forbid(unsafe_code)]
//! The conformance suite's part for `POST /ledger` and `Idempotency-Key` (docs/spec.md): replay,
//! 422, 409 and the store's bounds, checked from outside against every server of the table.

use std::thread;
use std::time::{Duration, Instant};

use acceptlab_tests::{for_each_server, run_to_exit, spawn, Client, Response, Running};
use serde_json::Value;

/// `POST /ledger{query}` with `body`, and `Idempotency-Key: key` when given (the value as sent).
fn ledger(query: &str, key: Option<&str>, body: &str) -> Vec<u8> {
    let key = key.map(|key| format!("Idempotency-Key: {key}\r\n")).unwrap_or_default();
    format!("POST /ledger{query} HTTP/1.1\r\nHost: t\r\n{key}Content-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

/// Sends `request` on a fresh connection (another worker, or process, may take it) and reads the answer.
fn post(running: &Running, request: &[u8]) -> Response {
    running.connect().request(request)
}

/// The sequence number of a 200 from /ledger.
fn seq(response: &Response) -> u64 {
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("Content-Type"), Some("application/json"), "{response:?}");
    response.json()["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {response:?}"))
}

fn replayed(response: &Response) -> bool {
    response.header("Idempotent-Replayed") == Some("true")
}

/// /stats' `ledger` object.
fn ledger_stats(running: &Running) -> Value {
    running.connect().stats()["ledger"].clone()
}

fn count(ledger: &Value, key: &str) -> u64 {
    ledger[key].as_u64().unwrap_or_else(|| panic!("ledger.{key} is not a count: {ledger}"))
}

#[test]
fn ledger_without_a_key_executes_every_time_and_with_one_once() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let first = seq(&post(&running, &ledger("", None, "pay 5")));
        let second = post(&running, &ledger("", None, "pay 5"));
        assert_eq!(seq(&second), first + 1, "no key: the repeat is a second payment");
        assert!(!replayed(&second), "{second:?}");

        let original = post(&running, &ledger("", Some("\"order-17\""), "pay 5"));
        assert!(!replayed(&original), "the first request with a key executes: {original:?}");
        let kept = seq(&original);
        // Each repeat on a fresh connection, so that on lab-reuseport the kernel's hash sends some
        // of them to the other process: the store must be the whole server's, not one process's.
        for attempt in 0..8 {
            // The same key sent bare instead of quoted is the same key.
            let key = if attempt % 2 == 0 { "\"order-17\"" } else { "order-17" };
            let repeat = post(&running, &ledger("", Some(key), "pay 5"));
            assert!(replayed(&repeat), "repeat {attempt} is not marked as a replay: {repeat:?}");
            assert_eq!(seq(&repeat), kept, "repeat {attempt}: {repeat:?}");
            assert_eq!(repeat.body, original.body);
        }
        let stats = ledger_stats(&running);
        assert_eq!(count(&stats, "appended"), kept, "the 8 repeats executed nothing: {stats}");
        assert_eq!((count(&stats, "replayed"), count(&stats, "keys")), (8, 1), "{stats}");
        assert_eq!(stats["store"], "shared", "{stats}");
        assert_eq!(
            seq(&post(&running, &ledger("", Some("order-18"), "pay 5"))),
            kept + 1,
            "another key executes"
        );
    });
}

#[test]
fn ledger_refuses_a_key_reused_with_another_body_and_bad_requests() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let kept = seq(&post(&running, &ledger("", Some("k"), "pay 5")));
        let other = post(&running, &ledger("", Some("k"), "pay 500"));
        assert_eq!(other.status, 422, "{other:?}");
        assert!(!replayed(&other) && other.text().contains("another request body"), "{other:?}");
        let stats = ledger_stats(&running);
        assert_eq!(
            (count(&stats, "appended"), count(&stats, "mismatches")),
            (kept, 1),
            "422 executes nothing: {stats}"
        );
        // The key still holds its first request's response.
        assert_eq!(seq(&post(&running, &ledger("", Some("k"), "pay 5"))), kept);

        for (request, status) in [
            (ledger("", Some("\"unterminated"), "x"), 400),
            (ledger("", Some("\"\""), "x"), 400),
            (ledger("", Some(&"k".repeat(256)), "x"), 400),
            (ledger("?ms=soon", None, "x"), 400),
            (ledger("?ms=10001", None, "x"), 400),
            (b"GET /ledger HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 405),
        ] {
            let response = post(&running, &request);
            assert_eq!(response.status, status, "{:?}: {response:?}", String::from_utf8_lossy(&request));
            if status == 405 {
                assert_eq!(response.header("Allow"), Some("POST, OPTIONS"), "{response:?}");
            }
        }
        let mut client = running.connect();
        client.send(b"POST /ledger HTTP/1.1\r\nHost: t\r\nIdempotency-Key: a\r\nIdempotency-Key: b\r\nContent-Length: 0\r\n\r\n");
        let twice = client.read_response();
        assert_eq!(twice.status, 400, "a key sent twice: {twice:?}");
        assert!(twice.text().contains("Idempotency-Key"), "{twice:?}");
        assert_eq!(count(&ledger_stats(&running), "appended"), kept, "no refused request executed");
    });
}

#[test]
fn ledger_answers_409_while_the_keys_first_request_executes() {
    const HOLD_MS: u64 = 1500;
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut first = running.connect();
        let started = Instant::now();
        first.send(&ledger(&format!("?ms={HOLD_MS}"), Some("slow"), "pay 5"));
        thread::sleep(Duration::from_millis(150));
        // Sixteen repeats on their own connections while the first holds its thread: where another
        // thread or process can take them, they find the key still executing. Where none can (one
        // event loop; or the kernel's hash put a reuseport connection behind the busy process), the
        // repeat waits and gets the kept response.
        let mut repeats: Vec<Client> = (0..16).map(|_| running.connect()).collect();
        for repeat in &mut repeats {
            repeat.send(&ledger("", Some("slow"), "pay 5"));
        }
        // Each read in a thread of its own, so that a repeat waiting behind the busy worker does
        // not delay the time at which the others' answers are seen.
        let answers: Vec<(Response, Duration)> = thread::scope(|scope| {
            let readers: Vec<_> = repeats
                .iter_mut()
                .map(|repeat| scope.spawn(move || (repeat.read_response(), started.elapsed())))
                .collect();
            readers.into_iter().map(|reader| reader.join().expect("a reader thread")).collect()
        });
        let original = first.read_response();
        let kept = seq(&original);
        let hold = Duration::from_millis(HOLD_MS);
        let mut conflicts = 0;
        for (response, at) in &answers {
            match response.status {
                409 => {
                    conflicts += 1;
                    assert!(*at < hold, "a 409 after the first request finished ({at:?}): {response:?}");
                    assert!(response.text().contains("still executing"), "{response:?}");
                }
                _ => {
                    assert!(
                        replayed(response) && seq(response) == kept,
                        "neither 409 nor the replay: {response:?}"
                    );
                    assert!(*at >= hold, "a replay before the first request had finished ({at:?})");
                }
            }
        }
        let stats = ledger_stats(&running);
        assert_eq!(count(&stats, "appended"), 1, "the first request alone executed: {stats}");
        assert_eq!(count(&stats, "conflicts"), conflicts, "{stats}");
        if server.single_threaded {
            assert_eq!(conflicts, 0, "one event loop executes one request at a time: {stats}");
        } else {
            assert!(conflicts > 0, "no repeat reached another worker while the first executed: {stats}");
        }
        let after = post(&running, &ledger("", Some("slow"), "pay 5"));
        assert!(replayed(&after) && seq(&after) == kept, "{after:?}");
    });
}

#[test]
fn ledger_store_is_bounded_by_entries_and_by_age() {
    for_each_server(|server| {
        let running = spawn(server, &["--idempotency-entries", "2", "--idempotency-age", "1"]);
        let a = seq(&post(&running, &ledger("", Some("a"), "x")));
        seq(&post(&running, &ledger("", Some("b"), "x")));
        let c = seq(&post(&running, &ledger("", Some("c"), "x")));
        let stats = ledger_stats(&running);
        assert_eq!((count(&stats, "keys"), count(&stats, "evicted")), (2, 1), "a made room for c: {stats}");
        assert_eq!((count(&stats, "max_keys"), count(&stats, "max_age_s")), (2, 1), "{stats}");
        assert!(replayed(&post(&running, &ledger("", Some("b"), "x"))), "b is still kept");
        let again = post(&running, &ledger("", Some("a"), "x"));
        assert!(!replayed(&again) && seq(&again) > c, "a ({a}) was evicted: it executes anew: {again:?}");
        // Past the age, every key is gone: c executes again.
        thread::sleep(Duration::from_millis(1100));
        let late = post(&running, &ledger("", Some("c"), "x"));
        assert!(!replayed(&late) && seq(&late) > seq(&again), "c expired: {late:?}");
        let stats = ledger_stats(&running);
        assert!(count(&stats, "expired") >= 2, "{stats}");
        assert_eq!(count(&stats, "keys"), 1, "{stats}");
    });
}

#[test]
fn idempotency_bounds_on_the_command_line_are_checked() {
    for_each_server(|server| {
        for (args, named) in [
            (&["--idempotency-entries", "0"][..], "idempotency-entries"),
            (&["--idempotency-entries", "many"], "idempotency-entries"),
            (&["--idempotency-age", "0"], "idempotency-age"),
            (&["--idempotency-age", "soon"], "idempotency-age"),
        ] {
            let finished = run_to_exit(server, args, Duration::from_secs(5));
            assert_eq!(finished.status.code(), Some(2), "{args:?}: {finished:?}");
            assert!(
                finished.stderr.lines().next().unwrap_or_default().contains(named),
                "{args:?}: {finished:?}"
            );
        }
        let help = run_to_exit(server, &["--help"], Duration::from_secs(5));
        assert!(help.stdout.contains("--idempotency-entries") && help.stdout.contains("--idempotency-age"));
    });
}
