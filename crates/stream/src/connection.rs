//! One connection's life: what its received bytes make, when it has been silent or slow too
//! long, and how it ends.
//!
//! Timers. While a message is partly received only the message timer runs (from the message's
//! first byte), so a peer that dribbles bytes (slowloris) cannot keep a connection by sending;
//! with no message in progress the idle timer runs from the last complete frame received or
//! message sent. Keep-alives (RFC 5626) are complete frames, so a peer that pings stays. A write
//! the peer does not take within the message timeout ends the connection (it is not reading),
//! and while a write is in flight nothing else is decided: a message cut short would leave the
//! peer a stream it cannot frame, so the write is finished or given up on first.
//!
//! Closing. Whatever ends a connection, the peer gets a shutdown (TCP's FIN, SCTP's SHUTDOWN)
//! and never a reset, unless it closed first or the socket failed:
//!
//! ```text
//! Open --(idle, slow message, bad input, offline)--> Flushing --(flushed or timed out)--+
//!   |                                                                                   v
//!   +--(peer not reading)--------------------------------------------------------> Lingering
//!   |                                                                                   |
//!   +--(peer closed, socket failed, engine gone)--> Closed <--(peer closed, or grace)---+
//! ```
//!
//! Flushing writes what was already queued for the peer (all of it within one message timeout,
//! so a peer reading slowly cannot stretch the close); Lingering has sent the shutdown and
//! reads and drops what the peer still sends until it closes its side or the grace is over (a
//! reset would lose what it still sends).

use std::time::{Duration, Instant};

use crate::receive::{Mode, Received, Receiver};

/// How long things may take, and how messages are cut.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Parser limits; `max_message_bytes` bounds what one message may make the box hold.
    pub limits: sip::Limits,
    /// How long a connection may stay silent (`[sip] tcp_idle_timeout_secs`).
    pub idle_timeout: Duration,
    /// How long a message may take to arrive from its first byte, a write to be taken by the
    /// peer, and the writes of a graceful close all together (`tcp_message_timeout_secs`).
    pub message_timeout: Duration,
    /// After our shutdown, how long the peer gets to close its side.
    pub close_grace: Duration,
}

/// Why a connection ended. The names are what the shells log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The peer closed (FIN, or its SHUTDOWN).
    PeerClosed,
    /// Nothing in progress and nothing received or sent for the idle timeout.
    Idle,
    /// A message began and was not complete within the message timeout.
    SlowMessage,
    /// The peer did not take a write within the message timeout.
    SlowWrite,
    /// The box stopped serving ([`Connection::close_gracefully`]).
    Offline,
    /// The byte stream could not be framed.
    Framing,
    /// The socket failed.
    Error,
    /// Nobody takes the delivered messages any more (the daemon is stopping).
    EngineGone,
}

impl Why {
    /// How a connection ending for this reason is closed.
    pub fn ending(self) -> Ending {
        match self {
            Why::Idle | Why::SlowMessage | Why::Offline | Why::Framing => Ending::Graceful,
            Why::SlowWrite => Ending::Shutdown,
            Why::PeerClosed | Why::Error | Why::EngineGone => Ending::Release,
        }
    }
}

/// How a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// What is queued is written first ([`Output::Flush`]), then the shutdown and the linger.
    Graceful,
    /// Nothing more is written (the peer does not read), but it still gets the shutdown
    /// (behind what it has not read) and the linger, rather than a reset.
    Shutdown,
    /// The socket is released at once: nothing is sent or waited for.
    Release,
}

/// What the connection asks its shell to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Hand one whole message to the engine.
    Deliver(Vec<u8>),
    /// Write these bytes (a keep-alive pong, or the answer to bad input), announcing the write
    /// with [`Connection::handle_writing`] and its end with [`Connection::handle_sent`].
    Write(Vec<u8>),
    /// Received bytes could not be framed: count it. A [`Output::Write`] with the answer may
    /// follow; in stream mode the connection is then closed ([`Why::Framing`]).
    Unframeable(sip::Error),
    /// The connection is closing: take it out of the table of flows (no new message may be
    /// queued on it) and count the reason. Comes once; the outputs after it say what to do.
    Close { why: Why, ending: Ending },
    /// Write what is queued for the peer, each write announced as usual, then call
    /// [`Connection::handle_flushed`]. Stop when [`Connection::may_write`] turns false.
    Flush,
    /// Shut the sending side down (TCP: FIN; SCTP: SHUTDOWN), then keep reading: report what
    /// is read with [`Connection::handle_bytes`] (it is dropped) and the peer's close with
    /// [`Connection::handle_peer_closed`].
    Shutdown,
    /// Nothing more to do: release the socket and give back what the connection held.
    Closed,
}

/// The timers of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Nothing in progress: close when silent.
    Idle,
    /// A message began: close when it does not finish.
    Message,
    /// A write is in flight: close when the peer does not take it.
    Write,
    /// Writing what is queued before the shutdown: stop writing then.
    Flush,
    /// Waiting for the peer to close its side: release then.
    Linger,
}

impl Timer {
    const ALL: [Timer; 5] = [
        Timer::Idle,
        Timer::Message,
        Timer::Write,
        Timer::Flush,
        Timer::Linger,
    ];
}

/// One deadline per [`Timer`], `None` when not armed.
#[derive(Debug, Default)]
struct Timers([Option<Instant>; Timer::ALL.len()]);

impl Timers {
    fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer as usize]
    }

    fn set(&mut self, timer: Timer, deadline: Instant) {
        self.0[timer as usize] = Some(deadline);
    }

    fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    fn stop_all(&mut self) {
        self.0 = Default::default();
    }

    /// The earliest armed timer, except that a write in flight hides every other one (see the
    /// module documentation).
    fn next(&self) -> Option<(Timer, Instant)> {
        if let Some(write) = self.get(Timer::Write) {
            return Some((Timer::Write, write));
        }
        Timer::ALL
            .into_iter()
            .filter_map(|t| Some((t, self.get(t)?)))
            .min_by_key(|&(_, deadline)| deadline)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Flushing,
    Lingering,
    Closed,
}

/// One SIP stream connection (a TCP connection or an SCTP association), without its socket.
///
/// Feed it with [`handle_bytes`](Self::handle_bytes) (what a read gave; in
/// [`Mode::Records`] also [`handle_end_of_record`](Self::handle_end_of_record)),
/// [`handle_writing`](Self::handle_writing) and [`handle_sent`](Self::handle_sent) around every
/// write, [`handle_peer_closed`](Self::handle_peer_closed) when a read finds the peer's close,
/// [`handle_io_error`](Self::handle_io_error), [`handle_engine_gone`](Self::handle_engine_gone)
/// and [`close_gracefully`](Self::close_gracefully); call
/// [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout). After each
/// call, act on every [`poll_output`](Self::poll_output) in order until it gives `None`; stop
/// at [`Output::Closed`]. Time must not go backwards between calls.
///
/// Outgoing SIP messages are queued by the shell, not here (it bounds them in bytes across all
/// connections); the connection only hears that a write began and ended.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    receiver: Receiver,
    state: State,
    timers: Timers,
    /// Last complete frame received or write finished.
    last_activity: Instant,
    /// When the first byte of the message in progress arrived.
    message_started: Option<Instant>,
    outputs: std::collections::VecDeque<Output>,
    /// The [`Output::Close`] has been handed to the shell.
    close_announced: bool,
    /// Reused for what one read made.
    received: Vec<Received>,
}

impl Connection {
    /// A connection that opened at `now`.
    pub fn new(now: Instant, mode: Mode, config: Config) -> Connection {
        let mut connection = Connection {
            config,
            receiver: Receiver::new(mode, config.limits),
            state: State::Open,
            timers: Timers::default(),
            last_activity: now,
            message_started: None,
            outputs: Default::default(),
            close_announced: false,
            received: Vec::new(),
        };
        connection.arm_receive_timers();
        connection
    }

    /// A connection refused at `now` for want of a slot: it is shut down at once (the first
    /// output is [`Output::Shutdown`]) and lingers like any other, so the refusal never turns
    /// into a reset.
    pub fn refused(now: Instant, config: Config) -> Connection {
        let mut connection = Connection::new(now, Mode::Stream, config);
        connection.close_announced = true;
        connection.shut_down(now);
        connection
    }

    /// Bytes read at `now`. While open they are framed; once the connection is closing they are
    /// dropped (the peer is only being given time to close).
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if self.state != State::Open || bytes.is_empty() {
            return;
        }
        let was_partial = self.receiver.in_progress();
        let mut received = std::mem::take(&mut self.received);
        let completed = self.receiver.push(bytes, &mut received);
        self.after_receive(now, was_partial, completed, &mut received);
        self.received = received;
    }

    /// The transport marked the end of a record at `now` (SCTP's MSG_EOR), after the record's
    /// last bytes went to [`Self::handle_bytes`]. Does nothing in [`Mode::Stream`].
    pub fn handle_end_of_record(&mut self, now: Instant) {
        if self.state != State::Open {
            return;
        }
        let mut received = std::mem::take(&mut self.received);
        let completed = self.receiver.end_record(&mut received);
        self.after_receive(now, true, completed, &mut received);
        self.received = received;
    }

    fn after_receive(
        &mut self,
        now: Instant,
        was_partial: bool,
        completed: bool,
        received: &mut Vec<Received>,
    ) {
        if completed {
            self.last_activity = now;
        }
        self.message_started = if !self.receiver.in_progress() {
            None
        } else if completed || !was_partial {
            // The bytes left over began a new message in this read.
            Some(now)
        } else {
            // More of the same message: its clock keeps running.
            self.message_started
        };
        self.arm_receive_timers();
        for frame in received.drain(..) {
            match frame {
                Received::Message(bytes) => self.outputs.push_back(Output::Deliver(bytes)),
                // RFC 5626 §3.5.1: a double-CRLF ping is answered with a single CRLF.
                Received::Ping => self.outputs.push_back(Output::Write(b"\r\n".to_vec())),
                Received::Bad {
                    error,
                    reply,
                    fatal,
                } => {
                    self.outputs.push_back(Output::Unframeable(error));
                    if let Some(reply) = reply {
                        self.outputs.push_back(Output::Write(reply));
                    }
                    if fatal {
                        self.close(now, Why::Framing);
                    }
                }
            }
        }
    }

    /// A write (of a queued message or of an [`Output::Write`]) began at `now`.
    pub fn handle_writing(&mut self, now: Instant) {
        if self.state == State::Open {
            self.timers
                .set(Timer::Write, now + self.config.message_timeout);
        }
    }

    /// The write announced with [`Self::handle_writing`] was taken at `now`: the connection is
    /// in use.
    pub fn handle_sent(&mut self, now: Instant) {
        if self.state == State::Open {
            self.timers.stop(Timer::Write);
            self.last_activity = now;
            self.arm_receive_timers();
        }
    }

    /// While [`Output::Flush`]ing: nothing more is queued. The shutdown follows.
    pub fn handle_flushed(&mut self, now: Instant) {
        if self.state == State::Flushing {
            self.shut_down(now);
        }
    }

    /// A read found the peer's close at `now`.
    pub fn handle_peer_closed(&mut self, now: Instant) {
        match self.state {
            State::Open => self.close(now, Why::PeerClosed),
            // We still write what was queued: the peer closed its sending side only.
            State::Flushing => {}
            State::Lingering => self.finish(),
            State::Closed => {}
        }
    }

    /// The socket failed at `now` (a read or write error).
    pub fn handle_io_error(&mut self, now: Instant) {
        match self.state {
            State::Open => self.close(now, Why::Error),
            // Nothing more can be written: on to the shutdown.
            State::Flushing => self.shut_down(now),
            State::Lingering => self.finish(),
            State::Closed => {}
        }
    }

    /// A delivery failed at `now`: nobody takes messages any more.
    pub fn handle_engine_gone(&mut self, now: Instant) {
        // Only a close after bad input can be decided with deliveries still ahead of it: not yet
        // told, it is moot.
        if !self.close_announced && matches!(self.state, State::Open | State::Flushing) {
            self.state = State::Open;
            self.close(now, Why::EngineGone);
        }
    }

    /// The box stops serving (offline, SPEC §2): close gracefully, so the peer gets what was
    /// queued and a shutdown (TCP: FIN; SCTP: SHUTDOWN), never a reset or an ABORT.
    pub fn close_gracefully(&mut self, now: Instant) {
        if self.state == State::Open {
            self.close(now, Why::Offline);
        }
    }

    /// When [`Self::handle_timeout`] must be called next; `None` once closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|(_, deadline)| deadline)
    }

    /// Acts on the timers that have run out at `now` (a call before any has is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some((timer, deadline)) = self.timers.next() else {
            return;
        };
        if now < deadline {
            return;
        }
        match timer {
            Timer::Idle => self.close(now, Why::Idle),
            Timer::Message => self.close(now, Why::SlowMessage),
            Timer::Write => self.close(now, Why::SlowWrite),
            Timer::Flush => self.shut_down(now),
            Timer::Linger => self.finish(),
        }
    }

    /// The next thing to do, `None` when nothing is left until the next `handle_*` call.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.pop_front()?;
        if matches!(output, Output::Close { .. }) {
            self.close_announced = true;
        }
        Some(output)
    }

    /// Whether writes may still be made: open, or flushing before the shutdown.
    #[must_use]
    pub fn may_write(&self) -> bool {
        matches!(self.state, State::Open | State::Flushing)
    }

    /// Whether the connection still takes new messages to send and reads to frame (it has not
    /// begun to close).
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Idle or message timer, whichever applies now.
    fn arm_receive_timers(&mut self) {
        match self.message_started {
            Some(started) => {
                self.timers.stop(Timer::Idle);
                self.timers
                    .set(Timer::Message, started + self.config.message_timeout);
            }
            None => {
                self.timers.stop(Timer::Message);
                self.timers
                    .set(Timer::Idle, self.last_activity + self.config.idle_timeout);
            }
        }
    }

    /// Decides the end of an open connection.
    fn close(&mut self, now: Instant, why: Why) {
        if self.state != State::Open {
            return;
        }
        let ending = why.ending();
        if ending != Ending::Graceful {
            // Nothing more is delivered or written: what the last read made is dropped.
            self.outputs.clear();
        }
        self.outputs.push_back(Output::Close { why, ending });
        self.timers.stop_all();
        match ending {
            Ending::Graceful => {
                self.state = State::Flushing;
                self.timers
                    .set(Timer::Flush, now + self.config.message_timeout);
                self.outputs.push_back(Output::Flush);
            }
            Ending::Shutdown => self.shut_down(now),
            Ending::Release => self.finish(),
        }
    }

    fn shut_down(&mut self, now: Instant) {
        self.timers.stop_all();
        self.state = State::Lingering;
        self.timers
            .set(Timer::Linger, now + self.config.close_grace);
        self.outputs.push_back(Output::Shutdown);
    }

    fn finish(&mut self) {
        self.timers.stop_all();
        self.state = State::Closed;
        self.outputs.push_back(Output::Closed);
    }
}
