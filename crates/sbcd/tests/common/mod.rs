//! Host integration harness: a real `sbcd` on 127.0.0.1 with SIPp playing the phones and the core.
//!
//! - [`net`]: free ports, a raw UDP peer for hand-written (and malformed) SIP, a silent upstream.
//! - [`daemon`]: writes a configuration into a temporary directory, starts `sbcd`, waits for
//!   `sbcd: listening`, asks it questions through `sbcctl --json`, follows its state events.
//! - [`lab`]: the lab's peers started as a person would (`cargo xtask lab ...`), in terminals of
//!   their own.
//! - [`kamailio`]: Kamailio as an authenticating core registrar, and what its location table holds.
//! - [`netns`]: the twin lab, network namespaces made by the test (root only), and running code
//!   in them.
//! - [`twin`]: a twin pair in that lab (two sbcd, the core's SIPp), started, killed, restarted.
//! - [`sipp`]: runs SIPp with one of our scenarios (or a built-in one) and reads back its exit
//!   status, statistics, error trace and `<log>` lines.
//!
//! Nothing here sleeps for a fixed time to let something happen: every wait is for an event (a log
//! line, a bound socket, a process exit, a control answer) with a generous bound, because CI is a
//! loaded two-core machine. Every process started here is killed when its handle is dropped, so
//! a failing test leaks nothing. Traffic goes to 127.0.0.1 only, or inside the network namespaces
//! of the twin lab ([`netns`]), which the test makes and removes.

#![allow(dead_code)]
// each test binary uses a different part of the harness
// The harness's set-up failing (no port, no sipp, no temp dir) is a test failure: panicking with
// a message is the right answer there, as it is in the tests themselves.
#![allow(clippy::expect_used)]

pub mod daemon;
pub mod kamailio;
pub mod lab;
pub mod net;
pub mod netns;
pub mod sipp;
pub mod twin;

use std::time::{Duration, Instant};

/// How long anything that should happen "at once" may take on a loaded CI machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often a condition is re-checked while waiting for it.
const POLL: Duration = Duration::from_millis(20);

/// Re-checks `probe` until it yields a value, panicking with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// As [`wait_for`], for conditions whose state is worth reading when they are not met: `probe`
/// says what it saw (`Err`) or yields the value (`Ok`); after `timeout` this panics with `what`
/// and the last thing seen.
pub fn wait_for_seen<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}");
        }
        std::thread::sleep(POLL);
    }
}

/// Milliseconds since the Unix epoch, the unit of the control protocol's timestamps.
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
