//! SCTP's shell (RFC 4168): one-to-one associations through the `sctp` crate, which hands over
//! whole messages (it joins a message's parts up to `MSG_EOR`). Accepting takes the same
//! connection slots as TCP ([`stream::Admission`]) and stops while the system is offline (the
//! listening socket is closed, so the kernel answers an INIT with ABORT: refused); connecting
//! out happens when the engine sends to a peer without an association. One task per
//! association pumps a [`stream::Connection`] in records mode, the machine TCP's shell pumps
//! in stream mode: it decides what is one SIP message (a record that is not is answered when
//! it deserves an answer and dropped; the association stays), idle and slow peers, and the
//! graceful close.
//!
//! Every way the box ends an association is a SHUTDOWN, never an ABORT (SPEC §2, offline): what
//! was queued is sent, then `SHUT_WR` (the kernel sends SHUTDOWN once its queue is out), then
//! the socket is closed without lingering. The proxy may ask for it too (an upstream's 503
//! with Retry-After, SPEC §3: [`super::Shared::close`]).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy::FlowId;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::Instant;

use stream::Refused;
use stream::{Connection, Mode, Output, Why};

use super::queue::Queued;
use super::{bump, now};
use super::{FlowEntry, ListenerSpec, Shared, Slot};

/// How long an outgoing association may take to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An association as the runtime watches it: reading needs it mutably (it joins the parts of a
/// message), writing does not, and both happen from one task, so a lock that is never
/// contended lets both go through a shared reference.
#[derive(Debug)]
struct Watched {
    association: Mutex<sctp::Association>,
    fd: RawFd,
}

impl Watched {
    fn lock(&self) -> std::sync::MutexGuard<'_, sctp::Association> {
        self.association
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// Registers `inner` with the runtime. Sound although tokio now marks the safe constructor
/// deprecated (its I/O-safety concern is a descriptor closed while registered): the `AsyncFd`
/// owns `inner`, which owns the descriptor, so it stays open until the registration is gone.
#[allow(deprecated)]
fn watch<T: AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    AsyncFd::new(inner)
}

/// The socket options of every association: the message limit of `[sip] max_message_bytes`.
pub fn options(max_message_bytes: usize) -> sctp::Options {
    sctp::Options {
        max_message: max_message_bytes,
        // A read as large as the largest message: a message takes one `recvmsg`.
        read_chunk: max_message_bytes.max(4096),
        ..sctp::Options::default()
    }
}

/// Binds an SCTP listener (also used to re-open one when the system comes back online).
pub fn bind(
    spec: &ListenerSpec,
    max_message_bytes: usize,
) -> Result<sctp::Listener, super::BindError> {
    let listener = sctp::Listener::bind(spec.addr, options(max_message_bytes)).map_err(|e| {
        super::BindError::Bind {
            transport: "sctp",
            addr: spec.addr,
            source: std::io::Error::new(e.source.kind(), e.to_string()),
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| super::BindError::Bind {
            transport: "sctp",
            addr: spec.addr,
            source,
        })?;
    Ok(listener)
}

/// Accepts associations on one listener. While the system is offline the listening socket is
/// closed; it is bound again when the system returns.
pub async fn accept_loop(shared: Arc<Shared>, spec: ListenerSpec, first: sctp::Listener) {
    let mut serving = shared.serving.clone();
    let mut bound = Some(first);
    loop {
        if !*serving.borrow_and_update() {
            if bound.take().is_some() {
                tracing::info!(addr = %spec.addr, "SCTP listener closed while offline");
            }
            if serving.changed().await.is_err() {
                return;
            }
            continue;
        }
        let listener = match bound.take() {
            Some(l) => l,
            None => match bind(&spec, shared.limits.max_message_bytes) {
                Ok(l) => {
                    tracing::info!(addr = %spec.addr, "SCTP listener open again");
                    l
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen SCTP listener; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let listener = match watch(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %spec.addr, error = %e, "SCTP listener unusable");
                return;
            }
        };
        loop {
            tokio::select! {
                ready = listener.readable() => match ready {
                    Ok(mut guard) => match guard.try_io(|l| l.get_ref().accept()) {
                        Ok(Ok((association, remote))) => admit(&shared, spec, association, remote),
                        Ok(Err(e)) => {
                            tracing::warn!(addr = %spec.addr, error = %e, "SCTP accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(_would_block) => {}
                    },
                    Err(e) => {
                        tracing::error!(addr = %spec.addr, error = %e, "SCTP listener unusable");
                        return;
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

fn admit(
    shared: &Arc<Shared>,
    spec: ListenerSpec,
    association: sctp::Association,
    remote: SocketAddr,
) {
    let slot = match Slot::inbound(shared, spec.id, remote.ip()) {
        Ok(slot) => slot,
        Err(why) => {
            let c = &shared.counters;
            bump(match why {
                Refused::PerSource => &c.sctp_refused_per_source,
                Refused::Listener => &c.sctp_refused_limit,
                Refused::Total => &c.sctp_refused_max_connections,
            });
            tracing::debug!(peer = %remote, addr = %spec.addr, cap = ?why, "SCTP association refused: no slot");
            // Closed without lingering: a SHUTDOWN, never an ABORT.
            association.close();
            return;
        }
    };
    let fd = association.as_raw_fd();
    let watched = match association.set_nonblocking(true).and_then(|()| {
        watch(Watched {
            association: Mutex::new(association),
            fd,
        })
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(peer = %remote, error = %e, "SCTP association unusable");
            return;
        }
    };
    bump(&shared.counters.sctp_accepted);
    let id = shared.new_flow_id();
    let (queue, outgoing) = mpsc::channel(super::tcp::QUEUE_LEN);
    let close = Arc::new(tokio::sync::Notify::new());
    shared.flows().insert(
        id,
        FlowEntry {
            listener: spec.id,
            remote,
            queue,
            close: Some(Arc::clone(&close)),
        },
    );
    tracing::debug!(peer = %remote, flow = id.0, "SCTP association accepted");
    tokio::spawn(run(
        Arc::clone(shared),
        spec,
        id,
        watched,
        remote,
        outgoing,
        close,
        slot,
    ));
}

/// Opens an association the engine asked for. Runs on the engine's runtime; the flow is
/// already in the table with its first message queued, and holds its slot.
pub(super) async fn connect(
    shared: Arc<Shared>,
    spec: ListenerSpec,
    id: FlowId,
    remote: SocketAddr,
    outgoing: mpsc::Receiver<Queued>,
    close: Arc<tokio::sync::Notify>,
    slot: Slot,
) {
    let attempt = async {
        let association =
            sctp::Association::start_connect(remote, &options(shared.limits.max_message_bytes))
                .map_err(|e| e.to_string())?;
        let fd = association.as_raw_fd();
        let watched = watch(Watched {
            association: Mutex::new(association),
            fd,
        })
        .map_err(|e| e.to_string())?;
        let _ready = watched.writable().await.map_err(|e| e.to_string())?;
        watched
            .get_ref()
            .lock()
            .finish_connect()
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(watched)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(watched)) => {
            bump(&shared.counters.sctp_connected);
            tracing::debug!(peer = %remote, flow = id.0, "SCTP association opened");
            run(shared, spec, id, watched, remote, outgoing, close, slot).await;
        }
        failed => {
            let why = match failed {
                Ok(Err(e)) => e,
                _ => "timed out".to_string(),
            };
            tracing::warn!(peer = %remote, error = %why, "SCTP connect failed; queued messages dropped");
            shared.flows().remove(id);
            drop(outgoing);
            drop(slot);
            super::tcp::announce_closed(shared, spec, id, remote).await;
        }
    }
}

/// Runs one association until it ends, then removes it from the table, gives back its slot and
/// tells the engine. The decisions are the connection machine's, in records mode: one SIP
/// message per SCTP message (the `sctp` crate hands over whole ones), idle and slow peers,
/// the graceful close (queued messages sent, SHUTDOWN, a moment for the peer to finish).
#[allow(clippy::too_many_arguments)]
async fn run(
    shared: Arc<Shared>,
    spec: ListenerSpec,
    id: FlowId,
    watched: AsyncFd<Watched>,
    remote: SocketAddr,
    mut outgoing: mpsc::Receiver<Queued>,
    close: Arc<tokio::sync::Notify>,
    slot: Slot,
) {
    let mut conn = Connection::new(now(), Mode::Records, super::tcp::config(&shared));
    let mut serving = shared.serving.clone();
    let mut watching = true;
    let mut why = Why::Error;
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    'association: loop {
        while let Some(output) = conn.poll_output() {
            match output {
                Output::Deliver(bytes) => {
                    bump(&shared.counters.sctp_received);
                    super::deliver(&shared, spec, id, remote, bytes, &mut conn).await;
                }
                Output::Write(bytes) => {
                    write(&mut conn, &watched, &bytes).await;
                }
                Output::Unframeable(error) => {
                    bump(&shared.counters.sctp_bad_messages);
                    tracing::debug!(peer = %remote, error = %error, "SCTP message that is not one SIP message; dropped");
                }
                Output::Close { why: decided, .. } => {
                    why = decided;
                    shared.flows().remove(id);
                    if why == Why::Idle {
                        bump(&shared.counters.sctp_closed_idle);
                    }
                }
                Output::Flush => {
                    while conn.may_write() {
                        match outgoing.try_recv() {
                            Ok(message) => {
                                write(&mut conn, &watched, message.bytes()).await;
                            }
                            Err(_) => conn.handle_flushed(now()),
                        }
                    }
                }
                // SHUT_WR: the kernel sends SHUTDOWN once what is queued is out.
                Output::Shutdown => {
                    let _ = watched.get_ref().lock().shutdown();
                }
                Output::Closed => break 'association,
            }
        }
        if watching && conn.is_open() && !*serving.borrow_and_update() {
            conn.close_gracefully(now());
            continue;
        }
        let Some(deadline) = conn.poll_timeout() else {
            break;
        };
        let deadline = Instant::from_std(deadline);
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            ready = watched.readable() => {
                let Ok(mut guard) = ready else {
                    conn.handle_io_error(now());
                    continue;
                };
                let read = read_whole(&shared, remote, &mut watched.get_ref().lock(), &mut batch);
                if read.is_ok() {
                    // Everything whole was read: wait for the socket to be readable anew.
                    guard.clear_ready();
                }
                drop(guard);
                for message in batch.drain(..) {
                    conn.handle_bytes(now(), &message);
                    conn.handle_end_of_record(now());
                }
                match read {
                    Ok(()) => {}
                    Err(Gone::Peer) => conn.handle_peer_closed(now()),
                    Err(Gone::Error) => conn.handle_io_error(now()),
                }
            }
            next = outgoing.recv(), if conn.is_open() => match next {
                Some(message) => {
                    if write(&mut conn, &watched, message.bytes()).await {
                        bump(&shared.counters.sctp_sent);
                    }
                    drop(message);
                }
                None => conn.handle_io_error(now()),
            },
            () = close.notified(), if conn.is_open() => conn.close_gracefully(now()),
            () = &mut timer => conn.handle_timeout(now()),
            changed = serving.changed(), if watching && conn.is_open() => {
                if changed.is_err() {
                    watching = false;
                }
            }
        }
    }
    drop(outgoing);
    // Deregistered first, then closed without SO_LINGER: never an ABORT.
    let association = watched
        .into_inner()
        .association
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    association.close();
    drop(slot);
    tracing::debug!(peer = %remote, flow = id.0, reason = ?why, "SCTP association closed");
    super::tcp::announce_closed(shared, spec, id, remote).await;
}

/// Sends one message within the machine's deadlines, waiting for room while the peer's window
/// is full.
async fn write(conn: &mut Connection, watched: &AsyncFd<Watched>, bytes: &[u8]) -> bool {
    let send = async {
        loop {
            let mut guard = watched.writable().await?;
            let sent = watched.get_ref().lock().send(bytes);
            match sent {
                Ok(()) => return Ok(()),
                Err(e) if e.is_would_block() => guard.clear_ready(),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
    };
    super::timed_write(conn, send).await
}

/// How an association ended, as the socket says.
#[derive(Debug, Clone, Copy)]
enum Gone {
    /// SHUTDOWN or ABORT from the peer, or the association was lost.
    Peer,
    Error,
}

/// Reads every whole message the socket holds into `batch`. `Ok` once the socket has nothing
/// whole left; `Err` when the association is over.
fn read_whole(
    shared: &Shared,
    remote: SocketAddr,
    association: &mut sctp::Association,
    batch: &mut Vec<Vec<u8>>,
) -> Result<(), Gone> {
    loop {
        match association.recv() {
            Ok(sctp::Incoming::Message(bytes)) => batch.push(bytes),
            Ok(sctp::Incoming::Notification(n)) => match n {
                sctp::Notification::Shutdown
                | sctp::Notification::AssocChange {
                    state:
                        sctp::AssocState::CommLost
                        | sctp::AssocState::ShutdownComp
                        | sctp::AssocState::CantStartAssoc,
                    ..
                } => return Err(Gone::Peer),
                _ => {}
            },
            Ok(sctp::Incoming::Closed) => return Err(Gone::Peer),
            Err(e) if e.is_would_block() => return Ok(()),
            Err(sctp::RecvError::TooLarge { limit, got }) => {
                // The rest of that message is skipped; the association goes on.
                bump(&shared.counters.sctp_oversize_dropped);
                tracing::debug!(peer = %remote, limit, got, "SCTP message over max_message_bytes dropped");
            }
            Err(e) => {
                tracing::debug!(peer = %remote, error = %e, "SCTP receive failed");
                return Err(Gone::Error);
            }
        }
    }
}
