//! One console session after another: login prompt, password, a new password when the factory
//! one was used, the command prompt, confirmation of service-affecting commands, notices from
//! `sbcd` printed above the line being typed, and the logout of an idle session.
//!
//! The decisions live in the `console` crate (grammar, editor, login delays, whether a password
//! must change and what a new one must be, the idle deadline); this module sequences them over
//! the terminal, the control socket and the stored password file. Everything arrives as an
//! [`Input`] on one channel, so a notice, a key and a hang-up are handled in the order they came;
//! the idle deadline bounds each wait for the next input.
//!
//! Before a login succeeds nothing from the configuration or from `sbcd` is shown: the prompt
//! is a plain `login: `, and a login refused for a configuration problem reads like any other
//! refusal (the reason goes to the journal).

use crate::{stored, term};
use console::auth::{Account, Throttle};
use console::login::{self, AfterLogin, IdleLogout, PasswordSource};
use console::{Action, Command, Editor};
use control::client::{Client, ClientError};
use control::{Request, Response};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

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
    /// Logged in with the factory password: a new one before anything else.
    NewPassword {
        user: String,
        current: String,
    },
    RetypePassword {
        user: String,
        current: String,
        new: String,
    },
    Shell,
    Confirm(Request),
    /// `install-update`: the bundle is found and checked; installing waits for a yes.
    ConfirmInstall(PathBuf),
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
    /// Where the password chosen on the box is kept (`[state] dir`).
    pub state_dir: PathBuf,
    /// `[console] idle_logout_secs`.
    pub idle_logout: Duration,
    /// Configuration problems that did not stop the console: shown after login.
    pub warnings: Vec<String>,
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
    idle: IdleLogout,
    /// A password chosen here that could not be stored: it still replaces the old one for as
    /// long as this program runs.
    unsaved_hash: Option<String>,
}

impl Session {
    pub fn new(
        settings: Settings,
        out: File,
        input_fd: Option<File>,
        raw: Option<term::RawMode>,
    ) -> Session {
        let node = settings.node_name.clone().unwrap_or_default();
        let idle = IdleLogout::new(settings.idle_logout);
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
            idle,
            unsaved_hash: None,
        }
    }

    /// Runs until standard input ends (or forever on a device).
    pub fn run(&mut self, rx: &Receiver<Input>) {
        for w in &self.settings.warnings {
            report(w);
        }
        self.login_prompt();
        loop {
            let input = match self.idle.poll_timeout() {
                Some(deadline) => {
                    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(input) => input,
                        Err(RecvTimeoutError::Timeout) => {
                            if self.idle.handle_timeout(Instant::now()) && !self.idle_logout() {
                                break;
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(input) => input,
                    Err(_) => break,
                },
            };
            if !self.handle(input, rx) {
                break;
            }
        }
        self.write(b"\r\n");
    }

    /// The idle deadline passed: the session ends; false when that ends the program.
    fn idle_logout(&mut self) -> bool {
        let text = format!(
            "\nNo input for {} s: logged out.\n",
            self.idle.limit().as_secs()
        );
        // Whatever was half typed belongs to the session that ended.
        self.editor.discard_input();
        self.write(&console::editor::crlf(&text));
        match self.settings.mode {
            Mode::Stdio => false,
            Mode::Device => {
                self.login_prompt();
                true
            }
        }
    }

    /// Acts on one input; false when the program should end.
    fn handle(&mut self, input: Input, rx: &Receiver<Input>) -> bool {
        match input {
            Input::Bytes(bytes) => {
                if matches!(self.phase, Phase::HungUp) {
                    return true;
                }
                self.idle.activity(Instant::now());
                self.editor.handle_input(&bytes);
                self.pump(rx)
            }
            Input::Hangup => match self.settings.mode {
                Mode::Stdio => false,
                Mode::Device => {
                    self.phase = Phase::HungUp;
                    self.idle.stop();
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
        matches!(
            self.phase,
            Phase::Shell | Phase::Confirm(_) | Phase::ConfirmInstall(_)
        )
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
                    if let Phase::Confirm(_) | Phase::ConfirmInstall(_) = self.phase {
                        self.write(b"cancelled\r\n");
                        self.shell_prompt();
                    } else if let Phase::Password { .. }
                    | Phase::NewPassword { .. }
                    | Phase::RetypePassword { .. } = self.phase
                    {
                        // No way around a new password but leaving.
                        self.login_prompt();
                    } else {
                        let bytes = self.editor.begin();
                        self.write(&bytes);
                    }
                }
                Action::Eof => {
                    let keep_going = match self.phase {
                        Phase::Shell => self.logout(),
                        Phase::Confirm(_) | Phase::ConfirmInstall(_) => {
                            self.write(b"cancelled\r\n");
                            self.shell_prompt();
                            true
                        }
                        Phase::User => self.settings.mode == Mode::Device,
                        Phase::NewPassword { .. } | Phase::RetypePassword { .. } => {
                            self.editor.set_echo(true);
                            self.logout()
                        }
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
                    // A login left half done ends with the idle deadline too.
                    self.idle.start(Instant::now());
                    self.phase = Phase::Password { user };
                    self.editor.set_echo(false);
                    self.editor.set_prompt("Password: ");
                    let bytes = self.editor.begin();
                    self.write(&bytes);
                }
            }
            Phase::Password { user } => return self.check_login(&user, &line, rx),
            Phase::NewPassword { user, current } => {
                self.phase = Phase::RetypePassword {
                    user,
                    current,
                    new: line,
                };
                self.editor.set_prompt("Retype new password: ");
                let bytes = self.editor.begin();
                self.write(&bytes);
            }
            Phase::RetypePassword { user, current, new } => {
                self.change_password(user, current, &new, &line)
            }
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
            Phase::ConfirmInstall(target) => {
                let answer = line.trim().to_ascii_lowercase();
                if answer == "y" || answer == "yes" {
                    self.install(&target);
                } else {
                    update::discard_download(&target);
                    self.write(b"cancelled\r\n");
                }
                self.shell_prompt();
            }
            Phase::HungUp => self.phase = Phase::HungUp,
        }
        true
    }

    /// `install-update`: finds the bundle, has RAUC check it, says what will happen and asks.
    fn prepare_install(&mut self, source: &console::InstallSource) {
        let located = update::locate(source, std::path::Path::new(update::MEDIA_DIR));
        let checked = located
            .and_then(|target| target.into_local(self.progress_lines()))
            .and_then(|path| {
                let info = update::info(&path).map_err(|why| {
                    update::discard_download(&path);
                    format!("the bundle is refused: {why}")
                })?;
                let slots = update::slots()?;
                let other = slots
                    .other
                    .ok_or("RAUC knows no second root slot to install into")?;
                let what = format!("{} ({})", info.version, path.display());
                Ok((path, what, slots.booted, other))
            });
        match checked {
            Err(why) => {
                let text = format!("% {why}\n");
                self.write(&console::editor::crlf(&text));
                self.shell_prompt();
            }
            Ok((target, what, booted, other)) => {
                let calls = match self.request(&Request::ShowSystemState) {
                    Ok(Response::Ok {
                        reply: control::Reply::SystemState(s),
                    }) => format!(
                        "The box is {} with {} call(s) in progress: they end at the restart \
                         unless it is drained first (set-system-state offline).",
                        s.state, s.active_sessions
                    ),
                    _ => "Calls in progress end at the restart.".to_string(),
                };
                let text = format!(
                    "This installs {what} into slot {other} (the box runs slot {booted}) and \
                     restarts the box into it. {calls} If slot {other} does not get ready, the box \
                     comes back on slot {booted} by itself.\n"
                );
                self.write(&console::editor::crlf(&text));
                self.phase = Phase::ConfirmInstall(target);
                self.editor.set_history(false);
                self.editor.set_prompt("Proceed? [y/N] ");
                let bytes = self.editor.begin();
                self.write(&bytes);
            }
        }
    }

    /// Writes each line it is given to the terminal at once: a long task's progress, shown
    /// while the task runs (the session is busy with it).
    fn progress_lines(&self) -> impl FnMut(&str) {
        let mut out = self.out.try_clone().ok();
        move |line| {
            if let Some(out) = out.as_mut() {
                let _ = out.write_all(&console::editor::crlf(&format!("{line}\n")));
                let _ = out.flush();
            }
        }
    }

    /// Installs with RAUC's progress shown line by line, then restarts into the new slot.
    fn install(&mut self, target: &std::path::Path) {
        report(&format!(
            "installing the update bundle {}",
            target.display()
        ));
        let result = update::install(target, self.progress_lines());
        update::discard_download(target);
        match result {
            Ok(()) => {
                report("update installed; restarting into the new slot");
                self.write(b"Installed. Restarting into the new slot.\r\n");
                if let Err(why) = update::restart() {
                    let text = format!("% {why}\n");
                    self.write(&console::editor::crlf(&text));
                }
            }
            Err(why) => {
                report(&format!("update failed: {why}"));
                let text = format!(
                    "% the install failed: {why}\n% nothing changed: the box keeps running this slot\n"
                );
                self.write(&console::editor::crlf(&text));
            }
        }
    }

    /// Checks a login; false when the program should end (a signal or end of input came during
    /// the delay).
    fn check_login(&mut self, user: &str, password: &str, rx: &Receiver<Input>) -> bool {
        self.editor.set_echo(true);
        let verdict = self.account().and_then(|(account, source)| {
            account
                .check(user, password.as_bytes())
                .map(|ok| ok.then_some(source))
                .map_err(|e| e.to_string())
        });
        match verdict {
            Ok(Some(source)) => {
                self.throttle.record_success();
                self.idle.start(Instant::now());
                if self.settings.node_name.is_none() {
                    self.node = self.ask_node_name();
                }
                match login::after_login(user, password.as_bytes(), source) {
                    AfterLogin::Shell => {
                        self.welcome();
                        self.shell_prompt();
                    }
                    AfterLogin::MustChangePassword => {
                        self.write(
                            b"\r\nThis is the factory password: choose a new one before anything else.\r\n",
                        );
                        self.new_password_prompt(user.to_string(), password.to_string());
                    }
                }
                return true;
            }
            Ok(None) => {}
            // Said in the journal only: nothing before a login may reveal the configuration.
            Err(reason) => report(&format!("login refused: {reason}")),
        }
        self.write(b"Login incorrect\r\n");
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

    /// The account logins are checked against: the config's user with the password chosen on
    /// the box when there is one (it wins over the config's hash), else the config's account.
    fn account(&self) -> Result<(Account, PasswordSource), String> {
        let config = self.settings.account.as_ref().map_err(Clone::clone)?;
        let chosen = match &self.unsaved_hash {
            Some(hash) => Some(hash.clone()),
            None => stored::read(&self.settings.state_dir).unwrap_or_else(|e| {
                report(&format!(
                    "ignoring the stored console password ({e}); the configuration's applies"
                ));
                None
            }),
        };
        Ok(match chosen {
            Some(password_hash) => (
                Account {
                    user: config.user.clone(),
                    password_hash,
                },
                PasswordSource::Stored,
            ),
            None => (config.clone(), PasswordSource::Config),
        })
    }

    fn new_password_prompt(&mut self, user: String, current: String) {
        self.phase = Phase::NewPassword { user, current };
        self.editor.set_echo(false);
        self.editor.set_history(false);
        self.editor.set_prompt("New password: ");
        let bytes = self.editor.begin();
        self.write(&bytes);
    }

    /// The second typing of a new password: checked, hashed, stored; then the shell.
    fn change_password(&mut self, user: String, current: String, new: &str, again: &str) {
        if let Err(e) =
            login::check_new_password(&user, current.as_bytes(), new.as_bytes(), again.as_bytes())
        {
            let text = format!("% {e}\n");
            self.write(&console::editor::crlf(&text));
            self.new_password_prompt(user, current);
            return;
        }
        let hash = match console::auth::hash_password(new.as_bytes()) {
            Ok(h) => h,
            Err(e) => {
                let text = format!("% {e}\n");
                self.write(&console::editor::crlf(&text));
                self.new_password_prompt(user, current);
                return;
            }
        };
        self.editor.set_echo(true);
        match stored::write(&self.settings.state_dir, &hash) {
            Ok(()) => {
                self.unsaved_hash = None;
                self.write(b"Password changed.\r\n");
                report(&format!("console password of {user} changed"));
            }
            Err(e) => {
                let text = format!(
                    "% the new password could not be stored in {} ({e}); it applies until \
                     the console restarts\n",
                    self.settings.state_dir.display()
                );
                report(text.trim_end());
                self.write(&console::editor::crlf(&text));
                self.unsaved_hash = Some(hash);
            }
        }
        self.welcome();
        self.shell_prompt();
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
            Ok(Command::Install(source)) => {
                self.prepare_install(&source);
                return true;
            }
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
        if let Request::Reboot = request {
            // The system restarts the box, not sbcd (which refuses it).
            report("reboot asked on the console");
            let text = match update::restart() {
                Ok(()) => "Restarting.\n".to_string(),
                Err(why) => format!("% {why}\n"),
            };
            self.write(&console::editor::crlf(&text));
            return;
        }
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
        let mut text = format!(
            "\nLogged in to {}. 'help' or '?' lists commands, TAB completes.\n{status}\n",
            self.node
        );
        for w in &self.settings.warnings {
            text.push_str(&format!("% {w}\n"));
        }
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

    /// The login prompt: the same on every box, whatever the configuration says.
    fn login_prompt(&mut self) {
        self.idle.stop();
        self.phase = Phase::User;
        self.editor.set_echo(true);
        self.editor.set_history(false);
        self.editor.set_prompt("login: ");
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

/// A line for the journal (standard error under systemd). Not when standard error is a
/// terminal: that may be the console itself, where nothing may show before a login.
fn report(line: &str) {
    let stderr = std::io::stderr();
    if !stderr.is_terminal() {
        let _ = writeln!(stderr.lock(), "sbc-console: {line}");
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
