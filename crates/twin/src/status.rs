//! What `show twin` prints (SPEC §7, last bullet): a snapshot taken by [`crate::Twin::status`].
//! Durations are in milliseconds, ages relative to the `now` the snapshot was taken at.

use serde::{Deserialize, Serialize};

use crate::{DropReason, PathId, PeerState, Phase, Role, TakeoverCause};

/// Counts of one path. A datagram is counted once: received (valid and fresh) or under the
/// reason it was dropped for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCounters {
    pub sent: u64,
    pub received: u64,
    pub forged: u64,
    pub replayed: u64,
    pub reflected: u64,
    pub malformed: u64,
    pub version: u64,
    pub unknown_node: u64,
}

impl PathCounters {
    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::Forged => &mut self.forged,
            DropReason::Replayed => &mut self.replayed,
            DropReason::Reflected => &mut self.reflected,
            DropReason::Malformed => &mut self.malformed,
            DropReason::Version => &mut self.version,
            DropReason::UnknownNode => &mut self.unknown_node,
        };
        *counter += 1;
    }

    /// Every datagram dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.forged
            + self.replayed
            + self.reflected
            + self.malformed
            + self.version
            + self.unknown_node
    }

    pub(crate) fn add(&mut self, other: &PathCounters) {
        self.sent += other.sent;
        self.received += other.received;
        self.forged += other.forged;
        self.replayed += other.replayed;
        self.reflected += other.reflected;
        self.malformed += other.malformed;
        self.version += other.version;
        self.unknown_node += other.unknown_node;
    }
}

/// One configured path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStatus {
    pub path: PathId,
    /// False once it carried nothing valid for `misses` intervals.
    pub up: bool,
    /// Age of the last valid keep-alive on it; `None` when never heard since start.
    pub last_heard_ms: Option<u64>,
    /// Whole intervals since the last valid keep-alive (or since start).
    pub misses: u64,
    pub counters: PathCounters,
}

/// The status queries of the failure detector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryCounters {
    /// Queries this node sent (one per path per silence).
    pub sent: u64,
    /// Answers to our queries that came back.
    pub answers_received: u64,
    /// Queries of the twin this node answered.
    pub answered: u64,
}

/// The twin as its last valid keep-alive described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinView {
    pub node_id: u8,
    pub role: Role,
    pub phase: Phase,
    pub standing_down: bool,
    pub state: PeerState,
    pub term: u64,
    pub epoch: u64,
    pub calls: u32,
    pub registrations: u32,
    pub health: u8,
    pub replication_position: u64,
    /// Whether it is heard now (false once lost).
    pub alive: bool,
    pub last_heard_ms: u64,
}

/// The last takeover this node made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastTakeover {
    pub cause: TakeoverCause,
    pub term: u64,
    /// How long ago the addresses were claimed.
    pub ago_ms: u64,
    /// Twin last heard to the decision; `None` when never heard.
    pub twin_silent_ms: Option<u64>,
    pub decision_to_claim_ms: u64,
    pub probe_ms: u64,
    pub attempts: u32,
}

/// Everything `show twin` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: u8,
    pub role: Role,
    pub phase: Phase,
    pub standing_down: bool,
    pub state: PeerState,
    pub term: u64,
    pub epoch: u64,
    pub owns_addresses: bool,
    pub twin: Option<TwinView>,
    pub paths: Vec<PathStatus>,
    /// The paths' counters added up.
    pub totals: PathCounters,
    pub queries: QueryCounters,
    pub last_takeover: Option<LastTakeover>,
}
