//! SPEC §7 hot standby, as far as the proxy goes: what its records carry (no connection
//! numbers, dialog ages), what a received record must pass, a standby that lets nothing
//! expire, the dialogs it learns from its signed routes, and a switchover's pause.

use std::time::Duration;

use super::harness::*;
use crate::dialogs::DialogRecordChange;
use crate::events::{ChangeRecord, Event};
use crate::msg::Message;
use crate::registrations::BindingChange;
use crate::replication::{RecordError, MAX_BINDING_LIFE};
use crate::transport::{FlowId, Input, ListenerId, Realm};
use crate::{Config, Proxy};

const PHONE: &str = "192.168.1.10:5060";
const CORE1: &str = "10.1.0.10:5060";

fn records(net: &Net) -> Vec<ChangeRecord> {
    net.events
        .iter()
        .filter_map(|e| match e {
            Event::Change(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn twin_of(net: &Net) -> Proxy {
    Proxy::new(
        Config {
            node_name: "sbc-b".into(),
            ..config()
        },
        net.now,
    )
}

#[test]
fn records_name_parties_by_address_and_the_twin_opens_its_own_connection() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    // A REGISTER that came over connection 7 of the access listener.
    let req = Req::new("REGISTER", "sip:example.com", PHONE)
        .from("sip:bob@example.com")
        .to("sip:bob@example.com", None)
        .call_id("reg-bob")
        .header("Contact", &format!("<sip:bob@{PHONE}>;expires=600"));
    let bytes = req.bytes();
    net.proxy.handle_input(
        net.now,
        Input {
            listener: ListenerId(0),
            flow: Some(FlowId(7)),
            source: addr(PHONE),
            bytes: &bytes,
        },
    );
    net.drive();
    let recs = records(&net);
    let wire = serde_json::to_string(&recs).unwrap();
    assert!(!wire.contains("\"flow\""), "{wire}");
    let mut twin = twin_of(&net);
    for r in recs {
        twin.apply_change(net.now, r).unwrap();
    }
    // The twin reaches the phone by address: a new connection, never the sender's number 7.
    let invite = Req::new("INVITE", "sip:bob@example.com", CORE1)
        .from("sip:carol@example.com")
        .call_id("to-bob");
    let bytes = invite.bytes();
    twin.handle_input(
        net.now,
        Input {
            listener: ListenerId(1),
            flow: None,
            source: addr(CORE1),
            bytes: &bytes,
        },
    );
    let mut to_phone = Vec::new();
    while let Some(t) = twin.poll_transmit() {
        if t.destination == addr(PHONE) {
            to_phone.push(t);
        }
    }
    assert_eq!(to_phone.len(), 1, "the INVITE reaches bob through the twin");
    assert_eq!(to_phone[0].flow, None);
}

#[test]
fn a_dialog_keeps_its_age_on_the_twin() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.call_out(PHONE, "aged");
    net.advance(Duration::from_secs(90));
    let mut twin = twin_of(&net);
    for r in net.proxy.full_sync() {
        twin.apply_change(net.now, r).unwrap();
    }
    let calls = twin.calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].age_secs >= 90, "{calls:?}");
    assert_eq!(calls, net.proxy.calls());
}

#[test]
fn a_record_that_does_not_fit_this_node_changes_nothing() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.register(PHONE, "bob", 600);
    net.call_out(PHONE, "bad");
    let sync = net.proxy.full_sync();
    let binding = sync
        .iter()
        .find(|r| matches!(r, ChangeRecord::Binding(_)))
        .unwrap()
        .clone();
    let dialog = sync
        .iter()
        .find(|r| matches!(r, ChangeRecord::Dialog(_)))
        .unwrap()
        .clone();
    let mut twin = twin_of(&net);

    let mut r = binding.clone();
    if let ChangeRecord::Binding(BindingChange::Upsert(b)) = &mut r {
        b.peer.listener = ListenerId(9);
    }
    assert_eq!(twin.apply_change(net.now, r), Err(RecordError::Listener(9)));

    let mut r = binding.clone();
    if let ChangeRecord::Binding(BindingChange::Upsert(b)) = &mut r {
        b.peer.transport = crate::Transport::Tcp;
    }
    assert_eq!(
        twin.apply_change(net.now, r),
        Err(RecordError::Transport(0))
    );

    let mut r = dialog.clone();
    if let ChangeRecord::Dialog(DialogRecordChange::Upsert(d)) = &mut r {
        d.caller.route = vec!["<sip:x>".into(); 17];
    }
    assert!(matches!(
        twin.apply_change(net.now, r),
        Err(RecordError::TooMany { .. })
    ));

    let mut r = dialog.clone();
    if let ChangeRecord::Dialog(DialogRecordChange::Upsert(d)) = &mut r {
        d.callee.uri = "x".repeat(5000).into();
    }
    assert!(matches!(
        twin.apply_change(net.now, r),
        Err(RecordError::TooLong { .. })
    ));
    assert_eq!(twin.counts(), crate::Counts::default(), "nothing applied");

    // A binding valid for a year is kept for at most a week.
    let mut r = binding;
    if let ChangeRecord::Binding(BindingChange::Upsert(b)) = &mut r {
        b.expires_in_ms = 365 * 24 * 3600 * 1000;
    }
    twin.apply_change(net.now, r).unwrap();
    let left = twin.registrations()[0].expires_in_secs;
    assert!(left <= MAX_BINDING_LIFE.as_secs(), "{left}");
}

#[test]
fn a_standby_lets_no_binding_expire_until_it_is_active() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.register(PHONE, "bob", 60);
    let mut twin = twin_of(&net);
    twin.set_standby(true);
    for r in net.proxy.full_sync() {
        twin.apply_change(net.now, r).unwrap();
    }
    let mut now = net.now;
    // Its deadline does not include the binding's expiry: nothing to do there.
    assert!(twin
        .poll_timeout()
        .is_none_or(|t| t > now + Duration::from_secs(120)));
    now += Duration::from_secs(120);
    twin.handle_timeout(now);
    assert_eq!(
        twin.counts().registrations,
        1,
        "the active removes it, not us"
    );
    while twin.poll_event().is_some() {}
    twin.set_standby(false);
    twin.handle_timeout(now);
    assert_eq!(twin.counts().registrations, 0, "active: it lapsed");
    let events: Vec<Event> = std::iter::from_fn(|| twin.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Change(ChangeRecord::Binding(BindingChange::Remove { .. }))
    )));
}

#[test]
fn a_request_of_a_dialog_only_the_twin_knew_is_learnt_from_the_signed_route() {
    let cfg = Config {
        keys: crate::Keys {
            route: [5; 32],
            seed: [1; 32],
        },
        ..config()
    };
    let mut net = Net::new(cfg.clone());
    net.add_phone(PHONE);
    let invite = net.call_out(PHONE, "c-twin");
    let (to_tag, routes) = answered(&net);
    // The twin, sharing the route key, never heard of the call.
    net.proxy = Proxy::new(
        Config {
            node_name: "sbc-b".into(),
            ..cfg
        },
        net.now,
    );
    let mut reinvite = invite
        .clone()
        .cseq(2)
        .to("sip:+15550001@example.com", Some(&to_tag))
        .branch("z9hG4bK-re");
    for r in &routes {
        reinvite = reinvite.add_header("Route", r);
    }
    net.inject(Realm::Access, PHONE, &reinvite.bytes());
    assert_eq!(
        net.received(CORE1, "INVITE").len(),
        2,
        "the re-INVITE passes"
    );
    assert_eq!(net.proxy.stats().dialogs_learnt, 1);
    assert_eq!(net.proxy.counts().confirmed, 1, "and the call counts");
    let mut bye = invite
        .method("BYE")
        .cseq(3)
        .to("sip:+15550001@example.com", Some(&to_tag))
        .branch("z9hG4bK-bye");
    for r in &routes {
        bye = bye.add_header("Route", r);
    }
    net.inject(Realm::Access, PHONE, &bye.bytes());
    assert_eq!(net.received(CORE1, "BYE").len(), 1);
    assert_eq!(code(&net.received(PHONE, "SIP/2.0").pop().unwrap()), 200);
    assert_eq!(net.proxy.counts().active_sessions, 0, "the BYE ended it");
}

#[test]
fn while_quiesced_no_new_transaction_starts_and_what_runs_goes_on() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.proxy.set_quiesced(true);
    net.call_out(PHONE, "held");
    assert!(net.received(CORE1, "INVITE").is_empty());
    assert!(
        net.received(PHONE, "SIP/2.0").is_empty(),
        "no answer at all"
    );
    assert_eq!(net.proxy.stats().switchover_held, 1);
    net.proxy.set_quiesced(false);
    net.call_out(PHONE, "after");
    assert_eq!(net.received(CORE1, "INVITE").len(), 1);
}

#[test]
fn a_node_that_becomes_standby_hands_its_transactions_over_without_a_word() {
    let mut net = Net::standard();
    net.add_phone(PHONE);
    net.peer(CORE1).invite = CoreInvite::Ring;
    net.call_out(PHONE, "ringing");
    assert_eq!(net.proxy.forwards_in_flight(), 1, "the INVITE rings");
    let answers_before = net.received(PHONE, "SIP/2.0").len();
    let sent_before = net.proxy.stats().sent;
    net.proxy.set_standby(true);
    assert_eq!(net.proxy.forwards_in_flight(), 0);
    assert!(net.proxy.stats().transactions_handed_over >= 1);
    // Past timer C and every transaction timer: the standby says nothing from addresses that
    // are its twin's now (no 408 or 503 to the phone, no CANCEL or retransmission upstream).
    net.advance(Duration::from_secs(400));
    assert_eq!(net.received(PHONE, "SIP/2.0").len(), answers_before);
    assert_eq!(net.proxy.stats().sent, sent_before);
    // A request still reaching it starts nothing: its retransmission reaches the twin.
    net.call_out(PHONE, "late");
    assert_eq!(net.received(CORE1, "INVITE").len(), 1);
    assert_eq!(net.received(PHONE, "SIP/2.0").len(), answers_before);
    assert_eq!(net.proxy.stats().standby_dropped, 1);
    // Active again, it serves.
    net.proxy.set_standby(false);
    net.peer(CORE1).invite = CoreInvite::Answer;
    net.call_out(PHONE, "active-again");
    assert_eq!(net.received(CORE1, "INVITE").len(), 2);
}

#[test]
fn the_twin_relays_the_2xx_of_an_invite_it_did_not_send_and_confirms_the_call() {
    // Both nodes share a branch scope, as a twin pair does.
    let cfg = Config {
        branch_scope: Some("pair".into()),
        ..config()
    };
    let mut net = Net::new(cfg.clone());
    net.add_phone(PHONE);
    net.peer(CORE1).invite = CoreInvite::Ring;
    net.call_out(PHONE, "handed-over");
    let early: Vec<ChangeRecord> = net.proxy.full_sync();
    let invite = net.received(CORE1, "INVITE").pop().unwrap();
    // The twin takes over with the early dialog; the core's 200 arrives there.
    let mut twin = Proxy::new(
        Config {
            node_name: "sbc-b".into(),
            ..cfg
        },
        net.now,
    );
    for r in early {
        twin.apply_change(net.now, r).unwrap();
    }
    let msg = Message::parse(invite.as_bytes()).unwrap();
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for v in msg.list("via") {
        ok.push_str(&format!("Via: {v}\r\n"));
    }
    for r in msg.list("record-route") {
        ok.push_str(&format!("Record-Route: {r}\r\n"));
    }
    ok.push_str(&format!(
        "From: {}\r\nTo: {};tag=callee\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:callee@10.1.0.10>\r\nContent-Length: 0\r\n\r\n",
        msg.header("from").unwrap(),
        msg.header("to").unwrap(),
        msg.call_id().unwrap()
    ));
    twin.handle_input(
        net.now,
        Input {
            listener: ListenerId(1),
            flow: None,
            source: addr(CORE1),
            bytes: ok.as_bytes(),
        },
    );
    let out: Vec<_> = std::iter::from_fn(|| twin.poll_transmit()).collect();
    assert!(
        out.iter()
            .any(|t| t.destination == addr(PHONE) && t.bytes.starts_with(b"SIP/2.0 200")),
        "{out:?}"
    );
    assert_eq!(twin.counts().confirmed, 1);
}

/// The to-tag of the core's answer to `invite` and the Route set for requests in its dialog.
fn answered(net: &Net) -> (String, Vec<String>) {
    let ok = net.received(PHONE, "SIP/2.0").pop().unwrap();
    assert_eq!(code(&ok), 200);
    let to_tag = Message::parse(ok.as_bytes())
        .unwrap()
        .to()
        .unwrap()
        .tag()
        .unwrap()
        .to_owned();
    let routes = route_set(&net.received(CORE1, "INVITE").pop().unwrap());
    (to_tag, routes)
}

fn in_dialog(invite: &Req, method: &str, cseq: u32, to_tag: &str, routes: &[String]) -> Vec<u8> {
    let mut req = invite
        .clone()
        .method(method)
        .cseq(cseq)
        .to("sip:+15550001@example.com", Some(to_tag))
        .branch(&format!("z9hG4bK-{method}-{cseq}"));
    for r in routes {
        req = req.add_header("Route", r);
    }
    req.bytes()
}

fn idle_config(idle: Duration) -> Config {
    let mut cfg = config();
    cfg.limits.dialog_idle = Some(idle);
    cfg
}

#[test]
fn a_session_with_no_request_for_the_idle_time_is_forgotten_and_its_bye_still_passes() {
    // A BYE lost on the way would hold the session for as long as the box runs.
    let mut net = Net::new(idle_config(Duration::from_secs(60)));
    net.add_phone(PHONE);
    let invite = net.call_out(PHONE, "idle-1");
    let (to_tag, routes) = answered(&net);
    assert_eq!(net.proxy.counts().confirmed, 1);

    // A request in it at 30 s: idle from then, not from the INVITE.
    net.advance(Duration::from_secs(30));
    net.inject(
        Realm::Access,
        PHONE,
        &in_dialog(&invite, "INVITE", 2, &to_tag, &routes),
    );
    assert_eq!(net.received(CORE1, "INVITE").len(), 2);
    net.advance(Duration::from_secs(55));
    assert_eq!(net.proxy.counts().confirmed, 1, "active 55 s ago: kept");
    assert_eq!(net.proxy.stats().dialogs_idle_forgotten, 0);

    net.advance(Duration::from_secs(10));
    assert_eq!(
        net.proxy.counts().active_sessions,
        0,
        "idle 65 s: forgotten"
    );
    assert_eq!(net.proxy.stats().dialogs_idle_forgotten, 1);
    assert!(net.events.iter().any(|e| matches!(
        e,
        Event::CallEnded {
            cause: crate::events::CallEndCause::Idle,
            ..
        }
    )));
    assert!(
        net.received(CORE1, "BYE").is_empty() && net.received(PHONE, "BYE").is_empty(),
        "forgetting sends nothing"
    );

    // The BYE that comes after all still goes through, on the signed Record-Route.
    net.inject(
        Realm::Access,
        PHONE,
        &in_dialog(&invite, "BYE", 3, &to_tag, &routes),
    );
    assert_eq!(net.received(CORE1, "BYE").len(), 1);
    assert_eq!(code(&net.received(PHONE, "SIP/2.0").pop().unwrap()), 200);
    assert_eq!(net.proxy.stats().unknown_dialog, 0);
}

#[test]
fn an_idle_session_is_the_active_twins_to_forget_and_a_zero_idle_time_keeps_it() {
    let mut net = Net::new(idle_config(Duration::from_secs(60)));
    net.add_phone(PHONE);
    net.call_out(PHONE, "idle-standby");
    assert_eq!(net.proxy.counts().confirmed, 1);
    net.proxy.set_standby(true);
    net.advance(Duration::from_secs(600));
    assert_eq!(net.proxy.counts().confirmed, 1, "a standby forgets nothing");
    // Active again: forgotten at its deadline, not before the next timeout.
    net.proxy.set_standby(false);
    net.advance(Duration::from_secs(1));
    assert_eq!(net.proxy.counts().confirmed, 0);

    let mut cfg = config();
    cfg.limits.dialog_idle = None;
    let mut net = Net::new(cfg);
    net.add_phone(PHONE);
    net.call_out(PHONE, "never");
    // Longer than the default's twelve hours (the probes every 10 s make each hour cost).
    net.advance(Duration::from_secs(13 * 3600));
    assert_eq!(net.proxy.counts().confirmed, 1, "no idle time: kept");
}
