//! The box among real SIP servers (issue 18): Kamailio 5.6 (Debian's `kamailio`) with the lab's
//! configurations, `lab/kamailio/`.
//!
//! - In front of a pair of boxes, as a load balancer (`dispatcher.cfg`): its OPTIONS probes see
//!   a draining box leave the set (503 + Retry-After, SPEC §2 rule 9) and come back once it is
//!   online again; meanwhile the new calls go to the other box.
//! - Behind the box, as the core's registrar with digest authentication (`registrar.cfg`):
//!   the 401 challenge reaches the phone, only the 2xx caches a binding in the box, and a call
//!   from the core reaches the registered phone through the box; and the same with the lab's
//!   phone, `cargo xtask lab phone --password ...`, as docs/engine.md shows it.

// A test's set-up failing (no port, no temp dir) is a test failure: panicking with a message is
// the right answer there.
#![allow(clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Sbcd, SbcdConfig};
use common::kamailio::{Kamailio, USER};
use common::lab::{build_xtask, Terminal};
use common::net::{free_port, header, status_code, UdpPeer};
use common::sipp::{Sipp, SippRun};
use common::{wait_for_seen, PATIENCE};
use control::SystemState;

/// The core behind the boxes: answers their probes, REGISTER and calls.
fn core() -> SippRun {
    Sipp::uas("uas_answer.xml")
        .time_limit(Duration::from_secs(120))
        .start()
}

/// Waits until Kamailio's dispatcher shows `box_uri` with flags starting with `state` (`A`
/// active, `I` inactive).
fn wait_dispatcher(kamailio: &Kamailio, box_uri: &str, state: char) -> Instant {
    wait_for_seen(
        &format!("dispatcher to mark {box_uri} {state}"),
        PATIENCE,
        || match kamailio.dispatcher_flags(box_uri) {
            Some(flags) if flags.starts_with(state) => Ok(Instant::now()),
            other => Err(format!("flags {other:?}")),
        },
    )
}

/// Two boxes in front of `core` and Kamailio's dispatcher in front of them, both in its list.
struct Balanced {
    box_a: Sbcd,
    box_b: Sbcd,
    uri_a: String,
    uri_b: String,
    lb: Kamailio,
    /// Holds the dispatcher's list file for as long as Kamailio runs.
    _list: tempfile::TempDir,
}

/// Starts [`Balanced`]; `defines` go to the dispatcher's configuration beside its list.
fn behind_a_dispatcher(core: &SippRun, defines: &[&str]) -> Balanced {
    let box_a = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));
    let box_b = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));
    let uri = |b: &Sbcd| format!("sip:{}", b.access());
    let (uri_a, uri_b) = (uri(&box_a), uri(&box_b));
    let list = tempfile::tempdir().expect("a temporary directory");
    let list_file = list.path().join("dispatcher.list");
    std::fs::write(&list_file, format!("1 {uri_a} 0 0\n1 {uri_b} 0 0\n")).expect("write the list");
    let mut all = vec![format!("DSLIST=\"{}\"", list_file.display())];
    all.extend(defines.iter().map(|d| (*d).to_owned()));
    let lb = Kamailio::start_lab("dispatcher", &all);
    Balanced {
        box_a,
        box_b,
        uri_a,
        uri_b,
        lb,
        _list: list,
    }
}

/// `n` calls from a phone through the load balancer, all answered; the load balancer's
/// decisions are printed when they are not.
fn calls_through(lb: &Kamailio, n: u32) {
    let outcome = Sipp::uac("uac_call.xml", common::net::local(lb.port()))
        .service("1000")
        .key("caller", "pat")
        .calls(n)
        .run();
    if outcome.successful() != u64::from(n) {
        for line in lb.log().lines().filter(|l| l.contains("dispatcher")) {
            eprintln!("kamailio: {line}");
        }
    }
    outcome.assert_all_succeeded(u64::from(n));
}

#[test]
fn dispatcher_takes_a_draining_box_out_and_back_in() {
    let started = Instant::now();
    let core = core();
    // `_list` first: bindings drop in reverse, so the list outlives Kamailio.
    let Balanced {
        _list,
        box_a,
        box_b,
        uri_a,
        uri_b,
        lb,
    } = behind_a_dispatcher(&core, &[]);
    wait_dispatcher(&lb, &uri_a, 'A');
    wait_dispatcher(&lb, &uri_b, 'A');

    // Both boxes in the set: round-robin gives each its share.
    calls_through(&lb, 4);
    let calls = |b: &Sbcd| b.stat("sip.calls_started");
    assert_eq!(
        (calls(&box_a), calls(&box_b)),
        (2, 2),
        "round-robin over both boxes"
    );

    // A registered phone keeps box A draining (rule 5) for as long as the test needs.
    Sipp::uac("register.xml", box_a.access())
        .service("keeper")
        .key("expires", "300")
        .calls(1)
        .run()
        .assert_all_succeeded(1);
    let drained_at = Instant::now();
    box_a.drain(None);
    let out_at = wait_dispatcher(&lb, &uri_a, 'I');
    assert_eq!(box_a.system_state().state, SystemState::Draining);
    eprintln!(
        "DISPATCHER: box A out of the set {:?} after the drain started",
        out_at - drained_at
    );
    assert!(
        lb.dispatcher_flags(&uri_b)
            .is_some_and(|f| f.starts_with('A')),
        "box B stays in"
    );

    calls_through(&lb, 4);
    assert_eq!(
        (calls(&box_a), calls(&box_b)),
        (2, 6),
        "the new calls all went to box B"
    );
    assert_eq!(
        box_a.stat("sip.drain_rejected"),
        0,
        "the load balancer's probes are no refused calls"
    );

    let online_at = Instant::now();
    box_a.online();
    let back_at = wait_dispatcher(&lb, &uri_a, 'A');
    eprintln!(
        "DISPATCHER: box A back in the set {:?} after set-system-state online",
        back_at - online_at
    );
    calls_through(&lb, 2);
    assert_eq!(
        (calls(&box_a), calls(&box_b)),
        (3, 7),
        "box A takes its share again"
    );
    core.stop().assert_none_failed();
    eprintln!("DISPATCHER: test took {:?}", started.elapsed());
}

/// Between a box's drain and the load balancer's next probe, the box refuses the calls it is
/// given (503 + Retry-After); the load balancer's failure route sends each to the next box.
#[test]
fn a_call_refused_by_a_box_draining_before_the_next_probe_goes_to_the_other_box() {
    let core = core();
    // No probe within the test: the load balancer goes on believing box A is in.
    let Balanced {
        _list,
        box_a,
        box_b,
        uri_a,
        lb,
        ..
    } = behind_a_dispatcher(&core, &["PING_INTERVAL=3600"]);
    Sipp::uac("register.xml", box_a.access())
        .service("keeper")
        .key("expires", "300")
        .calls(1)
        .run()
        .assert_all_succeeded(1);
    box_a.drain(None);
    assert_eq!(box_a.system_state().state, SystemState::Draining);

    calls_through(&lb, 4);
    assert!(
        lb.dispatcher_flags(&uri_a)
            .is_some_and(|f| f.starts_with('A')),
        "box A still in the load balancer's set"
    );
    let calls = |b: &Sbcd| b.stat("sip.calls_started");
    assert_eq!(
        (calls(&box_a), calls(&box_b)),
        (0, 4),
        "every call on box B"
    );
    assert_eq!(
        box_a.stat("sip.drain_rejected"),
        2,
        "box A refused the two calls round-robin gave it"
    );
    core.stop().assert_none_failed();
}

/// A REGISTER from `phone` for AoR `phone@127.0.0.1`, with `authorization` when given.
fn register(phone: &UdpPeer, box_access: std::net::SocketAddr, cseq: u32, authorization: &str) {
    let port = phone.port();
    let msg = format!(
        "REGISTER sip:{box_access} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-raw-reg-{cseq}\r\n\
         From: <sip:{USER}@127.0.0.1>;tag=raw-reg\r\n\
         To: <sip:{USER}@127.0.0.1>\r\n\
         Call-ID: raw-register-{port}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{USER}@127.0.0.1:{port}>\r\n\
         {authorization}\
         Expires: 60\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    phone.send(box_access, msg.as_bytes());
}

#[test]
fn registrar_with_digest_auth_behind_the_box() {
    let started = Instant::now();
    // The box's core address is chosen first: the registrar sends calls for its phones there.
    let mut config = SbcdConfig::with_upstreams(&[]);
    let registrar = Kamailio::start_lab(
        "registrar",
        &[format!("BOX=\"sip:127.0.0.1:{}\"", config.core_port)],
    );
    config.upstreams = vec![(registrar.port(), 1)];
    let sbcd = Sbcd::start(config);

    // The challenge passes through to the phone, and nothing is cached.
    let raw_phone = UdpPeer::bind();
    register(&raw_phone, sbcd.access(), 1, "");
    let challenge = raw_phone
        .recv_response_to("REGISTER", PATIENCE)
        .expect("an answer to the REGISTER");
    assert_eq!(status_code(&challenge), Some(401), "{challenge}");
    let www = header(&challenge, "WWW-Authenticate").expect("the challenge");
    assert!(www.contains("nonce="), "{www}");
    assert!(sbcd.registrations().is_empty(), "a 401 caches nothing");

    // Wrong credentials: challenged again, still nothing cached.
    let nonce = www
        .split("nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a nonce");
    let wrong = format!(
        "Authorization: Digest username=\"{USER}\", realm=\"127.0.0.1\", nonce=\"{nonce}\", \
         uri=\"sip:{}\", response=\"00000000000000000000000000000000\"\r\n",
        sbcd.access()
    );
    register(&raw_phone, sbcd.access(), 2, &wrong);
    let again = raw_phone
        .recv_response_to("REGISTER", PATIENCE)
        .expect("an answer to the REGISTER with wrong credentials");
    assert_eq!(status_code(&again), Some(401), "{again}");
    assert!(
        sbcd.registrations().is_empty(),
        "wrong credentials cache nothing"
    );
    assert!(registrar.contacts(USER).is_empty());

    // The phone's own credentials: 200, and only now a binding, at both.
    let phone_port = free_port();
    Sipp::uac("register_auth.xml", sbcd.access())
        .on_port(phone_port)
        .service(USER)
        .key("expires", "60")
        .calls(1)
        .run()
        .assert_all_succeeded(1);
    let regs = sbcd.registrations();
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert!(regs[0].aor.contains(USER), "{regs:?}");
    let contacts = registrar.contacts(USER);
    assert!(
        contacts.iter().any(|c| c.contains(&phone_port.to_string())),
        "the registrar holds the phone: {contacts:?}"
    );

    // A call from the core (a caller at the registrar) reaches the phone through the box.
    let phone = Sipp::uas("uas_answer.xml").on_port(phone_port).start();
    let calls_before = sbcd.stat("sip.calls_started");
    Sipp::uac("uac_call.xml", common::net::local(registrar.port()))
        .service(USER)
        .key("caller", "carol")
        .calls(1)
        .hold_ms(200)
        .run()
        .assert_all_succeeded(1);
    let phone = phone.stop();
    phone.assert_none_failed();
    assert_eq!(
        phone.logged("bye-reason").len(),
        1,
        "the phone got the call"
    );
    assert_eq!(
        sbcd.stat("sip.calls_started"),
        calls_before + 1,
        "through the box"
    );
    eprintln!("REGISTRAR: test took {:?}", started.elapsed());
}

#[test]
fn the_lab_phone_registers_with_credentials_and_answers_a_call_from_the_core() {
    build_xtask();
    let started = Instant::now();
    let mut config = SbcdConfig::with_upstreams(&[]);
    let registrar = Kamailio::start_lab(
        "registrar",
        &[format!("BOX=\"sip:127.0.0.1:{}\"", config.core_port)],
    );
    config.upstreams = vec![(registrar.port(), 1)];
    let sbcd = Sbcd::start(config);

    let phone_port = free_port();
    let command =
        format!("cargo xtask lab phone --user {USER} --password phone-secret --port {phone_port}");
    let mut phone = Terminal::open(&command, &[("SBC_LAB_TARGET", sbcd.access().to_string())]);
    phone.wait_output("answering calls");
    assert!(
        phone.output().contains("registered: Contact"),
        "{}",
        phone.output()
    );
    assert_eq!(sbcd.registrations().len(), 1);

    Sipp::uac("uac_call.xml", common::net::local(registrar.port()))
        .service(USER)
        .key("caller", "carol")
        .calls(1)
        .run()
        .assert_all_succeeded(1);
    phone.wait_output("BYE answered 200");
    let output = phone.interrupt();
    assert!(output.contains("call from <sip:carol@"), "{output}");
    eprintln!("LAB PHONE: test took {:?}", started.elapsed());
}
