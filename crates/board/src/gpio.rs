//! GPIO character-device lines (uAPI v2) for the button and LEDs.
//!
//! Requests carry the profile's bias and active-low flag, so that `gpioinfo`
//! shows the line as the board uses it. The embedded-hal pins here, like those
//! of `gpiocdev-embedded-hal`, speak electrical levels; the panel's `Polarity`
//! (from the same `active_low`) turns them into meaning. Edge events, which
//! the kernel reports in logical terms, are turned into "pressed" directly.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use gpiocdev::line::{Bias as LineBias, EdgeDetection, EdgeKind, Offset, Value};
use gpiocdev::request::Builder;
use gpiocdev::Request;

use crate::clock::from_monotonic_ns;
use crate::evdev::KeySample;
use crate::profile::{Bias, GpioLineSpec, LineRef};

/// Consumer label shown by `gpioinfo` for our lines.
pub const CONSUMER: &str = "sbcd-panel";

/// A GPIO request failed.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    /// The kernel refused.
    #[error("gpio {line}: {source}")]
    Cdev {
        /// The line as the profile gives it.
        line: String,
        /// Why.
        source: gpiocdev::Error,
    },
    /// The chip or line does not exist.
    #[error("gpio {line}: {why}")]
    NotFound {
        /// The line as the profile gives it.
        line: String,
        /// What is missing.
        why: String,
    },
    /// The request could not become a pin.
    #[error("gpio {line}: {source}")]
    Pin {
        /// The line as the profile gives it.
        line: String,
        /// Why.
        source: gpiocdev_embedded_hal::Error,
    },
}

impl GpioError {
    fn cdev(spec: &GpioLineSpec, source: gpiocdev::Error) -> Self {
        GpioError::Cdev {
            line: spec.to_string(),
            source,
        }
    }

    fn not_found(spec: &GpioLineSpec, why: String) -> Self {
        GpioError::NotFound {
            line: spec.to_string(),
            why,
        }
    }
}

/// Finds the chip and offset for a line spec.
fn locate(spec: &GpioLineSpec) -> Result<(PathBuf, Offset), GpioError> {
    let chip_path = |chip: &str| {
        if chip.starts_with('/') {
            PathBuf::from(chip)
        } else {
            PathBuf::from("/dev").join(chip)
        }
    };
    match (&spec.line, spec.chip.as_deref()) {
        (LineRef::Offset(offset), Some(chip)) => Ok((chip_path(chip), *offset)),
        (LineRef::Offset(_), None) => Err(GpioError::not_found(spec, "no chip given".into())),
        (LineRef::Name(name), Some(chip)) => {
            let path = chip_path(chip);
            let chip = gpiocdev::Chip::from_path(&path).map_err(|e| GpioError::cdev(spec, e))?;
            chip.find_line_info(name)
                .map(|info| (path, info.offset))
                .ok_or_else(|| GpioError::not_found(spec, format!("no line named {name:?}")))
        }
        (LineRef::Name(name), None) => gpiocdev::find_named_line(name)
            .map(|found| (found.chip, found.info.offset))
            .ok_or_else(|| {
                GpioError::not_found(spec, format!("no line named {name:?} on any chip"))
            }),
    }
}

fn builder(spec: &GpioLineSpec) -> Result<(Builder, Offset), GpioError> {
    let (chip, offset) = locate(spec)?;
    let mut b = Request::builder();
    b.on_chip(chip).with_line(offset).with_consumer(CONSUMER);
    if spec.active_low {
        b.as_active_low();
    }
    Ok((b, offset))
}

fn bias(b: Bias) -> Option<LineBias> {
    match b {
        Bias::AsIs => None,
        Bias::Disabled => Some(LineBias::Disabled),
        Bias::PullUp => Some(LineBias::PullUp),
        Bias::PullDown => Some(LineBias::PullDown),
    }
}

/// A button on a GPIO line, with edge events when the chip can give them.
#[derive(Debug)]
pub struct GpioButton {
    req: Request,
    offset: Offset,
    active_low: bool,
    edges: bool,
}

impl GpioButton {
    /// Requests the line as an input with both-edge detection; falls back to a
    /// plain input (to be polled) on chips without interrupt support.
    pub fn open(spec: &GpioLineSpec) -> Result<Self, GpioError> {
        let (mut b, offset) = builder(spec)?;
        b.as_input().with_bias(bias(spec.bias));
        let with_edges = b
            .clone()
            .with_edge_detection(EdgeDetection::BothEdges)
            .request();
        let (req, edges) = match with_edges {
            Ok(req) => (req, true),
            Err(_) => (b.request().map_err(|e| GpioError::cdev(spec, e))?, false),
        };
        Ok(GpioButton {
            req,
            offset,
            active_low: spec.active_low,
            edges,
        })
    }

    /// Whether the kernel delivers edge events (otherwise poll [`Self::is_pressed`]).
    #[must_use]
    pub fn has_edges(&self) -> bool {
        self.edges
    }

    /// Whether the button is down now (the line is active).
    pub fn is_pressed(&self) -> Result<bool, gpiocdev::Error> {
        Ok(self.req.value(self.offset)? == Value::Active)
    }

    /// Passes every pending edge to `sample`, stamped with the kernel's time.
    pub fn read_edges(&mut self, mut sample: impl FnMut(KeySample)) -> Result<(), gpiocdev::Error> {
        while self.edges && self.req.has_edge_event()? {
            let e = self.req.read_edge_event()?;
            sample(KeySample {
                at: from_monotonic_ns(e.timestamp_ns),
                pressed: e.kind == EdgeKind::Rising,
            });
        }
        Ok(())
    }
}

impl AsFd for GpioButton {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.req.as_fd()
    }
}

impl embedded_hal::digital::ErrorType for GpioButton {
    type Error = gpiocdev_embedded_hal::Error;
}

impl embedded_hal::digital::InputPin for GpioButton {
    /// The electrical level: the logical value with the active-low flag undone.
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        Ok(self
            .is_pressed()
            .map_err(gpiocdev_embedded_hal::Error::from)?
            != self.active_low)
    }

    fn is_low(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.is_high()?)
    }
}

/// An LED on a GPIO line, requested dark.
pub fn open_led(spec: &GpioLineSpec) -> Result<gpiocdev_embedded_hal::OutputPin, GpioError> {
    let (mut b, _) = builder(spec)?;
    b.as_output(Value::Inactive);
    let req = b.request().map_err(|e| GpioError::cdev(spec, e))?;
    gpiocdev_embedded_hal::OutputPin::try_from(req).map_err(|source| GpioError::Pin {
        line: spec.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(chip: Option<&str>, line: LineRef) -> GpioLineSpec {
        GpioLineSpec {
            chip: chip.map(str::to_owned),
            line,
            active_low: true,
            bias: Bias::PullUp,
        }
    }

    #[test]
    fn a_missing_chip_or_line_is_named_in_the_error() {
        let s = spec(Some("gpiochip-none"), LineRef::Offset(3));
        let err = GpioButton::open(&s).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.starts_with("gpio gpiochip-none line 3 active-low")),
            "{err:?}"
        );
        let s = spec(None, LineRef::Name("NO_SUCH_LINE".into()));
        let err = open_led(&s).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("no line named")),
            "{err:?}"
        );
        let s = spec(None, LineRef::Offset(1));
        assert!(matches!(
            GpioButton::open(&s),
            Err(GpioError::NotFound { .. })
        ));
    }
}
