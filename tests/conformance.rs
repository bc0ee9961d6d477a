#![forbid(unsafe_code)]
//! The conformance suite: the command line and the HTTP/1.1 service that docs/spec.md promises, checked
//! from outside against every server of the table.

use std::collections::BTreeSet;
use std::fs;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use acceptlab_tests::{
    binary_body, echo, echo_chunked, for_each_server, get, run_to_exit, spawn, Client, Response, Running,
};
use serde_json::Value;

const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
const STDERR_TIMEOUT: Duration = Duration::from_secs(2);
const ONE_MEBIBYTE: usize = 1 << 20;

/// The kernel's cap on listen backlogs.
fn somaxconn() -> u64 {
    let text = fs::read_to_string("/proc/sys/net/core/somaxconn").expect("read somaxconn");
    text.trim().parse().expect("somaxconn is a number")
}

/// Checks what every response must carry: an HTTP/1.1 status line, Content-Length, an IMF-fixdate
/// Date and `Server: acceptlab`.
fn assert_common_headers(response: &Response, request: &str) {
    assert_eq!(response.version, "HTTP/1.1", "{request}: {response:?}");
    let length = response.header("Content-Length");
    assert!(length.is_some_and(|n| n.parse::<usize>().is_ok()), "{request}: Content-Length: {response:?}");
    let date = response.header("Date").unwrap_or_default();
    assert!(date.len() == 29 && date.ends_with(" GMT"), "{request}: Date is not IMF-fixdate: {response:?}");
    assert_eq!(response.header("Server"), Some("acceptlab"), "{request}: {response:?}");
}

/// Sends `request` on a fresh connection and reads its response.
fn exchange(running: &Running, request: &[u8]) -> (Client, Response) {
    let mut client = running.connect();
    // The server may answer and close before it has read all of a bad request.
    let _ = client.try_send(request);
    let response =
        if request.starts_with(b"HEAD ") { client.read_head_response() } else { client.read_response() };
    (client, response)
}

/// `request` as a failure message shows it: escaped, and cut after 120 characters.
fn show(request: &[u8]) -> String {
    let text = String::from_utf8_lossy(request);
    let shown: String = text.chars().take(120).collect();
    format!("{shown:?}")
}

/// The non-negative integer at `value[key]`; fails showing `value` if it is missing or not one.
fn json_count(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or_else(|| panic!("`{key}` is not a count in {value}"))
}

// ---------------------------------------------------------------- the command line

#[test]
fn first_stdout_line_names_the_real_port() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let addr = running.listen_addr();
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        assert_ne!(addr.port(), 0, "the line must give the port the kernel picked");
        assert_eq!(running.connect().get("/").status, 200);
    });
}

#[test]
fn help_and_version_exit_zero() {
    for_each_server(|server| {
        let help = run_to_exit(server, &["--help"], EXIT_TIMEOUT);
        assert!(help.status.success(), "--help: {help:?}");
        let flags = [
            "--addr",
            "--backlog",
            "--workers",
            "--cpus",
            "--max-conns",
            "--idle-timeout",
            "--header-timeout",
            "--no-nodelay",
        ];
        for flag in flags {
            assert!(
                help.stdout.contains(flag) || help.stderr.contains(flag),
                "--help omits {flag}: {help:?}"
            );
        }
        let version = run_to_exit(server, &["--version"], EXIT_TIMEOUT);
        assert!(version.status.success(), "--version: {version:?}");
        let shown = version.stdout + &version.stderr;
        assert!(shown.contains(env!("CARGO_PKG_VERSION")), "--version: {shown:?}");
    });
}

#[test]
fn bad_command_lines_exit_2_with_a_one_line_reason() {
    let cases: &[(&[&str], &str)] = &[
        (&["--backlog", "abc"], "backlog"),
        (&["--frobnicate"], "frobnicate"),
        (&["--max-conns", "many"], "max-conns"),
        (&["--idle-timeout", "soon"], "idle-timeout"),
        (&["--addr", "nowhere"], "addr"),
    ];
    for_each_server(|server| {
        for (args, named) in cases {
            let finished = run_to_exit(server, args, EXIT_TIMEOUT);
            assert_eq!(finished.status.code(), Some(2), "{args:?}: {finished:?}");
            let reason = finished.stderr.lines().find(|line| !line.trim().is_empty()).unwrap_or_default();
            assert!(
                reason.contains(named),
                "{args:?}: first stderr line does not name {named}: {finished:?}"
            );
            assert!(finished.stdout.is_empty(), "{args:?}: wrote to stdout: {finished:?}");
        }
    });
}

#[test]
fn workers_flag_fits_the_architecture() {
    for_each_server(|server| {
        if server.single_threaded {
            let finished = run_to_exit(server, &["--workers", "2"], EXIT_TIMEOUT);
            assert_eq!(finished.status.code(), Some(2), "--workers 2: {finished:?}");
            assert!(finished.stderr.to_lowercase().contains("worker"), "--workers 2: {finished:?}");
            assert_eq!(spawn(server, &["--workers", "1"]).connect().get("/").status, 200);
        } else {
            let running = spawn(server, &["--workers", "2"]);
            assert_eq!(running.connect().get("/").status, 200);
        }
    });
}

#[test]
fn every_documented_flag_is_accepted() {
    for_each_server(|server| {
        let flags =
            ["--backlog", "64", "--max-conns", "100", "--idle-timeout", "0", "--no-nodelay", "--cpus", "0"];
        let running = spawn(server, &flags);
        let mut client = running.connect();
        assert_eq!(client.get("/").status, 200);
        let stats = client.stats();
        for worker in stats["workers"].as_array().expect("workers is an array") {
            if worker["role"] == "shared" {
                continue; // lab-oneshot's counters of what no thread owns: no thread to pin
            }
            assert_eq!(worker["cpu"], 0, "--cpus 0 pins every thread to CPU 0: {stats}");
        }
    });
}

#[test]
fn busy_port_exits_1_naming_bind() {
    for_each_server(|server| {
        let holder = TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
        let addr = holder.local_addr().unwrap().to_string();
        let finished = run_to_exit(server, &["--addr", &addr], EXIT_TIMEOUT);
        assert_eq!(finished.status.code(), Some(1), "{finished:?}");
        assert!(finished.stderr.contains(&format!("bind {addr}")), "{finished:?}");
        assert!(finished.stderr.contains("Address already in use"), "{finished:?}");
    });
}

#[test]
fn unspecified_address_works_and_warns() {
    for_each_server(|server| {
        let running = spawn(server, &["--addr", "0.0.0.0:0"]);
        assert!(running.listen_addr().ip().is_unspecified(), "{}", running.listen_addr());
        assert_eq!(running.connect().get("/").status, 200);
        let stderr = running.wait_stderr(STDERR_TIMEOUT, |text| text.to_lowercase().contains("interface"));
        assert!(stderr.to_lowercase().contains("interface"), "no warning about every interface: {stderr:?}");
    });
}

#[test]
fn backlog_reaches_the_kernel_and_is_capped_with_a_warning() {
    let listener_backlog = |running: &Running| {
        let stats = running.connect().stats();
        json_count(&stats["listeners"][0], "backlog")
    };
    for_each_server(|server| {
        let cap = somaxconn();
        assert_eq!(listener_backlog(&spawn(server, &[])), cap.min(511), "default backlog");
        assert_eq!(listener_backlog(&spawn(server, &["--backlog", "7"])), 7, "--backlog 7");
        let running = spawn(server, &["--backlog", "100000000"]);
        assert_eq!(listener_backlog(&running), cap, "--backlog above somaxconn");
        let stderr = running.wait_stderr(STDERR_TIMEOUT, |text| text.contains("somaxconn"));
        assert!(stderr.contains("somaxconn"), "no somaxconn warning: {stderr:?}");
        assert!(stderr.contains(&cap.to_string()), "the warning omits the effective {cap}: {stderr:?}");
    });
}

#[test]
fn pause_accept_leaves_later_connections_in_the_accept_queue_then_serves_them() {
    const BACKLOG: usize = 3;
    for_each_server(|server| {
        // One worker, so the one accepting thread or process pauses (lab-reuseport pauses per process).
        let running = spawn(server, &["--workers", "1", "--backlog", "3", "--pause-accept", "3"]);
        let mut first = running.connect();
        // Before the first request, so before the pause begins.
        let started = Instant::now();
        assert_eq!(first.get("/").status, 200);
        // The accept queue takes BACKLOG + 1 completed handshakes (the kernel's full test is `>`).
        let queued: Vec<Client> = (0..=BACKLOG).map(|_| running.connect()).collect();
        let stats = first.stats();
        assert_eq!(json_count(&stats["listeners"][0], "accept_queue"), BACKLOG as u64 + 1, "{stats}");
        assert_eq!(json_count(&stats["totals"], "accepted"), 1, "accepted during the pause: {stats}");
        // One more SYN is dropped: its connect does not complete in 300 ms (the retransmit is at 1 s).
        let refused = std::net::TcpStream::connect_timeout(&running.addr(), Duration::from_millis(300));
        assert!(refused.is_err(), "a connection beyond backlog + 1 completed at once");
        assert!(started.elapsed() < Duration::from_secs(3), "too slow to observe the pause");
        for mut client in queued {
            assert_eq!(client.get("/").status, 200, "a queued connection was not served after the pause");
        }
        assert!(started.elapsed() >= Duration::from_secs(3), "served before the pause ended");
    });
}

#[test]
fn stats_reports_the_namespace_kernel_counters() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let stats = running.connect().stats();
        let kernel = stats["kernel"].as_object().unwrap_or_else(|| panic!("no kernel object: {stats}"));
        let names: Vec<&str> = kernel.keys().map(String::as_str).collect();
        let expected = [
            "ListenOverflows",
            "ListenDrops",
            "SyncookiesSent",
            "SyncookiesRecv",
            "SyncookiesFailed",
            "TCPReqQFullDrop",
            "TCPMigrateReqSuccess",
            "TCPMigrateReqFailure",
        ];
        assert_eq!(names, expected, "{stats}");
        for name in expected {
            json_count(&stats["kernel"], name);
        }
    });
}

// ---------------------------------------------------------------- statuses and headers

/// Requests with the status each must get, every one on a fresh connection.
const STATUS_TABLE: &[(&str, u16)] = &[
    ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ("GET /spin?us=0 HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ("GET /spin?us=2000 HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ("HEAD /spin?us=1 HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ("GET /sleep?ms=0 HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ("GET /sleep?ms=5 HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ("GET /stats HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ("HEAD /stats HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 200),
    ("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 200),
    ("GET /spin?us=abc HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /spin?us=2000000 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /spin?us=-1 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /spin?us= HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /spin HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /sleep?ms=-1 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /sleep?ms=10001 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /sleep?ms=x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /sleep HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /nope HTTP/1.1\r\nHost: a\r\n\r\n", 404),
    ("GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n", 404),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 405),
    ("GET /echo HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    ("DELETE /stats HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    ("garbage\r\n\r\n", 400),
    ("GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n", 400),
    ("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400),
    ("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ("GET / HTTP/2.0\r\n\r\n", 505),
    // RFC 9110 §2.5: a later HTTP/1 minor version is served as HTTP/1.1.
    ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 200),
];

#[test]
fn each_request_gets_its_status_with_the_common_headers() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        for (request, status) in STATUS_TABLE {
            let (_, response) = exchange(&running, request.as_bytes());
            assert_eq!(response.status, *status, "{request:?}: {response:?}");
            assert_common_headers(&response, request);
        }
        let oversized = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Fill: {}\r\n\r\n", "a".repeat(9 * 1024));
        let (_, response) = exchange(&running, oversized.as_bytes());
        assert_eq!(response.status, 431, "{}: {response:?}", show(oversized.as_bytes()));
        assert_common_headers(&response, "9 KiB header");
    });
}

/// The same table over TLS (`--tls-cert`): the session behind the TLS layer is the same one, so every
/// request gets the same status, each on a fresh TLS connection.
#[test]
fn each_request_gets_its_status_over_tls() {
    let cert = acceptlab_tests::tls::test_cert();
    for_each_server(|server| {
        let running = spawn(server, &cert.server_args());
        for (request, status) in STATUS_TABLE {
            let mut client = running.connect_tls(&cert.client);
            let _ = client.try_send(request.as_bytes());
            let response = match request.starts_with("HEAD ") {
                true => client.read_head_response(),
                false => client.read_response(),
            };
            assert_eq!(response.status, *status, "over TLS: {request:?}: {response:?}");
            assert_common_headers(&response, request);
        }
    });
}

#[test]
fn root_says_hello_world() {
    for_each_server(|server| {
        let response = spawn(server, &[]).connect().get("/");
        assert_eq!(response.status, 200, "{response:?}");
        assert!(response.header("Content-Type").is_some_and(|t| t.starts_with("text/plain")), "{response:?}");
        assert_eq!(response.header("Content-Length"), Some("13"), "{response:?}");
        assert_eq!(response.text(), "Hello, World!");
    });
}

#[test]
fn head_gives_the_length_but_no_body() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        let mut requests = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        requests.extend(get("/"));
        client.send(&requests);
        let head = client.read_head_response();
        assert_eq!(head.status, 200, "{head:?}");
        assert_eq!(head.header("Content-Length"), Some("13"), "{head:?}");
        assert!(head.header("Content-Type").is_some_and(|t| t.starts_with("text/plain")), "{head:?}");
        // Body bytes after the HEAD response would show up in front of the GET's status line.
        let after = client.read_response();
        assert_eq!((after.status, after.text().as_str()), (200, "Hello, World!"), "{after:?}");
    });
}

#[test]
fn bad_query_values_get_400_and_keep_the_connection() {
    let bad = ["/spin?us=abc", "/spin?us=2000000", "/spin", "/sleep?ms=-1", "/sleep?ms=99999", "/sleep"];
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        for path in bad {
            let response = client.get(path);
            assert_eq!(response.status, 400, "GET {path}: {response:?}");
            assert_ne!(response.header("Connection"), Some("close"), "GET {path}: {response:?}");
            assert_eq!(client.get("/").status, 200, "GET / after GET {path} on the same connection");
        }
    });
}

#[test]
fn spin_and_sleep_take_their_time() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        for (path, at_least) in [("/sleep?ms=300", 300), ("/spin?us=50000", 50)] {
            let started = Instant::now();
            let response = client.get(path);
            let took = started.elapsed();
            assert_eq!(response.status, 200, "GET {path}: {response:?}");
            assert!(took >= Duration::from_millis(at_least), "GET {path} answered in {took:?}");
        }
    });
}

#[test]
fn unknown_path_is_404_and_keeps_the_connection() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        for path in ["/nope", "/echo/more", "/stats/x"] {
            let response = client.get(path);
            assert_eq!(response.status, 404, "GET {path}: {response:?}");
            assert_eq!(client.get("/").status, 200, "GET / after GET {path} on the same connection");
        }
    });
}

#[test]
fn wrong_method_is_405_with_allow() {
    let cases = [
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "GET, HEAD, OPTIONS"),
        ("DELETE /spin?us=1 HTTP/1.1\r\nHost: a\r\n\r\n", "GET, HEAD, OPTIONS"),
        ("PUT /sleep?ms=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "GET, HEAD, OPTIONS"),
        ("POST /stats HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "GET, HEAD, OPTIONS"),
        ("GET /echo HTTP/1.1\r\nHost: a\r\n\r\n", "POST, OPTIONS"),
        ("PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "POST, OPTIONS"),
    ];
    let methods = |list: &str| list.split(',').map(|m| m.trim().to_string()).collect::<BTreeSet<_>>();
    for_each_server(|server| {
        let running = spawn(server, &[]);
        for (request, allow) in cases {
            let (_, response) = exchange(&running, request.as_bytes());
            assert_eq!(response.status, 405, "{request:?}: {response:?}");
            let allowed =
                response.header("Allow").unwrap_or_else(|| panic!("{request:?}: no Allow: {response:?}"));
            assert_eq!(methods(allowed), methods(allow), "{request:?}: {response:?}");
        }
    });
}

/// Sends each request on a fresh connection to every server: each must be answered with `status`,
/// and then the server must close the connection.
fn each_gets_status_then_close<R: AsRef<[u8]> + Sync>(requests: &[R], status: u16) {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        for request in requests {
            let request = request.as_ref();
            let (mut client, response) = exchange(&running, request);
            assert_eq!(response.status, status, "{}: {response:?}", show(request));
            client.expect_closed();
        }
    });
}

#[test]
fn malformed_requests_get_400_and_close() {
    let cases: &[&[u8]] = &[
        b"garbage\r\n\r\n",
        b"\x01\x02\x03\x04\r\n\r\n",
        b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
    ];
    each_gets_status_then_close(cases, 400);
}

#[test]
fn bad_content_length_is_400_and_close() {
    let cases: &[&[u8]] = &[
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ];
    each_gets_status_then_close(cases, 400);
}

#[test]
fn oversized_header_section_gets_431_and_close() {
    let one_long_header = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Fill: {}\r\n\r\n", "a".repeat(9 * 1024));
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        "X-Fill: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(250)
    );
    let never_ending = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Fill: {}", "a".repeat(12 * 1024));
    each_gets_status_then_close(&[one_long_header, many_headers, never_ending], 431);
}

/// RFC 9112's strict cases, sent raw: each is refused with 400 and the connection closed.
#[test]
fn rfc9112_malformed_framing_gets_400_and_close() {
    let chunked = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases = [
        // §3.2: an HTTP/1.1 request without Host, or with two.
        "GET / HTTP/1.1\r\n\r\n".to_string(),
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_string(),
        // §7.1: an empty chunk-size line; a bare LF inside a chunk extension; a bare LF after data.
        format!("{chunked}\r\n5\r\nhello\r\n0\r\n\r\n"),
        format!("{chunked}5;ext=1\nhello\r\n0\r\n\r\n"),
        format!("{chunked}5\r\nhello\n0\r\n\r\n"),
    ];
    each_gets_status_then_close(&cases, 400);
}

/// The trailer section is held to the header section's limit even when it arrives whole.
#[test]
fn oversized_trailer_section_gets_431_and_close() {
    let trailer = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Fill: {}\r\n\r\n",
        "a".repeat(10 * 1024)
    );
    each_gets_status_then_close(&[trailer], 431);
}

#[test]
fn connection_close_wins_over_keep_alive() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        for value in ["close, keep-alive", "keep-alive, close"] {
            let mut client = running.connect();
            let request = format!("GET / HTTP/1.1\r\nHost: a\r\nConnection: {value}\r\n\r\n");
            let response = client.request(request.as_bytes());
            assert_eq!(response.status, 200, "Connection: {value}: {response:?}");
            assert_eq!(response.header("Connection"), Some("close"), "Connection: {value}: {response:?}");
            client.expect_closed();
        }
    });
}

#[test]
fn unsupported_transfer_coding_is_501() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let request = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n";
        let (_, response) = exchange(&running, request);
        assert_eq!(response.status, 501, "{}: {response:?}", show(request));
    });
}

#[test]
fn other_http_versions_are_505() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        for version in ["HTTP/2.0", "HTTP/0.9", "HTTP/3.0"] {
            let request = format!("GET / {version}\r\nHost: a\r\n\r\n");
            let (_, response) = exchange(&running, request.as_bytes());
            assert_eq!(response.status, 505, "{request:?}: {response:?}");
        }
    });
}

// ---------------------------------------------------------------- /echo

#[test]
fn echo_returns_bodies_framed_by_content_length() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        for len in [0, 1, 13, 1000, 65536 + 7] {
            let body = binary_body(len);
            let response = client.request(&echo(&body));
            assert_eq!(response.status, 200, "echo of {len} bytes: {response:?}");
            assert_eq!(response.header("Content-Length"), Some(len.to_string().as_str()));
            assert!(response.body == body, "echo of {len} bytes came back different");
        }
    });
}

#[test]
fn echo_decodes_chunked_bodies() {
    let small_chunks: Vec<Vec<u8>> = (0..2000).map(|i| binary_body(1 + i % 9)).collect();
    let small_chunks: Vec<&[u8]> = small_chunks.iter().map(Vec::as_slice).collect();
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (echo_chunked(&[b"hello", b" ", b"world"]), b"hello world".to_vec()),
        (echo_chunked(&[]), Vec::new()),
        (echo_chunked(&small_chunks), small_chunks.concat()),
        (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n6;flag\r\n world\r\nA\r\n0123456789\r\n0\r\n\r\n"
                .to_vec(),
            b"hello world0123456789".to_vec(),
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              4\r\nwith\r\n9\r\n trailers\r\n0\r\nX-Checksum: 1234\r\nX-More: yes\r\n\r\n"
                .to_vec(),
            b"with trailers".to_vec(),
        ),
    ];
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        for (request, body) in &cases {
            let response = client.request(request);
            assert_eq!(response.status, 200, "{}: {response:?}", show(request));
            assert!(&response.body == body, "{}: echoed {:?}", show(request), response.text());
            // A trailer or chunk left unread would break the next request on this connection.
            assert_eq!(client.get("/").status, 200, "GET / after {}", show(request));
        }
    });
}

#[test]
fn echo_accepts_exactly_one_mebibyte() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        let body = binary_body(ONE_MEBIBYTE);
        let response = client.request(&echo(&body));
        assert_eq!(response.status, 200, "1 MiB echo: {:?}", (response.status, &response.headers));
        assert!(response.body == body, "1 MiB echo came back different");
        let chunks: Vec<&[u8]> = body.chunks(64 * 1024).collect();
        let response = client.request(&echo_chunked(&chunks));
        assert_eq!(response.status, 200, "1 MiB chunked echo: {:?}", (response.status, &response.headers));
        assert!(response.body == body, "1 MiB chunked echo came back different");
    });
}

#[test]
fn body_over_one_mebibyte_gets_413_and_close() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        // The 413 must come on the headers alone: the body is never sent.
        let headers =
            format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", ONE_MEBIBYTE + 1);
        let (mut client, response) = exchange(&running, headers.as_bytes());
        assert_eq!(response.status, 413, "{headers:?}: {response:?}");
        client.expect_closed();

        let body = binary_body(ONE_MEBIBYTE);
        let mut request = echo_chunked(&body.chunks(64 * 1024).collect::<Vec<_>>());
        // Over the limit by one byte, in a last chunk, with no terminating chunk.
        request.truncate(request.len() - b"0\r\n\r\n".len());
        request.extend_from_slice(b"1\r\nX\r\n");
        let (mut client, response) = exchange(&running, &request);
        assert_eq!(response.status, 413, "1 MiB + 1 chunked: {response:?}");
        client.expect_closed();
    });
}

#[test]
fn expect_100_continue_gets_an_interim_response() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        client.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n");
        let interim = client.read_response();
        assert_eq!((interim.version.as_str(), interim.status), ("HTTP/1.1", 100), "{interim:?}");
        assert_eq!(interim.reason, "Continue", "{interim:?}");
        let response = client.request(b"hello world");
        assert_eq!((response.status, response.text().as_str()), (200, "hello world"), "{response:?}");
    });
}

/// RFC 9110 §10.1.1: an HTTP/1.0 client does not know 100 Continue, so it is never sent one.
#[test]
fn http10_expecting_continue_gets_no_interim_response() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        client.send(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        client.set_read_timeout(Duration::from_millis(300));
        let early = client.try_read_response(false);
        assert!(early.is_err(), "an HTTP/1.0 client was answered before sending its body: {early:?}");
        client.set_read_timeout(Duration::from_secs(5));
        let response = client.request(b"hello");
        assert_eq!((response.status, response.text().as_str()), (200, "hello"), "{response:?}");
    });
}

/// Responses leave in request order, interim ones included: the `100 Continue` of a request waits
/// for the answer of the slow request pipelined before it.
#[test]
fn interim_continue_waits_for_the_responses_before_it() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        let mut pipeline = get("/sleep?ms=300");
        pipeline.extend_from_slice(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        );
        client.send(&pipeline);
        let first = client.read_response();
        assert_eq!(first.status, 200, "the slow request's answer comes first: {first:?}");
        let interim = client.read_response();
        assert_eq!(interim.status, 100, "then the interim response: {interim:?}");
        let response = client.request(b"ok");
        assert_eq!((response.status, response.text().as_str()), (200, "ok"), "{response:?}");
    });
}

// ---------------------------------------------------------------- /stats

#[test]
fn stats_has_the_documented_shape() {
    const EARLIER_REQUESTS: u64 = 5;
    let roles: BTreeSet<&str> = ["loop", "acceptor", "dispatcher", "worker", "process", "shared"].into();
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        for _ in 0..EARLIER_REQUESTS {
            assert_eq!(client.get("/").status, 200);
        }
        let response = client.get("/stats");
        assert_eq!(response.status, 200, "{response:?}");
        assert!(
            response.header("Content-Type").is_some_and(|t| t.starts_with("application/json")),
            "{response:?}"
        );
        let stats = response.json();

        assert_eq!(stats["arch"], server.arch(), "{stats}");
        assert_eq!(json_count(&stats, "pid"), u64::from(running.pid()), "{stats}");
        json_count(&stats, "uptime_ms");
        let listener = &stats["listeners"][0];
        assert_eq!(listener["addr"], running.listen_addr().to_string(), "{stats}");
        json_count(listener, "backlog");
        json_count(listener, "accept_queue");

        let workers = stats["workers"].as_array().unwrap_or_else(|| panic!("no workers array: {stats}"));
        assert!(!workers.is_empty(), "{stats}");
        for worker in workers {
            for key in ["id", "accepted", "conns", "requests", "open", "wakeups"] {
                json_count(worker, key);
            }
            let role = worker["role"].as_str().unwrap_or_default();
            assert!(roles.contains(role), "unknown role {role:?}: {stats}");
            assert!(worker["cpu"].is_null() || worker["cpu"].is_u64(), "cpu: {stats}");
        }
        if server.single_threaded {
            assert_eq!(workers.len(), 1, "{stats}");
            assert_eq!(workers[0]["role"], "loop", "{stats}");
        }

        let totals = &stats["totals"];
        let requests = json_count(totals, "requests");
        let summed: u64 = workers.iter().map(|worker| json_count(worker, "requests")).sum();
        assert_eq!(summed, requests, "workers' requests do not add up to totals.requests: {stats}");
        assert!(requests > EARLIER_REQUESTS, "the earlier requests and this one: {stats}");
        assert!(json_count(totals, "accepted") >= 1, "{stats}");
        assert!(json_count(totals, "open") >= 1, "the asking connection is open: {stats}");
        json_count(totals, "rejected");
    });
}

// ---------------------------------------------------------------- connections

#[test]
fn http11_keeps_the_connection_alive() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        for i in 0..100 {
            let response = client.get("/");
            assert_eq!(response.status, 200, "request {i}: {response:?}");
            assert_ne!(response.header("Connection"), Some("close"), "request {i}: {response:?}");
        }
        let stats = client.stats();
        assert_eq!(json_count(&stats["totals"], "accepted"), 1, "one connection served all: {stats}");
    });
}

#[test]
fn connection_close_is_honoured() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        let response = client.request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(response.status, 200, "{response:?}");
        assert!(
            response.header("Connection").is_some_and(|c| c.eq_ignore_ascii_case("close")),
            "{response:?}"
        );
        client.expect_closed();
    });
}

#[test]
fn http10_closes_unless_asked_to_keep_alive() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        let response = client.request(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!((response.status, response.text().as_str()), (200, "Hello, World!"), "{response:?}");
        client.expect_closed();

        let mut client = running.connect();
        for i in 0..3 {
            let response = client.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
            assert_eq!(response.status, 200, "request {i}: {response:?}");
            let connection = response.header("Connection").unwrap_or_default();
            assert!(connection.eq_ignore_ascii_case("keep-alive"), "request {i}: {response:?}");
        }
    });
}

/// What one pipelined request must get back.
enum Expected {
    Hello,
    HeadOnly,
    Echo(Vec<u8>),
    Status(u16),
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut pipeline: Vec<(Vec<u8>, Expected)> = Vec::new();
    for round in 0..20 {
        let first = format!("round {round}: first body").into_bytes();
        let second = format!("round {round}: the second, chunked").into_bytes();
        pipeline.push((get("/"), Expected::Hello));
        pipeline.push((echo(&first), Expected::Echo(first)));
        // A slow request in the first rounds only, to keep the test short.
        if round < 3 {
            pipeline.push((get("/sleep?ms=50"), Expected::Status(200)));
        }
        pipeline.push((get("/"), Expected::Hello));
        pipeline.push((echo_chunked(&[&second[..6], &second[6..]]), Expected::Echo(second)));
        pipeline.push((b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Expected::HeadOnly));
        pipeline.push((get("/nope"), Expected::Status(404)));
    }
    let (requests, expected): (Vec<_>, Vec<_>) = pipeline.into_iter().unzip();
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        client.send(&requests.concat());
        for (i, want) in expected.iter().enumerate() {
            let response = match want {
                Expected::HeadOnly => client.read_head_response(),
                _ => client.read_response(),
            };
            let context = format!("pipelined response {i} to {}", show(&requests[i]));
            match want {
                Expected::Hello => assert_eq!(response.text(), "Hello, World!", "{context}: {response:?}"),
                Expected::HeadOnly => assert_eq!(response.status, 200, "{context}: {response:?}"),
                Expected::Echo(body) => assert!(&response.body == body, "{context}: {response:?}"),
                Expected::Status(status) => assert_eq!(response.status, *status, "{context}: {response:?}"),
            }
        }

        const MANY: usize = 1000;
        client.send(&get("/").repeat(MANY));
        for i in 0..MANY {
            let response = client.read_response();
            assert_eq!(response.text(), "Hello, World!", "response {i} of {MANY} pipelined GET /");
        }
    });
}

/// A client that sends its whole pipeline and then shuts its sending side (`printf ... | nc`) still
/// gets every response, in order, and then the server's close — even past the most requests a
/// connection may have executing at once (lab-ramcloud pauses parsing at 128 in flight).
#[test]
fn a_half_closed_pipeline_is_answered_to_the_end() {
    const MANY: usize = 500;
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        let mut requests = get("/").repeat(MANY);
        requests.extend(echo(b"last"));
        requests.extend_from_slice(b"GET / HTTP/1.1\r\nHost: partial");
        client.send(&requests);
        client.stream().shutdown(std::net::Shutdown::Write).expect("shutdown(SHUT_WR)");
        for i in 0..MANY {
            let response = client.read_response();
            assert_eq!(response.text(), "Hello, World!", "response {i} of {MANY} before the half-close");
        }
        assert_eq!(client.read_response().body, b"last", "the last complete request");
        client.expect_closed();
    });
}

#[test]
fn a_request_sent_byte_by_byte_is_answered() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        let mut requests = echo(b"one byte at a time");
        requests.extend(get("/"));
        for byte in &requests {
            client.send(&[*byte]);
            thread::sleep(Duration::from_millis(2));
        }
        let response = client.read_response();
        assert_eq!((response.status, response.text().as_str()), (200, "one byte at a time"), "{response:?}");
        assert_eq!(client.read_response().text(), "Hello, World!");
    });
}
