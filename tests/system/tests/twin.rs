//! The twin on two QEMU appliances (`cargo xtask qemu --twin`, docs/twin.md): both boot from
//! the test-port image into a lab network namespace of their own (the access and core LANs
//! shared with the test's side, the cross-connect between them), node 1 first (once its sbcd
//! runs, node 2 starts), so node 1 becomes active and node 2 standby. Node 1's QEMU is killed
//! (SIGKILL: the machine vanishes); node 2 prints the `%TWIN:` notices of the twin lost and of
//! the service addresses claimed, `show twin` says it is active and owns them, an OPTIONS from
//! the lab's phone side to the access service address 192.0.2.10:5060 is answered 200 by it
//! (and one from the core side to 198.51.100.10:5062), and its LEDs turn from green blinking
//! slowly (standby) to green steady (active).
//!
//! Hot standby: before the kill, a call from the lab's phone side (SIPp UAC on 192.0.2.1)
//! through the access service address to the core (SIPp UAS on 198.51.100.1:25070, the lab's
//! upstream) is established and held; node 2's `show twin` says `replication: synced` and its
//! `show calls` lists the call. The call's hold outlasts the takeover: its BYE, sent to the
//! service address after node 2 claimed it, is answered 200 through node 2 (the UAC ends with
//! one successful call and none failed) and reaches the core's UAS.
//!
//! Waits end on console text, test-port lines or SIP answers, never on a fixed sleep. Timings
//! go to `out/system-tests/twin/timings.txt`; they are reported, never asserted (TCG on a
//! loaded machine is no measure of the box).

mod support;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{
    add_test_port, lab_prerequisites, prerequisites_met, twin_commands, Console, LabNetns, Leds,
    TestPort,
};
use system_tests::sipp::{sbcd_scenario, system_scenario, SippRun};
use system_tests::*;

/// TCG, two guests on a loaded 2-core machine: minutes, not seconds.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(120);
/// The access service address's listener (`lab.rs` in xtask).
const ACCESS_SERVICE: &str = "192.0.2.10:5060";
/// Set in the environment of this test binary when it is re-run inside the lab as the SIP
/// phone (see [`lab_phone_options`]).
const PHONE_TARGET_ENV: &str = "SBC_TWIN_PHONE_TARGET";
const PHONE_TIMEOUT_ENV: &str = "SBC_TWIN_PHONE_TIMEOUT_SECS";
const PHONE_BIND_ENV: &str = "SBC_TWIN_PHONE_BIND";
/// The test side's addresses in the lab: the phones on the access LAN, the core on its own.
const PHONES: &str = "192.0.2.1";
const CORE: &str = "198.51.100.1";
/// The core service address's listener.
const CORE_SERVICE: &str = "198.51.100.10:5062";
/// The lab's upstream, `sip:198.51.100.1:25070` (`lab.rs` in xtask): the core's SIPp UAS.
const CORE_UAS_PORT: u16 = 25070;
/// The phone's SIPp UAC on 192.0.2.1 (the namespace is the test's own: nothing else holds it).
const PHONE_UAC_PORT: u16 = 5070;
/// How long the held call lasts from its ACK to its BYE. What it must cover: node 2 saying it
/// holds the call (a few console questions: 0.05 s in the runs so far), the kill, the takeover
/// (claimed 0.5-0.8 s after the kill under TCG), and margin; the BYE then goes after the claim
/// (asserted), while the test reads the survivor's LEDs. Each second of it is a second of the
/// test's wall time in CI.
const CALL_HOLD: Duration = Duration::from_secs(20);
/// What must be left of the hold at the kill (else the test fails saying the hold is too short
/// for this machine): ten times the takeover's time under TCG.
const HOLD_LEFT_AT_KILL: Duration = Duration::from_secs(10);

fn check<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

struct Node {
    console: Console,
    port: TestPort,
}

impl std::ops::Deref for Node {
    type Target = Console;
    fn deref(&self) -> &Console {
        &self.console
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Console {
        &mut self.console
    }
}

impl Node {
    /// Waits until `show upstreams` has the upstream in rotation (the core's UAS answers the
    /// probes).
    fn wait_upstream(&mut self, timeout: Duration) -> String {
        let started = Instant::now();
        loop {
            let answer = self.command("show upstreams");
            if answer.contains("in-rotation") {
                return answer;
            }
            assert!(
                started.elapsed() < timeout,
                "{}: the upstream never came into rotation within {timeout:?}:\n{answer}",
                self.label
            );
            // Between two questions to a console that answered: no event to wait on.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The phone side of the lab: this test binary run again inside the namespace, sending OPTIONS
/// to the target until one is answered. Its stdout lines, as they come.
struct Phone {
    child: Child,
    /// Each line with when it arrived (not when it is looked at).
    lines: Receiver<(Instant, String)>,
}

impl Phone {
    fn start(netns: &str, bind: &str, target: &str, timeout: Duration) -> Phone {
        let exe =
            std::env::current_exe().unwrap_or_else(|e| panic!("the test binary's own path: {e}"));
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(exe)
            .args(["lab_phone_options", "--exact", "--nocapture"])
            .env(PHONE_TARGET_ENV, target)
            .env(PHONE_BIND_ENV, bind)
            .env(PHONE_TIMEOUT_ENV, timeout.as_secs().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the phone in the lab: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("the phone's stdout was not piped"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Phone { child, lines: rx }
    }

    /// The answer's status line and when it arrived.
    fn answer(&mut self, timeout: Duration) -> Result<(Instant, String), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    if let Some(status) = line.strip_prefix("PHONE ANSWER ") {
                        return Ok((at, status.to_string()));
                    }
                    if line.starts_with("PHONE NO ANSWER") {
                        return Err(line);
                    }
                }
                Err(_) => return Err(format!("the phone gave no answer within {timeout:?}")),
            }
        }
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Not a test of its own: the phone that [`Phone`] runs inside the lab (this binary re-run with
/// the target in its environment). Without it, it returns at once.
#[test]
fn lab_phone_options() {
    let Ok(target) = std::env::var(PHONE_TARGET_ENV) else {
        return;
    };
    let secs: u64 = std::env::var(PHONE_TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let bind = std::env::var(PHONE_BIND_ENV).unwrap_or_else(|_| PHONES.to_string());
    let socket =
        UdpSocket::bind((bind.as_str(), 0)).unwrap_or_else(|e| panic!("binding {bind}: {e}"));
    let local = socket
        .local_addr()
        .unwrap_or_else(|e| panic!("local address: {e}"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    let mut n = 0u32;
    while Instant::now() < deadline {
        n += 1;
        // A new transaction each time: the first one the survivor sees is answered.
        let branch = format!("z9hG4bK-twin-{}-{n}", std::process::id());
        let request = format!(
            "OPTIONS sip:{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:phone@{local}>;tag=twintest\r\n\
             To: <sip:{target}>\r\n\
             Call-ID: twin-{branch}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        );
        // Unreachable for a moment (no ARP answer yet) is what a takeover looks like.
        let _ = socket.send_to(request.as_bytes(), &target);
        let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
        if let Ok(got) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..got]).into_owned();
            let status = text.lines().next().unwrap_or("").to_string();
            println!("PHONE ANSWER {status}");
            return;
        }
    }
    println!("PHONE NO ANSWER from {target} within {secs} s");
}

/// The PID of the QEMU under `timeout` (the guest's process), from /proc.
fn qemu_pid(timeout_pid: u32) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{timeout_pid}/task/{timeout_pid}/children"))
            .unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no QEMU process under timeout ({timeout_pid})"))
}

/// Samples the LEDs for at least `window` and at least `min_readings` readings, stopping early
/// once `enough` holds for what was seen (or at `deadline`); returns every distinct reading.
fn led_readings(
    port: &mut TestPort,
    window: Duration,
    min_readings: usize,
    enough: impl Fn(&[Leds]) -> bool,
) -> Vec<Leds> {
    let started = Instant::now();
    let deadline = window + ANSWER_TIMEOUT;
    let mut seen = Vec::new();
    let mut readings = 0;
    while started.elapsed() < deadline
        && (started.elapsed() < window || readings < min_readings)
        && !enough(&seen)
    {
        if let Some(leds) = port.leds(Duration::from_secs(20)) {
            readings += 1;
            if !seen.contains(&leds) {
                seen.push(leds);
            }
        }
    }
    seen
}

/// Unix time in seconds, as SIPp's `gettimeofday` logs it.
fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

const DARK: Leds = Leds {
    green: false,
    amber: false,
    red: false,
};

#[test]
fn twin_takeover_in_qemu() {
    if !prerequisites_met("twin system test", &lab_prerequisites()) {
        return;
    }
    let test_started = Instant::now();
    build_testport_image();
    assert_testport_image_carries(&["sbcd", "sbc-console"]);

    let dir = scratch("twin");
    let mut report = String::new();
    let mut note = |what: &str, took: Duration| {
        let line = format!("{what}: {:.2} s\n", took.as_secs_f64());
        eprint!("{line}");
        report.push_str(&line);
    };

    let netns = format!("sbc-lab-test-{}", std::process::id());
    let printed = xtask(&[
        "qemu",
        "--twin",
        "--no-build",
        "--testport",
        "--snapshot",
        "--lab",
        &netns,
        "--print-command",
    ]);
    // The namespace exists from here on (xtask leaves it to us when it printed).
    let _lab = LabNetns(netns.clone());
    assert!(
        printed.status.success(),
        "cargo xtask qemu --twin --print-command failed:\n{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    // The core: SIPp answering calls and the upstream probes, from before the nodes start (its
    // first probe is answered). Declared after the lab: stopped before the namespace goes.
    let mut core_uas = SippRun::start_in_netns(
        "the core's SIPp UAS",
        &netns,
        CORE,
        CORE_UAS_PORT,
        &dir.join("sipp-core-uas"),
        &[
            "-sf".into(),
            sbcd_scenario("uas_answer.xml").display().to_string(),
        ],
    );
    check(core_uas.wait_bound(ANSWER_TIMEOUT));
    let commands = twin_commands(&String::from_utf8_lossy(&printed.stdout));

    let mut nodes: Vec<Node> = Vec::new();
    for (name, mut cmd) in ["a", "b"].into_iter().zip(commands) {
        assert_eq!(
            cmd.program, "ip",
            "a lab node does not run in the lab's namespace"
        );
        let port_socket = dir.join(format!("testport-{name}.sock"));
        add_test_port(&mut cmd, &port_socket);
        let guest = Guest::start(&cmd);
        let mut port = TestPort::connect(&port_socket);
        if name == "a" {
            // Node 1 first, so that it is the one to find no twin and take the addresses: two
            // nodes settle it by node id only when they start within the detection time, and
            // two TCG boots on a loaded machine are seconds apart in either order.
            check(port.wait_for("testport: ready sbcd", BOOT_TIMEOUT));
            note("boot to sbcd started, node a", guest.started.elapsed());
        }
        nodes.push(Node {
            console: Console {
                label: format!("node {name}"),
                guest,
                prompt: format!("sbc-{name}> "),
                answer_timeout: ANSWER_TIMEOUT,
            },
            port,
        });
    }
    let boot_started = nodes[0].guest.started;
    let b_started = nodes[1].guest.started;

    for node in nodes.iter_mut() {
        check(node.guest.wait_for("login: ", BOOT_TIMEOUT));
        let console = &mut node.console;
        check(console_login(
            &mut console.guest,
            &console.prompt,
            ANSWER_TIMEOUT,
        ));
        note(
            &format!("boot to login, {}", node.label),
            node.guest.started.elapsed(),
        );
    }
    let active = nodes[0].wait_twin(
        "active, owning the addresses, with a standby twin",
        SETTLE_TIMEOUT,
        |t| {
            t.contains("this node:   1 active")
                && t.contains("owns the service addresses")
                && t.contains("twin:        2 standby")
        },
    );
    let standby = nodes[1].wait_twin("standby with an active twin", SETTLE_TIMEOUT, |t| {
        t.contains("this node:   2 standby") && t.contains("twin:        1 active")
    });
    assert!(
        !standby.contains("owns the service addresses"),
        "the standby owns the service addresses too:\n{standby}"
    );
    note("boot to one active and one standby", boot_started.elapsed());
    note(
        "node b's boot to one active and one standby",
        b_started.elapsed(),
    );
    eprintln!("node a, show twin:\n{active}\nnode b, show twin:\n{standby}");

    // The active answers on the service address (and the lab learns its MAC for it).
    let mut phone = Phone::start(&netns, PHONES, ACCESS_SERVICE, ANSWER_TIMEOUT);
    let (_, status) = check(phone.answer(ANSWER_TIMEOUT + Duration::from_secs(10)));
    assert!(
        status.starts_with("SIP/2.0 200"),
        "the active did not answer 200 to an OPTIONS on {ACCESS_SERVICE}: {status}"
    );
    drop(phone);

    // The standby's LEDs: green blinking slowly (lit and dark seen, nothing else).
    // Blinking at 0.5 Hz: both phases show within a few seconds of readings. Past sbcd's
    // lamp test (every LED lit for a second at its start) first: green alone once.
    check(nodes[1].port.wait_leds(Leds::ONLINE, ANSWER_TIMEOUT));
    let standby_leds = led_readings(&mut nodes[1].port, Duration::from_secs(5), 2, |seen| {
        seen.contains(&Leds::ONLINE) && seen.contains(&DARK)
    });
    assert!(
        standby_leds.contains(&Leds::ONLINE)
            && standby_leds.contains(&DARK)
            && standby_leds
                .iter()
                .all(|l| *l == Leds::ONLINE || *l == DARK),
        "the standby's LEDs are not green blinking: {standby_leds:?}\n{}",
        nodes[1].port.tail()
    );

    // A call from the phones through the access service address to the core, held across
    // the active's death.
    let upstreams = nodes[0].wait_upstream(SETTLE_TIMEOUT);
    eprintln!("node a, show upstreams:\n{upstreams}");
    let placed = SystemTime::now();
    let mut uac = SippRun::start_in_netns(
        "the phone's SIPp UAC",
        &netns,
        PHONES,
        PHONE_UAC_PORT,
        &dir.join("sipp-phone-uac"),
        &[
            ACCESS_SERVICE.into(),
            "-sf".into(),
            system_scenario("uac_call_held.xml").display().to_string(),
            "-s".into(),
            "core-user".into(),
            "-key".into(),
            "caller".into(),
            "twin-phone".into(),
            "-m".into(),
            "1".into(),
            "-d".into(),
            CALL_HOLD.as_millis().to_string(),
            "-timeout".into(),
            format!("{}s", (CALL_HOLD + TAKEOVER_TIMEOUT).as_secs()),
            "-timeout_error".into(),
        ],
    );
    if let Err(e) = uac.wait_logged("established", ANSWER_TIMEOUT) {
        let evidence = nodes[0].evidence();
        panic!(
            "the call through the active was not established: {e}\n\n{}\n\n{evidence}",
            core_uas.details()
        );
    }
    let established = Instant::now();
    let established_unix = uac
        .logged_unix_secs("established")
        .unwrap_or_else(|| panic!("the UAC's established line has no time\n{}", uac.details()));
    note(
        "call placed to established (SIPp's clock)",
        Duration::from_secs_f64((established_unix - unix_secs(placed)).max(0.0)),
    );
    let calls_a = nodes[0].command("show calls");
    assert!(
        calls_a.contains("1 active call(s)") && calls_a.contains("confirmed"),
        "the active does not list the established call:\n{calls_a}"
    );
    // The standby holds it: in sync, and the call in its own table.
    let (twin_b, calls_b) = loop {
        let twin = nodes[1].command("show twin");
        let calls = nodes[1].command("show calls");
        if twin.contains("replication: synced") && calls.contains("1 active call(s)") {
            break (twin, calls);
        }
        if established.elapsed() > SETTLE_TIMEOUT {
            let evidence = nodes[1].evidence();
            panic!(
                "node b never said synced with the call within {SETTLE_TIMEOUT:?}; last:\n\
                 {twin}\n{calls}\n\n{evidence}"
            );
        }
        // Between two questions to a console that answered: no event to wait on.
        std::thread::sleep(Duration::from_millis(200));
    };
    note(
        "call established to node b synced with the call (show twin, show calls)",
        established.elapsed(),
    );
    eprintln!("node a, show calls:\n{calls_a}\nnode b, show twin:\n{twin_b}\nnode b, show calls:\n{calls_b}");
    let left = CALL_HOLD.saturating_sub(established.elapsed());
    assert!(
        left >= HOLD_LEFT_AT_KILL,
        "the call's hold ({CALL_HOLD:?}) leaves {left:?} before its BYE, less than \
         {HOLD_LEFT_AT_KILL:?}: the BYE might go before the takeover (this machine is slower \
         than the hold was chosen for)"
    );

    // Node a dies: its QEMU is killed; the phone keeps asking from that moment.
    let mut a = nodes.remove(0);
    let b = &mut nodes[0];
    let pid = qemu_pid(a.guest.id());
    let mark = b.guest.transcript.len();
    let killed = Instant::now();
    let killed_unix = unix_secs(SystemTime::now());
    note("call established to the kill", established.elapsed());
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill -KILL {pid}: {e}"));
    assert!(status.success(), "kill -KILL {pid} failed");
    let mut phone = Phone::start(&netns, PHONES, ACCESS_SERVICE, TAKEOVER_TIMEOUT);
    let mut core = Phone::start(&netns, CORE, CORE_SERVICE, TAKEOVER_TIMEOUT);
    check(a.guest.wait_exit(ANSWER_TIMEOUT));

    // The notices the death causes (one printed before the kill, such as a path coming up
    // late at boot, does not count): the twin lost, then the addresses claimed.
    let mut notice = |text: &str| {
        b.wait_notice(text, mark, TAKEOVER_TIMEOUT)
            .duration_since(killed)
    };
    let lost_at = notice("%TWIN: twin lost");
    let claimed_at = notice("%TWIN: service addresses claimed");
    let survivor = b.wait_twin("active, owning the addresses", TAKEOVER_TIMEOUT, |t| {
        t.contains("this node:   2 active") && t.contains("owns the service addresses")
    });
    let active_at = killed.elapsed();
    let (answered, status) = check(phone.answer(TAKEOVER_TIMEOUT));
    let answer_at = answered.duration_since(killed);
    assert!(
        status.starts_with("SIP/2.0 200"),
        "the survivor did not answer 200 to an OPTIONS on {ACCESS_SERVICE}: {status}"
    );
    // Read after the waits above, so that every notice line is whole.
    let notices: Vec<String> = String::from_utf8_lossy(&b.guest.transcript[mark..])
        .lines()
        .filter_map(|l| l.split("%TWIN:").nth(1))
        .map(|l| format!("%TWIN:{}", l.trim_end()))
        .collect();
    let (core_answered, status) = check(core.answer(TAKEOVER_TIMEOUT));
    assert!(
        status.starts_with("SIP/2.0 200"),
        "the survivor did not answer 200 to an OPTIONS on {CORE_SERVICE}: {status}"
    );
    let core_answer_at = core_answered.duration_since(killed);
    eprintln!(
        "the survivor's notices:\n{}\nits show twin:\n{survivor}",
        notices.join("\n")
    );
    note("kill to the survivor's %TWIN: twin lost", lost_at);
    note(
        "kill to the survivor's %TWIN: service addresses claimed",
        claimed_at,
    );
    note("kill to the survivor's show twin active", active_at);
    note(
        "kill to the survivor's first SIP answer (access, 192.0.2.10:5060)",
        answer_at,
    );
    note(
        "kill to the survivor's first SIP answer (core, 198.51.100.10:5062)",
        core_answer_at,
    );

    // Active: green steady (every reading over 3 s lit, and only green).
    check(b.port.wait_leds(Leds::ONLINE, ANSWER_TIMEOUT));
    // Longer than a blink's dark phase (1 s), read at least 4 times.
    let active_leds = led_readings(&mut b.port, Duration::from_secs(3), 4, |_| false);
    assert_eq!(
        active_leds,
        vec![Leds::ONLINE],
        "the survivor's LEDs are not green steady:\n{}",
        b.port.tail()
    );
    note("kill to green steady read back", killed.elapsed());

    // The held call ends after the takeover: its BYE to the service address is answered 200
    // through node b, and the core's UAS receives it.
    let ended = uac.wait_exit(CALL_HOLD + TAKEOVER_TIMEOUT);
    let (ok, failed) = (uac.count("SuccessfulCall"), uac.count("FailedCall"));
    if !matches!(&ended, Ok(s) if s.success()) || ok != 1 || failed != 0 {
        let evidence = b.evidence();
        panic!(
            "the held call did not end well through the survivor: {ended:?}, {ok} successful, \
             {failed} failed\n{}\n\n{}\n\n{evidence}",
            uac.details(),
            core_uas.details()
        );
    }
    let bye_sent = uac.logged_unix_secs("bye-sent");
    let bye_answered = uac.logged_unix_secs("bye-answered");
    let (Some(bye_sent), Some(bye_answered)) = (bye_sent, bye_answered) else {
        panic!("the UAC logged no BYE sent and answered\n{}", uac.details());
    };
    let claimed_unix = killed_unix + claimed_at.as_secs_f64();
    assert!(
        bye_sent > claimed_unix,
        "the BYE went {:.2} s after the kill, before the survivor's claim ({:.2} s): the call \
         was not held across the takeover",
        bye_sent - killed_unix,
        claimed_at.as_secs_f64()
    );
    if let Err(e) = core_uas.wait_logged("bye-reason", ANSWER_TIMEOUT) {
        let evidence = b.evidence();
        panic!("the core's UAS never received the BYE: {e}\n\n{evidence}");
    }
    let byes = core_uas.received_requests("BYE");
    assert!(
        byes >= 1,
        "the core's UAS logged the BYE but its trace has none\n{}",
        core_uas.details()
    );
    let after = b.command("show calls");
    eprintln!("the held call: BYE answered 200 through node b; node b, show calls:\n{after}");
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    note(
        "kill to the UAC's BYE sent (end of the hold)",
        secs(bye_sent - killed_unix),
    );
    note(
        "kill to the BYE answered 200 through node b",
        secs(bye_answered - killed_unix),
    );
    note("BYE sent to answered", secs(bye_answered - bye_sent));
    core_uas.stop();

    b.guest.type_line("exit");
    note("whole test", test_started.elapsed());
    write_file(&dir.join("timings.txt"), report.as_bytes());
}
