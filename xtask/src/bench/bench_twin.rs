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
use anyhow::Result;
use std::process::Command;

/// `cargo xtask bench twin`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only the in-process replication bench: no lab.
    #[arg(long, conflicts_with = "skip_replication")]
    only_replication: bool,
    /// Leave out the in-process replication bench.
    #[arg(long)]
    skip_replication: bool,
    /// Kills of the active, each in a fresh lab.
    #[arg(long, value_name = "N", default_value_t = 50)]
    kills: u64,
    /// Seconds with 10 % loss on the cross-connect, counting false takeovers.
    #[arg(long, value_name = "S", default_value_t = 600)]
    soak_secs: u64,
    /// Kills of the active under load, in one lab.
    #[arg(long, value_name = "K", default_value_t = 20)]
    hot_kills: u64,
    /// Calls a second during the hot kills.
    #[arg(long, value_name = "R", default_value_t = 20)]
    hot_rate: u64,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        kills,
        soak_secs: soak,
        hot_kills,
        hot_rate,
        ..
    } = args;
    let replication = !args.skip_replication;
    let lab = !args.only_replication;
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
