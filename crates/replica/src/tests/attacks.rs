//! Every reason the peer's bytes close the session.

use super::pair::{config, Pair, KEY};
use crate::wire::{self, Frame, Hello};
use crate::{CloseReason, Event, Session};

/// A pair after the handshake, events cleared.
fn established(seed: u64) -> Pair {
    let mut pair = Pair::new(seed);
    pair.drive();
    pair.events = [Vec::new(), Vec::new()];
    pair
}

#[test]
fn a_wrong_key_is_forged_and_nothing_is_delivered() {
    let mut one = config(1);
    one.key = b"another key, also at least 32 bytes long".to_vec();
    let mut pair = Pair::with(one, config(2), 20);
    pair.send(0, 1, b"secret".to_vec());
    pair.drive();
    assert_eq!(pair.closed(1), vec![CloseReason::Forged]);
    assert_eq!(pair.events[1], vec![Event::Closed(CloseReason::Forged)]);
    assert_eq!(pair.closed(0), vec![CloseReason::Forged]);
}

#[test]
fn one_flipped_byte_mid_stream_is_forged() {
    let mut pair = established(21);
    for seq in 1..=10 {
        pair.send(0, seq, vec![seq as u8; 32]);
    }
    pair.drive();
    pair.send(0, 11, vec![11; 32]);
    let mut bytes = pair.sessions[0].poll_bytes().unwrap();
    bytes[10] ^= 0x01; // inside the record body, past the length prefix
    pair.sessions[1].handle_bytes(&bytes, pair.now);
    pair.drive();
    assert_eq!(pair.records(1).len(), 10);
    assert_eq!(pair.closed(1), vec![CloseReason::Forged]);
    assert_eq!(
        pair.events[1].last(),
        Some(&Event::Closed(CloseReason::Forged))
    );
}

#[test]
fn a_frame_from_an_earlier_connection_is_forged() {
    let mut old = established(22);
    old.send(0, 1, b"old".to_vec());
    old.drive();
    let recorded = old.written[0].clone(); // node 1's Hello and its record

    // A new connection: node 2 with a fresh nonce hears the old bytes.
    let mut fresh = Session::new(config(2), [0x5a; 16], old.now);
    fresh.handle_bytes(&recorded, old.now);
    let mut events = Vec::new();
    while let Some(event) = fresh.poll_event() {
        events.push(event);
    }
    assert_eq!(
        events,
        vec![
            Event::Established {
                peer_node: 1,
                peer_epoch: 1001
            },
            Event::Closed(CloseReason::Forged)
        ]
    );
}

#[test]
fn a_reflected_hello_is_refused() {
    let mut pair = Pair::new(23);
    let hello = pair.sessions[0].poll_bytes().unwrap();
    pair.sessions[0].handle_bytes(&hello, pair.now);
    pair.drive();
    assert_eq!(pair.closed(0), vec![CloseReason::Reflected]);
}

#[test]
fn different_listeners_are_refused() {
    let mut two = config(2);
    two.listener_hash = [8; 32];
    let mut pair = Pair::with(config(1), two, 24);
    pair.drive();
    assert_eq!(pair.closed(0), vec![CloseReason::ListenersDiffer]);
    assert_eq!(pair.closed(1), vec![CloseReason::ListenersDiffer]);
}

/// A Hello tagged under the right key, with any fields.
fn hello(version: u8, node_id: u8) -> Vec<u8> {
    Hello {
        version,
        node_id,
        epoch: 5,
        listener_hash: super::pair::LISTENERS,
        nonce: [1; 16],
    }
    .seal(&wire::keyed(KEY))
}

fn closes_with(bytes: &[u8]) -> Vec<Event> {
    let now = std::time::Instant::now();
    let mut session = Session::new(config(1), [2; 16], now);
    session.handle_bytes(bytes, now);
    let mut events = Vec::new();
    while let Some(event) = session.poll_event() {
        events.push(event);
    }
    assert!(session.is_closed());
    assert_eq!(session.poll_timeout(), None);
    events
}

#[test]
fn another_version_or_an_unknown_node_is_refused() {
    assert_eq!(
        closes_with(&hello(2, 2)),
        vec![Event::Closed(CloseReason::Version)]
    );
    assert_eq!(
        closes_with(&hello(1, 3)),
        vec![Event::Closed(CloseReason::UnknownNode)]
    );
}

#[test]
fn a_hello_of_the_wrong_length_is_malformed() {
    let mut short = vec![0, 0, 0, 10];
    short.extend_from_slice(&[1; 10]);
    assert_eq!(
        closes_with(&short),
        vec![Event::Closed(CloseReason::Malformed)]
    );
}

#[test]
fn a_length_of_2_gib_is_oversize_at_once() {
    // Only the prefix: the session must decide without waiting for (or reserving) the body.
    assert_eq!(
        closes_with(&[0x80, 0, 0, 0]),
        vec![Event::Closed(CloseReason::Oversize)]
    );
    let mut pair = established(25);
    pair.sessions[1].handle_bytes(&[0x80, 0], pair.now);
    assert!(
        !pair.sessions[1].is_closed(),
        "half a prefix is not a length yet"
    );
    pair.sessions[1].handle_bytes(&[0, 0, 1, 2, 3], pair.now);
    pair.drive();
    assert_eq!(pair.closed(1), vec![CloseReason::Oversize]);
}

#[test]
fn an_authentic_but_undecodable_frame_is_malformed() {
    let mut pair = established(26);
    let mut frame = Vec::new();
    wire::seal_into(&mut frame, &pair.session_key(), 1, 0, &[0xff, 0xff, 0xff]);
    pair.sessions[1].handle_bytes(&frame, pair.now);
    pair.drive();
    assert_eq!(pair.closed(1), vec![CloseReason::Malformed]);
}

#[test]
fn a_frame_sealed_for_the_other_direction_is_forged() {
    let mut pair = established(27);
    let mut frame = Vec::new();
    let body = Frame::Heartbeat.encode();
    wire::seal_into(&mut frame, &pair.session_key(), 2, 0, &body);
    pair.sessions[1].handle_bytes(&frame, pair.now);
    pair.drive();
    assert_eq!(pair.closed(1), vec![CloseReason::Forged]);
}

#[test]
fn a_seq_going_backwards_is_out_of_order_on_the_receiver() {
    let mut pair = established(28);
    pair.send(0, 10, b"ten".to_vec());
    pair.sessions[0].send_unchecked(9, b"nine".to_vec());
    pair.drive();
    assert_eq!(pair.records(1), vec![(10, b"ten".to_vec())]);
    assert_eq!(pair.closed(1), vec![CloseReason::OutOfOrder]);
}

#[test]
fn the_sender_refuses_a_seq_that_does_not_increase() {
    let mut pair = established(29);
    pair.send(0, 10, b"ten".to_vec());
    pair.send(0, 10, b"ten again".to_vec());
    pair.drive();
    assert_eq!(pair.closed(0), vec![CloseReason::OutOfOrder]);
    assert!(
        pair.records(1).is_empty(),
        "closed before the queue was written"
    );
}

#[test]
fn an_ack_beyond_what_was_sent_is_out_of_order() {
    let mut pair = established(30);
    let mut frame = Vec::new();
    let body = Frame::Ack { seq: 5 }.encode();
    wire::seal_into(&mut frame, &pair.session_key(), 2, 0, &body);
    pair.sessions[0].handle_bytes(&frame, pair.now);
    pair.drive();
    assert_eq!(pair.closed(0), vec![CloseReason::OutOfOrder]);
}
