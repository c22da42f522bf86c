//! Hot standby between two whole nodes (proxy, system state, twin, replication) on one
//! simulated clock: keep-alives and the replication stream carried by the test, the stream
//! cut at odd places, the phones and the core answered by hand.

use std::time::Duration;

use proxy::Realm;
use system_state::SystemState;

use super::{addr, in_dialog_request, response, twin_config, Lab, GUARD, PHONE, UPSTREAM};
use crate::replication::{Event as ReplicationEvent, Mode, Sync};
use crate::{Event, Node};

const KEY: [u8; 32] = [7; 32];

/// Two nodes, A (node 1) and B (node 2), with a cross-connect for keep-alives and a
/// replication connection between them.
struct Pair {
    labs: [Lab; 2],
    dead: [bool; 2],
    /// The replication connection is up.
    stream: bool,
    /// Bytes written and not yet delivered, per direction (A→B, B→A).
    wire: [Vec<u8>; 2],
    /// Deliver at most this many bytes per exchange round, so frames arrive cut.
    chunk: usize,
    /// How many of each node's sent messages the core has looked at (it answers OPTIONS).
    seen: [usize; 2],
}

impl Pair {
    fn new(mode: Mode) -> Pair {
        let labs = [1u8, 2].map(|id| {
            let mut lab = Lab::new(SystemState::Online);
            let config = proxy::Config {
                node_name: format!("sbc-{id}"),
                branch_scope: Some("pair".into()),
                ..lab.node.proxy().config().clone()
            };
            lab.node = Node::with_twin(
                config,
                SystemState::Online,
                GUARD,
                twin::Twin::new(twin_config(id), 1, lab.now),
                lab.now,
            );
            lab.node
                .enable_replication(mode, id, KEY.to_vec(), 1, lab.now);
            lab.collect();
            lab
        });
        let mut pair = Pair {
            labs,
            dead: [false; 2],
            stream: false,
            wire: [Vec::new(), Vec::new()],
            chunk: 613,
            seen: [0; 2],
        };
        pair.connect();
        pair
    }

    fn now(&self) -> std::time::Instant {
        self.labs[0].now
    }

    fn connect(&mut self) {
        if !self.labs[0].node.wants_stream() {
            return;
        }
        self.stream = true;
        self.wire = [Vec::new(), Vec::new()];
        let now = self.now();
        for (i, lab) in self.labs.iter_mut().enumerate() {
            if !self.dead[i] {
                lab.node.handle_stream_open(now, [i as u8 + 1; 16]);
                lab.collect();
            }
        }
    }

    fn owns(&self, i: usize) -> bool {
        self.labs[i]
            .node
            .twin_status(self.now())
            .unwrap()
            .owns_addresses
    }

    fn sync(&self, i: usize) -> Sync {
        self.labs[i].node.replication_view(self.now()).unwrap().sync
    }

    fn exchange(&mut self) {
        let now = self.now();
        for _ in 0..100_000 {
            let mut moved = false;
            for i in 0..2 {
                let j = 1 - i;
                while let Some(t) = self.labs[i].node.poll_twin_transmit() {
                    if !self.dead[i] && !self.dead[j] {
                        moved = true;
                        self.labs[j]
                            .node
                            .handle_twin_datagram(now, t.path, &t.payload);
                    }
                }
                while let Some(action) = self.labs[i].node.poll_address_action() {
                    if self.dead[i] {
                        continue;
                    }
                    moved = true;
                    if matches!(action, twin::AddressAction::Probe(_)) {
                        let conflicts = if !self.dead[j] && self.owns(j) {
                            vec!["192.0.2.10".parse().unwrap()]
                        } else {
                            Vec::new()
                        };
                        self.labs[i].node.handle_probe_result(now, conflicts);
                    }
                    if matches!(action, twin::AddressAction::Announce(_)) {
                        self.labs[i].node.handle_addresses_announced(now);
                    }
                }
                while let Some(bytes) = self.labs[i].node.poll_stream_bytes() {
                    if self.stream && !self.dead[i] {
                        self.wire[i].extend_from_slice(&bytes);
                    }
                }
                if self.stream && !self.wire[i].is_empty() && !self.dead[j] {
                    moved = true;
                    let n = self.chunk.min(self.wire[i].len());
                    let bytes: Vec<u8> = self.wire[i].drain(..n).collect();
                    self.labs[j].node.handle_stream_bytes(now, &bytes);
                }
            }
            for (i, lab) in self.labs.iter_mut().enumerate() {
                lab.collect();
                // The core answers the upstream probes of whichever node sends them.
                let probes: Vec<String> = lab.sent[self.seen[i]..]
                    .iter()
                    .filter(|(d, t)| *d == addr(UPSTREAM) && t.starts_with("OPTIONS"))
                    .map(|(_, t)| t.clone())
                    .collect();
                self.seen[i] = lab.sent.len();
                for probe in probes {
                    if !self.dead[i] {
                        moved = true;
                        lab.deliver(
                            Realm::Core,
                            UPSTREAM,
                            &super::response(&probe, "200 OK", &[]),
                        );
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the pair does not settle");
    }

    fn run_for(&mut self, d: Duration) {
        let target = self.now() + d;
        loop {
            self.exchange();
            if self.stream
                && !self.dead.iter().any(|d| *d)
                && !self.labs.iter().all(|l| l.node.stream_open())
            {
                // A session ended: the shell drops the connection and node 2 connects again
                // (after a pause in the daemon; at the next step here).
                let now = self.now();
                for lab in &mut self.labs {
                    lab.node.handle_stream_closed(now);
                }
                self.connect();
                self.exchange();
            }
            let next = (0..2)
                .filter(|i| !self.dead[*i])
                .filter_map(|i| self.labs[i].node.poll_timeout())
                .min();
            match next {
                Some(at) if at <= target => {
                    let at = at.max(self.now());
                    for i in 0..2 {
                        self.labs[i].now = at;
                        if !self.dead[i] {
                            self.labs[i].node.handle_timeout(at);
                        }
                    }
                }
                _ => break,
            }
        }
        for lab in &mut self.labs {
            lab.now = target;
        }
    }

    /// A's box dies: nothing more in or out, the stream's other end sees nothing.
    fn kill(&mut self, i: usize) {
        self.dead[i] = true;
        self.stream = false;
        let now = self.now();
        self.labs[1 - i].node.handle_stream_closed(now);
    }

    fn replication_events(&self, i: usize) -> Vec<ReplicationEvent> {
        self.labs[i]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Replication(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The phone's BYE for `call_id`, sent along the route it learnt.
fn bye(lab: &Lab, call_id: &str) -> String {
    let answered = lab
        .sent
        .iter()
        .rev()
        .find(|(d, t)| *d == addr(PHONE) && t.starts_with("SIP/2.0 200") && t.contains(call_id))
        .map(|(_, t)| t.clone())
        .unwrap();
    in_dialog_request(&answered, "BYE", call_id, 2)
}

#[test]
fn the_standby_holds_every_binding_and_call_and_the_survivor_ends_them() {
    let mut pair = Pair::new(Mode::Hot);
    pair.run_for(Duration::from_secs(2));
    assert!(pair.owns(0));
    assert_eq!(pair.sync(0), Sync::Synced);
    assert_eq!(pair.sync(1), Sync::Synced);
    pair.labs[0].register(1, 600);
    pair.labs[0].call("held-1");
    pair.labs[0].call("held-2");
    pair.run_for(Duration::from_millis(50));
    let a = pair.labs[0].node.counts();
    let b = pair.labs[1].node.counts();
    assert_eq!((b.confirmed, b.registrations), (2, 1));
    assert_eq!(a, b);
    assert_eq!(
        pair.labs[1].node.proxy().calls(),
        pair.labs[0].node.proxy().calls()
    );
    // Nothing expires on the standby by itself, even past the binding's expiry... and the
    // active's removal reaches it.
    let view = pair.labs[1].node.replication_view(pair.now()).unwrap();
    assert!(view.records_applied >= 5, "{view:?}");
    assert_eq!((view.rejected, view.stale_dropped), (0, 0));

    pair.kill(0);
    pair.run_for(Duration::from_secs(2));
    assert!(pair.owns(1), "B took over");
    let bye = bye(&pair.labs[0], "held-1");
    pair.labs[1].deliver(Realm::Access, PHONE, &bye);
    assert_eq!(pair.labs[1].sent_to(UPSTREAM, "BYE"), 1, "the BYE goes on");
    let ok = super::response(&pair.labs[1].last_to(UPSTREAM, "BYE"), "200 OK", &[]);
    pair.labs[1].deliver(Realm::Core, UPSTREAM, &ok);
    assert!(pair.labs[1]
        .last_to(PHONE, "SIP/2.0 200")
        .contains("CSeq: 2 BYE"));
    assert_eq!(pair.labs[1].node.counts().confirmed, 1);
    assert_eq!(pair.labs[1].node.counts().registrations, 1);
}

#[test]
fn a_standby_that_joins_late_takes_a_snapshot_that_replaces_what_it_had() {
    let mut pair = Pair::new(Mode::Hot);
    pair.stream = false;
    let now = pair.now();
    for lab in &mut pair.labs {
        lab.node.handle_stream_closed(now);
    }
    pair.run_for(Duration::from_secs(2));
    assert_eq!(pair.sync(1), Sync::NotConnected);
    for n in 0..20 {
        pair.labs[0].call(&format!("early-{n}"));
    }
    pair.labs[0].register(1, 600);
    pair.run_for(Duration::from_millis(10));
    assert_eq!(pair.labs[1].node.counts().active_sessions, 0);
    pair.chunk = 97;
    pair.connect();
    pair.run_for(Duration::from_millis(100));
    assert_eq!(pair.sync(1), Sync::Synced);
    assert_eq!(pair.sync(0), Sync::Synced);
    assert_eq!(pair.labs[1].node.counts(), pair.labs[0].node.counts());
    assert!(pair
        .replication_events(1)
        .iter()
        .any(|e| matches!(e, ReplicationEvent::Synced { records: 21, .. })));
    // The next connection's snapshot replaces the tables: a call that ended while the
    // stream was down does not linger on the standby.
    let now = pair.now();
    pair.stream = false;
    for lab in &mut pair.labs {
        lab.node.handle_stream_closed(now);
    }
    let bye = bye(&pair.labs[0], "early-3");
    pair.labs[0].deliver(Realm::Access, PHONE, &bye);
    let ok = super::response(&pair.labs[0].last_to(UPSTREAM, "BYE"), "200 OK", &[]);
    pair.labs[0].deliver(Realm::Core, UPSTREAM, &ok);
    assert_eq!(pair.labs[0].node.counts().active_sessions, 19);
    assert_eq!(pair.labs[1].node.counts().active_sessions, 20);
    pair.connect();
    pair.run_for(Duration::from_millis(100));
    assert_eq!(pair.labs[1].node.counts().active_sessions, 19);
}

#[test]
fn switchover_hands_over_only_when_the_twin_holds_everything() {
    let mut pair = Pair::new(Mode::Hot);
    pair.run_for(Duration::from_secs(2));
    assert!(pair.owns(0));
    pair.labs[0].register(1, 600);
    pair.labs[0].call("before");
    // Hold the stream so the twin lags: the switchover must wait for it.
    pair.stream = false;
    let now = pair.now();
    pair.labs[0].node.request_switchover(now).unwrap();
    assert!(matches!(
        pair.labs[0].node.request_switchover(now),
        Err(crate::replication::SwitchoverError::InProgress)
    ));
    // A new call meanwhile is left unanswered (its retransmission will reach the twin).
    pair.labs[0].invite("during");
    assert_eq!(pair.labs[0].sent_to(UPSTREAM, "INVITE"), 1);
    pair.stream = true;
    pair.run_for(Duration::from_secs(2));
    assert!(pair.owns(1), "B holds the addresses");
    assert!(!pair.owns(0));
    assert!(pair
        .replication_events(0)
        .iter()
        .any(|e| matches!(e, ReplicationEvent::SwitchoverReleased { .. })));
    assert_eq!(pair.labs[1].node.counts().confirmed, 1);
    assert_eq!(pair.labs[1].node.counts().registrations, 1);
    // B is active now and A standby: A gets B's snapshot and follows.
    pair.run_for(Duration::from_millis(200));
    assert_eq!(pair.sync(0), Sync::Synced);
    pair.labs[1].call("after");
    pair.run_for(Duration::from_millis(50));
    assert_eq!(pair.labs[0].node.counts().confirmed, 2);
    // And back.
    let now = pair.now();
    pair.labs[1].node.request_switchover(now).unwrap();
    pair.run_for(Duration::from_secs(2));
    assert!(pair.owns(0));
    assert_eq!(pair.labs[0].node.counts().confirmed, 2);
}

#[test]
fn a_switchover_waits_for_the_answers_of_what_it_forwarded_before_it_releases() {
    let mut pair = Pair::new(Mode::Hot);
    pair.run_for(Duration::from_secs(2));
    assert!(pair.owns(0));
    // An INVITE forwarded an instant before the switchover: its answer comes to the
    // addresses, so A keeps them until it has come (and A relayed it).
    pair.labs[0].invite("in-flight");
    let forwarded = pair.labs[0].last_to(UPSTREAM, "INVITE");
    let now = pair.now();
    pair.labs[0].node.request_switchover(now).unwrap();
    pair.run_for(Duration::from_millis(300));
    assert!(pair.owns(0), "A holds the addresses while its INVITE waits");
    let ok = response(
        &forwarded,
        "200 OK",
        &[&format!("Contact: <sip:core@{UPSTREAM}>")],
    );
    pair.labs[0].deliver(Realm::Core, UPSTREAM, &ok);
    assert_eq!(
        pair.labs[0].sent_to(PHONE, "SIP/2.0 200"),
        1,
        "A relayed it"
    );
    pair.run_for(Duration::from_millis(300));
    assert!(pair.owns(1), "then A released and B claimed");
    assert_eq!(
        pair.labs[1].node.counts().confirmed,
        1,
        "B holds the call as answered"
    );
}

#[test]
fn a_switchover_releases_after_the_settle_time_with_an_invite_still_ringing() {
    let mut pair = Pair::new(Mode::Hot);
    pair.run_for(Duration::from_secs(2));
    pair.labs[0].invite("ringing");
    let now = pair.now();
    pair.labs[0].node.request_switchover(now).unwrap();
    pair.run_for(crate::replication::SWITCHOVER_SETTLE + Duration::from_millis(500));
    assert!(
        pair.owns(1),
        "a call that rings on does not hold the switchover"
    );
    assert_eq!(
        pair.labs[1].node.counts().early,
        1,
        "B holds the early dialog"
    );
    // A, standby now, says nothing about the INVITE it handed over, however long it waits.
    let to_phone = pair.labs[0].sent_to(PHONE, "SIP/2.0");
    pair.run_for(Duration::from_secs(240));
    assert_eq!(pair.labs[0].sent_to(PHONE, "SIP/2.0"), to_phone);
}

#[test]
fn a_switchover_the_twin_never_confirms_is_abandoned_and_the_node_serves_on() {
    let mut pair = Pair::new(Mode::Hot);
    pair.run_for(Duration::from_secs(2));
    pair.labs[0].call("c");
    pair.stream = false;
    let now = pair.now();
    pair.labs[0].node.request_switchover(now).unwrap();
    pair.run_for(Duration::from_secs(3));
    assert!(pair.owns(0));
    assert!(pair
        .replication_events(0)
        .iter()
        .any(|e| matches!(e, ReplicationEvent::SwitchoverAbandoned { .. })));
    pair.labs[0].invite("served");
    assert_eq!(pair.labs[0].sent_to(UPSTREAM, "INVITE"), 2);
}

#[test]
fn a_stream_with_another_key_carries_nothing() {
    let mut pair = Pair::new(Mode::Hot);
    let now = pair.now();
    pair.labs[1]
        .node
        .enable_replication(Mode::Hot, 2, vec![8; 32], 1, now);
    pair.connect();
    pair.run_for(Duration::from_secs(2));
    pair.labs[0].call("c");
    pair.run_for(Duration::from_millis(50));
    assert_eq!(pair.labs[1].node.counts().active_sessions, 0);
    assert!(pair
        .replication_events(1)
        .iter()
        .any(|e| matches!(e, ReplicationEvent::Closed(replica::CloseReason::Forged))));
    assert_ne!(pair.sync(1), Sync::Synced);
}

#[test]
fn cold_standby_replicates_nothing_and_refuses_a_switchover() {
    let mut pair = Pair::new(Mode::Cold);
    pair.run_for(Duration::from_secs(2));
    assert!(!pair.labs[0].node.wants_stream());
    pair.labs[0].register(1, 600);
    pair.labs[0].call("c");
    pair.run_for(Duration::from_millis(50));
    assert_eq!(pair.sync(1), Sync::Cold);
    assert_eq!(pair.labs[1].node.counts().active_sessions, 0);
    let now = pair.now();
    assert_eq!(
        pair.labs[0].node.request_switchover(now),
        Err(crate::replication::SwitchoverError::Cold)
    );
}
