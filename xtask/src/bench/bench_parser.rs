//! `cargo xtask bench [parser [--secs N]]`: our SIP parser and rsip 0.4 on the same INVITE,
//! 200 OK and REGISTER, parse plus proxy-header access, side by side with the ratio.
//!
//! The measuring is done by the `parse` bench of the `sip` crate (`harness = false`); this
//! task runs it in release mode and lets it print. `--secs` sets the time per message and
//! parser (default 1).

use crate::util;
use anyhow::Result;
use std::process::Command;

/// `cargo xtask bench parser`'s options.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Seconds per message and parser (default 1; at most 600).
    #[arg(long, value_name = "N", value_parser = seconds)]
    secs: Option<f64>,
}

fn seconds(v: &str) -> Result<f64, String> {
    let parsed: f64 = v.parse().map_err(|_| format!("`{v}` is not a number"))?;
    if !(parsed > 0.0 && parsed <= 600.0) {
        return Err(format!("{parsed} is outside 0..=600"));
    }
    Ok(parsed)
}

pub fn run(args: Args) -> Result<()> {
    let secs = args.secs;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(util::root())
        .args(["bench", "-p", "sip", "--bench", "parse"]);
    if let Some(secs) = secs {
        cmd.env("SIP_BENCH_SECS", secs.to_string());
    }
    util::run(&mut cmd)
}
