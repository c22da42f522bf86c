//! The system tests' port into a guest: a second serial line that answers a few fixed
//! commands, enabled only by `sbc.testport=ttyS1` on the kernel command line (docs/box.md).
//!
//! The appliance's console is `sbc-console`, not a shell, and it must stay that way: nothing
//! here runs a shell or anything a line names. The commands are exactly what the QEMU system
//! tests need and the console cannot give them: the LEDs as the kernel reports them (asked, and
//! while the engine-down alarm runs, every change as it happens), one SIP worker wedged while
//! the rest of `sbcd` runs on, and a dead kernel (a panic that does not reboot, which only the
//! hardware watchdog gets out of). Without the kernel flag none of this starts, and the real
//! boards' command lines never carry it.
//!
//! And it is not even compiled in unless sbcd is built with the cargo feature `testport`, which
//! only the system tests' image turns on (`cargo xtask image --testport`); `cargo xtask image`
//! refuses to put an sbcd that has it into the image for boxes.
//!
//! Both `sbcd` and `sbcd --panel-alarm` serve the port (never at once: systemd runs the alarm
//! only while `sbcd` is down), so the LEDs can be read while the engine is down too.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The SIP worker the test port asked to wedge (`usize::MAX`: none).
static WEDGE: AtomicUsize = AtomicUsize::new(usize::MAX);

/// How often the alarm's LED watch reads the kernel's brightness files: far below the
/// engine-down blink's half-period (125 ms), so no phase goes unseen.
const WATCH_EVERY: Duration = Duration::from_millis(5);

/// The kernel command line parameter that names the test port's tty.
const PARAMETER: &str = "sbc.testport=";

/// Which process answers: the alarm cannot be told to stop itself as `sbcd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Daemon,
    PanelAlarm,
}

/// The tty named on the kernel command line, if any (`/dev/ttyS1` for `sbc.testport=ttyS1`).
/// Only plain tty names are taken: the parameter cannot point the port at another file.
#[must_use]
pub fn configured(cmdline: &str) -> Option<PathBuf> {
    let name = cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix(PARAMETER))?;
    let plain = name.starts_with("tty")
        && name.len() > 3
        && name.bytes().all(|b| b.is_ascii_alphanumeric());
    plain.then(|| Path::new("/dev").join(name))
}

/// Starts the port's thread when the kernel command line asks for one.
pub fn start(role: Role) {
    let Ok(cmdline) = std::fs::read_to_string("/proc/cmdline") else {
        return;
    };
    let Some(tty) = configured(&cmdline) else {
        return;
    };
    tracing::warn!(tty = %tty.display(), ?role, "test port enabled by the kernel command line");
    let spawned = std::thread::Builder::new()
        .name("testport".into())
        .spawn(move || serve(&tty, role));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the test port");
    }
}

fn serve(tty: &Path, role: Role) {
    let open = || std::fs::OpenOptions::new().read(true).write(true).open(tty);
    let (reader, writer) = match open().and_then(|r| Ok((r.try_clone()?, r))) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(tty = %tty.display(), error = %e, "cannot open the test port");
            return;
        }
    };
    // Said on every start: the test waits for it after each restart of sbcd or the alarm.
    let who = match role {
        Role::Daemon => "sbcd",
        Role::PanelAlarm => "panel-alarm",
    };
    let writer = Arc::new(Mutex::new(writer));
    say(
        &writer,
        &format!("\r\ntestport: ready {who} pid {}\r\n", std::process::id()),
    );
    if role == Role::PanelAlarm {
        // The alarm lives only while sbcd restarts (half a second or so): too short to be sure
        // a question lands in the blink's lit phase, so it reports every change itself.
        let watch = Arc::clone(&writer);
        let _ = std::thread::Builder::new()
            .name("testport-leds".into())
            .spawn(move || watch_leds(Path::new("/sys/class/leds"), &watch));
    }
    // The tty is in its default cooked mode: lines arrive whole, echoed back, which the test
    // skips over since every answer starts with `testport:`.
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { return };
        say(&writer, &answer(line.trim(), role));
    }
}

fn say(writer: &Mutex<std::fs::File>, text: &str) {
    let mut writer = writer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = writer
        .write_all(text.as_bytes())
        .and_then(|()| writer.flush());
}

/// Writes `testport: led-change NAME BRIGHTNESS` for every LED at once, then for each change
/// the kernel reports, until the process ends.
fn watch_leds(class_dir: &Path, writer: &Mutex<std::fs::File>) {
    let mut shown: Vec<(String, String)> = Vec::new();
    loop {
        let now = leds(class_dir);
        for (name, brightness) in &now {
            let before = shown.iter().find(|(n, _)| n == name).map(|(_, b)| b);
            if before != Some(brightness) {
                say(
                    writer,
                    &format!("testport: led-change {name} {brightness}\r\n"),
                );
            }
        }
        shown = now;
        std::thread::sleep(WATCH_EVERY);
    }
}

/// Blocks the calling SIP worker's thread for good once the test port has asked to wedge
/// worker `index`: its runtime stops, heartbeat included, while every other thread of sbcd
/// runs on. Run as a task on each worker's runtime; a no-op without the test port.
pub async fn wedge_point(index: usize) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if WEDGE.load(Ordering::Relaxed) == index {
            tracing::warn!(worker = index, "test port: SIP worker wedged");
            loop {
                // Deliberately blocking inside the runtime: that is the wedge.
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}

fn answer(command: &str, role: Role) -> String {
    match command {
        "" => String::new(),
        "leds" => {
            let mut out = String::new();
            for (name, brightness) in leds(Path::new("/sys/class/leds")) {
                out.push_str(&format!("testport: led {name} {brightness}\r\n"));
            }
            out + "testport: end leds\r\n"
        }
        "wedge-sip-worker" if role == Role::Daemon => {
            tracing::warn!("test port: wedging SIP worker 0");
            WEDGE.store(0, Ordering::Relaxed);
            "testport: wedging sip-worker-0\r\n".to_owned()
        }
        "hang-kernel" => {
            tracing::warn!("test port: panicking the kernel with reboot-on-panic off");
            // panic=0: the kernel stays dead after the panic instead of rebooting itself, so
            // only the hardware watchdog brings the box back, as from a hung kernel.
            let written = std::fs::write("/proc/sys/kernel/panic", "0\n")
                .and_then(|()| std::fs::write("/proc/sysrq-trigger", "c"));
            format!("testport: hang-kernel failed: {written:?}\r\n")
        }
        other => format!("testport: unknown command {other:?}\r\n"),
    }
}

/// Every LED class device and its brightness as the kernel reports it, by name.
fn leds(class_dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(class_dir) else {
        return Vec::new();
    };
    let mut leds: Vec<(String, String)> = entries
        .flatten()
        .map(|e| {
            let brightness = std::fs::read_to_string(e.path().join("brightness"))
                .map_or_else(|e| format!("unreadable ({e})"), |s| s.trim().to_string());
            (e.file_name().to_string_lossy().into_owned(), brightness)
        })
        .collect();
    leds.sort();
    leds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_tty_name_enables_the_port() {
        let line = "console=ttyS0 quiet sbc.testport=ttyS1 panic=10";
        assert_eq!(configured(line), Some(PathBuf::from("/dev/ttyS1")));
        assert_eq!(configured("console=ttyS0 quiet"), None);
        assert_eq!(configured("sbc.testport=../sda"), None);
        assert_eq!(configured("sbc.testport=tty"), None);
        assert_eq!(configured("sbc.testport=ttyS1/x"), None);
    }

    #[test]
    fn leds_are_read_from_the_class_directory() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for (name, value) in [("input3::numlock", "1\n"), ("input3::capslock", "0\n")] {
            let led = dir.path().join(name);
            std::fs::create_dir(&led).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(led.join("brightness"), value).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            leds(dir.path()),
            [
                ("input3::capslock".to_string(), "0".to_string()),
                ("input3::numlock".to_string(), "1".to_string())
            ]
        );
    }
}
