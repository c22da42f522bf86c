//! TCP: accepting (with a connection limit, and not at all while offline), connecting out,
//! and one task per connection that frames the byte stream into messages, writes the
//! connection's queue, closes it when idle and closes it gracefully (FIN, never RST) when the
//! system goes offline.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use proxy::FlowId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::{bind_tcp, FlowEntry, FromTransport, Inbound, ListenerSpec, Shared};

/// Messages waiting to be written on one connection before further ones are dropped.
pub const QUEUE_LEN: usize = 256;

/// How long an outgoing connection may take to be set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// After our FIN, how long the peer gets to finish sending and close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Accepts connections on one listener of one worker. While the system is offline the listening
/// socket is closed, so connection attempts are refused by the kernel; it is bound again when
/// the system returns.
pub async fn accept_loop(shared: Arc<Shared>, spec: ListenerSpec, first: std::net::TcpListener) {
    let mut serving = shared.serving.clone();
    let mut bound = Some(first);
    loop {
        if !*serving.borrow_and_update() {
            if bound.take().is_some() {
                tracing::info!(addr = %spec.addr, "TCP listener closed while offline");
            }
            if serving.changed().await.is_err() {
                return;
            }
            continue;
        }
        let std_listener = match bound.take() {
            Some(l) => l,
            None => match bind_tcp(spec.addr) {
                Ok(l) => {
                    tracing::info!(addr = %spec.addr, "TCP listener open again");
                    l
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen TCP listener; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let listener = match TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %spec.addr, error = %e, "TCP listener unusable");
                return;
            }
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => admit(&shared, spec, stream, remote),
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(addr = %spec.addr, error = %e, "TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                changed = serving.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !*serving.borrow() {
                        break;
                    }
                }
            }
        }
    }
}

fn admit(shared: &Arc<Shared>, spec: ListenerSpec, stream: TcpStream, remote: SocketAddr) {
    if !shared.admit_connection(spec.id) {
        shared
            .counters
            .tcp_refused_limit
            .fetch_add(1, Ordering::Relaxed);
        // Debug only: a flood would flood the log too; `show stats` counts these.
        tracing::debug!(peer = %remote, addr = %spec.addr, "TCP connection limit reached; connection refused");
        return;
    }
    shared.counters.tcp_accepted.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let id = shared.new_flow_id();
    let (queue, outgoing) = mpsc::channel(QUEUE_LEN);
    shared.flows().insert(
        id,
        FlowEntry {
            listener: spec.id,
            remote,
            queue,
        },
    );
    tracing::debug!(peer = %remote, flow = id.0, "TCP connection accepted");
    tokio::spawn(run(
        Arc::clone(shared),
        spec,
        id,
        stream,
        remote,
        outgoing,
        true,
    ));
}

/// Opens a connection the engine asked for (a send to a peer with no connection yet). Runs on
/// the engine's runtime; the flow is already in the table with its first message queued.
pub async fn connect(
    shared: Arc<Shared>,
    spec: ListenerSpec,
    id: FlowId,
    remote: SocketAddr,
    outgoing: mpsc::Receiver<Vec<u8>>,
) {
    let attempt = async {
        let sock = if remote.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // From the listener's address, so the peer sees the address our Via advertises.
        sock.bind(SocketAddr::new(spec.addr.ip(), 0))?;
        sock.connect(remote).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(stream)) => {
            shared
                .counters
                .tcp_connected
                .fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            tracing::debug!(peer = %remote, flow = id.0, "TCP connection opened");
            run(shared, spec, id, stream, remote, outgoing, false).await;
        }
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_string(),
            };
            tracing::warn!(peer = %remote, error = %why, "TCP connect failed; queued messages dropped");
            shared.flows().remove(id);
            announce_closed(&shared, spec, id, remote).await;
        }
    }
}

/// Why a connection ended, for the log.
#[derive(Debug, Clone, Copy)]
enum End {
    PeerClosed,
    Idle,
    Offline,
    Framing,
    Error,
    EngineGone,
}

/// Runs one connection until it ends, then removes it from the table and tells the engine.
async fn run(
    shared: Arc<Shared>,
    spec: ListenerSpec,
    id: FlowId,
    stream: TcpStream,
    remote: SocketAddr,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    counted: bool,
) {
    let (mut rd, mut wr) = stream.into_split();
    let idle = shared.limits.tcp_idle_timeout;
    let limits = sip::Limits {
        max_message_bytes: shared.limits.max_message_bytes,
        ..sip::Limits::default()
    };
    let mut serving = shared.serving.clone();
    let mut watching = true;
    let mut deadline = Instant::now() + idle;
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let end = loop {
        if watching && !*serving.borrow_and_update() {
            break End::Offline;
        }
        tokio::select! {
            read = rd.read(&mut chunk) => match read {
                Ok(0) => break End::PeerClosed,
                Err(_) => break End::Error,
                Ok(n) => {
                    deadline = Instant::now() + idle;
                    pending.extend_from_slice(&chunk[..n]);
                    match deliver(&shared, spec, id, remote, &mut pending, &limits, &mut wr).await {
                        Ok(()) => {}
                        Err(end) => break end,
                    }
                }
            },
            next = outgoing.recv() => match next {
                Some(bytes) => {
                    deadline = Instant::now() + idle;
                    if wr.write_all(&bytes).await.is_err() {
                        break End::Error;
                    }
                    shared.counters.tcp_sent.fetch_add(1, Ordering::Relaxed);
                }
                None => break End::Error,
            },
            () = sleep_until(deadline) => break End::Idle,
            changed = serving.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                }
            }
        }
    };
    // Leave the table first, so no new message is queued on a connection that is closing.
    shared.flows().remove(id);
    if matches!(end, End::Offline | End::Idle) {
        // Graceful: what was already queued still goes out, then FIN, then the peer gets a
        // moment to close its side (a reset would lose what it is still sending us).
        while let Ok(bytes) = outgoing.try_recv() {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while matches!(rd.read(&mut chunk).await, Ok(n) if n > 0) {}
        })
        .await;
    }
    if matches!(end, End::Idle) {
        shared
            .counters
            .tcp_closed_idle
            .fetch_add(1, Ordering::Relaxed);
    }
    if counted {
        shared.release_connection(spec.id);
    }
    tracing::debug!(peer = %remote, flow = id.0, reason = ?end, "TCP connection closed");
    announce_closed(&shared, spec, id, remote).await;
}

/// Tells the engine a flow is gone, so the proxy stops routing to it. A closed engine channel
/// means sbcd is stopping: nobody is left to tell.
async fn announce_closed(shared: &Shared, spec: ListenerSpec, flow: FlowId, remote: SocketAddr) {
    let _ = shared
        .to_engine
        .send(FromTransport::Closed {
            listener: spec.id,
            flow,
            remote,
        })
        .await;
}

/// Cuts every complete message out of `pending` (the `sip` crate's framer decides where they
/// end) and hands it to the engine.
async fn deliver(
    shared: &Shared,
    spec: ListenerSpec,
    id: FlowId,
    remote: SocketAddr,
    pending: &mut Vec<u8>,
    limits: &sip::Limits,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
) -> Result<(), End> {
    loop {
        match sip::next_frame(pending, limits) {
            Ok(sip::Frame::Incomplete) => return Ok(()),
            Ok(sip::Frame::KeepAlive { len, ping }) => {
                pending.drain(..len);
                // RFC 5626 §3.5.1: a double-CRLF ping is answered with a single CRLF.
                if ping && wr.write_all(b"\r\n").await.is_err() {
                    return Err(End::Error);
                }
            }
            Ok(sip::Frame::Message { len }) => {
                let bytes: Vec<u8> = pending.drain(..len).collect();
                shared.counters.tcp_received.fetch_add(1, Ordering::Relaxed);
                let message = FromTransport::Message(Inbound {
                    listener: spec.id,
                    flow: Some(id),
                    source: remote,
                    bytes,
                });
                if shared.to_engine.send(message).await.is_err() {
                    return Err(End::EngineGone);
                }
            }
            Err(e) => {
                // A stream that cannot be framed cannot be resynchronised: answer the request
                // if the parser says it deserves an answer, then close.
                shared
                    .counters
                    .tcp_framing_errors
                    .fetch_add(1, Ordering::Relaxed);
                // Debug only: a peer can cause this at will; the counter shows it in `show stats`.
                tracing::debug!(peer = %remote, error = %e, "unframeable SIP stream; closing connection");
                if let sip::Disposition::Reply { status, reason } = e.disposition() {
                    let mut reply = Vec::new();
                    if sip::build::reply_to_unparsable(pending, status, reason, &mut reply).is_ok()
                    {
                        let _ = wr.write_all(&reply).await;
                    }
                }
                return Err(End::Framing);
            }
        }
    }
}
