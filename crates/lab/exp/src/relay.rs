//! Minimal proxies inside an experiment: reading one whole HTTP/1.1 message (head, and a body framed
//! by Content-Length, which is all the lab's servers and clients send) off a stream, and the loops
//! of a relay that lives in threads of the experiment and listens on a port of its own.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// A stream and the bytes read from it that no message has used yet.
pub struct Framed {
    pub stream: TcpStream,
    carry: Vec<u8>,
}

impl Framed {
    pub fn new(stream: TcpStream) -> Framed {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
        Framed { stream, carry: Vec::new() }
    }

    pub fn connect(addr: SocketAddr) -> io::Result<Framed> {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map(Framed::new)
    }

    /// One whole message (request or response); `Ok(None)` at end of stream before its first byte.
    pub fn read_message(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut chunk = [0u8; 16384];
        loop {
            if let Some(end) = self.carry.windows(4).position(|w| w == b"\r\n\r\n") {
                let total = end + 4 + content_length(&self.carry[..end]);
                if self.carry.len() >= total {
                    let rest = self.carry.split_off(total);
                    return Ok(Some(std::mem::replace(&mut self.carry, rest)));
                }
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return match self.carry.is_empty() {
                    true => Ok(None),
                    false => Err(io::ErrorKind::UnexpectedEof.into()),
                };
            }
            self.carry.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Closes both directions: the peer reads end of stream.
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The Content-Length of a message head (0 without one).
fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// The status code of a response.
pub fn status(response: &[u8]) -> u16 {
    response
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|code| std::str::from_utf8(code).ok()?.parse().ok())
        .unwrap_or(0)
}

/// The body of a message.
pub fn body(message: &[u8]) -> &[u8] {
    message.windows(4).position(|w| w == b"\r\n\r\n").map_or(&[][..], |end| &message[end + 4..])
}

/// Whether a response carries `name: value` (names case-insensitive).
pub fn has_header(message: &[u8], name: &str, value: &str) -> bool {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(message.len());
    String::from_utf8_lossy(&message[..end]).lines().any(|line| {
        line.split_once(':').is_some_and(|(n, v)| n.trim().eq_ignore_ascii_case(name) && v.trim() == value)
    })
}

/// Listens on 127.0.0.1 (a port the kernel picks) and runs `serve` on each accepted connection in a
/// thread of its own, for the rest of the experiment, with the connection's place in accept order
/// (0, 1, 2, …; the order the connections opened, as the accept queue is first in, first out).
pub fn listen(serve: impl Fn(TcpStream, usize) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
    let addr = listener.local_addr().expect("getsockname");
    let serve = std::sync::Arc::new(serve);
    thread::spawn(move || {
        for (seq, stream) in listener.incoming().flatten().enumerate() {
            let serve = std::sync::Arc::clone(&serve);
            thread::spawn(move || serve(stream, seq));
        }
    });
    addr
}
