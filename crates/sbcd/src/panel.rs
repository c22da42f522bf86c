//! The front panel: the board's button and LEDs, driven by the `board` crate's
//! [`PanelDriver`] (which runs the pure `panel` machine) on a thread of its own.
//!
//! The panel thread carries three things and decides none of them: the system state in (LEDs
//! follow it at once), completed holds out (as [`Command::Button`] to the engine, which applies
//! them to the state machine), and the control socket's `show panel` / simulated presses.
//!
//! Board profiles are found in `--board-dir`, else `/usr/share/sbc/board` (the image), else the
//! source tree's `board/` (a development host). `[panel] board = "none"` runs without a panel.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use board::driver::PanelDriver;
use board::monotonic_now;
use board::profile::{CoreSpec, Profile};
use control::{PanelInfo, Reply, Request, Response};
use panel::{Display, HoldAction, PanelEvent, StateView as PanelState, SystemView};
use system_state::SystemState;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::control_server::Ask;
use crate::engine::{Command, StateView};

/// Where the image installs board profiles.
pub const INSTALLED_BOARD_DIR: &str = "/usr/share/sbc/board";

/// How long after a simulated release the press is answered even if the panel reported no
/// gesture (e.g. the button was already down when the driver opened).
const PRESS_ANSWER_GRACE_MS: u64 = 1000;

/// Why the panel could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PanelError {
    #[error("board profile {name:?}: {source}")]
    Profile {
        name: String,
        source: board::ProfileError,
    },
    #[error("board profile {name:?} not found: no {name}/board.toml in {searched}")]
    NotFound { name: String, searched: String },
    #[error("front panel of board {name:?}: {source}")]
    Open {
        name: String,
        source: board::driver::OpenError,
    },
    #[error("cannot start the panel thread: {0}")]
    Thread(std::io::Error),
}

/// The board profile named in the configuration, if any (`none`: no board at all).
pub fn load_profile(
    config: &Config,
    board_dir: Option<&Path>,
) -> Result<Option<Profile>, PanelError> {
    let name = config.panel.board.0.as_str();
    if name == "none" {
        return Ok(None);
    }
    let candidates: Vec<PathBuf> = match board_dir {
        Some(dir) => vec![dir.to_path_buf()],
        None => vec![
            PathBuf::from(INSTALLED_BOARD_DIR),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../board"),
        ],
    };
    let Some(dir) = candidates
        .iter()
        .find(|d| d.join(name).join("board.toml").is_file())
    else {
        return Err(PanelError::NotFound {
            name: name.to_string(),
            searched: candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    board::load(dir, name)
        .map(Some)
        .map_err(|source| PanelError::Profile {
            name: name.to_string(),
            source,
        })
}

/// The SIP cores a profile names, when it names fixed ones (`host` names none).
pub fn sip_cores(profile: Option<&Profile>) -> Option<board::cpus::CpuList> {
    match &profile?.cores.sip {
        CoreSpec::List(list) => Some(list.clone()),
        CoreSpec::Host => None,
    }
}

/// The housekeeping cores a profile names, when it names fixed ones.
pub fn housekeeping_cores(profile: Option<&Profile>) -> Option<board::cpus::CpuList> {
    match &profile?.cores.housekeeping {
        CoreSpec::List(list) => Some(list.clone()),
        CoreSpec::Host => None,
    }
}

/// What the control plane sends the panel thread.
#[derive(Debug)]
enum ToPanel {
    View(SystemState, panel::TwinRole),
    Ask(Ask),
}

/// Starts the panel of `profile` (if it has one); returns where `show panel` and presses go.
pub fn start(
    config: &Config,
    profile: Option<&Profile>,
    mut view: watch::Receiver<StateView>,
    commands: mpsc::Sender<Command>,
) -> Result<Option<mpsc::Sender<Ask>>, PanelError> {
    let Some(profile) = profile else {
        return Ok(None);
    };
    let Some(spec) = &profile.panel else {
        tracing::info!(board = %profile.name, "board has no front panel");
        return Ok(None);
    };
    let mut spec = spec.clone();
    if let Some(hold) = config.panel.hold_ms {
        spec.config.hold_ms = hold.0;
    }
    let (initial, initial_role) = {
        let v = view.borrow_and_update();
        (v.state, v.role)
    };
    let driver = PanelDriver::open(&spec, system_view(initial, initial_role), monotonic_now())
        .map_err(|source| PanelError::Open {
            name: profile.name.clone(),
            source,
        })?;
    let waker = driver.waker();
    let (to_panel, from_control) = std_mpsc::channel::<ToPanel>();
    let board_name = profile.name.clone();
    let hold_ms = spec.config.hold_ms;
    std::thread::Builder::new()
        .name("panel".into())
        .spawn(move || run(driver, board_name, hold_ms, initial, from_control, commands))
        .map_err(PanelError::Thread)?;

    // State changes: forwarded as they happen, then the driver is woken so the LEDs change
    // within milliseconds (SPEC §4: within 100 ms).
    let views = to_panel.clone();
    let view_waker = waker.clone();
    tokio::spawn(async move {
        while view.changed().await.is_ok() {
            let (state, role) = {
                let v = view.borrow_and_update();
                (v.state, v.role)
            };
            if views.send(ToPanel::View(state, role)).is_err() {
                return;
            }
            view_waker.wake();
        }
    });

    let (ask_tx, mut ask_rx) = mpsc::channel::<Ask>(16);
    tokio::spawn(async move {
        while let Some(ask) = ask_rx.recv().await {
            if to_panel.send(ToPanel::Ask(ask)).is_err() {
                return;
            }
            waker.wake();
        }
    });
    tracing::info!(board = %profile.name, hold_ms = spec.config.hold_ms, "front panel running");
    Ok(Some(ask_tx))
}

fn system_view(state: SystemState, role: panel::TwinRole) -> SystemView {
    SystemView {
        role,
        state: match state {
            SystemState::Online => PanelState::Online,
            SystemState::Draining => PanelState::Draining,
            SystemState::Offline => PanelState::Offline,
        },
        ..SystemView::default()
    }
}

/// A simulated press waiting for its gesture, to answer the request that made it.
struct PendingPress {
    reply: oneshot::Sender<Response>,
    answer_by: panel::Instant,
}

/// The panel thread: step the driver, carry events out, sleep until the next deadline or a
/// wake-up (a view, a request, a button edge).
fn run(
    mut driver: PanelDriver,
    board_name: String,
    hold_ms: u64,
    mut state: SystemState,
    inbox: std_mpsc::Receiver<ToPanel>,
    commands: mpsc::Sender<Command>,
) {
    let mut pending: Option<PendingPress> = None;
    loop {
        let now = monotonic_now();
        loop {
            match inbox.try_recv() {
                Ok(ToPanel::View(s, role)) => {
                    state = s;
                    driver.set_view(now, system_view(s, role));
                }
                Ok(ToPanel::Ask(ask)) => {
                    answer(&mut driver, &board_name, state, ask, now, &mut pending)
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
                // The control plane is gone: the daemon is ending.
                Err(std_mpsc::TryRecvError::Disconnected) => return,
            }
        }
        for event in driver.step(now) {
            match event {
                PanelEvent::Hold { action, held_ms } => {
                    tracing::info!(action = ?action, held_ms, "panel button held");
                    let reply = pending.take().map(|p| p.reply);
                    if commands
                        .blocking_send(Command::Button { action, reply })
                        .is_err()
                    {
                        return;
                    }
                }
                PanelEvent::ShortPress => {
                    tracing::info!("panel button short press: showing the state");
                    if let Some(p) = pending.take() {
                        let _ = p.reply.send(done(format!(
                            "short press: state unchanged ({state}); hold at least {hold_ms} ms to change it"
                        )));
                    }
                }
                PanelEvent::HoldArmed(action) => {
                    tracing::info!(action = ?action, "panel button held past the threshold");
                }
                PanelEvent::Pressed => tracing::debug!("panel button pressed"),
            }
        }
        if let Some(p) = pending.take() {
            if now >= p.answer_by {
                let _ = p
                    .reply
                    .send(done("button pressed and released; no gesture".into()));
            } else {
                pending = Some(p);
            }
        }
        let mut wake_at = driver.next_wakeup(now);
        if let Some(p) = &pending {
            wake_at = wake_at.min(p.answer_by);
        }
        if let Err(e) = driver.wait_until(wake_at) {
            tracing::error!(error = %e, "panel wait failed; panel stopped");
            return;
        }
    }
}

fn done(message: String) -> Response {
    Response::Ok {
        reply: Reply::Done { message },
    }
}

fn answer(
    driver: &mut PanelDriver,
    board_name: &str,
    state: SystemState,
    ask: Ask,
    now: panel::Instant,
    pending: &mut Option<PendingPress>,
) {
    let response = match ask.request {
        Request::ShowPanel => {
            let status = driver.status();
            let p = status.panel;
            let pattern = match p.display {
                Display::LampTest => "lamp-test".to_string(),
                Display::Hint(HoldAction::StartDrain) => "hint: release starts a drain".into(),
                Display::Hint(HoldAction::GoOnline) => "hint: release goes online".into(),
                Display::Blank => "blank".into(),
                Display::State => state.to_string(),
            };
            Response::Ok {
                reply: Reply::Panel(PanelInfo {
                    board: board_name.to_string(),
                    simulated: status.simulated,
                    // On the sim board, what was written to the pins; elsewhere what the
                    // panel drives (the LED class files are read back by the QEMU tests).
                    green: status.pins.unwrap_or(p.leds).online,
                    amber: status.pins.unwrap_or(p.leds).draining,
                    red: status.pins.unwrap_or(p.leds).offline,
                    pattern,
                    button_pressed: p.pressed,
                    release_will: p.hold_armed.then(|| {
                        match HoldAction::for_state(p.view.state) {
                            HoldAction::StartDrain => "start a drain",
                            HoldAction::GoOnline => "go online",
                        }
                        .to_string()
                    }),
                }),
            }
        }
        Request::PanelPress { hold_ms } => match driver.sim() {
            None => Response::Error {
                message: format!(
                    "board {board_name} has a real button; press it (or use QMP in QEMU)"
                ),
            },
            Some(_) if pending.is_some() => Response::Error {
                message: "a simulated press is already in progress".into(),
            },
            Some(sim) => match sim.press_for(hold_ms) {
                Ok(()) => {
                    // Answered when the panel reports the gesture (after the release).
                    *pending = Some(PendingPress {
                        reply: ask.reply,
                        answer_by: now.after_ms(hold_ms.saturating_add(PRESS_ANSWER_GRACE_MS)),
                    });
                    return;
                }
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            },
        },
        other => Response::Error {
            message: format!("the panel does not answer {other:?}"),
        },
    };
    let _ = ask.reply.send(response);
}

/// `sbcd --panel-alarm`: shows "engine down" (red, blinking fast) on the board's LEDs until
/// killed. systemd runs it while sbcd is down or restarting (docs/panel.md): the LEDs then
/// never claim a state that no engine is serving.
pub fn run_alarm(config: &Config, board_dir: Option<&Path>) -> Result<(), PanelError> {
    let Some(profile) = load_profile(config, board_dir)? else {
        return Ok(());
    };
    let Some(spec) = &profile.panel else {
        return Ok(());
    };
    let mut spec = spec.clone();
    // No lamp test: the alarm must show at once, and the panel is not powering on.
    spec.config.lamp_test_ms = 0;
    let view = SystemView {
        engine: panel::EngineHealth::Down,
        ..SystemView::default()
    };
    let mut driver =
        PanelDriver::open(&spec, view, monotonic_now()).map_err(|source| PanelError::Open {
            name: profile.name.clone(),
            source,
        })?;
    // The alarm on the LEDs before anything (the test port included) reads them.
    let _ = driver.step(monotonic_now());
    #[cfg(feature = "testport")]
    crate::testport::start(crate::testport::Role::PanelAlarm);
    loop {
        let now = monotonic_now();
        // Presses are ignored: with no engine there is no state to change.
        let _ = driver.step(now);
        if let Err(e) = driver.wait_until(driver.next_wakeup(now)) {
            tracing::error!(error = %e, "panel wait failed; alarm stopped");
            return Ok(());
        }
    }
}
