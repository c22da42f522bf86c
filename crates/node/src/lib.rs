//! One sans-IO core for the whole node: the SIP proxy and the system-state machine composed,
//! so that the daemon's engine loop only pumps bytes, time and commands in and outputs out.
//!
//! What the composition decides (and no shell may decide instead):
//! - the proxy's counts feed the drain: the last call or binding to go ends it (SPEC §2 rule
//!   10) inside the same `handle_*` call that removed it;
//! - each transition reaches the proxy before the next input is judged: a message after the
//!   one that ended a drain already meets an offline box;
//! - the guard's expiry (rule 11) makes the proxy end every dialog and drop every binding,
//!   before the transition to offline is reported.
//!
//! It is not for I/O: persisting the operator's intent, logging, the panel and the transports
//! follow the [`Event`]s it reports.
//!
//! # Contract
//! - In: [`Node::handle_input`] for every SIP message (a datagram or a framed stream message),
//!   [`Node::handle_timeout`] when [`Node::poll_timeout`] has come (early or late is harmless),
//!   [`Node::request_offline`] / [`Node::request_online`] / [`Node::toggle`] for the operator's
//!   and the button's commands.
//! - Out: after every call above, drain [`Node::poll_transmit`] and [`Node::poll_event`] until
//!   `None`, then re-arm the timer from [`Node::poll_timeout`].
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
            events: VecDeque::new(),
        };
        // The machine needs a first count before it can end a drain restored at start.
        node.feed_load(now);
        node.settle(now);
        node
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

    /// The next event for the shell.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.proxy.poll_timeout(), self.machine.poll_timeout()]
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
                return;
            }
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
