//! `--timeline MS`: the run cut into intervals of MS milliseconds from lab-load's start (the warm-up
//! included), each with what happened in it: the responses read and their latency, the errors by
//! class, the requests lost. A change to the server in the middle of a run (a worker replaced, a
//! reload) shows in the intervals around it, where the whole run's percentiles would dilute it.
//!
//! Each load thread keeps its own timeline, touched by no other thread; they are merged interval by
//! interval after the run, as the recorders are. An event is put in the interval in which lab-load
//! saw it: a response when its last byte was read, an error or a loss when the connection failed.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::stats::ErrorClass;

/// One interval's latency histogram: 1 µs to 100 s, 2 significant digits (at most 1% off), about
/// 20 KiB, so that a timeline of a thousand intervals stays small.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 100_000_000_000, 2).expect("constant bounds are valid")
}

/// What happened in one interval.
#[derive(Debug, Clone, Default)]
struct Bin {
    responses: u64,
    errors: [u64; 5],
    lost: u64,
    /// From when each response's request was due (the latency the summary reports); made at the
    /// first response.
    latency: Option<Histogram<u64>>,
}

/// One thread's timeline, or the merged one.
#[derive(Debug, Clone)]
pub struct Timeline {
    start: Instant,
    interval: Duration,
    bins: Vec<Bin>,
}

impl Timeline {
    pub fn new(start: Instant, interval: Duration) -> Self {
        Self { start, interval, bins: Vec::new() }
    }

    fn bin(&mut self, at: Instant) -> &mut Bin {
        let index = (at.saturating_duration_since(self.start).as_nanos() / self.interval.as_nanos()) as usize;
        if self.bins.len() <= index {
            self.bins.resize_with(index + 1, Bin::default);
        }
        &mut self.bins[index]
    }

    /// A response read at `at`, `latency` after its request was due.
    pub fn response(&mut self, latency: Duration, at: Instant) {
        let bin = self.bin(at);
        bin.responses += 1;
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        bin.latency.get_or_insert_with(new_histogram).saturating_record(nanos);
    }

    pub fn error(&mut self, class: ErrorClass, at: Instant) {
        self.bin(at).errors[class as usize] += 1;
    }

    pub fn lost(&mut self, requests: u64, at: Instant) {
        if requests > 0 {
            self.bin(at).lost += requests;
        }
    }

    /// Adds another thread's timeline (of the same start and interval) to this one.
    pub fn merge(&mut self, other: &Timeline) {
        if self.bins.len() < other.bins.len() {
            self.bins.resize_with(other.bins.len(), Bin::default);
        }
        for (mine, theirs) in self.bins.iter_mut().zip(&other.bins) {
            mine.responses += theirs.responses;
            mine.lost += theirs.lost;
            for (a, b) in mine.errors.iter_mut().zip(theirs.errors) {
                *a += b;
            }
            if let Some(histogram) = &theirs.latency {
                let merged = mine.latency.get_or_insert_with(new_histogram);
                merged.add(histogram).expect("histograms of equal bounds merge");
            }
        }
    }

    /// The JSON form: the interval, the start as wall-clock time (to line the intervals up with
    /// events another process timed), and one object per interval from the first to the last with
    /// anything in it.
    pub fn json(&self, start_unix_ms: f64) -> Value {
        let us = |nanos: u64| (nanos as f64 / 100.0).round() / 10.0;
        let interval_ms = self.interval.as_nanos() as f64 / 1e6;
        let bins: Vec<Value> = self
            .bins
            .iter()
            .enumerate()
            .map(|(i, bin)| {
                let errors: Map<String, Value> = ErrorClass::ALL
                    .iter()
                    .map(|&c| (c.name().to_string(), json!(bin.errors[c as usize])))
                    .collect();
                let latency = bin.latency.as_ref().map(|h| {
                    json!({
                        "p50": us(h.value_at_quantile(0.5)),
                        "p99": us(h.value_at_quantile(0.99)),
                        "max": us(h.max()),
                    })
                });
                json!({
                    "t_ms": i as f64 * interval_ms,
                    "responses": bin.responses,
                    "errors": errors,
                    "lost": bin.lost,
                    "latency_us": latency,
                    "latency_histogram": bin.latency.as_ref().map(histwire::encode),
                })
            })
            .collect();
        json!({
            "interval_ms": interval_ms,
            "start_unix_ms": start_unix_ms,
            "bins": bins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_land_in_the_interval_they_happened_in_and_threads_merge_bin_by_bin() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut a = Timeline::new(start, ms(100));
        a.response(ms(2), start + ms(50));
        a.response(ms(40), start + ms(250));
        a.error(ErrorClass::Reset, start + ms(260));
        a.lost(3, start + ms(260));
        let mut b = Timeline::new(start, ms(100));
        b.response(ms(4), start + ms(99));
        b.error(ErrorClass::Connect, start + ms(420));
        a.merge(&b);
        let json = a.json(0.0);
        let bins = json["bins"].as_array().unwrap();
        assert_eq!(bins.len(), 5);
        let responses: Vec<u64> = bins.iter().map(|b| b["responses"].as_u64().unwrap()).collect();
        assert_eq!(responses, [2, 0, 1, 0, 0]);
        assert_eq!(bins[2]["errors"]["reset"], 1);
        assert_eq!(bins[2]["lost"], 3);
        assert_eq!(bins[4]["errors"]["connect"], 1);
        assert!(bins[1]["latency_us"].is_null() && bins[1]["latency_histogram"].is_null());
        let p99 = bins[0]["latency_us"]["p99"].as_f64().unwrap();
        assert!((p99 - 4000.0).abs() <= 40.0, "{p99}");
        assert_eq!(histwire::decode(&bins[0]["latency_histogram"]).unwrap().len(), 2);
        assert_eq!(bins[3]["t_ms"], 300.0);
    }
}
