//! The cost per call of what the daemon runs (`harness = false`): the same
//! INVITE-180-200-ACK-BYE-200 calls as the proxy's `core_call` bench, through [`node::Node`]
//! (the proxy, the system state and the shard hub composed) instead of the bare proxy, with
//! every output the engine loop takes out after a message taken out here too (transmits,
//! closes, events, shard commands). Set beside `core_call`'s figure by `cargo xtask bench
//! core`, so anything the composition adds per message (a walk over a table after every step,
//! as `Node::settle` once did) shows as a difference that grows with the calls held.
//!
//! The driver, the calls and the counting are the proxy bench's own files, included here.
//! A benchmark: it prints, it never asserts a number.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../proxy/benches/common/call_cost.rs"]
mod call_cost;
#[path = "../../proxy/benches/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::Core;
use node::Node;
use proxy::{Input, Transmit};
use system_state::SystemState;

impl Core for Node {
    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        Node::handle_input(self, now, input);
    }
    fn handle_timeout(&mut self, now: Instant) {
        Node::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Node::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Node::poll_transmit(self)
    }
    fn recycle(&mut self, bytes: Vec<u8>) {
        Node::recycle(self, bytes);
    }
    fn drain_events(&mut self) {
        while self.poll_close().is_some() {}
        while self.poll_event().is_some() {}
        while self.poll_shard_command().is_some() {}
    }
}

fn main() {
    let now = Instant::now();
    // As sbcd builds it without a twin: online, the default guard.
    let node = Node::new(
        common::config(),
        SystemState::Online,
        Duration::from_secs(300),
        now,
    );
    call_cost::run(
        common::Driver::with_core(node, now),
        "the daemon's core (node::Node)",
        Node::counts,
    );
}
