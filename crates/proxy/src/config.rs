//! What the proxy is told at start: its listeners, its upstreams, its timers, its drain policy.
//!
//! Addresses are socket addresses: the pure core does no name resolution. The daemon's config
//! loader turns `sip:127.0.0.1:5070;transport=udp` into an [`UpstreamConfig`] with
//! [`UpstreamConfig::from_uri`].

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::transport::{Realm, Transport};

/// Everything the proxy needs to know about its place in the network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The node's name, used in generated tags and branches and shown in snapshots.
    pub node_name: String,
    /// The sockets the shell listens on; `ListenerId(i)` is `listeners[i]`.
    pub listeners: Vec<ListenerConfig>,
    /// Core-side next hops for out-of-dialog requests from access, REGISTER included.
    pub upstreams: Vec<UpstreamConfig>,
    /// Host names (besides listener addresses) that mean "this box" in a request URI or Route.
    pub local_names: Vec<String>,
    /// RFC 3261 timer base values.
    pub timers: TimerConfig,
    /// An INVITE without a provisional from its upstream within this time goes to the next one.
    pub upstream_timeout: Duration,
    /// How often every upstream is sent an OPTIONS probe.
    pub probe_interval: Duration,
    /// How long a probe may stay unanswered before it counts as failed.
    pub probe_timeout: Duration,
    /// How long an AoR whose bindings expired is still answered 480 (rather than 404).
    pub expired_aor_memory: Duration,
    /// The drain policy (SPEC §2).
    pub drain: DrainConfig,
    /// What one source and everyone together may hold (SPEC §1a).
    pub limits: Limits,
    /// The route key and the seed of branch ids and tags.
    pub keys: crate::border::Keys,
    /// The name whose hash starts every branch id the box writes, when not its own
    /// `node_name`: a twin pair shares one, so a node recognises its twin's Via on a response
    /// that arrives after a takeover or switchover and relays it (SPEC §7).
    #[serde(default)]
    pub branch_scope: Option<String>,
}

/// The bounds of SPEC §1a that the core enforces (connections and queued bytes are the
/// shell's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Requests a second one source address may send (0: no limit). Configured upstreams are
    /// exempt: a core sends on behalf of everyone.
    pub per_source_rps: u32,
    /// Server plus client transactions held at once; at the cap a new out-of-dialog request
    /// gets 503. In-dialog requests may use a tenth more, so established calls still end.
    pub max_transactions: usize,
    /// Sessions tracked at once; at the cap a new INVITE gets 503.
    pub max_dialogs: usize,
    /// Bindings cached at once; at the cap a REGISTER for a new AoR gets 503.
    pub max_bindings: usize,
    /// A session with no request for this long is forgotten (`None`: never): what a lost BYE
    /// would otherwise hold for as long as the box runs. Its later requests still pass on the
    /// signed Record-Route entry.
    #[serde(default)]
    pub dialog_idle: Option<Duration>,
    /// The longest an upstream's Retry-After takes it out of rotation.
    pub max_retry_after: Duration,
    /// Largest response the box builds itself, beyond the request's Via headers.
    pub max_own_response: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_source_rps: 200,
            max_transactions: 100_000,
            max_dialogs: 50_000,
            max_bindings: 100_000,
            dialog_idle: Some(Duration::from_secs(12 * 3600)),
            max_retry_after: Duration::from_secs(3600),
            max_own_response: 2048,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: "sbc".to_owned(),
            listeners: Vec::new(),
            upstreams: Vec::new(),
            local_names: Vec::new(),
            timers: TimerConfig::default(),
            upstream_timeout: Duration::from_millis(2000),
            probe_interval: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(2),
            expired_aor_memory: Duration::from_secs(24 * 3600),
            drain: DrainConfig::default(),
            limits: Limits::default(),
            keys: crate::border::Keys::default(),
            branch_scope: None,
        }
    }
}

/// One socket of the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerConfig {
    /// Which side it faces.
    pub realm: Realm,
    /// Its transport.
    pub transport: Transport,
    /// The address it is bound to and advertises in Via and Record-Route.
    pub addr: SocketAddr,
}

/// One core-side next hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamConfig {
    /// A name for logs and `show upstreams` (the URI it was configured with).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// How to reach it.
    pub transport: Transport,
    /// Lower is tried first; equal priorities share the load round-robin.
    pub priority: u32,
}

/// Why an upstream URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamUriError {
    /// The URI does not start with `sip:`.
    #[error("upstream uri {0:?} does not start with sip:")]
    Scheme(String),
    /// The host part is not an IP literal with a port (the core does not resolve names).
    #[error("upstream uri {0:?} needs an IP address and port, e.g. sip:192.0.2.1:5060")]
    Address(String),
    /// The `transport=` parameter names no known transport.
    #[error("upstream uri {0:?} has an unknown transport")]
    Transport(String),
}

impl UpstreamConfig {
    /// Reads `sip:IP[:PORT][;transport=udp|tcp|sctp]` (port defaults to 5060, transport to UDP).
    pub fn from_uri(uri: &str, priority: u32) -> Result<Self, UpstreamUriError> {
        let rest = uri
            .strip_prefix("sip:")
            .ok_or_else(|| UpstreamUriError::Scheme(uri.to_owned()))?;
        let mut parts = rest.split(';');
        let hostport = parts.next().unwrap_or_default();
        let mut transport = Transport::Udp;
        for param in parts {
            if let Some((name, value)) = param.split_once('=') {
                if name.eq_ignore_ascii_case("transport") {
                    transport = Transport::parse(value)
                        .ok_or_else(|| UpstreamUriError::Transport(uri.to_owned()))?;
                }
            }
        }
        let addr = parse_hostport(hostport, 5060)
            .ok_or_else(|| UpstreamUriError::Address(uri.to_owned()))?;
        Ok(UpstreamConfig {
            name: uri.to_owned(),
            addr,
            transport,
            priority,
        })
    }
}

/// `1.2.3.4`, `1.2.3.4:5`, `[::1]`, `[::1]:5` into a socket address.
pub(crate) fn parse_hostport(hostport: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(addr) = hostport.parse::<SocketAddr>() {
        return Some(addr);
    }
    let host = hostport.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}

/// RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerConfig {
    /// Round-trip estimate (500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (5 s).
    pub t4: Duration,
    /// Timer C: the longest a proxied INVITE may stay without a final response (> 3 min).
    pub timer_c: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_c: Duration::from_secs(181),
        }
    }
}

/// The drain policy of SPEC §2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainConfig {
    /// Retry-After in rejections while draining/offline, and the lowered REGISTER expiry for
    /// endpoints with a call. 0 means: no Retry-After header, no lowering.
    pub retry_after_secs: u32,
    /// The code that rejects a REGISTER from an endpoint without a call while draining.
    pub reg_reject_code: u16,
    /// `Resource-Priority` namespaces (RFC 4412) that make a call a priority call.
    pub priority_namespaces: Vec<String>,
    /// Answer `380 Alternative Service` (rather than 503) when a priority call cannot be
    /// forwarded while draining.
    pub answer_380: bool,
    /// The `Reason` text put in the BYEs sent when the guard expires.
    pub guard_reason: String,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            retry_after_secs: 60,
            reg_reject_code: 503,
            priority_namespaces: vec!["ets".to_owned(), "wps".to_owned()],
            answer_380: false,
            guard_reason: "node going offline".to_owned(),
        }
    }
}
