//! One test per drain rule of SPEC §2 (and the offline state), each named after the rule it
//! proves, on the simulated network and clock of the harness.

use std::time::Duration;

use super::harness::*;
use crate::events::Event;
use crate::msg::Message;
use crate::transport::Realm;
use crate::SystemState;

const ALICE: &str = "192.168.1.10:5060";
const ALICE_2: &str = "192.168.1.11:5060";
const BOB: &str = "192.168.1.20:5060";
const PBX: &str = "192.168.1.50:5060";
const CORE1: &str = "10.1.0.10:5060";

fn net() -> Net {
    let mut net = Net::standard();
    for p in [ALICE, ALICE_2, BOB, PBX] {
        net.add_phone(p);
    }
    net
}

fn last_response(net: &Net, peer: &str) -> String {
    net.received(peer, "SIP/2.0").pop().unwrap_or_default()
}

/// A call from `phone` (caller AoR `from`) out to the core.
fn call_from(net: &mut Net, phone: &str, from: &str, call_id: &str) -> Req {
    let req = Req::new("INVITE", "sip:+15550001@example.com", phone)
        .from(from)
        .call_id(call_id);
    net.inject(Realm::Access, phone, &req.bytes());
    req
}

/// An in-dialog request from the caller of `invite`, along the route set of its 2xx.
fn in_dialog(net: &Net, phone: &str, invite: &Req, method: &str, cseq: u32) -> Req {
    let ok = net
        .received(phone, "SIP/2.0 200")
        .into_iter()
        .find(|r| r.contains(&invite.call_id))
        .expect("the call was answered");
    let m = Message::parse(ok.as_bytes()).unwrap();
    let to_tag = m.to().unwrap().tag().unwrap().to_owned();
    let mut req = invite
        .clone()
        .method(method)
        .cseq(cseq)
        .to(&invite.to, Some(&to_tag));
    req.uri = format!("sip:peer@{CORE1}");
    let mut routes: Vec<String> = m
        .list("record-route")
        .iter()
        .map(|s| s.to_string())
        .collect();
    routes.reverse();
    for r in routes {
        req = req.add_header("Route", &r);
    }
    req
}

#[test]
fn rule_01_new_invite_gets_503_with_retry_after() {
    let mut net = net();
    net.set_state(SystemState::Draining);
    call_from(&mut net, PBX, "sip:pbx@example.com", "r1");
    let answer = last_response(&net, PBX);
    assert_eq!(code(&answer), 503);
    assert_eq!(header(&answer, "Retry-After"), Some("60"));
    assert!(net.received(CORE1, "INVITE").is_empty());
    assert_eq!(net.proxy.stats().drain_rejected, 1);
    // A retransmission gets the same answer; the ACK is absorbed.
    let again = Req::new("INVITE", "sip:+15550001@example.com", PBX)
        .from("sip:pbx@example.com")
        .call_id("r1");
    net.inject(Realm::Access, PBX, &again.bytes());
    assert_eq!(net.received(PBX, "SIP/2.0 503").len(), 2);
}

#[test]
fn rule_01_retry_after_header_omitted_when_retry_after_secs_is_0() {
    let mut cfg = config();
    cfg.drain.retry_after_secs = 0;
    let mut net = Net::new(cfg);
    net.add_phone(PBX);
    net.set_state(SystemState::Draining);
    call_from(&mut net, PBX, "sip:pbx@example.com", "r1z");
    let answer = last_response(&net, PBX);
    assert_eq!(code(&answer), 503);
    assert_eq!(header(&answer, "Retry-After"), None);
}

#[test]
fn rule_02_in_dialog_requests_are_handled_normally_while_draining() {
    let mut net = net();
    let invite = call_from(&mut net, PBX, "sip:pbx@example.com", "r2");
    assert_eq!(net.proxy.counts().confirmed, 1);
    net.set_state(SystemState::Draining);
    net.advance(Duration::from_secs(5));
    let ack = in_dialog(&net, PBX, &invite, "ACK", 1);
    net.inject(Realm::Access, PBX, &ack.bytes());
    assert_eq!(net.received(CORE1, "ACK").len(), 1);
    for (i, method) in ["INVITE", "UPDATE", "INFO"].into_iter().enumerate() {
        let req = in_dialog(&net, PBX, &invite, method, 2 + i as u32);
        net.inject(Realm::Access, PBX, &req.bytes());
        assert_eq!(
            net.received(CORE1, method).len(),
            if method == "INVITE" { 2 } else { 1 }
        );
        assert_eq!(code(&last_response(&net, PBX)), 200, "{method}");
    }
    let bye = in_dialog(&net, PBX, &invite, "BYE", 9);
    net.inject(Realm::Access, PBX, &bye.bytes());
    assert_eq!(net.received(CORE1, "BYE").len(), 1);
    assert_eq!(code(&last_response(&net, PBX)), 200);
    assert_eq!(net.proxy.counts().active_sessions, 0);
}

#[test]
fn rule_02_invite_accepted_before_the_drain_completes_and_its_cancel_passes() {
    let mut net = net();
    net.peer(CORE1).invite = CoreInvite::Ring;
    call_from(&mut net, PBX, "sip:pbx@example.com", "r2a");
    let pending = call_from(&mut net, PBX, "sip:pbx@example.com", "r2b");
    net.set_state(SystemState::Draining);
    // The core answers the first call after the drain began: it completes.
    let inv = net
        .received(CORE1, "INVITE")
        .into_iter()
        .find(|r| r.contains("r2a"))
        .unwrap();
    let m = Message::parse(inv.as_bytes()).unwrap();
    let ok = crate::msg::response_to(
        &m,
        200,
        Some("late"),
        &[("Contact", format!("<sip:peer@{CORE1}>"))],
    );
    net.inject(Realm::Core, CORE1, &ok);
    assert_eq!(code(&last_response(&net, PBX)), 200);
    assert_eq!(net.proxy.counts().confirmed, 1);
    // The second is cancelled by its caller: the CANCEL goes through.
    net.inject(
        Realm::Access,
        PBX,
        &pending.clone().method("CANCEL").bytes(),
    );
    assert_eq!(net.received(CORE1, "CANCEL").len(), 1);
    assert!(net
        .received(PBX, "SIP/2.0 200")
        .iter()
        .any(|r| r.contains("CANCEL")));
}

#[test]
fn rule_03_new_calls_to_and_from_registered_endpoints_are_not_rejected() {
    let mut net = net();
    net.register(BOB, "bob", 3600);
    net.register(ALICE, "alice", 3600);
    net.set_state(SystemState::Draining);
    let to_bob = Req::new("INVITE", "sip:bob@example.com", CORE1)
        .from("sip:carol@example.net")
        .call_id("r3in");
    net.inject(Realm::Core, CORE1, &to_bob.bytes());
    assert_eq!(net.received(BOB, "INVITE").len(), 1);
    assert_eq!(code(&last_response(&net, CORE1)), 200);
    call_from(&mut net, ALICE, "sip:alice@example.com", "r3out");
    assert_eq!(code(&last_response(&net, ALICE)), 200);
    assert_eq!(net.proxy.counts().active_sessions, 2);
    // Someone unregistered is still turned away.
    let to_nobody = Req::new("INVITE", "sip:nobody@example.com", CORE1)
        .from("sip:carol@example.net")
        .call_id("r3x");
    net.inject(Realm::Core, CORE1, &to_nobody.bytes());
    assert_eq!(code(&last_response(&net, CORE1)), 503);
}

#[test]
fn rule_04_register_refresh_with_active_call_gets_lowered_expiry() {
    let mut net = net();
    net.register(ALICE, "alice", 3600);
    call_from(&mut net, ALICE, "sip:alice@example.com", "r4");
    net.set_state(SystemState::Draining);
    let answer = net.register(ALICE, "alice", 3600);
    assert_eq!(code(&answer), 200);
    let at_core = net.received(CORE1, "REGISTER").pop().unwrap();
    assert!(
        header(&at_core, "Contact").unwrap().contains("expires=60"),
        "{at_core}"
    );
    assert!(
        header(&answer, "Contact").unwrap().contains("expires=60"),
        "{answer}"
    );
    assert_eq!(net.proxy.registrations()[0].expires_in_secs, 60);
    // A smaller request than retry_after_secs is honoured as asked.
    let answer = net.register(ALICE, "alice", 30);
    assert!(header(&answer, "Contact").unwrap().contains("expires=30"));
    assert_eq!(net.proxy.registrations()[0].expires_in_secs, 30);
}

#[test]
fn show_registrations_counts_the_calls_rule_04_sees() {
    let mut net = net();
    net.register(ALICE, "alice", 3600);
    assert_eq!(net.proxy.registrations()[0].active_calls, 0);
    // From another socket of the phone: the AoR still ties the call to the binding, as it
    // does for rule 4.
    call_from(
        &mut net,
        "192.168.1.10:5062",
        "sip:alice@example.com",
        "r4count",
    );
    assert_eq!(net.proxy.counts().active_sessions, 1);
    assert_eq!(net.proxy.registrations()[0].active_calls, 1);
}

#[test]
fn rule_05_register_without_call_is_rejected_removed_and_deregistered_at_the_core() {
    let mut cfg = config();
    cfg.drain.reg_reject_code = 480;
    let mut net = Net::new(cfg);
    net.add_phone(BOB);
    net.register(BOB, "bob", 3600);
    assert_eq!(net.proxy.counts().registrations, 1);
    net.set_state(SystemState::Draining);
    net.take_events();
    let answer = net.register(BOB, "bob", 3600);
    assert_eq!(code(&answer), 480);
    assert_eq!(header(&answer, "Retry-After"), Some("60"));
    assert_eq!(
        net.proxy.counts().registrations,
        0,
        "removed from the cache at once"
    );
    let dereg = net.received(CORE1, "REGISTER").pop().unwrap();
    assert_eq!(header(&dereg, "Expires"), Some("0"));
    assert!(header(&dereg, "Contact").unwrap().contains("expires=0"));
    assert_eq!(header(&dereg, "Call-ID"), Some("reg-bob"));
    assert!(net.take_events().iter().any(|e| matches!(
        e,
        Event::RegistrationRemoved {
            cause: crate::registrations::RemovalCause::Drain,
            ..
        }
    )));
}

#[test]
fn rule_06_register_with_several_contacts_is_handled_per_contact() {
    let mut net = net();
    let register_both = |net: &mut Net| {
        let req = Req::new("REGISTER", "sip:example.com", ALICE)
            .from("sip:alice@example.com")
            .to("sip:alice@example.com", None)
            .call_id("reg-alice-2")
            .cseq(net.proxy.stats().received as u32)
            .header("Contact", &format!("<sip:alice@{ALICE}>;expires=3600"))
            .add_header("Contact", &format!("<sip:alice@{ALICE_2}>;expires=3600"));
        net.inject(Realm::Access, ALICE, &req.bytes());
    };
    register_both(&mut net);
    assert_eq!(net.proxy.counts().registrations, 2);
    call_from(&mut net, ALICE, "sip:alice@example.com", "r6");
    net.set_state(SystemState::Draining);
    register_both(&mut net);
    let at_core = net.received(CORE1, "REGISTER").pop().unwrap();
    let m = Message::parse(at_core.as_bytes()).unwrap();
    let contacts = m.list("contact");
    assert!(
        contacts
            .iter()
            .any(|c| c.contains(ALICE) && c.contains("expires=60")),
        "{contacts:?}"
    );
    assert!(
        contacts
            .iter()
            .any(|c| c.contains(ALICE_2) && c.contains("expires=0")),
        "{contacts:?}"
    );
    let regs = net.proxy.registrations();
    assert_eq!(regs.len(), 1);
    assert!(regs[0].contact.contains(ALICE));
    assert_eq!(regs[0].expires_in_secs, 60);
    assert_eq!(code(&last_response(&net, ALICE)), 200);
}

#[test]
fn rule_07_other_methods_to_a_registered_endpoint_are_handled_normally() {
    let mut net = net();
    net.register(BOB, "bob", 3600);
    net.set_state(SystemState::Draining);
    for method in ["SUBSCRIBE", "NOTIFY", "MESSAGE", "OPTIONS"] {
        let req = Req::new(method, "sip:bob@example.com", CORE1).call_id(&format!("r7{method}"));
        net.inject(Realm::Core, CORE1, &req.bytes());
        assert_eq!(net.received(BOB, method).len(), 1, "{method}");
        assert_eq!(code(&last_response(&net, CORE1)), 200, "{method}");
    }
}

#[test]
fn rule_08_priority_calls_are_forwarded_while_draining() {
    let mut net = net();
    net.set_state(SystemState::Draining);
    let ets = Req::new("INVITE", "sip:+15550001@example.com", PBX)
        .call_id("r8ets")
        .add_header("Resource-Priority", "ets.0");
    net.inject(Realm::Access, PBX, &ets.bytes());
    assert_eq!(code(&last_response(&net, PBX)), 200);
    let sos = Req::new("INVITE", "urn:service:sos.fire", PBX).call_id("r8sos");
    net.inject(Realm::Access, PBX, &sos.bytes());
    assert_eq!(code(&last_response(&net, PBX)), 200);
    assert_eq!(net.received(CORE1, "INVITE").len(), 2);
    assert!(net.proxy.calls().iter().all(|c| c.priority));
    // A namespace that is not configured is no priority.
    let dsn = Req::new("INVITE", "sip:+15550001@example.com", PBX)
        .call_id("r8dsn")
        .add_header("Resource-Priority", "dsn.flash");
    net.inject(Realm::Access, PBX, &dsn.bytes());
    assert_eq!(code(&last_response(&net, PBX)), 503);
}

#[test]
fn rule_08_priority_call_that_cannot_be_forwarded_gets_380_when_configured() {
    let mut cfg = config();
    cfg.drain.answer_380 = true;
    let mut net = Net::new(cfg);
    net.add_phone(PBX);
    net.peer(CORE1).invite = CoreInvite::Reject(503, Some(300));
    net.set_state(SystemState::Draining);
    let sos = Req::new("INVITE", "urn:service:sos", PBX).call_id("r8x");
    net.inject(Realm::Access, PBX, &sos.bytes());
    assert_eq!(code(&last_response(&net, PBX)), 380);
    // Without the option it is the ordinary 503.
    let mut net = Net::standard();
    net.add_phone(PBX);
    net.peer(CORE1).invite = CoreInvite::Reject(503, Some(300));
    net.set_state(SystemState::Draining);
    net.inject(Realm::Access, PBX, &sos.bytes());
    assert_eq!(code(&last_response(&net, PBX)), 503);
}

#[test]
fn rule_09_options_to_the_box_gets_200_online_and_503_with_retry_after_otherwise() {
    let mut net = net();
    let ping = |net: &mut Net, id: &str| {
        let req = Req::new("OPTIONS", &format!("sip:{ACCESS}"), PBX).call_id(id);
        net.inject(Realm::Access, PBX, &req.bytes());
        last_response(net, PBX)
    };
    assert_eq!(code(&ping(&mut net, "o1")), 200);
    assert!(
        net.received(CORE1, "OPTIONS").is_empty(),
        "answered by the box itself"
    );
    net.set_state(SystemState::Draining);
    let answer = ping(&mut net, "o2");
    assert_eq!(
        (code(&answer), header(&answer, "Retry-After")),
        (503, Some("60"))
    );
    net.set_state(SystemState::Offline);
    let answer = ping(&mut net, "o3");
    assert_eq!(
        (code(&answer), header(&answer, "Retry-After")),
        (503, Some("60"))
    );
    net.set_state(SystemState::Online);
    assert_eq!(code(&ping(&mut net, "o4")), 200);
    assert_eq!(
        net.proxy.stats().drain_rejected,
        0,
        "a status test is no refused call or registration"
    );
}

#[test]
fn offline_counts_refused_calls_and_registrations_but_not_other_requests() {
    let mut net = net();
    net.set_state(SystemState::Offline);
    let message = Req::new("MESSAGE", "sip:+15550001@example.com", PBX).call_id("m1");
    net.inject(Realm::Access, PBX, &message.bytes());
    assert_eq!(code(&last_response(&net, PBX)), 503);
    assert_eq!(net.proxy.stats().drain_rejected, 0);
    call_from(&mut net, PBX, "sip:pbx@example.com", "c1");
    assert_eq!(code(&last_response(&net, PBX)), 503);
    assert_eq!(net.proxy.stats().drain_rejected, 1);
    let register = Req::new("REGISTER", "sip:example.com", PBX)
        .from("sip:pbx@example.com")
        .to("sip:pbx@example.com", None)
        .call_id("r1");
    net.inject(Realm::Access, PBX, &register.bytes());
    assert_eq!(code(&last_response(&net, PBX)), 503);
    assert_eq!(net.proxy.stats().drain_rejected, 2);
}

#[test]
fn rule_10_drain_complete_when_sessions_and_registrations_reach_zero() {
    let mut net = net();
    net.register(ALICE, "alice", 3600);
    let invite = call_from(&mut net, ALICE, "sip:alice@example.com", "r10");
    net.set_state(SystemState::Draining);
    net.take_events();
    // The refresh during the call is lowered to 60 s (rule 4).
    net.register(ALICE, "alice", 3600);
    let bye = in_dialog(&net, ALICE, &invite, "BYE", 2);
    net.inject(Realm::Access, ALICE, &bye.bytes());
    assert_eq!(net.proxy.counts().active_sessions, 0);
    assert_eq!(net.proxy.counts().registrations, 1);
    assert!(!net.events.contains(&Event::DrainComplete));
    net.advance(Duration::from_secs(59));
    assert!(!net.events.contains(&Event::DrainComplete));
    net.advance(Duration::from_secs(1));
    assert_eq!(net.proxy.counts(), crate::Counts::default());
    assert_eq!(
        net.events
            .iter()
            .filter(|e| **e == Event::DrainComplete)
            .count(),
        1
    );
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::CountsChanged(c) if c.registrations == 0)));
    // Entering a drain with nothing left reports it at once.
    let mut idle = Net::standard();
    idle.set_state(SystemState::Draining);
    assert!(idle.events.contains(&Event::DrainComplete));
}

#[test]
fn rule_11_guard_expiry_sends_bye_to_both_parties_and_deregisters_every_binding() {
    let mut net = net();
    net.register(ALICE, "alice", 3600);
    net.register(BOB, "bob", 3600);
    call_from(&mut net, ALICE, "sip:alice@example.com", "r11");
    net.peer(CORE1).invite = CoreInvite::Ring;
    call_from(&mut net, PBX, "sip:pbx@example.com", "r11early");
    net.set_state(SystemState::Draining);
    net.advance(Duration::from_secs(100));
    assert_eq!(net.proxy.counts().active_sessions, 2);
    net.take_events();

    net.proxy.terminate_all(net.now, "node going offline");
    net.drive();

    let bye_phone = net.received(ALICE, "BYE").pop().expect("BYE to the caller");
    let bye_core = net.received(CORE1, "BYE").pop().expect("BYE to the callee");
    for bye in [&bye_phone, &bye_core] {
        assert_eq!(
            header(bye, "Reason"),
            Some("SIP;cause=503;text=\"node going offline\"")
        );
        assert_eq!(header(bye, "Call-ID"), Some("r11"));
    }
    assert!(
        bye_phone.starts_with(&format!("BYE sip:alice@{ALICE}")),
        "{bye_phone}"
    );
    // The early call: CANCEL downstream, 503 with Reason upstream.
    assert_eq!(net.received(CORE1, "CANCEL").len(), 1);
    let early = net
        .received(PBX, "SIP/2.0 503")
        .pop()
        .expect("503 to the early caller");
    assert!(header(&early, "Reason").is_some());
    // Every binding is de-registered at the core.
    let deregs: Vec<String> = net
        .received(CORE1, "REGISTER")
        .into_iter()
        .filter(|r| header(r, "Expires") == Some("0"))
        .collect();
    assert_eq!(deregs.len(), 2);
    assert_eq!(net.proxy.counts(), crate::Counts::default());
    // Every answer to what the box sent itself is counted: the CANCEL's 200, a 200 to each
    // BYE and to each de-registration.
    assert_eq!(net.proxy.stats().own_final_2xx, 5);
    let events = net.take_events();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(
                e,
                Event::CallEnded {
                    cause: crate::CallEndCause::Guard,
                    ..
                }
            ))
            .count(),
        2
    );
    assert!(events.contains(&Event::DrainComplete));
}

#[test]
fn offline_rejects_every_new_out_of_dialog_request_priority_included() {
    let mut net = net();
    net.set_state(SystemState::Draining);
    net.set_state(SystemState::Offline);
    let requests = [
        Req::new("INVITE", "urn:service:sos", PBX).call_id("off1"),
        Req::new("INVITE", "sip:x@example.com", PBX)
            .call_id("off2")
            .add_header("Resource-Priority", "wps.1"),
        Req::new("REGISTER", "sip:example.com", PBX).call_id("off3"),
        Req::new("MESSAGE", "sip:x@example.com", PBX).call_id("off4"),
    ];
    for req in requests {
        net.inject(Realm::Access, PBX, &req.bytes());
        let answer = last_response(&net, PBX);
        assert_eq!(
            (code(&answer), header(&answer, "Retry-After")),
            (503, Some("60"))
        );
    }
    assert!(net
        .received(CORE1, "")
        .iter()
        .all(|m| m.starts_with("OPTIONS")));
}

#[test]
fn offline_asks_the_shell_to_close_sip_connections_and_online_reopens() {
    let mut net = net();
    net.set_state(SystemState::Offline);
    assert!(net.events.contains(&Event::CloseConnections));
    assert!(!net.proxy.accepts_connections());
    net.set_state(SystemState::Online);
    assert!(net.events.contains(&Event::AcceptConnections));
    assert!(net.proxy.accepts_connections());
}

#[test]
fn online_again_aborts_the_drain() {
    let mut net = net();
    net.set_state(SystemState::Draining);
    call_from(&mut net, PBX, "sip:pbx@example.com", "ab1");
    assert_eq!(code(&last_response(&net, PBX)), 503);
    net.set_state(SystemState::Online);
    call_from(&mut net, PBX, "sip:pbx@example.com", "ab2");
    assert_eq!(code(&last_response(&net, PBX)), 200);
}

/// The events reporting the final answers to requests the proxy sent on its own.
fn own_answers(events: &[Event]) -> Vec<(String, String, u16)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::OwnRequestAnswered { method, aor, code } => {
                Some((method.clone(), aor.clone(), *code))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn rule_05_the_deregistration_is_the_phones_own_register_with_its_credentials() {
    // A registrar that takes each nonce once: the phone's own fresh credentials still pass.
    let mut net = net();
    net.peer(CORE1).auth = RegistrarAuth::OneTimeNonce;
    assert_eq!(
        code(&net.register(BOB, "bob", 3600)),
        401,
        "the challenge is relayed"
    );
    assert_eq!(net.proxy.counts().registrations, 0);
    let ok = net.register_with_credentials(BOB, "bob", 3600);
    assert_eq!(code(&ok), 200);
    assert_eq!(net.proxy.counts().registrations, 1);
    net.set_state(SystemState::Draining);
    net.take_events();

    let refused = net.register_with_credentials(BOB, "bob", 3600);

    assert_eq!(code(&refused), 503);
    assert_eq!(net.proxy.counts().registrations, 0);
    let sent = net.peer(BOB).inbox.len();
    let dereg = net.received(CORE1, "REGISTER").pop().unwrap();
    assert!(
        dereg.starts_with("REGISTER sip:example.com SIP/2.0"),
        "{dereg}"
    );
    assert_eq!(header(&dereg, "Expires"), Some("0"));
    assert!(header(&dereg, "Contact").unwrap().contains("expires=0"));
    assert_eq!(header(&dereg, "Call-ID"), Some("reg-bob"));
    let cseq = header(&dereg, "CSeq").unwrap();
    let n: u32 = cseq.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(
        header(&dereg, "Authorization"),
        Some(digest("bob", n).as_str())
    );
    assert!(header(&dereg, "From").unwrap().contains("tag=ftag"));
    assert_eq!(
        dereg.lines().filter(|l| l.starts_with("Via:")).count(),
        1,
        "only the box's Via: {dereg}"
    );
    let stats = net.proxy.stats();
    assert_eq!((stats.own_final_2xx, stats.own_challenged), (1, 0));
    assert_eq!(
        own_answers(&net.take_events()),
        vec![("REGISTER".to_owned(), "sip:bob@example.com".to_owned(), 200)]
    );
    assert_eq!(
        net.peer(BOB).inbox.len(),
        sent,
        "the core's 200 is not relayed"
    );
}

#[test]
fn rule_05_a_challenge_to_a_deregistration_without_credentials_is_counted_and_not_retried() {
    let mut net = net();
    net.register(BOB, "bob", 3600);
    net.peer(CORE1).auth = RegistrarAuth::NonceReuse;
    net.set_state(SystemState::Draining);
    net.take_events();

    assert_eq!(code(&net.register(BOB, "bob", 3600)), 503);
    net.advance(Duration::from_secs(64));

    let registers = net.received(CORE1, "REGISTER");
    assert_eq!(registers.len(), 2, "the registration and one removal");
    assert_eq!(header(&registers[1], "Authorization"), None);
    let stats = net.proxy.stats();
    assert_eq!(
        (
            stats.own_final_4xx,
            stats.own_challenged,
            stats.own_timed_out
        ),
        (1, 1, 0)
    );
    assert_eq!(
        own_answers(&net.take_events()),
        vec![("REGISTER".to_owned(), "sip:bob@example.com".to_owned(), 401)]
    );
}

#[test]
fn rule_06_contacts_without_calls_leave_in_the_phones_register_with_its_credentials() {
    let mut net = net();
    net.peer(CORE1).auth = RegistrarAuth::NonceReuse;
    let register_both = |net: &mut Net, n: u32| {
        let req = Req::new("REGISTER", "sip:example.com", ALICE)
            .from("sip:alice@example.com")
            .to("sip:alice@example.com", None)
            .call_id("reg-alice-auth")
            .cseq(n)
            .header("Contact", &format!("<sip:alice@{ALICE}>;expires=3600"))
            .add_header("Contact", &format!("<sip:alice@{ALICE_2}>;expires=3600"))
            .add_header("Authorization", &digest("alice", n));
        net.inject(Realm::Access, ALICE, &req.bytes());
        last_response(net, ALICE)
    };
    assert_eq!(code(&register_both(&mut net, 1)), 200);
    call_from(&mut net, ALICE, "sip:alice@example.com", "r6auth");
    net.set_state(SystemState::Draining);

    let answer = register_both(&mut net, 2);

    assert_eq!(
        code(&answer),
        200,
        "the core accepted the phone's credentials"
    );
    let at_core = net.received(CORE1, "REGISTER").pop().unwrap();
    assert_eq!(
        header(&at_core, "Authorization"),
        Some(digest("alice", 2).as_str())
    );
    assert!(
        at_core.contains(&format!("<sip:alice@{ALICE_2}>;expires=0")),
        "{at_core}"
    );
    assert_eq!(net.proxy.counts().registrations, 1);
}

#[test]
fn rule_11_guard_deregistrations_carry_each_phones_last_credentials_and_next_cseq() {
    for (auth, expected) in [
        (RegistrarAuth::NonceReuse, 200),
        (RegistrarAuth::OneTimeNonce, 401),
    ] {
        let mut net = net();
        net.peer(CORE1).auth = auth;
        let mut last = Vec::new();
        for (phone, user) in [(ALICE, "alice"), (BOB, "bob")] {
            assert_eq!(code(&net.register_with_credentials(phone, user, 3600)), 200);
            let sent = net.received(CORE1, "REGISTER").pop().unwrap();
            last.push(sent);
        }
        net.set_state(SystemState::Draining);
        net.take_events();

        net.proxy.terminate_all(net.now, "node going offline");
        net.drive();

        let deregs: Vec<String> = net
            .received(CORE1, "REGISTER")
            .into_iter()
            .filter(|r| header(r, "Expires") == Some("0"))
            .collect();
        assert_eq!(deregs.len(), 2, "{auth:?}");
        for registered in &last {
            let call_id = header(registered, "Call-ID");
            let dereg = deregs
                .iter()
                .find(|d| header(d, "Call-ID") == call_id)
                .unwrap();
            assert_eq!(
                header(dereg, "Authorization"),
                header(registered, "Authorization")
            );
            let n = |m: &str| -> u32 {
                header(m, "CSeq")
                    .and_then(|c| c.split_whitespace().next())
                    .and_then(|c| c.parse().ok())
                    .unwrap()
            };
            assert_eq!(n(dereg), n(registered) + 1);
        }
        let mut answers = own_answers(&net.take_events());
        answers.sort();
        assert_eq!(
            answers,
            vec![
                (
                    "REGISTER".to_owned(),
                    "sip:alice@example.com".to_owned(),
                    expected
                ),
                (
                    "REGISTER".to_owned(),
                    "sip:bob@example.com".to_owned(),
                    expected
                ),
            ],
            "{auth:?}"
        );
        let stats = net.proxy.stats();
        let challenged = if expected == 401 { 2 } else { 0 };
        assert_eq!(stats.own_challenged, challenged, "{auth:?}");
        assert_eq!(net.proxy.counts(), crate::Counts::default());
    }
}

#[test]
fn a_request_of_the_box_that_gets_no_answer_is_counted_as_timed_out() {
    let mut net = net();
    net.register(BOB, "bob", 3600);
    net.peer(CORE1).register = 0;
    net.set_state(SystemState::Draining);
    net.take_events();

    net.register(BOB, "bob", 3600);
    net.advance(Duration::from_secs(40));

    assert_eq!(net.proxy.stats().own_timed_out, 1);
    assert!(net.events.contains(&Event::OwnRequestTimedOut {
        method: "REGISTER".to_owned(),
        aor: "sip:bob@example.com".to_owned(),
    }));
}

#[test]
fn rule_11_a_binding_keeps_no_credentials_larger_than_the_bound() {
    let mut net = net();
    net.peer(CORE1).auth = RegistrarAuth::NonceReuse;
    let huge = format!("Digest username=\"bob\", opaque=\"{}\"", "x".repeat(5000));
    let req = Req::new("REGISTER", "sip:example.com", BOB)
        .from("sip:bob@example.com")
        .to("sip:bob@example.com", None)
        .call_id("reg-bob-huge")
        .header("Contact", &format!("<sip:bob@{BOB}>;expires=3600"))
        .add_header("Authorization", &huge);
    net.inject(Realm::Access, BOB, &req.bytes());
    assert_eq!(net.proxy.counts().registrations, 1);
    net.set_state(SystemState::Draining);

    net.proxy.terminate_all(net.now, "node going offline");
    net.drive();

    let dereg = net.received(CORE1, "REGISTER").pop().unwrap();
    assert_eq!(header(&dereg, "Expires"), Some("0"));
    assert_eq!(header(&dereg, "Authorization"), None);
    assert_eq!(net.proxy.stats().own_challenged, 1);
}
