//! lab-top: a live terminal view of any acceptlab server's `/stats`, the way htop shows processes.
//!
//! ```text
//!   poller thread ── GET /stats every --interval, one keep-alive connection ──► channel
//!                                                                                  │
//!   main thread ◄── keys (q p s), SIGINT/SIGTERM ── Watch: rates over the last second ──► draw
//!        └── while /stats is late: the accept queues from /proc/net/tcp
//! ```
//!
//! The modules: [`sample`] (one reading of /stats, and the connection that takes them), [`rates`]
//! (per-second rates between two readings, Jain's fairness index), [`screen`] (the state shown and
//! its drawing) and [`socket_table`] (the accept queues from the kernel, while /stats is late).
//! `--once` draws the same screen into memory and prints it as text; `--json` prints the rates
//! instead of drawing them.
#![forbid(unsafe_code)]

mod rates;
mod sample;
mod screen;
mod socket_table;

use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::exit;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use serde_json::{json, Value};
use sys::signal::ShutdownSignals;

use crate::rates::Rates;
use crate::sample::{Poller, Sample};
use crate::screen::Watch;

/// Width of `--once`'s text.
const PLAIN_WIDTH: u16 = 100;

/// lab-top: watch a server's accept queues, workers and kernel counters live.
#[derive(Debug, Parser)]
#[command(
    name = "lab-top",
    version,
    after_help = "Keys: q quits, p pauses, s sorts the workers by requests/s.\n\
                  The screen's rates span the last second of readings; --once's and --json's one interval."
)]
struct Cli {
    /// The server: http://HOST:PORT
    #[arg(default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Time between readings of /stats: 250ms, 1s, 2 (seconds).
    #[arg(long, value_name = "TIME", value_parser = parse_interval, default_value = "250ms")]
    interval: Duration,
    /// Print one plain-text frame, with rates from two readings one interval apart, and exit.
    #[arg(long, conflicts_with = "json")]
    once: bool,
    /// Print one line of JSON per interval: the rates between the last two readings.
    #[arg(long)]
    json: bool,
    /// With --json: stop after N lines.
    #[arg(long, value_name = "N", requires = "json")]
    count: Option<u64>,
}

fn main() {
    let cli = Cli::parse();
    let addr = resolve(&cli.url).unwrap_or_else(|reason| {
        eprintln!("lab-top: {reason}");
        exit(2)
    });
    // Long enough for lab-epoll to finish the longest /sleep (10 s) and answer: a busy server's
    // reading is late, not lost. The screen says meanwhile that no answer has come.
    let poller = Poller::new(addr, cli.interval.max(Duration::from_secs(11)));
    let watch = Watch::new(cli.url.clone(), cli.interval);
    let result = if cli.once {
        once(poller, watch)
    } else if cli.json {
        json_lines(poller, cli.interval, cli.count)
    } else {
        live(poller, watch)
    };
    if let Err(reason) = result {
        eprintln!("lab-top: {}: {reason}", cli.url);
        exit(1);
    }
}

/// `--once`: two readings one interval apart, then the screen as text.
fn once(mut poller: Poller, mut watch: Watch) -> Result<(), String> {
    watch.record(Ok(poller.sample()?));
    thread::sleep(watch.interval);
    watch.record(Ok(poller.sample()?));
    if watch.rates.is_none() {
        return Err("the server restarted between the two readings".into());
    }
    print!("{}", screen::plain_text(&watch, PLAIN_WIDTH));
    Ok(())
}

/// `--json`: a line of rates per interval, from the second reading on. An unreachable server is
/// reported on stderr (once, not every interval) and tried again, as on the screen.
fn json_lines(mut poller: Poller, interval: Duration, count: Option<u64>) -> Result<(), String> {
    let mut before: Option<Sample> = None;
    let mut last_problem = None;
    let mut printed = 0;
    let mut stdout = io::stdout().lock();
    for () in ticks(interval) {
        match poller.sample() {
            Err(problem) => {
                if last_problem.as_ref() != Some(&problem) {
                    eprintln!("lab-top: {problem}; retrying");
                }
                last_problem = Some(problem);
            }
            Ok(sample) => {
                last_problem = None;
                if let Some(rates) = before.as_ref().and_then(|before| Rates::between(before, &sample)) {
                    // A closed pipe (`lab-top --json | head`) ends the run quietly.
                    if writeln!(stdout, "{}", json_line(&sample, &rates))
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        return Ok(());
                    }
                    printed += 1;
                    if count.is_some_and(|count| printed >= count) {
                        return Ok(());
                    }
                }
                before = Some(sample);
            }
        }
    }
    Ok(())
}

fn json_line(sample: &Sample, rates: &Rates) -> Value {
    let workers: Vec<Value> = sample
        .workers
        .iter()
        .zip(&rates.workers)
        .map(|(worker, rate)| {
            json!({
                "id": worker.id, "role": worker.role, "cpu": worker.cpu,
                "accepted_per_s": rate.accepted, "requests_per_s": rate.requests,
                "wakeups_per_s": rate.wakeups, "context_switches_per_s": rate.context_switches,
                "open": worker.open,
            })
        })
        .collect();
    let listeners: Vec<Value> = sample
        .listeners
        .iter()
        .map(|l| json!({ "addr": l.addr, "backlog": l.backlog, "accept_queue": l.accept_queue }))
        .collect();
    let mut line = json!({
        "arch": sample.arch, "pid": sample.pid, "uptime_ms": sample.uptime_ms,
        "interval_s": rates.seconds,
        "requests_per_s": rates.requests, "accepts_per_s": rates.accepted,
        "open": sample.totals.open, "rejected": sample.totals.rejected,
        "fairness": rates.fairness(sample),
        "listeners": listeners, "workers": workers,
    });
    if let Some(kernel) = &rates.kernel {
        line["kernel_per_s"] = kernel.iter().map(|(name, rate)| (name.clone(), json!(rate))).collect();
    }
    line
}

/// The full-screen view, until `q`, Ctrl-C, SIGINT or SIGTERM.
fn live(mut poller: Poller, mut watch: Watch) -> Result<(), String> {
    // Before the poller thread starts, so that it inherits the blocked mask: the signals are read
    // here, and the terminal is restored before exiting.
    let signals = ShutdownSignals::new().map_err(|e| e.to_string())?;
    let (readings, new_readings) = mpsc::channel();
    let interval = watch.interval;
    thread::spawn(move || {
        for () in ticks(interval) {
            if readings.send(poller.sample()).is_err() {
                return;
            }
        }
    });
    // ratatui::init enters the alternate screen and raw mode, and hooks panics so that the
    // terminal is restored before the message is printed.
    let mut terminal = ratatui::init();
    let result = (|| -> io::Result<()> {
        let mut redraw = true;
        let mut drawn_at = Instant::now();
        let mut queues_read_at = Instant::now();
        loop {
            // Also once an interval without news, so that a late reading shows as late.
            if redraw || drawn_at.elapsed() >= interval {
                terminal.draw(|frame| screen::draw(frame, &watch))?;
                drawn_at = Instant::now();
            }
            redraw = false;
            if event::poll(Duration::from_millis(50))? {
                match event::read()? {
                    Event::Key(key) if key.kind == KeyEventKind::Press => match key.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                        KeyCode::Char('p') => watch.toggle_pause(),
                        KeyCode::Char('s') => watch.sort_by_requests = !watch.sort_by_requests,
                        _ => {}
                    },
                    _ => {}
                }
                redraw = true;
            }
            while let Ok(reading) = new_readings.try_recv() {
                watch.record(reading);
                redraw = true;
            }
            // The queue fills fastest while the server is too busy to say so: ask the kernel.
            if watch.is_late() && queues_read_at.elapsed() >= interval {
                let listening = watch.latest().and_then(|sample| sample.listeners.first()?.addr.parse().ok());
                if let Some(addr) = listening {
                    watch.record_queues_from_kernel(socket_table::accept_queues(addr));
                    redraw = true;
                }
                queues_read_at = Instant::now();
            }
            if signals.read()?.is_some() {
                return Ok(());
            }
        }
    })();
    ratatui::restore();
    result.map_err(|e| format!("terminal: {e}"))
}

/// An endless iterator that yields at once, then every `interval` on a fixed schedule (a slow
/// reading delays the next tick, it does not shift all of them).
fn ticks(interval: Duration) -> impl Iterator<Item = ()> {
    let mut next = Instant::now();
    std::iter::repeat_with(move || {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else if now - next > interval {
            next = now;
        }
        next += interval;
    })
}

/// `http://HOST:PORT` (or `HOST:PORT`; a path is ignored, the port defaults to 80) as an address.
fn resolve(url: &str) -> Result<SocketAddr, String> {
    let authority = url.strip_prefix("http://").unwrap_or(url);
    let authority = authority.split('/').next().unwrap_or_default();
    if authority.is_empty() || url.contains("://") && !url.starts_with("http://") {
        return Err(format!("expected http://HOST:PORT, got {url:?}"));
    }
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_string()
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))
}

/// `250ms`, `1s` or a plain number of seconds (`0.5`), at least 10 ms.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.strip_suffix("ms") {
        Some(ms) => (ms, 0.001),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    let seconds = number.parse::<f64>().map_err(|_| format!("not a time: {text:?} (e.g. 250ms, 1s)"))? * unit;
    if !(0.01..=3600.0).contains(&seconds) {
        return Err(format!("{text:?}: the interval must be from 10ms to 1h"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_intervals_from_the_command_line() {
        assert_eq!(resolve("http://127.0.0.1:8080"), Ok("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(resolve("127.0.0.1:9000/stats"), Ok("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(resolve("http://127.0.0.1"), Ok("127.0.0.1:80".parse().unwrap()));
        assert_eq!(resolve("http://[::1]:81"), Ok("[::1]:81".parse().unwrap()));
        assert!(resolve("https://127.0.0.1:8080").is_err());
        assert!(resolve("http://").is_err());
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("1ms").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
