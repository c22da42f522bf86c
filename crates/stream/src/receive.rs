//! The receive side of a connection: decides which received bytes make a message, a keep-alive
//! or bad input, and what bad input is answered.
//!
//! A byte stream (TCP) is cut by Content-Length through [`sip::StreamFramer`], whose work is
//! linear in the bytes however they are cut into reads. Bad input there is fatal: once a frame
//! boundary is lost the stream cannot be resynchronised. A transport that marks where each
//! message ends (SCTP, with MSG_EOR) hands records; each record is framed on its own by the
//! same rules and must end where a frame ends. Bad input there costs only its record: the next
//! record starts clean, so the connection stays.

use sip::{Framed, StreamFramer};

/// How a connection's bytes are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A byte stream (TCP): messages are cut by Content-Length (RFC 3261 §18.3).
    Stream,
    /// Records whose ends the transport marks (SCTP: one SIP message per MSG_EOR record,
    /// RFC 4168), reported with [`crate::Connection::handle_end_of_record`].
    Records,
}

/// One thing the received bytes made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Received {
    /// A whole message, for the engine.
    Message(Vec<u8>),
    /// A double-CRLF ping: answer with a single CRLF (RFC 5626 §3.5.1).
    Ping,
    /// Bytes that cannot be framed, with the reply they deserve. `fatal` when the stream
    /// cannot go on (a byte stream lost its frame boundary).
    Bad {
        error: sip::Error,
        reply: Option<Vec<u8>>,
        fatal: bool,
    },
}

/// Framing state of one connection.
#[derive(Debug)]
pub(crate) enum Receiver {
    Stream {
        framer: StreamFramer,
        /// The stream could not be framed: nothing after that is looked at.
        broken: bool,
    },
    Records {
        limits: sip::Limits,
        /// The record received so far.
        record: Vec<u8>,
        /// The current record outgrew the limit: its rest is dropped until its end.
        skipping: bool,
    },
}

impl Receiver {
    pub(crate) fn new(mode: Mode, limits: sip::Limits) -> Receiver {
        match mode {
            Mode::Stream => Receiver::Stream {
                framer: StreamFramer::new(limits),
                broken: false,
            },
            Mode::Records => Receiver::Records {
                limits,
                record: Vec::new(),
                skipping: false,
            },
        }
    }

    /// Whether a message (or record, or keep-alive) has begun and not ended.
    pub(crate) fn in_progress(&self) -> bool {
        match self {
            Receiver::Stream { framer, broken } => !broken && framer.has_partial(),
            Receiver::Records {
                record, skipping, ..
            } => *skipping || !record.is_empty(),
        }
    }

    /// Received bytes; what they complete is appended to `out`. Returns whether a frame was
    /// completed (a message or keep-alive: the peer is talking).
    pub(crate) fn push(&mut self, bytes: &[u8], out: &mut Vec<Received>) -> bool {
        match self {
            Receiver::Stream { framer, broken } => {
                if *broken {
                    return false;
                }
                framer.push(bytes);
                let mut completed = false;
                loop {
                    match framer.poll_frame() {
                        Ok(None) => break,
                        Ok(Some(Framed::Message(m))) => out.push(Received::Message(m.to_vec())),
                        Ok(Some(Framed::KeepAlive { ping })) => {
                            if ping {
                                out.push(Received::Ping);
                            }
                        }
                        Err(error) => {
                            *broken = true;
                            let reply = verdict(&error, framer.unframed());
                            out.push(Received::Bad {
                                error,
                                reply,
                                fatal: true,
                            });
                            break;
                        }
                    }
                    completed = true;
                }
                completed
            }
            Receiver::Records {
                limits,
                record,
                skipping,
            } => {
                if *skipping {
                    return false;
                }
                record.extend_from_slice(bytes);
                let limit = max_message(limits);
                if record.len() > limit {
                    let error = sip::Error::MessageTooLarge {
                        size: record.len(),
                        limit,
                    };
                    let reply = verdict(&error, record);
                    out.push(Received::Bad {
                        error,
                        reply,
                        fatal: false,
                    });
                    *record = Vec::new();
                    *skipping = true;
                }
                false
            }
        }
    }

    /// The transport marked the end of a record; in stream mode there are no records and this
    /// does nothing. Returns whether a record ended.
    pub(crate) fn end_record(&mut self, out: &mut Vec<Received>) -> bool {
        let Receiver::Records {
            limits,
            record,
            skipping,
        } = self
        else {
            return false;
        };
        if std::mem::take(skipping) {
            // Refused when it outgrew the limit; only its end was awaited.
            return true;
        }
        frame_record(record, limits, out);
        record.clear();
        if record.capacity() > KEEP_CAPACITY {
            record.shrink_to(KEEP_CAPACITY);
        }
        true
    }
}

/// Buffer a records connection keeps between records; a larger one is given back.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Largest whole message the limits allow (the parser's ceiling too).
fn max_message(limits: &sip::Limits) -> usize {
    limits.max_message_bytes.min(sip::limits::MAX_MESSAGE_BYTES)
}

/// Frames one whole record: keep-alives and messages, which must end where the record ends.
fn frame_record(record: &[u8], limits: &sip::Limits, out: &mut Vec<Received>) {
    let mut at = 0;
    while at < record.len() {
        let rest = &record[at..];
        match sip::next_frame(rest, limits) {
            Ok(sip::Frame::KeepAlive { len, ping }) => {
                if ping {
                    out.push(Received::Ping);
                }
                at += len;
            }
            Ok(sip::Frame::Message { len }) => {
                out.push(Received::Message(rest[..len].to_vec()));
                at += len;
            }
            Ok(sip::Frame::Incomplete) => {
                // The record ended inside a frame: nothing more will come for it. The parser
                // says what is missing (the end of the header section, or body bytes).
                let error = match sip::Message::parse_with(rest, limits, sip::Framing::Datagram) {
                    Err(error) => error,
                    Ok(_) => sip::Error::UnterminatedHeaders,
                };
                let reply = verdict(&error, rest);
                out.push(Received::Bad {
                    error,
                    reply,
                    fatal: false,
                });
                return;
            }
            Err(error) => {
                let reply = verdict(&error, rest);
                out.push(Received::Bad {
                    error,
                    reply,
                    fatal: false,
                });
                return;
            }
        }
    }
}

/// What bad input is answered with: the parser's reply when the error deserves one and the
/// request's Via, From, To, Call-ID and CSeq can be found in the bytes; else nothing (noise,
/// responses and requests too broken to answer are never answered: that would make the box a
/// reflector).
fn verdict(error: &sip::Error, raw: &[u8]) -> Option<Vec<u8>> {
    let sip::Disposition::Reply { status, reason } = error.disposition() else {
        return None;
    };
    let mut reply = Vec::new();
    sip::build::reply_to_unparsable(raw, status, reason, &mut reply).ok()?;
    Some(reply)
}
