//! Console login: checking a name and password against the configured Argon2 hash, making new
//! hashes, and how long to wait after failures.
//!
//! Decisions made here: the password is checked even when the name is wrong, so the time taken
//! does not tell which of the two was wrong; the delay after the n-th failure in a row is
//! 2^(n-1) seconds capped at [`MAX_DELAY`], and only a successful login resets it (hanging up
//! does not, or a script could dial again to skip the wait). The shell does the sleeping.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::time::Duration;

/// Longest wait after failed logins.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// The configured console account (`[console] user`, `password_hash`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    /// An Argon2 PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    pub password_hash: String,
}

/// Why a hash could not be used or made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("console password hash is not a valid Argon2 PHC string: {0}")]
    BadHash(String),
    #[error("cannot hash the password: {0}")]
    Hashing(String),
}

impl Account {
    /// Checks that the configured hash can be used at all (so a config error is reported at
    /// start, not as a refused login).
    pub fn validate(&self) -> Result<(), AuthError> {
        self.parsed().map(|_| ())
    }

    fn parsed(&self) -> Result<PasswordHash<'_>, AuthError> {
        let bad = |e: String| AuthError::BadHash(e);
        let parsed = PasswordHash::new(&self.password_hash).map_err(|e| bad(e.to_string()))?;
        Algorithm::try_from(parsed.algorithm)
            .map_err(|_| bad(format!("algorithm {} is not argon2", parsed.algorithm)))?;
        Params::try_from(&parsed).map_err(|e| bad(e.to_string()))?;
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err(bad("salt or hash missing".to_string()));
        }
        Ok(parsed)
    }

    /// True when `user` and `password` are this account's.
    pub fn check(&self, user: &str, password: &[u8]) -> Result<bool, AuthError> {
        let parsed = self.parsed()?;
        // The hash's own parameters are used; `Argon2::default()` only supplies the code.
        let password_ok = Argon2::default().verify_password(password, &parsed).is_ok();
        Ok(password_ok && user == self.user)
    }
}

/// A new hash of `password` with the recommended Argon2id cost (19 MiB, 2 passes).
pub fn hash_password(password: &[u8]) -> Result<String, AuthError> {
    hash_with(Argon2::default(), password)
}

/// A new hash with a chosen cost; tests use a cheap one.
pub fn hash_password_with_cost(
    password: &[u8],
    memory_kib: u32,
    passes: u32,
) -> Result<String, AuthError> {
    let params =
        Params::new(memory_kib, passes, 1, None).map_err(|e| AuthError::Hashing(e.to_string()))?;
    hash_with(
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        password,
    )
}

fn hash_with(argon: Argon2<'_>, password: &[u8]) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    argon
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hashing(e.to_string()))
}

/// Failed logins in a row and the wait they cost.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    failures: u32,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle::default()
    }

    /// The wait after the `failures`-th failure in a row: 1 s, 2 s, 4 s, ... up to
    /// [`MAX_DELAY`]; nothing before the first.
    pub fn delay_after(failures: u32) -> Duration {
        match failures {
            0 => Duration::ZERO,
            n => Duration::from_secs(1u64 << (n - 1).min(16)).min(MAX_DELAY),
        }
    }

    /// Records a failure; returns how long the shell must wait before the next attempt.
    pub fn record_failure(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        Throttle::delay_after(self.failures)
    }

    /// A successful login clears the count.
    pub fn record_success(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(password: &[u8]) -> Account {
        Account {
            user: "admin".into(),
            password_hash: hash_password_with_cost(password, 64, 1).unwrap(),
        }
    }

    #[test]
    fn right_name_and_password_pass_anything_else_fails() {
        let a = account(b"s3cret");
        a.validate().unwrap();
        assert!(a.password_hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(a.check("admin", b"s3cret").unwrap());
        assert!(!a.check("admin", b"s3cre").unwrap());
        assert!(!a.check("root", b"s3cret").unwrap());
        assert!(!a.check("", b"").unwrap());
        assert!(!a.check("admin", b"\xff\x00\x1b[A").unwrap());
    }

    #[test]
    fn every_hash_has_its_own_salt() {
        assert_ne!(account(b"x").password_hash, account(b"x").password_hash);
    }

    #[test]
    fn a_bad_hash_is_a_clear_error() {
        for bad in [
            "",
            "plaintext",
            "$argon2id$v=19$m=64",
            "$5$rounds=5000$abc$def",
        ] {
            let a = Account {
                user: "admin".into(),
                password_hash: bad.into(),
            };
            assert!(a.validate().is_err(), "{bad:?}");
            assert!(a.check("admin", b"x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn delays_double_and_are_capped() {
        let mut t = Throttle::new();
        let got: Vec<u64> = (0..8).map(|_| t.record_failure().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
        for _ in 0..100 {
            assert_eq!(t.record_failure(), MAX_DELAY);
        }
        t.record_success();
        assert_eq!(t.failures(), 0);
        assert_eq!(t.record_failure(), Duration::from_secs(1));
        assert_eq!(Throttle::delay_after(0), Duration::ZERO);
        assert_eq!(Throttle::delay_after(u32::MAX), MAX_DELAY);
    }
}
