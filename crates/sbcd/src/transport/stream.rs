//! One stream connection's receive side and its two timers, without the socket: decides which
//! received bytes make a message or a keep-alive (through [`sip::StreamFramer`], linear in the
//! bytes however they are cut), and when the connection must be closed because it was silent
//! (`tcp_idle_timeout_secs`) or because a message started and did not finish in time
//! (`tcp_message_timeout_secs`).
//!
//! The two timers do not overlap: while a message is partly received only the message timer
//! runs, so a peer that dribbles bytes (slowloris) cannot keep a connection by sending; once no
//! message is in progress the idle timer runs from the last complete frame received or message
//! sent. Keep-alives (RFC 5626) are complete frames, so a peer that pings stays connected.
//!
//! Feed [`StreamState::handle_bytes`] with what the socket gave, [`StreamState::handle_sent`]
//! when a message went out, and call [`StreamState::handle_timeout`] at
//! [`StreamState::poll_timeout`]. Time must not go backwards between calls.

use std::time::{Duration, Instant};

use sip::{Framed, StreamFramer};

/// How long a connection may stay silent, and a message take to arrive.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Duration,
    pub message: Duration,
}

/// What complete frames asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// One message, for the engine.
    Message(Vec<u8>),
    /// A double-CRLF ping: answer with a single CRLF (RFC 5626 §3.5.1).
    Ping,
}

/// Why a timer closed the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing in progress and nothing received or sent for the idle timeout.
    Idle,
    /// A message began and was not complete within the message timeout.
    SlowMessage,
}

/// The receive side of one connection and its timers.
#[derive(Debug)]
pub struct StreamState {
    framer: StreamFramer,
    timeouts: Timeouts,
    /// Last complete frame received or message sent.
    last_activity: Instant,
    /// When the first byte of the message in progress arrived.
    message_started: Option<Instant>,
}

impl StreamState {
    /// A connection that opened at `now`.
    pub fn new(now: Instant, limits: sip::Limits, timeouts: Timeouts) -> StreamState {
        StreamState {
            framer: StreamFramer::new(limits),
            timeouts,
            last_activity: now,
            message_started: None,
        }
    }

    /// Bytes read from the socket at `now`; complete frames are appended to `out`. An error
    /// means the stream cannot be framed any more: the frames before it are in `out` (deliver
    /// them), then answer from [`Self::unframed`] if the error deserves it and close.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        bytes: &[u8],
        out: &mut Vec<Received>,
    ) -> Result<(), sip::Error> {
        if bytes.is_empty() {
            return Ok(());
        }
        let was_partial = self.framer.has_partial();
        self.framer.push(bytes);
        let mut completed = false;
        while let Some(frame) = self.framer.poll_frame()? {
            completed = true;
            match frame {
                Framed::Message(m) => out.push(Received::Message(m.to_vec())),
                Framed::KeepAlive { ping: true } => out.push(Received::Ping),
                Framed::KeepAlive { ping: false } => {}
            }
        }
        if completed {
            self.last_activity = now;
        }
        self.message_started = if !self.framer.has_partial() {
            None
        } else if completed || !was_partial {
            // The bytes left over began a new message in this read.
            Some(now)
        } else {
            // More of the same message: its clock keeps running.
            self.message_started
        };
        Ok(())
    }

    /// A message was written to the peer at `now`: the connection is in use.
    pub fn handle_sent(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// When [`Self::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        match self.message_started {
            Some(started) => started + self.timeouts.message,
            None => self.last_activity + self.timeouts.idle,
        }
    }

    /// Whether a timer has run out at `now` (the connection is then to be closed).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Expired> {
        if now < self.poll_timeout() {
            return None;
        }
        Some(if self.message_started.is_some() {
            Expired::SlowMessage
        } else {
            Expired::Idle
        })
    }

    /// The bytes received and not framed (after an error: what could not be framed).
    pub fn unframed(&self) -> &[u8] {
        self.framer.unframed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(600);
    const MESSAGE: Duration = Duration::from_secs(32);
    const OPTIONS: &[u8] = b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
                             Content-Length: 0\r\n\r\n";

    fn state(now: Instant) -> StreamState {
        StreamState::new(
            now,
            sip::Limits::default(),
            Timeouts {
                idle: IDLE,
                message: MESSAGE,
            },
        )
    }

    fn feed(s: &mut StreamState, now: Instant, bytes: &[u8]) -> Vec<Received> {
        let mut out = Vec::new();
        s.handle_bytes(now, bytes, &mut out).unwrap();
        out
    }

    #[test]
    fn a_silent_connection_closes_after_the_idle_timeout() {
        let t0 = Instant::now();
        let mut s = state(t0);
        assert_eq!(s.poll_timeout(), t0 + IDLE);
        assert_eq!(s.handle_timeout(t0 + IDLE - Duration::from_millis(1)), None);
        assert_eq!(s.handle_timeout(t0 + IDLE), Some(Expired::Idle));
    }

    #[test]
    fn complete_frames_and_sends_restart_the_idle_timer() {
        let t0 = Instant::now();
        let mut s = state(t0);
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(
            feed(&mut s, t1, OPTIONS),
            vec![Received::Message(OPTIONS.to_vec())]
        );
        assert_eq!(s.poll_timeout(), t1 + IDLE);
        let t2 = t1 + Duration::from_secs(100);
        assert_eq!(feed(&mut s, t2, b"\r\n\r\n"), vec![Received::Ping]);
        assert_eq!(s.poll_timeout(), t2 + IDLE);
        let t3 = t2 + Duration::from_secs(100);
        s.handle_sent(t3);
        assert_eq!(s.poll_timeout(), t3 + IDLE);
    }

    #[test]
    fn a_dribbled_message_is_cut_off_by_the_message_timer_however_often_bytes_arrive() {
        let t0 = Instant::now();
        let mut s = state(t0);
        let mut now = t0;
        for byte in &OPTIONS[..OPTIONS.len() - 1] {
            now += Duration::from_millis(500);
            assert!(feed(&mut s, now, std::slice::from_ref(byte)).is_empty());
            if s.handle_timeout(now).is_some() {
                break;
            }
        }
        // The first byte came at t0 + 0.5 s; neither later bytes nor sends move that.
        s.handle_sent(now);
        let deadline = t0 + Duration::from_millis(500) + MESSAGE;
        assert_eq!(s.poll_timeout(), deadline);
        assert_eq!(s.handle_timeout(deadline), Some(Expired::SlowMessage));
    }

    #[test]
    fn a_message_that_completes_in_time_stops_its_timer() {
        let t0 = Instant::now();
        let mut s = state(t0);
        let (head, tail) = OPTIONS.split_at(20);
        assert!(feed(&mut s, t0, head).is_empty());
        assert_eq!(s.poll_timeout(), t0 + MESSAGE);
        let t1 = t0 + MESSAGE - Duration::from_secs(1);
        assert_eq!(feed(&mut s, t1, tail).len(), 1);
        assert_eq!(s.poll_timeout(), t1 + IDLE);
        assert_eq!(s.handle_timeout(t0 + MESSAGE), None);
    }

    #[test]
    fn the_rest_of_a_read_that_starts_a_new_message_starts_its_clock_then() {
        let t0 = Instant::now();
        let mut s = state(t0);
        assert!(feed(&mut s, t0, &OPTIONS[..10]).is_empty());
        let t1 = t0 + Duration::from_secs(10);
        let mut read = OPTIONS[10..].to_vec();
        read.extend_from_slice(&OPTIONS[..5]);
        assert_eq!(feed(&mut s, t1, &read).len(), 1);
        assert_eq!(s.poll_timeout(), t1 + MESSAGE);
    }

    #[test]
    fn an_unframeable_stream_keeps_its_bytes_for_the_reply() {
        let t0 = Instant::now();
        let mut s = state(t0);
        let mut out = Vec::new();
        let mut bytes = OPTIONS.to_vec();
        bytes.extend_from_slice(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(
            s.handle_bytes(t0, &bytes, &mut out),
            Err(sip::Error::MissingContentLength)
        );
        assert_eq!(out, vec![Received::Message(OPTIONS.to_vec())]);
        assert!(s.unframed().starts_with(b"OPTIONS sip:a SIP/2.0\r\nVia: x"));
    }
}
