//! The adapter between the engine loop and the `node` crate's sans-IO core (the proxy and
//! the system state composed): it builds the proxy's configuration from `sbc.toml`, feeds
//! messages, time and commands in, takes transmits out, turns the proxy's events into log
//! lines, and converts its snapshots into the control protocol's shapes. It decides nothing:
//! every SIP and drain decision is the node's.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use node::Node;
use proxy::{Event, Transmit};
use system_state::{Cause, Outcome, SystemState};

use crate::config::{self, Config};
use crate::transport::{FromTransport, ListenerSpec};

/// The SIP core as the engine sees it.
#[derive(Debug)]
pub struct SipCore {
    node: Node,
    /// The node's events for the engine (state changes, connections, the guard), in order;
    /// the proxy's own events are logged here as they come.
    pending: VecDeque<node::Event>,
    /// Connection-closed notices seen (the core does not track flows; counted for `show stats`).
    flows_closed: u64,
}

/// The core's configuration from the file's.
pub fn proxy_config(config: &Config, listeners: &[ListenerSpec]) -> proxy::Config {
    let realms: Vec<proxy::Realm> = config
        .listeners()
        .map(|l| match l.realm {
            config::Realm::Access => proxy::Realm::Access,
            config::Realm::Core => proxy::Realm::Core,
        })
        .collect();
    let transport = |t: config::Transport| match t {
        config::Transport::Udp => proxy::Transport::Udp,
        config::Transport::Tcp => proxy::Transport::Tcp,
        config::Transport::Sctp => proxy::Transport::Sctp,
    };
    let defaults = proxy::Config::default();
    proxy::Config {
        node_name: config.node.name.0.clone(),
        listeners: listeners
            .iter()
            .zip(realms)
            .map(|(spec, realm)| proxy::ListenerConfig {
                realm,
                transport: spec.transport,
                addr: spec.addr,
            })
            .collect(),
        upstreams: config
            .upstreams()
            .map(|u| proxy::UpstreamConfig {
                name: u.uri.text.clone(),
                addr: u.uri.addr,
                transport: transport(u.uri.transport),
                priority: u.priority,
            })
            .collect(),
        local_names: config.sip.local_names.clone(),
        upstream_timeout: Duration::from_millis(config.upstream_policy.upstream_timeout_ms.0),
        probe_interval: Duration::from_secs(config.upstream_policy.probe_interval_secs.0),
        drain: proxy::DrainConfig {
            retry_after_secs: u32::try_from(config.drain.retry_after_secs.0).unwrap_or(u32::MAX),
            reg_reject_code: config.drain.reg_reject_code.0,
            priority_namespaces: config
                .drain
                .priority_namespaces
                .iter()
                .map(|n| n.0.clone())
                .collect(),
            answer_380: config.drain.answer_380,
            ..defaults.drain.clone()
        },
        limits: proxy::Limits {
            per_source_rps: u32::try_from(config.limits.per_source_rps.0).unwrap_or(u32::MAX),
            max_transactions: config.limits.max_transactions.0,
            max_dialogs: config.limits.max_dialogs.0,
            dialog_idle: (config.limits.dialog_idle_secs.0 > 0)
                .then(|| Duration::from_secs(config.limits.dialog_idle_secs.0)),
            max_bindings: config.limits.max_bindings.0,
            max_retry_after: Duration::from_secs(config.limits.max_retry_after_secs.0),
            ..defaults.limits.clone()
        },
        ..defaults
    }
}

/// Replication with the twin, as `[twin]` says.
#[derive(Debug)]
pub struct Replication {
    pub mode: replica::Mode,
    pub node_id: u8,
    pub key: Vec<u8>,
    pub boot_epoch: u64,
}

impl SipCore {
    /// A core in `initial` state; `default_guard` is `[drain] guard_secs`.
    pub fn new(
        config: proxy::Config,
        now: Instant,
        initial: SystemState,
        default_guard: Duration,
        twin: Option<(twin::Twin, Replication)>,
    ) -> SipCore {
        let node = match twin {
            Some((twin, r)) => {
                let mut node = Node::with_twin(config, initial, default_guard, twin, now);
                node.enable_replication(r.mode, r.node_id, r.key, r.boot_epoch, now);
                node
            }
            None => Node::new(config, initial, default_guard, now),
        };
        let mut core = SipCore {
            node,
            pending: VecDeque::new(),
            flows_closed: 0,
        };
        core.pump_events();
        core
    }

    pub fn handle(&mut self, now: Instant, input: FromTransport) {
        match input {
            FromTransport::Message(m) => {
                self.node.handle_input(now, m.input());
                // Events from this message are logged with its sender as the peer.
                self.pump_events_from(Some(m.source));
            }
            FromTransport::Closed {
                listener,
                flow,
                remote,
            } => {
                self.flows_closed += 1;
                tracing::debug!(flow = flow.0, peer = %remote, "connection closed");
                self.node.handle_flow_closed(now, listener, flow);
                self.pump_events_from(Some(remote));
            }
        }
    }

    /// One datagram, judged where it lies in the receive buffer.
    pub fn handle_datagram(&mut self, now: Instant, input: proxy::Input<'_>) {
        let source = input.source;
        self.node.handle_input(now, input);
        self.pump_events_from(Some(source));
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
        self.pump_events();
    }

    /// Spreads the SIP work over `shards`: this core is shard 0 (see `node::Node::add_shards`).
    pub fn add_shards(&mut self, now: Instant, shards: proxy::Shards) {
        self.node.add_shards(now, shards);
        self.pump_events();
    }

    /// What SIP shard `shard` reported.
    pub fn handle_shard_report(
        &mut self,
        now: Instant,
        shard: usize,
        report: node::shards::ShardReport,
    ) {
        self.node.handle_shard_report(now, shard, report);
        self.pump_events();
    }

    /// The next command for a SIP shard, with its index.
    #[must_use]
    pub fn poll_shard_command(&mut self) -> Option<(usize, node::shards::ShardCommand)> {
        self.node.poll_shard_command()
    }

    pub fn request_offline(
        &mut self,
        now: Instant,
        guard: Option<Duration>,
        cause: Cause,
    ) -> Outcome {
        let outcome = self.node.request_offline(now, guard, cause);
        self.pump_events();
        outcome
    }

    pub fn request_online(&mut self, now: Instant, cause: Cause) -> Outcome {
        let outcome = self.node.request_online(now, cause);
        self.pump_events();
        outcome
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.node.poll_timeout()
    }

    pub fn handle_twin_datagram(&mut self, now: Instant, path: twin::PathId, payload: &[u8]) {
        self.node.handle_twin_datagram(now, path, payload);
        self.pump_events();
    }

    pub fn handle_probe_result(&mut self, now: Instant, conflicts: Vec<std::net::IpAddr>) {
        self.node.handle_probe_result(now, conflicts);
        self.pump_events();
    }

    pub fn handle_addresses_announced(&mut self, now: Instant) {
        self.node.handle_addresses_announced(now);
        self.pump_events();
    }

    #[must_use]
    pub fn poll_twin_transmit(&mut self) -> Option<twin::Transmit> {
        self.node.poll_twin_transmit()
    }

    #[must_use]
    pub fn poll_address_action(&mut self) -> Option<twin::AddressAction> {
        self.node.poll_address_action()
    }

    pub fn twin_status(&self, now: Instant) -> Option<control::TwinInfo> {
        self.node.twin_status(now).map(|status| control::TwinInfo {
            status,
            replication: self.node.replication_view(now),
        })
    }

    /// Whether a replication connection to the twin is wanted (hot standby).
    pub fn wants_stream(&self) -> bool {
        self.node.wants_stream()
    }

    pub fn handle_stream_open(&mut self, now: Instant, nonce: [u8; 16]) {
        self.node.handle_stream_open(now, nonce);
        self.pump_events();
    }

    pub fn handle_stream_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.node.handle_stream_bytes(now, bytes);
        self.pump_events();
    }

    pub fn handle_stream_closed(&mut self, now: Instant) {
        self.node.handle_stream_closed(now);
        self.pump_events();
    }

    pub fn poll_stream_bytes(&mut self) -> Option<Vec<u8>> {
        self.node.poll_stream_bytes()
    }

    pub fn stream_open(&self) -> bool {
        self.node.stream_open()
    }

    pub fn request_switchover(
        &mut self,
        now: Instant,
    ) -> Result<(), node::replication::SwitchoverError> {
        let result = self.node.request_switchover(now);
        self.pump_events();
        result
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.node.poll_transmit()
    }

    /// Gives back a sent datagram's buffer to the proxy, for its next message.
    pub fn recycle(&mut self, bytes: Vec<u8>) {
        self.node.recycle(bytes);
    }

    /// The next association to shut down (an upstream that asked for time).
    pub fn poll_close(&mut self) -> Option<proxy::Close> {
        self.node.poll_close()
    }

    /// The next state change, connection verdict or guard expiry, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<node::Event> {
        self.pending.pop_front()
    }

    pub fn state(&self) -> SystemState {
        self.node.state()
    }

    pub fn snapshot(&self, now: Instant) -> system_state::Snapshot {
        self.node.snapshot(now)
    }

    /// Active sessions and registrations.
    pub fn counts(&self) -> (u64, u64) {
        let c = self.node.counts();
        (c.active_sessions as u64, c.registrations as u64)
    }

    /// Logs the core's events ([`log_event`]) and keeps what the engine needs from them.
    fn pump_events(&mut self) {
        self.pump_events_from(None);
    }

    /// As [`pump_events`](Self::pump_events); `source` sent the message that caused them (none
    /// for timers and commands).
    fn pump_events_from(&mut self, source: Option<SocketAddr>) {
        while let Some(event) = self.node.poll_event() {
            match event {
                node::Event::Proxy(event) => log_event(event, source),
                other => self.pending.push_back(other),
            }
        }
    }

    pub fn calls(&self) -> Vec<control::CallInfo> {
        self.node
            .proxy()
            .calls()
            .into_iter()
            .map(|c| control::CallInfo {
                call_id: c.call_id,
                from: c.caller,
                to: c.callee,
                state: dialog_state(c.state).to_string(),
                age_secs: c.age_secs,
            })
            .collect()
    }

    /// A page of `show registrations`: up to `limit` bindings after `after` (AoR, contact).
    pub fn registrations_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Vec<control::RegistrationInfo> {
        self.node
            .proxy()
            .registrations_page(after, limit)
            .into_iter()
            .map(|r| control::RegistrationInfo {
                active_calls: r.active_calls,
                aor: r.aor,
                contact: r.contact,
                expires_in_secs: r.expires_in_secs,
                flow: format!("{} {}", r.transport.uri_param(), r.remote),
            })
            .collect()
    }

    /// `show upstreams`: the rotation as this core (shard 0, the prober) sees it, with the
    /// failures of every shard (`others`: each other shard's, in configuration order). The
    /// last probe's time is placed on the wall clock: `now` is `now_unix_ms`.
    pub fn upstreams(
        &self,
        others: &[Vec<u64>],
        now: Instant,
        now_unix_ms: u64,
    ) -> Vec<control::UpstreamInfo> {
        self.node
            .proxy()
            .upstreams_at(now)
            .into_iter()
            .enumerate()
            .map(|(i, u)| control::UpstreamInfo {
                status: match (u.in_rotation, u.back_in_secs) {
                    (true, _) => "in-rotation",
                    (false, Some(0)) => "late",
                    (false, _) => "out",
                }
                .to_string(),
                uri: u.name,
                priority: u.priority,
                back_in_secs: u.back_in_secs.filter(|&s| s > 0),
                failures: others
                    .iter()
                    .filter_map(|f| f.get(i))
                    .fold(u.failures, |sum, f| sum.saturating_add(*f)),
                last_probe: u.last_probe.map(|probe| control::ProbeInfo {
                    at_unix_ms: now_unix_ms.saturating_sub(probe.ago_ms),
                    code: match probe.answer {
                        proxy::ProbeAnswer::Code(code) => Some(code),
                        proxy::ProbeAnswer::Timeout => None,
                    },
                }),
            })
            .collect()
    }

    /// The core's counters, named `sip.<field>`.
    /// `show stats`: the counters of this core's proxy added to those of the box's other
    /// shards (`others`), the box's counts, the connections closed.
    pub fn stats(&self, others: &[proxy::Stats]) -> Vec<control::Counter> {
        let mut out: Vec<control::Counter> = Vec::new();
        // Stats is a struct of plain counters; its serde form lists them by name, so new
        // counters show up here without this shell knowing them.
        for stats in std::iter::once(&self.node.proxy().stats()).chain(others) {
            let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(stats) else {
                continue;
            };
            for (k, (name, value)) in fields.into_iter().enumerate() {
                let Some(value) = value.as_u64() else {
                    continue;
                };
                let name = format!("sip.{name}");
                match out.get_mut(k).filter(|c| c.name == name) {
                    Some(counter) => counter.value = counter.value.saturating_add(value),
                    None => match out.iter_mut().find(|c| c.name == name) {
                        Some(counter) => counter.value = counter.value.saturating_add(value),
                        None => out.push(control::Counter { name, value }),
                    },
                }
            }
        }
        // With shards, what each one took: the operator sees the work spread (or not).
        if !others.is_empty() {
            let own = self.node.proxy().stats();
            for (k, stats) in std::iter::once(&own).chain(others).enumerate() {
                out.push(control::Counter {
                    name: format!("sip.shard.{k}.received"),
                    value: stats.received,
                });
                out.push(control::Counter {
                    name: format!("sip.shard.{k}.calls_started"),
                    value: stats.calls_started,
                });
            }
        }
        let (sessions, registrations) = self.counts();
        out.push(control::Counter {
            name: "sip.active_sessions".into(),
            value: sessions,
        });
        out.push(control::Counter {
            name: "sip.registrations".into(),
            value: registrations,
        });
        out.push(control::Counter {
            name: "sip.flows_closed".into(),
            value: self.flows_closed,
        });
        out
    }
}

/// The sender of the message an event came from, `-` for timers and commands.
#[derive(Clone, Copy)]
struct Peer(Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

fn dialog_state(s: proxy::dialogs::DialogState) -> &'static str {
    match s {
        proxy::dialogs::DialogState::Early => "early",
        proxy::dialogs::DialogState::Confirmed => "confirmed",
        proxy::dialogs::DialogState::Ended => "ended",
    }
}

/// One event of a proxy (the node's or a shard's) to the journal; `source` sent the message
/// that caused it (none for timers and commands).
///
/// Levels: a call's start, answer and end are debug (per call, thousands a second on a busy
/// box, and `show calls` and the counters tell the operator the same); what changes the
/// box's service (registrations, upstreams in and out, errors) stays at info and above.
pub fn log_event(event: Event, source: Option<SocketAddr>) {
    // Formatted only if a line is written: most messages log nothing.
    let peer = tracing::field::display(Peer(source));
    match event {
        Event::CallStarted { call_id, priority } => {
            tracing::debug!(call_id = %call_id, peer, priority, state = "early", "call started");
        }
        Event::CallAnswered { call_id } => {
            tracing::debug!(call_id = %call_id, peer, state = "confirmed", "call answered");
        }
        // One line per call reaches the journal at the default level: the call's record
        // (call-id, peer, how it ended). Start and answer are detail, kept at debug so
        // that a busy box does not spend its CPU formatting them.
        Event::CallEnded { call_id, cause } => {
            tracing::info!(call_id = %call_id, peer, cause = ?cause, state = "ended", "call ended");
        }
        Event::RegistrationAdded {
            aor,
            contact,
            expires_secs,
        } => {
            tracing::info!(aor = %aor, contact = %contact, peer, expires_secs, "registration cached");
        }
        Event::RegistrationRemoved {
            aor,
            contact,
            cause,
        } => {
            tracing::info!(aor = %aor, contact = %contact, cause = ?cause, "registration removed");
        }
        // Records for the twin stay inside the node.
        Event::Change(_) => {}
        Event::UpstreamOut {
            name,
            retry_after_secs,
        } => {
            tracing::warn!(upstream = %name, retry_after_secs, "upstream out of rotation");
        }
        Event::UpstreamBack { name } => {
            tracing::info!(upstream = %name, "upstream back in rotation");
        }
        Event::UpstreamLate { name, overdue_secs } => {
            tracing::warn!(
                upstream = %name,
                overdue_secs,
                "upstream not back when it said it would be"
            );
        }
        Event::MalformedDropped { source, reason } => {
            tracing::debug!(peer = %source, reason = %reason, "malformed message dropped");
        }
        // The node consumes these itself (the drain's counts, connections, the shards'
        // rotation).
        Event::Upstream(_)
        | Event::CountsChanged(_)
        | Event::DrainComplete
        | Event::CloseConnections
        | Event::AcceptConnections => {}
        // What the far end answers to the box's own requests (de-registrations on a
        // phone's behalf, the guard's BYEs, CANCELs): nobody else sees these answers,
        // and a refused de-registration leaves the phone registered at the core.
        // Accepted BYEs and CANCELs stay at debug: a guard ending thousands of calls
        // would otherwise write a line per call.
        Event::OwnRequestAnswered { method, aor, code } => match code {
            200..=299 if method == "REGISTER" => {
                tracing::info!(method = %method, aor = %aor, peer, code, "own request accepted");
            }
            200..=299 => {
                tracing::debug!(method = %method, aor = %aor, peer, code, "own request accepted");
            }
            401 | 407 => {
                tracing::warn!(
                    method = %method,
                    aor = %aor,
                    peer,
                    code,
                    "own request challenged; no credentials to answer with"
                );
            }
            _ => {
                tracing::warn!(method = %method, aor = %aor, peer, code, "own request refused");
            }
        },
        Event::OwnRequestTimedOut { method, aor } => {
            tracing::warn!(method = %method, aor = %aor, "own request got no answer");
        }
    }
}
