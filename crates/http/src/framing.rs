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

/// Parses the request at the start of `buf`.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<'_>, FramingError> {
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
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial { need: 0, expects_continue: false }),
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
    let rest = &buf[header_len..];
    let (body, body_len) = match head.framing {
        BodyFraming::Length(len) if len > MAX_BODY_BYTES => {
            return Err(error(Status::PayloadTooLarge, "request body over 1 MiB"))
        }
        BodyFraming::Length(len) if rest.len() < len => {
            let need = header_len + len;
            return Ok(Parsed::Partial { need, expects_continue: head.expects_continue });
        }
        BodyFraming::Length(len) => (Cow::Borrowed(&rest[..len]), len),
        BodyFraming::Chunked => match walk_chunks(rest, None)? {
            None => return Ok(Parsed::Partial { need: 0, expects_continue: head.expects_continue }),
            Some(chunked) => {
                let mut body = Vec::with_capacity(chunked.body_len);
                walk_chunks(rest, Some(&mut body))?;
                (Cow::Owned(body), chunked.consumed)
            }
        },
    };
    let request = Request { method, path, query, keep_alive: head.keep_alive, http10, body };
    Ok(Parsed::Complete { request, consumed: header_len + body_len })
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
        let mut keep_alive = !http10;
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
                chunked = true;
            } else if name.eq_ignore_ascii_case("connection") {
                for option in header.value.split(|&b| b == b',').map(trimmed) {
                    if option.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case("expect") {
                expects_continue = trimmed(header.value).eq_ignore_ascii_case(b"100-continue");
            }
        }
        let framing = match (chunked, content_length) {
            // Both at once is how request smuggling starts (RFC 9112 §6.3): refuse it.
            (true, Some(_)) => {
                return Err(error(Status::BadRequest, "both Content-Length and Transfer-Encoding"))
            }
            (true, None) => BodyFraming::Chunked,
            (false, len) => BodyFraming::Length(len.unwrap_or(0)),
        };
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

/// Where a chunked body ends, and how long it is once decoded.
struct ChunkedBody {
    consumed: usize,
    body_len: usize,
}

/// Walks a chunked body at the start of `buf`: `Ok(None)` if it is not all there yet. With `sink`,
/// the chunks' data is appended to it. Done in two passes (find the end, then copy) so that a body
/// arriving in many reads is not copied again on every read.
fn walk_chunks(buf: &[u8], mut sink: Option<&mut Vec<u8>>) -> Result<Option<ChunkedBody>, FramingError> {
    const BAD_CHUNK: FramingError = error(Status::BadRequest, "malformed chunked body");
    let mut pos = 0;
    let mut body_len = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(BAD_CHUNK),
        };
        pos += size_len;
        if size == 0 {
            return Ok(skip_trailers(&buf[pos..])?.map(|len| ChunkedBody { consumed: pos + len, body_len }));
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > MAX_BODY_BYTES - body_len {
            return Err(error(Status::PayloadTooLarge, "request body over 1 MiB"));
        }
        let Some(chunk_and_crlf) = buf.get(pos..pos + size + 2) else { return Ok(None) };
        let (chunk, crlf) = chunk_and_crlf.split_at(size);
        if crlf != b"\r\n" {
            return Err(BAD_CHUNK);
        }
        if let Some(sink) = sink.as_deref_mut() {
            sink.extend_from_slice(chunk);
        }
        body_len += size;
        pos += size + 2;
    }
}

/// Skips the trailer fields after the last chunk, up to and including the empty line.
fn skip_trailers(buf: &[u8]) -> Result<Option<usize>, FramingError> {
    let mut pos = 0;
    loop {
        let Some(line_len) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            if buf.len() > MAX_HEADER_BYTES {
                return Err(error(Status::HeaderFieldsTooLarge, "trailer section over 8 KiB"));
            }
            return Ok(None);
        };
        pos += line_len + 2;
        if line_len == 0 {
            return Ok(Some(pos));
        }
    }
}

#[cfg(test)]
mod tests;
