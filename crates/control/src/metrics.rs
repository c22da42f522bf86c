//! The box's numbers the way operators collect them: the Prometheus text exposition format
//! (version 0.0.4), as `sbcctl show metrics` prints it and the optional HTTP endpoint serves it.
//!
//! Decided here: which number becomes which metric family, its type, help text and labels,
//! and the text itself. The input is a [`MetricsSnapshot`], the answers to the show commands
//! (`show system-state`, `show stats`, `show upstreams`, `show health`, `show twin`) taken
//! together; nothing here reads a clock or a socket.
//!
//! The rules of the format kept here: every family has one `# HELP` and one `# TYPE` line
//! and its samples follow them together; counters end in `_total`; label values escape `\`,
//! `"` and line feeds (other control characters, which no label should carry, become U+FFFD so
//! that the text is safe on a terminal and still valid). Families come in name order, samples
//! of a family in the order of their input (configuration order for upstreams): two scrapes of
//! the same box list the same lines in the same order.
//!
//! A counter of `show stats` that no rule below names is not lost: it is exported under a name
//! made from its own (`sip.calls_started` → `sbc_sip_calls_started_total`).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::{Counter, HealthInfo, SystemState, SystemStateInfo, TwinInfo, UpstreamInfo};

/// The `Content-Type` of the text this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a metrics answer is made of: the show commands' answers, each absent when the part of
/// the daemon that gives it is absent (no twin configured, no engine running).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// `show system-state`.
    #[serde(default)]
    pub system_state: Option<SystemStateInfo>,
    /// `show stats`.
    #[serde(default)]
    pub stats: Vec<Counter>,
    /// `show upstreams`.
    #[serde(default)]
    pub upstreams: Vec<UpstreamInfo>,
    /// `show health`.
    #[serde(default)]
    pub health: Option<HealthInfo>,
    /// `show twin`.
    #[serde(default)]
    pub twin: Option<TwinInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: Kind,
    /// Rendered label sets (`{a="b"}` or empty) and values, in the order added.
    samples: Vec<(String, String)>,
}

/// The families being written, by name.
#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, Family>,
}

impl Exposition {
    fn add(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        labels: &[(&str, &str)],
        value: impl ToString,
    ) {
        let name = metric_name(name);
        let family = self.families.entry(name).or_insert_with(|| Family {
            help: help.to_owned(),
            kind,
            samples: Vec::new(),
        });
        let mut rendered = String::new();
        if !labels.is_empty() {
            rendered.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    rendered.push(',');
                }
                let _ = write!(
                    rendered,
                    "{}=\"{}\"",
                    metric_name(label),
                    label_value(value)
                );
            }
            rendered.push('}');
        }
        // The same labels twice (two counters that map to one sample): added up, so the
        // family never lists a series twice.
        let value = value.to_string();
        if let Some(sample) = family.samples.iter_mut().find(|(l, _)| *l == rendered) {
            if let (Ok(a), Ok(b)) = (sample.1.parse::<u64>(), value.parse::<u64>()) {
                sample.1 = a.saturating_add(b).to_string();
            }
            return;
        }
        family.samples.push((rendered, value));
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.add(name, Kind::Counter, help, labels, value);
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: impl ToString) {
        self.add(name, Kind::Gauge, help, labels, value);
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for (name, family) in self.families {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", help_text(&family.help));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in family.samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }
}

/// A metric or label name: `[a-zA-Z_][a-zA-Z0-9_]*`, anything else replaced by `_`.
fn metric_name(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label value as the format writes it: `\` → `\\`, `"` → `\"`, line feed → `\n`; other
/// control characters → U+FFFD.
fn label_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if is_unsafe(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A HELP text: `\` → `\\`, line feed → `\n`, other controls → U+FFFD.
fn help_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if is_unsafe(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Milliseconds since the epoch as the seconds Prometheus timestamps are (`1796056828.671`).
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// How a counter of `show stats` is exported.
struct Rule {
    /// The counter's name in `show stats`.
    stat: &'static str,
    family: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [(&'static str, &'static str)],
}

const fn counter(
    stat: &'static str,
    family: &'static str,
    help: &'static str,
    labels: &'static [(&'static str, &'static str)],
) -> Rule {
    Rule {
        stat,
        family,
        kind: Kind::Counter,
        help,
        labels,
    }
}

const fn gauge(stat: &'static str, family: &'static str, help: &'static str) -> Rule {
    Rule {
        stat,
        family,
        kind: Kind::Gauge,
        help,
        labels: &[],
    }
}

const ANSWERS: &str = "Responses relayed by the box, by class.";
const OWN_ANSWERS: &str =
    "Final responses to requests the box sent on its own (de-registrations, guard BYEs, CANCELs), by class.";
const CAPPED: &str = "Requests answered 503 because a table was at its cap, by cap (transactions: limits.max_transactions; dialogs: max_dialogs; bindings: max_bindings).";
const DROPPED: &str = "SIP messages dropped without an answer, by reason.";
const REJECTED: &str = "Requests the box answered itself with a refusal, by reason (drain: 503 while draining or offline; cap: 503 at a table's cap; unknown_dialog: 481; loop: 482; too_many_hops: 483; bad_request: 400).";

/// The counters of `show stats` that have a family of their own (with labels); the rest are
/// named after themselves. Transport counters (`transport.<udp|tcp|sctp>.*`) are read by
/// [`transport_rule`].
#[rustfmt::skip]
const RULES: &[Rule] = &[
    counter("sip.received", "sbc_sip_messages_received_total", "SIP messages handed to the proxy.", &[]),
    counter("sip.sent", "sbc_sip_messages_sent_total", "SIP messages sent by the proxy.", &[]),
    counter("sip.calls_started", "sbc_calls_started_total", "INVITE sessions started.", &[]),
    counter("sip.calls_terminated_by_guard", "sbc_calls_ended_by_guard_total", "Sessions the drain's guard timer ended (BYE to both sides).", &[]),
    counter("sip.relayed_1xx", "sbc_sip_answers_total", ANSWERS, &[("class", "1xx")]),
    counter("sip.relayed_2xx", "sbc_sip_answers_total", ANSWERS, &[("class", "2xx")]),
    counter("sip.relayed_3xx", "sbc_sip_answers_total", ANSWERS, &[("class", "3xx")]),
    counter("sip.relayed_4xx", "sbc_sip_answers_total", ANSWERS, &[("class", "4xx")]),
    counter("sip.relayed_5xx", "sbc_sip_answers_total", ANSWERS, &[("class", "5xx")]),
    counter("sip.relayed_6xx", "sbc_sip_answers_total", ANSWERS, &[("class", "6xx")]),
    counter("sip.own_final_2xx", "sbc_sip_own_request_answers_total", OWN_ANSWERS, &[("class", "2xx")]),
    counter("sip.own_final_3xx", "sbc_sip_own_request_answers_total", OWN_ANSWERS, &[("class", "3xx")]),
    counter("sip.own_final_4xx", "sbc_sip_own_request_answers_total", OWN_ANSWERS, &[("class", "4xx")]),
    counter("sip.own_final_5xx", "sbc_sip_own_request_answers_total", OWN_ANSWERS, &[("class", "5xx")]),
    counter("sip.own_final_6xx", "sbc_sip_own_request_answers_total", OWN_ANSWERS, &[("class", "6xx")]),
    counter("sip.own_timed_out", "sbc_sip_own_request_answers_total", OWN_ANSWERS, &[("class", "timeout")]),
    counter("sip.malformed_dropped", "sbc_sip_dropped_total", DROPPED, &[("reason", "malformed")]),
    counter("sip.rate_limited", "sbc_sip_dropped_total", DROPPED, &[("reason", "rate_limited")]),
    counter("sip.spoofed", "sbc_sip_dropped_total", DROPPED, &[("reason", "spoofed")]),
    counter("sip.stray_responses", "sbc_sip_dropped_total", DROPPED, &[("reason", "stray_response")]),
    counter("sip.standby_dropped", "sbc_sip_dropped_total", DROPPED, &[("reason", "standby")]),
    counter("sip.switchover_held", "sbc_sip_dropped_total", DROPPED, &[("reason", "switchover")]),
    counter("sip.oversized_answers", "sbc_sip_dropped_total", DROPPED, &[("reason", "oversized_answer")]),
    counter("sip.drain_rejected", "sbc_sip_rejected_total", REJECTED, &[("reason", "drain")]),
    counter("sip.cap_rejected", "sbc_sip_rejected_total", REJECTED, &[("reason", "cap")]),
    counter("sip.cap_rejected_transactions", "sbc_sip_cap_rejected_total", CAPPED, &[("cap", "transactions")]),
    counter("sip.cap_rejected_dialogs", "sbc_sip_cap_rejected_total", CAPPED, &[("cap", "dialogs")]),
    counter("sip.cap_rejected_bindings", "sbc_sip_cap_rejected_total", CAPPED, &[("cap", "bindings")]),
    counter("sip.unknown_dialog", "sbc_sip_rejected_total", REJECTED, &[("reason", "unknown_dialog")]),
    counter("sip.loops", "sbc_sip_rejected_total", REJECTED, &[("reason", "loop")]),
    counter("sip.too_many_hops", "sbc_sip_rejected_total", REJECTED, &[("reason", "too_many_hops")]),
    counter("sip.bad_requests", "sbc_sip_rejected_total", REJECTED, &[("reason", "bad_request")]),
    gauge("sip.active_sessions", "sbc_calls_active", "Early and confirmed INVITE sessions now."),
    gauge("sip.registrations", "sbc_registrations_active", "Live bindings in the registration cache now."),
    gauge("sip.server_transactions", "sbc_sip_server_transactions", "Server transactions held now."),
    gauge("sip.client_transactions", "sbc_sip_client_transactions", "Client transactions held now."),
    gauge("sip.timers_armed", "sbc_sip_timers_armed", "Deadlines armed now."),
    gauge("transport.tcp.open", "sbc_transport_connections_open", "Stream connections open now."),
    gauge("transport.tcp.queued_bytes", "sbc_transport_queued_bytes", "Bytes waiting in send queues now."),
];

/// `transport.<t>.<what>`: refusals, closes and drops by reason, the rest by name, each with
/// its transport as a label. `None` for anything else.
fn transport_rule(stat: &str) -> Option<(&'static str, &'static str, String, Option<String>)> {
    let rest = stat.strip_prefix("transport.")?;
    let (transport, what) = rest.split_once('.')?;
    if !matches!(transport, "udp" | "tcp" | "sctp") {
        return None;
    }
    let by_reason = |family, help, reason: &str| {
        Some((family, help, transport.to_owned(), Some(reason.to_owned())))
    };
    const REFUSED: &str = "Connections refused at a cap, by transport and reason (per_source: per_source_connections; limit: the listener's limit; max_connections: the box's cap; connect_max_connections: connections the box did not open).";
    const CLOSED: &str = "Connections the box closed, by transport and reason.";
    const T_DROPPED: &str = "Messages the transports dropped, by transport and reason.";
    match what {
        "refused_per_source" => by_reason("sbc_transport_refused_total", REFUSED, "per_source"),
        "refused_limit" => by_reason("sbc_transport_refused_total", REFUSED, "limit"),
        "refused_max_connections" => {
            by_reason("sbc_transport_refused_total", REFUSED, "max_connections")
        }
        "connect_refused_max_connections" => by_reason(
            "sbc_transport_refused_total",
            REFUSED,
            "connect_max_connections",
        ),
        w if w.starts_with("closed_") => {
            by_reason("sbc_transport_closed_total", CLOSED, &w["closed_".len()..])
        }
        "oversize_dropped" => by_reason("sbc_transport_dropped_total", T_DROPPED, "oversize"),
        "send_failed" => by_reason("sbc_transport_dropped_total", T_DROPPED, "send_failed"),
        "send_dropped" => by_reason("sbc_transport_dropped_total", T_DROPPED, "queue_full"),
        "send_dropped_queued_bytes" => {
            by_reason("sbc_transport_dropped_total", T_DROPPED, "max_queued_bytes")
        }
        "framing_errors" => by_reason("sbc_transport_dropped_total", T_DROPPED, "framing"),
        "received" => Some((
            "sbc_transport_messages_received_total",
            "Messages (datagrams) received, by transport.",
            transport.to_owned(),
            None,
        )),
        "sent" => Some((
            "sbc_transport_messages_sent_total",
            "Messages (datagrams) sent, by transport.",
            transport.to_owned(),
            None,
        )),
        "accepted" => Some((
            "sbc_transport_connections_accepted_total",
            "Connections accepted, by transport.",
            transport.to_owned(),
            None,
        )),
        "connected" => Some((
            "sbc_transport_connections_opened_total",
            "Connections the box opened, by transport.",
            transport.to_owned(),
            None,
        )),
        _ => None,
    }
}

fn add_stat(x: &mut Exposition, c: &Counter) {
    if let Some(rule) = RULES.iter().find(|r| r.stat == c.name) {
        x.add(rule.family, rule.kind, rule.help, rule.labels, c.value);
        return;
    }
    if let Some((family, help, transport, reason)) = transport_rule(&c.name) {
        match &reason {
            Some(reason) => x.counter(
                family,
                help,
                &[("transport", &transport), ("reason", reason)],
                c.value,
            ),
            None => x.counter(family, help, &[("transport", &transport)], c.value),
        }
        return;
    }
    // `state.transitions.<from>_to_<to>`: drains begun, completed, aborted.
    if let Some((from, to)) = c
        .name
        .strip_prefix("state.transitions.")
        .and_then(|t| t.split_once("_to_"))
    {
        x.counter(
            "sbc_system_state_transitions_total",
            "System state changes since sbcd started, by state left and entered (online to draining: a drain begun; draining to offline: one completed; draining to online: one aborted).",
            &[("from", from), ("to", to)],
            c.value,
        );
        return;
    }
    // `sip.shard.K.what`: one series per shard.
    if let Some(rest) = c.name.strip_prefix("sip.shard.") {
        if let Some((shard, what)) = rest.split_once('.') {
            x.counter(
                &format!("sbc_shard_{what}_total"),
                &format!("show stats: sip.shard.K.{what}, by shard."),
                &[("shard", shard)],
                c.value,
            );
            return;
        }
    }
    x.counter(
        &format!("sbc_{}_total", c.name),
        &format!("show stats: {}.", c.name),
        &[],
        c.value,
    );
}

fn add_system_state(x: &mut Exposition, s: &SystemStateInfo) {
    for state in [
        SystemState::Online,
        SystemState::Draining,
        SystemState::Offline,
    ] {
        x.gauge(
            "sbc_system_state",
            "1 for the state the box is in (online, draining, offline), 0 for the others.",
            &[("state", &state.to_string())],
            u64::from(s.state == state),
        );
    }
    x.gauge(
        "sbc_system_state_since_timestamp_seconds",
        "When the box entered its current system state (Unix time).",
        &[],
        seconds(s.since_unix_ms),
    );
    x.gauge(
        "sbc_drain_guard_remaining_seconds",
        "Time left before the guard timer ends the drain (0 when not draining).",
        &[],
        seconds(s.guard_remaining_ms.unwrap_or(0)),
    );
    x.gauge(
        "sbc_calls_active",
        "Early and confirmed INVITE sessions now.",
        &[],
        s.active_sessions,
    );
    x.gauge(
        "sbc_registrations_active",
        "Live bindings in the registration cache now.",
        &[],
        s.registrations,
    );
}

fn add_upstreams(x: &mut Exposition, ups: &[UpstreamInfo]) {
    for u in ups {
        let labels = [("upstream", u.uri.as_str())];
        x.gauge(
            "sbc_upstream_up",
            "1 while the upstream is in rotation, 0 while it is out (or late).",
            &labels,
            u64::from(u.status == "in-rotation"),
        );
        x.counter(
            "sbc_upstream_failures_total",
            "Attempts on the upstream that failed (timeout, 503, transaction error), all shards.",
            &labels,
            u.failures,
        );
        if let Some(probe) = &u.last_probe {
            x.gauge(
                "sbc_upstream_last_probe_timestamp_seconds",
                "When the upstream's last OPTIONS probe ended (Unix time).",
                &labels,
                seconds(probe.at_unix_ms),
            );
            x.gauge(
                "sbc_upstream_last_probe_status_code",
                "The status code of the upstream's last OPTIONS probe; 0 when it got no answer in time.",
                &labels,
                probe.code.unwrap_or(0),
            );
        }
    }
}

fn add_health(x: &mut Exposition, h: &HealthInfo) {
    x.counter(
        "sbc_watchdog_recoveries_total",
        "Recoveries of sbcd or of the box (a wedged SIP thread restarted, a crash, a watchdog reset), kept across restarts.",
        &[],
        h.recoveries,
    );
    x.gauge(
        "sbc_uptime_seconds",
        "Seconds since sbcd started.",
        &[],
        h.uptime_secs,
    );
}

fn add_twin(x: &mut Exposition, info: &TwinInfo) {
    let t = &info.status;
    for role in [twin::Role::Active, twin::Role::Standby] {
        let name = match role {
            twin::Role::Active => "active",
            twin::Role::Standby => "standby",
        };
        x.gauge(
            "sbc_twin_role",
            "1 for this node's role in the twin pair (active, standby), 0 for the other.",
            &[("role", name)],
            u64::from(t.role == role),
        );
    }
    x.gauge(
        "sbc_twin_term",
        "This node's term (raised by every takeover).",
        &[],
        t.term,
    );
    x.gauge(
        "sbc_twin_peer_alive",
        "1 while the twin is heard on some path, 0 when it is lost or never heard.",
        &[],
        u64::from(t.twin.as_ref().is_some_and(|w| w.alive)),
    );
    for path in &t.paths {
        let name = match path.path {
            twin::PathId::Link => "link",
            twin::PathId::Second => "second",
        };
        let labels = [("path", name)];
        x.gauge(
            "sbc_twin_path_up",
            "1 while keep-alives arrive on the path, 0 when it is silent.",
            &labels,
            u64::from(path.up),
        );
        x.counter(
            "sbc_twin_keepalives_sent_total",
            "Keep-alives sent, by path.",
            &labels,
            path.counters.sent,
        );
        x.counter(
            "sbc_twin_keepalives_received_total",
            "Keep-alives received valid and fresh, by path.",
            &labels,
            path.counters.received,
        );
        let c = &path.counters;
        for (reason, value) in [
            ("forged", c.forged),
            ("replayed", c.replayed),
            ("reflected", c.reflected),
            ("malformed", c.malformed),
            ("version", c.version),
            ("unknown_node", c.unknown_node),
        ] {
            x.counter(
                "sbc_twin_keepalives_dropped_total",
                "Keep-alives dropped, by path and reason.",
                &[("path", name), ("reason", reason)],
                value,
            );
        }
    }
    if let Some(r) = &info.replication {
        x.gauge(
            "sbc_twin_replication_synced",
            "1 when the replication stream is synced, 0 otherwise (cold standby included).",
            &[],
            u64::from(r.sync == replica::Sync::Synced),
        );
        x.gauge(
            "sbc_twin_replication_lag_records",
            "Records sent to the twin and not yet confirmed.",
            &[],
            r.lag_records,
        );
        x.gauge(
            "sbc_twin_replication_lag_seconds",
            "Age of the oldest record the twin has not confirmed (0 when none).",
            &[],
            seconds(r.lag_ms.unwrap_or(0)),
        );
        x.counter(
            "sbc_twin_replication_records_applied_total",
            "Records from the twin applied here.",
            &[],
            r.records_applied,
        );
        x.counter(
            "sbc_twin_replication_records_refused_total",
            "Records from the twin refused (stale or rejected).",
            &[],
            r.stale_dropped.saturating_add(r.rejected),
        );
    }
}

/// The whole exposition: every family of the snapshot, in name order.
pub fn exposition(snapshot: &MetricsSnapshot) -> String {
    let mut x = Exposition::default();
    // The counts of `show system-state` stand; `show stats` repeats them (a moment apart) as
    // `sip.active_sessions` and `sip.registrations`, which are then left out.
    if let Some(s) = &snapshot.system_state {
        add_system_state(&mut x, s);
    }
    for c in &snapshot.stats {
        if snapshot.system_state.is_some()
            && matches!(c.name.as_str(), "sip.active_sessions" | "sip.registrations")
        {
            continue;
        }
        add_stat(&mut x, c);
    }
    add_upstreams(&mut x, &snapshot.upstreams);
    if let Some(h) = &snapshot.health {
        add_health(&mut x, h);
    }
    if let Some(t) = &snapshot.twin {
        add_twin(&mut x, t);
    }
    x.finish()
}

#[cfg(test)]
mod tests;
