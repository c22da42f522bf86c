//! The connection machine driven by a simulated shell and a clock that jumps to the next
//! deadline: no sockets, no sleeps.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::{Config, Connection, Ending, Mode, Output, Why};

const IDLE: Duration = Duration::from_secs(600);
const MESSAGE: Duration = Duration::from_secs(32);
const GRACE: Duration = Duration::from_secs(2);
const MS: Duration = Duration::from_millis(1);

/// A request the bad-input verdict can answer (Via, From, To, Call-ID and CSeq present).
const OPTIONS: &[u8] = b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
    From: <sip:b>;tag=1\r\nTo: <sip:a>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\
    Content-Length: 4\r\n\r\nbody";

/// The same request without Content-Length: unframeable on a stream.
const NO_LENGTH: &[u8] = b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK2\r\n\
    From: <sip:b>;tag=1\r\nTo: <sip:a>\r\nCall-ID: c2\r\nCSeq: 2 OPTIONS\r\n\r\n";

fn config() -> Config {
    Config {
        limits: sip::Limits {
            max_message_bytes: 4096,
            ..sip::Limits::default()
        },
        idle_timeout: IDLE,
        message_timeout: MESSAGE,
        close_grace: GRACE,
    }
}

/// One connection, a clock, and a shell that does what the outputs say: delivers, writes
/// (instantly, or never when the peer does not read), flushes its queue, shuts down.
struct Harness {
    conn: Connection,
    t0: Instant,
    now: Instant,
    /// Whether the peer takes what is written; when not, a write hangs until given up on.
    peer_reads: bool,
    /// Messages the shell holds for the peer (its send queue).
    queued: VecDeque<Vec<u8>>,
    /// Everything the peer received, in order.
    wire: Vec<u8>,
    delivered: Vec<Vec<u8>>,
    unframeable: Vec<sip::Error>,
    close: Option<(Why, Ending, Instant)>,
    flushed: bool,
    shutdown_at: Option<Instant>,
    closed_at: Option<Instant>,
}

impl Harness {
    fn new(mode: Mode) -> Harness {
        let t0 = Instant::now();
        Harness::with(t0, Connection::new(t0, mode, config()))
    }

    fn with(t0: Instant, conn: Connection) -> Harness {
        let mut h = Harness {
            conn,
            t0,
            now: t0,
            peer_reads: true,
            queued: VecDeque::new(),
            wire: Vec::new(),
            delivered: Vec::new(),
            unframeable: Vec::new(),
            close: None,
            flushed: false,
            shutdown_at: None,
            closed_at: None,
        };
        h.pump();
        h
    }

    fn at(&self, since_t0: Duration) -> Instant {
        self.t0 + since_t0
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.conn.handle_bytes(self.now, bytes);
        self.pump();
    }

    fn end_of_record(&mut self) {
        self.conn.handle_end_of_record(self.now);
        self.pump();
    }

    fn record(&mut self, bytes: &[u8]) {
        self.conn.handle_bytes(self.now, bytes);
        self.end_of_record();
    }

    /// The engine sends a message on the open connection.
    fn send(&mut self, message: &[u8]) {
        assert!(self.conn.is_open());
        self.write(message);
        self.pump();
    }

    fn peer_closes(&mut self) {
        self.conn.handle_peer_closed(self.now);
        self.pump();
    }

    /// Jumps to the next deadline and lets it run out; false when none is armed.
    fn step(&mut self) -> bool {
        let Some(deadline) = self.conn.poll_timeout() else {
            return false;
        };
        self.now = self.now.max(deadline);
        self.conn.handle_timeout(self.now);
        self.pump();
        true
    }

    /// Steps until the connection is released.
    fn drive(&mut self) {
        while self.closed_at.is_none() {
            assert!(self.step(), "no deadline left and not closed");
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.conn.handle_writing(self.now);
        if self.peer_reads {
            self.wire.extend_from_slice(bytes);
            self.conn.handle_sent(self.now);
            return;
        }
        // The write hangs: only a timer ends it.
        while self.conn.may_write() {
            let deadline = self
                .conn
                .poll_timeout()
                .expect("a writing connection has a timer");
            self.now = self.now.max(deadline);
            self.conn.handle_timeout(self.now);
        }
    }

    fn pump(&mut self) {
        while let Some(output) = self.conn.poll_output() {
            assert!(self.closed_at.is_none(), "{output:?} after Closed");
            match output {
                Output::Deliver(bytes) => self.delivered.push(bytes),
                Output::Write(bytes) => self.write(&bytes),
                Output::Unframeable(error) => self.unframeable.push(error),
                Output::Close { why, ending } => {
                    assert!(self.close.is_none(), "closed twice");
                    self.close = Some((why, ending, self.now));
                }
                Output::Flush => {
                    while self.conn.may_write() {
                        match self.queued.pop_front() {
                            Some(message) => self.write(&message),
                            None => {
                                self.flushed = true;
                                self.conn.handle_flushed(self.now);
                            }
                        }
                    }
                }
                Output::Shutdown => self.shutdown_at = Some(self.now),
                Output::Closed => self.closed_at = Some(self.now),
            }
        }
    }

    fn why(&self) -> Option<Why> {
        self.close.map(|(why, _, _)| why)
    }
}

fn stream() -> Harness {
    Harness::new(Mode::Stream)
}

// --- framing ---

proptest! {
    /// However the reads cut a stream of messages and keep-alives, the same messages come out
    /// whole and in order, and every ping gets its pong, except a ping whose read ends between
    /// its two CRLFs: `sip::StreamFramer` cannot wait for a second CRLF that may never come,
    /// so it takes the first as a pong.
    #[test]
    fn framing_is_independent_of_how_reads_cut_the_stream(
        items in prop::collection::vec(0u8..3, 1..12),
        cuts in prop::collection::vec(1usize..200, 1..40),
    ) {
        let mut bytes = Vec::new();
        let mut messages = Vec::new();
        let mut pings = Vec::new();
        for (n, item) in items.iter().enumerate() {
            match item {
                0 => {
                    pings.push(bytes.len());
                    bytes.extend_from_slice(b"\r\n\r\n");
                }
                1 => {
                    let m = format!("MESSAGE sip:a SIP/2.0\r\nContent-Length: {n}\r\n\r\n{}", "x".repeat(n));
                    bytes.extend_from_slice(m.as_bytes());
                    messages.push(m.into_bytes());
                }
                _ => bytes.extend_from_slice(OPTIONS),
            }
            if *item == 2 {
                messages.push(OPTIONS.to_vec());
            }
        }
        let mut h = stream();
        let mut rest = &bytes[..];
        let mut read_ends = Vec::new();
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (read, more) = rest.split_at((*cut).min(rest.len()));
            h.advance(MS);
            h.bytes(read);
            rest = more;
            read_ends.push(bytes.len() - rest.len());
        }
        let pongs = pings.iter().filter(|&&at| !read_ends.contains(&(at + 2))).count();
        prop_assert_eq!(&h.delivered, &messages);
        prop_assert_eq!(h.wire, b"\r\n".repeat(pongs));
        prop_assert!(h.close.is_none());
    }
}

#[test]
fn a_message_cut_at_every_byte_arrives_once_and_whole() {
    for cut in 1..OPTIONS.len() {
        let mut h = stream();
        h.bytes(&OPTIONS[..cut]);
        assert!(h.delivered.is_empty(), "cut at {cut}");
        h.bytes(&OPTIONS[cut..]);
        assert_eq!(h.delivered, vec![OPTIONS.to_vec()], "cut at {cut}");
    }
}

// --- keep-alives (RFC 5626 §3.5.1) ---

#[test]
fn a_ping_gets_a_single_crlf_and_a_pong_gets_nothing() {
    let mut h = stream();
    h.bytes(b"\r\n\r\n");
    assert_eq!(h.wire, b"\r\n");
    h.bytes(b"\r\n");
    assert_eq!(h.wire, b"\r\n", "a lone CRLF is a pong: not answered");
    // A ping split over two reads is still one ping.
    h.bytes(b"\r\n\r");
    h.bytes(b"\n");
    assert_eq!(h.wire, b"\r\n\r\n");
    assert!(h.delivered.is_empty());
}

#[test]
fn a_peer_that_pings_stays_connected() {
    let mut h = stream();
    for _ in 0..10 {
        h.advance(IDLE - MS);
        h.bytes(b"\r\n\r\n");
        h.conn.handle_timeout(h.now);
        h.pump();
    }
    assert!(h.close.is_none());
    assert_eq!(h.conn.poll_timeout(), Some(h.now + IDLE));
}

// --- timers ---

#[test]
fn a_silent_connection_is_closed_gracefully_after_the_idle_timeout() {
    let mut h = stream();
    assert_eq!(h.conn.poll_timeout(), Some(h.at(IDLE)));
    h.conn.handle_timeout(h.at(IDLE - MS));
    h.pump();
    assert!(h.close.is_none(), "not before its time");
    h.queued.push_back(b"queued".to_vec());
    h.step();
    assert_eq!(
        h.close,
        Some((Why::Idle, Ending::Graceful, h.at(IDLE))),
        "closed at the deadline"
    );
    // What was queued still went out before the shutdown.
    assert_eq!(h.wire, b"queued");
    assert!(h.flushed);
    assert_eq!(h.shutdown_at, Some(h.at(IDLE)));
    h.drive();
    assert_eq!(h.closed_at, Some(h.at(IDLE + GRACE)));
}

#[test]
fn complete_frames_and_sends_restart_the_idle_timer() {
    let mut h = stream();
    h.advance(Duration::from_secs(100));
    h.bytes(OPTIONS);
    assert_eq!(h.conn.poll_timeout(), Some(h.now + IDLE));
    h.advance(Duration::from_secs(100));
    h.bytes(b"\r\n\r\n");
    assert_eq!(h.conn.poll_timeout(), Some(h.now + IDLE));
    h.advance(Duration::from_secs(100));
    h.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.conn.poll_timeout(), Some(h.now + IDLE));
}

#[test]
fn a_dribbled_message_is_cut_off_by_the_message_timer_however_often_bytes_arrive() {
    let mut h = stream();
    for byte in &OPTIONS[..OPTIONS.len() - 1] {
        h.advance(Duration::from_millis(500));
        if h.now >= h.at(Duration::from_millis(500) + MESSAGE) {
            break;
        }
        h.bytes(std::slice::from_ref(byte));
        // Sending to the peer does not move the message's clock either.
        h.send(b"x");
    }
    // The first byte came at t0 + 0.5 s; neither later bytes nor sends moved that.
    let deadline = h.at(Duration::from_millis(500) + MESSAGE);
    assert_eq!(h.conn.poll_timeout(), Some(deadline));
    h.step();
    assert_eq!(
        h.close,
        Some((Why::SlowMessage, Ending::Graceful, deadline))
    );
    assert!(h.delivered.is_empty());
    // The rest of the message, arriving while the connection lingers, is dropped.
    h.bytes(&OPTIONS[OPTIONS.len() - 1..]);
    assert!(h.delivered.is_empty());
    h.peer_closes();
    assert_eq!(h.closed_at, Some(deadline));
}

#[test]
fn a_message_that_completes_in_time_stops_its_timer() {
    let mut h = stream();
    let (head, tail) = OPTIONS.split_at(20);
    h.bytes(head);
    assert_eq!(h.conn.poll_timeout(), Some(h.at(MESSAGE)));
    h.advance(MESSAGE - Duration::from_secs(1));
    h.bytes(tail);
    assert_eq!(h.delivered.len(), 1);
    assert_eq!(h.conn.poll_timeout(), Some(h.now + IDLE));
    h.conn.handle_timeout(h.at(MESSAGE));
    h.pump();
    assert!(h.close.is_none());
}

#[test]
fn the_rest_of_a_read_that_starts_a_new_message_starts_its_clock_then() {
    let mut h = stream();
    h.bytes(&OPTIONS[..10]);
    h.advance(Duration::from_secs(10));
    let mut read = OPTIONS[10..].to_vec();
    read.extend_from_slice(&OPTIONS[..5]);
    h.bytes(&read);
    assert_eq!(h.delivered.len(), 1);
    assert_eq!(h.conn.poll_timeout(), Some(h.now + MESSAGE));
}

#[test]
fn a_peer_that_does_not_read_is_shut_down_without_more_writes() {
    let mut h = stream();
    h.bytes(OPTIONS);
    h.peer_reads = false;
    h.queued.push_back(b"never written".to_vec());
    h.advance(Duration::from_secs(1));
    let began = h.now;
    h.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        h.close,
        Some((Why::SlowWrite, Ending::Shutdown, began + MESSAGE))
    );
    assert!(!h.flushed, "nothing more is written");
    assert_eq!(h.shutdown_at, Some(began + MESSAGE));
    h.drive();
    assert_eq!(h.closed_at, Some(began + MESSAGE + GRACE));
}

#[test]
fn while_a_write_is_in_flight_no_other_timer_decides() {
    let mut h = stream();
    h.bytes(&OPTIONS[..10]);
    h.conn
        .handle_writing(h.at(MESSAGE - Duration::from_secs(1)));
    // The message's deadline passes while the write hangs: a message cut short would leave
    // the peer an unframeable stream, so nothing closes yet.
    assert_eq!(
        h.conn.poll_timeout(),
        Some(h.at(2 * MESSAGE - Duration::from_secs(1)))
    );
    h.conn
        .handle_timeout(h.at(MESSAGE + Duration::from_secs(1)));
    h.pump();
    assert!(h.close.is_none());
    // The write finishes: the overdue message timer is due at once.
    h.now = h.at(MESSAGE + Duration::from_secs(2));
    h.conn.handle_sent(h.now);
    assert_eq!(h.conn.poll_timeout(), Some(h.at(MESSAGE)));
    h.step();
    assert_eq!(h.why(), Some(Why::SlowMessage));
}

// --- bad input ---

#[test]
fn an_unframeable_request_is_answered_after_what_came_before_and_the_stream_closed() {
    let mut h = stream();
    h.queued.push_back(b"queued".to_vec());
    let mut bytes = OPTIONS.to_vec();
    bytes.extend_from_slice(NO_LENGTH);
    bytes.extend_from_slice(OPTIONS);
    h.bytes(&bytes);
    // The message before the bad one was delivered; nothing after it was looked at.
    assert_eq!(h.delivered, vec![OPTIONS.to_vec()]);
    assert_eq!(h.unframeable, vec![sip::Error::MissingContentLength]);
    assert_eq!(h.close.map(|c| c.0), Some(Why::Framing));
    assert_eq!(h.close.map(|c| c.1), Some(Ending::Graceful));
    // The answer first, then what was queued, then the shutdown.
    let reply = String::from_utf8_lossy(&h.wire).into_owned();
    assert!(reply.starts_with("SIP/2.0 400 "), "{reply}");
    assert!(reply.contains("Call-ID: c2"), "{reply}");
    assert!(reply.ends_with("queued"), "{reply}");
    assert_eq!(h.shutdown_at, Some(h.t0));
    h.drive();
}

#[test]
fn noise_is_not_answered_but_closes_the_stream() {
    let mut h = stream();
    h.bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.unframeable.len(), 1);
    assert!(h.wire.is_empty(), "noise gets no answer: {:?}", h.wire);
    assert_eq!(h.why(), Some(Why::Framing));
}

#[test]
fn a_header_section_past_the_size_limit_is_refused_before_it_ends() {
    let mut h = stream();
    h.bytes(b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK3\r\n");
    for _ in 0..100 {
        if h.close.is_some() {
            break;
        }
        h.bytes(b"X-Padding: 0123456789012345678901234567890123456789012345678\r\n");
    }
    assert!(matches!(
        h.unframeable[..],
        [sip::Error::MessageTooLarge { limit: 4096, .. }]
    ));
    assert_eq!(h.why(), Some(Why::Framing));
}

#[test]
fn when_the_engine_is_gone_nothing_more_is_delivered_or_answered() {
    let mut h = stream();
    let mut bytes = OPTIONS.to_vec();
    bytes.extend_from_slice(OPTIONS);
    bytes.extend_from_slice(NO_LENGTH);
    h.conn.handle_bytes(h.now, &bytes);
    // The shell fails to hand over the first message.
    assert!(matches!(h.conn.poll_output(), Some(Output::Deliver(_))));
    h.conn.handle_engine_gone(h.now);
    h.pump();
    assert!(h.delivered.is_empty());
    assert!(h.wire.is_empty());
    assert_eq!(h.close, Some((Why::EngineGone, Ending::Release, h.t0)));
    assert_eq!(h.closed_at, Some(h.t0));
}

// --- closing ---

#[test]
fn offline_writes_what_is_queued_then_shuts_down_and_waits_for_the_peer() {
    let mut h = stream();
    h.queued.extend([b"one".to_vec(), b"two".to_vec()]);
    h.advance(Duration::from_secs(5));
    h.conn.close_gracefully(h.now);
    assert!(!h.conn.is_open());
    h.pump();
    assert_eq!(
        h.close.map(|c| (c.0, c.1)),
        Some((Why::Offline, Ending::Graceful))
    );
    assert_eq!(h.wire, b"onetwo");
    assert_eq!(h.shutdown_at, Some(h.now));
    // What the peer still sends is read and dropped; its close ends the wait.
    h.advance(Duration::from_secs(1));
    h.bytes(OPTIONS);
    assert!(h.delivered.is_empty());
    h.peer_closes();
    assert_eq!(h.closed_at, Some(h.at(Duration::from_secs(6))));
}

#[test]
fn a_graceful_close_gives_a_slow_reader_one_message_timeout_for_everything_queued() {
    let mut h = stream();
    h.peer_reads = false;
    h.queued.extend([b"one".to_vec(), b"two".to_vec()]);
    h.conn.close_gracefully(h.now);
    h.pump();
    assert!(!h.flushed);
    assert_eq!(h.shutdown_at, Some(h.at(MESSAGE)));
    h.drive();
    assert_eq!(h.closed_at, Some(h.at(MESSAGE + GRACE)));
}

#[test]
fn a_peer_that_closes_first_releases_the_connection_at_once() {
    let mut h = stream();
    h.queued.push_back(b"dropped".to_vec());
    h.bytes(&OPTIONS[..10]);
    h.peer_closes();
    assert_eq!(h.close, Some((Why::PeerClosed, Ending::Release, h.t0)));
    assert_eq!((h.shutdown_at, h.closed_at), (None, Some(h.t0)));
    assert!(h.wire.is_empty());
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn a_socket_error_releases_an_open_connection_and_ends_a_flush_with_the_shutdown() {
    let mut h = stream();
    h.conn.handle_io_error(h.now);
    h.pump();
    assert_eq!(h.close, Some((Why::Error, Ending::Release, h.t0)));
    assert_eq!(h.closed_at, Some(h.t0));

    let mut h = stream();
    h.conn.close_gracefully(h.now);
    assert!(matches!(h.conn.poll_output(), Some(Output::Close { .. })));
    assert_eq!(h.conn.poll_output(), Some(Output::Flush));
    h.conn.handle_io_error(h.now);
    assert_eq!(h.conn.poll_output(), Some(Output::Shutdown));
}

#[test]
fn a_refused_connection_is_shut_down_at_once_and_lingers() {
    let t0 = Instant::now();
    let mut h = Harness::with(t0, Connection::refused(t0, config()));
    assert_eq!(h.close, None, "refusals are counted by admission, not here");
    assert_eq!(h.shutdown_at, Some(t0));
    h.bytes(OPTIONS);
    assert!(h.delivered.is_empty());
    h.drive();
    assert_eq!(h.closed_at, Some(t0 + GRACE));
}

// --- records (SCTP) ---

fn records() -> Harness {
    Harness::new(Mode::Records)
}

#[test]
fn a_record_read_in_parts_is_delivered_whole_at_its_end() {
    let mut h = records();
    for part in OPTIONS.chunks(7) {
        h.bytes(part);
    }
    assert!(h.delivered.is_empty(), "not before the end of the record");
    h.end_of_record();
    assert_eq!(h.delivered, vec![OPTIONS.to_vec()]);
    h.record(b"\r\n\r\n");
    assert_eq!(h.wire, b"\r\n");
}

#[test]
fn a_bad_record_is_answered_and_the_association_stays() {
    let mut h = records();
    h.record(NO_LENGTH);
    // A record that ends inside its message: Content-Length says more than it holds.
    h.record(&OPTIONS[..OPTIONS.len() - 2]);
    h.record(OPTIONS);
    assert_eq!(h.unframeable.len(), 2);
    assert!(matches!(
        h.unframeable[1],
        sip::Error::BodyTruncated {
            declared: 4,
            present: 2
        }
    ));
    assert!(h.wire.starts_with(b"SIP/2.0 400 "));
    assert_eq!(h.delivered, vec![OPTIONS.to_vec()]);
    assert!(h.close.is_none());
}

#[test]
fn an_oversize_record_is_refused_once_and_its_rest_skipped() {
    let mut h = records();
    h.bytes(b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK3\r\n");
    for _ in 0..200 {
        h.bytes(b"X-Padding: 0123456789012345678901234567890123456789012345678\r\n");
    }
    h.end_of_record();
    assert!(matches!(
        h.unframeable[..],
        [sip::Error::MessageTooLarge { limit: 4096, .. }]
    ));
    h.record(OPTIONS);
    assert_eq!(h.delivered, vec![OPTIONS.to_vec()]);
    assert!(h.close.is_none());
}

#[test]
fn a_record_dribbled_in_parts_is_cut_off_by_the_message_timer() {
    let mut h = records();
    h.bytes(&OPTIONS[..1]);
    for part in OPTIONS[1..].chunks(1) {
        h.advance(Duration::from_secs(1));
        if h.now >= h.at(MESSAGE) {
            break;
        }
        h.bytes(part);
    }
    h.step();
    assert_eq!(
        h.close.map(|c| (c.0, c.2)),
        Some((Why::SlowMessage, h.at(MESSAGE)))
    );
    assert!(h.delivered.is_empty());
}
