//! Cutting messages out of a byte stream (TCP, SCTP) by Content-Length, RFC 3261 §18.3, with
//! the CRLF keep-alives of RFC 5626 §3.5.1.
//!
//! Two front ends to one set of rules:
//!
//! - [`next_frame`] is stateless: the caller keeps its receive buffer, asks what its front
//!   holds, consumes that many bytes and asks again. Each call looks at the buffer from its
//!   first byte, so a caller that asks after every small read of a long message pays for the
//!   message again on every read.
//! - [`StreamFramer`] owns the receive buffer and remembers how far the search for the end of
//!   the header section got, and the message's length once the header section is complete: the
//!   work it does is linear in the bytes received however they are cut into reads (a 64 KB
//!   header dribbled in one byte at a time is scanned about once, not 64 000 times). Stream
//!   transports use this one.
//!
//! An `Err` from either means the stream cannot be resynchronised: answer if
//! [`crate::Error::disposition`] allows (see [`crate::build::reply_to_unparsable`]) and close
//! the connection.

use memchr::memchr;

use crate::header_name::HeaderName;
use crate::limits::Limits;
use crate::message::id_of;
use crate::parse::parse_content_length;
use crate::Error;

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes yet: read more and ask again.
    Incomplete,
    /// A keep-alive of `len` bytes to consume. `ping` is true for a double CRLF, which the
    /// receiver answers with a single CRLF ("pong"); a single CRLF is a pong (or noise) and
    /// needs no answer.
    KeepAlive {
        /// Bytes to consume.
        len: usize,
        /// True when a CRLF pong must be sent back.
        ping: bool,
    },
    /// A complete message occupying the first `len` bytes: parse them with
    /// [`crate::Framing::Stream`].
    Message {
        /// Bytes of the message, body included.
        len: usize,
    },
}

/// Looks at the front of a stream buffer.
pub fn next_frame(buf: &[u8], limits: &Limits) -> Result<Frame, Error> {
    if let Some(frame) = keep_alive(buf) {
        return Ok(frame);
    }
    let Some(head_end) = find_head_end(buf, 0) else {
        return incomplete_head(buf.len(), limits);
    };
    let len = framed_len(buf, head_end, limits)?;
    Ok(if buf.len() < len {
        Frame::Incomplete
    } else {
        Frame::Message { len }
    })
}

/// Largest whole message the limits allow.
fn max_message(limits: &Limits) -> usize {
    limits
        .max_message_bytes
        .min(crate::limits::MAX_MESSAGE_BYTES)
}

/// A keep-alive at the front of the buffer, `Incomplete` for what may still become one, `None`
/// when a message starts there.
fn keep_alive(buf: &[u8]) -> Option<Frame> {
    match buf {
        [] | [b'\r'] | [b'\r', b'\n', b'\r'] => Some(Frame::Incomplete),
        [b'\r', b'\n', b'\r', b'\n', ..] => Some(Frame::KeepAlive { len: 4, ping: true }),
        [b'\r', b'\n', ..] => Some(Frame::KeepAlive {
            len: 2,
            ping: false,
        }),
        [b'\n', ..] => Some(Frame::KeepAlive {
            len: 1,
            ping: false,
        }),
        _ => None,
    }
}

/// `buffered` bytes hold no complete header section yet: wait for more, unless no message that
/// fits the limits can start this way.
fn incomplete_head(buffered: usize, limits: &Limits) -> Result<Frame, Error> {
    let max_message = max_message(limits);
    if buffered > max_message {
        Err(Error::MessageTooLarge {
            size: buffered,
            limit: max_message,
        })
    } else {
        Ok(Frame::Incomplete)
    }
}

/// The whole length (header section plus Content-Length) of the message whose header section
/// is `buf[..head_end]`, checked against the limits.
fn framed_len(buf: &[u8], head_end: usize, limits: &Limits) -> Result<usize, Error> {
    let mut content_length: Option<u32> = None;
    let mut headers = 0usize;
    // Skip the start line; look at every header line that is not a continuation.
    let mut pos = memchr(b'\n', &buf[..head_end]).map_or(head_end, |i| i + 1);
    while pos < head_end {
        let nl = memchr(b'\n', &buf[pos..head_end]).map_or(head_end, |i| pos + i);
        let line = &buf[pos..nl];
        if !matches!(line.first(), Some(b' ' | b'\t') | None) && line != b"\r" {
            headers += 1;
            if headers > limits.max_headers {
                return Err(Error::TooManyHeaders {
                    limit: limits.max_headers,
                });
            }
            if let Some(colon) = memchr(b':', line) {
                let name = trim_bytes(&line[..colon]);
                if id_of(name) == HeaderName::ContentLength as u8 {
                    let n = parse_content_length(trim_bytes(&line[colon + 1..]))?;
                    match content_length {
                        Some(prev) if prev != n => return Err(Error::BadContentLength),
                        _ => content_length = Some(n),
                    }
                }
            }
        }
        pos = nl + 1;
    }
    let cl = content_length.ok_or(Error::MissingContentLength)? as usize;
    if cl > limits.max_body_bytes {
        return Err(Error::BodyTooLarge {
            size: cl,
            limit: limits.max_body_bytes,
        });
    }
    let len = head_end + cl;
    let max_message = max_message(limits);
    if len > max_message {
        return Err(Error::MessageTooLarge {
            size: len,
            limit: max_message,
        });
    }
    Ok(len)
}

/// End of the header section (just past the empty line), accepting CRLF or bare LF endings.
/// Line feeds before `from` are known not to start the empty line.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut from = from;
    while let Some(i) = memchr(b'\n', buf.get(from..)?) {
        let nl = from + i;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            _ => from = nl + 1,
        }
    }
    None
}

/// Where a search for the end of the header section may resume once `len` bytes were searched
/// without finding it: a line feed in the last two bytes may still turn out to start the empty
/// line (it needs up to two bytes after it), every earlier one has been decided.
fn resume_head_search(len: usize) -> usize {
    len.saturating_sub(2)
}

/// Buffer capacity a [`StreamFramer`] keeps between messages; more is given back once the
/// message that needed it has been handed out.
const KEEP_CAPACITY: usize = 16 * 1024;

/// One frame cut out of a [`StreamFramer`]'s buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed<'a> {
    /// A keep-alive; `ping` as in [`Frame::KeepAlive`] (true: answer with a single CRLF).
    KeepAlive {
        /// True when a CRLF pong must be sent back.
        ping: bool,
    },
    /// A complete message, body included: parse it with [`crate::Framing::Stream`].
    Message(&'a [u8]),
}

/// The receive side of one stream: bytes go in with [`StreamFramer::push`] as they arrive,
/// frames come out of [`StreamFramer::poll_frame`], which is called until it returns
/// `Ok(None)` (or an error, after which the stream is unusable: [`StreamFramer::unframed`]
/// holds what could not be framed, for [`crate::build::reply_to_unparsable`]).
///
/// It decides exactly what [`next_frame`] decides on the same bytes, in linear time: the
/// search for the end of a header section resumes where the previous one stopped, and once the
/// header section is complete the message's length is kept, so waiting for a body costs
/// nothing per read. The buffer holds at most one partial message beyond the last push (so
/// about `max_message_bytes` plus the largest push): [`poll_frame`](Self::poll_frame) refuses
/// a header section that grows past the limit.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    limits: Limits,
    buf: Vec<u8>,
    /// Start of the bytes not yet handed out.
    start: usize,
    /// From here (relative to `start`) the search for the end of the current header section
    /// resumes; everything before it has been looked at.
    head_search_from: usize,
    /// The current message's whole length, once its header section is complete.
    message_len: Option<usize>,
    /// Bytes looked at by the header search, for the tests of linearity.
    #[cfg(test)]
    examined: usize,
}

impl StreamFramer {
    /// An empty stream with these limits.
    pub fn new(limits: Limits) -> StreamFramer {
        StreamFramer {
            limits,
            buf: Vec::new(),
            start: 0,
            head_search_from: 0,
            message_len: None,
            #[cfg(test)]
            examined: 0,
        }
    }

    /// Appends received bytes. Bytes already handed out are dropped from the buffer first, so
    /// it keeps only what is still to be framed.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            // Everything was handed out: nothing to move, and a buffer grown for one large
            // message is not kept by an idle connection.
            self.buf.clear();
            self.buf.shrink_to(KEEP_CAPACITY);
            self.start = 0;
        } else if self.start > 0 {
            // Once per push, and only after a frame was handed out: each byte is moved at
            // most once for every frame that ends before it.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn poll_frame(&mut self) -> Result<Option<Framed<'_>>, Error> {
        let pending = &self.buf[self.start..];
        let len = match self.message_len {
            Some(len) => len,
            None => {
                match keep_alive(pending) {
                    Some(Frame::Incomplete) => return Ok(None),
                    Some(Frame::KeepAlive { len, ping }) => {
                        self.start += len;
                        self.head_search_from = 0;
                        return Ok(Some(Framed::KeepAlive { ping }));
                    }
                    Some(Frame::Message { .. }) | None => {}
                }
                #[cfg(test)]
                {
                    self.examined += pending.len() - self.head_search_from.min(pending.len());
                }
                let Some(head_end) = find_head_end(pending, self.head_search_from) else {
                    self.head_search_from = resume_head_search(pending.len());
                    return incomplete_head(pending.len(), &self.limits).map(|_| None);
                };
                let len = framed_len(pending, head_end, &self.limits)?;
                self.message_len = Some(len);
                len
            }
        };
        if pending.len() < len {
            return Ok(None);
        }
        let from = self.start;
        self.start += len;
        self.message_len = None;
        self.head_search_from = 0;
        Ok(Some(Framed::Message(&self.buf[from..from + len])))
    }

    /// Whether part of a frame is buffered: a message (or keep-alive) has begun and not ended.
    pub fn has_partial(&self) -> bool {
        self.start < self.buf.len()
    }

    /// The bytes received and not handed out as frames.
    pub fn unframed(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn trim_bytes(b: &[u8]) -> &[u8] {
    let is_ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let start = b.iter().position(|c| !is_ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !is_ws(c)).map_or(start, |i| i + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a caller sees from the stream: the frames, then the error that ended it, if any.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Message(Vec<u8>),
        KeepAlive(bool),
        Failed(Error),
    }

    /// The stateless rule applied the way a caller did before [`StreamFramer`]: the whole
    /// buffer is asked again after every read.
    fn reference(chunks: &[Vec<u8>], limits: &Limits) -> Vec<Seen> {
        let mut seen = Vec::new();
        let mut buf = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match next_frame(&buf, limits) {
                    Ok(Frame::Incomplete) => break,
                    Ok(Frame::KeepAlive { len, ping }) => {
                        buf.drain(..len);
                        seen.push(Seen::KeepAlive(ping));
                    }
                    Ok(Frame::Message { len }) => {
                        seen.push(Seen::Message(buf.drain(..len).collect()));
                    }
                    Err(e) => {
                        seen.push(Seen::Failed(e));
                        return seen;
                    }
                }
            }
        }
        seen
    }

    fn framed(chunks: &[Vec<u8>], limits: &Limits) -> (Vec<Seen>, StreamFramer) {
        let mut seen = Vec::new();
        let mut framer = StreamFramer::new(*limits);
        for chunk in chunks {
            framer.push(chunk);
            loop {
                match framer.poll_frame() {
                    Ok(None) => break,
                    Ok(Some(Framed::KeepAlive { ping })) => seen.push(Seen::KeepAlive(ping)),
                    Ok(Some(Framed::Message(m))) => seen.push(Seen::Message(m.to_vec())),
                    Err(e) => {
                        seen.push(Seen::Failed(e));
                        return (seen, framer);
                    }
                }
            }
        }
        (seen, framer)
    }

    fn message(extra_headers: &str, body: &str) -> String {
        format!(
            "OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n{extra_headers}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// Pieces a stream is made of: good messages in several shapes, keep-alives, and the
    /// mistakes that end a stream.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(message("", "").into_bytes()),
            Just(message("X-A: 1\r\n folded\r\n", "v=0\r\n").into_bytes()),
            Just(message("", "").replace("\r\n", "\n").into_bytes()),
            Just(b"\r\n\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n".to_vec()),
            Just(message("Content-Length: 7\r\n", "").into_bytes()),
            Just(
                message("", "")
                    .replace("Content-Length: 0", "Content-Length: x")
                    .into_bytes()
            ),
            proptest::collection::vec(any::<u8>(), 0..40),
        ]
    }

    /// Cuts `bytes` at the given fractions (any order, duplicates allowed).
    fn cut(bytes: &[u8], at: &[f64]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = at
            .iter()
            .map(|f| (f * bytes.len() as f64) as usize)
            .collect();
        points.push(bytes.len());
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for p in points {
            chunks.push(bytes[from..p].to_vec());
            from = p;
        }
        chunks
    }

    proptest! {
        #[test]
        fn decides_what_next_frame_decides(
            pieces in proptest::collection::vec(piece(), 0..8),
            at in proptest::collection::vec(0.0f64..1.0, 0..12),
            small in any::<bool>(),
        ) {
            let limits = Limits {
                max_message_bytes: if small { 120 } else { 65_535 },
                max_headers: 4,
                ..Limits::default()
            };
            let stream = pieces.concat();
            let chunks = cut(&stream, &at);
            prop_assert_eq!(framed(&chunks, &limits).0, reference(&chunks, &limits));
        }
    }

    #[test]
    fn a_header_dribbled_in_a_byte_at_a_time_is_scanned_about_once() {
        let mut head = String::from("OPTIONS sip:a SIP/2.0\r\nX-Pad: start\r\n");
        while head.len() < 64_000 {
            head.push_str(" aaaaaaaaaaaaa\r\n");
        }
        let whole = format!("{head}Content-Length: 4\r\n\r\nbody");
        let mut framer = StreamFramer::new(Limits::default());
        let mut messages = 0;
        for byte in whole.as_bytes() {
            framer.push(std::slice::from_ref(byte));
            while let Some(frame) = framer.poll_frame().unwrap() {
                assert_eq!(frame, Framed::Message(whole.as_bytes()));
                messages += 1;
            }
        }
        assert_eq!(messages, 1);
        assert!(!framer.has_partial());
        framer.push(b"\r\n");
        assert!(
            framer.buf.capacity() <= KEEP_CAPACITY,
            "an idle stream gives back the room a large message needed"
        );
        // The old way looked at ~n²/2 = 2 * 10^9 bytes here.
        assert!(
            framer.examined <= 3 * whole.len(),
            "examined {} bytes for a message of {}",
            framer.examined,
            whole.len()
        );
    }

    #[test]
    fn waiting_for_a_body_does_not_look_at_the_header_again() {
        let whole = message("", &"b".repeat(1000));
        let head_len = whole.len() - 1000;
        let mut framer = StreamFramer::new(Limits::default());
        framer.push(&whole.as_bytes()[..head_len]);
        assert_eq!(framer.poll_frame(), Ok(None));
        let examined = framer.examined;
        for byte in &whole.as_bytes()[head_len..whole.len() - 1] {
            framer.push(std::slice::from_ref(byte));
            assert_eq!(framer.poll_frame(), Ok(None));
            assert!(framer.has_partial());
        }
        assert_eq!(framer.examined, examined);
        framer.push(&whole.as_bytes()[whole.len() - 1..]);
        assert_eq!(
            framer.poll_frame(),
            Ok(Some(Framed::Message(whole.as_bytes())))
        );
        assert_eq!(framer.poll_frame(), Ok(None));
        assert!(!framer.has_partial());
    }

    #[test]
    fn pipelined_messages_and_pings_come_out_in_order() {
        let one = message("", "");
        let two = message("X-B: 2\r\n", "xy");
        let stream = format!("\r\n\r\n{one}{two}\r\n{one}");
        let (seen, framer) = framed(&[stream.into_bytes()], &Limits::default());
        assert_eq!(
            seen,
            vec![
                Seen::KeepAlive(true),
                Seen::Message(one.clone().into_bytes()),
                Seen::Message(two.into_bytes()),
                Seen::KeepAlive(false),
                Seen::Message(one.into_bytes()),
            ]
        );
        assert!(!framer.has_partial());
        assert!(framer.unframed().is_empty());
    }

    #[test]
    fn an_endless_header_is_refused_past_the_limit_and_kept_for_the_reply() {
        let limits = Limits {
            max_message_bytes: 1024,
            ..Limits::default()
        };
        let mut framer = StreamFramer::new(limits);
        framer.push(b"OPTIONS sip:a SIP/2.0\r\n");
        assert_eq!(framer.poll_frame(), Ok(None));
        framer.push(&[b'a'; 1100]);
        assert!(matches!(
            framer.poll_frame(),
            Err(Error::MessageTooLarge { limit: 1024, .. })
        ));
        assert!(framer.unframed().starts_with(b"OPTIONS sip:a"));
    }
}
