//! The SCTP lab (issue 16): the appliance image and a peer guest cabled together over QEMU
//! datagram sockets on the host's loopback, since QEMU's user networking cannot carry SCTP and
//! the host kernel has none.
//!
//! The appliance boots the test image (`cargo xtask qemu --testport --link access=.. --link
//! core=.. --config FILE`) with its board addresses and firewall, and the factory configuration
//! plus one listener: SIP over SCTP on the access address, 10.0.2.15:5060 ([`lab_config`]; the
//! file reaches the box by fw_cfg, as the twin's nodes get theirs, and the firewall is made from
//! it at boot). The peer (`cargo xtask peer --net .. --net ..`: busybox, SIPp, kernel SCTP) has
//! eth0 10.0.2.20 on the box's access cable (the phones) and eth1 10.0.3.2 on its core cable
//! (the core: the factory upstream `sip:10.0.3.2:25070` is the peer's SIPp UAS). See
//! `system_tests::peer` for the drawing.
//!
//! Both boot at once; the peer's script waits (`peer-await box`) until the box's sbcd says on
//! the test port that it is serving, then, every finding one console line:
//! 1. an OPTIONS over UDP from 10.0.2.20 to the access listener: the box, online, answers 200
//!    (the cable works, the firewall admits SIP on the access port);
//! 2. a SIPp call over UDP from the phones' side through the box to the core's UAS on the same
//!    peer (access in, core out): the lab carries a whole call;
//! 3. the same OPTIONS over SCTP (`-t s1`): the peer's kernel opens an association to the box
//!    (its own `/proc/net/sctp/snmp` counts it established) and the box answers 200;
//! 4. a SIPp call over SCTP from the phones' side through the box (SCTP on the access side,
//!    UDP to the core's UAS);
//! 5. an OPTIONS over SCTP to a port where the box does not listen (10.0.2.15:5061): the
//!    firewall admits no SCTP there, so the peer's kernel sends its INITs and nothing comes
//!    back, no INIT ACK and no ABORT (the `--ignored` control boots without the firewall and
//!    sees the box's kernel refuse the same INIT at once).
//!
//! Adding SCTP on the core side: an upstream `sip:10.0.3.2:25070;transport=sctp` in
//! [`lab_config`] and the core's UAS in [`SCRIPT`] started with `-t s1`. A new step is one
//! `lab_sipp LABEL ...` line in the script and an `assert_eq!(step_exit(console, "LABEL"),
//! Some(0))`; its scenario files go in [`lab_peer`]'s list. A check that acts on the box while
//! the script runs (the drain to offline with associations up, then `/proc/net/sctp/assocs`
//! read in the peer) puts a second `peer-await WORD` in the script and does its part in
//! [`run_lab`]'s `during` (the peer, the box's console, test port and QMP socket), releasing
//! WORD when done. `system_tests::peer::run_in_peer` runs a script with no wait for a box.
//!
//! Waits end on console lines, test-port lines or QEMU's exit, never on a fixed sleep; both
//! guests are killed when the test ends, however it ends. Durations are printed and written to
//! `out/system-tests/sctp_lab/timings.txt`, never asserted.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{add_test_port, TestPort};
use system_tests::peer::{
    sctp_counter, step_exit, Cables, Peer, PeerSpec, BOX_ACCESS_ADDR, CORE_ADDR, PHONE_ADDR,
};
use system_tests::*;

/// What the peer runs (`/peer/run`, in `/tmp`).
const SCRIPT: &str = r#"
snmp() { echo "snmp $1: $(grep -E '^Sctp(ActiveEstabs|Aborteds|Shutdowns|OutCtrlChunks|InCtrlChunks|T1InitExpireds)' /proc/net/sctp/snmp | tr -s ' \t\n' ' ')"; }
# One SIPp run as a step: "lab: LABEL exit N", and SIPp's own words when it failed.
lab_sipp() {
  label=$1; shift
  sipp "$@" -m 1 -nostdin -timeout "${LAB_TIMEOUT:-30s}" -timeout_error \
    -trace_err -error_file "/tmp/$label.err" >"/tmp/$label.log" 2>&1
  rc=$?
  echo "lab: $label exit $rc"
  [ $rc = 0 ] || { tail -n 30 "/tmp/$label.log"; tail -n 30 "/tmp/$label.err"; echo; }
}
# The core: the factory upstream sip:10.0.3.2:25070, answering the box's probes and its calls.
sipp -sf /peer/uas_answer.xml -i 10.0.3.2 -p 25070 -nostdin \
  -trace_err -error_file /tmp/core.err >/tmp/core.log 2>&1 &
core=$!
# An INIT nobody answers is given up in about 2.5 s instead of the default minutes.
echo 500 >/proc/sys/net/sctp/rto_initial
echo 1000 >/proc/sys/net/sctp/rto_max
echo 2 >/proc/sys/net/sctp/max_init_retransmits
peer-await box
lab_sipp options-udp -sf /peer/options_200.xml -i 10.0.2.20 -p 5070 10.0.2.15:5060
lab_sipp call-udp -sn uac -i 10.0.2.20 -p 5071 10.0.2.15:5060
snmp before-sctp
lab_sipp options-sctp -t s1 -sf /peer/options_200.xml -i 10.0.2.20 -p 5072 10.0.2.15:5060
lab_sipp call-sctp -t s1 -sn uac -i 10.0.2.20 -p 5073 10.0.2.15:5060
snmp after-sctp
# SIPp waits its whole -timeout when the kernel gives up connecting: the INITs' 2.5 s and
# some margin.
LAB_TIMEOUT=4s lab_sipp sctp-no-listener -t s1 -sf /peer/options_200.xml -i 10.0.2.20 -p 5074 10.0.2.15:5061
snmp after-no-listener
kill $core
"#;

/// The box's port with no SCTP listener (step 5).
const NO_LISTENER: &str = "10.0.2.15:5061";

/// TCG on a loaded 2-core machine: minutes, not seconds, before we call it a failure.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const STEPS_TIMEOUT: Duration = Duration::from_secs(180);

fn check<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The box's configuration in the lab: the qemu board's factory file with one more listener,
/// SIP over SCTP on the access address (10.0.2.15:5060, beside UDP and TCP there).
fn lab_config() -> String {
    let path = workspace_root().join("image/board/qemu/sbc.toml");
    let factory = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let listener = format!(
        "# The SCTP lab (tests/system/tests/sctp_lab.rs): SIP over SCTP on the access port.\n\
         [[listen]]\nrealm = \"access\"\ntransport = \"sctp\"\naddr = \"{BOX_ACCESS_ADDR}:5060\"\n\n"
    );
    assert!(
        factory.contains("\n[[upstream]]"),
        "{} has no [[upstream]] to put the lab's listener before",
        path.display()
    );
    factory.replacen("\n[[upstream]]", &format!("\n{listener}[[upstream]]"), 1)
}

/// The lab's peer: SIPp and the scenarios the steps use, on the cables.
fn lab_peer(script: &str, cables: &Cables) -> PeerSpec {
    let scenario = |name: &str| system_tests::sipp::system_scenario(name);
    PeerSpec {
        script: script.to_string(),
        bins: vec![PathBuf::from("/usr/bin/sipp")],
        files: vec![
            (scenario("options_200.xml"), "/peer/options_200.xml".into()),
            (
                system_tests::sipp::sbcd_scenario("uas_answer.xml"),
                "/peer/uas_answer.xml".into(),
            ),
        ],
        args: cables.peer_args(),
    }
}

/// One run of the lab: what the peer's console and the box's showed, and how long it took.
struct LabRun {
    console: String,
    box_console: String,
    /// Cargo and the peer's initramfs, the peer's boot, the box's boot to sbcd serving, the
    /// peer's steps after that, all of it.
    prepared: Duration,
    peer_ready: Duration,
    box_ready: Duration,
    steps: Duration,
    started: Instant,
}

impl LabRun {
    fn evidence(&self) -> String {
        format!(
            "the peer's console:\n{}\nthe box's console:\n{}",
            self.console, self.box_console
        )
    }
}

/// The running lab, for a test that acts on the box while the peer's script runs (a later
/// `peer-await WORD` in the script, released with `peer.release(WORD, ..)`).
#[allow(
    dead_code,
    reason = "the checks to come act on the box mid-script (issue 16: drain with associations up)"
)]
struct Running<'a> {
    peer: &'a mut Peer,
    appliance: &'a mut Guest,
    port: &'a mut TestPort,
    /// The box's QMP socket (`support::Qmp::connect`), for a press of its panel button.
    qmp: PathBuf,
}

/// Boots the box (the test image, its kernel command line plus `kernel_flags`) and the peer
/// running `script` on its cables, releases the script's `peer-await box` once sbcd serves,
/// hands both to `during`, and returns once the peer powered off. Both guests are gone when it
/// returns or panics.
fn run_lab(
    name: &str,
    kernel_flags: &str,
    script: &str,
    during: impl FnOnce(Running<'_>),
) -> LabRun {
    assert!(
        have("sipp"),
        "sipp is missing: `cargo xtask test` installs it (apt-get install sip-tester)"
    );
    let started = Instant::now();
    build_testport_image();
    assert_testport_image_carries(&["sbcd", "sbc-console"]);
    let dir = scratch(name);
    let cables = Cables::new();

    let mut args: Vec<String> = [
        "qemu",
        "--no-build",
        "--testport",
        "--snapshot",
        "--no-reboot",
        "--print-command",
    ]
    .map(String::from)
    .to_vec();
    args.push("--qmp".into());
    args.push(dir.join("qmp.sock").display().to_string());
    args.extend(cables.appliance_args());
    let config = dir.join("sbc.toml");
    write_file(&config, lab_config().as_bytes());
    args.push("--config".into());
    args.push(config.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let printed = xtask(&args);
    assert!(
        printed.status.success(),
        "cargo xtask {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&printed.stderr)
    );
    let mut appliance_cmd = PrintedCommand::parse(&String::from_utf8_lossy(&printed.stdout));
    let port_socket = dir.join("testport.sock");
    add_test_port(&mut appliance_cmd, &port_socket);
    if !kernel_flags.is_empty() {
        let append = appliance_cmd
            .args
            .iter()
            .position(|a| a == "-append")
            .unwrap_or_else(|| panic!("no -append in the QEMU command"));
        appliance_cmd.args[append + 1].push_str(&format!(" {kernel_flags}"));
    }

    // The peer first: it boots in seconds and its core UAS must answer the box's first probe.
    let mut peer = Peer::start(&lab_peer(script, &cables), &dir.join("peer"));
    let prepared = started.elapsed();
    let mut appliance = Guest::start(&appliance_cmd);
    let mut port = TestPort::connect(&port_socket);

    check(peer.guest.wait_for("peer: ready", BOOT_TIMEOUT));
    let peer_ready = peer.guest.started.elapsed();
    check(port.wait_for("testport: ready sbcd", BOOT_TIMEOUT));
    let box_ready = appliance.started.elapsed();
    let released = Instant::now();
    check(peer.release("box", BOOT_TIMEOUT));
    during(Running {
        peer: &mut peer,
        appliance: &mut appliance,
        port: &mut port,
        qmp: dir.join("qmp.sock"),
    });
    let finished = peer.finish(STEPS_TIMEOUT);
    let steps = released.elapsed();
    appliance.take_output();
    let console = match finished {
        Ok(c) => c,
        Err(e) => panic!("{e}\nthe box's console:\n{}", appliance.tail()),
    };
    write_file(&dir.join("peer-console.txt"), console.as_bytes());
    let _ = writeln!(std::io::stderr(), "{console}");
    LabRun {
        console,
        box_console: appliance.tail(),
        prepared,
        peer_ready,
        box_ready,
        steps,
        started,
    }
}

#[test]
fn a_peer_on_the_box_cables_gets_options_answered_and_calls_through_it_over_udp_and_sctp() {
    let lab = run_lab("sctp_lab", "", SCRIPT, |_| {});
    let console = &lab.console;
    let evidence = || lab.evidence();
    let step = |label: &str, what: &str| {
        assert_eq!(
            step_exit(console, label),
            Some(0),
            "{what} failed; {}",
            evidence()
        );
    };
    let count = |label: &str, name: &str| {
        sctp_counter(console, label, name).unwrap_or_else(|e| panic!("{e}; {}", evidence()))
    };
    let grew = |from: &str, to: &str, name: &str| count(to, name).saturating_sub(count(from, name));

    // The NICs were configured on the cables.
    for nic in [
        format!("eth0 {PHONE_ADDR}/24"),
        format!("eth1 {CORE_ADDR}/24"),
    ] {
        assert!(
            console.lines().any(|l| l.trim() == format!("peer: {nic}")),
            "the peer did not set {nic}: {}",
            evidence()
        );
    }
    // 1. and 2.: SIP over UDP on the cables, through the box's firewall.
    step(
        "options-udp",
        "an OPTIONS over UDP to the access listener (200 wanted)",
    );
    step(
        "call-udp",
        "the call over UDP from the phones' side through the box to the core's UAS",
    );
    // 3. and 4.: SCTP, the peer's kernel to the box's.
    step(
        "options-sctp",
        &format!("an OPTIONS over SCTP to {BOX_ACCESS_ADDR}:5060 (200 wanted)"),
    );
    step(
        "call-sctp",
        "the call over SCTP from the phones' side through the box to the core's UAS",
    );
    let associations = grew("before-sctp", "after-sctp", "SctpActiveEstabs");
    assert!(
        associations >= 2,
        "the peer's kernel counted {associations} associations established for the OPTIONS and \
         the call over SCTP; {}",
        evidence()
    );
    // Each ended gracefully (SIPp closes its socket at exit: SHUTDOWN), none by ABORT.
    assert!(
        grew("before-sctp", "after-sctp", "SctpShutdowns") >= associations,
        "an association over SCTP did not end with SHUTDOWN; {}",
        evidence()
    );
    assert_eq!(
        grew("before-sctp", "after-sctp", "SctpAborteds"),
        0,
        "an SCTP association was aborted; {}",
        evidence()
    );
    // 5. No listener, no rule: the INITs are dropped, nothing comes back.
    assert!(
        step_exit(console, "sctp-no-listener").is_some_and(|rc| rc != 0),
        "an OPTIONS over SCTP to {NO_LISTENER}, where the box does not listen, succeeded; {}",
        evidence()
    );
    let inits = grew("after-sctp", "after-no-listener", "SctpOutCtrlChunks");
    assert!(
        inits >= 1 && grew("after-sctp", "after-no-listener", "SctpT1InitExpireds") >= 1,
        "the peer's kernel sent no SCTP INIT to {NO_LISTENER}; {}",
        evidence()
    );
    assert_eq!(
        grew("after-sctp", "after-no-listener", "SctpInCtrlChunks"),
        0,
        "the box's firewall should let no INIT to {NO_LISTENER} in, so nothing (INIT ACK, \
         ABORT) should come back; {}",
        evidence()
    );

    let timings = format!(
        "image and peer initramfs (cargo xtask image, peer), peer QEMU started: {:.1} s\n\
         peer QEMU start to `peer: ready`: {:.1} s\n\
         box QEMU start to sbcd serving (test port): {:.1} s\n\
         steps in the peer (OPTIONS and call over UDP and SCTP, INITs to no listener): {:.1} s\n\
         SCTP: {associations} associations established; {inits} INIT(s) to {NO_LISTENER} unanswered\n\
         whole test: {:.1} s\n",
        lab.prepared.as_secs_f64(),
        lab.peer_ready.as_secs_f64(),
        lab.box_ready.as_secs_f64(),
        lab.steps.as_secs_f64(),
        lab.started.elapsed().as_secs_f64(),
    );
    write_file(
        &workspace_root().join("out/system-tests/sctp_lab/timings.txt"),
        timings.as_bytes(),
    );
    let _ = writeln!(std::io::stderr(), "{timings}");
}

/// The control experiment behind step 5's silence, run on demand (`cargo test -p system-tests
/// --test sctp_lab -- --ignored`): with the firewall skipped (`sbc.nofirewall`, which only the
/// test image knows) the same INIT reaches the box's kernel, which refuses it at once with an
/// ABORT (its SCTP stack is loaded: sbcd listens on 5060), and the peer's kernel counts that.
/// So the silence of the main test is the firewall's doing. Not in the default run: it costs a
/// boot.
#[test]
#[ignore = "a control experiment: one more boot; run with --ignored"]
fn without_the_firewall_the_box_kernel_refuses_an_sctp_init_to_no_listener() {
    let lab = run_lab("sctp_lab_control", "sbc.nofirewall", SCRIPT, |_| {});
    let console = &lab.console;
    let count = |label: &str, name: &str| {
        sctp_counter(console, label, name).unwrap_or_else(|e| panic!("{e}; {}", lab.evidence()))
    };
    let grew =
        |name: &str| count("after-no-listener", name).saturating_sub(count("after-sctp", name));
    let _ = writeln!(
        std::io::stderr(),
        "without the firewall, INIT to {NO_LISTENER}: SctpAborteds +{}, SctpInCtrlChunks +{}, \
         SctpT1InitExpireds +{}",
        grew("SctpAborteds"),
        grew("SctpInCtrlChunks"),
        grew("SctpT1InitExpireds")
    );
    assert!(
        grew("SctpAborteds") >= 1 && grew("SctpInCtrlChunks") >= 1,
        "without the firewall the box's kernel should answer the INIT with an ABORT; {}",
        lab.evidence()
    );
}
