//! `cargo xtask`: every task beyond `cargo build` and `cargo test`, written in Rust.
//!
//! Each task lives in its own module with an `Args` struct (its options, parsed by clap) and a
//! `run(args)` entry point. `cargo xtask <task> --help` describes a task; `cargo xtask
//! completions bash|zsh|fish` prints a completion script. `cargo xtask ci` is exactly what
//! `.ci/run` runs.

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

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;

/// Every task beyond `cargo build` and `cargo test`.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Every test: units, RFC 4475, properties, SIPp host tests, QEMU system tests.
    Test(test::Args),
    /// Benchmarks: the parser vs rsip (the default), sbcd vs Kamailio, floods, the twin, the
    /// pure core's cost, scale and shards.
    Bench(bench::Args),
    /// A bounded cargo-fuzz run of the SIP parser or the proxy engine.
    Fuzz(fuzz::Args),
    /// Build the appliance disk image.
    Image(image::Args),
    /// The development key pair that signs update bundles (out/keys, never committed).
    Keys(keys::Args),
    /// A signed RAUC update bundle from the same build as the image.
    Bundle(bundle::Args),
    /// Write an image to a disk, refusing every target that would hurt the host.
    Flash(flash::Args),
    /// Boot the appliance image under QEMU.
    Qemu(qemu::Args),
    /// Boot a small guest with kernel SCTP that runs the given programs.
    Peer(qemu::peer::Args),
    /// The lab's SIP peers under SIPp: core (answers OPTIONS, REGISTER, calls), call, register,
    /// phone.
    Lab(lab_sip::Args),
    /// Press the panel button of a running QEMU appliance.
    Press(press::Args),
    /// What CI runs (.ci/run): the test task.
    Ci(test::Args),
    /// Print a shell completion script.
    ///
    /// The script completes the `xtask` command: use it with `alias xtask='cargo xtask'` (or
    /// target/debug/xtask on the PATH), e.g. `source <(cargo xtask completions bash)`.
    Completions {
        /// The shell the script is for.
        shell: clap_complete::Shell,
    },
}

impl Task {
    fn name(&self) -> &'static str {
        match self {
            Task::Test(_) => "test",
            Task::Bench(_) => "bench",
            Task::Fuzz(_) => "fuzz",
            Task::Image(_) => "image",
            Task::Keys(_) => "keys",
            Task::Bundle(_) => "bundle",
            Task::Flash(_) => "flash",
            Task::Qemu(_) => "qemu",
            Task::Peer(_) => "peer",
            Task::Lab(_) => "lab",
            Task::Press(_) => "press",
            Task::Ci(_) => "ci",
            Task::Completions { .. } => "completions",
        }
    }

    fn run(self) -> anyhow::Result<()> {
        match self {
            Task::Test(args) => test::run(args),
            Task::Bench(args) => bench::run(args),
            Task::Fuzz(args) => fuzz::run(args),
            Task::Image(args) => image::run(args),
            Task::Keys(args) => keys::run(args),
            Task::Bundle(args) => bundle::run(args),
            Task::Flash(args) => flash::run(args),
            Task::Qemu(args) => qemu::run(args),
            Task::Peer(args) => qemu::peer::run(args),
            Task::Lab(args) => lab_sip::run(args),
            Task::Press(args) => press::run(args),
            Task::Ci(args) => ci::run(args),
            Task::Completions { shell } => {
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "xtask", &mut script);
                std::io::stdout()
                    .write_all(&script)
                    .context("writing the completion script")
            }
        }
    }
}

fn main() -> ExitCode {
    // `Cli::parse` prints help and exits 0 for `--help`, and exits 2 naming the argument on a
    // usage error.
    let task = Cli::parse().task;
    let name = task.name();
    match task.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completion_scripts_name_the_tasks() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "xtask", &mut script);
            let script = String::from_utf8_lossy(&script);
            for word in ["qemu", "sip-port", "lab", "hold"] {
                assert!(script.contains(word), "{shell}: {word} missing");
            }
        }
    }

    #[test]
    fn help_is_there_for_every_task_and_unknown_options_are_named() {
        for task in Cli::command().get_subcommands() {
            let name = task.get_name();
            let e = Cli::try_parse_from(["xtask", name, "--help"]).expect_err("help");
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{name}");
            assert_eq!(e.exit_code(), 0, "{name}");
        }
        let e = Cli::try_parse_from(["xtask", "flash", "--bogus"]).expect_err("unknown");
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--bogus"), "{e}");
        let e = Cli::try_parse_from(["xtask", "bogus"]).expect_err("unknown task");
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn the_options_the_tests_and_readme_use_still_parse() {
        for words in [
            &[
                "qemu",
                "--no-build",
                "--testport",
                "--bios",
                "--sip-port",
                "15060",
                "--qmp",
                "q.sock",
                "--print-command",
            ][..],
            &[
                "bundle",
                "--testport",
                "--no-cargo-build",
                "--key",
                "k.pem",
                "--cert",
                "c.pem",
                "--version",
                "1.2.0",
                "--output",
                "o.raucb",
            ],
            &["lab", "core", "--port", "25070"],
            &[
                "lab",
                "call",
                "--target",
                "127.0.0.1:5060",
                "--hold",
                "20",
                "--calls",
                "2",
                "--to",
                "1000",
            ],
            &[
                "lab",
                "register",
                "--user",
                "alice",
                "--password",
                "p",
                "--expires",
                "60",
            ],
            &["bench"],
            &[
                "bench", "core", "--calls", "100", "--k1", "10", "--k2", "20",
            ],
            &["bench", "sip", "--only", "sbcd", "--rates", "50,100"],
            &["bench", "twin", "--only-replication"],
            &["test", "--host-only"],
            &["ci"],
            &["fuzz", "--target", "engine", "--seconds", "5"],
            &[
                "flash",
                "--image",
                "i.img",
                "--device",
                "/dev/sdz",
                "--yes",
                "--allow-file",
                "--keep-data",
            ],
            &["press", "--hold-ms", "100", "--node", "b"],
            &[
                "peer",
                "--script",
                "s.sh",
                "--bin",
                "a",
                "--bin",
                "b",
                "--file",
                "x:/y",
                "--print-command",
            ],
            &["keys", "--force"],
            &["image", "--board", "apu2", "--no-cargo-build", "--testport"],
            &["completions", "bash"],
        ] {
            let argv = std::iter::once("xtask").chain(words.iter().copied());
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{words:?}: {e}");
            }
        }
    }
}
