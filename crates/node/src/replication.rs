//! Hot standby (SPEC §7) inside the node: what goes into the replication stream and what comes
//! out of it.
//!
//! The active numbers every change record of its proxy (its sequence, one counter for the
//! node's whole boot), wraps it with its node id and boot epoch, and writes it to the stream;
//! when a twin joins (or this node becomes active with a twin connected) it first writes a
//! snapshot of everything, between markers. The standby replaces its tables with the snapshot
//! (cleared at the begin marker), then applies each record whose version is newer than what it
//! holds for that key, after the proxy has checked it. It acts on nothing of what it holds.
//!
//! The stream itself (handshake, authentication, order, acks, window) is `replica`'s; the
//! connection is the shell's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proxy::{ChangeRecord, Proxy, RecordKey};
use serde::{Deserialize, Serialize};

pub use replica::{Mode, Sync, View};

/// One record on the stream: who made it (node, boot epoch) and its version (the sender's
/// sequence when it was made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The sender's node id.
    pub node: u8,
    /// The sender's boot epoch.
    pub epoch: u64,
    /// The sender's sequence: the record's version.
    pub seq: u64,
    /// The change.
    pub record: ChangeRecord,
}

/// What replication reports to the node's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The standby holds the active's snapshot (`records` records, taken in `took`).
    Synced { records: u64, took: Duration },
    /// The connection's protocol ended it (the shell drops the connection and reconnects).
    Closed(replica::CloseReason),
    /// A record was refused.
    Rejected(String),
    /// The twin holds everything: this node released its addresses.
    SwitchoverReleased { seq: u64, waited: Duration },
    /// The twin did not confirm in time: the switchover is abandoned, this node serves on.
    SwitchoverAbandoned { seq: u64, acked: u64 },
}

/// Why a switchover cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchoverError {
    #[error("this box has no twin")]
    NoTwin,
    #[error("cold standby: the twin holds no calls; drain this box instead")]
    Cold,
    #[error("this node is not the active one")]
    NotActive,
    #[error("the twin is not heard")]
    TwinNotHeard,
    #[error("the twin does not hold this node's state yet (sync: {0:?})")]
    NotSynced(Sync),
    #[error("a switchover is already under way")]
    InProgress,
}

/// How long the active waits for its twin to confirm every record before it gives up a
/// switchover and serves on.
pub const SWITCHOVER_WAIT: Duration = Duration::from_secs(2);

/// How long a switchover lets the requests it forwarded get their final answers before it
/// releases anyway: the answers come to the addresses, so one that arrives after the release
/// reaches the twin, which relays an INVITE's 2xx from the early dialog it holds (a call
/// still ringing then) but has no transaction for anything else.
pub const SWITCHOVER_SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Switchover {
    pub(crate) target: u64,
    pub(crate) started: Instant,
    /// The settle time ([`SWITCHOVER_SETTLE`]) is over: forwards still in flight go to the
    /// twin.
    pub(crate) settle_over: bool,
}

/// The node's side of replication.
#[derive(Debug)]
pub(crate) struct Replication {
    pub(crate) mode: Mode,
    config: replica::Config,
    pub(crate) session: Option<replica::Session>,
    established: bool,
    peer: Option<(u8, u64)>,
    /// The sequence of the last record made.
    pub(crate) seq: u64,
    /// Active: the sequence our last snapshot ended at (the twin is synced once it holds it).
    snapshot_end: Option<u64>,
    /// Standby: the twin's snapshot is in.
    synced_from_twin: bool,
    receiving_since: Option<(Instant, u64)>,
    versions: HashMap<RecordKey, (u64, u64)>,
    acked: u64,
    received: u64,
    applied: u64,
    stale: u64,
    rejected: u64,
    last_rejected: Option<String>,
    snapshots_sent: u64,
    snapshots_received: u64,
    last_snapshot: Option<(u64, u64)>,
    last_close: Option<replica::CloseReason>,
    pub(crate) switchover: Option<Switchover>,
    pub(crate) events: Vec<Event>,
}

impl Replication {
    pub(crate) fn new(mode: Mode, config: replica::Config) -> Replication {
        Replication {
            mode,
            config,
            session: None,
            established: false,
            peer: None,
            seq: 0,
            snapshot_end: None,
            synced_from_twin: false,
            receiving_since: None,
            versions: HashMap::new(),
            acked: 0,
            received: 0,
            applied: 0,
            stale: 0,
            rejected: 0,
            last_rejected: None,
            snapshots_sent: 0,
            snapshots_received: 0,
            last_snapshot: None,
            last_close: None,
            switchover: None,
            events: Vec::new(),
        }
    }

    /// A new connection: its session, fresh.
    pub(crate) fn open(&mut self, nonce: [u8; 16], now: Instant) {
        if self.mode == Mode::Cold {
            return;
        }
        self.session = Some(replica::Session::new(self.config.clone(), nonce, now));
        self.established = false;
        self.snapshot_end = None;
        self.acked = 0;
    }

    /// The connection is gone.
    pub(crate) fn closed(&mut self) {
        self.session = None;
        self.established = false;
        self.snapshot_end = None;
    }

    /// The twin holds our snapshot and everything after it (we are active).
    pub(crate) fn twin_synced(&self) -> bool {
        self.established && self.snapshot_end.is_some_and(|end| self.acked >= end)
    }

    /// What a twin event means for replication. Becoming active, the twin is told everything
    /// again, from the top (a snapshot). Becoming standby, what this node holds is its own until
    /// the twin's snapshot replaces it, and the session ends: whatever the active wrote while
    /// this node was active too was not applied, and a new connection brings a new snapshot.
    /// A connection to a twin that is gone, or to its previous boot, ends at once rather than
    /// at the session's idle timeout. Returns whether this node stopped holding its twin's
    /// state (it is not ready to preempt until the next snapshot).
    pub(crate) fn on_twin_event(
        &mut self,
        event: &twin::Event,
        proxy: &Proxy,
        now: Instant,
    ) -> bool {
        if self.mode == Mode::Cold {
            return false;
        }
        let close = match event {
            twin::Event::RoleChanged {
                to: twin::Role::Active,
                ..
            } => {
                self.send_snapshot(proxy, now);
                false
            }
            twin::Event::RoleChanged {
                to: twin::Role::Standby,
                ..
            } => {
                self.synced_from_twin = false;
                self.snapshot_end = None;
                true
            }
            twin::Event::TwinLost => true,
            twin::Event::TwinRestarted { epoch } => self
                .session
                .as_ref()
                .and_then(|s| s.status(now).peer_epoch)
                .is_some_and(|e| e != *epoch),
            _ => false,
        };
        if close {
            if let Some(s) = &mut self.session {
                s.close(replica::CloseReason::Local);
            }
        }
        matches!(
            event,
            twin::Event::RoleChanged {
                to: twin::Role::Standby,
                ..
            }
        )
    }

    pub(crate) fn sync(&self, active: bool) -> Sync {
        match (self.mode, self.established) {
            (Mode::Cold, _) => Sync::Cold,
            (Mode::Hot, false) => Sync::NotConnected,
            (Mode::Hot, true) if active && self.twin_synced() => Sync::Synced,
            (Mode::Hot, true) if !active && self.synced_from_twin => Sync::Synced,
            (Mode::Hot, true) => Sync::Syncing,
        }
    }

    /// One change of the proxy (we are active): numbered, and written when the twin is
    /// connected (when it is not, the snapshot at its next connection carries it).
    pub(crate) fn record(&mut self, record: ChangeRecord, active: bool, now: Instant) {
        if self.mode == Mode::Cold || !active {
            return;
        }
        self.seq += 1;
        if !self.established {
            return;
        }
        let versioned = Versioned {
            node: self.config.node_id,
            epoch: self.config.boot_epoch,
            seq: self.seq,
            record,
        };
        if let (Some(session), Ok(bytes)) = (&mut self.session, postcard::to_allocvec(&versioned)) {
            // The session stamps what it writes with the latest time it was given.
            session.handle_timeout(now);
            session.send(self.seq, bytes);
        }
    }

    /// Writes everything the proxy holds, between snapshot markers (we are active and the
    /// twin is connected).
    pub(crate) fn send_snapshot(&mut self, proxy: &Proxy, now: Instant) {
        if self.mode == Mode::Cold || !self.established {
            return;
        }
        let records = proxy.full_sync();
        let Some(session) = &mut self.session else {
            return;
        };
        session.handle_timeout(now);
        session.begin_snapshot(records.len() as u64);
        for record in records {
            self.seq += 1;
            let versioned = Versioned {
                node: self.config.node_id,
                epoch: self.config.boot_epoch,
                seq: self.seq,
                record,
            };
            if let Ok(bytes) = postcard::to_allocvec(&versioned) {
                session.send(self.seq, bytes);
            }
        }
        // The twin holds the snapshot once it acknowledges its last record. (An empty snapshot
        // has none of its own: it counts as held at once, which is harmless, as there is
        // nothing in it to lose.)
        session.end_snapshot(self.seq);
        self.snapshot_end = Some(self.seq);
        self.snapshots_sent += 1;
    }

    /// Runs the session's events: records into the proxy (standby), acks, the end.
    /// Returns whether the session was just established (the caller sends a snapshot if active).
    pub(crate) fn pump(
        &mut self,
        proxy: &mut Proxy,
        remote: &mut crate::shards::Remote,
        active: bool,
        now: Instant,
    ) -> bool {
        let mut newly = false;
        while let Some(event) = self.session.as_mut().and_then(replica::Session::poll_event) {
            match event {
                replica::Event::Established {
                    peer_node,
                    peer_epoch,
                } => {
                    self.established = true;
                    self.peer = Some((peer_node, peer_epoch));
                    newly = true;
                }
                replica::Event::SnapshotBegin { records } => {
                    if !active {
                        proxy.clear_replicated(now);
                        remote.broadcast(&crate::shards::ShardCommand::ClearReplicated, None);
                        self.versions.clear();
                        self.synced_from_twin = false;
                        self.receiving_since = Some((now, records));
                    }
                }
                replica::Event::Record { seq, payload } => {
                    self.received = seq;
                    if !active {
                        self.apply(proxy, remote, &payload, now);
                    }
                }
                replica::Event::SnapshotEnd { .. } => {
                    if !active {
                        self.synced_from_twin = true;
                        self.snapshots_received += 1;
                        let (since, records) = self.receiving_since.take().unwrap_or((now, 0));
                        let took = now.saturating_duration_since(since);
                        self.last_snapshot = Some((records, took.as_millis() as u64));
                        self.events.push(Event::Synced { records, took });
                    }
                }
                replica::Event::Acked { seq } => self.acked = seq,
                replica::Event::Closed(reason) => {
                    self.last_close = Some(reason);
                    self.events.push(Event::Closed(reason));
                    self.closed();
                    break;
                }
            }
        }
        newly
    }

    fn apply(
        &mut self,
        proxy: &mut Proxy,
        remote: &mut crate::shards::Remote,
        payload: &[u8],
        now: Instant,
    ) {
        let versioned: Versioned = match postcard::from_bytes(payload) {
            Ok(v) => v,
            Err(e) => return self.reject(format!("undecodable record: {e}")),
        };
        if self
            .peer
            .is_some_and(|(node, epoch)| (node, epoch) != (versioned.node, versioned.epoch))
        {
            return self.reject(format!(
                "record from node {} epoch {}, not the connected twin",
                versioned.node, versioned.epoch
            ));
        }
        let key = versioned.record.key();
        let removal = matches!(
            versioned.record,
            ChangeRecord::Binding(proxy::registrations::BindingChange::Remove { .. })
                | ChangeRecord::Dialog(proxy::dialogs::DialogRecordChange::Remove(_))
        );
        if let Some(&(epoch, seq)) = self.versions.get(&key) {
            if epoch == versioned.epoch && seq >= versioned.seq {
                self.stale += 1;
                return;
            }
        }
        match crate::shards::apply_twin_record(proxy, remote, now, versioned.record) {
            Ok(()) => {
                self.applied += 1;
                // A removed key's version is forgotten: the stream is ordered, so nothing older
                // can follow it on this connection, and a standby up for a year must not keep a
                // version for every call it ever saw.
                if removal {
                    self.versions.remove(&key);
                } else {
                    self.versions.insert(key, (versioned.epoch, versioned.seq));
                }
            }
            Err(e) => self.reject(e.to_string()),
        }
    }

    fn reject(&mut self, why: String) {
        self.rejected += 1;
        self.last_rejected = Some(why.clone());
        self.events.push(Event::Rejected(why));
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    pub(crate) fn view(&self, active: bool, now: Instant) -> View {
        let status = self.session.as_ref().map(|s| s.status(now));
        View {
            mode: self.mode,
            sync: self.sync(active),
            position: self.seq,
            sent_seq: status.as_ref().map_or(0, |s| s.sent_seq),
            acked_seq: self.acked,
            received_seq: self.received,
            lag_records: if active && self.established {
                self.seq.saturating_sub(self.acked)
            } else {
                0
            },
            lag_ms: status
                .as_ref()
                .and_then(|s| s.oldest_unacked_age)
                .map(|d| d.as_millis() as u64),
            records_applied: self.applied,
            stale_dropped: self.stale,
            rejected: self.rejected,
            last_rejected: self.last_rejected.clone(),
            snapshots_sent: self.snapshots_sent,
            snapshots_received: self.snapshots_received,
            last_snapshot: self.last_snapshot,
            last_close: self.last_close,
            switchover_waiting_for: self.switchover.as_ref().map(|s| s.target),
        }
    }
}
