//! `cargo xtask bench shards [--shards 1,2,4] [--ops N] [--register-every N]`: the pure core's
//! throughput with 1, 2 and 4 shards, each a proxy on its own thread driven by an in-process
//! load, the bindings one shard learns applied on the others as change records.
//!
//! Runs `crates/proxy/benches/shards.rs` (release) and prints messages per second of core time
//! per shard and for all shards, and the speed-up over one. A benchmark: it prints (and the
//! bench writes `out/bench/shards.json`), it never fails on a number.

use super::bench_core::build_bench;
use anyhow::Result;
use std::process::Command;

/// `cargo xtask bench shards`'s options (the bench's own defaults when left out).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Shard counts to measure, separated by commas.
    #[arg(long, value_name = "1,2,4", value_parser = shard_list)]
    shards: Option<String>,
    /// Operations per run.
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
    /// A REGISTER every N operations.
    #[arg(long, value_name = "N")]
    register_every: Option<u64>,
}

fn shard_list(list: &str) -> Result<String, String> {
    if list.split(',').any(|s| s.trim().parse::<u32>().is_err()) {
        return Err("whole numbers separated by commas, e.g. 1,2,4".into());
    }
    Ok(list.to_owned())
}

pub fn run(args: Args) -> Result<()> {
    let env = [
        ("SHARDS_BENCH_SHARDS", args.shards),
        ("SHARDS_BENCH_OPS", args.ops.map(|n| n.to_string())),
        (
            "SHARDS_BENCH_REGISTER_EVERY",
            args.register_every.map(|n| n.to_string()),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)));
    let bench = build_bench("shards")?;
    let mut cmd = Command::new(&bench);
    for (name, value) in env {
        cmd.env(name, value);
    }
    crate::util::run(&mut cmd)
}
