//! What the on-the-box tests (`box_*.rs`) add to the `Guest` harness: the guest's test port
//! (ttyS1, served by sbcd only when the kernel command line carries `sbc.testport=ttyS1`,
//! docs/box.md), a QMP client for key presses and QEMU's events, a hand-made INVITE, and the
//! guard that deletes a twin lab's network namespace.
//!
//! Like the harness, nothing here sleeps to let something happen: reads end on the awaited
//! text or on a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Connects to a QEMU `server=on,wait=off` socket, which appears a moment after QEMU starts.
fn connect(path: &Path, timeout: Duration) -> UnixStream {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return s,
            Err(e) if Instant::now() >= deadline => {
                panic!("cannot connect to {}: {e}", path.display())
            }
            // Polling for a socket QEMU has not created yet: no event to wait on.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Lines read by a thread from `stream`, so that waits can have deadlines.
fn line_reader(stream: impl Read + Send + 'static) -> Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_matches(['\r', '\n'])
                        .to_string();
                    if tx.send((Instant::now(), line)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// The guest's ttyS1 test port.
pub struct TestPort {
    stream: UnixStream,
    lines: Receiver<(Instant, String)>,
    /// A line read too early (a new process's `ready`), handed to the next wait.
    pushed_back: Option<String>,
    /// Every line read, for failure messages.
    pub transcript: Vec<String>,
}

/// The three panel LEDs of the qemu board as the kernel reports them (`brightness` != 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leds {
    pub green: bool,
    pub amber: bool,
    pub red: bool,
}

impl Leds {
    pub const ONLINE: Leds = Leds {
        green: true,
        amber: false,
        red: false,
    };
    pub const DRAINING: Leds = Leds {
        green: false,
        amber: true,
        red: false,
    };
    pub const OFFLINE: Leds = Leds {
        green: false,
        amber: false,
        red: true,
    };
}

impl TestPort {
    pub fn connect(path: &Path) -> TestPort {
        let stream = connect(path, Duration::from_secs(30));
        let reader = stream
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning the test port socket: {e}"));
        TestPort {
            stream,
            lines: line_reader(reader),
            pushed_back: None,
            transcript: Vec::new(),
        }
    }

    fn next_line(&mut self, timeout: Duration) -> Result<String, RecvTimeoutError> {
        if let Some(line) = self.pushed_back.take() {
            return Ok(line);
        }
        let (_, line) = self.lines.recv_timeout(timeout)?;
        self.transcript.push(line.clone());
        Ok(line)
    }

    /// Waits for a line containing `text`; returns it.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Ok(line) => {
                    if line.contains(text) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no {text:?} on the test port within {timeout:?}; last lines:\n{}",
                        self.tail()
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("the test port closed before {text:?}"))
                }
            }
        }
    }

    pub fn send(&mut self, command: &str) {
        self.stream
            .write_all(format!("{command}\n").as_bytes())
            .and_then(|()| self.stream.flush())
            .unwrap_or_else(|e| panic!("writing to the test port: {e}"));
    }

    /// Reads the panel LEDs through the guest kernel's LED class (`leds`), or `None` when no
    /// complete answer came (the answering process ended meanwhile).
    pub fn leds(&mut self, timeout: Duration) -> Option<Leds> {
        self.send("leds");
        let mut leds = Leds {
            green: false,
            amber: false,
            red: false,
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Straight from the port, past any pushed-back line: that one is for a later wait.
            let (_, line) = self.lines.recv_timeout(left).ok()?;
            self.transcript.push(line.clone());
            if line.contains("testport: end leds") {
                return Some(leds);
            }
            if line.contains("testport: ready") {
                // A new process took the port over; our question went with the old one.
                self.pushed_back = Some(line);
                return None;
            }
            let Some(rest) = line.split("testport: led ").nth(1) else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let (Some(name), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            let lit = value != "0";
            if name.ends_with("::numlock") {
                leds.green = lit;
            } else if name.ends_with("::capslock") {
                leds.amber = lit;
            } else if name.ends_with("::scrolllock") {
                leds.red = lit;
            }
        }
    }

    /// Asks for the LEDs until they show `want` (a blinking pattern is caught in its lit
    /// phase); returns how long that took.
    pub fn wait_leds(&mut self, want: Leds, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < timeout {
            let got = self.leds(Duration::from_secs(20));
            if got == Some(want) {
                return Ok(started.elapsed());
            }
            last = got.or(last);
        }
        Err(format!(
            "the LEDs never showed {want:?} within {timeout:?}; last seen {last:?}; test port:\n{}",
            self.tail()
        ))
    }

    pub fn tail(&self) -> String {
        let start = self.transcript.len().saturating_sub(30);
        self.transcript[start..].join("\n")
    }
}

/// Gives an appliance's QEMU command the test port: `sbc.testport=ttyS1` on the kernel command
/// line, and that second serial line on the Unix socket `socket` (QEMU the server), for
/// [`TestPort::connect`].
pub fn add_test_port(cmd: &mut system_tests::PrintedCommand, socket: &Path) {
    let append = cmd
        .args
        .iter()
        .position(|a| a == "-append")
        .unwrap_or_else(|| panic!("no -append in the QEMU command: {:?}", cmd.args));
    cmd.args[append + 1].push_str(" sbc.testport=ttyS1");
    cmd.args.push("-serial".into());
    cmd.args
        .push(format!("unix:{},server=on,wait=off", socket.display()));
}

/// A QMP connection in command mode; events are collected as they come.
pub struct Qmp {
    stream: UnixStream,
    lines: Receiver<(Instant, String)>,
    /// Events seen so far (raw JSON lines), with when they arrived.
    pub events: Vec<(Instant, String)>,
}

impl Qmp {
    pub fn connect(path: &Path) -> Qmp {
        let stream = connect(path, Duration::from_secs(30));
        let reader = stream
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning the QMP socket: {e}"));
        let mut qmp = Qmp {
            stream,
            lines: line_reader(reader),
            events: Vec::new(),
        };
        qmp.execute(r#"{"execute":"qmp_capabilities"}"#);
        qmp
    }

    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let (at, line) = self.lines.recv_timeout(timeout).ok()?;
        if line.contains(r#""event""#) {
            self.events.push((at, line.clone()));
        }
        Some(line)
    }

    /// Sends a command and waits for its `return` (events on the way are kept).
    pub fn execute(&mut self, json: &str) {
        self.stream
            .write_all(format!("{json}\n").as_bytes())
            .and_then(|()| self.stream.flush())
            .unwrap_or_else(|e| panic!("writing to QMP: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(line) = self.next_line(left) else {
                panic!("no answer from QMP to {json}");
            };
            if line.contains(r#""return""#) {
                return;
            }
            assert!(!line.contains(r#""error""#), "QMP refused {json}: {line}");
        }
    }

    /// Holds `qcode` down for `hold` on the emulated keyboard (the host keeps the time).
    pub fn press(&mut self, qcode: &str, hold: Duration) {
        let key = |down: bool| {
            format!(
                r#"{{"execute":"input-send-event","arguments":{{"events":[{{"type":"key","data":{{"down":{down},"key":{{"type":"qcode","data":"{qcode}"}}}}}}]}}}}"#
            )
        };
        self.execute(&key(true));
        // The hold itself is the input under test, not a wait for something to happen.
        std::thread::sleep(hold);
        self.execute(&key(false));
    }

    /// Waits for the event `name` (one already seen counts); returns when it arrived.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Instant, String> {
        let needle = format!(r#""event": "{name}""#);
        let compact = format!(r#""event":"{name}""#);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((at, _)) = self
                .events
                .iter()
                .find(|(_, e)| e.contains(&needle) || e.contains(&compact))
            {
                return Ok(*at);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no QMP event {name} within {timeout:?}; events: {:?}",
                    self.events.iter().map(|(_, e)| e).collect::<Vec<_>>()
                ));
            }
            let _ = self.next_line(left);
        }
    }
}

/// Sends one out-of-dialog INVITE over UDP to `target` and returns the first final response
/// (after ACKing it, as a non-2xx final response wants).
pub fn invite_final_response(target: &str, timeout: Duration) -> Result<String, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("binding UDP: {e}"))?;
    let local = socket
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;
    let branch = format!("z9hG4bK-box-{}", std::process::id());
    let call_id = format!("box-drain-{}@127.0.0.1", std::process::id());
    let head = |method: &str, cseq_method: &str| {
        format!(
            "{method} sip:service@{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:box-test@127.0.0.1>;tag=boxtest\r\n\
             To: <sip:service@{target}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 {cseq_method}\r\n\
             Contact: <sip:box-test@{local}>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    socket
        .send_to(head("INVITE", "INVITE").as_bytes(), target)
        .map_err(|e| format!("sending the INVITE: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no final response to the INVITE within {timeout:?}"
            ));
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| format!("read timeout: {e}"))?;
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let code: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if code >= 200 {
            // The ACK of a non-2xx final response carries the response's To tag.
            let to = text
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("to:"))
                .unwrap_or("To: <sip:service@127.0.0.1>")
                .to_string();
            let ack = head("ACK", "ACK").replace(
                &format!("To: <sip:service@{target}>"),
                to.trim_end_matches('\r'),
            );
            let _ = socket.send_to(ack.as_bytes(), target);
            return Ok(text);
        }
    }
}

/// A lab network namespace (`cargo xtask qemu --twin --print-command` leaves it to the caller),
/// deleted when dropped, however the test ends: the bridges and taps in it go with it. Declare
/// it before the guests and SIPp runs in it, so that they are dropped (stopped) first.
pub struct LabNetns(pub String);

impl Drop for LabNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// A QEMU appliance driven on its serial console, logged in at `prompt` (the twin's tests).
pub struct Console {
    /// How failures name it ("node 1").
    pub label: String,
    pub guest: system_tests::Guest,
    pub prompt: String,
    /// How long one command may take to be answered.
    pub answer_timeout: Duration,
}

impl Console {
    /// Types `line` and returns the answer, up to the next prompt.
    pub fn command(&mut self, line: &str) -> String {
        self.guest.type_line(line);
        let answered = self
            .guest
            .wait_for(line, self.answer_timeout)
            .and_then(|_| self.guest.wait_for(&self.prompt, self.answer_timeout));
        answered.unwrap_or_else(|e| panic!("{}: {line}: {e}", self.label))
    }

    /// What the console shows of the twin, the calls and the log, for a failure's evidence.
    pub fn evidence(&mut self) -> String {
        let twin = self.command("show twin");
        let calls = self.command("show calls");
        let log = self.command("show log 80");
        format!(
            "{} (console):\n--- show twin\n{twin}\n--- show calls\n{calls}\n--- show log 80\n{log}",
            self.label
        )
    }

    /// Asks `show twin` until `done` holds for its answer, and returns the answer; after
    /// `timeout` fails saying it never showed `what`, with the console's evidence.
    pub fn wait_twin(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let started = Instant::now();
        loop {
            let answer = self.command("show twin");
            if done(&answer) {
                return answer;
            }
            if started.elapsed() > timeout {
                let evidence = self.evidence();
                panic!(
                    "{}: show twin never said {what} within {timeout:?}; last:\n{answer}\n\n{evidence}",
                    self.label
                );
            }
            // Between two questions to a console that answered: no event to wait on.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for `text` printed after `mark` (a length of the transcript) and returns when it
    /// was seen: a notice printed before the mark does not count.
    pub fn wait_notice(&mut self, text: &str, mark: usize, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if find_text(&self.guest.transcript[mark..], text) {
                return Instant::now();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = self.guest.wait_for(text, left) {
                panic!("{}: {e}", self.label);
            }
        }
    }
}

/// Whether `needle` occurs in `hay`.
pub fn find_text(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// What a test of the twin lab needs of the host: root, iproute2, SIPp and a tun device.
pub fn lab_prerequisites() -> Vec<(bool, &'static str)> {
    vec![
        (
            system_tests::is_root(),
            "root (a network namespace with bridges and taps)",
        ),
        (system_tests::have("ip"), "ip (iproute2)"),
        (
            system_tests::have("sipp"),
            "sipp (the Debian package sip-tester; `cargo xtask test` installs it)",
        ),
        (Path::new("/dev/net/tun").exists(), "/dev/net/tun"),
    ]
}

/// Whether every prerequisite holds. Otherwise the test is skipped, saying what `test` lacks;
/// under `CI=true` it fails instead, so that CI never passes a test it did not run.
pub fn prerequisites_met(test: &str, prerequisites: &[(bool, &str)]) -> bool {
    let missing: Vec<&str> = prerequisites
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| *what)
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the {test} needs {missing:?}: under CI=true that fails rather than skips"
    );
    eprintln!("\nSKIPPED: the {test} needs {}\n", missing.join(", "));
    false
}

/// The two nodes' QEMU commands that `cargo xtask qemu --twin --print-command` printed, each
/// after its `node NAME` line: node a's, then node b's.
pub fn twin_commands(printed: &str) -> Vec<system_tests::PrintedCommand> {
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in printed.lines() {
        if let Some(name) = line.strip_prefix("node ") {
            sections.push((name.to_string(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    assert_eq!(
        sections.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["a", "b"],
        "cargo xtask qemu --twin --print-command did not print nodes a and b:\n{printed}"
    );
    sections
        .iter()
        .map(|(_, body)| system_tests::PrintedCommand::parse(body))
        .collect()
}
