//! The registration cache: which contact, reached over which flow, answers for which AoR, and
//! until when.
//!
//! Bindings are learned from the core registrar's 2xx, never from the REGISTER alone, so the
//! cache holds only what the core accepted. Every change is returned as a
//! [`BindingChange`] so it can be reported and replicated to the twin.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::hash::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::shard::Shards;
use crate::transport::{Flow, FlowId, ListenerId, Peer};

/// The cache key of an AoR: `user@host`, host lower-cased, no scheme, no parameters.
pub type AorKey = String;

/// One cached binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The address of record (key form).
    pub aor: AorKey,
    /// The contact URI as the endpoint sent it (without header parameters).
    pub contact: String,
    /// When it lapses.
    pub expires_at: Instant,
    /// How the endpoint is reached: the flow its REGISTER came over.
    pub flow: Flow,
    /// The REGISTER's Call-ID, so a de-registration on its behalf matches the binding.
    pub call_id: String,
    /// The REGISTER's CSeq number, for the same reason.
    pub cseq: u32,
    /// The To URI as sent (for building a de-registration).
    pub to_uri: String,
    /// The registrar's request URI (for building a de-registration).
    pub registrar_uri: String,
    /// The Authorization / Proxy-Authorization lines (name, value) of the REGISTER the core
    /// accepted: the only credentials the box can offer when it must de-register the binding
    /// with no REGISTER in hand (the guard, SPEC §2 rule 11).
    pub credentials: Vec<(String, String)>,
}

/// A binding as it travels to the twin: times are relative, since clocks differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// The AoR.
    pub aor: AorKey,
    /// The contact URI.
    pub contact: String,
    /// Milliseconds of validity left when the record was made.
    pub expires_in_ms: u64,
    /// How the endpoint is reached, without the sender's connection number: a connection is
    /// the sender's own and means nothing to the twin.
    pub peer: Peer,
    /// The REGISTER's Call-ID.
    pub call_id: String,
    /// The REGISTER's CSeq.
    pub cseq: u32,
    /// The To URI.
    pub to_uri: String,
    /// The registrar URI.
    pub registrar_uri: String,
    /// The credentials of the accepted REGISTER (so the twin can de-register after a
    /// takeover); absent in records from a build that did not keep them.
    #[serde(default)]
    pub credentials: Vec<(String, String)>,
}

impl BindingRecord {
    fn of(binding: &Binding, now: Instant) -> Self {
        BindingRecord {
            aor: binding.aor.clone(),
            contact: binding.contact.clone(),
            expires_in_ms: millis(binding.expires_at.saturating_duration_since(now)),
            peer: Peer::of(&binding.flow),
            call_id: binding.call_id.clone(),
            cseq: binding.cseq,
            to_uri: binding.to_uri.clone(),
            registrar_uri: binding.registrar_uri.clone(),
            credentials: binding.credentials.clone(),
        }
    }

    fn into_binding(self, now: Instant) -> Binding {
        Binding {
            aor: self.aor,
            contact: self.contact,
            expires_at: now + Duration::from_millis(self.expires_in_ms),
            flow: self.peer.flow(),
            call_id: self.call_id,
            cseq: self.cseq,
            to_uri: self.to_uri,
            registrar_uri: self.registrar_uri,
            credentials: self.credentials,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why a binding left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalCause {
    /// Its expiry passed.
    Expired,
    /// The endpoint (or the core) removed it.
    Deregistered,
    /// The drain removed it (SPEC §2 rules 5, 6).
    Drain,
    /// The guard timer expired (SPEC §2 rule 11).
    Guard,
    /// The twin said so.
    Replicated,
}

/// A change to the cache, to report and to replicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingChange {
    /// Added or refreshed.
    Upsert(BindingRecord),
    /// Removed.
    Remove {
        /// The AoR.
        aor: AorKey,
        /// The contact.
        contact: String,
        /// Why.
        cause: RemovalCause,
    },
}

/// What a lookup of an AoR found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Live bindings, most recently refreshed first.
    Found(Vec<&'a Binding>),
    /// Known, but every binding lapsed (the proxy answers 480).
    Expired,
    /// Never seen (the proxy answers 404).
    Unknown,
}

/// Where a binding lives in the cache's slab.
type Slot = u32;

/// A binding in the slab, with when it was last refreshed (so the latest contact is
/// preferred).
#[derive(Debug)]
struct Entry {
    binding: Binding,
    stamp: u64,
}

/// The cache. Indexed by AoR, contact, remote address and connection, so no lookup a request
/// makes scans every binding (a flood of requests against a full cache costs what it costs on
/// an empty one).
///
/// Each binding is kept once, in a slab; the indexes hold slot numbers, and the AoR and the
/// contact are copied only into the one ordered index, so a binding costs its own text and
/// little more (100 000 bindings held 162 MiB when every index kept its own copy of both).
#[derive(Debug, Default)]
pub struct RegistrationCache {
    slab: Vec<Option<Entry>>,
    /// Slots free for reuse.
    free: Vec<Slot>,
    live: usize,
    /// The contacts of each AoR, in order: `show registrations` reads the cache a page at a
    /// time from here (a cursor stays valid whatever changes between two pages).
    by_aor: BTreeMap<AorKey, BTreeMap<String, Slot>>,
    /// The bindings of each contact URI, by a hash of its text (checked on the binding).
    by_contact: HashMap<u64, Vec<Slot>>,
    /// How many bindings each remote address has.
    by_remote: HashMap<std::net::SocketAddr, usize>,
    /// The bindings reached over each connection, for when it closes.
    by_connection: HashMap<(ListenerId, FlowId), BTreeSet<Slot>>,
    expiries: BTreeSet<(Instant, Slot)>,
    /// AoRs whose last binding lapsed or was removed, with when, for 480 vs 404.
    lapsed: HashMap<AorKey, Instant>,
    /// The same, oldest first: [`expire`](Self::expire) runs at every timeout and forgets
    /// from the front, where a walk over a day of lapsed AoRs made every timer pay for them.
    lapsed_since: BTreeSet<(Instant, AorKey)>,
    /// Refresh order stamp.
    stamp: u64,
    /// Keys the contact hashes (per process: the index never leaves it).
    hasher: ahash::RandomState,
    /// This cache's shard and the box's shards, when there are several: every shard holds
    /// every binding, and only the one its REGISTER's Call-ID hashes to expires it (one
    /// removal record, not one per shard); the others expire it [`FOREIGN_GRACE`] later, should
    /// that record never come.
    owner: Option<(usize, Shards)>,
}

/// How long after its time a binding another shard owns is expired by this one, should the
/// owner's removal record never come (it comes within microseconds when the owner runs).
pub const FOREIGN_GRACE: Duration = Duration::from_secs(32);

impl RegistrationCache {
    /// Makes this the cache of shard `index` of `shards` (see the `owner` field); the bindings
    /// it holds are rescheduled.
    pub fn set_owner(&mut self, index: usize, shards: Shards) {
        self.owner = (shards.count() > 1).then_some((index, shards));
        let expiries = self
            .slab
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| Some((self.deadline(&e.as_ref()?.binding), slot as Slot)))
            .collect();
        self.expiries = expiries;
    }

    /// Whether this shard expires `binding` on time and de-registers it at the guard (always,
    /// without shards).
    pub fn owns(&self, binding: &Binding) -> bool {
        self.owner
            .as_ref()
            .is_none_or(|(index, shards)| shards.owns(*index, &binding.call_id))
    }

    /// When this cache expires `binding`.
    fn deadline(&self, binding: &Binding) -> Instant {
        if self.owns(binding) {
            binding.expires_at
        } else {
            binding.expires_at + FOREIGN_GRACE
        }
    }

    fn contact_hash(&self, contact: &str) -> u64 {
        self.hasher.hash_one(contact)
    }

    fn get(&self, slot: Slot) -> Option<&Entry> {
        self.slab.get(slot as usize).and_then(Option::as_ref)
    }

    /// The slot of the binding of `aor` with contact `contact`.
    fn slot_of(&self, aor: &str, contact: &str) -> Option<Slot> {
        self.by_aor.get(aor)?.get(contact).copied()
    }

    fn index(&mut self, slot: Slot, binding: &Binding) {
        self.by_aor
            .entry(binding.aor.clone())
            .or_default()
            .insert(binding.contact.clone(), slot);
        let h = self.contact_hash(&binding.contact);
        self.by_contact.entry(h).or_default().push(slot);
        *self.by_remote.entry(binding.flow.remote).or_default() += 1;
        if let Some(flow) = binding.flow.flow {
            self.by_connection
                .entry((binding.flow.listener, flow))
                .or_default()
                .insert(slot);
        }
        self.expiries.insert((self.deadline(binding), slot));
    }

    fn unindex(&mut self, slot: Slot, binding: &Binding) {
        if let Some(contacts) = self.by_aor.get_mut(&binding.aor) {
            contacts.remove(&binding.contact);
            if contacts.is_empty() {
                self.by_aor.remove(&binding.aor);
            }
        }
        let h = self.contact_hash(&binding.contact);
        if let Some(slots) = self.by_contact.get_mut(&h) {
            slots.retain(|s| *s != slot);
            if slots.is_empty() {
                self.by_contact.remove(&h);
            }
        }
        if let Some(n) = self.by_remote.get_mut(&binding.flow.remote) {
            *n -= 1;
            if *n == 0 {
                self.by_remote.remove(&binding.flow.remote);
            }
        }
        if let Some(flow) = binding.flow.flow {
            let connection = (binding.flow.listener, flow);
            if let Some(slots) = self.by_connection.get_mut(&connection) {
                slots.remove(&slot);
                if slots.is_empty() {
                    self.by_connection.remove(&connection);
                }
            }
        }
        let deadline = self.deadline(binding);
        self.expiries.remove(&(deadline, slot));
    }

    /// Takes the binding out of `slot` and out of every index.
    fn take(&mut self, slot: Slot) -> Option<Binding> {
        let entry = self.slab.get_mut(slot as usize)?.take()?;
        self.unindex(slot, &entry.binding);
        self.free.push(slot);
        self.live -= 1;
        Some(entry.binding)
    }

    /// Adds or refreshes a binding.
    pub fn upsert(&mut self, binding: Binding, now: Instant) -> BindingChange {
        if let Some(slot) = self.slot_of(&binding.aor, &binding.contact) {
            let _ = self.take(slot);
        }
        self.unlapse(&binding.aor);
        self.stamp += 1;
        let record = BindingRecord::of(&binding, now);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slab.push(None);
                Slot::try_from(self.slab.len() - 1).unwrap_or(Slot::MAX)
            }
        };
        self.index(slot, &binding);
        if let Some(place) = self.slab.get_mut(slot as usize) {
            *place = Some(Entry {
                binding,
                stamp: self.stamp,
            });
            self.live += 1;
        }
        BindingChange::Upsert(record)
    }

    /// Removes one binding.
    pub fn remove(
        &mut self,
        aor: &str,
        contact: &str,
        cause: RemovalCause,
        now: Instant,
    ) -> Option<BindingChange> {
        let slot = self.slot_of(aor, contact)?;
        let binding = self.take(slot)?;
        if !self.by_aor.contains_key(aor) {
            self.unlapse(aor);
            self.lapsed.insert(aor.to_owned(), now);
            self.lapsed_since.insert((now, aor.to_owned()));
        }
        Some(BindingChange::Remove {
            aor: binding.aor,
            contact: binding.contact,
            cause,
        })
    }

    /// Removes every binding of `aor`.
    pub fn remove_aor(
        &mut self,
        aor: &str,
        cause: RemovalCause,
        now: Instant,
    ) -> Vec<BindingChange> {
        let contacts: Vec<String> = self
            .by_aor
            .get(aor)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        contacts
            .iter()
            .filter_map(|c| self.remove(aor, c, cause, now))
            .collect()
    }

    /// Up to `limit` bindings in (AoR, contact) order, starting after `after` (from the first
    /// without): a page of `show registrations`, so a listing of a full cache never holds the
    /// engine for more than a page.
    pub fn page(&self, after: Option<(&str, &str)>, limit: usize) -> Vec<&Binding> {
        let start = after.map_or(Bound::Unbounded, |(aor, _)| Bound::Included(aor));
        self.by_aor
            .range::<str, _>((start, Bound::Unbounded))
            .flat_map(|(aor, contacts)| {
                let from = match after {
                    Some((a, c)) if a == aor.as_str() => Bound::Excluded(c),
                    _ => Bound::Unbounded,
                };
                contacts
                    .range::<str, _>((from, Bound::Unbounded))
                    .map(|(_, slot)| *slot)
            })
            .filter_map(|slot| self.get(slot).map(|e| &e.binding))
            .take(limit)
            .collect()
    }

    /// Finds the bindings of `aor`.
    pub fn lookup(&self, aor: &str) -> Lookup<'_> {
        let mut found: Vec<&Entry> = self
            .by_aor
            .get(aor)
            .into_iter()
            .flat_map(BTreeMap::values)
            .filter_map(|slot| self.get(*slot))
            .collect();
        if found.is_empty() {
            return if self.lapsed.contains_key(aor) {
                Lookup::Expired
            } else {
                Lookup::Unknown
            };
        }
        found.sort_by_key(|e| std::cmp::Reverse(e.stamp));
        Lookup::Found(found.into_iter().map(|e| &e.binding).collect())
    }

    /// The binding whose contact URI is `contact`, whatever its AoR (the one of the lowest
    /// AoR when several AoRs share it).
    pub fn by_contact(&self, contact: &str) -> Option<&Binding> {
        self.by_contact
            .get(&self.contact_hash(contact))?
            .iter()
            .filter_map(|slot| self.get(*slot))
            .map(|e| &e.binding)
            .filter(|b| b.contact == contact)
            .min_by(|a, b| a.aor.cmp(&b.aor))
    }

    /// Whether some binding's flow has this remote address.
    pub fn has_remote(&self, remote: std::net::SocketAddr) -> bool {
        self.by_remote.contains_key(&remote)
    }

    /// The bindings reached over connection `flow` of `listener`, in (AoR, contact) order.
    pub fn on_connection(&self, listener: ListenerId, flow: FlowId) -> Vec<&Binding> {
        let mut found: Vec<&Binding> = self
            .by_connection
            .get(&(listener, flow))
            .into_iter()
            .flatten()
            .filter_map(|slot| self.get(*slot).map(|e| &e.binding))
            .collect();
        found.sort_by(|a, b| (&a.aor, &a.contact).cmp(&(&b.aor, &b.contact)));
        found
    }

    /// How many live bindings `aor` has.
    pub fn bindings_of(&self, aor: &str) -> usize {
        self.by_aor.get(aor).map_or(0, BTreeMap::len)
    }

    /// Whether `aor` has a live binding.
    pub fn is_registered(&self, aor: &str) -> bool {
        self.by_aor.contains_key(aor)
    }

    /// The earliest expiry.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// Removes every binding whose expiry is at or before `now`, and forgets lapsed AoRs older
    /// than `memory`.
    pub fn expire(&mut self, now: Instant, memory: Duration) -> Vec<BindingChange> {
        let mut changes = Vec::new();
        while let Some(&(at, slot)) = self.expiries.first() {
            if at > now {
                break;
            }
            let key = self
                .get(slot)
                .map(|e| (e.binding.aor.clone(), e.binding.contact.clone()));
            match key
                .and_then(|(aor, contact)| self.remove(&aor, &contact, RemovalCause::Expired, now))
            {
                Some(change) => changes.push(change),
                None => {
                    self.expiries.remove(&(at, slot));
                }
            }
        }
        while let Some((since, aor)) = self.lapsed_since.first() {
            if now.saturating_duration_since(*since) < memory {
                break;
            }
            self.lapsed.remove(aor);
            self.lapsed_since.pop_first();
        }
        changes
    }

    /// Forgets that `aor` lapsed.
    fn unlapse(&mut self, aor: &str) {
        if let Some(since) = self.lapsed.remove(aor) {
            self.lapsed_since.remove(&(since, aor.to_owned()));
        }
    }

    /// Every binding, for snapshots and the guard.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.slab.iter().flatten().map(|e| &e.binding)
    }

    /// Number of live bindings (the drain's "registrations" count).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Applies a change made on the twin.
    pub fn apply(&mut self, change: BindingChange, now: Instant) {
        match change {
            BindingChange::Upsert(record) => {
                let _ = self.upsert(record.into_binding(now), now);
            }
            BindingChange::Remove { aor, contact, .. } => {
                let _ = self.remove(&aor, &contact, RemovalCause::Replicated, now);
            }
        }
    }

    /// Forgets every binding: a standby's tables before its twin's snapshot replaces them.
    pub fn clear(&mut self) {
        let owner = self.owner.take();
        *self = RegistrationCache::default();
        self.owner = owner;
    }

    /// Records of every binding, for a full sync of a twin that comes back.
    pub fn snapshot_records(&self, now: Instant) -> Vec<BindingChange> {
        self.iter()
            .map(|b| BindingChange::Upsert(BindingRecord::of(b, now)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{ListenerId, Transport};

    fn binding(aor: &str, contact: &str, expires_at: Instant) -> Binding {
        Binding {
            aor: aor.to_owned(),
            contact: contact.to_owned(),
            expires_at,
            flow: Flow {
                listener: ListenerId(0),
                transport: Transport::Udp,
                flow: None,
                remote: "192.0.2.10:5060".parse().unwrap(),
            },
            call_id: "c1".to_owned(),
            cseq: 1,
            to_uri: format!("sip:{aor}"),
            registrar_uri: "sip:example.com".to_owned(),
            credentials: Vec::new(),
        }
    }

    #[test]
    fn pages_list_every_binding_once_in_order_while_the_cache_changes_between_them() {
        let now = Instant::now();
        let later = now + Duration::from_secs(600);
        let mut cache = RegistrationCache::default();
        for (aor, contact) in [
            ("carol@x", "sip:c@3"),
            ("alice@x", "sip:a@2"),
            ("alice@x", "sip:a@1"),
            ("bob@x", "sip:b@1"),
            ("dave@x", "sip:d@1"),
        ] {
            cache.upsert(binding(aor, contact, later), now);
        }
        let keys = |page: Vec<&Binding>| -> Vec<(String, String)> {
            page.iter()
                .map(|b| (b.aor.clone(), b.contact.clone()))
                .collect()
        };
        let first = keys(cache.page(None, 2));
        assert_eq!(
            first,
            [
                ("alice@x".to_owned(), "sip:a@1".to_owned()),
                ("alice@x".to_owned(), "sip:a@2".to_owned())
            ]
        );
        // Between pages: the cursor's own binding goes, one before it and one after it come.
        cache.remove("alice@x", "sip:a@2", RemovalCause::Deregistered, now);
        cache.upsert(binding("aaron@x", "sip:aa@1", later), now);
        cache.upsert(binding("bob@x", "sip:b@0", later), now);
        let second = keys(cache.page(Some(("alice@x", "sip:a@2")), 2));
        assert_eq!(
            second,
            [
                ("bob@x".to_owned(), "sip:b@0".to_owned()),
                ("bob@x".to_owned(), "sip:b@1".to_owned())
            ]
        );
        let third = keys(cache.page(Some(("bob@x", "sip:b@1")), 10));
        assert_eq!(
            third,
            [
                ("carol@x".to_owned(), "sip:c@3".to_owned()),
                ("dave@x".to_owned(), "sip:d@1".to_owned())
            ]
        );
        assert!(cache.page(Some(("dave@x", "sip:d@1")), 10).is_empty());
    }

    #[test]
    fn expiry_makes_a_known_aor_expired_then_unknown() {
        let t0 = Instant::now();
        let mut cache = RegistrationCache::default();
        cache.upsert(
            binding("a@x", "sip:a@1.2.3.4", t0 + Duration::from_secs(60)),
            t0,
        );
        assert!(matches!(cache.lookup("a@x"), Lookup::Found(v) if v.len() == 1));
        assert_eq!(cache.lookup("b@x"), Lookup::Unknown);
        assert_eq!(cache.next_expiry(), Some(t0 + Duration::from_secs(60)));
        let t1 = t0 + Duration::from_secs(60);
        let changes = cache.expire(t1, Duration::from_secs(3600));
        assert_eq!(changes.len(), 1);
        assert_eq!(cache.lookup("a@x"), Lookup::Expired);
        cache.expire(t1 + Duration::from_secs(3600), Duration::from_secs(3600));
        assert_eq!(cache.lookup("a@x"), Lookup::Unknown);
    }

    #[test]
    fn records_replay_on_another_cache() {
        let t0 = Instant::now();
        let mut a = RegistrationCache::default();
        let mut b = RegistrationCache::default();
        let add = a.upsert(
            binding("a@x", "sip:a@1.2.3.4", t0 + Duration::from_secs(60)),
            t0,
        );
        b.apply(add, t0);
        assert!(b.is_registered("a@x"));
        let gone = a
            .remove("a@x", "sip:a@1.2.3.4", RemovalCause::Deregistered, t0)
            .unwrap();
        b.apply(gone, t0);
        assert!(b.is_empty());
    }

    #[test]
    fn the_indexes_answer_what_a_scan_of_every_binding_answers() {
        // A fixed pseudo-random walk of upserts (some moving a binding to another remote),
        // removals and expiries; after each step every indexed query equals the brute-force one.
        let t0 = Instant::now();
        let mut cache = RegistrationCache::default();
        // What the old walk over every lapsed AoR kept, by a walk of its own.
        let mut lapsed: HashMap<AorKey, Instant> = HashMap::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for step in 0..2000u64 {
            let aor = format!("u{}@x", next(12));
            let contact = format!("sip:c{}@h", next(9));
            let now = t0 + Duration::from_millis(step * 10);
            match next(4) {
                0 | 1 => {
                    let mut b = binding(&aor, &contact, now + Duration::from_millis(next(3000)));
                    b.flow.remote = format!("192.0.2.{}:5060", next(5)).parse().unwrap();
                    b.flow.listener = ListenerId(u16::try_from(next(2)).unwrap());
                    b.flow.flow = (next(3) > 0).then(|| FlowId(next(3)));
                    cache.upsert(b, now);
                }
                2 => {
                    if cache
                        .remove(&aor, &contact, RemovalCause::Deregistered, now)
                        .is_some()
                        && !cache.iter().any(|b| b.aor == aor)
                    {
                        lapsed.insert(aor.clone(), now);
                    }
                }
                _ => {
                    for change in cache.expire(now, Duration::from_millis(150)) {
                        if let BindingChange::Remove { aor, .. } = change {
                            if !cache.iter().any(|b| b.aor == aor) {
                                lapsed.insert(aor, now);
                            }
                        }
                    }
                    lapsed.retain(|_, since| {
                        now.saturating_duration_since(*since) < Duration::from_millis(150)
                    });
                }
            }
            for b in cache.iter() {
                lapsed.remove(&b.aor);
            }
            assert_eq!(cache.lapsed.len(), cache.lapsed_since.len(), "step {step}");
            for i in 0..12 {
                let aor = format!("u{i}@x");
                let scan = cache.iter().filter(|b| b.aor == aor).count();
                assert_eq!(cache.is_registered(&aor), scan > 0, "step {step}");
                assert_eq!(cache.bindings_of(&aor), scan, "step {step}");
                match cache.lookup(&aor) {
                    Lookup::Found(found) => assert_eq!(found.len(), scan),
                    Lookup::Expired => assert!(scan == 0 && lapsed.contains_key(&aor)),
                    Lookup::Unknown => assert!(scan == 0 && !lapsed.contains_key(&aor)),
                }
            }
            for i in 0..9 {
                let contact = format!("sip:c{i}@h");
                let scan = cache.iter().any(|b| b.contact == contact);
                let found = cache.by_contact(&contact);
                assert_eq!(found.is_some(), scan, "step {step}");
                assert!(found.is_none_or(|b| b.contact == contact));
            }
            for i in 0..5 {
                let remote: std::net::SocketAddr = format!("192.0.2.{i}:5060").parse().unwrap();
                let scan = cache.iter().any(|b| b.flow.remote == remote);
                assert_eq!(cache.has_remote(remote), scan, "step {step}");
            }
            for listener in 0..2 {
                for flow in 0..3 {
                    let (listener, flow) = (ListenerId(listener), FlowId(flow));
                    let mut scan: Vec<&Binding> = cache
                        .iter()
                        .filter(|b| b.flow.listener == listener && b.flow.flow == Some(flow))
                        .collect();
                    scan.sort_by(|a, b| (&a.aor, &a.contact).cmp(&(&b.aor, &b.contact)));
                    assert_eq!(cache.on_connection(listener, flow), scan, "step {step}");
                }
            }
        }
    }
}
