//! One console session after another: login prompt, password, the command prompt, confirmation
//! of service-affecting commands, notices from `sbcd` printed above the line being typed.
//!
//! The decisions about text live in the `console` crate (grammar, editor, login delays); this
//! module sequences them over the terminal and the control socket. Everything arrives as an
//! [`Input`] on one channel, so a notice, a key and a hang-up are handled in the order they came.

use crate::term;
use console::auth::{Account, Throttle};
use console::{Action, Command, Editor};
use control::client::{Client, ClientError};
use control::{Request, Response};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// How long a command may take before the console gives up on the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const HISTORY: usize = 100;

/// What the reader and subscriber threads report.
#[derive(Debug)]
pub enum Input {
    /// Bytes typed on the terminal.
    Bytes(Vec<u8>),
    /// The terminal hung up or reached end of file.
    Hangup,
    /// The terminal device was opened again after a hang-up: write here from now on.
    Reopened(File, Option<term::RawMode>),
    /// Something `sbcd` pushed on the subscription.
    Event(control::Event),
    /// The subscription to `sbcd` came up (true) or went down (false).
    Link(bool),
    /// SIGTERM or SIGINT: end the program.
    Terminate,
}

#[derive(Debug)]
enum Phase {
    User,
    Password {
        user: String,
    },
    Shell,
    Confirm(Request),
    /// After a hang-up on a device: waiting for it to be opened again.
    HungUp,
}

/// What the session is for: a serial device comes back to the login prompt after a hang-up or
/// `exit`; standard input ends the program instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Device,
    Stdio,
}

/// Everything fixed for the life of the program.
#[derive(Debug)]
pub struct Settings {
    pub mode: Mode,
    /// `[node] name`; when absent the name is asked from `sbcd`.
    pub node_name: Option<String>,
    pub socket: PathBuf,
    pub account: Result<Account, String>,
}

/// The console.
#[derive(Debug)]
pub struct Session {
    settings: Settings,
    out: File,
    /// Kept for flushing type-ahead after a failed login.
    input_fd: Option<File>,
    raw: Option<term::RawMode>,
    editor: Editor,
    phase: Phase,
    throttle: Throttle,
    link_up: Option<bool>,
    node: String,
}

impl Session {
    pub fn new(
        settings: Settings,
        out: File,
        input_fd: Option<File>,
        raw: Option<term::RawMode>,
    ) -> Session {
        let node = settings.node_name.clone().unwrap_or_default();
        Session {
            settings,
            out,
            input_fd,
            raw,
            editor: Editor::new("", HISTORY),
            phase: Phase::User,
            throttle: Throttle::new(),
            link_up: None,
            node,
        }
    }

    /// Runs until standard input ends (or forever on a device).
    pub fn run(&mut self, rx: &Receiver<Input>) {
        self.login_prompt();
        while let Ok(input) = rx.recv() {
            if !self.handle(input, rx) {
                break;
            }
        }
        self.write(b"\r\n");
    }

    /// Acts on one input; false when the program should end.
    fn handle(&mut self, input: Input, rx: &Receiver<Input>) -> bool {
        match input {
            Input::Bytes(bytes) => {
                if matches!(self.phase, Phase::HungUp) {
                    return true;
                }
                self.editor.handle_input(&bytes);
                self.pump(rx)
            }
            Input::Hangup => match self.settings.mode {
                Mode::Stdio => false,
                Mode::Device => {
                    self.phase = Phase::HungUp;
                    self.editor.discard_input();
                    true
                }
            },
            Input::Reopened(out, raw) => {
                self.input_fd = out.try_clone().ok();
                self.out = out;
                self.raw = raw;
                self.login_prompt();
                true
            }
            Input::Event(event) => {
                if self.logged_in() {
                    let text = event.render_text();
                    let bytes = self.editor.show_above(&text);
                    self.write(&bytes);
                }
                true
            }
            Input::Terminate => false,
            Input::Link(up) => {
                let was = self.link_up.replace(up);
                if self.logged_in() && was.is_some() && was != Some(up) {
                    let text = if up {
                        "%CONSOLE: connected to sbcd\n".to_string()
                    } else {
                        format!(
                            "%CONSOLE: sbcd is not running (control socket {}); commands will fail until it is back\n",
                            self.settings.socket.display()
                        )
                    };
                    let bytes = self.editor.show_above(&text);
                    self.write(&bytes);
                }
                true
            }
        }
    }

    fn logged_in(&self) -> bool {
        matches!(self.phase, Phase::Shell | Phase::Confirm(_))
    }

    /// Acts on the editor's actions until it needs more input.
    fn pump(&mut self, rx: &Receiver<Input>) -> bool {
        while let Some(action) = self.editor.poll_action() {
            match action {
                Action::Write(bytes) => self.write(&bytes),
                Action::Line(line) => {
                    if !self.on_line(line, rx) {
                        return false;
                    }
                }
                Action::Cancelled => {
                    if let Phase::Confirm(_) = self.phase {
                        self.write(b"cancelled\r\n");
                        self.shell_prompt();
                    } else if let Phase::Password { .. } = self.phase {
                        self.login_prompt();
                    } else {
                        let bytes = self.editor.begin();
                        self.write(&bytes);
                    }
                }
                Action::Eof => {
                    let keep_going = match self.phase {
                        Phase::Shell => self.logout(),
                        Phase::Confirm(_) => {
                            self.write(b"cancelled\r\n");
                            self.shell_prompt();
                            true
                        }
                        Phase::User => self.settings.mode == Mode::Device,
                        Phase::Password { .. } | Phase::HungUp => true,
                    };
                    if !keep_going {
                        return false;
                    }
                }
                Action::Complete { before_cursor } => {
                    if let Phase::Shell = self.phase {
                        let completion = console::complete(&before_cursor);
                        let bytes = self.editor.apply_completion(&completion);
                        self.write(&bytes);
                    }
                }
                Action::Help { before_cursor } => {
                    if let Phase::Shell = self.phase {
                        let text = match console::choices(&before_cursor) {
                            Ok(choices) => console::format_choices(&choices),
                            Err(e) => format!("% {e}\n"),
                        };
                        let bytes = self.editor.show_below(&text);
                        self.write(&bytes);
                    }
                }
            }
        }
        true
    }

    fn on_line(&mut self, line: String, rx: &Receiver<Input>) -> bool {
        match std::mem::replace(&mut self.phase, Phase::User) {
            Phase::User => {
                let user = line.trim().to_string();
                if user.is_empty() {
                    self.login_prompt();
                } else {
                    self.phase = Phase::Password { user };
                    self.editor.set_echo(false);
                    self.editor.set_prompt("Password: ");
                    let bytes = self.editor.begin();
                    self.write(&bytes);
                }
            }
            Phase::Password { user } => return self.check_login(&user, &line, rx),
            Phase::Shell => return self.on_command(&line),
            Phase::Confirm(request) => {
                let answer = line.trim().to_ascii_lowercase();
                if answer == "y" || answer == "yes" {
                    self.execute(&request);
                } else {
                    self.write(b"cancelled\r\n");
                }
                self.shell_prompt();
            }
            Phase::HungUp => self.phase = Phase::HungUp,
        }
        true
    }

    /// Checks a login; false when the program should end (a signal or end of input came during
    /// the delay).
    fn check_login(&mut self, user: &str, password: &str, rx: &Receiver<Input>) -> bool {
        self.editor.set_echo(true);
        let verdict = match &self.settings.account {
            Ok(account) => account
                .check(user, password.as_bytes())
                .map_err(|e| e.to_string()),
            Err(reason) => Err(reason.clone()),
        };
        match verdict {
            Ok(true) => {
                self.throttle.record_success();
                self.welcome();
                self.shell_prompt();
                return true;
            }
            Ok(false) => self.write(b"Login incorrect\r\n"),
            Err(reason) => {
                let text = format!("Login refused: {reason}\n");
                self.write(&console::editor::crlf(&text));
            }
        }
        let delay = self.throttle.record_failure();
        std::thread::sleep(delay);
        // Whatever was typed during the wait is dropped: it was typed blind.
        if let Some(fd) = &self.input_fd {
            term::discard_typeahead(fd);
        }
        self.editor.discard_input();
        while let Ok(input) = rx.try_recv() {
            match input {
                Input::Bytes(_) | Input::Event(_) => {}
                // Hang-ups, signals and link changes still count.
                other => {
                    if !self.handle(other, rx) {
                        return false;
                    }
                }
            }
        }
        if !matches!(self.phase, Phase::HungUp) {
            self.login_prompt();
        }
        true
    }

    fn on_command(&mut self, line: &str) -> bool {
        if line.trim().is_empty() {
            self.shell_prompt();
            return true;
        }
        match console::parse(line) {
            Ok(Command::Request(request)) if request.is_service_affecting() => {
                let text = format!("{}\n", consequence(&request));
                self.write(&console::editor::crlf(&text));
                self.phase = Phase::Confirm(request);
                self.editor.set_history(false);
                self.editor.set_prompt("Proceed? [y/N] ");
                let bytes = self.editor.begin();
                self.write(&bytes);
                return true;
            }
            Ok(Command::Request(request)) => self.execute(&request),
            Ok(Command::Help(topic)) => {
                let text = console::help_text(topic.as_deref());
                self.write(&console::editor::crlf(&text));
            }
            Ok(Command::Exit) => return self.logout(),
            Err(e) => {
                let text = format!("% {e}\n");
                self.write(&console::editor::crlf(&text));
            }
        }
        self.shell_prompt();
        true
    }

    /// Sends one request on a connection of its own, so a restarted `sbcd` is simply used
    /// again, and prints the answer.
    fn execute(&mut self, request: &Request) {
        let text = match self.request(request) {
            Ok(response) => response.render_text(),
            Err(e) => format!("% {}\n", describe(&e)),
        };
        self.write(&console::editor::crlf(&text));
    }

    fn request(&self, request: &Request) -> Result<Response, ClientError> {
        let mut client = Client::connect(&self.settings.socket, Some(REQUEST_TIMEOUT))?;
        client.request(request)
    }

    fn welcome(&mut self) {
        let status = match self.request(&Request::ShowSystemState) {
            Ok(Response::Ok {
                reply: control::Reply::SystemState(s),
            }) => format!("system-state: {}", s.state),
            Ok(other) => other.render_text().trim_end().to_string(),
            Err(e) => describe(&e),
        };
        let text = format!(
            "\nLogged in to {}. 'help' or '?' lists commands, TAB completes.\n{status}\n",
            self.node
        );
        self.write(&console::editor::crlf(&text));
    }

    /// Ends the session; false when that ends the program.
    fn logout(&mut self) -> bool {
        match self.settings.mode {
            Mode::Stdio => false,
            Mode::Device => {
                self.write(b"Logged out.\r\n");
                self.login_prompt();
                true
            }
        }
    }

    fn login_prompt(&mut self) {
        if self.settings.node_name.is_none() {
            self.node = self.ask_node_name();
        }
        self.phase = Phase::User;
        self.editor.set_echo(true);
        self.editor.set_history(false);
        let prompt = format!("{} login: ", self.node);
        self.editor.set_prompt(&prompt);
        let mut bytes = b"\r\n".to_vec();
        bytes.extend(self.editor.begin());
        self.write(&bytes);
    }

    fn shell_prompt(&mut self) {
        self.phase = Phase::Shell;
        self.editor.set_echo(true);
        self.editor.set_history(true);
        let prompt = format!("{}> ", self.node);
        self.editor.set_prompt(&prompt);
        let bytes = self.editor.begin();
        self.write(&bytes);
    }

    /// The node name when the config has none: `sbcd`'s, else the host name.
    fn ask_node_name(&self) -> String {
        let from_sbcd = Client::connect(&self.settings.socket, Some(Duration::from_secs(2)))
            .and_then(|mut c| c.request(&Request::ShowSystemState));
        if let Ok(Response::Ok {
            reply: control::Reply::SystemState(s),
        }) = from_sbcd
        {
            return s.node;
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "sbc".to_string())
    }

    fn write(&mut self, bytes: &[u8]) {
        // A write that fails means the terminal is gone; the reader thread reports the hang-up.
        let _ = self.out.write_all(bytes);
        let _ = self.out.flush();
    }
}

/// What a service-affecting command will do, said before asking to proceed.
fn consequence(request: &Request) -> String {
    match request {
        Request::SetSystemState {
            target: control::TargetState::Offline,
            guard_secs,
        } => {
            let guard = guard_secs.map_or("the configured guard time".to_string(), |s| {
                format!("{s} s")
            });
            format!(
                "This starts a drain: calls in progress finish, new ones are turned away, and the box goes offline when idle or after {guard}."
            )
        }
        Request::SetSystemState { .. } => {
            "This returns the box to service at once (a drain in progress is aborted).".into()
        }
        Request::Switchover => "This moves this node's service addresses to its twin.".into(),
        Request::Reboot => "This restarts the appliance.".into(),
        other => format!("{other:?} affects service."),
    }
}

/// An error as the operator reads it; the absent socket gets the sentence SPEC §5 asks for.
fn describe(e: &ClientError) -> String {
    match e {
        ClientError::NotRunning { path, .. } => {
            format!(
                "sbcd is not running (no control socket at {})",
                path.display()
            )
        }
        other => other.to_string(),
    }
}
