//! Input event keys (evdev): a button that the kernel reports as a key, such as
//! `gpio-keys` on the APU2 or a key of QEMU's emulated keyboard.
//!
//! Reads `struct input_event` records straight from `/dev/input/eventN` and finds
//! the device through sysfs (name and key capability bitmap). It does not
//! interpret gestures: it hands timestamped up/down samples to the panel.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use panel::Instant;

/// A Linux key code (`KEY_*` from `linux/input-event-codes.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyCode(u16);

/// Keys a panel button is likely to be, by name. Others can be given by number.
const KEY_NAMES: &[(&str, u16)] = &[
    ("KEY_ESC", 1),
    ("KEY_SCROLLLOCK", 70),
    ("KEY_F11", 87),
    ("KEY_F12", 88),
    ("KEY_POWER", 116),
    ("KEY_PAUSE", 119),
    ("KEY_HELP", 138),
    ("KEY_MENU", 139),
    ("KEY_SETUP", 141),
    ("KEY_SLEEP", 142),
    ("KEY_WAKEUP", 143),
    ("KEY_PROG1", 148),
    ("KEY_PROG2", 149),
    ("KEY_CONFIG", 171),
    ("KEY_F13", 183),
    ("KEY_F14", 184),
    ("KEY_F15", 185),
    ("KEY_F16", 186),
    ("KEY_F17", 187),
    ("KEY_F18", 188),
    ("KEY_F19", 189),
    ("KEY_F20", 190),
    ("KEY_F21", 191),
    ("KEY_F22", 192),
    ("KEY_F23", 193),
    ("KEY_F24", 194),
    ("KEY_PROG3", 202),
    ("KEY_PROG4", 203),
    ("KEY_VENDOR", 0x168),
    ("KEY_RESTART", 0x198),
];

/// `KEY_MAX` of the uAPI.
const KEY_MAX: u16 = 0x2ff;

impl KeyCode {
    /// The key with this code, if it is a key code at all.
    #[must_use]
    pub const fn from_code(code: u16) -> Option<Self> {
        if code > 0 && code <= KEY_MAX {
            Some(KeyCode(code))
        } else {
            None
        }
    }

    /// The numeric code.
    #[must_use]
    pub const fn code(self) -> u16 {
        self.0
    }

    /// The `KEY_*` name, when it is one we know.
    #[must_use]
    pub fn name(self) -> Option<&'static str> {
        KEY_NAMES
            .iter()
            .find(|&&(_, code)| code == self.0)
            .map(|&(name, _)| name)
    }
}

impl fmt::Display for KeyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::str::FromStr for KeyCode {
    type Err = String;

    /// A `KEY_*` name from the table, or a number (decimal or `0x` hex).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(&(_, code)) = KEY_NAMES.iter().find(|&&(name, _)| name == s) {
            return Ok(KeyCode(code));
        }
        let number = match s.strip_prefix("0x") {
            Some(hex) => u16::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        };
        number.and_then(KeyCode::from_code).ok_or_else(|| {
            let known: Vec<&str> = KEY_NAMES.iter().map(|&(n, _)| n).collect();
            format!(
                "unknown key {s:?}: give a code number or one of {}",
                known.join(", ")
            )
        })
    }
}

impl TryFrom<String> for KeyCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Finding or reading the input device failed.
#[derive(Debug, thiserror::Error)]
pub enum EvdevError {
    /// No input device matched.
    #[error("no input device {wanted} in {dir}")]
    NotFound {
        /// What was looked for.
        wanted: String,
        /// Where.
        dir: PathBuf,
    },
    /// The device node could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The device node.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// An ioctl on the device failed.
    #[error("{path}: {what} failed: {source}")]
    Ioctl {
        /// The device node.
        path: PathBuf,
        /// Which request.
        what: &'static str,
        /// Why.
        source: nix::Error,
    },
}

/// An input device found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputDevice {
    /// `/dev/input/eventN`.
    pub node: PathBuf,
    /// The device's name as the kernel reports it.
    pub name: String,
}

/// Finds the input device for `key`: the one called `name` when given (it must
/// also report the key), otherwise the first, in eventN order, that reports it.
///
/// `sysfs_input` is `/sys/class/input` and `dev_input` is `/dev/input` on a real
/// system; tests point them at a temporary tree.
pub fn find_device(
    sysfs_input: &Path,
    dev_input: &Path,
    key: KeyCode,
    name: Option<&str>,
) -> Result<InputDevice, EvdevError> {
    let not_found = || EvdevError::NotFound {
        wanted: match name {
            Some(n) => format!("named {n:?} with {key}"),
            None => format!("with {key}"),
        },
        dir: sysfs_input.to_owned(),
    };
    let entries = std::fs::read_dir(sysfs_input).map_err(|_| not_found())?;
    let mut events: Vec<(u32, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let n = file.strip_prefix("event")?.parse().ok()?;
            Some((n, file))
        })
        .collect();
    events.sort();
    for (_, event) in events {
        let device = sysfs_input.join(&event).join("device");
        let dev_name = std::fs::read_to_string(device.join("name")).unwrap_or_default();
        let dev_name = dev_name.trim_end_matches('\n');
        if name.is_some_and(|n| n != dev_name) {
            continue;
        }
        let caps = std::fs::read_to_string(device.join("capabilities/key")).unwrap_or_default();
        if bitmap_has(&caps, usize::from(key.code())) {
            return Ok(InputDevice {
                node: dev_input.join(&event),
                name: dev_name.to_owned(),
            });
        }
    }
    Err(not_found())
}

/// Whether bit `bit` is set in a sysfs capability bitmap: hexadecimal words of
/// the kernel's `long` size separated by spaces, most significant word first.
fn bitmap_has(bitmap: &str, bit: usize) -> bool {
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let word_bits = usize::BITS as usize;
    let index_from_end = bit / word_bits;
    let Some(word) = words
        .len()
        .checked_sub(1 + index_from_end)
        .map(|i| words[i])
    else {
        return false;
    };
    u64::from_str_radix(word, 16).is_ok_and(|w| w >> (bit % word_bits) & 1 == 1)
}

/// Size of `struct input_event` on 64-bit Linux: a `timeval` of two 64-bit
/// fields, then type (u16), code (u16) and value (i32).
pub const INPUT_EVENT_SIZE: usize = 24;
const EV_SYN: u16 = 0;
const EV_KEY: u16 = 1;
const SYN_DROPPED: u16 = 3;

/// One key sample from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySample {
    /// When the kernel saw it (`CLOCK_MONOTONIC` once the device clock is set).
    pub at: Instant,
    /// Down or up.
    pub pressed: bool,
}

/// What one 24-byte record means for `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    Key(KeySample),
    /// The kernel's buffer overflowed: the key's state must be asked for.
    Dropped,
    Other,
}

fn parse_record(buf: &[u8; INPUT_EVENT_SIZE], key: KeyCode) -> Record {
    let i64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[o..o + 8]);
        i64::from_ne_bytes(b)
    };
    let u16_at = |o: usize| u16::from_ne_bytes([buf[o], buf[o + 1]]);
    let value = i32::from_ne_bytes([buf[20], buf[21], buf[22], buf[23]]);
    let (kind, code) = (u16_at(16), u16_at(18));
    let (secs, usecs) = (i64_at(0), i64_at(8));
    let ms = u64::try_from(secs)
        .unwrap_or(0)
        .saturating_mul(1000)
        .saturating_add(u64::try_from(usecs).unwrap_or(0) / 1000);
    match (kind, code, value) {
        (EV_SYN, SYN_DROPPED, _) => Record::Dropped,
        // Value 2 is auto-repeat: the key is still down, nothing new.
        (EV_KEY, c, 0 | 1) if c == key.code() => Record::Key(KeySample {
            at: Instant::from_millis(ms),
            pressed: value == 1,
        }),
        _ => Record::Other,
    }
}

mod ioctls {
    // EVIOCSCLOCKID = _IOW('E', 0xa0, int); EVIOCGRAB = _IOW('E', 0x90, int);
    // EVIOCGKEY(len) = _IOC(_IOC_READ, 'E', 0x18, len).
    nix::ioctl_write_ptr!(set_clock_id, b'E', 0xa0, libc::c_int);
    nix::ioctl_write_int!(grab, b'E', 0x90);
    nix::ioctl_read_buf!(get_key_state, b'E', 0x18, u8);
}

/// A key on an open input device.
#[derive(Debug)]
pub struct EvdevKey {
    file: File,
    node: PathBuf,
    name: String,
    key: KeyCode,
    kernel_time: bool,
    resync: bool,
}

impl EvdevKey {
    /// Opens `device` (non-blocking) for `key`. Asks the kernel to stamp events
    /// with `CLOCK_MONOTONIC`, the panel's clock; with `grab`, takes the device
    /// for itself so that nobody else (logind acts on `KEY_RESTART` and
    /// `KEY_POWER`) sees the button.
    pub fn open(device: &InputDevice, key: KeyCode, grab: bool) -> Result<Self, EvdevError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&device.node)
            .map_err(|source| EvdevError::Io {
                path: device.node.clone(),
                source,
            })?;
        let mut this = EvdevKey {
            file,
            node: device.node.clone(),
            name: device.name.clone(),
            key,
            kernel_time: false,
            resync: false,
        };
        this.kernel_time = this.set_monotonic_clock().is_ok();
        if grab {
            this.grab()?;
        }
        Ok(this)
    }

    /// The device node.
    #[must_use]
    pub fn node(&self) -> &Path {
        &self.node
    }

    /// The device's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> KeyCode {
        self.key
    }

    #[allow(unsafe_code)]
    fn set_monotonic_clock(&self) -> Result<(), EvdevError> {
        let clock: libc::c_int = libc::CLOCK_MONOTONIC;
        // SAFETY: the fd is an open input device owned by `self.file`, and the
        // pointer is to a live c_int that the kernel only reads.
        unsafe { ioctls::set_clock_id(self.file.as_raw_fd(), &clock) }
            .map(drop)
            .map_err(|source| self.ioctl_error("EVIOCSCLOCKID", source))
    }

    #[allow(unsafe_code)]
    fn grab(&self) -> Result<(), EvdevError> {
        // SAFETY: the fd is an open input device owned by `self.file`; EVIOCGRAB
        // takes its argument by value and touches no memory of ours.
        unsafe { ioctls::grab(self.file.as_raw_fd(), 1) }
            .map(drop)
            .map_err(|source| self.ioctl_error("EVIOCGRAB", source))
    }

    /// Whether the key is down right now, asked of the kernel (EVIOCGKEY).
    #[allow(unsafe_code)]
    pub fn is_down(&self) -> Result<bool, EvdevError> {
        let mut bits = [0u8; (KEY_MAX as usize + 1) / 8];
        // SAFETY: the fd is an open input device owned by `self.file`; the
        // kernel writes at most `bits.len()` bytes, the length encoded in the
        // request, into the live buffer.
        unsafe { ioctls::get_key_state(self.file.as_raw_fd(), &mut bits) }
            .map_err(|source| self.ioctl_error("EVIOCGKEY", source))?;
        let code = usize::from(self.key.code());
        Ok(bits[code / 8] >> (code % 8) & 1 == 1)
    }

    /// Reads every pending event and passes the key's samples to `sample`, in
    /// order. `now` stamps them when the kernel clock could not be set, and
    /// stamps the state read back after the kernel dropped events.
    pub fn read_samples(
        &mut self,
        now: Instant,
        mut sample: impl FnMut(KeySample),
    ) -> Result<(), EvdevError> {
        let mut buf = [0u8; INPUT_EVENT_SIZE * 16];
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(EvdevError::Io {
                        path: self.node.clone(),
                        source,
                    })
                }
            };
            // The evdev device only ever returns whole records.
            for chunk in buf[..n].chunks_exact(INPUT_EVENT_SIZE) {
                let mut record = [0u8; INPUT_EVENT_SIZE];
                record.copy_from_slice(chunk);
                match parse_record(&record, self.key) {
                    Record::Key(_) if self.resync => {}
                    Record::Key(mut s) => {
                        if !self.kernel_time {
                            s.at = now;
                        }
                        sample(s);
                    }
                    // After a drop, events up to the next SYN_REPORT are
                    // unreliable; the simplest honest answer is the current state.
                    Record::Dropped => self.resync = true,
                    Record::Other => {}
                }
            }
        }
        if std::mem::take(&mut self.resync) {
            sample(KeySample {
                at: now,
                pressed: self.is_down()?,
            });
        }
        Ok(())
    }

    fn ioctl_error(&self, what: &'static str, source: nix::Error) -> EvdevError {
        EvdevError::Ioctl {
            path: self.node.clone(),
            what,
            source,
        }
    }
}

impl AsFd for EvdevKey {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(secs: i64, usecs: i64, kind: u16, code: u16, value: i32) -> [u8; 24] {
        let mut r = [0u8; 24];
        r[0..8].copy_from_slice(&secs.to_ne_bytes());
        r[8..16].copy_from_slice(&usecs.to_ne_bytes());
        r[16..18].copy_from_slice(&kind.to_ne_bytes());
        r[18..20].copy_from_slice(&code.to_ne_bytes());
        r[20..24].copy_from_slice(&value.to_ne_bytes());
        r
    }

    #[test]
    fn key_names_and_numbers() {
        assert_eq!("KEY_RESTART".parse::<KeyCode>().map(KeyCode::code), Ok(408));
        assert_eq!("KEY_F12".parse::<KeyCode>().map(KeyCode::code), Ok(88));
        assert_eq!(
            "0x198".parse::<KeyCode>().map(|k| k.to_string()).ok(),
            Some("KEY_RESTART".into())
        );
        assert_eq!("300".parse::<KeyCode>().map(KeyCode::code), Ok(300));
        assert!("KEY_NOPE".parse::<KeyCode>().is_err());
        assert!("0".parse::<KeyCode>().is_err());
        assert!("4000".parse::<KeyCode>().is_err());
    }

    #[test]
    fn records_are_decoded() {
        let f12 = KeyCode(88);
        assert_eq!(
            parse_record(&record(12, 345_000, EV_KEY, 88, 1), f12),
            Record::Key(KeySample {
                at: Instant::from_millis(12_345),
                pressed: true
            })
        );
        assert!(matches!(
            parse_record(&record(1, 0, EV_KEY, 88, 0), f12),
            Record::Key(KeySample { pressed: false, .. })
        ));
        assert_eq!(
            parse_record(&record(1, 0, EV_KEY, 88, 2), f12),
            Record::Other
        );
        assert_eq!(
            parse_record(&record(1, 0, EV_KEY, 30, 1), f12),
            Record::Other
        );
        assert_eq!(
            parse_record(&record(1, 0, EV_SYN, 3, 0), f12),
            Record::Dropped
        );
        assert_eq!(
            parse_record(&record(1, 0, EV_SYN, 0, 0), f12),
            Record::Other
        );
    }

    #[test]
    fn capability_bitmaps_are_read_from_the_last_word() {
        // KEY_RESTART (408) is bit 24 of the seventh 64-bit word from the end.
        let caps = "1000000 0 0 0 0 0 0";
        assert!(bitmap_has(caps, 408));
        assert!(!bitmap_has(caps, 88));
        let keyboard = "0 0 0 0 0 0 0 1000000 ffffffffffffffff";
        assert!(bitmap_has(keyboard, 88));
        assert!(bitmap_has(keyboard, 0));
        assert!(!bitmap_has(keyboard, 408));
        assert!(!bitmap_has("", 1));
    }

    #[test]
    fn devices_are_found_by_name_or_capability() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sys = dir.path().join("sys");
        let add = |event: &str, name: &str, caps: &str| {
            let dev = sys.join(event).join("device");
            std::fs::create_dir_all(dev.join("capabilities")).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(dev.join("name"), format!("{name}\n")).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(dev.join("capabilities/key"), format!("{caps}\n"))
                .unwrap_or_else(|e| panic!("{e}"));
        };
        add("event0", "Power Button", "10000000000000 0");
        add(
            "event1",
            "AT Translated Set 2 keyboard",
            "0 0 0 0 0 0 0 1000000 ffffffffffffffff",
        );
        add("event10", "gpio-keys", "1000000 0 0 0 0 0 0");
        std::fs::create_dir_all(sys.join("mouse0")).unwrap_or_else(|e| panic!("{e}"));
        let dev = Path::new("/dev/input");

        let f12 = KeyCode(88);
        let found = find_device(&sys, dev, f12, None).ok();
        assert_eq!(found.map(|d| d.node), Some(dev.join("event1")));
        let restart = KeyCode(408);
        let found = find_device(&sys, dev, restart, Some("gpio-keys")).ok();
        assert_eq!(found.map(|d| d.name), Some("gpio-keys".to_owned()));
        assert!(find_device(&sys, dev, restart, Some("Power Button")).is_err());
        assert!(find_device(&sys, dev, KeyCode(300), None).is_err());
    }
}
