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
use std::collections::hash_map::Entry;
use std::collections::BinaryHeap;

use crate::hash::IdMap;
use std::hash::Hash;
use std::time::Instant;

/// Below this many heap entries, stale ones are left for the top to drop.
const REBUILD_FLOOR: usize = 64;

/// Where the ticks of the deadlines at or after the table's base start (see [`TimerTable::tick`]).
const TICK_ZERO: u64 = 1 << 63;

/// Deadlines by key. The keys are the proxy's own (transaction ids), so the key map hashes
/// them with [`IdMap`]'s multiply.
#[derive(Debug)]
pub struct TimerTable<K> {
    /// Every armed deadline, and the stale ones of keys moved or cancelled since, as ticks:
    /// a number per deadline instead of an `Instant` (seconds and nanoseconds), so the heap
    /// moves and compares smaller entries (most of what arming and firing cost).
    heap: BinaryHeap<Reverse<(u64, K)>>,
    /// The truth: each armed key's deadline, and its tick.
    by_key: IdMap<K, (Instant, u64)>,
    /// What the ticks count from: the first deadline ever set.
    base: Option<Instant>,
    /// The last instant [`pop_due`](Self::pop_due) was asked about, with its tick: the proxy
    /// asks about the same `now` for every message and timer handled at it, and working a
    /// tick out of an `Instant` costs more than comparing two.
    due_tick: Option<(Instant, u64)>,
}

impl<K: Ord> Default for TimerTable<K> {
    fn default() -> Self {
        TimerTable {
            heap: BinaryHeap::new(),
            by_key: IdMap::default(),
            base: None,
            due_tick: None,
        }
    }
}

impl<K: Ord + Hash + Copy> TimerTable<K> {
    /// `at` as a tick: nanoseconds from the base, offset by [`TICK_ZERO`] so an instant before
    /// the base orders before it. In the order of the instants, and one tick per instant for
    /// the 292 years either side of the base that an `i64` of nanoseconds spans (beyond, the
    /// ticks saturate: such deadlines would fire in the order they were read, never too soon).
    fn tick(&self, at: Instant) -> u64 {
        tick_from(self.base.unwrap_or(at), at)
    }

    /// Arms `key` at `at` unless it is armed there already: [`set`](Self::set) after a
    /// [`get`](Self::get) that differs, in one lookup of the key.
    pub fn set_unless_at(&mut self, key: K, at: Instant) {
        let base = *self.base.get_or_insert(at);
        match self.by_key.entry(key) {
            Entry::Occupied(armed) if armed.get().0 == at => {}
            Entry::Occupied(mut armed) => {
                let tick = tick_from(base, at);
                armed.insert((at, tick));
                self.heap.push(Reverse((tick, key)));
                self.drop_stale();
            }
            Entry::Vacant(slot) => {
                let tick = tick_from(base, at);
                slot.insert((at, tick));
                self.heap.push(Reverse((tick, key)));
            }
        }
    }

    /// Arms `key` at `at`, replacing any earlier deadline for it.
    pub fn set(&mut self, key: K, at: Instant) {
        self.base.get_or_insert(at);
        let tick = self.tick(at);
        let old = self.by_key.insert(key, (at, tick));
        self.heap.push(Reverse((tick, key)));
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
        self.by_key.get(&key).map(|(at, _)| *at)
    }

    /// The earliest deadline (the top of the heap is never stale).
    pub fn next_deadline(&self) -> Option<Instant> {
        let Reverse((_, key)) = self.heap.peek()?;
        self.get(*key)
    }

    /// Removes and returns one key whose deadline is at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &Reverse((tick, key)) = self.heap.peek()?;
        // The base is set (something was armed), and it never moves: a tick worked out for
        // `now` before holds.
        let now_tick = match self.due_tick {
            Some((at, tick)) if at == now => tick,
            _ => {
                let tick = self.tick(now);
                self.due_tick = Some((now, tick));
                tick
            }
        };
        if tick > now_tick {
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
                .map(|(key, (_, tick))| Reverse((*tick, *key)))
                .collect();
            return;
        }
        while let Some(&Reverse((tick, key))) = self.heap.peek() {
            if self.by_key.get(&key).is_some_and(|(_, t)| *t == tick) {
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

/// [`TimerTable::tick`] with `base` the table's base.
fn tick_from(base: Instant, at: Instant) -> u64 {
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    match at.checked_duration_since(base) {
        Some(after) => TICK_ZERO.saturating_add(nanos(after).min(TICK_ZERO - 1)),
        None => TICK_ZERO - nanos(base.duration_since(at)).min(TICK_ZERO),
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

    /// Ticks keep the order of the instants on both sides of the base, and one tick is one
    /// instant.
    #[test]
    fn ticks_order_as_instants_do() {
        let t0 = Instant::now() + Duration::from_secs(1000);
        let mut table = TimerTable::default();
        table.set(0u32, t0);
        let offsets = [
            -999_000_000_001i64,
            -1,
            0,
            1,
            7,
            1_000_000_000,
            86_400_000_000_000,
        ];
        let at = |ns: i64| {
            let d = Duration::from_nanos(ns.unsigned_abs());
            if ns < 0 {
                t0 - d
            } else {
                t0 + d
            }
        };
        for w in offsets.windows(2) {
            assert!(table.tick(at(w[0])) < table.tick(at(w[1])), "{w:?}");
        }
        assert_eq!(table.tick(t0), TICK_ZERO);
        for (i, ns) in offsets.iter().enumerate() {
            table.set(i as u32 + 1, at(*ns));
        }
        assert_eq!(table.next_deadline(), Some(at(offsets[0])));
        assert_eq!(table.pop_due(at(-2)), Some(1));
        assert_eq!(table.pop_due(at(-2)), None);
        assert_eq!(table.pop_due(at(-1)), Some(2));
    }

    /// The table against a sorted set of `(deadline, key)` pairs, the order it keeps: the same
    /// next deadline after every step and the same keys fired in the same order, through moves
    /// (`set` and `set_unless_at`), cancels, re-arms at an old deadline and rebuilds.
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
                choice @ (0 | 1) => {
                    let at = now + Duration::from_millis(next() % 50);
                    if let Some(old) = armed.insert(key, at) {
                        model.remove(&(old, key));
                    }
                    model.insert((at, key));
                    if choice == 0 {
                        table.set(key, at);
                    } else {
                        table.set_unless_at(key, at);
                    }
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
