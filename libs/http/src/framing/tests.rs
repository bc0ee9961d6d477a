//! Table tests of the framing: each complete request, every truncated prefix of it (always partial),
//! the errors with their statuses, and a property test that feeds pipelined requests split at random
//! points, and random bytes, through the same incremental loop a connection runs.

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
    Case { bytes: b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", method: Method::Post, path: "/echo", query: "", keep_alive: true, body: b"abc" },
    Case {
        bytes: b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1 ;ext=1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n",
        method: Method::Post, path: "/echo", query: "", keep_alive: true, body: b"hello!",
    },
    Case { bytes: b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, keep-alive\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: false, body: b"" },
    Case { bytes: b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", method: Method::Get, path: "/", query: "", keep_alive: false, body: b"" },
    Case { bytes: b"PUT /echo HTTP/1.1\r\nHost: a\r\n\r\n", method: Method::Other, path: "/echo", query: "", keep_alive: true, body: b"" },
    Case { bytes: b"GET http://example.com/stats?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n", method: Method::Get, path: "/stats", query: "x=1", keep_alive: true, body: b"" },
];

const ERRORS: &[(&[u8], Status)] = &[
    (b"GARBAGE\r\n\r\n", Status::BadRequest),
    (b"GET / HTTP/2.0\r\n\r\n", Status::VersionNotSupported),
    (b"GET / HTTP/1.2\r\n\r\n", Status::VersionNotSupported),
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
    for (bytes, status) in ERRORS {
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

/// What a connection would make of `input` arriving in `pieces`: the bodies and paths of the requests
/// framed, in order, or the error that stopped it. Like a connection, it resumes each partial
/// request where the last call left it, and calls again only once `need` bytes are in.
fn frame_incrementally(input: &[u8], cuts: &[usize]) -> Result<Vec<(String, Vec<u8>)>, Status> {
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
                    framed.push((request.path.to_string(), request.body.into_owned()));
                    buffer.drain(..consumed);
                    progress = Progress::default();
                    need = 0;
                }
                Ok(Parsed::Partial { need: more, .. }) => {
                    assert!(more > buffer.len(), "partial with all it needs: {more}");
                    need = more;
                }
                Err(e) => return Err(e.status),
            }
        }
    }
    if !buffer.is_empty() {
        return Err(Status::RequestTimeout); // stands for "left partial": the client never finished
    }
    Ok(framed)
}

#[test]
fn pipelined_requests_split_anywhere_frame_the_same() {
    let mut input = Vec::new();
    for case in COMPLETE {
        input.extend_from_slice(case.bytes);
    }
    let whole = frame_incrementally(&input, &[]).expect("the table frames");
    assert_eq!(whole.len(), COMPLETE.len());
    for seed in 1..=500u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut cuts: Vec<usize> = (0..rng.below(40)).map(|_| rng.below(input.len())).collect();
        cuts.sort_unstable();
        assert_eq!(frame_incrementally(&input, &cuts), Ok(whole.clone()), "seed {seed}, cuts {cuts:?}");
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
        // Where a request fails may depend on how much of it had arrived (a head over 8 KiB is 431
        // before a bad byte after the limit arrives), but whether it fails may not.
        match (&whole, &split) {
            (Err(_), Err(_)) => {}
            _ => {
                assert_eq!(whole, split, "seed {seed}, cuts {cuts:?}: {:?}", String::from_utf8_lossy(&bytes))
            }
        }
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
