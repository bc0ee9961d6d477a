//! What a bench runs: the servers under test, each started the same way, and the workloads, each a
//! lab-load command line.

use std::fmt::Write as _;

/// How a server under test is started.
#[derive(Debug, Clone)]
pub enum Launch {
    /// One of the project's binaries, started through labkit (it prints `listening on`).
    Lab { bin: &'static str, args: Vec<String> },
    /// nginx from the distribution, the reference, from a configuration made for the run.
    Nginx(labkit::nginx::Config),
    /// A real system beside nginx (Node, Apache, HAProxy) or a user's `--server`: `real`.
    Real(crate::real::Spec),
}

/// One server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// The row's name in the tables: `epoll`, `nginx-mutex`, `real-nginx-reuseport`, ...
    pub id: String,
    /// The `--archs` name that selects it: `epoll` ... `oneshot`, or `real-nginx`.
    pub family: &'static str,
    /// Threads or processes that execute requests.
    pub workers: usize,
    /// The CPUs it is pinned to.
    pub cpus: Vec<usize>,
    pub launch: Launch,
    /// Whether it serves /spin and /stats (the project's servers do, nginx does not).
    pub serves_lab_routes: bool,
    /// Where it serves HTTPS (made by [`with_tls`]): the CA a client trusts, for lab-load and /stats.
    pub tls_ca: Option<std::path::PathBuf>,
}

/// Renders a CPU list the way the command lines take it: `0,1,2`.
pub fn cpu_list(cpus: &[usize]) -> String {
    let mut out = String::new();
    for (i, cpu) in cpus.iter().enumerate() {
        let _ = write!(out, "{}{cpu}", if i == 0 { "" } else { "," });
    }
    out
}

fn lab(
    id: &str,
    family: &'static str,
    bin: &'static str,
    workers: usize,
    cpus: &[usize],
    extra: &[&str],
) -> Target {
    let mut args: Vec<String> = vec!["--addr".into(), "127.0.0.1:0".into(), "--cpus".into(), cpu_list(cpus)];
    if family != "epoll" {
        args.extend(["--workers".into(), workers.to_string()]);
    }
    args.extend(extra.iter().map(|arg| arg.to_string()));
    Target {
        id: id.into(),
        family,
        workers,
        cpus: cpus.to_vec(),
        launch: Launch::Lab { bin, args },
        serves_lab_routes: true,
        tls_ca: None,
    }
}

/// Every server for `cpus`: the seven architectures with `--workers` = the number of CPUs (lab-nginx
/// once per accept mode, lab-reuseport with the hash, `--steer cpu` and `--steer load`), then nginx with one worker
/// and with N workers three ways. With a single CPU the variants that only differ in how several
/// workers share the listener are left out: there is nothing for them to choose between.
pub fn targets(cpus: &[usize], with_nginx: bool) -> Vec<Target> {
    let n = cpus.len();
    let several = n > 1;
    // ramcloud's dispatcher is a thread of its own; on 3+ CPUs it gets a core to itself (CPU 0 of the
    // list) and the workers the rest, as in RAMCloud. On 1-2 CPUs it shares, with N workers.
    let ramcloud_workers = if n > 2 { n - 1 } else { n };
    let mut all = vec![
        lab("epoll", "epoll", "lab-epoll", 1, &cpus[..1], &[]),
        lab("memcached", "memcached", "lab-memcached", n, cpus, &[]),
        lab("ramcloud", "ramcloud", "lab-ramcloud", ramcloud_workers, cpus, &[]),
        lab("nginx-mutex", "nginx", "lab-nginx", n, cpus, &["--accept", "mutex"]),
    ];
    if several {
        all.push(lab("nginx-exclusive", "nginx", "lab-nginx", n, cpus, &["--accept", "exclusive"]));
        all.push(lab("nginx-herd", "nginx", "lab-nginx", n, cpus, &["--accept", "herd"]));
    }
    all.push(lab("reuseport", "reuseport", "lab-reuseport", n, cpus, &[]));
    if several {
        all.push(lab("reuseport-steer", "reuseport", "lab-reuseport", n, cpus, &["--steer", "cpu"]));
        // An eBPF program picks the least loaded worker (and migrates a closing socket's queue).
        all.push(lab("reuseport-load", "reuseport", "lab-reuseport", n, cpus, &["--steer", "load"]));
    }
    all.push(lab("oneshot", "oneshot", "lab-oneshot", n, cpus, &[]));
    // lab-uring: one ring (lab-epoll's completion twin, on one CPU), the same with a 20 µs batch
    // wait (fewer system calls for some latency), and one ring per CPU, each with its own
    // SO_REUSEPORT socket.
    all.push(lab("uring", "uring", "lab-uring", 1, &cpus[..1], &[]));
    all.push(lab("uring-batch", "uring", "lab-uring", 1, &cpus[..1], &["--batch-wait-us", "20"]));
    if several {
        all.push(lab("uring-reuseport", "uring", "lab-uring", n, cpus, &["--listen", "reuseport"]));
    }
    if with_nginx {
        use labkit::nginx::{Accept, Config};
        let mut nginx = |id: &str, workers: usize, accept: Accept| {
            all.push(Target {
                id: id.into(),
                family: "real-nginx",
                workers,
                cpus: cpus[..workers].to_vec(),
                launch: Launch::Nginx(Config { workers, cpus: cpus[..workers].to_vec(), accept, tls: None }),
                serves_lab_routes: false,
                tls_ca: None,
            })
        };
        nginx("real-nginx-1w", 1, Accept::Mutex);
        if several {
            nginx("real-nginx-mutex", n, Accept::Mutex);
            nginx("real-nginx-exclusive", n, Accept::Exclusive);
            nginx("real-nginx-reuseport", n, Accept::Reuseport);
        }
    }
    all
}

/// The servers of the latency sweep: one of each architecture, and both ways lab-nginx hands out
/// connections (the mutex holder taking them all, and EPOLLEXCLUSIVE's first idle waiter).
pub const SWEEP_SERVERS: [&str; 7] =
    ["epoll", "memcached", "ramcloud", "nginx-mutex", "nginx-exclusive", "reuseport", "oneshot"];

/// A request mix for the open-loop sweep.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub name: &'static str,
    /// lab-load's `--mix`.
    pub spec: &'static str,
    pub about: &'static str,
}

pub const MIXES: [Mix; 2] = [
    Mix { name: "uniform", spec: "100:/spin?us=10", about: "every request /spin?us=10" },
    Mix {
        name: "bimodal",
        spec: "99.5:/spin?us=5,0.5:/spin?us=500",
        about: "99.5% /spin?us=5, 0.5% /spin?us=500 (the dispersive mix of Shinjuku and ZygOS)",
    },
];

/// The workloads, by the names `--workloads` takes: what runs without `--workloads`.
pub const WORKLOADS: [&str; 7] =
    ["keep-alive", "pipelined", "churn", "sweep-uniform", "sweep-bimodal", "fairness", "arrival-order"];

/// The workloads over TLS (`make bench-tls`): only where named (`--workloads tls` names all three),
/// never in the default set, so `make bench` keeps to its minutes. Each row serves HTTPS on make
/// cert's certificate, nginx with `ssl` on the same one.
pub const TLS_WORKLOADS: [&str; 3] = ["tls-keep-alive", "tls-churn", "tls-resume"];

/// The closed-loop throughput workloads and the lab-load flags that make each (the TLS ones also
/// get an https:// URL and `--cacert`).
pub fn throughput_flags(workload: &str) -> Option<&'static [&'static str]> {
    match workload {
        "keep-alive" | "tls-keep-alive" => Some(&[]),
        "pipelined" => Some(&["--pipeline", "16"]),
        // A connection per request; over TLS every handshake full (lab-load keeps no tickets)...
        "churn" | "tls-churn" => Some(&["--close"]),
        // ... or resumed by ticket after each connection's first.
        "tls-resume" => Some(&["--close", "--tls-resume"]),
        _ => None,
    }
}

/// Whether `workload` runs over TLS.
pub fn is_tls(workload: &str) -> bool {
    TLS_WORKLOADS.contains(&workload)
}

/// Whether `workload` opens a connection per request (and so gets churn's CPU split).
pub fn is_churn(workload: &str) -> bool {
    matches!(workload, "churn" | "tls-churn" | "tls-resume")
}

/// `target` serving HTTPS with `files` (make cert's): the project's servers with `--tls-cert` and
/// `--tls-key`, nginx with `ssl` on the same certificate and key; `None` for a row that cannot be
/// told to (the real systems beside nginx, a user's `--server`).
pub fn with_tls(target: &Target, files: &lab_cert::Files) -> Option<Target> {
    let mut tls = target.clone();
    match &mut tls.launch {
        Launch::Lab { args, .. } => {
            args.extend(["--tls-cert".into(), files.cert.display().to_string()]);
            args.extend(["--tls-key".into(), files.key.display().to_string()]);
        }
        Launch::Nginx(config) => {
            config.tls = Some(labkit::nginx::Tls { cert: files.cert.clone(), key: files.key.clone() })
        }
        Launch::Real(_) => return None,
    }
    tls.tls_ca = Some(files.ca.clone());
    Some(tls)
}

/// Expands `--workloads` names (`throughput` and `sweep` are shorthands) and checks them.
pub fn resolve_workloads(names: &[String]) -> Result<Vec<&'static str>, String> {
    if names.is_empty() {
        return Ok(WORKLOADS.to_vec());
    }
    let mut chosen = Vec::new();
    for name in names {
        let group: Vec<&'static str> = match name.as_str() {
            "throughput" => vec!["keep-alive", "pipelined", "churn"],
            "sweep" => vec!["sweep-uniform", "sweep-bimodal"],
            "tls" => TLS_WORKLOADS.to_vec(),
            other => match WORKLOADS.iter().chain(&TLS_WORKLOADS).find(|w| **w == other) {
                Some(w) => vec![*w],
                None => {
                    return Err(format!(
                        "unknown workload {other:?}; one of {}, {}, throughput, sweep, tls",
                        WORKLOADS.join(", "),
                        TLS_WORKLOADS.join(", ")
                    ))
                }
            },
        };
        for w in group {
            if !chosen.contains(&w) {
                chosen.push(w);
            }
        }
    }
    Ok(chosen)
}

/// Whether `--archs` (empty: everything) selects `target`: by family (`nginx` is lab-nginx,
/// `real-nginx` the reference) or by its exact id.
pub fn selected(archs: &[String], target: &Target) -> bool {
    archs.is_empty() || archs.iter().any(|a| a == target.family || *a == target.id)
}

/// The rows of the real systems beside nginx that `--archs` names (`real` names them all, with
/// nginx), those installed here, on `cpus`, for `connections` lab-load connections; each one named
/// but not installed said in one line on stderr, unless `quiet`.
pub fn real_targets(cpus: &[usize], archs: &[String], connections: usize, quiet: bool) -> Vec<Target> {
    use crate::real::{find, named, System};
    let n = cpus.len();
    let mut rows = Vec::new();
    let mut missing: Vec<(&str, Vec<&str>)> = Vec::new();
    for system in System::ALL.into_iter().filter(|s| named(archs, *s)) {
        if find(system.program()).is_none() {
            match missing.iter_mut().find(|(program, _)| *program == system.program()) {
                Some((_, ids)) => ids.push(system.id()),
                None => missing.push((system.program(), vec![system.id()])),
            }
            continue;
        }
        // Apache's event MPM closes kept-alive connections whenever no worker thread is idle (64
        // connections on 2, 4 or 16 threads: thousands of resets a second; on 64, a few), so its
        // threads are twice lab-load's connections, not the CPUs.
        let workers = match system {
            System::NodeOne => 1,
            System::ApacheEvent => (2 * connections).max(n),
            _ => n,
        };
        let on = if system == System::NodeOne { &cpus[..1] } else { cpus };
        rows.push(Target {
            id: system.id().into(),
            family: system.family(),
            workers,
            cpus: on.to_vec(),
            launch: Launch::Real(crate::real::Spec::System(system)),
            serves_lab_routes: false,
            tls_ca: None,
        });
    }
    if !quiet {
        for (program, ids) in missing {
            eprintln!(
                "lab-bench: {program} is not installed (not on PATH nor in /usr/sbin): {} skipped \
                 (scripts/install-tools.sh {program} installs it)",
                ids.join(", ")
            );
        }
    }
    rows
}

/// The rows of `--server NAME='COMMAND'`, on `cpus`, with `{workers}` = the number of CPUs.
pub fn user_targets(cpus: &[usize], servers: &[(String, String)]) -> Vec<Target> {
    servers
        .iter()
        .map(|(name, command)| Target {
            id: name.clone(),
            family: "user",
            workers: cpus.len(),
            cpus: cpus.to_vec(),
            launch: Launch::Real(crate::real::Spec::User { command: command.clone() }),
            serves_lab_routes: false,
            tls_ca: None,
        })
        .collect()
}

/// Whether `--archs` selects a row of the real systems or of a user's server (made only where
/// named, so always), or, with `real`, one of nginx's.
pub fn selected_real(archs: &[String], target: &Target) -> bool {
    match target.launch {
        Launch::Real(_) => true,
        _ => archs.iter().any(|a| a == "real") && target.family.starts_with("real-"),
    }
}

/// How a row of a real system or a user's server is configured, in one line (empty for the
/// project's own, whose command line says it).
pub fn configuration(target: &Target) -> String {
    match &target.launch {
        Launch::Lab { .. } => String::new(),
        Launch::Nginx(config) => crate::real::describe_nginx(config),
        Launch::Real(spec) => crate::real::describe(spec, target.workers, &target.cpus),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_cores_split_into_one_server_cpu_and_its_variants() {
        let one: Vec<String> = targets(&[0], true).into_iter().map(|t| t.id).collect();
        assert_eq!(
            one,
            [
                "epoll",
                "memcached",
                "ramcloud",
                "nginx-mutex",
                "reuseport",
                "oneshot",
                "uring",
                "uring-batch",
                "real-nginx-1w"
            ]
        );
        let eight = targets(&[0, 1, 2, 3, 4, 5, 6, 7], true);
        assert_eq!(eight.len(), 17);
        let uring: Vec<_> =
            eight.iter().filter(|t| t.family == "uring").map(|t| (t.id.as_str(), t.workers)).collect();
        assert_eq!(uring, [("uring", 1), ("uring-batch", 1), ("uring-reuseport", 8)]);
        let ramcloud = eight.iter().find(|t| t.id == "ramcloud").unwrap();
        assert_eq!(ramcloud.workers, 7, "a core of its own for the dispatcher");
        let epoll = eight.iter().find(|t| t.id == "epoll").unwrap();
        assert_eq!(epoll.cpus, [0]);
    }

    #[test]
    fn workloads_expand_and_reject_unknown_names() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(resolve_workloads(&names(&["throughput"])).unwrap(), ["keep-alive", "pipelined", "churn"]);
        assert_eq!(
            resolve_workloads(&names(&["sweep", "sweep-uniform"])).unwrap(),
            ["sweep-uniform", "sweep-bimodal"]
        );
        assert!(resolve_workloads(&names(&["keepalive"])).unwrap_err().contains("unknown workload"));
        assert_eq!(
            resolve_workloads(&names(&["keep-alive", "tls"])).unwrap(),
            ["keep-alive", "tls-keep-alive", "tls-churn", "tls-resume"]
        );
        assert!(resolve_workloads(&[]).unwrap().iter().all(|w| !is_tls(w)), "TLS only where named");
    }
}
