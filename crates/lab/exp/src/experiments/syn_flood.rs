//! syn-flood: half-open handshakes fill the SYN queue; without SYN cookies legitimate clients are
//! shut out, with them they get in.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use super::Experiment;
use crate::kernel::{self, Counters};
use crate::net::{self, ms, Pending};
use crate::report::Report;

pub const EXPERIMENT: Experiment = Experiment {
    name: "syn-flood",
    summary: "clients that never ACK fill the SYN queue: tcp_syncookies=0 shuts others out, =1 lets them in",
    claim: "A client that sends a SYN and never answers the SYN-ACK leaves a half-open entry in the \
            listener's SYN queue. Enough of them fill it, and the kernel drops the SYNs of \
            legitimate clients, which stall and fail. SYN cookies (net.ipv4.tcp_syncookies=1) let the \
            kernel answer without keeping an entry, so legitimate clients still get in.",
    notes: "'Problems with accepting connections: Clients who don't ACK (I'm sending SYN but not \
            getting ACK) SYN flooding problem: in this case the SYN queue will be full'",
    needs_namespace: true,
    run,
};

const BACKLOG: usize = 8;
const FLOOD: usize = 64;
const LEGIT_TIMEOUT: Duration = Duration::from_millis(2500);

fn run(report: &mut Report) {
    let flood_source: IpAddr = Ipv4Addr::new(127, 0, 0, 2).into();
    report.does(format!(
        "in its own namespace (sysctls there only): starts lab-epoll --backlog {BACKLOG}; \
         tcp_max_syn_backlog stays at {} (the SYN queue is bounded by the backlog too)",
        kernel::sysctl("net/ipv4/tcp_max_syn_backlog")
    ));
    report.does(format!(
        "floods it with {FLOOD} connects from 127.0.0.2 whose sockets carry a socket filter that drops \
         every packet (SO_ATTACH_FILTER `ret #0`): their SYN-ACKs are never answered; then times a \
         legitimate connect from 127.0.0.1 (giving up after {} ms); counts SYN-RECV entries in \
         /proc/net/tcp and ss, and the TcpExt counters; once with tcp_syncookies=0, once with =1",
        LEGIT_TIMEOUT.as_millis()
    ));
    for cookies in [0, 1] {
        kernel::set_sysctl("net/ipv4/tcp_syncookies", &cookies.to_string());
        let backlog = BACKLOG.to_string();
        let server = net::start("lab-epoll", &["--backlog", &backlog]);
        let addr = server.addr();
        let mut observer = net::connect(addr);
        let baseline = legit_connect(addr);
        let before = Counters::now();
        let flood: Vec<Pending> = (0..FLOOD)
            .map(|_| {
                let (fd, _) = sys::client::connect_tcp_prepared(addr, Some(flood_source), |fd| {
                    sys::socket::drop_all_input(fd)
                })
                .unwrap_or_else(|e| panic!("{e}"));
                Pending { fd, started: Instant::now(), completed: None }
            })
            .collect();
        thread::sleep(Duration::from_millis(200));
        let half_open = kernel::syn_recv(addr.port());
        let ss_half_open = kernel::ss(addr.port(), false).iter().filter(|s| s.state == "SYN-RECV").count();
        let flood_connected = flood.iter().filter(|p| sys::client::is_connected(p.fd.as_fd())).count();
        let legit = legit_connect(addr);
        let after = Counters::now();
        let stats = net::stats(&mut observer);
        let delta = |name: &str| before.delta(&after, &format!("TcpExt.{name}"));
        let (full_drop, sent, recv, failed) = (
            delta("TCPReqQFullDrop"),
            delta("SyncookiesSent"),
            delta("SyncookiesRecv"),
            delta("SyncookiesFailed"),
        );
        let stats_full_drop = stats["kernel"]["TCPReqQFullDrop"].as_i64().unwrap_or(-1);
        let stats_cookies = stats["kernel"]["SyncookiesSent"].as_i64().unwrap_or(-1);
        report.observe(format!(
            "tcp_syncookies={cookies}: before the flood a connect took {baseline}; with {FLOOD} \
             flooders: {half_open} SYN-RECV in /proc/net/tcp ({ss_half_open} in ss), {flood_connected} \
             flooders completed; the legitimate connect: {legit}; TcpExt TCPReqQFullDrop +{full_drop}, \
             SyncookiesSent +{sent}, SyncookiesRecv +{recv}, SyncookiesFailed +{failed}; /stats kernel \
             TCPReqQFullDrop {stats_full_drop}, SyncookiesSent {stats_cookies}",
            baseline = describe(&baseline),
            legit = describe(&legit),
        ));
        let key = format!("syncookies_{cookies}");
        report.figure(
            &key,
            serde_json::json!({
                "half_open": half_open, "ss_syn_recv": ss_half_open, "flood_connected": flood_connected,
                "legit_ms": legit.as_ref().ok().map(|t| ms(*t)), "baseline_ms": baseline.as_ref().ok().map(|t| ms(*t)),
                "TCPReqQFullDrop": full_drop, "SyncookiesSent": sent, "SyncookiesRecv": recv,
                "stats_TCPReqQFullDrop": stats_full_drop, "stats_SyncookiesSent": stats_cookies,
            }),
        );
        let queue_full = (BACKLOG..=BACKLOG + 1).contains(&half_open) && ss_half_open == half_open;
        report.check(
            format!("tcp_syncookies={cookies}: the flood fills the SYN queue: {BACKLOG}..={} half-open entries (ss agrees), no flooder completes", BACKLOG + 1),
            queue_full && flood_connected == 0 && baseline.is_ok(),
            format!("{half_open} in /proc/net/tcp, {ss_half_open} in ss, {flood_connected} completed"),
        );
        if cookies == 0 {
            report.check(
                "without cookies, the legitimate connect fails within 2.5 s, and the kernel counts the dropped SYNs (TCPReqQFullDrop ≥ flood − backlog; /stats agrees)",
                legit.is_err() && full_drop >= (FLOOD - BACKLOG - 1) as i64 && sent == 0 && stats_full_drop == full_drop,
                format!("{}, TCPReqQFullDrop +{full_drop} (/stats {stats_full_drop}), SyncookiesSent +{sent}", describe(&legit)),
            );
        } else {
            report.check(
                "with cookies, the legitimate connect succeeds at once (< 500 ms) and is served; SyncookiesSent ≥ flood − backlog, SyncookiesRecv ≥ 1 (its ACK carried a valid cookie)",
                legit.as_ref().is_ok_and(|t| *t < Duration::from_millis(500))
                    && sent >= (FLOOD - BACKLOG - 1) as i64
                    && recv >= 1
                    && full_drop == 0,
                format!("{}, SyncookiesSent +{sent}, SyncookiesRecv +{recv}, TCPReqQFullDrop +{full_drop}", describe(&legit)),
            );
        }
        drop(flood);
    }
}

/// A connect from 127.0.0.1 that gives up after LEGIT_TIMEOUT; on success also GET / on it.
fn legit_connect(addr: std::net::SocketAddr) -> Result<Duration, String> {
    let mut pending = Pending::connect(addr, None);
    net::wait_all(std::slice::from_mut(&mut pending), LEGIT_TIMEOUT);
    let took =
        pending.took().ok_or_else(|| format!("no handshake within {} ms", LEGIT_TIMEOUT.as_millis()))?;
    let mut stream = pending.into_stream();
    match net::get(&mut stream, "/") {
        Ok((200, _)) => Ok(took),
        other => Err(format!("connected in {} ms but GET / gave {other:?}", ms(took))),
    }
}

fn describe(outcome: &Result<Duration, String>) -> String {
    match outcome {
        Ok(took) => format!("connected and served in {} ms", ms(*took)),
        Err(e) => e.clone(),
    }
}
