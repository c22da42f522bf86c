//! The appliance image booted in QEMU (TCG) and driven from the host, as SPEC §8 and issue 7
//! ask: build the qemu image, boot it, log in on the serial console, read `online` from
//! `show system-state`, and complete a SIPp call from the host through the forwarded port.
//!
//! The call goes host SIPp (UAC) -> 127.0.0.1:P -> hostfwd -> guest eth0 10.0.2.15:5060 (sbcd,
//! access) -> sbcd (core, 10.0.3.15:5062) -> the upstream 10.0.3.2:25070, which QEMU's user
//! network maps to the host's 127.0.0.1:25070 -> host SIPp (UAS).
//!
//! On the same boot (issue 11, the box): the first login with the factory password must set a
//! new one before any command (box_flows.rs checks that it is refused after a reboot); the firewall
//! drops a SIP request for the core listener that arrives on the access port (QEMU forwards a
//! second host port on the access network to the core listener's address 10.0.3.15:5062: the
//! packet is well-formed and addressed to a bound socket, so only the firewall stands between
//! it and an answer), while the same request on the access listener is answered.
//!
//! A second test boots the kernel and initramfs with a blank disk: no root partition must give
//! a message on the console and a reboot, never a shell.
//!
//! Timings (boot to the login prompt, to SIP-online, the call) are printed and written to
//! `out/system-tests/appliance/timings.txt`. They are reported, never asserted.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use system_tests::*;

const NODE: &str = "sbc-a";
/// The core listener of the factory config, on the core port (eth1).
const CORE_LISTENER: &str = "10.0.3.15:5062";
/// The host port the factory config's upstream (10.0.3.2:25070) reaches.
const UPSTREAM_PORT: u16 = 25070;

/// TCG on a loaded 2-core machine: minutes, not seconds, before we call it a failure.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
const ONLINE_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn image_boots_logs_in_reports_online_and_carries_a_call() {
    assert!(
        have("sipp"),
        "sipp is missing: `cargo xtask test` installs it (apt-get install sip-tester)"
    );
    let build_started = Instant::now();
    let built = build_testport_image();
    let image_build = build_started.elapsed();
    eprintln!("{}", String::from_utf8_lossy(&built.stdout));

    // The one reason to skip: the programs under test do not exist yet.
    let present = image_binaries("qemu-testport");
    let needed = ["sbcd", "sbc-console"];
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|b| !present.iter().any(|p| p == b))
        .collect();
    if !missing.is_empty() {
        // Under CI the programs exist by construction: their absence is a failure, never a pass.
        assert!(
            std::env::var_os("CI").is_none(),
            "the image lacks {missing:?}: under CI=true that fails rather than skips"
        );
        // Straight to stderr, not eprintln!: the test harness captures the macros of a passing
        // test, and a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "\n\n**********************************************************************\n\
             SKIPPED: the appliance system test needs {} in the image, and\n\
             `cargo build --release --workspace --bins` did not produce {}.\n\
             The image was built and the test stops here; it runs in full once they exist.\n\
             **********************************************************************\n",
            needed.join(" and "),
            missing.join(", ")
        );
        return;
    }

    let dir = scratch("appliance");
    let sip_port = free_port();
    let qmp = dir.join("qmp.sock");
    let sip_port_text = sip_port.to_string();
    let printed = xtask(&[
        "qemu",
        "--no-build",
        "--testport",
        "--snapshot",
        "--no-reboot",
        "--sip-port",
        &sip_port_text,
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
    // A second host port on the ACCESS network, forwarded to the CORE listener's address.
    let wrong_port = free_port();
    let access = cmd
        .args
        .iter_mut()
        .find(|a| a.starts_with("user,id=access,"))
        .unwrap_or_else(|| panic!("no access netdev in the QEMU command"));
    access.push_str(&format!(
        ",hostfwd=udp:127.0.0.1:{wrong_port}-{CORE_LISTENER}"
    ));

    let mut guest = Guest::start(&cmd);
    // SIP-online as a phone sees it: from QEMU's start, an OPTIONS to the access listener every
    // 200 ms until one is answered 200 (issue 17's boot figure; reported, never asserted).
    let started = guest.started;
    let target = format!("127.0.0.1:{sip_port}");
    let sip_online = std::thread::spawn(move || {
        while started.elapsed() < BOOT_TIMEOUT {
            let answer = sip_options(&target, "sip:10.0.2.15:5060", Duration::from_millis(200));
            if answer.is_some_and(|l| l.starts_with("SIP/2.0 200")) {
                return Some(started.elapsed());
            }
        }
        None
    });
    let check = |r: Result<String, String>| r.unwrap_or_else(|e| panic!("{e}"));
    let before_login = check(guest.wait_for("login: ", BOOT_TIMEOUT));
    let to_login = guest.started.elapsed();
    eprintln!("login prompt after {:.1} s", to_login.as_secs_f64());
    // Nothing before the login reveals configuration: not even the node name in the prompt.
    let prompt_line = before_login.lines().last().unwrap_or_default();
    assert!(
        !prompt_line.contains(NODE),
        "the login prompt shows the node name: {prompt_line:?}"
    );

    // First login: the factory password must be replaced before anything else.
    let prompt = format!("{NODE}> ");
    let login_started = Instant::now();
    let asked =
        console_login(&mut guest, &prompt, ANSWER_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(asked, "the first login did not ask for a new password");
    // That the factory password is refused afterwards, and the new one kept across a reboot,
    // is checked by box_flows.rs on its watchdog reset (one boot serves both).
    let first_login = login_started.elapsed();

    // sbcd may still be starting when the console is up; the console then says so. Ask again
    // after each answer until the state is online.
    let deadline = Instant::now() + ONLINE_TIMEOUT;
    let to_online = loop {
        guest.type_line("show system-state");
        let answer = check(guest.wait_for(&prompt, ANSWER_TIMEOUT));
        let state_online = answer.lines().any(|l| {
            l.trim_start().starts_with("system-state:")
                && l.split_whitespace().last() == Some("online")
        });
        if state_online {
            break guest.started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "show system-state never said online within {ONLINE_TIMEOUT:?}; last answer:\n{answer}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "show system-state: online after {:.1} s",
        to_online.as_secs_f64()
    );

    // The box says which image it runs: the version the build wrote beside the image.
    let built_version = std::fs::read_to_string(
        system_tests::workspace_root().join("out/image/qemu-testport/version"),
    )
    .expect("the image build writes its version beside the image");
    guest.type_line("show version");
    // Its answer ends with the kernel line (what an earlier answer left unread comes first).
    let answer = check(guest.wait_for("kernel:", ANSWER_TIMEOUT));
    check(guest.wait_for(&prompt, ANSWER_TIMEOUT));
    let image_line = answer
        .lines()
        .find(|l| l.trim_start().starts_with("image:"))
        .unwrap_or_else(|| panic!("show version printed no image line:\n{answer}"));
    assert_eq!(
        image_line.trim_start().trim_start_matches("image:").trim(),
        built_version.trim(),
        "show version:\n{answer}"
    );

    // QEMU's user network maps the guest's upstream to this very host port, so it cannot be
    // chosen free; say clearly when something else holds it.
    if let Err(e) = std::net::UdpSocket::bind(("127.0.0.1", UPSTREAM_PORT)) {
        panic!(
            "127.0.0.1:{UPSTREAM_PORT} (UDP), where the guest's upstream lands, is taken by \
             another process ({e}); the SIPp UAS cannot stand in for the core"
        );
    }
    let call_started = Instant::now();
    let uas_port = UPSTREAM_PORT.to_string();
    let mut uas = Command::new("sipp")
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port,
            "-m",
            "1",
            "-nostdin",
        ])
        .args(["-trace_err", "-error_file"])
        .arg(dir.join("uas-errors.log"))
        .current_dir(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting sipp (UAS): {e}"));
    // The UAC's own port is chosen free too: SIPp's default 5061 may be taken on a CI host.
    let uac_port = free_port().to_string();
    let uac = Command::new("sipp")
        .arg(format!("127.0.0.1:{sip_port}"))
        .args(["-p", &uac_port])
        .args([
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-m",
            "1",
            "-r",
            "1",
            "-nostdin",
        ])
        .args([
            "-s",
            "1000",
            "-timeout",
            "60s",
            "-timeout_error",
            "-recv_timeout",
            "20000",
        ])
        .args(["-trace_err", "-error_file"])
        .arg(dir.join("uac-errors.log"))
        .current_dir(&dir)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running sipp (UAC): {e}"));
    let _ = uas.kill();
    let _ = uas.wait();
    let call = call_started.elapsed();
    assert!(
        uac.success(),
        "the SIPp call through the appliance failed ({uac}); see {}; serial console:\n{}",
        dir.join("uac-errors.log").display(),
        guest.tail()
    );

    // The firewall: the access listener answers an OPTIONS; the core listener, reached through
    // the access port, answers nothing. The answered one comes first, so the silent one is
    // judged over the same window in which its twin was answered, and then some.
    let firewall_started = Instant::now();
    let answered = sip_options(
        &format!("127.0.0.1:{sip_port}"),
        "sip:10.0.2.15:5060",
        ANSWER_TIMEOUT,
    );
    assert!(
        answered
            .as_deref()
            .is_some_and(|l| l.starts_with("SIP/2.0 ")),
        "the access listener did not answer an OPTIONS: {answered:?}"
    );
    let answered_in = firewall_started.elapsed();
    let silent_window = (answered_in * 4).max(Duration::from_secs(3));
    let leaked = sip_options(
        &format!("127.0.0.1:{wrong_port}"),
        &format!("sip:{CORE_LISTENER}"),
        silent_window,
    );
    assert_eq!(
        leaked, None,
        "a request for the core listener arriving on the access port was answered"
    );
    let firewall = firewall_started.elapsed();

    guest.type_line("exit");
    let sip_online = sip_online.join().ok().flatten().map_or_else(
        || "never".to_string(),
        |d| format!("{:.1} s", d.as_secs_f64()),
    );
    let timings = format!(
        "image build (cargo xtask image, as found): {:.1} s\n\
         QEMU start to the first OPTIONS answered 200 (SIP-online): {sip_online}\n\
         QEMU start to login prompt: {:.1} s\n\
         first login with the password change: {:.1} s\n\
         QEMU start to show system-state online: {:.1} s\n\
         SIPp call: {:.1} s\n\
         firewall check (answered on access, silent on core-via-access): {:.1} s\n",
        image_build.as_secs_f64(),
        to_login.as_secs_f64(),
        first_login.as_secs_f64(),
        to_online.as_secs_f64(),
        call.as_secs_f64(),
        firewall.as_secs_f64()
    );
    // Straight to stderr so that CI logs show the figures without --nocapture.
    let _ = writeln!(std::io::stderr(), "{timings}");
    write_file(&dir.join("timings.txt"), timings.as_bytes());
}

/// No root partition: the initramfs says so on the console and reboots (QEMU's `-no-reboot`
/// turns the reboot into QEMU's exit); it never opens a shell. The kernel and initramfs are the
/// image's own; the disk is blank. `sbc.rootwait=3` shortens the 30 s wait for a slow disk.
#[test]
fn a_missing_root_partition_reboots_instead_of_opening_a_shell() {
    build_testport_image();
    let dir = scratch("missing_root");
    let blank = dir.join("blank.img");
    let file = std::fs::File::create(&blank).unwrap_or_else(|e| panic!("{}: {e}", blank.display()));
    file.set_len(64 << 20)
        .unwrap_or_else(|e| panic!("{}: {e}", blank.display()));
    let printed = xtask(&[
        "qemu",
        "--no-build",
        "--snapshot",
        "--no-reboot",
        "--testport",
        "--sip-port",
        &free_port().to_string(),
        "--qmp",
        &dir.join("qmp.sock").to_string_lossy(),
        "--print-command",
    ]);
    assert!(
        printed.status.success(),
        "cargo xtask qemu --print-command failed:\n{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let mut cmd = PrintedCommand::parse(&String::from_utf8_lossy(&printed.stdout));
    let drive = cmd
        .args
        .iter_mut()
        .find(|a| a.starts_with("file=") && a.contains("id=disk"))
        .unwrap_or_else(|| panic!("no disk in the QEMU command"));
    *drive = format!(
        "file={},if=none,id=disk,format=raw,cache=unsafe,snapshot=on",
        blank.display()
    );
    let append = cmd
        .args
        .iter()
        .position(|a| a == "-append")
        .unwrap_or_else(|| panic!("no -append in the QEMU command: {:?}", cmd.args));
    cmd.args[append + 1].push_str(" sbc.rootwait=3");

    let mut guest = Guest::start(&cmd);
    let check = |r: Result<String, String>| r.unwrap_or_else(|e| panic!("{e}"));
    check(guest.wait_for("initramfs: no partition named sbc-root", BOOT_TIMEOUT));
    check(guest.wait_for("rebooting", ANSWER_TIMEOUT));
    let status = guest
        .wait_exit(ANSWER_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let took = guest.started.elapsed();
    let shown = guest.transcript_text();
    let after = shown
        .split("initramfs: no partition named sbc-root")
        .nth(1)
        .unwrap_or_default();
    for shell in ["/ #", "~ #", "can't access tty", "BusyBox v"] {
        assert!(
            !after.contains(shell),
            "the console shows {shell:?} after the missing root:\n{after}"
        );
    }
    eprintln!(
        "missing root partition: message and reboot (QEMU exit {status}) after {:.1} s",
        took.as_secs_f64()
    );
    write_file(
        &dir.join("timings.txt"),
        format!("QEMU start to the reboot: {:.1} s\n", took.as_secs_f64()).as_bytes(),
    );
}

/// The control experiment behind the firewall check above, run on demand
/// (`cargo test -p system-tests --test appliance -- --ignored`): with the firewall skipped
/// (`sbc.nofirewall`, which only the test image's unit drop-in knows), the same request for
/// the core listener through the access port IS answered. It shows that QEMU delivers the
/// packet and the guest would accept it, so the silence in the main test is the firewall's
/// doing. Not in the default run: it costs a boot.
#[test]
#[ignore = "a control experiment: one more boot; run with --ignored"]
fn without_the_firewall_the_core_listener_answers_on_the_access_port() {
    build_testport_image();
    let dir = scratch("firewall_control");
    let sip_port = free_port();
    let printed = xtask(&[
        "qemu",
        "--no-build",
        "--snapshot",
        "--no-reboot",
        "--testport",
        "--sip-port",
        &sip_port.to_string(),
        "--qmp",
        &dir.join("qmp.sock").to_string_lossy(),
        "--print-command",
    ]);
    assert!(
        printed.status.success(),
        "cargo xtask qemu --print-command failed"
    );
    let mut cmd = PrintedCommand::parse(&String::from_utf8_lossy(&printed.stdout));
    let wrong_port = free_port();
    let access = cmd
        .args
        .iter_mut()
        .find(|a| a.starts_with("user,id=access,"))
        .unwrap_or_else(|| panic!("no access netdev in the QEMU command"));
    access.push_str(&format!(
        ",hostfwd=udp:127.0.0.1:{wrong_port}-{CORE_LISTENER}"
    ));
    let append = cmd
        .args
        .iter()
        .position(|a| a == "-append")
        .unwrap_or_else(|| panic!("no -append in the QEMU command"));
    cmd.args[append + 1].push_str(" sbc.nofirewall");

    let mut guest = Guest::start(&cmd);
    let check = |r: Result<String, String>| r.unwrap_or_else(|e| panic!("{e}"));
    check(guest.wait_for("login: ", BOOT_TIMEOUT));
    // sbcd listens once the access listener answers.
    let answered = sip_options(
        &format!("127.0.0.1:{sip_port}"),
        "sip:10.0.2.15:5060",
        ONLINE_TIMEOUT,
    );
    assert!(answered.is_some(), "the access listener never answered");
    let leaked = sip_options(
        &format!("127.0.0.1:{wrong_port}"),
        &format!("sip:{CORE_LISTENER}"),
        ANSWER_TIMEOUT,
    );
    eprintln!("without the firewall, core-via-access answered: {leaked:?}");
    assert!(
        leaked.is_some(),
        "no answer even without the firewall: the main test's check would prove nothing"
    );
}
