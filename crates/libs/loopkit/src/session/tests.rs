//! The connection core driven by hand: byte strings in, an `Instant` moved forward by hand, no
//! socket, no epoll, no thread. Responses are tagged `<seq:path>` by the test's executor, so what
//! is checked is the session's order and decisions, not the routes' bodies (the conformance suite
//! checks those against the real servers).

use std::time::{Duration, Instant};

use http1::{Action, Job};

use super::*;

/// Executes every request here, answering `<n:path>` for the n-th request it was given; or, with
/// `elsewhere`, records it with its `seq` and answers nothing (the test completes it later).
#[derive(Default)]
struct Exec {
    elsewhere: bool,
    seen: Vec<(u64, String)>,
}

fn path_of(job: &Job<'_>) -> String {
    match &job.action {
        Action::Hello => "/".to_string(),
        Action::Sleep { ms } => format!("/sleep?ms={ms}"),
        Action::Spin { us } => format!("/spin?us={us}"),
        Action::Echo(body) => format!("echo:{}", String::from_utf8_lossy(body)),
        other => format!("{other:?}"),
    }
}

impl Execute for Exec {
    fn execute(&mut self, seq: u64, job: Job<'_>, out: &mut Vec<u8>) -> Executed {
        let path = path_of(&job);
        self.seen.push((seq, path.clone()));
        if self.elsewhere {
            return Executed::Elsewhere;
        }
        out.extend_from_slice(format!("<{}:{path}>", self.seen.len() - 1).as_bytes());
        Executed::Here
    }
}

fn budget() {
    set_memory_budget(1 << 30);
}

/// A session and its clock, driven as a loop would: everything the session wants sent is taken at
/// once into `sent`.
struct Drive {
    session: Session,
    now: Instant,
    exec: Exec,
    sent: Vec<u8>,
}

impl Drive {
    fn new() -> Self {
        budget();
        let now = Instant::now();
        Drive { session: Session::new(now), now, exec: Exec::default(), sent: Vec::new() }
    }

    fn elsewhere() -> Self {
        let mut drive = Drive::new();
        drive.exec.elsewhere = true;
        drive
    }

    /// Runs the session until it wants something other than sending or its next turn.
    fn settle(&mut self) -> Want {
        loop {
            match self.session.next(self.now, &mut self.exec) {
                Want::Send => {
                    let n = self.session.output().len();
                    self.sent.extend_from_slice(self.session.output());
                    self.session.sent(n);
                }
                Want::Yield => {}
                want => return want,
            }
        }
    }

    /// Receives `bytes`, then settles.
    fn feed(&mut self, bytes: &[u8]) -> Want {
        assert_eq!(self.session.receive(bytes), bytes.len(), "the session took every byte");
        self.settle()
    }

    fn sent_text(&self) -> String {
        String::from_utf8_lossy(&self.sent).into_owned()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

/// Requests of every framing, each with the whole response the test's executor gives it.
fn cases() -> Vec<(&'static [u8], &'static str)> {
    vec![
        (GET, "<0:/>"),
        (b"GET /spin?us=3 HTTP/1.1\r\nHost: t\r\n\r\n", "<0:/spin?us=3>"),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", "<0:echo:hello>"),
        (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            "<0:echo:abcde>",
        ),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "<0:/>"),
    ]
}

#[test]
fn a_request_cut_at_every_byte_gets_the_answer_of_the_whole() {
    for (request, answer) in cases() {
        for cut in 0..=request.len() {
            let mut drive = Drive::new();
            assert_eq!(drive.feed(&request[..cut]), Want::Receive, "cut at {cut} of {request:?}");
            if cut < request.len() {
                assert_eq!(drive.sent_text(), "", "nothing answered before the request is whole");
                assert_eq!(drive.feed(&request[cut..]), Want::Receive);
            }
            assert_eq!(drive.sent_text(), answer, "cut at {cut} of {:?}", String::from_utf8_lossy(request));
        }
    }
}

#[test]
fn a_request_sent_one_byte_at_a_time_is_answered_once() {
    for (request, answer) in cases() {
        let mut drive = Drive::new();
        for byte in request {
            assert_eq!(drive.feed(std::slice::from_ref(byte)), Want::Receive);
        }
        assert_eq!(drive.sent_text(), answer);
        assert_eq!(drive.exec.seen.len(), 1);
    }
}

#[test]
fn a_pipelined_batch_is_answered_in_order_in_one_send() {
    let mut drive = Drive::new();
    let batch: Vec<u8> =
        (0..16).flat_map(|i| format!("GET /spin?us={i} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()).collect();
    assert_eq!(drive.session.receive(&batch), batch.len());
    assert_eq!(drive.session.next(drive.now, &mut drive.exec), Want::Send);
    let expected: String = (0..16).map(|i| format!("<{i}:/spin?us={i}>")).collect();
    assert_eq!(String::from_utf8_lossy(drive.session.output()), expected, "all 16 in one output");
    assert_eq!(drive.settle(), Want::Receive);
}

#[test]
fn a_batch_cut_anywhere_is_answered_in_order() {
    let batch = [GET, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi", GET].concat();
    for cut in 0..=batch.len() {
        let mut drive = Drive::new();
        drive.feed(&batch[..cut]);
        drive.feed(&batch[cut..]);
        assert_eq!(drive.sent_text(), "<0:/><1:echo:hi><2:/>", "cut at {cut}");
    }
}

#[test]
fn completions_out_of_order_leave_in_request_order() {
    let mut drive = Drive::elsewhere();
    let batch = [&b"GET /sleep?ms=3 HTTP/1.1\r\nHost: t\r\n\r\n"[..], GET, GET].concat();
    assert_eq!(drive.feed(&batch), Want::Receive);
    let seqs: Vec<u64> = drive.exec.seen.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [0, 1, 2]);
    drive.session.complete(2, b"<2>".to_vec());
    drive.session.complete(1, b"<1>".to_vec());
    assert_eq!(drive.settle(), Want::Receive);
    assert_eq!(drive.sent_text(), "", "nothing leaves before the first response");
    drive.session.complete(0, b"<0>".to_vec());
    drive.settle();
    assert_eq!(drive.sent_text(), "<0><1><2>");
}

#[test]
fn an_interim_100_continue_waits_for_the_responses_before_it() {
    let mut drive = Drive::elsewhere();
    let head = b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    drive.feed(&[GET, &head[..]].concat());
    assert_eq!(drive.sent_text(), "", "100 Continue is not sent ahead of the first response");
    drive.session.complete(0, b"<0>".to_vec());
    drive.settle();
    assert_eq!(drive.sent_text(), "<0>HTTP/1.1 100 Continue\r\n\r\n");
    drive.feed(b"hi");
    let (seq, path) = drive.exec.seen.last().cloned().unwrap();
    assert_eq!(path, "echo:hi");
    drive.session.complete(seq, b"<1>".to_vec());
    drive.settle();
    assert_eq!(drive.sent_text(), "<0>HTTP/1.1 100 Continue\r\n\r\n<1>");
}

#[test]
fn a_100_continue_goes_out_at_once_when_nothing_is_ahead_of_it() {
    let mut drive = Drive::new();
    drive.feed(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(drive.sent_text(), "HTTP/1.1 100 Continue\r\n\r\n");
    drive.feed(b"ok");
    assert_eq!(drive.sent_text(), "HTTP/1.1 100 Continue\r\n\r\n<0:echo:ok>");
}

#[test]
fn a_slow_request_goes_after_the_responses_before_it_are_sent_then_yields() {
    let mut drive = Drive::new();
    let batch = [GET, b"GET /sleep?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n", GET].concat();
    drive.session.receive(&batch);
    let now = drive.now;
    assert_eq!(drive.session.next(now, &mut drive.exec), Want::Send);
    assert_eq!(drive.session.output(), b"<0:/>", "only what came before the slow one");
    drive.session.sent(5);
    assert_eq!(drive.session.next(now, &mut drive.exec), Want::Send);
    assert_eq!(drive.session.output(), b"<1:/sleep?ms=1>");
    drive.session.sent(15);
    assert_eq!(drive.session.next(now, &mut drive.exec), Want::Yield, "the loop gets its turn back");
    assert_eq!(drive.settle(), Want::Receive);
    assert_eq!(drive.sent_text(), "<2:/>");
}

#[test]
fn a_short_send_goes_on_where_it_stopped_and_nothing_is_read_meanwhile() {
    let mut drive = Drive::new();
    drive.session.receive(&[GET, GET].concat());
    assert_eq!(drive.session.next(drive.now, &mut drive.exec), Want::Send);
    drive.session.sent(3);
    assert_eq!(drive.session.output(), b"/><1:/>");
    assert!(drive.session.reading_paused(), "output is waiting");
    assert_eq!(drive.session.next(drive.now, &mut drive.exec), Want::Send, "not Receive");
    drive.session.sent(7);
    assert!(!drive.session.reading_paused());
    assert_eq!(drive.session.next(drive.now, &mut drive.exec), Want::Receive);
}

#[test]
fn no_more_than_max_in_flight_requests_execute_elsewhere_at_once() {
    let mut drive = Drive::elsewhere();
    let total = MAX_IN_FLIGHT + 3;
    assert_eq!(drive.feed(&GET.repeat(total)), Want::Wait, "reading paused");
    assert!(drive.session.reading_paused());
    assert_eq!(drive.exec.seen.len(), MAX_IN_FLIGHT);
    drive.session.complete(0, b"<0>".to_vec());
    assert_eq!(drive.settle(), Want::Wait, "one more sent elsewhere, the limit again");
    assert_eq!(drive.exec.seen.len(), MAX_IN_FLIGHT + 1);
    for seq in 1..total as u64 {
        drive.session.complete(seq, b".".to_vec());
        drive.settle();
    }
    assert_eq!(drive.exec.seen.len(), total);
    assert_eq!(drive.settle(), Want::Receive);
}

#[test]
fn the_end_of_the_stream_finishes_after_the_answers_and_closes() {
    let mut drive = Drive::elsewhere();
    drive.feed(GET);
    drive.session.received_eof();
    assert_eq!(drive.settle(), Want::Wait, "its request is still executing");
    drive.session.complete(0, b"<0>".to_vec());
    assert_eq!(drive.settle(), Want::Close, "the peer closed: nothing to linger for");
    assert_eq!(drive.sent_text(), "<0>");
}

#[test]
fn connection_close_finishes_and_leftover_bytes_ask_for_lingering() {
    let mut drive = Drive::new();
    let close = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_eq!(drive.feed(close), Want::Finish { unread_input: false });
    let mut drive = Drive::new();
    assert_eq!(drive.feed(&[&close[..], GET].concat()), Want::Finish { unread_input: true });
    assert_eq!(drive.sent_text(), "<0:/>", "the request after Connection: close is not executed");
    drive.session.linger(drive.now);
    assert_eq!(drive.settle(), Want::Discard);
}

#[test]
fn a_framing_error_is_answered_in_its_turn_then_the_session_finishes() {
    let mut drive = Drive::elsewhere();
    assert_eq!(drive.feed(&[GET, b"GARBAGE\r\n\r\n"].concat()), Want::Wait);
    assert!(drive.session.reading_paused(), "closing: no more reading");
    drive.session.complete(0, b"<0>".to_vec());
    assert_eq!(drive.settle(), Want::Finish { unread_input: true });
    let sent = drive.sent_text();
    assert!(sent.starts_with("<0>HTTP/1.1 400 "), "{sent}");
    assert!(sent.contains("Connection: close"), "{sent}");
}

#[test]
fn draining_closes_once_what_is_in_flight_is_answered() {
    let mut drive = Drive::elsewhere();
    drive.feed(GET);
    drive.session.begin_drain();
    assert_eq!(drive.settle(), Want::Wait);
    drive.session.complete(0, b"<0>".to_vec());
    assert_eq!(drive.settle(), Want::Close, "draining: no lingering");
    let mut idle = Drive::new();
    idle.session.begin_drain();
    assert_eq!(idle.settle(), Want::Close, "an idle connection closes at once");
}

const SECOND: Duration = Duration::from_secs(1);
const TIMEOUTS: Timeouts = Timeouts {
    idle: Some(Duration::from_secs(10)),
    header: Some(Duration::from_secs(3)),
    body: None,
    body_min_rate: 0,
};

#[test]
fn an_idle_connection_closes_at_its_idle_deadline_and_not_before() {
    let mut drive = Drive::new();
    drive.feed(GET);
    let deadline = drive.session.deadline(&TIMEOUTS).expect("an idle deadline");
    assert_eq!(deadline, drive.now + Duration::from_secs(10));
    assert_eq!(
        drive.session.handle_timeout(deadline - Duration::from_millis(1), &TIMEOUTS),
        Expired::Nothing
    );
    assert_eq!(drive.session.handle_timeout(deadline, &TIMEOUTS), Expired::Close);
    assert_eq!(Drive::new().session.deadline(&Timeouts::default()), None, "no timeouts, no deadline");
}

#[test]
fn a_head_that_trickles_gets_408_at_its_header_deadline_however_active_it_is() {
    let mut drive = Drive::new();
    let start = drive.now;
    for byte in &b"GET / HTTP/1.1\r\nHo"[..] {
        drive.feed(std::slice::from_ref(byte));
        drive.advance(Duration::from_millis(100)); // active all the time: the idle timer never runs out
    }
    let deadline = drive.session.deadline(&TIMEOUTS).expect("a header deadline");
    assert_eq!(deadline, start + Duration::from_secs(3), "from the head's first byte");
    assert_eq!(
        drive.session.handle_timeout(deadline - Duration::from_millis(1), &TIMEOUTS),
        Expired::Nothing
    );
    assert_eq!(drive.session.handle_timeout(deadline, &TIMEOUTS), Expired::Answered(Late::Head));
    drive.now = deadline;
    assert_eq!(drive.settle(), Want::Finish { unread_input: true });
    let sent = drive.sent_text();
    assert!(sent.starts_with("HTTP/1.1 408 "), "{sent}");
    assert!(sent.contains("request head not received in time"), "{sent}");
}

#[test]
fn a_body_that_stalls_gets_408_at_the_idle_deadline() {
    let mut drive = Drive::new();
    drive.feed(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    assert_eq!(
        drive.session.deadline(&TIMEOUTS),
        Some(drive.now + Duration::from_secs(10)),
        "not the header one"
    );
    drive.advance(10 * SECOND);
    assert_eq!(drive.session.handle_timeout(drive.now, &TIMEOUTS), Expired::Answered(Late::Body));
    drive.settle();
    assert!(drive.sent_text().contains("request body not received in time"), "{}", drive.sent_text());
}

const BODY_TIMEOUTS: Timeouts = Timeouts {
    idle: Some(Duration::from_secs(60)),
    header: Some(Duration::from_secs(3)),
    body: Some(Duration::from_secs(20)),
    body_min_rate: 500,
};

/// R-U-Dead-Yet: a body that keeps trickling keeps the idle timer fresh; `--body-timeout` counts
/// from the end of the head, extended a second per `--body-min-rate` bytes received.
#[test]
fn a_body_that_trickles_gets_408_at_its_body_deadline_extended_by_what_arrived() {
    let mut drive = Drive::new();
    let start = drive.now;
    drive.feed(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nab");
    assert_eq!(drive.session.deadline(&BODY_TIMEOUTS), Some(start + 20 * SECOND), "from the end of the head");
    for _ in 0..10 {
        drive.advance(SECOND);
        drive.feed(&[b'x'; 100]); // 1,000 bytes in all: two seconds more
    }
    let deadline = drive.session.deadline(&BODY_TIMEOUTS).expect("a body deadline");
    assert_eq!(deadline, start + 22 * SECOND);
    assert_eq!(
        drive.session.handle_timeout(deadline - Duration::from_millis(1), &BODY_TIMEOUTS),
        Expired::Nothing
    );
    assert_eq!(drive.session.handle_timeout(deadline, &BODY_TIMEOUTS), Expired::Answered(Late::Body));
    drive.now = deadline;
    assert_eq!(drive.settle(), Want::Finish { unread_input: true });
    assert!(drive.sent_text().starts_with("HTTP/1.1 408 "), "{}", drive.sent_text());
    assert!(drive.sent_text().contains("request body not received in time"), "{}", drive.sent_text());
}

/// A body at the minimum rate moves its deadline as fast as time passes: never cut.
#[test]
fn a_body_that_keeps_the_minimum_rate_is_never_cut() {
    let mut drive = Drive::new();
    drive.feed(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..60 {
        drive.advance(SECOND);
        assert_eq!(drive.session.handle_timeout(drive.now, &BODY_TIMEOUTS), Expired::Nothing);
        drive.feed(format!("1f0\r\n{}\r\n", "x".repeat(0x1f0)).as_bytes()); // 500 bytes, framing too
    }
    drive.feed(b"0\r\n\r\n");
    assert!(drive.sent_text().starts_with("<0:echo:x"), "{}", &drive.sent_text()[..20]);
}

/// The body's clock starts when the server waits for it: after the `100 Continue` is sent, and for
/// a request pipelined behind one still executing, once that one is answered (at the first sweep
/// that finds the server waiting).
#[test]
fn the_body_clock_runs_only_while_the_server_waits_for_the_body() {
    let mut drive = Drive::new();
    drive
        .session
        .receive(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(drive.session.next(drive.now, &mut drive.exec), Want::Send, "the 100 Continue");
    drive.advance(30 * SECOND); // the client does not take it
    assert_eq!(drive.session.handle_timeout(drive.now, &BODY_TIMEOUTS), Expired::Nothing);
    let n = drive.session.output().len();
    drive.session.sent(n);
    assert_eq!(drive.settle(), Want::Receive);
    drive.advance(Duration::from_millis(300)); // the next sweep sees the server waiting: the clock starts
    assert_eq!(drive.session.handle_timeout(drive.now, &BODY_TIMEOUTS), Expired::Nothing);
    assert_eq!(
        drive.session.deadline(&BODY_TIMEOUTS),
        Some(drive.now + 20 * SECOND),
        "from the 100 Continue"
    );

    let mut behind = Drive::elsewhere();
    behind.feed(b"GET /sleep?ms=5 HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab");
    behind.advance(30 * SECOND);
    assert_eq!(behind.session.handle_timeout(behind.now, &BODY_TIMEOUTS), Expired::Nothing, "held behind");
    behind.session.complete(0, b"<0>".to_vec());
    assert_eq!(behind.settle(), Want::Receive);
    assert_eq!(behind.session.handle_timeout(behind.now, &BODY_TIMEOUTS), Expired::Nothing);
    assert_eq!(behind.session.deadline(&BODY_TIMEOUTS), Some(behind.now + 20 * SECOND));
    let off = Timeouts { body: None, ..BODY_TIMEOUTS };
    behind.advance(59 * SECOND);
    assert_eq!(behind.session.handle_timeout(behind.now, &off), Expired::Nothing, "--body-timeout 0");
}

#[test]
fn no_deadline_runs_while_a_request_executes_or_output_waits_for_the_client() {
    let mut drive = Drive::elsewhere();
    drive.feed(b"GET /sleep?ms=5 HTTP/1.1\r\nHost: t\r\n\r\nGET / HT");
    assert_eq!(drive.session.deadline(&TIMEOUTS), None, "executing: neither timer runs");
    drive.advance(60 * SECOND);
    assert_eq!(drive.session.handle_timeout(drive.now, &TIMEOUTS), Expired::Nothing);

    let mut blocked = Drive::new();
    blocked.session.receive(&[GET, b"GET / HT"].concat());
    assert_eq!(blocked.session.next(blocked.now, &mut blocked.exec), Want::Send);
    blocked.session.sent(1); // the client takes one byte, then nothing
    blocked.advance(60 * SECOND);
    assert_ne!(
        blocked.session.handle_timeout(blocked.now, &TIMEOUTS),
        Expired::Answered(Late::Head),
        "no 408 for a head the server is not reading"
    );
}

#[test]
fn lingering_ends_at_its_deadline() {
    let mut drive = Drive::new();
    drive.feed(&[&b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..], GET].concat());
    drive.session.linger(drive.now);
    let deadline = drive.session.deadline(&TIMEOUTS).expect("a linger deadline");
    assert_eq!(deadline, drive.now + LINGER);
    assert_eq!(
        drive.session.handle_timeout(deadline - Duration::from_millis(1), &TIMEOUTS),
        Expired::Nothing
    );
    assert_eq!(drive.session.handle_timeout(deadline, &TIMEOUTS), Expired::Close);
}

/// The bytes of requests being answered elsewhere count against the memory budget beyond
/// `SMALL_ANSWERING` per connection, until their responses are sent: a copy executing on
/// another thread, or an answer waiting behind an earlier one, is memory too.
#[test]
fn requests_being_answered_hold_the_budget_until_their_responses_are_sent() {
    let mut drive = Drive::elsewhere();
    let small = b"GET /sleep?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n";
    let body = vec![b'x'; 3 * SMALL_ANSWERING];
    let mut large =
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    large.extend_from_slice(&body);
    drive.feed(&[&small[..], &large].concat());
    assert_eq!(drive.exec.seen.len(), 2);
    let expected = small.len() + large.len() - SMALL_ANSWERING;
    assert_eq!(drive.session.answering.bytes(), expected, "both requests executing elsewhere");
    // The large one is answered first; its answer waits behind the small one's, and still counts.
    drive.session.complete(1, b"large".to_vec());
    assert_eq!(drive.session.answering.bytes(), expected, "answered, waiting for its turn");
    drive.session.complete(0, b"small".to_vec());
    assert_eq!(drive.session.next(drive.now, &mut drive.exec), Want::Send);
    assert_eq!(drive.session.answering.bytes(), expected, "not sent yet");
    drive.settle();
    assert_eq!(drive.sent_text(), "smalllarge");
    assert_eq!(drive.session.answering.bytes(), 0, "sent: the budget is back");
}

/// Framing that knows nothing of the request's length.
fn unknown() -> http1::Progress {
    http1::Progress::default()
}

/// Framing that has read a head giving a Content-Length.
fn known_length() -> http1::Progress {
    let mut progress = http1::Progress::default();
    let head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n";
    assert!(matches!(parse_request_resuming(head, &mut progress), Ok(Parsed::Partial { .. })));
    assert!(progress.length_known());
    progress
}

#[test]
fn the_input_buffer_grows_with_the_bytes_received_not_with_what_a_request_declares() {
    budget();
    let mut input = Input::new();
    assert!(input.grow_for(0, 0, &unknown()).is_ok());
    assert_eq!(input.space().len(), INITIAL_INPUT);
    // A request declared a megabyte long: no room for it until its bytes fill what there is.
    assert!(input.grow_for(1 << 20, 0, &unknown()).is_ok());
    assert_eq!(input.buf.len(), INITIAL_INPUT, "nothing for what is only declared");
    input.filled(100);
    assert!(input.grow_for(1 << 20, 0, &unknown()).is_ok());
    assert_eq!(input.buf.len(), INITIAL_INPUT, "room left: no growth");
    input.filled(INITIAL_INPUT - 100);
    assert!(input.grow_for(1 << 20, 0, &unknown()).is_ok());
    assert_eq!(input.buf.len(), 2 * INITIAL_INPUT, "full: it doubles");
    // Bytes the transport says it has received and not yet handed over count as received: one
    // growth makes room for them all, rather than a doubling per read.
    let mut told = Input::new();
    assert!(told.grow_for(0, 0, &unknown()).is_ok());
    told.filled(INITIAL_INPUT);
    assert!(told.grow_for(1 << 20, 50_000, &unknown()).is_ok());
    assert_eq!(told.buf.len(), INITIAL_INPUT + 50_000);
    // Doubling stops at the known length of the request...
    let mut needed = Input::new();
    assert!(needed.grow_for(0, 0, &unknown()).is_ok());
    needed.filled(INITIAL_INPUT);
    assert!(needed.grow_for(INITIAL_INPUT + 10, 0, &known_length()).is_ok());
    assert_eq!(needed.buf.len(), INITIAL_INPUT + 10, "no further than the request needs");
    // ...but not at a chunked body's `need`, a lower bound only: growing to it would grow a few
    // bytes (and copy the whole buffer) per chunk.
    let mut chunked = Input::new();
    assert!(chunked.grow_for(0, 0, &unknown()).is_ok());
    chunked.filled(INITIAL_INPUT);
    assert!(chunked.grow_for(INITIAL_INPUT + 3, 0, &unknown()).is_ok());
    assert_eq!(chunked.buf.len(), 2 * INITIAL_INPUT, "it doubles");
    // ...and, with no length known, goes on up to MAX_INPUT.
    let mut grown = input.buf.len();
    while grown < MAX_INPUT {
        let room = input.space().len();
        input.filled(room);
        assert!(input.grow_for(0, 0, &unknown()).is_ok());
        assert!(input.buf.len() <= MAX_INPUT);
        grown = input.buf.len();
    }
    let room = input.space().len();
    input.filled(room);
    assert!(input.is_full());
    assert!(matches!(input.grow_for(0, 0, &unknown()), Err(Refused::Limit)), "past MAX_INPUT");
    // Consumed in full, a large buffer is given back.
    input.consume(input.len());
    assert_eq!(input.buf.len(), INITIAL_INPUT);
}

/// Many slow bodies declaring a megabyte each hold what they sent, not what they declared: the
/// memory budget is not drawn on until a connection's bytes pass `SMALL_INPUT`.
#[test]
fn a_declared_length_draws_nothing_from_the_memory_budget() {
    let mut drive = Drive::new();
    drive.feed(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\nabc");
    assert_eq!(drive.session.read_buffer().map(|space| !space.is_empty()), Some(true));
    assert_eq!(drive.session.input.buf.len(), INITIAL_INPUT);
    assert_eq!(drive.session.input.reserved.bytes(), 0);
}

#[test]
fn consumed_bytes_make_room_before_the_buffer_grows() {
    budget();
    let mut input = Input::new();
    assert!(input.grow_for(0, 0, &unknown()).is_ok());
    input.space()[..INITIAL_INPUT].fill(b'a');
    input.filled(INITIAL_INPUT);
    input.consume(INITIAL_INPUT - 10); // ten bytes of a next request left at the end
    assert!(input.grow_for(0, 0, &unknown()).is_ok());
    assert_eq!(input.buf.len(), INITIAL_INPUT, "no growth while consumed space can be reused");
    assert_eq!(input.space().len(), INITIAL_INPUT - 10);
    assert_eq!(input.data(), &[b'a'; 10][..], "the unconsumed bytes moved to the front");
}

#[test]
fn an_idle_session_holds_no_read_buffer() {
    let drive = Drive::new();
    assert_eq!(drive.session.input.buf.capacity(), 0);
    assert_eq!(drive.session.output.capacity(), 0);
}
