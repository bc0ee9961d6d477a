//! The network namespace's own counters: `/proc/net/netstat` and `/proc/net/snmp`, where the kernel
//! counts what it did with the packets no socket call ever sees (SYNs dropped because an accept queue
//! was full, SYN cookies sent, segments retransmitted).
//!
//! Both files are pairs of lines, a header of names and a line of values under the same prefix:
//!
//! ```text
//! TcpExt: SyncookiesSent SyncookiesRecv ... ListenOverflows ListenDrops ...
//! TcpExt: 0 0 ... 12 12 ...
//! ```
//!
//! The counters belong to the network namespace of the reading process (`/proc/net` is
//! `/proc/self/net`), so a server in a namespace of its own reports only its own.

use std::collections::BTreeMap;
use std::io;

/// Every counter of `/proc/net/netstat` and `/proc/net/snmp`, keyed `Prefix.Name`
/// (`TcpExt.ListenOverflows`, `Tcp.RetransSegs`).
pub fn counters() -> io::Result<BTreeMap<String, i64>> {
    let mut all = BTreeMap::new();
    for path in ["/proc/net/netstat", "/proc/net/snmp"] {
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("read {path}: {e}")))?;
        parse_into(&text, &mut all);
    }
    Ok(all)
}

/// The `TcpExt` counters named in `names`, from `/proc/net/netstat` (0 for one this kernel lacks).
pub fn tcp_ext(names: &[&str]) -> io::Result<Vec<(String, i64)>> {
    let all = counters()?;
    Ok(names
        .iter()
        .map(|name| (name.to_string(), all.get(&format!("TcpExt.{name}")).copied().unwrap_or(0)))
        .collect())
}

/// Adds the `Prefix.Name → value` pairs of one file's text to `into`. Values are signed: snmp's
/// `Tcp: MaxConn` is -1.
fn parse_into(text: &str, into: &mut BTreeMap<String, i64>) {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((prefix, names)), Some((_, values))) = (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(value) = value.parse() {
                into.insert(format!("{prefix}.{name}"), value);
            }
        }
    }
}

/// A listening TCP socket as `/proc/net/tcp` (or `tcp6`) lists it (its backlog is not there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The socket's inode number (what `fstat` on its fd reports as `st_ino`).
    pub inode: u64,
    /// Connections in its accept queue now (`rx_queue` of a LISTEN line).
    pub accept_queue: u32,
}

/// The namespace's listening TCP sockets of one family (`/proc/net/tcp`, or `tcp6` with `ipv6`):
/// from anywhere, the queue of a socket this process holds no fd of (lab-reuseport's /stats, where
/// each worker process holds only its own). The kernel lists listening sockets first, so reading
/// stops at the first other line: the file's thousands of TIME_WAIT lines under churn are never
/// generated. (A file with no line past the listening ones still walks every connection of the
/// namespace, hence one family only: `tcp6` without IPv6 sockets costs 20 ms at 130 000 of them.)
pub fn listening(ipv6: bool) -> io::Result<Vec<Listening>> {
    use std::io::BufRead;
    let path = if ipv6 { "/proc/net/tcp6" } else { "/proc/net/tcp" };
    let file =
        std::fs::File::open(path).map_err(|e| io::Error::new(e.kind(), format!("open {path}: {e}")))?;
    let mut all = Vec::new();
    for line in io::BufReader::new(file).lines().skip(1) {
        let line = line.map_err(|e| io::Error::new(e.kind(), format!("read {path}: {e}")))?;
        match parse_listening(&line) {
            Some(listening) => all.push(listening),
            None => break,
        }
    }
    Ok(all)
}

/// One line of `/proc/net/tcp`: `sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout
/// inode ...`; `None` unless its state is 0A (LISTEN).
fn parse_listening(line: &str) -> Option<Listening> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(3) != Some(&"0A") {
        return None;
    }
    let (_, rx) = fields.get(4)?.split_once(':')?;
    Some(Listening { inode: fields.get(9)?.parse().ok()?, accept_queue: u32::from_str_radix(rx, 16).ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_of_lines_become_prefixed_names() {
        let mut all = BTreeMap::new();
        parse_into(
            "TcpExt: SyncookiesSent ListenOverflows\nTcpExt: 3 12\nTcp: RtoAlgorithm MaxConn\nTcp: 1 -1\n",
            &mut all,
        );
        assert_eq!(all.get("TcpExt.SyncookiesSent"), Some(&3));
        assert_eq!(all.get("TcpExt.ListenOverflows"), Some(&12));
        assert_eq!(all.get("Tcp.MaxConn"), Some(&-1));
    }

    #[test]
    fn a_listen_line_gives_its_inode_queue_and_backlog() {
        let line = "   0: 0100007F:1F90 00000000:0000 0A 00000080:00000003 00:00000000 00000000     0        0 4242 1";
        assert_eq!(parse_listening(line), Some(Listening { inode: 4242, accept_queue: 3 }));
        let established = line.replace(" 0A ", " 01 ");
        assert_eq!(parse_listening(&established), None);
    }

    #[test]
    fn this_kernel_counts_listen_overflows() {
        let all = counters().unwrap();
        for name in
            ["TcpExt.ListenOverflows", "TcpExt.ListenDrops", "TcpExt.TCPReqQFullDrop", "Tcp.RetransSegs"]
        {
            assert!(all.contains_key(name), "{name} missing from /proc/net/netstat and snmp");
        }
    }
}
