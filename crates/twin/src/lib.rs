//! The twin (SPEC §7): two appliances that watch each other over two paths and agree, without a
//! third party, which of them owns the service addresses.
//!
//! This crate decides: when to send a keep-alive and what it carries, whether a received one is
//! genuine and fresh (HMAC-SHA256 under the twin key, an IPsec-style replay window per boot
//! epoch), when a path is down (an alarm) and when the twin is gone (silent on every path for
//! `misses` intervals, then unanswered to one status query for one more interval), when to take
//! the service addresses over (term raised, addresses probed, claimed, announced) and when to
//! give them back (fencing: a higher term, or an equal term against node 1). It is sans-IO: no
//! socket, no clock, no file. Not here: reading the key file, sockets, ARP and `ip addr`
//! (the shell does them when told to), replication of calls and registrations (part 2; only
//! its position is advertised).
//!
//! # The contract
//!
//! One [`Twin`] per node, fed with `handle_*` calls (datagrams, timeouts, what to advertise,
//! probe results, the operator's release) and drained with `#[must_use]` `poll_*` calls
//! (datagrams to send, [`AddressAction`]s, [`Event`]s, the next timeout): see [`Twin`] for the
//! order. Time comes in as `now` on every call and must not go backwards. The shell starts with
//! no service address configured and passes a boot epoch that grows across restarts (it
//! persists it, e.g. as `max(persisted + 1, unix seconds)`), so the twin can tell a restart from
//! a replay. A box whose epoch went backwards is heard by its twin as a replayer (every datagram
//! counted under `replayed`) until the twin itself restarts.
//!
//! # The wire
//!
//! `[0xB7] [version 1] [postcard body] [HMAC-SHA256 tag, 32 bytes]`, the tag over everything
//! before it, keyed under a domain label of its own (the twin key also signs Record-Route
//! entries). A datagram is checked for size ([`MAX_DATAGRAM`]), then for its tag in constant
//! time, and only then for its version and decoded. Every datagram carries the sender's node
//! id, boot epoch, sequence number (one counter for both paths), term, phase, system state,
//! counts, health, replication position and kind (beat, status query with a nonce, answer
//! echoing it).
//!
//! # Decisions, in short
//!
//! - A node starts [`Role::Standby`] with term 0 and adopts any higher term it hears.
//! - Twin silent everywhere for the detection time → take over (cause
//!   [`TakeoverCause::TwinSilent`]). One path silent → [`Event::PathDown`] only.
//! - Both standby and hearing each other → an election: the node that is not standing down,
//!   then the one that is online, then node 1 takes over ([`TakeoverCause::Election`]).
//! - `preempt` is honoured on node 1 only (in active/standby the addresses' home is node 1;
//!   setting it on both must not make them fight): node 1, standby and online, hearing an active
//!   node 2 continuously for the detection time, takes over ([`TakeoverCause::Preempt`]); node 2
//!   hears the higher term and releases at once.
//! - A takeover raises the term (above any term heard), advertises it at once, probes, and
//!   claims only when the probe found no one answering; a conflict backs off and retries while
//!   the reason to take over still holds.
//! - Fencing: a node that hears a higher term releases (or abandons its probe) at once; at equal
//!   terms, when both claim, node 2 gives way. So two nodes that hear each other never both hold
//!   the addresses for longer than one interval plus the path latency.

mod machine;
mod replay;
mod status;
mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use machine::Twin;
pub use replay::WINDOW as REPLAY_WINDOW;
pub use status::{LastTakeover, PathCounters, PathStatus, QueryCounters, Status, TwinView};
pub use wire::{Phase, MAX_DATAGRAM, VERSION as WIRE_VERSION};

/// Which of the two boxes this is: 1 or 2 (`[twin] node_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u8);

impl NodeId {
    /// The other box's id.
    pub fn twin(self) -> NodeId {
        if self.0 == 1 {
            NodeId(2)
        } else {
            NodeId(1)
        }
    }
}

/// A path between the twins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathId {
    /// The cross-connect (eth2).
    Link,
    /// The second path, over the access network.
    Second,
}

impl PathId {
    /// Both paths, in the order status lists them.
    pub const ALL: [PathId; 2] = [PathId::Link, PathId::Second];

    fn index(self) -> usize {
        match self {
            PathId::Link => 0,
            PathId::Second => 1,
        }
    }
}

/// The shared twin key (`key_file`). Keyed into HMAC-SHA256 once; never printed.
#[derive(Clone)]
pub struct Key {
    keyed: wire::HmacSha256,
}

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Shorter than [`Key::MIN_LEN`] bytes.
    #[error("twin key is {len} bytes; at least {min} are needed", min = Key::MIN_LEN)]
    TooShort { len: usize },
}

impl Key {
    /// The shortest key accepted: 128 bits.
    pub const MIN_LEN: usize = 16;

    /// A key from the bytes of the key file.
    pub fn new(bytes: Vec<u8>) -> Result<Key, KeyError> {
        use hmac::Mac;
        if bytes.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort { len: bytes.len() });
        }
        // HMAC accepts keys of any length, so this cannot fail; mapped anyway rather than
        // unwrapped.
        let keyed = <wire::HmacSha256 as Mac>::new_from_slice(&bytes)
            .map_err(|_| KeyError::TooShort { len: bytes.len() })?;
        Ok(Key { keyed })
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why [`Twin::handle_release_request`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// Releasing now would leave the service addresses unserved.
    #[error("the twin is not heard: releasing the service addresses would leave them unserved")]
    TwinNotHeard,
}

/// The system state this node advertises (SPEC §2), as the twin sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Online,
    Draining,
    Offline,
}

/// Whether a node owns the service addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Standby,
    Active,
}

/// The `[twin]` section, as the twin needs it.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    /// Keep-alive interval (`interval_ms`, default 100 ms).
    pub interval: Duration,
    /// Intervals of silence before a path is down (default 3).
    pub misses: u32,
    /// Node 1 takes its addresses back from an active node 2 (see the crate doc).
    pub preempt: bool,
    pub key: Key,
    /// Whether the second path (access network) is configured.
    pub second_path: bool,
    /// The addresses the active node owns; the twin only names them in [`AddressAction`]s.
    pub service_addresses: Vec<IpAddr>,
}

/// Why a `Config` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("twin node_id is {0}; it must be 1 or 2")]
    NodeId(u8),
    #[error("twin interval is {0:?}; it must be between 1 ms and 60 s")]
    Interval(Duration),
    #[error("twin misses is {0}; it must be between 1 and 1000")]
    Misses(u32),
}

impl Config {
    /// The defaults of SPEC §9: 100 ms, 3 misses, no preempt, second path configured.
    pub fn new(node_id: NodeId, key: Key, service_addresses: Vec<IpAddr>) -> Config {
        Config {
            node_id,
            interval: Duration::from_millis(100),
            misses: 3,
            preempt: false,
            key,
            second_path: true,
            service_addresses,
        }
    }

    /// Checks the values; the daemon calls it while loading the file. [`Twin::new`] clamps what
    /// it is given to these bounds, so it never fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.node_id.0, 1 | 2) {
            return Err(ConfigError::NodeId(self.node_id.0));
        }
        if self.interval < MIN_INTERVAL || self.interval > MAX_INTERVAL {
            return Err(ConfigError::Interval(self.interval));
        }
        if self.misses == 0 || self.misses > MAX_MISSES {
            return Err(ConfigError::Misses(self.misses));
        }
        Ok(())
    }

    /// How long the twin may be silent before a takeover: `misses` intervals, then one more for
    /// the status query.
    pub fn detection_time(&self) -> Duration {
        self.interval * (self.misses + 1)
    }

    fn paths(&self) -> impl Iterator<Item = PathId> {
        let second = self.second_path;
        PathId::ALL
            .into_iter()
            .filter(move |p| *p == PathId::Link || second)
    }
}

const MIN_INTERVAL: Duration = Duration::from_millis(1);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
const MAX_MISSES: u32 = 1000;

/// What this node's keep-alives carry besides the twin's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertised {
    pub state: PeerState,
    pub calls: u32,
    pub registrations: u32,
    /// 0 (sick) to 100 (healthy).
    pub health: u8,
    pub replication_position: u64,
}

impl Default for Advertised {
    fn default() -> Advertised {
        Advertised {
            state: PeerState::Online,
            calls: 0,
            registrations: 0,
            health: 100,
            replication_position: 0,
        }
    }
}

/// A datagram to send to the twin on `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub path: PathId,
    pub payload: Vec<u8>,
}

/// What the shell must do to the service addresses, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressAction {
    /// Probe each as RFC 5227 (timers in tens of ms); answer with
    /// [`Twin::handle_probe_result`].
    Probe(Vec<IpAddr>),
    /// Add them to their interfaces and serve them.
    Claim(Vec<IpAddr>),
    /// Send gratuitous ARP for each. The twin emits this several times (a burst tens of ms
    /// apart, then once more about a second after the claim): one ARP per address each time.
    Announce(Vec<IpAddr>),
    /// Remove them from the interfaces at once.
    Release(Vec<IpAddr>),
}

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// The tag does not verify under the twin key.
    Forged,
    /// An older boot epoch, or a sequence number seen already or older than the window.
    Replayed,
    /// Our own node id: our datagram came back to us.
    Reflected,
    /// Authentic but undecodable, of the wrong size, or not a twin datagram at all.
    Malformed,
    /// Authentic but in an envelope version this build does not speak.
    Version,
    /// Authentic, but from a node id that is neither ours nor our twin's (a key shared too
    /// widely).
    UnknownNode,
}

/// Why a takeover started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TakeoverCause {
    /// The twin was silent on every path and did not answer the status query (or was never
    /// heard since start).
    TwinSilent,
    /// Both nodes standby and hearing each other; this one won (see the crate doc).
    Election,
    /// `preempt`: node 1 takes its addresses back from an active node 2.
    Preempt,
}

/// Why the role changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleCause {
    /// A takeover completed.
    Takeover(TakeoverCause),
    /// The twin claims with a higher term (or an equal term and node 1).
    Fenced,
    /// [`Twin::handle_release_request`].
    Operator,
}

/// How a takeover went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverReport {
    pub cause: TakeoverCause,
    /// The term it claimed with.
    pub term: u64,
    /// From the last valid datagram of the twin to the decision; `None` when never heard.
    pub twin_silent_for: Option<Duration>,
    /// From the decision to the claim (probes and back-offs included).
    pub decision_to_claim: Duration,
    /// The last probe, from [`AddressAction::Probe`] to its result.
    pub probe: Duration,
    /// Probes made (1 unless a probe found a conflict).
    pub attempts: u32,
}

/// What happened, for logs, alarms and the composing `node` crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    RoleChanged {
        from: Role,
        to: Role,
        term: u64,
        cause: RoleCause,
    },
    /// A path carried nothing valid for `misses` intervals (an alarm while the twin is heard on
    /// the other).
    PathDown(PathId),
    /// A down path carries valid keep-alives again.
    PathUp(PathId),
    /// Silent everywhere and no answer to the status query.
    TwinLost,
    /// The twin heard for the first time since start or since it was lost.
    TwinFound,
    /// The twin came back with a higher boot epoch.
    TwinRestarted { epoch: u64 },
    /// Term raised, addresses being probed.
    TakeoverStarted { cause: TakeoverCause, term: u64 },
    /// Addresses claimed; this node is active.
    TakeoverDone(TakeoverReport),
    /// A probing node heard a stronger claim from its twin and gave up before claiming.
    TakeoverAbandoned { our_term: u64, their_term: u64 },
    /// The addresses were released because the twin claims with a higher term (or an equal
    /// term and node 1).
    Yielded { our_term: u64, their_term: u64 },
    /// The probe found these addresses answered by someone: not claimed, retried later.
    ProbeConflict(Vec<IpAddr>),
    /// The shell did not answer the probe in time: not claimed, retried later.
    ProbeUnanswered,
    /// A received datagram was dropped (and counted).
    Dropped { path: PathId, reason: DropReason },
}
