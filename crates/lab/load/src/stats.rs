//! What a load thread records: HDR histograms of latency (nanoseconds) and counters. Each thread has
//! its own [`Recorder`], touched by no other thread; they are merged once, after the run.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::timeline::Timeline;

/// The classes of error the report counts, one per failed connect, broken connection or bad status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A connect refused, failed or timed out.
    Connect,
    /// The server reset or closed the connection with requests unanswered.
    Reset,
    /// No response within `--timeout` of sending.
    Timeout,
    /// A response whose status is not 2xx or 3xx.
    Status,
    /// A response that breaks HTTP/1.1 framing: malformed, too long, cut short, or unasked for.
    Framing,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::Connect,
        ErrorClass::Reset,
        ErrorClass::Timeout,
        ErrorClass::Status,
        ErrorClass::Framing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Connect => "connect",
            ErrorClass::Reset => "reset",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Status => "status",
            ErrorClass::Framing => "framing",
        }
    }
}

/// The longest latency a histogram tells apart from longer ones: 100 s, far past any timeout.
const HIGHEST_NS: u64 = 100_000_000_000;

/// A histogram of nanoseconds, 3 significant digits (at most 0.1% off), from 1 ns to 100 s.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("constant bounds are valid")
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Latency of responses, two ways: from when each request was due (its scheduled time in open
/// loop, which counts the time it waited for the server to catch up) and from when it was sent.
#[derive(Debug, Clone)]
pub struct Latencies {
    pub responses: u64,
    pub corrected: Histogram<u64>,
    /// `None` where a request is always sent when due (closed loop, keep-alive): the same as
    /// `corrected` then, and not recorded twice.
    uncorrected: Option<Histogram<u64>>,
}

impl Latencies {
    fn new(uncorrected: bool) -> Self {
        Self { responses: 0, corrected: new_histogram(), uncorrected: uncorrected.then(new_histogram) }
    }

    /// Latency from the actual send.
    pub fn uncorrected(&self) -> &Histogram<u64> {
        self.uncorrected.as_ref().unwrap_or(&self.corrected)
    }

    fn record(&mut self, from_due: Duration, from_send: Duration) {
        self.responses += 1;
        self.corrected.saturating_record(nanos(from_due));
        if let Some(uncorrected) = &mut self.uncorrected {
            uncorrected.saturating_record(nanos(from_send));
        }
    }

    fn merge(&mut self, other: &Latencies) {
        self.responses += other.responses;
        self.corrected.add(&other.corrected).expect("histograms of equal bounds merge");
        if let (Some(mine), Some(theirs)) = (&mut self.uncorrected, &other.uncorrected) {
            mine.add(theirs).expect("histograms of equal bounds merge");
        }
    }
}

/// One thread's record of the measured part of its run. Errors are counted over the whole run,
/// warm-up included, since a load generator should never hide one.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub latency: Latencies,
    /// Per path of the mix, in the mix's order; empty when there is a single path.
    pub per_path: Vec<Latencies>,
    /// Time from `connect(2)` to an established connection, for connects started while measuring.
    pub connect: Histogram<u64>,
    /// Requests written to a socket.
    pub sent: u64,
    /// Every response read, warm-up included: what the server's own count of requests served
    /// (its /stats) should equal once the run is over, since lab-load waits for every request sent.
    pub answered: u64,
    /// Requests sent and never answered: on a connection that broke, or still waiting at the end.
    pub lost: u64,
    /// Open loop: requests sent more than [`LATE`] after their scheduled time.
    pub late: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub errors: [u64; 5],
    /// How often each status code came back.
    pub statuses: Vec<(u16, u64)>,
    /// When the last measured response arrived.
    pub last_response: Option<Instant>,
    /// The first error of each class, in words (`connect 127.0.0.1:8080: Connection refused`).
    pub first_errors: [Option<String>; 5],
    /// https://: TLS handshakes completed, full and resumed (warm-up included).
    pub tls_handshakes: [u64; 2],
    /// `--timeline`: the same events, interval by interval.
    pub timeline: Option<Timeline>,
}

/// How far behind its scheduled time a request may go out and still count as on time.
pub const LATE: Duration = Duration::from_millis(1);

impl Recorder {
    /// A recorder for a mix of `paths`; `uncorrected`: requests can be sent later than due, so the
    /// latency from the send is worth its own histogram.
    pub fn new(paths: usize, uncorrected: bool) -> Self {
        let per_path =
            if paths > 1 { (0..paths).map(|_| Latencies::new(uncorrected)).collect() } else { Vec::new() };
        Self {
            latency: Latencies::new(uncorrected),
            per_path,
            connect: new_histogram(),
            sent: 0,
            answered: 0,
            lost: 0,
            late: 0,
            bytes_read: 0,
            bytes_written: 0,
            errors: [0; 5],
            statuses: Vec::new(),
            last_response: None,
            first_errors: Default::default(),
            tls_handshakes: [0; 2],
            timeline: None,
        }
    }

    /// The recorder with a timeline (`--timeline`).
    pub fn with_timeline(mut self, timeline: Option<Timeline>) -> Self {
        self.timeline = timeline;
        self
    }

    /// Any response read, warm-up included, of a request due at `due`: for the timeline.
    pub fn answered_at(&mut self, due: Instant, now: Instant) {
        if let Some(timeline) = &mut self.timeline {
            timeline.response(now - due, now);
        }
    }

    /// `requests` of the measured time sent and never to be answered.
    pub fn lose(&mut self, requests: u64) {
        self.lost += requests;
        if let Some(timeline) = &mut self.timeline {
            timeline.lost(requests, Instant::now());
        }
    }

    /// A measured response to a request of `path`, due at `due`, sent at `sent`, complete at `now`.
    pub fn response(&mut self, path: usize, due: Instant, sent: Instant, now: Instant) {
        let (from_due, from_send) = (now - due, now - sent);
        self.latency.record(from_due, from_send);
        if let Some(per_path) = self.per_path.get_mut(path) {
            per_path.record(from_due, from_send);
        }
        self.last_response = Some(now);
    }

    pub fn status(&mut self, status: u16) {
        match self.statuses.iter_mut().find(|(code, _)| *code == status) {
            Some((_, count)) => *count += 1,
            None => self.statuses.push((status, 1)),
        }
    }

    pub fn error(&mut self, class: ErrorClass, detail: impl FnOnce() -> String) {
        self.errors[class as usize] += 1;
        self.first_errors[class as usize].get_or_insert_with(detail);
        if let Some(timeline) = &mut self.timeline {
            timeline.error(class, Instant::now());
        }
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Bytes read and written so far.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_read, self.bytes_written)
    }

    pub fn connected(&mut self, took: Duration) {
        self.connect.saturating_record(nanos(took));
    }

    /// Adds another thread's record to this one.
    pub fn merge(&mut self, other: &Recorder) {
        self.latency.merge(&other.latency);
        for (mine, theirs) in self.per_path.iter_mut().zip(&other.per_path) {
            mine.merge(theirs);
        }
        self.connect.add(&other.connect).expect("histograms of equal bounds merge");
        self.sent += other.sent;
        self.answered += other.answered;
        self.lost += other.lost;
        self.late += other.late;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.tls_handshakes[0] += other.tls_handshakes[0];
        self.tls_handshakes[1] += other.tls_handshakes[1];
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        for (mine, theirs) in self.first_errors.iter_mut().zip(&other.first_errors) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        for &(status, count) in &other.statuses {
            match self.statuses.iter_mut().find(|(code, _)| *code == status) {
                Some((_, mine)) => *mine += count,
                None => self.statuses.push((status, count)),
            }
        }
        self.statuses.sort_unstable();
        self.last_response = self.last_response.max(other.last_response);
        match (&mut self.timeline, &other.timeline) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.timeline = Some(theirs.clone()),
            _ => {}
        }
    }
}
