//! The composed node on a simulated network and clock: phones and the core are the test,
//! answering what the node sends by hand; the clock jumps.

mod hot;
mod shards;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proxy::{Input, ListenerConfig, ListenerId, Realm, Transport, UpstreamConfig};
use system_state::{Cause, SystemState};

use super::{Event, Node};

const ACCESS: &str = "10.0.0.1:5060";
const CORE_SIDE: &str = "10.1.0.1:5060";
const UPSTREAM: &str = "10.1.0.10:5060";
const PHONE: &str = "10.0.0.50:5060";
const GUARD: Duration = Duration::from_secs(300);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Lab {
    node: Node,
    now: Instant,
    /// Everything sent, as (destination, text), oldest first; tests take what they answer.
    sent: Vec<(SocketAddr, String)>,
    events: Vec<Event>,
}

impl Lab {
    fn new(initial: SystemState) -> Lab {
        let config = proxy::Config {
            node_name: "sbc-a".into(),
            listeners: vec![
                ListenerConfig {
                    realm: Realm::Access,
                    transport: Transport::Udp,
                    addr: addr(ACCESS),
                },
                ListenerConfig {
                    realm: Realm::Core,
                    transport: Transport::Udp,
                    addr: addr(CORE_SIDE),
                },
            ],
            upstreams: vec![
                UpstreamConfig::from_uri("sip:10.1.0.10:5060;transport=udp", 1).unwrap(),
            ],
            ..proxy::Config::default()
        };
        let now = Instant::now();
        let mut lab = Lab {
            node: Node::new(config, initial, GUARD, now),
            now,
            sent: Vec::new(),
            events: Vec::new(),
        };
        lab.collect();
        lab
    }

    fn collect(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            self.sent.push((
                t.destination,
                String::from_utf8_lossy(&t.bytes).into_owned(),
            ));
        }
        while let Some(e) = self.node.poll_event() {
            self.events.push(e);
        }
    }

    /// `text` (lines joined with CRLF) from `from`, on the access or core listener.
    fn deliver(&mut self, realm: Realm, from: &str, text: &str) {
        let listener = ListenerId(match realm {
            Realm::Access => 0,
            Realm::Core => 1,
        });
        self.node.handle_input(
            self.now,
            Input {
                listener,
                flow: None,
                source: addr(from),
                bytes: text.as_bytes(),
            },
        );
        self.collect();
    }

    /// Moves the clock by `d`, firing every deadline on the way.
    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(at) = self.node.poll_timeout().filter(|at| *at <= target) {
            self.now = self.now.max(at);
            self.node.handle_timeout(self.now);
            self.collect();
        }
        self.now = target;
        self.node.handle_timeout(self.now);
        self.collect();
    }

    /// The last message sent to `to` whose first line starts with `prefix`.
    fn last_to(&self, to: &str, prefix: &str) -> String {
        self.sent
            .iter()
            .rev()
            .find(|(d, text)| *d == addr(to) && text.starts_with(prefix))
            .map(|(_, text)| text.clone())
            .unwrap_or_else(|| {
                panic!(
                    "nothing starting {prefix:?} was sent to {to}: {:?}",
                    self.sent
                )
            })
    }

    fn sent_to(&self, to: &str, prefix: &str) -> usize {
        self.sent
            .iter()
            .filter(|(d, text)| *d == addr(to) && text.starts_with(prefix))
            .count()
    }

    fn transitions(&self) -> Vec<(SystemState, Cause)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::StateChanged(t) => Some((t.to, t.cause)),
                _ => None,
            })
            .collect()
    }

    /// The phone registers `expires` seconds through the node; the core accepts.
    fn register(&mut self, cseq: u32, expires: u32) {
        self.deliver(
            Realm::Access,
            PHONE,
            &register_request("reg-alice", cseq, expires),
        );
        let forwarded = self.last_to(UPSTREAM, "REGISTER");
        self.deliver(Realm::Core, UPSTREAM, &register_ok(&forwarded, expires));
    }

    /// The phone's INVITE for a call to the core.
    fn invite(&mut self, call_id: &str) {
        self.deliver(Realm::Access, PHONE, &invite_request(call_id));
    }

    /// A call from the phone to the core, answered and acknowledged.
    fn call(&mut self, call_id: &str) {
        self.invite(call_id);
        let forwarded = self.last_to(UPSTREAM, "INVITE");
        let ok = response(
            &forwarded,
            "200 OK",
            &[&format!("Contact: <sip:core@{UPSTREAM}>")],
        );
        self.deliver(Realm::Core, UPSTREAM, &ok);
        let answered = self.last_to(PHONE, "SIP/2.0 200");
        self.deliver(
            Realm::Access,
            PHONE,
            &in_dialog_request(&answered, "ACK", call_id, 1),
        );
    }
}

/// The phone's REGISTER (Call-ID `call_id`) for `expires` seconds.
fn register_request(call_id: &str, cseq: u32, expires: u32) -> String {
    message(&[
        "REGISTER sip:example.com SIP/2.0",
        &format!("Via: SIP/2.0/UDP {PHONE};branch=z9hG4bK-{call_id}-{cseq}"),
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=reg",
        "To: <sip:alice@example.com>",
        &format!("Call-ID: {call_id}"),
        &format!("CSeq: {cseq} REGISTER"),
        &format!("Contact: <sip:alice@{PHONE}>;expires={expires}"),
    ])
}

/// The core's 200 to the REGISTER it got (`forwarded`).
fn register_ok(forwarded: &str, expires: u32) -> String {
    response(
        forwarded,
        "200 OK",
        &[&format!("Contact: <sip:alice@{PHONE}>;expires={expires}")],
    )
}

/// The phone's INVITE for a call to the core.
fn invite_request(call_id: &str) -> String {
    message(&[
        "INVITE sip:+15550001@example.com SIP/2.0",
        &format!("Via: SIP/2.0/UDP {PHONE};branch=z9hG4bK-{call_id}"),
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=caller",
        "To: <sip:+15550001@example.com>",
        &format!("Call-ID: {call_id}"),
        "CSeq: 1 INVITE",
        &format!("Contact: <sip:alice@{PHONE}>"),
    ])
}

/// A request of the phone inside the call that its 200 `answered` set up, along the route
/// that 200 recorded.
fn in_dialog_request(answered: &str, method: &str, call_id: &str, cseq: u32) -> String {
    let mut lines = vec![
        format!("{method} sip:core@{UPSTREAM} SIP/2.0"),
        format!(
            "Via: SIP/2.0/UDP {PHONE};branch=z9hG4bK-{call_id}-{}",
            method.to_ascii_lowercase()
        ),
        "Max-Forwards: 70".into(),
        "From: <sip:alice@example.com>;tag=caller".into(),
        format!("To: {}", header_lines(answered, "To").remove(0)),
        format!("Call-ID: {call_id}"),
        format!("CSeq: {cseq} {method}"),
    ];
    lines.extend(
        header_lines(answered, "Record-Route")
            .into_iter()
            .map(|rr| format!("Route: {rr}")),
    );
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    message(&lines)
}

fn message(lines: &[&str]) -> String {
    format!("{}\r\nContent-Length: 0\r\n\r\n", lines.join("\r\n"))
}

/// The values of every `name` header of `text`.
fn header_lines(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
        .collect()
}

/// A response to `request` as a UAS writes it: Vias, From, To (tagged), Call-ID, CSeq and
/// Record-Route copied.
fn response(request: &str, status: &str, extra: &[&str]) -> String {
    let mut lines = vec![format!("SIP/2.0 {status}")];
    for name in ["Via", "From", "To", "Call-ID", "CSeq", "Record-Route"] {
        for value in header_lines(request, name) {
            let value = if name == "To" && !value.contains("tag=") {
                format!("{value};tag=uas")
            } else {
                value
            };
            lines.push(format!("{name}: {value}"));
        }
    }
    lines.extend(extra.iter().map(|s| (*s).to_owned()));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    message(&lines)
}

#[test]
fn an_idle_drain_ends_at_once_and_the_next_call_meets_an_offline_node() {
    let mut lab = Lab::new(SystemState::Online);
    lab.node.request_offline(lab.now, None, Cause::Operator);
    lab.collect();
    assert_eq!(
        lab.transitions(),
        [
            (SystemState::Draining, Cause::Operator),
            (SystemState::Offline, Cause::Drained)
        ]
    );
    assert!(lab.events.contains(&Event::AcceptConnections(false)));
    lab.invite("after");
    assert_eq!(
        lab.sent_to(UPSTREAM, "INVITE"),
        0,
        "nothing forwarded offline"
    );
    assert!(lab.last_to(PHONE, "SIP/2.0 ").starts_with("SIP/2.0 503"));
}

#[test]
fn the_binding_that_expires_last_ends_the_drain_in_the_same_step() {
    let mut lab = Lab::new(SystemState::Online);
    lab.register(1, 60);
    assert_eq!(lab.node.counts().registrations, 1);
    lab.node.request_offline(lab.now, None, Cause::Operator);
    lab.collect();
    assert_eq!(
        lab.transitions(),
        [(SystemState::Draining, Cause::Operator)]
    );

    lab.advance(Duration::from_secs(61));

    assert_eq!(lab.node.counts().registrations, 0);
    assert_eq!(lab.node.state(), SystemState::Offline);
    assert_eq!(lab.transitions()[1], (SystemState::Offline, Cause::Drained));
}

#[test]
fn the_guard_ends_every_call_and_binding_before_the_node_goes_offline() {
    let mut lab = Lab::new(SystemState::Online);
    lab.register(1, 3600);
    lab.call("held");
    let counts = lab.node.counts();
    assert_eq!((counts.active_sessions, counts.registrations), (1, 1));
    lab.node
        .request_offline(lab.now, Some(Duration::from_secs(2)), Cause::Operator);
    lab.collect();
    let byes_before = lab.sent_to(PHONE, "BYE");

    lab.advance(Duration::from_secs(2));

    let guard_at = lab
        .events
        .iter()
        .position(|e| matches!(e, Event::GuardExpired { .. }))
        .unwrap();
    let offline_at = lab
        .events
        .iter()
        .position(|e| matches!(e, Event::StateChanged(t) if t.to == SystemState::Offline))
        .unwrap();
    assert!(guard_at < offline_at, "{:?}", lab.events);
    assert_eq!(
        lab.events[guard_at],
        Event::GuardExpired {
            sessions: 1,
            registrations: 1
        }
    );
    assert_eq!(
        lab.transitions().last(),
        Some(&(SystemState::Offline, Cause::GuardExpired))
    );
    assert_eq!(
        lab.sent_to(PHONE, "BYE"),
        byes_before + 1,
        "a BYE to the phone"
    );
    assert_eq!(lab.sent_to(UPSTREAM, "BYE"), 1, "a BYE to the core");
    let removal = lab.last_to(UPSTREAM, "REGISTER");
    assert!(
        removal.contains("Expires: 0") || removal.contains("expires=0"),
        "{removal}"
    );
    let counts = lab.node.counts();
    assert_eq!((counts.active_sessions, counts.registrations), (0, 0));
}

#[test]
fn a_node_restored_draining_with_nothing_left_goes_offline_at_once() {
    let lab = Lab::new(SystemState::Draining);
    assert_eq!(lab.transitions(), [(SystemState::Offline, Cause::Drained)]);
    assert_eq!(lab.node.state(), SystemState::Offline);
}

#[test]
fn online_again_reopens_connections_and_calls_are_forwarded() {
    let mut lab = Lab::new(SystemState::Offline);
    lab.node.request_online(lab.now, Cause::Button);
    lab.collect();
    assert!(lab.events.contains(&Event::AcceptConnections(true)));
    lab.call("back");
    assert_eq!(lab.sent_to(UPSTREAM, "INVITE"), 1);
    assert_eq!(lab.node.counts().active_sessions, 1);
}

/// The node (twin node 1) and its twin (a bare `twin::Twin` as node 2) on the cross-connect,
/// delivering at once in both directions unless cut.
struct TwinLab {
    lab: Lab,
    peer: twin::Twin,
    /// Whether the cross-connect carries datagrams.
    linked: bool,
    /// The node's box is dead: it sends, handles and answers (ARP included) nothing.
    dead: bool,
    /// The twin's box is dead.
    peer_dead: bool,
    /// Address actions the node asked for, in order.
    actions: Vec<twin::AddressAction>,
    /// The shell says when an announce went out (else it is slow: the node hears nothing).
    announces_reported: bool,
}

fn twin_config(id: u8) -> twin::Config {
    let mut config = twin::Config::new(
        twin::NodeId(id),
        twin::Key::new(vec![7; 32]).unwrap(),
        vec!["192.0.2.10".parse().unwrap()],
    );
    config.second_path = false;
    config
}

impl TwinLab {
    fn new() -> TwinLab {
        TwinLab::with_ids(1, 2)
    }

    /// The node as twin `node_id`, its twin as `peer_id`.
    fn with_ids(node_id: u8, peer_id: u8) -> TwinLab {
        let mut lab = Lab::new(SystemState::Online);
        let config = lab.node.proxy().config().clone();
        lab.node = Node::with_twin(
            config,
            SystemState::Online,
            GUARD,
            twin::Twin::new(twin_config(node_id), 1, lab.now),
            lab.now,
        );
        lab.collect();
        let peer = twin::Twin::new(twin_config(peer_id), 1, lab.now);
        TwinLab {
            lab,
            peer,
            linked: true,
            dead: false,
            peer_dead: false,
            actions: Vec::new(),
            announces_reported: true,
        }
    }

    /// Delivers what each side sends and answers the node's probes (nobody else holds the
    /// address), until both are quiet.
    fn exchange(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.lab.node.poll_twin_transmit().filter(|_| !self.dead) {
                moved = true;
                if self.linked {
                    self.peer.handle_datagram(t.path, &t.payload, self.lab.now);
                }
            }
            while let Some(t) = self.peer.poll_transmit().filter(|_| !self.peer_dead) {
                moved = true;
                if self.linked && !self.dead {
                    self.lab
                        .node
                        .handle_twin_datagram(self.lab.now, t.path, &t.payload);
                }
            }
            while let Some(action) = self.lab.node.poll_address_action().filter(|_| !self.dead) {
                moved = true;
                if matches!(action, twin::AddressAction::Probe(_)) {
                    let conflicts = if !self.peer_dead && self.peer.owns_addresses() {
                        vec!["192.0.2.10".parse().unwrap()]
                    } else {
                        Vec::new()
                    };
                    self.lab.node.handle_probe_result(self.lab.now, conflicts);
                }
                if matches!(action, twin::AddressAction::Announce(_)) && self.announces_reported {
                    self.lab.node.handle_addresses_announced(self.lab.now);
                }
                self.actions.push(action);
            }
            while let Some(action) = self.peer.poll_action().filter(|_| !self.peer_dead) {
                moved = true;
                if matches!(action, twin::AddressAction::Probe(_)) {
                    let conflicts = if !self.dead && self.node_owns() {
                        vec!["192.0.2.10".parse().unwrap()]
                    } else {
                        Vec::new()
                    };
                    self.peer.handle_probe_result(conflicts, self.lab.now);
                }
            }
            while self.peer.poll_event().is_some() {}
            self.lab.collect();
            if !moved {
                return;
            }
        }
    }

    /// Runs both for `d`, through every deadline of either.
    fn run_for(&mut self, d: Duration) {
        let target = self.lab.now + d;
        loop {
            self.exchange();
            let node_next = self.lab.node.poll_timeout().filter(|_| !self.dead);
            let peer_next = self.peer.poll_timeout().filter(|_| !self.peer_dead);
            let next = [node_next, peer_next].into_iter().flatten().min();
            match next {
                Some(at) if at <= target => {
                    self.lab.now = self.lab.now.max(at);
                    if !self.dead {
                        self.lab.node.handle_timeout(self.lab.now);
                    }
                    if !self.peer_dead {
                        self.peer.handle_timeout(self.lab.now);
                    }
                }
                _ => break,
            }
        }
        self.lab.now = target;
    }

    fn node_owns(&self) -> bool {
        self.lab
            .node
            .twin_status(self.lab.now)
            .unwrap()
            .owns_addresses
    }
}

#[test]
fn two_nodes_starting_together_make_node_1_active_and_the_node_says_so() {
    let mut pair = TwinLab::new();
    pair.run_for(Duration::from_secs(2));
    assert!(pair.node_owns());
    assert_eq!(pair.peer.role(), twin::Role::Standby);
    assert!(pair
        .actions
        .iter()
        .any(|a| matches!(a, twin::AddressAction::Claim(_))));
    assert!(pair.lab.events.iter().any(|e| matches!(
        e,
        Event::Twin(twin::Event::RoleChanged {
            to: twin::Role::Active,
            ..
        })
    )));
}

#[test]
fn the_twin_hears_the_drain_and_does_not_take_over() {
    let mut pair = TwinLab::new();
    // Registered once active (a standby holds no address and starts nothing), through an
    // upstream whose first probe was answered.
    for _ in 0..40 {
        if pair.node_owns() {
            break;
        }
        pair.run_for(Duration::from_millis(50));
    }
    assert!(pair.node_owns());
    let probe = pair.lab.last_to(UPSTREAM, "OPTIONS");
    pair.lab
        .deliver(Realm::Core, UPSTREAM, &response(&probe, "200 OK", &[]));
    pair.lab.register(1, 3600);
    pair.run_for(Duration::from_secs(2));

    pair.lab
        .node
        .request_offline(pair.lab.now, None, Cause::Operator);
    pair.lab.collect();
    pair.run_for(Duration::from_secs(10));

    assert_eq!(pair.lab.node.state(), SystemState::Draining);
    let seen = pair.peer.status(pair.lab.now).twin.unwrap();
    assert_eq!(seen.state, twin::PeerState::Draining);
    assert_eq!(seen.registrations, 1, "the counts travel too");
    assert_eq!(
        pair.peer.role(),
        twin::Role::Standby,
        "a drain is not a failure"
    );
    assert!(pair.node_owns());
}

#[test]
fn a_dead_node_is_taken_over_by_its_twin() {
    let mut pair = TwinLab::new();
    pair.run_for(Duration::from_secs(2));
    assert!(pair.node_owns());

    pair.dead = true;
    let died = pair.lab.now;
    pair.run_for(Duration::from_secs(2));

    assert_eq!(pair.peer.role(), twin::Role::Active);
    let took = pair.peer.status(pair.lab.now).last_takeover.unwrap();
    assert!(
        took.twin_silent_ms.unwrap() <= twin_config(2).detection_time().as_millis() as u64 + 100,
        "{took:?} after the death at {died:?}"
    );
}

#[test]
fn a_cut_link_to_a_node_that_still_answers_arp_claims_nothing() {
    let mut pair = TwinLab::new();
    pair.run_for(Duration::from_secs(2));
    assert!(pair.node_owns());

    pair.linked = false;
    pair.run_for(Duration::from_secs(3));

    assert!(pair.node_owns(), "the node keeps serving");
    assert_eq!(
        pair.peer.role(),
        twin::Role::Standby,
        "its probe found the node"
    );
    assert!(pair
        .lab
        .events
        .iter()
        .any(|e| matches!(e, Event::Twin(twin::Event::PathDown(twin::PathId::Link)))));
}

#[test]
fn a_standby_node_probes_no_upstream_and_probes_at_once_when_it_takes_over() {
    // The node is twin 2: twin 1 wins the election and owns the addresses.
    let mut pair = TwinLab::with_ids(2, 1);
    pair.run_for(Duration::from_secs(120));
    assert!(!pair.node_owns());
    assert_eq!(
        pair.lab.sent_to(UPSTREAM, "OPTIONS"),
        0,
        "a standby sends nothing from its twin's addresses"
    );

    pair.peer_dead = true;
    let died = pair.lab.now;
    pair.run_for(Duration::from_secs(1));

    assert!(pair.node_owns(), "the node took over");
    assert!(
        pair.lab.sent_to(UPSTREAM, "OPTIONS") >= 1,
        "the new active probes its upstreams at once, {:?} after the death",
        pair.lab.now - died
    );
}

#[test]
fn a_node_that_takes_over_probes_its_upstreams_only_once_its_addresses_are_announced() {
    // A probe sent before the gratuitous ARP is out is answered to the twin's MAC and times
    // out: the upstream would be out of rotation until the next probe, 30 s of 503s (CI, the
    // pair update's switchover).
    let mut pair = TwinLab::with_ids(2, 1);
    pair.run_for(Duration::from_secs(5));
    assert!(!pair.node_owns());
    pair.announces_reported = false;
    pair.peer_dead = true;
    pair.run_for(Duration::from_secs(2));
    assert!(pair.node_owns(), "the node took over");
    assert!(pair
        .actions
        .iter()
        .any(|a| matches!(a, twin::AddressAction::Announce(_))));
    assert_eq!(
        pair.lab.sent_to(UPSTREAM, "OPTIONS"),
        0,
        "no probe before the shell said the addresses are announced"
    );

    let now = pair.lab.now;
    pair.lab.node.handle_addresses_announced(now);
    pair.lab.collect();
    assert_eq!(pair.lab.sent_to(UPSTREAM, "OPTIONS"), 1, "probed at once");
    // Later announces (the twin repeats them) probe nothing more.
    pair.lab.node.handle_addresses_announced(now);
    pair.lab.collect();
    assert_eq!(pair.lab.sent_to(UPSTREAM, "OPTIONS"), 1);
}
