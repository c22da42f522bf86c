//! `sbcd`: the SBC daemon. `sbcd --config PATH [--check | --firewall OUT] [--board-dir DIR]`.
//!
//! Exit status: 0 after a clean stop (or a valid `--check`), 1 when start-up failed, 2 for a
//! usage error or an invalid configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sbcd::config::Config;
use sbcd::daemon::{self, Options};

/// The SBC daemon.
#[derive(Debug, Parser)]
#[command(
    name = "sbcd",
    version,
    after_help = "Logging: SBCD_LOG or RUST_LOG (default info); journald under systemd, else stderr."
)]
struct Args {
    /// The configuration file (/etc/sbc/sbc.toml on the box).
    #[arg(short, long, value_name = "PATH")]
    config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Show engine-down on the board's LEDs until killed (run by systemd while sbcd is down;
    /// see docs/panel.md).
    #[arg(long)]
    panel_alarm: bool,
    /// Write the box's nftables ruleset for this configuration and board to OUT ('-' for
    /// standard output) and exit; a configuration that cannot be read gives a ruleset that
    /// admits no service (said on stderr, exit status 3).
    #[arg(long, value_name = "OUT")]
    firewall: Option<PathBuf>,
    /// Where board profiles live (default /usr/share/sbc/board).
    #[arg(long, value_name = "DIR")]
    board_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    // `--help` and `--version` print and exit 0; a usage error names the argument and exits 2.
    let args = Args::parse();
    if let Some(out) = &args.firewall {
        return write_firewall(&args.config, args.board_dir.as_deref(), out);
    }
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sbcd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("sbcd: {}: configuration is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    let (recent, sink) = sbcd::logging::init();
    if args.panel_alarm {
        return match sbcd::panel::run_alarm(&config, args.board_dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sbcd: {e}");
                ExitCode::from(1)
            }
        };
    }
    tracing::info!(config = %args.config.display(), log = ?sink, "sbcd starting");
    let options = Options {
        config_path: args.config,
        board_dir: args.board_dir,
    };
    match daemon::run(config, options, recent) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sbcd failed to start");
            eprintln!("sbcd: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--firewall OUT`: the ruleset, or the lockdown one when the configuration cannot be used.
/// Written to a temporary file and renamed, so `nft -f OUT` never reads half of one.
fn write_firewall(
    config: &std::path::Path,
    board_dir: Option<&std::path::Path>,
    out: &std::path::Path,
) -> ExitCode {
    let (ruleset, status) = match sbcd::firewall::for_config(config, board_dir) {
        Ok(r) => (r, ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("sbcd: firewall: {e}; writing a ruleset that admits no service");
            (sbcd::firewall::lockdown(&e), ExitCode::from(3))
        }
    };
    if out.as_os_str() == "-" {
        print!("{ruleset}");
        return status;
    }
    let tmp = out.with_extension("tmp");
    let written = std::fs::write(&tmp, &ruleset).and_then(|()| std::fs::rename(&tmp, out));
    match written {
        Ok(()) => status,
        Err(e) => {
            eprintln!("sbcd: firewall: cannot write {}: {e}", out.display());
            ExitCode::from(1)
        }
    }
}
