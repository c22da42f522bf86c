//! `sbcctl`: the console's commands for scripts and tests.
//!
//! `sbcctl [--socket PATH] [--json] COMMAND...` joins its arguments into one line, reads it with
//! the console grammar (so `sbcctl sh sys` works like the console), sends the request to `sbcd`
//! and prints the answer. It never asks for confirmation: a script that runs it means it. The
//! one exception is `install-update`, which replaces the system and restarts the box: it wants
//! `--yes` (and `--no-restart` leaves the restart to the operator).
//!
//! Exit status: 0 success, 1 an error answer (or "not available"), 2 a usage or command error,
//! 3 `sbcd` not running. `sbcctl watch` follows state events until interrupted.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use control::client::{Client, ClientError, DEFAULT_SOCKET};
use control::{Reply, Request, Response};

/// What `--help` says after the options, before the console's commands.
const ABOUT_COMMANDS: &str = "\
Runs one console command against sbcd's control socket, e.g.
  sbcctl show system-state
  sbcctl set-system-state offline guard 30
  sbcctl --json show calls
  sbcctl install-update (media [FILE] | url URL) --yes [--no-restart]
`install-update` installs a signed bundle into the other root slot with RAUC, showing its
progress, then restarts the box into it (not with --no-restart); it asks for --yes.
`sbcctl watch` follows state events until interrupted. The socket is --socket, else
$SBC_CONTROL_SOCKET, else /run/sbc/control.sock.
Exit status: 0 ok, 1 error answer, 2 usage error, 3 sbcd not running.";

/// How long an answer may take unless `--timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The options; the command words are the console grammar's (`console::parse`).
#[derive(Debug, clap::Parser)]
#[command(
    name = "sbcctl",
    version,
    about = "The console's commands for scripts and tests."
)]
struct Cli {
    /// sbcd's control socket [default: $SBC_CONTROL_SOCKET or /run/sbc/control.sock].
    #[arg(short, long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the answer as JSON, with raw numbers.
    #[arg(short, long)]
    json: bool,
    /// How long an answer may take.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT.as_secs())]
    timeout: u64,
    /// `install-update` may go ahead (it affects service). May come anywhere.
    #[arg(short, long)]
    yes: bool,
    /// `install-update` leaves the restart to the operator. May come anywhere.
    #[arg(long)]
    no_restart: bool,
    /// The console command, e.g. `show calls` (`sbcctl help` lists them). Everything from the
    /// first word on belongs to the command.
    #[arg(value_name = "COMMAND", required = true, trailing_var_arg = true)]
    words: Vec<String>,
}

#[derive(Debug)]
struct Args {
    socket: PathBuf,
    json: bool,
    timeout: Duration,
    /// `--yes`: the service-affecting `install-update` may go ahead.
    yes: bool,
    /// `--no-restart`: `install-update` leaves the restart to the operator.
    no_restart: bool,
    words: Vec<String>,
}

/// The options and the command words; `--help`, `--version` and usage errors end the process
/// (exit 0, 0 and 2).
fn parse_args(argv: impl Iterator<Item = String>) -> Args {
    use clap::{CommandFactory, FromArgMatches};
    // No console command has these words, so they may come anywhere, after the command's words
    // too: put them before the command, where clap reads options.
    let (flags, rest): (Vec<String>, Vec<String>) =
        argv.partition(|a| matches!(a.as_str(), "--yes" | "-y" | "--no-restart"));
    let after_help = format!("{ABOUT_COMMANDS}\n\n{}", console::help_text(None));
    let matches = Cli::command().after_help(after_help).get_matches_from(
        std::iter::once("sbcctl".to_owned())
            .chain(flags)
            .chain(rest),
    );
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    Args {
        socket: cli
            .socket
            .or_else(|| std::env::var_os("SBC_CONTROL_SOCKET").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        json: cli.json,
        timeout: Duration::from_secs(cli.timeout.max(1)),
        yes: cli.yes,
        no_restart: cli.no_restart,
        words: cli.words,
    }
}

fn main() -> ExitCode {
    let args = parse_args(std::env::args().skip(1));
    if args.words.len() == 1 && args.words[0].eq_ignore_ascii_case("watch") {
        return watch(&args);
    }
    let line = args.words.join(" ");
    let request = match console::parse(&line) {
        Ok(console::Command::Request(request)) => request,
        Ok(console::Command::Help(topic)) => {
            print!("{}", console::help_text(topic.as_deref()));
            return ExitCode::SUCCESS;
        }
        Ok(console::Command::Exit) => return ExitCode::SUCCESS,
        Ok(console::Command::Install(source)) => return install(&source, &args),
        Err(e) => {
            eprintln!("sbcctl: {e}");
            return ExitCode::from(2);
        }
    };
    if let Request::Reboot = request {
        // The system restarts the box, not sbcd.
        return match update::restart() {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("sbcctl: {why}");
                ExitCode::from(1)
            }
        };
    }
    let timeout = match &request {
        // The answer comes after the simulated button is released.
        Request::PanelPress { hold_ms } => {
            DEFAULT_TIMEOUT.max(args.timeout) + Duration::from_millis(*hold_ms)
        }
        _ => args.timeout,
    };
    let response =
        Client::connect(&args.socket, Some(timeout)).and_then(|mut c| c.request(&request));
    match response {
        Ok(response) => {
            print_response(&response, args.json);
            match response {
                Response::Ok {
                    reply: Reply::NotAvailable { .. },
                }
                | Response::Error { .. } => ExitCode::from(1),
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => client_failure(&e),
    }
}

/// `install-update`: the bundle found and checked, installed with RAUC's progress on standard
/// output, then the restart. Exit 1 when it is refused or fails (the running slot unchanged), 2
/// without `--yes`.
fn install(source: &console::InstallSource, args: &Args) -> ExitCode {
    let fail = |why: &str| {
        eprintln!("sbcctl: {why}");
        ExitCode::from(1)
    };
    let target = match update::locate(source, std::path::Path::new(update::MEDIA_DIR)) {
        Ok(t) => t,
        Err(why) => return fail(&why),
    };
    let path = match target.into_local(|line| println!("{line}")) {
        Ok(p) => p,
        Err(why) => return fail(&why),
    };
    let what = match update::info(&path) {
        Ok(info) => format!("{} ({})", info.version, path.display()),
        Err(why) => {
            update::discard_download(&path);
            return fail(&format!("the bundle is refused: {why}"));
        }
    };
    let slots = match update::slots() {
        Ok(s) => s,
        Err(why) => return fail(&why),
    };
    let Some(other) = slots.other else {
        return fail("RAUC knows no second root slot to install into");
    };
    let restart = if args.no_restart {
        "; the box restarts into it when rebooted"
    } else {
        ", then restarts the box into it"
    };
    println!(
        "installing {what} into slot {other} (running slot {}){restart}",
        slots.booted
    );
    if !args.yes {
        update::discard_download(&path);
        eprintln!("sbcctl: install-update affects service: run it again with --yes");
        return ExitCode::from(2);
    }
    let result = update::install(&path, |line| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    });
    update::discard_download(&path);
    if let Err(why) = result {
        return fail(&format!(
            "the install failed: {why}; nothing changed: the box keeps running slot {}",
            slots.booted
        ));
    }
    if args.no_restart {
        println!("installed into slot {other}; it starts at the next reboot");
        return ExitCode::SUCCESS;
    }
    println!("installed; restarting into slot {other}");
    match update::restart() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => fail(&why),
    }
}

fn print_response(response: &Response, json: bool) {
    let text = if json {
        control::encode_response(response)
    } else {
        response.render_text()
    };
    let mut out = std::io::stdout().lock();
    // A closed stdout (`sbcctl ... | head -1`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn client_failure(e: &ClientError) -> ExitCode {
    eprintln!("sbcctl: {e}");
    match e {
        ClientError::NotRunning { .. } => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

/// Subscribes and prints every event until sbcd goes away (exit 3) or the pipe closes.
fn watch(args: &Args) -> ExitCode {
    let mut client = match Client::connect(&args.socket, Some(args.timeout)) {
        Ok(c) => c,
        Err(e) => return client_failure(&e),
    };
    match client.request(&Request::Subscribe) {
        Ok(Response::Ok {
            reply: Reply::Subscribed,
        }) => {}
        Ok(other) => {
            print_response(&other, args.json);
            return ExitCode::from(1);
        }
        Err(e) => return client_failure(&e),
    }
    if let Err(e) = client.set_timeout(None) {
        return client_failure(&e);
    }
    loop {
        match client.next_event() {
            Ok(event) => print_response(&Response::Event { event }, args.json),
            Err(ClientError::Closed) => {
                eprintln!("sbcctl: sbcd closed the connection");
                return ExitCode::from(3);
            }
            Err(e) => return client_failure(&e),
        }
    }
}
