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
//! The sockets are registered for reading only: registered for writing too (as
//! `tokio::net::UdpSocket` does), every datagram sent made the socket writable again, an edge
//! the kernel reports, so after each batch the engine's runtime made one more `epoll_wait`
//! that returned at once with nothing to read. Sending never waits (a full socket buffer drops
//! the datagram, counted), so nothing needs to hear of writability.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use proxy::ListenerId;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{ListenerSpec, Shared};

/// The UDP sockets of every listener, read by their one owner.
#[derive(Debug)]
pub struct Ingress {
    sockets: Vec<(ListenerSpec, AsyncFd<std::net::UdpSocket>)>,
    /// One byte more than the limit, so an oversize datagram shows as a full buffer instead of
    /// being passed on truncated.
    buf: Vec<u8>,
    /// The socket to look at first next time, so a busy listener cannot starve the others.
    next: usize,
    /// After a receive error that may repeat at once: when to look at the sockets again, so a
    /// failing socket does not spin the engine.
    backoff_until: Option<tokio::time::Instant>,
}

/// `sock` registered with the current runtime for reading only.
#[allow(unsafe_code)]
fn register_for_reading(
    sock: std::net::UdpSocket,
) -> Result<AsyncFd<std::net::UdpSocket>, std::io::Error> {
    // SAFETY: the `AsyncFd` owns the socket, and a `std::net::UdpSocket` owns its descriptor:
    // it stays open and the same for as long as the `AsyncFd` lives.
    unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// One received datagram, borrowed from the ingress buffer until the next receive.
#[derive(Debug)]
pub struct Datagram<'a> {
    pub listener: ListenerId,
    pub source: SocketAddr,
    pub bytes: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// The datagram as the core takes it, where it lies in the receive buffer.
    pub fn input(&self) -> proxy::Input<'a> {
        proxy::Input {
            listener: self.listener,
            flow: None,
            source: self.source,
            bytes: self.bytes,
        }
    }
}

impl Ingress {
    /// Registers the sockets with the current tokio runtime (call it on the owner's thread). A
    /// socket the runtime refuses is logged and left out; the others still serve.
    pub fn new(shared: &Shared, sockets: Vec<(ListenerSpec, std::net::UdpSocket)>) -> Ingress {
        let sockets = sockets
            .into_iter()
            .filter_map(|(spec, sock)| match register_for_reading(sock) {
                Ok(sock) => Some((spec, sock)),
                Err(e) => {
                    tracing::error!(addr = %spec.addr, error = %e, "UDP socket unusable");
                    None
                }
            })
            .collect();
        Ingress {
            sockets,
            buf: vec![0u8; shared.limits.max_message_bytes + 1],
            next: 0,
            backoff_until: None,
        }
    }

    /// Whether there is no UDP listener at all.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Ready when some socket may have a datagram; gives that socket's index.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<usize> {
        let n = self.sockets.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            // The guard is let go without clearing: the socket stays ready until a receive
            // finds it empty (`try_recv`). An error is for the receive to report.
            if self.sockets[i].1.poll_read_ready(cx).is_ready() {
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

    /// The next datagram waiting on socket `index`, without waiting; `None` once it has none
    /// (its readiness is then cleared and [`ready`](Self::ready) waits for the next).
    /// Oversize datagrams are dropped and counted here.
    pub fn try_recv(&mut self, shared: &Shared, index: usize) -> Option<Datagram<'_>> {
        let (spec, sock) = self.sockets.get(index)?;
        self.next = (index + 1) % self.sockets.len();
        loop {
            let buf = &mut self.buf;
            let (n, source) = match sock.try_io(Interest::READABLE, |s| s.recv_from(buf)) {
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
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
                    return None;
                }
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
                bytes: &self.buf[..n],
            });
        }
    }
}
