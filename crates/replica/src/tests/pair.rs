//! A quinn-style `Pair`: two [`Session`]s joined by a simulated TCP connection, and a clock.
//!
//! `drive` moves what each side writes to the other in chunks cut at random points (a seeded
//! xorshift), takes every event as an application would, and checks the window after every
//! write. `advance` jumps the clock from one deadline to the next; nothing sleeps.

use std::time::{Duration, Instant};

use crate::wire::{self, Frame};
use crate::{Config, Event, Session};

pub const KEY: &[u8] = b"replica test key, at least 32 bytes long";
pub const LISTENERS: [u8; 32] = [7; 32];

pub fn config(node: u8) -> Config {
    Config::new(node, KEY.to_vec(), 1000 + u64::from(node), LISTENERS)
}

/// A tiny deterministic generator (xorshift64).
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn nonce(&mut self) -> [u8; 16] {
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.next().to_be_bytes());
        nonce[8..].copy_from_slice(&self.next().to_be_bytes());
        nonce
    }
}

/// Side index in the pair: 0 is node 1, 1 is node 2.
pub type Side = usize;

#[derive(Debug)]
pub struct Pair {
    pub now: Instant,
    pub sessions: [Session; 2],
    pub configs: [Config; 2],
    pub nonces: [[u8; 16]; 2],
    /// Bytes written by a side and not yet delivered to the other.
    pub wires: [Vec<u8>; 2],
    /// Every byte a side wrote, in order (for replay tests).
    pub written: [Vec<u8>; 2],
    /// Events each side's application took.
    pub events: [Vec<Event>; 2],
    /// `cut[from]`: what `from` writes is lost.
    pub cut: [bool; 2],
    /// Whether a side's application takes events (a slow consumer does not).
    pub taking: [bool; 2],
    pub rng: XorShift,
    /// The largest record (wire size) each side was asked to send.
    pub largest_record: [usize; 2],
    /// The most in-flight bytes each side ever had.
    pub peak_in_flight: [usize; 2],
    /// Largest single `poll_bytes` result seen.
    pub largest_write: usize,
}

impl Pair {
    pub fn new(seed: u64) -> Pair {
        Pair::with(config(1), config(2), seed)
    }

    pub fn with(one: Config, two: Config, seed: u64) -> Pair {
        let now = Instant::now();
        let mut rng = XorShift(seed | 1);
        let nonces = [rng.nonce(), rng.nonce()];
        Pair {
            now,
            sessions: [
                Session::new(one.clone(), nonces[0], now),
                Session::new(two.clone(), nonces[1], now),
            ],
            configs: [one, two],
            nonces,
            wires: [Vec::new(), Vec::new()],
            written: [Vec::new(), Vec::new()],
            events: [Vec::new(), Vec::new()],
            cut: [false; 2],
            taking: [true; 2],
            rng,
            largest_record: [0; 2],
            peak_in_flight: [0; 2],
            largest_write: 0,
        }
    }

    /// Queues a record on `side`, noting its size for the window check.
    pub fn send(&mut self, side: Side, seq: u64, payload: Vec<u8>) {
        let wire_len = wire::sealed_len(
            Frame::Record {
                seq,
                payload: payload.clone(),
            }
            .encode()
            .len(),
        );
        self.largest_record[side] = self.largest_record[side].max(wire_len);
        self.sessions[side].send(seq, payload);
    }

    /// Takes events and writes on both sides, then delivers one random chunk each way.
    /// Whether anything moved.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        for side in 0..2 {
            if self.taking[side] {
                while let Some(event) = self.sessions[side].poll_event() {
                    self.events[side].push(event);
                    moved = true;
                }
            }
            while let Some(bytes) = self.sessions[side].poll_bytes() {
                moved = true;
                self.largest_write = self.largest_write.max(bytes.len());
                self.written[side].extend_from_slice(&bytes);
                if !self.cut[side] {
                    self.wires[side].extend_from_slice(&bytes);
                }
                self.check_window(side);
            }
        }
        for from in 0..2 {
            let to = 1 - from;
            if self.wires[from].is_empty() {
                continue;
            }
            let len = self.chunk_len().min(self.wires[from].len());
            let chunk: Vec<u8> = self.wires[from].drain(..len).collect();
            self.sessions[to].handle_bytes(&chunk, self.now);
            moved = true;
        }
        moved
    }

    /// Steps until nothing moves.
    pub fn drive(&mut self) {
        while self.step() {}
    }

    /// Drives, jumping the clock from deadline to deadline, until `now + by`.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            self.drive();
            let next = self.sessions.iter().filter_map(Session::poll_timeout).min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    for session in &mut self.sessions {
                        if session.poll_timeout().is_some_and(|t| t <= self.now) {
                            session.handle_timeout(self.now);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = until;
        // Bring both clocks to `until` (writes are stamped with the latest `now` seen).
        for session in &mut self.sessions {
            session.handle_timeout(until);
        }
        self.drive();
    }

    /// Mostly large chunks, sometimes a few bytes, so frames and prefixes are cut everywhere.
    fn chunk_len(&mut self) -> usize {
        if self.rng.below(4) == 0 {
            1 + self.rng.below(12) as usize
        } else {
            1 + self.rng.below(16 * 1024) as usize
        }
    }

    fn check_window(&mut self, side: Side) {
        let in_flight = self.sessions[side].status(self.now).in_flight_bytes;
        self.peak_in_flight[side] = self.peak_in_flight[side].max(in_flight);
        let bound = self.configs[side].window_bytes + self.largest_record[side];
        assert!(
            in_flight <= bound,
            "side {side}: {in_flight} bytes in flight, above {bound}"
        );
    }

    /// The session key both sides derived (tests use it to craft frames).
    pub fn session_key(&self) -> wire::HmacSha256 {
        wire::session_key(
            &wire::keyed(KEY),
            [&self.nonces[0], &self.nonces[1]],
            [self.configs[0].boot_epoch, self.configs[1].boot_epoch],
        )
    }

    /// Records delivered to `side`, as (seq, payload).
    pub fn records(&self, side: Side) -> Vec<(u64, Vec<u8>)> {
        self.events[side]
            .iter()
            .filter_map(|e| match e {
                Event::Record { seq, payload } => Some((*seq, payload.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn closed(&self, side: Side) -> Vec<crate::CloseReason> {
        self.events[side]
            .iter()
            .filter_map(|e| match e {
                Event::Closed(reason) => Some(*reason),
                _ => None,
            })
            .collect()
    }

    pub fn last_acked(&self, side: Side) -> Option<u64> {
        self.events[side].iter().rev().find_map(|e| match e {
            Event::Acked { seq } => Some(*seq),
            _ => None,
        })
    }
}
