//! Table tests: each response whole, cut at every byte, and fed in two pieces split anywhere.

use super::*;

/// Feeds `pieces` one after the other the way a connection does (unused bytes are presented again
/// with the next piece), then the end of the stream; returns the responses found, or the error.
fn feed(pieces: &[&[u8]], has_body: bool, closed: bool) -> Result<Vec<Response>, FramingError> {
    let mut parser = ResponseParser::default();
    let mut pending = Vec::new();
    let mut found = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        loop {
            match parser.parse(&pending, has_body)? {
                Step::Complete { consumed, response } => {
                    found.push(response);
                    pending.drain(..consumed);
                    if pending.is_empty() {
                        break;
                    }
                }
                Step::Partial { consumed } => {
                    pending.drain(..consumed);
                    break;
                }
            }
        }
    }
    if closed {
        found.extend(parser.finish()?);
    }
    Ok(found)
}

const OK: Response = Response { status: 200, close: false };

/// Complete responses and what they parse to.
const GOOD: &[(&str, &[u8], bool, &[Response])] = &[
    (
        "Content-Length",
        b"HTTP/1.1 200 OK\r\nServer: acceptlab\r\nContent-Length: 13\r\n\r\nHello, World!",
        true,
        &[OK],
    ),
    ("empty body", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true, &[OK]),
    (
        "chunked, with extension and trailer",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nHello\r\n8\r\n, World!\r\n0\r\nT: 1\r\n\r\n",
        true,
        &[OK],
    ),
    ("HEAD: length but no body", b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n", false, &[OK]),
    ("204 without length", b"HTTP/1.1 204 No Content\r\n\r\n", true, &[Response { status: 204, close: false }]),
    (
        "100 Continue, then the response",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        true,
        &[Response { status: 201, close: false }],
    ),
    (
        "Connection: close",
        b"HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        true,
        &[Response { status: 500, close: true }],
    ),
    (
        "two pipelined",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
        true,
        &[OK, Response { status: 404, close: false }],
    ),
];

#[test]
fn complete_responses_parse_whole_and_in_any_two_pieces() {
    for &(name, bytes, has_body, expected) in GOOD {
        assert_eq!(feed(&[bytes], has_body, false).as_deref(), Ok(expected), "{name}");
        for cut in 0..=bytes.len() {
            let (first, second) = bytes.split_at(cut);
            assert_eq!(
                feed(&[first, second], has_body, false).as_deref(),
                Ok(expected),
                "{name} cut at {cut}"
            );
        }
    }
}

#[test]
fn every_truncated_prefix_of_a_single_response_is_partial() {
    for &(name, bytes, has_body, expected) in GOOD.iter().filter(|case| case.3.len() == 1) {
        for cut in 0..bytes.len() {
            let found = feed(&[&bytes[..cut]], has_body, false);
            assert_eq!(found.as_deref(), Ok(&[][..]), "{name} cut at {cut}");
        }
        assert_eq!(feed(&[bytes], has_body, false).as_deref(), Ok(expected), "{name}");
    }
}

#[test]
fn byte_by_byte_is_the_same_as_whole() {
    for &(name, bytes, has_body, expected) in GOOD {
        let bytes: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(feed(&bytes, has_body, false).as_deref(), Ok(expected), "{name}");
    }
}

#[test]
fn a_body_without_length_ends_at_the_close() {
    let bytes = b"HTTP/1.0 200 OK\r\n\r\nsome body";
    assert_eq!(feed(&[bytes], true, false).as_deref(), Ok(&[][..]));
    assert_eq!(feed(&[bytes], true, true).as_deref(), Ok(&[Response { status: 200, close: true }][..]));
}

#[test]
fn a_close_in_the_middle_is_an_error_and_between_responses_is_not() {
    let whole = GOOD[0].1;
    assert_eq!(feed(&[whole], true, true).as_deref(), Ok(&[OK][..]));
    for cut in 1..whole.len() {
        let closed = feed(&[&whole[..cut]], true, true);
        let head_cut = cut < whole.len() - 13;
        // A head cut short leaves no parser state, only unused bytes: the connection sees those.
        assert_eq!(closed.is_err(), !head_cut, "cut at {cut}: {closed:?}");
    }
}

/// Responses that cannot be framed, and the reason given.
const BAD: &[(&[u8], &str)] = &[
    (b"HTTX/1.1 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 2x0 OK\r\n\r\n", "malformed status line or header"),
    (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "malformed status line or header"),
    (b"HTTP/2.0 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", "Content-Length is not a number"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting Content-Length"),
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "both Content-Length and Transfer-Encoding",
    ),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "transfer coding other than chunked"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", "malformed chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "chunk data longer than its size"),
];

#[test]
fn malformed_responses_are_errors_however_they_arrive() {
    for &(bytes, reason) in BAD {
        assert_eq!(
            feed(&[bytes], true, false),
            Err(FramingError(reason)),
            "{}",
            String::from_utf8_lossy(bytes)
        );
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(feed(&pieces, true, false), Err(FramingError(reason)), "byte by byte");
    }
}

#[test]
fn an_endless_header_section_is_refused() {
    let mut bytes = b"HTTP/1.1 200 OK\r\nX-Filler: ".to_vec();
    bytes.resize(MAX_HEAD_BYTES + 1, b'x');
    assert_eq!(feed(&[&bytes], true, false), Err(FramingError("header section over 64 KiB")));
}

#[test]
fn a_large_body_is_consumed_as_it_arrives() {
    let mut parser = ResponseParser::default();
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
    assert_eq!(parser.parse(head, true), Ok(Step::Partial { consumed: head.len() }));
    let piece = [b'x'; 4096];
    let mut left = 1_000_000;
    while left > piece.len() {
        assert_eq!(parser.parse(&piece, true), Ok(Step::Partial { consumed: piece.len() }));
        left -= piece.len();
    }
    assert_eq!(parser.parse(&piece, true), Ok(Step::Complete { consumed: left, response: OK }));
    assert_eq!(parser.finish(), Ok(None));
}

#[test]
fn a_head_like_the_last_one_but_for_one_byte_is_parsed_again() {
    let mut parser = ResponseParser::default();
    let first = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for _ in 0..3 {
        assert_eq!(parser.parse(first, true), Ok(Step::Complete { consumed: first.len(), response: OK }));
    }
    let longer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes";
    assert_eq!(parser.parse(longer, true), Ok(Step::Complete { consumed: longer.len(), response: OK }));
    let status = b"HTTP/1.1 503 OK\r\nContent-Length: 3\r\n\r\nyes";
    let unavailable = Response { status: 503, close: false };
    assert_eq!(
        parser.parse(status, true),
        Ok(Step::Complete { consumed: status.len(), response: unavailable })
    );
    // The same head after a HEAD request has no body.
    let head = &status[..status.len() - 3];
    assert_eq!(
        parser.parse(status, false),
        Ok(Step::Complete { consumed: head.len(), response: unavailable })
    );
    let broken = b"HTTP/1.1 503 OK\r\nContent-Length: 3x\r\n\r\nyes";
    assert_eq!(parser.parse(broken, true), Err(FramingError("Content-Length is not a number")));
}
