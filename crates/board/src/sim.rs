//! The simulated panel of the `sim` board: one button and three LEDs that exist
//! only in memory.
//!
//! The daemon drives it from its control socket (`sbcctl panel press
//! --hold-ms N`, `sbcctl show panel`). The button produces the same timestamped
//! samples as a real input line, so the panel logic cannot tell the difference;
//! everything it shows is labelled as simulated.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use panel::{Instant, Leds};

use crate::clock::monotonic_now;
use crate::driver::{LedRole, PanelWaker};
use crate::evdev::KeySample;

/// A simulated button press that cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// `press` while the simulated button is already down.
    #[error("the simulated button is already pressed")]
    AlreadyPressed,
    /// `release` while the simulated button is up.
    #[error("the simulated button is not pressed")]
    NotPressed,
}

#[derive(Debug, Default)]
struct SimState {
    /// Edges not yet taken by the driver, oldest first; a `press_for` puts its
    /// release here ahead of time.
    edges: VecDeque<KeySample>,
    /// The level after the last edge (delivered or not).
    level_after_edges: bool,
    /// The level as of the last delivered edge.
    delivered_level: bool,
    leds: Leds,
    led_writes: u64,
    waker: Option<PanelWaker>,
}

/// Handle on the simulated panel; clones share the same button and LEDs.
#[derive(Debug, Clone, Default)]
pub struct SimPanel {
    state: Arc<Mutex<SimState>>,
}

impl SimPanel {
    /// A panel with the button up and the LEDs dark.
    #[must_use]
    pub fn new() -> Self {
        SimPanel::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic elsewhere while holding the lock leaves plain data behind;
        // the simulation stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Presses the button now.
    pub fn press(&self) -> Result<(), SimError> {
        self.press_at(monotonic_now())
    }

    /// Releases the button now.
    pub fn release(&self) -> Result<(), SimError> {
        self.release_at(monotonic_now())
    }

    /// Presses now and releases `hold_ms` later, without the caller waiting:
    /// what `sbcctl panel press --hold-ms N` asks for.
    pub fn press_for(&self, hold_ms: u64) -> Result<(), SimError> {
        let now = monotonic_now();
        self.press_at(now)?;
        self.release_at(now.after_ms(hold_ms))
    }

    /// Presses at `at` (on the panel's clock).
    pub fn press_at(&self, at: Instant) -> Result<(), SimError> {
        self.edge(at, true)
    }

    /// Releases at `at` (on the panel's clock).
    pub fn release_at(&self, at: Instant) -> Result<(), SimError> {
        self.edge(at, false)
    }

    fn edge(&self, at: Instant, pressed: bool) -> Result<(), SimError> {
        let mut s = self.lock();
        match (s.level_after_edges, pressed) {
            (true, true) => return Err(SimError::AlreadyPressed),
            (false, false) => return Err(SimError::NotPressed),
            _ => {}
        }
        // Edges stay in time order even if a caller's clock is behind.
        let at = s.edges.back().map_or(at, |last| last.at.max(at));
        s.edges.push_back(KeySample { at, pressed });
        s.level_after_edges = pressed;
        if let Some(w) = &s.waker {
            w.wake();
        }
        Ok(())
    }

    /// Whether the button is down now.
    #[must_use]
    pub fn is_pressed(&self) -> bool {
        self.is_pressed_at(monotonic_now())
    }

    /// Whether the button is down at `now`.
    #[must_use]
    pub fn is_pressed_at(&self, now: Instant) -> bool {
        let s = self.lock();
        s.edges
            .iter()
            .take_while(|e| e.at <= now)
            .last()
            .map_or(s.delivered_level, |e| e.pressed)
    }

    /// The LEDs as last written by the panel.
    #[must_use]
    pub fn leds(&self) -> Leds {
        self.lock().leds
    }

    /// How many LED writes the panel has made (a test can wait for one).
    #[must_use]
    pub fn led_writes(&self) -> u64 {
        self.lock().led_writes
    }

    /// The button, for the driver.
    #[must_use]
    pub fn button(&self) -> SimButton {
        SimButton { sim: self.clone() }
    }

    /// One of the LEDs, for the driver.
    #[must_use]
    pub fn led(&self, role: LedRole) -> SimLed {
        SimLed {
            sim: self.clone(),
            role,
        }
    }

    pub(crate) fn set_waker(&self, waker: PanelWaker) {
        self.lock().waker = Some(waker);
    }
}

/// The simulated button as the driver sees it.
#[derive(Debug, Clone)]
pub struct SimButton {
    sim: SimPanel,
}

impl SimButton {
    /// Passes every edge due by `now` to `sample`.
    pub fn take_due(&mut self, now: Instant, mut sample: impl FnMut(KeySample)) {
        let mut s = self.sim.lock();
        while s.edges.front().is_some_and(|e| e.at <= now) {
            if let Some(e) = s.edges.pop_front() {
                s.delivered_level = e.pressed;
                sample(e);
            }
        }
    }

    /// When the next scheduled edge (a `press_for` release) is due.
    #[must_use]
    pub fn next_edge(&self) -> Option<Instant> {
        self.sim.lock().edges.front().map(|e| e.at)
    }
}

impl embedded_hal::digital::ErrorType for SimButton {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::InputPin for SimButton {
    /// Active high: high while pressed.
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        Ok(self.sim.is_pressed_at(monotonic_now()))
    }

    fn is_low(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.is_high()?)
    }
}

/// One simulated LED.
#[derive(Debug, Clone)]
pub struct SimLed {
    sim: SimPanel,
    role: LedRole,
}

impl SimLed {
    fn set(&mut self, lit: bool) {
        let mut s = self.sim.lock();
        match self.role {
            LedRole::Online => s.leds.online = lit,
            LedRole::Draining => s.leds.draining = lit,
            LedRole::Offline => s.leds.offline = lit,
        }
        s.led_writes += 1;
    }
}

impl embedded_hal::digital::ErrorType for SimLed {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for SimLed {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.set(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.set(true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::digital::{InputPin, OutputPin};

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn presses_become_ordered_samples() {
        let sim = SimPanel::new();
        assert!(sim.press_at(t(100)).is_ok());
        assert_eq!(sim.press_at(t(150)), Err(SimError::AlreadyPressed));
        assert!(sim.release_at(t(2600)).is_ok());
        assert_eq!(sim.release_at(t(2700)), Err(SimError::NotPressed));

        let mut button = sim.button();
        let mut seen = Vec::new();
        button.take_due(t(1000), |s| seen.push(s));
        assert_eq!(
            seen,
            vec![KeySample {
                at: t(100),
                pressed: true
            }]
        );
        assert!(sim.is_pressed_at(t(1000)));
        assert_eq!(button.next_edge(), Some(t(2600)));
        button.take_due(t(3000), |s| seen.push(s));
        assert_eq!(seen.len(), 2);
        assert!(!sim.is_pressed_at(t(3000)));
    }

    #[test]
    fn the_button_is_also_a_level_pin() {
        let sim = SimPanel::new();
        let mut pin = sim.button();
        assert_eq!(pin.is_high(), Ok(false));
        assert!(sim.press().is_ok());
        assert_eq!(pin.is_high(), Ok(true));
        assert!(sim.release().is_ok());
        assert_eq!(pin.is_low(), Ok(true));
    }

    #[test]
    fn leds_are_recorded() {
        let sim = SimPanel::new();
        let mut amber = sim.led(LedRole::Draining);
        assert!(amber.set_high().is_ok());
        assert_eq!(sim.leds(), Leds::DRAINING);
        assert!(amber.set_low().is_ok());
        assert_eq!(sim.leds(), Leds::OFF);
        assert_eq!(sim.led_writes(), 2);
    }
}
