//! The panel runner: opens the backends a profile names, feeds the button into
//! [`panel::Panel`], and writes its LED levels out.
//!
//! It holds no policy: what a hold does to the system state is the daemon's
//! call, and the daemon tells the driver what the system looks like through
//! [`PanelDriver::set_view`].

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::Arc;

use embedded_hal::digital::{ErrorType, OutputPin};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use panel::{Instant, Led, LedBank, Panel, PanelEvent, PanelStatus, Polarity, SystemView};

use crate::clock::monotonic_now;
use crate::evdev::{self, EvdevError, EvdevKey, KeySample};
use crate::gpio::{self, GpioButton, GpioError};
use crate::ledclass::{LedClassError, LedClassLed};
use crate::profile::{ButtonSpec, LedSpec, PanelSpec};
use crate::sim::{SimButton, SimLed, SimPanel};

/// Which of the three LEDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedRole {
    /// Green.
    Online,
    /// Amber.
    Draining,
    /// Red.
    Offline,
}

/// Where the driver finds kernel interfaces; tests point these at a temporary tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoots {
    /// `/sys/class/leds`.
    pub leds_class: PathBuf,
    /// `/sys/class/input`.
    pub input_class: PathBuf,
    /// `/dev/input`.
    pub dev_input: PathBuf,
}

impl Default for SysRoots {
    fn default() -> Self {
        SysRoots {
            leds_class: PathBuf::from(crate::ledclass::LEDS_CLASS),
            input_class: PathBuf::from("/sys/class/input"),
            dev_input: PathBuf::from("/dev/input"),
        }
    }
}

/// Opening the panel failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A GPIO line.
    #[error(transparent)]
    Gpio(#[from] GpioError),
    /// The input device.
    #[error(transparent)]
    Evdev(#[from] EvdevError),
    /// An LED class device.
    #[error(transparent)]
    LedClass(#[from] LedClassError),
    /// The driver's wake-up eventfd.
    #[error("eventfd: {0}")]
    Waker(nix::Error),
}

/// Wakes a thread blocked in [`PanelDriver::wait_until`]; cheap to clone, safe
/// to use from any thread.
#[derive(Debug, Clone)]
pub struct PanelWaker(Arc<EventFd>);

impl PanelWaker {
    /// Wake the driver's thread, e.g. after sending it a new view.
    pub fn wake(&self) {
        // Only fails when the counter would overflow, and then a wake is pending anyway.
        let _ = self.0.write(1);
    }
}

/// An LED on any backend.
#[derive(Debug)]
pub enum AnyLed {
    /// A GPIO line.
    Gpio(gpiocdev_embedded_hal::OutputPin),
    /// A LED class device.
    Class(LedClassLed),
    /// An in-memory LED.
    Sim(SimLed),
}

/// Writing an LED failed.
#[derive(Debug, thiserror::Error)]
pub enum LedError {
    /// A GPIO line.
    #[error("gpio led: {0}")]
    Gpio(gpiocdev_embedded_hal::Error),
    /// A LED class device.
    #[error(transparent)]
    Class(LedClassError),
}

impl embedded_hal::digital::Error for LedError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

impl ErrorType for AnyLed {
    type Error = LedError;
}

impl OutputPin for AnyLed {
    fn set_low(&mut self) -> Result<(), LedError> {
        match self {
            AnyLed::Gpio(p) => p.set_low().map_err(LedError::Gpio),
            AnyLed::Class(p) => p.set_low().map_err(LedError::Class),
            AnyLed::Sim(p) => p.set_low().map_err(|never| match never {}),
        }
    }

    fn set_high(&mut self) -> Result<(), LedError> {
        match self {
            AnyLed::Gpio(p) => p.set_high().map_err(LedError::Gpio),
            AnyLed::Class(p) => p.set_high().map_err(LedError::Class),
            AnyLed::Sim(p) => p.set_high().map_err(|never| match never {}),
        }
    }
}

#[derive(Debug)]
enum ButtonSource {
    Gpio(GpioButton),
    Evdev(EvdevKey),
    Sim(SimButton),
}

/// What `show panel` prints about the wiring and its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelDriverStatus {
    /// The panel state machine's view.
    pub panel: PanelStatus,
    /// The timing it runs with (`hold_ms` for "hold at least N ms").
    pub config: panel::PanelConfig,
    /// How the button is connected.
    pub button: String,
    /// How each LED is connected: online, draining, offline.
    pub leds: [String; 3],
    /// True when any part is the in-memory simulation.
    pub simulated: bool,
    /// When all three LEDs are simulated: the levels last written to their pins (what a
    /// person would see), as opposed to `panel.leds`, what the state machine wants shown.
    pub pins: Option<panel::Leds>,
    /// Failed LED writes since start.
    pub led_write_errors: u64,
    /// Failed button reads since start.
    pub button_read_errors: u64,
    /// The last failure, for the operator.
    pub last_error: Option<String>,
}

impl fmt::Display for PanelDriverStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        let l = self.panel.leds;
        writeln!(f, "button:   {}", self.button)?;
        writeln!(
            f,
            "leds:     online {} ({}), draining {} ({}), offline {} ({})",
            on(l.online),
            self.leds[0],
            on(l.draining),
            self.leds[1],
            on(l.offline),
            self.leds[2]
        )?;
        writeln!(f, "showing:  {:?}", self.panel.display)?;
        write!(
            f,
            "pressed:  {}{}",
            self.panel.pressed,
            if self.panel.hold_armed {
                " (hold armed)"
            } else {
                ""
            }
        )?;
        if self.led_write_errors + self.button_read_errors > 0 {
            write!(
                f,
                "\nerrors:   {} led writes, {} button reads; last: {}",
                self.led_write_errors,
                self.button_read_errors,
                self.last_error.as_deref().unwrap_or("-")
            )?;
        }
        Ok(())
    }
}

/// The front panel on real (or simulated) hardware.
///
/// Contract, as for [`Panel`]: call [`step`](Self::step) whenever woken and
/// then block until [`next_wakeup`](Self::next_wakeup), e.g. with
/// [`wait_until`](Self::wait_until); call [`set_view`](Self::set_view) when the
/// system changes. Times come from [`monotonic_now`] and must not go backwards.
/// A typical thread on a housekeeping core:
///
/// ```no_run
/// # fn demo(spec: &board::profile::PanelSpec, views: std::sync::mpsc::Receiver<panel::SystemView>)
/// # -> Result<(), board::driver::OpenError> {
/// use board::{driver::PanelDriver, monotonic_now};
/// let mut driver = PanelDriver::open(spec, panel::SystemView::default(), monotonic_now())?;
/// // Senders of views call `waker.wake()` after sending.
/// let _waker = driver.waker();
/// loop {
///     let now = monotonic_now();
///     while let Ok(view) = views.try_recv() {
///         driver.set_view(now, view);
///     }
///     for event in driver.step(now) {
///         // hand PanelEvent::Hold { action, .. } to the system state
///         let _ = event;
///     }
///     let _ = driver.wait_until(driver.next_wakeup(now));
/// }
/// # }
/// ```
///
/// A button that reads as pressed when the driver opens is ignored until it is
/// released: a button stuck or held at power-on must not change the state.
#[derive(Debug)]
pub struct PanelDriver {
    panel: Panel,
    button: ButtonSource,
    leds: LedBank<AnyLed>,
    poll_ms: u64,
    sim: Option<SimPanel>,
    /// Whether all three LEDs are the simulation's (their pin levels can be read back).
    sim_leds: bool,
    wake: Arc<EventFd>,
    ignore_until_release: bool,
    button_desc: String,
    led_desc: [String; 3],
    led_write_errors: u64,
    button_read_errors: u64,
    last_error: Option<String>,
}

impl PanelDriver {
    /// Opens the backends named by `spec` on the real system.
    pub fn open(spec: &PanelSpec, view: SystemView, now: Instant) -> Result<Self, OpenError> {
        Self::open_in(spec, &SysRoots::default(), view, now)
    }

    /// As [`open`](Self::open), with kernel interfaces under `roots`.
    pub fn open_in(
        spec: &PanelSpec,
        roots: &SysRoots,
        view: SystemView,
        now: Instant,
    ) -> Result<Self, OpenError> {
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(OpenError::Waker)?,
        );
        let needs_sim = matches!(spec.button, ButtonSpec::Sim)
            || [&spec.leds.online, &spec.leds.draining, &spec.leds.offline]
                .iter()
                .any(|l| matches!(l, LedSpec::Sim));
        let sim = needs_sim.then(SimPanel::new);
        let sim_leds = [&spec.leds.online, &spec.leds.draining, &spec.leds.offline]
            .iter()
            .all(|l| matches!(l, LedSpec::Sim));
        if let Some(sim) = &sim {
            sim.set_waker(PanelWaker(wake.clone()));
        }

        let (button, button_desc, pressed_at_open) = match &spec.button {
            ButtonSpec::Gpio(line) => {
                let b = GpioButton::open(line)?;
                let pressed = b.is_pressed().unwrap_or(false);
                let how = if b.has_edges() { "edges" } else { "polled" };
                (
                    ButtonSource::Gpio(b),
                    format!("gpio {line} ({how})"),
                    pressed,
                )
            }
            ButtonSpec::Evdev(k) => {
                let dev = evdev::find_device(
                    &roots.input_class,
                    &roots.dev_input,
                    k.key,
                    k.device.as_deref(),
                )?;
                let key = EvdevKey::open(&dev, k.key, k.grab)?;
                let pressed = key.is_down().unwrap_or(false);
                let desc = format!("evdev {} on {} ({:?})", k.key, dev.node.display(), dev.name);
                (ButtonSource::Evdev(key), desc, pressed)
            }
            ButtonSpec::Sim => {
                let sim = sim
                    .as_ref()
                    .map(SimPanel::button)
                    .unwrap_or_else(|| SimPanel::new().button());
                (
                    ButtonSource::Sim(sim),
                    "simulated button (sbcctl panel press)".to_owned(),
                    false,
                )
            }
        };

        let open_led =
            |role: LedRole, spec: &LedSpec| -> Result<(Led<AnyLed>, String), OpenError> {
                Ok(match spec {
                    LedSpec::Gpio(line) => (
                        Led::new(
                            AnyLed::Gpio(gpio::open_led(line)?),
                            Polarity::from_active_low(line.active_low),
                        ),
                        format!("gpio {line}"),
                    ),
                    LedSpec::Class { name } => (
                        Led::new(
                            AnyLed::Class(LedClassLed::open(&roots.leds_class, name)?),
                            Polarity::ActiveHigh,
                        ),
                        format!("led-class {name}"),
                    ),
                    LedSpec::Sim => {
                        let sim = sim.clone().unwrap_or_default();
                        (
                            Led::new(AnyLed::Sim(sim.led(role)), Polarity::ActiveHigh),
                            "simulated LED".to_owned(),
                        )
                    }
                })
            };
        let (online, online_desc) = open_led(LedRole::Online, &spec.leds.online)?;
        let (draining, draining_desc) = open_led(LedRole::Draining, &spec.leds.draining)?;
        let (offline, offline_desc) = open_led(LedRole::Offline, &spec.leds.offline)?;

        let mut driver = PanelDriver {
            panel: Panel::new(spec.config, view, now),
            button,
            leds: LedBank {
                online,
                draining,
                offline,
            },
            poll_ms: spec.poll_ms,
            sim,
            sim_leds,
            wake,
            ignore_until_release: pressed_at_open,
            button_desc,
            led_desc: [online_desc, draining_desc, offline_desc],
            led_write_errors: 0,
            button_read_errors: 0,
            last_error: None,
        };
        driver.write_leds();
        Ok(driver)
    }

    /// The simulated panel, when the profile uses one: the daemon's control
    /// socket presses its button and reads its LEDs.
    #[must_use]
    pub fn sim(&self) -> Option<SimPanel> {
        self.sim.clone()
    }

    /// The timing the panel runs with.
    #[must_use]
    pub fn config(&self) -> &panel::PanelConfig {
        self.panel.config()
    }

    /// A handle that interrupts [`wait_until`](Self::wait_until).
    #[must_use]
    pub fn waker(&self) -> PanelWaker {
        PanelWaker(self.wake.clone())
    }

    /// The input's file descriptor, for callers that wait in their own event
    /// loop (tokio `AsyncFd`) instead of [`wait_until`](Self::wait_until).
    #[must_use]
    pub fn input_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.button {
            ButtonSource::Gpio(b) if b.has_edges() => Some(b.as_fd()),
            ButtonSource::Evdev(k) => Some(k.as_fd()),
            ButtonSource::Gpio(_) | ButtonSource::Sim(_) => None,
        }
    }

    /// The system changed; the LEDs follow at once.
    pub fn set_view(&mut self, now: Instant, view: SystemView) {
        self.panel.handle_view(now, view);
        self.write_leds();
    }

    /// Reads the button, runs the panel's timers, writes the LEDs; returns what
    /// the panel has to say. Read and write failures are counted and shown in
    /// [`status`](Self::status) rather than returned: a flaky LED must not stop
    /// the button from working, nor the reverse.
    pub fn step(&mut self, now: Instant) -> Vec<PanelEvent> {
        // Consume the wake-ups; an error only means there was none.
        let _ = self.wake.read();
        let mut samples = Vec::new();
        let read = match &mut self.button {
            ButtonSource::Gpio(b) if b.has_edges() => {
                b.read_edges(|s| samples.push(s)).map_err(|e| e.to_string())
            }
            ButtonSource::Gpio(b) => b
                .is_pressed()
                .map(|pressed| samples.push(KeySample { at: now, pressed }))
                .map_err(|e| e.to_string()),
            ButtonSource::Evdev(k) => k
                .read_samples(now, |s| samples.push(s))
                .map_err(|e| e.to_string()),
            ButtonSource::Sim(b) => {
                b.take_due(now, |s| samples.push(s));
                Ok(())
            }
        };
        if let Err(e) = read {
            self.button_read_errors += 1;
            self.last_error = Some(format!("button: {e}"));
        }
        for s in samples {
            if self.ignore_until_release {
                self.ignore_until_release = s.pressed;
                continue;
            }
            self.panel.handle_button(s.at, s.pressed);
        }
        self.panel.handle_timeout(now);
        let mut events = Vec::new();
        while let Some(e) = self.panel.poll_event() {
            events.push(e);
        }
        self.write_leds();
        events
    }

    /// When [`step`](Self::step) is next needed even if nothing happens.
    #[must_use]
    pub fn next_wakeup(&self, now: Instant) -> Instant {
        let polled = match &self.button {
            ButtonSource::Gpio(b) if !b.has_edges() => Some(now.after_ms(self.poll_ms)),
            ButtonSource::Sim(b) => b.next_edge(),
            ButtonSource::Gpio(_) | ButtonSource::Evdev(_) => None,
        };
        // With nothing due, wake once a minute anyway: cheap, and it bounds
        // the damage of any missed wake-up.
        let idle = now.after_ms(60_000);
        [self.panel.poll_timeout(), polled]
            .into_iter()
            .flatten()
            .fold(idle, Instant::min)
    }

    /// Blocks until `deadline`, input on the button, or a [`PanelWaker::wake`].
    pub fn wait_until(&self, deadline: Instant) -> nix::Result<()> {
        let ms = deadline.ms_since(monotonic_now());
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = self.input_fd() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// For `show panel`.
    #[must_use]
    pub fn status(&self) -> PanelDriverStatus {
        PanelDriverStatus {
            panel: self.panel.status(),
            config: *self.panel.config(),
            button: self.button_desc.clone(),
            leds: self.led_desc.clone(),
            simulated: self.sim.is_some(),
            pins: self
                .sim
                .as_ref()
                .filter(|_| self.sim_leds)
                .map(SimPanel::leds),
            led_write_errors: self.led_write_errors,
            button_read_errors: self.button_read_errors,
            last_error: self.last_error.clone(),
        }
    }

    fn write_leds(&mut self) {
        if let Some(leds) = self.panel.poll_leds() {
            if let Err(e) = self.leds.write(leds) {
                self.led_write_errors += 1;
                self.last_error = Some(format!("leds: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests;
