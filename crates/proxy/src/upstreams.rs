//! The core-side next hops: which one a request goes to, which are out of rotation and until
//! when, and when each is probed (SPEC §3).
//!
//! Decisions: lowest priority number first, round-robin among equals; a 503 with Retry-After
//! takes an upstream out for that long; a failed attempt without Retry-After only moves the
//! request on. Every upstream is probed every `probe_interval` (an out-of-rotation one not
//! before its Retry-After has passed); a 2xx to a probe puts it back. An upstream in rotation
//! is taken out by a probe only when a second one, sent at once, fails too: one lost OPTIONS
//! (a datagram dropped, a stalled host, a twin's takeover in progress) would otherwise refuse
//! every call for a whole probe interval, while a dead upstream costs its calls only the
//! probe timeout more before they stop going there. A promised return that does not happen is
//! reported once per outage.

use crate::hash::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::UpstreamConfig;

/// Index of an upstream in [`crate::Config::upstreams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UpstreamId(pub usize);

/// Whether an upstream takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Availability {
    InRotation,
    Out {
        /// When it said it would be back (or when it went quiet, if it promised nothing).
        until: Instant,
        /// Whether `until` came from a Retry-After.
        promised: bool,
        late_reported: bool,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    config: UpstreamConfig,
    availability: Availability,
    next_probe: Instant,
    probe_pending: bool,
    attempts: u64,
    failures: u64,
    /// When the last probe ended and how, for `show upstreams`.
    last_probe: Option<(Instant, ProbeAnswer)>,
    /// In rotation, its last probe failed: the next one (sent at once) decides.
    suspect: bool,
}

/// How a probe ended, as the operator sees it: a final status code or none in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeAnswer {
    /// A final response with this status code.
    Code(u16),
    /// No final response within the probe timeout.
    Timeout,
}

/// What a probe got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// A 2xx, with its status code.
    Ok(u16),
    /// A 503, with its Retry-After if any.
    Unavailable(Option<Duration>),
    /// Some other final response (its status code): the server is alive but unhappy with
    /// OPTIONS.
    OtherResponse(u16),
    /// No answer within the probe timeout.
    Timeout,
}

/// Something the operator should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamChange {
    /// Taken out of rotation until `until` (`None`: until a probe succeeds).
    Out {
        /// Which.
        id: UpstreamId,
        /// For how long it said it would be away.
        retry_after: Option<Duration>,
    },
    /// Back in rotation.
    Back(UpstreamId),
    /// Still out after the time it gave; `overdue` is how long past it.
    Late {
        /// Which.
        id: UpstreamId,
        /// How long past the promised time.
        overdue: Duration,
    },
}

/// Whether an upstream takes requests, as one shard learnt it, for the others (SPEC §6): the
/// rotation is the box's, whichever shard saw the 503 or ran the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamNote {
    /// Out of rotation, for `retry_after` (`None`: until a probe succeeds).
    Out {
        id: UpstreamId,
        retry_after: Option<Duration>,
    },
    /// Back in rotation.
    Back(UpstreamId),
}

impl ProbeResult {
    /// What the operator is shown of it.
    pub fn answer(self) -> ProbeAnswer {
        match self {
            ProbeResult::Ok(code) | ProbeResult::OtherResponse(code) => ProbeAnswer::Code(code),
            ProbeResult::Unavailable(_) => ProbeAnswer::Code(503),
            ProbeResult::Timeout => ProbeAnswer::Timeout,
        }
    }
}

/// The last probe of an upstream, as `show upstreams` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastProbe {
    /// How long before the snapshot it ended.
    pub ago_ms: u64,
    /// How.
    pub answer: ProbeAnswer,
}

impl UpstreamChange {
    /// What the other shards must learn of this change (a late upstream is the prober's to
    /// report).
    pub fn note(&self) -> Option<UpstreamNote> {
        match *self {
            UpstreamChange::Out { id, retry_after } => Some(UpstreamNote::Out { id, retry_after }),
            UpstreamChange::Back(id) => Some(UpstreamNote::Back(id)),
            UpstreamChange::Late { .. } => None,
        }
    }
}

/// How `show upstreams` sees one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamInfo {
    /// The configured name.
    pub name: String,
    /// Its address.
    pub addr: std::net::SocketAddr,
    /// Its priority.
    pub priority: u32,
    /// Whether it takes requests.
    pub in_rotation: bool,
    /// Seconds until its promised return, when out.
    pub back_in_secs: Option<u64>,
    /// Requests sent to it.
    pub attempts: u64,
    /// Attempts that failed (timeout, 503, transaction error).
    pub failures: u64,
    /// The last probe that ended, if one has.
    #[serde(default)]
    pub last_probe: Option<LastProbe>,
}

/// The upstream list.
#[derive(Debug)]
pub struct Upstreams {
    entries: Vec<Entry>,
    /// Round-robin cursor per priority.
    cursors: HashMap<u32, usize>,
    probe_interval: Duration,
}

/// No upstream can take the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoneAvailable {
    /// The shortest time until an out-of-rotation one said it would be back.
    pub retry_after: Option<Duration>,
}

impl Upstreams {
    /// All upstreams start in rotation; the first probes go out one interval after `now`.
    pub fn new(configs: &[UpstreamConfig], probe_interval: Duration, now: Instant) -> Self {
        Upstreams {
            entries: configs
                .iter()
                .map(|config| Entry {
                    config: config.clone(),
                    availability: Availability::InRotation,
                    next_probe: now + probe_interval,
                    probe_pending: false,
                    attempts: 0,
                    failures: 0,
                    last_probe: None,
                    suspect: false,
                })
                .collect(),
            cursors: HashMap::default(),
            probe_interval,
        }
    }

    /// The configuration of `id`.
    pub fn config(&self, id: UpstreamId) -> Option<&UpstreamConfig> {
        self.entries.get(id.0).map(|e| &e.config)
    }

    /// Finds the upstream with this address.
    pub fn by_addr(&self, addr: std::net::SocketAddr) -> Option<UpstreamId> {
        self.entries
            .iter()
            .position(|e| e.config.addr == addr)
            .map(UpstreamId)
    }

    /// Picks the next upstream for a request, skipping those already `tried` for it.
    pub fn select(
        &mut self,
        now: Instant,
        tried: &[UpstreamId],
    ) -> Result<UpstreamId, NoneAvailable> {
        let usable = |(i, e): &(usize, &Entry)| {
            e.availability == Availability::InRotation && !tried.contains(&UpstreamId(*i))
        };
        let best = self
            .entries
            .iter()
            .enumerate()
            .filter(usable)
            .map(|(_, e)| e.config.priority)
            .min();
        let Some(priority) = best else {
            return Err(NoneAvailable {
                retry_after: self.shortest_wait(now),
            });
        };
        // The group of that priority, in configuration order, taken round-robin from the
        // group's cursor: the first usable at or after the cursor, else the first before it.
        let group = || {
            self.entries
                .iter()
                .enumerate()
                .filter(move |(_, e)| e.config.priority == priority)
                .enumerate()
        };
        let size = group().count();
        let cursor = self.cursors.get(&priority).copied().unwrap_or(0) % size.max(1);
        let chosen = group()
            .skip(cursor)
            .chain(group().take(cursor))
            .find(|(_, entry)| usable(entry))
            .map(|(place, (index, _))| (place, index));
        if let Some((place, index)) = chosen {
            self.cursors.insert(priority, (place + 1) % size);
            self.entries[index].attempts += 1;
            return Ok(UpstreamId(index));
        }
        Err(NoneAvailable {
            retry_after: self.shortest_wait(now),
        })
    }

    fn shortest_wait(&self, now: Instant) -> Option<Duration> {
        self.entries
            .iter()
            .filter_map(|e| match e.availability {
                Availability::Out { until, .. } => Some(until.saturating_duration_since(now)),
                Availability::InRotation => None,
            })
            .min()
    }

    /// An attempt on `id` failed without a Retry-After: counted, nothing else.
    pub fn attempt_failed(&mut self, id: UpstreamId) {
        if let Some(e) = self.entries.get_mut(id.0) {
            e.failures += 1;
        }
    }

    /// `id` answered 503 with Retry-After: out of rotation for that long.
    pub fn take_out(
        &mut self,
        id: UpstreamId,
        retry_after: Duration,
        now: Instant,
    ) -> Option<UpstreamChange> {
        let entry = self.entries.get_mut(id.0)?;
        entry.failures += 1;
        let until = now + retry_after;
        let was_in = entry.availability == Availability::InRotation;
        entry.availability = Availability::Out {
            until,
            promised: true,
            late_reported: false,
        };
        entry.next_probe = until;
        was_in.then_some(UpstreamChange::Out {
            id,
            retry_after: Some(retry_after),
        })
    }

    /// What another shard learnt (see [`UpstreamNote`]): applied without a change of its own
    /// to report. A promised return moves the probe there, as [`take_out`](Self::take_out)
    /// does.
    pub fn apply_note(&mut self, note: UpstreamNote, now: Instant) {
        match note {
            UpstreamNote::Out { id, retry_after } => {
                let Some(e) = self.entries.get_mut(id.0) else {
                    return;
                };
                let until = now + retry_after.unwrap_or_default();
                e.availability = Availability::Out {
                    until,
                    promised: retry_after.is_some(),
                    late_reported: false,
                };
                if retry_after.is_some() {
                    e.next_probe = until;
                }
            }
            UpstreamNote::Back(id) => {
                if let Some(e) = self.entries.get_mut(id.0) {
                    e.availability = Availability::InRotation;
                }
            }
        }
    }

    /// Upstreams whose probe is due at `now`; each is marked as having a probe in flight.
    pub fn due_probes(&mut self, now: Instant) -> Vec<UpstreamId> {
        let mut due = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if !e.probe_pending && e.next_probe <= now {
                e.probe_pending = true;
                e.next_probe = now + self.probe_interval;
                due.push(UpstreamId(i));
            }
        }
        due
    }

    /// Makes every probe not in flight due at `now`.
    pub fn probe_all_at(&mut self, now: Instant) {
        for e in &mut self.entries {
            if !e.probe_pending {
                e.next_probe = e.next_probe.min(now);
            }
        }
    }

    /// The result of the probe sent to `id`.
    pub fn probe_result(
        &mut self,
        id: UpstreamId,
        result: ProbeResult,
        now: Instant,
    ) -> Vec<UpstreamChange> {
        let mut changes = Vec::new();
        let Some(e) = self.entries.get_mut(id.0) else {
            return changes;
        };
        e.probe_pending = false;
        e.last_probe = Some((now, result.answer()));
        match (e.availability, result) {
            (Availability::InRotation, ProbeResult::Unavailable(Some(wait))) => {
                e.availability = Availability::Out {
                    until: now + wait,
                    promised: true,
                    late_reported: false,
                };
                e.next_probe = now + wait;
                changes.push(UpstreamChange::Out {
                    id,
                    retry_after: Some(wait),
                });
            }
            (Availability::InRotation, ProbeResult::Timeout | ProbeResult::Unavailable(None))
                if !e.suspect =>
            {
                // Asked again at once before it is taken out.
                e.suspect = true;
                e.next_probe = now;
            }
            (Availability::InRotation, ProbeResult::Timeout | ProbeResult::Unavailable(None)) => {
                e.suspect = false;
                e.availability = Availability::Out {
                    until: now,
                    promised: false,
                    late_reported: false,
                };
                changes.push(UpstreamChange::Out {
                    id,
                    retry_after: None,
                });
            }
            (Availability::InRotation, _) => e.suspect = false,
            (Availability::Out { .. }, ProbeResult::Ok(_)) => {
                e.availability = Availability::InRotation;
                changes.push(UpstreamChange::Back(id));
            }
            (
                Availability::Out {
                    until,
                    promised,
                    late_reported,
                },
                other,
            ) => {
                let mut late_reported = late_reported;
                if promised && !late_reported && now >= until {
                    late_reported = true;
                    changes.push(UpstreamChange::Late {
                        id,
                        overdue: now - until,
                    });
                }
                let (until, promised) = match other {
                    ProbeResult::Unavailable(Some(wait)) => {
                        e.next_probe = e.next_probe.max(now + wait);
                        (now + wait, promised)
                    }
                    _ => (until, promised),
                };
                e.availability = Availability::Out {
                    until,
                    promised,
                    late_reported,
                };
            }
        }
        changes
    }

    /// When the next probe is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| !e.probe_pending)
            .map(|e| e.next_probe)
            .min()
    }

    /// The failures counted on each upstream, in configuration order.
    pub fn failures(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|e| e.failures)
    }

    /// What `show upstreams` prints.
    pub fn snapshot(&self, now: Instant) -> Vec<UpstreamInfo> {
        self.entries
            .iter()
            .map(|e| UpstreamInfo {
                name: e.config.name.clone(),
                addr: e.config.addr,
                priority: e.config.priority,
                in_rotation: e.availability == Availability::InRotation,
                back_in_secs: match e.availability {
                    Availability::Out {
                        until,
                        promised: true,
                        ..
                    } => Some(until.saturating_duration_since(now).as_secs()),
                    // A silent upstream promised nothing: it is out, not late.
                    Availability::Out {
                        promised: false, ..
                    }
                    | Availability::InRotation => None,
                },
                attempts: e.attempts,
                failures: e.failures,
                last_probe: e.last_probe.map(|(at, answer)| LastProbe {
                    ago_ms: u64::try_from(now.saturating_duration_since(at).as_millis())
                        .unwrap_or(u64::MAX),
                    answer,
                }),
            })
            .collect()
    }

    /// Number of upstreams.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;

    fn cfg(port: u16, priority: u32) -> UpstreamConfig {
        UpstreamConfig {
            name: format!("u{port}"),
            addr: format!("192.0.2.1:{port}").parse().unwrap(),
            transport: Transport::Udp,
            priority,
        }
    }

    #[test]
    fn priority_first_then_round_robin() {
        let t0 = Instant::now();
        let mut u = Upstreams::new(
            &[cfg(1, 2), cfg(2, 1), cfg(3, 1)],
            Duration::from_secs(10),
            t0,
        );
        assert_eq!(u.select(t0, &[]), Ok(UpstreamId(1)));
        assert_eq!(u.select(t0, &[]), Ok(UpstreamId(2)));
        assert_eq!(u.select(t0, &[]), Ok(UpstreamId(1)));
        assert_eq!(
            u.select(t0, &[UpstreamId(1), UpstreamId(2)]),
            Ok(UpstreamId(0))
        );
    }

    #[test]
    fn out_until_retry_after_then_probe_puts_back() {
        let t0 = Instant::now();
        let mut u = Upstreams::new(&[cfg(1, 1)], Duration::from_secs(10), t0);
        assert!(u
            .take_out(UpstreamId(0), Duration::from_secs(30), t0)
            .is_some());
        assert_eq!(
            u.select(t0 + Duration::from_secs(5), &[]),
            Err(NoneAvailable {
                retry_after: Some(Duration::from_secs(25))
            })
        );
        assert_eq!(u.next_deadline(), Some(t0 + Duration::from_secs(30)));
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(u.due_probes(t1), vec![UpstreamId(0)]);
        let late = u.probe_result(
            UpstreamId(0),
            ProbeResult::Timeout,
            t1 + Duration::from_secs(2),
        );
        assert!(matches!(late[..], [UpstreamChange::Late { .. }]));
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(u.due_probes(t2), vec![UpstreamId(0)]);
        let none = u.probe_result(UpstreamId(0), ProbeResult::Timeout, t2);
        assert!(none.is_empty(), "late is reported once per outage");
        let t3 = t2 + Duration::from_secs(10);
        assert_eq!(u.due_probes(t3), vec![UpstreamId(0)]);
        let back = u.probe_result(UpstreamId(0), ProbeResult::Ok(200), t3);
        assert_eq!(back, vec![UpstreamChange::Back(UpstreamId(0))]);
        assert_eq!(u.select(t3, &[]), Ok(UpstreamId(0)));
    }

    #[test]
    fn silent_upstream_in_rotation_is_taken_out_by_its_second_probe() {
        let t0 = Instant::now();
        let mut u = Upstreams::new(&[cfg(1, 1)], Duration::from_secs(10), t0);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(u.due_probes(t1), vec![UpstreamId(0)]);
        let first = u.probe_result(UpstreamId(0), ProbeResult::Timeout, t1);
        assert!(first.is_empty(), "one lost probe takes nothing out");
        assert_eq!(u.select(t1, &[]), Ok(UpstreamId(0)));
        assert_eq!(u.next_deadline(), Some(t1), "asked again at once");
        assert_eq!(u.due_probes(t1), vec![UpstreamId(0)]);
        let t1 = t1 + Duration::from_secs(2);
        let out = u.probe_result(UpstreamId(0), ProbeResult::Timeout, t1);
        assert_eq!(
            out,
            vec![UpstreamChange::Out {
                id: UpstreamId(0),
                retry_after: None
            }]
        );
        assert!(u.select(t1, &[]).is_err());
        // It never said when it would be back: no promised return to be late for.
        let shown = u.snapshot(t1 + Duration::from_secs(60));
        assert_eq!((shown[0].in_rotation, shown[0].back_in_secs), (false, None));
    }

    #[test]
    fn a_lost_probe_answered_at_the_second_try_leaves_the_upstream_in_rotation() {
        let t0 = Instant::now();
        let mut u = Upstreams::new(&[cfg(1, 1)], Duration::from_secs(30), t0);
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(u.due_probes(t1), vec![UpstreamId(0)]);
        assert!(u
            .probe_result(UpstreamId(0), ProbeResult::Timeout, t1)
            .is_empty());
        assert_eq!(u.due_probes(t1), vec![UpstreamId(0)]);
        let t2 = t1 + Duration::from_millis(5);
        assert!(u
            .probe_result(UpstreamId(0), ProbeResult::Ok(200), t2)
            .is_empty());
        assert_eq!(u.select(t2, &[]), Ok(UpstreamId(0)));
        // Back to the interval, and the next failure is a first one again.
        assert_eq!(u.next_deadline(), Some(t1 + Duration::from_secs(30)));
        let t3 = t1 + Duration::from_secs(30);
        assert_eq!(u.due_probes(t3), vec![UpstreamId(0)]);
        assert!(u
            .probe_result(
                UpstreamId(0),
                ProbeResult::Unavailable(None),
                t3 + Duration::from_secs(2)
            )
            .is_empty());
    }

    #[test]
    fn the_last_probe_and_its_answer_are_kept_for_show_upstreams() {
        let t0 = Instant::now();
        let mut u = Upstreams::new(&[cfg(1, 1), cfg(2, 1)], Duration::from_secs(10), t0);
        assert!(u.snapshot(t0).iter().all(|i| i.last_probe.is_none()));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(u.due_probes(t1), vec![UpstreamId(0), UpstreamId(1)]);
        u.probe_result(UpstreamId(0), ProbeResult::Ok(200), t1);
        u.probe_result(
            UpstreamId(1),
            ProbeResult::Timeout,
            t1 + Duration::from_millis(500),
        );
        let snap = u.snapshot(t1 + Duration::from_secs(3));
        assert_eq!(
            snap[0].last_probe,
            Some(LastProbe {
                ago_ms: 3000,
                answer: ProbeAnswer::Code(200)
            })
        );
        assert_eq!(
            snap[1].last_probe,
            Some(LastProbe {
                ago_ms: 2500,
                answer: ProbeAnswer::Timeout
            })
        );
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(u.due_probes(t2), vec![UpstreamId(0), UpstreamId(1)]);
        u.probe_result(
            UpstreamId(0),
            ProbeResult::Unavailable(Some(Duration::from_secs(30))),
            t2,
        );
        u.probe_result(UpstreamId(1), ProbeResult::OtherResponse(404), t2);
        let snap = u.snapshot(t2);
        assert_eq!(
            snap.iter()
                .map(|i| i.last_probe.map(|p| p.answer))
                .collect::<Vec<_>>(),
            [Some(ProbeAnswer::Code(503)), Some(ProbeAnswer::Code(404))]
        );
    }
}
