//! SCTP against the real thing (issue 16): the `sctp` crate and SIPp over the kernel's SCTP in
//! a small QEMU guest (`cargo xtask peer`), since the host kernel has none.
//!
//! The guest boots the image's Debian kernel with an initramfs holding busybox, the sctp
//! module, SIPp (`sip-tester`, built with SCTP), the crate's `sctp-selftest` example and its
//! `loopback` test binary, and runs [`SCRIPT`] over its loopback:
//! 1. `sctp-selftest close graceful`, then `close abort`, with the kernel's own counters
//!    (`/proc/net/sctp/snmp`: `SctpShutdowns`, `SctpAborteds`) printed around each: a close
//!    must count as a SHUTDOWN and no ABORT, and only `abort()` may count as an ABORT. The peer
//!    socket's notifications must say the same (SHUTDOWN event, COMM_LOST).
//! 2. The crate's `loopback` tests, which skip on the host, run for real.
//! 3. `sctp-selftest respond` as a SIP responder reading 4096 bytes at a time (sctp-rs's fixed
//!    buffer), and SIPp over SCTP (`-t s1`) placing its built-in `uac` call, then a call whose
//!    INVITE is larger than 4096 bytes: each message must arrive whole (its body as long as its
//!    Content-Length), both calls must succeed, and each of SIPp's associations must end with
//!    a SHUTDOWN (SIPp closes gracefully by default), read from the responder's notifications
//!    and the kernel's counters. `lo` has a 1500-byte MTU there, so the big INVITE travels as
//!    several DATA chunks (the kernel's `SctpReasmUsrMsgs` must grow).
//!
//! Waits end on lines of the guest's console or on QEMU's exit, never on a fixed sleep. The
//! guest is killed when the test ends, however it ends. Durations are printed and written to
//! `out/system-tests/sctp/timings.txt`, never asserted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use system_tests::*;

/// What the guest runs (`/peer/run`, in `/tmp`). Every finding is one console line.
const SCRIPT: &str = r#"
snmp() { echo "snmp $1: $(grep -E '^Sctp(Shutdowns|Aborteds|FragUsrMsgs|ReasmUsrMsgs)' /proc/net/sctp/snmp | tr -s ' \t\n' ' ')"; }
# An Ethernet-sized path: a message past 1500 bytes travels as several DATA chunks.
ip link set lo mtu 1500
snmp start
sctp-selftest close graceful
snmp graceful
sctp-selftest close abort
snmp abort
# cargo's name for the test binary carries a hash.
for t in /usr/bin/loopback-*; do "$t" --test-threads=1; done
snmp loopback
sctp-selftest respond 127.0.0.1:5060 2 4096 &
responder=$!
# The responder writes this file once it listens; SIPp must not dial before.
while [ ! -e /tmp/responder.ready ]; do sleep 0.1; done
sipp_call() {
  label=$1; shift
  sipp "$@" -t s1 -i 127.0.0.1 127.0.0.1:5060 -m 1 -nostdin -timeout 60s -timeout_error >/tmp/sipp.log 2>&1
  rc=$?
  echo "sipp $label call: exit $rc"
  [ $rc = 0 ] || tail -n 40 /tmp/sipp.log
}
sipp_call uac -sn uac -p 5071
sipp_call big-invite -sf /peer/big_invite.xml -p 5072
wait $responder
echo "responder exit: $?"
snmp end
"#;

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// `SctpShutdowns` and `SctpAborteds` from a `snmp LABEL: ...` line of the console.
fn counters(transcript: &str, label: &str) -> (u64, u64) {
    (
        system_tests::peer::snmp(transcript, label, "SctpShutdowns"),
        system_tests::peer::snmp(transcript, label, "SctpAborteds"),
    )
}

#[test]
fn sctp_messages_notifications_and_sipp_calls_over_kernel_sctp() {
    assert!(
        have("sipp"),
        "sipp is missing: `cargo xtask test` installs it (apt-get install sip-tester)"
    );
    let started = Instant::now();
    let dir = scratch("sctp");
    let selftest = cargo_executable(
        &["build", "-p", "sctp", "--example", "sctp-selftest"],
        "sctp-selftest",
    );
    let loopback = cargo_executable(
        &["test", "-p", "sctp", "--test", "loopback", "--no-run"],
        "loopback",
    );
    let script = dir.join("run.sh");
    write_file(&script, SCRIPT.as_bytes());
    let scenario = system_tests::sipp::big_invite_scenario(&dir);
    let sipp = PathBuf::from("/usr/bin/sipp");
    let arg = |p: &Path| p.to_string_lossy().into_owned();
    let (selftest, loopback, sipp, script_arg, out) = (
        arg(&selftest),
        arg(&loopback),
        arg(&sipp),
        arg(&script),
        arg(&dir.join("peer")),
    );
    let file = format!("{}:/peer/big_invite.xml", scenario.display());
    let printed = xtask_visible(&[
        "peer",
        "--script",
        &script_arg,
        "--bin",
        &selftest,
        "--bin",
        &loopback,
        "--bin",
        &sipp,
        "--file",
        &file,
        "--out",
        &out,
        "--print-command",
    ]);
    assert!(printed.status.success(), "cargo xtask peer failed");
    let cmd = PrintedCommand::parse(&String::from_utf8_lossy(&printed.stdout));
    let prepared = started.elapsed();

    let mut guest = Guest::start(&cmd);
    let check = |r: Result<String, String>| r.unwrap_or_else(|e| panic!("{e}"));
    check(guest.wait_for("peer: ready", BOOT_TIMEOUT));
    let booted = guest.started.elapsed();
    check(guest.wait_for("close abort: the peer saw", STEP_TIMEOUT));
    check(guest.wait_for("test result:", STEP_TIMEOUT));
    check(guest.wait_for("sipp big-invite call: exit", STEP_TIMEOUT));
    check(guest.wait_for("peer: script exited", STEP_TIMEOUT));
    let status = guest
        .wait_exit(STEP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let ran = guest.started.elapsed();
    let console = guest.transcript_text();
    write_file(&dir.join("console.txt"), console.as_bytes());
    let _ = writeln!(std::io::stderr(), "{console}");
    assert!(status.success(), "QEMU ended with {status}:\n{console}");

    // 1. Our close is a SHUTDOWN, our abort the only ABORT: the kernel's counters and the
    // other socket's notifications.
    let (shut0, abort0) = counters(&console, "start");
    let (shut1, abort1) = counters(&console, "graceful");
    let (shut2, abort2) = counters(&console, "abort");
    assert!(shut1 > shut0, "close() counted no SHUTDOWN:\n{console}");
    assert_eq!(abort1, abort0, "close() counted an ABORT:\n{console}");
    assert!(abort2 > abort1, "abort() counted no ABORT:\n{console}");
    assert_eq!(shut2, shut1, "abort() counted a SHUTDOWN:\n{console}");
    assert!(console.contains("close graceful: peer notification shutdown event"));
    assert!(console.contains("close graceful: the peer saw SHUTDOWN"));
    assert!(console.contains("close abort: the peer saw ABORT (COMM_LOST)"));

    // 2. The crate's own tests, for real this time.
    let passed = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next()?.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        passed >= 4 && !console.contains("SKIPPED"),
        "the loopback tests did not all run and pass in the guest:\n{console}"
    );

    // 3. SIPp's calls, each message whole, the big INVITE past 4096 bytes.
    assert!(console.contains("sipp uac call: exit 0"), "{console}");
    assert!(
        console.contains("sipp big-invite call: exit 0"),
        "{console}"
    );
    assert!(!console.contains("NOT WHOLE"), "{console}");
    let invites: Vec<usize> = console
        .lines()
        .filter_map(|l| l.trim().strip_prefix("responder: INVITE of "))
        .filter(|l| l.ends_with(": whole"))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        invites.len() == 2 && invites.iter().any(|&n| n > 4096),
        "expected two whole INVITEs, one past 4096 bytes, got {invites:?}:\n{console}"
    );
    let ended_by_shutdown = console
        .lines()
        .filter(|l| l.contains("ended by SHUTDOWN"))
        .count();
    assert_eq!(
        ended_by_shutdown, 2,
        "SIPp's associations should both end with SHUTDOWN:\n{console}"
    );
    assert!(console.contains("responder exit: 0"), "{console}");
    let (shut3, abort3) = counters(&console, "loopback");
    let (shut_end, abort_end) = counters(&console, "end");
    assert_eq!(
        abort_end, abort3,
        "an ABORT during the SIPp calls:\n{console}"
    );
    // The big INVITE crossed the 1500-byte path as several DATA chunks, joined by the kernel.
    assert!(
        system_tests::peer::snmp(&console, "end", "SctpReasmUsrMsgs")
            > system_tests::peer::snmp(&console, "loopback", "SctpReasmUsrMsgs"),
        "no SCTP message was reassembled during the SIPp calls:\n{console}"
    );
    assert!(
        shut_end >= shut3 + 2,
        "SIPp's two associations counted no SHUTDOWN:\n{console}"
    );

    let timings = format!(
        "build and initramfs (cargo, xtask peer): {:.1} s\nQEMU start to `peer: ready`: {:.1} s\n\
         QEMU start to power-off: {:.1} s\nwhole test: {:.1} s\nlargest INVITE: {} bytes\n",
        prepared.as_secs_f64(),
        booted.as_secs_f64(),
        ran.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        invites.iter().max().copied().unwrap_or(0),
    );
    write_file(&dir.join("timings.txt"), timings.as_bytes());
    let _ = writeln!(std::io::stderr(), "{timings}");
}
