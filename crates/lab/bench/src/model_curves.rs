//! The ideal queue beside each measured latency curve (the `model` crate): for every open-loop sweep,
//! the queue that server's architecture approximates is simulated at the same offered rates, with
//! the same mix, workers and connections, and the summary gives the highest load that meets the p99
//! target as a share of the model's (the figure ZygOS reports against its centralized-FCFS model).
//!
//! What the model is given, all from the run itself:
//! - service time: the mix's `/spin` times plus the server's own cost per request, which is what its
//!   closed-loop capacity leaves after the spins (`workers / capacity − mean spin`), so the model
//!   saturates where the server did;
//! - a latency floor: the time no worker spends (loopback, the client, the hand-offs' wake-ups), the
//!   measured p50 at the lowest load less the model's, added to every model latency;
//! - the p99 target: the floor plus 10× the mean service time (ZygOS's 10×, above what the
//!   loopback and the client cost even an idle server);
//! - the queue: one central FCFS queue for ramcloud (and for epoll's single loop, where it is the
//!   same thing), a queue per worker with connections round-robin for memcached, hashed for
//!   reuseport, and for lab-nginx the connections pinned as the run's /stats found them.

use model::{Assignment, Model, Queues, Service};
use serde_json::{json, Value};

use crate::results::{readable_us, runs};

/// Requests simulated per rate: a p99 from 90,000 counted requests, the rest warm-up.
const REQUESTS: usize = 100_000;
const SEED: u64 = 12;

/// Adds a `model` object to every sweep record that has a capacity, a mix and measured points, and
/// none yet.
pub fn annotate(doc: &mut Value) {
    let settings = &doc["settings"];
    let client_cpus = settings["sweep_client_cpus"].as_array().map_or(1, Vec::len);
    let connections = settings["connections_per_client_cpu"].as_u64().unwrap_or(64) as usize * client_cpus;
    // Sweeps recorded before they kept /stats: the same server's fairness run shows its split.
    let fairness_conns: Vec<(Value, Value)> = crate::results::runs(doc, "fairness")
        .map(|r| {
            let detail = r["workers_detail"].as_array().into_iter().flatten();
            let conns: Vec<&Value> = detail.filter(|w| w["executes"] == true).map(|w| &w["conns"]).collect();
            (r["server"].clone(), json!(conns))
        })
        .collect();
    for run in doc["runs"].as_array_mut().into_iter().flatten() {
        let is_sweep = run["workload"].as_str().is_some_and(|w| w.starts_with("sweep-"));
        if !is_sweep || run["model"].is_object() {
            continue;
        }
        if run["conns_per_worker"].is_null() {
            if let Some((_, conns)) = fairness_conns.iter().find(|(server, _)| *server == run["server"]) {
                run["conns_per_worker"] = conns.clone();
            }
        }
        if let Some(model) = model_for(run, connections) {
            run["model"] = model;
        }
    }
}

/// `doc` with the model beside every sweep, for rendering results recorded without it.
pub fn with_models(doc: &Value) -> Value {
    let mut doc = doc.clone();
    annotate(&mut doc);
    doc
}

/// lab-load's `--mix` (`99.5:/spin?us=5,0.5:/spin?us=500`) as (weight, µs of spin) pairs; a path
/// that does not spin counts 0 µs.
pub fn mix_classes(spec: &str) -> Option<Vec<(f64, f64)>> {
    spec.split(',')
        .map(|part| {
            let (weight, path) = part.split_once(':')?;
            let spin = path.strip_prefix("/spin?us=").map_or(Some(0.0), |us| us.parse().ok())?;
            Some((weight.parse().ok()?, spin))
        })
        .collect()
}

/// The queue `run`'s server approximates, and its name for the tables.
fn queues_of(run: &Value, connections: usize) -> (Queues, String) {
    match run["family"].as_str().unwrap_or("") {
        "ramcloud" | "oneshot" | "epoll" => (Queues::Central, "central FCFS".into()),
        "memcached" => (Queues::PerWorker(Assignment::RoundRobin), "per-worker, round-robin".into()),
        "uring" if run["workers"].as_u64() == Some(1) => (Queues::Central, "central FCFS".into()),
        "reuseport" | "uring" => (Queues::PerWorker(Assignment::Hash), "per-worker, hashed".into()),
        _ => {
            let counts = pinned_counts(run, connections);
            let text = counts.iter().map(usize::to_string).collect::<Vec<_>>().join("/");
            (Queues::PerWorker(Assignment::from_counts(&counts)), format!("per-worker, pinned {text}"))
        }
    }
}

/// `connections` split over the workers in the proportions the run's /stats found (`conns_per_worker`,
/// over every connection of the sweep); evenly when the run has none.
fn pinned_counts(run: &Value, connections: usize) -> Vec<usize> {
    let workers = run["workers"].as_u64().unwrap_or(1).max(1) as usize;
    let seen: Vec<f64> =
        run["conns_per_worker"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
    let total: f64 = seen.iter().sum();
    if seen.len() != workers || total == 0.0 {
        return (0..workers)
            .map(|w| connections / workers + usize::from(w < connections % workers))
            .collect();
    }
    let mut counts: Vec<usize> =
        seen.iter().map(|s| (s / total * connections as f64).floor() as usize).collect();
    let short = connections - counts.iter().sum::<usize>();
    let busiest = (0..workers).max_by(|&a, &b| seen[a].total_cmp(&seen[b])).unwrap_or(0);
    counts[busiest] += short;
    counts
}

/// The per-executing-worker `conns` of a /stats report.
pub fn conns_per_worker(stats: &Value) -> Vec<u64> {
    let workers = stats["workers"].as_array().into_iter().flatten();
    let executing = workers.filter(|w| labkit::executes_requests(w["role"].as_str().unwrap_or("")));
    executing.map(|w| w["conns"].as_u64().unwrap_or(0)).collect()
}

/// Adds to `sum`, worker by worker, the connections each executing worker took between the /stats
/// reads `before` and `after` one run's loads (`Measured::stats`): the loads' connections and the
/// one read after them, and none of lab-bench's other /stats reads. For `conns_per_worker` in a
/// sweep record.
pub fn add_conns_over_run(sum: &mut Vec<u64>, (before, after): &(Value, Value)) {
    let (before, after) = (conns_per_worker(before), conns_per_worker(after));
    sum.resize(sum.len().max(after.len()), 0);
    for (i, conns) in after.iter().enumerate() {
        sum[i] += conns.saturating_sub(before.get(i).copied().unwrap_or(0));
    }
}

fn model_for(run: &Value, connections: usize) -> Option<Value> {
    let classes = mix_classes(run["mix"].as_str()?)?;
    let workers = run["workers"].as_u64()? as usize;
    let capacity = run["capacity_rps"].as_f64().filter(|&c| c > 0.0)?;
    let spin_mean = Service::mix(&classes, 0.0).mean_us();
    let overhead_us = (workers as f64 * 1e6 / capacity - spin_mean).max(0.0);
    let (queues, queue_name) = queues_of(run, connections);
    let service = Service::mix(&classes, overhead_us);
    let model = Model { queues, workers, connections, service, requests: REQUESTS, seed: SEED };

    let mut measured: Vec<(f64, f64, f64)> = run["points"]
        .as_array()?
        .iter()
        .filter(|p| p["valid"] == true)
        .filter_map(|p| Some((p["load"].as_f64()?, p["offered_rps"].as_f64()?, p["p99_us"].as_f64()?)))
        .collect();
    measured.sort_by(|a, b| a.1.total_cmp(&b.1));
    let &(_, lowest_rate, _) = measured.first()?;
    let lowest_p50 =
        run["points"].as_array()?.iter().find(|p| p["offered_rps"] == lowest_rate)?["p50_us"].as_f64()?;
    let floor_us = (lowest_p50 - model.simulate(lowest_rate).p50_us).max(0.0);
    // 10× the mean service time above the floor, for the measurement and the model alike: on
    // loopback through a general-purpose kernel the floor alone can exceed 10× a 10 µs request.
    let target = floor_us + model.service.default_p99_target_us();

    let curve: Vec<Value> = measured
        .iter()
        .map(|&(load, rate, _)| {
            let l = model.simulate(rate);
            json!({"load": load, "offered_rps": rate, "p50_us": l.p50_us + floor_us,
                   "p99_us": l.p99_us + floor_us, "p999_us": l.p999_us + floor_us})
        })
        .collect();
    let budget = model.service.default_p99_target_us();
    let central = Model { queues: Queues::Central, ..model.clone() };
    let (model_max, central_max) = (model.max_load(budget), central.max_load(budget));
    let points: Vec<(f64, f64)> = measured.iter().map(|&(_, rate, p99)| (rate, p99)).collect();
    let (measured_max, met_at_last_point) = max_load_meeting(&points, target);
    let pct = |of: f64| (of > 0.0).then(|| measured_max / of * 100.0);
    Some(json!({
        "queues": queue_name,
        "workers": workers,
        "connections": connections,
        "overhead_us": overhead_us,
        "floor_us": floor_us,
        "p99_target_us": target,
        "points": curve,
        "max_load_rps": model_max,
        "central_max_load_rps": central_max,
        "measured_max_load_rps": measured_max,
        "measured_met_at_last_point": met_at_last_point,
        "pct_of_model": pct(model_max),
        "pct_of_central": pct(central_max),
        "seed": SEED,
        "requests_per_point": REQUESTS,
    }))
}

/// The highest rate at which the measured p99 meets `target`, from (rate, p99) points in rising
/// rate: linear between the last point that meets it and the next, which does not; 0 when none
/// meets it. A lone noisy miss at a lower load does not hide a later point that meets it. The flag
/// says the last point met it, so the true figure may lie beyond the sweep.
pub fn max_load_meeting(points: &[(f64, f64)], target: f64) -> (f64, bool) {
    let Some(last_meet) = points.iter().rposition(|&(_, p99)| p99 <= target) else {
        return (0.0, false);
    };
    let (meet_rate, meet_p99) = points[last_meet];
    let Some(&(miss_rate, miss_p99)) = points.get(last_meet + 1) else {
        return (meet_rate, true);
    };
    (meet_rate + (target - meet_p99) / (miss_p99 - meet_p99) * (miss_rate - meet_rate), false)
}

/// The model's (load %, p99 ms) points of a sweep record, for the dashed line beside its curve.
pub fn chart_points(run: &Value) -> Vec<(f64, f64)> {
    run["model"]["points"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["load"].as_f64()? * 100.0, p["p99_us"].as_f64()? / 1000.0)))
        .filter(|(_, ms)| ms.is_finite() && *ms > 0.0)
        .collect()
}

/// summary.md's section: per sweep, the highest load meeting the p99 target, measured and modelled.
pub fn summary(doc: &Value) -> String {
    let mut md = String::new();
    let mut rows = Vec::new();
    for mix in doc["settings"]["mixes"].as_array().into_iter().flatten() {
        let name = mix["name"].as_str().unwrap_or("?");
        for run in runs(doc, &format!("sweep-{name}")).filter(|r| r["model"].is_object()) {
            let m = &run["model"];
            let rate = |key: &str| format!("{:.0}", m[key].as_f64().unwrap_or(0.0));
            let pct = |key: &str| m[key].as_f64().map_or("–".into(), |p| format!("{p:.0}%"));
            let measured = format!(
                "{}{}",
                if m["measured_met_at_last_point"] == true { "≥ " } else { "" },
                rate("measured_max_load_rps")
            );
            rows.push(format!(
                "| {} | {name} | {} | {} | {} | {} | {measured} | {} | **{}** | {} | {} |",
                run["server"].as_str().unwrap_or("?"),
                m["queues"].as_str().unwrap_or("?"),
                readable_us(m["overhead_us"].as_f64().unwrap_or(f64::NAN)),
                readable_us(m["floor_us"].as_f64().unwrap_or(f64::NAN)),
                readable_us(m["p99_target_us"].as_f64().unwrap_or(f64::NAN)),
                rate("max_load_rps"),
                pct("pct_of_model"),
                rate("central_max_load_rps"),
                pct("pct_of_central"),
            ));
        }
    }
    if rows.is_empty() {
        return md;
    }
    md.push_str(
        "## Each design against its ideal queue\n\n\
         The `model` crate simulates the queue each server approximates at the sweep's own rates \
         (seeded, 100,000 requests a point): service = the mix's spins + the server's cost per request \
         (what its closed-loop capacity leaves after the spins), plus a latency floor (measured p50 at \
         the lowest load less the model's: loopback, client, wake-ups). p99 target: the floor + 10× the \
         mean service time. *Max load*: the highest offered rate whose p99 meets it (measured: interpolated after the \
         last sweep point that meets it; ≥ when that is the last point). The charts draw the model's p99 dashed.\n\n\
         | server | mix | model queue | cost/request | floor | p99 target | max load measured | model | % of model | central FCFS model | % of central |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        md.push_str(&row);
        md.push('\n');
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_into_spin_classes() {
        assert_eq!(mix_classes("99.5:/spin?us=5,0.5:/spin?us=500"), Some(vec![(99.5, 5.0), (0.5, 500.0)]));
        assert_eq!(mix_classes("100:/spin?us=10"), Some(vec![(100.0, 10.0)]));
        assert_eq!(mix_classes("1:/,1:/spin?us=4"), Some(vec![(1.0, 0.0), (1.0, 4.0)]));
        assert_eq!(mix_classes("x:/spin?us=1"), None);
        assert_eq!(mix_classes("1:/spin?us=fast"), None);
    }

    #[test]
    fn max_load_interpolates_between_the_points_around_the_target() {
        let points = [(100.0, 50.0), (200.0, 80.0), (300.0, 180.0)];
        assert_eq!(max_load_meeting(&points, 130.0), (250.0, false));
        assert_eq!(max_load_meeting(&points, 40.0), (0.0, false));
        assert_eq!(max_load_meeting(&points, 500.0), (300.0, true));
        // A noisy lowest point does not zero a sweep that meets the target further on.
        let noisy_start = [(100.0, 300.0), (200.0, 80.0), (300.0, 180.0)];
        assert_eq!(max_load_meeting(&noisy_start, 130.0), (250.0, false));
    }

    #[test]
    fn a_sweep_counts_only_the_connections_of_its_loads() {
        let stats = |conns: [u64; 2]| json!({"workers": [{"role": "acceptor", "conns": 0}, {"role": "worker", "conns": conns[0]}, {"role": "worker", "conns": conns[1]}]});
        let mut sum = Vec::new();
        add_conns_over_run(&mut sum, &(stats([1, 0]), stats([33, 33])));
        add_conns_over_run(&mut sum, &(stats([35, 34]), stats([67, 67])));
        assert_eq!(sum, [64, 66]);
    }

    #[test]
    fn pinned_counts_follow_the_observed_split() {
        let run = json!({"workers": 2, "conns_per_worker": [300, 100]});
        assert_eq!(pinned_counts(&run, 64), vec![48, 16]);
        let run = json!({"workers": 3, "conns_per_worker": [0, 0, 0]});
        assert_eq!(pinned_counts(&run, 64), vec![22, 21, 21]);
    }

    /// A sweep record as lab-bench writes it, for a server whose p99 grows with load.
    fn sweep(family: &str, mix: &str, p99s: [f64; 3]) -> Value {
        let points: Vec<Value> = [0.1, 0.5, 0.9]
            .iter()
            .zip(p99s)
            .map(|(&load, p99)| json!({"load": load, "offered_rps": load * 100_000.0, "p50_us": 40.0, "p99_us": p99, "valid": true}))
            .collect();
        json!({"server": family, "family": family, "workers": 2, "workload": "sweep-uniform",
               "mix": mix, "capacity_rps": 100_000.0, "points": points})
    }

    #[test]
    fn annotate_adds_the_model_beside_each_sweep() {
        let mut doc = json!({
            "settings": {"sweep_client_cpus": [1], "connections_per_client_cpu": 64,
                         "mixes": [{"name": "uniform", "mix": "100:/spin?us=10"}]},
            "runs": [sweep("ramcloud", "100:/spin?us=10", [60.0, 90.0, 400.0]),
                     sweep("memcached", "99.5:/spin?us=5,0.5:/spin?us=500", [60.0, 150.0, 900.0]),
                     {"server": "epoll", "workload": "keep-alive"}],
        });
        annotate(&mut doc);
        let ramcloud = &doc["runs"][0]["model"];
        // 2 workers at 100,000 req/s: 20 µs a request, 10 of them spin; target the floor (40 µs
        // measured, less the model's 20) + 10× the 20 µs.
        assert!((ramcloud["overhead_us"].as_f64().unwrap() - 10.0).abs() < 1e-9, "{ramcloud}");
        assert!((ramcloud["floor_us"].as_f64().unwrap() - 20.0).abs() < 1e-6, "{ramcloud}");
        assert!((ramcloud["p99_target_us"].as_f64().unwrap() - 220.0).abs() < 1e-6);
        assert_eq!(ramcloud["queues"], "central FCFS");
        // The floor lifts the model's p50 at the lowest load onto the measured one.
        let model_p50 = ramcloud["points"][0]["p50_us"].as_f64().unwrap();
        assert!((model_p50 - 40.0).abs() < 1e-6, "{ramcloud}");
        let p99s: Vec<f64> =
            ramcloud["points"].as_array().unwrap().iter().map(|p| p["p99_us"].as_f64().unwrap()).collect();
        assert!(p99s.windows(2).all(|w| w[0] <= w[1]), "model p99 grows with load: {p99s:?}");
        let pct = ramcloud["pct_of_model"].as_f64().unwrap();
        assert!(pct > 0.0 && pct < 150.0, "{ramcloud}");
        // Under a dispersive mix, the per-worker model of memcached meets the target at a lower load
        // than one central queue. (Under a fixed service time the two are the same queue: the client
        // takes its longest-idle connection, which alternates the workers just as FCFS would.)
        let memcached = &doc["runs"][1]["model"];
        assert_eq!(memcached["queues"], "per-worker, round-robin");
        assert!(
            memcached["max_load_rps"].as_f64() < memcached["central_max_load_rps"].as_f64(),
            "{memcached}"
        );
        assert!(doc["runs"][2].get("model").is_none());
        let md = summary(&doc);
        assert!(md.contains("| ramcloud | uniform | central FCFS |") && md.contains("| memcached |"), "{md}");
        assert_eq!(chart_points(&doc["runs"][0]).len(), 3);
    }
}
