//! The machine of one connection: what to write next, what a received frame means, which timer
//! is next.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use crate::wire::{self, Frame, Hello, HmacSha256, HELLO_LEN, LEN_PREFIX};
use crate::{CloseReason, Config, Event, SnapshotProgress, Status};

/// One `poll_bytes` result stops taking frames once it holds this many bytes, so it is at most
/// this plus one frame.
pub const COALESCE_BYTES: usize = 64 * 1024;

/// Where the handshake stands.
enum Phase {
    /// Our Hello is queued or written; the peer's has not verified yet.
    AwaitingHello,
    /// Both Hellos are in; later frames are sealed under the session key.
    Established { peer_node: u8, session: HmacSha256 },
    /// Over; nothing more is read or written.
    Closed(CloseReason),
}

/// A record or marker waiting to be written, encoded already (its size decides the window).
struct Queued {
    /// `Some(seq)` for a record, `None` for a marker.
    record_seq: Option<u64>,
    body: Vec<u8>,
}

/// A record written and not yet acknowledged.
struct InFlight {
    seq: u64,
    wire_len: usize,
    sent_at: Instant,
}

/// The protocol machine of one replication connection (see the crate doc for the wire).
///
/// Feed it with [`Session::handle_bytes`], [`Session::handle_timeout`], [`Session::send`],
/// [`Session::begin_snapshot`] and [`Session::end_snapshot`]; drain [`Session::poll_event`],
/// then [`Session::poll_bytes`], then re-arm the timer from [`Session::poll_timeout`]. Time must
/// not go backwards. A closed session reports [`Event::Closed`] once and then does nothing.
pub struct Session {
    config: Config,
    long_term: HmacSha256,
    nonce: [u8; 16],
    phase: Phase,
    /// The latest `now` seen: writes are stamped with it.
    now: Instant,
    events: VecDeque<Event>,

    // Inbound.
    inbuf: Vec<u8>,
    recv_counter: u64,
    last_received: Instant,
    received_seq: u64,
    /// Highest record seq the application took with `poll_event`.
    taken_seq: u64,
    ack_written: u64,
    snapshot: SnapshotProgress,
    peer_epoch: Option<u64>,
    frames_in: u64,

    // Outbound.
    hello_out: Option<Vec<u8>>,
    queue: VecDeque<Queued>,
    queued_records: usize,
    last_queued_seq: u64,
    in_flight: VecDeque<InFlight>,
    in_flight_bytes: usize,
    send_counter: u64,
    last_sent: Instant,
    heartbeat_due: bool,
    sent_seq: u64,
    acked_seq: u64,
    frames_out: u64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("node_id", &self.config.node_id)
            .field("established", &self.is_established())
            .field("closed", &self.closed_reason())
            .field("sent_seq", &self.sent_seq)
            .field("acked_seq", &self.acked_seq)
            .field("received_seq", &self.received_seq)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a fresh connection. `nonce` must be fresh random bytes (the shell's). Our
    /// Hello is queued at once. A config that fails [`Config::validate`] gives a session closed
    /// with [`CloseReason::Local`].
    pub fn new(config: Config, nonce: [u8; 16], now: Instant) -> Session {
        let long_term = wire::keyed(&config.key);
        let hello = Hello {
            version: wire::VERSION,
            node_id: config.node_id,
            epoch: config.boot_epoch,
            listener_hash: config.listener_hash,
            nonce,
        }
        .seal(&long_term);
        let valid = config.validate().is_ok();
        let mut session = Session {
            config,
            long_term,
            nonce,
            phase: Phase::AwaitingHello,
            now,
            events: VecDeque::new(),
            inbuf: Vec::new(),
            recv_counter: 0,
            last_received: now,
            received_seq: 0,
            taken_seq: 0,
            ack_written: 0,
            snapshot: SnapshotProgress::None,
            peer_epoch: None,
            frames_in: 0,
            hello_out: Some(hello),
            queue: VecDeque::new(),
            queued_records: 0,
            last_queued_seq: 0,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            send_counter: 0,
            last_sent: now,
            heartbeat_due: false,
            sent_seq: 0,
            acked_seq: 0,
            frames_out: 0,
        };
        if !valid {
            session.close(CloseReason::Local);
        }
        session
    }

    /// Bytes read from the connection, cut anywhere.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) {
        self.tick(now);
        if self.is_closed() {
            return;
        }
        self.inbuf.extend_from_slice(bytes);
        let inbuf = std::mem::take(&mut self.inbuf);
        let mut pos = 0;
        while let Some(prefix) = inbuf.get(pos..pos + LEN_PREFIX) {
            let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
            if len > self.config.max_frame {
                self.close(CloseReason::Oversize);
                return;
            }
            let Some(body) = inbuf.get(pos + LEN_PREFIX..pos + LEN_PREFIX + len) else {
                break;
            };
            if let Err(reason) = self.on_frame(body) {
                self.close(reason);
                return;
            }
            pos += LEN_PREFIX + len;
        }
        self.inbuf = inbuf;
        self.inbuf.drain(..pos);
    }

    /// The timer from [`Session::poll_timeout`] fired. May be called at any time: before a
    /// deadline it only brings the session's clock to `now` (writes are stamped with it).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.is_closed() {
            return;
        }
        if now >= self.idle_deadline() {
            self.close(CloseReason::Timeout);
        } else if self.heartbeat_deadline().is_some_and(|at| now >= at) {
            self.heartbeat_due = true;
        }
    }

    /// Queues one record. `seq` must exceed the previous call's (and 0): otherwise the session
    /// closes with [`CloseReason::OutOfOrder`] (see the crate doc). Queued before the handshake
    /// completes, it waits for it.
    pub fn send(&mut self, seq: u64, payload: Vec<u8>) {
        if self.is_closed() {
            return;
        }
        if seq <= self.last_queued_seq {
            self.close(CloseReason::OutOfOrder);
            return;
        }
        self.enqueue_record(seq, payload);
    }

    /// Queues a record without the order check, so tests can make a peer misbehave.
    #[cfg(test)]
    pub(crate) fn send_unchecked(&mut self, seq: u64, payload: Vec<u8>) {
        self.enqueue_record(seq, payload);
    }

    fn enqueue_record(&mut self, seq: u64, payload: Vec<u8>) {
        self.last_queued_seq = seq;
        self.queued_records += 1;
        self.queue.push_back(Queued {
            record_seq: Some(seq),
            body: Frame::Record { seq, payload }.encode(),
        });
    }

    /// Queues the marker that starts a snapshot of `records` records, in order with records.
    pub fn begin_snapshot(&mut self, records: u64) {
        self.enqueue_marker(Frame::SnapshotBegin { records });
    }

    /// Queues the marker that ends a snapshot complete as of record `seq`.
    pub fn end_snapshot(&mut self, seq: u64) {
        self.enqueue_marker(Frame::SnapshotEnd { seq });
    }

    fn enqueue_marker(&mut self, frame: Frame) {
        if self.is_closed() {
            return;
        }
        self.queue.push_back(Queued {
            record_seq: None,
            body: frame.encode(),
        });
    }

    /// The next bytes to write, in order: the Hello, an Ack, records and markers as the window
    /// allows, a heartbeat when due and nothing else goes. `None` when there is nothing to write
    /// (or the session is closed).
    #[must_use]
    pub fn poll_bytes(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(hello) = self.hello_out.take() {
            out = hello;
            self.frames_out += 1;
        }
        if let Phase::Established {
            peer_node: _,
            session,
        } = &self.phase
        {
            let session = session.clone();
            if self.taken_seq > self.ack_written {
                self.ack_written = self.taken_seq;
                let body = Frame::Ack {
                    seq: self.taken_seq,
                }
                .encode();
                self.seal(&mut out, &session, &body);
            }
            while out.len() < COALESCE_BYTES {
                let Some(front) = self.queue.front() else {
                    break;
                };
                let wire_len = wire::sealed_len(front.body.len());
                if front.record_seq.is_some()
                    && self.in_flight_bytes > 0
                    && self.in_flight_bytes + wire_len > self.config.window_bytes
                {
                    break;
                }
                let Some(item) = self.queue.pop_front() else {
                    break;
                };
                self.seal(&mut out, &session, &item.body);
                if let Some(seq) = item.record_seq {
                    self.queued_records -= 1;
                    self.sent_seq = seq;
                    self.in_flight_bytes += wire_len;
                    self.in_flight.push_back(InFlight {
                        seq,
                        wire_len,
                        sent_at: self.now,
                    });
                }
            }
            if self.heartbeat_due && out.is_empty() {
                self.seal(&mut out, &session, &Frame::Heartbeat.encode());
            }
        }
        if out.is_empty() {
            return None;
        }
        self.heartbeat_due = false;
        self.last_sent = self.now;
        Some(out)
    }

    fn seal(&mut self, out: &mut Vec<u8>, session: &HmacSha256, body: &[u8]) {
        wire::seal_into(out, session, self.config.node_id, self.send_counter, body);
        self.send_counter += 1;
        self.frames_out += 1;
    }

    /// The next event. Taking a [`Event::Record`] acknowledges it at the next `poll_bytes`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if let Event::Record { seq, .. } = &event {
            self.taken_seq = *seq;
        }
        Some(event)
    }

    /// When to call [`Session::handle_timeout`]: the earliest of the idle deadline and, once
    /// established, the heartbeat deadline. `None` once closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let idle = self.idle_deadline();
        Some(match self.heartbeat_deadline() {
            Some(heartbeat) if !self.heartbeat_due => idle.min(heartbeat),
            _ => idle,
        })
    }

    /// A snapshot for `show twin`.
    pub fn status(&self, now: Instant) -> Status {
        Status {
            established: self.is_established(),
            closed: self.closed_reason(),
            peer_epoch: self.peer_epoch,
            sent_seq: self.sent_seq,
            acked_seq: self.acked_seq,
            received_seq: self.received_seq,
            queued_records: self.queued_records,
            in_flight_bytes: self.in_flight_bytes,
            oldest_unacked_age: self
                .in_flight
                .front()
                .map(|f| now.saturating_duration_since(f.sent_at)),
            frames_in: self.frames_in,
            frames_out: self.frames_out,
            snapshot: self.snapshot,
        }
    }

    /// Whether the session is over (the shell drops the connection).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed(_))
    }

    /// Closes the session from this side (e.g. the twin was lost). Reports
    /// [`Event::Closed`] unless already closed.
    pub fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        self.phase = Phase::Closed(reason);
        self.hello_out = None;
        self.queue.clear();
        self.queued_records = 0;
        self.inbuf = Vec::new();
        self.heartbeat_due = false;
        self.events.push_back(Event::Closed(reason));
    }

    fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established { .. })
    }

    fn closed_reason(&self) -> Option<CloseReason> {
        match self.phase {
            Phase::Closed(reason) => Some(reason),
            _ => None,
        }
    }

    fn tick(&mut self, now: Instant) {
        debug_assert!(now >= self.now, "time went backwards");
        self.now = self.now.max(now);
    }

    fn idle_deadline(&self) -> Instant {
        self.last_received + self.config.idle_timeout
    }

    fn heartbeat_deadline(&self) -> Option<Instant> {
        self.is_established()
            .then(|| self.last_sent + self.config.heartbeat)
    }

    /// One whole frame (after its prefix).
    fn on_frame(&mut self, body: &[u8]) -> Result<(), CloseReason> {
        match &self.phase {
            Phase::AwaitingHello => self.on_hello(body)?,
            Phase::Established { peer_node, session } => {
                let frame = wire::open(session, *peer_node, self.recv_counter, body)?;
                self.recv_counter += 1;
                self.on_sealed(frame)?;
            }
            Phase::Closed(_) => return Ok(()),
        }
        self.frames_in += 1;
        self.last_received = self.now;
        Ok(())
    }

    fn on_hello(&mut self, body: &[u8]) -> Result<(), CloseReason> {
        if body.len() != HELLO_LEN {
            return Err(CloseReason::Malformed);
        }
        let hello = Hello::open(&self.long_term, body)?;
        if hello.version != wire::VERSION {
            return Err(CloseReason::Version);
        }
        if hello.node_id == self.config.node_id {
            return Err(CloseReason::Reflected);
        }
        if !matches!(hello.node_id, 1 | 2) {
            return Err(CloseReason::UnknownNode);
        }
        if hello.listener_hash != self.config.listener_hash {
            return Err(CloseReason::ListenersDiffer);
        }
        let (nonces, epochs) = if self.config.node_id == 1 {
            (
                [&self.nonce, &hello.nonce],
                [self.config.boot_epoch, hello.epoch],
            )
        } else {
            (
                [&hello.nonce, &self.nonce],
                [hello.epoch, self.config.boot_epoch],
            )
        };
        let session = wire::session_key(&self.long_term, nonces, epochs);
        self.phase = Phase::Established {
            peer_node: hello.node_id,
            session,
        };
        self.peer_epoch = Some(hello.epoch);
        self.events.push_back(Event::Established {
            peer_node: hello.node_id,
            peer_epoch: hello.epoch,
        });
        Ok(())
    }

    fn on_sealed(&mut self, frame: Frame) -> Result<(), CloseReason> {
        match frame {
            Frame::Record { seq, payload } => {
                if seq <= self.received_seq {
                    return Err(CloseReason::OutOfOrder);
                }
                self.received_seq = seq;
                if let SnapshotProgress::Receiving { got, .. } = &mut self.snapshot {
                    *got += 1;
                }
                self.events.push_back(Event::Record { seq, payload });
            }
            Frame::SnapshotBegin { records } => {
                self.snapshot = SnapshotProgress::Receiving {
                    got: 0,
                    of: records,
                };
                self.events.push_back(Event::SnapshotBegin { records });
            }
            Frame::SnapshotEnd { seq } => {
                self.snapshot = SnapshotProgress::Complete;
                self.events.push_back(Event::SnapshotEnd { seq });
            }
            Frame::Ack { seq } => {
                if seq <= self.acked_seq || seq > self.sent_seq {
                    return Err(CloseReason::OutOfOrder);
                }
                while let Some(front) = self.in_flight.front() {
                    if front.seq > seq {
                        break;
                    }
                    self.in_flight_bytes -= front.wire_len;
                    self.in_flight.pop_front();
                }
                self.acked_seq = seq;
                self.events.push_back(Event::Acked { seq });
            }
            Frame::Heartbeat => {}
        }
        Ok(())
    }
}
