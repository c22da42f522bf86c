//! What any proxy of this box must spend on one call, whatever its parser (`harness =
//! false`), for `cargo xtask bench core`, which runs it under callgrind and reads each
//! `part_*` function's instructions.
//!
//! The call of `core_call` (INVITE-180-200-ACK-BYE-200) is run once through the proxy to
//! record the six messages it receives and the seven it sends; then each part below is done
//! to those messages `CALL_FLOOR_REPS` times (1000):
//!
//! - `part_utf8`: the UTF-8 check of each message received (SIP is text; the `sip` crate
//!   reads `&str`),
//! - `part_line_ends`: finding every line end of each message with `memchr` (the least any
//!   header index does),
//! - `part_route_mac`: the Record-Route token's HMAC-SHA256 over a token-sized input, from
//!   a state keyed once, as `border::Signer` does (SPEC §7: the entry is signed; one per call),
//! - `part_write`: copying each message sent into a buffer of its own,
//!
//! and, for comparison, what the `sip` crate spends on the six messages today:
//! `sip_parse` (the header table) and `sip_parse_validate` (that and the checks of
//! `sip::Message::validate`). A benchmark: it prints, it never asserts a number.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{Core, Driver};
use hmac::{Hmac, Mac};

/// The bare proxy, keeping a copy of what it receives and sends.
struct Recorder {
    proxy: proxy::Proxy,
    received: Vec<Vec<u8>>,
    sent: Vec<Vec<u8>>,
}

impl Core for Recorder {
    fn handle_input(&mut self, now: Instant, input: proxy::Input<'_>) {
        self.received.push(input.bytes.to_vec());
        self.proxy.handle_input(now, input);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.proxy.handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.proxy.poll_timeout()
    }
    fn poll_transmit(&mut self) -> Option<proxy::Transmit> {
        let t = self.proxy.poll_transmit()?;
        self.sent.push(t.bytes.clone());
        Some(t)
    }
    fn recycle(&mut self, bytes: Vec<u8>) {
        self.proxy.recycle(bytes);
    }
    fn drain_events(&mut self) {
        while self.proxy.poll_event().is_some() {}
    }
}

#[inline(never)]
fn part_utf8(messages: &[Vec<u8>]) -> usize {
    messages
        .iter()
        .map(|m| std::str::from_utf8(m).map_or(0, str::len))
        .sum()
}

#[inline(never)]
fn part_line_ends(messages: &[Vec<u8>]) -> usize {
    messages
        .iter()
        .map(|m| memchr::memchr_iter(b'\n', m).fold(0, |n, at| n ^ at))
        .sum()
}

#[inline(never)]
fn part_route_mac(keyed: &Hmac<sha2::Sha256>, input: &[u8]) -> u8 {
    let mut mac = keyed.clone();
    mac.update(input);
    mac.finalize().into_bytes()[0]
}

#[inline(never)]
fn part_write(messages: &[Vec<u8>]) -> usize {
    messages
        .iter()
        .map(|m| {
            let mut out = Vec::with_capacity(m.len());
            out.extend_from_slice(m);
            black_box(out).len()
        })
        .sum()
}

#[inline(never)]
fn sip_parse(messages: &[Vec<u8>]) -> usize {
    messages
        .iter()
        .filter_map(|m| sip::Message::parse(m).ok())
        .filter(sip::Message::is_request)
        .count()
}

#[inline(never)]
fn sip_parse_validate(messages: &[Vec<u8>]) -> usize {
    messages
        .iter()
        .filter_map(|m| sip::Message::parse(m).ok())
        .filter(|m| m.validate().is_ok())
        .count()
}

fn main() {
    let reps = common::env_u64("CALL_FLOOR_REPS", 1000);
    let now = Instant::now();
    let mut proxy = proxy::Proxy::new(common::config(), now);
    proxy.set_replication(false);
    let recorder = Recorder {
        proxy,
        received: Vec::new(),
        sent: Vec::new(),
    };
    let mut driver = Driver::with_core(recorder, now);
    // One call first, so the probe and anything else of the start is not in the recording.
    assert!(driver.full_call(0, "call-floor-0"), "the first call failed");
    driver.proxy.received.clear();
    driver.proxy.sent.clear();
    assert!(
        driver.full_call(1, "call-floor-1"),
        "the recorded call failed"
    );
    let received = std::mem::take(&mut driver.proxy.received);
    let sent = std::mem::take(&mut driver.proxy.sent);
    let bytes = |m: &[Vec<u8>]| m.iter().map(Vec::len).sum::<usize>();
    assert_eq!(
        sip_parse_validate(&received),
        received.len(),
        "a recorded message does not validate"
    );

    let keyed = <Hmac<sha2::Sha256>>::new_from_slice(&[7u8; 32]).unwrap();
    // The size of what the proxy signs for the bench's call: a version, the realm, two
    // parties, the Call-ID and the caller's tag.
    let token_input = [0x5au8; 48];
    let mut sink = 0usize;
    for _ in 0..reps {
        sink ^= part_utf8(black_box(&received));
        sink ^= part_line_ends(black_box(&received));
        sink ^= usize::from(part_route_mac(black_box(&keyed), black_box(&token_input)));
        sink ^= part_write(black_box(&sent));
        sink ^= sip_parse(black_box(&received));
        sink ^= sip_parse_validate(black_box(&received));
    }
    println!(
        "RESULT reps={reps} received={} received_bytes={} sent={} sent_bytes={} sink={sink}",
        received.len(),
        bytes(&received),
        sent.len(),
        bytes(&sent),
    );
}
