//! The appliance's system state: online, draining, offline (SPEC §2).
//!
//! This crate decides *when* the state changes: operator and button commands, the drain ending
//! when the last session and registration are gone (rule 10), and the guard timer ending it by
//! force (rule 11). It is sans-IO: time comes in as a `std::time::Instant` parameter (never read
//! from the clock here), and what the owner must do comes out as [`Event`]s. [`persist`] holds
//! the small file that keeps the operator's intent across restarts.
//!
//! Not here: what draining means for SIP (the `proxy` crate applies rules 1–9), ending dialogs
//! (the owner does that on [`Event::TerminateAll`]), LEDs, logs and the twin (they follow the
//! events).

pub mod persist;

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The longest guard a drain may have: a week. The control socket refuses a longer one (it is a
/// typo or an attack, and `Instant + Duration` panics on overflow); the machine also clamps
/// whatever it is given to this, so no guard can overflow the clock.
pub const MAX_GUARD: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where the appliance stands in service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemState {
    /// Serving: new calls and registrations accepted.
    Online,
    /// Becoming offline: accepted calls finish, new ones are turned away (SPEC §2).
    Draining,
    /// Out of service for SIP; management keeps working.
    Offline,
}

impl SystemState {
    /// The name operators see (`online`, `draining`, `offline`).
    pub fn as_str(self) -> &'static str {
        match self {
            SystemState::Online => "online",
            SystemState::Draining => "draining",
            SystemState::Offline => "offline",
        }
    }
}

impl std::fmt::Display for SystemState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened: shown to operators and written to the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// A command on the console, `sbcctl` or the control socket.
    Operator,
    /// A long press of the maintenance button.
    Button,
    /// The twin asked (switchover, or a peer-driven change).
    Twin,
    /// Rule 10: no active session and no registration left while draining.
    Drained,
    /// Rule 11: the guard timer expired while draining.
    GuardExpired,
    /// The state read back from disk at start.
    Restored,
}

impl Cause {
    /// The name used in events and logs (`operator`, `guard-expired`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Operator => "operator",
            Cause::Button => "button",
            Cause::Twin => "twin",
            Cause::Drained => "drained",
            Cause::GuardExpired => "guard-expired",
            Cause::Restored => "restored",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state, as reported to every follower (journal, console, LEDs, twin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: SystemState,
    pub to: SystemState,
    pub cause: Cause,
    pub at: Instant,
}

/// What the machine tells its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The state changed. The owner persists [`persist::Intent::of`]`(to)`, tells the proxy,
    /// the panel, the console and the twin.
    Transition(Transition),
    /// Rule 11: the guard expired with work left. The owner ends every remaining dialog (BYE to
    /// both parties with a `Reason` header) and drops every remaining binding (de-registering it
    /// at the core). Always followed by the transition to offline.
    TerminateAll { at: Instant },
}

/// What a command did, for the answer to the operator. Events are the authority; this only
/// spares the caller from inspecting them to word a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The state changed (events were queued).
    Changed,
    /// Already draining: the guard deadline was moved to the one given.
    GuardChanged,
    /// Nothing to do: the box already is (or is already going) where it was asked.
    Unchanged,
}

/// Active INVITE sessions and live registrations, as counted by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Load {
    pub active_sessions: u64,
    pub registrations: u64,
}

impl Load {
    fn is_zero(self) -> bool {
        self.active_sessions == 0 && self.registrations == 0
    }
}

/// A view of the machine for `show system-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub state: SystemState,
    /// When the current state was entered.
    pub since: Instant,
    /// Time left before the guard ends the drain (only while draining).
    pub guard_remaining: Option<Duration>,
    /// The last counts given with [`Machine::set_load`], if any.
    pub load: Option<Load>,
}

/// The online / draining / offline state machine.
///
/// # Contract
///
/// - Commands in: [`request_offline`](Self::request_offline) (starts a drain),
///   [`request_online`](Self::request_online) (returns at once, aborting a drain),
///   [`toggle`](Self::toggle) (the maintenance button's long press).
/// - Counts in: [`set_load`](Self::set_load) whenever the proxy's counts change (and once at
///   start). Until the first call the counts are unknown, and a drain waits for them rather than
///   declaring itself done.
/// - Time in: [`handle_timeout`](Self::handle_timeout) when the instant returned by
///   [`poll_timeout`](Self::poll_timeout) has come (calling it early or late is harmless).
/// - Out: after every call above, drain [`poll_event`](Self::poll_event) until `None`.
///
/// `now` must not go backwards between calls; an earlier `now` is treated as the latest one
/// seen, so a clock hiccup cannot shorten or lengthen a guard.
#[derive(Debug, Clone)]
pub struct Machine {
    state: SystemState,
    since: Instant,
    /// When the guard ends the drain; set only while draining.
    drain_deadline: Option<Instant>,
    default_guard: Duration,
    load: Option<Load>,
    latest_now: Instant,
    events: VecDeque<Event>,
}

impl Machine {
    /// A machine in `initial` since `now` (use [`persist::restore`] to choose it at start).
    /// `default_guard` is `[drain] guard_secs`, used when a drain is asked without a guard.
    ///
    /// A `Draining` initial state starts a drain with the default guard: there is no other
    /// sensible deadline for it.
    pub fn new(now: Instant, initial: SystemState, default_guard: Duration) -> Machine {
        Machine {
            state: initial,
            since: now,
            drain_deadline: (initial == SystemState::Draining)
                .then(|| deadline(now, default_guard)),
            default_guard,
            load: None,
            latest_now: now,
            events: VecDeque::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> SystemState {
        self.state
    }

    /// State, since when, guard time left, counts.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let now = now.max(self.latest_now);
        Snapshot {
            state: self.state,
            since: self.since,
            guard_remaining: self
                .drain_deadline
                .map(|d| d.saturating_duration_since(now)),
            load: self.load,
        }
    }

    /// Starts a drain (online → draining), ending at most `guard` from now (the configured guard
    /// when `None`). While already draining, a given guard moves the deadline to `now + guard`
    /// (an operator shortening or extending the drain); without one nothing changes. Offline
    /// stays offline.
    pub fn request_offline(
        &mut self,
        now: Instant,
        guard: Option<Duration>,
        cause: Cause,
    ) -> Outcome {
        let now = self.advance(now);
        match self.state {
            SystemState::Online => {
                self.enter(now, SystemState::Draining, cause);
                self.drain_deadline = Some(deadline(now, guard.unwrap_or(self.default_guard)));
                // An idle box has nothing to wait for (rule 10), and a zero guard is already due.
                self.check_drained(now);
                self.handle_timeout(now);
                Outcome::Changed
            }
            SystemState::Draining => match guard {
                Some(g) => {
                    self.drain_deadline = Some(deadline(now, g));
                    self.handle_timeout(now);
                    Outcome::GuardChanged
                }
                None => Outcome::Unchanged,
            },
            SystemState::Offline => Outcome::Unchanged,
        }
    }

    /// Returns to online at once from draining (aborting the drain) or offline.
    pub fn request_online(&mut self, now: Instant, cause: Cause) -> Outcome {
        let now = self.advance(now);
        if self.state == SystemState::Online {
            return Outcome::Unchanged;
        }
        self.enter(now, SystemState::Online, cause);
        Outcome::Changed
    }

    /// The button's long press (SPEC §4): online → draining with the configured guard;
    /// draining or offline → online.
    pub fn toggle(&mut self, now: Instant, cause: Cause) -> Outcome {
        match self.state {
            SystemState::Online => self.request_offline(now, None, cause),
            SystemState::Draining | SystemState::Offline => self.request_online(now, cause),
        }
    }

    /// The proxy's counts. While draining, both at zero end the drain (rule 10).
    pub fn set_load(&mut self, now: Instant, active_sessions: u64, registrations: u64) {
        let now = self.advance(now);
        self.load = Some(Load {
            active_sessions,
            registrations,
        });
        self.check_drained(now);
    }

    /// Ends the drain when the guard has expired (rule 11): [`Event::TerminateAll`], then
    /// offline.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        if let (SystemState::Draining, Some(deadline)) = (self.state, self.drain_deadline) {
            if now >= deadline {
                self.events.push_back(Event::TerminateAll { at: now });
                self.enter(now, SystemState::Offline, Cause::GuardExpired);
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called: the guard deadline
    /// while draining, otherwise never.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.drain_deadline
    }

    /// The next thing the owner must act on, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn advance(&mut self, now: Instant) -> Instant {
        self.latest_now = self.latest_now.max(now);
        self.latest_now
    }

    fn check_drained(&mut self, now: Instant) {
        if self.state == SystemState::Draining && self.load.is_some_and(Load::is_zero) {
            self.enter(now, SystemState::Offline, Cause::Drained);
        }
    }

    fn enter(&mut self, now: Instant, to: SystemState, cause: Cause) {
        let from = self.state;
        self.state = to;
        self.since = now;
        if to != SystemState::Draining {
            self.drain_deadline = None;
        }
        self.events.push_back(Event::Transition(Transition {
            from,
            to,
            cause,
            at: now,
        }));
    }
}

/// `now + guard`, the guard clamped to [`MAX_GUARD`]: any guard is safe. (An `Instant` a week
/// from any real clock reading cannot overflow; were it to, the guard is due at once rather
/// than never.)
fn deadline(now: Instant, guard: Duration) -> Instant {
    let guard = guard.min(MAX_GUARD);
    now.checked_add(guard).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARD: Duration = Duration::from_secs(300);

    /// A simulated clock: a fixed origin and an offset the test moves.
    struct Sim {
        origin: Instant,
        elapsed: Duration,
        machine: Machine,
    }

    impl Sim {
        fn new(initial: SystemState) -> Sim {
            let origin = Instant::now();
            Sim {
                origin,
                elapsed: Duration::ZERO,
                machine: Machine::new(origin, initial, GUARD),
            }
        }
        fn now(&self) -> Instant {
            self.origin + self.elapsed
        }
        fn at(&self, secs: u64) -> Instant {
            self.origin + Duration::from_secs(secs)
        }
        /// Jumps the clock to the machine's next deadline (or by `max`, whichever is first)
        /// and lets it handle the timeout.
        fn advance(&mut self, max: Duration) {
            let limit = self.now() + max;
            let to = self.machine.poll_timeout().map_or(limit, |d| d.min(limit));
            self.elapsed = to.saturating_duration_since(self.origin);
            let now = self.now();
            self.machine.handle_timeout(now);
        }
        fn events(&mut self) -> Vec<Event> {
            std::iter::from_fn(|| self.machine.poll_event()).collect()
        }
        fn transitions(&mut self) -> Vec<(SystemState, SystemState, Cause)> {
            self.events()
                .into_iter()
                .filter_map(|e| match e {
                    Event::Transition(t) => Some((t.from, t.to, t.cause)),
                    Event::TerminateAll { .. } => None,
                })
                .collect()
        }
    }

    use SystemState::{Draining, Offline, Online};

    #[test]
    fn drain_starts_and_reports_guard_remaining() {
        let mut s = Sim::new(Online);
        let now = s.now();
        s.machine.set_load(now, 2, 5);
        assert_eq!(
            s.machine.request_offline(now, None, Cause::Operator),
            Outcome::Changed
        );
        assert_eq!(s.transitions(), [(Online, Draining, Cause::Operator)]);
        assert_eq!(s.machine.poll_timeout(), Some(now + GUARD));
        s.advance(Duration::from_secs(100));
        let snap = s.machine.snapshot(s.now());
        assert_eq!(snap.state, Draining);
        assert_eq!(snap.since, now);
        assert_eq!(snap.guard_remaining, Some(Duration::from_secs(200)));
        assert_eq!(snap.load.map(|l| l.active_sessions), Some(2));
    }

    #[test]
    fn rule_10_offline_when_sessions_and_registrations_reach_zero() {
        let mut s = Sim::new(Online);
        s.machine.set_load(s.at(0), 1, 1);
        let _ = s.machine.request_offline(s.at(0), None, Cause::Operator);
        let _ = s.events();
        s.machine.set_load(s.at(10), 0, 1);
        assert_eq!(s.machine.state(), Draining, "a registration is left");
        s.machine.set_load(s.at(20), 1, 0);
        assert_eq!(s.machine.state(), Draining, "a session is left");
        assert!(s.events().is_empty());
        s.machine.set_load(s.at(30), 0, 0);
        assert_eq!(s.transitions(), [(Draining, Offline, Cause::Drained)]);
        assert_eq!(s.machine.poll_timeout(), None, "the guard is disarmed");
        assert_eq!(s.machine.snapshot(s.at(30)).since, s.at(30));
    }

    #[test]
    fn rule_10_an_idle_box_goes_offline_at_once() {
        let mut s = Sim::new(Online);
        s.machine.set_load(s.at(0), 0, 0);
        let _ = s.machine.request_offline(s.at(1), None, Cause::Button);
        assert_eq!(
            s.transitions(),
            [
                (Online, Draining, Cause::Button),
                (Draining, Offline, Cause::Drained)
            ]
        );
    }

    #[test]
    fn rule_10_waits_for_counts_it_has_not_been_given() {
        let mut s = Sim::new(Online);
        let _ = s.machine.request_offline(s.at(0), None, Cause::Operator);
        assert_eq!(s.machine.state(), Draining);
        s.machine.set_load(s.at(1), 0, 0);
        assert_eq!(s.machine.state(), Offline);
    }

    #[test]
    fn rule_11_guard_expiry_terminates_everything_then_offline() {
        let mut s = Sim::new(Online);
        s.machine.set_load(s.at(0), 3, 7);
        let guard = Duration::from_secs(30);
        let _ = s
            .machine
            .request_offline(s.at(0), Some(guard), Cause::Operator);
        let _ = s.events();
        // Just before the deadline nothing happens.
        s.machine.handle_timeout(s.at(29));
        assert!(s.events().is_empty());
        s.advance(Duration::from_secs(3600));
        assert_eq!(s.elapsed, guard, "the clock jumps to the deadline");
        let deadline = s.at(30);
        assert_eq!(
            s.events(),
            [
                Event::TerminateAll { at: deadline },
                Event::Transition(Transition {
                    from: Draining,
                    to: Offline,
                    cause: Cause::GuardExpired,
                    at: deadline
                })
            ]
        );
        assert_eq!(s.machine.poll_timeout(), None);
        // Counts reaching zero afterwards change nothing.
        s.machine.set_load(s.at(31), 0, 0);
        assert!(s.events().is_empty());
    }

    #[test]
    fn rule_11_zero_guard_ends_the_drain_at_once() {
        let mut s = Sim::new(Online);
        s.machine.set_load(s.at(0), 1, 0);
        let _ = s
            .machine
            .request_offline(s.at(0), Some(Duration::ZERO), Cause::Operator);
        let ev = s.events();
        assert_eq!(ev.len(), 3);
        assert!(matches!(ev[1], Event::TerminateAll { .. }));
        assert_eq!(s.machine.state(), Offline);
    }

    #[test]
    fn online_aborts_a_drain_in_progress() {
        let mut s = Sim::new(Online);
        s.machine.set_load(s.at(0), 4, 4);
        let _ = s.machine.request_offline(s.at(0), None, Cause::Operator);
        let _ = s.events();
        assert_eq!(
            s.machine.request_online(s.at(60), Cause::Operator),
            Outcome::Changed
        );
        assert_eq!(s.transitions(), [(Draining, Online, Cause::Operator)]);
        assert_eq!(s.machine.poll_timeout(), None, "no guard left to fire");
        s.machine.handle_timeout(s.at(400));
        s.machine.set_load(s.at(401), 0, 0);
        assert!(s.events().is_empty(), "an aborted drain stays aborted");
        assert_eq!(s.machine.state(), Online);
        assert_eq!(
            s.machine.request_online(s.at(402), Cause::Operator),
            Outcome::Unchanged
        );
    }

    #[test]
    fn toggle_is_the_button() {
        let mut s = Sim::new(Online);
        s.machine.set_load(s.at(0), 1, 0);
        let _ = s.machine.toggle(s.at(0), Cause::Button);
        assert_eq!(s.machine.state(), Draining);
        assert_eq!(s.machine.poll_timeout(), Some(s.at(0) + GUARD));
        let _ = s.machine.toggle(s.at(5), Cause::Button);
        assert_eq!(s.machine.state(), Online);
        let mut off = Sim::new(Offline);
        let _ = off.machine.toggle(off.at(1), Cause::Button);
        assert_eq!(off.transitions(), [(Offline, Online, Cause::Button)]);
    }

    #[test]
    fn a_second_offline_request_moves_the_guard_only_when_given_one() {
        let mut s = Sim::new(Online);
        s.machine.set_load(s.at(0), 1, 0);
        let _ = s.machine.request_offline(s.at(0), None, Cause::Operator);
        let _ = s.events();
        assert_eq!(
            s.machine.request_offline(s.at(10), None, Cause::Operator),
            Outcome::Unchanged
        );
        assert_eq!(s.machine.poll_timeout(), Some(s.at(0) + GUARD));
        assert_eq!(
            s.machine
                .request_offline(s.at(10), Some(Duration::from_secs(5)), Cause::Operator),
            Outcome::GuardChanged
        );
        assert_eq!(s.machine.poll_timeout(), Some(s.at(15)));
        assert!(s.events().is_empty(), "no transition for a new deadline");
        let mut off = Sim::new(Offline);
        assert_eq!(
            off.machine
                .request_offline(off.at(0), None, Cause::Operator),
            Outcome::Unchanged
        );
    }

    #[test]
    fn time_going_backwards_does_not_shorten_the_guard() {
        let mut s = Sim::new(Online);
        s.machine.set_load(s.at(100), 1, 0);
        // `now` earlier than the latest seen is read as the latest.
        let _ = s
            .machine
            .request_offline(s.at(50), Some(Duration::from_secs(10)), Cause::Operator);
        assert_eq!(s.machine.poll_timeout(), Some(s.at(110)));
        s.machine.handle_timeout(s.at(105));
        assert_eq!(s.machine.state(), Draining);
    }

    #[test]
    fn restored_draining_gets_the_default_guard() {
        let s = Sim::new(Draining);
        assert_eq!(s.machine.poll_timeout(), Some(s.at(0) + GUARD));
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(Draining.to_string(), "draining");
        assert_eq!(Cause::GuardExpired.to_string(), "guard-expired");
        assert_eq!(
            serde_json::to_string(&Cause::GuardExpired).unwrap(),
            "\"guard-expired\""
        );
    }

    #[test]
    fn any_guard_is_safe_and_clamped_to_a_week() {
        let mut s = Sim::new(SystemState::Online);
        s.machine.set_load(s.now(), 1, 0);
        let now = s.now();
        let outcome = s
            .machine
            .request_offline(now, Some(Duration::MAX), Cause::Operator);
        assert_eq!(outcome, Outcome::Changed);
        assert_eq!(s.machine.poll_timeout(), Some(now + MAX_GUARD));
        let outcome =
            s.machine
                .request_offline(now, Some(Duration::from_secs(u64::MAX)), Cause::Operator);
        assert_eq!(outcome, Outcome::GuardChanged);
        assert_eq!(s.machine.poll_timeout(), Some(now + MAX_GUARD));
        let snap = s.machine.snapshot(now);
        assert_eq!(snap.guard_remaining, Some(MAX_GUARD));
        let m = Machine::new(now, SystemState::Draining, Duration::MAX);
        assert_eq!(m.poll_timeout(), Some(now + MAX_GUARD));
    }
}
