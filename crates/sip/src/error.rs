//! What can be wrong with a received message, and what the receiver should do about it.
//!
//! Parsing, framing and the typed accessors share one error enum, [`Error`], because they answer
//! the same question for the proxy: reply (and with which status) or drop silently.
//! Building and editing have their own enum, [`WriteError`], because their failures are the
//! caller's mistakes, never the peer's.

/// Why a received message (or one of its headers) was refused.
///
/// Every variant carries only `'static` data (offsets, header names, limits), so an error can
/// outlive the datagram that caused it and be logged or counted later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing but whitespace or CRLFs: a keep-alive that arrived where a message was expected.
    #[error("empty message (only whitespace)")]
    Empty,
    /// The first line is neither a SIP request line nor a SIP status line.
    #[error("not a SIP message: {0}")]
    NotSip(&'static str),
    /// A request line that names a SIP version other than 2.0.
    #[error("unsupported SIP version in the start line")]
    UnsupportedVersion,
    /// The request line is malformed (spacing, method token).
    #[error("malformed request line: {0}")]
    BadRequestLine(&'static str),
    /// The status line of a response is malformed.
    #[error("malformed status line: {0}")]
    BadStatusLine(&'static str),
    /// The Request-URI does not parse.
    #[error("malformed Request-URI: {0}")]
    BadRequestUri(&'static str),
    /// The header section is not UTF-8.
    #[error("header section is not valid UTF-8 (at byte {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// A header line has no colon, an empty or invalid name, or stray control characters.
    #[error("malformed header line at byte {offset}: {why}")]
    BadHeaderLine {
        /// Byte offset of the line in the message.
        offset: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The header section never ends (no empty line).
    #[error("header section is not terminated by an empty line")]
    UnterminatedHeaders,
    /// The whole message is bigger than [`crate::Limits::max_message_bytes`].
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Size seen (or at least seen so far).
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// More header lines than [`crate::Limits::max_headers`].
    #[error("more than {limit} header lines")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// More Via hops than [`crate::Limits::max_via_hops`].
    #[error("more than {limit} Via hops")]
    TooManyVias {
        /// The configured limit.
        limit: usize,
    },
    /// The body is bigger than [`crate::Limits::max_body_bytes`].
    #[error("body of {size} bytes exceeds the limit of {limit}")]
    BodyTooLarge {
        /// Declared body size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A message received on a stream transport without Content-Length (RFC 3261 §18.3).
    #[error("stream message without Content-Length")]
    MissingContentLength,
    /// Content-Length is not a number, negative, repeated with different values, or too big.
    #[error("malformed Content-Length")]
    BadContentLength,
    /// Content-Length says more bytes than the datagram holds.
    #[error("body shorter than Content-Length: declared {declared}, present {present}")]
    BodyTruncated {
        /// Content-Length value.
        declared: usize,
        /// Bytes actually present after the header section.
        present: usize,
    },
    /// A header the operation needs is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header is present but its value does not parse.
    #[error("malformed {name} header: {why}")]
    BadHeader {
        /// Canonical header name.
        name: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A header that must appear once appears several times with different values.
    #[error("conflicting {0} headers")]
    DuplicateHeader(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
}

/// What the receiver of a bad message should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Answer a request with this final status (only possible when the request's Via, From,
    /// To, Call-ID and CSeq can be recovered; responses are never answered).
    Reply {
        /// Status code (400, 413, 505, 513).
        status: u16,
        /// Reason phrase to send with it.
        reason: &'static str,
    },
    /// Drop silently (and count): there is nobody sensible to answer.
    Drop,
}

impl Error {
    /// The reply a request with this error deserves, or `Drop` when no reply makes sense.
    ///
    /// Responses are never answered whatever this says: the caller drops them.
    pub fn disposition(&self) -> Disposition {
        match self.status_code() {
            Some(status) => Disposition::Reply {
                status,
                reason: reason_phrase(status),
            },
            None => Disposition::Drop,
        }
    }

    /// Status code for a reply (see [`Error::disposition`]); `None` means drop.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            // Noise, keep-alives and things that are not SIP at all: answering them would
            // turn the SBC into a reflector.
            Error::Empty | Error::NotSip(_) => None,
            Error::UnsupportedVersion => Some(505),
            Error::MessageTooLarge { .. } | Error::TooManyHeaders { .. } => Some(513),
            Error::TooManyVias { .. } => Some(513),
            Error::BodyTooLarge { .. } => Some(413),
            // A status line we cannot read belongs to a response: never answered.
            Error::BadStatusLine(_) => None,
            Error::UnterminatedHeaders => Some(400),
            // A response must echo Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2): a
            // request without one of them cannot be answered, only dropped and counted
            // (RFC 4475 `insuf`).
            Error::MissingHeader(name)
                if ["Via", "From", "To", "Call-ID", "CSeq"]
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(name)) =>
            {
                None
            }
            _ => Some(400),
        }
    }
}

/// The standard reason phrase for the statuses this crate suggests.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => match status / 100 {
            1 => "Provisional",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// Why building or editing a message failed: a mistake of the caller, never of a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The output buffer is too small; `needed` bytes would fit the message.
    #[error("output buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// Bytes the result needs.
        needed: usize,
    },
    /// More edits or extra headers than the fixed table holds.
    #[error("more than {limit} edits or extra headers")]
    TooManyEdits {
        /// Capacity of the table.
        limit: usize,
    },
    /// A header name or value given by the caller contains CR, LF or NUL (header injection).
    #[error("invalid text for {what}: contains CR, LF or NUL, or is empty")]
    InvalidText {
        /// Which field.
        what: &'static str,
    },
    /// Two edits touch the same bytes of the original message.
    #[error("edits overlap at byte {offset}")]
    OverlappingEdits {
        /// Where the second edit starts.
        offset: usize,
    },
    /// A builder was asked to write without a mandatory field.
    #[error("missing mandatory field {0}")]
    Missing(&'static str),
    /// The message used as the template lacks something (for example a response without To).
    #[error("template message unusable: {0}")]
    Template(Error),
    /// The status code is outside 100..=699.
    #[error("status code {0} outside 100..=699")]
    BadStatus(u16),
}
