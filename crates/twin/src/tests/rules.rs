//! One test per rule of SPEC §7, named after it.

use std::time::Duration;

use super::pair::{addresses, config, key, Pair, INTERVAL, MISSES};
use crate::wire::{Keepalive, Kind, Phase, Sealer, VERSION};
use crate::{
    AddressAction, Advertised, DropReason, Event, Key, PathId, PeerState, ReleaseError, Role,
    RoleCause, TakeoverCause,
};

const NODE1: usize = 0;
const NODE2: usize = 1;
/// The slower path's latency in the harness.
const MAX_LATENCY: Duration = Duration::from_millis(5);

fn detection_time() -> Duration {
    INTERVAL * (MISSES + 1)
}

/// Node 1 active, node 2 standby, both hearing each other.
fn settled() -> Pair {
    let mut pair = Pair::default_pair();
    pair.drive_for(Duration::from_secs(1));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE1].is_active());
    pair
}

/// Node 1 started with no twin to hear (node 2 dead from the start).
fn node_1_alone() -> Pair {
    let mut pair = Pair::default_pair();
    pair.kill(NODE2);
    pair
}

fn is_takeover_started(e: &Event) -> bool {
    matches!(e, Event::TakeoverStarted { .. })
}

fn a_keepalive(node_id: u8, epoch: u64, seq: u64, term: u64, phase: Phase) -> Keepalive {
    Keepalive {
        node_id,
        epoch,
        seq,
        term,
        phase,
        standing_down: false,
        state: PeerState::Online,
        calls: 0,
        registrations: 0,
        health: 100,
        replication_position: 0,
        kind: Kind::Beat,
    }
}

fn test_sealer() -> Sealer {
    Sealer::new(key().keyed)
}

#[test]
fn two_nodes_starting_together_make_node_1_active() {
    let mut pair = Pair::default_pair();
    pair.drive_for(Duration::from_secs(2));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE1].is_active());
    assert_eq!(pair.nodes[NODE2].twin.role(), Role::Standby);
    let (at, started) = pair.nodes[NODE1].first(is_takeover_started).unwrap();
    assert_eq!(
        started,
        Event::TakeoverStarted {
            cause: TakeoverCause::Election,
            term: 1
        }
    );
    // Settled by hearing each other, not by waiting out the detection time.
    assert!(at - pair.start < INTERVAL, "{:?}", at - pair.start);
    assert_eq!(pair.nodes[NODE2].takeovers(), 0);
    assert_eq!(
        pair.nodes[NODE2].twin.term(),
        1,
        "the standby adopts the term"
    );
}

#[test]
fn the_election_prefers_an_online_node_over_node_1() {
    let mut pair = Pair::default_pair();
    let draining = Advertised {
        state: PeerState::Draining,
        ..Advertised::default()
    };
    let now = pair.now;
    pair.nodes[NODE1].twin.handle_advertised(draining, now);
    pair.drive_for(Duration::from_secs(2));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE2].is_active());
}

#[test]
fn a_node_alone_takes_over_after_the_detection_time() {
    let mut pair = node_1_alone();
    pair.drive_for(Duration::from_secs(2));
    let node = &pair.nodes[NODE1];
    let (at, started) = node.first(is_takeover_started).unwrap();
    assert_eq!(
        started,
        Event::TakeoverStarted {
            cause: TakeoverCause::TwinSilent,
            term: 1
        }
    );
    assert_eq!(at - pair.start, detection_time());
    assert_eq!(node.count(|e| matches!(e, Event::PathDown(_))), 2);
    assert_eq!(node.twin.status(pair.now).queries.sent, 2);
    assert!(node.is_active());
    let (_, done) = node.first(|e| matches!(e, Event::TakeoverDone(_))).unwrap();
    let Event::TakeoverDone(report) = done else {
        unreachable!()
    };
    assert_eq!(report.twin_silent_for, None, "never heard");
    assert_eq!(report.probe, pair.probe_time);
    assert_eq!(report.attempts, 1);
}

#[test]
fn a_silent_twin_is_queried_then_taken_over_within_the_detection_time() {
    let mut pair = settled();
    pair.drive_for(Duration::from_millis(37)); // die at an arbitrary point between beats
    let died = pair.now;
    pair.kill(NODE1);
    pair.drive_for(Duration::from_secs(3));

    let survivor = &pair.nodes[NODE2];
    let (decided, _) = survivor.first(is_takeover_started).unwrap();
    let decision = decided - died;
    assert!(
        decision <= detection_time() + MAX_LATENCY,
        "decided {decision:?} after the death"
    );
    assert!(decision >= INTERVAL * MISSES, "too early: {decision:?}");
    // Queried once on every path, one interval before the decision, after both paths went down.
    let status = survivor.twin.status(pair.now);
    assert_eq!(status.queries.sent, 2);
    assert_eq!(status.queries.answers_received, 0);
    let (lost, _) = survivor.first(|e| *e == Event::TwinLost).unwrap();
    assert_eq!(lost, decided);
    let downs: Vec<_> = survivor
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::PathDown(_)))
        .collect();
    assert_eq!(downs.len(), 2);
    // The query goes out when the detector finds the last path silent, one interval before the
    // decision; the operator's alarms follow one interval after that verdict, at the next beat.
    let last_alarm = downs.iter().map(|(at, _)| *at).max().unwrap();
    assert!(
        last_alarm >= decided && last_alarm < decided + INTERVAL,
        "alarm at {:?}, decision at {:?}",
        last_alarm - pair.start,
        decided - pair.start
    );

    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE2].is_active());
    let last = status.last_takeover.unwrap();
    assert_eq!(last.cause, TakeoverCause::TwinSilent);
    assert_eq!(last.term, 2);
    assert_eq!(last.decision_to_claim_ms, 30);
    assert_eq!(last.probe_ms, 30);
    let silent = last.twin_silent_ms.unwrap();
    assert!((400..=405).contains(&silent), "{silent} ms");
    // Within the product's budget: twin dead to serving on the service address in 1 s.
    assert!(decision + pair.probe_time < Duration::from_secs(1));
}

#[test]
fn a_cut_path_raises_an_alarm_and_its_return_clears_it() {
    let mut pair = settled();
    pair.cut_both_ways(PathId::Link);
    pair.drive_for(Duration::from_secs(2));
    for node in &pair.nodes {
        assert_eq!(node.count(|e| *e == Event::PathDown(PathId::Link)), 1);
        assert_eq!(node.count(|e| *e == Event::PathDown(PathId::Second)), 0);
        assert_eq!(node.count(|e| *e == Event::TwinLost), 0);
        let status = node.twin.status(pair.now);
        assert!(!status.paths[0].up);
        assert!(status.paths[0].misses >= 19, "{:?}", status.paths[0]);
        assert!(status.paths[1].up);
        assert_eq!(status.queries.sent, 0);
    }
    assert_eq!(pair.nodes[NODE2].takeovers(), 0);
    assert!(pair.exactly_one_owner());

    pair.heal(PathId::Link);
    pair.drive_for(Duration::from_secs(1));
    for node in &pair.nodes {
        assert_eq!(node.count(|e| *e == Event::PathUp(PathId::Link)), 1);
        let status = node.twin.status(pair.now);
        assert!(status.paths.iter().all(|p| p.up && p.misses == 0));
        assert!(status.paths[0].last_heard_ms.unwrap() < 100);
    }
    assert!(pair.nodes[NODE1].is_active());
}

/// Two keep-alives lost in a row make the third race the silence timer: the detector may call
/// the path silent for a moment, but the operator hears of it only when it stays silent for
/// one more interval (the soak bench counted 45 down/up pairs in 10 minutes at 10 % loss
/// before this).
#[test]
fn a_path_silent_for_less_than_one_more_interval_raises_no_alarm() {
    let mut pair = settled();
    pair.cut_both_ways(PathId::Link);
    pair.drive_for(INTERVAL * MISSES + INTERVAL / 2);
    for node in &pair.nodes {
        assert!(
            !node.twin.status(pair.now).paths[0].up,
            "the detector has the link silent"
        );
    }
    pair.heal(PathId::Link);
    pair.drive_for(Duration::from_secs(1));
    for node in &pair.nodes {
        assert_eq!(node.count(|e| matches!(e, Event::PathDown(_))), 0);
        assert_eq!(node.count(|e| matches!(e, Event::PathUp(_))), 0);
        assert!(node.twin.status(pair.now).paths[0].up);
    }
    assert_eq!(pair.nodes[NODE2].takeovers(), 0);
    assert!(pair.nodes[NODE1].is_active());
}

#[test]
fn one_lossy_path_raises_an_alarm_but_no_takeover() {
    let mut pair = settled();
    pair.seed(7);
    pair.set_loss(PathId::Link, 600);
    pair.drive_for(Duration::from_secs(60));
    for node in &pair.nodes {
        assert!(node.count(|e| *e == Event::PathDown(PathId::Link)) > 0);
        assert_eq!(node.count(|e| *e == Event::TwinLost), 0);
    }
    assert_eq!(pair.nodes[NODE2].takeovers(), 0);
    assert!(pair.nodes[NODE1].is_active());
    assert!(pair.exactly_one_owner());
}

#[test]
fn the_status_query_is_answered_and_prevents_takeover() {
    let mut pair = settled();
    // Node 2 stops hearing node 1 on both paths until the moment it asks.
    pair.cut(PathId::Link, NODE1);
    pair.cut(PathId::Second, NODE1);
    while pair.nodes[NODE2].twin.status(pair.now).queries.sent == 0 {
        pair.drive_for(Duration::from_millis(1));
    }
    pair.heal_all();
    pair.drive_for(Duration::from_secs(2));
    let node2 = &pair.nodes[NODE2];
    assert_eq!(node2.twin.status(pair.now).queries.answers_received, 1);
    assert_eq!(pair.nodes[NODE1].twin.status(pair.now).queries.answered, 2);
    assert_eq!(node2.count(|e| *e == Event::TwinLost), 0);
    assert_eq!(node2.takeovers(), 0);
    assert!(pair.nodes[NODE1].is_active());
}

#[test]
fn the_status_query_keeps_a_lossy_pair_together() {
    // 30 % loss on both paths: both paths go silent now and then, and the query (or a keep-alive
    // within the extra interval) saves the day.
    let mut pair = settled();
    pair.seed(11);
    pair.set_loss(PathId::Link, 300);
    pair.set_loss(PathId::Second, 300);
    pair.drive_for(Duration::from_secs(300));
    let status = pair.nodes[NODE2].twin.status(pair.now);
    assert!(status.queries.sent > 0, "{:?}", status.queries);
    assert!(status.queries.answers_received > 0, "{:?}", status.queries);
    assert_eq!(pair.nodes[NODE2].takeovers(), 0);
    assert!(pair.exactly_one_owner());
}

#[test]
fn a_draining_or_offline_twin_is_not_taken_over() {
    let mut pair = settled();
    for state in [PeerState::Draining, PeerState::Offline] {
        let now = pair.now;
        let adv = Advertised {
            state,
            calls: 3,
            ..Advertised::default()
        };
        pair.nodes[NODE1].twin.handle_advertised(adv, now);
        pair.flush(NODE1);
        pair.drive_for(Duration::from_secs(10));
        let twin = pair.nodes[NODE2].twin.status(pair.now).twin.unwrap();
        assert_eq!(twin.state, state);
        assert_eq!(twin.calls, 3);
        assert!(twin.alive);
        assert_eq!(pair.nodes[NODE2].takeovers(), 0);
        assert!(pair.nodes[NODE1].is_active());
    }
}

#[test]
fn a_higher_term_makes_the_active_yield_at_once() {
    let mut pair = settled();
    // Node 2 stops hearing node 1; node 1 still hears node 2.
    pair.cut(PathId::Link, NODE1);
    pair.cut(PathId::Second, NODE1);
    pair.drive_for(Duration::from_secs(2));

    let (started, _) = pair.nodes[NODE2].first(is_takeover_started).unwrap();
    let (yielded_at, yielded) = pair.nodes[NODE1]
        .first(|e| matches!(e, Event::Yielded { .. }))
        .unwrap();
    assert_eq!(
        yielded,
        Event::Yielded {
            our_term: 1,
            their_term: 2
        }
    );
    // The takeover is advertised at once and the cross-connect has 1 ms of latency.
    assert_eq!(yielded_at - started, Duration::from_millis(1));
    assert!(pair.nodes[NODE1]
        .actions
        .iter()
        .any(|(at, a)| { *at == yielded_at && *a == AddressAction::Release(addresses()) }));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE2].is_active());
    assert_eq!(pair.nodes[NODE1].twin.term(), 2);
    assert_eq!(pair.longest_dual, Duration::ZERO);
}

#[test]
fn partition_and_heal_leaves_exactly_one_owner() {
    // The active keeps its addresses through the partition, the standby takes them with a higher
    // term: after the heal the lower term yields.
    let mut pair = settled();
    pair.partition();
    pair.drive_for(Duration::from_secs(2));
    assert!(pair.nodes[NODE1].is_active() && pair.nodes[NODE2].is_active());
    pair.heal_all();
    pair.drive_for(Duration::from_secs(2));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE2].is_active(), "term 2 beats term 1");
    assert_eq!(
        pair.nodes[NODE1].count(|e| *e
            == Event::Yielded {
                our_term: 1,
                their_term: 2
            }),
        1
    );

    // Both alone from the start: both take over with term 1; on the heal node 2 yields.
    let mut pair = Pair::default_pair();
    pair.partition();
    pair.drive_for(Duration::from_secs(2));
    assert!(pair.nodes[NODE1].is_active() && pair.nodes[NODE2].is_active());
    pair.heal_all();
    pair.drive_for(Duration::from_secs(2));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE1].is_active(), "equal terms: node 2 yields");
    let node2 = &pair.nodes[NODE2];
    assert_eq!(
        node2.count(|e| *e
            == Event::Yielded {
                our_term: 1,
                their_term: 1
            }),
        1
    );
    assert_eq!(
        node2.count(|e| *e
            == Event::RoleChanged {
                from: Role::Active,
                to: Role::Standby,
                term: 1,
                cause: RoleCause::Fenced
            }),
        1
    );
    // Both owned the addresses through the partition: allowed, they could not hear each other.
    assert!(pair.longest_dual > Duration::from_secs(1));
}

#[test]
fn replayed_keepalives_are_dropped_and_counted() {
    let mut pair = Pair::default_pair();
    pair.nodes[NODE2].record = true;
    pair.drive_for(Duration::from_secs(1));
    let captured: Vec<_> = pair.nodes[NODE2].sent.clone();
    assert!(captured.len() > 10);
    pair.drive_for(Duration::from_millis(10)); // all of them delivered once
    let before = pair.nodes[NODE1].twin.status(pair.now).totals;
    for (_, path, payload) in &captured[captured.len() - 5..] {
        pair.inject(NODE1, *path, payload);
    }
    // Older than the 64-entry window.
    pair.inject(NODE1, PathId::Link, &captured[0].2);
    let after = pair.nodes[NODE1].twin.status(pair.now).totals;
    assert_eq!(after.replayed - before.replayed, 6);
    assert_eq!(after.received, before.received);
    assert!(pair.nodes[NODE1].events.iter().any(|(_, e)| *e
        == Event::Dropped {
            path: PathId::Link,
            reason: DropReason::Replayed
        }));

    // After node 2 restarts (higher epoch), its earlier life's datagrams are replays too, even
    // with sequence numbers ahead of the new ones.
    pair.restart(NODE2);
    pair.drive_for(Duration::from_secs(1));
    let before = pair.nodes[NODE1].twin.status(pair.now).totals;
    let (_, path, payload) = captured.last().unwrap();
    pair.inject(NODE1, *path, payload);
    let after = pair.nodes[NODE1].twin.status(pair.now).totals;
    assert_eq!(after.replayed - before.replayed, 1);
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE1].is_active());
}

#[test]
fn forged_keepalives_are_dropped_and_counted() {
    let mut pair = settled();
    let other_key = Sealer::new(Key::new(vec![0x42; 32]).unwrap().keyed);
    // A forger claiming a huge term: were it believed, node 1 would yield.
    let forged = other_key.seal(&a_keepalive(2, 1, 1_000_000, 99, Phase::Active));
    pair.inject(NODE1, PathId::Second, &forged);
    let mut tampered = test_sealer().seal(&a_keepalive(2, 1, 1_000_000, 99, Phase::Active));
    tampered[5] ^= 1;
    pair.inject(NODE1, PathId::Link, &tampered);
    pair.inject(
        NODE1,
        PathId::Link,
        b"not a keep-alive at all, but long enough to have a tag",
    );

    let status = pair.nodes[NODE1].twin.status(pair.now);
    assert_eq!(status.paths[0].counters.forged, 2);
    assert_eq!(status.paths[1].counters.forged, 1);
    assert_eq!(status.totals.forged, 3);
    assert_eq!(
        pair.nodes[NODE1].count(|e| matches!(
            e,
            Event::Dropped {
                reason: DropReason::Forged,
                ..
            }
        )),
        3
    );
    assert_eq!(pair.nodes[NODE1].twin.term(), 1);
    assert!(pair.nodes[NODE1].is_active());
}

#[test]
fn reflected_keepalives_are_dropped() {
    let mut pair = Pair::default_pair();
    pair.nodes[NODE1].record = true;
    pair.drive_for(Duration::from_secs(1));
    let (_, path, own) = pair.nodes[NODE1].sent.last().cloned().unwrap();
    pair.inject(NODE1, path, &own);
    let counters = pair.nodes[NODE1].twin.status(pair.now).totals;
    assert_eq!(counters.reflected, 1);
    // A third node id under the right key is dropped as well.
    pair.inject(
        NODE1,
        PathId::Link,
        &test_sealer().seal(&a_keepalive(3, 1, 0, 0, Phase::Standby)),
    );
    assert_eq!(
        pair.nodes[NODE1].twin.status(pair.now).totals.unknown_node,
        1
    );
    assert!(pair.exactly_one_owner());
}

#[test]
fn unknown_version_is_dropped() {
    let mut pair = settled();
    let future = test_sealer().seal_raw(
        VERSION + 1,
        &a_keepalive(2, 1, 1_000_000, 99, Phase::Active),
    );
    pair.inject(NODE1, PathId::Link, &future);
    let status = pair.nodes[NODE1].twin.status(pair.now);
    assert_eq!(status.totals.version, 1);
    assert_eq!(status.term, 1);
    assert!(pair.nodes[NODE1].events.iter().any(|(_, e)| *e
        == Event::Dropped {
            path: PathId::Link,
            reason: DropReason::Version
        }));
}

#[test]
fn a_twin_restart_with_a_higher_epoch_is_accepted() {
    let mut pair = settled();
    pair.restart(NODE2);
    pair.drive_for(Duration::from_secs(2));
    let node1 = &pair.nodes[NODE1];
    assert_eq!(node1.count(|e| *e == Event::TwinRestarted { epoch: 2 }), 1);
    let status = node1.twin.status(pair.now);
    assert_eq!(status.totals.replayed, 0);
    assert_eq!(status.twin.unwrap().epoch, 2);
    assert!(status.paths.iter().all(|p| p.up));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE1].is_active());
    assert_eq!(pair.nodes[NODE2].twin.term(), 1, "adopted from the active");
}

#[test]
fn a_restarted_node_comes_back_standby() {
    let mut pair = settled();
    pair.kill(NODE1);
    pair.drive_for(Duration::from_secs(2));
    assert!(pair.nodes[NODE2].is_active());
    pair.restart(NODE1);
    pair.drive_for(Duration::from_secs(10));
    assert!(pair.exactly_one_owner());
    assert!(
        pair.nodes[NODE2].is_active(),
        "no preempt: node 2 keeps them"
    );
    assert_eq!(pair.nodes[NODE1].twin.role(), Role::Standby);
    assert_eq!(pair.nodes[NODE1].twin.term(), 2);
    assert_eq!(
        pair.nodes[NODE1].takeovers(),
        1,
        "only the election before the death"
    );
}

#[test]
fn a_restarted_node_1_with_preempt_takes_its_addresses_back() {
    let mut pair = settled();
    pair.kill(NODE1);
    pair.drive_for(Duration::from_secs(2));
    let mut preempting = config(1);
    preempting.preempt = true;
    let restarted = pair.now;
    pair.restart_with(NODE1, preempting);
    pair.drive_for(Duration::from_secs(2));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE1].is_active());
    let (at, started) = pair.nodes[NODE1]
        .events
        .iter()
        .rev()
        .find(|(_, e)| is_takeover_started(e))
        .cloned()
        .unwrap();
    assert_eq!(
        started,
        Event::TakeoverStarted {
            cause: TakeoverCause::Preempt,
            term: 3
        }
    );
    // It waits for the detection time of steady contact before preempting.
    assert!(at - restarted >= detection_time());
    assert_eq!(
        pair.nodes[NODE2].count(|e| matches!(e, Event::Yielded { .. })),
        1
    );
    assert_eq!(pair.longest_dual, Duration::ZERO);
}

#[test]
fn preempt_waits_until_the_restarted_node_holds_its_twins_state() {
    let mut pair = settled();
    pair.kill(NODE1);
    pair.drive_for(Duration::from_secs(2));
    let mut preempting = config(1);
    preempting.preempt = true;
    pair.restart_with(NODE1, preempting);
    let now = pair.now;
    pair.nodes[NODE1].twin.set_ready(false, now);
    pair.drive_for(Duration::from_secs(5));
    assert!(
        pair.nodes[NODE2].is_active(),
        "not synced: node 1 does not preempt"
    );
    let now = pair.now;
    pair.nodes[NODE1].twin.set_ready(true, now);
    let ready_at = pair.now;
    pair.drive_for(Duration::from_secs(2));
    assert!(pair.nodes[NODE1].is_active(), "synced: it takes them back");
    let (at, _) = pair.nodes[NODE1]
        .events
        .iter()
        .rev()
        .find(|(_, e)| is_takeover_started(e))
        .cloned()
        .unwrap();
    assert!(at >= ready_at);
    assert_eq!(pair.longest_dual, Duration::ZERO);
}

#[test]
fn preempt_on_node_2_is_ignored() {
    let mut two = config(2);
    two.preempt = true;
    let mut pair = Pair::new(config(1), two.clone());
    pair.drive_for(Duration::from_secs(1));
    pair.kill(NODE2);
    pair.drive_for(Duration::from_secs(1));
    pair.restart_with(NODE2, two);
    pair.drive_for(Duration::from_secs(5));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE1].is_active());
    assert_eq!(pair.nodes[NODE2].takeovers(), 0);
}

#[test]
fn a_probe_conflict_blocks_the_claim() {
    let mut pair = node_1_alone();
    let squatted = addresses()[1];
    pair.strangers.insert(squatted);
    pair.drive_for(Duration::from_secs(5));
    let node = &pair.nodes[NODE1];
    assert!(!node.is_active());
    assert!(node.holds.is_empty());
    assert!(!node
        .actions
        .iter()
        .any(|(_, a)| matches!(a, AddressAction::Claim(_))));
    let conflicts = node.count(|e| *e == Event::ProbeConflict(vec![squatted]));
    assert!(conflicts >= 2, "retried: {conflicts}");
    // Backing off: far fewer probes than intervals.
    assert!(conflicts <= 4, "{conflicts}");
    assert_eq!(node.twin.term(), 1, "a retry keeps its term");

    pair.strangers.clear();
    pair.drive_for(Duration::from_secs(10));
    assert!(pair.nodes[NODE1].is_active());
    let report = pair.nodes[NODE1]
        .twin
        .status(pair.now)
        .last_takeover
        .unwrap();
    assert!(report.attempts > 2);
    assert!(report.decision_to_claim_ms > 5000);
    assert_eq!(report.probe_ms, 30);
}

#[test]
fn announcements_repeat_then_again_after_a_second() {
    let mut pair = node_1_alone();
    pair.drive_for(Duration::from_secs(5));
    let actions = &pair.nodes[NODE1].actions;
    let claimed = actions
        .iter()
        .find(|(_, a)| matches!(a, AddressAction::Claim(_)))
        .map(|(at, _)| *at)
        .unwrap();
    let announced: Vec<Duration> = actions
        .iter()
        .filter(|(_, a)| *a == AddressAction::Announce(addresses()))
        .map(|(at, _)| *at - claimed)
        .collect();
    let ms = Duration::from_millis;
    assert_eq!(announced, vec![ms(0), ms(30), ms(60), ms(1000)]);
    // The order of the first round: claim, then announce.
    let kinds: Vec<&str> = actions
        .iter()
        .map(|(_, a)| match a {
            AddressAction::Probe(_) => "probe",
            AddressAction::Claim(_) => "claim",
            AddressAction::Announce(_) => "announce",
            AddressAction::Release(_) => "release",
        })
        .collect();
    assert_eq!(
        kinds,
        ["probe", "claim", "announce", "announce", "announce", "announce"]
    );
}

#[test]
fn a_released_address_still_up_at_the_twins_probe_is_retried_after_one_interval() {
    let mut pair = Pair::default_pair();
    // The shell removes released addresses 40 ms after the machine says so: longer than the
    // keep-alive's trip and the twin's probe start.
    pair.release_delay = Duration::from_millis(40);
    pair.drive_for(Duration::from_secs(1));
    assert!(pair.nodes[NODE1].is_active());
    let released_at = pair.now;
    assert_eq!(
        pair.nodes[NODE1].twin.handle_release_request(released_at),
        Ok(())
    );
    pair.flush(NODE1);
    pair.drive_for(Duration::from_secs(2));
    assert!(pair.nodes[NODE2].is_active());
    let node2 = &pair.nodes[NODE2];
    assert!(
        node2.count(|e| matches!(e, Event::ProbeConflict(_))) >= 1,
        "the probe met the address still up"
    );
    let (claimed_at, _) = node2
        .actions
        .iter()
        .find(|(_, a)| matches!(a, AddressAction::Claim(_)))
        .cloned()
        .unwrap();
    // One interval (100 ms) and a probe, not the second a silent twin's conflict waits.
    assert!(
        claimed_at - released_at < Duration::from_millis(300),
        "{:?}",
        claimed_at - released_at
    );
    assert!(pair.exactly_one_owner());
}

#[test]
fn a_release_in_the_middle_stops_the_announcements() {
    let mut pair = Pair::default_pair();
    pair.drive_for(Duration::from_millis(40)); // node 1 claimed at 31 ms
    assert!(pair.nodes[NODE1].is_active());
    let now = pair.now;
    assert_eq!(pair.nodes[NODE1].twin.handle_release_request(now), Ok(()));
    pair.flush(NODE1);
    pair.drive_for(Duration::from_secs(3));
    let announces = pair.nodes[NODE1]
        .actions
        .iter()
        .filter(|(_, a)| matches!(a, AddressAction::Announce(_)))
        .count();
    assert_eq!(announces, 1, "only the round at the claim");
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE2].is_active());
}

#[test]
fn a_release_without_a_twin_to_take_over_is_refused() {
    let mut pair = node_1_alone();
    pair.drive_for(Duration::from_secs(1));
    assert!(pair.nodes[NODE1].is_active());
    let now = pair.now;
    assert_eq!(
        pair.nodes[NODE1].twin.handle_release_request(now),
        Err(ReleaseError::TwinNotHeard)
    );
    pair.flush(NODE1);
    pair.drive_for(Duration::from_secs(1));
    assert!(pair.nodes[NODE1].is_active());
    assert!(!pair.nodes[NODE1].twin.status(pair.now).standing_down);
}

#[test]
fn an_operator_release_hands_the_addresses_to_the_twin() {
    let mut pair = settled();
    let now = pair.now;
    assert_eq!(pair.nodes[NODE1].twin.handle_release_request(now), Ok(()));
    pair.flush(NODE1);
    pair.drive_for(Duration::from_secs(2));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE2].is_active());
    let (_, started) = pair.nodes[NODE2].first(is_takeover_started).unwrap();
    assert_eq!(
        started,
        Event::TakeoverStarted {
            cause: TakeoverCause::Election,
            term: 2
        }
    );
    assert_eq!(
        pair.nodes[NODE1].count(|e| matches!(
            e,
            Event::RoleChanged {
                cause: RoleCause::Operator,
                ..
            }
        )),
        1
    );
    // Once the twin serves, node 1 stands down no longer, but does not take back (no preempt).
    assert!(!pair.nodes[NODE1].twin.status(pair.now).standing_down);
    pair.drive_for(Duration::from_secs(5));
    assert!(pair.nodes[NODE2].is_active());
}

#[test]
fn status_names_both_nodes_and_serialises() {
    let mut pair = settled();
    pair.drive_for(Duration::from_millis(50));
    let status = pair.nodes[NODE2].twin.status(pair.now);
    assert_eq!(status.node_id, 2);
    assert_eq!(status.role, Role::Standby);
    assert_eq!(status.term, 1);
    assert_eq!(status.epoch, 1);
    let twin = status.twin.as_ref().unwrap();
    assert_eq!((twin.node_id, twin.role, twin.term), (1, Role::Active, 1));
    assert!(status.totals.sent > 0 && status.totals.received > 0);
    assert_eq!(status.totals.dropped(), 0);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["twin"]["role"], "active");
    assert_eq!(json["paths"][1]["path"], "second");
    assert!(json["last_takeover"].is_null());
    assert_eq!(
        pair.nodes[NODE1]
            .twin
            .status(pair.now)
            .last_takeover
            .unwrap()
            .cause,
        TakeoverCause::Election
    );
}

#[test]
fn config_is_validated_and_clamped() {
    let mut bad = config(3);
    assert!(bad.validate().is_err());
    bad = config(1);
    bad.interval = Duration::ZERO;
    assert!(bad.validate().is_err());
    bad = config(1);
    bad.misses = 0;
    assert!(bad.validate().is_err());
    assert!(config(2).validate().is_ok());
    assert!(Key::new(vec![0; 15]).is_err());
    assert_eq!(format!("{:?}", key()), "Key(..)");
    // A zero interval is clamped rather than spinning.
    let start = std::time::Instant::now();
    let twin = crate::Twin::new(bad_interval(), 1, start);
    assert!(twin.poll_timeout().is_some());
}

fn bad_interval() -> crate::Config {
    let mut c = config(1);
    c.interval = Duration::ZERO;
    c.misses = 0;
    c
}

#[test]
fn without_a_second_path_only_the_link_is_used() {
    let mut one = config(1);
    one.second_path = false;
    let mut two = config(2);
    two.second_path = false;
    let mut pair = Pair::new(one, two);
    pair.drive_for(Duration::from_secs(1));
    assert!(pair.exactly_one_owner());
    let status = pair.nodes[NODE1].twin.status(pair.now);
    assert_eq!(status.paths.len(), 1);
    pair.cut_both_ways(PathId::Link);
    pair.drive_for(Duration::from_secs(3));
    // The only path is gone, so the twin is gone for node 2; but node 1 still answers ARP on the
    // LAN, so the probe keeps node 2 from claiming.
    let node2 = &pair.nodes[NODE2];
    assert_eq!(node2.count(|e| *e == Event::TwinLost), 1);
    assert!(node2.count(|e| matches!(e, Event::ProbeConflict(_))) >= 2);
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE1].is_active());

    // With the LAN cut as well, both serve their side until the heal.
    pair.lan_connected = false;
    pair.drive_for(Duration::from_secs(10));
    assert!(pair.nodes[NODE2].is_active());
    pair.heal_all();
    pair.drive_for(Duration::from_secs(1));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE2].is_active(), "the higher term");
}

#[test]
fn a_status_query_is_answered_at_once_on_its_path() {
    let start = std::time::Instant::now();
    let mut twin = crate::Twin::new(config(1), 1, start);
    let mut query = a_keepalive(2, 1, 0, 0, Phase::Standby);
    query.kind = Kind::Query { nonce: 4242 };
    twin.handle_datagram(PathId::Second, &test_sealer().seal(&query), start);
    let answer = twin.poll_transmit().unwrap();
    assert_eq!(answer.path, PathId::Second);
    let opened = test_sealer().open(&answer.payload).unwrap();
    assert_eq!(opened.kind, Kind::Answer { nonce: 4242 });
    assert_eq!(opened.node_id, 1);
    // What follows (node 1 wins the election against this standby twin) are beats.
    while let Some(more) = twin.poll_transmit() {
        let opened = test_sealer().open(&more.payload).unwrap();
        assert_eq!(
            opened.kind,
            Kind::Beat,
            "answered once, on the query's path"
        );
    }
}

#[test]
fn time_going_backwards_is_taken_as_the_latest_time() {
    let start = std::time::Instant::now();
    let mut twin = crate::Twin::new(config(1), 1, start);
    twin.handle_timeout(start + INTERVAL * 2);
    while twin.poll_transmit().is_some() {}
    twin.handle_timeout(start);
    assert_eq!(twin.poll_transmit(), None);
    assert!(twin.poll_timeout().unwrap() > start + INTERVAL * 2);
    let status = twin.status(start);
    assert!(status.paths.iter().all(|p| p.misses == 0));
}

#[test]
fn a_quick_restart_of_the_active_is_followed_by_an_election() {
    // Node 1 reboots faster than the detection time: node 2 never sees it silent, sees it come
    // back standby with a new epoch, and the election gives node 1 the addresses again.
    let mut pair = settled();
    pair.restart(NODE1);
    pair.drive_for(Duration::from_secs(1));
    assert!(pair.exactly_one_owner());
    assert!(pair.nodes[NODE1].is_active());
    assert_eq!(pair.nodes[NODE1].twin.term(), 2);
    assert_eq!(
        pair.nodes[NODE2].count(|e| *e == Event::TwinRestarted { epoch: 2 }),
        1
    );
    assert_eq!(pair.nodes[NODE2].takeovers(), 0);
}

#[test]
fn the_answer_to_an_abandoned_probe_does_not_claim() {
    let start = std::time::Instant::now();
    let mut twin = crate::Twin::new(config(1), 1, start);
    let drain = |twin: &mut crate::Twin| {
        let mut actions = Vec::new();
        while let Some(a) = twin.poll_action() {
            actions.push(a);
        }
        while twin.poll_transmit().is_some() {}
        while twin.poll_event().is_some() {}
        actions
    };
    // A standby twin heard: node 1 wins the election and probes (term 1).
    let mut seq = 0;
    let mut heard = |term, phase| {
        seq += 1;
        test_sealer().seal(&a_keepalive(2, 1, seq, term, phase))
    };
    twin.handle_datagram(PathId::Link, &heard(0, Phase::Standby), start);
    assert_eq!(drain(&mut twin), [AddressAction::Probe(addresses())]);
    // The twin claims with a higher term: the probe is abandoned.
    twin.handle_datagram(PathId::Link, &heard(5, Phase::Probing), start);
    assert_eq!(drain(&mut twin), []);
    // The twin gives up and is standby again: a new election, a new probe (term 6).
    twin.handle_datagram(PathId::Link, &heard(5, Phase::Standby), start);
    assert_eq!(drain(&mut twin), [AddressAction::Probe(addresses())]);
    assert_eq!(twin.term(), 6);
    // The first probe's answer comes now: it says nothing about the second.
    twin.handle_probe_result(vec![], start);
    assert_eq!(drain(&mut twin), []);
    assert_eq!(twin.role(), Role::Standby);
    twin.handle_probe_result(vec![], start);
    assert_eq!(
        drain(&mut twin),
        [
            AddressAction::Claim(addresses()),
            AddressAction::Announce(addresses())
        ]
    );
    assert_eq!(twin.role(), Role::Active);
}

#[test]
fn an_unanswered_probe_is_retried_rather_than_waited_for_forever() {
    let mut pair = node_1_alone();
    pair.nodes[NODE1].ignore_probes = true;
    pair.drive_for(Duration::from_secs(3));
    assert_eq!(pair.nodes[NODE1].count(|e| *e == Event::ProbeUnanswered), 1);
    assert!(!pair.nodes[NODE1].is_active());
    pair.nodes[NODE1].ignore_probes = false;
    pair.drive_for(Duration::from_secs(5));
    assert!(pair.nodes[NODE1].is_active());
    let report = pair.nodes[NODE1]
        .twin
        .status(pair.now)
        .last_takeover
        .unwrap();
    assert_eq!(report.attempts, 2);
}

/// Seen in the namespace lab: after a partition healed, node 1 yielded to node 2's higher term,
/// then a keep-alive node 2 had sent before its takeover (on the path that came back a moment
/// later) told node 1 its twin was a standby; node 1 held an election, won it and took the
/// addresses back at a third term: two moves where one was due.
#[test]
fn a_keepalive_older_than_the_last_one_applied_changes_nothing() {
    let start = std::time::Instant::now();
    let mut twin = crate::Twin::new(config(1), 1, start);
    let newer = a_keepalive(2, 1, 10, 2, Phase::Active);
    twin.handle_datagram(PathId::Second, &test_sealer().seal(&newer), start);
    assert_eq!(twin.role(), Role::Standby);

    // Sent earlier (sequence 9), by the standby node 2 was then; arriving late on the link.
    let older = a_keepalive(2, 1, 9, 1, Phase::Standby);
    twin.handle_datagram(PathId::Link, &test_sealer().seal(&older), start);

    let events: Vec<Event> = std::iter::from_fn(|| twin.poll_event()).collect();
    assert!(
        !events.iter().any(is_takeover_started),
        "an election from a stale view: {events:?}"
    );
    assert_eq!(twin.role(), Role::Standby);
    assert!(std::iter::from_fn(|| twin.poll_action()).next().is_none());
    let status = twin.status(start);
    assert_eq!(status.twin.as_ref().map(|t| t.role), Some(Role::Active));
    assert_eq!(status.twin.map(|t| t.term), Some(2));
    // Still proof that the link carries the twin's keep-alives.
    assert_eq!(status.paths[0].counters.received, 1);
}
