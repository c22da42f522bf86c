//! `sbc.toml`: the daemon's configuration file (SPEC §9), read once at start.
//!
//! This module decides only whether a file is a valid configuration and what its defaults are.
//! Every error names the key and the line it is on, so an operator at a serial console can fix
//! the file without guessing: unknown keys are refused (`deny_unknown_fields`), values are checked
//! while they are read (newtypes with `try_from`, so the TOML parser reports their span), and the
//! few checks that span several keys keep the span of the key they blame.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: Node,
    #[serde(default)]
    pub listen: Vec<Spanned<Listen>>,
    #[serde(default)]
    pub upstream: Vec<Spanned<Upstream>>,
    #[serde(default)]
    pub upstream_policy: UpstreamPolicy,
    #[serde(default)]
    pub drain: Drain,
    #[serde(default)]
    pub control: Control,
    #[serde(default)]
    pub state: State,
    #[serde(default)]
    pub panel: Panel,
    #[serde(default)]
    pub console: Console,
    #[serde(default)]
    pub sip: Sip,
    #[serde(default)]
    pub limits: Limits,
    pub twin: Option<Twin>,
}

/// `[node]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Shown in the console prompt, `show system-state` and the logs.
    pub name: NodeName,
}

/// A node name: printable, no spaces, at most 63 bytes (it ends up in a prompt and in logs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct NodeName(pub String);

impl TryFrom<String> for NodeName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 63 {
            return Err(format!(
                "node name must be 1 to 63 characters, got {}",
                s.len()
            ));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "node name {s:?} may hold only letters, digits, '-', '_' and '.'"
            ));
        }
        Ok(NodeName(s))
    }
}

/// Which side of the box a listener faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Realm {
    Access,
    Core,
}

/// A SIP transport as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Sctp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Sctp => "sctp",
        }
    }
}

/// One `[[listen]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub realm: Realm,
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// One `[[upstream]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub uri: SipUri,
    /// Lower is tried first; equal priorities share the load round-robin.
    #[serde(default = "default_priority")]
    pub priority: u32,
}

fn default_priority() -> u32 {
    1
}

/// A `sip:` URI naming an upstream by address (`sip:HOST:PORT[;transport=udp|tcp|sctp]`).
///
/// Upstreams are addressed by IP literal: the box resolves no names on its wire path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SipUri {
    pub text: String,
    pub addr: SocketAddr,
    pub transport: Transport,
}

impl TryFrom<String> for SipUri {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let rest = text
            .strip_prefix("sip:")
            .ok_or_else(|| format!("upstream uri {text:?} must start with \"sip:\""))?;
        let mut parts = rest.split(';');
        let hostport = parts.next().unwrap_or_default();
        let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
        let addr = parse_hostport(hostport).ok_or_else(|| {
            format!("upstream uri {text:?}: {hostport:?} is not an IP address with optional port")
        })?;
        let mut transport = Transport::Udp;
        for param in parts {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            if name.eq_ignore_ascii_case("transport") {
                transport = match value.to_ascii_lowercase().as_str() {
                    "udp" => Transport::Udp,
                    "tcp" => Transport::Tcp,
                    "sctp" => Transport::Sctp,
                    other => {
                        return Err(format!(
                            "upstream uri {text:?}: transport {other:?} is not udp, tcp or sctp"
                        ))
                    }
                };
            }
        }
        Ok(SipUri {
            text,
            addr,
            transport,
        })
    }
}

/// `1.2.3.4`, `1.2.3.4:5060`, `[::1]`, `[::1]:5060`; the SIP default port 5060 when absent.
fn parse_hostport(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    let host = s
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(s);
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 5060))
}

/// `[upstream_policy]`: how the box behaves as a client of its upstreams (SPEC §3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamPolicy {
    /// No provisional answer to an INVITE within this time: try the next upstream.
    pub upstream_timeout_ms: Millis,
    /// How often upstreams are probed with OPTIONS.
    pub probe_interval_secs: Secs,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        UpstreamPolicy {
            upstream_timeout_ms: Millis(2000),
            probe_interval_secs: Secs(30),
        }
    }
}

/// A positive number of milliseconds, at most a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Millis(pub u64);

impl TryFrom<i64> for Millis {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u64::try_from(v) {
            Ok(ms) if (1..=86_400_000).contains(&ms) => Ok(Millis(ms)),
            _ => Err(format!("{v} is not between 1 and 86400000 milliseconds")),
        }
    }
}

/// A positive number of seconds, at most a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Secs(pub u64);

impl TryFrom<i64> for Secs {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u64::try_from(v) {
            Ok(s) if (1..=86_400).contains(&s) => Ok(Secs(s)),
            _ => Err(format!("{v} is not between 1 and 86400 seconds")),
        }
    }
}

/// A number of seconds that may be zero (zero switches the feature off), at most a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct SecsOrZero(pub u64);

impl TryFrom<i64> for SecsOrZero {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u64::try_from(v) {
            Ok(s) if s <= 86_400 => Ok(SecsOrZero(s)),
            _ => Err(format!("{v} is not between 0 and 86400 seconds")),
        }
    }
}

/// `[drain]`: the drain rules' parameters (SPEC §2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Drain {
    /// Upper bound of a drain; `set-system-state offline guard N` overrides it once.
    pub guard_secs: Secs,
    /// Retry-After on refusals while draining or offline; 0 sends no Retry-After.
    pub retry_after_secs: SecsOrZero,
    /// Final answer to a REGISTER refused while draining.
    pub reg_reject_code: RejectCode,
    /// Resource-Priority namespaces whose calls are served while draining.
    pub priority_namespaces: Vec<Namespace>,
    /// Answer `380 Alternative Service` to a priority call that cannot be forwarded.
    pub answer_380: bool,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            guard_secs: Secs(300),
            retry_after_secs: SecsOrZero(60),
            reg_reject_code: RejectCode(503),
            priority_namespaces: vec![Namespace("ets".into()), Namespace("wps".into())],
            answer_380: false,
        }
    }
}

/// A SIP final failure code (400..=699).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct RejectCode(pub u16);

impl TryFrom<i64> for RejectCode {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u16::try_from(v) {
            Ok(code) if (400..=699).contains(&code) => Ok(RejectCode(code)),
            _ => Err(format!("{v} is not a SIP failure code (400 to 699)")),
        }
    }
}

/// An RFC 4412 namespace token, kept lower-case (namespaces compare case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Namespace(pub String);

impl TryFrom<String> for Namespace {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '!'))
        {
            return Err(format!("{s:?} is not a Resource-Priority namespace token"));
        }
        Ok(Namespace(s.to_ascii_lowercase()))
    }
}

/// `[control]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Control {
    /// The Unix socket `sbcctl` and `sbc-console` talk to.
    pub socket: PathBuf,
    /// Where scrapers get `GET /metrics` (the Prometheus text of `show metrics`), if anywhere:
    /// an address of a core listener, since metrics are for the operator's side only.
    pub metrics_http: Option<Spanned<SocketAddr>>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: PathBuf::from(control::client::DEFAULT_SOCKET),
            metrics_http: None,
        }
    }
}

/// `[state]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct State {
    /// Where the operator-set system state is kept across restarts.
    pub dir: PathBuf,
}

impl Default for State {
    fn default() -> Self {
        State {
            dir: PathBuf::from("/var/lib/sbc"),
        }
    }
}

/// `[panel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Panel {
    /// The board profile `board/<name>/board.toml`; `sim` is a panel in memory, `none` no panel.
    pub board: BoardName,
    /// A hold at least this long toggles the state at release; absent: the board profile's
    /// value (2000 ms on every shipped board).
    pub hold_ms: Option<Millis>,
}

impl Default for Panel {
    fn default() -> Self {
        Panel {
            board: BoardName("sim".into()),
            hold_ms: None,
        }
    }
}

/// A board name: a directory name under the board directory, nothing that climbs out of it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BoardName(pub String);

impl TryFrom<String> for BoardName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty()
            || s.starts_with('.')
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "{s:?} is not a board name (letters, digits, '-', '_', '.')"
            ));
        }
        Ok(BoardName(s))
    }
}

/// `[console]`: read by `sbc-console`; `sbcd` only checks the keys (so `sbcd --config` finds
/// a bad value too, naming key and line).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Console {
    pub user: Option<String>,
    pub password_hash: Option<String>,
    /// A session with no key pressed for this long is logged out (SPEC §5).
    pub idle_logout_secs: Secs,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            user: None,
            password_hash: None,
            idle_logout_secs: Secs(900),
        }
    }
}

/// `[sip]`: limits of the wire path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sip {
    /// SIP worker threads; absent: one per SIP core of the board, or per available CPU.
    pub workers: Option<Workers>,
    /// Largest message accepted (datagram or framed stream message).
    pub max_message_bytes: MessageSize,
    /// A TCP connection silent for this long is closed.
    pub tcp_idle_timeout_secs: Secs,
    /// A message on a TCP connection must be complete this long after its first byte arrived,
    /// else the connection is closed (a half-sent request holds nothing for long).
    pub tcp_message_timeout_secs: Secs,
    /// Accepted TCP connections per listener; further ones are refused.
    pub tcp_max_connections: Count,
    /// Host names that mean "this box" in a request URI (besides the listener addresses).
    pub local_names: Vec<String>,
}

impl Default for Sip {
    fn default() -> Self {
        Sip {
            workers: None,
            max_message_bytes: MessageSize(65_535),
            tcp_idle_timeout_secs: Secs(600),
            // 64 * T1, the time a client transaction waits for an answer (RFC 3261 Timer B):
            // a sender still sending after that has nobody waiting for its request.
            tcp_message_timeout_secs: Secs(32),
            tcp_max_connections: Count(1024),
            local_names: Vec::new(),
        }
    }
}

/// `[limits]`: what one source, and everyone together, may hold of the box (SPEC §1a).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Requests per second one source address may send; over it, requests are dropped.
    pub per_source_rps: Count,
    /// Server plus client transactions held at once; at the cap new requests get 503.
    pub max_transactions: Count,
    /// Dialogs tracked at once; at the cap new INVITEs get 503.
    pub max_dialogs: Count,
    /// A dialog with no request for this long is forgotten (0: never), so lost BYEs do not
    /// fill `max_dialogs`; its later requests still pass on the box's signed Record-Route.
    pub dialog_idle_secs: SecsOrZero,
    /// Cached registration bindings; at the cap new REGISTERs get 503.
    pub max_bindings: Count,
    /// TCP (and SCTP) connections, inbound and outbound together.
    pub max_connections: Count,
    /// Connections one source address may hold open to the box.
    pub per_source_connections: Count,
    /// Bytes queued for sending on all connections together; past it, messages are dropped.
    pub max_queued_bytes: ByteCount,
    /// The longest an upstream's `Retry-After` may take it out of rotation.
    pub max_retry_after_secs: Secs,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_source_rps: Count(200),
            max_transactions: Count(100_000),
            max_dialogs: Count(50_000),
            // Twelve hours, as Kamailio's and OpenSIPS's dialog modules default to.
            dialog_idle_secs: SecsOrZero(43_200),
            max_bindings: Count(100_000),
            max_connections: Count(4096),
            per_source_connections: Count(64),
            max_queued_bytes: ByteCount(1 << 24),
            max_retry_after_secs: Secs(3600),
        }
    }
}

/// `[twin]`: the cross-connect to a twin appliance (SPEC §7). Read and checked here; the twin
/// itself is issue 13's work, so today a node with `[twin]` runs alone and says so at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Twin {
    /// 1 or 2; two nodes that start together make 1 active.
    pub node_id: TwinNodeId,
    /// `hot` (records replicated) or `cold` (none).
    #[serde(default)]
    pub mode: TwinMode,
    /// Keep-alive interval.
    #[serde(default = "Twin::default_interval")]
    pub interval_ms: Millis,
    /// Missed keep-alives on every path before the twin is asked for its status.
    #[serde(default = "Twin::default_misses")]
    pub misses: Count,
    /// Take the service addresses back after a restart.
    #[serde(default)]
    pub preempt: bool,
    /// The shared HMAC key (mode 0600).
    pub key_file: PathBuf,
    /// The cross-connect.
    pub link: TwinPath,
    /// The second keep-alive path (on the access network).
    pub second_path: Option<TwinPath>,
    /// Addresses owned by the active node.
    #[serde(default)]
    pub service_address: Vec<ServiceAddress>,
}

impl Twin {
    fn default_interval() -> Millis {
        Millis(100)
    }
    fn default_misses() -> Count {
        Count(3)
    }
}

/// A twin node id: 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct TwinNodeId(pub u8);

impl TryFrom<i64> for TwinNodeId {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match v {
            1 | 2 => Ok(TwinNodeId(v as u8)),
            _ => Err(format!("{v} is not a twin node id (1 or 2)")),
        }
    }
}

/// `hot` or `cold` standby.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TwinMode {
    #[default]
    Hot,
    Cold,
}

/// One keep-alive path: our address and the twin's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinPath {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// An address the active node owns, with its prefix length, on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAddress {
    pub addr: AddrWithPrefix,
    pub dev: String,
}

/// `192.0.2.10/24` or `2001:db8::10/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AddrWithPrefix {
    pub ip: std::net::IpAddr,
    pub prefix: u8,
}

impl TryFrom<String> for AddrWithPrefix {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address with a prefix length, e.g. 192.0.2.10/24");
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(AddrWithPrefix { ip, prefix })
    }
}

/// A worker count, 1..=256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Workers(pub usize);

impl TryFrom<i64> for Workers {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match usize::try_from(v) {
            Ok(n) if (1..=256).contains(&n) => Ok(Workers(n)),
            _ => Err(format!("{v} is not between 1 and 256 workers")),
        }
    }
}

/// A message size limit: at least a small SIP message, at most a maximum UDP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct MessageSize(pub usize);

impl TryFrom<i64> for MessageSize {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match usize::try_from(v) {
            Ok(n) if (1024..=65_535).contains(&n) => Ok(MessageSize(n)),
            _ => Err(format!("{v} is not between 1024 and 65535 bytes")),
        }
    }
}

/// A positive count, at most a million.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Count(pub usize);

impl TryFrom<i64> for Count {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match usize::try_from(v) {
            Ok(n) if (1..=1_000_000).contains(&n) => Ok(Count(n)),
            _ => Err(format!("{v} is not between 1 and 1000000")),
        }
    }
}

/// A number of bytes, 64 KiB to 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct ByteCount(pub usize);

impl TryFrom<i64> for ByteCount {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match usize::try_from(v) {
            Ok(n) if ((1 << 16)..=(1 << 32)).contains(&n) => Ok(ByteCount(n)),
            _ => Err(format!("{v} is not between 65536 and 4294967296 bytes")),
        }
    }
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        /// The dotted key (`drain.guard_secs`) or table (`[sip]`) at fault.
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The 1-based line the error points at, if it points at one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Read { .. } => None,
        }
    }

    /// The key the error blames, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            invalid(text, path, span, e.message().trim().to_string())
        })?;
        config.check(text, path)?;
        Ok(config)
    }

    /// Checks that span several entries.
    fn check(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        if !self
            .listen
            .iter()
            .any(|l| l.get_ref().realm == Realm::Access)
        {
            return Err(invalid(
                text,
                path,
                0..0,
                "at least one [[listen]] with realm = \"access\" is required".into(),
            ))
            .map_err(|e| rename_key(e, "listen"));
        }
        for (i, l) in self.listen.iter().enumerate() {
            let earlier = &self.listen[..i];
            let this = l.get_ref();
            // The address is advertised in Via and Record-Route: it must be one peers can reach.
            if this.addr.ip().is_unspecified() || this.addr.port() == 0 {
                return Err(invalid(
                    text,
                    path,
                    l.span(),
                    format!(
                        "{} is not an address peers can reach (it goes into Via and \
                         Record-Route): give the interface's address and a port",
                        this.addr
                    ),
                ))
                .map_err(|e| rename_key(e, "listen.addr"));
            }
            if earlier.iter().any(|o| {
                let o = o.get_ref();
                o.addr == this.addr && o.transport == this.transport
            }) {
                return Err(invalid(
                    text,
                    path,
                    l.span(),
                    format!("{} {} is listed twice", this.transport.as_str(), this.addr),
                ))
                .map_err(|e| rename_key(e, "listen.addr"));
            }
        }
        self.check_metrics_http(text, path)
    }

    /// `[control] metrics_http` must be on the core side: the address of a core listener
    /// (the firewall admits it on the core port only), with a port of its own.
    fn check_metrics_http(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let Some(spanned) = &self.control.metrics_http else {
            return Ok(());
        };
        let addr = *spanned.get_ref();
        let core_ips: Vec<std::net::IpAddr> = self
            .listeners()
            .filter(|l| l.realm == Realm::Core)
            .map(|l| l.addr.ip())
            .collect();
        let message = if !core_ips.contains(&addr.ip()) {
            Some(format!(
                "{addr} is not on the core side: metrics are served only on the address of a \
                 realm = \"core\" listener ({})",
                if core_ips.is_empty() {
                    "there is none".to_owned()
                } else {
                    core_ips
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        } else if addr.port() == 0 {
            Some(format!("{addr}: give a port (9464 is the usual one)"))
        } else if self
            .listeners()
            .any(|l| l.transport == Transport::Tcp && l.addr == addr)
        {
            Some(format!("{addr} is a SIP TCP listener already"))
        } else {
            None
        };
        match message {
            Some(message) => Err(rename_key(
                invalid(text, path, spanned.span(), message),
                "control.metrics_http",
            )),
            None => Ok(()),
        }
    }

    /// The configured upstreams, without their spans.
    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        self.upstream.iter().map(|u| u.get_ref())
    }

    /// The configured listeners, without their spans, in file order (the order is the listener id).
    pub fn listeners(&self) -> impl Iterator<Item = &Listen> {
        self.listen.iter().map(|l| l.get_ref())
    }
}

fn rename_key(e: ConfigError, key: &str) -> ConfigError {
    match e {
        ConfigError::Invalid {
            path,
            line,
            message,
            ..
        } => ConfigError::Invalid {
            path,
            line,
            key: key.to_string(),
            message,
        },
        other => other,
    }
}

/// Builds an [`ConfigError::Invalid`] pointing at the byte range `span` of `text`.
fn invalid(text: &str, path: &Path, span: Range<usize>, message: String) -> ConfigError {
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        key: key_at(text, start),
        message,
    }
}

/// The dotted key of the line holding byte `pos`: the last table header above it joined with the
/// key left of `=` on that line (or the header itself when the line is one).
fn key_at(text: &str, pos: usize) -> String {
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let line = text[line_start..line_end].trim();
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        let inner = l
            .strip_prefix("[[")
            .and_then(|r| r.split("]]").next())
            .or_else(|| l.strip_prefix('[').and_then(|r| r.split(']').next()))?;
        Some(inner.trim().to_string())
    };
    if let Some(h) = header(line) {
        return h;
    }
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string());
    let table = text[..line_start].lines().rev().find_map(header);
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => "(file)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[node]
name = "sbc-a"

[[listen]]
realm = "access"          # access | core
transport = "udp"         # udp | tcp | sctp
addr = "127.0.0.1:5060"

[[listen]]
realm = "core"
transport = "udp"
addr = "127.0.0.1:5062"

[[upstream]]
uri = "sip:127.0.0.1:5070;transport=udp"
priority = 1

[drain]
guard_secs = 300
retry_after_secs = 60
reg_reject_code = 503
priority_namespaces = ["ets", "wps"]

[control]
socket = "/run/sbc/control.sock"
"#;

    /// The rest of SPEC §9's example.
    const SPEC_LIMITS_AND_TWIN: &str = r#"
[limits]
per_source_rps = 200          # requests per second per source address
max_transactions = 100000
max_dialogs = 50000
max_bindings = 100000
max_connections = 4096

[twin]
node_id = 1                   # 1 or 2
mode = "hot"                  # hot | cold
interval_ms = 100
misses = 3
preempt = false
key_file = "/etc/sbc/twin.key"
link = { local = "169.254.77.1:7700", peer = "169.254.77.2:7700" }          # cross-connect
second_path = { local = "192.0.2.11:7700", peer = "192.0.2.12:7700" }        # access network

[[twin.service_address]]      # owned by the active node
addr = "192.0.2.10/24"
dev = "eth0"

[[twin.service_address]]
addr = "198.51.100.10/24"
dev = "eth1"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("sbc.toml"))
    }

    #[test]
    fn the_spec_example_is_accepted() {
        let c = parse(&format!("{MINIMAL}{SPEC_LIMITS_AND_TWIN}")).unwrap();
        assert_eq!(c.node.name.0, "sbc-a");
        assert_eq!(c.listen.len(), 2);
        let up = c.upstreams().next().unwrap();
        assert_eq!(up.uri.addr, "127.0.0.1:5070".parse().unwrap());
        assert_eq!(up.uri.transport, Transport::Udp);
        assert_eq!(c.drain.reg_reject_code, RejectCode(503));
        assert_eq!(c.upstream_policy.upstream_timeout_ms, Millis(2000));
        assert_eq!(c.state.dir, PathBuf::from("/var/lib/sbc"));
        assert_eq!(c.panel.board.0, "sim");
        assert_eq!(c.limits.per_source_rps, Count(200));
        assert_eq!(c.limits.max_retry_after_secs, Secs(3600));
        assert_eq!(c.limits.dialog_idle_secs, SecsOrZero(43_200));
        let twin = c.twin.unwrap();
        assert_eq!(twin.node_id, TwinNodeId(1));
        assert_eq!(twin.service_address.len(), 2);
        assert_eq!(twin.service_address[1].addr.prefix, 24);
    }

    #[test]
    fn bad_limits_and_twin_values_name_key_and_line() {
        let spec = format!("{MINIMAL}{SPEC_LIMITS_AND_TWIN}");
        let e = parse(&spec.replace("max_dialogs = 50000", "max_dialogs = 0")).unwrap_err();
        assert!(e.to_string().contains("limits.max_dialogs"), "{e}");
        let idle = spec.replace(
            "max_dialogs = 50000",
            "max_dialogs = 50000\ndialog_idle_secs = 90000",
        );
        let e = parse(&idle).unwrap_err();
        assert!(e.to_string().contains("limits.dialog_idle_secs"), "{e}");
        let off = spec.replace(
            "max_dialogs = 50000",
            "max_dialogs = 50000\ndialog_idle_secs = 0",
        );
        assert_eq!(parse(&off).unwrap().limits.dialog_idle_secs, SecsOrZero(0));
        let e = parse(&spec.replace("node_id = 1 ", "node_id = 3 ")).unwrap_err();
        assert!(e.to_string().contains("twin.node_id"), "{e}");
        let e = parse(&spec.replace("192.0.2.10/24", "192.0.2.10/33")).unwrap_err();
        assert!(e.to_string().contains("addr"), "{e}");
    }

    #[test]
    fn the_tcp_message_timeout_has_a_default_and_a_range() {
        assert_eq!(
            parse(MINIMAL).unwrap().sip.tcp_message_timeout_secs,
            Secs(32)
        );
        let c = parse(&format!("{MINIMAL}\n[sip]\ntcp_message_timeout_secs = 5\n")).unwrap();
        assert_eq!(c.sip.tcp_message_timeout_secs, Secs(5));
        let e = parse(&format!("{MINIMAL}\n[sip]\ntcp_message_timeout_secs = 0\n")).unwrap_err();
        assert!(
            e.to_string().contains("sip.tcp_message_timeout_secs"),
            "{e}"
        );
    }

    #[test]
    fn the_metrics_endpoint_is_on_a_core_address_only() {
        let with = |addr: &str| {
            MINIMAL.replace(
                "socket = \"/run/sbc/control.sock\"",
                &format!("socket = \"/run/sbc/control.sock\"\nmetrics_http = \"{addr}\""),
            )
        };
        assert!(parse(MINIMAL).unwrap().control.metrics_http.is_none());
        let c = parse(&with("127.0.0.1:9464")).unwrap();
        assert_eq!(
            c.control.metrics_http.map(|a| *a.get_ref()),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        // MINIMAL's access listener is 127.0.0.1 too, so try an address of no core listener.
        let e = parse(&with("192.0.2.1:9464")).unwrap_err();
        assert_eq!(e.key(), Some("control.metrics_http"), "{e}");
        assert!(e.to_string().contains("not on the core side"), "{e}");
        assert_eq!(e.line(), Some(27), "{e}");
        let e = parse(&with("127.0.0.1:0")).unwrap_err();
        assert!(e.to_string().contains("give a port"), "{e}");
        let e = parse(&with("not an address")).unwrap_err();
        assert_eq!(e.key(), Some("control.metrics_http"), "{e}");
    }

    #[test]
    fn the_shipped_example_is_accepted() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sbc.toml");
        Config::load(&path).unwrap();
    }

    #[test]
    fn an_unknown_key_names_key_and_line() {
        let text = MINIMAL.replace("guard_secs = 300", "guard_secs = 300\nguard_sec = 3");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line(), Some(21), "{e}");
        assert_eq!(e.key(), Some("drain.guard_sec"), "{e}");
        assert!(e.to_string().contains("guard_sec"), "{e}");
    }

    #[test]
    fn an_unknown_table_is_refused() {
        let text = format!("{MINIMAL}\n[nonsense]\nx = 1\n");
        let e = parse(&text).unwrap_err();
        assert!(e.to_string().contains("nonsense"), "{e}");
        assert_eq!(e.line(), Some(28), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let cases = [
            (
                "reg_reject_code = 503",
                "reg_reject_code = 200",
                "drain.reg_reject_code",
                22,
            ),
            (
                "guard_secs = 300",
                "guard_secs = -1",
                "drain.guard_secs",
                20,
            ),
            (
                "guard_secs = 300",
                "guard_secs = \"long\"",
                "drain.guard_secs",
                20,
            ),
            (
                "transport = \"udp\"         # udp",
                "transport = \"carrier-pigeon\" # udp",
                "listen.transport",
                7,
            ),
            (
                "addr = \"127.0.0.1:5060\"",
                "addr = \"localhost\"",
                "listen.addr",
                8,
            ),
            (
                "uri = \"sip:127.0.0.1:5070;transport=udp\"",
                "uri = \"http://x\"",
                "upstream.uri",
                16,
            ),
            ("name = \"sbc-a\"", "name = \"sbc a\"", "node.name", 3),
            (
                "socket = \"/run/sbc/control.sock\"",
                "socket = \"/run/sbc/control.sock\"\n[console]\nidle_logout_secs = 0",
                "console.idle_logout_secs",
                28,
            ),
        ];
        for (from, to, key, line) in cases {
            let text = MINIMAL.replace(from, to);
            assert_ne!(text, MINIMAL, "{from}");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key(), Some(key), "{to}: {e}");
            assert_eq!(e.line(), Some(line), "{to}: {e}");
        }
    }

    #[test]
    fn a_missing_node_name_is_refused() {
        let e = parse("[node]\n").unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
    }

    #[test]
    fn duplicate_listeners_are_refused() {
        let text = format!(
            "{MINIMAL}\n[[listen]]\nrealm = \"core\"\ntransport = \"udp\"\naddr = \"127.0.0.1:5062\"\n"
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key(), Some("listen.addr"), "{e}");
        // The line of the duplicate entry's header.
        assert_eq!(e.line(), Some(28), "{e}");
    }

    #[test]
    fn wildcard_and_port_zero_listeners_are_refused() {
        for addr in ["0.0.0.0:5060", "127.0.0.1:0", "[::]:5060"] {
            let text = MINIMAL.replace("127.0.0.1:5062", addr);
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key(), Some("listen.addr"), "{addr}: {e}");
            assert_eq!(e.line(), Some(10), "{addr}: {e}");
        }
    }

    #[test]
    fn uris_default_their_port_and_transport() {
        let u = SipUri::try_from("sip:10.0.0.1".to_string()).unwrap();
        assert_eq!(u.addr, "10.0.0.1:5060".parse().unwrap());
        assert_eq!(u.transport, Transport::Udp);
        let u = SipUri::try_from("sip:[::1]:5080;transport=TCP".to_string()).unwrap();
        assert_eq!(u.addr, "[::1]:5080".parse().unwrap());
        assert_eq!(u.transport, Transport::Tcp);
        assert!(SipUri::try_from("sip:core.example.com".to_string()).is_err());
    }
}
