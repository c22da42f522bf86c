//! Front-panel logic for the SBC appliance (SPEC §4): button debouncing, the
//! short-press / hold gesture, and the LED patterns for system state, twin role
//! and engine health.
//!
//! It is for deciding: it is pure, `no_std`, and reads no clock; time comes in
//! as an [`Instant`] and the machine says when it next wants to be called. It
//! is not for talking to hardware beyond the thin embedded-hal adapters in
//! [`pins`]; opening GPIO lines, LED class devices or input devices, and
//! applying a hold to the system state, belong to the `board` crate and the
//! daemon. Its input enums ([`StateView`], [`TwinRole`], [`EngineHealth`]) are
//! its own, so it depends on no other crate of the workspace.
#![cfg_attr(not(test), no_std)]

pub mod debounce;
pub mod gesture;
pub mod leds;
mod machine;
pub mod pins;
pub mod time;

pub use leds::{EngineHealth, HoldAction, Leds, Pattern, StateView, SystemView, TwinRole};
pub use machine::{Display, Panel, PanelConfig, PanelEvent, PanelStatus};
pub use pins::{Button, Led, LedBank, Polarity};
pub use time::Instant;

#[cfg(test)]
mod tests;
