//! The end of a drain (SPEC §2 rule 11): when the guard expires, every remaining session is
//! ended by the proxy itself and every remaining binding is de-registered at the core.

use std::time::Instant;

use crate::dialogs::{Dialog, DialogState, Party};
use crate::events::{CallEndCause, Event};
use crate::msg::Draft;
use crate::registrations::RemovalCause;

use super::register::deregistration;
use super::{ClientPurpose, Proxy};

impl Proxy {
    /// Ends everything at once (the guard expired): early sessions get a CANCEL downstream
    /// and a 503 upstream, confirmed ones a BYE to both parties, each with a `Reason` header
    /// carrying `reason`; every binding is de-registered at the core (REGISTER, Expires: 0)
    /// and both tables are emptied. Counts are zero afterwards.
    pub fn terminate_all(&mut self, now: Instant, reason: &str) {
        self.advance_clock(now);
        let text: String = reason
            .chars()
            .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
            .collect();
        let reason_header = format!("SIP;cause=503;text=\"{text}\"");

        // Early sessions: the pending INVITEs.
        let pending: Vec<(u64, Option<crate::dialogs::DialogId>)> = self
            .servers
            .iter()
            .filter(|(_, e)| !e.tx.is_final())
            .filter_map(|(id, e)| {
                e.forward
                    .as_ref()
                    .filter(|f| f.method == "INVITE" && f.dialog.is_some())
                    .map(|f| (*id, f.dialog.clone()))
            })
            .collect();
        for (sid, dialog) in pending {
            if let Some(id) = &dialog {
                self.end_dialog(id, CallEndCause::Guard);
                self.stats.calls_terminated_by_guard += 1;
            }
            let client = self.servers.get_mut(&sid).and_then(|e| {
                e.forward.as_mut().map(|f| {
                    f.cancelled = true;
                    (f.client, f.provisional_seen)
                })
            });
            match client {
                Some((Some(cid), true)) => self.send_cancel(cid),
                Some((Some(cid), false)) => self.remove_client(cid),
                _ => {}
            }
            self.respond(sid, 503, &[("Reason", reason_header.clone())]);
        }

        // Confirmed sessions: BYE both ways.
        for dialog in self.dialogs.drain_all() {
            if dialog.state == DialogState::Confirmed {
                let to_callee = bye(&dialog, &dialog.caller, &dialog.callee, &reason_header);
                let to_caller = bye(&dialog, &dialog.callee, &dialog.caller, &reason_header);
                for (draft, party) in [(to_callee, &dialog.callee), (to_caller, &dialog.caller)] {
                    if let Some(draft) = draft {
                        let _ = self.send_own_request(draft, "BYE", party.flow, ClientPurpose::Own);
                    }
                }
            }
            self.stats.calls_terminated_by_guard += 1;
            self.emit_dialog(crate::dialogs::DialogChange::Remove(dialog.id.clone()));
            self.events.push_back(Event::CallEnded {
                call_id: dialog.id.call_id.clone(),
                cause: CallEndCause::Guard,
            });
        }

        // Sessions of the other shards: each ends its own.
        self.peer_dialogs.clear();
        // Bindings: tell the core, then forget. With shards, each binding is de-registered by
        // the shard its REGISTER's Call-ID hashes to (the core's answer comes back there) and
        // dropped silently by the others, whose copy that shard's record would remove.
        let bindings: Vec<_> = self.registrations.iter().cloned().collect();
        for b in bindings {
            if !self.registrations.owns(&b) {
                let _ = self.registrations.remove(
                    &b.aor,
                    &b.contact,
                    RemovalCause::Replicated,
                    self.now,
                );
                continue;
            }
            let tag = self.new_tag();
            if let Some(draft) = deregistration(
                &b.registrar_uri,
                &format!("<{}>;tag={tag}", b.to_uri),
                &format!("<{}>", b.to_uri),
                &b.call_id,
                b.cseq,
                std::slice::from_ref(&b.contact),
                &b.credentials,
            ) {
                self.send_to_registrar(draft);
            }
            if let Some(change) =
                self.registrations
                    .remove(&b.aor, &b.contact, RemovalCause::Guard, self.now)
            {
                self.emit_binding(change);
            }
        }
        self.after_change();
    }
}

/// A BYE from party `from` to party `to` of `dialog`, as `from` would send it.
fn bye(dialog: &Dialog, from: &Party, to: &Party, reason: &str) -> Option<Draft> {
    let target = to.contact.as_deref().unwrap_or(&to.uri);
    let mut draft = Draft::new(format!("BYE {target} SIP/2.0"));
    for route in &to.route {
        draft.push("Route", route.clone());
    }
    draft.push("Max-Forwards", "70");
    draft.push(
        "From",
        format!("<{}>;tag={}", from.uri, from.tag.as_deref()?),
    );
    draft.push("To", format!("<{}>;tag={}", to.uri, to.tag.as_deref()?));
    draft.push("Call-ID", &*dialog.id.call_id);
    draft.push("CSeq", format!("{} BYE", from.cseq.saturating_add(1)));
    draft.push("Reason", reason.to_owned());
    Some(draft)
}
