//! The mission's flows on the box itself (issue 8, docs/box.md), on ONE boot of the qemu image
//! under TCG with two vCPUs, so that the SIP core is really isolated:
//!
//! a. console login; `show health` shows the SIP threads pinned to the SIP core and nothing
//!    else there;
//! b. a SIPp call is up; a 2.5 s press of the panel button through QMP turns the LEDs to
//!    draining (read back through the guest kernel's LED class); a new INVITE gets 503 with
//!    Retry-After; the call finishes; the state goes offline and the LEDs follow;
//!    `set-system-state online` brings it back;
//! c. one SIP worker of sbcd wedged (a test-build hook), the rest running: the control plane
//!    withholds systemd's watchdog, systemd restarts sbcd after `WatchdogSec=`, the LEDs show
//!    the fault (every change read as the kernel reports it) and then online, the recovery
//!    count goes up and `show health` names the wedged worker;
//! d+e. the box is taken offline, then its kernel dies without rebooting itself (panic with
//!    `panic=0`): the i6300esb watchdog resets the VM, the box comes back OFFLINE, and
//!    `set-system-state online` makes it carry a call again.
//!
//! The guest side is read through the serial console (`sbc-console`, as an operator would) and
//! through the test port on ttyS1, which exists only because this test boots the kernel with
//! `sbc.testport=ttyS1` (crates/sbcd/src/testport.rs). Timings go to
//! `out/system-tests/box_flows/timings.txt`; they are reported, never asserted.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{add_test_port, invite_final_response, Leds, Qmp, TestPort};
use system_tests::*;

const PROMPT: &str = "sbc-a> ";
/// The host port the factory config's upstream (10.0.3.2:25070) reaches.
const UPSTREAM_PORT: u16 = 25070;
/// `[cores]` of board/qemu/board.toml: the SIP core and the housekeeping core.
const SIP_CPUS: &str = "2";
const HOUSEKEEPING_CPUS: &str = "0-1";
/// The panel button of board/qemu/board.toml, as a QMP qcode.
const BUTTON: &str = "f12";
/// `retry_after_secs` of the factory config.
const RETRY_AFTER: &str = "Retry-After: 60";

/// TCG on a loaded 2-core machine: minutes, not seconds, before we call it a failure.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
const ONLINE_TIMEOUT: Duration = Duration::from_secs(180);
/// `WatchdogSec=5s` plus the restart, under TCG.
const RESTART_TIMEOUT: Duration = Duration::from_secs(120);
/// `RuntimeWatchdogSec=30s` (the i6300esb may take two stages of it) plus slack.
const HARDWARE_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the call under test lasts: long enough for the press and the checks around it.
const CALL_MS: u64 = 20_000;

fn check<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

struct Box {
    guest: Guest,
    /// The upstream for the whole boot: it answers the box's OPTIONS probes (`-aa`), so the
    /// upstream stays in rotation, and every call the test makes.
    _uas: Sipp,
    port: TestPort,
    qmp: Qmp,
    sip_port: u16,
    dir: std::path::PathBuf,
}

impl Box {
    /// Logs in as the factory account; true when the console made it choose a new password
    /// first (SPEC §5: the first login on a fresh disk), false when the factory password was
    /// refused and the one chosen earlier let it in.
    fn login(&mut self) -> bool {
        check(self.guest.wait_for("login: ", BOOT_TIMEOUT));
        check(console_login(&mut self.guest, PROMPT, ANSWER_TIMEOUT))
    }

    /// Types a console command and returns what it printed up to the next prompt.
    fn command(&mut self, line: &str) -> String {
        self.guest.type_line(line);
        // The line editor echoes the line after a redrawn prompt; the answer follows the echo
        // and ends at the next prompt.
        check(self.guest.wait_for(line, ANSWER_TIMEOUT));
        check(self.guest.wait_for(PROMPT, ANSWER_TIMEOUT))
    }

    /// A service-affecting command, confirmed.
    fn confirmed(&mut self, line: &str) -> String {
        self.guest.type_line(line);
        check(self.guest.wait_for("Proceed? [y/N] ", ANSWER_TIMEOUT));
        self.command("y")
    }

    /// Asks `show system-state` until it answers `state` (sbcd may be starting meanwhile).
    fn wait_state(&mut self, state: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let answer = self.command("show system-state");
            if answer.to_ascii_lowercase().contains(state) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "show system-state never said {state} within {timeout:?}; last answer:\n{answer}"
            );
            // Between two questions to a console that answered: no event to wait on.
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn recoveries(&mut self) -> u64 {
        let health = self.command("show health");
        health
            .lines()
            .find_map(|l| l.trim().strip_prefix("recoveries:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no recoveries line in show health:\n{health}"))
    }

    /// Waits until `show upstreams` has the upstream in rotation (the UAS answers its probes).
    fn wait_upstream(&mut self) {
        let started = Instant::now();
        loop {
            let answer = self.command("show upstreams");
            if answer.contains("in-rotation") {
                return;
            }
            assert!(
                started.elapsed() < ONLINE_TIMEOUT,
                "the upstream never came into rotation:\n{answer}"
            );
            // Between two questions to a console that answered: no event to wait on.
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn sipp_uac(&self, call_ms: u64) -> Sipp {
        Command::new("sipp")
            .arg(format!("127.0.0.1:{}", self.sip_port))
            .args(["-sn", "uac", "-i", "127.0.0.1", "-m", "1", "-r", "1"])
            // Not SIPp's default 5060, which anything else on the host may hold.
            .args(["-p", &free_port().to_string()])
            .args(["-d", &call_ms.to_string(), "-nostdin", "-s", "1000"])
            .args([
                "-timeout",
                "180s",
                "-timeout_error",
                "-recv_timeout",
                "30000",
            ])
            .args(["-trace_err", "-error_file"])
            .arg(self.dir.join("uac-errors.log"))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .map(Sipp)
            .unwrap_or_else(|e| panic!("starting sipp (UAC): {e}"))
    }

    /// One short call through the box, start to end.
    fn short_call(&mut self) {
        self.wait_upstream();
        let status = self
            .sipp_uac(1000)
            .0
            .wait()
            .unwrap_or_else(|e| panic!("waiting for sipp: {e}"));
        assert!(
            status.success(),
            "a SIPp call through the box failed ({status}); see {}; console:\n{}",
            self.dir.join("uac-errors.log").display(),
            self.guest.tail()
        );
    }
}

/// A SIPp process, killed when dropped: a failing test must not leave it holding its port.
struct Sipp(Child);

impl Sipp {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The UAS on the host as the box's upstream, for as long as the test runs.
fn sipp_uas(dir: &Path) -> Sipp {
    Command::new("sipp")
        .args(["-sn", "uas", "-i", "127.0.0.1", "-p"])
        .arg(UPSTREAM_PORT.to_string())
        .args(["-aa", "-nostdin", "-trace_err", "-error_file"])
        .arg(dir.join("uas-errors.log"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .map(Sipp)
        .unwrap_or_else(|e| panic!("starting sipp (UAS): {e}"))
}

fn boot(dir: &Path) -> Box {
    let uas = sipp_uas(dir);
    let sip_port = free_port();
    let qmp = dir.join("qmp.sock");
    let printed = xtask(&[
        "qemu",
        "--no-build",
        "--testport",
        "--snapshot",
        "--sip-port",
        &sip_port.to_string(),
        "--qmp",
        &qmp.to_string_lossy(),
        "--print-command",
    ]);
    assert!(
        printed.status.success(),
        "cargo xtask qemu --print-command failed:\n{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let mut cmd = PrintedCommand::parse(&String::from_utf8_lossy(&printed.stdout));
    // No -no-reboot: the hardware watchdog's reset must reset the VM, not end QEMU.
    assert!(
        !cmd.args.iter().any(|a| a == "-no-reboot"),
        "the QEMU command has -no-reboot"
    );
    assert!(
        cmd.args.iter().any(|a| a.contains("i6300esb"))
            && cmd.args.iter().any(|a| a == "watchdog=reset"),
        "the QEMU command has no i6300esb with -action watchdog=reset: {:?}",
        cmd.args
    );
    // The test port: a second serial line (ttyS1) and the kernel flag that makes sbcd serve it.
    let port_socket = dir.join("testport.sock");
    add_test_port(&mut cmd, &port_socket);

    let guest = Guest::start(&cmd);
    let port = TestPort::connect(&port_socket);
    let qmp = Qmp::connect(&qmp);
    Box {
        guest,
        _uas: uas,
        port,
        qmp,
        sip_port,
        dir: dir.to_path_buf(),
    }
}

/// a. `show health`: every SIP worker on the SIP core, every other thread off it.
fn pinning(b: &mut Box) {
    let health = b.command("show health");
    let threads: Vec<(String, String)> = health
        .lines()
        .filter(|l| l.contains(" tid ") && l.contains(" cpus "))
        .filter_map(|l| {
            let name = l.split_whitespace().next()?.to_string();
            let cpus = l.split(" cpus ").nth(1)?.trim().to_string();
            Some((name, cpus))
        })
        .collect();
    let workers: Vec<&(String, String)> = threads
        .iter()
        .filter(|(n, _)| n.starts_with("sip-worker"))
        .collect();
    assert!(
        !workers.is_empty(),
        "show health lists no SIP worker:\n{health}"
    );
    for (name, cpus) in &threads {
        if name.starts_with("sip-") {
            // Workers and the engine are the wire path: they alone belong on the SIP core.
            assert_eq!(cpus, SIP_CPUS, "{name} is not on the SIP core:\n{health}");
        } else {
            assert_eq!(
                cpus, HOUSEKEEPING_CPUS,
                "{name} is not on the housekeeping core:\n{health}"
            );
        }
    }
    assert!(
        health.contains("systemd WatchdogSec"),
        "sbcd does not feed systemd's watchdog:\n{health}"
    );
}

/// b. The drain by the panel button, with a call up, and back online from the console.
fn drain_by_button(b: &mut Box) -> Vec<(String, Duration)> {
    let mut times = Vec::new();
    b.wait_upstream();
    let mut uac = b.sipp_uac(CALL_MS);
    let call_started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if b.command("show calls").contains("confirmed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the SIPp call never showed as confirmed in show calls; console:\n{}",
            b.guest.tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    times.push(("call up".into(), call_started.elapsed()));

    b.qmp.press(BUTTON, Duration::from_millis(2500));
    // While held past the threshold the LEDs already show what release will do (amber), so
    // the state is asked first: the release has been acted on once the engine says draining.
    let released = Instant::now();
    b.wait_state("draining", ANSWER_TIMEOUT);
    check(b.port.wait_leds(Leds::DRAINING, ANSWER_TIMEOUT));
    times.push((
        "release to draining and amber LED".into(),
        released.elapsed(),
    ));

    let target = format!("127.0.0.1:{}", b.sip_port);
    let response = check(invite_final_response(&target, ANSWER_TIMEOUT));
    assert!(
        response.starts_with("SIP/2.0 503") && response.contains(RETRY_AFTER),
        "a new INVITE while draining did not get 503 with {RETRY_AFTER}:\n{response}"
    );

    let status = uac
        .0
        .wait()
        .unwrap_or_else(|e| panic!("waiting for sipp: {e}"));
    assert!(
        status.success(),
        "the call up during the drain did not complete ({status}); see {}",
        b.dir.join("uac-errors.log").display()
    );
    times.push(("call complete".into(), call_started.elapsed()));
    let ended = Instant::now();
    b.wait_state("offline", ANSWER_TIMEOUT);
    check(b.port.wait_leds(Leds::OFFLINE, ANSWER_TIMEOUT));
    times.push(("call end to offline LED".into(), ended.elapsed()));

    let asked = Instant::now();
    b.confirmed("set-system-state online");
    b.wait_state("online", ANSWER_TIMEOUT);
    check(b.port.wait_leds(Leds::ONLINE, ANSWER_TIMEOUT));
    times.push(("set online to green LED".into(), asked.elapsed()));
    times
}

/// c. One SIP worker wedged while every other thread of sbcd runs on: the control plane must
/// withhold systemd's watchdog, and systemd restart sbcd. Returns the recovery time (wedge to
/// the new sbcd serving the test port) and the time to green.
fn wedged_worker(b: &mut Box) -> (Duration, Duration) {
    let before = b.recoveries();
    let wedged = Instant::now();
    b.port.send("wedge-sip-worker");
    check(
        b.port
            .wait_for("testport: wedging sip-worker-0", ANSWER_TIMEOUT),
    );
    // While sbcd is down the panel alarm owns the LEDs (and the test port); it reports every
    // LED change the kernel shows until the new sbcd stops it.
    check(
        b.port
            .wait_for("testport: ready panel-alarm", RESTART_TIMEOUT),
    );
    let alarm_from = b.port.transcript.len();
    check(b.port.wait_for("testport: ready sbcd", RESTART_TIMEOUT));
    let restarted = wedged.elapsed();
    let alarm = alarm_leds(&b.port.transcript[alarm_from..]);
    eprintln!("LEDs while sbcd was down: {alarm:?}");
    assert!(
        alarm.red_lit > 0 && alarm.green_lit == 0 && alarm.amber_lit == 0,
        "while sbcd was down the LEDs were not the engine-down alarm (red only): {alarm:?}\n{}",
        b.port.tail()
    );
    check(b.port.wait_leds(Leds::ONLINE, ANSWER_TIMEOUT));
    let green = wedged.elapsed();
    b.wait_state("online", ANSWER_TIMEOUT);
    let health = b.command("show health");
    assert!(
        health.contains("last recovery: watchdog restart: SIP thread sip-worker-0"),
        "show health does not name the wedged worker:\n{health}"
    );
    let after = b.recoveries();
    assert_eq!(
        after,
        before + 1,
        "the recovery count did not go up by one after the watchdog restart"
    );
    (restarted, green)
}

/// What the panel alarm's LED changes showed: how many times each LED was seen lit, and how
/// many times the red one went dark again (its blink).
#[derive(Debug, Default)]
struct AlarmLeds {
    green_lit: usize,
    amber_lit: usize,
    red_lit: usize,
    red_dark: usize,
}

fn alarm_leds(lines: &[String]) -> AlarmLeds {
    let mut seen = AlarmLeds::default();
    for line in lines {
        let Some(rest) = line.split("testport: led-change ").nth(1) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let lit = value != "0";
        if name.ends_with("::numlock") && lit {
            seen.green_lit += 1;
        } else if name.ends_with("::capslock") && lit {
            seen.amber_lit += 1;
        } else if name.ends_with("::scrolllock") {
            if lit {
                seen.red_lit += 1;
            } else if seen.red_lit > 0 {
                seen.red_dark += 1;
            }
        }
    }
    seen
}

/// d+e. Offline, then a dead kernel: the hardware watchdog resets the VM, the box comes back
/// offline, and online again on the operator's word.
fn dead_kernel_and_offline_across_reboot(b: &mut Box) -> Vec<(String, Duration)> {
    let mut times = Vec::new();
    b.confirmed("set-system-state offline");
    b.wait_state("offline", ANSWER_TIMEOUT);
    check(b.port.wait_leds(Leds::OFFLINE, ANSWER_TIMEOUT));

    let recoveries = b.recoveries();
    let hung = Instant::now();
    b.port.send("hang-kernel");
    check(b.guest.wait_for("Kernel panic", ANSWER_TIMEOUT));
    let fired = check(b.qmp.wait_event("WATCHDOG", HARDWARE_WATCHDOG_TIMEOUT));
    times.push((
        "kernel dead to i6300esb reset".into(),
        fired.duration_since(hung),
    ));
    // The password chosen at the first login survived the reset (it is on the data partition):
    // the factory password is refused now, the new one works.
    assert!(
        !b.login(),
        "after the reset the console asked for a new password again: the one chosen was lost"
    );
    times.push(("kernel dead to login prompt".into(), hung.elapsed()));
    // The box must come back as the operator left it: offline, not online.
    let state_wait = Instant::now();
    loop {
        let answer = b.command("show system-state");
        let lower = answer.to_ascii_lowercase();
        if lower.contains("offline") {
            break;
        }
        assert!(
            !lower.contains("online"),
            "the box came back online after the reset, not offline:\n{answer}"
        );
        assert!(
            state_wait.elapsed() < ONLINE_TIMEOUT,
            "show system-state never answered after the reset:\n{answer}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    check(b.port.wait_leds(Leds::OFFLINE, ANSWER_TIMEOUT));
    times.push(("kernel dead to offline again".into(), hung.elapsed()));
    let health = b.command("show health");
    assert!(
        health.contains("box resets 1"),
        "show health does not count the box reset:\n{health}"
    );
    eprintln!("show health after the reset:\n{health}");
    assert_eq!(
        b.recoveries(),
        recoveries + 1,
        "the recovery count did not go up by one across the watchdog reset"
    );

    b.confirmed("set-system-state online");
    b.wait_state("online", ANSWER_TIMEOUT);
    check(b.port.wait_leds(Leds::ONLINE, ANSWER_TIMEOUT));
    b.short_call();
    times.push(("kernel dead to serving again".into(), hung.elapsed()));
    times
}

#[test]
fn on_the_box_pinning_drain_watchdogs_and_persistence() {
    assert!(
        have("sipp"),
        "sipp is missing: `cargo xtask test` installs it (apt-get install sip-tester)"
    );
    build_testport_image();
    assert_testport_image_carries(&["sbcd", "sbc-console"]);

    let dir = scratch("box_flows");
    let mut report = String::new();
    let mut note = |what: &str, took: Duration| {
        let line = format!("{what}: {:.1} s\n", took.as_secs_f64());
        eprint!("{line}");
        report.push_str(&line);
    };
    let mut b = boot(&dir);
    check(b.port.wait_for("testport: ready sbcd", BOOT_TIMEOUT));
    assert!(
        b.login(),
        "the first login with the factory password did not have to choose a new one"
    );
    note(
        "boot to login (with the first-login password change)",
        b.guest.started.elapsed(),
    );
    b.wait_state("online", ONLINE_TIMEOUT);
    note("boot to online", b.guest.started.elapsed());
    let short_press = Instant::now();
    check(b.port.wait_leds(Leds::ONLINE, ANSWER_TIMEOUT));
    note("green LED read back", short_press.elapsed());

    let step = Instant::now();
    pinning(&mut b);
    note("a. pinning", step.elapsed());

    let step = Instant::now();
    for (what, took) in drain_by_button(&mut b) {
        note(&format!("b. {what}"), took);
    }
    note("b. drain by button", step.elapsed());

    let step = Instant::now();
    let (restarted, green) = wedged_worker(&mut b);
    note(
        "c. SIP worker wedged to sbcd serving again (watchdog recovery)",
        restarted,
    );
    note("c. SIP worker wedged to green LED", green);
    note("c. wedged SIP worker", step.elapsed());

    let step = Instant::now();
    for (what, took) in dead_kernel_and_offline_across_reboot(&mut b) {
        note(&format!("d/e. {what}"), took);
    }
    note("d/e. dead kernel, offline across the reset", step.elapsed());

    b.guest.type_line("exit");
    note("whole boot", b.guest.started.elapsed());
    write_file(&dir.join("timings.txt"), report.as_bytes());
}
