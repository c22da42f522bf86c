//! `sbc-console` against the real `sbcd` (crates/sbcd): drain with confirmation, the state
//! notices it pushes, the state surviving a restart of `sbcd`, and the console reconnecting.
//!
//! `sbcd` belongs to another package, so Cargo does not build it for this test: the test builds
//! it with the same `cargo` and target directory (a no-op when it is up to date). It fails, never
//! skips, when `sbcd` cannot be built.

// Test harness: a failed setup step must fail the test loudly, which is what unwrap does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Person, NODE};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `sbcd` where this test's own binaries are and returns its path.
fn sbcd_binary() -> PathBuf {
    let root = workspace_root();
    assert!(
        root.join("crates/sbcd/Cargo.toml").is_file(),
        "crates/sbcd is missing: this test needs the real daemon"
    );
    // This test runs from <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", "sbcd", "--bin", "sbcd"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        build.arg("--release");
    }
    let status = build.status().unwrap();
    assert!(status.success(), "cargo build -p sbcd failed: {status}");
    let bin = profile_dir.join("sbcd");
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sbcd {
    child: Child,
}

impl Sbcd {
    fn start(bin: &Path, config: &Path, socket: &Path, log: &Path) -> Sbcd {
        let _ = std::fs::remove_file(socket);
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(bin)
            .args(["--config", config.to_str().unwrap(), "--board-dir"])
            .arg(workspace_root().join("board"))
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut sbcd = Sbcd { child };
        let deadline = Instant::now() + support::WAIT;
        while !socket.exists() {
            if let Some(status) = sbcd.child.try_wait().unwrap() {
                panic!("sbcd exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "sbcd made no control socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        sbcd
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sbcd {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn drain_with_confirmation_survives_an_sbcd_restart() {
    let bin = sbcd_binary();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    // write_config puts the state dir here, for the console's password and sbcd's state alike.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let extra = format!(
        r#"[[listen]]
realm = "access"
transport = "udp"
addr = "127.0.0.1:{}"

[[listen]]
realm = "core"
transport = "udp"
addr = "127.0.0.1:{}"

[[upstream]]
uri = "sip:127.0.0.1:{};transport=udp"
priority = 1

[drain]
guard_secs = 300

[panel]
board = "sim"
"#,
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let config = support::write_config(dir.path(), &socket, &extra);
    let log = dir.path().join("sbcd.log");
    let mut sbcd = Sbcd::start(&bin, &config, &socket, &log);

    let mut p = Person::on_stdio(&["--config", config.to_str().unwrap()]);
    p.expect("login: ");
    p.send(format!("{}\r", support::USER));
    p.expect("Password: ");
    p.send(format!("{}\r", support::PASSWORD));
    p.expect("system-state: online");
    p.expect(&format!("{NODE}> "));

    // The drain asks first, then the notices follow: an idle box drains at once (rule 10).
    p.send("set-system-state offline\r");
    p.expect("Proceed? [y/N] ");
    p.send("y\r");
    p.expect("%SYSTEM-STATE: online -> draining (operator)");
    p.expect("%SYSTEM-STATE: draining -> offline (drained)");
    let out = p.command("show system-state");
    assert!(out.contains("offline"), "{out:?}");

    // The intent reaches the disk (on sbcd's persister thread, shortly after the notice);
    // killing sbcd before that would test the race, not the console.
    let saved = state.join(system_state::persist::FILE_NAME);
    let deadline = Instant::now() + support::WAIT;
    while !std::fs::read_to_string(&saved).is_ok_and(|s| s.contains("\"intent\":\"offline\"")) {
        assert!(
            Instant::now() < deadline,
            "sbcd did not save the offline intent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // sbcd dies: the console says so and keeps working.
    sbcd.kill();
    p.expect("%CONSOLE: sbcd is not running");
    let out = p.command("show calls");
    assert!(out.contains("sbcd is not running"), "{out:?}");

    // sbcd comes back: the console reconnects, and the box stayed offline (SPEC §2).
    let _sbcd = Sbcd::start(&bin, &config, &socket, &dir.path().join("sbcd-2.log"));
    p.expect("%CONSOLE: connected to sbcd");
    let out = p.command("show system-state");
    assert!(out.contains("system-state:      offline"), "{out:?}");
    p.send("set-system-state online\r");
    p.expect("Proceed? [y/N] ");
    p.send("yes\r");
    p.expect("%SYSTEM-STATE: offline -> online (operator)");
}
