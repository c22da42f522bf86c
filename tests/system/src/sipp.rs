//! SIPp run inside a network namespace (the twin lab's), each run with a folder of its own for
//! its traces: statistics (`stats.csv`), unexpected messages (`errors.log`), the scenario's
//! `<log>` lines (`logs.log`), every message (`messages.log`) and its stderr (`stderr.log`).
//!
//! Waits end on what SIPp does (its port bound, a `<log>` line written, its exit) or on a
//! deadline; SIPp writes its log files as it goes, so a wait reads them again until the line is
//! there.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A scenario of the sbcd host tests (`crates/sbcd/tests/scenarios/NAME`).
pub fn sbcd_scenario(name: &str) -> PathBuf {
    crate::workspace_root()
        .join("crates/sbcd/tests/scenarios")
        .join(name)
}

/// A scenario of the system tests (`tests/system/scenarios/NAME`).
pub fn system_scenario(name: &str) -> PathBuf {
    crate::workspace_root()
        .join("tests/system/scenarios")
        .join(name)
}

/// One SIPp process; killed when dropped (a failing test leaves none behind).
#[derive(Debug)]
pub struct SippRun {
    pub label: String,
    pub dir: PathBuf,
    port: u16,
    child: Child,
    status: Option<ExitStatus>,
}

impl SippRun {
    /// Starts `sipp ARGS` in `netns` on `ip:port`, its traces in `dir` (made empty first).
    pub fn start_in_netns(
        label: &str,
        netns: &str,
        ip: &str,
        port: u16,
        dir: &Path,
        args: &[String],
    ) -> SippRun {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let d = |f: &str| dir.join(f).display().to_string();
        let stderr = File::create(dir.join("stderr.log"))
            .unwrap_or_else(|e| panic!("creating {}: {e}", d("stderr.log")));
        // `ip netns exec` execs SIPp: the child's pid is SIPp's.
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "sipp"])
            .args(args)
            .args(["-i", ip, "-p", &port.to_string()])
            .args(["-nostdin", "-trace_stat", "-stf", &d("stats.csv")])
            .args(["-trace_err", "-error_file", &d("errors.log")])
            .args(["-trace_logs", "-log_file", &d("logs.log")])
            .args(["-trace_msg", "-message_file", &d("messages.log")])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run sipp ({e}): install the Debian package sip-tester (cargo xtask test does)")
            });
        SippRun {
            label: format!("{label} ({ip}:{port})"),
            dir: dir.to_path_buf(),
            port,
            child,
            status: None,
        }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits until SIPp has bound its UDP port (seen in its namespace's /proc/PID/net/udp).
    pub fn wait_bound(&mut self, timeout: Duration) -> Result<(), String> {
        let needle = format!(":{:04X}", self.port);
        let pid = self.child.id();
        self.poll(&format!("to bind UDP port {}", self.port), timeout, |_| {
            std::fs::read_to_string(format!("/proc/{pid}/net/udp"))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .any(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| a.ends_with(&needle))
                })
                .then_some(())
        })
    }

    /// Waits until the scenario has written a `<log>` line starting with `prefix`; returns the
    /// rest of it (the first such line).
    pub fn wait_logged(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let prefix = prefix.to_string();
        self.poll(&format!("to log {prefix:?}"), timeout, move |run| {
            run.logged(&prefix).into_iter().next()
        })
    }

    /// Calls `done` until it gives a value, SIPp exits without it, or `timeout` runs out.
    fn poll<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&SippRun) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = done(self) {
                return Ok(v);
            }
            if let Some(status) = self.exited() {
                // What it wrote before it ended counts.
                return done(self).ok_or_else(|| {
                    format!(
                        "{} exited ({status}) before {what}\n{}",
                        self.label,
                        self.details()
                    )
                });
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not {what} within {timeout:?}\n{}",
                    self.label,
                    self.details()
                ));
            }
            // SIPp writes files, it sends no event: read them again shortly.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for SIPp to exit by itself; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        self.poll("to exit", timeout, |run| run.status)
    }

    /// The rest of each `<log>` line starting with `prefix` written so far.
    pub fn logged(&self, prefix: &str) -> Vec<String> {
        self.read("logs.log")
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.trim().to_string())
            .collect()
    }

    /// The first `<log>` line `<prefix> <secs> <usecs>` (SIPp's gettimeofday) as Unix seconds.
    pub fn logged_unix_secs(&self, prefix: &str) -> Option<f64> {
        let line = self.logged(prefix).into_iter().next()?;
        let mut words = line.split_whitespace();
        let secs: f64 = words.next()?.parse().ok()?;
        let usecs: f64 = words.next()?.parse().ok()?;
        Some(secs + usecs / 1e6)
    }

    /// Every `<log>` line `<prefix> <secs> <usecs>` written so far, as Unix seconds.
    pub fn logged_times(&self, prefix: &str) -> Vec<f64> {
        self.logged(prefix)
            .iter()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let secs: f64 = words.next()?.parse().ok()?;
                let usecs: f64 = words.next()?.parse().ok()?;
                Some(secs + usecs / 1e6)
            })
            .collect()
    }

    /// Whether SIPp has exited (by itself, or after [`SippRun::finish_calls`]).
    pub fn has_exited(&mut self) -> bool {
        self.exited().is_some()
    }

    /// Ends a load as SIPp's own `q` key does (SIGUSR1): no new call is placed, and SIPp exits
    /// once the calls in progress are over; [`SippRun::wait_exit`] then waits for that.
    pub fn finish_calls(&mut self) {
        if self.exited().is_none() {
            let _ = std::process::Command::new("kill")
                .args(["-USR1", &self.child.id().to_string()])
                .status();
        }
    }

    /// The last line of the statistics file, by column name (written at exit too).
    pub fn stats(&self) -> HashMap<String, String> {
        let text = self.read("stats.csv");
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return HashMap::new();
        };
        let Some(last) = lines.next_back() else {
            return HashMap::new();
        };
        header
            .split(';')
            .zip(last.split(';'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    /// A cumulative counter, e.g. `SuccessfulCall` (the `(C)` column).
    pub fn count(&self, name: &str) -> u64 {
        self.stats()
            .get(&format!("{name}(C)"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The requests of `method` in the message trace (their first lines).
    pub fn received_requests(&self, method: &str) -> usize {
        let trace = self.read("messages.log");
        let mut n = 0;
        let mut received = false;
        for line in trace.lines() {
            if line.contains("message received") {
                received = true;
                continue;
            }
            if line.contains("message sent") {
                received = false;
                continue;
            }
            if received && !line.trim().is_empty() {
                if line.starts_with(&format!("{method} ")) && line.contains("SIP/2.0") {
                    n += 1;
                }
                received = false;
            }
        }
        n
    }

    /// What a failure message shows: its traces, the message trace's end.
    pub fn details(&self) -> String {
        let messages = self.read("messages.log");
        let start = messages.len().saturating_sub(6000);
        let start = (start..messages.len())
            .find(|i| messages.is_char_boundary(*i))
            .unwrap_or(messages.len());
        format!(
            "{} (traces in {}):\nstderr:\n{}\nerrors:\n{}\nlogs:\n{}\nmessages (end):\n{}",
            self.label,
            self.dir.display(),
            self.read("stderr.log"),
            self.read("errors.log"),
            self.read("logs.log"),
            &messages[start..]
        )
    }

    /// Ends SIPp (a UAS that answers until told to stop).
    pub fn stop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for SippRun {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `sctp_big_invite.xml` with its SDP padded past 4096 bytes, written into `dir`.
pub fn big_invite_scenario(dir: &Path) -> PathBuf {
    let template = std::fs::read_to_string(system_scenario("sctp_big_invite.xml"))
        .unwrap_or_else(|e| panic!("reading the big INVITE scenario: {e}"));
    let padding: String = (0..60)
        .map(|i| format!("      a=x-padding-{i:02}:{}\n", "p".repeat(90)))
        .collect();
    let scenario = dir.join("big_invite.xml");
    crate::write_file(
        &scenario,
        template.replace("PADDING\n", &padding).as_bytes(),
    );
    scenario
}
