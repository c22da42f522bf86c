//! The twin's shell (SPEC §7): everything the pure `twin` machine (inside the `node` core)
//! cannot do itself. It reads the key file and the boot epoch, binds the keep-alive sockets on
//! the cross-connect and the second path, and carries out the twin's address actions on the
//! kernel: ARP probe, address added, gratuitous ARP, address removed, through `netif`.
//!
//! It decides nothing: when to take over, when to yield and what a keep-alive says are the
//! twin machine's; this module only does what it is told, in order, and reports the probes'
//! findings back.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::config;

/// Where the boot epoch is kept, in the state directory: it must grow across restarts so the
/// twin can tell our restart from a replay of our old keep-alives.
const EPOCH_FILE: &str = "twin-epoch";

/// RFC 5227's probe scaled by 1/100 (PROBE_MIN..MAX 1-2 s → 15 ms, ANNOUNCE_WAIT 2 s → 20 ms):
/// on the twin's LANs a holder answers within a millisecond, and the probe is part of every
/// takeover's time (`cargo xtask bench twin`: 84 ms median with netif's 20 ms / 40 ms defaults).
const PROBE: netif::ProbeTiming = netif::ProbeTiming {
    probes: 3,
    interval: Duration::from_millis(15),
    wait: Duration::from_millis(20),
};

/// How many gratuitous ARPs one `Announce` sends per address: the twin machine repeats the
/// action itself (a burst, then again after a second).
const ARPS_PER_ANNOUNCE: u32 = 1;

/// Why the twin could not start.
#[derive(Debug, thiserror::Error)]
pub enum TwinStartError {
    #[error("[twin] key_file: {0}")]
    KeyFile(#[from] netif::KeyFileError),
    #[error("[twin] key_file {path}: {source}")]
    Key {
        path: PathBuf,
        source: twin::KeyError,
    },
    #[error("[twin]: {0}")]
    Config(#[from] twin::ConfigError),
    #[error("twin boot epoch in {path}: {source}")]
    Epoch {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("twin keep-alive socket on {addr}: {source}")]
    Socket {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// One keep-alive path: our socket and the twin's address on it.
#[derive(Debug)]
pub struct PathSocket {
    pub path: twin::PathId,
    pub socket: tokio::net::UdpSocket,
    pub peer: SocketAddr,
}

/// The twin, ready to run: its machine's configuration and what the shell needs.
#[derive(Debug)]
pub struct TwinSetup {
    pub config: twin::Config,
    pub boot_epoch: u64,
    /// The twin key's bytes: the replication stream's key and the source of the route key the
    /// pair shares.
    pub key: Vec<u8>,
    /// Hot or cold standby.
    pub mode: replica::Mode,
    /// The cross-connect's addresses: the replication stream runs there (TCP, same port).
    pub link: config::TwinPath,
    /// The standard sockets, made tokio sockets on the engine's runtime by [`PathSockets::open`].
    pub sockets: Vec<(twin::PathId, std::net::UdpSocket, SocketAddr)>,
    /// Each service address's interface and prefix length.
    pub devices: HashMap<IpAddr, (String, u8)>,
}

/// Reads `[twin]`: the key (mode checked), a new boot epoch (saved before use), the keep-alive
/// sockets (bound with `IP_FREEBIND`: the node's own addresses may come up after sbcd).
pub fn prepare(twin: &config::Twin, state_dir: &Path) -> Result<TwinSetup, TwinStartError> {
    let key_bytes = netif::read_key_file(&twin.key_file)?;
    let key = twin::Key::new(key_bytes.clone()).map_err(|source| TwinStartError::Key {
        path: twin.key_file.clone(),
        source,
    })?;
    let service: Vec<IpAddr> = twin.service_address.iter().map(|s| s.addr.ip).collect();
    let mut machine = twin::Config::new(twin::NodeId(twin.node_id.0), key, service);
    machine.interval = Duration::from_millis(twin.interval_ms.0);
    machine.misses = u32::try_from(twin.misses.0).unwrap_or(u32::MAX);
    machine.preempt = twin.preempt;
    machine.second_path = twin.second_path.is_some();
    machine.validate()?;

    let boot_epoch = next_epoch(state_dir)?;
    let mut sockets = Vec::new();
    let paths = std::iter::once((twin::PathId::Link, twin.link))
        .chain(twin.second_path.map(|p| (twin::PathId::Second, p)));
    for (path, addrs) in paths {
        let socket = netif::bind_udp_freebind(addrs.local)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|source| TwinStartError::Socket {
                addr: addrs.local,
                source,
            })?;
        sockets.push((path, socket, addrs.peer));
    }
    let devices = twin
        .service_address
        .iter()
        .map(|s| (s.addr.ip, (s.dev.clone(), s.addr.prefix)))
        .collect();
    Ok(TwinSetup {
        config: machine,
        boot_epoch,
        key: key_bytes,
        mode: match twin.mode {
            config::TwinMode::Hot => replica::Mode::Hot,
            config::TwinMode::Cold => replica::Mode::Cold,
        },
        link: twin.link,
        sockets,
        devices,
    })
}

/// A boot epoch above every one used before: the saved one plus one, or the Unix time in
/// seconds when that is larger (a lost state directory must not make the twin see replays).
fn next_epoch(state_dir: &Path) -> Result<u64, TwinStartError> {
    let path = state_dir.join(EPOCH_FILE);
    let saved = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let epoch = saved.saturating_add(1).max(wall);
    let temp = state_dir.join(format!(".{EPOCH_FILE}.tmp"));
    crate::health::write_durably(state_dir, &temp, &path, format!("{epoch}\n").as_bytes())
        .map_err(|source| TwinStartError::Epoch { path, source })?;
    Ok(epoch)
}

/// Every keep-alive socket as a tokio socket (on the runtime that polls them).
pub fn open_paths(
    sockets: Vec<(twin::PathId, std::net::UdpSocket, SocketAddr)>,
) -> std::io::Result<Vec<PathSocket>> {
    sockets
        .into_iter()
        .map(|(path, socket, peer)| {
            Ok(PathSocket {
                path,
                socket: tokio::net::UdpSocket::from_std(socket)?,
                peer,
            })
        })
        .collect()
}

/// Removes every service address from its interface: a node starts standby and owns nothing
/// until the twin machine says so (a restart after a crash may find them still there).
pub async fn release_all(devices: &HashMap<IpAddr, (String, u8)>) {
    let addresses = match netif::Addresses::open() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "twin: cannot open netlink to release the service addresses");
            return;
        }
    };
    for (ip, (dev, _)) in devices {
        if let Err(e) = addresses.remove_address(dev, *ip).await {
            tracing::error!(error = %e, "twin: cannot release a service address at start");
        }
    }
}

/// What the address task reports back to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionDone {
    /// A `Probe` found these addresses in use, for `Node::handle_probe_result`.
    Probed(Vec<IpAddr>),
    /// An `Announce` went out, for `Node::handle_addresses_announced`.
    Announced,
}

/// Starts the task that carries out the twin's address actions in order, on the current
/// runtime (the control plane's). What it did comes back on the returned receiver: one
/// message per `Probe` and per `Announce`.
pub fn spawn_actions(
    devices: HashMap<IpAddr, (String, u8)>,
) -> (
    mpsc::UnboundedSender<twin::AddressAction>,
    mpsc::UnboundedReceiver<ActionDone>,
) {
    let (actions_tx, mut actions) = mpsc::unbounded_channel::<twin::AddressAction>();
    let (found_tx, found) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let addresses = match netif::Addresses::open() {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(error = %e, "twin: cannot open netlink; service addresses cannot be claimed");
                None
            }
        };
        let mut arp: HashMap<String, netif::ArpSocket> = HashMap::new();
        while let Some(action) = actions.recv().await {
            match action {
                twin::AddressAction::Probe(ips) => {
                    let conflicts = probe_all(&mut arp, &devices, ips).await;
                    let _ = found_tx.send(ActionDone::Probed(conflicts));
                }
                twin::AddressAction::Claim(ips) => {
                    for ip in ips {
                        let Some((dev, prefix)) = devices.get(&ip) else {
                            continue;
                        };
                        let added = match &addresses {
                            Some(a) => a
                                .add_address(dev, ip, *prefix)
                                .await
                                .map_err(|e| e.to_string()),
                            None => Err("no netlink connection".to_owned()),
                        };
                        match added {
                            Ok(()) => {
                                tracing::warn!(%ip, dev = %dev, "twin: service address claimed")
                            }
                            Err(e) => {
                                tracing::error!(%ip, dev = %dev, error = %e, "twin: cannot claim a service address")
                            }
                        }
                    }
                }
                twin::AddressAction::Announce(ips) => {
                    for ip in ips {
                        let (IpAddr::V4(v4), Some((dev, _))) = (ip, devices.get(&ip)) else {
                            // IPv6: the kernel's own unsolicited advertisements follow the add.
                            continue;
                        };
                        if let Some(socket) = arp_socket(&mut arp, dev) {
                            if let Err(e) =
                                socket.announce(v4, ARPS_PER_ANNOUNCE, Duration::ZERO).await
                            {
                                tracing::warn!(%ip, dev = %dev, error = %e, "twin: gratuitous ARP failed");
                            }
                        }
                    }
                    let _ = found_tx.send(ActionDone::Announced);
                }
                twin::AddressAction::Release(ips) => {
                    for ip in ips {
                        let Some((dev, _)) = devices.get(&ip) else {
                            continue;
                        };
                        let removed = match &addresses {
                            Some(a) => a.remove_address(dev, ip).await.map_err(|e| e.to_string()),
                            None => Err("no netlink connection".to_owned()),
                        };
                        match removed {
                            Ok(()) => {
                                tracing::warn!(%ip, dev = %dev, "twin: service address released")
                            }
                            Err(e) => {
                                tracing::error!(%ip, dev = %dev, error = %e, "twin: cannot release a service address")
                            }
                        }
                    }
                }
            }
        }
    });
    (actions_tx, found)
}

/// The addresses of `ips` someone else answers for (RFC 5227 probes). Interfaces are probed at
/// once, each on its own socket (one probe takes tens of milliseconds, and a takeover waits for
/// all); the addresses of one interface one after the other. An address that cannot be probed
/// as IPv4 counts as free: the kernel's DAD guards IPv6.
async fn probe_all(
    arp: &mut HashMap<String, netif::ArpSocket>,
    devices: &HashMap<IpAddr, (String, u8)>,
    ips: Vec<IpAddr>,
) -> Vec<IpAddr> {
    let mut by_dev: HashMap<String, Vec<std::net::Ipv4Addr>> = HashMap::new();
    for ip in ips {
        if let (IpAddr::V4(v4), Some((dev, _))) = (ip, devices.get(&ip)) {
            by_dev.entry(dev.clone()).or_default().push(v4);
        }
    }
    let mut probes = tokio::task::JoinSet::new();
    let mut conflicts = Vec::new();
    for (dev, ips) in by_dev {
        let socket = match arp.remove(&dev) {
            Some(s) => s,
            None => match netif::ArpSocket::open(&dev) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(dev = %dev, error = %e, "twin: cannot open an ARP socket");
                    // Unknown is not free: claiming an address someone may answer for is the
                    // worse error.
                    conflicts.extend(ips.into_iter().map(IpAddr::V4));
                    continue;
                }
            },
        };
        probes.spawn(probe_one_interface(dev, socket, ips));
    }
    while let Some(done) = probes.join_next().await {
        match done {
            Ok((dev, socket, found)) => {
                if let Some(socket) = socket {
                    arp.insert(dev, socket);
                }
                conflicts.extend(found);
            }
            Err(e) => tracing::error!(error = %e, "twin: a probe task failed"),
        }
    }
    conflicts
}

/// Probes `ips` on `dev` one after the other; gives the socket back unless it failed.
async fn probe_one_interface(
    dev: String,
    mut socket: netif::ArpSocket,
    ips: Vec<std::net::Ipv4Addr>,
) -> (String, Option<netif::ArpSocket>, Vec<IpAddr>) {
    let mut found = Vec::new();
    let mut healthy = true;
    for ip in ips {
        match socket.probe(ip, PROBE).await {
            Ok(netif::ProbeOutcome::Clear) => {}
            Ok(netif::ProbeOutcome::Conflict { mac }) => {
                tracing::warn!(%ip, dev = %dev, %mac, "twin: the probe found the address in use");
                found.push(IpAddr::V4(ip));
            }
            Err(e) => {
                tracing::warn!(%ip, dev = %dev, error = %e, "twin: probe failed; reopening the socket next time");
                healthy = false;
                // Unknown is not free.
                found.push(IpAddr::V4(ip));
            }
        }
    }
    (dev, healthy.then_some(socket), found)
}

fn arp_socket<'a>(
    arp: &'a mut HashMap<String, netif::ArpSocket>,
    dev: &str,
) -> Option<&'a mut netif::ArpSocket> {
    if !arp.contains_key(dev) {
        match netif::ArpSocket::open(dev) {
            Ok(socket) => {
                arp.insert(dev.to_owned(), socket);
            }
            Err(e) => {
                tracing::warn!(dev = %dev, error = %e, "twin: cannot open an ARP socket");
                return None;
            }
        }
    }
    arp.get_mut(dev)
}
