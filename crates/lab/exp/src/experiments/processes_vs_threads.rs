//! processes-vs-threads: the same load on worker threads (lab-memcached) and worker processes
//! (lab-reuseport): what each costs, and what one worker's death does to the rest.

use std::fs;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Experiment;
use crate::net;
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "processes-vs-threads",
    summary: "lab-memcached (threads) vs lab-reuseport (processes): memory, context switches, CPU; one worker killed",
    claim: "Threads share one address space; processes each have their own, but after fork(2) they \
            share its pages copy-on-write, so a process costs little more memory than a thread. What \
            processes buy is isolation: a fatal fault in one thread takes the whole threaded server \
            down, while a process dies alone and its supervisor replaces it.",
    notes: "'Process and Threads: Process: isolated memory ... Thread: light weighted process, shared \
            memory -> mutex; Multi-Processes: nginx/postgres, each has its own memory, COW'",
    needs_namespace: false,
    run,
};

const WORKERS: &str = "2";

fn run(report: &mut Report) {
    report.does(
        "starts lab-memcached --workers 2 and lab-reuseport --workers 2 in turn; runs lab-load -c 8 -d 2 \
         (keep-alive GET /) against each; reads RSS and PSS (smaps_rollup) of the whole process tree, \
         its threads' context switches and its CPU time from /proc",
    );
    report.does(
        "then, under lab-load -c 8 -d 3 again, sends SIGABRT to one worker (a thread of lab-memcached, \
         a process of lab-reuseport) 1 s in, as a crash (abort) in that worker would; counts lab-load's failed requests, \
         then tries 20 fresh connections",
    );
    let mut figures = serde_json::Map::new();
    let mut outcomes = Vec::new();
    for bin in ["lab-memcached", "lab-reuseport"] {
        let mut server = net::start(bin, &["--workers", WORKERS]);
        let addr = server.addr();
        let pid = server.pid();
        let cpu_before = labkit::cpu_time(pid);
        let switches_before = context_switches(pid);
        let results = net::load(addr, "/", &["-c", "8", "-d", "2", "--warmup", "0.2"]);
        let rss = labkit::rss_kib(pid);
        let pss = pss_kib(pid);
        let cpu = labkit::cpu_time(pid).saturating_sub(cpu_before);
        let switches = context_switches(pid) - switches_before;
        let requests = results["requests"].as_u64().unwrap_or(0);
        let processes = labkit::process_tree(pid).len();
        let threads = labkit::tasks(pid).len();
        report.observe(format!(
            "{bin}: {processes} process(es), {threads} threads; RSS {rss} KiB, PSS {pss} KiB; {requests} \
             requests in 2 s, {switches} context switches, {} ms CPU",
            cpu.as_millis()
        ));

        // The fault: a worker's thread or process gets SIGABRT (not SIGSEGV: Rust's stack-overflow handler
        // survives a SIGSEGV that no faulting instruction raised).
        let victim = worker_to_kill(bin, pid);
        let load = thread::spawn(move || net::load(addr, "/", &["-c", "8", "-d", "3", "--warmup", "0"]));
        thread::sleep(Duration::from_secs(1));
        let _ = kill(Pid::from_raw(victim as i32), Signal::SIGABRT);
        let faulted = load.join().expect("lab-load thread");
        thread::sleep(Duration::from_millis(300));
        let probes_ok = (0..20)
            .filter(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    .ok()
                    .and_then(|mut stream| {
                        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                        net::get(&mut stream, "/").ok()
                    })
                    .is_some_and(|(status, _)| status == 200)
            })
            .count();
        let failed = net::load_errors(&faulted);
        let served = faulted["requests"].as_u64().unwrap_or(0);
        let lost = faulted["lost"].as_u64().unwrap_or(0);
        let running = if server.is_running() { "still running" } else { "exited" };
        report.observe(format!(
            "{bin}, worker {victim} sent SIGABRT: lab-load then saw {served} requests served and {failed} \
             failed {}, {lost} lost; afterwards {probes_ok} of 20 new connections were served; the server {running}",
            faulted["errors"]
        ));
        figures.insert(
            bin.into(),
            serde_json::json!({ "rss_kib": rss, "pss_kib": pss, "requests": requests, "context_switches": switches,
                                "cpu_ms": cpu.as_millis() as u64, "processes": processes, "threads": threads,
                                "fault_failed": failed, "fault_served": served, "probes_ok_after_fault": probes_ok }),
        );
        outcomes.push((rss, pss, probes_ok, failed));
    }
    report.figure("servers", serde_json::Value::Object(figures));
    let (threads, processes) = (outcomes[0], outcomes[1]);
    report.check(
        "each process has its own memory (summed RSS, which counts a shared page once per process, is \
         larger), but copy-on-write keeps the real cost close: PSS (each shared page divided among its \
         sharers) within 1.5 × the threaded server's",
        processes.0 > threads.0 && (processes.1 as f64) < 1.5 * threads.1 as f64,
        format!("RSS {} vs {} KiB, PSS {} vs {} KiB", processes.0, threads.0, processes.1, threads.1),
    );
    report.check(
        "one thread's fault takes the threaded server down: no new connection is served afterwards",
        threads.2 == 0,
        format!("{} of 20 served", threads.2),
    );
    report.check(
        "one process's fault leaves the others serving and the supervisor replaces it: every new connection is served",
        processes.2 == 20,
        format!("{} of 20 served; {} requests failed during the fault", processes.2, processes.3),
    );
}

/// A worker to kill: lab-memcached's first worker thread (its tid: the signal still kills the whole
/// thread group, which is the point), lab-reuseport's first worker process.
fn worker_to_kill(bin: &str, pid: u32) -> u32 {
    if bin == "lab-reuseport" {
        labkit::process_tree(pid).get(1).copied().expect("a worker process")
    } else {
        labkit::tasks(pid).iter().map(|t| t.tid).find(|&tid| tid != pid).expect("a worker thread")
    }
}

/// Voluntary plus involuntary context switches of every thread of `pid`'s tree.
fn context_switches(pid: u32) -> u64 {
    labkit::process_tree(pid)
        .iter()
        .flat_map(|pid| fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten())
        .filter_map(|task| fs::read_to_string(task.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Proportional set size of `pid`'s tree: each shared page counted once across the processes.
fn pss_kib(pid: u32) -> u64 {
    labkit::process_tree(pid)
        .iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|text| {
            let line = text.lines().find(|line| line.starts_with("Pss:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}
