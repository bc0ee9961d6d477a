//! Response framing, incremental: where the response in progress ends in the bytes read so far.
//!
//! The contract is httparse's, made incremental: [`ResponseParser::parse`] says the response is
//! complete (with the bytes it used), or partial (with the bytes it used: body bytes are counted and
//! dropped as they arrive, so a 1 MiB body needs no 1 MiB buffer), or an error. The bytes it did not
//! use, a header section or a chunk-size line cut short, are presented again with what follows.
//! Bodies are counted, never kept: a load generator checks framing and length, not content.

use std::mem::MaybeUninit;

/// The longest status line plus header section accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields accepted in one response.
const MAX_HEADERS: usize = 64;

/// What a complete response said that matters to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The server will close the connection after this response (`Connection: close`, or an
    /// HTTP/1.0 response without `keep-alive`).
    pub close: bool,
}

/// What [`ResponseParser::parse`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The response ended after the first `consumed` bytes.
    Complete { consumed: usize, response: Response },
    /// The response goes on past the buffer. The first `consumed` bytes were used; the rest must be
    /// presented again, followed by more.
    Partial { consumed: usize },
}

/// A response that cannot be framed: where the next one starts is unknown, so the connection is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingError(pub &'static str);

/// Where in a response body the parser stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// This many bytes of a `Content-Length` body to go.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// This many bytes of chunk data to go, then CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields after the last chunk, up to an empty line.
    Trailers,
    /// No length given: the body ends when the server closes.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body { response: Response, body: Body },
}

/// One connection's response parser: where it is, and the last header section it parsed.
#[derive(Debug, Clone)]
pub struct ResponseParser {
    state: State,
    last_head: KnownHead,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self { state: State::Head, last_head: KnownHead::default() }
    }
}

/// A header section already parsed, byte for byte, and what it said.
///
/// NOTE: a server answers the same request with the same header section, but for a `Date` that
/// changes once a second. A head that starts the buffer byte for byte like the last one parses the
/// same, so a `memcmp` of ~130 bytes stands in for httparse's ~150 ns, the largest cost a
/// pipelined response has in this process. Any byte that differs means a full parse.
#[derive(Debug, Clone, Default)]
struct KnownHead {
    bytes: Vec<u8>,
    has_body: bool,
    response: Option<(Response, Option<Body>)>,
}

impl KnownHead {
    fn parse(
        &mut self,
        buf: &[u8],
        has_body: bool,
    ) -> Result<Option<(usize, Response, Option<Body>)>, FramingError> {
        if let Some((response, body)) = self.response {
            if self.has_body == has_body && buf.starts_with(&self.bytes) {
                return Ok(Some((self.bytes.len(), response, body)));
            }
        }
        let parsed = parse_head(buf, has_body)?;
        if let Some((len, response, body)) = parsed {
            self.bytes.clear();
            self.bytes.extend_from_slice(&buf[..len]);
            self.has_body = has_body;
            self.response = Some((response, body));
        }
        Ok(parsed)
    }
}

impl ResponseParser {
    /// Parses the response in progress from `buf`. `has_body` is false for the answer to a `HEAD`,
    /// whose `Content-Length` describes a body that is not sent.
    pub fn parse(&mut self, buf: &[u8], has_body: bool) -> Result<Step, FramingError> {
        let mut pos = 0;
        let (response, mut body) = match self.state {
            State::Body { response, body } => (response, body),
            State::Head => loop {
                let Some((len, response, body)) = self.last_head.parse(&buf[pos..], has_body)? else {
                    return Ok(Step::Partial { consumed: pos });
                };
                pos += len;
                match body {
                    // An interim 1xx response: the final one follows.
                    _ if (100..200).contains(&response.status) && response.status != 101 => continue,
                    None => return Ok(Step::Complete { consumed: pos, response }),
                    Some(body) => break (response, body),
                }
            },
        };
        loop {
            let rest = &buf[pos..];
            let (used, next) = match body {
                Body::Length(0) => {
                    self.state = State::Head;
                    return Ok(Step::Complete { consumed: pos, response });
                }
                Body::Length(_) | Body::ChunkData(_) if rest.is_empty() => {
                    self.state = State::Body { response, body };
                    return Ok(Step::Partial { consumed: pos });
                }
                Body::Length(left) => {
                    let used = left.min(rest.len() as u64);
                    (used as usize, Body::Length(left - used))
                }
                Body::ChunkData(left) => {
                    let used = left.min(rest.len() as u64);
                    let next = if used == left { Body::ChunkEnd } else { Body::ChunkData(left - used) };
                    (used as usize, next)
                }
                Body::ChunkSize => match chunk_size(rest)? {
                    None => (0, body),
                    Some((len, 0)) => (len, Body::Trailers),
                    Some((len, size)) => (len, Body::ChunkData(size)),
                },
                Body::ChunkEnd => match rest {
                    [b'\r', b'\n', ..] => (2, Body::ChunkSize),
                    [] | [b'\r'] => (0, body),
                    _ => return Err(FramingError("chunk data longer than its size")),
                },
                Body::Trailers => match line_end(rest) {
                    Some(0) => {
                        self.state = State::Head;
                        return Ok(Step::Complete { consumed: pos + 2, response });
                    }
                    Some(len) => (len + 2, Body::Trailers),
                    None if rest.len() > MAX_HEAD_BYTES => return Err(FramingError("trailers over 64 KiB")),
                    None => (0, body),
                },
                Body::UntilClose => (rest.len(), body),
            };
            pos += used;
            if used == 0 && next == body {
                self.state = State::Body { response, body };
                return Ok(Step::Partial { consumed: pos });
            }
            body = next;
        }
    }

    /// Forgets the response in progress, for a new connection (the last header section is kept).
    pub fn reset(&mut self) {
        self.state = State::Head;
    }

    /// The server closed the connection: a body that runs until the close is complete now; any
    /// other response cut short is an error. `Ok(None)`: no response was in progress.
    pub fn finish(&mut self) -> Result<Option<Response>, FramingError> {
        let state = std::mem::replace(&mut self.state, State::Head);
        match state {
            State::Head => Ok(None),
            State::Body { response, body: Body::UntilClose } => Ok(Some(response)),
            State::Body { .. } => Err(FramingError("connection closed in the middle of a body")),
        }
    }
}

/// Parses a status line and header section: `Ok(None)` until it is complete, then its length, what
/// it says, and how its body is framed (`None`: no body).
fn parse_head(buf: &[u8], has_body: bool) -> Result<Option<(usize, Response, Option<Body>)>, FramingError> {
    // Uninitialised header slots: initialising 64 of them would cost more than parsing the response.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Err(FramingError("header section over 64 KiB"))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(FramingError("header section over 64 KiB"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => return Err(FramingError("not an HTTP/1.x status line")),
        Err(httparse::Error::TooManyHeaders) => return Err(FramingError("more than 64 header fields")),
        Err(_) => return Err(FramingError("malformed status line or header")),
    };
    let status = parsed.code.unwrap_or_default();
    let mut close = parsed.version == Some(0);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for header in parsed.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let len = parse_content_length(header.value)?;
            if content_length.is_some_and(|previous| previous != len) {
                return Err(FramingError("conflicting Content-Length"));
            }
            content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !header.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(FramingError("transfer coding other than chunked"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
    }
    let response = Response { status, close };
    // RFC 9112 §6.3: no body after HEAD, 1xx, 204 and 304, whatever the headers say.
    let bodiless = !has_body || (100..200).contains(&status) || status == 204 || status == 304;
    let body = match (chunked, content_length) {
        _ if bodiless => None,
        (true, Some(_)) => return Err(FramingError("both Content-Length and Transfer-Encoding")),
        (true, None) => Some(Body::ChunkSize),
        (false, Some(0)) => None,
        (false, Some(len)) => Some(Body::Length(len)),
        (false, None) => Some(Body::UntilClose),
    };
    Ok(Some((len, response, body)))
}

fn parse_content_length(value: &[u8]) -> Result<u64, FramingError> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(FramingError("Content-Length is not a number"));
    }
    Ok(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A chunk-size line: `Ok(None)` until it is complete, then its length and the size it gives.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, FramingError> {
    const BAD_CHUNK_SIZE: FramingError = FramingError("malformed chunk size");
    // httparse reads an empty line as size 0; a size needs at least one digit.
    if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
        return Err(BAD_CHUNK_SIZE);
    }
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete(found)) => Ok(Some(found)),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => Err(BAD_CHUNK_SIZE),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(BAD_CHUNK_SIZE),
    }
}

/// The length of the line at the start of `buf`, without its CRLF, once the CRLF is there.
fn line_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|pair| pair == b"\r\n")
}

#[cfg(test)]
mod tests;
