//! What the results were measured on: the machine, its kernel's queue settings, the commit.

use std::fs;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|text| text.trim().to_string())
}

pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".into())
}

/// The machine, as results.json's `machine` object.
pub fn describe() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
        .map(|(_, name)| name.trim().to_string());
    let online = cpuinfo.lines().filter(|line| line.starts_with("processor")).count();
    let sysctl = |name: &str| read_trimmed(&format!("/proc/sys/{}", name.replace('.', "/")));
    // Hyperthreads sharing a core: a server and a client on two siblings share that core's pipeline.
    let mut siblings: Vec<String> = (0..online)
        .filter_map(|cpu| {
            read_trimmed(&format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"))
        })
        .collect();
    siblings.dedup();
    siblings.sort();
    siblings.dedup();
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok();
    json!({
        "hostname": hostname(),
        "cpu_model": model,
        "cpus_online": online,
        "cpus_allowed": labkit::allowed_cpus(),
        "smt_siblings": siblings,
        "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        "somaxconn": sysctl("net.core.somaxconn"),
        "tcp_syncookies": sysctl("net.ipv4.tcp_syncookies"),
        "tcp_tw_reuse": sysctl("net.ipv4.tcp_tw_reuse"),
        "tcp_max_syn_backlog": sysctl("net.ipv4.tcp_max_syn_backlog"),
        "ulimit_n": nofile.map(|(soft, _)| soft),
        "ulimit_n_hard": nofile.map(|(_, hard)| hard),
    })
}

/// The commit measured: `$ACCEPTLAB_COMMIT` (for a copy of the tree without .git), else git's HEAD.
pub fn commit() -> Option<String> {
    if let Ok(commit) = std::env::var("ACCEPTLAB_COMMIT") {
        return Some(commit);
    }
    let output = Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Now in UTC: (`2026-11-23T04:30:00Z`, `20261123T043000Z`).
pub fn utc_now() -> (String, String) {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    (
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
        format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}Z"),
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A client's machine, asked through its `--client-exec` prefix (empty: this machine): `uname -a`
/// and `nproc` there. An error if the prefix cannot run them, before any load is sent through it.
pub fn client(prefix: &[String]) -> Result<Value, String> {
    let ask = |program: &str, args: &[&str]| -> Result<String, String> {
        let mut command = match prefix.split_first() {
            None => Command::new(program),
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(program);
                command
            }
        };
        let shown = format!("{} {program} {}", prefix.join(" "), args.join(" "));
        let output = command
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("client {:?}: {}: {e}", prefix.join(" "), shown.trim()))?;
        if !output.status.success() {
            return Err(format!(
                "client {:?}: {} exited with {}: {}",
                prefix.join(" "),
                shown.trim(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    Ok(json!({
        "exec": prefix.join(" "),
        "uname": ask("uname", &["-a"])?,
        "nproc": ask("nproc", &[])?.parse::<u64>().ok(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
    }
}
