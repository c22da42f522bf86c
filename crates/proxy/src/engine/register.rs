//! The REGISTER path: forwarding to the core registrar, caching bindings from its 2xx, and the
//! drain's REGISTER rules (4: lowered expiry for endpoints with a call, 5: reject, drop and
//! de-register the others, 6: per contact).
//!
//! A de-registration must pass an authenticating registrar, and the box has no credentials of
//! its own: rule 5 sends the endpoint's own REGISTER on with its expiries at 0, and each
//! binding keeps the credentials of the REGISTER the core accepted for the guard (rule 11).

use std::sync::Arc;
use std::time::Duration;

use system_state::SystemState;

use crate::dialogs::{same_contact, Endpoint};
use crate::drain::{self, ContactFacts, ContactPlan, RegisterPlan};
use crate::msg::{Draft, Message};
use crate::registrations::{Binding, RemovalCause};
use crate::transport::{Flow, Realm};
use sip::NameAddr;

use super::requests::{retry_after_header, OwnLines};
use super::{ClientPurpose, Forward, Proxy, RegisterCtx, Retarget, ServerKey, Targets};

/// What a registrar grants when nobody says (RFC 3261 §10.2.1.1 leaves it to the registrar;
/// this is what the proxy assumes it asked for).
const DEFAULT_EXPIRES: u32 = 3600;

/// `params` with `expires` set to `secs`.
fn with_expires(params: &str, secs: u32) -> String {
    let mut out: Vec<String> = params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter(|p| {
            !p.split('=')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("expires")
        })
        .map(str::to_owned)
        .collect();
    out.push(format!("expires={secs}"));
    format!(";{}", out.join(";"))
}

impl Proxy {
    /// Whether the endpoint behind `contact` (of AoR `aor`, reached at `from`) is in a live
    /// session. With a single contact the AoR and the source address also count
    /// ([`Endpoint::is`]). The drain rules and `show registrations` both ask this, so an
    /// operator sees the calls that keep a binding.
    ///
    /// With shards, the calls of the other shards count too (held in `peer_dialogs` from
    /// their records): a phone's REGISTER and its calls hash to shards of their own.
    fn endpoint_has_call(&self, contact: &str, aor: &str, from: Flow, single: bool) -> bool {
        let endpoint = Endpoint {
            contact,
            aor,
            remote: from.remote,
            single,
        };
        self.dialogs.endpoint_has_call(&endpoint) || self.peer_dialogs.endpoint_has_call(&endpoint)
    }

    /// How many live sessions the endpoint behind `contact` is in (see
    /// [`endpoint_has_call`](Self::endpoint_has_call)).
    pub(super) fn endpoint_calls(
        &self,
        contact: &str,
        aor: &str,
        from: Flow,
        single: bool,
    ) -> usize {
        let endpoint = Endpoint {
            contact,
            aor,
            remote: from.remote,
            single,
        };
        self.dialogs.endpoint_calls(&endpoint) + self.peer_dialogs.endpoint_calls(&endpoint)
    }

    pub(super) fn on_register(
        &mut self,
        m: &Message<'_>,
        bytes: &[u8],
        from: Flow,
        key: ServerKey,
    ) {
        let Some(to) = m.to() else {
            return;
        };
        let aor = to.uri().aor_key();
        if self.registrations.len() >= self.config.limits.max_bindings
            && !self.registrations.is_registered(&aor)
        {
            self.reject_at_cap(m, from, super::requests::Cap::Bindings);
            return;
        }
        let contacts: Vec<NameAddr<'_>> = m.contacts().collect();
        let wildcard = m.has_wildcard_contact();
        let header_expires = m.expires();
        let single = contacts.len() == 1;
        let mut planned = Vec::new();
        if !wildcard {
            for c in &contacts {
                let asked = contact_expires(c)
                    .or(header_expires)
                    .unwrap_or(DEFAULT_EXPIRES);
                let facts = ContactFacts {
                    asked_expires: asked,
                    // Only a drain asks (a scan of the sessions): outside one, nobody pays it.
                    has_active_call: self.state == SystemState::Draining
                        && self.endpoint_has_call(c.uri().as_str(), &aor, from, single),
                };
                let plan = drain::contact_plan(self.state, facts, &self.config.drain);
                planned.push((*c, asked, plan));
            }
        }
        let plans: Vec<ContactPlan> = planned.iter().map(|(_, _, p)| *p).collect();
        match drain::register_plan(&plans, &self.config.drain) {
            RegisterPlan::RejectAndDeregister(rejection) => {
                // Rule 5: answer here, forget the bindings, tell the core on their behalf.
                self.stats.drain_rejected += 1;
                let extra = retry_after_header(rejection.retry_after);
                self.respond_stateless(m, from, rejection.code, &extra);
                for (c, _, _) in &planned {
                    if let Some(change) = self.registrations.remove(
                        &aor,
                        c.uri().as_str(),
                        RemovalCause::Drain,
                        self.now,
                    ) {
                        self.emit_binding(change);
                    }
                }
                // The endpoint's own REGISTER goes on with every expiry at 0: its
                // Authorization covers the method and the request URI, not the expiries, so an
                // authenticating registrar accepts it as it would the endpoint's own removal.
                let contacts: Vec<NameAddr<'_>> = planned.iter().map(|(c, _, _)| *c).collect();
                if let Some(draft) = self.deregistration_of(m, from, &contacts) {
                    self.send_to_registrar(draft);
                }
            }
            RegisterPlan::Forward => {
                let changed = plans.iter().any(|p| *p != ContactPlan::AsAsked);
                let mut retarget = None;
                if changed {
                    let rewritten: Vec<String> = planned
                        .iter()
                        .map(|(c, _, plan)| {
                            let params = c.params().as_str();
                            match plan {
                                ContactPlan::AsAsked => format!("<{}>{params}", c.uri()),
                                ContactPlan::Lower(secs) => {
                                    format!("<{}>{}", c.uri(), with_expires(params, *secs))
                                }
                                ContactPlan::Remove => {
                                    format!("<{}>{}", c.uri(), with_expires(params, 0))
                                }
                            }
                        })
                        .collect();
                    retarget = Some(Arc::new(Retarget {
                        request_uri: None,
                        contacts: Some(rewritten),
                    }));
                }
                for (c, _, plan) in &planned {
                    if *plan == ContactPlan::Remove {
                        if let Some(change) = self.registrations.remove(
                            &aor,
                            c.uri().as_str(),
                            RemovalCause::Drain,
                            self.now,
                        ) {
                            self.emit_binding(change);
                        }
                    }
                }
                let ctx = RegisterCtx {
                    aor,
                    to_uri: to.uri().as_str().to_owned(),
                    registrar_uri: m.request_uri().unwrap_or_default().to_owned(),
                    call_id: m.call_id().unwrap_or_default().to_owned(),
                    cseq: m.cseq().unwrap_or_default(),
                    credentials: credentials_of(m),
                    flow: from,
                    contacts: planned
                        .iter()
                        .map(|(c, asked, plan)| {
                            let (asked, lowered) = match plan {
                                ContactPlan::AsAsked => (*asked, None),
                                ContactPlan::Lower(secs) => (*asked, Some(*secs)),
                                ContactPlan::Remove => (0, Some(0)),
                            };
                            (c.uri().as_str().to_owned(), asked, lowered)
                        })
                        .collect(),
                    wildcard,
                };
                let forward = Forward {
                    retarget,
                    method: "REGISTER".into(),
                    targets: Targets::Upstreams {
                        tried: super::Tried::None,
                    },
                    client: None,
                    provisional_seen: false,
                    cancelled: false,
                    record_route: false,
                    incoming: from.listener,
                    dialog: None,
                    priority: false,
                    register: Some(Arc::new(ctx)),
                    done: false,
                    loop_hash: self.loop_hash(m, from.listener),
                };
                let sid = self.new_server(m, bytes, from, key, Some(forward));
                self.try_next(sid);
            }
        }
    }

    /// The core accepted a REGISTER: cache what it granted (lowered where the drain says) and
    /// return the response to relay, with lowered expiries written in.
    pub(super) fn cache_from_2xx(&mut self, ctx: &RegisterCtx, m: &Message<'_>) -> Draft {
        let now = self.now;
        let granted_contacts: Vec<NameAddr<'_>> = m.contacts().collect();
        let header_expires = m.expires();
        if ctx.wildcard {
            for change in self
                .registrations
                .remove_aor(&ctx.aor, RemovalCause::Deregistered, now)
            {
                self.emit_binding(change);
            }
        }
        for (uri, asked, lowered) in &ctx.contacts {
            let granted = granted_contacts
                .iter()
                .find(|c| same_contact(c.uri().as_str(), uri))
                .map(|c| contact_expires(c).or(header_expires).unwrap_or(*asked))
                .unwrap_or(0);
            let granted = lowered.map_or(granted, |l| granted.min(l));
            if granted == 0 {
                let cause = if lowered == &Some(0) {
                    RemovalCause::Drain
                } else {
                    RemovalCause::Deregistered
                };
                if let Some(change) = self.registrations.remove(&ctx.aor, uri, cause, now) {
                    self.emit_binding(change);
                }
                continue;
            }
            let binding = Binding {
                aor: ctx.aor.clone(),
                contact: uri.clone(),
                expires_at: now + Duration::from_secs(u64::from(granted)),
                flow: ctx.flow,
                call_id: ctx.call_id.clone(),
                cseq: ctx.cseq,
                to_uri: ctx.to_uri.clone(),
                registrar_uri: ctx.registrar_uri.clone(),
                credentials: ctx.credentials.clone(),
            };
            let change = self.registrations.upsert(binding, now);
            self.emit_binding(change);
        }
        let mut draft = m.to_draft();
        let lowering: Vec<(&String, u32)> = ctx
            .contacts
            .iter()
            .filter_map(|(uri, _, lowered)| lowered.filter(|l| *l > 0).map(|l| (uri, l)))
            .collect();
        if !lowering.is_empty() {
            // Rule 4: the endpoint is told the lowered expiry, so it re-registers elsewhere
            // soon after its call.
            let rewritten: Vec<String> = granted_contacts
                .iter()
                .map(|c| {
                    let given = contact_expires(c)
                        .or(header_expires)
                        .unwrap_or(DEFAULT_EXPIRES);
                    let params = c.params().as_str();
                    match lowering
                        .iter()
                        .find(|(u, _)| same_contact(u, c.uri().as_str()))
                    {
                        Some((_, l)) => {
                            format!("<{}>{}", c.uri(), with_expires(params, given.min(*l)))
                        }
                        None => format!("<{}>{params}", c.uri()),
                    }
                })
                .collect();
            draft.remove("Contact");
            for value in rewritten {
                draft.push("Contact", value);
            }
        }
        draft
    }

    /// The endpoint's REGISTER `m` as a de-registration of `contacts` (rule 5): its own
    /// request URI, From, To, Call-ID, CSeq and credentials, every Contact at expires 0 (its
    /// other parameters kept, so a registrar matching `+sip.instance` finds the binding), and
    /// `Expires: 0`. The proxy sends it as its own request, so the endpoint's Vias go.
    fn deregistration_of(
        &self,
        m: &Message<'_>,
        from: Flow,
        contacts: &[NameAddr<'_>],
    ) -> Option<Draft> {
        if contacts.is_empty() || m.call_id().is_none() {
            return None;
        }
        let retarget = Retarget {
            request_uri: None,
            contacts: Some(
                contacts
                    .iter()
                    .map(|c| format!("<{}>{}", c.uri(), with_expires(c.params().as_str(), 0)))
                    .collect(),
            ),
        };
        let bytes = self.forward_bytes(
            m,
            from,
            Some(&retarget),
            &OwnLines::default(),
            &mut String::new(),
            Vec::new(),
        )?;
        let mut draft = Message::stored(&bytes).ok()?.to_draft();
        draft.remove("Via");
        draft.set("Max-Forwards", "70");
        draft.set("Expires", "0");
        Some(draft)
    }

    /// Sends a REGISTER the proxy makes on an endpoint's behalf to an upstream registrar.
    pub(super) fn send_to_registrar(&mut self, draft: Draft) {
        let Ok(uid) = self.upstreams.select(self.now, &[]) else {
            return;
        };
        let Some(cfg) = self.upstreams.config(uid).cloned() else {
            return;
        };
        let Some(dest) = self.flow_to(Realm::Core, cfg.transport, cfg.addr) else {
            return;
        };
        let _ = self.send_own_request(draft, "REGISTER", dest, ClientPurpose::Own);
    }
}

/// The `expires` parameter of a Contact, when it has a readable one.
fn contact_expires(c: &NameAddr<'_>) -> Option<u32> {
    c.expires().ok().flatten()
}

/// The most bytes of credentials a binding keeps. A real Authorization line is a few hundred
/// bytes; the cache holds up to `max_bindings` of them and must stay bounded whatever a phone
/// sends. Over it the binding keeps none, and the guard's de-registration goes without.
const MAX_CREDENTIAL_BYTES: usize = 4096;

/// The Authorization and Proxy-Authorization lines of a request, as sent (none when they are
/// larger than [`MAX_CREDENTIAL_BYTES`] together).
fn credentials_of(m: &Message<'_>) -> Vec<(String, String)> {
    let lines: Vec<(String, String)> = m
        .sip
        .headers()
        .filter(|h| {
            matches!(
                h.known,
                Some(sip::HeaderName::Authorization | sip::HeaderName::ProxyAuthorization)
            )
        })
        .map(|h| (h.name.to_owned(), h.value.to_owned()))
        .collect();
    let size: usize = lines.iter().map(|(n, v)| n.len() + v.len()).sum();
    if size > MAX_CREDENTIAL_BYTES {
        return Vec::new();
    }
    lines
}

/// A REGISTER removing `contacts` (Expires: 0), in the endpoint's own Call-ID and a higher
/// CSeq so the registrar matches the bindings (RFC 3261 §10.3 step 7), carrying the
/// endpoint's last `credentials`: a registrar that lets a nonce be reused accepts them, since
/// the digest covers the method and the request URI (both the endpoint's), not the CSeq or
/// the expiries. One that does not answers 401/407, which is counted and logged.
pub(super) fn deregistration(
    registrar_uri: &str,
    from: &str,
    to: &str,
    call_id: &str,
    cseq: u32,
    contacts: &[String],
    credentials: &[(String, String)],
) -> Option<Draft> {
    if registrar_uri.is_empty() || call_id.is_empty() || contacts.is_empty() {
        return None;
    }
    let mut draft = Draft::new(format!("REGISTER {registrar_uri} SIP/2.0"));
    draft.push("Max-Forwards", "70");
    draft.push("From", from.to_owned());
    draft.push("To", to.to_owned());
    draft.push("Call-ID", call_id.to_owned());
    draft.push("CSeq", format!("{} REGISTER", cseq.saturating_add(1)));
    for c in contacts {
        draft.push("Contact", format!("<{c}>;expires=0"));
    }
    draft.push("Expires", "0");
    for (name, value) in credentials {
        draft.push(name, value.clone());
    }
    Some(draft)
}
