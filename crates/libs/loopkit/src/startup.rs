//! Starting a server: the listening socket, the first stdout line, the warnings, pinning, and the one
//! way a start-up failure ends the process.

use std::fmt::Display;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::{program_name, CommonArgs, Config};
use crate::listener::{Listener, PauseAfterFirst};
use crate::stats::{Stats, WorkerStats};

/// Opens the listening socket `config` asks for (`SO_REUSEPORT` with `reuse_port`), exiting 1 with
/// the failing call named if it cannot. With port 0, `addr` may name the port an earlier socket got.
pub fn listen(config: &Config, addr: SocketAddr, reuse_port: bool) -> Listener {
    let fd = sys::socket::listen_tcp(addr, config.backlog, reuse_port).unwrap_or_else(|e| fatal(e));
    let addr = sys::socket::local_addr(fd.as_fd()).unwrap_or_else(|e| fatal(e));
    let pause_after_first = config.pause_accept.map(|length| Arc::new(PauseAfterFirst::new(length)));
    Listener { addr, fd: Arc::new(fd), pause_after_first }
}

/// Resolves the common command line (a bad one exits 2 with the reason), loads the TLS certificate
/// and key if given (one that does not parse exits 1, naming the file) and checks the environment
/// it will run in (see [`check_environment`]): the first step of every server.
pub fn configure(args: &CommonArgs, max_workers: Option<usize>) -> Config {
    let mut config = args.resolve(max_workers).unwrap_or_else(|e| crate::config::usage_error(&e));
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(crate::tls::TlsServer::load(cert, key).unwrap_or_else(|e| fatal(e)));
    }
    check_environment(&config);
    config
}

/// The counters behind `/stats` for `slots` workers (see [`Stats::new`]), or exit 1.
pub fn stats(arch: &'static str, slots: usize, config: &Config, listeners: Vec<Listener>) -> Arc<Stats> {
    Stats::new(arch, slots, config.max_conns, listeners, &config.idempotency).unwrap_or_else(|e| fatal(e))
}

/// The warnings of docs/spec.md, on stderr: an address open to every interface, and a backlog the kernel
/// will cap. Also raises the open-files limit, since every connection is a file descriptor, and
/// refuses (exit 1) a `--cpus` list naming a CPU this process may not run on — before anything
/// listens, so that no server announces itself and then dies pinning a thread.
pub fn check_environment(config: &Config) {
    exit_on_panic();
    let name = program_name();
    if let (Some(cpus), Ok(allowed)) = (&config.cpus, sys::cpu::allowed_cpus()) {
        if let Some(cpu) = cpus.iter().find(|cpu| !allowed.contains(cpu)) {
            fatal(format!(
                "sched_setaffinity cpu {cpu}: Invalid argument (this process may run on CPUs {allowed:?})"
            ));
        }
    }
    if config.addr.ip().is_unspecified() {
        eprintln!(
            "{name}: warning: listening on {} makes this server reachable on every interface of the \
             machine; use 127.0.0.1 (the default) unless that is what you want",
            config.addr
        );
    }
    match sys::socket::somaxconn() {
        Ok(cap) if config.backlog > cap => eprintln!(
            "{name}: warning: --backlog {} is above net.core.somaxconn; the kernel caps it: the \
             accept queue holds at most {cap} connections",
            config.backlog
        ),
        Ok(_) => {}
        Err(e) => eprintln!("{name}: warning: {e}"),
    }
    match sys::rlimit::raise_nofile_limit() {
        Ok(limit) if limit < config.max_conns + 64 => eprintln!(
            "{name}: warning: RLIMIT_NOFILE is {limit}, below --max-conns {}: accepting will pause \
             (EMFILE) before max-conns is reached",
            config.max_conns
        ),
        Ok(_) => {}
        Err(e) => eprintln!("{name}: warning: {e}"),
    }
}

/// Waits for a server's threads: they end only when the process does (at the end of a drain, or
/// with a fatal error), so the main thread has nothing else to do.
pub fn join_all(threads: Vec<JoinHandle<()>>) {
    for thread in threads {
        let _ = thread.join();
    }
}

/// Prints the one line stdout ever gets, `listening on IP:PORT`, and flushes it at once, since
/// scripts and tests wait for it to learn the port.
pub fn announce(addr: SocketAddr) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "listening on {addr}");
    let _ = stdout.flush();
}

/// The first call of every thread (or process) that runs a worker: pins it to the worker's CPU, if
/// it has one (exit 1 if the kernel refuses), and records it as the worker's thread, so that /stats
/// reads its `context_switches` from /proc.
pub fn start_thread(worker: &WorkerStats) {
    if let Some(cpu) = worker.cpu() {
        sys::cpu::pin_current_thread(cpu).unwrap_or_else(|e| fatal(e));
    }
    worker.bind_to_this_thread();
}

/// Logs a configuration line on stderr.
pub fn log(message: impl Display) {
    eprintln!("{}: {message}", program_name());
}

/// A start-up failure: says which call failed on what, and exits 1.
pub fn fatal(error: impl Display) -> ! {
    eprintln!("{}: {error}", program_name());
    process::exit(1);
}

/// The exit status of a server one of whose threads panicked.
pub const PANIC_EXIT: i32 = 70;

/// The thread-panic policy of every server: a panic in any thread ends the whole process, after the
/// panic's own message and one line saying why, with status [`PANIC_EXIT`]. A server must not go on
/// silently with a worker fewer (its connections stalled, its queue unserved); a supervisor, or
/// lab-reuseport's for its worker processes, starts a whole one again.
pub fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        log("a thread panicked: exiting rather than serving on with a worker fewer");
        std::process::exit(PANIC_EXIT);
    }));
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// Run as a child of `a_panic_in_any_thread_ends_the_process`: a worker thread panics while the
    /// main thread would go on for ever.
    #[test]
    fn panicking_worker_child() {
        if std::env::var_os("ACCEPTLAB_PANIC_CHILD").is_none() {
            return; // only meaningful as the child process below
        }
        super::exit_on_panic();
        let _worker = std::thread::spawn(|| panic!("injected fault"));
        std::thread::sleep(std::time::Duration::from_secs(30));
        unreachable!("the panic did not end the process");
    }

    #[test]
    fn a_panic_in_any_thread_ends_the_process() {
        let exe = std::env::current_exe().expect("the test binary");
        let output = Command::new(exe)
            .args(["--exact", "startup::tests::panicking_worker_child", "--nocapture", "--test-threads", "1"])
            .env("ACCEPTLAB_PANIC_CHILD", "1")
            .output()
            .expect("run the child");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(super::PANIC_EXIT), "{stderr}");
        assert!(stderr.contains("injected fault") && stderr.contains("a thread panicked"), "{stderr}");
    }
}
