//! Tests of the whole proxy on a simulated network and clock.

mod drain_rules;
mod harness;
mod proxy_core;
