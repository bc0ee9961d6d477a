//! The bench itself: which servers and workloads, in what order, each run checked and written to
//! results.json as soon as it is done.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use crate::measure::{run_loads, set_network, Load, Measured, Network, Server};
use crate::plan::{self, Target, MIXES, SWEEP_SERVERS};
use crate::profile::{self, Perf};
use crate::results::{self, SCHEMA};
use crate::stats::{median, spread_pct, sweep_rates, SWEEP_LOADS};
use crate::veth::{self, Veth};
use crate::{arrival, machine, model_curves, Cli, Net};
use labkit::fairness;

/// Seconds a profiled round adds to its load, for the estimate: perf's start-up before the window,
/// and perf script's unwinding after it.
const PERF_SECONDS: f64 = 3.0;

pub struct Bench {
    cli: Cli,
    server_cpus: Vec<usize>,
    client_cpus: Vec<usize>,
    sweep_client_cpus: Vec<usize>,
    workloads: Vec<&'static str>,
    targets: Vec<Target>,
    sweep_targets: Vec<Target>,
    out: PathBuf,
    scratch: PathBuf,
    doc: Value,
    progress: Progress,
    /// perf, with --profile where it may be used.
    perf: Option<Perf>,
    /// Where perf itself runs: CPUs neither the server nor lab-load uses, else lab-load's.
    perf_cpus: Vec<usize>,
    /// With `--net veth`: the namespaces, removed (and the host checked) at the end.
    veth: Option<Veth>,
    /// Churn's own split of the CPUs, where lab-bench chose one.
    churn: Option<ChurnSplit>,
    /// With a TLS workload chosen: make cert's certificate, key and CA (made if missing).
    tls: Option<lab_cert::Files>,
}

/// Churn on CPUs of its own: the servers on fewer, the clients on more.
struct ChurnSplit {
    client_cpus: Vec<usize>,
    /// The servers again, on churn's server CPUs (matched to the others by id).
    targets: Vec<Target>,
}

/// The split churn gets, chosen from the CPUs this process may use: a quarter of them (at least
/// one) for the servers, the rest for lab-load. A connection per request costs the client a
/// connect, a handshake and a close as well as the request, about what it costs the server, so on
/// an even split the client saturates first and the figure is the client's ceiling. `None` where
/// the CPUs were given on the command line (the split is the user's) or are too few (under 4, a
/// quarter is no different from a half).
pub fn churn_split(allowed: &[usize], cpus_given: bool) -> Option<(Vec<usize>, Vec<usize>)> {
    if cpus_given || allowed.len() < 4 {
        return None;
    }
    let servers = (allowed.len() / 4).max(1);
    Some((allowed[..servers].to_vec(), allowed[servers..].to_vec()))
}

/// One line per run on stderr, with an estimate of the time left.
struct Progress {
    started: Instant,
    /// Planned seconds of load, all runs.
    planned: f64,
    /// Planned seconds of the runs done.
    done: f64,
    runs_done: usize,
    runs: usize,
}

impl Progress {
    fn step(&mut self, seconds: f64, line: &str) {
        // No line for a run a signal cut short: the signal's thread is ending the bench.
        crate::cleanup::hold_if_stopping();
        self.done += seconds;
        self.runs_done += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if self.done > 0.0 { (self.planned - self.done) * elapsed / self.done } else { 0.0 };
        eprintln!(
            "[{:>3}/{}] {line}  ~{}m{:02}s left",
            self.runs_done,
            self.runs,
            (left / 60.0) as u64,
            (left % 60.0) as u64
        );
    }
}

fn cpus_arg(arg: &Option<String>, default: &[usize], what: &str) -> Result<Vec<usize>, String> {
    let Some(list) = arg else { return Ok(default.to_vec()) };
    let cpus = labkit::try_parse_cpu_list(list)?;
    let allowed = labkit::allowed_cpus();
    if cpus.is_empty() {
        return Err(format!("{what}: an empty CPU list"));
    }
    if let Some(cpu) = cpus.iter().find(|cpu| !allowed.contains(cpu)) {
        return Err(format!("{what}: CPU {cpu} is not one this process may use ({allowed:?})"));
    }
    Ok(cpus)
}

impl Bench {
    pub fn new(mut cli: Cli) -> Result<Bench, String> {
        if cli.quick {
            cli.rounds = 1;
            cli.duration = cli.duration.min(1.0);
            cli.warmup = cli.warmup.min(0.3);
        }
        if !(cli.duration > 0.0 && cli.warmup >= 0.0) {
            return Err("--duration must be positive and --warmup not negative".into());
        }
        let (server_half, client_half) = labkit::server_and_client_cpus();
        let server_cpus = cpus_arg(&cli.server_cpus, &server_half, "--server-cpus")?;
        let client_cpus = cpus_arg(&cli.client_cpus, &client_half, "--client-cpus")?;
        let sweep_server_cpus = cpus_arg(&cli.sweep_server_cpus, &server_cpus, "--sweep-server-cpus")?;
        let sweep_client_cpus = cpus_arg(&cli.sweep_client_cpus, &client_cpus, "--sweep-client-cpus")?;
        let workloads = plan::resolve_workloads(&cli.workloads)?;
        let nginx = if cli.no_nginx { None } else { labkit::nginx::find() };
        let wants_nginx =
            cli.archs.is_empty() || cli.archs.iter().any(|a| a.starts_with("real-nginx") || a == "real");
        if nginx.is_none() && !cli.no_nginx && wants_nginx {
            eprintln!("lab-bench: nginx is not installed (not on PATH nor in /usr/sbin): running without the reference");
        }
        if let Some((name, _)) = cli
            .servers
            .iter()
            .find(|(name, _)| plan::targets(&server_cpus, true).iter().any(|t| t.id == *name))
        {
            return Err(format!("--server {name}: the name of one of lab-bench's own rows"));
        }
        let connections = cli.conns_per_cpu * client_cpus.len();
        let mut targets: Vec<Target> = plan::targets(&server_cpus, nginx.is_some())
            .into_iter()
            .filter(|t| plan::selected(&cli.archs, t) || plan::selected_real(&cli.archs, t))
            .collect();
        targets.extend(plan::real_targets(&server_cpus, &cli.archs, connections, false));
        targets.extend(plan::user_targets(&server_cpus, &cli.servers));
        let skipped = skipped_line(&workloads, &targets);
        if let Some(line) = &skipped {
            eprintln!("lab-bench: {line}");
        }
        let tls =
            if workloads.iter().any(|w| plan::is_tls(w)) { Some(tls_files(&cli.cert_dir)?) } else { None };
        let skipped_tls = tls.as_ref().and_then(|files| skipped_tls_line(&workloads, &targets, files));
        if let Some(line) = &skipped_tls {
            eprintln!("lab-bench: {line}");
        }
        let sweep_targets: Vec<Target> = plan::targets(&sweep_server_cpus, false)
            .into_iter()
            .filter(|t| plan::selected(&cli.archs, t))
            .collect();
        if targets.is_empty() {
            return Err(format!("--archs {:?} selects no server", cli.archs.join(",")));
        }
        let mut all_server_cpus: Vec<usize> = server_cpus.iter().chain(&sweep_server_cpus).copied().collect();
        all_server_cpus.sort_unstable();
        all_server_cpus.dedup();
        let (veth, network) = network_of(&cli, &all_server_cpus)?;
        set_network(network.clone());
        let clients =
            network.clients.iter().map(|prefix| machine::client(prefix)).collect::<Result<Vec<_>, _>>()?;
        let perf = if cli.profile {
            Perf::find()
                .map_err(|reason| eprintln!("lab-bench: --profile: {reason}; running without it"))
                .ok()
        } else {
            None
        };
        let perf_cpus = perf_cpus(&server_cpus, &client_cpus);
        let allowed = labkit::allowed_cpus();
        let cpus_given = cli.server_cpus.is_some() || cli.client_cpus.is_some();
        let churn_given = match (&cli.churn_server_cpus, &cli.churn_client_cpus) {
            (Some(_), Some(_)) => Some((
                cpus_arg(&cli.churn_server_cpus, &[], "--churn-server-cpus")?,
                cpus_arg(&cli.churn_client_cpus, &[], "--churn-client-cpus")?,
            )),
            _ => None,
        };
        let churn_cpus = churn_given.clone().or_else(|| churn_split(&allowed, cpus_given));
        let churn_about = match &churn_cpus {
            Some(_) if churn_given.is_some() => "given on the command line (--churn-server-cpus, --churn-client-cpus)".into(),
            Some(_) => format!(
                "chosen by lab-bench from the {} CPUs it may use: a quarter for the servers, the rest for lab-load, \
                 since a connection per request costs the client about what it costs the server",
                allowed.len()
            ),
            None if cpus_given => "the same as the other workloads: the CPUs were given on the command line".into(),
            None => format!(
                "the same as the other workloads: {} CPUs are too few for an asymmetric split",
                allowed.len()
            ),
        };
        let (started_utc, stamp) = machine::utc_now();
        let out = cli
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("results/{}-{stamp}", machine::hostname())));
        fs::create_dir_all(&out).map_err(|e| format!("mkdir {}: {e}", out.display()))?;
        let scratch = std::env::temp_dir().join(format!("lab-bench-{}", std::process::id()));
        fs::create_dir_all(&scratch).map_err(|e| format!("mkdir {}: {e}", scratch.display()))?;
        crate::cleanup::set_scratch(scratch.clone());
        let earlier = if cli.append { results::load(&out).ok() } else { None };
        let command: Vec<String> = std::env::args().collect();
        let mut machine = machine::describe();
        machine["clients"] = json!(clients);
        let doc = json!({
            "schema": SCHEMA,
            "machine": machine,
            "commit": machine::commit(),
            "command": command.join(" "),
            "earlier_commands": earlier.as_ref().map(|doc| {
                let mut list = doc["earlier_commands"].as_array().cloned().unwrap_or_default();
                list.push(doc["command"].clone());
                list
            }),
            "started_utc": started_utc,
            "finished_utc": Value::Null,
            "settings": {
                "server_cpus": server_cpus,
                "client_cpus": client_cpus,
                "sweep_server_cpus": sweep_server_cpus,
                "sweep_client_cpus": sweep_client_cpus,
                "rounds": cli.rounds,
                "duration_s": cli.duration,
                "warmup_s": cli.warmup,
                "connections_per_client_cpu": cli.conns_per_cpu,
                "nginx": nginx.as_ref().map(|path| path.display().to_string()),
                "real_systems": crate::real::System::ALL
                    .iter()
                    .filter(|system| targets.iter().any(|t| t.id == system.id()))
                    .map(|system| json!({
                        "row": system.id(),
                        "binary": crate::real::find(system.program()).map(|p| p.display().to_string()),
                        "version": crate::real::version(*system),
                    }))
                    .collect::<Vec<_>>(),
                "user_servers": cli.servers.iter().map(|(name, command)| json!({"name": name, "command": command})).collect::<Vec<_>>(),
                "skipped": skipped,
                "skipped_tls": skipped_tls,
                "tls": tls.as_ref().map(|files| json!({
                    "cert": files.cert.display().to_string(),
                    "key": files.key.display().to_string(),
                    "ca": files.ca.display().to_string(),
                    "about": TLS_ABOUT,
                })),
                "sweep_loads": SWEEP_LOADS,
                "mixes": MIXES.iter().map(|m| json!({"name": m.name, "mix": m.spec, "about": m.about})).collect::<Vec<_>>(),
                "fairness_heavy_path": fairness::heavy_path(),
                "profile": perf.is_some(),
                "perf_cpus": perf.as_ref().map(|_| perf_cpus.clone()),
                "churn_server_cpus": churn_cpus.as_ref().map_or(&server_cpus, |(s, _)| s),
                "churn_client_cpus": churn_cpus.as_ref().map_or(&client_cpus, |(_, c)| c),
                "churn_split": churn_about,
                "network": veth.as_ref().map_or_else(
                    || json!({
                        "net": "loopback",
                        "server_addr": network.server_ip.to_string(),
                        "client_exec": cli.client_exec,
                    }),
                    Veth::describe,
                ),
            },
            "runs": earlier.as_ref().map_or(json!([]), |doc| doc["runs"].clone()),
        });
        let (cli_conns_per_cpu, cli_archs, cli_servers) =
            (cli.conns_per_cpu, cli.archs.clone(), cli.servers.clone());
        let mut bench = Bench {
            cli,
            server_cpus,
            client_cpus,
            sweep_client_cpus,
            workloads,
            targets,
            sweep_targets,
            out,
            scratch,
            doc,
            perf,
            perf_cpus,
            veth,
            tls,
            churn: churn_cpus.map(|(servers, clients)| {
                let mut targets = plan::targets(&servers, nginx.is_some());
                let connections = cli_conns_per_cpu * clients.len();
                targets.extend(plan::real_targets(&servers, &cli_archs, connections, true));
                targets.extend(plan::user_targets(&servers, &cli_servers));
                ChurnSplit { client_cpus: clients, targets }
            }),
            progress: Progress { started: Instant::now(), planned: 0.0, done: 0.0, runs_done: 0, runs: 0 },
        };
        bench.plan_progress();
        Ok(bench)
    }

    fn run_seconds(&self) -> f64 {
        self.cli.duration + self.cli.warmup + 0.2
    }

    fn throughput_workloads(&self) -> Vec<&'static str> {
        self.workloads.iter().copied().filter(|w| plan::throughput_flags(w).is_some()).collect()
    }

    fn sweep_mixes(&self) -> Vec<plan::Mix> {
        MIXES
            .iter()
            .copied()
            .filter(|m| self.workloads.contains(&format!("sweep-{}", m.name).as_str()))
            .collect()
    }

    fn sweep_list(&self) -> Vec<Target> {
        self.sweep_targets.iter().filter(|t| SWEEP_SERVERS.contains(&t.id.as_str())).cloned().collect()
    }

    /// The lab-memcached the arrival-order workload runs under each `--dispatch`, when chosen.
    fn arrival_target(&self) -> Option<Target> {
        let chosen = self.workloads.contains(&"arrival-order");
        self.sweep_targets.iter().find(|t| chosen && t.id == "memcached").cloned()
    }

    fn plan_progress(&mut self) {
        let per = self.run_seconds();
        let passes = if self.perf.is_some() { 2 } else { 1 };
        let pairs: usize = self
            .throughput_workloads()
            .iter()
            .map(|w| self.targets.iter().filter(|t| self.over(w, t).is_some()).count())
            .sum();
        let throughput = passes * self.cli.rounds as usize * pairs;
        let sweep = self.sweep_list().len() * self.sweep_mixes().len() * (1 + SWEEP_LOADS.len());
        let fairness = if self.workloads.contains(&"fairness") {
            arrival::with_dispatch_variants(&self.sweep_targets)
                .iter()
                .filter(|t| t.serves_lab_routes)
                .count()
        } else {
            0
        };
        let arrival = self.arrival_target().map_or(0, |_| arrival::runs(self.cli.rounds as usize));
        self.progress.runs = throughput + sweep + fairness + arrival;
        // Half the throughput runs are under perf, with its start-up and unwinding around them.
        let under_perf = if self.perf.is_some() { throughput / 2 } else { 0 };
        self.progress.planned = self.progress.runs as f64 * per + under_perf as f64 * PERF_SECONDS;
        eprintln!(
            "lab-bench: {} runs, about {:.0} s; servers on CPUs {:?}, clients on {:?}; results in {}",
            self.progress.runs,
            self.progress.planned,
            self.server_cpus,
            self.client_cpus,
            self.out.display()
        );
    }

    fn load(&self, path: &str, client_cpus: &[usize], flags: &[&str]) -> Load {
        Load {
            path: path.into(),
            connections: self.cli.conns_per_cpu * client_cpus.len(),
            client_cpus: client_cpus.to_vec(),
            duration: self.cli.duration,
            warmup: self.cli.warmup,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            ca: None,
        }
    }

    /// `target` as `workload` runs it: over TLS for a TLS workload (`None` for a row that cannot
    /// serve HTTPS, skipped), as it is otherwise.
    fn over(&self, workload: &str, target: &Target) -> Option<Target> {
        match (plan::is_tls(workload), &self.tls) {
            (false, _) => Some(target.clone()),
            (true, Some(files)) => plan::with_tls(target, files),
            (true, None) => None,
        }
    }

    /// Adds (or, with --append, replaces) a run's record and writes results.json at once, so that a
    /// bench cut short keeps what it measured.
    fn record(&mut self, run: Value) -> Result<(), String> {
        // A run a signal cut short is not recorded: the signal's thread is ending the bench.
        crate::cleanup::hold_if_stopping();
        let runs = self.doc["runs"].as_array_mut().expect("runs is an array");
        runs.retain(|r| !(r["server"] == run["server"] && r["workload"] == run["workload"]));
        runs.push(run);
        results::save(&self.doc, &self.out)
    }

    /// Runs everything chosen and returns the results directory and the document written there
    /// (the report is drawn from it by the caller: measuring knows nothing of how it is shown).
    pub fn run(mut self) -> Result<(PathBuf, Value), String> {
        self.run_throughput()?;
        self.run_sweeps()?;
        if self.workloads.contains(&"fairness") {
            self.run_fairness()?;
        }
        if let Some(memcached) = self.arrival_target() {
            let (clients, rounds) = (self.sweep_client_cpus.clone(), self.cli.rounds as usize);
            let progress = &mut self.progress;
            let records =
                arrival::run(&memcached, &clients, rounds, &self.scratch, |s, line| progress.step(s, line));
            for record in records {
                self.record(record)?;
            }
        }
        model_curves::annotate(&mut self.doc);
        let mut host_problem = None;
        if let Some(mut veth) = self.veth.take() {
            // Every server has stopped: each run's is dropped at its end.
            let network = &mut self.doc["settings"]["network"];
            network["host_checked"] = json!(veth.checked());
            match veth.remove() {
                Ok(()) => network["host_unchanged"] = json!(true),
                Err(reason) => {
                    network["host_unchanged"] = json!(false);
                    network["host_problem"] = json!(reason);
                    host_problem = Some(reason);
                }
            }
        }
        // Every server has stopped: the ones started through a cgroup or a process tree of their own
        // (the real systems and --server) are checked to have left nothing running.
        let left = crate::real::left_behind();
        if let Some(how) = crate::real::containment() {
            self.doc["settings"]["containment"] = json!(how);
            self.doc["settings"]["left_behind"] = json!(left);
        }
        self.doc["finished_utc"] = json!(machine::utc_now().0);
        results::save(&self.doc, &self.out)?;
        let _ = fs::remove_dir_all(&self.scratch);
        if let Some(reason) = host_problem {
            return Err(format!("--net veth: {reason}"));
        }
        if !left.is_empty() {
            return Err(format!("processes left behind: {}", left.join("; ")));
        }
        Ok((self.out, self.doc))
    }

    /// Rounds outermost, so each server's rounds are spread over the whole bench rather than taken
    /// back to back: a noisy minute then spoils one round of each, not every round of one.
    ///
    /// With `--profile`, each round is run twice on the same server, without perf and with it, in
    /// turn (odd rounds without first, even rounds with): the run's figures are from the rounds
    /// without, exactly as a run without `--profile`, and the profiled rounds' throughput is kept
    /// beside them, so every run says what profiling cost it. The first profiled round is drawn.
    fn run_throughput(&mut self) -> Result<(), String> {
        let workloads = self.throughput_workloads();
        if workloads.is_empty() {
            return Ok(());
        }
        let mut rounds: Vec<Vec<Vec<Result<Measured, String>>>> =
            vec![vec![Vec::new(); workloads.len()]; self.targets.len()];
        let mut profiled: Vec<Vec<Vec<Result<Measured, String>>>> = rounds.clone();
        let mut profiles: Vec<Vec<Option<Value>>> = vec![vec![None; workloads.len()]; self.targets.len()];
        for round in 1..=self.cli.rounds {
            for (t, target) in self.targets.clone().iter().enumerate() {
                // The servers this target's workloads share, one per CPU set and protocol (churn
                // may have CPUs of its own; the TLS workloads serve HTTPS), each started at its
                // first workload and stopped when the target's round ends.
                let mut started: Vec<(Vec<usize>, bool, Result<Server, String>)> = Vec::new();
                for (w, workload) in workloads.iter().enumerate() {
                    let flags = plan::throughput_flags(workload).expect("a throughput workload");
                    let (target, clients) = self.split_for(workload, target);
                    let Some(target) = self.over(workload, &target) else { continue };
                    let tls = plan::is_tls(workload);
                    let at = match started.iter().position(|(cpus, t, _)| *cpus == target.cpus && *t == tls) {
                        Some(at) => at,
                        None => {
                            started.push((target.cpus.clone(), tls, Server::start(&target, &self.scratch)));
                            started.len() - 1
                        }
                    };
                    let server = &started[at].2;
                    let target = &target;
                    let mut load = self.load("/", &clients, flags);
                    load.ca = target.tls_ca.clone();
                    let passes: &[bool] = match (&self.perf, round % 2) {
                        (None, _) => &[false],
                        (Some(_), 1) => &[false, true],
                        (Some(_), _) => &[true, false],
                    };
                    for &with_perf in passes {
                        let result = match (server, with_perf) {
                            (Err(reason), _) => Err(reason.clone()),
                            (Ok(server), false) => run_loads(
                                server,
                                target.cpus.len(),
                                std::slice::from_ref(&load),
                                &self.scratch,
                            )
                            .map(|mut m| m.remove(0)),
                            (Ok(server), true) => {
                                let (result, profile) =
                                    self.profiled_round(server, target, workload, &load, round == 1);
                                if let Some(profile) = profile {
                                    profiles[t][w] = Some(profile);
                                }
                                result
                            }
                        };
                        let line = match &result {
                            Ok(m) => format!(
                                "{} {workload} round {round}/{}{}: {:.0} req/s, p99 {:.0} µs{}",
                                target.id,
                                self.cli.rounds,
                                if with_perf { " under perf" } else { "" },
                                m.rps(),
                                m.latency_us("p99"),
                                problems_of(m).map(|p| format!(" [{p}]")).unwrap_or_default()
                            ),
                            Err(reason) => {
                                format!("{} {workload} round {round}: FAILED: {reason}", target.id)
                            }
                        };
                        self.progress
                            .step(self.run_seconds() + if with_perf { PERF_SECONDS } else { 0.0 }, &line);
                        let kept = if with_perf { &mut profiled } else { &mut rounds };
                        kept[t][w].push(result);
                    }
                }
            }
        }
        for (t, target) in self.targets.clone().iter().enumerate() {
            for (w, workload) in workloads.iter().enumerate() {
                let (target, clients) = self.split_for(workload, target);
                let Some(target) = self.over(workload, &target) else { continue };
                let target = &target;
                let mut record = throughput_record(target, workload, &rounds[t][w]);
                record["client_cpus"] = json!(clients);
                tls_costs(&mut record, workload, &rounds[t][w]);
                if let Some(mut profile) = profiles[t][w].take() {
                    profile["throughput"] = profile_cost(target.cpus.len(), &rounds[t][w], &profiled[t][w]);
                    record["profile"] = profile;
                }
                self.record(record)?;
            }
        }
        Ok(())
    }

    /// The server and the client CPUs `workload` runs `target` with: churn's own split where there
    /// is one (and the server has a row on it), else the bench's.
    fn split_for(&self, workload: &str, target: &Target) -> (Target, Vec<usize>) {
        let churn = self.churn.as_ref().filter(|_| plan::is_churn(workload));
        match churn.and_then(|c| c.targets.iter().find(|t| t.id == target.id).map(|t| (t, c))) {
            Some((on_churn_cpus, churn)) => (on_churn_cpus.clone(), churn.client_cpus.clone()),
            None => (target.clone(), self.client_cpus.clone()),
        }
    }

    /// One round with perf attached to the server beforehand and its events on for exactly
    /// lab-load's measured window; with `draw`, the round's `profile` object (its flame graph beside
    /// summary.md), else only its throughput (perf's samples are dropped unread).
    fn profiled_round(
        &self,
        server: &Server,
        target: &Target,
        workload: &str,
        load: &Load,
        draw: bool,
    ) -> (Result<Measured, String>, Option<Value>) {
        let perf = self.perf.as_ref().expect("profiled rounds only with perf");
        let failed = |reason: String| {
            eprintln!("lab-bench: --profile {} {workload}: {reason}", target.id);
            draw.then(|| json!({"error": reason}))
        };
        let mut attached = match profile::attach(perf, server.pid(), &self.perf_cpus, &self.scratch) {
            Ok(attached) => attached,
            Err(reason) => return (Err(format!("perf: {reason}")), failed(reason)),
        };
        let (warmup, duration) = (load.warmup, load.duration);
        let (result, window) = std::thread::scope(|scope| {
            let window = scope.spawn(|| {
                std::thread::sleep(std::time::Duration::from_secs_f64(warmup));
                attached.enable()?;
                std::thread::sleep(std::time::Duration::from_secs_f64(duration));
                attached.disable()
            });
            let result = run_loads(server, target.cpus.len(), std::slice::from_ref(load), &self.scratch)
                .map(|mut m| m.remove(0));
            (result, window.join().unwrap_or_else(|_| Err("the window's thread panicked".into())))
        });
        if let Err(reason) = window {
            attached.discard();
            return (result, failed(reason));
        }
        if !draw {
            attached.discard();
            return (result, None);
        }
        let rps = result.as_ref().map_or(0.0, Measured::rps);
        let svg = self.out.join(format!("flame-{}-{workload}.svg", target.id));
        let title = format!(
            "{}, {workload}: CPU of the server's process tree (perf record, DWARF stacks)",
            target.id
        );
        let profile =
            attached.finish(perf, rps, &title, &svg, plan::is_tls(workload)).unwrap_or_else(|reason| {
                failed(reason.clone());
                json!({"error": reason})
            });
        (result, Some(profile))
    }

    fn run_sweeps(&mut self) -> Result<(), String> {
        let clients = self.sweep_client_cpus.clone();
        for target in self.sweep_list() {
            for mix in self.sweep_mixes() {
                let workload = format!("sweep-{}", mix.name);
                let mut record = target_json(&target, &workload);
                record["mix"] = json!(mix.spec);
                let mut problems: Vec<String> = Vec::new();
                let mut points = Vec::new();
                let mut conns_per_worker = Vec::new(); // for the model: how the connections were spread
                match Server::start(&target, &self.scratch) {
                    Err(reason) => problems.push(format!("start: {reason}")),
                    Ok(server) => {
                        let capacity_load = self.load("/", &clients, &["--mix", mix.spec]);
                        let capacity = run_loads(&server, target.cpus.len(), &[capacity_load], &self.scratch)
                            .map(|mut m| m.remove(0));
                        let capacity_rps = match &capacity {
                            Ok(m) => {
                                record["capacity"] = m.round_json();
                                if let Some(p) = problems_of(m) {
                                    problems.push(format!("capacity: {p}"));
                                }
                                m.rps()
                            }
                            Err(reason) => {
                                problems.push(format!("capacity: {reason}"));
                                0.0
                            }
                        };
                        record["capacity_rps"] = json!(capacity_rps);
                        self.progress.step(
                            self.run_seconds(),
                            &format!("{} {workload} capacity: {capacity_rps:.0} req/s", target.id),
                        );
                        if capacity_rps > 0.0 {
                            for (fraction, rate) in sweep_rates(capacity_rps) {
                                let rate_text = format!("{rate}");
                                let load = self.load(
                                    "/",
                                    &clients,
                                    &["--mix", mix.spec, "--rate", &rate_text, "--timeout", "10"],
                                );
                                let point = run_loads(&server, target.cpus.len(), &[load], &self.scratch)
                                    .map(|mut m| m.remove(0));
                                let pct = (fraction * 100.0).round();
                                let (line, json) = match point {
                                    Ok(m) => {
                                        if let Some(stats) = &m.stats {
                                            model_curves::add_conns_over_run(&mut conns_per_worker, stats);
                                        }
                                        let problem = problems_of(&m);
                                        let mut p = m.round_json();
                                        p["load"] = json!(fraction);
                                        p["offered_rps"] = json!(rate);
                                        p["valid"] = json!(problem.is_none());
                                        let line = format!(
                                            "{} {workload} {pct}%: {rate:.0} req/s offered, p99 {:.0} µs{}",
                                            target.id,
                                            m.latency_us("p99"),
                                            problem.map(|p| format!(" [{p}]")).unwrap_or_default()
                                        );
                                        (line, p)
                                    }
                                    Err(reason) => (
                                        format!("{} {workload} {pct}%: FAILED: {reason}", target.id),
                                        json!({"load": fraction, "offered_rps": rate, "valid": false, "error": reason}),
                                    ),
                                };
                                points.push(json);
                                self.progress.step(self.run_seconds(), &line);
                            }
                        }
                    }
                }
                record["points"] = json!(points);
                record["conns_per_worker"] =
                    json!((!conns_per_worker.is_empty()).then_some(conns_per_worker));
                record["valid"] = json!(problems.is_empty());
                record["problems"] = json!(problems);
                self.record(record)?;
            }
        }
        Ok(())
    }

    /// A few long-lived connections, half of them heavy: how evenly does each architecture spread
    /// them, and the work, over its workers? Read from the /stats run_loads reads before and after
    /// the loads (the one connection of the run's that is not a load's is the read after).
    fn run_fairness(&mut self) -> Result<(), String> {
        let clients = self.sweep_client_cpus.clone();
        let heavy_cpus = vec![clients[0]];
        let light_cpus = vec![*clients.last().expect("a client CPU")];
        for target in
            arrival::with_dispatch_variants(&self.sweep_targets).iter().filter(|t| t.serves_lab_routes)
        {
            let per_kind = fairness::connections_per_kind(target.workers);
            let mut heavy = self.load(&fairness::heavy_path(), &heavy_cpus, &[]);
            heavy.connections = per_kind;
            let mut light = self.load(fairness::LIGHT_PATH, &light_cpus, &[]);
            light.connections = per_kind;
            let mut record = target_json(target, "fairness");
            let mut problems = Vec::new();
            // The per-worker counters from run_loads' own /stats reads around the loads: another
            // read here would add its connection to the workers' `conns` (and Jain over them).
            let outcome = Server::start(target, &self.scratch).and_then(|server| {
                let measured =
                    run_loads(&server, target.cpus.len(), &[heavy.clone(), light.clone()], &self.scratch)?;
                let (before, after) =
                    measured[0].stats.clone().ok_or("the server gave no /stats around the run")?;
                Ok((before, after, measured))
            });
            let line = match outcome {
                Err(reason) => {
                    problems.push(reason.clone());
                    format!("{} fairness: FAILED: {reason}", target.id)
                }
                Ok((before, after, measured)) => {
                    for (kind, m) in ["heavy", "light"].iter().zip(&measured) {
                        if let Some(p) = problems_of(m) {
                            problems.push(format!("{kind}: {p}"));
                        }
                    }
                    fill_fairness(&mut record, target, &before, &after, &measured, per_kind);
                    format!(
                        "{} fairness: Jain {:.2} over requests, heavy at {:.0}% of ideal",
                        target.id,
                        record["jain_requests"].as_f64().unwrap_or(0.0),
                        record["heavy_share_of_ideal"].as_f64().unwrap_or(0.0) * 100.0
                    )
                }
            };
            self.progress.step(self.run_seconds(), &line);
            record["valid"] = json!(problems.is_empty());
            record["problems"] = json!(problems);
            self.record(record)?;
        }
        Ok(())
    }
}

/// Where the servers listen and the clients run, from `--net`, `--rps`, `--server-addr` and
/// `--client-exec`; with `--net veth` the namespaces made and this thread moved into the servers'.
fn network_of(cli: &Cli, server_cpus: &[usize]) -> Result<(Option<Veth>, Network), String> {
    if cli.rps && cli.net != Net::Veth {
        return Err("--rps needs --net veth (on loopback there is no receive queue to spread)".into());
    }
    if cli.net == Net::Veth {
        if !cli.client_exec.is_empty() || cli.server_addr.is_some() {
            return Err("--net veth makes its own client namespace and addresses: not with --client-exec or --server-addr".into());
        }
        // Gated: a signal while the namespaces are being made waits for them, then deletes them.
        let mut made = crate::cleanup::gated(|| Veth::create(cli.rps.then_some(server_cpus)))?;
        made.enter_server()?;
        let network = Network { server_ip: veth::SERVER_IP.into(), clients: vec![made.client_prefix()] };
        return Ok((Some(made), network));
    }
    let server_ip = cli.server_addr.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    std::net::TcpListener::bind((server_ip, 0))
        .map_err(|e| format!("--server-addr {server_ip}: bind {server_ip}:0: {e}"))?;
    let mut clients = Vec::new();
    for prefix in &cli.client_exec {
        let words: Vec<String> = prefix.split_whitespace().map(str::to_owned).collect();
        if words.is_empty() {
            return Err("--client-exec: an empty prefix".into());
        }
        clients.push(words);
    }
    if clients.is_empty() {
        clients.push(Vec::new());
    }
    Ok((None, Network { server_ip, clients }))
}

/// Errors or lost requests, or a server that counted other than the clients read, as one line;
/// `None` for a clean run.
fn problems_of(m: &Measured) -> Option<String> {
    let (errors, lost) = (m.errors(), m.lost());
    let mut problems = Vec::new();
    if errors > 0 || lost > 0 {
        problems.push(format!("{errors} errors, {lost} lost"));
    }
    // lab-load counts a 3xx as an answer; the bench wants every answer a 2xx.
    let not_2xx: u64 = m.load["statuses"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(code, _)| !code.starts_with('2'))
        .filter_map(|(_, count)| count.as_u64())
        .sum();
    if not_2xx > 0 {
        problems.push(format!("{not_2xx} answers not a 2xx"));
    }
    problems.extend(m.count_mismatch());
    (!problems.is_empty()).then(|| problems.join("; "))
}

fn target_json(target: &Target, workload: &str) -> Value {
    let mut record = json!({
        "server": target.id,
        "family": target.family,
        "workers": target.workers,
        "cpus": target.cpus,
        "workload": workload,
    });
    let configuration = plan::configuration(target);
    if !configuration.is_empty() {
        record["configuration"] = json!(configuration);
    }
    if !target.serves_lab_routes {
        record["count_check"] = json!(COUNT_CHECK_SKIPPED);
    }
    record
}

/// Why a row without /stats has no count check, and what its validity rests on.
const COUNT_CHECK_SKIPPED: &str =
    "skipped: no /stats to count with; valid when lab-load saw no errors and every answer was a 2xx";

/// The workloads that need the lab's routes (/spin, /stats) and the rows that serve none of them,
/// in one line, where both are chosen.
fn skipped_line(workloads: &[&str], targets: &[Target]) -> Option<String> {
    let needing: Vec<&str> =
        workloads.iter().copied().filter(|w| plan::throughput_flags(w).is_none()).collect();
    let rows: Vec<&str> = targets.iter().filter(|t| !t.serves_lab_routes).map(|t| t.id.as_str()).collect();
    (!needing.is_empty() && !rows.is_empty()).then(|| {
        format!(
            "{} skip {}: they serve none of the lab's routes (/spin, /stats) that these workloads need",
            needing.join(", "),
            rows.join(", ")
        )
    })
}

/// How the TLS workloads are run, for results.json and summary.md.
const TLS_ABOUT: &str = "every row serves HTTPS on make cert's certificate (ECDSA P-256) and key: the project's \
    servers with --tls-cert/--tls-key (rustls on ring), nginx with `ssl` (OpenSSL); TLS 1.3 (lab-load offers 1.3 \
    and 1.2; both sides choose 1.3), key exchange X25519 first, session tickets on. tls-keep-alive: \
    a handshake per connection, then keep-alive; tls-churn: a new connection per request, every \
    handshake full (lab-load keeps no tickets); tls-resume: the same with lab-load's --tls-resume, \
    every handshake after each connection slot's first resumed by ticket";

/// Make cert's files in `dir`, made there (lab-cert's library, as `make cert`) where any is missing;
/// absolute paths (nginx reads them from a directory of its own).
fn tls_files(dir: &std::path::Path) -> Result<lab_cert::Files, String> {
    let files = lab_cert::Files::in_dir(dir);
    if ![&files.ca, &files.cert, &files.key].iter().all(|f| f.is_file()) {
        lab_cert::make(dir).map_err(|e| format!("--cert-dir {}: {e}", dir.display()))?;
        eprintln!("lab-bench: made a CA and a server certificate in {} (as make cert)", dir.display());
    }
    let dir = fs::canonicalize(dir).map_err(|e| format!("--cert-dir {}: {e}", dir.display()))?;
    Ok(lab_cert::Files::in_dir(&dir))
}

/// The rows that cannot serve HTTPS (the real systems beside nginx, a user's `--server`), in one
/// line, where a TLS workload is chosen and there are any.
fn skipped_tls_line(workloads: &[&str], targets: &[Target], files: &lab_cert::Files) -> Option<String> {
    let tls: Vec<&str> = workloads.iter().copied().filter(|w| plan::is_tls(w)).collect();
    let rows: Vec<&str> =
        targets.iter().filter(|t| plan::with_tls(t, files).is_none()).map(|t| t.id.as_str()).collect();
    (!tls.is_empty() && !rows.is_empty()).then(|| {
        format!(
            "{} skip {}: lab-bench cannot tell them to serve HTTPS (only the project's servers and nginx)",
            tls.join(", "),
            rows.join(", ")
        )
    })
}

/// A TLS run's costs per round, and their medians over the valid rounds: the server's CPU per
/// request and per handshake, the handshakes it made (full and resumed, and where that count is
/// from), and its CPU by thread group per handshake (churn) or per request (keep-alive).
fn tls_costs(record: &mut Value, workload: &str, rounds: &[Result<Measured, String>]) {
    let valid: Vec<&Measured> =
        rounds.iter().filter_map(|r| r.as_ref().ok()).filter(|m| problems_of(m).is_none()).collect();
    let per_request: Vec<f64> = valid.iter().filter_map(|m| m.cpu_us_per_request()).collect();
    record["cpu_us_per_request"] = json!(median(&per_request));
    if !plan::is_tls(workload) {
        return;
    }
    let per_handshake: Vec<f64> = valid.iter().filter_map(|m| m.cpu_us_per_handshake()).collect();
    let churn = plan::is_churn(workload);
    // Per handshake where every request has one; over keep-alive, a handshake per connection only.
    record["cpu_us_per_handshake"] = json!(if churn { median(&per_handshake) } else { None });
    let mut handshakes = Vec::new();
    for (i, round) in rounds.iter().enumerate() {
        if let (Ok(m), Some(doc)) = (round, record["rounds"].get_mut(i)) {
            doc["handshakes"] = json!(m.handshakes().map(|[full, resumed]| json!({
                "full": full, "resumed": resumed, "from": m.handshakes_from(),
                "client": m.load["tls"],
            })));
            doc["cpu_us_per_handshake"] = json!(m.cpu_us_per_handshake());
            doc["thread_cpu_s"] = json!(m.thread_cpu_s);
        }
    }
    for m in &valid {
        handshakes.extend(m.handshakes());
    }
    let full: Vec<f64> = handshakes.iter().map(|h| h[0] as f64).collect();
    let resumed: Vec<f64> = handshakes.iter().map(|h| h[1] as f64).collect();
    record["handshakes"] = json!({"full": median(&full), "resumed": median(&resumed)});
    // Each thread group's CPU per operation: per handshake over churn, per request over keep-alive.
    let mut threads = serde_json::Map::new();
    for group in crate::measure::THREAD_GROUPS {
        let per_op: Vec<f64> = valid
            .iter()
            .filter_map(|m| {
                let cpu = m.thread_cpu_s.get(group)?.as_f64()?;
                let ops = if churn {
                    m.handshakes().map(|[f, r]| f + r)?
                } else {
                    m.load["responses_total"].as_u64()?
                };
                (ops > 0).then(|| cpu * 1e6 / ops as f64)
            })
            .collect();
        threads.insert(group.into(), json!(median(&per_op)));
    }
    record["thread_cpu_us_per_op"] =
        json!({"per": if churn { "handshake" } else { "request" }, "groups": threads});
}

/// A throughput workload's record: every round, and the median and spread of the valid ones only.
/// Where perf runs: the allowed CPUs that are neither the server's nor lab-load's; where there are
/// none (2 cores: one each), lab-load's, so that perf never takes CPU from the server it measures.
fn perf_cpus(server: &[usize], client: &[usize]) -> Vec<usize> {
    let spare: Vec<usize> =
        labkit::allowed_cpus().into_iter().filter(|c| !server.contains(c) && !client.contains(c)).collect();
    if spare.is_empty() {
        client.to_vec()
    } else {
        spare
    }
}

/// What profiling cost a run: the throughput of its rounds under perf against the same rounds
/// without it (run back to back on the same server), as the ratio of the medians; and the same
/// for the server's CPU per request, which other load on the machine disturbs less (it takes CPU
/// from the server, which lowers the throughput, but leaves each request's cost as it was).
fn profile_cost(
    cpus: usize,
    plain: &[Result<Measured, String>],
    profiled: &[Result<Measured, String>],
) -> Value {
    let valid = |rounds: &[Result<Measured, String>]| -> Vec<Measured> {
        rounds.iter().filter_map(|r| r.as_ref().ok()).filter(|m| problems_of(m).is_none()).cloned().collect()
    };
    let (without, with) = (valid(plain), valid(profiled));
    let rps = |rounds: &[Measured]| rounds.iter().map(Measured::rps).collect::<Vec<f64>>();
    let cpu_us = |rounds: &[Measured]| {
        rounds.iter().map(|m| m.server_cpu * cpus as f64 / m.rps() * 1e6).collect::<Vec<f64>>()
    };
    let ratio = |a: &[f64], b: &[f64]| match (median(a), median(b)) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    json!({
        "rps_without": rps(&without),
        "rps_with": rps(&with),
        "ratio": ratio(&rps(&with), &rps(&without)),
        "cpu_us_per_request_without": cpu_us(&without),
        "cpu_us_per_request_with": cpu_us(&with),
        "cpu_ratio": ratio(&cpu_us(&with), &cpu_us(&without)),
    })
}

fn throughput_record(target: &Target, workload: &str, rounds: &[Result<Measured, String>]) -> Value {
    let mut record = target_json(target, workload);
    let mut problems = Vec::new();
    let mut valid_rps = Vec::new();
    let mut p99 = Vec::new();
    let mut client_bound = false;
    let mut round_docs = Vec::new();
    for (i, round) in rounds.iter().enumerate() {
        match round {
            Ok(m) => {
                round_docs.push(m.round_json());
                client_bound |= m.client_bound();
                match problems_of(m) {
                    Some(p) => problems.push(format!("round {}: {p}", i + 1)),
                    None => {
                        valid_rps.push(m.rps());
                        p99.push(m.latency_us("p99"));
                    }
                }
            }
            Err(reason) => {
                round_docs.push(json!({"error": reason}));
                problems.push(format!("round {}: {reason}", i + 1));
            }
        }
    }
    let min = valid_rps.iter().copied().fold(f64::INFINITY, f64::min);
    let max = valid_rps.iter().copied().fold(0.0, f64::max);
    record["rounds"] = json!(round_docs);
    record["rps"] = json!({
        "median": median(&valid_rps),
        "min": min.is_finite().then_some(min),
        "max": max,
        "spread_pct": spread_pct(&valid_rps),
        "valid_rounds": valid_rps.len(),
    });
    record["p99_us"] = json!(median(&p99));
    record["client_bound"] = json!(client_bound);
    record["valid"] = json!(problems.is_empty() && !valid_rps.is_empty());
    record["problems"] = json!(problems);
    record
}

/// Per-worker counters over the run (after − before), Jain's index over the executing workers,
/// and the heavy connections' throughput against the ideal of one heavy connection per worker.
fn fill_fairness(
    record: &mut Value,
    target: &Target,
    before: &Value,
    after: &Value,
    measured: &[Measured],
    per_kind: usize,
) {
    let split = fairness::split(before, after);
    let requests = &split.requests;
    let (heavy, light) = (&measured[0], &measured[1]);
    // One heavy connection per worker, each a closed loop of HEAVY_SPIN_US: what a perfect spread gives.
    let ideal = fairness::heavy_ideal_rps(per_kind, target.workers);
    let max = requests.iter().copied().fold(0.0, f64::max);
    let min = requests.iter().copied().fold(f64::INFINITY, f64::min);
    record["connections"] = json!({"heavy": per_kind, "light": per_kind});
    record["jain_requests"] = json!(split.jain_requests());
    record["jain_conns"] = json!(split.jain_conns());
    record["workers_detail"] = json!(split.workers);
    record["requests_max"] = json!(max);
    record["requests_min"] = json!(if min.is_finite() { min } else { 0.0 });
    record["heavy"] = heavy.round_json();
    record["light"] = light.round_json();
    record["heavy_ideal_rps"] = json!(ideal);
    record["heavy_share_of_ideal"] = json!(heavy.rps() / ideal);
}

#[cfg(test)]
mod tests {
    use super::churn_split;

    #[test]
    fn churn_gets_a_quarter_of_the_cpus_for_the_servers_where_there_are_enough() {
        let cpus = |n: usize| (0..n).collect::<Vec<_>>();
        let (servers, clients) = churn_split(&cpus(16), false).unwrap();
        assert_eq!((servers, clients.len()), (vec![0, 1, 2, 3], 12));
        let (servers, clients) = churn_split(&cpus(4), false).unwrap();
        assert_eq!((servers, clients), (vec![0], vec![1, 2, 3]));
        assert_eq!(churn_split(&cpus(2), false), None, "2 CPUs: one each, as the others");
        assert_eq!(churn_split(&cpus(16), true), None, "CPUs given: the user's split");
    }
}
