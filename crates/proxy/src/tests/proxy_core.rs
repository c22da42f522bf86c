//! The proxy core without a drain: calls, routing, registrations, upstreams, robustness.

use std::time::Duration;

use super::harness::*;
use crate::events::{ChangeRecord, Event};
use crate::msg::Message;
use crate::transport::Realm;
use crate::{Config, Proxy, UpstreamConfig};

const PHONE: &str = "192.168.1.10:5060";
const CORE1: &str = "10.1.0.10:5060";
const CORE2: &str = "10.1.0.11:5060";

fn two_upstreams(p1: u32, p2: u32) -> Net {
    let mut cfg = config();
    cfg.upstreams = vec![
        UpstreamConfig::from_uri(&format!("sip:{CORE1}"), p1).unwrap(),
        UpstreamConfig::from_uri(&format!("sip:{CORE2}"), p2).unwrap(),
    ];
    let mut net = Net::new(cfg);
    net.add_phone(PHONE);
    net
}

#[test]
fn call_is_record_routed_twice_and_bye_follows_the_dialog() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    let invite = net.call_out(PHONE, "c1");
    let at_core = net.received(CORE1, "INVITE");
    assert_eq!(at_core.len(), 1);
    let rr = Message::parse(at_core[0].as_bytes())
        .unwrap()
        .list("record-route")
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    // The outgoing entry carries the signed token (SPEC §1a, §7); the other is plain.
    assert_eq!(rr.len(), 2);
    assert!(rr[0].starts_with(&format!("<sip:{CORE};lr;sbc=")), "{rr:?}");
    assert_eq!(rr[1], format!("<sip:{ACCESS};lr>"));
    assert_eq!(header(&at_core[0], "Max-Forwards"), Some("69"));
    let top_via = header(&at_core[0], "Via").unwrap();
    assert!(top_via.contains(CORE), "{top_via}");
    assert!(at_core[0].contains("received=192.168.1.10") || at_core[0].contains("rport=5060"));

    let responses = net.received(PHONE, "SIP/2.0");
    let codes: Vec<u16> = responses.iter().map(|r| code(r)).collect();
    assert_eq!(codes, vec![100, 180, 200]);
    assert_eq!(net.proxy.counts().confirmed, 1);
    // The 180 and the 200 were relayed (the 100 is the proxy's own), each under its class.
    let stats = net.proxy.stats();
    assert_eq!((stats.relayed_1xx, stats.relayed_2xx), (1, 1), "{stats:?}");
    assert_eq!(stats.relayed_4xx + stats.relayed_5xx, 0);
    let ok = responses[2].clone();
    assert!(
        !header(&ok, "Via").unwrap().contains(CORE),
        "our Via is gone"
    );

    // ACK and BYE from the phone along the route set.
    let to_tag = Message::parse(ok.as_bytes())
        .unwrap()
        .to()
        .unwrap()
        .tag()
        .unwrap()
        .to_owned();
    let routes = route_set(&ok);
    let mut ack = invite
        .clone()
        .method("ACK")
        .to("sip:+15550001@example.com", Some(&to_tag))
        .branch("z9hG4bKack1");
    ack.uri = format!("sip:peer@{CORE1}");
    for r in &routes {
        ack = ack.add_header("Route", r);
    }
    net.inject(Realm::Access, PHONE, &ack.bytes());
    let acks = net.received(CORE1, "ACK");
    assert_eq!(acks.len(), 1);
    assert!(
        header(&acks[0], "Route").is_none(),
        "our Route entries are removed"
    );

    let mut bye = ack.clone().method("BYE").cseq(2);
    bye.uri = format!("sip:peer@{CORE1}");
    net.inject(Realm::Access, PHONE, &bye.bytes());
    assert_eq!(net.received(CORE1, "BYE").len(), 1);
    assert_eq!(code(&net.received(PHONE, "SIP/2.0").pop().unwrap()), 200);
    assert_eq!(net.proxy.counts().active_sessions, 0);
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::CallEnded { .. })));
}

#[test]
fn registration_is_cached_from_the_core_2xx_and_core_calls_reach_the_contact() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    let answer = net.register(PHONE, "bob", 600);
    assert_eq!(code(&answer), 200);
    assert_eq!(net.received(CORE1, "REGISTER").len(), 1);
    let regs = net.proxy.registrations();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].aor, "sip:bob@example.com");
    assert_eq!(regs[0].expires_in_secs, 600);

    let invite = Req::new("INVITE", "sip:bob@example.com", CORE1)
        .from("sip:carol@example.net")
        .call_id("in1");
    net.inject(Realm::Core, CORE1, &invite.bytes());
    let at_phone = net.received(PHONE, "INVITE");
    assert_eq!(at_phone.len(), 1);
    assert!(at_phone[0].starts_with(&format!("INVITE sip:bob@{PHONE} SIP/2.0")));
    assert_eq!(code(&net.received(CORE1, "SIP/2.0").pop().unwrap()), 200);
}

#[test]
fn unknown_aor_gets_404_and_expired_aor_gets_480() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.register(PHONE, "bob", 60);
    let unknown = Req::new("INVITE", "sip:nobody@example.com", CORE1).call_id("u1");
    net.inject(Realm::Core, CORE1, &unknown.bytes());
    assert_eq!(code(&net.received(CORE1, "SIP/2.0").pop().unwrap()), 404);
    net.advance(Duration::from_secs(61));
    assert_eq!(net.proxy.counts().registrations, 0);
    let expired = Req::new("INVITE", "sip:bob@example.com", CORE1).call_id("u2");
    net.inject(Realm::Core, CORE1, &expired.bytes());
    assert_eq!(code(&net.received(CORE1, "SIP/2.0").pop().unwrap()), 480);
}

#[test]
fn upstream_503_with_retry_after_takes_it_out_and_the_call_goes_to_the_next() {
    let mut net = two_upstreams(1, 2);
    net.peer(CORE1).invite = CoreInvite::Reject(503, Some(120));
    net.call_out(PHONE, "f1");
    assert_eq!(net.received(CORE2, "INVITE").len(), 1);
    assert_eq!(code(&net.received(PHONE, "SIP/2.0").pop().unwrap()), 200);
    assert!(net.events.iter().any(|e| matches!(
        e,
        Event::UpstreamOut {
            retry_after_secs: Some(120),
            ..
        }
    )));
    // The next call skips CORE1 altogether.
    net.call_out(PHONE, "f2");
    assert_eq!(net.received(CORE1, "INVITE").len(), 1);
    assert_eq!(net.received(CORE2, "INVITE").len(), 2);
    assert!(!net.proxy.upstreams()[0].in_rotation);
}

#[test]
fn upstream_503_without_retry_after_fails_that_attempt_only() {
    let mut net = two_upstreams(1, 2);
    net.peer(CORE1).invite = CoreInvite::Reject(503, None);
    net.call_out(PHONE, "g1");
    assert_eq!(net.received(CORE2, "INVITE").len(), 1);
    assert!(net.proxy.upstreams()[0].in_rotation);
    net.call_out(PHONE, "g2");
    assert_eq!(net.received(CORE1, "INVITE").len(), 2);
}

#[test]
fn no_provisional_within_upstream_timeout_tries_the_next_upstream() {
    let mut net = two_upstreams(1, 2);
    net.peer(CORE1).invite = CoreInvite::Silent;
    net.call_out(PHONE, "h1");
    assert_eq!(net.received(CORE2, "INVITE").len(), 0);
    net.advance(Duration::from_millis(1999));
    assert_eq!(net.received(CORE2, "INVITE").len(), 0);
    net.advance(Duration::from_millis(1));
    assert_eq!(net.received(CORE2, "INVITE").len(), 1);
    assert_eq!(code(&net.received(PHONE, "SIP/2.0").pop().unwrap()), 200);
}

#[test]
fn equal_priorities_share_calls_round_robin() {
    let mut net = two_upstreams(1, 1);
    for i in 0..4 {
        net.call_out(PHONE, &format!("rr{i}"));
    }
    assert_eq!(net.received(CORE1, "INVITE").len(), 2);
    assert_eq!(net.received(CORE2, "INVITE").len(), 2);
}

#[test]
fn all_upstreams_out_gives_503_with_the_shortest_wait() {
    let mut net = two_upstreams(1, 2);
    net.peer(CORE1).invite = CoreInvite::Reject(503, Some(300));
    net.peer(CORE2).invite = CoreInvite::Reject(503, Some(30));
    net.call_out(PHONE, "d1");
    let answer = net.received(PHONE, "SIP/2.0").pop().unwrap();
    assert_eq!(code(&answer), 503);
    assert_eq!(header(&answer, "Retry-After"), Some("30"));
    net.advance(Duration::from_secs(10));
    net.call_out(PHONE, "d2");
    let answer = net.received(PHONE, "SIP/2.0").pop().unwrap();
    assert_eq!(header(&answer, "Retry-After"), Some("20"));
}

#[test]
fn probes_put_an_upstream_back_and_a_late_one_is_reported() {
    let mut net = two_upstreams(1, 2);
    net.peer(CORE1).invite = CoreInvite::Reject(503, Some(30));
    net.call_out(PHONE, "p1");
    net.peer(CORE1).options = None;
    // Probes go to everyone every probe interval (10 s).
    net.advance(Duration::from_secs(10));
    assert_eq!(net.received(CORE2, "OPTIONS").len(), 1);
    assert_eq!(
        net.received(CORE1, "OPTIONS").len(),
        0,
        "not before its Retry-After"
    );
    net.advance(Duration::from_secs(20));
    assert_eq!(net.received(CORE1, "OPTIONS").len(), 1);
    net.advance(Duration::from_secs(3));
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::UpstreamLate { .. })));
    net.peer(CORE1).options = Some(200);
    net.advance(Duration::from_secs(10));
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::UpstreamBack { .. })));
    assert!(net.proxy.upstreams()[0].in_rotation);
    // show upstreams: the probe that brought it back, aged to the moment of asking even
    // though the proxy has seen nothing since.
    let probe = |info: &[crate::UpstreamInfo]| info[0].last_probe.map(|p| (p.ago_ms, p.answer));
    let at_probe = probe(&net.proxy.upstreams()).map(|(ago, _)| ago);
    let later = probe(&net.proxy.upstreams_at(net.now + Duration::from_secs(20)));
    assert_eq!(
        later,
        at_probe.map(|ago| (ago + 20_000, crate::ProbeAnswer::Code(200)))
    );
}

#[test]
fn a_silent_upstream_in_rotation_is_noticed_by_its_probe_and_the_one_sent_at_once_after() {
    let mut net = two_upstreams(1, 2);
    net.peer(CORE1).options = None;
    // Probed at 10 s, silent until 12 s, asked again at once: still in rotation till 14 s.
    net.advance(Duration::from_secs(13));
    assert!(net.proxy.upstreams()[0].in_rotation);
    net.advance(Duration::from_secs(2));
    assert!(!net.proxy.upstreams()[0].in_rotation);
    net.call_out(PHONE, "s1");
    assert_eq!(net.received(CORE1, "INVITE").len(), 0);
    assert_eq!(net.received(CORE2, "INVITE").len(), 1);
}

#[test]
fn max_forwards_zero_gets_483_and_a_loop_gets_482() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    let req = Req::new("INVITE", "sip:x@example.com", PHONE)
        .call_id("mf")
        .header("Max-Forwards", "0");
    let text = String::from_utf8(req.bytes())
        .unwrap()
        .replacen("Max-Forwards: 70\r\n", "", 1);
    net.inject(Realm::Access, PHONE, text.as_bytes());
    assert_eq!(code(&net.received(PHONE, "SIP/2.0").pop().unwrap()), 483);

    // A misrouting network hands our own INVITE back to the side it first came in on.
    net.peer(CORE1).invite = CoreInvite::Silent;
    net.call_out(PHONE, "loop");
    let forwarded = net.received(CORE1, "INVITE").pop().unwrap();
    net.add_phone(CORE1);
    net.inject(Realm::Access, CORE1, forwarded.as_bytes());
    assert_eq!(code(&net.received(CORE1, "SIP/2.0").pop().unwrap()), 482);
    assert_eq!(net.proxy.stats().loops, 1);
}

#[test]
fn a_call_between_two_phones_spirals_through_the_core_without_a_loop() {
    const BOB: &str = "192.168.1.20:5060";
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.add_phone(BOB);
    net.register(BOB, "bob", 3600);
    net.peer(CORE1).invite = CoreInvite::Silent;
    let invite = Req::new("INVITE", "sip:bob@example.com", PHONE).call_id("spiral");
    net.inject(Realm::Access, PHONE, &invite.bytes());
    // The core routes it back to us for bob, same request URI, same tags.
    let forwarded = net.received(CORE1, "INVITE").pop().unwrap();
    net.inject(Realm::Core, CORE1, forwarded.as_bytes());
    assert_eq!(net.received(BOB, "INVITE").len(), 1);
    assert_eq!(net.proxy.stats().loops, 0);
    assert_eq!(
        net.proxy.counts().active_sessions,
        2,
        "one session per pass"
    );
    // Bob's 200 goes back to the core, which hands it to us for the first pass.
    let ok = net
        .received(CORE1, "SIP/2.0 200")
        .pop()
        .expect("bob's answer reaches the core");
    net.inject(Realm::Core, CORE1, ok.as_bytes());
    assert_eq!(code(&net.received(PHONE, "SIP/2.0").pop().unwrap()), 200);
    assert_eq!(net.proxy.counts().confirmed, 2);
}

#[test]
fn tcp_flows_are_kept_for_replies_and_for_requests_to_registered_contacts() {
    use crate::transport::{FlowId, Input, ListenerId, Transport};
    let mut cfg = config();
    cfg.listeners.push(crate::ListenerConfig {
        realm: Realm::Access,
        transport: Transport::Tcp,
        addr: addr("10.0.0.1:5061"),
    });
    let mut net = Net::new(cfg);
    let phone = addr("192.168.1.30:40000");
    let register = Req::new("REGISTER", "sip:example.com", "192.168.1.30:40000")
        .from("sip:dan@example.com")
        .to("sip:dan@example.com", None)
        .call_id("tcp-reg")
        .header("Contact", "<sip:dan@192.168.1.30:40000;transport=tcp>");
    let text = String::from_utf8(register.bytes())
        .unwrap()
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    net.proxy.handle_input(
        net.now,
        Input {
            listener: ListenerId(2),
            flow: Some(FlowId(7)),
            source: phone,
            bytes: text.as_bytes(),
        },
    );
    net.drive();
    // The core's 200 went back on connection 7 (the harness records nothing for unknown peers).
    let reply = net
        .lost
        .iter()
        .find(|(to, _)| *to == phone)
        .expect("a reply to the phone");
    assert!(String::from_utf8_lossy(&reply.1).starts_with("SIP/2.0 200"));
    assert_eq!(net.proxy.registrations()[0].transport, Transport::Tcp);
    let invite = Req::new("INVITE", "sip:dan@example.com", CORE1).call_id("tcp-in");
    net.proxy.handle_input(
        net.now,
        Input {
            listener: ListenerId(1),
            flow: None,
            source: addr(CORE1),
            bytes: &invite.bytes(),
        },
    );
    let mut out = None;
    while let Some(t) = net.proxy.poll_transmit() {
        if t.destination == phone {
            out = Some(t);
        }
    }
    let out = out.expect("INVITE to the phone");
    assert_eq!(
        (out.listener, out.transport, out.flow),
        (ListenerId(2), Transport::Tcp, Some(FlowId(7)))
    );
    assert!(String::from_utf8_lossy(&out.bytes).contains("SIP/2.0/TCP 10.0.0.1:5061"));
    let rr = String::from_utf8_lossy(&out.bytes)
        .lines()
        .filter(|l| l.starts_with("Record-Route"))
        .count();
    assert_eq!(rr, 2);
    // The connection drops: the binding stays, the next message asks for a new connection.
    net.proxy
        .handle_flow_closed(net.now, ListenerId(2), FlowId(7));
    let message = Req::new("MESSAGE", "sip:dan@example.com", CORE1).call_id("tcp-msg");
    net.proxy.handle_input(
        net.now,
        Input {
            listener: ListenerId(1),
            flow: None,
            source: addr(CORE1),
            bytes: &message.bytes(),
        },
    );
    let mut out = None;
    while let Some(t) = net.proxy.poll_transmit() {
        if t.destination == phone {
            out = Some(t);
        }
    }
    assert_eq!(out.expect("MESSAGE to the phone").flow, None);
}

#[test]
fn cancel_before_answer_reaches_the_core_and_ends_the_session() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.peer(CORE1).invite = CoreInvite::Ring;
    let invite = net.call_out(PHONE, "cx");
    assert_eq!(net.proxy.counts().early, 1);
    let cancel = invite.clone().method("CANCEL");
    net.inject(Realm::Access, PHONE, &cancel.bytes());
    assert_eq!(net.received(CORE1, "CANCEL").len(), 1);
    // The core answers 487 to the INVITE.
    let inv = net.received(CORE1, "INVITE").pop().unwrap();
    let m = Message::parse(inv.as_bytes()).unwrap();
    let r487 = crate::msg::response_to(&m, 487, Some("t"), &[]);
    net.inject(Realm::Core, CORE1, &r487);
    let codes: Vec<u16> = net
        .received(PHONE, "SIP/2.0")
        .iter()
        .map(|r| code(r))
        .collect();
    assert!(codes.contains(&487), "{codes:?}");
    assert_eq!(
        net.received(CORE1, "ACK").len(),
        1,
        "the proxy ACKs the 487 hop by hop"
    );
    assert_eq!(net.proxy.counts().active_sessions, 0);
}

#[test]
fn invite_retransmission_gets_the_last_response_and_udp_requests_are_retransmitted() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.peer(CORE1).invite = CoreInvite::Silent;
    let invite = net.call_out(PHONE, "rt");
    net.advance(Duration::from_millis(500));
    assert_eq!(net.received(CORE1, "INVITE").len(), 2, "timer A");
    net.inject(Realm::Access, PHONE, &invite.bytes());
    let trying: Vec<_> = net.received(PHONE, "SIP/2.0 100").into_iter().collect();
    assert_eq!(trying.len(), 2);
}

#[test]
fn malformed_requests_get_400_and_garbage_is_dropped_and_counted() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    let bad = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKb\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: one INVITE\r\n\r\n";
    net.inject(Realm::Access, PHONE, bad.as_bytes());
    assert_eq!(code(&net.received(PHONE, "SIP/2.0").pop().unwrap()), 400);
    net.inject(Realm::Access, PHONE, b"\x00\x01garbage");
    assert_eq!(net.proxy.stats().malformed_dropped, 1);
    assert_eq!(net.proxy.stats().bad_requests, 1);
}

#[test]
fn no_input_makes_the_proxy_panic() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    let base = Req::new("INVITE", "sip:x@example.com", PHONE)
        .call_id("fz")
        .bytes();
    // Every truncation and a spread of single-byte corruptions of a valid message.
    for cut in 0..base.len() {
        net.inject(Realm::Access, PHONE, &base[..cut]);
        net.inject(Realm::Core, CORE1, &base[..cut]);
    }
    let mut seed: u32 = 7;
    for i in 0..2000 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let mut bytes = base.clone();
        let at = (seed as usize >> 4) % bytes.len();
        bytes[at] = (seed >> 24) as u8;
        let realm = if i % 2 == 0 {
            Realm::Access
        } else {
            Realm::Core
        };
        net.inject(realm, PHONE, &bytes);
    }
    net.advance(Duration::from_secs(120));
}

#[test]
fn change_records_serialise_and_rebuild_the_state_on_a_twin() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.register(PHONE, "bob", 600);
    net.call_out(PHONE, "tw");
    let records: Vec<ChangeRecord> = net
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Change(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert!(records.len() >= 3);
    let wire = serde_json::to_string(&records).unwrap();
    let back: Vec<ChangeRecord> = serde_json::from_str(&wire).unwrap();
    let mut twin = Proxy::new(
        Config {
            node_name: "sbc-b".into(),
            ..config()
        },
        net.now,
    );
    for r in back {
        twin.apply_change(net.now, r).unwrap();
    }
    assert_eq!(twin.counts(), net.proxy.counts());
    assert_eq!(twin.registrations(), net.proxy.registrations());
    assert_eq!(twin.calls(), net.proxy.calls());
}

#[test]
fn without_replication_no_change_records_and_the_same_calls() {
    let mut net = Net::standard();
    net.proxy.set_replication(false);
    net.add_phone(PHONE);
    net.register(PHONE, "bob", 600);
    net.call_out(PHONE, "norep");
    assert!(!net.events.iter().any(|e| matches!(e, Event::Change(_))));
    assert_eq!(net.proxy.counts().active_sessions, 1);
    assert_eq!(
        net.proxy.calls()[0].state,
        crate::dialogs::DialogState::Confirmed
    );
    assert_eq!(net.proxy.registrations().len(), 1);
}

#[test]
fn snapshots_serialise() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.register(PHONE, "bob", 600);
    net.call_out(PHONE, "sn");
    assert!(serde_json::to_string(&net.proxy.calls())
        .unwrap()
        .contains("sn"));
    assert!(serde_json::to_string(&net.proxy.registrations())
        .unwrap()
        .contains("bob"));
    assert!(serde_json::to_string(&net.proxy.upstreams())
        .unwrap()
        .contains("10.1.0.10"));
    assert!(serde_json::to_string(&net.proxy.stats())
        .unwrap()
        .contains("received"));
}

#[test]
fn bye_from_the_core_side_reaches_the_phone_and_ends_the_call() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.call_out(PHONE, "cb");
    let ok = net.received(PHONE, "SIP/2.0 200").pop().unwrap();
    let m = Message::parse(ok.as_bytes()).unwrap();
    let callee_tag = m.to().unwrap().tag().unwrap().to_owned();
    // The callee hangs up: From carries its tag, To the caller's.
    let mut bye = Req::new("BYE", &format!("sip:alice@{PHONE}"), CORE1)
        .from("sip:+15550001@example.com")
        .to("sip:alice@example.com", Some("ftag"))
        .call_id("cb")
        .cseq(1)
        .header("Route", &format!("<sip:{CORE};lr>"))
        .add_header("Route", &format!("<sip:{ACCESS};lr>"));
    bye.from_tag = callee_tag;
    net.inject(Realm::Core, CORE1, &bye.bytes());
    let at_phone = net.received(PHONE, "BYE");
    assert_eq!(at_phone.len(), 1);
    assert!(header(&at_phone[0], "Route").is_none());
    assert_eq!(code(&net.received(CORE1, "SIP/2.0").pop().unwrap()), 200);
    assert_eq!(net.proxy.counts().active_sessions, 0);
}

#[test]
fn in_dialog_request_for_an_unknown_dialog_gets_481_and_core_register_gets_403() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    let stray = Req::new("BYE", "sip:someone@example.com", PHONE)
        .to("sip:x@example.com", Some("nope"))
        .call_id("none");
    net.inject(Realm::Access, PHONE, &stray.bytes());
    assert_eq!(code(&net.received(PHONE, "SIP/2.0").pop().unwrap()), 481);
    let reg = Req::new("REGISTER", "sip:example.com", CORE1).call_id("core-reg");
    net.inject(Realm::Core, CORE1, &reg.bytes());
    assert_eq!(code(&net.received(CORE1, "SIP/2.0").pop().unwrap()), 403);
}

#[test]
fn timer_c_cancels_a_call_that_rings_forever() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.peer(CORE1).invite = CoreInvite::Ring;
    net.call_out(PHONE, "tc");
    net.advance(Duration::from_secs(180));
    assert!(net.received(CORE1, "CANCEL").is_empty());
    net.advance(Duration::from_secs(1));
    assert_eq!(net.received(CORE1, "CANCEL").len(), 1);
    assert_eq!(code(&net.received(PHONE, "SIP/2.0").pop().unwrap()), 408);
    assert_eq!(net.proxy.counts().active_sessions, 0);
}

#[test]
fn unanswered_final_response_is_retransmitted_until_the_ack() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.peer(CORE1).invite = CoreInvite::Reject(486, None);
    net.peer(PHONE).register = 200;
    net.call_out(PHONE, "g");
    assert_eq!(net.received(PHONE, "SIP/2.0 486").len(), 1);
    // The phone never ACKs: timer G resends at 0.5, 1.5, 3.5 s...
    net.advance(Duration::from_millis(3600));
    assert_eq!(net.received(PHONE, "SIP/2.0 486").len(), 4);
    // ... until timer H gives up; then nothing more.
    net.advance(Duration::from_secs(40));
    let total = net.received(PHONE, "SIP/2.0 486").len();
    net.advance(Duration::from_secs(40));
    assert_eq!(net.received(PHONE, "SIP/2.0 486").len(), total);
}

#[test]
fn finished_work_leaves_no_transactions_behind() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.register(PHONE, "bob", 3600);
    net.call_out(PHONE, "lk1");
    net.peer(CORE1).invite = CoreInvite::Reject(486, None);
    let rejected = net.call_out(PHONE, "lk2");
    let ack = rejected.clone().method("ACK");
    net.inject(Realm::Access, PHONE, &ack.bytes());
    let options = Req::new("OPTIONS", &format!("sip:{ACCESS}"), PHONE).call_id("lk3");
    net.inject(Realm::Access, PHONE, &options.bytes());
    net.advance(Duration::from_secs(64));
    let stats = net.proxy.stats();
    assert_eq!(
        (stats.server_transactions, stats.client_transactions),
        (0, 0),
        "{stats:?}"
    );
}

#[test]
fn subscribe_dialogs_are_routed_by_our_record_route_and_strangers_are_not_relayed() {
    const BOB: &str = "192.168.1.20:5060";
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.add_phone(BOB);
    net.register(BOB, "bob", 3600);
    // A SUBSCRIBE from the core to bob is record-routed.
    let subscribe = Req::new("SUBSCRIBE", "sip:bob@example.com", CORE1)
        .from("sip:presence@example.com")
        .call_id("sub1")
        .add_header("Event", "presence");
    net.inject(Realm::Core, CORE1, &subscribe.bytes());
    let at_bob = net.received(BOB, "SUBSCRIBE").pop().unwrap();
    let m = Message::parse(at_bob.as_bytes()).unwrap();
    let routes: Vec<String> = m
        .list("record-route")
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(routes.len(), 2);
    // Bob's NOTIFY follows the route set (UAS: Record-Route in order) back to the core.
    let mut notify = Req::new("NOTIFY", &format!("sip:presence@{CORE1}"), BOB)
        .from("sip:bob@example.com")
        .to("sip:presence@example.com", Some("ftag"))
        .call_id("sub1")
        .add_header("Event", "presence");
    notify.from_tag = "bobtag".into();
    for r in &routes {
        notify = notify.add_header("Route", r);
    }
    net.inject(Realm::Access, BOB, &notify.bytes());
    assert_eq!(net.received(CORE1, "NOTIFY").len(), 1);
    assert_eq!(code(&net.received(BOB, "SIP/2.0").pop().unwrap()), 200);
    // A request with a To tag that we never routed is not relayed anywhere.
    let stranger = Req::new("MESSAGE", &format!("sip:x@{CORE1}"), PHONE)
        .to("sip:x@example.com", Some("t"))
        .call_id("relay");
    net.inject(Realm::Access, PHONE, &stranger.bytes());
    assert_eq!(code(&net.received(PHONE, "SIP/2.0").pop().unwrap()), 481);
    assert!(net.received(CORE1, "MESSAGE").is_empty());
}

#[test]
fn an_sctp_upstream_that_asks_for_time_loses_its_association_until_the_time_has_passed() {
    let mut cfg = config();
    cfg.listeners[1].transport = crate::Transport::Sctp;
    cfg.upstreams = [CORE1, CORE2]
        .iter()
        .zip([1, 2])
        .map(|(core, priority)| {
            UpstreamConfig::from_uri(&format!("sip:{core};transport=sctp"), priority).unwrap()
        })
        .collect();
    let mut net = Net::new(cfg);
    net.add_phone(PHONE);
    net.peer(CORE1).invite = CoreInvite::Reject(503, Some(120));

    net.call_out(PHONE, "s1");
    assert_eq!(net.received(CORE2, "INVITE").len(), 1, "the call went on");
    assert_eq!(
        net.closed,
        [addr(CORE1)],
        "the association to the upstream that asked for time is shut"
    );
    assert_eq!(net.proxy.stats().upstream_associations_shut, 1);

    // Calls and probes meanwhile open nothing toward it.
    net.call_out(PHONE, "s2");
    net.advance(Duration::from_secs(119));
    let opened_to = |net: &Net, core: &str| net.opened.iter().filter(|a| **a == addr(core)).count();
    assert_eq!(
        opened_to(&net, CORE1),
        1,
        "no new association before the time"
    );
    assert_eq!(net.received(CORE2, "INVITE").len(), 2);

    // Once the time has passed, a probe opens one again and finds it well.
    net.peer(CORE1).invite = CoreInvite::Answer;
    net.advance(Duration::from_secs(60));
    assert_eq!(opened_to(&net, CORE1), 2);
    assert!(!net.received(CORE1, "OPTIONS").is_empty());
    assert!(net.proxy.upstreams()[0].in_rotation);
}

#[test]
fn a_udp_upstream_that_asks_for_time_has_nothing_to_shut() {
    let mut net = two_upstreams(1, 2);
    net.peer(CORE1).invite = CoreInvite::Reject(503, Some(120));
    net.call_out(PHONE, "u1");
    assert!(net.closed.is_empty());
    assert_eq!(net.proxy.stats().upstream_associations_shut, 0);
}

#[test]
fn a_buffer_given_back_carries_the_next_message_written() {
    let mut net = Net::standard();
    let mut buffer = Vec::with_capacity(1024);
    buffer.extend_from_slice(b"what was sent before");
    let at = buffer.as_ptr();
    net.proxy.recycle(buffer);
    // An OPTIONS to the box is answered at once: the answer is written into that buffer.
    let answer = answer_options(&mut net, "recycled");
    assert_eq!(answer.bytes.as_ptr(), at);
    assert!(answer.bytes.starts_with(b"SIP/2.0 200"), "{answer:?}");
    assert!(net.proxy.poll_transmit().is_none());
}

#[test]
fn a_buffer_far_larger_than_the_message_is_not_what_it_is_written_into() {
    let mut net = Net::standard();
    net.proxy.recycle(Vec::with_capacity(16 * 1024));
    // What is written may be kept for 32 s by a transaction: not in 16 KB of room. (Not told
    // by its address: the allocator may hand the freed block's start out again.)
    let answer = answer_options(&mut net, "not-recycled");
    assert!(
        answer.bytes.capacity() < 2048,
        "{}",
        answer.bytes.capacity()
    );
}

/// An OPTIONS to the box from the phone, and the answer the box sends at once.
fn answer_options(net: &mut Net, call_id: &str) -> crate::Transmit {
    let req = Req::new("OPTIONS", &format!("sip:{ACCESS}"), PHONE).call_id(call_id);
    net.proxy.handle_input(
        net.now,
        crate::Input {
            listener: crate::ListenerId(0),
            flow: None,
            source: addr(PHONE),
            bytes: &req.bytes(),
        },
    );
    net.proxy.poll_transmit().unwrap()
}

#[test]
fn a_finished_transaction_is_forgotten_by_the_next_message_and_wakes_nobody_on_time() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.register(PHONE, "bob", 3600);
    let stats = net.proxy.stats();
    assert_eq!(
        (stats.server_transactions, stats.client_transactions),
        (1, 1)
    );
    // The REGISTER's client transaction absorbs retransmitted answers for T4 (timer K), its
    // server transaction retransmitted requests for 64*T1 (timer J): neither is reason to wake
    // the box on time.
    let k = net.now + Duration::from_secs(5);
    let woken = net.proxy.poll_timeout().expect("timers are armed");
    assert!(woken > k, "the proxy asks to be woken at timer K");
    assert!(
        woken <= k + Duration::from_secs(1),
        "timer K waits more than its slack"
    );
    // Any message after timer K ends the client transaction, as if it had fired on time.
    net.now += Duration::from_millis(5500);
    let options = Req::new("OPTIONS", "sip:example.com", PHONE).call_id("lazy-1");
    net.inject(Realm::Access, PHONE, &options.bytes());
    let stats = net.proxy.stats();
    assert_eq!(
        stats.server_transactions, 2,
        "the REGISTER's and the OPTIONS'"
    );
    assert_eq!(
        stats.client_transactions, 1,
        "timer K fired: the OPTIONS' only"
    );
    // With nothing arriving, the table's deadlines still fire when asked.
    net.advance(Duration::from_secs(64));
    let stats = net.proxy.stats();
    assert_eq!(
        (stats.server_transactions, stats.client_transactions),
        (0, 0)
    );
}
