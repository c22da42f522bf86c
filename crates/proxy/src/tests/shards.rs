//! Shards (SPEC §6): several proxies of one box, each message handed to the shard its
//! Call-ID hashes to, and every change record of a shard applied on the others, as the
//! sharded daemon carries them. What must hold for the box as a whole holds here: a phone
//! registered through one shard is reached through every shard, the drain's REGISTER rules see
//! the calls of every shard, a binding leaves through one shard only, and what a shard sends
//! on its own is answered to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::harness::*;
use crate::events::Event;
use crate::msg::Message;
use crate::registrations::RemovalCause;
use crate::shard::Shards;
use crate::transport::{Input, ListenerId, Realm};
use crate::{Proxy, SystemState};

const ALICE: &str = "192.168.1.10:5060";
const BOB: &str = "192.168.1.20:5060";
const CORE1: &str = "10.1.0.10:5060";

/// The box as N shards on one simulated network and clock.
struct Box {
    shards: Vec<Proxy>,
    map: Shards,
    now: Instant,
    peers: HashMap<SocketAddr, Peer>,
    /// Events of each shard, in order.
    events: Vec<Vec<Event>>,
    /// Messages each shard was handed.
    handled: Vec<u64>,
    /// Everything sent, with the shard that sent it.
    sent: Vec<(usize, Vec<u8>)>,
    tag_counter: u32,
    cseq: u32,
}

impl Box {
    fn new(count: usize) -> Box {
        let now = Instant::now();
        let map = Shards::new(count, [11, 22, 33, 44]);
        let shards = (0..count)
            .map(|k| {
                let mut p = Proxy::new(config(), now);
                p.set_replication(false);
                p.set_shard(k, map.clone());
                p
            })
            .collect();
        let mut peers = HashMap::new();
        peers.insert(addr(CORE1), Peer::core());
        for phone in [ALICE, BOB] {
            peers.insert(addr(phone), Peer::phone());
        }
        Box {
            shards,
            map,
            now,
            peers,
            events: vec![Vec::new(); count],
            handled: vec![0; count],
            sent: Vec::new(),
            tag_counter: 0,
            cseq: 0,
        }
    }

    /// A Call-ID starting with `prefix` that hashes to shard `k`.
    fn call_id_on(&self, k: usize, prefix: &str) -> String {
        (0..)
            .map(|n| format!("{prefix}-{n}"))
            .find(|id| self.map.of_call_id(id) == k)
            .unwrap()
    }

    /// A message from `from` on the listener of `realm`, to the shard the box's reader would
    /// hand it to.
    fn inject(&mut self, realm: Realm, from: SocketAddr, bytes: &[u8]) {
        let listener = ListenerId(match realm {
            Realm::Access => 0,
            Realm::Core => 1,
        });
        self.deliver(listener, from, bytes);
        self.drive();
    }

    fn deliver(&mut self, listener: ListenerId, from: SocketAddr, bytes: &[u8]) {
        let k = self.map.of_message(bytes);
        self.handled[k] += 1;
        self.shards[k].handle_input(
            self.now,
            Input {
                listener,
                flow: None,
                source: from,
                bytes,
            },
        );
    }

    /// Until quiet: each shard's records to every other shard, each transmit to its peer and
    /// the peer's answers to the shard of their Call-ID.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            for k in 0..self.shards.len() {
                while let Some(e) = self.shards[k].poll_event() {
                    for other in (0..self.shards.len()).filter(|o| *o != k) {
                        match &e {
                            Event::Change(record) => {
                                self.shards[other].apply_peer_change(self.now, record.clone());
                            }
                            Event::Upstream(note) => {
                                self.shards[other].apply_peer_upstream(self.now, *note);
                            }
                            _ => continue,
                        }
                        busy = true;
                    }
                    self.events[k].push(e);
                }
                while let Some(t) = self.shards[k].poll_transmit() {
                    busy = true;
                    self.sent.push((k, t.bytes.clone()));
                    let Some(peer) = self.peers.get_mut(&t.destination) else {
                        continue;
                    };
                    peer.inbox.push(t.bytes.clone());
                    self.tag_counter += 1;
                    for reply in peer.react(&t.bytes, t.destination, self.tag_counter) {
                        self.deliver(t.listener, t.destination, &reply);
                    }
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the box does not settle");
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        loop {
            self.drive();
            let next = self.shards.iter().filter_map(Proxy::poll_timeout).min();
            match next {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    for s in &mut self.shards {
                        s.handle_timeout(self.now);
                    }
                }
                _ => break,
            }
        }
        self.now = target;
        for s in &mut self.shards {
            s.handle_timeout(self.now);
        }
        self.drive();
    }

    fn set_state(&mut self, state: SystemState) {
        for s in &mut self.shards {
            s.set_system_state(state);
        }
        self.drive();
    }

    fn received(&self, a: &str, prefix: &str) -> Vec<String> {
        self.peers[&addr(a)]
            .inbox
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .filter(|s| s.starts_with(prefix))
            .collect()
    }

    /// `user` registers from `phone` with a REGISTER whose Call-ID is `call_id`.
    fn register(&mut self, phone: &str, user: &str, call_id: &str, expires: u32) -> String {
        self.cseq += 1;
        let req = Req::new("REGISTER", "sip:example.com", phone)
            .from(&format!("sip:{user}@example.com"))
            .to(&format!("sip:{user}@example.com"), None)
            .call_id(call_id)
            .cseq(self.cseq)
            .header(
                "Contact",
                &format!("<sip:{user}@{phone}>;expires={expires}"),
            );
        self.inject(Realm::Access, addr(phone), &req.bytes());
        self.received(phone, "SIP/2.0").pop().unwrap_or_default()
    }

    /// The sessions and registrations of the box: sessions are each shard's own, bindings are
    /// held by every shard.
    fn sessions(&self) -> usize {
        self.shards.iter().map(|s| s.counts().active_sessions).sum()
    }
}

#[test]
fn a_phone_registered_through_one_shard_is_called_from_the_core_through_every_shard() {
    let mut sbc = Box::new(3);
    let reg = sbc.call_id_on(0, "reg-alice");
    assert_eq!(code(&sbc.register(ALICE, "alice", &reg, 3600)), 200);
    for s in &sbc.shards {
        assert_eq!(s.counts().registrations, 1, "every shard holds the binding");
    }
    for k in 0..3 {
        let call_id = sbc.call_id_on(k, "from-core");
        let invite = Req::new("INVITE", "sip:alice@example.com", CORE1).call_id(&call_id);
        let before = sbc.handled[k];
        sbc.inject(Realm::Core, addr(CORE1), &invite.bytes());
        assert!(sbc.handled[k] > before, "shard {k} handled its call");
        let at_phone = sbc.received(ALICE, "INVITE");
        assert!(
            at_phone.iter().any(|m| m.contains(&call_id)),
            "the call through shard {k} reached the phone"
        );
        let answered = sbc.received(CORE1, "SIP/2.0 200");
        assert!(
            answered.iter().any(|m| m.contains(&call_id)),
            "the phone's 200 came back to the core through shard {k}"
        );
        assert_eq!(sbc.shards[k].counts().active_sessions, 1);
    }
    assert_eq!(sbc.sessions(), 3);
    // Each shard keeps only its own call; the others only know of it.
    for s in &sbc.shards {
        assert_eq!(s.counts().active_sessions, 1);
        assert_eq!(s.registrations()[0].active_calls, 3);
        assert_eq!(s.calls().len(), 3, "show calls lists the box's calls");
    }
}

#[test]
fn the_drain_rules_for_register_see_the_calls_of_every_shard() {
    let mut sbc = Box::new(2);
    let reg = sbc.call_id_on(0, "reg-alice");
    sbc.register(ALICE, "alice", &reg, 3600);
    let bob_reg = sbc.call_id_on(0, "reg-bob");
    sbc.register(BOB, "bob", &bob_reg, 3600);
    // Alice's call goes to the other shard than her REGISTER.
    let call_id = sbc.call_id_on(1, "alice-call");
    let invite = Req::new("INVITE", "sip:+15550001@example.com", ALICE)
        .from("sip:alice@example.com")
        .call_id(&call_id);
    sbc.inject(Realm::Access, addr(ALICE), &invite.bytes());
    assert_eq!(sbc.shards[1].counts().active_sessions, 1);
    assert_eq!(sbc.shards[0].counts().active_sessions, 0);
    sbc.set_state(SystemState::Draining);

    // Rule 4 on shard 0: her refresh is accepted with the lowered expiry.
    let answer = sbc.register(ALICE, "alice", &reg, 3600);
    assert_eq!(code(&answer), 200, "{answer}");
    assert!(
        header(&answer, "Contact").unwrap().contains("expires=60"),
        "{answer}"
    );
    for s in &sbc.shards {
        let alice = s
            .registrations()
            .into_iter()
            .find(|r| r.aor.contains("alice"))
            .unwrap();
        assert_eq!(
            alice.expires_in_secs, 60,
            "the lowered expiry on every shard"
        );
    }

    // Rule 5 for Bob, in no call anywhere: rejected, removed on every shard, de-registered
    // once at the core.
    let answer = sbc.register(BOB, "bob", &bob_reg, 3600);
    assert_eq!(code(&answer), 503, "{answer}");
    for s in &sbc.shards {
        assert_eq!(s.counts().registrations, 1, "only alice is left");
    }
    let deregs: Vec<String> = sbc
        .received(CORE1, "REGISTER")
        .into_iter()
        .filter(|r| header(r, "Expires") == Some("0"))
        .collect();
    assert_eq!(deregs.len(), 1, "{deregs:#?}");
}

#[test]
fn each_binding_expires_and_is_deregistered_through_one_shard_only() {
    let mut sbc = Box::new(3);
    let phones: Vec<String> = (0..30).map(|n| format!("192.168.2.{n}:5060")).collect();
    for (n, phone) in phones.iter().enumerate() {
        sbc.peers.insert(addr(phone), Peer::phone());
        let expires = if n % 2 == 0 { 60 } else { 3600 };
        sbc.register(phone, &format!("u{n}"), &format!("reg-u{n}"), expires);
    }
    for s in &sbc.shards {
        assert_eq!(s.counts().registrations, 30);
    }
    for e in &mut sbc.events {
        e.clear();
    }
    sbc.advance(Duration::from_secs(61));
    let removed: Vec<usize> = sbc
        .events
        .iter()
        .map(|events| {
            events
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Event::RegistrationRemoved {
                            cause: RemovalCause::Expired,
                            ..
                        }
                    )
                })
                .count()
        })
        .collect();
    assert_eq!(
        removed.iter().sum::<usize>(),
        15,
        "one removal each: {removed:?}"
    );
    for s in &sbc.shards {
        assert_eq!(s.counts().registrations, 15);
    }
    // The guard: each remaining binding de-registered once, by its own shard.
    let before = sbc.received(CORE1, "REGISTER").len();
    sbc.set_state(SystemState::Draining);
    let now = sbc.now;
    for s in &mut sbc.shards {
        s.terminate_all(now, "node going offline");
    }
    sbc.drive();
    let deregs = sbc.received(CORE1, "REGISTER").len() - before;
    assert_eq!(deregs, 15);
    let answered: u64 = sbc.shards.iter().map(|s| s.stats().own_final_2xx).sum();
    assert_eq!(
        answered, 15,
        "every de-registration's answer came to its sender"
    );
    for s in &sbc.shards {
        assert_eq!(s.counts(), crate::Counts::default());
        assert_eq!(s.stats().stray_responses, 0);
    }
}

#[test]
fn shard_0_probes_for_the_box_and_every_shard_follows_the_rotation() {
    let mut sbc = Box::new(3);
    sbc.advance(Duration::from_secs(125));
    let sent_by = |sbc: &Box, method: &str| -> Vec<usize> {
        sbc.sent
            .iter()
            .filter(|(_, b)| Message::parse(b).is_ok_and(|m| m.method().as_str() == method))
            .map(|(k, _)| *k)
            .collect()
    };
    let probes = sent_by(&sbc, "OPTIONS");
    assert!(probes.len() >= 3, "{probes:?}");
    assert!(
        probes.iter().all(|k| *k == 0),
        "only shard 0 probes: {probes:?}"
    );
    for s in &sbc.shards {
        assert_eq!(
            s.stats().stray_responses,
            0,
            "every answer came to its prober"
        );
    }

    // The upstream refuses a call on shard 2 with a Retry-After: out of rotation everywhere,
    // so a call on shard 1 meets no upstream instead of trying it.
    sbc.peers.get_mut(&addr(CORE1)).unwrap().invite = CoreInvite::Reject(503, Some(30));
    sbc.peers.get_mut(&addr(CORE1)).unwrap().options = Some(503);
    let on_2 = sbc.call_id_on(2, "refused");
    let invite = Req::new("INVITE", "sip:+15550001@example.com", ALICE).call_id(&on_2);
    sbc.inject(Realm::Access, addr(ALICE), &invite.bytes());
    for s in &sbc.shards {
        assert!(!s.upstreams()[0].in_rotation, "{:?}", s.upstreams());
    }
    let invites_before = sbc.received(CORE1, "INVITE").len();
    let on_1 = sbc.call_id_on(1, "while-out");
    let invite = Req::new("INVITE", "sip:+15550001@example.com", ALICE).call_id(&on_1);
    sbc.inject(Realm::Access, addr(ALICE), &invite.bytes());
    assert_eq!(
        sbc.received(CORE1, "INVITE").len(),
        invites_before,
        "not tried"
    );
    let outs: usize = sbc
        .events
        .iter()
        .flatten()
        .filter(|e| matches!(e, Event::UpstreamOut { .. }))
        .count();
    assert_eq!(outs, 1, "reported once, by the shard that saw the 503");

    // Healthy again: shard 0's probe after the Retry-After brings it back on every shard.
    sbc.peers.get_mut(&addr(CORE1)).unwrap().invite = CoreInvite::Answer;
    sbc.peers.get_mut(&addr(CORE1)).unwrap().options = Some(200);
    sbc.advance(Duration::from_secs(29));
    assert!(
        !sbc.shards[1].upstreams()[0].in_rotation,
        "not before its Retry-After"
    );
    sbc.advance(Duration::from_secs(2));
    for s in &sbc.shards {
        assert!(s.upstreams()[0].in_rotation, "{:?}", s.upstreams());
    }
    assert!(sent_by(&sbc, "OPTIONS").iter().all(|k| *k == 0));
}
