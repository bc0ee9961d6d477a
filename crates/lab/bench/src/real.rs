//! The real systems beside nginx, and any server a user brings.
//!
//! Real systems (only when `--archs` names them, or `real` for all of them with nginx): Node.js
//! (`real-node-1`, one process; `real-node-rr` and `real-node-none`, a cluster of one worker per
//! server CPU under each of its scheduling policies), Apache's event MPM (`real-apache-event`) and
//! HAProxy (`real-haproxy`), each from a configuration written for the run that does what the
//! project's servers do: `Hello, World!` for `GET /`, no access log, keep-alive without a request
//! limit, connection limits above lab-load's connection count. A user's server is `--server
//! NAME='COMMAND'`, run by `sh -c` with `{addr}`, `{port}`, `{workers}` and `{cpus}` substituted.
//!
//! Every one of them is a process tree started the same way: from a thread pinned to the server
//! CPUs (so it and every process it starts inherit the affinity), in a process group of its own,
//! and in a cgroup v2 of its own where the machine allows one (with the server CPUs as its
//! `cpuset.cpus` where the cpuset controller is enabled there), so that a forking server's
//! children are pinned and stopped too. Stopped with SIGTERM, then every process of the cgroup, the
//! group and the tree killed; the ones still running after that are kept for the results
//! ([`left_behind`]).

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A real system the bench configures itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Node's http server, one process.
    NodeOne,
    /// A Node cluster, `NODE_CLUSTER_SCHED_POLICY=rr`: the primary accepts and passes each
    /// connection to a worker (Node's default on Linux).
    NodeRr,
    /// A Node cluster, `NODE_CLUSTER_SCHED_POLICY=none`: the workers share the listening socket.
    NodeNone,
    /// Apache httpd, the event MPM: one process, a listener thread and its worker threads.
    ApacheEvent,
    /// HAProxy, `nbthread` = the server CPUs, the answer from `http-request return`.
    Haproxy,
}

impl System {
    pub const ALL: [System; 5] =
        [System::NodeOne, System::NodeRr, System::NodeNone, System::ApacheEvent, System::Haproxy];

    pub fn id(self) -> &'static str {
        match self {
            System::NodeOne => "real-node-1",
            System::NodeRr => "real-node-rr",
            System::NodeNone => "real-node-none",
            System::ApacheEvent => "real-apache-event",
            System::Haproxy => "real-haproxy",
        }
    }

    pub fn family(self) -> &'static str {
        match self {
            System::NodeOne | System::NodeRr | System::NodeNone => "real-node",
            System::ApacheEvent => "real-apache",
            System::Haproxy => "real-haproxy",
        }
    }

    /// The program, as the distribution names it.
    pub fn program(self) -> &'static str {
        match self {
            System::NodeOne | System::NodeRr | System::NodeNone => "node",
            System::ApacheEvent => "apache2",
            System::Haproxy => "haproxy",
        }
    }
}

/// How a row started by this module is run.
#[derive(Debug, Clone)]
pub enum Spec {
    System(System),
    /// `--server NAME='COMMAND'`: the command, its placeholders not yet substituted.
    User {
        command: String,
    },
}

/// A program on PATH, or in /usr/sbin where Debian puts the daemons (not on every user's PATH);
/// Node also as Debian's `nodejs`.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let names: &[&str] = if program == "node" { &["node", "nodejs"] } else { &[program] };
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Whether `--archs` names `system`: by its id, its family, or `real` (every real system).
pub fn named(archs: &[String], system: System) -> bool {
    archs.iter().any(|a| a == "real" || a == system.family() || a == system.id())
}

/// `--server`'s `NAME=COMMAND`, checked: a name that cannot be mistaken for a row of the bench's own.
pub fn parse_server(arg: &str) -> Result<(String, String), String> {
    let (name, command) =
        arg.split_once('=').ok_or_else(|| format!("--server {arg:?}: want NAME='COMMAND'"))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("--server {arg:?}: NAME is letters, digits, - and _"));
    }
    if name == "real" || name.starts_with("real-") {
        return Err(format!("--server {name}: the name of lab-bench's own rows"));
    }
    if command.trim().is_empty() {
        return Err(format!("--server {name}: an empty command"));
    }
    Ok((name.to_string(), command.to_string()))
}

/// The command line of a user's server with its placeholders filled in.
pub fn substitute(command: &str, addr: SocketAddr, workers: usize, cpus: &[usize]) -> String {
    command
        .replace("{addr}", &addr.to_string())
        .replace("{port}", &addr.port().to_string())
        .replace("{workers}", &workers.to_string())
        .replace("{cpus}", &cpus_text(cpus))
}

/// The version the program reports, its first line (for results.json).
pub fn version(system: System) -> Option<String> {
    let binary = find(system.program())?;
    let flag = if system.program() == "node" { "--version" } else { "-v" };
    let out = Command::new(binary).arg(flag).stdin(Stdio::null()).output().ok()?;
    let text =
        String::from_utf8_lossy(if out.stdout.is_empty() { &out.stderr } else { &out.stdout }).into_owned();
    text.lines().next().map(|line| line.trim().to_string())
}

/// Node's server: `Hello, World!` for every request, keep-alive without a request limit; with
/// `cluster`, the primary forks one worker per server CPU (the scheduling policy from
/// NODE_CLUSTER_SCHED_POLICY) and writes `ready` once all of them listen.
const NODE_SCRIPT: &str = r#"'use strict';
// Written by lab-bench: node server.js HOST PORT WORKERS (WORKERS 0: one process, no cluster).
const cluster = require('node:cluster');
const fs = require('node:fs');
const http = require('node:http');
const [host, port, workers] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const ready = () => fs.writeFileSync(__dirname + '/ready', '');
if (workers > 0 && cluster.isPrimary) {
  let listening = 0;
  cluster.on('listening', () => { if (++listening === workers) ready(); });
  cluster.on('exit', () => process.exit(1));
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 13 });
    res.end('Hello, World!');
  });
  server.keepAliveTimeout = 75000;
  server.maxRequestsPerSocket = 0;
  server.listen({ host, port, backlog: 511 }, () => { if (workers === 0) ready(); });
}
"#;

/// The modules directory of an Apache binary: `/usr/sbin/apache2` has its modules in
/// `/usr/lib/apache2/modules`, and so does a copy extracted elsewhere (`.lab/root/usr/sbin`).
fn apache_modules(binary: &Path) -> PathBuf {
    let prefix = binary.parent().and_then(Path::parent).unwrap_or(Path::new("/usr"));
    prefix.join("lib/apache2/modules")
}

/// Apache's configuration: the event MPM, one process of `threads` worker threads, every path
/// answered from one file holding `Hello, World!`, no access log, keep-alive without a request
/// limit, the same 511 backlog as the lab servers.
pub fn apache_conf(threads: usize, addr: SocketAddr, dir: &Path, modules: &Path) -> String {
    let (dir, modules) = (dir.display(), modules.display());
    let mut conf = String::new();
    let _ = writeln!(conf, "ServerRoot {dir}\nServerName localhost");
    for (name, file) in [("mpm_event", "mpm_event"), ("authz_core", "authz_core"), ("alias", "alias")] {
        let _ = writeln!(conf, "LoadModule {name}_module {modules}/mod_{file}.so");
    }
    // Apache will not serve as root; `daemon` is in every Debian's base-passwd.
    let _ = writeln!(conf, "User daemon\nGroup daemon");
    let _ = writeln!(
        conf,
        "PidFile {dir}/httpd.pid\nDefaultRuntimeDir {dir}\nErrorLog {dir}/error.log\nLogLevel warn"
    );
    let _ = writeln!(conf, "Listen {addr}\nListenBacklog 511");
    let _ = writeln!(conf, "StartServers 1\nServerLimit 1");
    for name in ["ThreadLimit", "ThreadsPerChild", "MinSpareThreads", "MaxSpareThreads", "MaxRequestWorkers"]
    {
        let _ = writeln!(conf, "{name} {threads}");
    }
    let _ = writeln!(conf, "AsyncRequestWorkerFactor 1000\nMaxConnectionsPerChild 0");
    let _ = writeln!(conf, "KeepAlive On\nMaxKeepAliveRequests 0\nKeepAliveTimeout 75");
    let _ = writeln!(conf, "AliasMatch \"^/\" \"{dir}/hello.txt\"");
    let _ =
        writeln!(conf, "<Directory \"{dir}\">\n  Require all granted\n  ForceType text/plain\n</Directory>");
    conf
}

/// HAProxy's configuration: `threads` threads, thread i pinned to the i-th server CPU, the answer
/// from `http-request return` (no backend), no log, keep-alive without a request limit.
pub fn haproxy_conf(threads: usize, cpus: &[usize], addr: SocketAddr) -> String {
    let mut conf = String::from("global\n");
    // maxconn sizes the open-file limit HAProxy asks for (2 per connection): 4096 fits a limit of 20000.
    let _ = writeln!(conf, "  nbthread {threads}\n  maxconn {HAPROXY_MAXCONN}");
    for (i, cpu) in cpus.iter().take(threads).enumerate() {
        let _ = writeln!(conf, "  cpu-map 1/{} {cpu}", i + 1);
    }
    let _ = writeln!(conf, "defaults\n  mode http\n  option http-keep-alive");
    let _ = writeln!(conf, "  timeout client 75s\n  timeout http-keep-alive 75s\n  timeout http-request 75s");
    let _ = writeln!(conf, "  timeout connect 5s\n  timeout server 5s");
    let _ = writeln!(conf, "frontend hello\n  bind {addr} backlog 511");
    let _ =
        writeln!(conf, "  http-request return status 200 content-type text/plain string \"Hello, World!\"");
    conf
}

/// Renders a CPU list the way the command lines take it: `0,1,2`.
fn cpus_text(cpus: &[usize]) -> String {
    cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// HAProxy's `maxconn`: far above lab-load's connections (64 per client CPU).
const HAPROXY_MAXCONN: usize = 4096;

/// How a row of this module is configured, in one line, for summary.md and results.json.
pub fn describe(spec: &Spec, workers: usize, cpus: &[usize]) -> String {
    let cpus = cpus_text(cpus);
    match spec {
        Spec::System(system) => match system {
            System::NodeOne => format!(
                "node: http.createServer answering `Hello, World!`, one process on CPU {cpus}, \
                 keepAliveTimeout 75 s, maxRequestsPerSocket 0 (unlimited), backlog 511, no access log"
            ),
            System::NodeRr | System::NodeNone => format!(
                "node cluster: a primary and workers: {} (cluster.fork), NODE_CLUSTER_SCHED_POLICY={}, every \
                 process on CPUs {cpus} by affinity (Node cannot pin a worker to one); each worker the one-process \
                 server's http.createServer",
                workers,
                if *system == System::NodeRr { "rr" } else { "none" }
            ),
            System::ApacheEvent => format!(
                "apache2: event MPM, one process (ServerLimit 1) of {} worker threads and its listener thread, \
                 on CPUs {cpus} by affinity; AsyncRequestWorkerFactor 1000, MaxKeepAliveRequests 0 (unlimited), \
                 KeepAliveTimeout 75, MaxConnectionsPerChild 0, ListenBacklog 511, no access log; \
                 every path answered from one file holding `Hello, World!` (AliasMatch); threads = twice lab-load's \
                 connections, since the event MPM closes kept-alive connections whenever no worker is idle",
                workers
            ),
            System::Haproxy => format!(
                "haproxy: nbthread {}, cpu-map thread i to the i-th of CPUs {cpus}, maxconn {HAPROXY_MAXCONN}, \
                 `http-request return status 200 ... string \"Hello, World!\"` (no backend), \
                 http-keep-alive without a request limit, backlog 511, no log",
                workers
            ),
        },
        Spec::User { command } => format!("`{command}` (sh -c), {{workers}} = {workers}, {{cpus}} = {cpus}"),
    }
}

/// nginx's configuration (labkit::nginx renders it), in the same one line.
pub fn describe_nginx(config: &labkit::nginx::Config) -> String {
    let accept = match config.accept {
        labkit::nginx::Accept::Mutex => "accept_mutex on",
        labkit::nginx::Accept::Exclusive => "accept_mutex off (EPOLLEXCLUSIVE)",
        labkit::nginx::Accept::Reuseport => "listen ... reuseport",
    };
    let ssl = match config.tls {
        Some(_) => ", listen ... ssl on make cert's certificate and key, ssl_protocols TLSv1.3 TLSv1.2, \
                    ssl_ecdh_curve X25519:prime256v1:secp384r1, ssl_session_tickets on, ssl_session_cache none",
        None => "",
    };
    format!(
        "nginx: worker_processes {}, worker_cpu_affinity one CPU each of {}, {accept}, worker_connections 16384, \
         keepalive_requests 1000000000, keepalive_timeout 75s, backlog 511, `return 200 \"Hello, World!\"`, \
         access_log off{ssl}",
        config.workers,
        cpus_text(&config.cpus)
    )
}

/// What the processes that ran and were stopped left behind: one line per server that left any.
static LEFT_BEHIND: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// How the last server was held (cgroup or affinity only), for results.json.
static CONTAINMENT: Mutex<Option<String>> = Mutex::new(None);
static CGROUPS_MADE: AtomicUsize = AtomicUsize::new(0);

/// Every process a server of this module left running after it was stopped.
pub fn left_behind() -> Vec<String> {
    LEFT_BEHIND.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// How the servers of this module were pinned and contained, once one has run.
pub fn containment() -> Option<String> {
    CONTAINMENT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A cgroup v2 of a server's own, below lab-bench's.
struct Cgroup {
    dir: PathBuf,
    /// Its `cpuset.cpus` holds the server CPUs.
    cpuset: bool,
}

/// Where this process's cgroup v2 is: the cgroup2 mount (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid machine) joined with the `0::PATH` of /proc/self/cgroup.
fn own_cgroup() -> Result<PathBuf, String> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("read mountinfo: {e}"))?;
    let mount = mounts
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next() == Some("cgroup2")).then(|| left.split_whitespace().nth(4))?
        })
        .ok_or("no cgroup v2 mounted")?;
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("read /proc/self/cgroup: {e}"))?;
    let path = own.lines().find_map(|line| line.strip_prefix("0::")).ok_or("not in a cgroup v2")?;
    Ok(Path::new(mount).join(path.trim_start_matches('/')))
}

impl Cgroup {
    fn create(cpus: &[usize]) -> Result<Cgroup, String> {
        let parent = own_cgroup()?;
        let n = CGROUPS_MADE.fetch_add(1, Ordering::SeqCst);
        let dir = parent.join(format!("acceptlab-bench-{}-{n}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        // Only where the cpuset controller is already enabled for lab-bench's cgroup's children:
        // enabling it would change the machine's cgroup tree, which lab-bench leaves as it found it.
        let enabled = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
        let cpuset = enabled.split_whitespace().any(|c| c == "cpuset")
            && fs::write(dir.join("cpuset.cpus"), cpus_text(cpus)).is_ok();
        Ok(Cgroup { dir, cpuset })
    }

    /// The cgroups' path, their numbers left out: `.../acceptlab-bench-PID-*`.
    fn pattern(&self) -> String {
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        format!("{}/acceptlab-bench-{}-*", parent.display(), std::process::id())
    }

    fn procs(&self) -> Vec<u32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect()
    }

    /// Kills every process in it (cgroup.kill where the kernel has it, else each one) until none is
    /// left and it is removed, or `patience` passes (a process killed leaves the listing before it
    /// has quite left the cgroup: the removal is tried again until then).
    fn kill_all(&self, patience: Duration) {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let procs = self.procs();
            if procs.is_empty() && fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            if !procs.is_empty() && fs::write(self.dir.join("cgroup.kill"), "1").is_err() {
                for pid in procs {
                    signal(pid, Signal::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Kills what is left in this lab-bench's cgroups and removes them: for a signal's stop, which ends
/// the process without running the servers' own stops.
pub fn remove_cgroups() {
    let Ok(parent) = own_cgroup() else { return };
    let prefix = format!("acceptlab-bench-{}-", std::process::id());
    for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            Cgroup { dir: entry.path(), cpuset: false }.kill_all(Duration::from_secs(2));
        }
    }
}

fn signal(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), signal);
    }
}

/// Whether `pid` is still running (a zombie is not).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X'])))
}

/// A running server of this module: its process tree, stopped when dropped.
pub struct Running {
    child: Child,
    pub addr: SocketAddr,
    id: String,
    dir: PathBuf,
    cgroup: Option<Cgroup>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Spawns `program args` from a thread pinned to `cpus`, in a process group of its own and, where
/// there is one, in `cgroup` (joined by a `sh` that writes its pid to cgroup.procs and then execs
/// the program, so that nothing it starts is outside).
fn spawn_pinned(
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    cpus: &[usize],
    cgroup: Option<&Cgroup>,
    dir: &Path,
) -> Result<Child, String> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu).map_err(|e| format!("CPU {cpu}: {e}"))?;
    }
    let log = |name: &str| {
        fs::File::create(dir.join(name)).map(Stdio::from).map_err(|e| format!("create {name}: {e}"))
    };
    let mut command = match cgroup {
        Some(cgroup) => {
            let mut command = Command::new("sh");
            command
                .args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
                .arg(cgroup.dir.join("cgroup.procs"))
                .arg(program);
            command
        }
        None => Command::new(program),
    };
    command.args(args).envs(env.iter().copied()).current_dir(dir).stdin(Stdio::null());
    command.stdout(log("stdout.log")?).stderr(log("stderr.log")?);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // The child inherits the spawning thread's affinity: only this thread's is changed.
                sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("sched_setaffinity: {e}"))?;
                command.spawn().map_err(|e| format!("spawn {}: {e}", program.display()))
            })
            .join()
            .unwrap_or_else(|_| Err("the spawning thread panicked".into()))
    })
}

/// Starts row `id` (a real system or a user's server) with `workers` on `cpus` on a port the kernel picked on `ip`, in a
/// fresh directory under `scratch`, and waits until it accepts connections (and, for Node, until
/// every worker listens).
pub fn start(
    id: &str,
    spec: &Spec,
    workers: usize,
    cpus: &[usize],
    scratch: &Path,
    ip: IpAddr,
) -> Result<Running, String> {
    let port = TcpListener::bind((ip, 0))
        .and_then(|probe| probe.local_addr())
        .map_err(|e| format!("bind {ip}:0 (to pick a port): {e}"))?
        .port();
    let addr = SocketAddr::new(ip, port);
    let dir = scratch.join(format!("{}-{port}", id));
    fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let write = |name: &str, text: &str| {
        fs::write(dir.join(name), text).map_err(|e| format!("write {}: {e}", dir.join(name).display()))
    };
    // The program, its arguments, its environment, and the file it writes once ready (Node's cluster).
    type Invocation = (PathBuf, Vec<String>, Vec<(&'static str, &'static str)>, Option<PathBuf>);
    let (program, args, env, ready): Invocation = match spec {
        Spec::User { command } => {
            let line = substitute(command, addr, workers, cpus);
            (PathBuf::from("sh"), vec!["-c".into(), line], vec![], None)
        }
        Spec::System(system) => {
            let binary =
                find(system.program()).ok_or_else(|| format!("{} is not installed", system.program()))?;
            match system {
                System::NodeOne | System::NodeRr | System::NodeNone => {
                    write("server.js", NODE_SCRIPT)?;
                    let workers = if *system == System::NodeOne { 0 } else { workers };
                    let policy = if *system == System::NodeNone { "none" } else { "rr" };
                    let args =
                        vec!["server.js".into(), ip.to_string(), port.to_string(), workers.to_string()];
                    (binary, args, vec![("NODE_CLUSTER_SCHED_POLICY", policy)], Some(dir.join("ready")))
                }
                System::ApacheEvent => {
                    write("hello.txt", "Hello, World!")?;
                    write("httpd.conf", &apache_conf(workers, addr, &dir, &apache_modules(&binary)))?;
                    let conf = dir.join("httpd.conf").display().to_string();
                    (binary, vec!["-f".into(), conf, "-DFOREGROUND".into()], vec![], None)
                }
                System::Haproxy => {
                    write("haproxy.cfg", &haproxy_conf(workers, cpus, addr))?;
                    let conf = dir.join("haproxy.cfg").display().to_string();
                    (binary, vec!["-f".into(), conf, "-db".into()], vec![], None)
                }
            }
        }
    };
    let (cgroup, held) = match Cgroup::create(cpus) {
        Ok(cgroup) if cgroup.cpuset => {
            let how = format!("a cgroup v2 of its own ({}), its cpuset.cpus the server CPUs", cgroup.pattern());
            (Some(cgroup), how)
        }
        Ok(cgroup) => {
            let how = format!(
                "a cgroup v2 of its own ({}) to find and stop every process; the cpuset controller not enabled \
                 there, so pinned by affinity, inherited from the thread that started it",
                cgroup.pattern()
            );
            (Some(cgroup), how)
        }
        Err(reason) => (
            None,
            format!(
                "no cgroup ({reason}): pinned by affinity, inherited from the thread that started it; stopped \
                 through its process group and process tree"
            ),
        ),
    };
    *CONTAINMENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
    let child = match spawn_pinned(&program, &args, &env, cpus, cgroup.as_ref(), &dir) {
        Ok(child) => child,
        Err(reason) => {
            if let Some(cgroup) = &cgroup {
                cgroup.kill_all(Duration::from_secs(1));
            }
            return Err(reason);
        }
    };
    let mut running = Running { child, addr, id: id.to_string(), dir, cgroup };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() || ready.as_ref().is_some_and(|file| !file.exists()) {
        let exited = running.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = |name: &str| fs::read_to_string(running.dir.join(name)).unwrap_or_default();
            let tail: Vec<String> = [log("stderr.log"), log("error.log")]
                .iter()
                .flat_map(|l| l.lines().map(str::to_owned))
                .collect();
            let tail = tail[tail.len().saturating_sub(5)..].join(" | ");
            let why = match exited {
                Some(status) => format!("exited with {status}"),
                None => "not accepting connections after 10 s".into(),
            };
            return Err(format!("{} on {addr}: {why}: {tail}", id));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Spec::System(_) = spec {
        hello(addr).map_err(|reason| format!("{id} on {addr}: GET /: {reason}"))?;
    }
    Ok(running)
}

/// One `GET /` on a connection of its own: the real systems are configured to answer it as the
/// project's servers do, 200 and `Hello, World!`.
fn hello(addr: SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| format!("read: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or("");
    if status.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nHello, World!") {
        Ok(())
    } else {
        Err(format!("want 200 and `Hello, World!`, got {:?}", answer.chars().take(200).collect::<String>()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.child.id();
        let tree = labkit::process_tree(pid);
        // SIGTERM first: nginx-like servers stop their workers; then whatever is left is killed.
        signal(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let group = i32::try_from(pid).map(|p| Pid::from_raw(-p));
        if let Ok(group) = group {
            let _ = kill(group, Signal::SIGKILL);
        }
        for &p in &tree {
            signal(p, Signal::SIGKILL);
        }
        let _ = self.child.wait();
        let mut left: Vec<u32> = Vec::new();
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all(Duration::from_secs(3));
            left.extend(cgroup.procs());
            if cgroup.dir.exists() {
                LEFT_BEHIND.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                    "{}: cgroup {} not removed",
                    self.id,
                    cgroup.dir.display()
                ));
            }
        }
        // The tree as it was, and the process group: both gone (give the kills a moment to land).
        let deadline = Instant::now() + Duration::from_secs(2);
        let still = |p: &u32| alive(*p);
        while Instant::now() < deadline && tree.iter().any(still) {
            std::thread::sleep(Duration::from_millis(10));
        }
        left.extend(tree.iter().copied().filter(still));
        left.sort_unstable();
        left.dedup();
        if !left.is_empty() {
            LEFT_BEHIND
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{}: pids {left:?} still running after SIGKILL", self.id));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_arguments_are_checked_and_substituted() {
        let (name, command) = parse_server("py=python3 srv.py {addr} {workers}").unwrap();
        assert_eq!(name, "py");
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        assert_eq!(substitute(&command, addr, 2, &[0, 1]), "python3 srv.py 127.0.0.1:8080 2");
        assert_eq!(substitute("x --port {port} --cpus {cpus}", addr, 1, &[3]), "x --port 8080 --cpus 3");
        assert!(parse_server("no-command").is_err());
        assert!(parse_server("real-x=x").is_err());
        assert!(parse_server("a b=x").is_err());
    }

    #[test]
    fn configurations_say_what_the_rows_do() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let apache = apache_conf(64, addr, Path::new("/tmp/x"), Path::new("/usr/lib/apache2/modules"));
        for line in ["ThreadsPerChild 64", "MaxKeepAliveRequests 0", "ServerLimit 1", "Listen 127.0.0.1:8080"]
        {
            assert!(apache.contains(line), "{line} in {apache}");
        }
        assert!(!apache.contains("CustomLog"), "no access log");
        assert_eq!(
            apache_modules(Path::new("/x/.lab/root/usr/sbin/apache2")),
            Path::new("/x/.lab/root/usr/lib/apache2/modules")
        );
        let haproxy = haproxy_conf(2, &[4, 5], addr);
        for line in ["nbthread 2", "cpu-map 1/1 4", "cpu-map 1/2 5", "http-request return status 200"] {
            assert!(haproxy.contains(line), "{line} in {haproxy}");
        }
        let words: Vec<&str> = haproxy.lines().filter_map(|l| l.split_whitespace().next()).collect();
        assert!(!words.contains(&"backend") && !words.contains(&"log"), "no backend, no log: {haproxy}");
    }

    #[test]
    fn real_systems_run_only_when_named() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!named(&[], System::NodeRr), "make bench's default run leaves them out");
        assert!(named(&names(&["real"]), System::Haproxy));
        assert!(named(&names(&["real-node"]), System::NodeNone));
        assert!(!named(&names(&["real-node-1"]), System::NodeRr));
    }
}
