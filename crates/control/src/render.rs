//! Text for people: how `sbcctl` (without `--json`) and the console show an answer.

use crate::{Event, Reply, Response};
use std::fmt::Write;

impl Response {
    /// The answer as an operator reads it.
    pub fn render_text(&self) -> String {
        match self {
            Response::Ok { reply } => reply.render_text(),
            Response::Error { message } => format!("error: {message}\n"),
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
            } => format!("%SYSTEM-STATE: {from} -> {to} ({reason})\n"),
            Event::Notice { message } => format!("%NOTICE: {message}\n"),
        }
    }
}

fn secs(ms: u64) -> String {
    format!("{}.{:01}s", ms / 1000, (ms % 1000) / 100)
}

impl Reply {
    /// The reply as an operator reads it, newline-terminated.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; the results are ignored for that reason.
        match self {
            Reply::SystemState(s) => {
                let _ = writeln!(out, "node:              {}", s.node);
                let _ = writeln!(out, "system-state:      {}", s.state);
                let _ = writeln!(out, "since (unix ms):   {}", s.since_unix_ms);
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
                        "  {:<10} {:>6}s  {} -> {}  call-id {}",
                        c.state, c.age_secs, c.from, c.to, c.call_id
                    );
                }
            }
            Reply::Registrations(regs) => {
                let _ = writeln!(out, "{} registration(s)", regs.len());
                for r in regs {
                    let _ = writeln!(
                        out,
                        "  {}  contact {}  expires in {}s  via {}  calls {}",
                        r.aor, r.contact, r.expires_in_secs, r.flow, r.active_calls
                    );
                }
            }
            Reply::Upstreams(ups) => {
                for u in ups {
                    let back = u
                        .back_in_secs
                        .map(|s| format!(" (back in {s}s)"))
                        .unwrap_or_default();
                    let probe = u.last_probe.as_deref().unwrap_or("-");
                    let _ = writeln!(
                        out,
                        "  prio {:<3} {:<12}{back}  failures {}  last probe {probe}  {}",
                        u.priority, u.status, u.failures, u.uri
                    );
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
                let _ = writeln!(out, "uptime:      {}s", h.uptime_secs);
                let _ = writeln!(
                    out,
                    "watchdog:    {}",
                    h.watchdog.as_deref().unwrap_or("not armed")
                );
                let _ = writeln!(out, "recoveries:  {}", h.recoveries);
                let _ = writeln!(out, "threads:");
                for t in &h.threads {
                    let _ = writeln!(
                        out,
                        "  {:<16} tid {:<7} cpus {}",
                        t.name, t.tid, t.cpus_allowed
                    );
                }
            }
            Reply::Log(lines) => {
                for l in lines {
                    let _ = writeln!(out, "{l}");
                }
            }
            Reply::Twin(t) => {
                let _ = writeln!(out, "role:        {}", t.role);
                let _ = writeln!(out, "peer:        {}", t.peer.as_deref().unwrap_or("-"));
                let _ = writeln!(
                    out,
                    "peer state:  {}",
                    t.peer_state.as_deref().unwrap_or("-")
                );
            }
            Reply::Done { message } => {
                let _ = writeln!(out, "{message}");
            }
            Reply::NotAvailable { what, why } => {
                let _ = writeln!(out, "{what}: not available: {why}");
            }
            Reply::Subscribed => out.push_str("subscribed\n"),
        }
        out
    }
}
