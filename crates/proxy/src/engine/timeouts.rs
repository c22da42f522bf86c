//! What each deadline does: transaction timers, the upstream timeout, timer C, probe
//! timeouts, registration expiry and the probe schedule.

use crate::msg::{Draft, Message};
use crate::transaction::{ClientAction, ClientState, ServerAction};
use crate::transport::Realm;
use crate::upstreams::{ProbeResult, UpstreamId};

use super::{ClientPurpose, Proxy, TimerKey};
use std::time::Instant;

impl Proxy {
    pub(super) fn run_timers(&mut self) {
        while let Some(key) = self.pop_due() {
            self.on_timer(key);
        }
        if !self.standby {
            let memory = self.config.expired_aor_memory;
            for change in self.registrations.expire(self.now, memory) {
                self.emit_binding(change);
            }
            while let Some(id) = self.dialogs.pop_idle(self.now) {
                self.stats.dialogs_idle_forgotten += 1;
                self.end_dialog(&id, crate::events::CallEndCause::Idle);
            }
            // With shards, shard 0 probes for the box and the others learn what it found.
            if self.shard == 0 {
                for uid in self.upstreams.due_probes(self.now) {
                    self.send_probe(uid);
                }
            }
        }
    }

    /// The lazy transaction timers due now, and only those (a message is being handled).
    pub(super) fn run_lazy_timers(&mut self) {
        while let Some(key) = self.lazy.pop_due(self.now) {
            self.on_timer(key);
        }
    }

    /// The earliest deadline due now of either table: they fire in deadline order.
    fn pop_due(&mut self) -> Option<TimerKey> {
        let now = self.now;
        let due = |at: Option<Instant>| at.filter(|at| *at <= now);
        match (
            due(self.timers.next_deadline()),
            due(self.lazy.next_deadline()),
        ) {
            (Some(urgent), Some(lazy)) if lazy < urgent => self.lazy.pop_due(now),
            (Some(_), _) => self.timers.pop_due(now),
            (None, Some(_)) => self.lazy.pop_due(now),
            (None, None) => None,
        }
    }

    fn on_timer(&mut self, key: TimerKey) {
        let now = self.now;
        match key {
            TimerKey::Server(id) => {
                // One letter at a time: the next one due goes back into the table, so letters
                // of different transactions fire in deadline order.
                let Some(entry) = self.servers.get_mut(&id) else {
                    return;
                };
                let Some((timer, _)) = entry.tx.timers().next() else {
                    return;
                };
                match entry.tx.on_timer(timer, now) {
                    ServerAction::ResendLast => {
                        let to = entry.source;
                        let last = entry.last_response.take();
                        let resent = last.as_deref().map(|last| self.copy_of(last));
                        if let Some(entry) = self.servers.get_mut(&id) {
                            entry.last_response = last;
                        }
                        self.sync_server_timers(id);
                        if let Some(last) = resent {
                            self.stats.retransmissions += 1;
                            self.send(to, last);
                        }
                    }
                    ServerAction::TimedOut | ServerAction::Terminate => self.remove_server(id),
                    ServerAction::Nothing => self.sync_server_timers(id),
                }
            }
            TimerKey::Client(id) => {
                let Some(entry) = self.clients.get_mut(&id) else {
                    return;
                };
                let Some((timer, _)) = entry.tx.timers().next() else {
                    return;
                };
                let action = entry.tx.on_timer(timer, now);
                let (purpose, dest) = (entry.purpose, entry.dest);
                match action {
                    ClientAction::Retransmit => {
                        let request = std::mem::take(&mut entry.request);
                        let resent = self.copy_of(&request);
                        if let Some(entry) = self.clients.get_mut(&id) {
                            entry.request = request;
                        }
                        let request = resent;
                        self.sync_client_timers(id);
                        self.stats.retransmissions += 1;
                        self.send(dest, request);
                    }
                    ClientAction::TimedOut => {
                        match purpose {
                            ClientPurpose::Forward { server, upstream } => {
                                self.forward_failed(id, server, upstream)
                            }
                            ClientPurpose::Probe(uid) => self.probe_done(uid, ProbeResult::Timeout),
                            ClientPurpose::Own => {
                                let (aor, method) = self
                                    .clients
                                    .get(&id)
                                    .map(|e| {
                                        let aor = Message::stored(&e.request)
                                            .ok()
                                            .and_then(|r| r.to().map(|t| t.uri().aor_key()))
                                            .unwrap_or_default();
                                        (aor, e.method.clone())
                                    })
                                    .unwrap_or_default();
                                self.own_request_done(method.into_owned(), aor, None);
                            }
                        }
                        self.remove_client(id);
                    }
                    ClientAction::Terminate => self.remove_client(id),
                    _ => self.sync_client_timers(id),
                }
            }
            TimerKey::UpstreamTimeout(cid) => {
                let Some(entry) = self.clients.get(&cid) else {
                    return;
                };
                if entry.tx.state() != ClientState::Calling {
                    return;
                }
                if let ClientPurpose::Forward { server, upstream } = entry.purpose {
                    // SPEC §3: no provisional in time, the next upstream gets the call. The
                    // abandoned attempt cannot be CANCELled before a provisional; it is dropped.
                    self.forward_failed(cid, server, upstream);
                }
                self.remove_client(cid);
            }
            TimerKey::TimerC(sid) => {
                let Some(forward) = self.servers.get(&sid).and_then(|e| e.forward.clone()) else {
                    return;
                };
                if forward.done {
                    return;
                }
                if let (Some(cid), true) = (forward.client, forward.provisional_seen) {
                    self.send_cancel(cid);
                }
                self.respond(sid, 408, &[]);
            }
            TimerKey::Cancelled(cid) => {
                // RFC 3261 §9.1: no final answer 64*T1 after the CANCEL; the INVITE is over.
                if self.clients.contains_key(&cid) {
                    self.stats.cancelled_unanswered += 1;
                    self.remove_client(cid);
                }
            }
            TimerKey::ProbeTimeout(cid) => {
                if let Some(ClientPurpose::Probe(uid)) = self.clients.get(&cid).map(|e| e.purpose) {
                    self.remove_client(cid);
                    self.probe_done(uid, ProbeResult::Timeout);
                }
            }
        }
    }

    /// An OPTIONS "server status test" to an upstream.
    fn send_probe(&mut self, uid: UpstreamId) {
        let Some(cfg) = self.upstreams.config(uid).cloned() else {
            return;
        };
        let Some(dest) = self.flow_to(Realm::Core, cfg.transport, cfg.addr) else {
            return;
        };
        let local = self
            .listener_addr(dest.listener)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let tag = self.new_tag();
        // A Call-ID of this shard, so the answer comes back here (one try in `count` fits).
        let call_id = loop {
            let id = format!("probe-{}@{}", self.ids.token(), self.node_tag);
            if self.shards.owns(self.shard, &id) {
                break id;
            }
        };
        let mut draft = Draft::new(format!("OPTIONS sip:{} SIP/2.0", cfg.addr));
        draft.push("Max-Forwards", "70");
        draft.push(
            "From",
            format!("<sip:{}@{local}>;tag={tag}", self.config.node_name),
        );
        draft.push("To", format!("<sip:{}>", cfg.addr));
        draft.push("Call-ID", call_id);
        draft.push("CSeq", "1 OPTIONS");
        let Some(cid) = self.send_own_request(draft, "OPTIONS", dest, ClientPurpose::Probe(uid))
        else {
            return;
        };
        self.stats.probes_sent += 1;
        self.timers.set(
            TimerKey::ProbeTimeout(cid),
            self.now + self.config.probe_timeout,
        );
    }
}
