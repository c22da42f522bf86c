//! Random schedules of loss, cuts, partitions, deaths, restarts, drains and operator releases
//! over many seeds. The
//! harness checks the invariant after every step; at the end, with the paths healthy again,
//! exactly one node must own the addresses.

use std::time::Duration;

use super::pair::Pair;
use crate::{Advertised, Event, PathId, PeerState};

const SEEDS: u64 = 200;
const SCHEDULE: Duration = Duration::from_secs(60);
/// Long enough after the last heal for the longest probe back-off (8 s) and a detection.
const SETTLE: Duration = Duration::from_secs(20);

fn random_path(pair: &mut Pair) -> PathId {
    PathId::ALL[pair.random_below(2) as usize]
}

fn run_schedule(seed: u64) -> Pair {
    let mut pair = Pair::default_pair();
    pair.seed(seed);
    let end = pair.now + SCHEDULE;
    while pair.now < end {
        let wait = Duration::from_millis(50 + u64::from(pair.random_below(3000)));
        pair.drive_for(wait);
        match pair.random_below(14) {
            0 | 1 => {
                let path = random_path(&mut pair);
                let from = pair.random_below(2) as usize;
                pair.cut(path, from);
            }
            2 | 3 => {
                let path = random_path(&mut pair);
                pair.heal(path);
            }
            4 | 5 => {
                let path = random_path(&mut pair);
                let loss = [0, 100, 500, 1000][pair.random_below(4) as usize];
                pair.set_loss(path, loss);
            }
            6 => pair.partition(),
            7 => pair.heal_all(),
            8 => {
                let side = pair.random_below(2) as usize;
                if pair.nodes.iter().all(|n| n.running) {
                    pair.kill(side);
                } else if !pair.nodes[side].running {
                    pair.restart(side);
                }
            }
            9 => {
                for side in 0..2 {
                    if !pair.nodes[side].running {
                        pair.restart(side);
                    }
                }
            }
            10 => {
                // The operator drains or restores one box.
                let side = pair.random_below(2) as usize;
                let state = [PeerState::Online, PeerState::Draining, PeerState::Offline]
                    [pair.random_below(3) as usize];
                let now = pair.now;
                let adv = Advertised {
                    state,
                    ..Advertised::default()
                };
                pair.nodes[side].twin.handle_advertised(adv, now);
                pair.flush(side);
            }
            11 => {
                // The operator asks one box to hand its addresses over (refused when alone).
                let side = pair.random_below(2) as usize;
                let now = pair.now;
                let _ = pair.nodes[side].twin.handle_release_request(now);
                pair.flush(side);
            }
            _ => {}
        }
    }
    for side in 0..2 {
        if !pair.nodes[side].running {
            pair.restart(side);
        }
    }
    pair.heal_all();
    for path in PathId::ALL {
        pair.set_loss(path, 0);
    }
    pair.drive_for(SETTLE);
    pair
}

#[test]
fn random_schedules_never_leave_two_owners_that_hear_each_other_and_converge_to_one() {
    let mut dual_partitions = 0;
    for seed in 0..SEEDS {
        let pair = run_schedule(seed);
        assert!(
            pair.exactly_one_owner(),
            "seed {seed}: not exactly one owner after the heal\nnode 1: {:?}\nnode 2: {:?}",
            pair.nodes[0].twin.status(pair.now),
            pair.nodes[1].twin.status(pair.now),
        );
        if pair.longest_dual > Duration::ZERO {
            dual_partitions += 1;
        }
    }
    // The schedules do reach the interesting case (both owners during a partition) often.
    assert!(dual_partitions > SEEDS / 10, "{dual_partitions}");
}

#[test]
fn ten_percent_loss_on_one_path_for_ten_minutes_makes_no_takeover() {
    for (seed, path) in [(1, PathId::Link), (2, PathId::Second)] {
        let mut pair = Pair::default_pair();
        pair.seed(seed);
        pair.drive_for(Duration::from_secs(1));
        pair.set_loss(path, 100);
        pair.drive_for(Duration::from_secs(600));
        assert!(pair.exactly_one_owner());
        assert!(pair.nodes[0].is_active());
        for node in &pair.nodes {
            assert_eq!(node.count(|e| *e == Event::TwinLost), 0);
            assert_eq!(node.count(|e| matches!(e, Event::Yielded { .. })), 0);
        }
        assert_eq!(pair.nodes[1].takeovers(), 0);
        assert_eq!(pair.nodes[0].takeovers(), 1, "the election at start");
    }
}
