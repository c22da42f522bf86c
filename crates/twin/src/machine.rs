//! The [`Twin`] state machine: failure detection, elections, takeovers and fencing.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::replay::{Fresh, ReplayWindow};
use crate::status::{LastTakeover, PathCounters, PathStatus, QueryCounters, Status, TwinView};
use crate::wire::{Keepalive, Kind, Phase, Sealer};
use crate::{
    AddressAction, Advertised, Config, DropReason, Event, PathId, PeerState, ReleaseError, Role,
    RoleCause, TakeoverCause, TakeoverReport, Transmit, MAX_INTERVAL, MAX_MISSES, MIN_INTERVAL,
};

/// When the gratuitous ARP rounds go out, from the claim: a burst tens of ms apart (one lost
/// ARP must not leave a switch pointing at the dead twin), then once more after a second for
/// caches that ignored the burst.
const ANNOUNCE_SCHEDULE: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(30),
    Duration::from_millis(60),
    Duration::from_millis(1000),
];
/// How long a probe may stay unanswered before the attempt counts as failed: RFC 5227 with
/// timers in tens of ms takes well under this; a shell that lost the probe must not leave the
/// node probing forever.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first wait after a probe conflict when the twin is silent; it doubles up to
/// [`MAX_RETRY_BACKOFF`]. (A twin that is alive and giving way is retried after one interval.)
const FIRST_RETRY_BACKOFF: Duration = Duration::from_secs(1);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(8);

/// The machine's timers; each has one slot in [`Timers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Next periodic keep-alive on every path.
    Beat,
    /// The link has been silent for `misses` intervals.
    LinkSilence,
    /// The second path has been silent for `misses` intervals.
    SecondSilence,
    /// The status query went unanswered.
    QueryDeadline,
    /// Next gratuitous ARP round.
    Announce,
    /// The probe went unanswered.
    ProbeDeadline,
    /// Retry a takeover whose probe found a conflict.
    ProbeRetry,
    /// Node 1 with `preempt` takes its addresses back.
    Preempt,
}

impl Timer {
    const ALL: [Timer; 8] = [
        Timer::Beat,
        Timer::LinkSilence,
        Timer::SecondSilence,
        Timer::QueryDeadline,
        Timer::Announce,
        Timer::ProbeDeadline,
        Timer::ProbeRetry,
        Timer::Preempt,
    ];

    fn silence(path: PathId) -> Timer {
        match path {
            PathId::Link => Timer::LinkSilence,
            PathId::Second => Timer::SecondSilence,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct Timers([Option<Instant>; Timer::ALL.len()]);

impl Timers {
    fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer.index()] = Some(at);
    }

    fn clear(&mut self, timer: Timer) {
        self.0[timer.index()] = None;
    }

    fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer.index()]
    }

    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    /// The first expired timer in table order (so silences are seen before the query
    /// deadline they lead to), cleared.
    fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        let timer = Timer::ALL
            .into_iter()
            .find(|t| self.get(*t).is_some_and(|at| at <= now))?;
        self.clear(timer);
        Some(timer)
    }
}

#[derive(Debug, Default)]
struct PathState {
    configured: bool,
    last_heard: Option<Instant>,
    /// Silent for the detection time: what the failure detector acts on.
    down: bool,
    /// Down for one more interval as well: the operator was told ([`Event::PathDown`]). Two
    /// keep-alives lost in a row race the silence timer on a lossy path; the alarm waits out
    /// that race instead of flapping, and the detector does not wait at all.
    alarmed: bool,
    counters: PathCounters,
}

/// Whether the twin is heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contact {
    /// Not heard since start, and not declared lost yet.
    Unknown,
    /// Heard continuously since then (no loss declared).
    Alive { since: Instant },
    /// Silent everywhere and the status query unanswered.
    Lost,
}

/// The twin as its last valid keep-alive described it.
#[derive(Debug, Clone)]
struct Peer {
    last: Keepalive,
    heard_at: Instant,
}

/// A takeover under way: probing, or backing off after a conflict.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    cause: TakeoverCause,
    decided_at: Instant,
    twin_last_heard: Option<Instant>,
    probe_started: Instant,
    probes: u32,
    backoff: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Announcing {
    claimed_at: Instant,
    next_round: usize,
}

/// One node's side of the twin pair.
///
/// Fed by:
/// - [`Twin::handle_datagram`] with every datagram received on a path's socket,
/// - [`Twin::handle_timeout`] whenever the clock reaches [`Twin::poll_timeout`],
/// - [`Twin::handle_advertised`] when what the keep-alives carry changes (system state, counts),
/// - [`Twin::handle_probe_result`] once for every [`AddressAction::Probe`], with the addresses
///   someone else still answers for (empty: free to claim),
/// - [`Twin::handle_release_request`] when the operator tells an active node to step down.
///
/// After any of these the shell drains [`Twin::poll_transmit`] (send each on its path),
/// [`Twin::poll_action`] (apply each to the interfaces, in order) and [`Twin::poll_event`]
/// (logs, alarms, the `node` crate), then arms its timer at [`Twin::poll_timeout`] (there is
/// always one: the next keep-alive). The queues grow until drained, so drain them after every
/// call. Every call takes `now`; time must not go backwards (an earlier `now` is treated as the
/// latest one seen). The first keep-alives go out at the first [`Twin::handle_timeout`], due at
/// the `now` given to [`Twin::new`].
#[derive(Debug)]
pub struct Twin {
    config: Config,
    sealer: Sealer,
    epoch: u64,
    started: Instant,
    latest: Instant,
    next_seq: u64,
    term: u64,
    phase: Phase,
    /// The operator released this node; it does not win elections until the twin is active.
    standing_down: bool,
    /// This node holds its twin's calls and registrations (a hot standby in sync, or a node
    /// that replicates nothing): preemption waits for it.
    ready: bool,
    attempt: Option<Attempt>,
    /// Probes asked for and not answered yet. The shell answers them in order, so only the
    /// answer that brings this to zero is about the current attempt; earlier ones belong to
    /// attempts abandoned meanwhile.
    probes_pending: u32,
    announcing: Option<Announcing>,
    advertised: Advertised,
    paths: [PathState; 2],
    window: ReplayWindow,
    contact: Contact,
    peer: Option<Peer>,
    /// The nonce of the last status query, until its answer comes (any valid keep-alive stops
    /// the takeover; this only counts the answers).
    query_nonce: Option<u64>,
    queries: QueryCounters,
    last_takeover: Option<(Instant, TakeoverReport)>,
    timers: Timers,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<AddressAction>,
    events: VecDeque<Event>,
}

impl Twin {
    /// A node that has just started: standby, term 0, hearing no one yet. `boot_epoch` must be
    /// greater than at any earlier start. Out-of-range config values are clamped (see
    /// [`Config::validate`]); a node id other than 1 or 2 acts as node 2.
    pub fn new(mut config: Config, boot_epoch: u64, now: Instant) -> Twin {
        config.interval = config.interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        config.misses = config.misses.clamp(1, MAX_MISSES);
        let sealer = Sealer::new(config.key.keyed.clone());
        let mut paths: [PathState; 2] = Default::default();
        let mut timers = Timers::default();
        for path in config.paths() {
            paths[path.index()].configured = true;
            timers.set(Timer::silence(path), now + config.interval * config.misses);
        }
        timers.set(Timer::Beat, now);
        Twin {
            config,
            sealer,
            epoch: boot_epoch,
            started: now,
            latest: now,
            next_seq: 0,
            term: 0,
            phase: Phase::Standby,
            standing_down: false,
            ready: true,
            attempt: None,
            probes_pending: 0,
            announcing: None,
            advertised: Advertised::default(),
            paths,
            window: ReplayWindow::default(),
            contact: Contact::Unknown,
            peer: None,
            query_nonce: None,
            queries: QueryCounters::default(),
            last_takeover: None,
            timers,
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ---- inputs -------------------------------------------------------------------------

    /// A datagram received on `path`.
    pub fn handle_datagram(&mut self, path: PathId, payload: &[u8], now: Instant) {
        let now = self.clock(now);
        if !self.paths[path.index()].configured {
            // The shell has no socket for it; nothing to account it to.
            return;
        }
        let msg = match self.sealer.open(payload) {
            Ok(msg) => msg,
            Err(reason) => return self.drop_datagram(path, reason),
        };
        if msg.node_id == self.config.node_id.0 {
            return self.drop_datagram(path, DropReason::Reflected);
        }
        if msg.node_id != self.config.node_id.twin().0 {
            return self.drop_datagram(path, DropReason::UnknownNode);
        }
        match self.window.accept(msg.epoch, msg.seq) {
            Err(_) => return self.drop_datagram(path, DropReason::Replayed),
            Ok(Fresh::NewEpoch { previous: Some(_) }) => self
                .events
                .push_back(Event::TwinRestarted { epoch: msg.epoch }),
            Ok(_) => {}
        }
        self.paths[path.index()].counters.received += 1;
        self.heard_on(path, now);

        match msg.kind {
            Kind::Beat => {}
            Kind::Query { nonce } => {
                self.queries.answered += 1;
                self.send(path, Kind::Answer { nonce });
            }
            Kind::Answer { nonce } => {
                if self.query_nonce == Some(nonce) {
                    self.queries.answers_received += 1;
                    self.query_nonce = None;
                }
            }
        }
        // The two paths do not keep each other's order: a keep-alive older than the one already
        // applied (the faster path brought a newer one) still proves its path alive and gets
        // its query answered, but its view of the twin is out of date and must not undo the
        // newer one (a stale "standby" would start an election against an active twin).
        let outdated = self
            .peer
            .as_ref()
            .is_some_and(|p| p.last.epoch == msg.epoch && p.last.seq > msg.seq);
        if outdated {
            self.reconsider(now);
            return;
        }
        let their_term = msg.term;
        let they_claim = msg.phase != Phase::Standby;
        let they_are_active = msg.phase == Phase::Active;
        self.peer = Some(Peer {
            last: msg,
            heard_at: now,
        });
        self.fence(their_term, they_claim);
        if they_are_active && self.phase == Phase::Standby {
            // The operator's wish (the twin serving) is fulfilled.
            self.standing_down = false;
        }
        self.reconsider(now);
    }

    /// The clock reached (or passed) [`Twin::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        while let Some(timer) = self.timers.take_expired(now) {
            match timer {
                Timer::Beat => self.on_beat(now),
                Timer::LinkSilence => self.on_silence(PathId::Link, now),
                Timer::SecondSilence => self.on_silence(PathId::Second, now),
                Timer::QueryDeadline => self.on_query_deadline(now),
                Timer::Announce => self.on_announce(),
                Timer::ProbeDeadline => {
                    if self.phase == Phase::Probing {
                        self.events.push_back(Event::ProbeUnanswered);
                        self.probes_pending = 0;
                        self.probe_failed(now);
                    }
                }
                Timer::ProbeRetry => self.on_probe_retry(now),
                Timer::Preempt => {
                    if self.attempt.is_none() && self.preempt_applies() {
                        self.begin_takeover(TakeoverCause::Preempt, now);
                    }
                }
            }
        }
    }

    /// What the keep-alives carry from now on.
    pub fn handle_advertised(&mut self, adv: Advertised, now: Instant) {
        let now = self.clock(now);
        self.advertised = adv;
        self.reconsider(now);
    }

    /// The answer to an [`AddressAction::Probe`], in the order they were asked for: the
    /// addresses someone still answers for. The answer to a probe of an abandoned attempt is
    /// ignored.
    pub fn handle_probe_result(&mut self, conflicts: Vec<IpAddr>, now: Instant) {
        let now = self.clock(now);
        self.probes_pending = self.probes_pending.saturating_sub(1);
        if self.probes_pending > 0 || self.phase != Phase::Probing {
            return;
        }
        let Some(attempt) = self.attempt else {
            return;
        };
        self.timers.clear(Timer::ProbeDeadline);
        if !conflicts.is_empty() {
            self.events.push_back(Event::ProbeConflict(conflicts));
            self.probe_failed(now);
            return;
        }
        let addresses = self.config.service_addresses.clone();
        self.actions
            .push_back(AddressAction::Claim(addresses.clone()));
        self.actions.push_back(AddressAction::Announce(addresses));
        self.announcing = Some(Announcing {
            claimed_at: now,
            next_round: 1,
        });
        self.timers.set(Timer::Announce, now + ANNOUNCE_SCHEDULE[1]);
        self.phase = Phase::Active;
        self.attempt = None;
        self.standing_down = false;
        let report = TakeoverReport {
            cause: attempt.cause,
            term: self.term,
            twin_silent_for: attempt
                .twin_last_heard
                .map(|heard| attempt.decided_at.saturating_duration_since(heard)),
            decision_to_claim: now.saturating_duration_since(attempt.decided_at),
            probe: now.saturating_duration_since(attempt.probe_started),
            attempts: attempt.probes,
        };
        self.last_takeover = Some((now, report));
        self.events.push_back(Event::RoleChanged {
            from: Role::Standby,
            to: Role::Active,
            term: self.term,
            cause: RoleCause::Takeover(attempt.cause),
        });
        self.events.push_back(Event::TakeoverDone(report));
        self.send_beats();
    }

    /// Whether this node holds its twin's state (SPEC §7, return): a restarted hot standby is
    /// not ready until its twin's snapshot is in, and does not take its addresses back by
    /// preemption before. A failure takeover does not wait: serving without the calls beats
    /// not serving.
    pub fn set_ready(&mut self, ready: bool, now: Instant) {
        let now = self.clock(now);
        if ready != self.ready {
            self.ready = ready;
            self.reconsider(now);
        }
    }

    /// The operator tells this node to give its addresses away: an active node releases them
    /// (a probing one gives up) and does not win an election until its twin is active, so the
    /// twin takes over with a higher term. Refused while the twin is not heard: that would
    /// leave the addresses unserved. Should the twin go silent later, the failure detector
    /// takes over as usual: serving beats obeying.
    pub fn handle_release_request(&mut self, now: Instant) -> Result<(), ReleaseError> {
        let now = self.clock(now);
        if self.phase == Phase::Standby && self.attempt.is_none() {
            return Ok(());
        }
        if !matches!(self.contact, Contact::Alive { .. }) {
            return Err(ReleaseError::TwinNotHeard);
        }
        self.standing_down = true;
        match self.phase {
            Phase::Active => self.release(RoleCause::Operator),
            Phase::Probing | Phase::Standby => self.abandon(),
        }
        self.send_beats();
        self.reconsider(now);
        Ok(())
    }

    // ---- outputs ------------------------------------------------------------------------

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing to do to the service addresses.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<AddressAction> {
        self.actions.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Twin::handle_timeout`] must be called next. There is always a keep-alive due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Whether this node holds the service addresses.
    pub fn role(&self) -> Role {
        match self.phase {
            Phase::Active => Role::Active,
            Phase::Standby | Phase::Probing => Role::Standby,
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// True from the claim to the release.
    pub fn owns_addresses(&self) -> bool {
        self.phase == Phase::Active
    }

    /// Everything `show twin` prints, with ages relative to `now`.
    pub fn status(&self, now: Instant) -> Status {
        let interval = self.config.interval;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let paths: Vec<PathStatus> = self
            .config
            .paths()
            .map(|path| {
                let state = &self.paths[path.index()];
                let silent_for =
                    now.saturating_duration_since(state.last_heard.unwrap_or(self.started));
                PathStatus {
                    path,
                    up: !state.down,
                    last_heard_ms: state
                        .last_heard
                        .map(|at| ms(now.saturating_duration_since(at))),
                    misses: u64::try_from(silent_for.as_nanos() / interval.as_nanos())
                        .unwrap_or(u64::MAX),
                    counters: state.counters,
                }
            })
            .collect();
        let mut totals = PathCounters::default();
        for path in &paths {
            totals.add(&path.counters);
        }
        Status {
            node_id: self.config.node_id.0,
            role: self.role(),
            phase: self.phase,
            standing_down: self.standing_down,
            state: self.advertised.state,
            term: self.term,
            epoch: self.epoch,
            owns_addresses: self.owns_addresses(),
            twin: self.peer.as_ref().map(|peer| TwinView {
                node_id: peer.last.node_id,
                role: if peer.last.phase == Phase::Active {
                    Role::Active
                } else {
                    Role::Standby
                },
                phase: peer.last.phase,
                standing_down: peer.last.standing_down,
                state: peer.last.state,
                term: peer.last.term,
                epoch: peer.last.epoch,
                calls: peer.last.calls,
                registrations: peer.last.registrations,
                health: peer.last.health,
                replication_position: peer.last.replication_position,
                alive: matches!(self.contact, Contact::Alive { .. }),
                last_heard_ms: ms(now.saturating_duration_since(peer.heard_at)),
            }),
            paths,
            totals,
            queries: self.queries,
            last_takeover: self.last_takeover.map(|(claimed_at, report)| LastTakeover {
                cause: report.cause,
                term: report.term,
                ago_ms: ms(now.saturating_duration_since(claimed_at)),
                twin_silent_ms: report.twin_silent_for.map(ms),
                decision_to_claim_ms: ms(report.decision_to_claim),
                probe_ms: ms(report.probe),
                attempts: report.attempts,
            }),
        }
    }

    // ---- failure detection --------------------------------------------------------------

    fn clock(&mut self, now: Instant) -> Instant {
        self.latest = self.latest.max(now);
        self.latest
    }

    fn silence_limit(&self) -> Duration {
        self.config.interval * self.config.misses
    }

    fn drop_datagram(&mut self, path: PathId, reason: DropReason) {
        self.paths[path.index()].counters.count_drop(reason);
        self.events.push_back(Event::Dropped { path, reason });
    }

    /// A valid, fresh datagram came on `path`: the path and the twin are alive.
    fn heard_on(&mut self, path: PathId, now: Instant) {
        let limit = self.silence_limit();
        let state = &mut self.paths[path.index()];
        state.last_heard = Some(now);
        state.down = false;
        if state.alarmed {
            state.alarmed = false;
            self.events.push_back(Event::PathUp(path));
        }
        self.timers.set(Timer::silence(path), now + limit);
        self.timers.clear(Timer::QueryDeadline);
        if !matches!(self.contact, Contact::Alive { .. }) {
            self.contact = Contact::Alive { since: now };
            self.events.push_back(Event::TwinFound);
        }
    }

    fn on_silence(&mut self, path: PathId, now: Instant) {
        let state = &mut self.paths[path.index()];
        if !state.configured || state.down {
            return;
        }
        state.down = true;
        let all_down = self.paths.iter().all(|p| !p.configured || p.down);
        if all_down && self.contact != Contact::Lost {
            // Ask once on every path before concluding anything: the twin may only have been
            // unlucky with its keep-alives.
            let nonce = self.next_seq;
            self.query_nonce = Some(nonce);
            for path in self.config.paths() {
                self.send(path, Kind::Query { nonce });
                self.queries.sent += 1;
            }
            self.timers
                .set(Timer::QueryDeadline, now + self.config.interval);
        }
    }

    fn on_query_deadline(&mut self, now: Instant) {
        self.query_nonce = None;
        self.contact = Contact::Lost;
        self.events.push_back(Event::TwinLost);
        self.reconsider(now);
        if self.phase == Phase::Standby {
            self.begin_takeover(TakeoverCause::TwinSilent, now);
        }
    }

    // ---- keep-alives --------------------------------------------------------------------

    fn on_beat(&mut self, now: Instant) {
        self.send_beats();
        self.timers.set(Timer::Beat, now + self.config.interval);
        // The path alarms, one interval after the detector's verdict (see `PathState::alarmed`).
        let limit = self.silence_limit() + self.config.interval;
        for path in self.config.paths() {
            let state = &mut self.paths[path.index()];
            let silent_since = state.last_heard.unwrap_or(self.started);
            if state.down && !state.alarmed && now >= silent_since + limit {
                state.alarmed = true;
                self.events.push_back(Event::PathDown(path));
            }
        }
    }

    /// A keep-alive on every path now: the periodic one, or an extra one when the term or phase
    /// changed, so that fencing reaches the twin in one latency rather than one interval.
    fn send_beats(&mut self) {
        for path in self.config.paths() {
            self.send(path, Kind::Beat);
        }
    }

    fn send(&mut self, path: PathId, kind: Kind) {
        let body = Keepalive {
            node_id: self.config.node_id.0,
            epoch: self.epoch,
            seq: self.next_seq,
            term: self.term,
            phase: self.phase,
            standing_down: self.standing_down,
            state: self.advertised.state,
            calls: self.advertised.calls,
            registrations: self.advertised.registrations,
            health: self.advertised.health,
            replication_position: self.advertised.replication_position,
            kind,
        };
        self.next_seq += 1;
        self.paths[path.index()].counters.sent += 1;
        self.transmits.push_back(Transmit {
            path,
            payload: self.sealer.seal(&body),
        });
    }

    // ---- ownership ----------------------------------------------------------------------

    /// Fencing, on every valid keep-alive: a higher term wins; at equal terms, when both claim,
    /// node 1 wins. The loser releases (or abandons its probe) at once.
    fn fence(&mut self, their_term: u64, they_claim: bool) {
        let our_term = self.term;
        let higher = their_term > our_term;
        let tie_lost = their_term == our_term && they_claim && self.config.node_id.0 != 1;
        if higher {
            self.term = their_term;
        }
        if !(higher || tie_lost) {
            return;
        }
        match self.phase {
            Phase::Active => {
                self.release(RoleCause::Fenced);
                self.events.push_back(Event::Yielded {
                    our_term,
                    their_term,
                });
            }
            Phase::Probing => {
                self.abandon();
                self.events.push_back(Event::TakeoverAbandoned {
                    our_term,
                    their_term,
                });
            }
            Phase::Standby => return,
        }
        self.send_beats();
    }

    fn release(&mut self, cause: RoleCause) {
        self.phase = Phase::Standby;
        self.actions.push_back(AddressAction::Release(
            self.config.service_addresses.clone(),
        ));
        self.announcing = None;
        self.timers.clear(Timer::Announce);
        self.events.push_back(Event::RoleChanged {
            from: Role::Active,
            to: Role::Standby,
            term: self.term,
            cause,
        });
    }

    fn abandon(&mut self) {
        self.phase = Phase::Standby;
        self.attempt = None;
        self.timers.clear(Timer::ProbeRetry);
        self.timers.clear(Timer::ProbeDeadline);
    }

    /// Whether the twin, heard right now, is standby and we should be the one to take over.
    fn wins_election(&self) -> bool {
        let (Contact::Alive { .. }, Some(peer)) = (self.contact, &self.peer) else {
            return false;
        };
        if peer.last.phase != Phase::Standby {
            return false;
        }
        let rank = |standing_down: bool, state: PeerState, node_id: u8| {
            (!standing_down, state == PeerState::Online, node_id == 1)
        };
        rank(
            self.standing_down,
            self.advertised.state,
            self.config.node_id.0,
        ) > rank(peer.last.standing_down, peer.last.state, peer.last.node_id)
    }

    fn preempt_applies(&self) -> bool {
        let Some(peer) = &self.peer else {
            return false;
        };
        self.config.preempt
            && self.ready
            && self.config.node_id.0 == 1
            && self.phase == Phase::Standby
            && !self.standing_down
            && self.advertised.state == PeerState::Online
            && matches!(self.contact, Contact::Alive { .. })
            && peer.last.phase == Phase::Active
    }

    /// Re-evaluates the decisions that depend on the twin's and our own advertised state: an
    /// election, and arming or disarming preemption. A pending retry is left to its timer.
    fn reconsider(&mut self, now: Instant) {
        if self.phase == Phase::Standby && self.attempt.is_none() && self.wins_election() {
            self.begin_takeover(TakeoverCause::Election, now);
        }
        if self.attempt.is_none() && self.preempt_applies() {
            if self.timers.get(Timer::Preempt).is_none() {
                let since = match self.contact {
                    Contact::Alive { since } => since,
                    Contact::Unknown | Contact::Lost => now,
                };
                self.timers
                    .set(Timer::Preempt, since + self.config.detection_time());
            }
        } else {
            self.timers.clear(Timer::Preempt);
        }
    }

    fn on_probe_retry(&mut self, now: Instant) {
        let Some(attempt) = self.attempt else {
            return;
        };
        if self.phase != Phase::Standby {
            return;
        }
        // Retry only while a reason to take over still holds; otherwise drop the attempt.
        let reason = if self.contact == Contact::Lost {
            Some(TakeoverCause::TwinSilent)
        } else if self.wins_election() {
            Some(TakeoverCause::Election)
        } else if self.preempt_applies() {
            Some(TakeoverCause::Preempt)
        } else {
            None
        };
        match reason {
            Some(cause) => {
                self.attempt = Some(Attempt { cause, ..attempt });
                self.begin_takeover(cause, now);
            }
            None => {
                self.attempt = None;
                self.reconsider(now);
            }
        }
    }

    /// Raises the term above any heard, tells the twin at once, and probes the addresses. A
    /// retry keeps its term while that is still the highest.
    fn begin_takeover(&mut self, cause: TakeoverCause, now: Instant) {
        if self.phase != Phase::Standby {
            return;
        }
        let twin_term = self.peer.as_ref().map_or(0, |p| p.last.term);
        let attempt = match self.attempt {
            Some(retry) => {
                if self.term <= twin_term {
                    self.term = twin_term + 1;
                }
                Attempt {
                    probe_started: now,
                    probes: retry.probes + 1,
                    ..retry
                }
            }
            None => {
                self.term = self.term.max(twin_term) + 1;
                Attempt {
                    cause,
                    decided_at: now,
                    twin_last_heard: self.peer.as_ref().map(|p| p.heard_at),
                    probe_started: now,
                    probes: 1,
                    // A twin that is alive and giving way (an election after a release, or
                    // preemption) removes its addresses a moment after it says so: a conflict
                    // then is that moment, and the retry comes after one interval. A conflict
                    // after a silent twin is someone else, and waits longer.
                    backoff: match cause {
                        TakeoverCause::TwinSilent => FIRST_RETRY_BACKOFF,
                        TakeoverCause::Election | TakeoverCause::Preempt => {
                            self.config.interval.min(FIRST_RETRY_BACKOFF)
                        }
                    },
                }
            }
        };
        self.attempt = Some(attempt);
        self.phase = Phase::Probing;
        self.timers.clear(Timer::ProbeRetry);
        self.timers.clear(Timer::Preempt);
        self.events.push_back(Event::TakeoverStarted {
            cause,
            term: self.term,
        });
        self.probes_pending += 1;
        self.timers.set(Timer::ProbeDeadline, now + PROBE_TIMEOUT);
        self.actions
            .push_back(AddressAction::Probe(self.config.service_addresses.clone()));
        self.send_beats();
    }

    /// Back to standby; the attempt is retried after a back-off if its reason still holds.
    fn probe_failed(&mut self, now: Instant) {
        let Some(mut attempt) = self.attempt else {
            return;
        };
        self.phase = Phase::Standby;
        self.timers.set(Timer::ProbeRetry, now + attempt.backoff);
        attempt.backoff = (attempt.backoff * 2).min(MAX_RETRY_BACKOFF);
        self.attempt = Some(attempt);
        self.send_beats();
    }

    fn on_announce(&mut self) {
        let Some(announcing) = self.announcing.as_mut() else {
            return;
        };
        self.actions.push_back(AddressAction::Announce(
            self.config.service_addresses.clone(),
        ));
        announcing.next_round += 1;
        match ANNOUNCE_SCHEDULE.get(announcing.next_round) {
            Some(offset) => {
                let at = announcing.claimed_at + *offset;
                self.timers.set(Timer::Announce, at);
            }
            None => self.announcing = None,
        }
    }
}
