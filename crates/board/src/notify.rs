//! Talking to systemd (`Type=notify`, `WatchdogSec=`), SPEC §6.
//!
//! Thin wrappers over `sd-notify` so the daemon has one place to call. Each is
//! a no-op outside systemd (no `NOTIFY_SOCKET`). Deciding *when* to send
//! `WATCHDOG=1` (only while every SIP worker makes progress) is the daemon's job.

use std::io;
use std::time::Duration;

use sd_notify::NotifyState;

/// Startup is finished.
pub fn ready() -> io::Result<()> {
    sd_notify::notify(&[NotifyState::Ready])
}

/// Everything is healthy: restart systemd's watchdog countdown.
pub fn watchdog() -> io::Result<()> {
    sd_notify::notify(&[NotifyState::Watchdog])
}

/// A line for `systemctl status`.
pub fn status(text: &str) -> io::Result<()> {
    sd_notify::notify(&[NotifyState::Status(text)])
}

/// Shutting down on purpose.
pub fn stopping() -> io::Result<()> {
    sd_notify::notify(&[NotifyState::Stopping])
}

/// How often to send [`watchdog`] when systemd expects it: half of
/// `WatchdogSec=`, so one late tick is not yet a restart. `None` when the unit
/// has no watchdog.
#[must_use]
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

#[cfg(test)]
mod tests {
    #[test]
    fn outside_systemd_notifications_are_harmless() {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(super::ready().is_ok());
            assert!(super::watchdog().is_ok());
            assert!(super::status("testing").is_ok());
        }
    }
}
