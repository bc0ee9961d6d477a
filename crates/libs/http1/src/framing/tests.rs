//! Table tests of the framing: each complete request, every truncated prefix of it (always partial),
//! the errors with their statuses, every split of every case (the verdict of the whole), and a
//! property test that feeds pipelined requests split at random points, and random bytes, through the
//! same incremental loop a connection runs.

use super::*;
use crate::response::Status;

/// A request that frames completely: its bytes, and what it must come out as.
struct Case {
    bytes: &'static [u8],
    method: Method,
    path: &'static str,
    query: &'static str,
    keep_alive: bool,
    body: &'static [u8],
}

const COMPLETE: &[Case] = &[
    Case { bytes: b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", method: Method::Head, path: "/", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"GET /spin?us=10 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", method: Method::Get, path: "/spin", query: "us=10", keep_alive: false, body: b"" },
    Case { bytes: b"GET / HTTP/1.0\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: false, body: b"" },
    Case { bytes: b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", method: Method::Post, path: "/echo", query: "", keep_alive: true, body: b"hello" },
    Case { bytes: b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc", method: Method::Post, path: "/echo", query: "", keep_alive: true, body: b"abc" },
    Case {
        bytes: b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1 ;ext=1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n",
        method: Method::Post, path: "/echo", query: "", keep_alive: true, body: b"hello!",
    },
    Case { bytes: b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, keep-alive\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: false, body: b"" },
    Case { bytes: b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: false, body: b"" },
    Case { bytes: b"PUT /echo HTTP/1.1\r\nHost: a\r\n\r\n", method: Method::Other, path: "/echo", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"GET http://example.com/stats?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n", method: Method::Get, path: "/stats", query: "x=1", keep_alive: true, body: b"" },
    // RFC 9110 §2.5: a later minor version of HTTP/1 is served as HTTP/1.1.
    Case { bytes: b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"GET /stats HTTP/1.9\r\nHost: a\r\nConnection: close\r\n\r\n", method: Method::Get, path: "/stats", query: "", keep_alive: false, body: b"" },
    Case { bytes: b"POST /echo HTTP/1.3\nHost: a\nContent-Length: 2\n\nok", method: Method::Post, path: "/echo", query: "", keep_alive: true, body: b"ok" },
    // RFC 9112 §3.2.4, RFC 9110 §9.3.7: OPTIONS, server-wide and on a path.
    Case { bytes: b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", method: Method::Options, path: "*", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"OPTIONS /echo HTTP/1.1\r\nHost: a\r\n\r\n", method: Method::Options, path: "/echo", query: "", keep_alive: true, body: b"" },
    // The SHOULD/MAY choices: an empty line before the request line, bare LF, a tab before a
    // value, two Content-Type lines, an Upgrade (ignored), Expect from HTTP/1.0 (ignored).
    Case { bytes: b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"GET / HTTP/1.1\nHost: a\n\n", method: Method::Get, path: "/", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"GET / HTTP/1.1\r\nHost:\ta\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: HTTP/9.9x, /\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"GET / HTTP/1.0\r\nExpect: something\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: false, body: b"" },
    // Absolute form: its authority wins over a disagreeing Host (RFC 9112 §3.2.2); an empty path is /.
    Case { bytes: b"GET https://example.com:8443?x=1 HTTP/1.1\r\nHost: other\r\n\r\n", method: Method::Get, path: "/", query: "x=1", keep_alive: true, body: b"" },
    Case { bytes: b"GET HTTP://[::1]:80/stats HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", method: Method::Get, path: "/stats", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"GET / HTTP/1.1\r\nHost: xn--bcher-kva.example%41:\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: true, body: b"" },
    // RFC 3986: pchar, pct-encoded and, in the query, an encoded newline (form data) and "/?".
    Case { bytes: b"GET /a%20b/c;p=1:@!$&'()*+,=~ HTTP/1.1\r\nHost: a\r\n\r\n", method: Method::Get, path: "/a%20b/c;p=1:@!$&'()*+,=~", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"GET /spin?q=%0A&r=/? HTTP/1.1\r\nHost: a\r\n\r\n", method: Method::Get, path: "/spin", query: "q=%0A&r=/?", keep_alive: true, body: b"" },
    // RFC 9112 §7.1.1: extensions with whitespace around ; and =, quoted values; leading zeros.
    Case {
        bytes: b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0003 ; a = \"v;\\\"q\" ;b\r\nabc\r\n0;last\r\nX-T:\tt u\r\n\r\n",
        method: Method::Post, path: "/echo", query: "", keep_alive: true, body: b"abc",
    },
    Case { bytes: b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok", method: Method::Post, path: "/echo", query: "", keep_alive: true, body: b"ok" },
];

const ERRORS: &[(&[u8], Status)] = &[
    (b"GARBAGE\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/2.0\r\n\r\n", Status::VersionNotSupported),
    (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", Status::VersionNotSupported),
    (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", Status::VersionNotSupported),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Status::NotImplemented),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
        Status::BadRequest,
    ),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n", Status::PayloadTooLarge),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", Status::BadRequest),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n",
        Status::PayloadTooLarge,
    ),
    (b"GET nope HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", Status::BadRequest),
    // RFC 9112 strictness: Host exactly once in HTTP/1.1, at most once in HTTP/1.0.
    (b"GET / HTTP/1.1\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", Status::BadRequest),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        Status::BadRequest,
    ),
    // Chunk lines end in CRLF and nothing else: empty sizes, bare LF or CR anywhere are malformed.
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n;ext\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;ext\nx\r\n", Status::BadRequest),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\rb\r\nx\r\n",
        Status::BadRequest,
    ),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n", Status::BadRequest),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\n0\r\n\r\n",
        Status::BadRequest,
    ),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1x\r\nx\r\n", Status::BadRequest),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\nY: b\r\n\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n",
        Status::BadRequest,
    ),
];

/// Issue 17 and 23, by category: requests each refused with its status. `chunked` bodies start
/// after `TE_HEAD`.
const STRICT: &[(&[u8], Status)] = &[
    // Host (RFC 9112 §3.2, RFC 9110 §7.2): userinfo, a path, empty, a list, a bad port or literal.
    (b"GET / HTTP/1.1\r\nHost: user@a:80\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: a:80/path\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.0\r\nHost: a b\r\n\r\n", Status::BadRequest),
    // Request-line grammar (RFC 9112 §2.3, §3): syntax errors are 400; 505 is for HTTP/2 and up.
    (b"GET / HTTP/1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/01.01\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/ 1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET / http/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/2\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET /pa th HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.2 \r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.2\r\nHost: a\r\nBad Name: x\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/1.2\r\n\r\n", Status::BadRequest),
    // Transfer-Encoding (RFC 9112 §6.1, §6.3): 400 for what is malformed, 501 for a coding not served.
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun ked\r\n\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;\r\n\r\n", Status::BadRequest),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        Status::BadRequest,
    ),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Status::NotImplemented),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", Status::NotImplemented),
    // HTTP/1.0 with Transfer-Encoding (RFC 9112 §6.1): faulty framing, refused.
    (
        b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Status::BadRequest,
    ),
    // Chunk lines (RFC 9112 §7.1, §7.1.1): a bare ;, a name not a token, whitespace after the size,
    // a bad value, an overflowing size (400, while a merely large one is 413).
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;bad[=x\r\nhello\r\n0\r\n\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a \r\nhello\r\n0\r\n\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\r\nhello\r\n0\r\n\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x\r\nhello\r\n0\r\n\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\n",
        Status::PayloadTooLarge,
    ),
    // Request target (RFC 9112 §3.2, RFC 3986): raw non-ASCII, bad %, encoded NUL/CR/LF in the path,
    // a backslash, a fragment, bytes outside the grammar; * for anything but OPTIONS.
    (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET /a%4 HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET /?q=% HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET /a%00 HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET /a%0d%0aX:%20y HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET /a{b}|c HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    // Absolute form (RFC 9110 §4.2.1, §4.2.4; RFC 9112 §3.2.2).
    (b"GET http:/// HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET http://:80/ HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET http://a:http/ HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET http://user:pw@a/ HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET ://a/ HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET 1http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET http:/a HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    (b"GET http://a/%zz HTTP/1.1\r\nHost: a\r\n\r\n", Status::BadRequest),
    // Trailer fields (RFC 9112 §7.1.2): the header field-line grammar.
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\x00b\r\n\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n: v\r\n\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : v\r\n\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX[1]: v\r\n\r\n",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: v\r\n folded\r\n\r\n",
        Status::BadRequest,
    ),
    // Content-Length (RFC 9110 §8.6): one line, one number.
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        Status::BadRequest,
    ),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nContent-Length: 011\r\n\r\n",
        Status::BadRequest,
    ),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11, 11\r\n\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", Status::BadRequest),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", Status::BadRequest),
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        Status::BadRequest,
    ),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n", Status::PayloadTooLarge),
    // Expect (RFC 9110 §10.1.1): an expectation other than 100-continue gets 417.
    (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\nContent-Length: 2\r\n\r\nok",
        Status::ExpectationFailed,
    ),
    (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", Status::ExpectationFailed),
];

fn complete(bytes: &[u8]) -> (Request<'_>, usize) {
    match parse_request(bytes) {
        Ok(Parsed::Complete { request, consumed }) => (request, consumed),
        other => panic!("{:?}: expected complete, got {other:?}", String::from_utf8_lossy(bytes)),
    }
}

#[test]
fn complete_requests_frame_as_expected() {
    for case in COMPLETE {
        let (request, consumed) = complete(case.bytes);
        let name = String::from_utf8_lossy(case.bytes);
        assert_eq!(consumed, case.bytes.len(), "{name}");
        assert_eq!(request.method, case.method, "{name}");
        assert_eq!((request.path, request.query), (case.path, case.query), "{name}");
        assert_eq!(request.keep_alive, case.keep_alive, "{name}");
        assert_eq!(&*request.body, case.body, "{name}");
    }
}

#[test]
fn every_truncated_prefix_is_partial() {
    for case in COMPLETE {
        for len in 0..case.bytes.len() {
            let prefix = &case.bytes[..len];
            match parse_request(prefix) {
                Ok(Parsed::Partial { .. }) => {}
                other => {
                    panic!("prefix {:?}: expected partial, got {other:?}", String::from_utf8_lossy(prefix))
                }
            }
        }
    }
}

#[test]
fn a_request_followed_by_another_consumes_only_itself() {
    for case in COMPLETE {
        let mut two = case.bytes.to_vec();
        two.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (_, consumed) = complete(&two);
        assert_eq!(consumed, case.bytes.len());
    }
}

#[test]
fn errors_carry_their_status() {
    for (bytes, status) in ERRORS.iter().chain(STRICT) {
        match parse_request(bytes) {
            Err(e) => assert_eq!(e.status, *status, "{:?}", String::from_utf8_lossy(bytes)),
            other => panic!("{:?}: expected {status:?}, got {other:?}", String::from_utf8_lossy(bytes)),
        }
    }
}

#[test]
fn header_section_over_the_limit_is_431_complete_or_not() {
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES));
    assert_eq!(parse_request(&big).unwrap_err().status, Status::HeaderFieldsTooLarge);
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse_request(&big).unwrap_err().status, Status::HeaderFieldsTooLarge);
    let many: Vec<u8> = std::iter::once(b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec())
        .chain((0..=MAX_HEADERS).map(|i| format!("X{i}: v\r\n").into_bytes()))
        .chain(std::iter::once(b"\r\n".to_vec()))
        .flatten()
        .collect();
    assert_eq!(parse_request(&many).unwrap_err().status, Status::HeaderFieldsTooLarge);
}

#[test]
fn partial_knows_the_total_length_once_headers_are_in() {
    let bytes = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\nabc";
    assert_eq!(
        parse_request(bytes),
        Ok(Parsed::Partial { need: bytes.len() - 3 + 10, expects_continue: true })
    );
}

#[test]
fn body_of_exactly_the_limit_is_accepted() {
    let mut bytes =
        format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {MAX_BODY_BYTES}\r\n\r\n").into_bytes();
    bytes.resize(bytes.len() + MAX_BODY_BYTES, b'x');
    let (request, _) = complete(&bytes);
    assert_eq!(request.body.len(), MAX_BODY_BYTES);
}

/// xorshift64*: a small deterministic generator, so failures reproduce from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One framed request as the tests compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Framed {
    method: Method,
    path: String,
    query: String,
    keep_alive: bool,
    body: Vec<u8>,
}

/// How a stream of requests ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Every byte went into a complete request.
    Clean,
    /// A partial request was left: the client never finished it.
    Partial,
    /// A request was refused with this status.
    Error(Status),
}

/// What a connection would make of `input` arriving cut at `cuts`: the requests framed, in order,
/// and how the stream ended. Like a connection, it resumes each partial request where the last call
/// left it, and calls again only once `need` bytes are in.
fn frame_incrementally(input: &[u8], cuts: &[usize]) -> (Vec<Framed>, End) {
    let mut buffer = Vec::new();
    let mut framed = Vec::new();
    let mut progress = Progress::default();
    let mut need = 0;
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        buffer.extend_from_slice(&input[fed..cut]);
        fed = cut;
        while buffer.len() >= need.max(1) {
            match parse_request_resuming(&buffer, &mut progress) {
                Ok(Parsed::Complete { request, consumed }) => {
                    framed.push(Framed {
                        method: request.method,
                        path: request.path.to_string(),
                        query: request.query.to_string(),
                        keep_alive: request.keep_alive,
                        body: request.body.into_owned(),
                    });
                    buffer.drain(..consumed);
                    progress = Progress::default();
                    need = 0;
                }
                Ok(Parsed::Partial { need: more, .. }) => {
                    assert!(more > buffer.len(), "partial with all it needs: {more}");
                    need = more;
                }
                Err(e) => return (framed, End::Error(e.status)),
            }
        }
    }
    let end = if buffer.is_empty() { End::Clean } else { End::Partial };
    (framed, end)
}

#[test]
fn pipelined_requests_split_anywhere_frame_the_same() {
    let mut input = Vec::new();
    for case in COMPLETE {
        input.extend_from_slice(case.bytes);
    }
    let whole = frame_incrementally(&input, &[]);
    assert_eq!(whole.0.len(), COMPLETE.len(), "the table frames");
    assert_eq!(whole.1, End::Clean);
    for seed in 1..=500u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut cuts: Vec<usize> = (0..rng.below(40)).map(|_| rng.below(input.len())).collect();
        cuts.sort_unstable();
        assert_eq!(frame_incrementally(&input, &cuts), whole, "seed {seed}, cuts {cuts:?}");
    }
}

/// Heads whose whole-input verdict is partial, or an error found before the head ends: what a split
/// must not turn into a wait (issue 23 §7: a bare CR at the start of a later piece waited for an LF
/// until the header timeout).
const CUT_ANYWHERE: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\rX",
    b"GET / HTTP/1.1\r\nHost: a\r\nX\r",
    b"GET / HTTP/1.1\r\nHost: a\x00b",
    b"GET / HTTP/1.1\r\nHost: a\x7f",
    b"GET / HTTP/1.1\r\nHo st: a",
    b"GET / HTTP/1.1\r\n Host: a",
    b"GET / HTTP/1.1\r\nHost\x01: a",
    b"GE@T / HTTP/1.1",
    b"GET /a\x01b HTTP/1.1",
    b"GET /\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1 ",
    b"GET / HTTP/1.2x",
    b"GET / HTTP/2.0\rX",
    b"\r\n\rGET",
    b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
    b"GET / HTTP/1.1\r\nHost: a",
    b"GET /long/path/still/coming",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\rb",
];

/// Every case of every table, cut once at every point and cut into single bytes, gets the verdict
/// of the whole: the same requests, then the same end (clean, partial, or the same status).
#[test]
fn every_split_of_every_case_gets_the_verdict_of_the_whole() {
    let cases = COMPLETE
        .iter()
        .map(|case| case.bytes)
        .chain(ERRORS.iter().chain(STRICT).map(|(bytes, _)| *bytes))
        .chain(CUT_ANYWHERE.iter().copied());
    for bytes in cases {
        let whole = frame_incrementally(bytes, &[]);
        let name = String::from_utf8_lossy(bytes);
        for cut in 0..=bytes.len() {
            assert_eq!(frame_incrementally(bytes, &[cut]), whole, "{name:?} cut at {cut}");
        }
        let every_byte: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(frame_incrementally(bytes, &every_byte), whole, "{name:?} byte by byte");
    }
}

/// Issue 23 §7, the case that was found: the head sent whole is refused at once, and so is the head
/// whose bare CR starts the second piece.
#[test]
fn a_bare_cr_at_the_start_of_a_later_piece_is_refused_at_once() {
    let first = b"GET / HTTP/1.1\r\nHost: a";
    let mut progress = Progress::default();
    assert_eq!(
        parse_request_resuming(first, &mut progress),
        Ok(Parsed::Partial { need: first.len() + 1, expects_continue: false })
    );
    let mut both = first.to_vec();
    both.extend_from_slice(b"\rX");
    assert_eq!(parse_request_resuming(&both, &mut progress).unwrap_err().status, Status::BadRequest);
    assert_eq!(parse_request(&both).unwrap_err().status, Status::BadRequest);
}

/// A partial head is not parsed again for bytes that carry its last element on: a resumed call does
/// not look at what came before (a fresh one sees it has become garbage), and it still sees an end
/// of line.
#[test]
fn a_resumed_head_is_parsed_again_only_when_the_new_bytes_could_change_its_verdict() {
    for head in [&b"GET / HTTP/1.1\r\nHost: exam"[..], b"GET / HTTP/1.1\r\nX-Na", b"GET /pa", b"OPTI"] {
        let mut progress = Progress::default();
        assert!(matches!(parse_request_resuming(head, &mut progress), Ok(Parsed::Partial { .. })));
        let mut tampered = head.to_vec();
        tampered[0] = b'\x00';
        tampered.extend_from_slice(b"abc");
        let mut resumed = progress;
        assert!(matches!(parse_request_resuming(&tampered, &mut resumed), Ok(Parsed::Partial { .. })));
        assert!(parse_request(&tampered).is_err());
        tampered.extend_from_slice(b" \r\n");
        assert!(
            parse_request_resuming(&tampered, &mut resumed).is_err(),
            "{:?}",
            String::from_utf8_lossy(head)
        );
    }
}

/// A head that does not end within 8 KiB is refused for what did not fit (RFC 9112 §3): a method
/// longer than any implemented 501, a target 414, the fields 431; and the verdict comes from the
/// first 8 KiB alone, whatever follows them.
#[test]
fn an_oversized_head_is_refused_for_the_part_that_did_not_fit() {
    let method = vec![b'A'; 100 * 1024];
    let mut target = b"GET /".to_vec();
    target.resize(MAX_HEADER_BYTES + 10, b'a');
    let mut fields = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
    fields.resize(MAX_HEADER_BYTES + 10, b'a');
    for (head, status) in [
        (method, Status::NotImplemented),
        (target, Status::UriTooLong),
        (fields, Status::HeaderFieldsTooLarge),
    ] {
        assert_eq!(parse_request(&head).unwrap_err().status, status);
        for tail in [&b" HTTP/1.1\r\nHost: a\r\n\r\n"[..], b"\r\x00\n", b"\r\n\r\n"] {
            let mut longer = head.clone();
            longer.extend_from_slice(tail);
            assert_eq!(parse_request(&longer).unwrap_err().status, status);
        }
    }
}

#[test]
fn random_bytes_never_panic_and_frame_alike_however_split() {
    let alphabet: &[u8] =
        b"GET POST /echo HTTP/1.1\r\n:chunked Content-Length Host: 0123456789abcdef;\x00\xff";
    for seed in 1..=20_000u64 {
        let mut rng = Rng(seed);
        let len = rng.below(200);
        let mut bytes: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        if seed % 2 == 0 {
            let prefix: &[u8] = if seed % 4 == 0 {
                b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            } else {
                b"GET / HTTP/1.1\r\nHost: a\r\n"
            };
            bytes.splice(0..0, prefix.iter().copied());
        }
        if let Ok(Parsed::Complete { consumed, .. }) = parse_request(&bytes) {
            assert!(consumed <= bytes.len(), "seed {seed}");
        }
        let whole = frame_incrementally(&bytes, &[]);
        let mut cuts: Vec<usize> = (0..rng.below(20)).map(|_| rng.below(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let split = frame_incrementally(&bytes, &cuts);
        assert_eq!(whole, split, "seed {seed}, cuts {cuts:?}: {:?}", String::from_utf8_lossy(&bytes));
    }
}

/// RFC 9112 §7.1.2: the trailer section is held to the same limit as the header section, whether
/// or not its end has arrived.
#[test]
fn trailer_section_over_the_limit_is_431_complete_or_not() {
    let mut request =
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 10 * 1024));
    assert_eq!(parse_request(&request).unwrap_err().status, Status::HeaderFieldsTooLarge);
    request.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse_request(&request).unwrap_err().status, Status::HeaderFieldsTooLarge);
    let mut many_small =
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
    for i in 0..1000 {
        many_small.extend_from_slice(format!("X{i}: v\r\n").as_bytes());
    }
    many_small.extend_from_slice(b"\r\n");
    assert_eq!(parse_request(&many_small).unwrap_err().status, Status::HeaderFieldsTooLarge);
}

#[test]
fn http10_expecting_continue_is_not_told_to_continue() {
    let http10 = b"POST /echo HTTP/1.0\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n";
    assert_eq!(
        parse_request(http10),
        Ok(Parsed::Partial { need: http10.len() + 10, expects_continue: false })
    );
}

/// A chunked body is walked once: a call that resumes knows where the chunk it waits for ends, and
/// each resumed call goes on from the last whole chunk.
#[test]
fn resumed_chunked_parsing_goes_on_from_the_last_whole_chunk() {
    let head = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut request = head.to_vec();
    for _ in 0..1000 {
        request.extend_from_slice(b"1\r\nx\r\n");
    }
    request.extend_from_slice(b"10\r\n0123");
    let mut progress = Progress::default();
    let need = head.len() + 1000 * 6 + 4 + 16 + 2;
    assert_eq!(
        parse_request_resuming(&request, &mut progress),
        Ok(Parsed::Partial { need, expects_continue: false })
    );
    assert!(progress.head_complete());
    // What was walked is not walked again: the resumed call does not look at the bytes before the
    // chunk it waits for (a fresh one sees they have become garbage).
    let mut tampered = request.clone();
    tampered[head.len()] = b'z';
    tampered.push(b'4');
    let mut resumed = progress;
    assert_eq!(
        parse_request_resuming(&tampered, &mut resumed),
        Ok(Parsed::Partial { need, expects_continue: false })
    );
    assert!(parse_request(&tampered).is_err());
    request.extend_from_slice(b"456789abcdef\r\n0\r\n\r\n");
    let Ok(Parsed::Complete { request: framed, consumed }) = parse_request_resuming(&request, &mut progress)
    else {
        panic!("the finished body frames")
    };
    assert_eq!(consumed, request.len());
    assert_eq!(framed.body.len(), 1000 + 16);
}

/// The remembered Host stands only for the very same bytes: a value of any length from 1 to 30
/// differing from a valid one just seen in any single byte is judged on its own.
#[test]
fn a_remembered_host_stands_only_for_the_same_bytes() {
    let request = |host: &[u8]| [b"GET / HTTP/1.1\r\nHost: ".as_slice(), host, b"\r\n\r\n"].concat();
    for len in 1..=30 {
        let valid: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        for at in 0..len {
            assert!(matches!(parse_request(&request(&valid)), Ok(Parsed::Complete { .. })), "{len}");
            let mut invalid = valid.clone();
            invalid[at] = b'@';
            match parse_request(&request(&invalid)) {
                Err(e) => assert_eq!(e.status, Status::BadRequest, "{:?}", String::from_utf8_lossy(&invalid)),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(&invalid)),
            }
        }
    }
}
