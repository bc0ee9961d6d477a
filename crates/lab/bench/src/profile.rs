//! `--profile`: where a server's time goes during a throughput run's measured window.
//!
//! Two perf processes are attached to the server's process tree before lab-load starts, with their
//! events off, and pinned to CPUs the server does not use; their events are switched on through
//! their control FIFOs when lab-load's warm-up ends and off when its measured window does, so perf's
//! own start-up and wind-down (perf stat takes a second or two of CPU to open its tracepoints) fall
//! outside the window. `perf record` samples the CPU with whole stacks; `perf stat` counts the
//! `raw_syscalls:sys_enter` tracepoint and 50 `syscalls:sys_enter_*` by name, which costs a counter
//! increment per system call rather than strace's two stops of the process; /proc's per-thread
//! context-switch counts are read at both ends, which costs nothing.
//!
//! Unwinding is DWARF (`--call-graph dwarf`), not frame pointers: the release build has none
//! (`-C force-frame-pointers` would mean profiling a different build from the one measured), and
//! neither has libc, so frame-pointer stacks stop at the system call wrapper. DWARF unwinds through
//! both from the `.eh_frame` every binary carries and names inlined functions from the line tables.
//! Its cost is an 8 KB stack copy per sample, in the server's time; at 499 samples a second of its
//! CPU that is a few ms a second (what it costs in all is measured by every run: `throughput`).

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use inferno::collapse::perf::{Folder, Options as CollapseOptions};
use inferno::collapse::Collapse;
use inferno::flamegraph::{self, Options as FlameOptions};
use serde_json::{json, Map, Value};

/// Samples per second of CPU time: enough for a flame graph of a 1-2 s window, little enough that
/// the stack copies do not slow the server (each run measures it; docs/results/README.md).
const SAMPLE_HZ: u32 = 499;

/// The system calls counted by name (those this kernel has): the ones the servers and nginx make.
/// Not all 360 tracepoints: perf stat takes ~14 s to open those, against ~2 s for these; the
/// rest are in the raw total, and `other` in the table is the difference.
const SYSCALLS: [&str; 50] = [
    "read",
    "write",
    "readv",
    "writev",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "recvmmsg",
    "sendmmsg",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "accept",
    "accept4",
    "close",
    "shutdown",
    "setsockopt",
    "getsockopt",
    "fcntl",
    "ioctl",
    "futex",
    "sched_yield",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "sendfile64",
    "splice",
    "io_uring_enter",
    "mmap",
    "munmap",
    "brk",
    "madvise",
    "mprotect",
    "rt_sigprocmask",
    "rt_sigaction",
    "getpid",
    "gettid",
    "kill",
    "tgkill",
    "openat",
    "newfstat",
    "statx",
    "eventfd2",
    "timerfd_settime",
];

/// A perf that may be used here, and what it can count.
#[derive(Debug, Clone)]
pub struct Perf {
    bin: PathBuf,
    /// The `syscalls:sys_enter_*` tracepoints this kernel has.
    syscalls: Vec<String>,
    /// Whether cycles can be counted (no hardware counters in most VMs).
    hardware: bool,
}

/// perf itself: `$LAB_BENCH_PERF`, `perf` on PATH, or Debian's versioned `/usr/bin/perf_X.Y`.
fn perf_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("LAB_BENCH_PERF") {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|dir| dir.join("perf")).collect::<Vec<_>>())
        .unwrap_or_default();
    let versioned = fs::read_dir("/usr/bin")
        .map(|dir| {
            let mut found: Vec<PathBuf> = dir
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("perf_")))
                .collect();
            found.sort();
            found
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(versioned)
        .find(|p| p.is_file())
        .ok_or_else(|| "perf is not installed (scripts/install-tools.sh perf)".to_string())
}

/// Runs `perf stat -x, -e EVENTS -- true` and returns its CSV, or perf's own complaint.
fn probe(bin: &Path, events: &str) -> Result<String, String> {
    let output = Command::new(bin)
        .args(["stat", "-x", ",", "-e", events, "--", "true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", bin.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    if !output.status.success() {
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("failed").trim().to_string();
        return Err(format!("{} stat is not permitted here: {first}", bin.display()));
    }
    Ok(stderr)
}

impl Perf {
    /// The perf to use, or one line on why there is none.
    pub fn find() -> Result<Perf, String> {
        let bin = perf_binary()?;
        probe(&bin, "cpu-clock")?;
        let list = Command::new(&bin)
            .args(["list", "--raw-dump", "tracepoint"])
            .output()
            .map_err(|e| format!("{} list: {e}", bin.display()))?;
        let syscalls: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .split_whitespace()
            .filter(|name| name.strip_prefix("syscalls:sys_enter_").is_some_and(|n| SYSCALLS.contains(&n)))
            .map(str::to_string)
            .collect();
        if syscalls.is_empty() {
            return Err("perf sees no syscalls:sys_enter_* tracepoints (is tracefs mounted?)".into());
        }
        probe(&bin, "raw_syscalls:sys_enter")?;
        let hardware = probe(&bin, "cycles").is_ok_and(|csv| !csv.contains("<not supported>"));
        Ok(Perf { bin, syscalls, hardware })
    }

    fn stat_events(&self) -> String {
        let mut events = vec!["raw_syscalls:sys_enter".to_string()];
        if self.hardware {
            events.extend(["cycles", "instructions", "cache-misses"].map(String::from));
        }
        events.extend(self.syscalls.iter().cloned());
        events.join(",")
    }
}

/// perf attached to a server's process tree with its events off: `perf record` and `perf stat`,
/// each driven through a pair of FIFOs (`--control`), so that their start-up (opening ~50
/// tracepoints per thread takes perf stat a second or two of CPU) and their wind-down happen
/// outside the measured window, and the window is exactly from `enable` to `disable`.
pub struct Attached {
    perfs: Vec<Controlled>,
    data: PathBuf,
    stat: PathBuf,
    pids: Vec<u32>,
    /// Voluntary and involuntary context switches at `enable`, then their growth by `disable`.
    switches: (u64, u64),
    enabled: Option<Instant>,
    seconds: f64,
}

/// One perf process and its control FIFOs.
struct Controlled {
    what: &'static str,
    child: Child,
    ctl: fs::File,
    ack: fs::File,
    stderr: PathBuf,
}

/// How long perf may take to attach, or to answer a command, before it is given up.
const PERF_PATIENCE: Duration = Duration::from_secs(60);

/// Starts `perf record` and `perf stat` on the process tree of `pid`, events off, both pinned to
/// `cpus` (CPUs the server does not use, where there are any), and returns once both answer.
pub fn attach(perf: &Perf, pid: u32, cpus: &[usize], scratch: &Path) -> Result<Attached, String> {
    let pids = labkit::process_tree(pid);
    let pid_list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let (data, stat) = (scratch.join("perf.data"), scratch.join("perf-stat.csv"));
    let record: Vec<String> = [
        "record",
        "-q",
        "-F",
        &SAMPLE_HZ.to_string(),
        "--call-graph",
        "dwarf",
        // No build-id pass over every sample at the end: perf script finds the binaries by path.
        "--no-buildid",
        "-o",
        &data.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let stat_args: Vec<String> =
        ["stat", "-x", ",", "-o", &stat.display().to_string(), "-e", &perf.stat_events()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let mut perfs = Vec::new();
    for (what, args) in [("record", record), ("stat", stat_args)] {
        // Pushed at once, so that on an error the ones already started are stopped by Drop.
        perfs.push(Controlled::spawn(perf, what, args, &pid_list, cpus, scratch)?);
    }
    let mut attached = Attached { perfs, data, stat, pids, switches: (0, 0), enabled: None, seconds: 0.0 };
    for p in &mut attached.perfs {
        p.command("ping")?;
    }
    Ok(attached)
}

impl Controlled {
    fn spawn(
        perf: &Perf,
        what: &'static str,
        args: Vec<String>,
        pid_list: &str,
        cpus: &[usize],
        scratch: &Path,
    ) -> Result<Controlled, String> {
        let (ctl, ack) = (scratch.join(format!("perf-{what}.ctl")), scratch.join(format!("perf-{what}.ack")));
        for fifo in [&ctl, &ack] {
            let _ = fs::remove_file(fifo);
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)
                .map_err(|e| format!("mkfifo {}: {e}", fifo.display()))?;
        }
        let stderr = scratch.join(format!("perf-{what}.err"));
        let err_file = fs::File::create(&stderr).map_err(|e| format!("create {}: {e}", stderr.display()))?;
        let mut command = Command::new(&perf.bin);
        command
            .args(args)
            .args(["-D", "-1", "--control"])
            .arg(format!("fifo:{},{}", ctl.display(), ack.display()))
            .args(["-p", pid_list])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file);
        // The ack FIFO opened for reading first and without blocking, so that perf's open of it for
        // writing does not wait for us; the control FIFO can only be opened once perf has it open.
        let ack_file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&ack)
            .map_err(|e| format!("open {}: {e}", ack.display()))?;
        let mut child =
            spawn_on(command, cpus).map_err(|e| format!("spawn {} {what}: {e}", perf.bin.display()))?;
        let deadline = Instant::now() + PERF_PATIENCE;
        let ctl = loop {
            let opened = fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                .open(&ctl);
            match opened {
                Ok(file) => break file,
                // ENXIO: no reader yet, perf is still starting.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("open {}: {e}", ctl.display()));
                }
            }
            exited(&mut child, what, &stderr)?;
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("perf {what} did not open its control FIFO within {PERF_PATIENCE:?}"));
            }
            thread::sleep(Duration::from_millis(5));
        };
        Ok(Controlled { what, child, ctl, ack: ack_file, stderr })
    }

    /// Sends `command` and waits for perf's `ack`.
    fn command(&mut self, command: &str) -> Result<(), String> {
        use std::io::{Read, Write};
        writeln!(self.ctl, "{command}").map_err(|e| format!("perf {} control: {e}", self.what))?;
        let deadline = Instant::now() + PERF_PATIENCE;
        let mut answer = Vec::new();
        loop {
            let mut buf = [0u8; 64];
            match self.ack.read(&mut buf) {
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("perf {} ack: {e}", self.what)),
            }
            if answer.contains(&b'\n') {
                return Ok(());
            }
            exited(&mut self.child, self.what, &self.stderr)?;
            if Instant::now() > deadline {
                return Err(format!(
                    "perf {} did not answer {command:?} within {PERF_PATIENCE:?}",
                    self.what
                ));
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGINT, as at a terminal: perf writes what it has and exits.
    fn stop(&mut self) -> Result<(), String> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + PERF_PATIENCE;
        loop {
            // perf exits 0 or with the signal's status; what it wrote is checked by its reader.
            if self.child.try_wait().map_err(|e| format!("waitpid perf {}: {e}", self.what))?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "perf {} still running {PERF_PATIENCE:?} after SIGINT; killed",
                    self.what
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// An error naming perf's own complaint if it has exited.
fn exited(child: &mut Child, what: &str, stderr: &Path) -> Result<(), String> {
    match child.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => {
            let text = fs::read_to_string(stderr).unwrap_or_default();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
            Err(format!("perf {what} exited with {status}: {first}"))
        }
        Err(e) => Err(format!("waitpid perf {what}: {e}")),
    }
}

/// Voluntary and involuntary context switches so far, summed over every thread of `pids`.
fn switches(pids: &[u32]) -> (u64, u64) {
    let mut total = (0, 0);
    for pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                let value =
                    |prefix: &str| line.strip_prefix(prefix).and_then(|v| v.trim().parse::<u64>().ok());
                if let Some(n) = value("voluntary_ctxt_switches:") {
                    total.0 += n;
                } else if let Some(n) = value("nonvoluntary_ctxt_switches:") {
                    total.1 += n;
                }
            }
        }
    }
    total
}

impl Drop for Controlled {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `command` from a thread pinned to `cpus`, so that the child (which inherits the mask)
/// runs there and not on the server's CPUs; the calling thread's own mask is left alone.
fn spawn_on(mut command: Command, cpus: &[usize]) -> std::io::Result<Child> {
    let cpus = cpus.to_vec();
    thread::scope(|scope| {
        scope
            .spawn(move || {
                if !cpus.is_empty() {
                    let mut set = nix::sched::CpuSet::new();
                    for cpu in &cpus {
                        set.set(*cpu).map_err(std::io::Error::from)?;
                    }
                    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                        .map_err(std::io::Error::from)?;
                }
                crate::cleanup::gated(|| command.spawn())
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    })
}

impl Attached {
    /// Switches the events on: the measured window begins.
    pub fn enable(&mut self) -> Result<(), String> {
        self.switches = switches(&self.pids);
        for p in &mut self.perfs {
            p.command("enable")?;
        }
        self.enabled = Some(Instant::now());
        Ok(())
    }

    /// Switches them off: the window ends.
    pub fn disable(&mut self) -> Result<(), String> {
        for p in &mut self.perfs {
            p.command("disable")?;
        }
        self.seconds = self.enabled.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let after = switches(&self.pids);
        self.switches = (after.0.saturating_sub(self.switches.0), after.1.saturating_sub(self.switches.1));
        Ok(())
    }

    /// Stops perf and leaves nothing behind, for a profiled round whose samples are not drawn
    /// (its throughput is all that is kept).
    pub fn discard(mut self) {
        for p in &mut self.perfs {
            let _ = p.stop();
        }
        let _ = fs::remove_file(&self.data);
        let _ = fs::remove_file(&self.stat);
    }

    /// Stops perf, draws `svg` (titled `title`) and returns the run's `profile` object, per
    /// request of the `rps` lab-load measured over the same window.
    /// With `tls`, also where the user-space time went by [`TLS_CATEGORIES`].
    pub fn finish(
        mut self,
        perf: &Perf,
        rps: f64,
        title: &str,
        svg: &Path,
        tls: bool,
    ) -> Result<Value, String> {
        if self.enabled.is_none() || self.seconds <= 0.0 {
            return Err("the window was never opened".into());
        }
        for p in &mut self.perfs {
            p.stop()?;
        }
        let script = Command::new(&perf.bin)
            .args(["script", "-i"])
            .arg(&self.data)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("perf script: {e}"))?;
        let _ = fs::remove_file(&self.data);
        let text = String::from_utf8_lossy(&script.stdout);
        flame_graph(&text, title, svg)?;
        let stat = fs::read_to_string(&self.stat).map_err(|e| format!("read perf stat's output: {e}"))?;
        let _ = fs::remove_file(&self.stat);
        let requests = rps * self.seconds;
        let mut profile = per_request(&cpu_split(&text), &stat_counts(&stat), self.switches, requests);
        if tls {
            // Per request; over the churn workloads a request is a handshake.
            let split = tls_split(&text);
            let per = |ns: &Value| json!(ns.as_f64().unwrap_or(0.0) / 1000.0 / requests.max(1.0));
            profile["tls_cpu_us_per_request"] =
                Value::Object(split.iter().map(|(name, ns)| (name.clone(), per(ns))).collect());
        }
        profile["window_s"] = json!(self.seconds);
        profile["requests"] = json!(requests.round());
        profile["flamegraph"] = json!(svg.file_name().and_then(|n| n.to_str()));
        profile["unwinding"] = json!("dwarf");
        profile["sample_hz"] = json!(SAMPLE_HZ);
        if !perf.hardware {
            profile["hardware"] = json!("none: perf reports cycles <not supported> on this machine");
        }
        Ok(profile)
    }
}

/// perf script's samples folded into stacks (inferno) and drawn as one SVG.
fn flame_graph(script: &str, title: &str, svg: &Path) -> Result<(), String> {
    let mut folded = Vec::new();
    Folder::from(CollapseOptions::default())
        .collapse(script.as_bytes(), &mut folded)
        .map_err(|e| format!("fold perf script's stacks: {e}"))?;
    let folded = String::from_utf8_lossy(&folded);
    let mut options = FlameOptions::default();
    options.title = title.to_string();
    options.count_name = "samples".into();
    options.hash = true; // a frame's colour from its name: the same function looks the same everywhere
    let file = fs::File::create(svg).map_err(|e| format!("create {}: {e}", svg.display()))?;
    flamegraph::from_lines(&mut options, folded.lines(), std::io::BufWriter::new(file))
        .map_err(|e| format!("draw {}: {e}", svg.display()))
}

/// Sampled CPU time in nanoseconds: in user space, in the kernel, and in softirq (the network
/// stack's receive work, done in the server's time when it runs on the server's CPU).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CpuSplit {
    pub user_ns: u64,
    pub kernel_ns: u64,
    pub softirq_ns: u64,
    pub samples: u64,
}

/// Classifies each sample of perf script's text by its stack: softirq if any frame is the softirq
/// handler, kernel if the leaf frame is the kernel's, user otherwise. Weighted by each sample's
/// period (cpu-clock's is in nanoseconds), so the sums are CPU time.
pub fn cpu_split(script: &str) -> CpuSplit {
    let mut split = CpuSplit::default();
    for sample in script.split("\n\n") {
        let mut lines = BufReader::new(sample.as_bytes()).lines().map_while(Result::ok);
        let Some(header) = lines.by_ref().find(|l| !l.trim().is_empty()) else { continue };
        let Some(period) = period_of(&header) else { continue };
        let frames: Vec<String> = lines.collect();
        let softirq = frames.iter().any(|f| {
            ["handle_softirqs", "__do_softirq", "net_rx_action"].iter().any(|name| f.contains(name))
        });
        let kernel = frames.first().is_some_and(|leaf| leaf.contains("[kernel.kallsyms]"));
        let bucket = if softirq {
            &mut split.softirq_ns
        } else if kernel {
            &mut split.kernel_ns
        } else {
            &mut split.user_ns
        };
        *bucket += period;
        split.samples += 1;
    }
    split
}

/// Where a TLS server's user-space time goes, by the functions on each sample's stack: the first
/// category (in this order) with a frame whose name holds one of its words, matched lower-case.
/// The signature comes first, since it hashes what it signs; the rest is `other` (user space) or
/// `kernel` (the leaf frame the kernel's: system calls, TCP, softirq).
pub const TLS_CATEGORIES: [(&str, &[&str]); 4] = [
    // ring: EcdsaKeyPair::sign over p256_point_mul_base (ecp_nistz256 assembly); OpenSSL: ECDSA_do_sign.
    (
        "signature",
        &[
            "ecdsa::signing",
            "ecdsasigner",
            "ecdsa_sign",
            "ecdsa_do_sign",
            "ecdsa_simple_sign",
            "p256",
            "nistz256",
        ],
    ),
    ("x25519", &["x25519", "curve25519"]),
    ("record", &["aes_gcm", "aes_hw", "aesni", "gcm_", "ghash", "chacha", "poly1305", "aead"]),
    ("hash", &["sha256", "sha384", "sha512", "sha2::", "digest", "hkdf", "hmac", "key_schedule"]),
];

/// The CPU time of perf script's samples (nanoseconds) by [`TLS_CATEGORIES`], `other` and
/// `kernel`.
pub fn tls_split(script: &str) -> Map<String, Value> {
    let mut totals: Vec<u64> = vec![0; TLS_CATEGORIES.len() + 2];
    for sample in script.split("\n\n") {
        let mut lines = sample.lines().filter(|l| !l.trim().is_empty());
        let Some(period) = lines.next().and_then(period_of) else { continue };
        let frames: Vec<String> = lines.map(str::to_lowercase).collect();
        let category = if frames.first().is_some_and(|leaf| leaf.contains("[kernel.kallsyms]")) {
            TLS_CATEGORIES.len() + 1
        } else {
            TLS_CATEGORIES
                .iter()
                .position(|(_, words)| frames.iter().any(|f| words.iter().any(|w| f.contains(w))))
                .unwrap_or(TLS_CATEGORIES.len())
        };
        totals[category] += period;
    }
    let names = TLS_CATEGORIES.iter().map(|(name, _)| *name).chain(["other", "kernel"]);
    names.zip(totals).map(|(name, ns)| (name.to_string(), json!(ns))).collect()
}

/// `lab-epoll 18314  1612.661650:    1003009 cpu-clock:ppp:` → 1003009: the number before the event.
fn period_of(header: &str) -> Option<u64> {
    let words: Vec<&str> = header.split_whitespace().collect();
    let event = words.iter().position(|w| w.contains("cpu-clock") || w.contains("task-clock"))?;
    words.get(event.checked_sub(1)?)?.parse().ok()
}

/// perf stat's `-x,` lines as event → count; `<not supported>` and `<not counted>` are left out.
pub fn stat_counts(csv: &str) -> Map<String, Value> {
    let mut counts = Map::new();
    for line in csv.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(',').collect();
        if let (Some(count), Some(event)) = (fields.first(), fields.get(2)) {
            if let Ok(n) = count.trim().parse::<u64>() {
                counts.insert(event.trim().to_string(), json!(n));
            }
        }
    }
    counts
}

/// The `profile` object: everything per request.
pub fn per_request(
    cpu: &CpuSplit,
    counts: &Map<String, Value>,
    switches: (u64, u64),
    requests: f64,
) -> Value {
    let per = |n: f64| if requests > 0.0 { n / requests } else { f64::NAN };
    let count = |event: &str| counts.get(event).and_then(Value::as_u64);
    let mut by_name: Vec<(String, f64)> = counts
        .iter()
        .filter_map(|(event, n)| Some((event.strip_prefix("syscalls:sys_enter_")?.to_string(), n.as_u64()?)))
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| (name, per(n as f64)))
        .collect();
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let us = |ns: u64| per(ns as f64 / 1000.0);
    let hardware = ["cycles", "instructions", "cache-misses"]
        .iter()
        .filter_map(|e| Some((e.to_string(), json!(per(count(e)? as f64)))))
        .collect::<Map<String, Value>>();
    json!({
        "samples": cpu.samples,
        "cpu_us_per_request": {
            "user": us(cpu.user_ns),
            "kernel": us(cpu.kernel_ns),
            "softirq": us(cpu.softirq_ns),
            "total": us(cpu.user_ns + cpu.kernel_ns + cpu.softirq_ns),
        },
        "syscalls_per_request": count("raw_syscalls:sys_enter").map(|n| per(n as f64)),
        "syscalls_by_name": by_name.into_iter().map(|(name, n)| (name, json!(n))).collect::<Map<String, Value>>(),
        "context_switches_per_request": per((switches.0 + switches.1) as f64),
        // Every voluntary switch is a sleep that a wake-up ended (the last, at most, still asleep).
        "wakeups_per_request": per(switches.0 as f64),
        "hardware": if hardware.is_empty() { Value::Null } else { Value::Object(hardware) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three samples from a `perf record --call-graph dwarf` of lab-epoll under keep-alive load:
    /// one in user space, one in the kernel, one in softirq (loopback delivery under sendto), the
    /// last with its period doubled to tell them apart.
    const SCRIPT: &str = include_str!("../tests/data/perf-script-epoll.txt");

    #[test]
    fn samples_split_into_user_kernel_and_softirq_by_their_stacks() {
        let split = cpu_split(SCRIPT);
        assert_eq!(
            split,
            CpuSplit { user_ns: 1_003_009, kernel_ns: 1_003_009, softirq_ns: 2_006_018, samples: 3 }
        );
    }

    #[test]
    fn tls_samples_are_put_under_the_signature_the_key_exchange_or_the_kernel() {
        let sample = |period: u64, frames: &[&str]| {
            let mut text = format!("lab-epoll 1 1.0: {period} cpu-clock:ppp:\n");
            for frame in frames {
                text.push_str(&format!("\t    0 {frame}\n"));
            }
            text + "\n"
        };
        let script = [
            sample(
                10,
                &[
                    "ring_core_0_17_14__ecp_nistz256_point_add (lab-epoll)",
                    "ring::ec::suite_b::ecdsa::signing::EcdsaKeyPair::sign (lab-epoll)",
                ],
            ),
            sample(20, &["ring_core_0_17_14__x25519_scalar_mult_generic_masked (lab-epoll)"]),
            sample(
                40,
                &[
                    "sha256_block_data_order (lab-epoll)",
                    "ring::ec::suite_b::ecdsa::signing::EcdsaKeyPair::sign (lab-epoll)",
                ],
            ),
            sample(80, &["tcp_sendmsg ([kernel.kallsyms])", "sha256 (lab-epoll)"]),
            sample(160, &["lab_epoll::main (lab-epoll)"]),
        ]
        .concat();
        let split = tls_split(&script);
        assert_eq!(split["signature"], 50, "the signature's hash is the signature's: {split:?}");
        assert_eq!(split["x25519"], 20);
        assert_eq!(split["kernel"], 80);
        assert_eq!(split["other"], 160);
        assert_eq!(split["hash"], 0);
    }

    #[test]
    fn perf_stat_csv_gives_counts_and_drops_what_it_could_not_count() {
        let csv = "# started on Wed Dec  2\n\n274826,,raw_syscalls:sys_enter,1689553764,100.00,,\n\
                   135835,,syscalls:sys_enter_read,1685652207,100.00,,\n\
                   0,,syscalls:sys_enter_write,1685652207,100.00,,\n\
                   <not supported>,,cycles,0,100.00,,\n";
        let counts = stat_counts(csv);
        assert_eq!(counts["raw_syscalls:sys_enter"], 274826);
        assert_eq!(counts["syscalls:sys_enter_read"], 135835);
        assert_eq!(counts.len(), 3, "cycles was not counted: {counts:?}");
    }

    #[test]
    fn everything_is_divided_by_the_requests_of_the_window() {
        let cpu = CpuSplit { user_ns: 1_000_000, kernel_ns: 3_000_000, softirq_ns: 1_000_000, samples: 5 };
        let csv = "404,,raw_syscalls:sys_enter,1,100.00,,\n200,,syscalls:sys_enter_read,1,100.00,,\n\
                   196,,syscalls:sys_enter_sendto,1,100.00,,\n4,,syscalls:sys_enter_epoll_wait,1,100.00,,\n\
                   0,,syscalls:sys_enter_close,1,100.00,,\n";
        let profile = per_request(&cpu, &stat_counts(csv), (30, 10), 200.0);
        assert_eq!(profile["cpu_us_per_request"]["user"], 5.0);
        assert_eq!(profile["cpu_us_per_request"]["kernel"], 15.0);
        assert_eq!(profile["cpu_us_per_request"]["total"], 25.0);
        assert_eq!(profile["syscalls_per_request"], 2.02);
        let names: Vec<&String> = profile["syscalls_by_name"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["read", "sendto", "epoll_wait"], "by count, the unused left out");
        assert_eq!(profile["syscalls_by_name"]["epoll_wait"], 0.02);
        assert_eq!(profile["context_switches_per_request"], 0.2);
        assert_eq!(profile["wakeups_per_request"], 0.15);
        assert_eq!(profile["hardware"], Value::Null);
    }

    #[test]
    fn the_flame_graph_names_the_servers_functions_and_the_kernels() {
        let svg = std::env::temp_dir().join(format!("lab-bench-flame-{}.svg", std::process::id()));
        flame_graph(SCRIPT, "epoll, keep-alive", &svg).unwrap();
        let text = fs::read_to_string(&svg).unwrap();
        let _ = fs::remove_file(&svg);
        assert!(text.contains("epoll, keep-alive"));
        assert!(text.contains("lab_epoll::main"), "a function of the project");
        assert!(text.contains("tcp_sendmsg"), "a function of the kernel");
    }
}
