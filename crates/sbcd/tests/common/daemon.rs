//! One `sbcd` under test: its configuration, its process, its log, its control socket.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::client::Client;
use control::{
    CallInfo, Counter, Event, RegistrationInfo, Reply, Request, Response, SystemState,
    SystemStateInfo, UpstreamInfo,
};

use super::net::{free_port, local};
use super::{unix_ms_now, wait_for, PATIENCE};

/// What a test may vary in the configuration; everything else is fixed to fast test values.
#[derive(Debug, Clone)]
pub struct SbcdConfig {
    /// Access side: UDP, and TCP on the same port.
    pub access_port: u16,
    /// Core side: UDP.
    pub core_port: u16,
    /// Upstreams (UDP on 127.0.0.1): port and priority.
    pub upstreams: Vec<(u16, u32)>,
    pub guard_secs: u64,
    pub retry_after_secs: u64,
    pub upstream_timeout_ms: u64,
    pub probe_interval_secs: u64,
    /// `[limits] per_source_connections`; `None` leaves sbcd's default.
    pub per_source_connections: Option<usize>,
    /// `[limits] max_connections`; `None` leaves sbcd's default.
    pub max_connections: Option<usize>,
    /// `[limits] dialog_idle_secs`; `None` leaves sbcd's default.
    pub dialog_idle_secs: Option<usize>,
    /// `[sip] tcp_message_timeout_secs`; `None` leaves sbcd's default.
    pub tcp_message_timeout_secs: Option<u64>,
    /// `[sip] workers`: SIP shards (SPEC §6). Two by default, whatever the machine's cores, so
    /// every test runs the box's work spread over shards as a multi-core box does.
    pub workers: usize,
    /// `[control] metrics_http` on 127.0.0.1 (the core listener's address) at this port.
    pub metrics_http_port: Option<u16>,
}

impl SbcdConfig {
    /// Fresh ports for sbcd, one upstream per given port, in priority order.
    pub fn with_upstreams(upstream_ports: &[u16]) -> SbcdConfig {
        SbcdConfig {
            access_port: free_port(),
            core_port: free_port(),
            upstreams: upstream_ports
                .iter()
                .enumerate()
                .map(|(i, &p)| (p, i as u32 + 1))
                .collect(),
            guard_secs: 60,
            retry_after_secs: 30,
            upstream_timeout_ms: 1000,
            probe_interval_secs: 1,
            per_source_connections: None,
            max_connections: None,
            dialog_idle_secs: None,
            tcp_message_timeout_secs: None,
            workers: 2,
            metrics_http_port: None,
        }
    }

    fn to_toml(&self, dir: &Path) -> String {
        let mut t = format!(
            "[node]\nname = \"sbc-test\"\n\n\
             [[listen]]\nrealm = \"access\"\ntransport = \"udp\"\naddr = \"127.0.0.1:{a}\"\n\n\
             [[listen]]\nrealm = \"access\"\ntransport = \"tcp\"\naddr = \"127.0.0.1:{a}\"\n\n\
             [[listen]]\nrealm = \"core\"\ntransport = \"udp\"\naddr = \"127.0.0.1:{c}\"\n\n",
            a = self.access_port,
            c = self.core_port,
        );
        for (port, priority) in &self.upstreams {
            t.push_str(&format!(
                "[[upstream]]\nuri = \"sip:127.0.0.1:{port};transport=udp\"\npriority = {priority}\n\n"
            ));
        }
        t.push_str(&format!(
            "[upstream_policy]\nupstream_timeout_ms = {}\nprobe_interval_secs = {}\n\n\
             [drain]\nguard_secs = {}\nretry_after_secs = {}\nreg_reject_code = 503\n\
             priority_namespaces = [\"ets\", \"wps\"]\n\n\
             [control]\nsocket = \"{}\"\n{}\n[state]\ndir = \"{}\"\n\n[panel]\nboard = \"sim\"\n",
            self.upstream_timeout_ms,
            self.probe_interval_secs,
            self.guard_secs,
            self.retry_after_secs,
            dir.join("control.sock").display(),
            self.metrics_http_port
                .map(|p| format!("metrics_http = \"127.0.0.1:{p}\"\n"))
                .unwrap_or_default(),
            dir.join("state").display(),
        ));
        t.push_str(&format!("\n[sip]\nworkers = {}\n", self.workers));
        if let Some(secs) = self.tcp_message_timeout_secs {
            t.push_str(&format!("tcp_message_timeout_secs = {secs}\n"));
        }
        let limits: Vec<String> = [
            ("per_source_connections", self.per_source_connections),
            ("max_connections", self.max_connections),
            ("dialog_idle_secs", self.dialog_idle_secs),
        ]
        .iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key} = {v}\n")))
        .collect();
        if !limits.is_empty() {
            t.push_str(&format!("\n[limits]\n{}", limits.concat()));
        }
        t
    }
}

/// Lines sbcd wrote to stderr, with when they arrived.
type Log = Arc<Mutex<Vec<(Instant, String)>>>;

/// A running `sbcd`; killed when dropped.
#[derive(Debug)]
pub struct Sbcd {
    pub config: SbcdConfig,
    dir: tempfile::TempDir,
    child: Child,
    log: Log,
    /// The network namespace it runs in (`ip netns exec`), if not the test's own.
    netns: Option<String>,
}

impl Sbcd {
    /// Writes the configuration, starts sbcd and returns once it logged `sbcd: listening`.
    pub fn start(config: SbcdConfig) -> Sbcd {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        std::fs::write(dir.path().join("sbc.toml"), config.to_toml(dir.path()))
            .expect("write sbc.toml");
        let (child, log) = spawn_listening(dir.path(), None);
        Sbcd {
            config,
            dir,
            child,
            log,
            netns: None,
        }
    }

    /// Starts sbcd inside network namespace `netns` (`ip netns exec`, which execs sbcd: the
    /// child's pid is sbcd's) on a configuration the test writes itself: `write` gets the
    /// temporary directory (for the control socket, the state directory, a key file) and returns
    /// the text of sbc.toml. Returns once sbcd logged `sbcd: listening`. `config` is then a
    /// placeholder: the addresses are the test's.
    pub fn start_in_netns(netns: &str, write: impl FnOnce(&Path) -> String) -> Sbcd {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        std::fs::write(dir.path().join("sbc.toml"), write(dir.path())).expect("write sbc.toml");
        let (child, log) = spawn_listening(dir.path(), Some(netns));
        Sbcd {
            config: SbcdConfig::with_upstreams(&[]),
            dir,
            child,
            log,
            netns: Some(netns.to_owned()),
        }
    }

    /// Its temporary directory (sbc.toml, the control socket, the state directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills sbcd with SIGKILL (a crash: nothing of its own runs after it) and reaps it; returns
    /// when the signal was sent.
    pub fn kill9(&mut self) -> Instant {
        let at = Instant::now();
        let _ = self.child.kill();
        let _ = self.child.wait();
        at
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops sbcd the way systemd would (SIGTERM), waits for it to exit, and starts it again on
    /// the same configuration and state directory.
    pub fn restart(&mut self) {
        signal(self.child.id(), "TERM");
        let pid = self.child.id();
        let status = wait_for("sbcd to stop after SIGTERM", PATIENCE, || {
            self.child.try_wait().ok().flatten()
        });
        eprintln!("sbcd {pid} stopped: {status}");
        let (child, log) = spawn_listening(self.dir.path(), self.netns.as_deref());
        self.child = child;
        self.log = log;
    }

    /// Starts sbcd again after its process ended (a [`Sbcd::kill9`]): the same configuration and
    /// directory (the state directory as the test left it), a new process and a new log.
    /// Returns once it logged `sbcd: listening`.
    pub fn start_again(&mut self) {
        assert!(
            !self.running(),
            "start_again: sbcd {} still runs",
            self.pid()
        );
        let (child, log) = spawn_listening(self.dir.path(), self.netns.as_deref());
        self.child = child;
        self.log = log;
    }

    /// The process id of the running sbcd (for /proc figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn access(&self) -> SocketAddr {
        local(self.config.access_port)
    }

    pub fn core(&self) -> SocketAddr {
        local(self.config.core_port)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// Waits for a log line containing `needle`; returns when it arrived.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Instant {
        wait_for(&format!("sbcd to log {needle:?}"), timeout, || {
            let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.iter()
                .find(|(_, l)| l.contains(needle))
                .map(|(t, _)| *t)
        })
    }

    /// How many log lines so far contain `needle`.
    /// The first line of sbcd's log containing `needle`, if any yet.
    #[allow(dead_code)] // Used by the twin lab's benchmark only.
    pub fn log_line(&self, needle: &str) -> Option<String> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(_, l)| l.clone())
    }

    pub fn count_log(&self, needle: &str) -> usize {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().filter(|(_, l)| l.contains(needle)).count()
    }

    /// Runs `sbcctl --json <words>` and returns its one answer; panics on an error answer.
    pub fn ctl(&self, words: &str) -> Reply {
        let out = Command::new(sbcctl_path())
            .arg("--socket")
            .arg(self.socket())
            .args(["--json", "--timeout", "10"])
            .args(words.split_whitespace())
            .stdin(Stdio::null())
            .output()
            .expect("run sbcctl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().next().unwrap_or_default();
        match control::decode_response(line) {
            Ok(Response::Ok { reply }) => reply,
            Ok(other) => panic!("sbcctl {words}: {other:?} (exit {})", out.status),
            Err(e) => panic!(
                "sbcctl {words}: {e}; exit {}; stdout {stdout:?}; stderr {:?}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    pub fn system_state(&self) -> SystemStateInfo {
        match self.ctl("show system-state") {
            Reply::SystemState(s) => s,
            other => panic!("show system-state answered {other:?}"),
        }
    }

    pub fn calls(&self) -> Vec<CallInfo> {
        match self.ctl("show calls") {
            Reply::Calls(c) => c,
            other => panic!("show calls answered {other:?}"),
        }
    }

    pub fn registrations(&self) -> Vec<RegistrationInfo> {
        match self.ctl("show registrations") {
            Reply::Registrations(r) => r,
            other => panic!("show registrations answered {other:?}"),
        }
    }

    pub fn upstreams(&self) -> Vec<UpstreamInfo> {
        match self.ctl("show upstreams") {
            Reply::Upstreams(u) => u,
            other => panic!("show upstreams answered {other:?}"),
        }
    }

    /// A counter of `show stats`; panics naming the known ones when it does not exist.
    pub fn stat(&self, name: &str) -> u64 {
        let counters: Vec<Counter> = match self.ctl("show stats") {
            Reply::Stats(c) => c,
            other => panic!("show stats answered {other:?}"),
        };
        match counters.iter().find(|c| c.name == name) {
            Some(c) => c.value,
            None => panic!(
                "no counter {name:?} in show stats; have {:?}",
                counters.iter().map(|c| &c.name).collect::<Vec<_>>()
            ),
        }
    }

    /// `show twin`: the twin's status (SPEC §7).
    pub fn twin(&self) -> twin::Status {
        match self.ctl("show twin") {
            Reply::Twin(info) => info.status,
            other => panic!("show twin answered {other:?}"),
        }
    }

    /// `show twin` as sbcctl --json prints it, undecoded (the `data` of its reply): for fields
    /// that `twin::Status` does not (yet) carry, such as `replication`.
    pub fn twin_json(&self) -> serde_json::Value {
        let (ok, stdout, stderr) = self.ctl_raw(&["--json", "show", "twin"]);
        let line = stdout.lines().next().unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("show twin: {e}; ok {ok}; stdout {stdout:?}; stderr {stderr:?}")
        });
        match value.pointer("/reply/data") {
            Some(data) if value["reply"]["type"] == "twin" => data.clone(),
            _ => panic!("show twin answered {value}"),
        }
    }

    /// Runs `sbcctl <args>` as an operator would (no `--json` unless given) and returns whether
    /// it exited 0, its stdout and its stderr.
    pub fn ctl_raw(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(sbcctl_path())
            .arg("--socket")
            .arg(self.socket())
            .args(["--timeout", "30"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run sbcctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `set-system-state offline [guard N]`.
    pub fn drain(&self, guard_secs: Option<u64>) {
        let cmd = match guard_secs {
            Some(g) => format!("set-system-state offline guard {g}"),
            None => "set-system-state offline".to_owned(),
        };
        self.ctl(&cmd);
    }

    /// `set-system-state online`.
    pub fn online(&self) {
        self.ctl("set-system-state online");
    }

    /// Waits until `show system-state` reports `state`.
    pub fn wait_state(&self, state: SystemState, timeout: Duration) -> SystemStateInfo {
        wait_for(&format!("system state {state:?}"), timeout, || {
            Some(self.system_state()).filter(|s| s.state == state)
        })
    }

    /// Subscribes to state events on the control socket (what `sbcctl watch` prints); the
    /// subscription is confirmed before this returns, so no later event is missed.
    pub fn watch(&self) -> Watch {
        let mut client =
            Client::connect(&self.socket(), Some(PATIENCE)).expect("connect to control socket");
        match client.request(&Request::Subscribe) {
            Ok(Response::Ok {
                reply: Reply::Subscribed,
            }) => {}
            other => panic!("subscribe answered {other:?}"),
        }
        client.set_timeout(None).expect("clear the read timeout");
        let events: Arc<Mutex<Vec<SeenEvent>>> = Arc::default();
        let sink = Arc::clone(&events);
        std::thread::spawn(move || {
            while let Ok(event) = client.next_event() {
                let seen = SeenEvent {
                    received_unix_ms: unix_ms_now(),
                    event,
                };
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(seen);
            }
        });
        Watch { events }
    }
}

impl Sbcd {
    /// Starts `sbcctl --json watch` and records each event it prints with when it printed it.
    /// Unlike [`Sbcd::watch`], nothing says when its subscription is in place: start it well
    /// before the events it should see.
    pub fn sbcctl_watch(&self) -> SbcctlWatch {
        let mut child = Command::new(sbcctl_path())
            .arg("--socket")
            .arg(self.socket())
            .args(["--json", "watch"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run sbcctl watch");
        let stdout = child.stdout.take().expect("sbcctl stdout is piped");
        let events: Arc<Mutex<Vec<SeenEvent>>> = Arc::default();
        let sink = Arc::clone(&events);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let received_unix_ms = unix_ms_now();
                if let Ok(Response::Event { event }) = control::decode_response(&line) {
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(SeenEvent {
                            received_unix_ms,
                            event,
                        });
                }
            }
        });
        SbcctlWatch {
            child,
            watch: Watch { events },
        }
    }
}

/// A running `sbcctl --json watch`; killed when dropped.
#[derive(Debug)]
pub struct SbcctlWatch {
    child: Child,
    pub watch: Watch,
}

impl Drop for SbcctlWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sbcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An event and when this test process received it.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    pub received_unix_ms: u64,
    pub event: Event,
}

/// State events pushed by sbcd since [`Sbcd::watch`].
#[derive(Debug)]
pub struct Watch {
    events: Arc<Mutex<Vec<SeenEvent>>>,
}

impl Watch {
    /// Waits for the change into `to`; returns it with its reason and time.
    pub fn wait_change_to(&self, to: SystemState, timeout: Duration) -> (SeenEvent, String, u64) {
        wait_for(&format!("a state event into {to:?}"), timeout, || {
            let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
            events.iter().find_map(|e| match &e.event {
                Event::StateChanged {
                    to: t,
                    reason,
                    at_unix_ms,
                    ..
                } if *t == to => Some((e.clone(), reason.clone(), *at_unix_ms)),
                _ => None,
            })
        })
    }

    /// Every state change seen so far, as (from, to, reason).
    pub fn changes(&self) -> Vec<(SystemState, SystemState, String)> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .filter_map(|e| match &e.event {
                Event::StateChanged {
                    from, to, reason, ..
                } => Some((*from, *to, reason.clone())),
                _ => None,
            })
            .collect()
    }
}

fn sbcd_path() -> &'static str {
    env!("CARGO_BIN_EXE_sbcd")
}

fn sbcctl_path() -> &'static str {
    env!("CARGO_BIN_EXE_sbcctl")
}

/// Starts sbcd on `dir/sbc.toml` (inside network namespace `netns` when given), echoes its
/// stderr into the test output, and waits for `sbcd: listening` (or panics with its log when it
/// exits first).
fn spawn_listening(dir: &Path, netns: Option<&str>) -> (Child, Log) {
    let mut command = match netns {
        None => Command::new(sbcd_path()),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, sbcd_path()]);
            c
        }
    };
    let mut child = command
        .arg("--config")
        .arg(dir.join("sbc.toml"))
        .env("SBCD_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sbcd");
    let log: Log = Arc::default();
    let stderr = child.stderr.take().expect("sbcd stderr is piped");
    let sink = Arc::clone(&log);
    let pid = child.id();
    let label = netns.map_or_else(|| format!("sbcd[{pid}]"), |ns| format!("sbcd[{pid}@{ns}]"));
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{label} {line}");
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((Instant::now(), line));
        }
    });
    wait_for("sbcd: listening", PATIENCE, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("sbcd exited before listening: {status}");
        }
        let lines = log.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .any(|(_, l)| l.contains("sbcd: listening"))
            .then_some(())
    });
    (child, log)
}

/// Sends a signal by name to a process we started.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}
