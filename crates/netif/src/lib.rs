//! The twin's hands on the kernel's network interfaces: the thin I/O shell that carries out what
//! the `twin` state machine decides. It adds and removes service addresses through netlink
//! ([`Addresses`]), probes an IPv4 address before claiming it and announces it afterwards with
//! ARP on a packet socket (RFC 5227 with timers scaled down to tens of milliseconds: a kept
//! [`ArpSocket`], or the one-shot [`probe`] and [`announce`]), binds listeners to a service
//! address the node does not own yet (`IP_FREEBIND`: [`bind_udp_freebind`],
//! [`bind_tcp_listener_freebind`]), and reads the twin key file with the checks its secrecy needs
//! ([`read_key_file`]).
//!
//! What it is not for: it decides nothing. When to probe, claim, announce or release, how often
//! and what a conflict means are the `twin` crate's business; this crate performs one action when
//! asked and reports what the kernel or the wire said. No keep-alives, no HMAC, no IPv6 neighbour
//! discovery of its own (an IPv6 service address relies on the kernel's DAD, see
//! [`Addresses::add_address`]). Linux only; addresses need `CAP_NET_ADMIN`, ARP `CAP_NET_RAW`.

mod address;
mod arp;
mod freebind;
mod keyfile;
mod packet_socket;

pub use address::{AddressError, Addresses};
pub use arp::frame::{ArpOp, ArpPacket, MacAddr};
pub use arp::{announce, ipv4_addresses, probe, ArpError, ArpSocket, ProbeOutcome, ProbeTiming};
pub use freebind::{bind_tcp_listener_freebind, bind_udp_freebind};
pub use keyfile::{read_key_file, KeyFileError, MIN_KEY_LEN};
