//! The SCTP lab (issue 16): the appliance image and a peer guest cabled together over QEMU
//! datagram sockets on the host's loopback, since QEMU's user networking cannot carry SCTP and
//! the host kernel has none.
//!
//! The appliance boots the test image (`cargo xtask qemu --testport --link access=.. --link
//! core=..`) with its factory configuration, addresses and firewall; the peer (`cargo xtask
//! peer --net .. --net ..`: busybox, SIPp, kernel SCTP) has eth0 10.0.2.20 on the box's access
//! cable (the phones) and eth1 10.0.3.2 on its core cable (the core: the factory upstream
//! `sip:10.0.3.2:25070` is the peer's SIPp UAS). See `system_tests::peer` for the drawing.
//!
//! Both boot at once; the peer's script waits (`peer-await box`) until the box's sbcd says on
//! the test port that it is serving, then, every finding one console line:
//! 1. SIPp sends an OPTIONS over UDP from 10.0.2.20 to the access listener 10.0.2.15:5060: the
//!    box, online, answers 200 (the cable works, and the firewall admits SIP on the access
//!    port);
//! 2. SIPp places a call over UDP from the phones' side through the box to the core's UAS on
//!    the same peer (access in, core out, the factory upstream): the lab carries a whole call;
//! 3. SIPp opens an SCTP association from 10.0.2.20 to the box's access listener and sends the
//!    same OPTIONS. What the box must do depends on its factory configuration
//!    (`image/board/qemu/sbc.toml`): with an access listener of `transport = "sctp"` the
//!    OPTIONS must be answered 200 over it; without one (sbcd has no SCTP listener yet) the
//!    firewall admits no SCTP, so the peer's kernel sends its INITs (its own
//!    `/proc/net/sctp/snmp` counts them and their timeouts) and nothing comes back: no INIT ACK
//!    and no ABORT. The test notices the configuration by itself, so the day the factory file
//!    gains the listener the stronger check runs.
//!
//! Adding a call over SCTP through the box, once sbcd listens on SCTP: give the factory
//! configuration (or a lab configuration) the SCTP listener and an upstream
//! `sip:10.0.3.2:25070;transport=sctp`, start the core's UAS below with `-t s1`, and add a step
//! `lab_sipp call-sctp -t s1 -sn uac -i 10.0.2.20 -p 5073 10.0.2.15:5060` to [`SCRIPT`] with an
//! `assert_eq!(step_exit(console, "call-sctp"), Some(0))`. Other scenario files go in
//! [`lab_peer`]'s list; `system_tests::peer::run_in_peer` runs a script with no wait for the box.
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

/// What the peer runs (`/peer/run`, in `/tmp`). `@SCTP_TARGET@` is the box's SCTP address.
const SCRIPT: &str = r#"
snmp() { echo "snmp $1: $(grep -E '^Sctp(ActiveEstabs|Aborteds|OutCtrlChunks|InCtrlChunks|T1InitExpireds)' /proc/net/sctp/snmp | tr -s ' \t\n' ' ')"; }
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
# SIPp waits its whole -timeout when the kernel gives up connecting: short, yet ample for an
# answer on a cable under TCG.
LAB_TIMEOUT=6s lab_sipp options-sctp -t s1 -sf /peer/options_200.xml -i 10.0.2.20 -p 5072 @SCTP_TARGET@
snmp after-sctp
kill $core
"#;

/// TCG on a loaded 2-core machine: minutes, not seconds, before we call it a failure.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const STEPS_TIMEOUT: Duration = Duration::from_secs(180);

fn check<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The factory configuration's access listener over SCTP (`[[listen]]` with `realm =
/// "access"` and `transport = "sctp"`), if it has one: its address.
fn factory_sctp_access_listener() -> Option<String> {
    let path = workspace_root().join("image/board/qemu/sbc.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.split("[[listen]]").skip(1).find_map(|block| {
        // The block ends at the next table header.
        let block = block.split("\n[").next().unwrap_or_default();
        let value = |key: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                let v = v.split('#').next()?.trim().trim_matches('"');
                (k.trim() == key).then(|| v.to_string())
            })
        };
        let sctp_access = value("realm").as_deref() == Some("access")
            && value("transport").as_deref() == Some("sctp");
        sctp_access.then(|| value("addr")).flatten()
    })
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
fn a_peer_on_the_box_cables_gets_options_answered_carries_a_call_and_reaches_it_over_sctp() {
    let sctp_listener = factory_sctp_access_listener();
    let sctp_target = sctp_listener
        .clone()
        .unwrap_or_else(|| format!("{BOX_ACCESS_ADDR}:5060"));
    let lab = run_lab(
        "sctp_lab",
        "",
        &SCRIPT.replace("@SCTP_TARGET@", &sctp_target),
        |_| {},
    );
    let console = &lab.console;
    let evidence = || lab.evidence();

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
    // 1. and 2.: SIP over the cables, through the box's firewall.
    assert_eq!(
        step_exit(console, "options-udp"),
        Some(0),
        "the box did not answer 200 to an OPTIONS over UDP on its access cable; {}",
        evidence()
    );
    assert_eq!(
        step_exit(console, "call-udp"),
        Some(0),
        "the call from the phones' side through the box to the core's UAS failed; {}",
        evidence()
    );

    // 3.: SCTP from the peer's kernel to the box's access address.
    let count = |label: &str, name: &str| {
        sctp_counter(console, label, name).unwrap_or_else(|e| panic!("{e}; {}", evidence()))
    };
    let grew = |name: &str| count("after-sctp", name).saturating_sub(count("before-sctp", name));
    let sctp_step = step_exit(console, "options-sctp");
    let sctp_verdict = if let Some(listener) = &sctp_listener {
        assert_eq!(
            sctp_step,
            Some(0),
            "the box's SCTP listener {listener} did not answer 200 to an OPTIONS; {}",
            evidence()
        );
        assert!(
            grew("SctpActiveEstabs") >= 1,
            "no association was established; {}",
            evidence()
        );
        format!("OPTIONS over SCTP to {listener} answered 200")
    } else {
        assert!(
            sctp_step.is_some_and(|rc| rc != 0),
            "SIPp over SCTP succeeded, yet the factory configuration has no SCTP listener; {}",
            evidence()
        );
        let inits = grew("SctpOutCtrlChunks");
        assert!(
            inits >= 1 && grew("SctpT1InitExpireds") >= 1,
            "the peer's kernel sent no SCTP INIT to {sctp_target}; {}",
            evidence()
        );
        assert_eq!(
            grew("SctpInCtrlChunks"),
            0,
            "with no SCTP listener the box's firewall should let no INIT in, so nothing \
             (INIT ACK, ABORT) should come back; {}",
            evidence()
        );
        format!("{inits} INIT(s) to {sctp_target}, unanswered: no SCTP listener, the firewall drops them")
    };

    let timings = format!(
        "image and peer initramfs (cargo xtask image, peer), peer QEMU started: {:.1} s\n\
         peer QEMU start to `peer: ready`: {:.1} s\n\
         box QEMU start to sbcd serving (test port): {:.1} s\n\
         steps in the peer (OPTIONS, call, SCTP): {:.1} s\n\
         SCTP: {sctp_verdict}\n\
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

/// The control experiment behind step 3's silence, run on demand (`cargo test -p system-tests
/// --test sctp_lab -- --ignored`): with the firewall skipped (`sbc.nofirewall`, which only the
/// test image knows) the same INIT reaches the box's kernel, which refuses it, and the peer's
/// kernel hears so: an ABORT (the box's SCTP stack, no listener on the port) or an ICMP
/// protocol unreachable (no SCTP module loaded there yet) ends the attempt at once, counted in
/// `SctpAborteds`. So the cables carry SCTP, and the silence of the main test is the firewall's
/// doing. Not in the default run: it costs a boot.
#[test]
#[ignore = "a control experiment: one more boot; run with --ignored"]
fn without_the_firewall_the_box_kernel_refuses_the_sctp_init() {
    if let Some(listener) = factory_sctp_access_listener() {
        let _ = writeln!(
            std::io::stderr(),
            "the factory configuration listens on SCTP ({listener}): the main test shows the \
             association itself; nothing to control"
        );
        return;
    }
    let lab = run_lab(
        "sctp_lab_control",
        "sbc.nofirewall",
        &SCRIPT.replace("@SCTP_TARGET@", &format!("{BOX_ACCESS_ADDR}:5060")),
        |_| {},
    );
    let console = &lab.console;
    let count = |label: &str, name: &str| {
        sctp_counter(console, label, name).unwrap_or_else(|e| panic!("{e}; {}", lab.evidence()))
    };
    let grew = |name: &str| count("after-sctp", name).saturating_sub(count("before-sctp", name));
    // An ABORT is an SCTP chunk in; an ICMP error is not.
    let refused_by = if grew("SctpInCtrlChunks") > 0 {
        "an ABORT from the box's SCTP stack"
    } else {
        "an ICMP protocol unreachable (the box has no SCTP module loaded)"
    };
    let _ = writeln!(
        std::io::stderr(),
        "without the firewall: SctpAborteds +{}, SctpInCtrlChunks +{}, SctpT1InitExpireds +{}: \
         the INIT was refused by {refused_by}",
        grew("SctpAborteds"),
        grew("SctpInCtrlChunks"),
        grew("SctpT1InitExpireds")
    );
    assert!(
        grew("SctpAborteds") >= 1,
        "without the firewall the box's kernel should refuse the INIT (ABORT or ICMP), and the \
         peer's kernel abort the attempt; {}",
        lab.evidence()
    );
}
