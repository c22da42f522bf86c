//! The drain rules of SPEC §2 as pure decisions over small fact structs.
//!
//! The proxy core gathers the facts (is the request in a dialog, is its target registered, is
//! it a priority call, does the endpoint have a call) and acts on the verdict; these functions
//! decide and nothing else, so every rule can be read (and tested) here in one place.

use system_state::SystemState;

use crate::config::DrainConfig;

/// The method, as far as the drain cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMethod {
    /// INVITE.
    Invite,
    /// REGISTER.
    Register,
    /// OPTIONS.
    Options,
    /// Anything else (SUBSCRIBE, NOTIFY, MESSAGE, ...).
    Other,
}

/// What the drain needs to know about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts {
    /// The method.
    pub method: DrainMethod,
    /// It carries a To tag or is a CANCEL/ACK of a known transaction (rule 2).
    pub in_dialog: bool,
    /// Its target (request URI) is a currently registered endpoint (rule 3).
    pub to_registered: bool,
    /// Its sender is a currently registered endpoint (rule 3).
    pub from_registered: bool,
    /// It has a configured Resource-Priority namespace or an `urn:service:sos` URI (rule 8).
    pub priority: bool,
    /// It is addressed to the appliance itself (rule 9).
    pub to_self: bool,
}

/// A rejection to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The status code.
    pub code: u16,
    /// The Retry-After value, when there is to be a header.
    pub retry_after: Option<u32>,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it as when online.
    Proceed,
    /// Answer it with this and do nothing else.
    Reject(Rejection),
}

fn unavailable(config: &DrainConfig) -> Rejection {
    Rejection {
        code: 503,
        retry_after: (config.retry_after_secs > 0).then_some(config.retry_after_secs),
    }
}

/// Admission of a request in `state` (rules 1, 2, 3, 7, 8, 9 and "while offline").
pub fn admit(state: SystemState, facts: &RequestFacts, config: &DrainConfig) -> Verdict {
    if facts.in_dialog {
        // Rule 2: whatever the state, an accepted call runs to its end.
        return Verdict::Proceed;
    }
    match state {
        SystemState::Online => Verdict::Proceed,
        // While offline every new out-of-dialog request is turned away, priority too.
        SystemState::Offline => Verdict::Reject(unavailable(config)),
        SystemState::Draining => match facts.method {
            // Rule 9: a peer's status test learns we are going away.
            DrainMethod::Options if facts.to_self => Verdict::Reject(unavailable(config)),
            // Rule 8: priority calls go through.
            DrainMethod::Invite if facts.priority => Verdict::Proceed,
            // Rule 3: a registered endpoint's only path is us.
            DrainMethod::Invite if facts.to_registered || facts.from_registered => Verdict::Proceed,
            // Rule 1.
            DrainMethod::Invite => Verdict::Reject(unavailable(config)),
            // REGISTER is decided per contact by `contact_plan`; rule 7 for the rest.
            DrainMethod::Register | DrainMethod::Options | DrainMethod::Other => Verdict::Proceed,
        },
    }
}

/// The answer to OPTIONS addressed to the box (rule 9): 200 online, 503 otherwise.
pub fn self_options_answer(state: SystemState, config: &DrainConfig) -> Rejection {
    match state {
        SystemState::Online => Rejection {
            code: 200,
            retry_after: None,
        },
        SystemState::Draining | SystemState::Offline => unavailable(config),
    }
}

/// One Contact of a REGISTER, as far as the drain cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactFacts {
    /// The expiry asked for (from the contact's parameter, the Expires header or the default).
    pub asked_expires: u32,
    /// The endpoint behind this contact is in an early or confirmed dialog.
    pub has_active_call: bool,
}

/// What happens to one Contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactPlan {
    /// Forward unchanged.
    AsAsked,
    /// Forward with this lower expiry (rule 4).
    Lower(u32),
    /// Send to the core with expiry 0 and drop from the cache at once (rules 5, 6).
    Remove,
}

/// The plan for one contact of a REGISTER in `state` (rules 4, 5, 6).
pub fn contact_plan(state: SystemState, facts: ContactFacts, config: &DrainConfig) -> ContactPlan {
    if state != SystemState::Draining || facts.asked_expires == 0 {
        // A de-registration is always welcome; outside a drain nothing changes.
        return ContactPlan::AsAsked;
    }
    if !facts.has_active_call {
        return ContactPlan::Remove;
    }
    let lowered = config.retry_after_secs;
    if lowered > 0 && lowered < facts.asked_expires {
        ContactPlan::Lower(lowered)
    } else {
        ContactPlan::AsAsked
    }
}

/// What happens to a whole REGISTER, given the plans of its contacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterPlan {
    /// Forward to the core with each contact's plan applied (rules 4, 6, and online).
    Forward,
    /// Answer the endpoint with this, drop its bindings and de-register them at the core on
    /// its behalf (rule 5).
    RejectAndDeregister(Rejection),
}

/// Rule 5 applies when every contact that asks for time is to be removed.
pub fn register_plan(plans: &[ContactPlan], config: &DrainConfig) -> RegisterPlan {
    let removes = plans.iter().filter(|p| **p == ContactPlan::Remove).count();
    let keeps = plans
        .iter()
        .filter(|p| matches!(p, ContactPlan::Lower(_)))
        .count();
    let as_asked = plans.len() - removes - keeps;
    if removes > 0 && keeps == 0 && as_asked == 0 {
        RegisterPlan::RejectAndDeregister(Rejection {
            code: config.reg_reject_code,
            retry_after: (config.retry_after_secs > 0).then_some(config.retry_after_secs),
        })
    } else {
        RegisterPlan::Forward
    }
}

/// The code for a priority call that cannot be forwarded (rule 8): 380 while draining when
/// configured, else `otherwise`.
pub fn priority_unroutable_code(state: SystemState, config: &DrainConfig, otherwise: u16) -> u16 {
    if state == SystemState::Draining && config.answer_380 {
        380
    } else {
        otherwise
    }
}

/// Whether a request is a priority call: a configured Resource-Priority namespace (the part
/// before the dot, RFC 4412) or an emergency service URN.
pub fn is_priority(request_uri: &str, resource_priority: &[&str], config: &DrainConfig) -> bool {
    let sos = request_uri
        .get(..15)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:service:sos"));
    sos || resource_priority.iter().any(|value| {
        value.split(',').any(|item| {
            let namespace = item.trim().split('.').next().unwrap_or_default();
            config
                .priority_namespaces
                .iter()
                .any(|n| n.eq_ignore_ascii_case(namespace))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(method: DrainMethod) -> RequestFacts {
        RequestFacts {
            method,
            in_dialog: false,
            to_registered: false,
            from_registered: false,
            priority: false,
            to_self: false,
        }
    }

    #[test]
    fn draining_invite_matrix() {
        let cfg = DrainConfig::default();
        let plain = facts(DrainMethod::Invite);
        assert_eq!(
            admit(SystemState::Draining, &plain, &cfg),
            Verdict::Reject(Rejection {
                code: 503,
                retry_after: Some(60)
            })
        );
        assert_eq!(admit(SystemState::Online, &plain, &cfg), Verdict::Proceed);
        for f in [
            RequestFacts {
                in_dialog: true,
                ..plain
            },
            RequestFacts {
                to_registered: true,
                ..plain
            },
            RequestFacts {
                from_registered: true,
                ..plain
            },
            RequestFacts {
                priority: true,
                ..plain
            },
        ] {
            assert_eq!(admit(SystemState::Draining, &f, &cfg), Verdict::Proceed);
        }
        let priority = RequestFacts {
            priority: true,
            ..plain
        };
        assert!(matches!(
            admit(SystemState::Offline, &priority, &cfg),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn zero_retry_after_means_no_header_and_no_lowering() {
        let cfg = DrainConfig {
            retry_after_secs: 0,
            ..DrainConfig::default()
        };
        assert_eq!(
            admit(SystemState::Draining, &facts(DrainMethod::Invite), &cfg),
            Verdict::Reject(Rejection {
                code: 503,
                retry_after: None
            })
        );
        let with_call = ContactFacts {
            asked_expires: 3600,
            has_active_call: true,
        };
        assert_eq!(
            contact_plan(SystemState::Draining, with_call, &cfg),
            ContactPlan::AsAsked
        );
    }

    #[test]
    fn register_plans() {
        let cfg = DrainConfig::default();
        let call = |asked, has_active_call| ContactFacts {
            asked_expires: asked,
            has_active_call,
        };
        let d = SystemState::Draining;
        assert_eq!(
            contact_plan(d, call(3600, true), &cfg),
            ContactPlan::Lower(60)
        );
        assert_eq!(contact_plan(d, call(30, true), &cfg), ContactPlan::AsAsked);
        assert_eq!(
            contact_plan(d, call(3600, false), &cfg),
            ContactPlan::Remove
        );
        assert_eq!(contact_plan(d, call(0, false), &cfg), ContactPlan::AsAsked);
        assert!(matches!(
            register_plan(&[ContactPlan::Remove], &cfg),
            RegisterPlan::RejectAndDeregister(_)
        ));
        assert_eq!(
            register_plan(&[ContactPlan::Remove, ContactPlan::Lower(60)], &cfg),
            RegisterPlan::Forward
        );
    }

    #[test]
    fn priority_detection() {
        let cfg = DrainConfig::default();
        assert!(is_priority("urn:service:sos.police", &[], &cfg));
        assert!(is_priority("sip:a@b", &["ets.0"], &cfg));
        assert!(is_priority("sip:a@b", &["dsn.flash, wps.1"], &cfg));
        assert!(!is_priority("sip:a@b", &["dsn.flash"], &cfg));
        assert!(!is_priority("urn:service:so", &[], &cfg));
    }
}
