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
///
/// The tables keyed by the proxy's own numbers (transaction ids, counted up from 1, and the
/// timer keys made of them) are [`hash::IdMap`]s: nobody outside chooses those keys, and a
/// multiply spreads consecutive numbers over a table as well as a keyed hash does.
pub(crate) mod hash {
    use std::hash::{BuildHasherDefault, Hasher};

    pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
    pub(crate) type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;
    pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<IdHasher>>;

    /// Fibonacci hashing of the integers written into it (an enum's variant, then its id).
    /// Only for keys the proxy makes itself: a sender could pick colliding values.
    #[derive(Debug, Clone, Copy, Default)]
    pub(crate) struct IdHasher(u64);

    /// 2^64 divided by the golden ratio, odd: multiplying by it permutes the 64-bit numbers
    /// and carries each bit into every higher one.
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

    impl Hasher for IdHasher {
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.write_u64(u64::from(b));
            }
        }

        #[inline]
        fn write_u64(&mut self, n: u64) {
            self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(GOLDEN);
        }

        #[inline]
        fn write_u8(&mut self, n: u8) {
            self.write_u64(u64::from(n));
        }

        #[inline]
        fn write_u16(&mut self, n: u16) {
            self.write_u64(u64::from(n));
        }

        #[inline]
        fn write_u32(&mut self, n: u32) {
            self.write_u64(u64::from(n));
        }

        #[inline]
        fn write_usize(&mut self, n: usize) {
            self.write_u64(n as u64);
        }

        #[inline]
        fn write_isize(&mut self, n: isize) {
            self.write_u64(n as u64);
        }

        #[inline]
        fn finish(&self) -> u64 {
            self.0
        }
    }

    #[cfg(test)]
    mod tests {
        use std::hash::BuildHasher;

        #[test]
        fn consecutive_ids_fill_every_bucket_of_a_table() {
            // A table of 2^k buckets indexes by the low k bits: consecutive ids land in
            // distinct buckets (the multiplier is odd), with or without an enum's variant.
            let ids = super::BuildHasherDefault::<super::IdHasher>::default();
            let buckets = 1u64 << 12;
            for variant in [None, Some(0usize), Some(3)] {
                let mut seen = std::collections::HashSet::new();
                for id in 1..=buckets {
                    let hash = ids.hash_one((variant, id));
                    seen.insert(hash % buckets);
                }
                assert!(
                    seen.len() as u64 > buckets * 6 / 10,
                    "{variant:?}: {}",
                    seen.len()
                );
                let plain: std::collections::HashSet<u64> =
                    (1..=buckets).map(|id| ids.hash_one(id) % buckets).collect();
                assert_eq!(plain.len() as u64, buckets);
            }
        }
    }
}
