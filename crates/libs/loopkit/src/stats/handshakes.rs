//! The TLS handshakes a server has made, for `/stats`: counted by `tls`, in memory that forked
//! processes share, made when the server's TLS settings load.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

/// What `/stats` counts of handshakes, in `COUNTERS` order (docs/spec.md, "TLS").
pub const COUNTER_NAMES: [&str; 8] =
    ["full", "resumed", "timeout", "closed", "malformed", "refused", "alert", "other"];

#[derive(Clone, Copy)]
pub enum Counter {
    /// A handshake completed with a full key exchange and certificate signature.
    Full,
    /// A handshake completed by resuming a session (a ticket, or TLS 1.2's session id).
    Resumed,
    /// `--header-timeout` passed before the handshake completed.
    Timeout,
    /// The client closed or reset mid-handshake, or the connection went idle or was drained.
    Closed,
    /// Not TLS, or a record or handshake message that does not parse or decrypt.
    Malformed,
    /// Nothing in common: no protocol version, cipher suite, group or ALPN protocol both speak.
    Refused,
    /// The client sent a fatal alert (it refused our certificate, say).
    Alert,
    Other,
}

/// The handshake counters, in memory forked processes share; made by [`make`].
static COUNTERS: OnceLock<&'static [AtomicU64]> = OnceLock::new();

pub fn count(counter: Counter) {
    if let Some(counters) = COUNTERS.get() {
        counters[counter as usize].fetch_add(1, Relaxed);
    }
}

/// The `tls` object of `/stats`, or `None` when the server does not speak TLS.
pub fn render() -> Option<serde_json::Value> {
    let counters = COUNTERS.get()?;
    let handshakes: serde_json::Map<_, _> = COUNTER_NAMES[..2]
        .iter()
        .zip(counters.iter())
        .map(|(name, n)| (name.to_string(), n.load(Relaxed).into()))
        .collect();
    let failures: serde_json::Map<_, _> = COUNTER_NAMES[2..]
        .iter()
        .zip(counters[2..].iter())
        .map(|(name, n)| (name.to_string(), n.load(Relaxed).into()))
        .collect();
    Some(serde_json::json!({ "handshakes": handshakes, "failures": failures }))
}

/// Makes the counters (once: a second call keeps the first).
pub fn make() -> io::Result<()> {
    let counters = sys::shared::shared_counters(COUNTER_NAMES.len())?;
    let _ = COUNTERS.set(counters);
    Ok(())
}
