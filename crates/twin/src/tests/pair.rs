//! A quinn-style `Pair`: two [`Twin`]s, a simulated clock, two paths with latency, loss and
//! per-direction cuts, and a model of the LAN's service addresses. `drive_until` jumps the clock
//! from one deadline or delivery to the next; nothing sleeps.
//!
//! The LAN model: a `Claim` adds the addresses to the node, a `Release` removes them, a dead node
//! holds nothing. A `Probe` is answered after `probe_time` with the addresses someone else holds
//! at that moment: a stranger (a third box on the LAN), or the twin when ARP crosses between the
//! two (`lan_connected`; a full partition cuts it too).
//!
//! The invariant, checked after every step: **if some configured path has carried every datagram
//! in both directions (no cut, no loss, both nodes running) for longer than one interval plus its
//! latency, no address is held by both nodes.** That bound is the time for the winner's next
//! keep-alive to reach the loser, which releases on receipt.

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::{AddressAction, Config, Event, Key, NodeId, PathId, Role, Twin};

pub const INTERVAL: Duration = Duration::from_millis(100);
pub const MISSES: u32 = 3;

pub fn key() -> Key {
    Key::new(b"twin test key, 32 bytes long....".to_vec()).unwrap()
}

pub fn addresses() -> Vec<IpAddr> {
    vec![
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)),
    ]
}

pub fn config(node: u8) -> Config {
    let mut config = Config::new(NodeId(node), key(), addresses());
    config.interval = INTERVAL;
    config.misses = MISSES;
    config
}

/// Node index in the pair (0 is node 1, 1 is node 2).
pub type Side = usize;

#[derive(Debug, Clone)]
pub struct SimPath {
    pub latency: Duration,
    /// Per mille of datagrams lost, drawn from the seeded generator.
    pub loss_permille: u32,
    /// `cut[from]`: datagrams sent by `from` are lost.
    pub cut: [bool; 2],
}

#[derive(Debug)]
pub struct Node {
    pub twin: Twin,
    pub config: Config,
    pub epoch: u64,
    pub running: bool,
    pub holds: BTreeSet<IpAddr>,
    pub events: Vec<(Instant, Event)>,
    pub actions: Vec<(Instant, AddressAction)>,
    /// Every datagram sent, when `record` is set: (when, path, payload).
    pub sent: Vec<(Instant, PathId, Vec<u8>)>,
    pub record: bool,
    /// Probes under way, answered in order (as the shell must).
    probes: VecDeque<(Instant, Vec<IpAddr>)>,
    /// Leave probes unanswered (a broken shell).
    pub ignore_probes: bool,
    /// Releases the shell has not carried out yet (see [`Pair::release_delay`]).
    releasing: Vec<(Instant, Vec<IpAddr>)>,
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    to: Side,
    path: PathId,
    payload: Vec<u8>,
}

#[derive(Debug)]
pub struct Pair {
    pub start: Instant,
    pub now: Instant,
    pub nodes: [Node; 2],
    pub paths: [SimPath; 2],
    pub strangers: BTreeSet<IpAddr>,
    pub lan_connected: bool,
    pub probe_time: Duration,
    /// How long the shell takes to remove released addresses (netlink runs beside the machine,
    /// so a node says it stands down a moment before its addresses are gone).
    pub release_delay: Duration,
    in_flight: Vec<InFlight>,
    rng: u64,
    clean_since: [Option<Instant>; 2],
    /// Longest time both nodes held an address at once (whatever the paths).
    pub longest_dual: Duration,
    dual_since: Option<Instant>,
}

impl Node {
    fn new(config: Config, epoch: u64, now: Instant) -> Node {
        Node {
            twin: Twin::new(config.clone(), epoch, now),
            config,
            epoch,
            running: true,
            holds: BTreeSet::new(),
            events: Vec::new(),
            actions: Vec::new(),
            sent: Vec::new(),
            record: false,
            probes: VecDeque::new(),
            ignore_probes: false,
            releasing: Vec::new(),
        }
    }

    pub fn count(&self, matches: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|(_, e)| matches(e)).count()
    }

    pub fn first(&self, matches: impl Fn(&Event) -> bool) -> Option<(Instant, Event)> {
        self.events.iter().find(|(_, e)| matches(e)).cloned()
    }

    pub fn takeovers(&self) -> usize {
        self.count(|e| matches!(e, Event::TakeoverStarted { .. }))
    }

    pub fn is_active(&self) -> bool {
        self.running && self.twin.role() == Role::Active
    }
}

impl Pair {
    pub fn new(node1: Config, node2: Config) -> Pair {
        let start = Instant::now();
        let mut pair = Pair {
            start,
            now: start,
            nodes: [Node::new(node1, 1, start), Node::new(node2, 1, start)],
            paths: [
                SimPath {
                    latency: Duration::from_millis(1),
                    loss_permille: 0,
                    cut: [false; 2],
                },
                SimPath {
                    latency: Duration::from_millis(5),
                    loss_permille: 0,
                    cut: [false; 2],
                },
            ],
            strangers: BTreeSet::new(),
            lan_connected: true,
            probe_time: Duration::from_millis(30),
            release_delay: Duration::ZERO,
            in_flight: Vec::new(),
            rng: 0x5eed,
            clean_since: [Some(start); 2],
            longest_dual: Duration::ZERO,
            dual_since: None,
        };
        pair.update_clean();
        pair.flush(0);
        pair.flush(1);
        pair
    }

    /// Node 1 and node 2 with the test defaults, started together.
    pub fn default_pair() -> Pair {
        Pair::new(config(1), config(2))
    }

    pub fn seed(&mut self, seed: u64) {
        self.rng = seed ^ 0x9e37_79b9_7f4a_7c15;
    }

    fn random_permille(&mut self) -> u32 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % 1000) as u32
    }

    pub fn random_below(&mut self, n: u32) -> u32 {
        self.random_permille() % n
    }

    // ---- the network ----------------------------------------------------------------------

    fn path_index(path: PathId) -> usize {
        match path {
            PathId::Link => 0,
            PathId::Second => 1,
        }
    }

    pub fn path(&mut self, path: PathId) -> &mut SimPath {
        &mut self.paths[Self::path_index(path)]
    }

    /// Changes a path's conditions (and so whether it counts as clean for the invariant).
    pub fn set_path(&mut self, path: PathId, change: impl FnOnce(&mut SimPath)) {
        change(self.path(path));
        self.update_clean();
    }

    pub fn cut(&mut self, path: PathId, from: Side) {
        self.set_path(path, |p| p.cut[from] = true);
    }

    pub fn cut_both_ways(&mut self, path: PathId) {
        self.set_path(path, |p| p.cut = [true; 2]);
    }

    pub fn heal(&mut self, path: PathId) {
        self.set_path(path, |p| p.cut = [false; 2]);
    }

    pub fn set_loss(&mut self, path: PathId, permille: u32) {
        self.set_path(path, |p| p.loss_permille = permille);
    }

    /// Cuts every path both ways and the LAN between the two.
    pub fn partition(&mut self) {
        for path in PathId::ALL {
            self.cut_both_ways(path);
        }
        self.lan_connected = false;
    }

    pub fn heal_all(&mut self) {
        for path in PathId::ALL {
            self.heal(path);
        }
        self.lan_connected = true;
    }

    fn update_clean(&mut self) {
        let running = self.nodes.iter().all(|n| n.running);
        let second_path = self.nodes.iter().all(|n| n.config.second_path);
        for i in 0..2 {
            let p = &self.paths[i];
            let configured = i == 0 || second_path;
            let clean = configured && running && p.cut == [false; 2] && p.loss_permille == 0;
            self.clean_since[i] = match (clean, self.clean_since[i]) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(self.now),
                (false, _) => None,
            };
        }
    }

    // ---- nodes ------------------------------------------------------------------------------

    /// The box dies: it sends and hears nothing and answers ARP for nothing.
    pub fn kill(&mut self, side: Side) {
        let node = &mut self.nodes[side];
        node.running = false;
        node.holds.clear();
        node.probes.clear();
        self.in_flight.retain(|f| f.to != side);
        self.update_clean();
    }

    /// The box boots again with a higher epoch (and `config`), holding nothing.
    pub fn restart_with(&mut self, side: Side, config: Config) {
        let epoch = self.nodes[side].epoch + 1;
        let record = self.nodes[side].record;
        let mut node = Node::new(config, epoch, self.now);
        node.record = record;
        // Keep the history of the earlier life for assertions.
        let old = std::mem::replace(&mut self.nodes[side], node);
        self.nodes[side].events = old.events;
        self.nodes[side].actions = old.actions;
        self.nodes[side].sent = old.sent;
        // A boot takes longer than any datagram of the earlier life stays in flight.
        self.in_flight.clear();
        self.update_clean();
        self.flush(side);
    }

    pub fn restart(&mut self, side: Side) {
        let config = self.nodes[side].config.clone();
        self.restart_with(side, config);
    }

    /// Hands a raw datagram to a node, as if it arrived now on `path`.
    pub fn inject(&mut self, to: Side, path: PathId, payload: &[u8]) {
        let now = self.now;
        self.nodes[to].twin.handle_datagram(path, payload, now);
        self.flush(to);
        self.check_invariant();
    }

    /// Drains a node's outputs into the network, the LAN model and the logs.
    pub fn flush(&mut self, side: Side) {
        let now = self.now;
        while let Some(transmit) = self.nodes[side].twin.poll_transmit() {
            if !self.nodes[side].running {
                continue;
            }
            if self.nodes[side].record {
                self.nodes[side]
                    .sent
                    .push((now, transmit.path, transmit.payload.clone()));
            }
            let path = self.paths[Self::path_index(transmit.path)].clone();
            let lost = path.cut[side]
                || (path.loss_permille > 0 && self.random_permille() < path.loss_permille);
            if !lost {
                self.in_flight.push(InFlight {
                    at: now + path.latency,
                    to: 1 - side,
                    path: transmit.path,
                    payload: transmit.payload,
                });
            }
        }
        while let Some(action) = self.nodes[side].twin.poll_action() {
            let node = &mut self.nodes[side];
            match &action {
                AddressAction::Probe(addrs) => {
                    if !node.ignore_probes {
                        node.probes
                            .push_back((now + self.probe_time, addrs.clone()))
                    }
                }
                AddressAction::Claim(addrs) => node.holds.extend(addrs.iter().copied()),
                AddressAction::Release(addrs) => {
                    if self.release_delay.is_zero() {
                        for a in addrs {
                            node.holds.remove(a);
                        }
                    } else {
                        node.releasing
                            .push((now + self.release_delay, addrs.clone()));
                    }
                }
                AddressAction::Announce(_) => {}
            }
            node.actions.push((now, action));
        }
        while let Some(event) = self.nodes[side].twin.poll_event() {
            self.nodes[side].events.push((now, event));
        }
    }

    // ---- the clock --------------------------------------------------------------------------

    fn next_due(&self) -> Option<Instant> {
        let mut due: Vec<Instant> = self.in_flight.iter().map(|f| f.at).collect();
        for node in self.nodes.iter().filter(|n| n.running) {
            due.extend(node.twin.poll_timeout());
            due.extend(node.probes.front().map(|(at, _)| *at));
            due.extend(node.releasing.iter().map(|(at, _)| *at));
        }
        due.into_iter().min()
    }

    /// Runs everything due at `self.now`.
    fn run_due(&mut self) {
        let now = self.now;
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].at <= now {
                let f = self.in_flight.remove(i);
                if self.nodes[f.to].running {
                    self.nodes[f.to]
                        .twin
                        .handle_datagram(f.path, &f.payload, now);
                    self.flush(f.to);
                }
            } else {
                i += 1;
            }
        }
        for node in &mut self.nodes {
            let (done, pending): (Vec<_>, Vec<_>) =
                node.releasing.drain(..).partition(|(at, _)| *at <= now);
            node.releasing = pending;
            for (_, addrs) in done {
                for a in addrs {
                    node.holds.remove(&a);
                }
            }
        }
        for side in 0..2 {
            if !self.nodes[side].running {
                continue;
            }
            if self.nodes[side]
                .twin
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.nodes[side].twin.handle_timeout(now);
                self.flush(side);
            }
            while self.nodes[side]
                .probes
                .front()
                .is_some_and(|(at, _)| *at <= now)
            {
                let Some((_, probed)) = self.nodes[side].probes.pop_front() else {
                    break;
                };
                let other = &self.nodes[1 - side];
                let conflicts = probed
                    .into_iter()
                    .filter(|a| {
                        self.strangers.contains(a)
                            || (self.lan_connected && other.running && other.holds.contains(a))
                    })
                    .collect();
                self.nodes[side].twin.handle_probe_result(conflicts, now);
                self.flush(side);
            }
        }
    }

    /// Jumps from deadline to delivery up to `until`, running everything due; the clock ends at
    /// `until`.
    pub fn drive_until(&mut self, until: Instant) {
        loop {
            self.run_due();
            self.check_invariant();
            match self.next_due() {
                Some(at) if at <= until => self.now = self.now.max(at),
                _ => break,
            }
        }
        self.now = until;
        self.run_due();
        self.check_invariant();
    }

    pub fn drive_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.drive_until(until);
    }

    // ---- the invariant ----------------------------------------------------------------------

    pub fn both_hold(&self) -> bool {
        self.nodes[0]
            .holds
            .intersection(&self.nodes[1].holds)
            .next()
            .is_some()
    }

    fn check_invariant(&mut self) {
        if !self.both_hold() {
            if let Some(since) = self.dual_since.take() {
                self.longest_dual = self.longest_dual.max(self.now - since);
            }
            return;
        }
        let since = *self.dual_since.get_or_insert(self.now);
        self.longest_dual = self.longest_dual.max(self.now - since);
        for (i, clean) in self.clean_since.iter().enumerate() {
            let Some(clean_since) = clean else { continue };
            let grace = INTERVAL + self.paths[i].latency;
            assert!(
                self.now <= *clean_since + grace,
                "both nodes hold an address at {:?} although path {i} has been clean since {:?}\n\
                 node 1: {:?}\nnode 2: {:?}",
                self.now - self.start,
                *clean_since - self.start,
                self.nodes[0].twin.status(self.now),
                self.nodes[1].twin.status(self.now),
            );
        }
    }

    /// Exactly one running node active, holding every address; the other holding none.
    pub fn exactly_one_owner(&self) -> bool {
        let active: Vec<&Node> = self.nodes.iter().filter(|n| n.is_active()).collect();
        active.len() == 1
            && active[0].holds == addresses().into_iter().collect()
            && self.nodes.iter().filter(|n| !n.holds.is_empty()).count() == 1
    }
}
