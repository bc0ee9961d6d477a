//! Fuzzes the framing of a pipelined request stream, as a connection feeds it: the input's first
//! byte seeds where the stream is cut into reads, the rest is the stream. Checks that nothing
//! panics, that a complete request never claims more bytes than it has and a partial one always
//! asks for more, that resuming a partial request frames exactly what framing the whole buffer
//! from scratch does, and that every framed request routes.
#![no_main]

use http::{parse_request, parse_request_resuming, route, Parsed, Progress};
use libfuzzer_sys::fuzz_target;

/// The paths and bodies framed from `stream` arriving cut at `cuts`, and whether it ended
/// unfinished (an error, or a partial request left over); `resume` says whether each call goes on
/// from the last (as a connection does) or starts over. A resumed head is parsed again only once a
/// new line arrives, so a bad byte is found at the end of its line: a stream that stops before
/// that ends partial where framing it whole ends in an error, and both count as unfinished.
fn frame(stream: &[u8], cuts: &[usize], resume: bool) -> (Vec<(String, Vec<u8>)>, bool) {
    let mut buffer = Vec::new();
    let mut framed = Vec::new();
    let mut progress = Progress::default();
    let mut need = 0;
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        buffer.extend_from_slice(&stream[fed..cut]);
        fed = cut;
        while buffer.len() >= need.max(1) {
            let parsed = match resume {
                true => parse_request_resuming(&buffer, &mut progress),
                false => parse_request(&buffer),
            };
            match parsed {
                Ok(Parsed::Complete { request, consumed }) => {
                    assert!(consumed > 0 && consumed <= buffer.len(), "consumed {consumed} of {}", buffer.len());
                    let path = request.path.to_string();
                    let body = request.body.to_vec();
                    let _ = route(request);
                    framed.push((path, body));
                    buffer.drain(..consumed);
                    progress = Progress::default();
                    need = 0;
                }
                Ok(Parsed::Partial { need: more, .. }) => {
                    assert!(more > buffer.len(), "partial, asking for {more} with {} in", buffer.len());
                    need = if resume { more } else { buffer.len() + 1 };
                }
                Err(_) => return (framed, true),
            }
        }
    }
    (framed, !buffer.is_empty())
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
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
    // Where a request fails may depend on how much of it had arrived (a head over the limit is 431
    // before a bad byte beyond it arrives), but not whether the stream ends unfinished, nor what
    // was framed before.
    assert_eq!(frame(stream, &[], false), frame(stream, &cuts, true));
});
