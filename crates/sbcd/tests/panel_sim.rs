//! The front panel on the `sim` board (SPEC §4), driven as an operator would through the control
//! socket: `panel press --hold-ms N` holds the simulated button, `show panel` reads the levels
//! the panel wrote to the simulated LED pins (not the panel model's wish).
//!
//! A hold of 2.5 s starts a drain (and another brings the box back online); a 0.5 s press changes
//! nothing; the LEDs follow each state change. How long they take is measured from the moment
//! sbcd stamped the state event to the first `show panel` that shows the new pattern, and printed
//! as `PANEL:` lines; the assertion itself is causal (the new pattern shows up, and only after
//! the change), since a timed bound on a loaded CI machine would measure the machine.

// Test helpers outside #[test] functions: a failed control request is the test failing.
#![allow(clippy::expect_used)]

mod common;

use std::time::Duration;

use common::daemon::{Sbcd, SbcdConfig};
use common::sipp::Sipp;
use common::{unix_ms_now, wait_for, PATIENCE};
use control::client::Client;
use control::{PanelInfo, Reply, Request, Response, SystemState};

/// One connection kept open, so polling the panel costs a round trip, not a process start.
struct PanelReader(Client);

impl PanelReader {
    fn open(sbcd: &Sbcd) -> PanelReader {
        PanelReader(
            Client::connect(&sbcd.socket(), Some(Duration::from_secs(10)))
                .expect("connect to the control socket"),
        )
    }

    fn read(&mut self) -> PanelInfo {
        match self.0.request(&Request::ShowPanel).expect("show panel") {
            Response::Ok {
                reply: Reply::Panel(p),
            } => p,
            other => panic!("show panel answered {other:?}"),
        }
    }

    /// Polls until the panel shows `pattern`; returns what it showed and when it was seen.
    fn wait_pattern(&mut self, pattern: &str) -> (PanelInfo, u64) {
        wait_for(&format!("the panel to show {pattern}"), PATIENCE, || {
            let p = self.read();
            (p.pattern == pattern).then(|| (p, unix_ms_now()))
        })
    }
}

fn press(sbcd: &Sbcd, hold_ms: u64) {
    match sbcd.ctl(&format!("panel press --hold-ms {hold_ms}")) {
        Reply::Done { .. } => {}
        other => panic!("panel press answered {other:?}"),
    }
}

#[test]
fn long_press_drains_short_press_does_nothing_and_the_leds_follow() {
    let core = Sipp::uas("uas_answer.xml").start();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));
    let mut panel = PanelReader::open(&sbcd);

    let (p, _) = panel.wait_pattern("online");
    assert!(p.simulated, "the sim board says it is a simulation");
    assert!(
        p.green && !p.amber && !p.red,
        "online is green steady: {p:?}"
    );

    // A call that is up when the drain starts keeps the box draining until it ends.
    let call = Sipp::uac("uac_call.xml", sbcd.access())
        .service("core-user")
        .key("caller", "ann")
        .calls(1)
        .hold_ms(4000)
        .start();
    wait_for("the call to be up", PATIENCE, || {
        (sbcd.system_state().active_sessions == 1).then_some(())
    });

    let watch = sbcd.watch();
    press(&sbcd, 500);
    assert_eq!(sbcd.system_state().state, SystemState::Online);
    assert!(watch.changes().is_empty(), "a short press changes nothing");
    assert_eq!(panel.read().pattern, "online");

    press(&sbcd, 2500);
    let (_, reason, changed_ms) = watch.wait_change_to(SystemState::Draining, PATIENCE);
    assert_eq!(reason, "button");
    let (p, seen_ms) = panel.wait_pattern("draining");
    assert!(!p.green && !p.red, "draining shows amber only: {p:?}");
    eprintln!(
        "PANEL: draining on the LEDs {} ms after the state change",
        seen_ms.saturating_sub(changed_ms)
    );
    // Amber blinks at 1 Hz: over a little more than a period it is seen both lit and dark.
    let (mut lit, mut dark) = (false, false);
    wait_for("amber to blink", PATIENCE, || {
        let p = panel.read();
        assert!(!p.green && !p.red, "only amber while draining: {p:?}");
        lit |= p.amber;
        dark |= !p.amber;
        (lit && dark).then_some(())
    });

    // The call finishes normally; the box goes offline after its BYE and the LEDs turn red.
    let outcome = call.wait();
    assert!(
        outcome.status.success() && outcome.successful() == 1 && outcome.failed() == 0,
        "the call accepted before the drain completes: {outcome:?}"
    );
    let (_, reason, changed_ms) = watch.wait_change_to(SystemState::Offline, PATIENCE);
    assert_eq!(reason, "drained");
    let (p, seen_ms) = panel.wait_pattern("offline");
    assert!(
        p.red && !p.green && !p.amber,
        "offline is red steady: {p:?}"
    );
    eprintln!(
        "PANEL: offline on the LEDs {} ms after the state change",
        seen_ms.saturating_sub(changed_ms)
    );

    // A long press while offline brings the box back.
    press(&sbcd, 2500);
    let (_, reason, changed_ms) = watch.wait_change_to(SystemState::Online, PATIENCE);
    assert_eq!(reason, "button");
    let (p, seen_ms) = panel.wait_pattern("online");
    assert!(p.green && !p.amber && !p.red, "online again: {p:?}");
    eprintln!(
        "PANEL: online on the LEDs {} ms after the state change",
        seen_ms.saturating_sub(changed_ms)
    );
}
