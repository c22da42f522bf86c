//! Cutting SIP messages out of a byte stream (RFC 3261 §18.3: Content-Length is mandatory on
//! streams) and recognising RFC 5626 keep-alives.
//!
//! Temporary: this is a stand-in until the `sip` crate's framer (`sip::framing`) is committed;
//! the connection code only depends on [`next`] and [`Frame`], so the swap is local to this file.

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes yet.
    Incomplete,
    /// A keep-alive: `len` bytes to skip; `pong` when it was a ping (CRLFCRLF) to answer.
    KeepAlive { len: usize, pong: bool },
    /// A complete message of `len` bytes.
    Message { len: usize },
}

/// Why a stream cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("header section longer than {0} bytes")]
    HeadTooLong(usize),
    #[error("message without Content-Length on a stream")]
    NoContentLength,
    #[error("Content-Length {0:?} is not a number")]
    BadContentLength(String),
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
}

/// Looks at the front of `buf`.
pub fn next(buf: &[u8], max: usize) -> Result<Frame, FramingError> {
    if buf.starts_with(b"\r\n\r\n") {
        return Ok(Frame::KeepAlive { len: 4, pong: true });
    }
    if buf.starts_with(b"\r\n") {
        if buf.len() < 4 && b"\r\n\r\n".starts_with(buf) {
            return Ok(Frame::Incomplete);
        }
        return Ok(Frame::KeepAlive {
            len: 2,
            pong: false,
        });
    }
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > max {
            return Err(FramingError::HeadTooLong(max));
        }
        return Ok(Frame::Incomplete);
    };
    let head = &buf[..head_end];
    let mut length = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = String::from_utf8_lossy(line);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let value = value.trim();
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| FramingError::BadContentLength(value.to_string()))?,
            );
        }
    }
    let body = length.ok_or(FramingError::NoContentLength)?;
    let len = head_end + 4 + body;
    if len > max {
        return Err(FramingError::TooLong { len, max });
    }
    if buf.len() < len {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Message { len })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_messages_and_keepalives() {
        let msg = b"OPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabcREST";
        assert_eq!(next(msg, 1000), Ok(Frame::Message { len: msg.len() - 4 }));
        assert_eq!(next(&msg[..20], 1000), Ok(Frame::Incomplete));
        assert_eq!(
            next(b"\r\n\r\nX", 1000),
            Ok(Frame::KeepAlive { len: 4, pong: true })
        );
        assert_eq!(next(b"\r\n", 1000), Ok(Frame::Incomplete));
        assert_eq!(
            next(b"\r\nINVITE", 1000),
            Ok(Frame::KeepAlive {
                len: 2,
                pong: false
            })
        );
        assert!(next(b"OPTIONS sip:a SIP/2.0\r\n\r\n", 1000).is_err());
        assert!(next(b"A\r\nContent-Length: 5000\r\n\r\n", 1000).is_err());
    }
}
