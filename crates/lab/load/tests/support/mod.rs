//! What the lab-load tests share: running lab-load for its JSON, small servers written with
//! std::net that answer well or badly, and finding (and starting) lab-epoll.

#![allow(dead_code)]

use std::env;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use serde_json::Value;

/// Runs lab-load with `args` (plus `--json` to a file of its own and `--no-progress`), checks that
/// it exits 0, and returns its JSON.
pub fn run_load(args: &[&str]) -> Value {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let json = env::temp_dir().join(format!(
        "lab-load-test-{}-{}.json",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_lab-load"))
        .args(args)
        .arg("--no-progress")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running lab-load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "lab-load {args:?}: {}\n{stdout}\n{stderr}", output.status);
    let text = std::fs::read_to_string(&json).expect("lab-load wrote its JSON");
    let _ = std::fs::remove_file(&json);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

/// A number from the JSON, by a path of keys.
pub fn number(json: &Value, path: &[&str]) -> f64 {
    let value = path.iter().fold(json, |v, key| &v[key]);
    value.as_f64().unwrap_or_else(|| panic!("no number at {path:?} in {json:#}"))
}

/// The error counts by class, for messages.
pub fn errors(json: &Value) -> String {
    format!("errors {} first {} lost {}", json["errors"], json["first_errors"], json["lost"])
}

/// Serves every connection on a thread of its own with `handle`; returns the address. The
/// threads live until the test process ends.
pub fn serve(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = Arc::clone(&handle);
            thread::spawn(move || handle(stream));
        }
    });
    addr
}

/// Reads one request head (requests here have no body); false at the end of the stream.
pub fn read_request(reader: &mut impl BufRead) -> bool {
    let mut line = String::new();
    let mut lines = 0;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == "\r\n" && lines > 0 => return true,
            Ok(_) => lines += 1,
        }
    }
}

/// Answers every request on `stream`, in order, with `respond()`.
pub fn answer_each(stream: TcpStream, respond: impl Fn() -> Vec<u8>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while read_request(&mut reader) {
        if writer.write_all(&respond()).is_err() {
            return;
        }
    }
}

pub const HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: test\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

/// A correct keep-alive server.
pub fn good_server() -> SocketAddr {
    serve(|stream| answer_each(stream, || HELLO.to_vec()))
}

/// Reads and discards whatever arrives until the peer goes away.
pub fn drain(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

/// Where `bin` was built: `$ACCEPTLAB_BIN_DIR`, else the workspace's target/release, else
/// target/debug (the same places the server suites look).
pub fn bin_path(bin: &str) -> PathBuf {
    let dirs = match env::var_os("ACCEPTLAB_BIN_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../target");
            vec![target.join("release"), target.join("debug")]
        }
    };
    dirs.iter()
        .map(|dir| dir.join(bin))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{bin} is not in {dirs:?}: build it first: cargo build --release -p epoll"))
}

/// lab-epoll on a port the kernel picks; killed on drop.
pub struct Epoll {
    child: Child,
    pub addr: SocketAddr,
}

impl Epoll {
    pub fn start() -> Self {
        let mut child = Command::new(bin_path("lab-epoll"))
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting lab-epoll");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("lab-epoll said {line:?}"));
        Self { addr: addr.parse().unwrap(), child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
