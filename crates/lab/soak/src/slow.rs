//! Slow bodies (R-U-Dead-Yet): POST heads that declare a large body, then send it a few bytes a
//! second. The soak's hostile client of that kind, the memory `--idle` reports beside idle
//! connections, and `--slow-bodies N`, the benchmark of issue 31: N such connections against one
//! server, its RSS meanwhile, a legitimate 300 KB POST answered in the middle of it, and every
//! attacking connection closed by the body deadline.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use labkit::{binary_body, echo, rss_kib, spawn, Client, Running, Server};

/// What each attacking connection declares: the largest body a server takes.
pub const DECLARED: usize = 1 << 20;

/// A connection that has sent the head of a POST declaring [`DECLARED`] bytes and `sent` bytes of
/// its body.
pub fn start(addr: SocketAddr, sent: usize) -> std::io::Result<Client> {
    let mut client = Client::try_connect(addr)?;
    let mut start =
        format!("POST /echo HTTP/1.1\r\nHost: slow\r\nContent-Length: {DECLARED}\r\n\r\n").into_bytes();
    start.extend_from_slice(&binary_body(sent));
    client.try_send(&start)?;
    Ok(client)
}

/// The soak's hostile slow body: a byte every 100 ms until the server answers (its 408 at
/// `--body-timeout`) or closes, or `stop` says the soak is over.
pub fn trickle_until_answered(addr: SocketAddr, stop: &std::sync::atomic::AtomicBool) {
    let Ok(mut client) = start(addr, 1) else {
        thread::sleep(Duration::from_millis(50));
        return;
    };
    client.set_read_timeout(Duration::from_millis(100));
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && client.try_send(b"x").is_ok() {
        match client.try_read_response(false) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            _ => return, // answered (408), or closed
        }
    }
}

/// Opens `count` slow bodies to `running` beside `others` connections already open, each having
/// sent its head and ten bytes, then, once the server has accepted them all and read that, a byte
/// more (the byte that made a buffer sized by the declared length grow); returns them.
pub fn open(running: &Running, count: usize, others: usize) -> Result<Vec<Client>, String> {
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        clients.push(start(running.addr(), 10).map_err(|e| format!("slow body {i}: {e}"))?);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_now(running) <= (others + count) as u64 {
        if Instant::now() > deadline {
            return Err(format!("only {} of {count} slow bodies open", open_now(running)));
        }
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(300));
    for client in &mut clients {
        let _ = client.try_send(b"x");
    }
    thread::sleep(Duration::from_millis(300));
    Ok(clients)
}

/// Open connections by /stats, the asking one included.
pub fn open_now(running: &Running) -> u64 {
    Client::try_connect(running.addr())
        .and_then(|mut client| client.try_stats())
        .map_or(0, |stats| stats["totals"]["open"].as_u64().unwrap_or(0))
}

/// `--slow-bodies N`: `count` connections declaring [`DECLARED`] bytes and then trickling a byte a
/// second each, against `server` run with `--body-timeout body_timeout`. Reports the growth of its
/// RSS (the peak of samples every 100 ms, less the RSS before), what a 300 KB POST sent 2 s into the
/// attack got, and when the attacking connections were all closed (by /stats), against the deadline.
/// Fails past 64 MiB of growth, without a 200 for the POST, or with a connection open 5 s after
/// the deadline.
pub fn benchmark(server: &Server, count: usize, body_timeout: f64) -> Result<String, String> {
    const RSS_LIMIT_KIB: u64 = 64 * 1024;
    let max_conns = (count + 100).to_string();
    let timeout = body_timeout.to_string();
    let running = spawn(server, &["--max-conns", &max_conns, "--body-timeout", &timeout]);
    // Every worker's read path run once, and a large body's buffer made and given back.
    let body = binary_body(300_000);
    let warm = Client::try_connect(running.addr()).and_then(|mut c| c.try_send(&echo(&body)).map(|_| c));
    drop(warm.map(|mut client| client.try_read_response(false)));
    thread::sleep(Duration::from_millis(300));
    let before = rss_kib(running.pid());
    let started = Instant::now();
    let mut clients = open(&running, count, 0)?;
    let opened = started.elapsed();
    let mut peak = rss_kib(running.pid());
    let mut post = None;
    let mut last_trickle = Instant::now();
    let limit = started + Duration::from_secs_f64(body_timeout) + Duration::from_secs(10);
    let closed_at = loop {
        thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_kib(running.pid()));
        if last_trickle.elapsed() >= Duration::from_secs(1) {
            last_trickle = Instant::now();
            clients.retain_mut(|client| client.try_send(b"x").is_ok());
        }
        if post.is_none() && started.elapsed() >= opened + Duration::from_secs(2) {
            let sent = Instant::now();
            let answer = Client::try_connect(running.addr())
                .and_then(|mut client| client.try_send(&echo(&body)).map(|_| client))
                .and_then(|mut client| client.try_read_response(false));
            post = Some(match answer {
                Ok(response) if response.status == 200 && response.body == body => {
                    Ok(format!("200 in {} ms", sent.elapsed().as_millis()))
                }
                Ok(response) => Err(format!("{} {}", response.status, response.text())),
                Err(e) => Err(e.to_string()),
            });
        }
        if post.is_some() && open_now(&running) <= 1 {
            break Some(started.elapsed());
        }
        if Instant::now() > limit {
            break None;
        }
    };
    let stats = Client::try_connect(running.addr()).and_then(|mut c| c.try_stats()).unwrap_or_default();
    let body_timeouts = stats["totals"]["body_timeouts"].as_u64().unwrap_or(0);
    let grown = peak.saturating_sub(before);
    let line = format!(
        "{count} slow bodies ({DECLARED} bytes declared, 11 sent, then 1 a second): RSS {:.1} -> peak {:.1} MiB (+{:.1} MiB, {:.0} bytes per connection); a 300 KB POST meanwhile: {}; all closed {} after the first connected (--body-timeout {body_timeout}; opening took {:.1} s); body_timeouts {body_timeouts}",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        grown as f64 / 1024.0,
        grown as f64 * 1024.0 / count as f64,
        match &post {
            Some(Ok(text)) => text.clone(),
            Some(Err(e)) => format!("FAILED ({e})"),
            None => "not sent".to_string(),
        },
        closed_at.map_or("NOT".to_string(), |at| format!("at {:.1} s", at.as_secs_f64())),
        opened.as_secs_f64(),
    );
    let closed_in_time =
        closed_at.is_some_and(|at| at <= opened + Duration::from_secs_f64(body_timeout + 5.0));
    match grown <= RSS_LIMIT_KIB && matches!(post, Some(Ok(_))) && closed_in_time {
        true => Ok(line),
        false => Err(line),
    }
}
