//! A table of deadlines keyed by what they are for; the earliest one is what `poll_timeout`
//! returns.
//!
//! Setting a key again moves its deadline; cancelling forgets it. The deadlines sit in a binary
//! heap that is not searched: a moved or cancelled deadline stays in it, stale, until it comes
//! to the top, where the key map (the truth) tells it from a live one and it is dropped. So
//! arming costs a push and a map write, cancelling a map write, and the table keeps no stale
//! deadline at its top (`next_deadline` is exact). The heap is rebuilt from the map when stale
//! entries outnumber live ones, so it holds at most about twice what is armed.
//!
//! Deadlines fire earliest first, and among equal deadlines in the keys' order: the order of
//! `(deadline, key)`, as when the table was a sorted set of those pairs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::hash::IdMap;
use std::hash::Hash;
use std::time::Instant;

/// Below this many heap entries, stale ones are left for the top to drop.
const REBUILD_FLOOR: usize = 64;

/// Deadlines by key. The keys are the proxy's own (transaction ids), so the key map hashes
/// them with [`IdMap`]'s multiply.
#[derive(Debug)]
pub struct TimerTable<K> {
    /// Every armed deadline, and the stale ones of keys moved or cancelled since.
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    by_key: IdMap<K, Instant>,
}

impl<K: Ord> Default for TimerTable<K> {
    fn default() -> Self {
        TimerTable {
            heap: BinaryHeap::new(),
            by_key: IdMap::default(),
        }
    }
}

impl<K: Ord + Hash + Copy> TimerTable<K> {
    /// Arms `key` at `at`, replacing any earlier deadline for it.
    pub fn set(&mut self, key: K, at: Instant) {
        let old = self.by_key.insert(key, at);
        self.heap.push(Reverse((at, key)));
        if old.is_some() {
            self.drop_stale();
        }
    }

    /// Disarms `key`.
    pub fn cancel(&mut self, key: K) {
        if self.by_key.remove(&key).is_some() {
            self.drop_stale();
        }
    }

    /// The deadline of `key`, if armed.
    pub fn get(&self, key: K) -> Option<Instant> {
        self.by_key.get(&key).copied()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one key whose deadline is at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &Reverse((at, key)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.by_key.remove(&key);
        self.drop_stale();
        Some(key)
    }

    /// Keeps a live deadline at the top, and the heap at most about twice the armed ones.
    fn drop_stale(&mut self) {
        if self.heap.len() > REBUILD_FLOOR && self.heap.len() > 2 * self.by_key.len() {
            self.heap = self
                .by_key
                .iter()
                .map(|(key, at)| Reverse((*at, *key)))
                .collect();
            return;
        }
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if self.by_key.get(&key) == Some(&at) {
                return;
            }
            self.heap.pop();
        }
    }

    /// Gives back the room a burst left in the key map and the heap (see
    /// `Proxy::trim_tables`).
    pub fn trim(&mut self) {
        const SMALL: usize = 1024;
        let map = &mut self.by_key;
        if map.capacity() > SMALL && map.len() <= map.capacity() / 4 {
            map.shrink_to((map.len() * 2).max(SMALL));
        }
        let heap = &mut self.heap;
        if heap.capacity() > SMALL && heap.len() <= heap.capacity() / 4 {
            heap.shrink_to((heap.len() * 2).max(SMALL));
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

    /// The table against a sorted set of `(deadline, key)` pairs, the order it keeps: the same
    /// next deadline after every step and the same keys fired in the same order, through moves,
    /// cancels, re-arms at an old deadline and rebuilds.
    #[test]
    fn fires_as_a_sorted_set_of_pairs_would() {
        use std::collections::{BTreeSet, HashMap};
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        let mut model: BTreeSet<(Instant, u32)> = BTreeSet::new();
        let mut armed: HashMap<u32, Instant> = HashMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut now = t0;
        for _ in 0..20_000 {
            let key = (next() % 300) as u32;
            match next() % 4 {
                0 | 1 => {
                    let at = now + Duration::from_millis(next() % 50);
                    if let Some(old) = armed.insert(key, at) {
                        model.remove(&(old, key));
                    }
                    model.insert((at, key));
                    table.set(key, at);
                }
                2 => {
                    if let Some(old) = armed.remove(&key) {
                        model.remove(&(old, key));
                    }
                    table.cancel(key);
                }
                _ => {
                    now += Duration::from_millis(next() % 7);
                    loop {
                        let want = model.first().copied().filter(|(at, _)| *at <= now);
                        if let Some(pair) = want {
                            model.remove(&pair);
                            armed.remove(&pair.1);
                        }
                        assert_eq!(table.pop_due(now), want.map(|(_, k)| k));
                        if want.is_none() {
                            break;
                        }
                    }
                }
            }
            assert_eq!(table.next_deadline(), model.first().map(|(at, _)| *at));
            assert_eq!(table.len(), model.len());
        }
    }
}
