//! The twin key file's checks on real files.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should fail the test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use netif::{read_key_file, KeyFileError};

fn write_key(dir: &Path, content: &[u8], mode: u32) -> std::path::PathBuf {
    let path = dir.join("twin.key");
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn owner_only_key_is_read_without_its_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_key(dir.path(), b"0123456789abcdef0123456789abcdef\n", 0o600);
    assert_eq!(
        read_key_file(&path).unwrap(),
        b"0123456789abcdef0123456789abcdef"
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(read_key_file(&path).is_ok(), "0400 is stricter than 0600");
}

#[test]
fn raw_binary_key_is_taken_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let key: Vec<u8> = (0u8..32).map(|b| b.wrapping_mul(37)).collect();
    let path = write_key(dir.path(), &key, 0o600);
    assert_eq!(read_key_file(&path).unwrap(), key);
}

#[test]
fn group_or_world_readable_key_is_refused_naming_the_mode() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o640, 0o604, 0o610] {
        let path = write_key(dir.path(), b"0123456789abcdef0123456789abcdef", mode);
        let err = read_key_file(&path).unwrap_err();
        assert!(
            matches!(err, KeyFileError::Permissions { mode: m, .. } if m == mode),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("{mode:04o}")), "{text}");
        assert!(text.contains("twin.key"), "{text}");
    }
}

#[test]
fn short_or_empty_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 15 bytes plus a newline: the newline does not count.
    let path = write_key(dir.path(), b"0123456789abcde\n", 0o600);
    let err = read_key_file(&path).unwrap_err();
    assert!(
        matches!(err, KeyFileError::TooShort { len: 15, .. }),
        "{err}"
    );
    let path = write_key(dir.path(), b"", 0o600);
    assert!(matches!(
        read_key_file(&path),
        Err(KeyFileError::TooShort { len: 0, .. })
    ));
}

#[test]
fn directory_and_missing_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("twin.key");
    fs::create_dir(&sub).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
    let err = read_key_file(&sub).unwrap_err();
    assert!(matches!(err, KeyFileError::NotRegular { .. }), "{err}");
    let err = read_key_file(&dir.path().join("absent.key")).unwrap_err();
    assert!(matches!(err, KeyFileError::Open { .. }), "{err}");
}

#[test]
fn fifo_in_place_of_the_key_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twin.key");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = read_key_file(&path).unwrap_err();
    assert!(matches!(err, KeyFileError::NotRegular { .. }), "{err}");
}
