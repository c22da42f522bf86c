//! The twin's replication stream: the protocol of one TCP connection over the cross-connect that
//! carries registration bindings and dialog records from the active node to the standby.
//!
//! This crate decides: whether the peer is our twin (a Hello tagged under the twin key, the
//! other node id, the same SIP listeners, the same version), the key of the connection, whether
//! each frame is authentic and in its place, when a record may be written (the window), when
//! to acknowledge, when to send a heartbeat and when the peer is gone. It is sans-IO: no socket,
//! no clock, no task. Not here: the TCP socket and reconnecting (the shell drops the connection
//! when the session is closed and makes a new [`Session`] for the next one), the contents of
//! records (opaque bytes; the caller encodes them with postcard), which records to send and when
//! to take a snapshot (the caller's replication log).
//!
//! # The contract
//!
//! One [`Session`] per connection, fed with [`Session::handle_bytes`] (what the socket read, cut
//! anywhere), [`Session::handle_timeout`] (when [`Session::poll_timeout`] is reached),
//! [`Session::send`], [`Session::begin_snapshot`] and [`Session::end_snapshot`] (the caller's
//! records and markers, in order), and drained with [`Session::poll_bytes`] (write all of it, in
//! order) and [`Session::poll_event`]. After any `handle_*` or `send` call the shell drains
//! `poll_event` until `None`, then `poll_bytes` until `None`, then re-arms its timer from
//! `poll_timeout`. Time comes in as `now` and must not go backwards. `send` and `poll_bytes`
//! take no time: writes are stamped with the `now` of the latest `new`/`handle_*` call, so a
//! shell that queues records long after its last call first brings the clock forward with
//! `handle_timeout(now)` (allowed at any time; before a deadline it only moves the clock).
//! Once [`Session::is_closed`], the shell drops the connection.
//!
//! # The wire
//!
//! ```text
//! frame   = [u32 big-endian length of what follows] [body]
//! Hello   = [version 1][node id][boot epoch u64 BE][listener hash, 32][nonce, 16]
//!           [HMAC-SHA256(key, "sbc-replica-hello\0" || the 58 bytes before), 32]
//! session = HMAC-SHA256(key, "sbc-replica-session\0" || nonce₁ || nonce₂ || epoch₁ || epoch₂)
//!           (node 1's values first; a fresh nonce on each side per connection)
//! later   = [postcard(Frame)][HMAC-SHA256(session, sender id || counter u64 BE || body)[..16]]
//!           counter: frames this sender sent after its Hello, from 0 (implicit, per direction)
//! Frame   = Record{seq, payload} | SnapshotBegin{records} | SnapshotEnd{seq} | Ack{seq}
//!           | Heartbeat
//! ```
//!
//! Each side writes its Hello at once. A received length above `max_frame` closes with
//! [`CloseReason::Oversize`] as soon as the four prefix bytes are in, before anything is
//! buffered for it. A Hello whose length is not [`HELLO_LEN`] is [`CloseReason::Malformed`];
//! its tag is verified (constant time) before any field is read ([`CloseReason::Forged`]), then
//! the version ([`CloseReason::Version`]), the node id (ours: [`CloseReason::Reflected`]; not
//! 1 or 2: [`CloseReason::UnknownNode`]) and the listener hash
//! ([`CloseReason::ListenersDiffer`]). Later frames: a bad tag is [`CloseReason::Forged`]
//! (checked before decoding), an undecodable body or trailing bytes [`CloseReason::Malformed`].
//! Because the counter is implicit and the key is per connection, a frame that is replayed,
//! dropped, reordered, reflected or taken from another connection never verifies.
//!
//! # Ordering, acknowledgements and flow control
//!
//! - Record sequence numbers are the caller's: strictly increasing, from 1 (0 means "none" in
//!   [`Status`]). A received record whose seq does not exceed the last one closes with
//!   [`CloseReason::OutOfOrder`]. On the sending side, [`Session::send`] with a seq that does
//!   not exceed the previous one is a bug in the caller's counter: the session closes with
//!   [`CloseReason::OutOfOrder`] rather than drop the record silently (the standby would
//!   diverge unnoticed) or panic; the next connection resynchronises with a snapshot.
//! - Snapshot markers travel in the same queue as records, so they arrive in place. Records
//!   sent between the markers (snapshot and live alike) count as `got` in
//!   [`SnapshotProgress::Receiving`].
//! - A record is acknowledged once the application has taken it with [`Session::poll_event`]:
//!   the next `poll_bytes` writes one cumulative `Ack` of the highest seq taken. The sender
//!   reports [`Event::Acked`]. An Ack that does not increase, or names a seq never written,
//!   closes with [`CloseReason::OutOfOrder`].
//! - Window: the in-flight bytes are the wire sizes (prefix, body, tag) of records written and
//!   not yet acknowledged. `poll_bytes` does not write a record that would take them above
//!   `window_bytes`, except when nothing is in flight (so a record larger than the window still
//!   goes). Acks, heartbeats and markers at the head of the queue are never held. Records and
//!   markers queued before the handshake completes wait for it.
//! - One `poll_bytes` result coalesces frames up to [`COALESCE_BYTES`] plus one frame.
//! - A heartbeat is written when nothing was written for `heartbeat`; the session closes with
//!   [`CloseReason::Timeout`] when no authentic frame arrived for `idle_timeout` (the handshake
//!   too must finish within it).
//! - After the close nothing more is read, written or reported, except one [`Event::Closed`].

mod session;
mod view;
mod wire;

#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use session::{Session, COALESCE_BYTES};
pub use view::{Mode, Sync, View};
pub use wire::{HELLO_LEN, LEN_PREFIX, TAG_LEN, VERSION as WIRE_VERSION};

/// The settings of one replication connection.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// This node: 1 or 2; the peer must be the other one.
    pub node_id: u8,
    /// The shared twin key (at least [`Config::MIN_KEY_LEN`] bytes).
    pub key: Vec<u8>,
    /// This node's boot epoch (grows across restarts).
    pub boot_epoch: u64,
    /// Hash of the SIP listener list; both sides must agree.
    pub listener_hash: [u8; 32],
    /// Most bytes of records written but not acknowledged (default 256 KiB).
    pub window_bytes: usize,
    /// A heartbeat is written when nothing was written for this long (default 500 ms).
    pub heartbeat: Duration,
    /// The session closes when nothing authentic arrived for this long (default 3 s).
    pub idle_timeout: Duration,
    /// The largest frame accepted, tag included (default 1 MiB). Both sides should agree: a
    /// record larger than the peer's limit closes the connection.
    pub max_frame: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("node_id", &self.node_id)
            .field("key", &"..")
            .field("boot_epoch", &self.boot_epoch)
            .field("listener_hash", &self.listener_hash)
            .field("window_bytes", &self.window_bytes)
            .field("heartbeat", &self.heartbeat)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

/// Why a [`Config`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not 1 or 2.
    #[error("replica node_id is {0}; it must be 1 or 2")]
    NodeId(u8),
    /// Shorter than [`Config::MIN_KEY_LEN`].
    #[error("replica key is {0} bytes; at least {min} are needed", min = Config::MIN_KEY_LEN)]
    KeyTooShort(usize),
    /// Too small to hold a Hello or a useful record.
    #[error("replica max_frame is {0} bytes; it must be at least {min}", min = Config::MIN_FRAME)]
    MaxFrame(usize),
    /// Zero window, heartbeat or timeout, or a heartbeat not shorter than the idle timeout.
    #[error("replica timing is unusable: {0}")]
    Timing(&'static str),
}

impl Config {
    /// The shortest twin key accepted: 256 bits.
    pub const MIN_KEY_LEN: usize = 32;
    /// The smallest `max_frame` accepted.
    pub const MIN_FRAME: usize = 1024;

    /// A config with the default window, heartbeat, idle timeout and frame limit.
    pub fn new(node_id: u8, key: Vec<u8>, boot_epoch: u64, listener_hash: [u8; 32]) -> Config {
        Config {
            node_id,
            key,
            boot_epoch,
            listener_hash,
            window_bytes: 256 * 1024,
            heartbeat: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            max_frame: 1024 * 1024,
        }
    }

    /// Checks what [`Session::new`] relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.node_id, 1 | 2) {
            return Err(ConfigError::NodeId(self.node_id));
        }
        if self.key.len() < Self::MIN_KEY_LEN {
            return Err(ConfigError::KeyTooShort(self.key.len()));
        }
        if self.max_frame < Self::MIN_FRAME || self.max_frame > u32::MAX as usize {
            return Err(ConfigError::MaxFrame(self.max_frame));
        }
        if self.window_bytes == 0 {
            return Err(ConfigError::Timing("window_bytes is 0"));
        }
        if self.heartbeat.is_zero() || self.heartbeat >= self.idle_timeout {
            return Err(ConfigError::Timing(
                "heartbeat must be above 0 and below idle_timeout",
            ));
        }
        Ok(())
    }
}

/// What a [`Session`] reports, drained with [`Session::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer's Hello verified; records and markers now flow.
    Established {
        /// The peer's node id (the other one of 1 and 2).
        peer_node: u8,
        /// The peer's boot epoch.
        peer_epoch: u64,
    },
    /// The peer starts a snapshot of `records` records.
    SnapshotBegin {
        /// How many records the snapshot holds.
        records: u64,
    },
    /// A record, in order and exactly once. Taking it with `poll_event` acknowledges it.
    Record {
        /// The sender's sequence number, above every earlier one.
        seq: u64,
        /// The record, as the sender's caller encoded it.
        payload: Vec<u8>,
    },
    /// The peer's snapshot is complete as of its record `seq`.
    SnapshotEnd {
        /// The record the snapshot is complete as of.
        seq: u64,
    },
    /// The peer holds every record up to `seq`.
    Acked {
        /// The highest record the peer acknowledged (cumulative).
        seq: u64,
    },
    /// The session is over; the shell drops the connection. Reported once, last.
    Closed(CloseReason),
}

/// Why a session closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// A tag did not verify: wrong key, altered, replayed or foreign frame.
    #[error("a frame's tag did not verify")]
    Forged,
    /// The peer claims our own node id (our Hello came back).
    #[error("the peer claims our node id")]
    Reflected,
    /// The peer's node id is neither 1 nor 2.
    #[error("the peer's node id is not 1 or 2")]
    UnknownNode,
    /// The peer's SIP listener list differs from ours.
    #[error("the peer's SIP listeners differ from ours")]
    ListenersDiffer,
    /// The peer speaks another protocol version.
    #[error("the peer speaks another protocol version")]
    Version,
    /// A frame could not be decoded.
    #[error("a frame could not be decoded")]
    Malformed,
    /// A frame's length exceeds `max_frame`.
    #[error("a frame is larger than max_frame")]
    Oversize,
    /// A record or ack sequence number did not increase (or named a record never sent).
    #[error("a sequence number did not increase")]
    OutOfOrder,
    /// Nothing authentic arrived for `idle_timeout`.
    #[error("the peer was silent for the idle timeout")]
    Timeout,
    /// Closed by this node ([`Session::close`]) or an unusable [`Config`].
    #[error("closed locally")]
    Local,
}

/// How far the snapshot coming from the peer is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotProgress {
    /// No snapshot marker received on this connection.
    #[default]
    None,
    /// Between the markers: `got` records received (live ones included) of the `of` announced.
    Receiving {
        /// Records received since the begin marker.
        got: u64,
        /// Records the begin marker announced.
        of: u64,
    },
    /// The end marker arrived.
    Complete,
}

/// What `show twin` prints about the replication connection, taken by [`Session::status`].
/// Ages are relative to the `now` given there, in milliseconds in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The handshake completed and the session is not closed.
    pub established: bool,
    /// Why the session closed, if it did.
    pub closed: Option<CloseReason>,
    /// The peer's boot epoch, once its Hello verified.
    pub peer_epoch: Option<u64>,
    /// Highest record seq written.
    pub sent_seq: u64,
    /// Highest record seq the peer acknowledged.
    pub acked_seq: u64,
    /// Highest record seq delivered to us.
    pub received_seq: u64,
    /// Records queued and not yet written.
    pub queued_records: usize,
    /// Wire bytes of records written and not acknowledged.
    pub in_flight_bytes: usize,
    /// How long the oldest unacknowledged record has been written.
    #[serde(with = "millis")]
    pub oldest_unacked_age: Option<Duration>,
    /// Frames received (Hello included).
    pub frames_in: u64,
    /// Frames written (Hello included).
    pub frames_out: u64,
    /// The snapshot coming from the peer.
    pub snapshot: SnapshotProgress,
}

/// `Option<Duration>` as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(age: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match age {
            Some(age) => s.serialize_some(&(age.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// A 32-byte secret for another use of the twin key, under a label of its own
/// (HMAC-SHA256(key, "sbc-derive\0" || label)): both nodes derive the same one, nobody without
/// the key can. The pair's route key (SPEC §7: either node verifies what the other signed into
/// its Record-Route entries) comes from here.
pub fn derive(key: &[u8], label: &str) -> [u8; 32] {
    use hmac::Mac as _;
    let mut mac = match <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    mac.update(b"sbc-derive\0");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}
