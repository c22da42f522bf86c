//! Liveness of the SIP threads and systemd's watchdog (SPEC §6).
//!
//! Each SIP thread (workers and the engine) stamps its own heartbeat from a task on its own
//! runtime; a thread that is wedged (stuck in a loop, blocked in a call) stops stamping. The
//! control plane sends `WATCHDOG=1` only while every heartbeat is fresh, so systemd restarts
//! a daemon with a wedged thread instead of letting it hold the box's addresses without serving.

use std::path::{Path, PathBuf};
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
/// When the watchdog is withheld, the stale threads are written to `<state dir>/`
/// [`WITHHELD_FILE`], so the next sbcd can say why it was restarted.
pub fn start_watchdog(beats: Arc<Heartbeats>, state_dir: PathBuf) -> Option<String> {
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
                if reported {
                    reported = false;
                    tracing::warn!("SIP threads beating again; feeding the watchdog");
                    let _ = std::fs::remove_file(state_dir.join(WITHHELD_FILE));
                }
                if let Err(e) = board::notify::watchdog() {
                    tracing::warn!(error = %e, "cannot notify the systemd watchdog");
                }
            } else if !reported {
                reported = true;
                let threads = stale.join(",");
                tracing::error!(
                    threads = %threads,
                    "SIP thread not making progress; withholding the watchdog so systemd restarts sbcd"
                );
                let temp = state_dir.join(format!(".{WITHHELD_FILE}.tmp"));
                let path = state_dir.join(WITHHELD_FILE);
                if let Err(e) =
                    write_durably(&state_dir, &temp, &path, format!("{threads}\n").as_bytes())
                {
                    tracing::warn!(path = %path.display(), error = %e, "cannot record the wedged threads");
                }
            }
        }
    });
    Some(format!(
        "systemd WatchdogSec (fed every {} ms while SIP threads beat)",
        interval.as_millis()
    ))
}

/// The marker that says an sbcd is running; found at start, it means the last one did not
/// stop cleanly (crash, kill, watchdog restart, power loss). It holds the pid and the kernel's
/// boot id: a marker from another boot means the box itself went down under a running sbcd
/// (a hardware watchdog reset, a power cut, a panic), not just the daemon.
const RUNNING_MARKER: &str = "sbcd.running";
/// How many such recoveries this box has seen (daemon restarts and box resets together).
const RECOVERIES_FILE: &str = "recoveries";
/// How many of them were resets of the whole box.
const BOX_RESETS_FILE: &str = "box-resets";
/// Written while the watchdog is withheld: the SIP threads that stopped making progress.
const WITHHELD_FILE: &str = "sbcd.withheld";
/// Why the last recovery happened, kept until the next one.
const LAST_RECOVERY_FILE: &str = "last-recovery";

/// What [`count_recoveries`] found, for `show health`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recoveries {
    /// Every unclean end of an sbcd on this box, across restarts and reboots.
    pub total: u64,
    /// Of those, the ones where the box itself went down (the marker was from another boot).
    pub box_resets: u64,
    /// Why this boot happened, when the previous one ended under a running sbcd.
    pub last_box_reset: Option<String>,
    /// Why the last recovery (of either kind) happened, as far as the box could tell.
    pub last_cause: Option<String>,
}

impl Recoveries {
    /// One line for `show health`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut text = format!("box resets {}", self.box_resets);
        if let Some(cause) = &self.last_box_reset {
            text.push_str(&format!(" (this boot: {cause})"));
        }
        text
    }
}

/// Where the box learns why it last booted.
#[derive(Debug, Clone)]
pub struct BootFacts {
    /// `/proc/sys/kernel/random/boot_id`: different on every boot.
    pub boot_id: Option<String>,
    /// `WDIOF_CARDRESET` in the hardware watchdog's boot status (not every driver reports it).
    pub watchdog_reset: bool,
}

impl BootFacts {
    /// This boot's facts, read from the kernel.
    #[must_use]
    pub fn read() -> BootFacts {
        let status = board::watchdog::sysfs_status(Path::new("/sys/class/watchdog"), "watchdog0");
        BootFacts {
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_string()),
            watchdog_reset: status.reset_by_watchdog(),
        }
    }
}

fn read_count(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Written via a temporary, fsynced, renamed, and the directory fsynced: the counts must
/// survive exactly the events they count (a watchdog reset comes without a clean unmount).
fn write_count(state_dir: &Path, name: &str, count: u64) {
    let path = state_dir.join(name);
    let temp = state_dir.join(format!(".{name}.tmp"));
    if let Err(e) = write_durably(state_dir, &temp, &path, format!("{count}\n").as_bytes()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot save a recovery count");
    }
}

pub(crate) fn write_durably(
    dir: &Path,
    temp: &Path,
    path: &Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Counts a recovery when the previous sbcd did not stop cleanly (and a box reset when that
/// sbcd ran in another boot), marks this one as running, and returns the totals. Failures only
/// cost the count (logged), never the start.
pub fn count_recoveries(state_dir: &Path, boot: &BootFacts) -> Recoveries {
    let marker = state_dir.join(RUNNING_MARKER);
    let mut found = Recoveries {
        total: read_count(&state_dir.join(RECOVERIES_FILE)),
        box_resets: read_count(&state_dir.join(BOX_RESETS_FILE)),
        last_box_reset: None,
        last_cause: std::fs::read_to_string(state_dir.join(LAST_RECOVERY_FILE))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
    };
    let withheld = std::fs::read_to_string(state_dir.join(WITHHELD_FILE))
        .ok()
        .map(|s| s.trim().to_string());
    let _ = std::fs::remove_file(state_dir.join(WITHHELD_FILE));
    if let Ok(previous) = std::fs::read_to_string(&marker) {
        found.total += 1;
        write_count(state_dir, RECOVERIES_FILE, found.total);
        // An old marker holds only a pid: count it as a daemon restart, not a box reset.
        let previous_boot = previous.split_whitespace().nth(1);
        let other_boot = match (previous_boot, boot.boot_id.as_deref()) {
            (Some(then), Some(now)) => then != now,
            _ => false,
        };
        if other_boot {
            found.box_resets += 1;
            write_count(state_dir, BOX_RESETS_FILE, found.box_resets);
            let cause = if boot.watchdog_reset {
                "reset by the hardware watchdog"
            } else {
                "unclean end of the previous boot (watchdog reset, power loss or panic)"
            };
            found.last_box_reset = Some(cause.to_string());
            found.last_cause = Some(cause.to_string());
            tracing::warn!(
                recoveries = found.total,
                box_resets = found.box_resets,
                cause,
                "the box went down while sbcd was running"
            );
        } else {
            let cause = match &withheld {
                Some(threads) => {
                    format!("watchdog restart: SIP thread {threads} stopped making progress")
                }
                None => "sbcd ended without a clean stop (crash, kill or out of memory)".into(),
            };
            tracing::warn!(
                recoveries = found.total,
                cause = %cause,
                "previous sbcd did not stop cleanly"
            );
            found.last_cause = Some(cause);
        }
        if let Some(cause) = &found.last_cause {
            let temp = state_dir.join(format!(".{LAST_RECOVERY_FILE}.tmp"));
            let path = state_dir.join(LAST_RECOVERY_FILE);
            if let Err(e) = write_durably(state_dir, &temp, &path, format!("{cause}\n").as_bytes())
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot save the recovery cause");
            }
        }
    }
    let boot_id = boot.boot_id.as_deref().unwrap_or("-");
    let mark = format!("{} {boot_id}\n", std::process::id());
    let temp = state_dir.join(format!(".{RUNNING_MARKER}.tmp"));
    if let Err(e) = write_durably(state_dir, &temp, &marker, mark.as_bytes()) {
        tracing::warn!(path = %marker.display(), error = %e, "cannot write the running marker");
    }
    found
}

/// A clean stop: the next start is not a recovery.
pub fn clear_running_marker(state_dir: &Path) {
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

    fn boot(id: &str, watchdog_reset: bool) -> BootFacts {
        BootFacts {
            boot_id: Some(id.to_string()),
            watchdog_reset,
        }
    }

    #[test]
    fn restarts_and_box_resets_are_counted_apart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = dir.path();
        assert_eq!(
            count_recoveries(state, &boot("one", false)),
            Recoveries::default()
        );
        // Same boot, marker left behind: a daemon restart.
        let r = count_recoveries(state, &boot("one", false));
        assert_eq!((r.total, r.box_resets), (1, 0));
        // Another boot with the marker still there: the box went down under sbcd.
        let r = count_recoveries(state, &boot("two", true));
        assert_eq!((r.total, r.box_resets), (2, 1));
        assert_eq!(
            r.last_box_reset.as_deref(),
            Some("reset by the hardware watchdog")
        );
        // A clean stop, then a reboot: nothing to count.
        clear_running_marker(state);
        let r = count_recoveries(state, &boot("three", false));
        assert_eq!((r.total, r.box_resets, r.last_box_reset), (2, 1, None));
        // The cause of the last recovery is kept across clean restarts.
        assert_eq!(
            r.last_cause.as_deref(),
            Some("reset by the hardware watchdog")
        );
    }

    #[test]
    fn a_watchdog_restart_names_the_wedged_thread() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = dir.path();
        count_recoveries(state, &boot("one", false));
        // What the watchdog task writes when it withholds the watchdog, then systemd kills.
        std::fs::write(state.join(WITHHELD_FILE), "sip-worker-0\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let r = count_recoveries(state, &boot("one", false));
        assert_eq!(r.total, 1);
        assert_eq!(
            r.last_cause.as_deref(),
            Some("watchdog restart: SIP thread sip-worker-0 stopped making progress")
        );
        assert!(!state.join(WITHHELD_FILE).exists());
        // The next unclean end without a withheld watchdog is a crash or a kill.
        let r = count_recoveries(state, &boot("one", false));
        assert!(r
            .last_cause
            .is_some_and(|c| c.starts_with("sbcd ended without a clean stop")));
    }

    #[test]
    fn a_marker_without_a_boot_id_is_a_daemon_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join(RUNNING_MARKER), "1234\n").unwrap_or_else(|e| panic!("{e}"));
        let r = count_recoveries(dir.path(), &boot("one", false));
        assert_eq!((r.total, r.box_resets), (1, 0));
    }
}
