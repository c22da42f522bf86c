//! SPEC §1a on the simulated network: no relay, responses only from where the request went, no
//! amplification, bounded tables, capped Retry-After. Each test is named for the rule.

use std::time::Duration;

use super::harness::*;
use crate::msg::Message;
use crate::transport::Realm;
use crate::{Config, Proxy};

const PHONE: &str = "192.168.1.10:5060";
const ATTACKER: &str = "192.168.1.66:5060";
const CORE1: &str = "10.1.0.10:5060";
const THIRD_PARTY: &str = "127.0.0.9:39999";

fn sent_to(net: &Net, a: &str) -> usize {
    let a = addr(a);
    net.lost.iter().filter(|(d, _)| *d == a).count()
        + net.peers.get(&a).map_or(0, |p| p.inbox.len())
}

#[test]
fn no_relay_an_unknown_dialog_with_our_route_gets_481_and_goes_nowhere() {
    let mut net = Net::standard();
    net.add_phone(ATTACKER);
    for method in ["MESSAGE", "INVITE", "BYE", "OPTIONS", "NOTIFY", "ACK"] {
        let req = Req::new(method, &format!("sip:x@{THIRD_PARTY}"), ATTACKER)
            .to(&format!("sip:x@{THIRD_PARTY}"), Some("1"))
            .call_id(&format!("relay-{method}"))
            .add_header("Route", &format!("<sip:{ACCESS};lr>"));
        net.inject(Realm::Access, ATTACKER, &req.bytes());
    }
    net.advance(Duration::from_secs(40));
    assert_eq!(sent_to(&net, THIRD_PARTY), 0, "{:?}", net.lost);
    let answers = net.received(ATTACKER, "SIP/2.0");
    // One 481 per request that has a response (ACK has none).
    assert_eq!(answers.len(), 5, "{answers:?}");
    assert!(answers.iter().all(|a| code(a) == 481));
    assert_eq!(net.proxy.stats().unknown_dialog, 6);
}

#[test]
fn no_relay_a_route_entry_with_a_forged_or_borrowed_token_is_not_enough() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.add_phone(ATTACKER);
    net.call_out(PHONE, "real-call");
    let routes = route_set(&net.received(CORE1, "INVITE").pop().unwrap());
    // The same signed routes on another Call-ID: the signature does not hold.
    let mut req = Req::new("MESSAGE", &format!("sip:x@{THIRD_PARTY}"), ATTACKER)
        .to("sip:x@example.com", Some("1"))
        .call_id("another-call");
    for r in &routes {
        req = req.add_header("Route", r);
    }
    net.inject(Realm::Access, ATTACKER, &req.bytes());
    assert_eq!(sent_to(&net, THIRD_PARTY), 0);
    assert_eq!(code(&net.received(ATTACKER, "SIP/2.0").pop().unwrap()), 481);
}

#[test]
fn a_dialog_the_table_lost_still_passes_on_its_signed_route_to_the_signed_party_only() {
    let cfg = Config {
        keys: crate::Keys {
            route: [9; 32],
            seed: [1; 32],
        },
        ..config()
    };
    let mut net = Net::new(cfg.clone());
    net.add_phone(PHONE);
    let invite = net.call_out(PHONE, "c-lost");
    let ok = net.received(PHONE, "SIP/2.0").pop().unwrap();
    assert_eq!(code(&ok), 200);
    let to_tag = Message::parse(ok.as_bytes())
        .unwrap()
        .to()
        .unwrap()
        .tag()
        .unwrap()
        .to_owned();
    // A restarted engine with the same route key and no dialog records.
    net.proxy = Proxy::new(cfg, net.now);
    let mut bye = invite
        .clone()
        .method("BYE")
        .cseq(2)
        .to("sip:+15550001@example.com", Some(&to_tag));
    bye.uri = format!("sip:callee@{THIRD_PARTY}");
    // The route set the phone learnt (the core echoes the Record-Route it got).
    for r in route_set(&net.received(CORE1, "INVITE").pop().unwrap()) {
        bye = bye.add_header("Route", &r);
    }
    net.inject(Realm::Access, PHONE, &bye.bytes());
    assert_eq!(
        sent_to(&net, THIRD_PARTY),
        0,
        "the request URI chooses nothing"
    );
    assert_eq!(
        net.received(CORE1, "BYE").len(),
        1,
        "the signed core party gets it"
    );
    // The request URI is the phone's to choose only within the dialog it belongs to.
    let answer = net.received(PHONE, "SIP/2.0").pop().unwrap();
    assert_eq!(code(&answer), 200, "{answer}");
}

#[test]
fn forged_responses_from_elsewhere_change_nothing() {
    let mut cfg = config();
    cfg.upstreams = vec![crate::UpstreamConfig::from_uri(&format!("sip:{CORE1}"), 1).unwrap()];
    let mut net = Net::new(cfg);
    net.add_phone(PHONE);
    net.add_phone(ATTACKER);
    // The registrar never answers: the REGISTER's transaction stays open.
    net.peer(CORE1).register = 0;
    let register = Req::new("REGISTER", "sip:example.com", ATTACKER)
        .from("sip:victim@example.com")
        .to("sip:victim@example.com", None)
        .call_id("reg-victim")
        .header("Contact", &format!("<sip:victim@{ATTACKER}>"));
    net.inject(Realm::Access, ATTACKER, &register.bytes());
    let at_core = net.received(CORE1, "REGISTER").pop().unwrap();
    // The attacker forges the registrar's 200 (knowing even the branch) from its own address.
    let forged = at_core
        .replacen("REGISTER sip:example.com SIP/2.0", "SIP/2.0 200 OK", 1)
        .replace(
            "To: <sip:victim@example.com>",
            "To: <sip:victim@example.com>;tag=x",
        );
    net.inject(Realm::Core, ATTACKER, forged.as_bytes());
    assert!(
        net.proxy.registrations().is_empty(),
        "no binding from a forged 200"
    );
    // And a forged 503 with a huge Retry-After for a call's attempt.
    net.peer(CORE1).invite = CoreInvite::Ring;
    net.call_out(PHONE, "c-forge");
    let invite = net.received(CORE1, "INVITE").pop().unwrap();
    let forged = invite
        .replacen(
            "INVITE sip:+15550001@example.com SIP/2.0",
            "SIP/2.0 503 Service Unavailable\r\nRetry-After: 4294967295",
            1,
        )
        .replace(
            "To: <sip:+15550001@example.com>",
            "To: <sip:+15550001@example.com>;tag=y",
        );
    net.inject(Realm::Core, ATTACKER, forged.as_bytes());
    assert!(
        net.proxy.upstreams().iter().all(|u| u.in_rotation),
        "{:?}",
        net.proxy.upstreams()
    );
    assert!(net.proxy.stats().spoofed >= 2);
}

#[test]
fn an_upstream_retry_after_is_capped() {
    let mut cfg = config();
    cfg.upstreams = vec![crate::UpstreamConfig::from_uri(&format!("sip:{CORE1}"), 1).unwrap()];
    cfg.limits.max_retry_after = Duration::from_secs(3600);
    let mut net = Net::new(cfg);
    net.add_phone(PHONE);
    net.peer(CORE1).invite = CoreInvite::Reject(503, Some(u32::MAX));
    net.call_out(PHONE, "c-cap");
    let info = net.proxy.upstreams();
    assert!(!info[0].in_rotation);
    let wait = info[0].back_in_secs.unwrap();
    assert!(wait <= 3600, "{wait}");
}

#[test]
fn no_amplification_a_rejected_invite_gets_one_answer_and_no_retransmission() {
    let mut net = Net::standard();
    net.add_phone(ATTACKER);
    let req = Req::new("INVITE", "sip:+15550001@example.com", ATTACKER)
        .call_id("amp")
        .header("Max-Forwards", "0");
    let bytes = String::from_utf8(req.bytes())
        .unwrap()
        .replace("Max-Forwards: 70\r\n", "");
    net.inject(Realm::Access, ATTACKER, bytes.as_bytes());
    net.advance(Duration::from_secs(40));
    let answers = net.received(ATTACKER, "SIP/2.0");
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(code(&answers[0]), 483);
    assert_eq!(net.proxy.stats().server_transactions, 0);
    // Its retransmission gets the same answer, with the same To tag; its ACK ends quietly.
    net.inject(Realm::Access, ATTACKER, bytes.as_bytes());
    let answers = net.received(ATTACKER, "SIP/2.0");
    assert_eq!(answers.len(), 2);
    assert_eq!(header(&answers[0], "To"), header(&answers[1], "To"));
    let tag = header(&answers[0], "To")
        .unwrap()
        .split("tag=")
        .nth(1)
        .unwrap();
    let ack = req
        .clone()
        .method("ACK")
        .to("sip:+15550001@example.com", Some(tag));
    let ack = String::from_utf8(ack.bytes())
        .unwrap()
        .replace(&ack.branch, &req.branch);
    net.inject(Realm::Access, ATTACKER, ack.as_bytes());
    assert_eq!(net.proxy.stats().unknown_dialog, 0);
}

#[test]
fn a_retransmission_from_another_source_gets_nothing() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.add_phone(ATTACKER);
    net.peer("10.1.0.10:5060").invite = CoreInvite::Ring;
    let req = net.call_out(PHONE, "c-retx");
    let before = net.received(PHONE, "SIP/2.0").len();
    // Same branch and sent-by, other source address.
    net.inject(Realm::Access, ATTACKER, &req.bytes());
    assert_eq!(net.received(PHONE, "SIP/2.0").len(), before);
    assert!(net.received(ATTACKER, "SIP/2.0").is_empty());
    assert_eq!(net.proxy.stats().spoofed, 1);
}

#[test]
fn one_source_gets_its_request_rate_and_the_rest_is_dropped() {
    let mut cfg = config();
    cfg.limits.per_source_rps = 20;
    let mut net = Net::new(cfg);
    net.add_phone(ATTACKER);
    for i in 0..100 {
        let req = Req::new("OPTIONS", &format!("sip:{ACCESS}"), ATTACKER).call_id(&format!("o{i}"));
        net.inject(Realm::Access, ATTACKER, &req.bytes());
    }
    assert_eq!(net.received(ATTACKER, "SIP/2.0").len(), 20);
    assert_eq!(net.proxy.stats().rate_limited, 80);
    net.advance(Duration::from_secs(1));
    let req = Req::new("OPTIONS", &format!("sip:{ACCESS}"), ATTACKER).call_id("later");
    net.inject(Realm::Access, ATTACKER, &req.bytes());
    assert_eq!(net.received(ATTACKER, "SIP/2.0").len(), 21);
}

#[test]
fn at_the_dialog_cap_a_new_call_gets_503_and_established_calls_go_on() {
    let mut cfg = config();
    cfg.limits.max_dialogs = 2;
    let mut net = Net::new(cfg);
    net.add_phone(PHONE);
    net.call_out(PHONE, "c1");
    net.call_out(PHONE, "c2");
    net.call_out(PHONE, "c3");
    let codes: Vec<u16> = net
        .received(PHONE, "SIP/2.0")
        .iter()
        .map(|r| code(r))
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 2, "{codes:?}");
    assert_eq!(codes.last(), Some(&503));
    assert_eq!(net.proxy.stats().cap_rejected, 1);
    assert_eq!(net.proxy.stats().cap_rejected_dialogs, 1);
    assert_eq!(net.proxy.counts().confirmed, 2);
}

#[test]
fn at_the_transaction_cap_new_requests_get_503_in_dialog_ones_pass() {
    let mut cfg = config();
    cfg.limits.max_transactions = 3;
    let mut net = Net::new(cfg);
    net.add_phone(PHONE);
    net.peer("10.1.0.10:5060").invite = CoreInvite::Ring;
    for i in 0..3 {
        net.call_out(PHONE, &format!("ring{i}"));
    }
    let codes: Vec<u16> = net
        .received(PHONE, "SIP/2.0")
        .iter()
        .map(|r| code(r))
        .collect();
    assert_eq!(codes.last(), Some(&503), "{codes:?}");
    assert!(net.proxy.stats().cap_rejected >= 1);
    assert_eq!(
        net.proxy.stats().cap_rejected_transactions,
        net.proxy.stats().cap_rejected
    );
}

#[test]
fn at_the_binding_cap_a_new_aor_gets_503_and_a_refresh_passes() {
    let mut cfg = config();
    cfg.limits.max_bindings = 1;
    let mut net = Net::new(cfg);
    net.add_phone(PHONE);
    assert_eq!(code(&net.register(PHONE, "alice", 600)), 200);
    assert_eq!(code(&net.register(PHONE, "bob", 600)), 503);
    assert_eq!(code(&net.register(PHONE, "alice", 600)), 200);
    assert_eq!(net.proxy.registrations().len(), 1);
    let stats = net.proxy.stats();
    assert_eq!(
        (stats.cap_rejected, stats.cap_rejected_bindings),
        (1, 1),
        "{stats:?}"
    );
}

#[test]
fn branch_ids_and_tags_carry_64_unpredictable_bits() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.call_out(PHONE, "b1");
    net.call_out(PHONE, "b2");
    let branches: Vec<String> = net
        .received("10.1.0.10:5060", "INVITE")
        .iter()
        .map(|m| {
            let via = header(m, "Via").unwrap();
            via.split("branch=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let tail = |b: &str| b.rsplit('.').next().unwrap().to_owned();
    assert_eq!(tail(&branches[0]).len(), 16);
    assert_ne!(tail(&branches[0]), tail(&branches[1]));
    // Two nodes with different seeds do not share a sequence.
    let a = tail(&branches[0]);
    let mut other = Net::new(Config {
        keys: crate::Keys {
            route: [0; 32],
            seed: [5; 32],
        },
        ..config()
    });
    other.add_phone(PHONE);
    other.call_out(PHONE, "b1");
    let b = other.received("10.1.0.10:5060", "INVITE").pop().unwrap();
    assert!(!b.contains(&a));
}

#[test]
fn the_transactions_held_never_exceed_the_cap() {
    // A forwarded request holds a server and a client transaction: admitting it with one slot
    // left put the table one over its cap (found by the engine fuzz target).
    let mut cfg = config();
    cfg.limits.max_transactions = 3;
    let mut net = Net::new(cfg);
    net.add_phone(PHONE);
    net.peer("10.1.0.10:5060").invite = CoreInvite::Ring;
    for i in 0..3 {
        net.call_out(PHONE, &format!("held{i}"));
        let s = net.proxy.stats();
        assert!(
            s.server_transactions + s.client_transactions <= 3,
            "after call {i}: {s:?}"
        );
    }
    assert!(net.proxy.stats().cap_rejected >= 1);
}

#[test]
fn a_repeated_cancel_goes_upstream_once() {
    // CANCEL is answered statelessly, so a retransmitted (or repeated) CANCEL is a new request
    // each time; it must not open a new CANCEL transaction toward the callee each time (found
    // by the engine fuzz target: 10 CANCELs upstream for one INVITE, outside the cap).
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.peer("10.1.0.10:5060").invite = CoreInvite::Ring;
    let invite = net.call_out(PHONE, "c-cancel");
    let cancel = invite.clone().method("CANCEL").bytes();
    for _ in 0..5 {
        net.inject(Realm::Access, PHONE, &cancel);
    }
    let answers = net.received(PHONE, "SIP/2.0 200");
    assert_eq!(answers.len(), 5, "each CANCEL is answered: {answers:?}");
    assert_eq!(net.received("10.1.0.10:5060", "CANCEL").len(), 1);
    let s = net.proxy.stats();
    assert!(s.client_transactions <= 2, "{s:?}");
}
