//! The command lines of `sbcd` and `sbcctl`: `--help` and `--version` answer and exit 0, an
//! unknown option is a usage error (exit 2) that names it, and sbcctl's options may come
//! before the console command while the command's own words stay the command's.

use std::process::{Command, Output};

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("SBC_CONTROL_SOCKET")
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const SBCD: &str = env!("CARGO_BIN_EXE_sbcd");
const SBCCTL: &str = env!("CARGO_BIN_EXE_sbcctl");

#[test]
fn sbcd_answers_help_and_version_and_names_an_unknown_option() {
    let help = run(SBCD, &["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", text(&help));
    assert!(text(&help).contains("--config"), "{}", text(&help));
    let version = run(SBCD, &["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert!(text(&version).contains(env!("CARGO_PKG_VERSION")));
    let bogus = run(SBCD, &["--config", "/nonexistent", "--bogus"]);
    assert_eq!(bogus.status.code(), Some(2));
    assert!(text(&bogus).contains("--bogus"), "{}", text(&bogus));
    let missing = run(SBCD, &["--check"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("--config"), "{}", text(&missing));
}

#[test]
fn sbcctl_answers_help_with_the_commands_and_names_an_unknown_option() {
    let help = run(SBCCTL, &["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", text(&help));
    for word in ["--socket", "--json", "--yes", "--no-restart", "show calls"] {
        assert!(text(&help).contains(word), "{word}: {}", text(&help));
    }
    let version = run(SBCCTL, &["--version"]);
    assert_eq!(version.status.code(), Some(0));
    let bogus = run(SBCCTL, &["--bogus", "show", "calls"]);
    assert_eq!(bogus.status.code(), Some(2));
    assert!(text(&bogus).contains("--bogus"), "{}", text(&bogus));
    let nothing = run(SBCCTL, &[]);
    assert_eq!(nothing.status.code(), Some(2));
}

#[test]
fn sbcctl_reads_its_options_and_leaves_the_command_words_to_the_grammar() {
    let socket = "/nonexistent/sbc-control.sock";
    // Options before the command; the command reaches the socket (sbcd not running: exit 3).
    for args in [
        &["--socket", socket, "--json", "show", "calls"][..],
        &["-s", socket, "set-system-state", "offline", "guard", "120"],
        &[
            "--socket",
            socket,
            "--timeout",
            "1",
            "panel",
            "press",
            "--hold-ms",
            "10",
        ],
    ] {
        let out = run(SBCCTL, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("not running"),
            "{args:?}: {}",
            text(&out)
        );
    }
    // A command the grammar refuses is a usage error, said by the grammar.
    let out = run(SBCCTL, &["--socket", socket, "frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // `help` is the grammar's.
    let out = run(SBCCTL, &["help"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("show calls"), "{}", text(&out));
}
