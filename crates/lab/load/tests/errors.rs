//! Every response is checked: each class of error is caught against a small server that misbehaves
//! in one way, and a correct server gives none.

mod support;

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

use support::*;

/// One second of closed-loop load on two connections against `url`, with a short timeout.
fn load(url: &str) -> serde_json::Value {
    run_load(&[url, "-c", "2", "-d", "1", "--warmup", "0", "--timeout", "300ms"])
}

/// The count of each error class, in the order connect, reset, timeout, status, framing.
fn counts(json: &serde_json::Value) -> [f64; 5] {
    ["connect", "reset", "timeout", "status", "framing"].map(|class| number(json, &["errors", class]))
}

/// Serves each connection with `respond` for its first request only, then `after` on the stream.
fn answer_once(respond: &'static [u8], after: fn(TcpStream)) -> String {
    let addr = serve(move |stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        if read_request(&mut reader) {
            let mut writer = stream;
            let _ = writer.write_all(respond);
            after(writer);
        }
    });
    format!("http://{addr}/")
}

#[test]
fn a_correct_server_gives_no_error_and_loses_nothing() {
    let json = load(&format!("http://{}/", good_server()));
    assert_eq!(counts(&json), [0.0; 5], "{}", errors(&json));
    assert_eq!(number(&json, &["lost"]), 0.0);
    assert!(number(&json, &["requests"]) > 100.0, "{json}");
    assert_eq!(number(&json, &["requests"]), number(&json, &["statuses", "200"]));
}

#[test]
fn a_refused_connect_is_a_connect_error() {
    // The local port of a connected client socket: reserved while it lives (no other test's
    // server can take it), and nothing listens on it. The target is 127.0.0.2, which lab-load
    // reaches from 127.0.0.1: to 127.0.0.1:PORT itself, a connect given PORT as its own ephemeral
    // port would meet itself (a TCP self-connect), and read its own request back as a response.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let port = client.local_addr().unwrap().port();
    let json = load(&format!("http://127.0.0.2:{port}/"));
    let [connect, reset, timeout, status, framing] = counts(&json);
    assert!(connect >= 2.0, "{}", errors(&json));
    assert_eq!([reset, timeout, status, framing], [0.0; 4], "{}", errors(&json));
    assert_eq!(number(&json, &["requests"]), 0.0);
    assert!(json["first_errors"]["connect"].as_str().unwrap().contains("refused"), "{}", errors(&json));
}

#[test]
fn a_reset_is_a_reset_error_and_its_request_is_lost() {
    // Closing a socket with unread data in it makes the kernel send RST instead of FIN.
    let addr = serve(|stream| {
        thread::sleep(Duration::from_millis(20));
        drop(stream);
    });
    let json = load(&format!("http://{addr}/"));
    let [connect, reset, timeout, status, framing] = counts(&json);
    assert!(reset >= 2.0, "{}", errors(&json));
    assert_eq!([connect, timeout, status, framing], [0.0; 4], "{}", errors(&json));
    assert!(number(&json, &["lost"]) >= 2.0, "{}", errors(&json));
}

#[test]
fn a_close_before_answering_is_a_reset_error() {
    let addr = serve(|stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        if read_request(&mut reader) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    });
    let [_, reset, timeout, status, framing] = counts(&load(&format!("http://{addr}/")));
    assert!(reset >= 2.0);
    assert_eq!([timeout, status, framing], [0.0; 3]);
}

#[test]
fn no_answer_is_a_timeout_error() {
    let url = answer_once(b"", |stream| {
        thread::sleep(Duration::from_secs(30));
        drop(stream);
    });
    let json = load(&url);
    let [connect, reset, timeout, status, framing] = counts(&json);
    // Two connections, each timing out every 300 ms for a second, then reconnecting.
    assert!((2.0..=12.0).contains(&timeout), "{}", errors(&json));
    assert_eq!([connect, reset, status, framing], [0.0; 4], "{}", errors(&json));
    assert!(number(&json, &["lost"]) >= 2.0);
}

#[test]
fn an_error_status_is_a_status_error() {
    let addr = serve(|stream| {
        answer_each(stream, || {
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops".to_vec()
        })
    });
    let json = load(&format!("http://{addr}/"));
    let [connect, reset, timeout, status, framing] = counts(&json);
    assert_eq!([connect, reset, timeout, framing], [0.0; 4], "{}", errors(&json));
    assert!(status >= number(&json, &["requests"]) && status > 100.0, "{}", errors(&json));
    assert_eq!(number(&json, &["requests"]), number(&json, &["statuses", "500"]));
    assert_eq!(number(&json, &["lost"]), 0.0);
}

#[test]
fn a_content_length_shorter_than_the_body_is_a_framing_error() {
    let url = answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHello, World!", drain);
    let json = load(&url);
    let [connect, reset, timeout, status, framing] = counts(&json);
    assert!(framing >= 2.0, "{}", errors(&json));
    assert_eq!([connect, reset, timeout, status], [0.0; 4], "{}", errors(&json));
}

#[test]
fn a_truncated_body_is_a_framing_error() {
    let url = answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello", |stream| {
        let _ = stream.shutdown(Shutdown::Write);
        drain(stream);
    });
    let json = load(&url);
    let [connect, reset, timeout, status, framing] = counts(&json);
    assert!(framing >= 2.0, "{}", errors(&json));
    assert_eq!([connect, reset, timeout, status], [0.0; 4], "{}", errors(&json));
    assert!(json["first_errors"]["framing"].as_str().unwrap().contains("middle of a body"));
}

#[test]
fn a_content_length_longer_than_the_body_on_an_open_connection_is_a_timeout() {
    let url = answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nHello, World!", drain);
    let json = load(&url);
    let [connect, reset, timeout, status, framing] = counts(&json);
    assert!(timeout >= 2.0, "{}", errors(&json));
    assert_eq!([connect, reset, status, framing], [0.0; 4], "{}", errors(&json));
}

#[test]
fn a_malformed_status_line_is_a_framing_error() {
    let url = answer_once(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", drain);
    let [_, _, _, status, framing] = counts(&load(&url));
    assert!(framing >= 2.0);
    assert_eq!(status, 0.0);
}

#[test]
fn a_bad_command_line_exits_2_with_a_reason() {
    for args in [
        &["http://127.0.0.1:1/", "--close", "--pipeline", "2"][..],
        &["https://127.0.0.1:1/"],
        &["http://127.0.0.1:1/", "-c", "1", "-t", "2"],
        &["http://127.0.0.1:1/", "--mix", "0:/"],
        &["http://127.0.0.1:1/", "-d", "1", "-n", "5"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_lab-load")).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?}");
    }
}

#[test]
fn close_mode_does_not_wait_for_a_server_that_keeps_the_connection_open() {
    // good_server ignores `Connection: close` and waits for the next request.
    let url = format!("http://{}/", good_server());
    let json = run_load(&[&url, "--close", "-c", "2", "-d", "0.5", "--warmup", "0"]);
    assert_eq!(counts(&json), [0.0; 5], "{}", errors(&json));
    assert!(number(&json, &["requests"]) > 100.0, "{json}");
    assert_eq!(number(&json, &["lost"]), 0.0);
}
