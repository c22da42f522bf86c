//! The twin lab (SPEC §7) on the real kernel: network namespaces made by the test, and helpers to
//! run code and commands inside them.
//!
//! ```text
//!            lan: bridge "access" 192.0.2.0/24          bridge "core" 198.51.100.0/24
//!                 |ph        |a0        |b0              |a1        |b1        |co
//!   phones 192.0.2.50   node-a eth0  node-b eth0     node-a eth1  node-b eth1   core 198.51.100.20
//!                       .11          .12             .11          .12
//!                       node-a eth2 169.254.77.1/30 ===veth=== node-b eth2 169.254.77.2/30
//! ```
//!
//! Service addresses 192.0.2.10 (eth0) and 198.51.100.10 (eth1) belong to whichever node is
//! active. Every name carries the test process's pid and a sequence number, so parallel runs and
//! tests do not collide; dropping the [`TwinLab`] deletes every namespace (and with them every
//! veth and bridge), also when the test panics; a lab left by a test process that was killed
//! outright is deleted by the next one. Needs root, iproute2 and SIPp: without them the
//! tests skip, except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use nix::sched::{setns, CloneFlags};

pub const PHONE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
pub const CORE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// The access-side service address (on eth0 of the active node).
pub const ACCESS_SERVICE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The core-side service address (on eth1 of the active node).
pub const CORE_SERVICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// Node addresses: [node-a, node-b] on eth0, eth1 and eth2.
pub const NODE_ACCESS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 11), Ipv4Addr::new(192, 0, 2, 12)];
pub const NODE_CORE: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 11),
    Ipv4Addr::new(198, 51, 100, 12),
];
pub const NODE_LINK: [Ipv4Addr; 2] = [
    Ipv4Addr::new(169, 254, 77, 1),
    Ipv4Addr::new(169, 254, 77, 2),
];
/// Fixed MACs, so a neighbour entry names its owner: [node-a, node-b] eth0 and eth1.
pub const NODE_ETH0_MAC: [&str; 2] = ["02:00:00:00:0a:00", "02:00:00:00:0b:00"];
pub const NODE_ETH1_MAC: [&str; 2] = ["02:00:00:00:0a:01", "02:00:00:00:0b:01"];
const PHONE_MAC: &str = "02:00:00:00:50:00";
const CORE_MAC: &str = "02:00:00:00:20:00";

/// The namespaces of one lab; dropping it deletes them.
#[derive(Debug)]
pub struct TwinLab {
    /// Holds the two bridges; its ports to node X are `a0`/`a1` (node-a) and `b0`/`b1` (node-b).
    pub lan: String,
    pub phones: String,
    pub core: String,
    /// [node-a, node-b].
    pub nodes: [String; 2],
    created: Vec<String>,
}

impl TwinLab {
    /// Builds the lab, or `None` (after saying why) where the machine cannot; under `CI=true`
    /// that is a failure instead.
    pub fn new() -> Option<TwinLab> {
        if let Some(why) = missing_prerequisite() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("twin lab unavailable under CI=true: {why}");
            }
            eprintln!("SKIPPED: twin lab unavailable: {why}");
            return None;
        }
        sweep_dead_labs();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "tl{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = TwinLab {
            lan: format!("{tag}-lan"),
            phones: format!("{tag}-phones"),
            core: format!("{tag}-core"),
            nodes: [format!("{tag}-node-a"), format!("{tag}-node-b")],
            created: Vec::new(),
        };
        let all = [
            lab.lan.clone(),
            lab.phones.clone(),
            lab.core.clone(),
            lab.nodes[0].clone(),
            lab.nodes[1].clone(),
        ];
        for ns in &all {
            ip(&["netns", "add", ns]);
            lab.created.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let lan = lab.lan.clone();
        for bridge in ["access", "core"] {
            ip(&["-n", &lan, "link", "add", bridge, "type", "bridge"]);
            // No STP, no forwarding delay: a port forwards as soon as it is up.
            ip(&[
                "-n",
                &lan,
                "link",
                "set",
                bridge,
                "type",
                "bridge",
                "forward_delay",
                "0",
            ]);
            ip(&["-n", &lan, "link", "set", bridge, "up"]);
        }
        let hosts: [(&str, &str, &str, &str, &str, String); 6] = [
            (
                "ph",
                "access",
                &lab.phones,
                "eth0",
                PHONE_MAC,
                format!("{PHONE_IP}/24"),
            ),
            (
                "co",
                "core",
                &lab.core,
                "eth0",
                CORE_MAC,
                format!("{CORE_IP}/24"),
            ),
            (
                "a0",
                "access",
                &lab.nodes[0],
                "eth0",
                NODE_ETH0_MAC[0],
                format!("{}/24", NODE_ACCESS[0]),
            ),
            (
                "b0",
                "access",
                &lab.nodes[1],
                "eth0",
                NODE_ETH0_MAC[1],
                format!("{}/24", NODE_ACCESS[1]),
            ),
            (
                "a1",
                "core",
                &lab.nodes[0],
                "eth1",
                NODE_ETH1_MAC[0],
                format!("{}/24", NODE_CORE[0]),
            ),
            (
                "b1",
                "core",
                &lab.nodes[1],
                "eth1",
                NODE_ETH1_MAC[1],
                format!("{}/24", NODE_CORE[1]),
            ),
        ];
        for (port, bridge, ns, dev, mac, addr) in &hosts {
            ip(&[
                "-n", &lan, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns,
            ]);
            ip(&["-n", &lan, "link", "set", port, "master", bridge, "up"]);
            ip(&["-n", ns, "link", "set", dev, "address", mac, "up"]);
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        }
        // The cross-connect: one veth pair straight from node-a to node-b.
        let (a, b) = (&lab.nodes[0], &lab.nodes[1]);
        ip(&[
            "-n", a, "link", "add", "eth2", "type", "veth", "peer", "name", "eth2", "netns", b,
        ]);
        for (i, ns) in [a, b].into_iter().enumerate() {
            ip(&["-n", ns, "link", "set", "eth2", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/30", NODE_LINK[i]),
                "dev",
                "eth2",
            ]);
        }
        Some(lab)
    }

    /// The bridge ports (in `lan`) of node `i` (0 = node-a): eth0's and eth1's.
    pub fn bridge_ports(&self, i: usize) -> [&'static str; 2] {
        [["a0", "a1"], ["b0", "b1"]][i]
    }

    /// Whether node `i`'s `dev` carries `addr` right now (`ip addr show`).
    pub fn node_has(&self, i: usize, dev: &str, addr: Ipv4Addr) -> bool {
        has_address(&self.nodes[i], dev, addr)
    }

    /// Which service addresses node `i` carries: (access on eth0, core on eth1).
    pub fn node_services(&self, i: usize) -> (bool, bool) {
        (
            self.node_has(i, "eth0", ACCESS_SERVICE),
            self.node_has(i, "eth1", CORE_SERVICE),
        )
    }

    /// Whether node `i` carries both service addresses.
    pub fn node_owns_services(&self, i: usize) -> bool {
        self.node_services(i) == (true, true)
    }

    /// Whether node `i` carries neither service address.
    pub fn node_owns_no_service(&self, i: usize) -> bool {
        self.node_services(i) == (false, false)
    }

    /// The MAC the phones' namespace has for `addr` (`ip neigh`), if any (in any state but
    /// FAILED/INCOMPLETE).
    pub fn phones_neighbour(&self, addr: Ipv4Addr) -> Option<String> {
        neighbour(&self.phones, addr)
    }
}

impl Drop for TwinLab {
    fn drop(&mut self) {
        for ns in &self.created {
            // Best effort: a failure here must not turn a passing test into a panic in drop.
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Deletes the namespaces of labs whose test process is gone: a test killed outright (SIGKILL,
/// a CI timeout) never ran its `Drop`. A name is `tl<pid>-<n>-<role>`; a pid that runs (even a
/// reused one) keeps its namespaces.
fn sweep_dead_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("tl")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("twin lab: deleting {name}, left by a test process that is gone");
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Some(format!(
                "`ip -V` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
        Err(e) => return Some(format!("no `ip` command (iproute2): {e}")),
    }
    match Command::new("sipp").arg("-v").output() {
        Ok(_) => None,
        Err(e) => Some(format!("no `sipp` (Debian package sip-tester): {e}")),
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

/// Whether `dev` in namespace `ns` carries the IPv4 address `addr`.
pub fn has_address(ns: &str, dev: &str, addr: Ipv4Addr) -> bool {
    let out = ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", dev]);
    let needle = format!("inet {addr}/");
    out.contains(&needle)
}

/// The link-layer address namespace `ns` has for `addr`, unless it has none or a failed one.
pub fn neighbour(ns: &str, addr: Ipv4Addr) -> Option<String> {
    let out = ip(&["-n", ns, "neigh", "show", &addr.to_string()]);
    let line = out.lines().next()?;
    if line.contains("FAILED") || line.contains("INCOMPLETE") {
        return None;
    }
    let mut words = line.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_owned)
}

/// Starts `f` on a new thread inside namespace `ns`: the network namespace is per thread, and
/// sockets opened there stay in it wherever they are used.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

/// Runs `f` inside namespace `ns` (see [`spawn_in_ns`]) and returns its result; a panic in `f`
/// fails the calling test.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    join(spawn_in_ns(ns, f))
}

pub fn join<T>(handle: JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Whether the process `pid` sees a UDP socket bound to `port` in its network namespace
/// (`/proc/PID/net/udp` lists the sockets of the namespace the process is in).
pub fn udp_port_bound_in_ns_of(pid: u32, port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    std::fs::read_to_string(format!("/proc/{pid}/net/udp"))
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(1))
                .any(|local| format!("{local} ").ends_with(&needle))
        })
        .unwrap_or(false)
}
