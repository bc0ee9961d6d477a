//! acceptlab's HTTP/1.1, in three layers that any thread can use:
//!
//! 1. [`framing`]: finds where one request ends in a byte buffer — complete (with how many bytes it
//!    used), partial (read more), or an error that ends the connection with a status. Headers are
//!    parsed by httparse without allocation; bodies come with `Content-Length` or chunked.
//! 2. [`route`]: turns a framed request into an [`route::Action`] — what to execute — checking the
//!    method, path and query. An action can be executed right here or, made owned, on another thread.
//! 3. [`response`]: writes a response into an output buffer, with a `Date` header formatted at most
//!    once a second per thread.
#![forbid(unsafe_code)]

pub mod framing;
pub mod idempotency;
pub mod response;
pub mod route;

pub use framing::{parse_request, parse_request_resuming, FramingError, Parsed, Progress, Request};
pub use response::Status;
pub use route::{route, Action, Job};
