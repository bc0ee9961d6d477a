//! What an experiment tells: the claim, what it did, what it measured, and whether the measurements
//! agree with the claim — as text for people and as JSON for tests.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

/// One experiment's account of itself.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub name: String,
    /// The claim, in one or two sentences.
    pub claim: String,
    /// Where the source notes make it.
    pub notes: String,
    /// What the experiment does: the server, the clients, the kernel settings.
    pub does: Vec<String>,
    /// What it measured, one sentence each, figures included.
    pub observed: Vec<String>,
    /// The same figures in machine form.
    pub figures: Map<String, Value>,
    pub checks: Vec<Check>,
    /// Why the experiment did not run, if it did not.
    pub skipped: Option<String>,
    /// Where it ran: `network namespace` or `host loopback`.
    pub ran_in: String,
}

/// One consequence of the claim, checked against a measurement.
#[derive(Debug, Clone)]
pub struct Check {
    pub expect: String,
    pub holds: bool,
    pub observed: String,
}

impl Report {
    pub fn new(name: &str, claim: &str, notes: &str) -> Report {
        Report { name: name.into(), claim: claim.into(), notes: notes.into(), ..Report::default() }
    }

    pub fn does(&mut self, step: impl Into<String>) {
        self.does.push(step.into());
    }

    pub fn observe(&mut self, line: impl Into<String>) {
        self.observed.push(line.into());
    }

    /// Records a figure under `key` (the JSON a test asserts on).
    pub fn figure(&mut self, key: &str, value: impl Into<Value>) {
        self.figures.insert(key.into(), value.into());
    }

    /// Checks one consequence of the claim: `holds` is whether the observation agrees.
    pub fn check(&mut self, expect: impl Into<String>, holds: bool, observed: impl Into<String>) {
        self.checks.push(Check { expect: expect.into(), holds, observed: observed.into() });
    }

    pub fn skip(&mut self, reason: impl Into<String>) {
        self.skipped = Some(reason.into());
    }

    /// `agrees`, `contradicts` or `skipped`.
    pub fn verdict(&self) -> &'static str {
        if self.skipped.is_some() {
            "skipped"
        } else if self.checks.iter().all(|check| check.holds) && !self.checks.is_empty() {
            "agrees"
        } else {
            "contradicts"
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "claim": self.claim,
            "notes": self.notes,
            "does": self.does,
            "observed": self.observed,
            "figures": self.figures,
            "checks": self.checks.iter().map(|check| json!({
                "expect": check.expect, "holds": check.holds, "observed": check.observed,
            })).collect::<Vec<_>>(),
            "verdict": self.verdict(),
            "skipped": self.skipped,
            "ran_in": self.ran_in,
            "kernel": kernel_release(),
        })
    }

    /// The inverse of [`Report::to_json`] (a namespaced run reports to its parent as JSON).
    pub fn from_json(value: &Value) -> Option<Report> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let texts = |key: &str| -> Vec<String> {
            value
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        let checks = value
            .get("checks")?
            .as_array()?
            .iter()
            .map(|check| Check {
                expect: check["expect"].as_str().unwrap_or_default().into(),
                holds: check["holds"].as_bool().unwrap_or(false),
                observed: check["observed"].as_str().unwrap_or_default().into(),
            })
            .collect();
        Some(Report {
            name: text("name")?,
            claim: text("claim").unwrap_or_default(),
            notes: text("notes").unwrap_or_default(),
            does: texts("does"),
            observed: texts("observed"),
            figures: value.get("figures").and_then(Value::as_object).cloned().unwrap_or_default(),
            checks,
            skipped: text("skipped"),
            ran_in: text("ran_in").unwrap_or_default(),
        })
    }

    /// The report as people read it: claim, what it does, what it measured, the checks.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== {} ==", self.name);
        let _ = writeln!(out, "Claim: {}", self.claim);
        let _ = writeln!(out, "  (source notes: {})", self.notes);
        if let Some(reason) = &self.skipped {
            let _ = writeln!(out, "Skipped: {reason}");
            return out;
        }
        let _ = writeln!(out, "What it does ({}, Linux {}):", self.ran_in, kernel_release());
        for step in &self.does {
            let _ = writeln!(out, "  - {step}");
        }
        let _ = writeln!(out, "What it measured:");
        for line in &self.observed {
            let _ = writeln!(out, "  - {line}");
        }
        let _ = writeln!(out, "Checks:");
        for check in &self.checks {
            let mark = if check.holds { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "  {mark} {} — observed: {}", check.expect, check.observed);
        }
        let _ = writeln!(
            out,
            "Verdict: the observations {} the claim.",
            self.verdict().replace("agrees", "agree with").replace("contradicts", "contradict")
        );
        out
    }
}

/// The running kernel's release (`uname -r`), from /proc.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failed_check_contradicts_the_claim_and_no_check_proves_nothing() {
        let mut report = Report::new("x", "claim", "notes");
        assert_eq!(report.verdict(), "contradicts", "a report without checks must not agree");
        report.check("a", true, "1");
        assert_eq!(report.verdict(), "agrees");
        report.check("b", false, "2");
        assert_eq!(report.verdict(), "contradicts");
        report.skip("no root");
        assert_eq!(report.verdict(), "skipped");
    }

    #[test]
    fn the_json_form_reads_back_as_the_same_report() {
        let mut report = Report::new("x", "claim", "notes");
        report.does("step");
        report.observe("seen");
        report.figure("n", 5);
        report.check("a", false, "1");
        let back = Report::from_json(&report.to_json()).expect("parses");
        assert_eq!(back.to_json(), report.to_json());
        assert_eq!(back.verdict(), "contradicts");
    }
}
