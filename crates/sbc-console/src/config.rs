//! The parts of `/etc/sbc/sbc.toml` the console reads: `[node] name`, `[control] socket`,
//! `[console] user` and `password_hash`. Everything else in the file belongs to `sbcd`, which
//! checks it strictly; here other tables and keys are ignored so that the console keeps working
//! (and lets the operator in to fix things) even when the rest of the file is wrong.

use console::auth::Account;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the file is unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/sbc/sbc.toml";

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    node: NodeSection,
    #[serde(default)]
    control: ControlSection,
    #[serde(default)]
    console: ConsoleSection,
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
}

/// What the console took from the file.
#[derive(Debug)]
pub struct ConsoleConfig {
    pub node_name: Option<String>,
    pub socket: Option<PathBuf>,
    /// The account, or why nobody can log in (said at the login prompt).
    pub account: Result<Account, String>,
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
        }
    }

    fn without(reason: String) -> ConsoleConfig {
        ConsoleConfig {
            node_name: None,
            socket: None,
            account: Err(reason),
        }
    }
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
