//! A twin pair (SPEC §7) in its lab ([`super::netns`]): two sbcd processes, node-a (node_id 1)
//! and node-b (node_id 2), with the core's SIPp UAS as their upstream; what twin_lab.rs and
//! twin_hot.rs share.
//!
//! - [`node_toml`] / [`node_toml_with`]: a node's sbc.toml, with [`TwinOptions`] (mode,
//!   preempt) when the test sets them (unset keys are left out, sbcd's defaults apply).
//! - [`Pair`]: both nodes started together (an election) or node-a alone first; waits for one
//!   owner; kills a node as a dead box dies (its ports down); restarts it in the same lab.
//! - [`core_uas`], [`phone_call`], [`first_sip_answer`]: SIP from the phones' and the core's
//!   namespaces.
//!
//! Each test builds its own lab and the tests of a binary run one at a time ([`serial`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::daemon::Sbcd;
use super::netns::{in_ns, ip, TwinLab, ACCESS_SERVICE, CORE_IP, CORE_SERVICE, PHONE_IP};
use super::sipp::{Sipp, SippOutcome, SippRun};
use super::{wait_for, PATIENCE};

/// SIP on the service addresses.
pub const SIP_PORT: u16 = 5060;
/// The core's SIPp UAS.
pub const UAS_PORT: u16 = 5070;
/// The phones' SIPp UAC.
pub const PHONE_PORT: u16 = 5061;

/// One lab at a time (the failure detector works in tenths of a second: two labs' worth of
/// daemons on a loaded two-core machine would measure the machine); a failed test must not
/// stop the others.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// `[twin] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Hot,
    Cold,
}

/// What a test may vary in a pair; `None` leaves the key out of sbc.toml (sbcd's default).
#[derive(Debug, Clone, Copy, Default)]
pub struct TwinOptions {
    /// `[twin] mode`.
    pub mode: Option<Mode>,
    /// `[twin] preempt`.
    pub preempt: Option<bool>,
    /// Start node-a alone (it takes the addresses after the detection time, hearing no twin),
    /// then node-b, instead of both at once (an election).
    pub a_first: bool,
    /// The core's scenario instead of uas_answer.xml (e.g. uas_answer_reinvite.xml).
    pub core_scenario: Option<&'static str>,
}

impl TwinOptions {
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    pub fn preempt(mut self, preempt: bool) -> Self {
        self.preempt = Some(preempt);
        self
    }

    pub fn a_first(mut self) -> Self {
        self.a_first = true;
        self
    }

    pub fn core_scenario(mut self, scenario: &'static str) -> Self {
        self.core_scenario = Some(scenario);
        self
    }
}

/// sbc.toml for node `i` (0 = node-a) of the lab, in `dir`; with the `[twin]` section when
/// `twin` is given (the path of the key file).
pub fn node_toml(dir: &Path, i: usize, twin: Option<&Path>) -> String {
    node_toml_with(dir, i, twin, &TwinOptions::default())
}

/// [`node_toml`] with the `[twin]` keys of `options`.
pub fn node_toml_with(dir: &Path, i: usize, twin: Option<&Path>, options: &TwinOptions) -> String {
    let mut t = format!(
        "[node]\nname = \"sbc-{name}\"\n\n\
         [[listen]]\nrealm = \"access\"\ntransport = \"udp\"\naddr = \"{ACCESS_SERVICE}:{SIP_PORT}\"\n\n\
         [[listen]]\nrealm = \"core\"\ntransport = \"udp\"\naddr = \"{CORE_SERVICE}:{SIP_PORT}\"\n\n\
         [[upstream]]\nuri = \"sip:{CORE_IP}:{UAS_PORT};transport=udp\"\npriority = 1\n\n\
         [upstream_policy]\nupstream_timeout_ms = 1000\nprobe_interval_secs = 1\n\n\
         [drain]\nguard_secs = 60\nretry_after_secs = 30\nreg_reject_code = 503\n\
         priority_namespaces = [\"ets\", \"wps\"]\n\n\
         [control]\nsocket = \"{socket}\"\n\n[state]\ndir = \"{state}\"\n\n[panel]\nboard = \"sim\"\n\n\
         [sip]\nworkers = 1\n",
        name = ["a", "b"][i],
        socket = dir.join("control.sock").display(),
        state = dir.join("state").display(),
    );
    if let Some(key_file) = twin {
        let (me, peer) = (i, 1 - i);
        let link = super::netns::NODE_LINK;
        let access = super::netns::NODE_ACCESS;
        t.push_str(&format!(
            "\n[twin]\nnode_id = {id}\ninterval_ms = 100\nmisses = 3\nkey_file = \"{key}\"\n",
            id = i + 1,
            key = key_file.display(),
        ));
        match options.mode {
            Some(Mode::Hot) => t.push_str("mode = \"hot\"\n"),
            Some(Mode::Cold) => t.push_str("mode = \"cold\"\n"),
            None => {}
        }
        if let Some(preempt) = options.preempt {
            t.push_str(&format!("preempt = {preempt}\n"));
        }
        t.push_str(&format!(
            "link = {{ local = \"{}:7700\", peer = \"{}:7700\" }}\n\
             second_path = {{ local = \"{}:7700\", peer = \"{}:7700\" }}\n\n\
             [[twin.service_address]]\naddr = \"{ACCESS_SERVICE}/24\"\ndev = \"eth0\"\n\n\
             [[twin.service_address]]\naddr = \"{CORE_SERVICE}/24\"\ndev = \"eth1\"\n",
            link[me], link[peer], access[me], access[peer],
        ));
    }
    t
}

/// The core: SIPp answering calls, REGISTERs (as the registrar, logging each as `register`) and
/// sbcd's OPTIONS probes at 198.51.100.20:5070.
pub fn core_uas(lab: &TwinLab) -> SippRun {
    core_uas_with(lab, "uas_answer.xml")
}

/// The core's UAS running `scenario`, as [`core_uas`].
pub fn core_uas_with(lab: &TwinLab, scenario: &str) -> SippRun {
    Sipp::uas(scenario)
        .in_netns(&lab.core, CORE_IP)
        .on_port(UAS_PORT)
        .time_limit(Duration::from_secs(300))
        .start()
}

/// One call from the phones through the access service address to the core, held 100 ms.
pub fn phone_call(lab: &TwinLab, caller: &str) -> SippOutcome {
    Sipp::uac("uac_call.xml", SocketAddr::from((ACCESS_SERVICE, SIP_PORT)))
        .in_netns(&lab.phones, PHONE_IP)
        .on_port(PHONE_PORT)
        .service("core-user")
        .key("caller", caller)
        .calls(1)
        .hold_ms(100)
        .time_limit(Duration::from_secs(20))
        .run()
}

/// An OPTIONS to the box itself at `to`, from `from_port` of the phones' address.
pub fn options_to_the_box(to: SocketAddr, from_port: u16, n: u32) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {PHONE_IP}:{from_port};branch=z9hG4bK-lab-{n}\r\n\
         From: <sip:lab@{PHONE_IP}:{from_port}>;tag=lab-{n}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: lab-options-{n}@{PHONE_IP}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// From the phones' namespace, sends an OPTIONS to the access service address every 20 ms
/// (each a new transaction) until one is answered; returns when the first answer arrived and
/// its status line. Panics after `within`.
pub fn first_sip_answer(lab: &TwinLab, within: Duration) -> (Instant, String) {
    in_ns(&lab.phones, move || {
        let socket = UdpSocket::bind((PHONE_IP, 0)).expect("bind in the phones' namespace");
        let port = socket.local_addr().expect("bound").port();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("set a read timeout");
        let to = SocketAddr::from((ACCESS_SERVICE, SIP_PORT));
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        for n in 0u32.. {
            assert!(
                Instant::now() < deadline,
                "no SIP answer from {to} within {within:?}"
            );
            // While nobody holds the address the send may fail (no ARP answer): try again.
            let _ = socket.send_to(options_to_the_box(to, port, n).as_bytes(), to);
            let sent = Instant::now();
            while sent.elapsed() < Duration::from_millis(20) {
                if let Ok((len, _)) = socket.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                    if text.starts_with("SIP/2.0 ") {
                        let status = text.lines().next().unwrap_or_default().to_owned();
                        return (Instant::now(), status);
                    }
                }
            }
        }
        unreachable!("the loop returns or panics")
    })
}

/// A twin pair in its lab. Fields drop in order: the daemons and the core before the lab.
pub struct Pair {
    pub nodes: [Sbcd; 2],
    /// The core's SIPp UAS ([`core_uas`]).
    pub core: SippRun,
    pub lab: TwinLab,
    pub options: TwinOptions,
}

/// node-a or node-b, for messages.
pub fn name(i: usize) -> &'static str {
    ["node-a", "node-b"][i]
}

impl Pair {
    /// Both nodes started at once (an election: node 1 becomes active), then waits until node-a
    /// is active with the addresses and node-b standby hearing it.
    pub fn start() -> Option<Pair> {
        Pair::start_with(TwinOptions::default())
    }

    /// As [`Pair::start`] with `options`; with [`TwinOptions::a_first`], node-a starts alone and
    /// takes the addresses (no twin heard for the detection time), then node-b joins it.
    pub fn start_with(options: TwinOptions) -> Option<Pair> {
        let lab = TwinLab::new()?;
        let core = core_uas_with(&lab, options.core_scenario.unwrap_or("uas_answer.xml"));
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).expect("32 random bytes for the twin key");
        let start_node = |i: usize, ns: &str| {
            Sbcd::start_in_netns(ns, |dir| {
                let key_file = dir.join("twin.key");
                write_key(&key_file, &key);
                node_toml_with(dir, i, Some(&key_file), &options)
            })
        };
        let t0 = Instant::now();
        let nodes: [Sbcd; 2] = if options.a_first {
            let a = start_node(0, &lab.nodes[0]);
            let alone = wait_for(
                "node-a, started alone, to take the service addresses",
                PATIENCE,
                || {
                    Some(a.twin()).filter(|s| {
                        s.role == twin::Role::Active
                            && s.owns_addresses
                            && lab.node_owns_services(0)
                    })
                },
            );
            eprintln!(
                "twin lab: node-a alone active {:?} after it started ({:?})",
                t0.elapsed(),
                alone.last_takeover
            );
            let b = start_node(1, &lab.nodes[1]);
            [a, b]
        } else {
            let started: Vec<Sbcd> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..2)
                    .map(|i| {
                        let ns = lab.nodes[i].clone();
                        let start_node = &start_node;
                        s.spawn(move || start_node(i, &ns))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            });
            started.try_into().expect("two nodes")
        };
        let pair = Pair {
            nodes,
            core,
            lab,
            options,
        };
        let [a, _] = pair.wait_one_owner(0, "the start");
        eprintln!(
            "twin lab: node-a active, node-b standby {:?} after the start ({:?})",
            t0.elapsed(),
            a.last_takeover
        );
        Some(pair)
    }

    pub fn twin(&self, i: usize) -> twin::Status {
        self.nodes[i].twin()
    }

    /// Waits until node `owner` is active with both addresses (show twin and `ip addr` agree),
    /// the other standby without them, and each hears the other.
    pub fn wait_one_owner(&self, owner: usize, what: &str) -> [twin::Status; 2] {
        let other = 1 - owner;
        wait_for(
            &format!(
                "{} alone to own the service addresses after {what}",
                name(owner)
            ),
            PATIENCE,
            || {
                let (o, s) = (self.twin(owner), self.twin(other));
                let settled = o.role == twin::Role::Active
                    && o.owns_addresses
                    && s.role == twin::Role::Standby
                    && !s.owns_addresses
                    && hears(&o, twin::Role::Standby)
                    && hears(&s, twin::Role::Active)
                    && self.lab.node_owns_services(owner)
                    && self.lab.node_owns_no_service(other);
                settled.then_some(if owner == 0 { [o, s] } else { [s, o] })
            },
        )
    }

    /// Asserts that node `owner` is active with the addresses and the other standby without,
    /// in show twin and in the kernel.
    pub fn assert_owner(&self, owner: usize, when: &str) {
        let other = 1 - owner;
        let (o, s) = (self.twin(owner), self.twin(other));
        assert!(
            o.role == twin::Role::Active && o.owns_addresses,
            "{when}: {} is no longer the owner: {o:#?}",
            name(owner)
        );
        assert!(
            s.role == twin::Role::Standby && !s.owns_addresses,
            "{when}: {} is no longer standby: {s:#?}",
            name(other)
        );
        assert!(
            self.lab.node_owns_services(owner),
            "{when}: {} lost its addresses",
            name(owner)
        );
        assert!(
            self.lab.node_owns_no_service(other),
            "{when}: {} holds addresses",
            name(other)
        );
    }

    /// Keep-alives node `i` received so far, on `path` or on both.
    pub fn received(&self, i: usize, path: Option<twin::PathId>) -> u64 {
        let status = self.twin(i);
        match path {
            None => status.totals.received,
            Some(p) => path_of(&status, p).counters.received,
        }
    }

    /// Waits until node `i` received `n` more keep-alives (on `path`, or on any): how the tests
    /// let time pass when they show that nothing happens.
    pub fn wait_keepalives(&self, i: usize, path: Option<twin::PathId>, n: u64) {
        let start = self.received(i, path);
        let t0 = Instant::now();
        wait_for(
            &format!("{} to receive {n} more keep-alives on {path:?}", name(i)),
            PATIENCE,
            || (self.received(i, path) >= start + n).then_some(()),
        );
        eprintln!(
            "twin lab: {} received {n} keep-alives on {path:?} in {:?}",
            name(i),
            t0.elapsed()
        );
    }

    /// `kill -9` of node `i`, and its access and core ports down: a killed process leaves its
    /// addresses on its interfaces, and the kernel would keep answering ARP for them (the
    /// survivor's probe would rightly find them taken). A box that died answers nothing.
    /// Returns when the signal was sent.
    pub fn kill(&mut self, i: usize) -> Instant {
        let killed = self.nodes[i].kill9();
        let ns = &self.lab.nodes[i];
        ip(&["-n", ns, "link", "set", "eth0", "down"]);
        ip(&["-n", ns, "link", "set", "eth1", "down"]);
        killed
    }

    /// Boots node `i` again after [`Pair::kill`]: as a box that restarts, its interfaces come
    /// up without the service addresses the dead process left there, and sbcd starts on the
    /// same sbc.toml and key; on the state directory it had (`fresh_state` false: it reads it
    /// and gets a new boot epoch) or on an empty one (a replaced box). Returns once sbcd logged
    /// `sbcd: listening`.
    pub fn restart(&mut self, i: usize, fresh_state: bool) {
        let ns = self.lab.nodes[i].clone();
        for (dev, addr) in [("eth0", ACCESS_SERVICE), ("eth1", CORE_SERVICE)] {
            if self.lab.node_has(i, dev, addr) {
                ip(&["-n", &ns, "addr", "del", &format!("{addr}/24"), "dev", dev]);
            }
            ip(&["-n", &ns, "link", "set", dev, "up"]);
        }
        if fresh_state {
            let state = self.nodes[i].dir().join("state");
            if state.exists() {
                std::fs::remove_dir_all(&state).expect("remove the state directory");
            }
        }
        self.nodes[i].start_again();
    }
}

/// Whether `status` hears its twin, alive, in `role`.
pub fn hears(status: &twin::Status, role: twin::Role) -> bool {
    status
        .twin
        .as_ref()
        .is_some_and(|t| t.alive && t.role == role)
}

pub fn path_of(status: &twin::Status, path: twin::PathId) -> &twin::PathStatus {
    status
        .paths
        .iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| panic!("no path {path:?} in {status:#?}"))
}

/// The twin key, mode 0600 as sbcd demands.
pub fn write_key(path: &Path, key: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create the key file");
    file.write_all(key).expect("write the key file");
}

/// Loads an nftables ruleset into namespace `ns` (`nft -f -` run there); `what` names it in the
/// failure message.
pub fn nft_in(ns: &str, rules: &str, what: &str) {
    use std::io::Write as _;
    let mut nft = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run nft in the node's namespace");
    nft.stdin
        .take()
        .expect("nft's stdin")
        .write_all(rules.as_bytes())
        .expect("write the rules");
    assert!(
        nft.wait().expect("nft ends").success(),
        "nft refused {what}"
    );
}
