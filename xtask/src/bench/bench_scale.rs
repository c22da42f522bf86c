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
use anyhow::{bail, Context, Result};
use std::process::Command;

pub fn run(args: &[String]) -> Result<()> {
    let mut env: Vec<(&str, u64)> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} needs a whole number"))
        };
        match arg.as_str() {
            "--bindings" => env.push(("SCALE_BENCH_BINDINGS", number("--bindings")?)),
            "--dialogs" => env.push(("SCALE_BENCH_DIALOGS", number("--dialogs")?)),
            "--calls" => env.push(("SCALE_BENCH_CALLS", number("--calls")?)),
            other => bail!(
                "unknown argument `{other}`; usage: cargo xtask bench scale [--bindings N] [--dialogs N] [--calls N]"
            ),
        }
    }
    let bench = build_bench("scale")?;
    let mut cmd = Command::new(&bench);
    for (name, value) in env {
        cmd.env(name, value.to_string());
    }
    crate::util::run(&mut cmd)
}
