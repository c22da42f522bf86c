//! Board support for the SBC appliance: loading `board/<name>/board.toml`, and
//! the Linux drivers the profile names — GPIO character-device lines, LED class
//! devices, evdev keys, the watchdog device — plus CPU pinning, memory locking
//! and sd_notify (SPEC §4, §6, §8).
//!
//! This is a shell: it opens devices and moves bytes, and decides nothing.
//! Button gestures and LED patterns are the pure `panel` crate's; what a hold
//! does to the system state, and which thread goes on which core, are the
//! daemon's. No code here branches on a board's name: the profile says which
//! backend, line, key and polarity to use.
//!
//! Entry points for the daemon: [`profile::load`], [`driver::PanelDriver`],
//! [`sim::SimPanel`] (via [`driver::PanelDriver::sim`]), [`watchdog`],
//! [`cpus`] and [`notify`].

pub mod clock;
pub mod cpus;
pub mod driver;
pub mod evdev;
pub mod gpio;
pub mod ledclass;
pub mod notify;
pub mod profile;
pub mod sim;
pub mod watchdog;

pub use clock::monotonic_now;
pub use driver::{LedRole, PanelDriver, PanelDriverStatus, PanelWaker};
pub use profile::{load, Profile, ProfileError};
pub use sim::{SimError, SimPanel};
