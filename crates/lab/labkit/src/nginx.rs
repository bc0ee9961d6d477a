//! nginx, the reference: found where the distribution installs it, started from a configuration
//! written for the run into a temporary directory, on the same CPUs as the server it is compared with
//! (lab-bench's rows), and reloaded with another configuration (lab-exp rolling-restart).

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How nginx's workers share the listening socket.
#[derive(Debug, Clone, Copy)]
pub enum Accept {
    /// `accept_mutex on`: workers take turns holding the listener (lab-nginx `--accept mutex`).
    Mutex,
    /// `accept_mutex off`: every worker waits on it with EPOLLEXCLUSIVE (lab-nginx `--accept exclusive`).
    Exclusive,
    /// `listen ... reuseport`: a socket and an accept queue per worker (lab-reuseport).
    Reuseport,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub workers: usize,
    pub cpus: Vec<usize>,
    pub accept: Accept,
    /// `ssl` on the listener, with this certificate and key (lab-bench's TLS workloads).
    pub tls: Option<Tls>,
}

/// The certificate and key nginx serves HTTPS with: make cert's, the lab servers' own.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The nginx binary: on PATH, or in /usr/sbin where Debian puts it (not on every user's PATH).
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// nginx's `worker_cpu_affinity` masks, one per worker: CPU 2 of 4 is `0100`.
fn affinity_masks(cpus: &[usize]) -> String {
    let width = cpus.iter().max().map_or(1, |max| max + 1);
    let masks: Vec<String> = cpus
        .iter()
        .map(|&cpu| (0..width).rev().map(|bit| if bit == cpu { '1' } else { '0' }).collect())
        .collect();
    masks.join(" ")
}

/// The whole configuration: `return 200 "Hello, World!"` for every path, no access log, keep-alive
/// without a request limit, the same 511 backlog as the lab servers. With `tls`: `ssl` on the
/// listener with the lab servers' settings: TLS 1.3 and 1.2, X25519 first then P-256 and P-384 (as
/// the lab servers order them), stateless session tickets on (OpenSSL sends two per full
/// handshake, as rustls does), and nginx's default `ssl_session_cache none` (no cache of sessions
/// on the server: tickets only, as the lab servers).
pub fn render(config: &Config, addr: SocketAddr, dir: &Path) -> String {
    let dir = dir.display();
    let (mutex, reuseport) = match config.accept {
        Accept::Mutex => ("on", ""),
        Accept::Exclusive => ("off", ""),
        Accept::Reuseport => ("off", " reuseport"),
    };
    let mut conf = String::new();
    let _ = writeln!(
        conf,
        "daemon off;\nmaster_process on;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;"
    );
    if fs::metadata("/proc/self").is_ok_and(|me| std::os::unix::fs::MetadataExt::uid(&me) == 0) {
        // Workers otherwise switch to a user (www-data) that a bare lab machine may not have.
        let _ = writeln!(conf, "user root root;");
    }
    let _ = writeln!(conf, "worker_processes {};", config.workers);
    if !config.cpus.is_empty() {
        let _ = writeln!(conf, "worker_cpu_affinity {};", affinity_masks(&config.cpus));
    }
    let _ = writeln!(conf, "events {{ worker_connections 16384; accept_mutex {mutex}; }}");
    let _ = writeln!(conf, "http {{\n  access_log off;\n  default_type text/plain;");
    let _ = writeln!(conf, "  keepalive_requests 1000000000;\n  keepalive_timeout 75s;");
    for temp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(conf, "  {temp}_temp_path {dir}/{temp};");
    }
    let ssl = if let Some(tls) = &config.tls {
        let _ = writeln!(
            conf,
            "  ssl_certificate {};\n  ssl_certificate_key {};",
            tls.cert.display(),
            tls.key.display()
        );
        let _ =
            writeln!(conf, "  ssl_protocols TLSv1.3 TLSv1.2;\n  ssl_ecdh_curve X25519:prime256v1:secp384r1;");
        let _ = writeln!(conf, "  ssl_session_tickets on;");
        " ssl"
    } else {
        ""
    };
    let _ = writeln!(conf, "  server {{\n    listen {addr}{ssl} backlog=511{reuseport};");
    let _ = writeln!(conf, "    location / {{ return 200 \"Hello, World!\"; }}\n  }}\n}}");
    conf
}

/// A running nginx; stopped, with its workers, when dropped.
pub struct Running {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Running {
    /// The master process's.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Rewrites the configuration as `config` (same address) and sends the master SIGHUP, nginx's
    /// reload (`nginx -s reload`): it starts workers on the new configuration and tells the old ones
    /// to finish gracefully. With `listen ... reuseport` the master holds one socket per worker, so
    /// fewer workers closes sockets and more opens new ones.
    pub fn reload(&self, config: &Config) -> Result<(), String> {
        let conf = self.dir.join("nginx.conf");
        fs::write(&conf, render(config, self.addr, &self.dir))
            .map_err(|e| format!("write {}: {e}", conf.display()))?;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGHUP)
            .map_err(|e| format!("kill -HUP nginx: {e}"))
    }

    /// nginx's error log so far (the reloads' notices, any failure).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

/// Starts nginx from `config` in a fresh directory under `scratch`, on a port the kernel picked, and
/// waits until it accepts connections.
pub fn start(binary: &Path, config: &Config, scratch: &Path, ip: IpAddr) -> Result<Running, String> {
    let port = TcpListener::bind((ip, 0))
        .and_then(|probe| probe.local_addr())
        .map_err(|e| format!("bind {ip}:0 (to pick a port): {e}"))?
        .port();
    let dir = scratch.join(format!("nginx-{port}"));
    fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let conf = dir.join("nginx.conf");
    fs::write(&conf, render(config, SocketAddr::new(ip, port), &dir))
        .map_err(|e| format!("write {}: {e}", conf.display()))?;
    let child = Command::new(binary)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
    let addr = SocketAddr::new(ip, port);
    let mut running = Running { child, addr, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        let exited = running.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = fs::read_to_string(running.dir.join("error.log")).unwrap_or_default();
            return Err(format!("nginx on {addr} did not start ({exited:?}): {}", log.trim()));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(running)
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown; the master stops its workers and exits.
        let pid = Pid::from_raw(self.child.id() as i32);
        let workers = crate::process_tree(self.child.id());
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(10));
        }
        for worker in workers {
            let _ = kill(Pid::from_raw(worker as i32), Signal::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real nginx (where installed): a reload to one worker leaves one worker, and it still serves.
    #[test]
    fn a_reload_changes_the_workers_and_nginx_serves_on() {
        let Some(binary) = find() else {
            println!("nginx is not installed: skipped");
            return;
        };
        let config = |workers| Config { workers, cpus: Vec::new(), accept: Accept::Reuseport, tls: None };
        let nginx = start(&binary, &config(2), &std::env::temp_dir(), IpAddr::from([127, 0, 0, 1]))
            .unwrap_or_else(|e| panic!("{e}"));
        let workers = || crate::process_tree(nginx.pid()).len() - 1;
        assert!(crate::eventually(Duration::from_secs(10), || workers() == 2), "{}", nginx.error_log());
        nginx.reload(&config(1)).unwrap_or_else(|e| panic!("{e}"));
        assert!(crate::eventually(Duration::from_secs(10), || workers() == 1), "{}", nginx.error_log());
        let mut stream = TcpStream::connect(nginx.addr).expect("connect");
        std::io::Write::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).expect("read");
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("Hello, World!"), "{answer}");
    }

    #[test]
    fn affinity_masks_put_each_worker_on_its_cpu() {
        assert_eq!(affinity_masks(&[0, 1, 3]), "0001 0010 1000");
        assert_eq!(affinity_masks(&[8]), "100000000");
    }

    #[test]
    fn configuration_names_the_accept_mode() {
        let config = |accept| Config { workers: 2, cpus: vec![0, 1], accept, tls: None };
        let mutex =
            render(&config(Accept::Mutex), SocketAddr::from(([127, 0, 0, 1], 8080)), Path::new("/tmp/x"));
        assert!(mutex.contains("accept_mutex on;") && !mutex.contains("reuseport"));
        let reuseport =
            render(&config(Accept::Reuseport), SocketAddr::from(([127, 0, 0, 1], 8080)), Path::new("/tmp/x"));
        assert!(reuseport.contains("accept_mutex off;") && reuseport.contains("backlog=511 reuseport;"));
        assert!(
            reuseport.contains("worker_processes 2;") && reuseport.contains("worker_cpu_affinity 01 10;")
        );
        let unpinned = render(
            &Config { workers: 1, cpus: vec![], accept: Accept::Reuseport, tls: None },
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            Path::new("/tmp/x"),
        );
        assert!(unpinned.contains("worker_processes 1;") && !unpinned.contains("worker_cpu_affinity"));
        assert!(!reuseport.contains("ssl"));
        let tls = Tls { cert: "/c/server.pem".into(), key: "/c/server.key".into() };
        let ssl = render(
            &Config { tls: Some(tls), ..config(Accept::Mutex) },
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            Path::new("/tmp/x"),
        );
        assert!(ssl.contains("listen 127.0.0.1:8080 ssl backlog=511;"), "{ssl}");
        assert!(
            ssl.contains("ssl_certificate /c/server.pem;")
                && ssl.contains("ssl_certificate_key /c/server.key;")
        );
        assert!(ssl.contains("ssl_ecdh_curve X25519:") && ssl.contains("ssl_session_tickets on;"), "{ssl}");
    }
}
