//! The one place with `unsafe`: nix has no safe constructor for a `sockaddr_ll`, which binding
//! an AF_PACKET socket to one interface and one EtherType needs, and tokio registers a raw file
//! descriptor with its reactor only through an `unsafe` call.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::libc;
use nix::sys::socket::{bind, socket, AddressFamily, LinkAddr, SockFlag, SockType, SockaddrLike};
use tokio::io::unix::AsyncFd;

/// Opens a non-blocking raw packet socket that sends and receives whole Ethernet frames of
/// EtherType `ethertype` on interface `ifindex` only, registered with the current tokio
/// runtime's reactor (panics outside a runtime, like every tokio I/O type).
pub(crate) fn open(ifindex: u32, ethertype: u16) -> io::Result<AsyncFd<OwnedFd>> {
    // Protocol 0 at creation: the socket receives nothing until bind() names the interface
    // and the EtherType, so no frame from another interface slips in between.
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range"))?;
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ethertype.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sll` is a fully initialised sockaddr_ll that lives across the call, and `len` is
    // its exact size, which from_raw checks for AF_PACKET before copying it.
    let addr = unsafe { LinkAddr::from_raw(std::ptr::addr_of!(sll).cast(), Some(len)) }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad sockaddr_ll"))?;
    bind(fd.as_raw_fd(), &addr)?;
    // SAFETY: an OwnedFd is open until it is dropped, and the AsyncFd owns it from here on, so
    // the descriptor stays valid and the same for the AsyncFd's whole life.
    Ok(unsafe { AsyncFd::register(fd) }?)
}
