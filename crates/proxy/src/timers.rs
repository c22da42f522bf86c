//! A table of deadlines keyed by what they are for; the earliest one is what `poll_timeout`
//! returns.
//!
//! Setting a key again moves its deadline; cancelling forgets it. Both are O(log n), so the
//! table stays cheap with many transactions.

use std::collections::BTreeSet;

use crate::hash::IdMap;
use std::hash::Hash;
use std::time::Instant;

/// Deadlines by key. The keys are the proxy's own (transaction ids), so the key map hashes
/// them with [`IdMap`]'s multiply.
#[derive(Debug)]
pub struct TimerTable<K> {
    by_deadline: BTreeSet<(Instant, K)>,
    by_key: IdMap<K, Instant>,
}

impl<K> Default for TimerTable<K> {
    fn default() -> Self {
        TimerTable {
            by_deadline: BTreeSet::new(),
            by_key: IdMap::default(),
        }
    }
}

impl<K: Ord + Hash + Copy> TimerTable<K> {
    /// Arms `key` at `at`, replacing any earlier deadline for it.
    pub fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key, at) {
            self.by_deadline.remove(&(old, key));
        }
        self.by_deadline.insert((at, key));
    }

    /// Disarms `key`.
    pub fn cancel(&mut self, key: K) {
        if let Some(old) = self.by_key.remove(&key) {
            self.by_deadline.remove(&(old, key));
        }
    }

    /// The deadline of `key`, if armed.
    pub fn get(&self, key: K) -> Option<Instant> {
        self.by_key.get(&key).copied()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// Removes and returns one key whose deadline is at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &(at, key) = self.by_deadline.first()?;
        if at > now {
            return None;
        }
        self.by_deadline.remove(&(at, key));
        self.by_key.remove(&key);
        Some(key)
    }

    /// Gives back the room a burst left in the key map (see `Proxy::trim_tables`).
    pub fn trim(&mut self) {
        const SMALL: usize = 1024;
        let map = &mut self.by_key;
        if map.capacity() > SMALL && map.len() <= map.capacity() / 4 {
            map.shrink_to((map.len() * 2).max(SMALL));
        }
    }

    /// How many deadlines are armed.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_rearm_moves() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.set(1u32, t0 + Duration::from_secs(5));
        table.set(2u32, t0 + Duration::from_secs(3));
        table.set(1u32, t0 + Duration::from_secs(1));
        assert_eq!(table.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(table.pop_due(t0), None);
        assert_eq!(table.pop_due(t0 + Duration::from_secs(4)), Some(1));
        assert_eq!(table.pop_due(t0 + Duration::from_secs(4)), Some(2));
        assert!(table.is_empty());
        table.set(3, t0);
        table.cancel(3);
        assert_eq!(table.next_deadline(), None);
    }
}
