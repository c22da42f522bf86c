//! What the console tests share: a person at a pseudo-terminal, a fake `sbcd` that speaks the
//! control protocol, and configuration files.

// Test harness: a failed setup step must fail the test loudly, which is what unwrap does.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use control::{Event, Reply, Request, Response, SystemState, SystemStateInfo};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "s3cret";
pub const NODE: &str = "sbc-t";
/// Long enough for a debug build on a loaded machine, short enough to fail a hung test.
pub const WAIT: Duration = Duration::from_secs(20);

/// A cheap hash: the cost of a real one is the point in production and a waste in tests.
pub fn password_hash() -> String {
    console::auth::hash_password_with_cost(PASSWORD.as_bytes(), 64, 1).unwrap()
}

/// A config file with the console's keys (and others it must ignore).
pub fn write_config(dir: &Path, socket: &Path, extra: &str) -> PathBuf {
    let path = dir.join("sbc.toml");
    let text = format!(
        "[node]\nname = \"{NODE}\"\n\n[control]\nsocket = \"{}\"\n\n[state]\ndir = \"{}\"\n\n[console]\nuser = \"{USER}\"\npassword_hash = \"{}\"\n{extra}",
        socket.display(),
        dir.join("state").display(),
        password_hash()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A config whose account still has the factory password (admin / admin), with a cheap hash.
pub fn write_factory_config(
    dir: &std::path::Path,
    socket: &std::path::Path,
    extra: &str,
) -> std::path::PathBuf {
    let path = write_config(dir, socket, extra);
    let text = std::fs::read_to_string(&path).unwrap();
    let factory = console::auth::hash_password_with_cost(b"admin", 64, 1).unwrap();
    let ours = text
        .lines()
        .find_map(|l| l.strip_prefix("password_hash = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_string();
    std::fs::write(&path, text.replace(&ours, &factory)).unwrap();
    path
}

/// Output collected from a terminal, and a cursor for what has been matched already.
#[derive(Debug, Default)]
struct Screen {
    bytes: Vec<u8>,
    closed: bool,
}

/// `sbc-console` on a pseudo-terminal, driven as a person would.
#[derive(Debug)]
pub struct Person {
    pub child: Child,
    pub master: File,
    /// On a device, the test keeps a slave open so the pty is never seen as hung up between
    /// the console's opens.
    slave: Option<File>,
    /// The terminal the console runs on.
    pub slave_path: PathBuf,
    /// The terminal's local flags before the console was started (on stdio only): what it must
    /// leave behind. Read before the spawn, because the console goes raw at once.
    pub initial_local_flags: Option<nix::sys::termios::LocalFlags>,
    screen: Arc<(Mutex<Screen>, Condvar)>,
    seen: usize,
}

impl Person {
    /// Runs the console with the pty slave as stdin/stdout/stderr (no `--tty`).
    pub fn on_stdio(args: &[&str]) -> Person {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave_path = nix::unistd::ttyname(&pty.slave).unwrap();
        let slave = File::from(pty.slave);
        let initial = nix::sys::termios::tcgetattr(&slave).unwrap().local_flags;
        let child = Command::new(env!("CARGO_BIN_EXE_sbc-console"))
            .args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        let mut person = Person::watch(child, pty.master);
        person.slave_path = slave_path;
        person.initial_local_flags = Some(initial);
        person
    }

    /// Runs the console on a device (`--tty` the pty slave); returns the slave's path too.
    pub fn on_device(args: &[&str]) -> (Person, PathBuf) {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave_path = nix::unistd::ttyname(&pty.slave).unwrap();
        let mut all = vec!["--tty", slave_path.to_str().unwrap()];
        all.extend_from_slice(args);
        let child = Command::new(env!("CARGO_BIN_EXE_sbc-console"))
            .args(&all)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut person = Person::watch(child, pty.master);
        person.slave = Some(File::from(pty.slave));
        person.slave_path = slave_path.clone();
        (person, slave_path)
    }

    fn watch(child: Child, master: OwnedFd) -> Person {
        let master = File::from(master);
        let mut reader = master.try_clone().unwrap();
        let screen = Arc::new((Mutex::new(Screen::default()), Condvar::new()));
        let shared = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = reader.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*shared;
                let mut s = lock.lock().unwrap();
                if n == 0 {
                    s.closed = true;
                    cv.notify_all();
                    return;
                }
                s.bytes.extend_from_slice(&buf[..n]);
                cv.notify_all();
            }
        });
        Person {
            child,
            master,
            slave: None,
            slave_path: PathBuf::new(),
            initial_local_flags: None,
            screen,
            seen: 0,
        }
    }

    /// Waits until `text` appears after what was matched before; returns everything up to and
    /// including it. Panics with the screen so far when it does not come.
    pub fn expect(&mut self, text: &str) -> String {
        self.expect_within(text, WAIT)
    }

    pub fn expect_within(&mut self, text: &str, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        let (lock, cv) = &*self.screen;
        let mut s = lock.lock().unwrap();
        loop {
            let hay = &s.bytes[self.seen..];
            if let Some(pos) = find(hay, text.as_bytes()) {
                let end = self.seen + pos + text.len();
                let got = String::from_utf8_lossy(&s.bytes[self.seen..end]).into_owned();
                self.seen = end;
                return got;
            }
            let now = Instant::now();
            if now >= deadline || s.closed {
                panic!(
                    "waited for {text:?}; the screen after the last match shows:\n{:?}",
                    String::from_utf8_lossy(&s.bytes[self.seen..])
                );
            }
            s = cv.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    /// Everything shown since the last match, without waiting.
    pub fn pending(&self) -> String {
        let s = self.screen.0.lock().unwrap();
        String::from_utf8_lossy(&s.bytes[self.seen..]).into_owned()
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.master.write_all(bytes.as_ref()).unwrap();
        self.master.flush().unwrap();
    }

    /// Logs in with the right password and waits for the command prompt.
    pub fn log_in(&mut self) {
        self.expect("login: ");
        self.send(format!("{USER}\r"));
        self.expect("Password: ");
        self.send(format!("{PASSWORD}\r"));
        self.expect(&format!("Logged in to {NODE}"));
        self.expect(&format!("{NODE}> "));
    }

    /// Runs a command and returns what it printed up to the next prompt. Waits for the echo of
    /// the line first, so an earlier prompt (a redraw after a notice) is not taken for the answer.
    pub fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r"));
        self.expect(&format!("{line}\r\n"));
        self.expect(&format!("{NODE}> "))
    }

    /// Waits for the process to end, at most `WAIT`.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "sbc-console did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Person {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A stand-in for `sbcd` that speaks the control protocol: it answers `show system-state`,
/// carries out `set-system-state` by pushing a state change to subscribers, and records every
/// request. Only for testing the console's side of the protocol.
#[derive(Debug)]
pub struct FakeSbcd {
    pub path: PathBuf,
    pub requests: Arc<Mutex<Vec<Request>>>,
    subscribers: Arc<Mutex<Vec<UnixStream>>>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl FakeSbcd {
    pub fn start(path: &Path) -> FakeSbcd {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let subscribers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(SystemState::Online));
        let accept = {
            let (requests, subscribers, stop) =
                (requests.clone(), subscribers.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            let (requests, subscribers, state) =
                                (requests.clone(), subscribers.clone(), state.clone());
                            std::thread::spawn(move || {
                                serve(stream, &requests, &subscribers, &state)
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        FakeSbcd {
            path: path.to_path_buf(),
            requests,
            subscribers,
            stop,
            accept: Some(accept),
        }
    }

    /// Pushes an event to every subscriber.
    pub fn push(&self, event: Event) {
        push(&self.subscribers, event);
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().unwrap().len()
    }

    /// Stops listening and closes every connection, as a dying `sbcd` would.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for s in self.subscribers.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for FakeSbcd {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn push(subscribers: &Mutex<Vec<UnixStream>>, event: Event) {
    let line = control::encode_response(&Response::Event { event });
    subscribers
        .lock()
        .unwrap()
        .retain_mut(|s| s.write_all(line.as_bytes()).is_ok());
}

fn serve(
    stream: UnixStream,
    requests: &Mutex<Vec<Request>>,
    subscribers: &Mutex<Vec<UnixStream>>,
    state: &Mutex<SystemState>,
) {
    let mut writer = stream.try_clone().unwrap();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let request = match control::decode_request(&line) {
            Ok(r) => r,
            Err(e) => {
                let _ = writer.write_all(
                    control::encode_response(&Response::Error {
                        message: e.to_string(),
                    })
                    .as_bytes(),
                );
                continue;
            }
        };
        requests.lock().unwrap().push(request.clone());
        let reply = match request {
            Request::Subscribe => {
                let _ = writer.write_all(
                    control::encode_response(&Response::Ok {
                        reply: Reply::Subscribed,
                    })
                    .as_bytes(),
                );
                subscribers
                    .lock()
                    .unwrap()
                    .push(writer.try_clone().unwrap());
                continue;
            }
            Request::ShowSystemState => Reply::SystemState(SystemStateInfo {
                node: "fake".into(),
                state: *state.lock().unwrap(),
                since_unix_ms: 0,
                guard_remaining_ms: None,
                active_sessions: 1,
                registrations: 2,
            }),
            Request::SetSystemState { target, guard_secs } => {
                let to = match target {
                    control::TargetState::Online => SystemState::Online,
                    control::TargetState::Offline => SystemState::Draining,
                };
                let from = std::mem::replace(&mut *state.lock().unwrap(), to);
                let reply = Reply::Done {
                    message: format!("{from} -> {to} (guard {guard_secs:?})"),
                };
                let _ =
                    writer.write_all(control::encode_response(&Response::Ok { reply }).as_bytes());
                push(
                    subscribers,
                    Event::StateChanged {
                        from,
                        to,
                        reason: "operator".into(),
                        at_unix_ms: 1,
                    },
                );
                continue;
            }
            other => Reply::NotAvailable {
                what: format!("{other:?}"),
                why: "fake sbcd".into(),
            },
        };
        let _ = writer.write_all(control::encode_response(&Response::Ok { reply }).as_bytes());
    }
}
