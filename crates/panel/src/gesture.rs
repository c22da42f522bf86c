//! Gesture recognition: tells a short press from a hold.
//!
//! A hold is acted on at release, never at the threshold: an operator who
//! changes their mind can only do so by keeping the button down, and the
//! threshold only arms the hint.

use crate::time::Instant;

/// What the recogniser saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gesture {
    /// The button went down.
    Pressed,
    /// The button has been down for `hold_ms`; release will now count as a hold.
    HoldArmed,
    /// Released before `hold_ms`.
    ShortPress,
    /// Released after at least `hold_ms`; `held_ms` is how long it was down.
    Hold {
        /// Milliseconds between press and release.
        held_ms: u64,
    },
}

/// Short-press / hold recogniser fed with debounced edges.
///
/// Contract: feed debounced edges with [`handle_press`](Self::handle_press) and
/// [`handle_release`](Self::handle_release), and call
/// [`handle_timeout`](Self::handle_timeout) once [`poll_timeout`](Self::poll_timeout)
/// has passed so that the hint can be armed while the button is still down.
/// Each returns the gesture it completed, if any. Time must not go backwards.
#[derive(Debug, Clone)]
pub struct GestureRecognizer {
    hold_ms: u64,
    pressed_at: Option<Instant>,
    armed: bool,
}

impl GestureRecognizer {
    /// A recogniser for holds of at least `hold_ms`.
    #[must_use]
    pub const fn new(hold_ms: u64) -> Self {
        GestureRecognizer {
            hold_ms,
            pressed_at: None,
            armed: false,
        }
    }

    /// Whether the button is down.
    #[must_use]
    pub const fn is_pressed(&self) -> bool {
        self.pressed_at.is_some()
    }

    /// Whether the button has been held past the threshold and not yet released.
    #[must_use]
    pub const fn is_armed(&self) -> bool {
        self.armed
    }

    /// The button went down at `at`.
    pub fn handle_press(&mut self, at: Instant) -> Option<Gesture> {
        if self.pressed_at.is_some() {
            return None;
        }
        self.pressed_at = Some(at);
        self.armed = false;
        Some(Gesture::Pressed)
    }

    /// The button came up at `at`.
    pub fn handle_release(&mut self, at: Instant) -> Option<Gesture> {
        let pressed_at = self.pressed_at.take()?;
        self.armed = false;
        let held_ms = at.ms_since(pressed_at);
        Some(if held_ms >= self.hold_ms {
            Gesture::Hold { held_ms }
        } else {
            Gesture::ShortPress
        })
    }

    /// Time passed; arms the hold once the threshold is reached.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Gesture> {
        let pressed_at = self.pressed_at?;
        if !self.armed && now.ms_since(pressed_at) >= self.hold_ms {
            self.armed = true;
            return Some(Gesture::HoldArmed);
        }
        None
    }

    /// When the hold threshold will be reached, while the button is down and not yet armed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.pressed_at {
            Some(at) if !self.armed => Some(at.after_ms(self.hold_ms)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn short_press() {
        let mut g = GestureRecognizer::new(2000);
        assert_eq!(g.handle_press(t(0)), Some(Gesture::Pressed));
        assert_eq!(g.poll_timeout(), Some(t(2000)));
        assert_eq!(g.handle_timeout(t(1999)), None);
        assert_eq!(g.handle_release(t(1999)), Some(Gesture::ShortPress));
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn hold_arms_at_threshold_and_acts_at_release() {
        let mut g = GestureRecognizer::new(2000);
        let _ = g.handle_press(t(100));
        assert_eq!(g.handle_timeout(t(2100)), Some(Gesture::HoldArmed));
        assert!(g.is_armed());
        assert_eq!(g.handle_timeout(t(2500)), None);
        assert_eq!(
            g.handle_release(t(3000)),
            Some(Gesture::Hold { held_ms: 2900 })
        );
        assert!(!g.is_armed());
    }

    #[test]
    fn hold_is_judged_on_edge_times_even_without_a_timeout() {
        let mut g = GestureRecognizer::new(2000);
        let _ = g.handle_press(t(0));
        assert_eq!(
            g.handle_release(t(2000)),
            Some(Gesture::Hold { held_ms: 2000 })
        );
    }

    #[test]
    fn release_without_press_is_ignored() {
        let mut g = GestureRecognizer::new(2000);
        assert_eq!(g.handle_release(t(5)), None);
    }
}
