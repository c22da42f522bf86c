//! The dialog table: every INVITE session the proxy carries, early or confirmed, with what is
//! needed to route its in-dialog requests and to end it ourselves.
//!
//! A session is keyed by Call-ID and the caller's From tag; forks downstream share one entry,
//! which is what the drain counts ("active INVITE sessions"). Every change is returned as a
//! [`DialogChange`] for events and replication.
//!
//! A session nobody sent a request in for `[limits] dialog_idle_secs` is forgotten
//! ([`DialogTable::pop_idle`]): a BYE lost on the way (a phone that died, a network that
//! dropped it) would otherwise hold its entry for as long as the box runs, and enough of them
//! fill `max_dialogs` and refuse every new call. Forgetting ends nothing on the wire: the box's
//! signed Record-Route entry still carries the session's later requests (SPEC §7), and a
//! re-INVITE or UPDATE learns it again. Each entry has one deadline, moved only when it comes
//! due, so a request in a session costs a store of the time, not a timer operation.
//!
//! The table keeps its counts and two indexes as it changes (insert, update, remove, applied
//! records, clear, drain): live access-side parties by contact, AoR and address, for "which
//! calls is this registered endpoint in" ([`Endpoint`]), and every party by connection. No
//! question one message, one timer or one `show` line asks walks every dialog.

use crate::hash::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::timers::TimerTable;

use crate::msg::aor_of;
use crate::transport::{Flow, FlowId, ListenerId, Peer, Realm};
use sip::Uri;

/// A [`DialogId`] borrowed from a message, to look a session up without copying its parts:
/// its fields and their order are `DialogId`'s, so both hash alike.
#[derive(Hash)]
struct DialogKey<'a> {
    call_id: &'a str,
    caller_tag: &'a str,
    caller_realm: Realm,
}

impl hashbrown::Equivalent<DialogId> for DialogKey<'_> {
    fn equivalent(&self, id: &DialogId) -> bool {
        self.call_id == &*id.call_id
            && self.caller_tag == &*id.caller_tag
            && self.caller_realm == id.caller_realm
    }
}

pub use crate::text::Text;

/// Identifies a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: Text,
    /// The caller's From tag.
    pub caller_tag: Text,
    /// The realm the INVITE came from. A call that spirals through the core (phone to core
    /// and back to another phone) passes twice with the same Call-ID and tags; each pass is
    /// its own session.
    pub caller_realm: Realm,
}

/// The life of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialogState {
    /// INVITE forwarded, no 2xx yet.
    Early,
    /// 2xx seen.
    Confirmed,
    /// BYE, a final failure or the guard ended it.
    Ended,
}

/// One side of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// The realm this side is in.
    pub realm: Realm,
    /// How to reach it (for the callee: the next hop the INVITE went to).
    pub flow: Flow,
    /// Its identity: From URI for the caller, To URI for the callee (as sent, with brackets
    /// removed).
    pub uri: Text,
    /// Its tag (the callee's is known once it answers).
    pub tag: Option<Text>,
    /// Its Contact (the remote target for requests to it).
    pub contact: Option<Text>,
    /// The highest CSeq it has used in this dialog.
    pub cseq: u32,
    /// Route set beyond the proxy toward this party, nearest first.
    pub route: Vec<String>,
}

/// A session record; also the replication record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialog {
    /// The key.
    pub id: DialogId,
    /// Where it stands.
    pub state: DialogState,
    /// The side that sent the INVITE.
    pub caller: Party,
    /// The side it went to.
    pub callee: Party,
    /// Whether it was admitted as a priority call.
    pub priority: bool,
}

/// A change to the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialogChange {
    /// Created or updated: the record is read from the table when it is sent
    /// ([`DialogTable::record`]), so a change costs no copy of the dialog.
    Upsert(DialogId),
    /// Gone.
    Remove(DialogId),
}

/// One side of a session as it travels to the twin: reached by address, never by the sender's
/// connection number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyRecord {
    /// The realm this side is in.
    pub realm: Realm,
    /// How to reach it.
    pub peer: Peer,
    /// Its identity (From or To URI).
    pub uri: Text,
    /// Its tag.
    pub tag: Option<Text>,
    /// Its Contact.
    pub contact: Option<Text>,
    /// The highest CSeq it has used.
    pub cseq: u32,
    /// Route set beyond the proxy toward it, nearest first.
    pub route: Vec<String>,
}

impl PartyRecord {
    fn of(p: &Party) -> PartyRecord {
        PartyRecord {
            realm: p.realm,
            peer: Peer::of(&p.flow),
            uri: p.uri.clone(),
            tag: p.tag.clone(),
            contact: p.contact.clone(),
            cseq: p.cseq,
            route: p.route.clone(),
        }
    }

    fn into_party(self) -> Party {
        Party {
            realm: self.realm,
            flow: self.peer.flow(),
            uri: self.uri,
            tag: self.tag,
            contact: self.contact,
            cseq: self.cseq,
            route: self.route,
        }
    }
}

/// A session as it travels to the twin: times are relative (clocks differ), so a call keeps
/// its age across a takeover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogRecord {
    /// The key.
    pub id: DialogId,
    /// Where it stands.
    pub state: DialogState,
    /// The side that sent the INVITE.
    pub caller: PartyRecord,
    /// The side it went to.
    pub callee: PartyRecord,
    /// Whether it was admitted as a priority call.
    pub priority: bool,
    /// How long ago it started, in milliseconds, when the record was made.
    pub age_ms: u64,
}

impl DialogRecord {
    /// The record of `dialog`, started at `started`, as of `now`.
    pub fn of(dialog: &Dialog, started: Instant, now: Instant) -> DialogRecord {
        DialogRecord {
            id: dialog.id.clone(),
            state: dialog.state,
            caller: PartyRecord::of(&dialog.caller),
            callee: PartyRecord::of(&dialog.callee),
            priority: dialog.priority,
            age_ms: u64::try_from(now.saturating_duration_since(started).as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// The dialog and when it started, on a clock at `now`.
    pub fn into_dialog(self, now: Instant) -> (Dialog, Instant) {
        let started = now
            .checked_sub(std::time::Duration::from_millis(self.age_ms))
            .unwrap_or(now);
        (
            Dialog {
                id: self.id,
                state: self.state,
                caller: self.caller.into_party(),
                callee: self.callee.into_party(),
                priority: self.priority,
            },
            started,
        )
    }
}

/// A change to the table as it travels to the twin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialogRecordChange {
    /// Created or updated.
    Upsert(Box<DialogRecord>),
    /// Gone.
    Remove(DialogId),
}

/// Which party of a dialog a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The INVITE's sender.
    Caller,
    /// The INVITE's receiver.
    Callee,
}

/// Counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogCounts {
    /// Early.
    pub early: usize,
    /// Confirmed.
    pub confirmed: usize,
}

impl DialogCounts {
    /// Early plus confirmed: the drain's "active sessions".
    pub fn active(&self) -> usize {
        self.early + self.confirmed
    }
}

/// Whether two contact URIs name the same binding (scheme, user, host, port).
pub fn same_contact(a: &str, b: &str) -> bool {
    match (Uri::parse(a), Uri::parse(b)) {
        (Ok(x), Ok(y)) => {
            x.scheme()
                .as_str()
                .eq_ignore_ascii_case(y.scheme().as_str())
                && x.user() == y.user()
                && host_text(&x).eq_ignore_ascii_case(host_text(&y))
                && x.port().unwrap_or(5060) == y.port().unwrap_or(5060)
        }
        _ => a == b,
    }
}

/// The host of a SIP URI (IPv6 without brackets), or the opaque part of another scheme's:
/// what tells two contacts apart besides scheme, user and port.
fn host_text<'a>(u: &Uri<'a>) -> &'a str {
    match u.host() {
        Some(host) => host.as_str(),
        None => u.opaque(),
    }
}

/// A registered endpoint as the drain rules and `show registrations` see it: the binding's
/// contact, its AoR, the address its REGISTER came from, and whether it is its AoR's only
/// contact.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// The binding's contact URI.
    pub contact: &'a str,
    /// The binding's AoR key.
    pub aor: &'a str,
    /// Where its REGISTER came from.
    pub remote: SocketAddr,
    /// With a single contact the AoR and the source address also count, since phones rarely
    /// reuse the exact URI.
    pub single: bool,
}

impl Endpoint<'_> {
    /// Whether call party `p` is this endpoint.
    pub fn is(&self, p: &Party) -> bool {
        p.contact
            .as_deref()
            .is_some_and(|c| same_contact(c, self.contact))
            || (self.single && (aor_of(&p.uri) == self.aor || p.flow.remote == self.remote))
    }

    /// The index keys a party of this endpoint has under at least one of (see [`PartyKeys`]).
    fn keys(&self) -> impl Iterator<Item = u64> {
        let contact = Some(contact_key(self.contact));
        let aor = self.single.then(|| aor_key(self.aor));
        let remote = self.single.then(|| remote_key(self.remote));
        [contact, aor, remote].into_iter().flatten()
    }
}

/// What an index key was made from, hashed in so keys of different kinds never meet.
#[derive(Clone, Copy)]
enum KeyKind {
    ContactUri = 1,
    ContactText = 2,
    Aor = 3,
    Remote = 4,
}

/// A hasher with fixed keys: the same key on every run and every node.
fn hasher(kind: KeyKind) -> KeyHasher {
    let mut h = KeyHasher(0xcbf2_9ce4_8422_2325);
    h.write_u8(kind as u8);
    h
}

/// FNV-1a over the bytes written: streams (pieces hash as their concatenation, which
/// [`uri_aor_key`] relies on, writing a key a character at a time) and costs a few
/// instructions a byte. The keys only name candidates, every one is checked on its dialog, so
/// a weak hash costs at worst a longer look, never a wrong answer.
#[derive(Debug, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn text_key(kind: KeyKind, text: &str) -> u64 {
    let mut h = hasher(kind);
    text.hash(&mut h);
    h.finish()
}

/// The key of an AoR key ([`aor_of`]: `scheme:user@host`).
fn aor_key(aor: &str) -> u64 {
    let mut h = hasher(KeyKind::Aor);
    h.write(aor.as_bytes());
    h.finish()
}

/// [`aor_key`] of `aor_of(uri)`, without building that string: the index reads it at every
/// change of a dialog. The same bytes, one at a time, in the same order.
fn uri_aor_key(uri: &str) -> u64 {
    match Uri::parse(uri) {
        Ok(u) => parsed_aor_key(&u),
        Err(_) => {
            let mut h = ByteHasher(hasher(KeyKind::Aor));
            // Hashing cannot fail.
            let _ = std::fmt::Write::write_str(&mut h, uri);
            h.0.finish()
        }
    }
}

/// [`uri_aor_key`] of a URI already parsed.
fn parsed_aor_key(u: &Uri<'_>) -> u64 {
    let mut h = ByteHasher(hasher(KeyKind::Aor));
    // Hashing cannot fail.
    let _ = u.write_aor_key(&mut h);
    h.0.finish()
}

/// Feeds text written into it to a hasher, so a key can be hashed while it is written. The
/// hasher streams: pieces written one after the other hash as their concatenation does (as
/// [`aor_key`] writes it).
struct ByteHasher(KeyHasher);

impl std::fmt::Write for ByteHasher {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.write(s.as_bytes());
        Ok(())
    }

    /// The character's UTF-8 bytes, as `write_str` of it hashes them: the key writers
    /// lower-case and decode a character at a time, and the default goes through a buffer
    /// and `write_str` for each.
    fn write_char(&mut self, c: char) -> std::fmt::Result {
        match u8::try_from(c) {
            Ok(byte) if byte.is_ascii() => self.0.write_u8(byte),
            _ => self.0.write(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
        Ok(())
    }
}

fn remote_key(remote: SocketAddr) -> u64 {
    let mut h = hasher(KeyKind::Remote);
    remote.hash(&mut h);
    h.finish()
}

/// Equal for every two contacts [`same_contact`] calls the same: the URI's scheme and host
/// lower-cased, its user as is, its port with 5060 for none; the text itself when it does not
/// parse (an unparsable contact is only ever the same as itself).
fn contact_key(contact: &str) -> u64 {
    match Uri::parse(contact) {
        Ok(u) => parsed_contact_key(&u),
        Err(_) => text_key(KeyKind::ContactText, contact),
    }
}

/// [`contact_key`] of a URI already parsed.
fn parsed_contact_key(u: &Uri<'_>) -> u64 {
    let lower = |h: &mut KeyHasher, s: &str| {
        // Lower-cased a piece at a time: the hasher streams, so the pieces hash as the whole.
        let mut piece = [0u8; 64];
        for chunk in s.as_bytes().chunks(piece.len()) {
            let piece = &mut piece[..chunk.len()];
            piece.copy_from_slice(chunk);
            piece.make_ascii_lowercase();
            h.write(piece);
        }
        h.write_u8(0xff);
    };
    let mut h = hasher(KeyKind::ContactUri);
    lower(&mut h, u.scheme().as_str());
    u.user().hash(&mut h);
    lower(&mut h, host_text(u));
    h.write_u16(u.port().unwrap_or(5060));
    h.finish()
}

/// The caller's index keys of a new session, derived by whoever read its texts from a message
/// and has their URIs parsed already (the From URI and the first Contact of an INVITE), so
/// the table does not parse them again: what [`PartyKeys::of`] would derive from
/// `caller.contact` and `caller.uri`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallerKeys {
    contact: Option<u64>,
    uri: Option<u64>,
}

impl CallerKeys {
    /// The keys of a caller whose contact and identity are these URIs (each exactly what
    /// parsing its party's text gives).
    pub fn of(contact: Option<&Uri<'_>>, uri: &Uri<'_>) -> CallerKeys {
        CallerKeys {
            contact: contact.map(parsed_contact_key),
            uri: Some(parsed_aor_key(uri)),
        }
    }

    /// A memo holding these keys for `d`'s caller texts.
    fn memo(self, d: &Dialog) -> KeyMemo {
        let mut memo = KeyMemo::default();
        if let (Some(key), Some(text)) = (self.contact, &d.caller.contact) {
            memo.0[0] = Some((text.clone(), key));
        }
        if let Some(key) = self.uri {
            memo.0[1] = Some((d.caller.uri.clone(), key));
        }
        memo
    }
}

/// The index keys of one dialog: for each access-side party of a live dialog, its contact, its
/// AoR and its remote address (hashed, see [`Endpoint::keys`]); and the connection of each
/// party that has one. A key names candidates only: every answer is checked on the dialog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PartyKeys {
    access: [Option<u64>; 6],
    flows: [Option<(ListenerId, FlowId)>; 2],
}

impl PartyKeys {
    /// The keys of `d`. The texts behind them (contact and URI of each party) rarely change
    /// once a dialog exists, and deriving a key parses a URI: `memo` keeps what the last
    /// derivation of each text gave, so an update that left a text alone costs one hash of
    /// its bytes.
    fn of(d: &Dialog, memo: &mut KeyMemo) -> PartyKeys {
        let mut keys = PartyKeys::default();
        for (i, p) in [&d.caller, &d.callee].into_iter().enumerate() {
            keys.flows[i] = p.flow.flow.map(|f| (p.flow.listener, f));
            if d.state == DialogState::Ended || p.realm != Realm::Access {
                continue;
            }
            keys.access[3 * i] = p
                .contact
                .as_ref()
                .map(|c| memo.derive(2 * i, c, contact_key));
            keys.access[3 * i + 1] = Some(memo.derive(2 * i + 1, &p.uri, uri_aor_key));
            keys.access[3 * i + 2] = Some(remote_key(p.flow.remote));
        }
        keys
    }
}

/// For each text a dialog's keys come from (contact and URI of caller and callee), the text
/// the last key was derived from (a shared copy, no allocation) and that key. A session's texts
/// are rarely replaced, so the same piece of the same allocation is the usual answer; a text
/// written again with the same content is found equal, and anything else is derived again.
#[derive(Debug, Clone, Default)]
struct KeyMemo([Option<(Text, u64)>; 4]);

impl KeyMemo {
    fn derive(&mut self, which: usize, text: &Text, key: fn(&str) -> u64) -> u64 {
        match &self.0[which] {
            Some((seen, derived)) if seen.is(text) || seen == text => *derived,
            _ => {
                let derived = key(text);
                self.0[which] = Some((text.clone(), derived));
                derived
            }
        }
    }
}

/// A dialog in the table.
#[derive(Debug)]
struct Entry {
    dialog: Dialog,
    started: Instant,
    /// When it was last put, updated or applied: a request in it, or its twin's record.
    active: Instant,
    /// Its number in the indexes (a number, not the key: the indexes hold many entries per
    /// dialog).
    slot: u64,
    /// The keys it is indexed under now.
    keys: PartyKeys,
    /// What derived them.
    memo: KeyMemo,
}

/// The indexes over the parties of the dialogs, so a question about one endpoint or one
/// connection costs what its own dialogs cost, not what the whole table does.
#[derive(Debug, Default)]
struct PartyIndex {
    /// Dialogs by slot: the hash their entry is found under (each id lives once, in its
    /// entry).
    slots: HashMap<u64, u64>,
    /// Live dialogs by the keys of their access-side parties.
    access: HashMap<u64, Slots>,
    /// Dialogs by the connection of a party.
    flows: HashMap<(ListenerId, FlowId), Slots>,
}

/// The slots under one index key. Most keys name one dialog (a phone in one call), so one
/// slot is held inline and a set is made only for the second.
#[derive(Debug)]
enum Slots {
    One(u64),
    Many(HashSet<u64>),
}

impl Slots {
    fn insert(&mut self, slot: u64) {
        match self {
            Slots::One(one) if *one == slot => {}
            Slots::One(one) => {
                let mut set = HashSet::default();
                set.insert(*one);
                set.insert(slot);
                *self = Slots::Many(set);
            }
            Slots::Many(set) => {
                set.insert(slot);
            }
        }
    }

    /// Takes `slot` out; whether none is left.
    fn remove(&mut self, slot: u64) -> bool {
        match self {
            Slots::One(one) => *one == slot,
            Slots::Many(set) => {
                set.remove(&slot);
                set.is_empty()
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &u64> {
        let (one, many) = match self {
            Slots::One(one) => (Some(one), None),
            Slots::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

fn link<K: Hash + Eq>(map: &mut HashMap<K, Slots>, key: K, slot: u64) {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().insert(slot),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(Slots::One(slot));
        }
    }
}

fn unlink<K: Hash + Eq>(map: &mut HashMap<K, Slots>, key: &K, slot: u64) {
    if map.get_mut(key).is_some_and(|slots| slots.remove(slot)) {
        map.remove(key);
    }
}

impl PartyIndex {
    fn add(&mut self, slot: u64, keys: &PartyKeys) {
        for key in keys.access.iter().flatten() {
            link(&mut self.access, *key, slot);
        }
        for flow in keys.flows.iter().flatten() {
            link(&mut self.flows, *flow, slot);
        }
    }

    fn drop_keys(&mut self, slot: u64, keys: &PartyKeys) {
        for key in keys.access.iter().flatten() {
            unlink(&mut self.access, key, slot);
        }
        for flow in keys.flows.iter().flatten() {
            unlink(&mut self.flows, flow, slot);
        }
    }
}

/// The table.
#[derive(Debug, Default)]
pub struct DialogTable {
    /// The entries, hashed by their dialog's id (held once, in the entry) with `hasher`;
    /// looked up by a [`DialogId`] or a [`DialogKey`], which hash alike.
    dialogs: hashbrown::HashTable<Entry>,
    hasher: ahash::RandomState,
    /// Kept as the table changes: the counts are read after every message and every record a
    /// standby applies, and a count over every dialog each time made a busy box slower with
    /// every call it carried.
    counts: DialogCounts,
    /// Kept as the table changes, for the same reason: `show registrations` asks about every
    /// binding, the drain about every contact of every REGISTER, and a closed connection
    /// about its own parties.
    index: PartyIndex,
    next_slot: u64,
    /// No change records from [`update`](Self::update): nobody replicates them.
    no_snapshots: bool,
    /// How long a session may go without a request before it is forgotten (`None`: never).
    idle: Option<Duration>,
    /// One deadline per entry (by slot), at least `idle` after it was armed: when it comes,
    /// the entry is forgotten or, if active since, armed again from its last activity.
    idle_deadlines: TimerTable<u64>,
}

impl DialogCounts {
    fn add(&mut self, state: DialogState) {
        match state {
            DialogState::Early => self.early += 1,
            DialogState::Confirmed => self.confirmed += 1,
            DialogState::Ended => {}
        }
    }

    fn sub(&mut self, state: DialogState) {
        match state {
            DialogState::Early => self.early = self.early.saturating_sub(1),
            DialogState::Confirmed => self.confirmed = self.confirmed.saturating_sub(1),
            DialogState::Ended => {}
        }
    }
}

impl DialogTable {
    /// Puts a dialog in, replacing any with its key, keeping the counts; active at `now`.
    fn put(&mut self, dialog: Dialog, started: Instant, now: Instant, known: CallerKeys) {
        let hash = self.hasher.hash_one(&dialog.id);
        if let Some(entry) = self.dialogs.find_mut(hash, |e| e.dialog.id == dialog.id) {
            // Put again (a peer's or the twin's record of it): replaced in place, in its slot
            // as an update leaves it, its index keys moved only when they changed. The texts
            // are mostly those it had, so the memo mostly gives their keys back.
            self.counts.sub(entry.dialog.state);
            self.counts.add(dialog.state);
            entry.dialog = dialog;
            entry.started = started;
            entry.active = entry.active.max(now);
            let keys = PartyKeys::of(&entry.dialog, &mut entry.memo);
            if keys != entry.keys {
                self.index.drop_keys(entry.slot, &entry.keys);
                self.index.add(entry.slot, &keys);
                entry.keys = keys;
            }
            return;
        }
        self.counts.add(dialog.state);
        let slot = self.next_slot;
        self.next_slot += 1;
        let mut memo = known.memo(&dialog);
        let keys = PartyKeys::of(&dialog, &mut memo);
        self.index.add(slot, &keys);
        self.index.slots.insert(slot, hash);
        if let Some(idle) = self.idle {
            self.idle_deadlines.set(slot, now + idle);
        }
        let hasher = &self.hasher;
        self.dialogs.insert_unique(
            hash,
            Entry {
                dialog,
                started,
                active: now,
                slot,
                keys,
                memo,
            },
            |e| hasher.hash_one(&e.dialog.id),
        );
    }

    /// The entry of the dialog `key` names (a [`DialogId`] or a [`DialogKey`]).
    fn entry<K: Hash + hashbrown::Equivalent<DialogId> + ?Sized>(&self, key: &K) -> Option<&Entry> {
        let hash = self.hasher.hash_one(key);
        self.dialogs.find(hash, |e| key.equivalent(&e.dialog.id))
    }

    /// The entry in `slot`.
    fn entry_in(&self, slot: u64) -> Option<&Entry> {
        let hash = *self.index.slots.get(&slot)?;
        self.dialogs.find(hash, |e| e.slot == slot)
    }

    /// Takes a dialog out, keeping the counts and the indexes.
    fn take(&mut self, id: &DialogId) -> Option<(Dialog, Instant)> {
        let hash = self.hasher.hash_one(id);
        let (taken, _) = self
            .dialogs
            .find_entry(hash, |e| e.dialog.id == *id)
            .ok()?
            .remove();
        self.counts.sub(taken.dialog.state);
        self.index.drop_keys(taken.slot, &taken.keys);
        self.index.slots.remove(&taken.slot);
        if self.idle.is_some() {
            self.idle_deadlines.cancel(taken.slot);
        }
        Some((taken.dialog, taken.started))
    }

    /// Whether [`update`](Self::update) returns change records (on by default). Each one is a
    /// full copy of the dialog, made several times per call for a twin to apply.
    pub fn set_snapshots(&mut self, on: bool) {
        self.no_snapshots = !on;
    }

    /// Starts tracking a session in the early state; the change record unless snapshots are
    /// off.
    pub fn insert(&mut self, dialog: Dialog, now: Instant) -> Option<DialogChange> {
        self.insert_known(dialog, now, CallerKeys::default())
    }

    /// As [`insert`](Self::insert), with the caller's index keys `known` already.
    pub fn insert_known(
        &mut self,
        dialog: Dialog,
        now: Instant,
        known: CallerKeys,
    ) -> Option<DialogChange> {
        let change = (!self.no_snapshots).then(|| DialogChange::Upsert(dialog.id.clone()));
        self.put(dialog, now, now, known);
        change
    }

    /// Forget a session with no request for `idle` (`None`: never, the default). Sessions
    /// already held count as active now.
    pub fn set_idle(&mut self, idle: Option<Duration>, now: Instant) {
        self.idle = idle.filter(|d| !d.is_zero());
        self.idle_deadlines = TimerTable::default();
        if let Some(idle) = self.idle {
            for e in self.dialogs.iter_mut() {
                e.active = e.active.max(now);
                self.idle_deadlines.set(e.slot, e.active + idle);
            }
        }
    }

    /// Gives back the room a burst left in the idle deadlines (see `Proxy::trim_tables`).
    pub fn trim(&mut self) {
        self.idle_deadlines.trim();
    }

    /// When [`pop_idle`](Self::pop_idle) may next have a session to give.
    pub fn next_idle(&self) -> Option<Instant> {
        self.idle_deadlines.next_deadline()
    }

    /// A session with no request for the idle time as of `now`, to forget; `None` when there
    /// is none. A session active since its deadline was armed is armed again from then.
    pub fn pop_idle(&mut self, now: Instant) -> Option<DialogId> {
        let idle = self.idle?;
        while let Some(slot) = self.idle_deadlines.pop_due(now) {
            let Some(entry) = self.entry_in(slot) else {
                continue;
            };
            let due = entry.active + idle;
            if due > now {
                self.idle_deadlines.set(slot, due);
                continue;
            }
            return Some(entry.dialog.id.clone());
        }
        None
    }

    /// When the session started, if tracked.
    pub fn started(&self, id: &DialogId) -> Option<Instant> {
        self.entry(id).map(|e| e.started)
    }

    /// Forgets every session: a standby's table before its twin's snapshot replaces it.
    pub fn clear(&mut self) {
        self.dialogs.clear();
        self.counts = DialogCounts::default();
        self.index = PartyIndex::default();
        self.idle_deadlines = TimerTable::default();
    }

    /// Applies a record made on the twin, keeping the session's start time.
    pub fn apply_record(&mut self, change: DialogRecordChange, now: Instant) {
        match change {
            DialogRecordChange::Upsert(record) => {
                let (dialog, started) = record.into_dialog(now);
                self.put(dialog, started, now, CallerKeys::default());
            }
            DialogRecordChange::Remove(id) => {
                self.take(&id);
            }
        }
    }

    /// The session as it travels to the twin, if tracked.
    pub fn record(&self, id: &DialogId, now: Instant) -> Option<DialogRecord> {
        self.entry(id)
            .map(|e| DialogRecord::of(&e.dialog, e.started, now))
    }

    /// The session, if tracked.
    pub fn get(&self, id: &DialogId) -> Option<&Dialog> {
        self.entry(id).map(|e| &e.dialog)
    }

    /// Changes a session in place at `now` (it is active then) and returns the change record.
    pub fn update(
        &mut self,
        id: &DialogId,
        now: Instant,
        f: impl FnOnce(&mut Dialog),
    ) -> Option<DialogChange> {
        let hash = self.hasher.hash_one(id);
        let entry = self.dialogs.find_mut(hash, |e| e.dialog.id == *id)?;
        entry.active = entry.active.max(now);
        let before = entry.dialog.state;
        f(&mut entry.dialog);
        if entry.dialog.state != before {
            let after = entry.dialog.state;
            self.counts.sub(before);
            self.counts.add(after);
        }
        let keys = PartyKeys::of(&entry.dialog, &mut entry.memo);
        if keys != entry.keys {
            self.index.drop_keys(entry.slot, &entry.keys);
            self.index.add(entry.slot, &keys);
            entry.keys = keys;
        }
        if self.no_snapshots {
            return None;
        }
        Some(DialogChange::Upsert(id.clone()))
    }

    /// Finds the session a request arriving from `realm` belongs to from its Call-ID and tags,
    /// and which side sent it.
    pub fn find(
        &self,
        call_id: &str,
        from_tag: &str,
        to_tag: &str,
        realm: Realm,
    ) -> Option<(&Dialog, Side)> {
        let as_caller = DialogKey {
            call_id,
            caller_tag: from_tag,
            caller_realm: realm,
        };
        if let Some(e) = self.entry(&as_caller) {
            return Some((&e.dialog, Side::Caller));
        }
        let other = match realm {
            Realm::Access => Realm::Core,
            Realm::Core => Realm::Access,
        };
        let as_callee = DialogKey {
            call_id,
            caller_tag: to_tag,
            caller_realm: other,
        };
        self.entry(&as_callee).map(|e| (&e.dialog, Side::Callee))
    }

    /// Stops tracking a session; the change record unless snapshots are off (as
    /// [`update`](Self::update)).
    pub fn remove(&mut self, id: &DialogId) -> Option<(Dialog, Option<DialogChange>)> {
        let (mut dialog, _) = self.take(id)?;
        dialog.state = DialogState::Ended;
        let change = (!self.no_snapshots).then(|| DialogChange::Remove(id.clone()));
        Some((dialog, change))
    }

    /// Counts by state.
    pub fn counts(&self) -> DialogCounts {
        debug_assert_eq!(self.counts, self.recount(), "the kept counts drifted");
        self.counts
    }

    /// The counts by a walk over every dialog (what [`counts`](Self::counts) keeps).
    fn recount(&self) -> DialogCounts {
        let mut counts = DialogCounts::default();
        for e in self.dialogs.iter() {
            counts.add(e.dialog.state);
        }
        counts
    }

    /// Every session with when it started.
    pub fn iter(&self) -> impl Iterator<Item = (&Dialog, Instant)> {
        self.dialogs.iter().map(|e| (&e.dialog, e.started))
    }

    /// Whether an access-side party of a live session matches `pred` (for "has an active call").
    /// A walk over every dialog: [`endpoint_has_call`](Self::endpoint_has_call) answers the
    /// drain's question from the index.
    pub fn any_access_party(&self, mut pred: impl FnMut(&Party) -> bool) -> bool {
        self.dialogs
            .iter()
            .any(|e| is_live_access_match(&e.dialog, &mut pred))
    }

    /// How many live dialogs have an access-side party for which `pred` holds. A walk over
    /// every dialog: [`endpoint_calls`](Self::endpoint_calls) answers from the index.
    pub fn count_access(&self, mut pred: impl FnMut(&Party) -> bool) -> usize {
        self.dialogs
            .iter()
            .filter(|e| is_live_access_match(&e.dialog, &mut pred))
            .count()
    }

    /// The live dialogs an access-side party of which is `endpoint` (what
    /// `count_access(|p| endpoint.is(p))` counts), found from the index: their slots, each
    /// once, checked on the dialog.
    fn endpoint_dialogs<'a>(
        &'a self,
        endpoint: &'a Endpoint<'a>,
    ) -> impl Iterator<Item = &'a Dialog> {
        // A dialog may be found under several keys (its contact and its AoR, or both parties):
        // each is counted once.
        let mut seen: HashSet<u64> = HashSet::default();
        endpoint
            .keys()
            .filter_map(|key| self.index.access.get(&key))
            .flat_map(Slots::iter)
            .filter(move |slot| seen.insert(**slot))
            .filter_map(|slot| self.entry_in(*slot))
            .map(|e| &e.dialog)
            .filter(|d| is_live_access_match(d, |p| endpoint.is(p)))
    }

    /// How many live sessions `endpoint` is in.
    pub fn endpoint_calls(&self, endpoint: &Endpoint<'_>) -> usize {
        self.endpoint_dialogs(endpoint).count()
    }

    /// Whether `endpoint` is in a live session.
    pub fn endpoint_has_call(&self, endpoint: &Endpoint<'_>) -> bool {
        self.endpoint_dialogs(endpoint).next().is_some()
    }

    /// The sessions a party of which is reached over connection `flow` of `listener`.
    pub fn on_connection(&self, listener: ListenerId, flow: FlowId) -> Vec<DialogId> {
        let mut ids: Vec<DialogId> = self
            .index
            .flows
            .get(&(listener, flow))
            .into_iter()
            .flat_map(Slots::iter)
            .filter_map(|slot| self.entry_in(*slot))
            .map(|e| &e.dialog)
            .filter(|d| {
                [&d.caller, &d.callee]
                    .into_iter()
                    .any(|p| p.flow.listener == listener && p.flow.flow == Some(flow))
            })
            .map(|d| d.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Removes every session (after the guard ended them).
    pub fn drain_all(&mut self) -> Vec<Dialog> {
        self.counts = DialogCounts::default();
        self.index = PartyIndex::default();
        self.idle_deadlines = TimerTable::default();
        self.index.slots.clear();
        self.dialogs.drain().map(|e| e.dialog).collect()
    }

    /// Number of sessions tracked.
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }
}

/// Whether `d` is live and an access-side party of it matches `pred`.
fn is_live_access_match(d: &Dialog, mut pred: impl FnMut(&Party) -> bool) -> bool {
    d.state != DialogState::Ended
        && [&d.caller, &d.callee]
            .into_iter()
            .any(|p| p.realm == Realm::Access && pred(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{ListenerId, Transport};

    fn party(realm: Realm) -> Party {
        Party {
            realm,
            flow: Flow {
                listener: ListenerId(0),
                transport: Transport::Udp,
                flow: None,
                remote: "192.0.2.1:5060".parse().unwrap(),
            },
            uri: "sip:a@x".into(),
            tag: None,
            contact: None,
            cseq: 1,
            route: Vec::new(),
        }
    }

    #[test]
    fn counts_follow_states_and_find_knows_the_side() {
        let t0 = Instant::now();
        let mut table = DialogTable::default();
        let id = DialogId {
            call_id: "c".into(),
            caller_tag: "ft".into(),
            caller_realm: Realm::Access,
        };
        table.insert(
            Dialog {
                id: id.clone(),
                state: DialogState::Early,
                caller: party(Realm::Access),
                callee: party(Realm::Core),
                priority: false,
            },
            t0,
        );
        assert_eq!(table.counts().early, 1);
        table.update(&id, t0, |d| {
            d.state = DialogState::Confirmed;
            d.callee.tag = Some("tt".into());
        });
        assert_eq!(table.counts().confirmed, 1);
        assert_eq!(
            table.find("c", "ft", "tt", Realm::Access).unwrap().1,
            Side::Caller
        );
        assert_eq!(
            table.find("c", "tt", "ft", Realm::Core).unwrap().1,
            Side::Callee
        );
        assert!(table.find("c", "ft", "tt", Realm::Core).is_none());
        let (_, change) = table.remove(&id).unwrap();
        assert_eq!(change, Some(DialogChange::Remove(id)));
        assert_eq!(table.counts().active(), 0);
    }

    #[test]
    fn contact_keys_agree_with_same_contact() {
        let contacts = [
            "sip:a@x",
            "SIP:a@X",
            "sip:a@x:5060",
            "sip:a@x:5061",
            "sip:A@x",
            "sip:a@x;transport=tcp",
            "sips:a@x",
            "sip:x",
            " sip:a@x",
            "sip:a:pw@x",
            "garbage",
            "garbage ",
            "",
            "sip:a@[::1]:5060",
            "sip:a@[::1]",
        ];
        for a in contacts {
            for b in contacts {
                if same_contact(a, b) {
                    assert_eq!(contact_key(a), contact_key(b), "{a:?} vs {b:?}");
                }
            }
            assert_eq!(uri_aor_key(a), aor_key(&aor_of(a)), "{a:?}");
        }
        for uri in [
            "<sip:Bob@Example.COM;user=phone>",
            "tel:+123",
            "sip:a:b@c:5070",
            "x",
        ] {
            assert_eq!(uri_aor_key(uri), aor_key(&aor_of(uri)), "{uri:?}");
        }
    }

    /// The keys a caller derives from URIs parsed in a name-addr are the ones the table
    /// derives from their texts, and a session put in with them is indexed as one without.
    #[test]
    fn caller_keys_from_parsed_uris_are_the_tables() {
        let t0 = Instant::now();
        for (contact, from) in [
            (
                "<sip:alice@192.0.2.1:5062>",
                "<sip:alice@example.com>;tag=1",
            ),
            (
                "<SIP:Alice@EXAMPLE.com;transport=tcp>",
                "\"A\" <sips:a%62c@Example.COM:5071>",
            ),
            ("sip:a:pw@[2001:db8::1]:5060;x=y", "sip:b@host;user=phone"),
            ("<sip:host-only>", "<tel:+15550001>"),
            ("<sip:a@x?subject=hi>", "<sip:%41@x>"),
        ] {
            let contact = sip::NameAddr::parse(contact, "Contact").unwrap();
            let from = sip::NameAddr::parse(from, "From").unwrap();
            let known = CallerKeys::of(Some(&contact.uri()), &from.uri());
            assert_eq!(known.contact, Some(contact_key(contact.uri().as_str())));
            assert_eq!(known.uri, Some(uri_aor_key(from.uri().as_str())));
            let mut caller = party(Realm::Access);
            caller.uri = from.uri().as_str().into();
            caller.contact = Some(contact.uri().as_str().into());
            let dialog = Dialog {
                id: DialogId {
                    call_id: "c".into(),
                    caller_tag: "ft".into(),
                    caller_realm: Realm::Access,
                },
                state: DialogState::Early,
                caller,
                callee: party(Realm::Core),
                priority: false,
            };
            let (mut plain, mut seeded) = (DialogTable::default(), DialogTable::default());
            plain.insert(dialog.clone(), t0);
            seeded.insert_known(dialog.clone(), t0, known);
            let keys = |t: &DialogTable| t.entry(&dialog.id).map(|e| e.keys);
            assert_eq!(keys(&plain), keys(&seeded));
            assert!(keys(&plain).is_some_and(|k| k.access[0].is_some()));
        }
    }

    /// A character written hashes as its text written does, ASCII or not.
    #[test]
    fn chars_hash_as_their_text() {
        use std::fmt::Write as _;
        for text in ["sip:alice@example.com", "é", "a\u{10348}z", ""] {
            let mut by_char = ByteHasher(hasher(KeyKind::Aor));
            for c in text.chars() {
                by_char.write_char(c).unwrap();
            }
            let mut by_text = ByteHasher(hasher(KeyKind::Aor));
            by_text.write_str(text).unwrap();
            assert_eq!(by_char.0.finish(), by_text.0.finish(), "{text:?}");
        }
    }

    /// Every indexed answer against the walk over every dialog it replaces.
    /// Returns how many calls the scans found, so the walk can show it found some.
    fn assert_indexes_match_a_scan(table: &DialogTable, step: u64) -> usize {
        let mut found = 0;
        for contact in 0..3 {
            for aor in 0..3 {
                for remote in 0..3 {
                    for single in [false, true] {
                        let contact = format!("sip:u{contact}@h");
                        let aor = format!("u{aor}@h");
                        let endpoint = Endpoint {
                            contact: &contact,
                            aor: &aor,
                            remote: format!("192.0.2.{remote}:5060").parse().unwrap(),
                            single,
                        };
                        let scan = table.count_access(|p| endpoint.is(p));
                        found += scan;
                        assert_eq!(table.endpoint_calls(&endpoint), scan, "step {step}");
                        assert_eq!(table.endpoint_has_call(&endpoint), scan > 0, "step {step}");
                    }
                }
            }
        }
        for listener in 0..2 {
            for flow in 0..3 {
                let (listener, flow) = (ListenerId(listener), FlowId(flow));
                let mut scan: Vec<DialogId> = table
                    .iter()
                    .filter(|(d, _)| {
                        [&d.caller, &d.callee]
                            .into_iter()
                            .any(|p| p.flow.listener == listener && p.flow.flow == Some(flow))
                    })
                    .map(|(d, _)| d.id.clone())
                    .collect();
                scan.sort();
                assert_eq!(table.on_connection(listener, flow), scan, "step {step}");
            }
        }
        assert_eq!(
            table.index.slots.len(),
            table.len(),
            "step {step}: a slot outlived its dialog"
        );
        found
    }

    #[test]
    fn the_indexes_answer_what_a_scan_of_every_dialog_answers() {
        // A fixed pseudo-random walk of inserts, updates (state, contact, URI, address,
        // connection), removals, applied records, clears and drains, on a primary and on a
        // standby applying its records; after each step every indexed answer equals the scan.
        let t0 = Instant::now();
        let mut table = DialogTable::default();
        let mut standby = DialogTable::default();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let random_party = |next: &mut dyn FnMut(u64) -> u64| {
            let mut p = party(if next(3) == 0 {
                Realm::Core
            } else {
                Realm::Access
            });
            p.uri = match next(3) {
                0 => format!("sip:u{}@h", next(4)).into(),
                1 => format!("<sip:u{}@H;user=phone>", next(4)).into(),
                _ => "not a uri".into(),
            };
            p.contact = match next(4) {
                0 => None,
                1 => Some(format!("sip:u{}@H:5060", next(4)).into()),
                _ => Some(format!("sip:u{}@h", next(4)).into()),
            };
            p.flow.remote = format!("192.0.2.{}:5060", next(4)).parse().unwrap();
            p.flow.listener = ListenerId(u16::try_from(next(2)).unwrap());
            p.flow.flow = (next(2) == 0).then(|| FlowId(next(3)));
            p
        };
        let mut found = 0;
        for step in 0..1000u64 {
            let now = t0 + std::time::Duration::from_millis(step);
            let id = DialogId {
                call_id: format!("c{}", next(16)).into(),
                caller_tag: "t".into(),
                caller_realm: Realm::Access,
            };
            let change = match next(20) {
                0..=5 => table.insert(
                    Dialog {
                        id: id.clone(),
                        state: DialogState::Early,
                        caller: random_party(&mut next),
                        callee: random_party(&mut next),
                        priority: false,
                    },
                    now,
                ),
                6..=12 => {
                    let callee = random_party(&mut next);
                    let what = next(5);
                    let state = match next(3) {
                        0 => DialogState::Early,
                        1 => DialogState::Confirmed,
                        _ => DialogState::Ended,
                    };
                    table.update(&id, now, |d| match what {
                        0 => d.state = state,
                        1 => d.callee.contact = callee.contact,
                        2 => d.caller.uri = callee.uri,
                        3 => d.callee.flow = callee.flow,
                        _ => d.caller.flow.flow = None,
                    })
                }
                13..=16 => table.remove(&id).and_then(|(_, change)| change),
                17 => {
                    // A record from the twin lands on the primary too (a takeover).
                    let dialog = Dialog {
                        id: id.clone(),
                        state: DialogState::Confirmed,
                        caller: random_party(&mut next),
                        callee: random_party(&mut next),
                        priority: false,
                    };
                    table.apply_record(
                        DialogRecordChange::Upsert(Box::new(DialogRecord::of(&dialog, now, now))),
                        now,
                    );
                    None
                }
                18 => {
                    table.clear();
                    standby.clear();
                    None
                }
                _ => {
                    if next(4) == 0 {
                        table.drain_all();
                        standby.drain_all();
                    }
                    None
                }
            };
            if let Some(change) = change {
                let record = match change {
                    DialogChange::Upsert(id) => {
                        DialogRecordChange::Upsert(Box::new(table.record(&id, now).unwrap()))
                    }
                    DialogChange::Remove(id) => DialogRecordChange::Remove(id),
                };
                standby.apply_record(record, now);
            }
            found += assert_indexes_match_a_scan(&table, step);
            found += assert_indexes_match_a_scan(&standby, step);
        }
        assert!(found > 5_000, "the walk found only {found} calls");
    }
}
