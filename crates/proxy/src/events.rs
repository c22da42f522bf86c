//! What the proxy tells its owner: events to log and act on, change records to replicate, and
//! the plain snapshot structs behind `show calls`, `show registrations`, `show upstreams` and
//! `show stats`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::dialogs::{DialogRecordChange, DialogState};
use crate::registrations::{BindingChange, RemovalCause};
use crate::transport::Transport;

/// A change to replicated state, to hand to the twin (SPEC §7 hot standby) and apply there
/// with [`crate::Proxy::apply_change`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeRecord {
    /// The registration cache changed.
    Binding(BindingChange),
    /// The dialog table changed.
    Dialog(DialogRecordChange),
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEndCause {
    /// A BYE.
    Bye,
    /// The INVITE failed or was cancelled.
    Failed,
    /// The guard timer ended it (SPEC §2 rule 11).
    Guard,
    /// No request in it for `[limits] dialog_idle_secs`: forgotten, not ended on the wire (its
    /// later requests still pass on the signed Record-Route entry).
    Idle,
}

/// The two counts the drain watches (SPEC §1, §2 rule 10).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Early plus confirmed INVITE sessions.
    pub active_sessions: usize,
    /// Early sessions.
    pub early: usize,
    /// Confirmed sessions.
    pub confirmed: usize,
    /// Live bindings in the registration cache.
    pub registrations: usize,
}

/// Something the owner should hear about, taken with [`crate::Proxy::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An INVITE session was forwarded.
    CallStarted {
        /// Its Call-ID (the session's own copy, shared).
        call_id: crate::dialogs::Text,
        /// Whether it is a priority call.
        priority: bool,
    },
    /// The session got its 2xx.
    CallAnswered {
        /// Its Call-ID.
        call_id: crate::dialogs::Text,
    },
    /// The session is over.
    CallEnded {
        /// Its Call-ID.
        call_id: crate::dialogs::Text,
        /// Why.
        cause: CallEndCause,
    },
    /// A binding was cached or refreshed.
    RegistrationAdded {
        /// The AoR.
        aor: String,
        /// The contact.
        contact: String,
        /// Seconds granted.
        expires_secs: u64,
    },
    /// A binding left the cache.
    RegistrationRemoved {
        /// The AoR.
        aor: String,
        /// The contact.
        contact: String,
        /// Why.
        cause: RemovalCause,
    },
    /// Replicate this to the twin.
    Change(ChangeRecord),
    /// An upstream left rotation.
    UpstreamOut {
        /// Its name.
        name: String,
        /// The Retry-After it gave, if any.
        retry_after_secs: Option<u64>,
    },
    /// An upstream is back in rotation.
    UpstreamBack {
        /// Its name.
        name: String,
    },
    /// An upstream is not back when it said it would be (SPEC §3): log it for the operator.
    UpstreamLate {
        /// Its name.
        name: String,
        /// How long past its promised return.
        overdue_secs: u64,
    },
    /// With shards: an upstream left or rejoined the rotation here; the other shards apply it
    /// ([`crate::Proxy::apply_peer_upstream`]).
    Upstream(crate::upstreams::UpstreamNote),
    /// A message could not be read and no 400 could be sent.
    MalformedDropped {
        /// Who sent it.
        source: SocketAddr,
        /// What was wrong.
        reason: String,
    },
    /// The session or registration count changed.
    CountsChanged(Counts),
    /// Draining, and both counts are zero: the owner may go offline (SPEC §2 rule 10).
    DrainComplete,
    /// Offline: the shell should shut down SIP connections and associations gracefully (SCTP
    /// SHUTDOWN, never ABORT) and refuse new ones until online again.
    CloseConnections,
    /// Back online: the shell may accept SIP connections again.
    AcceptConnections,
    /// A request the proxy sent on its own (a de-registration on an endpoint's behalf, a
    /// guard's BYE, a CANCEL) got its final response. Logged, since nobody else sees it: a
    /// 401/407 here means the core refused a de-registration that carried no usable
    /// credentials, and the binding stays at the core until it expires.
    OwnRequestAnswered {
        /// Its method.
        method: String,
        /// The AoR it was about (its To URI, key form).
        aor: String,
        /// The final status code.
        code: u16,
    },
    /// A request the proxy sent on its own got no final response in time (timer F or B).
    OwnRequestTimedOut {
        /// Its method.
        method: String,
        /// The AoR it was about (its To URI, key form).
        aor: String,
    },
}

/// One line of `show calls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    /// Call-ID.
    pub call_id: String,
    /// Early or confirmed.
    pub state: DialogState,
    /// The caller's URI.
    pub caller: String,
    /// The callee's URI.
    pub callee: String,
    /// Where the caller is.
    pub caller_addr: SocketAddr,
    /// Where the INVITE went.
    pub callee_addr: SocketAddr,
    /// Whether it is a priority call.
    pub priority: bool,
    /// Seconds since the INVITE.
    pub age_secs: u64,
}

/// One line of `show registrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationInfo {
    /// The AoR.
    pub aor: String,
    /// The contact URI.
    pub contact: String,
    /// Where the endpoint is reached.
    pub remote: SocketAddr,
    /// Over what.
    pub transport: Transport,
    /// Seconds left.
    pub expires_in_secs: u64,
    /// Live calls of this endpoint, as the drain rules count them.
    #[serde(default)]
    pub active_calls: u64,
}

/// `show stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
// A reader of an older record (fewer counters) gets zeros rather than an error.
#[serde(default)]
pub struct Stats {
    /// Messages handed in.
    pub received: u64,
    /// Messages handed out.
    pub sent: u64,
    /// Requests forwarded.
    pub requests_forwarded: u64,
    /// Responses relayed.
    pub responses_relayed: u64,
    /// Responses relayed, by class (`relayed_1xx` provisional ... `relayed_6xx` global
    /// failures): the answers the box's calls and registrations got.
    pub relayed_1xx: u64,
    /// See `relayed_1xx`.
    pub relayed_2xx: u64,
    /// See `relayed_1xx`.
    pub relayed_3xx: u64,
    /// See `relayed_1xx`.
    pub relayed_4xx: u64,
    /// See `relayed_1xx`.
    pub relayed_5xx: u64,
    /// See `relayed_1xx`.
    pub relayed_6xx: u64,
    /// Requests answered by the proxy itself.
    pub local_responses: u64,
    /// Malformed messages dropped without a reply.
    pub malformed_dropped: u64,
    /// Malformed requests answered 400.
    pub bad_requests: u64,
    /// Calls (new INVITEs) and registrations turned away by the drain or offline rules; not
    /// other requests, nor the 503 answered to a status-test OPTIONS (rule 9).
    pub drain_rejected: u64,
    /// Loops detected (482).
    pub loops: u64,
    /// Requests out of hops (483).
    pub too_many_hops: u64,
    /// Times a request moved on to another upstream.
    pub upstream_failovers: u64,
    /// OPTIONS probes sent.
    pub probes_sent: u64,
    /// SCTP associations to an upstream shut down after its 503 with Retry-After (SPEC §3).
    pub upstream_associations_shut: u64,
    /// Retransmissions sent.
    pub retransmissions: u64,
    /// Responses matching no transaction, dropped.
    pub stray_responses: u64,
    /// INVITE sessions started.
    pub calls_started: u64,
    /// Sessions ended by the guard.
    pub calls_terminated_by_guard: u64,
    /// Requests dropped because their source was over `per_source_rps`.
    pub rate_limited: u64,
    /// Requests answered 503 because a table was at its cap (transactions, dialogs, bindings).
    pub cap_rejected: u64,
    /// `cap_rejected` at `max_transactions`.
    pub cap_rejected_transactions: u64,
    /// `cap_rejected` at `max_dialogs`.
    pub cap_rejected_dialogs: u64,
    /// `cap_rejected` at `max_bindings`.
    pub cap_rejected_bindings: u64,
    /// In-dialog requests for a dialog the box does not know and did not sign (481).
    pub unknown_dialog: u64,
    /// Dialogs learnt from a request carrying our signed route, with no record of them here
    /// (a twin's calls set up just before it died; SPEC §7).
    #[serde(default)]
    pub dialogs_learnt: u64,
    /// Sessions forgotten after `[limits] dialog_idle_secs` without a request (a lost BYE).
    #[serde(default)]
    pub dialogs_idle_forgotten: u64,
    /// New requests left unanswered while a switchover handed the addresses over (their
    /// retransmissions reach the twin).
    #[serde(default)]
    pub switchover_held: u64,
    /// Messages that reached a standby (on their way before the addresses moved): dropped,
    /// as the active twin now answers them.
    #[serde(default)]
    pub standby_dropped: u64,
    /// INVITEs the upstream never answered finally within 64*T1 of their CANCEL: given up.
    #[serde(default)]
    pub cancelled_unanswered: u64,
    /// Transactions under way when this node became standby: handed to the twin unanswered.
    #[serde(default)]
    pub transactions_handed_over: u64,
    /// Change records of the other shards of this box applied here.
    #[serde(default)]
    pub peer_records_applied: u64,
    /// Responses from somewhere the request was not sent to, and requests that claimed a
    /// transaction of another source: dropped.
    pub spoofed: u64,
    /// Own answers not sent because they would have been larger than the bound.
    pub oversized_answers: u64,
    /// Final responses to requests the proxy sent on its own (de-registrations, guard BYEs,
    /// CANCELs), by class. A 401 or 407 counts in `own_final_4xx` and in `own_challenged`.
    pub own_final_2xx: u64,
    /// See `own_final_2xx`.
    pub own_final_3xx: u64,
    /// See `own_final_2xx`.
    pub own_final_4xx: u64,
    /// See `own_final_2xx`.
    pub own_final_5xx: u64,
    /// See `own_final_2xx`.
    pub own_final_6xx: u64,
    /// 401/407 to requests the proxy sent on its own: the core wanted credentials the box
    /// did not have (or no longer valid ones). Never retried.
    pub own_challenged: u64,
    /// Requests the proxy sent on its own that got no final response in time.
    pub own_timed_out: u64,
    /// Server transactions held now.
    pub server_transactions: u64,
    /// Client transactions held now.
    pub client_transactions: u64,
    /// Deadlines armed now.
    pub timers_armed: u64,
}
