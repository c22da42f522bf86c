//! The README's walkthrough (a call, the drain, a registration), run as written against sbcd on
//! this host instead of the QEMU appliance, so that its steps cannot rot.
//!
//! The steps are read from README.md's section "A walkthrough": each line of an `sh` block is a
//! command run from the workspace root as a person would type it (`cargo xtask lab ...`), each
//! `sbc-a> ` line of a `text` block a console command, run with `sbcctl` (the same grammar).
//! Only the environment differs from the appliance's: `SBC_LAB_TARGET`, `SBC_LAB_CORE_PORT` and
//! `SBC_LAB_PHONE_PORT` point the lab's peers at this sbcd's free ports, and sbcd runs the QEMU
//! appliance's drain settings (`image/board/qemu/sbc.toml`) with a probe every second.
//!
//! A person waits for what they see, so the test does too:
//! - `lab core` and `lab phone` run until the end (then Ctrl-C, to their process group); the
//!   next step waits for them to say they listen;
//! - `lab call --hold N` runs on while the next steps happen; the next step waits until it says
//!   the call was answered, and at the end it must have hung up and exited 0;
//! - any other command runs to its end and must exit 0; its `# comment`, up to any `<` or
//!   `...`, is output it promises;
//! - a console line's note `(word: ...)` names a word its answer must show, waited for (the
//!   command re-run) as a person would look again.

// A test's set-up failing (no README, no cargo) is a test failure: panicking with a message is
// the right answer there.
#![allow(clippy::expect_used)]

mod common;

use std::time::Instant;

use common::daemon::{Sbcd, SbcdConfig};
use common::lab::{build_xtask, workspace_root, Terminal};
use common::net::free_port;
use common::{wait_for_seen, PATIENCE};
use control::SystemState;

/// One step of the walkthrough, as the README writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A command line and the output its comment promises (empty when none).
    Shell { command: String, promise: String },
    /// A console command and the word its note says the answer shows (empty when none).
    Console { command: String, shows: String },
}

/// The steps of the README section whose heading starts with `### A walkthrough`.
fn walkthrough_steps(readme: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut in_section = false;
    let mut fence: Option<String> = None;
    for line in readme.lines() {
        if let Some(rest) = line.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(rest.trim().to_owned()),
            };
            continue;
        }
        match fence.as_deref() {
            None if line.starts_with('#') => {
                in_section = line.starts_with("### A walkthrough");
            }
            Some("sh") if in_section && !line.trim().is_empty() => {
                let (command, comment) = line.split_once('#').unwrap_or((line, ""));
                let promise = comment.split(['<']).next().unwrap_or_default();
                let promise = promise.split("...").next().unwrap_or_default();
                steps.push(Step::Shell {
                    command: command.trim().to_owned(),
                    promise: promise.trim().to_owned(),
                });
            }
            Some("text") if in_section => {
                if let Some(rest) = line.strip_prefix("sbc-a> ") {
                    let (command, note) = rest.split_once("  (").unwrap_or((rest, ""));
                    let shows = note
                        .split_once(':')
                        .map(|(word, _)| word.trim().to_owned())
                        .unwrap_or_default();
                    steps.push(Step::Console {
                        command: command.trim().to_owned(),
                        shows,
                    });
                }
            }
            _ => {}
        }
    }
    steps
}

/// The QEMU appliance's `[drain]` settings, which the README's promised outputs reflect.
fn appliance_drain_settings() -> (u64, u64) {
    let path = workspace_root().join("image/board/qemu/sbc.toml");
    let text = std::fs::read_to_string(&path).expect("read the appliance's sbc.toml");
    let config: toml::Table = text.parse().expect("the appliance's sbc.toml is TOML");
    let drain = config["drain"].as_table().expect("a [drain] table");
    let secs = |key: &str| {
        drain[key]
            .as_integer()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or_else(|| panic!("drain.{key} is a number of seconds"))
    };
    (secs("guard_secs"), secs("retry_after_secs"))
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README");
    let steps = walkthrough_steps(&readme);
    // What the walkthrough is for (issue 18): a call, the drain refusing a new one, a phone.
    let shows_it = |what: &str, found: &dyn Fn(&Step) -> bool| {
        assert!(
            steps.iter().any(found),
            "README's walkthrough lost {what}: {steps:?}"
        )
    };
    shows_it(
        "the held call",
        &|s| matches!(s, Step::Shell { command, .. } if command.contains("lab call --hold")),
    );
    shows_it(
        "the drain",
        &|s| matches!(s, Step::Console { command, .. } if command.starts_with("set-system-state offline")),
    );
    shows_it(
        "the refused call",
        &|s| matches!(s, Step::Shell { promise, .. } if promise.contains("503")),
    );
    shows_it(
        "the registration",
        &|s| matches!(s, Step::Shell { command, .. } if command.contains("lab register")),
    );

    build_xtask();

    let core_port = free_port();
    let mut config = SbcdConfig::with_upstreams(&[core_port]);
    (config.guard_secs, config.retry_after_secs) = appliance_drain_settings();
    let sbcd = Sbcd::start(config);
    let env = lab_env(&sbcd, core_port);

    let started = Instant::now();
    let mut running: Vec<Terminal> = Vec::new();
    let mut held_calls: Vec<Terminal> = Vec::new();
    for step in &steps {
        eprintln!("WALKTHROUGH: {:?} at {:?}", step, started.elapsed());
        match step {
            Step::Shell { command, .. } if command.starts_with("cargo xtask lab core") => {
                let mut core = Terminal::open(command, &env);
                core.wait_output("lab core: listening");
                running.push(core);
            }
            Step::Shell { command, .. } if command.starts_with("cargo xtask lab phone") => {
                let mut phone = Terminal::open(command, &env);
                phone.wait_output("answering calls");
                running.push(phone);
            }
            Step::Shell { command, .. } if command.contains("--hold") => {
                let mut call = Terminal::open(command, &env);
                call.wait_output("lab call: answered");
                held_calls.push(call);
            }
            Step::Shell { command, promise } => {
                let output = Terminal::open(command, &env).wait_exit(PATIENCE * 3);
                assert!(
                    output.contains(promise.as_str()),
                    "`{command}` promises {promise:?} in the README; it printed:\n{output}"
                );
            }
            Step::Console { command, shows } => {
                let mut last_shown = String::new();
                wait_for_seen(&format!("`{command}` to show {shows:?}"), PATIENCE, || {
                    let (ok, out, err) =
                        sbcd.ctl_raw(&command.split_whitespace().collect::<Vec<_>>());
                    if out != last_shown {
                        eprintln!("[sbc-a> {command}] {}", out.trim_end());
                        last_shown.clone_from(&out);
                    }
                    match (ok, out.contains(shows.as_str())) {
                        (true, true) => Ok(()),
                        _ => Err(format!("ok {ok}; {out}{err}")),
                    }
                });
            }
        }
    }
    for call in held_calls {
        let output = call.wait_exit(PATIENCE * 3);
        assert!(output.contains("hung up"), "the held call ended: {output}");
    }
    // The box probed the core all along and it answered: still in rotation (issue 18: SIPp's
    // built-in uas never answered, and the upstream went out at the first probe).
    let upstreams = sbcd.upstreams();
    assert!(
        upstreams.iter().all(|u| u.status == "in-rotation"),
        "{upstreams:?}"
    );
    assert!(sbcd.stat("sip.probes_sent") >= 1, "the box probed the core");
    for terminal in running {
        let output = terminal.interrupt();
        eprintln!("WALKTHROUGH: ended with Ctrl-C:\n{output}");
    }
    eprintln!(
        "WALKTHROUGH: {} steps in {:?}",
        steps.len(),
        started.elapsed()
    );
}

/// Where the lab's peers find this sbcd and its core (the appliance's addresses otherwise),
/// and the phone's port.
fn lab_env(sbcd: &Sbcd, core_port: u16) -> [(&'static str, String); 3] {
    [
        ("SBC_LAB_TARGET", sbcd.access().to_string()),
        ("SBC_LAB_CORE_PORT", core_port.to_string()),
        ("SBC_LAB_PHONE_PORT", free_port().to_string()),
    ]
}

/// The README's promise for a registered phone: it holds a drain as a call does, until it
/// registers again, which the drain refuses (rule 5) and which ends the drain.
#[test]
fn a_registered_phone_holds_the_drain_until_it_registers_again() {
    build_xtask();
    let core_port = free_port();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core_port]));
    let env = lab_env(&sbcd, core_port);
    let mut core = Terminal::open("cargo xtask lab core", &env);
    core.wait_output("lab core: listening");

    let first = Terminal::open("cargo xtask lab register", &env).wait_exit(PATIENCE * 3);
    assert!(first.contains("registered: Contact"), "{first}");
    sbcd.drain(None);
    assert_eq!(sbcd.system_state().state, SystemState::Draining);
    let again = Terminal::open("cargo xtask lab register", &env).wait_exit(PATIENCE * 3);
    assert!(
        again.contains("refused: 503 Service Unavailable"),
        "{again}"
    );
    sbcd.wait_state(SystemState::Offline, PATIENCE);
    assert!(sbcd.registrations().is_empty());
    let output = core.interrupt();
    assert!(
        output.contains("Expires 0"),
        "de-registered at the core: {output}"
    );
}

/// The README's promise for the other order: a core started after the box's probe found
/// nothing is taken into rotation at the next probe, and calls go through from then on.
#[test]
fn a_core_started_after_the_box_gave_up_on_it_is_taken_in_at_the_next_probe() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README");
    let steps = walkthrough_steps(&readme);
    let core_step = steps
        .iter()
        .find_map(|s| match s {
            Step::Shell { command, .. } if command.starts_with("cargo xtask lab core") => {
                Some(command.clone())
            }
            _ => None,
        })
        .expect("the walkthrough starts the core");
    build_xtask();

    let core_port = free_port();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core_port]));
    let env = lab_env(&sbcd, core_port);
    let status = |sbcd: &Sbcd| {
        sbcd.upstreams()
            .first()
            .map(|u| u.status.clone())
            .unwrap_or_default()
    };
    wait_for_seen("the box to take the silent core out", PATIENCE, || {
        let s = status(&sbcd);
        if s == "out" {
            Ok(())
        } else {
            Err(s)
        }
    });
    let started = Instant::now();
    let mut core = Terminal::open(&core_step, &env);
    core.wait_output("lab core: listening");
    wait_for_seen("show upstreams to say in-rotation", PATIENCE, || {
        let s = status(&sbcd);
        if s == "in-rotation" {
            Ok(())
        } else {
            Err(s)
        }
    });
    eprintln!(
        "WALKTHROUGH: the late core in rotation {:?} after it started",
        started.elapsed()
    );
    let output = Terminal::open("cargo xtask lab call", &env).wait_exit(PATIENCE * 3);
    assert!(output.contains("1 answered"), "{output}");
    core.interrupt();
}

#[test]
fn the_walkthrough_is_read_from_the_readme_as_expected() {
    let readme = "intro\n```sh\ncargo xtask qemu\n```\n### A walkthrough: x\n\
                  ```sh\ncargo xtask lab call          # refused: 503, Retry-After 60\n```\n\
                  ```text\nsbc-a> show calls     (confirmed: up)\nsbc-a> set-system-state online\n```\n\
                  ```sh\ncargo xtask lab register  # registered: Contact <sip:a@b>, ...\n```\n\
                  ### Without QEMU\n```sh\ncargo run\n```\n";
    assert_eq!(
        walkthrough_steps(readme),
        vec![
            Step::Shell {
                command: "cargo xtask lab call".into(),
                promise: "refused: 503, Retry-After 60".into()
            },
            Step::Console {
                command: "show calls".into(),
                shows: "confirmed".into()
            },
            Step::Console {
                command: "set-system-state online".into(),
                shows: String::new()
            },
            Step::Shell {
                command: "cargo xtask lab register".into(),
                promise: "registered: Contact".into()
            },
        ]
    );
}
