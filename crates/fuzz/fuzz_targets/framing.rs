//! Fuzzes the framing of a pipelined request stream, as a connection feeds it: the input's first
//! byte seeds where the stream is cut into reads, the rest is the stream.
//!
//! The property (issue 23 §7): however the stream is cut, resuming call after call as a connection
//! does gives the verdict of framing the whole stream from scratch — the same requests (method,
//! target, connection, body, key) using the same bytes, and then the same end: incomplete, or an
//! error with the same status. Checked for the cuts the first byte seeds (up to 15 reads), and for
//! a stream of up to [`EVERY_SPLIT`] bytes also for every split into two pieces and for the stream
//! fed one byte at a time. Beside it: nothing panics, a complete request never claims more bytes
//! than it has, a partial one always asks for more, and every framed request routes.
#![no_main]

use http1::{parse_request, parse_request_resuming, route, Parsed, Progress, Status};
use libfuzzer_sys::fuzz_target;

/// Streams up to this long are also checked at every two-piece split and byte by byte.
const EVERY_SPLIT: usize = 512;

/// How framing a stream ended, after the requests it framed.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Waiting for more bytes (nothing left over, or a partial request).
    Incomplete,
    /// Refused with this status.
    Refused(Status),
}

/// What framing a stream gives: each complete request (as its fields print) with the bytes it
/// used, and how it ended.
type Verdict = (Vec<(String, usize)>, End);

/// The stream framed from scratch, all of it at once: each request parsed on the whole rest.
fn whole(stream: &[u8]) -> Verdict {
    let mut framed = Vec::new();
    let mut rest = stream;
    loop {
        match parse_request(rest) {
            Ok(Parsed::Complete { request, consumed }) => {
                assert!(consumed > 0 && consumed <= rest.len(), "consumed {consumed} of {}", rest.len());
                framed.push((format!("{request:?}"), consumed));
                let _ = route(request);
                rest = &rest[consumed..];
            }
            Ok(Parsed::Partial { need, .. }) => {
                assert!(need > rest.len(), "partial, asking for {need} with {} in", rest.len());
                return (framed, End::Incomplete);
            }
            Err(e) => return (framed, End::Refused(e.status)),
        }
    }
}

/// The stream arriving cut at `cuts` (ascending offsets), framed as a connection does: after each
/// read, resumed from what the calls before saw, and called again only once the buffer holds the
/// `need` the last partial verdict asked for.
fn resumed(stream: &[u8], cuts: &[usize]) -> Verdict {
    let mut buffer = Vec::new();
    let mut framed = Vec::new();
    let mut progress = Progress::default();
    let mut need = 0;
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        buffer.extend_from_slice(&stream[fed..cut]);
        fed = cut;
        while buffer.len() >= need.max(1) {
            match parse_request_resuming(&buffer, &mut progress) {
                Ok(Parsed::Complete { request, consumed }) => {
                    assert!(
                        consumed > 0 && consumed <= buffer.len(),
                        "consumed {consumed} of {}",
                        buffer.len()
                    );
                    framed.push((format!("{request:?}"), consumed));
                    buffer.drain(..consumed);
                    progress = Progress::default();
                    need = 0;
                }
                Ok(Parsed::Partial { need: more, .. }) => {
                    assert!(more > buffer.len(), "partial, asking for {more} with {} in", buffer.len());
                    need = more;
                }
                Err(e) => return (framed, End::Refused(e.status)),
            }
        }
    }
    (framed, End::Incomplete)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
    let expected = whole(stream);
    // Cut points from a small generator seeded by the first byte: up to 15 reads.
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let mut cuts: Vec<usize> = (0..seed % 16)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize % (stream.len() + 1)
        })
        .collect();
    cuts.sort_unstable();
    assert_eq!(resumed(stream, &cuts), expected, "cut at {cuts:?}");
    if stream.len() <= EVERY_SPLIT {
        for cut in 1..stream.len() {
            assert_eq!(resumed(stream, &[cut]), expected, "cut at {cut}");
        }
        let every_byte: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(resumed(stream, &every_byte), expected, "fed one byte at a time");
    }
});
