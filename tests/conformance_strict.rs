#![forbid(unsafe_code)]
//! HTTP/1.1 strictness (issues 17 and 23): what the shared HTTP layer refuses, and what it serves,
//! category by category, checked from outside against every server of the table. docs/spec.md,
//! "What is refused, and why", lists the same categories with their statuses and RFC clauses.
//!
//! Each case is sent three ways to every server row:
//!
//! - whole, with a second request pipelined behind it: the first response has the case's status;
//!   a refused request closes the connection without answering the second, a served one answers it;
//! - cut in two at every byte, each prefix on its own connection: once the prefixes have had time
//!   to be read, none of a served request has been answered (every truncated prefix is partial), and
//!   a refused one's only if with the same status; then the rest is sent, and the answer is the
//!   whole's, at once — a head's verdict does not depend on how it is cut (issue 23 §7);
//! - (the SHOULD/MAY and OPTIONS tests) with the headers of the answer checked.

use std::thread;
use std::time::Duration;

use acceptlab_tests::{for_each_server, spawn, Client, Response, Running};

/// How long the prefixes get to be read and, if the server refuses them, answered.
const SETTLE: Duration = Duration::from_millis(150);
/// How long an answer may take once the whole request is in: well under `--header-timeout`
/// (10 s), so a server that waits for more instead of answering fails the case.
const VERDICT: Duration = Duration::from_secs(3);
/// Cases longer than this are not cut at every byte (the oversized heads).
const MAX_SPLIT_LEN: usize = 512;
/// What is pipelined behind each whole case.
const NEXT: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

/// One request and what it must get.
struct Case {
    request: &'static [u8],
    status: u16,
    /// Refused: the connection closes after the answer (its framing cannot be trusted further).
    closes: bool,
}

/// A request refused with `status`, the connection closed after the answer.
const fn refused(request: &'static [u8], status: u16) -> Case {
    Case { request, status, closes: true }
}

/// A request answered with `status` on a connection that stays open.
const fn served(request: &'static [u8], status: u16) -> Case {
    Case { request, status, closes: false }
}

/// `request` as a failure message shows it: escaped, and cut after 160 characters.
fn show(request: &[u8]) -> String {
    let text = String::from_utf8_lossy(request);
    let shown: String = text.chars().take(160).collect();
    format!("{shown:?}")
}

fn read(client: &mut Client, request: &[u8]) -> Response {
    match request.starts_with(b"HEAD ") {
        true => client.read_head_response(),
        false => client.read_response(),
    }
}

/// The case sent whole, with [`NEXT`] behind it.
fn check_whole(running: &Running, case: &Case) {
    let name = show(case.request);
    let mut client = running.connect();
    client.set_read_timeout(VERDICT);
    // The server may answer and close before it has read all of a refused request.
    let _ = client.try_send(&[case.request, NEXT].concat());
    let response = read(&mut client, case.request);
    assert_eq!(response.status, case.status, "{name}: {response:?}");
    if case.closes {
        assert!(client.closed_within(VERDICT), "{name}: refused, but the connection stayed open");
    } else {
        let next = client.read_response();
        assert_eq!(next.status, 200, "{name}: the request after it: {next:?}");
    }
}

/// Whether the server has sent nothing (and not closed) on `client` so far.
fn nothing_yet(client: &mut Client) -> bool {
    client.set_read_timeout(Duration::from_millis(1));
    let quiet = client.read_more().is_err();
    client.set_read_timeout(VERDICT);
    quiet
}

/// The case cut in two at every byte, as the module documentation says.
fn check_splits(running: &Running, case: &Case) {
    let request = case.request;
    if request.len() > MAX_SPLIT_LEN {
        return;
    }
    let name = show(request);
    let mut clients: Vec<(usize, Client)> = (1..request.len())
        .map(|cut| {
            let mut client = running.connect();
            client.send(&request[..cut]);
            (cut, client)
        })
        .collect();
    thread::sleep(SETTLE);
    for (cut, client) in &mut clients {
        let prefix = show(&request[..*cut]);
        if !nothing_yet(client) {
            assert!(case.closes, "{name}: its prefix {prefix} was answered, not partial");
            let early = read(client, request);
            assert_eq!(early.status, case.status, "{name}: its prefix {prefix}: {early:?}");
            continue;
        }
        let _ = client.try_send(&request[*cut..]);
        let response = client
            .try_read_response(request.starts_with(b"HEAD "))
            .unwrap_or_else(|e| panic!("{name}, cut after {prefix}: no answer ({e})"));
        assert_eq!(response.status, case.status, "{name}, cut after {prefix}: {response:?}");
    }
}

/// Every case of `cases`, whole and cut, against every server row.
fn check_table(cases: &[Case]) {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        for case in cases {
            check_whole(&running, case);
            check_splits(&running, case);
        }
    });
}

// ---------------------------------------------------------------- issue 17

/// 17.1: Host is `uri-host [ ":" port ]`, exactly one (RFC 9112 §3.2, RFC 9110 §7.2).
#[test]
fn host_must_be_one_valid_authority() {
    check_table(&[
        refused(b"GET / HTTP/1.1\r\nHost: user@a:80\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a:80/path\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nX: a\r\n\r\n", 400),
        served(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200),
        served(b"GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n", 200),
        served(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 200),
        served(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200),
    ]);
}

/// 17.2 and 23.8: a malformed HTTP-version or request line is a syntax error (400, RFC 9112 §2.3,
/// §3); 505 is for a well-formed version of another major number (RFC 9110 §15.6.6); a later
/// minor version of HTTP/1 is served as HTTP/1.1 (RFC 9110 §2.5).
#[test]
fn request_line_grammar() {
    check_table(&[
        refused(b"GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/01.01\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/ 1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /pa th HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        refused(b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        served(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 200),
        served(b"GET / HTTP/1.9\r\nHost: a\r\n\r\n", 200),
        served(b"POST /echo HTTP/1.5\r\nHost: a\r\nContent-Length: 2\r\n\r\nok", 200),
        // Served as 1.1: Host is required.
        refused(b"GET / HTTP/1.2\r\n\r\n", 400),
    ]);
}

/// 17.3: Transfer-Encoding (RFC 9112 §6.1, §6.3; RFC 9110 §5.6.1): malformed or with chunked not
/// last, 400; a well-formed coding not implemented, 501.
#[test]
fn transfer_encoding_lists() {
    check_table(&[
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
        refused(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        served(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 200),
    ]);
}

/// 17.4: chunk-size lines (RFC 9112 §7.1, §7.1.1): the extension grammar, no whitespace after the
/// size but before `;`, and a size that overflows is a framing error (400).
#[test]
fn chunk_lines() {
    check_table(&[
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n", 400),
        refused(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;bad[=x\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\r\nhello\r\n0\r\n\r\n", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400),
        // A size that fits but is over the body limit is 413.
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\n", 413),
        served(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ; a = \"q;\\\"\" ;b\r\nhello\r\n0\r\n\r\n",
            200,
        ),
    ]);
}

/// 17.5 and 23.5: the request target follows RFC 3986 (RFC 9112 §3.2): raw non-ASCII, a
/// backslash, `%` without two hex digits (§2.1) and, in the path, an encoded NUL, CR or LF are
/// refused; in the query an encoded CR or LF is form data.
#[test]
fn request_target_bytes() {
    check_table(&[
        refused(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /a%00 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /a%0d%0aX:%20y HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /a%4 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /% HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /?q=%g1 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        served(b"GET /?q=%00%0D%0a&r=/? HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        served(b"GET /no%20such;p=1:@!$&'()*+,=~ HTTP/1.1\r\nHost: a\r\n\r\n", 404),
    ]);
}

/// 17.6: OPTIONS, server-wide (`*`, RFC 9112 §3.2.4) and on every route (RFC 9110 §9.3.7): 200
/// with `Allow` and no content; `*` with any other method is refused.
#[test]
fn options_is_served_with_allow() {
    let cases: &[(&[u8], &str)] = &[
        (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "GET, HEAD, POST, OPTIONS"),
        (b"OPTIONS / HTTP/1.1\r\nHost: a\r\n\r\n", "GET, HEAD, OPTIONS"),
        (b"OPTIONS /stats HTTP/1.1\r\nHost: a\r\n\r\n", "GET, HEAD, OPTIONS"),
        (b"OPTIONS /echo HTTP/1.1\r\nHost: a\r\n\r\n", "POST, OPTIONS"),
        (b"OPTIONS /ledger HTTP/1.1\r\nHost: a\r\n\r\n", "POST, OPTIONS"),
        // A method not allowed names OPTIONS among those that are.
        (b"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", "GET, HEAD, OPTIONS"),
        (b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n", "POST, OPTIONS"),
    ];
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        for (request, allow) in cases {
            let name = show(request);
            let response = client.request(request);
            let expected = if request.starts_with(b"OPTIONS") { 200 } else { 405 };
            assert_eq!(response.status, expected, "{name}: {response:?}");
            assert_eq!(response.header("Allow"), Some(*allow), "{name}: {response:?}");
            if expected == 200 {
                assert_eq!(response.header("Content-Length"), Some("0"), "{name}: {response:?}");
                assert!(response.body.is_empty(), "{name}: {response:?}");
            }
        }
    });
    check_table(&[
        served(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        served(b"OPTIONS /echo HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        served(b"OPTIONS /nowhere HTTP/1.1\r\nHost: a\r\n\r\n", 404),
        refused(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ]);
}

/// 17.7 and 23.3: a head over 8 KiB is refused for the part that did not fit (RFC 9112 §3): a
/// method longer than any implemented 501, a request target 414, header fields 431 (RFC 6585 §5).
#[test]
fn oversized_heads_name_what_did_not_fit() {
    let long_method = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "M".repeat(100 * 1024));
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9 * 1024));
    let long_field = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Fill: {}\r\n\r\n", "a".repeat(9 * 1024));
    let cases = [
        refused(long_method.leak().as_bytes(), 501),
        refused(long_target.leak().as_bytes(), 414),
        refused(long_field.leak().as_bytes(), 431),
    ];
    check_table(&cases);
}

/// 17.8: the SHOULD and MAY cases, as docs/spec.md decides them.
#[test]
fn should_and_may_choices() {
    check_table(&[
        // Bare LF ends a head's lines (RFC 9112 §2.2 MAY); not a chunked body's (see chunk_lines).
        served(b"GET / HTTP/1.1\nHost: a\n\n", 200),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n", 400),
        // Empty lines before the request line are ignored (RFC 9112 §2.2 SHOULD).
        served(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        served(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        // Content-Length = 1*DIGIT (RFC 9110 §8.6): leading zeros are digits; OWS is not the value.
        served(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 002\r\n\r\nok", 200),
        served(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n", 200),
        served(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: \t2 \r\n\r\nok", 200),
        // OWS before a field value may be a tab (RFC 9110 §5.6.3).
        served(b"GET / HTTP/1.1\r\nHost:\ta\r\n\r\n", 200),
        // A field that frames nothing sent twice is not this server's to refuse (RFC 9110 §5.3).
        served(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Type: a\r\nContent-Type: b\r\nContent-Length: 0\r\n\r\n", 200),
        // An expectation other than 100-continue (RFC 9110 §10.1.1 MAY): 417.
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", 417),
        // Upgrade is ignored, however malformed (RFC 9110 §7.8: a server MAY ignore it).
        served(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: HTTP/9.9x, /\r\nConnection: upgrade\r\n\r\n", 200),
        // A body over the limit is refused at once, before it is sent (RFC 9110 §15.5.14).
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n", 413),
    ]);
}

// ---------------------------------------------------------------- issue 23

/// 23.1: an HTTP/1.0 request with Transfer-Encoding has faulty framing (RFC 9112 §6.1): refused,
/// and the connection closed, whatever Connection says; the request behind it is not served.
#[test]
fn http10_with_transfer_encoding_is_refused_and_closes() {
    check_table(&[
        refused(
            b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            400,
        ),
        refused(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        served(b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", 200),
    ]);
}

/// 23.2: an absolute-form target is an http(s) URI with a valid authority (RFC 9110 §4.2.1,
/// §4.2.4; RFC 9112 §3.2.2); its authority, not Host, names the host, and every server here
/// serves one host, so a Host that disagrees changes nothing.
#[test]
fn absolute_form_targets() {
    check_table(&[
        refused(b"GET http:/// HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET http://:80/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET http://a:http/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET http://user:pw@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET ://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET 1http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET http:a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        served(b"GET http://a.example/ HTTP/1.1\r\nHost: other.example\r\n\r\n", 200),
        served(b"GET HTTPS://[::1]:8443?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        served(b"GET http://a:80/stats HTTP/1.1\r\nHost: a:80\r\n\r\n", 200),
    ]);
}

/// 23.4: trailer fields follow the header field-line grammar (RFC 9112 §7.1.2, §5; RFC 9110 §5.5).
#[test]
fn trailer_fields_follow_the_field_grammar() {
    check_table(&[
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\x00b\r\n\r\n", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n: v\r\n\r\n", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : v\r\n\r\n", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX[1]: v\r\n\r\n", 400),
        refused(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: v\r\n folded\r\n\r\n",
            400,
        ),
        served(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T:\tt u \r\n\r\n", 200),
    ]);
}

/// 23.6: one rule for Content-Length (RFC 9110 §8.6 lets a recipient refuse any duplicate): one
/// field line holding one number; a second line or a list is refused, equal values or not.
#[test]
fn content_length_is_one_line_one_number() {
    check_table(&[
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nContent-Length: 011\r\n\r\n", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11, 11\r\n\r\n", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\nok", 400),
        refused(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
        served(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 011\r\n\r\nhello world", 200),
    ]);
}

/// 23.7: a head cut anywhere gets the whole head's verdict, at once. The bare CR that starts a
/// later piece is the case the differential check found waiting for the header timeout.
#[test]
fn a_cut_head_gets_the_whole_heads_verdict() {
    check_table(&[
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\n\rX: b\r\n\r\n", 400),
        refused(b"GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n", 400),
        refused(b"GE\x00T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7f\r\n\r\n", 400),
    ]);
    // And explicitly: the bare CR arrives in a second piece, well after the first was read.
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut client = running.connect();
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX: a");
        thread::sleep(SETTLE);
        client.send(b"\rb");
        client.set_read_timeout(VERDICT);
        let response = client
            .try_read_response(false)
            .unwrap_or_else(|e| panic!("a bare CR in the second piece was not refused at once: {e}"));
        assert_eq!(response.status, 400, "{response:?}");
        assert!(client.closed_within(VERDICT), "refused, but the connection stayed open");
    });
}
