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
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = format!(
            "{} {:<5} {}{}",
            utc_clock(),
            level,
            fields.message,
            fields.rest
        );
        self.0.push(line);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
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

/// `HH:MM:SS.mmm` UTC: enough to read a recent log without pulling in a calendar.
fn utc_clock() -> String {
    let ms = crate::engine::unix_ms();
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        ms % 1000
    )
}
