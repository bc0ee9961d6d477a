//! idempotency: a response lost after the server executed, the retry a layer-7 proxy makes, and
//! what an Idempotency-Key changes — on every architecture, and with lab-reuseport's store shared
//! between its processes or not.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::Experiment;
use crate::kernel;
use crate::net;
use crate::relay::{self, Framed};
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "idempotency",
    summary: "a response lost after execution, retried as an L7 proxy would: executions per request, with and without Idempotency-Key; which requests curl retries",
    claim: "A request can reach the backend and execute, and its response be lost on the way back; \
            the client or a layer-7 proxy then retries it, and without more the backend executes it \
            again (a second payment). With a request ID (the Idempotency-Key header) the server keeps \
            the first response and gives it to the retry instead of executing again — but only where \
            the retry finds the key: threads share the store, processes only if it is put in memory \
            they share.",
    notes: "'How do I avoid executing the same request twice ... your payment request has reached \
            backend and is processed but somehow client crashed ... layer 7 proxies does retry which \
            is totally out of control. upsert can help', 'Idempotency: GET idempotent, POST use a \
            request ID' and 'Browser and proxies treat GET as idempotent and retry by default'",
    needs_namespace: false,
    run,
};

/// Requests per architecture, with a key and without.
const REQUESTS: usize = 16;

/// The servers: every row of the suites' table, and lab-reuseport with a store per process.
fn rows() -> Vec<(String, &'static str, Vec<&'static str>)> {
    let mut rows: Vec<_> = labkit::SERVERS
        .iter()
        .map(|server| (server.name.to_string(), server.bin, server.args.to_vec()))
        .collect();
    rows.push((
        "reuseport-per-process".into(),
        "lab-reuseport",
        vec!["--workers", "2", "--idempotency-store", "per-process"],
    ));
    rows
}

/// The relay's record: how many times each distinct request (its bytes) came through.
type Attempts = Arc<Mutex<HashMap<Vec<u8>, u64>>>;

/// A relay to `backend` that drops the response to the first attempt of every distinct request
/// (but `GET /`, which curl's cases use to open a connection): it forwards the request, reads the
/// whole response — so the backend has executed it — and closes the client's connection instead of
/// answering. Each client connection gets its own connection to the backend, as a proxy opening
/// an upstream connection per client would: a retry on a new connection is a new backend connection.
fn dropping_relay(backend: SocketAddr) -> (SocketAddr, Attempts) {
    let attempts: Attempts = Arc::default();
    let seen = Arc::clone(&attempts);
    let addr = relay::listen(move |client, _| {
        let mut client = Framed::new(client);
        let Ok(mut upstream) = Framed::connect(backend) else { return client.close() };
        while let Ok(Some(request)) = client.read_message() {
            let first = {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                let count = seen.entry(request.clone()).or_insert(0);
                *count += 1;
                *count == 1 && !request.starts_with(b"GET / ")
            };
            let response = upstream.write(&request).and_then(|()| upstream.read_message());
            match response {
                Ok(Some(response)) if !first => {
                    if client.write(&response).is_err() {
                        break;
                    }
                }
                _ => break, // the fault: executed, and the answer is lost
            }
        }
        client.close();
        upstream.close();
    });
    (addr, attempts)
}

fn ledger_request(key: Option<&str>, body: &str) -> Vec<u8> {
    let key = key.map(|key| format!("Idempotency-Key: \"{key}\"\r\n")).unwrap_or_default();
    format!("POST /ledger HTTP/1.1\r\nHost: lab-exp\r\n{key}Content-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

/// Sends `request` through `relay` as a layer-7 proxy would: on a connection that ends without a
/// response, once more on a new one. Returns the response, if one came.
fn with_one_retry(relay: SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
    (0..2).find_map(|_| {
        let mut conn = Framed::connect(relay).ok()?;
        conn.write(request).ok()?;
        conn.read_message().ok().flatten()
    })
}

/// The ledger's `appended` count, read from the backend itself.
fn appended(backend: SocketAddr) -> u64 {
    net::stats(&mut net::connect(backend))["ledger"]["appended"].as_u64().unwrap_or(0)
}

/// What happened to `REQUESTS` requests on one server, with or without keys.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    executions: u64,
    /// Requests that executed more than once.
    duplicated: u64,
    replayed: u64,
    answered: u64,
}

fn tally(row: &str, backend: SocketAddr, relay: SocketAddr, keyed: bool) -> Tally {
    let mut tally = Tally::default();
    for i in 0..REQUESTS {
        let body = format!("pay 5 to {row} #{i}");
        let key = keyed.then(|| format!("{row}-{i}"));
        let before = appended(backend);
        let response = with_one_retry(relay, &ledger_request(key.as_deref(), &body));
        let executions = appended(backend) - before;
        tally.executions += executions;
        tally.duplicated += u64::from(executions > 1);
        if let Some(response) = response.filter(|r| relay::status(r) == 200) {
            tally.answered += 1;
            tally.replayed += u64::from(relay::has_header(&response, "Idempotent-Replayed", "true"));
        }
    }
    tally
}

fn run(report: &mut Report) {
    report.does(format!(
        "for each architecture (every row of the suites' table, and lab-reuseport --idempotency-store \
         per-process), starts the server behind a relay inside lab-exp that forwards each request, reads \
         the server's whole response, and drops it (closes the client's connection) on the first attempt \
         of every distinct request; a client then retries once on a new connection, as a layer-7 proxy \
         would; {REQUESTS} POST /ledger without a key, {REQUESTS} with Idempotency-Key, each counted \
         in executions from /stats ledger.appended before and after"
    ));
    let mut figures = serde_json::Map::new();
    let mut results = Vec::new();
    for (row, bin, args) in rows() {
        let server = net::start(bin, &args);
        let backend = server.addr();
        let (relay, _) = dropping_relay(backend);
        let without = tally(&row, backend, relay, false);
        let with = tally(&row, backend, relay, true);
        let store =
            net::stats(&mut net::connect(backend))["ledger"]["store"].as_str().unwrap_or("").to_string();
        report.observe(format!(
            "{row}: without a key {} executions for {REQUESTS} requests ({} executed twice); with a key \
             {} executions ({} twice), {} retries answered with the kept response (store: {store})",
            without.executions, without.duplicated, with.executions, with.duplicated, with.replayed
        ));
        figures.insert(
            row.clone(),
            json!({
                "store": store,
                "without_key": { "requests": REQUESTS, "executions": without.executions, "duplicated": without.duplicated, "answered": without.answered },
                "with_key": { "requests": REQUESTS, "executions": with.executions, "duplicated": with.duplicated, "replayed": with.replayed, "answered": with.answered },
            }),
        );
        results.push((row, without, with));
    }
    report.figure("requests", REQUESTS);
    report.figure("servers", Value::Object(figures));
    let n = REQUESTS as u64;
    let shared: Vec<_> = results.iter().filter(|(row, ..)| row != "reuseport-per-process").collect();
    report.check(
        "without a key, every retried request executes twice, on every architecture",
        results.iter().all(|(_, without, _)| without.executions == 2 * n && without.duplicated == n),
        results.iter().map(|(row, w, _)| format!("{row} {}", w.executions)).collect::<Vec<_>>().join(", "),
    );
    report.check(
        "with a key and a store every worker shares (threads; lab-reuseport's processes through MAP_SHARED \
         memory), every request executes once and its retry gets the kept response, marked as a replay",
        shared.iter().all(|(_, _, with)| with.executions == n && with.replayed == n && with.answered == n),
        shared
            .iter()
            .map(|(row, _, w)| format!("{row} {}/{}", w.executions, w.replayed))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if let Some((_, _, per_process)) = results.iter().find(|(row, ..)| row == "reuseport-per-process") {
        report.check(
            "with a store per process, a retry the kernel's hash sends to the other process does not find \
             the key and executes again: some requests execute twice despite the key",
            per_process.duplicated > 0 && per_process.duplicated < n,
            format!(
                "{} of {n} executed twice ({} executions); {} found their key (same process)",
                per_process.duplicated, per_process.executions, per_process.replayed
            ),
        );
        report.figure("per_process_duplicated", per_process.duplicated);
    }
    curl_cases(report);
}

/// Which requests curl retries by itself, through the same kind of relay, in front of lab-epoll.
fn curl_cases(report: &mut Report) {
    if !kernel::have("curl") {
        report
            .observe("curl is not installed: its retries were not measured (scripts/install-tools.sh curl)");
        return;
    }
    let server = net::start("lab-epoll", &[]);
    let backend = server.addr();
    let (relay, attempts) = dropping_relay(backend);
    let url = |path: &str| format!("http://{relay}{path}");
    let quiet = ["-s", "-o", "/dev/null"];
    let post = |body: &str, key: Option<&str>| -> Vec<String> {
        let mut args: Vec<String> = vec!["--data".into(), body.into()];
        if let Some(key) = key {
            args.extend(["-H".into(), format!("Idempotency-Key: {key}")]);
        }
        args.push(url("/ledger"));
        args
    };
    // Opening with `GET /` (never dropped) and going on with --next makes curl send the request on
    // the connection it keeps alive.
    let reused = |rest: Vec<String>| -> Vec<String> {
        let mut args: Vec<String> = quiet.iter().map(|s| s.to_string()).collect();
        args.extend([url("/"), "--next".into()]);
        args.extend(quiet.iter().map(|s| s.to_string()));
        args.extend(rest);
        args
    };
    let fresh = |flags: &[&str], rest: Vec<String>| -> Vec<String> {
        let mut args: Vec<String> = quiet.iter().chain(flags).map(|s| s.to_string()).collect();
        args.extend(rest);
        args
    };
    let retry = ["--retry", "3", "--retry-delay", "0"];
    let retry_all = ["--retry", "3", "--retry-delay", "0", "--retry-all-errors"];
    let cases: Vec<(&str, Vec<String>, Vec<u8>)> = vec![
        ("POST, fresh connection", fresh(&[], post("c1", None)), ledger_body("c1", None)),
        ("GET, fresh connection", fresh(&[], vec![url("/spin?us=1")]), get_request("/spin?us=1")),
        ("POST, reused keep-alive connection", reused(post("c3", None)), ledger_body("c3", None)),
        ("GET, reused keep-alive connection", reused(vec![url("/spin?us=3")]), get_request("/spin?us=3")),
        ("POST, fresh, --retry 3", fresh(&retry, post("c5", None)), ledger_body("c5", None)),
        (
            "POST, fresh, --retry 3 --retry-all-errors",
            fresh(&retry_all, post("c6", None)),
            ledger_body("c6", None),
        ),
        (
            "POST with Idempotency-Key, reused connection",
            reused(post("c7", Some("curl-7"))),
            ledger_body("c7", Some("curl-7")),
        ),
    ];
    report.does(
        "curl 'as is' through the same relay in front of lab-epoll: a POST /ledger or GET /spin on a \
         fresh connection or on one kept alive from a GET / before it (--next), with --retry 3, with \
         --retry 3 --retry-all-errors, and a POST with a key; counts the attempts the relay saw and the \
         executions",
    );
    let mut table = serde_json::Map::new();
    let mut rows = Vec::new();
    for (label, args, request) in cases {
        let before = appended(backend);
        let status = Command::new("curl").args(&args).stdin(Stdio::null()).stderr(Stdio::null()).status();
        let exit = status.ok().and_then(|s| s.code()).unwrap_or(-1);
        let seen = attempts.lock().unwrap_or_else(|p| p.into_inner());
        let tried =
            seen.iter().filter(|(bytes, _)| same_request(bytes, &request)).map(|(_, n)| *n).sum::<u64>();
        drop(seen);
        let executions = appended(backend) - before;
        report.observe(format!(
            "curl, {label}: {tried} attempt(s), {executions} ledger execution(s), exit {exit}{}",
            if exit == 52 { " (empty reply)" } else { "" }
        ));
        table.insert(label.into(), json!({ "attempts": tried, "executions": executions, "exit": exit }));
        rows.push((label, tried, executions, request.starts_with(b"POST")));
    }
    report.figure("curl", Value::Object(table));
    let fresh_plain = rows.iter().filter(|(label, ..)| label.ends_with("fresh connection"));
    report.check(
        "curl alone does not retry a request whose fresh connection ended without a response",
        fresh_plain.clone().all(|&(_, tried, ..)| tried == 1),
        fresh_plain.map(|(label, tried, ..)| format!("{label}: {tried}")).collect::<Vec<_>>().join("; "),
    );
    let keyless_posts: Vec<_> =
        rows.iter().filter(|(label, _, _, post)| *post && !label.contains("Key")).collect();
    report.check(
        "every POST curl sent without a key executed once per attempt (a retry is a second payment)",
        keyless_posts.iter().all(|&&(_, tried, executions, _)| tried == executions),
        keyless_posts.iter().map(|(l, t, e, _)| format!("{l}: {t}/{e}")).collect::<Vec<_>>().join("; "),
    );
    let keyed = rows.iter().find(|(label, ..)| label.contains("Key")).copied();
    if let Some((_, tried, executions, _)) = keyed {
        report.check(
            "the POST with a key executed once however many times curl sent it",
            executions == 1,
            format!("{tried} attempt(s), {executions} execution(s)"),
        );
    }
}

/// The relay's record key for a curl request is its whole bytes, which hold curl's own headers: a
/// case is found by its request line and body instead.
fn ledger_body(body: &str, key: Option<&str>) -> Vec<u8> {
    let mut marker = format!("POST /ledger |{body}").into_bytes();
    if let Some(key) = key {
        marker.extend_from_slice(format!("|{key}").as_bytes());
    }
    marker
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} |").into_bytes()
}

/// Whether `bytes` (a request the relay saw) is the one `marker` describes.
fn same_request(bytes: &[u8], marker: &[u8]) -> bool {
    let marker = String::from_utf8_lossy(marker);
    let mut parts = marker.split('|');
    let line = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let key = parts.next();
    let text = String::from_utf8_lossy(bytes);
    text.starts_with(line)
        && relay::body(bytes) == body.as_bytes()
        && key.is_none_or(|key| text.contains(&format!("Idempotency-Key: {key}")))
}
