//! Helpers for the system tests in `tests/`: running `cargo xtask`, a guest's serial console,
//! SIPp, free ports.
//!
//! The tests drive the appliance as a person would: they build the image with `cargo xtask
//! image`, boot it with the command `cargo xtask qemu --print-command` gives (so that the test
//! owns the QEMU process and its serial line), wait for what the console prints, type, and read
//! the answer. Nothing here sleeps for a fixed time to let something happen; waits end on the
//! awaited text or on a generous deadline made for TCG on a busy CI machine.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub mod peer;
pub mod sipp;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).map(PathBuf::from).unwrap_or(here)
}

/// `cargo run -p xtask -- ARGS`, with the output captured.
pub fn xtask(args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    Command::new(cargo)
        .current_dir(workspace_root())
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run cargo xtask {}: {e}", args.join(" ")))
}

/// Like [`xtask`], but stderr goes to the test's own (progress of long builds stays visible).
pub fn xtask_visible(args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    Command::new(cargo)
        .current_dir(workspace_root())
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("could not run cargo xtask {}: {e}", args.join(" ")))
}

/// True when `prog` is on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of asking.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("binding an ephemeral UDP port: {e}"));
        let port = udp
            .local_addr()
            .unwrap_or_else(|e| panic!("local address of a bound socket: {e}"))
            .port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// The longest a test guest may live, whatever happens to the test.
pub const GUEST_LIFETIME_SECS: u64 = 1200;

/// A program with its environment, as `cargo xtask qemu --print-command` prints it.
#[derive(Debug)]
pub struct PrintedCommand {
    pub program: String,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl PrintedCommand {
    pub fn parse(text: &str) -> PrintedCommand {
        let mut cmd = PrintedCommand {
            program: String::new(),
            env: Vec::new(),
            args: Vec::new(),
        };
        for line in text.lines() {
            if let Some(p) = line.strip_prefix("program ") {
                cmd.program = p.to_string();
            } else if let Some(kv) = line.strip_prefix("env ") {
                if let Some((k, v)) = kv.split_once('=') {
                    cmd.env.push((k.to_string(), v.to_string()));
                }
            } else if let Some(a) = line.strip_prefix("arg ") {
                cmd.args.push(a.to_string());
            }
        }
        assert!(
            !cmd.program.is_empty(),
            "no program in the printed command:\n{text}"
        );
        cmd
    }

    /// The command, run under `timeout`: if the test process dies without unwinding (killed by
    /// CI), the guest still ends within [`GUEST_LIFETIME_SECS`] instead of lingering.
    pub fn command(&self) -> Command {
        let mut c = Command::new("timeout");
        c.args(["--kill-after=10", &GUEST_LIFETIME_SECS.to_string()]);
        c.arg(&self.program).args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

/// A booted guest: QEMU with its first serial port on our pipes. Killed when dropped.
#[derive(Debug)]
pub struct Guest {
    child: Child,
    input: ChildStdin,
    output: Receiver<Vec<u8>>,
    /// Everything the serial line has printed, for waits and for failure messages.
    pub transcript: Vec<u8>,
    /// Where in `transcript` the next wait starts looking.
    seen: usize,
    pub started: Instant,
}

impl Guest {
    pub fn start(cmd: &PrintedCommand) -> Guest {
        let mut child = cmd
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {} under timeout: {e}", cmd.program));
        let started = Instant::now();
        let (Some(input), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            panic!("QEMU's stdin and stdout were not piped");
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Guest {
            child,
            input,
            output: rx,
            transcript: Vec::new(),
            seen: 0,
            started,
        }
    }

    /// Waits until the serial line prints `text` (after what earlier waits consumed); returns
    /// everything printed up to and including it.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = find(&self.transcript[self.seen..], text.as_bytes()) {
                let end = self.seen + pos + text.len();
                let got = String::from_utf8_lossy(&self.transcript[self.seen..end]).into_owned();
                self.seen = end;
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no {text:?} on the serial console within {timeout:?}; it printed:\n{}",
                    self.tail()
                ));
            }
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.transcript.extend_from_slice(&bytes),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!(
                        "QEMU ended ({status}) before {text:?}; the serial console printed:\n{}",
                        self.tail()
                    ));
                }
            }
        }
    }

    /// Waits until the serial line prints one of `texts` (after what earlier waits consumed);
    /// returns which one came first and everything printed up to and including it.
    pub fn wait_for_any(
        &mut self,
        texts: &[&str],
        timeout: Duration,
    ) -> Result<(usize, String), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let first = texts
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    find(&self.transcript[self.seen..], t.as_bytes()).map(|pos| (pos, i))
                })
                .min();
            if let Some((pos, i)) = first {
                let end = self.seen + pos + texts[i].len();
                let got = String::from_utf8_lossy(&self.transcript[self.seen..end]).into_owned();
                self.seen = end;
                return Ok((i, got));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "none of {texts:?} on the serial console within {timeout:?}; it printed:\n{}",
                    self.tail()
                ));
            }
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.transcript.extend_from_slice(&bytes),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "QEMU ended before any of {texts:?}; the serial console printed:\n{}",
                        self.tail()
                    ));
                }
            }
        }
    }

    /// Waits for QEMU to end (with `-no-reboot`, a guest reboot ends it), reading the serial
    /// line meanwhile; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    while let Ok(bytes) = self.output.try_recv() {
                        self.transcript.extend_from_slice(&bytes);
                    }
                    return Ok(status);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for QEMU: {e}")),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "QEMU still running after {timeout:?}; the serial console printed:\n{}",
                    self.tail()
                ));
            }
            // The reader thread ends when QEMU closes its output: wait on that, not a clock.
            match self.output.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok(bytes) => self.transcript.extend_from_slice(&bytes),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self
                        .child
                        .wait()
                        .map_err(|e| format!("waiting for QEMU: {e}"))?;
                    return Ok(status);
                }
            }
        }
    }

    /// Adds what the serial line printed since the last wait to the transcript, without
    /// waiting (for a failure message about a guest nobody was reading).
    pub fn take_output(&mut self) {
        while let Ok(bytes) = self.output.try_recv() {
            self.transcript.extend_from_slice(&bytes);
        }
    }

    /// The process id of what runs the guest (`timeout`, QEMU's parent).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the serial line printed so far, as text.
    pub fn transcript_text(&self) -> String {
        String::from_utf8_lossy(&self.transcript).into_owned()
    }

    /// Types `line` and Enter, as a person at the console would (CR, as a terminal sends).
    pub fn type_line(&mut self, line: &str) {
        self.input
            .write_all(format!("{line}\r").as_bytes())
            .and_then(|_| self.input.flush())
            .unwrap_or_else(|e| panic!("writing to the serial console: {e}"));
    }

    /// The last 4 KiB of the transcript, printable.
    pub fn tail(&self) -> String {
        let start = self.transcript.len().saturating_sub(4096);
        String::from_utf8_lossy(&self.transcript[start..]).into_owned()
    }
}

impl Drop for Guest {
    /// SIGTERM to `timeout`, which passes it to QEMU and waits for it; SIGKILL would end only
    /// `timeout` and leave QEMU running.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Builds (or finds up to date) the system tests' image, `out/image/qemu-testport`, with its
/// build output shown; fails the test when the build fails.
pub fn build_testport_image() -> Output {
    let built = xtask_visible(&["image", "--board", "qemu", "--testport"]);
    assert!(
        built.status.success(),
        "cargo xtask image --board qemu --testport failed:\n{}",
        String::from_utf8_lossy(&built.stdout)
    );
    built
}

/// Fails the test unless the test image carries every program of `needed`.
pub fn assert_testport_image_carries(needed: &[&str]) {
    let present = image_binaries("qemu-testport");
    for needed in needed {
        assert!(
            present.iter().any(|p| p == needed),
            "the image has no {needed}"
        );
    }
}

/// Reads the list of programs the built image carries (`out/image/<board>/binaries`).
pub fn image_binaries(board: &str) -> Vec<String> {
    let path = workspace_root()
        .join("out/image")
        .join(board)
        .join("binaries");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A scratch folder under `out/`, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let dir = workspace_root().join("out/system-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Writes `bytes` to `path`, panicking with the path on failure.
pub fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The factory console account of the qemu image (`image/board/qemu/sbc.toml`).
pub const FACTORY_USER: &str = "admin";
pub const FACTORY_PASSWORD: &str = "admin";
/// What the system tests set at the first login (SPEC §5: the factory password must go).
pub const NEW_PASSWORD: &str = "system-test-pw";

/// Logs in on the console as the factory account, whether or not its password was changed
/// already on this disk, starting at a login prompt the caller has seen: with the factory
/// password first; when that is refused (changed before, e.g. before a reset of the same
/// guest), with [`NEW_PASSWORD`]. The first time the console must ask for a new password before
/// anything else; returns true when it did.
pub fn console_login(guest: &mut Guest, prompt: &str, timeout: Duration) -> Result<bool, String> {
    guest.type_line(FACTORY_USER);
    guest.wait_for("Password: ", timeout)?;
    guest.type_line(FACTORY_PASSWORD);
    let (which, shown) =
        guest.wait_for_any(&["New password: ", "Login incorrect", prompt], timeout)?;
    match which {
        0 => {
            if !shown.contains("choose a new one before anything else") {
                return Err(format!("no reason given for the new password:\n{shown}"));
            }
            guest.type_line(NEW_PASSWORD);
            guest.wait_for("Retype new password: ", timeout)?;
            guest.type_line(NEW_PASSWORD);
            guest.wait_for("Password changed.", timeout)?;
            guest.wait_for(prompt, timeout)?;
            Ok(true)
        }
        1 => {
            guest.wait_for("login: ", timeout)?;
            guest.type_line(FACTORY_USER);
            guest.wait_for("Password: ", timeout)?;
            guest.type_line(NEW_PASSWORD);
            guest.wait_for(prompt, timeout)?;
            Ok(false)
        }
        _ => Err(format!(
            "the factory password let the console in without asking for a new one:\n{shown}"
        )),
    }
}

/// Sends an OPTIONS to `target` from a fresh UDP socket on 127.0.0.1 and returns the first
/// answer's status line, if one comes within `timeout` (re-sent every 500 ms, as UDP SIP does).
pub fn sip_options(target: &str, request_uri: &str, timeout: Duration) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    let local = socket.local_addr().ok()?;
    let branch = format!("z9hG4bK-systest-{}", local.port());
    let request = format!(
        "OPTIONS {request_uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag=systest\r\n\
         To: <{request_uri}>\r\n\
         Call-ID: systest-{branch}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket.send_to(request.as_bytes(), target).ok()?;
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = left
            .min(Duration::from_millis(500))
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait)).ok()?;
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            return text.lines().next().map(str::to_string);
        }
    }
    None
}

/// The file cargo built for `args` (`--message-format=json`) whose name starts with `prefix`.
pub fn cargo_executable(args: &[&str], prefix: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(args)
        .arg("--message-format=json")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cargo {}: {e}", args.join(" ")));
    assert!(out.status.success(), "cargo {} failed", args.join(" "));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let Some(at) = line.find("\"executable\":\"") else {
            continue;
        };
        let rest = &line[at + "\"executable\":\"".len()..];
        let path = PathBuf::from(rest.split('"').next().unwrap_or_default());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(prefix) {
            return path;
        }
    }
    panic!(
        "cargo {} named no executable {prefix}*:\n{text}",
        args.join(" ")
    );
}
