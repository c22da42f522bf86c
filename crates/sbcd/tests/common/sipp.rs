//! SIPp processes as phones (UAC) and as the core (UAS), and what they report.
//!
//! Each run gets its own temporary directory for its statistics (`-trace_stat`), unexpected
//! messages (`-trace_err`) and `<log>` lines (`-trace_logs`); the outcome is read from there
//! and from the exit status (SIPp exits 0 only when every call succeeded).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::daemon::signal;
use super::net::{free_port, udp_port_taken};
use super::netns::udp_port_bound_in_ns_of;
use super::{wait_for, PATIENCE};

/// Where our scenarios live.
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
}

/// A SIPp command line being put together.
#[derive(Debug)]
pub struct Sipp {
    label: String,
    args: Vec<String>,
    port: u16,
    /// How long the run may take before SIPp gives up (and the harness kills it a bit later).
    limit: Duration,
    /// Run inside this network namespace, on this local address, instead of on 127.0.0.1.
    netns: Option<(String, Ipv4Addr)>,
}

impl Sipp {
    /// A UAC running `scenario` (a file under tests/scenarios) against `remote`.
    pub fn uac(scenario_file: &str, remote: SocketAddr) -> Sipp {
        let mut s = Sipp::new(scenario_file);
        s.args.push(remote.to_string());
        s
    }

    /// A UAS running `scenario` (a file under tests/scenarios) on a fresh port.
    pub fn uas(scenario_file: &str) -> Sipp {
        Sipp::new(scenario_file)
    }

    fn new(scenario_file: &str) -> Sipp {
        let port = free_port();
        let path = scenario(scenario_file);
        assert!(path.exists(), "no scenario {}", path.display());
        Sipp {
            label: scenario_file.trim_end_matches(".xml").to_owned(),
            args: vec!["-sf".into(), path.display().to_string()],
            port,
            limit: Duration::from_secs(30),
            netns: None,
        }
    }

    /// Runs SIPp inside network namespace `ns` (`ip netns exec`) on local address `ip`.
    pub fn in_netns(mut self, ns: &str, ip: Ipv4Addr) -> Sipp {
        self.netns = Some((ns.to_owned(), ip));
        self
    }

    /// The local port (for a UAS: where it listens; for a phone: where it registers from).
    pub fn on_port(mut self, port: u16) -> Sipp {
        self.port = port;
        self
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `[service]`: the user part of the request URI.
    pub fn service(self, user: &str) -> Sipp {
        self.arg("-s").arg(user)
    }

    /// A `[key]` of the scenario.
    pub fn key(self, key: &str, value: &str) -> Sipp {
        self.arg("-key").arg(key).arg(value)
    }

    /// Stop after `n` calls.
    pub fn calls(self, n: u32) -> Sipp {
        self.arg("-m").arg(&n.to_string())
    }

    /// Place `per_sec` new calls per second.
    pub fn rate(self, per_sec: u32) -> Sipp {
        self.arg("-r").arg(&per_sec.to_string())
    }

    /// At most `n` calls at the same time.
    pub fn concurrent(self, n: u32) -> Sipp {
        self.arg("-l").arg(&n.to_string())
    }

    /// The length of the scenario's `<pause/>` (how long a call is held).
    pub fn hold_ms(self, ms: u64) -> Sipp {
        self.arg("-d").arg(&ms.to_string())
    }

    /// Keep every message it receives (`-trace_msg`), for [`SippOutcome::received`].
    pub fn trace_messages(self) -> Sipp {
        self.arg("-trace_msg")
    }

    /// TCP, one connection per call (`-t t1`).
    pub fn tcp(self) -> Sipp {
        self.arg("-t").arg("t1")
    }

    /// How long the whole run may take.
    pub fn time_limit(mut self, limit: Duration) -> Sipp {
        self.limit = limit;
        self
    }

    pub fn arg(mut self, a: &str) -> Sipp {
        self.args.push(a.to_owned());
        self
    }

    /// Starts SIPp; for a UAS, returns once its port is bound so that no call can arrive early.
    pub fn start(self) -> SippRun {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let d = |f: &str| dir.path().join(f).display().to_string();
        let mut args = self.args.clone();
        if args.iter().any(|a| a == "-trace_msg") {
            args.extend(["-message_file".to_owned(), d("messages.log")]);
        }
        let (mut command, local_ip) = match &self.netns {
            None => (Command::new("sipp"), "127.0.0.1".to_owned()),
            Some((ns, ip)) => {
                // `ip netns exec` execs SIPp: the child's pid is SIPp's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "sipp"]);
                (c, ip.to_string())
            }
        };
        let child = command
            .args(&args)
            .args(["-i", &local_ip, "-p", &self.port.to_string()])
            .args(["-nostdin", "-trace_stat", "-stf", &d("stats.csv")])
            .args(["-trace_err", "-error_file", &d("errors.log")])
            .args(["-trace_logs", "-log_file", &d("logs.log")])
            .args(["-timeout", &format!("{}s", self.limit.as_secs().max(1))])
            .arg("-timeout_error")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run sipp ({e}); install the Debian package sip-tester (cargo xtask test does)")
            });
        let mut run = SippRun {
            label: format!("{}:{}", self.label, self.port),
            port: self.port,
            child: Some(child),
            dir,
            limit: self.limit,
        };
        let port = self.port;
        let in_netns = self.netns.is_some();
        wait_for(&format!("{} to bind its port", run.label), PATIENCE, || {
            // A short UAC may be done before we look; its outcome is read by `wait`.
            let exited = matches!(run.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))));
            let bound = match (&run.child, in_netns) {
                (Some(child), true) => udp_port_bound_in_ns_of(child.id(), port),
                _ => udp_port_taken(port),
            };
            (exited || bound).then_some(())
        });
        run
    }

    /// Starts SIPp and waits for it to finish.
    pub fn run(self) -> SippOutcome {
        self.start().wait()
    }
}

/// A SIPp process; killed when dropped.
#[derive(Debug)]
pub struct SippRun {
    label: String,
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    limit: Duration,
}

impl SippRun {
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The port it listens on (a UAS) or sends from (a UAC).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for SIPp to exit by itself (its `-m` count reached or its own timeout).
    pub fn wait(mut self) -> SippOutcome {
        let bound = self.limit + Duration::from_secs(15);
        let label = self.label.clone();
        let mut child = self.child.take().expect("a running sipp");
        let status = wait_for(&format!("{label} to exit"), bound, || {
            child.try_wait().ok().flatten()
        });
        self.outcome(status)
    }

    /// Asks a UAS to stop (SIGINT: it writes its statistics and exits) and collects what it saw.
    pub fn stop(mut self) -> SippOutcome {
        let label = self.label.clone();
        let mut child = self.child.take().expect("a running sipp");
        signal(child.id(), "INT");
        let status = wait_for(&format!("{label} to stop"), PATIENCE, || {
            child.try_wait().ok().flatten()
        });
        self.outcome(status)
    }

    fn outcome(&self, status: ExitStatus) -> SippOutcome {
        let outcome = SippOutcome {
            label: self.label.clone(),
            status,
            stats: parse_stats(&self.read("stats.csv")),
            errors: self.read("errors.log"),
            logs: self.read("logs.log").lines().map(str::to_owned).collect(),
            messages: self.read("messages.log"),
        };
        eprintln!("{}", outcome.summary());
        outcome
    }

    /// The rest of each `<log>` line starting with `prefix` written so far.
    pub fn logged_so_far(&self, prefix: &str) -> Vec<String> {
        self.read("logs.log")
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|l| l.trim().to_owned())
            .collect()
    }

    /// Waits until the run has written a `<log>` line starting with `prefix` for which `check`
    /// holds, and returns the rest of that line. SIPp writes its log as it goes.
    pub fn wait_logged(&self, prefix: &str, check: impl Fn(&str) -> bool) -> String {
        wait_for(
            &format!("{} to log {prefix:?}", self.label),
            PATIENCE,
            || {
                self.read("logs.log")
                    .lines()
                    .filter_map(|l| l.strip_prefix(prefix))
                    .map(str::trim)
                    .find(|rest| check(rest))
                    .map(str::to_owned)
            },
        )
    }

    /// Waits until the run (started with [`Sipp::trace_messages`]) has received a `method`
    /// request for which `check` holds, and returns it.
    pub fn wait_received(&self, method: &str, check: impl Fn(&str) -> bool) -> String {
        wait_for(
            &format!("{} to receive {method}", self.label),
            PATIENCE,
            || {
                requests_in_trace(&self.read("messages.log"), method)
                    .into_iter()
                    .find(|m| check(m))
            },
        )
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default()
    }
}

impl Drop for SippRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a finished SIPp run reported.
#[derive(Debug)]
pub struct SippOutcome {
    pub label: String,
    pub status: ExitStatus,
    /// The last line of its statistics file, by column name.
    pub stats: HashMap<String, String>,
    /// Its unexpected-message trace.
    pub errors: String,
    /// The lines its scenario's `<log>` actions wrote.
    pub logs: Vec<String>,
    /// Its message trace, when asked for with [`Sipp::trace_messages`].
    pub messages: String,
}

impl SippOutcome {
    /// A cumulative counter, e.g. `SuccessfulCall` (the `(C)` column).
    pub fn count(&self, name: &str) -> u64 {
        self.stats
            .get(&format!("{name}(C)"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn successful(&self) -> u64 {
        self.count("SuccessfulCall")
    }

    pub fn failed(&self) -> u64 {
        self.count("FailedCall")
    }

    /// Exit 0, `n` successful calls, none failed; otherwise panics with the error trace.
    pub fn assert_all_succeeded(&self, n: u64) {
        assert!(
            self.status.success() && self.successful() == n && self.failed() == 0,
            "{}: expected {n} successful calls and exit 0\n{}",
            self.label,
            self.details()
        );
    }

    /// It exited cleanly and no call failed (for a UAS, which also counts the probes it
    /// answered as calls).
    pub fn assert_none_failed(&self) {
        assert!(
            self.status.success() && self.failed() == 0,
            "{}: calls failed\n{}",
            self.label,
            self.details()
        );
    }

    /// The rest of each `<log>` line starting with `prefix`.
    pub fn logged(&self, prefix: &str) -> Vec<String> {
        self.logs
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|l| l.trim().to_owned())
            .collect()
    }

    /// The times logged as `<prefix> <secs> <usecs>` (SIPp's gettimeofday), in Unix ms.
    pub fn logged_unix_ms(&self, prefix: &str) -> Vec<f64> {
        self.logged(prefix)
            .iter()
            .filter_map(|rest| {
                let mut parts = rest.split_whitespace().map(|p| p.parse::<f64>().ok());
                match (parts.next().flatten(), parts.next().flatten()) {
                    (Some(secs), Some(usecs)) => Some(secs * 1000.0 + usecs / 1000.0),
                    _ => None,
                }
            })
            .collect()
    }

    /// The requests with `method` it received (from its message trace), as full SIP text.
    pub fn received(&self, method: &str) -> Vec<String> {
        requests_in_trace(&self.messages, method)
    }

    pub fn summary(&self) -> String {
        format!(
            "{}: {} successful={} failed={} created={}",
            self.label,
            self.status,
            self.successful(),
            self.failed(),
            self.count("OutgoingCall") + self.count("IncomingCall")
        )
    }

    pub fn details(&self) -> String {
        let errors: String = self.errors.chars().take(6000).collect();
        format!("{}\nunexpected messages:\n{errors}", self.summary())
    }
}

/// The `method` requests in a SIPp message trace, as full SIP text. The trace is a series of
/// blocks, each opened by a line of dashes and a timestamp, then "<transport> message received
/// [n] bytes :", a blank line and the message.
fn requests_in_trace(trace: &str, method: &str) -> Vec<String> {
    let start = format!("{method} ");
    trace
        .split("\n-----")
        .filter(|block| block.contains("message received"))
        .filter_map(|block| {
            let body = block.split_once(" bytes :")?.1.trim_start();
            body.starts_with(&start).then(|| body.trim_end().to_owned())
        })
        .collect()
}

/// The last row of a SIPp statistics file, keyed by the header row's column names.
fn parse_stats(csv: &str) -> HashMap<String, String> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return HashMap::new();
    };
    let Some(last) = lines.next_back() else {
        return HashMap::new();
    };
    header
        .split(';')
        .zip(last.split(';'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
