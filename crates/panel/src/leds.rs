//! What the LEDs show for a given situation (SPEC §4), as pure functions.
//!
//! This module decides patterns only; which pattern wins (lamp test, hold hint,
//! blanking, state) is decided by [`Panel`](crate::Panel).

use crate::time::Instant;

/// The system state as the panel needs to know it.
///
/// The panel's own copy of the states, so that this crate depends on nothing
/// above it; the daemon maps the system-state crate's values onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StateView {
    /// In service.
    #[default]
    Online,
    /// Becoming offline: existing calls finish.
    Draining,
    /// Out of service for SIP.
    Offline,
}

/// The node's place in a twin pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TwinRole {
    /// No twin configured.
    #[default]
    Solo,
    /// Carries traffic of its own (the active node, or either node of active/active).
    Active,
    /// A standby with no traffic of its own, ready to take over.
    Standby,
}

/// Whether the SIP engine is working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EngineHealth {
    /// Running and making progress.
    #[default]
    Up,
    /// Not running, or wedged.
    Down,
    /// Starting or restarting after a failure.
    Restarting,
}

/// Everything about the system that the LEDs depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SystemView {
    /// Operator-visible state.
    pub state: StateView,
    /// Twin role.
    pub role: TwinRole,
    /// Engine health.
    pub engine: EngineHealth,
}

/// What a hold released now would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldAction {
    /// Online → draining.
    StartDrain,
    /// Draining or offline → online (aborts a drain in progress).
    GoOnline,
}

impl HoldAction {
    /// The action a hold stands for in `state` (SPEC §2, §4).
    #[must_use]
    pub const fn for_state(state: StateView) -> Self {
        match state {
            StateView::Online => HoldAction::StartDrain,
            StateView::Draining | StateView::Offline => HoldAction::GoOnline,
        }
    }
}

/// The three LEDs, by meaning: green, amber and red on the reference panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Leds {
    /// Green.
    pub online: bool,
    /// Amber.
    pub draining: bool,
    /// Red.
    pub offline: bool,
}

impl Leds {
    /// All dark.
    pub const OFF: Leds = Leds {
        online: false,
        draining: false,
        offline: false,
    };
    /// All lit (lamp test).
    pub const ALL: Leds = Leds {
        online: true,
        draining: true,
        offline: true,
    };
    /// Only the online LED.
    pub const ONLINE: Leds = Leds {
        online: true,
        ..Leds::OFF
    };
    /// Only the draining LED.
    pub const DRAINING: Leds = Leds {
        draining: true,
        ..Leds::OFF
    };
    /// Only the offline LED.
    pub const OFFLINE: Leds = Leds {
        offline: true,
        ..Leds::OFF
    };
}

/// Half-period of the draining blink: 1 Hz.
pub const DRAINING_HALF_MS: u64 = 500;
/// Half-period of the standby blink: 0.5 Hz.
pub const STANDBY_HALF_MS: u64 = 1000;
/// Half-period of the engine-down blink: 4 Hz, fast enough to read as an alarm.
pub const ALARM_HALF_MS: u64 = 125;
/// Half-period of the hold hint: 5 Hz, a flutter in the colour release will bring.
pub const HINT_HALF_MS: u64 = 100;

/// A light pattern, independent of when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// These LEDs lit, the rest dark, without change.
    Steady(Leds),
    /// These LEDs lit for `half_ms`, then all dark for `half_ms`, starting lit.
    Blink {
        /// The LEDs lit in the "on" half.
        leds: Leds,
        /// Length of each half of the period.
        half_ms: u64,
    },
}

impl Pattern {
    /// The pattern for the system as it is (SPEC §4).
    #[must_use]
    pub const fn for_view(view: SystemView) -> Self {
        match (view.engine, view.state, view.role) {
            (EngineHealth::Down | EngineHealth::Restarting, _, _) => Pattern::Blink {
                leds: Leds::OFFLINE,
                half_ms: ALARM_HALF_MS,
            },
            (EngineHealth::Up, StateView::Online, TwinRole::Standby) => Pattern::Blink {
                leds: Leds::ONLINE,
                half_ms: STANDBY_HALF_MS,
            },
            (EngineHealth::Up, StateView::Online, _) => Pattern::Steady(Leds::ONLINE),
            (EngineHealth::Up, StateView::Draining, _) => Pattern::Blink {
                leds: Leds::DRAINING,
                half_ms: DRAINING_HALF_MS,
            },
            (EngineHealth::Up, StateView::Offline, _) => Pattern::Steady(Leds::OFFLINE),
        }
    }

    /// The hint shown while a hold is armed: the LED of the state release leads to.
    #[must_use]
    pub const fn hint(action: HoldAction) -> Self {
        let leds = match action {
            HoldAction::StartDrain => Leds::DRAINING,
            HoldAction::GoOnline => Leds::ONLINE,
        };
        Pattern::Blink {
            leds,
            half_ms: HINT_HALF_MS,
        }
    }

    /// The LEDs at `now` for a pattern that started at `origin`, and when they
    /// next change (`None`: never).
    #[must_use]
    pub fn at(self, origin: Instant, now: Instant) -> (Leds, Option<Instant>) {
        match self {
            Pattern::Steady(leds) => (leds, None),
            Pattern::Blink { leds, half_ms } => {
                let half_ms = half_ms.max(1);
                let elapsed = now.ms_since(origin);
                let halves = elapsed / half_ms;
                let next = origin.after_ms((halves + 1).saturating_mul(half_ms));
                let lit = halves % 2 == 0;
                (if lit { leds } else { Leds::OFF }, Some(next))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: StateView, role: TwinRole, engine: EngineHealth) -> SystemView {
        SystemView {
            state,
            role,
            engine,
        }
    }

    #[test]
    fn patterns_follow_the_spec_table() {
        use EngineHealth::*;
        use StateView::*;
        use TwinRole::*;
        assert_eq!(
            Pattern::for_view(view(Online, Solo, Up)),
            Pattern::Steady(Leds::ONLINE)
        );
        assert_eq!(
            Pattern::for_view(view(Online, Active, Up)),
            Pattern::Steady(Leds::ONLINE)
        );
        assert_eq!(
            Pattern::for_view(view(Draining, Solo, Up)),
            Pattern::Blink {
                leds: Leds::DRAINING,
                half_ms: 500
            }
        );
        assert_eq!(
            Pattern::for_view(view(Offline, Standby, Up)),
            Pattern::Steady(Leds::OFFLINE)
        );
        assert_eq!(
            Pattern::for_view(view(Online, Standby, Up)),
            Pattern::Blink {
                leds: Leds::ONLINE,
                half_ms: 1000
            }
        );
        for engine in [Down, Restarting] {
            assert_eq!(
                Pattern::for_view(view(Online, Solo, engine)),
                Pattern::Blink {
                    leds: Leds::OFFLINE,
                    half_ms: ALARM_HALF_MS
                }
            );
        }
    }

    #[test]
    fn blink_starts_lit_and_reports_its_next_edge() {
        let p = Pattern::Blink {
            leds: Leds::DRAINING,
            half_ms: 500,
        };
        let o = Instant::from_millis(1000);
        assert_eq!(
            p.at(o, Instant::from_millis(1000)),
            (Leds::DRAINING, Some(Instant::from_millis(1500)))
        );
        assert_eq!(
            p.at(o, Instant::from_millis(1499)),
            (Leds::DRAINING, Some(Instant::from_millis(1500)))
        );
        assert_eq!(
            p.at(o, Instant::from_millis(1500)),
            (Leds::OFF, Some(Instant::from_millis(2000)))
        );
        assert_eq!(
            p.at(o, Instant::from_millis(2000)),
            (Leds::DRAINING, Some(Instant::from_millis(2500)))
        );
    }

    #[test]
    fn hold_action_by_state() {
        assert_eq!(
            HoldAction::for_state(StateView::Online),
            HoldAction::StartDrain
        );
        assert_eq!(
            HoldAction::for_state(StateView::Draining),
            HoldAction::GoOnline
        );
        assert_eq!(
            HoldAction::for_state(StateView::Offline),
            HoldAction::GoOnline
        );
    }
}
