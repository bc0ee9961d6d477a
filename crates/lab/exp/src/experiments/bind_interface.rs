//! bind-interface: a server bound to one address is reachable only there; 0.0.0.0 is every
//! interface, and lab-* warn about it.

use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::Experiment;
use crate::kernel;
use crate::net;
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "bind-interface",
    summary: "bound to 127.0.0.1 or to one interface's address: reachable only there; 0.0.0.0: everywhere, with a warning",
    claim: "A machine has several interfaces, each with an address. A backend that listens on one \
            address is reachable only through it; one that names no address (0.0.0.0) listens on \
            every interface, and is exposed wherever the machine is.",
    notes: "'Server listens on an address:port ... if you say just listen on port 8080 and don't \
            specify an address you're listening on all these interfaces and that makes your backend \
            exposed to the public'",
    needs_namespace: true,
    run,
};

/// The veth pair: the server's end and the outside end, in a second namespace.
const INSIDE: &str = "10.77.0.1";
const OUTSIDE: &str = "10.77.0.2";
const PORT: u16 = 8080;

fn run(report: &mut Report) {
    if !kernel::have("ip") {
        report.skip("needs ip (iproute2) to make a veth pair: scripts/install-tools.sh ip");
        return;
    }
    report.does(format!(
        "in its namespace, makes a veth pair: lab-in ({INSIDE}/24, here) and lab-out ({OUTSIDE}/24), \
         moved into a second namespace that plays 'the network outside'; the namespace's own lo has 127.0.0.1"
    ));
    report.does(format!(
        "starts lab-epoll on port {PORT} bound in turn to 127.0.0.1, {INSIDE} and 0.0.0.0, and \
         connects to it through lo (127.0.0.1), to {INSIDE} from inside, and to {INSIDE} from the outside namespace \
         through the veth; reads ss -ltn and the server's warnings"
    ));
    kernel::run("ip", &["link", "add", "lab-in", "type", "veth", "peer", "name", "lab-out"]);
    kernel::run("ip", &["addr", "add", &format!("{INSIDE}/24"), "dev", "lab-in"]);
    kernel::run("ip", &["link", "set", "lab-in", "up"]);
    let outside = Outside::start();

    let targets: [(&str, SocketAddr, bool); 3] = [
        ("inside via lo 127.0.0.1", SocketAddr::from(([127, 0, 0, 1], PORT)), false),
        ("inside to 10.77.0.1", SocketAddr::new(INSIDE.parse().unwrap(), PORT), false),
        ("outside, through the veth, to 10.77.0.1", SocketAddr::new(INSIDE.parse().unwrap(), PORT), true),
    ];
    let mut table = serde_json::Map::new();
    let mut results = Vec::new();
    for bind in ["127.0.0.1", INSIDE, "0.0.0.0"] {
        let addr = format!("{bind}:{PORT}");
        let server = net::start("lab-epoll", &["--addr", &addr]);
        let listening = kernel::ss_listeners(PORT).first().map(|l| l.local.clone()).unwrap_or_default();
        let mut row = serde_json::Map::new();
        let mut reached = Vec::new();
        for (label, target, from_outside) in &targets {
            let outcome = if *from_outside { outside.connect(*target) } else { try_connect(*target) };
            reached.push(outcome.is_ok());
            row.insert(label.to_string(), serde_json::json!(outcome.clone().unwrap_or_else(|e| e)));
        }
        thread::sleep(Duration::from_millis(100));
        let warned = server.stderr_text().to_lowercase().contains("every interface");
        row.insert("warned".into(), warned.into());
        row.insert("ss_local_address".into(), listening.clone().into());
        report.observe(format!(
            "bound to {bind} (ss: {listening}): {}; warning on stderr: {}",
            targets
                .iter()
                .zip(&reached)
                .map(|((label, _, _), ok)| format!("{label}: {}", if *ok { "connected" } else { "refused" }))
                .collect::<Vec<_>>()
                .join(", "),
            if warned { "yes" } else { "no" }
        ));
        table.insert(bind.to_string(), serde_json::Value::Object(row));
        results.push((bind, reached, warned));
    }
    report.figure("reachability", serde_json::Value::Object(table));
    let expect = |bind: &str| -> [bool; 3] {
        match bind {
            "127.0.0.1" => [true, false, false],
            "0.0.0.0" => [true, true, true],
            _ => [false, true, true],
        }
    };
    for (bind, reached, warned) in &results {
        let expected = expect(bind);
        report.check(
            format!(
                "bound to {bind}: reachable exactly through {}{}",
                match *bind {
                    "127.0.0.1" => "lo (not from outside, not at 10.77.0.1)",
                    "0.0.0.0" => "lo, 10.77.0.1 and from outside",
                    _ => "10.77.0.1, from inside and outside (not at 127.0.0.1)",
                },
                if *bind == "0.0.0.0" { ", with a warning" } else { ", without a warning" }
            ),
            reached.as_slice() == expected && *warned == (*bind == "0.0.0.0"),
            format!("reached {reached:?}, warned {warned}"),
        );
    }
}

/// Connects and says `connected` or the error.
fn try_connect(target: SocketAddr) -> Result<String, String> {
    TcpStream::connect_timeout(&target, Duration::from_secs(2))
        .map(|_| "connected".to_string())
        .map_err(|e| e.to_string())
}

/// What the outside thread is asked to do.
enum Job {
    Connect(SocketAddr),
    Ip(Vec<String>),
}

/// A thread in a second network namespace, holding the outside end of the veth pair; it connects
/// and runs `ip` on request (a process it starts is in its namespace too).
struct Outside {
    jobs: mpsc::Sender<(Job, mpsc::Sender<Result<String, String>>)>,
}

impl Outside {
    fn start() -> Outside {
        let (jobs, incoming) = mpsc::channel::<(Job, mpsc::Sender<Result<String, String>>)>();
        let (ready_tx, ready) = mpsc::channel();
        thread::spawn(move || {
            // unshare(CLONE_NEWNET) in a thread moves only that thread (and what it starts).
            sys::netns::enter_new().unwrap_or_else(|e| panic!("{e}"));
            let _ = ready_tx.send(sys::cpu::thread_id());
            for (job, reply) in incoming {
                let outcome = match job {
                    Job::Connect(target) => try_connect(target),
                    Job::Ip(args) => {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        Ok(kernel::run("ip", &args))
                    }
                };
                let _ = reply.send(outcome);
            }
        });
        let tid = ready.recv().expect("the outside thread started");
        // Moved from here (the server's namespace) into the thread's, by its thread id.
        kernel::run("ip", &["link", "set", "lab-out", "netns", &tid.to_string()]);
        let outside = Outside { jobs };
        for args in
            [vec!["addr", "add", "10.77.0.2/24", "dev", "lab-out"], vec!["link", "set", "lab-out", "up"]]
        {
            outside
                .ask(Job::Ip(args.into_iter().map(str::to_owned).collect()))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        outside
    }

    fn ask(&self, job: Job) -> Result<String, String> {
        let (reply, answer) = mpsc::channel();
        self.jobs.send((job, reply)).expect("outside thread");
        answer.recv().expect("outside thread")
    }

    fn connect(&self, target: SocketAddr) -> Result<String, String> {
        self.ask(Job::Connect(target))
    }
}
