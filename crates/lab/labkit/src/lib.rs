#![forbid(unsafe_code)]
//! The black-box harness shared by the conformance and fault suites, lab-bench and lab-exp: one table of server binaries, a
//! way to start one on a port the kernel picks and to stop it, and a small blocking HTTP/1.1 client
//! that sends raw bytes and reads back exactly one response at a time.
//!
//! Every test runs against every row of [`SERVERS`] through [`for_each_server`], so putting a new
//! architecture under both suites is one line in that table.

use std::collections::VecDeque;
use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub mod fairness;
pub mod nginx;
pub mod tls;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// One server under test: the row's name, its binary, the arguments that pick its variant, and
/// whether the architecture is one thread by design (`--workers` above 1 is then an error).
#[derive(Debug)]
pub struct Server {
    pub name: &'static str,
    pub bin: &'static str,
    pub args: &'static [&'static str],
    pub single_threaded: bool,
}

/// Every server the suites run against, one row per line.
#[rustfmt::skip]
pub const SERVERS: &[Server] = &[
    Server { name: "epoll", bin: "lab-epoll", args: &[], single_threaded: true },
    Server { name: "memcached", bin: "lab-memcached", args: &["--workers", "2"], single_threaded: false },
    Server { name: "ramcloud", bin: "lab-ramcloud", args: &["--workers", "2"], single_threaded: false },
    Server { name: "nginx-mutex", bin: "lab-nginx", args: &["--workers", "2", "--accept", "mutex"], single_threaded: false },
    Server { name: "nginx-exclusive", bin: "lab-nginx", args: &["--workers", "2", "--accept", "exclusive"], single_threaded: false },
    Server { name: "nginx-herd", bin: "lab-nginx", args: &["--workers", "2", "--accept", "herd"], single_threaded: false },
    Server { name: "reuseport", bin: "lab-reuseport", args: &["--workers", "2"], single_threaded: false },
    Server { name: "reuseport-load", bin: "lab-reuseport", args: &["--workers", "2", "--steer", "load"], single_threaded: false },
    Server { name: "oneshot", bin: "lab-oneshot", args: &["--workers", "2"], single_threaded: false },
    Server { name: "uring", bin: "lab-uring", args: &["--workers", "2"], single_threaded: false },
];

/// Whether a /stats worker of this `role` executes requests (docs/spec.md): `loop`, `worker` and
/// `process` do; `acceptor` and `dispatcher` only hand work out, and `shared` (lab-oneshot's) only
/// counts what no thread owns: the listener and the connections.
pub fn executes_requests(role: &str) -> bool {
    !matches!(role, "acceptor" | "dispatcher" | "shared")
}

impl Server {
    /// A server that is not a row of [`SERVERS`]: the binary `bin` with `args`.
    pub const fn other(name: &'static str, bin: &'static str, args: &'static [&'static str]) -> Server {
        Server { name, bin, args, single_threaded: false }
    }

    /// Why this row cannot run on this machine, if it cannot: lab-uring where this process may not
    /// make an io_uring (old kernel, `kernel.io_uring_disabled`, a seccomp profile), lab-reuseport
    /// with an eBPF program (`--steer load`, `--migrate on`) where it may not load one (no
    /// `CAP_BPF`), with the refusal as the server would print it.
    pub fn unavailable(&self) -> Option<String> {
        let ebpf =
            self.args.windows(2).any(|pair| pair == ["--steer", "load"] || pair == ["--migrate", "on"]);
        match self.bin {
            "lab-uring" => sys::uring::probe().err().map(|e| e.to_string()),
            "lab-reuseport" if ebpf => sys::bpf::probe().err().map(|e| e.to_string()),
            _ => None,
        }
    }

    /// The `arch` the binary reports in /stats: its name without the `lab-` prefix.
    pub fn arch(&self) -> &'static str {
        self.bin.strip_prefix("lab-").unwrap_or(self.bin)
    }
}

/// Runs `test` once for every row of [`SERVERS`], each in its own thread named after the row, and
/// fails naming every row whose run panicked.
///
/// A row this machine cannot run (lab-uring where io_uring is refused: see [`Server::unavailable`])
/// is skipped, loudly: a `SKIPPED` line on the real stderr, which the test harness does not capture.
/// With `ACCEPTLAB_REQUIRE_ALL_ROWS=1` (CI, where io_uring works) a skip is a failure instead.
pub fn for_each_server(test: impl Fn(&Server) + Sync) {
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for server in SERVERS {
        match runs_here(server) {
            Ok(true) => rows.push((server.name.to_string(), server)),
            Ok(false) => {}
            Err(failure) => failures.push((server.name.to_string(), failure)),
        }
    }
    failures.extend(run_threads(rows, test));
    let failures: Vec<String> =
        failures.into_iter().map(|(row, message)| format!("server row `{row}`: {message}")).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Whether a test should run `server` here: `Ok(true)` if it can; `Ok(false)` if it cannot (lab-uring
/// where io_uring is refused), after saying so with [`skipped`]; `Err` naming why if it cannot and
/// `ACCEPTLAB_REQUIRE_ALL_ROWS=1` (CI) says every row must run.
pub fn runs_here(server: &Server) -> Result<bool, String> {
    match server.unavailable() {
        None => Ok(true),
        Some(reason) if env::var_os("ACCEPTLAB_REQUIRE_ALL_ROWS").is_some_and(|v| v == "1") => {
            Err(format!("cannot run here ({reason}) and ACCEPTLAB_REQUIRE_ALL_ROWS=1"))
        }
        Some(reason) => {
            skipped(server, &reason);
            Ok(false)
        }
    }
}

/// Says on the real stderr (not the harness's captured one) that `server`'s row was not run, and why.
pub fn skipped(server: &Server, reason: &str) {
    let thread = thread::current();
    let _ = writeln!(
        io::stderr(),
        "SKIPPED server row `{}` in {}: {reason} (ACCEPTLAB_REQUIRE_ALL_ROWS=1 makes this a failure)",
        server.name,
        thread.name().unwrap_or("a test"),
    );
}

/// Runs `task` on every item at once, one thread each, and fails with the first failure's message
/// and how many failed.
pub fn in_parallel<T: Send>(items: Vec<T>, task: impl Fn(usize, T) + Sync) {
    let count = items.len();
    let named = items.into_iter().enumerate().map(|(i, item)| (format!("client {i}"), (i, item))).collect();
    let failures = run_threads(named, |(i, item)| task(i, item));
    if let Some((name, message)) = failures.first() {
        panic!("{} of {count} failed; {name}: {message}", failures.len());
    }
}

/// Runs `task` on each item in a thread of the given name; returns the name and panic message of
/// every run that panicked.
fn run_threads<T: Send>(items: Vec<(String, T)>, task: impl Fn(T) + Sync) -> Vec<(String, String)> {
    let task = &task;
    thread::scope(|scope| {
        let runs: Vec<_> = items
            .into_iter()
            .map(|(name, item)| {
                let run = thread::Builder::new()
                    .name(name.clone())
                    .spawn_scoped(scope, move || task(item))
                    .expect("spawn a test thread");
                (name, run)
            })
            .collect();
        runs.into_iter()
            .filter_map(|(name, run)| {
                let panic = run.join().err()?;
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                    .unwrap_or_else(|| "(panic without a message)".to_string());
                Some((name, message))
            })
            .collect()
    })
}

/// `len` bytes that run through every byte value, so that a path that stops at NUL or expects
/// text shows.
pub fn binary_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Where the binary `bin` was built: in `$ACCEPTLAB_BIN_DIR` when set, else beside the running
/// executable (lab-bench in `target/release` or `.lab/bin`), else the workspace's `target/release`,
/// else its `target/debug`.
pub fn bin_path(bin: &str) -> PathBuf {
    find_bin(bin).unwrap_or_else(|reason| panic!("{reason}"))
}

/// `bin` with `args`, run to its end in a child that may not make an io_uring (`io_uring_setup`
/// fails with EPERM, as under a container's seccomp profile): its exit status, stdout and stderr.
pub fn run_without_io_uring(
    bin: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> std::process::Output {
    let mut command = Command::new(bin);
    command.args(args).envs(envs.iter().copied()).stdin(Stdio::null());
    sys::process::deny_io_uring_setup(&mut command);
    command.output().unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}

/// `bin` with `args`, run to its end in a child whose `bpf(2)` fails with EPERM (as without
/// `CAP_BPF`): its exit status, stdout and stderr. A server that starts is stopped after `for_`.
pub fn run_without_bpf(bin: &std::path::Path, args: &[&str], for_: Duration) -> std::process::Output {
    let mut command = Command::new(bin);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    sys::process::deny_system_call(&mut command, nix::libc::SYS_bpf);
    let mut child = command.spawn().unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    let ended = eventually(for_, || child.try_wait().ok().flatten().is_some());
    if !ended {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("wait {}: {e}", bin.display()))
}

/// [`bin_path`], with an error instead of a panic.
pub fn find_bin(bin: &str) -> Result<PathBuf, String> {
    let dirs = match env::var_os("ACCEPTLAB_BIN_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../target");
            let beside = env::current_exe().ok().and_then(|exe| exe.parent().map(PathBuf::from));
            beside.into_iter().chain([target.join("release"), target.join("debug")]).collect()
        }
    };
    dirs.iter()
        .map(|dir| dir.join(bin))
        .find(|path| path.is_file())
        .ok_or_else(|| format!("{bin} is not in {dirs:?}: build first: cargo build --release --bins"))
}

/// A pipe of the child's, collected by a thread as it arrives.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<(Vec<u8>, bool)>>);

impl Captured {
    /// Starts the thread that copies `pipe` here until end of file.
    fn collect(mut pipe: impl Read + Send + 'static) -> Captured {
        let captured = Captured::default();
        let sink = captured.clone();
        thread::spawn(move || {
            let mut chunk = [0; 4096];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => sink.0.lock().unwrap().0.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            sink.0.lock().unwrap().1 = true;
        });
        captured
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap().0).into_owned()
    }

    /// The whole text once the pipe reaches end of file, or what came within `timeout`.
    fn text_at_eof(&self, timeout: Duration) -> String {
        eventually(timeout, || self.0.lock().unwrap().1);
        self.text()
    }
}

/// A server process started by [`spawn`]; killed, with every process it started, when dropped.
pub struct Running {
    child: Child,
    command_line: String,
    listen_addr: SocketAddr,
    stdout_rest: Captured,
    stderr: Captured,
}

/// Starts `server` on `127.0.0.1:0` (unless `extra_args` names an `--addr`) with `extra_args`, and
/// waits for its `listening on IP:PORT` line. Keep the result bound to a name: dropping it kills
/// the server.
pub fn spawn(server: &Server, extra_args: &[&str]) -> Running {
    Running::start(command(bin_path(server.bin), server, extra_args, None))
}

/// Like [`spawn`], with the open-file limit (`ulimit -n`) lowered to `limit` first.
pub fn spawn_with_fd_limit(server: &Server, extra_args: &[&str], limit: u32) -> Running {
    Running::start(command(bin_path(server.bin), server, extra_args, Some(limit)))
}

/// Like [`spawn`], but the debug build of the server (`target/debug`), which has the injected faults
/// that release builds compile out (`GET /debug/panic`, and `ACCEPTLAB_FAULT` among `env`). `make
/// test` builds it; without it, this fails saying how to.
pub fn spawn_debug_build(server: &Server, extra_args: &[&str], env: &[(&str, &str)]) -> Running {
    let debug = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../target/debug").join(server.bin);
    assert!(
        debug.is_file(),
        "{} is not built: cargo build --bins (make test builds the debug servers before the tests)",
        debug.display()
    );
    let mut command = command(debug, server, extra_args, None);
    command.envs(env.iter().copied());
    Running::start(command)
}

/// Starts the lab binary `bin` (found by [`bin_path`]) with exactly `args` and waits for its
/// `listening on IP:PORT` line; for callers that build command lines at run time (lab-bench,
/// lab-exp) and want an error to report instead of a panic.
pub fn launch(bin: &str, args: &[String]) -> Result<Running, String> {
    let path = find_bin(bin)?;
    let mut command = Command::new(path);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    Running::try_start(command)
}

/// How a server run to its end by [`run_to_exit`] ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `server` with `extra_args` (for a command line it should refuse) until it exits; fails if it
/// is still running after `timeout`.
pub fn run_to_exit(server: &Server, extra_args: &[&str], timeout: Duration) -> Finished {
    let mut command = command(bin_path(server.bin), server, extra_args, None);
    let command_line = format!("{command:?}");
    let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {command_line}: {e}"));
    let stdout = Captured::collect(child.stdout.take().unwrap());
    let stderr = Captured::collect(child.stderr.take().unwrap());
    let Some(status) = wait_child(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command_line} still running after {timeout:?}; stderr: {:?}", stderr.text());
    };
    let eof = Duration::from_secs(2);
    Finished { status, stdout: stdout.text_at_eof(eof), stderr: stderr.text_at_eof(eof) }
}

/// The command line that starts `server` from the binary `bin`.
fn command(bin: PathBuf, server: &Server, extra_args: &[&str], fd_limit: Option<u32>) -> Command {
    let mut command = match fd_limit {
        None => Command::new(bin),
        Some(limit) => {
            let mut shell = Command::new("sh");
            shell.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(bin);
            shell
        }
    };
    command.args(server.args);
    // Only one --addr: a command-line parser may refuse a repeated flag.
    if !extra_args.contains(&"--addr") {
        command.args(["--addr", "127.0.0.1:0"]);
    }
    command.args(extra_args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid on a server") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

impl Running {
    fn start(command: Command) -> Running {
        Running::try_start(command).unwrap_or_else(|reason| panic!("{reason}"))
    }

    /// Starts `command` (stdout and stderr piped) and waits up to 10 s for its first stdout line,
    /// `listening on IP:PORT`; the error says what came instead, with the exit status and stderr.
    fn try_start(mut command: Command) -> Result<Running, String> {
        let command_line = format!("{command:?}");
        let mut child = command.spawn().map_err(|e| format!("spawn {command_line}: {e}"))?;
        let stderr = Captured::collect(child.stderr.take().expect("stderr is piped"));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (first_line_tx, first_line_rx) = mpsc::channel();
        let stdout_rest = Captured::default();
        let sink = stdout_rest.clone();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = first_line_tx.send(line);
            let mut rest = Vec::new();
            let _ = stdout.read_to_end(&mut rest);
            *sink.0.lock().unwrap() = (rest, true);
        });
        let mut running = Running {
            child,
            command_line,
            listen_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            stdout_rest,
            stderr,
        };
        let line = first_line_rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        match line
            .strip_prefix("listening on ")
            .and_then(|addr| addr.strip_suffix('\n'))
            .and_then(|a| a.parse().ok())
        {
            Some(addr) => {
                running.listen_addr = addr;
                Ok(running)
            }
            None => {
                let status = running.wait_exit(Duration::from_millis(200));
                Err(format!(
                    "{}: first stdout line {line:?} is not `listening on IP:PORT` (exit: {status:?}); \
                     stderr: {:?}",
                    running.command_line,
                    running.stderr_text()
                ))
            }
        }
    }

    /// The address to connect to: the listening one, with an unspecified IP made loopback.
    pub fn addr(&self) -> SocketAddr {
        let mut addr = self.listen_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        addr
    }

    /// The address exactly as the `listening on` line gave it.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// Everything the server wrote to stderr, read to end of file (so call it once the server has
    /// exited; it waits at most 2 s).
    pub fn stderr_to_eof(&self) -> String {
        self.stderr.text_at_eof(Duration::from_secs(2))
    }

    /// Stderr once `done` holds for it, or as it stands after `timeout`.
    pub fn wait_stderr(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        eventually(timeout, || done(&self.stderr.text()));
        self.stderr.text()
    }

    /// What the server wrote to stdout after its first line, read to end of file (so call it once
    /// the server has exited).
    pub fn stdout_after_first_line(&self) -> String {
        self.stdout_rest.text_at_eof(Duration::from_secs(2))
    }

    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    pub fn sigint(&self) {
        self.signal(Signal::SIGINT);
    }

    fn signal(&self, signal: Signal) {
        kill(pid_of(self.pid()), signal).unwrap_or_else(|e| panic!("kill {signal}: {e}"));
    }

    /// The exit status, if the server exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// Whether the server process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("waitpid on a server").is_none()
    }

    /// A fresh connection to the server.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    /// A fresh connection to the server over TLS, the handshake done (see [`tls::TestCert`]).
    pub fn connect_tls(&self, tls: &Arc<rustls::ClientConfig>) -> Client {
        Client::connect_tls(self.addr(), tls).unwrap_or_else(|e| panic!("TLS connect {}: {e}", self.addr()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.is_running() {
            // Worker processes (reuseport) would otherwise outlive a killed supervisor.
            for pid in process_tree(self.pid()) {
                let _ = kill(pid_of(pid), Signal::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).expect("a pid fits in pid_t"))
}

/// `pid` and every process below it, read from `/proc/PID/task/TID/children`.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut to_visit = VecDeque::from([pid]);
    while let Some(pid) = to_visit.pop_front() {
        found.push(pid);
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            to_visit.extend(children.split_whitespace().filter_map(|child| child.parse::<u32>().ok()));
        }
    }
    found
}

/// One thread of a server's process tree, as the kernel sees it.
#[derive(Debug, Clone)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
    /// The CPUs the thread may run on (`Cpus_allowed_list` of `/proc/PID/task/TID/status`).
    pub cpus: Vec<usize>,
    /// User plus system time so far, in clock ticks (`/proc/PID/task/TID/stat`).
    pub cpu_ticks: u64,
    /// The thread's state: `R` running or runnable, `S` asleep waiting for something, ... (proc(5)).
    pub state: char,
    /// The CPU the thread last ran on (`processor` of `/proc/PID/task/TID/stat`).
    pub last_cpu: usize,
    /// How often the thread went to sleep so far (`voluntary_ctxt_switches`): a thread woken in the
    /// kernel that finds nothing to do and sleeps again counts one, even if it never leaves the call.
    pub sleeps: u64,
}

/// Every thread of `pid` and of every process below it.
pub fn tasks(pid: u32) -> Vec<Task> {
    let mut found = Vec::new();
    for pid in process_tree(pid) {
        let Ok(entries) = fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for entry in entries.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                continue;
            };
            // A thread may end between the listing and the reads; it is then left out.
            let Ok(status) = fs::read_to_string(entry.path().join("status")) else { continue };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
            let cpus = status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .map(|list| parse_cpu_list(list.trim()))
                .unwrap_or_else(|| panic!("no Cpus_allowed_list for task {tid} of {pid}: {status}"));
            let cpu_ticks = stat_ticks(&stat)
                .unwrap_or_else(|| panic!("no utime/stime in /proc/{pid}/task/{tid}/stat: {stat}"));
            let sleeps = status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|count| count.trim().parse().ok())
                .unwrap_or_else(|| panic!("no voluntary_ctxt_switches for task {tid} of {pid}: {status}"));
            let last_cpu = stat_field(&stat, 39)
                .unwrap_or_else(|| panic!("no processor in /proc/{pid}/task/{tid}/stat: {stat}"));
            let state = stat_field::<char>(&stat, 3)
                .unwrap_or_else(|| panic!("no state in /proc/{pid}/task/{tid}/stat: {stat}"));
            found.push(Task { pid, tid, cpus, cpu_ticks, state, last_cpu, sleeps });
        }
    }
    found
}

/// Raises this process's open-file limit to its hard limit (the servers it starts inherit it), and
/// says so when even that is below the `wanted` descriptors a run needs.
pub fn raise_fd_limit(wanted: usize) -> Result<(), String> {
    let limit = sys::rlimit::raise_nofile_limit().map_err(|e| e.to_string())?;
    match limit < wanted as u64 {
        true => Err(format!("the hard limit on open files is {limit}, below the {wanted} this run needs")),
        false => Ok(()),
    }
}

/// The CPUs this process may run on (`sched_getaffinity`); CPU 0 alone if that cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    sys::cpu::allowed_cpus().ok().filter(|cpus| !cpus.is_empty()).unwrap_or_else(|| vec![0])
}

/// [`allowed_cpus`] split between a server and the load on it: the first half and the rest (on one
/// CPU, both get it). lab-bench's default placement, and lab-soak's for its idle check.
pub fn server_and_client_cpus() -> (Vec<usize>, Vec<usize>) {
    let allowed = allowed_cpus();
    match allowed.len() {
        1 => (allowed.clone(), allowed),
        n => (allowed[..n / 2].to_vec(), allowed[n / 2..].to_vec()),
    }
}

/// A CPU list as the kernel writes it (`0-3,8`), expanded.
pub fn parse_cpu_list(list: &str) -> Vec<usize> {
    try_parse_cpu_list(list).unwrap_or_else(|reason| panic!("{reason}"))
}

/// [`parse_cpu_list`], with an error for a malformed list.
pub fn try_parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let number = |text: &str| text.trim().parse::<usize>().map_err(|_| format!("bad CPU list {list:?}"));
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|part| !part.trim().is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => cpus.extend(number(first)?..=number(last)?),
            None => cpus.push(number(part)?),
        }
    }
    Ok(cpus)
}

/// utime + stime, in clock ticks, from a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    // utime and stime are fields 14 and 15 of proc(5).
    Some(stat_field::<u64>(stat, 14)? + stat_field::<u64>(stat, 15)?)
}

/// Field `number` (counted from 1, as proc(5) does) of a `/proc/.../stat` line, from field 3 on.
fn stat_field<T: std::str::FromStr>(stat: &str, number: usize) -> Option<T> {
    // The command name (field 2) may hold spaces; the fields after it are plain words.
    stat.rsplit_once(')')?.1.split_whitespace().nth(number.checked_sub(3)?)?.parse().ok()
}

/// Resident memory of `pid` and its descendants, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    process_tree(pid)
        .iter()
        .filter_map(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// CPU time (user + system) used so far by `pid` and its descendants.
pub fn cpu_time(pid: u32) -> Duration {
    // /proc counts in USER_HZ, sysconf(_SC_CLK_TCK), which is 100 on every architecture Rust targets.
    const TICKS_PER_SECOND: u64 = 100;
    let ticks: u64 = process_tree(pid)
        .iter()
        .filter_map(|pid| stat_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?))
        .sum();
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// Polls `condition` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on HTTP/1.1.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: acceptlab\r\n\r\n").into_bytes()
}

/// `POST /echo` with `body` framed by Content-Length.
pub fn echo(body: &[u8]) -> Vec<u8> {
    let mut request =
        format!("POST /echo HTTP/1.1\r\nHost: acceptlab\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    request.extend_from_slice(body);
    request
}

/// `POST /echo` with a chunked body, one chunk per element of `chunks`.
pub fn echo_chunked(chunks: &[&[u8]]) -> Vec<u8> {
    let mut request =
        b"POST /echo HTTP/1.1\r\nHost: acceptlab\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in chunks {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// One HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails showing the body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// A blocking HTTP/1.1 client over one connection: raw bytes out, one parsed response at a time in;
/// over TLS when made with [`Client::connect_tls`].
pub struct Client {
    stream: TcpStream,
    /// The TLS session over `stream`, for an HTTPS server (`--tls-cert`).
    tls: Option<Box<rustls::ClientConnection>>,
    /// Bytes read from the socket that no response has consumed yet.
    unparsed: Vec<u8>,
    at_eof: bool,
}

/// How long the client waits for the server before a read or write fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    /// Connects to `addr`, failing the test if that does not work.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        Client::over(TcpStream::connect_timeout(&addr, IO_TIMEOUT)?)
    }

    /// A client over a stream connected some other way (e.g. with socket options set before
    /// `connect`), with the same settings as [`Client::connect`]'s.
    pub fn over(stream: TcpStream) -> io::Result<Client> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Client { stream, tls: None, unparsed: Vec::new(), at_eof: false })
    }

    /// Connects to `addr` over TLS, trusting what `tls` trusts; the handshake completes before it
    /// returns.
    pub fn connect_tls(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> io::Result<Client> {
        let mut client = Client::try_connect(addr)?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut conn = rustls::ClientConnection::new(Arc::clone(tls), name).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut client.stream)?;
        }
        client.tls = Some(Box::new(conn));
        Ok(client)
    }

    /// Whether this connection's TLS session was resumed (`None`: not TLS).
    pub fn tls_resumed(&self) -> Option<bool> {
        self.tls.as_ref().map(|tls| tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).expect("setsockopt SO_RCVTIMEO");
    }

    /// Writes all of `bytes`, failing the test if the server does not take them.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).unwrap_or_else(|e| panic!("send {} bytes: {e}", bytes.len()));
    }

    /// Writes all of `bytes`; the server may have closed the connection by then.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.tls {
            None => self.stream.write_all(bytes),
            Some(tls) => {
                let mut stream = rustls::Stream::new(tls.as_mut(), &mut self.stream);
                stream.write_all(bytes)?;
                stream.flush()
            }
        }
    }

    /// Sends `bytes` and reads one response.
    pub fn request(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes);
        self.read_response()
    }

    /// `GET path` and its response.
    pub fn get(&mut self, path: &str) -> Response {
        self.request(&get(path))
    }

    /// `GET /stats`, checked to be a 200, as JSON.
    pub fn stats(&mut self) -> Value {
        let response = self.get("/stats");
        assert_eq!(response.status, 200, "GET /stats: {response:?}");
        response.json()
    }

    /// `GET /stats` as JSON, with an error instead of a panic (for lab-bench and lab-exp).
    pub fn try_stats(&mut self) -> io::Result<Value> {
        self.try_send(&get("/stats"))?;
        let response = self.try_read_response(false)?;
        if response.status != 200 {
            return Err(io::Error::other(format!("GET /stats: status {}", response.status)));
        }
        serde_json::from_slice(&response.body).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))
    }

    /// Reads one response to a request that may carry a body.
    pub fn read_response(&mut self) -> Response {
        self.read(false)
    }

    /// Reads one response to a HEAD request: headers only, whatever Content-Length says.
    pub fn read_head_response(&mut self) -> Response {
        self.read(true)
    }

    fn read(&mut self, head: bool) -> Response {
        self.try_read_response(head).unwrap_or_else(|e| {
            panic!("reading a response: {e}; bytes received: {:?}", String::from_utf8_lossy(&self.unparsed))
        })
    }

    /// Reads one response, `head` telling whether it answers a HEAD request.
    pub fn try_read_response(&mut self, head: bool) -> io::Result<Response> {
        loop {
            let parsed = parse_response(&self.unparsed, head, self.at_eof)
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            if let Some((response, length)) = parsed {
                self.unparsed.drain(..length);
                return Ok(response);
            }
            if self.at_eof {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            self.read_more()?;
        }
    }

    /// Waits for the next bytes from the server and keeps them for the responses to come.
    pub fn read_more(&mut self) -> io::Result<()> {
        let mut chunk = [0; 64 * 1024];
        let n = loop {
            // A read with SO_RCVTIMEO fails with EINTR when this process is stopped and continued,
            // even with no signal handler (signal(7)): that is not the server's doing.
            let read = match &mut self.tls {
                None => self.stream.read(&mut chunk),
                // A server that closes without a close_notify ends the stream all the same here.
                Some(tls) => match rustls::Stream::new(tls.as_mut(), &mut self.stream).read(&mut chunk) {
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
                    read => read,
                },
            };
            match read {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                read => break read?,
            }
        };
        self.unparsed.extend_from_slice(&chunk[..n]);
        self.at_eof = n == 0;
        Ok(())
    }

    /// Whether the server closes the connection (end of file or reset) within `timeout`, with no
    /// bytes beyond those already read; fails the test if more bytes arrive.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.at_eof {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.set_read_timeout(left);
            match self.read_more() {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
                Err(e) => panic!("read while waiting for the server to close: {e}"),
            }
        }
        assert!(
            self.unparsed.is_empty(),
            "expected the server to close, it sent more: {:?}",
            String::from_utf8_lossy(&self.unparsed)
        );
        true
    }

    /// Fails the test unless the server closes the connection within 3 s.
    pub fn expect_closed(&mut self) {
        assert!(self.closed_within(Duration::from_secs(3)), "the server kept the connection open");
    }

    /// Half-closes the connection: the server reads end of file, the client can still read.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown(SHUT_WR)");
    }
}

/// Parses one response at the start of `bytes`: `Ok(None)` while it is incomplete, else the
/// response and how many bytes it took. `at_eof` ends a body that runs to the close.
fn parse_response(bytes: &[u8], head: bool, at_eof: bool) -> Result<Option<(Response, usize)>, String> {
    let Some(header_end) = find(bytes, b"\r\n\r\n") else { return Ok(None) };
    let header =
        std::str::from_utf8(&bytes[..header_end]).map_err(|e| format!("header is not UTF-8: {e}"))?;
    let mut lines = header.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    let status = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default().to_string();
    if !version.starts_with("HTTP/") || status.len() != 3 {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = status.parse().map_err(|_| format!("bad status code in {status_line:?}"))?;
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
            Ok((name.to_string(), value.trim().to_string()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut response = Response { version, status, reason, headers, body: Vec::new() };
    let body_start = header_end + 4;
    let rest = &bytes[body_start..];
    let bodiless = head || (100..200).contains(&status) || status == 204 || status == 304;
    let body_length = if bodiless {
        Some(0)
    } else if response.header("Transfer-Encoding").is_some_and(|coding| coding.contains("chunked")) {
        match decode_chunked(rest)? {
            Some((body, length)) => {
                response.body = body;
                return Ok(Some((response, body_start + length)));
            }
            None => return Ok(None),
        }
    } else if let Some(length) = response.header("Content-Length") {
        Some(length.parse::<usize>().map_err(|_| format!("bad Content-Length {length:?}"))?)
    } else if at_eof {
        Some(rest.len())
    } else {
        None
    };
    match body_length {
        Some(length) if rest.len() >= length => {
            response.body = rest[..length].to_vec();
            Ok(Some((response, body_start + length)))
        }
        _ => Ok(None),
    }
}

/// Decodes a chunked body at the start of `bytes`: the body and the bytes it took, or `None` while
/// incomplete.
fn decode_chunked(bytes: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find(&bytes[at..], b"\r\n") else { return Ok(None) };
        let line = String::from_utf8_lossy(&bytes[at..at + line_end]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size line {line:?}"))?;
        at += line_end + 2;
        if size == 0 {
            // Trailer fields, if any, then the empty line.
            loop {
                let Some(line_end) = find(&bytes[at..], b"\r\n") else { return Ok(None) };
                at += line_end + 2;
                if line_end == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if bytes.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&bytes[at..at + size]);
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".to_string());
        }
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    /// Responses the client must frame, each with the body it carries.
    const RESPONSES: &[(&[u8], bool, &[u8])] = &[
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, b"hello"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n", true, b""),
        (b"HTTP/1.1 100 Continue\r\n\r\n", false, b""),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false, b""),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
            false,
            b"hello0123456789",
        ),
    ];

    #[test]
    fn every_truncated_prefix_is_incomplete_and_the_whole_is_framed() {
        for (bytes, head, body) in RESPONSES {
            for end in 0..bytes.len() {
                let parsed = parse_response(&bytes[..end], *head, false);
                assert!(matches!(parsed, Ok(None)), "prefix {end} of {bytes:?}: {parsed:?}");
            }
            let mut pipelined = bytes.to_vec();
            pipelined.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let (response, length) = parse_response(&pipelined, *head, false).unwrap().unwrap();
            assert_eq!((response.body.as_slice(), length), (*body, bytes.len()), "{bytes:?}");
        }
    }

    #[test]
    fn a_body_without_length_runs_to_the_close() {
        let bytes = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
        assert!(matches!(parse_response(bytes, false, false), Ok(None)));
        let (response, length) = parse_response(bytes, false, true).unwrap().unwrap();
        assert_eq!((response.body.as_slice(), length), (&b"until the end"[..], bytes.len()));
    }

    #[test]
    fn cpu_lists_expand_as_the_kernel_writes_them() {
        assert_eq!(super::parse_cpu_list("0-3,8"), vec![0, 1, 2, 3, 8]);
        assert_eq!(super::parse_cpu_list("1"), vec![1]);
        assert_eq!(super::parse_cpu_list("0,2-3"), vec![0, 2, 3]);
    }

    #[test]
    fn a_broken_status_line_is_an_error() {
        assert!(parse_response(b"HTTP/1.1 2000 OK\r\n\r\n", false, false).is_err());
        assert!(parse_response(b"garbage\r\n\r\n", false, false).is_err());
    }
}
