//! Board profiles: `board/<name>/board.toml`, optionally inheriting another
//! board's profile, plus an optional `cmdline` file beside it.
//!
//! Decides what a board *is* (ports, cores, console, watchdog, kernel, panel
//! wiring) and rejects anything it does not understand, naming the file, line
//! and key. It opens no device: the drivers take the validated [`Profile`].
//!
//! Inheritance: a child's scalar keys override the parent's one by one; a
//! child's `[panel.button]` or `[panel.leds.X]` table replaces the parent's
//! table of that name whole, because mixing, say, a GPIO chip from the parent
//! with an evdev key from the child would describe no real wiring.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::cpus::CpuList;
use crate::evdev::KeyCode;

/// The name of the profile file in each board folder.
pub const PROFILE_FILE: &str = "board.toml";
/// The optional kernel command line file in each board folder.
pub const CMDLINE_FILE: &str = "cmdline";
/// How deep `inherit` may go; far beyond any real revision chain.
const MAX_INHERIT_DEPTH: usize = 8;

// ---------------------------------------------------------------- the result

/// A loaded, validated board profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The board's folder name.
    pub name: String,
    /// The board's folder.
    pub dir: PathBuf,
    /// The boards it inherits from, nearest first.
    pub inherits: Vec<String>,
    /// One line for humans.
    pub description: String,
    /// Network port roles (SPEC §0), when the board has fixed ports.
    pub ports: Option<Ports>,
    /// Housekeeping and SIP cores (SPEC §6).
    pub cores: Cores,
    /// The serial console, when the board has one.
    pub console: Option<Console>,
    /// The hardware watchdog, when the board has one.
    pub watchdog: Option<WatchdogSpec>,
    /// Kernel package, modules and command line for the image.
    pub kernel: Kernel,
    /// The front panel, when the board has one (real or simulated).
    pub panel: Option<PanelSpec>,
}

/// Interface names for the three port roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    /// Access network (phones, PBXs).
    pub access: String,
    /// Core network (SIP servers).
    pub core: String,
    /// Cross-connect to the twin.
    pub twin: String,
}

/// Which CPUs do what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cores {
    /// Control plane, systemd and everything else.
    pub housekeeping: CoreSpec,
    /// One pinned SIP worker per CPU.
    pub sip: CoreSpec,
}

/// A set of cores as the profile gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreSpec {
    /// Whatever the host allows this process (the `sim` board): `"host"`.
    Host,
    /// These CPUs.
    List(CpuList),
}

impl fmt::Display for CoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreSpec::Host => f.write_str("host"),
            CoreSpec::List(l) => write!(f, "{l}"),
        }
    }
}

impl TryFrom<String> for CoreSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s == "host" {
            return Ok(CoreSpec::Host);
        }
        let list: CpuList = s.parse().map_err(|e| format!("{e}"))?;
        if list.is_empty() {
            return Err("an empty cpu list; use \"host\" for whatever the host has".into());
        }
        Ok(CoreSpec::List(list))
    }
}

/// Cores resolved against the CPUs actually available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCores {
    /// Where control-plane threads go.
    pub housekeeping: CpuList,
    /// One SIP worker per CPU here.
    pub sip: CpuList,
}

/// The profile's cores are not available on this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cores.{role} = {wanted} but only cpus {available} are available")]
pub struct CoresUnavailable {
    role: &'static str,
    wanted: String,
    available: String,
}

impl Cores {
    /// The CPUs to use, given the CPUs this process may run on (from
    /// [`crate::cpus::current_thread_cpus`] at startup). `host` takes them all.
    pub fn resolve(&self, available: &CpuList) -> Result<ResolvedCores, CoresUnavailable> {
        let pick = |role: &'static str, spec: &CoreSpec| match spec {
            CoreSpec::Host => Ok(available.clone()),
            CoreSpec::List(l) if l.is_subset(available) => Ok(l.clone()),
            CoreSpec::List(l) => Err(CoresUnavailable {
                role,
                wanted: l.to_string(),
                available: available.to_string(),
            }),
        };
        Ok(ResolvedCores {
            housekeeping: pick("housekeeping", &self.housekeeping)?,
            sip: pick("sip", &self.sip)?,
        })
    }
}

/// The serial console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// Device name under /dev, e.g. `ttyS0`.
    pub device: String,
    /// Line speed (8N1 is implied).
    pub baud: u32,
}

/// The hardware watchdog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogSpec {
    /// The device node, e.g. `/dev/watchdog0`.
    pub device: PathBuf,
    /// The kernel module that provides it, for the image to load.
    pub module: Option<String>,
    /// systemd's `RuntimeWatchdogSec=` for the image.
    pub runtime_secs: u32,
}

/// What the image needs to know about the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kernel {
    /// Debian kernel package.
    pub package: Option<String>,
    /// Modules to load at boot.
    pub modules: Vec<String>,
    /// The kernel command line (from `cmdline` or `[kernel] cmdline`).
    pub cmdline: Option<String>,
}

/// The front panel wiring and timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelSpec {
    /// Timing for the panel state machine.
    pub config: panel::PanelConfig,
    /// Sampling period for a button that gives no edges.
    pub poll_ms: u64,
    /// The button.
    pub button: ButtonSpec,
    /// The LEDs.
    pub leds: LedSpecs,
}

/// Where the button is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonSpec {
    /// A GPIO line.
    Gpio(GpioLineSpec),
    /// A key of an input device.
    Evdev(EvdevKeySpec),
    /// The in-memory button of the simulation.
    Sim,
}

/// A key on an input device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvdevKeySpec {
    /// The key.
    pub key: KeyCode,
    /// The device's name; without it, the first device that has the key.
    pub device: Option<String>,
    /// Take the device for ourselves (EVIOCGRAB) so nobody else acts on the key.
    pub grab: bool,
}

/// The three LEDs, by meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedSpecs {
    /// Green.
    pub online: LedSpec,
    /// Amber.
    pub draining: LedSpec,
    /// Red.
    pub offline: LedSpec,
}

/// Where one LED is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedSpec {
    /// A GPIO line.
    Gpio(GpioLineSpec),
    /// A LED class device `/sys/class/leds/<name>`.
    Class {
        /// The LED's name.
        name: String,
    },
    /// An in-memory LED of the simulation.
    Sim,
}

/// A GPIO line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpioLineSpec {
    /// `gpiochipN` or a path; may be left out when `line` is a name.
    pub chip: Option<String>,
    /// Offset on the chip, or line name.
    pub line: LineRef,
    /// The line is active (pressed, lit) when low.
    pub active_low: bool,
    /// Pull resistor setting.
    pub bias: Bias,
}

impl fmt::Display for GpioLineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(chip) = &self.chip {
            write!(f, "{chip} ")?;
        }
        match &self.line {
            LineRef::Offset(o) => write!(f, "line {o}")?,
            LineRef::Name(n) => write!(f, "line {n:?}")?,
        }
        if self.active_low {
            f.write_str(" active-low")?;
        }
        Ok(())
    }
}

/// A line by offset or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineRef {
    /// Offset on the chip.
    Offset(u32),
    /// Name given by the firmware or device tree.
    Name(String),
}

impl<'de> Deserialize<'de> for LineRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LineRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a line offset (integer) or a line name (string)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<LineRef, E> {
                u32::try_from(v)
                    .map(LineRef::Offset)
                    .map_err(|_| E::custom(format!("line offset {v} out of range")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LineRef, E> {
                if v.is_empty() {
                    return Err(E::custom("an empty line name"));
                }
                Ok(LineRef::Name(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Pull resistor setting of a GPIO input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    /// Leave as the firmware set it.
    #[default]
    AsIs,
    /// No pull.
    Disabled,
    /// Pull up (a button to ground).
    PullUp,
    /// Pull down.
    PullDown,
}

// ---------------------------------------------------------------- errors

/// Loading a profile failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not a usable folder name.
    #[error("{0:?} is not a board name (letters, digits, '-' and '_')")]
    BadName(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something in a file is wrong.
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Dotted key, e.g. `panel.button.line`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A key that no file in the chain sets.
    #[error("{path}: {key}: missing (set it here or in a board this one inherits)")]
    Missing {
        /// The board's own profile file.
        path: PathBuf,
        /// Dotted key.
        key: String,
    },
    /// A loop or an over-long chain of `inherit`.
    #[error("{path}: inherit chain {chain} loops or is longer than {MAX_INHERIT_DEPTH}")]
    Inherit {
        /// The file that started it.
        path: PathBuf,
        /// The chain so far.
        chain: String,
    },
}

/// Where a value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    path: PathBuf,
    line: usize,
}

impl Origin {
    fn error(&self, key: &str, message: impl Into<String>) -> ProfileError {
        ProfileError::Invalid {
            path: self.path.clone(),
            line: self.line,
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------- raw layers

/// One file as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    inherit: Option<Spanned<String>>,
    description: Option<String>,
    ports: Option<RawPorts>,
    cores: Option<RawCores>,
    console: Option<RawConsole>,
    watchdog: Option<RawWatchdog>,
    kernel: Option<RawKernel>,
    panel: Option<RawPanel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPorts {
    access: Option<IfName>,
    core: Option<IfName>,
    twin: Option<IfName>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCores {
    housekeeping: Option<Spanned<CoreSpec>>,
    sip: Option<Spanned<CoreSpec>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    device: Option<DevName>,
    baud: Option<Baud>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatchdog {
    device: Option<DevPath>,
    module: Option<DevName>,
    runtime_secs: Option<WatchdogSecs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    package: Option<String>,
    modules: Option<Vec<DevName>>,
    cmdline: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPanel {
    hold_ms: Option<Millis<100, 60_000>>,
    debounce_ms: Option<Millis<0, 200>>,
    lamp_test_ms: Option<Millis<0, 10_000>>,
    blank_after_ms: Option<Millis<1000, 86_400_000>>,
    poll_ms: Option<Millis<1, 100>>,
    button: Option<Spanned<RawButton>>,
    leds: Option<RawLeds>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeds {
    online: Option<Spanned<RawLed>>,
    draining: Option<Spanned<RawLed>>,
    offline: Option<Spanned<RawLed>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ButtonBackend {
    Gpio,
    Evdev,
    Sim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum LedBackend {
    Gpio,
    LedClass,
    Sim,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawButton {
    backend: ButtonBackend,
    chip: Option<DevName>,
    line: Option<LineRef>,
    active_low: Option<bool>,
    bias: Option<Bias>,
    key: Option<KeyCode>,
    device: Option<String>,
    grab: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLed {
    backend: LedBackend,
    name: Option<LedName>,
    chip: Option<DevName>,
    line: Option<LineRef>,
    active_low: Option<bool>,
}

// Small validated scalars: a bad value fails inside the TOML parser, which
// then reports the value's own line.

macro_rules! validated_string {
    ($name:ident, $check:expr, $what:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "String")]
        struct $name(String);
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(&str) -> bool = $check;
                if check(&s) {
                    Ok($name(s))
                } else {
                    Err(format!(concat!("{:?} is not ", $what), s))
                }
            }
        }
    };
}

fn plain_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s != "."
        && s != ".."
        && !s.contains(['/', '\0'])
        && !s.chars().any(char::is_whitespace)
}

validated_string!(
    IfName,
    |s| plain_name(s, 15),
    "an interface name (at most 15 characters, no '/' or spaces)"
);
validated_string!(
    DevName,
    |s| plain_name(s, 64),
    "a plain name (no '/' or spaces)"
);
validated_string!(
    LedName,
    |s| plain_name(s, 64) && s.matches('*').count() <= 1,
    "an LED class name (no '/' or spaces, at most one '*')"
);
validated_string!(
    DevPath,
    |s| s.starts_with("/dev/") && !s.contains("..") && !s.chars().any(char::is_whitespace),
    "a device path under /dev/"
);

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "i64")]
struct Millis<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> TryFrom<i64> for Millis<MIN, MAX> {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u64::try_from(v) {
            Ok(ms) if (MIN..=MAX).contains(&ms) => Ok(Millis(ms)),
            _ => Err(format!("{v} ms is outside {MIN}..={MAX}")),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "i64")]
struct Baud(u32);

impl TryFrom<i64> for Baud {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        const RATES: [u32; 8] = [
            9600, 19200, 38400, 57600, 115_200, 230_400, 460_800, 921_600,
        ];
        RATES
            .iter()
            .find(|&&r| i64::from(r) == v)
            .map(|&r| Baud(r))
            .ok_or_else(|| format!("{v} is not a serial speed we support ({RATES:?})"))
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "i64")]
struct WatchdogSecs(u32);

impl TryFrom<i64> for WatchdogSecs {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u32::try_from(v) {
            Ok(s) if (1..=3600).contains(&s) => Ok(WatchdogSecs(s)),
            _ => Err(format!("{v} s is outside 1..=3600")),
        }
    }
}

impl<'de> Deserialize<'de> for CoreSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CoreSpec::try_from(s).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for KeyCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A parsed file with the origins of the values that are checked after merging.
#[derive(Debug)]
struct Layer {
    path: PathBuf,
    raw: RawProfile,
    /// Key path → where it was set, for errors found after merging.
    origins: BTreeMap<&'static str, Origin>,
}

fn line_of(src: &str, offset: usize) -> usize {
    src.get(..offset).map_or(1, |s| s.matches('\n').count() + 1)
}

/// The dotted key at `offset` in `src`: the nearest table header above it and
/// the key on its own line. Good enough for the error messages of a file whose
/// format we define; it does not need to understand every corner of TOML.
fn key_at(src: &str, offset: usize) -> String {
    let before = src.get(..offset).unwrap_or(src);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = src[line_start..].lines().next().unwrap_or("").trim();
    let header_of = |l: &str| {
        let l = l.trim();
        l.strip_prefix("[[")
            .and_then(|r| r.split_once("]]"))
            .or_else(|| l.strip_prefix('[').and_then(|r| r.split_once(']')))
            .map(|(h, _)| h.trim().to_owned())
    };
    if let Some(h) = header_of(line) {
        return h;
    }
    let table = src[..line_start].lines().rev().find_map(header_of);
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned());
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => "(top level)".to_owned(),
    }
}

fn parse_layer(path: &Path, src: &str) -> Result<Layer, ProfileError> {
    let raw: RawProfile = toml::from_str(src).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let mut key = key_at(src, offset);
        // For an unknown key the parser points at the key itself; name it fully.
        let msg = e.message().trim().to_owned();
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            if let Some((field, _)) = rest.split_once('`') {
                if !key.ends_with(field) {
                    key = format!("{key}.{field}");
                }
            }
        }
        ProfileError::Invalid {
            path: path.to_owned(),
            line: line_of(src, offset),
            key,
            message: msg,
        }
    })?;
    let origin = |span: std::ops::Range<usize>| Origin {
        path: path.to_owned(),
        line: line_of(src, span.start),
    };
    let mut origins = BTreeMap::new();
    if let Some(c) = &raw.cores {
        if let Some(h) = &c.housekeeping {
            origins.insert("cores.housekeeping", origin(h.span()));
        }
        if let Some(s) = &c.sip {
            origins.insert("cores.sip", origin(s.span()));
        }
    }
    if let Some(cmd) = raw.kernel.as_ref().and_then(|k| k.cmdline.as_ref()) {
        origins.insert("kernel.cmdline", origin(cmd.span()));
    }
    if let Some(p) = &raw.panel {
        if let Some(b) = &p.button {
            origins.insert("panel.button", origin(b.span()));
        }
        if let Some(l) = &p.leds {
            for (key, led) in [
                ("panel.leds.online", &l.online),
                ("panel.leds.draining", &l.draining),
                ("panel.leds.offline", &l.offline),
            ] {
                if let Some(led) = led {
                    origins.insert(key, origin(led.span()));
                }
            }
        }
    }
    if let Some(i) = &raw.inherit {
        origins.insert("inherit", origin(i.span()));
    }
    Ok(Layer {
        path: path.to_owned(),
        raw,
        origins,
    })
}

/// Reads a board folder's `cmdline` file: lines joined by spaces, `#` comments
/// and blank lines dropped, so a long command line can be kept readable.
fn read_cmdline_file(path: &Path) -> Result<Option<String>, ProfileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ProfileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let words: Vec<&str> = text
        .lines()
        .map(|l| l.split_once('#').map_or(l, |(before, _)| before))
        .flat_map(str::split_whitespace)
        .collect();
    Ok(Some(words.join(" ")))
}

fn valid_board_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Loads the board `name` from `boards_dir` (the repository's `board/`, or
/// where the image installs it), following `inherit`.
pub fn load(boards_dir: &Path, name: &str) -> Result<Profile, ProfileError> {
    if !valid_board_name(name) {
        return Err(ProfileError::BadName(name.to_owned()));
    }
    let own_path = boards_dir.join(name).join(PROFILE_FILE);
    let mut layers = Vec::new();
    let mut chain = vec![name.to_owned()];
    let mut current = name.to_owned();
    loop {
        let dir = boards_dir.join(&current);
        let path = dir.join(PROFILE_FILE);
        let src = std::fs::read_to_string(&path).map_err(|source| ProfileError::Read {
            path: path.clone(),
            source,
        })?;
        let mut layer = parse_layer(&path, &src)?;
        // The cmdline file counts as this layer's `kernel.cmdline`.
        let cmdline_path = dir.join(CMDLINE_FILE);
        if let Some(cmdline) = read_cmdline_file(&cmdline_path)? {
            if let Some(o) = layer.origins.get("kernel.cmdline") {
                return Err(o.error(
                    "kernel.cmdline",
                    format!("set here and in {}; keep one", cmdline_path.display()),
                ));
            }
            let kernel = layer.raw.kernel.get_or_insert_with(RawKernel::default);
            kernel.cmdline = Some(Spanned::new(0..0, cmdline));
            layer.origins.insert(
                "kernel.cmdline",
                Origin {
                    path: cmdline_path,
                    line: 1,
                },
            );
        }
        let parent = layer.raw.inherit.as_ref().map(|i| i.get_ref().clone());
        let inherit_origin = layer.origins.get("inherit").cloned();
        layers.push(layer);
        let Some(parent) = parent else { break };
        if !valid_board_name(&parent) {
            let o = inherit_origin.unwrap_or(Origin { path, line: 1 });
            return Err(o.error("inherit", format!("{parent:?} is not a board name")));
        }
        let looped = chain.contains(&parent);
        chain.push(parent.clone());
        if looped || chain.len() > MAX_INHERIT_DEPTH {
            return Err(ProfileError::Inherit {
                path: own_path,
                chain: chain.join(" -> "),
            });
        }
        current = parent;
    }
    let merged = layers
        .into_iter()
        .reduce(merge)
        .ok_or_else(|| ProfileError::Missing {
            path: own_path.clone(),
            key: "(profile)".into(),
        })?;
    build(
        name,
        boards_dir.join(name),
        chain[1..].to_vec(),
        own_path,
        merged,
    )
}

// ---------------------------------------------------------------- merging

/// `child` over `parent`.
fn merge(child: Layer, parent: Layer) -> Layer {
    let (c, p) = (child.raw, parent.raw);
    let mut origins = parent.origins;
    origins.extend(child.origins);
    let raw = RawProfile {
        inherit: c.inherit,
        description: c.description.or(p.description),
        ports: merge_opt(c.ports, p.ports, |c, p| RawPorts {
            access: c.access.or(p.access),
            core: c.core.or(p.core),
            twin: c.twin.or(p.twin),
        }),
        cores: merge_opt(c.cores, p.cores, |c, p| RawCores {
            housekeeping: c.housekeeping.or(p.housekeeping),
            sip: c.sip.or(p.sip),
        }),
        console: merge_opt(c.console, p.console, |c, p| RawConsole {
            device: c.device.or(p.device),
            baud: c.baud.or(p.baud),
        }),
        watchdog: merge_opt(c.watchdog, p.watchdog, |c, p| RawWatchdog {
            device: c.device.or(p.device),
            module: c.module.or(p.module),
            runtime_secs: c.runtime_secs.or(p.runtime_secs),
        }),
        kernel: merge_opt(c.kernel, p.kernel, |c, p| RawKernel {
            package: c.package.or(p.package),
            modules: c.modules.or(p.modules),
            cmdline: c.cmdline.or(p.cmdline),
        }),
        panel: merge_opt(c.panel, p.panel, |c, p| RawPanel {
            hold_ms: c.hold_ms.or(p.hold_ms),
            debounce_ms: c.debounce_ms.or(p.debounce_ms),
            lamp_test_ms: c.lamp_test_ms.or(p.lamp_test_ms),
            blank_after_ms: c.blank_after_ms.or(p.blank_after_ms),
            poll_ms: c.poll_ms.or(p.poll_ms),
            button: c.button.or(p.button),
            leds: merge_opt(c.leds, p.leds, |c, p| RawLeds {
                online: c.online.or(p.online),
                draining: c.draining.or(p.draining),
                offline: c.offline.or(p.offline),
            }),
        }),
    };
    Layer {
        path: child.path,
        raw,
        origins,
    }
}

fn merge_opt<T>(child: Option<T>, parent: Option<T>, both: impl FnOnce(T, T) -> T) -> Option<T> {
    match (child, parent) {
        (Some(c), Some(p)) => Some(both(c, p)),
        (c, p) => c.or(p),
    }
}

// ---------------------------------------------------------------- validation

fn build(
    name: &str,
    dir: PathBuf,
    inherits: Vec<String>,
    own_path: PathBuf,
    layer: Layer,
) -> Result<Profile, ProfileError> {
    let missing = |key: &str| ProfileError::Missing {
        path: own_path.clone(),
        key: key.to_owned(),
    };
    let origin = |key: &str| {
        layer.origins.get(key).cloned().unwrap_or(Origin {
            path: own_path.clone(),
            line: 1,
        })
    };
    let raw = layer.raw;

    let ports = match raw.ports {
        None => None,
        Some(p) => Some(Ports {
            access: p.access.ok_or_else(|| missing("ports.access"))?.0,
            core: p.core.ok_or_else(|| missing("ports.core"))?.0,
            twin: p.twin.ok_or_else(|| missing("ports.twin"))?.0,
        }),
    };

    let cores = raw.cores.ok_or_else(|| missing("cores"))?;
    let cores = Cores {
        housekeeping: cores
            .housekeeping
            .ok_or_else(|| missing("cores.housekeeping"))?
            .into_inner(),
        sip: cores.sip.ok_or_else(|| missing("cores.sip"))?.into_inner(),
    };
    if let (CoreSpec::List(h), CoreSpec::List(s)) = (&cores.housekeeping, &cores.sip) {
        if h.intersects(s) {
            return Err(origin("cores.sip").error(
                "cores.sip",
                format!("{s} overlaps the housekeeping cores {h}; a SIP core is isolated"),
            ));
        }
    }

    let console = match raw.console {
        None => None,
        Some(c) => Some(Console {
            device: c.device.ok_or_else(|| missing("console.device"))?.0,
            baud: c.baud.map_or(115_200, |b| b.0),
        }),
    };

    let watchdog = match raw.watchdog {
        None => None,
        Some(w) => Some(WatchdogSpec {
            device: PathBuf::from(w.device.ok_or_else(|| missing("watchdog.device"))?.0),
            module: w.module.map(|m| m.0),
            runtime_secs: w.runtime_secs.map_or(30, |s| s.0),
        }),
    };

    let kernel = match raw.kernel {
        None => Kernel::default(),
        Some(k) => Kernel {
            package: k.package,
            modules: k
                .modules
                .unwrap_or_default()
                .into_iter()
                .map(|m| m.0)
                .collect(),
            cmdline: k.cmdline.map(Spanned::into_inner),
        },
    };
    if let Some(cmdline) = &kernel.cmdline {
        check_cmdline(cmdline, &cores, console.as_ref())
            .map_err(|msg| origin("kernel.cmdline").error("kernel.cmdline", msg))?;
    }

    let panel = match raw.panel {
        None => None,
        Some(p) => {
            let defaults = panel::PanelConfig::default();
            let config = panel::PanelConfig {
                hold_ms: p.hold_ms.map_or(defaults.hold_ms, |m| m.0),
                debounce_ms: p.debounce_ms.map_or(defaults.debounce_ms, |m| m.0),
                lamp_test_ms: p.lamp_test_ms.map_or(defaults.lamp_test_ms, |m| m.0),
                blank_after_ms: p.blank_after_ms.map(|m| m.0),
            };
            if config.debounce_ms >= config.hold_ms {
                return Err(origin("panel.button")
                    .error("panel.debounce_ms", "must be shorter than panel.hold_ms"));
            }
            let button = p.button.ok_or_else(|| missing("panel.button"))?;
            let button = build_button(button.into_inner(), &origin("panel.button"))?;
            let leds = p.leds.ok_or_else(|| missing("panel.leds"))?;
            let led = |key: &'static str, raw: Option<Spanned<RawLed>>| {
                let raw = raw.ok_or_else(|| missing(key))?;
                build_led(raw.into_inner(), key, &origin(key))
            };
            let leds = LedSpecs {
                online: led("panel.leds.online", leds.online)?,
                draining: led("panel.leds.draining", leds.draining)?,
                offline: led("panel.leds.offline", leds.offline)?,
            };
            Some(PanelSpec {
                config,
                poll_ms: p.poll_ms.map_or(10, |m| m.0),
                button,
                leds,
            })
        }
    };

    Ok(Profile {
        name: name.to_owned(),
        dir,
        inherits,
        description: raw.description.unwrap_or_default(),
        ports,
        cores,
        console,
        watchdog,
        kernel,
        panel,
    })
}

/// Keys set that the backend does not use are errors: they mean the writer
/// expected something that will not happen.
fn refuse_unused(
    origin: &Origin,
    table: &str,
    backend: &str,
    set: &[(&str, bool)],
) -> Result<(), ProfileError> {
    match set.iter().find(|(_, is_set)| *is_set) {
        Some((key, _)) => Err(origin.error(
            &format!("{table}.{key}"),
            format!("does not apply to backend {backend:?}"),
        )),
        None => Ok(()),
    }
}

fn gpio_line(
    origin: &Origin,
    table: &str,
    chip: Option<DevName>,
    line: Option<LineRef>,
    active_low: Option<bool>,
    bias: Option<Bias>,
) -> Result<GpioLineSpec, ProfileError> {
    let line = line
        .ok_or_else(|| origin.error(&format!("{table}.line"), "backend \"gpio\" needs `line`"))?;
    if matches!(line, LineRef::Offset(_)) && chip.is_none() {
        return Err(origin.error(
            &format!("{table}.chip"),
            "a line given by offset needs `chip`",
        ));
    }
    Ok(GpioLineSpec {
        chip: chip.map(|c| c.0),
        line,
        active_low: active_low.unwrap_or(false),
        bias: bias.unwrap_or_default(),
    })
}

fn build_button(b: RawButton, origin: &Origin) -> Result<ButtonSpec, ProfileError> {
    const T: &str = "panel.button";
    match b.backend {
        ButtonBackend::Gpio => {
            refuse_unused(
                origin,
                T,
                "gpio",
                &[
                    ("key", b.key.is_some()),
                    ("device", b.device.is_some()),
                    ("grab", b.grab.is_some()),
                ],
            )?;
            gpio_line(origin, T, b.chip, b.line, b.active_low, b.bias).map(ButtonSpec::Gpio)
        }
        ButtonBackend::Evdev => {
            refuse_unused(
                origin,
                T,
                "evdev",
                &[
                    ("chip", b.chip.is_some()),
                    ("line", b.line.is_some()),
                    ("active_low", b.active_low.is_some()),
                    ("bias", b.bias.is_some()),
                ],
            )?;
            let key = b
                .key
                .ok_or_else(|| origin.error("panel.button.key", "backend \"evdev\" needs `key`"))?;
            Ok(ButtonSpec::Evdev(EvdevKeySpec {
                key,
                device: b.device,
                grab: b.grab.unwrap_or(true),
            }))
        }
        ButtonBackend::Sim => {
            refuse_unused(
                origin,
                T,
                "sim",
                &[
                    ("chip", b.chip.is_some()),
                    ("line", b.line.is_some()),
                    ("active_low", b.active_low.is_some()),
                    ("bias", b.bias.is_some()),
                    ("key", b.key.is_some()),
                    ("device", b.device.is_some()),
                    ("grab", b.grab.is_some()),
                ],
            )?;
            Ok(ButtonSpec::Sim)
        }
    }
}

fn build_led(l: RawLed, table: &str, origin: &Origin) -> Result<LedSpec, ProfileError> {
    match l.backend {
        LedBackend::Gpio => {
            refuse_unused(origin, table, "gpio", &[("name", l.name.is_some())])?;
            gpio_line(origin, table, l.chip, l.line, l.active_low, None).map(LedSpec::Gpio)
        }
        LedBackend::LedClass => {
            refuse_unused(
                origin,
                table,
                "led-class",
                &[
                    ("chip", l.chip.is_some()),
                    ("line", l.line.is_some()),
                    ("active_low", l.active_low.is_some()),
                ],
            )?;
            let name = l.name.ok_or_else(|| {
                origin.error(
                    &format!("{table}.name"),
                    "backend \"led-class\" needs `name`",
                )
            })?;
            Ok(LedSpec::Class { name: name.0 })
        }
        LedBackend::Sim => {
            refuse_unused(
                origin,
                table,
                "sim",
                &[
                    ("name", l.name.is_some()),
                    ("chip", l.chip.is_some()),
                    ("line", l.line.is_some()),
                    ("active_low", l.active_low.is_some()),
                ],
            )?;
            Ok(LedSpec::Sim)
        }
    }
}

/// The command line must isolate exactly the SIP cores and name the console
/// the profile names, so the two cannot drift apart.
fn check_cmdline(cmdline: &str, cores: &Cores, console: Option<&Console>) -> Result<(), String> {
    let arg = |name: &str| {
        cmdline
            .split_whitespace()
            .filter_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .next_back()
    };
    if let CoreSpec::List(sip) = &cores.sip {
        for param in ["isolcpus", "nohz_full", "rcu_nocbs"] {
            let Some(value) = arg(param) else {
                return Err(format!("needs {param}={sip} to isolate the SIP cores"));
            };
            // isolcpus may carry flags before the list: isolcpus=managed_irq,domain,1-3
            let list = value
                .split(',')
                .filter(|part| part.starts_with(|c: char| c.is_ascii_digit()))
                .collect::<Vec<_>>()
                .join(",");
            let parsed: CpuList = list.parse().map_err(|e| format!("{param}: {e}"))?;
            if &parsed != sip {
                return Err(format!("{param}={value} but cores.sip = {sip}"));
            }
        }
    }
    if let Some(console) = console {
        let wanted = format!("{},{}", console.device, console.baud);
        let found = cmdline
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("console="))
            .any(|c| c.starts_with(&wanted) || c == console.device);
        if !found {
            return Err(format!(
                "needs console={wanted} (the [console] of this board)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
