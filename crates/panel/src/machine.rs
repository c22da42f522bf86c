//! The front panel as one state machine: button in, events and LED levels out.

use heapless::Deque;

use crate::debounce::{Change, Debouncer};
use crate::gesture::{Gesture, GestureRecognizer};
use crate::leds::{EngineHealth, HoldAction, Leds, Pattern, SystemView};
use crate::time::Instant;

/// Timing of the panel. Comes from the board profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PanelConfig {
    /// A raw button level must hold this long to count.
    pub debounce_ms: u64,
    /// A press at least this long is a hold (SPEC §4: 2000 ms by default).
    pub hold_ms: u64,
    /// All LEDs lit for this long at power-on; 0 skips the lamp test.
    pub lamp_test_ms: u64,
    /// For sites that want a dark panel: the LEDs go dark this long after the
    /// last press or state change, and a short press shows the state again.
    /// `None` (the default) keeps the state on show. An engine alarm is never
    /// blanked.
    pub blank_after_ms: Option<u64>,
}

impl Default for PanelConfig {
    fn default() -> Self {
        PanelConfig {
            debounce_ms: 20,
            hold_ms: 2000,
            lamp_test_ms: 1000,
            blank_after_ms: None,
        }
    }
}

/// What the panel tells the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PanelEvent {
    /// The button went down (debounced).
    Pressed,
    /// Held past `hold_ms`: the LEDs now show what release will do.
    HoldArmed(HoldAction),
    /// Released before `hold_ms`: the LEDs show the state again, nothing else.
    ShortPress,
    /// Released after `hold_ms`: the daemon is to carry out `action`.
    Hold {
        /// Decided from the state at release time.
        action: HoldAction,
        /// How long the button was down.
        held_ms: u64,
    },
}

/// What the LEDs are showing, for `show panel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Display {
    /// The power-on lamp test.
    LampTest,
    /// The hold hint: release will do this.
    Hint(HoldAction),
    /// Dark because of `blank_after_ms`.
    Blank,
    /// The system state (SPEC §4 table).
    State,
}

/// A snapshot of the panel for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PanelStatus {
    /// The last view given to the panel.
    pub view: SystemView,
    /// The LED levels last computed.
    pub leds: Leds,
    /// Why the LEDs show what they show.
    pub display: Display,
    /// Debounced button level.
    pub pressed: bool,
    /// Held past the threshold.
    pub hold_armed: bool,
}

/// Events waiting for [`Panel::poll_event`]; a caller that drains after every
/// `handle_*` never has more than three.
const EVENT_QUEUE: usize = 8;

/// The front panel (SPEC §4): debounced button, gestures, LED patterns.
///
/// Contract:
/// - Feed it with [`handle_button`](Self::handle_button) (raw samples, already
///   turned into "pressed" by a [`Button`](crate::Button) or by the backend),
///   [`handle_view`](Self::handle_view) (whenever state, role or engine health
///   may have changed) and [`handle_timeout`](Self::handle_timeout) (when
///   [`poll_timeout`](Self::poll_timeout) has passed).
/// - After each `handle_*`, drain [`poll_event`](Self::poll_event) until `None`,
///   write [`poll_leds`](Self::poll_leds) to the LEDs when it is `Some`, and
///   sleep no later than [`poll_timeout`](Self::poll_timeout). A polled button
///   must additionally be sampled at the backend's own rate.
/// - Time must not go backwards. An earlier time than one already seen is taken
///   as the latest time seen, except for button samples, whose (possibly older)
///   kernel timestamps only date the edge.
/// - A hold is reported as [`PanelEvent::Hold`] at release; applying it is the
///   caller's business, and the new state comes back through `handle_view`.
#[derive(Debug)]
pub struct Panel {
    config: PanelConfig,
    debouncer: Debouncer,
    gesture: GestureRecognizer,
    view: SystemView,
    latest: Instant,
    lamp_test_until: Option<Instant>,
    blank_at: Option<Instant>,
    pattern: Pattern,
    origin: Instant,
    shown: Leds,
    next_change: Option<Instant>,
    leds_owed: bool,
    events: Deque<PanelEvent, EVENT_QUEUE>,
}

impl Panel {
    /// A panel powered on at `now`, button up, showing `view` after the lamp test.
    #[must_use]
    pub fn new(config: PanelConfig, view: SystemView, now: Instant) -> Self {
        let mut panel = Panel {
            config,
            debouncer: Debouncer::new(config.debounce_ms, false, now),
            gesture: GestureRecognizer::new(config.hold_ms),
            view,
            latest: now,
            lamp_test_until: (config.lamp_test_ms > 0).then(|| now.after_ms(config.lamp_test_ms)),
            blank_at: config.blank_after_ms.map(|ms| now.after_ms(ms)),
            pattern: Pattern::Steady(Leds::OFF),
            origin: now,
            shown: Leds::OFF,
            next_change: None,
            // The LEDs are in an unknown state at power-on: always write once.
            leds_owed: true,
            events: Deque::new(),
        };
        panel.refresh(now);
        panel
    }

    /// A raw button sample. `at` is when it was taken (for an edge: the edge's
    /// kernel timestamp).
    pub fn handle_button(&mut self, at: Instant, pressed: bool) {
        let now = self.advance(at);
        for change in self.debouncer.handle_sample(at, pressed) {
            self.on_debounced(change, now);
        }
        self.run_timers(now);
    }

    /// The system as it now is.
    pub fn handle_view(&mut self, now: Instant, view: SystemView) {
        let now = self.advance(now);
        if view != self.view {
            self.view = view;
            self.restart_blank_timer(now);
        }
        self.run_timers(now);
    }

    /// Time has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        if let Some(change) = self.debouncer.handle_timeout(now) {
            self.on_debounced(change, now);
        }
        self.run_timers(now);
    }

    /// The next event for the daemon.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PanelEvent> {
        self.events.pop_front()
    }

    /// The LED levels to write, when they changed or must be written again.
    #[must_use]
    pub fn poll_leds(&mut self) -> Option<Leds> {
        core::mem::take(&mut self.leds_owed).then_some(self.shown)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let blank = self.blank_at.filter(|&t| t > self.latest);
        [
            self.debouncer.poll_timeout(),
            self.gesture.poll_timeout(),
            self.lamp_test_until,
            self.next_change,
            blank,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A snapshot for `show panel`.
    #[must_use]
    pub fn status(&self) -> PanelStatus {
        PanelStatus {
            view: self.view,
            leds: self.shown,
            display: self.display(self.latest),
            pressed: self.debouncer.is_pressed(),
            hold_armed: self.gesture.is_armed(),
        }
    }

    /// The configuration the panel runs with.
    #[must_use]
    pub const fn config(&self) -> &PanelConfig {
        &self.config
    }

    fn advance(&mut self, now: Instant) -> Instant {
        self.latest = self.latest.max(now);
        self.latest
    }

    fn on_debounced(&mut self, change: Change, now: Instant) {
        let gesture = if change.pressed {
            self.gesture.handle_press(change.at)
        } else {
            self.gesture.handle_release(change.at)
        };
        match gesture {
            Some(Gesture::Pressed) => {
                // Any touch shows the state at once, even before release.
                self.reshow(now);
                self.push(PanelEvent::Pressed);
            }
            Some(Gesture::ShortPress) => {
                self.reshow(now);
                self.push(PanelEvent::ShortPress);
            }
            Some(Gesture::Hold { held_ms }) => {
                self.restart_blank_timer(now);
                self.push(PanelEvent::Hold {
                    action: HoldAction::for_state(self.view.state),
                    held_ms,
                });
            }
            Some(Gesture::HoldArmed) | None => {}
        }
    }

    fn run_timers(&mut self, now: Instant) {
        if self.gesture.handle_timeout(now) == Some(Gesture::HoldArmed) {
            self.push(PanelEvent::HoldArmed(HoldAction::for_state(
                self.view.state,
            )));
        }
        if self.lamp_test_until.is_some_and(|until| now >= until) {
            self.lamp_test_until = None;
        }
        self.refresh(now);
    }

    /// Ends the lamp test and any blanking, restarts the pattern lit, and owes
    /// a write even if nothing changed.
    fn reshow(&mut self, now: Instant) {
        self.lamp_test_until = None;
        self.restart_blank_timer(now);
        self.origin = now;
        self.leds_owed = true;
    }

    fn restart_blank_timer(&mut self, now: Instant) {
        self.blank_at = self.config.blank_after_ms.map(|ms| now.after_ms(ms));
    }

    fn display(&self, now: Instant) -> Display {
        if self.lamp_test_until.is_some() {
            Display::LampTest
        } else if self.gesture.is_armed() {
            Display::Hint(HoldAction::for_state(self.view.state))
        } else if self.view.engine == EngineHealth::Up && self.blank_at.is_some_and(|at| now >= at)
        {
            Display::Blank
        } else {
            Display::State
        }
    }

    fn refresh(&mut self, now: Instant) {
        let pattern = match self.display(now) {
            Display::LampTest => Pattern::Steady(Leds::ALL),
            Display::Hint(action) => Pattern::hint(action),
            Display::Blank => Pattern::Steady(Leds::OFF),
            Display::State => Pattern::for_view(self.view),
        };
        if pattern != self.pattern {
            // A new pattern starts lit now, so a change shows at once.
            self.pattern = pattern;
            self.origin = now;
        }
        let (leds, next_change) = self.pattern.at(self.origin, now);
        if leds != self.shown {
            self.shown = leds;
            self.leds_owed = true;
        }
        self.next_change = next_change;
    }

    fn push(&mut self, event: PanelEvent) {
        if self.events.is_full() {
            // A caller that does not drain loses the oldest news, not the newest.
            let _ = self.events.pop_front();
        }
        let _ = self.events.push_back(event);
    }
}
