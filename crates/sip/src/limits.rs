//! How much a peer may make us hold: the limits checked while parsing.
//!
//! The header table of a [`crate::Message`] has a fixed capacity ([`MAX_HEADERS`]) so that
//! parsing never touches the heap; the configurable limits can only be lower.

/// Capacity of the header table of a [`crate::Message`]: the hard ceiling on header lines.
pub const MAX_HEADERS: usize = 80;

/// Hard ceiling on a message's size: header offsets are 16-bit. A SIP message beyond 64 KiB
/// is abuse for an SBC (it is the UDP maximum too).
pub const MAX_MESSAGE_BYTES: usize = 65_535;

/// Limits applied while parsing. `Limits::default()` suits a UDP/TCP SBC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole message accepted (start line, headers and body), capped at
    /// [`MAX_MESSAGE_BYTES`]. Over it: 513.
    pub max_message_bytes: usize,
    /// Most header lines accepted (capped at [`MAX_HEADERS`]). Over it: 513.
    pub max_headers: usize,
    /// Most Via hops accepted, counting comma-joined values. Over it: 513.
    pub max_via_hops: usize,
    /// Largest body accepted. Over it: 413.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // The largest UDP payload; a stream message larger than this is abuse for an SBC.
            max_message_bytes: 65_535,
            max_headers: MAX_HEADERS,
            // Far more than any sane route; loops are caught by Max-Forwards well before.
            max_via_hops: 70,
            max_body_bytes: 60_000,
        }
    }
}

/// How the bytes given to the parser were delimited, which decides how Content-Length is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// A UDP datagram: Content-Length, when present, cuts the body (surplus bytes ignored, a
    /// short body refused); when absent, the body runs to the end of the datagram.
    #[default]
    Datagram,
    /// One message cut out of a TCP/SCTP stream (see [`crate::framing`]): Content-Length is
    /// mandatory.
    Stream,
}
