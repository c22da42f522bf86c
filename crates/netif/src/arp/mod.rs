//! ARP probe and announcement on the wire (RFC 5227 with its timers scaled down so that a
//! takeover fits the twin's 1 s budget). Decides what "clear" means: no conflicting ARP seen from
//! the first probe until `wait` after the last.

pub(crate) mod frame;

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{recv, send, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::{sleep_until, Instant};

use crate::packet_socket;
use frame::{ArpPacket, MacAddr, ETHERTYPE_ARP};

/// RFC 5227's probe timers, scaled. The RFC's PROBE_NUM 3, PROBE_MIN/MAX 1-2 s, ANNOUNCE_WAIT
/// 2 s take 4-9 s; on a LAN where every host answers ARP within a millisecond, tens of
/// milliseconds are plenty (n-acd scales the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// How many probes to send (RFC: PROBE_NUM = 3). Zero means no probing: Clear at once.
    pub probes: u32,
    /// Between two probes (RFC: PROBE_MIN..PROBE_MAX, randomised; here fixed: the twin does
    /// not need jitter against hosts booting together, its start order is settled by node id).
    pub interval: Duration,
    /// After the last probe, how long an answer still counts (RFC: ANNOUNCE_WAIT).
    pub wait: Duration,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        Self {
            probes: 3,
            interval: Duration::from_millis(20),
            wait: Duration::from_millis(40),
        }
    }
}

impl ProbeTiming {
    /// How long a probe that finds no conflict takes at least.
    pub fn total(&self) -> Duration {
        match self.probes {
            0 => Duration::ZERO,
            n => self.interval * (n - 1) + self.wait,
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Nobody answered for the address or probed for it: it may be claimed.
    Clear,
    /// A host with MAC `mac` uses the address (or probes for it too): do not claim it.
    Conflict { mac: MacAddr },
}

/// Why a probe or an announcement could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ArpError {
    #[error("cannot list interfaces to find {dev}: {source}")]
    ListInterfaces {
        dev: String,
        #[source]
        source: nix::Error,
    },
    #[error("no interface {dev} with an Ethernet address")]
    NoInterface { dev: String },
    #[error("cannot open an ARP packet socket on {dev}: {source}")]
    Open {
        dev: String,
        #[source]
        source: io::Error,
    },
    #[error("sending ARP for {ip} on {dev} failed: {source}")]
    Send {
        dev: String,
        ip: Ipv4Addr,
        #[source]
        source: io::Error,
    },
    #[error("receiving ARP on {dev} while probing {ip} failed: {source}")]
    Receive {
        dev: String,
        ip: Ipv4Addr,
        #[source]
        source: io::Error,
    },
}

/// Probes `ip` on `dev` once with a socket of its own; see [`ArpSocket::probe`].
pub async fn probe(dev: &str, ip: Ipv4Addr, timing: ProbeTiming) -> Result<ProbeOutcome, ArpError> {
    let mut socket = ArpSocket::open(dev)?;
    let outcome = socket.probe(ip, timing).await;
    socket.close_in_background();
    outcome
}

/// Announces `ip` on `dev` once with a socket of its own; see [`ArpSocket::announce`].
pub async fn announce(
    dev: &str,
    ip: Ipv4Addr,
    count: u32,
    interval: Duration,
) -> Result<(), ArpError> {
    let socket = ArpSocket::open(dev)?;
    let done = socket.announce(ip, count, interval).await;
    socket.close_in_background();
    done
}

/// An ARP packet socket on one interface, with that interface's MAC.
///
/// Keep one open per service interface: closing a packet socket waits for an RCU grace period
/// in the kernel (about 8 ms measured here) and blocks the thread meanwhile, which the free
/// functions [`probe`] and [`announce`] push off to tokio's blocking pool. It is bound to the
/// interface's index at [`ArpSocket::open`] (in the calling thread's network namespace): reopen
/// it if the interface is recreated. Runs on a tokio runtime with I/O and time enabled.
#[derive(Debug)]
pub struct ArpSocket {
    dev: String,
    mac: MacAddr,
    fd: AsyncFd<OwnedFd>,
}

impl ArpSocket {
    /// Opens a packet socket for ARP on `dev` and reads the interface's MAC.
    pub fn open(dev: &str) -> Result<Self, ArpError> {
        let (ifindex, mac) = interface(dev)?;
        let fd = packet_socket::open(ifindex, ETHERTYPE_ARP).map_err(|source| ArpError::Open {
            dev: dev.to_owned(),
            source,
        })?;
        Ok(Self {
            dev: dev.to_owned(),
            mac,
            fd,
        })
    }

    /// The MAC of the interface, as this socket sends it.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Probes `ip` (RFC 5227 §2.1.1): sends `timing.probes` ARP requests with sender IP 0.0.0.0,
    /// `timing.interval` apart, and listens until `timing.wait` after the last. Returns at the
    /// first conflict: any ARP from another MAC whose sender IP is `ip`, or another host's probe
    /// for `ip`.
    ///
    /// Call it before adding the address: a host that holds it answers, and nobody's cache
    /// learns anything from a probe.
    pub async fn probe(
        &mut self,
        ip: Ipv4Addr,
        timing: ProbeTiming,
    ) -> Result<ProbeOutcome, ArpError> {
        let mut buf = [0u8; 1536];
        self.discard_queued(&mut buf);
        let probe = ArpPacket::probe(self.mac, ip).to_broadcast_frame();
        // The next probe is due at `deadline`; once all are sent, it is the end of the final
        // wait, counted from when the last probe actually went out.
        let mut deadline = Instant::now();
        let mut sent = 0;
        loop {
            if Instant::now() >= deadline {
                if sent >= timing.probes {
                    return Ok(ProbeOutcome::Clear);
                }
                self.send(&probe, ip).await?;
                sent += 1;
                let pause = if sent < timing.probes {
                    timing.interval
                } else {
                    timing.wait
                };
                deadline = Instant::now() + pause;
                continue;
            }
            tokio::select! {
                () = sleep_until(deadline) => {}
                got = self.recv(&mut buf) => {
                    let len = got.map_err(|source| ArpError::Receive {
                        dev: self.dev.clone(),
                        ip,
                        source,
                    })?;
                    let conflict = buf
                        .get(..len)
                        .and_then(ArpPacket::parse_frame)
                        .filter(|p| p.conflicts_with_probe(ip, self.mac));
                    if let Some(p) = conflict {
                        return Ok(ProbeOutcome::Conflict { mac: p.sender_mac });
                    }
                }
            }
        }
    }

    /// Announces `ip` (RFC 5227 §2.3): `count` gratuitous ARP requests (sender IP = target IP =
    /// `ip`, broadcast), `interval` apart, so that neighbours' caches move to this interface's
    /// MAC. Call it after the address is on the interface.
    ///
    /// A Linux neighbour updates an entry it already has (to the new MAC, state STALE) and, with
    /// the default `arp_accept = 0`, creates none: hosts that never talked to the address learn
    /// it when they next ask. On the kernel tested here (6.18) one announcement moved an entry
    /// that had been confirmed milliseconds before; other stacks may ignore a change within a
    /// lock time of about a second after the last update, which is what the SPEC's "again after
    /// a second" covers.
    pub async fn announce(
        &self,
        ip: Ipv4Addr,
        count: u32,
        interval: Duration,
    ) -> Result<(), ArpError> {
        let frame = ArpPacket::announcement(self.mac, ip).to_broadcast_frame();
        for n in 0..count {
            if n > 0 {
                tokio::time::sleep(interval).await;
            }
            self.send(&frame, ip).await?;
        }
        Ok(())
    }

    /// Closes the socket on tokio's blocking pool (see the type's doc), or here if there is none.
    fn close_in_background(self) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(self))),
            Err(_) => drop(self),
        }
    }

    /// Drops what arrived while nobody was probing: a probe judges only what answers it.
    fn discard_queued(&self, buf: &mut [u8]) {
        while recv(self.fd.get_ref().as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
    }

    async fn send(&self, frame: &[u8], ip: Ipv4Addr) -> Result<(), ArpError> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                send(fd.as_raw_fd(), frame, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
            })
            .await
            .map(|_| ())
            .map_err(|source| ArpError::Send {
                dev: self.dev.clone(),
                ip,
                source,
            })
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |fd| {
                recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
            })
            .await
    }
}

/// Every IPv4 address on the box's interfaces, with the interface's name, from getifaddrs (so
/// in the calling thread's network namespace, as [`ArpSocket::open`] sees it): what to give
/// [`announce`] for an address the caller knows but not the interface of.
pub fn ipv4_addresses() -> Result<Vec<(String, Ipv4Addr)>, nix::Error> {
    Ok(nix::ifaddrs::getifaddrs()?
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            Some((a.interface_name, ip))
        })
        .collect())
}

/// The index and MAC of `dev`, from getifaddrs: it asks the kernel through a socket, so it sees
/// the calling thread's network namespace (/sys/class/net shows the namespace /sys was mounted
/// in, which is not the same for a thread that entered another namespace).
fn interface(dev: &str) -> Result<(u32, MacAddr), ArpError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|source| ArpError::ListInterfaces {
        dev: dev.to_owned(),
        source,
    })?;
    addrs
        .filter(|a| a.interface_name == dev)
        .filter_map(|a| {
            let link = *a.address?.as_link_addr()?;
            let mac = link.addr()?;
            let index = u32::try_from(link.ifindex()).ok()?;
            Some((index, MacAddr(mac)))
        })
        .next()
        .ok_or_else(|| ArpError::NoInterface {
            dev: dev.to_owned(),
        })
}
