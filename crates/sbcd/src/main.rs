//! `sbcd`: the SBC daemon. `sbcd --config PATH [--check | --firewall OUT] [--board-dir DIR]`.
//!
//! Exit status: 0 after a clean stop (or a valid `--check`), 1 when start-up failed, 2 for a
//! usage error or an invalid configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use sbcd::config::Config;
use sbcd::daemon::{self, Options};

const USAGE: &str = "\
usage: sbcd --config PATH [--check | --panel-alarm | --firewall OUT] [--board-dir DIR]

  --config PATH     the configuration file (/etc/sbc/sbc.toml on the box)
  --check           validate the configuration and exit
  --firewall OUT    write the box's nftables ruleset for this configuration and board to OUT
                    ('-' for standard output) and exit; a configuration that cannot be read
                    gives a ruleset that admits no service (said on stderr, exit status 3)
  --panel-alarm     show engine-down on the board's LEDs until killed (run by systemd
                    while sbcd is down; see docs/panel.md)
  --board-dir DIR   where board profiles live (default /usr/share/sbc/board)
Logging: SBCD_LOG or RUST_LOG (default info); journald under systemd, else stderr.";

struct Args {
    config: PathBuf,
    check: bool,
    panel_alarm: bool,
    firewall: Option<PathBuf>,
    board_dir: Option<PathBuf>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config = None;
    let mut check = false;
    let mut panel_alarm = false;
    let mut board_dir = None;
    let mut firewall = None;
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--config" | "-c" => config = Some(PathBuf::from(value("--config")?)),
            "--board-dir" => board_dir = Some(PathBuf::from(value("--board-dir")?)),
            "--check" => check = true,
            "--panel-alarm" => panel_alarm = true,
            "--firewall" => firewall = Some(PathBuf::from(value("--firewall")?)),
            "--help" | "-h" => return Err(String::new()),
            "--version" | "-V" => return Err(format!("sbcd {}", env!("CARGO_PKG_VERSION"))),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let config = config.ok_or("--config PATH is required")?;
    Ok(Args {
        config,
        check,
        panel_alarm,
        firewall,
        board_dir,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) if msg.starts_with("sbcd ") => {
            println!("{msg}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("sbcd: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
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
