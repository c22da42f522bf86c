//! `cargo xtask fuzz [--target parse|engine] [--seconds N]`: a bounded cargo-fuzz run of one of
//! the targets in `fuzz/`:
//!
//! - `parse` (the default): the SIP parser, seeded with the RFC 4475 messages and the benchmark
//!   messages;
//! - `engine`: the pure proxy core driven by arbitrary sequences of messages from both realms,
//!   clock jumps, flow closes and state changes, checking the border's invariants (SPEC §1a).
//!   Its input is a program for the target, not SIP text, so it starts from an empty corpus.
//!
//! Installs cargo-fuzz when it is missing. Only a stable rustc exists on these machines:
//! `RUSTC_BOOTSTRAP=1` lets it accept the `-Z` flags cargo-fuzz passes for the sanitizer.
//! Fails when the fuzzer finds a crash (the input is left under `fuzz/artifacts/<target>/`).

use crate::util;
use anyhow::{Context, Result};
use std::process::Command;

/// The targets of `fuzz/Cargo.toml`.
const TARGETS: &[&str] = &["parse", "engine"];

/// `cargo xtask fuzz`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The fuzz target.
    #[arg(long, default_value = "parse", value_parser = TARGETS.to_vec())]
    target: String,
    /// How long the fuzzer runs.
    #[arg(long, value_name = "N", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
}

pub fn run(args: Args) -> Result<()> {
    let Args { seconds, target } = args;
    ensure_cargo_fuzz()?;
    let root = util::root();
    let fuzz_dir = root.join("fuzz");
    // libFuzzer writes new inputs to the first corpus directory and only reads the others.
    let corpus = fuzz_dir.join("corpus").join(&target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("could not create {}", corpus.display()))?;
    let seeds = if target == "parse" {
        vec![
            root.join("crates/sip/tests/rfc4475"),
            root.join("crates/sip/benches/messages"),
        ]
    } else {
        Vec::new()
    };
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&fuzz_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", &target])
        .arg(&corpus)
        .args(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A SIP message is at most 64 KiB, and 4 KiB of engine program is a few hundred
        // steps; longer inputs only slow the search down.
        .arg("-max_len=4096");
    if target == "engine" {
        // The engine's bugs are deep (caps reached, dialogs confirmed, timers run out): that
        // takes programs of hundreds of bytes from the start, not lengths grown slowly.
        cmd.arg("-len_control=0");
    }
    util::run(&mut cmd)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new(env!("CARGO"))
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    eprintln!("xtask fuzz: installing cargo-fuzz");
    util::run(Command::new(env!("CARGO")).args(["install", "cargo-fuzz", "--locked"]))
}
