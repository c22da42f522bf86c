//! `sbc-console` driven through a pseudo-terminal as a person would: wait for the prompt, type,
//! read the answer. The protocol side is tested against a fake `sbcd` (support/mod.rs); the real
//! daemon is in `real_sbcd.rs`.

mod support;

use control::{Event, Request, SystemState, TargetState};
use std::time::{Duration, Instant};
use support::{FakeSbcd, Person, NODE, PASSWORD, USER};

#[test]
fn wrong_password_is_refused_and_slowed_then_login_works_without_sbcd() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = support::write_config(dir.path(), &socket, "[drain]\nguard_secs = 300\n");
    let mut p = Person::on_stdio(&["--config", config.to_str().unwrap()]);

    p.expect("login: ");
    p.send(format!("{USER}\r"));
    p.expect("Password: ");
    let typed = Instant::now();
    p.send("wrong-password\r");
    let shown = p.expect("Login incorrect");
    assert!(
        !shown.contains("wrong-password"),
        "password echoed: {shown:?}"
    );
    p.expect("login: ");
    assert!(
        typed.elapsed() >= Duration::from_secs(1),
        "the first failure waits a second, took {:?}",
        typed.elapsed()
    );
    // A wrong name with the right password is refused too.
    p.send(format!("root\r{PASSWORD}\r"));
    p.expect("Login incorrect");
    p.log_in();

    // No sbcd: said at login and for every command, and the console keeps working.
    let out = p.command("show calls");
    assert!(
        out.contains("sbcd is not running (no control socket at"),
        "{out:?}"
    );
    let out = p.command("help");
    assert!(
        out.contains("set-system-state offline guard <seconds>"),
        "{out:?}"
    );
    let out = p.command("shwo calls");
    assert!(out.contains("did you mean 'show'?"), "{out:?}");
    // TAB completes, `?` lists, Ctrl-U clears.
    p.send("sh\t");
    p.expect("ow ");
    p.send("reg\t");
    p.expect("istrations ");
    p.send("\x15?");
    p.expect("set-system-state");
    p.expect(&format!("{NODE}> "));
    let out = p.command("sh sys");
    assert!(out.contains("sbcd is not running"), "{out:?}");
    // History: up arrow brings the last command back.
    p.send("\x1b[A");
    p.expect("sh sys");
    p.send("\x03");
    p.expect(&format!("{NODE}> "));
}

#[test]
fn noise_and_break_leave_it_responsive() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = support::write_config(dir.path(), &socket, "");
    let mut p = Person::on_stdio(&["--config", config.to_str().unwrap()]);
    p.log_in();

    // Deterministic noise: every byte value, escape fragments, invalid UTF-8. Ctrl-D is left out
    // because on standard input it rightly ends the session.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = Vec::new();
    for _ in 0..4096 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let b = (seed >> 32) as u8;
        if b != 0x04 {
            noise.push(b);
        }
    }
    noise.extend_from_slice(b"\x1b[\x1b[1;\xff\xc3\x1bO");
    for chunk in noise.chunks(97) {
        p.send(chunk);
    }
    // A BREAK, as the line discipline delivers it in raw mode (a NUL), and as the pty may send.
    let _ = nix::sys::termios::tcsendbreak(&p.master, 0);
    p.send([0u8, 0, 0]);
    // Cancel whatever half-line the noise left, then a real command must answer.
    p.send("\x03");
    let out = p.command("show twin");
    assert!(out.contains("sbcd is not running"), "{out:?}");
    assert!(p.child.try_wait().unwrap().is_none(), "still running");
}

#[test]
fn fake_sbcd_confirmation_notices_and_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = support::write_config(dir.path(), &socket, "");
    let mut p = Person::on_stdio(&["--config", config.to_str().unwrap()]);
    p.log_in();
    let out = p.command("show system-state");
    assert!(out.contains("sbcd is not running"), "{out:?}");

    // sbcd appears: the subscription comes up by itself and says so.
    let sbcd = FakeSbcd::start(&socket);
    p.expect("%CONSOLE: connected to sbcd");
    let out = p.command("show system-state");
    assert!(out.contains("system-state:      online"), "{out:?}");
    // A time for people: the date (the fake entered its state at the epoch) and its age.
    assert!(
        out.contains("since:             1970-01-01 00:00:00 UTC, ")
            && out.contains(" d ")
            && out.contains(" ago"),
        "{out:?}"
    );

    // A service-affecting command asks first; anything but yes cancels and sends nothing.
    p.send("set-system-state offline guard 5\r");
    p.expect("Proceed? [y/N] ");
    p.send("n\r");
    p.expect("cancelled");
    p.expect(&format!("{NODE}> "));
    let sent = |r: &Request| matches!(r, Request::SetSystemState { .. });
    assert!(!sbcd.requests.lock().unwrap().iter().any(sent));
    p.send("se of g 5\r");
    p.expect("Proceed? [y/N] ");
    p.send("y\r");
    p.expect("online -> draining (guard Some(5))");
    p.expect("%SYSTEM-STATE: online -> draining (operator)");
    assert!(sbcd
        .requests
        .lock()
        .unwrap()
        .contains(&Request::SetSystemState {
            target: TargetState::Offline,
            guard_secs: Some(5)
        }));

    // A notice while a line is half typed: printed above, the line redrawn as it was.
    p.expect(&format!("{NODE}> "));
    p.send("show ca");
    p.expect("show ca");
    sbcd.push(Event::StateChanged {
        from: SystemState::Draining,
        to: SystemState::Offline,
        reason: "drained".into(),
        at_unix_ms: 2,
    });
    p.expect("\r\x1b[K%SYSTEM-STATE: draining -> offline (drained)\r\nsbc-t> show ca");
    p.send("lls\r");
    p.expect(&format!("{NODE}> "));

    // sbcd goes away: said once; it comes back: said again, and commands work.
    sbcd.stop();
    p.expect("%CONSOLE: sbcd is not running");
    let out = p.command("show system-state");
    assert!(out.contains("sbcd is not running"), "{out:?}");
    let sbcd = FakeSbcd::start(&socket);
    p.expect("%CONSOLE: connected to sbcd");
    let out = p.command("show system-state");
    assert!(out.contains("system-state:"), "{out:?}");
    assert_eq!(sbcd.subscriber_count(), 1);
}

#[test]
fn hangup_on_a_device_returns_to_the_login_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = support::write_config(dir.path(), &socket, "");
    let (mut p, slave_path) = Person::on_device(&["--config", config.to_str().unwrap()]);
    p.log_in();
    p.send("show ca");
    p.expect("show ca");

    // Hang the line up the way a dropped carrier does: every open file of the terminal is cut.
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave_path)
        .unwrap();
    hang_up(&slave);
    drop(slave);
    // The console opens the device again and asks for a login; the half-typed line is gone.
    p.log_in();
    p.send("\x04");
    p.expect("Logged out.");
    p.expect("login: ");
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "a device session never ends"
    );
}

#[test]
fn sigterm_ends_the_program_and_restores_the_terminal() {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = support::write_config(dir.path(), &socket, "");
    let mut p = Person::on_stdio(&["--config", config.to_str().unwrap()]);
    let tty = std::fs::File::open(&p.slave_path).unwrap();
    let cooked = p.initial_local_flags.unwrap();
    assert!(cooked.contains(LocalFlags::ICANON | LocalFlags::ECHO));
    p.log_in();
    let raw = tcgetattr(&tty).unwrap();
    assert!(!raw
        .local_flags
        .intersects(LocalFlags::ICANON | LocalFlags::ECHO));
    let pid = nix::unistd::Pid::from_raw(p.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(p.wait_exit().success());
    let after = tcgetattr(&tty).unwrap();
    assert_eq!(after.local_flags, cooked, "terminal restored");
}

#[test]
fn end_of_standard_input_ends_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = support::write_config(dir.path(), &socket, "");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sbc-console"))
        .args(["--config", config.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("login: "), "{shown}");
    // Nothing from the configuration before a login, not even the node name.
    assert!(!shown.contains(NODE), "{shown}");
}

#[test]
fn hash_password_makes_a_hash_the_console_accepts() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sbc-console"))
        .arg("--hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let account = console::auth::Account {
        user: "admin".into(),
        password_hash: hash.trim().into(),
    };
    assert!(account.check("admin", b"correct horse").unwrap());
}

/// `TIOCVHANGUP`: hangs a terminal up as a lost carrier would (needs CAP_SYS_ADMIN).
#[allow(unsafe_code)]
fn hang_up(tty: &std::fs::File) {
    use std::os::fd::AsRawFd;
    nix::ioctl_none_bad!(tiocvhangup, nix::libc::TIOCVHANGUP);
    // SAFETY: TIOCVHANGUP takes no argument; the descriptor is an open terminal owned by `tty`
    // for the duration of the call.
    let r = unsafe { tiocvhangup(tty.as_raw_fd()) };
    if let Err(e) = r {
        panic!("TIOCVHANGUP: {e} (the test needs root, as on the build machines)");
    }
}

#[test]
fn the_factory_password_must_be_changed_before_any_command_and_the_new_one_is_kept() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = support::write_factory_config(dir.path(), &socket, "");
    let args = ["--config", config.to_str().unwrap()];
    let mut p = Person::on_stdio(&args);

    // Before a login: no node name, nothing else from the configuration.
    let before = p.expect("login: ");
    assert!(!before.contains(NODE), "{before:?}");
    p.send("admin\r");
    p.expect("Password: ");
    p.send("admin\r");
    p.expect("choose a new one before anything else");
    p.expect("New password: ");
    // A command is not a way out: it is taken as the new password, and refused as too short.
    p.send("help\r");
    p.expect("Retype new password: ");
    p.send("help\r");
    let shown = p.expect("a password needs at least 8 characters");
    assert!(!shown.contains("set-system-state"), "{shown:?}");
    p.expect("New password: ");
    p.send("admin\radmin\r");
    p.expect("a password needs at least 8 characters");
    p.send("brand-new-pass\rbrand-new-pasS\r");
    p.expect("the two passwords differ");
    p.send("brand-new-pass\rbrand-new-pass\r");
    let shown = p.expect("Password changed.");
    assert!(!shown.contains("brand-new-pass"), "echoed: {shown:?}");
    p.expect(&format!("Logged in to {NODE}"));
    p.expect(&format!("{NODE}> "));

    // Kept on the state dir, mode 0600, and it wins over the config's hash from now on.
    let stored = dir.path().join("state").join("console-password");
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&stored)
        .unwrap()
        .starts_with("$argon2id$"));
    p.send("exit\r");
    assert!(p.wait_exit().success());

    let mut p = Person::on_stdio(&args);
    p.expect("login: ");
    p.send("admin\radmin\r");
    p.expect("Login incorrect");
    p.expect("login: ");
    p.send("admin\r");
    p.expect("Password: ");
    p.send("brand-new-pass\r");
    let shown = p.expect(&format!("{NODE}> "));
    assert!(!shown.contains("New password"), "{shown:?}");
}

#[test]
fn leaving_the_password_change_leaves_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = support::write_factory_config(dir.path(), &socket, "");
    let (mut p, _) = Person::on_device(&["--config", config.to_str().unwrap()]);
    p.expect("login: ");
    p.send("admin\radmin\r");
    p.expect("New password: ");
    p.send("\x03");
    p.expect("login: ");
    p.send("admin\radmin\r");
    p.expect("New password: ");
    p.send("\x04");
    p.expect("Logged out.");
    p.expect("login: ");
    assert!(!dir.path().join("state").join("console-password").exists());
}

#[test]
fn a_config_problem_is_not_shown_before_login() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sbc.toml");
    std::fs::write(
        &config,
        "[node]\nname = \"secret-node\"\n[console]\nuser = \"admin\"\n",
    )
    .unwrap();
    let mut p = Person::on_stdio(&["--config", config.to_str().unwrap()]);
    p.expect("login: ");
    p.send("admin\radmin\r");
    let shown = p.expect("Login incorrect");
    p.expect("login: ");
    for secret in ["secret-node", "password_hash", "sbc.toml", "[console]"] {
        assert!(!shown.contains(secret), "{secret} shown: {shown:?}");
    }
}

#[test]
fn an_idle_session_is_logged_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = support::write_config(dir.path(), &socket, "idle_logout_secs = 1\n");
    let (mut p, _) = Person::on_device(&["--config", config.to_str().unwrap()]);
    p.log_in();
    let logged_in = Instant::now();
    p.expect("No input for 1 s: logged out.");
    assert!(logged_in.elapsed() >= Duration::from_millis(900));
    p.expect("login: ");
    // A name typed and then nothing: the half login ends too.
    p.send(format!("{USER}\r"));
    p.expect("Password: ");
    p.expect("logged out.");
    p.expect("login: ");
    assert!(p.child.try_wait().unwrap().is_none());
}
