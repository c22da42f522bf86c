//! The proxy core: owns transactions, the registration cache, the dialog table and the
//! upstream list, and turns received messages and the passing of time into messages to send
//! and events.
//!
//! Submodules split it by responsibility: `requests` (admission, routing and forwarding of
//! requests), `responses` (matching responses to transactions and relaying them, failover),
//! `register` (the REGISTER path and the drain's rules 4-6), `guard` (ending everything when the
//! guard expires), `timers` (what each deadline does).

mod guard;
mod register;
mod requests;
mod responses;
mod timeouts;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::VecDeque;

use crate::hash::IdMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use system_state::SystemState;

use crate::border::{Ids, Signer, SourceBudget};
use crate::config::Config;
use crate::dialogs::{DialogChange, DialogId, DialogRecord, DialogRecordChange, DialogTable};
use crate::events::{CallInfo, ChangeRecord, Counts, Event, RegistrationInfo, Stats};
use crate::msg::{Draft, Message};
use crate::registrations::{AorKey, BindingChange, RegistrationCache};
use crate::replication::RecordError;
use crate::shard::Shards;
use crate::timers::TimerTable;
use crate::transaction::{ClientTransaction, ServerTransaction, TxTimer};
use crate::transport::{Flow, FlowId, Input, ListenerId, Realm, Transmit, Transport};
use crate::upstreams::{UpstreamId, UpstreamInfo, Upstreams};

type TxId = u64;

/// What a deadline in the table is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerKey {
    /// The first RFC 3261 timer due of a server transaction: the machine keeps its letters,
    /// the table one deadline per transaction, so a message that changes no deadline touches
    /// nothing here.
    Server(TxId),
    /// The first RFC 3261 timer due of a client transaction.
    Client(TxId),
    /// No provisional from the upstream yet (SPEC §3 `upstream_timeout_ms`).
    UpstreamTimeout(TxId),
    /// Timer C of a proxied INVITE (keyed by server transaction).
    TimerC(TxId),
    /// An OPTIONS probe got no answer in time (keyed by client transaction).
    ProbeTimeout(TxId),
    /// 64*T1 after the CANCEL of an INVITE the upstream never answered finally: the INVITE's
    /// client transaction is given up (RFC 3261 §9.1), or it would live as long as the box.
    Cancelled(TxId),
}

/// A client transaction's index key, borrowed: its branch and method.
#[derive(Debug, Clone, Copy, Hash)]
struct ClientKeyRef<'a>(&'a [u8], &'a str);

/// Room for a branch id this box writes: `z9hG4bK-`, the node tag (6), `-`, the loop hash
/// (at most 16 hex digits), `.`, 64 random bits (16).
const BRANCH_ROOM: usize = 48;

/// How late a lazy transaction timer ([`TxTimer::is_lazy`]) may fire when nothing else wakes
/// the proxy: a second more of absorbing retransmissions, nothing else.
const LAZY_SLACK: Duration = Duration::from_secs(1);

/// A branch id this box wrote ([`Proxy::new_branch`]), kept inline: a client transaction's
/// key, no allocation of its own.
#[derive(Clone, Copy)]
struct Branch {
    bytes: [u8; BRANCH_ROOM],
    len: usize,
}

impl Branch {
    fn empty() -> Branch {
        Branch {
            bytes: [0; BRANCH_ROOM],
            len: 0,
        }
    }

    fn push(&mut self, text: &[u8]) {
        // The longest branch fits (see BRANCH_ROOM); nothing is ever cut here.
        let end = (self.len + text.len()).min(BRANCH_ROOM);
        let n = end - self.len;
        self.bytes[self.len..end].copy_from_slice(&text[..n]);
        self.len = end;
    }

    /// `n` in lower-case hex, zero-padded to `width` digits ([`crate::border::push_hex`]).
    fn push_hex(&mut self, n: u64, width: usize) {
        let mut digits = [0u8; 16];
        let count = crate::border::write_hex(&mut digits, n, width);
        self.push(&digits[..count]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn as_str(&self) -> &str {
        // Written from ASCII only.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl std::fmt::Debug for Branch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server transaction's index key, borrowed (from a received message, or from an entry's
/// [`ServerKey`] and request): what the index hashes and compares.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct ServerKeyRef<'a> {
    branch: &'a [u8],
    sent_by: &'a [u8],
    method: &'a str,
}

/// The index hash of client transaction `id`'s branch and method (0 when it is gone, which
/// does not happen: an id leaves the index before its entry leaves `clients`).
fn client_hash(hasher: &ahash::RandomState, clients: &IdMap<TxId, ClientEntry>, id: TxId) -> u64 {
    clients.get(&id).map_or(0, |e| {
        hasher.hash_one(ClientKeyRef(e.branch.as_bytes(), &e.method))
    })
}

impl Proxy {
    /// The client transaction with this branch and method, if any.
    fn find_client(&self, key: ClientKeyRef<'_>) -> Option<TxId> {
        let hash = self.index_hasher.hash_one(key);
        self.client_index
            .find(hash, |id| {
                self.clients
                    .get(id)
                    .is_some_and(|e| e.branch.as_bytes() == key.0 && e.method == key.1)
            })
            .copied()
    }
}

impl<'a> ServerKeyRef<'a> {
    /// The key of a received request: its branch and sent-by key as text.
    fn new(branch: &'a str, sent_by: &'a str, method: &'a str) -> Self {
        ServerKeyRef {
            branch: branch.as_bytes(),
            sent_by: sent_by.as_bytes(),
            method,
        }
    }

    /// The key of a server entry.
    fn of(entry: &'a ServerEntry) -> Self {
        ServerKeyRef {
            branch: entry.key.branch.read(&entry.request),
            sent_by: entry.key.sent_by.read(&entry.request),
            method: &entry.key.method,
        }
    }
}

/// The index hash of server transaction `id`'s key (0 when it is gone, which does not happen:
/// an id leaves the index before its entry leaves `servers`).
fn server_hash(hasher: &ahash::RandomState, servers: &IdMap<TxId, ServerEntry>, id: TxId) -> u64 {
    servers
        .get(&id)
        .map_or(0, |e| hasher.hash_one(ServerKeyRef::of(e)))
}

impl Proxy {
    /// The server transaction with this key, if any.
    fn find_server(&self, key: ServerKeyRef<'_>) -> Option<TxId> {
        let hash = self.index_hasher.hash_one(key);
        self.server_index
            .find(hash, |id| {
                self.servers
                    .get(id)
                    .is_some_and(|e| ServerKeyRef::of(e) == key)
            })
            .copied()
    }

    /// Indexes server transaction `id` (already in `servers`) under its key; an earlier
    /// transaction with the same key is no longer found by it.
    fn index_server(&mut self, id: TxId) {
        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        let key = ServerKeyRef::of(entry);
        let hash = self.index_hasher.hash_one(key);
        let servers = &self.servers;
        if let Ok(earlier) = self.server_index.find_entry(hash, |other| {
            *other != id
                && servers
                    .get(other)
                    .is_some_and(|e| ServerKeyRef::of(e) == key)
        }) {
            earlier.remove();
        }
        let hasher = &self.index_hasher;
        self.server_index
            .insert_unique(hash, id, |other| server_hash(hasher, servers, *other));
    }
}

/// RFC 3261 §17.2.3 matching: branch, sent-by, method (ACK matches INVITE). Read with the
/// entry's request ([`ServerKeyRef::of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerKey {
    branch: KeyText,
    sent_by: KeyText,
    /// A known method's name is static text (see [`kept_method`]).
    method: Cow<'static, str>,
}

/// A part of a server transaction's key: where it is in the transaction's copy of its request
/// (almost always: the branch and the sent-by as the sender wrote them), or its own text (a
/// key made from several parts, or lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyText {
    /// Bytes `start..end` of the request.
    In(u32, u32),
    Own(Box<str>),
}

impl KeyText {
    /// `text` as a key part of `request`: its place when it lies in `request`, else a copy.
    fn of(text: &str, request: &[u8]) -> KeyText {
        let start = (text.as_ptr() as usize).wrapping_sub(request.as_ptr() as usize);
        match (u32::try_from(start), u32::try_from(start + text.len())) {
            (Ok(start), Ok(end)) if (end as usize) <= request.len() => KeyText::In(start, end),
            _ => KeyText::Own(text.into()),
        }
    }

    fn read<'a>(&'a self, request: &'a [u8]) -> &'a [u8] {
        match self {
            KeyText::In(start, end) => request
                .get(*start as usize..*end as usize)
                .unwrap_or_default(),
            KeyText::Own(text) => text.as_bytes(),
        }
    }
}

/// Where a forwarded request may go.
#[derive(Debug, Clone)]
enum Targets {
    /// The upstream list, skipping those already tried for this request.
    Upstreams { tried: Tried },
    /// One fixed next hop (a registered contact, an in-dialog peer).
    Fixed(Flow),
}

/// The upstreams an out-of-dialog request has tried, in order.
#[derive(Debug, Clone)]
enum Tried {
    /// Before the first attempt.
    None,
    /// After the first attempt (most requests make only one): nothing to allocate.
    One(UpstreamId),
    /// After a failover. Shared: a `Forward` is cloned for every attempt and response, the
    /// list only grows at an attempt.
    Many(Arc<[UpstreamId]>),
}

impl Tried {
    fn as_slice(&self) -> &[UpstreamId] {
        match self {
            Tried::None => &[],
            Tried::One(uid) => std::slice::from_ref(uid),
            Tried::Many(list) => list,
        }
    }

    /// These and `uid` after them.
    fn with(&self, uid: UpstreamId) -> Tried {
        match self {
            Tried::None => Tried::One(uid),
            other => Tried::Many(other.as_slice().iter().copied().chain([uid]).collect()),
        }
    }
}

/// What the proxy remembers about a REGISTER it forwarded, to cache the core's answer.
#[derive(Debug, Clone)]
struct RegisterCtx {
    aor: AorKey,
    to_uri: String,
    registrar_uri: String,
    call_id: String,
    cseq: u32,
    /// Its Authorization / Proxy-Authorization lines, kept with the binding for the guard's
    /// de-registration (rule 11).
    credentials: Vec<(String, String)>,
    flow: Flow,
    /// Contact URI, the expiry asked for, and the drain's lowering if any.
    contacts: Vec<(String, u32, Option<u32>)>,
    /// `Contact: *`.
    wildcard: bool,
}

/// What our Via and Record-Route start with on one listener.
#[derive(Debug)]
struct ListenerTexts {
    /// `SIP/2.0/UDP 192.0.2.1:5060;branch=`
    via: String,
    /// `<sip:192.0.2.1:5060;transport=tcp;lr` (the token and `>` follow)
    record_route: String,
    /// `192.0.2.1`, for an IPv4 listener: the one way `sip` reads as that address (dotted
    /// decimal without leading zeros), so a host written so is the listener's address.
    ipv4: Option<String>,
}

impl ListenerTexts {
    fn of(l: &crate::config::ListenerConfig) -> ListenerTexts {
        let transport = match l.transport {
            Transport::Udp => String::new(),
            other => format!(";transport={}", other.uri_param()),
        };
        ListenerTexts {
            via: format!("SIP/2.0/{} {};branch=", l.transport.via_token(), l.addr),
            record_route: format!("<sip:{}{transport};lr", l.addr),
            ipv4: match l.addr.ip() {
                std::net::IpAddr::V4(ip) => Some(ip.to_string()),
                std::net::IpAddr::V6(_) => None,
            },
        }
    }
}

/// Text written for one forwarded message (our Via and Record-Route entries, the sender's Via
/// with received/rport), kept between messages: once the strings have grown to what a
/// message needs, writing them allocates nothing. Taken out of the proxy while in use.
#[derive(Debug, Default)]
struct Scratch {
    via: String,
    record_route: [String; 2],
    received: String,
    /// A new session's texts, before they go into their one shared allocation.
    dialog_texts: String,
}

/// The proxying state of one server transaction.
#[derive(Debug, Clone)]
struct Forward {
    /// What the request goes out with instead of what it came with (a registered contact as
    /// the request URI, rewritten Contact values), if anything: every attempt is written from
    /// the server transaction's copy of the request with these edits, our Via and our
    /// Record-Route. Shared: a `Forward` is cloned for every response handled.
    retarget: Option<Arc<Retarget>>,
    /// A known method's name is static text (see [`kept_method`]).
    method: Cow<'static, str>,
    targets: Targets,
    client: Option<TxId>,
    provisional_seen: bool,
    cancelled: bool,
    /// Record-Route this request (dialog-creating, out of dialog), with its Call-ID and
    /// caller tag signed into our entry (read from the request at each attempt).
    record_route: bool,
    incoming: ListenerId,
    /// The session it belongs to (its texts shared with the table's entry).
    dialog: Option<DialogId>,
    priority: bool,
    register: Option<Arc<RegisterCtx>>,
    done: bool,
    /// Goes into our branch so the request coming back unchanged is seen as a loop.
    loop_hash: u64,
}

/// A method as a transaction keeps it: a known one as static text, without copying.
fn kept_method(method: sip::Method<'_>) -> Cow<'static, str> {
    match method.known_str() {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(method.as_str().to_owned()),
    }
}

/// How a forwarded request differs from the received one, besides the edits every forwarded
/// request gets (see `Proxy::forward_bytes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Retarget {
    /// The new request URI.
    request_uri: Option<String>,
    /// Contact values that replace every Contact line.
    contacts: Option<Vec<String>>,
}

#[derive(Debug)]
struct ServerEntry {
    tx: ServerTransaction,
    key: ServerKey,
    source: Flow,
    request: Vec<u8>,
    last_response: Option<Vec<u8>>,
    /// The To tag of the responses the proxy writes itself on this transaction, made at the
    /// first one that carries a tag (a 100 does not; most transactions never need one).
    to_tag: Option<String>,
    forward: Option<Forward>,
}

#[derive(Debug, Clone, Copy)]
enum ClientPurpose {
    /// Carries a request proxied for server transaction `server`.
    Forward {
        server: TxId,
        upstream: Option<UpstreamId>,
    },
    /// An OPTIONS probe.
    Probe(UpstreamId),
    /// Something the proxy sent on its own behalf (CANCEL, BYE, de-registration).
    Own,
}

#[derive(Debug)]
struct ClientEntry {
    tx: ClientTransaction,
    branch: Branch,
    method: Cow<'static, str>,
    request: Vec<u8>,
    dest: Flow,
    purpose: ClientPurpose,
}

/// The SIP proxy core.
///
/// # Contract
///
/// - Feed every received message with [`handle_input`](Self::handle_input) and call
///   [`handle_timeout`](Self::handle_timeout) when the time from
///   [`poll_timeout`](Self::poll_timeout) has come. Time passed in must never go backwards.
/// - After each `handle_*` call (and after [`set_system_state`](Self::set_system_state) or
///   [`terminate_all`](Self::terminate_all)), drain [`poll_transmit`](Self::poll_transmit) and
///   [`poll_event`](Self::poll_event) until they return `None`, then re-read `poll_timeout`.
/// - The system state comes from outside (the `system-state` crate): feed each change with
///   `set_system_state`. When draining and [`counts`](Self::counts) reach zero, the proxy emits
///   [`Event::DrainComplete`]; the owner then moves the state to offline. When the guard
///   expires, the owner calls `terminate_all`.
/// - Nothing here reads a clock, opens a socket or panics on input.
#[derive(Debug)]
pub struct Proxy {
    config: Config,
    /// The start of our Via and Record-Route for each listener, written once: the listener
    /// list does not change, and formatting its address was a good part of every attempt.
    listener_texts: Vec<ListenerTexts>,
    state: SystemState,
    now: Instant,
    node_tag: String,
    branch_prefix: String,
    next_id: u64,
    timers: TimerTable<TimerKey>,
    /// The transactions whose first timer only ends their absorbing of retransmissions
    /// ([`TxTimer::is_lazy`]): fired by any message or deadline that wakes the proxy after
    /// them, and at the latest [`LAZY_SLACK`] late, so a box at a few calls per second is not
    /// woken once more per transaction only to forget it.
    lazy: TimerTable<TimerKey>,
    servers: IdMap<TxId, ServerEntry>,
    /// Looked up with borrowed text ([`ServerKeyRef`]): an ACK or a retransmission finds its
    /// transaction without an owned key.
    /// Holds transaction ids only: each key lives once, in its `ServerEntry`, and the table
    /// hashes and compares through it.
    server_index: hashbrown::HashTable<TxId>,
    /// Hashes the server index's keys.
    index_hasher: ahash::RandomState,
    clients: IdMap<TxId, ClientEntry>,
    /// By branch and method; looked up with borrowed text ([`ClientKeyRef`]), so a response
    /// finds its transaction without an owned key.
    /// Holds ids only, hashing and comparing through the entry's branch and method (as the
    /// server index does).
    client_index: hashbrown::HashTable<TxId>,
    registrations: RegistrationCache,
    dialogs: DialogTable,
    /// The sessions of the other shards of this box, from their records
    /// ([`Proxy::apply_peer_change`]): asked only whether a registered phone is in a call
    /// (the drain's REGISTER rules, `show registrations`), never routed on nor counted.
    peer_dialogs: DialogTable,
    /// Which shard this is, of how many ([`Proxy::set_shard`]).
    shard: usize,
    shards: Shards,
    upstreams: Upstreams,
    transmits: VecDeque<Transmit>,
    /// Associations to shut down (an SCTP upstream that asked for time, SPEC §3).
    closes: VecDeque<crate::transport::Close>,
    events: VecDeque<Event>,
    stats: Stats,
    last_counts: Counts,
    drain_complete_sent: bool,
    /// Whether change records for a twin are produced ([`Proxy::set_replication`]).
    replicate: bool,
    /// A twin's standby: it owns none of the box's addresses, so it originates nothing (no
    /// upstream probes from an address its twin answers for).
    standby: bool,
    /// A switchover is under way: no new transaction starts ([`Proxy::set_quiesced`]).
    quiesced: bool,
    /// Branch ids and tags.
    ids: Ids,
    /// Requests per source.
    budget: SourceBudget,
    /// Buffers for the text of forwarded messages.
    scratch: Scratch,
    /// The route key, keyed once.
    signer: Signer,
    /// Message buffers to write into: given back by the shell ([`Proxy::recycle`]) once a
    /// transmit is sent, and by transactions when they end. Written messages and the copies
    /// transactions keep come from here, so a box in its stride allocates none for them.
    buffers: Vec<Vec<u8>>,
}

/// How many buffers [`Proxy::recycle`] keeps: a few per message of a burst; beyond that they
/// are freed.
const BUFFERS_KEPT: usize = 256;

/// A buffer that grew past this (a large message) is freed rather than kept.
const BUFFER_KEPT_SIZE: usize = 16 * 1024;

/// A recycled buffer this small is always taken: a message is rarely shorter.
const BUFFER_SMALL: usize = 512;

/// Whether a datagram or framed message is a response (starts with the SIP version), read
/// before parsing so a flood of requests is counted against its source's budget cheaply.
fn looks_like_response(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .skip_while(|b| matches!(b, b'\r' | b'\n'))
        .take(8)
        .eq(b"SIP/2.0 ".iter())
}

/// A short stable hash (FNV-1a) for loop detection.
/// Each part is followed by a 0xff byte (which no UTF-8 text holds: the parts are text or
/// digits), so the parts' borders are part of what is hashed.
fn fnv(parts: &[&[u8]]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        // Four bytes a step: the same bytes in the same order, less loop per byte.
        let mut quads = part.chunks_exact(4);
        for q in &mut quads {
            for &b in q {
                h = (h ^ u64::from(b)).wrapping_mul(PRIME);
            }
        }
        for &b in quads.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
        h = (h ^ 0xff).wrapping_mul(PRIME);
    }
    h
}

impl Proxy {
    /// A proxy that starts online at `now`.
    pub fn new(config: Config, now: Instant) -> Self {
        let scope = config.branch_scope.as_deref().unwrap_or(&config.node_name);
        let node_tag = format!("{:06x}", fnv(&[scope.as_bytes()]) & 0xff_ffff);
        let upstreams = Upstreams::new(&config.upstreams, config.probe_interval, now);
        let mut dialogs = DialogTable::default();
        dialogs.set_idle(config.limits.dialog_idle, now);
        Proxy {
            ids: Ids::new(config.keys.seed),
            budget: SourceBudget::new(config.limits.per_source_rps),
            scratch: Scratch::default(),
            signer: Signer::new(&config.keys.route),
            buffers: Vec::new(),
            branch_prefix: format!("z9hG4bK-{node_tag}-"),
            node_tag,
            listener_texts: config.listeners.iter().map(ListenerTexts::of).collect(),
            config,
            state: SystemState::Online,
            now,
            next_id: 1,
            timers: TimerTable::default(),
            lazy: TimerTable::default(),
            servers: IdMap::default(),
            server_index: hashbrown::HashTable::new(),
            index_hasher: ahash::RandomState::new(),
            clients: IdMap::default(),
            client_index: hashbrown::HashTable::new(),
            registrations: RegistrationCache::default(),
            dialogs,
            peer_dialogs: DialogTable::default(),
            shard: 0,
            shards: Shards::single(),
            upstreams,
            transmits: VecDeque::new(),
            closes: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            last_counts: Counts::default(),
            drain_complete_sent: false,
            replicate: true,
            standby: false,
            quiesced: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The system state the proxy acts on.
    pub fn system_state(&self) -> SystemState {
        self.state
    }

    /// Feeds a change of the system state. Going offline asks the shell to close SIP
    /// connections; going online lets it accept them again; draining with nothing left
    /// reports [`Event::DrainComplete`] at once.
    pub fn set_system_state(&mut self, state: SystemState) {
        if state == self.state {
            return;
        }
        let before = self.state;
        self.state = state;
        self.drain_complete_sent = false;
        match state {
            SystemState::Offline => self.events.push_back(Event::CloseConnections),
            SystemState::Online if before == SystemState::Offline => {
                self.events.push_back(Event::AcceptConnections)
            }
            _ => {}
        }
        self.after_change();
    }

    /// Whether [`Event::Change`] records for a twin are produced (on by default). A node
    /// without a twin turns them off: a dialog record is a full copy of the dialog, made at
    /// every step of every call.
    pub fn set_replication(&mut self, on: bool) {
        self.replicate = on;
        self.dialogs.set_snapshots(self.records_wanted());
    }

    /// Whether [`Event::Change`] records are produced: for a twin, or for the other shards.
    fn records_wanted(&self) -> bool {
        self.replicate || self.shards.count() > 1
    }

    /// Makes this proxy shard `index` of `shards` (SPEC §6): call it before any traffic, with
    /// the same `shards` for every shard of the box. It then
    ///
    /// - produces change records whatever [`set_replication`](Self::set_replication) says:
    ///   the shell hands each to every other shard ([`apply_peer_change`](Self::apply_peer_change))
    ///   and, with a hot twin, to the replication stream;
    /// - expires only the bindings whose REGISTER Call-ID hashes to it, and de-registers only
    ///   those at the guard, so each binding leaves through one shard and one record;
    /// - sends its upstream probes with Call-IDs that hash to it, so their answers come back.
    ///
    /// Every shard holds every binding, so each finds every phone for a call from the core.
    pub fn set_shard(&mut self, index: usize, shards: Shards) {
        self.shard = index.min(shards.count() - 1);
        self.registrations.set_owner(self.shard, shards.clone());
        self.shards = shards;
        self.dialogs.set_snapshots(self.records_wanted());
    }

    /// Which shard this is, and the box's shards.
    pub fn shard(&self) -> (usize, &Shards) {
        (self.shard, &self.shards)
    }

    /// A twin's standby (`true`) acts on nothing: it sends no upstream probes (the addresses
    /// it would send from belong to its active twin, whose probes would get the answers) and
    /// lets no binding expire (its tables are its twin's, which removes them and says so).
    /// Back to active (`false`), bindings that lapsed meanwhile go at the next timeout; its
    /// upstreams are probed once the addresses are its own on the wire
    /// ([`probe_upstreams_now`](Self::probe_upstreams_now)), not before: an answer to a probe
    /// sent from an address still announced by the twin goes to the twin and is lost, and a
    /// probe that times out takes the upstream out of rotation until the next one.
    ///
    /// Becoming standby hands every transaction under way to the twin, which now owns the
    /// addresses their answers come to: they are forgotten without a word (no 408 or 503 from an
    /// address this node no longer holds, no retransmission), and a request that still reaches
    /// this node starts nothing ([`Stats::standby_dropped`]). The twin relays the 2xx of an
    /// INVITE forwarded here from the early dialog it holds, and the senders' retransmissions
    /// of everything else reach it.
    pub fn set_standby(&mut self, standby: bool) {
        if standby == self.standby {
            return;
        }
        self.standby = standby;
        if standby {
            let handed = self.servers.len() + self.clients.len();
            self.stats.transactions_handed_over += handed as u64;
            self.servers.clear();
            self.server_index.clear();
            self.clients.clear();
            self.client_index.clear();
            self.timers = TimerTable::default();
            self.lazy = TimerTable::default();
        }
    }

    /// Probes every upstream at the next timeout, so the rotation a node that became active
    /// serves with is its own. For the shell once the service addresses are claimed and
    /// announced (the first gratuitous ARP out), so the answers come back to this node.
    pub fn probe_upstreams_now(&mut self) {
        self.upstreams.probe_all_at(self.now);
    }

    /// Requests forwarded and not yet answered with a final response: what a switchover waits
    /// for before it releases the addresses, so their answers come back to the node that
    /// holds their transactions.
    pub fn forwards_in_flight(&self) -> usize {
        self.servers
            .values()
            .filter(|e| {
                e.forward.as_ref().is_some_and(|f| !f.done)
                    && matches!(
                        e.tx.state(),
                        crate::transaction::ServerState::Trying
                            | crate::transaction::ServerState::Proceeding
                    )
            })
            .count()
    }

    /// While `true` no new transaction starts (SPEC §7, switchover): new requests are left
    /// unanswered and counted, so their senders' retransmissions reach the twin once it holds
    /// the addresses; retransmissions, CANCELs and ACKs of what is under way are served.
    pub fn set_quiesced(&mut self, quiesced: bool) {
        self.quiesced = quiesced;
    }

    /// Handles one received message at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.advance_clock(now);
        // Awake anyway: the transactions done absorbing retransmissions go now, as if their
        // timers had fired on time, before this message could have been absorbed by one.
        self.run_lazy_timers();
        self.stats.received += 1;
        let Some(listener) = self
            .config
            .listeners
            .get(usize::from(input.listener.0))
            .cloned()
        else {
            self.malformed(input.source, "unknown listener");
            return;
        };
        let flow = Flow {
            listener: input.listener,
            transport: listener.transport,
            flow: input.flow,
            remote: input.source,
        };
        // The workspace parser is the judge of what is well-formed (and of the status a bad
        // request gets).
        let framing = if listener.transport.is_reliable() {
            sip::Framing::Stream
        } else {
            sip::Framing::Datagram
        };
        if !looks_like_response(input.bytes) && !self.within_budget(input.source) {
            self.stats.rate_limited += 1;
            return;
        }
        let mut message = Message::blank();
        match message.parse_into(input.bytes, framing) {
            Ok(()) if message.is_request() => {
                self.on_request(&message, input.bytes, flow, listener.realm)
            }
            Ok(()) => self.on_response(&message, flow),
            Err(error) => {
                let disposition = error.disposition();
                self.reject_unparsable(input.bytes, flow, disposition, &error.to_string());
            }
        }
        self.after_change();
    }

    /// Handles every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_clock(now);
        self.run_timers();
        self.trim_tables();
        self.after_change();
    }

    /// Gives back what a burst left: a hash table keeps the room it grew to, so the minute
    /// in which every phone re-registered after a power cut (tens of thousands of
    /// transactions alive at once) would hold that room for as long as the box runs. A table
    /// at a quarter of its room or less is shrunk to twice what it holds; small tables are
    /// left alone (growing them back is cheap).
    fn trim_tables(&mut self) {
        fn trim<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
            map: &mut std::collections::HashMap<K, V, S>,
        ) {
            const SMALL: usize = 1024;
            if map.capacity() > SMALL && map.len() <= map.capacity() / 4 {
                map.shrink_to((map.len() * 2).max(SMALL));
            }
        }
        trim(&mut self.servers);

        trim(&mut self.clients);
        {
            const SMALL: usize = 1024;
            let (index, servers, hasher) =
                (&mut self.server_index, &self.servers, &self.index_hasher);
            if index.capacity() > SMALL && index.len() <= index.capacity() / 4 {
                index.shrink_to((index.len() * 2).max(SMALL), |id| {
                    server_hash(hasher, servers, *id)
                });
            }
        }
        {
            const SMALL: usize = 1024;
            let (index, clients, hasher) =
                (&mut self.client_index, &self.clients, &self.index_hasher);
            if index.capacity() > SMALL && index.len() <= index.capacity() / 4 {
                index.shrink_to((index.len() * 2).max(SMALL), |id| {
                    client_hash(hasher, clients, *id)
                });
            }
        }
        self.timers.trim();
        self.lazy.trim();
        self.dialogs.trim();
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Gives back the buffer of a sent [`Transmit`] (its `bytes`): the proxy writes a later
    /// message into it instead of allocating. Optional; a shell that drops its transmits
    /// costs an allocation per message.
    pub fn recycle(&mut self, bytes: Vec<u8>) {
        if self.buffers.len() < BUFFERS_KEPT && bytes.capacity() <= BUFFER_KEPT_SIZE {
            self.buffers.push(bytes);
        }
    }

    /// An empty buffer with room for `room` bytes: a recycled one when there is one no more
    /// than twice that size (or than [`BUFFER_SMALL`]). Grown to `room` exactly: transactions
    /// keep their copies for up to 32 s, and a buffer that went round the pool doubling
    /// whenever it was short would be kept at the largest size it ever had (about 4 KB held
    /// per transaction at 800 calls/s instead of the message's size).
    fn buffer(&mut self, room: usize) -> Vec<u8> {
        let mut buffer = match self.buffers.pop() {
            Some(buffer) if buffer.capacity() <= room.max(BUFFER_SMALL) * 2 => buffer,
            _ => Vec::new(),
        };
        buffer.clear();
        buffer.reserve_exact(room);
        buffer
    }

    /// A copy of `bytes` in a [`Proxy::buffer`].
    fn copy_of(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut copy = self.buffer(bytes.len());
        copy.extend_from_slice(bytes);
        copy
    }

    /// The next connection or association to end gracefully.
    #[must_use]
    pub fn poll_close(&mut self) -> Option<crate::transport::Close> {
        self.closes.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.next_deadline(),
            self.lazy.next_deadline().map(|at| at + LAZY_SLACK),
            // A standby's bindings and sessions are its twin's: it removes none by itself.
            self.registrations.next_expiry().filter(|_| !self.standby),
            self.dialogs.next_idle().filter(|_| !self.standby),
            self.upstreams
                .next_deadline()
                .filter(|_| !self.standby && self.shard == 0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The drain's counts (SPEC §2 rule 10).
    pub fn counts(&self) -> Counts {
        let dialogs = self.dialogs.counts();
        Counts {
            active_sessions: dialogs.active(),
            early: dialogs.early,
            confirmed: dialogs.confirmed,
            registrations: self.registrations.len(),
        }
    }

    /// Whether the shell should accept new SIP connections (not while offline).
    pub fn accepts_connections(&self) -> bool {
        self.state != SystemState::Offline
    }

    /// `show calls`.
    ///
    /// With shards, the calls of the others too (held from their records), so shard 0 lists
    /// the box's.
    pub fn calls(&self) -> Vec<CallInfo> {
        let mut calls: Vec<CallInfo> = self
            .dialogs
            .iter()
            .chain(self.peer_dialogs.iter())
            .map(|(d, started)| CallInfo {
                call_id: d.id.call_id.to_string(),
                state: d.state,
                caller: d.caller.uri.to_string(),
                callee: d.callee.uri.to_string(),
                caller_addr: d.caller.flow.remote,
                callee_addr: d.callee.flow.remote,
                priority: d.priority,
                age_secs: self.now.saturating_duration_since(started).as_secs(),
            })
            .collect();
        calls.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        calls
    }

    /// `show registrations`. A binding's calls are counted as the drain rules see them when a
    /// REGISTER for it comes in; an AoR with one binding stands for a REGISTER with one contact.
    ///
    /// Costs what the bindings and their own calls cost: the calls of each binding come from
    /// the dialog table's index of access-side parties, not from a walk over every dialog.
    pub fn registrations(&self) -> Vec<RegistrationInfo> {
        self.registrations_page(None, usize::MAX)
    }

    /// A page of `show registrations`: up to `limit` bindings after the one with AoR and
    /// contact `after`, in (AoR, contact) order. A shell that lists a full cache a page per
    /// turn of its loop keeps SIP flowing meanwhile.
    pub fn registrations_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Vec<RegistrationInfo> {
        self.registrations
            .page(after, limit)
            .into_iter()
            .map(|b| RegistrationInfo {
                active_calls: self.endpoint_calls(
                    &b.contact,
                    &b.aor,
                    b.flow,
                    self.registrations.bindings_of(&b.aor) == 1,
                ) as u64,
                aor: b.aor.clone(),
                contact: b.contact.clone(),
                remote: b.flow.remote,
                transport: b.flow.transport,
                expires_in_secs: b.expires_at.saturating_duration_since(self.now).as_secs(),
            })
            .collect()
    }

    /// The failures counted on each upstream, in configuration order (a shard's share of
    /// `show upstreams`, added up by the shell).
    pub fn upstream_failures(&self) -> impl Iterator<Item = u64> + '_ {
        self.upstreams.failures()
    }

    /// `show upstreams`, as of the last time handed in.
    pub fn upstreams(&self) -> Vec<UpstreamInfo> {
        self.upstreams.snapshot(self.now)
    }

    /// `show upstreams` as of `now` (never before the last time handed in): an idle proxy's
    /// clock stands still between events, and ages (the last probe's, the wait until a
    /// promised return) must be counted to the moment of asking.
    pub fn upstreams_at(&self, now: Instant) -> Vec<UpstreamInfo> {
        self.upstreams.snapshot(now.max(self.now))
    }

    /// `show stats`.
    pub fn stats(&self) -> Stats {
        let held = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Stats {
            server_transactions: held(self.servers.len()),
            client_transactions: held(self.clients.len()),
            timers_armed: held(self.timers.len() + self.lazy.len()),
            ..self.stats
        }
    }

    /// A connection (TCP) or association (SCTP) is gone. Bindings and sessions that were
    /// reached over it keep their remote address but lose the connection, so the next message
    /// to them asks the shell to open (or find) a connection to that address.
    /// Both tables index their parties by connection: a box with many TCP phones closes
    /// connections all the time, and each close costs what its own bindings and calls cost.
    pub fn handle_flow_closed(&mut self, now: Instant, listener: ListenerId, flow: FlowId) {
        self.advance_clock(now);
        let gone = |f: &Flow| f.listener == listener && f.flow == Some(flow);
        // With shards each binding has one owner, and only the owner writes its change: the
        // others learn it from the owner's record.
        let bindings: Vec<_> = self
            .registrations
            .on_connection(listener, flow)
            .into_iter()
            .filter(|b| self.registrations.owns(b))
            .cloned()
            .collect();
        for mut binding in bindings {
            binding.flow.flow = None;
            let change = self.registrations.upsert(binding, self.now);
            self.emit_binding(change);
        }
        for id in self.dialogs.on_connection(listener, flow) {
            let change = self.dialogs.update(&id, self.now, |d| {
                for party in [&mut d.caller, &mut d.callee] {
                    if gone(&party.flow) {
                        party.flow.flow = None;
                    }
                }
            });
            if let Some(change) = change {
                self.emit_dialog(change);
            }
        }
        self.after_change();
    }

    /// Applies a change record from the twin after checking it against this node's
    /// configuration ([`crate::replication::validate`]): a record that fails changes nothing.
    /// Applying reports nothing to replicate: a standby's tables are its twin's.
    pub fn apply_change(
        &mut self,
        now: Instant,
        mut record: ChangeRecord,
    ) -> Result<(), RecordError> {
        self.advance_clock(now);
        crate::replication::validate(&self.config, &mut record)?;
        match record {
            ChangeRecord::Binding(change) => self.registrations.apply(change, self.now),
            ChangeRecord::Dialog(change) => self.dialogs.apply_record(change, self.now),
        }
        self.after_change();
        Ok(())
    }

    /// A change record another shard of this box produced. A binding is held as this shard's
    /// own (every shard finds every phone); a session is held apart, only to tell whether a
    /// registered phone is in a call, never routed on or counted (its shard does both).
    /// Nothing is reported: the record's own shard reported it. The records come from this
    /// process, so they are not validated as a twin's are.
    pub fn apply_peer_change(&mut self, now: Instant, record: ChangeRecord) {
        self.advance_clock(now);
        self.stats.peer_records_applied += 1;
        match record {
            ChangeRecord::Binding(change) => {
                self.registrations.apply(change, self.now);
                self.after_change();
            }
            ChangeRecord::Dialog(change) => self.peer_dialogs.apply_record(change, self.now),
        }
    }

    /// What another shard of this box learnt of an upstream ([`Event::Upstream`]): the
    /// rotation is the box's.
    pub fn apply_peer_upstream(&mut self, now: Instant, note: crate::upstreams::UpstreamNote) {
        self.advance_clock(now);
        self.upstreams.apply_note(note, self.now);
    }

    /// Forgets every binding and dialog without ending anything: a standby's tables, before
    /// its twin's snapshot replaces them.
    pub fn clear_replicated(&mut self, now: Instant) {
        self.advance_clock(now);
        self.registrations.clear();
        self.dialogs.clear();
        self.peer_dialogs.clear();
        self.after_change();
    }

    /// Records of the whole replicated state, for a twin that (re)joins. With shards, shard
    /// 0's holds the box's: every binding, and the other shards' sessions it knows from their
    /// records.
    pub fn full_sync(&self) -> Vec<ChangeRecord> {
        let mut records: Vec<ChangeRecord> = self
            .registrations
            .snapshot_records(self.now)
            .into_iter()
            .map(ChangeRecord::Binding)
            .collect();
        records.extend(
            self.dialogs
                .iter()
                .chain(self.peer_dialogs.iter())
                .map(|(d, started)| {
                    ChangeRecord::Dialog(DialogRecordChange::Upsert(Box::new(DialogRecord::of(
                        d, started, self.now,
                    ))))
                }),
        );
        records
    }

    /// The hash of this node's listener list that a twin must share
    /// ([`crate::replication::listener_hash`]).
    pub fn listener_hash(&self) -> [u8; 32] {
        crate::replication::listener_hash(&self.config)
    }

    // ----- shared helpers -----

    fn advance_clock(&mut self, now: Instant) {
        // Time never goes backwards; a caller that tries is clamped rather than obeyed.
        if now > self.now {
            self.now = now;
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A branch id of ours: the prefix with the node tag, the loop hash, and 64 random bits.
    fn new_branch(&mut self, loop_hash: u64) -> Branch {
        let mut branch = Branch::empty();
        branch.push(self.branch_prefix.as_bytes());
        branch.push_hex(loop_hash, 0);
        branch.push(b".");
        branch.push_hex(self.ids.next(), 16);
        branch
    }

    /// Appends a new branch id (see [`Proxy::new_branch`]) to `out`.
    fn push_new_branch(&mut self, out: &mut String, loop_hash: u64) {
        out.push_str(&self.branch_prefix);
        crate::border::push_hex(out, loop_hash, 0);
        out.push('.');
        self.ids.push_token(out);
    }

    fn new_tag(&mut self) -> String {
        self.ids.token()
    }

    /// Whether a request from `source` is within its per-source budget. The configured
    /// upstreams send for everyone and are not counted.
    fn within_budget(&mut self, source: SocketAddr) -> bool {
        let ip = source.ip();
        if self.config.upstreams.iter().any(|u| u.addr.ip() == ip) {
            return true;
        }
        self.budget.admit(ip, self.now)
    }

    /// Transactions held now (server and client).
    fn transactions(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    /// Whether a request to forward fits under the cap; in-dialog work may use a tenth more, so
    /// a flood of new requests cannot keep established calls from ending. A forwarded request
    /// holds two transactions (ours toward the sender, ours toward the next hop), so two must
    /// fit, or the table ends one over its cap.
    fn transaction_room(&self, in_dialog: bool) -> bool {
        let cap = self.config.limits.max_transactions;
        let cap = if in_dialog { cap + cap / 10 } else { cap };
        self.transactions() + 2 <= cap
    }

    /// Whether a Via is one this node inserted.
    fn is_own_via(&self, via: &sip::Via<'_>) -> bool {
        via.branch()
            .is_some_and(|b| b.starts_with(&self.branch_prefix))
    }

    /// Whether a URI (from a Route, Record-Route or request URI) points at this box: one of
    /// its names, or one of its listeners' addresses (port 5060 when none is given).
    fn is_own(&self, u: &sip::Uri<'_>) -> bool {
        let Some(host) = u.host() else {
            return false;
        };
        if self
            .config
            .local_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(host.as_str()))
        {
            return true;
        }
        let port = u.port().unwrap_or(5060);
        if let sip::Host::Ipv4(text) = host {
            // Read as an address, the text is a listener's exactly when it is written as that
            // listener's address is (see `ListenerTexts::ipv4`): compared, not parsed.
            return self
                .config
                .listeners
                .iter()
                .zip(&self.listener_texts)
                .any(|(l, t)| l.addr.port() == port && t.ipv4.as_deref() == Some(text));
        }
        let Some(ip) = host.ip() else {
            return false;
        };
        self.config
            .listeners
            .iter()
            .any(|l| l.addr.ip() == ip && l.addr.port() == port)
    }

    /// The listener to use toward `realm` over `transport` (any of the realm if none matches).
    fn listener_for(&self, realm: Realm, transport: Transport) -> Option<ListenerId> {
        let find = |want_transport: bool| {
            self.config
                .listeners
                .iter()
                .position(|l| l.realm == realm && (!want_transport || l.transport == transport))
        };
        find(true)
            .or_else(|| find(false))
            .and_then(|i| u16::try_from(i).ok())
            .map(ListenerId)
    }

    fn listener_addr(&self, id: ListenerId) -> Option<SocketAddr> {
        self.config.listeners.get(usize::from(id.0)).map(|l| l.addr)
    }

    fn realm_of(&self, id: ListenerId) -> Option<Realm> {
        self.config
            .listeners
            .get(usize::from(id.0))
            .map(|l| l.realm)
    }

    /// Writes our Record-Route URI for a listener into `uri` (cleared first), with the
    /// dialog's token signed for its Call-ID and caller tag when there is one. `None` for an
    /// unknown listener.
    fn write_own_rr_uri(
        &self,
        uri: &mut String,
        id: ListenerId,
        token: Option<(&crate::border::RouteToken, &str, &str)>,
    ) -> Option<()> {
        let head = &self.listener_texts.get(usize::from(id.0))?.record_route;
        uri.clear();
        uri.push_str(head);
        if let Some((token, call_id, caller_tag)) = token {
            uri.push(';');
            uri.push_str(crate::border::TOKEN_PARAM);
            uri.push('=');
            token.sign_into(&self.signer, call_id, caller_tag, uri);
        }
        uri.push('>');
        Some(())
    }

    /// Our Via for a listener.
    fn own_via(&self, id: ListenerId, branch: &str) -> Option<String> {
        let mut via = String::new();
        self.write_own_via(&mut via, id, branch)?;
        Some(via)
    }

    /// Writes our Via for a listener into `via` (cleared first); `None` for an unknown one.
    fn write_own_via(&self, via: &mut String, id: ListenerId, branch: &str) -> Option<()> {
        let head = &self.listener_texts.get(usize::from(id.0))?.via;
        via.clear();
        via.push_str(head);
        via.push_str(branch);
        via.push_str(";rport");
        Some(())
    }

    /// A flow to `addr` over a listener of `realm`.
    fn flow_to(&self, realm: Realm, transport: Transport, addr: SocketAddr) -> Option<Flow> {
        let listener = self.listener_for(realm, transport)?;
        let transport = self
            .config
            .listeners
            .get(usize::from(listener.0))
            .map(|l| l.transport)?;
        Some(Flow {
            listener,
            transport,
            flow: None,
            remote: addr,
        })
    }

    fn send(&mut self, to: Flow, bytes: Vec<u8>) {
        self.stats.sent += 1;
        self.transmits.push_back(Transmit {
            listener: to.listener,
            transport: to.transport,
            flow: to.flow,
            destination: to.remote,
            bytes,
        });
    }

    fn malformed(&mut self, source: SocketAddr, reason: &str) {
        self.stats.malformed_dropped += 1;
        self.events.push_back(Event::MalformedDropped {
            source,
            reason: reason.to_owned(),
        });
    }

    /// Answers what the `sip` crate says a bad request deserves (400, 413, 505, 513) when its
    /// Via, From, To, Call-ID and CSeq can be salvaged; drops and counts everything else.
    fn reject_unparsable(
        &mut self,
        bytes: &[u8],
        from: Flow,
        disposition: sip::Disposition,
        why: &str,
    ) {
        if let sip::Disposition::Reply { status, reason } = disposition {
            let mut out = Vec::new();
            let is_ack = bytes
                .iter()
                .skip_while(|b| matches!(b, b'\r' | b'\n'))
                .take(4)
                .eq(b"ACK ".iter());
            if !is_ack && sip::build::reply_to_unparsable(bytes, status, reason, &mut out).is_ok() {
                self.stats.bad_requests += 1;
                self.send(from, out);
                return;
            }
        }
        self.malformed(from.remote, why);
    }

    fn emit_binding(&mut self, change: BindingChange) {
        match &change {
            BindingChange::Upsert(record) => self.events.push_back(Event::RegistrationAdded {
                aor: record.aor.clone(),
                contact: record.contact.clone(),
                expires_secs: record.expires_in_ms / 1000,
            }),
            BindingChange::Remove {
                aor,
                contact,
                cause,
            } => self.events.push_back(Event::RegistrationRemoved {
                aor: aor.clone(),
                contact: contact.clone(),
                cause: *cause,
            }),
        }
        if self.records_wanted() {
            self.events
                .push_back(Event::Change(ChangeRecord::Binding(change)));
        }
    }

    fn emit_dialog(&mut self, change: DialogChange) {
        if !self.records_wanted() {
            return;
        }
        let record = match change {
            DialogChange::Upsert(id) => match self.dialogs.record(&id, self.now) {
                Some(record) => DialogRecordChange::Upsert(Box::new(record)),
                None => return,
            },
            DialogChange::Remove(id) => DialogRecordChange::Remove(id),
        };
        self.events
            .push_back(Event::Change(ChangeRecord::Dialog(record)));
    }

    /// Reports count changes and the end of a drain.
    fn after_change(&mut self) {
        let counts = self.counts();
        if counts != self.last_counts {
            self.last_counts = counts;
            self.events.push_back(Event::CountsChanged(counts));
        }
        let idle = counts.active_sessions == 0 && counts.registrations == 0;
        if self.state == SystemState::Draining && idle && !self.drain_complete_sent {
            self.drain_complete_sent = true;
            self.events.push_back(Event::DrainComplete);
        }
        if !idle {
            self.drain_complete_sent = false;
        }
    }

    /// Keeps the table's deadline of server transaction `id` at its machine's first timer.
    fn sync_server_timers(&mut self, id: TxId) {
        let next = self.servers.get(&id).and_then(|e| e.tx.timers().next());
        self.rearm_transaction(TimerKey::Server(id), next);
    }

    /// Keeps the table's deadline of client transaction `id` at its machine's first timer.
    fn sync_client_timers(&mut self, id: TxId) {
        let next = self.clients.get(&id).and_then(|e| e.tx.timers().next());
        self.rearm_transaction(TimerKey::Client(id), next);
    }

    /// Panics unless the timer table holds, for every transaction, the deadline of its first
    /// timer (the machine's letters are the truth, the table their one summary).
    #[cfg(test)]
    pub(crate) fn assert_one_deadline_per_transaction(&self) {
        for (id, entry) in &self.servers {
            self.assert_transaction_deadline(TimerKey::Server(*id), entry.tx.timers().next());
        }
        for (id, entry) in &self.clients {
            self.assert_transaction_deadline(TimerKey::Client(*id), entry.tx.timers().next());
        }
    }

    /// Panics unless `key` is armed at `first`'s deadline in the table its letter belongs to,
    /// and not in the other.
    #[cfg(test)]
    fn assert_transaction_deadline(&self, key: TimerKey, first: Option<(TxTimer, Instant)>) {
        let lazy = first.is_some_and(|(timer, _)| timer.is_lazy());
        let (held, other) = if lazy {
            (&self.lazy, &self.timers)
        } else {
            (&self.timers, &self.lazy)
        };
        assert_eq!(held.get(key), first.map(|(_, at)| at), "{key:?}");
        assert_eq!(other.get(key), None, "{key:?} in both tables");
    }

    /// Keeps a transaction's one deadline at its machine's first timer: in the lazy table if
    /// that timer is lazy, in the main one otherwise.
    fn rearm_transaction(&mut self, key: TimerKey, first: Option<(TxTimer, Instant)>) {
        match first {
            Some((timer, at)) if timer.is_lazy() => {
                self.timers.cancel(key);
                self.lazy.set_unless_at(key, at);
            }
            other => {
                self.lazy.cancel(key);
                self.rearm(key, other.map(|(_, at)| at));
            }
        }
    }

    /// Sets `key` to `at`, or cancels it for none; leaves the table alone when it holds that
    /// already.
    fn rearm(&mut self, key: TimerKey, at: Option<Instant>) {
        match at {
            Some(at) => self.timers.set_unless_at(key, at),
            None => self.timers.cancel(key),
        }
    }

    fn remove_server(&mut self, id: TxId) {
        if let Some(entry) = self.servers.get(&id) {
            let hash = self.index_hasher.hash_one(ServerKeyRef::of(entry));
            if let Ok(found) = self.server_index.find_entry(hash, |&x| x == id) {
                found.remove();
            }
        }
        if let Some(entry) = self.servers.remove(&id) {
            self.recycle(entry.request);
            if let Some(last) = entry.last_response {
                self.recycle(last);
            }
        }
        self.timers.cancel(TimerKey::Server(id));
        self.lazy.cancel(TimerKey::Server(id));
        self.timers.cancel(TimerKey::TimerC(id));
    }

    fn remove_client(&mut self, id: TxId) {
        if let Some(entry) = self.clients.get(&id) {
            let hash = self
                .index_hasher
                .hash_one(ClientKeyRef(entry.branch.as_bytes(), &entry.method));
            if let Ok(found) = self.client_index.find_entry(hash, |&x| x == id) {
                found.remove();
            }
        }
        if let Some(entry) = self.clients.remove(&id) {
            self.recycle(entry.request);
        }
        self.timers.cancel(TimerKey::Client(id));
        self.lazy.cancel(TimerKey::Client(id));
        self.timers.cancel(TimerKey::UpstreamTimeout(id));
        self.timers.cancel(TimerKey::ProbeTimeout(id));
        self.timers.cancel(TimerKey::Cancelled(id));
    }

    /// Starts a client transaction for `bytes` (which carry our Via with `branch`) and sends it.
    fn start_client(
        &mut self,
        method: Cow<'static, str>,
        branch: Branch,
        bytes: Vec<u8>,
        dest: Flow,
        purpose: ClientPurpose,
    ) -> TxId {
        let id = self.next_id();
        let class = if method == "INVITE" {
            crate::transaction::TxClass::Invite
        } else {
            crate::transaction::TxClass::NonInvite
        };
        let tx = ClientTransaction::new(
            class,
            dest.transport.is_reliable(),
            self.config.timers,
            self.now,
        );
        let kept = self.copy_of(&bytes);
        self.send(dest, bytes);
        let hash = self
            .index_hasher
            .hash_one(ClientKeyRef(branch.as_bytes(), &method));
        // An earlier transaction with this branch and method is no longer found by them.
        let clients = &self.clients;
        if let Ok(earlier) = self.client_index.find_entry(hash, |other| {
            clients
                .get(other)
                .is_some_and(|e| e.branch.as_bytes() == branch.as_bytes() && e.method == method)
        }) {
            earlier.remove();
        }
        self.clients.insert(
            id,
            ClientEntry {
                tx,
                branch,
                method,
                request: kept,
                dest,
                purpose,
            },
        );
        let (clients, hasher) = (&self.clients, &self.index_hasher);
        self.client_index
            .insert_unique(hash, id, |other| client_hash(hasher, clients, *other));
        self.sync_client_timers(id);
        id
    }

    /// Sends a request the proxy originates itself (CANCEL, BYE, de-registration, probe).
    fn send_own_request(
        &mut self,
        mut draft: Draft,
        method: &'static str,
        dest: Flow,
        purpose: ClientPurpose,
    ) -> Option<TxId> {
        let branch = self.new_branch(0);
        let via = self.own_via(dest.listener, branch.as_str())?;
        draft.prepend("Via", via);
        let bytes = draft.to_bytes();
        Some(self.start_client(method.into(), branch, bytes, dest, purpose))
    }

    /// Seconds for a Retry-After header: rounded up, at least 1.
    fn retry_secs(wait: Duration) -> u64 {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        secs.max(1)
    }
}
