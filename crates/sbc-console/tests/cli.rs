//! `sbc-console`'s command line: `--help` answers and exits 0, an unknown option is a usage
//! error (exit 2) that names it.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sbc-console"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running sbc-console: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn help_answers_and_an_unknown_option_is_named() {
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", text(&help));
    for word in ["--tty", "--socket", "--config", "--hash-password"] {
        assert!(text(&help).contains(word), "{word}: {}", text(&help));
    }
    let bogus = run(&["--bogus"]);
    assert_eq!(bogus.status.code(), Some(2), "{}", text(&bogus));
    assert!(text(&bogus).contains("--bogus"), "{}", text(&bogus));
    let missing = run(&["--tty"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("--tty"), "{}", text(&missing));
}
