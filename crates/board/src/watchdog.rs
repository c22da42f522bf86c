//! The hardware watchdog device (`/dev/watchdogN`, SPEC §6).
//!
//! On the box systemd owns the watchdog (`RuntimeWatchdogSec=`) and `sbcd` only
//! answers systemd's software watchdog through [`crate::notify`]; this driver is
//! for boards or tests that run without systemd, and its sysfs reader is for
//! `show health` either way. It feeds nothing by itself: a keepalive happens
//! only when the caller decides the workers are healthy.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

mod ioctls {
    // From linux/watchdog.h: all requests use the 'W' type.
    nix::ioctl_read!(get_support, b'W', 0, super::WatchdogInfo);
    nix::ioctl_read!(get_boot_status, b'W', 2, libc::c_int);
    nix::ioctl_read!(keepalive, b'W', 5, libc::c_int);
    nix::ioctl_readwrite!(set_timeout, b'W', 6, libc::c_int);
    nix::ioctl_read!(get_timeout, b'W', 7, libc::c_int);
}

/// `struct watchdog_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchdogInfo {
    /// `WDIOF_*` capability bits.
    pub options: u32,
    /// Driver-specific firmware version.
    pub firmware_version: u32,
    /// NUL-padded driver identity.
    pub identity: [u8; 32],
}

impl WatchdogInfo {
    /// The identity as text.
    #[must_use]
    pub fn identity(&self) -> String {
        let end = self.identity.iter().position(|&b| b == 0).unwrap_or(32);
        String::from_utf8_lossy(&self.identity[..end]).into_owned()
    }
}

/// `WDIOF_CARDRESET` in the boot status: the last reboot was the watchdog's doing.
pub const WDIOF_CARDRESET: u32 = 0x0020;

/// A watchdog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// Opening or writing the device failed.
    #[error("{path}: {source}")]
    Io {
        /// The device.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// An ioctl failed (ENOTTY: not a watchdog; EINVAL: timeout out of range).
    #[error("{path}: {what} failed: {source}")]
    Ioctl {
        /// The device.
        path: PathBuf,
        /// Which request.
        what: &'static str,
        /// Why.
        source: nix::Error,
    },
    /// A timeout that the interface cannot carry.
    #[error("{path}: timeout {secs} s out of range")]
    Range {
        /// The device.
        path: PathBuf,
        /// What was asked.
        secs: u32,
    },
}

/// An open, therefore armed, watchdog device.
///
/// Dropping it without [`close`](Self::close) leaves it armed: if the program
/// dies, the box resets, which is the point. `close` disarms it with the magic
/// `V` (drivers built with `nowayout` ignore that, also by design).
#[derive(Debug)]
pub struct Watchdog {
    file: File,
    path: PathBuf,
}

impl Watchdog {
    /// Opens (and so arms) the watchdog at `path`.
    pub fn open(path: &Path) -> Result<Self, WatchdogError> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| WatchdogError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(Watchdog {
            file,
            path: path.to_owned(),
        })
    }

    /// Sets the timeout; returns what the driver actually chose, which may be
    /// rounded to its hardware's granularity.
    #[allow(unsafe_code)]
    pub fn set_timeout(&mut self, secs: u32) -> Result<u32, WatchdogError> {
        let mut value = libc::c_int::try_from(secs).map_err(|_| WatchdogError::Range {
            path: self.path.clone(),
            secs,
        })?;
        // SAFETY: the fd is the open watchdog; the kernel reads and writes one
        // c_int through a pointer to a live local.
        unsafe { ioctls::set_timeout(self.file.as_raw_fd(), &mut value) }
            .map_err(|e| self.ioctl_error("WDIOC_SETTIMEOUT", e))?;
        Ok(u32::try_from(value).unwrap_or(0))
    }

    /// The timeout in seconds.
    #[allow(unsafe_code)]
    pub fn timeout(&self) -> Result<u32, WatchdogError> {
        let mut value: libc::c_int = 0;
        // SAFETY: as in `set_timeout`; the kernel only writes the c_int.
        unsafe { ioctls::get_timeout(self.file.as_raw_fd(), &mut value) }
            .map_err(|e| self.ioctl_error("WDIOC_GETTIMEOUT", e))?;
        Ok(u32::try_from(value).unwrap_or(0))
    }

    /// Restarts the countdown. Call it only when the system is known healthy.
    #[allow(unsafe_code)]
    pub fn keepalive(&mut self) -> Result<(), WatchdogError> {
        let mut unused: libc::c_int = 0;
        // SAFETY: the fd is the open watchdog; the kernel ignores the argument
        // but the request is declared as a read of one c_int, so give it one.
        unsafe { ioctls::keepalive(self.file.as_raw_fd(), &mut unused) }
            .map(drop)
            .map_err(|e| self.ioctl_error("WDIOC_KEEPALIVE", e))
    }

    /// The driver's identity and capabilities.
    #[allow(unsafe_code)]
    pub fn info(&self) -> Result<WatchdogInfo, WatchdogError> {
        let mut info = WatchdogInfo::default();
        // SAFETY: `WatchdogInfo` is `repr(C)` with the layout of
        // `struct watchdog_info`; the kernel writes exactly that much.
        unsafe { ioctls::get_support(self.file.as_raw_fd(), &mut info) }
            .map_err(|e| self.ioctl_error("WDIOC_GETSUPPORT", e))?;
        Ok(info)
    }

    /// The boot status bits (`WDIOF_CARDRESET` when the watchdog caused the last reset).
    #[allow(unsafe_code)]
    pub fn boot_status(&self) -> Result<u32, WatchdogError> {
        let mut value: libc::c_int = 0;
        // SAFETY: as in `timeout`.
        unsafe { ioctls::get_boot_status(self.file.as_raw_fd(), &mut value) }
            .map_err(|e| self.ioctl_error("WDIOC_GETBOOTSTATUS", e))?;
        Ok(value as u32)
    }

    /// Disarms the watchdog (magic close) and closes it.
    pub fn close(mut self) -> Result<(), WatchdogError> {
        self.file
            .write_all(b"V")
            .map_err(|source| WatchdogError::Io {
                path: self.path.clone(),
                source,
            })
    }

    fn ioctl_error(&self, what: &'static str, source: nix::Error) -> WatchdogError {
        WatchdogError::Ioctl {
            path: self.path.clone(),
            what,
            source,
        }
    }
}

/// What sysfs says about a watchdog, readable while systemd holds the device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchdogStatus {
    /// Driver identity, e.g. `i6300ESB timer` or `SP5100 TCO timer`.
    pub identity: Option<String>,
    /// Current timeout in seconds.
    pub timeout_secs: Option<u32>,
    /// Whether it is running (`active` / `inactive`).
    pub state: Option<String>,
    /// Boot status bits.
    pub bootstatus: Option<u32>,
}

impl WatchdogStatus {
    /// Whether the last reset was the watchdog's.
    #[must_use]
    pub fn reset_by_watchdog(&self) -> bool {
        self.bootstatus.is_some_and(|b| b & WDIOF_CARDRESET != 0)
    }
}

/// Reads `/sys/class/watchdog/<name>` (`name` like `watchdog0`); absent
/// attributes stay `None`, since drivers differ in what they export.
#[must_use]
pub fn sysfs_status(class_dir: &Path, name: &str) -> WatchdogStatus {
    let dir = class_dir.join(name);
    let read = |attr: &str| {
        std::fs::read_to_string(dir.join(attr))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    WatchdogStatus {
        identity: read("identity"),
        timeout_secs: read("timeout").and_then(|s| s.parse().ok()),
        state: read("state"),
        bootstatus: read("bootstatus").and_then(|s| s.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_info_struct_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<WatchdogInfo>(), 40);
        let mut info = WatchdogInfo::default();
        info.identity[..14].copy_from_slice(b"i6300ESB timer");
        assert_eq!(info.identity(), "i6300ESB timer");
    }

    #[test]
    fn a_file_that_is_not_a_watchdog_is_refused_by_the_kernel() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("not-a-watchdog");
        std::fs::write(&path, b"").unwrap_or_else(|e| panic!("{e}"));
        let mut wd = Watchdog::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let err = wd.set_timeout(30).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("WDIOC_SETTIMEOUT")));
        assert!(wd.keepalive().is_err());
        assert!(wd.timeout().is_err());
        assert!(wd.close().is_ok());
        assert_eq!(std::fs::read(&path).ok(), Some(b"V".to_vec()));
    }

    #[test]
    fn sysfs_status_reads_what_exists() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let wd = dir.path().join("watchdog0");
        std::fs::create_dir_all(&wd).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(wd.join("identity"), "i6300ESB timer\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(wd.join("timeout"), "30\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(wd.join("bootstatus"), "32\n").unwrap_or_else(|e| panic!("{e}"));
        let s = sysfs_status(dir.path(), "watchdog0");
        assert_eq!(s.identity.as_deref(), Some("i6300ESB timer"));
        assert_eq!(s.timeout_secs, Some(30));
        assert_eq!(s.state, None);
        assert!(s.reset_by_watchdog());
    }
}
