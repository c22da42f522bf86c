//! The shell's clock for the panel: `CLOCK_MONOTONIC` in milliseconds.
//!
//! The same clock the kernel uses for GPIO edge events and (once asked) for
//! input events, so their timestamps and "now" are directly comparable.

use nix::time::{clock_gettime, ClockId};
use panel::Instant;

/// Now, on `CLOCK_MONOTONIC`.
#[must_use]
pub fn monotonic_now() -> Instant {
    // CLOCK_MONOTONIC cannot fail on Linux; a zero would only stall blinking.
    let ms = clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|ts| {
            let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
            let ms = u64::try_from(ts.tv_nsec()).unwrap_or(0) / 1_000_000;
            secs.saturating_mul(1000).saturating_add(ms)
        })
        .unwrap_or(0);
    Instant::from_millis(ms)
}

/// A kernel timestamp in nanoseconds on `CLOCK_MONOTONIC`, as an [`Instant`].
#[must_use]
pub const fn from_monotonic_ns(ns: u64) -> Instant {
    Instant::from_millis(ns / 1_000_000)
}
