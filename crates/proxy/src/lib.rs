//! The transaction-stateful SIP proxy core of the SBC: transactions, registration cache,
//! dialog tracking, upstream selection and probing, and the drain rules of SPEC §2.
//!
//! It is sans-IO: no sockets, threads, clocks or files. The daemon feeds it received messages
//! and the time, and takes out datagrams to send, the next deadline and events. It is not the
//! place for name resolution, connection handling or persistence of the system state.

pub mod border;
pub mod config;
pub mod dialogs;
pub mod drain;
mod engine;
pub mod events;
pub mod msg;
pub mod registrations;
pub mod replication;
pub mod shard;
pub mod text;
pub mod timers;
pub mod transaction;
pub mod transport;
pub mod upstreams;

pub use border::{Keys, RouteToken, Signer, TokenParty};
pub use config::{Config, DrainConfig, Limits, ListenerConfig, TimerConfig, UpstreamConfig};
pub use engine::Proxy;
pub use events::{CallEndCause, CallInfo, ChangeRecord, Counts, Event, RegistrationInfo, Stats};
pub use replication::{RecordError, RecordKey};
pub use shard::Shards;
pub use system_state::SystemState;
pub use transport::{Close, Flow, FlowId, Input, ListenerId, Peer, Realm, Transmit, Transport};
pub use upstreams::{LastProbe, ProbeAnswer, UpstreamInfo};

#[cfg(test)]
mod tests;

/// The hash maps and sets of the proxy's tables: keyed by what hosts on the network send
/// (Call-IDs, branches, tags, AoRs, addresses), so keyed with a random seed per process like
/// std's, with a cheaper function than std's SipHash (it was 11 % of a call's instructions).
pub(crate) mod hash {
    pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
    pub(crate) type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;
}
