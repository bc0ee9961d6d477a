//! Reading the kernel's side of an experiment: /proc/net counters as before/after deltas, `ss`,
//! /proc/net/tcp, sysctls (written only inside lab-exp's own network namespace), and the tools.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::process::Command;

/// A snapshot of every /proc/net/netstat and /proc/net/snmp counter (`TcpExt.ListenOverflows`).
#[derive(Debug, Clone)]
pub struct Counters(BTreeMap<String, i64>);

impl Counters {
    pub fn now() -> Counters {
        Counters(sys::netstat::counters().unwrap_or_else(|e| panic!("{e}")))
    }

    /// How much `name` grew since `self` was taken.
    pub fn delta(&self, later: &Counters, name: &str) -> i64 {
        later.0.get(name).copied().unwrap_or(0) - self.0.get(name).copied().unwrap_or(0)
    }
}

/// The sysctls an experiment may change, and that must read the same on the host afterwards.
pub const WATCHED_SYSCTLS: &[&str] = &[
    "net/core/somaxconn",
    "net/ipv4/tcp_syncookies",
    "net/ipv4/tcp_max_syn_backlog",
    "net/ipv4/tcp_migrate_req",
    "net/ipv4/tcp_rmem",
    "net/ipv4/tcp_wmem",
];

pub fn sysctl(name: &str) -> String {
    fs::read_to_string(format!("/proc/sys/{name}")).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Writes a sysctl of this process's network namespace. Refuses outside lab-exp's own namespace, so
/// that no experiment can change the host's settings by mistake.
pub fn set_sysctl(name: &str, value: &str) {
    assert!(crate::in_own_namespace(), "refusing to write sysctl {name} outside lab-exp's namespace");
    fs::write(format!("/proc/sys/{name}"), value).unwrap_or_else(|e| panic!("write /proc/sys/{name}: {e}"));
}

/// The watched sysctls and the network namespaces that exist, as they stand now.
pub fn host_state() -> Vec<(String, String)> {
    let mut state: Vec<(String, String)> =
        WATCHED_SYSCTLS.iter().map(|name| (name.to_string(), sysctl(name))).collect();
    state.push(("network namespaces".into(), namespaces().join(" ")));
    state
}

/// The inodes of every network namespace some process is in, plus the names under /run/netns.
fn namespaces() -> Vec<String> {
    let mut found = std::collections::BTreeSet::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(link) = fs::read_link(entry.path().join("ns/net")) {
            found.insert(link.to_string_lossy().into_owned());
        }
    }
    for entry in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        found.insert(format!("/run/netns/{}", entry.file_name().to_string_lossy()));
    }
    found.into_iter().collect()
}

/// Whether `tool` is on the PATH (or in /usr/sbin).
pub fn have(tool: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|dir| std::path::Path::new(dir).join(tool).is_file())
}

/// Runs a command to its end; panics with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {}: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One socket as `ss -tanmi` shows it.
#[derive(Debug, Clone, Default)]
pub struct SsSocket {
    pub state: String,
    pub recv_q: u64,
    pub send_q: u64,
    pub local: String,
    pub peer: String,
    /// The `users:((...))` column with `-p`.
    pub process: String,
    /// The detail words (`rtt:0.02/0.01`, `skmem:(r0,rb131072,...)`, `zerowindow`...).
    pub details: Vec<String>,
}

impl SsSocket {
    /// The value of a `key:value` detail (`rcv_space`, `snd_wnd`), if shown.
    pub fn detail(&self, key: &str) -> Option<&str> {
        self.details.iter().find_map(|word| word.strip_prefix(key)?.strip_prefix(':'))
    }

    /// A field of `skmem:(r0,rb131072,t0,tb2626560,...)`: `rb` is the receive buffer, `tb` the send
    /// buffer, `r` and `t` what is allocated now.
    pub fn skmem(&self, field: &str) -> Option<u64> {
        let inner = self.detail("skmem")?.trim_start_matches('(').trim_end_matches(')');
        inner.split(',').find_map(|item| {
            let digits = item.strip_prefix(field)?;
            digits.chars().all(|c| c.is_ascii_digit()).then(|| digits.parse().ok())?
        })
    }

    pub fn local_port(&self) -> u16 {
        self.local.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
    }

    pub fn peer_port(&self) -> u16 {
        self.peer.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
    }

    /// The pid in the `users:(("lab-x",pid=123,fd=4))` column.
    pub fn pid(&self) -> Option<u32> {
        self.process.split("pid=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }
}

/// `ss -Htanmi [-p]`: every TCP socket of this namespace touching `port` (local or peer).
pub fn ss(port: u16, with_process: bool) -> Vec<SsSocket> {
    let filter = format!("( sport = :{port} or dport = :{port} )");
    let mut args = vec!["-Htanmi"];
    if with_process {
        args.push("-p");
    }
    args.push(&filter);
    let text = run("ss", &args);
    let mut sockets: Vec<SsSocket> = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = sockets.last_mut() {
                last.details.extend(line.split_whitespace().map(str::to_owned));
            }
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 5 {
            continue;
        }
        let rest: Vec<String> = words[5..].iter().map(|w| w.to_string()).collect();
        let (process, details): (Vec<String>, Vec<String>) =
            rest.into_iter().partition(|word| word.starts_with("users:"));
        sockets.push(SsSocket {
            state: words[0].to_string(),
            recv_q: words[1].parse().unwrap_or(0),
            send_q: words[2].parse().unwrap_or(0),
            local: words[3].to_string(),
            peer: words[4].to_string(),
            process: process.join(" "),
            details,
        });
    }
    sockets
}

/// The listening sockets on `port`, as `ss` shows them.
pub fn ss_listeners(port: u16) -> Vec<SsSocket> {
    ss(port, false).into_iter().filter(|s| s.state == "LISTEN" && s.local_port() == port).collect()
}

/// The first listener on `port` as `ss -ltn` shows it: Recv-Q (the accept queue) and Send-Q (the
/// backlog); zeros if none.
pub fn accept_queue(port: u16) -> (u64, u64) {
    ss_listeners(port).first().map_or((0, 0), |l| (l.recv_q, l.send_q))
}

/// How many clients of `port` wait in SYN-SENT (their SYNs dropped).
pub fn syn_sent(port: u16) -> usize {
    ss(port, false).iter().filter(|s| s.state == "SYN-SENT").count()
}

/// The server side of the connection whose client end is `client` (local port `port`).
pub fn ss_server_side(port: u16, client: SocketAddr) -> Option<SsSocket> {
    ss(port, false).into_iter().find(|s| s.local_port() == port && s.peer_port() == client.port())
}

/// The client side of the connection from `client`.
pub fn ss_client_side(port: u16, client: SocketAddr) -> Option<SsSocket> {
    ss(port, false).into_iter().find(|s| s.peer_port() == port && s.local_port() == client.port())
}

/// Half-open connections (SYN_RECV, state 03) to local port `port`, counted in /proc/net/tcp — the
/// same entries `ss state syn-recv` lists.
pub fn syn_recv(port: u16) -> usize {
    let text = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            fields.get(3) == Some(&"03") && local_port == Some(port)
        })
        .count()
}
