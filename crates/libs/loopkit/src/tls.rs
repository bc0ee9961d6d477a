//! TLS between the socket and the HTTP session (`--tls-cert`, `--tls-key`): rustls on the ring
//! provider, TLS 1.3 and 1.2, ALPN `http/1.1`, driven with no I/O of its own, as the session is.
//!
//! ```text
//!   socket ──ciphertext──► Tls::read_tls ─► process ─► Tls::deliver ──plaintext──► Session (unchanged)
//!   socket ◄─ciphertext─── Tls::write_tls ◄── Tls::encrypt ◄──plaintext── Session::output
//! ```
//!
//! A driver puts one [`Tls`] between its transport and each connection's [`Session`]: the epoll
//! driver reads and writes the socket through it (`conn::tls`), the io_uring driver hands it the
//! bytes a completion brought and sends what it writes into a buffer. The session sees plaintext
//! only, so framing, limits and timeouts are the same as without TLS; the one thing it is told is
//! that a handshake is under way ([`Session::head_pending`]), so `--header-timeout` covers the
//! handshake as it covers a request head: a ClientHello sent a byte a second is closed like a
//! slowloris. A handshake that fails (a malformed record, nothing in common, an alert from the
//! client) closes that connection and nothing else.
//!
//! The configuration is loaded once, before any thread or process starts: lab-reuseport's processes
//! inherit one ticket key across the fork, so a session ticket from one process resumes in any
//! other. The handshake counters (`/stats` `tls`) live in memory the forked processes share.
//!
//! Memory: rustls reads records into a buffer of its own (4 KiB at first, up to one 16 KiB record
//! plus its header), keeps up to 16 KiB of decrypted plaintext that the session has not taken (the
//! drivers take it at once) and, here, at most `SEND_LIMIT` of encrypted output not yet written;
//! docs/spec.md ("TLS") says what an idle and a slow-body connection cost.
//!
//! kTLS (the kernel encrypting records after the handshake) is left out: this machine's kernel is
//! built without `CONFIG_TLS`, so there is nothing to hand the keys to.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, ServerConnection};
use rustls::{Error, HandshakeKind};

use crate::session::{Execute, Executed, Session};
use crate::stats::handshakes::{self, count, Counter};

/// Encrypted output a connection may hold unwritten (a client that does not read): the session's
/// own output limit stops it producing more before this is reached.
const SEND_LIMIT: usize = 256 * 1024;

/// The longest ticket every process accepts (see `TlsServer::load`); a session's ticket holds its
/// secret, its ALPN protocol and its server name: a few hundred bytes.
const TICKET_BOUND: usize = 2048;

/// A server's TLS settings: the certificate chain, its key, the ticket key. Cloning shares them.
#[derive(Debug, Clone)]
pub struct TlsServer {
    config: Arc<ServerConfig>,
}

impl TlsServer {
    /// Loads `cert` (PEM: the server's certificate, then any intermediates) and `key` (PEM: PKCS#8,
    /// PKCS#1 or SEC1). An error is one line that names the file.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsServer, String> {
        let certs = read_pem(cert, "--tls-cert", |pem| {
            CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()
        })?;
        if certs.is_empty() {
            return Err(format!("--tls-cert {}: no CERTIFICATE in it", cert.display()));
        }
        let key_der = read_pem(key, "--tls-key", PrivateKeyDer::from_pem_slice)?;
        let provider = Arc::new(crypto_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| {
                format!("--tls-key {}: does not go with --tls-cert {}: {e}", key.display(), cert.display())
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Stateless tickets, the key made before any fork: every process and thread can resume
        // them. ring's ticketer refuses a ticket longer than the longest it has made itself, so a
        // process that has made none would refuse every other process's: one long ticket made
        // now sets that bound for all of them. (It makes a new key every 6 hours, each process
        // its own: past that, a ticket resumes only in the process that made it.)
        config.ticketer = provider::Ticketer::new().map_err(|e| format!("TLS ticket key: {e}"))?;
        config.ticketer.encrypt(&[0; TICKET_BOUND]);
        let config = Arc::new(config);
        ServerConnection::new(Arc::clone(&config)).map_err(|e| format!("TLS: {e}"))?;
        handshakes::make().map_err(|e| format!("TLS: {e}"))?;
        Ok(TlsServer { config })
    }

    /// The TLS state of a connection just accepted.
    pub fn accept(&self) -> Box<Tls> {
        // `new` checks only the configuration, which `load` made one connection with already.
        let mut conn = ServerConnection::new(Arc::clone(&self.config)).expect("checked by TlsServer::load");
        conn.set_buffer_limit(Some(SEND_LIMIT));
        Box::new(Tls { conn, handshaking: true, counted: false, plaintext: 0, close_notify: false })
    }
}

/// ring, with X25519 the preferred key exchange, as in OpenSSL (nginx), curl and browsers: ring's
/// own default puts P-384 first, whose ECDHE costs the server several times X25519's per handshake.
/// (ring has no post-quantum key exchange, hence its deprecation; it needs no cmake.)
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    use provider::kx_group::{SECP256R1, SECP384R1, X25519};
    #[allow(deprecated)]
    let mut provider = provider::default_provider();
    provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    provider
}

/// Reads a PEM file and parses it with `parse`; errors name the flag and the file.
fn read_pem<T>(
    path: &Path,
    flag: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, rustls::pki_types::pem::Error>,
) -> Result<T, String> {
    let bytes = fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{flag} {}: no PEM {} in it", path.display(), what(flag))
        }
        e => format!("{flag} {}: not a PEM {}: {e:?}", path.display(), what(flag)),
    })
}

fn what(flag: &str) -> &'static str {
    match flag {
        "--tls-cert" => "CERTIFICATE",
        _ => "PRIVATE KEY",
    }
}

/// A driver's executor behind a reference to its trait: the io_uring driver's TLS pump calls
/// [`Session::next`] through it, so that `Session::next` for the plaintext pump's own executor keeps
/// one caller (in lab-epoll a second caller of that instance made the plaintext path ~10% dearer,
/// callgrind; the epoll driver has one pump for both, see `conn::tls`).
pub(crate) struct DynExecute<'a>(pub &'a mut dyn Execute);

impl Execute for DynExecute<'_> {
    fn execute(&mut self, seq: u64, job: http1::Job<'_>, out: &mut Vec<u8>) -> Executed {
        self.0.execute(seq, job, out)
    }
}

/// What [`Tls::deliver`] moved into the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plain {
    /// This many bytes (0 if the session refused to grow its buffer: it has answered that).
    Delivered(usize),
    /// Nothing decrypted is waiting: read more ciphertext.
    Empty,
    /// The client ended its stream with a `close_notify`: no more requests.
    Eof,
}

/// One connection's TLS: rustls's server connection and what the driver needs to know of it.
pub struct Tls {
    conn: ServerConnection,
    /// The handshake has not completed yet.
    handshaking: bool,
    /// The handshake's outcome has been counted (so `Drop` does not count it as abandoned).
    counted: bool,
    /// Decrypted bytes rustls holds that the session has not taken.
    plaintext: usize,
    /// The client's `close_notify` arrived.
    close_notify: bool,
}

impl Tls {
    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.handshaking
    }

    /// Whether encrypted bytes (handshake messages, records, an alert) wait to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes what waits to `transport` (one vectored write); what it does not take stays here.
    pub fn write_tls(&mut self, transport: &mut dyn Write) -> io::Result<usize> {
        self.conn.write_tls(transport)
    }

    /// Reads ciphertext from `transport` (one read) and decrypts every record it completes; `Ok(0)`:
    /// the end of the stream. During the handshake the session is told a head is pending, and
    /// when the handshake completes that it is not. A protocol error is `InvalidData` (the alert
    /// for it waits in [`Tls::write_tls`]): close the connection.
    pub fn read_tls(
        &mut self,
        transport: &mut dyn Read,
        now: Instant,
        session: &mut Session,
    ) -> io::Result<usize> {
        let n = self.conn.read_tls(transport)?;
        if n > 0 {
            self.process(now, session)?;
        }
        Ok(n)
    }

    fn process(&mut self, now: Instant, session: &mut Session) -> io::Result<()> {
        if self.handshaking {
            session.head_pending(now, true);
        }
        let state = match self.conn.process_new_packets() {
            Ok(state) => state,
            Err(e) => {
                self.failed(&e);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        };
        self.plaintext = state.plaintext_bytes_to_read();
        self.close_notify |= state.peer_has_closed();
        if self.handshaking && !self.conn.is_handshaking() {
            self.handshaking = false;
            self.counted = true;
            count(match self.conn.handshake_kind() {
                Some(HandshakeKind::Resumed) => Counter::Resumed,
                _ => Counter::Full,
            });
            session.head_pending(now, false);
        }
        Ok(())
    }

    /// Moves the plaintext rustls has decrypted into the session's read buffer.
    pub fn deliver(&mut self, session: &mut Session) -> Plain {
        if self.plaintext == 0 {
            return match std::mem::take(&mut self.close_notify) {
                true => Plain::Eof,
                false => Plain::Empty,
            };
        }
        let mut delivered = 0;
        while self.plaintext > 0 {
            let Some(space) = session.read_buffer() else { break };
            match self.conn.reader().read(space) {
                Ok(n) if n > 0 => {
                    session.received(n);
                    delivered += n;
                    self.plaintext = self.plaintext.saturating_sub(n);
                }
                _ => self.plaintext = 0,
            }
        }
        Plain::Delivered(delivered)
    }

    /// Whether decrypted bytes wait for [`Tls::read_plaintext`]; or, with none, whether the client's
    /// `close_notify` has arrived since last asked (the end of its requests).
    pub fn plaintext_waiting(&mut self) -> Plain {
        match (self.plaintext, std::mem::take(&mut self.close_notify)) {
            (0, false) => Plain::Empty,
            (0, true) => Plain::Eof,
            (n, close_notify) => {
                self.close_notify = close_notify;
                Plain::Delivered(n)
            }
        }
    }

    /// Copies decrypted bytes into `buf` (the session's read buffer); returns how many.
    pub fn read_plaintext(&mut self, buf: &mut [u8]) -> usize {
        match self.conn.reader().read(buf) {
            Ok(n) => {
                self.plaintext = self.plaintext.saturating_sub(n);
                n
            }
            Err(_) => {
                self.plaintext = 0;
                0
            }
        }
    }

    /// Encrypts as much of `plaintext` (the session's output) as the send limit allows; returns how
    /// much it took.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> usize {
        self.conn.writer().write(plaintext).unwrap_or(0)
    }

    /// Queues a `close_notify` for [`Tls::write_tls`]: the connection ends cleanly.
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// The header timeout passed while the handshake was still under way.
    pub fn timed_out(&mut self) {
        if !std::mem::replace(&mut self.counted, true) {
            count(Counter::Timeout);
        }
    }

    fn failed(&mut self, error: &Error) {
        if !self.handshaking || std::mem::replace(&mut self.counted, true) {
            return; // an error after the handshake closes the connection; it is not a handshake's
        }
        count(match error {
            Error::InvalidMessage(_)
            | Error::InappropriateMessage { .. }
            | Error::InappropriateHandshakeMessage { .. }
            | Error::DecryptError
            | Error::PeerSentOversizedRecord
            | Error::PeerMisbehaved(_) => Counter::Malformed,
            Error::PeerIncompatible(_) | Error::NoApplicationProtocol => Counter::Refused,
            Error::AlertReceived(_) => Counter::Alert,
            _ => Counter::Other,
        });
    }
}

impl Drop for Tls {
    /// A connection that closes mid-handshake for any reason not counted yet was abandoned.
    fn drop(&mut self) {
        if self.handshaking && !self.counted {
            count(Counter::Closed);
        }
    }
}
