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
    fn this_kernel_counts_listen_overflows() {
        let all = counters().unwrap();
        for name in
            ["TcpExt.ListenOverflows", "TcpExt.ListenDrops", "TcpExt.TCPReqQFullDrop", "Tcp.RetransSegs"]
        {
            assert!(all.contains_key(name), "{name} missing from /proc/net/netstat and snmp");
        }
    }
}
