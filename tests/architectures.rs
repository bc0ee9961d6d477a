#![forbid(unsafe_code)]
//! The architecture suite: what makes each server what it is, checked from outside —
//! pinning read back from the kernel, /stats adding up, memcached's round-robin, ramcloud's
//! request-level balancing, nginx's three ways of sharing one listener, lab-epoll's single thread,
//! and reuseport's supervisor.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use acceptlab_tests::{
    echo, eventually, for_each_server, get, in_parallel, parse_cpu_list, process_tree, run_to_exit, spawn,
    tasks, Client, Running, Server, SERVERS,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The non-negative integer at `value[key]`; fails showing `value` if it is missing or not one.
fn json_count(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or_else(|| panic!("`{key}` is not a count in {value}"))
}

/// The `workers` array of a /stats report.
fn workers(stats: &Value) -> &Vec<Value> {
    stats["workers"].as_array().unwrap_or_else(|| panic!("no workers array: {stats}"))
}

/// `key` summed over every worker of a /stats report.
fn sum(stats: &Value, key: &str) -> u64 {
    workers(stats).iter().map(|worker| json_count(worker, key)).sum()
}

/// Fails unless every per-worker counter that has a total adds up to it.
fn assert_sums_match_totals(stats: &Value, context: &str) {
    for key in ["requests", "accepted", "open"] {
        let total = json_count(&stats["totals"], key);
        assert_eq!(
            sum(stats, key),
            total,
            "{context}: workers' `{key}` do not add up to totals.{key}: {stats}"
        );
    }
}

/// A row of its own for the tests that need a variant the shared table does not run.
fn row(name: &'static str, bin: &'static str, args: &'static [&'static str]) -> Server {
    Server::other(name, bin, args)
}

// ---------------------------------------------------------------- pinning

/// Starts `server` with `--cpus` `cpus` and checks, against the kernel, that each thread /stats
/// lists runs on exactly the CPU /stats gives it, in docs/spec.md's order, and that any other thread of the
/// process tree (a supervisor, a main thread that only waits) does no serving work.
fn assert_pinned_as_stats_says(server: &Server, cpus: &[usize]) {
    let list = cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let context = format!("--cpus {list}");
    let running = spawn(server, &["--cpus", &list]);
    let stats = running.connect().stats();

    // /stats: docs/spec.md's order — the acceptor or dispatcher first, then the workers, wrapping
    // around. lab-oneshot's `shared` row 0 is no thread: the threads are the rows after it.
    let all = workers(&stats);
    let skip = usize::from(all.first().is_some_and(|first| first["role"] == "shared"));
    let listed = &all[skip..];
    for (index, worker) in listed.iter().enumerate() {
        assert_eq!(json_count(worker, "id"), (skip + index) as u64, "{context}: ids in order: {stats}");
        let want = cpus[index % cpus.len()];
        assert_eq!(worker["cpu"], want, "{context}: entry {index} should be on CPU {want}: {stats}");
    }

    // Burn CPU on every serving thread, so that one left unpinned would show its work.
    let before = tasks(running.pid());
    let clients: Vec<Client> = (0..4).map(|_| running.connect()).collect();
    in_parallel(clients, |_, mut client| {
        for _ in 0..3 {
            assert_eq!(client.get("/spin?us=30000").status, 200);
        }
    });
    let after = tasks(running.pid());

    // The kernel: the threads pinned to one CPU carry exactly the CPUs /stats reports.
    let mut kernel: BTreeMap<usize, usize> = BTreeMap::new();
    for task in after.iter().filter(|task| task.cpus.len() == 1) {
        assert!(cpus.contains(&task.cpus[0]), "{context}: a thread pinned outside the list: {task:?}");
        assert_eq!(task.last_cpu, task.cpus[0], "{context}: a pinned thread last ran elsewhere: {task:?}");
        *kernel.entry(task.cpus[0]).or_default() += 1;
    }
    let mut reported: BTreeMap<usize, usize> = BTreeMap::new();
    for worker in listed {
        *reported.entry(json_count(worker, "cpu") as usize).or_default() += 1;
    }
    assert_eq!(
        kernel, reported,
        "{context}: CPU → threads pinned there, by the kernel (left) and by /stats (right); \
         threads: {after:?}; stats: {stats}"
    );

    // Every other thread only waits: it gained no CPU time while the pinned ones spun 360 ms.
    for task in after.iter().filter(|task| task.cpus.len() != 1) {
        let was = before.iter().find(|old| old.tid == task.tid).map_or(0, |old| old.cpu_ticks);
        assert!(
            task.cpu_ticks <= was + 1,
            "{context}: thread {} of pid {} is not pinned (CPUs {:?}) yet worked {} ticks under load",
            task.tid,
            task.pid,
            task.cpus,
            task.cpu_ticks - was
        );
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let allowed = status.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:"));
    parse_cpu_list(allowed.expect("Cpus_allowed_list in /proc/self/status").trim())
}

/// Each server pinned to the first two CPUs this process may run on, in both orders (or to the one
/// CPU it may run on, on a machine that gives it only one): never skipped.
#[test]
fn each_thread_runs_on_the_cpu_stats_reports() {
    let allowed = allowed_cpus();
    assert!(!allowed.is_empty(), "no CPU in Cpus_allowed_list");
    let lists: Vec<Vec<usize>> = match allowed[..] {
        [only] => vec![vec![only]],
        [first, second, ..] => vec![vec![first, second], vec![second, first]],
        [] => unreachable!(),
    };
    for_each_server(|server| {
        for cpus in &lists {
            assert_pinned_as_stats_says(server, cpus);
        }
    });
}

#[test]
fn pinning_to_a_missing_cpu_exits_1_naming_sched_setaffinity() {
    // CPU 99, unless this is a machine that has one.
    let missing = if allowed_cpus().contains(&99) { "1023" } else { "99" };
    for_each_server(|server| {
        let finished = run_to_exit(server, &["--cpus", missing], EXIT_TIMEOUT);
        assert_eq!(finished.status.code(), Some(1), "--cpus {missing}: {finished:?}");
        assert!(finished.stderr.contains("sched_setaffinity"), "--cpus {missing}: {finished:?}");
    });
}

// ---------------------------------------------------------------- /stats

/// Load clients: connections, and requests on each.
const LOAD_CLIENTS: usize = 8;
const LOAD_REQUESTS: u64 = 50;

/// `LOAD_REQUESTS` requests on each of `clients` at once, half `GET /`, half `/echo`; returns the
/// connections, still open.
fn load(clients: Vec<Client>) -> Vec<Client> {
    let done = Mutex::new(Vec::new());
    in_parallel(clients, |id, mut client| {
        for request in 0..LOAD_REQUESTS {
            if request % 2 == 0 {
                assert_eq!(client.get("/").status, 200, "client {id}, request {request}");
            } else {
                let body = format!("client {id}, request {request}");
                assert_eq!(client.request(&echo(body.as_bytes())).text(), body);
            }
        }
        done.lock().unwrap().push(client);
    });
    done.into_inner().unwrap()
}

#[test]
fn stats_add_up_after_load() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let clients = load((0..LOAD_CLIENTS).map(|_| running.connect()).collect());

        // Quiet now, with all the load connections still open.
        let mut observer = running.connect();
        let stats = observer.stats();
        assert_sums_match_totals(&stats, "after the load");
        let requests = json_count(&stats["totals"], "requests");
        assert!(requests >= 400, "{stats}");
        let load = LOAD_CLIENTS as u64 * LOAD_REQUESTS;
        assert_eq!(requests, load + 1, "{load} and this /stats: {stats}");
        let connections = LOAD_CLIENTS as u64 + 1;
        assert_eq!(json_count(&stats["totals"], "accepted"), connections, "{stats}");
        assert_eq!(json_count(&stats["totals"], "open"), connections, "{stats}");

        drop(clients);
        let mut stats = observer.stats();
        let closed = eventually(Duration::from_secs(5), || {
            stats = observer.stats();
            assert_sums_match_totals(&stats, "as the load connections close");
            stats["totals"]["open"] == 1
        });
        assert!(closed, "the load connections are still counted open: {stats}");
    });
}

/// docs/spec.md: "The sum of `requests` over workers equals `totals.requests`" — in every report, so also
/// in one taken while the workers are busy: each counter must be read once for both.
#[test]
fn stats_add_up_in_every_report_taken_under_load() {
    for_each_server(|server| {
        let running = spawn(server, &[]);
        let mut observer = running.connect();
        let clients: Vec<Client> = (0..LOAD_CLIENTS).map(|_| running.connect()).collect();
        thread::scope(|scope| {
            let load = scope.spawn(|| load(clients));
            let mut asked = 0;
            while !load.is_finished() {
                asked += 1;
                assert_sums_match_totals(&observer.stats(), &format!("/stats {asked}, taken under load"));
            }
            load.join().expect("the load clients");
        });
    });
}

// ---------------------------------------------------------------- memcached

#[test]
fn memcached_hands_connections_out_exactly_round_robin() {
    const WORKERS: usize = 3;
    const PER_WORKER: u64 = 8;
    let server = row("memcached-3", "lab-memcached", &["--workers", "3"]);
    let running = spawn(&server, &[]);
    let mut held = Vec::new();
    for i in 0..WORKERS as u64 * PER_WORKER {
        let mut client = running.connect();
        // Answered, so accepted and handed over before the next one connects.
        assert_eq!(client.get("/").status, 200, "connection {i}");
        held.push(client);
    }
    // The 25th connection, asking, goes to the next worker in turn: the first again.
    let stats = running.connect().stats();
    let listed = workers(&stats);
    assert_eq!(listed.len(), WORKERS + 1, "{stats}");
    assert_eq!(listed[0]["role"], "acceptor", "{stats}");
    assert_eq!(json_count(&listed[0], "accepted"), WORKERS as u64 * PER_WORKER + 1, "{stats}");
    assert_eq!(json_count(&listed[0], "conns"), 0, "the acceptor serves nothing itself: {stats}");
    for (index, worker) in listed.iter().enumerate().skip(1) {
        let extra = u64::from(index == 1);
        assert_eq!(worker["role"], "worker", "{stats}");
        assert_eq!(json_count(worker, "accepted"), 0, "worker {index}: {stats}");
        assert_eq!(json_count(worker, "conns"), PER_WORKER + extra, "worker {index}: {stats}");
        assert_eq!(json_count(worker, "open"), PER_WORKER + extra, "worker {index}: {stats}");
        assert_eq!(json_count(worker, "requests"), PER_WORKER + extra, "worker {index}: {stats}");
    }
}

/// `--dispatch p2c|least` read the load each worker publishes: a connection that arrives while one
/// worker is stuck in a long request goes to the other, and is answered while the long request still
/// runs. Round-robin sends it to the stuck worker in turn, where it waits the request out.
#[test]
fn memcached_load_aware_dispatch_passes_a_busy_worker_by() {
    in_parallel(vec!["rr", "p2c", "least"], |_, policy| {
        let server = row("memcached-2", "lab-memcached", &["--workers", "2"]);
        let running = spawn(&server, &["--dispatch", policy]);
        // Connection A (the first worker, all being idle) blocks its worker for 1.5 s.
        let mut sleeper = running.connect();
        sleeper.send(&get("/sleep?ms=1500"));
        // B goes to the second worker either way (round-robin's turn; or the first already busy).
        let mut second = running.connect();
        assert_eq!(second.get("/").status, 200, "{policy}");
        thread::sleep(Duration::from_millis(100)); // the first worker's busy time builds up
        let mut third = running.connect();
        assert_eq!(third.get("/").status, 200, "{policy}");
        // Is the sleeper's answer already there, i.e. did the third wait behind it?
        sleeper.set_read_timeout(Duration::from_millis(if policy == "rr" { 3000 } else { 1 }));
        let waited_behind_sleep = sleeper.try_read_response(false).is_ok();
        assert_eq!(waited_behind_sleep, policy == "rr", "--dispatch {policy}");
        sleeper.set_read_timeout(Duration::from_secs(5));
        if !waited_behind_sleep {
            assert_eq!(sleeper.read_response().status, 200, "{policy}");
        }
    });
}

// ---------------------------------------------------------------- ramcloud

#[test]
fn ramcloud_answers_others_while_one_worker_sleeps() {
    let server = row("ramcloud-2", "lab-ramcloud", &["--workers", "2"]);
    let running = spawn(&server, &[]);
    let mut sleeper = running.connect();
    let mut other = running.connect();
    assert_eq!(other.get("/").status, 200, "before the sleep");
    let started = Instant::now();
    sleeper.send(&get("/sleep?ms=1500"));
    thread::sleep(Duration::from_millis(100));
    for i in 0..20 {
        let asked = Instant::now();
        let response = other.get("/");
        let took = asked.elapsed();
        assert_eq!(response.text(), "Hello, World!", "GET / {i}: {response:?}");
        assert!(took < Duration::from_millis(500), "GET / {i} while one worker sleeps took {took:?}");
    }
    let all_answered = started.elapsed();
    assert!(
        all_answered < Duration::from_millis(1400),
        "the 20 GET / were answered only at {all_answered:?}"
    );
    assert_eq!(sleeper.read_response().status, 200, "the sleeping request");
    assert!(started.elapsed() >= Duration::from_millis(1500), "/sleep?ms=1500 took {:?}", started.elapsed());
}

#[test]
fn ramcloud_runs_pipelined_requests_in_parallel_and_answers_in_order() {
    let server = row("ramcloud-2", "lab-ramcloud", &["--workers", "2"]);
    let running = spawn(&server, &[]);
    let mut client = running.connect();
    assert_eq!(client.get("/").status, 200, "warm-up");
    let started = Instant::now();
    client.send(&[get("/sleep?ms=600"), get("/sleep?ms=600"), echo(b"third")].concat());
    let mut arrivals = Vec::new();
    for i in 0..3 {
        let response = client.read_response();
        arrivals.push(started.elapsed());
        assert_eq!(response.status, 200, "pipelined response {i}: {response:?}");
        if i == 2 {
            assert_eq!(response.text(), "third", "the third response answers the echo: {response:?}");
        }
    }
    // In order: nothing before the first sleep is done, the echo included.
    assert!(arrivals[0] >= Duration::from_millis(590), "first response after {arrivals:?}");
    // In parallel: both sleeps at once, on the two workers.
    assert!(arrivals[2] < Duration::from_millis(1100), "all three answered only after {arrivals:?}");
}

// ---------------------------------------------------------------- nginx

/// Opens `count` connections one at a time on an idle server, each doing one request and closing,
/// then returns /stats from one more connection.
fn one_request_per_connection(running: &Running, count: usize) -> Value {
    for i in 0..count {
        let mut client = running.connect();
        assert_eq!(
            client.request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").status,
            200,
            "connection {i}"
        );
        client.expect_closed();
    }
    // Let every worker see the last close before counting.
    thread::sleep(Duration::from_millis(100));
    running.connect().stats()
}

/// Waits (up to 5 s) until every thread of `running` is asleep, so that each one woken by what
/// came before has run and gone back to sleep.
fn wait_all_asleep(running: &Running) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tasks(running.pid()).iter().any(|task| task.state != 'S') {
        assert!(Instant::now() < deadline, "threads still busy after 5 s: {:?}", tasks(running.pid()));
        thread::sleep(Duration::from_millis(1));
    }
}

/// How a 4-worker lab-nginx in `mode` took `CONNECTIONS` connections, one at a time, each once
/// every thread was asleep again: /stats after, and how often each worker thread went back to
/// sleep meanwhile, by thread id.
fn herd_run(mode: &'static str) -> (Value, BTreeMap<u32, u64>) {
    let args: &'static [&'static str] = match mode {
        "herd" => &["--workers", "4", "--accept", "herd"],
        _ => &["--workers", "4", "--accept", "exclusive"],
    };
    let running = spawn(&row("nginx-4", "lab-nginx", args), &[]);
    wait_all_asleep(&running);
    let before = tasks(running.pid());
    for i in 0..CONNECTIONS {
        let mut client = running.connect();
        let response = client.request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(response.status, 200, "{mode}: connection {i}");
        client.expect_closed();
        wait_all_asleep(&running);
    }
    let sleeps = tasks(running.pid())
        .into_iter()
        // The main thread only waits for the workers to end.
        .filter(|task| task.tid != running.pid())
        .map(|task| {
            let was = before.iter().find(|old| old.tid == task.tid).map_or(0, |old| old.sleeps);
            (task.tid, task.sleeps - was)
        })
        .collect();
    (running.connect().stats(), sleeps)
}

/// Connections the nginx tests open, one at a time.
const CONNECTIONS: usize = 40;

/// NOTE: the herd is measured in the kernel. A worker woken for a connection another worker has
/// already accepted finds the listener not readable when epoll_wait re-polls it before returning,
/// so it goes back to sleep *inside* epoll_wait — /stats' `wakeups` (returns from epoll_wait) only
/// sees the herd when woken threads race on more cores than a 2-core machine has. Each of those
/// in-kernel wake-ups is still a voluntary context switch of that thread, which /proc counts and
/// /stats reports per worker as `context_switches`.
#[test]
fn nginx_herd_wakes_every_worker_and_exclusive_fewer() {
    let (herd_stats, herd_sleeps) = herd_run("herd");
    let (exclusive_stats, exclusive_sleeps) = herd_run("exclusive");
    let shown = format!(
        "per worker thread, sleeps during {CONNECTIONS} connections: herd {herd_sleeps:?}, \
         exclusive {exclusive_sleeps:?}; herd /stats {herd_stats}; exclusive /stats {exclusive_stats}"
    );
    for stats in [&herd_stats, &exclusive_stats] {
        assert_eq!(workers(stats).len(), 4, "{shown}");
        assert_eq!(sum(stats, "accepted"), CONNECTIONS as u64 + 1, "{shown}");
        assert_sums_match_totals(stats, "nginx");
        // Every accept took a return from epoll_wait, and then came the request and the close.
        assert!(sum(stats, "wakeups") >= 2 * sum(stats, "accepted"), "{shown}");
    }
    assert_eq!(herd_sleeps.len(), 4, "four worker threads: {shown}");
    assert_eq!(exclusive_sleeps.len(), 4, "four worker threads: {shown}");
    // Herd: every worker is woken for every connection, whoever accepts it.
    let quietest = herd_sleeps.values().min().copied().unwrap_or_default();
    assert!(quietest >= CONNECTIONS as u64 * 3 / 4, "herd: a worker slept through the connections: {shown}");
    // Exclusive: the kernel wakes one waiter (or a few) per connection; the others sleep on.
    let sleepers = exclusive_sleeps.values().filter(|&&sleeps| sleeps < CONNECTIONS as u64 / 4).count();
    assert!(sleepers >= 2, "exclusive: fewer than two workers slept through the connections: {shown}");
    let herd_total: u64 = herd_sleeps.values().sum();
    let exclusive_total: u64 = exclusive_sleeps.values().sum();
    assert!(3 * exclusive_total < 2 * herd_total, "exclusive woke about as many as herd: {shown}");
    // /stats reports the same kernel count per worker, so the herd is visible there too.
    for worker in workers(&herd_stats) {
        let switches = worker["context_switches"].as_u64().expect("context_switches is a number");
        assert!(switches >= CONNECTIONS as u64 * 3 / 4, "herd: /stats context_switches too low: {shown}");
    }
    let quiet = workers(&exclusive_stats)
        .iter()
        .filter(|worker| worker["context_switches"].as_u64().unwrap_or(u64::MAX) < CONNECTIONS as u64 / 4)
        .count();
    assert!(quiet >= 2, "exclusive: /stats shows fewer than two quiet workers: {shown}");
}

#[test]
fn nginx_mutex_workers_accept_every_connection() {
    let running = spawn(&row("nginx-mutex-2", "lab-nginx", &["--workers", "2", "--accept", "mutex"]), &[]);
    let stats = one_request_per_connection(&running, CONNECTIONS);
    assert!(workers(&stats).iter().all(|worker| worker["role"] == "worker"), "{stats}");
    assert_eq!(sum(&stats, "accepted"), CONNECTIONS as u64 + 1, "{stats}");
    assert_eq!(json_count(&stats["totals"], "accepted"), CONNECTIONS as u64 + 1, "{stats}");
    assert_sums_match_totals(&stats, "nginx mutex");
}

// ---------------------------------------------------------------- lab-epoll

#[test]
fn epoll_one_sleep_stalls_every_other_connection() {
    let running = spawn(&row("epoll", "lab-epoll", &[]), &[]);
    let mut sleeper = running.connect();
    let mut other = running.connect();
    assert_eq!(other.get("/").status, 200, "before the sleep");
    sleeper.send(&get("/sleep?ms=1000"));
    thread::sleep(Duration::from_millis(100));
    let asked = Instant::now();
    let response = other.get("/");
    let took = asked.elapsed();
    assert_eq!(response.status, 200, "{response:?}");
    assert!(took >= Duration::from_millis(800), "GET / during another connection's sleep took only {took:?}");
    assert_eq!(sleeper.read_response().status, 200, "the sleeping request");
}

// ---------------------------------------------------------------- reuseport

/// The worker processes below the supervisor `pid`.
fn children(pid: u32) -> Vec<u32> {
    process_tree(pid).into_iter().filter(|&child| child != pid).collect()
}

/// Whether `pid` is gone (or a zombie waiting to be reaped).
fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn reuseport_workers_share_one_port_and_a_killed_one_is_replaced() {
    let server = SERVERS.iter().find(|server| server.bin == "lab-reuseport").expect("a reuseport row");
    let mut running = spawn(server, &["--addr", "127.0.0.1:0"]);
    let port = running.listen_addr().port();
    let stats = running.connect().stats();
    let listeners = stats["listeners"].as_array().unwrap_or_else(|| panic!("no listeners: {stats}"));
    assert_eq!(listeners.len(), 2, "one listener per worker: {stats}");
    for listener in listeners {
        let addr = listener["addr"].as_str().unwrap_or_default();
        assert_eq!(addr, format!("127.0.0.1:{port}"), "every worker on the announced port: {stats}");
    }
    let listed = workers(&stats);
    assert_eq!(listed.len(), 2, "{stats}");
    assert!(listed.iter().all(|worker| worker["role"] == "process"), "{stats}");
    // One pid for the whole server, the supervisor's, whichever worker process answered.
    let supervisor = running.pid();
    assert_eq!(stats["pid"], supervisor, "/stats pid is the supervisor's: {stats}");
    assert!(listed.iter().all(|worker| worker.get("pid").is_none()), "no per-worker pid: {stats}");
    // The supervisor may still be forking the second when the first answers.
    let mut first = Vec::new();
    let both = eventually(Duration::from_secs(2), || {
        first = children(supervisor);
        first.len() == 2
    });
    assert!(both, "two worker processes below the supervisor {supervisor}: {first:?}");
    let victim = first[0];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("kill -9 a worker");
    let mut now = Vec::new();
    let replaced = eventually(Duration::from_secs(2), || {
        now = children(supervisor);
        now.len() == 2 && !now.contains(&victim) && now.contains(&first[1])
    });
    assert!(replaced, "worker {victim} killed: within 2 s the workers are {now:?} (were {first:?})");
    let served_before = running.connect().stats();
    for i in 0..20 {
        // Fresh connections, so that both sockets get some (all 20 on one: odds of 2 in a million).
        let response = running.connect().get("/");
        assert_eq!(response.status, 200, "request {i} after the replacement: {response:?}");
    }
    assert!(running.is_running(), "the supervisor died: {}", running.stderr_text());
    let served_after = running.connect().stats();
    for (before, after) in workers(&served_before).iter().zip(workers(&served_after)) {
        assert!(
            json_count(after, "requests") > json_count(before, "requests"),
            "each worker, the replacement too, serves its socket: before {served_before}, after {served_after}"
        );
    }

    running.sigterm();
    let status = running.wait_exit(Duration::from_secs(7));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit after SIGTERM: {status:?}");
    let workers_now = now.clone();
    let none_left = eventually(Duration::from_secs(2), || workers_now.iter().all(|&pid| gone(pid)));
    assert!(none_left, "workers {workers_now:?} outlived the supervisor");
}

/// The `reuseport-load` row (`--steer load`), if this machine may load its program: skipped loudly
/// where it may not, a failure where `ACCEPTLAB_REQUIRE_ALL_ROWS=1`.
fn reuseport_row(name: &str) -> Option<&'static Server> {
    let server = SERVERS.iter().find(|server| server.name == name).expect("a reuseport-load row");
    acceptlab_tests::runs_here(server).unwrap_or_else(|failure| panic!("{failure}")).then_some(server)
}

/// Waits until every worker of `running` has published its load as live (the program chooses only
/// among those), and returns the /stats that says so.
fn all_live(running: &Running) -> Value {
    let mut stats = Value::Null;
    let live = eventually(Duration::from_secs(5), || {
        stats = running.connect().stats();
        workers(&stats).iter().all(|worker| worker["load"]["live"] == true)
    });
    assert!(live, "every worker live: {stats}");
    stats
}

/// Whether a response has arrived on `client` (without waiting for one).
fn answered(client: &Client) -> bool {
    client.stream().set_nonblocking(true).expect("set_nonblocking");
    let mut byte = [0u8; 1];
    let arrived = client.stream().peek(&mut byte).is_ok_and(|n| n > 0);
    client.stream().set_nonblocking(false).expect("set_nonblocking");
    arrived
}

/// `--steer load`: with one of two workers held by a long request, every new connection opened
/// meanwhile goes to the other worker and is answered while the held one still executes (with the
/// kernel's hash, each would wait behind the held one with odds of one in two).
#[test]
fn reuseport_steer_load_sends_new_connections_past_a_held_worker() {
    let Some(server) = reuseport_row("reuseport-load") else { return };
    let running = spawn(server, &[]);
    all_live(&running);
    let mut held = running.connect();
    held.send(&get("/sleep?ms=2500"));
    thread::sleep(Duration::from_millis(300)); // past the 10 ms after which a batch counts as busy
    for i in 0..12 {
        let response = running.connect().get("/");
        assert_eq!(response.status, 200, "new connection {i}: {response:?}");
        assert!(!answered(&held), "new connection {i} was answered only after the held request");
    }
    let stats = running.connect().stats();
    assert_eq!(stats["steering"]["mode"], "load", "{stats}");
    let steered: u64 = workers(&stats).iter().map(|w| json_count(&w["load"], "steered")).sum();
    assert!(steered >= 13, "the program chose the socket of every connection: {stats}");
    assert_eq!(held.read_response().status, 200, "the held request");
}

/// Clients queued on both workers' sockets (each worker accepts its first connection, then pauses
/// accepting for 2 s: `--pause-accept`), then SIGTTOU: the supervisor retires the worker in the
/// highest slot, whose socket closes with its queue full. With migration every queued client is
/// answered by the other worker once its pause ends; with `--migrate off` (and the host's
/// tcp_migrate_req 0) the kernel resets them. For the hash (a program that only decides
/// migrations) and for `--steer load`.
#[test]
fn reuseport_migration_loses_nothing_when_a_worker_socket_closes() {
    const CLIENTS: usize = 16;
    let Some(load) = reuseport_row("reuseport-load") else { return };
    for (steer, migrate) in [("hash", "on"), ("hash", "off"), ("load", "on"), ("load", "off")] {
        let running = spawn(load, &["--steer", steer, "--migrate", migrate, "--pause-accept", "2"]);
        // No /stats yet: its connection would be the first one accepted, and start the pause.
        thread::sleep(Duration::from_millis(300));
        let mut clients: Vec<Client> = (0..CLIENTS).map(|_| running.connect()).collect();
        for client in &mut clients {
            client.send(&get("/"));
        }
        thread::sleep(Duration::from_millis(300));
        kill(Pid::from_raw(running.pid() as i32), Signal::SIGTTOU).expect("kill -TTOU the supervisor");
        let mut served = 0;
        for client in &mut clients {
            client.set_read_timeout(Duration::from_secs(5));
            served += usize::from(client.try_read_response(false).is_ok_and(|r| r.status == 200));
        }
        let stats = running.connect().stats();
        let row = format!("--steer {steer} --migrate {migrate}");
        // (No load table, so no count, with the hash and no program.)
        let migrated: u64 = workers(&stats).iter().filter_map(|w| w["load"]["migrated_in"].as_u64()).sum();
        assert_eq!(json_count(&stats["scaling"], "removed"), 1, "{row}: {stats}");
        match migrate {
            "on" => {
                assert_eq!(served, CLIENTS, "{row}: with migration every queued client is answered: {stats}");
                assert!(migrated > 0, "{row}: the program counted the migrated requests: {stats}");
            }
            _ => assert!(
                served < CLIENTS,
                "{row}: without migration the closed socket's queue is reset: {stats}"
            ),
        }
    }
}

/// SIGTTIN adds a worker on a socket of its own, SIGTTOU removes one, SIGHUP replaces every
/// worker with a new process on a new socket; /stats counts each, and the server answers
/// throughout (with migration, so that a /stats connection queued on a closing socket is moved,
/// not reset).
#[test]
fn reuseport_workers_are_added_removed_and_replaced_by_signal() {
    let server = Server::other("reuseport-migrate", "lab-reuseport", &["--workers", "2", "--migrate", "on"]);
    if !acceptlab_tests::runs_here(&server).unwrap_or_else(|failure| panic!("{failure}")) {
        return;
    }
    let mut running = spawn(&server, &[]);
    let supervisor = running.pid();
    let signal = |signal| kill(Pid::from_raw(supervisor as i32), signal).expect("signal the supervisor");
    let settled = |what: &str, serving: u64, listeners: usize| {
        let mut stats = Value::Null;
        let ok = eventually(Duration::from_secs(5), || {
            stats = running.connect().stats();
            json_count(&stats["scaling"], "serving") == serving
                && stats["listeners"].as_array().map_or(0, Vec::len) == listeners
                && children(supervisor).len() == listeners
        });
        assert!(ok, "after {what}: {serving} workers, each with its socket: {stats}");
        assert_eq!(running.connect().get("/").status, 200, "after {what}");
        stats
    };
    settled("start", 2, 2);
    signal(Signal::SIGTTIN);
    let stats = settled("SIGTTIN", 3, 3);
    assert_eq!(json_count(&stats["scaling"], "added"), 1, "{stats}");
    signal(Signal::SIGTTOU);
    let stats = settled("SIGTTOU", 2, 2);
    assert_eq!(json_count(&stats["scaling"], "removed"), 1, "{stats}");
    let before = children(supervisor);
    signal(Signal::SIGHUP);
    let mut stats = Value::Null;
    let replaced = eventually(Duration::from_secs(8), || {
        stats = running.connect().stats();
        json_count(&stats["scaling"], "replaced") == 2
    });
    assert!(replaced, "SIGHUP replaced both workers: {stats}");
    let stats = settled("SIGHUP", 2, 2);
    let after = children(supervisor);
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "new processes: {before:?} then {after:?}: {stats}"
    );
    assert!(running.is_running(), "{}", running.stderr_text());
}

/// Where `bpf(2)` is refused (no CAP_BPF, here a seccomp filter): `--steer load` exits 1 with one
/// line naming the call, the errno and the fix; `--migrate on` with the hash serves on without
/// migration, saying so in one line.
#[test]
fn reuseport_without_bpf_refuses_steer_load_and_serves_without_migration() {
    let bin = acceptlab_tests::bin_path("lab-reuseport");
    let output =
        acceptlab_tests::run_without_bpf(&bin, &["--addr", "127.0.0.1:0", "--steer", "load"], EXIT_TIMEOUT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("--steer load: bpf BPF_MAP_CREATE") && stderr.contains("Operation not permitted"),
        "the call and the errno: {stderr}"
    );
    assert!(stderr.contains("run as root"), "the fix: {stderr}");
    let args = ["--addr", "127.0.0.1:0", "--workers", "1", "--migrate", "on"];
    let output = acceptlab_tests::run_without_bpf(&bin, &args, Duration::from_secs(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "served, then stopped by SIGTERM: {stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("listening on"), "{stderr}");
    let fallback: Vec<&str> = stderr.lines().filter(|line| line.contains("--migrate")).collect();
    assert_eq!(fallback.len(), 1, "{stderr}");
    assert!(fallback[0].contains("falling back to --migrate off"), "{stderr}");
}

/// lab-uring's batch wait (`--batch-wait-us`) waits for a receive from every connection not just
/// answered, but no longer than the batch wait: a busy connection beside ten silent ones is answered
/// at its own pace. If the wait were bounded only by the loop's next sweep (500 ms), the 2 000
/// requests here would take about a minute (one wait in 17 is a batch wait); bounded by the 2 ms
/// batch wait, they take well under a second. Three busy connections in parallel each get every
/// answer, in order.
#[test]
fn uring_batch_waits_never_hold_a_request_for_connections_that_stay_silent() {
    let server = Server::other("uring-batch", "lab-uring", &["--workers", "1", "--batch-wait-us", "2000"]);
    if !acceptlab_tests::runs_here(&server).unwrap_or_else(|failure| panic!("{failure}")) {
        return;
    }
    let running = spawn(&server, &[]);
    let silent: Vec<Client> = (0..10).map(|_| running.connect()).collect();
    let started = Instant::now();
    let mut busy = running.connect();
    for i in 0..2000 {
        let response = busy.get("/");
        assert_eq!((response.status, response.text()), (200, "Hello, World!".into()), "request {i}");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "2 000 requests took {took:?}: a wait outlived the batch wait");
    thread::scope(|scope| {
        for id in 0..3 {
            let running = &running;
            scope.spawn(move || {
                let mut client = running.connect();
                for i in 0..300 {
                    let response = client.request(&echo(format!("{id}-{i}").as_bytes()));
                    assert_eq!(
                        response.body,
                        format!("{id}-{i}").into_bytes(),
                        "connection {id}, request {i}"
                    );
                }
            });
        }
    });
    drop(silent);
}
