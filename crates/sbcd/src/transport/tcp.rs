//! TCP's shell: accepting (with the connection slots of [`stream::Admission`], and not at all
//! while offline), connecting out, and one task per connection that pumps a
//! [`stream::Connection`]: what the socket reads goes in, and the machine says what to hand to
//! the engine, what to write, and when and how to close. Everything decided about a connection
//! (framing, the keep-alive pong, the answer to bad input, idle and slow peers, the graceful
//! close: queued messages written, FIN, a moment for the peer to close its side, never RST) is
//! the machine's; this file moves bytes and counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proxy::FlowId;
use stream::{Connection, Mode, Output, Refused, Why};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::queue::Queued;
use super::{bind_tcp, FlowEntry, FromTransport, ListenerSpec, Shared, Slot};
use super::{bump, now};

/// Messages waiting to be written on one connection before further ones are dropped (the bytes
/// of all queues together are bounded too: `[limits] max_queued_bytes`).
pub const QUEUE_LEN: usize = 256;

/// How long an outgoing connection may take to be set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// After our FIN, how long the peer gets to finish sending and close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The connection machine's settings, from `[sip]` and `[limits]`.
pub(super) fn config(shared: &Shared) -> stream::Config {
    stream::Config {
        limits: sip::Limits {
            max_message_bytes: shared.limits.max_message_bytes,
            ..sip::Limits::default()
        },
        idle_timeout: shared.limits.tcp_idle_timeout,
        message_timeout: shared.limits.tcp_message_timeout,
        close_grace: CLOSE_GRACE,
    }
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
/// read and dropped for a moment, so the close never turns into a reset. Past the bound on
/// such closes ([`stream::Caps::lingering`]) the FIN goes without the wait (a reset then only
/// if the peer had already sent something).
fn refuse(shared: &Arc<Shared>, stream: TcpStream) {
    if !shared.admission().admit_lingering() {
        if let Ok(stream) = stream.into_std() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        return;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let conn = Connection::refused(now(), config(&shared));
        linger(conn, stream).await;
        shared.admission().release_lingering();
    });
}

/// Pumps a refused connection's machine: FIN, then what the peer still sends is read and
/// dropped until it closes its side or the grace is over.
async fn linger(mut conn: Connection, stream: TcpStream) {
    let (mut rd, mut wr) = stream.into_split();
    let mut sink = [0u8; 4096];
    loop {
        while let Some(output) = conn.poll_output() {
            match output {
                Output::Shutdown => {
                    let _ = wr.shutdown().await;
                }
                Output::Closed => return,
                // A refused connection frames nothing: it only lingers.
                _ => {}
            }
        }
        let Some(deadline) = conn.poll_timeout() else {
            return;
        };
        tokio::select! {
            read = rd.read(&mut sink) => on_read(&mut conn, read, &sink),
            () = tokio::time::sleep_until(Instant::from_std(deadline)) => conn.handle_timeout(now()),
        }
    }
}

/// What a read found, for the connection.
fn on_read(conn: &mut Connection, read: std::io::Result<usize>, buf: &[u8]) {
    match read {
        Ok(0) => conn.handle_peer_closed(now()),
        Ok(n) => conn.handle_bytes(now(), &buf[..n]),
        Err(_) => conn.handle_io_error(now()),
    }
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

/// Runs one connection until it ends, then gives back its slot and tells the engine.
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
    let mut conn = Connection::new(now(), Mode::Stream, config(&shared));
    let mut serving = shared.serving.clone();
    let mut watching = true;
    let mut chunk = vec![0u8; 16 * 1024];
    // Set by the machine's `Close`, which always comes before its `Closed`.
    let mut why = Why::Error;
    // One timer for the connection's life, moved only when the machine's deadline moves: while
    // a message dribbles in it does not, and a timer set up anew for every read would cost more
    // than the read.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    'connection: loop {
        while let Some(output) = conn.poll_output() {
            match output {
                Output::Deliver(bytes) => {
                    bump(&shared.counters.tcp_received);
                    super::deliver(&shared, spec, id, remote, bytes, &mut conn).await;
                }
                Output::Write(bytes) => {
                    write(&mut conn, &mut wr, &bytes).await;
                }
                Output::Unframeable(error) => {
                    bump(&shared.counters.tcp_framing_errors);
                    // Debug only: a peer can cause this at will; the counter shows it in `show stats`.
                    tracing::debug!(peer = %remote, error = %error, "unframeable SIP stream; closing connection");
                }
                Output::Close { why: decided, .. } => {
                    why = decided;
                    // Leave the table first, so no new message is queued on a connection that
                    // is closing.
                    shared.flows().remove(id);
                    // Counted when decided, not after the grace the peer gets to close.
                    match why {
                        Why::Idle => bump(&shared.counters.tcp_closed_idle),
                        Why::SlowMessage => bump(&shared.counters.tcp_closed_slow_message),
                        Why::SlowWrite => bump(&shared.counters.tcp_closed_slow_write),
                        _ => {}
                    }
                }
                Output::Flush => {
                    while conn.may_write() {
                        match outgoing.try_recv() {
                            Ok(message) => {
                                write(&mut conn, &mut wr, message.bytes()).await;
                            }
                            Err(_) => conn.handle_flushed(now()),
                        }
                    }
                }
                Output::Shutdown => {
                    let _ = wr.shutdown().await;
                }
                Output::Closed => break 'connection,
            }
        }
        if watching && conn.is_open() && !*serving.borrow_and_update() {
            conn.close_gracefully(now());
            continue;
        }
        let Some(deadline) = conn.poll_timeout() else {
            // Only a closed connection has no timer, and `Closed` ended the loop.
            break;
        };
        let deadline = Instant::from_std(deadline);
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            read = rd.read(&mut chunk) => on_read(&mut conn, read, &chunk),
            next = outgoing.recv(), if conn.is_open() => match next {
                Some(message) => {
                    if write(&mut conn, &mut wr, message.bytes()).await {
                        bump(&shared.counters.tcp_sent);
                    }
                    // Written or not, its bytes leave the send budget.
                    drop(message);
                }
                None => conn.handle_io_error(now()),
            },
            () = &mut timer => conn.handle_timeout(now()),
            changed = serving.changed(), if watching && conn.is_open() => {
                if changed.is_err() {
                    watching = false;
                }
            }
        }
    }
    // Anything still queued is dropped here, giving its bytes back to the budget.
    drop(outgoing);
    drop(slot);
    tracing::debug!(peer = %remote, flow = id.0, reason = ?why, "TCP connection closed");
    announce_closed(shared, spec, id, remote).await;
}

/// Writes one message (or a pong, or an answer) within the machine's deadlines.
async fn write(conn: &mut Connection, wr: &mut OwnedWriteHalf, bytes: &[u8]) -> bool {
    super::timed_write(conn, wr.write_all(bytes)).await
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
