//! Thin adapters from embedded-hal pins to the panel's logical signals.
//!
//! This is the only place where electrical levels meet meaning: a [`Polarity`]
//! is chosen once, when the adapter is built from the board profile, and the
//! logic above only ever sees "pressed" and "lit".

use embedded_hal::digital::{InputPin, OutputPin, PinState};
use embedded_hal_async::digital::Wait;

use crate::leds::Leds;

/// Which electrical level means "active" (button pressed, LED lit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Polarity {
    /// High level is active.
    #[default]
    ActiveHigh,
    /// Low level is active (a button to ground with a pull-up, an LED sinking current).
    ActiveLow,
}

impl Polarity {
    /// The polarity for a profile's `active_low` flag.
    #[must_use]
    pub const fn from_active_low(active_low: bool) -> Self {
        if active_low {
            Polarity::ActiveLow
        } else {
            Polarity::ActiveHigh
        }
    }

    /// Whether a pin reading `high` is active.
    #[must_use]
    pub const fn is_active(self, high: bool) -> bool {
        match self {
            Polarity::ActiveHigh => high,
            Polarity::ActiveLow => !high,
        }
    }

    /// The electrical level that makes the signal `active`.
    #[must_use]
    pub const fn level(self, active: bool) -> PinState {
        if self.is_active(true) == active {
            PinState::High
        } else {
            PinState::Low
        }
    }
}

/// A momentary button on an input pin.
#[derive(Debug)]
pub struct Button<P> {
    pin: P,
    polarity: Polarity,
}

impl<P> Button<P> {
    /// Wraps `pin`; `polarity` says which level means pressed.
    pub const fn new(pin: P, polarity: Polarity) -> Self {
        Button { pin, polarity }
    }

    /// Gives the pin back.
    pub fn into_inner(self) -> P {
        self.pin
    }
}

impl<P: InputPin> Button<P> {
    /// Samples the pin: `true` while the button is held down (raw, not debounced).
    pub fn is_pressed(&mut self) -> Result<bool, P::Error> {
        Ok(self.polarity.is_active(self.pin.is_high()?))
    }
}

impl<P: InputPin + Wait> Button<P> {
    /// Waits for the next edge of either kind, then samples the pin.
    ///
    /// For backends that report edges: the caller feeds the sample to
    /// [`Panel::handle_button`](crate::Panel::handle_button) and still races this
    /// future against [`Panel::poll_timeout`](crate::Panel::poll_timeout).
    pub async fn wait_for_change(&mut self) -> Result<bool, P::Error> {
        self.pin.wait_for_any_edge().await?;
        self.is_pressed()
    }
}

/// One LED on an output pin.
#[derive(Debug)]
pub struct Led<P> {
    pin: P,
    polarity: Polarity,
}

impl<P> Led<P> {
    /// Wraps `pin`; `polarity` says which level lights the LED.
    pub const fn new(pin: P, polarity: Polarity) -> Self {
        Led { pin, polarity }
    }

    /// Gives the pin back.
    pub fn into_inner(self) -> P {
        self.pin
    }
}

impl<P: OutputPin> Led<P> {
    /// Lights the LED or puts it out.
    pub fn set(&mut self, lit: bool) -> Result<(), P::Error> {
        self.pin.set_state(self.polarity.level(lit))
    }
}

/// The three state LEDs, by meaning rather than by colour.
#[derive(Debug)]
pub struct LedBank<P> {
    /// Green on the reference panel.
    pub online: Led<P>,
    /// Amber on the reference panel.
    pub draining: Led<P>,
    /// Red on the reference panel.
    pub offline: Led<P>,
}

impl<P: OutputPin> LedBank<P> {
    /// Writes all three LEDs. All three, always: a write also repairs an LED that
    /// something else (a kernel trigger, a person at a shell) has changed.
    pub fn write(&mut self, leds: Leds) -> Result<(), P::Error> {
        self.online.set(leds.online)?;
        self.draining.set(leds.draining)?;
        self.offline.set(leds.offline)
    }
}
