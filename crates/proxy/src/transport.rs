//! The transport seam: what the core knows about where bytes came from and where they go.
//!
//! The core never touches a socket. It sees a listener (which fixes realm, transport and local
//! address), an optional flow id for connection-oriented transports (a TCP connection or an SCTP
//! association, numbered by the shell) and the remote address. Adding SCTP or a new transport is
//! a new [`Transport`] variant, not a change to the proxy logic.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Datagrams; the core retransmits (RFC 3261 timers A, E, G).
    Udp,
    /// A byte stream framed by Content-Length; the shell frames it.
    Tcp,
    /// RFC 4168 associations; one message per SCTP message.
    Sctp,
}

impl Transport {
    /// Reliable transports switch off retransmissions and zero the wait timers (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The token used in a Via header.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Sctp => "SCTP",
        }
    }

    /// The value of a URI `transport=` parameter.
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Sctp => "sctp",
        }
    }

    /// Reads a Via token or URI parameter, case-insensitively.
    pub fn parse(token: &str) -> Option<Transport> {
        if token.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if token.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else if token.eq_ignore_ascii_case("sctp") {
            Some(Transport::Sctp)
        } else {
            None
        }
    }
}

/// Which side of the box a listener faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Realm {
    /// Phones, PBXs, gateways.
    Access,
    /// Registrar, softswitch, carrier trunks.
    Core,
}

/// Index of a listener in [`crate::Config::listeners`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ListenerId(pub u16);

/// A connection (TCP) or association (SCTP) numbered by the shell; unique per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowId(pub u64);

/// Where a peer is reachable: the listener we talk to it on, the connection if any, its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flow {
    /// The local listener.
    pub listener: ListenerId,
    /// The listener's transport (kept here so records stand on their own).
    pub transport: Transport,
    /// The connection, for connection-oriented transports.
    pub flow: Option<FlowId>,
    /// The peer's address as seen on the wire (source of its packets).
    pub remote: SocketAddr,
}

/// A [`Flow`] without its connection: what a record for the twin says about a party. A TCP
/// connection or SCTP association number is the sender's own and names nothing on the twin
/// (or, worse, an unrelated connection of its own); the twin reaches the party by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// The local listener.
    pub listener: ListenerId,
    /// The listener's transport.
    pub transport: Transport,
    /// The party's address.
    pub remote: SocketAddr,
}

impl Peer {
    /// The flow's listener, transport and address.
    pub fn of(flow: &Flow) -> Peer {
        Peer {
            listener: flow.listener,
            transport: flow.transport,
            remote: flow.remote,
        }
    }

    /// A flow to the same place with no connection: the first message opens (or finds) one.
    pub fn flow(&self) -> Flow {
        Flow {
            listener: self.listener,
            transport: self.transport,
            flow: None,
            remote: self.remote,
        }
    }
}

/// One received message, handed to [`crate::Proxy::handle_input`].
///
/// For stream transports the shell hands over exactly one framed message (cut with
/// `sip::next_frame`, which also recognises CRLF keep-alives).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The listener it arrived on; this fixes realm and transport.
    pub listener: ListenerId,
    /// The connection it arrived on, for connection-oriented transports.
    pub flow: Option<FlowId>,
    /// The source address.
    pub source: SocketAddr,
    /// The message.
    pub bytes: &'a [u8],
}

/// A connection or association the shell must end gracefully (SCTP SHUTDOWN, TCP FIN), taken
/// with [`crate::Proxy::poll_close`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub listener: ListenerId,
    pub transport: Transport,
    pub flow: FlowId,
    /// The peer at its other end.
    pub remote: SocketAddr,
}

/// One message to send, taken with [`crate::Proxy::poll_transmit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The listener (socket) to send from.
    pub listener: ListenerId,
    /// Its transport, repeated for the shell's convenience.
    pub transport: Transport,
    /// For connection-oriented transports: the connection to use. `None` means "open or reuse
    /// a connection to `destination`".
    pub flow: Option<FlowId>,
    /// Where to send.
    pub destination: SocketAddr,
    /// The message.
    pub bytes: Vec<u8>,
}
