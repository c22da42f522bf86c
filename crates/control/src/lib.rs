//! The control socket's protocol: what `sbcctl` and `sbc-console` ask `sbcd`, and what it answers.
//!
//! Framing is one JSON document per line (UTF-8, `\n`-terminated), so an operator can read the
//! traffic and talk to the socket with `socat` when everything else is broken. Each request
//! carries the protocol version; a server that does not speak it answers with an error instead of
//! guessing.
//!
//! A connection carries requests and their answers in order. After [`Request::Subscribe`] the
//! server answers [`Reply::Subscribed`] and then pushes [`Event`] lines on that connection until
//! it closes: that is how the panel, the console and the twin follow state changes.
//!
//! This crate decides nothing about the appliance; it is the shape of the conversation, its
//! codec, a blocking client, and the text rendering shared by both front ends.

pub mod client;
pub mod metrics;
mod render;
pub mod when;

pub use render::terminal_safe;

use serde::{Deserialize, Serialize};
pub use system_state::SystemState;

/// The longest guard a `set-system-state offline guard N` may ask for (a week): `sbcd` answers
/// a longer one with an error, and the console grammar refuses it before sending.
pub const MAX_GUARD_SECS: u64 = system_state::MAX_GUARD.as_secs();

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    ShowSystemState,
    /// Start a drain (`Offline`, with an optional guard overriding the configured one) or return
    /// to online at once, aborting a drain (`Online`).
    SetSystemState {
        target: TargetState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guard_secs: Option<u64>,
    },
    ShowCalls,
    ShowRegistrations,
    ShowUpstreams,
    ShowTwin,
    Switchover,
    ShowHealth,
    ShowVersion,
    ShowStats,
    /// The box's numbers in the Prometheus text format (`show metrics`): the answers of
    /// `show system-state`, `stats`, `upstreams`, `health` and `twin` together.
    ShowMetrics,
    ShowPanel,
    ShowLog {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<u32>,
    },
    Reboot,
    /// Press the panel button for `hold_ms` (a simulated panel only; real buttons are pressed by
    /// hands or, in QEMU, through QMP).
    PanelPress {
        hold_ms: u64,
    },
    /// Follow state events on this connection.
    Subscribe,
}

impl Request {
    /// True for commands that change what the box does for calls: front ends confirm these.
    pub fn is_service_affecting(&self) -> bool {
        matches!(
            self,
            Request::SetSystemState { .. } | Request::Switchover | Request::Reboot
        )
    }
}

/// The state an operator may ask for: draining is how the box becomes offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    Online,
    Offline,
}

/// One line from the server: the answer to a request, or a pushed event on a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Response {
    Ok { reply: Reply },
    Error { message: String },
    Event { event: Event },
}

/// The successful answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "kebab-case")]
pub enum Reply {
    SystemState(SystemStateInfo),
    Calls(Vec<CallInfo>),
    Registrations(Vec<RegistrationInfo>),
    Upstreams(Vec<UpstreamInfo>),
    Stats(Vec<Counter>),
    /// `show metrics`: shown as Prometheus text, carried (and `--json`) as the snapshot.
    Metrics(Box<metrics::MetricsSnapshot>),
    Panel(PanelInfo),
    Health(HealthInfo),
    Version(VersionInfo),
    Log(Vec<String>),
    Twin(Box<TwinInfo>),
    /// A command was carried out; the message says what happened.
    Done {
        message: String,
    },
    /// The part of the product that would answer is not present on this box or not built yet.
    NotAvailable {
        what: String,
        why: String,
    },
    Subscribed,
}

/// `show system-state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemStateInfo {
    pub node: String,
    pub state: SystemState,
    /// When the current state was entered, in milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// Time left before the guard timer ends the drain (only while draining).
    pub guard_remaining_ms: Option<u64>,
    pub active_sessions: u64,
    pub registrations: u64,
}

/// One INVITE session of `show calls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    pub call_id: String,
    pub from: String,
    pub to: String,
    /// `early` or `confirmed`.
    pub state: String,
    pub age_secs: u64,
}

/// One binding of `show registrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationInfo {
    pub aor: String,
    pub contact: String,
    pub expires_in_secs: u64,
    /// Transport and source the endpoint registered from (`udp 127.0.0.1:5071`).
    pub flow: String,
    pub active_calls: u64,
}

/// One upstream of `show upstreams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamInfo {
    pub uri: String,
    pub priority: u32,
    /// `in-rotation`, `out` (with `back_in_secs`), `late` (not back when it said it would be).
    pub status: String,
    pub back_in_secs: Option<u64>,
    pub failures: u64,
    /// The last OPTIONS probe that ended (answered or timed out); `None` before the first.
    #[serde(default)]
    pub last_probe: Option<ProbeInfo>,
}

/// How an upstream's last OPTIONS probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// When it ended (its final response came, or its wait ran out), in milliseconds since
    /// the Unix epoch.
    pub at_unix_ms: u64,
    /// The final response's status code; `None`: no final response in time.
    pub code: Option<u16>,
}

/// A named counter of `show stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub name: String,
    pub value: u64,
}

/// `show panel`: what the LEDs show and what the button does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanelInfo {
    pub board: String,
    /// True when the button and LEDs exist only in memory (the `sim` board).
    pub simulated: bool,
    pub green: bool,
    pub amber: bool,
    pub red: bool,
    /// The pattern being shown (`online`, `draining`, `offline`, `lamp-test`, ...).
    pub pattern: String,
    pub button_pressed: bool,
    /// While held past the threshold: what release will do.
    pub release_will: Option<String>,
}

/// `show health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthInfo {
    pub uptime_secs: u64,
    pub threads: Vec<ThreadPinning>,
    pub watchdog: Option<String>,
    pub recoveries: u64,
    /// Why the last recovery happened (a wedged SIP thread, a crash, a box reset).
    #[serde(default)]
    pub last_recovery: Option<String>,
}

/// `show version`: what this box runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The image's version (`cargo xtask image` writes it; `None` outside an image).
    pub image: Option<String>,
    /// The daemon's own version.
    pub sbcd: String,
    /// The running kernel's release.
    pub kernel: Option<String>,
}

/// A thread and the CPUs the kernel allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadPinning {
    pub name: String,
    pub tid: u32,
    pub cpus_allowed: String,
}

/// `show twin`: the twin machine's own snapshot and replication's (SPEC §7's list). In JSON the
/// machine's fields sit at the top level, replication's under `replication`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinInfo {
    /// Roles, terms, epochs, paths, drops, the last takeover.
    #[serde(flatten)]
    pub status: twin::Status,
    /// Hot or cold, sync, positions and lag, records applied and refused.
    #[serde(default)]
    pub replication: Option<replica::View>,
}

/// Something that happened, pushed to subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    StateChanged {
        from: SystemState,
        to: SystemState,
        /// Why: `operator`, `button`, `drained`, `guard-expired`, `restored`, ...
        reason: String,
        at_unix_ms: u64,
    },
    /// Anything else worth a line on the console (upstream down, recovery, ...).
    Notice { message: String },
    /// The twin: a role change, a path down or up, a takeover, the twin lost or found.
    Twin { message: String },
}

/// A line that could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid control message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("protocol version {got} not supported (this build speaks {PROTOCOL_VERSION})")]
    Version { got: u32 },
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

/// Encodes a request as one line, newline included.
pub fn encode_request(req: &Request) -> String {
    encode(req)
}

/// Encodes a server line, newline included.
pub fn encode_response(resp: &Response) -> String {
    encode(resp)
}

/// Decodes one request line (with or without its newline).
pub fn decode_request(line: &str) -> Result<Request, DecodeError> {
    decode(line)
}

/// Decodes one server line (with or without its newline).
pub fn decode_response(line: &str) -> Result<Response, DecodeError> {
    decode(line)
}

fn encode<T: Serialize>(body: &T) -> String {
    let env = Envelope {
        v: PROTOCOL_VERSION,
        body,
    };
    // Serialising these plain types to a String cannot fail: no maps with non-string keys, no
    // custom serialisers.
    let mut s = serde_json::to_string(&env).unwrap_or_else(|e| {
        format!(r#"{{"v":{PROTOCOL_VERSION},"kind":"error","message":"encode: {e}"}}"#)
    });
    s = json_escape_controls(s);
    s.push('\n');
    s
}

/// serde_json escapes only what JSON demands (below U+0020); DEL and C1 would still reach a
/// terminal raw when a person runs `sbcctl --json`. Outside strings a JSON document is ASCII,
/// so every such character here is inside a string and `\u00XX` is its JSON escape.
fn json_escape_controls(s: String) -> String {
    if !s.chars().any(char::is_control) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn decode<T: for<'de> Deserialize<'de>>(line: &str) -> Result<T, DecodeError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        v: u32,
    }
    let line = line.trim_end_matches(['\n', '\r']);
    let version: VersionOnly = serde_json::from_str(line)?;
    if version.v != PROTOCOL_VERSION {
        return Err(DecodeError::Version { got: version.v });
    }
    let env: Envelope<T> = serde_json::from_str(line)?;
    Ok(env.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let all = [
            Request::ShowSystemState,
            Request::SetSystemState {
                target: TargetState::Offline,
                guard_secs: Some(30),
            },
            Request::SetSystemState {
                target: TargetState::Online,
                guard_secs: None,
            },
            Request::ShowLog { lines: Some(5) },
            Request::PanelPress { hold_ms: 2500 },
            Request::Subscribe,
        ];
        for req in all {
            let line = encode_request(&req);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(decode_request(&line).unwrap(), req);
        }
    }

    #[test]
    fn responses_round_trip() {
        let resp = Response::Ok {
            reply: Reply::SystemState(SystemStateInfo {
                node: "sbc-a".into(),
                state: SystemState::Draining,
                since_unix_ms: 1,
                guard_remaining_ms: Some(5000),
                active_sessions: 2,
                registrations: 3,
            }),
        };
        assert_eq!(decode_response(&encode_response(&resp)).unwrap(), resp);
        let ev = Response::Event {
            event: Event::StateChanged {
                from: SystemState::Online,
                to: SystemState::Draining,
                reason: "button".into(),
                at_unix_ms: 7,
            },
        };
        assert_eq!(decode_response(&encode_response(&ev)).unwrap(), ev);
    }

    #[test]
    fn wrong_version_and_garbage_are_errors() {
        assert!(matches!(
            decode_request(r#"{"v":99,"request":"show-calls"}"#),
            Err(DecodeError::Version { got: 99 })
        ));
        assert!(decode_request("\u{1b}[A garbage").is_err());
        assert!(decode_request(r#"{"v":1,"request":"no-such"}"#).is_err());
    }

    #[test]
    fn service_affecting_commands_are_marked() {
        assert!(Request::Reboot.is_service_affecting());
        assert!(!Request::ShowCalls.is_service_affecting());
    }
}
