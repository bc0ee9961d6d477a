//! results.json: where it lives, writing and reading it, and the readers every later stage shares
//! (a workload's runs, the best nginx of a workload, numbers as a person reads them).
//!
//! The bottom of the crate: it knows the schema (docs/results/README.md) and imports nothing from
//! the crate, so the stages above it — plan, measure, record, then report, charts and compare —
//! all read through it and never through one another.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The schema this lab-bench writes and reads.
pub const SCHEMA: &str = "acceptlab-bench/1";

/// A results directory's results.json, or the file itself.
pub fn results_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("results.json")
    } else {
        path.to_path_buf()
    }
}

pub fn save(doc: &Value, out: &Path) -> Result<(), String> {
    let path = out.join("results.json");
    let text = serde_json::to_string_pretty(doc).expect("a JSON value serialises");
    // Written beside it and renamed over it: a bench ended mid-write (a signal) leaves the last
    // whole document, never half of one.
    let partial = out.join("results.json.partial");
    fs::write(&partial, text + "\n").map_err(|e| format!("write {}: {e}", partial.display()))?;
    fs::rename(&partial, &path)
        .map_err(|e| format!("rename {} to {}: {e}", partial.display(), path.display()))
}

pub fn load(path: &Path) -> Result<Value, String> {
    let path = results_path(path);
    let text = fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if doc["schema"] != SCHEMA {
        return Err(format!("{}: not a lab-bench results file (schema {})", path.display(), doc["schema"]));
    }
    Ok(doc)
}

/// The runs of one workload, in the order they were recorded.
pub fn runs<'a>(doc: &'a Value, workload: &str) -> impl Iterator<Item = &'a Value> + 'a {
    let workload = workload.to_string();
    doc["runs"].as_array().into_iter().flatten().filter(move |r| r["workload"] == workload.as_str())
}

/// The best nginx median of a workload, and which configuration gave it.
pub fn best_nginx(doc: &Value, workload: &str) -> Option<(String, f64)> {
    runs(doc, workload)
        .filter(|r| r["family"] == "real-nginx" && r["valid"] == true)
        .filter_map(|r| Some((r["server"].as_str()?.to_string(), r["rps"]["median"].as_f64()?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// 1234567.8 as `1,234,568`.
pub fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds as a person reads them.
pub fn readable_us(us: f64) -> String {
    if !us.is_finite() {
        "–".into()
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(1_234_567.8), "1,234,568");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(readable_us(87.0), "87 µs");
        assert_eq!(readable_us(22_600.0), "22.6 ms");
        assert_eq!(readable_us(2_300_000.0), "2.30 s");
    }
}
