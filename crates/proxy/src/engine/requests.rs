//! Requests: matching to server transactions, admission (the drain), routing and forwarding.
//!
//! Decides: what is a retransmission, a CANCEL, an ACK to absorb or to pass on; whether a new
//! request is admitted in the current system state; where it goes (upstream list for
//! out-of-dialog requests from access, the registration cache for those from the core, the
//! dialog's other party for in-dialog ones); and how it is edited on the way (Max-Forwards,
//! our Route entries removed, Record-Route, received/rport, our Via).

use crate::dialogs::{CallerKeys, Dialog, DialogId, DialogState, Party, Side, Text};
use crate::drain::{self, DrainMethod, RequestFacts, Verdict};
use crate::events::Event;
use crate::msg::{self, aor_of, Message};
use crate::registrations::Lookup;
use crate::transaction::{ServerAction, ServerState, ServerTransaction, TxClass};
use crate::transport::{Flow, Realm};
use sip::HeaderName;
use sip::Method;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use super::{
    ClientPurpose, Forward, Proxy, Retarget, ServerEntry, ServerKey, Targets, TimerKey, TxId,
};

/// RFC 3261's branch prefix.
const MAGIC_COOKIE: &str = "z9hG4bK";

fn starts_with_cookie(branch: &str) -> bool {
    branch
        .get(..MAGIC_COOKIE.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(MAGIC_COOKIE))
}

/// The sent-by of a Via as a transaction key: host lower-cased (IPv6 without brackets), and
/// the port when one is written.
fn sent_by_key<'v>(via: &sip::Via<'v>) -> Cow<'v, str> {
    let host = via.host().as_str();
    if !host.bytes().any(|c| c.is_ascii_uppercase()) {
        let Some(port) = via.port() else {
            return Cow::Borrowed(host);
        };
        // `host:port` as the sender wrote it, when that is the key's text.
        let mut digits = [0; 20];
        let port = decimal_bytes(u64::from(port), &mut digits);
        let raw = via.raw();
        let start = (host.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
        let written = raw.get(start..start.saturating_add(host.len() + 1 + port.len()));
        if let Some(text) = written.filter(|t| {
            t.strip_prefix(host)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|rest| rest.as_bytes() == port)
        }) {
            return Cow::Borrowed(text);
        }
    }
    Cow::Owned(owned_sent_by_key(via))
}

/// [`sent_by_key`], written out.
fn owned_sent_by_key(via: &sip::Via<'_>) -> String {
    let host = via.host().as_str();
    let mut key = String::with_capacity(host.len() + 6);
    key.extend(host.chars().map(|c| c.to_ascii_lowercase()));
    if let Some(port) = via.port() {
        key.push(':');
        key.push_str(decimal(u64::from(port), &mut [0; 20]));
    }
    key
}

/// Room for what the proxy adds to a forwarded request (Via, two Record-Route entries,
/// received/rport), so the output is written without regrowing.
const OWN_LINES_ROOM: usize = 320;

/// Our own lines on top of a forwarded request: our Via, and the Record-Route entries of a
/// dialog-creating request, nearest first.
#[derive(Debug, Default)]
pub(super) struct OwnLines<'t> {
    /// Our Via.
    pub(super) via: Option<&'t str>,
    /// Our Record-Route entries, outgoing side first.
    pub(super) record_route: [Option<&'t str>; 2],
}

/// Records `name: value` just above the first `name` line of `msg`, or at the top.
fn insert_first<'e>(
    editor: &mut sip::Editor<'e>,
    msg: &'e sip::Message<'e>,
    name: HeaderName,
    value: &'e str,
) {
    match msg.first_index(name) {
        Some(first) => editor.insert_before(first, name.as_str(), value),
        None => editor.prepend_header(name.as_str(), value),
    };
}

/// The sender's Via as we pass it on (RFC 3261 §18.2.1, RFC 3581): `received` when its
/// sent-by is not the address it came from, `rport` filled in when it asked. `None` when
/// neither applies and it goes as it came.
fn via_as_received<'b>(via: &sip::Via<'_>, from: Flow, value: &'b mut String) -> Option<&'b str> {
    // RFC 3261 §18.2.1: a sent-by that is a name, or an address other than the source.
    let received = via.host().ip() != Some(from.remote.ip());
    let rport = via.rport() != sip::Rport::Absent;
    if !received && !rport {
        return None;
    }
    value.clear();
    push_without_bare_rport(via.raw(), rport, value);
    if received {
        // Writing into a String cannot fail.
        let _ = write!(value, ";received={}", from.remote.ip());
    }
    if rport {
        value.push_str(";rport=");
        push_decimal(value, u64::from(from.remote.port()));
    }
    Some(value.as_str())
}

/// The Via hop `raw` appended to `value`, less every bare `rport` parameter (a `;`-separated
/// piece that is `rport` once trimmed) when `drop_rport`. What is kept is copied in runs, not
/// piece by piece: usually the whole text but the one `;rport`.
fn push_without_bare_rport(raw: &str, drop_rport: bool, value: &mut String) {
    if !drop_rport {
        value.push_str(raw);
        return;
    }
    let b = raw.as_bytes();
    // `kept` is where the run not yet copied starts; `at` is the `;` before the next piece
    // (the first piece is never a parameter).
    let mut kept = 0;
    let mut at = next_semicolon(b, 0);
    while at < b.len() {
        let next = next_semicolon(b, at + 1);
        let piece = &raw[at + 1..next];
        if is_bare_rport(piece) {
            value.push_str(&raw[kept..at]);
            kept = next;
        }
        at = next;
    }
    value.push_str(&raw[kept..]);
}

/// Whether a Via parameter is `rport` once trimmed of white space. A piece that starts and
/// ends with a visible ASCII character has nothing to trim, so one of more than five bytes is
/// not `rport` without trimming it (the usual `branch=...`); only a padded one is trimmed.
fn is_bare_rport(piece: &str) -> bool {
    let b = piece.as_bytes();
    match (b.first(), b.last()) {
        _ if b.len() < 5 => false,
        _ if b.len() == 5 => piece.eq_ignore_ascii_case("rport"),
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => false,
        _ => piece.trim().eq_ignore_ascii_case("rport"),
    }
}

/// Index of the first `;` at or after `from` (`b.len()` when none), eight bytes a step: a
/// Via hop is some sixty bytes with two or three parameters.
fn next_semicolon(b: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // High bit set in the bytes of `w` that are zero, exact for the lowest one.
        let w = u64::from_le_bytes(word) ^ (ONES * u64::from(b';'));
        let hits = w.wrapping_sub(ONES) & !w & HIGHS;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && b[i] != b';' {
        i += 1;
    }
    i
}

/// `n` in decimal, written into `buf` (no allocation on the per-message path).
pub(super) fn decimal(n: u64, buf: &mut [u8; 20]) -> &str {
    std::str::from_utf8(decimal_bytes(n, buf)).unwrap_or_default()
}

/// [`decimal`]'s digits as bytes: what a hash or a comparison reads, without the UTF-8 check
/// that makes them text.
pub(super) fn decimal_bytes(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    // Two digits a division: a port takes three steps instead of five.
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        buf[at] = b'0' + n as u8;
    }
    &buf[at..]
}

/// `00`, `01`, ... `99`: the two digits of each number below a hundred.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// [`decimal`] appended to `out`, a digit at a time.
fn push_decimal(out: &mut String, n: u64) {
    for &digit in decimal_bytes(n, &mut [0; 20]) {
        out.push(char::from(digit));
    }
}

/// The other realm.
pub(super) fn opposite(realm: Realm) -> Realm {
    match realm {
        Realm::Access => Realm::Core,
        Realm::Core => Realm::Access,
    }
}

impl Proxy {
    pub(super) fn on_request(&mut self, m: &Message<'_>, bytes: &[u8], from: Flow, realm: Realm) {
        if self.standby {
            // A standby holds none of the addresses: this request was on its way before they
            // moved (or is misrouted). Its sender's retransmission reaches the active twin.
            self.stats.standby_dropped += 1;
            return;
        }
        let method = m.method();
        let Some(via) = m.top_via() else {
            return;
        };
        let call_id = m.call_id().unwrap_or_default();
        let cseq = m.cseq().unwrap_or_default();
        // RFC 3261 §17.2.3: only a branch with the magic cookie and something after it names a
        // transaction; a bare cookie (RFC 4475 `badbranch`) or none is matched the RFC 2543
        // way, by what the request itself says.
        let branch: Cow<'_, str> = match via.branch() {
            Some(b) if b.len() > MAGIC_COOKIE.len() && starts_with_cookie(b) => Cow::Borrowed(b),
            _ => Cow::Owned(format!(
                "rfc2543-{call_id}-{cseq}-{}-{}",
                m.from_tag().unwrap_or_default(),
                m.request_uri().unwrap_or_default()
            )),
        };
        let sent_by = sent_by_key(via);
        let key_method = if method == Method::Ack {
            "INVITE".into()
        } else {
            super::kept_method(method)
        };
        // The index does not change before a transaction is created below: one lookup, with
        // the key borrowed (an owned one is made only for a new transaction).
        let existing = self.find_server(super::ServerKeyRef::new(&branch, &sent_by, &key_method));
        if let Some(sid) = existing {
            if self
                .servers
                .get(&sid)
                .is_some_and(|e| e.source.remote != from.remote)
            {
                // Someone else's branch: not a retransmission, and no copy of the answer for
                // a third party.
                self.stats.spoofed += 1;
                return;
            }
        }

        if method == Method::Ack {
            if let Some(sid) = existing {
                if let Some(entry) = self.servers.get_mut(&sid) {
                    match entry.tx.state() {
                        ServerState::Completed | ServerState::Confirmed => {
                            // The ACK of a non-2xx final is hop-by-hop: it ends here.
                            let _ = entry.tx.on_ack(self.now);
                            self.sync_server_timers(sid);
                            return;
                        }
                        _ => {}
                    }
                }
            }
            self.forward_in_dialog(m, bytes, from, realm, None);
            return;
        }

        if let Some(sid) = existing {
            self.on_retransmission(sid);
            return;
        }
        if method == Method::Cancel {
            self.on_cancel(
                m,
                from,
                super::ServerKeyRef::new(&branch, &sent_by, "INVITE"),
            );
            return;
        }
        // Where the branch and sent-by are in the request (the transaction keeps a copy).
        let key = ServerKey {
            branch: super::KeyText::of(&branch, bytes),
            sent_by: super::KeyText::of(&sent_by, bytes),
            method: key_method,
        };

        if self.quiesced {
            // A switchover is handing the addresses to the twin: no new transaction starts
            // here. The sender retransmits (UDP) or resends (a stream), and the twin answers.
            self.stats.switchover_held += 1;
            return;
        }

        // RFC 3261 §16.3 step 2: a request URI scheme the box cannot route gets 416.
        if !m.sip.has_routable_scheme() {
            self.respond_stateless(m, from, 416, &[]);
            return;
        }

        if m.max_forwards() == Some(0) && !(method == Method::Options && self.is_to_self(m)) {
            self.stats.too_many_hops += 1;
            self.respond_stateless(m, from, 483, &[]);
            return;
        }

        let loop_hash = self.loop_hash(m, from.listener);
        let mut hash_digits = String::with_capacity(0);
        let ours = |v: &sip::Via<'_>, digits: &mut String| {
            self.is_own_via(v)
                && v.branch().is_some_and(|b| {
                    if digits.is_empty() {
                        crate::border::push_hex(digits, loop_hash, 0);
                    }
                    b.strip_prefix(self.branch_prefix.as_str())
                        .and_then(|rest| rest.split('.').next())
                        .is_some_and(|h| h == digits.as_str())
                })
        };
        // The top hop was parsed with the message; only the ones below it are read here.
        let looped = m.top_via().is_some_and(|v| ours(v, &mut hash_digits))
            || m.sip
                .list_items(HeaderName::Via)
                .skip(1)
                .filter_map(|(_, hop)| sip::Via::parse(hop).ok())
                .any(|v| ours(&v, &mut hash_digits));
        if looped {
            self.stats.loops += 1;
            self.respond_stateless(m, from, 482, &[]);
            return;
        }

        // RFC 3261 §16.3 step 5: the box supports no extension a proxy must understand.
        let proxy_require: Vec<&str> = m.sip.proxy_require().collect();
        if !proxy_require.is_empty() {
            let unsupported = [("Unsupported", proxy_require.join(", "))];
            self.respond_stateless(m, from, 420, &unsupported);
            return;
        }

        let in_dialog = m.to_tag().is_some();
        if in_dialog {
            self.forward_in_dialog(m, bytes, from, realm, Some((key, loop_hash)));
            return;
        }

        if !self.transaction_room(false) {
            self.reject_at_cap(m, from, Cap::Transactions);
            return;
        }

        let to_self = self.is_to_self(m);
        if method == Method::Options && to_self {
            // Rule 9: a peer's status test sees our state.
            // Not counted in `drain_rejected`: a load balancer probing every few seconds would
            // drown the calls and registrations the drain turned away.
            let answer = drain::self_options_answer(self.state, &self.config.drain);
            let extra = retry_after_header(answer.retry_after);
            self.respond_stateless(m, from, answer.code, &extra);
            return;
        }

        let request_uri = m.request_uri().unwrap_or_default();
        let resource_priority: Vec<&str> = m
            .sip
            .list_items(HeaderName::ResourcePriority)
            .map(|(_, item)| item)
            .collect();
        let priority = drain::is_priority(request_uri, &resource_priority, &self.config.drain);
        // Whether a party is registered matters only to a new INVITE while draining (rules 1
        // and 3): online, an INVITE from a phone to the core looks nothing up.
        let (to_registered, from_registered) =
            if self.state == crate::SystemState::Draining && method == Method::Invite {
                let to_aor = m.to().map(|t| t.uri().aor_key()).unwrap_or_default();
                let from_aor = m.from().map(|f| f.uri().aor_key()).unwrap_or_default();
                (
                    self.registrations.is_registered(&aor_of(request_uri))
                        || self.registrations.is_registered(&to_aor)
                        || self.registrations.by_contact(request_uri).is_some(),
                    self.registrations.is_registered(&from_aor)
                        || (realm == Realm::Access && self.registrations.has_remote(from.remote)),
                )
            } else {
                (false, false)
            };
        let facts = RequestFacts {
            method: match method {
                Method::Invite => DrainMethod::Invite,
                Method::Register => DrainMethod::Register,
                Method::Options => DrainMethod::Options,
                _ => DrainMethod::Other,
            },
            in_dialog: false,
            to_registered,
            from_registered,
            priority,
            to_self,
        };
        if let Verdict::Reject(rejection) = drain::admit(self.state, &facts, &self.config.drain) {
            if matches!(method, Method::Invite | Method::Register) {
                self.stats.drain_rejected += 1;
            }
            let extra = retry_after_header(rejection.retry_after);
            self.respond_stateless(m, from, rejection.code, &extra);
            return;
        }

        if method == Method::Invite && self.dialogs.len() >= self.config.limits.max_dialogs {
            self.reject_at_cap(m, from, Cap::Dialogs);
            return;
        }

        if method == Method::Register {
            if realm == Realm::Access {
                self.on_register(m, bytes, from, key);
            } else {
                self.respond_stateless(m, from, 403, &[]);
            }
            return;
        }

        let mut retarget = None;
        let targets = match realm {
            Realm::Access => Targets::Upstreams {
                tried: super::Tried::None,
            },
            Realm::Core => {
                let found = match self.registrations.by_contact(request_uri) {
                    Some(b) => Some((b.flow, b.contact.clone())),
                    None => match self.registrations.lookup(&aor_of(request_uri)) {
                        Lookup::Found(bindings) => {
                            bindings.first().map(|b| (b.flow, b.contact.clone()))
                        }
                        Lookup::Expired => {
                            let code = self.unroutable_code(priority, 480);
                            self.respond_stateless(m, from, code, &[]);
                            return;
                        }
                        Lookup::Unknown => None,
                    },
                };
                match found {
                    Some((flow, contact)) => {
                        retarget = Some(Arc::new(Retarget {
                            request_uri: Some(contact),
                            contacts: None,
                        }));
                        Targets::Fixed(flow)
                    }
                    None => {
                        let code = self.unroutable_code(priority, 404);
                        self.respond_stateless(m, from, code, &[]);
                        return;
                    }
                }
            }
        };
        let record_route = matches!(method, Method::Invite | Method::Subscribe | Method::Refer);
        let forward = Forward {
            retarget,
            method: super::kept_method(method),
            targets,
            client: None,
            provisional_seen: false,
            cancelled: false,
            record_route,
            incoming: from.listener,
            dialog: None,
            priority,
            register: None,
            done: false,
            loop_hash,
        };
        let sid = self.new_server(m, bytes, from, key, Some(forward));
        if method == Method::Invite {
            self.respond_to(sid, m, 100, &[]);
        }
        self.try_next_with(sid, Some(m));
    }

    /// The code for a request from the core that has nowhere to go (rule 8: 380 for priority
    /// calls while draining, when configured).
    fn unroutable_code(&self, priority: bool, otherwise: u16) -> u16 {
        if priority {
            drain::priority_unroutable_code(self.state, &self.config.drain, otherwise)
        } else {
            otherwise
        }
    }

    /// RFC 3261 §16.6 step 8 style: a hash of what identifies the request at this hop, so the
    /// same request coming back with the same request URI is a loop and a spiral is not.
    /// The listener is part of it: the same request entering from the other side is a spiral
    /// through the core (a call between two phones), not a loop.
    pub(super) fn loop_hash(&self, m: &Message<'_>, listener: crate::transport::ListenerId) -> u64 {
        let from_tag = m.from_tag().unwrap_or_default();
        let to_tag = m.to_tag().unwrap_or_default();
        let (mut cseq, mut listener_digits) = ([0; 20], [0; 20]);
        super::fnv(&[
            decimal_bytes(u64::from(listener.0), &mut listener_digits),
            m.request_uri().unwrap_or_default().as_bytes(),
            from_tag.as_bytes(),
            to_tag.as_bytes(),
            m.call_id().unwrap_or_default().as_bytes(),
            decimal_bytes(u64::from(m.cseq().unwrap_or_default()), &mut cseq),
        ]) & 0xffff_ffff
    }

    /// Addressed to the box: our host in the request URI, no user part, no foreign Route.
    fn is_to_self(&self, m: &Message<'_>) -> bool {
        let Some(uri) = m.sip.request_uri() else {
            return false;
        };
        let foreign_route = m.routes().any(|r| !self.is_own(&r.uri()));
        uri.user().is_none() && self.is_own(&uri) && !foreign_route
    }

    fn on_retransmission(&mut self, sid: TxId) {
        let Some(entry) = self.servers.get(&sid) else {
            return;
        };
        if entry.tx.on_retransmission() == ServerAction::ResendLast {
            let to = entry.source;
            let Some(last) = self
                .servers
                .get_mut(&sid)
                .and_then(|e| e.last_response.take())
            else {
                return;
            };
            let resent = self.copy_of(&last);
            if let Some(entry) = self.servers.get_mut(&sid) {
                entry.last_response = Some(last);
            }
            self.stats.retransmissions += 1;
            self.send(to, resent);
        }
    }

    /// A CANCEL, with `invite_key` the key of the INVITE it cancels.
    fn on_cancel(&mut self, m: &Message<'_>, from: Flow, invite_key: super::ServerKeyRef<'_>) {
        let Some(sid) = self.find_server(invite_key).filter(|sid| {
            self.servers
                .get(sid)
                .is_some_and(|e| e.source.remote == from.remote)
        }) else {
            self.respond_stateless(m, from, 481, &[]);
            return;
        };
        self.respond_stateless(m, from, 200, &[]);
        let Some(entry) = self.servers.get_mut(&sid) else {
            return;
        };
        if entry.tx.is_final() {
            return;
        }
        let Some(forward) = entry.forward.as_mut() else {
            return;
        };
        if forward.cancelled {
            // A retransmitted or repeated CANCEL: answered above, and the callee gets one
            // CANCEL per INVITE, not one (and a transaction held) per repeat.
            return;
        }
        forward.cancelled = true;
        match (forward.client, forward.provisional_seen) {
            (Some(cid), true) => self.send_cancel(cid),
            (None, _) => self.respond(sid, 487, &[]),
            // No provisional yet: a CANCEL may not overtake it (RFC 3261 §9.1); it goes out
            // when the provisional comes, or the attempt is abandoned at the upstream timeout.
            (Some(_), false) => {}
        }
    }

    /// Creates a server transaction for a request.
    pub(super) fn new_server(
        &mut self,
        m: &Message<'_>,
        bytes: &[u8],
        from: Flow,
        key: ServerKey,
        forward: Option<Forward>,
    ) -> TxId {
        let id = self.next_id();
        let class = if m.method() == Method::Invite {
            TxClass::Invite
        } else {
            TxClass::NonInvite
        };
        let tx = ServerTransaction::new(class, from.transport.is_reliable(), self.config.timers);
        let request = self.copy_of(bytes);
        self.servers.insert(
            id,
            ServerEntry {
                tx,
                key,
                source: from,
                request,
                last_response: None,
                to_tag: None,
                forward,
            },
        );
        self.index_server(id);
        id
    }

    /// Answers a request the box rejects (or answers) itself, statelessly (SPEC §1a): one
    /// response per request received, no transaction, no retransmission timer, no copy kept.
    /// The To tag is keyed from the request, so a retransmission gets the same one. An answer
    /// larger than the bound plus the request's own Via headers is not sent.
    pub(super) fn respond_stateless(
        &mut self,
        m: &Message<'_>,
        from: Flow,
        code: u16,
        extra: &[(&str, String)],
    ) {
        let tag = self.stateless_tag_for(m);
        let out = self.buffer(msg::response_room(m, extra));
        let bytes = msg::response_into(m, code, Some(&tag), extra, out);
        let vias: usize = m
            .sip
            .headers_of(sip::HeaderName::Via)
            .map(|h| h.value.len() + 7)
            .sum();
        if bytes.len() > self.config.limits.max_own_response + vias {
            self.stats.oversized_answers += 1;
            return;
        }
        self.stats.local_responses += 1;
        self.send(from, bytes);
    }

    /// The To tag of a stateless answer to `m` (the same for its retransmissions and for the
    /// ACK of a non-2xx answer, which shares the INVITE's branch, Call-ID, From tag and CSeq).
    fn stateless_tag_for(&self, m: &Message<'_>) -> String {
        let branch = m.top_via().and_then(|v| v.branch()).unwrap_or_default();
        let cseq = m.cseq().unwrap_or_default().to_string();
        crate::border::stateless_tag(
            &self.signer,
            &[
                branch,
                m.call_id().unwrap_or_default(),
                m.from_tag().unwrap_or_default(),
                &cseq,
            ],
        )
    }

    /// A table is at its cap: 503, counted (in total and under the table), nothing kept.
    pub(super) fn reject_at_cap(&mut self, m: &Message<'_>, from: Flow, cap: Cap) {
        self.stats.cap_rejected += 1;
        *match cap {
            Cap::Transactions => &mut self.stats.cap_rejected_transactions,
            Cap::Dialogs => &mut self.stats.cap_rejected_dialogs,
            Cap::Bindings => &mut self.stats.cap_rejected_bindings,
        } += 1;
        let extra = retry_after_header(Some(self.config.drain.retry_after_secs));
        self.respond_stateless(m, from, 503, &extra);
    }

    /// Sends a response of our own on server transaction `sid`.
    pub(super) fn respond(&mut self, sid: TxId, code: u16, extra: &[(&str, String)]) {
        self.own_to_tag(sid, code);
        let out = match self.servers.get(&sid) {
            Some(entry) => entry.request.len() + 64,
            None => return,
        };
        let out = self.buffer(out);
        let Some(entry) = self.servers.get(&sid) else {
            return;
        };
        let Ok(request) = Message::stored(&entry.request) else {
            return;
        };
        let bytes = msg::response_into(&request, code, entry.to_tag.as_deref(), extra, out);
        self.send_on_server(sid, code, bytes);
    }

    /// Makes the To tag of server transaction `sid` when a response with status `code`
    /// carries one (above 100) and it has none yet.
    fn own_to_tag(&mut self, sid: TxId, code: u16) {
        if code > 100 && self.servers.get(&sid).is_some_and(|e| e.to_tag.is_none()) {
            let tag = self.new_tag();
            if let Some(entry) = self.servers.get_mut(&sid) {
                entry.to_tag = Some(tag);
            }
        }
    }

    /// As [`respond`](Self::respond), with `request` the transaction's request already parsed
    /// (saves parsing the stored copy again).
    fn respond_to(
        &mut self,
        sid: TxId,
        request: &Message<'_>,
        code: u16,
        extra: &[(&str, String)],
    ) {
        self.own_to_tag(sid, code);
        let out = self.buffer(msg::response_room(request, extra));
        let Some(entry) = self.servers.get(&sid) else {
            return;
        };
        let bytes = msg::response_into(request, code, entry.to_tag.as_deref(), extra, out);
        self.send_on_server(sid, code, bytes);
    }

    /// Sends `bytes` (a response with status `code`) on server transaction `sid`.
    pub(super) fn send_on_server(&mut self, sid: TxId, code: u16, bytes: Vec<u8>) {
        let now = self.now;
        let Some(entry) = self.servers.get_mut(&sid) else {
            return;
        };
        if !entry.tx.on_send(code, now) {
            return;
        }
        let terminated = entry.tx.state() == ServerState::Terminated;
        if !terminated {
            // Kept for retransmissions; a terminated transaction is removed below.
            let copy = self.copy_of(&bytes);
            let Some(entry) = self.servers.get_mut(&sid) else {
                return;
            };
            if let Some(earlier) = entry.last_response.replace(copy) {
                self.recycle(earlier);
            }
        }
        let Some(entry) = self.servers.get_mut(&sid) else {
            return;
        };
        let to = entry.source;
        let invite = entry.tx.class() == TxClass::Invite;
        // The session is read (a copy of its id) only where a failure may end it.
        let dialog = (invite && code >= 300)
            .then(|| entry.forward.as_ref().and_then(|f| f.dialog.clone()))
            .flatten();
        if code >= 200 {
            if let Some(f) = entry.forward.as_mut() {
                f.done = true;
            }
            self.timers.cancel(TimerKey::TimerC(sid));
        }
        self.send(to, bytes);
        if invite && code >= 300 {
            if let Some(id) = dialog {
                self.end_dialog_if_early(&id);
            }
        }
        if terminated {
            self.remove_server(sid);
        } else {
            self.sync_server_timers(sid);
        }
    }

    /// A failed or cancelled INVITE ends its session (a confirmed one is left alone: a
    /// re-INVITE failing does not end a call).
    pub(super) fn end_dialog_if_early(&mut self, id: &DialogId) {
        if self
            .dialogs
            .get(id)
            .is_some_and(|d| d.state == DialogState::Early)
        {
            self.end_dialog(id, crate::events::CallEndCause::Failed);
        }
    }

    pub(super) fn end_dialog(&mut self, id: &DialogId, cause: crate::events::CallEndCause) {
        if let Some((dialog, change)) = self.dialogs.remove(id) {
            if let Some(change) = change {
                self.emit_dialog(change);
            }
            self.events.push_back(Event::CallEnded {
                call_id: dialog.id.call_id,
                cause,
            });
        }
    }

    /// The request `m` (received on `from`) as it leaves: received/rport on the sender's Via,
    /// Max-Forwards lowered, our own Route entries removed (and a strict-routing request URI
    /// repaired), `retarget` applied, and `own` lines on top. Every byte not edited is copied
    /// as it came (`sip::Editor`). `None` when the editor refuses the edits (more than it
    /// records: a request with dozens of Contact lines to rewrite).
    pub(super) fn forward_bytes<'m>(
        &self,
        m: &Message<'m>,
        from: Flow,
        retarget: Option<&Retarget>,
        own: &OwnLines<'_>,
        received: &mut String,
        mut out: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let msg = &m.sip;
        let top_via = m.top_via();
        let via_value = top_via.and_then(|via| via_as_received(via, from, received));
        let mut editor = sip::Editor::new(msg);
        if let (Some(via), Some(value)) = (top_via, via_value) {
            editor.replace_item(via.raw(), value);
        }
        let hops = m.max_forwards().map_or(70, |n| n.saturating_sub(1));
        match msg.first_index(HeaderName::MaxForwards) {
            Some(first) => editor.replace_value_u32(first, hops),
            None => editor.append_header("Max-Forwards", "70"),
        };
        // RFC 3261 §16.4: our own entries on top of Route were for us. A strict router before
        // us put our URI in the request URI and the target last in Route. One pass over Route.
        let (mut others, mut last_route) = (false, None);
        let mut visit = |route: &sip::NameAddr<'m>| {
            if !others && self.is_own(&route.uri()) {
                editor.remove_item(route.raw());
            } else {
                others = true;
                last_route = Some(*route);
            }
        };
        // The entries validation kept are read where they are: the iterator over every entry
        // copies each one out, and most requests have their Route entries kept.
        match m.kept_routes() {
            Some(kept) => kept.for_each(&mut visit),
            None => m.routes().for_each(|route| visit(&route)),
        }
        // Asked only when some Route entry is left: with none there is no target to take,
        // whatever the request URI is (most requests, and reading it as ours costs).
        let strict_target = last_route.filter(|_| {
            msg.request_uri()
                .is_some_and(|u| self.is_own(&u) && u.is_loose_route())
        });
        if let Some(target) = strict_target {
            editor.remove_item(target.raw());
        }
        let request_uri = retarget
            .and_then(|r| r.request_uri.as_deref())
            .or(strict_target.map(|t| t.uri().as_str()));
        if let Some(uri) = request_uri {
            editor.set_request_uri(uri);
        }
        if let Some(contacts) = retarget.and_then(|r| r.contacts.as_deref()) {
            for line in msg.headers_of(HeaderName::Contact) {
                editor.remove_header(line.index);
            }
            for contact in contacts {
                editor.append_header("Contact", contact);
            }
        }
        if let Some(via) = own.via {
            insert_first(&mut editor, msg, HeaderName::Via, via);
        }
        for rr in own.record_route.iter().flatten() {
            insert_first(&mut editor, msg, HeaderName::RecordRoute, rr);
        }
        if msg.content_length().is_none() {
            // A stream on the other side needs one.
            editor.set_body(None, msg.body());
        }
        out.reserve(msg.as_bytes().len() + OWN_LINES_ROOM);
        editor.write(&mut out).ok()?;
        Some(out)
    }

    /// Routes a request inside a dialog (or an ACK for a 2xx) to the dialog's other party:
    /// from the dialog table, or from the signed token in our Route entry when the table has no
    /// record (SPEC §1a, §7). Anything else is answered 481 and goes nowhere, whatever its Route
    /// and request URI say. `key` (with the loop hash the caller computed) is `None`
    /// for ACK (forwarded without a transaction).
    fn forward_in_dialog(
        &mut self,
        m: &Message<'_>,
        bytes: &[u8],
        from: Flow,
        realm: Realm,
        key: Option<(ServerKey, u64)>,
    ) {
        // The loop hash comes with the key when the caller computed it.
        let (key, loop_hash) = match key {
            Some((key, hash)) => (Some(key), Some(hash)),
            None => (None, None),
        };
        let method = m.method();
        let call_id = m.call_id().unwrap_or_default();
        let from_tag = m.from_tag().unwrap_or_default();
        let to_tag = m.to_tag().unwrap_or_default();
        let cseq = m.cseq().unwrap_or_default();
        // An ACK (no transaction) neither updates its dialog nor is tracked with it: its id
        // is not copied.
        let keeps_id = key.is_some();
        let found = self
            .dialogs
            .find(call_id, from_tag, to_tag, realm)
            .map(|(d, side)| {
                // Where the request goes: the other party.
                let other = match side {
                    Side::Caller => d.callee.flow,
                    Side::Callee => d.caller.flow,
                };
                (keeps_id.then(|| d.id.clone()), side, other)
            });
        let mut found = found;
        let dest = match &found {
            Some((_, _, other)) => Some(*other),
            None => match self.signed_token(m) {
                Some(token) => {
                    let dest = self.flow_to(
                        opposite(realm),
                        token.party(opposite(realm)).transport,
                        token.party(opposite(realm)).addr,
                    );
                    // A dialog this node has no record of (set up by its twin in the last
                    // moments before it died, or before a restart): learnt from the request,
                    // so it counts and its later requests find it. A BYE ends it anyway.
                    if dest.is_some()
                        && !matches!(method, Method::Ack | Method::Cancel | Method::Bye)
                    {
                        found = self
                            .learn_dialog(m, realm, &token)
                            .map(|(id, side, other)| (Some(id), side, other));
                    }
                    dest
                }
                None => None,
            },
        };
        let Some(dest) = dest else {
            if method == Method::Ack {
                // The ACK of a non-2xx we answered statelessly ends here, quietly; any other
                // has no response to get.
                if to_tag != self.stateless_tag_for(m) {
                    self.stats.unknown_dialog += 1;
                }
                return;
            }
            self.stats.unknown_dialog += 1;
            self.respond_stateless(m, from, 481, &[]);
            return;
        };
        if key.is_some() && !self.transaction_room(true) {
            self.reject_at_cap(m, from, Cap::Transactions);
            return;
        }
        if let Some((Some(id), side, _)) = &found {
            if method != Method::Ack && method != Method::Cancel {
                let side = *side;
                let change = self.dialogs.update(id, self.now, |d| {
                    let party = match side {
                        Side::Caller => &mut d.caller,
                        Side::Callee => &mut d.callee,
                    };
                    party.cseq = party.cseq.max(cseq);
                });
                if let Some(change) = change {
                    self.emit_dialog(change);
                }
            }
        }
        let loop_hash = loop_hash.unwrap_or_else(|| self.loop_hash(m, from.listener));
        match key {
            None => {
                // ACK for a 2xx: end to end, forwarded without a transaction.
                let mut scratch = std::mem::take(&mut self.scratch);
                let mut branch = std::mem::take(&mut scratch.record_route[0]);
                branch.clear();
                self.push_new_branch(&mut branch, loop_hash);
                let written = self.write_own_via(&mut scratch.via, dest.listener, &branch);
                let own = OwnLines {
                    via: Some(&scratch.via),
                    record_route: [None, None],
                };
                let out = self.buffer(m.sip.as_bytes().len() + OWN_LINES_ROOM);
                let bytes = written.and_then(|()| {
                    self.forward_bytes(m, from, None, &own, &mut scratch.received, out)
                });
                scratch.record_route[0] = branch;
                self.scratch = scratch;
                if let Some(bytes) = bytes {
                    self.stats.requests_forwarded += 1;
                    self.send(dest, bytes);
                }
            }
            Some(key) => {
                let forward = Forward {
                    retarget: None,
                    method: super::kept_method(method),
                    targets: Targets::Fixed(dest),
                    client: None,
                    provisional_seen: false,
                    cancelled: false,
                    record_route: false,
                    incoming: from.listener,
                    dialog: found.and_then(|(id, _, _)| id),
                    priority: false,
                    register: None,
                    done: false,
                    loop_hash,
                };
                let sid = self.new_server(m, bytes, from, key, Some(forward));
                self.try_next_with(sid, Some(m));
            }
        }
    }

    /// The token we signed into our Record-Route entry of the dialog an in-dialog request
    /// belongs to, if its Route carries one that verifies for its Call-ID and tags. It names
    /// where each side's party is: an unknown dialog's request goes to the party on the other
    /// side, never to an address the sender wrote.
    fn signed_token(&self, m: &Message<'_>) -> Option<crate::border::RouteToken> {
        let call_id = m.call_id()?;
        let tags: Vec<&str> = [m.from_tag(), m.to_tag()].into_iter().flatten().collect();
        m.routes()
            .map(|n| n.uri())
            .take_while(|u| self.is_own(u))
            .filter_map(|u| u.params().value(crate::border::TOKEN_PARAM))
            .find_map(|value| {
                crate::border::RouteToken::verify(&self.signer, value, call_id, &tags)
            })
    }

    /// Records the confirmed dialog an in-dialog request with a verified token belongs to
    /// (SPEC §7: the standby that rebuilds its call state as the devices come to it), and
    /// returns it with the sender's side and the other party's flow.
    fn learn_dialog(
        &mut self,
        m: &Message<'_>,
        realm: Realm,
        token: &crate::border::RouteToken,
    ) -> Option<(DialogId, Side, Flow)> {
        let (from, to, call_id) = (m.from()?, m.to()?, m.call_id()?);
        let (from_tag, to_tag) = (from.tag()?, to.tag()?);
        let caller_realm = token.caller_realm;
        let side = if realm == caller_realm {
            Side::Caller
        } else {
            Side::Callee
        };
        let flow_of = |this: &Self, r: Realm| {
            let p = token.party(r);
            this.flow_to(r, p.transport, p.addr)
        };
        let (caller_flow, callee_flow) = (
            flow_of(self, caller_realm)?,
            flow_of(self, opposite(caller_realm))?,
        );
        let contact = m.first_contact_uri().map(Text::from);
        let cseq = m.cseq().unwrap_or_default();
        let party = |realm: Realm, flow: Flow, uri: &str, tag: &str, sender: bool| Party {
            realm,
            flow,
            uri: uri.into(),
            tag: Some(tag.into()),
            contact: if sender { contact.clone() } else { None },
            cseq: if sender { cseq } else { 0 },
            route: Vec::new(),
        };
        let (from_uri, to_uri) = (from.uri().as_str(), to.uri().as_str());
        let (caller, callee) = match side {
            Side::Caller => (
                party(caller_realm, caller_flow, from_uri, from_tag, true),
                party(opposite(caller_realm), callee_flow, to_uri, to_tag, false),
            ),
            Side::Callee => (
                party(caller_realm, caller_flow, to_uri, to_tag, false),
                party(
                    opposite(caller_realm),
                    callee_flow,
                    from_uri,
                    from_tag,
                    true,
                ),
            ),
        };
        let id = DialogId {
            call_id: call_id.into(),
            caller_tag: caller.tag.clone().unwrap_or_else(|| "".into()),
            caller_realm,
        };
        if self.dialogs.len() >= self.config.limits.max_dialogs {
            return None;
        }
        let other = match side {
            Side::Caller => callee.flow,
            Side::Callee => caller.flow,
        };
        let dialog = Dialog {
            id: id.clone(),
            state: DialogState::Confirmed,
            caller,
            callee,
            priority: false,
        };
        if let Some(change) = self.dialogs.insert(dialog, self.now) {
            self.emit_dialog(change);
        }
        self.stats.dialogs_learnt += 1;
        Some((id, side, other))
    }

    /// Sends the proxied request of `sid` to its next target, or answers when none is left.
    pub(super) fn try_next(&mut self, sid: TxId) {
        self.try_next_with(sid, None);
    }

    /// As [`try_next`](Self::try_next), with `live` the transaction's request as received
    /// when the caller has it parsed (the first attempt): the stored copy is read only for
    /// later ones.
    pub(super) fn try_next_with(&mut self, sid: TxId, live: Option<&Message<'_>>) {
        let now = self.now;
        let Some(entry) = self.servers.get_mut(&sid) else {
            return;
        };
        let Some(forward) = entry.forward.as_mut() else {
            return;
        };
        if forward.done {
            return;
        }
        if forward.cancelled {
            self.respond(sid, 487, &[]);
            return;
        }
        let priority = forward.priority;
        match &mut forward.targets {
            Targets::Upstreams { tried } => match self.upstreams.select(now, tried.as_slice()) {
                Ok(uid) => {
                    let failover = !tried.as_slice().is_empty();
                    *tried = tried.with(uid);
                    if failover {
                        self.stats.upstream_failovers += 1;
                    }
                    let Some((transport, addr)) =
                        self.upstreams.config(uid).map(|c| (c.transport, c.addr))
                    else {
                        return;
                    };
                    match self.flow_to(Realm::Core, transport, addr) {
                        Some(dest) => self.send_attempt(sid, dest, Some(uid), live),
                        None => self.respond(sid, 503, &[]),
                    }
                }
                Err(none) => {
                    let code = if priority {
                        drain::priority_unroutable_code(self.state, &self.config.drain, 503)
                    } else {
                        503
                    };
                    let extra = retry_after_header(
                        none.retry_after
                            .map(|w| u32::try_from(Self::retry_secs(w)).unwrap_or(u32::MAX)),
                    );
                    self.respond(sid, code, &extra);
                }
            },
            Targets::Fixed(flow) => {
                let dest = *flow;
                if forward.client.is_none() {
                    self.send_attempt(sid, dest, None, live);
                } else {
                    self.respond(sid, 408, &[]);
                }
            }
        }
    }

    /// One attempt: Record-Route, our Via, a client transaction.
    fn send_attempt(
        &mut self,
        sid: TxId,
        dest: Flow,
        upstream: Option<crate::upstreams::UpstreamId>,
        live: Option<&Message<'_>>,
    ) {
        let Some((forward, source)) = self
            .servers
            .get(&sid)
            .and_then(|e| Some((Attempt::of(e.forward.as_ref()?), e.source)))
        else {
            return;
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let [mut outgoing_text, mut incoming_text] = std::mem::take(&mut scratch.record_route);
        let changes_side = forward.record_route
            && (self.realm_of(dest.listener) != self.realm_of(forward.incoming)
                || self
                    .config
                    .listeners
                    .get(usize::from(forward.incoming.0))
                    .map(|l| l.transport)
                    != Some(dest.transport));
        let branch = self.new_branch(forward.loop_hash);
        if self
            .write_own_via(&mut scratch.via, dest.listener, branch.as_str())
            .is_none()
        {
            return;
        }
        let starts_dialog =
            forward.method == "INVITE" && forward.record_route && !forward.in_session;
        let caller_realm = self.realm_of(source.listener).unwrap_or(Realm::Access);
        let out = match live {
            Some(m) => self.buffer(m.sip.as_bytes().len() + OWN_LINES_ROOM),
            None => {
                let room = self.servers.get(&sid).map_or(0, |e| e.request.len());
                self.buffer(room + OWN_LINES_ROOM)
            }
        };
        // The request as received: the caller's, or the transaction's copy read again.
        let forwarded = self.servers.get(&sid).and_then(|entry| {
            let stored;
            let m = match live {
                Some(m) => m,
                None => {
                    stored = Message::stored(&entry.request).ok()?;
                    &stored
                }
            };
            let (mut outgoing, mut incoming) = (None, None);
            if forward.record_route {
                let token = self.route_token(source, dest);
                let signed = match (&token, m.call_id(), m.from_tag()) {
                    (Some(token), Some(call_id), Some(caller_tag)) => {
                        Some((token, call_id, caller_tag))
                    }
                    _ => None,
                };
                // One entry carries the token: every in-dialog request has both entries in
                // its Route, and each byte of it travels in every message of the dialog.
                outgoing = self
                    .write_own_rr_uri(&mut outgoing_text, dest.listener, signed)
                    .map(|()| outgoing_text.as_str());
                if changes_side {
                    incoming = self
                        .write_own_rr_uri(&mut incoming_text, forward.incoming, None)
                        .map(|()| incoming_text.as_str());
                }
            }
            let own = OwnLines {
                via: Some(&scratch.via),
                record_route: [outgoing, incoming],
            };
            let retarget = entry.forward.as_ref().and_then(|f| f.retarget.as_deref());
            let bytes =
                self.forward_bytes(m, source, retarget, &own, &mut scratch.received, out)?;
            let dialog = starts_dialog
                .then(|| {
                    let texts = &mut scratch.dialog_texts;
                    new_dialog(m, caller_realm, source, dest, forward.priority, texts)
                })
                .flatten();
            Some((bytes, dialog))
        });
        scratch.record_route = [outgoing_text, incoming_text];
        self.scratch = scratch;
        let Some((bytes, dialog)) = forwarded else {
            return;
        };
        let cid = self.start_client(
            forward.method.clone(),
            branch,
            bytes,
            dest,
            ClientPurpose::Forward {
                server: sid,
                upstream,
            },
        );
        self.stats.requests_forwarded += 1;
        if let Some(f) = self.servers.get_mut(&sid).and_then(|e| e.forward.as_mut()) {
            f.client = Some(cid);
            f.provisional_seen = false;
        }
        if forward.method == "INVITE" {
            if upstream.is_some() {
                self.timers.set(
                    TimerKey::UpstreamTimeout(cid),
                    self.now + self.config.upstream_timeout,
                );
            }
            if self.timers.get(TimerKey::TimerC(sid)).is_none() {
                self.timers
                    .set(TimerKey::TimerC(sid), self.now + self.config.timers.timer_c);
            }
            if forward.record_route {
                self.track_invite(sid, dest, forward.priority, dialog);
            }
        }
    }

    /// The token for our Record-Route entries of a dialog from `caller` to `callee` (signed
    /// for its Call-ID and caller tag as it is written).
    fn route_token(&self, caller: Flow, callee: Flow) -> Option<crate::border::RouteToken> {
        let caller_realm = self.realm_of(caller.listener)?;
        let party = |f: Flow| crate::border::TokenParty {
            addr: f.remote,
            transport: f.transport,
        };
        let (access, core) = match caller_realm {
            Realm::Access => (party(caller), party(callee)),
            Realm::Core => (party(callee), party(caller)),
        };
        Some(crate::border::RouteToken {
            caller_realm,
            access,
            core,
        })
    }

    /// Starts (or re-points) the session record of a proxied out-of-dialog INVITE: `dialog`
    /// is the record read from the request, for the first attempt.
    fn track_invite(
        &mut self,
        sid: TxId,
        dest: Flow,
        priority: bool,
        dialog: Option<(Dialog, CallerKeys)>,
    ) {
        let tracked = self
            .servers
            .get(&sid)
            .and_then(|e| e.forward.as_ref()?.dialog.as_ref());
        if let Some(id) = tracked {
            let change = self.dialogs.update(id, self.now, |d| d.callee.flow = dest);
            if let Some(change) = change {
                self.emit_dialog(change);
            }
            return;
        }
        let Some((dialog, known)) = dialog else {
            return;
        };
        let id = dialog.id.clone();
        if let Some(change) = self.dialogs.insert_known(dialog, self.now, known) {
            self.emit_dialog(change);
        }
        self.stats.calls_started += 1;
        self.events.push_back(Event::CallStarted {
            call_id: id.call_id.clone(),
            priority,
        });
        if let Some(f) = self.servers.get_mut(&sid).and_then(|e| e.forward.as_mut()) {
            f.dialog = Some(id);
        }
    }
}

/// What one attempt reads of its transaction's [`Forward`]: the few values, not a clone of
/// the whole (its session id and shared edits are read where they are kept).
struct Attempt {
    method: Cow<'static, str>,
    record_route: bool,
    incoming: crate::transport::ListenerId,
    /// Whether the request already belongs to a session (a later attempt of an INVITE).
    in_session: bool,
    priority: bool,
    loop_hash: u64,
}

impl Attempt {
    fn of(forward: &Forward) -> Attempt {
        Attempt {
            method: forward.method.clone(),
            record_route: forward.record_route,
            incoming: forward.incoming,
            in_session: forward.dialog.is_some(),
            priority: forward.priority,
            loop_hash: forward.loop_hash,
        }
    }
}

/// The session record of an out-of-dialog INVITE `m` from `source`, sent on to `dest`: its
/// texts are pieces of one allocation, written through `scratch`; with its caller's index keys.
fn new_dialog(
    m: &Message<'_>,
    caller_realm: Realm,
    source: Flow,
    dest: Flow,
    priority: bool,
    scratch: &mut String,
) -> Option<(Dialog, CallerKeys)> {
    let (Some(from), Some(to), Some(call_id)) = (m.from(), m.to(), m.call_id()) else {
        return None;
    };
    let contact_uri = m.contacts().next().map(|c| c.uri());
    let contact = contact_uri.as_ref().map(|u| u.as_str());
    // Only an access-side party is indexed (by its contact and AoR): its keys come from the
    // URIs parsed here rather than from parsing its texts again in the table.
    let known = match caller_realm {
        Realm::Access => CallerKeys::of(contact_uri.as_ref(), &from.uri()),
        Realm::Core => CallerKeys::default(),
    };
    let [call_id, caller_tag, caller_uri, caller_contact, callee_uri] = Text::joined(
        [
            call_id,
            from.tag()?,
            from.uri().as_str(),
            contact.unwrap_or_default(),
            to.uri().as_str(),
        ],
        scratch,
    );
    let dialog = Dialog {
        id: DialogId {
            call_id,
            caller_tag: caller_tag.clone(),
            caller_realm,
        },
        state: DialogState::Early,
        caller: Party {
            realm: caller_realm,
            flow: source,
            uri: caller_uri,
            tag: Some(caller_tag),
            contact: contact.map(|_| caller_contact),
            cseq: m.cseq().unwrap_or_default(),
            route: m.record_routes().map(|r| r.raw().to_owned()).collect(),
        },
        callee: Party {
            realm: opposite(caller_realm),
            flow: dest,
            uri: callee_uri,
            tag: None,
            contact: None,
            cseq: 0,
            route: Vec::new(),
        },
        priority,
    };
    Some((dialog, known))
}

impl Proxy {
    /// Builds and sends a CANCEL for the INVITE of client transaction `cid`.
    pub(super) fn send_cancel(&mut self, cid: TxId) {
        let Some(entry) = self.clients.get(&cid) else {
            return;
        };
        let (branch, dest) = (entry.branch, entry.dest);
        // The INVITE as it was sent: same request URI, top Via and Route (RFC 3261 §9.1).
        let Ok(invite) = sip::Message::parse(&entry.request) else {
            return;
        };
        let mut bytes = Vec::with_capacity(entry.request.len());
        if sip::build::cancel_for(&invite, &mut bytes).is_err() {
            return;
        }
        self.start_client("CANCEL".into(), branch, bytes, dest, ClientPurpose::Own);
        let give_up = self.now + self.config.timers.t1 * 64;
        self.timers.set(TimerKey::Cancelled(cid), give_up);
    }
}

/// A Retry-After header when there is a value to give (none for 0 / unset).
pub(super) fn retry_after_header(secs: Option<u32>) -> Vec<(&'static str, String)> {
    match secs {
        Some(s) if s > 0 => vec![("Retry-After", s.to_string())],
        _ => Vec::new(),
    }
}

/// Which table's cap turned a request away (`limits.max_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cap {
    /// `max_transactions`.
    Transactions,
    /// `max_dialogs`.
    Dialogs,
    /// `max_bindings`.
    Bindings,
}

#[cfg(test)]
mod tests {
    use super::{
        decimal, decimal_bytes, is_bare_rport, next_semicolon, owned_sent_by_key, push_decimal,
        push_without_bare_rport, sent_by_key,
    };

    #[test]
    fn bare_rport_is_what_trimming_finds() {
        for piece in [
            "",
            "r",
            "rport",
            "RPort",
            "rpor",
            "rports",
            " rport",
            "rport ",
            "\trport\t",
            "\u{b}rport",
            "rport\u{b}",
            "\u{a0}rport",
            "rport\u{a0}",
            "\u{3000}rport",
            "branch=z9hG4bK-1",
            "rport=5060",
            " rport=1",
            "xrport",
            "rport;",
            "\u{e9}rport",
        ] {
            assert_eq!(
                is_bare_rport(piece),
                piece.trim().eq_ignore_ascii_case("rport"),
                "{piece:?}"
            );
        }
    }

    #[test]
    fn next_semicolon_agrees_with_a_byte_loop() {
        let slow =
            |b: &[u8], from: usize| (from..b.len()).find(|&i| b[i] == b';').unwrap_or(b.len());
        let mut samples: Vec<Vec<u8>> = vec![Vec::new()];
        for stop in [b';', b':', 0x3a, 0xbb, 0x3b + 0x80] {
            for len in 0..20 {
                for at in 0..=len {
                    let mut v: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                    if at < len {
                        v[at] = stop;
                        if at + 2 < len {
                            v[at + 2] = b';';
                        }
                    }
                    samples.push(v);
                }
            }
        }
        for s in &samples {
            for from in 0..=s.len() {
                assert_eq!(next_semicolon(s, from), slow(s, from), "{s:?} from {from}");
            }
        }
    }

    #[test]
    fn sent_by_keys_borrowed_or_written_are_the_same() {
        for hop in [
            "SIP/2.0/UDP 10.2.0.50:10001;branch=z9hG4bK-1",
            "SIP/2.0/UDP Host.Example.COM:5060;branch=z9hG4bK-1",
            "SIP/2.0/UDP host.example.com;branch=z9hG4bK-1",
            "SIP/2.0/UDP host:05060;branch=z9hG4bK-1",
            "SIP/2.0/UDP host : 5060;branch=z9hG4bK-1",
            "SIP/2.0/TCP [2001:DB8::1]:5060;branch=z9hG4bK-1",
            "SIP/2.0/TCP [2001:db8::1];branch=z9hG4bK-1",
        ] {
            let via = sip::Via::parse(hop).unwrap();
            assert_eq!(sent_by_key(&via), owned_sent_by_key(&via), "{hop}");
        }
    }

    #[test]
    fn bare_rport_is_dropped_as_splitting_on_semicolons_drops_it() {
        // What the hop was written as before: split on `;`, every piece but the first kept
        // unless it trims to `rport`.
        fn by_pieces(raw: &str, drop_rport: bool) -> String {
            let mut value = String::new();
            for (i, piece) in raw.split(';').enumerate() {
                if i > 0 {
                    if drop_rport && piece.trim().eq_ignore_ascii_case("rport") {
                        continue;
                    }
                    value.push(';');
                }
                value.push_str(piece);
            }
            value
        }
        for raw in [
            "SIP/2.0/UDP 10.2.0.50:10000;branch=z9hG4bK-1;rport",
            "SIP/2.0/UDP 10.2.0.50:10000;rport;branch=z9hG4bK-1",
            "SIP/2.0/UDP h;RPORT ;branch=z9hG4bK-1; rport\t;x",
            "SIP/2.0/UDP h;rport=5060;branch=z9hG4bK-1",
            "SIP/2.0/UDP h;rports;xrport;rport;rport",
            "SIP/2.0/UDP h;\u{a0}rport\u{a0};branch=\u{e9}",
            "SIP/2.0/UDP h",
            "SIP/2.0/UDP h;",
            "SIP/2.0/UDP h;;rport;;",
            ";rport",
            "rport;rport",
            "",
        ] {
            for drop_rport in [false, true] {
                let mut value = String::from("kept ");
                push_without_bare_rport(raw, drop_rport, &mut value);
                assert_eq!(
                    value,
                    format!("kept {}", by_pieces(raw, drop_rport)),
                    "{raw:?}"
                );
            }
        }
    }

    #[test]
    fn decimal_writes_what_to_string_writes() {
        for n in (0..1_200).chain([5060, 10_000, 65_535, u64::from(u32::MAX), u64::MAX]) {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string());
            assert_eq!(decimal_bytes(n, &mut [0; 20]), n.to_string().as_bytes());
            let mut pushed = String::from("x");
            push_decimal(&mut pushed, n);
            assert_eq!(pushed, format!("x{n}"));
        }
    }
}
