//! Waiting, at start, for the network sbcd serves on: its listeners' addresses configured on
//! the box and a route to each upstream.
//!
//! This is what `network-online.target` (systemd-networkd-wait-online) gave sbcd.service, asked
//! of the kernel by sbcd itself, so that the unit can start beside the network's configuration
//! instead of after it: under TCG that overlap is most of a second of the boot (docs/image.md,
//! "A fast boot"). The questions cost no packet: an address is there when a UDP socket binds to
//! it, a route when a UDP socket connects to the upstream. A listener bound with `IP_FREEBIND`
//! (a twin's service address, which the twin itself adds) is not waited for.
//!
//! The wait is bounded. An address still missing at the end is left to the bind, which fails
//! with the error that names the listener (and systemd starts sbcd again); an upstream still
//! without a route is only logged: its probe will say so.
//!
//! Once bound, sbcd [`announce`]s its listeners' IPv4 addresses: one gratuitous ARP each, on
//! the interface that holds it, so that a neighbour that queued a packet for the address while
//! the box was still coming up (a router that asked, got no answer, and asks again only much
//! later) can deliver it now. QEMU's user network is one: it asks once per packet and drops the
//! packet a second later, so without the announcement a phone's first request waited up to a
//! second after the box could answer it (docs/image.md, "A fast boot").

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;
use tokio::time::Instant;

/// How long sbcd waits for its network at start, as systemd-networkd-wait-online did for it
/// (`--timeout=20` in the image).
pub const WAIT: Duration = Duration::from_secs(20);

/// How often the kernel is asked again while something is missing.
const POLL: Duration = Duration::from_millis(20);

/// What sbcd waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// A listener's address is not (or not yet usable) on any interface.
    Address(IpAddr),
    /// No route to an upstream.
    Route(SocketAddr),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Address(ip) => write!(f, "listener address {ip} is not configured"),
            Missing::Route(addr) => write!(f, "no route to upstream {addr}"),
        }
    }
}

/// The first thing of `addresses` and `upstreams` the kernel does not have yet, if any.
pub fn missing(addresses: &[IpAddr], upstreams: &[SocketAddr]) -> Option<Missing> {
    for &ip in addresses {
        if let Err(e) = UdpSocket::bind(SocketAddr::new(ip, 0)) {
            // An IPv6 address still doing duplicate address detection answers the same.
            if e.kind() == ErrorKind::AddrNotAvailable {
                return Some(Missing::Address(ip));
            }
        }
    }
    for &addr in upstreams {
        let any: IpAddr = match addr {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let Ok(socket) = UdpSocket::bind(SocketAddr::new(any, 0)) else {
            continue;
        };
        if let Err(e) = socket.connect(addr) {
            if matches!(
                e.kind(),
                ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable
            ) {
                return Some(Missing::Route(addr));
            }
        }
    }
    None
}

/// Waits until nothing is [`missing`], or `limit` has passed. Returns how long it waited and
/// what was still missing at the end. Logs the first thing it waits for, once.
pub async fn wait(
    addresses: &[IpAddr],
    upstreams: &[SocketAddr],
    limit: Duration,
) -> (Duration, Option<Missing>) {
    let started = Instant::now();
    let mut logged = false;
    loop {
        let now_missing = missing(addresses, upstreams);
        let waited = started.elapsed();
        match now_missing {
            None => return (waited, None),
            Some(m) if waited >= limit => return (waited, Some(m)),
            Some(m) => {
                if !logged {
                    tracing::info!(waiting_for = %m, "waiting for the network");
                    logged = true;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Which of `holders` (an interface's name and one of its addresses, as getifaddrs lists them)
/// carry one of `addresses`: the pairs to announce, each address once, loopback never.
pub fn to_announce(
    addresses: &[IpAddr],
    holders: impl IntoIterator<Item = (String, Ipv4Addr)>,
) -> Vec<(String, Ipv4Addr)> {
    let mut out: Vec<(String, Ipv4Addr)> = Vec::new();
    for (dev, ip) in holders {
        if !ip.is_loopback()
            && addresses.contains(&IpAddr::V4(ip))
            && !out.iter().any(|(_, seen)| *seen == ip)
        {
            out.push((dev, ip));
        }
    }
    out
}

/// Sends one gratuitous ARP for each IPv4 address of `addresses` on the interface that holds
/// it (see the module's doc). A courtesy to the neighbours, never a condition of serving: a
/// failure (no `CAP_NET_RAW`, as in a host test) is logged at debug level and nothing else.
pub async fn announce(addresses: &[IpAddr]) {
    let holders = match netif::ipv4_addresses() {
        Ok(list) => list,
        Err(e) => {
            tracing::debug!(error = %e, "listing interfaces to announce the listeners failed");
            return;
        }
    };
    for (dev, ip) in to_announce(addresses, holders) {
        match netif::announce(&dev, ip, 1, Duration::ZERO).await {
            Ok(()) => tracing::debug!(%ip, %dev, "listener address announced"),
            Err(e) => {
                tracing::debug!(%ip, %dev, error = %e, "announcing a listener address failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listener_addresses_are_announced_once_each_and_never_loopback() {
        let access = Ipv4Addr::new(10, 0, 2, 15);
        let core = Ipv4Addr::new(10, 0, 3, 15);
        let holders = vec![
            ("lo".to_string(), Ipv4Addr::LOCALHOST),
            ("eth0".to_string(), access),
            ("eth1".to_string(), core),
            ("eth2".to_string(), Ipv4Addr::new(169, 254, 7, 1)),
            ("eth0".to_string(), access),
        ];
        let listeners = [
            IpAddr::V4(access),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "2001:db8::1".parse().unwrap(),
            IpAddr::V4(ABSENT_V4),
        ];
        assert_eq!(
            to_announce(&listeners, holders),
            vec![("eth0".to_string(), access)]
        );
    }

    const ABSENT_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);

    /// An address of TEST-NET-3 (RFC 5737): on no interface of a test host.
    const ABSENT: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77));

    #[test]
    fn loopback_is_there_and_an_address_of_no_interface_is_missing() {
        let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
        let upstream: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        assert_eq!(missing(&[lo], &[upstream]), None);
        assert_eq!(
            missing(&[lo, ABSENT], &[upstream]),
            Some(Missing::Address(ABSENT))
        );
        assert_eq!(
            Missing::Address(ABSENT).to_string(),
            "listener address 203.0.113.77 is not configured"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_at_once_when_all_is_there_and_at_the_limit_when_not() {
        let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
        let (waited, still) = wait(&[lo], &[], Duration::from_secs(5)).await;
        assert_eq!(still, None);
        assert_eq!(waited, Duration::ZERO);

        let (_, still) = wait(&[lo, ABSENT], &[], Duration::from_millis(100)).await;
        assert_eq!(still, Some(Missing::Address(ABSENT)));
    }
}
