//! `cargo xtask bench [parser|sip|flood|twin|core|daemon|scale|shards|boot]`: benchmarks, never timed assertions.
//!
//! - `bench` (or `bench parser`): our SIP parser and rsip on the same messages, side by side.
//! - `bench sip`: SIPp UAC -> proxy -> SIPp UAS, through sbcd and through Kamailio, in one run.
//! - `bench flood`: sbcd's peak RSS and the legitimate calls' success under a flood of unique
//!   requests from one host, at a few flood rates.
//! - `bench twin`: hot-standby replication in one process (records/s, snapshot sync of 100 000
//!   bindings and 20 000 dialogs, CPU idle and busy; `--only-replication` stops there), then
//!   takeover times over many kills of the active, and false takeovers on a lossy
//!   cross-connect, in network namespaces.
//! - `bench core`: the pure core's allocations and (callgrind) instructions per
//!   INVITE-180-200-ACK-BYE-200 call, and the functions the instructions go to.
//! - `bench daemon`: the whole sbcd's (callgrind) instructions per call under SIPp, and the
//!   core's, the call log's and the sends' shares of them.
//! - `bench scale`: the pure core's per-message latency empty and with 100 000 bindings and
//!   20 000 dialogs, and the time of `show registrations` and `show calls` there.
//! - `bench shards`: the pure core's throughput with 1, 2 and 4 shards on their own threads,
//!   bindings shared as change records.
//! - `bench boot`: QEMU start to SIP-online (the first OPTIONS answered 200), boot after boot.

mod bench_boot;
mod bench_core;
mod bench_daemon;
mod bench_flood;
mod bench_parser;
mod bench_scale;
mod bench_shards;
mod bench_sip;
mod bench_twin;

/// `cargo xtask bench`'s arguments: which benchmark (the parser's when none is named).
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    which: Option<Bench>,
}

#[derive(Debug, clap::Subcommand)]
enum Bench {
    /// Our SIP parser and rsip on the same messages, side by side (the default).
    Parser(bench_parser::Args),
    /// SIPp UAC -> proxy -> SIPp UAS, through sbcd and through Kamailio.
    Sip(bench_sip::Args),
    /// sbcd's peak RSS and the legitimate calls' success under a flood of unique requests.
    Flood(bench_flood::Args),
    /// Hot-standby replication, takeover times over many kills, false takeovers.
    Twin(bench_twin::Args),
    /// The pure core's allocations and instructions per call.
    Core(bench_core::Args),
    /// The whole daemon's instructions per call under SIPp.
    Daemon(bench_daemon::Args),
    /// The pure core's per-message latency empty and with 100 000 bindings.
    Scale(bench_scale::Args),
    /// The pure core's throughput with 1, 2 and 4 shards.
    Shards(bench_shards::Args),
    /// QEMU start to SIP-online, boot after boot.
    Boot(bench_boot::Args),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.which {
        None => bench_parser::run(bench_parser::Args::default()),
        Some(Bench::Parser(a)) => bench_parser::run(a),
        Some(Bench::Sip(a)) => bench_sip::run(a),
        Some(Bench::Flood(a)) => bench_flood::run(a),
        Some(Bench::Twin(a)) => bench_twin::run(a),
        Some(Bench::Core(a)) => bench_core::run(a),
        Some(Bench::Daemon(a)) => bench_daemon::run(a),
        Some(Bench::Scale(a)) => bench_scale::run(a),
        Some(Bench::Shards(a)) => bench_shards::run(a),
        Some(Bench::Boot(a)) => bench_boot::run(a),
    }
}
