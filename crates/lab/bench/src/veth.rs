//! `--net veth`: the servers in a network namespace of their own and lab-load in another, joined by
//! a veth pair, so that the client's packets cross a link instead of loopback.
//!
//! On loopback the client's packets are received on the client's CPU, in the client's system call:
//! receive-side spreading (a NIC's RSS, RPS) plays no part and `SO_INCOMING_CPU` names the client's
//! CPU. A veth hands each packet to the peer's receive queue, so with `--rps` the receive
//! processing of the server's end (RPS on its `rx-0` queue, the software twin of RSS) runs on the
//! server CPUs, chosen by flow hash. lab-bench makes both namespaces (`ip netns add`, named after
//! its pid), the pair and the addresses, moves its own main thread into the server namespace
//! (`setns(2)`; everything started afterwards, the servers and the threads that read /stats, is
//! there too) and runs each lab-load through `ip netns exec` into the client namespace. At the end
//! it goes back to the host's namespace, deletes both (the veth goes with them) and checks the host,
//! the way lab-exp checks its experiments: its network sysctls read as before, and neither
//! namespace nor either end of the pair is left. Traffic only ever goes to addresses inside the two namespaces.

use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::process::Command;

use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};

/// The server namespace's end of the pair, where every server listens.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
/// The client namespace's end.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);

/// The host's sysctls that must read the same afterwards (lab-exp's list, and RPS's flow table).
const WATCHED_SYSCTLS: &[&str] = &[
    "net/core/somaxconn",
    "net/core/rps_sock_flow_entries",
    "net/ipv4/tcp_syncookies",
    "net/ipv4/tcp_max_syn_backlog",
    "net/ipv4/tcp_tw_reuse",
    "net/ipv4/ip_local_port_range",
    "net/ipv4/tcp_rmem",
    "net/ipv4/tcp_wmem",
];

/// The host's watched sysctls, as (name, value) pairs.
pub fn host_sysctls() -> Vec<(String, String)> {
    WATCHED_SYSCTLS
        .iter()
        .map(|name| {
            let value = fs::read_to_string(format!("/proc/sys/{name}")).unwrap_or_default();
            (name.to_string(), value.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect()
}

/// The names in a directory (`/sys/class/net`: the interfaces; `/run/netns`: the named namespaces).
fn names_in(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `ip` with `args`; the error names the command and what ip said.
fn ip(args: &[&str]) -> Result<String, String> {
    let output = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !output.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The CPU mask RPS takes (`/sys/class/net/DEV/queues/rx-0/rps_cpus`): hex, CPU 0 the lowest bit,
/// 32-bit words separated by commas as the kernel prints them.
pub fn rps_mask(cpus: &[usize]) -> String {
    let words = cpus.iter().max().map_or(1, |max| max / 32 + 1);
    let mut mask = vec![0u32; words];
    for &cpu in cpus {
        mask[cpu / 32] |= 1 << (cpu % 32);
    }
    mask.iter().rev().map(|w| format!("{w:08x}")).collect::<Vec<_>>().join(",")
}

/// The two namespaces and their veth pair, while they exist.
pub struct Veth {
    pub server_ns: String,
    pub client_ns: String,
    server_if: String,
    client_if: String,
    /// The host's network namespace, to go back to.
    host: File,
    before: Vec<(String, String)>,
    /// The RPS mask set on the server's end, read back from the kernel.
    rps: Option<String>,
    entered: bool,
    removed: bool,
}

/// What deleting the namespaces needs, and checking the host afterwards: from any thread of
/// lab-bench's (the bench's own end, or the thread that a signal stops it from; `cleanup`).
#[derive(Debug, Clone)]
struct Removal {
    server_ns: String,
    client_ns: String,
    server_if: String,
    client_if: String,
    before: Vec<(String, String)>,
}

impl Removal {
    /// Both namespaces deleted (the pair with them), then the host checked. Reads the host's
    /// sysctls: call it from a thread in the host's network namespace.
    fn run(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for ns in [&self.server_ns, &self.client_ns] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                problems.push(e);
            }
        }
        // Other programs may make namespaces and interfaces meanwhile: what must be gone is ours.
        // /sys shows the interfaces of the namespace it was mounted in (the host's), whatever
        // namespace this thread is in.
        let left: Vec<String> = names_in("/run/netns")
            .into_iter()
            .filter(|n| *n == self.server_ns || *n == self.client_ns)
            .chain(
                names_in("/sys/class/net")
                    .into_iter()
                    .filter(|n| *n == self.server_if || *n == self.client_if),
            )
            .collect();
        if !left.is_empty() {
            problems.push(format!("still there after ip netns del: {}", left.join(", ")));
        }
        let after = host_sysctls();
        let changed: Vec<String> = self
            .before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a)
            .map(|((what, b), (_, a))| format!("{what}: {b:?} before, {a:?} after"))
            .collect();
        if !changed.is_empty() {
            problems.push(format!("the host does not read as before: {}", changed.join("; ")));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl Veth {
    /// Makes the namespaces and the pair, with RPS over `rps_cpus` on the server's end if given.
    pub fn create(rps_cpus: Option<&[usize]>) -> Result<Veth, String> {
        let root = fs::metadata("/proc/self").is_ok_and(|me| std::os::unix::fs::MetadataExt::uid(&me) == 0);
        if !root {
            return Err("--net veth makes network namespaces (ip netns add, setns): run as root".into());
        }
        let host = File::open("/proc/self/ns/net").map_err(|e| format!("open /proc/self/ns/net: {e}"))?;
        let id = std::process::id();
        let mut veth = Veth {
            server_ns: format!("lab-bench-{id}-srv"),
            client_ns: format!("lab-bench-{id}-cli"),
            server_if: format!("lbs{id}"),
            client_if: format!("lbc{id}"),
            host,
            before: host_sysctls(),
            rps: None,
            entered: false,
            removed: false,
        };
        // Handed to `cleanup` before anything is made: a signal from here on deletes what there is.
        let removal = Removal {
            server_ns: veth.server_ns.clone(),
            client_ns: veth.client_ns.clone(),
            server_if: veth.server_if.clone(),
            client_if: veth.client_if.clone(),
            before: veth.before.clone(),
        };
        crate::cleanup::set_teardown(Box::new(move || removal.run()));
        let (s, c) = (veth.server_ns.clone(), veth.client_ns.clone());
        let (sif, client_if) = (veth.server_if.clone(), veth.client_if.clone());
        ip(&["netns", "add", &s])?;
        ip(&["netns", "add", &c])?;
        ip(&["link", "add", &sif, "netns", &s, "type", "veth", "peer", "name", &client_if, "netns", &c])?;
        for (ns, dev, addr) in [(&s, &sif, SERVER_IP), (&c, &client_if, CLIENT_IP)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        if let Some(cpus) = rps_cpus {
            // /sys shows a namespace's devices only where it is mounted from inside it: ip netns exec
            // mounts one for its command.
            let path = format!("/sys/class/net/{sif}/queues/rx-0/rps_cpus");
            let mask = rps_mask(cpus);
            ip(&["netns", "exec", &s, "sh", "-c", &format!("echo {mask} > {path}")])?;
            let read = ip(&["netns", "exec", &s, "cat", &path])?.trim().to_string();
            let number = |m: &str| u128::from_str_radix(&m.replace(',', ""), 16).ok();
            if number(&read) != number(&mask) {
                return Err(format!("RPS: wrote {mask} to {path}, read back {read}"));
            }
            veth.rps = Some(read);
        }
        Ok(veth)
    }

    /// Moves the calling thread (lab-bench's main thread, before it starts anything) into the
    /// server namespace: every process and thread it starts from now on is there too.
    pub fn enter_server(&mut self) -> Result<(), String> {
        let path = format!("/run/netns/{}", self.server_ns);
        let ns = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {path}: {e}"))?;
        self.entered = true;
        Ok(())
    }

    /// The prefix each lab-load runs through.
    pub fn client_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.client_ns].iter().map(|s| s.to_string()).collect()
    }

    /// results.json's `network` object.
    pub fn describe(&self) -> Value {
        json!({
            "net": "veth",
            "server_namespace": self.server_ns,
            "client_namespace": self.client_ns,
            "server_addr": SERVER_IP.to_string(),
            "client_addr": CLIENT_IP.to_string(),
            "server_interface": self.server_if,
            "rps_cpus": self.rps,
        })
    }

    /// Back to the host's namespace, both namespaces deleted (the pair with them); then the host
    /// checked. Every server must have stopped by then, or its namespace outlives the name. Where a
    /// signal came first, its thread does the deleting and this waits for the end (`cleanup`).
    pub fn remove(&mut self) -> Result<(), String> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let mut problems = Vec::new();
        if self.entered {
            if let Err(e) = setns(&self.host, CloneFlags::CLONE_NEWNET) {
                problems.push(format!("setns back to the host's namespace: {e}"));
            }
        }
        if let Some(Err(reason)) = crate::cleanup::run_teardown() {
            problems.push(reason);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// What is checked on the host, for results.json.
    pub fn checked(&self) -> Vec<String> {
        let mut checked: Vec<String> = self.before.iter().map(|(what, _)| what.clone()).collect();
        checked.push(format!(
            "{} and {} gone from /run/netns, {} and {} from the host's interfaces",
            self.server_ns, self.client_ns, self.server_if, self.client_if
        ));
        checked
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        if let Err(reason) = self.remove() {
            eprintln!("lab-bench: --net veth: {reason}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rps_masks_are_the_kernels_hex_words() {
        assert_eq!(rps_mask(&[0]), "00000001");
        assert_eq!(rps_mask(&[0, 1]), "00000003");
        assert_eq!(rps_mask(&[1, 3]), "0000000a");
        assert_eq!(rps_mask(&[4, 5, 6, 7, 8, 9, 10, 11]), "00000ff0");
        assert_eq!(rps_mask(&[0, 33]), "00000002,00000001");
    }
}
