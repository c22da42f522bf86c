//! The panel's notion of time: milliseconds since an epoch the caller picks.
//!
//! The state machines never read a clock. The shell passes `Instant`s taken from
//! one monotonic source (on Linux, `CLOCK_MONOTONIC`), so that kernel event
//! timestamps and "now" can be compared directly.

/// A point in time, in milliseconds since the caller's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant(0);

    /// An instant `ms` milliseconds after the epoch.
    #[must_use]
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since the epoch.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant moved `ms` later; saturates instead of wrapping, because a
    /// deadline at the end of time simply never fires.
    #[must_use]
    pub const fn after_ms(self, ms: u64) -> Self {
        Instant(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero when `earlier` is later.
    #[must_use]
    pub const fn ms_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
