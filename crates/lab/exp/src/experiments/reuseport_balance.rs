//! reuseport-balance: SO_REUSEPORT spreads connections by a hash that knows nothing of load, and
//! what becomes of a closed socket's queue depends on net.ipv4.tcp_migrate_req.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::thread;
use std::time::Duration;

use labkit::fairness;

use super::Experiment;
use crate::kernel::{self, Counters};
use crate::net::{self, Pending};
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "reuseport-balance",
    summary: "SO_REUSEPORT's hash: uneven and blind to a busy process; --steer cpu; a closed socket's queue and tcp_migrate_req",
    claim: "With SO_REUSEPORT every process has its own socket and accept queue, and the kernel \
            spreads connections over them by a hash of the 4-tuple: it balances only on average, \
            keeps sending new connections to a process that is busy, and never moves a connection \
            once queued — unless the socket closes, when net.ipv4.tcp_migrate_req=1 moves its queue \
            to a sibling and 0 resets it.",
    notes: "'Multiple Listener process on the same port: SO_REUSEPORT ... OS creates multiple queues \
            for each process and does load balancing' and 'one thread can end up doing all the heavy \
            work while another sits idle'",
    needs_namespace: true,
    run,
};

const WORKERS: usize = 2;
const CONNECTIONS: usize = 16;

fn run(report: &mut Report) {
    if !kernel::have("ss") {
        report.skip(
            "needs ss (iproute2) to see which process holds each connection: scripts/install-tools.sh ss",
        );
        return;
    }
    let workers = WORKERS.to_string();
    report.does(format!(
        "starts lab-reuseport --workers {WORKERS} (hash) and opens {CONNECTIONS} keep-alive connections; \
         ss -tnp says which process holds each; Jain's fairness index J = (Σx)² / (n·Σx²) over the \
         per-process counts (1 = even, 1/n = all on one)"
    ));
    let hashed = spread("hash", &workers, None);
    report.does(
        "the same with --steer cpu, half the connections made from a thread pinned to each of two CPUs",
    );
    let cpus = sys::cpu::allowed_cpus().unwrap_or_default();
    let steered = (cpus.len() >= 2).then(|| spread("cpu", &workers, Some([cpus[0], cpus[1]])));
    let mut j = serde_json::Map::new();
    for (label, outcome) in [("hash", Some(&hashed)), ("steer_cpu", steered.as_ref())] {
        let Some((counts, stats_open, by_cpu)) = outcome else {
            report.observe("--steer cpu: not run, fewer than two CPUs allowed");
            continue;
        };
        let index = jain(counts);
        j.insert(
            label.into(),
            serde_json::json!({ "per_process": counts, "jain": index, "stats_open": stats_open }),
        );
        report.observe(format!(
            "{label}: connections per process (ss) {counts:?}, /stats open {stats_open:?}, J = {index:.3}{}",
            if by_cpu.is_empty() { String::new() } else { format!("; (client CPU → process) {by_cpu:?}") }
        ));
        let mut from_ss = counts.clone();
        from_ss.sort_unstable();
        let mut from_stats = stats_open.clone();
        from_stats.sort_unstable();
        report.check(
            format!("{label}: ss and /stats agree on how many connections each process holds"),
            from_ss == from_stats && counts.iter().sum::<usize>() == CONNECTIONS,
            format!("ss {counts:?}, /stats {stats_open:?}"),
        );
    }
    if let Some((counts, _, by_cpu)) = &steered {
        let each_cpu_one_process = by_cpu.values().all(|pids| pids.len() == 1);
        let distinct: std::collections::BTreeSet<_> = by_cpu.values().flatten().collect();
        report.check(
            "--steer cpu: every connection from one CPU lands on that CPU's process, so spreading clients over the CPUs balances exactly (J = 1)",
            each_cpu_one_process && distinct.len() == WORKERS && jain(counts) > 0.999,
            format!("{by_cpu:?}, J = {:.3}", jain(counts)),
        );
    }
    report.figure("balance", serde_json::Value::Object(j));

    blind_to_busy(report, &workers);
    sleep_neighbour(report);
    fairness_workload(report);
    migrate(report);
}

/// The servers of the sleep-neighbour case: lab-reuseport's three steerings, and beside them the
/// two designs that balance with something in the middle.
const NEIGHBOUR_ROWS: [(&str, &str, &[&str]); 5] = [
    ("lab-reuseport --steer hash", "lab-reuseport", &["--workers", "2"]),
    ("lab-reuseport --steer cpu", "lab-reuseport", &["--workers", "2", "--steer", "cpu"]),
    ("lab-reuseport --steer load", "lab-reuseport", &["--workers", "2", "--steer", "load"]),
    ("lab-oneshot", "lab-oneshot", &["--workers", "2"]),
    ("lab-memcached --dispatch least", "lab-memcached", &["--workers", "2", "--dispatch", "least"]),
];

/// The rows of [`NEIGHBOUR_ROWS`] this machine runs: `--steer load` needs bpf(2); a row left out
/// is said in one line of the `case`.
fn rows_here(report: &mut Report, case: &str) -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    let load_works = sys::bpf::probe().is_ok();
    let (rows, left): (Vec<_>, Vec<_>) =
        NEIGHBOUR_ROWS.into_iter().partition(|(label, _, _)| load_works || !label.ends_with("load"));
    for (label, _, _) in left {
        report.observe(format!("{case}, {label}: not run: bpf(2) refused here"));
    }
    rows
}

/// One of two workers held by a long request; new connections opened meanwhile: who waits for it.
fn sleep_neighbour(report: &mut Report) {
    const NEW: usize = 20;
    report.does(format!(
        "sleep neighbour: for each of {}, sends GET /sleep?ms=2000 on one connection, and 200 ms later \
         opens {NEW} new connections at once, each GET /; times each to its response",
        NEIGHBOUR_ROWS.map(|(label, _, _)| label).join(", ")
    ));
    let mut figures = serde_json::Map::new();
    let mut slowest_by_row = BTreeMap::new();
    for (label, bin, args) in rows_here(report, "sleep neighbour") {
        let server = net::start(bin, args);
        let addr = server.addr();
        thread::sleep(Duration::from_millis(300)); // every worker started
        let mut held = net::connect(addr);
        std::io::Write::write_all(&mut held, b"GET /sleep?ms=2000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        thread::sleep(Duration::from_millis(200));
        let times: Vec<Duration> = thread::scope(|scope| {
            let runs: Vec<_> = (0..NEW)
                .map(|_| {
                    scope.spawn(move || {
                        let started = std::time::Instant::now();
                        let mut stream = net::connect(addr);
                        let _ = net::get(&mut stream, "/");
                        started.elapsed()
                    })
                })
                .collect();
            runs.into_iter().map(|run| run.join().expect("client thread")).collect()
        });
        let _ = net::read_response(&mut held);
        let slowest = times.iter().max().copied().unwrap_or_default();
        let waited = times.iter().filter(|t| **t > Duration::from_secs(1)).count();
        report.observe(format!(
            "{label}: slowest of {NEW} new connections {:.1} ms; {waited} waited over 1 s for the held worker",
            net::ms(slowest)
        ));
        figures.insert(label.into(), serde_json::json!({ "slowest_ms": net::ms(slowest), "waited": waited }));
        slowest_by_row.insert(label, slowest);
    }
    report.figure("sleep_neighbour", serde_json::Value::Object(figures));
    if let Some(load) = slowest_by_row.get("lab-reuseport --steer load") {
        report.check(
            "--steer load: no new connection waits for the held worker (the program reads that it is busy)",
            *load < Duration::from_secs(1),
            format!("slowest {:.1} ms", net::ms(*load)),
        );
    }
    let hash = slowest_by_row.get("lab-reuseport --steer hash").copied().unwrap_or_default();
    report.check(
        "--steer hash: some new connections wait behind the held worker (the hash is blind to it)",
        hash > Duration::from_secs(1),
        format!("slowest {:.1} ms", net::ms(hash)),
    );
}

/// Rounds of the fairness workload per row (the hash's split changes with the ports drawn).
const FAIRNESS_ROUNDS: usize = 3;

/// lab-bench's fairness workload (labkit::fairness) on each row of the sleep-neighbour case.
fn fairness_workload(report: &mut Report) {
    let per_kind = fairness::connections_per_kind(WORKERS);
    report.does(format!(
        "fairness: for each of the same rows, {FAIRNESS_ROUNDS} rounds of lab-bench's fairness workload: \
         {per_kind} keep-alive connections of GET {} (heavy) and {per_kind} of GET {} (light), two \
         lab-loads started at once (-d 1.5 --warmup 0.5, unpinned); per executing worker the connections \
         and requests between two /stats reads around the loads (the read after is one more connection), \
         and Jain's index over each",
        fairness::heavy_path(),
        fairness::LIGHT_PATH
    ));
    let mut figures = serde_json::Map::new();
    let mut splits_by_row = BTreeMap::new();
    for (label, bin, args) in rows_here(report, "fairness") {
        let mut rounds = Vec::new();
        for _ in 0..FAIRNESS_ROUNDS {
            let server = net::start(bin, args);
            let addr = server.addr();
            thread::sleep(Duration::from_millis(300)); // every worker started
            let before = net::stats(&mut net::connect(addr));
            let run = |path: String| {
                let connections = per_kind.to_string();
                thread::spawn(move || {
                    net::load(addr, &path, &["-c", &connections, "-d", "1.5", "--warmup", "0.5"])
                })
            };
            let (heavy, light) = (run(fairness::heavy_path()), run(fairness::LIGHT_PATH.to_string()));
            let (heavy, light) = (heavy.join().unwrap_or_default(), light.join().unwrap_or_default());
            let after = net::stats(&mut net::connect(addr));
            let split = fairness::split(&before, &after);
            rounds.push(serde_json::json!({
                "conns": split.conns, "requests": split.requests,
                "jain_conns": split.jain_conns(), "jain_requests": split.jain_requests(),
                "heavy_rps": heavy["rps"], "light_p99_ms": light["latency_us"]["p99"].as_f64().map(|us| us / 1e3),
                "errors": net::load_errors(&heavy) + net::load_errors(&light),
            }));
        }
        let median = |key: &str| {
            let mut values: Vec<f64> = rounds.iter().filter_map(|r| r[key].as_f64()).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let ideal = fairness::heavy_ideal_rps(per_kind, WORKERS);
        let splits = |key: &str| -> String {
            let list = |r: &serde_json::Value| -> Vec<u64> {
                r[key].as_array().into_iter().flatten().filter_map(|v| v.as_f64()).map(|v| v as u64).collect()
            };
            rounds.iter().map(|r| format!("{:?}", list(r))).collect::<Vec<_>>().join(" ")
        };
        // lab-oneshot's threads own no connection: its per-worker `conns` are all zero.
        let owned = rounds.iter().any(|r| r["conns"].as_array().is_some_and(|c| c.iter().any(|v| v != 0.0)));
        let by_conns = if owned {
            format!("connections per worker {} (Jain median {:.2})", splits("conns"), median("jain_conns"))
        } else {
            "no worker owns a connection (Jain over connections: none)".into()
        };
        report.observe(format!(
            "fairness, {label}: {by_conns}; requests per worker {} (Jain median {:.2}); heavy {:.0} req/s \
             ({:.0}% of the {ideal:.0} two idle workers give), light p99 {:.2} ms (medians)",
            splits("requests"),
            median("jain_requests"),
            median("heavy_rps"),
            median("heavy_rps") / ideal * 100.0,
            median("light_p99_ms"),
        ));
        figures.insert(
            label.into(),
            serde_json::json!({
                "rounds": rounds, "jain_conns_median": owned.then(|| median("jain_conns")),
                "jain_requests_median": median("jain_requests"), "heavy_rps_median": median("heavy_rps"),
                "heavy_ideal_rps": ideal, "light_p99_ms_median": median("light_p99_ms"),
            }),
        );
        splits_by_row.insert(label, rounds);
    }
    report.figure("fairness", serde_json::Value::Object(figures));
    let errors: u64 = splits_by_row.values().flatten().filter_map(|r| r["errors"].as_u64()).sum();
    report.check("fairness: every load ran without an error", errors == 0, format!("{errors} errors"));
}

/// Opens CONNECTIONS connections to a fresh lab-reuseport with `--steer steer`, one request each,
/// and returns the per-process counts from ss, /stats' `open` per worker, and (when made from
/// pinned threads) which processes each client CPU's connections went to.
fn spread(
    steer: &str,
    workers: &str,
    cpus: Option<[usize; 2]>,
) -> (Vec<usize>, Vec<usize>, BTreeMap<usize, Vec<u32>>) {
    let server = net::start("lab-reuseport", &["--workers", workers, "--steer", steer]);
    let addr = server.addr();
    let mut streams: Vec<(Option<usize>, TcpStream)> = Vec::new();
    for i in 0..CONNECTIONS {
        let cpu = cpus.map(|pair| pair[i % 2]);
        let stream = match cpu {
            Some(cpu) => thread::spawn(move || {
                sys::cpu::pin_current_thread(cpu).unwrap_or_else(|e| panic!("{e}"));
                net::connect(addr)
            })
            .join()
            .expect("connect thread"),
            None => net::connect(addr),
        };
        streams.push((cpu, stream));
    }
    for (_, stream) in &mut streams {
        let (status, _) = net::get(stream, "/").expect("GET /");
        assert_eq!(status, 200);
    }
    let stats = net::stats(&mut streams[0].1);
    let stats_open: Vec<usize> = stats["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w["open"].as_u64().unwrap_or(0) as usize)
        .collect();
    let owners: BTreeMap<u16, u32> = kernel::ss(addr.port(), true)
        .into_iter()
        .filter(|s| s.state == "ESTAB" && s.local_port() == addr.port())
        .filter_map(|s| Some((s.peer_port(), s.pid()?)))
        .collect();
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    let mut by_cpu: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for (cpu, stream) in &streams {
        let port = stream.local_addr().expect("getsockname").port();
        if let Some(&pid) = owners.get(&port) {
            *per_pid.entry(pid).or_default() += 1;
            if let Some(cpu) = cpu {
                let pids = by_cpu.entry(*cpu).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    let mut counts: Vec<usize> = per_pid.values().copied().collect();
    counts.resize(stats_open.len().max(counts.len()), 0);
    (counts, stats_open, by_cpu)
}

/// Jain's fairness index of `counts` (the fairness workload's, labkit::fairness).
fn jain(counts: &[usize]) -> f64 {
    fairness::jain(&counts.iter().map(|&c| c as f64).collect::<Vec<_>>())
}

/// One process busy in /sleep: the hash still sends it new connections, which wait in its queue.
fn blind_to_busy(report: &mut Report, workers: &str) {
    let server = net::start("lab-reuseport", &["--workers", workers]);
    let addr = server.addr();
    report.does(
        "keeps one lab-reuseport process busy with GET /sleep?ms=1500, connects 20 new clients, and \
         reads every socket's accept queue with ss -ltn",
    );
    let mut sleeper = net::connect(addr);
    let sleeping = thread::spawn(move || net::get(&mut sleeper, "/sleep?ms=1500").map(|r| r.0));
    thread::sleep(Duration::from_millis(150));
    let clients: Vec<TcpStream> = (0..20).map(|_| net::connect(addr)).collect();
    thread::sleep(Duration::from_millis(200));
    let mut queues: Vec<u64> = kernel::ss_listeners(addr.port()).iter().map(|l| l.recv_q).collect();
    queues.sort_unstable_by(|a, b| b.cmp(a));
    let _ = sleeping.join();
    drop(clients);
    report.observe(format!(
        "with one process asleep, the sockets' accept queues (ss -ltn Recv-Q): {queues:?} — the new \
         connections hashed to the busy process wait, while the other accepted its share at once"
    ));
    report.figure("accept_queues_one_busy", queues.clone());
    report.check(
        "the hash is blind to load: the busy process's socket queues connections while the other's queue is empty",
        queues.len() == WORKERS && queues[0] >= 1 && queues[1..].iter().all(|&q| q == 0),
        format!("{queues:?}"),
    );
}

/// Two SO_REUSEPORT sockets of lab-exp's own; connections queue on both; one closes.
fn migrate(report: &mut Report) {
    report.does(
        "opens two SO_REUSEPORT listening sockets of its own on one port, connects 16 clients (the \
         hash spreads them), closes the first socket without accepting, and sees what became of its \
         queue: with net.ipv4.tcp_migrate_req=0, then =1 (in the namespace)",
    );
    let mut figures = serde_json::Map::new();
    for migrate in [0, 1] {
        kernel::set_sysctl("net/ipv4/tcp_migrate_req", &migrate.to_string());
        let first = sys::socket::listen_tcp("127.0.0.1:0".parse().unwrap(), 64, true).expect("listen");
        let addr: SocketAddr = sys::socket::local_addr(first.as_fd()).expect("getsockname");
        let second = sys::socket::listen_tcp(addr, 64, true).expect("listen");
        let mut clients: Vec<Pending> = (0..16).map(|_| Pending::connect(addr, None)).collect();
        net::wait_all(&mut clients, Duration::from_secs(2));
        let on_first = sys::socket::listen_queue(first.as_fd()).expect("TCP_INFO").accept_queue;
        let on_second = sys::socket::listen_queue(second.as_fd()).expect("TCP_INFO").accept_queue;
        let before = Counters::now();
        drop(first);
        thread::sleep(Duration::from_millis(100));
        let second_after = sys::socket::listen_queue(second.as_fd()).expect("TCP_INFO").accept_queue;
        let after = Counters::now();
        let reset = clients
            .iter()
            .filter(|c| {
                let mut byte = [0u8; 1];
                matches!(sys::socket::read(c.fd.as_fd(), &mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
            })
            .count();
        let success = before.delta(&after, "TcpExt.TCPMigrateReqSuccess");
        report.observe(format!(
            "tcp_migrate_req={migrate}: queued {on_first} on the socket that closed, {on_second} on the \
             other; after the close the other's queue holds {second_after}, {reset} clients were reset; \
             TcpExt TCPMigrateReqSuccess +{success}"
        ));
        figures.insert(
            format!("migrate_req_{migrate}"),
            serde_json::json!({ "queued_on_closed": on_first, "queued_on_other": on_second,
                                "other_after": second_after, "reset": reset, "migrated": success }),
        );
        let holds = if migrate == 0 {
            reset == on_first as usize && second_after == on_second
        } else {
            reset == 0 && second_after == on_first + on_second && success == on_first as i64
        };
        report.check(
            if migrate == 0 {
                "tcp_migrate_req=0: every connection queued on the closed socket is reset; the other socket's queue is unchanged".to_string()
            } else {
                "tcp_migrate_req=1: they move to the other socket's queue (TCPMigrateReqSuccess counts them); none is reset".to_string()
            },
            holds && on_first > 0,
            format!("{on_first} queued on it: {reset} reset, other queue {on_second} → {second_after}, migrated {success}"),
        );
    }
    report.figure("migrate", serde_json::Value::Object(figures));
}
