//! A lab of network namespaces on the real kernel: a switch namespace holding a bridge with three
//! ports, one each to `peer`, `x` and `y` (each sees its port as `eth0`, with a fixed MAC), and
//! helpers to run code inside one of them. Needs root and iproute2; without them the tests skip,
//! except under `CI=true`, where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // setup failures fail the test

use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

pub const DEV: &str = "eth0";
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const X_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const Y_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// The service address the tests move around.
pub const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
pub const PEER_MAC: &str = "02:00:00:77:00:01";
pub const X_MAC: &str = "02:00:00:77:00:02";
pub const Y_MAC: &str = "02:00:00:77:00:03";

/// The namespaces of one test; dropping it deletes them (and so every veth and the bridge),
/// also when the test panics.
pub struct Lab {
    pub peer: String,
    pub x: String,
    pub y: String,
    created: Vec<String>,
}

impl Lab {
    /// Builds the lab, or `None` (after saying why) where the machine cannot; under `CI=true`
    /// that is a failure instead.
    pub fn new() -> Option<Lab> {
        if let Some(why) = missing_prerequisite() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("namespace lab unavailable under CI=true: {why}");
            }
            eprintln!("SKIPPED: namespace lab unavailable: {why}");
            return None;
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "nif{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            peer: format!("{tag}-peer"),
            x: format!("{tag}-x"),
            y: format!("{tag}-y"),
            created: Vec::new(),
        };
        let sw = format!("{tag}-sw");
        for ns in [&sw, &lab.peer, &lab.x, &lab.y] {
            ip(&["netns", "add", ns]);
            lab.created.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        let hosts = [
            ("peer", &lab.peer, PEER_MAC, PEER_IP),
            ("x", &lab.x, X_MAC, X_IP),
            ("y", &lab.y, Y_MAC, Y_IP),
        ];
        for (port, ns, mac, addr) in hosts {
            ip(&[
                "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", DEV, "netns", ns,
            ]);
            ip(&["-n", &sw, "link", "set", port, "master", "br0", "up"]);
            ip(&["-n", ns, "link", "set", DEV, "address", mac, "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", DEV]);
        }
        Some(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.created {
            // Best effort: a failure here must not turn a passing test into a panic in drop.
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`ip -V` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Some(format!("no `ip` command (iproute2): {e}")),
    }
}

/// Runs `ip ARGS`, panicking with its stderr on failure; returns its stdout.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `ip ARGS` until its output satisfies `ok` or `within` passes; returns the last output.
pub fn ip_until(args: &[&str], within: Duration, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let out = ip(args);
        if ok(&out) || Instant::now() >= deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `f` on a new thread inside namespace `ns` with a current-thread tokio runtime: the
/// network namespace is per thread, and sockets opened there stay in it wherever they are used.
pub fn spawn_in_ns<T, Fut>(ns: &str, f: impl FnOnce() -> Fut + Send + 'static) -> JoinHandle<T>
where
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(f())
    })
}

/// Runs `f` inside namespace `ns` (see [`spawn_in_ns`]) and returns its result; a panic in `f`
/// fails the calling test.
pub fn in_ns<T, Fut>(ns: &str, f: impl FnOnce() -> Fut + Send + 'static) -> T
where
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    join(spawn_in_ns(ns, f))
}

pub fn join<T>(handle: JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
