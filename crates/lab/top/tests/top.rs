//! lab-top against real servers under real load: `--once` and `--json` read as a script would, and
//! the live screen driven in tmux as a person would (keys in with send-keys, the screen read back
//! with capture-pane).
//!
//! The load is open loop at a fixed rate, so the rate lab-top shows has a known right answer.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use labkit::{bin_path, eventually, spawn, Running, Server, SERVERS};
use serde_json::Value;

/// Requests per second that the load sends, and how far off lab-top may be (the issue: 20%).
const RATE: f64 = 2000.0;
const TOLERANCE: f64 = 0.2;

fn server(name: &str) -> &'static Server {
    SERVERS.iter().find(|server| server.name == name).unwrap()
}

fn url(server: &Running) -> String {
    format!("http://{}", server.addr())
}

fn lab_top() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lab-top"))
}

/// lab-load sending [`RATE`] requests/s to `addr` for `seconds`; killed when dropped.
struct Load(Child);

impl Load {
    fn start(addr: SocketAddr, seconds: u32, extra: &[&str]) -> Load {
        let child = Command::new(bin_path("lab-load"))
            .arg(format!("http://{addr}/"))
            .args(["--rate", &RATE.to_string(), "-c", "8", "-d", &seconds.to_string(), "--warmup", "0"])
            .args(["--no-progress"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lab-load");
        // Let the first connections open and the rate settle before anyone measures it.
        thread::sleep(Duration::from_millis(500));
        Load(child)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn assert_near_the_load_rate(what: &str, rate: f64) {
    assert!((rate - RATE).abs() <= RATE * TOLERANCE, "{what} {rate:.0}/s, but lab-load sends {RATE}/s");
}

/// The number before `/s` after the first `label` on the screen: `requests 2,004/s (…)` → 2004.
fn rate_after(screen: &str, label: &str) -> f64 {
    let after =
        &screen[screen.find(label).unwrap_or_else(|| panic!("no {label:?} on the screen:\n{screen}"))..];
    let number = after[label.len()..].split("/s").next().unwrap().replace(',', "");
    number.trim().parse().unwrap_or_else(|_| panic!("no rate after {label:?} on the screen:\n{screen}"))
}

/// The total in parentheses after `label`: `requests 2,004/s (15,311)` → 15311.
fn count_after(screen: &str, label: &str) -> u64 {
    let after =
        &screen[screen.find(label).unwrap_or_else(|| panic!("no {label:?} on the screen:\n{screen}"))..];
    let inside = after.split_once('(').and_then(|(_, rest)| rest.split_once(')')).map(|(count, _)| count);
    inside.unwrap().replace(',', "").parse().unwrap_or_else(|_| panic!("no count after {label:?}:\n{screen}"))
}

/// The worker rows of the table: lines whose first cell is an id and second a /stats role.
fn worker_rows(screen: &str) -> Vec<&str> {
    let roles = ["loop", "acceptor", "dispatcher", "worker", "process"];
    screen
        .lines()
        .filter(|line| {
            let mut cells = line.trim_start_matches('│').split_whitespace();
            cells.next().is_some_and(|id| id.parse::<u64>().is_ok())
                && cells.next().is_some_and(|role| roles.contains(&role))
        })
        .collect()
}

#[test]
fn once_prints_every_worker_and_the_rate_under_load() {
    let server = spawn(server("memcached"), &[]);
    let _load = Load::start(server.addr(), 5, &[]);
    let output = lab_top().args([&url(&server), "--once", "--interval", "1s"]).output().unwrap();
    assert!(output.status.success(), "lab-top --once: {output:?}");
    let screen = String::from_utf8(output.stdout).unwrap();

    assert!(screen.contains("memcached") && screen.contains(&format!("pid {}", server.pid())), "{screen}");
    let rows = worker_rows(&screen);
    assert_eq!(rows.len(), 3, "an acceptor and 2 workers:\n{screen}");
    assert!(rows[0].contains("acceptor") && rows[1].contains("worker"), "{screen}");
    assert_near_the_load_rate("--once shows", rate_after(&screen, "requests "));
    // The kernel panel is there exactly when /stats has a `kernel` object.
    let has_kernel = server.connect().stats().get("kernel").is_some();
    assert_eq!(screen.contains("ListenOverflows"), has_kernel, "kernel panel vs /stats:\n{screen}");
}

#[test]
fn json_gives_a_line_of_rates_per_interval_under_load() {
    // A new connection for every request, so that accepts/s has the same right answer.
    let server = spawn(server("nginx-mutex"), &[]);
    let _load = Load::start(server.addr(), 5, &["--close"]);
    let output =
        lab_top().args([&url(&server), "--json", "--count", "3", "--interval", "500ms"]).output().unwrap();
    assert!(output.status.success(), "lab-top --json: {output:?}");
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let mean = |field: &str| lines.iter().map(|line| line[field].as_f64().unwrap()).sum::<f64>() / 3.0;
    assert_near_the_load_rate("--json requests_per_s", mean("requests_per_s"));
    assert_near_the_load_rate("--json accepts_per_s", mean("accepts_per_s"));
    for line in &lines {
        assert_eq!(line["arch"], "nginx");
        assert!((line["interval_s"].as_f64().unwrap() - 0.5).abs() < 0.2, "{line}");
        let workers = line["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 2, "{line}");
        let sum: f64 = workers.iter().map(|w| w["requests_per_s"].as_f64().unwrap()).sum();
        let total = line["requests_per_s"].as_f64().unwrap();
        assert!(
            (sum - total).abs() <= total * 0.02 + 10.0,
            "workers' rates add up to {sum}, not {total}: {line}"
        );
        let fairness = line["fairness"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&fairness), "Jain's index over 2 workers is in [1/2, 1]: {line}");
        assert!(line["listeners"][0]["backlog"].as_u64().unwrap() > 0);
    }
}

#[test]
fn json_reports_a_vanished_server_and_picks_up_its_successor() {
    let first = spawn(server("epoll"), &[]);
    let addr = first.addr().to_string();
    let mut top = lab_top()
        .args([&url(&first), "--json", "--interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pids = lines_of(top.stdout.take().unwrap());
    let complaints = lines_of(top.stderr.take().unwrap());
    let pid_of = |line: String| serde_json::from_str::<Value>(&line).unwrap()["pid"].as_u64().unwrap();
    let wait = Duration::from_secs(5);
    assert_eq!(
        pid_of(pids.recv_timeout(wait).expect("a line from the first server")),
        u64::from(first.pid())
    );

    drop(first);
    let complaint = complaints.recv_timeout(wait).expect("a word on stderr once the server is gone");
    assert!(complaint.contains("retrying"), "{complaint}");
    // Still running, still trying: the same address answers again, from another process.
    let second = spawn(server("epoll"), &["--addr", &addr]);
    let found =
        eventually(wait, || pids.try_recv().is_ok_and(|line| pid_of(line) == u64::from(second.pid())));
    let _ = top.kill();
    let _ = top.wait();
    assert!(found, "no line from the restarted server at {addr}");
}

#[test]
fn once_fails_clearly_without_a_server() {
    let gone = spawn(server("epoll"), &[]);
    let addr = gone.addr();
    drop(gone);
    let Output { status, stderr, .. } =
        lab_top().args([&format!("http://{addr}"), "--once"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("http://{addr}: server gone: connect: connection refused")), "{stderr}");
}

/// Each line `pipe` gives, as it comes.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (lines, received) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    received
}

/// A tmux server of this test's own (its own socket, named after `test`), with one window running
/// `sh`; the tmux server and everything in it is killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(test: &str, columns: u16, rows: u16) -> Tmux {
        let tmux = Tmux { socket: format!("acceptlab-top-{test}-{}", std::process::id()) };
        let installed = Command::new("tmux").arg("-V").output().is_ok_and(|output| output.status.success());
        assert!(installed, "tmux is not installed: scripts/install-tools.sh tmux (make test runs it)");
        let size = [columns.to_string(), rows.to_string()];
        tmux.run(&["new-session", "-d", "-x", &size[0], "-y", &size[1], "sh"]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux").args(["-L", &self.socket]).args(args).output().expect("run tmux");
        assert!(output.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }

    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-l", line]);
        self.run(&["send-keys", "Enter"]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    /// The screen once `done` holds for it; fails showing the screen if it does not within 5 s.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let mut screen = String::new();
        let seen = eventually(Duration::from_secs(5), || {
            screen = self.screen();
            done(&screen)
        });
        assert!(seen, "waited for {what}; the screen:\n{screen}");
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

#[test]
fn the_live_screen_in_tmux_moves_obeys_its_keys_and_restores_the_terminal() {
    let server = spawn(server("memcached"), &[]);
    let _load = Load::start(server.addr(), 20, &[]);
    let tmux = Tmux::start("screen", 110, 30);
    tmux.type_line(&format!("{} {}", env!("CARGO_BIN_EXE_lab-top"), url(&server)));

    // Rates over a whole second, so that a moment's jitter in the load does not decide the test.
    let first = tmux.wait_for("3 worker rows with rates over a second", |screen| {
        worker_rows(screen).len() == 3 && screen.contains("rates over 1.0")
    });
    assert!(first.contains(" live "), "{first}");
    assert_near_the_load_rate("the screen shows", rate_after(&first, "requests "));
    let second = tmux.wait_for("the request count to move", |screen| {
        count_after(screen, "requests ") > count_after(&first, "requests ")
    });
    assert_ne!(worker_rows(&first), worker_rows(&second), "the worker rows did not change");

    tmux.run(&["send-keys", "s"]);
    tmux.wait_for("the sort key to take", |screen| screen.contains("sort (by requests/s)"));
    tmux.run(&["send-keys", "p"]);
    let paused = tmux.wait_for("the pause key to take", |screen| screen.contains("PAUSED"));
    thread::sleep(Duration::from_millis(600));
    assert_eq!(
        count_after(&tmux.screen(), "requests "),
        count_after(&paused, "requests "),
        "paused, yet moving"
    );
    tmux.run(&["send-keys", "p"]);
    tmux.wait_for("the screen to resume", |screen| screen.contains(" live "));

    // The server is killed under it: the screen says so and lab-top stays.
    drop(server);
    tmux.wait_for("the server to be reported gone", |screen| screen.contains("server gone"));

    tmux.run(&["send-keys", "q"]);
    let modes =
        || tmux.run(&["display-message", "-p", "alternate screen #{alternate_on}, cursor #{cursor_flag}"]);
    eventually(Duration::from_secs(5), || modes().trim() == "alternate screen 0, cursor 1");
    assert_eq!(modes().trim(), "alternate screen 0, cursor 1", "after q:\n{}", tmux.screen());
    // `sh` leaves the terminal's modes as lab-top left them: stty shows whether raw mode was undone.
    tmux.type_line(
        "stty -a | tr ' ' '\\n' | grep -x -e -icanon -e icanon -e -echo -e echo | tr '\\n' ' '; echo :modes",
    );
    let answer = |screen: &str| {
        screen.lines().find(|line| line.ends_with(":modes") && !line.contains("stty")).map(str::to_string)
    };
    let screen = tmux.wait_for("stty's answer", |screen| answer(screen).is_some());
    // After the prompt, if the shell printed one: `icanon echo`, not `-icanon -echo` as raw mode has.
    let modes = format!(" {}", answer(&screen).unwrap());
    assert!(modes.ends_with(" icanon echo :modes"), "the terminal is still raw:\n{screen}");
}

#[test]
fn the_accept_queue_shows_while_lab_epolls_only_thread_sleeps() {
    let server = spawn(server("epoll"), &[]);
    let tmux = Tmux::start("queue", 110, 30);
    tmux.type_line(&format!("{} {}", env!("CARGO_BIN_EXE_lab-top"), url(&server)));
    tmux.wait_for("the first rates", |screen| screen.contains(" live ") && !screen.contains("requests -/s"));

    // The one thread sleeps, so /stats cannot answer and nobody accepts: the handshakes that
    // complete meanwhile wait in the accept queue, which lab-top reads from the kernel instead.
    let mut sleeper = server.connect();
    sleeper.send(&labkit::get("/sleep?ms=4000"));
    tmux.wait_for("lab-top to see the server busy", |screen| screen.contains("no answer to /stats"));
    let waiting: Vec<_> = (0..12).map(|_| server.connect()).collect();
    let screen = tmux.wait_for("12 connections in the accept queue", |screen| screen.contains(" 12/511 "));
    assert!(screen.contains("from /proc/net/tcp"), "{screen}");

    assert_eq!(sleeper.read_response().status, 200);
    let screen = tmux.wait_for("the queue drained and /stats back", |screen| {
        screen.contains(" live ") && screen.contains(" 0/511 ") && screen.contains("peak 12")
    });
    assert!(
        screen.contains(&format!("open {}", waiting.len() + 2)),
        "12 waiting, the sleeper, lab-top:\n{screen}"
    );
}
