//! `cargo xtask bench [parser [--secs N]]`: our SIP parser and rsip 0.4 on the same INVITE,
//! 200 OK and REGISTER, parse plus proxy-header access, side by side with the ratio.
//!
//! The measuring is done by the `parse` bench of the `sip` crate (`harness = false`); this
//! task runs it in release mode and lets it print. `--secs` sets the time per message and
//! parser (default 1).

use crate::util;
use anyhow::{bail, Context, Result};
use std::process::Command;

pub fn run(args: &[String]) -> Result<()> {
    let mut secs: Option<f64> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--secs" => {
                let value = it.next().context("--secs needs a number of seconds")?;
                let parsed: f64 = value
                    .parse()
                    .with_context(|| format!("--secs: `{value}` is not a number"))?;
                if !(parsed > 0.0 && parsed <= 600.0) {
                    bail!("--secs: {parsed} is outside 0..=600");
                }
                secs = Some(parsed);
            }
            other => bail!("unknown argument `{other}` (expected `--secs N`)"),
        }
    }
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(util::root())
        .args(["bench", "-p", "sip", "--bench", "parse"]);
    if let Some(secs) = secs {
        cmd.env("SIP_BENCH_SECS", secs.to_string());
    }
    util::run(&mut cmd)
}
