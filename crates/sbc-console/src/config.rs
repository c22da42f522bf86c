//! The parts of `/etc/sbc/sbc.toml` the console reads: `[node] name`, `[control] socket`,
//! `[state] dir` (where the password chosen on the box is kept), `[console] user`,
//! `password_hash` and `idle_logout_secs`. Everything else in the file belongs to `sbcd`, which
//! checks it strictly; here other tables and keys are ignored so that the console keeps working
//! (and lets the operator in to fix things) even when the rest of the file is wrong.
//!
//! Decided here: a bad `idle_logout_secs` does not lock the console; the default is used and
//! the error (naming key and line) goes to the log and is shown after login, never before it
//! (SPEC §5: nothing before login reveals configuration).

use console::auth::Account;
use console::login::{DEFAULT_IDLE_LOGOUT, MAX_IDLE_LOGOUT};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the file is unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/sbc/sbc.toml";

/// `[state] dir` when the file does not say (as in sbcd).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sbc";

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    node: NodeSection,
    #[serde(default)]
    control: ControlSection,
    #[serde(default)]
    console: ConsoleSection,
    #[serde(default)]
    state: StateSection,
}

#[derive(Debug, Default, Deserialize)]
struct StateSection {
    dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
struct NodeSection {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ControlSection {
    socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
struct ConsoleSection {
    user: Option<String>,
    password_hash: Option<String>,
    /// Checked on its own (see [`idle_logout`]), so that a bad value costs only itself.
    idle_logout_secs: Option<toml::Spanned<toml::Value>>,
}

/// What the console took from the file.
#[derive(Debug)]
pub struct ConsoleConfig {
    pub node_name: Option<String>,
    pub socket: Option<PathBuf>,
    /// The account, or why nobody can log in (logged; at the prompt only "Login incorrect").
    pub account: Result<Account, String>,
    /// Where the password chosen on the box is kept (`[state] dir`).
    pub state_dir: PathBuf,
    /// `[console] idle_logout_secs`.
    pub idle_logout: Duration,
    /// Problems that did not stop the console (a bad idle value): logged, and shown after login.
    pub warnings: Vec<String>,
}

impl ConsoleConfig {
    /// Reads `path`. Never fails: a problem leaves login disabled with the reason.
    pub fn load(path: &Path) -> ConsoleConfig {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                return ConsoleConfig::without(format!("cannot read {}: {e}", path.display()))
            }
        };
        ConsoleConfig::parse(&text, path)
    }

    /// Reads the text of the file at `path` (named in messages).
    pub fn parse(text: &str, path: &Path) -> ConsoleConfig {
        let file: File = match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                return ConsoleConfig::without(format!(
                    "{}: {}",
                    path.display(),
                    e.to_string().trim_end()
                ))
            }
        };
        let missing = |key: &str| {
            format!(
                "no [console] {key} in {} (make a hash with: sbc-console --hash-password)",
                path.display()
            )
        };
        let mut warnings = Vec::new();
        let idle_logout = match idle_logout(text, path, file.console.idle_logout_secs.as_ref()) {
            Ok(d) => d,
            Err(e) => {
                warnings.push(e);
                DEFAULT_IDLE_LOGOUT
            }
        };
        let account = match (file.console.user, file.console.password_hash) {
            (Some(user), Some(password_hash)) => {
                let account = Account {
                    user,
                    password_hash,
                };
                account
                    .validate()
                    .map(|()| account)
                    .map_err(|e| format!("{}: [console] password_hash: {e}", path.display()))
            }
            (None, _) => Err(missing("user")),
            (_, None) => Err(missing("password_hash")),
        };
        ConsoleConfig {
            node_name: file.node.name.filter(|n| !n.trim().is_empty()),
            socket: file.control.socket,
            account,
            state_dir: file
                .state
                .dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            idle_logout,
            warnings,
        }
    }

    fn without(reason: String) -> ConsoleConfig {
        ConsoleConfig {
            node_name: None,
            socket: None,
            account: Err(reason),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            idle_logout: DEFAULT_IDLE_LOGOUT,
            warnings: Vec::new(),
        }
    }
}

/// `[console] idle_logout_secs`: whole seconds from 1 to a day; absent, the default. An error
/// names the file, the line and the key, and says what is used instead.
fn idle_logout(
    text: &str,
    path: &Path,
    value: Option<&toml::Spanned<toml::Value>>,
) -> Result<Duration, String> {
    let Some(value) = value else {
        return Ok(DEFAULT_IDLE_LOGOUT);
    };
    let max = MAX_IDLE_LOGOUT.as_secs();
    match value.get_ref().as_integer().map(u64::try_from) {
        Some(Ok(secs)) if (1..=max).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => {
            let line = line_of(text, value.span().start);
            Err(format!(
                "{}:{line}: console.idle_logout_secs: {} is not a number of seconds from 1 to \
                 {max}; using {} s",
                path.display(),
                value.get_ref(),
                DEFAULT_IDLE_LOGOUT.as_secs()
            ))
        }
    }
}

/// The 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str =
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$0uUvFOoaLbbsjYmqhlqeBDjN6jSiEJoL5Fm4K3cK1hM";

    #[test]
    fn reads_its_keys_and_ignores_the_rest() {
        let text = format!(
            r#"
[node]
name = "sbc-a"
[[listen]]
realm = "access"
transport = "udp"
addr = "127.0.0.1:5060"
[control]
socket = "/tmp/x.sock"
[console]
user = "admin"
password_hash = "{HASH}"
[drain]
guard_secs = 300
"#
        );
        let c = ConsoleConfig::parse(&text, Path::new("sbc.toml"));
        assert_eq!(c.node_name.as_deref(), Some("sbc-a"));
        assert_eq!(c.socket, Some(PathBuf::from("/tmp/x.sock")));
        assert_eq!(c.account.unwrap().user, "admin");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/sbc"));
        assert_eq!(c.idle_logout, Duration::from_secs(900));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn idle_logout_and_state_dir_are_read_and_a_bad_value_names_key_and_line() {
        let text = format!(
            "[state]\ndir = \"/data/state\"\n[console]\nuser = \"admin\"\npassword_hash = \"{HASH}\"\nidle_logout_secs = 60\n"
        );
        let c = ConsoleConfig::parse(&text, Path::new("sbc.toml"));
        assert_eq!(c.state_dir, PathBuf::from("/data/state"));
        assert_eq!(c.idle_logout, Duration::from_secs(60));
        for bad in ["0", "-5", "86401", "\"15m\"", "1.5"] {
            let text = format!(
                "[console]\nuser = \"admin\"\npassword_hash = \"{HASH}\"\n\nidle_logout_secs = {bad}\n"
            );
            let c = ConsoleConfig::parse(&text, Path::new("sbc.toml"));
            // The console still lets the operator in, with the default.
            assert!(c.account.is_ok(), "{bad}");
            assert_eq!(c.idle_logout, Duration::from_secs(900), "{bad}");
            assert_eq!(c.warnings.len(), 1, "{bad}");
            let w = &c.warnings[0];
            assert!(
                w.starts_with("sbc.toml:5: console.idle_logout_secs: "),
                "{bad}: {w}"
            );
            assert!(w.contains("using 900 s"), "{w}");
        }
    }

    #[test]
    fn problems_leave_login_disabled_with_a_reason() {
        let c = ConsoleConfig::parse("[node]\nname = \"a\"\n", Path::new("sbc.toml"));
        assert!(c
            .account
            .unwrap_err()
            .contains("no [console] user in sbc.toml"));
        let c = ConsoleConfig::parse(
            "[console]\nuser = \"admin\"\npassword_hash = \"plain\"\n",
            Path::new("sbc.toml"),
        );
        assert!(c.account.unwrap_err().contains("password_hash"));
        let c = ConsoleConfig::parse("[console\n", Path::new("sbc.toml"));
        assert!(c.account.unwrap_err().starts_with("sbc.toml:"));
        let c = ConsoleConfig::load(Path::new("/nonexistent/sbc.toml"));
        assert!(c
            .account
            .unwrap_err()
            .contains("cannot read /nonexistent/sbc.toml"));
    }
}
