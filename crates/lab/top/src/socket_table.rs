//! The accept queues of listening sockets read straight from the kernel's socket table
//! (`/proc/net/tcp`, `/proc/net/tcp6`), for when the server cannot answer /stats: lab-epoll's one
//! thread blocked in a `/sleep` is exactly when its accept queue fills, and exactly when its /stats
//! is silent. For a socket in LISTEN state the table's `rx_queue` is the accept queue's length, the
//! figure `ss -ltn` shows as Recv-Q. It is there only where lab-top shares the server's host and
//! network namespace.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `st` of a listening socket in the table (TCP_LISTEN).
const LISTEN: &str = "0A";

/// The accept-queue length of every listening socket bound to `addr`, in the table's order (with
/// SO_REUSEPORT there are several); empty where the table has none.
pub fn accept_queues(addr: SocketAddr) -> Vec<u64> {
    let file = if addr.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    listening_queues(&fs::read_to_string(file).unwrap_or_default(), addr)
}

fn listening_queues(table: &str, addr: SocketAddr) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st tx_queue:rx_queue ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, queues) = (fields.get(1)?, fields.get(3)?, fields.get(4)?);
            if *state != LISTEN || parse_address(local)? != addr {
                return None;
            }
            u64::from_str_radix(queues.split_once(':')?.1, 16).ok()
        })
        .collect()
}

/// `0100007F:1F90` → 127.0.0.1:8080. The kernel prints the address as 32-bit words in the host's
/// byte order, and the port as a plain number.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in 0..ip.len() / 8 {
        let word = u32::from_str_radix(ip.get(word * 8..word * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_listeners_accept_queue_as_the_kernel_counts_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(accept_queues(addr), vec![0]);
        // Handshakes complete in the kernel, and wait in the accept queue until accept().
        let waiting: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        assert_eq!(accept_queues(addr), vec![3]);
        drop(listener.accept().unwrap());
        assert_eq!(accept_queues(addr), vec![2]);
        drop(waiting);
        drop(listener);
        assert_eq!(accept_queues(addr), Vec::<u64>::new());
    }

    #[test]
    fn table_lines_parse_for_both_families() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue\n\
                  0: 0100007F:1F90 00000000:0000 0A 00000000:0000000C 00:00000000 00000000\n\
                  1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000\n";
        assert_eq!(listening_queues(v4, "127.0.0.1:8080".parse().unwrap()), vec![12]);
        assert_eq!(listening_queues(v4, "127.0.0.1:8081".parse().unwrap()), Vec::<u64>::new());
        // ::1 is three zero words and one whose last byte is 1, printed in the host's byte order.
        let loopback = if cfg!(target_endian = "little") {
            "00000000000000000000000001000000"
        } else {
            "00000000000000000000000000000001"
        };
        let v6 = format!("header\n 0: {loopback}:1F90 {}:0000 0A 00000000:00000002 00\n", "0".repeat(32));
        assert_eq!(listening_queues(&v6, "[::1]:8080".parse().unwrap()), vec![2]);
    }
}
