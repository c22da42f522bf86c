//! Where log lines go: journald (structured fields) under systemd, stderr elsewhere, and a ring
//! of recent lines for `show log`.
//!
//! systemd sets `JOURNAL_STREAM` for a service whose output goes to the journal; that is the
//! signal to log natively to journald so fields (`FROM`, `TO`, `CAUSE`, `CALL_ID`, ...) stay
//! searchable. The filter comes from `SBCD_LOG` (then `RUST_LOG`), default `info`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How many recent lines `show log` can return.
const RECENT_LINES: usize = 1000;

/// The most recent log lines (info and above), oldest first.
#[derive(Debug, Default)]
pub struct Recent {
    lines: Mutex<VecDeque<String>>,
}

impl Recent {
    /// The last `n` lines.
    pub fn last(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let skip = lines.len().saturating_sub(n);
        lines.iter().skip(skip).cloned().collect()
    }

    /// A buffer for the next line: the oldest line's once the ring is full (its room reused,
    /// so a busy box allocates nothing per line), else a new one.
    fn buffer(&self) -> String {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() < RECENT_LINES {
            return String::with_capacity(128);
        }
        let mut line = lines.pop_front().unwrap_or_default();
        line.clear();
        line
    }

    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == RECENT_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

/// Which sink was chosen, for the first log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journald,
    Stderr,
}

/// Installs the global subscriber. Call once, first thing.
pub fn init() -> (Arc<Recent>, Sink) {
    let recent = Arc::new(Recent::default());
    let filter = || {
        EnvFilter::try_from_env("SBCD_LOG")
            .or_else(|_| EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journald) => {
                let _ = tracing_subscriber::registry()
                    .with(
                        journald
                            .with_syslog_identifier("sbcd".into())
                            .with_filter(filter()),
                    )
                    .with(ring_layer(&recent))
                    .try_init();
                return (recent, Sink::Journald);
            }
            Err(e) => eprintln!("sbcd: journald not reachable ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter()),
        )
        .with(ring_layer(&recent))
        .try_init();
    (recent, Sink::Stderr)
}

/// The ring's layer, filtered by level (not just checked in `on_event`): an unfiltered layer
/// would make every debug and trace call site live, so each one on the wire path would build
/// and dispatch an event only to have it thrown away.
fn ring_layer<S>(recent: &Arc<Recent>) -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    RecentLayer(Arc::clone(recent)).with_filter(LevelFilter::INFO)
}

/// Copies info-and-above events into [`Recent`] as plain lines (installed behind an INFO filter).
struct RecentLayer(Arc<Recent>);

impl<S: Subscriber> Layer<S> for RecentLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::INFO {
            return;
        }
        // `HH:MM:SS.mmm LEVEL message name=value...`, written into a reused buffer; the
        // fields other than the message go to a scratch of this thread's and follow it.
        let mut line = self.0.buffer();
        write_utc_clock(&mut line);
        let _ = write!(line, " {level:<5} ");
        REST.with_borrow_mut(|rest| {
            rest.clear();
            event.record(&mut Fields {
                message: &mut line,
                rest,
            });
            line.push_str(rest);
        });
        self.0.push(line);
    }
}

thread_local! {
    /// The fields after the message, while one line is written.
    static REST: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

struct Fields<'a> {
    message: &'a mut String,
    rest: &'a mut String,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={:?}", field.name(), value);
        }
    }
}

/// `HH:MM:SS.mmmZ` UTC: enough to read a recent log without pulling in a calendar.
fn write_utc_clock(line: &mut String) {
    let ms = crate::engine::unix_ms();
    let secs = ms / 1000;
    let _ = write!(
        line,
        "{:02}:{:02}:{:02}.{:03}Z",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        ms % 1000
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_lines_in_order_with_time_level_message_and_fields() {
        let recent = Arc::new(Recent::default());
        let subscriber = tracing_subscriber::registry().with(ring_layer(&recent));
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..RECENT_LINES + 5 {
                tracing::info!(n, call_id = %"a@b", cause = ?Some(1), "call ended");
            }
            tracing::debug!("below the ring's level");
            tracing::warn!(upstream = "sip:10.0.0.1", "upstream out of rotation");
        });
        let all = recent.last(usize::MAX);
        assert_eq!(all.len(), RECENT_LINES);
        let first = &all[0];
        // 12:34:56.789Z
        assert_eq!(first.as_bytes()[12], b'Z', "{first}");
        assert_eq!(
            &first[13..],
            " INFO  call ended n=6 call_id=a@b cause=Some(1)",
            "the five oldest lines are gone, the sixth is first"
        );
        assert_eq!(
            &all[RECENT_LINES - 1][13..],
            " WARN  upstream out of rotation upstream=sip:10.0.0.1"
        );
        assert_eq!(recent.last(2)[0], all[RECENT_LINES - 2]);
    }
}
