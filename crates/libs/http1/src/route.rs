//! The routes of docs/spec.md: which action a framed request asks for, with its method and query checked.

use std::borrow::Cow;

use crate::framing::{Method, Request};
use crate::response::{Connection, Status};

/// The most CPU time `/spin` burns, in microseconds.
pub const MAX_SPIN_US: u32 = 1_000_000;
/// The longest `/sleep`, in milliseconds.
pub const MAX_SLEEP_MS: u32 = 10_000;

/// What a request asks the server to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// `GET /`: the plaintext hello.
    Hello,
    /// `GET /spin?us=N`: burn N µs of CPU on the executing thread.
    Spin { us: u32 },
    /// `GET /sleep?ms=N`: block the executing thread N ms.
    Sleep { ms: u32 },
    /// `POST /echo`: answer with the request body.
    Echo(Cow<'a, [u8]>),
    /// `GET /stats`: the server's counters as JSON.
    Stats,
    /// `POST /ledger?ms=N`: append the body to the ledger (taking N ms) and answer its sequence
    /// number; with an `Idempotency-Key`, at most once per key (see `crate::idempotency`).
    Ledger { body: Cow<'a, [u8]>, key: Option<Cow<'a, [u8]>>, hold_ms: u32 },
    /// `GET /debug/panic`, in debug builds only: the executing thread panics, so that the tests can
    /// drive every server to the thread-panic policy (`loopkit::startup::exit_on_panic`). Release
    /// builds do not have the route (404).
    #[cfg(debug_assertions)]
    Panic,
    /// A fixed answer: this status, `reason` as its text and `Allow` if given; the connection stays
    /// usable. A request that routes nowhere gets one, and so does OPTIONS (200, no text).
    Reject { status: Status, reason: &'static str, allow: Option<&'static str> },
}

/// A routed request: the action, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job<'a> {
    pub action: Action<'a>,
    /// HEAD: answer with headers only.
    pub head_only: bool,
    pub connection: Connection,
}

impl Job<'_> {
    /// A copy that owns its body, to be executed on another thread.
    pub fn into_owned(self) -> Job<'static> {
        let action = match self.action {
            Action::Echo(body) => Action::Echo(Cow::Owned(body.into_owned())),
            Action::Hello => Action::Hello,
            Action::Spin { us } => Action::Spin { us },
            Action::Sleep { ms } => Action::Sleep { ms },
            Action::Stats => Action::Stats,
            Action::Ledger { body, key, hold_ms } => Action::Ledger {
                body: Cow::Owned(body.into_owned()),
                key: key.map(|key| Cow::Owned(key.into_owned())),
                hold_ms,
            },
            #[cfg(debug_assertions)]
            Action::Panic => Action::Panic,
            Action::Reject { status, reason, allow } => Action::Reject { status, reason, allow },
        };
        Job { action, head_only: self.head_only, connection: self.connection }
    }

    /// Whether executing it may hold its thread a while (a sleep, a spin of a millisecond or more):
    /// a loop that executes it itself writes the responses before it first, and turns to its other
    /// connections and signals after it.
    pub fn is_slow(&self) -> bool {
        match self.action {
            Action::Sleep { ms } => ms > 0,
            Action::Spin { us } => us >= 1000,
            Action::Ledger { hold_ms, .. } => hold_ms > 0,
            _ => false,
        }
    }

    /// Whether the connection closes after this job's response.
    pub fn closes(&self) -> bool {
        self.connection == Connection::Close
    }
}

// OPTIONS is in every Allow: every path here answers it (RFC 9110 §9.3.7).
const GET_HEAD: Option<&str> = Some("GET, HEAD, OPTIONS");
const POST: Option<&str> = Some("POST, OPTIONS");
/// What `OPTIONS *` says the server as a whole serves.
const ANY_PATH: Option<&str> = Some("GET, HEAD, POST, OPTIONS");

/// Routes a framed request.
pub fn route(request: Request<'_>) -> Job<'_> {
    let connection = match (request.keep_alive, request.http10) {
        (false, _) => Connection::Close,
        (true, true) => Connection::KeepAlive,
        (true, false) => Connection::Default,
    };
    let head_only = request.method == Method::Head;
    let readable = matches!(request.method, Method::Get | Method::Head);
    let action = match (request.path, readable, request.method) {
        ("/", true, _) => Action::Hello,
        ("/spin", true, _) => match query_number(request.query, "us", MAX_SPIN_US) {
            Some(us) => Action::Spin { us },
            None => bad_query("us must be an integer in 0..=1000000"),
        },
        ("/sleep", true, _) => match query_number(request.query, "ms", MAX_SLEEP_MS) {
            Some(ms) => Action::Sleep { ms },
            None => bad_query("ms must be an integer in 0..=10000"),
        },
        ("/stats", true, _) => Action::Stats,
        #[cfg(debug_assertions)]
        ("/debug/panic", true, _) => Action::Panic,
        ("/echo", _, Method::Post) => Action::Echo(request.body),
        ("/ledger", _, Method::Post) => ledger(request.query, request.idempotency_key, request.body),
        // Framing lets `*` through only with OPTIONS (RFC 9112 §3.2.4).
        ("*", _, Method::Options) => options(ANY_PATH),
        ("/" | "/spin" | "/sleep" | "/stats", _, Method::Options) => options(GET_HEAD),
        ("/echo" | "/ledger", _, Method::Options) => options(POST),
        ("/" | "/spin" | "/sleep" | "/stats", false, _) => method_not_allowed(GET_HEAD),
        ("/echo" | "/ledger", _, _) => method_not_allowed(POST),
        _ => Action::Reject { status: Status::NotFound, reason: "no such path", allow: None },
    };
    Job { action, head_only, connection }
}

fn bad_query(reason: &'static str) -> Action<'static> {
    Action::Reject { status: Status::BadRequest, reason, allow: None }
}

/// The answer to an OPTIONS (RFC 9110 §9.3.7): 200 with `Allow` and no content (`Content-Length:
/// 0`, which the RFC asks for), given through the fixed-answer action a 405 uses.
fn options(allow: Option<&'static str>) -> Action<'static> {
    Action::Reject { status: Status::Ok, reason: "", allow }
}

fn method_not_allowed(allow: Option<&'static str>) -> Action<'static> {
    Action::Reject { status: Status::MethodNotAllowed, reason: "method not allowed", allow }
}

/// Routes `POST /ledger?ms=N` with its body and the raw value of its `Idempotency-Key` field.
/// `ms` (default 0, at most 10000) is how long the append takes, as a slow payment would.
fn ledger<'a>(query: &str, key: Option<&'a [u8]>, body: Cow<'a, [u8]>) -> Action<'a> {
    let hold_ms = match query {
        "" => 0,
        query => match query_number(query, "ms", MAX_SLEEP_MS) {
            Some(ms) => ms,
            None => return bad_query("ms must be an integer in 0..=10000"),
        },
    };
    let key = match key.map(crate::idempotency::parse_key) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(reason)) => return bad_query(reason),
    };
    Action::Ledger { body, key, hold_ms }
}

/// The value of `name` in a query string, if it is a decimal integer in `0..=max`.
pub(crate) fn query_number(query: &str, name: &str, max: u32) -> Option<u32> {
    let value = query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u64>().ok().filter(|&n| n <= u64::from(max)).map(|n| n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_route_reads_its_hold_and_its_key() {
        let body = Cow::Borrowed(&b"pay 5"[..]);
        assert_eq!(
            ledger("ms=20", Some(b"\"k\""), body.clone()),
            Action::Ledger { body: body.clone(), key: Some(Cow::Borrowed(b"k")), hold_ms: 20 }
        );
        assert_eq!(
            ledger("", None, body.clone()),
            Action::Ledger { body: body.clone(), key: None, hold_ms: 0 }
        );
        assert!(matches!(
            ledger("ms=x", None, body.clone()),
            Action::Reject { status: Status::BadRequest, .. }
        ));
        assert!(matches!(ledger("", Some(b"a b"), body), Action::Reject { status: Status::BadRequest, .. }));
    }
}
