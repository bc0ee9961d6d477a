//! Request framing: how many bytes of a buffer make up the next request, and what it asks for.
//!
//! The contract is httparse's: [`parse_request`] returns a complete request and the bytes it used, or
//! partial, or an error. It never allocates for a request without a chunked body, so a pipelined batch
//! of `GET`s costs one header parse each and nothing more.
//!
//! httparse does the head; this module adds what RFC 9112 and RFC 9110 ask beyond it (docs/spec.md,
//! "What is refused, and why", lists each rule with its clause): the HTTP-version (a later HTTP/1
//! minor version is served as 1.1), the request target's grammar, Host, Content-Length and
//! Transfer-Encoding, and the chunked body with its extensions and trailer fields.

use std::borrow::Cow;
use std::cell::Cell;
use std::mem::MaybeUninit;

use crate::response::Status;

/// The largest request line plus header section accepted; more is answered with 431 (or 414 and
/// 501, when the request line alone does not fit).
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
    Options,
    Other,
}

/// One complete request, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The path of the target, without the query (`/spin`); `*` for `OPTIONS *`.
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
    /// The raw value of an `Idempotency-Key` field, looked for in POST requests only (the one route
    /// that reads it is `POST /ledger`; see `crate::idempotency`).
    pub idempotency_key: Option<&'a [u8]>,
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

const fn bad(reason: &'static str) -> FramingError {
    error(Status::BadRequest, reason)
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
    /// The head is incomplete; its first `seen` bytes were parsed, and ended inside an element that
    /// the bytes `continues` accepts carry on without changing the verdict.
    Head { seen: usize, continues: Continues },
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

    /// Whether the request's whole length is known (its head is whole and gives a Content-Length):
    /// then the `need` of [`Parsed::Partial`] is that length, not a lower bound.
    pub fn length_known(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }
}

/// Parses the request at the start of `buf`, from scratch.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<'_>, FramingError> {
    parse_request_resuming(buf, &mut Progress::default())
}

/// Parses the request at the start of `buf`, going on from what `progress` says earlier calls saw
/// of it, and recording what this call saw. The verdict — complete with the same request, partial,
/// or the same error — never depends on how the bytes were cut into calls.
///
/// NOTE: a partial head is parsed again only when the new bytes could change its verdict: an end
/// of line, or a byte that the element the head stopped in may not hold (a bare CR, a space in a
/// header name, a NUL...). Bytes that carry the element on leave it partial without a parse, so a
/// client sending its head one byte per packet costs one table lookup per byte, and a parse per
/// line. A chunked body is walked once: each call goes on from the last complete chunk.
pub fn parse_request_resuming<'b>(
    buf: &'b [u8],
    progress: &mut Progress,
) -> Result<Parsed<'b>, FramingError> {
    match &mut progress.state {
        State::Start => {}
        State::Head { seen, continues } => {
            if buf.len() <= MAX_HEADER_BYTES && continues.accepts(&buf[(*seen).min(buf.len())..]) {
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
    // The head is judged on its first 8 KiB alone: whatever arrives after them, and however it was
    // cut, a head that has not ended by then gets the same refusal.
    let window = &buf[..buf.len().min(MAX_HEADER_BYTES)];
    // Uninitialised header slots: initialising 64 of them would cost more than parsing a small request.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut later_minor_headers: [httparse::Header<'_>; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let head = match parsed.parse_with_uninit_headers(window, &mut headers) {
        Ok(httparse::Status::Complete(len)) => Head {
            method: parsed.method.unwrap_or_default(),
            target: parsed.path.unwrap_or_default(),
            http10: parsed.version == Some(0),
            fields: parsed.headers,
            len,
        },
        Ok(httparse::Status::Partial) => return head_partial(buf, window, progress),
        // httparse knows HTTP/1.0 and HTTP/1.1 only: what else the version is decides.
        Err(httparse::Error::Version) => {
            later_minor_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match later_minor_version(window, &mut later_minor_headers)? {
                Some(head) => head,
                None => return head_partial(buf, window, progress),
            }
        }
        Err(httparse::Error::TooManyHeaders) => return Err(TOO_MANY_FIELDS),
        Err(_) => return Err(bad("malformed request")),
    };
    let header_len = head.len;
    let fields = RequestHead::from_headers(head.fields, head.http10)?;
    let method = match head.method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let (path, query) = split_target(head.target, method)?;
    let expects_continue = fields.expects_continue;
    let rest = &buf[header_len..];
    let (body, body_len) = match fields.framing {
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
    let idempotency_key = match method {
        Method::Post => crate::idempotency::key_field(head.fields)
            .map_err(|reason| FramingError { status: Status::BadRequest, reason })?,
        _ => None,
    };
    let request = Request {
        method,
        path,
        query,
        keep_alive: fields.keep_alive,
        http10: head.http10,
        body,
        idempotency_key,
    };
    Ok(Parsed::Complete { request, consumed: header_len + body_len })
}

const fn partial(need: usize, expects_continue: bool) -> Parsed<'static> {
    Parsed::Partial { need, expects_continue }
}

const TOO_MANY_FIELDS: FramingError = error(Status::HeaderFieldsTooLarge, "more than 64 header fields");

/// A whole head: its request line's parts, its field lines, and its length with the empty line.
struct Head<'b, 'h> {
    method: &'b str,
    target: &'b str,
    http10: bool,
    fields: &'h [httparse::Header<'b>],
    len: usize,
}

/// The verdict on a head that has not ended in `window`, the first 8 KiB of `buf`: partial while
/// it may still end within the limit, else refused for whatever did not fit.
fn head_partial<'b>(buf: &[u8], window: &[u8], progress: &mut Progress) -> Result<Parsed<'b>, FramingError> {
    if buf.len() > MAX_HEADER_BYTES {
        return Err(too_large(window));
    }
    progress.state = State::Head { seen: buf.len(), continues: Continues::after(window) };
    Ok(partial(buf.len() + 1, false))
}

/// What a head that does not end within 8 KiB is refused with, named by the part that did not fit:
/// a method longer than any implemented 501, a request target 414 (both RFC 9112 §3), the header
/// fields 431 (RFC 6585 §5).
#[cold]
fn too_large(window: &[u8]) -> FramingError {
    let head = &window[empty_lines_len(window)..];
    if head.contains(&b'\n') {
        error(Status::HeaderFieldsTooLarge, "header section over 8 KiB")
    } else if head.is_empty() {
        bad("no request line in the first 8 KiB")
    } else if !head.contains(&b' ') {
        error(Status::NotImplemented, "method longer than any implemented")
    } else {
        error(Status::UriTooLong, "request line over 8 KiB")
    }
}

/// The length of the empty lines before the request line, which are ignored (RFC 9112 §2.2: a
/// server SHOULD ignore at least one); httparse skips them the same way.
fn empty_lines_len(buf: &[u8]) -> usize {
    let mut len = 0;
    loop {
        match &buf[len..] {
            [b'\r', b'\n', ..] => len += 2,
            [b'\n', ..] => len += 1,
            _ => return len,
        }
    }
}

/// Which bytes may follow a partial head without changing httparse's verdict on it (partial): those
/// that carry on the element it stopped in. Anything else — a line's end, a CR, a delimiter — has the
/// head parsed again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Continues {
    /// The head stopped where any byte may change the verdict: at a line's start, after a CR, in the
    /// HTTP-version.
    #[default]
    Nothing,
    /// Inside the method or a field name: more token characters.
    Token,
    /// Inside the request target: more of the bytes httparse takes there.
    Target,
    /// After a field's colon: more field-value bytes, spaces and tabs.
    FieldValue,
}

impl Continues {
    /// Where the partial head `head` stopped (httparse found no error in it).
    fn after(head: &[u8]) -> Continues {
        let head = &head[empty_lines_len(head)..];
        if head.last() == Some(&b'\r') {
            return Continues::Nothing;
        }
        match head.iter().rposition(|&b| b == b'\n') {
            None => match head.iter().filter(|&&b| b == b' ').count() {
                0 if !head.is_empty() => Continues::Token,
                1 => Continues::Target,
                _ => Continues::Nothing,
            },
            Some(lf) => match &head[lf + 1..] {
                [] => Continues::Nothing,
                line if line.contains(&b':') => Continues::FieldValue,
                _ => Continues::Token,
            },
        }
    }

    fn accepts(self, bytes: &[u8]) -> bool {
        let set = match self {
            Continues::Nothing => return bytes.is_empty(),
            Continues::Token => &TCHAR,
            Continues::Target => &TARGET_BYTE,
            Continues::FieldValue => &FIELD_VALUE,
        };
        bytes.iter().all(|&b| set[usize::from(b)])
    }
}

/// The head of a request whose HTTP-version httparse refused: a malformed version is a syntax
/// error (400, RFC 9112 §2.3); a well-formed version with another major number is one not served
/// (505, RFC 9110 §15.6.6); a later minor version of HTTP/1 is served as HTTP/1.1 (RFC 9110 §2.5),
/// its fields parsed by httparse. `None`: the head is partial.
#[cold]
fn later_minor_version<'b, 'h>(
    window: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
) -> Result<Option<Head<'b, 'h>>, FramingError> {
    // httparse refuses the version only after a method, a space, a target and a space.
    let start = empty_lines_len(window);
    let mut parts = window[start..].splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("malformed request line"));
    };
    let line_len = method.len()
        + target.len()
        + 2
        + match http_version(version) {
            Version::Partial => return Ok(None),
            Version::Malformed => return Err(bad("malformed HTTP-version")),
            Version::NotServed => return Err(error(Status::VersionNotSupported, "only HTTP/1.x is served")),
            Version::LaterMinor { len } => len,
        };
    let (Ok(method), Ok(target)) = (std::str::from_utf8(method), std::str::from_utf8(target)) else {
        return Err(bad("malformed request line"));
    };
    let fields_from = start + line_len;
    match httparse::parse_headers(&window[fields_from..], headers) {
        Ok(httparse::Status::Complete((len, fields))) => {
            Ok(Some(Head { method, target, http10: false, fields, len: fields_from + len }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(TOO_MANY_FIELDS),
        Err(_) => Err(bad("malformed request")),
    }
}

/// What an HTTP-version at the end of a request line is.
enum Version {
    /// Not whole yet, and nothing wrong so far.
    Partial,
    Malformed,
    /// A well-formed version whose major number is not 1.
    NotServed,
    /// `HTTP/1.x` with x of 2 or more, and the line's end: `len` bytes with its CRLF (or bare LF).
    LaterMinor {
        len: usize,
    },
}

/// `HTTP-version = "HTTP/" DIGIT "." DIGIT`, case-sensitive (RFC 9112 §2.3), then the line's end.
fn http_version(rest: &[u8]) -> Version {
    const SHAPE: &[u8; 8] = b"HTTP/#.#";
    let fits = |(&b, &shape): (&u8, &u8)| if shape == b'#' { b.is_ascii_digit() } else { b == shape };
    if !rest.iter().zip(SHAPE).all(fits) {
        return Version::Malformed;
    }
    let end_of_line = match rest.get(SHAPE.len()..) {
        None | Some([] | [b'\r']) => return Version::Partial,
        Some([b'\r', b'\n', ..]) => 2,
        Some([b'\n', ..]) => 1,
        Some(_) => return Version::Malformed,
    };
    match rest[5] {
        b'1' => Version::LaterMinor { len: SHAPE.len() + end_of_line },
        _ => Version::NotServed,
    }
}

/// What the header fields say about framing and the connection.
struct RequestHead {
    framing: BodyFraming,
    keep_alive: bool,
    expects_continue: bool,
}

/// What a Transfer-Encoding field asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    /// `chunked` alone.
    Chunked,
    /// A well-formed list with a coding this server does not implement.
    Unsupported,
}

const ONE_HOST: FramingError = bad("an HTTP/1.1 request needs exactly one Host");

impl RequestHead {
    fn from_headers(headers: &[httparse::Header<'_>], http10: bool) -> Result<Self, FramingError> {
        let mut content_length: Option<usize> = None;
        let mut coding: Option<Coding> = None;
        let mut host: Option<&[u8]> = None;
        let mut close = false;
        let mut asked_keep_alive = false;
        let mut expects_continue = false;
        let mut unmet_expectation = false;
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                // One rule (RFC 9110 §8.6 lets a recipient refuse any duplicate): one field line
                // holding one number. A second line or a list, even of equal values, is refused.
                if content_length.is_some() {
                    return Err(bad("Content-Length sent more than once"));
                }
                content_length = Some(parse_content_length(header.value)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Intermediaries disagree on whether a second line is added to the first or replaces
                // it: refused, like every Transfer-Encoding this server cannot be sure of.
                if coding.is_some() {
                    return Err(bad("Transfer-Encoding sent more than once"));
                }
                coding = Some(transfer_coding(header.value)?);
            } else if name.eq_ignore_ascii_case("host") {
                // A second Host is refused at once (RFC 9112 §3.2: at most one).
                if host.replace(header.value).is_some() {
                    return Err(ONE_HOST);
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for option in header.value.split(|&b| b == b',').map(trimmed) {
                    close |= option.eq_ignore_ascii_case(b"close");
                    asked_keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                for expectation in header.value.split(|&b| b == b',').map(trimmed) {
                    match expectation.eq_ignore_ascii_case(b"100-continue") {
                        true => expects_continue = true,
                        false => unmet_expectation |= !expectation.is_empty(),
                    }
                }
            }
        }
        // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host; any request at most one, and a
        // valid one.
        match host {
            Some(host) if !valid_host(host) => return Err(bad("Host must be host[:port] (RFC 9110 §7.2)")),
            None if !http10 => return Err(ONE_HOST),
            _ => {}
        }
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing, and the
        // connection must close after it; it is refused (the refusal closes it).
        if http10 && coding.is_some() {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let framing = match (coding, content_length) {
            // Both at once is how request smuggling starts (RFC 9112 §6.3): refuse it.
            (Some(_), Some(_)) => return Err(bad("both Content-Length and Transfer-Encoding")),
            (Some(Coding::Chunked), None) => BodyFraming::Chunked,
            (Some(Coding::Unsupported), None) => {
                return Err(error(Status::NotImplemented, "only chunked transfer coding is supported"))
            }
            (None, len) => BodyFraming::Length(len.unwrap_or(0)),
        };
        // RFC 9110 §10.1.1: an expectation other than 100-continue MAY be answered 417. An
        // HTTP/1.0 client knows no Expect at all: it is ignored, and gets no interim 100 either.
        if unmet_expectation && !http10 {
            return Err(error(Status::ExpectationFailed, "the only expectation met is 100-continue"));
        }
        // `close` wins over `keep-alive` when a client says both (RFC 9112 §9.6).
        let keep_alive = !close && (!http10 || asked_keep_alive);
        let expects_continue = expects_continue && !http10;
        Ok(Self { framing, keep_alive, expects_continue })
    }
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6), leading zeros included (the grammar allows them);
/// httparse has taken the whitespace around the value off. A number no length can hold is as
/// invalid as one that is not a number.
fn parse_content_length(value: &[u8]) -> Result<usize, FramingError> {
    const NOT_A_NUMBER: FramingError = bad("Content-Length is not one decimal number");
    if value.is_empty() {
        return Err(NOT_A_NUMBER);
    }
    value.iter().try_fold(0usize, |n, &d| match d {
        b'0'..=b'9' => {
            n.checked_mul(10).and_then(|n| n.checked_add(usize::from(d - b'0'))).ok_or(NOT_A_NUMBER)
        }
        _ => Err(NOT_A_NUMBER),
    })
}

/// A Transfer-Encoding value (RFC 9112 §6.1): a list of transfer codings, each a token with
/// optional parameters (RFC 9110 §5.6.1, §10.1.4). Refused with 400: an empty value or an empty
/// element (decided: no leniency where a misread Transfer-Encoding smuggles a request), a coding
/// after chunked (RFC 9112 §6.3 MUST; chunked twice, §6.1, is one), anything else malformed.
fn transfer_coding(value: &[u8]) -> Result<Coding, FramingError> {
    const MALFORMED: FramingError = bad("malformed Transfer-Encoding");
    let mut rest = value;
    let mut codings = 0;
    let mut last_is_chunked = false;
    loop {
        let name = token_len(rest);
        if name == 0 {
            return Err(bad("empty element in Transfer-Encoding"));
        }
        if last_is_chunked {
            return Err(bad("chunked is not the final transfer coding"));
        }
        let after = parameters(&rest[name..], true).ok_or(MALFORMED)?;
        // A parameter makes it a coding this server does not know, even named chunked.
        last_is_chunked = rest[..name].eq_ignore_ascii_case(b"chunked") && after.len() == rest.len() - name;
        codings += 1;
        rest = match skip_whitespace(after) {
            [] => break,
            [b',', more @ ..] => skip_whitespace(more),
            _ => return Err(MALFORMED),
        };
    }
    Ok(match (last_is_chunked, codings) {
        (true, 1) => Coding::Chunked,
        _ => Coding::Unsupported,
    })
}

fn trimmed(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// `bytes` without the spaces and tabs at its start (`OWS` and `BWS`, RFC 9110 §5.6.3).
fn skip_whitespace(bytes: &[u8]) -> &[u8] {
    let blank = bytes.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &bytes[blank..]
}

/// The length of the token (RFC 9110 §5.6.2) at the start of `bytes`.
fn token_len(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|&&b| TCHAR[usize::from(b)]).count()
}

/// What follows the last whole parameter at the start of `bytes`, its whitespace included:
/// `*( BWS ";" BWS name [ BWS "=" BWS value ] )`, a name being a token and a value a token or a
/// quoted-string (chunk extensions, RFC 9112 §7.1.1; transfer parameters, RFC 9110 §10.1.4, which
/// must have a value). `None` if a `;` starts a malformed one.
fn parameters(mut bytes: &[u8], value_required: bool) -> Option<&[u8]> {
    loop {
        let Some(rest) = skip_whitespace(bytes).strip_prefix(b";") else { return Some(bytes) };
        let rest = skip_whitespace(rest);
        let name = token_len(rest);
        if name == 0 {
            return None;
        }
        let rest = &rest[name..];
        bytes = match skip_whitespace(rest).strip_prefix(b"=") {
            Some(value) => {
                let value = skip_whitespace(value);
                let len = match value.first() {
                    Some(b'"') => quoted_string_len(value)?,
                    _ => Some(token_len(value)).filter(|&len| len > 0)?,
                };
                &value[len..]
            }
            None if value_required => return None,
            None => rest,
        };
    }
}

/// The length, quotes included, of the `quoted-string` (RFC 9110 §5.6.4) that `bytes` starts with.
fn quoted_string_len(bytes: &[u8]) -> Option<usize> {
    let mut i = 1;
    loop {
        match *bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' if FIELD_VALUE[usize::from(*bytes.get(i + 1)?)] => i += 2,
            b'\\' => return None,
            b if FIELD_VALUE[usize::from(b)] => i += 1,
            _ => return None,
        }
    }
}

/// Splits and checks a request target (RFC 9112 §3.2): the origin form `/path?query`, the absolute
/// form `http://authority/path?query` (reduced to its path and query), or `*` for `OPTIONS`. The
/// path and query follow RFC 3986 (see [`query_start`]).
fn split_target(target: &str, method: Method) -> Result<(&str, &str), FramingError> {
    let path_and_query = match target.as_bytes() {
        [b'/', ..] => target,
        // RFC 9112 §3.2.4: the asterisk form is only for a server-wide OPTIONS.
        b"*" if method == Method::Options => return Ok(("*", "")),
        b"*" => return Err(bad("the target * is for OPTIONS only")),
        _ => absolute_form(target)?,
    };
    Ok(match query_start(path_and_query.as_bytes())? {
        Some(i) => (path_or_root(&path_and_query[..i]), &path_and_query[i + 1..]),
        None => (path_or_root(path_and_query), ""),
    })
}

/// An empty path (`http://host?x`) is `/` (RFC 9110 §4.2.3).
fn path_or_root(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

/// Checks `path [ "?" query ]` against RFC 3986 §3.3–3.4 — path segments of `pchar` and `/`, a
/// query of `pchar`, `/` and `?` — and returns where the query's `?` is. Refused with 400: any other
/// byte (a space, a control, raw non-ASCII, a backslash, `#`...), a `%` not followed by two hex
/// digits (§2.1), and in the path a percent-encoded NUL, CR or LF (decided: no route holds one, and
/// decoded they truncate paths and split headers downstream; in a query they are form data).
fn query_start(bytes: &[u8]) -> Result<Option<usize>, FramingError> {
    let mut query = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b if PATH_CHAR[usize::from(b)] => {}
            b'?' => query = query.or(Some(i)),
            b'%' => {
                let (Some(high), Some(low)) = (hex_digit(bytes.get(i + 1)), hex_digit(bytes.get(i + 2)))
                else {
                    return Err(bad("% in the target is not followed by two hex digits"));
                };
                if query.is_none() && matches!(high * 16 + low, 0 | b'\r' | b'\n') {
                    return Err(bad("percent-encoded NUL, CR or LF in the path"));
                }
                i += 2;
            }
            _ => return Err(bad("request target holds a byte RFC 3986 does not allow there")),
        }
        i += 1;
    }
    Ok(query)
}

fn hex_digit(byte: Option<&u8>) -> Option<u8> {
    let digit = (*byte? as char).to_digit(16)?;
    Some(digit as u8)
}

/// An absolute-form target (RFC 9112 §3.2.2), reduced to its path and query: an `http` or `https`
/// URI (RFC 9110 §4.2.1–4.2.2), `scheme "://" authority path-abempty [ "?" query ]`, with a valid
/// authority. The authority, not Host, then names the host (RFC 9112 §3.2.2: the server MUST
/// ignore Host); every server here serves one host, so a disagreeing Host changes nothing.
#[cold]
fn absolute_form(target: &str) -> Result<&str, FramingError> {
    const NOT_A_TARGET: FramingError = bad("request target must be /path, an http(s) URI, or *");
    let Some((scheme, rest)) = target.split_once(':') else { return Err(NOT_A_TARGET) };
    // RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
    let is_scheme = scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !is_scheme {
        return Err(NOT_A_TARGET);
    }
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad("only http and https URIs are served"));
    }
    let Some(rest) = rest.strip_prefix("//") else { return Err(bad("an http URI has an authority")) };
    let (authority, path_and_query) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if !valid_authority(authority.as_bytes()) {
        return Err(bad("the target's authority must be host[:port] (RFC 9110 §4.2)"));
    }
    Ok(path_and_query)
}

thread_local! {
    /// The last valid Host value of 8 to 24 bytes this thread saw, as [`host_words`] gives it
    /// (all zeros: none yet, since a length is at least 8).
    static LAST_VALID_HOST: Cell<HostWords> = const { Cell::new((0, 0, 0, 0)) };
}

/// A Host value's first, middle and last 8 bytes and its length.
type HostWords = (u64, u64, u64, usize);

/// Whether a Host value is a valid authority. A client sends the same Host on every request, so
/// the last valid one is remembered per thread (as the `Date` of the responses is formatted once a
/// second): the usual check is four comparisons of words instead of a pass over the bytes.
fn valid_host(host: &[u8]) -> bool {
    let words = host_words(host);
    if words.is_some_and(|words| words == LAST_VALID_HOST.get()) {
        return true;
    }
    let valid = valid_authority(host);
    if let (true, Some(words)) = (valid, words) {
        LAST_VALID_HOST.set(words);
    }
    valid
}

/// A value of 8 to 24 bytes (as `127.0.0.1:8080`) as three overlapping 8-byte words that cover
/// every byte, and its length: equal words and lengths are equal values. Other lengths: `None`
/// (they are checked each time; one under 8 bytes costs little to check).
fn host_words(host: &[u8]) -> Option<HostWords> {
    let len = host.len();
    if !(8..=24).contains(&len) {
        return None;
    }
    let word = |at: usize| u64::from_ne_bytes(host[at..at + 8].try_into().unwrap_or_default());
    Some((word(0), word(8.min(len - 8)), word(len - 8), len))
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2–3.2.3), for Host and a target's authority alike: an
/// IP-literal in brackets or a reg-name (which covers IPv4 addresses), then a port of digits.
/// Refused: an empty host (RFC 9110 §4.2.1: an http URI with one MUST be rejected), userinfo
/// (`@`, RFC 9110 §4.2.4), a path, and a comma: a Host that lists two hosts is not one host.
fn valid_authority(authority: &[u8]) -> bool {
    // The usual authority, a name and a port, is read in one pass of table lookups; only a `%` or
    // a `[` needs the full grammar.
    let state =
        authority.iter().fold(Authority::Start, |state, &b| AUTHORITY[state as usize][usize::from(b)]);
    match state {
        Authority::Name | Authority::Port => true,
        Authority::Start | Authority::Invalid => false,
        Authority::Unusual => valid_unusual_authority(authority),
    }
}

/// Where a pass over an authority is: the states of [`AUTHORITY`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Authority {
    /// Nothing read yet.
    Start,
    /// In a reg-name of at least one byte.
    Name,
    /// After the colon: the port's digits.
    Port,
    /// Not an authority, whatever follows.
    Invalid,
    /// A `%` or `[` came: [`valid_unusual_authority`] decides.
    Unusual,
}

/// The next state of a pass over an authority, by state and byte.
const AUTHORITY: [[Authority; 256]; 5] = {
    let mut table = [[Authority::Invalid; 256]; 5];
    let mut b = 0;
    while b < 256 {
        if REG_NAME[b] {
            table[Authority::Start as usize][b] = Authority::Name;
            table[Authority::Name as usize][b] = Authority::Name;
        }
        if (b as u8).is_ascii_digit() {
            table[Authority::Port as usize][b] = Authority::Port;
        }
        table[Authority::Unusual as usize][b] = Authority::Unusual;
        b += 1;
    }
    table[Authority::Name as usize][b':' as usize] = Authority::Port;
    table[Authority::Name as usize][b'%' as usize] = Authority::Unusual;
    table[Authority::Start as usize][b'%' as usize] = Authority::Unusual;
    table[Authority::Start as usize][b'[' as usize] = Authority::Unusual;
    table
};

/// The full grammar, for an authority with a percent-encoded reg-name or an IP-literal.
#[cold]
fn valid_unusual_authority(authority: &[u8]) -> bool {
    // The port is the digits after the last colon, so it is read from the end: a reg-name holds no
    // colon, and an IP-literal ends in `]`.
    let digits = authority.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let host = match &authority[..authority.len() - digits] {
        [host @ .., b':'] => host,
        _ => authority,
    };
    match host {
        [b'[', inside @ .., b']'] => ip_literal(inside),
        _ => !host.is_empty() && is_reg_name(host),
    }
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`, less the comma.
fn is_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b if REG_NAME[usize::from(b)] => i += 1,
            b'%' if hex_digit(host.get(i + 1)).is_some() && hex_digit(host.get(i + 2)).is_some() => i += 3,
            _ => return false,
        }
    }
    true
}

/// `IP-literal` without its brackets (RFC 3986 §3.2.2): an IPv6 address, or `IPvFuture`
/// (`"v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )`).
fn ip_literal(inside: &[u8]) -> bool {
    if let Some(future) = inside.strip_prefix(b"v").or_else(|| inside.strip_prefix(b"V")) {
        let version = future.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        return match future[version..].split_first() {
            Some((b'.', rest)) => {
                version > 0
                    && !rest.is_empty()
                    && rest.iter().all(|&b| matches!(b, b':' | b',') || REG_NAME[usize::from(b)])
            }
            _ => false,
        };
    }
    std::str::from_utf8(inside).is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok())
}

/// A set of bytes, as a table to look them up in.
const fn byte_set(groups: &[&[u8]]) -> [bool; 256] {
    let mut set = [false; 256];
    let mut g = 0;
    while g < groups.len() {
        let mut i = 0;
        while i < groups[g].len() {
            set[groups[g][i] as usize] = true;
            i += 1;
        }
        g += 1;
    }
    set
}

const DIGIT_ALPHA: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// `tchar` (RFC 9110 §5.6.2): what tokens — methods, field names, codings — are made of.
const TCHAR: [bool; 256] = byte_set(&[DIGIT_ALPHA, b"!#$%&'*+-.^_`|~"]);
/// RFC 3986's `pchar` less `%` (checked apart), and `/`: what a path and a query are made of.
const PATH_CHAR: [bool; 256] = byte_set(&[DIGIT_ALPHA, b"-._~", b"!$&'()*+,;=", b":@/"]);
/// RFC 3986's `unreserved` and `sub-delims` less the comma: a reg-name's bytes but for `%`.
const REG_NAME: [bool; 256] = byte_set(&[DIGIT_ALPHA, b"-._~", b"!$&'()*+;="]);
/// What httparse takes in a request target: visible ASCII and any byte from 0x80.
const TARGET_BYTE: [bool; 256] = {
    let mut set = [false; 256];
    let mut b = 0x21;
    while b < 256 {
        set[b] = b != 0x7f;
        b += 1;
    }
    set
};
/// `field-value` bytes (RFC 9110 §5.5): visible ASCII, obs-text (0x80 and up), space and tab.
const FIELD_VALUE: [bool; 256] = {
    let mut set = TARGET_BYTE;
    set[b' ' as usize] = true;
    set[b'\t' as usize] = true;
    set
};

/// The longest chunk-size line, extensions included; a longer one is an error.
const MAX_CHUNK_LINE: usize = 4 * 1024;

const BAD_CHUNK: FramingError = bad("malformed chunked body");

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
            if let Some(trailers_from) = self.trailers_from {
                // RFC 9112 §7.1.2: the trailer section is held to the header section's limit, and
                // like the head judged on its first 8 KiB alone.
                let limit = trailers_from + MAX_HEADER_BYTES;
                let Some(line) = next_line(&body[self.pos..body.len().min(limit)])? else {
                    if body.len() > limit {
                        return Err(TRAILERS_TOO_LARGE);
                    }
                    return Ok(Walked::Partial { need: body.len() + 1 });
                };
                self.pos += line.len() + 2;
                if !line.is_empty() && !is_field_line(line) {
                    return Err(bad("malformed trailer field"));
                }
                self.done = line.is_empty();
                continue;
            }
            let rest = &body[self.pos..];
            let Some(line) = next_line(&rest[..rest.len().min(MAX_CHUNK_LINE)])? else {
                if rest.len() >= MAX_CHUNK_LINE {
                    return Err(bad("chunk-size line over 4 KiB"));
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
        // Only a CR that is the last byte so far may still be followed by its LF.
        return match buf.split_last() {
            Some((_, before_last)) if before_last.contains(&b'\r') => Err(BAD_CHUNK),
            _ => Ok(None),
        };
    };
    match buf[..lf].strip_suffix(b"\r") {
        Some(line) if !line.contains(&b'\r') => Ok(Some(line)),
        _ => Err(BAD_CHUNK),
    }
}

/// A trailer field line follows the grammar of a header field line (RFC 9112 §7.1.2, §5; RFC 9110
/// §5.5), as httparse holds the head's to: `field-name ":" OWS field-value OWS`, a token for the
/// name and field-value bytes after the colon. A line that starts with whitespace (obs-fold,
/// RFC 9112 §5.2) has no name, so it is refused too.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else { return false };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty() && token_len(name) == name.len() && value.iter().all(|&b| FIELD_VALUE[usize::from(b)])
}

/// The size a chunk-size line announces (RFC 9112 §7.1): hex digits, then extensions (§7.1.1),
/// ignored but held to their grammar — no bare `;`, names that are tokens, no whitespace but
/// around `;` and `=`. A size that no signed 64-bit length can hold is malformed (400), not merely
/// too large: §7.1 asks recipients to guard against exactly that overflow.
fn chunk_size(line: &[u8]) -> Result<usize, FramingError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || !parameters(&line[digits..], false).is_some_and(<[u8]>::is_empty) {
        return Err(BAD_CHUNK);
    }
    let size = line[..digits].iter().try_fold(0u64, |n, &d| {
        let digit = u64::from((d as char).to_digit(16).unwrap_or(0));
        n.checked_mul(16).and_then(|n| n.checked_add(digit)).filter(|&n| n <= i64::MAX as u64)
    });
    let Some(size) = size else { return Err(bad("chunk size overflows")) };
    Ok(usize::try_from(size).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests;
