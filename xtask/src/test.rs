//! `cargo xtask test`: the whole suite, installing what it needs first.

use crate::util;
use std::process::Command;

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    util::ensure_debs(&["sip-tester"])?;
    util::run(Command::new(env!("CARGO")).current_dir(util::root()).args(["test", "--workspace"]))
}
