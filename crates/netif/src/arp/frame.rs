//! ARP for IPv4 over Ethernet as bytes: the frames a probe and an announcement send, and the
//! parser for what comes back. Pure: no sockets, so every rule here is tested on byte arrays.

use std::fmt;
use std::net::Ipv4Addr;

/// EtherType of ARP.
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const HTYPE_ETHERNET: u16 = 1;
const ETH_HEADER_LEN: usize = 14;
const ARP_LEN: usize = 28;
/// Ethernet's minimum frame (without FCS). Some NIC drivers do not pad short frames from a
/// packet socket, so we pad ourselves.
const MIN_FRAME_LEN: usize = 60;

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
}

/// The fields of an ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpPacket {
    /// RFC 5227 §2.1.1 probe: "who has `ip`?" asked with sender IP 0.0.0.0, so that no
    /// neighbour's cache learns a binding for an address we do not hold yet.
    pub fn probe(our_mac: MacAddr, ip: Ipv4Addr) -> Self {
        Self {
            op: ArpOp::Request,
            sender_mac: our_mac,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: MacAddr::ZERO,
            target_ip: ip,
        }
    }

    /// RFC 5227 §2.3 announcement: a request with sender IP = target IP = `ip`. A request
    /// rather than a reply because every host's kernel processes broadcast requests.
    pub fn announcement(our_mac: MacAddr, ip: Ipv4Addr) -> Self {
        Self {
            op: ArpOp::Request,
            sender_mac: our_mac,
            sender_ip: ip,
            target_mac: MacAddr::ZERO,
            target_ip: ip,
        }
    }

    /// Whether this packet, seen while probing for `ip` from `our_mac`, means someone else
    /// holds or wants `ip` (RFC 5227 §2.1.1): any ARP whose sender IP is `ip`, or another
    /// host's probe for `ip`. Our own frames (a packet socket sees outgoing ones too) never
    /// conflict.
    pub fn conflicts_with_probe(&self, ip: Ipv4Addr, our_mac: MacAddr) -> bool {
        if self.sender_mac == our_mac {
            return false;
        }
        let holds_it = self.sender_ip == ip;
        let probes_for_it = self.op == ArpOp::Request
            && self.sender_ip == Ipv4Addr::UNSPECIFIED
            && self.target_ip == ip;
        holds_it || probes_for_it
    }

    /// The Ethernet frame carrying this packet, from `our_mac` to broadcast, padded to 60 bytes.
    pub fn to_broadcast_frame(&self) -> [u8; MIN_FRAME_LEN] {
        let mut f = [0u8; MIN_FRAME_LEN];
        f[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
        f[6..12].copy_from_slice(&self.sender_mac.0);
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        let a = &mut f[ETH_HEADER_LEN..ETH_HEADER_LEN + ARP_LEN];
        a[0..2].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        a[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        a[4] = 6;
        a[5] = 4;
        let op: u16 = match self.op {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
        };
        a[6..8].copy_from_slice(&op.to_be_bytes());
        a[8..14].copy_from_slice(&self.sender_mac.0);
        a[14..18].copy_from_slice(&self.sender_ip.octets());
        a[18..24].copy_from_slice(&self.target_mac.0);
        a[24..28].copy_from_slice(&self.target_ip.octets());
        f
    }

    /// Parses an Ethernet frame; `None` for anything that is not ARP for IPv4 over Ethernet
    /// (a packet socket hands us whatever arrives, including junk).
    pub fn parse_frame(frame: &[u8]) -> Option<Self> {
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        if ethertype != ETHERTYPE_ARP {
            return None;
        }
        let a = frame.get(ETH_HEADER_LEN..ETH_HEADER_LEN + ARP_LEN)?;
        let be16 = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
        if be16(0) != HTYPE_ETHERNET || be16(2) != ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4 {
            return None;
        }
        let op = match be16(6) {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            _ => return None,
        };
        let mac = |i: usize| MacAddr([a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5]]);
        let ip = |i: usize| Ipv4Addr::new(a[i], a[i + 1], a[i + 2], a[i + 3]);
        Some(Self {
            op,
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
    const THEIRS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
    const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    /// A probe for 192.0.2.10 from 02:00:00:00:00:0a, byte by byte as on the wire.
    const PROBE_BYTES: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
        0x02, 0, 0, 0, 0, 0x0a, // src
        0x08, 0x06, // ARP
        0, 1, 0x08, 0, 6, 4, 0, 1, // Ethernet, IPv4, hlen 6, plen 4, request
        0x02, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, // sender MAC, sender IP 0.0.0.0
        0, 0, 0, 0, 0, 0, 192, 0, 2, 10, // target MAC 0, target IP
    ];

    #[test]
    fn probe_frame_is_the_rfc_5227_probe() {
        let f = ArpPacket::probe(OURS, IP).to_broadcast_frame();
        assert_eq!(&f[..42], &PROBE_BYTES[..]);
        assert!(f[42..].iter().all(|&b| b == 0), "padding is zero");
    }

    #[test]
    fn announcement_has_sender_ip_equal_target_ip() {
        let p = ArpPacket::announcement(OURS, IP);
        let parsed = ArpPacket::parse_frame(&p.to_broadcast_frame()).unwrap();
        assert_eq!(parsed, p);
        assert_eq!((parsed.sender_ip, parsed.target_ip), (IP, IP));
        assert_eq!(parsed.op, ArpOp::Request);
    }

    #[test]
    fn parses_an_unpadded_reply() {
        let mut f = PROBE_BYTES;
        f[21] = 2; // reply
        f[22..28].copy_from_slice(&THEIRS.0);
        f[28..32].copy_from_slice(&IP.octets());
        let p = ArpPacket::parse_frame(&f).unwrap();
        assert_eq!(p.op, ArpOp::Reply);
        assert_eq!((p.sender_mac, p.sender_ip), (THEIRS, IP));
    }

    #[test]
    fn rejects_what_is_not_arp_for_ipv4_over_ethernet() {
        assert_eq!(ArpPacket::parse_frame(&[]), None);
        assert_eq!(
            ArpPacket::parse_frame(&PROBE_BYTES[..41]),
            None,
            "truncated"
        );
        let mut ipv4 = PROBE_BYTES;
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(ArpPacket::parse_frame(&ipv4), None, "not ARP");
        let mut ptype = PROBE_BYTES;
        ptype[16] = 0x86; // IPv6 as protocol type
        assert_eq!(ArpPacket::parse_frame(&ptype), None);
        let mut hlen = PROBE_BYTES;
        hlen[18] = 8;
        assert_eq!(ArpPacket::parse_frame(&hlen), None);
        let mut op = PROBE_BYTES;
        op[21] = 3; // RARP request
        assert_eq!(ArpPacket::parse_frame(&op), None);
    }

    #[test]
    fn conflict_rules_while_probing() {
        let other = Ipv4Addr::new(192, 0, 2, 99);
        let from = |mac, op, sender_ip, target_ip| ArpPacket {
            op,
            sender_mac: mac,
            sender_ip,
            target_mac: MacAddr::ZERO,
            target_ip,
        };
        let zero = Ipv4Addr::UNSPECIFIED;
        // Someone answers for the address, or uses it as a sender in a request or announcement.
        assert!(from(THEIRS, ArpOp::Reply, IP, zero).conflicts_with_probe(IP, OURS));
        assert!(from(THEIRS, ArpOp::Request, IP, other).conflicts_with_probe(IP, OURS));
        assert!(from(THEIRS, ArpOp::Request, IP, IP).conflicts_with_probe(IP, OURS));
        // Another host probing for the same address at the same time.
        assert!(from(THEIRS, ArpOp::Request, zero, IP).conflicts_with_probe(IP, OURS));
        // Not conflicts: our own frames, someone merely asking for the address, other addresses.
        assert!(!from(OURS, ArpOp::Request, zero, IP).conflicts_with_probe(IP, OURS));
        assert!(!from(OURS, ArpOp::Request, IP, IP).conflicts_with_probe(IP, OURS));
        assert!(!from(THEIRS, ArpOp::Request, other, IP).conflicts_with_probe(IP, OURS));
        assert!(!from(THEIRS, ArpOp::Reply, other, zero).conflicts_with_probe(IP, OURS));
        assert!(!from(THEIRS, ArpOp::Reply, zero, IP).conflicts_with_probe(IP, OURS));
    }

    #[test]
    fn mac_displays_as_colon_hex() {
        assert_eq!(
            MacAddr([0x02, 0xab, 0, 1, 0x10, 0xff]).to_string(),
            "02:ab:00:01:10:ff"
        );
    }
}
