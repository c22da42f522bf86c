//! RFC 3261 §17 transaction state machines, client and server, INVITE and non-INVITE.
//!
//! They decide *when* to retransmit, when to give up and when to forget; they do not hold or
//! parse messages. The proxy core keeps the bytes next to each machine and acts on what the
//! machine returns. Each machine keeps its own armed timers ([`Transaction timers`](TxTimer));
//! the core's timer table holds one deadline per transaction, the earliest of them
//! ([`TxTimers::next`]), moved only when it changes.

use std::time::{Duration, Instant};

use crate::config::TimerConfig;

/// INVITE transactions differ from all others (ACK handling, timers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxClass {
    /// INVITE.
    Invite,
    /// Every other method except ACK, which has no transaction.
    NonInvite,
}

/// The RFC 3261 timers, by their letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxTimer {
    /// INVITE client: retransmit the request (unreliable transports).
    A,
    /// INVITE client: give up waiting for any response.
    B,
    /// INVITE client: absorb retransmitted final responses, then forget.
    D,
    /// Non-INVITE client: retransmit the request.
    E,
    /// Non-INVITE client: give up.
    F,
    /// Non-INVITE client: absorb retransmitted final responses, then forget.
    K,
    /// INVITE server: retransmit the final non-2xx response.
    G,
    /// INVITE server: give up waiting for the ACK.
    H,
    /// INVITE server: absorb ACK retransmissions, then forget.
    I,
    /// Non-INVITE server: absorb request retransmissions, then forget.
    J,
}

impl TxTimer {
    /// Whether firing late only keeps the transaction a little longer: the timers that end a
    /// transaction's absorbing of retransmissions (D, I, J, K) send nothing and decide
    /// nothing, so the proxy fires them when it is awake anyway (see `Proxy::poll_timeout`).
    pub fn is_lazy(self) -> bool {
        matches!(self, TxTimer::D | TxTimer::I | TxTimer::J | TxTimer::K)
    }
}

/// Every transaction timer, in the order a transaction's deadlines are scanned.
pub(crate) const ALL_TIMERS: [TxTimer; 10] = [
    TxTimer::A,
    TxTimer::B,
    TxTimer::D,
    TxTimer::E,
    TxTimer::F,
    TxTimer::K,
    TxTimer::G,
    TxTimer::H,
    TxTimer::I,
    TxTimer::J,
];

/// The armed timers of one transaction.
#[derive(Debug, Clone, Default)]
pub struct TxTimers {
    slots: [Option<Instant>; 10],
}

impl TxTimers {
    fn set(&mut self, timer: TxTimer, at: Instant) {
        self.slots[timer as usize] = Some(at);
    }

    fn clear(&mut self, timer: TxTimer) {
        self.slots[timer as usize] = None;
    }

    fn clear_all(&mut self) {
        self.slots = [None; 10];
    }

    /// Whether `timer` is armed.
    pub fn get(&self, timer: TxTimer) -> Option<Instant> {
        self.slots[timer as usize]
    }

    /// The armed timer due first; among those due at the same instant, the first letter in
    /// declaration order (the order the core's table fired them in when it held every letter).
    pub fn next(&self) -> Option<(TxTimer, Instant)> {
        // The slots are in declaration order (`ALL_TIMERS[i] as usize == i`): one pass over
        // them, a later slot taken only when strictly earlier.
        let mut first: Option<(TxTimer, Instant)> = None;
        for (timer, slot) in ALL_TIMERS.iter().zip(&self.slots) {
            if let Some(at) = *slot {
                if first.is_none_or(|(_, best)| at < best) {
                    first = Some((*timer, at));
                }
            }
        }
        first
    }

    /// Every armed timer with its deadline.
    pub fn armed(&self) -> impl Iterator<Item = (TxTimer, Instant)> + '_ {
        ALL_TIMERS
            .iter()
            .filter_map(|t| self.slots[*t as usize].map(|at| (*t, at)))
    }
}

/// Where a client transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing heard (INVITE "Calling", non-INVITE "Trying").
    Calling,
    /// A provisional response came.
    Proceeding,
    /// A final response came; retransmissions of it are absorbed.
    Completed,
    /// Done; the core may forget it.
    Terminated,
}

/// What the core must do after feeding a client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Nothing.
    Nothing,
    /// Send the request again.
    Retransmit,
    /// Hand the response to the proxy logic.
    PassUp,
    /// Hand the (non-2xx final) response up and send an ACK for it downstream.
    PassUpAndAck,
    /// A retransmitted non-2xx final to an INVITE: send the ACK again, pass nothing up.
    AckAgain,
    /// No final response in time: the proxy logic treats it as 408.
    TimedOut,
    /// Forget the transaction.
    Terminate,
}

/// A client transaction: the proxy sending a request downstream.
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    class: TxClass,
    state: ClientState,
    reliable: bool,
    interval: Duration,
    settings: TimerConfig,
    timers: TxTimers,
}

impl ClientTransaction {
    /// Starts a transaction whose request was just sent at `now`.
    pub fn new(class: TxClass, reliable: bool, settings: TimerConfig, now: Instant) -> Self {
        let mut timers = TxTimers::default();
        let timeout = settings.t1 * 64;
        match class {
            TxClass::Invite => {
                if !reliable {
                    timers.set(TxTimer::A, now + settings.t1);
                }
                timers.set(TxTimer::B, now + timeout);
            }
            TxClass::NonInvite => {
                if !reliable {
                    timers.set(TxTimer::E, now + settings.t1);
                }
                timers.set(TxTimer::F, now + timeout);
            }
        }
        ClientTransaction {
            class,
            state: ClientState::Calling,
            reliable,
            interval: settings.t1,
            settings,
            timers,
        }
    }

    /// The state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The class.
    pub fn class(&self) -> TxClass {
        self.class
    }

    /// The armed timers.
    pub fn timers(&self) -> &TxTimers {
        &self.timers
    }

    /// A response with status `code` arrived.
    pub fn on_response(&mut self, code: u16, now: Instant) -> ClientAction {
        let provisional = code < 200;
        match (self.class, self.state) {
            (_, ClientState::Terminated) => ClientAction::Nothing,
            (TxClass::Invite, ClientState::Calling | ClientState::Proceeding) => {
                self.timers.clear(TxTimer::A);
                if provisional {
                    // Timer B only guards the Calling state; timer C (the proxy's) takes over.
                    self.timers.clear(TxTimer::B);
                    self.state = ClientState::Proceeding;
                    ClientAction::PassUp
                } else if code < 300 {
                    // A 2xx ends the transaction; its ACK is end-to-end.
                    self.terminate();
                    ClientAction::PassUp
                } else {
                    self.timers.clear(TxTimer::B);
                    self.state = ClientState::Completed;
                    let wait = if self.reliable {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(32)
                    };
                    self.timers.set(TxTimer::D, now + wait);
                    ClientAction::PassUpAndAck
                }
            }
            (TxClass::Invite, ClientState::Completed) => {
                if code >= 300 {
                    ClientAction::AckAgain
                } else {
                    ClientAction::Nothing
                }
            }
            (TxClass::NonInvite, ClientState::Calling | ClientState::Proceeding) => {
                if provisional {
                    self.state = ClientState::Proceeding;
                    ClientAction::PassUp
                } else {
                    self.timers.clear(TxTimer::E);
                    self.timers.clear(TxTimer::F);
                    self.state = ClientState::Completed;
                    let wait = if self.reliable {
                        Duration::ZERO
                    } else {
                        self.settings.t4
                    };
                    self.timers.set(TxTimer::K, now + wait);
                    ClientAction::PassUp
                }
            }
            (TxClass::NonInvite, ClientState::Completed) => ClientAction::Nothing,
        }
    }

    /// `timer` fired at `now` (the core already removed it from its table).
    pub fn on_timer(&mut self, timer: TxTimer, now: Instant) -> ClientAction {
        if self.timers.get(timer).is_none_or(|at| at > now) {
            return ClientAction::Nothing;
        }
        self.timers.clear(timer);
        match timer {
            TxTimer::A if self.state == ClientState::Calling => {
                self.interval *= 2;
                self.timers.set(TxTimer::A, now + self.interval);
                ClientAction::Retransmit
            }
            TxTimer::E if matches!(self.state, ClientState::Calling | ClientState::Proceeding) => {
                // In Proceeding the interval is T2 at once (RFC 3261 §17.1.2.2).
                self.interval = if self.state == ClientState::Proceeding {
                    self.settings.t2
                } else {
                    (self.interval * 2).min(self.settings.t2)
                };
                self.timers.set(TxTimer::E, now + self.interval);
                ClientAction::Retransmit
            }
            TxTimer::B | TxTimer::F => {
                self.terminate();
                ClientAction::TimedOut
            }
            TxTimer::D | TxTimer::K => {
                self.terminate();
                ClientAction::Terminate
            }
            _ => ClientAction::Nothing,
        }
    }

    /// Ends the transaction at once (the proxy gave up on this branch).
    pub fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.timers.clear_all();
    }
}

/// Where a server transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE request received, no response yet.
    Trying,
    /// A provisional was sent (INVITE starts here: a proxy answers 100 at once).
    Proceeding,
    /// A final response was sent; request retransmissions get it again.
    Completed,
    /// INVITE only: the ACK for a non-2xx final came.
    Confirmed,
    /// Done; the core may forget it.
    Terminated,
}

/// What the core must do after feeding a server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAction {
    /// Nothing.
    Nothing,
    /// Send the last response again.
    ResendLast,
    /// No ACK came for a non-2xx final to an INVITE; forget it.
    TimedOut,
    /// Forget the transaction.
    Terminate,
}

/// A server transaction: the proxy receiving a request from upstream.
#[derive(Debug, Clone)]
pub struct ServerTransaction {
    class: TxClass,
    state: ServerState,
    reliable: bool,
    interval: Duration,
    settings: TimerConfig,
    timers: TxTimers,
}

impl ServerTransaction {
    /// Starts a transaction for a request received at `now`.
    pub fn new(class: TxClass, reliable: bool, settings: TimerConfig) -> Self {
        ServerTransaction {
            class,
            state: match class {
                TxClass::Invite => ServerState::Proceeding,
                TxClass::NonInvite => ServerState::Trying,
            },
            reliable,
            interval: settings.t1,
            settings,
            timers: TxTimers::default(),
        }
    }

    /// The state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The class.
    pub fn class(&self) -> TxClass {
        self.class
    }

    /// The armed timers.
    pub fn timers(&self) -> &TxTimers {
        &self.timers
    }

    /// Whether a final response was already sent.
    pub fn is_final(&self) -> bool {
        !matches!(self.state, ServerState::Trying | ServerState::Proceeding)
    }

    /// The same request arrived again.
    pub fn on_retransmission(&self) -> ServerAction {
        match self.state {
            ServerState::Proceeding | ServerState::Completed => ServerAction::ResendLast,
            _ => ServerAction::Nothing,
        }
    }

    /// An ACK for this INVITE's non-2xx final arrived.
    pub fn on_ack(&mut self, now: Instant) -> ServerAction {
        if self.class == TxClass::Invite && self.state == ServerState::Completed {
            self.timers.clear(TxTimer::G);
            self.timers.clear(TxTimer::H);
            self.state = ServerState::Confirmed;
            let wait = if self.reliable {
                Duration::ZERO
            } else {
                self.settings.t4
            };
            self.timers.set(TxTimer::I, now + wait);
        }
        ServerAction::Nothing
    }

    /// The proxy sends a response with status `code`. Returns false when the transaction can no
    /// longer send one (a final was already sent), in which case nothing must go out.
    pub fn on_send(&mut self, code: u16, now: Instant) -> bool {
        if self.is_final() {
            return false;
        }
        if code < 200 {
            self.state = ServerState::Proceeding;
            return true;
        }
        match self.class {
            TxClass::Invite if code < 300 => {
                // 2xx retransmission is the UAS's business; the proxy forgets at once.
                self.state = ServerState::Terminated;
                self.timers.clear_all();
            }
            TxClass::Invite => {
                self.state = ServerState::Completed;
                if !self.reliable {
                    self.timers.set(TxTimer::G, now + self.interval);
                }
                self.timers.set(TxTimer::H, now + self.settings.t1 * 64);
            }
            TxClass::NonInvite => {
                self.state = ServerState::Completed;
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    self.settings.t1 * 64
                };
                self.timers.set(TxTimer::J, now + wait);
            }
        }
        true
    }

    /// `timer` fired at `now`.
    pub fn on_timer(&mut self, timer: TxTimer, now: Instant) -> ServerAction {
        if self.timers.get(timer).is_none_or(|at| at > now) {
            return ServerAction::Nothing;
        }
        self.timers.clear(timer);
        match timer {
            TxTimer::G if self.state == ServerState::Completed => {
                self.interval = (self.interval * 2).min(self.settings.t2);
                self.timers.set(TxTimer::G, now + self.interval);
                ServerAction::ResendLast
            }
            TxTimer::H => {
                self.state = ServerState::Terminated;
                self.timers.clear_all();
                ServerAction::TimedOut
            }
            TxTimer::I | TxTimer::J => {
                self.state = ServerState::Terminated;
                self.timers.clear_all();
                ServerAction::Terminate
            }
            _ => ServerAction::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn next_timer_is_the_first_minimum_in_declaration_order() {
        for (i, timer) in ALL_TIMERS.iter().enumerate() {
            assert_eq!(*timer as usize, i);
        }
        let t0 = Instant::now();
        // Every pattern of armed slots, deadlines from a few values so that ties happen.
        for pattern in 0u32..(1 << 10) {
            for spread in [1u64, 2, 3] {
                let mut timers = TxTimers::default();
                for (i, timer) in ALL_TIMERS.iter().enumerate() {
                    if pattern & (1 << i) != 0 {
                        let at = (u64::from(pattern) * 7 + i as u64 * 5) % (spread + 1);
                        timers.set(*timer, t0 + ms(at));
                    }
                }
                assert_eq!(
                    timers.next(),
                    timers.armed().min_by_key(|(_, at)| *at),
                    "{pattern:b} {spread}"
                );
            }
        }
    }

    #[test]
    fn invite_client_retransmits_doubling_then_times_out_with_timer_b() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(TxClass::Invite, false, TimerConfig::default(), t0);
        let mut now;
        let mut retransmits = 0;
        loop {
            let next = tx.timers().armed().map(|(_, at)| at).min().unwrap();
            now = next;
            let fired: Vec<_> = tx.timers().armed().filter(|(_, at)| *at <= now).collect();
            let mut done = false;
            for (timer, _) in fired {
                match tx.on_timer(timer, now) {
                    ClientAction::Retransmit => retransmits += 1,
                    ClientAction::TimedOut => done = true,
                    _ => {}
                }
            }
            if done {
                break;
            }
        }
        assert_eq!(now - t0, ms(32_000));
        // 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
        assert_eq!(retransmits, 6);
        assert_eq!(tx.state(), ClientState::Terminated);
    }

    #[test]
    fn invite_client_non_2xx_acks_and_waits_timer_d() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(TxClass::Invite, false, TimerConfig::default(), t0);
        assert_eq!(tx.on_response(180, t0), ClientAction::PassUp);
        assert_eq!(tx.on_response(486, t0), ClientAction::PassUpAndAck);
        assert_eq!(tx.on_response(486, t0 + ms(10)), ClientAction::AckAgain);
        assert_eq!(tx.timers().get(TxTimer::D), Some(t0 + ms(32_000)));
        assert_eq!(
            tx.on_timer(TxTimer::D, t0 + ms(32_000)),
            ClientAction::Terminate
        );
    }

    #[test]
    fn invite_client_2xx_terminates_at_once() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(TxClass::Invite, true, TimerConfig::default(), t0);
        assert!(tx.timers().get(TxTimer::A).is_none());
        assert_eq!(tx.on_response(200, t0), ClientAction::PassUp);
        assert_eq!(tx.state(), ClientState::Terminated);
    }

    #[test]
    fn non_invite_client_caps_at_t2_and_uses_timer_k() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(TxClass::NonInvite, false, TimerConfig::default(), t0);
        let mut now = t0;
        for expected in [500, 1000, 2000, 4000, 4000] {
            let at = tx.timers().get(TxTimer::E).unwrap();
            assert_eq!(at - now, ms(expected));
            now = at;
            assert_eq!(tx.on_timer(TxTimer::E, now), ClientAction::Retransmit);
        }
        assert_eq!(tx.on_response(200, now), ClientAction::PassUp);
        assert_eq!(tx.timers().get(TxTimer::K), Some(now + ms(5000)));
        assert!(tx.timers().get(TxTimer::F).is_none());
    }

    #[test]
    fn non_invite_client_timer_f_times_out() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(TxClass::NonInvite, true, TimerConfig::default(), t0);
        assert_eq!(
            tx.on_timer(TxTimer::F, t0 + ms(32_000)),
            ClientAction::TimedOut
        );
    }

    #[test]
    fn invite_server_retransmits_final_until_ack_then_timer_i() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(TxClass::Invite, false, TimerConfig::default());
        assert_eq!(tx.on_retransmission(), ServerAction::ResendLast);
        assert!(tx.on_send(486, t0));
        assert!(!tx.on_send(500, t0));
        assert_eq!(tx.timers().get(TxTimer::G), Some(t0 + ms(500)));
        assert_eq!(
            tx.on_timer(TxTimer::G, t0 + ms(500)),
            ServerAction::ResendLast
        );
        assert_eq!(tx.timers().get(TxTimer::G), Some(t0 + ms(1500)));
        tx.on_ack(t0 + ms(600));
        assert_eq!(tx.state(), ServerState::Confirmed);
        assert_eq!(tx.timers().get(TxTimer::I), Some(t0 + ms(5600)));
        assert_eq!(
            tx.on_timer(TxTimer::I, t0 + ms(5600)),
            ServerAction::Terminate
        );
    }

    #[test]
    fn invite_server_timer_h_gives_up_without_ack() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(TxClass::Invite, true, TimerConfig::default());
        assert!(tx.on_send(404, t0));
        assert!(tx.timers().get(TxTimer::G).is_none());
        assert_eq!(
            tx.on_timer(TxTimer::H, t0 + ms(32_000)),
            ServerAction::TimedOut
        );
    }

    #[test]
    fn non_invite_server_timer_j() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(TxClass::NonInvite, false, TimerConfig::default());
        assert_eq!(tx.on_retransmission(), ServerAction::Nothing);
        assert!(tx.on_send(200, t0));
        assert_eq!(tx.on_retransmission(), ServerAction::ResendLast);
        assert_eq!(
            tx.on_timer(TxTimer::J, t0 + ms(32_000)),
            ServerAction::Terminate
        );
    }

    #[test]
    fn next_is_the_first_deadline_and_the_first_letter_among_equals() {
        let t0 = Instant::now();
        let mut timers = TxTimers::default();
        assert_eq!(timers.next(), None);
        timers.set(TxTimer::H, t0 + ms(32_000));
        timers.set(TxTimer::G, t0 + ms(500));
        assert_eq!(timers.next(), Some((TxTimer::G, t0 + ms(500))));
        timers.set(TxTimer::J, t0 + ms(500));
        timers.set(TxTimer::B, t0 + ms(500));
        assert_eq!(timers.next(), Some((TxTimer::B, t0 + ms(500))));
        timers.clear_all();
        assert_eq!(timers.next(), None);
    }
}
