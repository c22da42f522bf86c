//! The node as the hub of several shards (SPEC §6): its own proxy is shard 0, the others are
//! `Shard`s; messages go to the shard of their Call-ID, commands and reports are carried
//! between them as the daemon carries them. The drain and the guard hold for the box as a
//! whole.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proxy::{FlowId, Input, ListenerId, Realm, Shards};
use system_state::{Cause, SystemState};

use super::{
    addr, in_dialog_request, invite_request, message, register_ok, register_request, response,
    GUARD, PHONE, UPSTREAM,
};
use crate::shards::Shard;
use crate::{Event, Node};

struct Box {
    node: Node,
    shards: Vec<Shard>,
    map: Shards,
    now: Instant,
    sent: Vec<(usize, SocketAddr, String)>,
    /// The connection each of `sent` was to go over (`None`: open or reuse one).
    flows: Vec<Option<FlowId>>,
    /// The connection the phone's messages arrive on (`None`: datagrams).
    phone_flow: Option<FlowId>,
    events: Vec<Event>,
}

impl Box {
    fn new(count: usize) -> Box {
        let now = Instant::now();
        let map = Shards::new(count, [5, 6, 7, 8]);
        let config = super::Lab::new(SystemState::Online)
            .node
            .proxy()
            .config()
            .clone();
        let mut node = Node::new(config.clone(), SystemState::Online, GUARD, now);
        node.add_shards(now, map.clone());
        let shards = (1..count)
            .map(|k| Shard::new(config.clone(), k, map.clone(), SystemState::Online, now))
            .collect();
        let mut b = Box {
            node,
            shards,
            map,
            now,
            sent: Vec::new(),
            flows: Vec::new(),
            phone_flow: None,
            events: Vec::new(),
        };
        b.pump();
        b
    }

    fn call_id_on(&self, k: usize, prefix: &str) -> String {
        (0..)
            .map(|n| format!("{prefix}-{n}"))
            .find(|id| self.map.of_call_id(id) == k)
            .unwrap()
    }

    /// Carries commands, reports and transmits until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some((k, command)) = self.node.poll_shard_command() {
                moved = true;
                self.shards[k - 1].handle_command(self.now, command);
            }
            for (i, shard) in self.shards.iter_mut().enumerate() {
                while let Some(report) = shard.poll_report() {
                    moved = true;
                    self.node.handle_shard_report(self.now, i + 1, report);
                }
                while let Some(t) = shard.poll_transmit() {
                    let text = String::from_utf8_lossy(&t.bytes).into_owned();
                    self.sent.push((i + 1, t.destination, text));
                    self.flows.push(t.flow);
                }
                while shard.poll_event().is_some() {}
            }
            while let Some(t) = self.node.poll_transmit() {
                let text = String::from_utf8_lossy(&t.bytes).into_owned();
                self.sent.push((0, t.destination, text));
                self.flows.push(t.flow);
            }
            while let Some(e) = self.node.poll_event() {
                self.events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver(&mut self, realm: Realm, from: &str, text: &str) {
        let listener = ListenerId(match realm {
            Realm::Access => 0,
            Realm::Core => 1,
        });
        let input = Input {
            listener,
            flow: match realm {
                Realm::Access => self.phone_flow,
                Realm::Core => None,
            },
            source: addr(from),
            bytes: text.as_bytes(),
        };
        match self.map.of_message(text.as_bytes()) {
            0 => self.node.handle_input(self.now, input),
            k => self.shards[k - 1].handle_input(self.now, input),
        }
        self.pump();
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        loop {
            let next = std::iter::once(self.node.poll_timeout())
                .chain(self.shards.iter().map(Shard::poll_timeout))
                .flatten()
                .min();
            match next {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.tick();
                }
                _ => break,
            }
        }
        self.now = target;
        self.tick();
    }

    fn tick(&mut self) {
        self.node.handle_timeout(self.now);
        for s in &mut self.shards {
            s.handle_timeout(self.now);
        }
        self.pump();
    }

    fn last_to(&self, to: &str, prefix: &str, call_id: &str) -> String {
        self.sent
            .iter()
            .rev()
            .find(|(_, d, text)| {
                *d == addr(to) && text.starts_with(prefix) && text.contains(call_id)
            })
            .map(|(_, _, text)| text.clone())
            .unwrap_or_else(|| panic!("no {prefix:?} of {call_id} to {to}: {:#?}", self.sent))
    }

    /// The connections the messages to `to` starting with `prefix` were to go over.
    fn flows_to(&self, to: &str, prefix: &str) -> Vec<Option<FlowId>> {
        self.sent
            .iter()
            .zip(&self.flows)
            .filter(|((_, d, text), _)| *d == addr(to) && text.starts_with(prefix))
            .map(|(_, flow)| *flow)
            .collect()
    }

    fn sent_to(&self, to: &str, prefix: &str) -> usize {
        self.sent
            .iter()
            .filter(|(_, d, text)| *d == addr(to) && text.starts_with(prefix))
            .count()
    }

    fn state(&self) -> SystemState {
        self.node.state()
    }

    /// The phone registers through the shard of `call_id`; the core accepts.
    fn register(&mut self, call_id: &str, expires: u32) {
        self.deliver(Realm::Access, PHONE, &register_request(call_id, 1, expires));
        let forwarded = self.last_to(UPSTREAM, "REGISTER", call_id);
        self.deliver(Realm::Core, UPSTREAM, &register_ok(&forwarded, expires));
    }

    /// A call from the phone to the core, answered and acknowledged; the 200 it got.
    fn call(&mut self, call_id: &str) -> String {
        self.deliver(Realm::Access, PHONE, &invite_request(call_id));
        let forwarded = self.last_to(UPSTREAM, "INVITE", call_id);
        let ok = response(
            &forwarded,
            "200 OK",
            &[&format!("Contact: <sip:core@{UPSTREAM}>")],
        );
        self.deliver(Realm::Core, UPSTREAM, &ok);
        let answered = self.last_to(PHONE, "SIP/2.0 200", call_id);
        self.deliver(
            Realm::Access,
            PHONE,
            &in_dialog_request(&answered, "ACK", call_id, 1),
        );
        answered
    }
}

#[test]
fn a_drain_waits_for_the_calls_of_every_shard_and_ends_with_the_last_bye() {
    let mut sbc = Box::new(2);
    let on_1 = sbc.call_id_on(1, "call");
    let answered = sbc.call(&on_1);
    assert_eq!(sbc.shards[0].proxy().counts().active_sessions, 1);
    assert_eq!(sbc.node.proxy().counts().active_sessions, 0);
    assert_eq!(
        sbc.node.counts().active_sessions,
        1,
        "the box counts shard 1's call"
    );

    sbc.node.request_offline(sbc.now, None, Cause::Operator);
    sbc.pump();
    assert_eq!(sbc.state(), SystemState::Draining, "{:?}", sbc.events);
    assert_eq!(
        sbc.shards[0].proxy().system_state(),
        SystemState::Draining,
        "shard 1 drains too"
    );
    // A new call is refused on either shard.
    for k in 0..2 {
        let id = sbc.call_id_on(k, "late");
        let invite = message(&[
            "INVITE sip:+15550001@example.com SIP/2.0",
            &format!("Via: SIP/2.0/UDP {PHONE};branch=z9hG4bK-{id}"),
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=late",
            "To: <sip:+15550001@example.com>",
            &format!("Call-ID: {id}"),
            "CSeq: 1 INVITE",
        ]);
        sbc.deliver(Realm::Access, PHONE, &invite);
        assert!(sbc
            .last_to(PHONE, "SIP/2.0 ", &id)
            .starts_with("SIP/2.0 503"));
    }

    let bye = in_dialog_request(&answered, "BYE", &on_1, 2);
    sbc.deliver(Realm::Access, PHONE, &bye);
    let forwarded = sbc.last_to(UPSTREAM, "BYE", &on_1);
    sbc.deliver(Realm::Core, UPSTREAM, &response(&forwarded, "200 OK", &[]));
    assert_eq!(
        sbc.state(),
        SystemState::Offline,
        "the last BYE ended the drain"
    );
    assert_eq!(sbc.shards[0].proxy().system_state(), SystemState::Offline);
}

#[test]
fn the_guard_ends_the_calls_and_bindings_of_every_shard() {
    let mut sbc = Box::new(3);
    for k in 0..3 {
        let id = sbc.call_id_on(k, "held");
        sbc.call(&id);
    }
    let reg = sbc.call_id_on(2, "reg");
    sbc.register(&reg, 3600);
    assert_eq!(sbc.node.counts().active_sessions, 3);
    assert_eq!(sbc.node.counts().registrations, 1);
    sbc.node
        .request_offline(sbc.now, Some(Duration::from_secs(2)), Cause::Operator);
    sbc.pump();
    let byes_before = sbc.sent_to(PHONE, "BYE");

    sbc.advance(Duration::from_secs(2));

    assert!(
        sbc.events.contains(&Event::GuardExpired {
            sessions: 3,
            registrations: 1
        }),
        "{:?}",
        sbc.events
    );
    assert_eq!(sbc.state(), SystemState::Offline);
    assert_eq!(sbc.sent_to(PHONE, "BYE") - byes_before, 3, "a BYE per call");
    assert_eq!(sbc.sent_to(UPSTREAM, "BYE"), 3);
    // The binding is de-registered once, by shard 2, whose REGISTER it was.
    let deregs: Vec<usize> = sbc
        .sent
        .iter()
        .filter(|(_, d, text)| {
            *d == addr(UPSTREAM) && text.starts_with("REGISTER") && text.contains("expires=0")
        })
        .map(|(k, _, _)| *k)
        .collect();
    assert_eq!(deregs, [2]);
    assert_eq!(sbc.node.counts(), proxy::Counts::default());
    for s in &sbc.shards {
        assert_eq!(s.proxy().counts(), proxy::Counts::default());
    }
}

#[test]
fn a_closed_connection_reaches_every_shard_and_what_went_over_it_is_sent_anew() {
    let mut sbc = Box::new(2);
    // The phone registers and calls over one connection; its calls land on both shards.
    let connection = FlowId(7);
    sbc.phone_flow = Some(connection);
    let reg = sbc.call_id_on(1, "reg");
    sbc.register(&reg, 3600);
    let calls = [sbc.call_id_on(0, "call"), sbc.call_id_on(1, "call")];
    for id in &calls {
        sbc.call(id);
    }
    assert_eq!(
        sbc.flows_to(PHONE, "SIP/2.0 200"),
        [Some(connection); 3],
        "answers go back over the phone's connection"
    );

    sbc.node
        .handle_flow_closed(sbc.now, ListenerId(0), connection);
    sbc.pump();

    // The binding lost the connection on the shard that owns it, and through its record on
    // the other: a call from the core asks the shell for a connection to the phone.
    let from_core = sbc.call_id_on(0, "inbound");
    let invite = invite_request(&from_core)
        .replace(
            "INVITE sip:+15550001@example.com",
            "INVITE sip:alice@example.com",
        )
        .replace(
            &format!("SIP/2.0/UDP {PHONE}"),
            &format!("SIP/2.0/UDP {UPSTREAM}"),
        );
    sbc.deliver(Realm::Core, UPSTREAM, &invite);
    assert_eq!(sbc.flows_to(PHONE, "INVITE"), [None], "{:#?}", sbc.sent);

    // The guard's BYEs to the phone, from both shards, do not name the closed connection.
    sbc.node
        .request_offline(sbc.now, Some(Duration::from_secs(1)), Cause::Operator);
    sbc.pump();
    sbc.advance(Duration::from_secs(1));
    let byes: Vec<(usize, Option<FlowId>)> = sbc
        .sent
        .iter()
        .zip(&sbc.flows)
        .filter(|((_, d, text), _)| *d == addr(PHONE) && text.starts_with("BYE"))
        .map(|((k, _, _), flow)| (*k, *flow))
        .collect();
    assert_eq!(byes.len(), 2, "{byes:?}");
    assert!(byes.iter().any(|(k, _)| *k == 1), "{byes:?}");
    assert!(byes.iter().all(|(_, flow)| flow.is_none()), "{byes:?}");
}

#[test]
fn a_binding_cached_through_another_shard_holds_the_drain_until_it_expires() {
    let mut sbc = Box::new(2);
    let reg = sbc.call_id_on(1, "reg");
    sbc.register(&reg, 60);
    assert_eq!(
        sbc.node.counts().registrations,
        1,
        "the node holds shard 1's binding"
    );
    sbc.node.request_offline(sbc.now, None, Cause::Operator);
    sbc.pump();
    assert_eq!(sbc.state(), SystemState::Draining);
    sbc.advance(Duration::from_secs(59));
    assert_eq!(sbc.state(), SystemState::Draining);
    sbc.advance(Duration::from_secs(2));
    assert_eq!(sbc.node.counts().registrations, 0);
    assert_eq!(
        sbc.state(),
        SystemState::Offline,
        "shard 1 expired it and said so"
    );
}

#[test]
fn a_standby_of_several_shards_holds_each_replicated_call_on_the_shard_of_its_call_id() {
    let mut active = super::Lab::new(SystemState::Online);
    active.register(1, 3600);
    let mut sbc = Box::new(2);
    let ids = [sbc.call_id_on(0, "rep"), sbc.call_id_on(1, "rep")];
    for id in &ids {
        active.call(id);
    }
    for record in active.node.proxy().full_sync() {
        crate::shards::apply_twin_record(
            &mut sbc.node.proxy,
            &mut sbc.node.remote,
            sbc.now,
            record,
        )
        .unwrap();
    }
    sbc.pump();
    assert_eq!(
        sbc.node.proxy().counts().active_sessions,
        1,
        "shard 0 owns its call"
    );
    assert_eq!(
        sbc.shards[0].proxy().counts().active_sessions,
        1,
        "shard 1 owns its call"
    );
    assert_eq!(sbc.node.counts().active_sessions, 2);
    assert_eq!(sbc.node.counts().registrations, 1);
    assert_eq!(sbc.shards[0].proxy().counts().registrations, 1);
    // Each shard knows the other's call; shard 0's snapshot (were this node active) holds
    // both calls once.
    assert_eq!(sbc.node.proxy().calls().len(), 2);
    let dialogs = sbc
        .node
        .proxy()
        .full_sync()
        .into_iter()
        .filter(|r| matches!(r, proxy::ChangeRecord::Dialog(_)))
        .count();
    assert_eq!(dialogs, 2);
    // The twin's next snapshot clears every shard first.
    sbc.node.proxy.clear_replicated(sbc.now);
    sbc.node
        .remote
        .broadcast(&crate::shards::ShardCommand::ClearReplicated, None);
    sbc.pump();
    assert_eq!(sbc.shards[0].proxy().counts(), proxy::Counts::default());
}

#[test]
fn a_shard_counts_its_forwards_in_flight_only_while_a_switchover_waits_for_them() {
    let mut sbc = Box::new(2);
    let id = sbc.call_id_on(1, "flight");
    sbc.deliver(Realm::Access, PHONE, &invite_request(&id));
    let forwarded = sbc.last_to(UPSTREAM, "INVITE", &id);
    assert_eq!(sbc.shards[0].proxy().forwards_in_flight(), 1);
    // Not counted after every message: nobody waits for the figure.
    assert_eq!(sbc.node.remote.in_flight, vec![0]);
    let quiesce = |sbc: &mut Box, on: bool| {
        sbc.node
            .remote
            .broadcast(&crate::shards::ShardCommand::Quiesced(on), None);
        sbc.pump();
    };
    quiesce(&mut sbc, true);
    assert_eq!(sbc.node.remote.in_flight, vec![1]);
    quiesce(&mut sbc, false);
    assert_eq!(sbc.node.remote.in_flight, vec![0], "the switchover is over");
    quiesce(&mut sbc, true);
    assert_eq!(sbc.node.remote.in_flight, vec![1]);
    let ok = response(
        &forwarded,
        "200 OK",
        &[&format!("Contact: <sip:core@{UPSTREAM}>")],
    );
    sbc.deliver(Realm::Core, UPSTREAM, &ok);
    assert_eq!(sbc.node.remote.in_flight, vec![0], "answered: none left");
}
