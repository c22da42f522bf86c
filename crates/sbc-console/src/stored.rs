//! The console password chosen on the box: one file in the state directory (`[state] dir`, on
//! the data partition, which updates keep), read at each login and written when the password
//! changes. The format and the rules are `console::login`'s; this module only does the file.
//!
//! Written so that a power cut leaves either the old file or the new one, never half of one:
//! a temporary file in the same directory, created with mode 0600 (the hash is nobody else's
//! business), written, fsynced, renamed over the old one, and the directory fsynced.

use console::login::{format_stored, parse_stored, STORED_PASSWORD_FILE};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// The stored hash, `None` when no password was chosen on the box yet.
pub fn read(dir: &Path) -> io::Result<Option<String>> {
    let path = dir.join(STORED_PASSWORD_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match parse_stored(&text) {
        Some(hash) => Ok(Some(hash.to_string())),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds no Argon2 hash", path.display()),
        )),
    }
}

/// Replaces the stored hash atomically (see the module doc).
pub fn write(dir: &Path, hash: &str) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)?;
    let path = dir.join(STORED_PASSWORD_FILE);
    let tmp = dir.join(format!(".{STORED_PASSWORD_FILE}.{}", std::process::id()));
    // A leftover of an earlier crash is replaced; create_new never follows a planted link.
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format_stored(hash).as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const HASH: &str =
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$0uUvFOoaLbbsjYmqhlqeBDjN6jSiEJoL5Fm4K3cK1hM";

    #[test]
    fn written_with_mode_0600_read_back_and_replaced() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().join("state");
        assert!(read(&dir).unwrap_or_else(|e| panic!("{e}")).is_none());
        write(&dir, HASH).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join(STORED_PASSWORD_FILE);
        let mode = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read(&dir).unwrap_or_else(|e| panic!("{e}")).as_deref(),
            Some(HASH)
        );
        let other = HASH.replace("c2FsdHNhbHRzYWx0", "b3RoZXJzYWx0c2FsdA");
        write(&dir, &other).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read(&dir).unwrap_or_else(|e| panic!("{e}")).as_deref(),
            Some(other.as_str())
        );
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_password() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        fs::write(tmp.path().join(STORED_PASSWORD_FILE), "garbage\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(read(tmp.path()).is_err());
    }
}
