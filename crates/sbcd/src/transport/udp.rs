//! UDP: the engine thread owns the UDP sockets and reads them itself ([`Ingress`]); sending goes
//! through [`super::Shared::send`] on the same sockets.
//!
//! Why not worker threads: a datagram handed from a worker to the engine over a queue cost a
//! wake-up of the worker, a queue push, a wake-up of the engine and a copy, for every message;
//! the proxy core is serial anyway, so a worker bought no parallelism. Measured with
//! `cargo xtask bench sip`, those hand-offs were the larger part of sbcd's CPU per call. The
//! engine now drains every ready datagram after one readiness wake-up and judges each one where
//! it lies in the receive buffer.
//!
//! Datagrams are read up to [`RECV_BATCH`] at a time with one `recvmmsg` (a `recvfrom` per
//! datagram was a third of sbcd's system calls). Transmits still leave one `sendto` each, as
//! the core makes them: sending them together (`sendmmsg`) after a batch was measured to cost
//! more wake-ups than it saved in system calls (docs/engine.md, "System calls per call").

use std::io::{ErrorKind, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage};
use proxy::ListenerId;
use tokio::io::Interest;

use super::{ListenerSpec, Shared};

/// Datagrams read by one `recvmmsg`.
pub const RECV_BATCH: usize = 16;

/// The UDP sockets of every listener, read by their one owner.
#[derive(Debug)]
pub struct Ingress {
    sockets: Vec<(ListenerSpec, tokio::net::UdpSocket)>,
    /// One receive buffer per datagram of a batch, each one byte more than the limit, so an
    /// oversize datagram shows as a full buffer instead of being passed on truncated.
    bufs: [Vec<u8>; RECV_BATCH],
    /// The kernel's headers for `recvmmsg`, kept from batch to batch.
    headers: MultiHeaders<SockaddrStorage>,
    /// The last batch read: its socket, each datagram's length and source, and how many of
    /// them were handed out.
    batch: Batch,
    /// The socket to look at first next time, so a busy listener cannot starve the others.
    next: usize,
    /// After a receive error that may repeat at once: when to look at the sockets again, so a
    /// failing socket does not spin the engine.
    backoff_until: Option<tokio::time::Instant>,
}

/// The datagrams of the last `recvmmsg`: its socket, each one's length and source, and how
/// many of them were handed out.
#[derive(Debug, Default)]
struct Batch {
    socket: usize,
    got: Vec<(usize, Option<SocketAddr>)>,
    next: usize,
}

/// One received datagram, borrowed from the ingress buffer until the next receive.
#[derive(Debug)]
pub struct Datagram<'a> {
    pub listener: ListenerId,
    pub source: SocketAddr,
    pub bytes: &'a [u8],
}

impl Ingress {
    /// Registers the sockets with the current tokio runtime (call it on the owner's thread). A
    /// socket the runtime refuses is logged and left out; the others still serve.
    pub fn new(shared: &Shared, sockets: Vec<(ListenerSpec, std::net::UdpSocket)>) -> Ingress {
        let sockets = sockets
            .into_iter()
            .filter_map(|(spec, sock)| match tokio::net::UdpSocket::from_std(sock) {
                Ok(sock) => Some((spec, sock)),
                Err(e) => {
                    tracing::error!(addr = %spec.addr, error = %e, "UDP socket unusable");
                    None
                }
            })
            .collect();
        Ingress {
            sockets,
            bufs: std::array::from_fn(|_| vec![0u8; shared.limits.max_message_bytes + 1]),
            headers: MultiHeaders::preallocate(RECV_BATCH, None),
            batch: Batch::default(),
            next: 0,
            backoff_until: None,
        }
    }

    /// Whether every datagram of the last batch has been handed out (the next
    /// [`try_recv`](Self::try_recv) reads the socket again).
    fn batch_done(&self) -> bool {
        self.batch.next >= self.batch.got.len()
    }

    /// Whether there is no UDP listener at all.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Ready when some socket may have a datagram (or datagrams of the last batch are still
    /// to be handed out); gives that socket's index.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<usize> {
        if !self.batch_done() {
            return Poll::Ready(self.batch.socket);
        }
        let n = self.sockets.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.sockets[i].1.poll_recv_ready(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    }

    /// Waits until [`poll_ready`](Self::poll_ready) says a socket may have a datagram (after
    /// a pause first, when the last receive failed).
    pub async fn ready(&mut self) -> usize {
        if let Some(until) = self.backoff_until.take() {
            tokio::time::sleep_until(until).await;
        }
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// The next datagram waiting on socket `index` (or left from the last batch), without
    /// waiting; `None` once it has none (its readiness is then cleared and
    /// [`ready`](Self::ready) waits for the next). Oversize datagrams are dropped and counted
    /// here.
    pub fn try_recv(&mut self, shared: &Shared, index: usize) -> Option<Datagram<'_>> {
        loop {
            if self.batch_done() && !self.fill(index) {
                return None;
            }
            let k = self.batch.next;
            self.batch.next += 1;
            let (n, source) = self.batch.got[k];
            let (spec, _) = self.sockets.get(self.batch.socket)?;
            let Some(source) = source else {
                continue;
            };
            if n > shared.limits.max_message_bytes {
                shared
                    .counters
                    .udp_oversize_dropped
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %source, "oversize datagram dropped");
                continue;
            }
            shared.counters.udp_received.fetch_add(1, Ordering::Relaxed);
            return Some(Datagram {
                listener: spec.id,
                source,
                bytes: &self.bufs[k][..n],
            });
        }
    }

    /// Reads the next batch from socket `index` with one `recvmmsg`; whether it got any.
    fn fill(&mut self, index: usize) -> bool {
        let Some((spec, sock)) = self.sockets.get(index) else {
            return false;
        };
        self.next = (index + 1) % self.sockets.len();
        let batch = &mut self.batch;
        batch.socket = index;
        batch.got.clear();
        batch.next = 0;
        loop {
            let (bufs, headers) = (&mut self.bufs, &mut self.headers);
            let read = sock.try_io(Interest::READABLE, || {
                let mut slices = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
                let results = nix::sys::socket::recvmmsg(
                    sock.as_raw_fd(),
                    headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                )
                .map_err(std::io::Error::from)?;
                for m in results {
                    let source = m.address.and_then(|a: SockaddrStorage| {
                        a.as_sockaddr_in()
                            .map(|v4| SocketAddr::from(*v4))
                            .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)))
                    });
                    batch.got.push((m.bytes, source));
                }
                Ok(())
            });
            match read {
                Ok(()) => return true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                // ICMP errors from earlier sends surface here on some kernels; they say nothing
                // about this socket's health.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
                    ) =>
                {
                    tracing::debug!(addr = %spec.addr, error = %e, "UDP receive error");
                    continue;
                }
                Err(e) => {
                    // Anything else may repeat at once: pause briefly rather than spin.
                    tracing::debug!(addr = %spec.addr, error = %e, "UDP receive error");
                    self.backoff_until =
                        Some(tokio::time::Instant::now() + std::time::Duration::from_millis(10));
                    return false;
                }
            }
        }
    }
}
