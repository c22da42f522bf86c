//! `cargo xtask bench twin [--only-replication | --skip-replication] [--kills N] [--soak-secs S]
//! [--hot-kills K] [--hot-rate R]`.
//!
//! First, hot-standby replication in one process (`crates/node/benches/replication.rs`, release):
//! records per second from the active's change to the standby's apply, the snapshot sync of
//! 100 000 bindings and 20 000 dialogs, and the CPU of an idle and a busy pair per simulated
//! second; a table, and one JSON line in `out/bench/twin-replication.json`. Its sizes follow
//! `REPL_BENCH_*` (see that file). `--only-replication` stops there; `--skip-replication`
//! leaves it out.
//!
//! Then the twin on the real kernel, in the namespace lab of `crates/sbcd/tests/twin_lab.rs`
//! (two release sbcd, phones and a core on two bridges, the cross-connect a veth pair):
//!
//! - `N` kills of the active (default 50), each in a fresh lab: from the kill to the survivor's
//!   decision, and to its first SIP answer on the service address (min / median / max).
//! - `S` seconds (default 600) with 10 % loss both ways on the cross-connect: takeovers counted
//!   (every one is false: both nodes run throughout).
//! - `K` kills (default 20) of the active under `R` calls/s (default 20, each held 2 s), in one
//!   lab (`crates/sbcd/tests/twin_hot.rs`), the killed node restarted and synced before the
//!   next: the calls lost (failed at the phones' SIPp), kill-to-active times, and each sbcd's
//!   CPU idle and under the load.
//!
//! A benchmark: it prints, it never fails on a number. The lab needs root (network
//! namespaces); it sends only inside the namespaces it makes.

use crate::util;
use anyhow::{bail, Context, Result};
use std::process::Command;

pub fn run(args: &[String]) -> Result<()> {
    let (mut kills, mut soak) = (50u64, 600u64);
    let (mut hot_kills, mut hot_rate) = (20u64, 20u64);
    let (mut replication, mut lab) = (true, true);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} needs a whole number"))
        };
        match arg.as_str() {
            "--kills" => kills = number("--kills")?,
            "--soak-secs" => soak = number("--soak-secs")?,
            "--hot-kills" => hot_kills = number("--hot-kills")?,
            "--hot-rate" => hot_rate = number("--hot-rate")?,
            "--only-replication" => lab = false,
            "--skip-replication" => replication = false,
            other => bail!(
                "unknown argument `{other}`; usage: cargo xtask bench twin [--only-replication | --skip-replication] [--kills N] [--soak-secs S] [--hot-kills K] [--hot-rate R]"
            ),
        }
    }
    if replication {
        util::run(Command::new(env!("CARGO")).current_dir(util::root()).args([
            "bench",
            "-p",
            "node",
            "--bench",
            "replication",
        ]))?;
    }
    if !lab {
        return Ok(());
    }
    let mut selected = Vec::new();
    if hot_kills > 0 {
        selected.push(("twin_hot", "bench_twin_hot_kills_under_load"));
    }
    if kills > 0 {
        selected.push(("twin_lab", "bench_twin_kills"));
    }
    if soak > 0 {
        selected.push(("twin_lab", "bench_twin_lossy_link_soak"));
    }
    for (file, test) in selected {
        util::run(
            Command::new(env!("CARGO"))
                .current_dir(util::root())
                .args(["test", "--release", "-p", "sbcd", "--test", file, "--"])
                .args([
                    "--ignored",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                    test,
                ])
                .env("TWIN_BENCH_KILLS", kills.to_string())
                .env("TWIN_BENCH_SOAK_SECS", soak.to_string())
                .env("TWIN_BENCH_HOT_KILLS", hot_kills.to_string())
                .env("TWIN_BENCH_HOT_RATE", hot_rate.to_string()),
        )?;
    }
    Ok(())
}
