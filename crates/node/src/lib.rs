//! One sans-IO core for the whole node: the SIP proxy, the system-state machine and (when the
//! box has one) the twin composed, so that the daemon's engine loop only pumps bytes, time and
//! commands in and outputs out.
//!
//! What the composition decides (and no shell may decide instead):
//! - the proxy's counts feed the drain: the last call or binding to go ends it (SPEC §2 rule
//!   10) inside the same `handle_*` call that removed it;
//! - each transition reaches the proxy before the next input is judged: a message after the
//!   one that ended a drain already meets an offline box;
//! - the guard's expiry (rule 11) makes the proxy end every dialog and drop every binding,
//!   before the transition to offline is reported;
//! - the twin's keep-alives carry the system state and the counts as they are after each step,
//!   so a draining or offline box is never taken for a dead one (SPEC §7: a drain is not a
//!   failure).
//!
//! It is not for I/O: persisting the operator's intent, logging, the panel and the transports
//! follow the [`Event`]s it reports.
//!
//! # Contract
//! - In: [`Node::handle_input`] for every SIP message (a datagram or a framed stream message),
//!   [`Node::handle_timeout`] when [`Node::poll_timeout`] has come (early or late is harmless),
//!   [`Node::request_offline`] / [`Node::request_online`] / [`Node::toggle`] for the operator's
//!   and the button's commands.
//!   With a twin: [`Node::handle_twin_datagram`] for every keep-alive received on a path, and
//!   [`Node::handle_probe_result`] once for every [`twin::AddressAction::Probe`],
//!   [`Node::handle_addresses_announced`] once for every [`twin::AddressAction::Announce`]
//!   carried out.
//! - Out: after every call above, drain [`Node::poll_transmit`], [`Node::poll_twin_transmit`],
//!   [`Node::poll_address_action`] and [`Node::poll_event`] until `None`, then re-arm the timer
//!   from [`Node::poll_timeout`].
//! - `now` must not go backwards; an earlier `now` counts as the latest seen (both machines
//!   already hold to that).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proxy::{Counts, Input, Proxy, Transmit};
use system_state::{Cause, Machine, Outcome, SystemState, Transition};

pub mod replication;
pub mod shards;

#[cfg(test)]
mod tests;

use replication::{Replication, Switchover, SwitchoverError};
use shards::{Remote, ShardCommand, ShardReport};

/// What the node tells its shell, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The system state changed (already in force in the proxy). The shell persists the
    /// operator's intent, tells the panel, the console and the journal.
    StateChanged(Transition),
    /// Rule 11: the guard expired with this much work left; the proxy has just ended it all
    /// (BYEs, CANCELs and de-registrations are among the transmits).
    GuardExpired { sessions: u64, registrations: u64 },
    /// Whether new SIP connections are welcome (refused while offline).
    AcceptConnections(bool),
    /// Something the twin reports: role changes, path alarms, takeovers, dropped keep-alives.
    Twin(twin::Event),
    /// Something replication reports: synced, a connection's end, a refused record, a
    /// switchover's outcome.
    Replication(replication::Event),
    /// Something the proxy reports for the journal (calls, registrations, upstreams, answers
    /// to the box's own requests). Counts and the drain's own signals are the node's and do
    /// not appear here.
    Proxy(proxy::Event),
}

/// The proxy and the system state of one node, composed. See the crate's contract.
#[derive(Debug)]
pub struct Node {
    proxy: Proxy,
    machine: Machine,
    twin: Option<twin::Twin>,
    /// Hot or cold standby, with a twin.
    replication: Option<Replication>,
    /// What the twin's keep-alives last carried: told again only when it changes.
    advertised: Option<twin::Advertised>,
    events: VecDeque<Event>,
    /// The other shards of the box ([`Node::add_shards`]); none by default.
    remote: Remote,
    /// Became active, and the shell has not yet said the addresses are announced: the
    /// upstreams are probed then ([`Node::handle_addresses_announced`]).
    probe_when_announced: bool,
}

impl Node {
    /// A node in `initial` state (the operator's saved intent) since `now`. `default_guard` is
    /// `[drain] guard_secs`.
    pub fn new(
        config: proxy::Config,
        initial: SystemState,
        default_guard: Duration,
        now: Instant,
    ) -> Node {
        let mut proxy = Proxy::new(config, now);
        // Change records are for a twin's replication, which this node does not run yet.
        proxy.set_replication(false);
        proxy.set_system_state(initial);
        let mut node = Node {
            proxy,
            machine: Machine::new(now, initial, default_guard),
            twin: None,
            replication: None,
            advertised: None,
            events: VecDeque::new(),
            remote: Remote::default(),
            probe_when_announced: false,
        };
        // The machine needs a first count before it can end a drain restored at start.
        node.feed_load(now);
        node.settle(now);
        node
    }

    /// A node with a twin (`[twin]`): as [`new`](Self::new), and the twin machine starts
    /// standby, advertising this node's state from the first keep-alive.
    pub fn with_twin(
        config: proxy::Config,
        initial: SystemState,
        default_guard: Duration,
        twin: twin::Twin,
        now: Instant,
    ) -> Node {
        let mut node = Node::new(config, initial, default_guard, now);
        // A twin starts standby: its proxy originates nothing until the addresses are its own.
        node.proxy.set_standby(twin.role() == twin::Role::Standby);
        node.twin = Some(twin);
        node.settle(now);
        node
    }

    /// Turns on replication with the twin (`[twin] mode`): hot standby numbers and writes
    /// every change of the proxy to the replication stream and takes the twin's; cold standby
    /// replicates nothing. `key` is the twin key, `node_id` and `boot_epoch` this node's.
    /// Without a twin this does nothing.
    pub fn enable_replication(
        &mut self,
        mode: replication::Mode,
        node_id: u8,
        key: Vec<u8>,
        boot_epoch: u64,
        now: Instant,
    ) {
        let Some(t) = &mut self.twin else {
            return;
        };
        let config = replica::Config::new(node_id, key, boot_epoch, self.proxy.listener_hash());
        self.proxy.set_replication(mode == replication::Mode::Hot);
        if mode == replication::Mode::Hot {
            // Not ready to take the addresses back by preemption before the twin's snapshot.
            t.set_ready(false, now);
        }
        self.replication = Some(Replication::new(mode, config));
        self.settle(now);
    }

    /// Whether the shell should keep a replication connection to the twin.
    pub fn wants_stream(&self) -> bool {
        self.replication
            .as_ref()
            .is_some_and(|r| r.mode == replication::Mode::Hot)
    }

    /// The shell has a new connection to the twin (either direction); `nonce` is 16 fresh
    /// random bytes. A session left from an earlier connection is dropped.
    pub fn handle_stream_open(&mut self, now: Instant, nonce: [u8; 16]) {
        if let Some(r) = &mut self.replication {
            r.open(nonce, now);
        }
        self.pump_stream(now);
    }

    /// Bytes read from the replication connection.
    pub fn handle_stream_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if let Some(s) = self.replication.as_mut().and_then(|r| r.session.as_mut()) {
            s.handle_bytes(bytes, now);
        }
        self.pump_stream(now);
    }

    /// The replication connection is gone (closed, reset, failed).
    pub fn handle_stream_closed(&mut self, now: Instant) {
        if let Some(r) = &mut self.replication {
            r.closed();
        }
        self.settle(now);
    }

    /// The next bytes to write to the replication connection, in order.
    #[must_use]
    pub fn poll_stream_bytes(&mut self) -> Option<Vec<u8>> {
        self.replication.as_mut()?.session.as_mut()?.poll_bytes()
    }

    /// Whether a replication session is running (the shell drops its connection when not).
    pub fn stream_open(&self) -> bool {
        self.replication
            .as_ref()
            .is_some_and(|r| r.session.as_ref().is_some_and(|s| !s.is_closed()))
    }

    /// `switchover` (SPEC §7): this active node stops taking new transactions and releases
    /// its addresses once the twin holds every record made so far; the twin then claims
    /// them. Abandoned (serving on) if the twin does not confirm within
    /// [`replication::SWITCHOVER_WAIT`].
    pub fn request_switchover(&mut self, now: Instant) -> Result<(), SwitchoverError> {
        let (Some(t), Some(r)) = (&self.twin, &self.replication) else {
            return Err(SwitchoverError::NoTwin);
        };
        if r.mode == replication::Mode::Cold {
            return Err(SwitchoverError::Cold);
        }
        if t.role() != twin::Role::Active {
            return Err(SwitchoverError::NotActive);
        }
        if r.switchover.is_some() {
            return Err(SwitchoverError::InProgress);
        }
        if !t.status(now).paths.iter().any(|p| p.up) {
            return Err(SwitchoverError::TwinNotHeard);
        }
        if !r.twin_synced() {
            return Err(SwitchoverError::NotSynced(r.sync(true)));
        }
        self.proxy.set_quiesced(true);
        self.remote.broadcast(&ShardCommand::Quiesced(true), None);
        if let Some(r) = &mut self.replication {
            r.switchover = Some(Switchover {
                target: r.seq,
                started: now,
                settle_over: false,
            });
        }
        self.settle(now);
        Ok(())
    }

    /// What `show twin` says about replication; `None` without a twin.
    pub fn replication_view(&self, now: Instant) -> Option<replication::View> {
        let active = self.is_active();
        self.replication.as_ref().map(|r| r.view(active, now))
    }

    fn is_active(&self) -> bool {
        self.twin
            .as_ref()
            .is_some_and(|t| t.role() == twin::Role::Active)
    }

    /// Runs the replication session's events, then settles.
    fn pump_stream(&mut self, now: Instant) {
        let active = self.is_active();
        if let Some(r) = &mut self.replication {
            if r.pump(&mut self.proxy, &mut self.remote, active, now) && active {
                r.send_snapshot(&self.proxy, now);
            }
        }
        self.settle(now);
    }

    /// The switchover's progress: release once the twin holds everything, give up at the
    /// deadline.
    fn step_switchover(&mut self, now: Instant) {
        // Counting the forwards in flight walks every server transaction: only during a
        // switchover, not after every message (it was half the engine's time under load).
        if self
            .replication
            .as_ref()
            .is_none_or(|r| r.switchover.is_none())
        {
            return;
        }
        let in_flight = self.forwards_in_flight();
        let Some(r) = &mut self.replication else {
            return;
        };
        let Some(sw) = &r.switchover else {
            return;
        };
        let started = sw.started;
        // Records written while in-flight answers come back (a call confirmed, a binding
        // cached) must reach the twin too.
        let target = r.seq;
        let settle_over = now >= started + replication::SWITCHOVER_SETTLE;
        let settled = settle_over || in_flight == 0;
        if let Some(sw) = &mut r.switchover {
            sw.target = target;
            sw.settle_over = settle_over;
        }
        if r.acked() >= target && settled {
            r.switchover = None;
            r.events.push(replication::Event::SwitchoverReleased {
                seq: target,
                waited: now.saturating_duration_since(started),
            });
            self.proxy.set_quiesced(false);
            self.remote.broadcast(&ShardCommand::Quiesced(false), None);
            if let Some(t) = &mut self.twin {
                // Refused only when the twin is not heard; the next switchover says so.
                let _ = t.handle_release_request(now);
            }
        } else if now >= started + replication::SWITCHOVER_WAIT {
            r.switchover = None;
            r.events.push(replication::Event::SwitchoverAbandoned {
                seq: target,
                acked: r.acked(),
            });
            self.proxy.set_quiesced(false);
            self.remote.broadcast(&ShardCommand::Quiesced(false), None);
        }
    }

    /// A keep-alive (or status query or answer) received from the twin on `path`.
    pub fn handle_twin_datagram(&mut self, now: Instant, path: twin::PathId, payload: &[u8]) {
        if let Some(t) = &mut self.twin {
            t.handle_datagram(path, payload, now);
        }
        self.settle(now);
    }

    /// What the shell's ARP probe found: the addresses someone else still answers for.
    pub fn handle_probe_result(&mut self, now: Instant, conflicts: Vec<std::net::IpAddr>) {
        if let Some(t) = &mut self.twin {
            t.handle_probe_result(conflicts, now);
        }
        self.settle(now);
    }

    /// The shell carried out an [`twin::AddressAction::Announce`]: the gratuitous ARP is out.
    /// The first after becoming active probes every upstream at once (shard 0 probes for the
    /// box), now that their answers come to this node.
    pub fn handle_addresses_announced(&mut self, now: Instant) {
        if std::mem::take(&mut self.probe_when_announced) {
            self.proxy.probe_upstreams_now();
            self.proxy.handle_timeout(now);
        }
        self.settle(now);
    }

    /// Spreads the box's SIP work over `shards` (SPEC §6): this node's proxy becomes shard 0,
    /// and shards 1 and up are [`shards::Shard`]s the shell runs, built with the same
    /// `shards`. From here on the node tells them the system state, the guard's end and the
    /// twin's role ([`poll_shard_command`](Self::poll_shard_command)), hands each one's change
    /// records to the others, and counts the sessions of all
    /// ([`handle_shard_report`](Self::handle_shard_report)). Call it once, before any traffic.
    ///
    /// Hot standby replicates one proxy's tables: a shell with a hot twin runs one shard.
    pub fn add_shards(&mut self, now: Instant, shards: proxy::Shards) {
        self.proxy.set_shard(0, shards.clone());
        self.remote.counts = vec![Counts::default(); shards.count() - 1];
        self.remote.in_flight = vec![0; shards.count() - 1];
        // Whatever state the shards were built in, they follow the node's from here.
        self.remote
            .broadcast(&ShardCommand::SystemState(self.machine.state()), None);
        if let Some(t) = &self.twin {
            self.remote.broadcast(
                &ShardCommand::Standby(t.role() == twin::Role::Standby),
                None,
            );
        }
        self.settle(now);
    }

    /// What shard `shard` (1 or more) reported.
    pub fn handle_shard_report(&mut self, now: Instant, shard: usize, report: ShardReport) {
        let Some(counts) = shard
            .checked_sub(1)
            .and_then(|i| self.remote.counts.get_mut(i))
        else {
            return;
        };
        match report {
            ShardReport::Counts(c) => {
                *counts = c;
                self.feed_load(now);
            }
            ShardReport::Change(record) => {
                self.proxy.apply_peer_change(now, record.clone());
                self.remote
                    .broadcast(&ShardCommand::Apply(record.clone()), Some(shard));
                // Numbered with the node's own: the twin holds the box's records.
                self.replicate(record, now);
            }
            ShardReport::InFlight(n) => {
                if let Some(slot) = self.remote.in_flight.get_mut(shard - 1) {
                    *slot = n;
                }
            }
            ShardReport::Upstream(note) => {
                self.proxy.apply_peer_upstream(now, note);
                self.remote
                    .broadcast(&ShardCommand::Upstream(note), Some(shard));
            }
        }
        self.settle(now);
    }

    /// The next command for one of the other shards, with its index.
    #[must_use]
    pub fn poll_shard_command(&mut self) -> Option<(usize, ShardCommand)> {
        self.remote.commands.pop_front()
    }

    /// One SIP message from the network.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.proxy.handle_input(now, input);
        self.settle(now);
    }

    /// A connection (TCP) or association (SCTP) ended. Every shard may hold parties reached
    /// over it (a connection carries the calls of many Call-IDs), so every shard hears it.
    pub fn handle_flow_closed(
        &mut self,
        now: Instant,
        listener: proxy::ListenerId,
        flow: proxy::FlowId,
    ) {
        self.proxy.handle_flow_closed(now, listener, flow);
        self.remote
            .broadcast(&ShardCommand::FlowClosed { listener, flow }, None);
        self.settle(now);
    }

    /// Time has passed: retransmissions, expiries, probes, the guard.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.proxy.handle_timeout(now);
        self.machine.handle_timeout(now);
        if let Some(t) = &mut self.twin {
            t.handle_timeout(now);
        }
        if let Some(s) = self.replication.as_mut().and_then(|r| r.session.as_mut()) {
            s.handle_timeout(now);
        }
        self.pump_stream(now);
    }

    /// `set-system-state offline [guard N]`: starts a drain (or moves its guard).
    pub fn request_offline(
        &mut self,
        now: Instant,
        guard: Option<Duration>,
        cause: Cause,
    ) -> Outcome {
        let outcome = self.machine.request_offline(now, guard, cause);
        self.settle(now);
        outcome
    }

    /// `set-system-state online`: aborts a drain, or leaves offline.
    pub fn request_online(&mut self, now: Instant, cause: Cause) -> Outcome {
        let outcome = self.machine.request_online(now, cause);
        self.settle(now);
        outcome
    }

    /// The button's long press (SPEC §4).
    pub fn toggle(&mut self, now: Instant, cause: Cause) -> Outcome {
        let outcome = self.machine.toggle(now, cause);
        self.settle(now);
        outcome
    }

    /// The next datagram or stream message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.proxy.poll_transmit()
    }

    /// Gives back a sent transmit's buffer, for a later message to be written into
    /// ([`proxy::Proxy::recycle`]); a shell that drops its transmits costs an allocation each.
    pub fn recycle(&mut self, bytes: Vec<u8>) {
        self.proxy.recycle(bytes);
    }

    /// The next connection or association to end gracefully.
    #[must_use]
    pub fn poll_close(&mut self) -> Option<proxy::Close> {
        self.proxy.poll_close()
    }

    /// The next keep-alive to send to the twin, on its path.
    #[must_use]
    pub fn poll_twin_transmit(&mut self) -> Option<twin::Transmit> {
        self.twin.as_mut()?.poll_transmit()
    }

    /// The next thing to do to the service addresses (probe, claim, announce, release), in
    /// order.
    #[must_use]
    pub fn poll_address_action(&mut self) -> Option<twin::AddressAction> {
        self.twin.as_mut()?.poll_action()
    }

    /// The twin's view for `show twin`; `None` without a twin.
    pub fn twin_status(&self, now: Instant) -> Option<twin::Status> {
        self.twin.as_ref().map(|t| t.status(now))
    }

    /// The next event for the shell.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.proxy.poll_timeout(),
            self.machine.poll_timeout(),
            self.twin.as_ref().and_then(twin::Twin::poll_timeout),
            self.replication
                .as_ref()
                .and_then(|r| r.session.as_ref())
                .and_then(replica::Session::poll_timeout),
            self.replication
                .as_ref()
                .and_then(|r| r.switchover.as_ref())
                .map(|s| {
                    if s.settle_over || self.forwards_in_flight() == 0 {
                        s.started + replication::SWITCHOVER_WAIT
                    } else {
                        s.started + replication::SWITCHOVER_SETTLE
                    }
                }),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn state(&self) -> SystemState {
        self.machine.state()
    }

    /// State, guard left and counts, for `show system-state`.
    pub fn snapshot(&self, now: Instant) -> system_state::Snapshot {
        self.machine.snapshot(now)
    }

    /// The proxy, read-only: its tables and counters for `show` commands.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Requests forwarded by any shard and not yet answered finally: what a switchover waits
    /// for.
    fn forwards_in_flight(&self) -> usize {
        self.proxy.forwards_in_flight() + self.remote.in_flight.iter().sum::<usize>()
    }

    /// The box's counts: the sessions of every shard, and the bindings (every shard holds
    /// them all).
    pub fn counts(&self) -> Counts {
        self.remote.add_to(self.proxy.counts())
    }

    /// Runs the chain between the two machines to its end: the proxy's counts feed the state
    /// machine, whose transitions feed the proxy, which may change the counts again.
    fn settle(&mut self, now: Instant) {
        loop {
            let mut load_changed = false;
            while let Some(event) = self.proxy.poll_event() {
                match event {
                    proxy::Event::CountsChanged(_) => load_changed = true,
                    // The state machine ends the drain from the counts (rule 10).
                    proxy::Event::DrainComplete => {}
                    proxy::Event::CloseConnections => {
                        self.events.push_back(Event::AcceptConnections(false));
                    }
                    proxy::Event::AcceptConnections => {
                        self.events.push_back(Event::AcceptConnections(true));
                    }
                    proxy::Event::Upstream(note) => {
                        self.remote.broadcast(&ShardCommand::Upstream(note), None);
                    }
                    proxy::Event::Change(record) => {
                        if !self.remote.counts.is_empty() {
                            self.remote
                                .broadcast(&ShardCommand::Apply(record.clone()), None);
                        }
                        self.replicate(record, now);
                    }
                    other => self.events.push_back(Event::Proxy(other)),
                }
            }
            if load_changed {
                self.feed_load(now);
            }
            let mut acted = false;
            while let Some(event) = self.machine.poll_event() {
                acted = true;
                match event {
                    system_state::Event::Transition(t) => {
                        // The proxy first: the next message must meet the new state.
                        self.proxy.set_system_state(t.to);
                        self.remote
                            .broadcast(&ShardCommand::SystemState(t.to), None);
                        self.events.push_back(Event::StateChanged(t));
                    }
                    system_state::Event::TerminateAll { .. } => {
                        let counts = self.counts();
                        self.events.push_back(Event::GuardExpired {
                            sessions: counts.active_sessions as u64,
                            registrations: counts.registrations as u64,
                        });
                        let reason = self.proxy.config().drain.guard_reason.clone();
                        self.proxy.terminate_all(now, &reason);
                        self.remote
                            .broadcast(&ShardCommand::TerminateAll(reason), None);
                    }
                }
            }
            if !acted && !load_changed {
                break;
            }
        }
        self.step_switchover(now);
        self.advertise(now);
        if let Some(t) = &mut self.twin {
            while let Some(event) = t.poll_event() {
                if let twin::Event::RoleChanged { to, .. } = event {
                    self.proxy.set_standby(to == twin::Role::Standby);
                    self.probe_when_announced = to == twin::Role::Active;
                    self.remote
                        .broadcast(&ShardCommand::Standby(to == twin::Role::Standby), None);
                }
                if let Some(r) = &mut self.replication {
                    if r.on_twin_event(&event, &self.proxy, now) {
                        t.set_ready(false, now);
                    }
                }
                self.events.push_back(Event::Twin(event));
            }
        }
        if let Some(r) = &mut self.replication {
            for event in std::mem::take(&mut r.events) {
                if matches!(event, replication::Event::Synced { .. }) {
                    if let Some(t) = &mut self.twin {
                        t.set_ready(true, now);
                    }
                }
                self.events.push_back(Event::Replication(event));
            }
        }
    }

    /// One change of any shard to the replication stream (written only while active).
    fn replicate(&mut self, record: proxy::ChangeRecord, now: Instant) {
        let active = self
            .twin
            .as_ref()
            .is_some_and(|t| t.role() == twin::Role::Active);
        if let Some(r) = &mut self.replication {
            r.record(record, active, now);
        }
    }

    /// Tells the twin machine what its keep-alives carry, when that changed.
    fn advertise(&mut self, now: Instant) {
        let counts = self.counts();
        let Some(t) = &mut self.twin else {
            return;
        };
        let advertised = twin::Advertised {
            state: match self.machine.state() {
                SystemState::Online => twin::PeerState::Online,
                SystemState::Draining => twin::PeerState::Draining,
                SystemState::Offline => twin::PeerState::Offline,
            },
            calls: u32::try_from(counts.active_sessions).unwrap_or(u32::MAX),
            registrations: u32::try_from(counts.registrations).unwrap_or(u32::MAX),
            replication_position: self.replication.as_ref().map_or(0, |r| {
                if t.role() == twin::Role::Active {
                    r.seq
                } else {
                    r.view(false, now).received_seq
                }
            }),
            ..twin::Advertised::default()
        };
        if self.advertised != Some(advertised) {
            self.advertised = Some(advertised);
            t.handle_advertised(advertised, now);
        }
    }

    fn feed_load(&mut self, now: Instant) {
        let counts = self.counts();
        self.machine.set_load(
            now,
            counts.active_sessions as u64,
            counts.registrations as u64,
        );
    }
}
