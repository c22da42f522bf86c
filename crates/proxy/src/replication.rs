//! What the proxy hands its twin and takes from it (SPEC §7, hot standby): the records, their
//! keys (a record replaces the one with the same key) and the checks every received record
//! passes before it touches a table.
//!
//! A record names a party by listener, transport and address ([`crate::transport::Peer`]),
//! never by the sender's connection number, and carries times as durations (clocks differ).
//! What a record may hold is bounded: a twin is trusted to be the twin (the stream is
//! authenticated), not to be free of bugs, and a record that would make this node send from a
//! listener it does not have, or keep a binding for a year, is refused whole.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dialogs::{DialogId, DialogRecord, DialogRecordChange, PartyRecord};
use crate::events::ChangeRecord;
use crate::registrations::{BindingChange, BindingRecord};
use crate::transport::Peer;
use crate::Config;

/// The longest text field of a record (URIs, Call-IDs, tags, header values).
pub const MAX_TEXT: usize = 2048;
/// The most Route entries toward one party.
pub const MAX_ROUTE: usize = 16;
/// The most credential lines of one binding.
pub const MAX_CREDENTIALS: usize = 4;
/// The longest a replicated binding may still be valid; longer is clamped to this.
pub const MAX_BINDING_LIFE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The oldest a replicated dialog may say it is; older is clamped to this.
pub const MAX_DIALOG_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a record replaces: one binding (AoR and contact) or one dialog.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKey {
    /// A binding.
    Binding {
        /// Its AoR.
        aor: String,
        /// Its contact.
        contact: String,
    },
    /// A dialog.
    Dialog(DialogId),
}

impl ChangeRecord {
    /// The key of what this record replaces.
    pub fn key(&self) -> RecordKey {
        match self {
            ChangeRecord::Binding(BindingChange::Upsert(r)) => RecordKey::Binding {
                aor: r.aor.clone(),
                contact: r.contact.clone(),
            },
            ChangeRecord::Binding(BindingChange::Remove { aor, contact, .. }) => {
                RecordKey::Binding {
                    aor: aor.clone(),
                    contact: contact.clone(),
                }
            }
            ChangeRecord::Dialog(DialogRecordChange::Upsert(d)) => RecordKey::Dialog(d.id.clone()),
            ChangeRecord::Dialog(DialogRecordChange::Remove(id)) => RecordKey::Dialog(id.clone()),
        }
    }
}

/// Why a received record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// It names a listener this node does not have.
    #[error("listener {0} is not configured here")]
    Listener(u16),
    /// Its transport is not the listener's.
    #[error("listener {0} does not carry that transport")]
    Transport(u16),
    /// A text field is too long.
    #[error("{what} is {len} bytes (at most {MAX_TEXT})")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A list is too long.
    #[error("{what} has {n} entries")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Its length.
        n: usize,
    },
    /// A key field is empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// The node is not allowed to take records now (it is active, or replication is off).
    #[error("not a standby taking records")]
    NotTaking,
}

fn text(what: &'static str, s: &str) -> Result<(), RecordError> {
    if s.len() > MAX_TEXT {
        return Err(RecordError::TooLong { what, len: s.len() });
    }
    Ok(())
}

fn key_text(what: &'static str, s: &str) -> Result<(), RecordError> {
    if s.is_empty() {
        return Err(RecordError::Empty(what));
    }
    text(what, s)
}

fn peer(config: &Config, p: &Peer) -> Result<(), RecordError> {
    let l = config
        .listeners
        .get(usize::from(p.listener.0))
        .ok_or(RecordError::Listener(p.listener.0))?;
    if l.transport != p.transport {
        return Err(RecordError::Transport(p.listener.0));
    }
    Ok(())
}

fn dialog_id(id: &DialogId) -> Result<(), RecordError> {
    key_text("call-id", &id.call_id)?;
    key_text("caller tag", &id.caller_tag)
}

fn party(config: &Config, p: &PartyRecord) -> Result<(), RecordError> {
    peer(config, &p.peer)?;
    if config
        .listeners
        .get(usize::from(p.peer.listener.0))
        .is_some_and(|l| l.realm != p.realm)
    {
        return Err(RecordError::Listener(p.peer.listener.0));
    }
    text("uri", &p.uri)?;
    text("tag", p.tag.as_deref().unwrap_or_default())?;
    text("contact", p.contact.as_deref().unwrap_or_default())?;
    if p.route.len() > MAX_ROUTE {
        return Err(RecordError::TooMany {
            what: "route",
            n: p.route.len(),
        });
    }
    p.route.iter().try_for_each(|r| text("route", r))
}

fn binding(config: &Config, r: &mut BindingRecord) -> Result<(), RecordError> {
    key_text("aor", &r.aor)?;
    key_text("contact", &r.contact)?;
    peer(config, &r.peer)?;
    text("call-id", &r.call_id)?;
    text("to", &r.to_uri)?;
    text("registrar", &r.registrar_uri)?;
    if r.credentials.len() > MAX_CREDENTIALS {
        return Err(RecordError::TooMany {
            what: "credentials",
            n: r.credentials.len(),
        });
    }
    for (name, value) in &r.credentials {
        text("credential name", name)?;
        text("credential", value)?;
    }
    let cap = u64::try_from(MAX_BINDING_LIFE.as_millis()).unwrap_or(u64::MAX);
    r.expires_in_ms = r.expires_in_ms.min(cap);
    Ok(())
}

fn dialog(config: &Config, d: &mut DialogRecord) -> Result<(), RecordError> {
    dialog_id(&d.id)?;
    party(config, &d.caller)?;
    party(config, &d.callee)?;
    if d.caller.realm != d.id.caller_realm {
        return Err(RecordError::Listener(d.caller.peer.listener.0));
    }
    let cap = u64::try_from(MAX_DIALOG_AGE.as_millis()).unwrap_or(u64::MAX);
    d.age_ms = d.age_ms.min(cap);
    Ok(())
}

/// Checks a received record against this node's configuration and clamps its times; the
/// record is applied only if this returns `Ok`.
pub fn validate(config: &Config, record: &mut ChangeRecord) -> Result<(), RecordError> {
    match record {
        ChangeRecord::Binding(BindingChange::Upsert(r)) => binding(config, r),
        ChangeRecord::Binding(BindingChange::Remove { aor, contact, .. }) => {
            key_text("aor", aor)?;
            key_text("contact", contact)
        }
        ChangeRecord::Dialog(DialogRecordChange::Upsert(d)) => dialog(config, d),
        ChangeRecord::Dialog(DialogRecordChange::Remove(id)) => dialog_id(id),
    }
}

/// A hash of the listener list (realm, transport, address of each, in order): records name
/// listeners by index, so two nodes replicate only when their lists agree, which the stream's
/// handshake checks.
pub fn listener_hash(config: &Config) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"sbc-listeners-v1\0");
    for l in &config.listeners {
        let realm = match l.realm {
            crate::Realm::Access => "access",
            crate::Realm::Core => "core",
        };
        h.update(format!("{realm} {} {}\n", l.transport.uri_param(), l.addr).as_bytes());
    }
    h.finalize().into()
}
