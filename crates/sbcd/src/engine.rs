//! The engine thread: the one owner of the node's core (the SIP proxy and the system-state
//! machine, composed in the pure `node` crate).
//!
//! Why one owner fed by channels (and not a proxy behind a mutex locked by every worker): the
//! proxy's tables (transactions, registrations, dialogs) and the system state change together —
//! the last BYE lowers the session count, which ends the drain, which must reach the proxy
//! before the next message is judged. With one owner that chain runs to completion inside one
//! loop iteration, with no lock ordering to get wrong, and timers are one `sleep_until` on the
//! earliest deadline of the core. Workers only do socket I/O and hand messages over a
//! bounded queue. Whether the single owner becomes the bottleneck is for the benchmark to say
//! (docs/engine.md).
//!
//! Every decision is made by the core: this loop only carries inputs in (messages, time,
//! operator commands, button toggles) and outputs out (transmits, events to log, state changes to
//! the transports, the panel, subscribers and the disk).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::{Reply, Request, Response, SystemStateInfo, TargetState};
use system_state::{Cause, SystemState};
use tokio::sync::{broadcast, mpsc, watch};

use crate::control_server::Ask;
use crate::replica_link::{StreamIn, StreamOut};
use crate::sip_core::SipCore;
use crate::transport::{udp, FromTransport, Shared};
use crate::twin_link;

/// How many queued messages the engine handles before it looks at commands and timers again.
const BATCH: usize = 64;

/// The state as the rest of the daemon follows it (panel, health).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateView {
    pub state: SystemState,
    pub since_unix_ms: u64,
    /// The twin role, for the panel's standby pattern (green blinking slowly).
    pub role: panel::TwinRole,
}

/// A command that is not a control request: the panel's long press.
#[derive(Debug)]
pub enum Command {
    /// A completed long press of the maintenance button; what it does was decided by the panel
    /// at release. `reply` answers a simulated press once the state machine has acted.
    Button {
        action: panel::HoldAction,
        reply: Option<tokio::sync::oneshot::Sender<Response>>,
    },
}

/// The twin's I/O as the daemon hands it to the engine: the keep-alive sockets (made tokio
/// sockets on the engine's runtime) and the control plane's task that carries out address
/// actions and answers probes.
#[derive(Debug)]
pub struct TwinLink {
    pub sockets: Vec<(twin::PathId, std::net::UdpSocket, SocketAddr)>,
    pub actions: mpsc::UnboundedSender<twin::AddressAction>,
    pub found: mpsc::UnboundedReceiver<twin_link::ActionDone>,
    /// The replication connection's task (hot standby): writes to it, what it read.
    pub stream: Option<(
        mpsc::UnboundedSender<StreamOut>,
        mpsc::UnboundedReceiver<StreamIn>,
    )>,
}

/// What the engine sends to the twin with, once running (set by [`Engine::run`]).
#[derive(Debug)]
pub struct TwinOut {
    paths: Vec<(twin::PathId, tokio::net::UdpSocket, SocketAddr)>,
    actions: mpsc::UnboundedSender<twin::AddressAction>,
    /// Writes to the replication connection.
    stream: Option<mpsc::UnboundedSender<StreamOut>>,
    /// The replication connection the node's session runs on (0: none).
    stream_gen: u64,
    /// A `switchover` waiting for its outcome.
    switchover: Option<tokio::sync::oneshot::Sender<Response>>,
}

/// Everything the engine thread needs; built by the daemon, consumed by [`Engine::run`].
#[derive(Debug)]
pub struct Engine {
    pub node: String,
    pub core: SipCore,
    /// The twin's sockets and address task, when `[twin]` is configured.
    pub twin: Option<TwinLink>,
    pub transports: Arc<Shared>,
    pub inbound: mpsc::Receiver<FromTransport>,
    pub asks: mpsc::Receiver<Ask>,
    pub commands: mpsc::Receiver<Command>,
    /// True unless offline; the transports follow it (TCP refused while offline).
    pub serving: watch::Sender<bool>,
    /// The state for the panel and others who need only the latest value.
    pub view: watch::Sender<StateView>,
    /// Transitions and notices for control-socket subscribers.
    pub events: broadcast::Sender<control::Event>,
    /// Where the operator's intent is saved (`[state] dir`).
    pub state_dir: std::path::PathBuf,
    /// Wall-clock time of entering the current state (for `since`).
    pub since_unix_ms: u64,
    /// State changes since start, by (from, to): `show stats` lists them as
    /// `state.transitions.<from>_to_<to>` (a drain begun is `online_to_draining`).
    pub transitions: std::collections::BTreeMap<(SystemState, SystemState), u64>,
    /// Set by [`Engine::run`] from `twin`; `None` when building an engine.
    pub twin_out: Option<TwinOut>,
    /// `show registrations` under way, a page per turn of the loop (empty when building).
    pub listings: VecDeque<Listing>,
    /// The SIP shards other than the core's own (shard 0), in order from shard 1 (SPEC §6;
    /// empty with one shard), how messages are spread over them, and their reports.
    pub shards: Shards,
}

/// The engine's side of the box's SIP shards.
#[derive(Debug, Default)]
pub struct Shards {
    pub links: Vec<crate::shard::Link>,
    pub map: proxy::Shards,
    /// Every shard's reports, and the notes of workers that left their shard with a
    /// deadline the engine's timer must include.
    pub reports: Option<mpsc::UnboundedReceiver<(usize, crate::shard::FromShard)>>,
}

impl Shards {
    /// The earliest deadline of the shards the engine runs the timers of.
    fn deadline(&self) -> Option<Instant> {
        self.links
            .iter()
            .filter_map(crate::shard::Link::deadline)
            .min()
    }
}

/// How many bindings `show registrations` reads per turn of the engine loop: a few
/// milliseconds of work, so SIP keeps flowing while a full cache is listed.
const LISTING_PAGE: usize = 1000;

/// A `show registrations` being read from the core a page at a time.
#[derive(Debug)]
pub struct Listing {
    /// The AoR and contact of the last binding read.
    after: Option<(String, String)>,
    read: Vec<control::RegistrationInfo>,
    reply: tokio::sync::oneshot::Sender<Response>,
}

/// Milliseconds since the Unix epoch, for operators (never for deciding).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Engine {
    /// Runs the loop until every input channel is closed.
    pub async fn run(mut self) {
        // The core was built in the restored state: a restored drain with nothing left has
        // already ended, and everyone must hear it.
        self.flush();
        let mut commands_open = true;
        let (mut twin_found, mut stream_in, twin_out) = match self.twin.take().map(start_twin) {
            Some(Ok((found, stream_in, out))) => (Some(found), stream_in, Some(out)),
            Some(Err(e)) => {
                tracing::error!(error = %e, "twin: cannot use the keep-alive sockets; the node runs alone");
                (None, None, None)
            }
            None => (None, None, None),
        };
        self.twin_out = twin_out;
        // UDP is read here, on the owner's thread: see `transport::udp` for why.
        let mut udp = udp::Ingress::new(&self.transports, self.transports.take_udp());
        let mut shard_reports = self.shards.reports.take();
        // One timer, moved when the earliest deadline moves, instead of a new one per turn.
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed = None;
        // The last batch read ended at `BATCH` with more waiting: the engine is behind, so it
        // hands other shards' messages to their workers instead of running them itself
        // (`crate::shard`), until a batch empties what was waiting.
        let mut backlog = false;
        loop {
            self.step_listing();
            let deadline = self
                .core
                .poll_timeout()
                .into_iter()
                .chain(self.shards.deadline())
                .min();
            if deadline != armed {
                if let Some(at) = deadline {
                    sleep.as_mut().reset(at.into());
                }
                armed = deadline;
            }
            tokio::select! {
                biased;
                // Commands first: a state change must reach the proxy before queued messages
                // are judged.
                ask = self.asks.recv() => match ask {
                    Some(ask) => self.answer(ask),
                    None => return,
                },
                // The twin before SIP traffic: a keep-alive late behind a burst of messages is
                // how a busy box gets taken for a dead one.
                () = twin_readable(&self.twin_out) => {
                    self.drain_twin(Instant::now());
                    self.flush();
                }
                // The replication stream next: the active reads the twin's acknowledgements
                // (a switchover waits for them), the standby the records it must hold.
                Some(message) = recv_unbounded(&mut stream_in) => {
                    self.stream_message(Instant::now(), message);
                    while let Some(Ok(message)) = stream_in.as_mut().map(mpsc::UnboundedReceiver::try_recv) {
                        self.stream_message(Instant::now(), message);
                    }
                    self.flush();
                }
                // The other shards' counts and records (a drain ends on them), and workers
                // done with a shard that has a deadline (the loop's top arms the timer for it).
                Some((shard, report)) = recv_unbounded(&mut shard_reports) => {
                    let now = Instant::now();
                    self.shard_report(now, shard, report);
                    while let Some(Ok((shard, report))) = shard_reports.as_mut().map(mpsc::UnboundedReceiver::try_recv) {
                        self.shard_report(now, shard, report);
                    }
                    self.flush();
                }
                Some(done) = recv_unbounded(&mut twin_found) => {
                    let now = Instant::now();
                    match done {
                        twin_link::ActionDone::Probed(conflicts) => {
                            self.core.handle_probe_result(now, conflicts)
                        }
                        twin_link::ActionDone::Announced => self.core.handle_addresses_announced(now),
                    }
                    self.flush();
                }
                command = self.commands.recv(), if commands_open => match command {
                    Some(Command::Button { action, reply }) => self.button(action, reply),
                    // No panel (or it stopped): the engine carries on without button presses.
                    None => commands_open = false,
                },
                message = self.inbound.recv() => match message {
                    Some(message) => {
                        let now = Instant::now();
                        // Flushed after every message: a state change one message causes (the
                        // last BYE ending a drain) is in force for the next one.
                        let inline = !backlog;
                        self.dispatch(now, message, inline);
                        backlog = true;
                        for _ in 1..BATCH {
                            match self.inbound.try_recv() {
                                Ok(message) => self.dispatch(now, message, inline),
                                Err(_) => {
                                    backlog = false;
                                    break;
                                }
                            }
                        }
                        // Under sustained load this branch always wins the biased select:
                        // run what is due here so retransmissions and the guard never starve.
                        if deadline.is_some_and(|at| at <= now) {
                            self.timers(now);
                        }
                        self.flush();
                    }
                    None => return,
                },
                index = udp.ready(), if !udp.is_empty() => {
                    let now = Instant::now();
                    // Every datagram waiting on the socket after one wake-up, each judged (and
                    // its effects flushed) before the next, as for queued messages.
                    let inline = !backlog;
                    backlog = true;
                    for _ in 0..BATCH {
                        let Some(d) = udp.try_recv(&self.transports, index) else {
                            backlog = false;
                            break;
                        };
                        match self.shards.map.of_message(d.bytes) {
                            0 => {
                                self.core.handle_datagram(now, d.input());
                                self.flush();
                            }
                            k => {
                                if let Some(link) = self.shards.links.get(k - 1) {
                                    link.datagram(&self.transports, now, inline, d.input());
                                }
                            }
                        }
                    }
                    if deadline.is_some_and(|at| at <= now) {
                        self.timers(now);
                    }
                    self.flush();
                }
                // Nothing else ready: the next page of a listing (at the loop's top).
                () = std::future::ready(()), if !self.listings.is_empty() => {}
                () = &mut sleep, if deadline.is_some() => {
                    self.timers(Instant::now());
                    self.flush();
                }
            }
        }
    }

    /// What a shard told the engine: a report for the node; a deadline note needs nothing
    /// here (the loop's top arms the timer).
    fn shard_report(&mut self, now: Instant, shard: usize, report: crate::shard::FromShard) {
        if let crate::shard::FromShard::Report(report) = report {
            self.core.handle_shard_report(now, shard, report);
        }
    }

    /// Whatever is due at `now`: the twin's keep-alives first (after a stall, a loaded
    /// machine or a long batch, the silence timers would otherwise fire while they sit unread
    /// in the socket), then the core's timers and those of the idle shards.
    fn timers(&mut self, now: Instant) {
        self.drain_twin(now);
        self.core.handle_timeout(now);
        for link in &self.shards.links {
            link.timers(now);
        }
    }

    /// A message from a transport worker: to the core, or to the shard its Call-ID hashes to
    /// (run here if `inline` and that shard is idle).
    fn dispatch(&mut self, now: Instant, message: FromTransport, inline: bool) {
        let shard = match &message {
            FromTransport::Message(m) => self.shards.map.of_message(&m.bytes),
            FromTransport::Closed { .. } => 0,
        };
        match (shard, message) {
            (k @ 1.., FromTransport::Message(m)) => {
                if let Some(link) = self.shards.links.get(k - 1) {
                    link.message(&self.transports, now, inline, m);
                }
            }
            (_, message) => {
                self.core.handle(now, message);
                self.flush();
            }
        }
    }

    /// Carries every output of the core out: transmits to the transports, state changes to
    /// every follower.
    fn flush(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            if let Some(bytes) = self.transports.send(t) {
                self.core.recycle(bytes);
            }
        }
        // After the transmits: the ACK of the 503 that asked for a close leaves on the
        // association before its SHUTDOWN.
        while let Some(c) = self.core.poll_close() {
            self.transports.close(&c);
        }
        while let Some(event) = self.core.poll_event() {
            match event {
                node::Event::StateChanged(t) => self.transition(t),
                node::Event::AcceptConnections(accept) => {
                    self.serving.send_replace(accept);
                }
                node::Event::GuardExpired {
                    sessions,
                    registrations,
                } => tracing::warn!(
                    sessions,
                    registrations,
                    "guard expired: ending remaining calls and registrations"
                ),
                // Logged by the core adapter as they came.
                node::Event::Proxy(_) => {}
                node::Event::Twin(event) => self.twin_event(&event),
                node::Event::Replication(event) => self.replication_event(event),
            }
        }
        // A state change's own transmits (the guard's BYEs) come after the events.
        while let Some(t) = self.core.poll_transmit() {
            if let Some(bytes) = self.transports.send(t) {
                self.core.recycle(bytes);
            }
        }
        if let Some(out) = &self.twin_out {
            while let Some(t) = self.core.poll_twin_transmit() {
                if let Some((_, socket, peer)) = out.paths.iter().find(|(p, _, _)| *p == t.path) {
                    // A full socket buffer loses one keep-alive; the next interval sends another.
                    if let Err(e) = socket.try_send_to(&t.payload, *peer) {
                        tracing::debug!(path = ?t.path, error = %e, "twin: keep-alive not sent");
                    }
                }
            }
            while let Some(action) = self.core.poll_address_action() {
                tracing::info!(?action, "twin: address action");
                if out.actions.send(action).is_err() {
                    tracing::error!("twin: the address task has stopped");
                }
            }
        }
        self.flush_stream();
        while let Some((shard, command)) = self.core.poll_shard_command() {
            if let Some(link) = shard.checked_sub(1).and_then(|i| self.shards.links.get(i)) {
                link.command(Instant::now(), command);
            }
        }
    }

    /// Writes what the replication session has for its connection; ends a connection whose
    /// session is over.
    fn flush_stream(&mut self) {
        let Some(out) = &mut self.twin_out else {
            return;
        };
        let (Some(stream), gen) = (&out.stream, out.stream_gen) else {
            return;
        };
        if gen == 0 {
            return;
        }
        while let Some(bytes) = self.core.poll_stream_bytes() {
            let _ = stream.send(StreamOut::Write { gen, bytes });
        }
        if !self.core.stream_open() {
            let _ = stream.send(StreamOut::Drop { gen });
            out.stream_gen = 0;
        }
    }

    /// One message of the replication connection's task.
    fn stream_message(&mut self, now: Instant, message: StreamIn) {
        let Some(out) = &mut self.twin_out else {
            return;
        };
        match message {
            StreamIn::Opened { gen } => {
                out.stream_gen = gen;
                let mut nonce = [0u8; 16];
                if let Err(e) = getrandom::getrandom(&mut nonce) {
                    tracing::error!(error = %e, "twin: no random bytes for the replication handshake");
                    return;
                }
                self.core.handle_stream_open(now, nonce);
            }
            StreamIn::Bytes { gen, bytes } if gen == out.stream_gen => {
                self.core.handle_stream_bytes(now, &bytes);
            }
            StreamIn::Closed { gen, why } if gen == out.stream_gen => {
                out.stream_gen = 0;
                tracing::info!(why = %why, "twin: replication connection closed");
                self.core.handle_stream_closed(now);
            }
            // An earlier connection's leftovers.
            StreamIn::Bytes { .. } | StreamIn::Closed { .. } => {}
        }
    }

    /// A replication event to the journal, the console and a waiting `switchover`.
    fn replication_event(&mut self, event: node::replication::Event) {
        use node::replication::Event as R;
        let message = match &event {
            R::Synced { records, took } => format!(
                "synced: holding the twin's {records} records (snapshot taken in {} ms)",
                took.as_millis()
            ),
            R::Closed(reason) => format!("replication connection ended: {reason}"),
            R::Rejected(why) => {
                tracing::warn!(why = %why, "twin: replicated record refused");
                return;
            }
            R::SwitchoverReleased { seq, waited } => format!(
                "switchover: the twin holds every record (up to {seq}, confirmed in {} ms); service addresses released",
                waited.as_millis()
            ),
            R::SwitchoverAbandoned { seq, acked } => format!(
                "switchover abandoned: the twin confirmed records up to {acked} of {seq} in time; this node serves on"
            ),
        };
        tracing::warn!(event = %message, "twin");
        if matches!(
            event,
            R::SwitchoverReleased { .. } | R::SwitchoverAbandoned { .. }
        ) {
            if let Some(reply) = self.twin_out.as_mut().and_then(|o| o.switchover.take()) {
                let response = match event {
                    R::SwitchoverReleased { .. } => Response::Ok {
                        reply: Reply::Done {
                            message: message.clone(),
                        },
                    },
                    _ => Response::Error {
                        message: message.clone(),
                    },
                };
                let _ = reply.send(response);
            }
        }
        let _ = self.events.send(control::Event::Twin { message });
    }

    /// Hands every keep-alive waiting on the twin's sockets to the core (only those from the
    /// path's configured peer address; the MAC decides the rest).
    fn drain_twin(&mut self, now: Instant) {
        let Some(out) = &self.twin_out else {
            return;
        };
        let mut buf = [0u8; twin::MAX_DATAGRAM + 1];
        for (path, socket, peer) in &out.paths {
            loop {
                match socket.try_recv_from(&mut buf) {
                    Ok((n, from)) if from == *peer => {
                        self.core.handle_twin_datagram(now, *path, &buf[..n]);
                    }
                    Ok((_, from)) => {
                        tracing::debug!(path = ?path, %from, "twin: datagram from a stranger dropped");
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!(path = ?path, error = %e, "twin: receive failed");
                        break;
                    }
                }
            }
        }
    }

    /// A twin event to the journal and, when an operator should hear of it, the console.
    fn twin_event(&self, event: &twin::Event) {
        if let twin::Event::RoleChanged { to, .. } = event {
            let role = match to {
                twin::Role::Active => panel::TwinRole::Active,
                twin::Role::Standby => panel::TwinRole::Standby,
            };
            self.view.send_modify(|v| v.role = role);
        }
        let message = match event {
            twin::Event::Dropped { path, reason } => {
                tracing::warn!(path = ?path, reason = ?reason, "twin: keep-alive dropped");
                return;
            }
            twin::Event::RoleChanged {
                from,
                to,
                term,
                cause,
            } => format!("role {from:?} -> {to:?} (term {term}, {cause:?})"),
            twin::Event::PathDown(path) => format!("path {path:?} down: no keep-alive for the detection time"),
            twin::Event::PathUp(path) => format!("path {path:?} up again"),
            twin::Event::TwinLost => "twin lost: silent on every path and no answer to the status query".into(),
            twin::Event::TwinFound => "twin heard".into(),
            twin::Event::TwinRestarted { epoch } => format!("twin restarted (epoch {epoch})"),
            twin::Event::TakeoverStarted { cause, term } => {
                format!("taking over the service addresses ({cause:?}, term {term}): probing")
            }
            twin::Event::TakeoverDone(r) => format!(
                "service addresses claimed ({:?}, term {}): twin silent {} ms, decision to claim {} ms, probe {} ms",
                r.cause,
                r.term,
                r.twin_silent_for.map_or(0, |d| d.as_millis()),
                r.decision_to_claim.as_millis(),
                r.probe.as_millis()
            ),
            twin::Event::TakeoverAbandoned { our_term, their_term } => {
                format!("takeover abandoned: the twin claims with term {their_term} (ours {our_term})")
            }
            twin::Event::Yielded { our_term, their_term } => {
                format!("service addresses released: the twin claims with term {their_term} (ours {our_term})")
            }
            twin::Event::ProbeConflict(ips) => format!("probe found {ips:?} in use: not claimed"),
            twin::Event::ProbeUnanswered => "probe unanswered: not claimed".into(),
        };
        tracing::warn!(event = %message, "twin");
        let _ = self.events.send(control::Event::Twin { message });
    }

    /// One state change, reported everywhere (SPEC §2: journal, console, LEDs, twin).
    fn transition(&mut self, t: system_state::Transition) {
        // The proxy already judges by the new state (the node saw to it); the transports
        // follow the core's word on connections (flush picks it up).
        self.since_unix_ms = unix_ms();
        *self.transitions.entry((t.from, t.to)).or_default() += 1;
        self.view.send_modify(|v| {
            v.state = t.to;
            v.since_unix_ms = self.since_unix_ms;
        });
        let (sessions, registrations) = self.core.counts();
        tracing::info!(
            from = %t.from,
            to = %t.to,
            cause = %t.cause,
            sessions,
            registrations,
            "system state changed"
        );
        let _ = self.events.send(control::Event::StateChanged {
            from: t.from,
            to: t.to,
            reason: t.cause.to_string(),
            at_unix_ms: self.since_unix_ms,
        });
        let record = system_state::persist::Record::new(
            system_state::persist::Intent::of(t.to),
            t.cause,
            self.since_unix_ms,
        );
        // Saved before anyone is answered: an operator told "offline" can restart the box
        // and find it offline. Transitions are rare, so the fsync is not on the hot path.
        match system_state::persist::save(&self.state_dir, &record) {
            Ok(()) => tracing::debug!(intent = ?record.intent, "system state saved"),
            Err(e) => tracing::error!(error = %e, "system state not saved"),
        }
    }

    fn button(
        &mut self,
        action: panel::HoldAction,
        reply: Option<tokio::sync::oneshot::Sender<Response>>,
    ) {
        let now = Instant::now();
        let outcome = match action {
            panel::HoldAction::StartDrain => self.core.request_offline(now, None, Cause::Button),
            panel::HoldAction::GoOnline => self.core.request_online(now, Cause::Button),
        };
        self.flush();
        if let Some(reply) = reply {
            let state = self.core.state();
            let message = match outcome {
                system_state::Outcome::Unchanged => {
                    format!("button hold: system-state already {state}")
                }
                _ => format!("button hold: system-state is now {state}"),
            };
            let _ = reply.send(Response::Ok {
                reply: Reply::Done { message },
            });
        }
    }

    fn answer(&mut self, ask: Ask) {
        let now = Instant::now();
        // Brings the core's clock (and so ages and expiries in snapshots) up to now.
        self.core.handle_timeout(now);
        self.flush();
        if matches!(ask.request, Request::Switchover) {
            // Answered when the twin has confirmed (or not): the operator hears the outcome.
            match self.core.request_switchover(now) {
                Ok(()) => {
                    if let Some(out) = &mut self.twin_out {
                        out.switchover = Some(ask.reply);
                    }
                    self.flush();
                }
                Err(e) => {
                    let _ = ask.reply.send(Response::Error {
                        message: format!("switchover refused: {e}"),
                    });
                }
            }
            return;
        }
        let response = match ask.request {
            Request::ShowSystemState => self.system_state_info(now),
            Request::SetSystemState {
                target: TargetState::Offline,
                guard_secs: Some(secs),
            } if secs > control::MAX_GUARD_SECS => Response::Error {
                message: format!(
                    "guard {secs} s is longer than the longest guard, {} s (a week)",
                    control::MAX_GUARD_SECS
                ),
            },
            Request::SetSystemState { target, guard_secs } => {
                let outcome = match target {
                    TargetState::Offline => self.core.request_offline(
                        now,
                        guard_secs.map(Duration::from_secs),
                        Cause::Operator,
                    ),
                    TargetState::Online => self.core.request_online(now, Cause::Operator),
                };
                self.flush();
                let state = self.core.state();
                let message = match outcome {
                    system_state::Outcome::Changed => format!("system-state is now {state}"),
                    system_state::Outcome::GuardChanged => {
                        let left = self
                            .core
                            .snapshot(now)
                            .guard_remaining
                            .map_or(0, |d| d.as_secs());
                        format!("still draining; guard now ends in {left}s")
                    }
                    system_state::Outcome::Unchanged => format!("system-state already {state}"),
                };
                Response::Ok {
                    reply: Reply::Done { message },
                }
            }
            Request::ShowTwin => match self.core.twin_status(now) {
                Some(status) => Response::Ok {
                    reply: Reply::Twin(Box::new(status)),
                },
                None => crate::control_server::not_available(
                    "twin",
                    "no [twin] in the configuration: this node runs alone",
                ),
            },
            Request::ShowCalls => Response::Ok {
                reply: Reply::Calls(self.core.calls()),
            },
            Request::ShowRegistrations => {
                // Answered when the last page is read (`step_listing`).
                self.listings.push_back(Listing {
                    after: None,
                    read: Vec::new(),
                    reply: ask.reply,
                });
                return;
            }
            Request::ShowUpstreams => Response::Ok {
                reply: Reply::Upstreams(
                    self.core.upstreams(
                        &self
                            .shards
                            .links
                            .iter()
                            .map(crate::shard::Link::upstream_failures)
                            .collect::<Vec<_>>(),
                        now,
                        unix_ms(),
                    ),
                ),
            },
            Request::ShowStats => {
                let others: Vec<proxy::Stats> = self
                    .shards
                    .links
                    .iter()
                    .map(crate::shard::Link::stats)
                    .collect();
                let mut counters = self.core.stats(&others);
                counters.extend(self.transports.counters.snapshot().into_iter().map(
                    |(name, value)| control::Counter {
                        name: name.to_string(),
                        value,
                    },
                ));
                counters.push(control::Counter {
                    name: "transport.tcp.open".into(),
                    value: self.transports.open_connections() as u64,
                });
                counters.push(control::Counter {
                    name: "transport.tcp.queued_bytes".into(),
                    value: self.transports.queued_bytes() as u64,
                });
                counters.extend(self.transitions.iter().map(|((from, to), &value)| {
                    control::Counter {
                        name: format!("state.transitions.{from}_to_{to}"),
                        value,
                    }
                }));
                Response::Ok {
                    reply: Reply::Stats(counters),
                }
            }
            other => Response::Error {
                message: format!("the engine does not answer {other:?}"),
            },
        };
        // The asker may have given up (client gone); nothing to do then.
        let _ = ask.reply.send(response);
    }

    /// Reads the next page of the oldest `show registrations` under way; answers it after its
    /// last page. Between two pages the loop handles what came meanwhile, so listing 100 000
    /// bindings never holds SIP for more than a page.
    fn step_listing(&mut self) {
        let Some(listing) = self.listings.front_mut() else {
            return;
        };
        let after = listing
            .after
            .as_ref()
            .map(|(aor, contact)| (aor.as_str(), contact.as_str()));
        let page = self.core.registrations_page(after, LISTING_PAGE);
        let done = page.len() < LISTING_PAGE;
        if let Some(last) = page.last() {
            listing.after = Some((last.aor.clone(), last.contact.clone()));
        }
        listing.read.extend(page);
        if done {
            if let Some(listing) = self.listings.pop_front() {
                let _ = listing.reply.send(Response::Ok {
                    reply: Reply::Registrations(listing.read),
                });
            }
        }
    }

    fn system_state_info(&self, now: Instant) -> Response {
        let snap = self.core.snapshot(now);
        let (sessions, registrations) = self.core.counts();
        Response::Ok {
            reply: Reply::SystemState(SystemStateInfo {
                node: self.node.clone(),
                state: snap.state,
                since_unix_ms: self.since_unix_ms,
                guard_remaining_ms: snap
                    .guard_remaining
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                active_sessions: sessions,
                registrations,
            }),
        }
    }
}

/// What the engine reads from the replication connection's task.
type StreamInbox = Option<mpsc::UnboundedReceiver<StreamIn>>;

/// Makes the twin's sockets tokio sockets on the engine's runtime.
fn start_twin(
    link: TwinLink,
) -> std::io::Result<(
    mpsc::UnboundedReceiver<twin_link::ActionDone>,
    StreamInbox,
    TwinOut,
)> {
    let mut paths = Vec::new();
    for (path, socket, peer) in link.sockets {
        paths.push((path, tokio::net::UdpSocket::from_std(socket)?, peer));
    }
    let (stream, stream_in) = match link.stream {
        Some((out, inbox)) => (Some(out), Some(inbox)),
        None => (None, None),
    };
    Ok((
        link.found,
        stream_in,
        TwinOut {
            paths,
            actions: link.actions,
            stream,
            stream_gen: 0,
            switchover: None,
        },
    ))
}

/// Ready when a keep-alive socket has something to read; never without a twin.
async fn twin_readable(out: &Option<TwinOut>) {
    match out.as_ref().map(|o| o.paths.as_slice()) {
        Some([(_, one, _)]) => {
            let _ = one.readable().await;
        }
        Some([(_, one, _), (_, two, _), ..]) => {
            tokio::select! {
                _ = one.readable() => {}
                _ = two.readable() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

async fn recv_unbounded<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{self, Limits};
    use tokio::sync::oneshot;

    struct Rig {
        asks: mpsc::Sender<Ask>,
        commands: mpsc::Sender<Command>,
        serving: watch::Receiver<bool>,
        view: watch::Receiver<StateView>,
        events: broadcast::Receiver<control::Event>,
        state_dir: tempfile::TempDir,
        // Kept so the engine's inputs stay open.
        _inbound: mpsc::Sender<FromTransport>,
    }

    /// An engine with no listeners, its outputs caught by the test.
    fn rig(initial: SystemState) -> Rig {
        let (inbound_tx, inbound) = mpsc::channel(8);
        let (serving_tx, serving) = watch::channel(initial != SystemState::Offline);
        let limits = Limits::no_streams();
        let (shared, _) =
            transport::bind_all(Vec::new(), limits, 1, inbound_tx.clone(), serving.clone())
                .unwrap();
        let (ask_tx, asks) = mpsc::channel(8);
        let (command_tx, commands) = mpsc::channel(8);
        let (view_tx, view) = watch::channel(StateView {
            state: initial,
            since_unix_ms: 0,
            role: panel::TwinRole::Solo,
        });
        let (events_tx, events) = broadcast::channel(16);
        let state_dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let engine = Engine {
            node: "test".into(),
            core: SipCore::new(
                proxy::Config::default(),
                now,
                initial,
                Duration::from_secs(300),
                None,
            ),
            twin: None,
            twin_out: None,
            listings: VecDeque::new(),
            shards: Shards::default(),
            transports: shared,
            inbound,
            asks,
            commands,
            serving: serving_tx,
            view: view_tx,
            events: events_tx,
            state_dir: state_dir.path().to_path_buf(),
            since_unix_ms: 0,
            transitions: Default::default(),
        };
        tokio::spawn(engine.run());
        Rig {
            asks: ask_tx,
            commands: command_tx,
            serving,
            view,
            events,
            state_dir,
            _inbound: inbound_tx,
        }
    }

    async fn ask(rig: &Rig, request: Request) -> Response {
        let (reply, answer) = oneshot::channel();
        rig.asks.send(Ask { request, reply }).await.unwrap();
        answer.await.unwrap()
    }

    fn transition(event: control::Event) -> (SystemState, SystemState, String) {
        match event {
            control::Event::StateChanged {
                from, to, reason, ..
            } => (from, to, reason),
            other => panic!("not a transition: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_idle_drain_goes_offline_and_every_follower_hears_it() {
        let mut rig = rig(SystemState::Online);
        let answer = ask(
            &rig,
            Request::SetSystemState {
                target: TargetState::Offline,
                guard_secs: None,
            },
        )
        .await;
        assert!(matches!(
            answer,
            Response::Ok {
                reply: Reply::Done { .. }
            }
        ));
        // No calls, no registrations: the drain ends at once (rule 10).
        let first = transition(rig.events.recv().await.unwrap());
        let second = transition(rig.events.recv().await.unwrap());
        assert_eq!(
            first,
            (
                SystemState::Online,
                SystemState::Draining,
                "operator".into()
            )
        );
        assert_eq!(
            second,
            (
                SystemState::Draining,
                SystemState::Offline,
                "drained".into()
            )
        );
        assert_eq!(rig.view.borrow_and_update().state, SystemState::Offline);
        assert!(
            !*rig.serving.borrow_and_update(),
            "TCP is refused while offline"
        );
        let saved = system_state::persist::load(rig.state_dir.path()).unwrap();
        assert_eq!(
            saved.map(|r| r.intent),
            Some(system_state::persist::Intent::Offline)
        );

        let Response::Ok {
            reply: Reply::SystemState(info),
        } = ask(&rig, Request::ShowSystemState).await
        else {
            panic!("expected the system state");
        };
        assert_eq!(info.state, SystemState::Offline);
        assert_eq!((info.active_sessions, info.registrations), (0, 0));
    }

    #[tokio::test]
    async fn a_button_hold_brings_an_offline_box_back_and_answers_the_press() {
        let mut rig = rig(SystemState::Offline);
        let (reply, answer) = oneshot::channel();
        rig.commands
            .send(Command::Button {
                action: panel::HoldAction::GoOnline,
                reply: Some(reply),
            })
            .await
            .unwrap();
        assert!(matches!(
            answer.await.unwrap(),
            Response::Ok {
                reply: Reply::Done { .. }
            }
        ));
        let t = transition(rig.events.recv().await.unwrap());
        assert_eq!(
            t,
            (SystemState::Offline, SystemState::Online, "button".into())
        );
        assert!(*rig.serving.borrow_and_update());
    }
}
