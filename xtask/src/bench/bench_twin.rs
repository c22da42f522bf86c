//! `cargo xtask bench twin [--kills N] [--soak-secs S]`: the twin on the real kernel, in the
//! namespace lab of `crates/sbcd/tests/twin_lab.rs` (two release sbcd, phones and a core on
//! two bridges, the cross-connect a veth pair).
//!
//! - `N` kills of the active (default 50), each in a fresh lab: from the kill to the survivor's
//!   decision, and to its first SIP answer on the service address (min / median / max).
//! - `S` seconds (default 600) with 10 % loss both ways on the cross-connect: takeovers counted
//!   (every one is false: both nodes run throughout).
//!
//! A benchmark: it prints, it never fails on a number. Needs root (network namespaces); sends
//! only inside the namespaces it makes.

use crate::util;
use anyhow::{bail, Context, Result};
use std::process::Command;

pub fn run(args: &[String]) -> Result<()> {
    let (mut kills, mut soak) = (50u64, 600u64);
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
            other => bail!(
                "unknown argument `{other}`; usage: cargo xtask bench twin [--kills N] [--soak-secs S]"
            ),
        }
    }
    let mut selected = Vec::new();
    if kills > 0 {
        selected.push("bench_twin_kills");
    }
    if soak > 0 {
        selected.push("bench_twin_lossy_link_soak");
    }
    for test in selected {
        util::run(
            Command::new(env!("CARGO"))
                .current_dir(util::root())
                .args([
                    "test",
                    "--release",
                    "-p",
                    "sbcd",
                    "--test",
                    "twin_lab",
                    "--",
                ])
                .args([
                    "--ignored",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                    test,
                ])
                .env("TWIN_BENCH_KILLS", kills.to_string())
                .env("TWIN_BENCH_SOAK_SECS", soak.to_string()),
        )?;
    }
    Ok(())
}
