//! `cargo xtask`: every task beyond `cargo build` and `cargo test`, written in Rust.
//!
//! Each task lives in its own module with a `run(args)` entry point. `cargo xtask ci` is exactly
//! what `.ci/run` runs.

mod bench;
mod bundle;
mod ci;
mod flash;
mod fuzz;
mod image;
mod keys;
mod lab_sip;
mod press;
mod qemu;
mod test;
mod util;

use std::process::ExitCode;

/// (name, one-line help, entry point)
type Task = (
    &'static str,
    &'static str,
    fn(&[String]) -> anyhow::Result<()>,
);

const TASKS: &[Task] = &[
    ("test", "every test: units, RFC 4475, properties, SIPp host tests, QEMU system tests (`[--host-only]`)", test::run),
    ("bench", "benchmarks: `bench` (parser vs rsip) and `bench sip` (sbcd vs Kamailio under SIPp), `bench flood` (sbcd's RSS and calls under a flood), `bench twin` (takeover times, false takeovers), `bench core` (allocations and instructions per call of the pure core), `bench scale` (latency at 100 000 bindings)", bench::run),
    ("fuzz", "bounded cargo-fuzz run: the SIP parser or the proxy engine (`[--target parse|engine] [--seconds N]`, default parse, 60)", fuzz::run),
    ("image", "build the appliance disk image (`--board qemu|apu2`)", image::run),
    ("keys", "the development key pair that signs update bundles (`[--force]`; out/keys, never committed)", keys::run),
    ("bundle", "a signed RAUC update bundle from the same build as the image (`[--board NAME] [--testport] [--no-cargo-build] [--key FILE --cert FILE] [--version TEXT] [--overlay DIR] [--output FILE]`)", bundle::run),
    ("flash", "write an image to a disk (`--image FILE --device DEV [--yes] [--allow-file] [--keep-data]`)", flash::run),
    ("qemu", "boot the appliance image under QEMU (`[--board qemu] [--twin] [--sip-port N] [--snapshot] [--fresh] [--bios] [--verbose] [--disk FILE] [--media FILE]`)", qemu::run),
    ("peer", "boot a small guest with kernel SCTP that runs the given programs (`--script FILE [--bin PATH]... [--file SRC:GUEST_PATH]... [--print-command]`)", qemu::peer::run),
    ("lab", "the lab's SIP peers under SIPp: `lab core` (answers OPTIONS, REGISTER, calls), `lab call`, `lab register`, `lab phone` (`[--target ADDR] [--port N] [--hold SECS] [--calls N] [--user U] [--password P]`)", lab_sip::run),
    ("press", "press the panel button of a running QEMU appliance (`--hold-ms N`)", press::run),
    ("ci", "what CI runs (.ci/run): the test task", ci::run),
];

fn usage() -> String {
    let mut s = String::from("usage: cargo xtask <task> [args]\n\ntasks:\n");
    for (name, help, _) in TASKS {
        s.push_str(&format!("  {name:<8} {help}\n"));
    }
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(first) = args.first() else {
        eprint!("{}", usage());
        return ExitCode::from(2);
    };
    if first == "--help" || first == "-h" || first == "help" {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let Some((_, _, entry)) = TASKS.iter().find(|(name, _, _)| name == first) else {
        eprintln!("xtask: unknown task `{first}`\n");
        eprint!("{}", usage());
        return ExitCode::from(2);
    };
    match entry(&args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {first}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
