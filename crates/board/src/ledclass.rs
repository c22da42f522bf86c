//! LED class devices (`/sys/class/leds/NAME/brightness`) as embedded-hal pins.
//!
//! The LED's polarity and colour are the kernel driver's business; here "high"
//! is simply "lit at full brightness".

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The kernel's LED class directory.
pub const LEDS_CLASS: &str = "/sys/class/leds";

/// An LED class operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct LedClassError {
    path: PathBuf,
    source: io::Error,
}

impl embedded_hal::digital::Error for LedClassError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

/// An open LED class device.
#[derive(Debug)]
pub struct LedClassLed {
    name: String,
    brightness: File,
    path: PathBuf,
    lit: Vec<u8>,
}

impl LedClassLed {
    /// Opens LED `name` under `class_dir` (normally [`LEDS_CLASS`]). Detaches any
    /// kernel trigger first, so that the trigger and the panel do not fight over
    /// the LED; "lit" is the LED's `max_brightness`.
    ///
    /// A `*` in `name` matches any run of characters, for LEDs whose name has
    /// an enumeration number in it (`input*::capslock`); exactly one LED must match.
    pub fn open(class_dir: &Path, name: &str) -> Result<Self, LedClassError> {
        let name = resolve_name(class_dir, name)?;
        let name = name.as_str();
        let dir = class_dir.join(name);
        let trigger = dir.join("trigger");
        // Not every LED has a trigger attribute (and test trees have none).
        if trigger.exists() {
            std::fs::write(&trigger, b"none").map_err(|source| LedClassError {
                path: trigger.clone(),
                source,
            })?;
        }
        let max_path = dir.join("max_brightness");
        let max = match std::fs::read_to_string(&max_path) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => "1".to_owned(),
            Err(source) => {
                return Err(LedClassError {
                    path: max_path,
                    source,
                })
            }
        };
        let path = dir.join("brightness");
        let brightness = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| LedClassError {
                path: path.clone(),
                source,
            })?;
        Ok(LedClassLed {
            name: name.to_owned(),
            brightness,
            path,
            lit: max.into_bytes(),
        })
    }

    /// The LED's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    fn write(&self, value: &[u8]) -> Result<(), LedClassError> {
        // A sysfs attribute takes one whole write at offset 0 each time.
        self.brightness
            .write_at(value, 0)
            .map(drop)
            .map_err(|source| LedClassError {
                path: self.path.clone(),
                source,
            })
    }
}

/// The one LED under `class_dir` that `pattern` names (see [`LedClassLed::open`]).
pub fn resolve_name(class_dir: &Path, pattern: &str) -> Result<String, LedClassError> {
    let Some((prefix, suffix)) = pattern.split_once('*') else {
        return Ok(pattern.to_owned());
    };
    let error = |kind, msg: String| LedClassError {
        path: class_dir.join(pattern),
        source: io::Error::new(kind, msg),
    };
    let entries = std::fs::read_dir(class_dir).map_err(|source| LedClassError {
        path: class_dir.to_owned(),
        source,
    })?;
    let mut matches: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.len() >= prefix.len() + suffix.len() && n.starts_with(prefix) && n.ends_with(suffix)
        })
        .collect();
    matches.sort();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(error(io::ErrorKind::NotFound, "no LED matches".into())),
        _ => Err(error(
            io::ErrorKind::InvalidInput,
            format!("several LEDs match: {}", matches.join(", ")),
        )),
    }
}

/// Reads back an LED's brightness, for tests and `show panel`.
pub fn read_brightness(class_dir: &Path, name: &str) -> Result<u32, LedClassError> {
    let path = class_dir.join(name).join("brightness");
    let text = std::fs::read_to_string(&path).map_err(|source| LedClassError {
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| LedClassError {
        path,
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a number: {text:?}"),
        ),
    })
}

impl embedded_hal::digital::ErrorType for LedClassLed {
    type Error = LedClassError;
}

impl embedded_hal::digital::OutputPin for LedClassLed {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.write(b"0")
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        let lit = self.lit.clone();
        self.write(&lit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::digital::OutputPin;

    #[test]
    fn writes_max_brightness_and_zero_and_detaches_the_trigger() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let led = dir.path().join("apu2:green:1");
        std::fs::create_dir_all(&led).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(led.join("brightness"), "0\n").unwrap_or_else(|e| panic!("{e}"));
        // One digit: unlike sysfs, a plain file keeps the tail of a longer old value.
        std::fs::write(led.join("max_brightness"), "7\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(led.join("trigger"), "[default-on] none\n")
            .unwrap_or_else(|e| panic!("{e}"));

        let mut pin =
            LedClassLed::open(dir.path(), "apu2:green:1").unwrap_or_else(|e| panic!("{e}"));
        assert!(pin.set_high().is_ok());
        assert_eq!(read_brightness(dir.path(), "apu2:green:1").ok(), Some(7));
        assert!(pin.set_low().is_ok());
        assert_eq!(read_brightness(dir.path(), "apu2:green:1").ok(), Some(0));
        assert_eq!(
            std::fs::read_to_string(led.join("trigger")).ok().as_deref(),
            Some("none")
        );
    }

    #[test]
    fn a_wildcard_must_match_exactly_one_led() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for led in ["input1::capslock", "input1::numlock", "input7::numlock"] {
            let d = dir.path().join(led);
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(d.join("brightness"), "0\n").unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            resolve_name(dir.path(), "input*::capslock").ok().as_deref(),
            Some("input1::capslock")
        );
        let err = resolve_name(dir.path(), "input*::numlock")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("input1::numlock, input7::numlock")));
        assert!(resolve_name(dir.path(), "input*::scrolllock").is_err());
        let led = LedClassLed::open(dir.path(), "input*::capslock").ok();
        assert_eq!(
            led.as_ref().map(LedClassLed::name),
            Some("input1::capslock")
        );
    }

    #[test]
    fn a_missing_led_names_its_path() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = LedClassLed::open(dir.path(), "nope")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("nope/brightness")));
    }
}
