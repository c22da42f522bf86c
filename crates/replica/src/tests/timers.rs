//! Heartbeats, the idle timeout and `poll_timeout`.

use std::time::Duration;

use super::pair::Pair;
use crate::{CloseReason, Event};

const HEARTBEAT: Duration = Duration::from_millis(500);
const IDLE: Duration = Duration::from_secs(3);

#[test]
fn heartbeats_keep_an_idle_session_alive_for_minutes() {
    let mut pair = Pair::new(40);
    pair.drive();
    pair.advance(Duration::from_secs(300));
    for side in 0..2 {
        assert!(!pair.sessions[side].is_closed());
        let status = pair.sessions[side].status(pair.now);
        // About one heartbeat per interval, on top of the Hello.
        assert!(
            status.frames_out >= 590 && status.frames_out <= 610,
            "{status:?}"
        );
    }
    pair.send(0, 1, b"still here".to_vec());
    pair.drive();
    assert_eq!(pair.records(1).len(), 1);
}

#[test]
fn silence_for_the_idle_timeout_closes_and_not_a_moment_before() {
    let mut pair = Pair::new(41);
    pair.drive();
    let heard = pair.now;
    pair.cut[1] = true; // node 2 keeps writing, nothing arrives
    pair.advance(IDLE - Duration::from_millis(1));
    assert!(!pair.sessions[0].is_closed());
    assert_eq!(pair.sessions[0].poll_timeout(), Some(heard + IDLE));
    pair.sessions[0].handle_timeout(heard + IDLE - Duration::from_nanos(1));
    assert!(!pair.sessions[0].is_closed());
    pair.advance(Duration::from_millis(1));
    assert_eq!(pair.closed(0), vec![CloseReason::Timeout]);
    assert_eq!(pair.now, heard + IDLE);
    assert!(!pair.sessions[1].is_closed(), "node 2 still hears node 1");
}

#[test]
fn the_handshake_must_finish_within_the_idle_timeout() {
    let mut pair = Pair::new(42);
    pair.cut = [true, true];
    pair.advance(IDLE - Duration::from_millis(1));
    assert!(pair.events[0].is_empty());
    pair.advance(Duration::from_millis(1));
    assert_eq!(pair.closed(0), vec![CloseReason::Timeout]);
    assert_eq!(pair.closed(1), vec![CloseReason::Timeout]);
}

#[test]
fn poll_timeout_is_the_earliest_deadline() {
    let mut pair = Pair::new(43);
    let start = pair.now;
    assert_eq!(
        pair.sessions[0].poll_timeout(),
        Some(start + IDLE),
        "no heartbeat before the handshake"
    );
    pair.drive();
    assert_eq!(pair.sessions[0].poll_timeout(), Some(start + HEARTBEAT));
    // A heartbeat is not sent early.
    pair.sessions[0].handle_timeout(start + HEARTBEAT - Duration::from_nanos(1));
    assert_eq!(pair.sessions[0].poll_bytes(), None);
    pair.sessions[0].handle_timeout(start + HEARTBEAT);
    assert!(pair.sessions[0].poll_bytes().is_some());
    assert_eq!(
        pair.sessions[0].poll_timeout(),
        Some(start + HEARTBEAT + HEARTBEAT)
    );
}

#[test]
fn records_written_count_as_activity_for_the_heartbeat() {
    let mut pair = Pair::new(44);
    pair.drive();
    for i in 1..=20u64 {
        pair.advance(Duration::from_millis(400));
        pair.send(0, i, vec![0; 4]);
        pair.drive();
    }
    let heartbeats_or_records = pair.sessions[0].status(pair.now).frames_out;
    // Hello plus 20 records; a write every 400 ms leaves no heartbeat due.
    assert_eq!(heartbeats_or_records, 21);
    assert!(pair.events[0]
        .iter()
        .any(|e| matches!(e, Event::Acked { seq: 20 })));
}
