//! A lab-bench stopped by SIGINT, SIGTERM or SIGHUP cleans up after itself: every process it started
//! (the servers and their workers, each lab-load, nginx, perf) is killed, `--net veth`'s namespaces
//! are deleted and the host checked, and it exits with 128 + the signal's number.
//!
//! The signals are caught by a handler that writes them into a pipe (`sys::signal::CaughtSignals`:
//! nothing is blocked, so the programs lab-bench starts inherit no mask), read by a thread of their
//! own. The processes to stop are found, not registered: every
//! process below lab-bench's own (`/proc/PID/task/TID/children`), so none started between two
//! registrations can be missed. What a new process could still slip past is closed by a gate: each
//! start of one runs inside [`gated`], and the signal's thread shuts the gate (waiting for a start
//! in progress to finish) before it looks for processes; the main thread, reaching the gate after
//! that, waits there until the process exits. The namespaces' teardown is handed here by `veth` when
//! they are made ([`set_teardown`]), and run by the bench's own end ([`run_teardown`]) unless a
//! signal took it first: exactly one of the two runs it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sys::signal::CaughtSignals;

/// Deletes the namespaces and checks the host: `Ok` with what was checked, or what is wrong.
pub type Teardown = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// Set once a signal has come: nothing new is started, nothing more recorded.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Held (shared) while a process is being started; the signal's thread takes it exclusively.
static GATE: RwLock<()> = RwLock::new(());
static TEARDOWN: Mutex<Option<Teardown>> = Mutex::new(None);
static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// How long the killed processes get to be gone before the namespaces are deleted anyway.
const PATIENCE: Duration = Duration::from_secs(5);

/// Catches SIGINT, SIGTERM and SIGHUP and starts the thread that acts on them.
pub fn watch_signals() -> Result<(), String> {
    let signals = CaughtSignals::catch(&[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP])
        .map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || match signals.wait() {
            Ok(signo) => stop(signo),
            Err(e) => eprintln!("lab-bench: {e}; signals are no longer caught"),
        })
        .map_err(|e| format!("spawn the signals thread: {e}"))?;
    Ok(())
}

/// Runs `start` (which starts a process) unless a signal has come, in which case it never returns:
/// the signal's thread is stopping everything and will end the process.
pub fn gated<T>(start: impl FnOnce() -> T) -> T {
    let open = GATE.read().unwrap_or_else(|e| e.into_inner());
    if STOPPING.load(Ordering::SeqCst) {
        drop(open);
        hold();
    }
    start()
}

/// Waits for the end if a signal has come (before recording a run that the signal cut short).
pub fn hold_if_stopping() {
    if STOPPING.load(Ordering::SeqCst) {
        hold();
    }
}

fn hold() -> ! {
    loop {
        std::thread::park();
    }
}

/// What deletes the namespaces and checks the host, for a signal to run.
pub fn set_teardown(teardown: Teardown) {
    *TEARDOWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(teardown);
}

/// The bench's own end: runs the teardown here, unless a signal has come (then waits for the end:
/// the signal's thread runs it). It runs with the teardown's lock held, so that a signal meanwhile
/// waits for it to finish rather than exiting half-way through `ip netns del`.
pub fn run_teardown() -> Option<Result<(), String>> {
    let mut slot = TEARDOWN.lock().unwrap_or_else(|e| e.into_inner());
    if STOPPING.load(Ordering::SeqCst) {
        drop(slot);
        hold();
    }
    slot.take().map(|teardown| teardown())
}

/// The scratch directory, removed on a signal too.
pub fn set_scratch(dir: PathBuf) {
    *SCRATCH.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir);
}

/// Every process below this one, itself left out.
fn descendants() -> Vec<u32> {
    let me = std::process::id();
    labkit::process_tree(me).into_iter().filter(|&pid| pid != me).collect()
}

/// Whether `pid` is still running: not gone, and not a zombie (dead, its status not yet collected).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn signal_name(signo: i32) -> String {
    Signal::try_from(signo).map_or_else(|_| format!("signal {signo}"), |s| s.as_str().to_string())
}

/// A signal came: stop every process below this one, tear down the namespaces, exit 128 + signo.
fn stop(signo: i32) -> ! {
    let name = signal_name(signo);
    {
        // A start in progress finishes first; every later one waits in the gate.
        let _shut = GATE.write().unwrap_or_else(|e| e.into_inner());
        STOPPING.store(true, Ordering::SeqCst);
    }
    eprintln!("lab-bench: {name}: stopping the servers and clients");
    // Taken before anything is killed: where the bench's own end is running it, that finishes first
    // (its `ip` commands are processes below this one too).
    let teardown = TEARDOWN.lock().unwrap_or_else(|e| e.into_inner()).take();
    let mut stopped = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    // Again until none is left: a process may start one of its own (a supervisor its workers) meanwhile.
    loop {
        let running: Vec<u32> = descendants().into_iter().filter(|&pid| alive(pid)).collect();
        if running.is_empty() || Instant::now() > deadline {
            break;
        }
        for &pid in &running {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
            if !stopped.contains(&pid) {
                stopped.push(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The real systems' and --server's cgroups: whatever in them is not below this process too.
    crate::real::remove_cgroups();
    let left: Vec<u32> = descendants().into_iter().filter(|&pid| alive(pid)).collect();
    let mut problems = Vec::new();
    if !left.is_empty() {
        problems.push(format!("still running after SIGKILL: pids {left:?}"));
    }
    let veth = teardown.is_some();
    if let Some(teardown) = teardown {
        if let Err(reason) = teardown() {
            problems.push(format!("--net veth: {reason}"));
        }
    }
    if let Some(dir) = SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = std::fs::remove_dir_all(dir);
    }
    let how = match (problems.is_empty(), veth) {
        (true, true) => "none left; the namespaces deleted and the host reads as before".to_string(),
        (true, false) => "none left".to_string(),
        (false, _) => problems.join("; "),
    };
    eprintln!("lab-bench: {name}: {} processes stopped; {how}", stopped.len());
    std::process::exit(128 + signo)
}
