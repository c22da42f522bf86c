//! The drain's rules with real SIP peers (SPEC §2): registrations while draining, priority calls
//! and calls to registered phones, OPTIONS to the box, the guard timer ending calls, aborting a
//! drain, and the operator's state surviving a restart. The drain under load is in
//! `drain_load.rs`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use common::daemon::{Sbcd, SbcdConfig};
use common::net::{free_port, header, request, status_code, UdpPeer};
use common::sipp::{Sipp, SippOutcome, SippRun};
use common::{unix_ms_now, wait_for, PATIENCE};
use control::SystemState;

const RETRY_AFTER_SECS: u64 = 30;

/// sbcd in front of one core UAS (which is also the registrar), with a long guard.
fn sbcd_with_core() -> (Sbcd, SippRun) {
    let core = Sipp::uas("uas_answer.xml").trace_messages().start();
    let mut config = SbcdConfig::with_upstreams(&[core.port()]);
    config.retry_after_secs = RETRY_AFTER_SECS;
    config.guard_secs = 60;
    (Sbcd::start(config), core)
}

/// A phone registers `user` from `port`, asking for `expires` seconds.
fn register(sbcd: &Sbcd, user: &str, port: u16, expires: u32) -> SippOutcome {
    Sipp::uac("register.xml", sbcd.access())
        .on_port(port)
        .service(user)
        .key("expires", &expires.to_string())
        .calls(1)
        .run()
}

/// A phone calls the core and holds the call for `hold_ms`.
fn start_call(sbcd: &Sbcd, caller: &str, hold_ms: u64) -> SippRun {
    Sipp::uac("uac_call.xml", sbcd.access())
        .service("core-user")
        .key("caller", caller)
        .calls(1)
        .hold_ms(hold_ms)
        .start()
}

/// A new call that must be refused with 503 and Retry-After.
fn refused_call(sbcd: &Sbcd, caller: &str) -> SippOutcome {
    Sipp::uac("uac_expect_503.xml", sbcd.access())
        .service("core-user")
        .key("caller", caller)
        .calls(1)
        .run()
}

fn wait_sessions(sbcd: &Sbcd, n: u64) {
    wait_for(&format!("{n} active sessions"), PATIENCE, || {
        (sbcd.system_state().active_sessions == n).then_some(())
    });
}

/// The expiry granted in a register.xml run's 200 (Contact's expires, else Expires).
fn granted_expiry(outcome: &SippOutcome) -> Option<u64> {
    let line = outcome.logged("granted").into_iter().next()?;
    let (contact, expires) = line.split_once('|').unwrap_or((&line, ""));
    contact
        .to_ascii_lowercase()
        .split(';')
        .find_map(|p| {
            p.trim()
                .strip_prefix("expires=")?
                .trim_end_matches('>')
                .parse()
                .ok()
        })
        .or_else(|| expires.trim().parse().ok())
}

/// OPTIONS addressed to the box itself (no user part): the status code and Retry-After.
fn options_to_box(sbcd: &Sbcd, id: &str) -> (u16, Option<String>) {
    let peer = UdpPeer::bind();
    let uri = format!("sip:{}", sbcd.access());
    peer.send(
        sbcd.access(),
        request("OPTIONS", &uri, peer.port(), id).as_bytes(),
    );
    let answer = peer
        .recv_response_to("OPTIONS", PATIENCE)
        .unwrap_or_else(|| panic!("no answer to OPTIONS {uri}"));
    let code = status_code(&answer).unwrap_or(0);
    (code, header(&answer, "Retry-After"))
}

#[test]
fn register_refresh_without_a_call_is_refused_and_deregistered_at_the_core() {
    let (sbcd, core) = sbcd_with_core();
    let phone = free_port();
    register(&sbcd, "hal", phone, 60).assert_all_succeeded(1);
    let events = sbcd.watch();

    sbcd.drain(None);
    // The registration alone keeps the box draining.
    assert_eq!(sbcd.system_state().state, SystemState::Draining);
    let refresh = Sipp::uac("register_rejected.xml", sbcd.access())
        .on_port(phone)
        .service("hal")
        .key("expires", "60")
        .calls(1)
        .run();

    refresh.assert_all_succeeded(1);
    assert_eq!(
        refresh.logged("retry-after"),
        vec![RETRY_AFTER_SECS.to_string()]
    );
    assert!(
        sbcd.registrations().is_empty(),
        "the binding left the cache at once"
    );
    let (_, reason, _) = events.wait_change_to(SystemState::Offline, PATIENCE);
    assert_eq!(reason, "drained");
    let removal = core.wait_logged("register", is_deregistration);
    eprintln!("the core saw hal's removal: {removal}");
    let core = core.stop();
    core.assert_none_failed();
    assert_eq!(
        core.logged("register").len(),
        2,
        "the registration and its removal"
    );
}

#[test]
fn register_refresh_during_a_call_gets_a_lowered_expiry() {
    let (sbcd, core) = sbcd_with_core();
    let phone = free_port();
    register(&sbcd, "ivy", phone, 600).assert_all_succeeded(1);
    let call = start_call(&sbcd, "ivy", 3000);
    wait_sessions(&sbcd, 1);

    sbcd.drain(None);
    let refresh = register(&sbcd, "ivy", phone, 600);

    refresh.assert_all_succeeded(1);
    let granted = granted_expiry(&refresh);
    eprintln!("refresh asking 600 s during a call while draining was granted {granted:?} s");
    assert!(
        granted.is_some_and(|g| g <= RETRY_AFTER_SECS),
        "expiry lowered to retry_after_secs ({RETRY_AFTER_SECS}): {:?}",
        refresh.logged("granted")
    );
    let regs = sbcd.registrations();
    assert!(
        regs.iter()
            .any(|r| r.aor.contains("ivy@") && r.expires_in_secs <= RETRY_AFTER_SECS),
        "the cache holds the lowered expiry: {regs:?}"
    );
    call.wait().assert_all_succeeded(1);
    assert_eq!(sbcd.system_state().state, SystemState::Draining);
    core.stop().assert_none_failed();
}

#[test]
fn priority_calls_and_calls_to_registered_phones_pass_while_draining() {
    let (sbcd, core) = sbcd_with_core();
    let phone_port = free_port();
    register(&sbcd, "judy", phone_port, 60).assert_all_succeeded(1);
    let phone = Sipp::uas("uas_answer.xml").on_port(phone_port).start();

    sbcd.drain(None);
    assert_eq!(sbcd.system_state().state, SystemState::Draining);

    let ordinary = refused_call(&sbcd, "ordinary");
    let priority = Sipp::uac("uac_priority_call.xml", sbcd.access())
        .service("core-user")
        .key("caller", "responder")
        .key("priority", "ets.0")
        .calls(1)
        .hold_ms(100)
        .run();
    let emergency = Sipp::uac("uac_emergency_call.xml", sbcd.access())
        .key("caller", "someone-in-need")
        .calls(1)
        .hold_ms(100)
        .run();
    let to_registered = Sipp::uac("uac_call.xml", sbcd.core())
        .service("judy")
        .key("caller", "core")
        .calls(1)
        .hold_ms(100)
        .run();

    ordinary.assert_all_succeeded(1);
    priority.assert_all_succeeded(1);
    emergency.assert_all_succeeded(1);
    to_registered.assert_all_succeeded(1);
    assert_eq!(
        phone.stop().logged("bye-reason").len(),
        1,
        "judy got the call"
    );
    core.stop().assert_none_failed();
}

#[test]
fn options_to_the_box_answers_200_online_and_503_otherwise() {
    let (sbcd, core) = sbcd_with_core();
    register(&sbcd, "kim", free_port(), 60).assert_all_succeeded(1);

    let online = options_to_box(&sbcd, "opt-online");
    sbcd.drain(None);
    let draining = options_to_box(&sbcd, "opt-draining");
    sbcd.online();
    let back_online = options_to_box(&sbcd, "opt-back");
    sbcd.drain(Some(1));
    sbcd.wait_state(SystemState::Offline, PATIENCE);
    let offline = options_to_box(&sbcd, "opt-offline");

    let retry = Some(RETRY_AFTER_SECS.to_string());
    assert_eq!(online, (200, None));
    assert_eq!(draining, (503, retry.clone()));
    assert_eq!(back_online, (200, None));
    assert_eq!(offline, (503, retry));
    core.stop().assert_none_failed();
}

/// A guard of u64::MAX seconds used to overflow `Instant + Duration` and kill the engine thread
/// (issue 11). Sent on the control socket as a raw request (the console grammar refuses it
/// before sending): refused with an error naming the guard, online and while draining, and the
/// engine answers SIP and the control socket afterwards.
#[test]
fn an_absurd_guard_is_refused_and_sbcd_keeps_answering() {
    let (sbcd, core) = sbcd_with_core();
    register(&sbcd, "kim", free_port(), 60).assert_all_succeeded(1);
    let ask_guard = |secs: u64| {
        let mut client = control::client::Client::connect(&sbcd.socket(), Some(PATIENCE))
            .expect("connect to the control socket");
        client
            .request(&control::Request::SetSystemState {
                target: control::TargetState::Offline,
                guard_secs: Some(secs),
            })
            .expect("an answer to set-system-state")
    };
    for (state, guard) in [
        (SystemState::Online, u64::MAX),
        (SystemState::Online, control::MAX_GUARD_SECS + 1),
        (SystemState::Draining, u64::MAX),
    ] {
        if state == SystemState::Draining {
            sbcd.drain(None);
        }
        match ask_guard(guard) {
            control::Response::Error { message } => assert!(
                message.contains(&format!("guard {guard} s")),
                "the refusal does not name the guard: {message}"
            ),
            other => panic!("guard {guard} was not refused: {other:?}"),
        }
        assert_eq!(sbcd.system_state().state, state);
        let (code, _) = options_to_box(&sbcd, &format!("opt-after-guard-{guard}-{state}"));
        assert_eq!(
            code,
            if state == SystemState::Online {
                200
            } else {
                503
            }
        );
    }
    // The longest guard allowed is taken.
    match ask_guard(control::MAX_GUARD_SECS) {
        control::Response::Ok { .. } => {}
        other => panic!("a guard of a week was refused: {other:?}"),
    }
    let guard_left = sbcd.system_state().guard_remaining_ms.unwrap_or(0);
    assert!(
        guard_left > (control::MAX_GUARD_SECS - 60) * 1000,
        "{guard_left}"
    );
    sbcd.online();
    assert_eq!(options_to_box(&sbcd, "opt-back-online").0, 200);
    core.stop().assert_none_failed();
}

#[test]
fn guard_expiry_ends_calls_with_bye_to_both_sides_and_drops_every_binding() {
    // The de-registrations reuse each phone's Call-ID (RFC 3261 §10.2.4 asks for it); SIPp
    // would take them for strays of calls it finished, so it forgets finished calls at once.
    let core = Sipp::uas("uas_answer.xml")
        .trace_messages()
        .arg("-deadcall_wait")
        .arg("0")
        .start();
    let mut config = SbcdConfig::with_upstreams(&[core.port()]);
    config.retry_after_secs = RETRY_AFTER_SECS;
    config.guard_secs = 60;
    let sbcd = Sbcd::start(config);
    let events = sbcd.watch();
    // Two phones registered and idle: bindings alone keep a drain going (rule 11 ends them).
    for user in ["idle-a", "idle-b"] {
        register(&sbcd, user, free_port(), 600).assert_all_succeeded(1);
    }
    assert_eq!(sbcd.registrations().len(), 2);
    let phones = Sipp::uac("uac_call_wait_bye.xml", sbcd.access())
        .service("core-user")
        .key("caller", "stubborn")
        .calls(3)
        .rate(10)
        .start();
    wait_sessions(&sbcd, 3);

    let guard_secs = 2;
    let started_ms = unix_ms_now();
    sbcd.drain(Some(guard_secs));
    let phones = phones.wait();
    let (_, reason, offline_at_ms) = events.wait_change_to(SystemState::Offline, PATIENCE);

    // Asked at once after the Offline event: the engine that sent it has already ended
    // everything, bindings included.
    let left = sbcd.registrations();
    let state = sbcd.system_state();
    let (_, _, draining_at_ms) = events.wait_change_to(SystemState::Draining, PATIENCE);
    let drain_ms = offline_at_ms.saturating_sub(started_ms);
    // Measured on sbcd's own clock (both events carry its time): the guard fired on time, not
    // when the test got round to looking.
    let guard_ms = offline_at_ms.saturating_sub(draining_at_ms);
    eprintln!(
        "GUARD: drain with guard {guard_secs} s ended after {drain_ms} ms by {reason:?}; \
         phones got Reason {:?}",
        phones.logged("bye-reason")
    );
    phones.assert_all_succeeded(3);
    // The BYEs to the core left with those to the phones but may arrive a moment later.
    wait_for("the core to get its three BYEs", PATIENCE, || {
        (core.logged_so_far("bye-reason").len() == 3).then_some(())
    });
    wait_for("the core to get both de-registrations", PATIENCE, || {
        let removals = core.logged_so_far("register");
        (removals.iter().filter(|l| is_deregistration(l)).count() >= 2).then_some(())
    });
    let core = core.stop();
    core.assert_none_failed();
    let core_reasons = core.logged("bye-reason");
    assert_eq!(core_reasons.len(), 3, "the core got a BYE per call");
    assert!(
        core_reasons.iter().all(|r| !r.is_empty()),
        "each BYE to the core has a Reason: {core_reasons:?}"
    );
    assert_eq!(reason, "guard-expired");
    assert!(
        drain_ms >= guard_secs * 1000 - 100,
        "not before the guard: {drain_ms} ms"
    );
    assert!(
        guard_ms >= guard_secs * 1000 - 100 && guard_ms <= guard_secs * 1000 + 1000,
        "the guard of {guard_secs} s ended the drain {guard_ms} ms after it started (sbcd's clock)"
    );
    assert_eq!(sbcd.stat("sip.calls_terminated_by_guard"), 3);
    assert_eq!(state.active_sessions, 0, "{state:?}");
    assert!(left.is_empty(), "bindings outlived the guard: {left:?}");
    let removals: Vec<String> = core
        .logged("register")
        .into_iter()
        .filter(|l| is_deregistration(l))
        .collect();
    assert_eq!(
        removals.len(),
        2,
        "the core got one de-registration per binding left at the guard: {removals:?}"
    );
}

#[test]
fn set_online_aborts_a_drain_at_once() {
    let (sbcd, core) = sbcd_with_core();
    let events = sbcd.watch();
    let held = start_call(&sbcd, "held", 1500);
    wait_sessions(&sbcd, 1);

    sbcd.drain(None);
    refused_call(&sbcd, "refused").assert_all_succeeded(1);
    let asked = Instant::now();
    sbcd.online();
    let state = sbcd.system_state();
    eprintln!("online again {:?} after asking", asked.elapsed());

    assert_eq!(state.state, SystemState::Online, "{state:?}");
    assert!(state.guard_remaining_ms.is_none());
    let after_abort = start_call(&sbcd, "accepted", 100).wait();
    after_abort.assert_all_succeeded(1);
    held.wait().assert_all_succeeded(1);
    assert_eq!(
        events
            .changes()
            .iter()
            .map(|(_, to, _)| *to)
            .collect::<Vec<_>>(),
        vec![SystemState::Draining, SystemState::Online]
    );
    // Counted for the operator: one drain begun, one aborted, none completed.
    assert_eq!(sbcd.stat("state.transitions.online_to_draining"), 1);
    assert_eq!(sbcd.stat("state.transitions.draining_to_online"), 1);
    let (ok, metrics, _) = sbcd.ctl_raw(&["show", "metrics"]);
    assert!(ok);
    assert!(
        metrics.contains("sbc_system_state_transitions_total{from=\"draining\",to=\"online\"} 1\n"),
        "{metrics}"
    );
    core.stop().assert_none_failed();
}

#[test]
fn operator_state_survives_a_restart() {
    let (mut sbcd, core) = sbcd_with_core();
    sbcd.drain(None);
    sbcd.wait_state(SystemState::Offline, PATIENCE);

    sbcd.restart();
    let restored = sbcd.system_state();
    let refused = refused_call(&sbcd, "after-restart");
    sbcd.online();
    sbcd.restart();
    let back = sbcd.system_state();
    let accepted = start_call(&sbcd, "after-online", 100).wait();

    assert_eq!(restored.state, SystemState::Offline, "{restored:?}");
    refused.assert_all_succeeded(1);
    assert_eq!(back.state, SystemState::Online, "{back:?}");
    accepted.assert_all_succeeded(1);
    core.stop().assert_none_failed();
}

/// Whether a "register <Contact> | <Expires>" line seen at the core removes the binding.
fn is_deregistration(line: &str) -> bool {
    let (contact, expires) = line.split_once('|').unwrap_or((line, ""));
    let contact = contact.to_ascii_lowercase().replace(' ', "");
    contact.contains("expires=0") || contact.trim() == "*" || expires.trim() == "0"
}

#[test]
fn a_ringing_call_accepted_before_the_drain_completes() {
    let core = Sipp::uas("uas_answer.xml").hold_ms(1500).start();
    let mut config = SbcdConfig::with_upstreams(&[core.port()]);
    config.retry_after_secs = RETRY_AFTER_SECS;
    let sbcd = Sbcd::start(config);
    let events = sbcd.watch();
    let ringing = start_call(&sbcd, "early", 200);
    wait_for("the call to ring (early dialog)", PATIENCE, || {
        sbcd.calls()
            .iter()
            .any(|c| c.state == "early")
            .then_some(())
    });

    sbcd.drain(None);
    let ringing = ringing.wait();
    let (_, reason, _) = events.wait_change_to(SystemState::Offline, PATIENCE);

    ringing.assert_all_succeeded(1);
    assert_eq!(reason, "drained");
    core.stop().assert_none_failed();
}

#[test]
fn offline_refuses_even_priority_calls() {
    let (sbcd, core) = sbcd_with_core();
    sbcd.drain(None);
    sbcd.wait_state(SystemState::Offline, PATIENCE);

    let priority = Sipp::uac("uac_priority_expect_503.xml", sbcd.access())
        .service("core-user")
        .key("caller", "responder")
        .key("priority", "ets.0")
        .calls(1)
        .run();

    priority.assert_all_succeeded(1);
    assert_eq!(
        priority.logged("retry-after"),
        vec![RETRY_AFTER_SECS.to_string()]
    );
    core.stop().assert_none_failed();
}

#[test]
fn offline_closes_sip_tcp_connections_and_refuses_new_ones() {
    let (sbcd, core) = sbcd_with_core();
    let mut phone = TcpStream::connect(sbcd.access()).expect("connect over TCP while online");
    let options = request(
        "OPTIONS",
        &format!("sip:{}", sbcd.access()),
        0,
        "tcp-online",
    )
    .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    phone
        .write_all(options.as_bytes())
        .expect("send OPTIONS over TCP");
    let answer = read_some(&mut phone);
    assert_eq!(
        status_code(&answer),
        Some(200),
        "online over TCP: {answer:?}"
    );

    sbcd.drain(None);
    sbcd.wait_state(SystemState::Offline, PATIENCE);

    // Offline closes the established connection gracefully: a FIN, never a reset.
    let _ = phone.set_read_timeout(Some(PATIENCE));
    let mut buf = vec![0u8; 4096];
    match phone.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "the connection is closed, not answered: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("the connection must end with a FIN, got {e}"),
    }
    match TcpStream::connect(sbcd.access()) {
        Err(_) => {}
        Ok(mut late) => {
            // The listener is closed: at most the kernel's backlog took it, and that ends in a
            // reset or a close, never an answer.
            let _ = late.write_all(options.as_bytes());
            let answer = read_some(&mut late);
            assert!(answer.is_empty(), "a new connection is refused: {answer:?}");
        }
    }
    core.stop().assert_none_failed();
}

/// Reads what arrives until the peer closes or nothing more comes for a while (empty on EOF).
fn read_some(stream: &mut TcpStream) -> String {
    let _ = stream.set_read_timeout(Some(PATIENCE));
    let mut buf = vec![0u8; 4096];
    match stream.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => String::new(),
        Err(e) => panic!("TCP read: {e}"),
    }
}

#[test]
fn register_with_several_contacts_keeps_only_those_in_a_call() {
    let (sbcd, core) = sbcd_with_core();
    let in_call_port = free_port();
    let idle_port = free_port();
    let contacts = format!(
        "<sip:multi@127.0.0.1:{in_call_port};transport=UDP>, <sip:multi@127.0.0.1:{idle_port};transport=UDP>"
    );
    let phone = UdpPeer::bind();
    let register = |id: &str, cseq: u32| {
        let text = request(
            "REGISTER",
            &format!("sip:{}", sbcd.access()),
            phone.port(),
            id,
        )
        .replace("To: <sip:", "To: <sip:multi@")
        .replace("From: <sip:tester@", "From: <sip:multi@")
        .replace("CSeq: 1 REGISTER", &format!("CSeq: {cseq} REGISTER"))
        .replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nContact: {contacts}\r\nExpires: 600\r\n"),
        );
        phone.send(sbcd.access(), text.as_bytes());
        phone
            .recv_response_to("REGISTER", PATIENCE)
            .unwrap_or_else(|| panic!("no answer to REGISTER {id}"))
    };
    let first = register("multi-1", 1);
    assert_eq!(status_code(&first), Some(200), "{first}");
    assert_eq!(sbcd.registrations().len(), 2, "both contacts are cached");
    let call = Sipp::uac("uac_call.xml", sbcd.access())
        .on_port(in_call_port)
        .service("core-user")
        .key("caller", "multi")
        .calls(1)
        .hold_ms(2000)
        .start();
    wait_sessions(&sbcd, 1);

    sbcd.drain(None);
    let refresh = register("multi-2", 2);

    let regs = sbcd.registrations();
    eprintln!(
        "refresh while draining answered {:?}; cache {regs:?}",
        refresh.lines().next()
    );
    assert_eq!(status_code(&refresh), Some(200), "{refresh}");
    assert_eq!(regs.len(), 1, "only the contact in a call stays: {regs:?}");
    assert!(
        regs[0].contact.contains(&format!(":{in_call_port}")),
        "{regs:?}"
    );
    assert!(regs[0].expires_in_secs <= RETRY_AFTER_SECS, "{regs:?}");
    call.wait().assert_all_succeeded(1);
    let idle = format!(":{idle_port}");
    let last = core
        .wait_received("REGISTER", |r| {
            r.to_ascii_lowercase()
                .lines()
                .any(|l| l.contains(&idle) && l.contains("expires=0"))
        })
        .to_ascii_lowercase();
    core.stop().assert_none_failed();
    let contact_lines: Vec<&str> = last
        .lines()
        .filter(|l| l.starts_with("contact:") || l.starts_with("m:"))
        .collect();
    eprintln!("the core saw the refresh with {contact_lines:?}");
    assert!(
        contact_lines
            .iter()
            .any(|l| l.contains(&format!(":{idle_port}")) && l.contains("expires=0")),
        "the idle contact went to the core with expires 0: {contact_lines:?}"
    );
    assert!(
        contact_lines
            .iter()
            .any(|l| l.contains(&format!(":{in_call_port}")) && !l.contains("expires=0")),
        "the contact in a call was refreshed: {contact_lines:?}"
    );
}

#[test]
fn show_registrations_counts_the_call_the_drain_rules_see() {
    let (sbcd, core) = sbcd_with_core();
    let phone = free_port();
    register(&sbcd, "lou", phone, 600).assert_all_succeeded(1);
    // The call leaves from another port than the REGISTER (as a phone using a second socket
    // would); rule 4 still counts it as lou's call.
    let call = start_call(&sbcd, "lou", 1500);
    wait_sessions(&sbcd, 1);

    let regs = sbcd.registrations();

    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0].active_calls, 1, "lou is in a call: {regs:?}");
    call.wait().assert_all_succeeded(1);
    core.stop().assert_none_failed();
}
