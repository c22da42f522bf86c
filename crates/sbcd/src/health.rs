//! Liveness of the SIP threads and systemd's watchdog (SPEC §6).
//!
//! Each SIP thread (workers and the engine) stamps its own heartbeat from a task on its own
//! runtime; a thread that is wedged (stuck in a loop, blocked in a call) stops stamping. The
//! control plane sends `WATCHDOG=1` only while every heartbeat is fresh, so systemd restarts
//! a daemon with a wedged thread instead of letting it hold the box's addresses without serving.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a healthy thread stamps its heartbeat.
pub const BEAT: Duration = Duration::from_millis(250);

/// Heartbeats of the SIP threads, by name.
#[derive(Debug)]
pub struct Heartbeats {
    origin: Instant,
    /// Milliseconds since `origin` of each thread's last beat.
    beats: Vec<(String, AtomicU64)>,
}

impl Heartbeats {
    /// One heartbeat per name, all fresh now.
    pub fn new(names: impl IntoIterator<Item = String>) -> Arc<Heartbeats> {
        Arc::new(Heartbeats {
            origin: Instant::now(),
            beats: names.into_iter().map(|n| (n, AtomicU64::new(0))).collect(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Stamps heartbeat `index` every [`BEAT`] for as long as its runtime runs tasks.
    pub fn spawn_beat(self: &Arc<Self>, index: usize) {
        let beats = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(BEAT);
            loop {
                tick.tick().await;
                if let Some((_, at)) = beats.beats.get(index) {
                    at.store(beats.now_ms(), Ordering::Relaxed);
                }
            }
        });
    }

    /// The threads whose last beat is older than `limit`.
    pub fn stale(&self, limit: Duration) -> Vec<&str> {
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.stale_at(self.now_ms(), limit)
    }

    fn stale_at(&self, now: u64, limit: u64) -> Vec<&str> {
        self.beats
            .iter()
            .filter(|(_, at)| now.saturating_sub(at.load(Ordering::Relaxed)) > limit)
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// Feeds systemd's watchdog while every SIP thread beats; does nothing outside a unit with
/// `WatchdogSec=`. Returns a description for `show health`.
pub fn start_watchdog(beats: Arc<Heartbeats>) -> Option<String> {
    let interval = board::notify::watchdog_interval()?;
    // A thread that missed several beats is wedged; a single late beat is scheduling noise.
    let limit = interval.max(BEAT * 4);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        let mut reported = false;
        loop {
            tick.tick().await;
            let stale = beats.stale(limit);
            if stale.is_empty() {
                reported = false;
                if let Err(e) = board::notify::watchdog() {
                    tracing::warn!(error = %e, "cannot notify the systemd watchdog");
                }
            } else if !reported {
                reported = true;
                tracing::error!(
                    threads = %stale.join(","),
                    "SIP thread not making progress; withholding the watchdog so systemd restarts sbcd"
                );
            }
        }
    });
    Some(format!(
        "systemd WatchdogSec (fed every {} ms while SIP threads beat)",
        interval.as_millis()
    ))
}

/// The marker that says an sbcd is running; found at start, it means the last one did not
/// stop cleanly (crash, kill, watchdog restart, power loss).
const RUNNING_MARKER: &str = "sbcd.running";
/// How many such recoveries this box has seen.
const RECOVERIES_FILE: &str = "recoveries";

/// Counts a recovery when the previous sbcd did not stop cleanly, marks this one as running,
/// and returns the total. Failures only cost the count (logged), never the start.
pub fn count_recoveries(state_dir: &std::path::Path) -> u64 {
    let marker = state_dir.join(RUNNING_MARKER);
    let counter = state_dir.join(RECOVERIES_FILE);
    let mut count: u64 = std::fs::read_to_string(&counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if marker.exists() {
        count += 1;
        tracing::warn!(recoveries = count, "previous sbcd did not stop cleanly");
        // Written via a temporary and a rename so a crash now cannot leave half a number.
        let temp = state_dir.join(".recoveries.tmp");
        let written = std::fs::write(&temp, format!("{count}\n"))
            .and_then(|()| std::fs::rename(&temp, &counter));
        if let Err(e) = written {
            tracing::warn!(path = %counter.display(), error = %e, "cannot save the recovery count");
        }
    }
    if let Err(e) = std::fs::write(&marker, format!("{}\n", std::process::id())) {
        tracing::warn!(path = %marker.display(), error = %e, "cannot write the running marker");
    }
    count
}

/// A clean stop: the next start is not a recovery.
pub fn clear_running_marker(state_dir: &std::path::Path) {
    let _ = std::fs::remove_file(state_dir.join(RUNNING_MARKER));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_stops_beating_goes_stale() {
        let beats = Heartbeats::new(["a".to_string(), "b".to_string()]);
        assert!(beats.stale_at(500, 1000).is_empty());
        beats.beats[0].1.store(2500, Ordering::Relaxed);
        assert_eq!(beats.stale_at(3000, 1000), ["b"]);
    }
}
