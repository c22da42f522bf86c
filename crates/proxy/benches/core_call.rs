//! The pure core's cost per call (`harness = false`): one INVITE-180-200-ACK-BYE-200 call
//! through the bare [`proxy::Proxy`], a phone on the access listener and the core upstream
//! answering, written by hand (`common/mod.rs`), repeated with distinct Call-IDs on a
//! simulated clock. What is run and counted: `common/call_cost.rs` (`node`'s `node_call`
//! bench runs the same calls through `node::Node`).
//!
//! A benchmark: it prints, it never asserts a number.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/call_cost.rs"]
mod call_cost;
mod common;

fn main() {
    call_cost::run(common::Driver::new(), "pure core (proxy::Proxy)", |p| {
        p.counts()
    });
}
