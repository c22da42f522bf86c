//! Cutting messages out of a byte stream (TCP, SCTP) by Content-Length, RFC 3261 §18.3, with
//! the CRLF keep-alives of RFC 5626 §3.5.1.
//!
//! Stateless: the caller keeps its receive buffer, asks [`next_frame`] what its front holds,
//! consumes that many bytes and asks again. An `Err` means the stream cannot be resynchronised:
//! answer if [`crate::Error::disposition`] allows (see [`crate::build::reply_to_unparsable`])
//! and close the connection.

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
    let max_message = limits
        .max_message_bytes
        .min(crate::limits::MAX_MESSAGE_BYTES);
    match buf {
        [] | [b'\r'] | [b'\r', b'\n', b'\r'] => return Ok(Frame::Incomplete),
        [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Frame::KeepAlive { len: 4, ping: true }),
        [b'\r', b'\n', ..] => {
            return Ok(Frame::KeepAlive {
                len: 2,
                ping: false,
            })
        }
        [b'\n', ..] => {
            return Ok(Frame::KeepAlive {
                len: 1,
                ping: false,
            })
        }
        _ => {}
    }
    let head_end = match find_head_end(buf) {
        Some(end) => end,
        None if buf.len() > max_message => {
            return Err(Error::MessageTooLarge {
                size: buf.len(),
                limit: max_message,
            })
        }
        None => return Ok(Frame::Incomplete),
    };
    let mut content_length: Option<u32> = None;
    let mut headers = 0usize;
    // Skip the start line; look at every header line that is not a continuation.
    let mut pos = memchr(b'\n', buf).map_or(head_end, |i| i + 1);
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
    if len > max_message {
        return Err(Error::MessageTooLarge {
            size: len,
            limit: max_message,
        });
    }
    Ok(if buf.len() < len {
        Frame::Incomplete
    } else {
        Frame::Message { len }
    })
}

/// End of the header section (just past the empty line), accepting CRLF or bare LF endings.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr(b'\n', &buf[from..]) {
        let nl = from + i;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            _ => from = nl + 1,
        }
    }
    None
}

fn trim_bytes(b: &[u8]) -> &[u8] {
    let is_ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let start = b.iter().position(|c| !is_ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !is_ws(c)).map_or(start, |i| i + 1);
    &b[start..end]
}
