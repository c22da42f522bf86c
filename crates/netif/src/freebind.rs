//! Sockets bound to an address the node may not hold yet. With IP_FREEBIND the kernel lets a
//! socket bind an address that is on no interface; it starts receiving the moment the twin adds
//! the address, and the listener never has to be reopened on takeover.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// A UDP socket bound to `addr` whether or not `addr` is on an interface yet.
///
/// SO_REUSEADDR is left off: two UDP sockets on one address would split its datagrams.
pub fn bind_udp_freebind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = freebind_socket(addr, Type::DGRAM, Protocol::UDP)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A TCP listener on `addr` whether or not `addr` is on an interface yet, with SO_REUSEADDR so
/// that a restarted node can listen again while old connections sit in TIME_WAIT.
pub fn bind_tcp_listener_freebind(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = freebind_socket(addr, Type::STREAM, Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn freebind_socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
        SocketAddr::V6(_) => {
            socket.set_freebind_v6(true)?;
            // A service address is one family; do not let an IPv6 wildcard take IPv4 too.
            socket.set_only_v6(true)?;
        }
    }
    Ok(socket)
}
