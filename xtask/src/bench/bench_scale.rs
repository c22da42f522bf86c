//! `cargo xtask bench scale [--bindings N] [--dialogs N] [--calls N]`: the pure core with
//! empty tables and with 100 000 bindings and 20 000 confirmed dialogs.
//!
//! Runs `crates/proxy/benches/scale.rs` (release): per-message latency (p50 / p99 / max, in
//! total and per message of the INVITE-180-200-ACK-BYE-200 call) on an empty box and on one
//! filled through `handle_input` (REGISTERs answered 200 by the core, INVITEs answered and
//! ACKed), and the time of `Proxy::registrations()` (`show registrations`) and
//! `Proxy::calls()` (`show calls`) on the filled box. Issue 15's goals: p99 at scale within
//! 2x of the empty box; `show registrations` with 100 000 bindings under 1 s.
//!
//! Latencies are wall times read with `Instant` around each engine step: a busy machine
//! inflates them. A benchmark: it prints (and the bench writes one JSON line to
//! `out/bench/scale.json`), it never fails on a number.

use super::bench_core::build_bench;
use anyhow::Result;
use std::process::Command;

/// `cargo xtask bench scale`'s options (the bench's own defaults when left out).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bindings of the filled box.
    #[arg(long, value_name = "N")]
    bindings: Option<u64>,
    /// Confirmed dialogs of the filled box.
    #[arg(long, value_name = "N")]
    dialogs: Option<u64>,
    /// Measured calls.
    #[arg(long, value_name = "N")]
    calls: Option<u64>,
}

pub fn run(args: Args) -> Result<()> {
    let env = [
        ("SCALE_BENCH_BINDINGS", args.bindings),
        ("SCALE_BENCH_DIALOGS", args.dialogs),
        ("SCALE_BENCH_CALLS", args.calls),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)));
    let bench = build_bench("scale")?;
    let mut cmd = Command::new(&bench);
    for (name, value) in env {
        cmd.env(name, value.to_string());
    }
    crate::util::run(&mut cmd)
}
