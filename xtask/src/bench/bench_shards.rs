//! `cargo xtask bench shards [--shards 1,2,4] [--ops N] [--register-every N]`: the pure core's
//! throughput with 1, 2 and 4 shards, each a proxy on its own thread driven by an in-process
//! load, the bindings one shard learns applied on the others as change records.
//!
//! Runs `crates/proxy/benches/shards.rs` (release) and prints messages per second of core time
//! per shard and for all shards, and the speed-up over one. A benchmark: it prints (and the
//! bench writes `out/bench/shards.json`), it never fails on a number.

use super::bench_core::build_bench;
use anyhow::{bail, Context, Result};
use std::process::Command;

pub fn run(args: &[String]) -> Result<()> {
    let mut env: Vec<(&str, String)> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--shards" => {
                let list = value("--shards")?;
                if list.split(',').any(|s| s.trim().parse::<u32>().is_err()) {
                    bail!("--shards takes whole numbers separated by commas, e.g. 1,2,4");
                }
                env.push(("SHARDS_BENCH_SHARDS", list));
            }
            "--ops" => env.push(("SHARDS_BENCH_OPS", number("--ops", &value("--ops")?)?)),
            "--register-every" => env.push((
                "SHARDS_BENCH_REGISTER_EVERY",
                number("--register-every", &value("--register-every")?)?,
            )),
            other => bail!(
                "unknown argument `{other}`; usage: cargo xtask bench shards [--shards 1,2,4] [--ops N] [--register-every N]"
            ),
        }
    }
    let bench = build_bench("shards")?;
    let mut cmd = Command::new(&bench);
    for (name, value) in env {
        cmd.env(name, value);
    }
    crate::util::run(&mut cmd)
}

fn number(name: &str, value: &str) -> Result<String> {
    value
        .parse::<u64>()
        .map(|n| n.to_string())
        .with_context(|| format!("{name} needs a whole number"))
}
