//! Panel scenarios on a simulated clock, and the pin adapters against mocked pins.

use embedded_hal_mock::eh1::digital::{Edge, Mock as PinMock, State, Transaction as Pin};

use crate::*;

/// A panel, a clock, and everything the panel has said.
struct Harness {
    panel: Panel,
    now: u64,
    events: Vec<(u64, PanelEvent)>,
    writes: Vec<(u64, Leds)>,
}

impl Harness {
    fn new(config: PanelConfig, view: SystemView) -> Self {
        let mut h = Harness {
            panel: Panel::new(config, view, Instant::ZERO),
            now: 0,
            events: Vec::new(),
            writes: Vec::new(),
        };
        h.drain();
        h
    }

    /// Default config without the lamp test, online, solo.
    fn online() -> Self {
        Self::new(
            PanelConfig {
                lamp_test_ms: 0,
                ..PanelConfig::default()
            },
            SystemView::default(),
        )
    }

    fn drain(&mut self) {
        while let Some(e) = self.panel.poll_event() {
            self.events.push((self.now, e));
        }
        if let Some(leds) = self.panel.poll_leds() {
            self.writes.push((self.now, leds));
        }
    }

    /// Jumps the clock from deadline to deadline up to `until`.
    fn run_until(&mut self, until: u64) {
        while let Some(t) = self.panel.poll_timeout() {
            let t = t.as_millis();
            if t > until {
                break;
            }
            assert!(t >= self.now, "deadline in the past: {t} < {}", self.now);
            self.now = t;
            self.panel.handle_timeout(Instant::from_millis(t));
            self.drain();
        }
        self.now = until;
        self.panel.handle_timeout(Instant::from_millis(until));
        self.drain();
    }

    fn button(&mut self, at: u64, pressed: bool) {
        self.run_until(at);
        self.panel.handle_button(Instant::from_millis(at), pressed);
        self.drain();
    }

    fn view(&mut self, at: u64, view: SystemView) {
        self.run_until(at);
        self.panel.handle_view(Instant::from_millis(at), view);
        self.drain();
    }

    fn leds(&self) -> Leds {
        self.panel.status().leds
    }

    fn take_events(&mut self) -> Vec<PanelEvent> {
        self.events.drain(..).map(|(_, e)| e).collect()
    }
}

fn state(state: StateView) -> SystemView {
    SystemView {
        state,
        ..SystemView::default()
    }
}

#[test]
fn power_on_runs_the_lamp_test_then_shows_the_state() {
    let mut h = Harness::new(PanelConfig::default(), state(StateView::Offline));
    assert_eq!(h.writes, vec![(0, Leds::ALL)]);
    assert_eq!(h.panel.status().display, Display::LampTest);
    h.run_until(5000);
    assert_eq!(h.writes, vec![(0, Leds::ALL), (1000, Leds::OFFLINE)]);
    assert_eq!(h.panel.poll_timeout(), None, "steady red needs no timer");
}

#[test]
fn online_is_steady_green_and_needs_no_wakeups() {
    let mut h = Harness::online();
    assert_eq!(h.writes, vec![(0, Leds::ONLINE)]);
    assert_eq!(h.panel.poll_timeout(), None);
    h.run_until(60_000);
    assert_eq!(h.writes.len(), 1);
}

#[test]
fn draining_blinks_amber_at_one_hertz() {
    let mut h = Harness::online();
    h.view(1000, state(StateView::Draining));
    h.run_until(3000);
    let amber: Vec<_> = h.writes.iter().skip(1).copied().collect();
    assert_eq!(
        amber,
        vec![
            (1000, Leds::DRAINING),
            (1500, Leds::OFF),
            (2000, Leds::DRAINING),
            (2500, Leds::OFF),
            (3000, Leds::DRAINING),
        ]
    );
}

#[test]
fn standby_blinks_green_at_half_a_hertz() {
    let mut h = Harness::online();
    h.view(
        0,
        SystemView {
            role: TwinRole::Standby,
            ..SystemView::default()
        },
    );
    h.run_until(4000);
    let times: Vec<_> = h.writes.iter().map(|&(t, l)| (t, l.online)).collect();
    assert_eq!(
        times,
        vec![
            (0, true),
            (1000, false),
            (2000, true),
            (3000, false),
            (4000, true)
        ]
    );
}

#[test]
fn engine_down_blinks_red_fast_whatever_the_state() {
    let mut h = Harness::online();
    h.view(
        100,
        SystemView {
            state: StateView::Draining,
            engine: EngineHealth::Restarting,
            ..SystemView::default()
        },
    );
    h.run_until(600);
    let reds: Vec<_> = h.writes.iter().skip(1).copied().collect();
    assert_eq!(
        reds,
        vec![
            (100, Leds::OFFLINE),
            (225, Leds::OFF),
            (350, Leds::OFFLINE),
            (475, Leds::OFF),
            (600, Leds::OFFLINE),
        ]
    );
}

#[test]
fn a_state_change_shows_at_once() {
    let mut h = Harness::online();
    h.run_until(12_345);
    h.view(12_345, state(StateView::Offline));
    assert_eq!(h.writes.last(), Some(&(12_345, Leds::OFFLINE)));
}

#[test]
fn short_press_only_reshows_the_state() {
    let mut h = Harness::online();
    h.view(0, state(StateView::Draining));
    h.button(700, true);
    h.button(900, false);
    h.run_until(1000);
    assert_eq!(
        h.take_events(),
        vec![PanelEvent::Pressed, PanelEvent::ShortPress]
    );
    // The blink restarts lit when the press is recognised (700 + 20 ms settle).
    assert!(h.writes.contains(&(720, Leds::DRAINING)));
    assert_eq!(h.panel.status().view.state, StateView::Draining);
}

#[test]
fn short_press_cuts_the_lamp_test_short() {
    let mut h = Harness::new(PanelConfig::default(), SystemView::default());
    h.button(100, true);
    h.run_until(130);
    assert_eq!(h.writes, vec![(0, Leds::ALL), (120, Leds::ONLINE)]);
}

#[test]
fn hold_is_acted_on_at_release_with_a_hint_while_held() {
    let mut h = Harness::online();
    h.button(1000, true);
    h.run_until(2999);
    assert_eq!(h.take_events(), vec![PanelEvent::Pressed]);
    assert_eq!(h.leds(), Leds::ONLINE, "no hint before the threshold");

    h.run_until(3000);
    assert_eq!(
        h.take_events(),
        vec![PanelEvent::HoldArmed(HoldAction::StartDrain)]
    );
    assert_eq!(
        h.leds(),
        Leds::DRAINING,
        "the hint shows where release leads"
    );
    assert_eq!(
        h.panel.status().display,
        Display::Hint(HoldAction::StartDrain)
    );
    h.run_until(3100);
    assert_eq!(h.leds(), Leds::OFF, "the hint flutters");

    h.button(4000, false);
    h.run_until(4020);
    assert_eq!(
        h.take_events(),
        vec![PanelEvent::Hold {
            action: HoldAction::StartDrain,
            held_ms: 3000
        }]
    );
    // The daemon applies it; the panel shows the new state.
    h.view(4030, state(StateView::Draining));
    assert_eq!(h.writes.last(), Some(&(4030, Leds::DRAINING)));
}

#[test]
fn hold_while_draining_or_offline_goes_online() {
    for s in [StateView::Draining, StateView::Offline] {
        let mut h = Harness::online();
        h.view(0, state(s));
        h.button(100, true);
        h.run_until(2150);
        assert_eq!(h.leds(), Leds::ONLINE, "hint for {s:?}");
        h.button(2500, false);
        h.run_until(2600);
        assert!(h.take_events().contains(&PanelEvent::Hold {
            action: HoldAction::GoOnline,
            held_ms: 2400
        }));
    }
}

#[test]
fn the_hint_follows_a_state_change_during_the_hold() {
    let mut h = Harness::online();
    h.view(0, state(StateView::Draining));
    h.button(0, true);
    h.run_until(2100);
    // The drain completes while the operator still holds the button.
    h.view(2100, state(StateView::Offline));
    h.button(2500, false);
    h.run_until(2600);
    let events = h.take_events();
    assert!(events.contains(&PanelEvent::Hold {
        action: HoldAction::GoOnline,
        held_ms: 2500
    }));
}

#[test]
fn hold_threshold_is_configurable_and_bounces_do_not_split_a_hold() {
    let mut h = Harness::new(
        PanelConfig {
            hold_ms: 500,
            lamp_test_ms: 0,
            ..PanelConfig::default()
        },
        SystemView::default(),
    );
    h.button(100, true);
    h.button(105, false);
    h.button(108, true);
    h.button(400, false);
    h.button(410, true);
    h.button(900, false);
    h.run_until(1000);
    assert_eq!(
        h.take_events(),
        vec![
            PanelEvent::Pressed,
            PanelEvent::HoldArmed(HoldAction::StartDrain),
            PanelEvent::Hold {
                action: HoldAction::StartDrain,
                held_ms: 792
            }
        ]
    );
}

#[test]
fn late_edge_timestamps_still_measure_the_hold() {
    // An edge backend delivering press and release in one batch, long after.
    let mut h = Harness::online();
    h.run_until(10_000);
    h.panel.handle_button(Instant::from_millis(5_000), true);
    h.panel.handle_button(Instant::from_millis(7_500), false);
    h.panel.handle_timeout(Instant::from_millis(10_000));
    h.drain();
    let events = h.take_events();
    assert!(events.contains(&PanelEvent::Hold {
        action: HoldAction::StartDrain,
        held_ms: 2500
    }));
}

#[test]
fn blanking_goes_dark_and_a_press_shows_the_state_again() {
    let mut h = Harness::new(
        PanelConfig {
            lamp_test_ms: 0,
            blank_after_ms: Some(10_000),
            ..PanelConfig::default()
        },
        SystemView::default(),
    );
    h.run_until(10_000);
    assert_eq!(h.leds(), Leds::OFF);
    assert_eq!(h.panel.status().display, Display::Blank);
    h.button(15_000, true);
    h.button(15_100, false);
    h.run_until(15_200);
    assert_eq!(h.leds(), Leds::ONLINE);
    h.run_until(25_119);
    assert_eq!(h.leds(), Leds::ONLINE);
    h.run_until(25_120);
    assert_eq!(h.leds(), Leds::OFF);
    // An engine alarm is never blanked.
    h.view(
        30_000,
        SystemView {
            engine: EngineHealth::Down,
            ..SystemView::default()
        },
    );
    h.run_until(50_000);
    assert_eq!(h.panel.status().display, Display::State);
}

#[test]
fn time_going_backwards_does_not_break_the_clock() {
    let mut h = Harness::online();
    h.view(5000, state(StateView::Draining));
    h.panel.handle_timeout(Instant::from_millis(10));
    assert!(h
        .panel
        .poll_timeout()
        .is_some_and(|t| t.as_millis() >= 5000));
}

// ---- pin adapters against embedded-hal-mock ----

#[test]
fn active_low_button_reads_low_as_pressed() {
    let expected = [
        Pin::get(State::High),
        Pin::get(State::Low),
        Pin::get(State::Low),
    ];
    let mut button = Button::new(PinMock::new(&expected), Polarity::ActiveLow);
    assert_eq!(button.is_pressed().ok(), Some(false));
    assert_eq!(button.is_pressed().ok(), Some(true));
    assert_eq!(button.is_pressed().ok(), Some(true));
    button.into_inner().done();
}

#[test]
fn led_bank_writes_levels_through_the_polarity() {
    let mut online = PinMock::new(&[Pin::set(State::Low), Pin::set(State::High)]);
    let mut draining = PinMock::new(&[Pin::set(State::High), Pin::set(State::Low)]);
    let mut offline = PinMock::new(&[Pin::set(State::Low), Pin::set(State::Low)]);
    {
        let mut bank = LedBank {
            online: Led::new(online.clone(), Polarity::ActiveHigh),
            draining: Led::new(draining.clone(), Polarity::ActiveHigh),
            offline: Led::new(offline.clone(), Polarity::ActiveHigh),
        };
        assert!(bank.write(Leds::DRAINING).is_ok());
        assert!(bank.write(Leds::ONLINE).is_ok());
    }
    online.done();
    draining.done();
    offline.done();

    let mut sinking = PinMock::new(&[Pin::set(State::Low), Pin::set(State::High)]);
    let mut led = Led::new(sinking.clone(), Polarity::ActiveLow);
    assert!(led.set(true).is_ok());
    assert!(led.set(false).is_ok());
    sinking.done();
}

/// Runs a future that never waits (the mock's `Wait` is ready at once).
fn block_on<F: core::future::Future>(fut: F) -> F::Output {
    let mut fut = core::pin::pin!(fut);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        core::task::Poll::Ready(out) => out,
        core::task::Poll::Pending => panic!("the mock pin should never be pending"),
    }
}

#[test]
fn edge_backend_waits_then_samples() {
    let expected = [
        Pin::wait_for_edge(Edge::Any),
        Pin::get(State::Low),
        Pin::wait_for_edge(Edge::Any),
        Pin::get(State::High),
    ];
    let mut button = Button::new(PinMock::new(&expected), Polarity::ActiveLow);
    assert_eq!(block_on(button.wait_for_change()).ok(), Some(true));
    assert_eq!(block_on(button.wait_for_change()).ok(), Some(false));
    button.into_inner().done();
}

/// End to end: a polled active-low pin sampled every 10 ms drives the panel,
/// whose LED output goes to three mocked pins.
#[test]
fn polled_pins_drive_a_hold_end_to_end() {
    // Up for 100 ms, down for 2500 ms, up again, sampled every 10 ms.
    let samples: Vec<(u64, State)> = (0..=300)
        .map(|i| {
            let t = i * 10;
            let down = (100..2600).contains(&t);
            (t, if down { State::Low } else { State::High })
        })
        .collect();
    let expected: Vec<Pin> = samples.iter().map(|&(_, s)| Pin::get(s)).collect();
    let mut button = Button::new(PinMock::new(&expected), Polarity::ActiveLow);

    // LED writes: power-on online; hint on (2100) and off (2200) ... until release.
    let mut panel = Panel::new(
        PanelConfig {
            lamp_test_ms: 0,
            ..PanelConfig::default()
        },
        SystemView::default(),
        Instant::ZERO,
    );
    let mut written = Vec::new();
    let mut events = Vec::new();
    for &(t, _) in &samples {
        let pressed = button.is_pressed().ok().unwrap_or(false);
        panel.handle_button(Instant::from_millis(t), pressed);
        while let Some(e) = panel.poll_event() {
            events.push(e);
        }
        if let Some(leds) = panel.poll_leds() {
            written.push(leds);
        }
    }
    button.into_inner().done();
    assert_eq!(
        events,
        vec![
            PanelEvent::Pressed,
            PanelEvent::HoldArmed(HoldAction::StartDrain),
            PanelEvent::Hold {
                action: HoldAction::StartDrain,
                held_ms: 2500
            }
        ]
    );

    // Replay the same LED levels into mocked pins.
    let level = |on: bool| if on { State::High } else { State::Low };
    let mut pins = [Leds::OFF; 3].map(|_| Vec::new());
    for l in &written {
        pins[0].push(Pin::set(level(l.online)));
        pins[1].push(Pin::set(level(l.draining)));
        pins[2].push(Pin::set(level(l.offline)));
    }
    let [mut g, mut a, mut r] = pins.map(|t| PinMock::new(&t));
    let mut bank = LedBank {
        online: Led::new(g.clone(), Polarity::ActiveHigh),
        draining: Led::new(a.clone(), Polarity::ActiveHigh),
        offline: Led::new(r.clone(), Polarity::ActiveHigh),
    };
    for l in &written {
        assert!(bank.write(*l).is_ok());
    }
    g.done();
    a.done();
    r.done();
    assert_eq!(written.first(), Some(&Leds::ONLINE));
    assert!(written.contains(&Leds::DRAINING), "hint shown while held");
    assert_eq!(
        written.last(),
        Some(&Leds::ONLINE),
        "back to the state after release"
    );
}
