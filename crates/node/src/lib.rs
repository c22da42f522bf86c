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
//!   [`Node::handle_probe_result`] once for every [`twin::AddressAction::Probe`].
//! - Out: after every call above, drain [`Node::poll_transmit`], [`Node::poll_twin_transmit`],
//!   [`Node::poll_address_action`] and [`Node::poll_event`] until `None`, then re-arm the timer
//!   from [`Node::poll_timeout`].
//! - `now` must not go backwards; an earlier `now` counts as the latest seen (both machines
//!   already hold to that).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proxy::{Counts, Input, Proxy, Transmit};
use system_state::{Cause, Machine, Outcome, SystemState, Transition};

#[cfg(test)]
mod tests;

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
    /// What the twin's keep-alives last carried: told again only when it changes.
    advertised: Option<twin::Advertised>,
    events: VecDeque<Event>,
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
            advertised: None,
            events: VecDeque::new(),
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

    /// One SIP message from the network.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.proxy.handle_input(now, input);
        self.settle(now);
    }

    /// Time has passed: retransmissions, expiries, probes, the guard.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.proxy.handle_timeout(now);
        self.machine.handle_timeout(now);
        if let Some(t) = &mut self.twin {
            t.handle_timeout(now);
        }
        self.settle(now);
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

    pub fn counts(&self) -> Counts {
        self.proxy.counts()
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
                        self.events.push_back(Event::StateChanged(t));
                    }
                    system_state::Event::TerminateAll { .. } => {
                        let counts = self.proxy.counts();
                        self.events.push_back(Event::GuardExpired {
                            sessions: counts.active_sessions as u64,
                            registrations: counts.registrations as u64,
                        });
                        let reason = self.proxy.config().drain.guard_reason.clone();
                        self.proxy.terminate_all(now, &reason);
                    }
                }
            }
            if !acted && !load_changed {
                break;
            }
        }
        self.advertise(now);
        if let Some(t) = &mut self.twin {
            while let Some(event) = t.poll_event() {
                if let twin::Event::RoleChanged { to, .. } = event {
                    self.proxy.set_standby(to == twin::Role::Standby);
                }
                self.events.push_back(Event::Twin(event));
            }
        }
    }

    /// Tells the twin machine what its keep-alives carry, when that changed.
    fn advertise(&mut self, now: Instant) {
        let Some(t) = &mut self.twin else {
            return;
        };
        let counts = self.proxy.counts();
        let advertised = twin::Advertised {
            state: match self.machine.state() {
                SystemState::Online => twin::PeerState::Online,
                SystemState::Draining => twin::PeerState::Draining,
                SystemState::Offline => twin::PeerState::Offline,
            },
            calls: u32::try_from(counts.active_sessions).unwrap_or(u32::MAX),
            registrations: u32::try_from(counts.registrations).unwrap_or(u32::MAX),
            ..twin::Advertised::default()
        };
        if self.advertised != Some(advertised) {
            self.advertised = Some(advertised);
            t.handle_advertised(advertised, now);
        }
    }

    fn feed_load(&mut self, now: Instant) {
        let counts = self.proxy.counts();
        self.machine.set_load(
            now,
            counts.active_sessions as u64,
            counts.registrations as u64,
        );
    }
}
