//! Debouncing: decides when a raw button level is to be believed.
//!
//! A level counts once it has been seen unchanged for `settle_ms`. The time of
//! the change is reported as the time the raw level first changed, not when the
//! debouncer became sure, so that press durations do not depend on how late the
//! caller got round to [`Debouncer::handle_timeout`].

use crate::time::Instant;

/// A debounced level change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The new level (`true` = pressed).
    pub pressed: bool,
    /// When the raw level went to `pressed` and stayed there.
    pub at: Instant,
}

/// Time-based debouncer for one input.
///
/// Contract: feed every raw sample with [`handle_sample`](Self::handle_sample)
/// (polled backends sample periodically; edge backends feed one sample per
/// edge, stamped with the edge's kernel time, possibly in a late batch), and
/// call [`handle_timeout`](Self::handle_timeout) once
/// [`poll_timeout`](Self::poll_timeout) has passed, because an edge backend
/// sends no further sample when the level simply stays put. Both yield the
/// debounced changes, oldest first. Sample times must not go backwards (an
/// earlier one is taken as the latest seen); a sample is judged on its own
/// timestamp, not on the time it is handled, so a batch of stale bounces is
/// filtered the same way as a live one.
#[derive(Debug, Clone)]
pub struct Debouncer {
    settle_ms: u64,
    stable: bool,
    raw: bool,
    raw_since: Instant,
    last_sample: Instant,
}

impl Debouncer {
    /// A debouncer that believes `initial` as of `now`.
    #[must_use]
    pub const fn new(settle_ms: u64, initial: bool, now: Instant) -> Self {
        Debouncer {
            settle_ms,
            stable: initial,
            raw: initial,
            raw_since: now,
            last_sample: now,
        }
    }

    /// The debounced level.
    #[must_use]
    pub const fn is_pressed(&self) -> bool {
        self.stable
    }

    /// Feeds a raw sample taken at `at`. At most two changes come out: the level
    /// before this sample (if it had settled by `at`) and, with no settle time,
    /// this sample's own level.
    pub fn handle_sample(&mut self, at: Instant, pressed: bool) -> impl Iterator<Item = Change> {
        let at = self.last_sample.max(at);
        self.last_sample = at;
        // The level before this sample may have lasted long enough by now.
        let before = self.settle(at);
        if pressed != self.raw {
            self.raw = pressed;
            self.raw_since = at;
        }
        let after = self.settle(at);
        [before, after].into_iter().flatten()
    }

    /// Lets time pass without a new sample.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Change> {
        self.settle(now)
    }

    /// When the pending raw level will have settled, if one is pending.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.raw != self.stable).then(|| self.raw_since.after_ms(self.settle_ms))
    }

    fn settle(&mut self, now: Instant) -> Option<Change> {
        if self.raw != self.stable && now.ms_since(self.raw_since) >= self.settle_ms {
            self.stable = self.raw;
            return Some(Change {
                pressed: self.stable,
                at: self.raw_since,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn one(changes: impl Iterator<Item = Change>) -> Option<Change> {
        let all: Vec<_> = changes.collect();
        assert!(all.len() <= 1, "{all:?}");
        all.first().copied()
    }

    #[test]
    fn bounces_shorter_than_settle_time_are_ignored() {
        let mut d = Debouncer::new(20, false, t(0));
        assert_eq!(one(d.handle_sample(t(100), true)), None);
        assert_eq!(one(d.handle_sample(t(105), false)), None);
        assert_eq!(one(d.handle_sample(t(110), true)), None);
        assert_eq!(one(d.handle_sample(t(125), true)), None);
        assert_eq!(
            one(d.handle_sample(t(130), true)),
            Some(Change {
                pressed: true,
                at: t(110)
            })
        );
        assert!(d.is_pressed());
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn an_edge_source_settles_on_timeout() {
        let mut d = Debouncer::new(20, false, t(0));
        assert_eq!(one(d.handle_sample(t(50), true)), None);
        assert_eq!(d.poll_timeout(), Some(t(70)));
        assert_eq!(d.handle_timeout(t(69)), None);
        let change = d.handle_timeout(t(70));
        assert_eq!(
            change,
            Some(Change {
                pressed: true,
                at: t(50)
            })
        );
    }

    #[test]
    fn a_late_caller_still_gets_the_edge_time() {
        let mut d = Debouncer::new(20, false, t(0));
        let _ = one(d.handle_sample(t(50), true));
        assert_eq!(d.handle_timeout(t(400)).map(|c| c.at), Some(t(50)));
    }

    #[test]
    fn zero_settle_time_passes_everything_through() {
        let mut d = Debouncer::new(0, false, t(0));
        assert!(one(d.handle_sample(t(1), true)).is_some());
        assert!(one(d.handle_sample(t(1), false)).is_some());
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let mut d = Debouncer::new(20, false, t(1000));
        assert_eq!(one(d.handle_sample(t(10), true)), None);
        assert_eq!(d.poll_timeout(), Some(t(1020)));
    }
}
