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
    use std::os::unix::net::UnixDatagram;
    use std::process::Command;
    use std::time::Duration;

    /// Set in the child this test runs: only there does `child_notifies` send anything.
    const CHILD: &str = "SBC_NOTIFY_TEST_CHILD";

    /// Runs `child_notifies` in a fresh process of this test binary with `notify_socket` as its
    /// `NOTIFY_SOCKET` (none when `None`), so neither case depends on how the tests were run.
    fn run_child(notify_socket: Option<&std::path::Path>) {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "notify::tests::child_notifies",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env_remove("NOTIFY_SOCKET");
        if let Some(path) = notify_socket {
            cmd.env("NOTIFY_SOCKET", path);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn child_notifies() {
        // In the parent's own run this is a no-op by design; the assertions live in the tests
        // below, which run it as a child.
        if std::env::var_os(CHILD).is_some() {
            super::ready().unwrap();
            super::status("testing").unwrap();
            super::watchdog().unwrap();
        }
    }

    #[test]
    fn under_systemd_each_notification_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        run_child(Some(&path));
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        for _ in 0..3 {
            let n = socket.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned());
        }
        assert_eq!(got, ["READY=1", "STATUS=testing", "WATCHDOG=1"]);
    }

    #[test]
    fn outside_systemd_notifications_are_harmless() {
        run_child(None);
    }
}
