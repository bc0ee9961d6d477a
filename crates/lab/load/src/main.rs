//! lab-load: the load generator of acceptlab, an HTTP/1.1 client on raw epoll, no async runtime.
//!
//! ```text
//!   main ── spawns ──► load thread 0 (pinned) ── own epoll, own connections, own histograms ──┐
//!     │                load thread 1 (pinned) ── ...                                          │
//!     └── progress line once a second ◄── two relaxed counters per thread    merge ◄──────────┘
//! ```
//!
//! Closed loop (the default) keeps `--pipeline` requests in flight on every connection, like wrk.
//! Open loop (`--rate`) sends on a schedule fixed in advance and counts each request's latency from
//! its scheduled time, so a server that stalls shows the stall in the percentiles instead of quietly
//! receiving fewer requests (coordinated omission); the latency from the actual send is reported
//! beside it. Every response is parsed and checked.
//!
//! The modules, in the order a request meets them: [`cli`] (the command line), [`request`] (requests
//! built once as bytes), [`schedule`] (when open-loop requests are due), [`worker`] (a load thread's
//! event loop), [`conn`] (one connection's bytes), [`tickets`] (the TLS session tickets
//! `--tls-resume` keeps), [`response`] (response framing), [`stats`] (what a thread records),
//! [`timeline`] (the same, interval by interval, with `--timeline`) and [`report`] (the summary and
//! the JSON).
#![forbid(unsafe_code)]

mod cli;
mod conn;
mod report;
mod request;
mod response;
mod schedule;
mod stats;
mod tickets;
mod timeline;
mod worker;

use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use sys::signal::ShutdownSignals;

use crate::cli::{Cli, Run};
use crate::report::{ClientCpu, Report};
use crate::request::Requests;
use crate::stats::Recorder;
use crate::worker::{Plan, Progress, Settings};

fn main() {
    let run = Cli::parse().resolve().unwrap_or_else(|reason| {
        eprintln!("lab-load: {reason}");
        exit(2)
    });
    // Every connection is a file descriptor; the default soft limit of 1024 is soon reached.
    if let Err(e) = sys::rlimit::raise_nofile_limit() {
        eprintln!("lab-load: warning: {e}");
    }
    // Before any thread starts, so that all inherit the blocked mask: SIGINT and SIGTERM then only
    // end the run early, with results, instead of killing the process.
    let signals = ShutdownSignals::new().unwrap_or_else(|e| {
        eprintln!("lab-load: {e}");
        exit(1)
    });
    let requests = Requests::build(&run.mix, &run.spec);
    let start = Instant::now();
    let start_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |t| t.as_secs_f64() * 1e3);
    let measure_from = start + run.warmup;
    let settings = Settings {
        addr: run.addr,
        requests,
        pipeline: run.pipeline,
        close: run.close,
        arrivals: run.arrivals,
        timeout: run.timeout,
        tls: run.tls.clone(),
        spread_sources: run.close && is_ipv4_loopback(&run),
        start,
        measure_from,
        stop_at: run.duration.map(|d| measure_from + d),
        interrupted: AtomicBool::new(false),
        timeline: run.timeline,
    };
    let (recorder, interrupted_at) = run_threads(&run, &settings, &signals).unwrap_or_else(|e| {
        eprintln!("lab-load: {e}");
        exit(1)
    });
    let measured_until = match (interrupted_at, settings.stop_at) {
        (Some(at), Some(stop)) => Some(at.min(stop)),
        (at, stop) => at.or(stop),
    };
    let duration_s = match measured_until {
        Some(until) => until.saturating_duration_since(measure_from).as_secs_f64(),
        None => recorder
            .last_response
            .map_or(0.0, |last| last.saturating_duration_since(measure_from).as_secs_f64()),
    };
    let client_cpu = ClientCpu::since(start, run.threads);
    let report = Report {
        run: &run,
        requests: &settings.requests,
        recorder: &recorder,
        duration_s,
        client_cpu,
        start_unix_ms,
    };
    let to_stdout = run.json.as_ref().is_some_and(|path| path.as_os_str() == "-");
    if to_stdout {
        eprint!("{}", report.text());
    } else {
        print!("{}", report.text());
    }
    if let Some(path) = &run.json {
        let text = serde_json::to_string_pretty(&report.json()).expect("a JSON value serialises");
        if to_stdout {
            println!("{text}");
        } else if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("lab-load: write {}: {e}", path.display());
            exit(1);
        }
    }
}

fn is_ipv4_loopback(run: &Run) -> bool {
    matches!(run.addr.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback())
}

/// Each thread's share: connections and requests split as evenly as they go, the rate split evenly.
fn plans(run: &Run) -> Vec<Plan> {
    let share = |total: u64, i: usize| {
        total / run.threads as u64 + u64::from((i as u64) < total % run.threads as u64)
    };
    (0..run.threads)
        .map(|i| Plan {
            index: i,
            cpu: run.cpus.as_ref().map(|cpus| cpus[i % cpus.len()]),
            connections: share(run.connections as u64, i) as usize,
            rate: run.rate.map(|rate| rate / run.threads as f64),
            quota: run.requests.map(|n| share(n, i)),
            phase: i as f64 / run.threads as f64,
            seed: run.seed.wrapping_add(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        })
        .collect()
}

/// Runs the load threads to the end, printing progress meanwhile; returns their merged records,
/// and when a signal cut the run short.
fn run_threads(
    run: &Run,
    settings: &Settings,
    signals: &ShutdownSignals,
) -> Result<(Recorder, Option<Instant>), String> {
    let progress: Vec<Progress> = (0..run.threads).map(|_| Progress::default()).collect();
    let mut interrupted_at = None;
    let results = thread::scope(|scope| {
        let threads: Vec<_> = plans(run)
            .into_iter()
            .zip(&progress)
            .map(|(plan, progress)| {
                thread::Builder::new()
                    .name(format!("load-{}", plan.index))
                    .spawn_scoped(scope, move || worker::worker_main(settings, plan, progress))
                    .expect("spawning a load thread")
            })
            .collect();
        let finished = || threads.iter().all(|t| t.is_finished());
        interrupted_at = watch(run, settings, &progress, signals, finished);
        threads.into_iter().map(|t| t.join()).collect::<Vec<_>>()
    });
    let mut merged = Recorder::new(settings.requests.paths().len(), run.rate.is_some() || run.close);
    for result in results {
        match result {
            Ok(Ok(recorder)) => merged.merge(&recorder),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("a load thread panicked".into()),
        }
    }
    Ok((merged, interrupted_at))
}

/// Until `finished`: one line a second on stderr with `--progress` (responses per second over the
/// last second, errors so far), and the signals: the first ends the run early (returned: when), a
/// second exits at once.
fn watch(
    run: &Run,
    settings: &Settings,
    progress: &[Progress],
    signals: &ShutdownSignals,
    finished: impl Fn() -> bool,
) -> Option<Instant> {
    let sum = |read: fn(&Progress) -> u64| progress.iter().map(read).sum::<u64>();
    let mut last = (Instant::now(), 0);
    let mut next_line = settings.start + Duration::from_secs(1);
    let mut interrupted_at = None;
    while !finished() {
        thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if let Ok(Some(_)) = signals.read() {
            if interrupted_at.is_some() {
                exit(130);
            }
            eprintln!("lab-load: interrupted: finishing the requests in flight (again to quit at once)");
            settings.interrupted.store(true, Ordering::Relaxed);
            interrupted_at = Some(now);
        }
        if !run.progress || now < next_line {
            continue;
        }
        let answered = sum(|p| p.answered.load(Ordering::Relaxed));
        let errors = sum(|p| p.errors.load(Ordering::Relaxed));
        let rate = (answered - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        let phase = if now < settings.measure_from { " (warm-up)" } else { "" };
        let elapsed = now.duration_since(settings.start).as_secs_f64();
        eprintln!("lab-load: {elapsed:>5.1} s{phase}  {rate:>10.0} req/s  {errors} errors");
        last = (now, answered);
        next_line += Duration::from_secs(1);
    }
    interrupted_at
}
