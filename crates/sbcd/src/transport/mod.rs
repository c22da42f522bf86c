//! The transport seam: SIP sockets on one side, the engine's [`FromTransport`] queue and
//! [`Transmit`]s on the other.
//!
//! Sockets are bound up front ([`bind_all`]) so that configuration mistakes fail the start and
//! `sbcd: listening` means every socket is there. UDP sockets are bound once and read by the
//! engine thread itself ([`udp::Ingress`], which says why). Each SIP worker thread runs its own
//! copy of every TCP listener, sharing the port with `SO_REUSEPORT`: the kernel spreads accepted
//! connections over the workers.
//!
//! Connections (TCP connections and SCTP associations) are numbered with a [`FlowId`] from one
//! counter and kept in one [`FlowTable`], so any thread can send on any connection: the table
//! holds each connection's outgoing queue, not its socket. Nothing here looks inside a message
//! beyond stream framing; what to send where is the engine's decision.
//!
//! What a peer can make the box hold is bounded here (SPEC §1a): connection slots per source,
//! per listener and in total ([`stream::Admission`]), bytes waiting to be written ([`queue`]),
//! and the time and CPU one stream message may take ([`stream::Connection`]). Whatever is
//! refused is counted in [`Counters`], which `show stats` lists.

mod queue;
pub mod sctp;
pub mod tcp;
pub mod udp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proxy::{FlowId, ListenerId, Transmit, Transport};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch};

use crate::config::{self, Config};
use queue::{Queued, SendBudget};
use stream::{Admission, Caps, Refused};

/// What the transports hand to the engine.
#[derive(Debug)]
pub enum FromTransport {
    /// One received message (a datagram, or one framed message of a stream).
    Message(Inbound),
    /// A connection ended; the engine may forget what it knew about the flow.
    Closed {
        listener: ListenerId,
        flow: FlowId,
        remote: SocketAddr,
    },
}

/// One received message with where it came from.
#[derive(Debug)]
pub struct Inbound {
    pub listener: ListenerId,
    pub flow: Option<FlowId>,
    pub source: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Inbound {
    /// The message as the core takes it.
    pub fn input(&self) -> proxy::Input<'_> {
        proxy::Input {
            listener: self.listener,
            flow: self.flow,
            source: self.source,
            bytes: &self.bytes,
        }
    }
}

/// One listener of the configuration, numbered by its position in the file.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSpec {
    pub id: ListenerId,
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The address is a twin service address: bound with `IP_FREEBIND`, so the listener exists
    /// before the node owns the address and serves it from the moment it does (SPEC §9).
    pub freebind: bool,
}

/// Limits of the wire path, from `[sip]` and `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub tcp_idle_timeout: Duration,
    /// A stream message must be complete this long after its first byte.
    pub tcp_message_timeout: Duration,
    /// Accepted connections per listener.
    pub tcp_max_connections: usize,
    /// Connections inbound and outbound together.
    pub max_connections: usize,
    /// Inbound connections per source address.
    pub per_source_connections: usize,
    /// Bytes waiting in all send queues together.
    pub max_queued_bytes: usize,
}

#[cfg(test)]
impl Limits {
    /// Limits for a test that opens no connection.
    pub fn no_streams() -> Limits {
        Limits {
            max_message_bytes: 65535,
            tcp_idle_timeout: Duration::from_secs(60),
            tcp_message_timeout: Duration::from_secs(32),
            tcp_max_connections: 1,
            max_connections: 1,
            per_source_connections: 1,
            max_queued_bytes: 1 << 16,
        }
    }
}

/// Counters of the transports, shown by `show stats`.
#[derive(Debug, Default)]
pub struct Counters {
    pub udp_received: AtomicU64,
    pub udp_sent: AtomicU64,
    pub udp_oversize_dropped: AtomicU64,
    pub udp_send_failed: AtomicU64,
    pub tcp_accepted: AtomicU64,
    pub tcp_connected: AtomicU64,
    /// Accepted connections closed at once: the listener was at `tcp_max_connections`.
    pub tcp_refused_limit: AtomicU64,
    /// Accepted connections closed at once: their source held `per_source_connections`.
    pub tcp_refused_per_source: AtomicU64,
    /// Accepted connections closed at once: the box held `max_connections`.
    pub tcp_refused_max_connections: AtomicU64,
    /// Connections the engine asked for and not opened: the box held `max_connections`.
    pub tcp_connect_refused_max_connections: AtomicU64,
    pub tcp_closed_idle: AtomicU64,
    /// Connections closed because a message was not complete within its timeout.
    pub tcp_closed_slow_message: AtomicU64,
    /// Connections closed because the peer did not take a message within that timeout.
    pub tcp_closed_slow_write: AtomicU64,
    pub tcp_framing_errors: AtomicU64,
    pub tcp_received: AtomicU64,
    pub tcp_sent: AtomicU64,
    /// Messages dropped because their connection's queue held `QUEUE_LEN` messages.
    pub tcp_send_dropped: AtomicU64,
    /// Messages dropped because all queues together held `max_queued_bytes`.
    pub tcp_send_dropped_queued_bytes: AtomicU64,
    pub unsendable: AtomicU64,
    /// Messages for another SIP shard dropped because its queue was full (a shard that cannot
    /// keep up loses what an overloaded UDP socket would).
    pub shard_queue_full: AtomicU64,
    pub sctp_accepted: AtomicU64,
    pub sctp_connected: AtomicU64,
    /// Accepted associations shut down at once, for want of a slot (as for TCP).
    pub sctp_refused_limit: AtomicU64,
    pub sctp_refused_per_source: AtomicU64,
    pub sctp_refused_max_connections: AtomicU64,
    pub sctp_closed_idle: AtomicU64,
    /// Associations shut down because the proxy asked (an upstream's 503 with Retry-After).
    pub sctp_closed_asked: AtomicU64,
    pub sctp_received: AtomicU64,
    pub sctp_sent: AtomicU64,
    pub sctp_oversize_dropped: AtomicU64,
    /// SCTP messages that were not one SIP message (answered when they deserve it, dropped).
    pub sctp_bad_messages: AtomicU64,
}

impl Counters {
    /// Name and value of every counter.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("transport.udp.received", get(&self.udp_received)),
            ("transport.shard_queue_full", get(&self.shard_queue_full)),
            ("transport.udp.sent", get(&self.udp_sent)),
            (
                "transport.udp.oversize_dropped",
                get(&self.udp_oversize_dropped),
            ),
            ("transport.udp.send_failed", get(&self.udp_send_failed)),
            ("transport.tcp.accepted", get(&self.tcp_accepted)),
            ("transport.tcp.connected", get(&self.tcp_connected)),
            ("transport.tcp.refused_limit", get(&self.tcp_refused_limit)),
            (
                "transport.tcp.refused_per_source",
                get(&self.tcp_refused_per_source),
            ),
            (
                "transport.tcp.refused_max_connections",
                get(&self.tcp_refused_max_connections),
            ),
            (
                "transport.tcp.connect_refused_max_connections",
                get(&self.tcp_connect_refused_max_connections),
            ),
            ("transport.tcp.closed_idle", get(&self.tcp_closed_idle)),
            (
                "transport.tcp.closed_slow_message",
                get(&self.tcp_closed_slow_message),
            ),
            (
                "transport.tcp.closed_slow_write",
                get(&self.tcp_closed_slow_write),
            ),
            (
                "transport.tcp.framing_errors",
                get(&self.tcp_framing_errors),
            ),
            ("transport.tcp.received", get(&self.tcp_received)),
            ("transport.tcp.sent", get(&self.tcp_sent)),
            ("transport.tcp.send_dropped", get(&self.tcp_send_dropped)),
            (
                "transport.tcp.send_dropped_queued_bytes",
                get(&self.tcp_send_dropped_queued_bytes),
            ),
            ("transport.unsendable", get(&self.unsendable)),
            ("transport.sctp.accepted", get(&self.sctp_accepted)),
            ("transport.sctp.connected", get(&self.sctp_connected)),
            (
                "transport.sctp.refused_limit",
                get(&self.sctp_refused_limit),
            ),
            (
                "transport.sctp.refused_per_source",
                get(&self.sctp_refused_per_source),
            ),
            (
                "transport.sctp.refused_max_connections",
                get(&self.sctp_refused_max_connections),
            ),
            ("transport.sctp.closed_idle", get(&self.sctp_closed_idle)),
            ("transport.sctp.closed_asked", get(&self.sctp_closed_asked)),
            ("transport.sctp.received", get(&self.sctp_received)),
            ("transport.sctp.sent", get(&self.sctp_sent)),
            (
                "transport.sctp.oversize_dropped",
                get(&self.sctp_oversize_dropped),
            ),
            ("transport.sctp.bad_messages", get(&self.sctp_bad_messages)),
        ]
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The time the connection machines are told (the runtime's clock, which tests may pause).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Hands one message a stream connection received to the engine; a gone engine is the
/// connection's to hear.
async fn deliver(
    shared: &Shared,
    spec: ListenerSpec,
    flow: FlowId,
    remote: SocketAddr,
    bytes: Vec<u8>,
    conn: &mut stream::Connection,
) {
    let message = FromTransport::Message(Inbound {
        listener: spec.id,
        flow: Some(flow),
        source: remote,
        bytes,
    });
    if shared.to_engine.send(message).await.is_err() {
        conn.handle_engine_gone(now());
    }
}

/// Carries out one write on a stream connection (TCP `write_all`, an SCTP send), telling the
/// machine when it begins and ends; gives up when the machine does (the peer did not take it
/// within the message timeout, or a graceful close ran out of time). Whether it was written.
async fn timed_write(
    conn: &mut stream::Connection,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> bool {
    conn.handle_writing(now());
    tokio::pin!(write);
    while let Some(deadline) = conn.poll_timeout() {
        tokio::select! {
            written = &mut write => {
                if written.is_ok() {
                    conn.handle_sent(now());
                    return true;
                }
                conn.handle_io_error(now());
                return false;
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                conn.handle_timeout(now());
                if !conn.may_write() {
                    return false;
                }
            }
        }
    }
    false
}

/// A live connection as seen from outside its task: where it goes and its outgoing queue.
#[derive(Debug)]
struct FlowEntry {
    listener: ListenerId,
    remote: SocketAddr,
    queue: mpsc::Sender<Queued>,
    /// Wakes the association's task to end it gracefully (SCTP; `None` for TCP, which the
    /// proxy never asks to close).
    close: Option<Arc<tokio::sync::Notify>>,
}

/// Every live connection, by id and by (listener, remote address) for reuse (RFC 3261 §18).
#[derive(Debug, Default)]
pub struct FlowTable {
    by_id: HashMap<FlowId, FlowEntry>,
    by_remote: HashMap<(ListenerId, SocketAddr), FlowId>,
}

impl FlowTable {
    fn insert(&mut self, id: FlowId, entry: FlowEntry) {
        self.by_remote.insert((entry.listener, entry.remote), id);
        self.by_id.insert(id, entry);
    }

    fn remove(&mut self, id: FlowId) {
        if let Some(entry) = self.by_id.remove(&id) {
            let key = (entry.listener, entry.remote);
            if self.by_remote.get(&key) == Some(&id) {
                self.by_remote.remove(&key);
            }
        }
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// What every transport task and the engine share.
#[derive(Debug)]
pub struct Shared {
    pub listeners: Vec<ListenerSpec>,
    pub limits: Limits,
    pub counters: Counters,
    /// Where received messages go.
    pub to_engine: mpsc::Sender<FromTransport>,
    /// False while the system is offline: TCP listeners close (new connections are refused)
    /// and open connections are closed gracefully (SPEC §2, offline).
    pub serving: watch::Receiver<bool>,
    flows: Mutex<FlowTable>,
    next_flow: AtomicU64,
    /// Connection slots per source, per listener and in total, across workers and the engine.
    admission: Mutex<Admission>,
    /// Bytes waiting in every connection's send queue.
    send_budget: Arc<SendBudget>,
    /// One sending handle per UDP listener (a duplicate of the receiving socket: same port).
    udp_send: Vec<Option<std::net::UdpSocket>>,
    /// The UDP sockets until their owner (the engine) takes them.
    udp_receive: Mutex<Vec<(ListenerSpec, std::net::UdpSocket)>>,
    /// Where outgoing connections run (the engine's runtime).
    connect_on: Mutex<Option<tokio::runtime::Handle>>,
}

impl Shared {
    fn flows(&self) -> MutexGuard<'_, FlowTable> {
        // A panic while holding this lock leaves the table consistent (every change is one
        // insert or remove), so a poisoned lock is still usable.
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_flow_id(&self) -> FlowId {
        FlowId(self.next_flow.fetch_add(1, Ordering::Relaxed))
    }

    /// How many connections are open right now.
    pub fn open_connections(&self) -> usize {
        self.flows().len()
    }

    /// Bytes waiting in the send queues of all connections.
    pub fn queued_bytes(&self) -> usize {
        self.send_budget.used()
    }

    fn admission(&self) -> MutexGuard<'_, Admission> {
        // Every change under this lock is a few integer updates that cannot panic halfway.
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the UDP sockets to their one reader, once; later calls get none.
    pub fn take_udp(&self) -> Vec<(ListenerSpec, std::net::UdpSocket)> {
        std::mem::take(&mut *self.udp_receive.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sets the runtime on which outgoing connections are opened.
    pub fn set_connect_runtime(&self, handle: tokio::runtime::Handle) {
        *self.connect_on.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Sends one message the engine produced. Never blocks: a full queue or a full socket
    /// buffer drops the message (SIP over UDP retransmits; a stuck TCP peer is not waited for).
    /// Sends `t`. A datagram leaves at once, and its buffer comes back for the proxy to write a
    /// later message into (`Proxy::recycle`); a stream message's buffer goes to its connection.
    pub fn send(self: &Arc<Self>, t: Transmit) -> Option<Vec<u8>> {
        let Some(spec) = self.listeners.get(usize::from(t.listener.0)) else {
            bump(&self.counters.unsendable);
            tracing::warn!(
                listener = t.listener.0,
                "transmit on an unknown listener dropped"
            );
            return Some(t.bytes);
        };
        match spec.transport {
            Transport::Udp => {
                self.send_udp(spec, &t);
                Some(t.bytes)
            }
            Transport::Tcp | Transport::Sctp => {
                self.send_stream(spec, t);
                None
            }
        }
    }

    /// Ends a connection or association gracefully, as the engine asked (SPEC §3: an SCTP
    /// upstream that answered 503 with Retry-After).
    pub fn close(&self, c: &proxy::Close) {
        let flows = self.flows();
        let Some(entry) = flows.by_id.get(&c.flow) else {
            return;
        };
        if let Some(close) = &entry.close {
            bump(&self.counters.sctp_closed_asked);
            tracing::info!(peer = %c.remote, flow = c.flow.0, "shutting the association down, as asked");
            close.notify_one();
        }
    }

    fn send_udp(&self, spec: &ListenerSpec, t: &Transmit) {
        let Some(Some(sock)) = self.udp_send.get(usize::from(spec.id.0)) else {
            bump(&self.counters.unsendable);
            return;
        };
        match sock.send_to(&t.bytes, t.destination) {
            Ok(_) => bump(&self.counters.udp_sent),
            Err(e) => {
                bump(&self.counters.udp_send_failed);
                tracing::debug!(peer = %t.destination, error = %e, "UDP send failed");
            }
        }
    }

    /// TCP or SCTP: on the connection named, else on one to the same peer, else on a new one.
    fn send_stream(self: &Arc<Self>, spec: &ListenerSpec, t: Transmit) {
        let destination = t.destination;
        let Some(message) = self.send_budget.reserve(t.bytes) else {
            bump(&self.counters.tcp_send_dropped_queued_bytes);
            // Debug only: a peer that does not read causes this at will; `show stats` counts it.
            tracing::debug!(peer = %destination, "TCP send queues full (max_queued_bytes), message dropped");
            return;
        };
        let mut flows = self.flows();
        // The connection the engine named, else any connection to that peer (reuse), else a new
        // one: RFC 3261 §18.2.2 has a response go to a new connection when the old one is gone.
        let id = t
            .flow
            .filter(|id| flows.by_id.contains_key(id))
            .or_else(|| flows.by_remote.get(&(spec.id, destination)).copied());
        if let Some(entry) = id.and_then(|id| flows.by_id.get(&id)) {
            if entry.queue.try_send(message).is_err() {
                bump(&self.counters.tcp_send_dropped);
                tracing::debug!(peer = %destination, "TCP send queue full, message dropped");
            }
            return;
        }
        let handle = self
            .connect_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(handle) = handle else {
            bump(&self.counters.unsendable);
            return;
        };
        let id = self.new_flow_id();
        let Some(slot) = Slot::outbound(self) else {
            drop(flows);
            bump(&self.counters.tcp_connect_refused_max_connections);
            tracing::debug!(peer = %destination, "connection limit (max_connections) reached; not connecting, message dropped");
            // The engine hears of this flow the way it hears of a failed connect.
            handle.spawn(tcp::announce_closed(
                Arc::clone(self),
                *spec,
                id,
                destination,
            ));
            return;
        };
        let (queue, outgoing) = mpsc::channel(tcp::QUEUE_LEN);
        // The first message waits in the queue while the connection is being set up; the
        // queue is new and empty, so it has room.
        let _ = queue.try_send(message);
        let close =
            (spec.transport == Transport::Sctp).then(|| Arc::new(tokio::sync::Notify::new()));
        flows.insert(
            id,
            FlowEntry {
                listener: spec.id,
                remote: destination,
                queue,
                close: close.clone(),
            },
        );
        drop(flows);
        match close {
            Some(close) => handle.spawn(sctp::connect(
                Arc::clone(self),
                *spec,
                id,
                destination,
                outgoing,
                close,
                slot,
            )),
            None => handle.spawn(tcp::connect(
                Arc::clone(self),
                *spec,
                id,
                destination,
                outgoing,
                slot,
            )),
        };
    }
}

/// A connection's hold on its admission slot, given back when the connection ends (dropped),
/// whichever way it ends.
#[derive(Debug)]
pub(crate) struct Slot {
    shared: Arc<Shared>,
    /// The listener and source of an inbound connection; `None` for an outbound one.
    inbound: Option<(ListenerId, IpAddr)>,
}

impl Slot {
    /// A slot for a connection accepted on `listener` from `source`, or why there is none.
    fn inbound(
        shared: &Arc<Shared>,
        listener: ListenerId,
        source: IpAddr,
    ) -> Result<Slot, Refused> {
        shared
            .admission()
            .admit_inbound(usize::from(listener.0), source)?;
        Ok(Slot {
            shared: Arc::clone(shared),
            inbound: Some((listener, source)),
        })
    }

    /// A slot for a connection the box opens, if the total allows one.
    fn outbound(shared: &Arc<Shared>) -> Option<Slot> {
        shared.admission().admit_outbound().ok()?;
        Some(Slot {
            shared: Arc::clone(shared),
            inbound: None,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut admission = self.shared.admission();
        match self.inbound {
            Some((listener, source)) => admission.release_inbound(usize::from(listener.0), source),
            None => admission.release_outbound(),
        }
    }
}

/// Sockets bound for one worker, not yet handed to its runtime.
#[derive(Debug)]
pub struct WorkerSockets {
    pub tcp: Vec<(ListenerSpec, std::net::TcpListener)>,
    /// SCTP listeners, on the first worker only (one listening socket per address).
    pub sctp: Vec<(ListenerSpec, ::sctp::Listener)>,
}

/// Why the SIP sockets could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot bind {transport} listener {addr}: {source}")]
    Bind {
        transport: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("too many listeners ({0}); at most 65535")]
    TooMany(usize),
}

/// The listeners of a configuration, numbered in file order.
pub fn listener_specs(config: &Config) -> Result<Vec<ListenerSpec>, BindError> {
    let mut specs = Vec::new();
    for (i, l) in config.listeners().enumerate() {
        let id = u16::try_from(i).map_err(|_| BindError::TooMany(i + 1))?;
        specs.push(ListenerSpec {
            id: ListenerId(id),
            transport: match l.transport {
                config::Transport::Udp => Transport::Udp,
                config::Transport::Tcp => Transport::Tcp,
                config::Transport::Sctp => Transport::Sctp,
            },
            addr: l.addr,
            freebind: config
                .twin
                .as_ref()
                .is_some_and(|t| t.service_address.iter().any(|s| s.addr.ip == l.addr.ip())),
        });
    }
    Ok(specs)
}

/// Binds every TCP listener once per worker and every UDP listener once (for the engine), and
/// builds the shared state.
pub fn bind_all(
    specs: Vec<ListenerSpec>,
    limits: Limits,
    workers: usize,
    to_engine: mpsc::Sender<FromTransport>,
    serving: watch::Receiver<bool>,
) -> Result<(Arc<Shared>, Vec<WorkerSockets>), BindError> {
    let mut per_worker = Vec::new();
    for worker in 0..workers.max(1) {
        let mut sockets = WorkerSockets {
            tcp: Vec::new(),
            sctp: Vec::new(),
        };
        for spec in specs.iter().filter(|s| s.transport == Transport::Tcp) {
            sockets.tcp.push((*spec, bind_tcp(spec)?));
        }
        if worker == 0 {
            for spec in specs.iter().filter(|s| s.transport == Transport::Sctp) {
                sockets
                    .sctp
                    .push((*spec, sctp::bind(spec, limits.max_message_bytes)?));
            }
        }
        per_worker.push(sockets);
    }
    let mut udp_send: Vec<Option<std::net::UdpSocket>> = specs.iter().map(|_| None).collect();
    let mut udp_receive = Vec::new();
    for spec in specs.iter().filter(|s| s.transport == Transport::Udp) {
        let sock = bind_udp(spec)?;
        let dup = sock.try_clone().map_err(|source| BindError::Bind {
            transport: "udp",
            addr: spec.addr,
            source,
        })?;
        udp_send[usize::from(spec.id.0)] = Some(dup);
        udp_receive.push((*spec, sock));
    }
    let admission = Admission::new(
        Caps {
            per_source: limits.per_source_connections,
            per_listener: limits.tcp_max_connections,
            total: limits.max_connections,
            lingering: stream::MAX_LINGERING,
        },
        specs.len(),
    );
    let shared = Shared {
        admission: Mutex::new(admission),
        send_budget: SendBudget::new(limits.max_queued_bytes),
        listeners: specs,
        limits,
        counters: Counters::default(),
        to_engine,
        serving,
        flows: Mutex::new(FlowTable::default()),
        next_flow: AtomicU64::new(1),
        udp_send,
        udp_receive: Mutex::new(udp_receive),
        connect_on: Mutex::new(None),
    };
    Ok((Arc::new(shared), per_worker))
}

fn bind_udp(spec: &ListenerSpec) -> Result<std::net::UdpSocket, BindError> {
    let addr = spec.addr;
    let err = |source| BindError::Bind {
        transport: "udp",
        addr,
        source,
    };
    let sock =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    sock.set_reuse_port(true).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    // Bursts of retransmissions and registrations arrive together; a larger buffer rides them
    // out. The kernel caps the value at net.core.rmem_max, so failure here is not fatal.
    let _ = sock.set_recv_buffer_size(4 << 20);
    set_freebind(&sock, spec).map_err(err)?;
    sock.bind(&addr.into()).map_err(err)?;
    Ok(sock.into())
}

/// Binds a TCP listener (also used to re-open one when the system comes back online).
pub fn bind_tcp(spec: &ListenerSpec) -> Result<std::net::TcpListener, BindError> {
    let addr = spec.addr;
    let err = |source| BindError::Bind {
        transport: "tcp",
        addr,
        source,
    };
    let sock =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    sock.set_reuse_address(true).map_err(err)?;
    sock.set_reuse_port(true).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    set_freebind(&sock, spec).map_err(err)?;
    sock.bind(&addr.into()).map_err(err)?;
    sock.listen(1024).map_err(err)?;
    Ok(sock.into())
}

fn set_freebind(sock: &Socket, spec: &ListenerSpec) -> std::io::Result<()> {
    match (spec.freebind, spec.addr) {
        (false, _) => Ok(()),
        (true, SocketAddr::V4(_)) => sock.set_freebind_v4(true),
        (true, SocketAddr::V6(_)) => sock.set_freebind_v6(true),
    }
}

/// Runs one worker's listeners until the process ends. Called inside the worker's runtime.
pub async fn run_worker(shared: Arc<Shared>, sockets: WorkerSockets) {
    let mut tasks = tokio::task::JoinSet::new();
    for (spec, listener) in sockets.tcp {
        tasks.spawn(tcp::accept_loop(Arc::clone(&shared), spec, listener));
    }
    for (spec, listener) in sockets.sctp {
        tasks.spawn(sctp::accept_loop(Arc::clone(&shared), spec, listener));
    }
    while tasks.join_next().await.is_some() {}
    // A worker without TCP listeners (UDP is the engine's) still runs: its heartbeat is what
    // `show health` and the watchdog look at, and its end would stop the daemon.
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests;
