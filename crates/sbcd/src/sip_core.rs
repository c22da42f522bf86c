//! The adapter between the engine loop and the `proxy` crate's sans-IO core: it feeds messages
//! and time in, takes transmits out, turns the core's events into log lines and counters, and
//! converts its snapshots into the control protocol's shapes.
//!
//! Temporary: until `proxy::Proxy` is committed this holds no core; it drops (and counts) every
//! message, and reports no sessions and no registrations, so the system-state wiring can be
//! exercised end to end.

use std::collections::VecDeque;
use std::time::Instant;

use proxy::Transmit;
use system_state::SystemState;

use crate::transport::FromTransport;

/// The SIP core as the engine sees it.
#[derive(Debug)]
pub struct SipCore {
    state: SystemState,
    counts: (u64, u64),
    counts_changed: bool,
    dropped: u64,
    transmits: VecDeque<Transmit>,
}

impl SipCore {
    pub fn new() -> SipCore {
        SipCore {
            state: SystemState::Online,
            counts: (0, 0),
            // The state machine waits for a first count before it can end a drain.
            counts_changed: true,
            dropped: 0,
            transmits: VecDeque::new(),
        }
    }

    pub fn handle(&mut self, _now: Instant, input: FromTransport) {
        if let FromTransport::Message(_) = input {
            self.dropped += 1;
        }
    }

    pub fn handle_timeout(&mut self, _now: Instant) {}

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The counts, if they changed since last asked.
    #[must_use]
    pub fn take_counts_changed(&mut self) -> Option<(u64, u64)> {
        std::mem::take(&mut self.counts_changed).then_some(self.counts)
    }

    /// Active sessions and registrations.
    pub fn counts(&self) -> (u64, u64) {
        self.counts
    }

    pub fn set_system_state(&mut self, _now: Instant, state: SystemState) {
        self.state = state;
    }

    pub fn terminate_all(&mut self, _now: Instant) {}

    pub fn calls(&self, _now: Instant) -> Vec<control::CallInfo> {
        Vec::new()
    }

    pub fn registrations(&self, _now: Instant) -> Vec<control::RegistrationInfo> {
        Vec::new()
    }

    pub fn upstreams(&self, _now: Instant) -> Vec<control::UpstreamInfo> {
        Vec::new()
    }

    pub fn stats(&self) -> Vec<control::Counter> {
        vec![control::Counter {
            name: "sip.dropped_no_core".into(),
            value: self.dropped,
        }]
    }
}

impl Default for SipCore {
    fn default() -> Self {
        SipCore::new()
    }
}
