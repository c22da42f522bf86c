//! What a console login leads to, and when a session ends by itself (SPEC §5).
//!
//! Decided here, without any I/O (the shell passes time in and does the reading and writing):
//!
//! - **The factory password must go.** A login whose password is the factory one (`admin`, or
//!   the account's own name) and was checked against the configuration's hash must choose a new
//!   password before any command. Once chosen, the new hash lives on the data partition and wins
//!   over the configuration's ([`PasswordSource::Stored`]); a password an operator set in the
//!   configuration themselves (`sbc-console --hash-password`) is not the factory one and is not
//!   questioned.
//! - **What a new password must be:** typed the same twice, at least [`MIN_PASSWORD_LEN`]
//!   characters, not the old one, not the factory one, not the account's name.
//! - **Idle logout:** a session with no key pressed for `[console] idle_logout_secs` (default
//!   [`DEFAULT_IDLE_LOGOUT`]) is logged out; [`IdleLogout`] keeps the deadline.
//! - **The stored password's file format**: one Argon2 PHC string and a newline
//!   ([`parse_stored`], [`format_stored`]).
//!
//! Not here: hashing and checking passwords ([`crate::auth`]), files, terminals, sleeping.

use std::time::{Duration, Instant};

/// The factory account's password, as printed in the documentation.
pub const FACTORY_PASSWORD: &str = "admin";

/// Shortest new password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

/// `[console] idle_logout_secs` when the configuration does not say.
pub const DEFAULT_IDLE_LOGOUT: Duration = Duration::from_secs(900);

/// Longest idle logout the configuration may ask for (a day): a console left logged in for
/// longer is a console left open.
pub const MAX_IDLE_LOGOUT: Duration = Duration::from_secs(86_400);

/// Name of the stored password's file in the state directory (`[state] dir`).
pub const STORED_PASSWORD_FILE: &str = "console-password";

/// Which hash a successful login was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    /// `[console] password_hash` of the configuration (nobody changed it on the box).
    Config,
    /// The hash chosen on the box, kept on the data partition.
    Stored,
}

/// What follows a successful login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLogin {
    /// The command prompt.
    Shell,
    /// A new password first; no command before it is set.
    MustChangePassword,
}

/// True for the factory password, or a password that is just the account's name.
fn is_factory(user: &str, password: &[u8]) -> bool {
    password == FACTORY_PASSWORD.as_bytes() || password == user.as_bytes()
}

/// What a login with `password` (already checked, and right) for `user` leads to.
pub fn after_login(user: &str, password: &[u8], source: PasswordSource) -> AfterLogin {
    match source {
        PasswordSource::Config if is_factory(user, password) => AfterLogin::MustChangePassword,
        // A stored password passed the rules below when it was chosen.
        PasswordSource::Config | PasswordSource::Stored => AfterLogin::Shell,
    }
}

/// Why a new password was refused; its `Display` is what the operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewPasswordError {
    #[error("the two passwords differ")]
    Mismatch,
    #[error("a password needs at least {MIN_PASSWORD_LEN} characters")]
    TooShort,
    #[error("the new password must differ from the old one")]
    Unchanged,
    #[error("the factory password or the account name cannot be the password")]
    Factory,
}

/// Checks a new password typed twice, against the account's name and the current password.
pub fn check_new_password(
    user: &str,
    current: &[u8],
    new: &[u8],
    again: &[u8],
) -> Result<(), NewPasswordError> {
    if new != again {
        return Err(NewPasswordError::Mismatch);
    }
    let chars = String::from_utf8_lossy(new).chars().count();
    if chars < MIN_PASSWORD_LEN {
        return Err(NewPasswordError::TooShort);
    }
    if new == current {
        return Err(NewPasswordError::Unchanged);
    }
    if is_factory(user, new) {
        return Err(NewPasswordError::Factory);
    }
    Ok(())
}

/// The stored password file's text for `hash`.
pub fn format_stored(hash: &str) -> String {
    format!("{hash}\n")
}

/// The hash in a stored password file, `None` when the file holds nothing usable (the shell
/// then falls back to the configuration's hash and says so in its log, never at the prompt).
pub fn parse_stored(text: &str) -> Option<&str> {
    let hash = text.trim();
    let one_line = !hash.is_empty() && !hash.contains(['\n', '\r']);
    (one_line && hash.starts_with("$argon2")).then_some(hash)
}

/// The idle logout of one session: a deadline that each key moves.
///
/// Contract: [`start`](Self::start) at login, [`activity`](Self::activity) for every input
/// from the person at the terminal (not for notices `sbcd` pushes), [`stop`](Self::stop) when
/// the session ends otherwise. The shell waits for input at most until
/// [`poll_timeout`](Self::poll_timeout) and then calls [`handle_timeout`](Self::handle_timeout),
/// which says whether to log out. Time must not go backwards; a later `now` than the deadline
/// is fine (the shell may wake late).
#[derive(Debug, Clone)]
pub struct IdleLogout {
    limit: Duration,
    deadline: Option<Instant>,
}

impl IdleLogout {
    /// `limit` is `[console] idle_logout_secs`, clamped to [`MAX_IDLE_LOGOUT`].
    pub fn new(limit: Duration) -> IdleLogout {
        IdleLogout {
            limit: limit.min(MAX_IDLE_LOGOUT),
            deadline: None,
        }
    }

    /// The idle time allowed.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// A session began at `now`.
    pub fn start(&mut self, now: Instant) {
        self.deadline = Some(now.checked_add(self.limit).unwrap_or(now));
    }

    /// The person typed something at `now`: the deadline moves (only while a session runs).
    pub fn activity(&mut self, now: Instant) {
        if self.deadline.is_some() {
            self.start(now);
        }
    }

    /// The session ended: no deadline.
    pub fn stop(&mut self) {
        self.deadline = None;
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if a session runs.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// True when the session must be logged out at `now` (once: the deadline is then gone).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.deadline {
            Some(d) if now >= d => {
                self.deadline = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated clock: a fixed origin and seconds from it.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, secs: u64) -> Instant {
            self.0 + Duration::from_secs(secs)
        }
    }

    #[test]
    fn the_factory_password_from_the_config_must_be_changed_first() {
        use AfterLogin::*;
        use PasswordSource::*;
        assert_eq!(after_login("admin", b"admin", Config), MustChangePassword);
        assert_eq!(after_login("ops", b"ops", Config), MustChangePassword);
        assert_eq!(after_login("ops", b"admin", Config), MustChangePassword);
        // The operator's own hash in the config, or one chosen on the box: straight in.
        assert_eq!(after_login("admin", b"correct horse", Config), Shell);
        assert_eq!(after_login("admin", b"correct horse", Stored), Shell);
    }

    #[test]
    fn new_passwords_are_checked() {
        use NewPasswordError::*;
        let check = |new: &str, again: &str| {
            check_new_password("admin", b"admin", new.as_bytes(), again.as_bytes())
        };
        assert_eq!(check("s3cret-pass", "s3cret-pass"), Ok(()));
        assert_eq!(check("s3cret-pass", "s3cret-pasS"), Err(Mismatch));
        assert_eq!(check("short", "short"), Err(TooShort));
        assert_eq!(check("", ""), Err(TooShort));
        // Eight characters, not eight bytes.
        assert_eq!(check("ééééééé", "ééééééé"), Err(TooShort));
        assert_eq!(check("éééééééé", "éééééééé"), Ok(()));
        assert_eq!(
            check_new_password("operator", b"oldpassword", b"oldpassword", b"oldpassword"),
            Err(Unchanged)
        );
        assert_eq!(
            check_new_password("operator", b"admin", b"operator", b"operator"),
            Err(Factory)
        );
        assert!(Factory.to_string().contains("factory"));
    }

    #[test]
    fn the_stored_file_holds_one_hash() {
        let hash = "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA";
        assert_eq!(parse_stored(&format_stored(hash)), Some(hash));
        assert_eq!(parse_stored(""), None);
        assert_eq!(parse_stored("\n"), None);
        assert_eq!(parse_stored("plaintext\n"), None);
        assert_eq!(parse_stored(&format!("{hash}\n{hash}\n")), None);
    }

    #[test]
    fn an_idle_session_is_logged_out_and_keys_keep_it_alive() {
        let clock = Clock(Instant::now());
        let mut idle = IdleLogout::new(Duration::from_secs(900));
        assert_eq!(idle.poll_timeout(), None);
        // Before a login, typing arms nothing.
        idle.activity(clock.at(5));
        assert_eq!(idle.poll_timeout(), None);
        assert!(!idle.handle_timeout(clock.at(10_000)));

        idle.start(clock.at(0));
        assert_eq!(idle.poll_timeout(), Some(clock.at(900)));
        assert!(!idle.handle_timeout(clock.at(899)));
        idle.activity(clock.at(600));
        assert_eq!(idle.poll_timeout(), Some(clock.at(1500)));
        assert!(!idle.handle_timeout(clock.at(1499)));
        // Woken late: still logged out, once.
        assert!(idle.handle_timeout(clock.at(1600)));
        assert!(!idle.handle_timeout(clock.at(1700)));
        assert_eq!(idle.poll_timeout(), None);

        idle.start(clock.at(2000));
        idle.stop();
        assert!(!idle.handle_timeout(clock.at(9000)));
    }

    #[test]
    fn a_huge_limit_cannot_overflow() {
        let mut idle = IdleLogout::new(Duration::MAX);
        assert_eq!(idle.limit(), MAX_IDLE_LOGOUT);
        let now = Instant::now();
        idle.start(now);
        assert_eq!(idle.poll_timeout(), Some(now + MAX_IDLE_LOGOUT));
    }
}
