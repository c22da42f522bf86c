//! sbcd carrying SIP over SCTP (issue 16), against SIPp over the kernel's SCTP in a small QEMU
//! guest (`cargo xtask peer`: the host kernel has none). sbcd, sbcctl and SIPp run in the
//! guest over its loopback, with one access and one core listener on SCTP and an SCTP
//! upstream. [`SCRIPT`] plays, in order:
//! 1. a call from a phone (SIPp UAC) through the box to the core (SIPp UAS): SCTP on the access
//!    side and on the core side; then a call whose INVITE is larger than 4096 bytes, which the
//!    core can only answer if the box took it and passed it on whole;
//! 2. the drain to offline (`sbcctl set-system-state offline`): the box's association to the
//!    core must end with a SHUTDOWN and no ABORT, read from the kernel's own counters
//!    (`/proc/net/sctp/snmp`) and association table (`/proc/net/sctp/assocs`), not from our
//!    logs; a call while offline must find no listener; back online, a call goes through;
//! 3. a core that answers 503 with Retry-After: the box shuts its association to it down, and
//!    a second call meanwhile opens none (the kernel's count of associations accepted grows by
//!    the phone's only).
//!
//! Waits end on lines of the guest's console (the script polls files and tables in the guest
//! for what it waits on), never on a fixed sleep. The guest is killed when the test ends,
//! however it ends. Durations are printed and written to `out/system-tests/sctp-sbcd/`.

use std::io::Write;
use std::time::{Duration, Instant};
use system_tests::peer::{Peer, PeerSpec};
use system_tests::*;

/// What the guest runs. Every finding is one console line.
const SCRIPT: &str = r#"
snmp() { echo "snmp $1: $(grep -E '^Sctp(Shutdowns|Aborteds|ActiveEstabs|PassiveEstabs)' /proc/net/sctp/snmp | tr -s ' \t\n' ' ')"; }
# One word per association: local port - remote port.
assocs() { echo "assocs $1: $(awk 'NR > 1 { printf "%s-%s ", $12, $13 }' /proc/net/sctp/assocs)"; }
# Waits (up to $2 tenths of a second) until the shell condition $1 holds.
until_true() { n=0; while ! eval "$1"; do n=$((n + 1)); [ $n -ge $2 ] && return 1; sleep 0.1; done; }
core_assocs() { awk 'NR > 1 && ($12 == 5070 || $13 == 5070)' /proc/net/sctp/assocs | wc -l; }
ip link set lo mtu 1500
mkdir -p /tmp/sbc/state
cat > /tmp/sbc/sbc.toml <<EOF
[node]
name = "sbc-sctp"

[[listen]]
realm = "access"
transport = "sctp"
addr = "127.0.0.1:5060"

[[listen]]
realm = "core"
transport = "sctp"
addr = "127.0.0.1:5062"

[[upstream]]
uri = "sip:127.0.0.3:5070;transport=sctp"
priority = 1

[upstream_policy]
probe_interval_secs = 3600

[drain]
guard_secs = 60
retry_after_secs = 5

[control]
socket = "/tmp/sbc/control.sock"

[state]
dir = "/tmp/sbc/state"

[panel]
board = "sim"
EOF
ctl() { sbcctl --socket /tmp/sbc/control.sock "$@"; }
sbcd --config /tmp/sbc/sbc.toml >/tmp/sbcd.log 2>&1 &
if until_true "grep -q 'sbcd: listening' /tmp/sbcd.log" 300; then echo "sbcd: up"; else echo "sbcd: not up"; cat /tmp/sbcd.log; fi
core() { sipp "$@" -t s1 -i 127.0.0.3 -p 5070 -m 100 -nostdin >/tmp/core.log 2>&1 & core_pid=$!; until_true "grep -q ' 5070 ' /proc/net/sctp/eps" 100; }
call() {
  label=$1; shift
  sipp "$@" -t s1 -i 127.0.0.2 127.0.0.1:5060 -m 1 -nostdin -timeout 20s -timeout_error >/tmp/phone.log 2>&1
  echo "call $label: exit $?"
}
core -sn uas
call first -sn uac -p 5061
call big -sf /peer/big_invite.xml -p 5063
assocs online
snmp before-offline
ctl set-system-state offline
if until_true "ctl show system-state | grep -q 'system-state: *offline'" 100; then echo "state: offline"; fi
if until_true "[ \$(core_assocs) = 0 ]" 100; then echo "core association: gone"; fi
snmp offline
assocs offline
call offline -sn uac -p 5064
ctl set-system-state online
if until_true "ctl show system-state | grep -q 'system-state: *online'" 100; then echo "state: online"; fi
until_true "grep -q ' 5060 ' /proc/net/sctp/eps" 100
call back-online -sn uac -p 5065
kill -KILL $core_pid; wait $core_pid 2>/dev/null
core -sf /peer/uas_503.xml
snmp before-503
call refused -sn uac -p 5066
if until_true "[ \$(core_assocs) = 0 ]" 100; then echo "core association after 503: gone"; fi
snmp after-503
call meanwhile -sn uac -p 5067
snmp meanwhile
assocs meanwhile
ctl show upstreams
ctl show stats | grep -E 'sctp|associations_shut'
kill -KILL $core_pid
echo "sbcd log:"; tail -n 30 /tmp/sbcd.log
"#;

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The associations of an `assocs LABEL: ...` line, as (local port, remote port).
fn assocs(console: &str, label: &str) -> Vec<(u16, u16)> {
    let prefix = format!("assocs {label}:");
    let line = console
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line on the console:\n{console}"));
    line.split_whitespace()
        .filter_map(|w| {
            let (l, r) = w.split_once('-')?;
            Some((l.parse().ok()?, r.parse().ok()?))
        })
        .collect()
}

#[test]
fn sbcd_carries_calls_over_sctp_and_shuts_associations_down_gracefully() {
    assert!(
        have("sipp"),
        "sipp is missing: `cargo xtask test` installs it (apt-get install sip-tester)"
    );
    let started = Instant::now();
    let dir = scratch("sctp-sbcd");
    let sbcd = cargo_executable(&["build", "-p", "sbcd", "--bin", "sbcd"], "sbcd");
    let sbcctl = cargo_executable(&["build", "-p", "sbcd", "--bin", "sbcctl"], "sbcctl");
    let big = system_tests::sipp::big_invite_scenario(&dir);
    let spec = PeerSpec {
        script: SCRIPT.to_string(),
        bins: vec![sbcd, sbcctl, "/usr/bin/sipp".into()],
        files: vec![
            (big, "/peer/big_invite.xml".into()),
            (
                system_tests::sipp::system_scenario("uas_503_retry_after.xml"),
                "/peer/uas_503.xml".into(),
            ),
            // The simulated panel's board profile, where an installed sbcd looks for it.
            (
                workspace_root().join("board/sim/board.toml"),
                "/usr/share/sbc/board/sim/board.toml".into(),
            ),
        ],
        args: Vec::new(),
    };
    let mut peer = Peer::start(&spec, &dir);
    let prepared = started.elapsed();
    let check = |r: Result<String, String>| r.unwrap_or_else(|e| panic!("{e}"));
    check(peer.guest.wait_for("peer: ready", BOOT_TIMEOUT));
    let booted = peer.guest.started.elapsed();
    check(peer.guest.wait_for("sbcd: up", STEP_TIMEOUT));
    let console = check(peer.finish(STEP_TIMEOUT));
    let ran = peer.guest.started.elapsed();
    write_file(&dir.join("console.txt"), console.as_bytes());
    let _ = writeln!(std::io::stderr(), "{console}");

    // 1. Calls through the box, SCTP on both sides; the big INVITE passed on whole.
    assert!(console.contains("call first: exit 0"), "{console}");
    assert!(console.contains("call big: exit 0"), "{console}");

    // 2. Offline: the box's association to the core ends with SHUTDOWN, never ABORT; no
    // listener while offline; a call again once online.
    let online = assocs(&console, "online");
    assert!(
        online.iter().any(|&(l, r)| l == 5070 || r == 5070),
        "no association to the core while online: {online:?}\n{console}"
    );
    assert!(console.contains("state: offline"), "{console}");
    assert!(console.contains("core association: gone"), "{console}");
    assert!(
        system_tests::peer::snmp(&console, "offline", "SctpShutdowns")
            > system_tests::peer::snmp(&console, "before-offline", "SctpShutdowns"),
        "going offline counted no SHUTDOWN:\n{console}"
    );
    assert_eq!(
        system_tests::peer::snmp(&console, "offline", "SctpAborteds"),
        system_tests::peer::snmp(&console, "before-offline", "SctpAborteds"),
        "going offline counted an ABORT:\n{console}"
    );
    assert!(
        !console.contains("call offline: exit 0"),
        "a call went through while offline:\n{console}"
    );
    assert!(console.contains("state: online"), "{console}");
    assert!(console.contains("call back-online: exit 0"), "{console}");

    // 3. The core asked for time: its association shut down gracefully, none opened again.
    assert!(
        console.contains("core association after 503: gone"),
        "{console}"
    );
    assert_eq!(
        system_tests::peer::snmp(&console, "after-503", "SctpAborteds"),
        system_tests::peer::snmp(&console, "before-503", "SctpAborteds"),
        "the 503's association ended with an ABORT:\n{console}"
    );
    // Accepted associations during the second call: the phone's (by the box) only; one
    // opened by the box toward the core would be accepted by the core too.
    let accepted = system_tests::peer::snmp(&console, "meanwhile", "SctpPassiveEstabs")
        - system_tests::peer::snmp(&console, "after-503", "SctpPassiveEstabs");
    assert_eq!(
        accepted, 1,
        "the box opened an association to the core before its Retry-After:\n{console}"
    );
    let meanwhile = assocs(&console, "meanwhile");
    assert!(
        !meanwhile.iter().any(|&(l, r)| l == 5070 || r == 5070),
        "an association to the core before its Retry-After: {meanwhile:?}\n{console}"
    );
    assert!(
        console
            .lines()
            .any(|l| l.contains("upstream_associations_shut") && l.trim().ends_with(" 1")),
        "sbcd did not count the association it shut:\n{console}"
    );

    let timings = format!(
        "build and initramfs (cargo, xtask peer): {:.1} s\nQEMU start to `peer: ready`: {:.1} s\n\
         QEMU start to power-off: {:.1} s\nwhole test: {:.1} s\n",
        prepared.as_secs_f64(),
        booted.as_secs_f64(),
        ran.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    write_file(&dir.join("timings.txt"), timings.as_bytes());
    let _ = writeln!(std::io::stderr(), "{timings}");
}
