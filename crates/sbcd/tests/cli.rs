//! The command line of `sbcd`: `--help` and `--version` answer and exit 0, an unknown option
//! is a usage error (exit 2) that names it.

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
