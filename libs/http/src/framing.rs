//! Request framing: how many bytes of a buffer make up the next request, and what it asks for.
//!
//! The contract is httparse's: [`parse_request`] returns a complete request and the bytes it used, or
//! partial, or an error. It never allocates for a request without a chunked body, so a pipelined batch
//! of `GET`s costs one header parse each and nothing more.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use crate::response::Status;

/// The largest request line plus header section accepted; more is answered with 431.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The most header fields accepted in one request; more is answered with 431.
pub const MAX_HEADERS: usize = 64;
/// The largest request body accepted; more is answered with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The methods the routes know; any other is kept by name for a 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// One complete request, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The path of the target, without the query (`/spin`).
    pub path: &'a str,
    /// The query after `?`, or empty (`us=100`).
    pub query: &'a str,
    /// Whether the connection stays open after the response (HTTP/1.1 unless `Connection: close`;
    /// HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// HTTP/1.0 wants `Connection: keep-alive` said back to it when the connection stays open.
    pub http10: bool,
    /// The body: borrowed when sent with Content-Length, decoded into a new buffer when chunked.
    pub body: Cow<'a, [u8]>,
}

/// What [`parse_request`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole request that used the first `consumed` bytes.
    Complete { request: Request<'a>, consumed: usize },
    /// Not yet a whole request. `need` is the total length once it is known (headers complete, body
    /// length known), else 0: the caller can skip re-parsing until that many bytes are in.
    /// `expects_continue`: headers are complete and the client waits for `100 Continue` before sending
    /// the body.
    Partial { need: usize, expects_continue: bool },
}

/// A request that cannot be framed. The response says why, and the connection is closed after it,
/// since where the next request would start is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingError {
    pub status: Status,
    pub reason: &'static str,
}

const fn error(status: Status, reason: &'static str) -> FramingError {
    FramingError { status, reason }
}

/// How the body of a request is delimited.
enum BodyFraming {
    Length(usize),
    Chunked,
}

/// What earlier calls learned about the partial request at the start of a buffer, so that the next
/// call goes on from there instead of starting over: framing a request costs time linear in its
/// bytes, however finely they arrive. A connection keeps one per request, fresh
/// (`Progress::default()`) after each complete one, and the buffer's start must not move meanwhile
/// relative to the request's first byte.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    state: State,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing seen yet.
    #[default]
    Start,
    /// The head is incomplete; its first `seen` bytes hold no end of line that was not parsed.
    Head { seen: usize },
    /// The head is whole and says the request is `need` bytes long.
    Body { need: usize, expects_continue: bool },
    /// The head (`head_len` bytes) is whole, and its chunked body is walked up to `chunks`.
    Chunked { head_len: usize, chunks: Chunks, expects_continue: bool },
}

impl Progress {
    /// Whether the request's head has arrived whole (what is missing is body).
    pub fn head_complete(&self) -> bool {
        matches!(self.state, State::Body { .. } | State::Chunked { .. })
    }
}

/// Parses the request at the start of `buf`, from scratch.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<'_>, FramingError> {
    parse_request_resuming(buf, &mut Progress::default())
}

/// Parses the request at the start of `buf`, going on from what `progress` says earlier calls saw
/// of it, and recording what this call saw.
///
/// NOTE: a head is parsed again only once a new line has arrived (at most 65 times, since more
/// than 64 fields is an error), and a chunked body is walked once: each call goes on from the last
/// complete chunk. A client sending a large body one byte per packet therefore costs one read per
/// packet, not a re-walk of everything it sent so far.
pub fn parse_request_resuming<'b>(
    buf: &'b [u8],
    progress: &mut Progress,
) -> Result<Parsed<'b>, FramingError> {
    match &mut progress.state {
        State::Start => {}
        State::Head { seen } => {
            if buf.len() <= MAX_HEADER_BYTES && !buf[(*seen).min(buf.len())..].contains(&b'\n') {
                *seen = buf.len();
                return Ok(partial(buf.len() + 1, false));
            }
        }
        &mut State::Body { need, expects_continue } => {
            if buf.len() < need {
                return Ok(partial(need, expects_continue));
            }
        }
        State::Chunked { head_len, chunks, expects_continue } => {
            if let Walked::Partial { need } = chunks.walk(&buf[*head_len..], None)? {
                return Ok(partial(*head_len + need, *expects_continue));
            }
        }
    }
    // Uninitialised header slots: initialising 64 of them would cost more than parsing a small request.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let header_len = match parsed.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEADER_BYTES => {
            return Err(error(Status::HeaderFieldsTooLarge, "header section over 8 KiB"))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEADER_BYTES => {
            return Err(error(Status::HeaderFieldsTooLarge, "header section over 8 KiB"))
        }
        Ok(httparse::Status::Partial) => {
            progress.state = State::Head { seen: buf.len() };
            return Ok(partial(buf.len() + 1, false));
        }
        Err(httparse::Error::Version) => {
            return Err(error(Status::VersionNotSupported, "only HTTP/1.0 and HTTP/1.1 are served"))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(error(Status::HeaderFieldsTooLarge, "more than 64 header fields"))
        }
        Err(_) => return Err(error(Status::BadRequest, "malformed request")),
    };
    let http10 = parsed.version == Some(0);
    let head = RequestHead::from_headers(parsed.headers, http10)?;
    let (path, query) = split_target(parsed.path.unwrap_or_default())?;
    let method = match parsed.method.unwrap_or_default() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let expects_continue = head.expects_continue;
    let rest = &buf[header_len..];
    let (body, body_len) = match head.framing {
        BodyFraming::Length(len) if len > MAX_BODY_BYTES => {
            return Err(error(Status::PayloadTooLarge, "request body over 1 MiB"))
        }
        BodyFraming::Length(len) if rest.len() < len => {
            let need = header_len + len;
            progress.state = State::Body { need, expects_continue };
            return Ok(partial(need, expects_continue));
        }
        BodyFraming::Length(len) => (Cow::Borrowed(&rest[..len]), len),
        BodyFraming::Chunked => {
            let mut chunks = match progress.state {
                State::Chunked { chunks, .. } => chunks,
                _ => Chunks::default(),
            };
            match chunks.walk(rest, None)? {
                Walked::Partial { need } => {
                    progress.state = State::Chunked { head_len: header_len, chunks, expects_continue };
                    return Ok(partial(header_len + need, expects_continue));
                }
                Walked::Complete { consumed } => {
                    let mut body = Vec::with_capacity(chunks.body_len);
                    Chunks::default().walk(rest, Some(&mut body))?;
                    (Cow::Owned(body), consumed)
                }
            }
        }
    };
    let request = Request { method, path, query, keep_alive: head.keep_alive, http10, body };
    Ok(Parsed::Complete { request, consumed: header_len + body_len })
}

const fn partial(need: usize, expects_continue: bool) -> Parsed<'static> {
    Parsed::Partial { need, expects_continue }
}

/// What the header fields say about framing and the connection.
struct RequestHead {
    framing: BodyFraming,
    keep_alive: bool,
    expects_continue: bool,
}

impl RequestHead {
    fn from_headers(headers: &[httparse::Header<'_>], http10: bool) -> Result<Self, FramingError> {
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut hosts = 0;
        let mut close = false;
        let mut asked_keep_alive = false;
        let mut expects_continue = false;
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                let len = parse_content_length(header.value)?;
                if content_length.is_some_and(|previous| previous != len) {
                    return Err(error(Status::BadRequest, "conflicting Content-Length"));
                }
                content_length = Some(len);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if !trimmed(header.value).eq_ignore_ascii_case(b"chunked") {
                    return Err(error(Status::NotImplemented, "only chunked transfer coding is supported"));
                }
                if chunked {
                    return Err(error(Status::BadRequest, "chunked applied twice"));
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case("host") {
                hosts += 1;
            } else if name.eq_ignore_ascii_case("connection") {
                for option in header.value.split(|&b| b == b',').map(trimmed) {
                    close |= option.eq_ignore_ascii_case(b"close");
                    asked_keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                expects_continue = trimmed(header.value).eq_ignore_ascii_case(b"100-continue");
            }
        }
        // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host; any request at most one.
        if hosts > 1 || (hosts == 0 && !http10) {
            return Err(error(Status::BadRequest, "an HTTP/1.1 request needs exactly one Host"));
        }
        let framing = match (chunked, content_length) {
            // Both at once is how request smuggling starts (RFC 9112 §6.3): refuse it.
            (true, Some(_)) => {
                return Err(error(Status::BadRequest, "both Content-Length and Transfer-Encoding"))
            }
            (true, None) => BodyFraming::Chunked,
            (false, len) => BodyFraming::Length(len.unwrap_or(0)),
        };
        // `close` wins over `keep-alive` when a client says both (RFC 9112 §9.6).
        let keep_alive = !close && (!http10 || asked_keep_alive);
        // An HTTP/1.0 client does not know 100 Continue (RFC 9110 §10.1.1): it gets no interim one.
        let expects_continue = expects_continue && !http10;
        Ok(Self { framing, keep_alive, expects_continue })
    }
}

fn parse_content_length(value: &[u8]) -> Result<usize, FramingError> {
    let digits = trimmed(value);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(error(Status::BadRequest, "Content-Length is not a number"));
    }
    Ok(digits.iter().fold(0usize, |n, d| n.saturating_mul(10).saturating_add(usize::from(d - b'0'))))
}

fn trimmed(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// Splits a request target into path and query. The absolute form (`http://host/path`), which
/// servers must accept (RFC 9112 §3.2.2), is reduced to its path.
fn split_target(target: &str) -> Result<(&str, &str), FramingError> {
    let path_and_query = match target.as_bytes().first() {
        Some(b'/') => target,
        _ => match target.split_once("://") {
            Some((_scheme, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => return Err(error(Status::BadRequest, "request target must start with /")),
        },
    };
    Ok(match path_and_query.bytes().position(|b| b == b'?') {
        Some(i) => (&path_and_query[..i], &path_and_query[i + 1..]),
        None => (path_and_query, ""),
    })
}

/// The longest chunk-size line, extensions included; a longer one is an error.
const MAX_CHUNK_LINE: usize = 4 * 1024;

const BAD_CHUNK: FramingError = error(Status::BadRequest, "malformed chunked body");

/// How far a chunked body has been walked: everything before `pos` is whole chunks (or trailer
/// lines) that were checked and need not be looked at again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Chunks {
    /// Offset in the body of the first line or chunk not yet walked.
    pos: usize,
    /// The decoded length of the chunks walked.
    body_len: usize,
    /// Where the trailer section starts, once the last chunk has been seen.
    trailers_from: Option<usize>,
    /// The body ended at `pos`.
    done: bool,
}

/// Where a walk of a chunked body stopped.
enum Walked {
    /// The body ends after `consumed` bytes.
    Complete { consumed: usize },
    /// More is needed: nothing new can be learned before the body has `need` bytes.
    Partial { need: usize },
}

impl Chunks {
    /// Walks on from where the last walk stopped over `body` (the bytes after the head). With
    /// `sink`, the chunks' data is appended to it. Every line must end in CRLF: a bare LF or CR,
    /// an empty chunk-size line, or a chunk without its CRLF is malformed (RFC 9112 §7.1).
    fn walk(&mut self, body: &[u8], mut sink: Option<&mut Vec<u8>>) -> Result<Walked, FramingError> {
        while !self.done {
            let rest = &body[self.pos..];
            if let Some(trailers_from) = self.trailers_from {
                let Some(line) = next_line(rest)? else {
                    if body.len() - trailers_from > MAX_HEADER_BYTES {
                        return Err(TRAILERS_TOO_LARGE);
                    }
                    return Ok(Walked::Partial { need: body.len() + 1 });
                };
                self.pos += line.len() + 2;
                if self.pos - trailers_from > MAX_HEADER_BYTES {
                    return Err(TRAILERS_TOO_LARGE);
                }
                if !line.is_empty() && !line.contains(&b':') {
                    return Err(error(Status::BadRequest, "malformed trailer field"));
                }
                self.done = line.is_empty();
                continue;
            }
            let Some(line) = next_line(&rest[..rest.len().min(MAX_CHUNK_LINE)])? else {
                if rest.len() >= MAX_CHUNK_LINE {
                    return Err(error(Status::BadRequest, "chunk-size line over 4 KiB"));
                }
                return Ok(Walked::Partial { need: body.len() + 1 });
            };
            let size = chunk_size(line)?;
            let data = self.pos + line.len() + 2;
            if size == 0 {
                self.trailers_from = Some(data);
                self.pos = data;
                continue;
            }
            if size > MAX_BODY_BYTES - self.body_len {
                return Err(error(Status::PayloadTooLarge, "request body over 1 MiB"));
            }
            let Some(chunk_and_crlf) = body.get(data..data + size + 2) else {
                return Ok(Walked::Partial { need: data + size + 2 });
            };
            let (chunk, crlf) = chunk_and_crlf.split_at(size);
            if crlf != b"\r\n" {
                return Err(BAD_CHUNK);
            }
            if let Some(sink) = sink.as_deref_mut() {
                sink.extend_from_slice(chunk);
            }
            self.body_len += size;
            self.pos = data + size + 2;
        }
        Ok(Walked::Complete { consumed: self.pos })
    }
}

const TRAILERS_TOO_LARGE: FramingError = error(Status::HeaderFieldsTooLarge, "trailer section over 8 KiB");

/// The line at the start of `buf`, without its CRLF; `None` if its end has not arrived. A line may
/// hold no CR or LF of its own: accepting a bare one where another parser would not is how
/// request smuggling starts.
fn next_line(buf: &[u8]) -> Result<Option<&[u8]>, FramingError> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return match buf.contains(&b'\r') && !buf.ends_with(b"\r") {
            true => Err(BAD_CHUNK),
            false => Ok(None),
        };
    };
    match buf[..lf].strip_suffix(b"\r") {
        Some(line) if !line.contains(&b'\r') => Ok(Some(line)),
        _ => Err(BAD_CHUNK),
    }
}

/// The size a chunk-size line announces: hex digits, then optionally extensions after `;`
/// (`chunk-ext`, RFC 9112 §7.1.1), which are ignored but may hold no control characters.
fn chunk_size(line: &[u8]) -> Result<usize, FramingError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BAD_CHUNK);
    }
    let extensions = trim_whitespace_start(&line[digits..]);
    let well_formed = extensions.is_empty()
        || (extensions[0] == b';' && extensions.iter().all(|&b| b == b'\t' || !b.is_ascii_control()));
    if !well_formed {
        return Err(BAD_CHUNK);
    }
    let size = line[..digits].iter().fold(0usize, |n, &d| {
        let digit = (d as char).to_digit(16).unwrap_or(0) as usize;
        n.saturating_mul(16).saturating_add(digit)
    });
    Ok(size)
}

/// `line` without the spaces and tabs at its start (`BWS`, RFC 9110 §5.6.3).
fn trim_whitespace_start(line: &[u8]) -> &[u8] {
    let blank = line.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &line[blank..]
}

#[cfg(test)]
mod tests;
