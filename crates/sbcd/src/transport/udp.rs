//! UDP: one receive loop per socket per worker; sending goes through [`super::Shared::send`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{FromTransport, Inbound, ListenerSpec, Shared};

/// Receives datagrams and hands them to the engine until the engine goes away.
pub async fn receive(shared: Arc<Shared>, spec: ListenerSpec, sock: tokio::net::UdpSocket) {
    // One byte more than the limit, so an oversize datagram shows as a full buffer instead of
    // being passed on truncated.
    let mut buf = vec![0u8; shared.limits.max_message_bytes + 1];
    loop {
        let (n, source) = match sock.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some kernels; they say nothing
                // about this socket's health. Anything else may repeat at once: pause briefly
                // rather than spin a core.
                tracing::debug!(addr = %spec.addr, error = %e, "UDP receive error");
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                continue;
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
        let message = FromTransport::Message(Inbound {
            listener: spec.id,
            flow: None,
            source,
            bytes: buf[..n].to_vec(),
        });
        if shared.to_engine.send(message).await.is_err() {
            return;
        }
    }
}
