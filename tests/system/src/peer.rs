//! The peer guest of `cargo xtask peer` from a test, and the SCTP lab's cables: the appliance's
//! access and core ports wired to the peer's eth0 and eth1 over QEMU datagram sockets on the
//! host's 127.0.0.1 (`cargo xtask qemu --link`, `cargo xtask peer --net`).
//!
//! ```text
//!   appliance (board addresses, firewall on)         peer (busybox, SIPp, kernel SCTP)
//!   eth0 access 10.0.2.15/24  <- dgram cable ->  eth0 10.0.2.20/24  the phones
//!   eth1 core   10.0.3.15/24  <- dgram cable ->  eth1 10.0.3.2/24   the core: the factory
//!                                                                   upstream sip:10.0.3.2:25070
//! ```
//!
//! The box keeps its own addresses and firewall (and its configuration, unless the test gives
//! one with `cargo xtask qemu --config`): the peer stands where the phones and the core stand on
//! QEMU's user networks, and carries what those cannot (SCTP). A script
//! runs in the peer with the files it is given; [`Peer::release`] answers its `peer-await WORD`
//! once the test knows the box is ready, and [`Peer::finish`] returns its console once it
//! powered off. Nothing sleeps: waits end on console lines or on QEMU's exit.

use crate::{free_port, xtask_visible, Guest, PrintedCommand};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The peer's address on the access link (the phones' side).
pub const PHONE_ADDR: &str = "10.0.2.20";
/// The peer's address on the core link: the factory configuration's upstream host.
pub const CORE_ADDR: &str = "10.0.3.2";
/// The appliance's access and core addresses (image/board/qemu: networkd and sbc.toml).
pub const BOX_ACCESS_ADDR: &str = "10.0.2.15";
pub const BOX_CORE_ADDR: &str = "10.0.3.15";

/// The UDP ports of the lab's two cables on 127.0.0.1, each end's own.
#[derive(Debug, Clone, Copy)]
pub struct Cables {
    access_box: u16,
    access_peer: u16,
    core_box: u16,
    core_peer: u16,
}

impl Cables {
    /// Four different ports, free at the time of asking.
    pub fn new() -> Cables {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 4 {
            // Each probe socket is closed again, so the kernel may hand out a port twice.
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        Cables {
            access_box: ports[0],
            access_peer: ports[1],
            core_box: ports[2],
            core_peer: ports[3],
        }
    }

    /// `cargo xtask qemu` arguments: the box's access and core ports on the cables.
    pub fn appliance_args(&self) -> Vec<String> {
        vec![
            "--link".into(),
            format!("access={}:{}", self.access_box, self.access_peer),
            "--link".into(),
            format!("core={}:{}", self.core_box, self.core_peer),
        ]
    }

    /// `cargo xtask peer` arguments: eth0 on the access cable, eth1 on the core cable.
    pub fn peer_args(&self) -> Vec<String> {
        vec![
            "--net".into(),
            format!("{PHONE_ADDR}/24:{}:{}", self.access_peer, self.access_box),
            "--net".into(),
            format!("{CORE_ADDR}/24:{}:{}", self.core_peer, self.core_box),
        ]
    }
}

impl Default for Cables {
    fn default() -> Self {
        Cables::new()
    }
}

/// What the peer guest runs and carries.
#[derive(Debug, Clone, Default)]
pub struct PeerSpec {
    /// The shell script, run as `/peer/run` in `/tmp`.
    pub script: String,
    /// Host programs copied to `/usr/bin` with their libraries (SIPp: `/usr/bin/sipp`).
    pub bins: Vec<PathBuf>,
    /// Host files and where the guest finds them (scenarios: `/peer/NAME.xml`).
    pub files: Vec<(PathBuf, String)>,
    /// More `cargo xtask peer` arguments (the cables' `--net`s).
    pub args: Vec<String>,
}

/// A running peer guest; QEMU is killed when it is dropped.
#[derive(Debug)]
pub struct Peer {
    pub guest: Guest,
}

impl Peer {
    /// Writes the script into `dir`, has `cargo xtask peer` make the guest, and starts it.
    pub fn start(spec: &PeerSpec, dir: &Path) -> Peer {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let script = dir.join("run.sh");
        crate::write_file(&script, spec.script.as_bytes());
        let mut args: Vec<String> = vec![
            "peer".into(),
            "--script".into(),
            script.display().to_string(),
            "--out".into(),
            dir.join("guest").display().to_string(),
            "--print-command".into(),
        ];
        for bin in &spec.bins {
            args.push("--bin".into());
            args.push(bin.display().to_string());
        }
        for (src, dest) in &spec.files {
            args.push("--file".into());
            args.push(format!("{}:{dest}", src.display()));
        }
        args.extend(spec.args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let printed = xtask_visible(&args);
        assert!(
            printed.status.success(),
            "cargo xtask {} failed",
            args.join(" ")
        );
        let cmd = PrintedCommand::parse(&String::from_utf8_lossy(&printed.stdout));
        Peer {
            guest: Guest::start(&cmd),
        }
    }

    /// Waits until the script says `peer: await WORD`, then types WORD for it.
    pub fn release(&mut self, word: &str, timeout: Duration) -> Result<(), String> {
        self.guest
            .wait_for(&format!("peer: await {word}"), timeout)?;
        self.guest.type_line(word);
        Ok(())
    }

    /// Waits for the script's end and QEMU's exit; returns the whole console. An error when
    /// the script did not end, or QEMU did not exit cleanly, within `timeout`.
    pub fn finish(&mut self, timeout: Duration) -> Result<String, String> {
        self.guest.wait_for("peer: script exited", timeout)?;
        let status = self.guest.wait_exit(timeout)?;
        let console = self.guest.transcript_text();
        if !status.success() {
            return Err(format!("the peer's QEMU ended with {status}:\n{console}"));
        }
        Ok(console)
    }
}

/// Runs `spec` in a peer guest to its end (no `peer-await` in it): its console.
pub fn run_in_peer(spec: &PeerSpec, dir: &Path, timeout: Duration) -> Result<String, String> {
    Peer::start(spec, dir).finish(timeout)
}

/// The lines `lab: LABEL exit N` a peer script prints (see the SIPp helper of
/// tests/sctp_lab.rs): the exit status of step LABEL, if it ran.
pub fn step_exit(console: &str, label: &str) -> Option<i32> {
    let prefix = format!("lab: {label} exit ");
    console
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// One counter of the peer kernel's `/proc/net/sctp/snmp` from a console line
/// `snmp LABEL: NAME VALUE NAME VALUE ...` that a peer script printed (for instance with
/// `echo "snmp LABEL: $(grep -E '^Sctp' /proc/net/sctp/snmp | tr -s ' \t\n' ' ')"`).
pub fn sctp_counter(console: &str, label: &str, name: &str) -> Result<u64, String> {
    let prefix = format!("snmp {label}: ");
    let line = console
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .ok_or_else(|| format!("no {prefix:?} line on the peer's console"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .ok_or_else(|| format!("no {name} in {line:?}"))
}

/// [`sctp_counter`], or a panic that shows the console.
pub fn snmp(console: &str, label: &str, name: &str) -> u64 {
    sctp_counter(console, label, name).unwrap_or_else(|e| panic!("{e}:\n{console}"))
}
