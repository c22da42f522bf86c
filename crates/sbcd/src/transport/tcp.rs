//! TCP: accepting (with the connection slots of [`super::admission`], and not at all while
//! offline), connecting out, and one task per connection that feeds a
//! [`StreamState`](super::stream::StreamState) with what it reads, hands the messages to the
//! engine and writes the connection's queue. What ends a connection is decided by that state
//! (idle, or a message too slow to arrive), by the peer, by a write the peer does not take
//! within the message timeout, or by the system going offline; the close is graceful (queued
//! messages written, FIN, a moment for the peer to close its side: never RST), and so is the
//! close of a connection refused for want of a slot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proxy::FlowId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::admission::Refused;
use super::queue::Queued;
use super::stream::{Expired, Received, StreamState, Timeouts};
use super::{bind_tcp, FlowEntry, FromTransport, Inbound, ListenerSpec, Shared, Slot};

/// Messages waiting to be written on one connection before further ones are dropped (the bytes
/// of all queues together are bounded too: `[limits] max_queued_bytes`).
pub const QUEUE_LEN: usize = 256;

/// How long an outgoing connection may take to be set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// After our FIN, how long the peer gets to finish sending and close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Refused connections waiting out [`CLOSE_GRACE`] at once. A flood of connections must not
/// turn into a flood of waiting tasks: past this, a refused connection is closed without
/// waiting (still a FIN; a reset only if its peer had already sent something).
const MAX_LINGERING: usize = 256;

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

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
            None => match bind_tcp(&spec) {
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
    let slot = match Slot::inbound(shared, spec.id, remote.ip()) {
        Ok(slot) => slot,
        Err(why) => {
            let c = &shared.counters;
            bump(match why {
                Refused::PerSource => &c.tcp_refused_per_source,
                Refused::Listener => &c.tcp_refused_limit,
                Refused::Total => &c.tcp_refused_max_connections,
            });
            // Debug only: a flood would flood the log too; `show stats` counts these.
            tracing::debug!(peer = %remote, addr = %spec.addr, cap = ?why, "TCP connection refused: no slot");
            refuse(shared, stream);
            return;
        }
    };
    bump(&shared.counters.tcp_accepted);
    let _ = stream.set_nodelay(true);
    let id = shared.new_flow_id();
    let (queue, outgoing) = mpsc::channel(QUEUE_LEN);
    shared.flows().insert(
        id,
        FlowEntry {
            listener: spec.id,
            remote,
            queue,
            close: None,
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
        slot,
    ));
}

/// Closes a connection that got no slot: FIN at once, then whatever the peer still sends is
/// read and dropped for a moment, so the close never turns into a reset.
fn refuse(shared: &Arc<Shared>, stream: TcpStream) {
    if shared.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
        shared.lingering.fetch_sub(1, Ordering::AcqRel);
        if let Ok(stream) = stream.into_std() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        return;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let (mut rd, mut wr) = stream.into_split();
        let _ = wr.shutdown().await;
        drain_for_grace(&mut rd).await;
        shared.lingering.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Reads and drops what the peer still sends after our FIN, until it closes its side or
/// [`CLOSE_GRACE`] is over.
async fn drain_for_grace(rd: &mut OwnedReadHalf) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Opens a connection the engine asked for (a send to a peer with no connection yet). Runs on
/// the engine's runtime; the flow is already in the table with its first message queued, and
/// holds its slot.
pub(super) async fn connect(
    shared: Arc<Shared>,
    spec: ListenerSpec,
    id: FlowId,
    remote: SocketAddr,
    outgoing: mpsc::Receiver<Queued>,
    slot: Slot,
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
            bump(&shared.counters.tcp_connected);
            let _ = stream.set_nodelay(true);
            tracing::debug!(peer = %remote, flow = id.0, "TCP connection opened");
            run(shared, spec, id, stream, remote, outgoing, slot).await;
        }
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_string(),
            };
            tracing::warn!(peer = %remote, error = %why, "TCP connect failed; queued messages dropped");
            shared.flows().remove(id);
            drop(outgoing);
            drop(slot);
            announce_closed(shared, spec, id, remote).await;
        }
    }
}

/// Why a connection ended, for the log.
#[derive(Debug, Clone, Copy)]
enum End {
    PeerClosed,
    Idle,
    SlowMessage,
    /// The peer did not take a message within the message timeout.
    SlowWrite,
    Offline,
    Framing,
    Error,
    EngineGone,
}

/// Runs one connection until it ends, then removes it from the table, gives back its slot and
/// tells the engine.
async fn run(
    shared: Arc<Shared>,
    spec: ListenerSpec,
    id: FlowId,
    stream: TcpStream,
    remote: SocketAddr,
    mut outgoing: mpsc::Receiver<Queued>,
    slot: Slot,
) {
    let (mut rd, mut wr) = stream.into_split();
    let limits = sip::Limits {
        max_message_bytes: shared.limits.max_message_bytes,
        ..sip::Limits::default()
    };
    let write_timeout = shared.limits.tcp_message_timeout;
    let mut state = StreamState::new(
        now(),
        limits,
        Timeouts {
            idle: shared.limits.tcp_idle_timeout,
            message: shared.limits.tcp_message_timeout,
        },
    );
    let mut serving = shared.serving.clone();
    let mut watching = true;
    let mut chunk = vec![0u8; 16 * 1024];
    let mut received = Vec::new();
    // One timer for the connection's life, moved only when the state's deadline moves: while a
    // message dribbles in it does not, and a timer set up anew for every read would cost more
    // than the read.
    let timer = tokio::time::sleep_until(Instant::from_std(state.poll_timeout()));
    tokio::pin!(timer);
    let end = loop {
        if watching && !*serving.borrow_and_update() {
            break End::Offline;
        }
        let deadline = Instant::from_std(state.poll_timeout());
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            read = rd.read(&mut chunk) => match read {
                Ok(0) => break End::PeerClosed,
                Err(_) => break End::Error,
                Ok(n) => {
                    let framed = state.handle_bytes(now(), &chunk[..n], &mut received);
                    // What was framed before an error still counts.
                    if let Err(end) = deliver(&shared, spec, id, remote, &mut received, &mut wr, write_timeout).await {
                        break end;
                    }
                    if let Err(e) = framed {
                        unframeable(&shared, remote, &e, state.unframed(), &mut wr, write_timeout).await;
                        break End::Framing;
                    }
                }
            },
            next = outgoing.recv() => match next {
                Some(message) => {
                    if let Err(end) = write(&mut wr, message.bytes(), write_timeout).await {
                        break end;
                    }
                    // Written: its bytes leave the send budget.
                    drop(message);
                    state.handle_sent(now());
                    bump(&shared.counters.tcp_sent);
                }
                None => break End::Error,
            },
            () = &mut timer => match state.handle_timeout(now()) {
                Some(Expired::Idle) => break End::Idle,
                Some(Expired::SlowMessage) => break End::SlowMessage,
                None => {}
            },
            changed = serving.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                }
            }
        }
    };
    // Leave the table first, so no new message is queued on a connection that is closing.
    shared.flows().remove(id);
    // Counted when decided, not after the grace the peer gets to close.
    match end {
        End::Idle => bump(&shared.counters.tcp_closed_idle),
        End::SlowMessage => bump(&shared.counters.tcp_closed_slow_message),
        End::SlowWrite => bump(&shared.counters.tcp_closed_slow_write),
        _ => {}
    }
    match end {
        End::Offline | End::Idle | End::SlowMessage | End::Framing => {
            // Graceful: what was already queued still goes out (all of it within one message
            // timeout, so a peer reading slowly cannot stretch the close), then FIN, then the
            // peer gets a moment to close its side (a reset would lose what it still sends).
            let _ = tokio::time::timeout(write_timeout, async {
                while let Ok(message) = outgoing.try_recv() {
                    if wr.write_all(message.bytes()).await.is_err() {
                        break;
                    }
                }
            })
            .await;
            let _ = wr.shutdown().await;
            drain_for_grace(&mut rd).await;
        }
        End::SlowWrite => {
            // The peer is not reading: nothing more is written, but it still gets our FIN
            // (behind what it has not read) rather than a reset.
            let _ = wr.shutdown().await;
            drain_for_grace(&mut rd).await;
        }
        End::PeerClosed | End::Error | End::EngineGone => {}
    }
    // Anything still queued is dropped here, giving its bytes back to the budget.
    drop(outgoing);
    drop(slot);
    tracing::debug!(peer = %remote, flow = id.0, reason = ?end, "TCP connection closed");
    announce_closed(shared, spec, id, remote).await;
}

/// Writes one message, giving up when the peer does not take it within `timeout`.
async fn write(wr: &mut OwnedWriteHalf, bytes: &[u8], timeout: Duration) -> Result<(), End> {
    match tokio::time::timeout(timeout, wr.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Error),
        Err(_) => Err(End::SlowWrite),
    }
}

/// Tells the engine a flow is gone, so the proxy stops routing to it. A closed engine channel
/// means sbcd is stopping: nobody is left to tell.
pub(super) async fn announce_closed(
    shared: Arc<Shared>,
    spec: ListenerSpec,
    flow: FlowId,
    remote: SocketAddr,
) {
    let _ = shared
        .to_engine
        .send(FromTransport::Closed {
            listener: spec.id,
            flow,
            remote,
        })
        .await;
}

/// Hands the complete frames of one read to the engine (messages) or answers them (pings).
async fn deliver(
    shared: &Shared,
    spec: ListenerSpec,
    id: FlowId,
    remote: SocketAddr,
    received: &mut Vec<Received>,
    wr: &mut OwnedWriteHalf,
    write_timeout: Duration,
) -> Result<(), End> {
    for frame in received.drain(..) {
        match frame {
            // RFC 5626 §3.5.1: a double-CRLF ping is answered with a single CRLF.
            Received::Ping => write(wr, b"\r\n", write_timeout).await?,
            Received::Message(bytes) => {
                bump(&shared.counters.tcp_received);
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
        }
    }
    Ok(())
}

/// A stream that cannot be framed cannot be resynchronised: answer the request if the parser
/// says it deserves an answer; the caller closes.
async fn unframeable(
    shared: &Shared,
    remote: SocketAddr,
    error: &sip::Error,
    unframed: &[u8],
    wr: &mut OwnedWriteHalf,
    write_timeout: Duration,
) {
    bump(&shared.counters.tcp_framing_errors);
    // Debug only: a peer can cause this at will; the counter shows it in `show stats`.
    tracing::debug!(peer = %remote, error = %error, "unframeable SIP stream; closing connection");
    if let sip::Disposition::Reply { status, reason } = error.disposition() {
        let mut reply = Vec::new();
        if sip::build::reply_to_unparsable(unframed, status, reason, &mut reply).is_ok() {
            let _ = write(wr, &reply, write_timeout).await;
        }
    }
}
