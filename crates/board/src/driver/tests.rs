use std::io::Write;
use std::path::Path;

use panel::{Display, HoldAction, Leds, StateView};

use super::*;
use crate::profile;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn spec_from(toml: &str) -> PanelSpec {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let board = dir.path().join("b");
    std::fs::create_dir_all(&board).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(board.join("board.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
    let p = profile::load(dir.path(), "b").unwrap_or_else(|e| panic!("{e}"));
    p.panel.unwrap_or_else(|| panic!("no panel"))
}

fn sim_spec() -> PanelSpec {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../board");
    let p = profile::load(&repo, "sim").unwrap_or_else(|e| panic!("{e}"));
    p.panel.unwrap_or_else(|| panic!("sim has a panel"))
}

#[test]
fn the_sim_board_runs_lamp_test_hold_and_hint() {
    let mut d = PanelDriver::open(&sim_spec(), SystemView::default(), t(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let sim = d
        .sim()
        .unwrap_or_else(|| panic!("sim board has a sim panel"));
    assert_eq!(sim.leds(), Leds::ALL, "lamp test at power-on");
    assert_eq!(d.next_wakeup(t(0)), t(1000));
    assert!(d.step(t(1000)).is_empty());
    assert_eq!(sim.leds(), Leds::ONLINE);

    // What `sbcctl panel press --hold-ms 2500` does, on the test's clock.
    assert!(sim.press_at(t(5000)).is_ok());
    assert!(sim.release_at(t(7500)).is_ok());
    assert_eq!(d.step(t(5000)), vec![]);
    assert_eq!(d.next_wakeup(t(5000)), t(5020), "debounce settles");
    assert_eq!(d.step(t(5020)), vec![PanelEvent::Pressed]);
    assert_eq!(d.next_wakeup(t(5020)), t(7000), "hold threshold");
    assert_eq!(
        d.step(t(7000)),
        vec![PanelEvent::HoldArmed(HoldAction::StartDrain)]
    );
    assert_eq!(sim.leds(), Leds::DRAINING, "hint: release will drain");
    assert_eq!(
        d.status().panel.display,
        Display::Hint(HoldAction::StartDrain)
    );
    let _ = d.step(t(7500));
    assert_eq!(
        d.step(t(7520)),
        vec![PanelEvent::Hold {
            action: HoldAction::StartDrain,
            held_ms: 2500
        }]
    );
    // The daemon applies the hold and tells the driver.
    d.set_view(
        t(7530),
        SystemView {
            state: StateView::Draining,
            ..SystemView::default()
        },
    );
    assert_eq!(sim.leds(), Leds::DRAINING);
    let _ = d.step(t(8030));
    assert_eq!(sim.leds(), Leds::OFF, "1 Hz blink");

    let status = d.status();
    assert_eq!(status.config.hold_ms, 2000);
    assert_eq!(d.config().hold_ms, 2000);
    assert!(status.simulated);
    assert!(status.button.contains("simulated"));
    assert!(status.leds.iter().all(|l| l.contains("simulated")));
    assert!(status.to_string().contains("draining off (simulated LED)"));
    assert_eq!(
        status.pins,
        Some(sim.leds()),
        "show panel reads what the pins were given"
    );
}

#[test]
fn the_driver_can_move_to_its_own_thread() {
    fn send<T: Send>() {}
    send::<PanelDriver>();
    send::<PanelWaker>();
    send::<SimPanel>();
}

#[test]
fn a_wake_interrupts_the_wait() {
    let d = PanelDriver::open(&sim_spec(), SystemView::default(), monotonic_now())
        .unwrap_or_else(|e| panic!("{e}"));
    d.waker().wake();
    let before = std::time::Instant::now();
    assert!(d.wait_until(monotonic_now().after_ms(60_000)).is_ok());
    assert!(before.elapsed() < std::time::Duration::from_secs(30));
}

/// A sysfs and /dev tree in a temporary directory: three LED class LEDs and an
/// "input device" that is a plain file the test appends event records to.
struct FakeSys {
    _dir: tempfile::TempDir,
    roots: SysRoots,
    events: std::fs::File,
}

impl FakeSys {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let roots = SysRoots {
            leds_class: dir.path().join("leds"),
            input_class: dir.path().join("input"),
            dev_input: dir.path().join("dev"),
        };
        let mk = |p: &Path| std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{e}"));
        for led in ["input3::numlock", "input3::capslock", "input3::scrolllock"] {
            let d = roots.leds_class.join(led);
            mk(&d);
            std::fs::write(d.join("brightness"), "0\n").unwrap_or_else(|e| panic!("{e}"));
        }
        let dev = roots.input_class.join("event2/device");
        mk(&dev.join("capabilities"));
        std::fs::write(dev.join("name"), "AT Translated Set 2 keyboard\n")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dev.join("capabilities/key"), "1000000 ffffffffffffffff\n")
            .unwrap_or_else(|e| panic!("{e}"));
        mk(&roots.dev_input);
        let events =
            std::fs::File::create(roots.dev_input.join("event2")).unwrap_or_else(|e| panic!("{e}"));
        FakeSys {
            _dir: dir,
            roots,
            events,
        }
    }

    fn key(&mut self, code: u16, value: i32) {
        let mut r = [0u8; 24];
        r[16..18].copy_from_slice(&1u16.to_ne_bytes());
        r[18..20].copy_from_slice(&code.to_ne_bytes());
        r[20..24].copy_from_slice(&value.to_ne_bytes());
        self.events.write_all(&r).unwrap_or_else(|e| panic!("{e}"));
    }

    fn leds(&self) -> Leds {
        let lit = |name: &str| {
            crate::ledclass::read_brightness(&self.roots.leds_class, name).ok() == Some(1)
        };
        Leds {
            online: lit("input3::numlock"),
            draining: lit("input3::capslock"),
            offline: lit("input3::scrolllock"),
        }
    }
}

#[test]
fn evdev_key_and_led_class_leds_from_a_qemu_like_profile() {
    let spec = spec_from(
        r#"
[cores]
housekeeping = "0"
sip = "1"
[panel]
lamp_test_ms = 0
[panel.button]
backend = "evdev"
key = "KEY_F12"
device = "AT Translated Set 2 keyboard"
grab = false
[panel.leds.online]
backend = "led-class"
name = "input*::numlock"
[panel.leds.draining]
backend = "led-class"
name = "input*::capslock"
[panel.leds.offline]
backend = "led-class"
name = "input*::scrolllock"
"#,
    );
    let mut sys = FakeSys::new();
    let view = SystemView {
        state: StateView::Offline,
        ..SystemView::default()
    };
    let mut d =
        PanelDriver::open_in(&spec, &sys.roots, view, t(0)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sys.leds(), Leds::OFFLINE);
    assert!(d.status().button.contains("KEY_F12"));
    assert!(!d.status().simulated);
    assert_eq!(
        d.status().pins,
        None,
        "real LEDs are read back from their own files"
    );

    // Auto-repeat and other keys are ignored; F12 down and up are not.
    sys.key(30, 1);
    sys.key(88, 1);
    sys.key(88, 2);
    assert!(d.step(t(1000)).is_empty());
    assert_eq!(d.step(t(1020)), vec![PanelEvent::Pressed]);
    assert_eq!(
        d.step(t(3000)),
        vec![PanelEvent::HoldArmed(HoldAction::GoOnline)]
    );
    assert_eq!(sys.leds(), Leds::ONLINE, "hint: release goes online");
    sys.key(88, 0);
    let _ = d.step(t(3300));
    assert_eq!(
        d.step(t(3320)),
        vec![PanelEvent::Hold {
            action: HoldAction::GoOnline,
            held_ms: 2300
        }]
    );
    d.set_view(t(3330), SystemView::default());
    assert_eq!(sys.leds(), Leds::ONLINE);
    assert_eq!(d.status().led_write_errors, 0);
}

#[test]
fn a_missing_device_is_an_open_error() {
    let spec = spec_from(
        "[cores]\nhousekeeping = \"0\"\nsip = \"1\"\n[panel.button]\nbackend = \"evdev\"\n\
         key = \"KEY_RESTART\"\n[panel.leds.online]\nbackend = \"sim\"\n\
         [panel.leds.draining]\nbackend = \"sim\"\n[panel.leds.offline]\nbackend = \"sim\"\n",
    );
    let sys = FakeSys::new();
    let err = PanelDriver::open_in(&spec, &sys.roots, SystemView::default(), t(0))
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("KEY_RESTART")));
}
