//! Writing responses into a connection's output buffer.

use std::time::{SystemTime, UNIX_EPOCH};

/// The statuses the servers answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    Conflict,
    PayloadTooLarge,
    UriTooLong,
    ExpectationFailed,
    UnprocessableContent,
    HeaderFieldsTooLarge,
    NotImplemented,
    ServiceUnavailable,
    VersionNotSupported,
}

impl Status {
    /// The status line, up to and including its CRLF.
    fn line(self) -> &'static [u8] {
        match self {
            Status::Ok => OK_LINE,
            Status::BadRequest => b"HTTP/1.1 400 Bad Request\r\n",
            Status::NotFound => b"HTTP/1.1 404 Not Found\r\n",
            Status::MethodNotAllowed => b"HTTP/1.1 405 Method Not Allowed\r\n",
            Status::RequestTimeout => b"HTTP/1.1 408 Request Timeout\r\n",
            Status::Conflict => b"HTTP/1.1 409 Conflict\r\n",
            Status::PayloadTooLarge => b"HTTP/1.1 413 Content Too Large\r\n",
            Status::UriTooLong => b"HTTP/1.1 414 URI Too Long\r\n",
            Status::ExpectationFailed => b"HTTP/1.1 417 Expectation Failed\r\n",
            Status::UnprocessableContent => b"HTTP/1.1 422 Unprocessable Content\r\n",
            Status::HeaderFieldsTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            Status::NotImplemented => b"HTTP/1.1 501 Not Implemented\r\n",
            Status::ServiceUnavailable => b"HTTP/1.1 503 Service Unavailable\r\n",
            Status::VersionNotSupported => b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
        }
    }
}

/// What the `Connection` header of a response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Nothing: HTTP/1.1 stays open by default.
    Default,
    /// `Connection: keep-alive`, said back to an HTTP/1.0 client that asked for it.
    KeepAlive,
    /// `Connection: close`: the server closes after this response.
    Close,
}

/// A response about to be written.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    pub status: Status,
    pub content_type: &'static str,
    pub body: &'a [u8],
    /// HEAD: the headers announce the body's length, but the body is not sent.
    pub head_only: bool,
    pub connection: Connection,
    /// The `Allow` header of a 405, or of the answer to an OPTIONS.
    pub allow: Option<&'static str>,
    /// The kept response of an earlier request with the same `Idempotency-Key`, given again: says
    /// so in a header (`crate::idempotency::REPLAYED_HEADER`).
    pub replayed: bool,
}

impl<'a> Response<'a> {
    /// A `text/plain` response with the default connection handling.
    pub fn text(status: Status, body: &'a [u8]) -> Self {
        Response {
            status,
            content_type: "text/plain",
            body,
            head_only: false,
            connection: Connection::Default,
            allow: None,
            replayed: false,
        }
    }

    /// Appends the whole response to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if self.status == Status::Ok {
            CACHED.with_borrow(|cached| out.extend_from_slice(&cached.ok_prefix));
        } else {
            out.extend_from_slice(self.status.line());
            out.extend_from_slice(SERVER_DATE);
            CACHED.with_borrow(|cached| out.extend_from_slice(&cached.date));
        }
        out.extend_from_slice(b"\r\nContent-Type: ");
        match self.content_type {
            // A copy of a length known at compile time costs no call to memcpy.
            "text/plain" => out.extend_from_slice(b"text/plain"),
            other => out.extend_from_slice(other.as_bytes()),
        }
        out.extend_from_slice(b"\r\nContent-Length: ");
        write_decimal(out, self.body.len());
        match self.connection {
            Connection::Default => {}
            Connection::KeepAlive => out.extend_from_slice(b"\r\nConnection: keep-alive"),
            Connection::Close => out.extend_from_slice(b"\r\nConnection: close"),
        }
        if let Some(allow) = self.allow {
            out.extend_from_slice(b"\r\nAllow: ");
            out.extend_from_slice(allow.as_bytes());
        }
        if self.replayed {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(crate::idempotency::REPLAYED_HEADER.as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        if !self.head_only {
            out.extend_from_slice(self.body);
        }
    }
}

/// The interim response a client sent `Expect: 100-continue` waits for before sending its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn write_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) is always 29 bytes.
type HttpDate = [u8; 29];

const OK_LINE: &[u8] = b"HTTP/1.1 200 OK\r\n";
const SERVER_DATE: &[u8] = b"Server: acceptlab\r\nDate: ";
const OK_PREFIX_LEN: usize = OK_LINE.len() + SERVER_DATE.len() + 29;

/// What this thread formatted for the current second.
struct Cached {
    second: u64,
    date: HttpDate,
    /// `HTTP/1.1 200 OK`, `Server` and `Date`: the first 71 bytes of most responses, in one copy
    /// (of a length known at compile time).
    ok_prefix: [u8; OK_PREFIX_LEN],
}

thread_local! {
    static CACHED: std::cell::RefCell<Cached> = std::cell::RefCell::new(Cached::format(SystemTime::now()));
}

impl Cached {
    fn format(now: SystemTime) -> Cached {
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut date = [0u8; 29];
        date.copy_from_slice(httpdate::fmt_http_date(now).as_bytes());
        let mut ok_prefix = [0; OK_PREFIX_LEN];
        let (line, rest) = ok_prefix.split_at_mut(OK_LINE.len());
        line.copy_from_slice(OK_LINE);
        let (server, rest) = rest.split_at_mut(SERVER_DATE.len());
        server.copy_from_slice(SERVER_DATE);
        rest.copy_from_slice(&date);
        Cached { second, date, ok_prefix }
    }
}

/// Brings this thread's `Date` up to `now`, formatting it only when the second has changed.
///
/// NOTE: like nginx's `ngx_time_update()`, an event loop calls this once per return from epoll_wait,
/// not per response: then a pipelined batch of a thousand responses costs one clock read, and the
/// `Date` is never more than one loop iteration old. A thread that executes requests outside an
/// event loop calls it before each one.
pub fn refresh_date(now: SystemTime) {
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|cached| {
        if cached.second != second {
            *cached = Cached::format(now);
        }
    });
}
