//! The machine driven through the `Pair` harness: one test per rule of SPEC §7, then random
//! schedules of loss, cuts, partitions and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pair;
mod property;
mod rules;
