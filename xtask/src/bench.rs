//! `cargo xtask bench [parser|sip|flood|twin|core|scale|shards]`: benchmarks, never timed assertions.
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
//! - `bench scale`: the pure core's per-message latency empty and with 100 000 bindings and
//!   20 000 dialogs, and the time of `show registrations` and `show calls` there.
//! - `bench shards`: the pure core's throughput with 1, 2 and 4 shards on their own threads,
//!   bindings shared as change records.

mod bench_core;
mod bench_flood;
mod bench_parser;
mod bench_scale;
mod bench_shards;
mod bench_sip;
mod bench_twin;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        None | Some("parser") => bench_parser::run(args.get(1..).unwrap_or(&[])),
        Some("sip") => bench_sip::run(&args[1..]),
        Some("flood") => bench_flood::run(&args[1..]),
        Some("twin") => bench_twin::run(&args[1..]),
        Some("core") => bench_core::run(&args[1..]),
        Some("scale") => bench_scale::run(&args[1..]),
        Some("shards") => bench_shards::run(&args[1..]),
        Some(other) => {
            anyhow::bail!(
                "unknown benchmark `{other}` (expected `parser`, `sip`, `flood`, `twin`, `core`, `scale` or `shards`)"
            )
        }
    }
}
