#![forbid(unsafe_code)]
//! TLS (`--tls-cert`, `--tls-key`) against every server of the table: HTTP/1.1 over TLS as over
//! plaintext, session resumption, the handshake under `--header-timeout`, handshakes that are
//! abandoned, malformed or refused (each closing that connection only, each counted in /stats), and
//! a certificate or key that does not parse. The status table itself runs over TLS in the
//! conformance suite (`conformance::each_request_gets_its_status_over_tls`).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use acceptlab_tests::tls::{client_config, test_cert};
use acceptlab_tests::{
    binary_body, echo, echo_chunked, eventually, for_each_server, get, run_to_exit, spawn, Client, Running,
};
use serde_json::Value;

/// `/stats`'s `tls` counter `group.name` (`handshakes.full`, `failures.timeout`, ...), asked over TLS.
fn tls_count(running: &Running, group: &str, name: &str) -> u64 {
    let stats = running.connect_tls(&test_cert().fresh_client()).stats();
    stats["tls"][group][name].as_u64().unwrap_or_else(|| panic!("no tls.{group}.{name} in /stats: {stats}"))
}

/// Waits (at most 5 s) until `/stats` counts at least `at_least` of `group.name`.
fn expect_count(running: &Running, group: &str, name: &str, at_least: u64) {
    let mut last = 0;
    let counted = eventually(Duration::from_secs(5), || {
        last = tls_count(running, group, name);
        last >= at_least
    });
    assert!(counted, "tls.{group}.{name} is {last}, expected at least {at_least}");
}

/// The first flight of a TLS 1.3 client (its ClientHello), as bytes to send by hand.
fn client_hello() -> Vec<u8> {
    let name = "127.0.0.1".try_into().expect("a server name");
    let mut conn = rustls::ClientConnection::new(test_cert().fresh_client(), name).expect("a client");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("write to a Vec");
    }
    hello
}

/// Reads until the server closes (end of file or reset), failing after 5 s.
fn expect_closed(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("SO_RCVTIMEO");
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {} // an alert
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

#[test]
fn keep_alive_pipelining_and_bodies_work_over_tls() {
    let cert = test_cert();
    for_each_server(|server| {
        let running = spawn(server, &cert.server_args());
        let mut client = running.connect_tls(&cert.client);
        for _ in 0..3 {
            let response = client.get("/");
            assert_eq!((response.status, response.text().as_str()), (200, "Hello, World!"), "{response:?}");
        }
        let pipelined: Vec<u8> = (0..16).flat_map(|_| get("/")).collect();
        client.send(&pipelined);
        for i in 0..16 {
            assert_eq!(client.read_response().status, 200, "pipelined response {i}");
        }
        let body = binary_body(300 * 1024); // several records each way
        let response = client.request(&echo(&body));
        assert_eq!(response.status, 200);
        assert!(response.body == body, "a 300 KiB body echoed over TLS came back different");
        let response = client.request(&echo_chunked(&[b"abc", b"defgh"]));
        assert_eq!(response.body, b"abcdefgh");
        let stats = client.stats();
        assert!(stats["tls"]["handshakes"]["full"].as_u64() >= Some(1), "{}", stats["tls"]);
        assert_eq!(stats["arch"], Value::from(server.arch()));
    });
}

/// A client that keeps its session tickets resumes: one full handshake, then resumed ones, on any
/// thread or process (lab-reuseport's share one ticket key, made before the fork).
#[test]
fn sessions_resume_by_ticket_and_are_counted() {
    let cert = test_cert();
    for_each_server(|server| {
        let running = spawn(server, &cert.server_args());
        let client = cert.fresh_client();
        let mut first = running.connect_tls(&client);
        assert_eq!(first.tls_resumed(), Some(false));
        assert_eq!(first.get("/").status, 200); // TLS 1.3 tickets arrive after the handshake
        for i in 0..8 {
            let mut again = running.connect_tls(&client);
            assert_eq!(again.get("/").status, 200);
            assert_eq!(again.tls_resumed(), Some(true), "connection {i} after the first was not resumed");
        }
        expect_count(&running, "handshakes", "resumed", 8);
    });
}

/// Slowloris on the handshake: a ClientHello sent a byte at a time is cut off by
/// `--header-timeout`, as a request head would be, and counted as a timeout.
#[test]
fn a_handshake_trickled_slowly_is_closed_at_the_header_timeout() {
    let cert = test_cert();
    let hello = client_hello();
    for_each_server(|server| {
        let mut args = cert.server_args().to_vec();
        args.extend(["--header-timeout", "1"]);
        let running = spawn(server, &args);
        let mut reader = TcpStream::connect(running.addr()).expect("connect");
        let mut writer = reader.try_clone().expect("dup the client socket");
        let started = Instant::now();
        thread::scope(|scope| {
            scope.spawn(|| {
                for byte in &hello {
                    if writer.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(6) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            });
            expect_closed(&mut reader);
        });
        expect_count(&running, "failures", "timeout", 1);
        assert_eq!(running.connect_tls(&cert.client).get("/").status, 200);
    });
}

/// Clients that leave mid-handshake (a FIN, a reset) close their own connections only, and are
/// counted as `closed`.
#[test]
fn a_client_that_leaves_mid_handshake_closes_only_its_own_connection() {
    let cert = test_cert();
    let hello = client_hello();
    for_each_server(|server| {
        let running = spawn(server, &cert.server_args());
        let mut bystander = running.connect_tls(&cert.client);
        let mut half = TcpStream::connect(running.addr()).expect("connect");
        half.write_all(&hello[..hello.len() / 2]).expect("half a ClientHello");
        drop(half);
        let mut whole = Client::connect(running.addr());
        whole.send(&hello);
        whole.read_more().expect("the server's first flight");
        let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
        nix::sys::socket::setsockopt(whole.stream(), nix::sys::socket::sockopt::Linger, &linger)
            .expect("SO_LINGER");
        drop(whole); // a reset, the server's flight unanswered
        expect_count(&running, "failures", "closed", 2);
        assert_eq!(bystander.get("/").status, 200);
        assert_eq!(running.connect_tls(&cert.client).get("/").status, 200);
    });
}

/// Plaintext HTTP sent to a TLS port is malformed TLS; a client that offers only `h2` has nothing in
/// common with the server. Each is closed and counted; the server goes on.
#[test]
fn a_malformed_or_refused_handshake_closes_that_connection() {
    let cert = test_cert();
    let mut h2_only = rustls::ClientConfig::clone(&client_config(&cert.files.ca).expect("client config"));
    h2_only.alpn_protocols = vec![b"h2".to_vec()];
    let h2_only = Arc::new(h2_only);
    for_each_server(|server| {
        let running = spawn(server, &cert.server_args());
        let mut plain = TcpStream::connect(running.addr()).expect("connect");
        plain.write_all(&get("/")).expect("send");
        expect_closed(&mut plain);
        let refused = Client::connect_tls(running.addr(), &h2_only);
        assert!(refused.is_err(), "a handshake offering only h2 succeeded");
        expect_count(&running, "failures", "malformed", 1);
        expect_count(&running, "failures", "refused", 1);
        assert_eq!(running.connect_tls(&cert.client).get("/").status, 200);
    });
}

/// A certificate or key that cannot be used stops the server before it listens: exit 1, one line
/// naming the file.
#[test]
fn a_certificate_or_key_that_does_not_parse_exits_1_naming_the_file() {
    let cert = test_cert();
    let dir = std::env::temp_dir().join(format!("acceptlab-badcert-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("a temporary directory");
    let garbage = dir.join("garbage.pem");
    fs::write(&garbage, "not a certificate\n").expect("write");
    let missing = dir.join("missing.pem");
    let other = acceptlab_tests::tls::Files::in_dir(&dir.join("other"));
    lab_cert::make(&dir.join("other")).expect("a second certificate");
    let (cert_path, key_path) = (cert.files.cert.to_str().unwrap(), cert.files.key.to_str().unwrap());
    let garbage = garbage.to_str().unwrap();
    let missing = missing.to_str().unwrap();
    let other_key = other.key.to_str().unwrap();
    let cases: [([&str; 4], &str); 5] = [
        (["--tls-cert", garbage, "--tls-key", key_path], garbage),
        (["--tls-cert", cert_path, "--tls-key", garbage], garbage),
        (["--tls-cert", missing, "--tls-key", key_path], missing),
        (["--tls-cert", key_path, "--tls-key", key_path], key_path),
        (["--tls-cert", cert_path, "--tls-key", other_key], other_key),
    ];
    for_each_server(|server| {
        for (args, named) in &cases {
            let finished = run_to_exit(server, args, Duration::from_secs(5));
            assert_eq!(finished.status.code(), Some(1), "{args:?}: {finished:?}");
            let lines: Vec<&str> = finished.stderr.lines().filter(|line| !line.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "{args:?}: not one line: {finished:?}");
            assert!(lines[0].contains(named), "{args:?}: does not name {named}: {finished:?}");
            assert!(finished.stdout.is_empty(), "{args:?}: it listened: {finished:?}");
        }
    });
}

/// Runs lab-load with `args` and `--json -`, and returns its JSON report.
fn lab_load(args: &[&str]) -> Value {
    let output = std::process::Command::new(acceptlab_tests::bin_path("lab-load"))
        .args(args)
        .args(["--json", "-", "--no-progress"])
        .output()
        .expect("run lab-load");
    assert!(output.status.success(), "lab-load {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("lab-load's JSON")
}

/// lab-load speaks TLS: keep-alive and a new connection per request, every answer checked, the
/// handshakes counted (full, or resumed with --tls-resume, at any number of connections) and their
/// time in the connect histogram; a certificate its CA did not sign fails the connect, and the
/// server counts the client's alert.
#[test]
fn lab_load_over_tls_checks_every_answer_and_counts_handshakes() {
    let cert = test_cert();
    let running = spawn(&acceptlab_tests::SERVERS[0], &cert.server_args());
    let url = format!("https://{}/", running.addr());
    let ca = cert.files.ca.to_str().unwrap();
    let no_errors = |json: &Value| {
        let errors = &json["errors"];
        assert!(
            ["connect", "reset", "timeout", "status", "framing"].iter().all(|class| errors[class] == 0),
            "{json}"
        );
        assert_eq!(json["lost"], 0, "{json}");
    };
    let keep_alive =
        lab_load(&[&url, "--cacert", ca, "-c", "4", "-n", "2000", "--warmup", "0", "--pipeline", "4"]);
    no_errors(&keep_alive);
    assert_eq!(keep_alive["statuses"]["200"], 2000, "{keep_alive}");
    assert_eq!(keep_alive["tls"]["full"], 4, "{keep_alive}");
    let churn = lab_load(&[&url, "--cacert", ca, "-c", "2", "-n", "50", "--warmup", "0", "--close"]);
    no_errors(&churn);
    assert!(churn["tls"]["full"].as_u64() >= Some(50), "{churn}");
    assert!(churn["connect"]["count"].as_u64() >= Some(50), "{churn}");
    let resumed =
        lab_load(&[&url, "--insecure", "--tls-resume", "-c", "1", "-n", "20", "--warmup", "0", "--close"]);
    no_errors(&resumed);
    assert!(resumed["tls"]["resumed"].as_u64() >= Some(18), "{resumed}");
    // With 64 connections at once, only each connection's first handshake is full: lab-load keeps
    // every ticket (rustls's own store kept 8 per server, and most reconnects found none).
    let many =
        lab_load(&[&url, "--insecure", "--tls-resume", "-c", "64", "-n", "2000", "--warmup", "0", "--close"]);
    no_errors(&many);
    assert!(many["tls"]["full"].as_u64() <= Some(64), "{many}");
    assert!(many["tls"]["resumed"].as_u64() >= Some(2000 - 64), "{many}");
    let other = std::env::temp_dir().join(format!("acceptlab-otherca-{}", std::process::id()));
    let other = lab_cert::make(&other).expect("another CA");
    let output = std::process::Command::new(acceptlab_tests::bin_path("lab-load"))
        .args([&url, "--cacert", other.ca.to_str().unwrap(), "-c", "1", "-d", "0.3", "--warmup", "0"])
        .args(["--json", "-", "--no-progress"])
        .output()
        .expect("run lab-load");
    let untrusted: Value = serde_json::from_slice(&output.stdout).expect("lab-load's JSON");
    assert!(untrusted["errors"]["connect"].as_u64() >= Some(1), "{untrusted}");
    assert!(
        untrusted["first_errors"]["connect"].as_str().unwrap_or("").contains("TLS handshake"),
        "{untrusted}"
    );
    expect_count(&running, "failures", "alert", 1);
}
