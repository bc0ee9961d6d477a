//! An HDR histogram as JSON and back, exactly.
//!
//! lab-load records latencies in HDR histograms; lab-bench, running several lab-loads at once (one
//! per client host, `--client-exec`), needs their union, not an average of their percentiles (the
//! p99 of two runs is not the mean of their p99s). So lab-load writes each histogram into its JSON
//! as its configuration and its non-empty buckets, and lab-bench reads them back and adds them up.
//!
//! The form: `{"lowest": 1, "highest": 100000000000, "sigfig": 3, "total": N, "buckets": [[v, c], ...]}`
//! where each pair is a bucket's highest equivalent value and its count. Recording `c` at `v` in a
//! histogram of the same configuration lands in the same bucket, so [`decode`] gives back a
//! histogram equal, bucket for bucket, to the one [`encode`] was given; `total` is checked against
//! the counts read. Plain JSON numbers rather than the HdrHistogram V2 binary form: no compression
//! or base64 dependency, and a results file stays readable (a few hundred pairs for a typical run).

#![forbid(unsafe_code)]

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// `histogram` as JSON: its configuration and every non-empty bucket.
pub fn encode(histogram: &Histogram<u64>) -> Value {
    let buckets: Vec<Value> =
        histogram.iter_recorded().map(|v| json!([v.value_iterated_to(), v.count_at_value()])).collect();
    json!({
        "lowest": histogram.low(),
        "highest": histogram.high(),
        "sigfig": histogram.sigfig(),
        "total": histogram.len(),
        "buckets": buckets,
    })
}

/// The histogram [`encode`] wrote; an error names what is missing or inconsistent.
pub fn decode(value: &Value) -> Result<Histogram<u64>, String> {
    let field = |name: &str| value[name].as_u64().ok_or_else(|| format!("histogram: no {name:?} number"));
    let (lowest, highest, sigfig) = (field("lowest")?, field("highest")?, field("sigfig")?);
    let sigfig = u8::try_from(sigfig).map_err(|_| format!("histogram: sigfig {sigfig} out of range"))?;
    let mut histogram = Histogram::new_with_bounds(lowest, highest, sigfig)
        .map_err(|e| format!("histogram: bounds {lowest}..{highest}, {sigfig} digits: {e:?}"))?;
    let buckets = value["buckets"].as_array().ok_or("histogram: no \"buckets\" array")?;
    for pair in buckets {
        let (Some(at), Some(count)) = (pair[0].as_u64(), pair[1].as_u64()) else {
            return Err(format!("histogram: bucket {pair} is not [value, count]"));
        };
        histogram.record_n(at, count).map_err(|e| format!("histogram: record {count} at {at}: {e:?}"))?;
    }
    let total = field("total")?;
    if histogram.len() != total {
        return Err(format!("histogram: buckets add up to {}, total says {total}", histogram.len()));
    }
    Ok(histogram)
}

/// The union of several encoded histograms (of one configuration): counts added bucket by bucket.
pub fn merge<'a>(values: impl IntoIterator<Item = &'a Value>) -> Result<Histogram<u64>, String> {
    let mut merged: Option<Histogram<u64>> = None;
    for value in values {
        let histogram = decode(value)?;
        match &mut merged {
            None => merged = Some(histogram),
            Some(sum) => sum.add(&histogram).map_err(|e| format!("histogram: merge: {e:?}"))?,
        }
    }
    merged.ok_or_else(|| "histogram: nothing to merge".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_load_histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap()
    }

    #[test]
    fn a_histogram_comes_back_bucket_for_bucket() {
        let mut histogram = lab_load_histogram();
        for i in 1..=20_000u64 {
            histogram.record(i * i * 37 % 50_000_000 + 1).unwrap();
        }
        histogram.record_n(99_000_000_000, 3).unwrap();
        let text = encode(&histogram).to_string();
        let back = decode(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, histogram);
        assert_eq!(back.len(), 20_003);
        for q in [0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            assert_eq!(back.value_at_quantile(q), histogram.value_at_quantile(q), "q {q}");
        }
        assert_eq!(back.min(), histogram.min());
        assert_eq!(back.max(), histogram.max());
    }

    #[test]
    fn merging_gives_the_histogram_of_all_the_values_not_an_average() {
        // Two clients: one fast (all 100 µs), one slow with a tail. Their union's p99 is the
        // slow client's tail, which no average of their p99s gives.
        let (mut fast, mut slow, mut all) =
            (lab_load_histogram(), lab_load_histogram(), lab_load_histogram());
        for h in [&mut fast, &mut all] {
            h.record_n(100_000, 9_000).unwrap();
        }
        for h in [&mut slow, &mut all] {
            h.record_n(200_000, 900).unwrap();
            h.record_n(30_000_000, 100).unwrap();
        }
        let merged = merge([&encode(&fast), &encode(&slow)]).unwrap();
        assert_eq!(merged, all);
        assert_eq!(merged.len(), 10_000);
        assert_eq!(merged.value_at_quantile(0.99), all.value_at_quantile(0.99));
        let averaged = (fast.value_at_quantile(0.99) + slow.value_at_quantile(0.99)) / 2;
        assert_ne!(merged.value_at_quantile(0.99), averaged);
    }

    #[test]
    fn bad_input_is_named() {
        assert!(decode(&json!({"lowest": 1})).unwrap_err().contains("highest"));
        let mut wrong_total = encode(&lab_load_histogram());
        wrong_total["total"] = json!(5);
        assert!(decode(&wrong_total).unwrap_err().contains("total says 5"));
        let mut bad_bucket = encode(&lab_load_histogram());
        bad_bucket["buckets"] = json!([["x", 1]]);
        assert!(decode(&bad_bucket).unwrap_err().contains("is not [value, count]"));
        assert!(merge([]).is_err());
    }
}
