//! Field updates (issue 17, SPEC §8), on one box booted the way the APU2 boots (SeaBIOS, GRUB,
//! the slot GRUB picks) from a disk the test owns, with a second virtual disk standing for the
//! USB stick the bundles come on. One boot sequence, each step starting where the last ended:
//!
//! 1. a factory box (slot A): first login (the new password), the box taken offline;
//! 2. a bundle signed by another key is refused on the box, before anything is asked or written;
//! 3. update A -> B with `install-update media FILE`: progress shown, restart, slot B confirmed,
//!    `show version` names the bundle's release, the password chosen in step 1 and the offline
//!    state are still there;
//! 4. a bundle whose engine cannot start (its sbcd exits at once; its trial deadline shortened
//!    by a drop-in in the same bundle), downloaded with `install-update url` from a web server
//!    the test runs on the host (the box's core network), goes into slot A: its trial boot ends at the deadline, GRUB
//!    passes over the slot still on trial, slot B boots and says on the console that A was rolled
//!    back;
//! 5. QEMU killed through QMP while RAUC copies the image into slot A: the next start boots slot
//!    B, unharmed, with its version and state.
//!
//! Host side too (what `bundle.rs` checked before): `cargo xtask bundle` names its version and
//! board in the manifest, `rauc info` accepts it against the development certificate, and the task
//! fails on a bundle signed by another key. Timings of each step are printed and written to
//! `out/system-tests/update/timings.txt`, never asserted.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::Qmp;
use system_tests::*;

const PROMPT: &str = "sbc-a> ";
/// TCG on a loaded 2-core machine, through SeaBIOS and GRUB.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// RAUC writing a 256 MiB slot through dm-verity under TCG.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// The broken slot's trial deadline (its drop-in), and the margin to reach it.
const BROKEN_TRIAL_SECS: u64 = 45;
const GOOD_VERSION: &str = "9.0.0-update-test";
const BROKEN_VERSION: &str = "9.0.1-broken";

fn check<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The `bundle:` line of `cargo xtask bundle`'s output.
fn bundle_line(stdout: &str) -> Option<PathBuf> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("bundle: "))
        .map(|p| PathBuf::from(p.trim()))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The three bundles, on the host: the good one (checked with `rauc info`), the broken one, and
/// one signed by a key pair made on the spot (the task must fail on it).
fn bundles(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let good = dir.join("good.raucb");
    let made = xtask_visible(&[
        "bundle",
        "--testport",
        "--no-cargo-build",
        "--version",
        GOOD_VERSION,
        "--output",
        &good.to_string_lossy(),
    ]);
    let stdout = String::from_utf8_lossy(&made.stdout).into_owned();
    assert!(
        made.status.success(),
        "cargo xtask bundle failed:\n{stdout}"
    );
    assert_eq!(bundle_line(&stdout), Some(good.clone()), "{stdout}");
    let trusted = workspace_root().join("out/keys/bundle.cert.pem");
    let info = run(Command::new("rauc")
        .arg("info")
        .arg(format!("--keyring={}", trusted.display()))
        .arg(&good));
    assert!(info.contains("Compatible: \t'sbc-qemu'"), "{info}");
    assert!(
        info.contains(&format!("Version:    \t'{GOOD_VERSION}'")),
        "{info}"
    );
    assert!(info.contains("Bundle Format: \tverity"), "{info}");

    // An engine that cannot start, and a trial deadline the test can wait for.
    let overlay = dir.join("broken-root");
    for sub in ["usr/bin", "etc/systemd/system/sbc-slot-trial.timer.d"] {
        std::fs::create_dir_all(overlay.join(sub))
            .unwrap_or_else(|e| panic!("creating the broken slot's overlay: {e}"));
    }
    write_file(
        &overlay.join("usr/bin/sbcd"),
        b"#!/bin/sh\necho 'sbcd: this build cannot start (update test)' >&2\nexit 1\n",
    );
    run(Command::new("chmod")
        .arg("755")
        .arg(overlay.join("usr/bin/sbcd")));
    write_file(
        &overlay.join("etc/systemd/system/sbc-slot-trial.timer.d/10-update-test.conf"),
        format!("[Timer]\nOnBootSec=\nOnBootSec={BROKEN_TRIAL_SECS}s\n").as_bytes(),
    );
    let broken = dir.join("broken.raucb");
    let made = xtask_visible(&[
        "bundle",
        "--testport",
        "--no-cargo-build",
        "--version",
        BROKEN_VERSION,
        "--overlay",
        &overlay.to_string_lossy(),
        "--output",
        &broken.to_string_lossy(),
    ]);
    assert!(
        made.status.success(),
        "cargo xtask bundle (broken) failed:\n{}",
        String::from_utf8_lossy(&made.stdout)
    );

    let (key, cert) = (dir.join("other.key.pem"), dir.join("other.cert.pem"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/O=Elsewhere/CN=not ours", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let foreign = dir.join("foreign.raucb");
    let made = xtask_visible(&[
        "bundle",
        "--testport",
        "--no-cargo-build",
        "--key",
        &key.to_string_lossy(),
        "--cert",
        &cert.to_string_lossy(),
        "--output",
        &foreign.to_string_lossy(),
    ]);
    assert!(
        !made.status.success(),
        "cargo xtask bundle called a bundle signed by another key done"
    );
    assert!(foreign.exists(), "the foreign bundle was not written");
    (good, broken, foreign)
}

struct Box {
    guest: Guest,
    qmp: Qmp,
    printed: PrintedCommand,
    qmp_path: PathBuf,
}

impl Box {
    fn start(printed: PrintedCommand, qmp_path: PathBuf) -> Box {
        let guest = Guest::start(&printed);
        let qmp = Qmp::connect(&qmp_path);
        Box {
            guest,
            qmp,
            printed,
            qmp_path,
        }
    }

    /// Waits for the slot to be confirmed on the console, then logs in at a fresh prompt.
    /// Returns what the console printed on the way (the boot's messages).
    fn booted(&mut self, slot: &str) -> String {
        let booting = format!("sbc: booting slot {slot}");
        let mut shown = check(self.guest.wait_for(&booting, BOOT_TIMEOUT));
        let confirmed = format!("slot-good: slot {slot} confirmed");
        shown.push_str(&check(self.guest.wait_for(&confirmed, BOOT_TIMEOUT)));
        // The login prompt may have come before the confirmation: ask for a fresh one.
        self.guest.type_line("");
        check(self.guest.wait_for("login: ", ANSWER_TIMEOUT));
        shown
    }

    fn command(&mut self, line: &str) -> String {
        self.guest.type_line(line);
        check(self.guest.wait_for(line, ANSWER_TIMEOUT));
        check(self.guest.wait_for(PROMPT, ANSWER_TIMEOUT))
    }

    /// `install-update media FILE` up to its question; returns what it said.
    fn ask_install(&mut self, file: &str) -> String {
        self.ask(&format!("install-update media {file}"))
    }

    fn ask(&mut self, line: &str) -> String {
        self.guest.type_line(line);
        check(self.guest.wait_for(line, ANSWER_TIMEOUT));
        check(self.guest.wait_for("Proceed? [y/N] ", ANSWER_TIMEOUT))
    }

    fn version(&mut self) -> String {
        self.command("show version")
    }
}

/// A web server on the host's loopback for the box's core network (QEMU's user networking
/// takes the guest's 10.0.3.2 to the host's 127.0.0.1): GET of a file in `dir`, one request per
/// connection, until the test ends. Returns the port.
fn serve(dir: PathBuf) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("a port for the web server: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("its address: {e}"))
        .port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(match conn.try_clone() {
                Ok(c) => c,
                Err(_) => continue,
            });
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // The rest of the head, up to the empty line.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let name = request
                .strip_prefix("GET /")
                .and_then(|r| r.split(' ').next())
                .filter(|n| !n.contains('/') && !n.contains(".."))
                .unwrap_or("");
            match std::fs::read(dir.join(name)) {
                Ok(body) if !name.is_empty() => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(&body);
                }
                _ => {
                    let _ = conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    port
}

#[test]
fn an_update_installs_keeps_the_operators_state_rolls_back_refuses_and_survives_a_kill() {
    let build_started = Instant::now();
    let built = build_testport_image();
    assert!(
        built.status.success(),
        "the test image did not build:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let image_build = build_started.elapsed();
    let mut timings: Vec<(String, Duration)> = vec![("image build".into(), image_build)];

    let dir = scratch("update");
    let started = Instant::now();
    let (good, broken, foreign) = bundles(&dir);
    timings.push(("three bundles".into(), started.elapsed()));
    // The stick: `cargo xtask qemu --media DIR` puts the folder's files on one.
    let media = dir.join("stick");
    std::fs::create_dir_all(&media).unwrap_or_else(|e| panic!("creating {media:?}: {e}"));
    for bundle in [&good, &broken, &foreign] {
        let name = bundle.file_name().unwrap_or_default();
        std::fs::rename(bundle, media.join(name))
            .unwrap_or_else(|e| panic!("moving {bundle:?} onto the stick: {e}"));
    }
    assert!(have("qemu-img"), "qemu-img is missing (qemu-utils)");
    let disk = dir.join("disk.qcow2");
    let _ = std::fs::remove_file(&disk);
    let image = workspace_root().join("out/image/qemu-testport/sbc-qemu.img");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&image)
        .arg(&disk));

    let qmp_path = dir.join("qmp.sock");
    let sip_port = free_port().to_string();
    let printed = xtask(&[
        "qemu",
        "--no-build",
        "--testport",
        "--bios",
        "--disk",
        &disk.to_string_lossy(),
        "--media",
        &media.to_string_lossy(),
        "--sip-port",
        &sip_port,
        "--qmp",
        &qmp_path.to_string_lossy(),
        "--print-command",
    ]);
    assert!(
        printed.status.success(),
        "cargo xtask qemu --print-command failed:\n{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let printed = PrintedCommand::parse(&String::from_utf8_lossy(&printed.stdout));
    let mut b = Box::start(printed, qmp_path);

    // 1. The factory box.
    let step = Instant::now();
    b.booted("A");
    assert!(
        check(console_login(&mut b.guest, PROMPT, ANSWER_TIMEOUT)),
        "a factory box did not ask for a new password"
    );
    let factory = b.version();
    assert!(
        factory.contains("sbc-qemu 0.") && !factory.contains(GOOD_VERSION),
        "{factory}"
    );
    b.guest.type_line("set-system-state offline guard 5");
    check(b.guest.wait_for("Proceed? [y/N] ", ANSWER_TIMEOUT));
    b.command("y");
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while !b.command("show system-state").contains("offline") {
        assert!(Instant::now() < deadline, "the box never went offline");
        // Asking again a console that answered: there is no event to wait on.
        std::thread::sleep(Duration::from_millis(500));
    }
    timings.push(("factory boot, login, offline".into(), step.elapsed()));

    // 2. Not ours: refused before any question, nothing written.
    let several = b.command("install-update media");
    assert!(
        several.contains("several bundles on the attached media"),
        "{several}"
    );
    let refused = b.command("install-update media foreign.raucb");
    assert!(
        refused.contains("the bundle is refused") && refused.to_lowercase().contains("signature"),
        "a bundle signed by another key was not refused:\n{refused}"
    );

    // 3. A -> B.
    let step = Instant::now();
    let asked = b.ask_install("good.raucb");
    assert!(
        asked.contains(GOOD_VERSION) && asked.contains("into slot B") && asked.contains("offline"),
        "{asked}"
    );
    b.guest.type_line("y");
    let progress = check(b.guest.wait_for("Installed. Restarting", INSTALL_TIMEOUT));
    assert!(
        progress.contains("Copying image to rootfs.1") && progress.contains("100%"),
        "no progress shown:\n{progress}"
    );
    let install = step.elapsed();
    b.booted("B");
    assert!(
        !check(console_login(&mut b.guest, PROMPT, ANSWER_TIMEOUT)),
        "the password chosen before the update was lost"
    );
    let v = b.version();
    assert!(v.contains(&format!("sbc-qemu {GOOD_VERSION}")), "{v}");
    let state = b.command("show system-state");
    assert!(
        state.contains("offline"),
        "the offline state was lost:\n{state}"
    );
    timings.push(("install A -> B".into(), install));
    timings.push(("A -> B, install to logged in on B".into(), step.elapsed()));

    // 4. An engine that never gets ready, from a server on the core network: back to B by
    //    itself. First an address that serves nothing: a clear refusal, nothing asked.
    let step = Instant::now();
    let web = serve(media.clone());
    let missing = b.command(&format!(
        "install-update url http://10.0.3.2:{web}/missing.raucb"
    ));
    assert!(
        missing.contains("404") && !missing.contains("Proceed"),
        "a missing bundle was not refused clearly:\n{missing}"
    );
    let asked = b.ask(&format!(
        "install-update url http://10.0.3.2:{web}/broken.raucb"
    ));
    assert!(
        asked.contains("downloaded") && asked.contains("into slot A"),
        "{asked}"
    );
    b.guest.type_line("y");
    check(b.guest.wait_for("Installed. Restarting", INSTALL_TIMEOUT));
    check(b.guest.wait_for("sbc: booting slot A", BOOT_TIMEOUT));
    check(b.guest.wait_for(
        "update: slot A is on trial and the engine is not ready; restarting into slot B",
        BOOT_TIMEOUT + Duration::from_secs(BROKEN_TRIAL_SECS),
    ));
    let shown = b.booted("B");
    let said = format!(
        "update: slot A ({BROKEN_VERSION}) did not get ready on its trial boot; rolled back to slot B"
    );
    if !shown.contains(&said) {
        check(b.guest.wait_for(&said, ANSWER_TIMEOUT));
    }
    check(console_login(&mut b.guest, PROMPT, ANSWER_TIMEOUT));
    let v = b.version();
    assert!(v.contains(GOOD_VERSION), "{v}");
    timings.push((
        "broken bundle, install to rolled back".into(),
        step.elapsed(),
    ));

    // 5. Killed while RAUC writes slot A.
    let step = Instant::now();
    b.ask_install("good.raucb");
    b.guest.type_line("y");
    check(
        b.guest
            .wait_for("Copying image to rootfs.0", INSTALL_TIMEOUT),
    );
    b.qmp.execute(r#"{"execute":"quit"}"#);
    check(b.guest.wait_exit(ANSWER_TIMEOUT).map(|_| ()));
    let printed = std::mem::replace(
        &mut b.printed,
        PrintedCommand {
            program: String::new(),
            env: Vec::new(),
            args: Vec::new(),
        },
    );
    let qmp_path = b.qmp_path.clone();
    drop(b);
    let mut b = Box::start(printed, qmp_path);
    let shown = b.booted("B");
    assert!(!shown.contains("rolled back"), "{shown}");
    check(console_login(&mut b.guest, PROMPT, ANSWER_TIMEOUT));
    let v = b.version();
    assert!(v.contains(GOOD_VERSION), "{v}");
    let state = b.command("show system-state");
    assert!(state.contains("offline"), "{state}");
    timings.push((
        "killed mid-install, to logged in on B".into(),
        step.elapsed(),
    ));

    let text: String = timings
        .iter()
        .map(|(what, d)| format!("{what}: {:.1} s\n", d.as_secs_f64()))
        .collect();
    eprint!("update timings:\n{text}");
    let out = workspace_root().join("out/system-tests/update");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("timings.txt"), text);
}
