//! The dialog table: every INVITE session the proxy carries, early or confirmed, with what is
//! needed to route its in-dialog requests and to end it ourselves.
//!
//! A session is keyed by Call-ID and the caller's From tag; forks downstream share one entry,
//! which is what the drain counts ("active INVITE sessions"). Every change is returned as a
//! [`DialogChange`] for events and replication.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::transport::{Flow, Peer, Realm};

/// Identifies a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// The caller's From tag.
    pub caller_tag: String,
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
    pub uri: String,
    /// Its tag (the callee's is known once it answers).
    pub tag: Option<String>,
    /// Its Contact (the remote target for requests to it).
    pub contact: Option<String>,
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
    /// Created or updated.
    Upsert(Box<Dialog>),
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
    pub uri: String,
    /// Its tag.
    pub tag: Option<String>,
    /// Its Contact.
    pub contact: Option<String>,
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

/// The table.
#[derive(Debug, Default)]
pub struct DialogTable {
    dialogs: HashMap<DialogId, (Dialog, Instant)>,
    /// Kept as the table changes: the counts are read after every message and every record a
    /// standby applies, and a count over every dialog each time made a busy box slower with
    /// every call it carried.
    counts: DialogCounts,
    /// No change records from [`update`](Self::update): nobody replicates them.
    no_snapshots: bool,
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
    /// Puts a dialog in, replacing any with its key, keeping the counts.
    fn put(&mut self, dialog: Dialog, started: Instant) {
        self.counts.add(dialog.state);
        if let Some((old, _)) = self.dialogs.insert(dialog.id.clone(), (dialog, started)) {
            self.counts.sub(old.state);
        }
    }

    /// Takes a dialog out, keeping the counts.
    fn take(&mut self, id: &DialogId) -> Option<(Dialog, Instant)> {
        let taken = self.dialogs.remove(id)?;
        self.counts.sub(taken.0.state);
        Some(taken)
    }

    /// Whether [`update`](Self::update) returns change records (on by default). Each one is a
    /// full copy of the dialog, made several times per call for a twin to apply.
    pub fn set_snapshots(&mut self, on: bool) {
        self.no_snapshots = !on;
    }

    /// Starts tracking a session in the early state; the change record unless snapshots are
    /// off.
    pub fn insert(&mut self, dialog: Dialog, now: Instant) -> Option<DialogChange> {
        let change = (!self.no_snapshots).then(|| DialogChange::Upsert(Box::new(dialog.clone())));
        self.put(dialog, now);
        change
    }

    /// When the session started, if tracked.
    pub fn started(&self, id: &DialogId) -> Option<Instant> {
        self.dialogs.get(id).map(|(_, at)| *at)
    }

    /// Forgets every session: a standby's table before its twin's snapshot replaces it.
    pub fn clear(&mut self) {
        self.dialogs.clear();
        self.counts = DialogCounts::default();
    }

    /// Applies a record made on the twin, keeping the session's start time.
    pub fn apply_record(&mut self, change: DialogRecordChange, now: Instant) {
        match change {
            DialogRecordChange::Upsert(record) => {
                let (dialog, started) = record.into_dialog(now);
                self.put(dialog, started);
            }
            DialogRecordChange::Remove(id) => {
                self.take(&id);
            }
        }
    }

    /// The session, if tracked.
    pub fn get(&self, id: &DialogId) -> Option<&Dialog> {
        self.dialogs.get(id).map(|(d, _)| d)
    }

    /// Changes a session in place and returns the change record.
    pub fn update(&mut self, id: &DialogId, f: impl FnOnce(&mut Dialog)) -> Option<DialogChange> {
        let (dialog, _) = self.dialogs.get_mut(id)?;
        let before = dialog.state;
        f(dialog);
        if dialog.state != before {
            let after = dialog.state;
            self.counts.sub(before);
            self.counts.add(after);
        }
        let (dialog, _) = self.dialogs.get(id)?;
        if self.no_snapshots {
            return None;
        }
        Some(DialogChange::Upsert(Box::new(dialog.clone())))
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
        let as_caller = DialogId {
            call_id: call_id.to_owned(),
            caller_tag: from_tag.to_owned(),
            caller_realm: realm,
        };
        if let Some((d, _)) = self.dialogs.get(&as_caller) {
            return Some((d, Side::Caller));
        }
        let other = match realm {
            Realm::Access => Realm::Core,
            Realm::Core => Realm::Access,
        };
        let as_callee = DialogId {
            call_id: call_id.to_owned(),
            caller_tag: to_tag.to_owned(),
            caller_realm: other,
        };
        self.dialogs.get(&as_callee).map(|(d, _)| (d, Side::Callee))
    }

    /// Stops tracking a session.
    pub fn remove(&mut self, id: &DialogId) -> Option<(Dialog, DialogChange)> {
        let (mut dialog, _) = self.take(id)?;
        dialog.state = DialogState::Ended;
        Some((dialog, DialogChange::Remove(id.clone())))
    }

    /// Counts by state.
    pub fn counts(&self) -> DialogCounts {
        debug_assert_eq!(self.counts, self.recount(), "the kept counts drifted");
        self.counts
    }

    /// The counts by a walk over every dialog (what [`counts`](Self::counts) keeps).
    fn recount(&self) -> DialogCounts {
        let mut counts = DialogCounts::default();
        for (d, _) in self.dialogs.values() {
            counts.add(d.state);
        }
        counts
    }

    /// Every session with when it started.
    pub fn iter(&self) -> impl Iterator<Item = (&Dialog, Instant)> {
        self.dialogs.values().map(|(d, at)| (d, *at))
    }

    /// Whether an access-side party of a live session matches `pred` (for "has an active call").
    pub fn any_access_party(&self, mut pred: impl FnMut(&Party) -> bool) -> bool {
        self.dialogs.values().any(|(d, _)| {
            d.state != DialogState::Ended
                && [&d.caller, &d.callee]
                    .into_iter()
                    .any(|p| p.realm == Realm::Access && pred(p))
        })
    }

    /// How many live dialogs have an access-side party for which `pred` holds.
    pub fn count_access(&self, mut pred: impl FnMut(&Party) -> bool) -> usize {
        self.dialogs
            .values()
            .filter(|(d, _)| {
                d.state != DialogState::Ended
                    && [&d.caller, &d.callee]
                        .into_iter()
                        .any(|p| p.realm == Realm::Access && pred(p))
            })
            .count()
    }

    /// Removes every session (after the guard ended them).
    pub fn drain_all(&mut self) -> Vec<Dialog> {
        self.counts = DialogCounts::default();
        self.dialogs.drain().map(|(_, (d, _))| d).collect()
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
            uri: "sip:a@x".to_owned(),
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
        table.update(&id, |d| {
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
        assert_eq!(change, DialogChange::Remove(id));
        assert_eq!(table.counts().active(), 0);
    }
}
