//! The system tests' port into a guest: a second serial line that answers a few fixed
//! commands, enabled only by `sbc.testport=ttyS1` on the kernel command line (docs/box.md).
//!
//! The appliance's console is `sbc-console`, not a shell, and it must stay that way: nothing
//! here runs a shell or anything a line names. The commands are exactly what the QEMU system
//! tests need and the console cannot give them: the LEDs as the kernel reports them, a wedged
//! `sbcd` (SIGSTOP to itself) and a dead kernel (a panic that does not reboot, which only the
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
    let (reader, mut writer) = match open().and_then(|r| Ok((r.try_clone()?, r))) {
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
    let _ = write!(
        writer,
        "\r\ntestport: ready {who} pid {}\r\n",
        std::process::id()
    );
    // The tty is in its default cooked mode: lines arrive whole, echoed back, which the test
    // skips over since every answer starts with `testport:`.
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { return };
        let answer = answer(line.trim(), role);
        let _ = writer
            .write_all(answer.as_bytes())
            .and_then(|()| writer.flush());
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
        "stop-sbcd" if role == Role::Daemon => {
            tracing::warn!("test port: stopping sbcd with SIGSTOP");
            // Through the shell's builtin: sbcd links no libc wrapper of its own for signals,
            // and this is a test path only.
            let stopped = std::process::Command::new("/bin/sh")
                .args(["-c", &format!("kill -STOP {}", std::process::id())])
                .status();
            // Reached only after a SIGCONT, or when the signal could not be sent.
            format!("testport: stop-sbcd returned {stopped:?}\r\n")
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
