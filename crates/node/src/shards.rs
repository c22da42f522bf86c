//! The SIP work of one box spread over shards (SPEC §6, `docs/decisions.md` "Shards").
//!
//! Shard 0 is the [`Node`](crate::Node)'s own proxy; every other shard is a [`Shard`], a proxy
//! of its own that a SIP worker thread runs. The node is their hub: it alone holds the system
//! state, the guard and the twin, and tells every shard what they decide
//! ([`ShardCommand`]); each shard reports its counts and its change records
//! ([`ShardReport`]), and the node hands each record to every other shard. So:
//!
//! - the drain ends when the sessions of every shard and the bindings (which every shard
//!   holds) are gone, and the guard ends the work of every shard;
//! - a binding cached through one shard is found by all, and the drain's REGISTER rules on one
//!   shard see the calls of the others (`proxy::Proxy::apply_peer_change`).
//!
//! The messages in both directions are the shell's to carry, in order, losing none.

use std::collections::VecDeque;
use std::time::Instant;

use proxy::upstreams::UpstreamNote;
use proxy::{ChangeRecord, Counts, Input, Proxy, Shards, SystemState, Transmit};

/// What the node tells a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardCommand {
    /// The system state changed.
    SystemState(SystemState),
    /// The guard expired: end every session and drop every binding, with this reason.
    TerminateAll(String),
    /// The twin made this node standby (`true`) or active.
    Standby(bool),
    /// A change record of another shard.
    Apply(ChangeRecord),
    /// An upstream left or rejoined the rotation on another shard.
    Upstream(UpstreamNote),
    /// A session the twin replicated (this node is its standby) whose Call-ID is this
    /// shard's: held as its own, to serve after a takeover.
    ApplyTwin(ChangeRecord),
    /// The twin's snapshot begins: forget what was replicated.
    ClearReplicated,
    /// A switchover is under way (`true`): start no new transaction.
    Quiesced(bool),
    /// A connection (TCP) or association (SCTP) ended: parties reached over it lose it.
    FlowClosed {
        listener: proxy::ListenerId,
        flow: proxy::FlowId,
    },
}

/// What a shard tells the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardReport {
    /// Its counts changed (its own sessions; the bindings of the box).
    Counts(Counts),
    /// One of its changes, for the other shards (and a hot twin).
    Change(ChangeRecord),
    /// An upstream left or rejoined the rotation here.
    Upstream(UpstreamNote),
    /// How many requests it forwarded are still waiting for a final answer (a switchover
    /// waits for them): counted while quiesced only, 0 otherwise.
    InFlight(usize),
}

/// One shard other than the node's own: a proxy, run by a SIP worker thread.
///
/// Contract: feed [`handle_input`](Self::handle_input) with every message the box's reader
/// hands this shard, [`handle_command`](Self::handle_command) with every command of the node,
/// [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout) has
/// come; after each, drain [`poll_transmit`](Self::poll_transmit),
/// [`poll_report`](Self::poll_report) (to the node) and [`poll_event`](Self::poll_event) (for
/// the journal).
#[derive(Debug)]
pub struct Shard {
    proxy: Proxy,
    /// A switchover is under way: only then are the forwards in flight counted (a walk over
    /// every server transaction, tens of thousands on a busy box).
    quiesced: bool,
    /// The forwards in flight last reported.
    in_flight: usize,
    reports: VecDeque<ShardReport>,
    events: VecDeque<proxy::Event>,
}

impl Shard {
    /// Shard `index` (1 or more) of `shards`, in state `initial`.
    pub fn new(
        config: proxy::Config,
        index: usize,
        shards: Shards,
        initial: SystemState,
        now: Instant,
    ) -> Shard {
        let mut proxy = Proxy::new(config, now);
        proxy.set_replication(false);
        proxy.set_shard(index, shards);
        proxy.set_system_state(initial);
        let mut shard = Shard {
            proxy,
            quiesced: false,
            in_flight: 0,
            reports: VecDeque::new(),
            events: VecDeque::new(),
        };
        shard.pump();
        shard
    }

    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.proxy.handle_input(now, input);
        self.pump();
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.proxy.handle_timeout(now);
        self.pump();
    }

    pub fn handle_command(&mut self, now: Instant, command: ShardCommand) {
        match command {
            ShardCommand::SystemState(state) => self.proxy.set_system_state(state),
            ShardCommand::TerminateAll(reason) => self.proxy.terminate_all(now, &reason),
            ShardCommand::Standby(standby) => self.proxy.set_standby(standby),
            ShardCommand::Apply(record) => self.proxy.apply_peer_change(now, record),
            ShardCommand::Upstream(note) => self.proxy.apply_peer_upstream(now, note),
            ShardCommand::ApplyTwin(record) => {
                // Validated by shard 0 before it was routed here.
                let _ = self.proxy.apply_change(now, record);
            }
            ShardCommand::ClearReplicated => self.proxy.clear_replicated(now),
            ShardCommand::Quiesced(on) => {
                self.quiesced = on;
                self.proxy.set_quiesced(on);
            }
            ShardCommand::FlowClosed { listener, flow } => {
                self.proxy.handle_flow_closed(now, listener, flow)
            }
        }
        self.pump();
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.proxy.poll_transmit()
    }

    /// Gives back a sent transmit's buffer ([`proxy::Proxy::recycle`]).
    pub fn recycle(&mut self, bytes: Vec<u8>) {
        self.proxy.recycle(bytes);
    }

    /// The next connection or association to end gracefully.
    #[must_use]
    pub fn poll_close(&mut self) -> Option<proxy::Close> {
        self.proxy.poll_close()
    }

    #[must_use]
    pub fn poll_report(&mut self) -> Option<ShardReport> {
        self.reports.pop_front()
    }

    /// The proxy's events for the journal (calls, registrations, upstreams, answers to its
    /// own requests); counts and records go to the node as reports.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<proxy::Event> {
        self.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.proxy.poll_timeout()
    }

    /// The proxy, read-only.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    fn pump(&mut self) {
        while let Some(event) = self.proxy.poll_event() {
            match event {
                proxy::Event::CountsChanged(counts) => {
                    self.reports.push_back(ShardReport::Counts(counts));
                }
                proxy::Event::Change(record) => self.reports.push_back(ShardReport::Change(record)),
                proxy::Event::Upstream(note) => self.reports.push_back(ShardReport::Upstream(note)),
                // The node decides the drain and the connections from the whole box.
                proxy::Event::DrainComplete
                | proxy::Event::CloseConnections
                | proxy::Event::AcceptConnections => {}
                other => self.events.push_back(other),
            }
        }
        // After the records: a node that hears "none in flight" has the records before it.
        // Counted only while a switchover waits for them; otherwise the node reads none.
        let in_flight = if self.quiesced {
            self.proxy.forwards_in_flight()
        } else {
            0
        };
        if in_flight != self.in_flight {
            self.in_flight = in_flight;
            self.reports.push_back(ShardReport::InFlight(in_flight));
        }
    }
}

/// What the node knows of its other shards.
#[derive(Debug, Default)]
pub(crate) struct Remote {
    /// The last counts each reported (index 0 is shard 1).
    pub(crate) counts: Vec<Counts>,
    /// The forwards in flight each reported last.
    pub(crate) in_flight: Vec<usize>,
    /// Commands not yet taken by the shell, with their shard.
    pub(crate) commands: VecDeque<(usize, ShardCommand)>,
}

impl Remote {
    /// `command` to every shard but the node's own and `except`.
    pub(crate) fn broadcast(&mut self, command: &ShardCommand, except: Option<usize>) {
        for k in 1..=self.counts.len() {
            if Some(k) != except {
                self.commands.push_back((k, command.clone()));
            }
        }
    }

    /// The sessions of the other shards, added to the node's own counts.
    pub(crate) fn add_to(&self, mut own: Counts) -> Counts {
        for c in &self.counts {
            own.active_sessions += c.active_sessions;
            own.early += c.early;
            own.confirmed += c.confirmed;
        }
        own
    }
}

/// A record of the twin, on a standby of several shards: validated here (shard 0); a binding
/// is held by every shard, a session by the shard of its Call-ID as its own and by the others
/// as known, as if that shard had made it. Without other shards: the proxy's `apply_change`.
pub(crate) fn apply_twin_record(
    proxy: &mut Proxy,
    remote: &mut Remote,
    now: Instant,
    mut record: ChangeRecord,
) -> Result<(), proxy::RecordError> {
    if remote.counts.is_empty() {
        return proxy.apply_change(now, record);
    }
    let owner = match &record {
        ChangeRecord::Dialog(proxy::dialogs::DialogRecordChange::Upsert(d)) => {
            proxy.shard().1.of_call_id(&d.id.call_id)
        }
        ChangeRecord::Dialog(proxy::dialogs::DialogRecordChange::Remove(id)) => {
            proxy.shard().1.of_call_id(&id.call_id)
        }
        ChangeRecord::Binding(_) => 0,
    };
    if owner == 0 {
        proxy.apply_change(now, record.clone())?;
        remote.broadcast(&ShardCommand::Apply(record), None);
    } else {
        proxy::replication::validate(proxy.config(), &mut record)?;
        proxy.apply_peer_change(now, record.clone());
        remote
            .commands
            .push_back((owner, ShardCommand::ApplyTwin(record.clone())));
        remote.broadcast(&ShardCommand::Apply(record), Some(owner));
    }
    Ok(())
}
