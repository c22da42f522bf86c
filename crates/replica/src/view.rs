//! What `show twin` says about replication, shared by the node that fills it and the front
//! ends that print it.

use serde::{Deserialize, Serialize};

/// Hot or cold standby (`[twin] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Bindings and dialogs replicated: a takeover keeps every call.
    Hot,
    /// Nothing replicated: calls in progress are lost at a takeover, phones register again.
    Cold,
}

/// How the pair stands, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sync {
    /// `mode = "cold"`.
    Cold,
    /// No replication connection (or its handshake is not done).
    NotConnected,
    /// Connected; the standby does not hold the active's snapshot yet.
    Syncing,
    /// The standby holds the active's snapshot and follows its changes.
    Synced,
}

/// What `show twin` says about replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Hot or cold.
    pub mode: Mode,
    /// In sync or not.
    pub sync: Sync,
    /// Records this node has made (its sequence).
    pub position: u64,
    /// Highest record written to the twin.
    pub sent_seq: u64,
    /// Highest record the twin holds.
    pub acked_seq: u64,
    /// Highest record received from the twin.
    pub received_seq: u64,
    /// Records made and not yet held by the twin (active).
    pub lag_records: u64,
    /// How long the oldest record not yet held by the twin has waited, in ms.
    pub lag_ms: Option<u64>,
    /// Records applied to this node's tables.
    pub records_applied: u64,
    /// Records older than what this node held for their key: dropped.
    pub stale_dropped: u64,
    /// Records refused: undecodable, from another sender, or failing the proxy's checks.
    pub rejected: u64,
    /// Why the last one was refused.
    pub last_rejected: Option<String>,
    /// Snapshots written to the twin and taken from it.
    pub snapshots_sent: u64,
    /// Snapshots taken from the twin.
    pub snapshots_received: u64,
    /// Records of the last snapshot taken, and how long it took (begin to end marker).
    pub last_snapshot: Option<(u64, u64)>,
    /// Why the last connection ended.
    pub last_close: Option<crate::CloseReason>,
    /// A switchover under way: the sequence the twin must hold before this node releases.
    pub switchover_waiting_for: Option<u64>,
}
