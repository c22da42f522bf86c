//! Requests: matching to server transactions, admission (the drain), routing and forwarding.
//!
//! Decides: what is a retransmission, a CANCEL, an ACK to absorb or to pass on; whether a new
//! request is admitted in the current system state; where it goes (upstream list for
//! out-of-dialog requests from access, the registration cache for those from the core, the
//! dialog's other party for in-dialog ones); and how it is edited on the way (Max-Forwards,
//! our Route entries removed, Record-Route, received/rport, our Via).

use crate::dialogs::{Dialog, DialogId, DialogState, Party, Side};
use crate::drain::{self, DrainMethod, RequestFacts, Verdict};
use crate::events::Event;
use crate::msg::{self, aor_of, Draft, Message, NameAddr, Uri};
use crate::registrations::Lookup;
use crate::transaction::{ServerAction, ServerState, ServerTransaction, TxClass};
use crate::transport::{Flow, Realm};
use std::sync::Arc;

use super::{ClientPurpose, Forward, Proxy, ServerEntry, ServerKey, Targets, TimerKey, TxId};

/// RFC 3261's branch prefix.
const MAGIC_COOKIE: &str = "z9hG4bK";

fn starts_with_cookie(branch: &str) -> bool {
    branch
        .get(..MAGIC_COOKIE.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(MAGIC_COOKIE))
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
        let method = m.method().to_ascii_uppercase();
        let Some(via) = m.top_via() else {
            return;
        };
        let call_id = m.call_id().unwrap_or_default().to_owned();
        let cseq = m.cseq().map(|(n, _)| n).unwrap_or_default();
        // RFC 3261 §17.2.3: only a branch with the magic cookie and something after it names a
        // transaction; a bare cookie (RFC 4475 `badbranch`) or none is matched the RFC 2543
        // way, by what the request itself says.
        let branch = match via.branch() {
            Some(b) if b.len() > MAGIC_COOKIE.len() && starts_with_cookie(b) => b.to_owned(),
            _ => format!(
                "rfc2543-{call_id}-{cseq}-{}-{}",
                m.from().and_then(|f| f.tag()).unwrap_or_default(),
                m.request_uri().unwrap_or_default()
            ),
        };
        let key = ServerKey {
            branch,
            sent_by: via.sent_by().to_ascii_lowercase(),
            method: if method == "ACK" {
                "INVITE".to_owned()
            } else {
                method.clone()
            },
        };

        if let Some(&sid) = self.server_index.get(&key) {
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

        if method == "ACK" {
            if let Some(&sid) = self.server_index.get(&key) {
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

        if let Some(&sid) = self.server_index.get(&key) {
            self.on_retransmission(sid);
            return;
        }

        if method == "CANCEL" {
            self.on_cancel(m, from, key);
            return;
        }

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

        if m.max_forwards() == Some(0) && !(method == "OPTIONS" && self.is_to_self(m)) {
            self.stats.too_many_hops += 1;
            self.respond_stateless(m, from, 483, &[]);
            return;
        }

        let loop_hash = self.loop_hash(m, from.listener);
        let looped = m.vias().iter().any(|v| {
            self.is_own_via(v)
                && v.branch().is_some_and(|b| {
                    b.strip_prefix(self.branch_prefix.as_str())
                        .and_then(|rest| rest.split('.').next())
                        .is_some_and(|h| h == format!("{loop_hash:x}"))
                })
        });
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

        let in_dialog = m.to().and_then(|t| t.tag()).is_some();
        if in_dialog {
            self.forward_in_dialog(m, bytes, from, realm, Some(key));
            return;
        }

        if !self.transaction_room(false) {
            self.reject_at_cap(m, from);
            return;
        }

        let to_self = self.is_to_self(m);
        if method == "OPTIONS" && to_self {
            // Rule 9: a peer's status test sees our state.
            let answer = drain::self_options_answer(self.state, &self.config.drain);
            if answer.code != 200 {
                self.stats.drain_rejected += 1;
            }
            let extra = retry_after_header(answer.retry_after);
            self.respond_stateless(m, from, answer.code, &extra);
            return;
        }

        let request_uri = m.request_uri().unwrap_or_default();
        let resource_priority = m.list("resource-priority");
        let priority = drain::is_priority(request_uri, &resource_priority, &self.config.drain);
        let lookup_aor = aor_of(request_uri);
        let to_aor = m.to().map(|t| aor_of(t.uri)).unwrap_or_default();
        let from_aor = m.from().map(|f| aor_of(f.uri)).unwrap_or_default();
        let to_registered = self.registrations.is_registered(&lookup_aor)
            || self.registrations.is_registered(&to_aor)
            || self.registrations.by_contact(request_uri).is_some();
        let from_registered = self.registrations.is_registered(&from_aor)
            || (realm == Realm::Access && self.registrations.has_remote(from.remote));
        let facts = RequestFacts {
            method: match method.as_str() {
                "INVITE" => DrainMethod::Invite,
                "REGISTER" => DrainMethod::Register,
                "OPTIONS" => DrainMethod::Options,
                _ => DrainMethod::Other,
            },
            in_dialog: false,
            to_registered,
            from_registered,
            priority,
            to_self,
        };
        if let Verdict::Reject(rejection) = drain::admit(self.state, &facts, &self.config.drain) {
            self.stats.drain_rejected += 1;
            let extra = retry_after_header(rejection.retry_after);
            self.respond_stateless(m, from, rejection.code, &extra);
            return;
        }

        if method == "INVITE" && self.dialogs.len() >= self.config.limits.max_dialogs {
            self.reject_at_cap(m, from);
            return;
        }

        if method == "REGISTER" {
            if realm == Realm::Access {
                self.on_register(m, bytes, from, key);
            } else {
                self.respond_stateless(m, from, 403, &[]);
            }
            return;
        }

        let mut base = self.edit_for_forward(m, from);
        let targets = match realm {
            Realm::Access => Targets::Upstreams { tried: Vec::new() },
            Realm::Core => {
                let found = match self.registrations.by_contact(request_uri) {
                    Some(b) => Some((b.flow, b.contact.clone())),
                    None => match self.registrations.lookup(&lookup_aor) {
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
                        base.set_request_uri(&contact);
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
        let record_route = matches!(method.as_str(), "INVITE" | "SUBSCRIBE" | "REFER");
        let dialog_ids = match (m.call_id(), m.from().and_then(|f| f.tag())) {
            (Some(call_id), Some(tag)) if record_route => {
                Some((call_id.to_owned(), tag.to_owned()))
            }
            _ => None,
        };
        let forward = Forward {
            dialog_ids,
            base: Arc::new(base),
            method: method.clone(),
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
        if method == "INVITE" {
            self.respond_to(sid, m, 100, &[]);
        }
        self.try_next(sid);
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
        let from_tag = m.from().and_then(|f| f.tag()).unwrap_or_default();
        let to_tag = m.to().and_then(|t| t.tag()).unwrap_or_default();
        let cseq = m.cseq().map(|(n, _)| n.to_string()).unwrap_or_default();
        let listener = listener.0.to_string();
        super::fnv(&[
            &listener,
            m.request_uri().unwrap_or_default(),
            from_tag,
            to_tag,
            m.call_id().unwrap_or_default(),
            &cseq,
        ]) & 0xffff_ffff
    }

    /// Addressed to the box: our host in the request URI, no user part, no foreign Route.
    fn is_to_self(&self, m: &Message<'_>) -> bool {
        let uri = m.request_uri().unwrap_or_default();
        let no_user = Uri::parse(uri).is_some_and(|u| u.user.is_none());
        let foreign_route = m
            .list("route")
            .iter()
            .filter_map(|r| NameAddr::parse(r))
            .any(|r| !self.is_own_uri(r.uri));
        no_user && self.is_own_uri(uri) && !foreign_route
    }

    fn on_retransmission(&mut self, sid: TxId) {
        let Some(entry) = self.servers.get(&sid) else {
            return;
        };
        if entry.tx.on_retransmission() == ServerAction::ResendLast {
            if let Some(last) = entry.last_response.clone() {
                let to = entry.source;
                self.stats.retransmissions += 1;
                self.send(to, last);
            }
        }
    }

    fn on_cancel(&mut self, m: &Message<'_>, from: Flow, key: ServerKey) {
        let invite_key = ServerKey {
            method: "INVITE".to_owned(),
            ..key.clone()
        };
        let Some(&sid) = self.server_index.get(&invite_key).filter(|sid| {
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
        let class = if m.method().eq_ignore_ascii_case("INVITE") {
            TxClass::Invite
        } else {
            TxClass::NonInvite
        };
        let tx = ServerTransaction::new(class, from.transport.is_reliable(), self.config.timers);
        let to_tag = self.new_tag();
        self.server_index.insert(key.clone(), id);
        self.servers.insert(
            id,
            ServerEntry {
                tx,
                key,
                source: from,
                request: bytes.to_vec(),
                last_response: None,
                to_tag,
                forward,
            },
        );
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
        let bytes = msg::response_to(m, code, Some(&tag), extra);
        let vias: usize = m
            .headers
            .iter()
            .filter(|h| msg::name_is(h.name, "via"))
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
        let cseq = m.cseq().map(|(n, _)| n).unwrap_or_default().to_string();
        crate::border::stateless_tag(
            &self.signer,
            &[
                branch,
                m.call_id().unwrap_or_default(),
                m.from().and_then(|f| f.tag()).unwrap_or_default(),
                &cseq,
            ],
        )
    }

    /// A table is at its cap: 503, counted, nothing kept.
    pub(super) fn reject_at_cap(&mut self, m: &Message<'_>, from: Flow) {
        self.stats.cap_rejected += 1;
        let extra = retry_after_header(Some(self.config.drain.retry_after_secs));
        self.respond_stateless(m, from, 503, &extra);
    }

    /// Sends a response of our own on server transaction `sid`.
    pub(super) fn respond(&mut self, sid: TxId, code: u16, extra: &[(&str, String)]) {
        let Some(entry) = self.servers.get(&sid) else {
            return;
        };
        let Ok(request) = Message::parse(&entry.request) else {
            return;
        };
        let bytes = msg::response_to(&request, code, Some(&entry.to_tag), extra);
        self.send_on_server(sid, code, bytes);
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
        let Some(entry) = self.servers.get(&sid) else {
            return;
        };
        let bytes = msg::response_to(request, code, Some(&entry.to_tag), extra);
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
        entry.last_response = Some(bytes.clone());
        let to = entry.source;
        let invite = entry.tx.class() == TxClass::Invite;
        let terminated = entry.tx.state() == ServerState::Terminated;
        let dialog = entry.forward.as_ref().and_then(|f| f.dialog.clone());
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
            self.emit_dialog(change);
            self.events.push_back(Event::CallEnded {
                call_id: dialog.id.call_id,
                cause,
            });
        }
    }

    /// The request as it leaves: received/rport on the sender's Via, Max-Forwards lowered,
    /// our own Route entries removed (and a strict-routing request URI repaired).
    pub(super) fn edit_for_forward(&self, m: &Message<'_>, from: Flow) -> Draft {
        let mut draft = m.to_draft();
        if let (Some(top), Some(via)) = (draft.pop_first_of("Via"), m.top_via()) {
            let mut value = top.clone();
            let ip = from.remote.ip().to_string();
            if via.host.trim_matches(['[', ']']) != ip {
                value.push_str(&format!(";received={ip}"));
            }
            if msg::param(via.params, "rport").is_some() {
                let without: Vec<&str> = value
                    .split(';')
                    .filter(|p| !p.trim().eq_ignore_ascii_case("rport"))
                    .collect();
                value = format!("{};rport={}", without.join(";"), from.remote.port());
            }
            draft.insert_first("Via", value);
        }
        let hops = m.max_forwards().map_or(70, |n| n.saturating_sub(1));
        draft.set("Max-Forwards", hops.to_string());
        while let Some(first) = draft
            .get("Route")
            .and_then(|r| msg::split_list(r).first().map(|s| s.to_string()))
        {
            let own = NameAddr::parse(&first).is_some_and(|n| self.is_own_uri(n.uri));
            if !own {
                break;
            }
            draft.pop_first_of("Route");
        }
        // A strict router before us put our URI in the request URI and the target last in
        // Route (RFC 3261 §16.4).
        let request_uri = m.request_uri().unwrap_or_default();
        if self.is_own_uri(request_uri)
            && Uri::parse(request_uri).is_some_and(|u| msg::param(u.params, "lr").is_some())
        {
            let mut routes: Vec<String> = draft
                .headers
                .iter()
                .filter(|(n, _)| msg::name_is(n, "route"))
                .flat_map(|(_, v)| {
                    msg::split_list(v)
                        .into_iter()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect();
            if let Some(last) = routes.pop() {
                if let Some(target) = NameAddr::parse(&last) {
                    let target = target.uri.to_owned();
                    draft.set_request_uri(&target);
                    draft.set_list("Route", &routes);
                }
            }
        }
        draft
    }

    /// Routes a request inside a dialog (or an ACK for a 2xx) to the dialog's other party:
    /// from the dialog table, or from the signed token in our Route entry when the table has no
    /// record (SPEC §1a, §7). Anything else is answered 481 and goes nowhere, whatever its Route
    /// and request URI say. `key` is `None` for ACK (forwarded without a transaction).
    fn forward_in_dialog(
        &mut self,
        m: &Message<'_>,
        bytes: &[u8],
        from: Flow,
        realm: Realm,
        key: Option<ServerKey>,
    ) {
        let method = m.method().to_ascii_uppercase();
        let call_id = m.call_id().unwrap_or_default();
        let from_tag = m.from().and_then(|f| f.tag()).unwrap_or_default();
        let to_tag = m.to().and_then(|t| t.tag()).unwrap_or_default();
        let cseq = m.cseq().map(|(n, _)| n).unwrap_or_default();
        let found = self
            .dialogs
            .find(call_id, from_tag, to_tag, realm)
            .map(|(d, side)| {
                // Where the request goes: the other party.
                let other = match side {
                    Side::Caller => d.callee.flow,
                    Side::Callee => d.caller.flow,
                };
                (d.id.clone(), side, other)
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
                    if dest.is_some() && !matches!(method.as_str(), "ACK" | "CANCEL" | "BYE") {
                        found = self.learn_dialog(m, realm, &token);
                    }
                    dest
                }
                None => None,
            },
        };
        let Some(dest) = dest else {
            if method == "ACK" {
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
            self.reject_at_cap(m, from);
            return;
        }
        if let Some((id, side, _)) = &found {
            if method != "ACK" && method != "CANCEL" {
                let side = *side;
                let change = self.dialogs.update(id, |d| {
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
        let draft = self.edit_for_forward(m, from);
        let loop_hash = self.loop_hash(m, from.listener);
        match key {
            None => {
                // ACK for a 2xx: end to end, forwarded without a transaction.
                let branch = self.new_branch(loop_hash);
                let Some(via) = self.own_via(dest.listener, &branch) else {
                    return;
                };
                let mut draft = draft;
                draft.insert_first("Via", via);
                self.stats.requests_forwarded += 1;
                self.send(dest, draft.to_bytes());
            }
            Some(key) => {
                let forward = Forward {
                    base: Arc::new(draft),
                    method,
                    targets: Targets::Fixed(dest),
                    client: None,
                    provisional_seen: false,
                    cancelled: false,
                    record_route: false,
                    dialog_ids: None,
                    incoming: from.listener,
                    dialog: found.map(|(id, _, _)| id),
                    priority: false,
                    register: None,
                    done: false,
                    loop_hash,
                };
                let sid = self.new_server(m, bytes, from, key, Some(forward));
                self.try_next(sid);
            }
        }
    }

    /// The token we signed into our Record-Route entry of the dialog an in-dialog request
    /// belongs to, if its Route carries one that verifies for its Call-ID and tags. It names
    /// where each side's party is: an unknown dialog's request goes to the party on the other
    /// side, never to an address the sender wrote.
    fn signed_token(&self, m: &Message<'_>) -> Option<crate::border::RouteToken> {
        let call_id = m.call_id()?;
        let tags: Vec<&str> = [m.from().and_then(|f| f.tag()), m.to().and_then(|t| t.tag())]
            .into_iter()
            .flatten()
            .collect();
        m.list("route")
            .iter()
            .filter_map(|r| NameAddr::parse(r))
            .take_while(|n| self.is_own_uri(n.uri))
            .filter_map(|n| Uri::parse(n.uri))
            .filter_map(|u| msg::param(u.params, crate::border::TOKEN_PARAM))
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
        let contact = m
            .list("contact")
            .first()
            .and_then(|c| NameAddr::parse(c))
            .map(|c| c.uri.to_owned());
        let cseq = m.cseq().map(|(n, _)| n).unwrap_or_default();
        let party = |realm: Realm, flow: Flow, uri: &str, tag: &str, sender: bool| Party {
            realm,
            flow,
            uri: uri.to_owned(),
            tag: Some(tag.to_owned()),
            contact: if sender { contact.clone() } else { None },
            cseq: if sender { cseq } else { 0 },
            route: Vec::new(),
        };
        let (caller, callee) = match side {
            Side::Caller => (
                party(caller_realm, caller_flow, from.uri, from_tag, true),
                party(opposite(caller_realm), callee_flow, to.uri, to_tag, false),
            ),
            Side::Callee => (
                party(caller_realm, caller_flow, to.uri, to_tag, false),
                party(
                    opposite(caller_realm),
                    callee_flow,
                    from.uri,
                    from_tag,
                    true,
                ),
            ),
        };
        let id = DialogId {
            call_id: call_id.to_owned(),
            caller_tag: caller.tag.clone().unwrap_or_default(),
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
            Targets::Upstreams { tried } => match self.upstreams.select(now, tried) {
                Ok(uid) => {
                    tried.push(uid);
                    if tried.len() > 1 {
                        self.stats.upstream_failovers += 1;
                    }
                    let Some(cfg) = self.upstreams.config(uid).cloned() else {
                        return;
                    };
                    match self.flow_to(Realm::Core, cfg.transport, cfg.addr) {
                        Some(dest) => self.send_attempt(sid, dest, Some(uid)),
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
                    self.send_attempt(sid, dest, None);
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
    ) {
        let Some(forward) = self.servers.get(&sid).and_then(|e| e.forward.clone()) else {
            return;
        };
        let Some(source) = self.servers.get(&sid).map(|e| e.source) else {
            return;
        };
        let mut draft = Draft::clone(&forward.base);
        if forward.record_route {
            let token = forward
                .dialog_ids
                .as_ref()
                .and_then(|(call_id, caller_tag)| {
                    self.route_token(source, dest, call_id, caller_tag)
                });
            // One entry carries the token: every in-dialog request has both entries in its
            // Route, and each byte of it travels in every message of the dialog.
            let outgoing = self.own_rr_uri(dest.listener, token.as_deref());
            let incoming = self.own_rr_uri(forward.incoming, None);
            let changes_side = self.realm_of(dest.listener) != self.realm_of(forward.incoming)
                || self
                    .config
                    .listeners
                    .get(usize::from(forward.incoming.0))
                    .map(|l| l.transport)
                    != Some(dest.transport);
            if changes_side {
                if let Some(incoming) = incoming {
                    draft.insert_first("Record-Route", incoming);
                }
            }
            if let Some(outgoing) = outgoing {
                draft.insert_first("Record-Route", outgoing);
            }
        }
        let branch = self.new_branch(forward.loop_hash);
        let Some(via) = self.own_via(dest.listener, &branch) else {
            return;
        };
        draft.insert_first("Via", via);
        let bytes = draft.to_bytes();
        let cid = self.start_client(
            &forward.method,
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
                self.track_invite(sid, source, dest, &forward);
            }
        }
    }

    /// The signed token for our Record-Route entries of a dialog from `caller` to `callee`.
    fn route_token(
        &self,
        caller: Flow,
        callee: Flow,
        call_id: &str,
        caller_tag: &str,
    ) -> Option<String> {
        let caller_realm = self.realm_of(caller.listener)?;
        let party = |f: Flow| crate::border::TokenParty {
            addr: f.remote,
            transport: f.transport,
        };
        let (access, core) = match caller_realm {
            Realm::Access => (party(caller), party(callee)),
            Realm::Core => (party(callee), party(caller)),
        };
        let token = crate::border::RouteToken {
            caller_realm,
            access,
            core,
        };
        Some(token.sign(&self.signer, call_id, caller_tag))
    }

    /// Starts (or re-points) the session record of a proxied out-of-dialog INVITE.
    fn track_invite(&mut self, sid: TxId, source: Flow, dest: Flow, forward: &Forward) {
        if let Some(id) = &forward.dialog {
            let change = self.dialogs.update(id, |d| d.callee.flow = dest);
            if let Some(change) = change {
                self.emit_dialog(change);
            }
            return;
        }
        let caller_realm = self.realm_of(source.listener).unwrap_or(Realm::Access);
        // Read from the stored request in place: the session record takes owned copies.
        let Some(dialog) = self
            .servers
            .get(&sid)
            .and_then(|e| Message::parse(&e.request).ok())
            .and_then(|m| new_dialog(&m, caller_realm, source, dest, forward.priority))
        else {
            return;
        };
        let id = dialog.id.clone();
        if let Some(change) = self.dialogs.insert(dialog, self.now) {
            self.emit_dialog(change);
        }
        self.stats.calls_started += 1;
        self.events.push_back(Event::CallStarted {
            call_id: id.call_id.clone(),
            priority: forward.priority,
        });
        if let Some(f) = self.servers.get_mut(&sid).and_then(|e| e.forward.as_mut()) {
            f.dialog = Some(id);
        }
    }
}

/// The session record of an out-of-dialog INVITE `m` from `source`, sent on to `dest`.
fn new_dialog(
    m: &Message<'_>,
    caller_realm: Realm,
    source: Flow,
    dest: Flow,
    priority: bool,
) -> Option<Dialog> {
    let (Some(from), Some(to), Some(call_id)) = (m.from(), m.to(), m.call_id()) else {
        return None;
    };
    let caller_tag = from.tag()?;
    Some(Dialog {
        id: DialogId {
            call_id: call_id.to_owned(),
            caller_tag: caller_tag.to_owned(),
            caller_realm,
        },
        state: DialogState::Early,
        caller: Party {
            realm: caller_realm,
            flow: source,
            uri: from.uri.to_owned(),
            tag: Some(caller_tag.to_owned()),
            contact: m
                .list("contact")
                .first()
                .and_then(|c| NameAddr::parse(c))
                .map(|c| c.uri.to_owned()),
            cseq: m.cseq().map(|(n, _)| n).unwrap_or_default(),
            route: m
                .list("record-route")
                .iter()
                .map(|s| s.to_string())
                .collect(),
        },
        callee: Party {
            realm: opposite(caller_realm),
            flow: dest,
            uri: to.uri.to_owned(),
            tag: None,
            contact: None,
            cseq: 0,
            route: Vec::new(),
        },
        priority,
    })
}

impl Proxy {
    /// Builds and sends a CANCEL for the INVITE of client transaction `cid`.
    pub(super) fn send_cancel(&mut self, cid: TxId) {
        let Some(entry) = self.clients.get(&cid) else {
            return;
        };
        let (branch, dest) = (entry.branch.clone(), entry.dest);
        let Ok(invite) = Message::parse(&entry.request) else {
            return;
        };
        let Some(draft) = hop_request(&invite, "CANCEL", None) else {
            return;
        };
        let bytes = draft.to_bytes();
        self.start_client("CANCEL", branch, bytes, dest, ClientPurpose::Own);
        let give_up = self.now + self.config.timers.t1 * 64;
        self.timers.set(TimerKey::Cancelled(cid), give_up);
    }
}

/// A request that shares the INVITE's hop (CANCEL, or ACK for a non-2xx): same request URI,
/// top Via and Route; To from `to` when given (the response's, with its tag).
pub(super) fn hop_request(invite: &Message<'_>, method: &str, to: Option<&str>) -> Option<Draft> {
    let mut draft = Draft::new(format!("{method} {} SIP/2.0", invite.request_uri()?));
    draft.push("Via", invite.list("via").first()?.to_string());
    for route in invite.list("route") {
        draft.push("Route", route.to_string());
    }
    draft.push("Max-Forwards", "70");
    draft.push("From", invite.header("from")?.to_owned());
    draft.push("To", to.or(invite.header("to"))?.to_owned());
    draft.push("Call-ID", invite.call_id()?.to_owned());
    draft.push("CSeq", format!("{} {method}", invite.cseq()?.0));
    Some(draft)
}

/// A Retry-After header when there is a value to give (none for 0 / unset).
pub(super) fn retry_after_header(secs: Option<u32>) -> Vec<(&'static str, String)> {
    match secs {
        Some(s) if s > 0 => vec![("Retry-After", s.to_string())],
        _ => Vec::new(),
    }
}
