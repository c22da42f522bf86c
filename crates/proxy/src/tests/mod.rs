//! Tests of the whole proxy on a simulated network and clock.

mod border_rules;
mod drain_rules;
pub(crate) mod harness;
mod proxy_core;
mod replication;
mod rfc4475_policy;
mod shards;
