//! Responses: matching to client transactions, relaying upstream along the Via path, and the
//! upstream failover rules of SPEC §3 (503 with or without Retry-After).

use crate::dialogs::{DialogState, Text};
use crate::events::{CallEndCause, Event};
use crate::msg::{self, Message};
use crate::transaction::ClientAction;
use crate::upstreams::{ProbeResult, UpstreamChange, UpstreamId};

use super::{ClientPurpose, Proxy, Targets, TimerKey, TxId};
use crate::border::capped_wait;

impl Proxy {
    pub(super) fn on_response(&mut self, m: &Message<'_>, from: crate::transport::Flow) {
        if self.standby {
            // Its transactions went to the twin with the addresses (`set_standby`).
            self.stats.standby_dropped += 1;
            return;
        }
        let Some(via) = m.top_via() else {
            return;
        };
        if !self.is_own_via(via) {
            self.stats.stray_responses += 1;
            return;
        }
        let branch = via.branch().unwrap_or_default();
        let method = super::kept_method(m.method());
        let code = m.code().unwrap_or(500);
        let Some(cid) = self.find_client(super::ClientKeyRef(branch.as_bytes(), &method)) else {
            self.relay_stateless(m, from);
            return;
        };
        let now = self.now;
        let Some(entry) = self.clients.get_mut(&cid) else {
            return;
        };
        // Only the address (and, on a stream, the connection) the request went to may answer
        // it (SPEC §1a): a response with our branch from anywhere else is forged.
        let same_flow = entry.dest.flow.is_none() || entry.dest.flow == from.flow;
        if entry.dest.remote != from.remote || entry.dest.listener != from.listener || !same_flow {
            self.stats.spoofed += 1;
            return;
        }
        let action = entry.tx.on_response(code, now);
        let purpose = entry.purpose;
        let terminated = entry.tx.state() == crate::transaction::ClientState::Terminated;
        self.sync_client_timers(cid);
        if matches!(action, ClientAction::PassUpAndAck | ClientAction::AckAgain) {
            self.send_hop_ack(cid, m);
        }
        match purpose {
            ClientPurpose::Probe(uid) if code >= 200 => {
                let result = match code {
                    200..=299 => ProbeResult::Ok(code),
                    503 => {
                        let wait = m
                            .retry_after()
                            .filter(|s| *s > 0)
                            .map(|s| capped_wait(s, self.config.limits.max_retry_after));
                        if wait.is_some() {
                            self.shut_upstream_association(from);
                        }
                        ProbeResult::Unavailable(wait)
                    }
                    _ => ProbeResult::OtherResponse(code),
                };
                self.remove_client(cid);
                self.probe_done(uid, result);
                return;
            }
            ClientPurpose::Own
                if code >= 200
                    && matches!(action, ClientAction::PassUp | ClientAction::PassUpAndAck) =>
            {
                let aor = m.to().map(|t| t.uri().aor_key()).unwrap_or_default();
                self.own_request_done(method.into_owned(), aor, Some(code));
            }
            ClientPurpose::Probe(_) | ClientPurpose::Own => {}
            ClientPurpose::Forward { server, upstream } => {
                if matches!(action, ClientAction::PassUp | ClientAction::PassUpAndAck) {
                    self.on_forward_response(cid, server, upstream, m, code, from);
                }
            }
        }
        if terminated {
            self.remove_client(cid);
        }
    }

    /// Counts and reports how a request the proxy sent on its own ended: its final `code`, or
    /// `None` when none came in time. Nothing is retried: a challenge (401/407) means the box
    /// had no credentials the core accepts, and only the endpoint has new ones.
    pub(super) fn own_request_done(&mut self, method: String, aor: String, code: Option<u16>) {
        let Some(code) = code else {
            self.stats.own_timed_out += 1;
            self.events
                .push_back(Event::OwnRequestTimedOut { method, aor });
            return;
        };
        let class = match code {
            200..=299 => &mut self.stats.own_final_2xx,
            300..=399 => &mut self.stats.own_final_3xx,
            400..=499 => &mut self.stats.own_final_4xx,
            500..=599 => &mut self.stats.own_final_5xx,
            _ => &mut self.stats.own_final_6xx,
        };
        *class += 1;
        if code == 401 || code == 407 {
            self.stats.own_challenged += 1;
        }
        self.events
            .push_back(Event::OwnRequestAnswered { method, aor, code });
    }

    /// An SCTP upstream answered 503 with Retry-After: its association is shut down (SPEC §3,
    /// the patents' client "deletes the server from its list of SCTP associations"). No new
    /// one is opened before the wait is over, because nothing new goes to an upstream out of
    /// rotation and its probes wait for the Retry-After. In-dialog requests of calls already
    /// established through it still go (a BYE must reach it), on an association the shell
    /// opens for them.
    fn shut_upstream_association(&mut self, from: crate::transport::Flow) {
        if from.transport != crate::transport::Transport::Sctp {
            return;
        }
        if let Some(flow) = from.flow {
            self.stats.upstream_associations_shut += 1;
            self.closes.push_back(crate::transport::Close {
                listener: from.listener,
                transport: from.transport,
                flow,
                remote: from.remote,
            });
        }
    }

    /// Reports what a probe found.
    pub(super) fn probe_done(&mut self, uid: UpstreamId, result: ProbeResult) {
        let changes = self.upstreams.probe_result(uid, result, self.now);
        self.emit_upstream_changes(changes);
    }

    pub(super) fn emit_upstream_changes(&mut self, changes: Vec<UpstreamChange>) {
        for change in changes {
            if self.shards.count() > 1 {
                if let Some(note) = change.note() {
                    self.events.push_back(Event::Upstream(note));
                }
            }
            let event = match change {
                UpstreamChange::Out { id, retry_after } => Event::UpstreamOut {
                    name: self.upstream_name(id),
                    retry_after_secs: retry_after.map(|d| d.as_secs()),
                },
                UpstreamChange::Back(id) => Event::UpstreamBack {
                    name: self.upstream_name(id),
                },
                UpstreamChange::Late { id, overdue } => Event::UpstreamLate {
                    name: self.upstream_name(id),
                    overdue_secs: overdue.as_secs(),
                },
            };
            self.events.push_back(event);
        }
    }

    fn upstream_name(&self, id: UpstreamId) -> String {
        self.upstreams
            .config(id)
            .map(|c| c.name.clone())
            .unwrap_or_default()
    }

    /// ACK for a non-2xx final, on the same hop as the INVITE.
    fn send_hop_ack(&mut self, cid: TxId, response: &Message<'_>) {
        let Some(entry) = self.clients.get(&cid) else {
            return;
        };
        let dest = entry.dest;
        // The INVITE as it was sent: same request URI, top Via and Route (RFC 3261 §17.1.1.3).
        let Ok(invite) = sip::Message::parse(&entry.request) else {
            return;
        };
        let mut out = Vec::with_capacity(entry.request.len());
        if sip::build::ack_for_non_2xx(&invite, &response.sip, &mut out).is_ok() {
            self.send(dest, out);
        }
    }

    fn on_forward_response(
        &mut self,
        cid: TxId,
        sid: TxId,
        upstream: Option<UpstreamId>,
        m: &Message<'_>,
        code: u16,
        from: crate::transport::Flow,
    ) {
        let Some(forward) = self.servers.get(&sid).and_then(|e| e.forward.clone()) else {
            // The server side is gone (e.g. a second 2xx from a fork): pass a 2xx on anyway.
            if (200..300).contains(&code) {
                self.relay_stateless(m, from);
            }
            return;
        };
        let current = forward.client == Some(cid);
        if code < 200 {
            if current {
                self.timers.cancel(TimerKey::UpstreamTimeout(cid));
                if let Some(f) = self.servers.get_mut(&sid).and_then(|e| e.forward.as_mut()) {
                    f.provisional_seen = true;
                }
                if forward.cancelled {
                    self.send_cancel(cid);
                }
            }
            if code == 100 {
                return;
            }
            if let (Some(id), Some(tag)) = (&forward.dialog, m.to_tag()) {
                if let Some(change) = self.dialogs.update(id, self.now, |d| {
                    // A copy only for a new tag (not at every provisional of the same one).
                    if d.state == DialogState::Early && d.callee.tag.as_deref() != Some(tag) {
                        d.callee.tag = Some(tag.into());
                    }
                }) {
                    self.emit_dialog(change);
                }
            }
            self.relay_message(sid, m, code);
            return;
        }
        if code < 300 {
            let draft = forward
                .register
                .clone()
                .map(|ctx| self.cache_from_2xx(&ctx, m));
            if let (true, Some(id)) = (forward.method == "INVITE", &forward.dialog) {
                self.confirm_dialog(id, m);
            }
            if forward.method == "BYE" {
                if let Some(id) = &forward.dialog {
                    self.end_dialog(id, CallEndCause::Bye);
                }
            }
            match draft {
                Some(draft) => self.relay(sid, draft, code),
                None => self.relay_message(sid, m, code),
            }
            return;
        }
        let failover = code == 503
            && current
            && !forward.cancelled
            && matches!(forward.targets, Targets::Upstreams { .. });
        if let (true, Some(uid)) = (failover, upstream) {
            match m.retry_after().filter(|s| *s > 0) {
                Some(secs) => {
                    let wait = capped_wait(secs, self.config.limits.max_retry_after);
                    let change = self.upstreams.take_out(uid, wait, self.now);
                    self.emit_upstream_changes(change.into_iter().collect());
                    self.shut_upstream_association(from);
                }
                None => self.upstreams.attempt_failed(uid),
            }
            if let Some(f) = self.servers.get_mut(&sid).and_then(|e| e.forward.as_mut()) {
                f.client = None;
            }
            self.try_next(sid);
            return;
        }
        if forward.method == "BYE" {
            if let Some(id) = &forward.dialog {
                self.end_dialog(id, CallEndCause::Bye);
            }
        }
        self.relay_message(sid, m, code);
    }

    /// Relays a response on server transaction `sid` as received minus its top Via
    /// (RFC 3261 §16.7).
    fn relay_message(&mut self, sid: TxId, m: &Message<'_>, code: u16) {
        let out = self.buffer(m.sip.as_bytes().len() + 24);
        if let Some(out) = without_top_via(m, out) {
            self.count_relayed(code);
            self.send_on_server(sid, code, out);
        }
    }

    fn relay(&mut self, sid: TxId, mut draft: msg::Draft, code: u16) {
        draft.pop_first_of("Via");
        self.count_relayed(code);
        self.send_on_server(sid, code, draft.to_bytes());
    }

    /// Counts a relayed response, and under its class (the operator's answers by class).
    fn count_relayed(&mut self, code: u16) {
        self.stats.responses_relayed += 1;
        let class = match code {
            100..=199 => &mut self.stats.relayed_1xx,
            200..=299 => &mut self.stats.relayed_2xx,
            300..=399 => &mut self.stats.relayed_3xx,
            400..=499 => &mut self.stats.relayed_4xx,
            500..=599 => &mut self.stats.relayed_5xx,
            _ => &mut self.stats.relayed_6xx,
        };
        *class += 1;
    }

    /// A 2xx to an INVITE confirms the session: the callee's tag, contact and route set.
    fn confirm_dialog(&mut self, id: &crate::dialogs::DialogId, m: &Message<'_>) {
        let (tag, contact) = (m.to_tag(), m.first_contact_uri());
        // Record-Route entries above our own are the callee side's proxies; nearest first.
        let mut callee_route: Vec<String> = m
            .record_routes()
            .take_while(|r| !self.is_own(&r.uri()))
            .map(|r| r.raw().to_owned())
            .collect();
        callee_route.reverse();
        // Read in the update's own lookup of the session, not in one of its own.
        let mut was_early = false;
        if let Some(change) = self.dialogs.update(id, self.now, |d| {
            was_early = d.state == DialogState::Early;
            d.state = DialogState::Confirmed;
            // A copy only of what changed: the tag usually came with a provisional.
            if let Some(tag) = tag.filter(|t| d.callee.tag.as_deref() != Some(*t)) {
                d.callee.tag = Some(tag.into());
            }
            if d.callee.contact.as_deref() != contact {
                d.callee.contact = contact.map(Text::from);
            }
            d.callee.route = callee_route;
        }) {
            self.emit_dialog(change);
        }
        if was_early {
            self.events.push_back(Event::CallAnswered {
                call_id: id.call_id.clone(),
            });
        }
    }

    /// A 2xx to an INVITE with no transaction left (retransmission or fork): to the caller.
    fn relay_stateless(&mut self, m: &Message<'_>, from: crate::transport::Flow) {
        let code = m.code().unwrap_or_default();
        if !(200..300).contains(&code) || m.method() != sip::Method::Invite {
            self.stats.stray_responses += 1;
            return;
        }
        let call_id = m.call_id().unwrap_or_default();
        let from_tag = m.from_tag().unwrap_or_default();
        let to_tag = m.to_tag().unwrap_or_default();
        let realm = self
            .realm_of(from.listener)
            .unwrap_or(crate::transport::Realm::Core);
        let Some((id, dest, early)) = self
            .dialogs
            .find(call_id, from_tag, to_tag, super::requests::opposite(realm))
            .filter(|(d, _)| d.callee.flow.remote == from.remote)
            .map(|(d, _)| (d.id.clone(), d.caller.flow, d.state == DialogState::Early))
        else {
            self.stats.stray_responses += 1;
            return;
        };
        if early {
            // The 2xx of an INVITE our twin forwarded just before it handed over (switchover
            // or death): its transaction went with it, the dialog it replicated is ours.
            self.confirm_dialog(&id, m);
            self.after_change();
        }
        let out = self.buffer(m.sip.as_bytes().len() + 24);
        if let Some(out) = without_top_via(m, out) {
            self.count_relayed(code);
            self.send(dest, out);
        }
    }

    /// A forwarded request got no final response (timer B or F), or its attempt was
    /// abandoned: move on to the next upstream or answer 408.
    pub(super) fn forward_failed(&mut self, cid: TxId, sid: TxId, upstream: Option<UpstreamId>) {
        let Some(forward) = self.servers.get(&sid).and_then(|e| e.forward.clone()) else {
            return;
        };
        if forward.client != Some(cid) {
            return;
        }
        if let Some(f) = self.servers.get_mut(&sid).and_then(|e| e.forward.as_mut()) {
            f.client = None;
        }
        if let (Targets::Upstreams { .. }, Some(uid)) = (&forward.targets, upstream) {
            self.upstreams.attempt_failed(uid);
            self.try_next(sid);
            return;
        }
        if forward.method == "BYE" {
            if let Some(id) = &forward.dialog {
                self.end_dialog(id, CallEndCause::Bye);
            }
        }
        let code = if forward.cancelled { 487 } else { 408 };
        self.respond(sid, code, &[]);
    }
}

/// A response as it is relayed: its top Via (ours) removed, every other byte copied as it came
/// rather than rebuilt; Content-Length added when it had none (a stream on the other side
/// needs it). `None` when it has no Via to remove.
fn without_top_via(m: &Message<'_>, mut out: Vec<u8>) -> Option<Vec<u8>> {
    let mut editor = sip::Editor::new(&m.sip);
    editor.pop_first(sip::HeaderName::Via)?;
    if m.sip.content_length().is_none() {
        editor.set_body(None, m.sip.body());
    }
    editor.write(&mut out).ok()?;
    Some(out)
}
