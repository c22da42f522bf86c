//! `cargo xtask test [--host-only]`: the whole suite, installing what it needs first (SIPp and
//! sipvicious, as root).
//!
//! Two stages, cheapest first so that a broken unit fails in minutes, not after an image build:
//! 1. every crate's unit, property, RFC 4475, differential and SIPp host tests;
//! 2. the system tests (`tests/system`): the appliance image built and booted in QEMU, driven
//!    through its serial console, QMP and forwarded SIP ports. They run one at a time
//!    (`--test-threads=1`): each boots a guest, and two guests under TCG on two cores would only
//!    slow each other past their timeouts. The twin's (`tests/system/tests/twin.rs`) boots two
//!    on purpose, in a lab network namespace (`cargo xtask qemu --twin`), so the suite runs as
//!    root.

use crate::util;
use std::process::Command;

/// `cargo xtask test`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only the host stage: leave out the QEMU system tests.
    #[arg(long)]
    host_only: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let host_only = args.host_only;
    // SIPp plays phones and cores; Kamailio is the authenticating registrar of the drain tests
    // (crates/sbcd/tests/drain_registrar.rs); sipvicious (svmap, svwar) is the scanner of the
    // hostile suite, which fails under CI=true when it is missing; nftables' `nft` drops the
    // twin lab's replication or SIP traffic in a namespace (crates/sbcd/tests/common/twin.rs).
    util::ensure_debs(&["sip-tester", "kamailio", "sipvicious", "nftables"])?;
    let cargo = env!("CARGO");
    util::run(Command::new(cargo).current_dir(util::root()).args([
        "test",
        "--workspace",
        "--no-fail-fast",
        "--exclude",
        "system-tests",
    ]))?;
    if host_only {
        eprintln!("xtask test: --host-only: the QEMU system tests were not run");
        return Ok(());
    }
    util::run(Command::new(cargo).current_dir(util::root()).args([
        "test",
        "-p",
        "system-tests",
        "--",
        "--test-threads=1",
        "--nocapture",
    ]))
}
