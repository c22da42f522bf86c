//! The handshake, records in order with acks, snapshots under the window, status.

use std::time::Duration;

use super::pair::{config, Pair};
use crate::{CloseReason, Event, SnapshotProgress, Status, COALESCE_BYTES};

#[test]
fn handshake_establishes_both_ways_with_the_peer_epoch() {
    let mut pair = Pair::new(1);
    pair.drive();
    assert_eq!(
        pair.events[0],
        vec![Event::Established {
            peer_node: 2,
            peer_epoch: 1002
        }]
    );
    assert_eq!(
        pair.events[1],
        vec![Event::Established {
            peer_node: 1,
            peer_epoch: 1001
        }]
    );
    for side in 0..2 {
        let status = pair.sessions[side].status(pair.now);
        assert!(status.established);
        assert_eq!(status.frames_in, 1);
        assert_eq!(status.frames_out, 1);
    }
}

#[test]
fn ten_thousand_records_arrive_in_order_exactly_once_and_are_acked() {
    let mut pair = Pair::new(2);
    for seq in 1..=10_000u64 {
        pair.send(0, seq, format!("binding {seq}").into_bytes());
        if seq % 700 == 0 {
            pair.step();
        }
    }
    pair.drive();
    let records = pair.records(1);
    assert_eq!(records.len(), 10_000);
    for (i, (seq, payload)) in records.iter().enumerate() {
        let expected = i as u64 + 1;
        assert_eq!(*seq, expected);
        assert_eq!(payload, format!("binding {expected}").as_bytes());
    }
    assert_eq!(pair.last_acked(0), Some(10_000));
    let acks: Vec<u64> = pair.events[0]
        .iter()
        .filter_map(|e| match e {
            Event::Acked { seq } => Some(*seq),
            _ => None,
        })
        .collect();
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "acks increase");
    assert!(
        acks.len() < 10_000,
        "acks are cumulative, not one per record"
    );
    let sender = pair.sessions[0].status(pair.now);
    assert_eq!(
        (sender.sent_seq, sender.acked_seq, sender.in_flight_bytes),
        (10_000, 10_000, 0)
    );
    assert_eq!(sender.oldest_unacked_age, None);
    assert_eq!(pair.sessions[1].status(pair.now).received_seq, 10_000);
    assert!(pair.largest_write <= COALESCE_BYTES + 1024);
}

#[test]
fn a_snapshot_with_live_records_keeps_to_the_window_and_its_place() {
    let mut one = config(1);
    one.window_bytes = 8 * 1024;
    let mut pair = Pair::with(one, config(2), 3);
    pair.drive();
    const SNAPSHOT: u64 = 100_000;
    pair.sessions[0].begin_snapshot(SNAPSHOT);
    let mut seq = 0u64;
    let mut live = 0u64;
    for i in 0..SNAPSHOT {
        seq += 1;
        pair.send(0, seq, i.to_be_bytes().to_vec());
        if i % 1000 == 999 {
            seq += 1;
            live += 1;
            pair.send(0, seq, b"live".to_vec());
            for _ in 0..4 {
                pair.step();
            }
        }
    }
    pair.sessions[0].end_snapshot(seq);
    seq += 1;
    pair.send(0, seq, b"after".to_vec());
    pair.drive();

    let events = &pair.events[1];
    assert_eq!(events[1], Event::SnapshotBegin { records: SNAPSHOT });
    let end = events
        .iter()
        .position(|e| matches!(e, Event::SnapshotEnd { .. }))
        .unwrap();
    assert_eq!(events[end], Event::SnapshotEnd { seq: seq - 1 });
    assert_eq!(
        end,
        events.len() - 2,
        "only the record after the end follows it"
    );
    let records = pair.records(1);
    assert_eq!(records.len() as u64, SNAPSHOT + live + 1);
    assert!(records
        .iter()
        .enumerate()
        .all(|(i, (s, _))| *s == i as u64 + 1));
    assert_eq!(
        records.iter().filter(|(_, p)| p == b"live").count() as u64,
        live
    );
    assert_eq!(pair.last_acked(0), Some(seq));
    // The window did bind, and `Pair` checked it after every write.
    assert!(pair.peak_in_flight[0] > 4 * 1024);
    assert_eq!(
        pair.sessions[1].status(pair.now).snapshot,
        SnapshotProgress::Complete
    );
}

#[test]
fn snapshot_progress_counts_records_between_the_markers() {
    let mut pair = Pair::new(4);
    pair.sessions[0].begin_snapshot(10);
    for seq in 1..=3 {
        pair.send(0, seq, vec![1]);
    }
    pair.drive();
    assert_eq!(
        pair.sessions[1].status(pair.now).snapshot,
        SnapshotProgress::Receiving { got: 3, of: 10 }
    );
}

#[test]
fn a_slow_consumer_holds_the_sender_at_the_window() {
    let mut one = config(1);
    one.window_bytes = 1000;
    let mut pair = Pair::with(one, config(2), 5);
    pair.drive();
    pair.taking[1] = false;
    for seq in 1..=100 {
        pair.send(0, seq, vec![0; 80]);
    }
    pair.drive();
    let held = pair.sessions[0].status(pair.now);
    assert!(held.in_flight_bytes <= 1000 && held.in_flight_bytes > 800);
    assert!(held.queued_records > 80);
    assert_eq!(held.acked_seq, 0);
    // Markers and heartbeats are not held, but a marker waits behind queued records.
    pair.taking[1] = true;
    pair.drive();
    assert_eq!(pair.records(1).len(), 100);
    assert_eq!(pair.last_acked(0), Some(100));
}

#[test]
fn a_record_larger_than_the_window_still_goes_when_nothing_is_in_flight() {
    let mut one = config(1);
    one.window_bytes = 1000;
    let mut pair = Pair::with(one, config(2), 6);
    pair.drive();
    pair.send(0, 1, vec![9; 5000]);
    pair.send(0, 2, vec![8; 5000]);
    pair.step();
    assert_eq!(
        pair.sessions[0].status(pair.now).sent_seq,
        1,
        "one at a time"
    );
    pair.drive();
    assert_eq!(pair.records(1).len(), 2);
    assert_eq!(pair.last_acked(0), Some(2));
}

#[test]
fn records_queued_before_the_handshake_wait_for_it() {
    let mut pair = Pair::new(7);
    pair.send(0, 5, b"early".to_vec());
    pair.sessions[0].begin_snapshot(0);
    let hello = pair.sessions[0].poll_bytes().unwrap();
    assert_eq!(
        hello.len(),
        crate::LEN_PREFIX + crate::HELLO_LEN,
        "only the Hello"
    );
    assert_eq!(pair.sessions[0].poll_bytes(), None);
    pair.wires[0].extend_from_slice(&hello);
    pair.drive();
    assert_eq!(pair.records(1), vec![(5, b"early".to_vec())]);
    assert_eq!(pair.events[1][2], Event::SnapshotBegin { records: 0 });
}

#[test]
fn one_cumulative_ack_per_write_round() {
    let mut pair = Pair::new(8);
    pair.drive();
    pair.taking[1] = false;
    for seq in 1..=50 {
        pair.send(0, seq, vec![3; 10]);
    }
    pair.drive();
    let before = pair.sessions[1].status(pair.now).frames_out;
    while let Some(event) = pair.sessions[1].poll_event() {
        pair.events[1].push(event);
    }
    let ack = pair.sessions[1].poll_bytes().unwrap();
    assert_eq!(pair.sessions[1].poll_bytes(), None);
    assert_eq!(pair.sessions[1].status(pair.now).frames_out, before + 1);
    pair.wires[1].extend_from_slice(&ack);
    pair.taking[1] = true;
    pair.drive();
    assert_eq!(
        pair.events[0]
            .iter()
            .filter(|e| matches!(e, Event::Acked { .. }))
            .collect::<Vec<_>>(),
        vec![&Event::Acked { seq: 50 }]
    );
}

#[test]
fn status_follows_in_flight_acks_and_age() {
    let mut pair = Pair::new(9);
    pair.drive();
    pair.taking[1] = false;
    pair.send(0, 1, vec![0; 100]);
    pair.send(0, 2, vec![0; 100]);
    let queued = pair.sessions[0].status(pair.now);
    assert_eq!((queued.queued_records, queued.in_flight_bytes), (2, 0));
    pair.drive();
    let sent = pair.sessions[0].status(pair.now);
    assert_eq!(sent.queued_records, 0);
    assert_eq!(sent.sent_seq, 2);
    assert_eq!(sent.acked_seq, 0);
    assert!(sent.in_flight_bytes >= 200);
    assert_eq!(sent.oldest_unacked_age, Some(Duration::ZERO));
    assert_eq!(pair.sessions[1].status(pair.now).received_seq, 2);

    pair.advance(Duration::from_millis(1200));
    let later = pair.sessions[0].status(pair.now);
    assert_eq!(later.oldest_unacked_age, Some(Duration::from_millis(1200)));
    assert!(
        !pair.sessions[0].is_closed(),
        "heartbeats flow while records wait"
    );

    pair.taking[1] = true;
    pair.drive();
    let acked = pair.sessions[0].status(pair.now);
    assert_eq!((acked.acked_seq, acked.in_flight_bytes), (2, 0));
    assert_eq!(acked.oldest_unacked_age, None);
    assert!(acked.frames_in > 1 && acked.frames_out > 3);
}

#[test]
fn status_and_close_reason_serialize_in_snake_case() {
    let status = Status {
        established: false,
        closed: Some(CloseReason::ListenersDiffer),
        peer_epoch: Some(7),
        sent_seq: 3,
        acked_seq: 2,
        received_seq: 0,
        queued_records: 1,
        in_flight_bytes: 40,
        oldest_unacked_age: Some(Duration::from_millis(1500)),
        frames_in: 4,
        frames_out: 5,
        snapshot: SnapshotProgress::Receiving { got: 1, of: 9 },
    };
    let json = serde_json::to_string(&status).unwrap();
    assert!(json.contains(r#""closed":"listeners_differ""#), "{json}");
    assert!(json.contains(r#""oldest_unacked_age":1500"#), "{json}");
    assert!(
        json.contains(r#""snapshot":{"receiving":{"got":1,"of":9}}"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);
    assert_eq!(
        serde_json::to_string(&SnapshotProgress::None).unwrap(),
        r#""none""#
    );
}

#[test]
fn local_close_reports_once_and_then_nothing_moves() {
    let mut pair = Pair::new(10);
    pair.drive();
    pair.send(0, 1, vec![1]);
    pair.sessions[0].close(CloseReason::Local);
    pair.sessions[0].close(CloseReason::Timeout);
    pair.send(0, 2, vec![2]);
    pair.drive();
    assert_eq!(pair.closed(0), vec![CloseReason::Local]);
    assert!(pair.records(1).is_empty());
    assert_eq!(pair.sessions[0].poll_bytes(), None);
    assert_eq!(pair.sessions[0].poll_timeout(), None);
    pair.sessions[0].handle_bytes(&[0, 0, 0, 1, 0], pair.now);
    assert_eq!(pair.sessions[0].poll_event(), None);
    assert_eq!(
        pair.sessions[0].status(pair.now).closed,
        Some(CloseReason::Local)
    );
}

#[test]
fn an_unusable_config_gives_a_closed_session() {
    let mut short = config(1);
    short.key.truncate(16);
    assert!(short.validate().is_err());
    let mut pair = Pair::with(short, config(2), 11);
    pair.drive();
    assert_eq!(pair.closed(0), vec![CloseReason::Local]);
    assert_eq!(config(3).validate(), Err(crate::ConfigError::NodeId(3)));
    assert_eq!(config(2).validate(), Ok(()));
}

#[test]
fn random_schedules_deliver_everything_in_order() {
    for seed in 100..108u64 {
        let mut one = config(1);
        one.window_bytes = 4096 + (seed as usize % 3) * 20_000;
        let mut pair = Pair::with(one, config(2), seed);
        let mut seq = 0u64;
        let mut sent = Vec::new();
        for round in 0..400 {
            for _ in 0..pair.rng.below(4) {
                seq += 1 + pair.rng.below(3);
                let len = if pair.rng.below(20) == 0 {
                    pair.rng.below(70_000)
                } else {
                    pair.rng.below(200)
                } as usize;
                let payload = vec![seq as u8; len];
                sent.push((seq, payload.clone()));
                pair.send(0, seq, payload);
            }
            if round == 100 {
                pair.sessions[0].begin_snapshot(7);
            }
            // The standby's application sometimes lags behind.
            pair.taking[1] = pair.rng.below(3) != 0;
            pair.step();
        }
        pair.taking[1] = true;
        pair.drive();
        assert_eq!(pair.records(1), sent, "seed {seed}");
        assert_eq!(pair.last_acked(0), Some(seq), "seed {seed}");
        assert!(
            pair.largest_write <= COALESCE_BYTES + pair.largest_record[0] + crate::HELLO_LEN + 8,
            "seed {seed}: a write of {} bytes",
            pair.largest_write
        );
        assert!(pair.closed(0).is_empty() && pair.closed(1).is_empty());
    }
}
