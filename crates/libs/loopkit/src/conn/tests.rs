//! `Connections` against real loopback sockets and a real epoll: responses that come back out of
//! order, the in-flight and buffer limits, and tokens that outlive their connection.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::*;
use crate::session::MAX_IN_FLIGHT;
use crate::stats::Stats;

fn config() -> Config {
    Config {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        backlog: 16,
        workers: 1,
        cpus: None,
        max_conns: 100,
        idle_timeout: None,
        header_timeout: None,
        body_timeout: None,
        body_min_rate: 0,
        memory_budget: 1 << 30,
        nodelay: true,
        tls: None,
        pause_accept: None,
        idempotency: Default::default(),
    }
}

/// A connected pair: the client's end, and the server's end as the fd `Connections::add` takes.
fn pair(listener: &TcpListener) -> (TcpStream, OwnedFd) {
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    (client, OwnedFd::from(server))
}

/// The requests an executor sent elsewhere, in the order it saw them: (token, seq, path).
type Sent = Rc<RefCell<Vec<(u64, u64, String)>>>;

/// Connections whose executor sends every request elsewhere (as ramcloud's does) and records it.
fn elsewhere() -> (Connections<impl LoopExecutor>, Sent) {
    let stats = Stats::new("test", 1, 100, Vec::new(), &Default::default()).unwrap();
    let sent: Sent = Rc::default();
    let record = Rc::clone(&sent);
    let executor = move |request: Request<'_>, _: &mut Vec<u8>| {
        let path = match &request.job.action {
            http1::Action::Sleep { ms } => format!("/sleep?ms={ms}"),
            other => format!("{other:?}"),
        };
        record.borrow_mut().push((request.token, request.seq, path));
        Executed::Elsewhere
    };
    let conns =
        Connections::with_executor(&config(), stats.worker(0, crate::stats::Role::Loop, None), executor);
    (conns, sent)
}

/// One turn of an event loop: wait (at most 200 ms), hand every event to `conns`, tick.
fn turn<E: LoopExecutor>(poller: &Poller, conns: &mut Connections<E>) {
    let mut events = sys::epoll::Events::with_capacity(64);
    poller.wait(&mut events, Some(Duration::from_millis(200))).unwrap();
    conns.woke_up();
    for event in events.iter() {
        conns.ready(event.token, &event);
    }
    conns.tick();
}

/// Turns the loop until `done`, failing after 2 s.
fn turn_until<E: LoopExecutor>(poller: &Poller, conns: &mut Connections<E>, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !done() {
        assert!(Instant::now() < deadline, "the loop did not get there in 2 s");
        turn(poller, conns);
    }
}

/// Reads `count` responses' bodies (`Content-Length` framed) off `client`.
fn read_bodies(client: &mut TcpStream, count: usize) -> Vec<String> {
    let mut received = Vec::new();
    let mut bodies = Vec::new();
    while bodies.len() < count {
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).expect("a response within 2 s");
        assert!(n > 0, "closed after {} responses: {bodies:?}", bodies.len());
        received.extend_from_slice(&chunk[..n]);
        while let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("Content-Length: "))
                .map_or(0, |value| value.trim().parse().unwrap());
            if received.len() < end + 4 + length {
                break;
            }
            bodies.push(String::from_utf8_lossy(&received[end + 4..end + 4 + length]).to_string());
            received.drain(..end + 4 + length);
        }
    }
    bodies
}

fn response(body: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    http1::response::Response::text(http1::Status::Ok, body.as_bytes()).write_to(&mut bytes);
    bytes
}

#[test]
fn responses_completed_out_of_order_are_written_in_request_order() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let poller = Poller::new().unwrap();
    let (mut conns, sent) = elsewhere();
    let (mut client, fd) = pair(&listener);
    let token = conns.add(&poller, fd).unwrap();
    client.write_all(b"GET /sleep?ms=1 HTTP/1.1\r\nHost: t\r\n\r\nGET /sleep?ms=2 HTTP/1.1\r\nHost: t\r\n\r\nGET /sleep?ms=3 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    turn_until(&poller, &mut conns, || sent.borrow().len() == 3);
    let seqs: Vec<u64> = sent
        .borrow()
        .iter()
        .map(|&(t, seq, _)| {
            assert_eq!(t, token);
            seq
        })
        .collect();
    assert_eq!(seqs, [0, 1, 2]);

    // The third finishes first, then the first, then the second.
    conns.complete(token, 2, response("third"));
    conns.complete(token, 0, response("first"));
    assert_eq!(read_bodies(&mut client, 1), ["first"], "the first is written as soon as it is back");
    conns.complete(token, 1, response("second"));
    assert_eq!(read_bodies(&mut client, 2), ["second", "third"]);
    // A response for a request already answered is dropped, not written twice.
    conns.complete(token, 1, response("again"));
    client.write_all(b"GET /sleep?ms=4 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    turn_until(&poller, &mut conns, || sent.borrow().len() == 4);
    conns.complete(token, 3, response("fourth"));
    assert_eq!(read_bodies(&mut client, 1), ["fourth"]);
}

#[test]
fn no_more_than_max_in_flight_requests_of_one_connection_execute_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let poller = Poller::new().unwrap();
    let (mut conns, sent) = elsewhere();
    let (mut client, fd) = pair(&listener);
    let token = conns.add(&poller, fd).unwrap();
    let total = MAX_IN_FLIGHT + 20;
    client.write_all(&b"GET /sleep?ms=0 HTTP/1.1\r\nHost: t\r\n\r\n".repeat(total)).unwrap();
    turn_until(&poller, &mut conns, || sent.borrow().len() == MAX_IN_FLIGHT);
    for _ in 0..5 {
        turn(&poller, &mut conns);
    }
    assert_eq!(sent.borrow().len(), MAX_IN_FLIGHT, "more than MAX_IN_FLIGHT sent elsewhere at once");

    // Each response that comes back lets one more request go.
    for seq in 0..20 {
        conns.complete(token, seq, response("ok"));
    }
    turn_until(&poller, &mut conns, || sent.borrow().len() == total);
    for seq in 20..total as u64 {
        conns.complete(token, seq, response("ok"));
    }
    assert_eq!(read_bodies(&mut client, total).len(), total);
}

#[test]
fn a_stale_token_finds_nothing_once_its_slot_is_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let poller = Poller::new().unwrap();
    let (mut conns, sent) = elsewhere();

    let (mut first, fd) = pair(&listener);
    let old = conns.add(&poller, fd).unwrap();
    first.write_all(b"GET /sleep?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    turn_until(&poller, &mut conns, || sent.borrow().len() == 1);
    // The client resets with its request still executing elsewhere: the connection closes now.
    sys::client::set_linger_zero(first.as_fd()).unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !conns.is_empty() {
        assert!(Instant::now() < deadline, "the reset connection is still open after 2 s");
        turn(&poller, &mut conns);
    }

    let (mut second, fd) = pair(&listener);
    let new = conns.add(&poller, fd).unwrap();
    assert_eq!(new & 0xffff_ffff, old & 0xffff_ffff, "the freed slot is reused");
    assert_ne!(new, old, "with a new generation");
    // The late response of the closed connection must not reach the new one.
    conns.complete(old, 0, response("stale"));
    second.write_all(b"GET /sleep?ms=2 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    turn_until(&poller, &mut conns, || sent.borrow().len() == 2);
    assert_eq!(sent.borrow()[1], (new, 0, "/sleep?ms=2".to_string()));
    conns.complete(new, 0, response("fresh"));
    assert_eq!(read_bodies(&mut second, 1), ["fresh"]);
}

#[test]
fn a_request_larger_than_the_first_buffer_is_read_whole() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let poller = Poller::new().unwrap();
    let stats = Stats::new("test", 1, 100, Vec::new(), &Default::default()).unwrap();
    let mut conns = Connections::new(&config(), stats.worker(0, crate::stats::Role::Loop, None));
    let (mut client, fd) = pair(&listener);
    conns.add(&poller, fd).unwrap();
    let body = vec![b'x'; 5 * 4096 + 7];
    let mut request =
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(&body);
    client.write_all(&request).unwrap();
    let mut echoed = Vec::new();
    let reader = std::thread::spawn(move || {
        let bodies = read_bodies(&mut client, 1);
        bodies[0].len()
    });
    turn_until(&poller, &mut conns, || reader.is_finished());
    echoed.push(reader.join().unwrap());
    assert_eq!(echoed, [body.len()]);
}
