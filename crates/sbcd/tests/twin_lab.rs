//! The twin (SPEC §7) on the real kernel: two sbcd processes in their own network namespaces,
//! phones and a core on two bridges, the cross-connect as a veth pair (common/netns.rs draws the
//! lab). Each test builds its own lab and the tests run one at a time: the failure detector
//! works in tenths of a second, and two labs' worth of daemons on a loaded two-core machine
//! would measure the machine, not the twin.
//!
//! Nothing waits a fixed time as its assertion: a log line, a `show twin` answer, a neighbour
//! entry or SIPp's exit is waited for with a deadline; where "nothing happens" is the claim, the
//! test waits for a count of keep-alives received to grow instead.

// Helpers here set the lab up: a failing step (a bind, a namespace) fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::daemon::Sbcd;
use common::netns::{
    in_ns, ip, TwinLab, ACCESS_SERVICE, CORE_IP, CORE_SERVICE, NODE_ETH0_MAC, PHONE_IP,
};
use common::sipp::{Sipp, SippRun};
use common::PATIENCE;

/// SIP on the service addresses.
const SIP_PORT: u16 = 5060;
/// The core's SIPp UAS.
const UAS_PORT: u16 = 5070;
/// The phones' SIPp UAC.
const PHONE_PORT: u16 = 5061;

/// One lab at a time (see the module comment); a failed test must not stop the others.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// sbc.toml for node `i` (0 = node-a) of the lab, in `dir`; with the `[twin]` section when
/// `twin` is given (the path of the key file).
fn node_toml(dir: &Path, i: usize, twin: Option<&Path>) -> String {
    let mut t = format!(
        "[node]\nname = \"sbc-{name}\"\n\n\
         [[listen]]\nrealm = \"access\"\ntransport = \"udp\"\naddr = \"{ACCESS_SERVICE}:{SIP_PORT}\"\n\n\
         [[listen]]\nrealm = \"core\"\ntransport = \"udp\"\naddr = \"{CORE_SERVICE}:{SIP_PORT}\"\n\n\
         [[upstream]]\nuri = \"sip:{CORE_IP}:{UAS_PORT};transport=udp\"\npriority = 1\n\n\
         [upstream_policy]\nupstream_timeout_ms = 1000\nprobe_interval_secs = 1\n\n\
         [drain]\nguard_secs = 60\nretry_after_secs = 30\nreg_reject_code = 503\n\
         priority_namespaces = [\"ets\", \"wps\"]\n\n\
         [control]\nsocket = \"{socket}\"\n\n[state]\ndir = \"{state}\"\n\n[panel]\nboard = \"sim\"\n\n\
         [sip]\nworkers = 1\n",
        name = ["a", "b"][i],
        socket = dir.join("control.sock").display(),
        state = dir.join("state").display(),
    );
    if let Some(key_file) = twin {
        let (me, peer) = (i, 1 - i);
        let link = common::netns::NODE_LINK;
        let access = common::netns::NODE_ACCESS;
        t.push_str(&format!(
            "\n[twin]\nnode_id = {id}\ninterval_ms = 100\nmisses = 3\nkey_file = \"{key}\"\n\
             link = {{ local = \"{}:7700\", peer = \"{}:7700\" }}\n\
             second_path = {{ local = \"{}:7700\", peer = \"{}:7700\" }}\n\n\
             [[twin.service_address]]\naddr = \"{ACCESS_SERVICE}/24\"\ndev = \"eth0\"\n\n\
             [[twin.service_address]]\naddr = \"{CORE_SERVICE}/24\"\ndev = \"eth1\"\n",
            link[me],
            link[peer],
            access[me],
            access[peer],
            id = i + 1,
            key = key_file.display(),
        ));
    }
    t
}

/// The core: SIPp answering calls and sbcd's OPTIONS probes at 198.51.100.20:5070.
fn core_uas(lab: &TwinLab) -> SippRun {
    Sipp::uas("uas_answer.xml")
        .in_netns(&lab.core, CORE_IP)
        .on_port(UAS_PORT)
        .time_limit(Duration::from_secs(300))
        .start()
}

/// One call from the phones through the access service address to the core, held 100 ms.
fn phone_call(lab: &TwinLab, caller: &str) -> common::sipp::SippOutcome {
    Sipp::uac("uac_call.xml", SocketAddr::from((ACCESS_SERVICE, SIP_PORT)))
        .in_netns(&lab.phones, PHONE_IP)
        .on_port(PHONE_PORT)
        .service("core-user")
        .key("caller", caller)
        .calls(1)
        .hold_ms(100)
        .time_limit(Duration::from_secs(20))
        .run()
}

/// An OPTIONS to the box itself at `to`, from `from_port` of the phones' address.
fn options_to_the_box(to: SocketAddr, from_port: u16, n: u32) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {PHONE_IP}:{from_port};branch=z9hG4bK-lab-{n}\r\n\
         From: <sip:lab@{PHONE_IP}:{from_port}>;tag=lab-{n}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: lab-options-{n}@{PHONE_IP}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// From the phones' namespace, sends an OPTIONS to the access service address every 20 ms
/// (each a new transaction) until one is answered; returns when the first answer arrived and
/// its status line. Panics after `within`.
fn first_sip_answer(lab: &TwinLab, within: Duration) -> (Instant, String) {
    in_ns(&lab.phones, move || {
        let socket = UdpSocket::bind((PHONE_IP, 0)).expect("bind in the phones' namespace");
        let port = socket.local_addr().expect("bound").port();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("set a read timeout");
        let to = SocketAddr::from((ACCESS_SERVICE, SIP_PORT));
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        for n in 0u32.. {
            assert!(
                Instant::now() < deadline,
                "no SIP answer from {to} within {within:?}"
            );
            // While nobody holds the address the send may fail (no ARP answer): try again.
            let _ = socket.send_to(options_to_the_box(to, port, n).as_bytes(), to);
            let sent = Instant::now();
            while sent.elapsed() < Duration::from_millis(20) {
                if let Ok((len, _)) = socket.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                    if text.starts_with("SIP/2.0 ") {
                        let status = text.lines().next().unwrap_or_default().to_owned();
                        return (Instant::now(), status);
                    }
                }
            }
        }
        unreachable!("the loop returns or panics")
    })
}

/// The lab's wiring alone: a plain sbcd (no `[twin]`) on node-a, its service addresses put there
/// by hand, carries a SIPp call from the phones' namespace to the core's through the access
/// service address, answers OPTIONS there, and the phones learn the address at node-a's MAC.
#[test]
fn a_plain_sbcd_carries_a_call_through_the_service_address() {
    let _serial = serial();
    let Some(lab) = TwinLab::new() else { return };
    let node = &lab.nodes[0];
    ip(&[
        "-n",
        node,
        "addr",
        "add",
        &format!("{ACCESS_SERVICE}/24"),
        "dev",
        "eth0",
    ]);
    ip(&[
        "-n",
        node,
        "addr",
        "add",
        &format!("{CORE_SERVICE}/24"),
        "dev",
        "eth1",
    ]);
    let core = core_uas(&lab);
    let sbcd = Sbcd::start_in_netns(node, |dir| node_toml(dir, 0, None));

    let call = phone_call(&lab, "alice");
    call.assert_all_succeeded(1);
    assert_eq!(sbcd.stat("sip.calls_started"), 1);
    let (_, status) = first_sip_answer(&lab, PATIENCE);
    assert!(
        status.starts_with("SIP/2.0 200"),
        "OPTIONS to the box: {status}"
    );
    assert_eq!(
        lab.phones_neighbour(ACCESS_SERVICE).as_deref(),
        Some(NODE_ETH0_MAC[0]),
        "the phones reach the service address at node-a's eth0"
    );
    drop(sbcd);
    core.stop().assert_none_failed();
}
