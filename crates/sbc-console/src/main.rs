//! `sbc-console`: the shell on the appliance's serial console (SPEC §5).
//!
//! `sbc-console [--socket PATH] [--tty DEV] [--config PATH]` asks for a login, then takes
//! commands of the `console` grammar and sends them to `sbcd` over its control socket, printing
//! state changes above the prompt as they happen. Without `--tty` it runs on standard input and
//! output and ends when input ends; with `--tty` it owns the device and comes back to the login
//! prompt after a hang-up, `exit` or the idle logout. The factory password must be replaced at
//! its first use; the new hash is kept in `[state] dir` (the data partition) and wins over the
//! configuration's. `sbc-console --hash-password` reads a password on standard input and prints
//! the Argon2 hash for `[console] password_hash`.
//!
//! This program decides nothing about the box: it is a thin shell around the `console` crate
//! (text) and `control::client` (talking to `sbcd`). When `sbcd` is not running it says so and
//! keeps working; commands reconnect on their own, and so does the notice subscription.

mod config;
mod session;
mod stored;
mod term;

use control::client::{Client, ClientError, DEFAULT_SOCKET};
use control::{Reply, Request, Response};
use nix::sys::signal::{SigSet, Signal};
use session::{Input, Mode, Session, Settings};
use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

/// How long to wait before trying `sbcd` or the terminal device again.
const RETRY: Duration = Duration::from_secs(1);

/// The shell on the appliance's serial console.
#[derive(Debug, clap::Parser)]
#[command(name = "sbc-console", version)]
struct Args {
    /// sbcd's control socket (default: [control] socket, else /run/sbc/control.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Run on this terminal device (e.g. /dev/ttyS0) instead of standard input and output.
    #[arg(long, value_name = "DEV")]
    tty: Option<PathBuf>,
    /// The configuration file (default /etc/sbc/sbc.toml): [node] name, [control] socket,
    /// [state] dir, [console] user, password_hash and idle_logout_secs.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Read a password on standard input, print its hash for [console] password_hash.
    #[arg(long)]
    hash_password: bool,
}

fn main() -> ExitCode {
    // `--help` and `--version` print and exit 0; a usage error names the argument and exits 2.
    let args = <Args as clap::Parser>::parse();
    if args.hash_password {
        return hash_password();
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sbc-console: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let config_path = args
        .config
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG));
    let cfg = config::ConsoleConfig::load(&config_path);
    let socket = args
        .socket
        .or(cfg.socket)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let (mode, input, output) = match &args.tty {
        Some(dev) => {
            let f = term::open_device(dev).map_err(|e| format!("{}: {e}", dev.display()))?;
            let out = f.try_clone().map_err(|e| e.to_string())?;
            (Mode::Device, f, out)
        }
        None => {
            let input = dup(&std::io::stdin())?;
            let output = dup(&std::io::stdout())?;
            (Mode::Stdio, input, output)
        }
    };
    let raw = term::raw_mode(&input, mode == Mode::Device)
        .map_err(|e| format!("cannot put the terminal in raw mode: {e}"))?;
    let (tx, rx) = mpsc::channel();
    // Termination signals become inputs, so the session ends normally and the terminal is put
    // back as it was. Blocked here, before any thread starts, so every thread inherits the mask
    // and only the waiting thread receives them.
    let signals = termination_signals();
    signals
        .thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || wait_for_signals(&signals, mode, &tx))
            .map_err(|e| e.to_string())?;
    }
    let input_fd = input.try_clone().ok();
    {
        let tx = tx.clone();
        let dev = args.tty.clone();
        std::thread::Builder::new()
            .name("terminal".into())
            .spawn(move || read_terminal(input, dev, tx))
            .map_err(|e| e.to_string())?;
    }
    {
        let socket = socket.clone();
        std::thread::Builder::new()
            .name("notices".into())
            .spawn(move || follow_sbcd(&socket, tx))
            .map_err(|e| e.to_string())?;
    }
    let settings = Settings {
        mode,
        node_name: cfg.node_name,
        socket,
        account: cfg.account,
        state_dir: cfg.state_dir,
        idle_logout: cfg.idle_logout,
        warnings: cfg.warnings,
    };
    let mut session = Session::new(settings, output, input_fd, raw);
    session.run(&rx);
    // Dropping the session restores the terminal.
    drop(session);
    Ok(())
}

fn dup(fd: &impl AsFd) -> Result<File, String> {
    fd.as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|e| format!("cannot duplicate a standard descriptor: {e}"))
}

fn termination_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// SIGTERM and SIGINT end the program; SIGHUP ends a session on standard input (its terminal
/// is gone) and is ignored on a device, whose hang-ups are seen on the device itself.
fn wait_for_signals(set: &SigSet, mode: Mode, tx: &Sender<Input>) {
    while let Ok(signal) = set.wait() {
        let input = match (signal, mode) {
            (Signal::SIGHUP, Mode::Device) => continue,
            (Signal::SIGHUP, Mode::Stdio) => Input::Hangup,
            _ => Input::Terminate,
        };
        if tx.send(input).is_err() {
            return;
        }
    }
}

/// Reads the terminal into the channel. On a device, a hang-up (end of file, or an error such
/// as EIO once the line dropped) is reported and the device opened again; standard input ends.
fn read_terminal(mut file: File, device: Option<PathBuf>, tx: Sender<Input>) {
    let mut buf = [0u8; 1024];
    loop {
        match file.read(&mut buf) {
            Ok(n) if n > 0 => {
                if tx.send(Input::Bytes(buf[..n].to_vec())).is_err() {
                    return;
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => {}
        }
        if tx.send(Input::Hangup).is_err() {
            return;
        }
        let Some(dev) = &device else { return };
        file = loop {
            std::thread::sleep(RETRY);
            let Ok(f) = term::open_device(dev) else {
                continue;
            };
            let (Ok(out), Ok(raw)) = (f.try_clone(), term::raw_mode(&f, true)) else {
                continue;
            };
            if tx.send(Input::Reopened(out, raw)).is_err() {
                return;
            }
            break f;
        };
    }
}

/// Keeps a subscription to `sbcd` open and forwards its events; reports when it comes and goes.
fn follow_sbcd(socket: &Path, tx: Sender<Input>) {
    loop {
        match subscribe(socket) {
            Ok(Some(mut client)) => {
                if tx.send(Input::Link(true)).is_err() {
                    return;
                }
                while let Ok(event) = client.next_event() {
                    if tx.send(Input::Event(event)).is_err() {
                        return;
                    }
                }
                if tx.send(Input::Link(false)).is_err() {
                    return;
                }
            }
            Ok(None) => {
                // sbcd runs but offers no subscription: commands work, notices will not come.
                if tx.send(Input::Link(true)).is_err() {
                    return;
                }
                std::thread::sleep(RETRY * 30);
                continue;
            }
            Err(_) => {
                if tx.send(Input::Link(false)).is_err() {
                    return;
                }
            }
        }
        std::thread::sleep(RETRY);
    }
}

fn subscribe(socket: &Path) -> Result<Option<Client>, ClientError> {
    let mut client = Client::connect(socket, None)?;
    match client.request(&Request::Subscribe)? {
        Response::Ok {
            reply: Reply::Subscribed,
        } => Ok(Some(client)),
        _ => Ok(None),
    }
}

/// `--hash-password`: one line from standard input (asked twice, without echo, on a terminal).
fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    let tty = dup(&stdin)
        .ok()
        .filter(|f| nix::sys::termios::tcgetattr(f.as_fd()).is_ok());
    let read = |prompt: &str| -> Option<String> {
        let _echo_off = tty.as_ref().map(|f| {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
            term::no_echo(f)
        });
        let mut line = String::new();
        let n = stdin.lock().read_line(&mut line).ok()?;
        if tty.is_some() {
            eprintln!();
        }
        (n > 0).then(|| line.trim_end_matches(['\n', '\r']).to_string())
    };
    let Some(password) = read("Password: ") else {
        eprintln!("sbc-console: no password on standard input");
        return ExitCode::FAILURE;
    };
    if password.is_empty() {
        eprintln!("sbc-console: refusing an empty password");
        return ExitCode::FAILURE;
    }
    if tty.is_some() && read("Again: ").as_deref() != Some(password.as_str()) {
        eprintln!("sbc-console: the passwords differ");
        return ExitCode::FAILURE;
    }
    match console::auth::hash_password(password.as_bytes()) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sbc-console: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        use clap::Parser;
        Args::try_parse_from(std::iter::once("sbc-console").chain(v.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn arguments() {
        let a = args(&["--socket", "/s", "--tty", "/dev/ttyS0", "--config", "/c"]).unwrap();
        assert_eq!(a.socket, Some(PathBuf::from("/s")));
        assert_eq!(a.tty, Some(PathBuf::from("/dev/ttyS0")));
        assert_eq!(a.config, Some(PathBuf::from("/c")));
        assert!(args(&["--hash-password"]).unwrap().hash_password);
        assert!(args(&["--socket"]).unwrap_err().contains("--socket"));
        assert!(args(&["--bogus"]).unwrap_err().contains("--bogus"));
    }

    #[test]
    fn help_answers_and_the_command_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let help = Args::command().try_get_matches_from(["sbc-console", "--help"]);
        let e = help.expect_err("help is not a run");
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert_eq!(e.exit_code(), 0);
        let e = Args::command()
            .try_get_matches_from(["sbc-console", "--bogus"])
            .expect_err("unknown");
        assert_eq!(e.exit_code(), 2);
    }
}
