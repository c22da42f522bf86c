//! Text for people: how `sbcctl` (without `--json`) and the console show an answer.
//!
//! Decided here: what a terminal may be sent. Strings in an answer come from SIP peers
//! (Call-ID, URIs, AoR, contact, Reason, log lines quoting them) and a peer must not be able to
//! drive the operator's terminal (an ESC sequence that clears the screen, retitles the window,
//! or forges a line). Every peer-supplied field goes through [`terminal_safe`], which escapes
//! control characters (C0 and ESC, DEL, C1, and the Unicode bidirectional overrides) as `\x1b`
//! or `\u{202e}`; and the finished text goes through it once more, line by line, so a field
//! added later without it still cannot reach the terminal raw. JSON output is not rendered
//! here: `encode` writes the same characters as JSON escapes.

use crate::when::{date_time, date_time_and_age, span_secs};
use crate::{Event, Reply, Response};
use std::borrow::Cow;
use std::fmt::Write;

/// True for a character a terminal acts on instead of showing: C0 (ESC included), DEL, C1, and
/// the bidirectional controls that reorder what is shown after them.
fn is_terminal_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` as it may be shown on a terminal: each control character (see the module doc) is
/// written as an escape, `\x1b` for one below U+0100 and `\u{202e}` above; everything else is
/// unchanged (borrowed when nothing needed escaping). Newlines are escaped too: one field is one
/// line.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_terminal_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_terminal_control(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// Finished text, each line made [`terminal_safe`] (the line breaks themselves kept).
fn safe_lines(text: String) -> String {
    if !text.chars().any(|c| c != '\n' && is_terminal_control(c)) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&terminal_safe(line));
    }
    out
}

/// Shorthand for a peer-supplied field.
fn p(text: &str) -> Cow<'_, str> {
    terminal_safe(text)
}

impl Response {
    /// The answer as an operator reads it, its times shown against `now_unix_ms` (the caller's
    /// wall clock, milliseconds since the Unix epoch).
    pub fn render_text_at(&self, now_unix_ms: u64) -> String {
        match self {
            Response::Ok { reply } => reply.render_text_at(now_unix_ms),
            Response::Error { message } => format!("error: {}\n", p(message)),
            Response::Event { event } => event.render_text(),
        }
    }
}

impl Event {
    /// One line for the console, above the prompt.
    pub fn render_text(&self) -> String {
        match self {
            Event::StateChanged {
                from, to, reason, ..
            } => format!("%SYSTEM-STATE: {from} -> {to} ({})\n", p(reason)),
            Event::Notice { message } => format!("%NOTICE: {}\n", p(message)),
            Event::Twin { message } => format!("%TWIN: {}\n", p(message)),
        }
    }
}

/// What a probe got, as `200 OK`, `503 Service Unavailable`, `486` or `timeout`: the reason
/// phrase is RFC 3261's for the code, never the peer's (which could say anything).
fn probe_answer(code: Option<u16>) -> String {
    let Some(code) = code else {
        return "timeout (no answer)".to_owned();
    };
    let phrase = match code {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        _ => return code.to_string(),
    };
    format!("{code} {phrase}")
}

fn secs(ms: u64) -> String {
    format!("{}.{:01}s", ms / 1000, (ms % 1000) / 100)
}

impl Reply {
    /// The reply as an operator reads it, newline-terminated, safe for a terminal; times are
    /// shown as a date plus their age at `now_unix_ms` (the caller's wall clock).
    pub fn render_text_at(&self, now_unix_ms: u64) -> String {
        safe_lines(self.render_unchecked(now_unix_ms))
    }

    fn render_unchecked(&self, now: u64) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; the results are ignored for that reason.
        match self {
            Reply::SystemState(s) => {
                let _ = writeln!(out, "node:              {}", s.node);
                let _ = writeln!(out, "system-state:      {}", s.state);
                let _ = writeln!(
                    out,
                    "since:             {}",
                    date_time_and_age(s.since_unix_ms, now)
                );
                if let Some(ms) = s.guard_remaining_ms {
                    let _ = writeln!(out, "guard remaining:   {}", secs(ms));
                }
                let _ = writeln!(out, "active sessions:   {}", s.active_sessions);
                let _ = writeln!(out, "registrations:     {}", s.registrations);
            }
            Reply::Calls(calls) => {
                let _ = writeln!(out, "{} active call(s)", calls.len());
                for c in calls {
                    let _ = writeln!(
                        out,
                        "  {:<10} {:>8}  {} -> {}  call-id {}",
                        p(&c.state),
                        span_secs(c.age_secs),
                        p(&c.from),
                        p(&c.to),
                        p(&c.call_id)
                    );
                }
            }
            Reply::Registrations(regs) => {
                let _ = writeln!(out, "{} registration(s)", regs.len());
                for r in regs {
                    let _ = writeln!(
                        out,
                        "  {}  contact {}  expires in {}  via {}  calls {}",
                        p(&r.aor),
                        p(&r.contact),
                        span_secs(r.expires_in_secs),
                        p(&r.flow),
                        r.active_calls
                    );
                }
            }
            Reply::Upstreams(ups) => {
                for u in ups {
                    let back = u
                        .back_in_secs
                        .map(|s| format!(" (back in {})", span_secs(s)))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  prio {:<3} {:<12}{back}  failures {}  {}",
                        u.priority,
                        p(&u.status),
                        u.failures,
                        p(&u.uri)
                    );
                    let probe = match &u.last_probe {
                        Some(probe) => format!(
                            "{} at {}",
                            probe_answer(probe.code),
                            date_time_and_age(probe.at_unix_ms, now)
                        ),
                        None => "none yet".to_owned(),
                    };
                    let _ = writeln!(out, "      last probe: {probe}");
                }
                if ups.is_empty() {
                    out.push_str("no upstreams configured\n");
                }
            }
            Reply::Stats(counters) => {
                let width = counters.iter().map(|c| c.name.len()).max().unwrap_or(0);
                for c in counters {
                    let _ = writeln!(out, "{:<width$}  {}", c.name, c.value);
                }
            }
            Reply::Metrics(m) => out.push_str(&crate::metrics::exposition(m)),
            Reply::Panel(p) => {
                let sim = if p.simulated {
                    " (simulated panel)"
                } else {
                    ""
                };
                let on = |b: bool| if b { "on" } else { "off" };
                let _ = writeln!(out, "board:    {}{sim}", p.board);
                let _ = writeln!(
                    out,
                    "leds:     green {}  amber {}  red {}",
                    on(p.green),
                    on(p.amber),
                    on(p.red)
                );
                let _ = writeln!(out, "pattern:  {}", p.pattern);
                let _ = writeln!(
                    out,
                    "button:   {}",
                    if p.button_pressed {
                        "pressed"
                    } else {
                        "released"
                    }
                );
                if let Some(w) = &p.release_will {
                    let _ = writeln!(out, "release will: {w}");
                }
            }
            Reply::Health(h) => {
                let started = now.saturating_sub(h.uptime_secs.saturating_mul(1000));
                let _ = writeln!(
                    out,
                    "uptime:      {} (since {})",
                    span_secs(h.uptime_secs),
                    date_time(started)
                );
                let _ = writeln!(
                    out,
                    "watchdog:    {}",
                    h.watchdog.as_deref().unwrap_or("not armed")
                );
                let _ = writeln!(out, "recoveries:  {}", h.recoveries);
                if let Some(cause) = &h.last_recovery {
                    let _ = writeln!(out, "last recovery: {}", p(cause));
                }
                let _ = writeln!(out, "threads:");
                for t in &h.threads {
                    let _ = writeln!(
                        out,
                        "  {:<16} tid {:<7} cpus {}",
                        t.name, t.tid, t.cpus_allowed
                    );
                }
            }
            Reply::Version(v) => {
                let _ = writeln!(
                    out,
                    "image:   {}",
                    v.image
                        .as_deref()
                        .map_or("none (not started from an image)".into(), p)
                );
                let _ = writeln!(out, "sbcd:    {}", p(&v.sbcd));
                let _ = writeln!(
                    out,
                    "kernel:  {}",
                    v.kernel.as_deref().map_or("-".into(), p)
                );
            }
            Reply::Log(lines) => {
                for l in lines {
                    let _ = writeln!(out, "{}", p(l));
                }
            }
            Reply::Twin(t) => render_twin(&mut out, t, now),
            Reply::Done { message } => {
                let _ = writeln!(out, "{}", p(message));
            }
            Reply::NotAvailable { what, why } => {
                let _ = writeln!(out, "{}: not available: {}", p(what), p(why));
            }
            Reply::Subscribed => out.push_str("subscribed\n"),
        }
        out
    }
}

/// `show twin`: own and twin's role, state, term and epoch; each path; the drops; the last
/// takeover (SPEC §7).
fn render_twin(out: &mut String, info: &crate::TwinInfo, now: u64) {
    let t = &info.status;
    let role = |r: twin::Role| match r {
        twin::Role::Active => "active",
        twin::Role::Standby => "standby",
    };
    let state = |s: twin::PeerState| match s {
        twin::PeerState::Online => "online",
        twin::PeerState::Draining => "draining",
        twin::PeerState::Offline => "offline",
    };
    let _ = writeln!(
        out,
        "this node:   {} {}, {}, term {}, epoch {}{}",
        t.node_id,
        role(t.role),
        state(t.state),
        t.term,
        t.epoch,
        if t.owns_addresses {
            ", owns the service addresses"
        } else {
            ""
        }
    );
    match &t.twin {
        Some(w) => {
            let _ = writeln!(
                out,
                "twin:        {} {}, {}, term {}, epoch {}, {} ({} ms ago); {} calls, {} registrations",
                w.node_id,
                role(w.role),
                state(w.state),
                w.term,
                w.epoch,
                if w.alive { "heard" } else { "LOST" },
                w.last_heard_ms,
                w.calls,
                w.registrations
            );
        }
        None => {
            let _ = writeln!(out, "twin:        never heard");
        }
    }
    for path in &t.paths {
        let name = match path.path {
            twin::PathId::Link => "link",
            twin::PathId::Second => "second",
        };
        let heard = path
            .last_heard_ms
            .map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms ago"));
        let _ = writeln!(
            out,
            "path {name:<7} {}, last keep-alive {heard}, misses {}, sent {}, received {}, dropped {}",
            if path.up { "up" } else { "DOWN" },
            path.misses,
            path.counters.sent,
            path.counters.received,
            path.counters.dropped()
        );
    }
    let c = &t.totals;
    let _ = writeln!(
        out,
        "dropped:     forged {}, replayed {}, reflected {}, malformed {}, version {}, unknown node {}",
        c.forged, c.replayed, c.reflected, c.malformed, c.version, c.unknown_node
    );
    match &t.last_takeover {
        Some(l) => {
            let silent = l.twin_silent_ms.map_or_else(
                || "never heard".to_owned(),
                |ms| format!("twin silent {ms} ms"),
            );
            let _ = writeln!(
                out,
                "last takeover: {:?}, term {}, {}; {silent}, decision to claim {} ms (probe {} ms, {} attempts)",
                l.cause,
                l.term,
                date_time_and_age(now.saturating_sub(l.ago_ms), now),
                l.decision_to_claim_ms,
                l.probe_ms,
                l.attempts
            );
        }
        None => {
            let _ = writeln!(out, "last takeover: none");
        }
    }
    if let Some(r) = &info.replication {
        render_replication(out, r);
    }
}

/// The replication lines of `show twin`.
fn render_replication(out: &mut String, r: &replica::View) {
    let sync = match r.sync {
        replica::Sync::Cold => "cold standby (nothing replicated)",
        replica::Sync::NotConnected => "NOT CONNECTED",
        replica::Sync::Syncing => "syncing",
        replica::Sync::Synced => "synced",
    };
    let lag = r
        .lag_ms
        .map_or_else(String::new, |ms| format!(", oldest unconfirmed {ms} ms"));
    let _ = writeln!(
        out,
        "replication: {sync}; position {}, sent {}, twin holds {}, received {}; lag {} records{lag}",
        r.position, r.sent_seq, r.acked_seq, r.received_seq, r.lag_records
    );
    let snapshot = r.last_snapshot.map_or_else(
        || "none taken".to_owned(),
        |(records, ms)| format!("last taken {records} records in {ms} ms"),
    );
    let _ = writeln!(
        out,
        "records:     applied {}, stale {}, refused {}; snapshots sent {}, taken {} ({snapshot})",
        r.records_applied, r.stale_dropped, r.rejected, r.snapshots_sent, r.snapshots_received
    );
    if let Some(why) = &r.last_rejected {
        let _ = writeln!(out, "last refused: {why}");
    }
    if let Some(reason) = r.last_close {
        let _ = writeln!(out, "last connection ended: {reason}");
    }
    if let Some(seq) = r.switchover_waiting_for {
        let _ = writeln!(
            out,
            "switchover:  waiting for the twin to hold record {seq}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallInfo, RegistrationInfo};

    /// 2026-11-30 16:40:28.671 UTC: the tests' wall clock.
    const NOW: u64 = 1_796_056_828_671;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        assert!(matches!(terminal_safe("abc@example.com"), Cow::Borrowed(_)));
        assert_eq!(terminal_safe("a\u{1b}[2Jb"), "a\\x1b[2Jb");
        assert_eq!(
            terminal_safe("\0\u{7}\t\r\n\u{7f}"),
            "\\x00\\x07\\x09\\x0d\\x0a\\x7f"
        );
        // C1 (CSI is U+009B) and the bidi override that reverses what follows.
        assert_eq!(terminal_safe("x\u{9b}31m\u{85}"), "x\\x9b31m\\x85");
        assert_eq!(terminal_safe("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        // Printable non-ASCII is shown as it is.
        assert_eq!(terminal_safe("Zoë ☎ 電話"), "Zoë ☎ 電話");
        // Escaping is idempotent on its own output: nothing it writes is a control.
        let once = terminal_safe("\u{1b}]0;pwned\u{7}").into_owned();
        assert_eq!(terminal_safe(&once), once);
    }

    #[test]
    fn peer_strings_in_show_calls_and_registrations_cannot_drive_the_terminal() {
        let calls = Reply::Calls(vec![CallInfo {
            call_id: "abc\u{1b}[2J\u{1b}]0;owned\u{7}".into(),
            from: "sip:a@x\u{9b}1m".into(),
            to: "sip:b@y\nforged line".into(),
            state: "confirmed".into(),
            age_secs: 3,
        }]);
        let text = calls.render_text_at(NOW);
        assert!(!text.contains('\u{1b}') && !text.contains('\u{9b}') && !text.contains('\u{7}'));
        assert!(
            text.contains("call-id abc\\x1b[2J\\x1b]0;owned\\x07"),
            "{text}"
        );
        assert!(text.contains("sip:b@y\\x0aforged line"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("confirmed       3 s  sip:a@x"), "{text}");

        let regs = Reply::Registrations(vec![RegistrationInfo {
            aor: "sip:\u{1b}c@x".into(),
            contact: "<sip:\u{7f}@1.2.3.4>".into(),
            expires_in_secs: 60,
            flow: "udp 1.2.3.4:5060".into(),
            active_calls: 0,
        }]);
        let text = regs.render_text_at(NOW);
        assert!(
            text.contains("sip:\\x1bc@x  contact <sip:\\x7f@1.2.3.4>  expires in 1 min  via"),
            "{text}"
        );

        let log = Reply::Log(vec!["call ended call_id=\u{1b}[31mred".into()]).render_text_at(NOW);
        assert_eq!(log, "call ended call_id=\\x1b[31mred\n");
        let notice = Event::Notice {
            message: "\u{1b}c".into(),
        };
        assert_eq!(notice.render_text(), "%NOTICE: \\x1bc\n");
        let error = Response::Error {
            message: "bad \u{1b}".into(),
        };
        assert_eq!(error.render_text_at(NOW), "error: bad \\x1b\n");
    }

    #[test]
    fn times_are_dates_with_their_age_and_json_keeps_the_numbers() {
        let state = Reply::SystemState(crate::SystemStateInfo {
            node: "sbc-a".into(),
            state: crate::SystemState::Draining,
            since_unix_ms: NOW - 180_000,
            guard_remaining_ms: Some(12_300),
            active_sessions: 2,
            registrations: 3,
        });
        let text = state.render_text_at(NOW);
        assert!(
            text.contains("system-state:      draining\n"),
            "the word scripts grep for stays: {text}"
        );
        assert!(
            text.contains("since:             2026-11-30 16:37:28 UTC, 3 min ago\n"),
            "{text}"
        );
        assert!(text.contains("guard remaining:   12.3s"), "{text}");
        let line = crate::encode_response(&Response::Ok { reply: state });
        assert!(line.contains(r#""since_unix_ms":1796056648671"#), "{line}");

        let health = Reply::Health(crate::HealthInfo {
            uptime_secs: 7_500,
            threads: vec![],
            watchdog: None,
            recoveries: 1,
            last_recovery: None,
        });
        assert!(
            health
                .render_text_at(NOW)
                .contains("uptime:      2 h 5 min (since 2026-11-30 14:35:28 UTC)"),
            "{}",
            health.render_text_at(NOW)
        );
    }

    #[test]
    fn upstreams_show_their_last_probe_and_its_answer() {
        let upstream = |uri: &str, status: &str, last_probe| crate::UpstreamInfo {
            uri: uri.into(),
            priority: 1,
            status: status.into(),
            back_in_secs: None,
            failures: 0,
            last_probe,
        };
        let ups = Reply::Upstreams(vec![
            upstream(
                "sip:core-a",
                "in-rotation",
                Some(crate::ProbeInfo {
                    at_unix_ms: NOW - 12_000,
                    code: Some(200),
                }),
            ),
            crate::UpstreamInfo {
                back_in_secs: Some(90),
                ..upstream(
                    "sip:core-b",
                    "out",
                    Some(crate::ProbeInfo {
                        at_unix_ms: NOW - 3_000,
                        code: Some(503),
                    }),
                )
            },
            upstream(
                "sip:core-c",
                "late",
                Some(crate::ProbeInfo {
                    at_unix_ms: NOW - 45_000,
                    code: None,
                }),
            ),
            upstream("sip:core-d", "in-rotation", None),
            upstream(
                "sip:core-e",
                "in-rotation",
                Some(crate::ProbeInfo {
                    at_unix_ms: NOW,
                    code: Some(699),
                }),
            ),
        ]);
        let text = ups.render_text_at(NOW);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "  prio 1   in-rotation   failures 0  sip:core-a",
                "      last probe: 200 OK at 2026-11-30 16:40:16 UTC, 12 s ago",
                "  prio 1   out          (back in 1 min)  failures 0  sip:core-b",
                "      last probe: 503 Service Unavailable at 2026-11-30 16:40:25 UTC, 3 s ago",
                "  prio 1   late          failures 0  sip:core-c",
                "      last probe: timeout (no answer) at 2026-11-30 16:39:43 UTC, 45 s ago",
                "  prio 1   in-rotation   failures 0  sip:core-d",
                "      last probe: none yet",
                "  prio 1   in-rotation   failures 0  sip:core-e",
                "      last probe: 699 at 2026-11-30 16:40:28 UTC, 0 s ago",
            ],
            "{text}"
        );
        let line = crate::encode_response(&Response::Ok { reply: ups });
        assert!(
            line.contains(r#""last_probe":{"at_unix_ms":1796056816671,"code":200}"#),
            "{line}"
        );
        assert!(line.contains(r#""code":null"#), "{line}");
    }

    #[test]
    fn json_keeps_them_as_json_escapes() {
        let line = crate::encode_response(&Response::Ok {
            reply: Reply::Log(vec!["a\u{1b}b\u{7f}c\u{9b}d".into()]),
        });
        assert!(line.contains(r"a\u001bb\u007fc\u009bd"), "{line}");
        assert!(!line.chars().any(|c| c.is_control() && c != '\n'), "{line}");
        match crate::decode_response(&line) {
            Ok(Response::Ok {
                reply: Reply::Log(lines),
            }) => assert_eq!(lines, ["a\u{1b}b\u{7f}c\u{9b}d"]),
            other => panic!("{other:?}"),
        }
    }
}
